//! Merging a revision into the current branch: a fast-forward when one side contains the
//! other, else a three-way merge against the merge base, at the level a curator works at:
//! - files: a path changed on one side only takes that side's version; a path changed on
//!   both sides to the same content is kept; changed differently, it is a conflict, except
//!   for a DICOM instance whose two sides changed different attributes (or one the pixel
//!   data; inside a sequence, item by item): it is merged attribute by attribute
//!   ([`dicom::merge_headers`]), and for
//!   a text file whose two sides changed different lines: it is merged line by line (diff3),
//!   or, a CSV or TSV table, row by row keyed by its first column ([`crate::tablemerge`]);
//! - the catalog, entry by entry: each (task, reader) annotation set and each split is
//!   merged like a file, so two readers annotating on two branches merge cleanly.
//!
//! A merge with conflicts changes nothing and names every conflicting path and catalog
//! entry, unless the caller settled them ([`Resolve`]): a side for a conflict by its name, for
//! the conflicts under a folder (a patient, a study), or for all ([`Prefer`]). Each settled
//! conflict takes its side's version (for a DICOM instance that conflicts in some attributes
//! or its pixel data, of those only, and for a text file of the lines both changed only: the
//! other changes of both sides stay, as git's `-X ours|theirs` does), and the merge
//! commit notes each one and how it was settled. The merge
//! commit has two parents (ours, then theirs) and an activity of kind
//! `merge` whose inputs name both.
//!
//! A criss-cross history (two curators who merged each other's branch) has several best
//! common ancestors. Their merge, made in memory, is the base (as git's recursive strategy
//! does): where they disagree the base holds neither version, so the two sides conflict
//! there unless they agree, and no side's version wins for lack of a base to compare with.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::diff::{self, TreeSource};
use crate::id::ObjectId;
use crate::dicom;
use crate::object::{ActivityRef, Commit, CommitNote, DicomFile, EntryKind, Head, TreeEntry};
use crate::progress::Progress;
use crate::repo::{CommitDraft, Repo, RepoError};
use crate::store::StoreError;
use crate::threeway::{pick, Pick};
use crate::treebuild::TreeBuildError;

/// Errors of a merge.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("HEAD is detached: check out the branch to merge into")]
    Detached,
    #[error("the working tree has {count} uncommitted change(s) (e.g. {example}): commit them, or discard them with checkout --force, before merging")]
    Dirty { count: usize, example: String },
    #[error("{ours} and {theirs} share no history: nothing to merge against")]
    Unrelated { ours: String, theirs: String },
    #[error("{ours} and {theirs}: a criss-cross history nested more than {MAX_VIRTUAL_DEPTH} deep; merge some of their merge bases first")]
    CrissCross { ours: String, theirs: String },
    #[error("merging {theirs} into {branch}: {} conflict(s), nothing changed: {} (settle them with --take NAME=ours|theirs, NAME a conflict or a folder, or all with --prefer)", .paths.len() + .catalog.len(), conflict_list(.paths, .catalog, .why))]
    Conflicts {
        branch: String,
        theirs: String,
        paths: Vec<String>,
        catalog: Vec<String>,
        /// For a conflicting DICOM instance: what both sides changed, or why it was not merged
        /// attribute by attribute.
        why: BTreeMap<String, String>,
    },
    #[error("--take {pattern}: merging {theirs} has no conflict of that name or in that folder, nothing changed (conflicts: {})", conflict_list(.conflicts, &[], &BTreeMap::new()))]
    TakeUnused { pattern: String, theirs: String, conflicts: Vec<String> },
    #[error("merging {theirs}: {source}")]
    Tree { theirs: String, source: TreeBuildError },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which side a conflict takes, when the caller chose one (`cohort merge --prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// Keep the current branch's version.
    Ours,
    /// Take the merged revision's version.
    Theirs,
}

impl Prefer {
    pub fn name(self) -> &'static str {
        match self {
            Prefer::Ours => "ours",
            Prefer::Theirs => "theirs",
        }
    }
}

/// How a merge settles conflicts: a side for conflicts by name or folder, else one side for
/// all (`cohort merge --take NAME=SIDE ... --prefer SIDE`).
#[derive(Debug, Clone, Default)]
pub struct Resolve {
    /// One side for every conflict no `take` settles.
    pub prefer: Option<Prefer>,
    /// (name, side): a conflict's name as the merge lists it (a path, `annotations
    /// TASK/READER`, `split NAME`), or a folder of them (`P0001/`, `P0001`, `annotations
    /// TASK`). The most specific name that matches a conflict settles it.
    pub take: Vec<(String, Prefer)>,
}

impl Resolve {
    /// Every conflict takes `p`.
    pub fn all(p: Prefer) -> Resolve {
        Resolve { prefer: Some(p), take: Vec::new() }
    }

    /// The `take` that settles `conflict`: an exact name first, else the longest folder.
    fn take_for(&self, conflict: &str) -> Option<&(String, Prefer)> {
        let matches = |name: &str| {
            let folder = name.trim_end_matches('/');
            conflict == name || conflict.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/'))
        };
        self.take.iter().filter(|(n, _)| matches(n)).max_by_key(|(n, _)| (conflict == n.as_str(), n.trim_end_matches('/').len()))
    }

    /// The side `conflict` takes and what settled it (`--take NAME=SIDE`, `--prefer SIDE`).
    fn decide(&self, conflict: &str) -> Option<(Prefer, String)> {
        match self.take_for(conflict) {
            Some((n, p)) => Some((*p, format!("--take {n}={}", p.name()))),
            None => self.prefer.map(|p| (p, format!("--prefer {}", p.name()))),
        }
    }
}

/// A conflict the merge settled.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// Its name: a path, `annotations TASK/READER` or `split NAME`.
    pub conflict: String,
    pub side: Prefer,
    /// What settled it: `--take NAME=SIDE` or `--prefer SIDE`.
    pub by: String,
}

/// A file's kind, id and size.
type Entry = (EntryKind, ObjectId, u64);

/// How deep merges of merge bases may nest (each level a criss-cross in the history of the
/// bases of the level above).
const MAX_VIRTUAL_DEPTH: usize = 8;

/// A state to merge: every file and the catalog.
#[derive(Clone, Default)]
struct State {
    files: BTreeMap<String, Entry>,
    catalog: Catalog,
}

