//! A full disk during commit: the commit fails with a clear error, the store stays as it was
//! (fsck clean, HEAD unchanged), and once space is freed the next commit succeeds.
//! Needs root to mount a small tmpfs (CI runs as root); elsewhere it says so and returns.
mod common;

use std::process::Command;

use common::*;

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect()
}

#[test]
fn commit_on_a_full_disk_fails_cleanly() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"]).arg(&mnt).status();
    if !matches!(st, Ok(s) if s.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); CI runs this test as root");
        return;
    }
    let _m = Mount(mnt.clone());
    let r = mnt.as_path();
    ok(r, &["init"]);
    write(r, "a.bin", &noise(1_200_000, 1));
    let c1 = ok(r, &["commit", "-m", "fits"]).trim().to_string();
    // A file that takes 70% of what is left fits in the tree, but its copy in the store does
    // not.
    let df = Command::new("df").args(["--output=avail", "-B1"]).arg(r).output().unwrap();
    let free: usize = String::from_utf8_lossy(&df.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    write(r, "b.bin", &noise(free * 7 / 10, 2));
    let o = cohort(r).args(["commit", "-m", "too big"]).output().unwrap();
    assert!(!o.status.success(), "commit should fail on a full disk");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device") || err.contains("space"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Nothing half-written is visible: HEAD is the first commit, fsck is clean.
    assert_eq!(json(r, &["log", "--json"])[0]["id"], c1.as_str());
    assert!(ok(r, &["fsck"]).contains("ok"));
    assert!(std::fs::read_dir(r.join(".cohort/tmp")).unwrap().next().is_none(), "temp files cleaned up");
    // Free space: the store works again.
    std::fs::remove_file(r.join("b.bin")).unwrap();
    write(r, "c.txt", b"small");
    ok(r, &["commit", "-m", "after"]);
    assert!(ok(r, &["fsck"]).contains("ok"));
    let out = tempfile::tempdir().unwrap();
    ok(r, &["export", "HEAD", out.path().join("x").to_str().unwrap()]);
    assert_eq!(snapshot(&out.path().join("x")), snapshot(r));
}
