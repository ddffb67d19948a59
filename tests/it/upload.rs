//! The one-request blob upload (`POST /v2/<name>/blobs/uploads/?digest=` with the bytes) as a
//! tested path, on the server the run chose: NORA takes it (201), so a config goes up in one
//! request; distribution answers it with 202 and an upload session (distribution#1170), so the
//! client finishes that session with a PUT and starts every later upload to that host with an
//! empty POST; a registry that refuses it with an error (400, 404, 405, 415) gets the same
//! fallback. Counted at a recording front (support::hostile) and in the client's own counters.

use bytes::Bytes;
use split_build::adapters::credentials::Credentials;
use split_build::adapters::registry;
use split_build::core::image_ref::Digest;

use crate::assemble::fixtures_behind;
use crate::support::hostile::{Behaviour, Hostile, Seen};
use crate::support::*;

/// How the front saw the blob uploads: single-request POSTs (with `digest=`), session POSTs
/// (without), and session-finishing PUTs.
#[derive(Debug, PartialEq, Eq)]
struct Uploads {
    single: usize,
    sessions: usize,
    finishes: usize,
}

fn uploads(seen: &[Seen]) -> Uploads {
    // Mounts are POSTs to the same path (`?mount=&from=`): not uploads.
    let is_upload = |s: &&Seen| s.target.contains("/blobs/uploads/") && !s.target.contains("mount=");
    let single = seen.iter().filter(is_upload).filter(|s| s.method == "POST" && s.target.contains("digest=")).count();
    let sessions = seen.iter().filter(is_upload).filter(|s| s.method == "POST" && !s.target.contains("digest=")).count();
    let finishes = seen.iter().filter(is_upload).filter(|s| s.method == "PUT").count();
    Uploads { single, sessions, finishes }
}

/// Three distinct small blobs (config-sized).
fn blobs() -> Vec<Bytes> {
    (0..3).map(|i| Bytes::from(format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{i}}}"))).collect()
}

#[test]
fn an_agent_commit_uploads_each_config_in_one_post_where_the_registry_takes_it() {
    docker();
    let reg = Registry::start();
    let front = Hostile::start(&reg.host, Behaviour::default());
    let (dir, _) = fixtures_behind(&reg, &front.host);
    let out = split_build(dir.path(), &["assemble", "--report", "r.json", "--summary", "s.md"]);
    assert!(out.status.success(), "assemble: {}", String::from_utf8_lossy(&out.stderr));
    let report = json_file(dir.path(), "r.json");
    let agents: Vec<_> = report["images"].as_array().unwrap().iter().filter(|i| i["stage"] == "agents").collect();
    assert_eq!(agents.len(), 6, "{report}");
    assert!(agents.iter().all(|i| i["status"] == "assembled"), "{report}");
    // Every layer is mounted (both servers mount within one registry), so the only uploads are
    // the six agents' configs.
    let seen = uploads(&front.seen_front());
    match reg.server {
        // NORA answers the single POST with 201: one request (one write) per config.
        Server::Nora => assert_eq!(seen, Uploads { single: 6, sessions: 0, finishes: 0 }),
        // distribution answers it with 202 and a session, which a PUT finishes: two requests
        // per config. The host is remembered once the first 202 is back (the client test below
        // shows it), but the configs go up at once, so several may start as single POSTs
        // before that: they cost no extra request (the single POST stands in for the empty
        // one), only the config's bytes twice.
        Server::Distribution => {
            assert!(seen.single >= 1, "the single POST is tried: {seen:?}");
            assert_eq!((seen.single + seen.sessions, seen.finishes), (6, 6), "POST + PUT per config: {seen:?}");
        }
    }
}

#[test]
fn the_client_counts_one_request_per_upload_where_the_single_post_is_taken() {
    let reg = Registry::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = registry::Registry::new(Credentials::default(), &[], 8).unwrap();
    let stats = registry::Stats::default();
    let blobs = blobs();
    for b in &blobs {
        let digest = rt.block_on(client.upload_blob(&reg.host, "t/up", b.clone(), &stats)).unwrap();
        assert_eq!(digest, Digest::sha256_of(b));
        assert_eq!(rt.block_on(client.get_blob(&reg.host, "t/up", &digest, &registry::Stats::default())).unwrap(), *b);
    }
    let c = stats.counters();
    let bytes: u64 = blobs.iter().map(|b| b.len() as u64).sum();
    match reg.server {
        // One POST each, carrying the bytes.
        Server::Nora => assert_eq!((c.requests, c.writes, c.bytes_pushed), (3, 3, bytes), "{c:?}"),
        // POST + PUT each; only the first POST carried the bytes (answered 202: remembered).
        Server::Distribution => {
            assert_eq!((c.requests, c.writes, c.bytes_pushed), (6, 6, bytes + blobs[0].len() as u64), "{c:?}")
        }
    }
}

#[test]
fn a_registry_that_refuses_the_single_post_gets_post_and_put_once_it_said_so() {
    let reg = Registry::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for status in [400, 404, 405, 415] {
        let front = Hostile::start(&reg.host, Behaviour { refuse_single_post: Some(status), ..Behaviour::default() });
        // A new client per status: what it remembers is per host and per process.
        let client = registry::Registry::new(Credentials::default(), &[], 8).unwrap();
        let stats = registry::Stats::default();
        let repo = format!("t/refused-{status}");
        for b in blobs() {
            let digest = rt
                .block_on(client.upload_blob(&front.host, &repo, b.clone(), &stats))
                .unwrap_or_else(|e| panic!("single POST answered {status}: upload failed: {e:#}"));
            let read = rt.block_on(client.get_blob(&reg.host, &repo, &digest, &registry::Stats::default())).unwrap();
            assert_eq!(read, b, "answer {status}: the blob is in the registry");
        }
        // The single POST was tried once (refused), then every upload took POST + PUT.
        assert_eq!(uploads(&front.seen_front()), Uploads { single: 1, sessions: 3, finishes: 3 }, "single POST answered {status}");
    }
}
