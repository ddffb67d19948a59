//! Snapshots of what `plan --offline` generates for the bundled SWE-bench Verified example
//! (plan JSON, each matrix, the step summary) and for a small two-platform spec.

use std::path::Path;

use crate::support::{SplitBuild, copy_tree, spec_dir};

fn plan(spec: &Path, extra: &[&str]) -> (serde_json::Value, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let out =
        SplitBuild::in_repo(dir.path()).args(["plan", "--offline", "--spec"]).arg(spec).arg("--summary").arg(&summary).args(extra).output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    (serde_json::from_str(&stdout).unwrap(), stdout, std::fs::read_to_string(summary).unwrap())
}

const EXAMPLE: &str = "examples/swebench-verified/split-build.yml";

#[test]
fn bundled_example_plan_matrices_and_summary() {
    let (plan, stdout, summary) = plan(Path::new(EXAMPLE), &[]);
    let bases = plan["bases"].as_array().unwrap();
    let agents = plan["agents"].as_array().unwrap();
    assert_eq!(bases.len(), 500);
    assert_eq!(agents.len(), 1000);
    for stage in ["builder", "bases", "agents"] {
        assert!(plan["matrices"][stage]["include"].as_array().unwrap().len() <= 256);
    }
    // A 500 x 2 agent commit with the append method: one agents job (1,000 agent images a job
    // by default), pacing at ghcr.io's whole run budget, 1,800 writes a minute.
    let agents_jobs = plan["matrices"]["agents"]["include"].as_array().unwrap();
    assert_eq!(agents_jobs.len(), 1, "one agents job by default");
    assert_eq!(agents_jobs[0]["writes_per_second"].as_f64(), Some(30.0));
    assert_eq!(plan["matrices"]["bases"]["include"].as_array().unwrap().len(), 64, "bases keep jobs.max-parallel");
    // The whole plan is long; its shape is snapshotted with the first and last entries.
    let mut head = plan.clone();
    head["bases"] = serde_json::json!([bases[0], bases[499]]);
    head["agents"] = serde_json::json!([agents[0], agents[1], agents[999]]);
    insta::assert_json_snapshot!("example_plan_head", head);
    insta::assert_json_snapshot!("example_builder_matrix", plan["matrices"]["builder"]);
    insta::assert_json_snapshot!("example_bases_matrix", plan["matrices"]["bases"]);
    insta::assert_json_snapshot!("example_agents_matrix", plan["matrices"]["agents"]);
    insta::assert_snapshot!("example_summary", summary);
    assert!(summary.len() < 1024 * 1024);

    let (_, again, _) = self::plan(Path::new(EXAMPLE), &[]);
    assert_eq!(stdout, again, "same inputs, byte-identical plan");
}

#[test]
fn builder_version_changes_no_base_tag_and_the_base_dockerfile_changes_all() {
    let (a, _, _) = plan(Path::new(EXAMPLE), &["--builder-version", "1"]);
    let (b, _, _) = plan(Path::new(EXAMPLE), &["--builder-version", "2"]);
    assert_eq!(a["bases"], b["bases"]);
    assert_ne!(a["agents"], b["agents"]);

    let dir = tempfile::tempdir().unwrap();
    copy_tree(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/swebench-verified").as_path(), dir.path());
    let (c, _, _) = plan(&dir.path().join("split-build.yml"), &["--builder-version", "1"]);
    assert_eq!(a["bases"], c["bases"], "a copy of the example hashes the same");
    let dockerfile = dir.path().join("docker/Dockerfile.base");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(&dockerfile, text + "RUN true\n").unwrap();
    let (d, _, _) = plan(&dir.path().join("split-build.yml"), &["--builder-version", "1"]);
    let (ca, da) = (c["bases"].as_array().unwrap(), d["bases"].as_array().unwrap());
    assert!(ca.iter().zip(da).all(|(x, y)| x["image"] != y["image"]), "every base tag changed");
}

#[test]
fn two_platforms_small_spec() {
    let dir = spec_dir(&[
        ("Dockerfile", "FROM scratch AS payload\nCOPY x /x\n"),
        ("x", "x"),
        (
            "split-build.yml",
            "registry: 127.0.0.1:5000/t\nplatforms: [linux/amd64, linux/arm64]\nbuilder: { repository: b, version: \"7\" }\nbases:\n  repository: base\n  from: \"up/{instance}:1\"\n  instances: [a, b, c]\nagents:\n  repository: agent\n  variants: [{ name: x }, { name: y }]\njobs: { max-parallel: 4 }\n",
        ),
    ]);
    let (plan, _, summary) = plan(&dir.path().join("split-build.yml"), &[]);
    insta::assert_json_snapshot!("two_platforms_plan", plan);
    insta::assert_snapshot!("two_platforms_summary", summary);
}
