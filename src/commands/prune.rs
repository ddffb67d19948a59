//! `prune`: lists what the spec's three repositories hold, decides with the retention
//! policy (`core::retention`) and, with `--apply`, deletes. A dry run by default.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::{StreamExt as _, stream};

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::github_packages::{GithubPackages, commits};
use crate::adapters::registry::Stats;
use crate::cli::{PruneArgs, PruneSource};
use crate::core::image_ref::Digest;
use crate::core::report::{PruneAction, PruneLine, PruneReport};
use crate::core::retention::{Decision, Policy, package_name, select, versions_by_age, versions_from_commits};
use crate::core::summary::prune_summary;
use crate::outcome::{Done, UsageError};
use crate::stages::emit::{emit_summary, write_report};
use crate::stages::inventory::{fill_children, list_registry};
use crate::stages::observe::{connect, make_plan};
use crate::stages::prepare::{Pick, prepare};

/// `split-build prune`.
pub(crate) async fn run(args: PruneArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let started = Instant::now();
    let prepared = prepare(&args.common)?;
    let spec = &prepared.spec;
    let concurrency = usize::from(args.registry.concurrency);
    let client = connect(&args.registry, &prepared.spec.registry.host)?;
    let plan = make_plan(&prepared, Some(&client), concurrency, &Pick::default()).await?;
    let host = spec.registry.host.clone();
    let token = client.credentials().github_api_token();
    let token = token.as_ref().map(|t| t.expose());
    let ghcr = match args.source {
        PruneSource::Ghcr => true,
        PruneSource::Registry => false,
        PruneSource::Auto => host == "ghcr.io",
    };
    let repos: BTreeSet<String> =
        [&spec.builder.repository, &spec.bases.repository, &spec.agents.repository].into_iter().cloned().collect();

    actions.group("split-build prune: listing");
    let mut packages = None;
    let mut stored = Vec::new();
    if ghcr {
        let token = token.ok_or_else(|| UsageError("pruning ghcr.io needs a token: GITHUB_TOKEN or --registry-password".into()))?;
        let mut gh = GithubPackages::new(&spec.registry.namespace, token, Some(&args.github_api))?;
        for repo in &repos {
            let name = package_name(repo, &spec.registry.namespace);
            stored.extend(gh.list_versions(&name, repo).await?);
        }
        packages = Some(gh);
    } else {
        for repo in &repos {
            stored.extend(list_registry(&client, &host, repo, concurrency).await.with_context(|| format!("listing `{host}/{repo}`"))?);
        }
    }
    actions.end_group();

    let builder_tags: Vec<(String, i64)> = stored
        .iter()
        .filter(|s| s.repository == spec.builder.repository)
        .flat_map(|s| s.tags.iter().map(move |t| (t.clone(), s.created.unwrap_or(0))))
        .collect();
    let versions = match &args.versions_from {
        Some(from) => {
            let shas = commits(token, Some(&args.github_api), from, 1000).await?;
            versions_from_commits(&shas, &builder_tags.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>())
        }
        None => versions_by_age(builder_tags),
    };
    let policy = Policy { keep_versions: args.keep_versions, grace_secs: i64::try_from(args.grace.as_secs()).unwrap_or(i64::MAX) };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut decisions = select(&stored, spec, &plan, &versions, &policy, now);
    if ghcr {
        // GitHub lists versions without their manifests: learn the children of kept
        // indexes from the registry so multi-platform children survive.
        fill_children(&client, &host, &mut stored, &decisions, concurrency).await?;
        decisions = select(&stored, spec, &plan, &versions, &policy, now);
    }
    let doomed: Vec<&Decision> = decisions.iter().filter(|d| !d.keep).collect();
    tracing::info!(
        "{} manifests listed, {} to keep, {} to delete (builder versions newest first: {:?})",
        decisions.len(),
        decisions.len() - doomed.len(),
        doomed.len(),
        versions.iter().take(5).collect::<Vec<_>>()
    );

    if args.apply
        && let Some(max) = args.max_delete
        && doomed.len() > max
    {
        return Err(UsageError(format!(
            "refusing to delete {} manifests: more than --max-delete {max}; nothing was deleted (raise the limit, or look at the dry run first)",
            doomed.len()
        ))
        .into());
    }

    let mut results: BTreeMap<Digest, Option<String>> = BTreeMap::new();
    if args.apply {
        actions.group("split-build prune: deleting");
        if let Some(gh) = &packages {
            let mut by_package: BTreeMap<String, Vec<(u64, Digest)>> = BTreeMap::new();
            for d in &doomed {
                if let Some(id) = d.stored.version_id {
                    by_package
                        .entry(package_name(&d.stored.repository, &spec.registry.namespace))
                        .or_default()
                        .push((id, d.stored.digest.clone()));
                }
            }
            for (name, list) in by_package {
                let ids: Vec<u64> = list.iter().map(|(i, _)| *i).collect();
                let digest_of: BTreeMap<u64, Digest> = list.into_iter().collect();
                for (id, r) in gh.delete_versions(&name, &ids, concurrency.min(8)).await {
                    if let Some(d) = digest_of.get(&id) {
                        results.insert(d.clone(), r.err().map(|e| format!("{e:#}")));
                    }
                }
            }
        } else {
            let outcomes: Vec<(Digest, Option<String>)> = stream::iter(doomed.iter())
                .map(|d| {
                    let client = &client;
                    let host = &host;
                    async move {
                        let r = client.delete_manifest(host, &d.stored.repository, &d.stored.digest, &Stats::default()).await;
                        (d.stored.digest.clone(), r.err().map(|e| format!("{e:#}")))
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
            results.extend(outcomes);
        }
        actions.end_group();
    }

    let lines: Vec<PruneLine<'_>> = decisions
        .iter()
        .map(|d| {
            let error = results.get(&d.stored.digest).cloned().flatten().filter(|_| !d.keep && args.apply);
            PruneLine { decision: d, action: PruneAction::of(d.keep, args.apply, error.as_deref()), error }
        })
        .collect();
    let report = PruneReport {
        command: "prune",
        apply: args.apply,
        seconds: started.elapsed().as_secs_f64(),
        registry: client.totals(),
        manifests: &lines,
    };
    if let Some(path) = &args.common.report {
        write_report(path, &report)?;
    }
    emit_summary(&prune_summary(&lines, args.apply, &host), args.common.summary.as_ref(), actions)?;
    Ok(Done::with_failures(report.failures()))
}
