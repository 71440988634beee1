//! `cohort commit`: snapshot the working tree.
use std::process::ExitCode;

use cohort::repo::CommitOptions;
use cohort::store::Mode;

use super::{human_bytes, json, out, CliResult, Env};

/// Snapshot the whole working tree (everything but .cohort/ and what .cohortignore names) as a
/// new commit, or after `--` only the changes at some paths; prints its id.
#[derive(clap::Args)]
pub struct Args {
    /// Commit message.
    #[arg(short, long)]
    message: String,
    /// Author (default: $COHORT_USER or $USER).
    #[arg(long)]
    author: Option<String>,
    /// Commit even if nothing changed.
    #[arg(long)]
    allow_empty: bool,
    /// Sign the commit with this key file (see `cohort keygen`).
    #[arg(long, value_name = "KEYFILE")]
    sign: Option<std::path::PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// After `--`: commit only the changes at and under these paths (relative to the current
    /// folder); other changes stay uncommitted.
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<std::path::PathBuf>,
}

pub fn run(env: &Env, a: Args) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let sign = a.sign.map(|p| cohort::sign::SigningKey::load(&super::abs(env, &p))).transpose()?;
    let paths = super::tree_paths(env, &repo, &a.paths)?;
    let opts = CommitOptions { message: a.message, author: a.author, allow_empty: a.allow_empty, sign, paths, ..Default::default() };
    let s = repo.commit(&opts, &env.progress())?;
    if a.json {
        json(&s);
        return Ok(ExitCode::SUCCESS);
    }
    out(&format!("{}\n", s.id));
    eprintln!(
        "[{} {}] {} files ({}), {} DICOM instances read; {} added, {} modified, {} removed; {} new objects, {} stored",
        s.branch.as_deref().unwrap_or("detached"),
        s.id.short(),
        s.files,
        human_bytes(s.logical_bytes),
        s.dicom_instances,
        s.added,
        s.modified,
        s.removed,
        s.new_objects,
        human_bytes(s.pack_bytes),
    );
    for n in &s.notes {
        eprintln!("note: {}: {}", n.path, n.note);
    }
    Ok(ExitCode::SUCCESS)
}
