//! The command line: every flag parsed into a domain type before any I/O. In Actions the
//! same definitions read the `INPUT_*` variables (see `adapters::actions_env`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::core::image_ref::Tag;
use crate::core::plan::UpstreamUnresolved;
use crate::core::secret::Secret;

fn secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

/// Where a step summary goes besides `$GITHUB_STEP_SUMMARY`: a file, or nowhere at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SummaryTo {
    /// No step summary (`--summary false`).
    Off,
    /// Also this file.
    File(PathBuf),
}

fn summary_to(s: &str) -> Result<SummaryTo, String> {
    Ok(if s.eq_ignore_ascii_case("false") { SummaryTo::Off } else { SummaryTo::File(PathBuf::from(s)) })
}

/// A pace in writes a second: a number from 0 (no pacing) up, fractions allowed (a job's
/// share of a run's write budget may be under one a second).
fn writes_per_second(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(format!("`{s}` is not a pace: use a number of writes a second, 0 or more (0.5 is one write every 2 s; 0: no pacing)")),
    }
}

fn tag(s: &str) -> Result<Tag, String> {
    s.parse().map_err(|e: crate::core::image_ref::RefError| e.0)
}

/// split-build: content-addressed bases, agent images assembled at the registry.
#[derive(Debug, Parser)]
#[command(name = "split-build", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Hash the spec, ask the registry what exists, write the plan and its matrices.
    Plan(PlanArgs),
    /// Build and push the builder or a shard of bases through the Docker daemon.
    Build(BuildArgs),
    /// Make agent images: at the registry (append) or through the daemon (dockerfile).
    Assemble(AssembleArgs),
    /// Plan, then every stage in order, in one process.
    Run(RunArgs),
    /// Merge the JSON reports of many jobs into one step summary (markdown on stdout).
    Report(ReportArgs),
    /// Retention: delete what neither the plan nor the newest builder versions use.
    Prune(PruneArgs),
    /// For one instance (or `builder`): every hash input of the plan's image beside its
    /// previous build's, the differing ones marked.
    Explain(ExplainArgs),
}

impl Command {
    /// The registry options of a command that talks to registries.
    pub(crate) fn registry(&self) -> Option<&RegistryOpts> {
        match self {
            Command::Plan(a) => Some(&a.registry),
            Command::Build(a) => Some(&a.registry),
            Command::Assemble(a) => Some(&a.registry),
            Command::Run(a) => Some(&a.registry),
            Command::Prune(a) => Some(&a.registry),
            Command::Explain(a) => Some(&a.registry),
            Command::Report(_) => None,
        }
    }
}

/// Options every command that reads the spec takes.
#[derive(Debug, Args, Clone)]
pub(crate) struct Common {
    /// The spec file.
    #[arg(long, default_value = "split-build.yml")]
    pub spec: PathBuf,
    /// The builder version (overrides `builder.version` and the hash of its inputs).
    #[arg(long = "builder-version", value_parser = tag)]
    pub builder_version: Option<Tag>,
    /// Write a JSON record of what this command did, per image.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the step summary (markdown) to this file; in Actions it goes to
    /// `$GITHUB_STEP_SUMMARY` as well. `false`: no step summary at all.
    #[arg(long, value_parser = summary_to)]
    pub summary: Option<SummaryTo>,
}

