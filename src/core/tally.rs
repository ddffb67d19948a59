//! The accounting of a run: every image the plan named, what the job reports say became of
//! it (made, hit, failed) or that nothing did (*not attempted*, with the reason: the job that
//! did not run, the base or builder it waited for), per stage in pipeline order, with the
//! jobs and their wall-clock spans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::core::plan::Plan;
use crate::core::report::{ImageRecord, Outcome, Report, Stage};

/// Why images were not attempted when the job the plan gave them wrote no report.
pub(crate) const JOB_SILENT: &str = "their job wrote no report (it did not run)";

/// The stages in pipeline order.
pub(crate) const STAGES: [Stage; 3] = [Stage::Builder, Stage::Bases, Stage::Agents];

/// What became of one image in the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fate {
    /// Made by a job (built or assembled).
    Made,
    /// Existed already.
    Hit,
    /// A job tried and failed.
    Failed,
    /// Planned, and no job report says anything of it.
    NotAttempted,
}

/// A matrix job: its stage and shard `i/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId {
    /// The stage the job works on.
    pub stage: Stage,
    /// 1-based shard.
    pub shard: usize,
    /// Shards of the stage.
    pub shards: usize,
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.stage, self.shard, self.shards)
    }
}

/// Which matrix job of the plan holds an image: by stage, platform and item (the instance
/// id; the builder's items are its version, so the builder goes by platform alone).
#[derive(Debug, Default)]
pub(crate) struct JobIndex {
    by_item: HashMap<(Stage, String, String), JobId>,
    planned: BTreeMap<Stage, usize>,
}

impl JobIndex {
    /// The index of a plan's matrices.
    pub(crate) fn of(plan: &Plan) -> JobIndex {
        let mut index = JobIndex::default();
        let m = &plan.matrices;
        for (stage, matrix) in [(Stage::Builder, &m.builder), (Stage::Bases, &m.bases), (Stage::Agents, &m.agents)] {
            index.planned.insert(stage, matrix.include.len());
            for e in &matrix.include {
                let job = JobId { stage, shard: e.shard, shards: e.shards };
                if stage == Stage::Builder {
                    index.by_item.insert((stage, e.platform.clone(), String::new()), job);
                    continue;
                }
                for item in crate::core::list_words(&e.items) {
                    index.by_item.insert((stage, e.platform.clone(), item.to_owned()), job);
                    if stage == Stage::Agents {
                        // An agents job makes every platform of its instances.
                        index.by_item.entry((stage, String::new(), item.to_owned())).or_insert(job);
                    }
                }
            }
        }
        index
    }

    /// The job that holds an image of `stage` on `platform` (its first, for a record of
    /// several), if the plan gave it to one. An agents job makes every platform of its
    /// instances, so agents are found by instance alone too.
    pub(crate) fn job_of(&self, stage: Stage, platform: &str, instance: Option<&str>) -> Option<JobId> {
        // A record of several platforms (`linux/amd64,linux/arm64`) was made by one job.
        let platform = platform.split(',').next().unwrap_or_default().trim();
        let item = if stage == Stage::Builder { String::new() } else { instance.unwrap_or_default().to_owned() };
        self.by_item.get(&(stage, platform.to_owned(), item.clone())).or_else(|| self.by_item.get(&(stage, String::new(), item))).copied()
    }

    /// How many jobs the plan gave `stage`.
    pub(crate) fn planned_jobs(&self, stage: Stage) -> usize {
        self.planned.get(&stage).copied().unwrap_or(0)
    }
}

/// One stage's line of the accounting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageTally {
    /// Images the plan named (`None` without a plan).
    pub planned: Option<usize>,
    /// Images found made already.
    pub hit: usize,
    /// Images a job made.
    pub made: usize,
    /// Images that failed and were not made by another job.
    pub failed: usize,
    /// Images the plan named that no report mentions.
    pub not_attempted: usize,
    /// Why they were not attempted, with how many each (most first).
    pub not_attempted_why: Vec<(String, usize)>,
    /// Job reports of this stage.
    pub jobs: usize,
    /// Jobs the plan gave this stage (`None` without a plan).
    pub jobs_planned: Option<usize>,
    /// Job reports of this stage with a failed image.
    pub jobs_failed: usize,
    /// The plan's jobs of this stage that wrote no report.
    pub silent_jobs: Vec<JobId>,
    /// First start to last end of this stage's jobs, in seconds.
    pub wall: Option<f64>,
}

