//! End-to-end tests of issue #6: remotes (a folder remote always; S3 against a Garage server
//! when `.ci/run` provides one through COHORT_TEST_S3_*), partial clone, and ingest over
//! DICOMweb from a real Orthanc (started here) and from a scripted server that fails mid-way.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cohort::dicom::synth::{synth_instance, SynthSpec};
use common::*;
use serde_json::Value;

/// Namespace of this file's test UIDs.
const NS: &str = "remote_cli";

fn spec(p: usize, st: usize, se: usize, i: usize) -> SynthSpec {
    fake_ct(NS, p, st, se, i, 16)
}


/// A store with `n` patients of 4 slices, and a 50/50 split.
fn dataset(root: &Path, n: usize) {
    fs::create_dir_all(root).unwrap();
    ok(root, &["init"]);
    for p in 0..n {
        for i in 0..4 {
            write(root, &format!("P{p}/IM{i}.dcm"), &synth_instance(&spec(p, 0, 0, i)));
        }
    }
    write(root, "notes.txt", b"notes\n");
    ok(root, &["commit", "-m", "import"]);
    ok(root, &["split", "create", "--name", "v1", "--ratios", "50,50"]);
}

fn remote_packs(remote: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(remote.join("packs")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// A temp folder holding store `a` with `patients` fake patients (see `dataset`) and a folder
/// remote `remote`, added to `a` as `origin`.
fn with_folder_origin(patients: usize) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let remote = t.path().join("remote");
    dataset(&a, patients);
    ok(&a, &["remote", "add", "origin", remote.to_str().unwrap()]);
    (t, a, remote)
}

#[test]
fn folder_remote_push_clone_fetch_pull_and_resume() {
    let (t, a, remote) = with_folder_origin(4);
    let p = json(&a, &["push", "origin", "--json"]);
    assert!(p["objects_sent"].as_u64().unwrap() > 20, "{p}");
    // Again: nothing to send.
    let p2 = json(&a, &["push", "origin", "--json"]);
    assert_eq!(p2["up_to_date"], true);

    // Clone: byte-identical working tree, same commit.
    let b = t.path().join("b");
    ok(t.path(), &["clone", remote.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(snapshot(&a), snapshot(&b));
    ok(&b, &["fsck"]);
    ok(&b, &["verify"]);

    // A push interrupted after its packs but before the ref: the rerun sends nothing twice.
    write(&a, "P9/IM0.dcm", &synth_instance(&spec(9, 0, 0, 0)));
    ok(&a, &["commit", "-m", "one more"]);
    let head = json(&a, &["log", "--json"])[0]["id"].as_str().unwrap().to_string();
    let before = remote_packs(&remote);
    ok(&a, &["push", "origin"]);
    let after = remote_packs(&remote);
    assert_eq!(after.len(), before.len() + 2, "one pack and its index");
    // Roll the remote ref back (as if the process died before the ref update).
    let head_file = remote.join("refs/branches/main/head");
    let text = fs::read_to_string(&head_file).unwrap();
    let old = json(&b, &["log", "--json"])[0]["id"].as_str().unwrap().to_string();
    fs::write(&head_file, text.replace(&head, &old).replace("cohort-ref 1\n2\n", "cohort-ref 1\n1\n")).unwrap();
    let again = json(&a, &["push", "origin", "--json"]);
    assert_eq!(again["objects_sent"], 0, "{again}");
    assert_eq!(again["commit"], head.as_str());
    // A pack whose index never arrived is sent again, and only it.
    // (the index of the pack this push added: pack names are hashes, in no useful order)
    let idx = after.iter().find(|p| !before.contains(p) && p.extension().is_some_and(|x| x == "idx")).unwrap().clone();
    fs::remove_file(&idx).unwrap();
    fs::write(&head_file, fs::read_to_string(&head_file).unwrap().replace(&head, &old).replace("\n3\n", "\n1\n")).unwrap();
    let third = json(&a, &["push", "origin", "--json"]);
    assert!(third["objects_sent"].as_u64().unwrap() > 0 && third["objects_sent"].as_u64().unwrap() < 10, "{third}");

    // fetch and pull bring b up to date.
    ok(&b, &["fetch", "origin"]);
    assert!(ok(&b, &["branch"]).contains("remotes/origin/main"));
    ok(&b, &["pull", "origin"]);
    assert_eq!(snapshot(&a), snapshot(&b));

    // Two people push to the same branch: the second must fetch first.
    write(&a, "a.txt", b"from a\n");
    ok(&a, &["commit", "-m", "a"]);
    write(&b, "b.txt", b"from b\n");
    ok(&b, &["commit", "-m", "b"]);
    ok(&a, &["push", "origin"]);
    let e = String::from_utf8_lossy(&fails(&b, &["push", "origin"]).stderr).into_owned();
    assert!(e.contains("fetch first"), "{e}");
    // pull merges the diverged branches; then b's push goes through, and a pulls it.
    let e = String::from_utf8_lossy(&cohort(&b).args(["pull", "origin"]).output().unwrap().stderr).into_owned();
    assert!(e.contains("merged remotes/origin/main"), "{e}");
    assert!(b.join("a.txt").is_file() && b.join("b.txt").is_file());
    assert_eq!(json(&b, &["show", "--json"])["parents"].as_array().unwrap().len(), 2);
    ok(&b, &["push", "origin"]);
    ok(&a, &["pull", "origin"]);
    assert_eq!(snapshot(&a), snapshot(&b));

    // Both edit the same file: pull stops on the conflict; pull --prefer theirs settles it.
    write(&a, "a.txt", b"a's edit\n");
    ok(&a, &["commit", "-m", "a edits"]);
    ok(&a, &["push", "origin"]);
    write(&b, "a.txt", b"b's edit\n");
    ok(&b, &["commit", "-m", "b edits"]);
    let o = fails(&b, &["pull", "origin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a.txt"));
    assert_eq!(fs::read(b.join("a.txt")).unwrap(), b"b's edit\n");
    ok(&b, &["pull", "origin", "--prefer", "theirs"]);
    assert_eq!(fs::read(b.join("a.txt")).unwrap(), b"a's edit\n");
    assert_eq!(json(&b, &["show", "--json"])["activity"]["parameters"]["prefer"], "theirs");
}

#[test]
fn tags_travel_and_never_move() {
    let (t, a, remote) = with_folder_origin(2);
    ok(&a, &["tag", "v1"]);
    let v1 = json(&a, &["log", "--json"])[0]["id"].as_str().unwrap().to_string();
    let p = json(&a, &["push", "origin", "--tag", "v1", "--json"]);
    assert_eq!((p["kind"].as_str(), p["name"].as_str(), p["commit"].as_str()), (Some("tag"), Some("v1"), Some(v1.as_str())), "{p}");
    assert!(p["objects_sent"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(json(&a, &["push", "origin", "--tag", "v1", "--json"])["up_to_date"], true);
    // The tag took every object along: the branch at the same commit sends none.
    let b = json(&a, &["push", "origin", "--json"]);
    assert_eq!((b["kind"].as_str(), b["objects_sent"].as_u64()), (Some("branch"), Some(0)), "{b}");

    // A clone has the tag.
    let c = t.path().join("c");
    ok(t.path(), &["clone", remote.to_str().unwrap(), c.to_str().unwrap()]);
    assert!(ok(&c, &["tag"]).contains("v1"), "{}", ok(&c, &["tag"]));
    assert_eq!(json(&c, &["show", "v1", "--json"])["id"], v1.as_str());

    // Re-made here at another commit, v1 cannot be pushed over the remote's.
    write(&a, "notes.txt", b"later\n");
    ok(&a, &["commit", "-m", "later"]);
    ok(&a, &["tag", "-d", "v1"]);
    ok(&a, &["tag", "v1"]);
    let e = String::from_utf8_lossy(&fails(&a, &["push", "origin", "--tag", "v1"]).stderr).into_owned();
    assert!(e.contains("tag \"v1\"") && e.contains("never move"), "{e}");
    assert!(fs::read_to_string(remote.join("refs/tags/v1/head")).unwrap().contains(&v1));

    // A tag pushed from the clone arrives with fetch; the remote's v1 does not replace ours.
    ok(&c, &["tag", "v2"]);
    ok(&c, &["push", "origin", "--tag", "v2"]);
    let f = json(&a, &["fetch", "origin", "--json"]);
    assert_eq!(f["new_tags"]["v2"], v1.as_str(), "{f}");
    assert_eq!(f["tag_conflicts"]["v1"], v1.as_str(), "{f}");
    let tags = ok(&a, &["tag"]);
    assert!(tags.contains("v2"), "{tags}");
    assert_ne!(json(&a, &["show", "v1", "--json"])["id"], v1.as_str());
    // A tag that does not exist here is named.
    let e = String::from_utf8_lossy(&fails(&a, &["push", "origin", "--tag", "v9"]).stderr).into_owned();
    assert!(e.contains("v9"), "{e}");

    // The remote's v1 deleted: a later push of v1 (here at another commit) is accepted, and a
    // new clone has the new one.
    let d = json(&a, &["push", "origin", "--tag", "v1", "--delete", "--json"]);
    assert_eq!((d["kind"].as_str(), d["name"].as_str(), d["commit"].as_str()), (Some("tag"), Some("v1"), Some(v1.as_str())), "{d}");
    fn files(d: &Path) -> usize {
        fs::read_dir(d).map_or(0, |rd| rd.map(|e| e.unwrap().path()).map(|p| if p.is_dir() { files(&p) } else { 1 }).sum())
    }
    assert_eq!(files(&remote.join("refs/tags/v1")), 0, "head and claims are gone");
    let e = String::from_utf8_lossy(&fails(&a, &["push", "origin", "--tag", "v1", "--delete"]).stderr).into_owned();
    assert!(e.contains("remote origin has no tag \"v1\""), "{e}");
    let later = json(&a, &["show", "v1", "--json"])["id"].as_str().unwrap().to_string();
    ok(&a, &["push", "origin", "--tag", "v1"]);
    let c2 = t.path().join("c2");
    ok(t.path(), &["clone", remote.to_str().unwrap(), c2.to_str().unwrap()]);
    assert_eq!(json(&c2, &["show", "v1", "--json"])["id"], later.as_str());

    // A branch deleted on the remote: gone there, and its remote-tracking branch here; a
    // fetch elsewhere drops it too.
    ok(&a, &["branch", "scratch"]);
    ok(&a, &["push", "origin", "scratch"]);
    ok(&c, &["fetch", "origin"]);
    assert!(ok(&c, &["branch"]).contains("remotes/origin/scratch"));
    ok(&a, &["fetch", "origin"]);
    assert!(ok(&a, &["branch"]).contains("remotes/origin/scratch"));
    let said = ok(&a, &["push", "origin", "scratch", "--delete"]);
    assert!(said.contains("deleted branch scratch") && said.contains("stay in the remote's packs"), "{said}");
    let branches = ok(&a, &["branch"]);
    assert!(!branches.contains("remotes/origin/scratch") && branches.contains("scratch"), "{branches}");
    ok(&c, &["fetch", "origin"]);
    assert!(!ok(&c, &["branch"]).contains("remotes/origin/scratch"));
    assert_eq!(fails(&a, &["push", "origin", "--delete"]).status.code(), Some(2));
    ok(&a, &["fsck"]);
}

#[test]
fn ref_updates_are_compare_and_swap() {
    let t = tempfile::tempdir().unwrap();
    let spec = cohort::remote::RemoteSpec { url: t.path().join("r").display().to_string(), endpoint: None, region: None, allow_http: false, promisor: false, ca_cert: None };
    let r = cohort::remote::Remote::open("r", &spec, &Default::default()).unwrap();
    let (x, y, z) = (cohort::ObjectId::of(b"x"), cohort::ObjectId::of(b"y"), cohort::ObjectId::of(b"z"));
    r.update_ref("branches", "main", None, x, 1).unwrap();
    let seen = r.read_ref("branches", "main").unwrap();
    assert_eq!(seen, Some((1, x)));
    // Both saw (1, x); the first wins, the second is refused.
    r.update_ref("branches", "main", seen, y, 2).unwrap();
    assert!(r.update_ref("branches", "main", seen, z, 3).is_err());
    assert_eq!(r.read_ref("branches", "main").unwrap(), Some((2, y)));
    // A live claim of another pusher for the next sequence blocks; an expired one does not.
    let w = cohort::ObjectId::of(b"w");
    r.put("refs/branches/main/claims/0000000000000003/other", format!("{} {w}\n", 1_000_000_000).into_bytes()).unwrap();
    assert!(r.update_ref("branches", "main", Some((2, y)), z, 1_000_000_001).is_err());
    let later = 1_000_000_000 + cohort::remote::CLAIM_LEASE_US + 1;
    r.update_ref("branches", "main", Some((2, y)), z, later).unwrap();
    assert_eq!(r.read_ref("branches", "main").unwrap(), Some((3, z)));
}

/// In `t`: store `a` with two patients (see `dataset`), de-identified into branch `deid`, and
/// a folder remote `remote`, added as `research`.
fn deid_and_research_remote(t: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = t.join("a");
    let remote = t.join("remote");
    dataset(&a, 2);
    let key = t.join("key");
    fs::write(&key, b"remote test key long enough 0123456789").unwrap();
    ok(&a, &["deid", "main", "--key-file", key.to_str().unwrap()]);
    ok(&a, &["remote", "add", "research", remote.to_str().unwrap()]);
    (a, remote)
}

#[test]
fn tampered_remote_objects_never_enter_and_deid_branches_travel_alone() {
    let t = tempfile::tempdir().unwrap();
    let (a, remote) = deid_and_research_remote(t.path());
    ok(&a, &["push", "research", "deid"]);
    // Only de-identified objects went: a clone holds no identifier anywhere.
    let c = t.path().join("c");
    ok(t.path(), &["clone", remote.to_str().unwrap(), c.to_str().unwrap(), "--rev", "deid"]);
    let store = cohort::store::Store::open(&c.join(".cohort"), cohort::store::Mode::Read).unwrap();
    let objects: Vec<(cohort::ObjectId, Vec<u8>)> = store.packs().iter().flat_map(|p| p.entries().map(|(id, loc)| (id, p.read(id, loc).unwrap())).collect::<Vec<_>>()).collect();
    assert_eq!(carries_identifiers(&objects), 0);
    assert!(objects.len() > 10);
    // Damage one byte in the middle of the remote's pack: the clone names the object and
    // stores nothing of it.
    let pack = remote_packs(&remote).into_iter().find(|p| p.extension().is_some_and(|x| x == "pack")).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    let d = t.path().join("d");
    let e = String::from_utf8_lossy(&fails(t.path(), &["clone", remote.to_str().unwrap(), d.to_str().unwrap(), "--rev", "deid"]).stderr).into_owned();
    assert!(e.contains("is damaged") && e.contains("was not stored"), "{e}");
    assert!(!d.exists(), "a failed clone leaves no folder behind");
    // A fetch into a store of its own stores nothing either.
    fs::create_dir_all(&d).unwrap();
    ok(&d, &["init"]);
    ok(&d, &["remote", "add", "origin", remote.to_str().unwrap()]);
    let fresh = t.path().join("fresh");
    fs::create_dir_all(&fresh).unwrap();
    ok(&fresh, &["init"]);
    ok(&fresh, &["remote", "add", "origin", remote.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&fails(&d, &["fetch", "origin"]).stderr).into_owned();
    assert!(e.contains("is damaged") && e.contains("was not stored"), "{e}");
    let count = |dir: &Path| fs::read_dir(dir.join(".cohort/packs")).map(|r| r.count()).unwrap_or(0);
    assert_eq!(count(&d), count(&fresh), "nothing but the store's own operations was stored");
}

/// Every object in a folder remote's packs, read and checked against its id.
fn remote_objects(remote: &Path) -> Vec<(cohort::ObjectId, Vec<u8>)> {
    let mut out = Vec::new();
    for p in remote_packs(remote) {
        let Some(name) = p.file_name().unwrap().to_str().unwrap().strip_suffix(".idx") else { continue };
        let pack = cohort::pack::Pack::open(&remote.join("packs"), name).unwrap();
        for (id, loc) in pack.entries().collect::<Vec<_>>() {
            out.push((id, pack.read(id, loc).unwrap()));
        }
    }
    out
}

/// Every file below `dir` (none if it does not exist).
fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn carries_identifiers(objects: &[(cohort::ObjectId, Vec<u8>)]) -> usize {
    objects.iter().filter(|(_, raw)| [&b"FAKE^PATIENT"[..], b"FAKE0000", b"FAKE0001"].iter().any(|n| raw.windows(n.len()).any(|w| w == *n))).count()
}

/// A curator pushed the identified branch to the research remote by mistake, next to the
/// de-identified one. Deleting the branch leaves its objects in the remote's packs; `remote
/// gc` removes them (rewriting the pack they share with the de-identified branch), keeps
/// every object a branch or tag reaches, and stays out of a push's way.
#[test]
fn remote_gc_removes_what_a_deleted_branch_left_and_keeps_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let (a, remote) = deid_and_research_remote(t.path());
    ok(&a, &["tag", "release-1", "deid"]);
    // main first: the de-identified branch then shares its pixel data with main's pack.
    ok(&a, &["push", "research", "main"]);
    ok(&a, &["push", "research", "deid"]);
    ok(&a, &["push", "research", "--tag", "release-1"]);
    assert!(carries_identifiers(&remote_objects(&remote)) > 0);
    ok(&a, &["push", "research", "main", "--delete"]);
    let before = remote_objects(&remote);
    assert!(carries_identifiers(&before) > 0, "a deleted branch's objects stay until gc");

    // A dry run says what would go and changes nothing.
    let dry = json(&a, &["remote", "gc", "research", "--dry-run", "--json"]);
    assert_eq!((dry["dry_run"].as_bool(), dry["refs"].as_u64()), (Some(true), Some(2)), "{dry}");
    assert!(dry["objects_removed"].as_u64().unwrap() > 0 && dry["packs_rewritten"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(remote_objects(&remote).len(), before.len());

    // A live push holds gc off, and a live gc holds pushes off; a lapsed lock does not.
    // The clock the tests pin (COHORT_TIME).
    let now = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().timestamp_micros();
    fs::create_dir_all(remote.join("locks/push")).unwrap();
    fs::write(remote.join("locks/push/other"), format!("{now}\n")).unwrap();
    let e = String::from_utf8_lossy(&fails(&a, &["remote", "gc", "research"]).stderr).into_owned();
    assert!(e.contains("a push is running (locks/push/other)"), "{e}");
    assert_eq!(remote_objects(&remote).len(), before.len());
    fs::write(remote.join("locks/push/other"), format!("{}\n", now - cohort::remote::CLAIM_LEASE_US - 1)).unwrap();
    fs::create_dir_all(remote.join("locks/gc")).unwrap();
    fs::write(remote.join("locks/gc/other"), format!("{now}\n")).unwrap();
    ok(&a, &["branch", "more", "deid"]);
    let e = String::from_utf8_lossy(&fails(&a, &["push", "research", "more"]).stderr).into_owned();
    assert!(e.contains("a remote gc is running (locks/gc/other)"), "{e}");
    fs::remove_file(remote.join("locks/gc/other")).unwrap();
    // A pack file without its index (an interrupted push) goes too.
    fs::write(remote.join("packs/0123456789abcdef.pack"), b"half a pack").unwrap();

    let g = json(&a, &["remote", "gc", "research", "--json"]);
    assert_eq!((g["objects_removed"].clone(), g["packs_rewritten"].clone(), g["orphans_deleted"].as_u64()), (dry["objects_removed"].clone(), dry["packs_rewritten"].clone(), Some(1)), "{g}");
    let after = remote_objects(&remote);
    assert_eq!(carries_identifiers(&after), 0, "no identified object is left on the remote");
    assert_eq!(after.len() as u64, before.len() as u64 - g["objects_removed"].as_u64().unwrap());
    assert!(!remote.join("packs/0123456789abcdef.pack").exists());
    assert_eq!(fs::read_dir(remote.join("locks/gc")).unwrap().count(), 0, "the gc's lock is gone");
    // So are the settled claims of the pushes and the lapsed push lock.
    let files_under = |dir: &Path| walk_files(dir).len();
    // (deid's and release-1's claims of sequence 1, and the lock)
    assert!(g["stale_deleted"].as_u64() == Some(3) && !remote.join("locks/push/other").exists(), "{g}");
    assert_eq!(files_under(&remote.join("refs/branches/deid/claims")), 0);
    assert_eq!(files_under(&remote.join("refs/branches/main")), 0);
    assert!(remote.join("refs/branches/deid/head").exists() && remote.join("refs/tags/release-1/head").exists());
    // What the refs reach is all there: a clone of the branch and of the tag is whole.
    let c = t.path().join("c");
    ok(t.path(), &["clone", remote.to_str().unwrap(), c.to_str().unwrap(), "--rev", "deid"]);
    ok(&c, &["fsck"]);
    ok(&c, &["checkout", "release-1"]);
    let exported = t.path().join("exported");
    ok(&a, &["export", "deid", exported.to_str().unwrap()]);
    let mut got = snapshot(&c);
    got.retain(|k, _| !k.starts_with(".cohort"));
    assert_eq!(got, snapshot(&exported));
    // Nothing more to remove; pushes go on.
    let again = json(&a, &["remote", "gc", "research", "--json"]);
    assert_eq!((again["objects_removed"].as_u64(), again["packs_kept"].clone()), (Some(0), again["packs_before"].clone()), "{again}");
    ok(&a, &["push", "research", "more"]);
}

#[test]
fn partial_clone_fetches_only_its_part_and_the_rest_on_demand() {
    let (t, a, remote) = with_folder_origin(6);
    ok(&a, &["push", "origin"]);
    let show = json(&a, &["split", "show", "--name", "v1", "--json"]);
    let train_instances = show["parts"]["train"]["instances"].as_u64().unwrap();
    let g = t.path().join("gpu");
    ok(t.path(), &["clone", remote.to_str().unwrap(), g.to_str().unwrap(), "--split", "v1", "--part", "train"]);
    let du = json(&g, &["du", "--json"]);
    let full = json(&a, &["du", "--json"]);
    // The other parts' pixel data is missing. It is small here (tiny, well-compressed images),
    // so the physical bytes of the commit show it: about 72% of the full store's.
    assert!(du["physical_bytes"].as_u64().unwrap() < full["physical_bytes"].as_u64().unwrap() * 4 / 5, "{du} vs {full}");
    // The part exports without any further download, byte for byte.
    let out = t.path().join("train");
    ok(&g, &["export", "main", out.to_str().unwrap(), "--split", "v1", "--part", "train"]);
    let files: Vec<_> = snapshot(&out).into_iter().filter(|(p, _)| p.ends_with(".dcm")).collect();
    assert_eq!(files.len() as u64, train_instances);
    for (p, bytes) in &files {
        assert_eq!(&fs::read(a.join(p)).unwrap(), bytes, "{p}");
    }
    let fsck = ok(&g, &["fsck"]);
    assert!(fsck.contains("not fetched yet"), "{fsck}");
    // A later fetch keeps the clone partial: the new commit's metadata, not the other parts.
    write(&a, "notes/qc.txt", b"reviewed\n");
    ok(&a, &["commit", "-m", "qc notes"]);
    ok(&a, &["push", "origin"]);
    let new_head = json(&a, &["log", "--json"])[0]["id"].as_str().unwrap().to_string();
    let f = json(&g, &["fetch", "origin", "--json"]);
    assert_eq!(f["branches"]["main"], new_head.as_str(), "{f}");
    let du = json(&g, &["du", "--json"]);
    assert!(du["physical_bytes"].as_u64().unwrap() < full["physical_bytes"].as_u64().unwrap() * 4 / 5, "{du} vs {full}");
    assert!(ok(&g, &["fsck"]).contains("not fetched yet"));
    // One file of another part comes on demand, for `cat` and for `export REV OUT PATH`.
    let other = snapshot(&a).into_keys().find(|p| p.ends_with(".dcm") && !files.iter().any(|(q, _)| q == p)).unwrap();
    let got = cohort(&g).args(["cat", "main", &other]).output().unwrap();
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(got.stdout, fs::read(a.join(&other)).unwrap());
    let one = t.path().join("one");
    ok(&g, &["export", "main", one.to_str().unwrap(), &other]);
    assert_eq!(fs::read(one.join(&other)).unwrap(), fs::read(a.join(&other)).unwrap());
    // find reads every header: those of other parts come (not their pixel data).
    let not_fetched = || json(&g, &["fsck", "--json"])["not_fetched"].as_u64().unwrap();
    let before = not_fetched();
    let all = ok(&g, &["find", "main", "-w", "SOPInstanceUID"]);
    assert_eq!(all, ok(&a, &["find", "main", "-w", "SOPInstanceUID"]));
    assert!(all.lines().count() as u64 > train_instances);
    let after = not_fetched();
    assert!(after < before && after > 0, "headers came, pixel data did not: {before} -> {after}");
    // Checkout fetches the rest on demand.
    ok(&g, &["checkout", "remotes/origin/main"]);
    assert_eq!(snapshot(&a), snapshot(&g));
}

/// A fetch into a partial clone stores all of the new metadata or none of it, and walks only
/// what is new: objects already in the store are complete (they came in one pack with
/// everything they reach), so an unchanged dataset is not re-read on every fetch.
#[test]
fn partial_fetch_stores_all_new_metadata_or_none_and_only_what_is_new() {
    let (t, a, remote) = with_folder_origin(2);
    ok(&a, &["push", "origin"]);
    let g = t.path().join("gpu");
    ok(t.path(), &["clone", remote.to_str().unwrap(), g.to_str().unwrap(), "--split", "v1", "--part", "train"]);
    // Nothing new: nothing fetched.
    assert_eq!(json(&g, &["fetch", "origin", "--json"])["objects"], 0);
    // A commit that adds a folder of 400 reading notes: its tree, over 16 KiB, is stored on
    // its own in the pushed pack, two levels below the commit.
    for k in 0..400 {
        write(&a, &format!("qc/reading-{k:04}.txt"), format!("{k}\n").as_bytes());
    }
    ok(&a, &["commit", "-m", "qc readings"]);
    ok(&a, &["push", "origin"]);
    let head: cohort::id::ObjectId = json(&a, &["show", "--json"])["id"].as_str().unwrap().parse().unwrap();
    let store = cohort::store::Store::open(&a.join(".cohort"), cohort::store::Mode::Read).unwrap();
    let root = store.read_tree(&store.read_commit(&head).unwrap().tree).unwrap();
    let qc = root.entries.iter().find(|e| e.name == "qc").unwrap().id;
    // Damage the middle of that tree's stored bytes in the remote's pack.
    let (pack, loc) = remote_packs(&remote)
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .find_map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap();
            let found = cohort::pack::Pack::open(&remote.join("packs"), name).unwrap().find(&qc);
            found.map(|loc| (p.clone(), loc))
        })
        .expect("the qc tree is in a remote pack");
    assert_ne!(loc.codec, cohort::pack::Codec::Block, "the tree is stored on its own");
    let good = fs::read(&pack).unwrap();
    let mut bad = good.clone();
    bad[(loc.offset + loc.stored_len / 2) as usize] ^= 0x40;
    fs::write(&pack, &bad).unwrap();
    let packs = |dir: &Path| fs::read_dir(dir.join(".cohort/packs")).unwrap().count();
    let before = packs(&g);
    let e = String::from_utf8_lossy(&fails(&g, &["fetch", "origin"]).stderr).into_owned();
    assert!(e.contains(&qc.to_string()) && e.contains("is damaged"), "{e}");
    // The commit and root tree above it were fine, and are not stored either.
    assert_eq!(packs(&g), before, "a failed fetch stores nothing");
    assert!(fails(&g, &["show", &head.to_string()]).status.code().is_some());
    assert!(ok(&g, &["fsck"]).contains("not fetched yet"));
    // Repaired, the fetch brings exactly the new metadata: the commit, the root tree and the
    // qc tree (the catalog is unchanged, the notes are contents).
    fs::write(&pack, &good).unwrap();
    let f = json(&g, &["fetch", "origin", "--json"]);
    assert_eq!(f["branches"]["main"], head.to_string().as_str(), "{f}");
    assert_eq!(f["objects"], 3, "{f}");
    assert_eq!(json(&g, &["ls", "remotes/origin/main", "--json"]).as_array().unwrap().len(), 8 + 1 + 400);
}

/// S3 against Garage (started by .ci/run, which sets COHORT_TEST_S3_URL, _ENDPOINT, _KEY and
/// _SECRET). Without it, this test says so and checks nothing.
#[test]
fn s3_remote_against_garage() {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(url), Some(endpoint), Some(key), Some(secret)) = (env("COHORT_TEST_S3_URL"), env("COHORT_TEST_S3_ENDPOINT"), env("COHORT_TEST_S3_KEY"), env("COHORT_TEST_S3_SECRET")) else {
        eprintln!("SKIPPED: no S3 server (set COHORT_TEST_S3_URL/_ENDPOINT/_KEY/_SECRET; .ci/run starts Garage)");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    dataset(&a, 3);
    let url = format!("{url}/{}", t.path().file_name().unwrap().to_string_lossy());
    let s3 = |dir: &Path, args: &[&str]| {
        let o = cohort(dir).args(args).env("AWS_ACCESS_KEY_ID", &key).env("AWS_SECRET_ACCESS_KEY", &secret).env("AWS_REGION", "garage").output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    s3(&a, &["remote", "add", "s3", &url, "--endpoint", &endpoint, "--allow-http", "--region", "garage"]);
    s3(&a, &["push", "s3"]);
    let again: Value = serde_json::from_str(&s3(&a, &["push", "s3", "--json"])).unwrap();
    assert_eq!(again["up_to_date"], true);
    let b = t.path().join("b");
    s3(t.path(), &["clone", &url, b.to_str().unwrap(), "--endpoint", &endpoint, "--allow-http", "--region", "garage"]);
    assert_eq!(snapshot(&a), snapshot(&b));
    let g = t.path().join("g");
    s3(t.path(), &["clone", &url, g.to_str().unwrap(), "--split", "v1", "--part", "train", "--endpoint", &endpoint, "--allow-http", "--region", "garage"]);
    s3(&g, &["checkout", "main"]);
    assert_eq!(snapshot(&a), snapshot(&g));
    // A tag pushed, deleted on the server, and pushed again at another commit.
    s3(&a, &["tag", "t1"]);
    s3(&a, &["push", "s3", "--tag", "t1"]);
    s3(&a, &["push", "s3", "--tag", "t1", "--delete"]);
    s3(&a, &["tag", "-d", "t1"]);
    s3(&a, &["tag", "t1", "HEAD~1"]);
    s3(&a, &["push", "s3", "--tag", "t1"]);
    let f: Value = serde_json::from_str(&s3(&b, &["fetch", "origin", "--json"])).unwrap();
    assert_eq!(f["new_tags"]["t1"], json(&a, &["show", "HEAD~1", "--json"])["id"], "{f}");
    // A branch pushed and deleted: remote gc deletes its pack (commit, tree, file), and a new
    // clone is still whole.
    s3(&a, &["branch", "scratch"]);
    s3(&a, &["checkout", "scratch"]);
    write(&a, "scratch.txt", b"a scratch file\n");
    s3(&a, &["commit", "-m", "scratch"]);
    s3(&a, &["push", "s3", "scratch"]);
    s3(&a, &["checkout", "main"]);
    s3(&a, &["push", "s3", "scratch", "--delete"]);
    let g: Value = serde_json::from_str(&s3(&a, &["remote", "gc", "s3", "--json"])).unwrap();
    assert!(g["objects_removed"].as_u64().unwrap() >= 3 && g["packs_deleted"].as_u64().unwrap() >= 1, "{g}");
    let kept = t.path().join("after-gc");
    s3(t.path(), &["clone", &url, kept.to_str().unwrap(), "--endpoint", &endpoint, "--allow-http", "--region", "garage"]);
    assert_eq!(snapshot(&a), snapshot(&kept));
    s3(&kept, &["fsck"]);

    // The same server over https, behind a TLS proxy (socat) whose certificate a private CA
    // signed: refused without --ca-cert, and with it a clone is the same as the original.
    let certs = t.path().join("certs");
    let o = Command::new("bash").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/tls_certs.sh")).arg(&certs).output().unwrap();
    assert!(o.status.success(), "tls_certs.sh: {}", String::from_utf8_lossy(&o.stderr));
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let socat_log = t.path().join("socat.log");
    let proxy = Command::new("socat")
        .stderr(fs::File::create(&socat_log).unwrap())
        .arg(format!("openssl-listen:{port},bind=127.0.0.1,reuseaddr,fork,cert={},verify=0", certs.join("server.pem").display()))
        .arg(format!("tcp:{upstream}"))
        .spawn()
        .expect("socat (.ci/run installs it)");
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
        }
    }
    let _proxy = Stop(proxy);
    let https = format!("https://127.0.0.1:{port}");
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let run = |dir: &Path, args: &[&str]| cohort(dir).args(args).env("AWS_ACCESS_KEY_ID", &key).env("AWS_SECRET_ACCESS_KEY", &secret).env("AWS_REGION", "garage").output().unwrap();
    let h = t.path().join("h");
    let o = run(t.path(), &["clone", &url, h.to_str().unwrap(), "--endpoint", &https, "--region", "garage"]);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && e.to_lowercase().contains("certificate"), "an unknown CA is refused: {e}");
    // ... at the first request, tried three times at most (not object_store's eleven).
    let handshakes = fs::read_to_string(&socat_log).unwrap().lines().filter(|l| l.contains("unknown ca")).count();
    assert!((1..=3).contains(&handshakes), "{handshakes} TLS handshakes refused");
    assert!(!h.exists(), "a failed clone leaves no folder behind");
    let ca = certs.join("ca.pem");
    s3(t.path(), &["clone", &url, h.to_str().unwrap(), "--endpoint", &https, "--region", "garage", "--ca-cert", ca.to_str().unwrap()]);
    assert_eq!(snapshot(&h), snapshot(&b));
    // The CA is recorded with the remote: a later fetch needs no flag.
    s3(&h, &["fetch", "origin"]);
}

// ------------------------------------------------------------------ DICOMweb

/// A scripted DICOMweb server: two studies of one series each; the second series answers
/// 500 while `fail` is set. Counts WADO requests per series.
struct FakePacs {
    url: String,
    fail: Arc<AtomicBool>,
    wado: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
}

fn fake_pacs(studies: Vec<(String, String, Vec<Vec<u8>>)>) -> FakePacs {
    fake_pacs_over(studies, None)
}

/// The scripted server, over plain HTTP or (with `tls`) HTTPS.
fn fake_pacs_over(studies: Vec<(String, String, Vec<Vec<u8>>)>, tls: Option<Arc<rustls::ServerConfig>>) -> FakePacs {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/dicom-web", l.local_addr().unwrap());
    let fail = Arc::new(AtomicBool::new(true));
    let wado = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let (f2, w2) = (fail.clone(), wado.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(tcp) = s else { continue };
            let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            match &tls {
                None => {
                    let mut tcp = tcp;
                    serve_pacs(&mut tcp, &studies, &f2, &w2);
                    // Let the client close first.
                    let mut sink = [0u8; 1];
                    let _ = tcp.set_read_timeout(Some(std::time::Duration::from_millis(10)));
                    let _ = tcp.read(&mut sink);
                }
                Some(cfg) => {
                    let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else { continue };
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    serve_pacs(&mut tls, &studies, &f2, &w2);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            }
        }
    });
    FakePacs { url, fail, wado }
}

/// Answer one request: QIDO-RS of the studies and their series, WADO-RS of a series.
fn serve_pacs(s: &mut dyn ReadWrite, studies: &[(String, String, Vec<Vec<u8>>)], fail: &AtomicBool, wado: &std::sync::Mutex<BTreeMap<String, usize>>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req).into_owned();
    let line = text.lines().next().unwrap_or_default();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = path.trim_start_matches("/dicom-web");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let (status, ctype, body): (&str, String, Vec<u8>) = if path == "/studies" {
        let v: Vec<Value> = studies
            .iter()
            .map(|(st, _, files)| serde_json::json!({"0020000D": {"vr": "UI", "Value": [st]}, "00201208": {"vr": "IS", "Value": [files.len()]}}))
            .collect();
        ("200 OK", "application/dicom+json".into(), serde_json::to_vec(&v).unwrap())
    } else if let Some(rest) = path.strip_prefix("/studies/") {
        let parts: Vec<&str> = rest.split('/').collect();
        let st = studies.iter().find(|s| s.0 == parts[0]);
        match (st, parts.get(1), parts.get(2)) {
            (Some((_, se, files)), Some(&"series"), None) => {
                let v = serde_json::json!([{"0020000E": {"vr": "UI", "Value": [se]}, "00201209": {"vr": "IS", "Value": [files.len()]}}]);
                ("200 OK", "application/dicom+json".into(), serde_json::to_vec(&v).unwrap())
            }
            (Some((_, se, files)), Some(&"series"), Some(sid)) if sid == se => {
                *wado.lock().unwrap().entry(se.clone()).or_insert(0) += 1;
                let is_second = studies.last().is_some_and(|l| &l.1 == se);
                if is_second && fail.load(Ordering::SeqCst) {
                    ("500 Internal Server Error", "text/plain".into(), b"storage offline".to_vec())
                } else {
                    let mut b = Vec::new();
                    for f in files {
                        b.extend_from_slice(b"--XBOUNDARY\r\nContent-Type: application/dicom\r\n\r\n");
                        b.extend_from_slice(f);
                        b.extend_from_slice(b"\r\n");
                    }
                    b.extend_from_slice(b"--XBOUNDARY--\r\n");
                    ("200 OK", "multipart/related; type=\"application/dicom\"; boundary=XBOUNDARY".into(), b)
                }
            }
            _ => ("404 Not Found", "text/plain".into(), b"no".to_vec()),
        }
    } else {
        ("404 Not Found", "text/plain".into(), b"no".to_vec())
    };
    let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = s.write_all(&body);
    let _ = s.flush();
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// An https PACS that asks for a client certificate: the test CA (tests/scripts/tls_certs.sh)
/// signed its certificate and is the one it trusts for clients. Without --ca-cert the client
/// does not trust the server; without a client certificate, or with one from another CA, the
/// server refuses the client; with both, the retrieve is byte for byte.
#[test]
fn ingest_over_mutual_tls_with_a_private_ca() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("certs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/tls_certs.sh");
    let o = Command::new("bash").arg(&script).arg(&certs).output().expect("bash");
    assert!(o.status.success(), "tls_certs.sh (needs openssl; .ci/run installs it): {}", String::from_utf8_lossy(&o.stderr));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(certs.join("ca.pem")).unwrap()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs.join("server.crt")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_client_cert_verifier(verifier).with_single_cert(chain, key).unwrap();
    let studies: Vec<(String, String, Vec<Vec<u8>>)> = vec![(test_uid(NS, "study 7 0"), test_uid(NS, "series 7 0 0"), (0..2).map(|i| synth_instance(&spec(7, 0, 0, i))).collect())];
    let pacs = fake_pacs_over(studies.clone(), Some(Arc::new(server)));
    pacs.fail.store(false, Ordering::SeqCst);
    let r = t.path().join("ds");
    fs::create_dir_all(&r).unwrap();
    ok(&r, &["init"]);
    let c = |f: &str| certs.join(f).to_str().unwrap().to_string();
    let err = |args: &[&str]| {
        let mut all = vec!["ingest", "dicomweb", pacs.url.as_str()];
        all.extend_from_slice(args);
        let o = fails(&r, &all);
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = err(&[]);
    assert!(e.contains("cannot reach") && e.to_lowercase().contains("unknownissuer"), "the server's CA is not trusted: {e}");
    let e = err(&["--ca-cert", &c("ca.pem")]);
    assert!(e.contains("cannot reach"), "no client certificate: {e}");
    let e = err(&["--ca-cert", &c("ca.pem"), "--client-cert", &c("other-ca.pem"), "--client-key", &c("other-ca.key")]);
    assert!(e.contains("cannot reach"), "a client certificate from another CA: {e}");
    let e = err(&["--ca-cert", &c("client.key")]);
    assert!(e.contains("client.key") && e.contains("holds no PEM certificate"), "{e}");
    let e = err(&["--ca-cert", &c("ca.pem"), "--client-cert", &c("client.crt"), "--client-key", &c("ca.key")]);
    assert!(e.contains("client.crt") && e.contains("does not go with its key"), "{e}");
    assert_eq!(fails(&r, &["ingest", "dicomweb", &pacs.url, "--client-cert", &c("client.crt")]).status.code(), Some(2));
    assert!(fails(&r, &["log"]).status.code() == Some(2), "nothing committed");
    ok(&r, &["ingest", "dicomweb", &pacs.url, "--ca-cert", &c("ca.pem"), "--client-cert", &c("client.crt"), "--client-key", &c("client.key")]);
    let (st, se, files) = &studies[0];
    for (i, f) in files.iter().enumerate() {
        let sop = test_uid(NS, &format!("sop 7 0 0 {i}"));
        assert_eq!(&fs::read(r.join(format!("FAKE0007/{st}/{se}/{sop}.dcm"))).unwrap(), f);
    }
}

#[test]
fn ingest_fails_midway_keeps_what_it_got_and_resumes() {
    let studies: Vec<(String, String, Vec<Vec<u8>>)> = (0..2)
        .map(|p| {
            let files = (0..3).map(|i| synth_instance(&spec(p, 0, 0, i))).collect();
            (test_uid(NS, &format!("study {p} 0")), test_uid(NS, &format!("series {p} 0 0")), files)
        })
        .collect();
    let pacs = fake_pacs(studies.clone());
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("ds");
    fs::create_dir_all(&r).unwrap();
    ok(&r, &["init"]);
    let o = fails(&r, &["ingest", "dicomweb", &pacs.url]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("1 of 2 series could not be retrieved") && e.contains("nothing was committed"), "{e}");
    assert!(fails(&r, &["log"]).status.code() == Some(2), "no commit");
    // The server recovers: the rerun retrieves only the missing series.
    pacs.fail.store(false, Ordering::SeqCst);
    ok(&r, &["ingest", "dicomweb", &pacs.url, "-m", "PACS pull"]);
    let counts = pacs.wado.lock().unwrap().clone();
    assert_eq!(counts[&studies[0].1], 1, "the first series was not retrieved twice: {counts:?}");
    assert_eq!(counts[&studies[1].1], 2);
    for (p, (st, se, files)) in studies.iter().enumerate() {
        for (i, f) in files.iter().enumerate() {
            let sop = test_uid(NS, &format!("sop {p} 0 0 {i}"));
            assert_eq!(&fs::read(r.join(format!("FAKE{p:04}/{st}/{se}/{sop}.dcm"))).unwrap(), f);
        }
    }
    let show = ok(&r, &["show", "HEAD"]);
    assert!(show.contains("import") && show.contains(&pacs.url) && show.contains(&studies[1].0), "{show}");
    // Nothing new: nothing retrieved, nothing committed.
    let again = json(&r, &["ingest", "dicomweb", &pacs.url, "--json"]);
    assert!(again["commit"].is_null(), "{again}");
}

#[test]
fn ingest_from_orthanc() {
    let found = Command::new("sh").args(["-c", "command -v Orthanc && test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so"]).output().is_ok_and(|o| o.status.success());
    assert!(found, "Orthanc with the DICOMweb plugin is required: apt-get install orthanc orthanc-dicomweb (.ci/run does)");
    let t = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/orthanc.sh");
    // A free port pair.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dport = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = Command::new("bash").args([script.to_str().unwrap(), t.path().join("orthanc").to_str().unwrap(), &port.to_string(), &dport.to_string()]).output().unwrap();
    assert!(o.status.success(), "orthanc.sh: {}", String::from_utf8_lossy(&o.stderr));
    let pid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(&self.0).status();
        }
    }
    let _k = Kill(pid);
    let base = format!("http://127.0.0.1:{port}");
    let upload = |bytes: &[u8]| {
        let r = ureq::post(&format!("{base}/instances")).set("Content-Type", "application/dicom").send_bytes(bytes);
        assert!(r.is_ok(), "upload: {r:?}");
    };
    // Patient 0: a 2024 CT study; patient 1: another.
    let mut sent = BTreeMap::new();
    for p in 0..2 {
        for i in 0..3 {
            let mut s = spec(p, 0, 0, i);
            s.study_date = "20240315".into();
            let b = synth_instance(&s);
            upload(&b);
            sent.insert(format!("FAKE{p:04}/{}/{}/{}.dcm", s.study_uid, s.series_uid, s.sop_uid), b);
        }
    }
    let r = t.path().join("ds");
    fs::create_dir_all(&r).unwrap();
    ok(&r, &["init"]);
    let url = format!("{base}/dicom-web");
    let out = ok(&r, &["ingest", "dicomweb", &url, "--query", "PatientID=FAKE0001&StudyDate=2024&ModalitiesInStudy=CT"]);
    assert_eq!(out.trim().len(), 64);
    let files = snapshot(&r);
    assert_eq!(files.len(), 3, "{:?}", files.keys().collect::<Vec<_>>());
    for (p, b) in &files {
        assert!(p.starts_with("FAKE0001/"));
        assert_eq!(&sent[p], b, "{p} byte-identical to what the PACS holds");
    }
    let show = json(&r, &["show", "HEAD", "--json"]);
    let act = show["activity"].to_string();
    assert!(act.contains("PatientID=FAKE0001") && act.contains(&url) && act.contains("\"import\""), "{act}");
    // Everything else: only the new study is retrieved.
    let s = json(&r, &["ingest", "dicomweb", &url, "--json"]);
    assert_eq!(s["studies_found"], 2);
    assert_eq!(s["studies_skipped"], 1);
    assert_eq!(s["instances"], 3);
    assert_eq!(snapshot(&r).len(), 6);
    let none = json(&r, &["ingest", "dicomweb", &url, "--json"]);
    assert!(none["commit"].is_null());
    // A server that is gone: a clear error, nothing committed.
    drop(_k);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let e = String::from_utf8_lossy(&fails(&r, &["ingest", "dicomweb", &url]).stderr).into_owned();
    assert!(e.contains("127.0.0.1"), "{e}");
}

