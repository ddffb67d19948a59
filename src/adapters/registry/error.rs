//! The registry's error as data: what was being done, the HTTP status, the registry's error
//! codes, its `Retry-After`, and its words with every secret cut out. Every retry and
//! recovery decision reads these fields through [`classify`] and the named predicates here,
//! never the text.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;

/// An error code of the OCI distribution spec (and the registries' common extensions), as
/// a registry names it in its `errors` list. Codes this client does not know are kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    /// `BLOB_UNKNOWN`: the blob is not in the repository.
    BlobUnknown,
    /// `BLOB_UPLOAD_INVALID`: the upload session is broken.
    BlobUploadInvalid,
    /// `BLOB_UPLOAD_UNKNOWN`: the upload session is gone.
    BlobUploadUnknown,
    /// `DIGEST_INVALID`: the content does not match its digest.
    DigestInvalid,
    /// `MANIFEST_BLOB_UNKNOWN`: a manifest names a blob the repository lacks.
    ManifestBlobUnknown,
    /// `MANIFEST_INVALID`.
    ManifestInvalid,
    /// `MANIFEST_UNKNOWN`.
    ManifestUnknown,
    /// `NAME_INVALID`.
    NameInvalid,
    /// `NAME_UNKNOWN`: no such repository.
    NameUnknown,
    /// `SIZE_INVALID`.
    SizeInvalid,
    /// `UNAUTHORIZED`.
    Unauthorized,
    /// `DENIED`.
    Denied,
    /// `UNSUPPORTED` (GHCR's answer to a registry DELETE).
    Unsupported,
    /// `TOOMANYREQUESTS`.
    TooManyRequests,
    /// Any other code, as the registry spelled it.
    Other(String),
}

impl ErrorCode {
    /// The code a registry wrote.
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "BLOB_UNKNOWN" => ErrorCode::BlobUnknown,
            "BLOB_UPLOAD_INVALID" => ErrorCode::BlobUploadInvalid,
            "BLOB_UPLOAD_UNKNOWN" => ErrorCode::BlobUploadUnknown,
            "DIGEST_INVALID" => ErrorCode::DigestInvalid,
            "MANIFEST_BLOB_UNKNOWN" => ErrorCode::ManifestBlobUnknown,
            "MANIFEST_INVALID" => ErrorCode::ManifestInvalid,
            "MANIFEST_UNKNOWN" => ErrorCode::ManifestUnknown,
            "NAME_INVALID" => ErrorCode::NameInvalid,
            "NAME_UNKNOWN" => ErrorCode::NameUnknown,
            "SIZE_INVALID" => ErrorCode::SizeInvalid,
            "UNAUTHORIZED" => ErrorCode::Unauthorized,
            "DENIED" => ErrorCode::Denied,
            "UNSUPPORTED" => ErrorCode::Unsupported,
            "TOOMANYREQUESTS" => ErrorCode::TooManyRequests,
            other => ErrorCode::Other(other.to_owned()),
        }
    }

    /// The code as registries write it.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Other(s) => s,
        }
    }
}

/// What kind of failure an error is, apart from the registry's own answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The registry answered with a status that is not what was asked.
    Status,
    /// No answer within the request's deadline (`--timeout`).
    Timeout,
    /// The connection failed or dropped.
    Connection,
    /// The registry (or its token service) refused the credentials, or wants some.
    Auth,
    /// The answer broke the protocol: wrong digest, too large, not JSON, no `Location`,
    /// too many redirects.
    Protocol,
}

/// How a failure is to be treated: the one classification every retry decision uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// The registry asks us to slow down: wait as told and try again for as long as the
    /// deadline allows; never counted against the attempts.
    RateLimited,
    /// Likely to pass on another try (5xx, a dropped connection): retried a bounded
    /// number of times with backoff.
    Temporary,
    /// A manifest refused for a blob that another writer's mount of it left unreadable for
    /// a moment (`MANIFEST_BLOB_UNKNOWN`, `BLOB_UNKNOWN`, `DIGEST_INVALID` on a manifest
    /// PUT): the caller mounts again and writes again.
    BlobRace,
    /// Trying again will not help.
    Permanent,
}

