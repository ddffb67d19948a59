//! Why an image must be made: the hash inputs that differ between the plan's image and its
//! previous build (from their input records), named as the README's hash table names them,
//! and the summary's grouping of those reasons.
//!
//! A reason is a short phrase: `dockerfile`, `target`, `build-arg PY` (or `… added`,
//! `… removed`), `context setup.sh` (likewise; `context sdk/` for a folder of a compact
//! record), `platform linux/arm64 added`, `from a → b`, `upstream moved sha256:ab12… →
//! sha256:cd34…`, `scheme a → b`, `new` (no previous build) or `unknown (reason)`.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::figures::count;
use crate::core::image_ref::Digest;
use crate::core::inputs_record::{InputsRecord, Previous, compact};
use crate::core::plan::Plan;

/// The reason of an image with no previous build.
pub(crate) const NEW: &str = "new";

/// How many instance names a summary line shows.
pub(crate) const EXAMPLES: usize = 3;

/// `sha256:` and the first 12 hex digits, then `…`.
pub(crate) fn short(d: &Digest) -> String {
    let s = d.as_str();
    match s.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}…", &hex[..12]),
        _ => s.to_owned(),
    }
}

/// Why the image with inputs `current` must be made, given what its previous build says
/// (`None`: there is none).
pub(crate) fn why(current: &InputsRecord, previous: Option<&Previous>) -> Vec<String> {
    match previous {
        None => vec![NEW.to_owned()],
        Some(Previous::NoRecord(reason)) => vec![format!("unknown (its previous build: {reason})")],
        Some(Previous::Upstream { digest, .. }) => {
            let mut out = Vec::new();
            if let Some(now) = &current.from_digest
                && now != digest
            {
                out.push(format!("upstream moved {} → {}", short(digest), short(now)));
            }
            out.push("unknown (its previous build records only its upstream, not its other inputs)".to_owned());
            out
        }
        Some(Previous::Record(prev)) => {
            let d = differences(prev, current);
            if d.is_empty() { vec!["unknown (its previous build has the same inputs: was the tag deleted?)".to_owned()] } else { d }
        }
    }
}

/// Why the builder, missing, must be made: its inputs now (or why they could not be read)
/// against its previous build as read (`None`: not asked; then nothing is said).
pub(crate) fn builder_why(current: Result<&InputsRecord, &str>, previous: Option<&Option<Previous>>) -> Vec<String> {
    match (previous, current) {
        (None, _) => Vec::new(),
        (Some(None), _) => vec![NEW.to_owned()],
        (Some(Some(_)), Err(e)) => vec![format!("unknown (its inputs could not be read here: {e})")],
        (Some(Some(p)), Ok(cur)) => why(cur, Some(p)),
    }
}

/// How a builder version reads in a reason: the set version, or that the inputs' hash is it.
fn version_name(v: Option<&String>) -> &str {
    v.map_or("(the inputs' hash)", String::as_str)
}

