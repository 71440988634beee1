//! The `cohort` binary: parses the command line, runs the library, renders the result.
mod cli;

// Commit reads and compresses many ~0.5 MB buffers; glibc maps and unmaps each one (page
// faults on every use), mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}
