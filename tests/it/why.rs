//! Why does it rebuild? Bases built through the real daemon into a real registry carry their
//! input record; after each kind of change the plan names it in each missing base's `why`,
//! the summary groups the reasons, and `explain` sets the inputs side by side. (A moved
//! upstream is in `upstream.rs`.)

use std::path::Path;

use serde_json::{Value, json};

use crate::support::*;

const DOCKERFILE: &str = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG INSTANCE\nRUN echo \"base of $INSTANCE\" > /base.txt\n";

fn spec(reg: &str, platforms: &str, py: &str, instances: &[&str]) -> String {
    format!(
        "registry: {reg}/e2e\nplatforms: [{platforms}]\nbuilder: {{ repository: builder, context: agent }}\nbases:\n  repository: base\n  context: base\n  dockerfile: Dockerfile.base\n  from: \"{reg}/upstream/{{instance|replace(\\\"__\\\", \\\"_1776_\\\")}}:1\"\n  build-args: {{ INSTANCE: \"{{instance}}\", PY: \"{py}\" }}\n  instances: [{}]\nagents:\n  repository: agent\n  variants:\n    - {{ name: one, entrypoint: [\"/bin/sh\"] }}\n",
        instances.join(", ")
    )
}

/// `plan --summary s.md --report r.json`: the plan JSON.
fn plan_json(d: &Path) -> Value {
    let out = split_build(d, &["plan", "--summary", "s.md", "--report", "r.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The requests the last [`plan_json`] made, as its report counts them.
fn requests(d: &Path) -> u64 {
    json_file(d, "r.json")["registry"]["requests"].as_u64().unwrap()
}

/// The `why` of a plan entry (none: empty).
fn why_of(entry: &Value) -> Vec<String> {
    entry["why"].as_array().map(|w| w.iter().map(|r| r.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

/// The plan JSON, and each base's (instance, status, why).
fn plan(d: &Path) -> (Value, Vec<(String, String, Vec<String>)>) {
    let plan = plan_json(d);
    let rows = plan["bases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["instance"].as_str().unwrap().to_owned(), b["status"].as_str().unwrap().to_owned(), why_of(b)))
        .collect();
    (plan, rows)
}

/// Each base's why, when every base is warm.
fn warm_whys(rows: &[(String, String, Vec<String>)]) -> Vec<Vec<String>> {
    assert!(rows.iter().all(|(_, s, _)| s == "warm"), "{rows:?}");
    rows.iter().map(|(_, _, w)| w.clone()).collect()
}

fn reasons(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| (*s).to_owned()).collect()
}

fn whys(r: &[&str], n: usize) -> Vec<Vec<String>> {
    vec![reasons(r); n]
}

#[test]
fn each_kind_of_change_is_named_in_why_the_summary_and_explain() {
    docker();
    let reg = Registry::start();
    let ids = ["repo__proj-1", "repo__proj-2"];
    for id in ids.iter().chain(&["repo__proj-3"]) {
        import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/upstream/{}:1", reg.host, id.replace("__", "_1776_")));
    }
    let amd64 = "linux/amd64";
    let dir = spec_dir(&[
        ("agent/Dockerfile", "FROM scratch AS payload\nCOPY Dockerfile /agent/Dockerfile\n"),
        ("base/setup.sh", "echo set up\n"),
        ("Dockerfile.base", DOCKERFILE),
        ("split-build.yml", &spec(&reg.host, amd64, "3.11", &ids)),
    ]);
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    let out = split_build(d, &["build", "--stage", "bases"]);
    assert!(out.status.success(), "building the bases: {}", String::from_utf8_lossy(&out.stderr));

    // Nothing changed: hits, and a hit says nothing.
    let (_, rows) = plan(d);
    assert!(rows.iter().all(|(_, s, w)| s == "hit" && w.is_empty()), "{rows:?}");

    // The Dockerfile: every base, one summary line.
    write("Dockerfile.base", &format!("{DOCKERFILE}RUN true\n"));
    let (_, rows) = plan(d);
    assert_eq!(warm_whys(&rows), whys(&["dockerfile"], 2));
    let summary = std::fs::read_to_string(d.join("s.md")).unwrap();
    let section: String = summary
        .lines()
        .skip_while(|l| !l.starts_with("### Why"))
        .take_while(|l| !l.starts_with("<details>"))
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("why_dockerfile_summary", section);
    let out = split_build(d, &["explain", "repo__proj-1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("base repo__proj-1: warm\n") && text.contains("made because:   dockerfile\n"), "{text}");
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with("* ")).collect();
    assert_eq!(marked.len(), 1, "only the Dockerfile differs: {text}");
    assert!(marked[0].starts_with("* dockerfile "), "{text}");
    assert!(text.contains("  build-arg PY ") && text.contains("  context setup.sh "), "every input is listed: {text}");
    write("Dockerfile.base", DOCKERFILE);

    // A context file.
    write("base/setup.sh", "echo set up again\n");
    assert_eq!(warm_whys(&plan(d).1), whys(&["context setup.sh"], 2));
    write("base/setup.sh", "echo set up\n");

    // A build arg.
    write("split-build.yml", &spec(&reg.host, amd64, "3.12", &ids));
    assert_eq!(warm_whys(&plan(d).1), whys(&["build-arg PY"], 2));

    // An added platform: each base's two entries say so.
    write("split-build.yml", &spec(&reg.host, "linux/amd64, linux/arm64", "3.11", &ids));
    let (_, rows) = plan(d);
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|(_, _, w)| w == &["platform linux/arm64 added"]), "{rows:?}");

    // A new instance: `new`; the others still hits.
    let three = ["repo__proj-1", "repo__proj-2", "repo__proj-3"];
    write("split-build.yml", &spec(&reg.host, amd64, "3.11", &three));
    let (_, rows) = plan(d);
    assert_eq!(rows[2], ("repo__proj-3".to_owned(), "cold".to_owned(), vec!["new".to_owned()]));
    assert!(rows[..2].iter().all(|(_, s, _)| s == "hit"), "{rows:?}");

    // An old base without a record (as split-build 0.1 built them): `unknown`, with the reason.
    import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/e2e/base:repo__proj-3-latest", reg.host));
    let (_, rows) = plan(d);
    assert_eq!(rows[2].1, "warm");
    assert!(rows[2].2.len() == 1 && rows[2].2[0].starts_with("unknown (") && rows[2].2[0].contains("dev.split-build.inputs"), "{rows:?}");
    let out = split_build(d, &["explain", "repo__proj-3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no input record") && text.contains("? "), "{text}");

    // An unknown instance is unusable input; the builder explains itself.
    let out = split_build(d, &["explain", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`nope` is not an instance"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = split_build(d, &["explain", "builder"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("builder: cold\n"));
}

fn builder_spec(reg: &str, builder: &str) -> String {
    builder_spec_for(reg, "linux/amd64", builder)
}

fn builder_spec_for(reg: &str, platforms: &str, builder: &str) -> String {
    format!(
        "registry: {reg}/e2e\nplatforms: [{platforms}]\nbuilder: {{ repository: builder, context: agent, dockerfile: Dockerfile.agent{builder} }}\nbases:\n  repository: base\n  context: base\n  dockerfile: base/Dockerfile\n  from: \"{reg}/upstream/x:1\"\n  instances: [repo__proj-1]\nagents:\n  repository: agent\n  variants:\n    - {{ name: one, entrypoint: [\"/bin/sh\"] }}\n"
    )
}

/// The builder's status and why in the plan, and the plan's requests.
fn builder_plan(d: &Path) -> (String, Vec<String>, u64) {
    let plan = plan_json(d);
    let b = &plan["builder"];
    (b["status"].as_str().unwrap().to_owned(), why_of(b), requests(d))
}

#[test]
fn the_builder_says_why_against_its_floating_latest() {
    docker();
    let reg = Registry::start();
    const AGENT: &str = "FROM scratch AS payload\nCOPY agent.py /agent/agent.py\n";
    let dir = spec_dir(&[
        ("agent/agent.py", "print('v1')\n"),
        ("Dockerfile.agent", AGENT),
        ("base/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"),
        ("split-build.yml", &builder_spec(&reg.host, "")),
    ]);
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();

    // No builder yet: `new`.
    let (status, why, _) = builder_plan(d);
    assert_eq!((status.as_str(), why), ("cold", reasons(&["new"])));
    let out = split_build(d, &["build", "--stage", "builder"]);
    assert!(out.status.success(), "building the builder: {}", String::from_utf8_lossy(&out.stderr));

    // Built: a hit says nothing.
    let (status, why, hit_requests) = builder_plan(d);
    assert_eq!((status.as_str(), why.len()), ("hit", 0));

    // The Dockerfile: warm (its `latest`), `dockerfile`, in the summary's first lines and in
    // explain's side by side. The cost: its `latest` read whole (a GET in place of the HEAD a
    // warm check costs anyway, and its config): one read more than the warm check alone.
    write("Dockerfile.agent", &format!("{AGENT}LABEL edited=1\n"));
    let (status, why, warm_requests) = builder_plan(d);
    assert_eq!((status.as_str(), why), ("warm", reasons(&["dockerfile"])));
    assert_eq!(warm_requests, hit_requests + 2, "the builder's HEAD and a HEAD of `latest` today, plus one read of its config");
    let summary = std::fs::read_to_string(d.join("s.md")).unwrap();
    assert!(summary.contains("### Why they are made\n\n- the builder to build: `dockerfile`\n"), "{summary}");
    let out = split_build(d, &["explain", "builder"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("builder: warm\n") && text.contains("made because:   dockerfile\n"), "{text}");
    assert!(text.contains(&format!("previous build: `{}/e2e/builder:latest`", reg.host)), "{text}");
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with("* ")).collect();
    assert!(marked.len() == 1 && marked[0].starts_with("* dockerfile "), "only the Dockerfile differs: {text}");
    assert!(
        text.contains("  context agent.py ") && text.contains("  target ") && text.contains("payload"),
        "every input is listed: {text}"
    );
    write("Dockerfile.agent", AGENT);

    // A context file, an added one, a build arg.
    write("agent/agent.py", "print('v2')\n");
    write("agent/extra.txt", "x\n");
    write("split-build.yml", &builder_spec(&reg.host, ", build-args: { MODE: fast }"));
    let (status, why, _) = builder_plan(d);
    assert_eq!((status.as_str(), why), ("warm", reasons(&["context agent.py", "context extra.txt added", "build-arg MODE added"])));
    write("agent/agent.py", "print('v1')\n");
    std::fs::remove_file(d.join("agent/extra.txt")).unwrap();

    // A set version names the tag: it is the reason (the inputs are those of `latest`).
    write("split-build.yml", &builder_spec(&reg.host, ", version: v2"));
    let (status, why, _) = builder_plan(d);
    assert_eq!((status.as_str(), why), ("warm", reasons(&["version (the inputs' hash) → v2"])));
    let out = split_build(d, &["explain", "builder"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("* version ") && l.contains("v2") && l.contains("(the inputs' hash)")), "{text}");
    write("split-build.yml", &builder_spec(&reg.host, ""));

    // An added platform: no `latest-linux-amd64` leg yet, so the plain `latest` the
    // one-platform builds left tells. Then, with the amd64 leg built, that leg tells.
    let two = "linux/amd64, linux/arm64";
    write("split-build.yml", &builder_spec_for(&reg.host, two, ""));
    let (status, why, _) = builder_plan(d);
    assert_eq!((status.as_str(), why), ("cold", reasons(&["platform linux/arm64 added"])));
    let out = split_build(d, &["build", "--stage", "builder", "--platform", "linux/amd64"]);
    assert!(out.status.success(), "building the amd64 leg: {}", String::from_utf8_lossy(&out.stderr));
    write("agent/agent.py", "print('v3')\n");
    let (status, why, _) = builder_plan(d);
    assert_eq!((status.as_str(), why), ("warm", reasons(&["context agent.py"])));
    let out = split_build(d, &["explain", "builder"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("previous build: `{}/e2e/builder:latest-linux-amd64`", reg.host)), "{text}");
    write("agent/agent.py", "print('v1')\n");
    write("split-build.yml", &builder_spec(&reg.host, ""));

    // A `latest` without a record (a builder made before records, or by hand): `unknown`.
    write("Dockerfile.agent", &format!("{AGENT}LABEL edited=2\n"));
    import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/e2e/builder:latest", reg.host));
    let (status, why, _) = builder_plan(d);
    assert_eq!(status, "warm");
    assert!(why.len() == 1 && why[0].starts_with("unknown (") && why[0].contains("dev.split-build.inputs"), "{why:?}");
}

/// The README's input record of one base of the bundled example, written from its
/// documentation (not by split-build): what a build of the unedited example would carry.
fn example_record(dockerfile_sha: &str, from: &str, from_digest: &str) -> String {
    json!({
        "scheme": "split-build/base/v1", "dockerfile": dockerfile_sha, "context": {"Dockerfile.base": dockerfile_sha},
        "platforms": ["linux/amd64"], "from": from, "from_digest": from_digest
    })
    .to_string()
}

/// The "why" section of the summary at `d/s.md`: its list lines.
fn why_section(d: &Path) -> Vec<String> {
    let summary = std::fs::read_to_string(d.join("s.md")).unwrap();
    summary
        .lines()
        .skip_while(|l| !l.starts_with("### Why"))
        .skip(1)
        .take_while(|l| !l.starts_with('#') && !l.starts_with("<details>"))
        .filter(|l| l.starts_with("- "))
        .map(str::to_owned)
        .collect()
}

/// The bundled example (500 SWE-bench Verified instances) against a registry holding its
/// upstreams and its previous bases: a base Dockerfile edit is one line of the summary and
/// one `dockerfile` per base, at one read per missing base; one moved upstream is that base's
/// alone, with both digests.
#[test]
fn the_bundled_example_after_a_dockerfile_edit_and_a_moved_upstream() {
    use futures::{StreamExt as _, stream};
    use split_build::core::content_hash::sha256_hex;

    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/swebench-verified"), d);
    let text = std::fs::read_to_string(d.join("split-build.yml")).unwrap();
    let text = text
        .replace("registry: ghcr.io/openhands", &format!("registry: {}/openhands", reg.host))
        .replace("'docker.io/swebench/", &format!("'{}/swebench/", reg.host));
    std::fs::write(d.join("split-build.yml"), text).unwrap();
    let ids: Vec<String> = std::fs::read_to_string(d.join("instances.txt")).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), 500);
    let upstream = |id: &str| format!("{}/swebench/sweb.eval.x86_64.{}:latest", reg.host, id.replace("__", "_1776_").to_lowercase());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = seed::client(16);
    let none = json!({});
    rt.block_on(stream::iter(&ids).for_each_concurrent(16, |id| {
        let (client, none, image, host) = (&client, &none, upstream(id), &reg.host);
        async move {
            seed::push_image(client, host, &image, &format!("env-of-{id}"), none, &[]).await;
        }
    }));

    // No previous build: every base `new`, in one line.
    let p = plan_json(d);
    let bases = p["bases"].as_array().unwrap().clone();
    assert!(bases.iter().all(|b| b["status"] == "cold" && b["why"] == json!(["new"])));
    assert_eq!(
        why_section(d)[1..],
        ["- 500 bases to build: `new` (astropy__astropy-12907, astropy__astropy-13033, astropy__astropy-13236) and 497 more"]
    );

    // The previous bases, as a build of this example leaves them: the base tag and
    // `{instance}-latest`, each with its input record.
    let sha = sha256_hex(&std::fs::read(d.join("docker/Dockerfile.base")).unwrap());
    rt.block_on(stream::iter(&bases).for_each_concurrent(16, |b| {
        let (client, sha, host) = (&client, &sha, &reg.host);
        async move {
            let (instance, from, digest) =
                (b["instance"].as_str().unwrap(), b["from"].as_str().unwrap(), b["from_digest"].as_str().unwrap());
            let labels = json!({
                "dev.split-build.inputs": example_record(sha, from, digest),
                "org.opencontainers.image.base.name": from, "org.opencontainers.image.base.digest": digest,
            });
            let image = b["image"].as_str().unwrap();
            seed::push_image(client, host, image, &format!("base-of-{instance}"), &labels, &[format!("{instance}-latest")]).await;
        }
    }));
    let p = plan_json(d);
    assert!(
        p["bases"].as_array().unwrap().iter().all(|b| b["status"] == "hit" && b.get("why").is_none()),
        "every base a hit, saying nothing"
    );
    let hits = requests(d);

    // The base Dockerfile edited: every base warm, `dockerfile` (the Dockerfile is in its
    // context too: named once), one line of the summary; one read more per missing base.
    let dockerfile = d.join("docker/Dockerfile.base");
    let original = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(&dockerfile, format!("{original}RUN true\n")).unwrap();
    let p = plan_json(d);
    let edited = p["bases"].as_array().unwrap();
    assert!(edited.iter().all(|b| b["status"] == "warm" && b["why"] == json!(["dockerfile"])), "{}", edited[0]);
    let lines = why_section(d);
    let base_lines: Vec<&String> = lines.iter().filter(|l| !l.starts_with("- the builder")).collect();
    assert_eq!(
        base_lines,
        ["- 500 bases to build: `dockerfile` (astropy__astropy-12907, astropy__astropy-13033, astropy__astropy-13236) and 497 more"]
    );
    // Today: a HEAD of each `-latest` (the warm check). Now: a GET of it and its config.
    let missing = 500;
    assert_eq!(requests(d), hits + 2 * missing, "hits: {hits}; each missing base: its `-latest` HEAD (today) + its config (the why)");
    std::fs::write(&dockerfile, original).unwrap();

    // One upstream moved: that base alone, naming both digests.
    let moved = &bases[7];
    let id = moved["instance"].as_str().unwrap();
    let before = moved["from_digest"].as_str().unwrap().to_owned();
    let after = rt.block_on(seed::push_image(&client, &reg.host, &upstream(id), "env-moved", &none, &[]));
    let p = plan_json(d);
    let now = p["bases"].as_array().unwrap();
    let missing: Vec<&Value> = now.iter().filter(|b| b["status"] != "hit").collect();
    assert_eq!(missing.len(), 1, "only the moved upstream's base");
    let want = format!("upstream moved {}… → {}…", &before[..19], &after[..19]);
    assert_eq!((missing[0]["instance"].as_str().unwrap(), &missing[0]["why"]), (id, &json!([want])));
    assert!(why_section(d).contains(&format!("- 1 base to build: `upstream moved` ({id})")), "{:?}", why_section(d));
    let out = split_build(d, &["explain", id]);
    let text = String::from_utf8_lossy(&out.stdout);
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with("* ")).collect();
    assert!(
        marked.len() == 1
            && marked[0].starts_with("* from digest")
            && marked[0].contains(&before[..19])
            && marked[0].contains(&after[..19]),
        "{text}"
    );
}
