//! `prune`: lists what the spec's three repositories hold, decides with the retention
//! policy (`core::retention`) and, with `--apply`, deletes. A dry run by default.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use futures::{StreamExt as _, stream};
use serde::Serialize;

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::github_packages::{GithubPackages, commits};
use crate::adapters::registry::{Registry, Stats};
use crate::app::{Done, UsageError};
use crate::cli::{PruneArgs, PruneSource};
use crate::commands::observe;
use crate::commands::plan::{emit_summary, make_plan_with, prepare};
use crate::core::image_config::{Index, is_index};
use crate::core::image_ref::{Digest, ImageRef};
use crate::core::retention::{Decision, Policy, Stored, select, versions_by_age, versions_from_commits};
use crate::core::summary::{SUMMARY_BUDGET, cut_note, push_rows_within};

/// One line of the prune report.
#[derive(Debug, Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    decision: &'a Decision,
    /// `would-delete`, `deleted`, `failed` or `kept`.
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The prune report.
#[derive(Serialize)]
struct Doc<'a> {
    command: &'static str,
    apply: bool,
    seconds: f64,
    manifests: &'a [Line<'a>],
}

/// A kept manifest and the children its index names.
type Children = ((String, Digest), Vec<Digest>);

/// `split-build prune`.
pub async fn run(args: PruneArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let started = Instant::now();
    let prepared = prepare(&args.common)?;
    let spec = &prepared.spec;
    let concurrency = usize::from(args.registry.concurrency);
    let client = observe::connect(&args.registry, actions)?;
    let plan = make_plan_with(&prepared, Some(&client), concurrency).await?;
    let host = spec.registry.host.clone();
    let token = args
        .registry
        .registry_password
        .as_ref()
        .map(|p| p.expose().to_owned())
        .or_else(|| std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty()));
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
        let token = token.clone().ok_or_else(|| UsageError("pruning ghcr.io needs a token: GITHUB_TOKEN or --registry-password".into()))?;
        actions.mask(&token);
        let mut gh = GithubPackages::new(&spec.registry.namespace, &token, Some(&args.github_api))?;
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
            let shas = commits(token.as_deref(), Some(&args.github_api), from, 1000).await?;
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

    let lines: Vec<Line<'_>> = decisions
        .iter()
        .map(|d| {
            let (action, error) = match (d.keep, args.apply, results.get(&d.stored.digest)) {
                (true, _, _) => ("kept", None),
                (false, false, _) => ("would-delete", None),
                (false, true, Some(Some(e))) => ("failed", Some(e.clone())),
                (false, true, _) => ("deleted", None),
            };
            Line { decision: d, action, error }
        })
        .collect();
    if let Some(path) = &args.common.report {
        // Streamed: at 133,000 manifests a JSON tree in memory would cost hundreds of MB.
        let doc = Doc { command: "prune", apply: args.apply, seconds: started.elapsed().as_secs_f64(), manifests: &lines };
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(path).with_context(|| format!("writing `{}`", path.display()))?;
        let mut w = std::io::BufWriter::new(file);
        serde_json::to_writer_pretty(&mut w, &doc).with_context(|| format!("writing `{}`", path.display()))?;
        std::io::Write::flush(&mut w)?;
    }
    emit_summary(&summary(&lines, args.apply, &host), args.common.summary.as_deref(), actions)?;
    let failed = lines.iter().filter(|l| l.action == "failed").count();
    Ok(if failed == 0 { Done::Ok } else { Done::Failed(failed) })
}

/// The GHCR package name of a repository path: the path below the owner.
fn package_name(repository: &str, namespace: &str) -> String {
    let owner = namespace.split('/').next().unwrap_or(namespace);
    repository.strip_prefix(&format!("{owner}/")).unwrap_or(repository).to_owned()
}

