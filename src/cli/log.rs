//! `cohort log` and `cohort show`.
use std::process::ExitCode;

use cohort::diff::{self, TreeSource};
use cohort::repo::format_time;
use cohort::store::Mode;

use super::{json, out, CliResult, Env};

/// Commits reachable from a revision, newest first.
#[derive(clap::Args)]
pub struct LogArgs {
    /// Start here (default HEAD).
    #[arg(default_value = "HEAD")]
    rev: String,
    /// At most N commits.
    #[arg(short = 'n', long)]
    limit: Option<usize>,
    #[arg(long)]
    json: bool,
    /// After `--`: only commits that changed something at or under these paths (as in the
    /// working tree, relative to the current folder).
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<std::path::PathBuf>,
}

pub fn run_log(env: &Env, a: LogArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let paths = super::tree_paths(env, &repo, &a.paths)?;
    let log = repo.log(&a.rev, a.limit, &paths)?;
    if a.json {
        json(&log);
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = String::new();
    for e in &log {
        s.push_str(&format!("commit {}\nAuthor: {}\nDate:   {}\nKind:   {}\n\n", e.id, e.author, e.time, e.kind));
        for l in e.message.lines() {
            s.push_str(&format!("    {l}\n"));
        }
        s.push('\n');
    }
    out(&s);
    Ok(ExitCode::SUCCESS)
}

/// A commit: its metadata, activity record, notes and changes against its first parent.
#[derive(clap::Args)]
pub struct ShowArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Shown {
    id: cohort::ObjectId,
    tree: cohort::ObjectId,
    parents: Vec<cohort::ObjectId>,
    author: String,
    time: String,
    message: String,
    activity: cohort::object::Activity,
    notes: Vec<cohort::object::CommitNote>,
    changes: Vec<diff::Change>,
}

pub fn run_show(env: &Env, a: ShowArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let id = repo.resolve(&a.rev)?;
    let c = repo.store.read_commit(&id)?;
    let parent_tree = repo.store.tree_of(c.parents.first())?;
    let changes = diff::diff_trees(&TreeSource { store: &repo.store, extra: None }, parent_tree, Some(c.tree))?;
    let shown = Shown {
        id,
        tree: c.tree,
        parents: c.parents.clone(),
        author: c.author.clone(),
        time: format_time(c.time_us),
        message: c.message.clone(),
        activity: c.activity.clone(),
        notes: c.notes.clone(),
        changes,
    };
    if a.json {
        json(&shown);
        return Ok(ExitCode::SUCCESS);
    }
    let act = &shown.activity;
    let mut s = format!("commit {}\ntree   {}\n", shown.id, shown.tree);
    for p in &shown.parents {
        s.push_str(&format!("parent {p}\n"));
    }
    s.push_str(&format!("Author: {}\nDate:   {}\n\n", shown.author, shown.time));
    for l in shown.message.lines() {
        s.push_str(&format!("    {l}\n"));
    }
    s.push_str(&format!(
        "\nActivity: {} by {} with {} {} ({} .. {})\n",
        act.kind, act.agent.user, act.agent.tool, act.agent.tool_version, format_time(act.started_us), format_time(act.ended_us)
    ));
    for (k, v) in &act.parameters {
        s.push_str(&format!("  parameter {k} = {v}\n"));
    }
    for i in &act.inputs {
        s.push_str(&format!("  input {} {}\n", i.role, i.value));
    }
    for o in &act.outputs {
        s.push_str(&format!("  output {} {}\n", o.role, o.value));
    }
    for n in &shown.notes {
        if n.path.is_empty() {
            s.push_str(&format!("note: {}\n", n.note));
        } else {
            s.push_str(&format!("note: {}: {}\n", n.path, n.note));
        }
    }
    s.push('\n');
    for ch in &shown.changes {
        s.push_str(&format!("{} {}\n", super::status::letter(ch.status), ch.path));
    }
    out(&s);
    Ok(ExitCode::SUCCESS)
}
