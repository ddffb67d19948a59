//! A registry that is slow, broken or hostile, and output a runner could mistake for
//! workflow commands: each test puts one behaviour of the hostile front (support::hostile) or
//! one shape of bad input in front of the binary and checks that credentials stay with their
//! registry, what a registry sends is checked and bounded, waits end, and one bad image does
//! not sink the others.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::assemble::{alpha_beta_spec, fixtures_behind, fixtures_behind_as};
use crate::support::hostile::{Behaviour, Hostile};
use crate::support::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn agents(report: &Value) -> Vec<&Value> {
    report["images"].as_array().unwrap().iter().filter(|i| i["stage"] == "agents").collect()
}

fn assemble(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["assemble", "--report", "report.json", "--summary", "summary.md"];
    args.extend(extra);
    split_build(dir, &args)
}

#[test]
fn credentials_go_only_to_their_own_registry() {
    let reg = Registry::start();
    let front = Hostile::start(
        &reg.host,
        Behaviour {
            basic: Some(("u".into(), "pw-front-only".into())),
            uploads_elsewhere: true,
            blobs_elsewhere: true,
            ..Behaviour::default()
        },
    );
    let creds = ["--registry-username=u", "--registry-password=pw-front-only"];
    let (spec, _) = fixtures_behind_as(&reg, &front.host, &creds);
    let out = assemble(spec.path(), &creds);
    assert!(out.status.success(), "{}", text(&out));
    let elsewhere = front.seen_elsewhere();
    match reg.server {
        // distribution answers the config's single POST with 202 and a session `Location`,
        // which the front sends elsewhere: the PUT follows it there without credentials.
        Server::Distribution => {
            assert!(
                elsewhere.iter().any(|s| s.method == "PUT" && s.target.contains("/blobs/uploads/")),
                "uploads went elsewhere: {elsewhere:?}"
            )
        }
        // NORA takes the single POST (201): no session, no `Location` to follow elsewhere.
        Server::Nora => assert!(!elsewhere.iter().any(|s| s.target.contains("/blobs/uploads/")), "no upload session: {elsewhere:?}"),
    }
    assert!(elsewhere.iter().any(|s| s.method == "GET" && s.target.contains("/blobs/sha256:")), "blob reads went elsewhere: {elsewhere:?}");
    let leaked: Vec<_> = elsewhere.iter().filter(|s| s.authorization.is_some()).collect();
    assert!(leaked.is_empty(), "credentials went to another origin: {leaked:?}");
}

#[test]
fn flag_credentials_never_reach_the_upstream_registry() {
    let reg = Registry::start();
    // The upstream asks for Basic credentials: only a client that has some for it sends them.
    let upstream = Hostile::start(&reg.host, Behaviour { basic: Some(("hub".into(), "hubpw".into())), ..Behaviour::default() });
    let spec = alpha_beta_spec(&reg.host, &upstream.host);
    // The upstream refuses the plan (no credentials for it): without a recorded digest its
    // bases would wait, so plan them under the reference alone.
    let out = split_build(
        spec.path(),
        &["plan", "--registry-username=u", "--registry-password=ghcr-token-123", "--upstream-unresolved", "build"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let seen = upstream.seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the plan asked the upstream for digests");
    let sent: Vec<_> = seen.iter().filter(|s| s.authorization.as_deref().is_some_and(|a| a.contains(&b64("u:ghcr-token-123")))).collect();
    assert!(sent.is_empty(), "the spec registry's credentials went to the upstream: {sent:?}");
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("user name and password")), "{plan:#}");
}

