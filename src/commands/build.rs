//! `build`: the builder (once per version) and the bases (a shard of instances) built
//! through the Docker daemon and pushed; plus the `dockerfile` method of `assemble`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use futures::{StreamExt as _, stream};

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::credentials::Credentials;
use crate::adapters::docker_engine::{BuildRequest, DockerEngine};
use crate::app::{Done, UsageError};
use crate::cli::{BuildArgs, Stage};
use crate::commands::assemble::{parse_items, parse_platform};
use crate::commands::observe;
use crate::commands::plan::{Prepared, emit_summary, make_plan_with, prepare, write_report};
use crate::core::image_config::{BASE_NAME, BUILDER};
use crate::core::plan::{Plan, Status, latest_tag};
use crate::core::platform::Platform;
use crate::core::report::{ImageRecord, Outcome, Report};
use crate::core::summary::{SUMMARY_BUDGET, report_summary};

/// Counts finished images and logs a progress line for each (done/total, elapsed, rough
/// remaining): readable on a terminal and in an Actions log alike.
pub struct Progress {
    total: usize,
    done: AtomicUsize,
    started: Instant,
}

impl Progress {
    /// Progress over `total` images.
    pub fn new(total: usize) -> Arc<Progress> {
        Arc::new(Progress { total, done: AtomicUsize::new(0), started: Instant::now() })
    }

    /// Records one finished image: a redrawn bar on a terminal, a log line elsewhere (and
    /// always for a failure).
    pub fn finished(&self, r: &ImageRecord) {
        use std::io::IsTerminal as _;
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if done < self.total { elapsed / done as f64 * (self.total - done) as f64 } else { 0.0 };
        let (elapsed, left) = (crate::core::summary::human_secs(elapsed), crate::core::summary::human_secs(left));
        let terminal = std::io::stderr().is_terminal() && std::env::var("GITHUB_ACTIONS").is_err();
        if terminal && r.error.is_none() {
            const WIDTH: usize = 30;
            let filled = WIDTH * done / self.total.max(1);
            eprint!(
                "\r\x1b[2K[{}{}] {done}/{} elapsed {elapsed}, ~{left} left",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                self.total
            );
            if done == self.total {
                eprintln!();
            }
            return;
        }
        if terminal {
            eprint!("\r\x1b[2K");
        }
        let why = r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        tracing::info!(
            "[{done}/{}] {} {} in {:.1}s; elapsed {elapsed}, ~{left} left{why}",
            self.total,
            r.image,
            r.status.as_str(),
            r.seconds
        );
    }
}

/// The daemon, with the same credentials as the registry client.
pub async fn engine(opts: &crate::cli::RegistryOpts) -> anyhow::Result<DockerEngine> {
    DockerEngine::connect(Credentials::load(opts)).await
}

/// `split-build build`.
pub async fn run(args: BuildArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let started = Instant::now();
    let prepared = prepare(&args.common)?;
    let items = parse_items(args.items.as_deref(), &prepared)?;
    let platform = parse_platform(args.platform.as_deref(), &prepared)?;
    if args.stage == Stage::Builder && items.is_some() {
        return Err(UsageError("--items is for --stage bases; the builder has one image per version".into()).into());
    }
    let client = observe::connect(&args.registry, actions)?;
    let plan = make_plan_with(&prepared, Some(&client), usize::from(args.registry.concurrency)).await?;
    let engine = engine(&args.registry).await?;
    let records = match args.stage {
        Stage::Builder => build_builder(&engine, &prepared, &plan, actions).await,
        Stage::Bases => {
            build_bases(&engine, &prepared, &plan, items.as_ref(), platform.as_ref(), usize::from(args.parallel), actions).await
        }
    };
    finish("build", records, started, &args.common, actions)
}

