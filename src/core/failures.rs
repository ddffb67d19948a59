//! Failures grouped by cause: a thousand agents that failed for one reason are one group with
//! a count, its instances, the jobs that ran them and the reason once, not a thousand rows.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::cause::cause_of;
use crate::core::natural_sort::natural_cmp;
use crate::core::report::{ImageRecord, Outcome, Stage};
use crate::core::tally::{JobId, JobIndex};

/// The failures of one stage that share a cause.
#[derive(Debug, Clone)]
pub(crate) struct FailureGroup<'a> {
    /// The stage they belong to.
    pub stage: Stage,
    /// The normalised reason they share.
    pub cause: String,
    /// The failed images, in natural order of their names.
    pub records: Vec<&'a ImageRecord>,
    /// The matrix jobs that ran them, where the plan says.
    pub jobs: Vec<JobId>,
}

impl FailureGroup<'_> {
    /// The reason of the group's first image, as the job wrote it.
    pub(crate) fn reason(&self) -> &str {
        self.records.first().and_then(|r| r.error.as_deref()).unwrap_or("no reason given")
    }
}

/// The cause of one failed image: its reason with the names of its own image taken out.
pub(crate) fn cause_of_failure(r: &ImageRecord) -> String {
    let tag = r.image.rsplit_once(':').map(|(_, t)| t).filter(|t| t.len() >= 8 && !t.contains('/')).unwrap_or_default();
    cause_of(r.error.as_deref().unwrap_or("no reason given"), &[&r.image, tag, r.instance.as_deref().unwrap_or_default()])
}

/// The failed records grouped by stage (pipeline order) and cause (biggest group first).
pub(crate) fn group_failures<'a>(records: impl IntoIterator<Item = &'a ImageRecord>, index: &JobIndex) -> Vec<FailureGroup<'a>> {
    let mut groups: BTreeMap<(Stage, String), Vec<&'a ImageRecord>> = BTreeMap::new();
    for r in records.into_iter().filter(|r| r.status == Outcome::Failed) {
        groups.entry((r.stage, cause_of_failure(r))).or_default().push(r);
    }
    let mut out: Vec<FailureGroup<'a>> = groups
        .into_iter()
        .map(|((stage, cause), mut records)| {
            records.sort_by(|a, b| natural_cmp(&a.name(), &b.name()).then_with(|| a.platform.cmp(&b.platform)));
            let jobs: BTreeSet<JobId> = records.iter().filter_map(|r| index.job_of(r.stage, &r.platform, r.instance.as_deref())).collect();
            FailureGroup { stage, cause, records, jobs: jobs.into_iter().collect() }
        })
        .collect();
    out.sort_by(|a, b| a.stage.cmp(&b.stage).then_with(|| b.records.len().cmp(&a.records.len())).then_with(|| a.cause.cmp(&b.cause)));
    out
}

/// A reason as lines: its own lines, and the build output a daemon error carries (`(last
/// build output: a | b)`) one line each.
pub(crate) fn reason_lines(reason: &str) -> Vec<String> {
    const TRAILER: &str = " (last build output: ";
    let mut out = Vec::new();
    for line in reason.lines() {
        match line.split_once(TRAILER) {
            Some((head, tail)) => {
                out.push(head.to_owned());
                out.push("last build output:".to_owned());
                let tail = tail.strip_suffix(')').unwrap_or(tail);
                out.extend(tail.split(" | ").map(|l| format!("  {l}")));
            }
            None => out.push(line.to_owned()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stage: Stage, instance: &str, error: &str) -> ImageRecord {
        ImageRecord::new(stage, &format!("r.io/o/base:{instance}-0123456789abcdef"), "linux/amd64", Outcome::Failed)
            .of(Some(instance), None)
            .took(1.0, Some(error.replace("{image}", &format!("r.io/o/base:{instance}-0123456789abcdef"))))
    }

    #[test]
    fn failures_of_one_cause_are_one_group() {
        let mut records: Vec<ImageRecord> =
            (1..=12).map(|i| failed(Stage::Bases, &format!("d-{i}"), "pushing `{image}`: 500 Internal Server Error")).collect();
        records.push(failed(Stage::Bases, "x-1", "building `{image}`: RUN failed (last build output: step 1 | exit 1)"));
        records.push(failed(Stage::Builder, "", "no payload"));
        let groups = group_failures(&records, &JobIndex::default());
        let shape: Vec<(Stage, usize)> = groups.iter().map(|g| (g.stage, g.records.len())).collect();
        assert_eq!(shape, [(Stage::Builder, 1), (Stage::Bases, 12), (Stage::Bases, 1)]);
        assert_eq!(groups[1].cause, "pushing `…`: 500 Internal Server Error");
        let names: Vec<String> = groups[1].records.iter().take(3).map(|r| r.name()).collect();
        assert_eq!(names, ["d-1", "d-2", "d-3"], "natural order");
        assert_eq!(
            reason_lines(groups[2].reason()),
            ["building `r.io/o/base:x-1-0123456789abcdef`: RUN failed", "last build output:", "  step 1", "  exit 1"]
        );
    }
}
