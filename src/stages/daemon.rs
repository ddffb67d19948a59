//! Building through the Docker daemon: the builder (once per version) and the bases (each
//! also tagged `{instance}-latest`, the warm cache of later plans), pushed as they finish.

use std::collections::HashMap;

use anyhow::Context as _;
use futures::FutureExt as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::credentials::Credentials;
use crate::adapters::docker_engine::{BuildRequest, DockerEngine};
use crate::adapters::registry::{Registry, Stats};
use crate::cli::RegistryOpts;
use crate::core::build_cache::{CacheSteps, cache_from, cache_image, cache_steps, warm_image};
use crate::core::dockerfile_stages::{self, parse_stages, stages_needed};
use crate::core::image_config::{BASE_DIGEST, BASE_NAME};
use crate::core::image_ref::ImageRef;
use crate::core::inputs_record::{INPUTS_LABEL, InputsRecord};
use crate::core::legs::{has_legs, pushed_as};
use crate::core::plan::{BasePlan, Plan, Status, latest_tag};
use crate::core::platform::Platform;
use crate::core::report::{ImageRecord, Outcome, Stage};
use crate::core::spec::CacheMode;
use crate::stages::jobs::{attempt, run_jobs};
use crate::stages::merge::{Merged, merge_legs};
use crate::stages::prepare::{Pick, Prepared};

/// The daemon, with the same credentials as the registry client (the flags for the spec's
/// `registry` host only).
pub(crate) async fn connect_daemon(opts: &RegistryOpts, registry_host: &str) -> anyhow::Result<DockerEngine> {
    DockerEngine::connect(Credentials::load(opts).flags_for(registry_host)).await
}

/// Where builds happen and what they follow: the daemon, the registry (legs are merged
/// there), the prepared spec and the plan.
#[derive(Clone, Copy)]
pub(crate) struct Site<'a> {
    /// The daemon that builds and pushes.
    pub(crate) engine: &'a DockerEngine,
    /// The registry the indexes are written to.
    pub(crate) client: &'a Registry,
    /// The spec and its hashed inputs.
    pub(crate) prepared: &'a Prepared,
    /// The plan being carried out.
    pub(crate) plan: &'a Plan,
    /// Where logs and progress go.
    pub(crate) actions: &'a ActionsEnv,
}

/// The builder's record: one image over all its platforms, or one leg's (`platform`).
fn builder_record(plan: &Plan, platform: Option<&Platform>, status: Outcome) -> ImageRecord {
    let platforms = match platform {
        Some(p) => p.to_string(),
        None => plan.builder.platforms.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
    };
    ImageRecord::new(Stage::Builder, &plan.builder.image.to_string(), &platforms, status)
}

fn base_record(b: &BasePlan, status: Outcome) -> ImageRecord {
    ImageRecord::new(Stage::Bases, &b.image.to_string(), &b.platform.to_string(), status).of(Some(&b.instance), None)
}

/// Records of a plan whose builder and bases all exist (nothing to build).
pub(crate) fn builder_and_bases_hits(plan: &Plan) -> Vec<ImageRecord> {
    let mut out = vec![builder_record(plan, None, Outcome::Hit)];
    out.extend(plan.bases.iter().map(|b| if b.status == Status::Unresolved { unresolved_record(b) } else { base_record(b, Outcome::Hit) }));
    out
}

/// A base not planned (its upstream's digest is unknown): failed, never built under a
/// guessed tag, so its agents wait too.
fn unresolved_record(b: &BasePlan) -> ImageRecord {
    base_record(b, Outcome::Failed).took(0.0, b.why.first().cloned())
}

/// Builds and pushes the builder's payload stage, unless it exists: with one platform
/// under its tag; with several, each picked platform's leg (unless it exists), then the
/// index once every leg is there.
pub(crate) async fn build_builder(site: Site<'_>, pick: &Pick) -> Vec<ImageRecord> {
    let Site { engine, client, prepared, plan, actions } = site;
    if plan.builder.status == Status::Hit {
        return vec![builder_record(plan, None, Outcome::Hit)];
    }
    let platforms = &plan.builder.platforms;
    let legs: Vec<&Platform> = platforms.iter().filter(|p| pick.wants_platform(p)).collect();
    run_jobs(Vec::new(), legs, platforms.len(), actions, |p| async move {
        let stats = Stats::default();
        // With one platform the image is the tag itself: no leg is ever built ahead, no index.
        let built = plan.builder.built.contains(p);
        let record = attempt(builder_record(plan, Some(p), Outcome::Cold), if built { Outcome::Hit } else { Outcome::Built }, async {
            if !built {
                build_builder_once(engine, prepared, plan, p, actions).await?;
            }
            if has_legs(platforms) {
                merged(client, &plan.builder.image, platforms, None, &stats).await?;
            }
            Ok(())
        })
        .await;
        record.counted(stats.counters())
    })
    .await
}

