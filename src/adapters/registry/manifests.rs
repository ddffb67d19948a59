//! Manifests: HEAD (does it exist, its digest), GET (verified against its digest), the
//! platform's manifest behind an index, PUT, and DELETE by digest.

use bytes::Bytes;
use reqwest::header::{ACCEPT, HeaderMap};
use reqwest::{Method, StatusCode};

use super::auth::Scope;
use super::error::{ErrorKind, RegistryError};
use super::transport::{Body, Request, header, read_capped};
use super::{MANIFEST_LIMIT, Registry, Stats};
use crate::core::image_config::{Index, Manifest, is_index};
use crate::core::image_ref::{Digest, ImageRef};
use crate::core::platform::Platform;

/// The four manifest media types, in the order a registry should prefer them.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

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

fn protocol(text: String) -> RegistryError {
    RegistryError::new(ErrorKind::Protocol, text)
}

impl Registry {
    /// HEAD of a manifest by tag or digest; `None` when it does not exist. Falls back to
    /// GET when the registry refuses HEAD.
    pub async fn head_manifest(&self, image: &ImageRef, stats: &Stats) -> Result<Option<ManifestHead>, RegistryError> {
        let doing = format!("checking `{image}`");
        let expected = &[StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED];
        let resp = self.send(self.manifest_request(image, Method::HEAD, doing.clone()).expect(expected), stats).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::METHOD_NOT_ALLOWED => {
                Ok(self.get_manifest(image, stats).await?.map(|m| ManifestHead { digest: Some(m.digest), media_type: m.media_type }))
            }
            s if s.is_success() => Ok(Some(ManifestHead {
                digest: header(resp.headers(), "docker-content-digest").and_then(|d| d.parse().ok()),
                media_type: header(resp.headers(), "content-type").unwrap_or_default(),
            })),
            s => Err(self.status_error(s, &doing, resp).await),
        }
    }

    /// GET of a manifest; `None` when it does not exist.
    pub async fn get_manifest(&self, image: &ImageRef, stats: &Stats) -> Result<Option<FetchedManifest>, RegistryError> {
        let doing = format!("reading the manifest of `{image}`");
        let resp = self.send(self.manifest_request(image, Method::GET, doing.clone()).expect(&[StatusCode::NOT_FOUND]), stats).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let digest_header = header(resp.headers(), "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
                let content_type = header(resp.headers(), "content-type");
                let bytes = read_capped(resp, MANIFEST_LIMIT, &doing).await?;
                let digest = verified_manifest_digest(image, &bytes, digest_header.as_ref())?;
                let media_type = content_type
                    .filter(|t| MANIFEST_TYPES.contains(&t.as_str()))
                    .or_else(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("mediaType")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| MANIFEST_TYPES[1].to_owned());
                Ok(Some(FetchedManifest { digest, media_type, bytes }))
            }
            s => Err(self.status_error(s, &doing, resp).await),
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
    ) -> Result<Option<PlatformManifest>, RegistryError> {
        if !is_index(&top.media_type) {
            let manifest = serde_json::from_slice(&top.bytes).map_err(|e| protocol(format!("reading the manifest of `{image}`: {e}")))?;
            return Ok(Some(PlatformManifest { manifest, media_type: top.media_type.clone() }));
        }
        let index: Index = serde_json::from_slice(&top.bytes).map_err(|e| protocol(format!("reading the index of `{image}`: {e}")))?;
        let child = match platform {
            Some(p) => index.child(p),
            None => index.manifests.first(),
        };
        let Some(child) = child else { return Ok(None) };
        let Some(m) = self.get_manifest(&image.with_digest(child.digest.clone()), stats).await? else { return Ok(None) };
        let manifest =
            serde_json::from_slice(&m.bytes).map_err(|e| protocol(format!("reading the manifest {} of `{image}`: {e}", child.digest)))?;
        Ok(Some(PlatformManifest { manifest, media_type: m.media_type }))
    }

    /// A HEAD or GET of a manifest, accepting every manifest type.
    fn manifest_request<'a>(&self, image: &'a ImageRef, method: Method, doing: String) -> Request<'a> {
        let url = format!("{}/v2/{}/manifests/{}", self.base_url(&image.registry), image.repository, image.reference());
        Request::new(&image.registry, method, url, vec![Scope::pull(&image.repository)], doing).headers(accept_manifests())
    }

    /// PUTs a manifest under `reference` (a tag or its digest). Returns its digest.
    pub async fn put_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        media_type: &'static str,
        bytes: Bytes,
        stats: &Stats,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::sha256_of(&bytes);
        let url = format!("{}/v2/{}/manifests/{reference}", self.base_url(&image.registry), image.repository);
        let doing = format!("writing the manifest of `{image}`");
        let req = Request::new(&image.registry, Method::PUT, url, vec![Scope::push(&image.repository)], doing.clone())
            .body(Body::typed(bytes, media_type));
        let resp = self.send(req, stats).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(resp.status(), &doing, resp).await);
        }
        Ok(digest)
    }

    /// Deletes a manifest by digest (which removes every tag that points at it).
    pub async fn delete_manifest(&self, registry: &str, repository: &str, digest: &Digest, stats: &Stats) -> Result<(), RegistryError> {
        let url = format!("{}/v2/{repository}/manifests/{digest}", self.base_url(registry));
        let doing = format!("deleting {digest} from `{repository}`");
        let expected = &[StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED];
        let req = Request::new(registry, Method::DELETE, url, vec![Scope::delete(repository)], doing.clone()).expect(expected);
        let resp = self.send(req, stats).await?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            StatusCode::METHOD_NOT_ALLOWED => Err(RegistryError::new(
                ErrorKind::Status,
                format!("the registry does not allow deletes (`storage.delete.enabled` is off) for `{repository}`"),
            )
            .at_status(StatusCode::METHOD_NOT_ALLOWED)),
            s => Err(self.status_error(s, &doing, resp).await),
        }
    }
}

fn accept_manifests() -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = MANIFEST_TYPES.join(", ").parse() {
        h.insert(ACCEPT, v);
    }
    h
}

/// The digest of a manifest's bytes, which must match the digest it was asked for and the
/// one the registry names (`Docker-Content-Digest` is never trusted alone).
fn verified_manifest_digest(image: &ImageRef, bytes: &[u8], header: Option<&Digest>) -> Result<Digest, RegistryError> {
    let computed = Digest::sha256_of(bytes);
    if let Some(want) = image.digest.as_ref().filter(|d| **d != computed) {
        return Err(protocol(format!(
            "the manifest {want} of `{}` arrived with other content (its bytes hash to {computed}): refusing it",
            image.repository
        )));
    }
    if let Some(said) = header.filter(|d| **d != computed) {
        return Err(protocol(format!("`{image}`: the registry names its manifest {said}, but the bytes hash to {computed}: refusing it")));
    }
    Ok(computed)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
