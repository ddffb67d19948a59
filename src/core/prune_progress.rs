//! How far one prune run got: what it deleted, about how many deletions remain and how
//! many more runs that is at the token's rate, why it stopped; and the step summary that
//! says so. Counts only, plus a bounded sample of lines, so a 133,000-version package
//! costs no more memory than a small one.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::core::delete_budget::Stop;
use crate::core::report::PruneAction;
use crate::core::retention::Decision;
use crate::core::summary::{SUMMARY_BUDGET, cut_note, push_rows_within};

/// The most deletion lines a summary shows (the report has them all).
pub(crate) const SAMPLE: usize = 200;

/// Why a run ended before deleting everything it could.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Ended {
    /// It walked every version.
    Done,
    /// `--max-delete` deletions were made.
    MaxDelete,
    /// A rate or time limit ([`Stop`]).
    Limit(Stop),
}

/// One run's progress.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Progress {
    /// Whether deletions were made (else a dry run).
    pub apply: bool,
    /// Versions (manifests) walked and decided.
    pub walked: u64,
    /// Of those, kept.
    pub kept: u64,
    /// Deleted (or, in a dry run, that would be).
    pub deleted: u64,
    /// Deletions that failed for another reason than a rate limit.
    pub failed: u64,
    /// About how many deletions remain after this run.
    pub remaining: u64,
    /// About how many more runs they take at this token's rate (None: unbounded runs).
    pub runs_left: Option<u64>,
    /// Why the run ended.
    pub ended: Ended,
    /// Rate-limit answers waited out: hourly budget spent.
    pub primary_waits: u64,
    /// Rate-limit answers waited out: secondary limit.
    pub secondary_waits: u64,
    /// The hourly request limit GitHub stated, when it did.
    pub hourly_limit: Option<u64>,
    /// Per repository, per action, how many manifests.
    pub by_repository: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Up to [`SAMPLE`] deletion lines (repository, tags, digest, action, error), oldest first.
    #[serde(skip)]
    pub sample: Vec<(String, String, String, &'static str, Option<String>)>,
}

impl Progress {
    /// A run that has done nothing yet.
    pub(crate) fn new(apply: bool) -> Progress {
        Progress {
            apply,
            walked: 0,
            kept: 0,
            deleted: 0,
            failed: 0,
            remaining: 0,
            runs_left: None,
            ended: Ended::Done,
            primary_waits: 0,
            secondary_waits: 0,
            hourly_limit: None,
            by_repository: BTreeMap::new(),
            sample: Vec::new(),
        }
    }

    /// Counts one settled decision and what was done about it.
    pub(crate) fn count(&mut self, d: &Decision, action: PruneAction, error: Option<&str>) {
        self.walked += 1;
        match action {
            PruneAction::Kept => self.kept += 1,
            PruneAction::Deleted | PruneAction::WouldDelete => self.deleted += 1,
            PruneAction::Failed => self.failed += 1,
        }
        *self.by_repository.entry(d.stored.repository.clone()).or_default().entry(action.as_str()).or_default() += 1;
        if action != PruneAction::Kept && self.sample.len() < SAMPLE {
            let s = &d.stored;
            self.sample.push((s.repository.clone(), s.tags.join(" "), s.digest.to_string(), action.as_str(), error.map(str::to_owned)));
        }
    }

    /// Counts a version walked but left for a later run (the run stopped before it).
    pub(crate) fn left(&mut self, d: &Decision) {
        self.walked += 1;
        *self.by_repository.entry(d.stored.repository.clone()).or_default().entry("left-for-next-run").or_default() += 1;
    }