/// The id that stands, in a base made by merging merge bases, for a file or catalog entry on
/// which they disagreed: the hash of a text, so no file or entry has it.
fn disagreed() -> ObjectId {
    ObjectId::of(b"cohort merge: the merge bases disagree here")
}

fn state_of(repo: &Repo, commit: ObjectId) -> Result<State, MergeError> {
    let c = repo.store.read_commit(&commit)?;
    let mut listed = Vec::new();
    diff::list_files(&TreeSource { store: &repo.store, extra: None }, &c.tree, "", &mut listed)?;
    let files = listed.into_iter().map(|(p, e)| (p, (e.kind, e.id, e.size))).collect();
    let catalog = c.catalog.map(|k| repo.store.read_catalog(&k)).transpose()?.unwrap_or_default();
    Ok(State { files, catalog })
}

/// Three-way merge of one map: a key changed on one side takes that side; changed on both to
/// different values, it becomes `conflict`.
fn merge_map<K: Ord + Clone, V: Clone + PartialEq>(b: &BTreeMap<K, V>, o: &BTreeMap<K, V>, t: &BTreeMap<K, V>, conflict: impl Fn(&V) -> V) -> BTreeMap<K, V> {
    let keys: BTreeSet<&K> = b.keys().chain(o.keys()).chain(t.keys()).collect();
    let mut out = BTreeMap::new();
    for k in keys {
        let (vb, vo, vt) = (b.get(k), o.get(k), t.get(k));
        let v = match pick(vb, vo, vt) {
            Pick::Unchanged | Pick::Both | Pick::Ours => vo.cloned(),
            Pick::Theirs => vt.cloned(),
            Pick::Conflict => vo.or(vt).map(&conflict),
        };
        if let Some(v) = v {
            out.insert(k.clone(), v);
        }
    }
    out
}

/// The base for merging `a` and `b`, whose merge bases are `bases`: the one base's state, or
/// the merge of the bases (recursively), with [`disagreed`] where those conflict; empty when
/// there is no base.
fn base_state(repo: &Repo, a: ObjectId, b: ObjectId, bases: &[ObjectId], depth: usize) -> Result<State, MergeError> {
    let Some((&first, rest)) = bases.split_first() else { return Ok(State::default()) };
    let mut state = state_of(repo, first)?;
    for &next in rest {
        if depth >= MAX_VIRTUAL_DEPTH {
            return Err(MergeError::CrissCross { ours: a.short(), theirs: b.short() });
        }
        let under = base_state(repo, first, next, &merge_bases(repo, first, next)?, depth + 1)?;
        let other = state_of(repo, next)?;
        let d = disagreed();
        state = State {
            files: merge_map(&under.files, &state.files, &other.files, |e: &Entry| (e.0, d, 0)),
            catalog: Catalog {
                annotations: merge_map(&under.catalog.annotations, &state.catalog.annotations, &other.catalog.annotations, |_| d),
                splits: merge_map(&under.catalog.splits, &state.catalog.splits, &other.catalog.splits, |_| d),
            },
        };
    }
    Ok(state)
}

/// What a merge compares both sides with: the merge base's commit, or (in a criss-cross
/// history) the merge of the merge bases.
enum Base {
    /// The base commit's tree and catalog.
    Commit { tree: ObjectId, catalog: Option<ObjectId> },
    Merged(State),
}

fn conflict_list(paths: &[String], catalog: &[String], why: &BTreeMap<String, String>) -> String {
    let all: Vec<String> = paths.iter().chain(catalog).map(|c| match why.get(c) {
        Some(w) => format!("{c} ({w})"),
        None => c.clone(),
    }).collect();
    let shown = all.iter().take(10).map(String::as_str).collect::<Vec<_>>().join(", ");
    if all.len() > 10 {
        format!("{shown}, and {} more", all.len() - 10)
    } else {
        shown
    }
}

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    pub branch: String,
    /// "up to date", "fast-forward" or "merge"
    pub outcome: &'static str,
    /// The branch's commit after the merge.
    pub commit: ObjectId,
    pub theirs: ObjectId,
    pub base: Option<ObjectId>,
    /// Paths whose version came from `theirs`.
    pub files_from_theirs: usize,
    /// Catalog entries (annotation sets, splits) that came from `theirs`.
    pub catalog_from_theirs: usize,
    /// The side conflicts took, if one was chosen for all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefer: Option<Prefer>,
    /// All best common ancestors; more than one in a criss-cross history, merged into the base.
    pub bases: Vec<ObjectId>,
    /// Conflicts settled: paths, then catalog entries ("annotations TASK/READER", "split NAME").
    pub resolved: Vec<String>,
    /// Each settled conflict, its side and what settled it (`resolved`, in the same order).
    pub resolutions: Vec<Resolution>,
    /// Files both sides changed, merged: DICOM instances attribute by attribute, text files
    /// line by line.
    pub merged_files: Vec<ContentMerge>,
    /// Only what the merge would do: nothing was written, `commit` is the branch's own.
    pub dry_run: bool,
}

/// How a file both sides changed was merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MergedBy {
    /// A DICOM instance, attribute by attribute.
    Attributes,
    /// A text file, line by line: its only unit list is `settled`, the places, as lines of
    /// the merged file, where both sides changed the same lines and a side was chosen.
    Lines,
    /// A CSV or TSV table, row by row: `settled` names the rows ("column=key") both changed
    /// differently.
    Rows,
}

impl MergedBy {
    /// "attribute by attribute", "line by line" or "row by row".
    pub fn said(self) -> &'static str {
        match self {
            MergedBy::Attributes => "attribute by attribute",
            MergedBy::Lines => "line by line",
            MergedBy::Rows => "row by row",
        }
    }
}

impl ContentMerge {
    /// What each side changed: "this branch changed A; REV changed B[; both changed C
    /// alike]", or for a text file or table, what was merged and settled.
    pub fn describe(&self, rev: &str) -> String {
        let u = &self.units;
        let settled = |s: &mut String, how: &str| {
            if !u.settled.is_empty() {
                s.push_str(&format!("; both changed {}{how} (a settled conflict)", u.settled.join(", ")));
            }
        };
        let mut s = match self.how {
            MergedBy::Rows => format!("a table: this branch's and {rev}'s rows, keyed by its first column"),
            MergedBy::Lines if u.settled.is_empty() => format!("a text file: this branch's and {rev}'s changed lines, which do not overlap"),
            MergedBy::Lines => format!("a text file: this branch's and {rev}'s changed lines"),
            MergedBy::Attributes => {
                let list = |v: &[String]| if v.is_empty() { "nothing".to_string() } else { v.join(", ") };
                let mut s = format!("this branch changed {}; {rev} changed {}", list(&u.ours), list(&u.theirs));
                if !u.both.is_empty() {
                    s.push_str(&format!("; both changed {} alike", u.both.join(", ")));
                }
                s
            }
        };
        settled(&mut s, if self.how == MergedBy::Lines { "" } else { " differently" });
        s
    }
}

