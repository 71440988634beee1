//! The sled index: everything in it can be rebuilt from the objects (`cohort reindex`).
//!
//! Trees (sled's name for tables):
//! - `stat-buckets`: bucket byte → the [`StatEntry`]s (size, times, inode, and the entry id its
//!   content hashed to) of the working-tree paths whose BLAKE3 starts with that byte, so
//!   `status` re-reads only files whose stat changed. 256 values rather than one key per path:
//!   a commit of 20,000 files spent 0.25 s inserting 20,000 sled keys, one after the other.
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

/// Magic and version at the start of every stat bucket value.
const STAT_MAGIC: &[u8; 8] = b"COHSTAT\0";
const STAT_VERSION: u32 = 1;
/// The tree of stat buckets, and the tree of one key per path that it replaced.
const STAT_TREE: &str = "stat-buckets";
const OLD_STAT_TREE: &str = "stat";

/// The bucket of a working-tree path: the first byte of its BLAKE3.
fn stat_bucket(path: &str) -> u8 {
    blake3::hash(path.as_bytes()).as_bytes()[0]
}

type Bucket = Vec<(String, StatEntry)>;

fn encode_bucket(entries: &Bucket) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + entries.len() * 96);
    v.extend_from_slice(STAT_MAGIC);
    v.extend_from_slice(&STAT_VERSION.to_le_bytes());
    bincode::encode_into_std_write(entries, &mut v, cfg()).expect("vec encoding");
    v
}