/// Every input that differs from `prev` to `cur`, in the hash table's order (a builder's set
/// version first: it alone names the builder's tag).
pub(crate) fn differences(prev: &InputsRecord, cur: &InputsRecord) -> Vec<String> {
    let mut out = Vec::new();
    if prev.version != cur.version {
        out.push(format!("version {} → {}", version_name(prev.version.as_ref()), version_name(cur.version.as_ref())));
    }
    if prev.scheme != cur.scheme {
        out.push(format!("scheme {} → {}", prev.scheme, cur.scheme));
    }
    if prev.dockerfile != cur.dockerfile {
        out.push("dockerfile".to_owned());
    }
    if prev.target != cur.target {
        out.push("target".to_owned());
    }
    let (mut pc, mut cc) = if prev.is_compact() || cur.is_compact() {
        (compact(&prev.context), compact(&cur.context))
    } else {
        (prev.context.clone(), cur.context.clone())
    };
    // A Dockerfile inside its context is a context input too: the input that was the old
    // Dockerfile and is the new one is that file, already named `dockerfile`.
    if prev.dockerfile != cur.dockerfile {
        let is_the_dockerfile = |k: &String| pc.get(k) == Some(&prev.dockerfile) && cc.get(k) == Some(&cur.dockerfile);
        let same: Vec<String> = pc.keys().filter(|k| is_the_dockerfile(k)).cloned().collect();
        for k in same {
            pc.remove(&k);
            cc.remove(&k);
        }
    }
    map_changes(&mut out, "context", &pc, &cc);
    map_changes(&mut out, "build-arg", &prev.build_args, &cur.build_args);
    let (pp, cp): (BTreeSet<&String>, BTreeSet<&String>) = (prev.platforms.iter().collect(), cur.platforms.iter().collect());
    out.extend(cp.difference(&pp).map(|p| format!("platform {p} added")));
    out.extend(pp.difference(&cp).map(|p| format!("platform {p} removed")));
    if prev.from != cur.from {
        let name = |f: &Option<String>| f.clone().unwrap_or_else(|| "none".into());
        out.push(format!("from {} → {}", name(&prev.from), name(&cur.from)));
    } else {
        match (&prev.from_digest, &cur.from_digest) {
            (Some(a), Some(b)) if a != b => out.push(format!("upstream moved {} → {}", short(a), short(b))),
            (Some(a), None) => out.push(format!("upstream digest not resolved (was {})", short(a))),
            (None, Some(b)) => out.push(format!("upstream digest resolved {} (not resolved before)", short(b))),
            _ => {}
        }
    }
    out
}

fn map_changes(out: &mut Vec<String>, name: &str, prev: &BTreeMap<String, String>, cur: &BTreeMap<String, String>) {
    let keys: BTreeSet<&String> = prev.keys().chain(cur.keys()).collect();
    for k in keys {
        match (prev.get(k), cur.get(k)) {
            (Some(a), Some(b)) if a != b => out.push(format!("{name} {k}")),
            (None, Some(_)) => out.push(format!("{name} {k} added")),
            (Some(_), None) => out.push(format!("{name} {k} removed")),
            _ => {}
        }
    }
}

/// The kind of a reason, what the summary groups by: the reason without its details
/// (digests, references, the text in parentheses).
pub(crate) fn kind(reason: &str) -> &str {
    let cut = [" (", " sha256:"].iter().filter_map(|m| reason.find(m)).min().unwrap_or(reason.len());
    let head = &reason[..cut];
    if head.contains(" → ") { head.split(' ').next().unwrap_or(head) } else { head }
}

/// One line of the summary's grouping: how many images share these kinds of reason, and a
/// few of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    /// The kinds, in the order the first image gave them.
    pub kinds: Vec<String>,
    /// How many images.
    pub count: usize,
    /// The first few names, in plan order.
    pub examples: Vec<String>,
}

/// Groups `(name, why)` pairs by their kinds of reason, largest group first (ties in order
/// of first appearance). Pairs with no reason are left out.
pub(crate) fn group<'a>(items: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut at: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for (name, why) in items {
        if why.is_empty() {
            continue;
        }
        let kinds: Vec<String> = why.iter().map(|r| kind(r).to_owned()).collect();
        let i = *at.entry(kinds.clone()).or_insert_with(|| {
            groups.push(Group { kinds, count: 0, examples: Vec::new() });
            groups.len() - 1
        });
        let g = &mut groups[i];
        g.count += 1;
        if g.examples.len() < EXAMPLES {
            g.examples.push(name.to_owned());
        }
    }
    // A stable sort keeps first appearance among equal counts.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups
}

