//! The `--report FILE` record of what one command did, per image; `report` merges many of
//! them (one per matrix job) into one step summary.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::plan::{Plan, Status};
use crate::core::retention::Decision;

/// The stage an image belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The builder image, once per version.
    Builder,
    /// A base image, one per instance and platform.
    Bases,
    /// An agent image, one per instance and variant.
    Agents,
}

impl Stage {
    /// The lower-case name used in JSON and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Builder => "builder",
            Stage::Bases => "bases",
            Stage::Agents => "agents",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Existed already: nothing done.
    Hit,
    /// Planned with a warm cache (plan reports).
    Warm,
    /// Planned from scratch (plan reports).
    Cold,
    /// Built through the Docker daemon and pushed.
    Built,
    /// Made at the registry (or through the daemon, for the dockerfile method).
    Assembled,
    /// Could not be made; `error` says why.
    Failed,
}

impl From<Status> for Outcome {
    fn from(s: Status) -> Outcome {
        match s {
            Status::Hit => Outcome::Hit,
            Status::Warm => Outcome::Warm,
            Status::Cold => Outcome::Cold,
            // Not planned: the plan fails for it (its notes say why).
            Status::Unresolved => Outcome::Failed,
        }
    }
}

impl Outcome {
    /// The lower-case name used in JSON and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Warm => "warm",
            Outcome::Cold => "cold",
            Outcome::Built => "built",
            Outcome::Assembled => "assembled",
            Outcome::Failed => "failed",
        }
    }
}

/// One image's line in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `builder`, `bases` or `agents`.
    pub stage: Stage,
    /// The full image reference.
    pub image: String,
    /// The instance id (bases and agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The variant (agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The platform.
    pub platform: String,
    /// What happened.
    pub status: Outcome,
    /// Wall time spent on this image.
    #[serde(default)]
    pub seconds: f64,
    /// Bytes uploaded to the registry (blobs and manifests).
    #[serde(default)]
    pub bytes_pushed: u64,
    /// HTTP requests made for this image.
    #[serde(default)]
    pub requests: u64,
    /// Requests repeated after a 429, 5xx or dropped connection.
    #[serde(default)]
    pub retries: u64,
    /// Of the requests, writes (uploads, mounts, manifest PUTs).
    #[serde(default)]
    pub writes: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImageRecord {
    /// A record with no timing or counters yet.
    pub fn new(stage: Stage, image: &str, platform: &str, status: Outcome) -> ImageRecord {
        ImageRecord {
            stage,
            image: image.into(),
            instance: None,
            variant: None,
            platform: platform.into(),
            status,
            seconds: 0.0,
            bytes_pushed: 0,
            requests: 0,
            retries: 0,
            writes: 0,
            error: None,
        }
    }

    /// The same record naming its instance and variant.
    pub fn of(mut self, instance: Option<&str>, variant: Option<&str>) -> ImageRecord {
        self.instance = instance.map(str::to_owned);
        self.variant = variant.map(str::to_owned);
        self
    }

    /// The same record with its wall time and, for a failure, the reason.
    pub fn took(mut self, seconds: f64, error: Option<String>) -> ImageRecord {
        self.seconds = seconds;
        self.error = error;
        self
    }

    /// How a summary names the image: `instance[-variant]`, else its tag (the builder).
    pub fn name(&self) -> String {
        match (&self.instance, &self.variant) {
            (Some(i), Some(v)) => format!("{i}-{v}"),
            (Some(i), None) => i.clone(),
            _ => self.image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or_else(|| self.image.clone(), |(_, t)| t.to_owned()),
        }
    }

    /// The repository the image is in (`registry/path`, without tag or digest).
    pub fn repository(&self) -> &str {
        let name = self.image.split_once('@').map_or(self.image.as_str(), |(n, _)| n);
        name.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(name, |(n, _)| n)
    }

    /// The same record with the registry counters of its work.
    pub fn counted(mut self, c: Counters) -> ImageRecord {
        self.requests = c.requests;
        self.writes = c.writes;
        self.retries = c.retries;
        self.bytes_pushed = c.bytes_pushed;
        self
    }
}

/// One command's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The command that wrote it (`plan`, `build`, `assemble`, `run`).
    pub command: String,
    /// Wall time of the whole command.
    #[serde(default)]
    pub seconds: f64,
    /// Every registry request of the command, planning included.
    #[serde(default)]
    pub registry: Counters,
    /// When the command started (RFC 3339, UTC): with `ended_at`, the job's wall-clock span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the command ended (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// One record per image.
    pub images: Vec<ImageRecord>,
}

impl Report {
    /// How many images failed.
    pub fn failures(&self) -> usize {
        self.images.iter().filter(|i| i.status == Outcome::Failed).count()
    }