    /// The step summary.
    pub(crate) fn summary(&self, host: &str, max_delete: Option<u64>, budget: Option<&str>) -> String {
        let mut out = format!("## split-build prune{}\n\n", if self.apply { "" } else { " (dry run: nothing deleted; `--apply` deletes)" });
        let verb = if self.apply { "Deleted" } else { "Would delete" };
        let runs = match self.runs_left {
            Some(0) => "nothing is left to delete".to_owned(),
            Some(n) => format!("about {n} more run{} at this token's rate", if n == 1 { "" } else { "s" }),
            None => "more runs needed: the rate is unknown".to_owned(),
        };
        let _ = write!(out, "**{verb} {}**", self.deleted);
        if self.failed > 0 {
            let _ = write!(out, ", **{} failed**", self.failed);
        }
        let _ = writeln!(out, "; about **{} remain**: {runs}.\n", self.remaining);
        let why = match self.ended {
            Ended::Done => "every version was walked".to_owned(),
            Ended::MaxDelete => format!("`--max-delete {}` reached", max_delete.unwrap_or(0)),
            Ended::Limit(Stop::TimeBudget) => format!("the time budget (`--time-budget {}`) was ending", budget.unwrap_or("?")),
            Ended::Limit(Stop::HourlyBudget) => "the hourly API budget was spent and resets after the time budget ends".to_owned(),
        };
        let limit = self.hourly_limit.map(|l| format!("{l} requests an hour")).unwrap_or_else(|| "not stated".to_owned());
        let _ = writeln!(
            out,
            "Stopped: {why}. GitHub's hourly limit: {limit}; rate-limit answers waited out: {} hourly, {} secondary.\n",
            self.primary_waits, self.secondary_waits
        );
        out.push_str("| repository | action | manifests |\n|---|---|---:|\n");
        for (repo, actions) in &self.by_repository {
            for (action, n) in actions {
                let _ = writeln!(out, "| `{host}/{repo}` | {action} | {n} |");
            }
        }
        if !self.sample.is_empty() {
            let _ = writeln!(
                out,
                "\n<details><summary>{verb}: the first {}</summary>\n\n| repository | tags | digest | action |\n|---|---|---|---|",
                self.sample.len()
            );
            let rows = self.sample.iter().map(|(repo, tags, digest, action, error)| {
                format!("| {repo} | {tags} | `{digest}` | {action}{} |\n", error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())
            });
            let cut = push_rows_within(&mut out, rows, self.sample.len(), SUMMARY_BUDGET - 64);
            out.push_str(&cut_note(cut, "the report lists every manifest"));
            out.push_str("\n</details>\n");
        }
        out
    }
}

/// About how many deletions remain: those walked but not made, plus the versions not walked
/// yet at the share of deletions among those walked.
pub(crate) fn remaining(total: u64, walked: u64, doomed_walked: u64, deleted: u64) -> u64 {
    let unwalked = total.saturating_sub(walked);
    let share = (unwalked * doomed_walked).checked_div(walked).unwrap_or(unwalked);
    doomed_walked.saturating_sub(deleted) + share
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::image_ref::Digest;
    use crate::core::retention::{Reason, Stored};

    #[test]
    fn remaining_counts_the_unwalked_at_the_walked_share() {
        assert_eq!(remaining(12_000, 5_100, 5_099, 5_000), 99 + 6_900 * 5_099 / 5_100);
        assert_eq!(remaining(100, 0, 0, 0), 100);
        assert_eq!(remaining(100, 100, 40, 40), 0);
    }

    #[test]
    fn the_summary_says_deleted_remaining_and_runs() {
        let mut p = Progress::new(true);
        let stored = Stored {
            repository: "acme/agent".into(),
            digest: Digest::sha256_of(b"x"),
            tags: vec!["t1".into()],
            created: Some(0),
            size: None,
            children: vec![],
            version_id: Some(1),
        };
        let d = Decision { stored, keep: false, reason: Reason::Unused };
        p.count(&d, PruneAction::Deleted, None);
        p.left(&d);
        (p.remaining, p.runs_left, p.ended, p.hourly_limit) = (6_999, Some(2), Ended::MaxDelete, Some(1000));
        let md = p.summary("ghcr.io", Some(5000), Some("5h 30m"));
        assert!(md.contains("**Deleted 1**; about **6999 remain**: about 2 more runs at this token's rate."), "{md}");
        assert!(md.contains("`--max-delete 5000` reached"), "{md}");
        assert!(md.contains("| `ghcr.io/acme/agent` | left-for-next-run | 1 |"), "{md}");
        assert!(md.contains("1000 requests an hour"), "{md}");
    }
}
