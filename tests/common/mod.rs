//! Shared helpers for the integration tests: run the binary in a temp folder with the user
//! and clock pinned, and compare folders byte by byte.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cohort::dicom::synth::SynthSpec;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cohort"))
}

/// A `cohort` command run in `dir`, with a pinned user and clock.
pub fn cohort(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir).env("COHORT_USER", "tester").env("COHORT_TIME", "2026-01-02T03:04:05Z").env_remove("USER");
    c
}

/// Run and require success; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = cohort(dir).args(args).output().expect("run cohort");
    assert!(o.status.success(), "cohort {args:?} failed ({:?}):\nstdout: {}\nstderr: {}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).expect("utf-8 output")
}

/// Run and require failure; returns the output.
/// A temporary folder with an empty store in it.
pub fn repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    ok(d.path(), &["init"]);
    d
}

pub fn fails(dir: &Path, args: &[&str]) -> Output {
    let o = cohort(dir).args(args).output().expect("run cohort");
    assert!(!o.status.success(), "cohort {args:?} should have failed:\nstdout: {}", String::from_utf8_lossy(&o.stdout));
    o
}

pub fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(dir, args)).expect("valid JSON")
}

/// Every file below `root` (not `.cohort`), as path → bytes; symlinks as "-> target".
pub fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".cohort" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&p).unwrap().display()).into_bytes());
            } else if m.is_dir() {
                rec(root, &p, out);
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    rec(root, root, &mut out);
    out
}

pub fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// A UID under the 2.25 root, derived from a test file's namespace and a label: stable from run
/// to run, and different between test files.
pub fn test_uid(ns: &str, what: &str) -> String {
    let h = blake3::hash(format!("cohort {ns} test {what}").as_bytes());
    let n = u128::from_le_bytes(h.as_bytes()[..16].try_into().unwrap()) >> 1 | 1;
    format!("2.25.{n}")
}

/// A fake CT instance: patient FAKEpppp, study `st`, series `se`, instance `i`, `size`×`size`
/// pixels seeded by its SOP Instance UID, UIDs in the test file's namespace `ns`.
pub fn fake_ct(ns: &str, p: usize, st: usize, se: usize, i: usize, size: u16) -> SynthSpec {
    let mut s = SynthSpec::ct(p, st, se, i);
    s.patient_id = format!("FAKE{p:04}");
    s.patient_name = format!("FAKE^PATIENT{p:04}");
    s.study_uid = test_uid(ns, &format!("study {p} {st}"));
    s.series_uid = test_uid(ns, &format!("series {p} {st} {se}"));
    s.sop_uid = test_uid(ns, &format!("sop {p} {st} {se} {i}"));
    s.pixel_seed = u64::from_le_bytes(blake3::hash(s.sop_uid.as_bytes()).as_bytes()[..8].try_into().unwrap());
    s.rows = size;
    s.columns = size;
    s
}
