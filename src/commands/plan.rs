//! `plan`: spec → hashes → (registry) → plan JSON on stdout, outputs, summary, report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::registry::Registry;
use crate::adapters::workspace::{load_spec, recipe};
use crate::app::Done;
use crate::cli::{Common, PlanArgs, RegistryOpts};
use crate::commands::observe;
use crate::core::content_hash::{Recipe, builder_hash};
use crate::core::image_ref::Tag;
use crate::core::plan::{LayoutInputs, Observed, Plan, Status, decide, layout};
use crate::core::report::{ImageRecord, Outcome, Report};
use crate::core::spec::Spec;
use crate::core::summary::{SUMMARY_BUDGET, plan_summary};
use crate::core::template::Vars;

/// The spec with everything hashed that does not need the registry.
pub struct Prepared {
    /// The validated spec.
    pub spec: Spec,
    /// The builder version in effect (flag, spec, or hash of the builder's inputs).
    pub builder_version: Tag,
    /// The base Dockerfile, target and context inputs.
    pub base_recipe: Recipe,
}

/// Loads the spec and hashes its local inputs.
pub fn prepare(common: &Common) -> anyhow::Result<Prepared> {
    let spec = load_spec(&common.spec)?;
    let b = &spec.builder;
    let builder_version = match (&common.builder_version, &b.version) {
        (Some(v), _) | (None, Some(v)) => v.clone(),
        (None, None) => {
            let r = recipe(&b.context, &b.dockerfile, Some(&b.target), &b.inputs).context("hashing the builder's inputs")?;
            let hash = builder_hash(&r, &b.build_args, &spec.platforms);
            hash.parse().with_context(|| format!("builder hash `{hash}` is not a tag"))?
        }
    };
    let base_recipe = recipe(&spec.bases.context, &spec.bases.dockerfile, spec.bases.target.as_deref(), &spec.bases.inputs)
        .context("hashing the bases' inputs")?;
    Ok(Prepared { spec, builder_version, base_recipe })
}

/// Names every image and, unless `offline`, asks the registry what exists.
pub async fn make_plan(prepared: &Prepared, registry: &RegistryOpts, offline: bool) -> anyhow::Result<Plan> {
    let client = if offline { None } else { Some(observe::connect(registry, &ActionsEnv::from_env())?) };
    make_plan_with(prepared, client.as_ref(), usize::from(registry.concurrency)).await
}

/// [`make_plan`] with a client already made (`None`: offline).
pub async fn make_plan_with(prepared: &Prepared, client: Option<&Registry>, concurrency: usize) -> anyhow::Result<Plan> {
    let spec = &prepared.spec;
    let mut observed = Observed::default();
    let mut upstream_digests = BTreeMap::new();
    if let Some(client) = client {
        let refs: BTreeSet<String> =
            spec.bases.instances.iter().map(|i| spec.bases.from.render(&Vars { instance: Some(i), ..Vars::default() })).collect();
        let (digests, unresolved) = observe::upstream_digests(client, &refs, concurrency).await;
        upstream_digests = digests;
        observed.unresolved_upstreams = unresolved;
    }
    let layout = layout(
        spec,
        LayoutInputs {
            builder_version: &prepared.builder_version,
            base_recipe: &prepared.base_recipe,
            upstream_digests: &upstream_digests,
        },
    );
    if let Some(client) = client {
        observed.present = observe::existing(client, &layout, concurrency)
            .await
            .with_context(|| format!("asking {} which images exist (use --offline to plan without it)", spec.registry.host))?;
    }
    Ok(decide(layout, &observed, usize::from(spec.max_parallel)))
}

