//! Appending at the registry: for each missing agent, the base's manifest and config are
//! read, the base's and the payload's layers are mounted into the agent repository, and a
//! new config and manifest are put on top. No layer is pulled or recompressed; a manifest is
//! written only after every blob it names is present.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use tokio::sync::{Mutex, OnceCell};

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::registry::{Registry, RegistryError, Stats, registry_error};
use crate::core::image_config::{Family, Manifest, Payload, Provenance, agent_index, agent_manifest, append_layers, payload_of};
use crate::core::image_ref::{Digest, ImageRef};
use crate::core::plan::{AgentPlan, Plan, Status};
use crate::core::platform::Platform;
use crate::core::report::{ImageRecord, Outcome, Stage};
use crate::core::spec::Variant;
use crate::stages::jobs::{attempt, run_jobs};
use crate::stages::prepare::{Pick, Prepared};

/// One agent image to write: its entries (one per platform) share the tag.
struct Job<'a> {
    entries: Vec<&'a AgentPlan>,
    variant: &'a Variant,
}

impl Job<'_> {
    fn record(&self, status: Outcome) -> ImageRecord {
        let first = self.entries[0];
        let platforms: Vec<String> = self.entries.iter().map(|e| e.platform.to_string()).collect();
        ImageRecord::new(Stage::Agents, &first.image.to_string(), &platforms.join(","), status)
            .of(Some(&first.instance), Some(&first.variant))
    }
}

/// Makes every missing agent of the instances the job picks at the registry, `concurrency` at a
/// time; one record per agent image. With several platforms an agent tag names an index over
/// all of them, so a job writes every platform of its images (registry-side work is small).
/// Failures are recorded, never propagated: the other images go on.
pub(crate) async fn assemble_append(
    client: &Registry,
    prepared: &Prepared,
    plan: &Plan,
    pick: &Pick,
    concurrency: usize,
    actions: &ActionsEnv,
) -> anyhow::Result<Vec<ImageRecord>> {
    let variants: BTreeMap<&str, &Variant> = prepared.spec.agents.variants.iter().map(|v| (v.name.as_str(), v)).collect();
    let mut jobs: BTreeMap<String, Job<'_>> = BTreeMap::new();
    for a in &plan.agents {
        if !pick.wants_instance(&a.instance) {
            continue;
        }
        let Some(variant) = variants.get(a.variant.as_str()) else { continue };
        jobs.entry(a.image.to_string()).or_insert_with(|| Job { entries: Vec::new(), variant }).entries.push(a);
    }
    let (hits, todo): (Vec<Job<'_>>, Vec<Job<'_>>) = jobs.into_values().partition(|j| j.entries.iter().all(|e| e.status == Status::Hit));
    let hits: Vec<ImageRecord> = hits.iter().map(|j| j.record(Outcome::Hit)).collect();
    if todo.is_empty() {
        return Ok(hits);
    }

    let stats = Stats::default();
    let payloads = match load_payload(client, &plan.builder.image, &plan.builder.platforms, &stats).await {
        Ok(p) => p,
        // No agent can be made without it; each says why, and the report is still written.
        Err(e) => {
            let why = format!("reading the payload from the builder image `{}` (has the builder job run?): {e:#}", plan.builder.image);
            let mut records = hits;
            records.extend(todo.iter().map(|j| j.record(Outcome::Failed).took(0.0, Some(why.clone()))));
            records.sort_by(|a, b| a.image.cmp(&b.image));
            return Ok(records);
        }
    };
    let (present, bases) = (Blobs::default(), Bases::default());
    let builder = Builder { repository: &plan.builder.image.repository, name: plan.builder.image.to_string(), payloads };
    let (builder, present, bases) = (&builder, &present, &bases);
    Ok(run_jobs(hits, todo, concurrency, actions, |job| async move {
        let stats = Stats::default();
        let r = attempt(job.record(Outcome::Cold), Outcome::Assembled, write_agent(client, &job, builder, (present, bases), &stats)).await;
        r.counted(stats.counters())
    })
    .await)
}

/// The builder image as every agent uses it: where its payload layers are mounted from, its
/// name for the agents' provenance, and the payload of each platform.
struct Builder<'a> {
    repository: &'a str,
    name: String,
    payloads: BTreeMap<Platform, Payload>,
}

