//! One module per command, each a short verb: the stages of that command, in order. No
//! command imports another command or `app`.

pub(crate) mod assemble;
pub(crate) mod build;
pub(crate) mod explain;
pub(crate) mod plan;
pub(crate) mod prune;
pub(crate) mod report;
pub(crate) mod run;
