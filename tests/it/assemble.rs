//! The online plan and `assemble --method append` against a real registry: bases and a
//! builder image pushed from local files, agents written at the registry, checked by skopeo
//! and by `docker run`; auth by flags and by docker config; a proxy that fails requests.

use std::path::Path;

use serde_json::Value;

use crate::support::faulty_proxy::FaultyProxy;
use crate::support::token_proxy::TokenProxy;
use crate::support::*;

const INSTANCES: [&str; 3] = ["proj__proj-1", "proj__proj-2", "lib__lib-9"];

/// A spec for `registry` (the host split-build talks to) of three instances and two
/// variants (`alpha`, `beta`), whose upstream images live on `upstream`.
pub(crate) fn alpha_beta_spec(registry: &str, upstream: &str) -> tempfile::TempDir {
    let spec = format!(
        r#"registry: {registry}/t
builder: {{ repository: builder, version: "v1" }}
bases:
  repository: base
  context: base
  from: "{upstream}/up/{{instance|replace(\"__\", \"_1776_\")}}:1"
  instances: [{}]
agents:
  repository: agent
  variants:
    - name: alpha
      entrypoint: ["/bin/sh", "/agent/run.sh"]
      env: {{ VARIANT: alpha }}
      labels: {{ team: evals }}
      workdir: /tmp
    - name: beta
      entrypoint: ["/bin/sh", "/agent/run.sh"]
      cmd: ["extra"]
      env: {{ VARIANT: beta }}
"#,
        INSTANCES.join(", ")
    );
    spec_dir(&[
        ("Dockerfile", "FROM scratch AS payload\nCOPY run.sh /agent/run.sh\n"),
        // The base context is its own folder: reports and summaries written next to the
        // spec must not change the base hash (inputs default to every file of the context).
        ("base/Dockerfile", "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n"),
        ("split-build.yml", &spec),
    ])
}

fn plan(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["plan", "--summary", "summary.md"];
    args.extend(extra);
    let out = split_build(dir, &args);
    assert!(out.status.success(), "plan: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Pushes an upstream image for every instance to `reg`.
pub(crate) fn push_upstreams(reg: &Registry) {
    for id in INSTANCES {
        import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/up/{}:1", reg.host, id.replace("__", "_1776_")));
    }
}

/// Pushes the builder image (the agent's `run.sh`) as `tag`.
fn push_builder(tag: &str) {
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "agent/run.sh", b"echo \"agent $VARIANT on $(cat /base.txt) in $(pwd) $*\"\n", 0o755);
    import_and_push(&b.into_inner().unwrap(), tag);
}

/// The spec for `reg`, after pushing the upstream images and making what the build jobs
/// would: each planned base (the first as a Docker image, the others converted to OCI with
/// skopeo) and the builder image. Returns the spec's directory and the plan then.
pub(crate) fn fixtures(reg: &Registry) -> (tempfile::TempDir, Value) {
    let spec = alpha_beta_spec(&reg.host, &reg.host);
    let dir = spec.path();
    push_upstreams(reg);
    let creds: Vec<String> =
        reg.auth.iter().flat_map(|(u, p)| [format!("--registry-username={u}"), format!("--registry-password={p}")]).collect();
    let creds: Vec<&str> = creds.iter().map(String::as_str).collect();
    let p = plan(dir, &creds);
    for (k, b) in p["bases"].as_array().unwrap().iter().enumerate() {
        let image = b["image"].as_str().unwrap();
        let instance = b["instance"].as_str().unwrap();
        let text = format!("base of {instance}\n");
        let rootfs = busybox_rootfs_tar(&[("base.txt", text.as_bytes())]);
        if k == 0 {
            import_and_push(&rootfs, image);
        } else {
            let staging = format!("{}/staging/base:{k}", reg.host);
            import_and_push(&rootfs, &staging);
            let out = std::process::Command::new(require("skopeo", "skopeo"))
                .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", "oci"])
                .args(reg.auth.as_ref().map(|(u, p)| format!("--src-creds={u}:{p}")))
                .args(reg.auth.as_ref().map(|(u, p)| format!("--dest-creds={u}:{p}")))
                .arg(format!("docker://{staging}"))
                .arg(format!("docker://{image}"))
                .output()
                .unwrap();
            assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    push_builder(p["builder"]["image"].as_str().unwrap());
    let p = plan(dir, &creds);
    (spec, p)
}

fn statuses(plan: &Value, stage: &str) -> Vec<String> {
    plan[stage].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap().to_owned()).collect()
}

fn check_agents(reg: &Registry, plan: &Value) {
    for a in plan["agents"].as_array().unwrap() {
        let image = a["image"].as_str().unwrap();
        let (repo_tag, base) = (image.split_once('/').unwrap().1, a["base"].as_str().unwrap().split_once('/').unwrap().1);
        let agent = reg.inspect(repo_tag, "").unwrap_or_else(|| panic!("skopeo cannot see {image}"));
        let base_info = reg.inspect(base, "").unwrap();
        let builder = reg.inspect("t/builder:v1", "").unwrap();
        let mut want: Vec<Value> = base_info["Layers"].as_array().unwrap().clone();
        want.extend(builder["Layers"].as_array().unwrap().iter().cloned());
        assert_eq!(agent["Layers"].as_array().unwrap(), &want, "{image}: layers = base layers + payload layers");
        let config = reg.inspect(repo_tag, "--config").unwrap();
        let variant = a["variant"].as_str().unwrap();
        assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/bin/sh", "/agent/run.sh"]));
        assert!(config["config"]["Env"].as_array().unwrap().iter().any(|e| e == &format!("VARIANT={variant}")));
        // The label names the base as split-build reached it (maybe through a proxy).
        let label = config["config"]["Labels"]["org.opencontainers.image.base.name"].as_str().unwrap();
        assert_eq!(label.split_once('/').unwrap().1, base, "{image}");
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), want.len());
        let out = docker_cmd(&["run", "--rm", "--pull=always", image]);
        let instance = a["instance"].as_str().unwrap();
        let want_out = if variant == "alpha" {
            format!("agent alpha on base of {instance} in /tmp")
        } else {
            format!("agent beta on base of {instance} in / extra")
        };
        assert_eq!(out.trim(), want_out, "{image}");
    }
}

