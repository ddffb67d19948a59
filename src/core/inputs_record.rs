//! The input record: the named hash inputs a base or builder image was made from, kept in
//! its config as the label `dev.split-build.inputs` (JSON). A later plan reads it from the
//! instance's previous build (`{instance}-latest`) to say why a base must be made again, and
//! to take the upstream digest that build used when the upstream cannot be reached now.
//!
//! Bases also carry the standard `org.opencontainers.image.base.name` and
//! `org.opencontainers.image.base.digest` labels; a base that has those but no record still
//! gives its upstream digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::content_hash::{BASE_SCHEME, BUILDER_SCHEME, InputFile, Recipe, sha256_hex};
use crate::core::image_config::{BASE_DIGEST, BASE_NAME};
use crate::core::image_ref::Digest;
use crate::core::platform::Platform;

/// The label that holds the record.
pub(crate) const INPUTS_LABEL: &str = "dev.split-build.inputs";

/// Up to this many context inputs are recorded one by one; beyond it the record keeps one
/// digest per top-level folder (files at the top stay one by one), so it stays a few KB.
pub(crate) const MAX_LISTED_INPUTS: usize = 256;

/// The named inputs of one image's hash, as the README's hash table names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputsRecord {
    /// The hash scheme and version (`split-build/base/v1`).
    pub scheme: String,
    /// Hex sha256 of the Dockerfile.
    pub dockerfile: String,
    /// The build target, when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The build args after templating (without `BASE_IMAGE`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// Context input path (relative to the context, `/`-separated) to its hex sha256; in the
    /// compact form a key ending in `/` is a top-level folder and its value the digest of
    /// every input below it.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// The platforms, sorted.
    pub platforms: Vec<String>,
    /// The rendered upstream reference (bases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The upstream digest that went into the hash (bases), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_digest: Option<Digest>,
    /// The builder version when it was set (`builder.version` or `--builder-version`), not
    /// the hash of the inputs above (builders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl InputsRecord {
    /// The record of a base: the same values `base_hash` is computed from.
    pub fn of_base(
        recipe: &Recipe,
        build_args: &BTreeMap<String, String>,
        platforms: &[Platform],
        from: &str,
        from_digest: Option<&Digest>,
    ) -> InputsRecord {
        InputsRecord {
            from: Some(from.to_owned()),
            from_digest: from_digest.cloned(),
            ..InputsRecord::of_recipe(BASE_SCHEME, recipe, build_args, platforms)
        }
    }

    /// The record of a builder: the values `builder_hash` is computed from, and the version
    /// that stands in for that hash when one is set.
    pub fn of_builder(
        recipe: &Recipe,
        build_args: &BTreeMap<String, String>,
        platforms: &[Platform],
        version: Option<&str>,
    ) -> InputsRecord {
        InputsRecord { version: version.map(str::to_owned), ..InputsRecord::of_recipe(BUILDER_SCHEME, recipe, build_args, platforms) }
    }

    fn of_recipe(scheme: &str, recipe: &Recipe, build_args: &BTreeMap<String, String>, platforms: &[Platform]) -> InputsRecord {
        let mut platforms: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        platforms.sort();
        platforms.dedup();
        let listed: BTreeMap<String, String> = recipe.inputs.iter().map(|f| (f.path.clone(), f.sha256.clone())).collect();
        let context = if listed.len() > MAX_LISTED_INPUTS { compact(&listed) } else { listed };
        InputsRecord {
            scheme: scheme.to_owned(),
            dockerfile: recipe.dockerfile_sha256.clone(),
            target: recipe.target.clone(),
            build_args: build_args.clone(),
            context,
            platforms,
            from: None,
            from_digest: None,
            version: None,
        }
    }

    /// The label value: compact JSON.
    pub fn to_label(&self) -> String {
        // A struct of strings and maps of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether the context is in the compact form (a digest per top-level folder).
    pub fn is_compact(&self) -> bool {
        self.context.keys().any(|k| k.ends_with('/'))
    }
}

/// Context inputs with one entry per top-level folder (`folder/`, the digest of its
/// inputs' `path\0sha256` lines) and the top-level files as they are. Already compact
/// entries stay.
pub(crate) fn compact(context: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut folders: BTreeMap<String, Vec<InputFile>> = BTreeMap::new();
    for (path, sha) in context {
        match path.split_once('/') {
            Some((top, rest)) if !rest.is_empty() => {
                folders.entry(format!("{top}/")).or_default().push(InputFile { path: path.clone(), sha256: sha.clone() })
            }
            _ => {
                out.insert(path.clone(), sha.clone());
            }
        }
    }
    for (folder, mut files) in folders {
        files.sort();
        let lines: String = files.iter().map(|f| format!("{}\0{}\n", f.path, f.sha256)).collect();
        out.insert(folder, sha256_hex(lines.as_bytes()));
    }
    out
}

/// What an image's config says it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// The input record.
    Record(Box<InputsRecord>),
    /// No record, but the standard base labels: the upstream and its digest.
    Upstream {
        /// `org.opencontainers.image.base.name`.
        name: String,
        /// `org.opencontainers.image.base.digest`.
        digest: Digest,
    },
    /// Nothing split-build can read: the reason.
    NoRecord(String),
}

