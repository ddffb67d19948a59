//! Building through the Docker daemon: the builder (once per version) and the bases (each
//! also tagged `{instance}-latest`, the warm cache of later plans), pushed as they finish.

use std::collections::HashMap;

use anyhow::Context as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::credentials::Credentials;
use crate::adapters::docker_engine::{BuildRequest, DockerEngine};
use crate::cli::RegistryOpts;
use crate::core::image_config::BASE_NAME;
use crate::core::plan::{BasePlan, Plan, Status, latest_tag};
use crate::core::report::{ImageRecord, Outcome, Stage};
use crate::core::spec::CacheMode;
use crate::stages::jobs::{attempt, run_jobs};
use crate::stages::prepare::{Pick, Prepared};

/// The daemon, with the same credentials as the registry client (the flags for the spec's
/// `registry` host only).
pub(crate) async fn connect_daemon(opts: &RegistryOpts, registry_host: &str) -> anyhow::Result<DockerEngine> {
    DockerEngine::connect(Credentials::load(opts).flags_for(registry_host)).await
}

/// The builder's record: one image over all its platforms.
fn builder_record(plan: &Plan, status: Outcome) -> ImageRecord {
    let platforms: Vec<String> = plan.builder.platforms.iter().map(ToString::to_string).collect();
    ImageRecord::new(Stage::Builder, &plan.builder.image.to_string(), &platforms.join(","), status)
}

fn base_record(b: &BasePlan, status: Outcome) -> ImageRecord {
    ImageRecord::new(Stage::Bases, &b.image.to_string(), &b.platform.to_string(), status).of(Some(&b.instance), None)
}

/// Records of a plan whose builder and bases all exist (nothing to build).
pub(crate) fn builder_and_bases_hits(plan: &Plan) -> Vec<ImageRecord> {
    let mut out = vec![builder_record(plan, Outcome::Hit)];
    out.extend(plan.bases.iter().map(|b| base_record(b, Outcome::Hit)));
    out
}

/// Builds and pushes the builder's payload stage, unless it exists.
pub(crate) async fn build_builder(engine: &DockerEngine, prepared: &Prepared, plan: &Plan, actions: &ActionsEnv) -> Vec<ImageRecord> {
    if plan.builder.status == Status::Hit {
        return vec![builder_record(plan, Outcome::Hit)];
    }
    run_jobs(Vec::new(), vec![()], 1, actions, |()| {
        attempt(builder_record(plan, Outcome::Cold), Outcome::Built, build_builder_once(engine, prepared, plan, actions))
    })
    .await
}

/// Whether a daemon of platform `native` can make an image of `platforms`: only its own,
/// and only one. (A multi-platform spec names indexes; a daemon pushes one platform per
/// tag, so those images must come from elsewhere, e.g. `docker buildx`, for now.)
fn check_native(native: &str, platforms: &[String]) -> anyhow::Result<()> {
    match platforms {
        [one] if *one == native || one.starts_with(&format!("{native}/")) => Ok(()),
        [one] => anyhow::bail!("this daemon builds {native} images, not {one}: run this platform's matrix job on a {one} runner"),
        _ => anyhow::bail!(
            "{} name one multi-platform index per tag, which daemon builds do not make yet (a daemon pushes one platform per tag): build these images with `docker buildx build --platform {}` and use `assemble`",
            platforms.join(", "),
            platforms.join(",")
        ),
    }
}

async fn build_builder_once(engine: &DockerEngine, prepared: &Prepared, plan: &Plan, actions: &ActionsEnv) -> anyhow::Result<()> {
    let image = plan.builder.image.to_string();
    let platforms: Vec<String> = plan.builder.platforms.iter().map(ToString::to_string).collect();
    check_native(&engine.native_platform().await?, &platforms)?;
    let b = &prepared.spec.builder;
    let dockerfile = std::fs::read_to_string(&b.dockerfile).with_context(|| format!("reading `{}`", b.dockerfile.display()))?;
    let req = BuildRequest {
        context: b.context.clone(),
        dockerfile,
        dockerfile_path: Some(b.dockerfile.clone()),
        target: Some(b.target.clone()),
        build_args: b.build_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        labels: HashMap::from([("dev.split-build.builder-version".to_owned(), prepared.builder_version.to_string())]),
        cache_from: vec![],
        tag: image.clone(),
        inline_cache: prepared.spec.cache != CacheMode::Off,
        platform: platforms.first().cloned(),
    };
    engine.build(&req, actions).await?;
    engine.push(&image).await
}

