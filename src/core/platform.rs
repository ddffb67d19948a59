//! Target platforms (`linux/amd64`, `linux/arm64/v8`) as OCI image indexes name them.

use std::fmt;
use std::str::FromStr;

const OSES: &[&str] = &["linux", "windows", "freebsd", "darwin"];
const ARCHES: &[&str] = &["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64"];
const VARIANTS: &[&str] = &["v5", "v6", "v7", "v8"];

/// One `os/architecture[/variant]` triple.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// Architecture variant (`v8`), if any.
    pub variant: Option<String>,
}

/// Why a string is not a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a known platform: write os/arch[/variant] with os one of {oses} and arch one of {arches} (for example `linux/amd64` or `linux/arm64`)", oses = OSES.join(", "), arches = ARCHES.join(", "))]
pub struct PlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let err = || PlatformError(s.to_owned());
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(*v)),
            _ => return Err(err()),
        };
        let variant_ok = variant.is_none_or(|v| VARIANTS.contains(&v) && matches!(arch, "arm" | "arm64"));
        if !OSES.contains(&os) || !ARCHES.contains(&arch) || !variant_ok {
            return Err(err());
        }
        Ok(Platform { os: os.to_owned(), architecture: arch.to_owned(), variant: variant.map(str::to_owned) })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

crate::core::serde_via_str!(Platform);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_round_trip() {
        for s in ["linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm/v7", "windows/amd64"] {
            assert_eq!(s.parse::<Platform>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn unknown_platforms_are_rejected() {
        for s in ["linux", "amd64", "linux/x86_64", "macos/arm64", "linux/amd64/v8", "linux/arm64/v8/x", ""] {
            let e = s.parse::<Platform>().unwrap_err();
            assert!(e.to_string().contains("linux/amd64"), "{e}");
        }
    }
}
