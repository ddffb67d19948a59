//! The pure heart of split-build: no async, no environment, no clock, no network and no
//! file system. Everything here is a function over plain data.

/// Serializes a type as its `Display` text and deserializes it through `FromStr`, so value
/// types appear in JSON exactly as users write them.
macro_rules! serde_via_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(|e| serde::de::Error::custom(format!("`{text}`: {e}")))
            }
        }
    };
}
pub(crate) use serde_via_str;

/// The words of a list as users write them in flags and action inputs, as docker/* actions
/// take them: separated by spaces, commas or newlines.
pub fn list_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty())
}

pub(crate) mod build_cache;
pub(crate) mod cause;
pub mod content_hash;
pub(crate) mod delete_budget;
pub(crate) mod dockerfile_stages;
pub(crate) mod dockerignore;
pub(crate) mod failures;
pub(crate) mod figures;
pub(crate) mod fingerprint;
pub mod image_config;
pub mod image_ref;
pub(crate) mod inputs_record;
pub(crate) mod legs;
pub(crate) mod matrix;
pub(crate) mod natural_sort;
pub(crate) mod notes;
pub(crate) mod outputs;
pub mod plan;
pub(crate) mod platform;
pub(crate) mod prune_progress;
pub(crate) mod prune_walk;
pub(crate) mod report;
pub(crate) mod retention;
pub(crate) mod secret;
pub mod spec;
pub mod summary;
pub(crate) mod tags;
pub(crate) mod tally;
pub(crate) mod template;
pub(crate) mod why;
