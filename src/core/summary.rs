//! Step summaries: the markdown a command appends to `$GITHUB_STEP_SUMMARY` (or writes to
//! `--summary FILE`). GitHub drops a summary over 1 MiB, so long lists are cut to a budget
//! with a note saying how many rows were left out.

use std::fmt::Write as _;

use crate::core::plan::{Plan, Status};

/// The most bytes a summary of ours takes: half of GitHub's 1 MiB cap, so several commands
/// in one job still fit.
pub const SUMMARY_BUDGET: usize = 512 * 1024;

/// A mermaid pie chart of labelled counts; zero slices are left out.
pub fn pie(title: &str, slices: &[(&str, usize)]) -> String {
    let mut out = format!("```mermaid\npie showData title {title}\n");
    for (label, n) in slices.iter().filter(|(_, n)| *n > 0) {
        let _ = writeln!(out, "    \"{label}\" : {n}");
    }
    out.push_str("```\n");
    out
}

/// Appends table `rows` (`total` of them, made lazily) to `out` while `out` stays under
/// `budget` bytes, leaving room for the closing note; returns how many rows were left out.
pub fn push_rows_within(out: &mut String, rows: impl Iterator<Item = String>, total: usize, budget: usize) -> usize {
    const NOTE_ROOM: usize = 256;
    let mut written = 0;
    for row in rows {
        if out.len() + row.len() + NOTE_ROOM > budget {
            break;
        }
        out.push_str(&row);
        written += 1;
    }
    total - written
}

/// The note that closes a cut list.
pub fn cut_note(left_out: usize, whole: &str) -> String {
    if left_out == 0 {
        String::new()
    } else {
        format!("\n*… and {left_out} more rows, cut to keep this summary under GitHub's 1 MiB limit; {whole}.*\n")
    }
}

fn count(statuses: impl Iterator<Item = Status>) -> [usize; 3] {
    let mut c = [0; 3];
    for s in statuses {
        c[match s {
            Status::Hit => 0,
            Status::Warm => 1,
            Status::Cold => 2,
        }] += 1;
    }
    c
}

/// The step summary of `plan`: per-stage counts, the hit/warm/cold chart and the images to
/// make, within `budget` bytes.
pub fn plan_summary(plan: &Plan, offline: bool, budget: usize) -> String {
    let matrices = &plan.matrices;
    let builder = count(plan.builder.platforms.iter().map(|_| plan.builder.status));
    let bases = count(plan.bases.iter().map(|b| b.status));
    let agents = count(plan.agents.iter().map(|a| a.status));
    let total = [0, 1, 2].map(|i| builder[i] + bases[i] + agents[i]);
    let counts = plan.counts();

    let mut out = String::new();
    out.push_str("## split-build plan\n\n");
    if offline {
        out.push_str("Offline plan: the registry was not asked, so every image counts as missing.\n\n");
    }
    out.push_str("| stage | planned | hit | warm | cold | jobs |\n|---|---:|---:|---:|---:|---:|\n");
    let rows = [
        ("builder", builder, matrices.builder.include.len()),
        ("bases", bases, matrices.bases.include.len()),
        ("agents", agents, matrices.agents.include.len()),
    ];
    for (name, c, jobs) in rows {
        let _ = writeln!(out, "| {name} | {} | {} | {} | {} | {jobs} |", c[0] + c[1] + c[2], c[0], c[1], c[2]);
    }
    let _ = writeln!(out, "| **total** | **{}** | **{}** | **{}** | **{}** | |\n", counts.planned, total[0], total[1], total[2]);
    let _ = writeln!(
        out,
        "Builder `{}`: {}. Cache hits: {} of {} images.\n",
        plan.builder.image,
        if counts.builder_needed { "to build" } else { "exists (hit)" },
        counts.cache_hits,
        counts.planned
    );
    for note in &plan.notes {
        let _ = writeln!(out, "> **Note:** {note}\n");
    }

    out.push_str("<details><summary>Hits and misses</summary>\n\n");
    out.push_str(&pie("Images by status", &[("hit", total[0]), ("warm", total[1]), ("cold", total[2])]));
    out.push_str("\n</details>\n\n");

    let missing = counts.planned - counts.cache_hits;
    let _ = writeln!(out, "<details><summary>Images to make ({missing})</summary>\n");
    out.push_str("| stage | image | platform | status |\n|---|---|---|---|\n");
    let builder_rows = plan
        .builder
        .platforms
        .iter()
        .filter(|_| counts.builder_needed)
        .map(|p| format!("| builder | `{}` | {p} | {} |\n", plan.builder.image, plan.builder.status.as_str()));
    let base_rows = plan
        .bases
        .iter()
        .filter(|b| b.status.is_missing())
        .map(|b| format!("| bases | `{}` | {} | {} |\n", b.image, b.platform, b.status.as_str()));
    let agent_rows = plan
        .agents
        .iter()
        .filter(|a| a.status.is_missing())
        .map(|a| format!("| agents | `{}` | {} | {} |\n", a.image, a.platform, a.status.as_str()));
    let left_out = push_rows_within(&mut out, builder_rows.chain(base_rows).chain(agent_rows), missing, budget.saturating_sub(32));
    out.push_str(&cut_note(left_out, "the `plan` output has every image"));
    out.push_str("\n</details>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pie_leaves_out_zero_slices() {
        let p = pie("t", &[("hit", 0), ("cold", 3)]);
        assert!(!p.contains("\"hit\""));
        assert!(p.contains("\"cold\" : 3"));
        assert!(p.starts_with("```mermaid\npie showData title t\n"));
    }

    #[test]
    fn rows_stop_at_the_budget_and_say_how_many_were_cut() {
        let mut out = String::from("head\n");
        let rows = (0..10_000).map(|i| format!("| row {i} |\n"));
        let cut = push_rows_within(&mut out, rows, 10_000, 4096);
        assert!(out.len() <= 4096);
        assert!(cut > 0);
        assert!(cut_note(cut, "see x").contains(&cut.to_string()));
        assert_eq!(cut_note(0, "x"), "");
    }
}
