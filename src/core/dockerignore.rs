//! `.dockerignore` matching as Docker does it, so that split-build's build context (what is
//! built) and the base hash's input files (what decides a rebuild) leave out exactly the
//! files `docker build` leaves out.
//!
//! The rules are Docker's (`moby/patternmatcher` and its `ignorefile` reader): a line
//! starting with `#` is a comment; each pattern is trimmed and cleaned like Go's
//! `filepath.Clean`, a leading `/` is dropped; `*` and `?` stay within one path segment,
//! `**` spans any number of segments; `!` makes an exception; a pattern that matches a
//! directory matches everything below it; the last pattern that matches decides.

use std::fmt;

/// The parsed patterns of one `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// A `.dockerignore` line that Docker would refuse too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DockerIgnoreError {
    /// 1-based line in the `.dockerignore`.
    pub line: usize,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for DockerIgnoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ".dockerignore:{}: {}", self.line, self.message)
    }
}

impl std::error::Error for DockerIgnoreError {}

/// How a pattern is matched. Docker picks a string comparison for patterns without
/// wildcards (or with `**` only at one end) and a regular expression otherwise; the two
/// differ at the edges (`**foo` matches `xfoo` as a suffix), so the same choice is made here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Tokens,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    One,
    /// `**` (and `**/`) inside a pattern: any run of whole segments, `(.*/)?`.
    Segments,
    /// `**` at the end: anything, `.*`.
    Rest,
    /// `[...]`: one character in (or, with `^`, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    exception: bool,
    cleaned: String,
    kind: Kind,
    tokens: Vec<Token>,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore`.
    pub(crate) fn parse(text: &str) -> Result<DockerIgnore, DockerIgnoreError> {
        let mut patterns = Vec::new();
        // Docker drops a UTF-8 byte order mark on the first line.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (n, raw) in text.lines().enumerate() {
            // A comment is a line whose very first character is `#`, before trimming.
            if raw.starts_with('#') {
                continue;
            }
            let mut line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let exception = line.starts_with('!');
            if exception {
                line = line[1..].trim();
            }
            if line.is_empty() {
                return Err(DockerIgnoreError {
                    line: n + 1,
                    message: "`!` alone is not a pattern: write `!path` to keep a path an earlier pattern left out".into(),
                });
            }
            let mut cleaned = clean(line);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let (kind, tokens) = compile(&cleaned).map_err(|message| DockerIgnoreError { line: n + 1, message })?;
            patterns.push(Pattern { exception, cleaned, kind, tokens });
        }
        Ok(DockerIgnore { patterns })
    }

    /// Whether any pattern is an exception (`!`): then a left-out directory may still hold
    /// files that are kept, so a walker must look inside it.
    pub(crate) fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `path` (relative to the context, `/`-separated, no leading `./`) is left out:
    /// the last pattern matching it or one of its parent directories decides.
    pub(crate) fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for p in &self.patterns {
            // Only a pattern that could flip the answer needs to be tried.
            if p.exception != excluded {
                continue;
            }
            if p.matches_or_parent(path) {
                excluded = !p.exception;
            }
        }
        excluded
    }
}

impl Pattern {
    fn matches_or_parent(&self, path: &str) -> bool {
        if self.matches(path) {
            return true;
        }
        path.match_indices('/').any(|(i, _)| self.matches(&path[..i]))
    }

    fn matches(&self, path: &str) -> bool {
        match self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Tokens => {
                let chars: Vec<char> = path.chars().collect();
                match_tokens(&self.tokens, &chars)
            }
        }
    }
}

/// Backtracking match of a token list against the whole of `s` (patterns are short).
fn match_tokens(tokens: &[Token], s: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else { return s.is_empty() };
    match first {
        Token::Char(c) => s.first() == Some(c) && match_tokens(rest, &s[1..]),
        Token::One => s.first().is_some_and(|&c| c != '/') && match_tokens(rest, &s[1..]),
        Token::Class { negated, ranges } => {
            s.first().is_some_and(|&c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated) && match_tokens(rest, &s[1..])
        }
        Token::Star => {
            let run = s.iter().take_while(|&&c| c != '/').count();
            (0..=run).any(|n| match_tokens(rest, &s[n..]))
        }
        Token::Rest => true,
        Token::Segments => {
            // Zero segments, or any prefix that ends in `/`.
            match_tokens(rest, s) || s.iter().enumerate().any(|(i, &c)| c == '/' && match_tokens(rest, &s[i + 1..]))
        }
    }
}