/// A file both sides changed, merged.
#[derive(Debug, Clone, Serialize)]
pub struct ContentMerge {
    pub path: String,
    pub how: MergedBy,
    #[serde(flatten)]
    pub units: MergedUnits,
}

/// What each side changed of a DICOM instance merged attribute by attribute: each unit is
/// "(gggg,eeee) Keyword", "file meta group" or "pixel data".
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergedUnits {
    /// What only this branch changed.
    pub ours: Vec<String>,
    /// What only the merged revision changed.
    pub theirs: Vec<String>,
    /// What both changed alike (a tool that rewrote the file on both sides, say).
    pub both: Vec<String>,
    /// What both changed differently, settled with a side (`--take`, `--prefer`): the file is
    /// also among the resolved conflicts.
    pub settled: Vec<String>,
}

/// Every commit reachable from `tip` (itself included), with its parents.
fn history(repo: &Repo, tip: ObjectId) -> Result<BTreeMap<ObjectId, Vec<ObjectId>>, MergeError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![tip];
    while let Some(id) = stack.pop() {
        if out.contains_key(&id) {
            continue;
        }
        let parents = repo.store.read_commit(&id)?.parents;
        stack.extend(parents.iter().copied());
        out.insert(id, parents);
    }
    Ok(out)
}

/// The best common ancestors of `a` and `b`: common ancestors that are no parent of another
/// common ancestor (every commit between a common ancestor and a or b would be common too).
pub fn merge_bases(repo: &Repo, a: ObjectId, b: ObjectId) -> Result<Vec<ObjectId>, MergeError> {
    let ha = history(repo, a)?;
    let hb = history(repo, b)?;
    let common: BTreeMap<ObjectId, &Vec<ObjectId>> = ha.iter().filter(|(id, _)| hb.contains_key(id)).map(|(id, p)| (*id, p)).collect();
    let parents_of_common: HashSet<ObjectId> = common.values().flat_map(|p| p.iter().copied()).collect();
    Ok(common.keys().copied().filter(|c| !parents_of_common.contains(c)).collect())
}

