//! The pure heart of split-build: no async, no environment, no clock, no network and no
//! file system. Everything here is a function over plain data.

pub mod content_hash;
pub mod image_ref;
pub mod platform;
pub mod spec;
pub mod template;
