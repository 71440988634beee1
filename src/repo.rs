//! A working folder with its store: the operations behind the CLI commands.
//!
//! Each method returns data; nothing here prints. Every change of refs goes through
//! [`Repo::publish`], which records an operation; lookup indexes catch up lazily.

use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::diff::{self, Change, DiffReport, Status, TreeSource};
use crate::export::{self, ExportError, ExportSummary, LinkMode};
use crate::id::ObjectId;
use crate::index::UidKind;
use crate::pathsel::{self, PathSelError};
use crate::object::{Activity, ActivityRef, Agent, Commit, CommitNote, EntryKind, Head, InstanceInfo, Operation, View};
use crate::progress::Progress;
use crate::store::{Mode, ObjectWriter, OpMeta, Store, StoreError, STORE_DIR};
use crate::worktree::{self, WorktreeError};

pub const TOOL: &str = "cohort";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Errors of repository operations.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Worktree(#[from] WorktreeError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("unknown revision {0:?}")]
    UnknownRevision(String),
    #[error("revision {rev:?} is ambiguous: {count} commits start with it")]
    AmbiguousRevision { rev: String, count: usize },
    #[error("revision {rev:?}: {reason}")]
    BadRevision { rev: String, reason: String },
    #[error("HEAD has no commits yet (branch {0:?} is unborn)")]
    UnbornHead(String),
    #[error("nothing to commit: the working tree is the same as HEAD")]
    NothingToCommit,
    #[error("the working tree has {count} uncommitted change(s) (e.g. {example}); commit them or use --force to discard them")]
    Dirty { count: usize, example: String },
    #[error("invalid {what} name {name:?}: use letters, digits, '.', '_', '-' and '/', not starting with '-' or '.'")]
    BadRefName { what: &'static str, name: String },
    #[error("{what} {name:?} already exists")]
    RefExists { what: &'static str, name: String },
    #[error("no {what} named {name:?}")]
    NoSuchRef { what: &'static str, name: String },
    #[error("cannot delete branch {0:?}: HEAD is on it")]
    DeleteCurrentBranch(String),
    #[error("nothing to undo: the first operation of a store cannot be undone")]
    NothingToUndo,
    #[error("{rev:?} is not a branch tip: annotations and splits are committed on top of a branch (name the branch, or check it out)")]
    NotATip { rev: String },
    #[error(transparent)]
    PathSel(#[from] PathSelError),
    #[error(transparent)]
    TreeBuild(#[from] crate::treebuild::TreeBuildError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What `restore` did: the paths it wrote and those it removed.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    pub commit: ObjectId,
    pub written: Vec<String>,
    pub removed: Vec<String>,
}

/// The activity of a commit that changes only the catalog (annotations, splits).
#[derive(Debug, Clone, Default)]
pub struct CatalogChange {
    pub kind: String,
    pub message: String,
    pub parameters: BTreeMap<String, String>,
    pub inputs: Vec<ActivityRef>,
    pub outputs: Vec<ActivityRef>,
    pub started_us: i64,
}

/// Who runs the command and when; supplied by the caller (the library reads no environment).
#[derive(Debug, Clone)]
pub struct Context {
    pub user: String,
    /// Fixed time (microseconds since the epoch, UTC) for reproducible tests; None = the clock.
    pub time_us: Option<i64>,
    pub command: Vec<String>,
}

impl Context {
    pub fn now_us(&self) -> i64 {
        self.time_us.unwrap_or_else(|| chrono::Utc::now().timestamp_micros())
    }
}

pub struct Repo {
    pub root: PathBuf,
    pub store: Store,
    pub ctx: Context,
}

/// What to commit and how to record it.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub message: String,
    pub author: Option<String>,
    /// Activity kind; "commit" when empty.
    pub kind: String,
    pub parameters: BTreeMap<String, String>,
    pub inputs: Vec<ActivityRef>,
    pub allow_empty: bool,
    /// Activity outputs besides the tree.
    pub outputs: Vec<ActivityRef>,
    /// Sign the commit with this key.
    pub sign: Option<crate::sign::SigningKey>,
    /// Commit only what changed at and under these paths (paths of the tree); the rest of
    /// the tree stays as in HEAD. Empty: the whole working tree.
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommitSummary {
    pub id: ObjectId,
    pub tree: ObjectId,
    pub parent: Option<ObjectId>,
    pub branch: Option<String>,
    pub files: u64,
    pub files_read: u64,
    pub bytes_read: u64,
    pub logical_bytes: u64,
    pub new_objects: u64,
    pub pack_bytes: u64,
    pub added: usize,
    pub removed: usize,
    pub modified: usize,
    pub dicom_instances: usize,
    pub notes: Vec<CommitNote>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub head: Option<ObjectId>,
    pub branch: Option<String>,
    pub clean: bool,
    pub changes: Vec<Change>,
    pub notes: Vec<CommitNote>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub id: ObjectId,
    pub parents: Vec<ObjectId>,
    pub author: String,
    pub time: String,
    pub message: String,
    pub kind: String,
}

/// How many files [`Repo::ls_each`] gathers before it reads their DICOM records (in parallel)
/// and hands them over.
const LS_BATCH: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct LsEntry {
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    pub id: ObjectId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dicom: Option<InstanceInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefList {
    pub current: Option<String>,
    pub refs: BTreeMap<String, ObjectId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpEntry {
    pub id: ObjectId,
    pub time: String,
    pub user: String,
    pub description: String,
    pub command: Vec<String>,
    pub head: String,
    /// Refs this operation moved: before and after (None = absent).
    pub changes: Vec<RefChange>,
}

/// One ref moved by an operation.
#[derive(Debug, Clone, Serialize)]
pub struct RefChange {
    /// "branch", "tag" or "HEAD"
    pub kind: &'static str,
    pub name: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

fn view_changes(before: Option<&View>, after: &View) -> Vec<RefChange> {
    let mut out = Vec::new();
    let empty = BTreeMap::new();
    for (kind, b, a) in [
        ("branch", before.map_or(&empty, |v| &v.branches), &after.branches),
        ("tag", before.map_or(&empty, |v| &v.tags), &after.tags),
    ] {
        let names: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
        for n in names {
            if b.get(n) != a.get(n) {
                out.push(RefChange { kind, name: n.clone(), before: b.get(n).map(|i| i.hex()), after: a.get(n).map(|i| i.hex()) });
            }
        }
    }
    let head = |v: &View| match &v.head {
        Head::Branch(b) => format!("branch {b}"),
        Head::Detached(c) => format!("detached {}", c.hex()),
    };
    let hb = before.map(head);
    let ha = head(after);
    if hb.as_deref() != Some(ha.as_str()) {
        out.push(RefChange { kind: "HEAD", name: "HEAD".into(), before: hb, after: Some(ha) });
    }
    out
}

/// A DICOM record carrying a UID, with the commits (and paths) where it first appeared.
pub type UidHit = (ObjectId, Vec<(ObjectId, String)>);

pub fn format_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| us.to_string())
}

pub(crate) fn valid_ref_name(n: &str) -> bool {
    !n.is_empty()
        && n != "HEAD"
        && !n.starts_with(['-', '.', '/'])
        && !n.ends_with(['/', '.'])
        && !n.contains("..")
        && !n.contains("//")
        && !n.contains('~')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// What a new commit records beyond what every commit does: author and agent, its times (the
/// pinned clock, if any, wins), and its parent as the first input of its activity.
pub(crate) struct CommitDraft {
    pub tree: ObjectId,
    pub parent: Option<ObjectId>,
    pub author: String,
    pub message: String,
    pub kind: String,
    pub parameters: BTreeMap<String, String>,
    /// Inputs other than the parent.
    pub inputs: Vec<ActivityRef>,
    pub outputs: Vec<ActivityRef>,
    /// When the work began (microseconds since the epoch).
    pub started_us: i64,
    pub notes: Vec<CommitNote>,
    pub catalog: Option<ObjectId>,
}

impl Repo {
    /// Create a store in `root/.cohort`.
    pub fn init(root: &Path, ctx: Context) -> Result<Repo, RepoError> {
        let dir = root.join(STORE_DIR);
        let store = Store::init(&dir, &ctx.user, ctx.now_us(), ctx.command.clone())?;
        Ok(Repo { root: root.to_path_buf(), store, ctx })
    }

    /// Open the store of the working folder `root` (found with [`Store::discover`]).
    pub fn open(root: &Path, mode: Mode, ctx: Context) -> Result<Repo, RepoError> {
        let store = Store::open(&root.join(STORE_DIR), mode)?;
        Ok(Repo { root: root.to_path_buf(), store, ctx })
    }

    fn meta(&self, description: String) -> OpMeta {
        OpMeta { user: self.ctx.user.clone(), time_us: self.ctx.now_us(), command: self.ctx.command.clone(), description }
    }

    /// Record a new view. The lookup indexes are not touched here: they catch up lazily
    /// ([`Repo::ensure_lookups`]), so a commit pays only for its objects and the stat cache.
    pub fn publish(&self, w: ObjectWriter, description: String, view: View) -> Result<ObjectId, RepoError> {
        Ok(self.store.publish(w, self.meta(description), view)?)
    }

    /// Add a commit's new entries to the lookup indexes.
    fn index_commit(&self, id: ObjectId) -> Result<(), RepoError> {
        let c = self.store.read_commit(&id)?;
        let parent_tree = self.store.tree_of(c.parents.first())?;
        let src = TreeSource { store: &self.store, extra: None };
        let changes = diff::diff_trees(&src, parent_tree, Some(c.tree))?;
        let mut intro = Vec::new();
        let mut uids = Vec::new();
        for ch in &changes {
            let Some(n) = &ch.new else { continue };
            intro.push((n.id, id, ch.path.clone()));
            if n.kind == EntryKind::Dicom {
                let info = self.store.read_dicom(&n.id)?.info;
                let mut add = |k: UidKind, v: &Option<String>| {
                    if let Some(v) = v {
                        uids.push((k, v.clone(), n.id));
                    }
                };
                add(UidKind::Patient, &info.patient_id);
                add(UidKind::Study, &info.study_uid);
                add(UidKind::Series, &info.series_uid);
                add(UidKind::Instance, &info.sop_instance_uid);
            }
        }
        let idx = self.store.index();
        idx.add_introduced(&intro)?;
        idx.add_uids(&uids)?;
        Ok(())
    }

    /// The commit HEAD points at, and the branch it is on.
    pub fn head(&self) -> Result<(Option<ObjectId>, Option<String>), RepoError> {
        let v = self.store.view()?;
        Ok(match v.head {
            Head::Branch(b) => (v.branches.get(&b).copied(), Some(b)),
            Head::Detached(id) => (Some(id), None),
        })
    }

    /// Resolve a revision: `HEAD`, a branch, a tag, a commit id or unique prefix (4+ hex
    /// digits), each optionally followed by `~N` or `^` (first parent, N times).
    pub fn resolve(&self, rev: &str) -> Result<ObjectId, RepoError> {
        let cut = rev.find(['~', '^']).unwrap_or(rev.len());
        let (base, mut suffix) = rev.split_at(cut);
        let mut id = self.resolve_base(base, rev)?;
        while !suffix.is_empty() {
            let (n, rest) = if let Some(s) = suffix.strip_prefix('^') {
                (1usize, s)
            } else {
                let s = &suffix[1..];
                let end = s.find(['~', '^']).unwrap_or(s.len());
                let n = if end == 0 { 1 } else {
                    s[..end].parse().map_err(|_| RepoError::BadRevision { rev: rev.into(), reason: format!("{:?} is not a number", &s[..end]) })?
                };
                (n, &s[end..])
            };
            for _ in 0..n {
                let c = self.store.read_commit(&id)?;
                id = *c.parents.first().ok_or_else(|| RepoError::BadRevision {
                    rev: rev.into(),
                    reason: format!("commit {} has no parent", id.short()),
                })?;
            }
            suffix = rest;
        }
        Ok(id)
    }

    fn resolve_base(&self, base: &str, rev: &str) -> Result<ObjectId, RepoError> {
        let v = self.store.view()?;
        if base == "HEAD" || base == "@" {
            return match v.head {
                Head::Branch(b) => v.branches.get(&b).copied().ok_or(RepoError::UnbornHead(b)),
                Head::Detached(id) => Ok(id),
            };
        }
        if let Some(id) = v.branches.get(base).or_else(|| v.tags.get(base)) {
            return Ok(*id);
        }
        if base.len() >= 4 && base.len() <= 64 && base.bytes().all(|b| b.is_ascii_hexdigit()) {
            let lower = base.to_ascii_lowercase();
            let commits: Vec<ObjectId> = self
                .store
                .find_prefix(&lower)
                .into_iter()
                .filter(|id| self.store.read_commit(id).is_ok())
                .collect();
            return match commits.len() {
                1 => Ok(commits[0]),
                0 => Err(RepoError::UnknownRevision(rev.into())),
                n => Err(RepoError::AmbiguousRevision { rev: rev.into(), count: n }),
            };
        }
        Err(RepoError::UnknownRevision(rev.into()))
    }

    /// Snapshot the working tree and commit it on HEAD.
    pub fn commit(&self, opts: &CommitOptions, progress: &dyn Progress) -> Result<CommitSummary, RepoError> {
        let started = chrono::Utc::now().timestamp_micros();
        let (parent, branch) = self.head()?;
        let parent_tree = self.store.tree_of(parent.as_ref())?;
        let cache = self.store.index().load_stat()?;
        let writer = self.store.writer()?;
        let mut snap = worktree::snapshot(&self.root, &self.store, &cache, Some(&writer), progress)?;
        // Files were hashed either way: keep what we learned even if nothing is committed.
        self.store.index().update_stat(&snap.stat_set, &snap.stat_remove)?;
        let mut w = writer;
        let src = TreeSource { store: &self.store, extra: Some(&snap.trees) };
        let mut changes = if parent_tree == Some(snap.root) { Vec::new() } else { diff::diff_trees(&src, parent_tree, Some(snap.root))? };
        let (mut tree, mut size, mut files) = (snap.root, snap.size, snap.files);
        if !opts.paths.is_empty() {
            // Only the named paths: HEAD's files elsewhere, the working tree's there.
            let head_src = TreeSource { store: &self.store, extra: None };
            if let Err(e) = pathsel::in_either(&opts.paths, "HEAD", (&head_src, parent_tree), (&src, Some(snap.root))) {
                self.store.index().flush()?;
                return Err(e.into());
            }
            let within = |path: &str| pathsel::is_within_any(path, &opts.paths);
            changes.retain(|c| within(&c.path));
            snap.notes.retain(|n| within(&n.path));
            let mut all = Vec::new();
            if let Some(t) = parent_tree {
                diff::for_each_file(&head_src, &t, "", &mut |path, e| -> Result<(), StoreError> {
                    if !within(&path) {
                        all.push((path, e.kind, e.id, e.size));
                    }
                    Ok(())
                })?;
            }
            diff::for_each_file(&src, &snap.root, "", &mut |path, e| -> Result<(), StoreError> {
                if within(&path) {
                    all.push((path, e.kind, e.id, e.size));
                }
                Ok(())
            })?;
            all.sort_by(|a, b| a.0.cmp(&b.0));
            files = all.len() as u64;
            (tree, size) = crate::treebuild::build(&self.store, &mut w, &all)?;
        }
        // (A first commit of an empty folder is a commit: there was no tree before.)
        let nothing = if opts.paths.is_empty() { parent_tree == Some(snap.root) } else { changes.is_empty() };
        if nothing && !opts.allow_empty {
            self.store.index().flush()?;
            return Err(RepoError::NothingToCommit);
        }
        let commit = self.draft_commit(CommitDraft {
            tree,
            parent,
            author: opts.author.clone().unwrap_or_else(|| self.ctx.user.clone()),
            message: opts.message.clone(),
            kind: if opts.kind.is_empty() { "commit".into() } else { opts.kind.clone() },
            parameters: opts.parameters.clone(),
            inputs: opts.inputs.clone(),
            outputs: std::iter::once(ActivityRef { role: "tree".into(), value: tree.hex() }).chain(opts.outputs.iter().cloned()).collect(),
            started_us: started,
            notes: snap.notes.clone(),
            // Annotations and splits stay with the dataset when its files change.
            catalog: match parent {
                Some(p) => self.store.read_commit(&p)?.catalog,
                None => None,
            },
        });
        let commit = match &opts.sign {
            Some(key) => crate::sign::sign_commit(commit, key),
            None => commit,
        };
        let id = w.put(&commit)?;
        let (new_objects, pack_bytes) = (w.len() as u64, w.bytes());
        let mut view = self.store.view()?;
        match &view.head {
            Head::Branch(b) => {
                view.branches.insert(b.clone(), id);
            }
            Head::Detached(_) => view.head = Head::Detached(id),
        }
        let first_line = opts.message.lines().next().unwrap_or("").to_string();
        self.publish(w, format!("commit {}: {}", id.short(), first_line), view)?;
        let count = |s: Status| changes.iter().filter(|c| c.status == s).count();
        Ok(CommitSummary {
            id,
            tree,
            parent,
            branch,
            files,
            files_read: snap.files_read,
            bytes_read: snap.bytes_read,
            logical_bytes: size,
            new_objects,
            pack_bytes,
            added: count(Status::Added),
            removed: count(Status::Removed),
            modified: count(Status::Modified),
            dicom_instances: snap.dicom_instances,
            notes: snap.notes,
        })
    }

    /// The commit a draft describes (unsigned; see [`crate::sign::sign_commit`]).
    pub(crate) fn draft_commit(&self, d: CommitDraft) -> Commit {
        let mut inputs = d.inputs;
        if let Some(p) = d.parent {
            inputs.insert(0, ActivityRef { role: "parent".into(), value: p.hex() });
        }
        let now = self.ctx.now_us();
        Commit {
            tree: d.tree,
            parents: d.parent.into_iter().collect(),
            author: d.author.clone(),
            time_us: now,
            message: d.message,
            activity: Activity {
                kind: d.kind,
                agent: Agent { user: d.author, tool: TOOL.into(), tool_version: VERSION.into() },
                parameters: d.parameters,
                inputs,
                outputs: d.outputs,
                started_us: self.ctx.time_us.unwrap_or(d.started_us),
                ended_us: now,
            },
            notes: d.notes,
            catalog: d.catalog,
            signature: None,
        }
    }

    /// The commit a catalog change goes on top of, and where the new commit is recorded:
    /// the branch `rev` names, or HEAD when `rev` is HEAD's commit.
    pub fn catalog_base(&self, rev: &str) -> Result<(ObjectId, Commit), RepoError> {
        let id = self.resolve(rev)?;
        let v = self.store.view()?;
        let is_branch = v.branches.get(rev) == Some(&id);
        let (head, _) = self.head()?;
        if !is_branch && head != Some(id) {
            return Err(RepoError::NotATip { rev: rev.into() });
        }
        let c = self.store.read_commit(&id)?;
        Ok((id, c))
    }

    /// Commit `catalog` on top of `rev` (same tree) and move the branch (see [`Repo::catalog_base`]).
    pub fn commit_catalog(&self, rev: &str, mut w: ObjectWriter, catalog: &crate::catalog::Catalog, change: CatalogChange) -> Result<ObjectId, RepoError> {
        let (base, parent) = self.catalog_base(rev)?;
        let cat_id = if catalog.is_empty() { None } else { Some(w.put(catalog)?) };
        let mut outputs = change.outputs;
        if let Some(k) = cat_id {
            outputs.insert(0, ActivityRef { role: crate::catalog::CATALOG_ROLE.into(), value: k.hex() });
        }
        let commit = self.draft_commit(CommitDraft {
            tree: parent.tree,
            parent: Some(base),
            author: self.ctx.user.clone(),
            message: change.message.clone(),
            kind: change.kind.clone(),
            parameters: change.parameters,
            inputs: change.inputs,
            outputs,
            started_us: change.started_us,
            notes: vec![],
            catalog: cat_id,
        });
        let id = w.put(&commit)?;
        let mut view = self.store.view()?;
        if view.branches.get(rev) == Some(&base) {
            view.branches.insert(rev.to_string(), id);
        } else {
            match &view.head {
                Head::Branch(b) => {
                    view.branches.insert(b.clone(), id);
                }
                Head::Detached(_) => view.head = Head::Detached(id),
            }
        }
        let first_line = change.message.lines().next().unwrap_or("").to_string();
        self.publish(w, format!("{} {}: {}", change.kind, id.short(), first_line), view)?;
        Ok(id)
    }

    /// Compare the working tree with HEAD (refreshing the stat cache on the way).
    pub fn status(&self, progress: &dyn Progress) -> Result<(StatusReport, worktree::Snapshot), RepoError> {
        let (head, branch) = self.head()?;
        let head_tree = self.store.tree_of(head.as_ref())?;
        let cache = self.store.index().load_stat()?;
        let snap = worktree::snapshot(&self.root, &self.store, &cache, None, progress)?;
        if !snap.stat_set.is_empty() || !snap.stat_remove.is_empty() {
            self.store.index().update_stat(&snap.stat_set, &snap.stat_remove)?;
            self.store.index().flush()?;
        }
        let changes = if head_tree == Some(snap.root) {
            vec![]
        } else {
            let src = TreeSource { store: &self.store, extra: Some(&snap.trees) };
            diff::diff_trees(&src, head_tree, Some(snap.root))?
        };
        let rep = StatusReport { head, branch, clean: changes.is_empty(), changes, notes: snap.notes.clone() };
        Ok((rep, snap))
    }

    /// Commits reachable from `rev`, newest first; with `paths`, only those that changed
    /// something at or under them: against their parent, or for a merge against each parent
    /// (a merge that took one side's version as it was is left out; that side's commit shows).
    pub fn log(&self, rev: &str, limit: Option<usize>, paths: &[String]) -> Result<Vec<LogEntry>, RepoError> {
        let src = TreeSource { store: &self.store, extra: None };
        let mut seen_at: std::collections::HashMap<ObjectId, Vec<Option<ObjectId>>> = std::collections::HashMap::new();
        // What a commit has at the paths: an entry's id names everything under it.
        let mut at = |id: ObjectId, tree: ObjectId| -> Result<Vec<Option<ObjectId>>, RepoError> {
            if let Some(v) = seen_at.get(&id) {
                return Ok(v.clone());
            }
            let v = paths.iter().map(|p| Ok(pathsel::entry_at(&src, tree, p)?.map(|e| e.id))).collect::<Result<Vec<_>, StoreError>>()?;
            seen_at.insert(id, v.clone());
            Ok(v)
        };
        let mut changed = |id: ObjectId, c: &Commit| -> Result<bool, RepoError> {
            if paths.is_empty() {
                return Ok(true);
            }
            let here = at(id, c.tree)?;
            if c.parents.is_empty() {
                return Ok(here.iter().any(Option::is_some));
            }
            for p in &c.parents {
                let pt = self.store.read_commit(p)?.tree;
                if at(*p, pt)? == here {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        let start = self.resolve(rev)?;
        let mut heap = BinaryHeap::new();
        let mut seen = HashSet::new();
        let mut commits = std::collections::HashMap::new();
        commits.insert(start, self.store.read_commit(&start)?);
        heap.push((commits[&start].time_us, start));
        seen.insert(start);
        let mut out = Vec::new();
        while let Some((_, id)) = heap.pop() {
            let c = commits.remove(&id).expect("queued commits are loaded");
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            for p in &c.parents {
                if seen.insert(*p) {
                    let pc = self.store.read_commit(p)?;
                    heap.push((pc.time_us, *p));
                    commits.insert(*p, pc);
                }
            }
            if !changed(id, &c)? {
                continue;
            }
            out.push(LogEntry {
                id,
                parents: c.parents.clone(),
                author: c.author.clone(),
                time: format_time(c.time_us),
                message: c.message.clone(),
                kind: c.activity.kind.clone(),
            });
        }
        Ok(out)
    }

    /// Every file of a revision, with DICOM identifiers.
    pub fn ls(&self, rev: &str) -> Result<Vec<LsEntry>, RepoError> {
        let mut out = Vec::new();
        self.ls_each(rev, &mut |e| out.push(e))?;
        Ok(out)
    }

    /// Every file of a revision, with DICOM identifiers, handed to `each` in path order. Only
    /// a batch of entries is held at a time (their DICOM records read in parallel), so memory
    /// stays flat whatever the number of files.
    pub fn ls_each(&self, rev: &str, each: &mut dyn FnMut(LsEntry)) -> Result<(), RepoError> {
        self.ls_paths(rev, &[], each)
    }

    /// [`Repo::ls_each`], only the files at and under `paths` (every file when empty), path
    /// by path as given. A path `rev` lacks is an error.
    pub fn ls_paths(&self, rev: &str, paths: &[String], each: &mut dyn FnMut(LsEntry)) -> Result<(), RepoError> {
        let c = self.store.read_commit(&self.resolve(rev)?)?;
        let src = TreeSource { store: &self.store, extra: None };
        let mut batch = Vec::new();
        pathsel::for_each_file_under(&src, c.tree, paths, rev, &mut |path, e| -> Result<(), RepoError> {
            batch.push((path, e));
            if batch.len() >= LS_BATCH {
                self.ls_flush(&mut batch, each)?;
            }
            Ok(())
        })?;
        Ok(self.ls_flush(&mut batch, each)?)
    }

    /// Read the DICOM records of a batch of files (in parallel) and hand the entries over.
    fn ls_flush(&self, batch: &mut Vec<(String, crate::object::TreeEntry)>, each: &mut dyn FnMut(LsEntry)) -> Result<(), StoreError> {
        let entries: Result<Vec<LsEntry>, StoreError> = batch
            .par_drain(..)
            .map(|(path, e)| {
                let dicom = if e.kind == EntryKind::Dicom { Some(self.store.read_dicom(&e.id)?.info) } else { None };
                Ok(LsEntry { path, kind: e.kind, size: e.size, id: e.id, dicom })
            })
            .collect();
        entries?.into_iter().for_each(each);
        Ok(())
    }

    /// Differences between two revisions, with the DICOM view; with `patch`, also the changed
    /// lines of modified text files.
    /// With `paths`, only the files at and under them (and no annotation changes, which are
    /// not at paths).
    pub fn diff(&self, a: &str, b: &str, patch: bool, paths: &[String]) -> Result<DiffReport, RepoError> {
        let (ia, ib) = (self.resolve(a)?, self.resolve(b)?);
        let (ca, cb) = (self.store.read_commit(&ia)?, self.store.read_commit(&ib)?);
        let src = TreeSource { store: &self.store, extra: None };
        let mut files = Vec::new();
        if paths.is_empty() {
            files = diff::diff_trees(&src, Some(ca.tree), Some(cb.tree))?;
        } else {
            // Each path's subtrees are compared, so the cost follows what is there.
            for p in paths {
                let (ea, eb) = (pathsel::entry_at(&src, ca.tree, p)?, pathsel::entry_at(&src, cb.tree, p)?);
                files.extend(diff::diff_entries(&src, p, ea.as_ref(), eb.as_ref())?);
            }
            // Paths named twice (a folder and a file in it) give their changes once.
            files.sort_by(|x, y| x.path.cmp(&y.path));
            files.dedup_by(|x, y| x.path == y.path && x.status == y.status);
        }
        let dicom = diff::dicom_view(&(&self.store).into(), &files)?;
        let annotations = if ca.catalog == cb.catalog || !paths.is_empty() {
            Default::default()
        } else {
            crate::annotate::diff_catalogs(&self.store, &self.store.catalog_of(&ca)?, &self.store.catalog_of(&cb)?)?
        };
        let count = |s: Status| files.iter().filter(|c| c.status == s).count();
        Ok(DiffReport {
            from: Some(ia),
            to: Some(ib),
            added: count(Status::Added),
            removed: count(Status::Removed),
            modified: count(Status::Modified),
            text: if patch { Some(diff::text_patches(&(&self.store).into(), &files)?) } else { None },
            files,
            dicom,
            annotations,
        })
    }

    /// Differences between HEAD and the working tree (at and under `paths`, all when empty),
    /// with the DICOM view: a modified instance's attributes are read from its file. With
    /// `patch`, the changed lines of modified text files too.
    pub fn diff_worktree(&self, patch: bool, paths: &[String], progress: &dyn Progress) -> Result<DiffReport, RepoError> {
        let (st, _) = self.status(progress)?;
        let mut files = st.changes;
        if !paths.is_empty() {
            files.retain(|c| pathsel::is_within_any(&c.path, paths));
        }
        // The objects of the working tree's side that a diff reads (not its pixel data).
        let wanted = |c: &&Change| {
            c.new.as_ref().is_some_and(|n| match n.kind {
                EntryKind::Dicom => true,
                EntryKind::File | EntryKind::Executable => patch && c.old.is_some() && n.size <= diff::MAX_PATCH_TEXT,
                _ => false,
            })
        };
        type Objects = Vec<(ObjectId, Vec<u8>)>;
        let objects: Vec<Result<Objects, RepoError>> = files
            .par_iter()
            .filter(wanted)
            .map(|c| {
                let path = self.root.join(&c.path);
                let bytes = fs::read(&path).map_err(|source| RepoError::Io { path: path.clone(), source })?;
                let (_, id, objects) = worktree::file_objects(&bytes, &c.path);
                if c.new.as_ref().map(|n| n.id) != Some(id) {
                    return Err(WorktreeError::Changed { path }.into());
                }
                Ok(objects)
            })
            .collect();
        let mut extra = std::collections::HashMap::new();
        for o in objects {
            extra.extend(o?);
        }
        let src = diff::ObjectSource { store: &self.store, extra: Some(&extra) };
        let count = |s: Status| files.iter().filter(|c| c.status == s).count();
        Ok(DiffReport {
            from: st.head,
            to: None,
            added: count(Status::Added),
            removed: count(Status::Removed),
            modified: count(Status::Modified),
            dicom: diff::dicom_view(&src, &files)?,
            text: if patch { Some(diff::text_patches(&src, &files)?) } else { None },
            files,
            annotations: Default::default(),
        })
    }

    /// Set the working tree to `rev`. Refuses to lose uncommitted changes unless `force`.
    pub fn checkout(&self, rev: &str, force: bool, progress: &dyn Progress) -> Result<ObjectId, RepoError> {
        let target = self.resolve(rev)?;
        let target_tree = self.store.read_commit(&target)?.tree;
        let (st, snap) = self.status(progress)?;
        if !st.clean && !force {
            return Err(RepoError::Dirty { count: st.changes.len(), example: st.changes[0].path.clone() });
        }
        self.write_worktree(&snap, target_tree, progress)?;
        let mut view = self.store.view()?;
        view.head = if view.branches.contains_key(rev) { Head::Branch(rev.to_string()) } else { Head::Detached(target) };
        self.publish(self.store.writer()?, format!("checkout {rev} ({})", target.short()), view)?;
        Ok(target)
    }

    /// Make the working tree (as `snap` found it) hold tree `target_tree`: write what differs,
    /// remove what it lacks. Refs are left to the caller.
    pub(crate) fn write_worktree(&self, snap: &worktree::Snapshot, target_tree: ObjectId, progress: &dyn Progress) -> Result<(), RepoError> {
        self.write_worktree_within(snap, target_tree, None, progress).map(|_| ())
    }

    /// [`Repo::write_worktree`], only at and under `within` (every path when None); returns
    /// the paths it changed.
    fn write_worktree_within(&self, snap: &worktree::Snapshot, target_tree: ObjectId, within: Option<&[String]>, progress: &dyn Progress) -> Result<Vec<Change>, RepoError> {
        let src = TreeSource { store: &self.store, extra: Some(&snap.trees) };
        let mut changes = diff::diff_trees(&src, Some(snap.root), Some(target_tree))?;
        if let Some(within) = within {
            changes.retain(|c| pathsel::is_within_any(&c.path, within));
        }
        let mut to_write = Vec::new();
        let mut touched = Vec::new();
        // What the tree had there goes first (unlinked, never truncated in place: the file
        // may be a hard link shared with another copy), in parallel; a folder left empty by a
        // path that goes away is removed too.
        let old: Vec<&diff::Change> = changes.iter().filter(|c| c.old.is_some()).collect();
        old.par_iter().try_for_each(|c| remove_path(&self.root.join(&c.path)))?;
        for c in old.iter().filter(|c| c.new.is_none()) {
            prune_empty_parents(&self.root, &self.root.join(&c.path));
        }
        for c in &changes {
            touched.push(c.path.clone());
            if let Some(n) = &c.new {
                let name = c.path.rsplit('/').next().unwrap_or(&c.path).to_string();
                to_write.push((c.path.clone(), crate::object::TreeEntry { name, kind: n.kind, id: n.id, size: n.size }));
            }
        }
        // A path that was a folder and becomes a file (or the reverse) is cleared first. Only
        // a new path can meet one (a modified path was a file in folders before); each
        // folder is looked at once.
        let mut folders: HashSet<PathBuf> = HashSet::new();
        for c in changes.iter().filter(|c| c.old.is_none() && c.new.is_some()) {
            let target = self.root.join(&c.path);
            let mut cur = self.root.clone();
            for comp in c.path.split('/') {
                cur.push(comp);
                let last = cur == target;
                if !last && !folders.insert(cur.clone()) {
                    continue;
                }
                if let Ok(m) = fs::symlink_metadata(&cur) {
                    if (last && m.is_dir()) || (!last && !m.is_dir()) {
                        remove_path(&cur)?;
                    }
                }
            }
        }
        export::write_files(&self.store, &self.root, &to_write, LinkMode::Copy, progress)?;
        self.store.index().update_stat(&[], &touched)?;
        Ok(changes)
    }

    /// Set the files at and under `paths` (paths of the working tree; "" is all of it) to
    /// what `rev` has there: files that differ are written, files `rev` lacks there are
    /// removed. HEAD and every other path stay as they are. A path that neither `rev` nor the
    /// working tree has is an error (a typing mistake, most likely), before anything changes.
    pub fn restore(&self, rev: &str, paths: &[String], progress: &dyn Progress) -> Result<RestoreSummary, RepoError> {
        let commit = self.resolve(rev)?;
        let tree = self.store.read_commit(&commit)?.tree;
        let (_, snap) = self.status(progress)?;
        let here = TreeSource { store: &self.store, extra: Some(&snap.trees) };
        let there = TreeSource { store: &self.store, extra: None };
        pathsel::in_either(paths, rev, (&there, Some(tree)), (&here, Some(snap.root)))?;
        let changes = self.write_worktree_within(&snap, tree, Some(paths), progress)?;
        let removed = changes.iter().filter(|c| c.new.is_none()).map(|c| c.path.clone()).collect();
        let written = changes.into_iter().filter(|c| c.new.is_some()).map(|c| c.path).collect();
        Ok(RestoreSummary { commit, written, removed })
    }

    /// Write the exact bytes of the file at `path` of `rev` to `w` (a symbolic link: its
    /// target); returns the file's entry.
    pub fn cat(&self, rev: &str, path: &str, w: &mut dyn std::io::Write, sink: &Path) -> Result<crate::object::TreeEntry, RepoError> {
        let tree = self.store.read_commit(&self.resolve(rev)?)?.tree;
        let src = TreeSource { store: &self.store, extra: None };
        let e = match pathsel::entry_at(&src, tree, path)? {
            None => return Err(PathSelError::NotInRevision { path: path.to_string(), rev: rev.to_string() }.into()),
            Some(e) if e.kind == EntryKind::Tree => return Err(PathSelError::IsFolder { path: path.to_string(), rev: rev.to_string() }.into()),
            Some(e) => e,
        };
        export::write_entry_bytes(&self.store, e.kind, &e.id, w, sink)?;
        Ok(e)
    }

    /// Export a revision's files into a new folder.
    pub fn export(&self, rev: &str, out: &Path, mode: LinkMode, progress: &dyn Progress) -> Result<ExportSummary, RepoError> {
        let c = self.store.read_commit(&self.resolve(rev)?)?;
        Ok(export::export_tree(&self.store, c.tree, out, mode, progress)?)
    }

    /// Export the files of `rev` at and under `paths` into a new folder, at their paths. A
    /// path `rev` lacks is an error, before anything is written.
    pub fn export_paths(&self, rev: &str, paths: &[String], out: &Path, mode: LinkMode, progress: &dyn Progress) -> Result<ExportSummary, RepoError> {
        let c = self.store.read_commit(&self.resolve(rev)?)?;
        let files = pathsel::files_under(&TreeSource { store: &self.store, extra: None }, c.tree, paths, rev)?;
        Ok(export::export_files(&self.store, &files, out, mode, progress)?)
    }

    pub fn branches(&self) -> Result<RefList, RepoError> {
        let v = self.store.view()?;
        let current = match v.head { Head::Branch(b) => Some(b), Head::Detached(_) => None };
        Ok(RefList { current, refs: v.branches })
    }

    pub fn tags(&self) -> Result<RefList, RepoError> {
        Ok(RefList { current: None, refs: self.store.view()?.tags })
    }

    pub fn create_ref(&self, tag: bool, name: &str, rev: &str) -> Result<ObjectId, RepoError> {
        let what = if tag { "tag" } else { "branch" };
        if !valid_ref_name(name) {
            return Err(RepoError::BadRefName { what, name: name.into() });
        }
        let id = self.resolve(rev)?;
        let mut view = self.store.view()?;
        let map = if tag { &mut view.tags } else { &mut view.branches };
        if map.contains_key(name) {
            return Err(RepoError::RefExists { what, name: name.into() });
        }
        map.insert(name.to_string(), id);
        self.publish(self.store.writer()?, format!("create {what} {name} at {}", id.short()), view)?;
        Ok(id)
    }

    pub fn delete_ref(&self, tag: bool, name: &str) -> Result<ObjectId, RepoError> {
        let what = if tag { "tag" } else { "branch" };
        let mut view = self.store.view()?;
        if !tag && view.head == Head::Branch(name.to_string()) {
            return Err(RepoError::DeleteCurrentBranch(name.into()));
        }
        let map = if tag { &mut view.tags } else { &mut view.branches };
        let id = map.remove(name).ok_or_else(|| RepoError::NoSuchRef { what, name: name.into() })?;
        self.publish(self.store.writer()?, format!("delete {what} {name} (was {})", id.short()), view)?;
        Ok(id)
    }

    /// The operation log, newest first.
    pub fn op_log(&self, limit: Option<usize>) -> Result<Vec<OpEntry>, RepoError> {
        let mut out = Vec::new();
        let mut cur = Some(self.store.op_head()?);
        while let Some(id) = cur {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let op: Operation = self.store.read_op(&id)?;
            let parent_view = match op.parents.first() {
                Some(p) => Some(self.store.read_op(p)?.view),
                None => None,
            };
            out.push(OpEntry {
                changes: view_changes(parent_view.as_ref(), &op.view),
                id,
                time: format_time(op.time_us),
                user: op.user.clone(),
                description: op.description.clone(),
                command: op.command.clone(),
                head: match &op.view.head {
                    Head::Branch(b) => match op.view.branches.get(b) {
                        Some(c) => format!("{b} {}", c.short()),
                        None => format!("{b} (unborn)"),
                    },
                    Head::Detached(c) => format!("detached {}", c.short()),
                },
            });
            cur = op.parents.first().copied();
        }
        Ok(out)
    }

    /// Undo the last operation: record a new operation whose view is the one before it.
    pub fn op_undo(&self) -> Result<OpEntry, RepoError> {
        let (id, op) = self.store.current_op()?;
        let parent = *op.parents.first().ok_or(RepoError::NothingToUndo)?;
        let prev = self.store.read_op(&parent)?;
        self.publish(self.store.writer()?, format!("undo operation {}: {}", id.short(), op.description), prev.view)?;
        Ok(self.op_log(Some(1))?.remove(0))
    }

    /// Rebuild the lookup indexes from the objects (and, with `stat`, drop the stat cache too).
    pub fn reindex(&self, stat: bool) -> Result<usize, RepoError> {
        let idx = self.store.index();
        idx.clear_lookups()?;
        if stat {
            idx.clear_stat()?;
        }
        self.ensure_lookups()
    }

    /// Bring the lookup indexes (UID → DICOM records, entry → commits) up to the current
    /// operation: every commit reachable from the refs that is not indexed yet is indexed.
    /// Returns how many commits were added.
    pub fn ensure_lookups(&self) -> Result<usize, RepoError> {
        let idx = self.store.index();
        let head = self.store.op_head()?;
        if idx.applied_op()? == Some(head) {
            return Ok(0);
        }
        let mut seen = HashSet::new();
        let mut stack: Vec<ObjectId> = self.ref_roots()?;
        let mut added = 0;
        while let Some(c) = stack.pop() {
            if !seen.insert(c) || idx.is_indexed(c)? {
                continue;
            }
            let commit = self.store.read_commit(&c)?;
            stack.extend(commit.parents.iter().copied());
            self.index_commit(c)?;
            idx.mark_indexed(c)?;
            added += 1;
        }
        idx.set_applied_op(head)?;
        idx.flush()?;
        Ok(added)
    }

    /// DICOM records carrying a UID, with the commits (and paths) where each first appeared.
    pub fn find_uid(&self, kind: UidKind, uid: &str) -> Result<Vec<UidHit>, RepoError> {
        self.ensure_lookups()?;
        let idx = self.store.index();
        let mut out = Vec::new();
        for rec in idx.records_with_uid(kind, uid)? {
            out.push((rec, idx.introduced_in(rec)?));
        }
        Ok(out)
    }

    /// Commits named by the current view (HEAD, branches, tags).
    pub fn ref_roots(&self) -> Result<Vec<ObjectId>, RepoError> {
        let v = self.store.view()?;
        let mut roots: Vec<ObjectId> = v.branches.values().chain(v.tags.values()).copied().collect();
        if let Head::Detached(id) = v.head {
            roots.push(id);
        }
        roots.sort();
        roots.dedup();
        Ok(roots)
    }
}

fn remove_path(p: &Path) -> Result<(), RepoError> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(|source| RepoError::Io { path: p.to_path_buf(), source })
}

fn prune_empty_parents(root: &Path, p: &Path) {
    let mut cur = p.parent();
    while let Some(d) = cur {
        if d == root || fs::remove_dir(d).is_err() {
            break;
        }
        cur = d.parent();
    }
}
