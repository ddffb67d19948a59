//! `build`: the builder (once per version) or a shard of bases, built through the Docker
//! daemon and pushed.

use std::time::Instant;

use crate::adapters::actions_env::ActionsEnv;
use crate::cli::{BuildArgs, BuildStage};
use crate::outcome::{Done, UsageError};
use crate::stages::daemon::{Site, build_bases, build_builder, connect_daemon};
use crate::stages::emit::finish;
use crate::stages::handover::load_plan;
use crate::stages::observe::{connect_paced, make_plan, recheck_unless_fresh};
use crate::stages::prepare::{Pick, prepare};

/// `split-build build`.
pub(crate) async fn run(args: BuildArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let started = Instant::now();
    let prepared = prepare(&args.common)?;
    let pick = prepared.pick(args.items.as_deref(), args.platform.as_deref())?;
    if args.stage == BuildStage::Builder && pick.items.is_some() {
        return Err(UsageError("--items is for --stage bases; the builder has one image per version".into()).into());
    }
    let handed = args.plan.as_ref().map(|path| load_plan(path, &prepared)).transpose()?;
    // A job handed the plan paces at its stage's share of the run's write budget.
    let share = handed.as_ref().and_then(|plan| match args.stage {
        BuildStage::Builder => plan.matrices.builder.writes_per_second(),
        BuildStage::Bases => plan.matrices.bases.writes_per_second(),
    });
    let client = connect_paced(&args.registry, &prepared.spec.registry.host, share)?;
    // The builder job asks about the builder alone; a bases job about its own instances.
    let asks = match args.stage {
        BuildStage::Builder => Pick { items: Some(Default::default()), platform: pick.platform.clone() },
        BuildStage::Bases => pick.clone(),
    };
    let concurrency = usize::from(args.registry.concurrency);
    let plan = match handed {
        Some(mut plan) => {
            recheck_unless_fresh(&client, &mut plan, &asks, concurrency, actions).await;
            plan
        }
        None => make_plan(&prepared, Some(&client), concurrency, &asks, args.registry.upstream()).await?,
    };
    let engine = connect_daemon(&args.registry, &prepared.spec.registry.host).await?;
    let site = Site { engine: &engine, client: &client, prepared: &prepared, plan: &plan, actions };
    let records = match args.stage {
        BuildStage::Builder => build_builder(site, &pick).await,
        BuildStage::Bases => build_bases(site, &pick, usize::from(args.parallel), args.keep_images).await,
    };
    let report = finish("build", records, started, client.totals(), &args.common, actions)?;
    Ok(Done::with_failures(report.failures()))
}