/// The payload of each platform, from the builder image (an index or one manifest).
async fn load_payload(
    client: &Registry,
    builder: &ImageRef,
    platforms: &[Platform],
    stats: &Stats,
) -> anyhow::Result<BTreeMap<Platform, Payload>> {
    let top = client.get_manifest(builder, stats).await?.ok_or_else(|| anyhow!("the builder image `{builder}` does not exist"))?;
    let mut out = BTreeMap::new();
    for p in platforms {
        let manifest = client
            .platform_manifest(builder, &top, Some(p), stats)
            .await?
            .ok_or_else(|| anyhow!("the builder image `{builder}` has no {p} image"))?
            .manifest;
        let config = client.get_blob(&builder.registry, &builder.repository, &manifest.config.digest, stats).await?;
        let config: serde_json::Value = serde_json::from_slice(&config).context("reading the builder's config")?;
        out.insert(p.clone(), payload_of(&manifest, &config, &builder.to_string()).map_err(|e| anyhow!(e))?);
    }
    Ok(out)
}

/// Writes one agent image (every platform; an index when there are several).
async fn write_agent(
    client: &Registry,
    job: &Job<'_>,
    builder: &Builder<'_>,
    (present, bases): (&Blobs, &Bases),
    stats: &Stats,
) -> anyhow::Result<()> {
    let first = job.entries[0];
    let target = &first.image;
    let base = &first.base;
    let platforms: Vec<Platform> = job.entries.iter().map(|e| e.platform.clone()).collect();
    let read = bases.read(client, base, &platforms, stats).await?;
    let base_name = base.to_string();
    let from = Provenance { base_name: &base_name, base_digest: &read.digest, builder: &builder.name };

    let mut children = Vec::new();
    let mut family = None;
    let mut optimistic = false;
    for entry in &job.entries {
        let p = &entry.platform;
        let (base_manifest, media_type, base_config) =
            read.platforms.get(p).ok_or_else(|| anyhow!("its base `{base}` has no {p} image"))?;
        let fam = Family::of(media_type).ok_or_else(|| anyhow!("its base has an unknown manifest type `{media_type}`"))?;
        family.get_or_insert(fam);
        let payload = builder.payloads.get(p).ok_or_else(|| anyhow!("no payload for {p}"))?;
        let config = serde_json::to_vec(&append_layers(base_config, payload, job.variant, from))?;
        let manifest = agent_manifest(base_manifest, media_type, payload, &config, from).map_err(|e| anyhow!(e))?;

        // Blobs first: base layers from the base repository, payload layers from the builder's.
        optimistic |= ensure_base_layers(
            client,
            &target.registry,
            &base.repository,
            &target.repository,
            (base_manifest, &read.digest),
            present,
            stats,
        )
        .await?;
        for l in &payload.layers {
            ensure_blob(client, &target.registry, builder.repository, &target.repository, &l.descriptor.digest, present, stats).await?;
        }
        // A config is new with each agent: upload it without asking first.
        client.upload_blob(&target.registry, &target.repository, Bytes::from(config), stats).await?;
        children.push((p.clone(), fam, Bytes::from(serde_json::to_vec(&manifest)?)));
    }

    // The plan already skipped agents that exist with this base and builder; a rewrite of
    // an identical manifest (a race with another job) is harmless.
    let fam = family.unwrap_or(Family::Oci);
    let mut tries = 0u32;
    loop {
        match put_agent(client, target, &children, fam, from, stats).await {
            // Another job (another process) mounting the same blob into this repository can
            // leave the registry's link to it unreadable for a moment (Debian's registry 2.8
            // on filesystem storage answers MANIFEST_BLOB_UNKNOWN / DIGEST_INVALID): wait and
            // write again; from the second retry on, mount its blobs again first.
            // The base's layers were taken to be there (the repository holds earlier agents)
            // and one is not: mount them all, for this agent and the rest of the process.
            Err(e) if names_a_missing_blob(&e) && optimistic => {
                optimistic = false;
                tracing::debug!("{target}: the agent repository lacks a layer of its base ({e:#}): mounting them");
                present.disprove(&target.repository, &read.digest).await;
                reensure(client, job, builder, &read, present, stats).await?;
            }
            Err(e) if names_a_missing_blob(&e) && tries < MISSING_BLOB_RETRIES => {
                tries += 1;
                let wait = std::time::Duration::from_millis((100u64 << tries) + rand::random::<u64>() % 100);
                tracing::debug!("{target}: the registry does not have a blob it was given ({e:#}): writing again in {wait:?}");
                tokio::time::sleep(wait).await;
                if tries >= 2 {
                    reensure(client, job, builder, &read, present, stats).await?;
                }
            }
            other => return other,
        }
    }
}

