//! Manifests, indexes and image configs as the registry stores them, and the one mutation
//! split-build makes: an agent image is its base plus the payload's layers plus a new
//! config, in the base's media-type family.
//!
//! Configs stay `serde_json::Value` (in key order) so nothing of a base's config that we do
//! not model is lost; manifests keep unknown fields in `extra` for the same reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::core::image_ref::Digest;
use crate::core::platform::Platform;
use crate::core::spec::Variant;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The annotation (and label) naming the base an agent was made on.
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
/// The annotation (and label) giving the base manifest's digest.
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// The annotation (and label) naming the builder image the payload came from.
pub const BUILDER: &str = "dev.split-build.builder";

/// Docker and OCI media types are never mixed in one manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `application/vnd.docker.*`.
    Docker,
    /// `application/vnd.oci.*`.
    Oci,
}

impl Family {
    /// The family of a manifest or index media type.
    pub fn of(media_type: &str) -> Option<Family> {
        match media_type {
            DOCKER_MANIFEST | DOCKER_LIST => Some(Family::Docker),
            OCI_MANIFEST | OCI_INDEX => Some(Family::Oci),
            _ => None,
        }
    }
    /// This family's manifest media type.
    pub fn manifest(self) -> &'static str {
        match self {
            Family::Docker => DOCKER_MANIFEST,
            Family::Oci => OCI_MANIFEST,
        }
    }
    /// This family's index media type.
    pub fn index(self) -> &'static str {
        match self {
            Family::Docker => DOCKER_LIST,
            Family::Oci => OCI_INDEX,
        }
    }
    /// This family's config media type.
    pub fn config(self) -> &'static str {
        match self {
            Family::Docker => DOCKER_CONFIG,
            Family::Oci => OCI_CONFIG,
        }
    }
    /// The media type of a layer in this family (the bytes are the same; only the name
    /// differs), or an error for a layer the family cannot name.
    pub fn layer(self, media_type: &str) -> Result<String, String> {
        const PAIRS: [(&str, &str); 4] = [
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
            ("application/vnd.docker.image.rootfs.diff.tar", "application/vnd.oci.image.layer.v1.tar"),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        ];
        for (docker, oci) in PAIRS {
            if media_type == docker || media_type == oci {
                return Ok(match self {
                    Family::Docker => docker,
                    Family::Oci => oci,
                }
                .to_owned());
            }
        }
        match self {
            Family::Oci if media_type.starts_with("application/vnd.oci.image.layer.") => Ok(media_type.to_owned()),
            _ => Err(format!("a payload layer of type `{media_type}` cannot go into a {self:?} image: build the payload with gzip layers")),
        }
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// The platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Fields we do not model, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformSpec {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PlatformSpec {
    /// Whether this entry is for `p` (a missing variant matches any).
    pub fn matches(&self, p: &Platform) -> bool {
        self.os == p.os && self.architecture == p.architecture && (p.variant.is_none() || self.variant == p.variant)
    }
    /// The spec form of a platform.
    pub fn of(p: &Platform) -> PlatformSpec {
        PlatformSpec { architecture: p.architecture.clone(), os: p.os.clone(), variant: p.variant.clone(), extra: Map::new() }
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest's media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations (OCI only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The index's media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One entry per platform.
    pub manifests: Vec<Descriptor>,
    /// Annotations (OCI only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Whether a media type names an index.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

impl Index {
    /// The entry for `platform`.
    pub fn child(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| d.platform.as_ref().is_some_and(|p| p.matches(platform)))
    }
}

/// One payload layer: how the registry names it and the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadLayer {
    /// The layer descriptor in the builder image.
    pub descriptor: Descriptor,
    /// Its `rootfs.diff_ids` entry.
    pub diff_id: String,
}

/// The payload: the builder image's layers, reused byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// Layers in order.
    pub layers: Vec<PayloadLayer>,
    /// Their `history` entries (non-empty-layer ones, one per layer).
    pub history: Vec<Value>,
}

/// Reads the payload out of the builder image's manifest and config.
pub fn payload_of(manifest: &Manifest, config: &Value, builder: &str) -> Result<Payload, String> {
    let diff_ids: Vec<&str> =
        config["rootfs"]["diff_ids"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(format!(
            "the builder image `{builder}` has {} layers but {} diff_ids in its config",
            manifest.layers.len(),
            diff_ids.len()
        ));
    }
    if manifest.layers.is_empty() {
        return Err(format!("the builder image `{builder}` has no layers: its payload stage is empty"));
    }
    let layers: Vec<PayloadLayer> =
        manifest.layers.iter().zip(diff_ids).map(|(d, id)| PayloadLayer { descriptor: d.clone(), diff_id: id.to_owned() }).collect();
    let mut history: Vec<Value> = config["history"]
        .as_array()
        .map(|h| h.iter().filter(|e| !e["empty_layer"].as_bool().unwrap_or(false)).cloned().collect())
        .unwrap_or_default();
    if history.len() != layers.len() {
        history = layers.iter().map(|_| json!({ "created_by": format!("split-build: payload layer from {builder}") })).collect();
    }
    Ok(Payload { layers, history })
}

