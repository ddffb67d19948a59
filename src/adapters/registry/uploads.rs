//! Blob uploads: the single-request upload (`POST ...?digest=` with the bytes, 201) where
//! the registry takes it; else a session (`POST`, then `PUT ...&digest=` with the bytes).
//! A host that answers the single request any other way (202 and a session, as
//! distribution does; or an error such as 400, 404, 405 or 415) is remembered, and later
//! uploads to it open a session straight away.

use bytes::Bytes;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, StatusCode};

use super::auth::Scope;
use super::error::{ErrorKind, RegistryError};
use super::transport::{Body, Request, header};
use super::{Registry, Stats};
use crate::core::image_ref::Digest;

/// Answers to the single-request upload after which a session is tried instead.
const NOT_SINGLE: &[StatusCode] = &[
    StatusCode::BAD_REQUEST,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::LENGTH_REQUIRED,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    StatusCode::NOT_IMPLEMENTED,
];

impl Registry {
    /// Uploads `bytes` as a blob of `repository`. The request's own retries cover temporary
    /// failures; the one recovery here is for a session that was lost (the registry took
    /// the PUT but its answer did not arrive, and the repeated PUT finds no session): the
    /// blob is then either there already, or one new session uploads it. So one upload is
    /// at most two sessions of at most [`super::RetryPolicy::attempts`] tries a request.
    pub async fn upload_blob(&self, registry: &str, repository: &str, bytes: Bytes, stats: &Stats) -> Result<Digest, RegistryError> {
        let digest = Digest::sha256_of(&bytes);
        let Err(first) = self.upload_once(registry, repository, &digest, bytes.clone(), stats).await else { return Ok(digest) };
        if !first.upload_lost() {
            return Err(first);
        }
        if self.blob_exists(registry, repository, &digest, stats).await.unwrap_or(false) {
            return Ok(digest);
        }
        tracing::debug!("upload of {digest} to `{repository}` lost its session ({first}): starting a new one");
        self.upload_once(registry, repository, &digest, bytes, stats).await.map(|()| digest)
    }

    /// One upload: the single request where the host takes it, else a session.
    async fn upload_once(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        bytes: Bytes,
        stats: &Stats,
    ) -> Result<(), RegistryError> {
        let doing = format!("starting an upload to `{repository}`");
        let scopes = vec![Scope::push(repository)];
        let base = self.base_url(registry);
        if !self.two_step.lock().is_ok_and(|hosts| hosts.contains(registry)) {
            let url = format!("{base}/v2/{repository}/blobs/uploads/?digest={digest}");
            let req = Request::new(registry, Method::POST, url, scopes.clone(), doing.clone())
                .body(Body::octets(bytes.clone()))
                .expect(NOT_SINGLE);
            let resp = self.send(req, stats).await?;
            match resp.status() {
                StatusCode::CREATED => return Ok(()),
                StatusCode::ACCEPTED => {
                    self.remember_two_step(registry, "opened an upload session");
                    let location = self.upload_location(registry, resp.headers())?;
                    return self.finish_upload(registry, repository, &location, digest, bytes, stats).await;
                }
                s if NOT_SINGLE.contains(&s) => self.remember_two_step(registry, &format!("answered {s}")),
                s => return Err(self.status_error(s, &doing, resp).await),
            }
        }
        let url = format!("{base}/v2/{repository}/blobs/uploads/");
        let resp = self.send(Request::new(registry, Method::POST, url, scopes, doing.clone()).body(Body::empty()), stats).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(resp.status(), &doing, resp).await);
        }
        let location = self.upload_location(registry, resp.headers())?;
        self.finish_upload(registry, repository, &location, digest, bytes, stats).await
    }

    fn remember_two_step(&self, registry: &str, what: &str) {
        if let Ok(mut hosts) = self.two_step.lock()
            && hosts.insert(registry.to_owned())
        {
            tracing::debug!("{registry} {what} for a single-request upload: uploads to it take POST + PUT");
        }
    }

    /// The last request of a session: `PUT <location>&digest=` with the bytes.
    pub(super) async fn finish_upload(
        &self,
        registry: &str,
        repository: &str,
        location: &str,
        digest: &Digest,
        bytes: Bytes,
        stats: &Stats,
    ) -> Result<(), RegistryError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let doing = format!("uploading blob {digest} to `{repository}`");
        let req = Request::new(registry, Method::PUT, url, vec![Scope::push(repository)], doing.clone()).body(Body::octets(bytes));
        let resp = self.send(req, stats).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(resp.status(), &doing, resp).await);
        }
        Ok(())
    }

    /// Where an upload session lives: the `Location` as given, made absolute.
    pub(super) fn upload_location(&self, registry: &str, headers: &HeaderMap) -> Result<String, RegistryError> {
        let loc = header(headers, LOCATION.as_str())
            .ok_or_else(|| RegistryError::new(ErrorKind::Protocol, format!("{registry} opened an upload without a Location")))?;
        Ok(if loc.starts_with("http://") || loc.starts_with("https://") { loc } else { format!("{}{loc}", self.base_url(registry)) })
    }
}
