//! Templates for names the spec spells: `{instance}`, `{variant}`, `{builder}`, with
//! filters (`{instance|replace("__","_1776_")|lower}`), and `${VAR}` from the environment.
//!
//! `{{` and `}}` write literal braces. Filters are applied left to right.

use std::fmt;

/// A field a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The instance id.
    Instance,
    /// The variant name.
    Variant,
    /// The builder version.
    Builder,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Instance => "instance",
            Field::Variant => "variant",
            Field::Builder => "builder",
        }
    }
}

/// A filter applied to a field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Lower-cases ASCII letters.
    Lower,
    /// Upper-cases ASCII letters.
    Upper,
    /// Replaces every occurrence of the first string by the second.
    Replace(String, String),
}

impl Filter {
    fn apply(&self, s: String) -> String {
        match self {
            Filter::Lower => s.to_ascii_lowercase(),
            Filter::Upper => s.to_ascii_uppercase(),
            Filter::Replace(from, to) if !from.is_empty() => s.replace(from.as_str(), to),
            Filter::Replace(..) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field, Vec<Filter>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template does not parse; `offset` is the byte offset in the template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Byte offset in the template where the problem starts.
    pub offset: usize,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// The values a template is rendered with; a field the template may not name is `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    /// The instance id.
    pub instance: Option<&'a str>,
    /// The variant name.
    pub variant: Option<&'a str>,
    /// The builder version.
    pub builder: Option<&'a str>,
}

impl Template {
    /// Parses `source`, accepting only the fields in `allowed`.
    pub fn parse(source: &str, allowed: &[Field]) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let bytes = source.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    lit.push('{');
                    i += 2;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    lit.push('}');
                    i += 2;
                }
                b'}' => {
                    return Err(TemplateError { offset: i, message: "unmatched `}` (write `}}` for a literal brace)".into() });
                }
                b'{' => {
                    let end = find_close(source, i + 1)
                        .ok_or_else(|| TemplateError { offset: i, message: "unclosed `{` (write `{{` for a literal brace)".into() })?;
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    let (field, filters) =
                        parse_placeholder(&source[i + 1..end], allowed).map_err(|message| TemplateError { offset: i, message })?;
                    parts.push(Part::Field(field, filters));
                    i = end + 1;
                }
                _ => {
                    // Copy one UTF-8 character.
                    let ch_len = source[i..].chars().next().map_or(1, char::len_utf8);
                    lit.push_str(&source[i..i + ch_len]);
                    i += ch_len;
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Template { source: source.to_owned(), parts })
    }

    /// Renders the template. A field missing from `vars` renders as empty; `parse` with
    /// the right `allowed` list rules that out.
    pub fn render(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Field(field, filters) => {
                    let value = match field {
                        Field::Instance => vars.instance,
                        Field::Variant => vars.variant,
                        Field::Builder => vars.builder,
                    };
                    let value = filters.iter().fold(value.unwrap_or_default().to_owned(), |v, f| f.apply(v));
                    out.push_str(&value);
                }
            }
        }
        out
    }

    /// Whether a `replace` filter applies to `field`: only then can two values that are
    /// both tags render to a tag and to something that is not (`lower`/`upper` keep the
    /// tag grammar's characters and a tag's first character valid).
    pub fn rewrites(&self, field: Field) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Field(f, filters) if *f == field && filters.iter().any(|x| matches!(x, Filter::Replace(..)))))
    }

    /// Whether the template names `field`.
    pub fn uses(&self, field: Field) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(f, _) if *f == field))
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Finds the `}` closing a placeholder that starts at `from`, skipping quoted strings.
fn find_close(s: &str, from: usize) -> Option<usize> {
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in s[from..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '}' if !in_quote => return Some(from + i),
            _ => {}
        }
    }
    None
}

fn parse_placeholder(inner: &str, allowed: &[Field]) -> Result<(Field, Vec<Filter>), String> {
    let mut segments = split_top_level(inner, '|').into_iter();
    let name = segments.next().unwrap_or_default().trim();
    let allowed_names = || allowed.iter().map(|f| format!("{{{}}}", f.name())).collect::<Vec<_>>().join(", ");
    let field = allowed.iter().copied().find(|f| f.name() == name).ok_or_else(|| {
        if allowed.is_empty() {
            format!("`{{{name}}}` is not allowed here: this value takes no template fields (write `{{{{` for a literal brace)")
        } else {
            format!("unknown template field `{{{name}}}`: valid here are {}", allowed_names())
        }
    })?;
    let filters = segments.map(|s| parse_filter(s.trim())).collect::<Result<Vec<_>, _>>()?;
    Ok((field, filters))
}

fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut in_quote, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            c if c == sep && !in_quote => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

const FILTERS_HELP: &str = "valid filters are `lower`, `upper` and `replace(\"from\", \"to\")`";

