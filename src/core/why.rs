//! Why an image must be made: the hash inputs that differ between the plan's image and its
//! previous build (from their input records), named as the README's hash table names them,
//! and the summary's grouping of those reasons.
//!
//! A reason is a short phrase: `dockerfile`, `target`, `build-arg PY` (or `… added`,
//! `… removed`), `context setup.sh` (likewise; `context sdk/` for a folder of a compact
//! record), `platform linux/arm64 added`, `from a → b`, `upstream moved sha256:ab12… →
//! sha256:cd34…`, `scheme a → b`, `new` (no previous build) or `unknown (reason)`.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::image_ref::Digest;
use crate::core::inputs_record::{InputsRecord, Previous, compact};

/// The reason of an image with no previous build.
pub const NEW: &str = "new";

/// How many instance names a summary line shows.
pub const EXAMPLES: usize = 3;

/// `sha256:` and the first 12 hex digits, then `…`.
pub fn short(d: &Digest) -> String {
    let s = d.as_str();
    match s.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}…", &hex[..12]),
        _ => s.to_owned(),
    }
}

/// Why the image with inputs `current` must be made, given what its previous build says
/// (`None`: there is none).
pub fn why(current: &InputsRecord, previous: Option<&Previous>) -> Vec<String> {
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

/// Every input that differs from `prev` to `cur`, in the hash table's order.
pub fn differences(prev: &InputsRecord, cur: &InputsRecord) -> Vec<String> {
    let mut out = Vec::new();
    if prev.scheme != cur.scheme {
        out.push(format!("scheme {} → {}", prev.scheme, cur.scheme));
    }
    if prev.dockerfile != cur.dockerfile {
        out.push("dockerfile".to_owned());
    }
    if prev.target != cur.target {
        out.push("target".to_owned());
    }
    let (pc, cc) = if prev.is_compact() || cur.is_compact() {
        (compact(&prev.context), compact(&cur.context))
    } else {
        (prev.context.clone(), cur.context.clone())
    };
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
pub fn kind(reason: &str) -> &str {
    let cut = [" (", " sha256:"].iter().filter_map(|m| reason.find(m)).min().unwrap_or(reason.len());
    let head = &reason[..cut];
    if head.contains(" → ") { head.split(' ').next().unwrap_or(head) } else { head }
}

/// One line of the summary's grouping: how many images share these kinds of reason, and a
/// few of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The kinds, in the order the first image gave them.
    pub kinds: Vec<String>,
    /// How many images.
    pub count: usize,
    /// The first few names, in plan order.
    pub examples: Vec<String>,
}

/// Groups `(name, why)` pairs by their kinds of reason, largest group first (ties in order
/// of first appearance). Pairs with no reason are left out.
pub fn group<'a>(items: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Vec<Group> {
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

/// The summary's "why" lines (markdown), before the long tables: one per group of bases
/// (by instance, once however many platforms), and the builder's reasons. Empty when
/// nothing to make says why.
pub fn why_lines<'a>(builder: &[String], bases: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let groups = group(bases.into_iter().filter(|(i, _)| seen.insert(*i)));
    if groups.is_empty() && builder.is_empty() {
        return Vec::new();
    }
    let mut out = vec!["### Why images are made".to_owned(), String::new()];
    if !builder.is_empty() {
        out.push(format!("- the builder: {}", builder.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")));
    }
    for g in groups {
        let noun = if g.count == 1 { "base" } else { "bases" };
        let kinds = g.kinds.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        let more = g.count - g.examples.len();
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        out.push(format!("- {} {noun} to build: {kinds} ({}){more}", g.count, g.examples.join(", ")));
    }
    out.push(String::new());
    out
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
    fn a_compact_record_is_compared_per_folder() {
        let mut prev = base();
        prev.context = BTreeMap::from([("sdk/a.py".into(), "1".into()), ("sdk/b.py".into(), "2".into())]);
        let mut cur = prev.clone();
        cur.context = compact(&BTreeMap::from([("sdk/a.py".into(), "1".into()), ("sdk/b.py".into(), "3".into())]));
        assert_eq!(differences(&prev, &cur), ["context sdk/"]);
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
