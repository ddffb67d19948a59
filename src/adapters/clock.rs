//! The clock of long, rate-limited work (prune): the time now, in seconds since the epoch,
//! and sleeping until a time. GitHub states its limits per minute and per hour and one of
//! them cannot be read, so a test against a GitHub API double can only keep a 6-hour job
//! short by running both clocks faster: `SPLIT_BUILD_CLOCK_SCALE=N` makes this clock's
//! seconds since the epoch the real ones times N (the double computes the same), so
//! `--time-budget`, `retry-after`, `x-ratelimit-reset` and our own pacing all run N times
//! faster. Unset, it is the real clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::outcome::UsageError;

/// The variable that scales the clock (for tests and benchmarks against a double).
pub(crate) const SCALE_VAR: &str = "SPLIT_BUILD_CLOCK_SCALE";

/// Seconds since the epoch, scaled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    scale: f64,
}

impl Clock {
    /// The real clock, or a faster one when [`SCALE_VAR`] says so.
    pub(crate) fn from_env() -> anyhow::Result<Clock> {
        let scale = match std::env::var(SCALE_VAR) {
            Ok(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 1.0)
                .ok_or_else(|| UsageError(format!("{SCALE_VAR}=`{v}`: use a number of at least 1")))?,
            Err(_) => 1.0,
        };
        Ok(Clock { scale })
    }

    /// Now, in (scaled) seconds since the epoch.
    pub(crate) fn now(&self) -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0) * self.scale
    }

    /// Sleeps until (scaled) time `t`.
    pub(crate) async fn sleep_until(&self, t: f64) {
        let real = (t - self.now()) / self.scale;
        if real > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(real)).await;
        }
    }

    /// A scaled duration in real time (for timeouts of real I/O, which do not scale).
    pub(crate) fn real(&self, scaled_secs: f64) -> Duration {
        Duration::from_secs_f64((scaled_secs / self.scale).max(0.0))
    }
}
