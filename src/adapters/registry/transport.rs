//! One request to a registry: credentials only to the registry's own origin, redirects
//! (GET and HEAD, at most five), the request's deadline (`--timeout`), write pacing, the
//! concurrency bound, retries as [`super::retry`] says, and capped reads of answers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::auth::Scope;
use super::error::{Class, ErrorKind, RegistryError, parse_error_body};
use super::retry::{backoff, rate_limit_wait};
use super::{ERROR_LIMIT, MAX_REDIRECTS, Registry, Stats};

/// A request body that can be sent again on a retry.
#[derive(Clone)]
pub(super) struct Body {
    bytes: Bytes,
    content_type: &'static str,
}

impl Body {
    /// Bytes of this media type.
    pub(super) fn typed(bytes: Bytes, content_type: &'static str) -> Body {
        Body { bytes, content_type }
    }
    /// Bytes of any kind.
    pub(super) fn octets(bytes: Bytes) -> Body {
        Body::typed(bytes, "application/octet-stream")
    }
    /// No bytes.
    pub(super) fn empty() -> Body {
        Body::octets(Bytes::new())
    }
}

/// One request as an operation describes it: what to send where with which scopes, what it
/// is doing (for errors), and which error statuses the operation answers itself.
pub(super) struct Request<'a> {
    /// The registry host the credentials belong to.
    host: &'a str,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Body>,
    scopes: Vec<Scope>,
    /// What the request is for, as an error says it: "reading the manifest of `x`".
    doing: String,
    /// Error statuses handed back to the operation as answers (404 for "does not exist").
    expected: &'static [StatusCode],
}

impl<'a> Request<'a> {
    /// A request without body or extra headers.
    pub(super) fn new(host: &'a str, method: Method, url: String, scopes: Vec<Scope>, doing: String) -> Request<'a> {
        Request { host, method, url, headers: HeaderMap::new(), body: None, scopes, doing, expected: &[] }
    }
    /// The same request with a body.
    pub(super) fn body(mut self, body: Body) -> Request<'a> {
        self.body = Some(body);
        self
    }
    /// The same request with these headers.
    pub(super) fn headers(mut self, headers: HeaderMap) -> Request<'a> {
        self.headers = headers;
        self
    }
    /// The same request, handing these error statuses back as answers.
    pub(super) fn expect(mut self, statuses: &'static [StatusCode]) -> Request<'a> {
        self.expected = statuses;
        self
    }
}

