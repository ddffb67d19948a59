//! Thin I/O at the edges: no decisions, only translation between the world and the core.

pub mod actions_env;
pub mod credentials;
pub mod docker_engine;
pub mod github_packages;
pub mod registry;
pub(crate) mod tls;
pub mod workspace;