/// The class of an answer with this status and these error codes (the registry's words
/// are not read: see [`RegistryError::rate_limited`] for GHCR's one exception).
pub fn classify(status: StatusCode, codes: &[ErrorCode]) -> Class {
    if status == StatusCode::TOO_MANY_REQUESTS || codes.contains(&ErrorCode::TooManyRequests) {
        return Class::RateLimited;
    }
    if status.is_server_error() {
        return Class::Temporary;
    }
    let race = [ErrorCode::ManifestBlobUnknown, ErrorCode::BlobUnknown, ErrorCode::DigestInvalid];
    if status.is_client_error() && codes.iter().any(|c| race.contains(c)) {
        return Class::BlobRace;
    }
    Class::Permanent
}

/// A failed registry request.
#[derive(Debug, Clone)]
pub struct RegistryError {
    kind: ErrorKind,
    status: Option<StatusCode>,
    codes: Vec<ErrorCode>,
    retry_after: Option<Duration>,
    /// The registry's own words, secrets cut out.
    message: String,
    /// The whole sentence shown to the user.
    text: String,
}

impl RegistryError {
    /// An error of `kind` that says `text`.
    pub(crate) fn new(kind: ErrorKind, text: impl Into<String>) -> RegistryError {
        RegistryError { kind, status: None, codes: Vec::new(), retry_after: None, message: String::new(), text: text.into() }
    }

    /// An answer with an unexpected status while `doing` something: the registry's error
    /// codes and (redacted) message from its body.
    pub(crate) fn status(
        doing: &str,
        status: StatusCode,
        codes: Vec<ErrorCode>,
        message: String,
        retry_after: Option<Duration>,
    ) -> RegistryError {
        let detail = if message.is_empty() { String::new() } else { format!(" ({message})") };
        RegistryError {
            kind: if status == StatusCode::UNAUTHORIZED { ErrorKind::Auth } else { ErrorKind::Status },
            text: format!("{doing}: {status}{detail}"),
            status: Some(status),
            codes,
            retry_after,
            message,
        }
    }

    /// The same error, for an answer with this status.
    pub(crate) fn at_status(mut self, status: StatusCode) -> RegistryError {
        self.status = Some(status);
        self
    }

    /// How long the registry asked to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// How to treat this failure.
    pub fn class(&self) -> Class {
        match (self.kind, self.status) {
            _ if self.rate_limited() => Class::RateLimited,
            (ErrorKind::Connection, _) => Class::Temporary,
            (_, Some(status)) => classify(status, &self.codes),
            _ => Class::Permanent,
        }
    }

    /// Whether the registry asks us to slow down: 429 or `TOOMANYREQUESTS`, or GHCR's
    /// 403 "You have exceeded a secondary rate limit". GHCR gives that 403 no code of its
    /// own (it says `DENIED`), so its message is the only sign: this is the one place a
    /// registry's words decide anything.
    pub fn rate_limited(&self) -> bool {
        match self.status {
            Some(StatusCode::TOO_MANY_REQUESTS) => true,
            _ if self.codes.contains(&ErrorCode::TooManyRequests) => true,
            Some(StatusCode::FORBIDDEN) => self.message.to_ascii_lowercase().contains("rate limit"),
            _ => false,
        }
    }

    /// Whether a manifest was refused for a blob the registry should have: see
    /// [`Class::BlobRace`].
    pub fn blob_race(&self) -> bool {
        self.class() == Class::BlobRace
    }

    /// Whether an upload session was lost (the registry forgot it, or took its last
    /// request without our seeing the answer): a new session may succeed.
    pub fn upload_lost(&self) -> bool {
        self.status == Some(StatusCode::NOT_FOUND)
            || self.codes.iter().any(|c| matches!(c, ErrorCode::BlobUploadUnknown | ErrorCode::BlobUploadInvalid))
    }