impl StageTally {
    /// Every image of the stage, whatever became of it.
    pub fn images(&self) -> usize {
        self.hit + self.made + self.failed + self.not_attempted
    }
}

/// The accounting of a run (or of one job).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Builder, bases, agents.
    pub stages: [StageTally; 3],
    /// Whether a plan was given (else nothing counts as not attempted).
    pub planned: bool,
    /// Job reports merged.
    pub jobs: usize,
    /// Of them, the ones with a failed image.
    pub jobs_failed: usize,
    /// First start to last end over every job, in seconds.
    pub wall: Option<f64>,
    /// The jobs' own times added up (what the run cost in runner time).
    pub job_seconds: f64,
}

impl Tally {
    /// A sum over the stages.
    pub fn sum(&self, f: impl Fn(&StageTally) -> usize) -> usize {
        self.stages.iter().map(f).sum()
    }

    /// Images that are not there at the end: failed or not attempted.
    pub fn missing(&self) -> usize {
        self.sum(|s| s.failed + s.not_attempted)
    }

    /// The line of one stage.
    pub fn stage(&self, stage: Stage) -> &StageTally {
        &self.stages[stage_index(stage)]
    }
}

fn stage_index(stage: Stage) -> usize {
    match stage {
        Stage::Builder => 0,
        Stage::Bases => 1,
        Stage::Agents => 2,
    }
}

/// The RFC 3339 time as seconds since the Unix epoch.
pub(crate) fn epoch_secs(rfc3339: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
}

/// A report's wall-clock span (start, end) in seconds since the epoch, when it recorded one.
pub(crate) fn span(report: &Report) -> Option<(f64, f64)> {
    let start = epoch_secs(report.started_at.as_deref()?)?;
    let end = epoch_secs(report.ended_at.as_deref()?)?;
    Some((start, end.max(start)))
}

/// The one stage all of a report's images belong to (`None` for a `run` report or an empty one).
pub(crate) fn stage_of(report: &Report) -> Option<Stage> {
    let first = report.images.first()?.stage;
    report.images.iter().all(|i| i.stage == first).then_some(first)
}

/// The matrix job a report came from, when the plan says (a one-stage report whose first
/// image the plan gave to a job).
pub(crate) fn job_of_report(report: &Report, index: &JobIndex) -> Option<JobId> {
    let stage = stage_of(report)?;
    let first = report.images.first()?;
    index.job_of(stage, &first.platform, first.instance.as_deref())
}

fn fate_of(outcomes: &[Outcome]) -> Fate {
    if outcomes.iter().any(|o| matches!(o, Outcome::Built | Outcome::Assembled)) {
        Fate::Made
    } else if outcomes.contains(&Outcome::Hit) {
        Fate::Hit
    } else if outcomes.contains(&Outcome::Failed) {
        Fate::Failed
    } else {
        Fate::NotAttempted
    }
}

type Key = (Stage, String, String);

/// The plan's entries a record stands for: one per platform it names (an agents job writes
/// one record for an index over every platform, `linux/amd64,linux/arm64`).
fn keys(r: &ImageRecord) -> impl Iterator<Item = Key> + '_ {
    r.platform.split(',').map(|p| (r.stage, r.image.clone(), p.trim().to_owned()))
}

fn key(r: &ImageRecord) -> Key {
    (r.stage, r.image.clone(), r.platform.clone())
}