/// Every manifest of a registry repository: its tags grouped by digest, index children,
/// and the config's creation time.
async fn list_registry(client: &Registry, host: &str, repo: &str, concurrency: usize) -> anyhow::Result<Vec<Stored>> {
    let stats = Stats::default();
    let tags = client.list_tags(host, repo, 1000, &stats).await?;
    let fetched: Vec<anyhow::Result<(String, Stored)>> = stream::iter(tags)
        .map(|tag| async move {
            let image = ImageRef::new(host, repo, tag.parse().map_err(|e: crate::core::image_ref::RefError| anyhow!(e.0))?);
            let stats = Stats::default();
            let m = client.get_manifest(&image, &stats).await?.ok_or_else(|| anyhow!("`{image}` vanished while listing"))?;
            let (children, config_digest) = if is_index(&m.media_type) {
                let index: Index = serde_json::from_slice(&m.bytes)?;
                (index.manifests.iter().map(|d| d.digest.clone()).collect(), None)
            } else {
                let v: serde_json::Value = serde_json::from_slice(&m.bytes)?;
                (vec![], v["config"]["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()))
            };
            let created = match config_digest {
                Some(d) => {
                    let c = client.get_blob(host, repo, &d, &stats).await?;
                    let v: serde_json::Value = serde_json::from_slice(&c).unwrap_or_default();
                    v["created"].as_str().and_then(parse_rfc3339)
                }
                None => None,
            };
            let size = m.bytes.len() as u64;
            Ok((
                tag,
                Stored {
                    repository: repo.to_owned(),
                    digest: m.digest,
                    tags: vec![],
                    created,
                    size: Some(size),
                    children,
                    version_id: None,
                },
            ))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut by_digest: BTreeMap<Digest, Stored> = BTreeMap::new();
    for r in fetched {
        let (tag, s) = r?;
        by_digest.entry(s.digest.clone()).or_insert(s).tags.push(tag);
    }
    Ok(by_digest
        .into_values()
        .map(|mut s| {
            s.tags.sort();
            s
        })
        .collect())
}

async fn fill_children(
    client: &Registry,
    host: &str,
    stored: &mut [Stored],
    decisions: &[Decision],
    concurrency: usize,
) -> anyhow::Result<()> {
    let kept: BTreeSet<(String, Digest)> = decisions
        .iter()
        .filter(|d| d.keep && !d.stored.tags.is_empty())
        .map(|d| (d.stored.repository.clone(), d.stored.digest.clone()))
        .collect();
    let found: Vec<anyhow::Result<Children>> = stream::iter(kept)
        .map(|(repo, digest)| async move {
            let image = ImageRef { registry: host.to_owned(), repository: repo.clone(), tag: None, digest: Some(digest.clone()) };
            let m = client.get_manifest(&image, &Stats::default()).await?;
            let children = match m {
                Some(m) if is_index(&m.media_type) => {
                    serde_json::from_slice::<Index>(&m.bytes)?.manifests.into_iter().map(|d| d.digest).collect()
                }
                _ => vec![],
            };
            Ok(((repo, digest), children))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut map = BTreeMap::new();
    for r in found {
        let (k, v) = r?;
        map.insert(k, v);
    }
    for s in stored.iter_mut() {
        if let Some(c) = map.remove(&(s.repository.clone(), s.digest.clone())) {
            s.children = c;
        }
    }
    Ok(())
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00.123Z`).
fn parse_rfc3339(s: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(s.get(..19)?).ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64)
}

fn summary(lines: &[Line<'_>], apply: bool, host: &str) -> String {
    let mut out = format!("## split-build prune{}\n\n", if apply { "" } else { " (dry run: nothing deleted; `--apply` deletes)" });
    let mut by: BTreeMap<(&str, &str), (usize, u64)> = BTreeMap::new();
    for l in lines {
        let e = by.entry((l.decision.stored.repository.as_str(), l.action)).or_default();
        e.0 += 1;
        e.1 += l.decision.stored.size.unwrap_or(0);
    }
    out.push_str("| repository | action | manifests | bytes known |\n|---|---|---:|---:|\n");
    for ((repo, action), (n, bytes)) in &by {
        let _ = writeln!(out, "| `{host}/{repo}` | {action} | {n} | {bytes} |");
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.decision.keep) {
        *reasons.entry(format!("{:?}", l.decision.reason).split('(').next().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let _ = writeln!(out, "\nKept by rule: {}\n", reasons.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
    let gone: Vec<&Line<'_>> = lines.iter().filter(|l| !l.decision.keep).collect();
    if !gone.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>{} ({})</summary>\n\n| repository | tags | digest | action |\n|---|---|---|---|",
            if apply { "Deleted" } else { "Would delete" },
            gone.len()
        );
        let rows = gone.iter().map(|l| {
            format!(
                "| {} | {} | `{}` | {}{} |\n",
                l.decision.stored.repository,
                l.decision.stored.tags.join(" "),
                l.decision.stored.digest,
                l.action,
                l.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )
        });
        let cut = push_rows_within(&mut out, rows, gone.len(), SUMMARY_BUDGET - 64);
        out.push_str(&cut_note(cut, "the report lists every manifest"));
        out.push_str("\n</details>\n");
    }
    out
}
