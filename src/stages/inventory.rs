//! Listing what a registry holds, for retention: every manifest of a repository with its
//! tags, index children and creation time, and the children of kept indexes; and the walk
//! of a GitHub package, oldest page first, deciding and deleting page by page.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::anyhow;
use futures::{StreamExt as _, stream};

use crate::adapters::github_packages::{CallError, GithubPackages, Page};
use crate::adapters::registry::{Registry, Stats};
use crate::core::delete_budget::MAX_IN_FLIGHT;
use crate::core::image_config::{Index, is_index};
use crate::core::image_ref::{Digest, ImageRef, RefError};
use crate::core::prune_progress::{Ended, Progress, remaining};
use crate::core::prune_walk::Walk;
use crate::core::report::PruneAction;
use crate::core::retention::{Decision, Keeper, Stored, parse_rfc3339};
use crate::stages::report_stream::ReportStream;

/// A kept manifest and the children its index names.
type Children = ((String, Digest), Vec<Digest>);

/// Every manifest of a registry repository: its tags grouped by digest, index children,
/// and the config's creation time.
pub(crate) async fn list_registry(client: &Registry, host: &str, repo: &str, concurrency: usize) -> anyhow::Result<Vec<Stored>> {
    let stats = Stats::default();
    let tags = client.list_tags(host, repo, 1000, &stats).await?;
    let fetched: Vec<anyhow::Result<(String, Stored)>> = stream::iter(tags)
        .map(|tag| async move {
            let image = ImageRef::new(host, repo, tag.parse().map_err(|e: RefError| anyhow!(e.0))?);
            let stats = Stats::default();
            let m = client.get_manifest(&image, &stats).await?.ok_or_else(|| anyhow!("`{image}` vanished while listing"))?;
            let (children, config_digest) = if is_index(&m.media_type) {
                let index: Index = serde_json::from_slice(&m.bytes)?;
                (index.manifests.iter().map(|d| d.digest.clone()).collect(), None)
            } else {
                let v: serde_json::Value = serde_json::from_slice(&m.bytes)?;
                (vec![], v["config"]["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()))
            };
            let created = match config_digest {
                Some(d) => {
                    let c = client.get_blob(host, repo, &d, &stats).await?;
                    let v: serde_json::Value = serde_json::from_slice(&c).unwrap_or_default();
                    v["created"].as_str().and_then(parse_rfc3339)
                }
                None => None,
            };
            let size = m.bytes.len() as u64;
            Ok((
                tag,
                Stored {
                    repository: repo.to_owned(),
                    digest: m.digest,
                    tags: vec![],
                    created,
                    size: Some(size),
                    children,
                    version_id: None,
                },
            ))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut by_digest: BTreeMap<Digest, Stored> = BTreeMap::new();
    for r in fetched {
        let (tag, s) = r?;
        by_digest.entry(s.digest.clone()).or_insert(s).tags.push(tag);
    }
    Ok(by_digest
        .into_values()
        .map(|mut s| {
            s.tags.sort();
            s
        })
        .collect())
}

/// The children of each index among `kept` (repository, digest) as the registry holds
/// them (GitHub lists versions without their manifests); a manifest that is not an index,
/// or is gone, has none.
pub(crate) async fn children_of(
    client: &Registry,
    host: &str,
    kept: BTreeSet<(String, Digest)>,
    concurrency: usize,
) -> anyhow::Result<BTreeMap<(String, Digest), Vec<Digest>>> {
    let found: Vec<anyhow::Result<Children>> = stream::iter(kept)
        .map(|(repo, digest)| async move {
            let image = ImageRef { registry: host.to_owned(), repository: repo.clone(), tag: None, digest: Some(digest.clone()) };
            let m = client.get_manifest(&image, &Stats::default()).await?;
            let children = match m {
                Some(m) if is_index(&m.media_type) => {
                    serde_json::from_slice::<Index>(&m.bytes)?.manifests.into_iter().map(|d| d.digest).collect()
                }
                _ => vec![],
            };
            Ok(((repo, digest), children))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    found.into_iter().collect()
}

/// Every version of a (small) GitHub package, newest first: the builder's, whose tags order
/// the builder versions.
pub(crate) async fn list_package(gh: &mut GithubPackages, name: &str, repository: &str) -> Result<Vec<Stored>, CallError> {
    let Some(mut page) = gh.first_page(name, repository).await? else { return Ok(vec![]) };
    let mut out = std::mem::take(&mut page.versions);
    while let Some(next) = page.next.take() {
        page = gh.page(&next, name, repository).await?;
        out.append(&mut page.versions);
    }
    Ok(out)
}

/// Whether `keeper` keeps any version of a package, looking from its newest page (`first`)
/// toward older ones until one is kept (usually on the first page). The brake: a run that
/// would delete every version of a package refuses.
pub(crate) async fn keeps_any(
    gh: &GithubPackages,
    first: &Page,
    keeper: &Keeper<'_>,
    name: &str,
    repository: &str,
) -> Result<bool, CallError> {
    if first.versions.iter().any(|s| keeper.keeps(s).is_some()) {
        return Ok(true);
    }
    let mut next = first.next.clone();
    while let Some(url) = next {
        let page = gh.page(&url, name, repository).await?;
        if page.versions.iter().any(|s| keeper.keeps(s).is_some()) {
            return Ok(true);
        }
        next = page.next;
    }
    Ok(false)
}

/// One prune run over GitHub packages: walks each package from its oldest page toward its
/// newest, deciding and deleting page by page, within `--max-delete` and the run's budgets,
/// writing every settled manifest to the report and the progress.
pub(crate) struct PackageRun<'a> {
    /// The packages' client (and its rate budget).
    pub gh: &'a GithubPackages,
    /// The registry the manifests of kept indexes are read from.
    pub client: &'a Registry,
    /// The registry host.
    pub host: &'a str,
    /// The retention rules.
    pub keeper: &'a Keeper<'a>,
    /// Delete for real.
    pub apply: bool,
    /// Registry reads at once.
    pub concurrency: usize,
    /// Deletions this run may still make (`--max-delete`).
    pub cap: Option<u64>,
    /// Set when the run stops before walking everything.
    pub ended: Option<Ended>,
    /// What the run did.
    pub progress: &'a mut Progress,
    /// The report being written.
    pub report: &'a mut ReportStream,
}

impl PackageRun<'_> {
    /// Walks package `name` (repository path `repository`) whose newest page is `first`;
    /// returns about how many deletions it has left.
    pub(crate) async fn walk(&mut self, name: &str, repository: &str, first: Page) -> anyhow::Result<u64> {
        let total = first.total_estimate();
        let (walked0, doomed0, deleted0) = (self.progress.walked, self.doomed(), self.progress.deleted);
        let remaining =
            |run: &PackageRun<'_>| remaining(total, run.progress.walked - walked0, run.doomed() - doomed0, run.progress.deleted - deleted0);
        if self.ended.is_some() {
            return Ok(total);
        }
        let mut walk = Walk::default();
        let mut seen_kept: BTreeSet<Digest> = BTreeSet::new();
        let mut page = match first.last.clone() {
            Some(last) => match self.gh.page(&last, name, repository).await {
                Ok(p) => p,
                Err(CallError::Stopped(s)) => {
                    self.ended = Some(Ended::Limit(s));
                    return Ok(total);
                }
                Err(CallError::Failed(e)) => return Err(e),
            },
            None => first,
        };
        loop {
            // GitHub lists newest first: a page's oldest version is its last.
            let decisions: Vec<Decision> = page.versions.iter().rev().map(|s| self.keeper.decide(s)).collect();
            let kept: BTreeSet<(String, Digest)> = decisions
                .iter()
                .filter(|d| d.keep && !d.stored.tags.is_empty() && seen_kept.insert(d.stored.digest.clone()))
                .map(|d| (d.stored.repository.clone(), d.stored.digest.clone()))
                .collect();
            if !kept.is_empty() && (walk.holding() || decisions.iter().any(|d| !d.keep)) {
                let children = children_of(self.client, self.host, kept, self.concurrency).await?;
                walk.protect(children.into_values().flatten());
            }
            let settled = walk.page(decisions);
            self.settle(name, settled).await?;
            if self.ended.is_some() {
                break;
            }
            let Some(prev) = page.prev.take() else {
                let rest = walk.finish();
                self.settle(name, rest).await?;
                return Ok(remaining(self));
            };
            page = match self.gh.page(&prev, name, repository).await {
                Ok(p) => p,
                Err(CallError::Stopped(s)) => {
                    self.ended = Some(Ended::Limit(s));
                    break;
                }
                Err(CallError::Failed(e)) => return Err(e),
            };
        }
        // Stopped: what the walk holds waits for the next run.
        for d in walk.finish() {
            if d.keep {
                self.record(&d, PruneAction::Kept, None)?;
            } else {
                self.leave(&d)?;
            }
        }
        Ok(remaining(self))
    }

    fn doomed(&self) -> u64 {
        self.progress.deleted + self.progress.failed + self.progress.by_repository.values().filter_map(|a| a.get(LEFT)).sum::<u64>()
    }

    fn record(&mut self, d: &Decision, action: PruneAction, error: Option<&str>) -> anyhow::Result<()> {
        self.progress.count(d, action, error);
        self.report.line(d, action.as_str(), error)
    }

    fn leave(&mut self, d: &Decision) -> anyhow::Result<()> {
        self.progress.left(d);
        self.report.line(d, LEFT, None)
    }

    /// Acts on settled decisions: records the kept, deletes the rest (oldest first, within
    /// the cap), or leaves them for the next run once the run has stopped.
    async fn settle(&mut self, name: &str, settled: Vec<Decision>) -> anyhow::Result<()> {
        let mut go = Vec::new();
        for d in settled {
            if d.keep {
                self.record(&d, PruneAction::Kept, None)?;
            } else if !self.apply {
                self.record(&d, PruneAction::WouldDelete, None)?;
            } else if self.ended.is_some() || self.cap == Some(0) {
                self.ended.get_or_insert(Ended::MaxDelete);
                self.leave(&d)?;
            } else {
                if let Some(c) = &mut self.cap {
                    *c -= 1;
                }
                go.push(d);
            }
        }
        let gh = self.gh;
        let done: Vec<(Decision, Result<(), CallError>)> = stream::iter(go)
            .map(|d| async move {
                let r = match d.stored.version_id {
                    Some(id) => gh.delete(name, id).await,
                    None => Err(CallError::Failed(anyhow!("no GitHub version id for `{}`", d.stored.digest))),
                };
                (d, r)
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
        for (d, r) in done {
            match r {
                Ok(()) => self.record(&d, PruneAction::Deleted, None)?,
                Err(CallError::Stopped(s)) => {
                    self.ended = Some(Ended::Limit(s));
                    if let Some(c) = &mut self.cap {
                        *c += 1;
                    }
                    self.leave(&d)?;
                }
                Err(CallError::Failed(e)) => self.record(&d, PruneAction::Failed, Some(&format!("{e:#}")))?,
            }
        }
        if self.cap == Some(0) && self.apply {
            self.ended.get_or_insert(Ended::MaxDelete);
        }
        Ok(())
    }
}

/// The action of a deletion a stopped run leaves for the next one.
pub(crate) const LEFT: &str = "left-for-next-run";