/// Merge `rev` into the current branch and update the working tree, which must be clean.
/// Conflicts that `resolve` settles take their side; any other stops the merge, as does a
/// `take` that settles no conflict.
pub fn merge(repo: &Repo, rev: &str, message: Option<&str>, resolve: &Resolve, dry_run: bool, progress: &dyn Progress) -> Result<MergeSummary, MergeError> {
    let prefer = resolve.prefer;
    let (ours, branch) = repo.head()?;
    let branch = branch.ok_or(MergeError::Detached)?;
    let theirs = repo.resolve(rev)?;
    let (st, snap) = repo.status(progress)?;
    if !st.clean {
        return Err(MergeError::Dirty { count: st.changes.len(), example: st.changes[0].path.clone() });
    }
    let bases = match ours {
        Some(o) => merge_bases(repo, o, theirs)?,
        None => Vec::new(),
    };
    let summary = |outcome, commit, base, files, catalog, resolutions: Vec<Resolution>| MergeSummary {
        branch: branch.clone(),
        outcome,
        commit,
        theirs,
        base,
        bases: bases.clone(),
        files_from_theirs: files,
        catalog_from_theirs: catalog,
        prefer,
        resolved: resolutions.iter().map(|r| r.conflict.clone()).collect(),
        resolutions,
        merged_files: Vec::new(),
        dry_run,
    };
    let move_branch = |w, commit: ObjectId, what: String| -> Result<(), MergeError> {
        let mut view = repo.store.view()?;
        view.branches.insert(branch.clone(), commit);
        view.head = Head::Branch(branch.clone());
        repo.publish(w, what, view)?;
        Ok(())
    };
    let Some(ours) = ours else {
        // An empty branch: take theirs.
        if dry_run {
            return Ok(summary("fast-forward", theirs, None, 0, 0, Vec::new()));
        }
        repo.write_worktree(&snap, repo.store.read_commit(&theirs)?.tree, progress)?;
        move_branch(repo.store.writer()?, theirs, format!("merge {rev}: fast-forward to {}", theirs.short()))?;
        return Ok(summary("fast-forward", theirs, None, 0, 0, Vec::new()));
    };
    let base = match bases.as_slice() {
        [] => return Err(MergeError::Unrelated { ours: ours.short(), theirs: theirs.short() }),
        [b, ..] => *b,
    };
    if bases.len() == 1 && base == theirs {
        return Ok(summary("up to date", ours, Some(base), 0, 0, Vec::new()));
    }
    if bases.len() == 1 && base == ours {
        if dry_run {
            return Ok(summary("fast-forward", theirs, Some(base), 0, 0, Vec::new()));
        }
        repo.write_worktree(&snap, repo.store.read_commit(&theirs)?.tree, progress)?;
        move_branch(repo.store.writer()?, theirs, format!("merge {rev}: fast-forward {branch} to {}", theirs.short()))?;
        return Ok(summary("fast-forward", theirs, Some(base), 0, 0, Vec::new()));
    }

    let (co, ct) = (repo.store.read_commit(&ours)?, repo.store.read_commit(&theirs)?);
    let src = TreeSource { store: &repo.store, extra: None };
    // One base: its commit, and the tree diff skips what did not change. Several: their merge,
    // made in memory, and the sides compared with it file by file.
    let merge_base = if bases.len() > 1 { Base::Merged(base_state(repo, ours, theirs, &bases, 0)?) } else {
        let c = repo.store.read_commit(&base)?;
        Base::Commit { tree: c.tree, catalog: c.catalog }
    };
    // Each side's changes as path -> (the base's state, the new state; None: absent).
    let changes = |tree: ObjectId| -> Result<BTreeMap<String, Changed>, MergeError> {
        let mut m = BTreeMap::new();
        let entry = |n: diff::EntryRef| (n.kind, n.id, n.size);
        match &merge_base {
            Base::Commit { tree: base_tree, .. } => {
                for c in diff::diff_trees(&src, Some(*base_tree), Some(tree))? {
                    m.insert(c.path, (c.old.map(entry), c.new.map(entry)));
                }
            }
            Base::Merged(vb) => {
                let mut listed = Vec::new();
                diff::list_files(&src, &tree, "", &mut listed)?;
                let side: BTreeMap<String, Entry> = listed.into_iter().map(|(p, e)| (p, (e.kind, e.id, e.size))).collect();
                for (p, e) in &side {
                    let was = vb.files.get(p).copied();
                    if !same_entry(&was, &Some(*e)) {
                        m.insert(p.clone(), (was, Some(*e)));
                    }
                }
                for (p, e) in vb.files.iter().filter(|(p, _)| !side.contains_key(*p)) {
                    m.insert(p.clone(), (Some(*e), None));
                }
            }
        }
        Ok(m)
    };
    let (mine, yours) = (changes(co.tree)?, changes(ct.tree)?);
    // The DICOM instances both sides changed (each in its own way) are merged attribute by
    // attribute, in parallel; what both changed differently takes the side the caller chose
    // for the path, if any (then it is a settled conflict).
    let both_dicom = |path: &String, new: &Option<Entry>| -> Option<[ObjectId; 3]> {
        let (was, m) = mine.get(path)?;
        match (was, m, new) {
            (Some(b), Some(o), Some(t)) if !same_entry(m, new) && [b.0, o.0, t.0].iter().all(|k| *k == EntryKind::Dicom) && b.1 != disagreed() => Some([b.1, o.1, t.1]),
            _ => None,
        }
    };
    let to_merge: Vec<(&String, [ObjectId; 3])> = yours.iter().filter_map(|(path, (_, new))| both_dicom(path, new).map(|ids| (path, ids))).collect();
    progress.stage("merging instances", Some(to_merge.len() as u64), crate::progress::Unit::Files);
    let mut dicom_merges: BTreeMap<&String, FileMerge> = to_merge
        .into_par_iter()
        .map(|(path, [b, o, t])| {
            let merged = merge_dicom(repo, b, o, t, resolve.decide(path).map(|(side, _)| side))?;
            progress.inc(1);
            Ok((path, merged))
        })
        .collect::<Result<_, MergeError>>()?;
    progress.finish_stage();
    let mut paths = Vec::new();
    let mut why = BTreeMap::new();
    let mut take = Vec::new();
    let mut spliced = Vec::new();
    let mut by_lines = Vec::new();
    for (path, (was, new)) in &yours {
        match mine.get(path) {
            None => take.push((path, *new)),
            Some((_, m)) if same_entry(m, new) => {}
            Some((_, m)) => {
                // A DICOM instance both sides changed: merged attribute by attribute when
                // they changed different ones.
                if let (Some(b), Some(o), Some(t)) = (was, m, new) {
                    if b.1 == disagreed() {
                        why.insert(path.clone(), "the merge bases of a criss-cross history disagree on it, so there is no base to merge against".to_string());
                    } else if let Some(merged) = dicom_merges.remove(path) {
                        match merged {
                            FileMerge::Merged(f) => {
                                if !f.units.settled.is_empty() {
                                    paths.push(path.clone());
                                }
                                spliced.push((path.clone(), f));
                                continue;
                            }
                            FileMerge::Conflict(reason) => {
                                why.insert(path.clone(), reason);
                            }
                        }
                    } else if [b.0, o.0, t.0].contains(&EntryKind::Dicom) {
                        // A file committed whole on some side (not DICOM there, e.g. a bare
                        // data set that a tool then gave a file meta group).
                        let whole: Vec<&str> = [("the base", b.0), ("this branch", o.0), ("theirs", t.0)].into_iter().filter(|(_, k)| *k != EntryKind::Dicom).map(|(side, _)| side).collect();
                        why.insert(path.clone(), format!("not merged attribute by attribute: stored whole, not as DICOM, in {}", whole.join(" and ")));
                    } else if let Some(kind) = text_kinds(b.0, o.0, t.0) {
                        match merge_text(repo, path, [b, o, t], resolve.decide(path).map(|(side, _)| side))? {
                            // A settled merge that gives the chosen side's file as it is
                            // settles the file as a whole (below).
                            Ok(merged) if !merged.whole_side => {
                                if !merged.settled.is_empty() {
                                    paths.push(path.clone());
                                }
                                by_lines.push((path.clone(), kind, merged));
                                continue;
                            }
                            Ok(_) => {}
                            Err(reason) => {
                                why.insert(path.clone(), reason);
                            }
                        }
                    }
                }
                paths.push(path.clone());
                if resolve.decide(path).is_some_and(|(p, _)| p == Prefer::Theirs) {
                    take.push((path, *new));
                }
            }
        }
    }
    let base_catalog = match &merge_base {
        Base::Merged(vb) => CatalogSide::State(&vb.catalog),
        Base::Commit { catalog, .. } => CatalogSide::Id(*catalog),
    };
    let (catalog, catalog_from_theirs, catalog_conflicts) = merge_catalogs(repo, base_catalog, &co, &ct, resolve)?;
    // Every --take must settle something: a mistyped name would otherwise leave its
    // conflict to --prefer, or be silently ignored.
    let all: Vec<String> = paths.iter().chain(&catalog_conflicts).cloned().collect();
    if let Some((pattern, _)) = resolve.take.iter().find(|t| !all.iter().any(|c| resolve.take_for(c) == Some(t))) {
        return Err(MergeError::TakeUnused { pattern: pattern.clone(), theirs: rev.into(), conflicts: all });
    }
    let unsettled = |list: &[String]| list.iter().filter(|c| resolve.decide(c).is_none()).cloned().collect::<Vec<_>>();
    let (open_paths, open_catalog) = (unsettled(&paths), unsettled(&catalog_conflicts));
    if !open_paths.is_empty() || !open_catalog.is_empty() {
        why.retain(|p, _| open_paths.contains(p));
        return Err(MergeError::Conflicts { branch, theirs: rev.into(), paths: open_paths, catalog: open_catalog, why });
    }
    let resolutions: Vec<Resolution> = all
        .iter()
        .map(|c| {
            let (side, by) = resolve.decide(c).expect("every conflict is settled (checked above)");
            Resolution { conflict: c.clone(), side, by }
        })
        .collect();

    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let mut listed: Vec<(String, TreeEntry)> = Vec::new();
    diff::list_files(&src, &co.tree, "", &mut listed)?;
    for (p, e) in listed {
        files.insert(p, (e.kind, e.id, e.size));
    }
    for (path, new) in &take {
        match new {
            Some(e) => files.insert((*path).clone(), *e),
            None => files.remove(*path),
        };
    }
    let mut merged_files: Vec<ContentMerge> = spliced
        .iter()
        .map(|(path, f)| ContentMerge { path: path.clone(), how: MergedBy::Attributes, units: f.units.clone() })
        .chain(by_lines.iter().map(|(path, _, m)| ContentMerge { path: path.clone(), how: m.how, units: MergedUnits { settled: m.settled.clone(), ..MergedUnits::default() } }))
        .collect();
    merged_files.sort_by(|a, b| a.path.cmp(&b.path));
    if dry_run {
        // What the merge would do; nothing is written.
        let mut would = summary("merge", ours, Some(base), take.len(), catalog_from_theirs, resolutions);
        would.merged_files = merged_files;
        return Ok(would);
    }
    let mut w = repo.store.writer()?;
    for (path, f) in spliced {
        w.put_blob(&f.header, crate::pack::Hint::Generic)?;
        let id = w.put(&f.record)?;
        files.insert(path, (EntryKind::Dicom, id, f.record.size));
    }
    for (path, kind, merged) in by_lines {
        let id = w.put_blob(&merged.bytes, crate::pack::Hint::Generic)?;
        files.insert(path, (kind, id, merged.bytes.len() as u64));
    }
    let flat: Vec<(String, EntryKind, ObjectId, u64)> = files.into_iter().map(|(p, (k, id, size))| (p, k, id, size)).collect();
    let (tree, _) = crate::treebuild::build(&repo.store, &mut w, &flat).map_err(|source| MergeError::Tree { theirs: rev.into(), source })?;
    let catalog_id = match catalog {
        Some(k) if k.is_empty() => None,
        Some(k) => Some(w.put(&k)?),
        None => co.catalog,
    };
    let started = repo.ctx.now_us();
    let mut parameters = BTreeMap::from([("rev".to_string(), rev.to_string()), ("base".to_string(), base.hex())]);
    if bases.len() > 1 {
        parameters.insert("bases".to_string(), bases.iter().map(ObjectId::hex).collect::<Vec<_>>().join(" "));
    }
    if let Some(p) = prefer {
        parameters.insert("prefer".to_string(), p.name().to_string());
    }
    if !resolve.take.is_empty() {
        parameters.insert("take".to_string(), resolve.take.iter().map(|(n, p)| format!("{n}={}", p.name())).collect::<Vec<_>>().join("\n"));
    }
    // One note per settled conflict: a file's note names it by path; a catalog entry's note
    // names the entry (its `path` stays empty, as it is no file).
    let said = |r: &Resolution| {
        // A DICOM instance settled attribute by attribute names what the side gave.
        let of = merged_files.iter().find(|m| m.path == r.conflict && !m.units.settled.is_empty()).map(|m| format!(" of {}", m.units.settled.join(", "))).unwrap_or_default();
        match r.side {
            Prefer::Theirs => format!("conflict: took {rev}'s version{of} ({})", r.by),
            Prefer::Ours => format!("conflict: kept this branch's version{of} ({})", r.by),
        }
    };
    let mut notes: Vec<CommitNote> = resolutions
        .iter()
        .enumerate()
        .map(|(i, r)| if i < paths.len() {
            CommitNote { path: r.conflict.clone(), note: said(r) }
        } else {
            CommitNote { path: String::new(), note: format!("{}: {}", r.conflict, said(r)) }
        })
        .collect();
    notes.extend(merged_files.iter().map(|m| CommitNote { path: m.path.clone(), note: format!("changed on both sides, merged {}: {}", m.how.said(), m.describe(rev)) }));
    let mut commit: Commit = repo.draft_commit(CommitDraft {
        tree,
        parent: Some(ours),
        author: repo.ctx.user.clone(),
        message: message.map_or_else(|| format!("Merge {rev} into {branch}"), str::to_string),
        kind: "merge".into(),
        parameters,
        inputs: vec![ActivityRef { role: "merged".into(), value: theirs.hex() }],
        outputs: vec![ActivityRef { role: "tree".into(), value: tree.hex() }],
        started_us: started,
        notes,
        catalog: catalog_id,
    });
    commit.parents.push(theirs);
    let id = w.put(&commit)?;
    // The new trees must be readable to write the working tree: store them first (a crash
    // before the branch moves leaves only unreachable objects, for gc).
    repo.store.finish_pack(w)?;
    repo.write_worktree(&snap, tree, progress)?;
    move_branch(repo.store.writer()?, id, format!("merge {}: {rev} into {branch}", id.short()))?;
    let mut done = summary("merge", id, Some(base), take.len(), catalog_from_theirs, resolutions);
    done.merged_files = merged_files;
    Ok(done)
}

