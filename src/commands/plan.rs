//! `plan`: spec → hashes → (registry) → plan JSON on stdout, outputs, summary, report.

use std::time::Instant;

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::registry::Registry;
use crate::cli::PlanArgs;
use crate::core::outputs::plan_outputs;
use crate::core::report::Report;
use crate::core::summary::{SUMMARY_BUDGET, plan_summary};
use crate::outcome::Done;
use crate::stages::emit::{emit_summary, log_counts, write_json_stdout, write_report};
use crate::stages::handover::write_plan;
use crate::stages::observe::{connect, make_plan};
use crate::stages::prepare::{Pick, prepare};

/// `split-build plan`.
pub(crate) async fn run(args: PlanArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let started = Instant::now();
    let prepared = {
        let _group = actions.log_group("split-build plan: hashing the spec's inputs");
        prepare(&args.common)
    };
    let mut prepared = prepared?;
    prepared.spec = prepared.spec.with_write_budget(args.write_budget);
    let client = if args.offline { None } else { Some(connect(&args.registry, &prepared.spec.registry.host)?) };
    let mut plan =
        make_plan(&prepared, client.as_ref(), usize::from(args.registry.concurrency), &Pick::default(), args.registry.upstream()).await?;
    plan.made_in_run = actions.run_id.clone();

    write_json_stdout(&plan)?;
    if let Some(path) = &args.plan_file {
        write_plan(path, &plan)?;
    }
    if actions.output.is_some() {
        actions.set_outputs(&plan_outputs(&plan)?)?;
    }
    emit_summary(&plan_summary(&plan, args.offline, SUMMARY_BUDGET), args.common.summary.as_ref(), actions)?;
    if let Some(path) = &args.common.report {
        // The plan's own questions to the registry count, so that the reports of a run add up
        // to the whole commit's traffic.
        let report = Report {
            seconds: started.elapsed().as_secs_f64(),
            registry: client.as_ref().map(Registry::totals).unwrap_or_default(),
            ..Report::of_plan(&plan)
        };
        write_report(path, &report)?;
    }
    log_counts(&plan);
    if let Some(reason) = plan.unresolved_reason() {
        anyhow::bail!(reason);
    }
    Ok(Done::Ok)
}
