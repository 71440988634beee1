//! Snapshotting the working tree into a Merkle tree of objects.
//!
//! One walk serves both `status` (hash only) and `commit` (hash, compress, write). Files whose
//! stat matches the stat cache are not read at all; the others are read, split into DICOM
//! header and pixel data where they are DICOM, hashed and (when writing) compressed, in
//! parallel on all cores. Trees are then built bottom-up, so an unchanged folder hashes to the
//! same id as before and every diff below can skip it.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dicom::{self, Analysis};
use crate::id::ObjectId;
use crate::ignorefile::{Ignore, IgnoreError};
use crate::index::StatEntry;
use crate::object::{valid_name, CommitNote, DicomFile, EntryKind, Structured, Tree, TreeEntry};
use crate::pack::{self, Hint};
use crate::progress::{Progress, Unit};
use crate::store::{ObjectWriter, Store, StoreError, STORE_DIR};

/// Errors reading the working tree.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: file name is not valid UTF-8; rename it to commit it")]
    NonUtf8Name { path: PathBuf },
    #[error("{path}: file name {name:?} cannot be stored (it would not be one safe path component)")]
    BadName { path: PathBuf, name: String },
    #[error("{path}: the file changed while it was being read; run the command again")]
    Changed { path: PathBuf },
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A stat cache entry is trusted only if it was recorded this long after the file's mtime, so a
/// file rewritten within the same timestamp tick is never mistaken for unchanged.
const RACY_MARGIN_NS: i64 = 1_500_000_000;

/// What the walk keeps of a file's `lstat`: what the stat cache compares, and the file type
/// (in `mode`). A walk holds one of these for every file of the tree, so it is kept small
/// (std's `Metadata` is about 180 bytes; the absolute path is rebuilt only for files read).
#[derive(Debug, Clone, Copy)]
struct FileStat {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    mode: u32,
}

impl FileStat {
    fn of(meta: &Metadata) -> FileStat {
        FileStat {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            mode: meta.mode(),
        }
    }

    fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

enum Node {
    File { rel: String, stat: FileStat },
    Dir { entries: Vec<(String, Node)> },
}

/// A file, link or DICOM instance, hashed.
#[derive(Debug, Clone)]
struct Hashed {
    kind: EntryKind,
    id: ObjectId,
    size: u64,
    stat: Option<StatEntry>,
    note: Option<String>,
    from_cache: bool,
    /// The stat cache had an entry for this path (used or not).
    cached_path: bool,
}

/// The result of a snapshot.
pub struct Snapshot {
    pub root: ObjectId,
    pub size: u64,
    /// Every tree of the snapshot, by id (the new ones are not in the store in hash-only mode).
    pub trees: HashMap<ObjectId, Tree>,
    /// Files stored whole that looked like DICOM, and other things worth telling.
    pub notes: Vec<CommitNote>,
    /// Distinct DICOM instances read in this snapshot (not those taken from the stat cache).
    /// Only their number is kept: their records are in the store.
    pub dicom_instances: usize,
    pub stat_set: Vec<(String, StatEntry)>,
    pub stat_remove: Vec<String>,
    pub files: u64,
    pub files_read: u64,
    pub bytes_read: u64,
}

fn stat_of(st: &FileStat, kind: EntryKind, id: ObjectId) -> StatEntry {
    StatEntry { size: st.size, mtime_ns: st.mtime_ns, ctime_ns: st.ctime_ns, ino: st.ino, mode: st.mode, kind, id }
}

fn stat_matches(c: &StatEntry, st: &FileStat) -> bool {
    c.size == st.size && c.mtime_ns == st.mtime_ns && c.ctime_ns == st.ctime_ns && c.ino == st.ino && c.mode == st.mode
}

/// One folder of the walk: its entries (sorted by name) and notes about skipped files.
type Walked = (Vec<(String, Node)>, Vec<CommitNote>);

/// Walk a folder; entries are stat'ed and subfolders walked in parallel (a tree of many small
/// files is bound by `statx` calls, which run concurrently).
fn walk(abs: &Path, rel: &str, ignore: &Ignore) -> Result<Walked, WorktreeError> {
    let rd = fs::read_dir(abs).map_err(|source| WorktreeError::Read { path: abs.to_path_buf(), source })?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|source| WorktreeError::Read { path: abs.to_path_buf(), source })?;
        let path = e.path();
        let name = match e.file_name().to_str() {
            Some(n) => n.to_string(),
            None => return Err(WorktreeError::NonUtf8Name { path }),
        };
        if rel.is_empty() && name == STORE_DIR {
            continue;
        }
        let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        if !ignore.is_empty() {
            let is_dir = e.file_type().map_err(|source| WorktreeError::Read { path: path.clone(), source })?.is_dir();
            if ignore.ignored(&child_rel, is_dir) {
                continue;
            }
        }
        if !valid_name(&name) {
            return Err(WorktreeError::BadName { path, name });
        }
        names.push((name, path, child_rel));
    }
    type Child = (Option<(String, Node)>, Vec<CommitNote>);
    let children: Vec<Result<Child, WorktreeError>> = names
        .into_par_iter()
        .map(|(name, path, child_rel)| {
            let meta = fs::symlink_metadata(&path).map_err(|source| WorktreeError::Read { path: path.clone(), source })?;
            let ft = meta.file_type();
            Ok(if ft.is_dir() {
                let (entries, notes) = walk(&path, &child_rel, ignore)?;
                // Like git, folders are recorded through their files: an empty folder is not.
                ((!entries.is_empty()).then_some((name, Node::Dir { entries })), notes)
            } else if ft.is_file() || ft.is_symlink() {
                (Some((name, Node::File { rel: child_rel, stat: FileStat::of(&meta) })), vec![])
            } else {
                let note = "skipped: not a regular file, folder or symbolic link (fifo, socket or device)";
                (None, vec![CommitNote { path: child_rel, note: note.into() }])
            })
        })
        .collect();
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for c in children {
        let (entry, n) = c?;
        out.extend(entry);
        notes.extend(n);
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok((out, notes))
}

