//! The sled index: everything in it can be rebuilt from the objects (`cohort reindex`).
//!
//! Trees (sled's name for tables):
//! - `stat`: working-tree path → [`StatEntry`] (size, times, inode, and the entry id its content
//!   hashed to), so `status` re-reads only files whose stat changed.
//! - `uid`: `UID \0 record-id` → nothing: DICOM UID (patient id, study, series or SOP instance)
//!   to the DICOM records that carry it.
//! - `introduced`: `entry-id commit-id` → path: the commits where an entry first appeared.
//! - `indexed`: commit id → nothing: commits whose entries are in `uid` and `introduced`.
//! - `meta`: `applied_op` → the operation up to which the lookups have caught up. Lookups are
//!   filled lazily, when a command needs them, so that a commit pays only for its own objects.
//!
//! Keep this interface small: sled 0.34 is the last stable release, and this is the only file
//! that knows it is sled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};

use crate::id::ObjectId;
use crate::object::EntryKind;

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index at {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("index at {path}: corrupt entry in {table}: {reason}")]
    Corrupt { path: PathBuf, table: &'static str, reason: String },
}

/// What the stat cache knows about one working-tree file.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct StatEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
    pub kind: EntryKind,
    pub id: ObjectId,
}

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding()
}

pub struct Index {
    path: PathBuf,
    db: sled::Db,
    stat: sled::Tree,
    uid: sled::Tree,
    introduced: sled::Tree,
    meta: sled::Tree,
    indexed: sled::Tree,
}

/// Which UID a `uid` key holds, as a one-byte prefix.
#[derive(Debug, Clone, Copy)]
pub enum UidKind {
    Patient = b'P' as isize,
    Study = b'S' as isize,
    Series = b'E' as isize,
    Instance = b'I' as isize,
}

impl Index {
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let err = |source| IndexError::Sled { path: path.to_path_buf(), source };
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .open()
            .map_err(err)?;
        let t = |name: &str| db.open_tree(name).map_err(err);
        Ok(Index {
            stat: t("stat")?,
            uid: t("uid")?,
            introduced: t("introduced")?,
            meta: t("meta")?,
            indexed: t("indexed")?,
            path: path.to_path_buf(),
            db,
        })
    }

    fn err(&self) -> impl Fn(sled::Error) -> IndexError + '_ {
        |source| IndexError::Sled { path: self.path.clone(), source }
    }

    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush().map_err(self.err())?;
        Ok(())
    }

    pub fn applied_op(&self) -> Result<Option<ObjectId>, IndexError> {
        Ok(self
            .meta
            .get(b"applied_op")
            .map_err(self.err())?
            .and_then(|v| ObjectId::from_slice(&v)))
    }

    pub fn set_applied_op(&self, op: ObjectId) -> Result<(), IndexError> {
        self.meta.insert(b"applied_op", &op.0[..]).map_err(self.err())?;
        Ok(())
    }

    /// The whole stat cache (paths use `/`).
    pub fn load_stat(&self) -> Result<HashMap<String, StatEntry>, IndexError> {
        let mut out = HashMap::new();
        for kv in self.stat.iter() {
            let (k, v) = kv.map_err(self.err())?;
            let corrupt = |reason: String| IndexError::Corrupt { path: self.path.clone(), table: "stat", reason };
            let key = String::from_utf8(k.to_vec()).map_err(|e| corrupt(e.to_string()))?;
            let (e, _): (StatEntry, usize) =
                bincode::decode_from_slice(&v, cfg()).map_err(|e| corrupt(format!("{key}: {e}")))?;
            out.insert(key, e);
        }
        Ok(out)
    }

    /// Apply changes to the stat cache in one atomic batch.
    pub fn update_stat(&self, set: &[(String, StatEntry)], remove: &[String]) -> Result<(), IndexError> {
        let mut b = sled::Batch::default();
        for (k, v) in set {
            b.insert(k.as_bytes(), bincode::encode_to_vec(v, cfg()).expect("vec encoding"));
        }
        for k in remove {
            b.remove(k.as_bytes());
        }
        self.stat.apply_batch(b).map_err(self.err())?;
        Ok(())
    }

    pub fn clear_stat(&self) -> Result<(), IndexError> {
        self.stat.clear().map_err(self.err())?;
        Ok(())
    }

    /// Record that `record` (a DICOM record) carries `uid`.
    pub fn add_uids(&self, items: &[(UidKind, String, ObjectId)]) -> Result<(), IndexError> {
        let mut b = sled::Batch::default();
        for (kind, uid, rec) in items {
            let mut k = Vec::with_capacity(uid.len() + 34);
            k.push(*kind as u8);
            k.extend_from_slice(uid.as_bytes());
            k.push(0);
            k.extend_from_slice(&rec.0);
            b.insert(k, &[][..]);
        }
        self.uid.apply_batch(b).map_err(self.err())?;
        Ok(())
    }

    /// DICOM records that carry `uid`.
    pub fn records_with_uid(&self, kind: UidKind, uid: &str) -> Result<Vec<ObjectId>, IndexError> {
        let mut prefix = vec![kind as u8];
        prefix.extend_from_slice(uid.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.uid.scan_prefix(&prefix) {
            let (k, _) = kv.map_err(self.err())?;
            if let Some(id) = ObjectId::from_slice(&k[prefix.len()..]) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Record that entries first appeared (at a path) in a commit.
    pub fn add_introduced(&self, items: &[(ObjectId, ObjectId, String)]) -> Result<(), IndexError> {
        let mut b = sled::Batch::default();
        for (entry, commit, path) in items {
            let mut k = Vec::with_capacity(64);
            k.extend_from_slice(&entry.0);
            k.extend_from_slice(&commit.0);
            b.insert(k, path.as_bytes());
        }
        self.introduced.apply_batch(b).map_err(self.err())?;
        Ok(())
    }

    /// Commits (and paths) where an entry was added or changed to this id.
    pub fn introduced_in(&self, entry: ObjectId) -> Result<Vec<(ObjectId, String)>, IndexError> {
        let mut out = Vec::new();
        for kv in self.introduced.scan_prefix(entry.0) {
            let (k, v) = kv.map_err(self.err())?;
            if let Some(c) = ObjectId::from_slice(&k[32..]) {
                out.push((c, String::from_utf8_lossy(&v).into_owned()));
            }
        }
        Ok(out)
    }

    pub fn is_indexed(&self, commit: ObjectId) -> Result<bool, IndexError> {
        self.indexed.contains_key(commit.0).map_err(self.err())
    }

    pub fn mark_indexed(&self, commit: ObjectId) -> Result<(), IndexError> {
        self.indexed.insert(commit.0, &[][..]).map_err(self.err())?;
        Ok(())
    }

    /// Drop the lookup indexes (not the stat cache, which describes the working tree).
    pub fn clear_lookups(&self) -> Result<(), IndexError> {
        self.uid.clear().map_err(self.err())?;
        self.introduced.clear().map_err(self.err())?;
        self.indexed.clear().map_err(self.err())?;
        self.meta.remove(b"applied_op").map_err(self.err())?;
        Ok(())
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        (self.stat.len(), self.uid.len(), self.introduced.len())
    }
}