/// Accounts for every image of `plan` (when given) and of the reports.
pub(crate) fn tally(reports: &[Report], plan: Option<&Plan>) -> Tally {
    let index = plan.map(JobIndex::of).unwrap_or_default();
    let mut outcomes: BTreeMap<Key, Vec<Outcome>> = BTreeMap::new();
    // The instance of each planned image (the base an agent waits for).
    let mut instances: HashMap<Key, Option<String>> = HashMap::new();
    for r in reports.iter().flat_map(|r| r.images.iter()) {
        for k in keys(r) {
            outcomes.entry(k).or_default().push(r.status);
        }
    }
    let mut t = Tally { planned: plan.is_some(), jobs: reports.len(), ..Tally::default() };
    if let Some(plan) = plan {
        for s in STAGES {
            t.stages[stage_index(s)].planned = Some(0);
            t.stages[stage_index(s)].jobs_planned = Some(index.planned_jobs(s));
        }
        for r in Report::of_plan(plan).images {
            if let Some(p) = t.stages[stage_index(r.stage)].planned.as_mut() {
                *p += 1;
            }
            let entry = outcomes.entry(key(&r)).or_default();
            // What the plan found made is a hit unless a job says otherwise; a planned miss
            // no job mentions stays without an outcome: not attempted.
            if r.status == Outcome::Hit && entry.is_empty() {
                entry.push(Outcome::Hit);
            }
            instances.insert(key(&r), r.instance);
        }
    }

    // Which jobs reported, and the spans.
    let mut reported: BTreeSet<JobId> = BTreeSet::new();
    let mut spans: BTreeMap<Option<Stage>, (f64, f64)> = BTreeMap::new();
    for r in reports {
        t.job_seconds += r.seconds;
        let failed = r.failures() > 0;
        t.jobs_failed += usize::from(failed);
        if let Some(job) = job_of_report(r, &index) {
            reported.insert(job);
        }
        if let Some(stage) = stage_of(r) {
            let st = &mut t.stages[stage_index(stage)];
            st.jobs += 1;
            st.jobs_failed += usize::from(failed);
        }
        if let Some((a, b)) = span(r) {
            for k in [stage_of(r), None] {
                let e = spans.entry(k).or_insert((a, b));
                *e = (e.0.min(a), e.1.max(b));
            }
        }
    }
    for (k, (a, b)) in &spans {
        match k {
            Some(stage) => t.stages[stage_index(*stage)].wall = Some(b - a),
            None => t.wall = Some(b - a),
        }
    }

    // Fates, and the reasons for what was not attempted.
    let fate: BTreeMap<&Key, Fate> = outcomes.iter().map(|(k, o)| (k, fate_of(o))).collect();
    let builder_fate = fate.iter().filter(|((s, _, _), _)| *s == Stage::Builder).map(|(_, f)| *f).max();
    let base_fate: HashMap<(&str, &str), Fate> = fate
        .iter()
        .filter(|((s, _, _), _)| *s == Stage::Bases)
        .filter_map(|(k, f)| Some(((instances.get(*k)?.as_deref()?, k.2.as_str()), *f)))
        .collect();
    let mut why: [BTreeMap<String, usize>; 3] = Default::default();
    for (k, f) in &fate {
        let st = &mut t.stages[stage_index(k.0)];
        match f {
            Fate::Made => st.made += 1,
            Fate::Hit => st.hit += 1,
            Fate::Failed => st.failed += 1,
            Fate::NotAttempted => {
                st.not_attempted += 1;
                let instance = instances.get(*k).and_then(|i| i.as_deref());
                let reason = not_attempted_why(k, instance, builder_fate, &base_fate, &index, &reported);
                *why[stage_index(k.0)].entry(reason).or_default() += 1;
            }
        }
    }
    for (i, w) in why.into_iter().enumerate() {
        let mut w: Vec<(String, usize)> = w.into_iter().collect();
        w.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        t.stages[i].not_attempted_why = w;
    }
    if plan.is_some() {
        for s in STAGES {
            let planned = index.planned_jobs(s);
            let shards = (1..=planned).map(|shard| JobId { stage: s, shard, shards: planned });
            t.stages[stage_index(s)].silent_jobs = shards.filter(|j| !reported.contains(j)).collect();
        }
    }
    t
}

