//! The store on disk (`.cohort/`): packs of immutable objects, the operation log that holds
//! the refs, the writer lock, and the sled index.
//!
//! The truth is the objects: commits, trees and files in packs, and operations that record
//! every change of refs. The only mutable file that matters is `op_head`, replaced atomically,
//! naming the newest operation. A crash before that rename leaves the store as it was (the new
//! pack is unreachable garbage for `gc`); after it, the commit is complete.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::fsutil;
use crate::id::ObjectId;
use crate::index::{Index, IndexError};
use crate::object::{Commit, DicomFile, Head, ObjectError, Operation, Structured, Tree, View};
use crate::pack::{self, Hint, Pack, PackError, PackWriter};

pub const STORE_DIR: &str = ".cohort";
pub const FORMAT_MAGIC: &str = "cohort-store";
pub const FORMAT_VERSION: u32 = 1;
const OP_HEAD_MAGIC: &str = "cohort-op-head 1";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no cohort store found at {0} or any parent folder (run `cohort init`)")]
    NotFound(PathBuf),
    #[error("a cohort store already exists at {0}")]
    AlreadyExists(PathBuf),
    #[error("{path}: store format {found} is not supported (this cohort reads format {FORMAT_VERSION})")]
    Format { path: PathBuf, found: String },
    #[error("the store at {0} is in use by another cohort process (one writer at a time); try again when it has finished")]
    Locked(PathBuf),
    #[error("{path}: corrupt operation head: {reason}")]
    BadOpHead { path: PathBuf, reason: String },
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No lock, no index: log, show, ls, diff, fsck, du.
    Read,
    /// Takes the writer lock and opens the index.
    Write,
}

pub struct Store {
    /// The `.cohort` folder.
    pub dir: PathBuf,
    packs: RwLock<Vec<Arc<Pack>>>,
    _lock: Option<File>,
    index: Option<Index>,
    /// Set when the index was found damaged on open and started again empty (see
    /// [`Index::open_or_rebuild`]): what sled reported.
    pub index_damage: Option<String>,
}

