//! What the local HTTP servers of the tests (the faulty proxy, the token front, the hostile
//! front, the fake GitHub API) share: a loopback listener with a task per connection, reading
//! a request (a chunked body, as the Docker daemon sends blobs, is decoded), forwarding one
//! upstream.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Serves on a free loopback port, one task per connection running `handle(connection,
/// this server's address)`; stops with the returned runtime.
pub fn serve_loopback<F, Fut>(handle: F) -> (tokio::runtime::Runtime, SocketAddr)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            tokio::spawn(handle(client, addr));
        }
    });
    (runtime, addr)
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
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // The Docker daemon uploads blobs chunked: decode, and pass the body on with a
        // Content-Length instead.
        let mut rest = buf[head_end..].to_vec();
        let mut body = Vec::new();
        loop {
            let Some(line_end) = find(&rest, b"\r\n") else {
                if !read_more(client, &mut rest).await? {
                    return Ok(None);
                }
                continue;
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
            if rest.len() < line_end + 2 + size + 2 {
                if !read_more(client, &mut rest).await? {
                    return Ok(None);
                }
                continue;
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
        let lines: Vec<&str> =
            head.trim_end().split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("transfer-encoding:")).collect();
        let head = format!("{}\r\nContent-Length: {}\r\n\r\n", lines.join("\r\n"), body.len());
        return Ok(Some((head, body)));
    }
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
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

/// Reads more bytes into `buf`; false when the client closed.
async fn read_more(client: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 65536];
    let n = client.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
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
