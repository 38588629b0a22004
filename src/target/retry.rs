//! What the target clients do about a failed request before giving up on it: wait (with
//! jittered exponential backoff, or as long as the target's `Retry-After` says) and try again a
//! bounded number of times; and how they keep to a request budget.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// First wait before a retry; doubled per attempt.
const FIRST: Duration = Duration::from_millis(500);
/// Longest wait of our own choosing.
const LONGEST: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured; a target asking for more gets the object parked instead
/// (it is retried on a later run).
pub(crate) const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a request failed, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Never reached the target (connection refused, DNS, TLS handshake).
    NotSent,
    /// Sent, and no usable answer came back (timeout, reset, truncated body): it may or may
    /// not have been carried out.
    Unanswered,
    /// The target answered this status.
    Status(u16),
}

/// True when the same request may be sent again. A POST that may have been carried out is
/// not resent (that is how duplicates are made): the engine looks the object up and adopts it
/// on its next attempt instead.
pub(crate) fn retryable(method: &reqwest::Method, f: Failure) -> bool {
    match f {
        Failure::NotSent => true,
        // 429 and 503 say the request was not carried out.
        Failure::Status(429 | 503) => true,
        Failure::Status(500 | 502 | 504) | Failure::Unanswered => method != reqwest::Method::POST,
        Failure::Status(_) => false,
    }
}

/// The wait before attempt `attempt + 1` (attempt counts from 1): the target's `Retry-After`
/// when it gave one, else 0.5 s doubled per attempt, at most 30 s, plus up to a quarter of
/// jitter so that retries of many gateways do not line up.
pub(crate) fn delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d.min(LONGEST_RETRY_AFTER);
    }
    crate::backoff::jittered(crate::backoff::doubling(FIRST, attempt, LONGEST))
}

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110).
pub(crate) fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // An HTTP-date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), or the obsolete RFC 850
    // and asctime forms a recipient must read too.
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::from(now))
            .unwrap_or(Duration::ZERO),
    )
}

/// Keeps to a request budget: never more than `requests` sends within any `period` (with a
/// 10% margin so that network jitter — a request delayed on its way while the next is not —
/// never makes the target count more), and sends spaced evenly rather than in bursts: a GCRA
/// limiter (governor) of one request per `period * 1.1 / requests`, without a burst.
pub(crate) struct Pacer {
    limiter: governor::RateLimiter<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        TokioClock,
        governor::middleware::NoOpMiddleware<std::time::Instant>,
    >,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pacer")
    }
}

/// tokio's clock for governor: the same time the waits use (and that tests can pause).
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl governor::clock::Clock for TokioClock {
    type Instant = std::time::Instant;
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

impl Pacer {
    pub(crate) fn new(limit: RateLimit) -> Pacer {
        let budget = limit.requests.max(1);
        let interval = ((limit.period + limit.period / 10) / budget).max(Duration::from_nanos(1));
        // `interval` is never zero: a quota exists.
        let quota = governor::Quota::with_period(interval)
            .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN));
        Pacer {
            limiter: governor::RateLimiter::direct_with_clock(quota, TokioClock),
        }
    }

    /// Waits until one more request fits the budget, and counts it.
    pub(crate) async fn wait(&self) {
        while let Err(not_yet) = self.limiter.check() {
            let now = governor::clock::Clock::now(&TokioClock);
            tokio::time::sleep(not_yet.wait_time_from(now)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;
    use time::macros::datetime;

    #[test]
    fn only_requests_that_cannot_duplicate_are_resent() {
        assert!(retryable(&Method::POST, Failure::NotSent));
        assert!(retryable(&Method::POST, Failure::Status(429)));
        assert!(retryable(&Method::POST, Failure::Status(503)));
        assert!(!retryable(&Method::POST, Failure::Unanswered));
        assert!(!retryable(&Method::POST, Failure::Status(502)));
        assert!(retryable(&Method::PATCH, Failure::Unanswered));
        assert!(retryable(&Method::GET, Failure::Status(500)));
        assert!(!retryable(&Method::GET, Failure::Status(400)));
        assert!(!retryable(&Method::DELETE, Failure::Status(404)));
    }

    #[test]
    fn waits_grow_are_capped_and_follow_retry_after() {
        let d1 = delay(1, None);
        assert!(d1 >= FIRST && d1 <= FIRST + FIRST / 4, "{d1:?}");
        let d3 = delay(3, None);
        assert!(d3 >= FIRST * 4, "{d3:?}");
        assert!(delay(30, None) <= LONGEST + LONGEST / 4);
        assert_eq!(
            delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            delay(1, Some(Duration::from_secs(9999))),
            LONGEST_RETRY_AFTER
        );
        let now = datetime!(2026-11-23 10:00:00 UTC);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // The obsolete forms RFC 9110 asks a recipient to read as well.
        assert_eq!(
            parse_retry_after("Monday, 23-Nov-26 10:00:45 GMT", now),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            parse_retry_after("Mon Nov 23 10:01:00 2026", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_never_exceeds_its_budget() {
        let p = Pacer::new(RateLimit {
            requests: 10,
            period: Duration::from_secs(1),
        });
        let start = Instant::now();
        for _ in 0..25 {
            p.wait().await;
        }
        // 25 requests at 10 a second, spaced 110 ms (the 10% margin): the 25th goes 24
        // intervals after the first, and never more than 10 fall within any 1.1 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(2640), "{took:?}");
        assert!(took < Duration::from_millis(2700), "{took:?}");
    }
}
