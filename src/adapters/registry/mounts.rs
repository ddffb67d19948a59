//! Cross-repository mounts: a blob of one repository made present in another of the same
//! registry without its bytes; when the registry opens an upload instead (202), the bytes
//! are copied through memory.

use reqwest::{Method, StatusCode};

use super::auth::Scope;
use super::error::RegistryError;
use super::transport::{Body, Request};
use super::{COPY_LIMIT, Registry, Stats};
use crate::core::image_ref::Digest;

impl Registry {
    /// Makes `digest` present in `to` by mounting it from `from` (same registry); when the
    /// registry opens an upload instead (202), copies the bytes. Returns the bytes uploaded.
    pub async fn mount_blob(&self, registry: &str, from: &str, to: &str, digest: &Digest, stats: &Stats) -> Result<u64, RegistryError> {
        let url = format!("{}/v2/{to}/blobs/uploads/?mount={digest}&from={from}", self.base_url(registry));
        let doing = format!("mounting blob {digest} from `{from}` into `{to}`");
        let req = Request::new(registry, Method::POST, url, vec![Scope::push(to), Scope::pull(from)], doing.clone()).body(Body::empty());
        let resp = self.send(req, stats).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(0),
            StatusCode::ACCEPTED => {
                tracing::debug!("registry refused to mount {digest} from `{from}` into `{to}`: uploading it");
                let location = self.upload_location(registry, resp.headers())?;
                let bytes = self.read_blob(registry, from, digest, COPY_LIMIT, stats).await?;
                let n = bytes.len() as u64;
                // The session the registry opened takes the bytes; should it be lost, a
                // session of our own does.
                if self.finish_upload(registry, to, &location, digest, bytes.clone(), stats).await.is_err() {
                    self.upload_blob(registry, to, bytes, stats).await?;
                }
                Ok(n)
            }
            s => Err(self.status_error(s, &doing, resp).await),
        }
    }
}
