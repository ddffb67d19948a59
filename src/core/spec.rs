//! The spec file (`split-build.yml`): its YAML shape, and its validation into a [`Spec`]
//! whose every value is checked, with errors that name file, line, column and key.
//!
//! Parsing is pure: the environment and the files the spec names are reached through
//! [`SpecEnv`], which the binary backs with the real process and file system.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::core::image_ref::{ImageRef, RegistryPrefix, Tag, check_repository};
use crate::core::platform::Platform;
use crate::core::template::{Field, Template, Vars, expand_env};

/// Where a value sits in a file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Site {
    /// The file, as the user named it.
    pub file: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// The dotted key (`bases.instances[3]`), empty when unknown.
    pub key: String,
}

/// A spec that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {}{}", site.file.display(), site.line, site.column, if site.key.is_empty() { String::new() } else { format!("{}: ", site.key) }, message)]
pub struct SpecError {
    /// Where the problem is.
    pub site: Site,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// What the spec reads from outside itself: environment variables and files.
pub trait SpecEnv {
    /// An environment variable, if set.
    fn var(&self, name: &str) -> Option<String>;
    /// A file's text.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Whether `path` is an existing file.
    fn is_file(&self, path: &Path) -> bool;
    /// Whether `path` is an existing directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Whether anything exists at `path` (a file, directory, device, pipe, ...), so that
    /// "not a regular file" can be told from "does not exist".
    fn exists(&self, path: &Path) -> bool;
}

/// How agent images are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// At the registry: payload layers appended onto the base's manifest.
    Append,
    /// Through the daemon: a generated thin Dockerfile.
    Dockerfile,
}

/// Which build cache is exported (`cache-to`); cache-from is always on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// No export.
    Off,
    /// The final image's layers only.
    Min,
    /// Every stage's layers (the builder: each stage its target needs, pushed as a cache
    /// image; see `core::build_cache`).
    Max,
}

/// The cache mode of each stage that builds through the daemon (`cache.builder`,
/// `cache.bases`; `cache.mode` sets both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cache {
    /// The builder: one build per agent commit, on the critical path (default `max`).
    pub builder: CacheMode,
    /// The bases: hundreds of builds, where one cache export each would flood the registry
    /// with writes (default `min`).
    pub bases: CacheMode,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache { builder: CacheMode::Max, bases: CacheMode::Min }
    }
}

/// The builder: built once per version, its `payload` stage is the agent layer.
#[derive(Debug, Clone)]
pub struct BuilderSpec {
    /// Full repository path below the registry host.
    pub repository: String,
    /// Build context directory.
    pub context: PathBuf,
    /// Dockerfile path.
    pub dockerfile: PathBuf,
    /// Stage whose filesystem is the payload.
    pub target: String,
    /// Fixed version, when the spec or the environment gives one.
    pub version: Option<Tag>,
    /// Globs (relative to the context) whose files make the version hash.
    pub inputs: Vec<String>,
    /// Build arguments.
    pub build_args: BTreeMap<String, String>,
}

/// The bases: one per instance, tagged by content.
#[derive(Debug, Clone)]
pub struct BasesSpec {
    /// Full repository path below the registry host.
    pub repository: String,
    /// Upstream image per instance.
    pub from: Template,
    /// Dockerfile path.
    pub dockerfile: PathBuf,
    /// Build context directory.
    pub context: PathBuf,
    /// Build target, if any.
    pub target: Option<String>,
    /// Build arguments; values may name `{instance}`.
    pub build_args: BTreeMap<String, Template>,
    /// Globs (relative to the context) whose files go into the base hash.
    pub inputs: Vec<String>,
    /// Instance ids, in spec order.
    pub instances: Vec<String>,
}

/// One flavour of agent image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Variant {
    /// Name, used in tags.
    pub name: String,
    /// Entrypoint, when set.
    pub entrypoint: Option<Vec<String>>,
    /// Cmd, when set.
    pub cmd: Option<Vec<String>>,
    /// Environment added to the base's.
    pub env: BTreeMap<String, String>,
    /// Labels added to the base's.
    pub labels: BTreeMap<String, String>,
    /// Working directory, when set.
    pub workdir: Option<String>,
}

/// The agent images: base + payload, one per instance and variant.
#[derive(Debug, Clone)]
pub struct AgentsSpec {
    /// Full repository path below the registry host.
    pub repository: String,
    /// Tag template over `{builder}`, `{instance}`, `{variant}`.
    pub tag: Template,
    /// How they are made.
    pub method: Method,
    /// The variants.
    pub variants: Vec<Variant>,
}

/// A validated spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The spec file, as named.
    pub file: PathBuf,
    /// Registry host and namespace.
    pub registry: RegistryPrefix,
    /// Platforms every stage is planned for.
    pub platforms: Vec<Platform>,
    /// The builder.
    pub builder: BuilderSpec,
    /// The bases.
    pub bases: BasesSpec,
    /// The agents.
    pub agents: AgentsSpec,
    /// Cache export mode per stage.
    pub cache: Cache,
    /// Most matrix entries per stage.
    pub max_parallel: u16,
    /// Agent images per agents job with the `append` method (`jobs.agents-per-job`): that
    /// stage is bound by the registry's write budget, not by runners.
    pub agents_per_job: u32,
    /// Writes a minute the registry allows a whole run, shared by every job
    /// (`jobs.write-budget`; default [`DEFAULT_GHCR_WRITE_BUDGET`] on ghcr.io); `None`: no
    /// run-wide budget, each job paces at its own `--max-writes-per-second`.
    pub write_budget: Option<u32>,
    /// The `runs-on` label of each platform's matrix jobs (`jobs.runners`, else the default).
    pub runners: BTreeMap<Platform, String>,
    /// Extra tag patterns retention keeps.
    pub keep: Vec<String>,
}

impl Spec {
    /// The image reference of `repository:tag` in this spec's registry.
    pub fn image(&self, repository: &str, tag: Tag) -> ImageRef {
        ImageRef::new(&self.registry.host, repository, tag)
    }

    /// The same spec with the run's write budget a flag gives (`--write-budget`, writes a
    /// minute; 0: none) in place of `jobs.write-budget`.
    pub fn with_write_budget(mut self, writes_a_minute: Option<u32>) -> Spec {
        if let Some(n) = writes_a_minute {
            self.write_budget = (n > 0).then_some(n);
        }
        self
    }
}

