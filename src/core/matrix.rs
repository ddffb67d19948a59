//! GitHub Actions matrices: `{"include": [...]}` with one entry per job, the sharding that
//! splits a stage's missing items into balanced jobs, how many jobs each stage gets (sized to
//! its bottleneck: runners for builds, the registry's write budget for agents written at the
//! registry), and each job's share of the run's write budget.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::platform::Platform;
use crate::core::spec::{Method, Spec};

/// A matrix as `strategy.matrix: ${{ fromJSON(...) }}` takes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GithubMatrix {
    /// One entry per job.
    pub include: Vec<MatrixEntry>,
}

/// One job of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixEntry {
    /// 1-based number of this job within the stage.
    pub shard: usize,
    /// How many jobs the stage has.
    pub shards: usize,
    /// The platform this job works on.
    pub platform: String,
    /// The `runs-on` label of a runner of that platform (`runs-on: ${{ matrix.runner }}`).
    pub runner: String,
    /// The job's items (instance ids or the builder version), space-separated.
    pub items: String,
    /// The job's share of the run's write budget, in writes a second (hundredths kept): what
    /// it paces its registry writes at unless `--max-writes-per-second` says otherwise. Absent
    /// when the run has no write budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_per_second: Option<f64>,
    /// The builder's job only: `warm` or `cold` (whether an earlier build gives it cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl GithubMatrix {
    /// The stage's share of the write budget per job (every entry of a stage has the same).
    pub fn writes_per_second(&self) -> Option<f64> {
        self.include.iter().filter_map(|e| e.writes_per_second).reduce(f64::min)
    }

    /// The same matrix with every entry given `share` writes a second.
    fn paced(mut self, share: Option<f64>) -> GithubMatrix {
        for e in &mut self.include {
            e.writes_per_second = share;
        }
        self
    }
}

/// How many jobs the stages may fan out into, and the registry budget they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// Most entries per stage (`jobs.max-parallel`).
    pub max_parallel: usize,
    /// Agent images per agents job, when agents are written at the registry (`append`):
    /// that stage is bound by the registry's write budget, which more jobs only split.
    /// `None`: agents get up to `max_parallel` jobs, as builds do (`dockerfile`).
    pub agents_per_job: Option<usize>,
    /// Writes a minute the registry allows the whole run; `None`: no run-wide budget.
    pub write_budget: Option<u32>,
}

impl Sizing {
    /// The sizing a spec asks for.
    pub fn of(spec: &Spec) -> Sizing {
        Sizing {
            max_parallel: usize::from(spec.max_parallel),
            agents_per_job: (spec.agents.method == Method::Append).then_some(spec.agents_per_job as usize),
            write_budget: spec.write_budget,
        }
    }

    /// How many jobs the agents stage gets for `images` agent images to make.
    pub fn agent_jobs(&self, images: usize) -> usize {
        match self.agents_per_job {
            None => self.max_parallel,
            Some(per_job) => images.div_ceil(per_job.max(1)).clamp(1, self.max_parallel.max(1)),
        }
    }

    /// Each of `jobs` jobs running at the same time gets an equal share of the budget, in
    /// writes a second rounded down to hundredths (so the shares never add up to more than the
    /// budget, and the plan's JSON stays short), at least 0.01.
    pub fn share(&self, jobs: usize) -> Option<f64> {
        let budget = self.write_budget?;
        let hundredths = u64::from(budget) * 100 / 60 / (jobs.max(1) as u64);
        Some(hundredths.max(1) as f64 / 100.0)
    }
}

/// The writes a second a job paces at: `--max-writes-per-second` when given, else its share of
/// the run's write budget (from its matrix entry), else `default`.
pub(crate) fn job_rate(flag: Option<f64>, share: Option<f64>, default: f64) -> f64 {
    flag.or(share).unwrap_or(default)
}

/// A plain `max_parallel`: every stage up to that many jobs, no write budget.
impl From<usize> for Sizing {
    fn from(max_parallel: usize) -> Sizing {
        Sizing { max_parallel, agents_per_job: None, write_budget: None }
    }
}

/// Gives each job its share of the run's write budget. The builder and bases jobs run at the
/// same time and share it; the agents jobs run after both and have it to themselves.
pub(crate) fn pace(builder: GithubMatrix, bases: GithubMatrix, agents: GithubMatrix, sizing: &Sizing) -> [GithubMatrix; 3] {
    let building = sizing.share(builder.include.len() + bases.include.len());
    let assembling = sizing.share(agents.include.len());
    [builder.paced(building), bases.paced(building), agents.paced(assembling)]
}

