//! `prune`: decides with the retention policy (`core::retention`) what the spec's three
//! repositories may lose and, with `--apply`, deletes it: oldest first, at most
//! `--max-delete` a run, within `--time-budget` and GitHub's rate limits, so every run makes
//! progress and ends by itself. A dry run by default. On ghcr.io a package is walked page by
//! page from its oldest versions; elsewhere the registry's tags are listed, then deleted.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt as _, stream};

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::clock::Clock;
use crate::adapters::github_packages::{CallError, GithubPackages, commits};
use crate::adapters::registry::{Registry, Stats};
use crate::cli::{PruneArgs, PruneSource};
use crate::core::delete_budget::{Stop, per_run, runs_left};
use crate::core::plan::Plan;
use crate::core::prune_progress::{Ended, Progress};
use crate::core::report::PruneAction;
use crate::core::retention::{
    Keeper, Policy, builder_tags, emptied, oldest_first, package_name, select, versions_by_age, versions_from_commits,
};
use crate::core::spec::Spec;
use crate::outcome::{Done, UsageError};
use crate::stages::emit::emit_summary;
use crate::stages::inventory::{LEFT, PackageRun, keeps_any, list_package, list_registry};
use crate::stages::observe::{connect, make_plan};
use crate::stages::prepare::{Pick, prepare};
use crate::stages::report_stream::ReportStream;

/// The time budget in GitHub Actions when none is given: hosted jobs die at 6 h.
const ACTIONS_TIME_BUDGET: Duration = Duration::from_secs(5 * 3600 + 30 * 60);