/// Writes the index over `image`'s legs when every platform has one, saying so either way.
async fn merged(client: &Registry, image: &ImageRef, platforms: &[Platform], also: Option<&ImageRef>, stats: &Stats) -> anyhow::Result<()> {
    match merge_legs(client, image, platforms, also, stats).await? {
        Merged::Written => tracing::info!("`{image}`: every platform is built; its index is written"),
        Merged::Waiting(missing) => {
            let missing: Vec<String> = missing.iter().map(ToString::to_string).collect();
            tracing::info!("`{image}`: no index yet, waiting for {} (the job that builds the last platform writes it)", missing.join(", "));
        }
    }
    Ok(())
}

/// Says when a leg is built for a platform other than the daemon's: BuildKit does that
/// without emulation when no step runs a program; a `RUN` step needs QEMU (binfmt) or a
/// runner of that platform.
async fn foreign_note(engine: &DockerEngine, platform: &Platform) {
    if let (Ok(false), Ok(native)) = (engine.is_native(&platform.to_string()).await, engine.native_platform().await) {
        tracing::info!(
            "building {platform} on a {native} daemon: fine for steps that run no program (COPY, ADD); a RUN step needs QEMU (binfmt) or a {platform} runner (`jobs.runners`)"
        );
    }
}

async fn build_builder_once(
    engine: &DockerEngine,
    prepared: &Prepared,
    plan: &Plan,
    platform: &Platform,
    actions: &ActionsEnv,
) -> anyhow::Result<()> {
    let platforms = &plan.builder.platforms;
    let image = pushed_as(&plan.builder.image, platform, platforms).to_string();
    foreign_note(engine, platform).await;
    let b = &prepared.spec.builder;
    let dockerfile = std::fs::read_to_string(&b.dockerfile).with_context(|| format!("reading `{}`", b.dockerfile.display()))?;
    let steps = cache_steps_of(prepared.spec.cache.builder, &dockerfile, Some(&b.target));
    // The warm builder is taken whether the plan found it or not: a build under way
    // elsewhere may have made it since, and BuildKit passes over a missing one.
    let warm = warm_image(&plan.builder.image, platform, platforms);
    let req = BuildRequest {
        context: b.context.clone(),
        dockerfile,
        dockerfile_path: Some(b.dockerfile.clone()),
        target: Some(b.target.clone()),
        build_args: b.build_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        labels: builder_labels(prepared),
        cache_from: cache_from(&plan.builder.image, None, Some(&warm), &steps, platform, platforms),
        tag: image.clone(),
        inline_cache: steps.inline,
        platform: Some(platform.to_string()),
    };
    let _held = engine.hold_cache().await;
    let cached = build_stage_caches(engine, &req, &steps, &plan.builder.image, None, platform, platforms, actions).await;
    engine.build(&req, actions).await?;
    engine.push(&image).await?;
    cached.await;
    // The floating tag moves last, once the version it names is pushed.
    engine.tag(&image, &warm.to_string()).await?;
    engine.push(&warm.to_string()).await
}

/// What a cache mode makes of a Dockerfile's stages: under `max` each stage `target` needs
/// is built as a cache image first. A Dockerfile whose stages cannot be followed (no such
/// target) caches as `min` (the build itself then says what is wrong).
fn cache_steps_of(mode: CacheMode, dockerfile: &str, target: Option<&str>) -> CacheSteps {
    let stages = parse_stages(dockerfile);
    match stages_needed(&stages, target) {
        Ok(needed) => cache_steps(mode, &needed),
        Err(e) => {
            tracing::warn!("{e}: caching the target's own steps only");
            cache_steps(if mode == CacheMode::Max { CacheMode::Min } else { mode }, &[])
        }
    }
}

/// The stages the target of `dockerfile` needs, for the plan's notes (`Err`: why not).
pub(crate) fn needed_stages(path: &std::path::Path, target: Option<&str>) -> Result<Vec<dockerfile_stages::Stage>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading `{}`: {e}", path.display()))?;
    let stages = parse_stages(&text);
    stages_needed(&stages, target).map(|n| n.into_iter().cloned().collect()).map_err(|e| e.to_string())
}

