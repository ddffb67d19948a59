//! The cause behind a failure reason or a plan note: the text with whatever names one image
//! taken out, so that a thousand failures (or notes) of one kind read as one.

/// What replaces a name in a cause.
pub(crate) const ELIDED: &str = "…";

/// The normalised cause of `text`: each of `names` (longest first), every backtick-quoted
/// span, each URL's path and query, each digest's hex and each long hex id become `…`.
pub(crate) fn cause_of(text: &str, names: &[&str]) -> String {
    let mut names: Vec<&str> = names.iter().copied().filter(|n| !n.is_empty()).collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut s = text.to_owned();
    for n in names {
        if s.contains(n) {
            s = s.replace(n, ELIDED);
        }
    }
    hex_ids(&urls(&quoted(&s)))
}

/// The backtick-quoted spans of `text`, in order.
pub(crate) fn quoted_spans(text: &str) -> Vec<&str> {
    let pairs = text.matches('`').count() / 2;
    text.split('`').skip(1).step_by(2).take(pairs).collect()
}

fn quoted(text: &str) -> String {
    let quotes = text.matches('`').count();
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        // Odd parts are inside a pair of backticks (an unpaired last one stays as it is).
        let inside = i % 2 == 1 && i < quotes;
        out.push_str(if inside { ELIDED } else { part });
    }
    out
}

fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let after = &rest[at + 3..];
        let end = after.find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '`' | ',' | '>')).unwrap_or(after.len());
        let url = &after[..end];
        let host_end = url.find(['/', '?']).unwrap_or(url.len());
        out.push_str(&rest[..at + 3]);
        out.push_str(&url[..host_end]);
        if host_end < url.len() {
            out.push('/');
            out.push_str(ELIDED);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn hex_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let hexy = word.len() >= 12 && word.chars().all(|c| c.is_ascii_hexdigit()) && word.chars().any(|c| c.is_ascii_digit());
        out.push_str(if hexy { ELIDED } else { word });
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_quotes_urls_and_digests_are_elided() {
        let a = "pushing `reg/x:4`: 500 from https://reg.io/v2/x/blobs/uploads/?digest=sha256:0123456789abcdef0123 (sha256:0123456789abcdef0123456789abcdef)";
        let b = "pushing `reg/x:5`: 500 from https://reg.io/v2/x/blobs/uploads/?digest=sha256:fedcba9876543210fedc (sha256:fedcba9876543210fedcba9876543210)";
        assert_eq!(cause_of(a, &[]), cause_of(b, &[]));
        assert_eq!(cause_of(a, &[]), "pushing `…`: 500 from https://reg.io/… (sha256:…)");
        let log = "building django__django-11099: step 3 failed in 3f2a1b4c5d6e7f80 (exit 1)";
        assert_eq!(cause_of(log, &["django__django-11099"]), "building …: step 3 failed in … (exit 1)");
        assert_eq!(cause_of("odd ` quote", &[]), "odd ` quote");
        assert_eq!(cause_of("status 404 at http://h:5000", &[]), "status 404 at http://h:5000");
    }

    #[test]
    fn quoted_spans_in_order() {
        assert_eq!(quoted_spans("upstream `a/b:1`: x `c` and ` d"), ["a/b:1", "c"]);
        assert!(quoted_spans("none").is_empty());
    }
}