    /// The same answer, said as the failure of `doing` (`doing: status (words)`).
    pub(crate) fn restated(mut self, doing: &str) -> RegistryError {
        if let Some(status) = self.status {
            let detail = if self.message.is_empty() { String::new() } else { format!(" ({})", self.message) };
            self.text = format!("{doing}: {status}{detail}");
        }
        self
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for RegistryError {}

/// The typed registry error in an `anyhow` chain, if any.
pub fn registry_error(e: &anyhow::Error) -> Option<&RegistryError> {
    e.chain().find_map(|c| c.downcast_ref::<RegistryError>())
}

/// The registry's words in an error body: its `errors` list as codes and `CODE message; ...`,
/// else no codes and the first 200 characters.
pub(crate) fn parse_error_body(body: &str) -> (Vec<ErrorCode>, String) {
    let listed = serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| {
        let errors = v.get("errors")?.as_array()?;
        let pairs: Vec<(String, String)> =
            errors.iter().filter_map(|e| Some((e.get("code")?.as_str()?.to_owned(), e.get("message")?.as_str()?.to_owned()))).collect();
        Some(pairs)
    });
    match listed {
        Some(pairs) => {
            let codes = pairs.iter().map(|(c, _)| ErrorCode::parse(c)).collect();
            let text = pairs.iter().map(|(c, m)| format!("{c} {m}")).collect::<Vec<_>>().join("; ");
            (codes, text)
        }
        None => (Vec::new(), body.chars().take(200).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_classifies() {
        let rows: Vec<String> =
            (100u16..600).filter_map(|s| StatusCode::from_u16(s).ok()).map(|s| format!("{} {:?}", s.as_u16(), classify(s, &[]))).collect();
        // Runs of one class, to keep the snapshot readable.
        let mut runs: Vec<String> = Vec::new();
        let mut start = 0usize;
        for i in 1..=rows.len() {
            let class = |r: &String| r.split_once(' ').map(|(_, c)| c.to_owned());
            if i == rows.len() || class(&rows[i]) != class(&rows[start]) {
                let first = rows[start].split(' ').next().unwrap_or_default();
                let last = rows[i - 1].split(' ').next().unwrap_or_default();
                runs.push(format!("{first}..={last} {}", class(&rows[start]).unwrap_or_default()));
                start = i;
            }
        }
        insta::assert_snapshot!(runs.join("\n"));
    }

    #[test]
    fn codes_decide_races_and_rate_limits() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(classify(bad, &[ErrorCode::ManifestBlobUnknown]), Class::BlobRace);
        assert_eq!(classify(bad, &[ErrorCode::DigestInvalid]), Class::BlobRace);
        assert_eq!(classify(StatusCode::NOT_FOUND, &[ErrorCode::BlobUnknown]), Class::BlobRace);
        assert_eq!(classify(StatusCode::NOT_FOUND, &[ErrorCode::ManifestUnknown]), Class::Permanent);
        assert_eq!(classify(StatusCode::FORBIDDEN, &[ErrorCode::TooManyRequests]), Class::RateLimited);
        let ghcr = RegistryError::status(
            "pushing",
            StatusCode::FORBIDDEN,
            vec![ErrorCode::Denied],
            "DENIED You have exceeded a secondary rate limit".into(),
            None,
        );
        assert!(ghcr.rate_limited());
        assert_eq!(ghcr.class(), Class::RateLimited);
        let denied = RegistryError::status("pushing", StatusCode::FORBIDDEN, vec![ErrorCode::Denied], "DENIED no".into(), None);
        assert_eq!(denied.class(), Class::Permanent);
        assert_eq!(RegistryError::new(ErrorKind::Connection, "reset").class(), Class::Temporary);
        assert_eq!(RegistryError::new(ErrorKind::Timeout, "late").class(), Class::Permanent);
    }

    #[test]
    fn bodies_parse_into_codes_and_words() {
        let (codes, text) =
            parse_error_body(r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown"},{"code":"X_NEW","message":"m"}]}"#);
        assert_eq!(codes, vec![ErrorCode::ManifestBlobUnknown, ErrorCode::Other("X_NEW".into())]);
        assert_eq!(text, "MANIFEST_BLOB_UNKNOWN blob unknown; X_NEW m");
        let (codes, text) = parse_error_body("<html>bad gateway</html>");
        assert!(codes.is_empty());
        assert_eq!(text, "<html>bad gateway</html>");
        for c in ["BLOB_UNKNOWN", "DENIED", "TOOMANYREQUESTS", "UNSUPPORTED", "WHATEVER"] {
            assert_eq!(ErrorCode::parse(c).as_str(), c, "round trip");
        }
    }

    #[test]
    fn the_text_is_the_sentence_a_user_reads() {
        let e = RegistryError::status("writing the manifest of `a`", StatusCode::BAD_REQUEST, vec![], String::new(), None);
        assert_eq!(e.to_string(), "writing the manifest of `a`: 400 Bad Request");
        let e = RegistryError::status("x", StatusCode::NOT_FOUND, vec![ErrorCode::NameUnknown], "NAME_UNKNOWN no".into(), None);
        assert_eq!(e.to_string(), "x: 404 Not Found (NAME_UNKNOWN no)");
        assert_eq!(e.restated("pushing").to_string(), "pushing: 404 Not Found (NAME_UNKNOWN no)");
    }
}