/// `n` files of pseudo-random, partly compressible bytes (about 200 KB each) under `dir/`.
fn fill_bins(root: &Path, dir: &str, seed: u64, n: usize) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed;
    for i in 0..n {
        let v: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(3) { (x >> 24) as u8 } else { (i % 7) as u8 }
            })
            .collect();
        write(root, &format!("{dir}/f{i:03}.bin"), &v);
    }
}

/// kill -9 a remote gc at many moments: the remote always still holds everything its refs
/// reach (a clone is whole and fsck-clean), and a second gc finishes the job.
#[test]
fn a_killed_remote_gc_loses_nothing_and_a_second_run_finishes() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    fs::create_dir_all(&a).unwrap();
    ok(&a, &["init"]);
    fill_bins(&a, "shared", 0, 60);
    ok(&a, &["commit", "-m", "shared"]);
    ok(&a, &["branch", "junk"]);
    ok(&a, &["checkout", "junk"]);
    fill_bins(&a, "junk", 1, 60);
    ok(&a, &["commit", "-m", "junk"]);
    ok(&a, &["checkout", "main"]);
    fill_bins(&a, "keep", 2, 10);
    ok(&a, &["commit", "-m", "keep"]);
    let expected = snapshot(&a);
    // junk first: its pack also holds the shared files, so gc rewrites it.
    let template = t.path().join("template");
    ok(&a, &["remote", "add", "template", template.to_str().unwrap()]);
    ok(&a, &["push", "template", "junk"]);
    ok(&a, &["push", "template", "main"]);
    ok(&a, &["push", "template", "junk", "--delete"]);
    let copy = |k: &str| {
        let dir = t.path().join(k);
        assert!(Command::new("cp").arg("-r").arg(&template).arg(&dir).status().unwrap().success());
        ok(&a, &["remote", "add", k, dir.to_str().unwrap()]);
        dir
    };
    // An uninterrupted gc: how long it takes, and what it leaves.
    let clean = copy("clean");
    let started = std::time::Instant::now();
    let g = json(&a, &["remote", "gc", "clean", "--json"]);
    let full = started.elapsed().max(std::time::Duration::from_millis(20));
    assert!(g["packs_rewritten"].as_u64() == Some(1) && g["objects_removed"].as_u64().unwrap() >= 30, "{g}");
    let left: std::collections::BTreeSet<cohort::ObjectId> = remote_objects(&clean).into_iter().map(|o| o.0).collect();

    // Most of a gc's time goes to fetching metadata and rewriting the pack; the kills are
    // spread over its second half and past its end, where it uploads and deletes.
    let rounds = 12;
    for round in 0..rounds {
        let name = format!("r{round}");
        let dir = copy(&name);
        let mut child = cohort(&a).args(["remote", "gc", &name]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        let at = full.mul_f64(0.4 + (round as f64 + 0.5) / rounds as f64 * 0.8);
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        // Whatever the gc had done, main is whole on the remote.
        let c = t.path().join(format!("c{round}"));
        ok(t.path(), &["clone", dir.to_str().unwrap(), c.to_str().unwrap()]);
        ok(&c, &["fsck"]);
        let mut got = snapshot(&c);
        got.retain(|k, _| !k.starts_with(".cohort"));
        assert_eq!(got, expected, "round {round} (killed at {at:?})");
        // A second run finishes: the remote holds what the uninterrupted gc left.
        ok(&a, &["remote", "gc", &name]);
        let now: std::collections::BTreeSet<cohort::ObjectId> = remote_objects(&dir).into_iter().map(|o| o.0).collect();
        assert_eq!(now, left, "round {round}");
    }
}
