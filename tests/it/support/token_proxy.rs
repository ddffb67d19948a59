//! A Bearer-token front for a registry, as ghcr.io and Docker Hub behave: every request
//! without a token for the scopes it needs gets a 401 challenge naming a token realm; the
//! realm hands out tokens for exactly the scopes asked (recorded for the test); requests
//! with a good token go on to the registry. A cross-repository mount needs `pull` on the
//! source repository too, which is the pitfall of clients that scope tokens to the target.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::http::{forward, read_request, serve_loopback};

/// A running token front; stops with its runtime.
pub struct TokenProxy {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The scope sets of every token handed out, in order.
    pub issued: Arc<Mutex<Vec<BTreeSet<String>>>>,
    _runtime: tokio::runtime::Runtime,
}

impl TokenProxy {
    /// Fronts `upstream`, handing any scope to anyone.
    pub fn start(upstream: &str) -> TokenProxy {
        TokenProxy::serving(upstream, None)
    }

    /// Fronts `upstream` as GHCR does for a public package: anyone gets pull tokens, push
    /// scopes only a request whose Basic password is `password` (a GitHub token).
    pub fn start_with_password(upstream: &str, password: &str) -> TokenProxy {
        TokenProxy::serving(upstream, Some(password.to_owned()))
    }

    fn serving(upstream: &str, password: Option<String>) -> TokenProxy {
        let issued: Arc<Mutex<Vec<BTreeSet<String>>>> = Arc::default();
        let tokens: Arc<Mutex<HashMap<String, BTreeSet<String>>>> = Arc::default();
        let (up, iss, password) = (upstream.to_owned(), issued.clone(), Arc::new(password));
        let (runtime, addr) = serve_loopback(move |client, me| {
            let (up, iss, tokens, password) = (up.clone(), iss.clone(), tokens.clone(), password.clone());
            async move { serve(client, &up, &me.to_string(), &iss, &tokens, password.as_deref()).await }
        });
        TokenProxy { host: addr.to_string(), issued, _runtime: runtime }
    }
}

/// The password of a request's Basic `Authorization`, if any.
fn basic_password(head: &str) -> Option<String> {
    use base64::Engine as _;
    let value = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("authorization").then(|| v.trim().to_owned())
    })?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?).ok()?;
    decoded.split_once(':').map(|(_, p)| p.to_owned())
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    me: &str,
    issued: &Mutex<Vec<BTreeSet<String>>>,
    tokens: &Mutex<HashMap<String, BTreeSet<String>>>,
    password: Option<&str>,
) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut client).await? else { return Ok(()) };
    let first = head.lines().next().unwrap_or_default().to_owned();
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    if let Some(query) = target.strip_prefix("/token?") {
        let scopes: BTreeSet<String> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("scope="))
            .map(|s| s.replace("%3A", ":").replace("%2C", ",").replace("%2F", "/"))
            .collect();
        // Without the password, pull only: a push with such a token is refused.
        let scopes: BTreeSet<String> = match password {
            Some(p) if basic_password(&head).as_deref() != Some(p) => {
                scopes.iter().map(|s| s.rsplit_once(':').map_or(s.clone(), |(repo, _)| format!("{repo}:pull"))).collect()
            }
            _ => scopes,
        };
        let token = format!("tok{}", tokens.lock().unwrap().len());
        tokens.lock().unwrap().insert(token.clone(), scopes.clone());
        issued.lock().unwrap().push(scopes);
        let body = format!("{{\"token\":\"{token}\"}}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return client.write_all(answer.as_bytes()).await;
    }
    let needed = needed_scopes(&method, &target);
    let granted = head
        .lines()
        .find_map(|l| l.strip_prefix("Authorization: Bearer ").or_else(|| l.strip_prefix("authorization: Bearer ")))
        .and_then(|t| tokens.lock().unwrap().get(t.trim()).cloned())
        .unwrap_or_default();
    let ok = needed
        .iter()
        .all(|(repo, action)| granted.iter().any(|g| g.starts_with(&format!("repository:{repo}:")) && g.contains(action.as_str())));
    if head.lines().all(|l| !l.to_ascii_lowercase().starts_with("authorization: bearer")) || !ok {
        let challenge = format!("Bearer realm=\"http://{me}/token\",service=\"test-registry\"");
        let answer =
            format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return client.write_all(answer.as_bytes()).await;
    }
    let answer = forward(upstream, &head, &body, &["authorization"]).await?;
    client.write_all(&answer).await
}

/// (repository, action) pairs a request needs.
fn needed_scopes(method: &str, target: &str) -> Vec<(String, String)> {
    let path = target.split('?').next().unwrap_or(target);
    let Some(rest) = path.strip_prefix("/v2/") else { return vec![] };
    let Some(cut) = ["/manifests/", "/blobs/", "/tags/"].iter().filter_map(|m| rest.find(m)).min() else { return vec![] };
    let repo = rest[..cut].to_owned();
    let action = if matches!(method, "GET" | "HEAD") { "pull" } else { "push" };
    let mut out = vec![(repo, action.to_owned())];
    if let Some(from) = target.split('?').nth(1).and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("from="))) {
        out.push((from.to_owned(), "pull".to_owned()));
    }
    out
}
