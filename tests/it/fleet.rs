//! One agent commit as the workflow runs it, smaller: the agents stage as separate `assemble`
//! processes started at once (a matrix runs in parallel), through one front that allows a
//! fixed number of writes a second to all of them together and answers 429 with
//! `Retry-After: 1` beyond (GHCR's 2,000 a minute, shared by every job of a run, scaled
//! down), on a real registry. Whatever the shape, no agent image may be lost.

use std::path::Path;
use std::process::Child;

use serde_json::{Value, json};

use crate::support::rate_front::RateFront;
use crate::support::*;

/// Writes a second the front lets through, to every process together.
const RATE: f64 = 20.0;
/// Instances of the commit (two variants each: 48 agent images).
const INSTANCES: usize = 24;

/// A spec of `INSTANCES` instances × 2 variants at `front`, with these `jobs:` keys.
fn spec(front: &str, jobs: &str) -> tempfile::TempDir {
    let ids: Vec<String> = (0..INSTANCES).map(|i| format!("proj__proj-{}", 100 + i)).collect();
    let text = format!(
        "registry: {front}/t\nbuilder: {{ repository: builder, version: \"v1\" }}\nbases:\n  repository: base\n  context: base\n  from: \"{front}/up/{{instance|replace(\\\"__\\\", \\\"_1776_\\\")}}:1\"\n  instances: [{}]\nagents:\n  repository: agent\n  variants:\n    - {{ name: a, env: {{ V: a }} }}\n    - {{ name: b, env: {{ V: b }} }}\njobs: {{ {jobs} }}\n",
        ids.join(", ")
    );
    spec_dir(&[
        ("Dockerfile", "FROM scratch AS payload\n"),
        ("base/Dockerfile", "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n"),
        ("split-build.yml", &text),
    ])
}

/// Every base of `plan` (each with a layer of its own) and the builder, pushed straight to `reg`.
fn push_bases_and_builder(reg: &Registry, plan: &Value) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = seed::client(8);
        let none = json!({});
        for b in plan["bases"].as_array().unwrap() {
            let file = format!("base-of-{}", b["instance"].as_str().unwrap());
            seed::push_image(&client, &reg.host, b["image"].as_str().unwrap(), &file, &none, &[]).await;
        }
        seed::push_image(&client, &reg.host, plan["builder"]["image"].as_str().unwrap(), "agent/agent-server", &none, &[]).await;
    });
}

