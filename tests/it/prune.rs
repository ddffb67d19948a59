//! `prune` on both adapters: the real registry (3 builder versions × 10 instances × 2
//! variants made by `run`) and GitHub's packages API (a local server answering as GitHub
//! does, with its limits on a scaled clock: 133,000 versions; three scheduled runs of 12,000).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::github_api::{GithubApi, Limits, Package, SCALE_VAR, TOKEN};
use crate::support::*;

/// A spec of `instances` and two variants (`one`, `two`) for `registry`, upstream images on
/// `upstream`, whose builder payload says its version in `agent/version.txt`; `extra` is
/// appended to the spec.
fn versioned_payload_spec(registry: &str, upstream: &str, instances: &[String], extra: &str) -> tempfile::TempDir {
    let spec = format!(
        "registry: {registry}\nbuilder: {{ repository: builder, context: agent }}\nbases:\n  repository: base\n  context: base\n  from: \"{upstream}/upstream/{{instance}}:1\"\n  instances: [{}]\nagents:\n  repository: agent\n  variants: [{{ name: one }}, {{ name: two }}]\n{extra}",
        instances.join(", ")
    );
    spec_dir(&[
        ("agent/run.sh", "echo agent\n"),
        ("agent/Dockerfile", "FROM scratch AS payload\nCOPY run.sh version.txt /agent/\n"),
        ("agent/version.txt", "0"),
        ("base/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"),
        ("split-build.yml", &spec),
    ])
}

/// The spec the GitHub-packages tests prune: one instance in `{reg}/acme`, keeping `keep-*`
/// tags.
fn acme_keep_spec(reg: &Registry) -> tempfile::TempDir {
    versioned_payload_spec(&format!("{}/acme", reg.host), &reg.host, &["inst-1".to_owned()], "keep: [\"keep-*\"]\n")
}

/// The clock of the GitHub tests: 360 times faster (a 6-hour job is 60 s).
const SCALE: f64 = 360.0;