#[test]
fn online_plan_then_assemble_at_the_registry() {
    docker();
    let reg = Registry::start();
    let (dir, p) = fixtures(&reg);
    assert_eq!(p["builder"]["status"], "hit");
    assert_eq!(statuses(&p, "bases"), ["hit"; 3]);
    assert_eq!(statuses(&p, "agents"), ["cold"; 6]);
    assert!(p["bases"][0]["from_digest"].as_str().unwrap().starts_with("sha256:"), "upstream digest resolved");
    assert!(p["matrices"]["bases"]["include"].as_array().unwrap().is_empty(), "only missing items enter a matrix");

    let out = split_build(dir.path(), &["assemble", "--report", "report.json", "--summary", "assemble.md"]);
    assert!(out.status.success(), "assemble: {}", String::from_utf8_lossy(&out.stderr));
    let report = json_file(dir.path(), "report.json");
    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), 6);
    assert!(images.iter().all(|i| i["status"] == "assembled"), "{report}");
    let total_pushed: u64 = images.iter().map(|i| i["bytes_pushed"].as_u64().unwrap()).sum();
    assert!(total_pushed < 64 * 1024, "only configs and manifests are uploaded, not layers: {total_pushed} bytes");
    assert!(std::fs::read_to_string(dir.path().join("assemble.md")).unwrap().contains("✅ **6 images**: 6 made"));
    check_agents(&reg, &p);

    // Everything exists now: the plan says so, and a rerun writes nothing.
    let again = plan(dir.path(), &[]);
    assert_eq!(statuses(&again, "agents"), ["hit"; 6]);
    let out = split_build(dir.path(), &["assemble", "--report", "report2.json"]);
    assert!(out.status.success());
    let report = json_file(dir.path(), "report2.json");
    assert!(report["images"].as_array().unwrap().iter().all(|i| i["status"] == "hit"));

    // A moved upstream gives a new base tag, so its agents are no longer current.
    import_and_push(&busybox_rootfs_tar(&[("moved", b"1")]), &format!("{}/up/proj_1776_proj-1:1", reg.host));
    let moved = plan(dir.path(), &[]);
    assert_ne!(moved["bases"][0]["image"], p["bases"][0]["image"]);
    assert_eq!(moved["bases"][0]["status"], "cold", "no older build of the instance to use as cache");
    // With an `{instance}-latest` (the build job moves it), the base is warm.
    import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/t/base:proj__proj-1-latest", reg.host));
    let moved = plan(dir.path(), &[]);
    assert_eq!(moved["bases"][0]["status"], "warm");
    assert_eq!(moved["bases"][0]["cache_from"], format!("{}/t/base:proj__proj-1-latest", reg.host));
    assert_eq!(statuses(&moved, "agents")[..2], ["cold", "cold"]);
}

