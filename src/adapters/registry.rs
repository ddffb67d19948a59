//! A thin OCI distribution client over reqwest: manifests, blobs, cross-repository mounts,
//! uploads, tag lists and deletes, with Bearer/Basic auth, retries and bounded concurrency.
//!
//! Why not `oci-client`: it scopes its token to the target repository only (a cross-repo
//! mount then answers 202), treats a 202 mount as an error and swallows token errors; here
//! one token covers every repository an operation touches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tokio::sync::{Mutex, Semaphore};

use crate::adapters::credentials::Credentials;
use crate::core::image_config::{Index, Manifest, is_index};
use crate::core::image_ref::{Digest, ImageRef};
use crate::core::platform::Platform;
use crate::core::report::Counters;

/// The four manifest media types, in the order a registry should prefer them.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Most bytes read of one manifest or index: what the OCI distribution spec asks registries
/// to accept.
pub const MANIFEST_LIMIT: usize = 4 << 20;
/// Most bytes read of a config blob (or any blob read whole, but for a layer copy).
pub const CONFIG_LIMIT: usize = 8 << 20;
/// Most bytes of a layer copied through memory when a registry refuses a mount.
pub const COPY_LIMIT: usize = 512 << 20;
/// Most bytes of a token service's answer.
const TOKEN_LIMIT: usize = 1 << 20;
/// Most bytes of a tag list page.
const TAGS_LIMIT: usize = 16 << 20;
/// Most bytes of an error answer kept for its message.
const ERROR_LIMIT: usize = 64 << 10;
/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;
/// The longest silence tolerated while connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest silence tolerated while reading an answer.
const IDLE_READ: Duration = Duration::from_secs(30);
/// Writes a second to one registry host by default (`--max-writes-per-second`): 1,500 a
/// minute, safely under GHCR's 2,000 a minute per token.
pub const DEFAULT_WRITES_PER_SECOND: u32 = 25;

/// How long one request (with its retries) may take by default: `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

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

/// A manifest as the registry has it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Its digest (from `Docker-Content-Digest`, else computed).
    pub digest: Digest,
    /// Its media type (`Content-Type`, else the document's `mediaType`).
    pub media_type: String,
    /// The bytes, exactly as stored.
    pub bytes: Bytes,
}

/// One platform's image manifest, parsed, with its media type.
#[derive(Debug, Clone)]
pub struct PlatformManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// Its media type (tells the family: OCI or Docker).
    pub media_type: String,
}

/// What a HEAD of a manifest says.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    /// The digest.
    pub digest: Option<Digest>,
    /// The media type.
    pub media_type: String,
}

/// Which permissions a request needs on which repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// The repository path.
    pub repository: String,
    /// `pull` or `pull,push` (or `*` for delete on some registries).
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

#[derive(Debug, Clone)]
enum HostAuth {
    /// No challenge seen yet.
    Unknown,
    /// The registry asked for Basic.
    Basic,
    /// The registry asked for a Bearer token from this realm.
    Bearer { realm: String, service: Option<String> },
}

/// How the client retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Most attempts per request.
    pub attempts: u32,
    /// First backoff; doubled per attempt, with jitter.
    pub base_delay: Duration,
    /// Longest single wait (also caps `Retry-After`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 6, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(30) }
    }
}

/// The registry client. Cheap to clone; clones share tokens and the concurrency bound.
#[derive(Clone)]
pub struct Registry {
    http: reqwest::Client,
    credentials: Arc<Credentials>,
    insecure: Arc<BTreeSet<String>>,
    hosts: Arc<Mutex<HashMap<String, HostAuth>>>,
    tokens: Arc<Mutex<HashMap<(String, String), String>>>,
    permits: Arc<Semaphore>,
    retry: RetryPolicy,
    /// How long one request, with its retries, may take.
    timeout: Duration,
    /// Every secret this client holds or was given (credential forms, tokens): cut out of
    /// any text a registry sends back before it reaches an error message.
    secrets: Arc<std::sync::Mutex<Vec<String>>>,
    /// Paces writes per host, across every task of the process.
    pacer: Arc<Pacer>,
    /// Hosts that answered a monolithic upload `POST` by opening a session (202).
    two_step: Arc<std::sync::Mutex<BTreeSet<String>>>,
    /// Every request of this client and its clones.
    totals: Arc<Stats>,
}

