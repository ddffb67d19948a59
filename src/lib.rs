//! split-build: builds hundreds of near-identical container images as a content-addressed
//! base per instance plus a thin agent layer assembled at the registry.
//!
//! [`core`] holds the pure model (spec, tags, plan, matrices, summaries); [`adapters`]
//! the thin I/O edges (GitHub Actions files, registry, Docker, GitHub API); [`commands`]
//! the steps of each command; [`app`] parses the arguments and maps outcomes to exit codes.

pub mod adapters;
pub mod app;
pub mod cli;
pub mod commands;
pub mod core;
