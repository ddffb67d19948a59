//! The Docker Engine API through bollard: build from an in-memory tar context, tag, push,
//! pull, inspect. The daemon is whatever `DOCKER_HOST` or `/var/run/docker.sock` names (a
//! GitHub-hosted runner hands container actions the host's socket).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context as _, anyhow, bail};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, CreateImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures::StreamExt as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::credentials::{Credential, Credentials};
use crate::adapters::workspace::{context_entries, read_dockerignore};
use crate::core::image_ref::ImageRef;

/// How often a build that prints nothing says in Actions that it is still going.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the Dockerfile goes inside the context tar (so one outside the context works too).
const DOCKERFILE_IN_TAR: &str = ".split-build.Dockerfile";

/// One build.
#[derive(Debug, Clone, Default)]
pub(crate) struct BuildRequest {
    /// The context directory (files honour its `.dockerignore`).
    pub context: PathBuf,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Where that text was read from, when it is a file: inside the context it is sent as
    /// itself, as `docker build` sends it.
    pub dockerfile_path: Option<PathBuf>,
    /// The target stage, if any.
    pub target: Option<String>,
    /// Build args.
    pub build_args: HashMap<String, String>,
    /// Labels on the image.
    pub labels: HashMap<String, String>,
    /// Images to use as cache (pulled first: the legacy builder caches from local images).
    pub cache_from: Vec<String>,
    /// The tag to give the result.
    pub tag: String,
    /// Export inline cache metadata (BuildKit; `cache.mode` min or max).
    pub inline_cache: bool,
    /// The platform to build for (`os/arch[/variant]`, BuildKit only); `None`: the daemon's own.
    pub platform: Option<String>,
}

const UNKNOWN: u8 = 0;
const HAS_BUILDKIT: u8 = 1;
const NO_BUILDKIT: u8 = 2;