/// How often a manifest refused for a missing blob is written again.
const MISSING_BLOB_RETRIES: u32 = 4;

/// Puts an agent's manifest under its tag; with several platforms, each child by digest
/// and an index over them under the tag.
async fn put_agent(
    client: &Registry,
    target: &ImageRef,
    children: &[(Platform, Family, Bytes)],
    family: Family,
    from: Provenance<'_>,
    stats: &Stats,
) -> anyhow::Result<()> {
    let tag = target.tag.as_ref().map(ToString::to_string).unwrap_or_else(|| "latest".into());
    if let [(_, fam, bytes)] = children {
        client.put_manifest(target, &tag, fam.manifest(), bytes.clone(), stats).await?;
        return Ok(());
    }
    let mut refs = Vec::new();
    for (p, f, bytes) in children {
        let digest = Digest::sha256_of(bytes);
        client.put_manifest(target, &digest.to_string(), f.manifest(), bytes.clone(), stats).await?;
        refs.push((p.clone(), digest, bytes.len() as u64));
    }
    let index = Bytes::from(serde_json::to_vec(&agent_index(family, &refs, from))?);
    client.put_manifest(target, &tag, family.index(), index, stats).await?;
    Ok(())
}

/// The blobs known to be in each repository, each mounted once: concurrent jobs that need
/// the same (repository, digest) wait for the one mount in flight (Debian's registry failed
/// manifests when several tasks mounted one blob into one repository at once).
#[derive(Default)]
struct Blobs {
    mounted: Mutex<HashMap<BlobKey, Arc<OnceCell<()>>>>,
    /// Per agent repository: whether it holds earlier agents' base layers (one HEAD per
    /// process), and the bases a refused manifest showed it does not hold.
    steady: Mutex<HashMap<String, Arc<Steady>>>,
}

/// What a process knows of an agent repository's earlier agents.
#[derive(Default)]
struct Steady {
    /// A base's top layer was found there: the repository holds earlier agents.
    holds_agents: std::sync::atomic::AtomicBool,
    /// Per base (by its top layer): whether that layer was found.
    probed: std::sync::Mutex<HashMap<Digest, Arc<OnceCell<bool>>>>,
    /// Bases (by manifest digest) new to the repository.
    new_bases: std::sync::Mutex<std::collections::BTreeSet<Digest>>,
}

/// A blob in a repository: (repository, digest).
type BlobKey = (String, Digest);

impl Blobs {
    async fn cell(&self, to: &str, digest: &Digest) -> Arc<OnceCell<()>> {
        self.mounted.lock().await.entry((to.to_owned(), digest.clone())).or_default().clone()
    }

    async fn steady(&self, to: &str) -> Arc<Steady> {
        self.steady.lock().await.entry(to.to_owned()).or_default().clone()
    }

    /// From now on, the layers of `base` are mounted into `to`.
    async fn disprove(&self, to: &str, base: &Digest) {
        if let Ok(mut new) = self.steady(to).await.new_bases.lock() {
            new.insert(base.clone());
        }
    }

    /// Forgets that `digest` is in `to`, so the next job mounts it again.
    async fn forget(&self, to: &str, digest: &Digest) {
        self.mounted.lock().await.remove(&(to.to_owned(), digest.clone()));
    }
}

/// Makes `digest` present in `to`, mounting it from `from`, once per (repository, digest):
/// a job that needs a blob being mounted waits for that mount.
async fn ensure_blob(
    client: &Registry,
    registry: &str,
    from: &str,
    to: &str,
    digest: &Digest,
    present: &Blobs,
    stats: &Stats,
) -> anyhow::Result<()> {
    let cell = present.cell(to, digest).await;
    // A mount of a blob the target has already is a cheap 201: no HEAD first. A failed
    // mount leaves the cell empty: the next job tries again.
    cell.get_or_try_init(|| async {
        client.mount_blob(registry, from, to, digest, stats).await.map(drop).with_context(|| format!("copying layer {digest}"))
    })
    .await
    .map(drop)
}

