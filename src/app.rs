//! The one sequencer: arguments (or `INPUT_*`) in, a command run, an exit code out.
//! Each command's steps live in `commands/`, named after it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};

use crate::adapters::actions_env::{ActionsEnv, argv_from_inputs, error_annotation};
use crate::cli::{Cli, Command};
use crate::commands;
use crate::core::spec::SpecError;

/// Input the user must fix (exit code 2), other than a spec error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// How a command ended without an error of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Everything it was asked to do is done.
    Ok,
    /// It finished, but this many images failed (exit code 1).
    Failed(usize),
}

/// Runs the binary: returns its exit code (0 done, 1 some image failed or I/O failed,
/// 2 unusable input).
pub fn main() -> ExitCode {
    init_tracing();
    // One TLS provider for every client (reqwest and octocrab are built without a default).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let actions = ActionsEnv::from_env();

    let argv: Vec<String> = if std::env::args_os().len() <= 1 && actions.enabled {
        let vars: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("INPUT_")).collect();
        match argv_from_inputs(&vars, &Cli::command()) {
            Ok(argv) => argv,
            Err(e) => {
                println!("{}", error_annotation(std::path::Path::new("action.yml"), 0, 0, &format!("{e:#}")));
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        }
    } else {
        std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect()
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, &actions)) {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::Failed(n)) => {
            eprintln!("error: {n} image(s) failed; the report lists each with its reason");
            ExitCode::from(1)
        }
        Err(e) => exit_for_error(&e, &actions),
    }
}

fn exit_for_error(e: &anyhow::Error, actions: &ActionsEnv) -> ExitCode {
    if let Some(se) = e.downcast_ref::<SpecError>() {
        if actions.enabled {
            println!("{}", error_annotation(&se.site.file, se.site.line, se.site.column, &se.to_string()));
        }
        eprintln!("error: {se}");
        return ExitCode::from(2);
    }
    if actions.enabled {
        println!("::error::{}", crate::adapters::actions_env::escape_data(&format!("{e:#}")));
    }
    eprintln!("error: {e:#}");
    ExitCode::from(if e.downcast_ref::<UsageError>().is_some() { 2 } else { 1 })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).without_time().try_init();
}

/// Runs one parsed command.
pub async fn run(cli: Cli, actions: &ActionsEnv) -> anyhow::Result<Done> {
    match cli.command {
        Command::Plan(args) => commands::plan::run(args, actions).await,
        Command::Assemble(args) => commands::assemble::run(args, actions).await,
        Command::Build(args) => commands::build::run(args, actions).await,
        Command::Run(args) => commands::run::run(args, actions).await,
        Command::Report(args) => commands::report::run(args, actions).await,
        Command::Prune(args) => commands::prune::run(args, actions).await,
    }
}
