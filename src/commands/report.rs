//! `report`: merges the `--report` files of many jobs (as `actions/download-artifact`
//! leaves them: files, or directories searched for `*.json`) into one step summary. With
//! the plan, every image it names is accounted for: the exit code is 1 when any is missing
//! (failed, or not attempted because its job never ran); without it, 0.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::adapters::actions_env::ActionsEnv;
use crate::cli::{ReportArgs, SummaryTo};
use crate::core::report::Report;
use crate::core::summary::{ReportView, SUMMARY_BUDGET, Scope, report_summary};
use crate::core::tally::tally;
use crate::outcome::{Done, UsageError};
use crate::stages::handover::read_plan;

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
    let reports = files.iter().map(|f| read_report(f)).collect::<anyhow::Result<Vec<Report>>>()?;
    let plan = args.plan.as_deref().map(read_plan).transpose()?;
    let run_url = args.run_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let view = ReportView { title: "split-build report", reports: &reports, plan: plan.as_ref(), run_url, scope: Scope::Merged };
    let markdown = report_summary(&view, SUMMARY_BUDGET);
    println!("{markdown}");
    match &args.summary {
        Some(SummaryTo::Off) => {}
        Some(SummaryTo::File(path)) => {
            actions.append_summary(&markdown)?;
            std::fs::write(path, &markdown).with_context(|| format!("writing `{}`", path.display()))?;
        }
        None => actions.append_summary(&markdown)?,
    }
    let t = tally(&reports, plan.as_ref());
    let missing = t.missing();
    tracing::info!(
        "merged {} job reports with {} images; {missing} missing ({} failed, {} not attempted)",
        reports.len(),
        reports.iter().map(|r| r.images.len()).sum::<usize>(),
        t.sum(|s| s.failed),
        t.sum(|s| s.not_attempted)
    );
    // Without the plan nothing was planned: the jobs that failed have failed their own steps,
    // and what no job reported cannot be told from what was never asked for.
    Ok(Done::with_failures(if plan.is_some() { missing } else { 0 }))
}

/// One `--report` file. A file that cannot be read and one that is not a report are the
/// same to the user: input to fix (exit 2), not a failed image.
fn read_report(f: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(f).map_err(|e| UsageError(format!("cannot read the report `{}`: {e}", f.display())))?;
    let r = serde_json::from_str(&text).map_err(|e| UsageError(format!("`{}` is not a split-build report: {e}", f.display())))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::exit_code;

    #[test]
    fn unreadable_and_malformed_reports_are_both_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let not_utf8 = dir.path().join("latin1.json");
        std::fs::write(&not_utf8, [b'{', 0xe9, b'}']).unwrap();
        let bad_json = dir.path().join("bad.json");
        std::fs::write(&bad_json, "{").unwrap();
        for f in [not_utf8.as_path(), bad_json.as_path(), dir.path()] {
            let r = read_report(f).map(|_| Done::Ok);
            assert_eq!(exit_code(&r), 2, "{}: {:?}", f.display(), r.err());
        }
    }
}
