//! Real local services for integration tests: a registry (Debian's `docker-registry`, or NORA
//! when `SPLIT_BUILD_TEST_REGISTRY=nora`) on a free loopback port with a temp storage dir,
//! the Docker daemon, and skopeo as an independent checker. Each test starts what it needs; a
//! missing program fails the test with a message naming it (CI installs them in `.ci/run`;
//! tests never skip). Also the one runner of the binary under test and the file helpers the
//! tests share.

pub mod faulty_proxy;
pub mod github_api;
pub mod hostile;
mod http;
mod nora;
pub mod rate_front;
mod runner;
pub mod seed;
pub mod token_proxy;

pub use runner::{SplitBuild, split_build};

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use split_build::adapters::credentials::Credentials;
use split_build::adapters::registry;
use split_build::core::image_config::{DOCKER_LIST, DOCKER_MANIFEST};
use split_build::core::image_ref::{Digest, ImageRef};

/// The path of `program`, or a panic that says which Debian package provides it.
pub fn require(program: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/sbin"]) {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("missing program `{program}`: install Debian's `{package}` (bash .ci/run installs everything the tests need)");
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain-HTTP GET on loopback: (status, headers+body text).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// The registry implementation a test runs on: Debian's `docker-registry` (CNCF distribution)
/// unless `SPLIT_BUILD_TEST_REGISTRY` names another (`distribution` or `nora`). One parameter
/// for the whole run, so every test that starts a [`Registry`] runs on each server that
/// `scripts/test` passes it (see `scripts/test`); a test branches on [`Registry::server`] only
/// where the servers differ, and says what split-build does on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// CNCF distribution 2.8 (Debian's `docker-registry`).
    Distribution,
    /// NORA (crates.io `nora-registry`, built by `scripts/nora-install`).
    Nora,
}

impl Server {
    /// The server `SPLIT_BUILD_TEST_REGISTRY` names (distribution when unset); any other value
    /// fails the test.
    pub fn chosen() -> Server {
        match std::env::var("SPLIT_BUILD_TEST_REGISTRY").as_deref() {
            Err(_) | Ok("" | "distribution") => Server::Distribution,
            Ok("nora") => Server::Nora,
            Ok(other) => panic!("SPLIT_BUILD_TEST_REGISTRY={other}: the tests know `distribution` and `nora`"),
        }
    }
}