/// A connected daemon.
#[derive(Clone)]
pub(crate) struct DockerEngine {
    docker: Docker,
    credentials: std::sync::Arc<Credentials>,
    /// Whether BuildKit works here: unknown until the first build says.
    buildkit: std::sync::Arc<AtomicU8>,
    /// Held (shared) by every build of this process for its whole duration; a cache prune
    /// needs it alone, so it never removes the uploaded context of a build under way.
    gate: std::sync::Arc<tokio::sync::RwLock<()>>,
    /// The daemon's own `os/architecture`, asked once.
    native: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl DockerEngine {
    /// Connects to the local daemon and agrees on an API version (the daemon may be older
    /// than bollard's default).
    pub(crate) async fn connect(credentials: Credentials) -> anyhow::Result<DockerEngine> {
        let docker = Docker::connect_with_local_defaults().context("connecting to the Docker daemon")?;
        let docker = docker
            .negotiate_version()
            .await
            .context("talking to the Docker daemon (is it running, and is /var/run/docker.sock reachable?)")?;
        Ok(DockerEngine {
            docker,
            credentials: std::sync::Arc::new(credentials),
            buildkit: std::sync::Arc::new(AtomicU8::new(UNKNOWN)),
            gate: std::sync::Arc::default(),
            native: std::sync::Arc::default(),
        })
    }

    async fn auth_for(&self, image: &str) -> Option<DockerCredentials> {
        let host = image.parse::<ImageRef>().ok()?.registry;
        let c = self.credentials.resolve(&host).await?;
        Some(daemon_credentials(&c, host))
    }

    /// Builds an image: with the daemon's BuildKit (a session per build) when it has one,
    /// else with the classic builder, said once in the log. Either way the daemon pulls
    /// `FROM` images itself. A failure carries the failing step's message.
    pub(crate) async fn build(&self, req: &BuildRequest, actions: &ActionsEnv) -> anyhow::Result<()> {
        let _building = self.gate.read().await;
        if self.buildkit.load(Ordering::Relaxed) != NO_BUILDKIT {
            let mut result = self.build_with(req, true, actions).await;
            // The daemon keeps an uploaded context as a build cache record, which a cache prune
            // of another process on the same daemon may take before BuildKit reads it: the
            // context is sent again, once.
            if let Err(e) = &result
                && is_lost_context(&format!("{e:#}"))
            {
                tracing::info!(
                    "{}: the daemon lost the uploaded context (another process pruned its build cache); sending it again",
                    req.tag
                );
                result = self.build_with(req, true, actions).await;
            }
            match result {
                Ok(()) => {
                    self.buildkit.store(HAS_BUILDKIT, Ordering::Relaxed);
                    return Ok(());
                }
                // BuildKit reporting on the build itself is a real failure, not a missing BuildKit.
                Err(e) if self.buildkit.load(Ordering::Relaxed) == HAS_BUILDKIT || is_build_failure(&format!("{e:#}")) => {
                    return Err(e);
                }
                Err(e) => {
                    if self.buildkit.swap(NO_BUILDKIT, Ordering::Relaxed) != NO_BUILDKIT {
                        tracing::info!("BuildKit is not usable on this daemon ({e:#}); building with the classic builder");
                    }
                }
            }
        }
        // The classic builder builds the daemon's own platform only: a foreign one would come
        // out as the daemon's, under the other platform's name.
        if let Some(p) = &req.platform
            && !self.is_native(p).await?
        {
            let native = self.native_platform().await?;
            bail!("building {p} needs BuildKit, which this {native} daemon does not offer: run this platform's job on a {p} runner");
        }
        for c in &req.cache_from {
            // The classic builder caches only from local images. One that cannot be pulled
            // only costs the cache.
            if let Err(e) = self.pull(c).await {
                tracing::info!("cache image `{c}` not pulled ({e:#}): building without it");
            }
        }
        self.build_with(req, false, actions).await
    }

    async fn build_with(&self, req: &BuildRequest, buildkit: bool, actions: &ActionsEnv) -> anyhow::Result<()> {
        let (tar, dockerfile_name) = context_tar(&req.context, &req.dockerfile, req.dockerfile_path.as_deref())
            .with_context(|| format!("packing the context `{}`", req.context.display()))?;
        let mut build_args = req.build_args.clone();
        if buildkit && req.inline_cache {
            // The daemon's /build API exports cache only inline (cache.mode min and max alike).
            build_args.insert("BUILDKIT_INLINE_CACHE".into(), "1".into());
        }
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile(&dockerfile_name)
            .t(&req.tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&build_args)
            .labels(&req.labels);
        let session = format!("splitbuild{:016x}", rand::random::<u64>());
        options = if buildkit {
            options.version(BuilderVersion::BuilderBuildKit).session(&session)
        } else {
            options.version(BuilderVersion::BuilderV1)
        };
        if let Some(t) = &req.target {
            options = options.target(t);
        }
        // The classic builder builds the daemon's own platform only (checked by the caller).
        if buildkit && let Some(p) = &req.platform {
            options = options.platform(p);
        }
        if !req.cache_from.is_empty() {
            options = options.cachefrom(&req.cache_from);
        }
        let mut creds = HashMap::new();
        for image in req.cache_from.iter().chain(std::iter::once(&req.tag)) {
            if let Some(c) = self.auth_for(image).await
                && let Some(host) = c.serveraddress.clone()
            {
                creds.insert(host, c);
            }
        }
        let mut stream = self.docker.build_image(options.build(), Some(creds), Some(bollard::body_full(tar.into())));
        let mut log = BuildLog::default();
        let terminal = actions.redraws_progress();
        let short = short_name(&req.tag);
        let mut failure: Option<String> = None;
        let started = std::time::Instant::now();
        loop {
            let item = match tokio::time::timeout(HEARTBEAT, stream.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => {
                    // The log of a build goes out when it ends; a long quiet step still says it lives.
                    if actions.enabled {
                        let step = log.lines.last().map(String::as_str).unwrap_or("starting");
                        tracing::info!(
                            "{short}: building for {}: {step}",
                            crate::core::summary::human_secs(started.elapsed().as_secs_f64())
                        );
                    }
                    continue;
                }
            };
            let before = log.lines.len();
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(detail.trim().to_owned());
                    }
                    if let Some(line) = info.stream {
                        log.push_text("", &line);
                    }
                    if let Some(bollard::models::BuildInfoAux::BuildKit(status)) = info.aux {
                        log.on_status(&status);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => failure = Some(error.trim().to_owned()),
                Err(e) => failure = Some(e.to_string()),
            }
            for line in &log.lines[before..] {
                tracing::debug!("{short}: {line}");
            }
            if terminal && let Some(last) = log.lines[before..].last() {
                // One redrawn line: the newest step of whichever build spoke last.
                let line: String = format!("{short}: {last}").chars().take(110).collect();
                eprint!("\r\x1b[2K{line}");
            }
            if failure.is_some() {
                break;
            }
        }
        if terminal {
            eprint!("\r\x1b[2K");
        }
        // Builds run in parallel: each one's log goes out whole, folded, when it ends.
        actions.folded(&format!("{} {}", if failure.is_some() { "failed" } else { "built" }, req.tag), &log.lines);
        if let Some(message) = failure {
            bail!("{message}{}", tail(&log.lines));
        }
        if buildkit {
            // A BuildKit build that produced no image did not really happen.
            self.docker.inspect_image(&req.tag).await.with_context(|| format!("BuildKit finished without the image `{}`", req.tag))?;
        }
        Ok(())
    }

