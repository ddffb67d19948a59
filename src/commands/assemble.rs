//! `assemble`: agent images written at the registry. For each missing agent: the base's
//! manifest and config are read, the base's and the payload's layers are mounted into the
//! agent repository, and a new config and manifest are put on top. No layer is pulled or
//! recompressed; a manifest is written only after every blob it names is present.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use futures::{StreamExt as _, stream};
use tokio::sync::Mutex;

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::registry::{Registry, Stats};
use crate::app::{Done, UsageError};
use crate::cli::{AssembleArgs, MethodArg};
use crate::commands::observe;
use crate::commands::plan::{Prepared, emit_summary, make_plan_with, prepare, write_report};
use crate::core::image_config::{
    Family, Index, Manifest, Payload, Provenance, agent_index, agent_manifest, append_layers, is_index, payload_of,
};
use crate::core::image_ref::{Digest, ImageRef};
use crate::core::plan::{AgentPlan, Plan, Status};
use crate::core::platform::Platform;
use crate::core::report::{ImageRecord, Outcome, Report};
use crate::core::spec::{Method, Variant};
use crate::core::summary::{SUMMARY_BUDGET, report_summary};

/// Parses `--items` against the spec's instances: unknown ids are a usage error.
pub fn parse_items(items: Option<&str>, prepared: &Prepared) -> anyhow::Result<Option<BTreeSet<String>>> {
    let Some(text) = items.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    let known: HashSet<&str> = prepared.spec.bases.instances.iter().map(String::as_str).collect();
    let wanted: BTreeSet<String> = text.split_whitespace().map(str::to_owned).collect();
    let unknown: Vec<&String> = wanted.iter().filter(|w| !known.contains(w.as_str())).collect();
    if !unknown.is_empty() {
        return Err(UsageError(format!(
            "--items names {} not in the spec's instances: {}",
            if unknown.len() == 1 { "an instance" } else { "instances" },
            unknown.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    Ok(Some(wanted))
}

/// Parses `--platform` against the spec's platforms.
pub fn parse_platform(platform: Option<&str>, prepared: &Prepared) -> anyhow::Result<Option<Platform>> {
    let Some(text) = platform.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    let p: Platform = text.parse().map_err(|e: crate::core::platform::PlatformError| UsageError(format!("--platform: {e}")))?;
    if !prepared.spec.platforms.contains(&p) {
        return Err(UsageError(format!("--platform {p} is not one of the spec's platforms")).into());
    }
    Ok(Some(p))
}

/// `split-build assemble`.
pub async fn run(args: AssembleArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let started = Instant::now();
    let prepared = prepare(&args.common)?;
    let items = parse_items(args.items.as_deref(), &prepared)?;
    let platform = parse_platform(args.platform.as_deref(), &prepared)?;
    let method = match args.method {
        Some(MethodArg::Append) => Method::Append,
        Some(MethodArg::Dockerfile) => Method::Dockerfile,
        None => prepared.spec.agents.method,
    };
    let client = observe::connect(&args.registry, actions)?;
    let concurrency = usize::from(args.registry.concurrency);
    actions.group("split-build assemble: planning");
    let plan = make_plan_with(&prepared, Some(&client), concurrency).await;
    actions.end_group();
    let plan = plan?;

    let records = match method {
        Method::Append => {
            actions.group("split-build assemble: writing agent images");
            let records = assemble_append(&client, &prepared, &plan, items.as_ref(), platform.as_ref(), concurrency).await;
            actions.end_group();
            records
        }
        // Each daemon build folds its own log into a group.
        Method::Dockerfile => {
            crate::commands::assemble_dockerfile::assemble_dockerfile(
                &prepared,
                &plan,
                items.as_ref(),
                platform.as_ref(),
                &args.registry,
                2,
                actions,
            )
            .await
        }
    };
    let records = records?;

    let report = Report { command: "assemble".into(), seconds: started.elapsed().as_secs_f64(), images: records };
    if let Some(path) = &args.common.report {
        write_report(path, &report)?;
    }
    emit_summary(
        &report_summary("split-build assemble", std::slice::from_ref(&report), SUMMARY_BUDGET),
        args.common.summary.as_deref(),
        actions,
    )?;
    let failed = report.failures();
    let made = report.images.iter().filter(|i| i.status == Outcome::Assembled).count();
    tracing::info!(
        "assembled {made} agent images, {} already there, {failed} failed, in {:.1}s",
        report.images.len() - made - failed,
        report.seconds
    );
    Ok(if failed == 0 { Done::Ok } else { Done::Failed(failed) })
}

/// One agent image to write: its entries (one per platform) share the tag.
struct Job<'a> {
    entries: Vec<&'a AgentPlan>,
    variant: &'a Variant,
}

/// Makes every missing agent of `items` (default: all) at the registry; one record per
/// agent image. Failures are recorded, never propagated: the other images go on.
pub async fn assemble_append(
    client: &Registry,
    prepared: &Prepared,
    plan: &Plan,
    items: Option<&BTreeSet<String>>,
    platform: Option<&Platform>,
    concurrency: usize,
) -> anyhow::Result<Vec<ImageRecord>> {
    let variants: BTreeMap<&str, &Variant> = prepared.spec.agents.variants.iter().map(|v| (v.name.as_str(), v)).collect();
    // With several platforms an agent tag names an index over all of them, so a job for
    // one platform still writes every platform of its images (registry-side work is small);
    // the jobs of the other platforms then find them made.
    let _ = platform;
    let mut jobs: BTreeMap<String, Job<'_>> = BTreeMap::new();
    for a in &plan.agents {
        if items.is_some_and(|set| !set.contains(&a.instance)) {
            continue;
        }
        let Some(variant) = variants.get(a.variant.as_str()) else { continue };
        jobs.entry(a.image.to_string()).or_insert_with(|| Job { entries: Vec::new(), variant }).entries.push(a);
    }

    let todo: Vec<&Job<'_>> = jobs.values().filter(|j| j.entries.iter().any(|e| e.status != Status::Hit)).collect();
    let mut records: Vec<ImageRecord> = jobs
        .values()
        .filter(|j| j.entries.iter().all(|e| e.status == Status::Hit))
        .map(|j| record(j, Outcome::Hit, 0.0, &Stats::default(), None))
        .collect();
    if todo.is_empty() {
        return Ok(records);
    }

    let stats = Stats::default();
    let payloads = load_payload(client, &plan.builder.image, &plan.builder.platforms, &stats)
        .await
        .with_context(|| format!("reading the payload from the builder image `{}` (has the builder job run?)", plan.builder.image))?;
    let present: Arc<Mutex<HashSet<(String, Digest)>>> = Arc::default();
    let builder_name = plan.builder.image.to_string();
    let made: Vec<ImageRecord> = stream::iter(todo)
        .map(|job| {
            let payloads = &payloads;
            let present = present.clone();
            let builder_name = builder_name.as_str();
            let builder_repo = plan.builder.image.repository.as_str();
            async move {
                let stats = Stats::default();
                let t = Instant::now();
                let result = write_agent(client, job, payloads, builder_repo, builder_name, &present, &stats).await;
                let secs = t.elapsed().as_secs_f64();
                match result {
                    Ok(()) => record(job, Outcome::Assembled, secs, &stats, None),
                    Err(e) => {
                        tracing::error!("{}: {e:#}", job.entries[0].image);
                        record(job, Outcome::Failed, secs, &stats, Some(format!("{e:#}")))
                    }
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    records.extend(made);
    records.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(records)
}

fn record(job: &Job<'_>, status: Outcome, seconds: f64, stats: &Stats, error: Option<String>) -> ImageRecord {
    let first = job.entries[0];
    ImageRecord {
        stage: "agents".into(),
        image: first.image.to_string(),
        instance: Some(first.instance.clone()),
        variant: Some(first.variant.clone()),
        platform: job.entries.iter().map(|e| e.platform.to_string()).collect::<Vec<_>>().join(","),
        status,
        seconds,
        bytes_pushed: stats.bytes_pushed.load(Ordering::Relaxed),
        requests: stats.requests.load(Ordering::Relaxed),
        retries: stats.retries.load(Ordering::Relaxed),
        error,
    }
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
        let manifest: Manifest = if is_index(&top.media_type) {
            let index: Index = serde_json::from_slice(&top.bytes).context("reading the builder's index")?;
            let child = index.child(p).ok_or_else(|| anyhow!("the builder image `{builder}` has no {p} image"))?;
            let m = client
                .get_manifest(&builder.with_digest(child.digest.clone()), stats)
                .await?
                .ok_or_else(|| anyhow!("the builder's {p} manifest is missing"))?;
            serde_json::from_slice(&m.bytes).context("reading the builder's manifest")?
        } else {
            serde_json::from_slice(&top.bytes).context("reading the builder's manifest")?
        };
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
    payloads: &BTreeMap<Platform, Payload>,
    builder_repo: &str,
    builder_name: &str,
    present: &Mutex<HashSet<(String, Digest)>>,
    stats: &Stats,
) -> anyhow::Result<()> {
    let first = job.entries[0];
    let target = &first.image;
    let base = &first.base;
    let base_top =
        client.get_manifest(base, stats).await?.ok_or_else(|| anyhow!("its base `{base}` does not exist (has the bases job run?)"))?;
    let base_name = base.to_string();
    let from = Provenance { base_name: &base_name, base_digest: &base_top.digest, builder: builder_name };

    let mut children = Vec::new();
    let mut family = None;
    for entry in &job.entries {
        let p = &entry.platform;
        let (base_manifest, media_type): (Manifest, String) = if is_index(&base_top.media_type) {
            let index: Index = serde_json::from_slice(&base_top.bytes).context("reading the base's index")?;
            let child = index.child(p).ok_or_else(|| anyhow!("its base `{base}` has no {p} image"))?;
            let m = client
                .get_manifest(&base.with_digest(child.digest.clone()), stats)
                .await?
                .ok_or_else(|| anyhow!("the base's {p} manifest is missing"))?;
            (serde_json::from_slice(&m.bytes).context("reading the base's manifest")?, m.media_type)
        } else {
            (serde_json::from_slice(&base_top.bytes).context("reading the base's manifest")?, base_top.media_type.clone())
        };
        let fam = Family::of(&media_type).ok_or_else(|| anyhow!("its base has an unknown manifest type `{media_type}`"))?;
        family.get_or_insert(fam);
        let payload = payloads.get(p).ok_or_else(|| anyhow!("no payload for {p}"))?;
        let base_config = client.get_blob(&base.registry, &base.repository, &base_manifest.config.digest, stats).await?;
        let base_config: serde_json::Value = serde_json::from_slice(&base_config).context("reading the base's config")?;
        let config = serde_json::to_vec(&append_layers(&base_config, payload, job.variant, from))?;
        let manifest = agent_manifest(&base_manifest, &media_type, payload, &config, from).map_err(|e| anyhow!(e))?;

        // Blobs first: base layers from the base repository, payload layers from the builder's.
        for l in &base_manifest.layers {
            ensure_blob(client, &target.registry, &base.repository, &target.repository, &l.digest, present, stats).await?;
        }
        for l in &payload.layers {
            ensure_blob(client, &target.registry, builder_repo, &target.repository, &l.descriptor.digest, present, stats).await?;
        }
        // A config is new with each agent: upload it without asking first.
        client.upload_blob(&target.registry, &target.repository, Bytes::from(config), stats).await?;
        children.push((p.clone(), fam, Bytes::from(serde_json::to_vec(&manifest)?)));
    }

    // The plan already skipped agents that exist with this base and builder; a rewrite of
    // an identical manifest (a race with another job) is harmless.
    if let [(_, fam, bytes)] = children.as_slice() {
        let tag = target.tag.as_ref().map(ToString::to_string).unwrap_or_else(|| "latest".into());
        client.put_manifest(target, &tag, fam.manifest(), bytes.clone(), stats).await?;
        return Ok(());
    }
    let fam = family.unwrap_or(Family::Oci);
    let mut refs = Vec::new();
    for (p, f, bytes) in &children {
        let digest = Digest::sha256_of(bytes);
        client.put_manifest(target, &digest.to_string(), f.manifest(), bytes.clone(), stats).await?;
        refs.push((p.clone(), digest, bytes.len() as u64));
    }
    let index = Bytes::from(serde_json::to_vec(&agent_index(fam, &refs, from))?);
    let tag = target.tag.as_ref().map(ToString::to_string).unwrap_or_else(|| "latest".into());
    client.put_manifest(target, &tag, fam.index(), index, stats).await?;
    Ok(())
}

/// Makes `digest` present in `to`, mounting it from `from`; remembers what is there.
async fn ensure_blob(
    client: &Registry,
    registry: &str,
    from: &str,
    to: &str,
    digest: &Digest,
    present: &Mutex<HashSet<(String, Digest)>>,
    stats: &Stats,
) -> anyhow::Result<()> {
    let key = (to.to_owned(), digest.clone());
    if present.lock().await.contains(&key) {
        return Ok(());
    }
    // A mount of a blob the target has already is a cheap 201: no HEAD first.
    client.mount_blob(registry, from, to, digest, stats).await.with_context(|| format!("copying layer {digest}"))?;
    present.lock().await.insert(key);
    Ok(())
}
