//! One module per command: the steps of that command, in order, calling the pure core and
//! the adapters. No decisions of their own beyond sequencing.

pub mod assemble;
pub mod assemble_dockerfile;
pub mod build;
pub mod observe;
pub mod plan;
pub mod prune;
pub mod report;
pub mod run;
