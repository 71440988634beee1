//! Keeping a store honest: `fsck` (re-hash everything, find what is missing), `gc` (drop what
//! no ref reaches) and `du` (logical versus physical bytes).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs;

use rayon::prelude::*;
use serde::Serialize;

use crate::id::ObjectId;
use crate::object::{EntryKind, Head};
use crate::progress::{Progress, Unit};
use crate::repo::{Repo, RepoError};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub id: ObjectId,
    /// Where it was found or who refers to it.
    pub place: String,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FsckReport {
    pub packs: usize,
    pub objects: u64,
    pub reachable: u64,
    pub corrupt: Vec<Problem>,
    pub missing: Vec<Problem>,
    /// Partial clone: objects not fetched yet (on the promisor remote), not counted as problems.
    pub not_fetched: u64,
    pub ok: bool,
}

/// Why an object is reachable, for messages.
pub type Edge = (ObjectId, String);

/// Walk everything reachable from `roots`, calling `visit` on each id once; returns the ids.
/// Objects that cannot be read are reported through `missing` and not descended into.
pub fn reachable(store: &Store, roots: &[Edge], missing: &mut Vec<Problem>) -> HashSet<ObjectId> {
    reachable_as(store, roots, b'c', missing, None, None)
}

/// [`reachable`], where a blob (file contents, a header, pixel data, a mask: nothing a walk
/// reads) that is not here is listed in `absent` instead of `missing`: for a store that holds
/// the metadata of what it walks but not every file's contents (a remote gc's view).
pub fn reachable_with_absent_blobs(store: &Store, roots: &[Edge], missing: &mut Vec<Problem>, absent: &mut Vec<ObjectId>) -> HashSet<ObjectId> {
    reachable_as(store, roots, b'c', missing, None, Some(absent))
}

/// [`reachable`] from trees instead of commits.
pub fn reachable_from_trees(store: &Store, roots: &[Edge], missing: &mut Vec<Problem>) -> HashSet<ObjectId> {
    reachable_as(store, roots, b't', missing, None, None)
}

/// [`reachable`] from DICOM records (a file's header and pixel data).
pub fn reachable_from_records(store: &Store, roots: &[Edge], missing: &mut Vec<Problem>) -> HashSet<ObjectId> {
    reachable_as(store, roots, b'd', missing, None, None)
}

/// Where the walk met an object, for the report of one that is missing or unreadable. Only
/// formatted then: a walk meets every object of a store, and nearly all are fine.
enum Place {
    Root(String),
    /// `what`, then `rel` (" of commit ", " in tree "...), then the parent's short id.
    Child { what: Cow<'static, str>, rel: &'static str, parent: ObjectId },
}

impl Place {
    fn child(what: impl Into<Cow<'static, str>>, rel: &'static str, parent: ObjectId) -> Place {
        Place::Child { what: what.into(), rel, parent }
    }

    fn describe(self) -> String {
        match self {
            Place::Root(s) => s,
            Place::Child { what, rel, parent } => format!("{what}{rel}{}", parent.short()),
        }
    }
}

