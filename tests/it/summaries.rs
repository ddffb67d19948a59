//! The run page as a user reads it: snapshots of each summary shape (a first run with
//! failures, an agent commit, a run whose builder is missing, a run whose agents stage was
//! skipped, a 5,000-instance plan with its upstream unreachable), each under GitHub's 1 MiB,
//! each opening with its verdict, and each parsed by GitHub's own parser (cmark-gfm) as we
//! mean it to be.
//!
//! The merged shapes go through the binary: `plan --offline` of the bundled example (500
//! instances, two variants, 64 jobs a stage: its agents 8 a job) writes the plan; the test writes the job reports
//! that the workflow's jobs would have written (the plan's shards, fixed times) and runs
//! `report --plan` on them, so its exit code is checked too.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::SplitBuild;

const EXAMPLE: &str = "examples/swebench-verified/split-build.yml";
const MIB: usize = 1024 * 1024;
/// 2026-12-01T09:00:00Z: every job's start and end is a fixed offset from it.
const T0: u64 = 1_796_115_600;

fn rfc3339(offset: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(T0 + offset)).to_string()
}

/// The bundled example's offline plan (every image cold), with 64 agents jobs as well: a
/// copy whose `jobs.agents-per-job` is 8 (by default its 1,000 agents written at the registry
/// are one job), so the agents stage has as many jobs to report on as the bases stage.
fn offline_plan(dir: &Path) -> Value {
    let example = dir.join("example");
    crate::support::copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join(Path::new(EXAMPLE).parent().unwrap()), &example);
    let spec = example.join("split-build.yml");
    let text =
        std::fs::read_to_string(&spec).unwrap().replace("jobs: { max-parallel: 64 }", "jobs: { max-parallel: 64, agents-per-job: 8 }");
    std::fs::write(&spec, text).unwrap();
    let out = SplitBuild::in_repo(dir)
        .args(["plan", "--offline", "--summary", "false", "--spec"])
        .arg(&spec)
        .arg("--plan-file")
        .arg(dir.join("plan.json"))
        .output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap()
}

/// The plan as a registry that has every base would have made it.
fn with_bases_made(mut plan: Value) -> Value {
    for b in plan["bases"].as_array_mut().unwrap() {
        b["status"] = json!("hit");
        b["cache_from"] = Value::Null;
    }
    plan["matrices"]["bases"]["include"] = json!([]);
    plan
}

fn items(entry: &Value) -> Vec<String> {
    entry["items"].as_str().unwrap().split(' ').map(str::to_owned).collect()
}

fn shards<'a>(plan: &'a Value, stage: &str) -> &'a Vec<Value> {
    plan["matrices"][stage]["include"].as_array().unwrap()
}

fn record(stage: &str, p: &Value, status: &str, seconds: f64, error: Option<String>) -> Value {
    let mut r = json!({
        "stage": stage, "image": p["image"], "platform": p["platform"].as_str().unwrap_or("linux/amd64"), "status": status,
        "seconds": seconds, "bytes_pushed": if status == "hit" { 0 } else { 4_200 }, "requests": 9, "retries": 0, "writes": 4,
    });
    if let Some(i) = p["instance"].as_str() {
        r["instance"] = json!(i);
    }
    if let Some(v) = p["variant"].as_str() {
        r["variant"] = json!(v);
    }
    if let Some(e) = error {
        r["error"] = json!(e);
    }
    r
}

/// One job's report: `images` from `start` seconds after T0 for `secs` seconds.
fn job(dir: &Path, name: &str, command: &str, start: u64, secs: u64, images: Vec<Value>) {
    let r = json!({
        "command": command, "seconds": secs as f64, "started_at": rfc3339(start), "ended_at": rfc3339(start + secs),
        "registry": {"requests": 9 * images.len(), "writes": 4 * images.len(), "retries": 0, "bytes_pushed": 4_200 * images.len()},
        "images": images,
    });
    std::fs::create_dir_all(dir.join("reports")).unwrap();
    std::fs::write(dir.join("reports").join(format!("{name}.json")), serde_json::to_string_pretty(&r).unwrap()).unwrap();
}

