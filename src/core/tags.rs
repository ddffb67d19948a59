//! Every tag formula in one place: the base's `{instance}-{hash}`, the floating
//! `{instance}-latest`, the builder's `{version}`, the agent's `agents.tag` template, a leg's
//! `{tag}-{os}-{arch}[-{variant}]`, the build cache's (the builder's floating `latest`, a
//! stage's `cache-{stage}` or `{instance}-cache-{stage}`), and the fitting of any of them
//! into 128 characters. The
//! plan names images with these, retention recognises its images with these, and spec
//! validation checks what these render: should two of them ever disagree, `prune` would
//! delete live images, so there is one of each.

use crate::core::content_hash::hash_bytes;
use crate::core::image_ref::{MAX_TAG_LEN, Tag};
use crate::core::platform::Platform;
use crate::core::template::{Template, Vars};

/// Shortens a tag over the 128-character limit: keeps its readable head and ends it in
/// `-` and the hash of the whole tag. Tags within the limit come back unchanged.
pub(crate) fn fit(tag: &str) -> String {
    if tag.len() <= MAX_TAG_LEN {
        return tag.to_owned();
    }
    let keep = MAX_TAG_LEN - 1 - crate::core::content_hash::HASH_LEN;
    // Tags are ASCII by grammar, but cut on a char boundary anyway.
    let mut cut = keep;
    while !tag.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{}", &tag[..cut], hash_bytes("split-build/long-tag/v1", tag.as_bytes()))
}

/// A tag from text built of grammar-checked parts, fitted into 128 characters.
fn tag_of(text: &str) -> Tag {
    // Instance ids and hashes are checked against the tag grammar when the spec is parsed
    // and templates only add characters of that grammar (the spec checks every rendering),
    // so this cannot fail; should it, the hashed fallback is still a valid tag.
    fit(text).parse().unwrap_or_else(|_| hash_bytes("split-build/bad-tag/v1", text.as_bytes()).parse().unwrap_or_else(|_| unreachable!()))
}

/// A base's content-addressed tag: `{instance}-{hash}`.
pub(crate) fn base_tag(instance: &str, hash: &str) -> Tag {
    tag_of(&format!("{instance}-{hash}"))
}

/// The floating tag of an instance's newest base, `{instance}-latest`: where the planner
/// finds a warm base.
pub fn latest_tag(instance: &str) -> Tag {
    tag_of(&format!("{instance}-latest"))
}

/// The builder's tag: its version.
pub(crate) fn builder_tag(version: &Tag) -> Tag {
    version.clone()
}

/// What the `agents.tag` template renders for one agent, fitted: the text the spec checks
/// against the tag grammar.
pub(crate) fn agent_tag_text(template: &Template, instance: &str, variant: &str, builder_version: &str) -> String {
    fit(&template.render(&Vars { instance: Some(instance), variant: Some(variant), builder: Some(builder_version) }))
}

/// An agent's tag, from the `agents.tag` template.
pub(crate) fn agent_tag(template: &Template, instance: &str, variant: &str, builder_version: &str) -> Tag {
    let text = agent_tag_text(template, instance, variant, builder_version);
    text.parse().unwrap_or_else(|_| tag_of(&text))
}

/// The builder's floating tag, moved by every builder build: where the planner finds a warm
/// builder (an earlier build to take cache from), as `{instance}-latest` is for bases.
pub(crate) const BUILDER_WARM: &str = "latest";

/// The prefix of a stage's cache tag (after the instance, for a base's).
pub(crate) const CACHE_PREFIX: &str = "cache-";

/// The builder's floating tag, `latest`.
pub(crate) fn builder_warm_tag() -> Tag {
    tag_of(BUILDER_WARM)
}

/// A stage's cache image tag: the builder's `cache-{stage}`, a base instance's
/// `{instance}-cache-{stage}` (a stage name is `[a-z0-9][a-z0-9_.-]*` in BuildKit).
pub(crate) fn stage_cache_tag(instance: Option<&str>, stage: &str) -> Tag {
    match instance {
        Some(i) => tag_of(&format!("{i}-{CACHE_PREFIX}{stage}")),
        None => tag_of(&format!("{CACHE_PREFIX}{stage}")),
    }
}

/// The tag suffix of a platform: `linux-amd64`, `linux-arm64-v8`.
pub(crate) fn platform_suffix(platform: &Platform) -> String {
    platform.to_string().replace('/', "-")
}

