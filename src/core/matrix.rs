//! GitHub Actions matrices: `{"include": [...]}` with one entry per job, and the sharding
//! that splits a stage's missing items into at most `max-parallel` balanced jobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::platform::Platform;

/// A matrix as `strategy.matrix: ${{ fromJSON(...) }}` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubMatrix {
    /// One entry per job.
    pub include: Vec<MatrixEntry>,
}

/// One job of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// One platform's items, in order.
pub type Work = (Platform, Vec<String>);

/// Splits each platform's items into contiguous, balanced shards, at most `max_jobs` in
/// all (never fewer than one per platform with work). Shards are allocated to platforms in
/// proportion to their item counts (largest remainder, ties to the earlier platform);
/// within a platform, shard sizes differ by at most one. Deterministic for equal input.
pub fn shard(work: &[Work], max_jobs: usize, runners: &BTreeMap<Platform, String>) -> GithubMatrix {
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
    fn deterministic_and_in_order() {
        let work = vec![(p("linux/amd64"), items(10))];
        let m = shard(&work, 3, &BTreeMap::new());
        assert_eq!(m, shard(&work, 3, &BTreeMap::new()));
        let got: Vec<&str> = m.include.iter().map(|e| e.items.as_str()).collect();
        assert_eq!(got, ["i0 i1 i2 i3", "i4 i5 i6", "i7 i8 i9"]);
    }
}
