//! Retention: which images a registry may lose. Unlike age-based cleanup, the rules know
//! what the current plan and the newest builder versions still use. Pure: the clock comes
//! in as `now`.
//!
//! Rules, in order (the first that keeps an image wins; an image nothing keeps goes):
//! 1. every image the current plan names (builder, bases, agents), with several platforms
//!    the builder's and bases' legs too;
//! 2. builder and agent images of the newest `keep_versions` builder versions (an agent
//!    belongs to version V when its tag is `agents.tag` rendered with `{builder}` = V for an
//!    instance and variant of the spec);
//! 3. every `{instance}-latest` base (the warm cache), and with several platforms its legs;
//! 4. tags matching a `keep` pattern of the spec, and the build cache's floating tags
//!    (`core::build_cache`: the builder's `latest`, a stage's `cache-{stage}` or
//!    `{instance}-cache-{stage}`, their legs): the manifest a cache tag names is the newest of
//!    that stage and platform; a moved tag's older manifest is left untagged (GHCR) or
//!    unlisted (a registry), and goes as unused;
//! 5. anything younger than the grace period;
//! 6. a manifest that a kept index refers to (multi-platform children);
//!
//! Registries delete by digest, which removes every tag on it: a digest is kept when any
//! of its tags is.

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobSetBuilder};
use serde::Serialize;

use crate::core::build_cache::CacheTags;
use crate::core::image_ref::Digest;
use crate::core::legs::{has_legs, is_leg_of, leg};
use crate::core::plan::Plan;
use crate::core::spec::Spec;

/// One stored manifest: a digest with its tags (a GHCR package version, or the tags of a
/// registry repository that point at one digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stored {
    /// Repository path below the registry host.
    pub repository: String,
    /// The manifest digest.
    pub digest: Digest,
    /// Its tags (none for an untagged multi-platform child).
    pub tags: Vec<String>,
    /// Creation time, seconds since the Unix epoch, when known.
    pub created: Option<i64>,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// For an index: the digests of its manifests.
    pub children: Vec<Digest>,
    /// The GHCR package version id, when listed from GitHub.
    pub version_id: Option<u64>,
}

/// Why an image stays or goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "rule", content = "detail")]
pub enum Reason {
    /// The current plan names it.
    InPlan,
    /// A builder or agent image of a kept builder version.
    RecentVersion(String),
    /// An `{instance}-latest` base.
    Latest,
    /// Matches a `keep` pattern.
    KeepPattern(String),
    /// The newest cache image under this tag (a stage's, or the warm builder).
    Cache(String),
    /// Younger than the grace period.
    Young,
    /// A kept index refers to it.
    ChildOfKept,
    /// Nothing keeps it.
    Unused,
}

/// The verdict on one stored manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What it is about.
    pub stored: Stored,
    /// Keep (true) or delete.
    pub keep: bool,
    /// Why.
    pub reason: Reason,
}

/// The knobs of a prune.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Builder versions whose images stay (newest first).
    pub keep_versions: usize,
    /// Nothing younger than this many seconds goes.
    pub grace_secs: i64,
}

/// The rules of a prune, made once from the spec, the plan and the builder versions, then
/// asked about one stored manifest at a time (a GitHub package is walked page by page).
pub(crate) struct Keeper<'a> {
    spec: &'a Spec,
    platforms: &'a [crate::core::platform::Platform],
    in_plan: BTreeSet<(String, String)>,
    version_of_tag: BTreeMap<(String, String), String>,
    keep_globs: globset::GlobSet,
    patterns: Vec<String>,
    cache: CacheTags<'a>,
    grace_secs: i64,
    now: i64,
}

