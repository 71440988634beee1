//! The `cohort` binary: parses the command line, runs the library, renders the result.
mod cli;

// Commit reads and compresses many ~0.5 MB buffers; glibc maps and unmaps each one (page
// faults on every use), mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // dicom-object reports the normal end of every header it parses as an error, and its
    // error type captures a backtrace whenever RUST_BACKTRACE=1 (common on developer
    // machines): about 0.15 ms a file, a tenth of a commit's CPU. Backtraces of library
    // errors are never shown by cohort, so they are turned off unless the user asked for them
    // by name. (Set before any thread starts; panics still honour RUST_BACKTRACE.)
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    cli::run()
}