/// The summary's "why" lines (markdown list items), before the long tables: one per group
/// of bases (by instance, once however many platforms), and the builder's reasons. Empty
/// when nothing to make says why.
pub(crate) fn why_lines<'a>(builder: &[String], bases: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let groups = group(bases.into_iter().filter(|(i, _)| seen.insert(*i)));
    let mut out = Vec::new();
    if !builder.is_empty() {
        out.push(format!("- the builder to build: {}", builder.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")));
    }
    for g in groups {
        let noun = if g.count == 1 { "base" } else { "bases" };
        let kinds = g.kinds.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        let more = g.count - g.examples.len();
        let more = if more > 0 { format!(" and {} more", count(more)) } else { String::new() };
        out.push(format!("- {} {noun} to build: {kinds} ({}){more}", count(g.count), g.examples.join(", ")));
    }
    out
}

/// One input of an image beside its previous build's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// The input's name, as the hash table names it (`dockerfile`, `build-arg PY`, ...).
    pub name: String,
    /// Its value for the plan's image (`-`: none).
    pub plan: String,
    /// Its value for the previous build (`-`: none, `?`: not recorded).
    pub previous: String,
    /// Whether the two differ.
    pub differs: bool,
}

/// Every input of `current` beside `previous`'s (none: no previous build, or one that
/// records nothing), in the hash table's order. Digests are shortened.
pub(crate) fn side_by_side(current: &InputsRecord, previous: Option<&InputsRecord>) -> Vec<Row> {
    let none = "-".to_owned();
    let unknown = "?".to_owned();
    let mut rows = Vec::new();
    let mut push = |name: String, plan: Option<String>, prev: Option<Option<String>>| {
        let plan = plan.unwrap_or_else(|| none.clone());
        let (previous, differs) = match prev {
            None => (unknown.clone(), true),
            Some(p) => {
                let p = p.unwrap_or_else(|| none.clone());
                let differs = p != plan;
                (p, differs)
            }
        };
        rows.push(Row { name, plan, previous, differs });
    };
    let hex = |h: &str| format!("sha256:{}…", &h[..h.len().min(12)]);
    if current.version.is_some() || previous.is_some_and(|p| p.version.is_some()) {
        let name = |v: Option<&String>| Some(version_name(v).to_owned());
        push("version".into(), name(current.version.as_ref()), previous.map(|p| name(p.version.as_ref())));
    }
    push("scheme".into(), Some(current.scheme.clone()), previous.map(|p| Some(p.scheme.clone())));
    push("dockerfile".into(), Some(hex(&current.dockerfile)), previous.map(|p| Some(hex(&p.dockerfile))));
    push("target".into(), current.target.clone(), previous.map(|p| p.target.clone()));
    let (cc, pc) = match previous {
        Some(p) if p.is_compact() || current.is_compact() => (compact(&current.context), Some(compact(&p.context))),
        Some(p) => (current.context.clone(), Some(p.context.clone())),
        None => (current.context.clone(), None),
    };
    let keys: BTreeSet<&String> = cc.keys().chain(pc.iter().flat_map(|m| m.keys())).collect();
    for k in keys {
        push(format!("context {k}"), cc.get(k).map(|h| hex(h)), pc.as_ref().map(|m| m.get(k).map(|h| hex(h))));
    }
    let keys: BTreeSet<&String> = current.build_args.keys().chain(previous.iter().flat_map(|p| p.build_args.keys())).collect();
    for k in keys {
        push(format!("build-arg {k}"), current.build_args.get(k).cloned(), previous.map(|p| p.build_args.get(k).cloned()));
    }
    push("platforms".into(), Some(current.platforms.join(", ")), previous.map(|p| Some(p.platforms.join(", "))));
    if current.from.is_some() || previous.is_some_and(|p| p.from.is_some()) {
        push("from".into(), current.from.clone(), previous.map(|p| p.from.clone()));
        push("from digest".into(), current.from_digest.as_ref().map(short), previous.map(|p| p.from_digest.as_ref().map(short)));
    }
    rows
}