fn is_write(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// What to do after one attempt.
enum Next {
    /// Done: hand the answer to the operation.
    Answer(reqwest::Response),
    /// Follow the redirect to this URL.
    Redirect(String),
    /// The host asked for credentials: learn how, then send again.
    Challenge(String),
    /// A temporary failure: back off and send again, using up an attempt.
    Retry,
    /// A rate limit: wait this long and send again, using up no attempt.
    Pace(Duration),
}

/// Where one request stands across its attempts.
struct Progress {
    url: String,
    deadline: Instant,
    attempts: u32,
    limits: u32,
    redirects: usize,
    challenged: bool,
}

impl Registry {
    /// Sends one request with auth, retries, redirects and the concurrency bound, within
    /// the client's timeout: the answer, or the error for an error answer the operation
    /// does not expect. Credentials go only to the registry's own scheme, host and port: a
    /// redirect, upload `Location` or `Link` elsewhere is followed without them. A task
    /// waiting out a 429 or a backoff holds no concurrency slot.
    pub(super) async fn send(&self, req: Request<'_>, stats: &Stats) -> Result<reqwest::Response, RegistryError> {
        let mut at = Progress {
            url: req.url.clone(),
            deadline: Instant::now() + self.timeout,
            attempts: 0,
            limits: 0,
            redirects: 0,
            challenged: false,
        };
        loop {
            let left = at.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out(&req.method, &at.url));
            }
            let next = match self.attempt(&req, &at.url, left, stats).await? {
                Ok(resp) => self.judge(&req, &mut at, resp, stats).await?,
                Err(e) if e.is_timeout() && Instant::now() >= at.deadline => return Err(self.timed_out(&req.method, &at.url)),
                Err(e) if at.attempts + 1 >= self.retry.attempts || e.is_builder() => {
                    let text = format!("{} {}: {}", req.method, strip_query(&at.url), error_chain(&e));
                    return Err(RegistryError::new(ErrorKind::Connection, text));
                }
                Err(e) => {
                    tracing::debug!("{} {}: {}: retrying", req.method, strip_query(&at.url), error_chain(&e));
                    Next::Retry
                }
            };
            let wait = match next {
                Next::Answer(resp) => return Ok(resp),
                Next::Redirect(to) => {
                    at.redirects += 1;
                    if at.redirects > MAX_REDIRECTS || !(req.method == Method::GET || req.method == Method::HEAD) {
                        let text = format!(
                            "{} {}: the registry redirected {} times (at most {MAX_REDIRECTS}, GET and HEAD only)",
                            req.method,
                            strip_query(&at.url),
                            at.redirects
                        );
                        return Err(RegistryError::new(ErrorKind::Protocol, text));
                    }
                    at.url = to;
                    continue;
                }
                Next::Challenge(challenge) => {
                    self.answer_challenge(req.host, &challenge, &req.scopes).await?;
                    continue;
                }
                Next::Retry => {
                    at.attempts += 1;
                    backoff(self.retry, at.attempts, rand::random())
                }
                Next::Pace(wait) => {
                    at.limits += 1;
                    wait
                }
            };
            for s in [stats, &*self.totals] {
                s.retries.fetch_add(1, Ordering::Relaxed);
            }
            let left = at.deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(wait.min(left)).await;
        }
    }

    /// Sends `req` to `url` once: credentials, pacing, counting, the concurrency slot.
    async fn attempt(
        &self,
        req: &Request<'_>,
        url: &str,
        left: Duration,
        stats: &Stats,
    ) -> Result<Result<reqwest::Response, reqwest::Error>, RegistryError> {
        let mut r = self.http.request(req.method.clone(), url).headers(req.headers.clone()).timeout(left);
        if same_origin(url, &self.base_url(req.host))
            && let Some(auth) = self.auth_header(req.host, &req.scopes).await
        {
            r = r.header(AUTHORIZATION, auth);
        }
        if let Some(b) = &req.body {
            r = r.header(CONTENT_TYPE, b.content_type).body(b.bytes.clone());
        }
        let write = is_write(&req.method);
        if write {
            let wait = self.pacer.reserve(req.host, Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(left)).await;
            }
        }
        for s in [stats, &*self.totals] {
            s.requests.fetch_add(1, Ordering::Relaxed);
            if write {
                s.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _permit = self.permits.acquire().await.map_err(|_| RegistryError::new(ErrorKind::Connection, "the request pool is closed"))?;
        Ok(r.send().await)
    }

    /// What an answer means for the request: done, a hop, a challenge, a retry or a wait;
    /// or the error it is.
    async fn judge(&self, req: &Request<'_>, at: &mut Progress, resp: reqwest::Response, stats: &Stats) -> Result<Next, RegistryError> {
        let (host, method, url, status) = (req.host, &req.method, at.url.as_str(), resp.status());
        let ours = same_origin(url, &self.base_url(host));
        if status.is_redirection() && resp.headers().contains_key(LOCATION) {
            let location = header(resp.headers(), LOCATION.as_str()).unwrap_or_default();
            let to = reqwest::Url::parse(url).and_then(|u| u.join(&location)).map(String::from).map_err(|_| {
                RegistryError::new(ErrorKind::Protocol, format!("{host} redirected to `{}`, which is not a URL", strip_query(&location)))
            })?;
            return Ok(Next::Redirect(to));
        }
        if status == StatusCode::UNAUTHORIZED {
            let text = if !ours {
                format!(
                    "{host} sent {method} to {} , which refused it without credentials (401): split-build sends {host}'s credentials to {host} only",
                    strip_query(url)
                )
            } else if at.challenged {
                format!("{host} refused {} {} (401 Unauthorized); {}", method, strip_query(url), self.credentials.login_hint(host))
            } else {
                at.challenged = true;
                return Ok(Next::Challenge(header(resp.headers(), WWW_AUTHENTICATE.as_str()).unwrap_or_default()));
            };
            return Err(RegistryError::new(ErrorKind::Auth, text));
        }
        let error_status = status.is_client_error() || status.is_server_error();
        if !error_status || req.expected.contains(&status) {
            if let Some(b) = &req.body {
                for s in [stats, &*self.totals] {
                    s.bytes_pushed.fetch_add(b.bytes.len() as u64, Ordering::Relaxed);
                }
            }
            if is_write(method) {
                self.pacer.succeeded(host, Instant::now());
            }
            return Ok(Next::Answer(resp));
        }
        let error = self.status_error(status, &req.doing, resp).await;
        let retry_after = error.retry_after();
        match error.class() {
            Class::RateLimited => {
                let left = at.deadline.saturating_duration_since(Instant::now());
                // Every write to the host holds back for a wait this request can take; a
                // longer one fails this request and slows the rest, but holds none of them.
                self.pacer.limited(host, Instant::now(), retry_after.filter(|d| *d <= left).unwrap_or_default());
                if let Some(d) = retry_after.filter(|d| *d > left) {
                    let doing = format!(
                        "{method} {}: the registry asks to wait {} (Retry-After), longer than the {} this request may take (--timeout)",
                        strip_query(url),
                        humantime::format_duration(d),
                        humantime::format_duration(self.timeout)
                    );
                    return Err(error.restated(&doing));
                }
                tracing::debug!("{method} {} answered {status}: waiting as asked", strip_query(url));
                // A rate limit is pacing, not a failure: it uses up no attempt.
                Ok(Next::Pace(rate_limit_wait(retry_after, at.limits, rand::random())))
            }
            Class::Temporary if at.attempts + 1 < self.retry.attempts => {
                tracing::debug!("{method} {} answered {status}: retrying", strip_query(url));
                Ok(Next::Retry)
            }
            _ => Err(error),
        }
    }

    fn timed_out(&self, method: &Method, url: &str) -> RegistryError {
        let text = format!("{method} {}: no answer within {} (--timeout)", strip_query(url), humantime::format_duration(self.timeout));
        RegistryError::new(ErrorKind::Timeout, text)
    }

    /// The error for an answer that is not what was asked: the status and the registry's
    /// own words (its `errors` list, else the start of its body), with every secret cut out.
    pub(super) async fn status_error(&self, status: StatusCode, doing: &str, resp: reqwest::Response) -> RegistryError {
        let retry_after = retry_after_of(resp.headers());
        let body = read_capped(resp, ERROR_LIMIT, doing).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let (codes, message) = parse_error_body(&body);
        RegistryError::status(doing, status, codes, self.secrets.redact(&message), retry_after)
    }
}

