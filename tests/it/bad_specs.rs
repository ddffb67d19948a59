//! A table of unusable specs: each must exit 2 and name file, line, column and what is
//! wrong, without a panic or a backtrace.

use std::path::Path;

use crate::support::{SplitBuild, spec_dir, split_build, write_files};

/// A valid spec; each case edits it.
const GOOD: &str = r#"registry: ghcr.io/acme
builder:
  repository: builder
  dockerfile: Dockerfile.agent
bases:
  repository: base
  from: "docker.io/swebench/sweb.eval.x86_64.{instance|replace(\"__\", \"_1776_\")|lower}:latest"
  dockerfile: Dockerfile.base
  instances: [django__django-11099, astropy__astropy-12907]
agents:
  repository: agent
  variants:
    - name: minimal
"#;

struct Case {
    name: &'static str,
    /// (old, new) replacement in GOOD, or the whole text when old is empty.
    edit: (&'static str, &'static str),
    /// Extra files next to the spec.
    files: &'static [(&'static str, &'static str)],
    line: u64,
    col: Option<u64>,
    says: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "yaml syntax",
            edit: ("  repository: agent\n", "  repository: \"agent\n"),
            files: &[],
            line: 11,
            col: Some(15),
            says: &["repository: unclosed quote"],
        },
        Case {
            name: "list where a string goes",
            edit: ("  repository: agent\n", "  repository: [agent]\n"),
            files: &[],
            line: 11,
            col: Some(15),
            says: &["string"],
        },
        Case {
            name: "unknown top-level key",
            edit: ("registry:", "registri: x\nregistry:"),
            files: &[],
            line: 1,
            col: Some(1),
            says: &["registri", "registry"],
        },
        Case {
            name: "unknown nested key",
            edit: ("  dockerfile: Dockerfile.agent\n", "  dockerfile: Dockerfile.agent\n  tagret: payload\n"),
            files: &[],
            line: 5,
            col: Some(3),
            says: &["tagret", "target"],
        },
        Case {
            name: "wrong type",
            edit: ("  repository: builder\n", "  repository: builder\n  inputs: 3\n"),
            files: &[],
            line: 4,
            col: None,
            says: &["inputs: expected a list"],
        },
        Case { name: "missing required key", edit: ("  repository: base\n", ""), files: &[], line: 8, col: None, says: &["repository"] },
        Case {
            name: "empty instance list",
            edit: ("[django__django-11099, astropy__astropy-12907]", "[]"),
            files: &[],
            line: 9,
            col: None,
            says: &["bases.instances", "no instances", "at least one"],
        },
        Case {
            name: "duplicate instance",
            edit: ("astropy__astropy-12907]", "django__django-11099]"),
            files: &[],
            line: 9,
            col: None,
            says: &["duplicate instance `django__django-11099`", "line 9"],
        },
        Case {
            name: "instance outside the tag grammar",
            edit: ("astropy__astropy-12907]", "\"bad id\"]"),
            files: &[],
            line: 9,
            col: None,
            says: &["`bad id` is not a valid instance id", "OCI tag grammar"],
        },
        Case {
            name: "instance smuggling a workflow command",
            edit: ("astropy__astropy-12907]", "\"x::error::y\"]"),
            files: &[],
            line: 9,
            col: None,
            says: &["x::error::y"],
        },
        Case {
            name: "instance with a percent sign",
            edit: ("astropy__astropy-12907]", "\"a%0Ab\"]"),
            files: &[],
            line: 9,
            col: None,
            says: &["a%0Ab"],
        },
        Case {
            name: "repository outside the OCI grammar",
            edit: ("  repository: agent\n", "  repository: Agent_Images\n"),
            files: &[],
            line: 11,
            col: None,
            says: &["Agent_Images", "lower-case"],
        },
        Case {
            name: "unknown template field",
            edit: ("{instance|replace", "{instanse|replace"),
            files: &[],
            line: 7,
            col: None,
            says: &["instanse", "{instance}"],
        },
        Case {
            name: "unknown template filter",
            edit: ("|lower}", "|lowercase}"),
            files: &[],
            line: 7,
            col: None,
            says: &["lowercase", "lower"],
        },
        Case {
            name: "missing dockerfile",
            edit: ("Dockerfile.base", "Dockerfile.nope"),
            files: &[],
            line: 8,
            col: None,
            says: &["Dockerfile.nope", "does not exist"],
        },
        Case {
            name: "missing instances file",
            edit: ("[django__django-11099, astropy__astropy-12907]", "ids.txt"),
            files: &[],
            line: 9,
            col: None,
            says: &["ids.txt"],
        },
        Case {
            name: "bad id inside the instances file",
            edit: ("[django__django-11099, astropy__astropy-12907]", "ids.txt"),
            files: &[("ids.txt", "# ids\nok-1\nnot ok\n")],
            line: 3,
            col: None,
            // An instances file is described, never echoed: its third line's fourth character is a space.
            says: &["ids.txt", "character 4 is a space"],
        },
        Case {
            name: "unknown platform",
            edit: ("registry: ghcr.io/acme\n", "registry: ghcr.io/acme\nplatforms: [linux/amd65]\n"),
            files: &[],
            line: 2,
            col: None,
            says: &["linux/amd65", "linux/amd64"],
        },
        Case {
            name: "max-parallel too large",
            edit: ("registry: ghcr.io/acme\n", "registry: ghcr.io/acme\njobs: { max-parallel: 300 }\n"),
            files: &[],
            line: 2,
            col: None,
            says: &["300", "1 to 256"],
        },
        Case {
            name: "max-parallel zero",
            edit: ("registry: ghcr.io/acme\n", "registry: ghcr.io/acme\njobs: { max-parallel: 0 }\n"),
            files: &[],
            line: 2,
            col: None,
            says: &["0", "1 to 256"],
        },
        Case {
            name: "unknown method",
            edit: ("  repository: agent\n", "  repository: agent\n  method: rebuild\n"),
            files: &[],
            line: 12,
            col: None,
            says: &["rebuild", "append", "dockerfile"],
        },
        Case {
            name: "agent tag without variant",
            edit: ("  repository: agent\n", "  repository: agent\n  tag: \"{builder}-{instance}\"\n"),
            files: &[],
            line: 12,
            col: None,
            says: &["{variant}"],
        },
        Case {
            name: "duplicate variant",
            edit: ("    - name: minimal\n", "    - name: minimal\n    - name: minimal\n"),
            files: &[],
            line: 14,
            col: None,
            says: &["minimal", "twice"],
        },
        Case {
            name: "unknown cache mode",
            edit: ("registry: ghcr.io/acme\n", "registry: ghcr.io/acme\ncache: { mode: all }\n"),
            files: &[],
            line: 2,
            col: None,
            says: &["all", "off, min or max"],
        },
        Case {
            name: "reserved build arg",
            edit: ("  dockerfile: Dockerfile.base\n", "  dockerfile: Dockerfile.base\n  build-args: { BASE_IMAGE: x }\n"),
            files: &[],
            line: 9,
            col: None,
            says: &["BASE_IMAGE"],
        },
        Case { name: "not a mapping", edit: ("", "- just\n- a list\n"), files: &[], line: 1, col: None, says: &["map"] },
        Case {
            name: "duplicate key",
            edit: ("registry: ghcr.io/acme\n", "registry: ghcr.io/acme\nregistry: ghcr.io/other\n"),
            files: &[],
            line: 2,
            col: None,
            says: &["`registry` is given twice", "keep one"],
        },
        Case {
            name: "second YAML document",
            edit: ("    - name: minimal\n", "    - name: minimal\n---\nregistry: x\n"),
            files: &[],
            line: 14,
            col: Some(1),
            says: &["second YAML document", "one document"],
        },
        Case {
            name: "null where a string goes",
            edit: ("  repository: agent\n", "  repository:\n"),
            files: &[],
            line: 11,
            col: None,
            says: &["has no value", "write a string"],
        },
        Case {
            name: "YAML tag on a string",
            edit: ("  repository: agent\n", "  repository: !!int 5\n"),
            files: &[],
            line: 11,
            col: None,
            says: &["YAML tag", "quote the value"],
        },
        Case {
            name: "agent tag broken for the second instance only",
            edit: ("  repository: agent\n", "  repository: agent\n  tag: '{instance|replace(\"astropy\",\"é\")}-{variant}'\n"),
            files: &[],
            line: 12,
            col: Some(8),
            says: &["agents.tag", "for instance `astropy__astropy-12907`", "not a tag"],
        },
        Case {
            name: "the root as a context",
            edit: ("  dockerfile: Dockerfile.base\n", "  dockerfile: Dockerfile.base\n  context: /\n"),
            files: &[],
            line: 9,
            col: None,
            says: &["bases.context", "file system's root"],
        },
        Case {
            name: "a device as the instances file",
            edit: ("[django__django-11099, astropy__astropy-12907]", "/dev/zero"),
            files: &[],
            line: 9,
            col: None,
            says: &["bases.instances", "not a regular file"],
        },
    ]
}

