//! Write pacing per registry host, shared by every task of the process, adaptive the way TCP
//! shares a link: each host starts at the configured rate (`--max-writes-per-second`, or the
//! job's share of the run's budget), halves it when the registry says to slow down (at most
//! once per second: one burst of 429s is one signal) and grows it back by a tenth of a write
//! a second per second of success, never above where it started. Uncoordinated processes sharing one
//! registry budget so converge on it instead of flooding it. A token bucket holding one
//! second's worth at the current rate spaces the writes; after a `Retry-After` no write to
//! that host leaves before it has passed.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// The lowest rate a host is cut to, in writes a second.
const MIN_RATE: f64 = 0.05;
/// How much the rate grows per second of writes without a rate limit.
const GROWTH_PER_SECOND: f64 = 0.1;
/// How much a rate limit cuts the rate.
const CUT: f64 = 0.5;
/// The shortest time between two cuts.
const CUT_EVERY: Duration = Duration::from_secs(1);

/// The pace of one host.
#[derive(Debug, Clone)]
struct HostPace {
    rate: f64,
    tokens: f64,
    last_refill: Instant,
    last_growth: Instant,
    last_cut: Option<Instant>,
    resume_at: Instant,
}

/// Paces writes per host. A ceiling of 0: no pacing.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    ceiling: f64,
    hosts: std::sync::Mutex<HashMap<String, HostPace>>,
}

impl Pacer {
    /// A pacer starting (and capped) at `writes_per_second` per host; 0 paces nothing.
    pub(crate) fn new(writes_per_second: f64) -> Pacer {
        Pacer { ceiling: writes_per_second.max(0.0), hosts: std::sync::Mutex::default() }
    }

    fn with_host<T>(&self, host: &str, now: Instant, f: impl FnOnce(&mut HostPace) -> T) -> Option<T> {
        if self.ceiling <= 0.0 {
            return None;
        }
        let mut hosts = self.hosts.lock().ok()?;
        let ceiling = self.ceiling;
        let pace = hosts.entry(host.to_owned()).or_insert_with(|| HostPace {
            rate: ceiling,
            tokens: ceiling.max(1.0),
            last_refill: now,
            last_growth: now,
            last_cut: None,
            resume_at: now,
        });
        Some(f(pace))
    }