/// A running registry (the [`Server`] chosen for the run) with filesystem storage in a temp
/// dir and deletes enabled; stopped by its own process id and removed on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The port.
    pub port: u16,
    /// User and password when started with [`Registry::start_with_auth`].
    pub auth: Option<(String, String)>,
    /// Which implementation answers.
    pub server: Server,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// An open registry.
    pub fn start() -> Registry {
        Registry::launch(Server::chosen(), None)
    }

    /// A registry that wants HTTP Basic auth (htpasswd) for every request.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::launch(Server::chosen(), Some((user.to_owned(), password.to_owned())))
    }

    fn launch(server: Server, auth: Option<(String, String)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        if let Some((user, password)) = &auth {
            let hash = bcrypt::hash(password, 5).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
        }
        let child = Registry::serve(server, dir.path(), port, auth.is_some());
        Registry { host: format!("127.0.0.1:{port}"), port, auth, server, child, _dir: dir }
    }

    /// Starts `server` on `port` with its storage (and htpasswd) in `dir`, and waits until it
    /// answers.
    fn serve(server: Server, dir: &Path, port: u16, with_auth: bool) -> Child {
        let htpasswd = with_auth.then(|| dir.join("htpasswd"));
        let mut child = match server {
            Server::Distribution => spawn_distribution(dir, port, htpasswd.as_deref()),
            Server::Nora => nora::spawn(dir, port, htpasswd.as_deref()),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some((status, _)) = http_get(port, "/v2/")
                && (status == 200 || status == 401)
            {
                return child;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{server:?} did not answer on 127.0.0.1:{port} within 20 s");
    }

    /// Stops the registry, keeping its storage: it refuses connections until
    /// [`Registry::restart`] (an upstream outage).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped registry again, on the same port with the same storage.
    pub fn restart(&mut self) {
        self.child = Registry::serve(self.server, self._dir.path(), self.port, self.auth.is_some());
    }

    /// `skopeo` credentials flag for this registry.
    pub fn skopeo_creds(&self) -> Vec<String> {
        match &self.auth {
            Some((u, p)) => vec![format!("--creds={u}:{p}")],
            None => vec![],
        }
    }

    /// `skopeo inspect` (or `--raw`, or `--config`) of `repo:tag` in this registry, as JSON.
    pub fn inspect(&self, reference: &str, mode: &str) -> Option<serde_json::Value> {
        let mut cmd = Command::new(require("skopeo", "skopeo"));
        cmd.arg("inspect").arg("--tls-verify=false").args(self.skopeo_creds());
        if !mode.is_empty() {
            cmd.arg(mode);
        }
        let out = cmd.arg(format!("docker://{}/{reference}", self.host)).output().unwrap();
        if !out.status.success() {
            eprintln!("skopeo inspect {reference}: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a server by its own process id: SIGTERM, up to five seconds to exit, then SIGKILL
/// (NORA did not always stop on SIGTERM alone).
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).stderr(Stdio::null()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Debian's `docker-registry` serving `dir`/data on `port` (Basic auth from `htpasswd` if given).
fn spawn_distribution(dir: &Path, port: u16, htpasswd: Option<&Path>) -> Child {
    let program = require("docker-registry", "docker-registry");
    let mut config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("data").display()
    );
    if let Some(htpasswd) = htpasswd {
        config.push_str(&format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", htpasswd.display()));
    }
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    Command::new(program)
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting docker-registry")
}

/// Makes sure a Docker daemon answers (`docker info`), starting Debian's `dockerd` in the
/// background when none runs. Panics with the reason when it cannot.
pub fn docker() -> &'static Path {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY.get_or_init(|| {
        let cli = require("docker", "docker.io");
        let ok = || Command::new(&cli).arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if !ok() {
            let dockerd = require("dockerd", "docker.io");
            // dockerd outlives the test process on purpose (setsid detaches it); the
            // spawned `setsid` itself is reaped on a thread.
            let mut setsid =
                Command::new("setsid").arg(dockerd).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting dockerd");
            std::thread::spawn(move || setsid.wait());
            let deadline = Instant::now() + Duration::from_secs(60);
            while !ok() {
                assert!(Instant::now() < deadline, "dockerd did not come up within 60 s (is this process root?)");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        cli
    })
}

/// Runs `docker ARGS`, returning stdout; panics with stderr on failure.
pub fn docker_cmd(args: &[&str]) -> String {
    let out = Command::new(docker()).args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tar of a minimal runnable root file system: Debian's static busybox as `/bin/busybox`
/// with `sh`, `cat`, `ls`, `echo`, `env` and `test` links, plus `extra` files.
pub fn busybox_rootfs_tar(extra: &[(&str, &[u8])]) -> Vec<u8> {
    let busybox = std::fs::read(require("busybox", "busybox-static")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    for d in ["bin", "tmp", "etc"] {
        dir(&mut b, d);
    }
    append_file(&mut b, "bin/busybox", &busybox, 0o755);
    for link in ["sh", "cat", "ls", "echo", "env", "test", "pwd"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        b.append_link(&mut h, format!("bin/{link}"), "busybox").unwrap();
    }
    for (path, data) in extra {
        append_file(&mut b, path, data, 0o755);
    }
    b.into_inner().unwrap()
}

/// Appends a regular file to a tar with fixed metadata.
pub fn append_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, path, data).unwrap();
}

/// `docker import`s a root file system tar as `tag` and pushes it (the registry must be on
/// loopback, which the daemon treats as insecure).
pub fn import_and_push(rootfs: &[u8], tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("rootfs.tar");
    std::fs::write(&tar, rootfs).unwrap();
    docker_cmd(&["import", tar.to_str().unwrap(), tag]);
    docker_cmd(&["push", tag]);
}

/// Turns the single-platform image `staging` into an index under `target` with an amd64
/// and an arm64 child (same layers; the arm64 config says arm64).
pub fn make_two_platform_index(host: &str, staging: &str, target: &str) -> (String, Vec<String>) {
    make_platform_index(host, &[(staging, "amd64"), (staging, "arm64")], target)
}

/// An index under `target` with one child per `(staging image, architecture)`: the staging
/// image's layers under a config that says that architecture.
pub fn make_platform_index(host: &str, children_of: &[(&str, &str)], target: &str) -> (String, Vec<String>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = registry::Registry::new(Credentials::default(), &[], 8).unwrap();
        let s = registry::Stats::default();
        let dst: ImageRef = format!("{host}/{target}").parse().unwrap();
        let mut children = Vec::new();
        for (staging, arch) in children_of {
            let src: ImageRef = format!("{host}/{staging}").parse().unwrap();
            let m = client.get_manifest(&src, &s).await.unwrap().unwrap();
            let manifest: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
            let config_digest = manifest["config"]["digest"].as_str().unwrap().parse().unwrap();
            let config: serde_json::Value =
                serde_json::from_slice(&client.get_blob(host, &src.repository, &config_digest, &s).await.unwrap()).unwrap();
            for l in manifest["layers"].as_array().unwrap() {
                client.mount_blob(host, &src.repository, &dst.repository, &l["digest"].as_str().unwrap().parse().unwrap(), &s).await.unwrap();
            }
            let mut c = config.clone();
            c["architecture"] = serde_json::json!(arch);
            let bytes = bytes::Bytes::from(serde_json::to_vec(&c).unwrap());
            let len = bytes.len();
            let digest = client.upload_blob(host, &dst.repository, bytes, &s).await.unwrap();
            let mut child = manifest.clone();
            child["config"]["digest"] = serde_json::json!(digest.to_string());
            child["config"]["size"] = serde_json::json!(len);
            let child = bytes::Bytes::from(serde_json::to_vec(&child).unwrap());
            let size = child.len();
            let d = Digest::sha256_of(&child);
            client.put_manifest(&dst, &d.to_string(), DOCKER_MANIFEST, child, &s).await.unwrap();
            children.push(serde_json::json!({"mediaType": DOCKER_MANIFEST, "digest": d.to_string(), "size": size, "platform": {"architecture": arch, "os": "linux"}}));
        }
        let child_digests: Vec<String> = children.iter().map(|c| c["digest"].as_str().unwrap().to_owned()).collect();
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": children});
        let tag = dst.tag.as_ref().unwrap().to_string();
        let d = client.put_manifest(&dst, &tag, DOCKER_LIST, bytes::Bytes::from(serde_json::to_vec(&index).unwrap()), &s).await.unwrap();
        (d.to_string(), child_digests)
    })
}

/// The index under `reference` lists exactly linux/amd64 then linux/arm64, in the family of
/// its children, and each child's config names its platform.
pub fn assert_two_platform_index(reg: &Registry, repository: &str, tag: &str) {
    let raw = reg.inspect(&format!("{repository}:{tag}"), "--raw").unwrap_or_else(|| panic!("{repository}:{tag} has no index"));
    assert_eq!(raw["mediaType"], DOCKER_LIST, "{repository}:{tag}: an index in its children's family");
    let children = raw["manifests"].as_array().unwrap();
    let platforms: Vec<String> = children
        .iter()
        .map(|m| format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap()))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{repository}:{tag}: one child per platform");
    for (child, arch) in children.iter().zip(["amd64", "arm64"]) {
        let config = reg.inspect(&format!("{repository}@{}", child["digest"].as_str().unwrap()), "--config").unwrap();
        assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("linux"), Some(arch)), "{repository}:{tag}");
    }
}

/// A temp dir holding `files` (path relative to it, text): a spec and its contexts.
pub fn spec_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), files);
    dir
}

/// Writes `files` (path relative to `dir`, text), making their folders.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// Copies a file, or a folder with everything below it, to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let dest = match entry.path().strip_prefix(from).unwrap() {
            rel if rel.as_os_str().is_empty() => to.to_owned(),
            rel => to.join(rel),
        };
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// The JSON file `name` in `dir` (a report, usually).
pub fn json_file(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}
