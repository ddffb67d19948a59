//! The builder's cache at the registry: its floating warm tag, one cache image per stage its
//! target needs, what a build takes as cache-from, what the plan's notes say of it, and which
//! cache images retention keeps.
//!
//! Why cache images: through the Docker daemon's `/build` API BuildKit exports inline cache
//! only (cache metadata in the config of the image it builds; no registry or local cache
//! exporter without the containerd image store), and inline cache covers the layers of that
//! image alone. So under `max` each stage the target needs is built as its own target with
//! inline cache metadata and pushed as `{builder.repository}:cache-{stage}` (a leg of it with
//! several platforms); every later build takes all of them as cache-from and BuildKit pulls
//! only the layers it reuses. Every tag here floats: each builder build moves it.

use std::collections::BTreeSet;

use crate::core::dockerfile_stages::Stage;
use crate::core::image_ref::ImageRef;
use crate::core::legs::{has_legs, pushed_as};
use crate::core::platform::Platform;
use crate::core::spec::CacheMode;
use crate::core::tags::{BUILDER_WARM, CACHE_PREFIX, builder_warm_tag, platform_suffix, stage_cache_tag};

/// The builder's warm tag itself, `{repo}:latest` (an index with several platforms: see
/// [`warm_image`] for a platform's).
pub(crate) fn warm_tag(builder: &ImageRef) -> ImageRef {
    builder.with_tag(builder_warm_tag())
}

/// Where `platform`'s warm builder is: `{repo}:latest`, or its leg with several platforms.
pub(crate) fn warm_image(builder: &ImageRef, platform: &Platform, platforms: &[Platform]) -> ImageRef {
    pushed_as(&warm_tag(builder), platform, platforms)
}

/// The cache image of one stage for `platform`, in the repository of `image`: the
/// builder's `cache-{stage}`, or a base instance's (`owner`) `{instance}-cache-{stage}`; its
/// leg with several platforms.
pub(crate) fn cache_image(
    image: &ImageRef,
    owner: Option<&str>,
    stage: &str,
    platform: &Platform,
    platforms: &[Platform],
) -> Option<ImageRef> {
    Some(pushed_as(&image.with_tag(stage_cache_tag(owner, stage)), platform, platforms))
}

/// The builds a builder version takes under a cache mode: each needed stage built on its own
/// (to be pushed as its cache image) before the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheSteps {
    /// The named stages the target needs, in Dockerfile order: built and pushed as cache
    /// images first (`max` only).
    pub stages: Vec<String>,
    /// Needed stages without a name: `--target` cannot build them alone, so their steps are
    /// cached only through the stages built on them.
    pub unnamed: Vec<usize>,
    /// Whether the builds carry inline cache metadata (`min` and `max`).
    pub inline: bool,
}

/// What `mode` makes of the stages the builder's target needs.
pub(crate) fn cache_steps(mode: CacheMode, needed: &[&Stage]) -> CacheSteps {
    let inline = mode != CacheMode::Off;
    if mode != CacheMode::Max {
        return CacheSteps { stages: Vec::new(), unnamed: Vec::new(), inline };
    }
    let (named, unnamed): (Vec<&&Stage>, Vec<&&Stage>) = needed.iter().partition(|s| s.name.is_some());
    CacheSteps { stages: named.iter().map(|s| s.key()).collect(), unnamed: unnamed.iter().map(|s| s.index).collect(), inline }
}

/// What a build for `platform` takes as cache-from: the warm image (the builder's `latest`,
/// a base's `{instance}-latest`, when there is one) and the cache image of every stage
/// `steps` builds (whichever exist; BuildKit passes over a missing one). Cache-from is on
/// whatever the mode (`off` exports no cache; what an earlier build exported is still used).
pub(crate) fn cache_from(
    image: &ImageRef,
    owner: Option<&str>,
    warm: Option<&ImageRef>,
    steps: &CacheSteps,
    platform: &Platform,
    platforms: &[Platform],
) -> Vec<String> {
    warm.cloned()
        .into_iter()
        .chain(steps.stages.iter().filter_map(|s| cache_image(image, owner, s, platform, platforms)))
        .map(|i| i.to_string())
        .collect()
}