/// The side-by-side table as aligned text, `*` marking what differs.
pub(crate) fn render_rows(rows: &[Row]) -> String {
    let w = |f: &dyn Fn(&Row) -> usize, head: usize| rows.iter().map(f).max().unwrap_or(0).max(head);
    let (wn, wp) = (w(&|r| r.name.chars().count(), 5), w(&|r| r.plan.chars().count(), 4));
    let pad = |s: &str, n: usize| format!("{s}{}", " ".repeat(n.saturating_sub(s.chars().count())));
    let mut out = format!("  {}  {}  previous build\n", pad("input", wn), pad("plan", wp));
    for r in rows {
        let mark = if r.differs { '*' } else { ' ' };
        out.push_str(format!("{mark} {}  {}  {}", pad(&r.name, wn), pad(&r.plan, wp), r.previous).trim_end());
        out.push('\n');
    }
    out
}

/// What `explain` says of one image: a head (what it is, its status, where its previous
/// build is and what that records, why it is made) and the side-by-side table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Explained<'a> {
    /// What it is: `base repo__proj-1 (linux/amd64)`, `builder`.
    pub what: &'a str,
    /// The plan's image.
    pub image: &'a str,
    /// Its status in the plan.
    pub status: &'a str,
    /// The plan's `why` (may be empty).
    pub why: &'a [String],
    /// Where its previous build is looked for (none: nowhere).
    pub previous_at: Option<&'a str>,
    /// Its inputs now.
    pub current: &'a InputsRecord,
    /// What the previous build says (`None`: there is none).
    pub previous: Option<&'a Previous>,
}

/// `explain`'s text for one image.
pub(crate) fn explain(e: &Explained<'_>) -> String {
    let (record, about) = match (e.previous_at, e.previous) {
        (None, _) => (None, "none to compare with".to_owned()),
        (Some(at), None) => (None, format!("`{at}`: none (no such image)")),
        (Some(at), Some(Previous::Record(r))) => (Some(r.as_ref()), format!("`{at}`")),
        (Some(at), Some(Previous::Upstream { name, digest })) => {
            (None, format!("`{at}`: no input record, only its upstream `{name}` at {}", short(digest)))
        }
        (Some(at), Some(Previous::NoRecord(why))) => (None, format!("`{at}`: no input record ({why})")),
    };
    let why = if e.status == "hit" {
        "nothing: the image exists (hit)".to_owned()
    } else if !e.why.is_empty() {
        e.why.join(", ")
    } else {
        why(e.current, e.previous).join(", ")
    };
    let mut out =
        format!("{}: {}\n  image:          {}\n  previous build: {about}\n  made because:   {why}\n\n", e.what, e.status, e.image);
    out.push_str(&render_rows(&side_by_side(e.current, record)));
    out.push_str("\n(* marks an input that differs from the previous build; ? one it does not record)\n");
    out
}

