//! Content hashes: the 16-character base36 names that make tags content-addressed.
//!
//! Every hash is sha256 over a canonical list of named fields, in the order the caller
//! gives, each written as `name` `\0` length `\0` value. The list starts with a scheme
//! name and version (`split-build/base/v1`), so a change of what goes in can never collide
//! with an older hash. The README lists, for each stage, exactly which fields go in.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

use crate::core::image_ref::Digest;
use crate::core::platform::Platform;

/// How many characters a content hash has.
pub const HASH_LEN: usize = 16;

/// The scheme (first field) of a base hash; an input record names it too.
pub const BASE_SCHEME: &str = "split-build/base/v1";
/// The scheme (first field) of a builder hash.
pub const BUILDER_SCHEME: &str = "split-build/builder/v1";

/// Accumulates the named fields of one hash.
#[derive(Clone)]
pub struct ContentHasher {
    hasher: Sha256,
}

impl ContentHasher {
    /// Starts a hash for `scheme` (for example `split-build/base/v1`).
    pub fn new(scheme: &str) -> ContentHasher {
        let mut h = ContentHasher { hasher: Sha256::new() };
        h.field("scheme", scheme.as_bytes());
        h
    }

    /// Adds one named field.
    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.hasher.update(name.as_bytes());
        self.hasher.update([0]);
        self.hasher.update(value.len().to_string().as_bytes());
        self.hasher.update([0]);
        self.hasher.update(value);
        self
    }

    /// The 16-character base36 name.
    pub fn finish(self) -> String {
        base36_16(&self.hasher.finalize())
    }
}

/// The hash name of arbitrary bytes under `scheme`.
pub fn hash_bytes(scheme: &str, bytes: &[u8]) -> String {
    let mut h = ContentHasher::new(scheme);
    h.field("bytes", bytes);
    h.finish()
}

/// The first 80 bits of `digest`, in lower-case base36, zero-padded to 16 characters.
/// (36^16 > 2^80, so 16 characters always suffice.)
pub fn base36_16(digest: &[u8]) -> String {
    let mut n: u128 = 0;
    for b in digest.iter().take(10) {
        n = (n << 8) | u128::from(*b);
    }
    let mut out = [b'0'; HASH_LEN];
    for slot in out.iter_mut().rev() {
        let d = (n % 36) as u8;
        *slot = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        n /= 36;
    }
    // Only ASCII digits and letters were written.
    String::from_utf8_lossy(&out).into_owned()
}

/// The hex sha256 of `bytes`, used for file contents inside a hash.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One file of a build context that goes into a hash: its path relative to the context
/// (with `/` separators) and the hex sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputFile {
    /// Path relative to the context, `/`-separated.
    pub path: String,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
}

/// What a Dockerfile build is made of, apart from what differs per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Hex sha256 of the Dockerfile's bytes.
    pub dockerfile_sha256: String,
    /// The build target (`None`: the last stage).
    pub target: Option<String>,
    /// The context files named by `inputs`.
    pub inputs: Vec<InputFile>,
}

impl Recipe {
    fn feed(&self, h: &mut ContentHasher) {
        h.field("dockerfile", self.dockerfile_sha256.as_bytes());
        h.field("target", self.target.as_deref().unwrap_or("").as_bytes());
        let mut inputs: Vec<&InputFile> = self.inputs.iter().collect();
        inputs.sort();
        for f in inputs {
            h.field("input", format!("{}\0{}", f.path, f.sha256).as_bytes());
        }
    }
}

/// A digest of a recipe alone (Dockerfile, target, context inputs): what a plan's
/// fingerprint keeps of the bases' local inputs.
pub fn recipe_digest(recipe: &Recipe) -> String {
    let mut h = ContentHasher::new("split-build/recipe/v1");
    recipe.feed(&mut h);
    h.finish()
}

fn feed_args_and_platforms(h: &mut ContentHasher, build_args: &BTreeMap<String, String>, platforms: &[Platform]) {
    // A BTreeMap iterates in key order: the build args come sorted.
    for (k, v) in build_args {
        h.field("build-arg", format!("{k}={v}").as_bytes());
    }
    let mut names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
    names.sort();
    for p in names {
        h.field("platform", p.as_bytes());
    }
}

