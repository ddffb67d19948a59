//! Listing what a registry holds, for retention: every manifest of a repository with its
//! tags, index children and creation time, and the children of kept indexes.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::anyhow;
use futures::{StreamExt as _, stream};

use crate::adapters::registry::{Registry, Stats};
use crate::core::image_config::{Index, is_index};
use crate::core::image_ref::{Digest, ImageRef, RefError};
use crate::core::retention::{Decision, Stored, parse_rfc3339};

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

/// Fills in the children of every kept, tagged index (GitHub lists versions without their
/// manifests), so that a kept multi-platform image keeps its children.
pub(crate) async fn fill_children(
    client: &Registry,
    host: &str,
    stored: &mut [Stored],
    decisions: &[Decision],
    concurrency: usize,
) -> anyhow::Result<()> {
    let kept: BTreeSet<(String, Digest)> = decisions
        .iter()
        .filter(|d| d.keep && !d.stored.tags.is_empty())
        .map(|d| (d.stored.repository.clone(), d.stored.digest.clone()))
        .collect();
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
    let mut map = BTreeMap::new();
    for r in found {
        let (k, v) = r?;
        map.insert(k, v);
    }
    for s in stored.iter_mut() {
        if let Some(c) = map.remove(&(s.repository.clone(), s.digest.clone())) {
            s.children = c;
        }
    }
    Ok(())
}
