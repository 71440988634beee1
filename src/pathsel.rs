//! Paths named on the command line (`cat`, `restore`, `export REV OUT PATH...`): made into
//! paths of a tree, relative to the working folder's root, and the files of a tree under them.
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::diff::{self, TreeSource};
use crate::id::ObjectId;
use crate::object::{EntryKind, TreeEntry};
use crate::store::{StoreError, STORE_DIR};

#[derive(Debug, thiserror::Error)]
pub enum PathSelError {
    #[error("{arg}: outside the working folder {root}")]
    Outside { arg: PathBuf, root: PathBuf },
    #[error("{arg}: inside the store's own folder {STORE_DIR}/, which no commit holds")]
    InStore { arg: PathBuf },
    #[error("{arg}: not a UTF-8 path (a tree's paths are UTF-8)")]
    NotUtf8 { arg: PathBuf },
    #[error("{path}: no such file or folder in {rev}")]
    NotInRevision { path: String, rev: String },
    #[error("{path}: neither in {rev} nor in the working tree")]
    Nowhere { path: String, rev: String },
    #[error("{path}: a folder in {rev}, not a file (list it with `cohort ls`, or export it)")]
    IsFolder { path: String, rev: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The path in a tree that `arg` names, `arg` being relative to `cwd` (or absolute), for a
/// working folder at `root` (`cwd` and `root` as the file system spells them, canonical). The
/// path is worked out from its words (`.` and `..` included) and need not exist: `cat` and
/// `export` name files of old commits. The root itself is the empty path.
pub fn tree_path(root: &Path, cwd: &Path, arg: &Path) -> Result<String, PathSelError> {
    let joined = cwd.join(arg);
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => parts.clear(),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(s) => parts.push(s),
        }
    }
    let mut abs = PathBuf::from("/");
    abs.extend(&parts);
    let rel = match abs.strip_prefix(root) {
        Ok(r) => r.to_path_buf(),
        // A path spelled through a symbolic link to the working folder: what it is now.
        Err(_) => match std::fs::canonicalize(&abs).ok().and_then(|c| c.strip_prefix(root).ok().map(Path::to_path_buf)) {
            Some(r) => r,
            None => return Err(PathSelError::Outside { arg: arg.to_path_buf(), root: root.to_path_buf() }),
        },
    };
    let Some(s) = rel.to_str() else { return Err(PathSelError::NotUtf8 { arg: arg.to_path_buf() }) };
    if s == STORE_DIR || s.starts_with(&format!("{STORE_DIR}/")) {
        return Err(PathSelError::InStore { arg: arg.to_path_buf() });
    }
    Ok(s.to_string())
}

/// Whether `path` is `under` or inside it (`under` empty: every path).
pub fn is_within(path: &str, under: &str) -> bool {
    under.is_empty() || path == under || (path.starts_with(under) && path.as_bytes().get(under.len()) == Some(&b'/'))
}

/// Whether `path` is at or under any of `paths`.
pub fn is_within_any(path: &str, paths: &[String]) -> bool {
    paths.iter().any(|p| is_within(path, p))
}

/// An error naming the first of `paths` that neither tree has (None: a tree that does not
/// exist, as HEAD before the first commit): a typing mistake, most likely, caught before a
/// command that acts on the paths of both changes anything.
pub fn in_either(paths: &[String], rev: &str, a: (&TreeSource, Option<ObjectId>), b: (&TreeSource, Option<ObjectId>)) -> Result<(), PathSelError> {
    let has = |(src, root): (&TreeSource, Option<ObjectId>), p: &str| -> Result<bool, StoreError> {
        Ok(match root {
            Some(r) => entry_at(src, r, p)?.is_some(),
            None => false,
        })
    };
    for p in paths {
        if !has(a, p)? && !has(b, p)? {
            return Err(PathSelError::Nowhere { path: p.clone(), rev: rev.to_string() });
        }
    }
    Ok(())
}

/// The entry at `path` of the tree `root` (None when absent; the root itself for "").
pub fn entry_at(src: &TreeSource, root: ObjectId, path: &str) -> Result<Option<TreeEntry>, StoreError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() {
        return Ok(Some(TreeEntry { name: String::new(), kind: EntryKind::Tree, id: root, size: 0 }));
    }
    let mut tree = src.tree(&root)?;
    for (i, p) in parts.iter().enumerate() {
        let Some(e) = tree.get(p).cloned() else { return Ok(None) };
        if i + 1 == parts.len() {
            return Ok(Some(e));
        }
        if e.kind != EntryKind::Tree {
            return Ok(None);
        }
        tree = src.tree(&e.id)?;
    }
    Ok(None)
}

/// Hand each file of tree `root` at or under each of `paths` (every file when `paths` is
/// empty) to `f`, path by path as given, in path order within each. A path the tree lacks is
/// an error naming it and `rev`.
pub fn for_each_file_under<E: From<StoreError> + From<PathSelError>>(src: &TreeSource, root: ObjectId, paths: &[String], rev: &str, f: &mut dyn FnMut(String, TreeEntry) -> Result<(), E>) -> Result<(), E> {
    let everything = [String::new()];
    for p in if paths.is_empty() { &everything[..] } else { paths } {
        match entry_at(src, root, p)? {
            None => return Err(PathSelError::NotInRevision { path: p.clone(), rev: rev.to_string() }.into()),
            Some(e) if e.kind == EntryKind::Tree => diff::for_each_file(src, &e.id, p, f)?,
            Some(e) => f(p.clone(), e)?,
        }
    }
    Ok(())
}

/// The files of tree `root` at or under each of `paths` (every file when empty), in path
/// order, each once. A path the tree lacks is an error naming it and `rev`.
pub fn files_under(src: &TreeSource, root: ObjectId, paths: &[String], rev: &str) -> Result<Vec<(String, TreeEntry)>, PathSelError> {
    let mut out = BTreeMap::new();
    for_each_file_under(src, root, paths, rev, &mut |path, e| -> Result<(), PathSelError> {
        out.insert(path, e);
        Ok(())
    })?;
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative_to_the_root() {
        let root = Path::new("/data/ds");
        let t = |cwd: &str, arg: &str| tree_path(root, Path::new(cwd), Path::new(arg));
        assert_eq!(t("/data/ds", "P1/a.dcm").unwrap(), "P1/a.dcm");
        assert_eq!(t("/data/ds/P1", "a.dcm").unwrap(), "P1/a.dcm");
        assert_eq!(t("/data/ds/P1", "./x/../a.dcm").unwrap(), "P1/a.dcm");
        assert_eq!(t("/data/ds/P1", "..").unwrap(), "");
        assert_eq!(t("/data/ds", "P1/").unwrap(), "P1");
        assert_eq!(t("/elsewhere", "/data/ds/P2").unwrap(), "P2");
        assert!(matches!(t("/data/ds", "../other"), Err(PathSelError::Outside { .. })));
        assert!(matches!(t("/data/ds", "/data/dsx/a"), Err(PathSelError::Outside { .. })));
        assert!(matches!(t("/data/ds", ".cohort/packs"), Err(PathSelError::InStore { .. })));
        assert!(matches!(t("/data/ds", ".cohort"), Err(PathSelError::InStore { .. })));
        assert_eq!(t("/data/ds", ".cohortignore").unwrap(), ".cohortignore");
    }

    #[test]
    fn within() {
        assert!(is_within("P1/a", "P1"));
        assert!(is_within("P1", "P1"));
        assert!(!is_within("P10/a", "P1"));
        assert!(is_within("anything", ""));
    }
}