fn tags(reg: &Registry, repo: &str) -> Vec<String> {
    let (status, text) = http_get(reg.port, &format!("/v2/{repo}/tags/list?n=1000")).unwrap();
    assert_eq!(status, 200, "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let v: Value = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    let mut t: Vec<String> = v["tags"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect()).unwrap_or_default();
    t.sort();
    t
}

#[test]
fn registry_prune_keeps_the_plan_and_the_newest_version() {
    docker();
    let reg = Registry::start();
    let instances: Vec<String> = (1..=10).map(|i| format!("inst-{i}")).collect();
    for id in &instances {
        import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/upstream/{id}:1", reg.host));
    }
    let dir = versioned_payload_spec(&format!("{}/ns", reg.host), &reg.host, &instances, "");
    let d = dir.path();
    for v in ["v1", "v2", "v3"] {
        // Each version's payload differs, as a real agent commit's would: BuildKit gives
        // identical content an identical digest, and one digest cannot be pruned by tag.
        std::fs::write(d.join("agent/version.txt"), v).unwrap();
        let out = split_build(d, &["run", "--builder-version", v]);
        assert!(out.status.success(), "run {v}: {}", String::from_utf8_lossy(&out.stderr));
        // Builder versions are ordered by their images' creation time.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(tags(&reg, "ns/agent").len(), 60);
    assert_eq!(tags(&reg, "ns/builder"), ["latest", "v1", "v2", "v3"], "each builder build also moves `latest` (the warm builder)");
    let bases_before = tags(&reg, "ns/base");
    assert_eq!(bases_before.len(), 20, "10 bases and their -latest");

    // Dry run: says what would go, deletes nothing.
    let out = split_build(
        d,
        &["prune", "--builder-version", "v3", "--keep-versions", "1", "--grace", "0s", "--report", "dry.json", "--summary", "dry.md"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dry = json_file(d, "dry.json");
    let would: Vec<&Value> = dry["manifests"].as_array().unwrap().iter().filter(|m| m["action"] == "would-delete").collect();
    assert_eq!(would.len(), 42, "40 agents and 2 builders of v1 and v2");
    assert_eq!(tags(&reg, "ns/agent").len(), 60, "a dry run deletes nothing");
    assert!(std::fs::read_to_string(d.join("dry.md")).unwrap().contains("dry run"));

    // --max-delete caps one run: the 10 oldest go, the rest waits for the next run.
    let out = split_build(
        d,
        &[
            "prune",
            "--builder-version",
            "v3",
            "--keep-versions",
            "1",
            "--grace",
            "0s",
            "--apply",
            "--max-delete",
            "10",
            "--summary",
            "capped.md",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agents_left = tags(&reg, "ns/agent").len();
    // 60 agents and 4 builder tags (v1, v2, v3 and the floating `latest`, kept as cache).
    assert_eq!(agents_left + tags(&reg, "ns/builder").len(), 64 - 10);
    let capped = std::fs::read_to_string(d.join("capped.md")).unwrap();
    assert!(capped.contains("**Deleted 10**; about **32 remain**: about 4 more runs"), "{capped}");

    // A grace period keeps everything this young.
    let out = split_build(d, &["prune", "--builder-version", "v3", "--keep-versions", "1", "--apply", "--report", "grace.json"]);
    assert!(out.status.success());
    assert_eq!(tags(&reg, "ns/agent").len(), agents_left, "nothing younger than a day goes");

    let out =
        split_build(d, &["prune", "--builder-version", "v3", "--keep-versions", "1", "--grace", "0s", "--apply", "--report", "apply.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agents = tags(&reg, "ns/agent");
    assert_eq!(agents.len(), 20);
    assert!(agents.iter().all(|t| t.starts_with("v3-")), "{agents:?}");
    assert_eq!(tags(&reg, "ns/builder"), ["latest", "v3"], "the warm builder's tag is cache, not a version");
    assert_eq!(tags(&reg, "ns/base"), bases_before, "the plan's bases and every -latest stay");
    let applied = json_file(d, "apply.json");
    assert_eq!(applied["manifests"].as_array().unwrap().iter().filter(|m| m["action"] == "deleted").count(), 32);
    assert_eq!(applied["progress"]["remaining"], 0);

    // What is left is exactly what the plan needs: it finds everything.
    let out = split_build(d, &["plan", "--builder-version", "v3"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan["agents"].as_array().unwrap().iter().all(|a| a["status"] == "hit"));
}

#[test]
fn ghcr_prune_lists_133000_versions_and_deletes_the_oldest_first() {
    let reg = Registry::start();
    let tags_newest: Vec<Vec<String>> = vec![vec!["keep-me".into()], vec![]];
    let package = Package { org: "acme".into(), name: "agent".into(), versions: 133_000, tags: tags_newest, digests: vec![] };
    // A personal token's budget, GitHub's secondary limits and some failing pages, on a clock
    // 360 times faster.
    let api = GithubApi::with_limits(package, Limits::personal_token(SCALE));
    let dir = acme_keep_spec(&reg);
    let d = dir.path();
    let common = ["prune", "--source", "ghcr", "--github-api", &api.url, "--grace", "0s", "--builder-version", "v9"];

    let t = Instant::now();
    let mut args = common.to_vec();
    args.extend(["--registry-password", TOKEN, "--report", "dry.json"]);
    // GNU time, where present, reports the peak memory of the walk (information only).
    let timed = Path::new("/usr/bin/time").exists();
    let run = SplitBuild::new(d).args(&args).env(SCALE_VAR, SCALE.to_string());
    let out = if timed { run.under("/usr/bin/time", &["-f", "peak RSS %M KB"]).output() } else { run.output() };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rss = String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("peak RSS")).collect::<String>();
    let seen = api.seen();
    eprintln!(
        "dry run: walked 133,000 versions (1,330 pages, {} 500s and {} secondary limits waited out) in {:.1}s; {rss}",
        seen.server_errors,
        seen.secondary_refused,
        t.elapsed().as_secs_f64()
    );
    let dry = json_file(d, "dry.json");
    let manifests = dry["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 133_000);
    let kept: Vec<&Value> = manifests.iter().filter(|m| m["keep"] == true).collect();
    assert_eq!(kept.len(), 1, "only the keep-* tag stays");
    assert!(seen.deleted.is_empty(), "a dry run deletes nothing");
    assert!(seen.server_errors > 0, "the double failed some pages, and the walk went on");

    // --max-delete caps the run: the 1,000 oldest go (ids 133,000 down), the rest waits.
    api.next_day();
    let mut args = common.to_vec();
    args.extend(["--registry-password", TOKEN, "--apply", "--max-delete", "1000", "--summary", "s.md", "--report", "r.json"]);
    let t = Instant::now();
    let out = SplitBuild::new(d).args(&args).env(SCALE_VAR, SCALE.to_string()).output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = api.seen();
    let first = seen.first_delete.unwrap().duration_since(t).as_secs_f64();
    eprintln!("apply: first deletion {first:.2}s after the start; 1,000 deleted in {:.1}s", t.elapsed().as_secs_f64());
    assert!(first < 10.0, "the first deletion came {first:.1}s after the start");
    let mut deleted = seen.deleted.clone();
    deleted.sort_unstable();
    assert_eq!(deleted, (132_001..=133_000).collect::<Vec<u64>>(), "the oldest 1,000, by id");
    assert!(seen.requests < 1_100, "{} requests for 1,000 deletions: the walk lists only the pages it deletes from", seen.requests);
    let summary = std::fs::read_to_string(d.join("s.md")).unwrap();
    assert!(summary.contains("**Deleted 1000**"), "{summary}");
    assert!(summary.contains("remain**: about 132 more runs"), "{summary}");
    let report = json_file(d, "r.json");
    assert_eq!(report["progress"]["deleted"], 1000);
    assert_eq!(report["progress"]["ended"], "max-delete");

    let out = split_build(
        d,
        &["prune", "--source", "ghcr", "--github-api", &api.url, "--registry-password", "ghp_no_scope", "--builder-version", "v9"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("read:packages") && stderr.contains("delete:packages"), "{stderr}");
    assert!(!stderr.contains("ghp_no_scope"), "the token never reaches the logs");
}

/// The README's scheduled prune, as a workflow's action would get it: `INPUT_*` from the
/// README's `with:` block, `GITHUB_ACTIONS=true` (so the 5 h 30 min default time budget),
/// `GITHUB_TOKEN`; plus where the double is.
fn readme_prune_run(d: &Path, api: &GithubApi, summary: &Path) -> std::process::Command {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme.split("```yaml\nname: prune\n").nth(1).expect("the README shows a scheduled prune").split("```").next().unwrap();
    // The last step's inputs: split-build's (checkout's come first).
    let with = block.rsplit("        with:\n").next().unwrap();
    let mut run = SplitBuild::new(d)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_STEP_SUMMARY", summary)
        .env("INPUT_SOURCE", "ghcr")
        .env("INPUT_GITHUB-API", &api.url)
        .env(SCALE_VAR, SCALE.to_string());
    let mut inputs = 0;
    for line in with.lines().take_while(|l| l.starts_with("          ")) {
        let line = line.split(" #").next().unwrap().trim();
        let (key, value) = line.split_once(':').unwrap();
        let value = value.trim().trim_matches('"').replace("${{ github.repository }}", "acme/app");
        run = run.env(format!("INPUT_{}", key.trim().to_ascii_uppercase()), value);
        inputs += 1;
    }
    assert!(inputs >= 5, "{with}");
    run.command()
}

#[test]
fn ghcr_scheduled_prune_clears_a_package_larger_than_one_run() {
    let reg = Registry::start();
    let versions = 12_000u64;
    let package = Package { org: "acme".into(), name: "agent".into(), versions, tags: vec![vec!["keep-me".into()]], digests: vec![] };
    let api = GithubApi::with_limits(package, Limits::github_token(SCALE));
    let dir = acme_keep_spec(&reg);
    let d = dir.path();
    // A hosted job dies at 6 h: 60 s on this clock.
    let job_limit = Duration::from_secs_f64(6.0 * 3600.0 / SCALE);
    let mut left = versions - 1;
    for night in 1..=3 {
        api.next_day();
        let summary = d.join(format!("summary-{night}.md"));
        let t = Instant::now();
        let mut child = readme_prune_run(d, &api, &summary).spawn().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > job_limit {
                child.kill().unwrap();
                panic!("night {night}: killed at the job limit, as GitHub would");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let hours = t.elapsed().as_secs_f64() * SCALE / 3600.0;
        let seen = api.seen();
        let deleted = seen.deleted.len() as u64;
        let summary = std::fs::read_to_string(&summary).unwrap();
        // What the budget allows: --max-delete 5000, and 1,000 requests an hour for 5 h 30 min.
        let allowed = left.min(5000);
        let floor = 1000.0 * 100.0 / 101.0;
        eprintln!(
            "night {night}: exit {:?}, {deleted} deleted of {allowed} allowed in {hours:.2} h of 5.50 ({:.0}/h, {:.0}% of the {floor:.0}/h floor); {} requests, {} hourly and {} secondary limits waited out, {} 500s, at most {} in flight",
            status.code(),
            deleted as f64 / hours,
            100.0 * deleted as f64 / hours / floor,
            seen.requests,
            seen.primary_refused,
            seen.secondary_refused,
            seen.server_errors,
            seen.max_in_flight,
        );
        assert!(matches!(status.code(), Some(0 | 1)), "night {night}: exit {:?}\n{summary}", status.code());
        assert!(hours < 5.5, "night {night}: ran {hours:.2} h, past its time budget");
        assert!(deleted as f64 >= 0.8 * allowed as f64, "night {night}: {deleted} of {allowed}");
        assert!(deleted as f64 / hours >= 0.8 * floor, "night {night}: {:.0} an hour", deleted as f64 / hours);
        assert!(!seen.deleted.contains(&1), "the kept version stays");
        assert!(seen.max_in_flight <= 100);
        left -= deleted;
        assert!(summary.contains(&format!("**Deleted {deleted}**")), "{summary}");
        assert!(summary.contains(if left == 0 { "nothing is left to delete" } else { "more run" }), "{summary}");
    }
    assert_eq!(left, 0, "three nights clear the package");
    assert_eq!(api.live(), 1, "only the kept version is left");
}

/// A registry for the plan, 12,000 versions of `acme/agent` (the newest kept by `keep-*`)
/// behind the double with `GITHUB_TOKEN`'s limits on a clock `scale` times faster, and the
/// spec's directory.
fn twelve_thousand(scale: f64) -> (Registry, GithubApi, tempfile::TempDir) {
    let reg = Registry::start();
    let package =
        Package { org: "acme".into(), name: "agent".into(), versions: 12_000, tags: vec![vec!["keep-me".into()]], digests: vec![] };
    let api = GithubApi::with_limits(package, Limits::github_token(scale));
    let dir = acme_keep_spec(&reg);
    (reg, api, dir)
}

/// `prune --apply` of everything the policy lets go, through the double, with a report
/// (`r.json`) and a summary (`s.md`).
fn apply_all(d: &Path, api: &GithubApi, scale: f64) -> SplitBuild {
    SplitBuild::new(d)
        .args(["prune", "--source", "ghcr", "--github-api", &api.url, "--registry-password", TOKEN, "--grace", "0s", "--apply"])
        .args(["--report", "r.json", "--summary", "s.md"])
        .env(SCALE_VAR, scale.to_string())
}

#[test]
fn ghcr_prune_stops_cleanly_within_its_time_budget() {
    let (_reg, api, dir) = twelve_thousand(SCALE);
    let d = dir.path();
    let t = Instant::now();
    let out = apply_all(d, &api, SCALE).args(["--time-budget", "90m"]).output();
    let hours = t.elapsed().as_secs_f64() * SCALE / 3600.0;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(hours < 1.5, "ran {hours:.2} h of a 1.5 h budget");
    // Two hourly windows fit in 90 minutes; the third opens after the budget: stop, report.
    let deleted = api.seen().deleted.len();
    assert!((1900..=2000).contains(&deleted), "{deleted} deleted in two hourly windows of 1,000 requests");
    let report = json_file(d, "r.json");
    assert_eq!(report["progress"]["ended"]["limit"], "hourly-budget", "{}", report["progress"]);
    assert_eq!(report["progress"]["deleted"], deleted);
    let summary = std::fs::read_to_string(d.join("s.md")).unwrap();
    assert!(summary.contains("the hourly API budget was spent and resets after the time budget ends"), "{summary}");
}

#[test]
fn ghcr_prune_in_actions_stops_before_the_job_limit_by_default() {
    // A clock 3,600 times faster: the 6-hour job is 6 s; no --time-budget, no --max-delete.
    let scale = 3600.0;
    let (_reg, api, dir) = twelve_thousand(scale);
    let d = dir.path();
    let t = Instant::now();
    let out = apply_all(d, &api, scale).env("GITHUB_ACTIONS", "true").output();
    let hours = t.elapsed().as_secs_f64() * scale / 3600.0;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!((4.0..6.0).contains(&hours), "ran {hours:.2} h: the default budget in Actions is 5 h 30 min, the job dies at 6 h");
    let report = json_file(d, "r.json");
    assert!(report["progress"]["ended"]["limit"].is_string(), "{}", report["progress"]);
    assert!(api.seen().deleted.len() > 1000, "it deleted through several hourly windows");
}

#[test]
fn ghcr_prune_refuses_to_delete_every_version_of_a_package() {
    let reg = Registry::start();
    let package = Package { org: "acme".into(), name: "agent".into(), versions: 250, tags: vec![], digests: vec![] };
    let api = GithubApi::with_limits(package, Limits::github_token(SCALE));
    let dir = acme_keep_spec(&reg);
    let d = dir.path();
    let out = SplitBuild::new(d)
        .args(["prune", "--source", "ghcr", "--github-api", &api.url, "--registry-password", TOKEN, "--grace", "0s", "--apply"])
        .env(SCALE_VAR, SCALE.to_string())
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refusing to delete every version of package `agent` (250 versions)"), "{stderr}");
    assert_eq!(api.live(), 250, "nothing was deleted");
}

#[test]
fn ghcr_prune_applies() {
    let reg = Registry::start();
    let api = GithubApi::start(Package {
        org: "acme".into(),
        name: "agent".into(),
        versions: 250,
        tags: vec![vec!["keep-1".into()]],
        digests: vec![],
    });
    let (_dir, deleted) = apply_ghcr(&reg, &api);
    assert_eq!(deleted, (2..=250).collect::<Vec<u64>>(), "every version but the kept one, by id");
}

#[test]
fn ghcr_prune_keeps_the_children_of_a_kept_index() {
    docker();
    let reg = Registry::start();
    import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/staging/x:1", reg.host));
    // The index lives in the registry (where prune reads manifests); GitHub lists it and its
    // two untagged children as package versions, newest first, then 20 old ones.
    let (index, children) = make_two_platform_index(&reg.host, "staging/x:1", "acme/agent:keep-index");
    let api = GithubApi::start(Package {
        org: "acme".into(),
        name: "agent".into(),
        versions: 23,
        tags: vec![vec!["keep-index".into()], vec![], vec![]],
        digests: vec![index, children[0].clone(), children[1].clone()],
    });
    let (dir, deleted) = apply_ghcr(&reg, &api);
    let d = dir.path();
    assert_eq!(deleted, (4..=23).collect::<Vec<u64>>(), "the index (id 1) and its children (ids 2, 3) stay");
    let report = json_file(d, "r.json");
    let kept_children = report["manifests"].as_array().unwrap().iter().filter(|m| m["reason"]["rule"] == "child-of-kept").count();
    assert_eq!(kept_children, 2);
}

/// A spec for `{reg}/acme` that keeps `keep-*` tags, pruned with --apply against the fake
/// GitHub API: the spec's directory and the version ids deleted, sorted.
fn apply_ghcr(reg: &Registry, api: &GithubApi) -> (tempfile::TempDir, Vec<u64>) {
    let dir = acme_keep_spec(reg);
    let d = dir.path();
    let args = [
        "prune",
        "--source",
        "ghcr",
        "--github-api",
        &api.url,
        "--registry-password",
        TOKEN,
        "--grace",
        "0s",
        "--apply",
        "--report",
        "r.json",
    ];
    let out = SplitBuild::new(d).args(args).env(SCALE_VAR, SCALE.to_string()).output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut deleted = api.deleted.lock().unwrap().clone();
    deleted.sort();
    (dir, deleted)
}
