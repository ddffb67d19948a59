//! `.dockerignore` as Docker has it: one context built through split-build (its context tar,
//! the daemon's BuildKit) and through `docker build` itself (the CLI's own context), each
//! image a `COPY . /ctx/` of the context, compared file by file.

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::*;

/// The files under `/ctx/` of a local image.
fn files_in(image: &str) -> BTreeSet<String> {
    let id = docker_cmd(&["create", image, "none"]).trim().to_owned();
    let tar = Command::new(docker()).args(["export", &id]).output().unwrap();
    docker_cmd(&["rm", &id]);
    assert!(tar.status.success());
    let mut archive = tar::Archive::new(&tar.stdout[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .filter_map(|p| p.strip_prefix("ctx/").map(str::to_owned))
        .filter(|p| !p.is_empty() && !p.ends_with('/'))
        .collect()
}

#[test]
fn the_context_holds_what_docker_build_sends() {
    let reg = Registry::start();
    let ignore = "# Docker's rules: `*` stays in one segment, `**` crosses them, `!` re-includes\n*.md\n**/*.o\ntmp\n/*.log\ndocs/*.txt\n!docs/keep.txt\n./build/\n";
    let files: Vec<(String, String)> = [
        "README.md",
        "docs/guide.md",
        "docs/drop.txt",
        "docs/keep.txt",
        "src/main.rs",
        "src/gen/out.o",
        "out.o",
        "tmp/cache/z",
        "other.log",
        "logs/kept.log",
        "build/artifact",
        "buildx/kept",
    ]
    .iter()
    .map(|f| (format!("ctx/{f}"), format!("{f}\n")))
    .collect();
    let mut all: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let dockerfile = "FROM scratch AS payload\nCOPY . /ctx/\n";
    all.extend([("ctx/.dockerignore", ignore), ("ctx/Dockerfile", dockerfile)]);
    let spec = format!(
        "registry: {}/t\nbuilder: {{ repository: builder, version: v1, context: ctx, dockerfile: ctx/Dockerfile }}\nbases:\n  repository: base\n  dockerfile: ctx/Dockerfile\n  context: ctx\n  from: \"up/{{instance}}:1\"\n  instances: [a]\nagents:\n  repository: agent\n  variants: [{{ name: x }}]\n",
        reg.host
    );
    all.push(("split-build.yml", &spec));
    let dir = spec_dir(&all);

    let out = split_build(dir.path(), &["build", "--stage", "builder"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours = format!("{}/t/builder:v1", reg.host);
    docker_cmd(&["pull", &ours]);
    let theirs = format!("split-build-dockerignore-check:{}", reg.port);
    let cli = Command::new(docker()).args(["build", "-q", "-t", &theirs, "."]).current_dir(dir.path().join("ctx")).output().unwrap();
    assert!(cli.status.success(), "docker build: {}", String::from_utf8_lossy(&cli.stderr));

    let (ours_files, theirs_files) = (files_in(&ours), files_in(&theirs));
    docker_cmd(&["rmi", &ours, &theirs]);
    eprintln!("docker build copied {} files: {theirs_files:?}", theirs_files.len());
    assert_eq!(ours_files, theirs_files, "split-build's context differs from what docker build sends");
    for kept in ["docs/guide.md", "docs/keep.txt", "src/main.rs", "logs/kept.log", "buildx/kept", "Dockerfile", ".dockerignore"] {
        assert!(theirs_files.contains(kept), "{kept} is sent by docker build");
    }
    for dropped in ["README.md", "docs/drop.txt", "src/gen/out.o", "out.o", "tmp/cache/z", "other.log", "build/artifact"] {
        assert!(!theirs_files.contains(dropped), "{dropped} is left out by docker build");
    }
}
