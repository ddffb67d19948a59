//! Step summaries: the markdown a command appends to `$GITHUB_STEP_SUMMARY` (or writes to
//! `--summary FILE`). Each opens with a verdict; the merged report then accounts for every
//! planned image stage by stage, groups failures by cause and draws the jobs' wall-clock
//! spans. GitHub drops a summary over 1 MiB, so a summary is written to a byte budget: it
//! first shows less detail (fewer names a group, shorter reasons), then cuts rows, and its
//! closing line says what it left out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::core::failures::{FailureGroup, group_failures, reason_lines};
pub use crate::core::figures::human_secs;
use crate::core::figures::{count, human_bytes};
use crate::core::natural_sort::natural_cmp;
use crate::core::notes::{NoteGroup, group_notes};
use crate::core::plan::{Plan, Status};
use crate::core::report::{ImageRecord, Outcome, Report, Stage};
use crate::core::tally::{JOB_SILENT, JobIndex, STAGES, StageTally, Tally, job_of_report, span, stage_of, tally};

/// The most bytes a summary of ours takes: half of GitHub's 1 MiB cap, so several commands
/// in one job still fit.
pub const SUMMARY_BUDGET: usize = 512 * 1024;

/// How much detail a summary shows; a summary over its budget steps down these levels before
/// it cuts any row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detail {
    /// Names shown with a group (of failures, notes, silent jobs).
    pub names: usize,
    /// Names listed in a group's folded list.
    pub listed: usize,
    /// Lines of a failure's reason.
    pub reason_lines: usize,
    /// Characters of one reason line.
    pub line_chars: usize,
}

/// The levels of detail, most first.
pub const DETAIL: [Detail; 3] = [
    Detail { names: 5, listed: 1000, reason_lines: 40, line_chars: 300 },
    Detail { names: 3, listed: 100, reason_lines: 12, line_chars: 200 },
    Detail { names: 3, listed: 0, reason_lines: 4, line_chars: 120 },
];

/// Room kept for the closing note and the tags that close an open block.
const CLOSING_ROOM: usize = 1024;

/// Colours that mean the same in every chart (GitHub's palette).
const GREEN: &str = "#1a7f37";
const AMBER: &str = "#bf8700";
const GREY: &str = "#8c959f";

/// A summary being written to a byte budget: rows go in while they fit, and what did not fit
/// is remembered, so that the closing line says what was left out.
#[derive(Debug)]
pub struct Page {
    out: String,
    budget: usize,
    left_out: Vec<String>,
}

impl Page {
    /// An empty page of `budget` bytes.
    pub fn new(budget: usize) -> Page {
        Page { out: String::new(), budget, left_out: Vec::new() }
    }

    /// Adds text that is not a row (headings, a verdict, a table's head).
    pub fn push(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// Adds `rows` (`total` of them, made lazily) while the page stays in its budget; what is
    /// cut is remembered as "K of N `what`". Returns how many were cut.
    pub fn rows(&mut self, rows: impl Iterator<Item = String>, total: usize, what: &str) -> usize {
        let cut = push_rows_within(&mut self.out, rows, total, self.budget.saturating_sub(CLOSING_ROOM));
        if cut > 0 {
            self.left_out.push(format!("{} of {} {what}", count(cut), count(total)));
        }
        cut
    }

    /// Whether any row was cut.
    pub fn was_cut(&self) -> bool {
        !self.left_out.is_empty()
    }

    /// The page with its closing note: what was shown with less detail (`trimmed`) and which
    /// rows were left out, and where `whole` has everything.
    pub fn finish(mut self, trimmed: Option<&Detail>, whole: &str) -> String {
        let mut said = Vec::new();
        if let Some(d) = trimmed {
            said.push(format!(
                "groups show at most {} names{} and reasons at most {} lines",
                d.names,
                if d.listed == 0 { " (no folded lists)".to_owned() } else { format!(" ({} in a folded list)", count(d.listed)) },
                d.reason_lines
            ));
        }
        if !self.left_out.is_empty() {
            said.push(format!("left out: {}", self.left_out.join(", ")));
        }
        if !said.is_empty() {
            let _ = writeln!(self.out, "\n*To stay under GitHub's 1 MiB limit for a summary, {}; {whole}.*", said.join("; "));
        }
        self.out
    }
}

/// The page `render` writes at the most detail that cuts no row (or at the least detail, cut),
/// with its closing note; `whole` says where everything is.
fn fitted(render: impl Fn(&Detail) -> Page, whole: &str) -> String {
    let mut level = 0;
    loop {
        let detail = &DETAIL[level];
        let page = render(detail);
        if !page.was_cut() || level + 1 == DETAIL.len() {
            return page.finish((level > 0).then_some(detail), whole);
        }
        level += 1;
    }
}

/// A section of already-rendered `lines` under a `###` heading, folded into `<details>`
/// when `folded`; nothing when `lines` is empty. Each line is a row of the budget. A new
/// block of a summary (the plan's "why" grouping, say) is one more call of this.
pub fn section(page: &mut Page, title: &str, lines: &[String], folded: bool) {
    if lines.is_empty() {
        return;
    }
    if folded {
        let _ = write!(page.out, "<details><summary>{title}</summary>\n\n");
    } else {
        let _ = write!(page.out, "### {title}\n\n");
    }
    page.rows(lines.iter().map(|l| format!("{l}\n")), lines.len(), &format!("lines of \"{title}\""));
    page.push(if folded { "\n</details>\n\n" } else { "\n" });
}

/// A mermaid pie of labelled counts, each slice in its own colour whatever its place; nothing
/// when fewer than two slices are not zero (a one-slice pie says nothing a number does not).
pub fn pie(title: &str, slices: &[(&str, usize, &str)]) -> String {
    let shown: Vec<&(&str, usize, &str)> = slices.iter().filter(|(_, n, _)| *n > 0).collect();
    if shown.len() < 2 {
        return String::new();
    }
    let colours: Vec<String> = shown.iter().enumerate().map(|(i, (_, _, c))| format!("\"pie{}\": \"{c}\"", i + 1)).collect();
    let mut out = format!(
        "```mermaid\n%%{{init: {{\"theme\": \"base\", \"themeVariables\": {{{}}}}}}}%%\npie showData title {title}\n",
        colours.join(", ")
    );
    for (label, n, _) in shown {
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
        format!("\n*… and {} more rows, cut to keep this summary under GitHub's 1 MiB limit; {whole}.*\n", count(left_out))
    }
}

/// `names` in backticks, the first `shown` of `total`, with how many more there are.
fn some_names<S: AsRef<str>>(names: impl Iterator<Item = S>, shown: usize, total: usize) -> String {
    some_of(names.map(|n| format!("`{}`", n.as_ref())), shown, total)
}

/// The first `shown` of `total` items, with how many more there are.
fn some_of(items: impl Iterator<Item = String>, shown: usize, total: usize) -> String {
    let mut out: Vec<String> = items.take(shown).collect();
    if total > out.len() {
        out.push(format!("and {} more", count(total - out.len())));
    }
    join_names(&out)
}

/// Names joined by commas, "and N more" last; a line break after every tenth name keeps a
/// long list readable as source (a paragraph's lines join up when rendered).
fn join_names(names: &[String]) -> String {
    let mut out = String::new();
    for (k, n) in names.iter().enumerate() {
        if k > 0 {
            out.push_str(if n.starts_with("and ") {
                " "
            } else if k % 10 == 0 {
                ",\n"
            } else {
                ", "
            });
        }
        out.push_str(n);
    }
    out
}

/// Text that goes in a table cell or a heading: no pipes or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A fenced `text` block of `lines`, its fence longer than any run of backticks inside.
fn text_block(lines: &[String]) -> String {
    let longest = lines.iter().map(|l| l.split(|c| c != '`').map(str::len).max().unwrap_or(0)).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}text\n{}\n{fence}\n", lines.join("\n"))
}

