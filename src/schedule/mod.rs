//! When things happen: the poll interval and the full-resync schedule, in the forms an
//! administrator writes them (`30s`, `5m`, `hourly`, `every 6h`, `daily 02:00`, `weekly sun
//! 03:00`, `off`, or a cron expression), in UTC or in a named time zone written after them
//! (`daily 03:00 Europe/Berlin`): a local time stays the same local time across daylight saving
//! changes. Pure: the daemon asks "what is the next time after now?". Below both `config`
//! (which parses them) and `daemon` (which waits for them).
//!
//! Durations are read by humantime, cron expressions by croner (POSIX/Vixie rules: when both
//! day fields are restricted, a day matching either runs), time zones by jiff with its own copy
//! of the time zone database (a slim container has none).

use std::time::Duration;

use time::OffsetDateTime;

/// The longest duration or period accepted (a year): anything longer is a typo, and times computed
/// from it must never overflow.
const LONGEST: Duration = Duration::from_secs(366 * 86_400);

/// A duration such as `250ms`, `30s`, `5m`, `2h`, `1d`, `1h 30m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|_| format!("`{text}` is not a duration like 30s, 5m, 2h or 1d"))?;
    if d.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    if d > LONGEST {
        return Err(format!(
            "`{text}` is longer than {} days: no period here needs that",
            LONGEST.as_secs() / 86_400
        ));
    }
    Ok(d)
}

/// A recurring time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Schedule {
    Off,
    Every(Duration),
    /// Times of day, days of the week, or a cron expression, in a time zone.
    At(Box<Calendar>),
}

/// A cron expression (what `daily` and `weekly` become too) read in a time zone.
#[derive(Debug, Clone)]
pub(crate) struct Calendar {
    cron: croner::Cron,
    zone: jiff::tz::TimeZone,
    /// As written (`Europe/Berlin`, `UTC`).
    zone_name: String,
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.cron.pattern.to_string() == other.cron.pattern.to_string()
            && self.zone_name == other.zone_name
    }
}

const FORMS: &str =
    "use off, hourly, every 6h, daily 02:00, weekly sun 03:00 or a cron expression \
                     such as `cron 0 3 * * 1-5`, optionally followed by a time zone \
                     (`daily 03:00 Europe/Berlin`; UTC otherwise)";

fn parse_time(text: &str) -> Result<(u8, u8), String> {
    let bad = || format!("`{text}` is not a time like 02:00");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let h: u8 = h.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(format!("`{text}` is not a time of day"));
    }
    Ok((h, m))
}

fn parse_weekday(text: &str) -> Result<&'static str, String> {
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let lower = text.to_ascii_lowercase();
    DAYS.iter()
        .find(|d| lower.get(..3) == Some(**d))
        .copied()
        .ok_or_else(|| format!("`{text}` is not a day of the week"))
}

/// A time zone as written: an IANA name (`Europe/Berlin`, `America/New_York`) or `UTC`.
fn parse_zone(text: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::db().get(text).map_err(|_| {
        format!("`{text}` is not a time zone: use an IANA name such as Europe/Berlin, or UTC")
    })
}

/// The words of a schedule and its time zone: the last word when it names one.
fn split_zone<'a>(words: &[&'a str]) -> Result<(Vec<&'a str>, Option<&'a str>), String> {
    match words.split_last() {
        Some((last, rest))
            if !rest.is_empty()
                && last.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && (last.contains('/') || last.eq_ignore_ascii_case("utc")) =>
        {
            Ok((rest.to_vec(), Some(last)))
        }
        _ => Ok((words.to_vec(), None)),
    }
}

fn calendar(pattern: &str, zone: Option<&str>) -> Result<Schedule, String> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| format!("cron `{pattern}`: {e}"))?;
    let (zone, zone_name) = match zone {
        Some(name) => (parse_zone(name)?, name.to_string()),
        None => (jiff::tz::TimeZone::UTC, "UTC".to_string()),
    };
    let schedule = Schedule::At(Box::new(Calendar {
        cron,
        zone,
        zone_name,
    }));
    // A date that never comes (`0 3 31 2 *`) would leave the resync off without a word.
    let in_a_while = OffsetDateTime::now_utc() + time::Duration::days(1);
    let soon = OffsetDateTime::now_utc();
    if schedule.next_after(soon).is_none() || schedule.next_after(in_a_while).is_none() {
        return Err(format!("cron `{pattern}` never fires"));
    }
    Ok(schedule)
}

impl Schedule {
    pub(crate) fn parse(text: &str) -> Result<Schedule, String> {
        let all: Vec<&str> = text.split_whitespace().collect();
        let (words, zone) = split_zone(&all)?;
        match words.as_slice() {
            ["off"] | ["never"] if zone.is_none() => Ok(Schedule::Off),
            ["hourly"] if zone.is_none() => Ok(Schedule::Every(Duration::from_secs(3600))),
            ["every", d] if zone.is_none() => match parse_duration(d)? {
                // A full resync reads the whole directory and target: not many times a second.
                d if d < Duration::from_secs(1) => {
                    Err(format!("`{text}` is shorter than a second"))
                }
                d => Ok(Schedule::Every(d)),
            },
            ["daily"] => calendar("0 0 * * *", zone),
            ["daily", t] | ["daily", "at", t] => {
                let (h, m) = parse_time(t)?;
                calendar(&format!("{m} {h} * * *"), zone)
            }
            ["weekly", d, t] | ["weekly", d, "at", t] => {
                let day = parse_weekday(d)?;
                let (h, m) = parse_time(t)?;
                calendar(&format!("{m} {h} * * {day}"), zone)
            }
            ["cron", rest @ ..] if !rest.is_empty() => calendar(&rest.join(" "), zone),
            [one] if one.starts_with('@') => calendar(one, zone),
            [_, _, _, _, _] => calendar(&words.join(" "), zone),
            _ => Err(format!("`{text}` is not a schedule: {FORMS}")),
        }
    }