/// How to reach registries.
#[derive(Debug, Args, Clone)]
pub(crate) struct RegistryOpts {
    /// Registry user name (else docker config, else GITHUB_TOKEN for ghcr.io).
    #[arg(long = "registry-username")]
    pub registry_username: Option<String>,
    /// Registry password or token (for the spec's `registry` host only).
    #[arg(long = "registry-password", value_parser = secret)]
    pub registry_password: Option<Secret>,
    /// A GitHub token for the GitHub container registry when no other credentials are given
    /// for it (the action's default: `${{ github.token }}`); else `$GITHUB_TOKEN`.
    #[arg(long = "github-token", value_parser = secret)]
    pub github_token: Option<Secret>,
    /// The registry the GitHub token is for: default ghcr.io, or `containers.<host>` of
    /// `$GITHUB_SERVER_URL` on GitHub Enterprise.
    #[arg(long = "github-registry")]
    pub github_registry: Option<String>,
    /// Speak plain HTTP to this registry host (loopback hosts always are). Repeatable.
    #[arg(long = "insecure-registry", action = clap::ArgAction::Append)]
    pub insecure_registry: Vec<String>,
    /// Most registry requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// How long one registry request, with its retries, may take before it fails (humantime:
    /// `2m`, `90s`). A registry that stops answering fails the command within it.
    #[arg(long, default_value = "2m")]
    pub timeout: humantime::Duration,
    /// Most writes (uploads, mounts, manifest PUTs) a second to one registry host, shared by
    /// every task of the process; 0 for no pacing. Default: the job's share of the run's write
    /// budget, from its matrix entry in the plan handed with `--plan` (`jobs.write-budget`),
    /// else 25, under GHCR's 2,000 a minute per token.
    #[arg(long = "max-writes-per-second", value_parser = writes_per_second)]
    pub max_writes_per_second: Option<f64>,
    /// What a plan does with a base whose upstream digest cannot be resolved (unreachable,
    /// refusing, rate limiting beyond the retries) and whose previous build records none: `wait` leaves it (and its
    /// agents) out and fails the plan; `build` hashes the reference alone.
    #[arg(long = "upstream-unresolved", value_enum, default_value = "wait")]
    pub upstream_unresolved: UpstreamArg,
}

/// `--upstream-unresolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum UpstreamArg {
    /// Not planned: the base and its agents wait, the plan exits 1.
    Wait,
    /// Planned under the hash of the reference alone (a new tag).
    Build,
}

impl RegistryOpts {
    /// The plan's rule for an unresolved upstream that no previous build records.
    pub(crate) fn upstream(&self) -> UpstreamUnresolved {
        match self.upstream_unresolved {
            UpstreamArg::Wait => UpstreamUnresolved::Wait,
            UpstreamArg::Build => UpstreamUnresolved::Build,
        }
    }
}

/// `plan`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryOpts,
    /// Do not ask the registry: every image is `cold`.
    #[arg(long)]
    pub offline: bool,
    /// Also write the plan to this file, for the matrix jobs' `--plan` (hand it over as an
    /// artifact: job outputs are capped at 1 MB).
    #[arg(long = "plan-file")]
    pub plan_file: Option<PathBuf>,
    /// Writes a minute the registry allows the whole run, shared by every matrix job: each
    /// entry gets its share (overrides the spec's `jobs.write-budget`; 0: no run-wide budget).
    #[arg(long = "write-budget")]
    pub write_budget: Option<u32>,
}

/// Which stage `build` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BuildStage {
    /// The builder's payload image, once per version and platform.
    Builder,
    /// A shard of base images.
    Bases,
}

/// `build`.
#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryOpts,
    /// The stage to build.
    #[arg(long, value_enum)]
    pub stage: BuildStage,
    /// Space-separated instance ids (bases); default: every missing one.
    #[arg(long)]
    pub items: Option<String>,
    /// Only this platform (a matrix entry's `platform`); default: every platform.
    #[arg(long)]
    pub platform: Option<String>,
    /// Images built at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Keep what a bases job pulled and built (by default each base's images and dangling
    /// build cache are removed once it is pushed, so a shard fits a hosted runner's disk).
    #[arg(long = "keep-images")]
    pub keep_images: bool,
    /// The plan file the `plan` job wrote (`--plan-file`): use its tags, upstream digests and
    /// statuses and ask the registry only about this job's items. Refused when this checkout
    /// would plan other images.
    #[arg(long)]
    pub plan: Option<PathBuf>,
}

/// How agent images are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MethodArg {
    /// At the registry, no base pulled.
    Append,
    /// Through the Docker daemon, from a generated Dockerfile.
    Dockerfile,
}

/// `assemble`.
#[derive(Debug, Args)]
pub(crate) struct AssembleArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryOpts,
    /// Space-separated instance ids; default: every instance with a missing agent.
    #[arg(long)]
    pub items: Option<String>,
    /// Only this platform; default: every platform.
    #[arg(long)]
    pub platform: Option<String>,
    /// Override the spec's `agents.method`.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Images built at once through the daemon (the dockerfile method).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// The plan file the `plan` job wrote (`--plan-file`): use its tags, upstream digests and
    /// statuses and ask the registry only about this job's items. Refused when this checkout
    /// would plan other images.
    #[arg(long)]
    pub plan: Option<PathBuf>,
}