#[test]
fn every_secret_is_masked_before_anything_is_read() {
    let spec = "registry: 127.0.0.1:1/t\nbuilder: { repository: builder, version: v1 }\nbases:\n  repository: base\n  from: \"up/{instance}:1\"\n  instances: /proc/self/environ\nagents:\n  repository: agent\n  variants: [{ name: a }]\n";
    let dir = spec_dir(&[("split-build.yml", spec), ("Dockerfile", "FROM scratch AS payload\n")]);
    let config = dir.path().join("docker");
    write_files(&config, &[("config.json", &format!(r#"{{"auths": {{"q.example": {{"auth": "{}"}}}}}}"#, b64("cfguser:cfgpw-456")))]);
    let out = SplitBuild::new(dir.path())
        .args(["plan", "--offline", "--registry-username=u", "--registry-password=flagpw-789"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_TOKEN", "ghs_sekrit123")
        .env("DOCKER_CONFIG", &config)
        .output();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let first_other = lines.iter().position(|l| !l.starts_with("::add-mask::")).unwrap_or(lines.len());
    let masked: Vec<&str> = lines[..first_other].iter().map(|l| l.trim_start_matches("::add-mask::")).collect();
    for secret in [
        "ghs_sekrit123".to_owned(),
        b64("x-access-token:ghs_sekrit123"),
        "cfgpw-456".to_owned(),
        b64("cfguser:cfgpw-456"),
        format!("Basic {}", b64("cfguser:cfgpw-456")),
        "flagpw-789".to_owned(),
        b64("u:flagpw-789"),
        format!("Basic {}", b64("u:flagpw-789")),
    ] {
        assert!(masked.contains(&secret.as_str()), "`{secret}` is not masked before the first other line: {lines:?}");
    }
    // The instances file is not the spec's own text: its contents are never echoed.
    let all = text(&out);
    let echoed: Vec<&str> = all.lines().filter(|l| !l.starts_with("::add-mask::") && l.contains("sekrit")).collect();
    assert!(echoed.is_empty(), "{echoed:?}");
    assert!(stdout.contains("::error file=/proc/self/environ,line=1,col=1::"), "{stdout}");
}

#[test]
fn a_registry_that_echoes_the_authorization_header_has_it_cut_out() {
    let reg = Registry::start();
    let front = Hostile::start(
        &reg.host,
        Behaviour {
            basic: Some(("u".into(), "pw-echoed".into())),
            echo_authorization: Some("/t/agent/manifests/".into()),
            ..Behaviour::default()
        },
    );
    let creds = ["--registry-username=u", "--registry-password=pw-echoed"];
    let (spec, _) = fixtures_behind_as(&reg, &front.host, &creds);
    let out = assemble(spec.path(), &creds);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = format!(
        "{}{}{}",
        text(&out),
        std::fs::read_to_string(spec.path().join("report.json")).unwrap(),
        std::fs::read_to_string(spec.path().join("summary.md")).unwrap()
    );
    assert!(all.contains("denied for"), "the registry's words are kept: {all}");
    for form in ["pw-echoed".to_owned(), b64("u:pw-echoed")] {
        assert!(!all.contains(&form), "`{form}` was printed");
    }
}

#[test]
fn a_manifest_whose_bytes_are_not_its_digest_is_refused() {
    let reg = Registry::start();
    let front = Hostile::start(&reg.host, Behaviour { tamper_manifests: Some("/t/base/manifests/".into()), ..Behaviour::default() });
    let (spec, _) = fixtures_behind(&reg, &front.host);
    let out = assemble(spec.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json_file(spec.path(), "report.json");
    let agents = agents(&report);
    assert_eq!(agents.len(), 6);
    for a in &agents {
        assert_eq!(a["status"], "failed", "{a}");
        assert!(a["error"].as_str().unwrap().contains("hash to"), "{a}");
    }
    assert!(reg.inspect("t/agent:v1-proj__proj-1-alpha", "--raw").is_none(), "no agent was written on a tampered base");
    assert!(reg.inspect("t/builder:v1", "--raw").is_some(), "the check above can see images");
}

#[test]
fn a_huge_manifest_is_refused_at_the_limit_with_bounded_memory() {
    let reg = Registry::start();
    let front =
        Hostile::start(&reg.host, Behaviour { huge_manifests: Some(("/t/base/manifests/".into(), 200 << 20)), ..Behaviour::default() });
    let (spec, _) = fixtures_behind(&reg, &front.host);
    let time = require("time", "time");
    let out = SplitBuild::new(spec.path())
        .args(["assemble", "--report", "report.json"])
        .under(time.to_str().unwrap(), &["-f", "maxrss-kb=%M"])
        .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json_file(spec.path(), "report.json");
    for a in agents(&report) {
        assert!(a["error"].as_str().unwrap().contains("over the 4 MiB limit"), "{a}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss_kb: u64 = stderr.rsplit("maxrss-kb=").next().unwrap().trim().parse().unwrap();
    eprintln!("peak memory with 200 MB manifests for 6 agents: {} MB", rss_kb / 1024);
    assert!(rss_kb < 150 * 1024, "peak memory {rss_kb} kB");
}

#[test]
fn a_stalled_registry_fails_the_command_within_its_timeout() {
    let reg = Registry::start();
    let front = Hostile::start(&reg.host, Behaviour { stall: Some("/v2/".into()), ..Behaviour::default() });
    let spec = alpha_beta_spec(&front.host, &reg.host);
    let t = Instant::now();
    let out = SplitBuild::new(spec.path()).args(["plan", "--timeout", "3s"]).under("timeout", &["90"]).output();
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no answer within 3s"), "{}", text(&out));
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!("a stalled registry failed the plan in {took:?} with --timeout 3s");
}

#[test]
fn a_retry_after_beyond_the_timeout_fails_that_image_with_the_registrys_words() {
    let reg = Registry::start();
    let front = Hostile::start(
        &reg.host,
        Behaviour { rate_limit: Some(("PUT".into(), "/t/agent/manifests/".into(), 3600)), ..Behaviour::default() },
    );
    let (spec, _) = fixtures_behind(&reg, &front.host);
    let t = Instant::now();
    let out =
        SplitBuild::new(spec.path()).args(["assemble", "--report", "report.json", "--timeout", "20s"]).under("timeout", &["90"]).output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(t.elapsed() < Duration::from_secs(30), "took {:?}", t.elapsed());
    for a in agents(&json_file(spec.path(), "report.json")) {
        let e = a["error"].as_str().unwrap();
        assert!(e.contains("Retry-After") && e.contains("1h") && e.contains("2000/minute"), "{e}");
    }
}

#[test]
fn one_agent_the_registry_will_not_describe_does_not_sink_the_rest() {
    let reg = Registry::start();
    let front = Hostile::start(
        &reg.host,
        Behaviour { fail_manifests: Some("/t/agent/manifests/v1-proj__proj-1-alpha".into()), ..Behaviour::default() },
    );
    let (spec, _) = fixtures_behind(&reg, &front.host);
    let out = assemble(spec.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let report = json_file(spec.path(), "report.json");
    let agents = agents(&report);
    assert_eq!(agents.len(), 6, "{report:#}");
    assert!(agents.iter().all(|a| a["status"] == "assembled"), "{report:#}");
    let plan = split_build(spec.path(), &["plan"]);
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert!(plan["notes"].to_string().contains("v1-proj__proj-1-alpha") && plan["notes"].to_string().contains("500"), "{}", plan["notes"]);
}

#[test]
fn no_user_text_starts_a_workflow_command() {
    let dir = spec_dir(&[]);
    let bad = "x\n::warning::pwned";
    for run in [
        SplitBuild::new(dir.path()).args(["plan", "--offline", "--builder-version", bad]),
        SplitBuild::new(dir.path()).args(["plan", "--offline", "--spec", bad]),
        SplitBuild::new(dir.path()).env("GITHUB_ACTIONS", "true").env("INPUT_COMMAND", bad),
    ] {
        let out = run.output();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        for line in text(&out).lines() {
            assert!(!line.trim_start().starts_with("::warning"), "a raw workflow command: {line:?}\n{}", text(&out));
        }
    }
}

/// Pushes, through the library's own client, `instances` bases shaped like SWE-bench's (five
/// layers every base shares, one small layer of its own) under the tags the plan names, and a
/// builder with one payload layer under each of `versions`.
fn push_shared_layer_bases(reg: &Registry, plan: &Value, versions: &[&str]) {
    use split_build::adapters::registry::{Registry as Client, Stats};
    use split_build::core::image_config::{OCI_CONFIG, OCI_MANIFEST};
    use split_build::core::image_ref::{Digest, ImageRef};
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A registry that wants a password gets it through a docker config naming its host.
    let config = reg.auth.as_ref().map(|(u, p)| format!(r#"{{"auths": {{"{}": {{"username": "{u}", "password": "{p}"}}}}}}"#, reg.host));
    rt.block_on(async {
        let client = Client::new(split_build::adapters::credentials::Credentials::new(None, config, None), &[], 16).unwrap();
        let s = Stats::default();
        let layer = |seed: &str| bytes::Bytes::from(format!("layer {seed} ").repeat(4096));
        let put_image = |image: ImageRef, layers: Vec<bytes::Bytes>| {
            let (client, s) = (&client, &s);
            async move {
                let mut descriptors = Vec::new();
                for l in &layers {
                    let d = client.upload_blob(&image.registry, &image.repository, l.clone(), s).await.unwrap();
                    descriptors.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": l.len()}));
                }
                let diff_ids: Vec<String> = layers.iter().map(|l| Digest::sha256_of(l).to_string()).collect();
                let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}});
                let config = bytes::Bytes::from(serde_json::to_vec(&config).unwrap());
                let c = client.upload_blob(&image.registry, &image.repository, config.clone(), s).await.unwrap();
                let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": c.to_string(), "size": config.len()}, "layers": descriptors});
                let tag = image.tag.as_ref().unwrap().to_string();
                client.put_manifest(&image, &tag, OCI_MANIFEST, bytes::Bytes::from(serde_json::to_vec(&manifest).unwrap()), s).await.unwrap();
            }
        };
        for b in plan["bases"].as_array().unwrap() {
            let mut layers: Vec<bytes::Bytes> = (0..5).map(|i| layer(&format!("shared-{i}"))).collect();
            layers.push(layer(b["instance"].as_str().unwrap()));
            put_image(b["image"].as_str().unwrap().parse().unwrap(), layers).await;
        }
        for v in versions {
            put_image(format!("{}/t/builder:{v}", reg.host).parse().unwrap(), vec![layer("payload")]).await;
        }
    });
}

/// A registry holding 24 SWE-bench-shaped bases (see [`push_shared_layer_bases`]) and the
/// builder under each of `versions`, and the spec's directory (24 instances x 2 variants),
/// planned with its plan written to `plan.json`.
fn shared_layer_fixtures(versions: &[&str]) -> (Registry, tempfile::TempDir) {
    let reg = Registry::start();
    let dir = shared_layer_fixtures_on(&reg, 24, versions, &[]);
    (reg, dir)
}

/// [`shared_layer_fixtures`] on `reg` with `count` instances, the plan run with `env`.
fn shared_layer_fixtures_on(reg: &Registry, count: usize, versions: &[&str], env: &[(&str, String)]) -> tempfile::TempDir {
    let instances: Vec<String> = (0..count).map(|i| format!("inst-{i}")).collect();
    let spec = format!(
        "registry: {}/t\nbuilder: {{ repository: builder, version: v1 }}\nbases:\n  repository: base\n  context: base\n  from: \"{}/up/{{instance}}:1\"\n  instances: [{}]\nagents:\n  repository: agent\n  variants: [{{ name: a }}, {{ name: b }}]\n",
        reg.host,
        reg.host,
        instances.join(", ")
    );
    let dir = spec_dir(&[
        ("split-build.yml", &spec),
        ("base/Dockerfile", "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n"),
        ("Dockerfile", "FROM scratch AS payload\n"),
    ]);
    let out = env.iter().fold(SplitBuild::new(dir.path()), |c, (k, v)| c.env(k, v)).args(["plan", "--plan-file", "plan.json"]).output();
    assert!(out.status.success(), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    push_shared_layer_bases(reg, &plan, versions);
    dir
}

#[test]
fn shared_layers_are_mounted_once_at_concurrency_32() {
    let versions = ["v1", "v2", "v3"];
    let (_reg, dir) = shared_layer_fixtures(&versions);
    for v in versions {
        let out = split_build(dir.path(), &["assemble", "--concurrency", "32", "--builder-version", v, "--report", "report.json"]);
        assert!(out.status.success(), "run {v}: {}", text(&out));
        let report = json_file(dir.path(), "report.json");
        let agents = agents(&report);
        assert_eq!(agents.iter().filter(|a| a["status"] == "assembled").count(), 48, "run {v}: {report:#}");
        // Per agent: the base's manifest and config, its own layer's mount, the config upload
        // (two requests) and the manifest; plus each shared blob (five layers and the payload)
        // mounted once for all of them.
        let requests: u64 = agents.iter().map(|a| a["requests"].as_u64().unwrap()).sum();
        eprintln!("run {v}: {requests} requests for 48 agents");
        assert!(requests <= 48 * 6 + 6 + 8, "run {v}: {requests} requests: shared blobs were mounted more than once");
    }
}

#[test]
fn parallel_jobs_on_shared_layers_all_succeed() {
    // Four agents jobs at once, as a workflow's matrix runs them, mounting the same shared
    // blobs into one repository from four processes.
    let (_reg, dir) = shared_layer_fixtures(&["v1"]);
    let instances: Vec<String> = (0..24).map(|i| format!("inst-{i}")).collect();
    let jobs: Vec<std::process::Child> = instances
        .chunks(6)
        .enumerate()
        .map(|(k, items)| {
            SplitBuild::new(dir.path())
                .args(["assemble", "--plan", "plan.json", "--max-writes-per-second", "0", "--report"])
                .arg(format!("job-{k}.json"))
                .arg("--items")
                .arg(items.join(" "))
                .command()
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (k, job) in jobs.into_iter().enumerate() {
        let out = job.wait_with_output().unwrap();
        assert!(out.status.success(), "job {k}: {}", String::from_utf8_lossy(&out.stderr));
        let report = json_file(dir.path(), &format!("job-{k}.json"));
        assert_eq!(agents(&report).iter().filter(|a| a["status"] == "assembled").count(), 12, "job {k}: {report:#}");
    }
}

/// The docker config's `credsStore` names a helper that counts its runs: a plan and an
/// assemble of 50 agent images (25 instances, 2 variants) on a registry that wants a
/// password each run it at most once for that host.
#[test]
fn a_credential_helper_runs_at_most_once_per_host_per_process() {
    let reg = Registry::start_with_auth("helper-user", "helper-pw-789");
    let tools = tempfile::tempdir().unwrap();
    let runs = tools.path().join("runs");
    let helper = tools.path().join("docker-credential-counting");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {}\n[ \"$1\" = get ] || exit 1\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"helper-user\",\"Secret\":\"helper-pw-789\"}}' \"$server\"\n",
            runs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = tools.path().join("docker");
    write_files(&config, &[("config.json", r#"{"auths": {}, "credsStore": "counting"}"#)]);
    let path = format!("{}:{}", tools.path().display(), std::env::var("PATH").unwrap_or_default());
    let env = [("DOCKER_CONFIG", config.display().to_string()), ("PATH", path)];
    let runs_of = || {
        let text = std::fs::read_to_string(&runs).unwrap_or_default();
        let _ = std::fs::remove_file(&runs);
        text.lines().filter(|l| l.starts_with("get ")).count()
    };
    let dir = shared_layer_fixtures_on(&reg, 25, &["v1"], &env);
    let first = runs_of();
    assert!(first <= 1, "the first plan ran the helper {first} times");
    let command = |args: &[&str]| env.iter().fold(SplitBuild::new(dir.path()), |c, (k, v)| c.env(k, v)).args(args).output();
    let out = command(&["plan", "--plan-file", "plan.json", "--report", "plan-report.json"]);
    assert!(out.status.success(), "{}", text(&out));
    let planned = runs_of();
    let out = command(&["assemble", "--plan", "plan.json", "--report", "report.json"]);
    assert!(out.status.success(), "{}", text(&out));
    let assembled = runs_of();
    let report = json_file(dir.path(), "report.json");
    assert_eq!(agents(&report).iter().filter(|a| a["status"] == "assembled").count(), 50, "{report:#}");
    assert!(planned <= 1 && assembled <= 1, "the helper ran {planned} times for the plan and {assembled} for the assemble");
    assert!(planned + assembled >= 1, "the helper was asked at all (the registry wants a password)");
}

/// An agent commit after the first writes into a repository that holds the previous commit's
/// agents: it spends writes on each agent's config and manifest only (and the new payload
/// once), no base layer is mounted. Bases new to the repository (four instances the first
/// commit did not make) are found out by their refused manifest and mounted then: every
/// agent is made.
#[test]
fn the_steady_state_writes_only_configs_and_manifests() {
    let (reg, dir) = shared_layer_fixtures(&["v1", "v2"]);
    let first: Vec<String> = (0..20).map(|i| format!("inst-{i}")).collect();
    let out = split_build(dir.path(), &["assemble", "--builder-version", "v1", "--items", &first.join(" "), "--report", "r1.json"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = split_build(dir.path(), &["assemble", "--builder-version", "v2", "--report", "r2.json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report = json_file(dir.path(), "r2.json");
    let agents = agents(&report);
    assert_eq!(agents.iter().filter(|a| a["status"] == "assembled").count(), 48, "{report:#}");
    // A config upload is one write where the single POST is taken (NORA), two elsewhere.
    let per_config = if reg.server == Server::Nora { 1 } else { 2 };
    let steady: Vec<&&Value> =
        agents.iter().filter(|a| !["inst-20", "inst-21", "inst-22", "inst-23"].contains(&a["instance"].as_str().unwrap())).collect();
    let writes: u64 = steady.iter().map(|a| a["writes"].as_u64().unwrap()).sum();
    assert_eq!(steady.len(), 40);
    // Per agent its config and manifest; once, the new payload's mount (on whichever agent
    // got there first).
    assert!(writes <= 40 * (per_config + 1) + 1, "{writes} writes for 40 agents on bases the repository holds");
    // The new bases' own layers were mounted: their agents are whole (whether or not the
    // registry checks a manifest's blobs, as distribution does and NORA may not).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client =
        split_build::adapters::registry::Registry::new(split_build::adapters::credentials::Credentials::default(), &[], 4).unwrap();
    for i in 20..24 {
        let own = split_build::core::image_ref::Digest::sha256_of(format!("layer inst-{i} ").repeat(4096).as_bytes());
        let there =
            rt.block_on(client.blob_exists(&reg.host, "t/agent", &own, &split_build::adapters::registry::Stats::default())).unwrap();
        assert!(there, "inst-{i}'s own layer is in the agent repository");
    }
}
