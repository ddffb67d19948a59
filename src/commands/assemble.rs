//! `assemble`: agent images for a job's items, written at the registry (`append`) or built
//! through the daemon (`dockerfile`).

use std::time::Instant;

use crate::adapters::actions_env::ActionsEnv;
use crate::cli::AssembleArgs;
use crate::core::report::Outcome;
use crate::core::spec::Method;
use crate::outcome::Done;
use crate::stages::append::assemble_append;
use crate::stages::daemon::connect_daemon;
use crate::stages::dockerfile::assemble_with_daemon;
use crate::stages::emit::finish;
use crate::stages::handover::load_plan;
use crate::stages::observe::{connect_paced, make_plan, recheck_unless_fresh};
use crate::stages::prepare::prepare;

/// `split-build assemble`.
pub(crate) async fn run(args: AssembleArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let started = Instant::now();
    let prepared = prepare(&args.common)?;
    // `--platform` is checked for both methods; `append` writes every platform of an agent all
    // the same (its tag names an index over all of them), so the other platforms' jobs find it
    // made.
    let pick = prepared.pick(args.items.as_deref(), args.platform.as_deref())?;
    let method = prepared.method(args.method);
    let handed = args.plan.as_ref().map(|path| load_plan(path, &prepared)).transpose()?;
    // A job handed the plan paces at the agents stage's share of the run's write budget.
    let share = handed.as_ref().and_then(|plan| plan.matrices.agents.writes_per_second());
    let client = connect_paced(&args.registry, &prepared.spec.registry.host, share)?;
    let concurrency = usize::from(args.registry.concurrency);
    let plan = {
        let _group = actions.log_group("split-build assemble: planning");
        match handed {
            Some(mut plan) => {
                recheck_unless_fresh(&client, &mut plan, &pick, concurrency, actions).await;
                Ok(plan)
            }
            None => make_plan(&prepared, Some(&client), concurrency, &pick, args.registry.upstream()).await,
        }
    };
    let plan = plan?;

    let records = match method {
        Method::Append => {
            let _group = actions.log_group("split-build assemble: writing agent images");
            assemble_append(&client, &prepared, &plan, &pick, concurrency, actions).await?
        }
        // Each daemon build folds its own log into a group.
        Method::Dockerfile => {
            let engine = connect_daemon(&args.registry, &prepared.spec.registry.host).await?;
            assemble_with_daemon(&engine, &prepared, &plan, &pick, usize::from(args.parallel), actions).await
        }
    };
    let report = finish("assemble", records, started, client.totals(), &args.common, actions)?;
    let failed = report.failures();
    let made = report.images.iter().filter(|i| i.status == Outcome::Assembled).count();
    tracing::info!(
        "assembled {made} agent images, {} already there, {failed} failed, in {:.1}s",
        report.images.len() - made - failed,
        report.seconds
    );
    Ok(Done::with_failures(failed))
}
