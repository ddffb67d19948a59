//! What a plan was computed from, so that a job handed the plan can tell whether its own
//! checkout would plan the same images: the spec's bytes, the bases' local inputs, the
//! builder version and split-build's version.

use serde::{Deserialize, Serialize};

use crate::core::content_hash::{Recipe, recipe_digest, sha256_hex};

/// The inputs of a plan, each as a digest or a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// sha256 of the spec file's bytes.
    pub spec: String,
    /// Digest of the bases' Dockerfile, target and context inputs.
    pub base_inputs: String,
    /// The builder version in effect.
    pub builder_version: String,
    /// The split-build version that made the plan.
    pub tool_version: String,
}

impl Fingerprint {
    /// The fingerprint of a plan made from these inputs.
    pub fn of(spec_bytes: &[u8], base_recipe: &Recipe, builder_version: &str, tool_version: &str) -> Fingerprint {
        Fingerprint {
            spec: sha256_hex(spec_bytes),
            base_inputs: recipe_digest(base_recipe),
            builder_version: builder_version.to_owned(),
            tool_version: tool_version.to_owned(),
        }
    }

    /// What differs between this (the plan's) and `job`'s, one phrase each; empty when they
    /// agree.
    pub fn differences(&self, job: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.spec != job.spec {
            out.push("the spec file differs".to_owned());
        }
        if self.base_inputs != job.base_inputs {
            out.push("the bases' Dockerfile, target or context files differ".to_owned());
        }
        if self.builder_version != job.builder_version {
            out.push(format!("the builder version is `{}` in the plan, `{}` here", self.builder_version, job.builder_version));
        }
        if self.tool_version != job.tool_version {
            out.push(format!("the plan was made by split-build {}, this is {}", self.tool_version, job.tool_version));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(dockerfile: &str) -> Recipe {
        Recipe { dockerfile_sha256: sha256_hex(dockerfile.as_bytes()), target: None, inputs: vec![] }
    }

    #[test]
    fn differences_name_each_input() {
        let plan = Fingerprint::of(b"spec", &recipe("FROM a"), "v1", "0.1.0");
        assert!(plan.differences(&plan.clone()).is_empty());
        let job = Fingerprint::of(b"spec2", &recipe("FROM b"), "v2", "0.2.0");
        let d = plan.differences(&job);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d[2].contains("`v1` in the plan, `v2` here"), "{d:?}");
    }
}
