//! Image references (`registry/repository:tag@digest`) and the small value types they are
//! made of: [`Tag`], [`Digest`] and repository names, each with the OCI distribution grammar.

use std::fmt;
use std::str::FromStr;

/// The registry that a reference without a registry host means.
pub const DOCKER_HUB: &str = "docker.io";

/// The longest tag the OCI distribution spec allows.
pub const MAX_TAG_LEN: usize = 128;

/// Why a string is not a valid reference, tag, digest or repository name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RefError(pub String);

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

impl Tag {
    /// The tag as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !first_ok || !rest_ok || s.len() > MAX_TAG_LEN {
            return Err(RefError(format!(
                "`{s}` is not a valid tag: a tag is 1 to 128 characters of letters, digits, `_`, `.` and `-`, and does not start with `.` or `-`"
            )));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A content digest such as `sha256:<64 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest as written (`algorithm:hex`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))))
    }
}

impl FromStr for Digest {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let bad = || RefError(format!("`{s}` is not a valid digest: expected `sha256:` followed by 64 lower-case hex digits"));
        let (algo, hex) = s.split_once(':').ok_or_else(bad)?;
        let hex_ok = |n: usize| hex.len() == n && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        match algo {
            "sha256" if hex_ok(64) => Ok(Digest(s.to_owned())),
            "sha512" if hex_ok(128) => Ok(Digest(s.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks one repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or one or more `-`.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-');
        if !ok {
            return false;
        }
    }
    true
}

/// Checks a repository name (path components separated by `/`), as the OCI distribution
/// spec defines it, and returns a message saying what would be valid when it is not.
pub fn check_repository(name: &str) -> Result<(), RefError> {
    if !name.is_empty() && name.len() <= 255 && name.split('/').all(valid_component) {
        return Ok(());
    }
    Err(RefError(format!(
        "`{name}` is not a valid repository name: use lower-case letters and digits, separated by `.`, `_`, `__`, `-` or `/` (for example `eval-agent-server` or `openhands/eval-base`)"
    )))
}

fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || !p.is_empty() => {
            if n.starts_with('[') && !n.ends_with(']') {
                (host, None)
            } else {
                (n, Some(p))
            }
        }
        _ => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    let name_ok = if name.starts_with('[') {
        name.ends_with(']') && name.len() > 2
    } else {
        !name.is_empty() && name.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    port_ok && name_ok
}

/// A registry host with its optional namespace, as the spec's `registry` key names it
/// (`ghcr.io/openhands`, `127.0.0.1:5000`, `docker.io/myorg`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryPrefix {
    /// Registry host, with port where given.
    pub host: String,
    /// Namespace below the host, without surrounding slashes; may be empty.
    pub namespace: String,
}

impl RegistryPrefix {
    /// The full repository path for `name` below this prefix.
    pub fn repository(&self, name: &str) -> String {
        if self.namespace.is_empty() { name.to_owned() } else { format!("{}/{name}", self.namespace) }
    }
}

impl FromStr for RegistryPrefix {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let trimmed = s.trim_end_matches('/');
        let bad =
            |why: &str| RefError(format!("`{s}` is not a valid registry: {why} (for example `ghcr.io/openhands` or `127.0.0.1:5000`)"));
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        let (host, namespace) = match trimmed.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (first, rest),
            None if looks_like_host(trimmed) => (trimmed, ""),
            _ => (DOCKER_HUB, trimmed),
        };
        if !valid_host(host) {
            return Err(bad("the host is not a valid host name"));
        }
        if !namespace.is_empty() && check_repository(namespace).is_err() {
            return Err(bad("the namespace must be lower-case letters, digits, `.`, `_`, `-` and `/`"));
        }
        Ok(RegistryPrefix { host: host.to_owned(), namespace: namespace.to_owned() })
    }
}

impl fmt::Display for RegistryPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() { f.write_str(&self.host) } else { write!(f, "{}/{}", self.host, self.namespace) }
    }
}

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// Registry host with optional port (`docker.io` when the reference named none).
    pub registry: String,
    /// Repository path (`library/` added for single-name Docker Hub references).
    pub repository: String,
    /// Tag, if any.
    pub tag: Option<Tag>,
    /// Digest, if any.
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// A reference to `repository:tag` in `registry`.
    pub fn new(registry: &str, repository: &str, tag: Tag) -> ImageRef {
        ImageRef { registry: registry.to_owned(), repository: repository.to_owned(), tag: Some(tag), digest: None }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: Tag) -> ImageRef {
        ImageRef { tag: Some(tag), digest: None, ..self.clone() }
    }

    /// The same repository pinned to a digest (the tag is kept for readability).
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef { digest: Some(digest), ..self.clone() }
    }

    /// What to ask the registry for: the digest when there is one, else the tag, else `latest`.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_owned(),
        }
    }
}

impl FromStr for ImageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let bad = |why: String| RefError(format!("`{s}` is not a valid image reference: {why}"));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|e| bad(e.0))?)),
            None => (s, None),
        };
        // The tag separator is the last `:` after the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].parse::<Tag>().map_err(|e| bad(e.0))?))
            }
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, repo)) if looks_like_host(first) => (first.to_owned(), repo.to_owned()),
            Some(_) => (DOCKER_HUB.to_owned(), name.to_owned()),
            None => (DOCKER_HUB.to_owned(), format!("library/{name}")),
        };
        if !valid_host(&registry) {
            return Err(bad(format!("`{registry}` is not a valid registry host")));
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" { DOCKER_HUB.to_owned() } else { registry };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') { format!("library/{repository}") } else { repository };
        check_repository(&repository).map_err(|e| bad(e.0))?;
        Ok(ImageRef { registry, repository, tag, digest })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

crate::core::serde_via_str!(ImageRef);
crate::core::serde_via_str!(Tag);
crate::core::serde_via_str!(Digest);

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn canonical_references_round_trip() {
        for s in [
            "ghcr.io/openhands/eval-base:django__django-11099-0a1b2c3d4e5f6g7h",
            "127.0.0.1:5000/eval-agent:v1",
            "localhost/x/y/z:latest",
            "docker.io/library/busybox:1.36",
            "docker.io/swebench/sweb.eval.x86_64.django_1776_django-11099:latest",
            &format!("ghcr.io/a/b:t@{D}"),
            &format!("ghcr.io/a/b@{D}"),
            "[::1]:5000/a:b",
        ] {
            let r: ImageRef = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(r.to_string(), s);
            assert_eq!(r.to_string().parse::<ImageRef>().unwrap(), r);
        }
    }

    #[test]
    fn docker_hub_defaults() {
        let cases = [
            ("busybox", "docker.io", "library/busybox", None),
            ("busybox:1", "docker.io", "library/busybox", Some("1")),
            ("swebench/x:latest", "docker.io", "swebench/x", Some("latest")),
            ("index.docker.io/ubuntu", "docker.io", "library/ubuntu", None),
            ("localhost:5000/a", "localhost:5000", "a", None),
        ];
        for (input, reg, repo, tag) in cases {
            let r: ImageRef = input.parse().unwrap();
            assert_eq!((r.registry.as_str(), r.repository.as_str()), (reg, repo), "{input}");
            assert_eq!(r.tag.as_ref().map(Tag::as_str), tag, "{input}");
        }
    }

    #[test]
    fn bad_references_are_rejected() {
        for s in ["", "UPPER/case", "a//b", "a:", "a:-tag", "a@sha256:12", "ghcr.io/a/b:t t", "-a/b"] {
            assert!(s.parse::<ImageRef>().is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn tags_follow_the_oci_grammar() {
        for ok in ["a", "_x", "v1.2.3", "django__django-11099", &"a".repeat(128)] {
            assert_eq!(ok.parse::<Tag>().unwrap().to_string(), ok);
        }
        for bad in ["", ".a", "-a", "a b", "a::b", "a\n", "x%0A", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digests_round_trip_and_reject_junk() {
        assert_eq!(D.parse::<Digest>().unwrap().to_string(), D);
        assert!("sha256:ABC".parse::<Digest>().is_err());
        assert!("md5:0123".parse::<Digest>().is_err());
        assert_eq!(Digest::sha256_of(b"").as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn repository_components() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "org/eval-base", "sweb.eval.x86_64.django_1776_django-11099"] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a_", "a___b", "a/", "/a", "a..b", "a-.b"] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_prefixes_round_trip() {
        for (s, host, ns) in [
            ("ghcr.io/openhands", "ghcr.io", "openhands"),
            ("127.0.0.1:5000", "127.0.0.1:5000", ""),
            ("openhands", "docker.io", "openhands"),
        ] {
            let p: RegistryPrefix = s.parse().unwrap();
            assert_eq!((p.host.as_str(), p.namespace.as_str()), (host, ns));
        }
        assert_eq!("ghcr.io/openhands".parse::<RegistryPrefix>().unwrap().to_string(), "ghcr.io/openhands");
        assert!("ghcr.io/Open Hands".parse::<RegistryPrefix>().is_err());
    }
}