/// Under `max`: builds each stage `steps` names as its own target (the same context, args
/// and cache-from as `req`), with inline cache metadata, tagged as its cache image; the
/// pushes go on while the next build runs, and the returned future waits for them. A
/// stage's cache image that fails to build or push costs only the cache (logged).
#[allow(clippy::too_many_arguments)]
async fn build_stage_caches(
    engine: &DockerEngine,
    req: &BuildRequest,
    steps: &CacheSteps,
    image: &ImageRef,
    owner: Option<&str>,
    platform: &Platform,
    platforms: &[Platform],
    actions: &ActionsEnv,
) -> impl std::future::Future<Output = ()> + use<> {
    let mut pushes = Vec::new();
    for stage in &steps.stages {
        let Some(cache) = cache_image(image, owner, stage, platform, platforms).map(|c| c.to_string()) else { continue };
        let stage_req = BuildRequest { target: Some(stage.clone()), tag: cache.clone(), ..req.clone() };
        if let Err(e) = engine.build(&stage_req, actions).await {
            tracing::warn!("stage `{stage}` not cached: {e:#}");
            break;
        }
        tracing::info!("stage `{stage}` built as the cache image `{cache}`");
        let engine = engine.clone();
        pushes.push(tokio::spawn(async move {
            if let Err(e) = engine.push(&cache).await {
                tracing::warn!("the cache image `{cache}` was not pushed: {e:#}");
            }
        }));
    }
    futures::future::join_all(pushes).map(|_| ())
}

/// Builds and pushes each missing base the job picks, `parallel` at a time; each also
/// becomes `{instance}-latest`. With several platforms each picked platform is a leg
/// (skipped when it exists), and the leg that completes an instance writes its index.
/// Unless `keep_images`, each base's local images and dangling build cache are removed once
/// it is pushed (a hosted runner has about 14 GB free, SWE-bench's upstream images are
/// gigabytes). One failure does not stop the others.
pub(crate) async fn build_bases(site: Site<'_>, pick: &Pick, parallel: usize, keep_images: bool) -> Vec<ImageRecord> {
    let Site { engine, client, prepared, plan, actions } = site;
    let wanted = plan.bases.iter().filter(|b| pick.wants(&b.instance, &b.platform));
    let (unresolved, wanted): (Vec<&BasePlan>, Vec<&BasePlan>) = wanted.partition(|b| b.status == Status::Unresolved);
    let (hits, todo): (Vec<&BasePlan>, Vec<&BasePlan>) = wanted.into_iter().partition(|b| b.status == Status::Hit);
    let mut records: Vec<ImageRecord> = hits.into_iter().map(|b| base_record(b, Outcome::Hit)).collect();
    records.extend(unresolved.into_iter().map(unresolved_record));
    let dockerfile = match std::fs::read_to_string(&prepared.spec.bases.dockerfile) {
        Ok(d) => d,
        Err(e) => {
            let why = format!("reading `{}`: {e}", prepared.spec.bases.dockerfile.display());
            records.extend(todo.iter().map(|b| base_record(b, Outcome::Failed).took(0.0, Some(why.clone()))));
            return records;
        }
    };
    let platforms = &plan.builder.platforms;
    // The stages built as cache images (under `max`), whose local images go with the base's.
    let stages = &cache_steps_of(prepared.spec.cache.bases, &dockerfile, prepared.spec.bases.target.as_deref()).stages;
    let to_build: Vec<&BasePlan> = todo.iter().copied().filter(|b| !b.built).collect();
    let pulled = Pulled::counting(&to_build);
    let pulled = &pulled;
    let records = run_jobs(records, todo, parallel, actions, |b| {
        let dockerfile = dockerfile.clone();
        async move {
            let stats = Stats::default();
            let success = if b.built { Outcome::Hit } else { Outcome::Built };
            let record = attempt(base_record(b, Outcome::Cold), success, async {
                if !b.built {
                    build_base(engine, prepared, b, platforms, dockerfile, actions).await?;
                }
                if has_legs(platforms) {
                    let latest = b.image.with_tag(latest_tag(&b.instance));
                    merged(client, &b.image, platforms, Some(&latest), &stats).await?;
                }
                Ok(())
            })
            .await;
            if !keep_images && !b.built {
                free_disk(engine, b, platforms, pulled, stages).await;
            }
            record.counted(stats.counters())
        }
    })
    .await;
    if !keep_images {
        prune_cache(engine).await;
    }
    records
}

/// How many of a shard's bases still need each image they pull (upstreams, warm caches):
/// an image goes when the last base that needs it is done.
struct Pulled(std::sync::Mutex<HashMap<String, usize>>);

impl Pulled {
    fn counting(bases: &[&BasePlan]) -> Pulled {
        let mut uses = HashMap::new();
        for b in bases {
            for image in pulled_by(b) {
                *uses.entry(image).or_insert(0) += 1;
            }
        }
        Pulled(std::sync::Mutex::new(uses))
    }

    /// One base is done: the images it pulled that no other base of the shard still needs.
    fn done(&self, b: &BasePlan) -> Vec<String> {
        let Ok(mut uses) = self.0.lock() else { return Vec::new() };
        pulled_by(b)
            .into_iter()
            .filter(|image| {
                let n = uses.entry(image.clone()).or_insert(1);
                *n = n.saturating_sub(1);
                *n == 0
            })
            .collect()
    }
}