    /// The report of a plan: every image with its planned status.
    pub fn of_plan(plan: &Plan) -> Report {
        let mut images = Vec::with_capacity(plan.builder.platforms.len() + plan.bases.len() + plan.agents.len());
        for p in &plan.builder.platforms {
            images.push(ImageRecord::new(Stage::Builder, &plan.builder.image.to_string(), &p.to_string(), plan.builder.status.into()));
        }
        for b in &plan.bases {
            images.push(
                ImageRecord::new(Stage::Bases, &b.image.to_string(), &b.platform.to_string(), b.status.into()).of(Some(&b.instance), None),
            );
        }
        for a in &plan.agents {
            images.push(
                ImageRecord::new(Stage::Agents, &a.image.to_string(), &a.platform.to_string(), a.status.into())
                    .of(Some(&a.instance), Some(&a.variant)),
            );
        }
        Report { command: "plan".into(), images, ..Report::default() }
    }
}

/// The instances whose agents can be made after these builder and bases records: none when
/// the builder failed, else every instance whose base did not fail.
pub(crate) fn ready_instances<'a>(instances: &'a [String], records: &[ImageRecord]) -> BTreeSet<&'a str> {
    let failed = |stage: Stage| records.iter().filter(move |r| r.stage == stage && r.status == Outcome::Failed);
    if failed(Stage::Builder).next().is_some() {
        return BTreeSet::new();
    }
    let failed_bases: BTreeSet<&str> = failed(Stage::Bases).filter_map(|r| r.instance.as_deref()).collect();
    instances.iter().map(String::as_str).filter(|i| !failed_bases.contains(i)).collect()
}

/// Registry traffic: what one image's work, or a whole command, cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// HTTP requests sent (each attempt counts).
    #[serde(default)]
    pub requests: u64,
    /// Of those, writes: uploads, mounts, manifest PUTs, deletes (what registries rate-limit).
    #[serde(default)]
    pub writes: u64,
    /// Requests repeated after a 429, 5xx or dropped connection.
    #[serde(default)]
    pub retries: u64,
    /// Bytes sent in request bodies.
    #[serde(default)]
    pub bytes_pushed: u64,
}

/// What `prune` did with one manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneAction {
    /// Kept by a retention rule.
    Kept,
    /// Would be deleted (dry run).
    WouldDelete,
    /// Deleted.
    Deleted,
    /// The delete failed; `error` says why.
    Failed,
}

impl PruneAction {
    /// The name used in JSON and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            PruneAction::Kept => "kept",
            PruneAction::WouldDelete => "would-delete",
            PruneAction::Deleted => "deleted",
            PruneAction::Failed => "failed",
        }
    }

    /// The action for a decision: kept, else would-delete on a dry run, else deleted or failed
    /// by the delete's error.
    pub fn of(keep: bool, apply: bool, delete_error: Option<&str>) -> PruneAction {
        match (keep, apply, delete_error) {
            (true, _, _) => PruneAction::Kept,
            (false, false, _) => PruneAction::WouldDelete,
            (false, true, Some(_)) => PruneAction::Failed,
            (false, true, None) => PruneAction::Deleted,
        }
    }
}

/// One line of the prune report.
#[derive(Debug, Serialize)]
pub struct PruneLine<'a> {
    /// The manifest and the rule that decided it.
    #[serde(flatten)]
    pub decision: &'a Decision,
    /// What was done.
    pub action: PruneAction,
    /// Why a delete failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(stage: Stage, instance: Option<&str>, status: Outcome) -> ImageRecord {
        ImageRecord::new(stage, "r/x:1", "linux/amd64", status).of(instance, None)
    }

    #[test]
    fn stages_serialise_as_before() {
        let json = serde_json::to_string(&rec(Stage::Bases, Some("a"), Outcome::Built)).unwrap();
        assert!(json.starts_with(r#"{"stage":"bases","#), "{json}");
        let back: ImageRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.stage, Stage::Bases);
    }

    #[test]
    fn agents_wait_for_their_base_and_the_builder() {
        let instances: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let ok = [rec(Stage::Builder, None, Outcome::Built), rec(Stage::Bases, Some("b"), Outcome::Failed)];
        assert_eq!(ready_instances(&instances, &ok), BTreeSet::from(["a", "c"]));
        let no_builder = [rec(Stage::Builder, None, Outcome::Failed)];
        assert!(ready_instances(&instances, &no_builder).is_empty());
        assert_eq!(ready_instances(&instances, &[]).len(), 3);
    }

    #[test]
    fn prune_actions() {
        assert_eq!(PruneAction::of(true, true, Some("x")), PruneAction::Kept);
        assert_eq!(PruneAction::of(false, false, None), PruneAction::WouldDelete);
        assert_eq!(PruneAction::of(false, true, Some("x")), PruneAction::Failed);
        assert_eq!(PruneAction::of(false, true, None), PruneAction::Deleted);
        assert_eq!(serde_json::to_string(&PruneAction::WouldDelete).unwrap(), r#""would-delete""#);
    }
}
