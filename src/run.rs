//! `cohort run` and `cohort rerun`: a user's own script as a recorded step.
//!
//! `run` executes a command on a clean working tree and commits what it changed; the commit's
//! activity records the command line, its exit status, the inputs and outputs (paths with
//! their object ids) and the code that ran: the git commit of the repository the script lives
//! in and whether that checkout had uncommitted changes (read with git2). `rerun` executes the
//! recorded command again in a fresh copy of the run's input state and reports whether every
//! output came out byte-identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::diff::TreeSource;
use crate::id::ObjectId;
use crate::object::ActivityRef;
use crate::pathsel::entry_at;
use crate::progress::{Progress, Silent};
use crate::repo::{CommitOptions, Repo, RepoError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the working tree has uncommitted changes (e.g. {0}); commit them first, so the run's commit holds only what the command changed")]
    Dirty(String),
    #[error("no command given: cohort run [options] -- COMMAND ARGS...")]
    NoCommand,
    #[error("--input {0}: not in HEAD")]
    NoInput(String),
    #[error("cannot start {program:?}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{command} exited with {status}; nothing was committed (its changes are left in the working tree)")]
    Failed { command: String, status: String },
    #[error("commit {0} was not made by `cohort run`")]
    NotARun(String),
    #[error("commit {0} records no command")]
    NoRecordedCommand(String),
    #[error("reading the code's git repository {path}: {message}")]
    Git { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error(transparent)]
    Worktree(#[from] crate::worktree::WorktreeError),
}

/// The code that ran, as git knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeVersion {
    /// The script or program file.
    pub script: String,
    /// The git repository's working folder, when the script is in one.
    pub repo: Option<String>,
    pub commit: Option<String>,
    /// Tracked files differ from the commit (staged or not).
    pub dirty: bool,
}

#[derive(Debug, Clone)]
pub struct RunRequest {
    pub message: Option<String>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub command: Vec<String>,
    /// The script file, when it is not the first file argument of the command.
    pub code: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub commit: ObjectId,
    pub exit_status: i32,
    pub outputs: Vec<(String, Option<ObjectId>)>,
    pub code: Option<CodeVersion>,
}

/// The file that holds the code: `--code`, else the program itself when named by a path, else
/// the first argument that is an existing file (`python clean.py`, `Rscript x.R`).
fn script_of(root: &Path, req_code: Option<&Path>, command: &[String]) -> Option<PathBuf> {
    let resolve = |p: &Path| {
        let p = if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
        std::fs::canonicalize(&p).unwrap_or(p)
    };
    if let Some(c) = req_code {
        return Some(resolve(c));
    }
    let first = command.first()?;
    if first.contains('/') && resolve(Path::new(first)).is_file() {
        return Some(resolve(Path::new(first)));
    }
    command[1..].iter().map(|a| resolve(Path::new(a))).find(|p| p.is_file())
}

/// The git state of the repository holding `script` (None outside any repository).
pub fn code_version(script: &Path) -> Result<CodeVersion, RunError> {
    let script_s = script.display().to_string();
    let dir = script.parent().unwrap_or(Path::new("."));
    let repo = match git2::Repository::discover(dir) {
        Ok(r) => r,
        Err(_) => return Ok(CodeVersion { script: script_s, repo: None, commit: None, dirty: false }),
    };
    let git = |e: git2::Error| RunError::Git { path: dir.to_path_buf(), message: e.message().to_string() };
    let workdir = repo.workdir().map(|w| w.display().to_string());
    let commit = match repo.head() {
        Ok(h) => h.peel_to_commit().ok().map(|c| c.id().to_string()),
        Err(_) => None,
    };
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(false).include_ignored(false);
    let dirty = !repo.statuses(Some(&mut opts)).map_err(git)?.is_empty();
    let script_rel = repo.workdir().and_then(|w| script.strip_prefix(w).ok()).map(|p| p.display().to_string()).unwrap_or(script_s);
    Ok(CodeVersion { script: script_rel, repo: workdir, commit, dirty })
}

