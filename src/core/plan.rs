//! The plan: every image the spec asks for, its content-addressed reference, and whether
//! it must be made (`cold`), can be made with a cache (`warm`) or already exists (`hit`).
//!
//! Planning is two pure steps around one I/O step: [`layout`] names every image from the
//! spec and the hashed inputs; the caller asks the registry about those names (or not, when
//! offline); [`decide`] turns the answers into a [`Plan`] with its matrices.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::core::build_cache::warm_image;
use crate::core::content_hash::{Recipe, base_hash};
use crate::core::image_ref::{Digest, ImageRef, Tag};
use crate::core::inputs_record::{InputsRecord, Previous};
use crate::core::legs::{has_legs, leg, pushed_as};
use crate::core::matrix::{GithubMatrix, Sizing, Work, pace, shard};
use crate::core::platform::Platform;
use crate::core::spec::Spec;
pub use crate::core::tags::latest_tag;
use crate::core::tags::{agent_tag, base_tag, builder_tag};
use crate::core::template::Vars;

/// How much of an image already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The exact image exists: reuse it as is.
    Hit,
    /// An older build of the same instance exists and serves as cache-from.
    Warm,
    /// Nothing to reuse: build from scratch.
    Cold,
    /// Not planned: the upstream digest could not be resolved and no previous build
    /// records it, so the base's tag is unknown (a base); its base waits (an agent).
    Unresolved,
}

impl Status {
    /// Whether the image must be made.
    pub fn is_missing(self) -> bool {
        matches!(self, Status::Warm | Status::Cold)
    }

    /// The lower-case name used in JSON and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Warm => "warm",
            Status::Cold => "cold",
            Status::Unresolved => "unresolved",
        }
    }
}

/// The names of every image the spec asks for, before the registry is asked anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The builder image (one tag; an index when there are several platforms).
    pub builder: ImageRef,
    /// The platforms every stage is planned for.
    pub platforms: Vec<Platform>,
    /// One entry per instance, in spec order.
    pub bases: Vec<BaseLayout>,
    /// One entry per instance and variant, instance-major in spec order.
    pub agents: Vec<AgentLayout>,
    /// The `runs-on` label of each platform's matrix jobs.
    pub runners: BTreeMap<Platform, String>,
    /// The bases' Dockerfile, target and context inputs (for their input records).
    pub base_recipe: Recipe,
    /// The builder's input record, or why its inputs could not be read.
    pub builder_inputs: Result<InputsRecord, String>,
}

/// The names around one base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseLayout {
    /// The instance id.
    pub instance: String,
    /// The rendered upstream reference.
    pub from: String,
    /// The upstream digest that went into the hash, when the registry gave one.
    pub from_digest: Option<Digest>,
    /// The content-addressed base image `{instance}-{hash}`.
    pub image: ImageRef,
    /// The floating `{instance}-latest` tag, the warm cache candidate.
    pub latest: ImageRef,
    /// The rendered build args (without `BASE_IMAGE`).
    pub build_args: BTreeMap<String, String>,
}

/// The names around one agent image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLayout {
    /// The instance id.
    pub instance: String,
    /// The variant name.
    pub variant: String,
    /// The agent image.
    pub image: ImageRef,
    /// The base image it is made on.
    pub base: ImageRef,
}

/// What goes into the names that is not in the spec itself.
#[derive(Debug, Clone, Copy)]
pub struct LayoutInputs<'a> {
    /// The builder version (flag, spec or hash of the builder's inputs).
    pub builder_version: &'a Tag,
    /// The base Dockerfile, target and hashed context inputs.
    pub base_recipe: &'a Recipe,
    /// Upstream digests by rendered `from` reference, where the registry gave them.
    pub upstream_digests: &'a BTreeMap<String, Digest>,
    /// By instance, the upstream digest its previous build recorded: used when the
    /// registry gave none for its `from` (so an unreachable upstream changes no tag).
    pub recorded_digests: &'a BTreeMap<String, Digest>,
    /// The builder's input record (what a missing builder is compared with its previous
    /// build by), or why its inputs could not be read.
    pub builder_inputs: Result<&'a InputsRecord, &'a str>,
}

/// Names every image of the spec.
pub fn layout(spec: &Spec, inputs: LayoutInputs<'_>) -> Layout {
    let builder = spec.image(&spec.builder.repository, builder_tag(inputs.builder_version));
    let mut bases = Vec::with_capacity(spec.bases.instances.len());
    let mut agents = Vec::with_capacity(spec.bases.instances.len() * spec.agents.variants.len());
    for instance in &spec.bases.instances {
        let vars = Vars { instance: Some(instance), ..Vars::default() };
        let from = spec.bases.from.render(&vars);
        let build_args: BTreeMap<String, String> = spec.bases.build_args.iter().map(|(k, t)| (k.clone(), t.render(&vars))).collect();
        let from_digest = inputs.upstream_digests.get(&from).or_else(|| inputs.recorded_digests.get(instance)).cloned();
        let hash = base_hash(inputs.base_recipe, &build_args, &spec.platforms, &from, from_digest.as_ref());
        let image = spec.image(&spec.bases.repository, base_tag(instance, &hash));
        let latest = spec.image(&spec.bases.repository, latest_tag(instance));
        for variant in &spec.agents.variants {
            let tag = agent_tag(&spec.agents.tag, instance, &variant.name, inputs.builder_version.as_str());
            agents.push(AgentLayout {
                instance: instance.clone(),
                variant: variant.name.clone(),
                image: spec.image(&spec.agents.repository, tag),
                base: image.clone(),
            });
        }
        bases.push(BaseLayout { instance: instance.clone(), from, from_digest, image, latest, build_args });
    }
    Layout {
        builder,
        platforms: spec.platforms.clone(),
        bases,
        agents,
        runners: spec.runners.clone(),
        base_recipe: inputs.base_recipe.clone(),
        builder_inputs: inputs.builder_inputs.cloned().map_err(str::to_owned),
    }
}

/// What the registry said about one image that exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Its `org.opencontainers.image.base.name` annotation, if any.
    pub base_name: Option<String>,
    /// Its `dev.split-build.builder` annotation (the builder image it took its payload
    /// from), if any.
    pub builder: Option<String>,
}