fn not_attempted_why(
    k: &Key,
    instance: Option<&str>,
    builder: Option<Fate>,
    bases: &HashMap<(&str, &str), Fate>,
    index: &JobIndex,
    reported: &BTreeSet<JobId>,
) -> String {
    if k.0 == Stage::Agents {
        match builder {
            Some(Fate::Failed) => return "the builder failed".into(),
            Some(Fate::NotAttempted) => return "the builder was not made".into(),
            _ => {}
        }
        match instance.and_then(|i| bases.get(&(i, k.2.as_str()))) {
            Some(Fate::Failed) => return "their base failed".into(),
            Some(Fate::NotAttempted) => return "their base was not made".into(),
            _ => {}
        }
    }
    match index.job_of(k.0, &k.2, instance) {
        Some(job) if !reported.contains(&job) => JOB_SILENT.into(),
        Some(job) => format!("job {job} did not report them"),
        None => "no job was planned for them".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::matrix::{GithubMatrix, MatrixEntry};
    use crate::core::plan::{AgentPlan, BasePlan, BuilderPlan, Matrices, Status};

    fn entry(shard: usize, shards: usize, items: &str) -> MatrixEntry {
        MatrixEntry {
            shard,
            shards,
            platform: "linux/amd64".into(),
            runner: "ubuntu-latest".into(),
            items: items.into(),
            writes_per_second: None,
            status: None,
        }
    }

    /// Builder cold; bases a, b, c cold in two jobs; agents a-v, b-v, c-v cold in two jobs.
    fn plan() -> Plan {
        let img = |t: &str| format!("r.io/o/x:{t}").parse().unwrap();
        let platform = "linux/amd64".parse().unwrap();
        let base = |i: &str| BasePlan {
            instance: i.into(),
            platform: "linux/amd64".parse().unwrap(),
            image: img(&format!("base-{i}")),
            from: "up".into(),
            from_digest: None,
            build_args: Default::default(),
            status: Status::Cold,
            cache_from: None,
            built: false,
            why: vec![],
        };
        let agent = |i: &str| AgentPlan {
            instance: i.into(),
            variant: "v".into(),
            platform: "linux/amd64".parse().unwrap(),
            image: img(&format!("agent-{i}")),
            base: img(&format!("base-{i}")),
            status: Status::Cold,
        };
        Plan {
            builder: BuilderPlan {
                image: img("builder"),
                status: Status::Cold,
                platforms: vec![platform],
                built: vec![],
                cache_from: vec![],
                why: vec![],
            },
            bases: ["a", "b", "c"].map(base).to_vec(),
            agents: ["a", "b", "c"].map(agent).to_vec(),
            matrices: Matrices {
                builder: GithubMatrix { include: vec![entry(1, 1, "builder")] },
                bases: GithubMatrix { include: vec![entry(1, 2, "a b"), entry(2, 2, "c")] },
                agents: GithubMatrix { include: vec![entry(1, 2, "a b"), entry(2, 2, "c")] },
            },
            notes: vec![],
            made_from: None,
            made_in_run: None,
        }
    }

    fn job(records: &[(Stage, &str, Option<&str>, Outcome)], span: (&str, &str)) -> Report {
        let images = records
            .iter()
            .map(|(stage, tag, instance, status)| {
                ImageRecord::new(*stage, &format!("r.io/o/x:{tag}"), "linux/amd64", *status).of(*instance, None)
            })
            .collect();
        Report { images, started_at: Some(span.0.into()), ended_at: Some(span.1.into()), ..Report::default() }
    }

    #[test]
    fn every_planned_image_has_a_fate_and_what_was_not_attempted_a_reason() {
        let plan = plan();
        let builder = job(&[(Stage::Builder, "builder", None, Outcome::Built)], ("2026-12-01T09:00:00Z", "2026-12-01T09:03:00Z"));
        // Bases job 1 made a and failed b; bases job 2 never ran; agents never ran.
        let bases = job(
            &[(Stage::Bases, "base-a", Some("a"), Outcome::Built), (Stage::Bases, "base-b", Some("b"), Outcome::Failed)],
            ("2026-12-01T09:00:10Z", "2026-12-01T09:10:10Z"),
        );
        let t = tally(&[builder, bases], Some(&plan));
        let b = t.stage(Stage::Bases);
        assert_eq!((b.planned, b.made, b.failed, b.not_attempted), (Some(3), 1, 1, 1));
        assert_eq!(b.not_attempted_why, [(JOB_SILENT.to_owned(), 1)]);
        assert_eq!(b.silent_jobs, [JobId { stage: Stage::Bases, shard: 2, shards: 2 }]);
        assert_eq!((b.jobs, b.jobs_planned, b.jobs_failed), (1, Some(2), 1));
        assert_eq!(b.wall, Some(600.0));
        let a = t.stage(Stage::Agents);
        assert_eq!(a.not_attempted, 3);
        let why: Vec<(&str, usize)> = a.not_attempted_why.iter().map(|(w, n)| (w.as_str(), *n)).collect();
        assert_eq!(why, [("their base failed", 1), ("their base was not made", 1), (JOB_SILENT, 1)]);
        assert_eq!(a.silent_jobs.len(), 2);
        assert_eq!(t.missing(), 5);
        assert_eq!((t.jobs, t.jobs_failed), (2, 1));
        assert_eq!(t.wall, Some(610.0), "first start to last end");
    }

    #[test]
    fn a_later_success_makes_up_for_a_failure_and_the_plan_hits_count() {
        let mut plan = plan();
        plan.builder.status = Status::Hit;
        let first = job(&[(Stage::Agents, "agent-a", Some("a"), Outcome::Failed)], ("2026-12-01T09:00:00Z", "2026-12-01T09:00:01Z"));
        let again = job(&[(Stage::Agents, "agent-a", Some("a"), Outcome::Assembled)], ("2026-12-01T09:01:00Z", "2026-12-01T09:01:01Z"));
        let t = tally(&[first, again], Some(&plan));
        assert_eq!(t.stage(Stage::Agents).made, 1);
        assert_eq!(t.stage(Stage::Agents).failed, 0);
        assert_eq!(t.stage(Stage::Builder).hit, 1, "the plan found it made");
        let no_plan = tally(&[], None);
        assert_eq!((no_plan.missing(), no_plan.planned), (0, false));
    }

    #[test]
    fn a_record_of_several_platforms_stands_for_each_of_them() {
        let mut plan = plan();
        plan.builder.status = Status::Hit;
        let arm = |mut e: AgentPlan| {
            e.platform = "linux/arm64".parse().unwrap();
            e
        };
        let extra: Vec<AgentPlan> = plan.agents.iter().cloned().map(arm).collect();
        plan.agents.extend(extra);
        let mut index = job(&[(Stage::Agents, "agent-a", Some("a"), Outcome::Assembled)], ("2026-12-01T09:00:00Z", "2026-12-01T09:00:01Z"));
        index.images[0].platform = "linux/amd64,linux/arm64".into();
        let t = tally(&[index], Some(&plan));
        let a = t.stage(Stage::Agents);
        assert_eq!((a.planned, a.made, a.not_attempted), (Some(6), 2, 4));
        assert_eq!(a.jobs, 1);
        assert!(a.silent_jobs.iter().all(|j| j.shard == 2), "job 1 reported: {:?}", a.silent_jobs);
    }

    #[test]
    fn jobs_are_found_by_their_items() {
        let index = JobIndex::of(&plan());
        assert_eq!(index.job_of(Stage::Bases, "linux/amd64", Some("c")).map(|j| j.to_string()).as_deref(), Some("bases 2/2"));
        assert_eq!(index.job_of(Stage::Agents, "linux/arm64", Some("a")).map(|j| j.shard), Some(1), "agents by instance alone");
        assert_eq!(index.job_of(Stage::Builder, "linux/amd64", None).map(|j| j.to_string()).as_deref(), Some("builder 1/1"));
        assert_eq!(index.job_of(Stage::Bases, "linux/amd64", Some("zz")), None);
        assert_eq!(epoch_secs("1970-01-01T00:01:00Z"), Some(60.0));
    }
}