impl Previous {
    /// Reads an image config (`{"config": {"Labels": ...}}`).
    pub fn of_config(config: &Value) -> Previous {
        let labels = config["config"]["Labels"].as_object();
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        if let Some(text) = get(INPUTS_LABEL) {
            return match serde_json::from_str::<InputsRecord>(text) {
                Ok(r) => Previous::Record(Box::new(r)),
                Err(e) => Previous::NoRecord(format!("its `{INPUTS_LABEL}` label is unreadable: {e}")),
            };
        }
        if let (Some(name), Some(digest)) = (get(BASE_NAME), get(BASE_DIGEST).and_then(|d| d.parse().ok())) {
            return Previous::Upstream { name: name.to_owned(), digest };
        }
        Previous::NoRecord(format!("it carries no `{INPUTS_LABEL}` label (built before split-build recorded inputs)"))
    }

    /// The upstream digest the build used for `from`, when it says and the reference is the
    /// same.
    pub fn digest_for(&self, from: &str) -> Option<&Digest> {
        match self {
            Previous::Record(r) if r.from.as_deref() == Some(from) => r.from_digest.as_ref(),
            Previous::Upstream { name, digest } if name == from => Some(digest),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recipe(n: usize) -> Recipe {
        Recipe {
            dockerfile_sha256: sha256_hex(b"FROM x"),
            target: None,
            inputs: (0..n).map(|i| InputFile { path: format!("d{}/f{i}", i % 3), sha256: sha256_hex(&[i as u8]) }).collect(),
        }
    }

    fn amd64() -> Vec<Platform> {
        vec!["linux/amd64".parse().unwrap()]
    }

    #[test]
    fn a_record_round_trips_through_its_label() {
        let d = Digest::sha256_of(b"up");
        let args = BTreeMap::from([("PY".to_owned(), "3.11".to_owned())]);
        let r = InputsRecord::of_base(&recipe(2), &args, &amd64(), "up:1", Some(&d));
        let config = json!({"config": {"Labels": {INPUTS_LABEL: r.to_label()}}});
        assert_eq!(Previous::of_config(&config), Previous::Record(Box::new(r.clone())));
        assert_eq!(Previous::of_config(&config).digest_for("up:1"), Some(&d));
        assert_eq!(Previous::of_config(&config).digest_for("up:2"), None, "another reference: its digest says nothing");
        assert!(!r.is_compact());
    }

    #[test]
    fn a_builder_record_keeps_a_set_version_and_old_records_read_without_one() {
        let r = InputsRecord::of_builder(&recipe(1), &BTreeMap::new(), &amd64(), Some("v2"));
        assert_eq!(r.version.as_deref(), Some("v2"));
        let config = json!({"config": {"Labels": {INPUTS_LABEL: r.to_label()}}});
        assert_eq!(Previous::of_config(&config), Previous::Record(Box::new(r.clone())));
        let hashed = InputsRecord::of_builder(&recipe(1), &BTreeMap::new(), &amd64(), None);
        assert!(!hashed.to_label().contains("version"), "a hashed version is not recorded: {}", hashed.to_label());
        // A record written before versions were recorded reads as a hashed one.
        let old = json!({"config": {"Labels": {INPUTS_LABEL: hashed.to_label()}}});
        assert_eq!(Previous::of_config(&old), Previous::Record(Box::new(hashed)));
    }

    #[test]
    fn many_inputs_are_kept_per_top_level_folder() {
        let r = InputsRecord::of_builder(&recipe(MAX_LISTED_INPUTS + 1), &BTreeMap::new(), &amd64(), None);
        assert!(r.is_compact());
        assert_eq!(r.context.keys().collect::<Vec<_>>(), ["d0/", "d1/", "d2/"]);
        assert!(r.to_label().len() < 1024, "{}", r.to_label().len());
        let listed: BTreeMap<String, String> =
            recipe(MAX_LISTED_INPUTS + 1).inputs.iter().map(|f| (f.path.clone(), f.sha256.clone())).collect();
        assert_eq!(compact(&listed), r.context, "compacting a listed record gives the compact one");
        assert_eq!(compact(&r.context), r.context, "compact is idempotent");
    }

    #[test]
    fn old_images_say_what_they_can() {
        let d = Digest::sha256_of(b"up");
        let labels = json!({"config": {"Labels": {BASE_NAME: "up:1", BASE_DIGEST: d.to_string()}}});
        assert_eq!(Previous::of_config(&labels).digest_for("up:1"), Some(&d));
        let bare = json!({"config": {"Labels": {BASE_NAME: "up:1"}}});
        assert!(matches!(Previous::of_config(&bare), Previous::NoRecord(_)));
        assert!(matches!(Previous::of_config(&json!({})), Previous::NoRecord(_)));
        let broken = json!({"config": {"Labels": {INPUTS_LABEL: "{"}}});
        assert!(matches!(Previous::of_config(&broken), Previous::NoRecord(why) if why.contains("unreadable")));
    }
}