fn plan(dir: &Path, report: &str) -> Value {
    let out = SplitBuild::new(dir).args(["plan", "--plan-file", "plan.json", "--summary", "/dev/null", "--report", report]).output();
    assert!(out.status.success(), "plan: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starts one `assemble` process per entry of the plan's agents matrix, all at once, and waits
/// for them: each one's exit status and report.
fn agents_stage(dir: &Path, plan: &Value, extra: &[&str]) -> Vec<(bool, Value)> {
    let jobs: Vec<(usize, Child)> = plan["matrices"]["agents"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let shard = e["shard"].as_u64().unwrap() as usize;
            let child = SplitBuild::new(dir)
                .args(["assemble", "--plan", "plan.json", "--summary", "/dev/null", "--items", e["items"].as_str().unwrap()])
                .arg("--report")
                .arg(format!("r-{shard}.json"))
                .args(extra)
                // One Actions run's first attempt, as the workflow runs the stage.
                .env("GITHUB_RUN_ID", "4242")
                .env("GITHUB_RUN_ATTEMPT", "1")
                .command()
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("log-{shard}.txt"))).unwrap())
                .spawn()
                .unwrap();
            (shard, child)
        })
        .collect();
    jobs.into_iter()
        .map(|(shard, mut child)| {
            let ok = child.wait().unwrap().success();
            let report = std::fs::read_to_string(dir.join(format!("r-{shard}.json")))
                .map(|t| serde_json::from_str(&t).unwrap())
                .unwrap_or(Value::Null);
            if !ok {
                let log = std::fs::read_to_string(dir.join(format!("log-{shard}.txt"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                eprintln!("job {shard} failed: {}", tail.into_iter().rev().collect::<Vec<_>>().join("\n  "));
            }
            (ok, report)
        })
        .collect()
}

/// Every agent of the plan is in the registry (asked straight, not through the front, by
/// skopeo) and every job's report says it made its agents; returns how many jobs failed.
fn nothing_lost(reg: &Registry, front: &str, plan: &Value, jobs: &[(bool, Value)]) -> usize {
    let assembled = jobs
        .iter()
        .flat_map(|(_, r)| r["images"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["stage"] == "agents" && i["status"] == "assembled")
        .count();
    let agents = plan["agents"].as_array().unwrap();
    let missing: Vec<&str> = agents
        .iter()
        .map(|a| a["image"].as_str().unwrap())
        .filter(|image| reg.inspect(image.trim_start_matches(&format!("{front}/")), "--raw").is_none())
        .collect();
    let failed = jobs.iter().filter(|(ok, _)| !ok).count();
    assert!(
        missing.is_empty() && assembled == agents.len() && failed == 0,
        "{} of {} agent images missing, {assembled} reported made, {failed} of {} jobs failed: {missing:?}",
        missing.len(),
        agents.len(),
        jobs.len()
    );
    failed
}

/// Today's shape: many jobs, each pacing at its own rate (25 writes a second, the old
/// default), together far beyond what the registry allows the run. A 429 must slow a job
/// down, never lose an image.
#[test]
fn many_assemble_processes_through_one_rate_limited_front_lose_no_image() {
    let reg = Registry::start();
    // Half the rate of the other test: the 64 jobs against 33 writes a second, smaller.
    let rate = RATE / 2.0;
    let front = RateFront::start(&reg.host, rate);
    // One agents job per instance: 24 processes at once, as a 64-shard matrix of a 100 x 2
    // commit does (two or three agent images a job).
    let spec = spec(&front.host, "max-parallel: 24, agents-per-job: 2, write-budget: 0");
    let dir = spec.path();
    let p = plan(dir, "plan-report.json");
    push_bases_and_builder(&reg, &p);
    assert_eq!(p["matrices"]["agents"]["include"].as_array().unwrap().len(), 24);
    let (_, writes_before, _) = front.counts.get();
    let started = std::time::Instant::now();
    let jobs = agents_stage(dir, &p, &["--max-writes-per-second", "25"]);
    let (_, writes, refused) = front.counts.get();
    eprintln!(
        "24 jobs at 25 writes/s each through a front allowing {rate}/s: {:.1} s, {} writes, {refused} answered 429",
        started.elapsed().as_secs_f64(),
        writes - writes_before
    );
    nothing_lost(&reg, &front.host, &p, &jobs);
}

/// The new shape: the plan sizes the agents matrix to the registry and gives each job its
/// share of the run's budget (here 90% of what the front allows, over 6 jobs). Nothing is
/// lost, few writes meet a 429, and the plan's report counts its own registry requests.
#[test]
fn jobs_pacing_at_their_share_of_the_run_budget_lose_no_image_and_meet_few_429s() {
    let reg = Registry::start();
    let front = RateFront::start(&reg.host, RATE);
    let budget = (RATE * 60.0 * 0.9) as u32;
    let spec = spec(&front.host, &format!("max-parallel: 64, agents-per-job: 8, write-budget: {budget}"));
    let dir = spec.path();
    let p = plan(dir, "plan-report.json");
    push_bases_and_builder(&reg, &p);

    // The plan's report counts the plan's questions to the registry (they were 0 before).
    let (before, _, _) = front.counts.get();
    let p = plan(dir, "plan-report.json");
    let (after, _, _) = front.counts.get();
    let report = json_file(dir, "plan-report.json");
    assert_eq!(report["registry"]["requests"].as_u64(), Some(after - before), "the plan report counts every request of the plan");
    assert!(after - before > INSTANCES as u64, "the plan asked about every base and agent");

    let entries = p["matrices"]["agents"]["include"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "48 agent images, 8 a job");
    assert!(
        entries.iter().all(|e| e["writes_per_second"].as_f64() == Some(3.0)),
        "{budget} a minute over 6 jobs: 3 a second each: {entries:?}"
    );
    let (_, writes_before, refused_before) = front.counts.get();
    let started = std::time::Instant::now();
    let jobs = agents_stage(dir, &p, &[]);
    let wall = started.elapsed().as_secs_f64();
    let (_, writes, refused) = front.counts.get();
    let (writes, refused) = (writes - writes_before, refused - refused_before);
    eprintln!("6 jobs at their share (3/s each) through a front allowing {RATE}/s: {wall:.1} s, {writes} writes, {refused} answered 429");
    nothing_lost(&reg, &front.host, &p, &jobs);
    assert!(refused * 20 <= writes, "{refused} of {writes} writes met a 429 (at most 5%)");
}
