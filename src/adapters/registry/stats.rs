//! Request counters: per unit of work (an image) and for the whole client.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::report::Counters;

/// Counters for one unit of work (an image), shared by its requests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests sent (each attempt counts).
    pub requests: AtomicU64,
    /// Attempts repeated after 429, 5xx or a connection error.
    pub retries: AtomicU64,
    /// Bytes sent in request bodies.
    pub bytes_pushed: AtomicU64,
    /// Requests that write (POST, PUT, PATCH, DELETE).
    pub writes: AtomicU64,
}

impl Stats {
    /// The counts so far, as plain data.
    pub fn counters(&self) -> Counters {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters { requests: n(&self.requests), writes: n(&self.writes), retries: n(&self.retries), bytes_pushed: n(&self.bytes_pushed) }
    }
}
