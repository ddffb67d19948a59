//! `explain`: for one instance (or `builder`), every hash input of the plan's image beside
//! its previous build's (the input record of `{instance}-latest`, or of the builder's
//! floating `latest`), the differing ones marked.

use std::collections::BTreeSet;

use anyhow::Context as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::cli::ExplainArgs;
use crate::core::inputs_record::InputsRecord;
use crate::core::plan::latest_tag;
use crate::core::spec::quoted;
use crate::core::why::{Explained, explain};
use crate::outcome::{Done, UsageError};
use crate::stages::observe::{connect, make_plan, read_builder_previous, read_previous};
use crate::stages::prepare::{Pick, prepare};

/// `split-build explain`.
pub(crate) async fn run(args: ExplainArgs, _actions: &ActionsEnv) -> anyhow::Result<Done> {
    let prepared = prepare(&args.common)?;
    let spec = &prepared.spec;
    let wanted = args.instance.trim();
    let is_builder = wanted == "builder";
    if !is_builder && !spec.bases.instances.iter().any(|i| i == wanted) {
        return Err(UsageError(format!(
            "{} is not an instance of `{}` (explain takes one of its {} instance ids, or `builder`)",
            quoted(wanted),
            args.common.spec.display(),
            spec.bases.instances.len()
        ))
        .into());
    }
    let client = connect(&args.registry, &spec.registry.host)?;
    let concurrency = usize::from(args.registry.concurrency);
    // The plan of this one image: the builder job's view, or one instance's.
    let items = if is_builder { BTreeSet::new() } else { BTreeSet::from([wanted.to_owned()]) };
    let plan = make_plan(&prepared, Some(&client), concurrency, &Pick::instances(items), args.registry.upstream()).await?;
    let text = if is_builder {
        let current = prepared.builder_inputs().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut latest = None;
        let mut previous = None;
        for (l, r) in read_builder_previous(&client, &plan.builder.image, &plan.builder.platforms).await {
            previous = r.with_context(|| format!("reading `{l}`, the previous build"))?;
            // The image it says is there; else the first one asked about.
            if previous.is_some() || latest.is_none() {
                latest = Some(l);
            }
        }
        explain(&Explained {
            what: "builder",
            image: &plan.builder.image.to_string(),
            status: plan.builder.status.as_str(),
            why: &plan.builder.why,
            previous_at: latest.map(|l| l.to_string()).as_deref(),
            current,
            previous: previous.as_ref(),
        })
    } else {
        let Some(b) = plan.bases.iter().find(|b| b.instance == wanted) else {
            anyhow::bail!("the plan has no base for `{wanted}`");
        };
        let current = InputsRecord::of_base(&prepared.base_recipe, &b.build_args, &plan.builder.platforms, &b.from, b.from_digest.as_ref());
        let latest = b.image.with_tag(latest_tag(&b.instance));
        let previous =
            read_previous(&client, &latest, Some(&b.platform)).await.with_context(|| format!("reading `{latest}`, the previous build"))?;
        explain(&Explained {
            what: &format!("base {wanted}"),
            image: &b.image.to_string(),
            status: b.status.as_str(),
            why: &b.why,
            previous_at: Some(&latest.to_string()),
            current: &current,
            previous: previous.as_ref(),
        })
    };
    print!("{text}");
    Ok(Done::Ok)
}
