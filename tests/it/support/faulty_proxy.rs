//! An HTTP/1.1 proxy in front of a registry that fails a share of requests: some get a
//! 503, some have their connection dropped before any answer (after the registry saw the
//! request, or before). Each request is forwarded on its own upstream connection with
//! `Connection: close`, so every request, not just every connection, meets the dice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::http::{forward, read_request, serve_loopback};

/// Counts of what the proxy did.
#[derive(Default, Debug)]
pub struct FaultCounts {
    /// Requests seen.
    pub requests: AtomicU64,
    /// Answered 503 without forwarding.
    pub unavailable: AtomicU64,
    /// Dropped without an answer.
    pub dropped: AtomicU64,
}

/// A running proxy; stops with its runtime.
pub struct FaultyProxy {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// What it did so far.
    pub counts: Arc<FaultCounts>,
    _runtime: tokio::runtime::Runtime,
}

impl FaultyProxy {
    /// Proxies to `upstream` (`127.0.0.1:PORT`), answering 503 to `unavailable` and
    /// dropping `dropped` of the requests (shares in 0..1), with a fixed seed.
    pub fn start(upstream: &str, unavailable: f64, dropped: f64, seed: u64) -> FaultyProxy {
        let counts = Arc::new(FaultCounts::default());
        let (upstream, c) = (upstream.to_owned(), counts.clone());
        let dice = Arc::new(std::sync::Mutex::new(seed));
        let (runtime, addr) = serve_loopback(move |client, _| {
            let (upstream, c, dice) = (upstream.clone(), c.clone(), dice.clone());
            async move { serve(client, &upstream, &c, &dice, unavailable, dropped).await }
        });
        FaultyProxy { host: addr.to_string(), counts, _runtime: runtime }
    }
}

/// A tiny deterministic generator (splitmix64), shared by all connections. (xorshift from a
/// small seed gave runs of faults early on: six 503s in ten requests, enough for one request
/// to meet a 503 in all of its attempts now and then.)
fn roll(dice: &std::sync::Mutex<u64>) -> f64 {
    let mut s = dice.lock().unwrap();
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % 10_000) as f64 / 10_000.0
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    c: &FaultCounts,
    dice: &std::sync::Mutex<u64>,
    unavailable: f64,
    dropped: f64,
) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut client).await? else { return Ok(()) };
    c.requests.fetch_add(1, Ordering::Relaxed);
    let r = roll(dice);
    if r < unavailable {
        c.unavailable.fetch_add(1, Ordering::Relaxed);
        client.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
        return Ok(());
    }
    let drop_before = r < unavailable + dropped / 2.0;
    let drop_after = !drop_before && r < unavailable + dropped;
    if drop_before {
        c.dropped.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let answer = forward(upstream, &head, &body, &[]).await?;
    if drop_after {
        c.dropped.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    client.write_all(&answer).await
}
