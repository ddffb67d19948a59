//! The builder's cache at the registry, on a fresh runner made in the test: between two
//! builds the test removes every image it tagged and the daemon's build cache records of its
//! own builds (found by a nonce baked into the test's busybox image, so no other test's
//! cache is touched and none shares a key with these), as a hosted job starts with neither.
//! A step that ran writes a fresh stamp (`date`); a step reused from the registry keeps the
//! earlier build's stamp, and its log says `CACHED` without the step's output.

use std::path::Path;
use std::process::Output;

use crate::support::*;

/// One test's registry, spec folder and nonce.
struct Fixture {
    reg: Registry,
    dir: tempfile::TempDir,
    nonce: String,
    namespace: &'static str,
}

/// The builder of the issue: a dependency stage, a source stage on it, a payload of both.
const BUILDER: &str = "\
FROM {busybox} AS deps
COPY deps.txt /deps.txt
RUN echo deps-ran-{nonce} && date +%s%N > /deps.stamp
FROM deps AS build
COPY src /src
RUN echo build-ran-{nonce} && cat /src/* > /out.txt && date +%s%N > /build.stamp
FROM scratch AS payload
COPY --from=build /out.txt /deps.stamp /build.stamp /agent/
";

impl Fixture {
    fn new(namespace: &'static str, cache: &str, platforms: &str) -> Fixture {
        docker();
        let reg = Registry::start();
        let nonce = format!("{:016x}", rand_u64());
        let busybox = format!("{}/{namespace}/busybox:{nonce}", reg.host);
        import_and_push(&busybox_rootfs_tar(&[("nonce", nonce.as_bytes())]), &busybox);
        let spec = format!(
            "registry: {host}/{namespace}\nplatforms: [{platforms}]\nbuilder: {{ repository: builder }}\nbases: {{ repository: base, context: base, from: \"{busybox}\", instances: [one] }}\nagents:\n  repository: agent\n  variants: [{{ name: x }}]\n{cache}",
            host = reg.host
        );
        let dockerfile = BUILDER.replace("{busybox}", &busybox).replace("{nonce}", &nonce);
        let dir = spec_dir(&[
            ("split-build.yml", &spec),
            ("Dockerfile", &dockerfile),
            ("deps.txt", "deps 1\n"),
            ("src/main.txt", "source 1\n"),
            ("base/Dockerfile", "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n"),
        ]);
        Fixture { reg, dir, nonce, namespace }
    }

    fn d(&self) -> &Path {
        self.dir.path()
    }

    fn image(&self, repo_tag: &str) -> String {
        format!("{}/{}/{repo_tag}", self.reg.host, self.namespace)
    }

    /// `build --stage builder` as version `v` (and `--platform`), its debug log in stderr.
    fn build(&self, v: &str, platform: Option<&str>) -> Output {
        let mut args = vec!["build", "--stage", "builder", "--builder-version", v];
        args.extend(platform.iter().flat_map(|p| ["--platform", p]));
        let out = SplitBuild::new(self.d()).args(&args).env("RUST_LOG", "split_build=debug").output();
        assert!(out.status.success(), "build {v}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// A fresh runner: the test's own images and build cache gone from the daemon.
    fn fresh_runner(&self) {
        let listed = docker_cmd(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        let prefix = format!("{}/{}/", self.reg.host, self.namespace);
        for image in listed.lines().filter(|l| l.starts_with(&prefix)) {
            docker_cmd(&["rmi", "-f", image]);
        }
        let left = docker_cmd(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert!(!left.lines().any(|l| l.starts_with(&prefix)), "the test's images are gone: {left}");
        forget_build_cache(&self.nonce);
    }

    /// The files of `repo:tag` in this registry, by path (every layer, upper layers win).
    fn files(&self, repo_tag: &str) -> std::collections::BTreeMap<String, String> {
        let image = self.image(repo_tag);
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(require("skopeo", "skopeo"))
            .args(["copy", "--src-tls-verify=false", &format!("docker://{image}"), &format!("dir:{}", dir.path().display())])
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy {image}: {}", String::from_utf8_lossy(&out.stderr));
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
        let mut files = std::collections::BTreeMap::new();
        for layer in manifest["layers"].as_array().unwrap() {
            let blob = std::fs::read(dir.path().join(layer["digest"].as_str().unwrap().trim_start_matches("sha256:"))).unwrap();
            let mut archive = tar::Archive::new(gunzipped(&blob));
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let text = std::io::read_to_string(&mut entry).unwrap_or_default();
                files.insert(path, text);
            }
        }
        files
    }

    /// The payload's stamps of builder tag `tag`: (deps, build).
    fn stamps(&self, tag: &str) -> (String, String) {
        let files = self.files(&format!("builder:{tag}"));
        (files["agent/deps.stamp"].clone(), files["agent/build.stamp"].clone())
    }

    fn exists(&self, repo_tag: &str) -> bool {
        self.reg.inspect(&format!("{}/{repo_tag}", self.namespace), "--raw").is_some()
    }

    /// The tags of `repo` (sorted), as skopeo lists them.
    fn tags(&self, repo: &str) -> Vec<String> {
        let out = std::process::Command::new(require("skopeo", "skopeo"))
            .args(["list-tags", "--tls-verify=false", &format!("docker://{}", self.image(repo))])
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo list-tags {repo}: {}", String::from_utf8_lossy(&out.stderr));
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut tags: Vec<String> = listed["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
        tags.sort();
        tags
    }

    fn write(&self, path: &str, text: &str) {
        write_files(self.d(), &[(path, text)]);
    }
}

/// Whether the step whose output starts with `marker` ran in any build of `log` (its output
/// is there), and whether a step whose name holds `marker` was `CACHED` in one.
fn ran_and_cached(log: &str, marker: &str) -> (bool, bool) {
    let mut ran = false;
    let mut named: Vec<String> = Vec::new();
    let mut cached: Vec<String> = Vec::new();
    for line in log.lines() {
        // `{image}: #N text`, as the build log goes out at debug level.
        let Some((image, rest)) = line.rsplit_once(": #").map(|(head, rest)| (head.rsplit(' ').next().unwrap_or(head), rest)) else {
            continue;
        };
        let Some((n, text)) = rest.split_once(' ') else { continue };
        if text.starts_with(marker) {
            ran = true;
        } else if text.contains(marker) {
            named.push(format!("{image}#{n}"));
        } else if text == "CACHED" {
            cached.push(format!("{image}#{n}"));
        }
    }
    (ran, named.iter().any(|step| cached.contains(step)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A layer blob as a tar stream: through `gzip -dc` when it is gzip.
fn gunzipped(blob: &[u8]) -> std::io::Cursor<Vec<u8>> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = blob.to_vec();
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        std::io::Cursor::new(out.stdout)
    } else {
        std::io::Cursor::new(blob.to_vec())
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish()
}

/// The daemon's API over its socket (`curl`): the build cache lists and prunes are asked
/// in API 1.41's own shape, which bollard's newer models no longer read. `None` when the
/// daemon refused (one listing and one prune at a time: another test's may be under way).
fn daemon_api(method: &str, path: &str) -> Option<serde_json::Value> {
    let out = std::process::Command::new(require("curl", "curl"))
        .args(["-sf", "-X", method, "--unix-socket", "/var/run/docker.sock", &format!("http://localhost/v1.41{path}")])
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap_or_default())
}

/// Removes the daemon's build cache records of this test's builds: every record whose
/// description names `nonce` (its `RUN` steps), the records they stand on (the busybox
/// image, the `COPY` before) and every record on any of those, children first (a record is
/// pruned by its id, one at a time). Nothing of another test's builds is touched: their
/// records share no ancestor with these (the busybox layer carries the nonce). What stays
/// are parent-less `COPY --from` results of a `FROM scratch` stage, whose keys hold the
/// copied stage's content and so never match once that stage runs again.
fn forget_build_cache(nonce: &str) {
    for _ in 0..40 {
        // One disk-usage listing at a time, too: a refused one is asked again.
        let Some(df) = daemon_api("GET", "/system/df") else {
            std::thread::sleep(std::time::Duration::from_millis(250));
            continue;
        };
        let records: Vec<(String, String, String)> = df["BuildCache"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (text("ID"), text("Parent"), text("Description"))
            })
            .collect();
        let parent_of: std::collections::HashMap<&str, &str> = records.iter().map(|(id, p, _)| (id.as_str(), p.as_str())).collect();
        let mut ours: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (id, _, description) in records.iter().filter(|(_, _, d)| d.contains(nonce)) {
            let _ = description;
            let mut at = id.as_str();
            while !at.is_empty() && ours.insert(at) {
                at = parent_of.get(at).copied().unwrap_or_default();
            }
        }
        // Everything standing on one of ours is ours too.
        loop {
            let more: Vec<&str> = records
                .iter()
                .filter(|(id, p, _)| ours.contains(p.as_str()) && !ours.contains(id.as_str()))
                .map(|(id, _, _)| id.as_str())
                .collect();
            if more.is_empty() {
                break;
            }
            ours.extend(more);
        }
        if ours.is_empty() {
            return;
        }
        let leaves: Vec<&str> =
            ours.iter().copied().filter(|id| !records.iter().any(|(child, p, _)| p == id && ours.contains(child.as_str()))).collect();
        for id in leaves {
            // A refused prune is tried again in the next round.
            if daemon_api("POST", &format!("/build/prune?filters=%7B%22id%22%3A%5B%22{id}%22%5D%7D")).is_none() {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
    }
    panic!("the build cache records of nonce {nonce} did not go in 40 rounds");
}

#[test]
fn a_source_only_change_on_a_fresh_runner_reuses_the_dependency_stage_from_the_registry() {
    let f = Fixture::new("src-only", "", "linux/amd64");
    let v1 = f.build("v1", None);
    let (deps1, build1) = f.stamps("v1");
    assert!(ran_and_cached(&stderr(&v1), "deps-ran").0, "v1 runs every step");
    for tag in ["builder:cache-deps", "builder:cache-build", "builder:latest"] {
        assert!(f.exists(tag), "`{tag}` is pushed under the default builder cache (max)");
    }

    f.fresh_runner();
    f.write("src/main.txt", "source 2\n");
    let plan = split_build(f.d(), &["plan", "--builder-version", "v2"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["builder"]["status"], "warm", "an earlier build's `latest` exists");
    assert_eq!(plan["builder"]["cache_from"][0], f.image("builder:latest"));
    assert_eq!(plan["matrices"]["builder"]["include"][0]["status"], "warm");
    let notes = plan["notes"].to_string();
    assert!(notes.contains("builder cache max") && notes.contains("(deps, build)"), "{notes}");

    let v2 = f.build("v2", None);
    let log = stderr(&v2);
    assert_eq!(ran_and_cached(&log, "deps-ran"), (false, true), "the dependency step is CACHED from the registry:\n{log}");
    assert!(ran_and_cached(&log, "build-ran").0, "the source step runs again");
    let (deps2, build2) = f.stamps("v2");
    assert_eq!(deps2, deps1, "the dependency layer is v1's, taken from the registry (the daemon had neither it nor its cache)");
    assert_ne!(build2, build1);
    let files = f.files("builder:v2");
    assert_eq!(files["agent/out.txt"], "source 2\n");

    // A change to the dependency stage's inputs runs it again.
    f.fresh_runner();
    f.write("deps.txt", "deps 2\n");
    let v3 = f.build("v3", None);
    assert!(ran_and_cached(&stderr(&v3), "deps-ran").0, "a changed dependency input re-runs the dependency step");
    assert_ne!(f.stamps("v3").0, deps1);

    // Retention keeps the newest cache image of each stage (and the warm tag), and does not
    // count them as builder versions: with one version kept, v1 and v2 go, the cache stays.
    let out = split_build(f.d(), &["prune", "--builder-version", "v3", "--keep-versions", "1", "--grace", "0s", "--apply"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.tags("builder"), ["cache-build", "cache-deps", "latest", "v3"]);
}

#[test]
fn cache_off_re_runs_every_step_on_a_fresh_runner() {
    let f = Fixture::new("off", "cache: { builder: off }\n", "linux/amd64");
    f.build("v1", None);
    let (deps1, _) = f.stamps("v1");
    assert!(!f.exists("builder:cache-deps"), "off pushes no cache image");
    f.fresh_runner();
    f.write("src/main.txt", "source 2\n");
    let v2 = f.build("v2", None);
    let log = stderr(&v2);
    assert!(ran_and_cached(&log, "deps-ran").0, "off: the dependency step runs again:\n{log}");
    assert_ne!(f.stamps("v2").0, deps1);
}

#[test]
fn two_platforms_each_keep_their_own_cache() {
    let f = Fixture::new("legs", "", "linux/amd64, linux/arm64");
    // The busybox image as an index of an amd64 and an arm64 child, each with layers of its
    // own as real platforms have (the same static binary inside: `RUN` works on this amd64
    // daemon without emulation).
    let busybox = format!("{}/busybox:{}", f.namespace, f.nonce);
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let staging = format!("{}/busybox-{arch}:{}", f.namespace, f.nonce);
        import_and_push(
            &busybox_rootfs_tar(&[("nonce", f.nonce.as_bytes()), ("arch", arch.as_bytes())]),
            &format!("{}/{staging}", f.reg.host),
        );
        children.push((staging, arch));
    }
    let children: Vec<(&str, &str)> = children.iter().map(|(s, a)| (s.as_str(), *a)).collect();
    make_platform_index(&f.reg.host, &children, &busybox);
    let platforms = ["linux/amd64", "linux/arm64"];
    let mut v1 = Vec::new();
    for p in platforms {
        f.fresh_runner();
        let out = f.build("v1", Some(p));
        let leg = p.replace('/', "-");
        let config = f.reg.inspect(&format!("{}/builder:cache-deps-{leg}", f.namespace), "--config");
        let config = config.unwrap_or_else(|| panic!("{p}: no cache image:\n{}", stderr(&out)));
        assert_eq!(format!("linux/{}", config["architecture"].as_str().unwrap()), p, "each platform's own cache image");
        assert!(f.exists(&format!("builder:latest-{leg}")) && f.exists(&format!("builder:cache-build-{leg}")));
        v1.push(f.stamps(&format!("v1-{leg}")).0);
    }
    assert_ne!(v1[0], v1[1], "each leg ran its own dependency step");
    f.write("src/main.txt", "source 2\n");
    for (p, deps1) in platforms.into_iter().zip(&v1) {
        // Each leg is a job on a runner of its own platform, fresh.
        f.fresh_runner();
        let out = f.build("v2", Some(p));
        let log = stderr(&out);
        assert_eq!(ran_and_cached(&log, "deps-ran"), (false, true), "{p}: its dependency step is CACHED:\n{log}");
        assert_eq!(&f.stamps(&format!("v2-{}", p.replace('/', "-"))).0, deps1, "{p}: from its own cache image");
    }
}

#[test]
fn a_two_stage_base_under_max_caches_both_stages() {
    let f = Fixture::new("bases", "cache: { bases: max }\n", "linux/amd64");
    let nonce = &f.nonce;
    f.write(
        "base/Dockerfile",
        &format!(
            "ARG BASE_IMAGE\nFROM $BASE_IMAGE AS tools\nRUN echo tools-ran-{nonce} && date +%s%N > /tools.stamp\nFROM $BASE_IMAGE\nCOPY --from=tools /tools.stamp /tools.stamp\nCOPY extra.txt /extra.txt\nRUN echo final-ran-{nonce} && date +%s%N > /final.stamp\n"
        ),
    );
    f.write("base/extra.txt", "1\n");
    let build = |what: &str| {
        let out = SplitBuild::new(f.d()).args(["build", "--stage", "bases"]).env("RUST_LOG", "split_build=debug").output();
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        out
    };
    build("v1");
    assert!(f.exists("base:one-cache-tools"), "the base's other stage is pushed as its cache image");
    let base_tag = |f: &Fixture| {
        let plan: serde_json::Value = serde_json::from_slice(&split_build(f.d(), &["plan"]).stdout).unwrap();
        plan["bases"][0]["image"].as_str().unwrap().rsplit_once(':').unwrap().1.to_owned()
    };
    let first = f.files(&format!("base:{}", base_tag(&f)));

    f.fresh_runner();
    f.write("base/extra.txt", "2\n");
    let plan: serde_json::Value = serde_json::from_slice(&split_build(f.d(), &["plan"]).stdout).unwrap();
    assert!(plan["notes"].to_string().contains("bases cache max"), "{}", plan["notes"]);
    let log = stderr(&build("v2"));
    assert_eq!(ran_and_cached(&log, "tools-ran"), (false, true), "the first stage is CACHED from `one-cache-tools`:\n{log}");
    assert!(ran_and_cached(&log, "final-ran").0, "the step after the changed file runs");
    let second = f.files(&format!("base:{}", base_tag(&f)));
    assert_eq!(second["tools.stamp"], first["tools.stamp"]);
    assert_ne!(second["final.stamp"], first["final.stamp"]);
    // The final stage's own steps before the change came from `one-latest`'s inline cache.
    assert!(ran_and_cached(&log, "COPY --from=tools").1, "the final stage is cached too:\n{log}");
}
