//! Two platforms: bases and the builder are multi-platform indexes (made here by hand from
//! one image with a second, arm64-labelled config), agents come out as indexes whose
//! children each stack their platform's base and payload layers; the amd64 child runs.

use serde_json::Value;
use split_build::core::image_config::DOCKER_LIST;

use crate::support::*;

#[test]
fn two_platform_agents_are_indexes_of_stacked_children() {
    docker();
    let reg = Registry::start();
    let spec = format!(
        "registry: {}/mp\nplatforms: [linux/amd64, linux/arm64]\nbuilder: {{ repository: builder, version: v1 }}\nbases: {{ repository: base, context: base, from: \"{}/up/{{instance}}:1\", instances: [one, two] }}\nagents:\n  repository: agent\n  variants: [{{ name: x, entrypoint: [\"/bin/sh\", \"/agent/run.sh\"] }}]\n",
        reg.host, reg.host
    );
    let dir = spec_dir(&[
        ("base/Dockerfile", "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n"),
        ("Dockerfile", "FROM scratch AS payload\n"),
        ("split-build.yml", &spec),
    ]);
    let d = dir.path();
    for id in ["one", "two"] {
        import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/up/{id}:1", reg.host));
    }
    let out = split_build(d, &["plan"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["bases"].as_array().unwrap().len(), 4, "one entry per instance and platform");
    for b in plan["bases"].as_array().unwrap().iter().step_by(2) {
        let instance = b["instance"].as_str().unwrap();
        import_and_push(
            &busybox_rootfs_tar(&[("base.txt", format!("base of {instance}\n").as_bytes())]),
            &format!("{}/staging/base:{instance}", reg.host),
        );
        make_two_platform_index(&reg.host, &format!("staging/base:{instance}"), b["image"].as_str().unwrap().split_once('/').unwrap().1);
    }
    let mut t = tar::Builder::new(Vec::new());
    append_file(&mut t, "agent/run.sh", b"echo \"agent on $(cat /base.txt)\"\n", 0o755);
    import_and_push(&t.into_inner().unwrap(), &format!("{}/staging/builder:v1", reg.host));
    make_two_platform_index(&reg.host, "staging/builder:v1", "mp/builder:v1");

    let out = split_build(d, &["assemble", "--report", "r.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_file(d, "r.json");
    assert_eq!(report["images"].as_array().unwrap().len(), 2, "one record per agent image (an index over both platforms)");

    for instance in ["one", "two"] {
        let tag = format!("mp/agent:v1-{instance}-x");
        let raw = reg.inspect(&tag, "--raw").unwrap();
        assert_eq!(raw["mediaType"], DOCKER_LIST, "the agent is an index in the base's family");
        let archs: Vec<&str> =
            raw["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
        assert_eq!(archs, ["amd64", "arm64"]);
        let out = docker_cmd(&["run", "--rm", "--pull=always", &format!("{}/{tag}", reg.host)]);
        assert_eq!(out.trim(), format!("agent on base of {instance}"));
    }
    let out = split_build(d, &["plan"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan["agents"].as_array().unwrap().iter().all(|a| a["status"] == "hit"), "the index's provenance is read back");
}

/// A two-platform spec whose builder and bases are COPY-only (BuildKit builds a foreign
/// platform without emulation when no step runs a program): the base of an instance takes
/// `{arch}-{instance}.txt`, so removing one file makes one platform's leg fail.
fn two_platform_fixture(reg: &Registry, namespace: &str) -> tempfile::TempDir {
    let spec = format!(
        "registry: {host}/{namespace}\nplatforms: [linux/amd64, linux/arm64]\nbuilder: {{ repository: builder, version: v1 }}\nbases:\n  repository: base\n  context: base\n  inputs: [Dockerfile]\n  build-args: {{ INSTANCE: \"{{instance}}\" }}\n  from: \"{host}/{namespace}-up/{{instance}}:1\"\n  instances: [one, two]\nagents:\n  repository: agent\n  variants: [{{ name: x, entrypoint: [\"/bin/sh\", \"/agent/run.sh\"] }}]\n",
        host = reg.host
    );
    let dir = spec_dir(&[
        (
            "base/Dockerfile",
            "ARG BASE_IMAGE\nFROM $BASE_IMAGE\nARG TARGETARCH\nARG INSTANCE\nCOPY ${TARGETARCH}-${INSTANCE}.txt /base.txt\n",
        ),
        ("base/amd64-one.txt", "amd64 base of one\n"),
        ("base/arm64-one.txt", "arm64 base of one\n"),
        ("base/amd64-two.txt", "amd64 base of two\n"),
        ("base/arm64-two.txt", "arm64 base of two\n"),
        ("Dockerfile", "FROM scratch AS payload\nCOPY agent/ /agent/\n"),
        ("agent/run.sh", "echo \"agent on $(cat /base.txt)\"\n"),
        ("split-build.yml", &spec),
    ]);
    for id in ["one", "two"] {
        import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/{namespace}-staging/up:{id}", reg.host));
        make_two_platform_index(&reg.host, &format!("{namespace}-staging/up:{id}"), &format!("{namespace}-up/{id}:1"));
    }
    dir
}

fn run_ok(dir: &std::path::Path, args: &[&str]) -> Value {
    let out = split_build(dir, &[args, &["--report", "r.json"]].concat());
    assert!(out.status.success(), "split-build {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    json_file(dir, "r.json")
}

fn statuses(report: &Value, stage: &str) -> Vec<(String, String, String)> {
    let mut got: Vec<(String, String, String)> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["stage"] == stage)
        .map(|r| {
            (
                r["instance"].as_str().unwrap_or("").to_owned(),
                r["platform"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    got
}

fn tags(s: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    s.iter().map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned())).collect()
}

#[test]
fn per_platform_legs_merge_into_indexes_and_a_failed_leg_is_all_a_rerun_builds() {
    docker();
    let reg = Registry::start();
    let dir = two_platform_fixture(&reg, "legs");
    let d = dir.path();
    std::fs::remove_file(d.join("base/arm64-two.txt")).unwrap();
    let plan = |d: &std::path::Path| -> Value {
        let out = split_build(d, &["plan"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let jobs = |plan: &Value, stage: &str| -> Vec<(String, String)> {
        plan["matrices"][stage]["include"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["platform"].as_str().unwrap().to_owned(), e["items"].as_str().unwrap().to_owned()))
            .collect()
    };
    let first = plan(d);
    let base_tag = |instance: &str| -> String {
        let b = first["bases"].as_array().unwrap().iter().find(|b| b["instance"] == instance).unwrap();
        b["image"].as_str().unwrap().rsplit_once(':').unwrap().1.to_owned()
    };
    assert_eq!(jobs(&first, "builder"), [("linux/amd64".into(), "v1".into()), ("linux/arm64".into(), "v1".into())]);

    // The builder's legs, one job each as on two runners: no index until both are there.
    let amd = run_ok(d, &["build", "--stage", "builder", "--platform", "linux/amd64"]);
    assert_eq!(statuses(&amd, "builder"), tags(&[("", "linux/amd64", "built")]));
    assert!(reg.inspect("legs/builder:v1-linux-amd64", "--raw").is_some(), "the amd64 leg is pushed under its own tag");
    assert!(reg.inspect("legs/builder:v1", "--raw").is_none(), "no index while arm64 is missing");
    let arm = run_ok(d, &["build", "--stage", "builder", "--platform", "linux/arm64"]);
    assert_eq!(statuses(&arm, "builder"), tags(&[("", "linux/arm64", "built")]));
    assert_two_platform_index(&reg, "legs/builder", "v1");

    // The bases' legs: amd64 all good; arm64 of `two` fails (its file is missing).
    let amd = run_ok(d, &["build", "--stage", "bases", "--platform", "linux/amd64"]);
    assert_eq!(statuses(&amd, "bases"), tags(&[("one", "linux/amd64", "built"), ("two", "linux/amd64", "built")]));
    for i in ["one", "two"] {
        assert!(reg.inspect(&format!("legs/base:{}", base_tag(i)), "--raw").is_none(), "{i}: no index with one platform built");
    }
    let out = split_build(d, &["build", "--stage", "bases", "--platform", "linux/arm64", "--report", "r.json"]);
    assert!(!out.status.success(), "a failed leg fails its job");
    assert_eq!(statuses(&json_file(d, "r.json"), "bases"), tags(&[("one", "linux/arm64", "built"), ("two", "linux/arm64", "failed")]));
    assert_two_platform_index(&reg, "legs/base", &base_tag("one"));
    assert_two_platform_index(&reg, "legs/base", "one-latest");
    assert!(reg.inspect(&format!("legs/base:{}", base_tag("two")), "--raw").is_none(), "a failed leg leaves no index");
    let two_amd64 = reg.inspect(&format!("legs/base:{}-linux-amd64", base_tag("two")), "--raw").unwrap();

    // The plan knows the partial state: only two's arm64 leg is left.
    std::fs::write(d.join("base/arm64-two.txt"), "arm64 base of two\n").unwrap();
    let again = plan(d);
    assert_eq!(base_tag("two"), again["bases"][2]["image"].as_str().unwrap().rsplit_once(':').unwrap().1, "same tag: same inputs");
    assert_eq!(jobs(&again, "bases"), [("linux/arm64".into(), "two".into())]);
    assert!(jobs(&again, "builder").is_empty());
    // The rerun of every leg builds that one platform only.
    let rerun = run_ok(d, &["build", "--stage", "bases"]);
    assert_eq!(
        statuses(&rerun, "bases"),
        tags(&[
            ("one", "linux/amd64", "hit"),
            ("one", "linux/arm64", "hit"),
            ("two", "linux/amd64", "hit"),
            ("two", "linux/arm64", "built")
        ])
    );
    assert_eq!(
        reg.inspect(&format!("legs/base:{}-linux-amd64", base_tag("two")), "--raw").unwrap(),
        two_amd64,
        "the amd64 leg is untouched"
    );
    assert_two_platform_index(&reg, "legs/base", &base_tag("two"));

    // Agents over the merged indexes: indexes too, and the amd64 one runs.
    let agents = run_ok(d, &["assemble"]);
    assert_eq!(statuses(&agents, "agents").len(), 2);
    for i in ["one", "two"] {
        assert_two_platform_index(&reg, "legs/agent", &format!("v1-{i}-x"));
        let out = docker_cmd(&["run", "--rm", "--pull=always", "--platform", "linux/amd64", &format!("{}/legs/agent:v1-{i}-x", reg.host)]);
        assert_eq!(out.trim(), format!("agent on amd64 base of {i}"));
    }
}

#[test]
fn run_makes_two_platform_indexes_for_the_builder_every_base_and_every_agent() {
    docker();
    let reg = Registry::start();
    let dir = two_platform_fixture(&reg, "whole");
    let d = dir.path();
    let report = run_ok(d, &["run"]);
    assert_eq!(report["images"].as_array().unwrap().iter().filter(|r| r["status"] == "failed").count(), 0, "{report}");
    assert_two_platform_index(&reg, "whole/builder", "v1");
    let out = split_build(d, &["plan"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    for b in plan["bases"].as_array().unwrap() {
        assert_eq!(b["status"], "hit", "{b}");
        assert_two_platform_index(&reg, "whole/base", b["image"].as_str().unwrap().rsplit_once(':').unwrap().1);
    }
    for i in ["one", "two"] {
        assert_two_platform_index(&reg, "whole/agent", &format!("v1-{i}-x"));
        let out = docker_cmd(&["run", "--rm", "--pull=always", "--platform", "linux/amd64", &format!("{}/whole/agent:v1-{i}-x", reg.host)]);
        assert_eq!(out.trim(), format!("agent on amd64 base of {i}"));
    }
    assert!(plan["agents"].as_array().unwrap().iter().all(|a| a["status"] == "hit"));
}