fn parse_filter(s: &str) -> Result<Filter, String> {
    match s {
        "lower" => return Ok(Filter::Lower),
        "upper" => return Ok(Filter::Upper),
        _ => {}
    }
    let args = s
        .strip_prefix("replace")
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unknown filter `{s}`: {FILTERS_HELP}"))?;
    let args: Vec<&str> = split_top_level(args, ',');
    match args.as_slice() {
        [a, b] => Ok(Filter::Replace(unquote(a.trim())?, unquote(b.trim())?)),
        _ => Err(format!("`{s}`: replace takes two quoted strings, as in replace(\"__\", \"_1776_\")")),
    }
}

fn unquote(s: &str) -> Result<String, String> {
    let inner =
        s.strip_prefix('"').and_then(|r| r.strip_suffix('"')).ok_or_else(|| format!("`{s}` must be a quoted string, as in \"__\""))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Expands `${NAME}` and `${NAME:-default}` with `lookup`. An unset variable without a
/// default expands to nothing; `$$` writes a literal `$`.
pub(crate) fn expand_env(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, TemplateError> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::new();
    let mut rest = s;
    let mut offset = 0;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            offset += pos + 2;
            rest = tail;
            continue;
        }
        let Some(body_and_tail) = after.strip_prefix('{') else {
            out.push('$');
            offset += pos + 1;
            rest = after;
            continue;
        };
        let close = body_and_tail.find('}').ok_or_else(|| TemplateError {
            offset: offset + pos,
            message: "unclosed `${` (write `${NAME}`, or `$$` for a literal `$`)".into(),
        })?;
        let body = &body_and_tail[..close];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        let name_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(TemplateError {
                offset: offset + pos,
                message: format!(
                    "`${{{body}}}` is not a valid variable: names are letters, digits and `_`, as in ${{BUILDER_VERSION}} or ${{TAG:-latest}}"
                ),
            });
        }
        match lookup(name) {
            Some(v) if !(v.is_empty() && default.is_some()) => out.push_str(&v),
            _ => out.push_str(default.unwrap_or_default()),
        }
        let consumed = pos + 2 + close + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Field] = &[Field::Instance, Field::Variant, Field::Builder];

    fn render(t: &str, instance: &str) -> String {
        let vars = Vars { instance: Some(instance), variant: Some("min"), builder: Some("b1") };
        Template::parse(t, ALL).unwrap().render(&vars)
    }

    #[test]
    fn renders_fields_and_filters() {
        let cases = [
            ("{builder}-{instance}-{variant}", "django__django-11099", "b1-django__django-11099-min"),
            (
                "docker.io/swebench/sweb.eval.x86_64.{instance|replace(\"__\", \"_1776_\")|lower}:latest",
                "Django__Django-11099",
                "docker.io/swebench/sweb.eval.x86_64.django_1776_django-11099:latest",
            ),
            ("{ instance | upper }", "ab", "AB"),
            ("{{literal}}-{instance}", "x", "{literal}-x"),
            ("{instance|replace(\"|\", \"}\")}", "a|b", "a}b"),
            ("plain", "x", "plain"),
        ];
        for (t, i, want) in cases {
            assert_eq!(render(t, i), want, "{t}");
        }
    }

    #[test]
    fn bad_templates_say_what_is_valid() {
        let cases = [
            ("{instanse}", &[Field::Instance][..], "valid here are {instance}"),
            ("{variant}", &[Field::Instance][..], "unknown template field `{variant}`"),
            ("{instance", ALL, "unclosed"),
            ("a}b", ALL, "unmatched"),
            ("{instance|title}", ALL, "valid filters are"),
            ("{instance|replace(__, x)}", ALL, "quoted string"),
            ("{instance|replace(\"a\")}", ALL, "two quoted strings"),
            ("{instance}", &[][..], "takes no template fields"),
        ];
        for (t, allowed, want) in cases {
            let e = Template::parse(t, allowed).unwrap_err();
            assert!(e.message.contains(want), "{t}: {}", e.message);
        }
    }

    #[test]
    fn env_expansion() {
        let lookup = |n: &str| match n {
            "SET" => Some("v".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cases = [
            ("${SET}", "v"),
            ("a-${SET}-b", "a-v-b"),
            ("${UNSET}", ""),
            ("${UNSET:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("$$x", "$x"),
            ("cost $5", "cost $5"),
            ("{instance}", "{instance}"),
        ];
        for (s, want) in cases {
            assert_eq!(expand_env(s, &lookup).unwrap(), want, "{s}");
        }
        assert!(expand_env("${A", &lookup).unwrap_err().message.contains("unclosed"));
        assert!(expand_env("${A-B}", &lookup).unwrap_err().message.contains("not a valid variable"));
    }

    #[test]
    fn uses_reports_fields() {
        let t = Template::parse("{builder}-{instance}", ALL).unwrap();
        assert!(t.uses(Field::Builder) && t.uses(Field::Instance) && !t.uses(Field::Variant));
    }

    #[test]
    fn rewrites_tells_replace_from_case_filters() {
        let all = [Field::Instance, Field::Variant, Field::Builder];
        let t = Template::parse("{instance|lower}-{variant|replace(\"a\",\"b\")}", &all).unwrap();
        assert!(!t.rewrites(Field::Instance));
        assert!(t.rewrites(Field::Variant));
        assert!(!t.rewrites(Field::Builder));
    }
}
