//! The rate math of deleting through GitHub's REST API, as GitHub states its limits: the
//! primary budget read from the `x-ratelimit-*` headers of every answer (1,000 requests an
//! hour for a workflow's `GITHUB_TOKEN`, 5,000 for a personal token), the secondary limit
//! kept by ourselves (900 points a minute per endpoint, a GET 1 point, a DELETE 5; at most
//! 100 requests in flight; it cannot be read), and GitHub's rules after a rate-limit answer
//! (`retry-after`, else the reset when nothing remains, else a minute, growing).
//!
//! Pure: every time is seconds since the epoch, passed in by the caller's clock.

use std::collections::VecDeque;

/// Points a GET costs against the secondary limit.
pub(crate) const GET_POINTS: u32 = 1;
/// Points a DELETE costs (GitHub: mutating requests cost 5).
pub(crate) const DELETE_POINTS: u32 = 5;
/// Points we spend a minute per endpoint: under GitHub's 900, with room for the job's other
/// requests.
pub(crate) const POINTS_PER_MINUTE: u32 = 800;
/// The most requests we keep in flight, far under GitHub's 100 (GitHub advises serial
/// requests; a few in flight hide the round trip).
pub(crate) const MAX_IN_FLIGHT: usize = 8;
/// The wait after a secondary-limit answer without `retry-after` (GitHub: at least a minute),
/// doubled for each such answer in a row, up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: f64 = 60.0;
/// The longest wait after repeated secondary-limit answers.
pub(crate) const MAX_BACKOFF: f64 = 15.0 * 60.0;
/// Versions on one page of GitHub's list (its maximum `per_page`).
pub(crate) const PAGE_SIZE: u64 = 100;

/// A request's kind, for its secondary-limit cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A list page (1 point).
    Get,
    /// A version deletion (5 points).
    Delete,
}

impl Kind {
    fn points(self) -> u32 {
        match self {
            Kind::Get => GET_POINTS,
            Kind::Delete => DELETE_POINTS,
        }
    }
}

/// What one answer's headers said about the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    /// `x-ratelimit-limit`: requests in the hourly window.
    pub limit: Option<u64>,
    /// `x-ratelimit-remaining`.
    pub remaining: Option<u64>,
    /// `x-ratelimit-reset`: when the window starts anew, seconds since the epoch.
    pub reset: Option<i64>,
    /// `retry-after`, seconds.
    pub retry_after: Option<u64>,
}

/// Why a run stops before it has walked everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Stop {
    /// The time budget would end before the next request could go.
    TimeBudget,
    /// The hourly budget is spent and its reset comes after the time budget ends.
    HourlyBudget,
}

/// Whether the next request may go now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Gate {
    /// Send it.
    Go,
    /// Wait until this time, then ask again.
    Wait(f64),
    /// Do not send it: the run stops.
    Stop(Stop),
}

/// What a rate-limit answer (403 or 429) was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limited {
    /// The hourly budget is spent: waits for its reset.
    Primary,
    /// The secondary limit: waits `retry-after` or a growing minute.
    Secondary,
}

/// The client's view of GitHub's limits for one token, updated by every request sent and
/// every answer read.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteBudget {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<i64>,
    sent: u64,
    /// Points sent in the last minute: (when, points), oldest first.
    window: VecDeque<(f64, u32)>,
    /// No request before this time (after a rate-limit answer).
    not_before: f64,
    /// Secondary-limit answers without `retry-after` in a row.
    strikes: u32,
    /// Rate-limit answers seen: primary, secondary.
    waits: (u64, u64),
}

impl DeleteBudget {
    /// May a request of `kind` go at `now`, given the run's `deadline` (None: no time budget)?
    pub(crate) fn gate(&mut self, kind: Kind, now: f64, deadline: Option<f64>) -> Gate {
        while self.window.front().is_some_and(|(t, _)| *t <= now - 60.0) {
            self.window.pop_front();
        }
        let mut until = self.not_before.max(now);
        if self.remaining == Some(0)
            && let Some(reset) = self.reset
        {
            let reset = reset as f64 + 1.0;
            if reset > until {
                if deadline.is_some_and(|d| reset >= d) {
                    return Gate::Stop(Stop::HourlyBudget);
                }
                until = reset;
            }
        }
        let used: u32 = self.window.iter().map(|(_, p)| p).sum();
        if used + kind.points() > POINTS_PER_MINUTE {
            // Wait until enough of the oldest points leave the minute.
            let mut freed = 0;
            for (t, p) in &self.window {
                freed += p;
                if used - freed + kind.points() <= POINTS_PER_MINUTE {
                    until = until.max(t + 60.0);
                    break;
                }
            }
        }
        if deadline.is_some_and(|d| until >= d) {
            return Gate::Stop(Stop::TimeBudget);
        }
        if until > now { Gate::Wait(until) } else { Gate::Go }
    }

