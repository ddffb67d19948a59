//! The steps commands are made of, one file per step: preparing the spec, observing the
//! registry, building through the daemon, appending at the registry, the dockerfile method,
//! listing what a registry holds (and walking a GitHub package for prune), handing the plan to jobs, emitting reports and summaries (the prune report streamed), and the one bounded job
//! runner. Stages call the pure core and the adapters; commands call stages; no stage
//! imports a command.

pub(crate) mod append;
pub(crate) mod daemon;
pub(crate) mod dockerfile;
pub(crate) mod emit;
pub(crate) mod handover;
pub(crate) mod inventory;
pub(crate) mod jobs;
pub(crate) mod merge;
pub(crate) mod observe;
pub(crate) mod prepare;
pub(crate) mod report_stream;
