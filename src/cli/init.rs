//! `cohort init`: make a store in `.cohort/` of the current folder.
use std::process::ExitCode;

use cohort::repo::Repo;

use super::{out, CliResult, Env};

/// Create a store in `.cohort/` of the current folder.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(env: &Env, _a: Args) -> CliResult {
    let r = Repo::init(&env.cwd, env.ctx.clone())?;
    out(&format!("Initialized empty cohort store in {}\n", r.store.dir.display()));
    Ok(ExitCode::SUCCESS)
}