/// One platform's items, in order.
pub(crate) type Work = (Platform, Vec<String>);

/// Splits each platform's items into contiguous, balanced shards, at most `max_jobs` in
/// all (never fewer than one per platform with work). Shards are allocated to platforms in
/// proportion to their item counts (largest remainder, ties to the earlier platform);
/// within a platform, shard sizes differ by at most one. Deterministic for equal input.
pub(crate) fn shard(work: &[Work], max_jobs: usize, runners: &BTreeMap<Platform, String>) -> GithubMatrix {
    let busy: Vec<&Work> = work.iter().filter(|(_, items)| !items.is_empty()).collect();
    if busy.is_empty() {
        return GithubMatrix::default();
    }
    let total: usize = busy.iter().map(|(_, items)| items.len()).sum();
    let jobs = max_jobs.max(busy.len()).min(total);
    let counts: Vec<usize> = busy.iter().map(|(_, items)| items.len()).collect();
    let per_platform = allocate(&counts, jobs);

    let shards: usize = per_platform.iter().sum();
    let mut include = Vec::with_capacity(shards);
    for ((platform, items), n) in busy.iter().zip(per_platform) {
        let base = items.len() / n;
        let extra = items.len() % n;
        let mut start = 0;
        for k in 0..n {
            let len = base + usize::from(k < extra);
            include.push(MatrixEntry {
                shard: include.len() + 1,
                shards,
                platform: platform.to_string(),
                runner: runners.get(platform).cloned().unwrap_or_else(|| "ubuntu-latest".to_owned()),
                items: items[start..start + len].join(" "),
                writes_per_second: None,
                status: None,
            });
            start += len;
        }
    }
    GithubMatrix { include }
}

