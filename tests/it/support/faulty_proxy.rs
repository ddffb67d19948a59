//! An HTTP/1.1 proxy in front of a registry that fails a share of requests: some get a
//! 503, some have their connection dropped before any answer (after the registry saw the
//! request, or before). Each request is forwarded on its own upstream connection with
//! `Connection: close`, so every request, not just every connection, meets the dice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

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
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let counts = Arc::new(FaultCounts::default());
        let upstream = upstream.to_owned();
        let c = counts.clone();
        runtime.spawn(async move {
            let dice = Arc::new(std::sync::Mutex::new(seed));
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let (upstream, c, dice) = (upstream.clone(), c.clone(), dice.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &c, &dice, unavailable, dropped).await;
                });
            }
        });
        FaultyProxy { host, counts, _runtime: runtime }
    }
}

/// A tiny deterministic generator (xorshift), shared by all connections.
fn roll(dice: &std::sync::Mutex<u64>) -> f64 {
    let mut s = dice.lock().unwrap();
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    (*s % 10_000) as f64 / 10_000.0
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

/// Reads one HTTP/1.1 request (headers, then `Content-Length` bytes of body): its head
/// text and body, or `None` when the client closed first.
pub async fn read_request(client: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 16384];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 65536];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, buf[head_end..head_end + len].to_vec())))
}

/// Forwards a request on a new upstream connection with `Connection: close`, leaving out
/// headers named in `drop` (lower case), and returns the whole answer.
pub async fn forward(upstream: &str, head: &str, body: &[u8], drop: &[&str]) -> std::io::Result<Vec<u8>> {
    let mut lines: Vec<&str> = head
        .trim_end()
        .split("\r\n")
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            !lower.starts_with("connection:") && !drop.iter().any(|d| lower.starts_with(&format!("{d}:")))
        })
        .collect();
    lines.push("Connection: close");
    let mut forwarded = lines.join("\r\n").into_bytes();
    forwarded.extend_from_slice(b"\r\n\r\n");
    forwarded.extend_from_slice(body);
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(&forwarded).await?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await?;
    Ok(answer)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
