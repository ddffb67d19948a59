//! Thin I/O at the edges: no decisions, only translation between the world and the core.

pub(crate) mod actions_env;
pub(crate) mod clock;
pub mod credentials;
pub(crate) mod docker_engine;
pub(crate) mod github_packages;
pub mod registry;
pub(crate) mod tls;
pub(crate) mod workspace;
