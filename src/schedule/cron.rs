//! Five-field cron expressions (`minute hour day-of-month month day-of-week`), as crontab(5)
//! reads them: `*`, lists, ranges, steps, month and day names, 7 as Sunday, and the usual rule
//! that when both day fields are restricted a day matching either runs. Plus `@hourly`,
//! `@daily`/`@midnight`, `@weekly`, `@monthly`. Times are UTC.

use time::{Date, OffsetDateTime, Time};

/// A parsed expression: one bit per allowed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cron {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(text: &str, names: &[&str], base: u32) -> Option<u32> {
    if let Ok(n) = text.parse::<u32>() {
        return Some(n);
    }
    let lower = text.to_ascii_lowercase();
    names
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as u32 + base)
}

/// One field as a bit set over `min..=max`.
fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let bad = |why: &str| format!("cron {what} `{text}`: {why}");
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| bad("the step is not a number"))?;
                if s == 0 {
                    return Err(bad("the step must be at least 1"));
                }
                (r, s)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = value(a, names, min).ok_or_else(|| bad("not a value"))?;
            let b = value(b, names, min).ok_or_else(|| bad("not a value"))?;
            (a, b)
        } else {
            let a = value(range, names, min).ok_or_else(|| bad("not a value"))?;
            // `5/15` means from 5 to the end, every 15.
            (a, if step > 1 { max } else { a })
        };
        if lo < min || hi > max || lo > hi {
            return Err(bad(&format!("values must be within {min}-{max}")));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    pub(crate) fn parse(text: &str) -> Result<Cron, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let [min, hour, dom, month, dow] = f.as_slice() else {
            return Err(format!(
                "`{text}` is not a cron expression: it needs five fields (minute hour day-of-month month day-of-week)"
            ));
        };
        let mut weekdays = field(dow, "day of week", 0, 7, &DAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f; // 7 is Sunday too
        }
        Ok(Cron {
            minutes: field(min, "minute", 0, 59, &[])?,
            hours: field(hour, "hour", 0, 23, &[])? as u32,
            days: field(dom, "day of month", 1, 31, &[])? as u32,
            months: field(month, "month", 1, 12, &MONTHS)? as u16,
            weekdays: weekdays as u8,
            days_restricted: *dom != "*",
            weekdays_restricted: *dow != "*",
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << u8::from(d.month())) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().number_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first matching minute strictly after `now`, within the next five years (an
    /// expression such as `0 0 31 2 *` never matches).
    pub(crate) fn next_after(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let start =
            now.replace_second(0).ok()?.replace_nanosecond(0).ok()? + time::Duration::minutes(1);
        let mut day = start.date();
        for _ in 0..(366 * 5) {
            if self.day_matches(day) {
                for h in 0..24u8 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    for m in 0..60u8 {
                        if self.minutes & (1 << m) == 0 {
                            continue;
                        }
                        let t = OffsetDateTime::new_utc(day, Time::from_hms(h, m, 0).ok()?);
                        if t >= start {
                            return Some(t);
                        }
                    }
                }
            }
            day = day.next_day()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn next(expr: &str, now: OffsetDateTime) -> OffsetDateTime {
        Cron::parse(expr).unwrap().next_after(now).unwrap()
    }

    #[test]
    fn common_expressions() {
        let now = datetime!(2026-11-23 10:30:15 UTC); // a Monday
        assert_eq!(next("*/15 * * * *", now), datetime!(2026-11-23 10:45 UTC));
        assert_eq!(next("0 3 * * *", now), datetime!(2026-11-24 03:00 UTC));
        assert_eq!(
            next("30 10 * * *", now),
            datetime!(2026-11-24 10:30 UTC),
            "strictly after"
        );
        assert_eq!(next("0 2 * * sun", now), datetime!(2026-11-29 02:00 UTC));
        assert_eq!(next("0 2 * * 7", now), datetime!(2026-11-29 02:00 UTC));
        assert_eq!(
            next("0 22 * * mon-fri", now),
            datetime!(2026-11-23 22:00 UTC)
        );
        assert_eq!(next("0 0 1 jan *", now), datetime!(2027-01-01 00:00 UTC));
        assert_eq!(next("5,35 */6 * * *", now), datetime!(2026-11-23 12:05 UTC));
        assert_eq!(next("@monthly", now), datetime!(2026-12-01 00:00 UTC));
        assert_eq!(next("@hourly", now), datetime!(2026-11-23 11:00 UTC));
        assert_eq!(next("0 0 29 2 *", now), datetime!(2028-02-29 00:00 UTC));
        // Both day fields restricted: either one.
        assert_eq!(next("0 0 1 * fri", now), datetime!(2026-11-27 00:00 UTC));
    }

    #[test]
    fn bad_expressions_are_explained() {
        for (expr, needle) in [
            ("* * * *", "five fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * funday", "day of week"),
            ("*/0 * * * *", "at least 1"),
            ("5-1 * * * *", "within"),
        ] {
            let e = Cron::parse(expr).unwrap_err();
            assert!(e.contains(needle), "{expr}: {e}");
        }
        assert_eq!(
            Cron::parse("0 0 31 2 *")
                .unwrap()
                .next_after(datetime!(2026-01-01 0:00 UTC)),
            None
        );
    }
}
