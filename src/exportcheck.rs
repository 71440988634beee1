//! `verify-export`: is this folder still exactly what cohort exported? What an ML engineer runs
//! on the GPU box before training, to know the data is the same as last month's.
//!
//! A training export (`export --split`) is checked against its own manifest, which names every
//! file with its size and its id (the cohort object id of a file exported byte for byte, the
//! BLAKE3 of a generated one): no store is needed. A plain export is checked against the tree
//! of the commit it came from. Files are hashed as commit hashes them, in parallel.
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::diff::{self, TreeSource};
use crate::id::ObjectId;
use crate::mlexport::{MANIFEST, MANIFEST_FORMAT};
use crate::object::EntryKind;
use crate::progress::{Progress, Unit};
use crate::store::{Store, StoreError, STORE_DIR};

#[derive(Debug, thiserror::Error)]
pub enum ExportCheckError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a cohort export manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the export folder was checked against, and what differs.
#[derive(Debug, Clone, Serialize)]
pub struct ExportCheck {
    pub folder: PathBuf,
    /// The commit it was exported from (from the manifest, or as given).
    pub commit: ObjectId,
    /// "manifest" or "tree".
    pub against: &'static str,
    pub split: Option<String>,
    pub part: Option<String>,
    pub export_format: Option<String>,
    /// Files expected.
    pub files: usize,
    /// Files present and the same.
    pub same: usize,
    pub missing: Vec<String>,
    pub changed: Vec<ChangedFile>,
    /// Files (and other things) in the folder that the export did not write.
    pub extra: Vec<String>,
    pub clean: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangedFile {
    pub path: String,
    pub problem: String,
}

/// The part of an export's manifest the check reads ([`read_manifest`]).
#[derive(Deserialize)]
pub struct ManifestView {
    format: String,
    version: u32,
    /// The commit it was exported from.
    pub commit: ObjectId,
    split: String,
    part: Option<String>,
    export_format: String,
    files: Vec<ManifestFileView>,
}

#[derive(Deserialize)]
struct ManifestFileView {
    path: String,
    size: u64,
    object: Option<ObjectId>,
    blake3: Option<ObjectId>,
}

/// How a file's id is worked out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Id {
    /// As a commit stores it (a DICOM record, a blob, a link).
    Entry,
    /// BLAKE3 of the bytes.
    Bytes,
}

struct Expected {
    size: Option<u64>,
    id: ObjectId,
    how: Id,
    link: bool,
}

/// What a check is against, for its report.
struct Origin {
    commit: ObjectId,
    against: &'static str,
    split: Option<String>,
    part: Option<String>,
    export_format: Option<String>,
}

/// The export manifest of `dir`, if it has one.
pub fn read_manifest(dir: &Path) -> Result<Option<ManifestView>, ExportCheckError> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ExportCheckError::Read { path, source }),
    };
    let m: ManifestView = serde_json::from_slice(&bytes).map_err(|e| ExportCheckError::BadManifest { path: path.clone(), reason: e.to_string() })?;
    if m.format != MANIFEST_FORMAT || m.version != crate::mlexport::MANIFEST_VERSION {
        return Err(ExportCheckError::BadManifest { path, reason: format!("format {:?} version {}, expected {MANIFEST_FORMAT:?} version {}", m.format, m.version, crate::mlexport::MANIFEST_VERSION) });
    }
    Ok(Some(m))
}

/// Check a training export folder against its manifest (as [`read_manifest`] read it).
pub fn check_manifest(dir: &Path, m: ManifestView, progress: &dyn Progress) -> Result<ExportCheck, ExportCheckError> {
    let mut expected = BTreeMap::new();
    for f in &m.files {
        // A manifest names files inside its folder, never elsewhere.
        if f.path.split('/').any(|c| c.is_empty() || c == "." || c == "..") || f.path.starts_with('/') {
            return Err(ExportCheckError::BadManifest { path: dir.join(MANIFEST), reason: format!("file path {:?} is not a path inside the export folder", f.path) });
        }
        let (id, how) = match (f.object, f.blake3) {
            (Some(id), _) => (id, Id::Entry),
            (None, Some(id)) => (id, Id::Bytes),
            (None, None) => return Err(ExportCheckError::BadManifest { path: dir.join(MANIFEST), reason: format!("file {} has neither an object id nor a BLAKE3", f.path) }),
        };
        expected.insert(f.path.clone(), Expected { size: Some(f.size), id, how, link: false });
    }
    let origin = Origin { commit: m.commit, against: "manifest", split: Some(m.split), part: m.part, export_format: Some(m.export_format) };
    check(dir, expected, origin, progress)
}

/// Check a plain export folder against the tree of the commit it was exported from.
pub fn check_tree(dir: &Path, store: &Store, commit: ObjectId, progress: &dyn Progress) -> Result<ExportCheck, ExportCheckError> {
    let tree = store.read_commit(&commit)?.tree;
    let mut files = Vec::new();
    diff::list_files(&TreeSource { store, extra: None }, &tree, "", &mut files)?;
    let expected = files
        .into_iter()
        .map(|(p, e)| {
            let link = e.kind == EntryKind::Symlink;
            (p, Expected { size: (!link).then_some(e.size), id: e.id, how: Id::Entry, link })
        })
        .collect();
    check(dir, expected, Origin { commit, against: "tree", split: None, part: None, export_format: None }, progress)
}