/// What a plan does with a base whose upstream digest cannot be resolved and whose previous
/// build records none (`--upstream-unresolved`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamUnresolved {
    /// Leave it out of the matrices (status `unresolved`), its agents wait, and the plan
    /// fails: no base is planned under a tag that a reachable upstream would change.
    #[default]
    Wait,
    /// Plan it under the hash of the reference alone (the behaviour before records).
    Build,
}

/// Which of the layout's images exist, by full reference (`ImageRef` display form).
/// Offline planning passes an empty set: every image is then `cold`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every image found, with what it says about itself.
    pub present: BTreeMap<String, Presence>,
    /// Upstream references whose digest could not be resolved, with the reason.
    pub unresolved_upstreams: BTreeMap<String, String>,
    /// Of those, the ones the upstream registry answered "not found" (404): a definite
    /// answer, not an outage, so with no recorded digest the reference alone is hashed.
    pub upstreams_not_found: BTreeSet<String>,
    /// Images the registry would not tell about (an error answer), with the reason: they
    /// plan as missing, and the plan's notes name them.
    pub unchecked: BTreeMap<String, String>,
    /// By instance, its previous build (`{instance}-latest`) as read for a missing base or
    /// an unresolved upstream: `None` when there is none. Instances not asked about are
    /// absent (their `why` stays empty).
    pub previous: BTreeMap<String, Option<Previous>>,
    /// What to do with an unresolved upstream that no previous build records.
    pub upstream_unresolved: UpstreamUnresolved,
    /// The builder's previous build (its floating `latest`), as read for a missing builder:
    /// `Some(None)` when there is none; `None` when not asked.
    pub builder_previous: Option<Option<Previous>>,
}

impl Observed {
    /// Whether a base from `from`, hashed with `from_digest`, waits (status `unresolved`):
    /// its upstream did not answer (or refused), no previous build recorded a digest, and
    /// the rule is to wait.
    pub fn waits(&self, from: &str, from_digest: Option<&Digest>) -> bool {
        self.upstream_unresolved == UpstreamUnresolved::Wait
            && from_digest.is_none()
            && self.unresolved_upstreams.contains_key(from)
            && !self.upstreams_not_found.contains(from)
    }

    fn has(&self, image: &ImageRef) -> Option<&Presence> {
        self.present.get(&image.to_string())
    }
}

/// The builder stage of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderPlan {
    /// The builder image the agents take their payload from.
    pub image: ImageRef,
    /// `hit`, `warm` (an earlier builder build, its floating `latest` tag, exists to take
    /// cache from) or `cold`.
    pub status: Status,
    /// The platforms it is built for.
    pub platforms: Vec<Platform>,
    /// With several platforms and no index yet: the platforms whose leg exists already.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub built: Vec<Platform>,
    /// When warm: the warm builder found, per platform (`latest`, or its legs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<ImageRef>,
    /// When missing: the hash inputs that differ from its previous build (the floating
    /// `latest`), `new`, or `unknown (reason)` (see `core::why`). Empty for a hit or when not
    /// asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
}

/// One base image on one platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasePlan {
    /// The instance id.
    pub instance: String,
    /// The platform.
    pub platform: Platform,
    /// The content-addressed base image.
    pub image: ImageRef,
    /// The rendered upstream reference (`BASE_IMAGE`).
    pub from: String,
    /// The upstream digest in the hash, or null when it was not resolved.
    pub from_digest: Option<Digest>,
    /// The rendered build args (`BASE_IMAGE` is added at build time).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// `hit`, `warm` or `cold`.
    pub status: Status,
    /// The warm image to use as cache-from.
    pub cache_from: Option<ImageRef>,
    /// With several platforms and no index yet: whether this platform's leg exists already
    /// (only the index, or other platforms, are missing).
    #[serde(default, skip_serializing_if = "is_false")]
    pub built: bool,
    /// For a missing base: the hash inputs that differ from its previous build, `new`, or
    /// `unknown (reason)` (see `core::why`). Empty for a hit or when not asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One agent image on one platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPlan {
    /// The instance id.
    pub instance: String,
    /// The variant name.
    pub variant: String,
    /// The platform.
    pub platform: Platform,
    /// The agent image.
    pub image: ImageRef,
    /// The base image it is made on.
    pub base: ImageRef,
    /// `hit` or `cold`.
    pub status: Status,
}

/// The three stage matrices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Matrices {
    /// One entry per platform when the builder is missing.
    pub builder: GithubMatrix,
    /// Shards of the instances whose base is missing.
    pub bases: GithubMatrix,
    /// Shards of the instances with a missing agent image.
    pub agents: GithubMatrix,
}

/// Everything the stages need: what exists, what to make, and how to split the work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The builder.
    pub builder: BuilderPlan,
    /// One entry per instance and platform.
    pub bases: Vec<BasePlan>,
    /// One entry per instance, variant and platform.
    pub agents: Vec<AgentPlan>,
    /// The stage matrices (only warm and cold items).
    pub matrices: Matrices,
    /// Things the user should know about this plan (unresolved upstream digests, ...).
    #[serde(default)]
    pub notes: Vec<String>,
    /// What the plan was computed from: a job handed this plan refuses it when its own
    /// checkout says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_from: Option<crate::core::fingerprint::Fingerprint>,
    /// The GitHub Actions run (`GITHUB_RUN_ID`) the plan was made in, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_in_run: Option<String>,
}

impl Plan {
    /// Why the plan fails when some bases could not be planned (their upstream's digest is
    /// unknown and no previous build records one), naming a few; `None` when all are.
    pub fn unresolved_reason(&self) -> Option<String> {
        let mut names: Vec<&str> = self.bases.iter().filter(|b| b.status == Status::Unresolved).map(|b| b.instance.as_str()).collect();
        names.dedup();
        if names.is_empty() {
            return None;
        }
        let shown: Vec<&str> = names.iter().take(5).copied().collect();
        let more = names.len() - shown.len();
        let more = if more > 0 { format!(" and {} more", crate::core::figures::count(more)) } else { String::new() };
        let n = if names.len() == 1 { "1 base".to_owned() } else { format!("{} bases", crate::core::figures::count(names.len())) };
        Some(format!(
            "{n} not planned: the upstream digest could not be resolved and no previous build records one ({}{more}); the plan's notes say which registry. Rerun when it answers, or pass --upstream-unresolved build to hash the reference alone",
            shown.join(", ")
        ))
    }
}

