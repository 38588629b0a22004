//! When things happen: the poll interval and the full-resync schedule, in the forms an
//! administrator writes them (`30s`, `5m`, `hourly`, `every 6h`, `daily 02:00`, `weekly sun 03:00`,
//! `off`, or a cron expression). Times are UTC. Pure: the daemon asks "what is the next time after now?".
//! Below both `config` (which parses them) and `daemon` (which waits for them).

use std::time::Duration;

use time::{OffsetDateTime, Time, Weekday};

mod cron;

/// A duration such as `250ms`, `30s`, `5m`, `2h`, `1d`.
/// The longest duration or period accepted (a year): anything longer is a typo, and times computed
/// from it must never overflow.
const LONGEST: Duration = Duration::from_secs(366 * 86_400);

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 5m, 2h or 1d"))?;
    if unit.trim() == "ms" {
        if n == 0 {
            return Err(format!("`{text}` must be longer than zero"));
        }
        if u128::from(n) > LONGEST.as_millis() {
            return Err(format!("`{text}` is longer than a year"));
        }
        return Ok(Duration::from_millis(n));
    }
    let per = match unit.trim() {
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return Err(format!("`{text}` is not a duration like 30s, 5m, 2h or 1d")),
    };
    let secs = n.checked_mul(per).filter(|s| *s <= LONGEST.as_secs());
    match secs {
        Some(0) => Err(format!("`{text}` must be longer than zero")),
        Some(s) => Ok(Duration::from_secs(s)),
        None => Err(format!(
            "`{text}` is longer than {} days: no period here needs that",
            LONGEST.as_secs() / 86_400
        )),
    }
}

/// A recurring time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schedule {
    Off,
    Every(Duration),
    Daily(Time),
    Weekly(Weekday, Time),
    /// A five-field cron expression (`cron 0 3 * * 1-5`, or the five fields alone).
    Cron(cron::Cron),
}

fn parse_time(text: &str) -> Result<Time, String> {
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a time like 02:00"))?;
    let h: u8 = h
        .parse()
        .map_err(|_| format!("`{text}` is not a time like 02:00"))?;
    let m: u8 = m
        .parse()
        .map_err(|_| format!("`{text}` is not a time like 02:00"))?;
    Time::from_hms(h, m, 0).map_err(|_| format!("`{text}` is not a time of day"))
}

fn parse_weekday(text: &str) -> Result<Weekday, String> {
    Ok(match text.to_ascii_lowercase().get(..3).unwrap_or("") {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return Err(format!("`{text}` is not a day of the week")),
    })
}

impl Schedule {
    pub(crate) fn parse(text: &str) -> Result<Schedule, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["off"] | ["never"] => Ok(Schedule::Off),
            ["hourly"] => Ok(Schedule::Every(Duration::from_secs(3600))),
            ["every", d] => parse_duration(d).map(Schedule::Every),
            ["daily"] => Ok(Schedule::Daily(Time::MIDNIGHT)),
            ["daily", t] | ["daily", "at", t] => parse_time(t).map(Schedule::Daily),
            ["weekly", d, t] | ["weekly", d, "at", t] => Ok(Schedule::Weekly(parse_weekday(d)?, parse_time(t)?)),
            ["cron", rest @ ..] => cron::Cron::parse(&rest.join(" ")).map(Schedule::Cron),
            [one] if one.starts_with('@') => cron::Cron::parse(one).map(Schedule::Cron),
            [_, _, _, _, _] => cron::Cron::parse(text).map(Schedule::Cron),
            _ => Err(format!(
                "`{text}` is not a schedule: use off, hourly, every 6h, daily 02:00, weekly sun 03:00 or a cron \
                 expression such as `cron 0 3 * * 1-5` (UTC)"
            )),
        }
    }

    /// The first time strictly after `now` (None when off). `Every` counts from `now`.
    pub(crate) fn next_after(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        match *self {
            Schedule::Off => None,
            Schedule::Every(d) => Some(now + d),
            Schedule::Daily(t) => {
                let today = now.replace_time(t);
                Some(if today > now {
                    today
                } else {
                    today + time::Duration::days(1)
                })
            }
            Schedule::Weekly(day, t) => {
                let mut candidate = now.replace_time(t);
                for _ in 0..8 {
                    if candidate.weekday() == day && candidate > now {
                        return Some(candidate);
                    }
                    candidate += time::Duration::days(1);
                }
                None
            }
            Schedule::Cron(c) => c.next_after(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn durations_and_schedules_read_as_written() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(Schedule::parse("off").unwrap(), Schedule::Off);
        assert!(Schedule::parse("daily 25:00").is_err());
        assert!(Schedule::parse("weekly funday 01:00").is_err());
    }

    #[test]
    fn next_times_are_strictly_after_now() {
        let now = datetime!(2026-11-23 10:30 UTC); // a Monday
        let daily = Schedule::parse("daily 02:00").unwrap();
        assert_eq!(daily.next_after(now), Some(datetime!(2026-11-24 02:00 UTC)));
        let later = Schedule::parse("daily at 11:00").unwrap();
        assert_eq!(later.next_after(now), Some(datetime!(2026-11-23 11:00 UTC)));
        let weekly = Schedule::parse("weekly sun 03:00").unwrap();
        assert_eq!(
            weekly.next_after(now),
            Some(datetime!(2026-11-29 03:00 UTC))
        );
        let monday = Schedule::parse("weekly mon 10:30").unwrap();
        assert_eq!(
            monday.next_after(now),
            Some(datetime!(2026-11-30 10:30 UTC))
        );
        assert_eq!(
            Schedule::parse("every 6h").unwrap().next_after(now),
            Some(datetime!(2026-11-23 16:30 UTC))
        );
        assert_eq!(Schedule::Off.next_after(now), None);
        assert_eq!(
            Schedule::parse("cron 0 3 * * 1-5").unwrap().next_after(now),
            Some(datetime!(2026-11-24 03:00 UTC))
        );
        assert_eq!(
            Schedule::parse("*/20 * * * *").unwrap().next_after(now),
            Some(datetime!(2026-11-23 10:40 UTC))
        );
        assert!(Schedule::parse("cron 0 3 * *").is_err());
    }
}
