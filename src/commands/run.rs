//! `run`: plan, then the builder and the bases (at the same time), then the agents, in
//! one process. Content-addressed tags make it resumable: a rerun finds what a killed run
//! finished and makes only the rest.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::adapters::actions_env::ActionsEnv;
use crate::cli::RunArgs;
use crate::core::matrix::Sizing;
use crate::core::report::ready_instances;
use crate::core::spec::Method;
use crate::outcome::Done;
use crate::stages::append::assemble_append;
use crate::stages::daemon::{Site, build_bases, build_builder, builder_and_bases_hits, connect_daemon};
use crate::stages::dockerfile::assemble_with_daemon;
use crate::stages::emit::{finish, log_counts};
use crate::stages::observe::{connect_paced, make_plan};
use crate::stages::prepare::{Pick, prepare};

/// `split-build run`.
pub(crate) async fn run(args: RunArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let started = Instant::now();
    let mut prepared = prepare(&args.common)?;
    prepared.spec = prepared.spec.with_write_budget(args.write_budget);
    let concurrency = usize::from(args.registry.concurrency);
    // One process is the whole run: it has the run's write budget to itself.
    let client = connect_paced(&args.registry, &prepared.spec.registry.host, Sizing::of(&prepared.spec).share(1))?;
    let plan = make_plan(&prepared, Some(&client), concurrency, &Pick::default(), args.registry.upstream()).await?;
    log_counts(&plan);
    let c = plan.counts();
    let parallel = usize::from(args.parallel);
    let mut records = Vec::new();
    if c.builder_needed || c.bases_missing > 0 {
        let engine = connect_daemon(&args.registry, &prepared.spec.registry.host).await?;
        let every = Pick::default();
        let site = Site { engine: &engine, client: &client, prepared: &prepared, plan: &plan, actions };
        let (builder, bases) = tokio::join!(build_builder(site, &every), build_bases(site, &every, parallel, args.keep_images));
        records.extend(builder);
        records.extend(bases);
    } else {
        records.extend(builder_and_bases_hits(&plan));
    }
    // Agents whose base or builder failed cannot be made now; they are left for a rerun.
    let instances = &prepared.spec.bases.instances;
    let ready: BTreeSet<String> = ready_instances(instances, &records).into_iter().map(str::to_owned).collect();
    let skipped = instances.len() - ready.len();
    if !ready.is_empty() {
        let ready = Pick::instances(ready);
        let agents = match prepared.spec.agents.method {
            Method::Append => assemble_append(&client, &prepared, &plan, &ready, concurrency, actions).await?,
            Method::Dockerfile => {
                let engine = connect_daemon(&args.registry, &prepared.spec.registry.host).await?;
                assemble_with_daemon(&engine, &prepared, &plan, &ready, parallel, actions).await
            }
        };
        records.extend(agents);
    }
    if skipped > 0 {
        tracing::warn!("{skipped} instances' agents were not made because their base or the builder failed; rerun after fixing");
    }
    let report = finish("run", records, started, client.totals(), &args.common, actions)?;
    Ok(Done::with_failures(report.failures()))
}