/// How a path changed on one side: its state in the base and on that side (None: absent).
type Changed = (Option<Entry>, Option<Entry>);

/// A DICOM instance both sides changed, merged attribute by attribute.
struct Spliced {
    header: Vec<u8>,
    record: DicomFile,
    units: MergedUnits,
}

/// The three-way merge of one DICOM instance.
enum FileMerge {
    Merged(Box<Spliced>),
    /// Why it stays a conflict.
    Conflict(String),
}

/// How a merged unit of a DICOM instance is named: "(gggg,eeee) Keyword", "file meta group"
/// or "pixel data"; inside a sequence, the tag and the path `diff` shows:
/// "(300A,0016) DoseReferenceSequence[0].DoseReferenceDescription".
fn unit_name(unit: dicom::Unit) -> String {
    if unit.tag == dicom::FILE_META {
        return "file meta group".to_string();
    }
    let tag = dicom::tag_string(unit.tag);
    if !unit.within.is_empty() {
        return format!("{tag} {}", dicom::attribute_path(&unit.within, unit.tag));
    }
    match dicom::keyword_of(unit.tag) {
        Some(k) => format!("{tag} {k}"),
        None => tag,
    }
}

/// Merge the DICOM instances (records) `ours` and `theirs` against `base`: their headers
/// element by element ([`dicom::merge_headers`]); their pixel data (with the pixel element's
/// own bytes and whatever follows it) as one more unit. With `settle`, what both changed
/// differently takes that side's version.
fn merge_dicom(repo: &Repo, base: ObjectId, ours: ObjectId, theirs: ObjectId, settle: Option<Prefer>) -> Result<FileMerge, MergeError> {
    let (b, o, t) = (repo.store.read_dicom(&base)?, repo.store.read_dicom(&ours)?, repo.store.read_dicom(&theirs)?);
    let pixels = |f: &DicomFile| (f.pixel_element.clone(), f.pixel, f.trailer.clone());
    let (pb, po, pt) = (pixels(&b), pixels(&o), pixels(&t));
    let pixel_conflict = po != pb && pt != pb && po != pt;
    let pixels_from_theirs = (po == pb && pt != pb) || (pixel_conflict && settle == Some(Prefer::Theirs));
    let (hb, ho, ht) = (repo.store.read(&b.header)?, repo.store.read(&o.header)?, repo.store.read(&t.header)?);
    let not_merged = |r: String| FileMerge::Conflict(format!("not merged attribute by attribute: {r}"));
    let side = settle.map(|p| match p {
        Prefer::Ours => dicom::Settle::Ours,
        Prefer::Theirs => dicom::Settle::Theirs,
    });
    let merged = match dicom::merge_headers(&hb, &ho, &ht, side) {
        Err(e) => return Ok(not_merged(e.to_string())),
        Ok(dicom::HeaderMerge::NotMergeable(r)) => return Ok(not_merged(r)),
        Ok(dicom::HeaderMerge::Conflict(tags)) => {
            let mut both: Vec<String> = tags.into_iter().map(unit_name).collect();
            if pixel_conflict {
                both.push("pixel data".to_string());
            }
            return Ok(FileMerge::Conflict(format!("both changed {}", both.join(", "))));
        }
        Ok(dicom::HeaderMerge::Merged { .. }) if pixel_conflict && settle.is_none() => {
            return Ok(FileMerge::Conflict("both changed pixel data".to_string()));
        }
        Ok(dicom::HeaderMerge::Merged { header, summary, changed }) => (header, summary, changed),
    };
    let (header, info, changed) = merged;
    let names = |units: Vec<dicom::Unit>| units.into_iter().map(unit_name).collect::<Vec<String>>();
    let mut units = MergedUnits { ours: names(changed.ours), theirs: names(changed.theirs), both: names(changed.both), settled: names(changed.settled) };
    // The file is its header, then the pixel part of the side it comes from.
    let (from, from_header) = if pixels_from_theirs { (&t, &ht) } else { (&o, &ho) };
    let pixels = "pixel data".to_string();
    match (po != pb, pt != pb) {
        (true, true) if pixel_conflict => units.settled.push(pixels),
        (true, true) => units.both.push(pixels),
        (true, false) => units.ours.push(pixels),
        (false, true) => units.theirs.push(pixels),
        (false, false) => {}
    }
    let record = DicomFile {
        header: ObjectId::of(&header),
        pixel_element: from.pixel_element.clone(),
        pixel: from.pixel,
        trailer: from.trailer.clone(),
        size: from.size - from_header.len() as u64 + header.len() as u64,
        info: *info,
    };
    Ok(FileMerge::Merged(Box::new(Spliced { header, record, units })))
}