impl<'a> Keeper<'a> {
    /// The rules for `spec` and `plan`; `versions` are the builder versions, newest first.
    pub(crate) fn new(spec: &'a Spec, plan: &'a Plan, versions: &[String], policy: &Policy, now: i64) -> Keeper<'a> {
        let platforms = &plan.builder.platforms;
        // With several platforms, the builder's and each base's legs are the plan's too.
        let legs = std::iter::once(&plan.builder.image)
            .chain(plan.bases.iter().map(|b| &b.image))
            .flat_map(|image| platforms.iter().filter(|_| has_legs(platforms)).map(move |p| leg(image, p)));
        let in_plan: BTreeSet<(String, String)> = std::iter::once(plan.builder.image.clone())
            .chain(plan.bases.iter().map(|b| b.image.clone()))
            .chain(plan.agents.iter().map(|a| a.image.clone()))
            .chain(legs)
            .filter_map(|r| Some((r.repository.clone(), r.tag.as_ref()?.to_string())))
            .collect();
        let recent: Vec<&String> = versions.iter().take(policy.keep_versions).collect();
        let mut version_of_tag: BTreeMap<(String, String), String> = BTreeMap::new();
        for v in &recent {
            version_of_tag.insert((spec.builder.repository.clone(), (*v).clone()), (*v).clone());
            for instance in &spec.bases.instances {
                for variant in &spec.agents.variants {
                    let tag = crate::core::tags::agent_tag_text(&spec.agents.tag, instance, &variant.name, v);
                    version_of_tag.insert((spec.agents.repository.clone(), tag), (*v).clone());
                }
            }
        }
        let mut keep_globs = GlobSetBuilder::new();
        let mut patterns = Vec::new();
        for k in &spec.keep {
            if let Ok(g) = Glob::new(k) {
                keep_globs.add(g);
                patterns.push(k.clone());
            }
        }
        let keep_globs = keep_globs.build().unwrap_or_else(|_| globset::GlobSet::empty());
        Keeper {
            spec,
            platforms,
            in_plan,
            version_of_tag,
            keep_globs,
            patterns,
            cache: cache_tags(spec),
            grace_secs: policy.grace_secs,
            now,
        }
    }

    /// The rule that keeps `s` by its own tags and age (rules 1 to 5), if any: children of
    /// kept indexes (rule 6) are the caller's to add, as it learns the indexes.
    pub(crate) fn keeps(&self, s: &Stored) -> Option<Reason> {
        for t in &s.tags {
            let key = (s.repository.clone(), t.clone());
            if self.in_plan.contains(&key) {
                return Some(Reason::InPlan);
            }
            if let Some(v) = self.version_of_tag.get(&key) {
                return Some(Reason::RecentVersion(v.clone()));
            }
            if s.repository == self.spec.bases.repository && (t.ends_with("-latest") || is_leg_of(t, "-latest", self.platforms)) {
                return Some(Reason::Latest);
            }
            if let Some(i) = self.keep_globs.matches(t).first() {
                return Some(Reason::KeepPattern(self.patterns[*i].clone()));
            }
            if self.cache.contains(&s.repository, t) {
                return Some(Reason::Cache(t.clone()));
            }
        }
        if s.created.is_some_and(|c| self.now - c < self.grace_secs) {
            return Some(Reason::Young);
        }
        None
    }

    /// The verdict on `s` by rules 1 to 5.
    pub(crate) fn decide(&self, s: &Stored) -> Decision {
        match self.keeps(s) {
            Some(reason) => Decision { stored: s.clone(), keep: true, reason },
            None => Decision { stored: s.clone(), keep: false, reason: Reason::Unused },
        }
    }
}

/// Decides for every stored manifest of the spec's three repositories. `versions` are the
/// builder versions, newest first.
pub(crate) fn select(stored: &[Stored], spec: &Spec, plan: &Plan, versions: &[String], policy: &Policy, now: i64) -> Vec<Decision> {
    let keeper = Keeper::new(spec, plan, versions, policy, now);
    let mut decisions: Vec<Decision> = stored.iter().map(|s| keeper.decide(s)).collect();
    // Children of kept indexes stay, whatever their own tags say.
    let kept_children: BTreeSet<(String, Digest)> = decisions
        .iter()
        .filter(|d| d.keep)
        .flat_map(|d| d.stored.children.iter().map(|c| (d.stored.repository.clone(), c.clone())))
        .collect();
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        if kept_children.contains(&(d.stored.repository.clone(), d.stored.digest.clone())) {
            d.keep = true;
            d.reason = Reason::ChildOfKept;
        }
    }
    decisions
}

/// The brake: the repositories in which `decisions` keep nothing although they hold
/// something. Deleting every version of a package is the mistake that matters (a wrong
/// spec, a wrong namespace), so a run that would do it refuses.
pub(crate) fn emptied(decisions: &[Decision]) -> Vec<String> {
    let mut kept: BTreeMap<&str, bool> = BTreeMap::new();
    for d in decisions {
        *kept.entry(d.stored.repository.as_str()).or_default() |= d.keep;
    }
    kept.into_iter().filter(|(_, k)| !k).map(|(r, _)| r.to_owned()).collect()
}

