//! Numbers as a reader of a summary wants them: counts with thousands separators, seconds as
//! humantime, bytes in decimal units.

/// A count with thousands separators: `1,501`.
pub(crate) fn thousands(n: impl Into<u64>) -> String {
    let digits = n.into().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// [`thousands`] of a `usize`.
pub(crate) fn count(n: usize) -> String {
    thousands(n as u64)
}

/// Seconds as humantime (`1m 3s`, `250ms`).
pub fn human_secs(secs: f64) -> String {
    let d = std::time::Duration::from_millis((secs.max(0.0) * 1000.0).round() as u64);
    let d = if d.as_secs() >= 1 { std::time::Duration::from_secs(d.as_secs()) } else { d };
    humantime::format_duration(d).to_string()
}

/// Bytes in decimal units (`12.0 KB`).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_times_and_bytes() {
        let cases = [(0u64, "0"), (999, "999"), (1000, "1,000"), (1501, "1,501"), (2_464_635, "2,464,635"), (100_000, "100,000")];
        for (n, want) in cases {
            assert_eq!(thousands(n), want);
        }
        assert_eq!(human_secs(73.4), "1m 13s");
        assert_eq!(human_secs(0.25), "250ms");
        assert_eq!(human_bytes(12_000), "12.0 KB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