/// The builder job: built in three minutes.
fn builder_job(dir: &Path, plan: &Value) {
    let b = &plan["builder"];
    let p = json!({"image": b["image"], "platform": b["platforms"][0]});
    job(dir, "builder-1", "build", 10, 180, vec![record("builder", &p, "built", 175.0, None)]);
}

/// The bases jobs, each base built unless `fail` gives it a reason.
fn bases_jobs(dir: &Path, plan: &Value, fail: &dyn Fn(&str, &str) -> Option<String>) {
    let by: std::collections::BTreeMap<&str, &Value> =
        plan["bases"].as_array().unwrap().iter().map(|b| (b["instance"].as_str().unwrap(), b)).collect();
    for e in shards(plan, "bases") {
        let k = e["shard"].as_u64().unwrap();
        let images = items(e)
            .iter()
            .map(|i| {
                let b = by[i.as_str()];
                let why = fail(i, b["image"].as_str().unwrap());
                record("bases", b, if why.is_some() { "failed" } else { "built" }, 40.0, why)
            })
            .collect();
        job(dir, &format!("bases-{k}"), "build", 15 + k, 300 + (k * 37) % 200, images);
    }
}

/// The agents jobs, each agent assembled unless `fail` gives it a reason; agents whose base
/// is in `skip` are not attempted (their job leaves them out).
fn agents_jobs(dir: &Path, plan: &Value, skip: &[String], fail: &dyn Fn(&str, &str) -> Option<String>) {
    for e in shards(plan, "agents") {
        let k = e["shard"].as_u64().unwrap();
        let mine = items(e);
        let images = plan["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| mine.iter().any(|i| a["instance"] == json!(i)) && !skip.iter().any(|s| a["instance"] == json!(s)))
            .map(|a| {
                let why = fail(a["instance"].as_str().unwrap(), a["image"].as_str().unwrap());
                record("agents", a, if why.is_some() { "failed" } else { "assembled" }, 0.6, why)
            })
            .collect();
        job(dir, &format!("agents-{k}"), "assemble", 560 + k, 20 + k % 7, images);
    }
}

/// `report --plan plan.json reports` as the workflow's report job runs it: exit code and markdown.
fn merged(dir: &Path, plan: &Value) -> (i32, String) {
    std::fs::write(dir.join("plan.json"), serde_json::to_string(plan).unwrap()).unwrap();
    let out = SplitBuild::new(dir)
        .args(["report", "--plan", "plan.json", "reports", "--summary", "false"])
        .args(["--run-url", "https://github.com/openhands/benchmarks/actions/runs/12345678"])
        .output();
    let md = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap_or(-1), md)
}

/// What every shape must be: under 1 MiB, its verdict in its first lines, and the markdown
/// GitHub's parser reads as meant.
fn check_shape(md: &str, verdict: &str) {
    assert!(md.len() < MIB, "{} bytes", md.len());
    let first_screen: Vec<&str> = md.lines().take(4).collect();
    assert!(first_screen.iter().any(|l| l.starts_with(verdict)), "the verdict opens the summary: {first_screen:?}");
    parses_as_github_does(md);
}

fn base_build_failure(instance: &str, image: &str) -> String {
    format!(
        "building `{image}`: the build failed: process \"/bin/sh -c apt-get install -y libxml2-dev\" did not complete successfully: exit code: 100 (last build output: #7 0.512 Reading package lists... | #7 1.203 E: Unable to locate package libxml2-dev | #7 DONE {instance} | ---> Running in 3f2a1b4c5d6e)"
    )
}

fn base_push_failure(image: &str) -> String {
    format!(
        "pushing `{image}`: uploading blob sha256:4f2b1c0d9e8a7f6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b: 500 Internal Server Error from https://ghcr.io/v2/openhands/eval-base/blobs/uploads/7c1e2d3f-aaaa-4bbb-8ccc-1234567890ab"
    )
}

