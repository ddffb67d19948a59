//! A GHCR-like front before a registry: it lets at most `rate` writes a second through in all
//! (a token bucket holding one second's worth, shared by every client, as GHCR's budget is
//! shared by every job of a run) and answers a write beyond it `429 Too Many Requests` with
//! `Retry-After: 1`, never passing it on. Reads are not limited. Each request is forwarded on
//! its own upstream connection; the `Host` header is passed unchanged, so upload `Location`s
//! name the front.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::http::{forward, read_request, serve_loopback};

/// Counts of what the front did.
#[derive(Default, Debug)]
pub struct RateCounts {
    /// Requests seen.
    pub requests: AtomicU64,
    /// Writes (POST, PUT, PATCH, DELETE) seen, refused ones included.
    pub writes: AtomicU64,
    /// Writes answered 429.
    pub refused: AtomicU64,
}

impl RateCounts {
    /// (requests, writes, refused) so far.
    pub fn get(&self) -> (u64, u64, u64) {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (n(&self.requests), n(&self.writes), n(&self.refused))
    }
}

/// A running front; stops with its runtime.
pub struct RateFront {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// What it did so far.
    pub counts: Arc<RateCounts>,
    _runtime: tokio::runtime::Runtime,
}

impl RateFront {
    /// A front before `upstream` (`127.0.0.1:PORT`) letting `rate` writes a second through.
    pub fn start(upstream: &str, rate: f64) -> RateFront {
        let counts = Arc::new(RateCounts::default());
        // (tokens, when last filled): starts full, as GHCR's minute does.
        let bucket = Arc::new(Mutex::new((rate, Instant::now())));
        let (upstream, c) = (upstream.to_owned(), counts.clone());
        let (runtime, addr) = serve_loopback(move |client, _| {
            let (upstream, c, bucket) = (upstream.clone(), c.clone(), bucket.clone());
            async move { serve(client, &upstream, &c, &bucket, rate).await }
        });
        RateFront { host: addr.to_string(), counts, _runtime: runtime }
    }
}

fn take(bucket: &Mutex<(f64, Instant)>, rate: f64) -> bool {
    let mut b = bucket.lock().unwrap();
    let now = Instant::now();
    b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
    b.1 = now;
    if b.0 >= 1.0 {
        b.0 -= 1.0;
        true
    } else {
        false
    }
}

async fn serve(mut client: TcpStream, upstream: &str, c: &RateCounts, bucket: &Mutex<(f64, Instant)>, rate: f64) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut client).await? else { return Ok(()) };
    c.requests.fetch_add(1, Ordering::Relaxed);
    let method = head.split(' ').next().unwrap_or("");
    if ["POST", "PUT", "PATCH", "DELETE"].contains(&method) {
        c.writes.fetch_add(1, Ordering::Relaxed);
        if !take(bucket, rate) {
            c.refused.fetch_add(1, Ordering::Relaxed);
            let msg = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"retry-after: 1s, allowed: 2000/minute (test front)"}]}"#;
            let answer = format!(
                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                msg.len()
            );
            return client.write_all(answer.as_bytes()).await;
        }
    }
    let answer = forward(upstream, &head, &body, &[]).await?;
    client.write_all(&answer).await
}
