//! A registry front that misbehaves on purpose, one behaviour per test, in front of a real
//! registry: it can demand Basic credentials, send upload `Location`s or blob reads to a
//! second origin (another port: another host to a client), tamper with manifests, answer one
//! with a huge body, stall, rate-limit with a long `Retry-After`, fail one image's manifest
//! with 500s, echo the `Authorization` header back in an error, or refuse the single-request
//! upload. Both origins record what they saw (method, path, `Authorization`). Loopback only;
//! each request is forwarded on its own connection; a stall lasts at most a minute.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::http::{forward, read_request, serve_loopback};

/// What the front does besides forwarding. Paths are matched as substrings of the request
/// target.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Demand these Basic credentials (`401` with a Basic challenge otherwise).
    pub basic: Option<(String, String)>,
    /// Send every upload `Location` to the other origin.
    pub uploads_elsewhere: bool,
    /// Answer blob reads with a `307` to the other origin.
    pub blobs_elsewhere: bool,
    /// Change one byte of manifests read under this path (keeping the registry's digest header).
    pub tamper_manifests: Option<String>,
    /// Answer manifest reads under this path with a JSON body of this many bytes.
    pub huge_manifests: Option<(String, usize)>,
    /// Never answer requests under this path (the connection stays open for a minute).
    pub stall: Option<String>,
    /// Answer `429` with this `Retry-After` (seconds) to requests of this method under this path.
    pub rate_limit: Option<(String, String, u64)>,
    /// Answer `500` to manifest reads under this path.
    pub fail_manifests: Option<String>,
    /// Answer `400` to writes (PUT) under this path, quoting the request's `Authorization`.
    pub echo_authorization: Option<String>,
    /// Answer the single-request upload (`POST .../blobs/uploads/?digest=` with the bytes) with
    /// this status and an OCI error body, as registries that do not take it may (zot answers
    /// 415 without `Content-Type: application/octet-stream`); every other request passes.
    pub refuse_single_post: Option<u16>,
}

/// One request as an origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `front` or `elsewhere`.
    pub origin: &'static str,
    /// The request line's method.
    pub method: String,
    /// The request target.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// A running front (and its second origin); both stop with their runtimes.
pub struct Hostile {
    /// The front, `127.0.0.1:PORT`: the registry host to give split-build.
    pub host: String,
    /// Every request both origins saw, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _front: tokio::runtime::Runtime,
    _elsewhere: tokio::runtime::Runtime,
}

impl Hostile {
    /// A front for the registry at `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str, behaviour: Behaviour) -> Hostile {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (up, s) = (upstream.to_owned(), seen.clone());
        let (elsewhere_rt, elsewhere) = serve_loopback(move |client, _| {
            let (up, s) = (up.clone(), s.clone());
            async move { pass(client, &up, &s).await }
        });
        let (up, s, b) = (upstream.to_owned(), seen.clone(), Arc::new(behaviour));
        let other = elsewhere.to_string();
        let (front_rt, front) = serve_loopback(move |client, _| {
            let (up, s, b, other) = (up.clone(), s.clone(), b.clone(), other.clone());
            async move { serve(client, &other, &up, &s, &b).await }
        });
        Hostile { host: front.to_string(), seen, _front: front_rt, _elsewhere: elsewhere_rt }
    }

    /// What the front saw.
    pub fn seen_front(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.origin == "front").cloned().collect()
    }

    /// What the second origin saw.
    pub fn seen_elsewhere(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.origin == "elsewhere").cloned().collect()
    }
}

fn request_line(head: &str) -> (String, String) {
    let mut words = head.split_whitespace();
    (words.next().unwrap_or_default().to_owned(), words.next().unwrap_or_default().to_owned())
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn record(seen: &Mutex<Vec<Seen>>, origin: &'static str, head: &str) -> (String, String) {
    let (method, target) = request_line(head);
    let authorization = header_value(head, "authorization");
    seen.lock().unwrap().push(Seen { origin, method: method.clone(), target: target.clone(), authorization });
    (method, target)
}

/// The second origin: records and forwards, demanding nothing.
async fn pass(mut client: TcpStream, upstream: &str, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut client).await? else { return Ok(()) };
    record(seen, "elsewhere", &head);
    let answer = forward(upstream, &head, &body, &["authorization"]).await?;
    client.write_all(&answer).await
}

async fn answer(client: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    client.write_all(head.as_bytes()).await?;
    client.write_all(body).await
}

