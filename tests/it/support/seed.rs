//! Images written straight to a registry through the crate's own client, many at once: a
//! layer of one file, a config with the given labels, a manifest under each tag. For tests
//! that need hundreds of images (upstreams, previous bases) faster than Docker makes them.

use bytes::Bytes;
use serde_json::{Value, json};
use split_build::adapters::registry;
use split_build::core::image_config::{DOCKER_CONFIG, DOCKER_MANIFEST};
use split_build::core::image_ref::ImageRef;

/// Pushes an image of one uncompressed layer holding `file`, its config carrying `labels`
/// (a JSON object), to `host` under `image`'s tag and each of `more_tags` (`image`'s own host
/// may be another one with the same storage, a front's). Returns the manifest's digest.
pub async fn push_image(client: &registry::Registry, host: &str, image: &str, file: &str, labels: &Value, more_tags: &[String]) -> String {
    let s = registry::Stats::default();
    let mut image: ImageRef = image.parse().unwrap();
    image.registry = host.to_owned();
    let mut b = tar::Builder::new(Vec::new());
    crate::support::append_file(&mut b, file, file.as_bytes(), 0o644);
    let layer = Bytes::from(b.into_inner().unwrap());
    let layer_digest = client.upload_blob(host, &image.repository, layer.clone(), &s).await.unwrap();
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
        "history": [{"created_by": "seeded by a test"}]
    });
    let config = Bytes::from(serde_json::to_vec(&config).unwrap());
    let config_digest = client.upload_blob(host, &image.repository, config.clone(), &s).await.unwrap();
    let manifest = json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": config_digest.to_string()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "size": layer.len(), "digest": layer_digest.to_string()}]
    });
    let manifest = Bytes::from(serde_json::to_vec(&manifest).unwrap());
    let tag = image.tag.as_ref().unwrap().to_string();
    for t in std::iter::once(&tag).chain(more_tags) {
        client.put_manifest(&image, t, DOCKER_MANIFEST, manifest.clone(), &s).await.unwrap();
    }
    split_build::core::image_ref::Digest::sha256_of(&manifest).to_string()
}

/// A client for seeding: no credentials, unpaced, `concurrency` requests at once.
pub fn client(concurrency: usize) -> registry::Registry {
    registry::Registry::new(split_build::adapters::credentials::Credentials::default(), &[], concurrency).unwrap().with_write_rate(0)
}