/// Counts of a plan, as the `plan` outputs and the summary give them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Whether the builder must be built.
    pub builder_needed: bool,
    /// Base entries (instance × platform) to build.
    pub bases_missing: usize,
    /// Of those, how many have a warm cache.
    pub bases_warm: usize,
    /// Base entries not planned: upstream unresolved and no recorded digest.
    pub bases_unresolved: usize,
    /// Agent entries (instance × variant × platform) to make.
    pub agents_missing: usize,
    /// Images that exist already: builder platforms, bases and agents.
    pub cache_hits: usize,
    /// Every image entry of the plan.
    pub planned: usize,
}

impl Plan {
    /// The counts behind the outputs and the summary.
    pub fn counts(&self) -> Counts {
        let builder_hits = if self.builder.status == Status::Hit { self.builder.platforms.len() } else { 0 };
        let base_hits = self.bases.iter().filter(|b| b.status == Status::Hit).count();
        let agent_hits = self.agents.iter().filter(|a| a.status == Status::Hit).count();
        Counts {
            builder_needed: self.builder.status.is_missing(),
            bases_missing: self.bases.iter().filter(|b| b.status.is_missing()).count(),
            bases_unresolved: self.bases.iter().filter(|b| b.status == Status::Unresolved).count(),
            bases_warm: self.bases.iter().filter(|b| b.status == Status::Warm).count(),
            agents_missing: self.agents.iter().filter(|a| a.status.is_missing()).count(),
            cache_hits: builder_hits + base_hits + agent_hits,
            planned: self.builder.platforms.len() + self.bases.len() + self.agents.len(),
        }
    }
}

/// Whether an agent found with `presence` was made on `base` (and, where it says so, from
/// `builder`): a rebuilt base makes every agent on it stale.
fn made_from(presence: &Presence, base: &ImageRef, builder: &str) -> bool {
    presence.base_name.as_deref() == Some(base.to_string().as_str()) && presence.builder.as_deref().is_none_or(|b| b == builder)
}

/// A plan made earlier (and handed to a job), brought up to date with what the job saw
/// since: an image found now is a hit. Nothing else changes: the tags, upstream digests and
/// warm caches stay the plan's, so a job makes exactly what the plan named.
pub fn refresh(plan: &mut Plan, observed: &Observed) {
    let platforms = plan.builder.platforms.clone();
    if observed.has(&plan.builder.image).is_some() {
        plan.builder.status = Status::Hit;
        plan.builder.built.clear();
        plan.builder.cache_from.clear();
        plan.builder.why.clear();
    } else if has_legs(&platforms) {
        for p in &platforms {
            if !plan.builder.built.contains(p) && observed.has(&leg(&plan.builder.image, p)).is_some() {
                plan.builder.built.push(p.clone());
            }
        }
    }
    for b in plan.bases.iter_mut() {
        if observed.has(&b.image).is_some() {
            b.status = Status::Hit;
            b.cache_from = None;
            b.built = false;
        } else if has_legs(&platforms) && observed.has(&leg(&b.image, &b.platform)).is_some() {
            b.built = true;
        }
    }
    let builder = plan.builder.image.to_string();
    for a in plan.agents.iter_mut() {
        if observed.has(&a.image).is_some_and(|p| made_from(p, &a.base, &builder)) {
            a.status = Status::Hit;
        }
    }
}

/// Whether a job may use a handed-over plan's statuses as they are, without asking the
/// registry again: only in the first attempt of the run that made the plan (minutes ago,
/// and no job of this run has made the job's own images). A rerun (attempt 2 or more), a
/// plan from another run or one made outside Actions is re-checked, so finished work is
/// skipped.
pub fn fresh_in(plan: &Plan, run_id: Option<&str>, run_attempt: Option<u32>) -> bool {
    run_attempt == Some(1) && run_id.is_some() && plan.made_in_run.as_deref() == run_id
}