// ---------------------------------------------------------------------------------------
// The YAML shape.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    registry: Spanned<String>,
    #[serde(default)]
    platforms: Option<Spanned<Vec<Spanned<String>>>>,
    builder: Spanned<RawBuilder>,
    bases: Spanned<RawBases>,
    agents: Spanned<RawAgents>,
    #[serde(default)]
    cache: Option<RawCache>,
    #[serde(default)]
    jobs: Option<RawJobs>,
    #[serde(default)]
    keep: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuilder {
    repository: Spanned<String>,
    #[serde(default)]
    context: Option<Spanned<String>>,
    #[serde(default)]
    dockerfile: Option<Spanned<String>>,
    #[serde(default)]
    target: Option<Spanned<String>>,
    #[serde(default)]
    version: Option<Spanned<String>>,
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
    #[serde(default, rename = "build-args")]
    build_args: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBases {
    repository: Spanned<String>,
    from: Spanned<String>,
    #[serde(default)]
    dockerfile: Option<Spanned<String>>,
    #[serde(default)]
    context: Option<Spanned<String>>,
    #[serde(default)]
    target: Option<Spanned<String>>,
    #[serde(default, rename = "build-args")]
    build_args: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    inputs: Option<Vec<Spanned<String>>>,
    instances: Spanned<RawInstances>,
}

/// `instances:` is either a file name or a list of ids.
enum RawInstances {
    File(String),
    List(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawInstances {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawInstances;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a file name (one instance id a line) or a list of instance ids")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawInstances, E> {
                Ok(RawInstances::File(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawInstances, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(RawInstances::List(items))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    repository: Spanned<String>,
    #[serde(default)]
    tag: Option<Spanned<String>>,
    #[serde(default)]
    method: Option<Spanned<String>>,
    variants: Spanned<Vec<Spanned<RawVariant>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: Spanned<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    workdir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    builder: Option<Spanned<String>>,
    #[serde(default)]
    bases: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    #[serde(default, rename = "max-parallel")]
    max_parallel: Option<Spanned<i64>>,
    #[serde(default, rename = "agents-per-job")]
    agents_per_job: Option<Spanned<i64>>,
    #[serde(default, rename = "write-budget")]
    write_budget: Option<Spanned<i64>>,
    #[serde(default)]
    runners: Option<Spanned<BTreeMap<String, String>>>,
}

/// The runner label a platform's matrix jobs get by default: GitHub's hosted runners of that
/// architecture (arm64 runners are free for public repositories and build natively).
pub fn default_runner(platform: &Platform) -> Option<&'static str> {
    match (platform.os.as_str(), platform.architecture.as_str()) {
        ("linux", "amd64") => Some("ubuntu-latest"),
        ("linux", "arm64") => Some("ubuntu-24.04-arm"),
        _ => None,
    }
}

/// The default agent tag template.
pub const DEFAULT_AGENT_TAG: &str = "{builder}-{instance}-{variant}";
/// The default most matrix entries per stage.
pub const DEFAULT_MAX_PARALLEL: u16 = 64;
/// Agent images per agents job by default (`jobs.agents-per-job`, the `append` method): a
/// 500 × 2 agent commit is one job. Such a job is a few thousand small requests paced by the
/// registry's write budget; more jobs would only split that budget and each cost a runner
/// start, a checkout and the plan's download.
pub const DEFAULT_AGENTS_PER_JOB: u32 = 1000;
/// ghcr.io's run-wide write budget by default (writes a minute): under GHCR's about 2,000 a
/// minute, which every job of a workflow run shares.
pub const DEFAULT_GHCR_WRITE_BUDGET: u32 = 1800;

/// The run-wide write budget a registry host has when the spec names none: GHCR's, else none.
pub fn default_write_budget(host: &str) -> Option<u32> {
    (host == "ghcr.io").then_some(DEFAULT_GHCR_WRITE_BUDGET)
}

/// The most images (bases and agents, on every platform) one plan may hold: 100,000
/// instances × 2 variants × 1 platform (300,000) plans in ~1.4 s and ~260 MB; 500,000 stays
/// well under 1 GB, while a million is what used to end in an allocation failure.
pub const MAX_IMAGES: u64 = 500_000;

/// How many images a spec asks for: per instance and platform, a base and one agent per variant.
pub fn image_count(instances: usize, variants: usize, platforms: usize) -> u64 {
    (instances as u64).saturating_mul(variants as u64 + 1).saturating_mul(platforms as u64)
}

/// GitHub's limit on one matrix.
pub const MATRIX_LIMIT: i64 = 256;

// ---------------------------------------------------------------------------------------
// Validation.

struct Checker<'a> {
    file: &'a Path,
    dir: &'a Path,
    env: &'a dyn SpecEnv,
}

impl Checker<'_> {
    fn site<T>(&self, s: &Spanned<T>, key: &str) -> Site {
        Site { file: self.file.to_path_buf(), line: s.referenced.line(), column: s.referenced.column(), key: key.to_owned() }
    }

    fn err<T>(&self, s: &Spanned<T>, key: &str, message: impl Into<String>) -> SpecError {
        SpecError { site: self.site(s, key), message: message.into() }
    }

    /// The string with `${VAR}` expanded.
    fn text(&self, s: &Spanned<String>, key: &str) -> Result<String, SpecError> {
        expand_env(&s.value, &|n| self.env.var(n)).map_err(|e| self.err(s, key, e.message))
    }

    fn nonempty(&self, s: &Spanned<String>, key: &str) -> Result<String, SpecError> {
        let v = self.text(s, key)?;
        if v.trim().is_empty() {
            return Err(self.err(s, key, format!("is empty{}", unset_hint(&s.value))));
        }
        Ok(v)
    }

    fn repository(&self, prefix: &RegistryPrefix, s: &Spanned<String>, key: &str) -> Result<String, SpecError> {
        let name = self.nonempty(s, key)?;
        check_repository(&name).map_err(|e| self.err(s, key, e.0))?;
        Ok(prefix.repository(&name))
    }

    fn path(&self, s: &Spanned<String>, key: &str) -> Result<PathBuf, SpecError> {
        Ok(self.dir.join(self.nonempty(s, key)?))
    }

    fn existing_file(&self, s: &Spanned<String>, key: &str) -> Result<PathBuf, SpecError> {
        let p = self.path(s, key)?;
        if !self.env.is_file(&p) {
            // A device, pipe or directory is never read: `/dev/zero` would never end.
            let why = if self.env.exists(&p) {
                "is not a regular file (a directory, device or pipe): name a file"
            } else {
                "does not exist (paths are relative to the spec file's directory)"
            };
            return Err(self.err(s, key, format!("`{}` {why}", p.display())));
        }
        Ok(p)
    }

    fn existing_dir(&self, s: &Spanned<String>, key: &str) -> Result<PathBuf, SpecError> {
        let p = self.path(s, key)?;
        if !self.env.is_dir(&p) {
            let why = if self.env.exists(&p) { "is not a directory" } else { "does not exist" };
            return Err(self.err(s, key, format!("directory `{}` {why} (paths are relative to the spec file's directory)", p.display())));
        }
        Ok(p)
    }

    /// A build context: an existing directory, and not the file system's root, which
    /// would send (and hash) every file of the machine.
    fn context(&self, s: &Spanned<String>, key: &str) -> Result<PathBuf, SpecError> {
        let p = self.existing_dir(s, key)?;
        let mut depth = 0usize;
        let mut rooted = false;
        for c in p.components() {
            match c {
                std::path::Component::RootDir => rooted = true,
                std::path::Component::ParentDir => depth = depth.saturating_sub(1),
                std::path::Component::Normal(_) => depth += 1,
                _ => {}
            }
        }
        if rooted && depth == 0 {
            return Err(self.err(
                s,
                key,
                format!("`{}` is the file system's root: a context is sent whole to Docker and hashed; name the directory that holds what the Dockerfile copies", s.value),
            ));
        }
        Ok(p)
    }

    fn globs(&self, list: &[Spanned<String>], key: &str) -> Result<Vec<String>, SpecError> {
        list.iter()
            .enumerate()
            .map(|(i, g)| {
                let k = format!("{key}[{i}]");
                let v = self.nonempty(g, &k)?;
                globset::Glob::new(&v).map_err(|e| self.err(g, &k, format!("`{v}` is not a valid glob: {e}")))?;
                Ok(v)
            })
            .collect()
    }
}

fn unset_hint(raw: &str) -> String {
    if raw.contains("${") { format!(" (`{raw}` expanded to nothing: is the variable set?)") } else { String::new() }
}

fn check_tag(value: &str) -> Result<Tag, String> {
    value.parse::<Tag>().map_err(|e| e.0)
}

fn check_build_arg_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses and validates a spec. `file` is how the user named the spec (used in errors);
/// relative paths in it resolve against `file`'s directory.
pub fn parse_spec(text: &str, file: &Path, env: &dyn SpecEnv) -> Result<Spec, SpecError> {
    let raw: RawSpec = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e, text, file))?;
    let dir = file.parent().unwrap_or(Path::new(""));
    let c = Checker { file, dir, env };

    let registry_text = c.nonempty(&raw.registry, "registry")?;
    let registry: RegistryPrefix =
        registry_text.parse().map_err(|e: crate::core::image_ref::RefError| c.err(&raw.registry, "registry", e.0))?;

    let platforms = match &raw.platforms {
        None => vec!["linux/amd64".parse().unwrap_or_else(|_| unreachable_platform())],
        Some(list) => {
            if list.value.is_empty() {
                return Err(c.err(list, "platforms", "is empty: name at least one platform, for example [linux/amd64]"));
            }
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for (i, p) in list.value.iter().enumerate() {
                let key = format!("platforms[{i}]");
                let v = c.nonempty(p, &key)?;
                let platform: Platform = v.parse().map_err(|e: crate::core::platform::PlatformError| c.err(p, &key, e.to_string()))?;
                if !seen.insert(platform.clone()) {
                    return Err(c.err(p, &key, format!("`{v}` is listed twice")));
                }
                out.push(platform);
            }
            out
        }
    };

    let builder = builder_spec(&c, &registry, &raw.builder)?;
    let bases = bases_spec(&c, &registry, &raw.bases)?;
    let agents = agents_spec(&c, &registry, &raw.agents, &bases.instances, platforms.len())?;

    let cache = cache_spec(&c, raw.cache.as_ref())?;

    let max_parallel = match raw.jobs.as_ref().and_then(|j| j.max_parallel.as_ref()) {
        None => DEFAULT_MAX_PARALLEL,
        Some(n) if (1..=MATRIX_LIMIT).contains(&n.value) => n.value as u16,
        Some(n) => {
            return Err(c.err(
                n,
                "jobs.max-parallel",
                format!("{} is out of range: use a whole number from 1 to 256 (GitHub runs at most 256 jobs from one matrix)", n.value),
            ));
        }
    };
    if usize::from(max_parallel) < platforms.len() {
        let n = raw.jobs.as_ref().and_then(|j| j.max_parallel.as_ref());
        if let Some(n) = n {
            return Err(c.err(
                n,
                "jobs.max-parallel",
                format!("{max_parallel} is less than the {} platforms: each platform needs at least one job", platforms.len()),
            ));
        }
    }

    let agents_per_job = match raw.jobs.as_ref().and_then(|j| j.agents_per_job.as_ref()) {
        None => DEFAULT_AGENTS_PER_JOB,
        Some(n) if (1..=i64::try_from(MAX_IMAGES).unwrap_or(i64::MAX)).contains(&n.value) => n.value as u32,
        Some(n) => {
            return Err(c.err(
                n,
                "jobs.agents-per-job",
                format!("{} is out of range: use a whole number from 1 to {MAX_IMAGES} (agent images per agents job)", n.value),
            ));
        }
    };
    let write_budget = match raw.jobs.as_ref().and_then(|j| j.write_budget.as_ref()) {
        None => default_write_budget(&registry.host),
        Some(n) if n.value == 0 => None,
        Some(n) if (1..=i64::from(u32::MAX)).contains(&n.value) => Some(n.value as u32),
        Some(n) => {
            return Err(c.err(
                n,
                "jobs.write-budget",
                format!("{} is out of range: use the writes a minute the registry allows a whole run (GHCR: about 2,000), or 0 for no run-wide budget", n.value),
            ));
        }
    };

    let given = raw.jobs.as_ref().and_then(|j| j.runners.as_ref());
    let mut runners = BTreeMap::new();
    if let Some(given) = given {
        for (name, label) in &given.value {
            let p: Platform =
                name.parse().map_err(|e: crate::core::platform::PlatformError| c.err(given, "jobs.runners", e.to_string()))?;
            if !platforms.contains(&p) {
                let spec_platforms: Vec<String> = platforms.iter().map(ToString::to_string).collect();
                return Err(c.err(
                    given,
                    "jobs.runners",
                    format!("`{name}` is not one of the spec's platforms ({})", spec_platforms.join(", ")),
                ));
            }
            if label.trim().is_empty() {
                return Err(c.err(given, "jobs.runners", format!("the runner label of `{name}` is empty: name a runs-on label")));
            }
            runners.insert(p, label.trim().to_owned());
        }
    }
    for p in &platforms {
        if runners.contains_key(p) {
            continue;
        }
        let Some(label) = default_runner(p) else {
            let message = format!(
                "no runner for {p}: add `{p}: <runs-on label>` under `jobs.runners` (defaults exist for linux/amd64 and linux/arm64)"
            );
            return Err(match (given, &raw.platforms) {
                (Some(g), _) => c.err(g, "jobs.runners", message),
                (None, Some(list)) => c.err(list, "platforms", message),
                (None, None) => {
                    SpecError { site: Site { file: file.to_path_buf(), line: 1, column: 1, key: "jobs.runners".into() }, message }
                }
            });
        };
        runners.insert(p.clone(), label.to_owned());
    }

    let keep = c.globs(&raw.keep, "keep")?;

    Ok(Spec {
        file: file.to_path_buf(),
        registry,
        platforms,
        builder,
        bases,
        agents,
        cache,
        max_parallel,
        agents_per_job,
        write_budget,
        runners,
        keep,
    })
}

