//! Writing stored files back out: `export` into a new folder and the file writes of `checkout`.
//!
//! Every file is rebuilt from verified objects (each object's hash is checked on read), so an
//! exported file is byte-identical to what was committed. With `--link hardlink` or `reflink`,
//! files are first materialized once into `.cohort/cache/<entry id>` (read-only) and then
//! linked or cloned from there: a second export of the same data costs almost nothing.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::diff::{list_files, TreeSource};
use crate::id::ObjectId;
use crate::object::{EntryKind, TreeEntry};
use crate::progress::{Progress, Unit};
use crate::store::{Store, StoreError};

/// Errors writing files out.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: export folder exists and is not empty (remove it, or export into another folder)")]
    NotEmpty(PathBuf),
    #[error("{path}: reflinks are not supported here ({source}); use --link copy or --link hardlink")]
    ReflinkUnsupported { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot hardlink from the store's cache ({source}); the export folder must be on the same filesystem as the store, or use --link copy")]
    HardlinkFailed { path: PathBuf, source: std::io::Error },
    #[error("{path}: symbolic link target is not valid UTF-8 bytes for this system")]
    BadLink { path: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io { path: path.to_path_buf(), source }
}

/// How exported files are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    Copy,
    Hardlink,
    Reflink,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub files: u64,
    pub bytes: u64,
    pub link: LinkMode,
}

/// Write the exact bytes of a file entry to `w`.
pub fn write_entry_bytes(store: &Store, kind: EntryKind, id: &ObjectId, w: &mut dyn Write, path: &Path) -> Result<(), ExportError> {
    match kind {
        EntryKind::Dicom => {
            let d = store.read_dicom(id)?;
            w.write_all(&store.read(&d.header)?).map_err(io(path))?;
            w.write_all(&d.pixel_element).map_err(io(path))?;
            if let Some(p) = &d.pixel {
                w.write_all(&store.read(p)?).map_err(io(path))?;
            }
            w.write_all(&d.trailer).map_err(io(path))?;
        }
        _ => w.write_all(&store.read(id)?).map_err(io(path))?,
    }
    Ok(())
}

/// Small parts of a file (header, pixel element header, trailer) are gathered; pixel data,
/// larger than this, goes to `write` as it is rather than through the buffer (a copy of every
/// exported byte otherwise).
const WRITE_BUFFER: usize = 64 << 10;

/// Create `dest` with the content of a (non-tree) entry, by copying.
pub fn write_file(store: &Store, e: &TreeEntry, dest: &Path) -> Result<(), ExportError> {
    if e.kind == EntryKind::Symlink {
        let target = store.read(&e.id)?;
        use std::os::unix::ffi::OsStrExt;
        let t = std::ffi::OsStr::from_bytes(&target);
        return symlink(t, dest).map_err(io(dest));
    }
    let f = File::create(dest).map_err(io(dest))?;
    let mut w = BufWriter::with_capacity(WRITE_BUFFER, f);
    write_entry_bytes(store, e.kind, &e.id, &mut w, dest)?;
    let f = w.into_inner().map_err(|e| ExportError::Io { path: dest.to_path_buf(), source: e.into_error() })?;
    if e.kind == EntryKind::Executable {
        f.set_permissions(fs::Permissions::from_mode(0o755)).map_err(io(dest))?;
    }
    Ok(())
}

/// The modification time every cache file is given when it is made: a whole second in
/// 2001–2004 that depends on the entry's id. Writing to a cache file (through a hardlink in an
/// export or a working tree: read-only modes do not stop root) sets its mtime to the present,
/// so a cache file whose mtime or size differs is no longer a copy of its entry.
fn cache_stamp(id: &ObjectId) -> std::time::SystemTime {
    let n = u32::from_le_bytes(id.0[..4].try_into().expect("4 bytes"));
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000 + u64::from(n % 100_000_000))
}

/// Whether the cache file at `path` still is what [`cached`] made for `e`: a regular file of
/// the entry's size with its stamp. (A crash can leave a cache file cut short: it is not
/// fsynced, being a cache.)
fn cache_is_intact(path: &Path, e: &TreeEntry) -> Result<bool, ExportError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(m.is_file() && m.len() == e.size && m.modified().ok() == Some(cache_stamp(&e.id))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(ExportError::Io { path: path.to_path_buf(), source: err }),
    }
}

/// The cached, read-only copy of an entry, made on first use and made again if it was
/// changed since (see [`cache_stamp`]).
fn cached(store: &Store, e: &TreeEntry) -> Result<PathBuf, ExportError> {
    // Sharded by the first two hex digits, like git's loose objects: one flat folder of
    // tens of thousands of files makes every create and link contend on it.
    let hex = e.id.hex();
    let shard = store.cache_dir().join(&hex[..2]);
    let path = shard.join(&hex);
    if cache_is_intact(&path, e)? {
        return Ok(path);
    }
    // The shard folder is made only when the first file in it is: asking for it on every
    // file was a mkdir and a stat more per file (a tenth of a cold export's system calls).
    let tmp = match tempfile::NamedTempFile::new_in(&shard) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(&shard).map_err(io(&shard))?;
            tempfile::NamedTempFile::new_in(&shard)
        }
        r => r,
    }
    .map_err(io(&shard))?;
    {
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, tmp.as_file());
        write_entry_bytes(store, e.kind, &e.id, &mut w, &path)?;
        w.flush().map_err(io(&path))?;
    }
    let f = tmp.as_file();
    f.set_times(fs::FileTimes::new().set_modified(cache_stamp(&e.id))).map_err(io(&path))?;
    let mode = if e.kind == EntryKind::Executable { 0o555 } else { 0o444 };
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(io(&path))?;
    // Replaces a changed copy atomically; files already linked to it keep their content.
    tmp.persist(&path).map_err(|e| ExportError::Io { path: path.clone(), source: e.error })?;
    Ok(path)
}