/// The indexes into `decisions` of the deletions one run makes: oldest first (unknown
/// creation times first, then by time, then by digest), at most `max`.
pub(crate) fn oldest_first(decisions: &[Decision], max: Option<usize>) -> Vec<usize> {
    let mut doomed: Vec<usize> = (0..decisions.len()).filter(|i| !decisions[*i].keep).collect();
    doomed.sort_by(|a, b| {
        let (a, b) = (&decisions[*a].stored, &decisions[*b].stored);
        a.created.cmp(&b.created).then_with(|| a.digest.cmp(&b.digest))
    });
    doomed.truncate(max.unwrap_or(usize::MAX));
    doomed
}

/// The build cache's floating tags of the spec's repositories: kept as cache, never versions.
pub(crate) fn cache_tags(spec: &Spec) -> CacheTags<'_> {
    CacheTags {
        builder: &spec.builder.repository,
        bases: &spec.bases.repository,
        instances: spec.bases.instances.iter().map(String::as_str).collect(),
        platforms: &spec.platforms,
    }
}

/// `(tag, created)` of every builder version among `stored`: the builder repository's tags
/// but the build cache's (`latest`, `cache-{stage}`), which name no version.
pub(crate) fn builder_tags(stored: &[Stored], spec: &Spec) -> Vec<(String, i64)> {
    let cache = cache_tags(spec);
    stored
        .iter()
        .filter(|s| s.repository == spec.builder.repository)
        .flat_map(|s| s.tags.iter().filter(|t| !cache.contains(&s.repository, t)).map(move |t| (t.clone(), s.created.unwrap_or(0))))
        .collect()
}

/// Builder versions in order, newest first, from `(tag, created)` of the builder
/// repository's tags (used when no commit history is given). Ties break by tag.
pub(crate) fn versions_by_age(mut tags: Vec<(String, i64)>) -> Vec<String> {
    tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    tags.into_iter().map(|(t, _)| t).collect()
}

/// Builder versions in commit order: each commit SHA (newest first) that names an existing
/// builder tag, as the full SHA or a prefix of at least 7 characters.
pub(crate) fn versions_from_commits(commits: &[String], builder_tags: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for sha in commits {
        let mut matches: Vec<&String> = builder_tags.iter().filter(|t| t.len() >= 7 && sha.starts_with(t.as_str())).collect();
        matches.sort_by_key(|t| std::cmp::Reverse(t.len()));
        if let Some(t) = matches.first()
            && !out.contains(*t)
        {
            out.push((*t).clone());
        }
    }
    out
}

