//! `build`: the builder (once per version) and the bases (a shard of instances) built
//! through the Docker daemon and pushed.

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
use crate::core::image_config::BASE_NAME;
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
    let progress = Progress::new(1);
    let result = build_builder_once(engine, prepared, &image, &platforms, actions).await;
    let r = match result {
        Ok(()) => ImageRecord::new("builder", &image, &platform, Outcome::Built).of(None, None).took(t.elapsed().as_secs_f64(), None),
        Err(e) => ImageRecord::new("builder", &image, &platform, Outcome::Failed)
            .of(None, None)
            .took(t.elapsed().as_secs_f64(), Some(format!("{e:#}"))),
    };
    progress.finished(&r);
    vec![r]
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

async fn build_builder_once(
    engine: &DockerEngine,
    prepared: &Prepared,
    image: &str,
    platforms: &[String],
    actions: &ActionsEnv,
) -> anyhow::Result<()> {
    check_native(&engine.native_platform().await?, platforms)?;
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
        platform: platforms.first().cloned(),
    };
    engine.build(&req, actions).await?;
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
    let native = engine.native_platform().await.map_err(|e| format!("{e:#}"));
    let made: Vec<ImageRecord> = stream::iter(todo)
        .map(|b| {
            let dockerfile = dockerfile.clone();
            let progress = progress.clone();
            let platforms: Vec<String> = plan.builder.platforms.iter().map(ToString::to_string).collect();
            let native_ok = native.clone().and_then(|n| {
                let wanted = if platforms.len() > 1 { platforms } else { vec![b.platform.to_string()] };
                check_native(&n, &wanted).map_err(|e| format!("{e:#}"))
            });
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
