//! A thin OCI distribution client over reqwest: manifests, blobs, cross-repository mounts,
//! uploads, tag lists and deletes, with Bearer/Basic auth, retries and bounded concurrency.
//! One concept per file, as go-containerregistry keeps `remote/transport`:
//!
//! | file | holds |
//! |---|---|
//! | `transport.rs` | one request: origin guard, redirects, deadline, body caps, counting |
//! | `auth.rs` | challenges, Basic, Bearer tokens and their scopes |
//! | `error.rs` | the typed [`RegistryError`] and the one classification retries use |
//! | `retry.rs` | the retry policy and its bounds |
//! | `pacing.rs` | adaptive write pacing per host |
//! | `manifests.rs`, `blobs.rs`, `mounts.rs`, `uploads.rs`, `tag_list.rs` | the operations |
//!
//! Why not `oci-client`: it scopes its token to the target repository only (a cross-repo
//! mount then answers 202), treats a 202 mount as an error and swallows token errors; here
//! one token covers every repository an operation touches.

mod auth;
mod blobs;
mod error;
mod manifests;
mod mounts;
mod pacing;
mod retry;
mod secrets;
mod stats;
mod tag_list;
mod transport;
mod uploads;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Semaphore;

pub use auth::{Challenge, Scope, parse_challenge};
pub use error::{Class, ErrorCode, ErrorKind, RegistryError, classify, registry_error};
pub use manifests::{FetchedManifest, MANIFEST_TYPES, ManifestHead, PlatformManifest};
use retry::RetryPolicy;
pub use stats::Stats;
pub use tag_list::next_link;
pub use transport::is_loopback_host;

use crate::adapters::credentials::{Credential, Credentials};
use crate::core::report::Counters;

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

/// The registry client. Cheap to clone; clones share tokens, pacing and the concurrency
/// bound.
#[derive(Clone)]
pub struct Registry {
    http: reqwest::Client,
    credentials: Arc<Credentials>,
    insecure: Arc<BTreeSet<String>>,
    auth: Arc<auth::AuthState>,
    permits: Arc<Semaphore>,
    retry: RetryPolicy,
    /// How long one request, with its retries, may take.
    timeout: Duration,
    /// Every secret this client holds or was given: cut out of registry answers.
    secrets: Arc<secrets::Secrets>,
    /// Paces writes per host, across every task of the process.
    pacer: Arc<pacing::Pacer>,
    /// Hosts that do not take the single-request upload.
    two_step: Arc<std::sync::Mutex<BTreeSet<String>>>,
    /// Every request of this client and its clones.
    totals: Arc<Stats>,
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
        let secrets = Arc::new(secrets::Secrets::new(credentials.secrets()));
        Ok(Registry {
            http,
            credentials: Arc::new(credentials),
            timeout: DEFAULT_TIMEOUT,
            secrets,
            pacer: Arc::new(pacing::Pacer::new(f64::from(DEFAULT_WRITES_PER_SECOND))),
            totals: Arc::default(),
            two_step: Arc::default(),
            insecure: Arc::new(insecure.iter().cloned().collect()),
            auth: Arc::default(),
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

    /// The same client with another starting pace for writes per host (0: none).
    pub fn with_write_rate(self, writes_per_second: u32) -> Registry {
        self.with_write_rate_f64(f64::from(writes_per_second))
    }

    /// The same client with another starting pace for writes per host, in writes a second
    /// (fractions allowed: a job's share of a run's budget; 0: none).
    pub fn with_write_rate_f64(mut self, writes_per_second: f64) -> Registry {
        self.pacer = Arc::new(pacing::Pacer::new(writes_per_second));
        self
    }

    /// Every request of this client and its clones so far.
    pub fn totals(&self) -> Counters {
        self.totals.counters()
    }

    /// The credential for `host`, resolved once per process (a credential helper runs off
    /// the async threads).
    async fn credential(&self, host: &str) -> Option<Credential> {
        self.credentials.resolve(host).await
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
}