/// The plan's note on the builder's cache: which path runs and what it pushes.
pub(crate) fn builder_note(builder: &ImageRef, mode: CacheMode, target: &str, needed: Result<&[&Stage], String>) -> String {
    let latest = warm_tag(builder);
    let repo = format!("{}/{}", builder.registry, builder.repository);
    match (mode, needed) {
        (CacheMode::Off, _) => {
            format!(
                "builder cache off: no cache exported; cache-from `{latest}` (the warm builder) reuses only what an earlier build exported"
            )
        }
        (CacheMode::Min, _) => format!(
            "builder cache min: the `{target}` image carries inline cache metadata; cache-from `{latest}` (the warm builder) reuses only `{target}`'s own steps"
        ),
        (CacheMode::Max, Err(why)) => format!(
            "builder cache max: the builder's stages could not be read ({why}); caching as min: inline cache metadata in `{latest}` only"
        ),
        (CacheMode::Max, Ok(needed)) => {
            let steps = cache_steps(mode, needed);
            let mut note = if steps.stages.is_empty() {
                format!("builder cache max: `{target}` needs no other stage: its inline cache in `{latest}` caches every step")
            } else {
                format!(
                    "builder cache max: each stage `{target}` needs ({}) is built as its own target with inline cache metadata and pushed as `{repo}:{CACHE_PREFIX}{{stage}}` (per platform with several), and every builder build takes them and `{latest}` as cache-from: the daemon's /build API exports inline cache only, so a stage is cached at the registry by being an image of its own; the classic builder (no BuildKit) pulls the same images and reuses each step whose parent and command match",
                    steps.stages.join(", ")
                )
            };
            if !steps.unnamed.is_empty() {
                let list: Vec<String> = steps.unnamed.iter().map(ToString::to_string).collect();
                note.push_str(&format!(
                    "; stages without a name ({}) cannot be built alone: name them (`FROM ... AS name`) to cache them",
                    list.join(", ")
                ));
            }
            note
        }
    }
}

/// The bases' note, when they cache more than their final stage: the cost in pushes.
pub(crate) fn bases_note(mode: CacheMode, needed: Result<&[&Stage], String>) -> Option<String> {
    if mode != CacheMode::Max {
        return None;
    }
    Some(match needed {
        Err(why) => format!("bases cache max: the base Dockerfile's stages could not be read ({why}); caching as min"),
        Ok(needed) => {
            let steps = cache_steps(mode, needed);
            if steps.stages.is_empty() {
                "bases cache max: the base target needs no other stage: its inline cache in `{instance}-latest` caches every step"
                    .to_owned()
            } else {
                format!(
                    "bases cache max: each stage the base target needs ({}) is built as its own target with inline cache metadata and pushed as `{{instance}}-{CACHE_PREFIX}{{stage}}` (per platform with several), one more push per stage and instance (bases default to min for that reason)",
                    steps.stages.join(", ")
                )
            }
        }
    })
}

/// Which tags of the spec's repositories are the cache's floating tags (never a builder
/// version nor a base): the builder's `latest` and `cache-{stage}`, the bases'
/// `{instance}-cache-{stage}`, and their legs.
#[derive(Debug, Clone)]
pub(crate) struct CacheTags<'a> {
    /// The builder repository.
    pub builder: &'a str,
    /// The bases repository.
    pub bases: &'a str,
    /// The spec's instances.
    pub instances: BTreeSet<&'a str>,
    /// The spec's platforms.
    pub platforms: &'a [Platform],
}

