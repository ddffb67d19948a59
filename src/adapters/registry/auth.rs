//! Authentication: the scopes a request needs, the `WWW-Authenticate` challenge, Basic
//! credentials, and Bearer tokens fetched once per (host, set of scopes) covering every
//! repository an operation touches (a token scoped to the target alone makes a cross-repo
//! mount answer 202).

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use tokio::sync::Mutex;

use super::error::{ErrorKind, RegistryError};
use super::transport::{error_chain, read_capped, strip_query};
use super::{Registry, TOKEN_LIMIT};

/// Which permissions a request needs on which repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// The repository path.
    pub repository: String,
    /// `pull` or `pull,push` (or with `delete`).
    pub actions: &'static str,
}

impl Scope {
    /// Read access to `repository`.
    pub fn pull(repository: &str) -> Scope {
        Scope { repository: repository.to_owned(), actions: "pull" }
    }
    /// Read and write access to `repository`.
    pub fn push(repository: &str) -> Scope {
        Scope { repository: repository.to_owned(), actions: "pull,push" }
    }
    /// Delete access (Docker's token servers call it `delete`; the distribution
    /// registry's htpasswd mode has no scopes at all).
    pub fn delete(repository: &str) -> Scope {
        Scope { repository: repository.to_owned(), actions: "pull,push,delete" }
    }
    fn as_param(&self) -> String {
        format!("repository:{}:{}", self.repository, self.actions)
    }
}

/// How a host authenticates, once it said.
#[derive(Debug, Clone)]
enum HostAuth {
    /// The registry asked for Basic.
    Basic,
    /// The registry asked for a Bearer token from this realm.
    Bearer { realm: String, service: Option<String> },
}