#[test]
fn items_pick_instances_and_unknown_ones_are_refused() {
    docker();
    let reg = Registry::start();
    let (dir, _) = fixtures(&reg);
    let out = split_build(dir.path(), &["assemble", "--items", "lib__lib-9", "--report", "r.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_file(dir.path(), "r.json");
    let made: Vec<&str> = report["images"].as_array().unwrap().iter().map(|i| i["instance"].as_str().unwrap()).collect();
    assert_eq!(made, ["lib__lib-9", "lib__lib-9"]);
    let out = split_build(dir.path(), &["assemble", "--items", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`nope`"));
}

#[test]
fn a_missing_base_fails_that_image_only() {
    docker();
    let reg = Registry::start();
    let (dir, p) = fixtures(&reg);
    // Delete one base's manifest: its agents cannot be made, the others can.
    let base = p["bases"][1]["image"].as_str().unwrap();
    let digest = reg.inspect(base.split_once('/').unwrap().1, "").unwrap()["Digest"].as_str().unwrap().to_owned();
    let out = std::process::Command::new(require("skopeo", "skopeo"))
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{}@{digest}", base.rsplit_once(':').unwrap().0))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = split_build(dir.path(), &["assemble", "--report", "r.json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_file(dir.path(), "r.json");
    let images = report["images"].as_array().unwrap();
    let failed: Vec<&Value> = images.iter().filter(|i| i["status"] == "failed").collect();
    assert_eq!(failed.len(), 2, "{report}");
    assert!(failed.iter().all(|f| f["error"].as_str().unwrap().contains("does not exist")), "{report}");
    assert_eq!(images.iter().filter(|i| i["status"] == "assembled").count(), 4);
}

#[test]
fn credentials_from_flags_and_from_docker_config() {
    docker();
    let reg = Registry::start_with_auth("alice", "s3cret-pw");
    docker_login(&reg);
    let (dir, _) = fixtures(&reg);

    let out = split_build(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(1), "anonymous plan against an auth registry fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("user name and password") || stderr.contains("401"), "{stderr}");

    let out = split_build(
        dir.path(),
        &["assemble", "--items", "proj__proj-1", "--registry-username", "alice", "--registry-password", "s3cret-pw"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret-pw"), "the password never reaches the logs");

    let config_dir = dir.path().join("docker-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw")
    };
    std::fs::write(config_dir.join("config.json"), format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.host)).unwrap();
    let out = SplitBuild::new(dir.path()).args(["assemble", "--report", "r.json"]).env("DOCKER_CONFIG", &config_dir).output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read_to_string(dir.path().join("r.json")).unwrap();
    assert!(!report.contains("s3cret-pw"));
    let out = SplitBuild::new(dir.path()).arg("plan").env("DOCKER_CONFIG", &config_dir).output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(statuses(&p, "agents"), ["hit"; 6]);
}

fn docker_login(reg: &Registry) {
    let (u, p) = reg.auth.clone().unwrap();
    let out = std::process::Command::new(docker())
        .args(["login", "-u", &u, "--password-stdin", &reg.host])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(p.as_bytes())?;
            c.wait_with_output()
        });
    assert!(out.unwrap().status.success(), "docker login");
}

#[test]
fn every_image_is_made_through_a_faulty_proxy() {
    docker();
    let reg = Registry::start();
    let proxy = FaultyProxy::start(&reg.host, 0.15, 0.10, 0x5eed);
    // split-build talks through the proxy; fixtures are pushed straight to the registry
    // under the proxy's name, since both name the same storage only through the path.
    let (dir, p) = fixtures_behind(&reg, &proxy.host);
    let out = split_build(dir.path(), &["assemble", "--report", "r.json", "--concurrency", "8"]);
    assert!(out.status.success(), "assemble through faults: {}", String::from_utf8_lossy(&out.stderr));
    let report = json_file(dir.path(), "r.json");
    assert!(report["images"].as_array().unwrap().iter().all(|i| i["status"] == "assembled"), "{report}");
    let retries: u64 = report["images"].as_array().unwrap().iter().map(|i| i["retries"].as_u64().unwrap()).sum();
    let c = &proxy.counts;
    use std::sync::atomic::Ordering::Relaxed;
    eprintln!(
        "proxy: {} requests, {} answered 503, {} dropped; {retries} retries by assemble",
        c.requests.load(Relaxed),
        c.unavailable.load(Relaxed),
        c.dropped.load(Relaxed)
    );
    assert!(c.unavailable.load(Relaxed) > 0 && c.dropped.load(Relaxed) > 0, "the proxy injected faults");
    assert!(retries > 0);
    // Checked straight at the registry: every agent is whole and runs.
    let direct: Value = serde_json::from_str(&serde_json::to_string(&p).unwrap().replace(&proxy.host, &reg.host)).unwrap();
    check_agents(&reg, &direct);
}

/// The spec for `front` (a proxy in front of `reg`), after pushing upstream images, the
/// planned bases and the builder straight to `reg`: its directory and its plan.
pub(crate) fn fixtures_behind(reg: &Registry, front: &str) -> (tempfile::TempDir, Value) {
    fixtures_behind_as(reg, front, &[])
}

/// [`fixtures_behind`] for a front that wants `creds` (flags) from split-build.
pub(crate) fn fixtures_behind_as(reg: &Registry, front: &str, creds: &[&str]) -> (tempfile::TempDir, Value) {
    let spec = alpha_beta_spec(front, &reg.host);
    let dir = spec.path();
    push_upstreams(reg);
    let p = plan(dir, creds);
    for b in p["bases"].as_array().unwrap() {
        let tag = b["image"].as_str().unwrap().replacen(front, &reg.host, 1);
        let instance = b["instance"].as_str().unwrap();
        import_and_push(&busybox_rootfs_tar(&[("base.txt", format!("base of {instance}\n").as_bytes())]), &tag);
    }
    push_builder(&format!("{}/t/builder:v1", reg.host));
    (spec, p)
}

#[test]
fn bearer_tokens_cover_every_repository_an_append_touches() {
    docker();
    let reg = Registry::start();
    let front = TokenProxy::start(&reg.host);
    let (dir, p) = fixtures_behind(&reg, &front.host);
    let out = split_build(dir.path(), &["assemble", "--report", "r.json"]);
    assert!(out.status.success(), "assemble behind a token registry: {}", String::from_utf8_lossy(&out.stderr));
    let report = json_file(dir.path(), "r.json");
    let images = report["images"].as_array().unwrap();
    assert!(images.iter().all(|i| i["status"] == "assembled"), "{report}");
    let pushed: u64 = images.iter().map(|i| i["bytes_pushed"].as_u64().unwrap()).sum();
    assert!(pushed < 64 * 1024, "layers were mounted, not uploaded: {pushed} bytes");
    let issued = front.issued.lock().unwrap().clone();
    assert!(
        issued.iter().any(|s| s.contains("repository:t/agent:pull,push") && s.contains("repository:t/builder:pull")),
        "one token covers the agent repository and the mount source: {issued:?}"
    );
    let direct: Value = serde_json::from_str(&serde_json::to_string(&p).unwrap().replace(&front.host, &reg.host)).unwrap();
    check_agents(&reg, &direct);
}