/// The tag a leg of `tag` is pushed under (at most 128 characters, like every tag).
pub(crate) fn leg_tag(tag: &Tag, platform: &Platform) -> Tag {
    let text = fit(&format!("{tag}-{}", platform_suffix(platform)));
    // A tag, `-` and the suffix (letters, digits, `-`) are a tag again; should the grammar
    // say otherwise, the tag itself is the safe answer (it is never pushed as a leg then).
    text.parse().unwrap_or_else(|_| tag.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::template::Field;

    #[test]
    fn long_tags_keep_head_and_end_in_hash() {
        assert_eq!(fit("short"), "short");
        let exact = "a".repeat(128);
        assert_eq!(fit(&exact), exact);
        let long = format!("{}-tail", "h".repeat(200));
        let fitted = fit(&long);
        assert_eq!(fitted.len(), 128);
        assert!(fitted.starts_with(&"h".repeat(111)));
        assert_ne!(fit(&long), fit(&format!("{}-tai1", "h".repeat(200))));
        assert!(fitted.parse::<Tag>().is_ok());
    }

    #[test]
    fn every_formula_yields_a_tag() {
        assert_eq!(base_tag("django__django-11099", "0123456789abcdef").as_str(), "django__django-11099-0123456789abcdef");
        assert_eq!(latest_tag("django__django-11099").as_str(), "django__django-11099-latest");
        let v: Tag = "v1".parse().unwrap();
        assert_eq!(builder_tag(&v), v);
        let t = Template::parse("{builder}-{instance}-{variant}", &[Field::Builder, Field::Instance, Field::Variant]).unwrap();
        assert_eq!(agent_tag(&t, "i", "min", "v1").as_str(), "v1-i-min");
        let long = "x".repeat(120);
        let fitted = agent_tag(&t, &long, "source-minimal", "v1");
        assert_eq!(fitted.as_str().len(), 128);
        assert_eq!(fitted.as_str(), agent_tag_text(&t, &long, "source-minimal", "v1"));
        assert!(base_tag(&long, "0123456789abcdef").as_str().len() <= 128);
        let p: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(leg_tag(&v, &p).as_str(), "v1-linux-arm64");
    }

    /// The plan names agents with these formulas, retention recognises a kept builder
    /// version's agents with them, and the spec checked what they render: for a tag long
    /// enough to be fitted, all three agree, so `prune` keeps the agents it should.
    #[test]
    fn plan_retention_and_spec_agree_on_agent_tags() {
        use std::collections::BTreeMap;

        use crate::core::content_hash::{InputFile, Recipe};
        use crate::core::plan::{LayoutInputs, Observed, decide, layout};
        use crate::core::retention::{Policy, Reason, Stored, select};

        let long = format!("{}__{}-12907", "a".repeat(60), "b".repeat(50));
        // The spec's validation renders and checks every agent tag: it accepts this one.
        let spec = crate::core::spec::tests::spec_with(&[&long, "django__django-11099"], &["source-minimal"]);
        let recipe =
            Recipe { dockerfile_sha256: "x".into(), target: None, inputs: vec![InputFile { path: "f".into(), sha256: "y".into() }] };
        let (old, new): (Tag, Tag) = ("0123456789abcdef".parse().unwrap(), "fedcba9876543210".parse().unwrap());
        let none = BTreeMap::new();
        let names = |v: &Tag| {
            layout(
                &spec,
                LayoutInputs {
                    builder_version: v,
                    base_recipe: &recipe,
                    upstream_digests: &none,
                    recorded_digests: &none,
                    builder_inputs: Err("not read"),
                },
            )
        };
        let previous = names(&old);
        let fitted = previous.agents.iter().find(|a| a.instance == long).unwrap();
        let tag = fitted.image.tag.clone().unwrap();
        assert_eq!(tag.as_str().len(), 128, "long enough to be fitted: {tag}");
        assert_eq!(tag.as_str(), agent_tag_text(&spec.agents.tag, &long, "source-minimal", old.as_str()), "what the spec checked");

        let plan = decide(names(&new), &Observed::default(), 64);
        let stored: Vec<Stored> = previous
            .agents
            .iter()
            .map(|a| Stored {
                repository: a.image.repository.clone(),
                digest: crate::core::image_ref::Digest::sha256_of(a.image.to_string().as_bytes()),
                tags: vec![a.image.tag.as_ref().unwrap().to_string()],
                created: Some(0),
                size: None,
                children: vec![],
                version_id: None,
            })
            .collect();
        let versions = [new.to_string(), old.to_string()];
        let decisions = select(&stored, &spec, &plan, &versions, &Policy { keep_versions: 2, grace_secs: 0 }, 1_000_000);
        assert_eq!(decisions.len(), 2);
        for d in &decisions {
            assert!(d.keep && d.reason == Reason::RecentVersion(old.to_string()), "{:?} {:?}", d.stored.tags, d.reason);
        }
        let dropped = select(&stored, &spec, &plan, &versions, &Policy { keep_versions: 1, grace_secs: 0 }, 1_000_000);
        assert!(dropped.iter().all(|d| !d.keep), "and go once their version is no longer kept");
    }
}
