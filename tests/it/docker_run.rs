//! `run` end to end through the real daemon and a real registry: 10 instances × 2
//! variants; every agent runs; a second run builds nothing; a base that fails is isolated
//! and a rerun after the fix builds only it. Also `build` by stage, the dockerfile method
//! and `report` merging job reports.

use std::path::Path;

use crate::support::*;
use serde_json::Value;

fn instances() -> Vec<String> {
    (1..=10).map(|i| format!("repo__proj-{i}")).collect()
}

/// The daemon, a registry holding an upstream image for each of ten instances, and a spec
/// of those instances and two variants (`one`, `two`) made by `method`, whose base
/// Dockerfile runs `base_steps` (Dockerfile lines) before it writes `/base.txt`. The
/// registry stops when the returned value is dropped: keep it bound for the whole test.
fn ten_instances(base_steps: &str, method: &str) -> (Registry, tempfile::TempDir) {
    docker();
    let reg = Registry::start();
    // Upstream repositories spell `__` as `_1776_`, as SWE-bench's do (and NORA refuses `__`
    // in a repository name, which the OCI spec allows).
    for id in instances() {
        import_and_push(&busybox_rootfs_tar(&[]), &upstream(&reg, &id));
    }
    let base = format!("ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nARG INSTANCE\n{base_steps}RUN echo \"base of $INSTANCE\" > /base.txt\n");
    let spec = format!(
        "registry: {}/e2e\nbuilder: {{ repository: builder, context: agent }}\nbases:\n  repository: base\n  context: base\n  from: \"{}/upstream/{{instance|replace(\\\"__\\\", \\\"_1776_\\\")}}:1\"\n  build-args: {{ INSTANCE: \"{{instance}}\" }}\n  instances: [{}]\nagents:\n  repository: agent\n  method: {method}\n  variants:\n    - {{ name: one, entrypoint: [\"/bin/sh\", \"/agent/run.sh\"], env: {{ VARIANT: one }} }}\n    - {{ name: two, entrypoint: [\"/bin/sh\", \"/agent/run.sh\"], env: {{ VARIANT: two }} }}\n",
        reg.host,
        reg.host,
        instances().join(", ")
    );
    let dir = spec_dir(&[
        ("agent/run.sh", "echo \"agent $VARIANT on $(cat /base.txt)\"\n"),
        ("agent/Dockerfile", "FROM scratch AS payload\nCOPY run.sh /agent/run.sh\n"),
        ("agent/.dockerignore", "*.tmp\n"),
        ("agent/ignored.tmp", "not in the context"),
        ("base/Dockerfile", &base),
        ("split-build.yml", &spec),
    ]);
    (reg, dir)
}

/// The upstream image of instance `id`.
fn upstream(reg: &Registry, id: &str) -> String {
    format!("{}/upstream/{}:1", reg.host, id.replace("__", "_1776_"))
}

fn count(report: &Value, stage: &str, status: &str) -> usize {
    report["images"].as_array().unwrap().iter().filter(|i| i["stage"] == stage && i["status"] == status).count()
}

#[test]
fn run_end_to_end_isolates_a_failing_base_and_a_rerun_builds_nothing() {
    // The base of repo__proj-7 fails.
    let (_registry, dir) = ten_instances("RUN echo \"checking $INSTANCE\" && test \"$INSTANCE\" != \"repo__proj-7\"\n", "append");
    let d = dir.path();

    // First run: one base fails, the other nine and their agents are made.
    let out = split_build(d, &["run", "--report", "r1.json", "--summary", "s1.md"]);
    assert_eq!(out.status.code(), Some(1), "one base fails: {}", String::from_utf8_lossy(&out.stderr));
    let r1 = json_file(d, "r1.json");
    assert_eq!(count(&r1, "builder", "built"), 1, "the builder is built once");
    assert_eq!(count(&r1, "bases", "built"), 9);
    assert_eq!(count(&r1, "bases", "failed"), 1);
    let failure = r1["images"].as_array().unwrap().iter().find(|i| i["status"] == "failed").unwrap();
    assert_eq!(failure["instance"], "repo__proj-7");
    let why = failure["error"].as_str().unwrap();
    assert!(why.contains("exit code: 1") || why.contains("returned a non-zero code"), "the failing step's message: {failure}");
    assert!(why.contains("checking repo__proj-7"), "the failing step's output comes with it: {failure}");
    assert_eq!(count(&r1, "agents", "assembled"), 18);
    let summary = std::fs::read_to_string(d.join("s1.md")).unwrap();
    assert!(summary.contains("### Failures (1)") && summary.contains("repo__proj-7"), "{summary}");

    // The agents run and show their payload on their base.
    let plan: Value = serde_json::from_slice(&split_build(d, &["plan"]).stdout).unwrap();
    for a in plan["agents"].as_array().unwrap().iter().filter(|a| a["status"] == "hit") {
        let out = docker_cmd(&["run", "--rm", "--pull=always", a["image"].as_str().unwrap()]);
        assert_eq!(out.trim(), format!("agent {} on base of {}", a["variant"].as_str().unwrap(), a["instance"].as_str().unwrap()));
    }

    // Second run, nothing changed: nothing is rebuilt; the failing base is tried again.
    let second = split_build(d, &["run", "--report", "r2.json"]);
    assert_eq!(second.status.code(), Some(1));
    let r2 = json_file(d, "r2.json");
    assert_eq!(count(&r2, "builder", "hit"), 1, "no builder rebuild");
    assert_eq!(count(&r2, "bases", "hit"), 9, "nothing rebuilt");
    assert_eq!(count(&r2, "bases", "failed"), 1, "only the failing base is tried again");
    assert_eq!(count(&r2, "agents", "hit"), 18);
    assert_eq!(count(&r2, "agents", "assembled"), 0);
}