/// The `plan` outputs, in the order action.yml lists them.
pub fn outputs(plan: &Plan) -> anyhow::Result<Vec<(&'static str, String)>> {
    let c = plan.counts();
    Ok(vec![
        ("builder-matrix", serde_json::to_string(&plan.matrices.builder)?),
        ("bases-matrix", serde_json::to_string(&plan.matrices.bases)?),
        ("agents-matrix", serde_json::to_string(&plan.matrices.agents)?),
        ("builder-needed", c.builder_needed.to_string()),
        ("bases-missing", c.bases_missing.to_string()),
        ("agents-missing", c.agents_missing.to_string()),
        ("cache-hits", c.cache_hits.to_string()),
        ("builder-image", plan.builder.image.to_string()),
        ("plan", serde_json::to_string(plan)?),
    ])
}

/// The report of a plan: every image with its status.
pub fn plan_report(plan: &Plan) -> Report {
    let outcome = |s: Status| match s {
        Status::Hit => Outcome::Hit,
        Status::Warm => Outcome::Warm,
        Status::Cold => Outcome::Cold,
    };
    let record = |stage: &str, image: String, instance: Option<&str>, variant: Option<&str>, platform: String, status| ImageRecord {
        stage: stage.into(),
        image,
        instance: instance.map(str::to_owned),
        variant: variant.map(str::to_owned),
        platform,
        status: outcome(status),
        seconds: 0.0,
        bytes_pushed: 0,
        requests: 0,
        retries: 0,
        error: None,
    };
    let mut images = Vec::new();
    for p in &plan.builder.platforms {
        images.push(record("builder", plan.builder.image.to_string(), None, None, p.to_string(), plan.builder.status));
    }
    for b in &plan.bases {
        images.push(record("bases", b.image.to_string(), Some(&b.instance), None, b.platform.to_string(), b.status));
    }
    for a in &plan.agents {
        images.push(record("agents", a.image.to_string(), Some(&a.instance), Some(&a.variant), a.platform.to_string(), a.status));
    }
    Report { command: "plan".into(), seconds: 0.0, images }
}

/// Streams `value` to stdout as pretty JSON (a plan of 100,000 instances is ~90 MB of text:
/// never held as one string).
pub fn write_json_stdout(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    serde_json::to_writer_pretty(&mut w, value).context("writing the plan to stdout")?;
    w.write_all(b"\n").and_then(|()| w.flush()).context("writing the plan to stdout")
}

/// Writes a report file as pretty JSON.
pub fn write_report(path: &Path, report: &Report) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating `{}` for the report", dir.display()))?;
    }
    std::fs::write(path, text + "\n").with_context(|| format!("writing the report `{}`", path.display()))
}

/// Writes the summary where it belongs: `--summary FILE`, `$GITHUB_STEP_SUMMARY`, and
/// stderr when neither is there.
pub fn emit_summary(markdown: &str, file: Option<&Path>, actions: &ActionsEnv) -> anyhow::Result<()> {
    if let Some(f) = file {
        std::fs::write(f, markdown).with_context(|| format!("writing the summary `{}`", f.display()))?;
    }
    actions.append_summary(markdown)?;
    if file.is_none() && actions.summary.is_none() {
        eprintln!("{markdown}");
    }
    Ok(())
}

/// `split-build plan`.
pub async fn run(args: PlanArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    actions.group("split-build plan: hashing the spec's inputs");
    let prepared = prepare(&args.common);
    actions.end_group();
    let prepared = prepared?;
    let plan = make_plan(&prepared, &args.registry, args.offline).await?;

    write_json_stdout(&plan)?;
    if actions.output.is_some() {
        actions.set_outputs(&outputs(&plan)?)?;
    }
    emit_summary(&plan_summary(&plan, args.offline, SUMMARY_BUDGET), args.common.summary.as_deref(), actions)?;
    if let Some(path) = &args.common.report {
        write_report(path, &plan_report(&plan))?;
    }
    log_counts(&plan);
    Ok(Done::Ok)
}

/// One log line with the plan's counts.
pub fn log_counts(plan: &Plan) {
    let c = plan.counts();
    tracing::info!(
        "planned {} images: {} hits, builder {}, {} bases and {} agents to make",
        c.planned,
        c.cache_hits,
        if c.builder_needed { "to build" } else { "exists" },
        c.bases_missing,
        c.agents_missing
    );
}