/// Largest text file merged line by line (each side).
const MAX_TEXT_MERGE: u64 = 64 << 20;

/// The kind a line-merged file keeps: both sides' kind, when base and sides are plain or
/// executable files.
fn text_kinds(b: EntryKind, o: EntryKind, t: EntryKind) -> Option<EntryKind> {
    let file = |k| matches!(k, EntryKind::File | EntryKind::Executable);
    (file(b) && file(o) && o == t).then_some(o)
}

/// A text file merged line by line.
#[derive(Debug)]
struct TextMerge {
    bytes: Vec<u8>,
    /// Where both sides changed the same lines and the chosen side's lines were taken, as
    /// line numbers of the merged file ("lines 3-5").
    settled: Vec<String>,
    /// Settled, and the merged file is the chosen side's file: nothing of the other side's
    /// changes is left.
    whole_side: bool,
    /// By lines, or by rows for a CSV or TSV table ([`crate::tablemerge`]).
    how: MergedBy,
}

/// Three-way merge of text files line by line (diff3, as git merges them): `Ok` with the merged
/// bytes when the two sides changed no line in common, or when `settle` chooses a side for the
/// places where they did (that side's lines are taken there, and only there, as git's
/// `-X ours|theirs` does); `Err` with why not. A file is text when it is UTF-8 without NUL
/// bytes and at most [`MAX_TEXT_MERGE`] bytes (CSV, TSV, JSON, notes; NIfTI and other binaries
/// stay whole).
fn merge_text(repo: &Repo, path: &str, entries: [&Entry; 3], settle: Option<Prefer>) -> Result<Result<TextMerge, String>, MergeError> {
    if entries.iter().any(|e| e.2 > MAX_TEXT_MERGE) {
        return Ok(Err(format!("not merged line by line: larger than {} MiB", MAX_TEXT_MERGE >> 20)));
    }
    if entries.iter().any(|e| !repo.store.contains(&e.1)) {
        return Ok(Err("not merged line by line: not in this store (a partial clone)".to_string()));
    }
    let mut texts = Vec::new();
    for e in entries {
        match diff::as_text(repo.store.read(&e.1)?) {
            Some(t) => texts.push(t),
            None => return Ok(Err("not merged line by line: not text".to_string())),
        }
    }
    let (b, o, t) = (&texts[0], &texts[1], &texts[2]);
    let lower = path.to_ascii_lowercase();
    let delimiter = if lower.ends_with(".csv") { Some(b',') } else if lower.ends_with(".tsv") { Some(b'\t') } else { None };
    let by_lines = merge_lines(b, o, t, None);
    if let Ok(merged) = &by_lines {
        // A clean line merge of a keyed table that repeats a key (both sides added the same
        // patient, in different places) is no table any more: merged row by row instead.
        let broken = |d| [b, o, t].iter().all(|x| crate::tablemerge::is_keyed(x, d)) && !std::str::from_utf8(&merged.bytes).is_ok_and(|m| crate::tablemerge::is_keyed(m, d));
        if !delimiter.is_some_and(broken) {
            return Ok(by_lines);
        }
    }
    // A CSV or TSV table whose sides changed neighbouring lines (both added rows at its end,
    // say): merged row by row, keyed by its first column, where that is sound.
    if let Some(d) = delimiter {
        match crate::tablemerge::merge_rows(b, o, t, d, settle.map(|p| p == Prefer::Theirs)) {
            Some(crate::tablemerge::RowMerge::Merged { text, settled }) => {
                let chosen = if settle == Some(Prefer::Theirs) { t } else { o };
                let whole_side = !settled.is_empty() && text == *chosen;
                return Ok(Ok(TextMerge { bytes: text.into_bytes(), settled, whole_side, how: MergedBy::Rows }));
            }
            Some(crate::tablemerge::RowMerge::Conflict(rows)) => {
                let shown: Vec<&str> = rows.iter().take(5).map(String::as_str).collect();
                let more = if rows.len() > 5 { format!(" and {} more", rows.len() - 5) } else { String::new() };
                return Ok(Err(format!("both changed the row(s) {}{more}", shown.join(", "))));
            }
            None => {}
        }
    }
    // Settled, the line merge is made again, keeping the chosen side's lines where both
    // changed; else its conflict stands.
    Ok(if settle.is_some() { merge_lines(b, o, t, settle) } else { by_lines })
}

