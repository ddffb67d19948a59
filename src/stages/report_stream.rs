//! The prune report (`--report`) written as the run goes: one line per manifest as it is
//! decided, then the run's progress, so that a package of 133,000 versions is never held in
//! memory and a run stopped by its time budget still leaves a whole, valid report.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::core::prune_progress::Progress;
use crate::core::report::Counters;
use crate::core::retention::Decision;

/// A report being written; nothing at all without `--report`.
pub(crate) struct ReportStream {
    out: Option<(BufWriter<File>, PathBuf)>,
    first: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    decision: &'a Decision,
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl ReportStream {
    /// Starts the report at `path` (its folder made), or nothing without one.
    pub(crate) fn create(path: Option<&Path>, apply: bool) -> anyhow::Result<ReportStream> {
        let Some(path) = path else { return Ok(ReportStream { out: None, first: true }) };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating `{}` for the report", dir.display()))?;
        }
        let file = File::create(path).with_context(|| format!("writing the report `{}`", path.display()))?;
        let mut w = BufWriter::new(file);
        write!(w, "{{\"command\":\"prune\",\"apply\":{apply},\"manifests\":[")
            .with_context(|| format!("writing the report `{}`", path.display()))?;
        Ok(ReportStream { out: Some((w, path.to_owned())), first: true })
    }

    /// One manifest: its decision, the action taken (`kept`, `deleted`, `would-delete`,
    /// `failed`, `left-for-next-run`) and a failure's reason.
    pub(crate) fn line(&mut self, decision: &Decision, action: &str, error: Option<&str>) -> anyhow::Result<()> {
        let Some((w, path)) = &mut self.out else { return Ok(()) };
        let sep = if self.first { "\n" } else { ",\n" };
        self.first = false;
        w.write_all(sep.as_bytes())
            .map_err(anyhow::Error::from)
            .and_then(|()| serde_json::to_writer(&mut *w, &Line { decision, action, error }).map_err(anyhow::Error::from))
            .with_context(|| format!("writing the report `{}`", path.display()))
    }

    /// Closes the report with the run's wall time, its registry requests (the plan's and the
    /// listing's; GitHub's API is no registry) and its progress.
    pub(crate) fn finish(self, seconds: f64, registry: &Counters, progress: &Progress) -> anyhow::Result<()> {
        let Some((mut w, path)) = self.out else { return Ok(()) };
        let tail = serde_json::to_string(registry).and_then(|r| Ok((r, serde_json::to_string(progress)?))).map_err(anyhow::Error::from);
        tail.and_then(|(r, p)| {
            write!(w, "\n],\"seconds\":{seconds},\"registry\":{r},\"progress\":{p}}}\n")?;
            w.flush()?;
            Ok(())
        })
        .with_context(|| format!("writing the report `{}`", path.display()))
    }
}