/// `linux/amd64` always parses; this keeps `unwrap` out of the code path.
fn unreachable_platform() -> Platform {
    Platform { os: "linux".into(), architecture: "amd64".into(), variant: None }
}

/// `cache`: `mode` sets every stage, `builder` and `bases` one each (and win over `mode`).
fn cache_spec(c: &Checker<'_>, raw: Option<&RawCache>) -> Result<Cache, SpecError> {
    let mut cache = Cache::default();
    let Some(raw) = raw else { return Ok(cache) };
    let mode = |m: &Spanned<String>, key: &str| -> Result<CacheMode, SpecError> {
        match c.text(m, key)?.as_str() {
            "off" => Ok(CacheMode::Off),
            "min" => Ok(CacheMode::Min),
            "max" => Ok(CacheMode::Max),
            other => Err(c.err(m, key, format!("`{other}` is not a cache mode: use off, min or max"))),
        }
    };
    if let Some(m) = &raw.mode {
        let m = mode(m, "cache.mode")?;
        cache = Cache { builder: m, bases: m };
    }
    if let Some(m) = &raw.builder {
        cache.builder = mode(m, "cache.builder")?;
    }
    if let Some(m) = &raw.bases {
        cache.bases = mode(m, "cache.bases")?;
    }
    Ok(cache)
}

fn builder_spec(c: &Checker<'_>, registry: &RegistryPrefix, raw: &Spanned<RawBuilder>) -> Result<BuilderSpec, SpecError> {
    let b = &raw.value;
    let repository = c.repository(registry, &b.repository, "builder.repository")?;
    let context = match &b.context {
        Some(s) => c.context(s, "builder.context")?,
        None => c.dir.to_path_buf(),
    };
    let dockerfile = match &b.dockerfile {
        Some(s) => c.existing_file(s, "builder.dockerfile")?,
        None => {
            let p = context.join("Dockerfile");
            if !c.env.is_file(&p) {
                return Err(c.err(raw, "builder.dockerfile", format!("no `dockerfile:` given and `{}` does not exist", p.display())));
            }
            p
        }
    };
    let target = match &b.target {
        Some(s) => c.nonempty(s, "builder.target")?,
        None => "payload".to_owned(),
    };
    let version = match &b.version {
        Some(s) => {
            let v = c.text(s, "builder.version")?;
            if v.is_empty() { None } else { Some(check_tag(&v).map_err(|m| c.err(s, "builder.version", m))?) }
        }
        None => None,
    };
    let mut inputs = c.globs(&b.inputs, "builder.inputs")?;
    if inputs.is_empty() {
        inputs.push("**".to_owned());
    }
    let mut build_args = BTreeMap::new();
    for (k, v) in &b.build_args {
        let key = format!("builder.build-args.{k}");
        if !check_build_arg_name(k) {
            return Err(c.err(v, &key, format!("`{k}` is not a valid build-arg name: use letters, digits and `_`")));
        }
        build_args.insert(k.clone(), c.text(v, &key)?);
    }
    Ok(BuilderSpec { repository, context, dockerfile, target, version, inputs, build_args })
}

fn bases_spec(c: &Checker<'_>, registry: &RegistryPrefix, raw: &Spanned<RawBases>) -> Result<BasesSpec, SpecError> {
    let b = &raw.value;
    let repository = c.repository(registry, &b.repository, "bases.repository")?;
    let context = match &b.context {
        Some(s) => c.context(s, "bases.context")?,
        None => c.dir.to_path_buf(),
    };
    let dockerfile = match &b.dockerfile {
        Some(s) => c.existing_file(s, "bases.dockerfile")?,
        None => {
            let p = context.join("Dockerfile");
            if !c.env.is_file(&p) {
                return Err(c.err(raw, "bases.dockerfile", format!("no `dockerfile:` given and `{}` does not exist", p.display())));
            }
            p
        }
    };
    let target = b.target.as_ref().map(|s| c.nonempty(s, "bases.target")).transpose()?;
    let from_text = c.nonempty(&b.from, "bases.from")?;
    let from = Template::parse(&from_text, &[Field::Instance]).map_err(|e| c.err(&b.from, "bases.from", e.message))?;
    if !from.uses(Field::Instance) && instances_len_hint(&b.instances) > 1 {
        // One upstream for every instance is allowed (a shared base image), so no error.
    }
    let mut build_args = BTreeMap::new();
    for (k, v) in &b.build_args {
        let key = format!("bases.build-args.{k}");
        if !check_build_arg_name(k) {
            return Err(c.err(v, &key, format!("`{k}` is not a valid build-arg name: use letters, digits and `_`")));
        }
        if k == "BASE_IMAGE" {
            return Err(c.err(v, &key, "BASE_IMAGE is set by split-build to the instance's `from` image: remove it here"));
        }
        let text = c.text(v, &key)?;
        let t = Template::parse(&text, &[Field::Instance]).map_err(|e| c.err(v, &key, e.message))?;
        build_args.insert(k.clone(), t);
    }
    let inputs = match &b.inputs {
        Some(list) => c.globs(list, "bases.inputs")?,
        None => vec!["**".to_owned()],
    };
    let instances = instances(c, &b.instances)?;
    for (id, site) in &instances {
        let rendered = from.render(&Vars { instance: Some(id), ..Vars::default() });
        if let Err(e) = rendered.parse::<ImageRef>() {
            return Err(SpecError {
                site: Site { key: "bases.from".into(), ..c.site(&b.from, "bases.from") },
                message: format!("for instance `{id}` (at line {}): {}", site.line, e.0),
            });
        }
    }
    Ok(BasesSpec {
        repository,
        from,
        dockerfile,
        context,
        target,
        build_args,
        inputs,
        instances: instances.into_iter().map(|(id, _)| id).collect(),
    })
}

