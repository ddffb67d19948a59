//! GitHub Actions as a process sees it: `INPUT_*` variables in, file commands out
//! (`$GITHUB_OUTPUT`, `$GITHUB_STEP_SUMMARY`), and workflow commands on stdout
//! (`::error`, `::group::`, `::add-mask::`).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where this process's Actions file commands go; all empty outside Actions.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActionsEnv {
    /// `GITHUB_ACTIONS=true`.
    pub enabled: bool,
    /// `$GITHUB_OUTPUT`.
    pub output: Option<PathBuf>,
    /// `$GITHUB_STEP_SUMMARY`.
    pub summary: Option<PathBuf>,
    /// `$GITHUB_RUN_ID`: the workflow run this job belongs to (in Actions only).
    pub run_id: Option<String>,
    /// `$GITHUB_RUN_ATTEMPT`: 1 for a run's first attempt, more for a rerun (in Actions only).
    pub run_attempt: Option<u32>,
}

impl ActionsEnv {
    /// Reads the runner's variables.
    pub(crate) fn from_env() -> ActionsEnv {
        let path = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let enabled = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
        let var = |name: &str| std::env::var(name).ok().filter(|v| enabled && !v.is_empty());
        ActionsEnv {
            enabled,
            output: path("GITHUB_OUTPUT"),
            summary: path("GITHUB_STEP_SUMMARY"),
            run_id: var("GITHUB_RUN_ID"),
            run_attempt: var("GITHUB_RUN_ATTEMPT").and_then(|v| v.parse().ok()),
        }
    }

    /// Appends outputs to `$GITHUB_OUTPUT` (no-op without it), each as
    /// `name<<DELIM` / value / `DELIM` with a fresh random delimiter.
    pub(crate) fn set_outputs(&self, outputs: &[(&str, String)]) -> anyhow::Result<()> {
        let Some(path) = &self.output else { return Ok(()) };
        let mut text = String::new();
        for (name, value) in outputs {
            text.push_str(&output_record(name, value, &mut rand::rng()));
        }
        append(path, &text).with_context(|| format!("writing outputs to `{}`", path.display()))
    }

    /// Appends markdown to `$GITHUB_STEP_SUMMARY` (no-op without it).
    pub(crate) fn append_summary(&self, markdown: &str) -> anyhow::Result<()> {
        let Some(path) = &self.summary else { return Ok(()) };
        append(path, markdown).with_context(|| format!("writing the step summary to `{}`", path.display()))
    }

    /// Asks the runner to mask `secret` in every later log line.
    pub(crate) fn mask(&self, secret: &str) {
        if self.enabled && !secret.is_empty() {
            println!("::add-mask::{}", escape_data(secret));
        }
    }

    /// Opens a collapsible log group (Actions only; a terminal gets the log lines as they
    /// are). Only [`ActionsEnv::log_group`]'s guard opens one, so every path closes it.
    fn group(&self, title: &str) {
        if self.enabled {
            println!("::group::{}", escape_data(title));
        }
    }

    /// Closes the group opened by [`ActionsEnv::group`].
    fn end_group(&self) {
        if self.enabled {
            println!("::endgroup::");
        }
    }

    /// Opens a log group that closes itself when the guard is dropped, so an early return
    /// (`?`) never leaves the rest of the log inside the group.
    pub(crate) fn log_group(&self, title: &str) -> LogGroup<'_> {
        self.group(title);
        LogGroup { actions: self }
    }

    /// Prints `lines` as one folded group in a single write (Actions only), so that the logs
    /// of parallel work never interleave.
    pub(crate) fn folded(&self, title: &str, lines: &[String]) {
        if !self.enabled {
            return;
        }
        let mut out = format!("::group::{}\n", escape_data(title));
        for line in lines {
            out.push_str(&no_commands(line));
            out.push('\n');
        }
        out.push_str("::endgroup::\n");
        let _ = io::stdout().lock().write_all(out.as_bytes());
    }

    /// Whether progress is drawn as a redrawn line: stderr is a terminal, outside Actions.
    pub(crate) fn redraws_progress(&self) -> bool {
        use std::io::IsTerminal as _;
        !self.enabled && io::stderr().is_terminal()
    }
}