impl CacheTags<'_> {
    /// Whether `tag` of `repository` is a cache tag.
    pub(crate) fn contains(&self, repository: &str, tag: &str) -> bool {
        let leg = self
            .platforms
            .iter()
            .filter(|_| has_legs(self.platforms))
            .map(platform_suffix)
            .find_map(|s| tag.strip_suffix(&s)?.strip_suffix('-'));
        let head = leg.unwrap_or(tag);
        if repository == self.builder && (head == BUILDER_WARM || head.strip_prefix(CACHE_PREFIX).is_some_and(|s| !s.is_empty())) {
            return true;
        }
        // An instance id may itself hold `-cache-`: any split whose head is an instance counts.
        let marker = format!("-{CACHE_PREFIX}");
        repository == self.bases
            && head.match_indices(&marker).any(|(i, _)| self.instances.contains(&head[..i]) && head.len() > i + marker.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dockerfile_stages::{parse_stages, stages_needed};

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn builder() -> ImageRef {
        "reg.example/ns/builder:v2".parse().unwrap()
    }

    const DOCKERFILE: &str =
        "FROM busybox AS deps\nRUN sleep 20\nFROM deps AS build\nCOPY src /src\nFROM scratch AS payload\nCOPY --from=build /src /src\n";

    #[test]
    fn cache_tags_follow_the_stage_and_platform() {
        let one = [p("linux/amd64")];
        let two = [p("linux/amd64"), p("linux/arm64")];
        assert_eq!(warm_image(&builder(), &one[0], &one).to_string(), "reg.example/ns/builder:latest");
        assert_eq!(warm_image(&builder(), &two[1], &two).to_string(), "reg.example/ns/builder:latest-linux-arm64");
        assert_eq!(cache_image(&builder(), None, "deps", &one[0], &one).unwrap().to_string(), "reg.example/ns/builder:cache-deps");
        assert_eq!(
            cache_image(&builder(), None, "deps", &two[0], &two).unwrap().to_string(),
            "reg.example/ns/builder:cache-deps-linux-amd64"
        );
        let base: ImageRef = "reg.example/ns/base:i1-0123456789abcdef".parse().unwrap();
        assert_eq!(
            cache_image(&base, Some("i1"), "deps", &two[1], &two).unwrap().to_string(),
            "reg.example/ns/base:i1-cache-deps-linux-arm64"
        );
    }

    #[test]
    fn max_builds_every_needed_stage_min_and_off_none() {
        let stages = parse_stages(DOCKERFILE);
        let needed = stages_needed(&stages, Some("payload")).unwrap();
        let max = cache_steps(CacheMode::Max, &needed);
        assert_eq!((max.stages.as_slice(), max.inline), (["deps".to_owned(), "build".to_owned()].as_slice(), true));
        assert_eq!(cache_steps(CacheMode::Min, &needed), CacheSteps { stages: vec![], unnamed: vec![], inline: true });
        assert_eq!(cache_steps(CacheMode::Off, &needed), CacheSteps { stages: vec![], unnamed: vec![], inline: false });
        let one = [p("linux/amd64")];
        let warm = warm_image(&builder(), &one[0], &one);
        assert_eq!(
            cache_from(&builder(), None, Some(&warm), &max, &one[0], &one),
            ["reg.example/ns/builder:latest", "reg.example/ns/builder:cache-deps", "reg.example/ns/builder:cache-build"]
        );
        let base: ImageRef = "reg.example/ns/base:i1-0123456789abcdef".parse().unwrap();
        assert_eq!(
            cache_from(&base, Some("i1"), None, &max, &one[0], &one),
            ["reg.example/ns/base:i1-cache-deps", "reg.example/ns/base:i1-cache-build"]
        );
        let off = cache_steps(CacheMode::Off, &needed);
        assert_eq!(cache_from(&builder(), None, Some(&warm), &off, &one[0], &one), ["reg.example/ns/builder:latest"], "off exports none");
    }

    #[test]
    fn notes_say_which_path_runs() {
        let stages = parse_stages(DOCKERFILE);
        let needed = stages_needed(&stages, Some("payload")).unwrap();
        let max = builder_note(&builder(), CacheMode::Max, "payload", Ok(&needed));
        assert!(max.contains("(deps, build)") && max.contains("reg.example/ns/builder:cache-{stage}"), "{max}");
        assert!(max.contains("inline cache only") && max.contains("classic builder"), "{max}");
        let unnamed = parse_stages("FROM busybox\nRUN x\nFROM scratch AS payload\nCOPY --from=0 /a /a\n");
        let needed = stages_needed(&unnamed, Some("payload")).unwrap();
        assert!(builder_note(&builder(), CacheMode::Max, "payload", Ok(&needed)).contains("without a name (0)"));
        assert!(builder_note(&builder(), CacheMode::Min, "payload", Ok(&[])).starts_with("builder cache min"));
        assert!(builder_note(&builder(), CacheMode::Off, "payload", Ok(&[])).starts_with("builder cache off"));
        assert!(builder_note(&builder(), CacheMode::Max, "payload", Err("no stage `x`".into())).contains("caching as min"));
    }

    #[test]
    fn cache_tags_are_told_from_versions_and_bases() {
        let two = [p("linux/amd64"), p("linux/arm64")];
        let tags = CacheTags { builder: "ns/builder", bases: "ns/base", instances: ["i1", "a-cache-b"].into(), platforms: &two };
        assert!(tags.contains("ns/builder", "cache-deps-linux-amd64") && tags.contains("ns/base", "i1-cache-deps-linux-amd64"));
        let one = CacheTags { platforms: &two[..1], ..tags.clone() };
        assert!(one.contains("ns/builder", "cache-build") && one.contains("ns/builder", "latest"));
        assert!(
            tags.contains("ns/builder", "latest-linux-arm64")
                && !tags.contains("ns/builder", "v2")
                && !tags.contains("ns/builder", "cache-")
        );
        assert!(tags.contains("ns/base", "a-cache-b-cache-deps-linux-arm64"), "an instance holding `-cache-`");
        assert!(!tags.contains("ns/base", "a-cache-b-0123456789abcdef") && !tags.contains("ns/base", "i2-cache-deps"));
        assert!(!tags.contains("ns/base", "cache-deps"), "the builder's tags live in the builder repository");
    }
}
