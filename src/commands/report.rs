//! `report`: merges the `--report` files of many jobs (as `actions/download-artifact`
//! leaves them: files, or directories searched for `*.json`) into one step summary.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::cli::ReportArgs;
use crate::core::report::Report;
use crate::core::summary::{SUMMARY_BUDGET, report_summary};
use crate::outcome::{Done, UsageError};

/// `split-build report`.
pub(crate) async fn run(args: ReportArgs, actions: &ActionsEnv) -> anyhow::Result<Done> {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in &args.reports {
        if p.is_dir() {
            for e in walkdir::WalkDir::new(p).sort_by_file_name() {
                let e = e.with_context(|| format!("listing `{}`", p.display()))?;
                if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "json") {
                    files.push(e.path().to_path_buf());
                }
            }
        } else if p.exists() {
            files.push(p.clone());
        } else {
            tracing::warn!("`{}` does not exist: no report there (a skipped job writes none)", p.display());
        }
    }
    let mut reports = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading `{}`", f.display()))?;
        let r: Report =
            serde_json::from_str(&text).map_err(|e| UsageError(format!("`{}` is not a split-build report: {e}", f.display())))?;
        reports.push(r);
    }
    let markdown = report_summary("split-build report", &reports, SUMMARY_BUDGET);
    println!("{markdown}");
    actions.append_summary(&markdown)?;
    if let Some(path) = &args.summary {
        std::fs::write(path, &markdown).with_context(|| format!("writing `{}`", path.display()))?;
    }
    tracing::info!("merged {} report(s) with {} images", reports.len(), reports.iter().map(|r| r.images.len()).sum::<usize>());
    Ok(Done::Ok)
}