#[test]
fn first_run_with_failures_groups_them_by_cause() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plan = offline_plan(d);
    let bases = shards(&plan, "bases");
    let (s3, s17, s40) = (items(&bases[2]), items(&bases[16]), items(&bases[39]));
    let built_badly: Vec<String> = s3.iter().take(5).chain(s17.iter().take(5)).cloned().collect();
    let pushed_badly: Vec<String> = s40.iter().take(2).cloned().collect();
    builder_job(d, &plan);
    bases_jobs(d, &plan, &|i, image| {
        if built_badly.iter().any(|b| b == i) {
            Some(base_build_failure(i, image))
        } else {
            pushed_badly.iter().any(|b| b == i).then(|| base_push_failure(image))
        }
    });
    let failed: Vec<String> = built_badly.iter().chain(&pushed_badly).cloned().collect();
    let odd = items(&shards(&plan, "agents")[4])[0].clone();
    agents_jobs(d, &plan, &failed, &|i, image| {
        (i == odd).then(|| format!("assembling `{image}`: PUT manifest: 400 MANIFEST_BLOB_UNKNOWN: blob unknown to registry (sha256:0123456789abcdef0123456789abcdef)"))
    });
    let (code, md) = merged(d, &plan);
    assert_eq!(code, 1, "images are missing: {md}");
    check_shape(&md, "❌ **38 of 1,501 planned images missing**: 14 failed, 24 not attempted");
    assert!(md.contains("### Failures (14, 3 causes)"), "{md}");
    assert!(md.contains("**bases** · 10 images") && md.contains("jobs bases 3/64, bases 17/64"), "{md}");
    insta::assert_snapshot!("first_run_with_failures", md);
}

#[test]
fn an_agent_commit_is_all_green() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plan = with_bases_made(offline_plan(d));
    builder_job(d, &plan);
    agents_jobs(d, &plan, &[], &|_, _| None);
    let (code, md) = merged(d, &plan);
    assert_eq!(code, 0, "{md}");
    check_shape(&md, "✅ **1,501 planned images are there**: 1,001 made, 500 hit");
    insta::assert_snapshot!("agent_commit", md);
}

#[test]
fn a_missing_builder_keeps_its_row_and_is_the_one_cause() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plan = with_bases_made(offline_plan(d));
    let builder = plan["builder"]["image"].as_str().unwrap().to_owned();
    // The builder job did not run; the agents jobs ran anyway and found no builder.
    agents_jobs(d, &plan, &[], &|_, image| {
        Some(format!("assembling `{image}`: reading the builder `{builder}`: manifest unknown: the registry has no such image"))
    });
    let (code, md) = merged(d, &plan);
    assert_eq!(code, 1, "{md}");
    check_shape(&md, "❌ **1,001 of 1,501 planned images missing**: 1,000 failed, 1 not attempted");
    assert!(md.contains("| builder | 1 | 0 | 0 | 0 | 1 | 0 of 1 |"), "the builder's row stays: {md}");
    assert!(md.contains("### Failures (1,000)") && md.contains("**agents** · 1,000 images"), "{md}");
    assert!(md.contains("none of the stage's 1 job wrote a report: the builder stage did not run"), "{md}");
    insta::assert_snapshot!("builder_missing", md);
}

#[test]
fn a_skipped_agents_stage_is_a_thousand_not_attempted_and_fails_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plan = offline_plan(d);
    let bad: Vec<String> = items(&shards(&plan, "bases")[7]).into_iter().take(2).collect();
    builder_job(d, &plan);
    bases_jobs(d, &plan, &|i, image| bad.iter().any(|b| b == i).then(|| base_push_failure(image)));
    // The example workflow skips the agents job after a failure: no agents report at all.
    let (code, md) = merged(d, &plan);
    assert_eq!(code, 1, "a stage that did not run fails the report: {md}");
    check_shape(&md, "❌ **1,002 of 1,501 planned images missing**: 2 failed, 1,000 not attempted");
    assert!(md.contains("none of the stage's 64 jobs wrote a report: the agents stage did not run"), "{md}");
    assert!(md.contains("| agents | 1,000 | 0 | 0 | 0 | 1,000 | 0 of 64 |"), "{md}");
    insta::assert_snapshot!("skipped_agents", md);
}