/// [`reachable`] from roots of a given kind (`b'c'` commits, `b't'` trees); adds the stored
/// size of every object it finds to `stored`, if given. Each object is looked up once in the
/// pack indexes (and once more to read it, for commits, trees, records and annotations).
fn reachable_as(store: &Store, roots: &[Edge], root_kind: u8, missing: &mut Vec<Problem>, mut stored: Option<&mut u64>, mut absent: Option<&mut Vec<ObjectId>>) -> HashSet<ObjectId> {
    let mut seen = HashSet::new();
    let mut stack: Vec<(ObjectId, Place, u8)> = roots.iter().map(|(id, why)| (*id, Place::Root(why.clone()), root_kind)).collect();
    while let Some((id, why, kind)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some((_, loc)) = store.locate(&id) else {
            match absent.as_deref_mut() {
                Some(a) if kind == b'b' => a.push(id),
                _ => missing.push(Problem { id, place: why.describe(), problem: "missing".into() }),
            }
            continue;
        };
        if let Some(total) = stored.as_deref_mut() {
            *total += loc.stored_share();
        }
        let res: Result<(), StoreError> = (|| {
            match kind {
                b'c' => {
                    let c = store.read_commit(&id)?;
                    stack.push((c.tree, Place::child("tree", " of commit ", id), b't'));
                    // Objects an activity produced besides the tree (reports, ...).
                    for o in &c.activity.outputs {
                        if crate::OBJECT_ROLES.contains(&o.role.as_str()) {
                            if let Ok(oid) = o.value.parse() {
                                stack.push((oid, Place::child(o.role.clone(), " of commit ", id), b'b'));
                            }
                        }
                    }
                    if let Some(k) = c.catalog {
                        stack.push((k, Place::child("catalog", " of commit ", id), b'k'));
                    }
                    for p in c.parents {
                        stack.push((p, Place::child("parent", " of commit ", id), b'c'));
                    }
                }
                b'k' => {
                    let cat = store.read_catalog(&id)?;
                    for ((task, reader), a) in &cat.annotations {
                        stack.push((*a, Place::child(format!("annotations {task}/{reader}"), " of catalog ", id), b'a'));
                    }
                    for (name, s) in &cat.splits {
                        stack.push((*s, Place::child(format!("split {name}"), " of catalog ", id), b'b'));
                    }
                }
                b'a' => {
                    let set = store.read_annotations(&id)?;
                    for s in &set.segmentations {
                        stack.push((s.mask, Place::child(format!("mask of series {}", s.series_uid), " in annotation set ", id), b'b'));
                    }
                    if let Some(p) = set.previous {
                        stack.push((p, Place::child("previous version", " of annotation set ", id), b'a'));
                    }
                    if let Some(d) = &set.derivation {
                        for (r, i) in &d.inputs {
                            stack.push((*i, Place::child(format!("input {r}"), " of consensus ", id), b'a'));
                        }
                    }
                }
                b't' => {
                    for e in store.read_tree(&id)?.entries {
                        let k = match e.kind {
                            EntryKind::Tree => b't',
                            EntryKind::Dicom => b'd',
                            _ => b'b',
                        };
                        stack.push((e.id, Place::child(e.name, " in tree ", id), k));
                    }
                }
                b'd' => {
                    let d = store.read_dicom(&id)?;
                    stack.push((d.header, Place::child("header", " of DICOM record ", id), b'b'));
                    if let Some(p) = d.pixel {
                        stack.push((p, Place::child("pixel data", " of DICOM record ", id), b'b'));
                    }
                }
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = res {
            missing.push(Problem { id, place: why.describe(), problem: format!("unreadable: {e}") });
        }
    }
    seen
}

fn roots_of(repo: &Repo) -> Result<Vec<Edge>, RepoError> {
    let v = repo.store.view()?;
    let mut roots: Vec<Edge> = v.branches.iter().map(|(n, id)| (*id, format!("branch {n}"))).collect();
    roots.extend(v.tags.iter().map(|(n, id)| (*id, format!("tag {n}"))));
    if let Head::Detached(id) = v.head {
        roots.push((id, "HEAD".into()));
    }
    Ok(roots)
}

/// Operation ids of the whole op log.
fn op_chain(store: &Store) -> Result<Vec<ObjectId>, StoreError> {
    let mut out = Vec::new();
    let mut cur = Some(store.op_head()?);
    while let Some(id) = cur {
        out.push(id);
        cur = store.read_op(&id)?.parents.first().copied();
    }
    Ok(out)
}

/// Re-hash every stored object and check that everything the refs reach is present.
pub fn fsck(repo: &Repo, progress: &dyn Progress) -> Result<FsckReport, RepoError> {
    fsck_with(repo, false, progress)
}

/// [`fsck`]; in a partial clone (`partial`), missing objects are expected and only counted.
pub fn fsck_with(repo: &Repo, partial: bool, progress: &dyn Progress) -> Result<FsckReport, RepoError> {
    let store = &repo.store;
    let packs = store.packs();
    let mut corrupt = Vec::new();
    let total: u64 = packs.iter().map(|p| p.len() as u64).sum();
    progress.stage("verifying", Some(total), Unit::Objects);
    for p in &packs {
        for check in [p.verify_index(), p.verify_layout()] {
            if let Err(e) = check {
                corrupt.push(Problem { id: ObjectId::of(b""), place: p.name.clone(), problem: e.to_string() });
            }
        }
        let entries = p.entries_in_pack_order();
        let bad: Vec<Problem> = entries
            .par_iter()
            .filter_map(|(id, loc)| {
                let r = p.read(*id, *loc);
                progress.inc(1);
                r.err().map(|e| Problem { id: *id, place: p.name.clone(), problem: e.to_string() })
            })
            .collect();
        corrupt.extend(bad);
    }
    progress.finish_stage();
    let bad_ids: HashSet<ObjectId> = corrupt.iter().map(|c| c.id).collect();
    let mut missing = Vec::new();
    match op_chain(store) {
        Ok(_) => {}
        Err(e) => missing.push(Problem { id: store.op_head()?, place: "operation log".into(), problem: e.to_string() }),
    }
    let reach = reachable(store, &roots_of(repo)?, &mut missing);
    missing.retain(|m| !bad_ids.contains(&m.id) || m.problem == "missing");
    let before = missing.len();
    if partial {
        missing.retain(|m| m.problem != "missing");
    }
    let not_fetched = (before - missing.len()) as u64;
    let ok = corrupt.is_empty() && missing.is_empty();
    Ok(FsckReport { packs: packs.len(), objects: total, reachable: reach.len() as u64, corrupt, missing, not_fetched, ok })
}

#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub objects_before: u64,
    pub objects_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub packs_removed: usize,
    pub cache_files_removed: usize,
}

/// Keep only objects reachable from the refs (and the operation log's own records), in one
/// new pack; then delete the old packs. A crash in between leaves duplicates, never loss.
pub fn gc(repo: &Repo, progress: &dyn Progress) -> Result<GcReport, RepoError> {
    let store = &repo.store;
    let mut missing = Vec::new();
    let mut keep = reachable(store, &roots_of(repo)?, &mut missing);
    if let Some(m) = missing.first() {
        // Never collect from a store that is already damaged: fsck first.
        return Err(RepoError::Store(StoreError::Pack(crate::pack::PackError::Missing(m.id))));
    }
    keep.extend(op_chain(store)?);
    let packs = store.packs();
    let objects_before: u64 = packs.iter().map(|p| p.len() as u64).sum();
    let bytes_before: u64 = packs.iter().map(|p| p.file_len()).sum();
    progress.stage("collecting", Some(keep.len() as u64), Unit::Objects);
    let mut w = store.writer()?;
    for p in &packs {
        for (id, loc) in p.entries_in_pack_order() {
            if keep.contains(&id) && !w.contains(&id) {
                w.copy_from(p, id, loc)?;
                progress.inc(1);
            }
        }
    }
    progress.finish_stage();
    let objects_after = w.len() as u64;
    store.finish_pack(w)?;
    let new_packs = store.packs();
    let new_name = new_packs.last().map(|p| p.name.clone());
    let pd = store.packs_dir();
    let mut removed = 0;
    for p in &packs {
        if Some(&p.name) == new_name.as_ref() {
            continue;
        }
        // Index first: a pack without its index is ignored, never half-read.
        for ext in ["idx", "pack"] {
            let f = pd.join(format!("{}.{ext}", p.name));
            crate::fsutil::remove_if_exists(&f).map_err(|source| RepoError::Io { path: f.clone(), source })?;
        }
        removed += 1;
    }
    // Orphans of interrupted writes: packs without an index, temp files.
    for dir in [pd.clone(), store.tmp_dir()] {
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let orphan_pack = n.ends_with(".pack") && !pd.join(n.replace(".pack", ".idx")).exists();
                if orphan_pack || dir == store.tmp_dir() {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    let mut cache_removed = 0;
    if let Ok(shards) = fs::read_dir(store.cache_dir()) {
        for shard in shards.flatten() {
            for e in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                let keep_it = e.file_name().to_str().and_then(|s| s.parse::<ObjectId>().ok()).is_some_and(|id| keep.contains(&id));
                if !keep_it && fs::remove_file(e.path()).is_ok() {
                    cache_removed += 1;
                }
            }
        }
    }
    store.reload_packs()?;
    let bytes_after: u64 = store.packs().iter().map(|p| p.file_len()).sum();
    Ok(GcReport { objects_before, objects_after, bytes_before, bytes_after, packs_removed: removed, cache_files_removed: cache_removed })
}

#[derive(Debug, Clone, Serialize)]
pub struct DuReport {
    pub commit: ObjectId,
    pub files: u64,
    /// Sum of the sizes of the files in the commit.
    pub logical_bytes: u64,
    /// Stored (compressed) bytes of the objects the commit reaches, each counted once.
    pub physical_bytes: u64,
    pub objects: u64,
    /// All pack files of the store, whatever they hold.
    pub store_bytes: u64,
}

pub fn du(repo: &Repo, rev: &str) -> Result<DuReport, RepoError> {
    let store = &repo.store;
    let id = repo.resolve(rev)?;
    let c = store.read_commit(&id)?;
    let mut files = Vec::new();
    crate::diff::list_files(&crate::diff::TreeSource { store, extra: None }, &c.tree, "", &mut files)?;
    let mut missing = Vec::new();
    // This commit's content only, not its history.
    let mut physical = 0;
    let mut reach = reachable_as(store, &[(c.tree, rev.to_string())], b't', &mut missing, Some(&mut physical), None);
    if reach.insert(id) {
        physical += store.stored_len(&id).unwrap_or(0);
    }
    Ok(DuReport {
        commit: id,
        files: files.len() as u64,
        logical_bytes: files.iter().map(|(_, e)| e.size).sum(),
        physical_bytes: physical,
        objects: reach.len() as u64,
        store_bytes: store.packs().iter().map(|p| p.file_len()).sum(),
    })
}