fn instances_len_hint(raw: &Spanned<RawInstances>) -> usize {
    match &raw.value {
        RawInstances::File(_) => usize::MAX,
        RawInstances::List(l) => l.len(),
    }
}

const INSTANCE_HELP: &str = "an instance id is 1 to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-` (the OCI tag grammar), for example `django__django-11099`";

/// Reads the instance list, from the spec or from a file, checking ids and duplicates.
fn instances(c: &Checker<'_>, raw: &Spanned<RawInstances>) -> Result<Vec<(String, Site)>, SpecError> {
    let mut out: Vec<(String, Site)> = Vec::new();
    match &raw.value {
        RawInstances::List(items) => {
            for (i, item) in items.iter().enumerate() {
                let key = format!("bases.instances[{i}]");
                out.push((c.text(item, &key)?, c.site(item, &key)));
            }
        }
        RawInstances::File(name) => {
            let spanned_name = Spanned::new(name.clone(), raw.referenced, raw.defined);
            let path = c.existing_file(&spanned_name, "bases.instances")?;
            let text =
                c.env.read_to_string(&path).map_err(|e| c.err(raw, "bases.instances", format!("reading `{}`: {e}", path.display())))?;
            for (n, line) in text.lines().enumerate() {
                let content = line.split('#').next().unwrap_or_default().trim();
                if content.is_empty() {
                    continue;
                }
                let column = line.find(content).map_or(1, |i| i as u64 + 1);
                out.push((content.to_owned(), Site { file: path.clone(), line: n as u64 + 1, column, key: "instance".into() }));
            }
        }
    }
    if out.is_empty() {
        return Err(c.err(raw, "bases.instances", "no instances: list at least one instance id, inline or one a line in a file"));
    }
    // An instances file is not the spec's own text (it could be any file, /proc/self/environ
    // included): its ids are described, never echoed.
    let from_file = matches!(raw.value, RawInstances::File(_));
    let shown = |id: &str| if from_file { "on this line".to_owned() } else { quoted(id) };
    let mut first_seen: BTreeMap<&str, &Site> = BTreeMap::new();
    for (id, site) in &out {
        if id.parse::<Tag>().is_err() {
            let what = if from_file {
                format!("the instance id on this line is not valid ({})", what_is_wrong(id))
            } else {
                format!("{} is not a valid instance id", quoted(id))
            };
            return Err(SpecError { site: site.clone(), message: format!("{what}: {INSTANCE_HELP}") });
        }
        if let Some(prev) = first_seen.insert(id, site) {
            return Err(SpecError {
                site: site.clone(),
                message: format!(
                    "duplicate instance {}: it is already listed at line {}; each instance must appear once",
                    shown(id),
                    prev.line
                ),
            });
        }
    }
    Ok(out)
}

/// Why an id is not a tag, without repeating it: its length, or its first character that a
/// tag may not hold (a character outside letters, digits, `_`, `.` and `-` says nothing of a
/// secret around it).
fn what_is_wrong(id: &str) -> String {
    let n = id.chars().count();
    if n > 128 {
        return format!("{n} characters long, more than 128");
    }
    if let Some((i, c)) = id.char_indices().find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        let name = match c {
            ' ' => "a space".to_owned(),
            '\t' => "a tab".to_owned(),
            '\0' => "a NUL byte".to_owned(),
            c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
            c => format!("`{}`", c.escape_debug()),
        };
        return format!("character {} is {name}", id[..i].chars().count() + 1);
    }
    "it starts with `.` or `-`".to_owned()
}

fn agents_spec(
    c: &Checker<'_>,
    registry: &RegistryPrefix,
    raw: &Spanned<RawAgents>,
    instances: &[String],
    platforms: usize,
) -> Result<AgentsSpec, SpecError> {
    let a = &raw.value;
    let repository = c.repository(registry, &a.repository, "agents.repository")?;
    let method = match &a.method {
        None => Method::Append,
        Some(m) => match c.text(m, "agents.method")?.as_str() {
            "append" => Method::Append,
            "dockerfile" => Method::Dockerfile,
            other => {
                return Err(c.err(
                    m,
                    "agents.method",
                    format!("`{other}` is not a method: use append (at the registry) or dockerfile (docker build)"),
                ));
            }
        },
    };
    if a.variants.value.is_empty() {
        return Err(c.err(&a.variants, "agents.variants", "is empty: list at least one variant with a `name`"));
    }
    let mut variants = Vec::new();
    let mut names = BTreeSet::new();
    for (i, v) in a.variants.value.iter().enumerate() {
        let key = format!("agents.variants[{i}].name");
        let name = c.nonempty(&v.value.name, &key)?;
        check_tag(&name).map_err(|_| {
            c.err(
                &v.value.name,
                &key,
                format!("`{name}` is not a valid variant name: use letters, digits, `_`, `.` and `-` (it becomes part of a tag)"),
            )
        })?;
        if !names.insert(name.clone()) {
            return Err(c.err(&v.value.name, &key, format!("variant `{name}` is listed twice")));
        }
        let rv = &v.value;
        let expand = |s: &String| expand_env(s, &|n| c.env.var(n)).map_err(|e| c.err(v, &format!("agents.variants[{i}]"), e.message));
        let expand_list = |l: &Option<Vec<String>>| l.as_ref().map(|l| l.iter().map(expand).collect::<Result<Vec<_>, _>>()).transpose();
        let expand_map = |m: &BTreeMap<String, String>| {
            m.iter().map(|(k, val)| Ok((k.clone(), expand(val)?))).collect::<Result<BTreeMap<_, _>, SpecError>>()
        };
        variants.push(Variant {
            name,
            entrypoint: expand_list(&rv.entrypoint)?,
            cmd: expand_list(&rv.cmd)?,
            env: expand_map(&rv.env)?,
            labels: expand_map(&rv.labels)?,
            workdir: rv.workdir.as_ref().map(expand).transpose()?,
        });
    }
    let (tag_text, tag_site) = match &a.tag {
        Some(t) => (c.nonempty(t, "agents.tag")?, c.site(t, "agents.tag")),
        None => (DEFAULT_AGENT_TAG.to_owned(), c.site(raw, "agents.tag")),
    };
    let tag = Template::parse(&tag_text, &[Field::Builder, Field::Instance, Field::Variant])
        .map_err(|e| SpecError { site: tag_site.clone(), message: e.message })?;
    if !tag.uses(Field::Instance) || !tag.uses(Field::Variant) {
        return Err(SpecError {
            site: tag_site,
            message: format!(
                "`{tag_text}` must name {{instance}} and {{variant}}, or different images would share one tag (for example {DEFAULT_AGENT_TAG})"
            ),
        });
    }
    // Before any image is named: a plan is held in memory whole, so its size is refused
    // here, with the numbers, rather than by the allocator.
    let images = image_count(instances.len(), variants.len(), platforms);
    if images > MAX_IMAGES {
        return Err(c.err(
            &a.variants,
            "agents.variants",
            format!(
                "{} instances × {} variants × {platforms} platform(s) make {images} images (a base and one agent per variant, for each instance and platform), more than the {MAX_IMAGES} one plan may hold: split the instances over several specs",
                instances.len(),
                variants.len()
            ),
        ));
    }
    // Every tag is checked here: a filter may turn one instance's id into something
    // that is not a tag (`replace("x", "é")`), and that instance alone would otherwise get
    // a hashed stand-in tag without a word.
    // Ids are tags already, so without a `replace` on {instance} one instance stands for
    // all, and 100,000 instances cost one rendering per variant.
    let checked = if tag.rewrites(Field::Instance) { instances } else { &instances[..instances.len().min(1)] };
    let sample_builder = "0".repeat(crate::core::content_hash::HASH_LEN);
    for instance in checked {
        for variant in &variants {
            let fitted = crate::core::tags::agent_tag_text(&tag, instance, &variant.name, &sample_builder);
            if let Err(e) = check_tag(&fitted) {
                let rendered = tag.render(&Vars { instance: Some(instance), variant: Some(&variant.name), builder: Some(&sample_builder) });
                return Err(SpecError {
                    site: tag_site,
                    message: format!(
                        "for instance {} and variant `{}`, `{tag_text}` renders {}, not a tag: {e}",
                        quoted(instance),
                        variant.name,
                        quoted(&rendered)
                    ),
                });
            }
        }
    }
    Ok(AgentsSpec { repository, tag, method, variants })
}

