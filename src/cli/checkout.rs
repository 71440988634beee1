//! `cohort checkout` and `cohort export`.
use std::path::PathBuf;
use std::process::ExitCode;

use cohort::export::LinkMode;
use cohort::store::Mode;

use super::{abs, human_bytes, json, out, CliResult, Env};

/// Set the working tree to a revision (refuses to lose uncommitted changes unless --force).
#[derive(clap::Args)]
pub struct CheckoutArgs {
    rev: String,
    /// Discard uncommitted changes: the working tree becomes exactly REV.
    #[arg(long)]
    force: bool,
}

pub fn run_checkout(env: &Env, a: CheckoutArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let id = repo.checkout(&a.rev, a.force, &env.progress())?;
    eprintln!("HEAD is now at {} ({})", id.short(), a.rev);
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Link {
    Copy,
    Hardlink,
    Reflink,
}

/// Write a revision's files into a new folder, byte-identical to what was committed.
#[derive(clap::Args)]
pub struct ExportArgs {
    rev: String,
    out: PathBuf,
    /// How files are made: copies, hardlinks or reflinks to the store's read-only cache.
    #[arg(long, value_enum, default_value = "copy")]
    link: Link,
    #[arg(long)]
    json: bool,
}

pub fn run_export(env: &Env, a: ExportArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let mode = match a.link {
        Link::Copy => LinkMode::Copy,
        Link::Hardlink => LinkMode::Hardlink,
        Link::Reflink => LinkMode::Reflink,
    };
    let s = repo.export(&a.rev, &abs(env, &a.out), mode, &env.progress())?;
    if a.json {
        json(&s);
    } else {
        out(&format!("exported {} files ({}) to {}\n", s.files, human_bytes(s.bytes), a.out.display()));
    }
    Ok(ExitCode::SUCCESS)
}