    /// Takes a write's token for `host` at `now`: how long the write must wait for it.
    pub(crate) fn reserve(&self, host: &str, now: Instant) -> Duration {
        self.with_host(host, now, |p| {
            let burst = p.rate.max(1.0);
            p.tokens = (p.tokens + now.saturating_duration_since(p.last_refill).as_secs_f64() * p.rate).min(burst);
            p.last_refill = now;
            p.tokens -= 1.0;
            let for_token = if p.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-p.tokens / p.rate) };
            for_token.max(p.resume_at.saturating_duration_since(now))
        })
        .unwrap_or(Duration::ZERO)
    }

    /// A write to `host` went through: the rate grows back toward the ceiling.
    pub(crate) fn succeeded(&self, host: &str, now: Instant) {
        let ceiling = self.ceiling;
        self.with_host(host, now, |p| {
            let dt = now.saturating_duration_since(p.last_growth).as_secs_f64().min(1.0);
            p.rate = (p.rate + GROWTH_PER_SECOND * dt).min(ceiling);
            p.last_growth = now;
        });
    }

    /// `host` said to slow down (and to wait `retry_after`): the rate is cut, at most once
    /// per [`CUT_EVERY`], and no write leaves before the wait is over.
    pub(crate) fn limited(&self, host: &str, now: Instant, retry_after: Duration) {
        self.with_host(host, now, |p| {
            if p.last_cut.is_none_or(|t| now.saturating_duration_since(t) >= CUT_EVERY) {
                p.rate = (p.rate * CUT).max(MIN_RATE);
                p.tokens = p.tokens.min(0.0);
                p.last_cut = Some(now);
            }
            p.last_growth = now;
            p.resume_at = p.resume_at.max(now + retry_after);
        });
    }

    /// The current rate of `host` (writes a second).
    #[cfg(test)]
    fn rate(&self, host: &str) -> f64 {
        self.hosts.lock().ok().and_then(|h| h.get(host).map(|p| p.rate)).unwrap_or(self.ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_paced_per_host_with_a_second_of_burst() {
        let pacer = Pacer::new(10.0);
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..12).map(|_| pacer.reserve("ghcr.io", t0)).collect();
        assert!(waits[..10].iter().all(Duration::is_zero), "a second's worth goes at once: {waits:?}");
        assert_eq!(waits[10], Duration::from_millis(100));
        assert_eq!(waits[11], Duration::from_millis(200));
        assert_eq!(pacer.reserve("quay.io", t0), Duration::ZERO, "each host has its own bucket");
        let later = pacer.reserve("ghcr.io", t0 + Duration::from_secs(1));
        assert_eq!(later, Duration::ZERO);
        assert_eq!(Pacer::new(0.0).reserve("x", t0), Duration::ZERO, "rate 0: no pacing");
    }

    #[test]
    fn a_rate_limit_halves_once_per_second_and_success_grows_it_back() {
        let pacer = Pacer::new(20.0);
        let t0 = Instant::now();
        pacer.reserve("h", t0);
        pacer.limited("h", t0, Duration::from_secs(1));
        assert_eq!(pacer.rate("h"), 10.0);
        pacer.limited("h", t0 + Duration::from_millis(10), Duration::from_secs(1));
        assert_eq!(pacer.rate("h"), 10.0, "one burst of 429s is one signal");
        assert!(pacer.reserve("h", t0 + Duration::from_millis(20)) >= Duration::from_millis(980), "Retry-After holds every write");
        for s in 1..=10 {
            pacer.succeeded("h", t0 + Duration::from_secs(s));
        }
        assert!((pacer.rate("h") - 11.0).abs() < 0.01, "grows by a tenth a second: {}", pacer.rate("h"));
        for s in 11..=200 {
            pacer.succeeded("h", t0 + Duration::from_secs(s));
        }
        assert_eq!(pacer.rate("h"), 20.0, "never above the ceiling");
    }

    /// `procs` processes, each starting at `start` writes a second, against one budget of 33
    /// a second (a front answering 429 + `Retry-After: 1` beyond it), on a simulated clock
    /// for two minutes: the writes a second and the 429s per write of the second minute.
    fn shared_budget(procs: usize, start: f64) -> (f64, f64) {
        const BUDGET: f64 = 33.0;
        let t0 = Instant::now();
        let pacers: Vec<Pacer> = (0..procs).map(|_| Pacer::new(start)).collect();
        let mut next: Vec<Instant> = vec![t0; procs];
        let (mut front_tokens, mut front_last) = (BUDGET, t0);
        let (mut ok_late, mut limited_late) = (0u32, 0u32);
        let step = Duration::from_millis(5);
        let end = Duration::from_secs(120);
        let mut now = t0;
        while now < t0 + end {
            for i in 0..procs {
                while next[i] <= now {
                    front_tokens = (front_tokens + now.saturating_duration_since(front_last).as_secs_f64() * BUDGET).min(BUDGET);
                    front_last = now;
                    let late = now >= t0 + Duration::from_secs(60);
                    if front_tokens >= 1.0 {
                        front_tokens -= 1.0;
                        pacers[i].succeeded("h", now);
                        ok_late += u32::from(late);
                    } else {
                        pacers[i].limited("h", now, Duration::from_secs(1));
                        limited_late += u32::from(late);
                    }
                    next[i] = now + pacers[i].reserve("h", now).max(Duration::from_millis(1));
                }
            }
            now += step;
        }
        (f64::from(ok_late) / 60.0, f64::from(limited_late) / f64::from(ok_late.max(1)))
    }

    #[test]
    fn uncoordinated_processes_converge_on_a_shared_budget() {
        // Today's shape: 64 jobs each pacing at 25 a second (1,600 against 33; without
        // adapting, more 429s than writes).
        let (rate, limited) = shared_budget(64, 25.0);
        assert!(rate >= 0.9 * 33.0, "the budget is used: {rate:.1} writes/s");
        assert!(limited <= 0.25, "429s stay a fraction of the writes: {limited:.2} per write");
        // The plan's shape: each job starts at its share of the run's budget (30 a second
        // over the jobs): next to no 429s.
        for jobs in [1, 4] {
            let (rate, limited) = shared_budget(jobs, 30.0 / jobs as f64);
            assert!(rate >= 0.85 * 33.0, "{jobs} job(s): {rate:.1} writes/s");
            assert!(limited <= 0.05, "{jobs} job(s): {limited:.3} 429s per write");
        }
    }
}