/// Paces writes per registry host: a token bucket of `rate` writes a second holding at most
/// one second's worth, shared by every task of the process (registries rate-limit writes per
/// token: GHCR about 2,000 a minute). Rate 0: no pacing.
#[derive(Debug, Default)]
struct Pacer {
    rate: f64,
    hosts: std::sync::Mutex<HashMap<String, (f64, tokio::time::Instant)>>,
}

impl Pacer {
    /// Takes a write's token for `host` at `now`: how long the write must wait for it.
    fn reserve(&self, host: &str, now: tokio::time::Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let burst = self.rate.max(1.0);
        let Ok(mut hosts) = self.hosts.lock() else { return Duration::ZERO };
        let (tokens, last) = hosts.entry(host.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.rate).min(burst);
        *last = now;
        *tokens -= 1.0;
        if *tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-*tokens / self.rate) }
    }
}

fn is_write(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// A request body that can be sent again on a retry.
#[derive(Clone)]
struct Body {
    bytes: Bytes,
    content_type: &'static str,
}

impl Registry {
    /// A client with these credentials, plain-HTTP hosts and at most `concurrency`
    /// requests in flight.
    pub fn new(credentials: Credentials, insecure: &[String], concurrency: usize) -> anyhow::Result<Registry> {
        crate::adapters::tls::init();
        // Redirects are followed by `send`, which decides per hop whether credentials go.
        let http = reqwest::Client::builder()
            .user_agent(concat!("split-build/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(IDLE_READ)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        let secrets = Arc::new(std::sync::Mutex::new(credentials.secrets()));
        Ok(Registry {
            http,
            credentials: Arc::new(credentials),
            timeout: DEFAULT_TIMEOUT,
            secrets,
            pacer: Arc::new(Pacer { rate: f64::from(DEFAULT_WRITES_PER_SECOND), ..Pacer::default() }),
            totals: Arc::default(),
            two_step: Arc::default(),
            insecure: Arc::new(insecure.iter().cloned().collect()),
            hosts: Arc::default(),
            tokens: Arc::default(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            retry: RetryPolicy::default(),
        })
    }

    /// The credentials this client sends.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The same client with another bound on how long one request (with its retries) may
    /// take.
    pub fn with_timeout(mut self, timeout: Duration) -> Registry {
        self.timeout = timeout;
        self
    }

    /// The same client with another pace for writes per host (0: none).
    pub fn with_write_rate(mut self, writes_per_second: u32) -> Registry {
        self.pacer = Arc::new(Pacer { rate: f64::from(writes_per_second), ..Pacer::default() });
        self
    }

    /// Every request of this client and its clones so far.
    pub fn totals(&self) -> Counters {
        self.totals.counters()
    }

    /// The same client with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Registry {
        self.retry = retry;
        self
    }

    /// Whether `host` is spoken to over plain HTTP (loopback, or `--insecure-registry`).
    fn plain(&self, host: &str) -> bool {
        self.insecure.contains(host) || is_loopback_host(host)
    }

    fn base_url(&self, host: &str) -> String {
        let plain = self.plain(host);
        let api_host = if host == "docker.io" { "registry-1.docker.io" } else { host };
        format!("{}://{api_host}", if plain { "http" } else { "https" })
    }

    /// HEAD of a manifest by tag or digest; `None` when it does not exist. Falls back to
    /// GET when the registry refuses HEAD.
    pub async fn head_manifest(&self, image: &ImageRef, stats: &Stats) -> anyhow::Result<Option<ManifestHead>> {
        let resp = self.read_manifest(image, Method::HEAD, stats).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(ManifestHead {
                digest: header(resp.headers(), "docker-content-digest").and_then(|d| d.parse().ok()),
                media_type: header(resp.headers(), "content-type").unwrap_or_default(),
            })),
            StatusCode::METHOD_NOT_ALLOWED => {
                Ok(self.get_manifest(image, stats).await?.map(|m| ManifestHead { digest: Some(m.digest), media_type: m.media_type }))
            }
            s => Err(self.status_error(s, &format!("checking `{image}`"), resp).await),
        }
    }

    /// GET of a manifest; `None` when it does not exist.
    pub async fn get_manifest(&self, image: &ImageRef, stats: &Stats) -> anyhow::Result<Option<FetchedManifest>> {
        let resp = self.read_manifest(image, Method::GET, stats).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let digest_header = header(resp.headers(), "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
                let content_type = header(resp.headers(), "content-type");
                let bytes = read_capped(resp, MANIFEST_LIMIT, &format!("reading the manifest of `{image}`")).await?;
                let digest = verified_manifest_digest(image, &bytes, digest_header.as_ref())?;
                let media_type = content_type
                    .filter(|t| MANIFEST_TYPES.contains(&t.as_str()))
                    .or_else(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("mediaType")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| MANIFEST_TYPES[1].to_owned());
                Ok(Some(FetchedManifest { digest, media_type, bytes }))
            }
            s => Err(self.status_error(s, &format!("reading the manifest of `{image}`"), resp).await),
        }
    }

    /// The single-platform manifest behind `top` (the manifest of `image` as fetched):
    /// `top` itself when it is one; else the child of its index for `platform`, or the first
    /// child when `platform` is `None`. `None` when the index has no such child or the child
    /// is gone.
    pub async fn platform_manifest(
        &self,
        image: &ImageRef,
        top: &FetchedManifest,
        platform: Option<&Platform>,
        stats: &Stats,
    ) -> anyhow::Result<Option<PlatformManifest>> {
        if !is_index(&top.media_type) {
            let manifest = serde_json::from_slice(&top.bytes).with_context(|| format!("reading the manifest of `{image}`"))?;
            return Ok(Some(PlatformManifest { manifest, media_type: top.media_type.clone() }));
        }
        let index: Index = serde_json::from_slice(&top.bytes).with_context(|| format!("reading the index of `{image}`"))?;
        let child = match platform {
            Some(p) => index.child(p),
            None => index.manifests.first(),
        };
        let Some(child) = child else { return Ok(None) };
        let Some(m) = self.get_manifest(&image.with_digest(child.digest.clone()), stats).await? else { return Ok(None) };
        let manifest = serde_json::from_slice(&m.bytes).with_context(|| format!("reading the manifest {} of `{image}`", child.digest))?;
        Ok(Some(PlatformManifest { manifest, media_type: m.media_type }))
    }

    /// A HEAD or GET of a manifest, accepting every manifest type.
    async fn read_manifest(&self, image: &ImageRef, method: Method, stats: &Stats) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}/v2/{}/manifests/{}", self.base_url(&image.registry), image.repository, reference(image));
        self.send(&image.registry, method, &url, accept_manifests(), None, &[Scope::pull(&image.repository)], stats).await
    }

    /// GET of a config-sized blob (at most [`CONFIG_LIMIT`] bytes), following redirects to
    /// blob storage, checked against its digest.
    pub async fn get_blob(&self, registry: &str, repository: &str, digest: &Digest, stats: &Stats) -> anyhow::Result<Bytes> {
        self.read_blob(registry, repository, digest, CONFIG_LIMIT, stats).await
    }

    async fn read_blob(&self, registry: &str, repository: &str, digest: &Digest, limit: usize, stats: &Stats) -> anyhow::Result<Bytes> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base_url(registry));
        let resp = self.send(registry, Method::GET, &url, HeaderMap::new(), None, &[Scope::pull(repository)], stats).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp.status(), &format!("reading blob {digest} of `{repository}`"), resp).await);
        }
        let bytes = read_capped(resp, limit, &format!("reading blob {digest} of `{repository}`")).await?;
        if Digest::sha256_of(&bytes) != *digest {
            bail!("blob {digest} of `{repository}` arrived with other content (digest mismatch)");
        }
        Ok(bytes)
    }

    /// Whether `repository` has the blob.
    pub async fn blob_exists(&self, registry: &str, repository: &str, digest: &Digest, stats: &Stats) -> anyhow::Result<bool> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base_url(registry));
        let resp = self.send(registry, Method::HEAD, &url, HeaderMap::new(), None, &[Scope::pull(repository)], stats).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.status_error(s, &format!("checking blob {digest} in `{repository}`"), resp).await),
        }
    }

    /// Makes `digest` present in `to` by mounting it from `from` (same registry); when the
    /// registry opens an upload instead (202), copies the bytes. Returns the bytes uploaded.
    pub async fn mount_blob(&self, registry: &str, from: &str, to: &str, digest: &Digest, stats: &Stats) -> anyhow::Result<u64> {
        let url = format!("{}/v2/{to}/blobs/uploads/?mount={digest}&from={from}", self.base_url(registry));
        let scopes = [Scope::push(to), Scope::pull(from)];
        let resp = self.send(registry, Method::POST, &url, HeaderMap::new(), Some(empty_body()), &scopes, stats).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(0),
            StatusCode::ACCEPTED => {
                tracing::debug!("registry refused to mount {digest} from `{from}` into `{to}`: uploading it");
                let location = upload_location(registry, &self.base_url(registry), resp.headers())?;
                let bytes = self.read_blob(registry, from, digest, COPY_LIMIT, stats).await?;
                let n = bytes.len() as u64;
                if self.finish_upload(registry, to, &location, digest, bytes.clone(), stats).await.is_err() {
                    self.upload_blob(registry, to, bytes, stats).await?;
                }
                Ok(n)
            }
            s => Err(self.status_error(s, &format!("mounting blob {digest} from `{from}` into `{to}`"), resp).await),
        }
    }

    /// Uploads `bytes` as a blob of `repository` (monolithic: POST, then PUT with the
    /// digest). An upload session can be lost with its answer (the registry took the PUT but
    /// the connection dropped): then the blob is either there, or a new session starts.
    pub async fn upload_blob(&self, registry: &str, repository: &str, bytes: Bytes, stats: &Stats) -> anyhow::Result<Digest> {
        let digest = Digest::sha256_of(&bytes);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.upload_once(registry, repository, &digest, bytes.clone(), stats).await {
                Ok(()) => return Ok(digest),
                Err(e) => {
                    if self.blob_exists(registry, repository, &digest, stats).await.unwrap_or(false) {
                        return Ok(digest);
                    }
                    if tries >= 3 {
                        return Err(e);
                    }
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("upload of {digest} to `{repository}` failed ({e:#}): starting a new upload");
                }
            }
        }
    }

    /// One upload: a single monolithic `POST ...?digest=` with the bytes where the registry
    /// takes it (201), else `POST` then `PUT` (a registry that answers the POST with 202 is
    /// remembered, and later uploads to it start without the bytes).
    async fn upload_once(&self, registry: &str, repository: &str, digest: &Digest, bytes: Bytes, stats: &Stats) -> anyhow::Result<()> {
        let monolithic = !self.two_step.lock().is_ok_and(|hosts| hosts.contains(registry));
        let (url, body) = if monolithic {
            let url = format!("{}/v2/{repository}/blobs/uploads/?digest={digest}", self.base_url(registry));
            (url, Body { bytes: bytes.clone(), content_type: "application/octet-stream" })
        } else {
            (format!("{}/v2/{repository}/blobs/uploads/", self.base_url(registry)), empty_body())
        };
        let resp = self.send(registry, Method::POST, &url, HeaderMap::new(), Some(body), &[Scope::push(repository)], stats).await?;
        if monolithic && resp.status() == StatusCode::CREATED {
            return Ok(());
        }
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(resp.status(), &format!("starting an upload to `{repository}`"), resp).await);
        }
        if monolithic && let Ok(mut hosts) = self.two_step.lock() {
            tracing::debug!("{registry} opened an upload session for a monolithic POST: uploads to it take POST + PUT");
            hosts.insert(registry.to_owned());
        }
        let location = upload_location(registry, &self.base_url(registry), resp.headers())?;
        self.finish_upload(registry, repository, &location, digest, bytes, stats).await
    }

    async fn finish_upload(
        &self,
        registry: &str,
        repository: &str,
        location: &str,
        digest: &Digest,
        bytes: Bytes,
        stats: &Stats,
    ) -> anyhow::Result<()> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let body = Body { bytes, content_type: "application/octet-stream" };
        let resp = self.send(registry, Method::PUT, &url, HeaderMap::new(), Some(body), &[Scope::push(repository)], stats).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(resp.status(), &format!("uploading blob {digest} to `{repository}`"), resp).await);
        }
        Ok(())
    }

    /// PUTs a manifest under `reference` (a tag or its digest). Returns its digest.
    pub async fn put_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        media_type: &'static str,
        bytes: Bytes,
        stats: &Stats,
    ) -> anyhow::Result<Digest> {
        let digest = Digest::sha256_of(&bytes);
        let url = format!("{}/v2/{}/manifests/{reference}", self.base_url(&image.registry), image.repository);
        let body = Body { bytes, content_type: media_type };
        let resp =
            self.send(&image.registry, Method::PUT, &url, HeaderMap::new(), Some(body), &[Scope::push(&image.repository)], stats).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(resp.status(), &format!("writing the manifest of `{image}`"), resp).await);
        }
        Ok(digest)
    }

    /// Every tag of `repository`, following `Link` pagination (`n` per page).
    pub async fn list_tags(&self, registry: &str, repository: &str, page: usize, stats: &Stats) -> anyhow::Result<Vec<String>> {
        let base = self.base_url(registry);
        let mut url = format!("{base}/v2/{repository}/tags/list?n={page}");
        let mut tags = Vec::new();
        loop {
            let resp = self.send(registry, Method::GET, &url, HeaderMap::new(), None, &[Scope::pull(repository)], stats).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            if !resp.status().is_success() {
                return Err(self.status_error(resp.status(), &format!("listing the tags of `{repository}`"), resp).await);
            }
            let next = header(resp.headers(), "link").and_then(|l| next_link(&l));
            let what = format!("reading the tags of `{repository}`");
            let body: serde_json::Value = serde_json::from_slice(&read_capped(resp, TAGS_LIMIT, &what).await?).context(what)?;
            tags.extend(body["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_owned)));
            match next {
                Some(n) if n.starts_with("http") => url = n,
                Some(n) => url = format!("{base}{n}"),
                None => return Ok(tags),
            }
        }
    }

    /// Deletes a manifest by digest (which removes every tag that points at it).
    pub async fn delete_manifest(&self, registry: &str, repository: &str, digest: &Digest, stats: &Stats) -> anyhow::Result<()> {
        let url = format!("{}/v2/{repository}/manifests/{digest}", self.base_url(registry));
        let resp = self.send(registry, Method::DELETE, &url, HeaderMap::new(), None, &[Scope::delete(repository)], stats).await?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            StatusCode::METHOD_NOT_ALLOWED => {
                bail!("the registry does not allow deletes (`storage.delete.enabled` is off) for `{repository}`")
            }
            s => Err(self.status_error(s, &format!("deleting {digest} from `{repository}`"), resp).await),
        }
    }

    /// Sends one request with auth, retries, redirects and the concurrency bound, within
    /// the client's timeout. Credentials go only to the registry's own scheme, host and
    /// port: a redirect, upload `Location` or `Link` elsewhere is followed without them. A
    /// task waiting out a 429 or a backoff holds no concurrency slot.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        host: &str,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Body>,
        scopes: &[Scope],
        stats: &Stats,
    ) -> anyhow::Result<reqwest::Response> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let home = self.base_url(host);
        let mut url = url.to_owned();
        let mut attempt = 0u32;
        let mut challenged = false;
        let mut redirects = 0usize;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!("{method} {}: no answer within {} (--timeout)", strip_query(&url), humantime::format_duration(self.timeout));
            }
            let ours = same_origin(&url, &home);
            let mut req = self.http.request(method.clone(), &url).headers(headers.clone()).timeout(left);
            if ours && let Some(auth) = self.auth_header(host, scopes).await {
                req = req.header(AUTHORIZATION, auth);
            }
            if let Some(b) = &body {
                req = req.header(CONTENT_TYPE, b.content_type).body(b.bytes.clone());
            }
            if is_write(&method) {
                let wait = self.pacer.reserve(host, tokio::time::Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            for s in [stats, &*self.totals] {
                s.requests.fetch_add(1, Ordering::Relaxed);
                if is_write(&method) {
                    s.writes.fetch_add(1, Ordering::Relaxed);
                }
            }
            let result = {
                let _permit = self.permits.acquire().await.map_err(|_| anyhow!("the request pool is closed"))?;
                req.send().await
            };
            let wait = match result {
                Ok(resp) if resp.status().is_redirection() && resp.headers().contains_key(LOCATION) => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS || !(method == Method::GET || method == Method::HEAD) {
                        bail!(
                            "{method} {}: the registry redirected {redirects} times (at most {MAX_REDIRECTS}, GET and HEAD only)",
                            strip_query(&url)
                        );
                    }
                    let location = header(resp.headers(), LOCATION.as_str()).unwrap_or_default();
                    url = reqwest::Url::parse(&url)
                        .and_then(|u| u.join(&location))
                        .map(String::from)
                        .with_context(|| format!("{host} redirected to `{}`, which is not a URL", strip_query(&location)))?;
                    // A hop is not a retry.
                    attempt -= 1;
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !challenged && ours => {
                    challenged = true;
                    let challenge = header(resp.headers(), WWW_AUTHENTICATE.as_str()).unwrap_or_default();
                    self.answer_challenge(host, &challenge, scopes).await?;
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !ours => {
                    bail!(
                        "{host} sent {method} to {} , which refused it without credentials (401): split-build sends {host}'s credentials to {host} only",
                        strip_query(&url)
                    );
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    bail!("{host} refused {} {} (401 Unauthorized); {}", method, strip_query(&url), self.credentials.login_hint(host));
                }
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS || resp.status().is_server_error() => {
                    let retry_after = retry_after_of(resp.headers());
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if let Some(d) = retry_after.filter(|d| *d > left) {
                        let doing = format!(
                            "{method} {}: the registry asks to wait {} (Retry-After), longer than the {} this request may take (--timeout)",
                            strip_query(&url),
                            humantime::format_duration(d),
                            humantime::format_duration(self.timeout)
                        );
                        return Err(self.status_error(resp.status(), &doing, resp).await);
                    }
                    if attempt >= self.retry.attempts {
                        return Ok(resp);
                    }
                    tracing::debug!("{} {} answered {}: retrying", method, strip_query(&url), resp.status());
                    retry_after
                }
                Ok(resp) => {
                    if let Some(b) = &body {
                        for s in [stats, &*self.totals] {
                            s.bytes_pushed.fetch_add(b.bytes.len() as u64, Ordering::Relaxed);
                        }
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    if e.is_timeout() && tokio::time::Instant::now() >= deadline {
                        bail!("{method} {}: no answer within {} (--timeout)", strip_query(&url), humantime::format_duration(self.timeout));
                    }
                    if attempt >= self.retry.attempts || e.is_builder() {
                        return Err(anyhow!("{} {}: {}", method, strip_query(&url), error_chain(&e)));
                    }
                    tracing::debug!("{} {}: {}: retrying", method, strip_query(&url), error_chain(&e));
                    None
                }
            };
            for s in [stats, &*self.totals] {
                s.retries.fetch_add(1, Ordering::Relaxed);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(backoff(self.retry, attempt, wait).min(left)).await;
        }
    }

    /// An error for an answer that is not what was asked: the status and the registry's own
    /// words (its `errors` list, else the start of its body), with every secret cut out.
    async fn status_error(&self, status: StatusCode, doing: &str, resp: reqwest::Response) -> anyhow::Error {
        let body = read_capped(resp, ERROR_LIMIT, doing).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let detail = self.redact(&error_detail(&body));
        anyhow!("{doing}: {status}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })
    }

    /// `text` with every secret this client knows replaced by `***`.
    fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.lock().map(|s| s.clone()).unwrap_or_default();
        secrets.iter().filter(|s| s.len() >= 4).fold(text.to_owned(), |t, s| t.replace(s.as_str(), "***"))
    }

    async fn auth_header(&self, host: &str, scopes: &[Scope]) -> Option<String> {
        let mode = self.hosts.lock().await.get(host).cloned().unwrap_or(HostAuth::Unknown);
        match mode {
            HostAuth::Unknown => None,
            HostAuth::Basic => self.credentials.for_host(host).map(|c| basic(&c.username, c.password.expose())),
            HostAuth::Bearer { realm, service } => {
                let key = (host.to_owned(), scope_key(scopes));
                if let Some(t) = self.tokens.lock().await.get(&key) {
                    return Some(format!("Bearer {t}"));
                }
                // A new set of scopes on a known Bearer host: ask for its token now rather
                // than after a 401. A failure here resurfaces as that 401's error.
                let token = self.fetch_token(host, &realm, service.as_deref(), scopes).await.ok()?;
                self.tokens.lock().await.insert(key, token.clone());
                Some(format!("Bearer {token}"))
            }
        }
    }

    async fn answer_challenge(&self, host: &str, challenge: &str, scopes: &[Scope]) -> anyhow::Result<()> {
        match parse_challenge(challenge) {
            Some(Challenge::Basic) => {
                if self.credentials.for_host(host).is_none() {
                    bail!("{host} wants a user name and password; {}", self.credentials.login_hint(host));
                }
                self.hosts.lock().await.insert(host.to_owned(), HostAuth::Basic);
            }
            Some(Challenge::Bearer { realm, service }) => {
                self.hosts.lock().await.insert(host.to_owned(), HostAuth::Bearer { realm: realm.clone(), service: service.clone() });
                let token = self.fetch_token(host, &realm, service.as_deref(), scopes).await?;
                self.tokens.lock().await.insert((host.to_owned(), scope_key(scopes)), token);
            }
            None => bail!("{host} answered 401 without a usable WWW-Authenticate challenge (`{challenge}`)"),
        }
        Ok(())
    }

    /// Asks the token realm for one token covering every scope.
    async fn fetch_token(&self, host: &str, realm: &str, service: Option<&str>, scopes: &[Scope]) -> anyhow::Result<String> {
        let mut url = reqwest::Url::parse(realm).with_context(|| format!("{host}'s token realm `{realm}` is not a URL"))?;
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
        if let Some(c) = self.credentials.for_host(host) {
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
        let resp = req.send().await.map_err(|e| anyhow!("asking {host}'s token service: {}", error_chain(&e)))?;
        if !resp.status().is_success() {
            bail!(
                "{host}'s token service refused ({}): check that the credentials may read/write these repositories; {}",
                resp.status(),
                self.credentials.login_hint(host)
            );
        }
        let answer = read_capped(resp, TOKEN_LIMIT, &format!("reading {host}'s token")).await?;
        let body: serde_json::Value = serde_json::from_slice(&answer).context("reading the token")?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{host}'s token service answered without a token"))?;
        if let Ok(mut secrets) = self.secrets.lock() {
            secrets.push(token.clone());
        }
        Ok(token)
    }
}

fn empty_body() -> Body {
    Body { bytes: Bytes::new(), content_type: "application/octet-stream" }
}

fn accept_manifests() -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = MANIFEST_TYPES.join(", ").parse() {
        h.insert(ACCEPT, v);
    }
    h
}

fn reference(image: &ImageRef) -> String {
    match (&image.digest, &image.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_owned(),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn scope_key(scopes: &[Scope]) -> String {
    let mut s: Vec<String> = scopes.iter().map(Scope::as_param).collect();
    s.sort();
    s.join(" ")
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

fn upload_location(host: &str, base: &str, headers: &HeaderMap) -> anyhow::Result<String> {
    let loc = header(headers, LOCATION.as_str()).ok_or_else(|| anyhow!("{host} opened an upload without a Location"))?;
    Ok(if loc.starts_with("http://") || loc.starts_with("https://") { loc } else { format!("{base}{loc}") })
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// The registry's own words in an error body: its `errors` list (`CODE message; ...`), else
/// the first 200 characters.
fn error_detail(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let errors = v.get("errors")?.as_array()?;
            Some(
                errors
                    .iter()
                    .filter_map(|e| Some(format!("{} {}", e.get("code")?.as_str()?, e.get("message")?.as_str()?)))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// Reads a body as it streams, refusing one over `limit` bytes before it is all in memory.
async fn read_capped(mut resp: reqwest::Response, limit: usize, doing: &str) -> anyhow::Result<Bytes> {
    let too_big = |n: u64| anyhow!("{doing}: the registry sent {n} bytes or more, over the {} limit", human_bytes(limit));
    if let Some(n) = resp.content_length().filter(|n| *n > limit as u64) {
        return Err(too_big(n));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| anyhow!("{doing}: {}", error_chain(&e)))? {
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

/// The digest of a manifest's bytes, which must match the digest it was asked for and the
/// one the registry names (`Docker-Content-Digest` is never trusted alone).
fn verified_manifest_digest(image: &ImageRef, bytes: &[u8], header: Option<&Digest>) -> anyhow::Result<Digest> {
    let computed = Digest::sha256_of(bytes);
    if let Some(want) = image.digest.as_ref().filter(|d| **d != computed) {
        bail!("the manifest {want} of `{}` arrived with other content (its bytes hash to {computed}): refusing it", image.repository);
    }
    if let Some(said) = header.filter(|d| **d != computed) {
        bail!("`{image}`: the registry names its manifest {said}, but the bytes hash to {computed}: refusing it");
    }
    Ok(computed)
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

/// Whether Basic credentials may go to a token realm: over HTTPS, or over plain HTTP when
/// the registry itself is spoken to over plain HTTP (loopback or `--insecure-registry`).
fn basic_may_go_to(realm: &reqwest::Url, registry_plain: bool) -> bool {
    realm.scheme() == "https" || (realm.scheme() == "http" && registry_plain)
}

fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    let v = header(headers, RETRY_AFTER.as_str())?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Exponential backoff with full jitter, or the registry's `Retry-After` as asked (the
/// request's deadline bounds it: a longer one fails the request with the registry's words).
fn backoff(policy: RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d;
    }
    let exp = policy.base_delay.saturating_mul(1u32 << attempt.min(10).saturating_sub(1)).min(policy.max_delay);
    let jitter = rand::random::<f64>();
    exp.mul_f64(0.5 + jitter / 2.0)
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

/// The `rel="next"` target of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"") || part.contains("rel=next")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_owned())
    })
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
    fn link_pagination() {
        assert_eq!(next_link(r#"</v2/a/tags/list?last=x&n=2>; rel="next""#), Some("/v2/a/tags/list?last=x&n=2".into()));
        assert_eq!(
            next_link(r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=9>; rel="last""#),
            Some("https://api.github.com/x?page=2".into())
        );
        assert_eq!(next_link(r#"<https://x?page=1>; rel="prev""#), None);
    }

    #[test]
    fn writes_are_paced_per_host_with_a_second_of_burst() {
        let pacer = Pacer { rate: 10.0, ..Pacer::default() };
        let t0 = tokio::time::Instant::now();
        let waits: Vec<Duration> = (0..12).map(|_| pacer.reserve("ghcr.io", t0)).collect();
        assert!(waits[..10].iter().all(Duration::is_zero), "a second's worth goes at once: {waits:?}");
        assert_eq!(waits[10], Duration::from_millis(100));
        assert_eq!(waits[11], Duration::from_millis(200));
        assert_eq!(pacer.reserve("quay.io", t0), Duration::ZERO, "each host has its own bucket");
        // A second later ten tokens came back, two of them already promised.
        let later = pacer.reserve("ghcr.io", t0 + Duration::from_secs(1));
        assert_eq!(later, Duration::ZERO);
        assert_eq!(Pacer::default().reserve("x", t0), Duration::ZERO, "rate 0: no pacing");
    }

    #[test]
    fn credentials_follow_only_their_own_origin() {
        assert!(same_origin("https://ghcr.io/v2/a/blobs/uploads/x?y", "https://ghcr.io"));
        assert!(same_origin("https://ghcr.io:443/v2/", "https://ghcr.io"));
        assert!(!same_origin("https://pkg-containers.githubusercontent.com/x", "https://ghcr.io"), "another host");
        assert!(!same_origin("http://ghcr.io/v2/", "https://ghcr.io"), "another scheme");
        assert!(!same_origin("http://127.0.0.1:5001/v2/", "http://127.0.0.1:5000"), "another port");
        assert!(!same_origin("not a url", "https://ghcr.io"));
        let realm = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(basic_may_go_to(&realm("https://auth.example/token"), false));
        assert!(!basic_may_go_to(&realm("http://auth.example/token"), false), "plain HTTP to a TLS registry's realm");
        assert!(basic_may_go_to(&realm("http://127.0.0.1:9/token"), true), "a loopback or insecure registry's realm");
    }

    #[test]
    fn manifests_are_their_digest() {
        let image: ImageRef = "127.0.0.1:5000/a/b:1".parse().unwrap();
        let bytes = br#"{"schemaVersion":2}"#;
        let right = Digest::sha256_of(bytes);
        assert_eq!(verified_manifest_digest(&image, bytes, None).unwrap(), right);
        assert_eq!(verified_manifest_digest(&image, bytes, Some(&right)).unwrap(), right);
        let other = Digest::sha256_of(b"other");
        assert!(verified_manifest_digest(&image, bytes, Some(&other)).unwrap_err().to_string().contains("hash to"));
        let by_digest = image.with_digest(other);
        assert!(verified_manifest_digest(&by_digest, bytes, None).unwrap_err().to_string().contains("arrived with other content"));
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
    fn backoff_grows_and_honours_retry_after() {
        let p = RetryPolicy { attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(2) };
        assert!(backoff(p, 1, None) <= Duration::from_millis(100));
        assert!(backoff(p, 4, None) >= Duration::from_millis(400));
        assert!(backoff(p, 10, None) <= Duration::from_secs(2));
        assert_eq!(backoff(p, 1, Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(backoff(p, 1, Some(Duration::from_secs(100))), Duration::from_secs(100), "the deadline, not the backoff, bounds it");
    }
}