/// Decides each image's status from what the registry said, and shards the missing work into
/// matrices sized as `sizing` says (a plain number: at most that many entries per stage), each
/// entry with its share of the run's write budget.
pub fn decide(layout: Layout, observed: &Observed, sizing: impl Into<Sizing>) -> Plan {
    let sizing = sizing.into();
    let max_parallel = sizing.max_parallel;
    // Takes the layout by value and moves its strings into the plan: at 100,000 instances
    // a copy of every name would double the peak memory.
    let Layout { builder, platforms, bases: base_layouts, agents: agent_layouts, runners, base_recipe, builder_inputs } = layout;
    let legs = has_legs(&platforms);
    let (builder_status, builder_cache) = builder_status(&builder, &platforms, observed);
    // Only a missing builder is compared with its previous build.
    let builder_why = if builder_status.is_missing() {
        crate::core::why::builder_why(builder_inputs.as_ref().map_err(String::as_str), observed.builder_previous.as_ref())
    } else {
        Vec::new()
    };
    // With several platforms and no index, the legs found so far.
    let builder_built: Vec<Platform> = if legs && builder_status.is_missing() {
        platforms.iter().filter(|p| observed.has(&leg(&builder, p)).is_some()).cloned().collect()
    } else {
        Vec::new()
    };
    let builder_name = builder.to_string();
    // Each image gets one entry per platform, in platform order. A spec always has at
    // least one platform.
    let Some(first) = platforms.first().cloned() else {
        // The spec parser never yields an empty platform list; nothing to plan without one.
        let builder = BuilderPlan {
            image: builder,
            status: builder_status,
            platforms,
            built: builder_built,
            cache_from: builder_cache,
            why: builder_why,
        };
        return Plan {
            builder,
            bases: vec![],
            agents: vec![],
            matrices: Matrices::default(),
            notes: vec![],
            made_from: None,
            made_in_run: None,
        };
    };

    let mut bases = Vec::with_capacity(base_layouts.len() * platforms.len());
    let mut waiting: BTreeSet<String> = BTreeSet::new();
    for b in base_layouts {
        let hit = observed.has(&b.image).is_some();
        let unresolved = observed.unresolved_upstreams.get(&b.from).filter(|_| b.from_digest.is_none());
        let wait = observed.waits(&b.from, b.from_digest.as_ref());
        if wait {
            waiting.insert(b.instance.clone());
        }
        // Only a missing base is compared with its previous build.
        let why = match (unresolved, observed.previous.get(&b.instance)) {
            _ if hit => Vec::new(),
            (Some(reason), _) if wait => {
                vec![format!("upstream not resolved ({reason}) and no previous build records its digest")]
            }
            (_, None) => Vec::new(),
            (_, Some(previous)) => {
                let current = InputsRecord::of_base(&base_recipe, &b.build_args, &platforms, &b.from, b.from_digest.as_ref());
                crate::core::why::why(&current, previous.as_ref())
            }
        };
        for p in &platforms {
            // A warm cache per platform: `{instance}-latest`, or its leg with several platforms.
            let latest = pushed_as(&b.latest, p, &platforms);
            let (status, cache_from) = if hit {
                (Status::Hit, None)
            } else if wait {
                (Status::Unresolved, None)
            } else if observed.has(&latest).is_some() {
                (Status::Warm, Some(latest))
            } else {
                (Status::Cold, None)
            };
            let built = legs && !hit && observed.has(&leg(&b.image, p)).is_some();
            bases.push(BasePlan {
                instance: b.instance.clone(),
                platform: p.clone(),
                image: b.image.clone(),
                from: b.from.clone(),
                from_digest: b.from_digest.clone(),
                build_args: b.build_args.clone(),
                status,
                cache_from,
                built,
                why: why.clone(),
            });
        }
    }

    let mut agents = Vec::with_capacity(agent_layouts.len() * platforms.len());
    for a in agent_layouts {
        let current = observed.has(&a.image).is_some_and(|p| made_from(p, &a.base, &builder_name));
        let status = if current {
            Status::Hit
        } else if waiting.contains(&a.instance) {
            Status::Unresolved
        } else {
            Status::Cold
        };
        for p in &platforms {
            agents.push(AgentPlan {
                instance: a.instance.clone(),
                variant: a.variant.clone(),
                platform: p.clone(),
                image: a.image.clone(),
                base: a.base.clone(),
                status,
            });
        }
    }
    let base_jobs = leg_jobs(bases.iter().map(|b| (&b.platform, b.instance.as_str(), b.status, b.built)), &first);
    let agent_images = agents.iter().filter(|a| a.status.is_missing()).count();
    let [builder_jobs, base_jobs, agent_jobs] = pace(
        builder_matrix(&builder, &platforms, builder_status, &builder_built, &builder_cache, &runners),
        shard(&missing_by_platform(&platforms, base_jobs.into_iter()), max_parallel, &runners),
        // An agents job writes every platform of its agents (an index), so each agent
        // belongs to one job: the first platform's.
        shard(
            &missing_by_platform(
                &platforms[..1],
                agents.iter().filter(|a| a.platform == first).map(|a| (&a.platform, a.instance.as_str(), a.status)),
            ),
            sizing.agent_jobs(agent_images),
            &runners,
        ),
        &sizing,
    );
    let matrices = Matrices { builder: builder_jobs, bases: base_jobs, agents: agent_jobs };

    let notes = upstream_notes(&bases, &platforms, &observed.unresolved_upstreams)
        .into_iter()
        .chain(
            observed
                .unchecked
                .iter()
                .map(|(image, why)| format!("`{image}`: could not check whether it exists ({why}); planned as missing")),
        )
        .collect();

    let builder = BuilderPlan {
        image: builder,
        status: builder_status,
        platforms,
        built: builder_built,
        cache_from: builder_cache,
        why: builder_why,
    };
    Plan { builder, bases, agents, matrices, notes, made_from: None, made_in_run: None }
}

/// The builder's status: `hit` when its tag exists, else `warm` when an earlier build's
/// floating tag (`latest`, per platform with several) exists to take cache from, with the
/// ones found, else `cold`.
fn builder_status(builder: &ImageRef, platforms: &[Platform], observed: &Observed) -> (Status, Vec<ImageRef>) {
    if observed.has(builder).is_some() {
        return (Status::Hit, Vec::new());
    }
    let warm: Vec<ImageRef> = platforms.iter().map(|p| warm_image(builder, p, platforms)).filter(|w| observed.has(w).is_some()).collect();
    (if warm.is_empty() { Status::Cold } else { Status::Warm }, warm)
}

/// One note per upstream registry host that left digests unresolved (however many bases
/// use it): how many of its bases keep the digest their previous build recorded (their
/// tags unchanged), how many are not planned, and how many are hashed with the reference
/// alone (`--upstream-unresolved build`).
fn upstream_notes(bases: &[BasePlan], platforms: &[Platform], unresolved: &BTreeMap<String, String>) -> Vec<String> {
    #[derive(Default)]
    struct Host {
        reason: String,
        kept: usize,
        waiting: Vec<String>,
        alone: usize,
    }
    if unresolved.is_empty() {
        return Vec::new();
    }
    let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
    for b in bases.iter().filter(|b| platforms.first() == Some(&b.platform)) {
        let Some(reason) = unresolved.get(&b.from) else { continue };
        let host = b.from.parse::<ImageRef>().map(|i| i.registry).unwrap_or_else(|_| b.from.clone());
        let h = hosts.entry(host).or_insert_with(|| Host { reason: reason.clone(), ..Host::default() });
        if b.status == Status::Unresolved {
            h.waiting.push(b.instance.clone());
        } else if b.from_digest.is_some() {
            h.kept += 1;
        } else {
            h.alone += 1;
        }
    }
    let bases_n = |n: usize| if n == 1 { "1 base".to_owned() } else { format!("{} bases", crate::core::figures::count(n)) };
    hosts
        .into_iter()
        .map(|(host, h)| {
            let total = h.kept + h.waiting.len() + h.alone;
            let mut parts = vec![format!("upstream registry `{host}`: the upstream digest of {} not resolved ({})", bases_n(total), h.reason)];
            if h.kept > 0 {
                parts.push(format!("{} keep the digest their previous build recorded (tags unchanged)", bases_n(h.kept)));
            }
            if !h.waiting.is_empty() {
                const SHOWN: usize = 5;
                let more = h.waiting.len().saturating_sub(SHOWN);
                let names: Vec<&str> = h.waiting.iter().take(SHOWN).map(String::as_str).collect();
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                parts.push(format!(
                    "{} not planned, as no previous build records a digest ({}{more}): they and their agents wait; rerun when `{host}` answers, or pass `--upstream-unresolved build` to hash the reference alone",
                    bases_n(h.waiting.len()),
                    names.join(", ")
                ));
            }
            if h.alone > 0 {
                parts.push(format!("{} hashed with the reference alone (`--upstream-unresolved build`)", bases_n(h.alone)));
            }
            parts.join("; ")
        })
        .collect()
}