/// Writes the report and summary of a command that made images; the exit status.
pub fn finish(
    command: &str,
    images: Vec<ImageRecord>,
    started: Instant,
    common: &crate::cli::Common,
    actions: &ActionsEnv,
) -> anyhow::Result<Done> {
    let report = Report { command: command.into(), seconds: started.elapsed().as_secs_f64(), images };
    if let Some(path) = &common.report {
        write_report(path, &report)?;
    }
    emit_summary(
        &report_summary(&format!("split-build {command}"), std::slice::from_ref(&report), SUMMARY_BUDGET),
        common.summary.as_deref(),
        actions,
    )?;
    let failed = report.failures();
    Ok(if failed == 0 { Done::Ok } else { Done::Failed(failed) })
}

/// Builds and pushes the builder's payload stage, unless it exists.
pub async fn build_builder(engine: &DockerEngine, prepared: &Prepared, plan: &Plan, actions: &ActionsEnv) -> Vec<ImageRecord> {
    let image = plan.builder.image.to_string();
    let platforms: Vec<String> = plan.builder.platforms.iter().map(ToString::to_string).collect();
    let platform = platforms.join(",");
    if plan.builder.status == Status::Hit {
        return vec![ImageRecord::new("builder", &image, &platform, Outcome::Hit).of(None, None)];
    }
    let t = Instant::now();
    actions.group(&format!("building the builder {image}"));
    let result = build_builder_once(engine, prepared, &image, &platforms).await;
    actions.end_group();
    let r = match result {
        Ok(()) => ImageRecord::new("builder", &image, &platform, Outcome::Built).of(None, None).took(t.elapsed().as_secs_f64(), None),
        Err(e) => ImageRecord::new("builder", &image, &platform, Outcome::Failed)
            .of(None, None)
            .took(t.elapsed().as_secs_f64(), Some(format!("{e:#}"))),
    };
    Progress::new(1).finished(&r);
    vec![r]
}

async fn check_native(engine: &DockerEngine, platforms: &[String]) -> anyhow::Result<()> {
    let native = engine.native_platform().await?;
    match platforms {
        [one] if *one == native || one.starts_with(&format!("{native}/")) => Ok(()),
        _ => anyhow::bail!(
            "this daemon builds {native} images with the legacy builder; {} needs a daemon of that platform per matrix job (run each platform's job on its own runner)",
            platforms.join(", ")
        ),
    }
}

async fn build_builder_once(engine: &DockerEngine, prepared: &Prepared, image: &str, platforms: &[String]) -> anyhow::Result<()> {
    check_native(engine, platforms).await?;
    let b = &prepared.spec.builder;
    let dockerfile = std::fs::read_to_string(&b.dockerfile).with_context(|| format!("reading `{}`", b.dockerfile.display()))?;
    let req = BuildRequest {
        context: b.context.clone(),
        dockerfile,
        target: Some(b.target.clone()),
        build_args: b.build_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        labels: HashMap::from([("dev.split-build.builder-version".to_owned(), prepared.builder_version.to_string())]),
        cache_from: vec![],
        tag: image.to_owned(),
        inline_cache: prepared.spec.cache != crate::core::spec::CacheMode::Off,
    };
    engine.build(&req, &ActionsEnv::default()).await?;
    engine.push(image).await
}