/// Docker's translation of a cleaned pattern, kept step for step (`patternmatcher`'s
/// `compile`): the kind it picks and the tokens of its regular expression.
fn compile(pattern: &str) -> Result<(Kind, Vec<Token>), String> {
    let mut kind = Kind::Exact;
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        tokens.push(Token::Rest);
                        kind = Kind::Tokens;
                    }
                } else {
                    tokens.push(Token::Segments);
                    kind = Kind::Tokens;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                kind = Kind::Tokens;
            }
            '?' => {
                tokens.push(Token::One);
                kind = Kind::Tokens;
            }
            '\\' => {
                // A trailing `\` stands for itself.
                tokens.push(Token::Char(chars.next().unwrap_or('\\')));
                kind = Kind::Tokens;
            }
            '[' => {
                tokens.push(class(&mut chars, pattern)?);
                kind = Kind::Tokens;
            }
            c => tokens.push(Token::Char(c)),
        }
        first = false;
    }
    Ok((kind, tokens))
}

/// A `[...]` class after its `[`, as Go's `filepath.Match` reads it (`^` negates).
fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, pattern: &str) -> Result<Token, String> {
    let bad = || format!("`{pattern}` has an unclosed or empty `[...]`: write `[abc]` or `[a-z]`, or `\\[` for a literal bracket");
    let negated = chars.peek() == Some(&'^');
    if negated {
        chars.next();
    }
    let mut ranges = Vec::new();
    loop {
        let lo = match chars.next() {
            None => return Err(bad()),
            Some(']') if !ranges.is_empty() => break,
            Some(']') => return Err(bad()),
            Some('\\') => chars.next().ok_or_else(bad)?,
            Some(c) => c,
        };
        let hi = if chars.peek() == Some(&'-') {
            chars.next();
            match chars.next() {
                None | Some(']') => return Err(bad()),
                Some('\\') => chars.next().ok_or_else(bad)?,
                Some(c) => c,
            }
        } else {
            lo
        };
        ranges.push((lo, hi));
    }
    Ok(Token::Class { negated, ranges })
}