    /// Records a request of `kind` sent at `now`; returns its sequence number for
    /// [`DeleteBudget::answered`].
    pub(crate) fn sent(&mut self, kind: Kind, now: f64) -> u64 {
        self.window.push_back((now, kind.points()));
        self.remaining = self.remaining.map(|r| r.saturating_sub(1));
        self.sent += 1;
        self.sent
    }

    /// Reads the headers of the answer to request `seq`: the server counted it and those
    /// before it, not the ones sent after it that are still in flight.
    pub(crate) fn answered(&mut self, seq: u64, h: &RateHeaders) {
        let Some(remaining) = h.remaining else { return };
        let estimate = remaining.saturating_sub(self.sent - seq);
        let new_window = h.reset.is_some_and(|r| self.reset.is_none_or(|old| r > old));
        if new_window || self.remaining.is_none() {
            self.remaining = Some(estimate);
            self.reset = h.reset.or(self.reset);
        } else {
            self.remaining = self.remaining.map(|r| r.min(estimate));
        }
        if h.limit.is_some() {
            self.limit = h.limit;
        }
        self.strikes = 0;
    }

    /// A 403 or 429 that is a rate limit, answered at `now`: waits as GitHub says and tells
    /// which limit it was. `secondary` is whether the body said "secondary rate limit".
    pub(crate) fn limited(&mut self, h: &RateHeaders, secondary: bool, now: f64) -> Limited {
        let primary = h.remaining == Some(0) && !secondary;
        if let Some(r) = h.reset {
            self.reset = Some(self.reset.map_or(r, |old| old.max(r)));
        }
        if let Some(after) = h.retry_after {
            self.not_before = self.not_before.max(now + after as f64);
        } else if !(primary && self.reset.is_some()) {
            let wait = (FIRST_BACKOFF * 2f64.powi(self.strikes.min(8) as i32)).min(MAX_BACKOFF);
            self.strikes += 1;
            self.not_before = self.not_before.max(now + wait);
        }
        if primary {
            // The gate waits for the reset (or stops the run when it comes too late).
            self.remaining = Some(0);
            self.waits.0 += 1;
            Limited::Primary
        } else {
            self.waits.1 += 1;
            Limited::Secondary
        }
    }

    /// The hourly limit GitHub stated (`x-ratelimit-limit`), once an answer said it.
    pub(crate) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Rate-limit answers seen so far: (primary, secondary).
    pub(crate) fn waits(&self) -> (u64, u64) {
        self.waits
    }
}