fn run_case(case: &Case) -> (i32, String) {
    let dir = spec_dir(&[("Dockerfile.agent", "FROM scratch AS payload\n"), ("Dockerfile.base", "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n")]);
    write_files(dir.path(), case.files);
    let text = if case.edit.0.is_empty() {
        case.edit.1.to_owned()
    } else {
        assert!(GOOD.contains(case.edit.0), "{}: edit does not apply", case.name);
        GOOD.replacen(case.edit.0, case.edit.1, 1)
    };
    std::fs::write(dir.path().join("split-build.yml"), text).unwrap();
    let out = SplitBuild::new(dir.path()).args(["plan", "--offline"]).env("RUST_BACKTRACE", "1").output();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_good_spec_plans() {
    let case = Case { name: "good", edit: ("", GOOD), files: &[], line: 0, col: None, says: &[] };
    let (code, stderr) = run_case(&case);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn every_bad_spec_exits_2_with_its_location() {
    let cases = cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let (code, stderr) = run_case(case);
        let file = if case.files.iter().any(|(f, _)| stderr.contains(&format!("{f}:"))) { case.files[0].0 } else { "split-build.yml" };
        let location = match case.col {
            Some(c) => format!("{file}:{}:{c}:", case.line),
            None => format!("{file}:{}:", case.line),
        };
        let ok = code == 2
            && stderr.contains(&location)
            && case.says.iter().all(|s| stderr.contains(s))
            && !stderr.contains("panicked")
            && !stderr.contains("stack backtrace");
        if !ok {
            failures.push(format!("{}: exit {code}, want 2 and `{location}` and {:?}; stderr:\n{stderr}", case.name, case.says));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn a_missing_spec_exits_2_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = split_build(dir.path(), &["plan", "--offline"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("split-build.yml") && stderr.contains("--spec"), "{stderr}");
    assert!(!Path::new(&dir.path().join("split-build.yml")).exists());
}

/// Specs too big or too odd for the table: bytes that are not UTF-8, a 50 MB id, a million images.
#[test]
fn unusable_inputs_beyond_the_table_exit_2_with_their_location() {
    let dir = spec_dir(&[("Dockerfile.agent", "FROM scratch AS payload\n"), ("Dockerfile.base", "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n")]);
    let spec = dir.path().join("split-build.yml");
    let plan = || {
        let out = SplitBuild::new(dir.path()).args(["plan", "--offline"]).output();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let mut latin1 = GOOD.replace("name: minimal", "name: caf").into_bytes();
    let at = latin1.len() - 1;
    latin1.insert(at, 0xe9);
    std::fs::write(&spec, &latin1).unwrap();
    let (code, stderr) = plan();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("split-build.yml:13:16:") && stderr.contains("0xE9") && stderr.contains("UTF-8"), "{stderr}");

    let id = "x y".repeat((50 << 20) / 3);
    std::fs::write(dir.path().join("ids.txt"), format!("ok-1\n{id}\n")).unwrap();
    std::fs::write(&spec, GOOD.replace("[django__django-11099, astropy__astropy-12907]", "ids.txt")).unwrap();
    let (code, stderr) = plan();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.len() < 2000
            && stderr.contains("ids.txt:2:1:")
            && stderr.contains(&format!("{} characters long", id.len()))
            && !stderr.contains("x y"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );

    let ids: String = (0..500).map(|i| format!("i{i}\n")).collect();
    std::fs::write(dir.path().join("ids.txt"), ids).unwrap();
    let variants: String = (0..2000).map(|i| format!("    - name: v{i}\n")).collect();
    let text = GOOD.replace("[django__django-11099, astropy__astropy-12907]", "ids.txt").replace("    - name: minimal\n", &variants);
    std::fs::write(&spec, text).unwrap();
    let (code, stderr) = plan();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("agents.variants") && stderr.contains("make 1000500 images") && stderr.contains("500000"), "{stderr}");
}

/// A report that cannot be read is unusable input, like one that is not JSON.
#[test]
fn an_unreadable_report_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("latin1.json"), [b'{', 0xe9, b'}']).unwrap();
    let out = split_build(dir.path(), &["report", "latin1.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
