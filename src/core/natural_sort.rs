//! Natural order of names: runs of digits compare as numbers, so `django-9` comes before
//! `django-10` and `sympy__sympy-1234` before `sympy__sympy-12345`, as a reader expects.

use std::cmp::Ordering;

/// Compares `a` and `b` chunk by chunk: digit runs by value (then by length, so `07` and `7`
/// still differ), everything else byte by byte.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (da, ra) = split_digits(a);
                let (db, rb) = split_digits(b);
                let (ta, tb) = (trim_zeros(da), trim_zeros(db));
                let by_value = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb)).then_with(|| da.len().cmp(&db.len()));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|c| **c == b'0').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_compare_as_numbers() {
        let mut ids = vec!["django-10", "django-9", "astropy-12907", "astropy-7166", "django-010", "a", "", "django-"];
        ids.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(ids, ["", "a", "astropy-7166", "astropy-12907", "django-", "django-9", "django-10", "django-010"]);
        assert_eq!(natural_cmp("x1y2", "x1y2"), Ordering::Equal);
        assert_eq!(natural_cmp("sympy__sympy-1234", "sympy__sympy-12345"), Ordering::Less);
        assert_eq!(natural_cmp("v99999999999999999999999", "v100000000000000000000000"), Ordering::Less);
    }
}