fn append(path: &Path, text: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(text.as_bytes())
}

/// One `$GITHUB_OUTPUT` record with a random delimiter that does not occur in `value`.
pub(crate) fn output_record(name: &str, value: &str, rng: &mut impl rand::Rng) -> String {
    loop {
        let delim = format!("ghadelimiter_{:032x}", rng.random::<u128>());
        if !value.contains(&delim) {
            return format!("{name}<<{delim}\n{value}\n{delim}\n");
        }
    }
}

/// An open `::group::` of the Actions log: `::endgroup::` is written when it is dropped
/// (made by [`ActionsEnv::log_group`]).
pub(crate) struct LogGroup<'a> {
    actions: &'a ActionsEnv,
}

impl Drop for LogGroup<'_> {
    fn drop(&mut self) {
        self.actions.end_group();
    }
}

#[cfg(test)]
/// Parses `$GITHUB_OUTPUT` text the way the runner does: `name=value` lines and
/// `name<<DELIM` blocks. Later values win.
pub(crate) fn parse_output_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            loop {
                match lines.next() {
                    Some(l) if l == delim => break,
                    Some(l) => value.push(l),
                    None => return Err(format!("output `{name}`: delimiter `{delim}` never closes")),
                }
            }
            out.insert(name.to_owned(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            out.insert(name.to_owned(), value.to_owned());
        } else {
            return Err(format!("not an output line: `{line}`"));
        }
    }
    Ok(out)
}

/// `text` with no line that the runner would take for a workflow command: a line starting
/// (after blanks) with `::` gets its first colon written `%3A`. For every user-controlled text
/// printed on stdout or stderr outside a workflow command of our own.
pub(crate) fn no_commands(text: &str) -> std::borrow::Cow<'_, str> {
    let risky = |line: &str| line.trim_start().starts_with("::");
    if !text.split('\n').any(|l| risky(l.trim_start_matches('\r'))) {
        return std::borrow::Cow::Borrowed(text);
    }
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            if risky(l.trim_start_matches('\r')) {
                let at = l.find("::").unwrap_or(0);
                format!("{}%3A{}", &l[..at], &l[at + 1..])
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::borrow::Cow::Owned(lines.join("\n"))
}

