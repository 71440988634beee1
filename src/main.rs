//! The `cohort` binary: parses the command line, runs the library, renders the result.
mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
