//! Emitting what a command found or did: the plan on stdout, the `--report` file, the step
//! summary (`--summary FILE`, `$GITHUB_STEP_SUMMARY`, else stderr) and the closing log line.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::cli::{Common, SummaryTo};
use crate::core::outputs::job_outputs;
use crate::core::plan::Plan;
use crate::core::report::{Counters, ImageRecord, Report};
use crate::core::summary::{ReportView, SUMMARY_BUDGET, Scope, report_summary};

/// Streams `value` to stdout as pretty JSON (a plan of 100,000 instances is ~90 MB of text:
/// never held as one string).
pub(crate) fn write_json_stdout(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    serde_json::to_writer_pretty(&mut w, value).context("writing the plan to stdout")?;
    w.write_all(b"\n").and_then(|()| w.flush()).context("writing the plan to stdout")
}

/// Writes a report file as pretty JSON, streamed (a prune report of 133,000 manifests would
/// cost hundreds of MB as one string).
pub(crate) fn write_report(path: &Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    write_json(path, report, true, "report")
}

/// Writes `value` to `path` as JSON (pretty or compact), streamed, making its folder; `what`
/// names the file in errors.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize, pretty: bool, what: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating `{}` for the {what}", dir.display()))?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("writing the {what} `{}`", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let written = if pretty { serde_json::to_writer_pretty(&mut w, value) } else { serde_json::to_writer(&mut w, value) };
    written
        .map_err(std::io::Error::from)
        .and_then(|()| w.write_all(b"\n"))
        .and_then(|()| w.flush())
        .with_context(|| format!("writing the {what} `{}`", path.display()))
}

/// Writes the summary where it belongs: `--summary FILE`, `$GITHUB_STEP_SUMMARY`, and
/// stderr when neither is there; nowhere with `--summary false`.
pub(crate) fn emit_summary(markdown: &str, to: Option<&SummaryTo>, actions: &ActionsEnv) -> anyhow::Result<()> {
    let file = match to {
        Some(SummaryTo::Off) => return Ok(()),
        Some(SummaryTo::File(f)) => Some(f),
        None => None,
    };
    if let Some(f) = file {
        std::fs::write(f, markdown).with_context(|| format!("writing the summary `{}`", f.display()))?;
    }
    actions.append_summary(markdown)?;
    if file.is_none() && actions.summary.is_none() {
        eprintln!("{}", crate::adapters::actions_env::no_commands(markdown));
    }
    Ok(())
}

/// The end of a command that made images: its report (written with `--report`; `registry`
/// is every request of the command; its start and end on the wall clock), its summary and,
/// in Actions, its outputs. A matrix job's summary (`build`, `assemble`) is short: its
/// verdict and failures, the merged report having the rest; `run` gets the whole story.
pub(crate) fn finish(
    command: &str,
    images: Vec<ImageRecord>,
    started: Instant,
    registry: Counters,
    common: &Common,
    actions: &ActionsEnv,
) -> anyhow::Result<Report> {
    let elapsed = started.elapsed();
    let now = std::time::SystemTime::now();
    let rfc3339 = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let report = Report {
        command: command.into(),
        seconds: elapsed.as_secs_f64(),
        registry,
        started_at: Some(rfc3339(now.checked_sub(elapsed).unwrap_or(now))),
        ended_at: Some(rfc3339(now)),
        images,
    };
    if let Some(path) = &common.report {
        write_report(path, &report)?;
    }
    let title = format!("split-build {command}");
    let scope = if command == "run" { Scope::Run } else { Scope::Job };
    let view = ReportView { title: &title, reports: std::slice::from_ref(&report), plan: None, run_url: None, scope };
    emit_summary(&report_summary(&view, SUMMARY_BUDGET), common.summary.as_ref(), actions)?;
    if actions.output.is_some() {
        let path = common.report.as_ref().map(|p| p.display().to_string());
        actions.set_outputs(&job_outputs(&report, path.as_deref()))?;
    }
    Ok(report)
}

/// One log line with the plan's counts.
pub(crate) fn log_counts(plan: &Plan) {
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