/// `run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryOpts,
    /// Images built at once through the daemon.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Keep what the bases pulled and built (see `build --keep-images`).
    #[arg(long = "keep-images")]
    pub keep_images: bool,
    /// Writes a minute the registry allows this run (overrides the spec's
    /// `jobs.write-budget`; 0: none): the pace of this one process unless
    /// `--max-writes-per-second` says otherwise.
    #[arg(long = "write-budget")]
    pub write_budget: Option<u32>,
}

/// `report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Report files written by `--report` (a directory is searched for `*.json`).
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Write the merged summary here as well as to stdout (and `$GITHUB_STEP_SUMMARY`);
    /// `false`: no step summary.
    #[arg(long, value_parser = summary_to)]
    pub summary: Option<SummaryTo>,
    /// The plan file: every image it names is accounted for (made, hit, failed, or not
    /// attempted, which makes the exit code 1), and failures are traced to their jobs.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// The run's page, linked beside each failure and at the end of the summary (the action
    /// passes `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`).
    #[arg(long = "run-url")]
    pub run_url: Option<String>,
}

/// `prune`.
#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryOpts,
    /// Keep the agent and builder images of the newest N builder versions.
    #[arg(long = "keep-versions", default_value_t = 1)]
    pub keep_versions: usize,
    /// Delete for real (default: dry run).
    #[arg(long)]
    pub apply: bool,
    /// The most versions one run deletes, oldest first; the rest waits for the next run.
    #[arg(long = "max-delete")]
    pub max_delete: Option<usize>,
    /// Stop deleting before this much time has passed (humantime, e.g. `5h30m`), then write
    /// the report and summary and exit 0; default 5h30m in GitHub Actions (hosted jobs die at
    /// 6 h), none elsewhere.
    #[arg(long = "time-budget")]
    pub time_budget: Option<humantime::Duration>,
    /// Never delete anything younger than this (humantime, e.g. `1d`, `12h`).
    #[arg(long, default_value = "1d")]
    pub grace: humantime::Duration,
    /// Builder versions in order from this repository's commits (`owner/repo@branch`);
    /// default: builder tags by creation time.
    #[arg(long = "versions-from")]
    pub versions_from: Option<String>,
    /// Where to list and delete: the registry's API, or GitHub's packages API (ghcr.io).
    #[arg(long, value_enum, default_value = "auto")]
    pub source: PruneSource,
    /// The GitHub API (default: `$GITHUB_API_URL`, which the runner sets on GitHub Enterprise).
    #[arg(long = "github-api", env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api: String,
}

/// `explain`.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryOpts,
    /// An instance id of the spec, or `builder`.
    pub instance: String,
}

/// Where `prune` lists and deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PruneSource {
    /// GitHub's packages API for ghcr.io, the registry's API elsewhere.
    Auto,
    /// The registry's tag list and manifest delete API.
    Registry,
    /// GitHub's packages API (package versions).
    Ghcr,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory as _;

    use super::Cli;

    /// Every flag has an action input of its name and every input a flag (`command` picks
    /// the subcommand), so a workflow can say all a command line can.
    #[test]
    fn every_flag_has_an_input_and_every_input_a_flag() {
        let action: serde_json::Value = serde_saphyr::from_str(include_str!("../action.yml")).unwrap();
        let inputs: BTreeSet<String> = action["inputs"].as_object().unwrap().keys().cloned().collect();
        let mut flags: BTreeSet<String> = BTreeSet::from(["command".to_owned()]);
        for sub in Cli::command().get_subcommands() {
            for arg in sub.get_arguments() {
                match arg.get_long() {
                    Some("help" | "version") => {}
                    Some(long) => {
                        flags.insert(long.to_owned());
                    }
                    None if arg.is_positional() => {
                        flags.insert(arg.get_id().to_string());
                    }
                    None => {}
                }
            }
        }
        let no_flag: Vec<&String> = inputs.difference(&flags).collect();
        let no_input: Vec<&String> = flags.difference(&inputs).collect();
        assert!(no_flag.is_empty() && no_input.is_empty(), "inputs without a flag: {no_flag:?}; flags without an input: {no_input:?}");
    }
}