/// Builds and pushes each missing base of `items` (default: all), `parallel` at a time;
/// each also becomes `{instance}-latest`. One failure does not stop the others.
pub async fn build_bases(
    engine: &DockerEngine,
    prepared: &Prepared,
    plan: &Plan,
    items: Option<&BTreeSet<String>>,
    platform: Option<&Platform>,
    parallel: usize,
    actions: &ActionsEnv,
) -> Vec<ImageRecord> {
    let wanted: Vec<&crate::core::plan::BasePlan> =
        plan.bases.iter().filter(|b| items.is_none_or(|s| s.contains(&b.instance)) && platform.is_none_or(|p| *p == b.platform)).collect();
    let mut records: Vec<ImageRecord> = wanted
        .iter()
        .filter(|b| b.status == Status::Hit)
        .map(|b| ImageRecord::new("bases", &b.image.to_string(), &b.platform.to_string(), Outcome::Hit).of(Some(&b.instance), None))
        .collect();
    let todo: Vec<&&crate::core::plan::BasePlan> = wanted.iter().filter(|b| b.status != Status::Hit).collect();
    let progress = Progress::new(todo.len());
    let dockerfile = match std::fs::read_to_string(&prepared.spec.bases.dockerfile) {
        Ok(d) => d,
        Err(e) => {
            let why = format!("reading `{}`: {e}", prepared.spec.bases.dockerfile.display());
            records.extend(todo.iter().map(|b| {
                ImageRecord::new("bases", &b.image.to_string(), &b.platform.to_string(), Outcome::Failed)
                    .of(Some(&b.instance), None)
                    .took(0.0, Some(why.clone()))
            }));
            return records;
        }
    };
    let native_ok = check_native(engine, &[plan.builder.platforms.iter().map(ToString::to_string).next().unwrap_or_default()]).await;
    let made: Vec<ImageRecord> = stream::iter(todo)
        .map(|b| {
            let dockerfile = dockerfile.clone();
            let progress = progress.clone();
            let native_ok = native_ok.as_ref().map_err(|e| format!("{e:#}")).cloned();
            async move {
                let t = Instant::now();
                let image = b.image.to_string();
                let result = match native_ok {
                    Err(e) => Err(anyhow::anyhow!(e)),
                    Ok(()) => build_base(engine, prepared, b, dockerfile, actions).await,
                };
                let r = match result {
                    Ok(()) => ImageRecord::new("bases", &image, &b.platform.to_string(), Outcome::Built)
                        .of(Some(&b.instance), None)
                        .took(t.elapsed().as_secs_f64(), None),
                    Err(e) => ImageRecord::new("bases", &image, &b.platform.to_string(), Outcome::Failed)
                        .of(Some(&b.instance), None)
                        .took(t.elapsed().as_secs_f64(), Some(format!("{e:#}"))),
                };
                progress.finished(&r);
                r
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    records.extend(made);
    records.sort_by(|a, b| a.image.cmp(&b.image));
    records
}

async fn build_base(
    engine: &DockerEngine,
    prepared: &Prepared,
    b: &crate::core::plan::BasePlan,
    dockerfile: String,
    actions: &ActionsEnv,
) -> anyhow::Result<()> {
    let image = b.image.to_string();
    let mut build_args: HashMap<String, String> = b.build_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    build_args.insert("BASE_IMAGE".into(), b.from.clone());
    let req = BuildRequest {
        context: prepared.spec.bases.context.clone(),
        dockerfile,
        target: prepared.spec.bases.target.clone(),
        build_args,
        labels: HashMap::from([(BASE_NAME.to_owned(), b.from.clone())]),
        cache_from: b.cache_from.iter().map(ToString::to_string).collect(),
        tag: image.clone(),
        inline_cache: prepared.spec.cache != crate::core::spec::CacheMode::Off,
    };
    engine.build(&req, actions).await?;
    engine.push(&image).await?;
    let latest = b.image.with_tag(latest_tag(&b.instance)).to_string();
    engine.tag(&image, &latest).await?;
    engine.push(&latest).await
}

/// `assemble --method dockerfile`: each missing agent built through the daemon from a
/// generated Dockerfile (`FROM base`, `COPY --from=<builder> / /`, the variant's settings)
/// and pushed. For users who need `RUN` steps on top of the base.
pub async fn assemble_with_daemon(
    engine: &DockerEngine,
    prepared: &Prepared,
    plan: &Plan,
    items: Option<&BTreeSet<String>>,
    parallel: usize,
    actions: &ActionsEnv,
) -> Vec<ImageRecord> {
    let variants: HashMap<&str, &crate::core::spec::Variant> = prepared.spec.agents.variants.iter().map(|v| (v.name.as_str(), v)).collect();
    let mut seen = BTreeSet::new();
    let wanted: Vec<&crate::core::plan::AgentPlan> =
        plan.agents.iter().filter(|a| items.is_none_or(|s| s.contains(&a.instance)) && seen.insert(a.image.to_string())).collect();
    let mut records: Vec<ImageRecord> = wanted
        .iter()
        .filter(|a| a.status == Status::Hit)
        .map(|a| {
            ImageRecord::new("agents", &a.image.to_string(), &a.platform.to_string(), Outcome::Hit).of(Some(&a.instance), Some(&a.variant))
        })
        .collect();
    let todo: Vec<&&crate::core::plan::AgentPlan> = wanted.iter().filter(|a| a.status != Status::Hit).collect();
    let progress = Progress::new(todo.len());
    let builder = plan.builder.image.to_string();
    let made: Vec<ImageRecord> = stream::iter(todo)
        .map(|a| {
            let progress = progress.clone();
            let builder = builder.clone();
            let variant = variants.get(a.variant.as_str()).copied();
            async move {
                let t = Instant::now();
                let image = a.image.to_string();
                let result = match variant {
                    None => Err(anyhow::anyhow!("variant `{}` is not in the spec", a.variant)),
                    Some(v) => {
                        let dockerfile = thin_dockerfile(&a.base.to_string(), &builder, v);
                        let empty = tempfile_dir();
                        match empty {
                            Err(e) => Err(e),
                            Ok(dir) => {
                                let req = BuildRequest {
                                    context: dir.path().to_path_buf(),
                                    dockerfile,
                                    tag: image.clone(),
                                    ..BuildRequest::default()
                                };
                                match engine.build(&req, actions).await {
                                    Ok(()) => engine.push(&image).await,
                                    Err(e) => Err(e),
                                }
                            }
                        }
                    }
                };
                let (status, error) = match result {
                    Ok(()) => (Outcome::Assembled, None),
                    Err(e) => (Outcome::Failed, Some(format!("{e:#}"))),
                };
                let r = ImageRecord::new("agents", &image, &a.platform.to_string(), status)
                    .of(Some(&a.instance), Some(&a.variant))
                    .took(t.elapsed().as_secs_f64(), error);
                progress.finished(&r);
                r
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    records.extend(made);
    records.sort_by(|a, b| a.image.cmp(&b.image));
    records
}

/// An empty build context.
fn tempfile_dir() -> anyhow::Result<EmptyDir> {
    let path = std::env::temp_dir().join(format!("split-build-ctx-{}-{}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&path).with_context(|| format!("creating `{}`", path.display()))?;
    Ok(EmptyDir(path))
}

/// A directory removed on drop.
struct EmptyDir(std::path::PathBuf);

impl EmptyDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Dockerfile of the `dockerfile` method (pure).
pub fn thin_dockerfile(base: &str, builder: &str, v: &crate::core::spec::Variant) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""));
    let mut out = format!("FROM {base}\nCOPY --from={builder} / /\n");
    for (k, val) in &v.env {
        out.push_str(&format!("ENV {k}={}\n", q(val)));
    }
    let mut labels: Vec<(String, String)> = v.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.push((BASE_NAME.into(), base.into()));
    labels.push((BUILDER.into(), builder.into()));
    for (k, val) in labels {
        out.push_str(&format!("LABEL {}={}\n", q(&k), q(&val)));
    }
    if let Some(w) = &v.workdir {
        out.push_str(&format!("WORKDIR {w}\n"));
    }
    if let Some(ep) = &v.entrypoint {
        out.push_str(&format!("ENTRYPOINT {}\n", serde_json::to_string(ep).unwrap_or_default()));
    }
    if let Some(cmd) = &v.cmd {
        out.push_str(&format!("CMD {}\n", serde_json::to_string(cmd).unwrap_or_default()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn thin_dockerfile_spells_the_variant() {
        let v = crate::core::spec::Variant {
            name: "x".into(),
            entrypoint: Some(vec!["/a b".into()]),
            cmd: Some(vec!["c".into()]),
            env: BTreeMap::from([("K".into(), "v w".into())]),
            labels: BTreeMap::new(),
            workdir: Some("/w".into()),
        };
        let d = thin_dockerfile("r/base:1", "r/builder:2", &v);
        insta::assert_snapshot!(d, @r#"
        FROM r/base:1
        COPY --from=r/builder:2 / /
        ENV K="v w"
        LABEL "org.opencontainers.image.base.name"="r/base:1"
        LABEL "dev.split-build.builder"="r/builder:2"
        WORKDIR /w
        ENTRYPOINT ["/a b"]
        CMD ["c"]
        "#);
    }
}