fn collect_jobs<'a>(entries: &'a [(String, Node)], out: &mut Vec<(&'a str, &'a FileStat)>) {
    for (_, n) in entries {
        match n {
            Node::File { rel, stat } => out.push((rel, stat)),
            Node::Dir { entries } => collect_jobs(entries, out),
        }
    }
}

/// A `.dcm`/`.dicom` name or the `DICM` magic: a file that was meant to be DICOM.
pub(crate) fn looks_like_dicom(rel: &str, bytes: &[u8]) -> bool {
    let lower = rel.to_ascii_lowercase();
    lower.ends_with(".dcm") || lower.ends_with(".dicom") || (bytes.len() >= 132 && &bytes[128..132] == b"DICM")
}

/// Writes objects into the pack, shared by worker threads.
struct Sink<'a> {
    store: &'a Store,
    writer: Option<&'a ObjectWriter>,
}

impl Sink<'_> {
    fn put(&self, id: ObjectId, bytes: &[u8], hint: Hint) -> Result<(), StoreError> {
        let Some(w) = self.writer else { return Ok(()) };
        if self.store.contains(&id) || w.contains(&id) {
            return Ok(());
        }
        w.add_encoded(pack::encode(id, bytes, hint))
    }
}

/// Split file bytes into objects (DICOM parts and record, or one blob) and store them with
/// `writer`. Returns the entry kind (DICOM or not), the id and a note for the commit summary.
pub(crate) fn store_file_bytes(
    bytes: &[u8],
    rel: &str,
    executable: bool,
    store: &Store,
    writer: Option<&ObjectWriter>,
) -> Result<(EntryKind, ObjectId, Option<String>), StoreError> {
    let sink = Sink { store, writer };
    split_file(bytes, rel, executable, &|id, b, hint, _| sink.put(id, b, hint))
}

/// The entry kind and id a file's bytes get in a tree, as commit and status work them out,
/// with nothing stored (`rel` is the file's path, for the DICOM-or-not guess of a note).
pub fn file_id(bytes: &[u8], rel: &str, executable: bool) -> (EntryKind, ObjectId) {
    match split_file(bytes, rel, executable, &|_, _, _, _| Ok::<(), std::convert::Infallible>(())) {
        Ok((kind, id, _)) => (kind, id),
        Err(never) => match never {},
    }
}

/// The objects a file's bytes make, as commit splits them, but for its pixel data (the
/// DICOM record and header, or the whole file), with the entry kind and id: what a diff of
/// the working tree reads of a file that is not stored.
pub fn file_objects(bytes: &[u8], rel: &str) -> (EntryKind, ObjectId, Vec<(ObjectId, Vec<u8>)>) {
    let objects = std::cell::RefCell::new(Vec::new());
    let (kind, id) = match split_file(bytes, rel, false, &|id, b: &[u8], _, pixels| {
        if !pixels {
            objects.borrow_mut().push((id, b.to_vec()));
        }
        Ok::<(), std::convert::Infallible>(())
    }) {
        Ok((kind, id, _)) => (kind, id),
        Err(never) => match never {},
    };
    (kind, id, objects.into_inner())
}

