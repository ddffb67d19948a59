//! The plan travels: `plan --plan-file` hands the plan to each job, a job with `--plan`
//! asks the registry only about what it is about to make, refuses a plan made from other
//! inputs, and builds exactly what the plan named even when an upstream moved since.

use std::path::Path;

use serde_json::Value;

use crate::assemble::{alpha_beta_spec, fixtures, push_upstreams};
use crate::support::*;

fn ok(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = split_build(dir, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn registry_requests(dir: &Path, report: &str) -> (u64, u64) {
    let r = json_file(dir, report);
    (r["registry"]["requests"].as_u64().unwrap(), r["registry"]["writes"].as_u64().unwrap())
}

#[test]
fn a_one_instance_shard_with_the_plan_asks_the_registry_about_its_instance_only() {
    let reg = Registry::start();
    let (spec, _) = fixtures(&reg);
    let dir = spec.path();
    ok(dir, &["plan", "--plan-file", "plan.json"]);

    ok(dir, &["assemble", "--plan", "plan.json", "--items", "proj__proj-1", "--report", "with-plan.json"]);
    let (requests, writes) = registry_requests(dir, "with-plan.json");
    let made = json_file(dir, "with-plan.json")["images"].as_array().unwrap().iter().filter(|i| i["status"] == "assembled").count();
    assert_eq!(made, 2, "both variants of the one instance");
    eprintln!("one-instance shard with --plan: {requests} requests, {writes} writes for 2 agents");
    assert!(requests <= 20, "{requests} requests");

    // A rerun skips finished work: it re-checks its two agents and writes nothing.
    ok(dir, &["assemble", "--plan", "plan.json", "--items", "proj__proj-1", "--report", "rerun.json"]);
    let (requests, writes) = registry_requests(dir, "rerun.json");
    assert_eq!(writes, 0, "a rerun writes nothing");
    assert!(requests <= 4, "{requests} requests to find its two agents made");

    // Without the plan a shard asks about its own instance only, too.
    ok(dir, &["assemble", "--items", "proj__proj-2", "--report", "no-plan.json"]);
    let (requests, _) = registry_requests(dir, "no-plan.json");
    eprintln!("one-instance shard without --plan: {requests} requests");
    assert!(requests <= 24, "{requests} requests");

    // The report merges the jobs' reports and counts the hits no job touched.
    let out = split_build(dir, &["report", "--plan", "plan.json", "with-plan.json"]);
    let summary = String::from_utf8_lossy(&out.stdout);
    // The plan found the builder and the three bases made; the job made two agents.
    assert!(summary.contains("| bases | 3 | 3 |") && summary.contains("| builder | 1 | 1 |"), "the plan's untouched hits count: {summary}");
    // The other two instances' agents were planned to the stage's one job (agents written at
    // the registry: one job per 1,000 images), run here for one instance only: not attempted,
    // and the report says so in its exit code.
    assert!(summary.contains("| agents | 6 | 0 | 2 | 0 | 4 | 1 |"), "{summary}");
    assert_eq!(out.status.code(), Some(1), "{summary}");
}

/// Runs split-build as a job of GitHub Actions run `run`, attempt `attempt`.
fn in_run(dir: &Path, run: &str, attempt: &str, args: &[&str]) -> std::process::Output {
    let out =
        SplitBuild::new(dir).args(args).env("GITHUB_ACTIONS", "true").env("GITHUB_RUN_ID", run).env("GITHUB_RUN_ATTEMPT", attempt).output();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn the_first_attempt_of_the_plans_run_trusts_it_and_a_rerun_checks_again() {
    let reg = Registry::start();
    let (spec, _) = fixtures(&reg);
    let dir = spec.path();
    in_run(dir, "777", "1", &["plan", "--plan-file", "plan.json"]);
    assert_eq!(json_file(dir, "plan.json")["made_in_run"], "777");
    let shard = ["assemble", "--plan", "plan.json", "--items", "proj__proj-1", "--report"];

    // Without Actions (or in another run) the job asks about its two agents first.
    ok(dir, &[&shard[..], &["checked.json"]].concat());
    let (checked, _) = registry_requests(dir, "checked.json");
    // The first attempt of the run that made the plan: no such question (the next shard's
    // images are as missing as the plan says).
    let out = in_run(dir, "777", "1", &["assemble", "--plan", "plan.json", "--items", "proj__proj-2", "--report", "fresh.json"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("statuses stand"), "{}", String::from_utf8_lossy(&out.stderr));
    let (fresh, _) = registry_requests(dir, "fresh.json");
    eprintln!("one-instance shard with --plan: {checked} requests re-checking, {fresh} in the plan's first attempt");
    assert_eq!(fresh + 2, checked, "two agents, one question each, saved");

    // A rerun (attempt 2) and a job of another run check again: finished work is skipped.
    for (run, attempt) in [("777", "2"), ("778", "1")] {
        in_run(dir, run, attempt, &[&shard[..], &["rerun.json"]].concat());
        let (requests, writes) = registry_requests(dir, "rerun.json");
        assert_eq!(writes, 0, "run {run} attempt {attempt} rewrote finished agents");
        assert!(requests <= 4, "{requests}");
    }
}

#[test]
fn a_plan_made_from_other_inputs_is_refused_saying_what_differs() {
    let reg = Registry::start();
    let spec = alpha_beta_spec(&reg.host, &reg.host);
    let dir = spec.path();
    ok(dir, &["plan", "--offline", "--plan-file", "plan.json"]);
    std::fs::write(dir.join("base/Dockerfile"), "ARG BASE_IMAGE\nFROM $BASE_IMAGE\nRUN true\n").unwrap();
    let out = split_build(dir, &["assemble", "--plan", "plan.json", "--builder-version", "v2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bases' Dockerfile, target or context files differ"), "{stderr}");
    assert!(stderr.contains("`v1` in the plan, `v2` here"), "{stderr}");
    std::fs::write(dir.join("plan.json"), "{}").unwrap();
    let out = split_build(dir, &["build", "--stage", "bases", "--plan", "plan.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a split-build plan"));
}

#[test]
fn a_moved_upstream_cannot_change_what_a_job_builds() {
    let reg = Registry::start();
    let spec = alpha_beta_spec(&reg.host, &reg.host);
    let dir = spec.path();
    push_upstreams(&reg);
    let plan: Value = serde_json::from_slice(&ok(dir, &["plan", "--plan-file", "plan.json"]).stdout).unwrap();
    let planned =
        plan["bases"].as_array().unwrap().iter().find(|b| b["instance"] == "proj__proj-1").unwrap()["image"].as_str().unwrap().to_owned();
    // The upstream moves after the plan: another image under the same tag.
    import_and_push(&busybox_rootfs_tar(&[("moved.txt", b"moved\n")]), &format!("{}/up/proj_1776_proj-1:1", reg.host));
    let replanned: Value = serde_json::from_slice(&ok(dir, &["plan"]).stdout).unwrap();
    let moved = replanned["bases"].as_array().unwrap().iter().find(|b| b["instance"] == "proj__proj-1").unwrap()["image"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(planned, moved, "a moved upstream changes the base hash");

    ok(dir, &["build", "--stage", "bases", "--plan", "plan.json", "--items", "proj__proj-1", "--report", "bases.json"]);
    let built: Vec<String> = json_file(dir, "bases.json")["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "built")
        .map(|i| i["image"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(built, std::slice::from_ref(&planned), "the job built the plan's base, not the moved upstream's");
    let repo_tag = planned.strip_prefix(&format!("{}/", reg.host)).unwrap();
    assert!(reg.inspect(repo_tag, "--raw").is_some(), "{planned} was pushed");
}