/// The most versions one run deletes: `max_delete`, and what `hourly_limit` requests an hour
/// allow in `budget_secs` (every hourly window the run starts is spent, one list page per
/// [`PAGE_SIZE`] deletions). None when nothing bounds it.
pub(crate) fn per_run(hourly_limit: Option<u64>, budget_secs: Option<u64>, max_delete: Option<u64>) -> Option<u64> {
    let by_rate = match (hourly_limit, budget_secs) {
        (Some(limit), Some(secs)) => Some(secs.div_ceil(3600) * limit * PAGE_SIZE / (PAGE_SIZE + 1)),
        _ => None,
    };
    match (by_rate, max_delete) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// About how many more runs `remaining` deletions take at `per_run` a run.
pub(crate) fn runs_left(remaining: u64, per_run: Option<u64>) -> Option<u64> {
    match per_run {
        _ if remaining == 0 => Some(0),
        Some(n) if n > 0 => Some(remaining.div_ceil(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(remaining: u64, reset: i64) -> RateHeaders {
        RateHeaders { limit: Some(1000), remaining: Some(remaining), reset: Some(reset), retry_after: None }
    }

    #[test]
    fn deletes_stay_under_the_points_of_a_minute() {
        let mut b = DeleteBudget::default();
        let mut now = 0.0;
        let mut sent = 0;
        // 800 points a minute: 160 deletions, then the 161st waits for the first to age out.
        loop {
            match b.gate(Kind::Delete, now, None) {
                Gate::Go => {
                    b.sent(Kind::Delete, now);
                    sent += 1;
                    now += 0.01;
                }
                Gate::Wait(t) => {
                    assert_eq!(sent, 160);
                    assert!((t - 60.0).abs() < 1e-9, "{t}");
                    break;
                }
                Gate::Stop(s) => panic!("{s:?}"),
            }
        }
        assert_eq!(b.gate(Kind::Get, now, None), Gate::Wait(60.0), "a GET waits too: the minute is full to 800");
    }

    #[test]
    fn a_spent_hour_waits_for_its_reset_or_stops_the_run() {
        let mut b = DeleteBudget::default();
        let seq = b.sent(Kind::Get, 0.0);
        b.answered(seq, &headers(1, 3600));
        let seq = b.sent(Kind::Delete, 1.0);
        assert_eq!(b.gate(Kind::Delete, 1.0, None), Gate::Wait(3601.0), "nothing remains until the reset");
        assert_eq!(b.gate(Kind::Delete, 1.0, Some(3000.0)), Gate::Stop(Stop::HourlyBudget));
        b.answered(seq, &headers(0, 3600));
        // A new window (a later reset) refills the budget.
        let seq = b.sent(Kind::Delete, 3601.0);
        b.answered(seq, &headers(999, 7200));
        assert_eq!(b.gate(Kind::Delete, 3602.0, None), Gate::Go);
    }

    #[test]
    fn answers_count_the_requests_still_in_flight() {
        let mut b = DeleteBudget::default();
        let first = b.sent(Kind::Get, 0.0);
        for _ in 0..5 {
            b.sent(Kind::Delete, 0.0);
        }
        // The server answered the first with 10 left; five more were sent after it.
        b.answered(first, &headers(10, 3600));
        for _ in 0..5 {
            assert_eq!(b.gate(Kind::Delete, 0.0, None), Gate::Go);
            b.sent(Kind::Delete, 0.0);
        }
        assert_eq!(b.gate(Kind::Delete, 0.0, None), Gate::Wait(3601.0));
    }

    #[test]
    fn secondary_limits_wait_as_github_says() {
        let table: [(RateHeaders, bool, f64, Limited); 3] = [
            (RateHeaders { retry_after: Some(30), ..Default::default() }, true, 30.0, Limited::Secondary),
            (RateHeaders { remaining: Some(0), reset: Some(500), ..Default::default() }, false, 501.0, Limited::Primary),
            (RateHeaders::default(), true, 60.0, Limited::Secondary),
        ];
        for (h, secondary, wait, kind) in table {
            let mut b = DeleteBudget::default();
            assert_eq!(b.limited(&h, secondary, 0.0), kind, "{h:?}");
            assert_eq!(b.gate(Kind::Get, 0.0, None), Gate::Wait(wait), "{h:?}");
        }
        // Without retry-after, each answer in a row waits twice as long.
        let mut b = DeleteBudget::default();
        b.limited(&RateHeaders::default(), true, 0.0);
        b.limited(&RateHeaders::default(), true, 60.0);
        assert_eq!(b.gate(Kind::Get, 60.0, None), Gate::Wait(180.0));
        assert_eq!(b.gate(Kind::Get, 60.0, Some(100.0)), Gate::Stop(Stop::TimeBudget));
        assert_eq!(b.waits(), (0, 2));
    }

    #[test]
    fn runs_at_this_tokens_rate() {
        // GITHUB_TOKEN, a 5 h 30 min budget: six hourly windows of 1,000, one page in 101.
        assert_eq!(per_run(Some(1000), Some(19_800), None), Some(5940));
        assert_eq!(per_run(Some(1000), Some(19_800), Some(5000)), Some(5000));
        assert_eq!(per_run(Some(5000), None, None), None);
        assert_eq!(per_run(None, None, Some(7)), Some(7));
        assert_eq!(runs_left(11_999, Some(5000)), Some(3));
        assert_eq!(runs_left(0, None), Some(0));
        assert_eq!(runs_left(5, None), None);
    }
}
