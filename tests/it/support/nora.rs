//! NORA (crates.io `nora-registry`), the second registry implementation the tests run on:
//! built by `scripts/nora-install` into `target/tools/bin/nora` (pinned version, the project's
//! lock), started here in a temp dir on a loopback port, local only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The built `nora`: `SPLIT_BUILD_NORA` when set, else `target/tools/bin/nora` of this
/// checkout; a panic that says how to build it when it is missing.
fn program() -> PathBuf {
    let path = std::env::var_os("SPLIT_BUILD_NORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/nora"));
    assert!(path.is_file(), "missing program `{}`: NORA is built by `bash scripts/nora-install` (scripts/test runs it)", path.display());
    path
}

/// `nora serve` on 127.0.0.1:`port` with its storage, tokens and any `config.toml` lookup in
/// `dir` (its working folder), nothing proxied (an empty `NORA_DOCKER_PROXIES`, else it proxies
/// Docker Hub), no rate limit (tests send bursts), and Basic auth from `htpasswd` if given.
pub(super) fn spawn(dir: &Path, port: u16, htpasswd: Option<&Path>) -> Child {
    let mut cmd = Command::new(program());
    cmd.arg("serve")
        .current_dir(dir)
        .env("NORA_HOST", "127.0.0.1")
        .env("NORA_PORT", port.to_string())
        .env("NORA_STORAGE_PATH", dir.join("data"))
        .env("NORA_DOCKER_PROXIES", "")
        .env("NORA_RATE_LIMIT_ENABLED", "false")
        .env("NORA_SHUTDOWN_TIMEOUT", "2")
        .env("NORA_CONFIG_PATH", dir.join("nora.toml"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::fs::write(dir.join("nora.toml"), "").unwrap();
    if let Some(htpasswd) = htpasswd {
        cmd.env("NORA_AUTH_ENABLED", "true").env("NORA_AUTH_HTPASSWD_FILE", htpasswd);
    }
    cmd.spawn().expect("starting nora")
}