#[cfg(target_os = "linux")]
fn reflink(src: &Path, dest: &Path) -> Result<(), ExportError> {
    use std::os::fd::AsRawFd;
    const FICLONE: libc::c_ulong = 0x4004_9409;
    let s = File::open(src).map_err(io(src))?;
    let d = File::create(dest).map_err(io(dest))?;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes an fd.
    let r = unsafe { libc::ioctl(d.as_raw_fd(), FICLONE as _, s.as_raw_fd()) };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        drop(d);
        let _ = fs::remove_file(dest);
        return Err(ExportError::ReflinkUnsupported { path: dest.to_path_buf(), source: err });
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn reflink(_src: &Path, dest: &Path) -> Result<(), ExportError> {
    Err(ExportError::ReflinkUnsupported {
        path: dest.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::Unsupported, "reflink is implemented for Linux only"),
    })
}

/// Create `dest` for an entry with the given link mode.
pub fn place(store: &Store, e: &TreeEntry, dest: &Path, mode: LinkMode) -> Result<(), ExportError> {
    if e.kind == EntryKind::Symlink || mode == LinkMode::Copy {
        return write_file(store, e, dest);
    }
    let src = cached(store, e)?;
    match mode {
        LinkMode::Hardlink => fs::hard_link(&src, dest).map_err(|source| ExportError::HardlinkFailed { path: dest.to_path_buf(), source }),
        LinkMode::Reflink => reflink(&src, dest),
        LinkMode::Copy => unreachable!("handled above"),
    }
}

/// Run `write` to fill the folder `out`, which must not exist or be empty, and create it first.
/// If `write` fails, everything it put in `out` is removed again (and `out` itself if it did
/// not exist), so a failed export leaves no half-written dataset that looks complete, and can
/// be run again at once (with `--link copy` after "reflinks are not supported", say). A
/// cleanup that fails is not reported over the error that caused it.
pub fn into_new_folder<T, E: From<ExportError>>(out: &Path, write: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let existed = match fs::read_dir(out) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(ExportError::NotEmpty(out.to_path_buf()).into());
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(out)(e).into()),
    };
    fs::create_dir_all(out).map_err(io(out))?;
    let r = write();
    if r.is_err() {
        if existed {
            if let Ok(rd) = fs::read_dir(out) {
                for e in rd.flatten() {
                    let p = e.path();
                    let _ = if e.file_type().is_ok_and(|t| t.is_dir()) { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                }
            }
        } else {
            let _ = fs::remove_dir_all(out);
        }
    }
    r
}

/// Export the files of a tree into `out` (which must not exist or be empty; see
/// [`into_new_folder`] for what a failure leaves).
pub fn export_tree(store: &Store, tree: ObjectId, out: &Path, mode: LinkMode, progress: &dyn Progress) -> Result<ExportSummary, ExportError> {
    let mut files = Vec::new();
    list_files(&TreeSource { store, extra: None }, &tree, "", &mut files)?;
    export_files(store, &files, out, mode, progress)
}

/// Export `files` (paths and entries, as [`crate::pathsel::files_under`] lists them) into
/// `out`, as [`export_tree`] does.
pub fn export_files(store: &Store, files: &[(String, TreeEntry)], out: &Path, mode: LinkMode, progress: &dyn Progress) -> Result<ExportSummary, ExportError> {
    into_new_folder(out, || {
        write_files(store, out, files, mode, progress)?;
        Ok(ExportSummary { files: files.len() as u64, bytes: files.iter().map(|(_, e)| e.size).sum(), link: mode })
    })
}

/// Write files (paths relative to `root`) in parallel, creating folders as needed.
pub fn write_files(store: &Store, root: &Path, files: &[(String, TreeEntry)], mode: LinkMode, progress: &dyn Progress) -> Result<(), ExportError> {
    let mut dirs: Vec<&str> = files.iter().filter_map(|(p, _)| p.rsplit_once('/').map(|(d, _)| d)).collect();
    dirs.sort_unstable();
    dirs.dedup();
    for d in dirs {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(io(&p))?;
    }
    progress.stage("writing", Some(files.iter().map(|(_, e)| e.size).sum()), Unit::Bytes);
    files.par_iter().try_for_each(|(p, e)| {
        let r = place(store, e, &root.join(p), mode);
        progress.inc(e.size);
        r
    })?;
    progress.finish_stage();
    Ok(())
}