    /// The first time strictly after `now` (None when off). `Every` counts from `now`.
    pub(crate) fn next_after(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Schedule::Off => None,
            Schedule::Every(d) => Some(now + *d),
            Schedule::At(c) => {
                let instant = jiff::Timestamp::from_nanosecond(now.unix_timestamp_nanos()).ok()?;
                let zoned = instant.to_zoned(c.zone.clone());
                let next = c.cron.find_next_occurrence(&zoned, false).ok()?;
                OffsetDateTime::from_unix_timestamp_nanos(next.timestamp().as_nanosecond()).ok()
            }
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
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("2 days").unwrap(),
            Duration::from_secs(172_800)
        );
        assert!(parse_duration("0s")
            .unwrap_err()
            .contains("longer than zero"));
        assert!(parse_duration("367d").unwrap_err().contains("366 days"));
        assert!(parse_duration("soon").unwrap_err().contains("30s, 5m"));
        assert_eq!(Schedule::parse("off").unwrap(), Schedule::Off);
        assert!(Schedule::parse("daily 25:00").is_err());
        assert!(Schedule::parse("weekly funday 01:00").is_err());
        assert!(Schedule::parse("daily 03:00 Mars/Olympus")
            .unwrap_err()
            .contains("not a time zone"));
        assert!(Schedule::parse("sometimes")
            .unwrap_err()
            .contains("Europe/Berlin"));
        // Seconds are not a field here.
        assert!(Schedule::parse("cron 0 0 3 * * *").is_err());
        assert_eq!(
            Schedule::parse("daily 03:00 Europe/Berlin").unwrap(),
            Schedule::parse("cron 0 3 * * * Europe/Berlin").unwrap()
        );
        assert_ne!(
            Schedule::parse("daily 03:00 Europe/Berlin").unwrap(),
            Schedule::parse("daily 03:00").unwrap()
        );
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
        assert_eq!(
            Schedule::parse("@weekly").unwrap().next_after(now),
            Some(datetime!(2026-11-29 00:00 UTC))
        );
        assert!(Schedule::parse("cron 0 3 * *").is_err());
        assert!(Schedule::parse("every 1ms")
            .unwrap_err()
            .contains("shorter than a second"));
        assert!(Schedule::parse("cron 0 3 31 2 *")
            .unwrap_err()
            .contains("never fires"));
    }

    #[test]
    fn cron_days_follow_crontab_rules() {
        let now = datetime!(2026-11-23 10:30 UTC); // a Monday
                                                   // Both day fields restricted: a day matching either runs (the 1st, or a Friday).
        let either = Schedule::parse("0 3 1 * fri").unwrap();
        assert_eq!(
            either.next_after(now),
            Some(datetime!(2026-11-27 03:00 UTC))
        );
        // 7 is Sunday, as 0 is.
        let sunday = Schedule::parse("0 3 * * 7").unwrap();
        assert_eq!(
            sunday.next_after(now),
            Some(datetime!(2026-11-29 03:00 UTC))
        );
        let named = Schedule::parse("30 4 * feb mon").unwrap();
        assert_eq!(named.next_after(now), Some(datetime!(2027-02-01 04:30 UTC)));
    }

    #[test]
    fn a_local_time_stays_the_same_local_time_across_daylight_saving_changes() {
        let berlin = Schedule::parse("daily 03:00 Europe/Berlin").unwrap();
        // Winter: 03:00 in Berlin is 02:00 UTC.
        assert_eq!(
            berlin.next_after(datetime!(2026-11-23 10:30 UTC)),
            Some(datetime!(2026-11-24 02:00 UTC))
        );
        // Summer: 01:00 UTC.
        assert_eq!(
            berlin.next_after(datetime!(2026-07-01 10:30 UTC)),
            Some(datetime!(2026-07-02 01:00 UTC))
        );
        // The night the clocks go forward (29 March 2026, 02:00 -> 03:00): 03:00 exists.
        assert_eq!(
            berlin.next_after(datetime!(2026-03-28 12:00 UTC)),
            Some(datetime!(2026-03-29 01:00 UTC))
        );
        // A weekly time in New York, and a time of day that the change skips (02:30 on
        // 8 March 2026 does not exist there): it runs once that day, not never.
        let ny = Schedule::parse("weekly sun 02:30 America/New_York").unwrap();
        let next = ny.next_after(datetime!(2026-03-07 12:00 UTC)).unwrap();
        assert_eq!(next.date(), time::macros::date!(2026 - 03 - 08));
        let after = ny.next_after(next).unwrap();
        assert_eq!(after, datetime!(2026-03-15 06:30 UTC));
        assert_eq!(
            Schedule::parse("cron 0 3 * * 1-5 UTC").unwrap(),
            Schedule::parse("cron 0 3 * * 1-5").unwrap()
        );
    }
}