fn shorten(line: &str, chars: usize) -> String {
    if line.chars().count() > chars { format!("{}…", line.chars().take(chars).collect::<String>()) } else { line.to_owned() }
}

/// A reason's lines cut to the detail level, saying how many lines were cut.
fn reason_block(reason: &str, d: &Detail) -> String {
    let lines = reason_lines(reason);
    let mut shown: Vec<String> = lines.iter().take(d.reason_lines).map(|l| shorten(l, d.line_chars)).collect();
    if lines.len() > shown.len() {
        shown.push(format!("… ({} more lines in the JSON report)", lines.len() - shown.len()));
    }
    text_block(&shown)
}

fn status_counts(statuses: impl Iterator<Item = Status>) -> [usize; 3] {
    let mut c = [0; 3];
    for s in statuses {
        c[match s {
            Status::Hit => 0,
            Status::Warm => 1,
            Status::Cold => 2,
            // Not planned: the notes name them.
            Status::Unresolved => continue,
        }] += 1;
    }
    c
}

/// What the summary says of the builder: a hit, or to build warm (with the earlier build it
/// takes cache from) or cold.
fn builder_line(plan: &Plan) -> String {
    let b = &plan.builder;
    match b.status {
        Status::Hit => "exists (hit)".to_owned(),
        Status::Warm => {
            let from: Vec<String> = b.cache_from.iter().map(|c| format!("`{c}`")).collect();
            format!("to build, warm (cache from {})", from.join(", "))
        }
        // The builder has no upstream: never unresolved.
        Status::Cold | Status::Unresolved => "to build, cold (no earlier build to take cache from)".to_owned(),
    }
}

/// The builder's status on one platform: warm only where that platform's earlier build exists.
fn builder_status_on(plan: &Plan, platform: &crate::core::platform::Platform) -> Status {
    let b = &plan.builder;
    let warm = crate::core::build_cache::warm_image(&b.image, platform, &b.platforms);
    if b.status == Status::Warm && !b.cache_from.contains(&warm) { Status::Cold } else { b.status }
}

/// The step summary of `plan`: a verdict, per-stage counts, the notes grouped by cause, the
/// hit/warm/cold chart and the images to make, within `budget` bytes.
pub fn plan_summary(plan: &Plan, offline: bool, budget: usize) -> String {
    let notes = group_notes(&plan.notes);
    fitted(|d| plan_page(plan, offline, &notes, d, budget), "the `plan` output has every image and note")
}