/// `split-build prune`.
pub(crate) async fn run(args: PruneArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let clock = Clock::from_env()?;
    let started = clock.now();
    let budget: Option<Duration> = args.time_budget.map(Into::into).or(actions.enabled.then_some(ACTIONS_TIME_BUDGET));
    // Stop early enough to finish what is in flight and write the report and summary.
    let deadline = budget.map(|b| started + b.as_secs_f64() - (b.as_secs_f64() / 50.0).clamp(1.0, 300.0));
    let prepared = prepare(&args.common)?;
    let spec = &prepared.spec;
    let concurrency = usize::from(args.registry.concurrency);
    let client = connect(&args.registry, &prepared.spec.registry.host)?;
    let plan = make_plan(&prepared, Some(&client), concurrency, &Pick::default(), args.registry.upstream()).await?;
    let host = spec.registry.host.clone();
    let token = client.credentials().github_api_token();
    let ghcr = match args.source {
        PruneSource::Ghcr => true,
        PruneSource::Registry => false,
        PruneSource::Auto => host == "ghcr.io",
    };
    let repos: BTreeSet<String> =
        [&spec.builder.repository, &spec.bases.repository, &spec.agents.repository].into_iter().cloned().collect();
    let policy = Policy { keep_versions: args.keep_versions, grace_secs: i64::try_from(args.grace.as_secs()).unwrap_or(i64::MAX) };
    let now = clock.now() as i64;
    let mut progress = Progress::new(args.apply);
    let mut report = ReportStream::create(args.common.report.as_deref(), args.apply)?;
    let max_delete = args.max_delete.map(|m| m as u64);

    let (remaining, ended) = if ghcr {
        let token = token.ok_or_else(|| UsageError("pruning ghcr.io needs a token: GITHUB_TOKEN or --registry-password".into()))?;
        let mut gh = GithubPackages::new(&spec.registry.namespace, &token, &args.github_api, clock, deadline)?;
        // Versions known so far, for what remains when the run stops before its walk.
        let mut known = 0;
        let walked = 'walk: {
            // The builder's package is small: listed whole, its tags order the builder versions.
            let builder = {
                let _g = actions.log_group("split-build prune: builder versions");
                let name = package_name(&spec.builder.repository, &spec.registry.namespace);
                match stopped(list_package(&mut gh, &name, &spec.builder.repository).await)? {
                    Ok(b) => b,
                    Err(s) => break 'walk (known, Some(Ended::Limit(s))),
                }
            };
            let builder_tags = builder_tags(&builder, spec);
            drop(builder);
            let versions = match &args.versions_from {
                Some(from) => {
                    let shas = commits(Some(token.expose()), Some(&args.github_api), from, 1000).await?;
                    versions_from_commits(&shas, &builder_tags.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>())
                }
                None => versions_by_age(builder_tags),
            };
            let keeper = Keeper::new(spec, &plan, &versions, &policy, now);
            tracing::info!("builder versions newest first: {:?}", versions.iter().take(5).collect::<Vec<_>>());

            // Every package's newest page first, and the brake before anything is deleted.
            let mut firsts = Vec::new();
            {
                let _g = actions.log_group("split-build prune: packages");
                for repo in &repos {
                    let name = package_name(repo, &spec.registry.namespace);
                    let first = match stopped(gh.first_page(&name, repo).await)? {
                        Ok(Some(first)) => first,
                        Ok(None) => continue,
                        Err(s) => break 'walk (known, Some(Ended::Limit(s))),
                    };
                    tracing::info!("package `{name}`: about {} versions", first.total_estimate());
                    known += first.total_estimate();
                    let keeps = match stopped(keeps_any(&gh, &first, &keeper, &name, repo).await)? {
                        Ok(k) => k,
                        Err(s) => break 'walk (known, Some(Ended::Limit(s))),
                    };
                    if !keeps {
                        let msg = format!(
                            "package `{name}` ({} versions): the policy keeps none of them (nothing the plan, the newest {} builder versions, the keep globs or the {} grace period name)",
                            first.total_estimate(),
                            args.keep_versions,
                            args.grace
                        );
                        if args.apply {
                            return Err(UsageError(format!(
                            "refusing to delete every version of {msg}; nothing was deleted: check the spec's registry, namespace and repositories against the package"
                        ))
                        .into());
                        }
                        tracing::warn!("{msg}: `--apply` would refuse");
                    }
                    firsts.push((name, repo.clone(), first));
                }
            }
            let _g = actions.log_group(if args.apply { "split-build prune: deleting" } else { "split-build prune: deciding" });
            let mut walk = PackageRun {
                gh: &gh,
                client: &client,
                host: &host,
                keeper: &keeper,
                apply: args.apply,
                concurrency,
                cap: if args.apply { max_delete } else { None },
                ended: None,
                progress: &mut progress,
                report: &mut report,
            };
            let mut remaining = 0;
            for (name, repo, first) in firsts {
                remaining += walk.walk(&name, &repo, first).await?;
            }
            (remaining, walk.ended)
        };
        let (limit, (primary, secondary)) = gh.limits();
        (progress.hourly_limit, progress.primary_waits, progress.secondary_waits) = (limit, primary, secondary);
        walked
    } else {
        let _g = actions.log_group("split-build prune: registry");
        let run = RegistryRun { args: &args, client: &client, spec, plan: &plan, policy: &policy, now, clock: &clock, deadline };
        run.prune(&repos, &mut progress, &mut report).await?
    };

    progress.ended = ended.unwrap_or(Ended::Done);
    progress.remaining = if args.apply { remaining } else { progress.deleted };
    let run_size = per_run(progress.hourly_limit, budget.map(|b| b.as_secs()), max_delete);
    // A run stopped before it walked anything cannot tell what remains.
    let blind = progress.walked == 0 && matches!(progress.ended, Ended::Limit(_));
    progress.runs_left = if blind { None } else { runs_left(progress.remaining, run_size) };
    tracing::info!(
        "{} manifests walked, {} kept, {} {}, {} failed; about {} remain ({:?})",
        progress.walked,
        progress.kept,
        progress.deleted,
        if args.apply { "deleted" } else { "would go" },
        progress.failed,
        progress.remaining,
        progress.ended
    );
    report.finish(clock.real(clock.now() - started).as_secs_f64(), &client.totals(), &progress)?;
    let budget_text = budget.map(|b| humantime::format_duration(b).to_string());
    emit_summary(&progress.summary(&host, max_delete, budget_text.as_deref()), args.common.summary.as_ref(), actions)?;
    Ok(Done::with_failures(progress.failed as usize))
}

