//! The action's outputs (`$GITHUB_OUTPUT`) of each command, as name/value pairs in the order
//! action.yml lists them.

use crate::core::plan::Plan;
use crate::core::report::{Outcome, Report};

/// The `plan` outputs: the three matrices, the counts a workflow gates on, the builder image
/// and the whole plan.
pub(crate) fn plan_outputs(plan: &Plan) -> serde_json::Result<Vec<(&'static str, String)>> {
    let c = plan.counts();
    Ok(vec![
        ("builder-matrix", serde_json::to_string(&plan.matrices.builder)?),
        ("bases-matrix", serde_json::to_string(&plan.matrices.bases)?),
        ("agents-matrix", serde_json::to_string(&plan.matrices.agents)?),
        ("builder-needed", c.builder_needed.to_string()),
        ("bases-missing", c.bases_missing.to_string()),
        ("agents-missing", c.agents_missing.to_string()),
        ("cache-hits", c.cache_hits.to_string()),
        ("builder-image", plan.builder.image.to_string()),
        ("plan", serde_json::to_string(plan)?),
    ])
}

/// The `build` and `assemble` outputs: how many images the job made, found made already and
/// failed, and where its report is (empty without `--report`), so a workflow can gate on them.
pub(crate) fn job_outputs(report: &Report, report_path: Option<&str>) -> Vec<(&'static str, String)> {
    let count = |f: &dyn Fn(Outcome) -> bool| report.images.iter().filter(|i| f(i.status)).count().to_string();
    vec![
        ("made", count(&|s| matches!(s, Outcome::Built | Outcome::Assembled))),
        ("hit", count(&|s| s == Outcome::Hit)),
        ("failed", count(&|s| s == Outcome::Failed)),
        ("report", report_path.unwrap_or_default().to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::report::{ImageRecord, Stage};

    #[test]
    fn job_outputs_count_what_the_job_did() {
        let r = |s| ImageRecord::new(Stage::Agents, "r/a:1", "linux/amd64", s);
        let report =
            Report { images: vec![r(Outcome::Assembled), r(Outcome::Built), r(Outcome::Hit), r(Outcome::Failed)], ..Report::default() };
        let out = job_outputs(&report, Some("reports/a.json"));
        assert_eq!(out, [("made", "2".into()), ("hit", "1".into()), ("failed", "1".into()), ("report", "reports/a.json".into())]);
    }
}
