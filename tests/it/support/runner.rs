//! The one way the tests run the `split-build` binary, with one environment hygiene for
//! every run: nothing the developer's shell or CI carries reaches the binary (no Docker
//! config, GitHub token, log filter, Actions variables, action inputs or `BUILDER_VERSION`);
//! a test that needs one sets it explicitly, and that wins.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Variables read by the binary (or by the bundled example spec, `${BUILDER_VERSION}`) that
/// no run inherits. `DOCKER_CONFIG` is then pointed at a directory that does not exist.
const NOT_INHERITED: [&str; 7] =
    ["DOCKER_CONFIG", "GITHUB_TOKEN", "RUST_LOG", "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "BUILDER_VERSION"];

/// Runs `split-build ARGS` in `dir` and waits for it.
pub fn split_build(dir: &Path, args: &[&str]) -> Output {
    SplitBuild::new(dir).args(args).output()
}

/// A run of the binary being put together: where, with what arguments and which variables.
pub struct SplitBuild {
    cwd: PathBuf,
    /// Where the absent Docker config is named (a test's temp dir).
    scratch: PathBuf,
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl SplitBuild {
    /// A run in `dir`, a test's temp dir.
    pub fn new(dir: &Path) -> SplitBuild {
        SplitBuild { cwd: dir.to_owned(), scratch: dir.to_owned(), wrapper: Vec::new(), args: Vec::new(), env: Vec::new() }
    }

    /// A run in the repository's root (where the bundled example and action.yml are); its
    /// absent Docker config is named inside `scratch`, a test's temp dir.
    pub fn in_repo(scratch: &Path) -> SplitBuild {
        SplitBuild { cwd: PathBuf::from(env!("CARGO_MANIFEST_DIR")), ..SplitBuild::new(scratch) }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> SplitBuild {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> SplitBuild {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets a variable for this run (after the hygiene, so it wins).
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> SplitBuild {
        self.env.push((name.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the binary as an argument of `program ARGS` (e.g. `/usr/bin/time -f …`).
    pub fn under(mut self, program: &str, args: &[&str]) -> SplitBuild {
        self.wrapper = std::iter::once(program).chain(args.iter().copied()).map(OsString::from).collect();
        self
    }

    /// The command, for a test that spawns it itself.
    pub fn command(self) -> Command {
        let binary = env!("CARGO_BIN_EXE_split-build");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.current_dir(&self.cwd).args(&self.args);
        for name in NOT_INHERITED {
            cmd.env_remove(name);
        }
        for (name, _) in std::env::vars_os().filter(|(name, _)| name.to_string_lossy().starts_with("INPUT_")) {
            cmd.env_remove(name);
        }
        cmd.env("DOCKER_CONFIG", self.scratch.join("no-docker-config"));
        cmd.envs(self.env);
        cmd
    }

    /// Runs it and waits.
    pub fn output(self) -> Output {
        self.command().output().unwrap()
    }
}