/// The spec's text from its bytes: a spec that is not UTF-8 is refused at its first bad
/// byte, by line and column, rather than as a file that cannot be read at all.
pub fn spec_text<'a>(bytes: &'a [u8], file: &Path) -> Result<&'a str, SpecError> {
    let e = match std::str::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(e) => e,
    };
    let good = &bytes[..e.valid_up_to()];
    let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    // The bytes before the bad one are valid UTF-8, so columns count characters.
    let column = String::from_utf8_lossy(&good[line_start..]).chars().count() as u64 + 1;
    let line = good.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let bad = bytes[e.valid_up_to()];
    let guess = if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        "the file is UTF-16"
    } else {
        "is the file saved in Latin-1 or another legacy encoding?"
    };
    Err(SpecError {
        site: Site { file: file.to_path_buf(), line, column, key: String::new() },
        message: format!("byte 0x{bad:02X} is not UTF-8 ({guess}): save the spec as UTF-8"),
    })
}

/// Turns a YAML or shape error into a [`SpecError`] with its location.
fn yaml_error(e: &serde_saphyr::Error, text: &str, file: &Path) -> SpecError {
    let (mut line, mut column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    if is_second_document(e) {
        // The parser points at the second document's first value; the separator before it
        // is what to remove.
        let lines: Vec<&str> = text.lines().take(usize::try_from(line).unwrap_or(usize::MAX)).collect();
        if let Some(i) = lines.iter().rposition(|l| l.starts_with("---") || l.starts_with("...")) {
            (line, column) = (i as u64 + 1, 1);
        }
    }
    let message = if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        "the spec is empty: it needs at least `registry`, `builder`, `bases` and `agents` (see the README's spec section)".to_owned()
    } else {
        yaml_message(e).unwrap_or_else(|| rendered_yaml_message(e))
    };
    // The key on the error's line, when there is one, is the key the user should look at.
    let key = usize::try_from(line)
        .ok()
        .and_then(|l| text.lines().nth(l.checked_sub(1)?))
        .and_then(|l| l.trim_start().trim_start_matches("- ").split_once(':'))
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .map(str::to_owned)
        .unwrap_or_default();
    SpecError { site: Site { file: file.to_path_buf(), line, column, key }, message }
}

fn is_second_document(e: &serde_saphyr::Error) -> bool {
    match e {
        serde_saphyr::Error::WithSnippet { error, .. } => is_second_document(error),
        serde_saphyr::Error::MultipleDocuments { .. } => true,
        _ => false,
    }
}

/// The parser's own text, where it already says what the spec wants (unknown and missing
/// keys, wrong types), with its YAML event names put in the spec's words.
fn rendered_yaml_message(e: &serde_saphyr::Error) -> String {
    let mut opts = serde_saphyr::RenderOptions::default();
    opts.snippets = serde_saphyr::SnippetMode::Off;
    let mut message = e.without_snippet().render_with_options(opts);
    // The plain rendering may end in its own " at line X column Y"; we print ours first.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    for (event, wanted) in [
        ("expected sequence start", "expected a list (`[a, b]` or one `- item` a line)"),
        ("expected string scalar", "expected a string"),
        ("expected mapping start", "expected a mapping (`key: value` lines)"),
        ("expected struct", "expected a mapping (`key: value` lines)"),
        (
            "while parsing a block mapping, did not find expected key",
            "this line does not line up with the keys above it: indent the keys of one mapping by the same number of spaces",
        ),
        ("tabs disallowed", "a tab indents this line: YAML indents with spaces only"),
        (
            "while parsing a quoted scalar, found unknown escape character",
            "unknown escape in a double-quoted string: write `\\\\` for a backslash, or use single quotes",
        ),
    ] {
        if let Some(rest) = message.strip_prefix(event) {
            message = format!("{wanted}{}", if rest.starts_with(' ') || rest.starts_with(',') { rest } else { "" });
        }
    }
    message.replace("invalid type: unit value", "no value (null)")
}

/// What a YAML error means for a spec, for the errors whose own text speaks to the Rust
/// programmer using the parser ("use Option<String>", "set DuplicateKeyPolicy in Options",
/// "budget breached: ScalarBytes") rather than to the person writing the spec. `None`: the
/// parser's text says it well enough.
fn yaml_message(e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::Error as E;
    use serde_saphyr::budget::BudgetBreach as B;
    let limits = serde_saphyr::Budget::default();
    let too_big = "put a long instance list in a file (`instances: instances.txt`, one id a line)";
    let aliases = "aliases (`*name`) repeat the value marked `&name`; this many is how a YAML \"billion laughs\" bomb looks: write the values out, or use fewer aliases";
    Some(match e {
        E::WithSnippet { error, .. } => return yaml_message(error),
        E::AliasError { error, .. } => return yaml_message(error),
        E::DuplicateMappingKey { key: Some(k), .. } => {
            format!("{} is given twice in the same mapping: keep one (YAML does not say which would win)", quoted(k))
        }
        E::DuplicateMappingKey { key: None, .. } => {
            "a key is given twice in the same mapping: keep one (YAML does not say which would win)".to_owned()
        }
        E::MultipleDocuments { .. } | E::Budget { breach: B::Documents { .. }, .. } => {
            "a second YAML document starts here (after `---` or `...`): a spec is one document; remove the separator and what follows, or merge it into the first".to_owned()
        }
        E::NullIntoString { .. } | E::InvalidCharNull { .. } => {
            "has no value: write a string here (`\"\"` for an empty one), or leave the key out".to_owned()
        }
        E::TaggedScalarCannotDeserializeIntoString { .. } => {
            "a YAML tag (`!!int`, `!!float`, `!!bool`, ...) makes this value something other than a string: remove the tag, or quote the value".to_owned()
        }
        E::UnsupportedTag { tag, .. } => {
            format!("the YAML tag {} is not supported here: remove it; a spec is plain strings, numbers, lists and mappings", quoted(tag))
        }
        E::TaggedStructFieldName { tag, .. } => format!("a YAML tag ({}) on a key is not allowed: remove it", quoted(tag)),
        E::InvalidBinaryBase64 { .. } | E::BinaryNotUtf8 { .. } | E::BytesNotSupportedMissingBinaryTag { .. } => {
            "a `!!binary` value is not text: remove the `!!binary` tag and write the text itself".to_owned()
        }
        E::InvalidScalar { ty, .. } => match *ty {
            "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize" | "usize" => {
                "expected a whole number, for example 64".to_owned()
            }
            "f32" | "f64" => "expected a number, for example 1.5".to_owned(),
            "bool" => "expected true or false".to_owned(),
            other => format!("expected a value of type {other}"),
        },
        E::InvalidBooleanStrict { .. } => "expected true or false".to_owned(),
        E::Eof { .. } => "the file ends inside a value: close the open bracket, brace or quote".to_owned(),
        E::UnexpectedSequenceEnd { .. } | E::UnexpectedMappingEnd { .. } | E::ContainerEndMismatch { .. } => {
            "a list or mapping ends here that never started: check the brackets `]` and braces `}`".to_owned()
        }
        E::UnknownAnchor { .. } => {
            "this alias (`*name`) names no anchor: an alias repeats a value marked `&name` earlier in the file; mark it there, or write the value itself".to_owned()
        }
        E::RecursiveReferencesRequireWeakTypes { .. } => {
            "an alias (`*name`) refers to the value that contains it: write the value out".to_owned()
        }
        E::MergeKeyNotAllowed { .. } | E::MergeValueNotMapOrSeqOfMaps { .. } => {
            "`<<` merges mappings into this one: write `<<: *name` where `&name` marks a mapping, or write the keys out".to_owned()
        }
        E::AliasReplayLimitExceeded { total_replayed_events: n, .. } => format!("aliases expand to more than {n} values: {aliases}"),
        E::AliasExpansionLimitExceeded { expansions: n, .. } => format!("one anchor is repeated more than {n} times: {aliases}"),
        E::AliasReplayStackDepthExceeded { depth, .. } => format!("aliases are nested {depth} deep: {aliases}"),
        E::AliasReplayCounterOverflow { .. } => format!("aliases expand to too many values: {aliases}"),
        E::IndentationError { required, actual, .. } => {
            format!("this line is indented by {actual} spaces where {required} is needed: indent the keys of one mapping alike")
        }
        E::QuotingRequired { value, .. } => format!("{} must be quoted here: write it as \"...\"", quoted(value)),
        E::Budget { breach, .. } => match breach {
            B::Events { .. } | B::Nodes { .. } => {
                format!("the spec has more than {} YAML values (nodes): too large to read safely; {too_big}", limits.max_nodes.min(limits.max_events))
            }
            B::ScalarBytes { total_scalar_bytes } => format!(
                "the spec's text adds up to {total_scalar_bytes} bytes, more than the {} one spec may hold: {too_big}",
                limits.max_total_scalar_bytes
            ),
            B::InputBytes { input_bytes } => {
                format!("the spec is {input_bytes} bytes, more than the {} one spec may be: {too_big}", limits.max_reader_input_bytes.unwrap_or(0))
            }
            B::Depth { depth } => format!(
                "values are nested {depth} levels deep, more than the {} allowed (a spec needs four): check the brackets and indentation",
                limits.max_depth
            ),
            B::AliasAnchorRatio { aliases: n, anchors: a } => format!(
                "{n} aliases for {a} anchors, more than {} per anchor: {aliases}",
                limits.alias_anchor_ratio_multiplier
            ),
            B::Aliases { aliases: n } => format!("{n} aliases, more than the {} allowed: {aliases}", limits.max_aliases),
            B::Anchors { anchors: n } => format!("{n} anchors (`&name`), more than the {} allowed: write the values out", limits.max_anchors),
            B::RecordedAnchorEvents { .. } | B::RecordedAnchorBytes { .. } => {
                format!("the values marked with anchors (`&name`) are too large to repeat: {aliases}")
            }
            B::MergeKeys { merge_keys } => {
                format!("{merge_keys} merge keys (`<<`), more than the {} allowed: write the keys out", limits.max_merge_keys)
            }
            B::SequenceUnbalanced => {
                "a list or mapping ends here that never started: check the brackets `]` and braces `}`".to_owned()
            }
            _ => "the spec is too large or too deeply nested to read safely: keep it to plain keys, lists and strings, and put a long instance list in a file".to_owned(),
        },
        _ => return None,
    })
}