/// A header's value as text.
pub(super) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// A URL without its query (which may hold upload state or signatures) for messages.
pub(super) fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// An error and its causes, one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Reads a body as it streams, refusing one over `limit` bytes before it is all in memory.
pub(super) async fn read_capped(mut resp: reqwest::Response, limit: usize, doing: &str) -> Result<Bytes, RegistryError> {
    let too_big = |n: u64| {
        RegistryError::new(
            ErrorKind::Protocol,
            format!("{doing}: the registry sent {n} bytes or more, over the {} limit", human_bytes(limit)),
        )
    };
    if let Some(n) = resp.content_length().filter(|n| *n > limit as u64) {
        return Err(too_big(n));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| RegistryError::new(ErrorKind::Connection, format!("{doing}: {}", error_chain(&e))))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(too_big((buf.len() + chunk.len()) as u64));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 { format!("{} MiB", n >> 20) } else { format!("{} KiB", n >> 10) }
}

/// Whether `a` and `b` have the same scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    let v = header(headers, RETRY_AFTER.as_str())?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether a registry host is on a loopback address (spoken to over plain HTTP).
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_only_their_own_origin() {
        assert!(same_origin("https://ghcr.io/v2/a/blobs/uploads/x?y", "https://ghcr.io"));
        assert!(same_origin("https://ghcr.io:443/v2/", "https://ghcr.io"));
        assert!(!same_origin("https://pkg-containers.githubusercontent.com/x", "https://ghcr.io"), "another host");
        assert!(!same_origin("http://ghcr.io/v2/", "https://ghcr.io"), "another scheme");
        assert!(!same_origin("http://127.0.0.1:5001/v2/", "http://127.0.0.1:5000"), "another port");
        assert!(!same_origin("not a url", "https://ghcr.io"));
    }

    #[test]
    fn loopback_hosts_use_plain_http() {
        for h in ["127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.0.0.1"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["ghcr.io", "10.0.0.1:5000", "registry.local"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn retry_after_is_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after_of(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after_of(&h), None);
    }
}