/// Split file bytes into objects (DICOM parts and record, or one blob) and hand each to `put`,
/// with its compression hint and whether it is the pixel data.
fn split_file<E, F: Fn(ObjectId, &[u8], Hint, bool) -> Result<(), E>>(bytes: &[u8], rel: &str, executable: bool, put: &F) -> Result<(EntryKind, ObjectId, Option<String>), E> {
    match dicom::analyze(bytes) {
        Analysis::Dicom(layout) => {
            let rec = match layout.pixel {
                Some(px) => {
                    let (es, vs, ve) = (px.element_start as usize, px.value_start as usize, px.value_end as usize);
                    let header = &bytes[..es];
                    let pixels = &bytes[vs..ve];
                    let hint = if px.encapsulated {
                        Hint::Incompressible
                    } else if px.bits_allocated == Some(16) && !px.big_endian {
                        Hint::Pixels16
                    } else {
                        Hint::Generic
                    };
                    let hid = ObjectId::of(header);
                    let pid = ObjectId::of(pixels);
                    put(hid, header, Hint::Generic, false)?;
                    put(pid, pixels, hint, true)?;
                    DicomFile {
                        header: hid,
                        pixel_element: bytes[es..vs].to_vec(),
                        pixel: Some(pid),
                        trailer: bytes[ve..].to_vec(),
                        size: bytes.len() as u64,
                        info: layout.summary,
                    }
                }
                None => {
                    let hid = ObjectId::of(bytes);
                    put(hid, bytes, Hint::Generic, false)?;
                    DicomFile {
                        header: hid,
                        pixel_element: vec![],
                        pixel: None,
                        trailer: vec![],
                        size: bytes.len() as u64,
                        info: layout.summary,
                    }
                }
            };
            let rb = rec.to_bytes();
            let rid = ObjectId::of(&rb);
            put(rid, &rb, Hint::Generic, false)?;
            Ok((EntryKind::Dicom, rid, None))
        }
        Analysis::NotDicom { reason } => {
            let id = ObjectId::of(bytes);
            put(id, bytes, Hint::Generic, false)?;
            let note = looks_like_dicom(rel, bytes).then(|| format!("stored whole, not as DICOM: {reason}"));
            let kind = if executable { EntryKind::Executable } else { EntryKind::File };
            Ok((kind, id, note))
        }
    }
}

fn hash_one(
    root: &Path,
    rel: &str,
    st: &FileStat,
    cache: &HashMap<String, StatEntry>,
    store: &Store,
    writer: Option<&ObjectWriter>,
    now_ns: i64,
) -> Result<Hashed, WorktreeError> {
    let cached = cache.get(rel);
    let cached_path = cached.is_some();
    // Symbolic links are read every time (they have no stat entry).
    if let Some(c) = cached.filter(|c| !st.is_symlink() && stat_matches(c, st) && (writer.is_none() || store.contains(&c.id))) {
        return Ok(Hashed { kind: c.kind, id: c.id, size: c.size, stat: None, note: None, from_cache: true, cached_path });
    }
    // Only now: a status of an unchanged tree never builds the absolute paths.
    let abs = root.join(rel);
    let read_err = |source| WorktreeError::Read { path: abs.clone(), source };
    if st.is_symlink() {
        let target = fs::read_link(&abs).map_err(read_err)?;
        let b = target.as_os_str().as_bytes();
        let id = ObjectId::of(b);
        Sink { store, writer }.put(id, b, Hint::Generic)?;
        return Ok(Hashed { kind: EntryKind::Symlink, id, size: b.len() as u64, stat: None, note: None, from_cache: false, cached_path });
    }
    let bytes = crate::fsutil::read_sized(&abs, st.size).map_err(read_err)?;
    if bytes.len() as u64 != st.size {
        return Err(WorktreeError::Changed { path: abs });
    }
    let executable = st.mode & 0o111 != 0;
    let (kind, id, note) = store_file_bytes(&bytes, rel, executable, store, writer)?;
    let entry = stat_of(st, kind, id);
    let racy = now_ns - entry.mtime_ns < RACY_MARGIN_NS || now_ns - entry.ctime_ns < RACY_MARGIN_NS;
    Ok(Hashed {
        kind,
        id,
        size: bytes.len() as u64,
        stat: (!racy).then_some(entry),
        note,
        from_cache: false,
        cached_path,
    })
}

