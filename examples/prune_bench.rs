//! `scripts/bench prune`: split-build's prune against the tests' GitHub API double (GitHub's
//! limits on a clock `PRUNE_SCALE` times faster): deletions per budget-hour against the floor
//! for a workflow's `GITHUB_TOKEN` (1,000 requests an hour) and a personal token (5,000), and
//! the time to the first deletion on a package of 133,000 versions.
//!
//! `cargo run --release --example prune_bench -- BIN REGISTRY_HOST WORKDIR` (the registry,
//! an empty Debian `docker-registry` on loopback, is only asked for the plan).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, missing_docs, dead_code)]

#[path = "../tests/it/support/github_api.rs"]
mod github_api;
#[path = "../tests/it/support/http.rs"]
mod http;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use github_api::{GithubApi, Limits, Package, SCALE_VAR, TOKEN};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, bin, registry, work] = &args[..] else { panic!("usage: prune_bench BIN REGISTRY_HOST WORKDIR") };
    let scale: f64 = std::env::var("PRUNE_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(360.0);
    let budget = std::env::var("PRUNE_BUDGET").unwrap_or_else(|_| "2h".into());
    let budget_h = humantime::parse_duration(&budget).unwrap().as_secs_f64() / 3600.0;
    let dir = Path::new(work);
    std::fs::create_dir_all(dir.join("base")).unwrap();
    std::fs::write(dir.join("base/Dockerfile"), "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n").unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch AS payload\n").unwrap();
    std::fs::write(
        dir.join("split-build.yml"),
        format!(
            "registry: {registry}/acme\nbuilder: {{ repository: builder, version: v1 }}\nbases: {{ repository: base, context: base, from: \"{registry}/upstream:1\", instances: [inst-1] }}\nagents: {{ repository: agent, variants: [{{ name: main }}] }}\nkeep: [\"keep-*\"]\n"
        ),
    )
    .unwrap();

    println!("clock {scale:.0}x faster, --time-budget {budget}; floor = the hourly limit less one list page per 100 deletions");
    println!(
        "{:<28} {:>8} {:>9} {:>8} {:>10} {:>10} {:>7} {:>9} {:>9} {:>6}",
        "token", "versions", "deleted", "wall h", "del/bud-h", "floor/h", "of fl.", "hourly 403", "second.", "500s"
    );
    for (label, hourly, limits) in [
        ("GITHUB_TOKEN (1,000/h)", 1000u64, Limits::github_token(scale)),
        ("personal token (5,000/h)", 5000, Limits::personal_token(scale)),
    ] {
        let versions = (budget_h.ceil() as u64 + 1) * hourly;
        let api = GithubApi::with_limits(package(versions), limits);
        let t = Instant::now();
        let status = prune(bin, dir, &api, scale, &["--time-budget", &budget]).status().unwrap();
        assert!(status.success(), "prune under {label}: {status}");
        let wall_h = t.elapsed().as_secs_f64() * scale / 3600.0;
        let seen = api.seen();
        let deleted = seen.deleted.len() as f64;
        let floor = hourly as f64 * 100.0 / 101.0;
        println!(
            "{label:<28} {versions:>8} {deleted:>9} {wall_h:>8.2} {:>10.0} {floor:>10.0} {:>6.0}% {:>9} {:>9} {:>6}   (exit {:?})",
            deleted / budget_h,
            100.0 * deleted / budget_h / floor,
            seen.primary_refused,
            seen.secondary_refused,
            seen.server_errors,
            status.code()
        );
    }

    let api = GithubApi::with_limits(package(133_000), Limits::personal_token(scale));
    let t = Instant::now();
    let status = prune(bin, dir, &api, scale, &["--max-delete", "100"]).status().unwrap();
    assert!(status.success(), "prune of 133,000 versions: {status}");
    let seen = api.seen();
    let first = seen.first_delete.map(|f| f.duration_since(t)).unwrap_or(Duration::MAX);
    println!(
        "133,000 versions, --max-delete 100: first deletion {:.2} s after the start (goal: <= 10 s), {} deleted, {} requests, whole run {:.2} s (exit {:?})",
        first.as_secs_f64(),
        seen.deleted.len(),
        seen.requests,
        t.elapsed().as_secs_f64(),
        status.code()
    );
}

/// `versions` versions of `acme/agent`, the newest kept by the spec's `keep-*`.
fn package(versions: u64) -> Package {
    Package { org: "acme".into(), name: "agent".into(), versions, tags: vec![vec!["keep-me".into()]], digests: vec![] }
}

fn prune(bin: &str, dir: &Path, api: &GithubApi, scale: f64, extra: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.current_dir(dir)
        .args(["prune", "--source", "ghcr", "--github-api", &api.url, "--registry-password", TOKEN, "--grace", "0s", "--apply"])
        .args(["--report", "prune.json", "--summary", "prune.md"])
        .args(extra)
        .env(SCALE_VAR, scale.to_string())
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_TOKEN")
        .env("RUST_LOG", "warn");
    c
}
