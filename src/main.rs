//! The `split-build` binary: everything happens in [`split_build::app::main`].

fn main() -> std::process::ExitCode {
    split_build::app::main()
}