/// Go's `filepath.Clean` on a `/`-separated path: one `/` between segments, no `.`
/// segments, `..` folded into its parent where there is one, no trailing `/`.
pub(crate) fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                // `/..` is `/`; a relative path keeps its leading `..`.
                _ if rooted => {}
                _ => out.push(".."),
            },
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Which entries of a context walk are sent, given each entry's path (in walk order, a
/// directory before what it holds) and whether it is a directory: one answer per entry. A
/// left-out directory is still sent when it holds a kept entry (Docker creates the parents
/// of what it sends).
pub(crate) fn kept<'a>(ignore: &DockerIgnore, entries: impl IntoIterator<Item = (&'a str, bool)>) -> Vec<bool> {
    let mut out = Vec::new();
    // Left-out directories above the current entry (index, path), waiting for a kept descendant.
    let mut pending: Vec<(usize, &str)> = Vec::new();
    for (i, (path, is_dir)) in entries.into_iter().enumerate() {
        pending.retain(|(_, d)| path.strip_prefix(d).is_some_and(|rest| rest.starts_with('/')));
        let keep = !ignore.excludes(path);
        if keep {
            for (j, _) in pending.drain(..) {
                out[j] = true;
            }
        } else if is_dir {
            pending.push((i, path));
        }
        out.push(keep);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_go_filepath_clean() {
        for (input, want) in [
            ("a//b/", "a/b"),
            ("./a", "a"),
            ("a/./b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/../..", ".."),
            (".", "."),
            ("/", "/"),
            ("//x//", "/x"),
        ] {
            assert_eq!(clean(input), want, "{input}");
        }
    }

    /// (`.dockerignore` text, path, left out?) as Docker decides them.
    #[test]
    fn patterns_match_as_docker_does() {
        let cases: &[(&str, &str, bool)] = &[
            // `*` stays in one segment: `*.md` is a top-level pattern.
            ("*.md", "README.md", true),
            ("*.md", "docs/x.md", false),
            ("*/*.md", "docs/x.md", true),
            ("*/*.md", "docs/a/x.md", false),
            // `**` crosses segments, including none.
            ("**/*.md", "docs/a/x.md", true),
            ("**/*.md", "x.md", true),
            ("docs/**", "docs/a/b", true),
            ("docs/**", "docsx", false),
            ("**/node_modules", "a/b/node_modules/x/y.js", true),
            ("a/**/z", "a/z", true),
            ("a/**/z", "a/b/c/z", true),
            ("a/**/z", "ab/z", false),
            // Docker's suffix shortcut: `**foo` is "ends with foo".
            ("**foo", "xfoo", true),
            // `?` is one character but `/`.
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("a?c", "abbc", false),
            // Classes.
            ("[ab].txt", "a.txt", true),
            ("[ab].txt", "c.txt", false),
            ("[^ab].txt", "c.txt", true),
            ("[a-c]x", "bx", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            // A directory pattern covers what is below it.
            ("target", "target/debug/x", true),
            ("target/", "target/debug/x", true),
            ("target", "src/target", false),
            // Leading `/` and `./` are dropped, patterns are cleaned.
            ("/docs", "docs/a", true),
            ("./docs", "docs/a", true),
            ("docs//a/../b", "docs/b", true),
            ("  spaced  ", "spaced", true),
            // Exceptions: the last match wins.
            ("*.log\n!keep.log", "keep.log", false),
            ("*.log\n!keep.log", "other.log", true),
            ("!keep.log\n*.log", "keep.log", true),
            ("docs\n!docs/keep.md", "docs/keep.md", false),
            ("docs\n!docs/keep.md", "docs/other.md", true),
            ("docs\n!docs/keep.md\ndocs/keep.md", "docs/keep.md", true),
            // An exception for a file below a left-out directory.
            ("a\n!a/b\na/b/c", "a/b/d", false),
            ("a\n!a/b\na/b/c", "a/b/c", true),
            // Comments only at the very start of a line; `.` is literal.
            ("# x.md\n", "x.md", false),
            (" # x.md\n", "# x.md", true),
            ("a.b", "axb", false),
            ("a+b(1)", "a+b(1)", true),
        ];
        for (text, path, want) in cases {
            let ig = DockerIgnore::parse(text).unwrap();
            assert_eq!(ig.excludes(path), *want, "patterns {text:?} on {path:?}");
        }
    }

    #[test]
    fn bad_patterns_name_their_line() {
        for (text, line) in [("a\n!\n", 2), ("x\ny\n[ab", 3), ("[]", 1)] {
            let e = DockerIgnore::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
        assert!(!DockerIgnore::parse("a").unwrap().has_exceptions());
        assert!(DockerIgnore::parse("a\n!a/b").unwrap().has_exceptions());
    }

    #[test]
    fn kept_entries_bring_their_left_out_parents() {
        let ig = DockerIgnore::parse("docs\n!docs/keep.md\n*.log\n").unwrap();
        let walk = [
            ("a.log", false),
            ("docs", true),
            ("docs/keep.md", false),
            ("docs/x.md", false),
            ("docsy", true),
            ("docsy/y", false),
            ("src", true),
            ("src/a.log", false),
        ];
        let sent: Vec<&str> = walk.iter().zip(kept(&ig, walk)).filter(|(_, k)| *k).map(|((p, _), _)| *p).collect();
        assert_eq!(sent, ["docs", "docs/keep.md", "docsy", "docsy/y", "src", "src/a.log"]);
        let ig = DockerIgnore::parse("docs\n").unwrap();
        assert_eq!(kept(&ig, [("docs", true), ("docs/x", false), ("e", false)]), [false, false, true]);
    }
}
