//! Small durable-file helpers: write to a temp file, fsync, rename, fsync the folder.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Write `bytes` to `path` (created or truncated) and fsync it.
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// fsync a folder, so that renames into it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Atomically replace `path` with `bytes`: temp file beside it, fsync, rename, fsync folder.
pub fn replace_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Read a whole file whose size a `stat` gave just before. For a small file this takes an
/// open, one read, one read that finds the end, and a close: `fs::read` also `stat`s the file
/// again to size its buffer, and std's read loops read 8 KiB at first (on a commit of 20,000
/// small files, 3.6 % of the CPU went to that `stat` alone). The file is read to its end
/// whatever its size now, so the caller can compare.
pub fn read_sized(path: &Path, expected: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    /// Above this, a second `stat` is nothing next to the read, and zeroing the buffer first
    /// would cost more than it saves.
    const SMALL: u64 = 64 << 10;
    if expected > SMALL {
        return fs::read(path);
    }
    let mut f = File::open(path)?;
    // One byte more than expected, so that the read that finds the end needs no new buffer.
    let mut bytes = vec![0u8; expected as usize + 1];
    let mut filled = 0;
    while filled < bytes.len() {
        match f.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if filled < bytes.len() {
        bytes.truncate(filled);
    } else {
        // The file grew since its stat: the rest too.
        f.read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// Remove a file if it exists.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A whole file mapped read-only into memory: its pages are read when first touched.
///
/// Used for pack indexes, which never change once renamed into place: a command that looks
/// up a few objects touches a few pages of each index instead of reading them all (an index
/// holds 65 bytes per object, about 200 MB for a million DICOM instances). A file cut short
/// while it is mapped (only something outside cohort would do that) makes a read past its new
/// end fail with SIGBUS; git maps its pack indexes on the same terms. gc only ever removes
/// index files, which leaves existing maps intact.
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and private, and owned by this value alone; shared
// references only read it.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    pub fn open(path: &Path) -> io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        let f = File::open(path)?;
        let len = usize::try_from(f.metadata()?.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to map"))?;
        if len == 0 {
            return Ok(Mapped { ptr: std::ptr::null_mut(), len: 0 });
        }
        // SAFETY: a fresh read-only private mapping of an open file descriptor, of the file's
        // length; the kernel keeps the mapping valid after the descriptor is closed.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, f.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: unmaps exactly the mapping made in `open`, which nothing uses any more.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever size the caller expects, the whole file comes back: the size it had at its
    /// stat, a file that grew or shrank since, empty and large files.
    #[test]
    fn read_sized_reads_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for len in [0usize, 1, 5, 8191, 8192, 8193, 64 << 10, (64 << 10) + 1, 300_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            fs::write(&path, &bytes).unwrap();
            for expected in [len as u64, (len as u64).saturating_sub(3), len as u64 + 10, 0, 1 << 20] {
                assert_eq!(read_sized(&path, expected).unwrap(), bytes, "{len} bytes, {expected} expected");
            }
        }
        assert!(read_sized(&dir.path().join("missing"), 3).is_err());
    }

    #[test]
    fn mapped_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"hello map").unwrap();
        let m = Mapped::open(&p).unwrap();
        assert_eq!(&m[..], b"hello map");
        // Removing the file leaves the map readable (gc removes index files of open packs).
        fs::remove_file(&p).unwrap();
        assert_eq!(&m[..5], b"hello");
        let e = dir.path().join("empty");
        fs::write(&e, b"").unwrap();
        assert!(Mapped::open(&e).unwrap().is_empty());
        assert!(Mapped::open(&dir.path().join("missing")).is_err());
    }
}