/// A call's answer, or the run's stop (its time or hourly budget ended before the call).
fn stopped<T>(r: Result<T, CallError>) -> anyhow::Result<Result<T, Stop>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(CallError::Stopped(s)) => Ok(Err(s)),
        Err(CallError::Failed(e)) => Err(e),
    }
}

/// A prune through the registry's API.
struct RegistryRun<'a> {
    args: &'a PruneArgs,
    client: &'a Registry,
    spec: &'a Spec,
    plan: &'a Plan,
    policy: &'a Policy,
    now: i64,
    clock: &'a Clock,
    deadline: Option<f64>,
}

/// The registry's API: every repository listed whole, decided, then the oldest deletions
/// made (at most `--max-delete`, none after the deadline). Returns (remaining, why it ended).
impl RegistryRun<'_> {
    async fn prune(
        &self,
        repos: &BTreeSet<String>,
        progress: &mut Progress,
        report: &mut ReportStream,
    ) -> anyhow::Result<(u64, Option<Ended>)> {
        let RegistryRun { args, client, spec, plan, policy, now, clock, deadline } = *self;
        let host = &spec.registry.host;
        let concurrency = usize::from(args.registry.concurrency);
        let mut stored = Vec::new();
        for repo in repos {
            stored.extend(list_registry(client, host, repo, concurrency).await.with_context(|| format!("listing `{host}/{repo}`"))?);
        }
        let builder_tags = builder_tags(&stored, spec);
        let versions = match &args.versions_from {
            Some(from) => {
                let token = client.credentials().github_api_token();
                let shas = commits(token.as_ref().map(|t| t.expose()), Some(&args.github_api), from, 1000).await?;
                versions_from_commits(&shas, &builder_tags.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>())
            }
            None => versions_by_age(builder_tags),
        };
        let decisions = select(&stored, spec, plan, &versions, policy, now);
        drop(stored);
        let empty = emptied(&decisions);
        if !empty.is_empty() {
            let msg =
                format!("the policy keeps nothing in {}", empty.iter().map(|r| format!("`{host}/{r}`")).collect::<Vec<_>>().join(", "));
            if args.apply {
                return Err(UsageError(format!(
                "refusing to delete every manifest of a repository: {msg}; nothing was deleted: check the spec's registry and repositories"
            ))
            .into());
            }
            tracing::warn!("{msg}: `--apply` would refuse");
        }
        let order = oldest_first(&decisions, if args.apply { args.max_delete } else { None });
        let doomed_total = decisions.iter().filter(|d| !d.keep).count() as u64;
        let mut ended = (order.len() as u64) < doomed_total && args.apply;
        let outcomes: Vec<(usize, Option<String>, bool)> = stream::iter(order.iter().copied())
            .map(|i| {
                let d = &decisions[i];
                async move {
                    if !args.apply {
                        return (i, None, true);
                    }
                    if deadline.is_some_and(|t| clock.now() >= t) {
                        return (i, None, false);
                    }
                    let r = client.delete_manifest(host, &d.stored.repository, &d.stored.digest, &Stats::default()).await;
                    (i, r.err().map(|e| format!("{e:#}")), true)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut acted = vec![None; decisions.len()];
        let mut stopped = false;
        for (i, error, done) in outcomes {
            stopped |= !done;
            acted[i] = Some((error, done));
        }
        for (d, a) in decisions.iter().zip(acted) {
            match a {
                None if d.keep => {
                    progress.count(d, PruneAction::Kept, None);
                    report.line(d, "kept", None)?;
                }
                Some((error, true)) => {
                    let action = PruneAction::of(false, args.apply, error.as_deref());
                    progress.count(d, action, error.as_deref());
                    report.line(d, action.as_str(), error.as_deref())?;
                }
                _ => {
                    progress.left(d);
                    report.line(d, LEFT, None)?;
                }
            }
        }
        let remaining = doomed_total - progress.deleted;
        ended |= stopped;
        let why = if stopped { Ended::Limit(Stop::TimeBudget) } else { Ended::MaxDelete };
        Ok((remaining, ended.then_some(why)))
    }
}
