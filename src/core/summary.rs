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

/// The step summary of one or many command reports (matrix jobs merged): totals by
/// status, time per stage, the ten slowest images, every failure with its reason, and a
/// chart; within `budget` bytes.
pub fn report_summary(title: &str, reports: &[crate::core::report::Report], budget: usize) -> String {
    use crate::core::report::Outcome;
    use std::collections::BTreeMap;

    let images: Vec<&crate::core::report::ImageRecord> = reports.iter().flat_map(|r| r.images.iter()).collect();
    let mut out = format!("## {title}\n\n");
    if images.is_empty() {
        out.push_str("No images in the reports.\n");
        return out;
    }
    let statuses = [Outcome::Hit, Outcome::Warm, Outcome::Cold, Outcome::Built, Outcome::Assembled, Outcome::Failed];
    let mut by_stage: BTreeMap<&str, ([usize; 6], f64)> = BTreeMap::new();
    for i in &images {
        let e = by_stage.entry(i.stage.as_str()).or_default();
        if let Some(k) = statuses.iter().position(|s| *s == i.status) {
            e.0[k] += 1;
        }
        e.1 += i.seconds;
    }
    out.push_str("| stage | images | hit | built | assembled | failed | time (sum) |\n|---|---:|---:|---:|---:|---:|---:|\n");
    let mut totals = [0usize; 6];
    for (stage, (c, secs)) in &by_stage {
        for k in 0..6 {
            totals[k] += c[k];
        }
        let _ =
            writeln!(out, "| {stage} | {} | {} | {} | {} | {} | {} |", c.iter().sum::<usize>(), c[0], c[3], c[4], c[5], human_secs(*secs));
    }
    let wall: f64 = reports.iter().map(|r| r.seconds).sum();
    let _ = writeln!(
        out,
        "| **total** | **{}** | **{}** | **{}** | **{}** | **{}** | {} |\n",
        images.len(),
        totals[0],
        totals[3],
        totals[4],
        totals[5],
        human_secs(images.iter().map(|i| i.seconds).sum())
    );
    let pushed: u64 = images.iter().map(|i| i.bytes_pushed).sum();
    let requests: u64 = images.iter().map(|i| i.requests).sum();
    let retries: u64 = images.iter().map(|i| i.retries).sum();
    let _ = writeln!(
        out,
        "{} report(s), {} of command time; {requests} registry requests ({retries} retried), {} pushed.\n",
        reports.len(),
        human_secs(wall),
        human_bytes(pushed)
    );

    out.push_str("<details><summary>Chart</summary>\n\n");
    let slices: Vec<(&str, usize)> = statuses.iter().zip(totals).map(|(s, n)| (s.as_str(), n)).collect();
    out.push_str(&pie("Images by outcome", &slices));
    out.push_str("\n</details>\n\n");

    let mut slow: Vec<&&crate::core::report::ImageRecord> = images.iter().filter(|i| i.status != Outcome::Hit).collect();
    slow.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then_with(|| a.image.cmp(&b.image)));
    if !slow.is_empty() {
        out.push_str("### Slowest\n\n| image | stage | outcome | time |\n|---|---|---|---:|\n");
        for i in slow.iter().take(10) {
            let _ = writeln!(out, "| `{}` | {} | {} | {} |", i.image, i.stage, i.status.as_str(), human_secs(i.seconds));
        }
        out.push('\n');
    }

    let failures: Vec<&&crate::core::report::ImageRecord> = images.iter().filter(|i| i.status == Outcome::Failed).collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "### Failures ({})\n\n| image | platform | reason |\n|---|---|---|", failures.len());
        let rows = failures.iter().map(|i| {
            let reason = i.error.as_deref().unwrap_or("unknown").replace('|', "\\|").replace('\n', " ");
            format!("| `{}` | {} | {} |\n", i.image, i.platform, reason)
        });
        let cut = push_rows_within(&mut out, rows, failures.len(), budget.saturating_sub(32));
        out.push_str(&cut_note(cut, "every failure is in the JSON reports"));
    }
    out
}

