//! Preparing: the spec loaded and validated, the builder version and the base recipe hashed
//! from local files, and a job's `--items`, `--platform` and `--method` checked against it.

use std::collections::{BTreeSet, HashSet};
use std::sync::OnceLock;

use anyhow::Context as _;

use crate::adapters::workspace::{load_spec, recipe};
use crate::cli::{Common, MethodArg};
use crate::core::content_hash::{Recipe, builder_hash};
use crate::core::fingerprint::Fingerprint;
use crate::core::image_ref::Tag;
use crate::core::inputs_record::InputsRecord;
use crate::core::platform::{Platform, PlatformError};
use crate::core::spec::{Method, Spec, quoted};
use crate::outcome::UsageError;

/// The spec with everything hashed that does not need the registry.
pub(crate) struct Prepared {
    /// The validated spec.
    pub(crate) spec: Spec,
    /// The builder version in effect (flag, spec, or hash of the builder's inputs).
    pub(crate) builder_version: Tag,
    /// The base Dockerfile, target and context inputs.
    pub(crate) base_recipe: Recipe,
    /// Whether the builder version was set (flag or spec) rather than hashed.
    version_set: bool,
    /// The builder's input record, made when first asked for (see
    /// [`Prepared::builder_inputs`]); at once when the version is their hash.
    builder_inputs: OnceLock<Result<InputsRecord, String>>,
    /// What a plan made from this checkout records it was made from.
    pub(crate) fingerprint: Fingerprint,
}

/// Loads the spec and hashes its local inputs.
pub(crate) fn prepare(common: &Common) -> anyhow::Result<Prepared> {
    let spec = load_spec(&common.spec)?;
    let b = &spec.builder;
    let set_version = common.builder_version.as_ref().or(b.version.as_ref());
    let version_set = set_version.is_some();
    // A set version needs no readable inputs, and their record waits until asked for; the
    // hash needs them now.
    let builder_inputs = OnceLock::new();
    let builder_version = match set_version {
        Some(v) => v.clone(),
        None => {
            let r = recipe(&b.context, &b.dockerfile, Some(&b.target), &b.inputs).context("hashing the builder's inputs")?;
            let hash = builder_hash(&r, &b.build_args, &spec.platforms);
            let _ = builder_inputs.set(Ok(InputsRecord::of_builder(&r, &b.build_args, &spec.platforms, None)));
            hash.parse().with_context(|| format!("builder hash `{hash}` is not a tag"))?
        }
    };
    let base_recipe = recipe(&spec.bases.context, &spec.bases.dockerfile, spec.bases.target.as_deref(), &spec.bases.inputs)
        .context("hashing the bases' inputs")?;
    // The spec was just read whole; reading it again for its digest costs nothing next to it.
    let spec_bytes = std::fs::read(&common.spec).with_context(|| format!("reading `{}`", common.spec.display()))?;
    let fingerprint = Fingerprint::of(&spec_bytes, &base_recipe, builder_version.as_str(), env!("CARGO_PKG_VERSION"));
    Ok(Prepared { spec, builder_version, base_recipe, version_set, builder_inputs, fingerprint })
}

/// What a job works on: its instances (`--items`; `None`: every one) and its platform
/// (`--platform`; `None`: every one).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pick {
    /// The instances, when the job was given some.
    pub(crate) items: Option<BTreeSet<String>>,
    /// The platform, when the job was given one.
    pub(crate) platform: Option<Platform>,
}

impl Pick {
    /// These instances, on every platform.
    pub(crate) fn instances(items: BTreeSet<String>) -> Pick {
        Pick { items: Some(items), platform: None }
    }

    /// Whether the job makes the image of `instance` on `platform`.
    pub(crate) fn wants(&self, instance: &str, platform: &Platform) -> bool {
        self.wants_instance(instance) && self.wants_platform(platform)
    }

    /// Whether the job works on `platform`.
    pub(crate) fn wants_platform(&self, platform: &Platform) -> bool {
        self.platform.as_ref().is_none_or(|p| p == platform)
    }

    /// Whether the job makes images of `instance` (on any platform).
    pub(crate) fn wants_instance(&self, instance: &str) -> bool {
        self.items.as_ref().is_none_or(|s| s.contains(instance))
    }
}