/// A value in backticks for an error message, cut when long: an id pasted by mistake may
/// be megabytes long, and the message must stay one readable line that says how long it was.
pub fn quoted(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.chars().nth(SHOWN).is_none() {
        return format!("`{}`", value.escape_debug());
    }
    let head: String = value.chars().take(SHOWN).collect();
    format!("`{}…` ({} bytes)", head.escape_debug(), value.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An in-memory [`SpecEnv`]: files by path, variables by name.
    #[derive(Default)]
    pub(crate) struct MemEnv {
        pub files: BTreeMap<PathBuf, String>,
        pub vars: BTreeMap<String, String>,
        /// Paths that exist but are neither files nor directories (devices, pipes).
        pub special: BTreeSet<PathBuf>,
    }

    impl SpecEnv for MemEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).cloned()
        }
        fn read_to_string(&self, path: &Path) -> io::Result<String> {
            self.files.get(path).cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
        }
        fn is_file(&self, path: &Path) -> bool {
            self.files.contains_key(path)
        }
        fn is_dir(&self, path: &Path) -> bool {
            path.as_os_str().is_empty() || self.files.keys().any(|f| f.starts_with(path) && f != path)
        }
        fn exists(&self, path: &Path) -> bool {
            self.is_file(path) || self.is_dir(path) || self.special.contains(path)
        }
    }

    fn env() -> MemEnv {
        let mut e = MemEnv::default();
        e.files.insert(PathBuf::from("Dockerfile"), "FROM scratch\n".into());
        e.files.insert(PathBuf::from("docker/Dockerfile.base"), "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n".into());
        e
    }

    fn yaml(instances: &[&str], variants: &[&str]) -> String {
        let variants: String = variants.iter().map(|v| format!("    - name: {v}\n")).collect();
        format!(
            "registry: reg.example/ns\nbuilder:\n  repository: builder\nbases:\n  repository: base\n  from: \"upstream.example/x.{{instance|replace(\\\"__\\\",\\\"_1776_\\\")|lower}}:latest\"\n  dockerfile: docker/Dockerfile.base\n  context: docker\n  instances: [{}]\nagents:\n  repository: agent\n  variants:\n{variants}",
            instances.join(", ")
        )
    }

    /// A valid spec with these instances and variants (test fixture for other modules).
    pub(crate) fn spec_with(instances: &[&str], variants: &[&str]) -> Spec {
        parse_spec(&yaml(instances, variants), Path::new("split-build.yml"), &env()).unwrap()
    }

    #[test]
    fn cache_modes_per_stage_and_mode_for_both() {
        let with = |cache: &str| parse_spec(&format!("{PLAIN}cache: {cache}\n"), Path::new("s.yml"), &env());
        let c = |b, s| Cache { builder: b, bases: s };
        assert_eq!(with("{ mode: off }").unwrap().cache, c(CacheMode::Off, CacheMode::Off), "mode sets both, as before");
        assert_eq!(with("{ builder: min }").unwrap().cache, c(CacheMode::Min, CacheMode::Min));
        assert_eq!(with("{ bases: max }").unwrap().cache, c(CacheMode::Max, CacheMode::Max));
        assert_eq!(with("{ mode: off, builder: max }").unwrap().cache, c(CacheMode::Max, CacheMode::Off), "a stage's key wins");
        let e = with("{ bases: all }").unwrap_err().to_string();
        assert!(e.contains("cache.bases") && e.contains("off, min or max"), "{e}");
    }

    #[test]
    fn defaults_and_resolved_paths() {
        let s = spec_with(&["a", "b"], &["v"]);
        assert_eq!(s.registry.to_string(), "reg.example/ns");
        assert_eq!(s.platforms.len(), 1);
        assert_eq!(s.builder.repository, "ns/builder");
        assert_eq!(s.builder.target, "payload");
        assert_eq!(s.builder.dockerfile, PathBuf::from("Dockerfile"));
        assert_eq!(s.builder.inputs, ["**"]);
        assert_eq!(s.bases.dockerfile, PathBuf::from("docker/Dockerfile.base"));
        assert_eq!(s.bases.inputs, ["**"]);
        assert_eq!(s.agents.method, Method::Append);
        assert_eq!(s.cache, Cache { builder: CacheMode::Max, bases: CacheMode::Min }, "the builder caches every stage");
        assert_eq!(s.max_parallel, DEFAULT_MAX_PARALLEL);
        assert_eq!(s.agents_per_job, DEFAULT_AGENTS_PER_JOB);
        assert_eq!(s.write_budget, None, "no run-wide budget off ghcr.io unless the spec sets one");
    }

    #[test]
    fn jobs_size_and_write_budget_keys() {
        let ghcr = PLAIN.replace("registry: reg.example/ns", "registry: ghcr.io/ns");
        let parse = |text: &str| parse_spec(text, Path::new("s.yml"), &env());
        assert_eq!(parse(&ghcr).unwrap().write_budget, Some(DEFAULT_GHCR_WRITE_BUDGET), "ghcr.io's budget by default");
        let cases: Vec<(String, Option<u32>, u32)> = vec![
            (format!("{ghcr}jobs: {{ write-budget: 0 }}\n"), None, DEFAULT_AGENTS_PER_JOB),
            (format!("{PLAIN}jobs: {{ write-budget: 600, agents-per-job: 250 }}\n"), Some(600), 250),
            (format!("{ghcr}jobs: {{ agents-per-job: 1 }}\n"), Some(DEFAULT_GHCR_WRITE_BUDGET), 1),
        ];
        for (text, budget, per_job) in cases {
            let s = parse(&text).unwrap();
            assert_eq!((s.write_budget, s.agents_per_job), (budget, per_job), "{text}");
        }
        let s = parse(&ghcr).unwrap();
        assert_eq!(s.clone().with_write_budget(None).write_budget, Some(DEFAULT_GHCR_WRITE_BUDGET), "no flag: the spec's");
        assert_eq!(s.clone().with_write_budget(Some(600)).write_budget, Some(600));
        assert_eq!(s.with_write_budget(Some(0)).write_budget, None, "--write-budget 0: none");
        for (bad, key) in [
            ("agents-per-job: 0", "jobs.agents-per-job"),
            ("agents-per-job: 500001", "jobs.agents-per-job"),
            ("write-budget: -1", "jobs.write-budget"),
        ] {
            let e = parse(&format!("{PLAIN}jobs: {{ {bad} }}\n")).unwrap_err();
            assert!(e.site.key == key && e.site.line == 13 && e.to_string().contains("out of range"), "{bad}: {e}");
        }
    }

    #[test]
    fn each_platform_gets_a_runner_label() {
        let two = PLAIN.replace("registry: reg.example/ns\n", "registry: reg.example/ns\nplatforms: [linux/amd64, linux/arm64]\n");
        let s = parse_spec(&two, Path::new("s.yml"), &env()).unwrap();
        let labels: Vec<&str> = s.runners.values().map(String::as_str).collect();
        assert_eq!(labels, ["ubuntu-latest", "ubuntu-24.04-arm"]);
        let mapped = format!("{two}jobs:\n  runners: {{ linux/arm64: my-arm-runner }}\n");
        let s = parse_spec(&mapped, Path::new("s.yml"), &env()).unwrap();
        assert_eq!(s.runners[&"linux/arm64".parse::<Platform>().unwrap()], "my-arm-runner");
        let stray = format!("{two}jobs:\n  runners: {{ linux/ppc64le: x }}\n");
        let e = parse_spec(&stray, Path::new("s.yml"), &env()).unwrap_err();
        assert!(e.to_string().contains("jobs.runners") && e.to_string().contains("not one of the spec's platforms"), "{e}");
        let riscv = PLAIN.replace("registry: reg.example/ns\n", "registry: reg.example/ns\nplatforms: [linux/riscv64]\n");
        let e = parse_spec(&riscv, Path::new("s.yml"), &env()).unwrap_err();
        assert!(e.to_string().contains("no runner for linux/riscv64") && e.site.key == "platforms", "{e}");
    }

    #[test]
    fn an_instances_file_is_described_never_echoed() {
        let mut env = MemEnv::default();
        env.files.insert(PathBuf::from("/s/Dockerfile"), "FROM scratch AS payload\n".into());
        env.files.insert(PathBuf::from("/s/ids.txt"), "ok-1\nTOKEN=ghs_secret\0HOME=/root\n".into());
        let spec = "registry: r.io/t\nbuilder: { repository: b, version: v1 }\nbases:\n  repository: base\n  from: \"up/{instance}:1\"\n  instances: ids.txt\nagents:\n  repository: a\n  variants: [{ name: x }]\n";
        let e = parse_spec(spec, Path::new("/s/split-build.yml"), &env).unwrap_err();
        assert_eq!((e.site.line, e.site.column), (2, 1), "{e}");
        assert!(!e.to_string().contains("ghs_secret") && !e.to_string().contains("TOKEN"), "{e}");
        assert!(e.to_string().contains("character 6 is `=`"), "{e}");
        env.files.insert(PathBuf::from("/s/ids.txt"), "ok-1\nok-1\n".into());
        let e = parse_spec(spec, Path::new("/s/split-build.yml"), &env).unwrap_err();
        assert!(e.to_string().contains("duplicate instance on this line: it is already listed at line 1"), "{e}");
    }

    #[test]
    fn instances_file_with_comments_and_env_version() {
        let mut e = env();
        e.files.insert(PathBuf::from("ids.txt"), "# header\nx__y-1\n\n  z-2  # trailing\n".into());
        e.vars.insert("V".into(), "1.2.3".into());
        let text = yaml(&["a"], &["v"])
            .replace("instances: [a]", "instances: ids.txt")
            .replace("repository: builder", "repository: builder\n  version: ${V}");
        let s = parse_spec(&text, Path::new("split-build.yml"), &e).unwrap();
        assert_eq!(s.bases.instances, ["x__y-1", "z-2"]);
        assert_eq!(s.builder.version.as_ref().map(Tag::as_str), Some("1.2.3"));
    }

    #[test]
    fn unset_version_falls_back_to_the_hash() {
        let text = yaml(&["a"], &["v"]).replace("repository: builder", "repository: builder\n  version: ${UNSET_FOR_TEST}");
        let s = parse_spec(&text, Path::new("split-build.yml"), &env()).unwrap();
        assert_eq!(s.builder.version, None);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let text = yaml(&["a", "a"], &["v"]);
        let e = parse_spec(&text, Path::new("split-build.yml"), &env()).unwrap_err();
        assert!(e.message.contains("twice") || e.message.contains("duplicate"), "{e}");
        assert_eq!(e.site.line, 9, "{e}");
        assert!(e.site.column > 0);
    }

    /// A minimal valid spec for the YAML tables (no instance filters).
    const PLAIN: &str = "registry: reg.example/ns\nbuilder:\n  repository: builder\nbases:\n  repository: base\n  from: x\n  dockerfile: docker/Dockerfile.base\n  instances: [a]\nagents:\n  repository: agent\n  variants:\n    - name: v\n";

    fn spec_error(text: &str) -> SpecError {
        parse_spec(text, Path::new("s.yml"), &env()).unwrap_err()
    }

    /// Words of the parser's API that mean nothing to someone writing a spec.
    const PARSER_SPEAK: &[&str] = &[
        "Option<",
        "Options",
        "DuplicateKeyPolicy",
        "budget breached",
        "from_str",
        "deserialize",
        "scalar",
        "i64",
        "Nodes",
        "ScalarBytes",
    ];

    /// Bad YAML in, the spec's words out: what was wrong and what would be valid, at a line.
    #[test]
    fn yaml_errors_speak_the_specs_language() {
        let aliases = format!("{}keep: [{}]\n", PLAIN.replace("registry: reg", "registry: &r reg"), vec!["*r"; 200].join(","));
        let cases: Vec<(&str, String, u64, &[&str])> = vec![
            ("duplicate key", format!("{PLAIN}registry: other\n"), 13, &["`registry` is given twice", "keep one"]),
            (
                "duplicate nested key",
                PLAIN.replace("  repository: base\n", "  repository: base\n  repository: b2\n"),
                6,
                &["`repository` is given twice"],
            ),
            ("second document", format!("{PLAIN}---\nregistry: x\n"), 13, &["second YAML document", "one document"]),
            ("second document after ...", format!("{PLAIN}...\n---\n"), 14, &["second YAML document"]),
            ("null", PLAIN.replace("registry: reg.example/ns", "registry:"), 1, &["has no value", "write a string"]),
            ("null in a list", PLAIN.replace("    - name: v\n", "    - name: v\n      cmd: [~]\n"), 13, &["has no value"]),
            ("tagged scalar", PLAIN.replace("registry: reg.example/ns", "registry: !!int 5"), 1, &["YAML tag", "remove the tag, or quote"]),
            ("alias ratio", aliases, 14, &["200 aliases for 1 anchors", "billion laughs"]),
            ("unknown anchor", PLAIN.replace("registry: reg.example/ns", "registry: *nope"), 1, &["names no anchor", "&name"]),
            ("not a number", format!("{PLAIN}jobs: {{max-parallel: abc}}\n"), 13, &["expected a whole number"]),
            ("not a whole number", format!("{PLAIN}jobs: {{max-parallel: 1.5}}\n"), 13, &["expected a whole number"]),
            ("eof in a list", format!("{PLAIN}keep: [a"), 13, &["unclosed bracket"]),
            ("empty file", String::new(), 1, &["the spec is empty", "registry"]),
            ("comments only", "# nothing\n\n".into(), 0, &["the spec is empty"]),
            ("tab indent", PLAIN.replace("  repository: builder", "\trepository: builder"), 3, &["tab", "spaces only"]),
            ("misaligned key", PLAIN.replace("  repository: builder", "  repository: builder\n repository: x"), 4, &["does not line up"]),
            ("bad escape", PLAIN.replace("registry: reg.example/ns", "registry: \"a\\q\""), 1, &["unknown escape", "single quotes"]),
            ("null instance list", PLAIN.replace("instances: [a]", "instances:"), 8, &["no value (null)", "a list of instance ids"]),
        ];
        let mut failures = Vec::new();
        for (name, text, line, says) in &cases {
            let e = spec_error(text);
            let shown = e.to_string();
            let speaks = PARSER_SPEAK.iter().find(|w| shown.contains(*w));
            if (*line != 0 && e.site.line != *line) || !says.iter().all(|w| shown.contains(w)) || speaks.is_some() {
                failures.push(format!("{name}: {shown}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Budget breaches need inputs of tens of megabytes; their errors are built directly.
    #[test]
    fn budget_and_alias_limits_say_what_to_do() {
        use serde_saphyr::budget::BudgetBreach as B;
        let at = serde_saphyr::Location::UNKNOWN;
        let budget = |breach| serde_saphyr::Error::Budget { breach, location: at };
        let cases = [
            (budget(B::ScalarBytes { total_scalar_bytes: 70_000_000 }), "instances.txt"),
            (budget(B::Nodes { nodes: 250_001 }), "instances.txt"),
            (budget(B::Events { events: 1_000_001 }), "instances.txt"),
            (budget(B::InputBytes { input_bytes: 300_000_000 }), "instances.txt"),
            (budget(B::Depth { depth: 65 }), "nested 65 levels"),
            (budget(B::Aliases { aliases: 50_001 }), "billion laughs"),
            (budget(B::Documents { documents: 1025 }), "one document"),
            (budget(B::SequenceUnbalanced), "never started"),
            (
                serde_saphyr::Error::AliasReplayLimitExceeded { total_replayed_events: 9, max_total_replayed_events: 8, location: at },
                "billion laughs",
            ),
            (
                serde_saphyr::Error::AliasExpansionLimitExceeded {
                    anchor_id: 1,
                    expansions: 9,
                    max_expansions_per_anchor: 8,
                    location: at,
                },
                "billion laughs",
            ),
            (serde_saphyr::Error::DuplicateMappingKey { key: None, location: at }, "keep one"),
            (serde_saphyr::Error::UnsupportedTag { tag: "!custom".into(), location: at }, "`!custom` is not supported"),
            (serde_saphyr::Error::InvalidBinaryBase64 { location: at }, "remove the `!!binary` tag"),
            (serde_saphyr::Error::MultipleDocuments { hint: "use from_str_multiple", location: at }, "one document"),
        ];
        for (e, says) in cases {
            let m = yaml_error(&e, "registry: x\n", Path::new("s.yml")).message;
            assert!(m.contains(says), "{e:?}: {m}");
            assert!(!PARSER_SPEAK.iter().any(|w| m.contains(w)), "{e:?} still speaks the parser's language: {m}");
        }
    }

    #[test]
    fn a_spec_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
        let mut bytes = b"registry: x\nbuilder:\n  repository: caf".to_vec();
        bytes.extend_from_slice(&[0xe9, b'\n']);
        let e = spec_text(&bytes, Path::new("s.yml")).unwrap_err();
        assert_eq!((e.site.line, e.site.column), (3, 18), "{e}");
        assert!(e.message.contains("0xE9") && e.message.contains("save the spec as UTF-8"), "{e}");
        // Columns count characters: an `é` before the bad byte is one column.
        let e =
            spec_text("é\u{0}".as_bytes().iter().copied().chain([0xff]).collect::<Vec<_>>().as_slice(), Path::new("s.yml")).unwrap_err();
        assert_eq!((e.site.line, e.site.column), (1, 3), "{e}");
        let e = spec_text(&[0xff, 0xfe, b'r', 0], Path::new("s.yml")).unwrap_err();
        assert!(e.message.contains("UTF-16"), "{e}");
        assert_eq!(spec_text(b"ok", Path::new("s.yml")).unwrap(), "ok");
    }

    #[test]
    fn a_huge_bad_instance_id_is_cut_and_its_length_told() {
        let mut e = env();
        // 50 MB of id, as a file pasted by mistake would give.
        let id = "x y".repeat((50 << 20) / 3);
        e.files.insert(PathBuf::from("ids.txt"), format!("ok-1\n{id}\n"));
        let text = PLAIN.replace("instances: [a]", "instances: ids.txt");
        let err = parse_spec(&text, Path::new("s.yml"), &e).unwrap_err();
        let shown = err.to_string();
        assert!(shown.len() < 1000, "{} bytes of message", shown.len());
        // From a file, the id is described (its length), never echoed.
        assert!(shown.contains(&format!("{} characters long", id.chars().count())) && shown.contains("is not valid"), "{shown}");
        assert!(!shown.contains("x y"), "{shown}");
        assert_eq!((err.site.file.as_path(), err.site.line, err.site.column), (Path::new("ids.txt"), 2, 1));
    }

    #[test]
    fn the_root_as_a_context_is_a_spec_error_at_its_key() {
        let mut e = env();
        e.files.insert(PathBuf::from("/etc/hostname"), "h\n".into());
        for (root, key, line) in [("/", "bases.context", 9), ("/./", "bases.context", 9), ("//", "builder.context", 4)] {
            let text = if key == "bases.context" {
                PLAIN.replace("  instances: [a]\n", &format!("  instances: [a]\n  context: {root}\n"))
            } else {
                PLAIN.replace("  repository: builder\n", &format!("  repository: builder\n  context: {root}\n"))
            };
            let err = parse_spec(&text, Path::new("s.yml"), &e).unwrap_err();
            assert_eq!((err.site.key.as_str(), err.site.line), (key, line), "{err}");
            assert!(err.message.contains("the file system's root"), "{err}");
        }
    }

    #[test]
    fn a_device_pipe_or_directory_is_not_a_regular_file() {
        let mut e = env();
        e.special.insert(PathBuf::from("/dev/zero"));
        for name in ["/dev/zero", "docker"] {
            let text = PLAIN.replace("instances: [a]", &format!("instances: {name}"));
            let err = parse_spec(&text, Path::new("s.yml"), &e).unwrap_err();
            assert!(err.message.contains("is not a regular file"), "{err}");
            assert_eq!((err.site.key.as_str(), err.site.line), ("bases.instances", 8), "{err}");
        }
        let text = PLAIN.replace("instances: [a]", "instances: nope.txt");
        assert!(parse_spec(&text, Path::new("s.yml"), &e).unwrap_err().message.contains("does not exist"));
    }

    /// Every instance's tag is checked, not only the first one's.
    #[test]
    fn a_tag_that_breaks_for_one_instance_names_it() {
        let text = yaml(&["a1", "b2", "xy"], &["v", "w"])
            .replace("  repository: agent\n", "  repository: agent\n  tag: '{instance|replace(\"x\",\"é\")}-{variant}'\n");
        let err = parse_spec(&text, Path::new("split-build.yml"), &env()).unwrap_err();
        assert_eq!((err.site.key.as_str(), err.site.line, err.site.column), ("agents.tag", 12, 8), "{err}");
        assert!(err.message.contains("for instance `xy` and variant `v`") && err.message.contains("`éy-v`"), "{err}");
    }

    #[test]
    fn a_plan_over_the_most_images_is_refused_with_the_numbers() {
        let mut e = env();
        let ids: String = (0..500).map(|i| format!("i{i}\n")).collect();
        e.files.insert(PathBuf::from("ids.txt"), ids);
        let variants: Vec<String> = (0..2000).map(|i| format!("v{i}")).collect();
        let variants: Vec<&str> = variants.iter().map(String::as_str).collect();
        let text = yaml(&["a"], &variants).replace("instances: [a]", "instances: ids.txt");
        let err = parse_spec(&text, Path::new("split-build.yml"), &e).unwrap_err();
        assert_eq!((err.site.key.as_str(), err.site.line), ("agents.variants", 13), "{err}");
        assert!(err.message.contains("500 instances × 2000 variants × 1 platform(s) make 1000500 images"), "{err}");
        assert!(err.message.contains(&MAX_IMAGES.to_string()), "{err}");
        // The benchmark's 100,000 instances × 2 variants × 1 platform still plans.
        assert!(image_count(100_000, 2, 1) <= MAX_IMAGES);
        assert!(image_count(100_000, 2, 2) > MAX_IMAGES);
    }
}
