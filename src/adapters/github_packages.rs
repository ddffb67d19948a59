//! GitHub's packages API through octocrab: the versions of a ghcr.io container package
//! (for an organization, or a user when the owner is not one), and deleting versions.
//! Listing follows `Link` pagination and keeps only ids, digests, tags and dates, so a
//! package of 130,000+ versions fits in a few tens of MB.

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use futures::{StreamExt as _, stream};
use octocrab::Octocrab;
use octocrab::models::packages::{PackageType, PackageVersion};
use octocrab::service::middleware::retry::{NoOpRateLimitMetrics, RetryConfig};

use crate::core::image_ref::Digest;
use crate::core::retention::Stored;

/// Whose packages: an organization's or a user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// `/orgs/{owner}/packages/...`.
    Org,
    /// `/users/{owner}/packages/...`.
    User,
}

/// One owner's container packages.
#[derive(Clone)]
pub(crate) struct GithubPackages {
    crab: Arc<Octocrab>,
    owner: String,
    kind: Owner,
}

impl GithubPackages {
    /// A client for `owner`'s packages with `token`; `base_uri` points elsewhere than
    /// api.github.com (tests, GitHub Enterprise). Rate limits are honoured by waiting for
    /// `x-ratelimit-reset` / `retry-after` (octocrab's rate-limit retry policy).
    pub(crate) fn new(owner: &str, token: &str, base_uri: Option<&str>) -> anyhow::Result<GithubPackages> {
        crate::adapters::tls::init();
        let mut b = Octocrab::builder().personal_token(token.to_owned()).add_retry_config(RetryConfig::HandleRateLimits {
            metrics: Arc::new(NoOpRateLimitMetrics),
            max_retries: 5,
            min_wait_seconds: 1,
            retry_on_forbidden: false,
        });
        if let Some(uri) = base_uri {
            b = b.base_uri(uri).with_context(|| format!("GitHub API address `{uri}`"))?;
        }
        let crab = b.build().context("building the GitHub client")?;
        Ok(GithubPackages { crab: Arc::new(crab), owner: owner.to_owned(), kind: Owner::Org })
    }

    /// Every version of the container package `name` (the repository path below
    /// `ghcr.io/{owner}/`). Tries the organization, then the user, on 404.
    pub(crate) async fn list_versions(&mut self, name: &str, repository: &str) -> anyhow::Result<Vec<Stored>> {
        let first = match self.first_page(name).await {
            Err(e) if self.kind == Owner::Org && status_of(&e) == Some(404) => {
                self.kind = Owner::User;
                let r = self.first_page(name).await;
                if r.as_ref().err().and_then(status_of) == Some(404) {
                    // Neither an organization's nor a user's package: nothing stored yet.
                    self.kind = Owner::Org;
                    tracing::info!("package `{name}` of `{}` does not exist: nothing to prune there", self.owner);
                    return Ok(vec![]);
                }
                r
            }
            other => other,
        }
        .map_err(|e| explain(e, &format!("listing the versions of package `{name}` of `{}`", self.owner)))?;
        let mut out = Vec::new();
        let mut page = first;
        loop {
            out.extend(page.items.iter().map(|v| stored(v, repository)));
            let Some(next) = page.next.clone() else { break };
            page = self
                .crab
                .get_page::<PackageVersion>(&Some(next))
                .await
                .map_err(|e| explain(e, &format!("listing the versions of package `{name}`")))?
                .ok_or_else(|| anyhow!("GitHub ended the version list early"))?;
        }
        Ok(out)
    }

    async fn first_page(&self, name: &str) -> octocrab::Result<octocrab::Page<PackageVersion>> {
        let p = self.crab.packages();
        let h = match self.kind {
            Owner::Org => p.org(self.owner.clone()),
            Owner::User => p.user(self.owner.clone()),
        };
        h.list_versions(PackageType::Container, name).per_page(100u8).send().await
    }

    /// Deletes versions by id, `concurrency` at a time; returns each id's result.
    pub(crate) async fn delete_versions(&self, name: &str, ids: &[u64], concurrency: usize) -> Vec<(u64, anyhow::Result<()>)> {
        stream::iter(ids.iter().copied())
            .map(|id| async move {
                let p = self.crab.packages();
                let h = match self.kind {
                    Owner::Org => p.org(self.owner.clone()),
                    Owner::User => p.user(self.owner.clone()),
                };
                let r = h
                    .delete_version(PackageType::Container, name, id)
                    .await
                    .map_err(|e| explain(e, &format!("deleting version {id} of `{name}`")));
                (id, r)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await
    }
}

fn stored(v: &PackageVersion, repository: &str) -> Stored {
    Stored {
        repository: repository.to_owned(),
        digest: v.name.parse().unwrap_or_else(|_| Digest::sha256_of(v.name.as_bytes())),
        tags: v.metadata.as_ref().and_then(|m| m.container.as_ref()).map(|c| c.tags.clone()).unwrap_or_default(),
        created: Some(v.created_at.timestamp()),
        size: None,
        children: vec![],
        version_id: Some(*v.id),
    }
}

fn status_of(e: &octocrab::Error) -> Option<u16> {
    match e {
        octocrab::Error::GitHub { source, .. } => Some(source.status_code.as_u16()),
        _ => None,
    }
}

/// A GitHub error with what to do about it: a 403 is usually a token without the
/// packages scopes.
fn explain(e: octocrab::Error, doing: &str) -> anyhow::Error {
    match &e {
        octocrab::Error::GitHub { source, .. } if source.status_code.as_u16() == 403 || source.status_code.as_u16() == 401 => anyhow!(
            "{doing}: GitHub refused ({}: {}): the token needs the `read:packages` scope to list and `delete:packages` to delete (a workflow's GITHUB_TOKEN needs `permissions: packages: write` and admin access to the package)",
            source.status_code,
            source.message
        ),
        octocrab::Error::GitHub { source, .. } => anyhow!("{doing}: GitHub answered {}: {}", source.status_code, source.message),
        _ => anyhow!("{doing}: {e}"),
    }
}

/// Commit SHAs of `owner/repo@branch`, newest first, at most `limit`.
pub(crate) async fn commits(token: Option<&str>, base_uri: Option<&str>, spec: &str, limit: usize) -> anyhow::Result<Vec<String>> {
    let (repo, branch) = spec.split_once('@').unwrap_or((spec, "main"));
    let (owner, name) =
        repo.split_once('/').ok_or_else(|| crate::outcome::UsageError(format!("--versions-from `{spec}`: use owner/repo@branch")))?;
    crate::adapters::tls::init();
    let mut b = Octocrab::builder();
    if let Some(t) = token {
        b = b.personal_token(t.to_owned());
    }
    if let Some(uri) = base_uri {
        b = b.base_uri(uri)?;
    }
    let crab = b.build()?;
    let mut page = crab
        .repos(owner, name)
        .list_commits()
        .branch(branch)
        .per_page(100)
        .send()
        .await
        .map_err(|e| explain(e, &format!("listing commits of {spec}")))?;
    let mut out = Vec::new();
    loop {
        out.extend(page.items.iter().map(|c| c.sha.clone()));
        if out.len() >= limit {
            break;
        }
        let Some(next) = page.next.clone() else { break };
        match crab.get_page(&Some(next)).await.map_err(|e| explain(e, &format!("listing commits of {spec}")))? {
            Some(p) => page = p,
            None => break,
        }
    }
    out.truncate(limit);
    Ok(out)
}