    /// Pulls an image.
    pub(crate) async fn pull(&self, image: &str) -> anyhow::Result<()> {
        let options = CreateImageOptionsBuilder::default().from_image(image).build();
        let mut stream = self.docker.create_image(Some(options), None, self.auth_for(image).await);
        while let Some(item) = stream.next().await {
            let info = item.with_context(|| format!("pulling `{image}`"))?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                bail!("pulling `{image}`: {e}");
            }
        }
        Ok(())
    }

    /// Gives `source` the name `target` (a full reference with a tag).
    pub(crate) async fn tag(&self, source: &str, target: &str) -> anyhow::Result<()> {
        let (repo, tag) = split_tag(target)?;
        let options = TagImageOptionsBuilder::default().repo(repo).tag(tag).build();
        self.docker.tag_image(source, Some(options)).await.with_context(|| format!("tagging `{source}` as `{target}`"))
    }

    /// Removes a local image tag (the image goes with its last tag); one that is not there is
    /// fine.
    pub(crate) async fn remove(&self, image: &str) -> anyhow::Result<()> {
        match self.docker.remove_image(image, None::<bollard::query_parameters::RemoveImageOptions>, None).await {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(anyhow::Error::from(e).context(format!("removing the local image `{image}`"))),
        }
    }

    /// Holds off this process's cache prunes for as long as the guard lives: a build made of
    /// several builds (each stage as a cache image, then the target) keeps the records its
    /// later builds reuse.
    pub(crate) async fn hold_cache(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.gate.clone().read_owned().await
    }

    /// Frees the layer cache nothing refers to any more (`docker builder prune --filter
    /// type=regular`): the bytes reclaimed. Only layer records: an uploaded build context
    /// (another build's, not yet solved) is a record of another type and stays.
    /// Returns 0 without pruning while a build of this process is under way.
    pub(crate) async fn prune_build_cache(&self) -> anyhow::Result<u64> {
        let Ok(_alone) = self.gate.try_write() else { return Ok(0) };
        let filters = HashMap::from([("type", vec!["regular"])]);
        let options = bollard::query_parameters::PruneBuildOptionsBuilder::default().filters(&filters).build();
        let r = self.docker.prune_build(Some(options)).await.context("pruning the build cache")?;
        Ok(r.space_reclaimed.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    /// Pushes `image` (a full reference with a tag).
    pub(crate) async fn push(&self, image: &str) -> anyhow::Result<()> {
        let (repo, tag) = split_tag(image)?;
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let mut stream = self.docker.push_image(repo, Some(options), self.auth_for(image).await);
        while let Some(item) = stream.next().await {
            // The daemon reports a refusal either in the stream's items or as a stream error.
            let message = match item {
                Ok(info) => match info.error_detail.and_then(|d| d.message) {
                    Some(m) => m,
                    None => continue,
                },
                Err(e) => e.to_string(),
            };
            let refused = refused_for_credentials(&message);
            let host = image.parse::<ImageRef>().map(|i| i.registry).unwrap_or_default();
            let hint = if refused { format!(" ({})", self.credentials.login_hint(&host)) } else { String::new() };
            bail!("pushing `{image}`: {message}{hint}");
        }
        Ok(())
    }

    /// The daemon's own `os/architecture` (what the legacy builder builds for).
    pub(crate) async fn native_platform(&self) -> anyhow::Result<String> {
        let native = self
            .native
            .get_or_try_init(|| async {
                let v = self.docker.version().await.context("asking the daemon its version")?;
                anyhow::Ok(format!("{}/{}", v.os.unwrap_or_default(), v.arch.unwrap_or_default()))
            })
            .await?;
        Ok(native.clone())
    }

    /// Whether `platform` (`os/arch[/variant]`) is the daemon's own (any variant of it).
    pub(crate) async fn is_native(&self, platform: &str) -> anyhow::Result<bool> {
        let native = self.native_platform().await?;
        Ok(platform == native || platform.starts_with(&format!("{native}/")))
    }
}

/// A credential as the daemon takes it: an identity token is a refresh token for the
/// registry's token service and goes as `identitytoken` (as a password it would be refused).
fn daemon_credentials(c: &Credential, host: String) -> DockerCredentials {
    if c.identity_token {
        return DockerCredentials { identitytoken: Some(c.password.expose().to_owned()), serveraddress: Some(host), ..Default::default() };
    }
    DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.expose().to_owned()),
        serveraddress: Some(host),
        ..Default::default()
    }
}

