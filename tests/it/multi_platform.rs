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
