//! `cohort status`: added, removed and modified paths against HEAD.
use std::process::ExitCode;

use cohort::diff::Status;
use cohort::store::Mode;

use super::{json, out, CliResult, Env};

/// List added, removed and modified paths against HEAD.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// After `--`: only changes at and under these paths (relative to the current folder).
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<std::path::PathBuf>,
}

pub fn letter(s: Status) -> char {
    match s {
        Status::Added => 'A',
        Status::Removed => 'D',
        Status::Modified => 'M',
    }
}

pub fn run(env: &Env, a: Args) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let paths = super::tree_paths(env, &repo, &a.paths)?;
    let (mut st, _) = repo.status(&env.progress())?;
    let all = st.changes.len();
    if !paths.is_empty() {
        st.changes.retain(|c| cohort::pathsel::is_within_any(&c.path, &paths));
    }
    if a.json {
        json(&st);
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = match (&st.branch, st.head) {
        (Some(b), Some(_)) => format!("On branch {b}\n"),
        (Some(b), None) => format!("On branch {b} (no commits yet)\n"),
        (None, Some(h)) => format!("HEAD detached at {}\n", h.short()),
        (None, None) => String::new(),
    };
    if st.clean {
        s.push_str("nothing to commit, working tree clean\n");
    } else if st.changes.is_empty() {
        s.push_str(&format!("nothing changed there ({all} change(s) elsewhere)\n"));
    }
    for c in &st.changes {
        s.push_str(&format!("{} {}\n", letter(c.status), c.path));
    }
    out(&s);
    Ok(ExitCode::SUCCESS)
}