/// The hash in a base tag `{instance}-{hash}`. Inputs, in this order: the scheme
/// `split-build/base/v1`, the Dockerfile's sha256, the target, each context input
/// (`path\0sha256`, sorted by path), each build arg `KEY=value` (sorted by key, after
/// templating), the platforms (sorted), the rendered upstream reference, and the upstream
/// digest when the registry gave one.
pub fn base_hash(
    recipe: &Recipe,
    build_args: &BTreeMap<String, String>,
    platforms: &[Platform],
    upstream: &str,
    upstream_digest: Option<&Digest>,
) -> String {
    let mut h = ContentHasher::new(BASE_SCHEME);
    recipe.feed(&mut h);
    feed_args_and_platforms(&mut h, build_args, platforms);
    h.field("from", upstream.as_bytes());
    if let Some(d) = upstream_digest {
        h.field("from-digest", d.as_str().as_bytes());
    }
    h.finish()
}

/// The builder's version when neither the spec nor `--builder-version` sets one. Inputs:
/// the scheme `split-build/builder/v1`, the Dockerfile's sha256, the target, each input
/// file (`path\0sha256`, sorted), each build arg (sorted), the platforms (sorted).
pub fn builder_hash(recipe: &Recipe, build_args: &BTreeMap<String, String>, platforms: &[Platform]) -> String {
    let mut h = ContentHasher::new(BUILDER_SCHEME);
    recipe.feed(&mut h);
    feed_args_and_platforms(&mut h, build_args, platforms);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        Recipe {
            dockerfile_sha256: sha256_hex(b"FROM scratch\n"),
            target: None,
            inputs: vec![InputFile { path: "a".into(), sha256: sha256_hex(b"a") }],
        }
    }

    fn amd64() -> Vec<Platform> {
        vec!["linux/amd64".parse().unwrap()]
    }

    #[test]
    fn base_hash_changes_with_each_input() {
        let args = BTreeMap::new();
        let h0 = base_hash(&recipe(), &args, &amd64(), "u:latest", None);
        assert_eq!(h0, base_hash(&recipe(), &args, &amd64(), "u:latest", None), "deterministic");
        let mut r = recipe();
        r.dockerfile_sha256 = sha256_hex(b"FROM scratch\nRUN x\n");
        assert_ne!(h0, base_hash(&r, &args, &amd64(), "u:latest", None), "dockerfile");
        let mut r = recipe();
        r.target = Some("t".into());
        assert_ne!(h0, base_hash(&r, &args, &amd64(), "u:latest", None), "target");
        let mut r = recipe();
        r.inputs[0].sha256 = sha256_hex(b"b");
        assert_ne!(h0, base_hash(&r, &args, &amd64(), "u:latest", None), "input contents");
        let args2 = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        assert_ne!(h0, base_hash(&recipe(), &args2, &amd64(), "u:latest", None), "build args");
        let arm: Vec<Platform> = vec!["linux/arm64".parse().unwrap()];
        assert_ne!(h0, base_hash(&recipe(), &args, &arm, "u:latest", None), "platform");
        assert_ne!(h0, base_hash(&recipe(), &args, &amd64(), "v:latest", None), "upstream");
        let d = Digest::sha256_of(b"x");
        assert_ne!(h0, base_hash(&recipe(), &args, &amd64(), "u:latest", Some(&d)), "upstream digest");
    }

    #[test]
    fn input_order_and_platform_order_do_not_matter() {
        let mut r1 = recipe();
        r1.inputs.push(InputFile { path: "b".into(), sha256: sha256_hex(b"b") });
        let mut r2 = r1.clone();
        r2.inputs.reverse();
        let p1: Vec<Platform> = vec!["linux/amd64".parse().unwrap(), "linux/arm64".parse().unwrap()];
        let mut p2 = p1.clone();
        p2.reverse();
        let args = BTreeMap::new();
        assert_eq!(base_hash(&r1, &args, &p1, "u", None), base_hash(&r2, &args, &p2, "u", None));
        assert_eq!(builder_hash(&r1, &args, &p1), builder_hash(&r2, &args, &p2));
    }

    #[test]
    fn base36_is_16_chars_and_known() {
        assert_eq!(base36_16(&[0; 32]), "0000000000000000");
        assert_eq!(base36_16(&[0xff; 32]), "5gv2rma270x9hhj3");
        let h = hash_bytes("t", b"x");
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    }

    #[test]
    fn fields_are_length_prefixed() {
        // "ab"+"c" and "a"+"bc" must differ.
        let mut a = ContentHasher::new("t");
        a.field("x", b"ab").field("y", b"c");
        let mut b = ContentHasher::new("t");
        b.field("x", b"a").field("y", b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn scheme_separates_hashes() {
        assert_ne!(hash_bytes("a/v1", b"x"), hash_bytes("a/v2", b"x"));
        assert_eq!(hash_bytes("a/v1", b"x"), hash_bytes("a/v1", b"x"));
    }
}
