//! `cohort branch` and `cohort tag`.
use std::process::ExitCode;

use cohort::repo::RefList;
use cohort::store::Mode;

use super::{json, out, CliResult, Env};

/// List branches, or create (NAME [REV]) or delete (-d NAME) one.
#[derive(clap::Args)]
pub struct BranchArgs {
    name: Option<String>,
    #[arg(default_value = "HEAD")]
    rev: String,
    /// Delete the branch.
    #[arg(short, long)]
    delete: bool,
    #[arg(long)]
    json: bool,
}

/// List tags, or create (NAME [REV]) or delete (-d NAME) one. Tags never move.
#[derive(clap::Args)]
pub struct TagArgs {
    name: Option<String>,
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(short, long)]
    delete: bool,
    #[arg(long)]
    json: bool,
}

fn list(l: &RefList, as_json: bool) {
    if as_json {
        return json(l);
    }
    let mut s = String::new();
    for (n, id) in &l.refs {
        let mark = if l.current.as_deref() == Some(n) { "*" } else { " " };
        s.push_str(&format!("{mark} {n} {}\n", id.short()));
    }
    out(&s);
}

fn run_ref(env: &Env, tag: bool, name: Option<String>, rev: &str, delete: bool, as_json: bool) -> CliResult {
    let what = if tag { "tag" } else { "branch" };
    match name {
        None => {
            let repo = env.repo(Mode::Read)?;
            let l = if tag { repo.tags()? } else { repo.branches()? };
            list(&l, as_json);
        }
        Some(n) if delete => {
            let id = env.repo(Mode::Write)?.delete_ref(tag, &n)?;
            eprintln!("deleted {what} {n} (was {})", id.short());
        }
        Some(n) => {
            let id = env.repo(Mode::Write)?.create_ref(tag, &n, rev)?;
            eprintln!("created {what} {n} at {}", id.short());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_branch(env: &Env, a: BranchArgs) -> CliResult {
    run_ref(env, false, a.name, &a.rev, a.delete, a.json)
}

pub fn run_tag(env: &Env, a: TagArgs) -> CliResult {
    run_ref(env, true, a.name, &a.rev, a.delete, a.json)
}
