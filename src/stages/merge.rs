//! Merging legs: with several platforms each platform's image is pushed under its own leg
//! tag; once every platform's leg is at the registry, the index over them goes under the
//! real tag (and, for a base, under `{instance}-latest` too). Each leg tries after its push,
//! so the index appears as soon as the last leg lands, whichever runner that is; until then
//! the tag has no index at all, never one with a platform missing.

use anyhow::anyhow;
use bytes::Bytes;

use crate::adapters::registry::{FetchedManifest, Registry, Stats};
use crate::core::image_config::{Index, is_index};
use crate::core::image_ref::ImageRef;
use crate::core::legs::{LegManifest, index_over, leg};
use crate::core::platform::Platform;

/// What a merge found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Merged {
    /// The index is written.
    Written,
    /// These platforms have no leg yet: no index.
    Waiting(Vec<Platform>),
}

/// Writes the index of `image` over its legs when every one of `platforms` has one, under
/// `image`'s tag and `also`'s. Idempotent: the same legs give the same bytes, so two legs
/// finishing together write the same index.
pub(crate) async fn merge_legs(
    client: &Registry,
    image: &ImageRef,
    platforms: &[Platform],
    also: Option<&ImageRef>,
    stats: &Stats,
) -> anyhow::Result<Merged> {
    let mut legs = Vec::with_capacity(platforms.len());
    let mut waiting = Vec::new();
    for p in platforms {
        let leg_ref = leg(image, p);
        match client.get_manifest(&leg_ref, stats).await? {
            Some(top) => legs.push(leg_manifest(&leg_ref, top, p)?),
            None => waiting.push(p.clone()),
        }
    }
    if !waiting.is_empty() {
        return Ok(Merged::Waiting(waiting));
    }
    let (index, media_type) = index_over(platforms, &legs).map_err(|e| anyhow!("writing the index of `{image}`: {e}"))?;
    let bytes = Bytes::from(serde_json::to_vec(&index)?);
    // Two writes of one manifest at the same moment can break each other on a registry with
    // filesystem storage (Debian's 2.8 answers DIGEST_INVALID / MANIFEST_BLOB_UNKNOWN): this
    // process writes one index at a time, and a write refused that way (the registry
    // error's class says so) is written again, at most `RETRIES` times. The request's own
    // retries (5xx, dropped connections) are the client's; this loop only recovers from
    // that refusal.
    let _one_at_a_time = WRITING.lock().await;
    for target in std::iter::once(image).chain(also) {
        let tag = target.reference();
        let mut tries = 0u32;
        loop {
            match client.put_manifest(target, &tag, media_type, bytes.clone(), stats).await {
                Ok(_) => break,
                Err(e) if tries < RETRIES && e.blob_race() => {
                    tries += 1;
                    let wait = std::time::Duration::from_millis((200u64 << tries) + rand::random::<u64>() % 200);
                    tracing::debug!("`{target}`: {e}; writing its index again in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Merged::Written)
}

/// Held while an index is written: one at a time in a process (they are a few small writes).
static WRITING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How often an index write refused for a blob race is written again.
const RETRIES: u32 = 3;

/// One leg's manifest: what was pushed, or, when the daemon pushed an index (an image store
/// that adds attestations does), its entry for `platform`.
fn leg_manifest(leg_ref: &ImageRef, top: FetchedManifest, platform: &Platform) -> anyhow::Result<LegManifest> {
    if !is_index(&top.media_type) {
        let size = u64::try_from(top.bytes.len()).unwrap_or(u64::MAX);
        return Ok(LegManifest { platform: platform.clone(), media_type: top.media_type, digest: top.digest, size });
    }
    let index: Index = serde_json::from_slice(&top.bytes).map_err(|e| anyhow!("reading the index of `{leg_ref}`: {e}"))?;
    let child = index.child(platform).ok_or_else(|| anyhow!("`{leg_ref}` holds no {platform} image"))?;
    Ok(LegManifest { platform: platform.clone(), media_type: child.media_type.clone(), digest: child.digest.clone(), size: child.size })
}
