//! The `--report FILE` record of what one command did, per image; `report` merges many of
//! them (one per matrix job) into one step summary.

use serde::{Deserialize, Serialize};

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
    pub stage: String,
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
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImageRecord {
    /// A record with no timing or counters yet.
    pub fn new(stage: &str, image: &str, platform: &str, status: Outcome) -> ImageRecord {
        ImageRecord {
            stage: stage.into(),
            image: image.into(),
            instance: None,
            variant: None,
            platform: platform.into(),
            status,
            seconds: 0.0,
            bytes_pushed: 0,
            requests: 0,
            retries: 0,
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
}

/// One command's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The command that wrote it (`plan`, `build`, `assemble`, `run`).
    pub command: String,
    /// Wall time of the whole command.
    #[serde(default)]
    pub seconds: f64,
    /// One record per image.
    pub images: Vec<ImageRecord>,
}

impl Report {
    /// How many images failed.
    pub fn failures(&self) -> usize {
        self.images.iter().filter(|i| i.status == Outcome::Failed).count()
    }
}
