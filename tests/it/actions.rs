//! The binary as a container action sees it: no arguments, `GITHUB_ACTIONS=true`, every
//! input of action.yml as `INPUT_*` (defaults included, hyphens kept), and the outputs read
//! back from `$GITHUB_OUTPUT` exactly as the runner parses them.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::SplitBuild;

/// The runner's parser for `$GITHUB_OUTPUT`: `name=value` lines and `name<<DELIM` blocks.
fn runner_outputs(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.split('\n');
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delim)) = line.split_once("<<") {
            assert!(delim.len() >= 16, "delimiter `{delim}` is not random enough");
            let mut value = Vec::new();
            loop {
                let l = lines.next().unwrap_or_else(|| panic!("output {name}: delimiter never closes"));
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.insert(name.to_owned(), value.join("\n"));
        } else {
            let (name, value) = line.split_once('=').unwrap_or_else(|| panic!("bad output line `{line}`"));
            out.insert(name.to_owned(), value.to_owned());
        }
    }
    out
}

/// Every input of action.yml with its default, as the runner sets them.
fn action_defaults() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("action.yml")).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    doc["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, spec)| (format!("INPUT_{}", name.to_ascii_uppercase()), spec["default"].as_str().unwrap_or("").to_owned()))
        .collect()
}

struct ActionRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    outputs: BTreeMap<String, String>,
    summary: String,
}

fn run_action(inputs: &[(&str, &str)]) -> ActionRun {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("output");
    let summary = dir.path().join("summary");
    std::fs::write(&output, "earlier=kept\n").unwrap();
    let mut run =
        SplitBuild::in_repo(dir.path()).env("GITHUB_ACTIONS", "true").env("GITHUB_OUTPUT", &output).env("GITHUB_STEP_SUMMARY", &summary);
    for (k, v) in action_defaults() {
        run = run.env(k, v);
    }
    for (k, v) in inputs {
        run = run.env(format!("INPUT_{}", k.to_ascii_uppercase()), v);
    }
    let out = run.output();
    ActionRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        outputs: runner_outputs(&std::fs::read_to_string(&output).unwrap()),
        summary: std::fs::read_to_string(&summary).unwrap_or_default(),
    }
}

