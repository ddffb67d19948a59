//! An unreachable upstream never changes a base tag: two registries on loopback, the spec's
//! `bases.from` on the second (standing in for Docker Hub). Bases built while it answers
//! record its digest; when it is stopped, the plan takes the recorded digests (every base a
//! hit, the same tags, one note for the host); a new instance with no record is not planned
//! (exit 1) unless `--upstream-unresolved build`; when it is back with one image moved, that
//! base is warm and says why. Also: an upstream answering 503 is retried.

use std::path::Path;

use serde_json::Value;

use crate::support::faulty_proxy::FaultyProxy;
use crate::support::*;

fn ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("repo__proj-{i}")).collect()
}

/// The upstream repository name of an instance, spelled as SWE-bench's images spell it (some
/// registries refuse `__` in a repository name).
fn upstream_name(id: &str) -> String {
    id.replace("__", "_1776_")
}

fn spec(reg: &str, upstream: &str, instances: &[String]) -> String {
    format!(
        "registry: {reg}/e2e\nbuilder: {{ repository: builder, context: agent }}\nbases:\n  repository: base\n  context: base\n  from: \"{upstream}/swebench/{{instance|replace(\\\"__\\\", \\\"_1776_\\\")}}:latest\"\n  build-args: {{ INSTANCE: \"{{instance}}\" }}\n  instances: [{}]\nagents:\n  repository: agent\n  variants:\n    - {{ name: one, entrypoint: [\"/bin/sh\"] }}\n",
        instances.join(", ")
    )
}

/// The spec's registry, the upstream registry with an image per instance, and a spec dir.
fn setup(n: usize) -> (Registry, Registry, tempfile::TempDir) {
    docker();
    let reg = Registry::start();
    let up = Registry::start();
    for id in ids(n) {
        import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/swebench/{}:latest", up.host, upstream_name(&id)));
    }
    let dir = spec_dir(&[
        ("agent/Dockerfile", "FROM scratch AS payload\nCOPY Dockerfile /agent/Dockerfile\n"),
        ("base/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG INSTANCE\nRUN echo \"base of $INSTANCE\" > /base.txt\n"),
        ("split-build.yml", &spec(&reg.host, &up.host, &ids(n))),
    ]);
    (reg, up, dir)
}

/// `plan` with `args`: its exit code, plan JSON and stderr.
fn plan(d: &Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = split_build(d, &[&["plan", "--timeout", "20s"], args].concat());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("plan JSON: {e}; stderr: {stderr}"));
    (out.status.code(), json, stderr)
}