/// What an agent image says about where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// The base image reference.
    pub base_name: &'a str,
    /// The base manifest's digest.
    pub base_digest: &'a Digest,
    /// The builder image reference.
    pub builder: &'a str,
}

/// The agent's config: the base config with the payload's diff_ids and history appended
/// and the variant's settings applied. Pure and deterministic (no clock): the same base,
/// payload and variant always give the same bytes, so a rerun finds its image unchanged.
pub fn append_layers(base: &Value, payload: &Payload, variant: &Variant, from: Provenance<'_>) -> Value {
    let mut config = base.clone();
    if !config.is_object() {
        config = json!({});
    }
    let diff_ids = config["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default();
    let mut ids = diff_ids;
    ids.extend(payload.layers.iter().map(|l| Value::String(l.diff_id.clone())));
    config["rootfs"] = json!({ "type": "layers", "diff_ids": ids });

    let mut history = config["history"].as_array().cloned().unwrap_or_default();
    history.extend(payload.history.iter().cloned());
    history.push(json!({ "created_by": format!("split-build: variant {}", variant.name), "empty_layer": true }));
    config["history"] = Value::Array(history);

    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    let c = &mut config["config"];
    if let Some(ep) = &variant.entrypoint {
        c["Entrypoint"] = json!(ep);
        // As in a Dockerfile: a new ENTRYPOINT drops the base's CMD unless one is given.
        if variant.cmd.is_none() {
            c["Cmd"] = Value::Null;
        }
    }
    if let Some(cmd) = &variant.cmd {
        c["Cmd"] = json!(cmd);
    }
    if let Some(w) = &variant.workdir {
        c["WorkingDir"] = json!(w);
    }
    if !variant.env.is_empty() {
        let mut env: Vec<String> =
            c["Env"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default();
        for (k, v) in &variant.env {
            let entry = format!("{k}={v}");
            match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(name, _)| name) == k) {
                Some(slot) => *slot = entry,
                None => env.push(entry),
            }
        }
        c["Env"] = json!(env);
    }
    let mut labels: Map<String, Value> = c["Labels"].as_object().cloned().unwrap_or_default();
    for (k, v) in &variant.labels {
        labels.insert(k.clone(), json!(v));
    }
    for (k, v) in provenance(from) {
        labels.insert(k, json!(v));
    }
    c["Labels"] = Value::Object(labels);
    config
}

fn provenance(from: Provenance<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (BASE_NAME.to_owned(), from.base_name.to_owned()),
        (BASE_DIGEST.to_owned(), from.base_digest.to_string()),
        (BUILDER.to_owned(), from.builder.to_owned()),
    ])
}

/// The agent's manifest: the base's layers, then the payload's (renamed into the base's
/// family), the new config, and (OCI) the provenance annotations.
pub fn agent_manifest(
    base: &Manifest,
    base_media_type: &str,
    payload: &Payload,
    config: &[u8],
    from: Provenance<'_>,
) -> Result<Manifest, String> {
    let family = Family::of(base_media_type).ok_or_else(|| format!("the base manifest has an unknown media type `{base_media_type}`"))?;
    let mut layers = Vec::with_capacity(base.layers.len() + payload.layers.len());
    for l in &base.layers {
        layers.push(Descriptor { media_type: family.layer(&l.media_type).unwrap_or_else(|_| l.media_type.clone()), ..l.clone() });
    }
    for l in &payload.layers {
        layers.push(Descriptor { media_type: family.layer(&l.descriptor.media_type)?, ..l.descriptor.clone() });
    }
    let config = Descriptor {
        media_type: family.config().to_owned(),
        digest: Digest::sha256_of(config),
        size: config.len() as u64,
        platform: None,
        annotations: None,
        extra: Map::new(),
    };
    let annotations = match family {
        Family::Oci => {
            let mut a = base.annotations.clone().unwrap_or_default();
            a.extend(provenance(from));
            Some(a)
        }
        // Docker schema 2 has no annotations: the config labels carry the provenance.
        Family::Docker => None,
    };
    Ok(Manifest { schema_version: 2, media_type: Some(family.manifest().to_owned()), config, layers, annotations, extra: Map::new() })
}

