//! Waiting longer after each failure: one formula for reconnections, target retries and objects
//! waiting to be retried, and one source of jitter, so that gateways (or requests) that failed
//! together do not all come back at the same instant.

use std::time::Duration;

/// `first` for attempt 1, doubled for each attempt after it, never more than `max`.
pub(crate) fn doubling(first: Duration, attempt: u32, max: Duration) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
        .min(max)
}

/// `d` plus up to a quarter of it, at random (the clock's sub-second digits were no source:
/// on clocks of microsecond resolution the last three are always zero).
pub(crate) fn jittered(d: Duration) -> Duration {
    d + d.mul_f64(fastrand::f64() / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_jitter_adds_at_most_a_quarter() {
        let s = Duration::from_secs;
        assert_eq!(doubling(s(2), 1, s(300)), s(2));
        assert_eq!(doubling(s(2), 4, s(300)), s(16));
        assert_eq!(doubling(s(2), 40, s(300)), s(300));
        assert_eq!(doubling(s(2), 0, s(300)), s(2));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let j = jittered(s(8));
            assert!(j >= s(8) && j <= s(10), "{j:?}");
            seen.insert(j);
        }
        // Spread, not one value: fifty draws give many.
        assert!(seen.len() > 40, "{seen:?}");
    }
}