fn bases(plan: &Value) -> Vec<(String, String, String)> {
    plan["bases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (b["instance"].as_str().unwrap().to_owned(), b["image"].as_str().unwrap().to_owned(), b["status"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The plan's notes about upstreams (others, such as the cache mode's, are left out).
fn upstream_notes(plan: &Value) -> Vec<&str> {
    plan["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).filter(|n| n.contains("upstream")).collect()
}

fn base<'a>(plan: &'a Value, instance: &str) -> &'a Value {
    plan["bases"].as_array().unwrap().iter().find(|b| b["instance"] == instance).unwrap()
}

#[test]
fn an_unreachable_upstream_keeps_every_base_tag_and_a_base_without_record_waits() {
    let (reg, mut up, dir) = setup(3);
    let d = dir.path();
    let out = split_build(d, &["build", "--stage", "bases"]);
    assert!(out.status.success(), "building the bases: {}", String::from_utf8_lossy(&out.stderr));

    // Reachable: every base a hit, under a tag with the upstream's digest in it.
    let (code, reachable, stderr) = plan(d, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let before = bases(&reachable);
    assert!(before.iter().all(|(_, _, s)| s == "hit"), "{before:?}");
    // Each base records what it was made from: the standard labels and the input record.
    let b1 = base(&reachable, "repo__proj-1");
    let tag = b1["image"].as_str().unwrap().rsplit_once(':').unwrap().1.to_owned();
    let config = reg.inspect(&format!("e2e/base:{tag}"), "--config").unwrap();
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.base.digest"], b1["from_digest"], "{labels}");
    assert_eq!(labels["org.opencontainers.image.base.name"], b1["from"]);
    let record: Value = serde_json::from_str(labels["dev.split-build.inputs"].as_str().unwrap()).unwrap();
    assert_eq!(record["from_digest"], b1["from_digest"]);
    assert_eq!(record["scheme"], "split-build/base/v1");
    assert_eq!(record["build_args"]["INSTANCE"], "repo__proj-1");

    // Unreachable: the same tags, every base a hit, one note naming the host.
    up.stop();
    let (code, down, stderr) = plan(d, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(bases(&down), before, "an outage changes no tag");
    let notes = upstream_notes(&down);
    assert_eq!(notes.len(), 1, "one note per unreachable host: {notes:?}");
    assert!(notes[0].contains(&up.host) && notes[0].contains("3 bases keep the digest"), "{notes:?}");

    // A new instance with the upstream unreachable: not planned, the plan fails and says why.
    std::fs::write(d.join("split-build.yml"), spec(&reg.host, &up.host, &ids(4))).unwrap();
    let (code, waiting, stderr) = plan(d, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("1 base not planned") && stderr.contains("repo__proj-4") && stderr.contains("--upstream-unresolved build"),
        "{stderr}"
    );
    assert_eq!(base(&waiting, "repo__proj-4")["status"], "unresolved");
    assert_eq!(bases(&waiting)[..3], before[..], "the others are still hits");
    assert_eq!(waiting["matrices"]["bases"]["include"], serde_json::json!([]), "left out of the bases matrix");
    let agent_items: Vec<&str> =
        waiting["matrices"]["agents"]["include"].as_array().unwrap().iter().map(|e| e["items"].as_str().unwrap()).collect();
    assert!(!agent_items.join(" ").contains("repo__proj-4"), "its agents wait: {agent_items:?}");
    let agent4 = waiting["agents"].as_array().unwrap().iter().find(|a| a["instance"] == "repo__proj-4").unwrap();
    assert_eq!(agent4["status"], "unresolved");

    // `--upstream-unresolved build`: today's behaviour, the reference alone in the hash.
    let (code, build, stderr) = plan(d, &["--upstream-unresolved", "build"]);
    assert_eq!(code, Some(0), "{stderr}");
    let b4 = base(&build, "repo__proj-4");
    assert_eq!((b4["status"].as_str(), b4["from_digest"].is_null()), (Some("cold"), true));
    assert_eq!(build["matrices"]["bases"]["include"][0]["items"], "repo__proj-4");

    // `run` with the upstream still down: the three bases are hits and their agents are made;
    // the fourth base fails as not planned and its agent waits.
    let out = split_build(d, &["run", "--timeout", "20s", "--report", "run.json", "--summary", "false"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_file(d, "run.json");
    let images = report["images"].as_array().unwrap();
    let of = |stage: &str, instance: &str| images.iter().filter(|i| i["stage"] == stage && i["instance"] == instance).collect::<Vec<_>>();
    let failed = of("bases", "repo__proj-4");
    assert!(failed.len() == 1 && failed[0]["status"] == "failed", "{failed:?}");
    assert!(failed[0].to_string().contains("upstream not resolved"), "{failed:?}");
    assert!(of("agents", "repo__proj-4").is_empty(), "its agent waits: {report:#}");
    for i in 1..=3 {
        let agents = of("agents", &format!("repo__proj-{i}"));
        assert!(agents.len() == 1 && agents[0]["status"] == "assembled", "{agents:?}");
    }

    // Back, with one upstream image moved: that base is warm and says why; the others hit.
    up.restart();
    import_and_push(&busybox_rootfs_tar(&[("moved", b"1")]), &format!("{}/swebench/{}:latest", up.host, upstream_name("repo__proj-1")));
    std::fs::write(d.join("split-build.yml"), spec(&reg.host, &up.host, &ids(3))).unwrap();
    let (code, back, stderr) = plan(d, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let now = bases(&back);
    assert_eq!(now[1..], before[1..], "the others are the same hits");
    let moved = base(&back, "repo__proj-1");
    assert_eq!(moved["status"], "warm");
    assert_ne!(now[0].1, before[0].1, "a moved upstream moves its base tag");
    let why = moved["why"].as_array().unwrap();
    let old = b1["from_digest"].as_str().unwrap();
    let new = moved["from_digest"].as_str().unwrap();
    assert_eq!(why.len(), 1, "{why:?}");
    let why = why[0].as_str().unwrap();
    assert!(why.starts_with("upstream moved ") && why.contains(&old[..19]) && why.contains(&new[..19]), "{why} ({old} → {new})");
    assert!(upstream_notes(&back).is_empty(), "{}", back["notes"]);
}

/// An upstream that answers 503 now and then is retried like the spec's registry: every
/// digest is resolved, nothing is noted.
#[test]
fn an_upstream_answering_503_is_retried() {
    docker();
    let reg = Registry::start();
    let up = Registry::start();
    for id in ids(4) {
        import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/swebench/{}:latest", up.host, upstream_name(&id)));
    }
    // With this seed the first two requests meet a 503 and no request can meet six (at most
    // five of the first thirty rolls are faults): deterministic whatever the interleaving.
    let proxy = FaultyProxy::start(&up.host, 0.3, 0.0, 344);
    let dir = spec_dir(&[
        ("agent/Dockerfile", "FROM scratch AS payload\n"),
        ("base/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"),
        ("split-build.yml", &spec(&reg.host, &proxy.host, &ids(4))),
    ]);
    let (code, p, stderr) = plan(dir.path(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        p["bases"].as_array().unwrap().iter().all(|b| b["from_digest"].as_str().is_some_and(|d| d.starts_with("sha256:"))),
        "{}",
        p["bases"]
    );
    assert!(upstream_notes(&p).is_empty(), "{}", p["notes"]);
    let faults = proxy.counts.unavailable.load(std::sync::atomic::Ordering::Relaxed);
    assert!(faults >= 2, "the proxy answered 503 ({faults} times)");
}