/// What the client learned of each host's auth, and the tokens it holds.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    hosts: Mutex<HashMap<String, HostAuth>>,
    tokens: Mutex<HashMap<(String, String), String>>,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm="...",service="..."`.
    Bearer {
        /// Where tokens come from.
        realm: String,
        /// The service parameter to pass back.
        service: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(rest);
            Some(Challenge::Bearer { realm: params.get("realm")?.clone(), service: params.get("service").cloned() })
        }
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_owned(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn scope_key(scopes: &[Scope]) -> String {
    let mut s: Vec<String> = scopes.iter().map(Scope::as_param).collect();
    s.sort();
    s.join(" ")
}

/// Whether Basic credentials may go to a token realm: over HTTPS, or over plain HTTP when
/// the registry itself is spoken to over plain HTTP (loopback or `--insecure-registry`).
fn basic_may_go_to(realm: &reqwest::Url, registry_plain: bool) -> bool {
    realm.scheme() == "https" || (realm.scheme() == "http" && registry_plain)
}

fn auth_error(text: String) -> RegistryError {
    RegistryError::new(ErrorKind::Auth, text)
}

impl Registry {
    /// The `Authorization` value for a request to `host` needing `scopes`, once the host
    /// has said how it authenticates.
    pub(super) async fn auth_header(&self, host: &str, scopes: &[Scope]) -> Option<String> {
        let mode = self.auth.hosts.lock().await.get(host).cloned()?;
        match mode {
            HostAuth::Basic => self.credential(host).await.map(|c| basic(&c.username, c.password.expose())),
            HostAuth::Bearer { realm, service } => {
                let key = (host.to_owned(), scope_key(scopes));
                if let Some(t) = self.auth.tokens.lock().await.get(&key) {
                    return Some(format!("Bearer {t}"));
                }
                // A new set of scopes on a known Bearer host: ask for its token now rather
                // than after a 401. A failure here resurfaces as that 401's error.
                let token = self.fetch_token(host, &realm, service.as_deref(), scopes).await.ok()?;
                self.auth.tokens.lock().await.insert(key, token.clone());
                Some(format!("Bearer {token}"))
            }
        }
    }

    /// Learns how `host` authenticates from its challenge, and fetches a token for `scopes`
    /// when it wants one.
    pub(super) async fn answer_challenge(&self, host: &str, challenge: &str, scopes: &[Scope]) -> Result<(), RegistryError> {
        match parse_challenge(challenge) {
            Some(Challenge::Basic) => {
                if self.credential(host).await.is_none() {
                    return Err(auth_error(format!("{host} wants a user name and password; {}", self.credentials.login_hint(host))));
                }
                self.auth.hosts.lock().await.insert(host.to_owned(), HostAuth::Basic);
            }
            Some(Challenge::Bearer { realm, service }) => {
                self.auth.hosts.lock().await.insert(host.to_owned(), HostAuth::Bearer { realm: realm.clone(), service: service.clone() });
                let token = self.fetch_token(host, &realm, service.as_deref(), scopes).await?;
                self.auth.tokens.lock().await.insert((host.to_owned(), scope_key(scopes)), token);
            }
            None => return Err(auth_error(format!("{host} answered 401 without a usable WWW-Authenticate challenge (`{challenge}`)"))),
        }
        Ok(())
    }

    /// Asks the token realm for one token covering every scope.
    async fn fetch_token(&self, host: &str, realm: &str, service: Option<&str>, scopes: &[Scope]) -> Result<String, RegistryError> {
        let mut url = reqwest::Url::parse(realm).map_err(|_| auth_error(format!("{host}'s token realm `{realm}` is not a URL")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", &s.as_param());
            }
        }
        let mut req = self.http.get(url.clone()).timeout(self.timeout);
        if let Some(c) = self.credential(host).await {
            if basic_may_go_to(&url, self.plain(host)) && c.identity_token {
                // An identity token is a refresh token: the OAuth form of the token request.
                let mut form: Vec<(&str, String)> = vec![
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", c.password.expose().to_owned()),
                    ("client_id", "split-build".into()),
                    ("scope", scopes.iter().map(Scope::as_param).collect::<Vec<_>>().join(" ")),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_owned()));
                }
                let body: String =
                    reqwest::Url::parse_with_params("x:", &form).map(|u| u.query().unwrap_or_default().to_owned()).unwrap_or_default();
                let mut realm_only = url.clone();
                realm_only.set_query(None);
                req = self.http.post(realm_only).timeout(self.timeout).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
            } else if basic_may_go_to(&url, self.plain(host)) {
                req = req.header(AUTHORIZATION, basic(&c.username, c.password.expose()));
            } else {
                tracing::warn!(
                    "{host}'s token service `{}` is plain HTTP: asking it without credentials (they go to a token service over HTTPS only, unless the registry itself is loopback or --insecure-registry)",
                    strip_query(url.as_str())
                );
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| RegistryError::new(ErrorKind::Connection, format!("asking {host}'s token service: {}", error_chain(&e))))?;
        if !resp.status().is_success() {
            return Err(auth_error(format!(
                "{host}'s token service refused ({}): check that the credentials may read/write these repositories; {}",
                resp.status(),
                self.credentials.login_hint(host)
            )));
        }
        let answer = read_capped(resp, TOKEN_LIMIT, &format!("reading {host}'s token")).await?;
        let body: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| RegistryError::new(ErrorKind::Protocol, format!("reading the token: {e}")))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::new(ErrorKind::Protocol, format!("{host}'s token service answered without a token")))?;
        self.secrets.add(&token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull""#),
            Some(Challenge::Bearer { realm: "https://ghcr.io/token".into(), service: Some("ghcr.io".into()) })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://auth.docker.io/token", service="registry.docker.io""#),
            Some(Challenge::Bearer { realm: "https://auth.docker.io/token".into(), service: Some("registry.docker.io".into()) })
        );
        assert_eq!(parse_challenge(r#"Basic realm="test""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None, "a Bearer challenge needs a realm");
    }

    #[test]
    fn one_token_covers_every_scope_in_a_stable_order() {
        let a = scope_key(&[Scope::push("dst"), Scope::pull("base"), Scope::pull("payload")]);
        let b = scope_key(&[Scope::pull("payload"), Scope::push("dst"), Scope::pull("base")]);
        assert_eq!(a, b);
        assert_eq!(a, "repository:base:pull repository:dst:pull,push repository:payload:pull");
    }

    #[test]
    fn basic_goes_to_a_realm_over_tls_or_for_a_plain_registry() {
        let realm = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(basic_may_go_to(&realm("https://auth.example/token"), false));
        assert!(!basic_may_go_to(&realm("http://auth.example/token"), false), "plain HTTP to a TLS registry's realm");
        assert!(basic_may_go_to(&realm("http://127.0.0.1:9/token"), true), "a loopback or insecure registry's realm");
    }
}