fn pulled_by(b: &BasePlan) -> Vec<String> {
    std::iter::once(b.from.clone()).chain(b.cache_from.iter().map(ToString::to_string)).collect()
}

/// Removes what building `b` left on the daemon: the base and its `-latest` tag (pushed
/// already), the images it pulled that no later base of the shard needs, and the layer cache
/// nothing refers to (when no build of this process is under way). A failure to free disk is logged, never the base's
/// failure.
async fn free_disk(engine: &DockerEngine, b: &BasePlan, platforms: &[Platform], pulled: &Pulled, stages: &[String]) {
    let mut gone = pushed_tags(b, platforms);
    gone.extend(stages.iter().filter_map(|s| cache_image(&b.image, Some(&b.instance), s, &b.platform, platforms)).map(|c| c.to_string()));
    gone.extend(pulled.done(b));
    for image in &gone {
        if let Err(e) = engine.remove(image).await {
            tracing::debug!("{e:#}");
        }
    }
    // The engine prunes only while none of this process's builds is under way.
    prune_cache(engine).await;
}

async fn prune_cache(engine: &DockerEngine) {
    match engine.prune_build_cache().await {
        Ok(bytes) => tracing::debug!("removed {bytes} bytes of build cache"),
        Err(e) => tracing::debug!("{e:#}"),
    }
}

/// The tags a base's build pushes: its image and `{instance}-latest`, or, with several
/// platforms, their legs for `b`'s platform.
fn pushed_tags(b: &BasePlan, platforms: &[Platform]) -> Vec<String> {
    let latest = b.image.with_tag(latest_tag(&b.instance));
    vec![pushed_as(&b.image, &b.platform, platforms).to_string(), pushed_as(&latest, &b.platform, platforms).to_string()]
}

async fn build_base(
    engine: &DockerEngine,
    prepared: &Prepared,
    b: &BasePlan,
    platforms: &[Platform],
    dockerfile: String,
    actions: &ActionsEnv,
) -> anyhow::Result<()> {
    let [image, latest] = <[String; 2]>::try_from(pushed_tags(b, platforms)).map_err(|_| anyhow::anyhow!("two tags"))?;
    foreign_note(engine, &b.platform).await;
    let steps = cache_steps_of(prepared.spec.cache.bases, &dockerfile, prepared.spec.bases.target.as_deref());
    let mut build_args: HashMap<String, String> = b.build_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    build_args.insert("BASE_IMAGE".into(), b.from.clone());
    let req = BuildRequest {
        context: prepared.spec.bases.context.clone(),
        dockerfile,
        dockerfile_path: Some(prepared.spec.bases.dockerfile.clone()),
        target: prepared.spec.bases.target.clone(),
        build_args,
        labels: base_labels(prepared, b, platforms),
        cache_from: cache_from(&b.image, Some(&b.instance), b.cache_from.as_ref(), &steps, &b.platform, platforms),
        tag: image.clone(),
        inline_cache: steps.inline,
        platform: Some(b.platform.to_string()),
    };
    let _held = engine.hold_cache().await;
    let cached = build_stage_caches(engine, &req, &steps, &b.image, Some(&b.instance), &b.platform, platforms, actions).await;
    engine.build(&req, actions).await?;
    engine.push(&image).await?;
    cached.await;
    engine.tag(&image, &latest).await?;
    engine.push(&latest).await
}

/// A base's labels: its upstream (`org.opencontainers.image.base.name` and `.base.digest`)
/// and its input record, which later plans read from `{instance}-latest`.
fn base_labels(prepared: &Prepared, b: &BasePlan, platforms: &[Platform]) -> HashMap<String, String> {
    let record = InputsRecord::of_base(&prepared.base_recipe, &b.build_args, platforms, &b.from, b.from_digest.as_ref());
    let mut labels = HashMap::from([(BASE_NAME.to_owned(), b.from.clone()), (INPUTS_LABEL.to_owned(), record.to_label())]);
    if let Some(d) = &b.from_digest {
        labels.insert(BASE_DIGEST.to_owned(), d.to_string());
    }
    labels
}

/// The builder's labels: its version and its input record (when its inputs can be read).
fn builder_labels(prepared: &Prepared) -> HashMap<String, String> {
    let mut labels = HashMap::from([("dev.split-build.builder-version".to_owned(), prepared.builder_version.to_string())]);
    match prepared.builder_inputs() {
        Ok(r) => {
            labels.insert(INPUTS_LABEL.to_owned(), r.to_label());
        }
        Err(e) => tracing::warn!("the builder's input record is left out: {e}"),
    }
    labels
}
