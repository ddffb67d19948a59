//! Content hashes: the 16-character base36 names that make tags content-addressed.
//!
//! Every hash is sha256 over a canonical list of named fields, in the order the caller
//! gives, each written as `name` `\0` length `\0` value. The list starts with a scheme
//! name and version (`split-build/base/v1`), so a change of what goes in can never collide
//! with an older hash. The README lists, for each stage, exactly which fields go in.

use sha2::{Digest as _, Sha256};

/// How many characters a content hash has.
pub const HASH_LEN: usize = 16;

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

/// Shortens a tag over the 128-character limit: keeps its readable head and ends it in
/// `-` and the hash of the whole tag. Tags within the limit come back unchanged.
pub fn fit_tag(tag: &str) -> String {
    const MAX: usize = crate::core::image_ref::MAX_TAG_LEN;
    if tag.len() <= MAX {
        return tag.to_owned();
    }
    let keep = MAX - 1 - HASH_LEN;
    // Tags are ASCII by grammar, but cut on a char boundary anyway.
    let mut cut = keep;
    while !tag.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{}", &tag[..cut], hash_bytes("split-build/long-tag/v1", tag.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn long_tags_keep_head_and_end_in_hash() {
        assert_eq!(fit_tag("short"), "short");
        let exact = "a".repeat(128);
        assert_eq!(fit_tag(&exact), exact);
        let long = format!("{}-tail", "h".repeat(200));
        let fitted = fit_tag(&long);
        assert_eq!(fitted.len(), 128);
        assert!(fitted.starts_with(&"h".repeat(111)));
        assert_ne!(fit_tag(&long), fit_tag(&format!("{}-tai1", "h".repeat(200))));
        assert!(fitted.parse::<crate::core::image_ref::Tag>().is_ok());
    }
}