/// Splits `jobs` among groups of `counts` items: each group gets at least one job and at
/// most one job per item; the rest in proportion (largest remainder).
fn allocate(counts: &[usize], jobs: usize) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    let spare = jobs - counts.len();
    let mut out: Vec<usize> = counts.iter().map(|&c| 1 + (spare * c / total).min(c - 1)).collect();
    let mut left = jobs - out.iter().sum::<usize>();
    // Remainders, biggest first; ties keep platform order.
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((spare * counts[i]) % total));
    while left > 0 {
        let mut gave = false;
        for &i in &order {
            if left > 0 && out[i] < counts[i] {
                out[i] += 1;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("i{i}")).collect()
    }

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn check_invariants(work: &[Work], max: usize, m: &GithubMatrix) {
        let total: usize = work.iter().map(|(_, i)| i.len()).sum();
        assert!(m.include.len() <= max.max(work.iter().filter(|w| !w.1.is_empty()).count()));
        assert!(m.include.len() <= total);
        // Every item in exactly one shard of its platform.
        for (platform, list) in work {
            let mine: Vec<&MatrixEntry> = m.include.iter().filter(|e| e.platform == platform.to_string()).collect();
            let got: Vec<&str> = mine.iter().flat_map(|e| e.items.split(' ')).filter(|s| !s.is_empty()).collect();
            assert_eq!(got, list.iter().map(String::as_str).collect::<Vec<_>>());
            let sizes: Vec<usize> = mine.iter().map(|e| e.items.split(' ').count()).collect();
            if let (Some(lo), Some(hi)) = (sizes.iter().min(), sizes.iter().max()) {
                assert!(hi - lo <= 1, "balanced: {sizes:?}");
            }
        }
        for (k, e) in m.include.iter().enumerate() {
            assert_eq!(e.shard, k + 1);
            assert_eq!(e.shards, m.include.len());
        }
    }

    #[test]
    fn shards_table() {
        let amd = p("linux/amd64");
        let arm = p("linux/arm64");
        let cases: Vec<(Vec<Work>, usize, usize)> = vec![
            (vec![(amd.clone(), items(500))], 64, 64),
            (vec![(amd.clone(), items(500))], 256, 256),
            (vec![(amd.clone(), items(10))], 64, 10),
            (vec![(amd.clone(), items(1))], 1, 1),
            (vec![(amd.clone(), items(7))], 3, 3),
            (vec![(amd.clone(), items(100_000))], 256, 256),
            (vec![(amd.clone(), items(500)), (arm.clone(), items(500))], 64, 64),
            (vec![(amd.clone(), items(1000)), (arm.clone(), items(1))], 10, 10),
            (vec![(amd.clone(), vec![]), (arm.clone(), items(3))], 64, 3),
            (vec![(amd.clone(), vec![])], 64, 0),
        ];
        for (work, max, want) in cases {
            let m = shard(&work, max, &BTreeMap::new());
            assert_eq!(m.include.len(), want, "max {max}");
            check_invariants(&work, max, &m);
        }
    }

    #[test]
    fn proportional_allocation() {
        assert_eq!(allocate(&[500, 500], 64), vec![32, 32]);
        assert_eq!(allocate(&[1000, 1], 10), vec![9, 1]);
        assert_eq!(allocate(&[3, 3, 3], 9), vec![3, 3, 3]);
        assert_eq!(allocate(&[2, 100], 50), vec![2, 48]);
    }

    #[test]
    fn the_agents_stage_is_sized_to_the_registry_not_to_runners() {
        let append = Sizing { max_parallel: 64, agents_per_job: Some(1000), write_budget: None };
        let cases = [(1000, 1), (1001, 2), (1, 1), (0, 1), (200_000, 64), (2000, 2)];
        for (images, jobs) in cases {
            assert_eq!(append.agent_jobs(images), jobs, "{images} agent images");
        }
        let dockerfile = Sizing::from(64);
        assert_eq!(dockerfile.agent_jobs(1000), 64, "the dockerfile method builds on runners: max-parallel as the bases");
    }

    #[test]
    fn each_job_gets_its_share_of_the_run_budget() {
        let ghcr = Sizing { max_parallel: 64, agents_per_job: Some(1000), write_budget: Some(1800) };
        assert_eq!(ghcr.share(1), Some(30.0));
        assert_eq!(ghcr.share(4), Some(7.5));
        assert_eq!(ghcr.share(65), Some(0.46), "rounded down: 65 jobs together stay within 30 a second");
        assert_eq!(Sizing { write_budget: Some(1), ..ghcr }.share(256), Some(0.01), "never nothing");
        assert_eq!(ghcr.share(0), Some(30.0));
        assert_eq!(Sizing::from(64).share(1), None, "no budget: no share");

        let amd = p("linux/amd64");
        let m = |n: usize| shard(&[(amd.clone(), items(n))], n, &BTreeMap::new());
        let [builder, bases, agents] = pace(m(1), m(3), m(2), &Sizing { write_budget: Some(2400), ..ghcr });
        let shares = |g: &GithubMatrix| g.include.iter().map(|e| e.writes_per_second).collect::<Vec<_>>();
        assert_eq!(shares(&builder), [Some(10.0)], "builder and bases run at once: 40 a second over 4 jobs");
        assert_eq!(shares(&bases), [Some(10.0); 3]);
        assert_eq!(shares(&agents), [Some(20.0); 2], "agents run after both");
        assert_eq!((bases.writes_per_second(), GithubMatrix::default().writes_per_second()), (Some(10.0), None));
        let json = serde_json::to_value(m(1)).unwrap();
        assert!(json["include"][0].get("writes_per_second").is_none(), "absent without a budget: {json}");
        let json = serde_json::to_string(&pace(m(1), m(64), m(1), &ghcr)[1].include[0]).unwrap();
        assert!(json.ends_with(r#""writes_per_second":0.46}"#), "hundredths, as short as they print: {json}");
    }

    #[test]
    fn the_flag_overrides_the_share_and_the_share_the_default() {
        let cases = [
            ((Some(5.0), Some(30.0)), 5.0),
            ((Some(0.0), Some(30.0)), 0.0),
            ((None, Some(0.46)), 0.46),
            ((None, None), 25.0),
            ((Some(9.0), None), 9.0),
        ];
        for ((flag, share), want) in cases {
            assert_eq!(job_rate(flag, share, 25.0), want, "{flag:?} {share:?}");
        }
    }

    #[test]
    fn deterministic_and_in_order() {
        let work = vec![(p("linux/amd64"), items(10))];
        let m = shard(&work, 3, &BTreeMap::new());
        assert_eq!(m, shard(&work, 3, &BTreeMap::new()));
        let got: Vec<&str> = m.include.iter().map(|e| e.items.as_str()).collect();
        assert_eq!(got, ["i0 i1 i2 i3", "i4 i5 i6", "i7 i8 i9"]);
    }
}