impl Prepared {
    /// The builder's input record (what its image carries, and what a plan compares with its
    /// previous build), or why its inputs could not be read. With a set version the inputs
    /// are hashed on the first call only: a job that never asks (an agents job, prune) never
    /// reads the builder's context.
    pub(crate) fn builder_inputs(&self) -> Result<&InputsRecord, &str> {
        self.builder_inputs
            .get_or_init(|| {
                let b = &self.spec.builder;
                let version = self.version_set.then(|| self.builder_version.as_str());
                recipe(&b.context, &b.dockerfile, Some(&b.target), &b.inputs)
                    .map(|r| InputsRecord::of_builder(&r, &b.build_args, &self.spec.platforms, version))
                    .map_err(|e| format!("hashing the builder's inputs: {e:#}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// A job's pick from its `--items` and `--platform`, checked against the spec.
    pub(crate) fn pick(&self, items: Option<&str>, platform: Option<&str>) -> anyhow::Result<Pick> {
        Ok(Pick { items: self.items(items)?, platform: self.platform(platform)? })
    }

    /// Parses `--items` against the spec's instances: unknown ids are a usage error.
    fn items(&self, items: Option<&str>) -> anyhow::Result<Option<BTreeSet<String>>> {
        let Some(text) = items.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
        let known: HashSet<&str> = self.spec.bases.instances.iter().map(String::as_str).collect();
        let wanted: BTreeSet<String> = crate::core::list_words(text).map(str::to_owned).collect();
        let unknown: Vec<&String> = wanted.iter().filter(|w| !known.contains(w.as_str())).collect();
        if !unknown.is_empty() {
            return Err(UsageError(format!(
                "--items names {} not in the spec's instances: {}",
                if unknown.len() == 1 { "an instance" } else { "instances" },
                unknown.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
        Ok(Some(wanted))
    }

    /// Parses `--platform` against the spec's platforms.
    fn platform(&self, platform: Option<&str>) -> anyhow::Result<Option<Platform>> {
        let Some(text) = platform.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
        let p: Platform = text.parse().map_err(|e: PlatformError| UsageError(format!("--platform: {e}")))?;
        if !self.spec.platforms.contains(&p) {
            return Err(UsageError(format!("--platform {p} is not one of the spec's platforms")).into());
        }
        Ok(Some(p))
    }

    /// The method in effect: `--method`, else the spec's `agents.method`.
    pub(crate) fn method(&self, arg: Option<MethodArg>) -> Method {
        match arg {
            Some(MethodArg::Append) => Method::Append,
            Some(MethodArg::Dockerfile) => Method::Dockerfile,
            None => self.spec.agents.method,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common_for(dir: &std::path::Path, spec: &str) -> Common {
        std::fs::write(dir.join("split-build.yml"), spec).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM scratch AS payload\n").unwrap();
        Common { spec: dir.join("split-build.yml"), builder_version: None, report: None, summary: None }
    }

    const SPEC: &str = "registry: r.example/t\nbuilder: { repository: b, context: agent, dockerfile: agent/Dockerfile }\nbases:\n  repository: base\n  from: \"up/{instance}:1\"\n  instances: [a]\nagents:\n  repository: a\n  variants: [{ name: v }]\n";

    /// With a set version the builder's context is read only when its record is asked for
    /// (an agents job or prune never asks); with a hashed version it was read for the hash
    /// and is not read again.
    #[test]
    fn the_builder_inputs_are_read_when_asked_for_or_for_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("agent")).unwrap();
        std::fs::write(d.join("agent/Dockerfile"), "FROM scratch AS payload\n").unwrap();
        let hashed = prepare(&common_for(d, SPEC)).unwrap();
        assert!(hashed.builder_inputs.get().is_some(), "made with the hash");
        assert_eq!(hashed.builder_inputs().unwrap().version, None);

        let set = prepare(&common_for(d, &SPEC.replace("repository: b,", "repository: b, version: v2,"))).unwrap();
        assert!(set.builder_inputs.get().is_none(), "not read until asked for");
        assert_eq!(set.builder_inputs().unwrap().version.as_deref(), Some("v2"));
        assert_eq!(set.builder_inputs().unwrap().dockerfile, hashed.builder_inputs().unwrap().dockerfile);

        // Asked for after the builder's Dockerfile went away (it is read then, not at
        // start-up): the reason, for the plan's `why` to give.
        let late = prepare(&common_for(d, &SPEC.replace("repository: b,", "repository: b, version: v2,"))).unwrap();
        std::fs::remove_file(d.join("agent/Dockerfile")).unwrap();
        let e = late.builder_inputs().unwrap_err();
        assert!(e.starts_with("hashing the builder's inputs: reading `") && e.contains("agent/Dockerfile"), "{e}");
    }
}