#[test]
fn plan_outputs_arrive_through_the_output_file() {
    let run = run_action(&[
        ("command", "plan"),
        ("spec", "examples/swebench-verified/split-build.yml"),
        ("offline", "true"),
        ("builder-version", "v1.2.3"),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let o = &run.outputs;
    assert_eq!(o["earlier"], "kept", "outputs are appended, never overwritten");
    for name in [
        "builder-matrix",
        "bases-matrix",
        "agents-matrix",
        "builder-needed",
        "bases-missing",
        "agents-missing",
        "cache-hits",
        "builder-image",
        "plan",
    ] {
        assert!(o.contains_key(name), "missing output {name}");
    }
    assert_eq!(o["builder-needed"], "true");
    assert_eq!(o["bases-missing"], "500");
    assert_eq!(o["agents-missing"], "1000");
    assert_eq!(o["cache-hits"], "0");
    assert_eq!(o["builder-image"], "ghcr.io/openhands/agent-server-builder:v1.2.3");

    let matrix = |name: &str| -> serde_json::Value { serde_json::from_str(&o[name]).unwrap() };
    let builder = matrix("builder-matrix");
    assert_eq!(builder["include"][0]["items"], "v1.2.3");
    assert_eq!(builder["include"][0]["platform"], "linux/amd64");
    // Bases build on runners: jobs.max-parallel (64) jobs; agents are written at the registry,
    // one job per 1,000 agent images: one.
    for (name, jobs) in [("bases-matrix", 64), ("agents-matrix", 1)] {
        let m = matrix(name);
        let include = m["include"].as_array().unwrap();
        assert_eq!(include.len(), jobs, "{name}");
        let mut seen = Vec::new();
        for (k, e) in include.iter().enumerate() {
            assert_eq!(e["shard"], k + 1);
            assert_eq!(e["shards"], jobs);
            seen.extend(e["items"].as_str().unwrap().split(' ').map(str::to_owned));
        }
        assert_eq!(seen.len(), 500, "{name}: every instance in exactly one shard");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 500);
    }
    let plan: serde_json::Value = serde_json::from_str(&o["plan"]).unwrap();
    assert!(!o["plan"].contains('\n'), "the plan output is compact JSON");
    assert_eq!(plan["agents"].as_array().unwrap().len(), 1000);

    assert!(run.summary.contains("## split-build plan"));
    assert!(run.summary.contains("📋 **1,501 of 1,501 images to make**"), "the verdict first: {}", run.summary);
    assert!(!run.summary.contains("```mermaid"), "every image is cold: a one-slice chart says nothing");
    assert!(run.stdout.contains("::group::"), "long phases are grouped");
}

#[test]
fn spec_errors_become_annotations_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.yml");
    std::fs::write(&spec, "registry: ghcr.io/acme\nbuilder:\n  repository: b\n  colour: red\n").unwrap();
    let run = run_action(&[("spec", spec.to_str().unwrap()), ("offline", "true")]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let annotation = run.stdout.lines().find(|l| l.starts_with("::error ")).unwrap_or_else(|| panic!("no annotation in {}", run.stdout));
    assert!(annotation.contains("bad.yml,line=4,col=3::"), "{annotation}");
    assert!(annotation.contains("colour"), "{annotation}");
    assert!(!run.outputs.contains_key("plan"), "no outputs from a failed plan");
}

#[test]
fn a_bad_input_is_an_error_not_a_guess() {
    let run = run_action(&[("command", "deploy")]);
    assert_eq!(run.code, Some(2));
    assert!(run.stdout.contains("::error") && run.stderr.contains("use one of plan"), "{}\n{}", run.stdout, run.stderr);
    let run = run_action(&[("offline", "yes"), ("spec", "examples/swebench-verified/split-build.yml")]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("use true or false"), "{}", run.stderr);
}

/// Every workflow the project ships or shows pins Node 24 releases only: the check passes on
/// the repository and names each Node 20 pin (the ones every workflow had before 2026-09-23)
/// with the release to use instead.
#[test]
fn workflows_pin_node24_actions_only() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check =
        |files: &[&Path]| std::process::Command::new("bash").arg(repo.join("scripts/check-action-uses")).args(files).output().unwrap();
    let out = check(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.yml");
    std::fs::write(
        &old,
        "jobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2\n      - uses: actions/download-artifact@v4\n      - uses: ./\n",
    )
    .unwrap();
    let out = check(&[&old]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a Node 20 pin passed");
    assert!(
        stderr.contains("old.yml:5: actions/checkout@11bd719") && stderr.contains("3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1"),
        "{stderr}"
    );
    assert!(stderr.contains("old.yml:6: `actions/download-artifact@v4` is not pinned by a full commit SHA"), "{stderr}");
    assert!(!stderr.contains("old.yml:7"), "a local action is not a pin: {stderr}");
}

/// Every `::group::` a command opens is closed before its error is told, on every path: an
/// assemble whose planning fails (the registry is unreachable) ends from inside its group.
#[test]
fn log_groups_close_before_an_early_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("split-build.yml");
    std::fs::write(
        &spec,
        "registry: 127.0.0.1:1/t\nbuilder: { repository: builder, version: v1 }\nbases:\n  repository: base\n  from: \"up/{instance}:1\"\n  instances: [a]\nagents:\n  repository: agent\n  variants: [{ name: v }]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch AS payload\n").unwrap();
    let run = run_action(&[("command", "assemble"), ("spec", spec.to_str().unwrap()), ("timeout", "2s")]);
    assert_ne!(run.code, Some(0), "the registry is unreachable: {}", run.stderr);
    let (mut open, mut opened) = (0i32, 0);
    for line in run.stdout.lines() {
        if line.starts_with("::group::") {
            assert_eq!(open, 0, "a group opened inside another: {}", run.stdout);
            open += 1;
            opened += 1;
        } else if line == "::endgroup::" {
            open -= 1;
        } else if line.starts_with("::error") {
            assert_eq!(open, 0, "the error was told inside a collapsed group: {}", run.stdout);
        }
    }
    assert!(opened > 0, "assemble groups its planning: {}", run.stdout);
    assert_eq!(open, 0, "every group is closed: {}", run.stdout);
    assert!(run.stdout.lines().any(|l| l.starts_with("::error")), "the failure is an annotation: {}", run.stdout);
}
