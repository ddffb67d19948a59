//! Observing the registry: the client made from the flags and credentials, the upstream
//! images' digests (they go into base hashes), which of the layout's images exist (and, for
//! agents, what they were made from), and the plan decided from what was seen.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt as _, stream};

use crate::adapters::credentials::Credentials;
use crate::adapters::registry::{DEFAULT_WRITES_PER_SECOND, Registry, Stats};
use crate::cli::RegistryOpts;
use anyhow::Context as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::core::build_cache::{bases_note, builder_note, warm_image, warm_tag};
use crate::core::dockerfile_stages::Stage;
use crate::core::image_config::{is_index, provenance_of};
use crate::core::image_ref::{Digest, ImageRef};
use crate::core::inputs_record::Previous;
use crate::core::legs::{has_legs, leg, pushed_as};
use crate::core::matrix::{Sizing, job_rate};
use crate::core::plan::{
    Layout, LayoutInputs, Observed, Plan, Presence, Status, UpstreamUnresolved, decide, fresh_in, latest_tag, layout, refresh,
};
use crate::core::platform::Platform;
use crate::core::template::Vars;
use crate::stages::daemon::needed_stages;
use crate::stages::prepare::{Pick, Prepared};

/// A registry client from the flags (for the spec's `registry` host only), docker config
/// and `GITHUB_TOKEN`, bounded by `--timeout`, pacing writes at `--max-writes-per-second`
/// (else the default). (Every secret was masked at start-up.)
pub(crate) fn connect(opts: &RegistryOpts, registry_host: &str) -> anyhow::Result<Registry> {
    connect_paced(opts, registry_host, None)
}

/// [`connect`] for a job with a `share` of the run's write budget (writes a second, from its
/// matrix entry in the plan): it paces at that unless `--max-writes-per-second` says otherwise.
pub(crate) fn connect_paced(opts: &RegistryOpts, registry_host: &str, share: Option<f64>) -> anyhow::Result<Registry> {
    let credentials = Credentials::load(opts).flags_for(registry_host);
    let rate = job_rate(opts.max_writes_per_second, share, f64::from(DEFAULT_WRITES_PER_SECOND));
    tracing::debug!("pacing writes to {registry_host} at {rate} a second (0: unpaced)");
    Ok(Registry::new(credentials, &opts.insecure_registry, usize::from(opts.concurrency))?
        .with_timeout(opts.timeout.into())
        .with_write_rate_f64(rate))
}

/// The reason of an upstream the registry answered 404 for.
const NOT_FOUND: &str = "not found";