/// Makes a base's layers present in the agent repository `to`, or takes them to be there:
/// whether they were mounted (false) or taken to be there (true). Mounts are writes, and a
/// registry's budget counts writes. An agent commit after the first writes into a repository
/// that holds the previous commit's agents, and with them every base's layers (a manifest is
/// written only once every blob it names is present): a HEAD (a read) of a base's top layer
/// tells which case this is, until one finds it (then the repository is taken to hold every
/// base's layers, and no more HEADs are sent); in the steady state no base layer is mounted. A base new to the repository then has its manifest refused for a missing layer;
/// that agent mounts every blob and writes again, and the process mounts that base's layers
/// from then on.
async fn ensure_base_layers(
    client: &Registry,
    registry: &str,
    from: &str,
    to: &str,
    (base, base_digest): (&Manifest, &Digest),
    present: &Blobs,
    stats: &Stats,
) -> anyhow::Result<bool> {
    let Some(top) = base.layers.last() else { return Ok(false) };
    let steady = present.steady(to).await;
    let new_base = steady.new_bases.lock().is_ok_and(|new| new.contains(base_digest));
    if new_base {
        return mount_all(client, registry, from, to, base, present, stats).await;
    }
    if steady.holds_agents.load(Ordering::Relaxed) {
        return Ok(true);
    }
    let cell = steady.probed.lock().map(|mut p| p.entry(top.digest.clone()).or_default().clone()).unwrap_or_default();
    let there = cell
        .get_or_try_init(|| async {
            client.blob_exists(registry, to, &top.digest, stats).await.with_context(|| format!("checking layer {}", top.digest))
        })
        .await?;
    if *there {
        steady.holds_agents.store(true, Ordering::Relaxed);
        return Ok(true);
    }
    mount_all(client, registry, from, to, base, present, stats).await
}

/// Mounts every layer of `base` into `to` (each once per process): false, nothing taken on
/// trust.
async fn mount_all(
    client: &Registry,
    registry: &str,
    from: &str,
    to: &str,
    base: &Manifest,
    present: &Blobs,
    stats: &Stats,
) -> anyhow::Result<bool> {
    for l in &base.layers {
        ensure_blob(client, registry, from, to, &l.digest, present, stats).await?;
    }
    Ok(false)
}

/// Whether a manifest write was refused for a blob the registry should have (the typed
/// error's class: `MANIFEST_BLOB_UNKNOWN`, `BLOB_UNKNOWN`, `DIGEST_INVALID`).
fn names_a_missing_blob(e: &anyhow::Error) -> bool {
    registry_error(e).is_some_and(RegistryError::blob_race)
}

/// Mounts every blob of a job's agent again, whatever was remembered.
async fn reensure(
    client: &Registry,
    job: &Job<'_>,
    builder: &Builder<'_>,
    read: &BaseRead,
    present: &Blobs,
    stats: &Stats,
) -> anyhow::Result<()> {
    let first = job.entries[0];
    let (target, base) = (&first.image, &first.base);
    for (p, (manifest, _, _)) in &read.platforms {
        let payload = builder.payloads.get(p).ok_or_else(|| anyhow!("no payload for {p}"))?;
        let blobs = manifest.layers.iter().map(|l| (base.repository.as_str(), &l.digest));
        for (from, digest) in blobs.chain(payload.layers.iter().map(|l| (builder.repository, &l.descriptor.digest))) {
            present.forget(&target.repository, digest).await;
            ensure_blob(client, &target.registry, from, &target.repository, digest, present, stats).await?;
        }
    }
    Ok(())
}

/// A base as every agent made on it needs it: its digest, and per platform its manifest,
/// media type and config.
struct BaseRead {
    digest: Digest,
    platforms: BTreeMap<Platform, (Manifest, String, serde_json::Value)>,
}

/// Each base read once for all the agents made on it (its variants and platforms): the first
/// job to need a base reads it, the others wait for that read.
#[derive(Default)]
struct Bases(Mutex<HashMap<String, Arc<OnceCell<Arc<BaseRead>>>>>);

impl Bases {
    async fn read(&self, client: &Registry, base: &ImageRef, platforms: &[Platform], stats: &Stats) -> anyhow::Result<Arc<BaseRead>> {
        let cell = self.0.lock().await.entry(base.to_string()).or_default().clone();
        cell.get_or_try_init(|| async {
            let top = client
                .get_manifest(base, stats)
                .await?
                .ok_or_else(|| anyhow!("its base `{base}` does not exist (has the bases job run?)"))?;
            let mut read = BaseRead { digest: top.digest.clone(), platforms: BTreeMap::new() };
            for p in platforms {
                let Some(m) = client.platform_manifest(base, &top, Some(p), stats).await? else { continue };
                let config = client.get_blob(&base.registry, &base.repository, &m.manifest.config.digest, stats).await?;
                let config: serde_json::Value = serde_json::from_slice(&config).context("reading the base's config")?;
                read.platforms.insert(p.clone(), (m.manifest, m.media_type, config));
            }
            Ok(Arc::new(read))
        })
        .await
        .cloned()
    }
}