/// Seconds as humantime (`1m 3s`, `250ms`).
pub fn human_secs(secs: f64) -> String {
    let d = std::time::Duration::from_millis((secs.max(0.0) * 1000.0).round() as u64);
    let d = if d.as_secs() >= 1 { std::time::Duration::from_secs(d.as_secs()) } else { d };
    humantime::format_duration(d).to_string()
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod report_tests {
    use super::*;
    use crate::core::report::{ImageRecord, Outcome, Report, Stage};

    fn rec(i: usize, status: Outcome) -> ImageRecord {
        ImageRecord {
            stage: if i.is_multiple_of(3) { Stage::Bases } else { Stage::Agents },
            image: format!("reg/x:{i}"),
            instance: Some(format!("i{i}")),
            variant: None,
            platform: "linux/amd64".into(),
            status,
            seconds: i as f64 / 10.0,
            bytes_pushed: 1500,
            requests: 8,
            retries: u64::from(i.is_multiple_of(7)),
            writes: 0,
            error: (status == Outcome::Failed).then(|| format!("pushing `reg/x:{i}`: 500 | boom\nline")),
        }
    }

    #[test]
    fn merged_summary_snapshot() {
        let a = Report {
            registry: Default::default(),
            command: "assemble".into(),
            seconds: 3.5,
            images: (0..6).map(|i| rec(i, if i == 4 { Outcome::Failed } else { Outcome::Assembled })).collect(),
        };
        let b = Report {
            command: "build".into(),
            seconds: 70.0,
            registry: Default::default(),
            images: vec![rec(9, Outcome::Built), rec(12, Outcome::Hit)],
        };
        insta::assert_snapshot!("merged_report_summary", report_summary("split-build report", &[a, b], SUMMARY_BUDGET));
    }

    #[test]
    fn ten_thousand_images_stay_under_the_limit() {
        let r = Report {
            command: "run".into(),
            seconds: 1.0,
            registry: Default::default(),
            images: (0..10_000).map(|i| rec(i, Outcome::Failed)).collect(),
        };
        let s = report_summary("t", &[r], SUMMARY_BUDGET);
        assert!(s.len() <= SUMMARY_BUDGET, "{}", s.len());
        assert!(s.contains("more rows, cut"));
    }

    #[test]
    fn empty_reports_say_so() {
        assert!(report_summary("t", &[], SUMMARY_BUDGET).contains("No images"));
    }
}

/// The step summary of `prune`: manifests and bytes per repository and action, the rules
/// that kept what stays, and what was (or would be) deleted, within the summary budget.
pub fn prune_summary(lines: &[crate::core::report::PruneLine<'_>], apply: bool, host: &str) -> String {
    use std::collections::BTreeMap;

    let mut out = format!("## split-build prune{}\n\n", if apply { "" } else { " (dry run: nothing deleted; `--apply` deletes)" });
    let mut by: BTreeMap<(&str, &str), (usize, u64)> = BTreeMap::new();
    for l in lines {
        let e = by.entry((l.decision.stored.repository.as_str(), l.action.as_str())).or_default();
        e.0 += 1;
        e.1 += l.decision.stored.size.unwrap_or(0);
    }
    out.push_str("| repository | action | manifests | bytes known |\n|---|---|---:|---:|\n");
    for ((repo, action), (n, bytes)) in &by {
        let _ = writeln!(out, "| `{host}/{repo}` | {action} | {n} | {bytes} |");
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.decision.keep) {
        *reasons.entry(format!("{:?}", l.decision.reason).split('(').next().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let _ = writeln!(out, "\nKept by rule: {}\n", reasons.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
    let gone: Vec<&crate::core::report::PruneLine<'_>> = lines.iter().filter(|l| !l.decision.keep).collect();
    if !gone.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>{} ({})</summary>\n\n| repository | tags | digest | action |\n|---|---|---|---|",
            if apply { "Deleted" } else { "Would delete" },
            gone.len()
        );
        let rows = gone.iter().map(|l| {
            format!(
                "| {} | {} | `{}` | {}{} |\n",
                l.decision.stored.repository,
                l.decision.stored.tags.join(" "),
                l.decision.stored.digest,
                l.action.as_str(),
                l.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )
        });
        let cut = push_rows_within(&mut out, rows, gone.len(), SUMMARY_BUDGET - 64);
        out.push_str(&cut_note(cut, "the report lists every manifest"));
        out.push_str("\n</details>\n");
    }
    out
}