/// Snapshot the working tree at `root`. With `writer`, every object not yet stored is written.
pub fn snapshot(
    root: &Path,
    store: &Store,
    cache: &HashMap<String, StatEntry>,
    writer: Option<&ObjectWriter>,
    progress: &dyn Progress,
) -> Result<Snapshot, WorktreeError> {
    let (tree, notes) = walk(root, "", &Ignore::load(root)?)?;
    // Depth-first over sorted entries: build_tree consumes the results in this same order.
    let mut jobs = Vec::new();
    collect_jobs(&tree, &mut jobs);
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);

    progress.stage(if writer.is_some() { "committing" } else { "scanning" }, Some(jobs.len() as u64), Unit::Files);
    // Collected in place, in walk order (an indexed collect; collecting into a Result gathers
    // per-thread lists and copies them once more), then checked: the error reported is the
    // first in walk order, whatever thread met it first.
    let mut results = Vec::with_capacity(jobs.len());
    jobs.par_iter()
        .map(|(rel, st)| {
            let r = hash_one(root, rel, st, cache, store, writer, now_ns);
            progress.inc(1);
            r
        })
        .collect_into_vec(&mut results);
    let mut results: Vec<Hashed> = results.into_iter().collect::<Result<_, _>>()?;
    progress.finish_stage();

    let mut snap = Snapshot {
        root: ObjectId::of(b""),
        size: 0,
        trees: HashMap::new(),
        notes,
        dicom_instances: 0,
        stat_set: Vec::new(),
        stat_remove: Vec::new(),
        files: results.len() as u64,
        files_read: 0,
        bytes_read: 0,
    };
    let mut cached_paths = 0usize;
    let mut dicom_read = std::collections::HashSet::new();
    for ((rel, _), h) in jobs.iter().zip(&mut results) {
        if let Some(n) = h.note.take() {
            snap.notes.push(CommitNote { path: rel.to_string(), note: n });
        }
        if h.kind == EntryKind::Dicom && !h.from_cache {
            dicom_read.insert(h.id);
        }
        cached_paths += usize::from(h.cached_path);
        if !h.from_cache && h.kind != EntryKind::Symlink {
            snap.files_read += 1;
            snap.bytes_read += h.size;
        }
        match &h.stat {
            Some(st) => snap.stat_set.push((rel.to_string(), st.clone())),
            None if !h.from_cache && h.cached_path => snap.stat_remove.push(rel.to_string()),
            None => {}
        }
    }
    snap.dicom_instances = dicom_read.len();
    // Entries of paths no longer in the tree: only looked for when some cache entry was not
    // met by a path of this walk.
    if cached_paths < cache.len() {
        let live: std::collections::HashSet<&str> = jobs.iter().map(|(r, _)| *r).collect();
        snap.stat_remove.extend(cache.keys().filter(|k| !live.contains(k.as_str())).cloned());
    }

    let mut cursor = results.iter();
    let (root_id, size) = build_tree(&tree, &mut cursor, store, writer, &mut snap.trees)?;
    snap.root = root_id;
    snap.size = size;
    snap.notes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(snap)
}

fn build_tree(
    entries: &[(String, Node)],
    results: &mut std::slice::Iter<'_, Hashed>,
    store: &Store,
    writer: Option<&ObjectWriter>,
    trees: &mut HashMap<ObjectId, Tree>,
) -> Result<(ObjectId, u64), StoreError> {
    let mut t = Tree { entries: Vec::with_capacity(entries.len()) };
    let mut total = 0u64;
    for (name, node) in entries {
        let e = match node {
            Node::File { .. } => {
                let h = results.next().expect("one result per file, in walk order");
                TreeEntry { name: name.clone(), kind: h.kind, id: h.id, size: h.size }
            }
            Node::Dir { entries } => {
                let (id, size) = build_tree(entries, results, store, writer, trees)?;
                TreeEntry { name: name.clone(), kind: EntryKind::Tree, id, size }
            }
        };
        total += e.size;
        t.entries.push(e);
    }
    let bytes = t.to_bytes();
    let id = ObjectId::of(&bytes);
    if let Some(w) = writer {
        if !store.contains(&id) && !w.contains(&id) {
            w.add_encoded(pack::encode(id, &bytes, Hint::Generic))?;
        }
    }
    trees.insert(id, t);
    Ok((id, total))
}