/// An index over per-platform agent manifests.
pub fn agent_index(family: Family, children: &[(Platform, Digest, u64)], from: Provenance<'_>) -> Index {
    Index {
        schema_version: 2,
        media_type: Some(family.index().to_owned()),
        manifests: children
            .iter()
            .map(|(p, d, size)| Descriptor {
                media_type: family.manifest().to_owned(),
                digest: d.clone(),
                size: *size,
                platform: Some(PlatformSpec::of(p)),
                annotations: None,
                extra: Map::new(),
            })
            .collect(),
        annotations: (family == Family::Oci).then(|| provenance(from)),
        extra: Map::new(),
    }
}

/// Where an image says it came from: manifest (or index) annotations first, else the
/// config labels. Returns (base name, builder).
pub fn provenance_of(annotations: Option<&BTreeMap<String, String>>, config: Option<&Value>) -> (Option<String>, Option<String>) {
    if let Some(a) = annotations
        && a.contains_key(BASE_NAME)
    {
        return (a.get(BASE_NAME).cloned(), a.get(BUILDER).cloned());
    }
    let labels = config.and_then(|c| c["config"]["Labels"].as_object());
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str).map(str::to_owned);
    (get(BASE_NAME), get(BUILDER))
}

/// The thin Dockerfile of one agent (pure): the payload over the base, the variant's
/// settings, and the labels the planner reads back (`org.opencontainers.image.base.name`,
/// `dev.split-build.builder`).
pub fn thin_dockerfile(base: &str, builder: &str, v: &Variant) -> String {
    // JSON strings are valid Dockerfile quoted strings; a String always serialises.
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""));
    let mut out = format!("FROM {base}\nCOPY --from={builder} / /\n");
    for (k, val) in &v.env {
        out.push_str(&format!("ENV {k}={}\n", q(val)));
    }
    let mut labels: Vec<(String, String)> = v.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.push((BASE_NAME.into(), base.into()));
    labels.push((BUILDER.into(), builder.into()));
    for (k, val) in labels {
        out.push_str(&format!("LABEL {}={}\n", q(&k), q(&val)));
    }
    if let Some(w) = &v.workdir {
        out.push_str(&format!("WORKDIR {w}\n"));
    }
    if let Some(ep) = &v.entrypoint {
        out.push_str(&format!("ENTRYPOINT {}\n", serde_json::to_string(ep).unwrap_or_default()));
    }
    if let Some(cmd) = &v.cmd {
        out.push_str(&format!("CMD {}\n", serde_json::to_string(cmd).unwrap_or_default()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(media_type: &str, seed: &str, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::sha256_of(seed.as_bytes()),
            size,
            platform: None,
            annotations: None,
            extra: Map::new(),
        }
    }

    fn base_manifest(family: Family) -> Manifest {
        let layer = match family {
            Family::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Family::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
        };
        Manifest {
            schema_version: 2,
            media_type: Some(family.manifest().into()),
            config: d(family.config(), "base-config", 100),
            layers: vec![d(layer, "base-layer", 1000)],
            annotations: None,
            extra: Map::new(),
        }
    }

    fn base_config() -> Value {
        json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/bin", "MODE=base"], "Cmd": ["sh"], "Labels": {"keep": "me"}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aaaa"]},
            "history": [{"created_by": "base"}],
            "unmodelled": {"kept": true}
        })
    }

    fn payload() -> Payload {
        let m = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: d(OCI_CONFIG, "builder-config", 10),
            layers: vec![d("application/vnd.oci.image.layer.v1.tar+gzip", "payload", 50)],
            annotations: None,
            extra: Map::new(),
        };
        let config = json!({"rootfs": {"type": "layers", "diff_ids": ["sha256:bbbb"]}, "history": [{"created_by": "COPY /agent"}, {"created_by": "ENV", "empty_layer": true}]});
        payload_of(&m, &config, "reg/builder:1").unwrap()
    }

    fn variant() -> Variant {
        Variant {
            name: "full".into(),
            entrypoint: Some(vec!["/agent/run".into()]),
            cmd: None,
            env: BTreeMap::from([("MODE".into(), "agent".into()), ("NEW".into(), "1".into())]),
            labels: BTreeMap::from([("title".into(), "agent".into())]),
            workdir: Some("/work".into()),
        }
    }

    fn from<'a>(digest: &'a Digest) -> Provenance<'a> {
        Provenance { base_name: "reg/base:i-1", base_digest: digest, builder: "reg/builder:1" }
    }

    #[test]
    fn config_appends_and_applies_the_variant() {
        let digest = Digest::sha256_of(b"base-manifest");
        let c = append_layers(&base_config(), &payload(), &variant(), from(&digest));
        insta::assert_json_snapshot!("agent_config", c);
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:aaaa", "sha256:bbbb"]));
        let non_empty = c["history"].as_array().unwrap().iter().filter(|h| !h["empty_layer"].as_bool().unwrap_or(false)).count();
        assert_eq!(non_empty, 2, "one non-empty history entry per diff_id");
        assert_eq!(c["config"]["Env"], json!(["PATH=/usr/bin", "MODE=agent", "NEW=1"]));
        assert_eq!(c["config"]["Cmd"], Value::Null, "a new entrypoint drops the base's cmd");
        assert_eq!(c["config"]["Labels"][BASE_NAME], "reg/base:i-1");
        assert_eq!(c["config"]["Labels"]["keep"], "me");
        assert_eq!(c["unmodelled"]["kept"], true);
        assert_eq!(c, append_layers(&base_config(), &payload(), &variant(), from(&digest)), "deterministic");
    }

    #[test]
    fn manifest_keeps_the_base_family() {
        let digest = Digest::sha256_of(b"base-manifest");
        for family in [Family::Docker, Family::Oci] {
            let m = agent_manifest(&base_manifest(family), family.manifest(), &payload(), b"{}", from(&digest)).unwrap();
            assert_eq!(m.media_type.as_deref(), Some(family.manifest()));
            assert_eq!(m.config.media_type, family.config());
            assert_eq!(m.layers.len(), 2);
            for l in &m.layers {
                assert_eq!(Family::of(&m.media_type.clone().unwrap()), Some(family));
                let docker = l.media_type.starts_with("application/vnd.docker.");
                assert_eq!(docker, family == Family::Docker, "{family:?}: {}", l.media_type);
            }
            assert_eq!(m.layers[1].digest, Digest::sha256_of(b"payload"), "payload bytes reused: same digest");
            assert_eq!(m.annotations.is_some(), family == Family::Oci);
            if family == Family::Oci {
                insta::assert_json_snapshot!("agent_manifest_oci", m);
            }
        }
    }

    #[test]
    fn zstd_payload_cannot_go_into_a_docker_image() {
        assert!(Family::Docker.layer("application/vnd.oci.image.layer.v1.tar+zstd").is_err());
        assert!(Family::Oci.layer("application/vnd.oci.image.layer.v1.tar+zstd").is_ok());
    }

    #[test]
    fn index_children_by_platform() {
        let amd: Platform = "linux/amd64".parse().unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        let digest = Digest::sha256_of(b"x");
        let idx = agent_index(
            Family::Oci,
            &[(amd.clone(), Digest::sha256_of(b"a"), 1), (arm.clone(), Digest::sha256_of(b"b"), 2)],
            from(&digest),
        );
        assert_eq!(idx.child(&arm).unwrap().digest, Digest::sha256_of(b"b"));
        let text = serde_json::to_string(&idx).unwrap();
        let back: Index = serde_json::from_str(&text).unwrap();
        assert_eq!(back, idx);
        assert!(back.child(&"linux/s390x".parse().unwrap()).is_none());
    }

    #[test]
    fn provenance_from_annotations_or_labels() {
        let a = BTreeMap::from([(BASE_NAME.to_owned(), "b".to_owned()), (BUILDER.to_owned(), "x".to_owned())]);
        assert_eq!(provenance_of(Some(&a), None), (Some("b".into()), Some("x".into())));
        let c = json!({"config": {"Labels": {BASE_NAME: "c"}}});
        assert_eq!(provenance_of(None, Some(&c)), (Some("c".into()), None));
        assert_eq!(provenance_of(None, None), (None, None));
    }

    #[test]
    fn thin_dockerfile_spells_the_variant() {
        let v = Variant {
            name: "x".into(),
            entrypoint: Some(vec!["/a b".into()]),
            cmd: Some(vec!["c".into()]),
            env: BTreeMap::from([("K".into(), "v w".into())]),
            labels: BTreeMap::new(),
            workdir: Some("/w".into()),
        };
        let d = thin_dockerfile("r/base:1", "r/builder:2", &v);
        insta::assert_snapshot!(d, @r#"
        FROM r/base:1
        COPY --from=r/builder:2 / /
        ENV K="v w"
        LABEL "org.opencontainers.image.base.name"="r/base:1"
        LABEL "dev.split-build.builder"="r/builder:2"
        WORKDIR /w
        ENTRYPOINT ["/a b"]
        CMD ["c"]
        "#);
    }
}