/// The GHCR package name of a repository path: the path below the owner.
pub(crate) fn package_name(repository: &str, namespace: &str) -> String {
    let owner = namespace.split('/').next().unwrap_or(namespace);
    repository.strip_prefix(&format!("{owner}/")).unwrap_or(repository).to_owned()
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00.123Z`).
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(s.get(..19)?).ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::content_hash::{InputFile, Recipe};
    use crate::core::plan::{LayoutInputs, Observed, decide, layout};

    const DAY: i64 = 86_400;
    const NOW: i64 = 100 * DAY;

    pub(crate) fn d(seed: &str) -> Digest {
        Digest::sha256_of(seed.as_bytes())
    }

    /// A stored manifest of `ns/{repo}:{tag}`, `age_days` old (test fixture for other modules).
    pub(crate) fn stored(repo: &str, tag: &str, age_days: i64) -> Stored {
        Stored {
            repository: format!("ns/{repo}"),
            digest: d(&format!("{repo}:{tag}")),
            tags: if tag.is_empty() { vec![] } else { vec![tag.to_owned()] },
            created: Some(NOW - age_days * DAY),
            size: Some(1000),
            children: vec![],
            version_id: None,
        }
    }

    fn setup() -> (Spec, Plan) {
        let spec = crate::core::spec::tests::spec_with(&["a", "b"], &["v"]);
        let plan = plan_of(&spec);
        (spec, plan)
    }

    /// The offline plan of `spec` at builder version `v3`.
    fn plan_of(spec: &Spec) -> Plan {
        let recipe =
            Recipe { dockerfile_sha256: "x".into(), target: None, inputs: vec![InputFile { path: "f".into(), sha256: "y".into() }] };
        let version: crate::core::image_ref::Tag = "v3".parse().unwrap();
        let none = BTreeMap::new();
        let inputs = LayoutInputs {
            builder_version: &version,
            base_recipe: &recipe,
            upstream_digests: &none,
            recorded_digests: &none,
            builder_inputs: Err("not read"),
        };
        decide(layout(spec, inputs), &Observed::default(), 64)
    }

    fn policy(n: usize) -> Policy {
        Policy { keep_versions: n, grace_secs: DAY }
    }

    fn verdict(decisions: &[Decision], repo: &str, tag: &str) -> (bool, Reason) {
        let d = decisions.iter().find(|d| d.stored.repository == format!("ns/{repo}") && d.stored.tags.iter().any(|t| t == tag)).unwrap();
        (d.keep, d.reason.clone())
    }

    #[test]
    fn rules_table() {
        let (spec, plan) = setup();
        let base_a = plan.bases[0].image.tag.as_ref().unwrap().to_string();
        let items = vec![
            stored("builder", "v3", 10),
            stored("builder", "v2", 20),
            stored("builder", "v1", 30),
            stored("agent", "v3-a-v", 10),
            stored("agent", "v2-a-v", 20),
            stored("agent", "v1-a-v", 30),
            stored("agent", "v1-b-v", 0),
            stored("base", &base_a, 40),
            stored("base", "a-oldhash", 40),
            stored("base", "a-latest", 40),
            stored("base", "release-1", 40),
            stored("builder", "cache-deps", 40),
            stored("builder", "latest", 40),
            stored("base", "a-cache-tools", 40),
        ];
        let mut spec = spec;
        spec.keep = vec!["release-*".into()];
        let versions = vec!["v3".to_owned(), "v2".to_owned(), "v1".to_owned()];
        let got = select(&items, &spec, &plan, &versions, &policy(2), NOW);
        let table = [
            ("builder", "v3", true, Reason::InPlan),
            ("builder", "v2", true, Reason::RecentVersion("v2".into())),
            ("builder", "v1", false, Reason::Unused),
            ("agent", "v3-a-v", true, Reason::InPlan),
            ("agent", "v2-a-v", true, Reason::RecentVersion("v2".into())),
            ("agent", "v1-a-v", false, Reason::Unused),
            ("agent", "v1-b-v", true, Reason::Young),
            ("base", base_a.as_str(), true, Reason::InPlan),
            ("base", "a-oldhash", false, Reason::Unused),
            ("base", "a-latest", true, Reason::Latest),
            ("base", "release-1", true, Reason::KeepPattern("release-*".into())),
            ("builder", "cache-deps", true, Reason::Cache("cache-deps".into())),
            ("builder", "latest", true, Reason::Cache("latest".into())),
            ("base", "a-cache-tools", true, Reason::Cache("a-cache-tools".into())),
        ];
        for (repo, tag, keep, reason) in table {
            assert_eq!(verdict(&got, repo, tag), (keep, reason), "{repo}:{tag}");
        }
    }

    #[test]
    fn with_two_platforms_the_legs_of_kept_images_stay() {
        let (mut spec, _) = setup();
        spec.platforms = vec!["linux/amd64".parse().unwrap(), "linux/arm64".parse().unwrap()];
        let plan = plan_of(&spec);
        let base_a = plan.bases[0].image.tag.as_ref().unwrap().to_string();
        let arm_leg = format!("{base_a}-linux-arm64");
        let items = vec![
            stored("base", &arm_leg, 40),
            stored("builder", "v3-linux-amd64", 40),
            stored("base", "a-latest-linux-amd64", 40),
            stored("base", "a-oldhash-linux-amd64", 40),
            stored("base", "a-latest-linux-s390x", 40),
        ];
        let got = select(&items, &spec, &plan, &["v3".to_owned()], &policy(1), NOW);
        assert_eq!(verdict(&got, "base", &arm_leg), (true, Reason::InPlan));
        assert_eq!(verdict(&got, "builder", "v3-linux-amd64"), (true, Reason::InPlan));
        assert_eq!(verdict(&got, "base", "a-latest-linux-amd64"), (true, Reason::Latest));
        assert_eq!(verdict(&got, "base", "a-oldhash-linux-amd64"), (false, Reason::Unused));
        assert_eq!(verdict(&got, "base", "a-latest-linux-s390x"), (false, Reason::Unused), "not a platform of the spec");
    }

    #[test]
    fn keep_versions_one_keeps_only_the_plan_and_the_newest() {
        let (spec, plan) = setup();
        let items = vec![stored("builder", "v3", 10), stored("builder", "v2", 20), stored("agent", "v2-a-v", 20)];
        let versions = vec!["v3".to_owned(), "v2".to_owned()];
        let got = select(&items, &spec, &plan, &versions, &policy(1), NOW);
        assert_eq!(got.iter().filter(|d| !d.keep).count(), 2);
    }

    #[test]
    fn children_of_a_kept_index_stay() {
        let (spec, plan) = setup();
        let mut index = stored("agent", "v3-a-v", 10);
        let child = stored("agent", "", 50);
        let orphan = Stored { digest: d("orphan"), ..stored("agent", "", 50) };
        index.children = vec![child.digest.clone()];
        let got = select(&[index, child.clone(), orphan.clone()], &spec, &plan, &["v3".into()], &policy(1), NOW);
        let of = |dg: &Digest| got.iter().find(|x| &x.stored.digest == dg).unwrap().clone();
        assert_eq!((of(&child.digest).keep, of(&child.digest).reason), (true, Reason::ChildOfKept));
        assert!(!of(&orphan.digest).keep);
    }

    #[test]
    fn the_brake_names_a_repository_that_would_be_emptied() {
        let (spec, plan) = setup();
        let items = vec![stored("builder", "v3", 10), stored("agent", "v1-a-v", 30), stored("agent", "v0-a-v", 40)];
        let got = select(&items, &spec, &plan, &["v3".into()], &policy(1), NOW);
        assert_eq!(emptied(&got), ["ns/agent"]);
        let with_kept_agent = [items, vec![stored("agent", "v3-a-v", 10)]].concat();
        assert!(emptied(&select(&with_kept_agent, &spec, &plan, &["v3".into()], &policy(1), NOW)).is_empty());
    }

    #[test]
    fn one_run_deletes_the_oldest_first() {
        let (spec, plan) = setup();
        let items = vec![stored("agent", "v1-a-v", 30), stored("agent", "v0-a-v", 40), stored("agent", "v2-a-v", 20)];
        let got = select(&items, &spec, &plan, &["v3".into()], &policy(1), NOW);
        let tags = |ix: Vec<usize>| ix.into_iter().map(|i| got[i].stored.tags[0].clone()).collect::<Vec<_>>();
        assert_eq!(tags(oldest_first(&got, Some(2))), ["v0-a-v", "v1-a-v"]);
        assert_eq!(tags(oldest_first(&got, None)), ["v0-a-v", "v1-a-v", "v2-a-v"]);
    }

    #[test]
    fn versions_in_order() {
        assert_eq!(versions_by_age(vec![("a".into(), 1), ("b".into(), 3), ("c".into(), 2)]), ["b", "c", "a"]);
        let commits = vec!["ffff0000aaaa".to_owned(), "eeee1111bbbb".to_owned(), "dddd2222cccc".to_owned()];
        let tags = vec!["dddd222".to_owned(), "ffff0000aaaa".to_owned(), "abc".to_owned()];
        assert_eq!(versions_from_commits(&commits, &tags), ["ffff0000aaaa", "dddd222"]);
        let (spec, _) = setup();
        let listed =
            [stored("builder", "v1", 2), stored("builder", "latest", 1), stored("builder", "cache-deps", 1), stored("base", "v0", 1)];
        let named: Vec<String> = builder_tags(&listed, &spec).into_iter().map(|(t, _)| t).collect();
        assert_eq!(named, ["v1"], "the build cache's tags name no builder version");
    }

    #[test]
    fn package_names_and_times() {
        assert_eq!(package_name("org/eval-base", "org"), "eval-base");
        assert_eq!(package_name("org/team/agent", "org/team"), "team/agent");
        assert_eq!(parse_rfc3339("1970-01-02T00:00:00.123Z"), Some(DAY));
        assert_eq!(parse_rfc3339("soon"), None);
    }
}