fn plan_page(plan: &Plan, offline: bool, notes: &[NoteGroup<'_>], d: &Detail, budget: usize) -> Page {
    let matrices = &plan.matrices;
    let builder = status_counts(plan.builder.platforms.iter().map(|p| builder_status_on(plan, p)));
    let bases = status_counts(plan.bases.iter().map(|b| b.status));
    let agents = status_counts(plan.agents.iter().map(|a| a.status));
    let total = [0, 1, 2].map(|i| builder[i] + bases[i] + agents[i]);
    let counts = plan.counts();
    let jobs = matrices.builder.include.len() + matrices.bases.include.len() + matrices.agents.include.len();
    let missing = counts.planned - counts.cache_hits;

    let mut page = Page::new(budget);
    page.push("## split-build plan\n\n");
    let mut verdict = if missing == 0 {
        format!("✅ **All {} planned images exist**: nothing to make.", count(counts.planned))
    } else {
        let mut parts = Vec::new();
        if counts.builder_needed {
            parts.push("the builder".to_owned());
        }
        for (n, warm, what) in [(counts.bases_missing, counts.bases_warm, "bases"), (counts.agents_missing, 0, "agents")] {
            if n > 0 {
                parts.push(format!("{} {what}{}", count(n), if warm > 0 { format!(" ({} warm)", count(warm)) } else { String::new() }));
            }
        }
        format!("📋 **{} of {} images to make** in {} jobs: {}.", count(missing), count(counts.planned), count(jobs), parts.join(", "))
    };
    if !notes.is_empty() {
        let _ = write!(verdict, " ⚠️ {} {} below.", count(notes.len()), if notes.len() == 1 { "note" } else { "notes" });
    }
    page.push(&verdict);
    page.push("\n\n");
    if offline {
        page.push("Offline plan: the registry was not asked, so every image counts as missing.\n\n");
    }
    page.push("| stage | planned | hit | warm | cold | jobs |\n|---|---:|---:|---:|---:|---:|\n");
    let rows = [
        ("builder", builder, matrices.builder.include.len()),
        ("bases", bases, matrices.bases.include.len()),
        ("agents", agents, matrices.agents.include.len()),
    ];
    let line = |name: &str, c: [usize; 3], jobs: usize, bold: bool| {
        let cells = [c[0] + c[1] + c[2], c[0], c[1], c[2], jobs].map(|n| if bold { format!("**{}**", count(n)) } else { count(n) });
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    for (name, c, jobs) in rows {
        page.push(&line(name, c, jobs, false));
    }
    page.push(&line("**total**", total, jobs, true));
    page.push("\n");
    let _ = writeln!(
        page.out,
        "Builder `{}`: {}. Cache hits: {} of {} images.\n",
        plan.builder.image,
        builder_line(plan),
        count(counts.cache_hits),
        count(counts.planned)
    );

    let note_rows = notes.iter().map(|g| note_row(g, d));
    page.rows(note_rows, notes.len(), "notes");

    let chart = pie("Images by status", &[("hit", total[0], GREEN), ("warm", total[1], AMBER), ("cold", total[2], GREY)]);
    if !chart.is_empty() {
        page.push("<details><summary>Hits and misses</summary>\n\n");
        page.push(&chart);
        page.push("\n</details>\n\n");
    }
    section(&mut page, "Why they are made", &crate::core::why::plan_why_lines(plan), false);

    if missing > 0 {
        let _ = writeln!(page.out, "<details><summary>Images to make ({})</summary>\n", count(missing));
        images_to_make(&mut page, plan);
        page.push("</details>\n");
    }
    page
}

/// One group of notes as a quote: the note, and for a group its count, host and a few names.
fn note_row(g: &NoteGroup<'_>, d: &Detail) -> String {
    if g.count == 1 {
        return format!("> **Note:** {}\n\n", g.text);
    }
    let on = g.host.map(|h| format!(", all on `{h}`")).unwrap_or_default();
    format!("> **Note** (×{}{on}): {}\n> {}.\n\n", count(g.count), g.text, some_names(g.names.iter(), d.names, g.count))
}

/// The images to make, stage by stage: each repository said once, then the names
/// (`instance`, or `instance-variant` where an instance misses only some variants), a status
/// or platform only where they differ.
fn images_to_make(page: &mut Page, plan: &Plan) {
    let counts = plan.counts();
    let platforms = plan.builder.platforms.len();
    if counts.builder_needed {
        let ps: Vec<String> = plan.builder.platforms.iter().map(ToString::to_string).collect();
        let _ = writeln!(page.out, "**builder** `{}` ({}, {})\n", plan.builder.image, ps.join(", "), plan.builder.status.as_str());
    }

    // Bases: by instance; a status beside a name only when the stage has several.
    let missing: Vec<&crate::core::plan::BasePlan> = plan.bases.iter().filter(|b| b.status.is_missing()).collect();
    if let Some(first) = missing.first() {
        let mixed = missing.iter().any(|b| b.status != first.status);
        let mut by: BTreeMap<&str, Vec<&crate::core::plan::BasePlan>> = BTreeMap::new();
        for b in &missing {
            by.entry(b.instance.as_str()).or_default().push(b);
        }
        let mut names: Vec<String> = by
            .iter()
            .map(|(i, bs)| {
                let mut n = (*i).to_owned();
                if bs.len() < platforms {
                    n = format!("{n} ({})", bs.iter().map(|b| b.platform.to_string()).collect::<Vec<_>>().join(", "));
                }
                if mixed {
                    n = format!("{n} {}", bs[0].status.as_str());
                }
                n
            })
            .collect();
        names.sort_by(|a, b| natural_cmp(a, b));
        let repo = format!("{}/{}", first.image.registry, first.image.repository);
        let status = if mixed { String::new() } else { format!(", all {}", first.status.as_str()) };
        let _ = writeln!(page.out, "**{} bases**{} in `{repo}`{status}:\n", count(missing.len()), on_platforms(platforms));
        name_list(page, &names, "base names");
    }

    // Agents: by instance; an instance that misses every variant on every platform is named
    // alone.
    let variants: std::collections::BTreeSet<&str> = plan.agents.iter().map(|a| a.variant.as_str()).collect();
    let whole = variants.len() * platforms;
    let mut by: BTreeMap<&str, Vec<&crate::core::plan::AgentPlan>> = BTreeMap::new();
    for a in plan.agents.iter().filter(|a| a.status.is_missing()) {
        by.entry(a.instance.as_str()).or_default().push(a);
    }
    if let Some(first) = by.values().next().and_then(|v| v.first()) {
        let mut names: Vec<String> = Vec::new();
        for (i, agents) in &by {
            if agents.len() == whole {
                names.push((*i).to_owned());
            } else {
                let mut vs: Vec<String> = agents.iter().map(|a| format!("{i}-{}", a.variant)).collect();
                vs.dedup();
                names.extend(vs);
            }
        }
        names.sort_by(|a, b| natural_cmp(a, b));
        let repo = format!("{}/{}", first.image.registry, first.image.repository);
        let every = by.values().all(|v| v.len() == whole);
        let what = if every {
            format!(", every variant ({}) of these instances", variants.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "))
        } else {
            String::new()
        };
        let agents: usize = by.values().map(Vec::len).sum();
        let _ = writeln!(page.out, "**{} agents**{} in `{repo}`{what}:\n", count(agents), on_platforms(platforms));
        name_list(page, &names, "agent names");
    }
}

/// ` (on N platforms)` when there are several: then each name stands for one image a platform.
fn on_platforms(platforms: usize) -> String {
    if platforms > 1 { format!(" (on {platforms} platforms)") } else { String::new() }
}

/// Names in backticks, comma-separated in one paragraph (a table of one column is a list
/// that takes a screen per fifty names), each name a row of the budget.
fn name_list(page: &mut Page, names: &[String], what: &str) {
    let last = names.len().saturating_sub(1);
    let rows = names.iter().enumerate().map(|(k, n)| {
        format!(
            "`{n}`{}",
            if k == last {
                ""
            } else if k % 10 == 9 {
                ",\n"
            } else {
                ", "
            }
        )
    });
    let cut = page.rows(rows, names.len(), what);
    if cut > 0 {
        let _ = write!(page.out, " … and {} more", count(cut));
    }
    page.push("\n\n");
}

/// What a report summary is of and for whom.
#[derive(Debug, Clone, Copy)]
pub struct ReportView<'a> {
    /// The heading (`split-build report`, `split-build assemble`).
    pub title: &'a str,
    /// The job reports.
    pub reports: &'a [Report],
    /// The run's plan: every image it names is accounted for.
    pub plan: Option<&'a Plan>,
    /// The run's page (`$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`).
    pub run_url: Option<&'a str>,
    /// Who reads it: a matrix job's page, a whole `run`, or the merged report of a run.
    pub scope: Scope,
}

/// What a report summary covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One matrix job (`build`, `assemble`): its verdict and failures; the merged report
    /// has the rest.
    Job,
    /// A whole `run` in one process: the whole story.
    Run,
    /// The `report` job's merge of a run's job reports: the whole story, and every image
    /// of the plan accounted for.
    Merged,
}

/// The step summary of one or many command reports: the verdict, every stage in pipeline
/// order with its wall-clock time, what was not attempted and why, failures grouped by cause,
/// a chart of the jobs' spans and the slowest images; within `budget` bytes.
pub fn report_summary(view: &ReportView<'_>, budget: usize) -> String {
    let t = tally(view.reports, view.plan);
    let index = view.plan.map(JobIndex::of).unwrap_or_default();
    let records: Vec<&ImageRecord> = view.reports.iter().flat_map(|r| r.images.iter()).collect();
    let groups = group_failures(records.iter().copied(), &index);
    let whole = if view.scope == Scope::Job { "this job's JSON report has every image" } else { "the JSON reports have every image" };
    fitted(|d| report_page(view, &t, &index, &records, &groups, d, budget), whole)
}

fn report_page(
    view: &ReportView<'_>,
    t: &Tally,
    index: &JobIndex,
    records: &[&ImageRecord],
    groups: &[FailureGroup<'_>],
    d: &Detail,
    budget: usize,
) -> Page {
    let mut page = Page::new(budget);
    let _ = write!(page.out, "## {}\n\n", view.title);
    if t.sum(StageTally::images) == 0 {
        page.push("No images in the reports.\n");
        return page;
    }
    page.push(&verdict(t, view.scope));
    page.push("\n\n");
    let full = view.scope != Scope::Job;
    if full {
        stage_table(&mut page, t);
        repositories(&mut page, view);
        not_attempted(&mut page, t, d);
    }
    failures(&mut page, groups, records, view.run_url, d);
    if !full {
        page.push("*The run's merged report (the `report` job) has every stage, the jobs' times and the slowest images.*\n");
        return page;
    }
    let chart = gantt(view.reports, index);
    if !chart.is_empty() {
        page.push("### Jobs\n\n");
        page.push(&chart);
        page.push("\n");
    }
    slowest(&mut page, records);
    footer(&mut page, view, t);
    page
}

/// The first line: ✅ or ❌, what is missing, what was made and found, the jobs and the
/// wall-clock time.
pub fn verdict(t: &Tally, scope: Scope) -> String {
    let full = scope != Scope::Job;
    let images = t.sum(StageTally::images);
    let (made, hit, failed, not_attempted) = (t.sum(|s| s.made), t.sum(|s| s.hit), t.sum(|s| s.failed), t.sum(|s| s.not_attempted));
    let missing = t.missing();
    let some = |n: usize, what: &str| (n > 0).then(|| format!("{} {what}", count(n)));
    let mut parts: Vec<String> = Vec::new();
    let head = if missing == 0 {
        let noun = if images == 1 { "image" } else { "images" };
        let what = if t.planned {
            format!("planned {noun} {}", if images == 1 { "is there" } else { "are there" })
        } else if full {
            format!("{noun}, none failed")
        } else {
            noun.to_owned()
        };
        let done: Vec<String> = [some(made, "made"), some(hit, "hit")].into_iter().flatten().collect();
        format!("✅ **{} {what}**: {}", count(images), done.join(", "))
    } else {
        let lost: Vec<String> = [some(failed, "failed"), some(not_attempted, "not attempted")].into_iter().flatten().collect();
        parts.extend([some(made, "made"), some(hit, "hit")].into_iter().flatten());
        let planned = if t.planned { "planned " } else { "" };
        let noun = if images == 1 { "image" } else { "images" };
        format!("❌ **{} of {} {planned}{noun} missing**: {}", count(missing), count(images), lost.join(", "))
    };
    if full && t.jobs > 0 {
        parts.push(if t.jobs_failed > 0 {
            format!("{} of {} jobs failed", count(t.jobs_failed), count(t.jobs))
        } else {
            format!("{} {}", count(t.jobs), if t.jobs == 1 { "job" } else { "jobs" })
        });
    }
    if let Some(w) = t.wall {
        parts.push(format!("{} wall clock", human_secs(w)));
    }
    let mut out = head;
    for p in parts {
        out.push_str(" · ");
        out.push_str(&p);
    }
    if !t.planned && scope == Scope::Merged {
        out.push_str("\n\n*No plan given (`--plan`): an image no job reported is not counted.*");
    }
    out
}

/// Per stage in pipeline order: planned, hit, made, failed, not attempted, jobs, wall clock;
/// the columns that say nothing here (no plan, nothing skipped, no times) left out.
fn stage_table(page: &mut Page, t: &Tally) {
    let with_planned = t.planned;
    let with_skipped = t.sum(|s| s.not_attempted) > 0;
    let with_wall = t.stages.iter().any(|s| s.wall.is_some()) || t.wall.is_some();
    let mut head = vec!["stage"];
    let mut align = vec!["---"];
    let cols: [(&str, bool); 7] = [
        ("planned", with_planned),
        ("hit", true),
        ("made", true),
        ("failed", true),
        ("not attempted", with_skipped),
        ("jobs", true),
        ("wall clock", with_wall),
    ];
    for (name, on) in cols {
        if on {
            head.push(name);
            align.push("---:");
        }
    }
    let _ = writeln!(page.out, "| {} |\n|{}|", head.join(" | "), align.join("|"));
    let row = |name: String, s: &StageTally, jobs: String, wall: Option<f64>, bold: bool| {
        let b = |v: String| if bold && !v.is_empty() { format!("**{v}**") } else { v };
        let values = [
            (s.planned.map(count).unwrap_or_default(), with_planned),
            (count(s.hit), true),
            (count(s.made), true),
            (count(s.failed), true),
            (count(s.not_attempted), with_skipped),
            (jobs, true),
            (wall.map(human_secs).unwrap_or_else(|| "–".into()), with_wall),
        ];
        let cells: Vec<String> = values.into_iter().filter(|(_, on)| *on).map(|(v, _)| b(v)).collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    let mut total = StageTally { planned: t.planned.then_some(0), ..StageTally::default() };
    for (stage, s) in STAGES.iter().zip(&t.stages) {
        if !t.planned && s.images() == 0 {
            continue;
        }
        total.planned = total.planned.map(|p| p + s.planned.unwrap_or(0));
        total.hit += s.hit;
        total.made += s.made;
        total.failed += s.failed;
        total.not_attempted += s.not_attempted;
        let mut jobs = match s.jobs_planned {
            Some(p) if p != s.jobs => format!("{} of {}", count(s.jobs), count(p)),
            _ => count(s.jobs),
        };
        if s.jobs_failed > 0 {
            let _ = write!(jobs, " ({} failed)", count(s.jobs_failed));
        }
        page.push(&row(stage.to_string(), s, jobs, s.wall, false));
    }
    let jobs = if t.jobs_failed > 0 { format!("{} ({} failed)", count(t.jobs), count(t.jobs_failed)) } else { count(t.jobs) };
    page.push(&row("**run**".into(), &total, jobs, t.wall, true));
    page.push("\n");
}

/// Each stage's repository, said once.
fn repositories(page: &mut Page, view: &ReportView<'_>) {
    let repo = |i: &crate::core::image_ref::ImageRef| format!("{}/{}", i.registry, i.repository);
    let mut repos: BTreeMap<Stage, String> = BTreeMap::new();
    if let Some(plan) = view.plan {
        repos.insert(Stage::Builder, repo(&plan.builder.image));
        repos.extend(plan.bases.first().map(|b| (Stage::Bases, repo(&b.image))));
        repos.extend(plan.agents.first().map(|a| (Stage::Agents, repo(&a.image))));
    }
    for r in view.reports.iter().flat_map(|r| r.images.iter()) {
        repos.entry(r.stage).or_insert_with(|| r.repository().to_owned());
    }
    if repos.is_empty() {
        return;
    }
    let list: Vec<String> = repos.iter().map(|(s, r)| format!("{s} `{r}`")).collect();
    let _ = writeln!(page.out, "Repositories: {}.\n", list.join(", "));
}

/// What the plan named and no report mentions, per stage, with why and which jobs did not run.
fn not_attempted(page: &mut Page, t: &Tally, d: &Detail) {
    let n = t.sum(|s| s.not_attempted);
    if n == 0 {
        return;
    }
    let _ = write!(page.out, "### Not attempted ({})\n\n", count(n));
    for (stage, s) in STAGES.iter().zip(&t.stages) {
        let planned = s.jobs_planned.unwrap_or(0);
        for (why, k) in &s.not_attempted_why {
            let images = format!("{} {}", count(*k), if *k == 1 { "image" } else { "images" });
            let why = if why != JOB_SILENT {
                why.clone()
            } else if s.silent_jobs.len() == planned {
                format!(
                    "none of the stage's {} {} wrote a report: the {stage} stage did not run (skipped by its `if:`, or cancelled)",
                    count(planned),
                    if planned == 1 { "job" } else { "jobs" }
                )
            } else {
                let jobs = some_of(s.silent_jobs.iter().map(ToString::to_string), d.names, s.silent_jobs.len());
                format!("their job wrote no report ({jobs} of {} did not run)", count(planned))
            };
            let _ = writeln!(page.out, "- **{stage}**: {images}: {why}.");
        }
    }
    page.push("\n");
}

/// The failures, one group per stage and cause: count, repository, jobs, a few names, the
/// reason as a text block, and every name folded away when the group is long.
fn failures(page: &mut Page, groups: &[FailureGroup<'_>], records: &[&ImageRecord], run_url: Option<&str>, d: &Detail) {
    if groups.is_empty() {
        return;
    }
    let n: usize = groups.iter().map(|g| g.records.len()).sum();
    let causes = if groups.len() == 1 { String::new() } else { format!(", {} causes", groups.len()) };
    let _ = write!(page.out, "### Failures ({}{causes})\n\n", count(n));
    let platforms: std::collections::BTreeSet<&str> = records.iter().map(|r| r.platform.as_str()).collect();
    let name = |r: &ImageRecord| if platforms.len() > 1 { format!("{} ({})", r.name(), r.platform) } else { r.name() };
    let rows = groups.iter().map(|g| {
        let size = g.records.len();
        let mut out = format!("**{}** · {} {}", g.stage, count(size), if size == 1 { "image" } else { "images" });
        if let Some(r) = g.records.first() {
            let _ = write!(out, " in `{}`", r.repository());
        }
        if !g.jobs.is_empty() {
            let jobs = some_of(g.jobs.iter().map(ToString::to_string), d.names, g.jobs.len());
            let _ = write!(out, " · {} {jobs}", if g.jobs.len() == 1 { "job" } else { "jobs" });
        }
        if let Some(url) = run_url {
            let _ = write!(out, " · [logs]({url})");
        }
        let _ = write!(out, "\n\n{}\n\n", some_names(g.records.iter().map(|r| name(r)), d.names, size));
        out.push_str(&reason_block(g.reason(), d));
        if size > d.names && d.listed > 0 {
            let _ = write!(
                out,
                "\n<details><summary>All {} images of this cause</summary>\n\n{}\n\n</details>\n",
                count(size),
                some_names(g.records.iter().map(|r| name(r)), d.listed, size)
            );
        }
        out.push('\n');
        out
    });
    page.rows(rows, groups.len(), "failure groups");
}

/// A Mermaid gantt of the jobs' wall-clock spans, one section per stage: failed jobs in red
/// (`crit`), the others grey (`done`); a stage of many jobs is one blue bar (`active`) over
/// their span, beside its failed jobs. Nothing with fewer than two bars.
fn gantt(reports: &[Report], index: &JobIndex) -> String {
    struct Bar {
        /// A whole stage's span, over its jobs.
        whole: bool,
        stage: Option<Stage>,
        label: String,
        span: (f64, f64),
        failed: bool,
    }
    let mut bars: Vec<Bar> = Vec::new();
    for (k, r) in reports.iter().enumerate() {
        let Some(span) = span(r) else { continue };
        let stage = stage_of(r);
        let label = match (job_of_report(r, index), stage) {
            (Some(job), _) => job.to_string(),
            (None, Some(s)) => format!("{s} job {}", k + 1),
            (None, None) => format!("{} {}", r.command, k + 1),
        };
        bars.push(Bar { whole: false, stage, label, span, failed: r.failures() > 0 });
    }
    const MOST_BARS: usize = 24;
    if bars.len() > MOST_BARS {
        let mut folded: Vec<Bar> = Vec::new();
        let mut by: BTreeMap<Option<Stage>, Vec<Bar>> = BTreeMap::new();
        for b in bars {
            by.entry(b.stage).or_default().push(b);
        }
        for (stage, bs) in by {
            if bs.len() <= 3 {
                folded.extend(bs);
                continue;
            }
            let jobs = bs.len();
            let start = bs.iter().map(|b| b.span.0).fold(f64::INFINITY, f64::min);
            let end = bs.iter().map(|b| b.span.1).fold(f64::NEG_INFINITY, f64::max);
            let failed: Vec<Bar> = bs.into_iter().filter(|b| b.failed).collect();
            let name = stage.map_or_else(|| "other".to_owned(), |s| s.to_string());
            let label =
                if failed.is_empty() { format!("{name}, {jobs} jobs") } else { format!("{name}, {jobs} jobs ({} failed)", failed.len()) };
            folded.push(Bar { whole: true, stage, label, span: (start, end), failed: false });
            folded.extend(failed.into_iter().take(10));
        }
        bars = folded;
    }
    if bars.len() < 2 {
        return String::new();
    }
    // Stages in pipeline order; a `run` report's bar (no one stage) last.
    bars.sort_by(|a, b| {
        (a.stage.is_none(), a.stage)
            .cmp(&(b.stage.is_none(), b.stage))
            .then_with(|| a.span.0.total_cmp(&b.span.0))
            .then_with(|| natural_cmp(&a.label, &b.label))
    });
    let mut out = String::from("```mermaid\ngantt\n    title Jobs by wall clock (failed red)\n    dateFormat X\n    axisFormat %H:%M\n");
    let mut section: Option<Option<Stage>> = None;
    for b in &bars {
        if section != Some(b.stage) {
            let _ = writeln!(out, "    section {}", b.stage.map_or_else(|| "run".to_owned(), |s| s.to_string()));
            section = Some(b.stage);
        }
        let label: String = b.label.chars().filter(|c| !matches!(c, ':' | '#' | ';')).collect();
        let (start, end) = (b.span.0.floor(), b.span.1.ceil().max(b.span.0.floor() + 1.0));
        let tag = if b.failed {
            "crit"
        } else if b.whole {
            "active"
        } else {
            "done"
        };
        let _ = writeln!(out, "    {label} :{tag}, {start:.0}, {end:.0}");
    }
    out.push_str("```\n");
    out
}

/// The ten slowest images that were not hits, folded away.
fn slowest(page: &mut Page, records: &[&ImageRecord]) {
    let mut slow: Vec<&&ImageRecord> = records.iter().filter(|i| i.status != Outcome::Hit).collect();
    if slow.is_empty() {
        return;
    }
    slow.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then_with(|| natural_cmp(&a.name(), &b.name())));
    let shown = slow.len().min(10);
    let _ = write!(page.out, "<details><summary>Slowest {shown}</summary>\n\n| image | stage | outcome | time |\n|---|---|---|---:|\n");
    for i in slow.iter().take(shown) {
        let _ = writeln!(page.out, "| `{}` | {} | {} | {} |", cell(&i.name()), i.stage, i.status.as_str(), human_secs(i.seconds));
    }
    page.push("\n</details>\n\n");
}

/// Registry traffic and job time, and the run's page.
fn footer(page: &mut Page, view: &ReportView<'_>, t: &Tally) {
    let images = view.reports.iter().flat_map(|r| r.images.iter());
    let (requests, retries, pushed) = images.fold((0u64, 0u64, 0u64), |(q, r, p), i| (q + i.requests, r + i.retries, p + i.bytes_pushed));
    let _ = write!(
        page.out,
        "{} job {} · {} of job time (summed over parallel jobs) · {} registry requests ({} retried) · {} pushed",
        count(t.jobs),
        if t.jobs == 1 { "report" } else { "reports" },
        human_secs(t.job_seconds),
        crate::core::figures::thousands(requests),
        crate::core::figures::thousands(retries),
        human_bytes(pushed)
    );
    if let Some(url) = view.run_url {
        let _ = write!(page.out, " · [the run]({url})");
    }
    page.push(".\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pie_has_fixed_colours_and_never_one_slice() {
        let p = pie("t", &[("hit", 0, GREEN), ("warm", 2, AMBER), ("cold", 3, GREY)]);
        assert!(!p.contains("\"hit\""));
        assert!(p.contains("\"cold\" : 3"));
        assert!(p.contains(&format!("\"pie1\": \"{AMBER}\", \"pie2\": \"{GREY}\"")), "{p}");
        assert_eq!(pie("t", &[("hit", 0, GREEN), ("cold", 3, GREY)]), "");
    }

    #[test]
    fn rows_stop_at_the_budget_and_say_how_many_were_cut() {
        let mut out = String::from("head\n");
        let rows = (0..10_000).map(|i| format!("| row {i} |\n"));
        let cut = push_rows_within(&mut out, rows, 10_000, 4096);
        assert!(out.len() <= 4096);
        assert!(cut > 0);
        assert!(cut_note(cut, "see x").contains(&count(cut)));
        assert_eq!(cut_note(0, "x"), "");
    }

    #[test]
    fn a_page_says_what_it_left_out_and_nothing_when_it_left_out_nothing() {
        let mut page = Page::new(4096);
        page.rows((0..10).map(|i| format!("{i}\n")), 10, "names");
        assert_eq!(page.finish(None, "x"), "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
        let mut page = Page::new(4096);
        page.rows((0..10_000).map(|i| format!("{i}\n")), 10_000, "names");
        let text = page.finish(Some(&DETAIL[2]), "the JSON has all");
        assert!(text.len() <= 4096);
        assert!(text.contains("left out: 9,") && text.contains("of 10,000 names") && text.contains("at most 3 names"), "{text}");
    }

    #[test]
    fn reason_blocks_keep_their_lines_and_outfence_backticks() {
        let block = reason_block("a ``` b\nsecond", &DETAIL[0]);
        assert!(block.starts_with("````text\na ``` b\nsecond\n````"), "{block}");
        let long = (0..50).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        assert!(reason_block(&long, &DETAIL[2]).contains("… (46 more lines in the JSON report)"));
    }

    #[test]
    fn a_section_is_its_lines_under_a_heading_or_folded_and_nothing_when_empty() {
        let mut page = Page::new(4096);
        section(&mut page, "Why", &[], false);
        assert_eq!(page.out, "");
        section(&mut page, "Why they are made", &["- `dockerfile`: 500".to_owned()], false);
        section(&mut page, "All", &["a".to_owned()], true);
        assert_eq!(
            page.finish(None, ""),
            "### Why they are made\n\n- `dockerfile`: 500\n\n<details><summary>All</summary>\n\na\n\n</details>\n\n"
        );
    }

    #[test]
    fn names_say_how_many_more() {
        assert_eq!(some_names(["a", "b", "c"].iter(), 2, 3), "`a`, `b` and 1 more");
        assert_eq!(some_names(["a"].iter(), 2, 1), "`a`");
        assert_eq!(some_names(["a", "b"].iter(), 2, 2), "`a`, `b`");
    }
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

    fn view<'a>(reports: &'a [Report]) -> ReportView<'a> {
        ReportView { title: "split-build report", reports, plan: None, run_url: None, scope: Scope::Merged }
    }

    #[test]
    fn merged_summary_snapshot() {
        let a = Report {
            command: "assemble".into(),
            seconds: 3.5,
            started_at: Some("2026-12-01T09:00:00Z".into()),
            ended_at: Some("2026-12-01T09:00:04Z".into()),
            images: (0..6).map(|i| rec(i, if i == 4 { Outcome::Failed } else { Outcome::Assembled })).collect(),
            ..Report::default()
        };
        let b = Report {
            command: "build".into(),
            seconds: 70.0,
            started_at: Some("2026-12-01T08:58:50Z".into()),
            ended_at: Some("2026-12-01T09:00:00Z".into()),
            images: vec![rec(9, Outcome::Built), rec(12, Outcome::Hit)],
            ..Report::default()
        };
        insta::assert_snapshot!("merged_report_summary", report_summary(&view(&[a, b]), SUMMARY_BUDGET));
    }

    #[test]
    fn ten_thousand_failures_of_one_cause_are_one_group() {
        let r = Report {
            command: "run".into(),
            seconds: 1.0,
            images: (0..10_000).map(|i| rec(i, Outcome::Failed)).collect(),
            ..Report::default()
        };
        let s = report_summary(&view(std::slice::from_ref(&r)), SUMMARY_BUDGET);
        assert!(s.len() <= SUMMARY_BUDGET, "{}", s.len());
        assert!(s.starts_with("## split-build report\n\n❌ **10,000 of 10,000 images missing**: 10,000 failed"), "{s}");
        assert_eq!(s.matches("```text").count(), 2, "one group per stage");
        assert!(!s.contains("To stay under"), "nothing had to be left out");
    }

    #[test]
    fn the_budget_trims_detail_before_rows_and_says_so() {
        let images: Vec<ImageRecord> = (0..20_000)
            .map(|i| ImageRecord { error: Some(format!("cause number {i}\n{}", "log line\n".repeat(30))), ..rec(i, Outcome::Failed) })
            .collect();
        let r = Report { command: "run".into(), images, ..Report::default() };
        let s = report_summary(&view(std::slice::from_ref(&r)), SUMMARY_BUDGET);
        assert!(s.len() <= SUMMARY_BUDGET, "{}", s.len());
        let closing = s.lines().last().unwrap_or_default();
        assert!(closing.contains("reasons at most 4 lines") && closing.contains("of 20,000 failure groups"), "{closing}");
        assert!(s.contains("… (27 more lines in the JSON report)"), "reasons were cut to the last level first");
    }

    #[test]
    fn a_job_summary_is_its_verdict_and_failures() {
        let r = Report {
            command: "assemble".into(),
            images: (0..6).map(|i| rec(i, if i == 4 { Outcome::Failed } else { Outcome::Assembled })).collect(),
            ..Report::default()
        };
        let s = report_summary(
            &ReportView { scope: Scope::Job, title: "split-build assemble", ..view(std::slice::from_ref(&r)) },
            SUMMARY_BUDGET,
        );
        assert!(s.contains("❌ **1 of 6 images missing**: 1 failed · 5 made"), "{s}");
        assert!(s.contains("### Failures (1)") && !s.contains("Slowest") && !s.contains("| stage |"), "{s}");
        insta::assert_snapshot!("job_summary", s);
    }

    #[test]
    fn one_image_is_one_image() {
        let r = Report { command: "build".into(), images: vec![rec(3, Outcome::Hit)], ..Report::default() };
        let s =
            report_summary(&ReportView { scope: Scope::Job, title: "split-build build", ..view(std::slice::from_ref(&r)) }, SUMMARY_BUDGET);
        assert!(s.contains("✅ **1 image**: 1 hit"), "{s}");
    }

    #[test]
    fn empty_reports_say_so() {
        assert!(report_summary(&view(&[]), SUMMARY_BUDGET).contains("No images"));
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
        let _ = writeln!(out, "| `{host}/{repo}` | {action} | {} | {} |", count(*n), human_bytes(*bytes));
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
            count(gone.len())
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
