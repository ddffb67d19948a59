//! Legs: with more than one platform every tag names an index, and each platform's image
//! is built by its own job on that platform's runner (a leg). A leg pushes its image under
//! its own tag, `{tag}-{os}-{arch}[-{variant}]`, and the index goes under the real tag once
//! every platform's leg exists: whichever leg completes the set writes it (see the README).
//! With one platform there are no legs: the image goes straight under its tag.

use serde_json::Map;

use crate::core::image_config::{Descriptor, Family, Index, PlatformSpec, is_index};
use crate::core::image_ref::{Digest, ImageRef};
use crate::core::platform::Platform;

/// Whether images of these platforms are indexes made of legs.
pub(crate) fn has_legs(platforms: &[Platform]) -> bool {
    platforms.len() > 1
}

pub(crate) use crate::core::tags::{leg_tag, platform_suffix as suffix};

/// The image a leg of `image` is pushed as.
pub(crate) fn leg(image: &ImageRef, platform: &Platform) -> ImageRef {
    match &image.tag {
        Some(tag) => image.with_tag(leg_tag(tag, platform)),
        None => image.clone(),
    }
}

/// Where the image of `platform` goes: its leg when `platforms` make an index, else the
/// image itself.
pub(crate) fn pushed_as(image: &ImageRef, platform: &Platform, platforms: &[Platform]) -> ImageRef {
    if has_legs(platforms) { leg(image, platform) } else { image.clone() }
}

/// Whether `tag` is a leg of `of` (`{of}-{suffix}` for one of `platforms`).
pub(crate) fn is_leg_of(tag: &str, of: &str, platforms: &[Platform]) -> bool {
    has_legs(platforms)
        && platforms.iter().any(|p| tag.strip_suffix(&suffix(p)).and_then(|t| t.strip_suffix('-')).is_some_and(|t| t.ends_with(of)))
}

/// One leg as the registry holds it: the single-platform manifest pushed for `platform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LegManifest {
    /// The platform it was built for.
    pub platform: Platform,
    /// Its manifest media type.
    pub media_type: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// Its manifest size in bytes.
    pub size: u64,
}

/// The index over every platform's leg, in the order of `platforms`, in the legs' media
/// type family, with its media type. An error when a platform has no leg or the legs are
/// of different families (a Docker list cannot hold OCI manifests).
pub(crate) fn index_over(platforms: &[Platform], legs: &[LegManifest]) -> Result<(Index, &'static str), String> {
    let mut family = None;
    let mut manifests = Vec::with_capacity(platforms.len());
    for p in platforms {
        let leg = legs.iter().find(|l| &l.platform == p).ok_or_else(|| format!("no {p} image yet"))?;
        let f = Family::of(&leg.media_type)
            .filter(|_| !is_index(&leg.media_type))
            .ok_or_else(|| format!("the {p} image is a `{}`, not an image manifest", leg.media_type))?;
        if family.is_some_and(|seen| seen != f) {
            return Err(format!(
                "the platforms' images are of different media-type families (Docker and OCI); build every platform with the same daemon settings ({p} differs)"
            ));
        }
        family = Some(f);
        manifests.push(Descriptor {
            media_type: f.manifest().to_owned(),
            digest: leg.digest.clone(),
            size: leg.size,
            platform: Some(PlatformSpec::of(p)),
            annotations: None,
            extra: Map::new(),
        });
    }
    let family = family.ok_or_else(|| "no platforms".to_owned())?;
    let index = Index { schema_version: 2, media_type: Some(family.index().to_owned()), manifests, annotations: None, extra: Map::new() };
    Ok((index, family.index()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::image_config::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn leg_of(platform: &str, media_type: &str, seed: &[u8]) -> LegManifest {
        LegManifest { platform: p(platform), media_type: media_type.into(), digest: Digest::sha256_of(seed), size: 500 + seed.len() as u64 }
    }

    #[test]
    fn legs_are_named_after_their_platform() {
        let image: ImageRef = "reg.example/ns/base:astropy__astropy-12907-0123456789abcdef".parse().unwrap();
        assert_eq!(leg(&image, &p("linux/arm64")).to_string(), "reg.example/ns/base:astropy__astropy-12907-0123456789abcdef-linux-arm64");
        assert_eq!(leg(&image, &p("linux/arm/v7")).tag.unwrap().as_str(), "astropy__astropy-12907-0123456789abcdef-linux-arm-v7");
        let two = [p("linux/amd64"), p("linux/arm64")];
        assert_eq!(pushed_as(&image, &two[0], &two[..1]), image, "one platform: no legs");
        assert_ne!(pushed_as(&image, &two[0], &two), image);
        let long: crate::core::image_ref::Tag = "x".repeat(125).parse().unwrap();
        let t = leg_tag(&long, &two[1]);
        assert!(t.as_str().len() <= 128 && t.as_str().starts_with("xxxx"), "{t}");
        assert_ne!(leg_tag(&long, &two[0]), leg_tag(&long, &two[1]));
        assert!(is_leg_of("i-latest-linux-arm64", "-latest", &two));
        assert!(!is_leg_of("i-latest-linux-arm64", "-latest", &two[..1]));
        assert!(!is_leg_of("i-latest-linux-s390x", "-latest", &two));
        assert!(!is_leg_of("i-latest", "-latest", &two));
    }

    #[test]
    fn the_index_lists_every_platform_in_order_in_the_legs_family() {
        let two = [p("linux/amd64"), p("linux/arm64")];
        let legs = [leg_of("linux/arm64", DOCKER_MANIFEST, b"arm"), leg_of("linux/amd64", DOCKER_MANIFEST, b"amd")];
        let (index, media_type) = index_over(&two, &legs).unwrap();
        assert_eq!(media_type, DOCKER_LIST);
        let archs: Vec<&str> = index.manifests.iter().map(|d| d.platform.as_ref().unwrap().architecture.as_str()).collect();
        assert_eq!(archs, ["amd64", "arm64"]);
        assert_eq!(index.manifests[0].digest, Digest::sha256_of(b"amd"));
        assert_eq!(index.manifests[1].size, 503);
        let oci = [leg_of("linux/amd64", OCI_MANIFEST, b"a"), leg_of("linux/arm64", OCI_MANIFEST, b"b")];
        assert_eq!(index_over(&two, &oci).unwrap().1, OCI_INDEX);
        // The same legs give the same bytes, whichever leg writes the index.
        let again = [legs[1].clone(), legs[0].clone()];
        assert_eq!(serde_json::to_vec(&index_over(&two, &again).unwrap().0).unwrap(), serde_json::to_vec(&index).unwrap());
    }

    #[test]
    fn no_index_while_a_platform_is_missing_or_the_families_differ() {
        let two = [p("linux/amd64"), p("linux/arm64")];
        let one = [leg_of("linux/amd64", DOCKER_MANIFEST, b"a")];
        assert!(index_over(&two, &one).unwrap_err().contains("no linux/arm64 image"));
        let mixed = [leg_of("linux/amd64", DOCKER_MANIFEST, b"a"), leg_of("linux/arm64", OCI_MANIFEST, b"b")];
        assert!(index_over(&two, &mixed).unwrap_err().contains("different media-type families"));
        let list = [leg_of("linux/amd64", DOCKER_LIST, b"a"), leg_of("linux/arm64", DOCKER_MANIFEST, b"b")];
        assert!(index_over(&two, &list).unwrap_err().contains("not an image manifest"));
    }
}
