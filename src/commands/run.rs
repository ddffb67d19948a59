//! `run`: plan, then the builder and the bases (at the same time), then the agents, in
//! one process. Content-addressed tags make it resumable: a rerun finds what a killed run
//! finished and makes only the rest.

use std::time::Instant;

use crate::adapters::actions_env::ActionsEnv;
use crate::app::Done;
use crate::cli::RunArgs;
use crate::commands::assemble::assemble_append;
use crate::commands::assemble_dockerfile::assemble_with_daemon;
use crate::commands::build::{build_bases, build_builder, engine, finish};
use crate::commands::observe;
use crate::commands::plan::{log_counts, make_plan_with, prepare};
use crate::core::report::{ImageRecord, Outcome};
use crate::core::spec::Method;

/// `split-build run`.
pub async fn run(args: RunArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let started = Instant::now();
    let prepared = prepare(&args.common)?;
    let concurrency = usize::from(args.registry.concurrency);
    let client = observe::connect(&args.registry, actions)?;
    let plan = make_plan_with(&prepared, Some(&client), concurrency).await?;
    log_counts(&plan);
    let c = plan.counts();
    let parallel = usize::from(args.parallel);
    let mut records = Vec::new();
    if c.builder_needed || c.bases_missing > 0 {
        let engine = engine(&args.registry).await?;
        let (builder, bases) = tokio::join!(
            build_builder(&engine, &prepared, &plan, actions),
            build_bases(&engine, &prepared, &plan, None, None, parallel, actions)
        );
        records.extend(builder);
        records.extend(bases);
    } else {
        records.extend(build_builder_hits(&plan));
    }
    // Agents whose base or builder failed cannot be made now; they are left for a rerun.
    let builder_failed = records.iter().any(|r| r.stage == "builder" && r.status == Outcome::Failed);
    let failed_bases: std::collections::BTreeSet<String> =
        records.iter().filter(|r| r.stage == "bases" && r.status == Outcome::Failed).filter_map(|r| r.instance.clone()).collect();
    let ready: std::collections::BTreeSet<String> =
        prepared.spec.bases.instances.iter().filter(|i| !builder_failed && !failed_bases.contains(*i)).cloned().collect();
    if !ready.is_empty() {
        let agents = match prepared.spec.agents.method {
            Method::Append => assemble_append(&client, &prepared, &plan, Some(&ready), None, concurrency).await?,
            Method::Dockerfile => {
                let engine = engine(&args.registry).await?;
                assemble_with_daemon(&engine, &prepared, &plan, Some(&ready), None, parallel, actions).await
            }
        };
        records.extend(agents);
    }
    let skipped = prepared.spec.bases.instances.len() - ready.len();
    if skipped > 0 {
        tracing::warn!("{skipped} instances' agents were not made because their base or the builder failed; rerun after fixing");
    }
    finish("run", records, started, &args.common, actions)
}

fn build_builder_hits(plan: &crate::core::plan::Plan) -> Vec<ImageRecord> {
    let mut out = Vec::new();
    let platforms: Vec<String> = plan.builder.platforms.iter().map(ToString::to_string).collect();
    out.push(ImageRecord::new("builder", &plan.builder.image.to_string(), &platforms.join(","), Outcome::Hit));
    for b in &plan.bases {
        out.push(ImageRecord::new("bases", &b.image.to_string(), &b.platform.to_string(), Outcome::Hit).of(Some(&b.instance), None));
    }
    out
}