impl Store {
    pub fn packs_dir(&self) -> PathBuf {
        self.dir.join("packs")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    fn op_head_path(&self) -> PathBuf {
        self.dir.join("op_head")
    }

    /// Create a store in `dir` (the `.cohort` folder itself), with an initial operation whose
    /// view has HEAD on the unborn branch `main`.
    pub fn init(dir: &Path, user: &str, time_us: i64, command: Vec<String>) -> Result<Store, StoreError> {
        if dir.join("format").exists() {
            return Err(StoreError::AlreadyExists(dir.to_path_buf()));
        }
        for sub in ["packs", "tmp", "cache"] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err(dir))?;
        }
        let store = Store {
            dir: dir.to_path_buf(),
            packs: RwLock::new(Vec::new()),
            _lock: None,
            index: None,
            index_damage: None,
        };
        let op = Operation {
            parents: vec![],
            time_us,
            user: user.to_string(),
            command,
            description: "initialize store".into(),
            view: View { head: Head::Branch("main".into()), branches: Default::default(), tags: Default::default() },
        };
        let mut w = store.writer()?;
        let op_id = w.put(&op)?;
        store.finish_pack(w)?;
        store.set_op_head(op_id)?;
        // The format file is written last: a folder without it is not a store yet.
        let fmt = format!("{FORMAT_MAGIC}\n{FORMAT_VERSION}\n");
        fsutil::replace_atomic(&dir.join("format"), fmt.as_bytes()).map_err(io_err(dir))?;
        drop(store);
        Store::open(dir, Mode::Write)
    }

    /// Open the store in `dir` (the `.cohort` folder).
    pub fn open(dir: &Path, mode: Mode) -> Result<Store, StoreError> {
        let fmt_path = dir.join("format");
        let fmt = match fs::read_to_string(&fmt_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound(dir.to_path_buf())),
            Err(e) => return Err(StoreError::Io { path: fmt_path, source: e }),
        };
        let mut lines = fmt.lines();
        if lines.next() != Some(FORMAT_MAGIC) {
            return Err(StoreError::Format { path: fmt_path, found: fmt.chars().take(40).collect() });
        }
        let ver = lines.next().unwrap_or("");
        if ver != FORMAT_VERSION.to_string() {
            return Err(StoreError::Format { path: fmt_path, found: ver.to_string() });
        }
        let lock = if mode == Mode::Write {
            let lp = dir.join("lock");
            let f = File::options().create(true).truncate(false).write(true).open(&lp).map_err(io_err(&lp))?;
            match f.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_path_buf())),
                Err(TryLockError::Error(e)) => return Err(StoreError::Io { path: lp, source: e }),
            }
            Some(f)
        } else {
            None
        };
        let mut store = Store { dir: dir.to_path_buf(), packs: RwLock::new(Vec::new()), _lock: lock, index: None, index_damage: None };
        store.reload_packs()?;
        if mode == Mode::Write {
            let (index, damage) = Index::open_or_rebuild(&dir.join("index"))?;
            store.index = Some(index);
            store.index_damage = damage;
        }
        Ok(store)
    }

    /// Find the store for a working folder: `start` or the nearest parent holding `.cohort`.
    pub fn discover(start: &Path) -> Result<PathBuf, StoreError> {
        let mut cur = Some(start);
        while let Some(d) = cur {
            if d.join(STORE_DIR).join("format").is_file() {
                return Ok(d.to_path_buf());
            }
            cur = d.parent();
        }
        Err(StoreError::NotFound(start.to_path_buf()))
    }

    /// Re-read the list of packs (complete packs are those with an index).
    pub fn reload_packs(&self) -> Result<(), StoreError> {
        let pd = self.packs_dir();
        let mut names = Vec::new();
        for e in fs::read_dir(&pd).map_err(io_err(&pd))? {
            let e = e.map_err(io_err(&pd))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = n.strip_suffix(".idx") {
                names.push(stem.to_string());
            }
        }
        names.sort();
        let mut packs = Vec::with_capacity(names.len());
        for n in names {
            packs.push(Arc::new(Pack::open(&pd, &n)?));
        }
        *self.packs.write().expect("pack list lock") = packs;
        Ok(())
    }

    pub fn packs(&self) -> Vec<Arc<Pack>> {
        self.packs.read().expect("pack list lock").clone()
    }

    pub fn index(&self) -> &Index {
        self.index.as_ref().expect("index is open in write mode")
    }

    pub fn has_index(&self) -> bool {
        self.index.is_some()
    }

    pub(crate) fn locate(&self, id: &ObjectId) -> Option<(Arc<Pack>, pack::Location)> {
        let packs = self.packs.read().expect("pack list lock");
        packs.iter().rev().find_map(|p| p.find(id).map(|l| (p.clone(), l)))
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.locate(id).is_some()
    }

    /// The stored size of an object (compressed; for a member of a block, its share of the
    /// block), if present.
    pub fn stored_len(&self, id: &ObjectId) -> Option<u64> {
        self.locate(id).map(|(_, l)| l.stored_share())
    }

    /// Read and verify an object's bytes.
    pub fn read(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError> {
        let (p, loc) = self.locate(id).ok_or(PackError::Missing(*id))?;
        Ok(p.read(*id, loc)?)
    }

    pub fn read_tree(&self, id: &ObjectId) -> Result<Tree, StoreError> {
        Ok(Tree::decode(*id, &self.read(id)?)?)
    }
    pub fn read_commit(&self, id: &ObjectId) -> Result<Commit, StoreError> {
        Ok(Commit::from_bytes(*id, &self.read(id)?)?)
    }
    /// The tree of a commit, if there is a commit (an unborn HEAD, a root commit's parent).
    pub fn tree_of(&self, commit: Option<&ObjectId>) -> Result<Option<ObjectId>, StoreError> {
        commit.map(|c| self.read_commit(c).map(|c| c.tree)).transpose()
    }

    pub fn read_structured<T: crate::object::Structured>(&self, id: &ObjectId) -> Result<T, StoreError> {
        Ok(T::from_bytes(*id, &self.read(id)?)?)
    }
    pub fn read_catalog(&self, id: &ObjectId) -> Result<crate::catalog::Catalog, StoreError> {
        self.read_structured(id)
    }
    pub fn read_annotations(&self, id: &ObjectId) -> Result<crate::catalog::AnnotationSet, StoreError> {
        self.read_structured(id)
    }
    pub fn read_split(&self, id: &ObjectId) -> Result<crate::catalog::Split, StoreError> {
        self.read_structured(id)
    }
    /// The catalog of a commit (empty when it has none).
    pub fn catalog_of(&self, commit: &Commit) -> Result<crate::catalog::Catalog, StoreError> {
        match &commit.catalog {
            Some(k) => self.read_catalog(k),
            None => Ok(Default::default()),
        }
    }
    pub fn read_dicom(&self, id: &ObjectId) -> Result<DicomFile, StoreError> {
        Ok(DicomFile::from_bytes(*id, &self.read(id)?)?)
    }
    pub fn read_op(&self, id: &ObjectId) -> Result<Operation, StoreError> {
        Ok(Operation::from_bytes(*id, &self.read(id)?)?)
    }

    /// Copy an object, as stored (no recompression), into a writer of another store.
    pub fn copy_object_to(&self, id: &ObjectId, w: &mut ObjectWriter) -> Result<(), StoreError> {
        if w.contains(id) {
            return Ok(());
        }
        let (p, loc) = self.locate(id).ok_or(PackError::Missing(*id))?;
        // Verify before it enters the other store.
        p.read(*id, loc)?;
        w.copy_from(&p, *id, loc)
    }

    /// Ids of stored objects starting with a hex prefix.
    pub fn find_prefix(&self, prefix: &str) -> Vec<ObjectId> {
        let mut out = Vec::new();
        for p in self.packs() {
            p.find_prefix(prefix, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    pub fn writer(&self) -> Result<ObjectWriter, StoreError> {
        Ok(ObjectWriter { pack: PackWriter::create(&self.packs_dir(), &self.tmp_dir())? })
    }

    /// Make a writer's pack durable and visible to this store.
    pub fn finish_pack(&self, w: ObjectWriter) -> Result<(), StoreError> {
        if let Some(name) = w.pack.finish()? {
            let p = Pack::open(&self.packs_dir(), &name)?;
            self.packs.write().expect("pack list lock").push(Arc::new(p));
        }
        Ok(())
    }

    pub fn op_head(&self) -> Result<ObjectId, StoreError> {
        let p = self.op_head_path();
        let s = fs::read_to_string(&p).map_err(io_err(&p))?;
        let mut lines = s.lines();
        let bad = |reason: &str| StoreError::BadOpHead { path: p.clone(), reason: reason.to_string() };
        if lines.next() != Some(OP_HEAD_MAGIC) {
            return Err(bad("bad magic"));
        }
        lines.next().and_then(|l| l.parse().ok()).ok_or_else(|| bad("no operation id"))
    }

    fn set_op_head(&self, id: ObjectId) -> Result<(), StoreError> {
        let p = self.op_head_path();
        fsutil::replace_atomic(&p, format!("{OP_HEAD_MAGIC}\n{id}\n").as_bytes()).map_err(io_err(&p))
    }

    pub fn current_op(&self) -> Result<(ObjectId, Operation), StoreError> {
        let id = self.op_head()?;
        Ok((id, self.read_op(&id)?))
    }

    pub fn view(&self) -> Result<View, StoreError> {
        Ok(self.current_op()?.1.view)
    }

    /// Publish a new view: the operation goes into `w`'s pack, the pack is made durable, then
    /// `op_head` is switched atomically. This is the single point where a change becomes visible.
    pub fn publish(&self, mut w: ObjectWriter, meta: OpMeta, view: View) -> Result<ObjectId, StoreError> {
        let parent = self.op_head()?;
        let op = Operation {
            parents: vec![parent],
            time_us: meta.time_us,
            user: meta.user,
            command: meta.command,
            description: meta.description,
            view,
        };
        let id = w.put(&op)?;
        self.finish_pack(w)?;
        self.set_op_head(id)?;
        Ok(id)
    }

    /// Point `op_head` at an existing operation (for `op undo`, which records its own op first).
    pub fn restore_op_head(&self, id: ObjectId) -> Result<(), StoreError> {
        self.read_op(&id)?;
        self.set_op_head(id)
    }
}

/// Who and what an operation records.
#[derive(Debug, Clone)]
pub struct OpMeta {
    pub user: String,
    pub time_us: i64,
    pub command: Vec<String>,
    pub description: String,
}

/// Collects new objects into one pack.
pub struct ObjectWriter {
    pub(crate) pack: PackWriter,
}

impl ObjectWriter {
    pub fn put<T: Structured>(&mut self, obj: &T) -> Result<ObjectId, StoreError> {
        let bytes = obj.to_bytes();
        let id = ObjectId::of(&bytes);
        if !self.pack.contains(&id) {
            self.pack.add(pack::encode(id, &bytes, Hint::Generic))?;
        }
        Ok(id)
    }

    pub fn put_blob(&mut self, bytes: &[u8], hint: Hint) -> Result<ObjectId, StoreError> {
        let id = ObjectId::of(bytes);
        if !self.pack.contains(&id) {
            self.pack.add(pack::encode(id, bytes, hint))?;
        }
        Ok(id)
    }

    /// Add an object compressed beforehand; many threads may call this at once.
    pub fn add_encoded(&self, e: pack::Encoded) -> Result<(), StoreError> {
        Ok(self.pack.add(e)?)
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.pack.contains(id)
    }

    pub fn len(&self) -> usize {
        self.pack.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pack.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.pack.bytes()
    }

    pub fn copy_from(&mut self, p: &Pack, id: ObjectId, loc: pack::Location) -> Result<(), StoreError> {
        Ok(self.pack.copy_from(p, id, loc)?)
    }
}
