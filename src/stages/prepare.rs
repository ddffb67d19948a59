//! Preparing: the spec loaded and validated, the builder version and the base recipe hashed
//! from local files, and a job's `--items`, `--platform` and `--method` checked against it.

use std::collections::{BTreeSet, HashSet};

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
    /// The builder's input record (what its image carries and a plan compares with its
    /// previous build), or why its inputs could not be read (a set version needs none).
    pub(crate) builder_inputs: Result<InputsRecord, String>,
    /// What a plan made from this checkout records it was made from.
    pub(crate) fingerprint: Fingerprint,
}

/// Loads the spec and hashes its local inputs.
pub(crate) fn prepare(common: &Common) -> anyhow::Result<Prepared> {
    let spec = load_spec(&common.spec)?;
    let b = &spec.builder;
    let set_version = common.builder_version.as_ref().or(b.version.as_ref());
    let builder_recipe = recipe(&b.context, &b.dockerfile, Some(&b.target), &b.inputs).context("hashing the builder's inputs");
    // A set version needs no readable inputs (their record is then left out); the hash does.
    let (builder_version, builder_recipe) = match set_version {
        Some(v) => (v.clone(), builder_recipe.map_err(|e| format!("{e:#}"))),
        None => {
            let r = builder_recipe?;
            let hash = builder_hash(&r, &b.build_args, &spec.platforms);
            (hash.parse().with_context(|| format!("builder hash `{hash}` is not a tag"))?, Ok(r))
        }
    };
    let builder_inputs = builder_recipe.map(|r| InputsRecord::of_builder(&r, &b.build_args, &spec.platforms, set_version.map(Tag::as_str)));
    let base_recipe = recipe(&spec.bases.context, &spec.bases.dockerfile, spec.bases.target.as_deref(), &spec.bases.inputs)
        .context("hashing the bases' inputs")?;
    // The spec was just read whole; reading it again for its digest costs nothing next to it.
    let spec_bytes = std::fs::read(&common.spec).with_context(|| format!("reading `{}`", common.spec.display()))?;
    let fingerprint = Fingerprint::of(&spec_bytes, &base_recipe, builder_version.as_str(), env!("CARGO_PKG_VERSION"));
    Ok(Prepared { spec, builder_version, base_recipe, builder_inputs, fingerprint })
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