/// Builds and pushes each missing base the job picks, `parallel` at a time (unless
/// `keep_images`, each base's local images and dangling build cache are removed once it is
/// pushed: a hosted runner has about 14 GB free, SWE-bench's upstream images are gigabytes); each also becomes `{instance}-latest`. One failure does not
/// stop the others.
pub(crate) async fn build_bases(
    engine: &DockerEngine,
    prepared: &Prepared,
    plan: &Plan,
    pick: &Pick,
    parallel: usize,
    keep_images: bool,
    actions: &ActionsEnv,
) -> Vec<ImageRecord> {
    let wanted = plan.bases.iter().filter(|b| pick.wants(&b.instance, &b.platform));
    let (hits, todo): (Vec<&BasePlan>, Vec<&BasePlan>) = wanted.partition(|b| b.status == Status::Hit);
    let mut records: Vec<ImageRecord> = hits.into_iter().map(|b| base_record(b, Outcome::Hit)).collect();
    let dockerfile = match std::fs::read_to_string(&prepared.spec.bases.dockerfile) {
        Ok(d) => d,
        Err(e) => {
            let why = format!("reading `{}`: {e}", prepared.spec.bases.dockerfile.display());
            records.extend(todo.iter().map(|b| base_record(b, Outcome::Failed).took(0.0, Some(why.clone()))));
            return records;
        }
    };
    let native = engine.native_platform().await.map_err(|e| format!("{e:#}"));
    let builder_platforms: Vec<String> = plan.builder.platforms.iter().map(ToString::to_string).collect();
    let pulled = Pulled::counting(&todo);
    let pulled = &pulled;
    let records = run_jobs(records, todo, parallel, actions, |b| {
        let native_ok = native.clone().and_then(|n| {
            let wanted = if builder_platforms.len() > 1 { builder_platforms.clone() } else { vec![b.platform.to_string()] };
            check_native(&n, &wanted).map_err(|e| format!("{e:#}"))
        });
        let dockerfile = dockerfile.clone();
        async move {
            let record = attempt(base_record(b, Outcome::Cold), Outcome::Built, async {
                native_ok.map_err(|e| anyhow::anyhow!(e))?;
                build_base(engine, prepared, b, dockerfile, actions).await
            })
            .await;
            if !keep_images {
                free_disk(engine, b, pulled).await;
            }
            record
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
async fn free_disk(engine: &DockerEngine, b: &BasePlan, pulled: &Pulled) {
    let mut gone = vec![b.image.to_string(), b.image.with_tag(latest_tag(&b.instance)).to_string()];
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

async fn build_base(
    engine: &DockerEngine,
    prepared: &Prepared,
    b: &BasePlan,
    dockerfile: String,
    actions: &ActionsEnv,
) -> anyhow::Result<()> {
    let image = b.image.to_string();
    let mut build_args: HashMap<String, String> = b.build_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    build_args.insert("BASE_IMAGE".into(), b.from.clone());
    let req = BuildRequest {
        context: prepared.spec.bases.context.clone(),
        dockerfile,
        dockerfile_path: Some(prepared.spec.bases.dockerfile.clone()),
        target: prepared.spec.bases.target.clone(),
        build_args,
        labels: HashMap::from([(BASE_NAME.to_owned(), b.from.clone())]),
        cache_from: b.cache_from.iter().map(ToString::to_string).collect(),
        tag: image.clone(),
        inline_cache: prepared.spec.cache != CacheMode::Off,
        platform: Some(b.platform.to_string()),
    };
    engine.build(&req, actions).await?;
    engine.push(&image).await?;
    let latest = b.image.with_tag(latest_tag(&b.instance)).to_string();
    engine.tag(&image, &latest).await?;
    engine.push(&latest).await
}

#[cfg(test)]
mod tests {
    use super::check_native;

    #[test]
    fn a_daemon_builds_its_own_single_platform_only() {
        let p = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert!(check_native("linux/amd64", &p(&["linux/amd64"])).is_ok());
        assert!(check_native("linux/arm64", &p(&["linux/arm64/v8"])).is_ok());
        let other = check_native("linux/amd64", &p(&["linux/arm64"])).unwrap_err().to_string();
        assert!(other.contains("linux/arm64 runner"), "{other}");
        let two = check_native("linux/amd64", &p(&["linux/amd64", "linux/arm64"])).unwrap_err().to_string();
        assert!(two.contains("docker buildx build --platform linux/amd64,linux/arm64"), "{two}");
    }
}
