//! The dockerfile method: agent images built through the Docker daemon from a generated thin
//! Dockerfile (`FROM <base>`, `COPY --from=<builder image> / /`, the variant's settings; see
//! `core::image_config::thin_dockerfile`) and pushed. The fallback for users who need `RUN`
//! steps on top of the base; the labels it writes let the planner recognise the result as it
//! does appended agents.

use std::collections::{BTreeSet, HashMap};

use anyhow::Context as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::docker_engine::{BuildRequest, DockerEngine};
use crate::core::image_config::thin_dockerfile;
use crate::core::plan::{AgentPlan, Plan, Status};
use crate::core::report::{ImageRecord, Outcome, Stage};
use crate::core::spec::Variant;
use crate::stages::jobs::{attempt, run_jobs};
use crate::stages::prepare::{Pick, Prepared};

fn record(a: &AgentPlan, status: Outcome) -> ImageRecord {
    ImageRecord::new(Stage::Agents, &a.image.to_string(), &a.platform.to_string(), status).of(Some(&a.instance), Some(&a.variant))
}

/// Makes the missing agents the job picks through the daemon, `parallel` at a time. A daemon makes one platform's image per tag: the first
/// wanted platform of each agent. One record per agent image; one failure does not stop the
/// others.
pub(crate) async fn assemble_with_daemon(
    engine: &DockerEngine,
    prepared: &Prepared,
    plan: &Plan,
    pick: &Pick,
    parallel: usize,
    actions: &ActionsEnv,
) -> Vec<ImageRecord> {
    let variants: HashMap<&str, &Variant> = prepared.spec.agents.variants.iter().map(|v| (v.name.as_str(), v)).collect();
    let mut seen = BTreeSet::new();
    let wanted = plan.agents.iter().filter(|a| pick.wants(&a.instance, &a.platform)).filter(|a| seen.insert(a.image.to_string()));
    let (hits, todo): (Vec<&AgentPlan>, Vec<&AgentPlan>) = wanted.partition(|a| a.status == Status::Hit);
    let hits: Vec<ImageRecord> = hits.into_iter().map(|a| record(a, Outcome::Hit)).collect();
    let builder = plan.builder.image.to_string();
    let builder = builder.as_str();
    let variants = &variants;
    run_jobs(hits, todo, parallel, actions, |a| {
        attempt(record(a, Outcome::Cold), Outcome::Assembled, async move {
            let v =
                variants.get(a.variant.as_str()).copied().ok_or_else(|| anyhow::anyhow!("variant `{}` is not in the spec", a.variant))?;
            make_one(engine, a, builder, v, actions).await
        })
    })
    .await
}

async fn make_one(engine: &DockerEngine, a: &AgentPlan, builder: &str, v: &Variant, actions: &ActionsEnv) -> anyhow::Result<()> {
    let image = a.image.to_string();
    let dir = EmptyDir::new()?;
    let req = BuildRequest {
        context: dir.0.clone(),
        dockerfile: thin_dockerfile(&a.base.to_string(), builder, v),
        tag: image.clone(),
        platform: Some(a.platform.to_string()),
        ..BuildRequest::default()
    };
    engine.build(&req, actions).await?;
    engine.push(&image).await
}

/// An empty build context directory, removed on drop.
struct EmptyDir(std::path::PathBuf);

impl EmptyDir {
    fn new() -> anyhow::Result<EmptyDir> {
        let path = std::env::temp_dir().join(format!("split-build-ctx-{}-{:016x}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating `{}`", path.display()))?;
        Ok(EmptyDir(path))
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