/// Splits a forwarded answer into its head and body.
fn split(answer: &[u8]) -> (String, Vec<u8>) {
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
    (String::from_utf8_lossy(&answer[..at]).into_owned(), answer[at..].to_vec())
}

/// The same head with `name` set to `value` (and `Content-Length` to `len`).
fn with_header(head: &str, name: &str, value: &str) -> String {
    let mut lines: Vec<String> = head
        .trim_end()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase())))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{name}: {value}"));
    lines.join("\r\n") + "\r\n\r\n"
}

async fn serve(mut client: TcpStream, other: &str, upstream: &str, seen: &Mutex<Vec<Seen>>, b: &Behaviour) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut client).await? else { return Ok(()) };
    let (method, target) = record(seen, "front", &head);
    let under = |p: &Option<String>| p.as_ref().is_some_and(|p| target.contains(p.as_str()));
    let manifest_read = (method == "GET" || method == "HEAD") && target.contains("/manifests/");

    if let Some((user, password)) = &b.basic {
        use base64::Engine as _;
        let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        if header_value(&head, "authorization").as_deref() != Some(want.as_str()) {
            return answer(&mut client, "401 Unauthorized", &[("WWW-Authenticate", "Basic realm=\"hostile\"".into())], b"").await;
        }
    }
    if under(&b.stall) {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return Ok(());
    }
    if let Some((m, p, secs)) = &b.rate_limit
        && *m == method
        && target.contains(p.as_str())
    {
        let body = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limit exceeded, allowed: 2000/minute"}]}"#;
        return answer(&mut client, "429 Too Many Requests", &[("Retry-After", secs.to_string())], body).await;
    }
    if manifest_read && under(&b.fail_manifests) {
        return answer(&mut client, "500 Internal Server Error", &[], b"{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"boom\"}]}").await;
    }
    if let Some(status) = b.refuse_single_post
        && method == "POST"
        && target.contains("/blobs/uploads/?")
        && target.contains("digest=")
    {
        let body = br#"{"errors":[{"code":"UNSUPPORTED","message":"single-request upload refused"}]}"#;
        let status = format!("{status} Refused");
        return answer(&mut client, &status, &[("Content-Type", "application/json".into())], body).await;
    }
    if method == "PUT" && under(&b.echo_authorization) {
        let auth = header_value(&head, "authorization").unwrap_or_default();
        let body = format!(r#"{{"errors":[{{"code":"DENIED","message":"denied for {auth}"}}]}}"#);
        return answer(&mut client, "400 Bad Request", &[("Content-Type", "application/json".into())], body.as_bytes()).await;
    }
    if method == "GET"
        && target.contains("/manifests/")
        && let Some((p, size)) = &b.huge_manifests
        && target.contains(p.as_str())
    {
        // A valid JSON object of `size` bytes, sent as it is made (no Content-Length).
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n";
        client.write_all(head.as_bytes()).await?;
        client.write_all(b"{\"pad\":\"").await?;
        let chunk = vec![b'x'; 1 << 16];
        let mut sent = 0;
        while sent < *size {
            if client.write_all(&chunk).await.is_err() {
                return Ok(());
            }
            sent += chunk.len();
        }
        return client.write_all(b"\"}").await;
    }
    if method == "GET" && target.contains("/blobs/sha256:") && b.blobs_elsewhere {
        return answer(&mut client, "307 Temporary Redirect", &[("Location", format!("http://{other}{target}"))], b"").await;
    }

    let forwarded = forward(upstream, &head, &body, &["authorization"]).await?;
    let (mut ahead, mut abody) = split(&forwarded);
    if b.uploads_elsewhere
        && let Some(loc) = header_value(&ahead, "location").filter(|l| l.contains("/blobs/uploads/"))
    {
        let path = loc.split_once("://").map_or(loc.as_str(), |(_, rest)| rest.split_once('/').map_or("", |(_, p)| p));
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        ahead = with_header(&ahead, "Location", &format!("http://{other}{path}"));
    }
    if method == "GET" && manifest_read && under(&b.tamper_manifests) && !abody.is_empty() {
        // One byte more whitespace: same JSON, another digest.
        abody.insert(abody.len() - 1, b' ');
        ahead = with_header(&ahead, "Content-Length", &abody.len().to_string());
    }
    client.write_all(ahead.as_bytes()).await?;
    client.write_all(&abody).await
}