fn builder_matrix(
    builder: &ImageRef,
    platforms: &[Platform],
    status: Status,
    built: &[Platform],
    warm: &[ImageRef],
    runners: &BTreeMap<Platform, String>,
) -> GithubMatrix {
    if !status.is_missing() {
        return GithubMatrix::default();
    }
    let tag = builder.tag.as_ref().map(Tag::to_string).unwrap_or_default();
    let mut todo: Vec<&Platform> = platforms.iter().filter(|p| !built.contains(p)).collect();
    // Every leg exists and only the index is missing: one job writes it.
    if todo.is_empty() {
        todo.extend(platforms.first());
    }
    let work: Vec<Work> = todo.into_iter().map(|p| (p.clone(), vec![tag.clone()])).collect();
    let mut matrix = shard(&work, work.len(), runners);
    // Each job says whether its platform has an earlier build to take cache from.
    for entry in &mut matrix.include {
        let warm = platforms.iter().any(|p| p.to_string() == entry.platform && warm.contains(&warm_image(builder, p, platforms)));
        entry.status = Some(if warm { Status::Warm } else { Status::Cold }.as_str().to_owned());
    }
    matrix
}

/// The (platform, instance, status) of each base leg a job must work on: the missing legs,
/// and for an instance whose legs all exist but whose index does not, its `first`
/// platform's (that job writes the index).
fn leg_jobs<'a>(
    entries: impl Iterator<Item = (&'a Platform, &'a str, Status, bool)>,
    first: &Platform,
) -> Vec<(&'a Platform, &'a str, Status)> {
    let entries: Vec<_> = entries.collect();
    let mut lacking: BTreeSet<&str> = BTreeSet::new();
    for (_, instance, status, built) in &entries {
        if status.is_missing() && !built {
            lacking.insert(instance);
        }
    }
    entries
        .into_iter()
        .filter(|(p, instance, status, built)| status.is_missing() && (!built || (!lacking.contains(instance) && *p == first)))
        .map(|(p, instance, status, _)| (p, instance, status))
        .collect()
}