fn decode_bucket(v: &[u8]) -> Result<Bucket, String> {
    if v.len() < 12 || &v[..8] != STAT_MAGIC {
        return Err("not a stat bucket (bad magic)".into());
    }
    let version = u32::from_le_bytes(v[8..12].try_into().expect("4 bytes"));
    if version != STAT_VERSION {
        return Err(format!("stat bucket version {version}, this cohort reads {STAT_VERSION}"));
    }
    let (entries, used): (Bucket, usize) = bincode::decode_from_slice(&v[12..], cfg()).map_err(|e| e.to_string())?;
    if used != v.len() - 12 {
        return Err(format!("{} bytes after the entries", v.len() - 12 - used));
    }
    Ok(entries)
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
        // Stores made before the stat buckets kept one key per path: a cache, simply dropped
        // (the next status or commit re-reads the files once).
        if db.tree_names().iter().any(|n| &n[..] == OLD_STAT_TREE.as_bytes()) {
            db.drop_tree(OLD_STAT_TREE).map_err(err)?;
        }
        Ok(Index {
            stat: t(STAT_TREE)?,
            uid: t("uid")?,
            introduced: t("introduced")?,
            meta: t("meta")?,
            indexed: t("indexed")?,
            path: path.to_path_buf(),
            db,
        })
    }

    /// Open the index at `path`; if sled finds it damaged (a process killed while sled
    /// rewrote its files), move it to `<path>.corrupt` (replacing an older one) and start an
    /// empty one. The index only caches what the objects hold: the lookups are rebuilt from
    /// them on first use, the stat cache by reading the files once. Returns the damage found.
    pub fn open_or_rebuild(path: &Path) -> Result<(Index, Option<String>), IndexError> {
        match Index::open(path) {
            Err(IndexError::Sled { source: source @ sled::Error::Corruption { .. }, .. }) => {
                let aside = path.with_extension("corrupt");
                let io = |e: std::io::Error| IndexError::Sled { path: path.to_path_buf(), source: sled::Error::Io(e) };
                if aside.exists() {
                    std::fs::remove_dir_all(&aside).map_err(io)?;
                }
                std::fs::rename(path, &aside).map_err(io)?;
                Ok((Index::open(path)?, Some(source.to_string())))
            }
            other => other.map(|i| (i, None)),
        }
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
            let entries = decode_bucket(&v).map_err(|reason| self.corrupt_stat(&k, reason))?;
            out.extend(entries);
        }
        Ok(out)
    }

    fn corrupt_stat(&self, key: &[u8], reason: String) -> IndexError {
        IndexError::Corrupt { path: self.path.clone(), table: STAT_TREE, reason: format!("bucket {key:02x?}: {reason}") }
    }

    /// Apply changes to the stat cache in one atomic batch: each bucket touched is read,
    /// changed and written back whole.
    pub fn update_stat(&self, set: &[(String, StatEntry)], remove: &[String]) -> Result<(), IndexError> {
        type Changes<'a> = (Vec<&'a (String, StatEntry)>, Vec<&'a String>);
        let mut changes: std::collections::BTreeMap<u8, Changes> = Default::default();
        for e in set {
            changes.entry(stat_bucket(&e.0)).or_default().0.push(e);
        }
        for k in remove {
            changes.entry(stat_bucket(k)).or_default().1.push(k);
        }
        let mut b = sled::Batch::default();
        for (bucket, (sets, removes)) in changes {
            let key = [bucket];
            let mut entries: HashMap<String, StatEntry> = match self.stat.get(key).map_err(self.err())? {
                // A damaged bucket is a cache miss, not an error: it is rewritten from scratch.
                Some(v) => decode_bucket(&v).unwrap_or_default().into_iter().collect(),
                None => HashMap::new(),
            };
            for (k, v) in sets {
                entries.insert(k.clone(), v.clone());
            }
            for k in removes {
                entries.remove(k);
            }
            if entries.is_empty() {
                b.remove(&key[..]);
            } else {
                let mut sorted: Bucket = entries.into_iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                b.insert(&key[..], encode_bucket(&sorted));
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> StatEntry {
        StatEntry { size: n, mtime_ns: n as i64, ctime_ns: 7, ino: n, mode: 0o100644, kind: EntryKind::File, id: ObjectId::of(&n.to_le_bytes()) }
    }

    #[test]
    fn a_damaged_index_is_moved_aside_and_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index");
        {
            let idx = Index::open(&p).unwrap();
            idx.set_applied_op(ObjectId::of(b"op")).unwrap();
            idx.flush().unwrap();
        }
        let (idx, damage) = Index::open_or_rebuild(&p).unwrap();
        assert_eq!((damage, idx.applied_op().unwrap()), (None, Some(ObjectId::of(b"op"))));
        drop(idx);
        // sled's `conf` torn, as by a kill while sled rewrote it.
        let conf = p.join("conf");
        let mut b = std::fs::read(&conf).unwrap();
        b.iter_mut().take(16).for_each(|x| *x ^= 0x5a);
        std::fs::write(&conf, b).unwrap();
        assert!(matches!(Index::open(&p), Err(IndexError::Sled { source: sled::Error::Corruption { .. }, .. })));
        let (idx, damage) = Index::open_or_rebuild(&p).unwrap();
        assert!(damage.is_some_and(|d| d.contains("corrupt")));
        assert_eq!(idx.applied_op().unwrap(), None, "an empty index: the lookups will be rebuilt");
        assert!(p.with_extension("corrupt").join("conf").is_file(), "the damaged one is kept aside");
    }

    #[test]
    fn stat_buckets_round_trip_update_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index")).unwrap();
        let set: Vec<(String, StatEntry)> = (0..1000).map(|i| (format!("p{}/s/IM{i:05}.dcm", i % 7), entry(i))).collect();
        idx.update_stat(&set, &[]).unwrap();
        let loaded = idx.load_stat().unwrap();
        assert_eq!(loaded.len(), 1000);
        assert_eq!(loaded["p3/s/IM00010.dcm"], entry(10));
        // Fewer values than paths: one per bucket touched.
        assert!(idx.stat.len() <= 256 && idx.stat.len() > 200, "{} buckets", idx.stat.len());

        // Change one, remove two, add one; the rest are untouched.
        let remove = vec!["p3/s/IM00010.dcm".to_string(), "p0/s/IM00000.dcm".to_string()];
        idx.update_stat(&[("p1/s/IM00001.dcm".into(), entry(5000)), ("new".into(), entry(1))], &remove).unwrap();
        let loaded = idx.load_stat().unwrap();
        assert_eq!(loaded.len(), 999);
        assert_eq!(loaded["p1/s/IM00001.dcm"], entry(5000));
        assert!(!loaded.contains_key("p3/s/IM00010.dcm"));
        assert_eq!(loaded["p2/s/IM00002.dcm"], entry(2));

        // Removing everything leaves no bucket behind.
        let all: Vec<String> = loaded.keys().cloned().collect();
        idx.update_stat(&[], &all).unwrap();
        assert!(idx.load_stat().unwrap().is_empty());
        assert_eq!(idx.stat.len(), 0);
    }

    #[test]
    fn damaged_stat_bucket_is_named_on_load_and_rewritten_on_update() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index")).unwrap();
        let path = "a/b.dcm".to_string();
        let key = [stat_bucket(&path)];
        idx.stat.insert(key, &b"garbage"[..]).unwrap();
        let err = idx.load_stat().unwrap_err().to_string();
        assert!(err.contains("stat-buckets") && err.contains("bad magic"), "{err}");
        let mut v = encode_bucket(&vec![(path.clone(), entry(1))]);
        v[8] = 9; // a version this build does not know
        idx.stat.insert(key, v).unwrap();
        assert!(idx.load_stat().unwrap_err().to_string().contains("version 9"));
        idx.update_stat(&[(path.clone(), entry(2))], &[]).unwrap();
        assert_eq!(idx.load_stat().unwrap()[&path], entry(2));
    }

    #[test]
    fn the_old_one_key_per_path_stat_tree_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index");
        {
            let db = sled::Config::new().path(&p).open().unwrap();
            db.open_tree(OLD_STAT_TREE).unwrap().insert(b"x.dcm", &b"old"[..]).unwrap();
            db.flush().unwrap();
        }
        let idx = Index::open(&p).unwrap();
        assert!(idx.load_stat().unwrap().is_empty());
        assert!(!idx.db.tree_names().iter().any(|n| &n[..] == OLD_STAT_TREE.as_bytes()));
    }
}
