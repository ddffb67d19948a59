//! GitHub's packages API: the versions of a ghcr.io container package (an organization's,
//! or a user's when the owner is not one), a page at a time, and deleting versions, under
//! GitHub's limits as it states them (`core::delete_budget` does the math: every answer's
//! `x-ratelimit-*` headers, our own pacing under the secondary limit, `retry-after`, the
//! hourly reset). A thin reqwest client, because octocrab's typed calls hide the headers
//! and retry rate limits on their own. A 5xx or a dropped connection is retried.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::anyhow;
use octocrab::Octocrab;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::adapters::clock::Clock;
use crate::core::delete_budget::{DeleteBudget, Gate, Kind, Limited, MAX_IN_FLIGHT, PAGE_SIZE, RateHeaders, Stop};
use crate::core::image_ref::Digest;
use crate::core::retention::{Stored, parse_rfc3339};
use crate::core::secret::Secret;

/// Tries of a request that GitHub answers with a 5xx (or that loses its connection).
const SERVER_TRIES: u32 = 6;

/// Whose packages: an organization's or a user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// `/orgs/{owner}/packages/...`.
    Org,
    /// `/users/{owner}/packages/...`.
    User,
}

/// Why a call gave no answer to use.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The run's time or hourly budget ends before the call could go: stop cleanly.
    Stopped(Stop),
    /// GitHub refused or failed (after retries), with what to do about it.
    Failed(anyhow::Error),
}

impl From<CallError> for anyhow::Error {
    fn from(e: CallError) -> anyhow::Error {
        match e {
            CallError::Stopped(s) => anyhow!("stopped before the call: {s:?}"),
            CallError::Failed(e) => e,
        }
    }
}

/// One page of a package's versions, newest first as GitHub lists them, with its `Link`s.
#[derive(Debug)]
pub(crate) struct Page {
    /// The versions of this page.
    pub versions: Vec<Stored>,
    /// `rel="next"`: the next older page.
    pub next: Option<String>,
    /// `rel="prev"`: the next newer page.
    pub prev: Option<String>,
    /// `rel="last"`: the oldest page (absent on the last page itself).
    pub last: Option<String>,
}

impl Page {
    /// About how many versions the package holds: a full page for every page before the last
    /// (read from the `page=` of `rel="last"`), this page's count when it is the only one.
    pub(crate) fn total_estimate(&self) -> u64 {
        let pages = self.last.as_deref().and_then(|u| query_number(u, "page")).unwrap_or(1);
        if pages <= 1 { self.versions.len() as u64 } else { (pages - 1) * PAGE_SIZE + PAGE_SIZE / 2 }
    }
}

/// One owner's container packages, and the rate budget of its token.
#[derive(Clone)]
pub(crate) struct GithubPackages {
    http: reqwest::Client,
    api: String,
    token: Secret,
    owner: String,
    kind: Owner,
    clock: Clock,
    deadline: Option<f64>,
    budget: Arc<Mutex<DeleteBudget>>,
    in_flight: Arc<Semaphore>,
}

#[derive(Deserialize)]
struct Version {
    id: u64,
    name: String,
    created_at: String,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    container: Option<Container>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    tags: Vec<String>,
}