#[test]
fn a_fix_outside_the_hash_rebuilds_only_the_failed_base() {
    // The base fails when its upstream lacks /ok; the fix is a new upstream for that one
    // instance, which changes only that instance's base tag.
    let (reg, dir) = ten_instances("RUN test \"$INSTANCE\" != repo__proj-3 || test -f /ok\n", "append");
    let d = dir.path();
    let out = split_build(d, &["run", "--report", "r1.json"]);
    assert_eq!(out.status.code(), Some(1));
    let r1 = json_file(d, "r1.json");
    assert_eq!(count(&r1, "bases", "failed"), 1, "{r1}");
    assert_eq!(count(&r1, "agents", "assembled"), 18, "{r1}");

    import_and_push(&busybox_rootfs_tar(&[("ok", b"1")]), &upstream(&reg, "repo__proj-3"));
    let out = split_build(d, &["run", "--report", "r2.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r2 = json_file(d, "r2.json");
    assert_eq!(count(&r2, "bases", "built"), 1, "only the fixed base is built");
    assert_eq!(count(&r2, "bases", "hit"), 9);
    assert_eq!(count(&r2, "agents", "assembled"), 2, "and only its two agents made: {r2}");
    assert_eq!(count(&r2, "builder", "hit"), 1);

    let out = split_build(d, &["run", "--report", "r3.json"]);
    assert!(out.status.success());
    let r3 = json_file(d, "r3.json");
    assert!(r3["images"].as_array().unwrap().iter().all(|i| i["status"] == "hit"), "a third run builds nothing");

    // `report` merges the three into one summary.
    let out = split_build(d, &["report", "r1.json", "r2.json", "r3.json", "missing-dir"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("3 job reports") && md.contains("### Failures (1)"), "{md}");
}

#[test]
fn build_by_stage_and_the_dockerfile_method() {
    let (reg, dir) = ten_instances("", "dockerfile");
    let d = dir.path();
    // In Actions the build log is folded into one group per image.
    let out = SplitBuild::new(d).args(["build", "--stage", "builder", "--report", "b.json"]).env("GITHUB_ACTIONS", "true").output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&json_file(d, "b.json"), "builder", "built"), 1);
    let log = String::from_utf8_lossy(&out.stdout);
    let group = log.split("::group::built ").nth(1).and_then(|g| g.split("::endgroup::").next()).unwrap_or_default();
    assert!(group.contains("e2e/builder:") && group.contains("COPY run.sh /agent/run.sh"), "the builder's log, grouped: {log}");
    let out = split_build(d, &["build", "--stage", "builder", "--report", "b2.json"]);
    assert!(out.status.success());
    assert_eq!(count(&json_file(d, "b2.json"), "builder", "hit"), 1, "a hit is skipped");
    // The builder's context honoured .dockerignore.
    let builder = reg.inspect(&format!("e2e/builder:{}", plan_builder_tag(d)), "").unwrap();
    assert_eq!(builder["Layers"].as_array().unwrap().len(), 1);

    let out = split_build(d, &["build", "--stage", "bases", "--items", "repo__proj-1 repo__proj-2", "--report", "s.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&json_file(d, "s.json"), "bases", "built"), 2);
    assert!(reg.inspect("e2e/base:repo__proj-1-latest", "").is_some(), "{{instance}}-latest moved");

    let out = split_build(d, &["assemble", "--items", "repo__proj-1", "--report", "a.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&json_file(d, "a.json"), "agents", "assembled"), 2);
    let plan: Value = serde_json::from_slice(&split_build(d, &["plan"]).stdout).unwrap();
    for a in plan["agents"].as_array().unwrap().iter().filter(|a| a["instance"] == "repo__proj-1") {
        assert_eq!(a["status"], "hit", "the planner recognises dockerfile-method agents by their labels");
        let out = docker_cmd(&["run", "--rm", a["image"].as_str().unwrap()]);
        assert!(out.contains("on base of repo__proj-1"), "{out}");
    }
    let out = split_build(d, &["build", "--stage", "bases", "--items", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

fn plan_builder_tag(d: &Path) -> String {
    let plan: Value = serde_json::from_slice(&split_build(d, &["plan"]).stdout).unwrap();
    plan["builder"]["image"].as_str().unwrap().rsplit_once(':').unwrap().1.to_owned()
}

#[test]
fn a_run_killed_halfway_is_finished_by_a_rerun() {
    use std::io::BufRead as _;
    // Slow the bases a little so the kill lands while some are still to be built.
    let (_registry, dir) = ten_instances("RUN sleep 1\n", "append");
    let d = dir.path();
    let mut child = SplitBuild::new(d)
        .args(["run", "--parallel", "1"])
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut bases_done = 0;
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains("/e2e/base:") && line.contains(" built in ") {
            bases_done += 1;
            if bases_done == 3 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(bases_done, 3, "the first run was killed after three bases");

    let out = split_build(d, &["run", "--report", "r.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json_file(d, "r.json");
    let (hit, built) = (count(&r, "bases", "hit"), count(&r, "bases", "built"));
    assert!(hit >= 3 && hit + built == 10 && built > 0, "the rerun builds only what is missing: {hit} hits, {built} built");
    assert_eq!(count(&r, "builder", "built") + count(&r, "builder", "hit"), 1);
    assert_eq!(count(&r, "agents", "assembled") + count(&r, "agents", "hit"), 20);
    let out = split_build(d, &["run", "--report", "r2.json"]);
    assert!(out.status.success());
    assert!(json_file(d, "r2.json")["images"].as_array().unwrap().iter().all(|i| i["status"] == "hit"));
}
