//! The one retry policy of the client. A request is the only thing retried for a temporary
//! failure: the transport tries it at most [`RetryPolicy::attempts`] times (5xx, dropped
//! connections) with exponential backoff and full jitter, and waits out rate limits (429,
//! GHCR's rate-limit 403) for as long as its deadline allows without counting them as
//! attempts. Callers above it never retry the same failure again; they only recover from a
//! different one (a lost upload session, a manifest refused for a blob another writer was
//! mounting), each recovery bounded where it is written.

use std::time::Duration;

/// How the client retries temporary failures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Most attempts per request (1: no retry).
    pub(crate) attempts: u32,
    /// First backoff; doubled per attempt, with jitter.
    pub(crate) base_delay: Duration,
    /// Longest single backoff.
    pub(crate) max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 6, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(30) }
    }
}

/// Exponential backoff with full jitter before attempt `attempt + 1`.
pub(crate) fn backoff(policy: RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exp = policy.base_delay.saturating_mul(1u32 << attempt.min(10).saturating_sub(1)).min(policy.max_delay);
    exp.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// How long to wait after a rate limit: what the registry asked (`Retry-After`), else a
/// backoff that grows with each limit met, plus up to a tenth more of jitter so that the
/// tasks told to wait the same second do not all come back in the same instant.
pub(crate) fn rate_limit_wait(retry_after: Option<Duration>, limits_met: u32, jitter: f64) -> Duration {
    let asked = retry_after.unwrap_or_else(|| Duration::from_millis(500).saturating_mul(1u32 << limits_met.min(6)));
    asked + asked.mul_f64(jitter.clamp(0.0, 1.0) / 10.0).max(Duration::from_millis((jitter.clamp(0.0, 1.0) * 50.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_its_bounds() {
        let p = RetryPolicy { attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(2) };
        assert_eq!(backoff(p, 1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(p, 1, 1.0), Duration::from_millis(100));
        assert!(backoff(p, 4, 0.0) >= Duration::from_millis(400));
        assert_eq!(backoff(p, 10, 1.0), Duration::from_secs(2));
    }

    #[test]
    fn rate_limits_wait_as_told_with_a_little_jitter() {
        let one = Duration::from_secs(1);
        assert_eq!(rate_limit_wait(Some(one), 0, 0.0), one);
        let w = rate_limit_wait(Some(one), 0, 1.0);
        assert!(w > one && w <= one + Duration::from_millis(100), "{w:?}");
        assert!(rate_limit_wait(None, 0, 0.0) >= Duration::from_millis(500));
        assert!(rate_limit_wait(None, 3, 0.0) >= Duration::from_secs(4), "no Retry-After: it grows");
    }
}
