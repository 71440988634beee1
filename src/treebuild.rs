//! Building a Merkle tree from a flat list of paths (for commits made from stored objects
//! rather than from the working tree: de-identification, annotations, splits).

use std::collections::BTreeMap;

use crate::id::ObjectId;
use crate::object::{valid_name, EntryKind, Structured, Tree, TreeEntry};
use crate::store::{ObjectWriter, Store, StoreError};

/// Errors building a tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeBuildError {
    #[error("path {0:?} is not a valid relative path of safe components")]
    BadPath(String),
    #[error("path {0:?} is both a file and a folder")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Default)]
struct Dir {
    files: BTreeMap<String, (EntryKind, ObjectId, u64)>,
    dirs: BTreeMap<String, Dir>,
}

/// Build and write (into `w`, unless already stored) the trees holding `files`
/// (path → kind, id, size). Returns the root tree id and the total size.
pub fn build(store: &Store, w: &mut ObjectWriter, files: &[(String, EntryKind, ObjectId, u64)]) -> Result<(ObjectId, u64), TreeBuildError> {
    let mut root = Dir::default();
    for (path, kind, id, size) in files {
        let comps: Vec<&str> = path.split('/').collect();
        if comps.iter().any(|c| !valid_name(c)) {
            return Err(TreeBuildError::BadPath(path.clone()));
        }
        let mut d = &mut root;
        for c in &comps[..comps.len() - 1] {
            if d.files.contains_key(*c) {
                return Err(TreeBuildError::Conflict(path.clone()));
            }
            d = d.dirs.entry(c.to_string()).or_default();
        }
        let name = comps[comps.len() - 1].to_string();
        if d.dirs.contains_key(&name) || d.files.insert(name, (*kind, *id, *size)).is_some() {
            return Err(TreeBuildError::Conflict(path.clone()));
        }
    }
    write_dir(store, w, &root)
}

fn write_dir(store: &Store, w: &mut ObjectWriter, d: &Dir) -> Result<(ObjectId, u64), TreeBuildError> {
    let mut entries = Vec::new();
    for (name, sub) in &d.dirs {
        let (id, size) = write_dir(store, w, sub)?;
        entries.push(TreeEntry { name: name.clone(), kind: EntryKind::Tree, id, size });
    }
    for (name, (kind, id, size)) in &d.files {
        entries.push(TreeEntry { name: name.clone(), kind: *kind, id: *id, size: *size });
    }
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let total = entries.iter().map(|e| e.size).sum();
    let t = Tree { entries };
    let id = t.id();
    if !store.contains(&id) {
        w.put(&t)?;
    }
    Ok((id, total))
}
