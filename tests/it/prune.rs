//! `prune` on both adapters: the real registry (3 builder versions × 10 instances × 2
//! variants made by `run`) and GitHub's packages API (a local server answering as GitHub
//! does, 133,000 versions).

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::support::github_api::{GithubApi, Package, TOKEN};
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
    assert_eq!(tags(&reg, "ns/builder"), ["v1", "v2", "v3"]);
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

    // --max-delete holds: nothing deleted, exit 2.
    let out =
        split_build(d, &["prune", "--builder-version", "v3", "--keep-versions", "1", "--grace", "0s", "--apply", "--max-delete", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-delete 10"));
    assert_eq!(tags(&reg, "ns/agent").len(), 60);

    // A grace period keeps everything this young.
    let out = split_build(d, &["prune", "--builder-version", "v3", "--keep-versions", "1", "--apply", "--report", "grace.json"]);
    assert!(out.status.success());
    assert_eq!(tags(&reg, "ns/agent").len(), 60, "nothing younger than a day goes");

    let out =
        split_build(d, &["prune", "--builder-version", "v3", "--keep-versions", "1", "--grace", "0s", "--apply", "--report", "apply.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agents = tags(&reg, "ns/agent");
    assert_eq!(agents.len(), 20);
    assert!(agents.iter().all(|t| t.starts_with("v3-")), "{agents:?}");
    assert_eq!(tags(&reg, "ns/builder"), ["v3"]);
    assert_eq!(tags(&reg, "ns/base"), bases_before, "the plan's bases and every -latest stay");
    let applied = json_file(d, "apply.json");
    assert_eq!(applied["manifests"].as_array().unwrap().iter().filter(|m| m["action"] == "deleted").count(), 42);

    // What is left is exactly what the plan needs: it finds everything.
    let out = split_build(d, &["plan", "--builder-version", "v3"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan["agents"].as_array().unwrap().iter().all(|a| a["status"] == "hit"));
}

#[test]
fn ghcr_prune_lists_133000_versions_and_deletes_by_id() {
    let reg = Registry::start();
    let tags_newest: Vec<Vec<String>> = vec![vec!["keep-me".into()], vec![]];
    let api = GithubApi::start(Package { org: "acme".into(), name: "agent".into(), versions: 133_000, tags: tags_newest, digests: vec![] });
    let dir = acme_keep_spec(&reg);
    let d = dir.path();
    let common = ["prune", "--source", "ghcr", "--github-api", &api.url, "--grace", "0s", "--builder-version", "v9"];

    let t = Instant::now();
    let mut args = common.to_vec();
    args.extend(["--registry-password", TOKEN, "--report", "dry.json"]);
    // GNU time, where present, reports the peak memory of the listing (information only).
    let timed = Path::new("/usr/bin/time").exists();
    let run = SplitBuild::new(d).args(&args);
    let out = if timed { run.under("/usr/bin/time", &["-f", "peak RSS %M KB"]).output() } else { run.output() };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rss = String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("peak RSS")).collect::<String>();
    eprintln!("listed 133,000 versions (1,330 pages, one 429 waited out) and decided in {:.1}s; {rss}", t.elapsed().as_secs_f64());
    let dry = json_file(d, "dry.json");
    let manifests = dry["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 133_000);
    let kept: Vec<&Value> = manifests.iter().filter(|m| m["keep"] == true).collect();
    assert_eq!(kept.len(), 1, "only the keep-* tag stays");
    assert!(api.deleted.lock().unwrap().is_empty(), "a dry run deletes nothing");

    let mut args = common.to_vec();
    args.extend(["--registry-password", TOKEN, "--apply", "--max-delete", "1000"]);
    let out = split_build(d, &args);
    assert_eq!(out.status.code(), Some(2), "--max-delete holds");
    assert!(api.deleted.lock().unwrap().is_empty());

    let out = split_build(
        d,
        &["prune", "--source", "ghcr", "--github-api", &api.url, "--registry-password", "ghp_no_scope", "--builder-version", "v9"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("read:packages") && stderr.contains("delete:packages"), "{stderr}");
    assert!(!stderr.contains("ghp_no_scope"), "the token never reaches the logs");
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
    let out = split_build(d, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut deleted = api.deleted.lock().unwrap().clone();
    deleted.sort();
    (dir, deleted)
}
