//! The integration tests, as one test binary: each module was once a binary of its own and
//! keeps its name; `support` is what they share (the local services, the one runner of the
//! `split-build` binary, file helpers).

// A test panics on what it did not expect, and its helpers are its own: the crate's lints for
// shipped code (no unwrap, pub(crate), docs on everything public) do not apply here.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, missing_docs)]

mod support;

mod actions;
mod assemble;
mod bad_specs;
mod builder_cache;
mod disk;
mod docker_run;
mod dockerignore;
mod e2e_act;
mod fleet;
mod hardening;
mod multi_platform;
mod plan_once;
mod plan_snapshots;
mod prune;
mod services;
mod summaries;
mod upload;
mod upstream;
mod why;
