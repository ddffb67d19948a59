//! Blobs read whole (configs, and layers copied when a mount is refused), checked against
//! their digest, and existence checks.

use bytes::Bytes;
use reqwest::{Method, StatusCode};

use super::auth::Scope;
use super::error::{ErrorKind, RegistryError};
use super::transport::{Request, read_capped};
use super::{CONFIG_LIMIT, Registry, Stats};
use crate::core::image_ref::Digest;

impl Registry {
    /// GET of a config-sized blob (at most [`CONFIG_LIMIT`] bytes), following redirects to
    /// blob storage, checked against its digest.
    pub async fn get_blob(&self, registry: &str, repository: &str, digest: &Digest, stats: &Stats) -> Result<Bytes, RegistryError> {
        self.read_blob(registry, repository, digest, CONFIG_LIMIT, stats).await
    }

    /// GET of a blob of at most `limit` bytes, checked against its digest.
    pub(super) async fn read_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        limit: usize,
        stats: &Stats,
    ) -> Result<Bytes, RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base_url(registry));
        let doing = format!("reading blob {digest} of `{repository}`");
        let resp = self.send(Request::new(registry, Method::GET, url, vec![Scope::pull(repository)], doing.clone()), stats).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp.status(), &doing, resp).await);
        }
        let bytes = read_capped(resp, limit, &doing).await?;
        if Digest::sha256_of(&bytes) != *digest {
            let text = format!("blob {digest} of `{repository}` arrived with other content (digest mismatch)");
            return Err(RegistryError::new(ErrorKind::Protocol, text));
        }
        Ok(bytes)
    }

    /// Whether `repository` has the blob.
    pub async fn blob_exists(&self, registry: &str, repository: &str, digest: &Digest, stats: &Stats) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base_url(registry));
        let doing = format!("checking blob {digest} in `{repository}`");
        let req = Request::new(registry, Method::HEAD, url, vec![Scope::pull(repository)], doing.clone()).expect(&[StatusCode::NOT_FOUND]);
        let resp = self.send(req, stats).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.status_error(s, &doing, resp).await),
        }
    }
}