// The daemon reports build and push failures as text only (bollard hands on its JSON
// stream's `error` strings; there is no code to read), so these three functions are the only
// places its words decide anything.

/// Whether a BuildKit error is about the build (a step, a missing image) rather than
/// BuildKit itself being unavailable.
fn is_build_failure(message: &str) -> bool {
    ["failed to solve", "executor failed", "did not complete successfully", "not found", "failed to compute cache key"]
        .iter()
        .any(|m| message.contains(m))
}

/// Whether a push failed because the registry refused the daemon's credentials.
fn refused_for_credentials(message: &str) -> bool {
    ["unauthorized", "denied", "authentication required", "401", "403"].iter().any(|w| message.to_lowercase().contains(w))
}

/// Whether a BuildKit error says the uploaded context was gone before it was read.
fn is_lost_context(message: &str) -> bool {
    message.contains("failed to read downloaded context") && message.contains("context not found")
}

/// The repository's last path segment and the tag: enough to tell parallel builds apart.
fn short_name(image: &str) -> &str {
    image.rsplit('/').next().unwrap_or(image)
}

/// A build's log as readable lines, from the classic builder's `stream` text and from
/// BuildKit's status messages alike (numbered steps as `docker buildx` prints them: `#3 RUN
/// ...`, `#3 CACHED`, `#3 <output>`, `#3 ERROR: ...`).
#[derive(Debug, Default)]
pub(crate) struct BuildLog {
    /// Every line so far.
    pub lines: Vec<String>,
    steps: HashMap<String, usize>,
    announced: std::collections::HashSet<(usize, u8)>,
}

impl BuildLog {
    fn step(&mut self, digest: &str) -> usize {
        let next = self.steps.len() + 1;
        *self.steps.entry(digest.to_owned()).or_insert(next)
    }

    /// Adds text (possibly several lines) under the step's prefix.
    pub(crate) fn push_text(&mut self, prefix: &str, text: &str) {
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            self.lines.push(format!("{prefix}{line}"));
        }
    }

    /// Takes in one BuildKit status message.
    pub(crate) fn on_status(&mut self, status: &bollard::moby::buildkit::v1::StatusResponse) {
        for v in &status.vertexes {
            let n = self.step(&v.digest);
            if v.started.is_some() && self.announced.insert((n, 0)) {
                self.lines.push(format!("#{n} {}", v.name));
            }
            if v.cached && self.announced.insert((n, 1)) {
                self.lines.push(format!("#{n} CACHED"));
            }
            if !v.error.is_empty() && self.announced.insert((n, 2)) {
                self.lines.push(format!("#{n} ERROR: {}", v.error));
            }
        }
        for l in &status.logs {
            let n = self.step(&l.vertex);
            self.push_text(&format!("#{n} "), &String::from_utf8_lossy(&l.msg));
        }
    }
}

fn split_tag(image: &str) -> anyhow::Result<(&str, &str)> {
    let slash = image.rfind('/').unwrap_or(0);
    match image[slash..].rfind(':') {
        Some(i) => Ok((&image[..slash + i], &image[slash + i + 1..])),
        None => Err(anyhow!("`{image}` has no tag")),
    }
}

