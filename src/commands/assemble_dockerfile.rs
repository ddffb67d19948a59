//! `assemble --method dockerfile`: agent images built through the Docker daemon from a
//! generated thin Dockerfile (`FROM <base>`, `COPY --from=<builder image> / /`, the variant's
//! settings) and pushed. The fallback for users who need `RUN` steps on top of the base; the
//! labels it writes let the planner recognise the result as it does appended agents.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use anyhow::Context as _;
use futures::{StreamExt as _, stream};

use crate::adapters::actions_env::ActionsEnv;
use crate::adapters::docker_engine::{BuildRequest, DockerEngine};
use crate::cli::RegistryOpts;
use crate::commands::build::{Progress, engine};
use crate::commands::plan::Prepared;
use crate::core::image_config::{BASE_NAME, BUILDER};
use crate::core::plan::{AgentPlan, Plan, Status};
use crate::core::platform::Platform;
use crate::core::report::{ImageRecord, Outcome};
use crate::core::spec::Variant;

/// Makes the missing agents of `items` (default: all) on `platform` (default: all) through
/// the daemon named by the environment, `parallel` at a time. One record per agent image;
/// one failure does not stop the others. Errs only when the daemon cannot be reached.
pub async fn assemble_dockerfile(
    prepared: &Prepared,
    plan: &Plan,
    items: Option<&BTreeSet<String>>,
    platform: Option<&Platform>,
    registry: &RegistryOpts,
    parallel: usize,
    actions: &ActionsEnv,
) -> anyhow::Result<Vec<ImageRecord>> {
    let engine = engine(registry).await?;
    Ok(assemble_with_daemon(&engine, prepared, plan, items, platform, parallel, actions).await)
}

/// [`assemble_dockerfile`] on a daemon already connected (`run` shares one).
pub async fn assemble_with_daemon(
    engine: &DockerEngine,
    prepared: &Prepared,
    plan: &Plan,
    items: Option<&BTreeSet<String>>,
    platform: Option<&Platform>,
    parallel: usize,
    actions: &ActionsEnv,
) -> Vec<ImageRecord> {
    let variants: HashMap<&str, &Variant> = prepared.spec.agents.variants.iter().map(|v| (v.name.as_str(), v)).collect();
    // A daemon makes one platform's image per tag: the first wanted platform of each agent.
    let mut seen = BTreeSet::new();
    let wanted: Vec<&AgentPlan> = plan
        .agents
        .iter()
        .filter(|a| items.is_none_or(|s| s.contains(&a.instance)) && platform.is_none_or(|p| *p == a.platform))
        .filter(|a| seen.insert(a.image.to_string()))
        .collect();
    let mut records: Vec<ImageRecord> = wanted
        .iter()
        .filter(|a| a.status == Status::Hit)
        .map(|a| {
            ImageRecord::new("agents", &a.image.to_string(), &a.platform.to_string(), Outcome::Hit).of(Some(&a.instance), Some(&a.variant))
        })
        .collect();
    let todo: Vec<&AgentPlan> = wanted.into_iter().filter(|a| a.status != Status::Hit).collect();
    let progress = Progress::new(todo.len());
    let builder = plan.builder.image.to_string();
    let made: Vec<ImageRecord> = stream::iter(todo)
        .map(|a| {
            let progress = progress.clone();
            let builder = builder.clone();
            let variant = variants.get(a.variant.as_str()).copied();
            async move {
                let t = Instant::now();
                let image = a.image.to_string();
                let result = match variant {
                    None => Err(anyhow::anyhow!("variant `{}` is not in the spec", a.variant)),
                    Some(v) => make_one(engine, a, &builder, v, actions).await,
                };
                let (status, error) = match result {
                    Ok(()) => (Outcome::Assembled, None),
                    Err(e) => (Outcome::Failed, Some(format!("{e:#}"))),
                };
                let r = ImageRecord::new("agents", &image, &a.platform.to_string(), status)
                    .of(Some(&a.instance), Some(&a.variant))
                    .took(t.elapsed().as_secs_f64(), error);
                progress.finished(&r);
                r
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    records.extend(made);
    records.sort_by(|a, b| a.image.cmp(&b.image));
    records
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

/// The thin Dockerfile of one agent (pure): the payload over the base, the variant's
/// settings, and the labels the planner reads back (`org.opencontainers.image.base.name`,
/// `dev.split-build.builder`).
pub fn thin_dockerfile(base: &str, builder: &str, v: &Variant) -> String {
    // JSON strings are valid Dockerfile quoted strings; a String always serialises.
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""));
    let mut out = format!("FROM {base}\nCOPY --from={builder} / /\n");
    for (k, val) in &v.env {
        out.push_str(&format!("ENV {k}={}\n", q(val)));
    }
    let mut labels: Vec<(String, String)> = v.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.push((BASE_NAME.into(), base.into()));
    labels.push((BUILDER.into(), builder.into()));
    for (k, val) in labels {
        out.push_str(&format!("LABEL {}={}\n", q(&k), q(&val)));
    }
    if let Some(w) = &v.workdir {
        out.push_str(&format!("WORKDIR {w}\n"));
    }
    if let Some(ep) = &v.entrypoint {
        out.push_str(&format!("ENTRYPOINT {}\n", serde_json::to_string(ep).unwrap_or_default()));
    }
    if let Some(cmd) = &v.cmd {
        out.push_str(&format!("CMD {}\n", serde_json::to_string(cmd).unwrap_or_default()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn thin_dockerfile_spells_the_variant() {
        let v = Variant {
            name: "x".into(),
            entrypoint: Some(vec!["/a b".into()]),
            cmd: Some(vec!["c".into()]),
            env: BTreeMap::from([("K".into(), "v w".into())]),
            labels: BTreeMap::new(),
            workdir: Some("/w".into()),
        };
        let d = thin_dockerfile("r/base:1", "r/builder:2", &v);
        insta::assert_snapshot!(d, @r#"
        FROM r/base:1
        COPY --from=r/builder:2 / /
        ENV K="v w"
        LABEL "org.opencontainers.image.base.name"="r/base:1"
        LABEL "dev.split-build.builder"="r/builder:2"
        WORKDIR /w
        ENTRYPOINT ["/a b"]
        CMD ["c"]
        "#);
    }
}