/// The line merge of [`merge_text`], on the three texts.
fn merge_lines(base: &str, ours: &str, theirs: &str, settle: Option<Prefer>) -> Result<TextMerge, String> {
    // Conflict markers longer than any run of marker characters that starts a line of the
    // inputs, so that every line of the output that starts with one is a marker.
    let longest = [base, ours, theirs]
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| {
            let c = l.chars().next()?;
            "<|=>".contains(c).then(|| l.chars().take_while(|x| *x == c).count())
        })
        .max()
        .unwrap_or(0);
    let len = longest.max(6) + 1;
    let mut options = diffy::MergeOptions::new();
    options.set_conflict_marker_length(len).set_conflict_style(diffy::ConflictStyle::Diff3).set_incomplete_hunk_style(diffy::IncompleteHunkStyle::Git);
    let marked = match options.merge(base, ours, theirs) {
        Ok(merged) => return Ok(TextMerge { bytes: merged.into_bytes(), settled: Vec::new(), whole_side: false, how: MergedBy::Lines }),
        Err(marked) => marked,
    };
    let marker = |line: &str, c: char| line.len() > len && line.chars().take(len).all(|x| x == c) && !line[len..].starts_with(c);
    let Some(side) = settle else {
        let places = marked.lines().filter(|l| marker(l, '<')).count();
        return Err(format!("both changed the same lines, in {places} place(s)"));
    };
    // Read the marked text back, keeping the chosen side's lines of each conflict.
    #[derive(PartialEq)]
    enum Part {
        Common,
        Ours,
        Base,
        Theirs,
    }
    let (mut part, mut out, mut settled) = (Part::Common, String::with_capacity(marked.len()), Vec::new());
    let (mut line_no, mut first) = (0usize, 0usize);
    let mut ends_in_conflict = false;
    for line in marked.split_inclusive('\n') {
        let next = match part {
            Part::Common if marker(line, '<') => Some(Part::Ours),
            Part::Ours if marker(line, '|') => Some(Part::Base),
            Part::Ours | Part::Base if marker(line, '=') => Some(Part::Theirs),
            Part::Theirs if marker(line, '>') => Some(Part::Common),
            _ => None,
        };
        match next {
            Some(Part::Ours) => first = line_no + 1,
            Some(Part::Common) => {
                settled.push(match line_no + 1 - first {
                    0 => format!("lines removed after line {line_no}"),
                    1 => format!("line {first}"),
                    _ => format!("lines {first}-{line_no}"),
                });
                ends_in_conflict = true;
            }
            Some(_) => {}
            None => {
                let keep = match part {
                    Part::Common => true,
                    Part::Ours => side == Prefer::Ours,
                    Part::Theirs => side == Prefer::Theirs,
                    Part::Base => false,
                };
                if keep {
                    out.push_str(line);
                    line_no += 1;
                    ends_in_conflict = part != Part::Common;
                }
            }
        }
        if let Some(p) = next {
            part = p;
        }
    }
    if part != Part::Common {
        return Err("both changed the same lines, and their conflict could not be read back".to_string());
    }
    // The markers start lines, so a last line without a newline gained one inside a conflict.
    let chosen = if side == Prefer::Ours { ours } else { theirs };
    if ends_in_conflict && !chosen.ends_with('\n') && out.ends_with('\n') {
        out.pop();
    }
    Ok(TextMerge { whole_side: out == chosen, bytes: out.into_bytes(), settled, how: MergedBy::Lines })
}

fn same_entry(a: &Option<Entry>, b: &Option<Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => x.0 == y.0 && x.1 == y.1,
        _ => false,
    }
}

/// The base's catalog: a commit's (by id), or that of merged merge bases.
enum CatalogSide<'a> {
    Id(Option<ObjectId>),
    State(&'a Catalog),
}