/// The last output lines before a failure (BuildKit's own `ERROR:` lines repeat the message).
fn tail(log: &[String]) -> String {
    // Lines are cut short so that a reason stays one readable row of a summary table.
    let lines: Vec<String> = log
        .iter()
        .filter(|l| !l.contains(" ERROR: "))
        .map(|l| if l.chars().count() > 200 { format!("{}…", l.chars().take(200).collect::<String>()) } else { l.clone() })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(5);
    format!(" (last build output: {})", lines[start..].join(" | "))
}

/// The context as `docker build` sends it, as a tar: regular files, directories and
/// symlinks in path order, mtime 0, owner root, what `.dockerignore` leaves out left out. A
/// Dockerfile inside the context goes as itself (it and `.dockerignore` always go; the daemon
/// leaves them out of `COPY` when they match an exclude); one from elsewhere, or generated,
/// goes as `.split-build.Dockerfile`, appended to the tar's `.dockerignore` so that `COPY .`
/// never picks it up (the CLI does the same with its random name). Returns the tar and the
/// Dockerfile's name in it.
pub(crate) fn context_tar(context: &Path, dockerfile: &str, dockerfile_path: Option<&Path>) -> anyhow::Result<(Vec<u8>, String)> {
    let root = if context.as_os_str().is_empty() { Path::new(".") } else { context };
    let ignore = read_dockerignore(root)?;
    let inside = dockerfile_path.and_then(|p| inside_of(root, p));
    let mut entries = context_entries(root, &ignore, |_| false)?;
    for always in [Some(".dockerignore".to_owned()), inside.clone()].into_iter().flatten() {
        let path = root.join(&always);
        if !entries.iter().any(|(rel, _)| *rel == always)
            && let Ok(meta) = path.symlink_metadata()
        {
            entries.push((always, meta.file_type()));
        }
    }
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut wrote_ignore = false;
    for (rel, ft) in entries {
        let path = root.join(&rel);
        let meta = path.symlink_metadata().with_context(|| format!("reading `{}`", path.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        {
            use std::os::unix::fs::PermissionsExt as _;
            h.set_mode(meta.permissions().mode() & 0o7777);
        }
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, &rel, std::io::empty())?;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, &rel, std::fs::read_link(&path)?)?;
        } else if ft.is_file() {
            let mut data = std::fs::read(&path).with_context(|| format!("reading `{}`", path.display()))?;
            if rel == ".dockerignore" && inside.is_none() {
                data.extend_from_slice(format!("\n{DOCKERFILE_IN_TAR}\n").as_bytes());
                wrote_ignore = true;
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, &rel, data.as_slice())?;
        }
    }
    if let Some(name) = inside {
        return Ok((b.into_inner()?, name));
    }
    let regular = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data)
    };
    if !wrote_ignore {
        regular(&mut b, ".dockerignore", format!("{DOCKERFILE_IN_TAR}\n").as_bytes())?;
    }
    regular(&mut b, DOCKERFILE_IN_TAR, dockerfile.as_bytes())?;
    Ok((b.into_inner()?, DOCKERFILE_IN_TAR.to_owned()))
}

