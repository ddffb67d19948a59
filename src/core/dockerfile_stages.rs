//! The stages of a Dockerfile and which of them a target needs: enough of the syntax to
//! follow `FROM ... AS name`, `FROM <stage>`, `COPY --from=<stage>` and
//! `RUN --mount=...,from=<stage>` (line continuations, comments and the `escape` parser
//! directive included). Each stage the target needs is built on its own and pushed as a
//! cache image, so a later build can reuse every step, not only the final stage's.

use std::collections::BTreeSet;

/// One `FROM` and the instructions under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stage {
    /// Its position among the stages (0-based), as `COPY --from=0` names it.
    pub index: usize,
    /// Its `AS` name, lower-cased as BuildKit reads it.
    pub name: Option<String>,
    /// The image or stage it starts from, as written.
    pub from: String,
    /// What its `COPY --from=` and `RUN --mount=from=` read, as written (lower-cased).
    pub copies_from: Vec<String>,
}

impl Stage {
    /// How a cache tag names this stage: its name, or its index when it has none.
    pub(crate) fn key(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// The stages of `dockerfile`, in order. Text the parser does not know (heredocs, unknown
/// instructions) is passed over: it never names a stage.
pub(crate) fn parse_stages(dockerfile: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for line in instructions(dockerfile) {
        let mut words = line.split_whitespace();
        let Some(keyword) = words.next() else { continue };
        let args: Vec<&str> = words.collect();
        match keyword.to_ascii_uppercase().as_str() {
            "FROM" => {
                let plain: Vec<&str> = args.iter().copied().filter(|a| !a.starts_with("--")).collect();
                let name = match plain.as_slice() {
                    [_, as_, name, ..] if as_.eq_ignore_ascii_case("as") => Some(name.to_ascii_lowercase()),
                    _ => None,
                };
                let from = plain.first().map(|f| (*f).to_owned()).unwrap_or_default();
                stages.push(Stage { index: stages.len(), name, from, copies_from: Vec::new() });
            }
            "COPY" | "ADD" | "RUN" => {
                let Some(stage) = stages.last_mut() else { continue };
                for flag in args.iter().take_while(|a| a.starts_with("--")) {
                    if let Some(from) = flag.strip_prefix("--from=") {
                        stage.copies_from.push(from.to_ascii_lowercase());
                    } else if let Some(mount) = flag.strip_prefix("--mount=") {
                        let from = mount.split(',').find_map(|kv| kv.strip_prefix("from="));
                        stage.copies_from.extend(from.map(str::to_ascii_lowercase));
                    }
                }
            }
            _ => {}
        }
    }
    stages
}

/// The logical instructions: continuation lines joined, comments and blank lines dropped,
/// the escape character taken from a leading `# escape=` directive.
fn instructions(dockerfile: &str) -> Vec<String> {
    let escape = directive_escape(dockerfile);
    let mut out = Vec::new();
    let mut current = String::new();
    for raw in dockerfile.lines() {
        let line = raw.trim();
        // A comment line inside a continued instruction is dropped, as the daemon does.
        if line.starts_with('#') {
            continue;
        }
        match line.strip_suffix(escape) {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// The escape character: `\`, or what a `# escape=` parser directive at the top says.
fn directive_escape(dockerfile: &str) -> char {
    for line in dockerfile.lines() {
        let Some(directive) = line.trim().strip_prefix('#') else { break };
        let Some((key, value)) = directive.split_once('=') else { break };
        if key.trim().eq_ignore_ascii_case("escape") {
            return value.trim().chars().next().unwrap_or('\\');
        }
    }
    '\\'
}

/// Why the stages a target needs cannot be known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StageError {
    /// No stage has the target's name.
    #[error("the Dockerfile has no stage `{0}` (its stages: {1})")]
    NoTarget(String, String),
}

/// The stages `target` needs (directly or through others), in Dockerfile order, the
/// target itself not included. With no target the last stage is the target.
pub(crate) fn stages_needed<'a>(stages: &'a [Stage], target: Option<&str>) -> Result<Vec<&'a Stage>, StageError> {
    let wanted = match target {
        Some(t) => {
            let t = t.to_ascii_lowercase();
            stages
                .iter()
                .find(|s| s.name.as_deref() == Some(t.as_str()))
                .ok_or_else(|| StageError::NoTarget(t.clone(), stages.iter().map(Stage::key).collect::<Vec<_>>().join(", ")))?
        }
        None => match stages.last() {
            Some(s) => s,
            None => return Ok(Vec::new()),
        },
    };
    let mut needed: BTreeSet<usize> = BTreeSet::new();
    let mut todo = vec![wanted.index];
    while let Some(i) = todo.pop() {
        let stage = &stages[i];
        for reference in std::iter::once(&stage.from).chain(&stage.copies_from) {
            // A name or an index refers to an earlier stage only; anything else is an image.
            if let Some(dep) = stages[..i].iter().rev().find(|s| refers_to(reference, s))
                && needed.insert(dep.index)
            {
                todo.push(dep.index);
            }
        }
    }
    Ok(needed.into_iter().map(|i| &stages[i]).collect())
}

fn refers_to(reference: &str, stage: &Stage) -> bool {
    let reference = reference.to_ascii_lowercase();
    stage.name.as_deref() == Some(reference.as_str()) || reference == stage.index.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILDER: &str = "\
# syntax=docker/dockerfile:1
FROM --platform=$BUILDPLATFORM busybox AS Deps
RUN sleep 20 \\
    && echo deps > /deps
# the agent's source on top of its dependencies
FROM deps AS build
COPY src /src
RUN --mount=type=cache,target=/root/.cache,from=tools cat /src > /out
FROM busybox AS tools
FROM alpine AS unused
FROM scratch AS payload
COPY --from=build /out /out
";

    fn keys(stages: &[&Stage]) -> Vec<String> {
        stages.iter().map(|s| s.key()).collect()
    }

    #[test]
    fn stages_are_parsed_with_their_references() {
        let stages = parse_stages(BUILDER);
        let names: Vec<String> = stages.iter().map(Stage::key).collect();
        assert_eq!(names, ["deps", "build", "tools", "unused", "payload"]);
        assert_eq!(stages[0].from, "busybox");
        assert_eq!(stages[1].from, "deps");
        assert_eq!(stages[1].copies_from, ["tools"]);
        assert_eq!(stages[4].copies_from, ["build"]);
    }

    #[test]
    fn a_target_needs_what_it_starts_from_and_copies_from_transitively() {
        let stages = parse_stages(BUILDER);
        assert_eq!(keys(&stages_needed(&stages, Some("payload")).unwrap()), ["deps", "build"]);
        assert_eq!(keys(&stages_needed(&stages, Some("build")).unwrap()), ["deps"]);
        assert!(stages_needed(&stages, Some("deps")).unwrap().is_empty());
        assert_eq!(keys(&stages_needed(&stages, None).unwrap()), ["deps", "build"], "no target: the last stage");
        let e = stages_needed(&stages, Some("nope")).unwrap_err();
        assert_eq!(e.to_string(), "the Dockerfile has no stage `nope` (its stages: deps, build, tools, unused, payload)");
    }

    #[test]
    fn a_mount_from_a_later_stage_is_an_image_not_a_stage() {
        // `tools` comes after `build`: `from=tools` there names an image called tools.
        let stages = parse_stages(BUILDER);
        assert_eq!(keys(&stages_needed(&stages, Some("build")).unwrap()), ["deps"]);
    }

    #[test]
    fn unnamed_stages_are_found_by_index_and_escape_directives_are_honoured() {
        let text =
            "# escape=`\nFROM busybox\nRUN echo a `\n  b\nfrom busybox as two\ncopy --from=0 /a /a\nFROM scratch\nCOPY --from=TWO /a /a\n";
        let stages = parse_stages(text);
        assert_eq!(stages.iter().map(Stage::key).collect::<Vec<_>>(), ["0", "two", "2"]);
        assert_eq!(keys(&stages_needed(&stages, None).unwrap()), ["0", "two"]);
    }

    #[test]
    fn nothing_to_need_in_an_empty_or_single_stage_file() {
        assert!(stages_needed(&parse_stages(""), None).unwrap().is_empty());
        assert!(stages_needed(&parse_stages("FROM x AS a\nRUN y\n"), Some("a")).unwrap().is_empty());
    }
}