fn status_text(s: &std::process::ExitStatus) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => (c, format!("status {c}")),
        (None, Some(sig)) => (128 + sig, format!("signal {sig}")),
        _ => (-1, "an unknown status".into()),
    }
}

/// Run a command on the working tree and commit what it changed.
pub fn run(repo: &Repo, req: &RunRequest, progress: &dyn Progress) -> Result<RunSummary, RunError> {
    if req.command.is_empty() {
        return Err(RunError::NoCommand);
    }
    let (status, _) = repo.status(progress)?;
    if let Some(c) = status.changes.first() {
        return Err(RunError::Dirty(c.path.clone()));
    }
    let (head, _) = repo.head()?;
    let head_tree = repo.store.tree_of(head.as_ref())?;
    let src = TreeSource { store: &repo.store, extra: None };
    let mut inputs = Vec::new();
    for p in &req.inputs {
        let e = match head_tree {
            Some(t) => entry_at(&src, t, p)?,
            None => None,
        };
        let e = e.ok_or_else(|| RunError::NoInput(p.clone()))?;
        inputs.push(ActivityRef { role: format!("input:{p}"), value: e.id.hex() });
    }
    let code = script_of(&repo.root, req.code.as_deref(), &req.command).map(|s| code_version(&s)).transpose()?;
    let started = chrono::Utc::now().timestamp_micros();
    let st = Command::new(&req.command[0])
        .args(&req.command[1..])
        .current_dir(&repo.root)
        .status()
        .map_err(|source| RunError::Spawn { program: req.command[0].clone(), source })?;
    let ended = chrono::Utc::now().timestamp_micros();
    let (code_n, text) = status_text(&st);
    if !st.success() {
        return Err(RunError::Failed { command: req.command.join(" "), status: text });
    }
    // What the command changed: the outputs (all changed paths unless --output names them).
    let (after, snap) = repo.status(&Silent)?;
    let src2 = TreeSource { store: &repo.store, extra: Some(&snap.trees) };
    let out_paths: Vec<String> = if req.outputs.is_empty() { after.changes.iter().map(|c| c.path.clone()).collect() } else { req.outputs.clone() };
    let mut outputs = Vec::new();
    let mut out_refs = Vec::new();
    for p in &out_paths {
        let e = entry_at(&src2, snap.root, p)?;
        outputs.push((p.clone(), e.as_ref().map(|e| e.id)));
        out_refs.push(ActivityRef { role: format!("output:{p}"), value: e.map(|e| e.id.hex()).unwrap_or_else(|| "(absent)".into()) });
    }
    let mut parameters = BTreeMap::new();
    parameters.insert("command".into(), serde_json::to_string(&req.command).expect("strings serialize"));
    parameters.insert("exit-status".into(), code_n.to_string());
    parameters.insert("duration-ms".into(), ((ended - started) / 1000).to_string());
    if let Some(c) = &code {
        parameters.insert("code-script".into(), c.script.clone());
        if let Some(r) = &c.repo {
            parameters.insert("code-repo".into(), r.clone());
        }
        if let Some(id) = &c.commit {
            parameters.insert("code-git-commit".into(), id.clone());
            inputs.push(ActivityRef { role: "code-git-commit".into(), value: id.clone() });
        }
        parameters.insert("code-dirty".into(), c.dirty.to_string());
    }
    let opts = CommitOptions {
        message: req.message.clone().unwrap_or_else(|| format!("run: {}", req.command.join(" "))),
        kind: "run".into(),
        parameters,
        inputs,
        outputs: out_refs,
        allow_empty: true,
        ..Default::default()
    };
    let s = repo.commit(&opts, progress)?;
    Ok(RunSummary { commit: s.id, exit_status: code_n, outputs, code })
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputCheck {
    pub path: String,
    pub recorded: Option<String>,
    pub now: Option<String>,
    pub identical: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RerunReport {
    pub commit: ObjectId,
    pub command: Vec<String>,
    pub exit_status: i32,
    pub recorded_exit_status: Option<i32>,
    pub outputs: Vec<OutputCheck>,
    /// The whole tree came out as the run's commit.
    pub tree_identical: bool,
    pub identical: bool,
    pub recorded_code: Option<CodeVersion>,
    pub code_now: Option<CodeVersion>,
    pub code_changed: bool,
}

/// Run a recorded command again from the run's input state and compare the outputs.
pub fn rerun(repo: &Repo, rev: &str, progress: &dyn Progress) -> Result<RerunReport, RunError> {
    let id = repo.resolve(rev)?;
    let c = repo.store.read_commit(&id)?;
    if c.activity.kind != "run" {
        return Err(RunError::NotARun(id.short()));
    }
    let command: Vec<String> = c
        .activity
        .parameters
        .get("command")
        .and_then(|s| serde_json::from_str(s).ok())
        .filter(|v: &Vec<String>| !v.is_empty())
        .ok_or_else(|| RunError::NoRecordedCommand(id.short()))?;
    let p = &c.activity.parameters;
    let recorded_code = p.get("code-script").map(|s| CodeVersion {
        script: s.clone(),
        repo: p.get("code-repo").cloned(),
        commit: p.get("code-git-commit").cloned(),
        dirty: p.get("code-dirty").is_some_and(|d| d == "true"),
    });
    let tmp = tempfile::Builder::new().prefix("rerun-").tempdir_in(repo.store.tmp_dir()).map_err(|source| RunError::Io { path: repo.store.tmp_dir(), source })?;
    let work = tmp.path().join("work");
    let input_tree = repo.store.tree_of(c.parents.first())?;
    match input_tree {
        Some(t) => {
            crate::export::export_tree(&repo.store, t, &work, crate::export::LinkMode::Copy, progress)?;
        }
        None => std::fs::create_dir_all(&work).map_err(|source| RunError::Io { path: work.clone(), source })?,
    }
    // A script inside the dataset runs from the copy; relative paths that pointed outside the
    // working tree (`../code/clean.py`) still point there.
    let root = std::fs::canonicalize(&repo.root).unwrap_or_else(|_| repo.root.clone());
    let command: Vec<String> = command
        .into_iter()
        .map(|a| {
            if a.starts_with('-') || Path::new(&a).is_absolute() {
                return a;
            }
            match std::fs::canonicalize(root.join(&a)) {
                Ok(p) if !p.starts_with(&root) => p.display().to_string(),
                _ => a,
            }
        })
        .collect();
    let code_now = script_of(&work, None, &command).map(|s| code_version(&s)).transpose()?;
    let st = Command::new(&command[0]).args(&command[1..]).current_dir(&work).status().map_err(|source| RunError::Spawn { program: command[0].clone(), source })?;
    let (exit_status, _) = status_text(&st);
    let snap = crate::worktree::snapshot(&work, &repo.store, &Default::default(), None, progress)?;
    let now_src = TreeSource { store: &repo.store, extra: Some(&snap.trees) };
    let old_src = TreeSource { store: &repo.store, extra: None };
    let mut outputs = Vec::new();
    for o in &c.activity.outputs {
        let Some(path) = o.role.strip_prefix("output:") else { continue };
        let now = entry_at(&now_src, snap.root, path)?.map(|e| e.id.hex());
        let recorded = entry_at(&old_src, c.tree, path)?.map(|e| e.id.hex());
        outputs.push(OutputCheck { path: path.to_string(), identical: now == recorded, recorded, now });
    }
    let tree_identical = snap.root == c.tree;
    let recorded_exit_status = p.get("exit-status").and_then(|s| s.parse().ok());
    let code_changed = match (&recorded_code, &code_now) {
        (Some(a), Some(b)) => a.commit != b.commit || b.dirty,
        (None, None) => false,
        _ => true,
    };
    Ok(RerunReport {
        commit: id,
        command,
        exit_status,
        recorded_exit_status,
        identical: outputs.iter().all(|o| o.identical) && tree_identical && Some(exit_status) == recorded_exit_status,
        outputs,
        tree_identical,
        recorded_code,
        code_now,
        code_changed,
    })
}