fn check(dir: &Path, mut expected: BTreeMap<String, Expected>, origin: Origin, progress: &dyn Progress) -> Result<ExportCheck, ExportCheckError> {
    let mut found = Vec::new();
    let mut extra = Vec::new();
    // The manifest is no file of the export it describes.
    walk(dir, "", origin.against == "manifest", &mut found, &mut extra)?;
    let files = expected.len();
    // Each file found is paired with what was expected there; the rest is extra or missing.
    let mut jobs = Vec::new();
    for (rel, meta) in found {
        match expected.remove(&rel) {
            Some(e) => jobs.push((rel, meta, e)),
            None => extra.push(rel),
        }
    }
    let missing: Vec<String> = expected.into_keys().collect();
    progress.stage("checking", Some(jobs.iter().map(|(_, m, _)| m.len()).sum()), Unit::Bytes);
    let results: Vec<Result<Option<ChangedFile>, ExportCheckError>> = jobs
        .par_iter()
        .map(|(rel, meta, e)| {
            let r = compare(dir, rel, meta, e);
            progress.inc(meta.len());
            r
        })
        .collect();
    progress.finish_stage();
    let mut changed = Vec::new();
    for r in results {
        changed.extend(r?);
    }
    extra.sort();
    let same = jobs.len() - changed.len();
    let clean = missing.is_empty() && changed.is_empty() && extra.is_empty();
    let Origin { commit, against, split, part, export_format } = origin;
    Ok(ExportCheck {
        folder: dir.to_path_buf(),
        commit,
        against,
        split,
        part,
        export_format,
        files,
        same,
        missing,
        changed,
        extra,
        clean,
    })
}

/// One file against what was expected of it: None when it is the same.
fn compare(dir: &Path, rel: &str, meta: &fs::Metadata, e: &Expected) -> Result<Option<ChangedFile>, ExportCheckError> {
    let path = dir.join(rel);
    let read_err = |source| ExportCheckError::Read { path: path.clone(), source };
    let differs = |problem: String| Ok(Some(ChangedFile { path: rel.to_string(), problem }));
    let is_link = meta.file_type().is_symlink();
    if is_link != e.link {
        return differs(if is_link { "a symbolic link, not a file".into() } else { "not a symbolic link".into() });
    }
    if is_link {
        let target = fs::read_link(&path).map_err(read_err)?;
        return if ObjectId::of(target.as_os_str().as_bytes()) == e.id { Ok(None) } else { differs(format!("links to {}, not as exported", target.display())) };
    }
    if let Some(size) = e.size.filter(|s| *s != meta.len()) {
        return differs(format!("{} bytes, {size} exported", meta.len()));
    }
    let bytes = crate::fsutil::read_sized(&path, meta.len()).map_err(read_err)?;
    let id = match e.how {
        Id::Entry => crate::worktree::file_id(&bytes, rel, meta.permissions().mode() & 0o111 != 0).1,
        Id::Bytes => ObjectId::of(&bytes),
    };
    if id == e.id {
        Ok(None)
    } else {
        differs(format!("content differs (id {}, {} exported)", id.short(), e.id.short()))
    }
}

/// Every file and link below `dir` (as relative paths), and what is neither (folders are
/// walked; a name that is not UTF-8, a fifo, a device, go to `extra`).
fn walk(dir: &Path, rel: &str, skip_manifest: bool, found: &mut Vec<(String, fs::Metadata)>, extra: &mut Vec<String>) -> Result<(), ExportCheckError> {
    let abs = if rel.is_empty() { dir.to_path_buf() } else { dir.join(rel) };
    let rd = fs::read_dir(&abs).map_err(|source| ExportCheckError::Read { path: abs.clone(), source })?;
    for e in rd {
        let e = e.map_err(|source| ExportCheckError::Read { path: abs.clone(), source })?;
        let name = e.file_name();
        let child = match name.to_str() {
            Some(n) if rel.is_empty() => n.to_string(),
            Some(n) => format!("{rel}/{n}"),
            None => {
                extra.push(format!("{rel}/{}", name.to_string_lossy()).trim_start_matches('/').to_string());
                continue;
            }
        };
        if rel.is_empty() && (child == STORE_DIR || (skip_manifest && child == MANIFEST)) {
            continue;
        }
        let meta = fs::symlink_metadata(e.path()).map_err(|source| ExportCheckError::Read { path: e.path(), source })?;
        if meta.is_dir() {
            walk(dir, &child, skip_manifest, found, extra)?;
        } else if meta.is_file() || meta.file_type().is_symlink() {
            found.push((child, meta));
        } else {
            extra.push(child);
        }
    }
    Ok(())
}