/// Per platform, in platform order, the distinct instances (in spec order) with a missing
/// entry.
fn missing_by_platform<'a>(
    platforms: &[Platform],
    entries: impl Iterator<Item = (&'a Platform, &'a str, Status)>,
) -> Vec<(Platform, Vec<String>)> {
    let mut per: Vec<(Platform, Vec<String>, BTreeSet<&'a str>)> =
        platforms.iter().map(|p| (p.clone(), Vec::new(), BTreeSet::new())).collect();
    for (platform, instance, status) in entries {
        if !status.is_missing() {
            continue;
        }
        if let Some((_, items, seen)) = per.iter_mut().find(|(p, _, _)| p == platform)
            && seen.insert(instance)
        {
            items.push(instance.to_owned());
        }
    }
    per.into_iter().map(|(p, items, _)| (p, items)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::content_hash::{InputFile, sha256_hex};

    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    fn img(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    fn recipe(dockerfile: &[u8]) -> Recipe {
        Recipe {
            dockerfile_sha256: sha256_hex(dockerfile),
            target: None,
            inputs: vec![InputFile { path: "x".into(), sha256: sha256_hex(b"x") }],
        }
    }

    fn small_layout(instances: &[&str], variants: &[&str], version: &str, dockerfile: &[u8]) -> Layout {
        let spec = crate::core::spec::tests::spec_with(instances, variants);
        layout(
            &spec,
            LayoutInputs {
                builder_version: &tag(version),
                base_recipe: &recipe(dockerfile),
                upstream_digests: &BTreeMap::new(),
                recorded_digests: &BTreeMap::new(),
                builder_inputs: Err("not read"),
            },
        )
    }

    #[test]
    fn names_follow_the_tag_rules() {
        let l = small_layout(&["a__b-1"], &["v1"], "1.0", b"FROM x");
        assert_eq!(l.builder.to_string(), "reg.example/ns/builder:1.0");
        let b = &l.bases[0];
        assert!(b.image.to_string().starts_with("reg.example/ns/base:a__b-1-"), "{}", b.image);
        assert_eq!(b.image.tag.as_ref().unwrap().as_str().len(), "a__b-1-".len() + 16);
        assert_eq!(b.latest.to_string(), "reg.example/ns/base:a__b-1-latest");
        assert_eq!(b.from, "upstream.example/x.a_1776_b-1:latest");
        assert_eq!(l.agents[0].image.to_string(), "reg.example/ns/agent:1.0-a__b-1-v1");
        assert_eq!(l.agents[0].base, b.image);
    }

    #[test]
    fn builder_version_changes_no_base_tag_and_dockerfile_changes_every_one() {
        let a = small_layout(&["i1", "i2"], &["v"], "1", b"FROM x");
        let b = small_layout(&["i1", "i2"], &["v"], "2", b"FROM x");
        let c = small_layout(&["i1", "i2"], &["v"], "1", b"FROM x\nRUN y");
        for i in 0..2 {
            assert_eq!(a.bases[i].image, b.bases[i].image);
            assert_ne!(a.agents[i].image, b.agents[i].image);
            assert_ne!(a.bases[i].image, c.bases[i].image);
        }
    }

    #[test]
    fn upstream_digest_moves_the_base_tag() {
        let spec = crate::core::spec::tests::spec_with(&["i"], &["v"]);
        let r = recipe(b"FROM x");
        let none = BTreeMap::new();
        let with = BTreeMap::from([("upstream.example/x.i:latest".to_owned(), Digest::sha256_of(b"1"))]);
        let v = tag("1");
        let a = layout(
            &spec,
            LayoutInputs {
                builder_version: &v,
                base_recipe: &r,
                upstream_digests: &none,
                recorded_digests: &none,
                builder_inputs: Err("not read"),
            },
        );
        let b = layout(
            &spec,
            LayoutInputs {
                builder_version: &v,
                base_recipe: &r,
                upstream_digests: &with,
                recorded_digests: &none,
                builder_inputs: Err("not read"),
            },
        );
        assert_ne!(a.bases[0].image, b.bases[0].image);
        assert_eq!(b.bases[0].from_digest, Some(Digest::sha256_of(b"1")));
    }

    fn present(refs: &[(&ImageRef, Presence)]) -> Observed {
        Observed { present: refs.iter().map(|(r, p)| (r.to_string(), p.clone())).collect(), ..Observed::default() }
    }

    #[test]
    fn statuses_table() {
        let l = small_layout(&["hit", "warm", "cold"], &["v"], "1", b"FROM x");
        let base = |i: usize| &l.bases[i];
        let good = |i: usize| Presence { base_name: Some(l.agents[i].base.to_string()), builder: Some(l.builder.to_string()) };
        let observed = present(&[
            (&l.builder, Presence::default()),
            (&base(0).image, Presence::default()),
            (&base(1).latest, Presence::default()),
            (&l.agents[0].image, good(0)),
            // An agent made on another base is stale.
            (&l.agents[1].image, Presence { base_name: Some("reg.example/ns/base:old".into()), builder: None }),
            // An agent made from another builder is stale.
            (
                &l.agents[2].image,
                Presence { base_name: Some(l.agents[2].base.to_string()), builder: Some("reg.example/ns/builder:0".into()) },
            ),
        ]);
        let plan = decide(l.clone(), &observed, 1);
        assert_eq!(plan.builder.status, Status::Hit);
        let statuses: Vec<_> = plan.bases.iter().map(|b| b.status).collect();
        assert_eq!(statuses, [Status::Hit, Status::Warm, Status::Cold]);
        assert_eq!(plan.bases[1].cache_from, Some(img("reg.example/ns/base:warm-latest")));
        assert_eq!(plan.bases[0].cache_from, None);
        let statuses: Vec<_> = plan.agents.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [Status::Hit, Status::Cold, Status::Cold]);
        assert!(plan.matrices.builder.include.is_empty());
        assert_eq!(plan.matrices.bases.include.len(), 1);
        assert_eq!(plan.matrices.bases.include[0].items, "warm cold");
        assert_eq!(plan.matrices.agents.include[0].items, "warm cold");
        let c = plan.counts();
        assert_eq!((c.builder_needed, c.bases_missing, c.bases_warm, c.agents_missing, c.cache_hits, c.planned), (false, 2, 1, 2, 3, 7));
    }

    #[test]
    fn offline_plan_is_all_cold() {
        let l = small_layout(&["a", "b"], &["v1", "v2"], "1", b"FROM x");
        let plan = decide(l, &Observed::default(), 1);
        assert_eq!(plan.builder.status, Status::Cold);
        assert!(plan.bases.iter().chain(plan.bases.iter()).all(|b| b.status == Status::Cold));
        assert!(plan.agents.iter().all(|a| a.status == Status::Cold));
        assert_eq!(plan.matrices.builder.include.len(), 1);
        assert_eq!(plan.matrices.builder.include[0].items, "1");
        assert_eq!(plan.matrices.agents.include[0].items, "a b", "an agents item is an instance, once for all its variants");
    }

    fn layout_with(instances: &[&str], recorded: &BTreeMap<String, Digest>) -> Layout {
        let spec = crate::core::spec::tests::spec_with(instances, &["v"]);
        let r = recipe(b"FROM x");
        layout(
            &spec,
            LayoutInputs {
                builder_version: &tag("1"),
                base_recipe: &r,
                upstream_digests: &BTreeMap::new(),
                recorded_digests: recorded,
                builder_inputs: Err("not read"),
            },
        )
    }

    /// An unreachable upstream: a base whose previous build recorded a digest keeps its tag
    /// (the same as when the upstream answered), one without is not planned, its agents
    /// wait; one note for the host, with the counts.
    #[test]
    fn an_unresolved_upstream_takes_the_recorded_digest_or_waits() {
        let spec = crate::core::spec::tests::spec_with(&["kept", "lost"], &["v"]);
        let d = Digest::sha256_of(b"up");
        let reachable = BTreeMap::from([(spec.bases.from.render(&Vars { instance: Some("kept"), ..Vars::default() }), d.clone())]);
        let r = recipe(b"FROM x");
        let none = BTreeMap::new();
        let before = layout(
            &spec,
            LayoutInputs {
                builder_version: &tag("1"),
                base_recipe: &r,
                upstream_digests: &reachable,
                recorded_digests: &none,
                builder_inputs: Err("not read"),
            },
        );
        let l = layout_with(&["kept", "lost"], &BTreeMap::from([("kept".to_owned(), d.clone())]));
        assert_eq!(l.bases[0].image, before.bases[0].image, "the recorded digest gives the same tag");
        let unresolved: BTreeMap<String, String> = l.bases.iter().map(|b| (b.from.clone(), "connection refused".to_owned())).collect();
        let mut observed = present(&[(&l.bases[0].image, Presence::default())]);
        observed.unresolved_upstreams = unresolved;
        let plan = decide(l.clone(), &observed, 64);
        let statuses: Vec<_> = plan.bases.iter().map(|b| b.status).collect();
        assert_eq!(statuses, [Status::Hit, Status::Unresolved]);
        assert_eq!(plan.agents[1].status, Status::Unresolved, "its agents wait");
        assert!(plan.matrices.bases.include.is_empty(), "{:?}", plan.matrices.bases);
        assert_eq!(plan.matrices.agents.include[0].items, "kept");
        let c = plan.counts();
        assert_eq!((c.bases_missing, c.bases_unresolved, c.agents_missing), (0, 1, 1));
        assert_eq!(plan.notes.len(), 1, "one note per host: {:?}", plan.notes);
        assert!(plan.unresolved_reason().is_some_and(|r| r.starts_with("1 base not planned") && r.contains("(lost)")));
        let n = &plan.notes[0];
        assert!(n.contains("`upstream.example`") && n.contains("of 2 bases") && n.contains("1 base keep") && n.contains("(lost)"), "{n}");
        assert!(plan.bases[1].why[0].starts_with("upstream not resolved (connection refused)"), "{:?}", plan.bases[1].why);

        // A 404 is an answer, not an outage: the reference alone, nothing guessed.
        let mut not_found = observed.clone();
        not_found.upstreams_not_found = not_found.unresolved_upstreams.keys().cloned().collect();
        let plan = decide(l.clone(), &not_found, 64);
        assert_eq!(plan.bases[1].status, Status::Cold);

        // `--upstream-unresolved build`: planned under the reference alone, as before.
        observed.upstream_unresolved = UpstreamUnresolved::Build;
        let plan = decide(l, &observed, 64);
        assert_eq!(plan.bases[1].status, Status::Cold);
        assert_eq!(plan.matrices.bases.include[0].items, "lost");
        assert_eq!(plan.unresolved_reason(), None);
        assert!(plan.notes[0].contains("1 base hashed with the reference alone"), "{:?}", plan.notes);
    }

    #[test]
    fn a_missing_base_says_why_and_a_hit_nothing() {
        let l = layout_with(&["hit", "moved", "new", "old"], &BTreeMap::new());
        let r = recipe(b"FROM x");
        let platforms: Vec<Platform> = vec!["linux/amd64".parse().unwrap()];
        let record = |b: &BaseLayout, digest: Option<&Digest>| InputsRecord::of_base(&r, &b.build_args, &platforms, &b.from, digest);
        let mut observed = present(&[(&l.bases[0].image, Presence::default()), (&l.bases[1].latest, Presence::default())]);
        let moved = Previous::Record(Box::new(record(&l.bases[1], Some(&Digest::sha256_of(b"old")))));
        observed.previous = BTreeMap::from([
            ("hit".to_owned(), Some(moved.clone())),
            ("moved".to_owned(), Some(moved)),
            ("new".to_owned(), None),
            ("old".to_owned(), Some(Previous::NoRecord("no label".into()))),
        ]);
        let plan = decide(l, &observed, 64);
        assert!(plan.bases[0].why.is_empty(), "a hit is not compared");
        assert!(plan.bases[1].why[0].starts_with("upstream digest not resolved (was sha256:"), "{:?}", plan.bases[1].why);
        assert_eq!(plan.bases[2].why, ["new"]);
        assert_eq!(plan.bases[3].why, ["unknown (its previous build: no label)"]);
    }

    #[test]
    fn a_missing_builder_says_why_and_a_hit_nothing() {
        let mut l = small_layout(&["a"], &["v"], "2", b"FROM x");
        let platforms = l.platforms.clone();
        let builder_record = |df: &[u8]| InputsRecord::of_builder(&recipe(df), &BTreeMap::new(), &platforms, None);
        l.builder_inputs = Ok(builder_record(b"FROM y"));
        let latest = warm_image(&l.builder, &l.platforms[0], &l.platforms);
        let mut observed = present(&[(&latest, Presence::default())]);
        assert!(decide(l.clone(), &observed, 64).builder.why.is_empty(), "not asked: nothing said");
        observed.builder_previous = Some(Some(Previous::Record(Box::new(builder_record(b"FROM x")))));
        assert_eq!(decide(l.clone(), &observed, 64).builder.why, ["dockerfile"]);
        let mut unreadable = l.clone();
        unreadable.builder_inputs = Err("reading `agent/Dockerfile`: no such file".into());
        assert!(decide(unreadable, &observed, 64).builder.why[0].contains("no such file"));
        observed.builder_previous = Some(None);
        assert_eq!(decide(l.clone(), &observed, 64).builder.why, ["new"]);
        observed.present.insert(l.builder.to_string(), Presence::default());
        assert!(decide(l, &observed, 64).builder.why.is_empty(), "a hit is not compared");
    }

    #[test]
    fn a_builder_with_an_earlier_build_is_warm_per_platform() {
        let l = small_layout(&["a"], &["v"], "2", b"FROM x");
        let latest = warm_image(&l.builder, &l.platforms[0], &l.platforms);
        let plan = decide(l.clone(), &present(&[(&latest, Presence::default())]), 64);
        assert_eq!((plan.builder.status, plan.builder.cache_from.as_slice()), (Status::Warm, std::slice::from_ref(&latest)));
        assert_eq!(plan.matrices.builder.include.len(), 1, "a warm builder is still work");
        assert!(plan.counts().builder_needed);
        assert_eq!(decide(l.clone(), &Observed::default(), 64).builder.status, Status::Cold);
        let both = present(&[(&latest, Presence::default()), (&l.builder, Presence::default())]);
        let hit = decide(l.clone(), &both, 64);
        assert_eq!((hit.builder.status, hit.builder.cache_from.len()), (Status::Hit, 0));
        let mut warm = plan.clone();
        refresh(&mut warm, &present(&[(&l.builder, Presence::default())]));
        assert_eq!((warm.builder.status, warm.builder.cache_from.len()), (Status::Hit, 0), "built since: a hit, no cache to take");

        let two = two_platform_layout(&["a"]);
        let arm = two.platforms[1].clone();
        let arm_latest = warm_image(&two.builder, &arm, &two.platforms);
        assert_eq!(arm_latest.to_string(), "reg.example/ns/builder:latest-linux-arm64");
        let plan = decide(two, &present(&[(&arm_latest, Presence::default())]), 64);
        assert_eq!((plan.builder.status, plan.builder.cache_from), (Status::Warm, vec![arm_latest]), "the platform with one");
        let statuses: Vec<Option<&str>> = plan.matrices.builder.include.iter().map(|e| e.status.as_deref()).collect();
        assert_eq!(statuses, [Some("cold"), Some("warm")], "each leg's job says whether its platform is warm");
    }

    #[test]
    fn a_handed_over_plan_learns_what_was_made_since_and_nothing_else() {
        let l = small_layout(&["a", "b"], &["v"], "1", b"FROM x");
        let mut plan = decide(l.clone(), &Observed::default(), 64);
        let before = plan.clone();
        let mut seen = Observed::default();
        seen.present.insert(plan.bases[0].image.to_string(), Presence::default());
        let good = Presence { base_name: Some(plan.agents[0].base.to_string()), builder: None };
        seen.present.insert(plan.agents[0].image.to_string(), good);
        let stale = Presence { base_name: Some("other/base:1".into()), builder: None };
        seen.present.insert(plan.agents[1].image.to_string(), stale);
        refresh(&mut plan, &seen);
        assert_eq!(plan.bases[0].status, Status::Hit);
        assert_eq!(plan.bases[1].status, before.bases[1].status);
        assert_eq!(plan.agents[0].status, Status::Hit);
        assert_eq!(plan.agents[1].status, Status::Cold, "made on another base: stale");
        assert_eq!(plan.bases.iter().map(|b| &b.image).collect::<Vec<_>>(), before.bases.iter().map(|b| &b.image).collect::<Vec<_>>());
    }

    fn two_platform_layout(instances: &[&str]) -> Layout {
        let mut spec = crate::core::spec::tests::spec_with(instances, &["v"]);
        spec.platforms = vec!["linux/amd64".parse().unwrap(), "linux/arm64".parse().unwrap()];
        layout(
            &spec,
            LayoutInputs {
                builder_version: &tag("1"),
                base_recipe: &recipe(b"FROM x"),
                upstream_digests: &BTreeMap::new(),
                recorded_digests: &BTreeMap::new(),
                builder_inputs: Err("not read"),
            },
        )
    }

    fn jobs(m: &GithubMatrix) -> Vec<(String, String)> {
        m.include.iter().map(|e| (e.platform.clone(), e.items.clone())).collect()
    }

    #[test]
    fn with_two_platforms_a_plan_asks_only_for_the_missing_legs() {
        let l = two_platform_layout(&["done", "half", "legs", "none"]);
        let (amd, arm): (Platform, Platform) = ("linux/amd64".parse().unwrap(), "linux/arm64".parse().unwrap());
        let b = |i: usize| &l.bases[i];
        let observed = present(&[
            (&b(0).image, Presence::default()),
            // `half`: the amd64 leg is pushed, arm64's is not; arm64 has a warm cache.
            (&leg(&b(1).image, &amd), Presence::default()),
            (&leg(&b(1).latest, &arm), Presence::default()),
            // `legs`: both legs pushed, the index is not.
            (&leg(&b(2).image, &amd), Presence::default()),
            (&leg(&b(2).image, &arm), Presence::default()),
            // The builder's arm64 leg.
            (&leg(&l.builder, &arm), Presence::default()),
        ]);
        let plan = decide(l.clone(), &observed, 2);
        let row = |i: usize| (plan.bases[i].status, plan.bases[i].built, plan.bases[i].cache_from.as_ref().map(ToString::to_string));
        assert_eq!(row(0), (Status::Hit, false, None));
        assert_eq!(row(1), (Status::Hit, false, None));
        assert_eq!(row(2), (Status::Cold, true, None), "a leg's warm cache is its platform's `-latest` leg");
        assert_eq!(row(3), (Status::Warm, false, Some("reg.example/ns/base:half-latest-linux-arm64".into())));
        assert_eq!((row(4).1, row(5).1), (true, true));
        assert_eq!(
            jobs(&plan.matrices.bases),
            [("linux/amd64".into(), "legs none".into()), ("linux/arm64".into(), "half none".into())],
            "missing legs only; an instance whose legs are all there gets one job (its first platform's) to write the index"
        );
        assert_eq!(plan.builder.built, std::slice::from_ref(&arm));
        assert_eq!(jobs(&plan.matrices.builder), [("linux/amd64".into(), "1".into())], "the builder's missing leg only");
        assert_eq!(
            jobs(&plan.matrices.agents),
            [("linux/amd64".into(), "done half".into()), ("linux/amd64".into(), "legs none".into())],
            "an agents job writes every platform: one job per instance"
        );

        // Both builder legs there, no index: one job writes it.
        let both = present(&[(&leg(&l.builder, &amd), Presence::default()), (&leg(&l.builder, &arm), Presence::default())]);
        let only_index = decide(l.clone(), &both, 64);
        assert_eq!(jobs(&only_index.matrices.builder), [("linux/amd64".into(), "1".into())]);
        assert!(only_index.counts().builder_needed, "the workflow's gate opens for the job that writes the index");
        assert_eq!(plan.counts().bases_missing, 6, "a base with built legs but no index still gates its job in");

        // A job learns of legs pushed since the plan, and of the index.
        let mut plan = decide(l.clone(), &Observed::default(), 64);
        let since = present(&[(&leg(&b(3).image, &arm), Presence::default()), (&b(0).image, Presence::default())]);
        refresh(&mut plan, &since);
        assert_eq!((plan.bases[6].built, plan.bases[7].built), (false, true));
        assert_eq!((plan.bases[0].status, plan.bases[1].status), (Status::Hit, Status::Hit));
    }

    #[test]
    fn agents_written_at_the_registry_get_one_job_per_thousand_images_with_the_budget_to_themselves() {
        let ids: Vec<String> = (0..500).map(|i| format!("i{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let l = small_layout(&ids, &["v1", "v2"], "1", b"FROM x");
        let ghcr = Sizing { max_parallel: 64, agents_per_job: Some(1000), write_budget: Some(1800) };
        let plan = decide(l.clone(), &Observed::default(), ghcr);
        let m = &plan.matrices;
        assert_eq!(
            (m.builder.include.len(), m.bases.include.len(), m.agents.include.len()),
            (1, 64, 1),
            "a 500 x 2 commit: one agents job"
        );
        assert_eq!(m.agents.include[0].items.split(' ').count(), 500);
        assert_eq!(m.agents.writes_per_second(), Some(30.0), "1,800 a minute for the one agents job");
        assert_eq!(m.bases.writes_per_second(), Some(0.46), "65 builder and bases jobs at once share 30 a second");

        let smaller = decide(l.clone(), &Observed::default(), Sizing { agents_per_job: Some(300), ..ghcr });
        assert_eq!(smaller.matrices.agents.include.len(), 4, "jobs.agents-per-job: 300");
        assert_eq!(smaller.matrices.agents.writes_per_second(), Some(7.5));
        let dockerfile = decide(l, &Observed::default(), Sizing { agents_per_job: None, ..ghcr });
        assert_eq!(dockerfile.matrices.agents.include.len(), 64, "the dockerfile method keeps max-parallel");
    }

    #[test]
    fn only_the_first_attempt_of_the_run_that_made_the_plan_trusts_it() {
        let mut plan = decide(small_layout(&["a"], &["v"], "1", b"FROM x"), &Observed::default(), 64);
        assert!(!fresh_in(&plan, Some("42"), Some(1)), "a plan made outside Actions");
        plan.made_in_run = Some("42".into());
        assert!(fresh_in(&plan, Some("42"), Some(1)));
        assert!(!fresh_in(&plan, Some("42"), Some(2)), "a rerun re-checks");
        assert!(!fresh_in(&plan, Some("43"), Some(1)), "another run's plan");
        assert!(!fresh_in(&plan, None, None), "outside Actions");
    }

    #[test]
    fn an_image_the_registry_would_not_tell_about_is_missing_and_noted() {
        let l = small_layout(&["a"], &["v"], "1", b"FROM x");
        let agent = l.agents[0].image.to_string();
        let observed = Observed { unchecked: BTreeMap::from([(agent.clone(), "500 Internal Server Error".into())]), ..Observed::default() };
        let plan = decide(l, &observed, 64);
        assert_eq!(plan.agents[0].status, Status::Cold);
        assert!(plan.notes.iter().any(|n| n.contains(&agent) && n.contains("500")), "{:?}", plan.notes);
    }
}
