//! split-build: builds hundreds of near-identical container images as a content-addressed
//! base per instance plus a thin agent layer assembled at the registry.
//!
//! The floors, each importing only the ones below it (the README's "Architecture" section
//! says where to find what):
//! - [`outcome`] and [`core`]: how a command ends; the pure model (spec, tags, plan,
//!   matrices, image configs, reports, summaries, retention). No I/O.
//! - `cli`: the flags, parsed into core types.
//! - [`adapters`]: the thin I/O edges (GitHub Actions files, registry, Docker, GitHub API,
//!   the workspace's files), and the only readers of the environment.
//! - `stages`: the steps commands are made of (prepare, observe, build, append, ...).
//! - `commands`: one short verb per command, calling stages.
//! - [`app`]: arguments in, a command run, an exit code out; only `main` calls it.

pub mod adapters;
pub mod app;
pub(crate) mod cli;
pub(crate) mod commands;
pub mod core;
pub(crate) mod outcome;
pub(crate) mod stages;

#[cfg(test)]
mod floors {
    //! The floors are kept by reading the sources: a module imports only the floors below it.

    use std::path::Path;

    fn sources(dir: &str) -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(&root) {
            let e = e.unwrap();
            if e.path().extension().is_some_and(|x| x == "rs") {
                out.push((e.path().display().to_string(), std::fs::read_to_string(e.path()).unwrap()));
            }
        }
        assert!(!out.is_empty(), "no sources under {}", root.display());
        out
    }

    fn assert_no_import(dir: &str, forbidden: &[&str]) {
        for (file, text) in sources(dir) {
            for f in forbidden {
                assert!(!text.contains(f), "{file} uses `{f}`: a {dir} module may not reach that floor");
            }
        }
    }

    #[test]
    fn each_floor_imports_only_the_floors_below() {
        assert_no_import("core", &["crate::adapters", "crate::stages", "crate::commands", "crate::app", "crate::cli", "std::env"]);
        assert_no_import("adapters", &["crate::stages", "crate::commands", "crate::app"]);
        assert_no_import("stages", &["crate::commands", "crate::app"]);
        // A command calls stages; it never imports another command or the sequencer.
        assert_no_import("commands", &["crate::commands", "crate::app"]);
    }

    #[test]
    fn only_adapters_read_the_environment() {
        for dir in ["core", "stages", "commands"] {
            assert_no_import(dir, &["std::env::var", "env::var_os", "GITHUB_TOKEN\")", "install_default"]);
        }
    }
}