/// The digest of each upstream reference, where the registry gives it; the others with
/// the reason. Each is one HEAD (Docker Hub does not count a HEAD against its pull limit),
/// retried on 429 and 5xx within `--timeout` as every request to the spec's registry is.
/// One failure that says a whole registry is unreachable or refuses us is not repeated for
/// every instance on it: the first reference of each host is asked alone.
async fn upstream_digests(
    registry: &Registry,
    refs: &BTreeSet<String>,
    concurrency: usize,
) -> (BTreeMap<String, Digest>, BTreeMap<String, String>) {
    let quick = registry;
    let mut by_host: BTreeMap<String, Vec<(String, ImageRef)>> = BTreeMap::new();
    let mut unresolved = BTreeMap::new();
    for r in refs {
        match r.parse::<ImageRef>() {
            Ok(image) => by_host.entry(image.registry.clone()).or_default().push((r.clone(), image)),
            Err(e) => {
                unresolved.insert(r.clone(), e.0);
            }
        }
    }
    let mut digests = BTreeMap::new();
    for (host, list) in by_host {
        let stats = Stats::default();
        let mut rest = list.into_iter();
        let Some((first_ref, first)) = rest.next() else { continue };
        match quick.head_manifest(&first, &stats).await {
            Ok(Some(h)) => {
                if let Some(d) = h.digest {
                    digests.insert(first_ref, d);
                }
            }
            Ok(None) => {
                unresolved.insert(first_ref, NOT_FOUND.into());
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!("upstream registry {host}: {reason}; its bases take the digest their previous build recorded");
                unresolved.insert(first_ref, reason.clone());
                unresolved.extend(rest.map(|(r, _)| (r, reason.clone())));
                continue;
            }
        }
        let results: Vec<(String, Result<Option<Digest>, String>)> = stream::iter(rest)
            .map(|(r, image)| async move {
                let stats = Stats::default();
                let res = quick.head_manifest(&image, &stats).await.map(|h| h.and_then(|h| h.digest)).map_err(|e| format!("{e:#}"));
                (r, res)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for (r, res) in results {
            match res {
                Ok(Some(d)) => {
                    digests.insert(r, d);
                }
                Ok(None) => {
                    unresolved.insert(r, NOT_FOUND.into());
                }
                Err(e) => {
                    unresolved.insert(r, e);
                }
            }
        }
    }
    (digests, unresolved)
}

/// Which of the layout's images the job picks exist, asking only what can change a
/// decision: the builder and the picked bases first; then `{instance}-latest` only for a
/// missing base (a warm cache matters only then), and an agent (with its provenance) only
/// when the builder and its base exist (else it is cold whatever the registry says). An image
/// the registry would not tell about is left out of `present` with the reason in `unchecked`
/// (it plans cold; the others go on); when none of the first round could be checked, the
/// registry is unusable and that is the error.
async fn existing(registry: &Registry, layout: &Layout, pick: &Pick, concurrency: usize, observed: &mut Observed) -> anyhow::Result<()> {
    // A base that waits for its upstream has no tag worth asking about.
    let bases: Vec<_> =
        layout.bases.iter().filter(|b| pick.wants_instance(&b.instance) && !observed.waits(&b.from, b.from_digest.as_ref())).collect();
    let first: Vec<ImageRef> = std::iter::once(layout.builder.clone()).chain(bases.iter().map(|b| b.image.clone())).collect();
    let total = first.len();
    let first_names: BTreeSet<String> = first.iter().map(ToString::to_string).collect();
    record(observed, heads(registry, first, concurrency).await);
    // (Reads made before, of previous builds, may have left reasons of their own.)
    let failed: Vec<&String> = observed.unchecked.iter().filter(|(image, _)| first_names.contains(*image)).map(|(_, e)| e).collect();
    if failed.len() == total
        && let Some(e) = failed.first()
    {
        anyhow::bail!("{e}");
    }
    let found = |image: &ImageRef| observed.present.contains_key(&image.to_string());
    let platforms = &layout.platforms;
    // A missing base: its previous build `{instance}-latest`, read whole (its config's
    // input record says why the base is missing) unless it was read already for an
    // unresolved upstream; with one platform that is also the warm cache, with several the
    // warm cache is each platform's `-latest` leg; with several platforms, the legs pushed
    // so far. A missing builder: its legs.
    let mut second: Vec<ImageRef> = Vec::new();
    let mut reads: Vec<(String, ImageRef)> = Vec::new();
    for b in bases.iter().filter(|b| !found(&b.image)) {
        if !observed.previous.contains_key(&b.instance) {
            reads.push((b.instance.clone(), b.latest.clone()));
        }
        let mut per_platform: Vec<ImageRef> = platforms.iter().map(|p| pushed_as(&b.latest, p, platforms)).collect();
        per_platform.dedup();
        second.extend(per_platform.into_iter().filter(|l| *l != b.latest));
        if has_legs(platforms) {
            second.extend(platforms.iter().map(|p| leg(&b.image, p)));
        }
    }
    let builder_missing = !found(&layout.builder);
    if has_legs(platforms) && builder_missing {
        second.extend(platforms.iter().map(|p| leg(&layout.builder, p)));
    }
    // A missing builder: its warm tag (an earlier build to take cache from), per platform;
    // the first platform's read whole (below), as its input record says why it is missing.
    if builder_missing {
        second.extend(platforms.iter().skip(1).map(|p| warm_image(&layout.builder, p, platforms)));
    }
    let agents: Vec<ImageRef> = if builder_missing {
        Vec::new()
    } else {
        layout.agents.iter().filter(|a| pick.wants_instance(&a.instance) && found(&a.base)).map(|a| a.image.clone()).collect()
    };
    let first_platform = platforms.first().cloned();
    let builder_previous =
        async { if builder_missing { read_builder_previous(registry, &layout.builder, platforms).await } else { Vec::new() } };
    let (second, agents, previous, builder_previous) = tokio::join!(
        heads(registry, second, concurrency),
        presences(registry, agents, concurrency),
        previous_builds(registry, reads, first_platform.as_ref(), concurrency),
        builder_previous
    );
    record(observed, second);
    record(observed, agents);
    for (instance, latest, r) in previous {
        record_previous(observed, instance, &latest, r);
    }
    for (latest, r) in builder_previous {
        observed.builder_previous = Some(seen_previous(observed, &latest, r));
    }
    Ok(())
}

/// The builder's previous build, read whole: its first platform's floating `latest` (the
/// image its warm check asks about anyway: a GET in place of that HEAD, and its config); with
/// several platforms and no such leg (the platforms changed since), the plain `latest` a
/// build for one platform left. Each read with what it said, the one that tells last.
pub(crate) async fn read_builder_previous(
    registry: &Registry,
    builder: &ImageRef,
    platforms: &[Platform],
) -> Vec<(ImageRef, anyhow::Result<Option<Previous>>)> {
    let Some(first) = platforms.first() else { return Vec::new() };
    let latest = warm_image(builder, first, platforms);
    let r = read_previous(registry, &latest, Some(first)).await;
    let plain = warm_tag(builder);
    let again = matches!(r, Ok(None)) && latest != plain;
    let mut reads = vec![(latest, r)];
    if again {
        let r = read_previous(registry, &plain, Some(first)).await;
        reads.push((plain, r));
    }
    reads
}

/// The previous build of each `(instance, {instance}-latest)`, as its config (for
/// `platform`, else its first) tells: one manifest and one config read each (two
/// manifests for an index).
async fn previous_builds(
    registry: &Registry,
    reads: Vec<(String, ImageRef)>,
    platform: Option<&Platform>,
    concurrency: usize,
) -> Vec<(String, ImageRef, anyhow::Result<Option<Previous>>)> {
    stream::iter(reads)
        .map(|(instance, latest)| async move {
            let r = read_previous(registry, &latest, platform).await;
            (instance, latest, r)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// What `latest` says it was made from; `None` when it does not exist.
pub(crate) async fn read_previous(registry: &Registry, latest: &ImageRef, platform: Option<&Platform>) -> anyhow::Result<Option<Previous>> {
    let stats = Stats::default();
    let Some(m) = registry.get_manifest(latest, &stats).await? else { return Ok(None) };
    // A platform added since has no image in the previous build's index: any child's
    // record tells its inputs.
    let pm = match registry.platform_manifest(latest, &m, platform, &stats).await? {
        Some(pm) => Some(pm),
        None if platform.is_some() => registry.platform_manifest(latest, &m, None, &stats).await?,
        None => None,
    };
    let Some(pm) = pm else { return Ok(Some(Previous::NoRecord("its index lists no image".into()))) };
    let bytes = registry.get_blob(&latest.registry, &latest.repository, &pm.manifest.config.digest, &stats).await?;
    let config: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(Some(Previous::of_config(&config)))
}

/// Keeps what reading an instance's previous build said: it exists (a warm cache) and what
/// it records; absent; or the registry's error (the warm cache is unchecked, the record
/// unknown).
fn record_previous(observed: &mut Observed, instance: String, latest: &ImageRef, r: anyhow::Result<Option<Previous>>) {
    let previous = seen_previous(observed, latest, r);
    observed.previous.insert(instance, previous);
}

/// What reading the previous build `latest` said, with its presence (or the registry's
/// error) kept in `observed`.
fn seen_previous(observed: &mut Observed, latest: &ImageRef, r: anyhow::Result<Option<Previous>>) -> Option<Previous> {
    match r {
        Ok(Some(p)) => {
            observed.present.insert(latest.to_string(), Presence::default());
            Some(p)
        }
        Ok(None) => None,
        Err(e) => {
            let why = format!("{e:#}");
            observed.unchecked.insert(latest.to_string(), why.clone());
            Some(Previous::NoRecord(format!("`{latest}` could not be read ({why})")))
        }
    }
}

/// HEADs of `images`: present (with no provenance), absent, or the registry's error.
async fn heads(registry: &Registry, images: Vec<ImageRef>, concurrency: usize) -> Vec<(String, anyhow::Result<Option<Presence>>)> {
    stream::iter(images)
        .map(|image| async move {
            let stats = Stats::default();
            (
                image.to_string(),
                registry.head_manifest(&image, &stats).await.map(|h| h.map(|_| Presence::default())).map_err(anyhow::Error::from),
            )
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// The provenance of each agent of `images`: present (with what it was made from), absent,
/// or the registry's error.
async fn presences(registry: &Registry, images: Vec<ImageRef>, concurrency: usize) -> Vec<(String, anyhow::Result<Option<Presence>>)> {
    stream::iter(images)
        .map(|image| async move { (image.to_string(), agent_presence(registry, &image).await) })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

fn record(observed: &mut Observed, results: Vec<(String, anyhow::Result<Option<Presence>>)>) {
    for (image, r) in results {
        match r {
            Ok(Some(p)) => {
                observed.present.insert(image, p);
            }
            Ok(None) => {}
            Err(e) => {
                observed.unchecked.insert(image, format!("{e:#}"));
            }
        }
    }
}

/// An agent image's provenance: its (index's) annotations, else its config's labels.
async fn agent_presence(registry: &Registry, image: &ImageRef) -> anyhow::Result<Option<Presence>> {
    let stats = Stats::default();
    let Some(m) = registry.get_manifest(image, &stats).await? else { return Ok(None) };
    if is_index(&m.media_type) {
        let index: crate::core::image_config::Index = serde_json::from_slice(&m.bytes)?;
        let (base_name, builder) = provenance_of(index.annotations.as_ref(), None);
        if base_name.is_some() {
            return Ok(Some(Presence { base_name, builder }));
        }
    }
    let manifest = match registry.platform_manifest(image, &m, None, &stats).await {
        Ok(Some(p)) => p.manifest,
        Ok(None) => return Ok(Some(Presence::default())),
        // A single manifest we cannot read says nothing of its provenance.
        Err(_) if !is_index(&m.media_type) => return Ok(Some(Presence::default())),
        Err(e) => return Err(e.into()),
    };
    let (base_name, builder) = provenance_of(manifest.annotations.as_ref(), None);
    if base_name.is_some() {
        return Ok(Some(Presence { base_name, builder }));
    }
    let config_bytes = registry.get_blob(&image.registry, &image.repository, &manifest.config.digest, &stats).await?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap_or_default();
    let (base_name, builder) = provenance_of(None, Some(&config));
    Ok(Some(Presence { base_name, builder }))
}

/// Names every image and, with a client, asks the registry about the images `pick` names
/// (`None`: offline, every image cold). A job that makes some instances asks only about
/// theirs: their upstreams, bases, `-latest` and agents; what it does not pick plans cold.
/// An instance whose upstream digest cannot be resolved takes the digest its previous build
/// recorded (one read of its `-latest`), so its tag stays; with none recorded, `upstream`
/// says what to do.
pub(crate) async fn make_plan(
    prepared: &Prepared,
    client: Option<&Registry>,
    concurrency: usize,
    pick: &Pick,
    upstream: UpstreamUnresolved,
) -> anyhow::Result<Plan> {
    let spec = &prepared.spec;
    let mut observed = Observed { upstream_unresolved: upstream, ..Observed::default() };
    let mut upstream_digests = BTreeMap::new();
    let mut recorded_digests = BTreeMap::new();
    if let Some(client) = client {
        let from = |i: &String| spec.bases.from.render(&Vars { instance: Some(i), ..Vars::default() });
        let picked: Vec<&String> = spec.bases.instances.iter().filter(|i| pick.wants_instance(i)).collect();
        let refs: BTreeSet<String> = picked.iter().map(|i| from(i)).collect();
        let (digests, unresolved) = self::upstream_digests(client, &refs, concurrency).await;
        // The previous builds of the instances whose upstream is unresolved: their recorded
        // digest stands in.
        let first_platform = spec.platforms.first();
        let reads: Vec<(String, ImageRef)> = picked
            .iter()
            .filter(|i| unresolved.contains_key(&from(i)))
            .map(|i| ((*i).clone(), spec.image(&spec.bases.repository, latest_tag(i))))
            .collect();
        for (instance, latest, r) in previous_builds(client, reads, first_platform, concurrency).await {
            record_previous(&mut observed, instance, &latest, r);
        }
        for (instance, previous) in &observed.previous {
            if let Some(d) = previous.as_ref().and_then(|p| p.digest_for(&from(instance))) {
                recorded_digests.insert(instance.clone(), d.clone());
            }
        }
        upstream_digests = digests;
        observed.upstreams_not_found = unresolved.iter().filter(|(_, why)| *why == NOT_FOUND).map(|(r, _)| r.clone()).collect();
        observed.unresolved_upstreams = unresolved;
    }
    let layout = layout(
        spec,
        LayoutInputs {
            builder_version: &prepared.builder_version,
            base_recipe: &prepared.base_recipe,
            upstream_digests: &upstream_digests,
            recorded_digests: &recorded_digests,
            // Offline nothing is compared: the builder's inputs are not read for it.
            builder_inputs: if client.is_some() { prepared.builder_inputs() } else { Err("offline: not compared") },
        },
    );
    if let Some(client) = client {
        existing(client, &layout, pick, concurrency, &mut observed)
            .await
            .with_context(|| format!("asking {} which images exist (use --offline to plan without it)", spec.registry.host))?;
    }
    let mut plan = decide(layout, &observed, Sizing::of(spec));
    plan.made_from = Some(prepared.fingerprint.clone());
    plan.notes.extend(cache_notes(prepared, &plan.builder.image));
    Ok(plan)
}

/// What the plan's notes say of the cache: the builder's path always, the bases' under `max`.
fn cache_notes(prepared: &Prepared, builder: &ImageRef) -> Vec<String> {
    fn refs(r: &Result<Vec<Stage>, String>) -> Result<Vec<&Stage>, String> {
        r.as_ref().map(|v| v.iter().collect()).map_err(Clone::clone)
    }
    let spec = &prepared.spec;
    let b = needed_stages(&spec.builder.dockerfile, Some(&spec.builder.target));
    let bases = needed_stages(&spec.bases.dockerfile, spec.bases.target.as_deref());
    let (b, bases) = (refs(&b), refs(&bases));
    let mut notes = vec![builder_note(builder, spec.cache.builder, &spec.builder.target, b.as_deref().map_err(Clone::clone))];
    notes.extend(bases_note(spec.cache.bases, bases.as_deref().map_err(Clone::clone)));
    notes
}

/// Brings a handed-over plan up to date for a job: asks the registry only about what the job
/// is about to make (the picked images the plan names missing), so a rerun still skips
/// finished work; tags, upstream digests and warm caches stay the plan's.
pub(crate) async fn recheck(registry: &Registry, plan: &mut Plan, pick: &Pick, concurrency: usize) {
    let mut observed = Observed::default();
    let mut to_head: Vec<ImageRef> = Vec::new();
    if plan.builder.status != Status::Hit {
        to_head.push(plan.builder.image.clone());
    }
    let platforms = plan.builder.platforms.clone();
    if plan.builder.status != Status::Hit && has_legs(&platforms) {
        to_head.extend(platforms.iter().filter(|p| pick.wants_platform(p)).map(|p| leg(&plan.builder.image, p)));
    }
    let mut seen = BTreeSet::new();
    for b in plan.bases.iter().filter(|b| b.status.is_missing() && pick.wants(&b.instance, &b.platform)) {
        if seen.insert(b.image.to_string()) {
            to_head.push(b.image.clone());
        }
        if has_legs(&platforms) && !b.built {
            to_head.push(leg(&b.image, &b.platform));
        }
    }
    let agents: Vec<ImageRef> = plan
        .agents
        .iter()
        .filter(|a| a.status.is_missing() && pick.wants_instance(&a.instance))
        .map(|a| a.image.clone())
        .filter(|i| seen.insert(i.to_string()))
        .collect();
    let (heads, agents) = tokio::join!(heads(registry, to_head, concurrency), presences(registry, agents, concurrency));
    record(&mut observed, heads);
    record(&mut observed, agents);
    for (image, why) in &observed.unchecked {
        tracing::warn!("`{image}`: could not check whether it exists ({why}); making it as the plan says");
    }
    refresh(plan, &observed);
}

/// [`recheck`], unless the plan is fresh: made in this very run, whose first attempt this
/// is (then nothing it names missing can have been made by another job of the run; a rerun
/// re-checks). Saves one request per image of the job.
pub(crate) async fn recheck_unless_fresh(registry: &Registry, plan: &mut Plan, pick: &Pick, concurrency: usize, actions: &ActionsEnv) {
    if fresh_in(plan, actions.run_id.as_deref(), actions.run_attempt) {
        tracing::info!("the plan was made in this run's first attempt: its statuses stand (a rerun checks the registry again)");
        return;
    }
    recheck(registry, plan, pick, concurrency).await;
}