/// A writer for the log (stderr) that passes every write through [`no_commands`].
pub(crate) struct LogWriter;

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        io::stderr().lock().write_all(no_commands(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Escapes the message of a workflow command (`%`, `\r`, `\n`).
pub(crate) fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a workflow command property value (also `:` and `,`).
pub(crate) fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// An `::error` annotation at a file location (line/column 0 are left out).
pub(crate) fn error_annotation(file: &Path, line: u64, column: u64, message: &str) -> String {
    let mut props = format!("file={}", escape_property(&file.to_string_lossy()));
    if line > 0 {
        props.push_str(&format!(",line={line}"));
        if column > 0 {
            props.push_str(&format!(",col={column}"));
        }
    }
    format!("::error {props}::{}", escape_data(message))
}

/// Builds the argument list from `INPUT_*` variables for a runner that starts the action
/// with no arguments: `INPUT_COMMAND` picks the subcommand (default `plan`); every other
/// non-empty input whose name is a long flag of that subcommand becomes `--name value`
/// (`--name` alone for a flag that takes no value, when the input is `true`); positional
/// arguments take whitespace-separated words from the input of their name. Inputs that the
/// subcommand does not take are ignored, as GitHub passes every input of action.yml.
pub(crate) fn argv_from_inputs(vars: &BTreeMap<String, String>, cli: &clap::Command) -> anyhow::Result<Vec<String>> {
    let input = |name: &str| vars.get(&format!("INPUT_{}", name.to_ascii_uppercase())).map(|v| v.trim()).filter(|v| !v.is_empty());
    let command = input("command").unwrap_or("plan").to_owned();
    let sub = cli.find_subcommand(&command).with_context(|| {
        let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
        format!("input `command` is `{command}`: use one of {}", names.join(", "))
    })?;
    let mut argv = vec![cli.get_name().to_owned(), command.clone()];
    let mut positional = Vec::new();
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        if let Some(long) = arg.get_long() {
            let Some(value) = input(long) else { continue };
            let takes_value = arg.get_action().takes_values();
            if !takes_value {
                match value {
                    v if v.eq_ignore_ascii_case("true") => argv.push(format!("--{long}")),
                    v if v.eq_ignore_ascii_case("false") => {}
                    other => anyhow::bail!("input `{long}` is `{other}`: use true or false"),
                }
            } else if matches!(arg.get_action(), clap::ArgAction::Append) {
                for v in crate::core::list_words(value) {
                    argv.push(format!("--{long}={v}"));
                }
            } else {
                argv.push(format!("--{long}={value}"));
            }
        } else if arg.is_positional()
            && let Some(value) = input(id)
        {
            positional.extend(crate::core::list_words(value).map(str::to_owned));
        }
    }
    if !positional.is_empty() {
        argv.push("--".into());
        argv.extend(positional);
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn output_records_round_trip_through_the_runner_syntax() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let json = "{\"include\":[{\"items\":\"a b\"}]}";
        let text = format!("{}{}", output_record("m", json, &mut rng), output_record("multi", "x\ny", &mut rng));
        let parsed = parse_output_file(&text).unwrap();
        assert_eq!(parsed["m"], json);
        assert_eq!(parsed["multi"], "x\ny");
        assert!(parse_output_file("a<<EOF\nnever closed\n").is_err());
    }

    #[test]
    fn annotations_escape_what_could_smuggle_commands() {
        assert_eq!(
            error_annotation(Path::new("a,b:c.yml"), 3, 4, "bad\n::warning::x 100%"),
            "::error file=a%2Cb%3Ac.yml,line=3,col=4::bad%0A::warning::x 100%25"
        );
        assert_eq!(error_annotation(Path::new("s.yml"), 0, 0, "m"), "::error file=s.yml::m");
    }

    #[test]
    fn user_text_never_starts_a_workflow_command() {
        assert_eq!(no_commands("plain"), "plain");
        assert_eq!(no_commands("x\n::warning::pwn"), "x\n%3A:warning::pwn");
        assert_eq!(no_commands("  ::add-mask::a\r\nok"), "  %3A:add-mask::a\r\nok");
        assert_eq!(no_commands("a :: b"), "a :: b");
    }

    #[test]
    fn inputs_become_flags_of_the_chosen_command() {
        use clap::{Arg, ArgAction, Command};
        let cli = Command::new("tool").subcommand(
            Command::new("plan")
                .arg(Arg::new("spec").long("spec"))
                .arg(Arg::new("offline").long("offline").action(ArgAction::SetTrue))
                .arg(Arg::new("builder-version").long("builder-version"))
                .arg(Arg::new("insecure-registry").long("insecure-registry").action(ArgAction::Append)),
        );
        let vars: BTreeMap<String, String> = [
            ("INPUT_COMMAND", "plan"),
            ("INPUT_SPEC", "x.yml"),
            ("INPUT_OFFLINE", "True"),
            ("INPUT_BUILDER-VERSION", "1.2"),
            ("INPUT_INSECURE-REGISTRY", "a:1,b:2\nc:3"),
            ("INPUT_STAGE", "bases"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let argv = argv_from_inputs(&vars, &cli).unwrap();
        assert_eq!(
            argv,
            [
                "tool",
                "plan",
                "--spec=x.yml",
                "--offline",
                "--builder-version=1.2",
                "--insecure-registry=a:1",
                "--insecure-registry=b:2",
                "--insecure-registry=c:3"
            ]
        );
        let bad: BTreeMap<String, String> = [("INPUT_COMMAND".to_owned(), "nope".to_owned())].into();
        assert!(argv_from_inputs(&bad, &cli).unwrap_err().to_string().contains("use one of plan"));
    }
}
