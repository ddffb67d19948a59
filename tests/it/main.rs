//! The integration tests, as one test binary: each module was once a binary of its own and
//! keeps its name; `support` is what they share (the local services, the one runner of the
//! `split-build` binary, file helpers).

mod support;

mod actions;
mod assemble;
mod bad_specs;
mod docker_run;
mod e2e_act;
mod multi_platform;
mod plan_snapshots;
mod prune;
mod services;