impl GithubPackages {
    /// A client for `owner`'s packages at `api` with `token`; no request starts at or after
    /// `deadline` (seconds since the epoch on `clock`).
    pub(crate) fn new(owner: &str, token: &Secret, api: &str, clock: Clock, deadline: Option<f64>) -> anyhow::Result<GithubPackages> {
        crate::adapters::tls::init();
        let http = reqwest::Client::builder()
            .user_agent(concat!("split-build/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| anyhow!("building the GitHub client: {e}"))?;
        Ok(GithubPackages {
            http,
            api: api.trim_end_matches('/').to_owned(),
            token: token.clone(),
            owner: owner.to_owned(),
            kind: Owner::Org,
            clock,
            deadline,
            budget: Arc::default(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    fn versions_url(&self, name: &str) -> String {
        let prefix = match self.kind {
            Owner::Org => "orgs",
            Owner::User => "users",
        };
        let name = name.replace('/', "%2F").replace(' ', "%20").replace('?', "%3F").replace('#', "%23");
        format!("{}/{prefix}/{}/packages/container/{name}/versions", self.api, self.owner)
    }

    /// The newest page of package `name` (the repository path below `ghcr.io/{owner}/`),
    /// trying the organization, then the user, on 404; None when neither has it.
    pub(crate) async fn first_page(&mut self, name: &str, repository: &str) -> Result<Option<Page>, CallError> {
        for kind in [Owner::Org, Owner::User] {
            self.kind = kind;
            let url = format!("{}?per_page={PAGE_SIZE}&page=1", self.versions_url(name));
            match self.get_page(&url, name, repository).await? {
                Some(page) => return Ok(Some(page)),
                None => continue,
            }
        }
        self.kind = Owner::Org;
        tracing::info!("package `{name}` of `{}` does not exist: nothing to prune there", self.owner);
        Ok(None)
    }

    /// The page at `url` (a `Link` GitHub gave).
    pub(crate) async fn page(&self, url: &str, name: &str, repository: &str) -> Result<Page, CallError> {
        self.get_page(url, name, repository)
            .await?
            .ok_or_else(|| CallError::Failed(anyhow!("listing the versions of package `{name}`: GitHub answered 404 for `{url}`")))
    }

    async fn get_page(&self, url: &str, name: &str, repository: &str) -> Result<Option<Page>, CallError> {
        let doing = || format!("listing the versions of package `{name}` of `{}`", self.owner);
        let (status, headers, body) = self.send(Kind::Get, Method::GET, url, &doing).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(CallError::Failed(explain(status, &body, &doing())));
        }
        let list: Vec<Version> = serde_json::from_slice(&body)
            .map_err(|e| CallError::Failed(anyhow!("{}: GitHub's answer is not a version list: {e}", doing())))?;
        let links = links(&headers);
        Ok(Some(Page {
            versions: list.into_iter().map(|v| stored(v, repository)).collect(),
            next: links.get("next").cloned(),
            prev: links.get("prev").cloned(),
            last: links.get("last").cloned(),
        }))
    }

    /// Deletes version `id` of package `name`; a version already gone (404) counts as deleted.
    pub(crate) async fn delete(&self, name: &str, id: u64) -> Result<(), CallError> {
        let doing = || format!("deleting version {id} of `{name}`");
        let url = format!("{}/{id}", self.versions_url(name));
        let (status, _, body) = self.send(Kind::Delete, Method::DELETE, &url, &doing).await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => {
                tracing::debug!("version {id} of `{name}` was gone already");
                Ok(())
            }
            s => Err(CallError::Failed(explain(s, &body, &doing()))),
        }
    }

    /// GitHub's stated hourly limit and the rate-limit answers waited out (primary, secondary).
    pub(crate) fn limits(&self) -> (Option<u64>, (u64, u64)) {
        let b = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        (b.limit(), b.waits())
    }

    /// One request under the limits: waits for its turn (or stops at the run's budget),
    /// retries rate-limit answers after their wait and 5xx answers after a growing pause.
    async fn send(
        &self,
        kind: Kind,
        method: Method,
        url: &str,
        doing: &dyn Fn() -> String,
    ) -> Result<(StatusCode, HeaderMap, bytes::Bytes), CallError> {
        let mut server_errors = 0u32;
        loop {
            // A closed semaphore cannot happen: it is never closed.
            let _permit = self.in_flight.acquire().await.map_err(|e| CallError::Failed(anyhow!("{}: {e}", doing())))?;
            let seq = loop {
                let turn = {
                    let mut b = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
                    let now = self.clock.now();
                    match b.gate(kind, now, self.deadline) {
                        Gate::Go => Ok(b.sent(kind, now)),
                        Gate::Wait(t) => Err(Ok(t)),
                        Gate::Stop(s) => Err(Err(s)),
                    }
                };
                match turn {
                    Ok(seq) => break seq,
                    Err(Ok(t)) => self.clock.sleep_until(t).await,
                    Err(Err(s)) => return Err(CallError::Stopped(s)),
                }
            };
            let answer = self
                .http
                .request(method.clone(), url)
                .bearer_auth(self.token.expose())
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
                .send()
                .await;
            let (status, headers, body) = match answer {
                Ok(r) => {
                    let (status, headers) = (r.status(), r.headers().clone());
                    match r.bytes().await {
                        Ok(body) => (status, headers, body),
                        Err(e) => (StatusCode::BAD_GATEWAY, headers, bytes::Bytes::from(e.to_string())),
                    }
                }
                Err(e) => (StatusCode::BAD_GATEWAY, HeaderMap::new(), bytes::Bytes::from(e.to_string())),
            };
            let h = rate_headers(&headers);
            let now = self.clock.now();
            let limited = {
                let mut b = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
                b.answered(seq, &h);
                rate_limited(status, &h, &body).map(|secondary| b.limited(&h, secondary, now))
            };
            if let Some(which) = limited {
                tracing::info!(
                    "{}: GitHub's {} rate limit ({status}); waiting as it says, then going on",
                    doing(),
                    if which == Limited::Primary { "hourly" } else { "secondary" }
                );
                continue;
            }
            if status.is_server_error() {
                server_errors += 1;
                if server_errors < SERVER_TRIES {
                    tracing::info!("{}: GitHub answered {status}; trying again ({server_errors} of {})", doing(), SERVER_TRIES - 1);
                    self.clock.sleep_until(now + f64::from(1u32 << server_errors.min(6))).await;
                    continue;
                }
                return Err(CallError::Failed(anyhow!("{}: GitHub answered {status} {SERVER_TRIES} times: {}", doing(), message(&body))));
            }
            return Ok((status, headers, body));
        }
    }
}

fn stored(v: Version, repository: &str) -> Stored {
    Stored {
        repository: repository.to_owned(),
        digest: v.name.parse().unwrap_or_else(|_| Digest::sha256_of(v.name.as_bytes())),
        tags: v.metadata.and_then(|m| m.container).map(|c| c.tags).unwrap_or_default(),
        created: parse_rfc3339(&v.created_at),
        size: None,
        children: vec![],
        version_id: Some(v.id),
    }
}

fn rate_headers(h: &HeaderMap) -> RateHeaders {
    let num = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    RateHeaders {
        limit: num("x-ratelimit-limit").and_then(|v| u64::try_from(v).ok()),
        remaining: num("x-ratelimit-remaining").and_then(|v| u64::try_from(v).ok()),
        reset: num("x-ratelimit-reset"),
        retry_after: num("retry-after").and_then(|v| u64::try_from(v).ok()),
    }
}

/// Whether an answer is a rate limit, and then whether the secondary one: GitHub answers both
/// with 403 or 429; the hourly one has `x-ratelimit-remaining: 0`, the secondary one says so.
fn rate_limited(status: StatusCode, h: &RateHeaders, body: &[u8]) -> Option<bool> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    let secondary = text.contains("secondary rate limit") || text.contains("abuse");
    (status == StatusCode::TOO_MANY_REQUESTS || secondary || h.remaining == Some(0) || text.contains("rate limit")).then_some(secondary)
}

/// `rel` → URL of a `Link` header (`<url>; rel="next", <url>; rel="last"`).
fn links(h: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for value in h.get_all("link").iter().filter_map(|v| v.to_str().ok()) {
        for part in value.split(',') {
            let mut bits = part.split(';');
            let Some(url) = bits.next().map(str::trim).and_then(|u| u.strip_prefix('<')?.strip_suffix('>')) else { continue };
            for b in bits {
                if let Some(rel) = b.trim().strip_prefix("rel=") {
                    out.insert(rel.trim_matches('"').to_owned(), url.to_owned());
                }
            }
        }
    }
    out
}

fn query_number(url: &str, key: &str) -> Option<u64> {
    url.split_once('?')?.1.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// GitHub's `message` of an error body, else the body.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

/// A GitHub error with what to do about it: a 401 or 403 is a token without the packages
/// scopes (or, for a workflow's token, without admin access to the package).
fn explain(status: StatusCode, body: &[u8], doing: &str) -> anyhow::Error {
    let msg = message(body);
    if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
        anyhow!(
            "{doing}: GitHub refused ({status}: {msg}): the token needs the `read:packages` scope to list and `delete:packages` to delete (a workflow's GITHUB_TOKEN needs `permissions: packages: write` and admin access to the package)"
        )
    } else {
        anyhow!("{doing}: GitHub answered {status}: {msg}")
    }
}

fn explain_octocrab(e: octocrab::Error, doing: &str) -> anyhow::Error {
    match &e {
        octocrab::Error::GitHub { source, .. } => {
            explain(StatusCode::from_u16(source.status_code.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY), source.message.as_bytes(), doing)
        }
        _ => anyhow!("{doing}: {e}"),
    }
}

/// Commit SHAs of `owner/repo@branch`, newest first, at most `limit`.
pub(crate) async fn commits(token: Option<&str>, base_uri: Option<&str>, spec: &str, limit: usize) -> anyhow::Result<Vec<String>> {
    let (repo, branch) = spec.split_once('@').unwrap_or((spec, "main"));
    let (owner, name) =
        repo.split_once('/').ok_or_else(|| crate::outcome::UsageError(format!("--versions-from `{spec}`: use owner/repo@branch")))?;
    crate::adapters::tls::init();
    let mut b = Octocrab::builder();
    if let Some(t) = token {
        b = b.personal_token(t.to_owned());
    }
    if let Some(uri) = base_uri {
        b = b.base_uri(uri)?;
    }
    let crab = b.build()?;
    let mut page = crab
        .repos(owner, name)
        .list_commits()
        .branch(branch)
        .per_page(100)
        .send()
        .await
        .map_err(|e| explain_octocrab(e, &format!("listing commits of {spec}")))?;
    let mut out = Vec::new();
    loop {
        out.extend(page.items.iter().map(|c| c.sha.clone()));
        if out.len() >= limit {
            break;
        }
        let Some(next) = page.next.clone() else { break };
        match crab.get_page(&Some(next)).await.map_err(|e| explain_octocrab(e, &format!("listing commits of {spec}")))? {
            Some(p) => page = p,
            None => break,
        }
    }
    out.truncate(limit);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_limits_read_as_github_writes_them() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            r#"<https://api.github.com/orgs/o/packages/container/a/versions?per_page=100&page=2>; rel="next", <https://api.github.com/orgs/o/packages/container/a/versions?per_page=100&page=1335>; rel="last""#
                .parse()
                .unwrap(),
        );
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "1767225600".parse().unwrap());
        let l = links(&h);
        assert_eq!(query_number(&l["last"], "page"), Some(1335));
        assert!(l["next"].ends_with("page=2"));
        let r = rate_headers(&h);
        assert_eq!((r.remaining, r.reset, r.retry_after), (Some(0), Some(1_767_225_600), None));
        let page = Page { versions: vec![], next: None, prev: None, last: Some(l["last"].clone()) };
        assert_eq!(page.total_estimate(), 1334 * 100 + 50);
        let secondary = br#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#;
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &RateHeaders::default(), secondary), Some(true));
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &r, b"{\"message\":\"API rate limit exceeded\"}"), Some(false));
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &RateHeaders::default(), b"{\"message\":\"Must have admin rights\"}"), None);
    }
}
