//! The one sequencer: arguments (or `INPUT_*`) in, a command run, an exit code out.
//! Only `main` knows this module; each command's steps live in `commands/`, named after it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};

use crate::adapters::actions_env::{ActionsEnv, LogWriter, argv_from_inputs, error_annotation, escape_data, no_commands};
use crate::adapters::credentials::Credentials;
use crate::cli::{Cli, Command};
use crate::commands;
use crate::core::spec::SpecError;
use crate::outcome::{Done, exit_code};

/// Runs the binary: returns its exit code (0 done, 1 some image failed or I/O failed,
/// 2 unusable input).
pub fn main() -> ExitCode {
    init_tracing();
    let actions = ActionsEnv::from_env();

    let argv: Vec<String> = if std::env::args_os().len() <= 1 && actions.enabled {
        let vars: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("INPUT_")).collect();
        match argv_from_inputs(&vars, &Cli::command()) {
            Ok(argv) => argv,
            Err(e) => {
                println!("{}", error_annotation(std::path::Path::new("action.yml"), 0, 0, &format!("{e:#}")));
                eprintln!("error: {}", no_commands(&format!("{e:#}")));
                return ExitCode::from(2);
            }
        }
    } else {
        std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect()
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // clap echoes values: one with a newline must not start a workflow command.
            eprint!("{}", no_commands(&e.render().to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(0);
        }
    };
    // Before anything is read (the spec, an instances file, a registry's answer): every
    // secret, in every form, is masked.
    let credentials = cli.command.registry().map_or_else(Credentials::from_env, Credentials::load);
    for secret in credentials.secrets() {
        actions.mask(&secret);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(dispatch(cli, &actions));
    tell_the_end(&result, &actions);
    ExitCode::from(exit_code(&result))
}

/// Says how the command ended: a line for failed images, an error (and in Actions an
/// annotation, at the spec's line for a spec error).
fn tell_the_end(result: &anyhow::Result<Done>, actions: &ActionsEnv) {
    match result {
        Ok(Done::Ok) => {}
        Ok(Done::Failed(n)) => eprintln!("error: {n} image(s) failed; the report lists each with its reason"),
        Err(e) => {
            if let Some(se) = e.downcast_ref::<SpecError>() {
                if actions.enabled {
                    println!("{}", error_annotation(&se.site.file, se.site.line, se.site.column, &se.to_string()));
                }
                eprintln!("error: {}", no_commands(&se.to_string()));
                return;
            }
            if actions.enabled {
                println!("::error::{}", escape_data(&format!("{e:#}")));
            }
            eprintln!("error: {}", no_commands(&format!("{e:#}")));
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| LogWriter).with_target(false).without_time().try_init();
}

/// Runs one parsed command.
async fn dispatch(cli: Cli, actions: &ActionsEnv) -> anyhow::Result<Done> {
    match cli.command {
        Command::Plan(args) => commands::plan::run(args, actions).await,
        Command::Assemble(args) => commands::assemble::run(args, actions).await,
        Command::Build(args) => commands::build::run(args, actions).await,
        Command::Run(args) => commands::run::run(args, actions).await,
        Command::Report(args) => commands::report::run(args, actions).await,
        Command::Prune(args) => commands::prune::run(args, actions).await,
        Command::Explain(args) => commands::explain::run(args, actions).await,
    }
}