/// `path` as a `/`-separated path inside `root`, when it is a file there.
fn inside_of(root: &Path, path: &Path) -> Option<String> {
    let (root, path) = (root.canonicalize().ok()?, path.canonicalize().ok()?);
    let rel = path.strip_prefix(&root).ok()?;
    Some(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_tar_is_deterministic_and_honours_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "secret\n").unwrap();
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/z"), "z").unwrap();
        std::fs::write(dir.path().join("a"), "a").unwrap();
        let (t1, name) = context_tar(dir.path(), "FROM scratch\n", None).unwrap();
        let (t2, _) = context_tar(dir.path(), "FROM scratch\n", None).unwrap();
        assert_eq!(name, DOCKERFILE_IN_TAR);
        assert_eq!(t1, t2);
        let mut archive = tar::Archive::new(t1.as_slice());
        let names: Vec<String> = archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, [".dockerignore", "a", "b", "b/z", DOCKERFILE_IN_TAR]);
        let mut archive = tar::Archive::new(t1.as_slice());
        let text = std::io::read_to_string(archive.entries().unwrap().next().unwrap().unwrap()).unwrap();
        assert!(text.ends_with(&format!("\n{DOCKERFILE_IN_TAR}\n")), "COPY . must not pick the Dockerfile up: {text:?}");
    }

    #[test]
    fn a_dockerfile_inside_the_context_goes_as_itself_even_when_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "Dockerfile\n.dockerignore\n").unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("a"), "a").unwrap();
        let (tar, name) = context_tar(dir.path(), "FROM scratch\n", Some(&dir.path().join("Dockerfile"))).unwrap();
        assert_eq!(name, "Dockerfile");
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "a"], "as the CLI sends them: the daemon drops what its excludes name");
    }

    #[test]
    fn build_failures_are_told_from_a_missing_buildkit() {
        assert!(is_build_failure("executor failed running [/bin/sh -c false]: exit code: 1"));
        assert!(is_build_failure("failed to solve: process \"/bin/sh -c false\" did not complete successfully: exit code: 1"));
        assert!(is_build_failure("failed to solve with frontend dockerfile.v0: 127.0.0.1:5000/x:1: not found"));
        assert!(!is_build_failure("error during connect: session not supported"));
        assert!(!is_build_failure("buildkit not supported by daemon"));
        let lost = "failed to solve with frontend dockerfile.v0: failed to read downloaded context: Get \"http://build-context-p0d2\": context not found";
        assert!(is_lost_context(lost) && !is_lost_context("failed to solve: executor failed"));
    }

    #[test]
    fn buildkit_status_becomes_numbered_steps_and_the_tail_keeps_the_output() {
        use bollard::moby::buildkit::v1::{StatusResponse, Vertex, VertexLog};
        let vertex = |d: &str, name: &str, cached: bool, error: &str| Vertex {
            digest: d.into(),
            name: name.into(),
            cached,
            started: Some(Default::default()),
            error: error.into(),
            ..Default::default()
        };
        let mut log = BuildLog::default();
        log.on_status(&StatusResponse { vertexes: vec![vertex("a", "[1/2] FROM base", true, "")], ..Default::default() });
        // The same vertex again (BuildKit repeats vertexes as they progress) adds nothing.
        log.on_status(&StatusResponse { vertexes: vec![vertex("a", "[1/2] FROM base", true, "")], ..Default::default() });
        log.on_status(&StatusResponse {
            vertexes: vec![vertex("b", "[2/2] RUN test x != x", false, "")],
            logs: vec![VertexLog { vertex: "b".into(), msg: b"checking x\nstill x\n".to_vec(), ..Default::default() }],
            ..Default::default()
        });
        log.on_status(&StatusResponse {
            vertexes: vec![vertex("b", "[2/2] RUN test x != x", false, "exit code: 1")],
            ..Default::default()
        });
        assert_eq!(
            log.lines,
            ["#1 [1/2] FROM base", "#1 CACHED", "#2 [2/2] RUN test x != x", "#2 checking x", "#2 still x", "#2 ERROR: exit code: 1"]
        );
        assert_eq!(
            tail(&log.lines),
            " (last build output: #1 [1/2] FROM base | #1 CACHED | #2 [2/2] RUN test x != x | #2 checking x | #2 still x)"
        );
        assert_eq!(short_name("127.0.0.1:5000/e2e/base:one-abc"), "base:one-abc");
        assert_eq!(tail(&["x".repeat(300)]).chars().count(), " (last build output: )".len() + 201);
    }

    #[test]
    fn identity_tokens_reach_the_daemon_as_identitytoken() {
        use crate::core::secret::Secret;
        let token = Credential { username: "<token>".into(), password: Secret::new("idtok"), identity_token: true };
        let d = daemon_credentials(&token, "r.example".into());
        assert_eq!((d.identitytoken.as_deref(), d.password.as_deref(), d.username.as_deref()), (Some("idtok"), None, None));
        let basic = daemon_credentials(&Credential::basic("u", Secret::new("pw")), "r.example".into());
        assert_eq!((basic.username.as_deref(), basic.password.as_deref(), basic.identitytoken.as_deref()), (Some("u"), Some("pw"), None));
        assert_eq!(basic.serveraddress.as_deref(), Some("r.example"));
    }

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(split_tag("127.0.0.1:5000/a/b:t").unwrap(), ("127.0.0.1:5000/a/b", "t"));
        assert!(split_tag("127.0.0.1:5000/a/b").is_err());
    }
}