/// Three-way merge of the catalogs, entry by entry. Returns the merged catalog (None: ours
/// unchanged), how many entries came from theirs, and the conflicting entries (which take
/// theirs where `resolve` says so, stay ours otherwise).
fn merge_catalogs(repo: &Repo, base: CatalogSide<'_>, ours: &Commit, theirs: &Commit, resolve: &Resolve) -> Result<(Option<Catalog>, usize, Vec<String>), MergeError> {
    if theirs.catalog == ours.catalog || matches!(base, CatalogSide::Id(b) if b == theirs.catalog) {
        return Ok((None, 0, Vec::new()));
    }
    let read = |id: Option<ObjectId>| -> Result<Catalog, MergeError> { Ok(id.map(|k| repo.store.read_catalog(&k)).transpose()?.unwrap_or_default()) };
    let b = match base {
        CatalogSide::Id(id) => read(id)?,
        CatalogSide::State(c) => c.clone(),
    };
    let (o, t) = (read(ours.catalog)?, read(theirs.catalog)?);
    let mut merged = o.clone();
    let mut from_theirs = 0;
    let mut conflicts = Vec::new();
    let theirs_wins = |name: &str| resolve.decide(name).is_some_and(|(p, _)| p == Prefer::Theirs);
    // `conflict` records a conflicting entry and says whether it takes theirs.
    fn three<K: Ord + Clone>(b: &BTreeMap<K, ObjectId>, o: &BTreeMap<K, ObjectId>, t: &BTreeMap<K, ObjectId>, out: &mut BTreeMap<K, ObjectId>, taken: &mut usize, conflict: &mut dyn FnMut(&K) -> bool) {
        let keys: BTreeSet<&K> = b.keys().chain(o.keys()).chain(t.keys()).collect();
        for k in keys {
            let (vb, vo, vt) = (b.get(k), o.get(k), t.get(k));
            let take = match pick(vb, vo, vt) {
                Pick::Theirs => true,
                Pick::Conflict => conflict(k),
                Pick::Unchanged | Pick::Both | Pick::Ours => false,
            };
            if take {
                match vt {
                    Some(v) => out.insert(k.clone(), *v),
                    None => out.remove(k),
                };
                *taken += 1;
            }
        }
    }
    let mut record = |name: String| {
        let theirs = theirs_wins(&name);
        conflicts.push(name);
        theirs
    };
    three(&b.annotations, &o.annotations, &t.annotations, &mut merged.annotations, &mut from_theirs, &mut |(task, reader)| record(format!("annotations {task}/{reader}")));
    three(&b.splits, &o.splits, &t.splits, &mut merged.splits, &mut from_theirs, &mut |name| record(format!("split {name}")));
    Ok((Some(merged), from_theirs, conflicts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(base: &str, ours: &str, theirs: &str, settle: Option<Prefer>) -> Result<(String, Vec<String>), String> {
        merge_lines(base, ours, theirs, settle).map(|m| (String::from_utf8(m.bytes).unwrap(), m.settled))
    }

    #[test]
    fn a_settled_merge_that_keeps_nothing_of_the_other_side_is_the_sides_whole_file() {
        let m = merge_lines("one line", "ours", "theirs", Some(Prefer::Theirs)).unwrap();
        assert!(m.whole_side && m.bytes == b"theirs", "{m:?}");
        let m = merge_lines("a\nb\nc\nd\n", "a\nb\nc\nD\n", "x\nb\nc\nX\n", Some(Prefer::Ours)).unwrap();
        assert!(!m.whole_side && m.bytes == b"x\nb\nc\nD\n", "{m:?}");
        let m = merge_lines("a\nb\nc\nd\n", "a\nb\nc\nD\n", "a\nb\nc\nX\n", Some(Prefer::Ours)).unwrap();
        assert!(m.whole_side && m.bytes == b"a\nb\nc\nD\n", "{m:?}");
    }

    #[test]
    fn lines_changed_apart_merge_and_together_conflict_unless_settled() {
        let base = "id,label\n1,a\n2,b\n3,c\n4,d\n5,e\n";
        let ours = "id,label\n1,A\n2,b\n3,c\n4,d\n5,x\n";
        let theirs = "id,label\n1,a\n2,b\n3,C\n4,d\n5,y\n";
        assert_eq!(merged(base, ours, "id,label\n1,a\n2,b\n3,C\n4,d\n5,e\n", None).unwrap().0, "id,label\n1,A\n2,b\n3,C\n4,d\n5,x\n");
        assert_eq!(merged(base, ours, theirs, None).unwrap_err(), "both changed the same lines, in 1 place(s)");
        // Settled: the chosen side's lines where both changed; the other side's changes elsewhere stay.
        let (text, settled) = merged(base, ours, theirs, Some(Prefer::Theirs)).unwrap();
        assert_eq!(text, "id,label\n1,A\n2,b\n3,C\n4,d\n5,y\n");
        assert_eq!(settled, vec!["line 6".to_string()]);
        let (text, settled) = merged(base, ours, theirs, Some(Prefer::Ours)).unwrap();
        assert_eq!(text, "id,label\n1,A\n2,b\n3,C\n4,d\n5,x\n");
        assert_eq!(settled, vec!["line 6".to_string()]);
    }

    #[test]
    fn a_settled_conflict_keeps_the_chosen_sides_last_line_as_it_ends() {
        let base = "a\nb\nc\nd";
        let ours = "A\nb\nc\nx";
        let theirs = "a\nb\nc\ny\n";
        assert_eq!(merged(base, ours, theirs, Some(Prefer::Ours)).unwrap(), ("A\nb\nc\nx".to_string(), vec!["line 4".to_string()]));
        assert_eq!(merged(base, ours, theirs, Some(Prefer::Theirs)).unwrap().0, "A\nb\nc\ny\n");
        // A side that removed the conflicting lines: nothing is taken there.
        let (text, settled) = merged("a\nb\nc\nd\ne\n", "a\nB\nc\nd\nf\n", "a\nb\nc\n", Some(Prefer::Theirs)).unwrap();
        assert_eq!(text, "a\nB\nc\n");
        assert_eq!(settled, vec!["lines removed after line 3".to_string()]);
    }

    #[test]
    fn lines_that_look_like_conflict_markers_are_kept_as_text() {
        let base = "<<<<<<< not a marker\n=======\nx\n>>>>>>>>>> also text\nend\n";
        let ours = "<<<<<<< not a marker\n=======\nours\n>>>>>>>>>> also text\nend\n";
        let theirs = "<<<<<<< not a marker\n=======\ntheirs\n>>>>>>>>>> also text\nEND\n";
        assert_eq!(merged(base, ours, theirs, None).unwrap_err(), "both changed the same lines, in 1 place(s)");
        let (text, settled) = merged(base, ours, theirs, Some(Prefer::Ours)).unwrap();
        assert_eq!(text, "<<<<<<< not a marker\n=======\nours\n>>>>>>>>>> also text\nEND\n");
        assert_eq!(settled, vec!["line 3".to_string()]);
        // Two places, each settled.
        let (text, settled) = merged("1\n2\n3\n4\n5\n6\n7\n", "1\nx\n3\n4\n5\nx\n7\n", "1\ny\n3\n4\n5\ny\n7\n", Some(Prefer::Theirs)).unwrap();
        assert_eq!(text, "1\ny\n3\n4\n5\ny\n7\n");
        assert_eq!(settled, vec!["line 2".to_string(), "line 6".to_string()]);
    }
}