/// Files as the test's temp dir holds them.
struct Files;

impl split_build::core::spec::SpecEnv for Files {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

#[test]
fn five_thousand_instances_with_their_upstream_unreachable_stay_under_the_limit() {
    use split_build::core::content_hash::{Recipe, sha256_hex};
    use split_build::core::plan::{LayoutInputs, Observed, UpstreamUnresolved, decide, layout};

    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/swebench-verified");
    let ids: Vec<String> = (0..5000)
        .map(|i| {
            format!(
                "{}__{}-{}",
                ["django", "sympy", "astropy", "sphinx-doc"][i % 4],
                ["django", "sympy", "astropy", "sphinx"][i % 4],
                10_000 + i
            )
        })
        .collect();
    std::fs::write(dir.path().join("instances.txt"), ids.join("\n")).unwrap();
    let text = std::fs::read_to_string(repo.join("split-build.yml")).unwrap().replace("${BUILDER_VERSION}", "v42");
    let file = dir.path().join("split-build.yml");
    for sub in ["agent", "docker"] {
        crate::support::copy_tree(&repo.join(sub), &dir.path().join(sub));
    }
    let spec = split_build::core::spec::parse_spec(&text, &file, &Files).unwrap();
    let recipe = Recipe { dockerfile_sha256: sha256_hex(b"FROM x"), target: None, inputs: vec![] };
    let version = "v42".parse().unwrap();
    let upstream_digests = Default::default();
    let l = layout(
        &spec,
        LayoutInputs {
            builder_version: &version,
            base_recipe: &recipe,
            upstream_digests: &upstream_digests,
            recorded_digests: &upstream_digests,
            builder_inputs: Err("not read"),
        },
    );
    // docker.io unreachable: as the observer records it, every upstream with the first one's error.
    let first = l.bases[0].from.clone();
    let reason = format!(
        "asking `{first}`: error sending request for url (https://registry-1.docker.io/v2/swebench/sweb.eval.x86_64.{}/manifests/latest): client error (Connect): dns error: failed to lookup address information",
        ids[0].replace("__", "_1776_")
    );
    // No base records a digest and the plan hashes the references alone
    // (`--upstream-unresolved build`): every base is to make.
    let observed = Observed {
        unresolved_upstreams: l.bases.iter().map(|b| (b.from.clone(), reason.clone())).collect(),
        upstream_unresolved: UpstreamUnresolved::Build,
        ..Observed::default()
    };
    let plan = decide(l, &observed, 64);
    let md = split_build::core::summary::plan_summary(&plan, false, split_build::core::summary::SUMMARY_BUDGET);
    eprintln!("5,000-instance plan summary with docker.io unreachable: {} bytes", md.len());
    check_shape(&md, "📋 **15,001 of 15,001 images to make** in 129 jobs");
    assert_eq!(md.matches("> **Note").count(), 1, "one note for one cause");
    if plan.notes.len() > 1 {
        // Today `decide` writes a note per upstream: the summary groups them.
        assert!(md.contains("> **Note** (×5,000, all on `docker.io`)"), "{}", &md[..2000]);
    }
    assert!(!md.contains("To stay under"), "nothing left out at 5,000 instances");
    // The whole list of names is long: the snapshot has the page up to it, and its end.
    let head = md.split("<details><summary>Images to make").next().unwrap();
    let tail: Vec<&str> = md.lines().rev().take(4).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    insta::assert_snapshot!("plan_5000_unreachable_upstream", format!("{head}[… {} bytes …]\n{tail}", md.len() - head.len() - tail.len()));
}

/// Renders `md` with GitHub's parser (Debian's `cmark-gfm`, with the extensions github.com
/// enables) and checks it reads as meant: every table a table, every fence a code block
/// (text or mermaid), every folded list a `<details>` whose inside is markdown again, the
/// verdict a paragraph of its own, and no markdown left over as literal text.
fn parses_as_github_does(md: &str) {
    let cmark = crate::support::require("cmark-gfm", "cmark-gfm");
    let mut child = Command::new(cmark)
        .args(["-e", "table", "-e", "strikethrough", "-e", "autolink", "-e", "tagfilter", "--unsafe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(md.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let html = String::from_utf8(out.stdout).unwrap();
    let tables = md.lines().filter(|l| l.starts_with("|---") || l.starts_with("|---:")).count();
    assert_eq!(html.matches("<table>").count(), tables, "every table parses as one:\n{html}");
    let text_fences = md.lines().filter(|l| l.trim_start_matches('`').starts_with("text") && l.starts_with("```")).count();
    assert_eq!(html.matches("<code class=\"language-text\">").count(), text_fences, "every reason is a text block");
    let mermaid = md.matches("```mermaid").count();
    assert_eq!(html.matches("<code class=\"language-mermaid\">").count(), mermaid, "every chart is a mermaid block");
    assert_eq!(html.matches("<details>").count(), md.matches("<details>").count(), "details pass GitHub's tag filter");
    let second = html.split("</h2>").nth(1).unwrap_or_default().trim_start();
    assert!(second.starts_with("<p>"), "the verdict is the first paragraph: {}", &second[..second.len().min(300)]);
    // Outside code, nothing of the markdown is left as text: no bold markers, table rows or
    // raw fences.
    let outside_code: String =
        html.split("<pre").enumerate().map(|(i, part)| if i == 0 { part } else { part.split("</pre>").nth(1).unwrap_or("") }).collect();
    for leftover in ["**", "|---", "```"] {
        assert!(!outside_code.contains(leftover), "`{leftover}` left as text:\n{outside_code}");
    }
}

/// With two platforms a job reports as it writes: a builder and a base per leg, an agent once
/// for its index over both platforms (`linux/amd64,linux/arm64`). Every entry of the plan is
/// accounted for, none twice.
#[test]
fn two_platform_reports_account_for_every_leg() {
    let dir = crate::support::spec_dir(&[
        ("Dockerfile", "FROM scratch AS payload\nCOPY x /x\n"),
        ("x", "x"),
        (
            "split-build.yml",
            "registry: 127.0.0.1:5000/t\nplatforms: [linux/amd64, linux/arm64]\nbuilder: { repository: b, version: \"7\" }\nbases:\n  repository: base\n  from: \"up/{instance}:1\"\n  instances: [a, b, c]\nagents:\n  repository: agent\n  variants: [{ name: x }, { name: y }]\njobs: { max-parallel: 4 }\n",
        ),
    ]);
    let d = dir.path();
    let out = SplitBuild::new(d).args(["plan", "--offline", "--summary", "false", "--plan-file", "plan.json"]).output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(d.join("plan.json")).unwrap()).unwrap();
    for (k, e) in shards(&plan, "builder").iter().enumerate() {
        let p = json!({"image": plan["builder"]["image"], "platform": e["platform"]});
        job(d, &format!("builder-{k}"), "build", 0, 60, vec![record("builder", &p, "built", 50.0, None)]);
    }
    for (k, e) in shards(&plan, "bases").iter().enumerate() {
        let mine = items(e);
        let images = plan["bases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["platform"] == e["platform"] && mine.iter().any(|i| b["instance"] == json!(i)))
            .map(|b| record("bases", b, "built", 9.0, None))
            .collect();
        job(d, &format!("bases-{k}"), "build", 70, 30, images);
    }
    for (k, e) in shards(&plan, "agents").iter().enumerate() {
        let mine = items(e);
        let images = plan["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["platform"] == json!("linux/amd64") && mine.iter().any(|i| a["instance"] == json!(i)))
            .map(|a| {
                let mut r = record("agents", a, "assembled", 0.5, None);
                r["platform"] = json!("linux/amd64,linux/arm64");
                r
            })
            .collect();
        job(d, &format!("agents-{k}"), "assemble", 110, 5, images);
    }
    let (code, md) = merged(d, &plan);
    assert_eq!(code, 0, "{md}");
    check_shape(&md, "✅ **20 planned images are there**: 20 made");
    // 12 agent images written at the registry: one job (one per 1,000 images).
    assert!(md.contains("| agents | 12 | 0 | 12 | 0 | 1 |"), "{md}");
}