/// The plan's "why" lines for the step summary (empty when nothing to make says why): the
/// builder's reasons, then the missing bases grouped by their kinds of reason.
pub(crate) fn plan_why_lines(plan: &Plan) -> Vec<String> {
    let builder: &[String] = if plan.builder.status.is_missing() { &plan.builder.why } else { &[] };
    let bases = plan.bases.iter().filter(|b| b.status.is_missing()).map(|b| (b.instance.as_str(), b.why.as_slice()));
    why_lines(builder, bases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::content_hash::{InputFile, Recipe, sha256_hex};
    use crate::core::platform::Platform;

    fn record(dockerfile: &str, files: &[(&str, &str)], args: &[(&str, &str)], platforms: &[&str], digest: &str) -> InputsRecord {
        let recipe = Recipe {
            dockerfile_sha256: sha256_hex(dockerfile.as_bytes()),
            target: None,
            inputs: files.iter().map(|(p, c)| InputFile { path: (*p).into(), sha256: sha256_hex(c.as_bytes()) }).collect(),
        };
        let args = args.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let platforms: Vec<Platform> = platforms.iter().map(|p| p.parse().unwrap()).collect();
        InputsRecord::of_base(&recipe, &args, &platforms, "up:1", Some(&Digest::sha256_of(digest.as_bytes())))
    }

    fn base() -> InputsRecord {
        record("FROM x", &[("setup.sh", "a")], &[("PY", "3.11")], &["linux/amd64"], "1")
    }

    #[test]
    fn each_input_is_named_as_the_hash_table_names_it() {
        let prev = base();
        let cases: Vec<(InputsRecord, Vec<&str>)> = vec![
            (record("FROM y", &[("setup.sh", "a")], &[("PY", "3.11")], &["linux/amd64"], "1"), vec!["dockerfile"]),
            (record("FROM x", &[("setup.sh", "b")], &[("PY", "3.11")], &["linux/amd64"], "1"), vec!["context setup.sh"]),
            (
                record("FROM x", &[("setup.sh", "a"), ("x", "")], &[("PY", "3.12"), ("N", "1")], &["linux/amd64"], "1"),
                vec!["context x added", "build-arg N added", "build-arg PY"],
            ),
            (
                record("FROM x", &[("setup.sh", "a")], &[("PY", "3.11")], &["linux/amd64", "linux/arm64"], "1"),
                vec!["platform linux/arm64 added"],
            ),
        ];
        for (cur, want) in cases {
            assert_eq!(why(&cur, Some(&Previous::Record(Box::new(prev.clone())))), want);
        }
        // A Dockerfile inside its context is named once, as `dockerfile`; another file
        // changed with it still is.
        let inside = |df: &str, other: &str| record(df, &[("Dockerfile", df), ("setup.sh", other)], &[], &["linux/amd64"], "1");
        assert_eq!(differences(&inside("FROM x", "a"), &inside("FROM y", "a")), ["dockerfile"]);
        assert_eq!(differences(&inside("FROM x", "a"), &inside("FROM y", "b")), ["dockerfile", "context setup.sh"]);
        let moved = record("FROM x", &[("setup.sh", "a")], &[("PY", "3.11")], &["linux/amd64"], "2");
        let w = why(&moved, Some(&Previous::Record(Box::new(prev.clone()))));
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("upstream moved sha256:") && w[0].contains(" → sha256:"), "{w:?}");
        assert_eq!(kind(&w[0]), "upstream moved");
        assert_eq!(why(&prev, None), ["new"]);
        let unknown = why(&prev, Some(&Previous::NoRecord("no label".into())));
        assert_eq!(unknown, ["unknown (its previous build: no label)"]);
        assert_eq!(kind(&unknown[0]), "unknown");
        assert_eq!(kind("from a:1 → b:1"), "from");
    }

    #[test]
    fn side_by_side_marks_what_differs() {
        let prev = base();
        let cur = record("FROM y", &[("setup.sh", "a")], &[("PY", "3.12")], &["linux/amd64"], "1");
        let rows = side_by_side(&cur, Some(&prev));
        let marked: Vec<&str> = rows.iter().filter(|r| r.differs).map(|r| r.name.as_str()).collect();
        assert_eq!(marked, ["dockerfile", "build-arg PY"]);
        insta::assert_snapshot!(render_rows(&rows));
        let alone = side_by_side(&cur, None);
        assert!(alone.iter().all(|r| r.previous == "?"), "{alone:?}");
    }

    #[test]
    fn a_compact_record_is_compared_per_folder() {
        let mut prev = base();
        prev.context = BTreeMap::from([("sdk/a.py".into(), "1".into()), ("sdk/b.py".into(), "2".into())]);
        let mut cur = prev.clone();
        cur.context = compact(&BTreeMap::from([("sdk/a.py".into(), "1".into()), ("sdk/b.py".into(), "3".into())]));
        assert_eq!(differences(&prev, &cur), ["context sdk/"]);
    }

    fn builder(dockerfile: &str, version: Option<&str>) -> InputsRecord {
        let recipe = Recipe {
            dockerfile_sha256: sha256_hex(dockerfile.as_bytes()),
            target: Some("payload".into()),
            inputs: vec![InputFile { path: "agent.py".into(), sha256: sha256_hex(b"print()") }],
        };
        InputsRecord::of_builder(&recipe, &BTreeMap::new(), &["linux/amd64".parse().unwrap()], version)
    }

    #[test]
    fn the_builder_says_why_against_its_floating_latest() {
        let v1 = builder("FROM a", None);
        let prev = Some(Previous::Record(Box::new(v1.clone())));
        assert!(builder_why(Ok(&v1), None).is_empty(), "not asked: nothing said");
        assert_eq!(builder_why(Ok(&v1), Some(&None)), ["new"]);
        assert_eq!(builder_why(Ok(&builder("FROM b", None)), Some(&prev)), ["dockerfile"]);
        // A set version names the tag: it comes first, with what else differs.
        assert_eq!(builder_why(Ok(&builder("FROM b", Some("v2"))), Some(&prev)), ["version (the inputs' hash) → v2", "dockerfile"]);
        let set = Some(Previous::Record(Box::new(builder("FROM a", Some("v1")))));
        assert_eq!(builder_why(Ok(&builder("FROM a", Some("v2"))), Some(&set)), ["version v1 → v2"]);
        assert_eq!(kind("version v1 → v2"), "version");
        let unreadable = builder_why(Err("no such file `agent/Dockerfile`"), Some(&prev));
        assert!(unreadable[0].starts_with("unknown (its inputs could not be read here: no such"), "{unreadable:?}");
        let old = builder_why(Ok(&v1), Some(&Some(Previous::NoRecord("no label".into()))));
        assert!(old[0].starts_with("unknown ("), "{old:?}");
        // The side by side shows the version only where one was set.
        let rows = side_by_side(&builder("FROM a", Some("v2")), Some(&v1));
        assert_eq!(rows[0], Row { name: "version".into(), plan: "v2".into(), previous: "(the inputs' hash)".into(), differs: true });
        assert!(side_by_side(&v1, Some(&v1)).iter().all(|r| r.name != "version" && !r.differs));
    }

    #[test]
    fn reasons_group_by_kind_largest_first() {
        let df = vec!["dockerfile".to_owned()];
        let up = |n: &str| vec![format!("upstream moved sha256:{n}… → sha256:ff…")];
        let (u1, u2) = (up("aa"), up("bb"));
        let new = vec![NEW.to_owned()];
        let items: Vec<(&str, &[String])> = vec![("n1", &new), ("a", &df), ("u1", &u1), ("b", &df), ("u2", &u2), ("c", &df), ("d", &df)];
        let groups = group(items.iter().map(|(n, w)| (*n, *w)));
        let got: Vec<(Vec<String>, usize, Vec<String>)> = groups.into_iter().map(|g| (g.kinds, g.count, g.examples)).collect();
        assert_eq!(
            got,
            vec![
                (vec!["dockerfile".to_owned()], 4, vec!["a".to_owned(), "b".into(), "c".into()]),
                (vec!["upstream moved".to_owned()], 2, vec!["u1".to_owned(), "u2".into()]),
                (vec!["new".to_owned()], 1, vec!["n1".to_owned()]),
            ]
        );
    }

    #[test]
    fn the_summary_lines() {
        let df = vec!["dockerfile".to_owned()];
        let names: Vec<String> = (0..500).map(|i| format!("repo__proj-{i}")).collect();
        let mut items: Vec<(&str, &[String])> = names.iter().map(|n| (n.as_str(), df.as_slice())).collect();
        let up = vec!["upstream moved sha256:aaaaaaaaaaaa… → sha256:bbbbbbbbbbbb…".to_owned()];
        items.push(("moved__one-1", &up));
        let builder = vec!["context sdk/".to_owned()];
        insta::assert_snapshot!(why_lines(&builder, items).join("\n"));
        assert!(why_lines(&[], std::iter::empty()).is_empty());
    }
}
