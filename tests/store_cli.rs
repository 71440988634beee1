//! End-to-end tests of the store commands on plain (non-DICOM) files: the working-tree model,
//! revisions, export byte-exactness, refs, fsck/gc/du and bad input.
mod common;

use std::fs;

use common::*;

#[test]
fn commit_status_log_show_roundtrip() {
    let d = repo();
    let r = d.path();
    write(r, "a/b/x.txt", b"hello");
    write(r, "labels.csv", b"path,label\nx,1\n");
    let c1 = ok(r, &["commit", "-m", "first"]).trim().to_string();
    assert_eq!(c1.len(), 64);
    assert!(ok(r, &["status"]).contains("working tree clean"));

    write(r, "labels.csv", b"path,label\nx,2\n");
    fs::remove_file(r.join("a/b/x.txt")).unwrap();
    write(r, "new.bin", &[0u8, 1, 2, 255]);
    let st = json(r, &["status", "--json"]);
    let mut got: Vec<(String, String)> = st["changes"].as_array().unwrap().iter().map(|c| (c["path"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string())).collect();
    got.sort();
    assert_eq!(got, vec![("a/b/x.txt".into(), "removed".into()), ("labels.csv".into(), "modified".into()), ("new.bin".into(), "added".into())]);

    let c2 = ok(r, &["commit", "-m", "second", "--author", "Dr. Curator"]).trim().to_string();
    let log = json(r, &["log", "--json"]);
    assert_eq!(log[0]["id"], c2.as_str());
    assert_eq!(log[0]["author"], "Dr. Curator");
    assert_eq!(log[1]["id"], c1.as_str());
    let show = json(r, &["show", &c2[..8], "--json"]);
    assert_eq!(show["parents"][0], c1.as_str());
    assert_eq!(show["activity"]["agent"]["tool"], "cohort");
    assert_eq!(show["changes"].as_array().unwrap().len(), 3);
    // Revisions: HEAD~1, ^, prefixes, branch names all resolve.
    for rev in ["HEAD~1", "HEAD^", "main~1", &c1[..6]] {
        assert_eq!(json(r, &["show", rev, "--json"])["id"], c1.as_str(), "{rev}");
    }
    let e = fails(r, &["show", "HEAD~5"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("has no parent"));
    let e = fails(r, &["commit", "-m", "nothing"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("nothing to commit"));
}

#[test]
fn export_and_checkout_are_byte_exact() {
    let d = repo();
    let r = d.path();
    // Many files in several folders, so that ordering mistakes cannot hide.
    for i in 0..40 {
        write(r, &format!("d{}/f{i:02}.dat", i % 3), format!("content {i} {}", "x".repeat(i * 37)).as_bytes());
    }
    std::os::unix::fs::symlink("d0/f00.dat", r.join("link")).unwrap();
    let before = snapshot(r);
    ok(r, &["commit", "-m", "v1"]);
    for mode in ["copy", "hardlink"] {
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("x");
        ok(r, &["export", "HEAD", dest.to_str().unwrap(), "--link", mode]);
        assert_eq!(snapshot(&dest), before, "export --link {mode}");
    }
    // Change, commit, go back: the tree is exactly v1 again, and forward again.
    write(r, "d1/f01.dat", b"changed");
    fs::remove_dir_all(r.join("d2")).unwrap();
    write(r, "d2", b"now a file where a folder was");
    ok(r, &["commit", "-m", "v2"]);
    let v2 = snapshot(r);
    ok(r, &["checkout", "HEAD~1"]);
    assert_eq!(snapshot(r), before);
    assert!(ok(r, &["status"]).contains("clean"));
    ok(r, &["checkout", "main"]);
    assert_eq!(snapshot(r), v2);
    // Uncommitted changes are protected unless --force.
    write(r, "d1/f01.dat", b"dirty");
    let e = fails(r, &["checkout", "HEAD~1"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("uncommitted"));
    ok(r, &["checkout", "--force", "HEAD~1"]);
    assert_eq!(snapshot(r), before);
    // Export into a non-empty folder is refused.
    let e = fails(r, &["export", "HEAD", "d0"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("not empty"));
}

#[test]
fn a_hardlink_export_written_to_does_not_change_later_exports() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let d = repo();
    let r = d.path();
    write(r, "a/one.dat", &b"committed bytes ".repeat(100));
    write(r, "a/two.dat", b"short");
    let before = snapshot(r);
    ok(r, &["commit", "-m", "v1"]);
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("first");
    ok(r, &["export", "HEAD", first.to_str().unwrap(), "--link", "hardlink"]);
    // The export shares its inodes with the store's cache. Read-only modes do not stop a
    // user who makes the file writable (or root): overwrite one in place, cut the other short.
    for (name, content) in [("a/one.dat", &b"trained on this by mistake"[..]), ("a/two.dat", b"sho")] {
        let p = first.join(name);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::OpenOptions::new().write(true).truncate(true).open(&p).unwrap().write_all(content).unwrap();
    }
    // A later export, and a hardlink checkout, still give the committed bytes.
    let second = out.path().join("second");
    ok(r, &["export", "HEAD", second.to_str().unwrap(), "--link", "hardlink"]);
    assert_eq!(snapshot(&second), before);
    // The first export kept what was written to it (it is the user's copy).
    assert_eq!(fs::read(first.join("a/two.dat")).unwrap(), b"sho");
    let third = out.path().join("third");
    ok(r, &["export", "HEAD", third.to_str().unwrap(), "--link", "hardlink"]);
    assert_eq!(snapshot(&third), before);
}

#[test]
fn a_failed_export_leaves_nothing_behind_and_can_be_run_again() {
    let d = repo();
    let r = d.path();
    for i in 0..12 {
        write(r, &format!("p{}/s{}/f{i}.dat", i % 3, i % 2), format!("bytes {i}").as_bytes());
    }
    let before = snapshot(r);
    ok(r, &["commit", "-m", "v1"]);
    // The store's export cache cannot be written (a file where its folder should be), so a
    // hardlink export fails after it made the export's folders.
    let cache = r.join(".cohort/cache");
    fs::remove_dir_all(&cache).unwrap();
    fs::write(&cache, b"not a folder").unwrap();
    let out = tempfile::tempdir().unwrap();
    let fresh = out.path().join("new/x");
    let empty = out.path().join("empty");
    fs::create_dir(&empty).unwrap();
    for dest in [&fresh, &empty] {
        let e = fails(r, &["export", "HEAD", dest.to_str().unwrap(), "--link", "hardlink"]);
        assert!(String::from_utf8_lossy(&e.stderr).contains(".cohort/cache"), "{}", String::from_utf8_lossy(&e.stderr));
    }
    // A folder the export made is gone; a folder that was there (empty) is there, still empty.
    assert!(!fresh.exists());
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
    // So the same command works once the cause is gone, and so does a copy in the meantime.
    ok(r, &["export", "HEAD", empty.to_str().unwrap(), "--link", "copy"]);
    assert_eq!(snapshot(&empty), before);
    fs::remove_file(&cache).unwrap();
    ok(r, &["export", "HEAD", fresh.to_str().unwrap(), "--link", "hardlink"]);
    assert_eq!(snapshot(&fresh), before);
}

#[test]
fn merge_of_two_branches_fast_forward_and_conflicts() {
    let d = repo();
    let r = d.path();
    write(r, "shared.csv", b"id\n1\n");
    write(r, "P0/a.bin", b"patient 0");
    let base = ok(r, &["commit", "-m", "base"]).trim().to_string();
    ok(r, &["branch", "other"]);
    // main adds a patient and edits shared.csv; other adds another patient and removes P0.
    write(r, "P1/a.bin", b"patient 1");
    write(r, "shared.csv", b"id\n1\n2\n");
    let ours = ok(r, &["commit", "-m", "ours"]).trim().to_string();
    ok(r, &["checkout", "other"]);
    write(r, "P2/a.bin", b"patient 2");
    fs::remove_dir_all(r.join("P0")).unwrap();
    let theirs = ok(r, &["commit", "-m", "theirs"]).trim().to_string();
    ok(r, &["checkout", "main"]);
    let m = json(r, &["merge", "other", "--json"]);
    assert_eq!((m["outcome"].as_str(), m["base"].as_str(), m["files_from_theirs"].as_u64()), (Some("merge"), Some(base.as_str()), Some(2)), "{m}");
    let files: Vec<String> = snapshot(r).into_keys().collect();
    assert_eq!(files, ["P1/a.bin", "P2/a.bin", "shared.csv"]);
    assert_eq!(fs::read(r.join("shared.csv")).unwrap(), b"id\n1\n2\n");
    assert!(ok(r, &["status"]).contains("working tree clean"));
    let show = json(r, &["show", "--json"]);
    assert_eq!(show["parents"], serde_json::json!([ours, theirs]));
    assert_eq!(show["activity"]["kind"], "merge");
    ok(r, &["fsck"]);
    ok(r, &["verify"]);
    // blame follows each file to the side it came from.
    for (path, from) in [("P2/a.bin", &theirs), ("P1/a.bin", &ours)] {
        let b = json(r, &["blame", path, "--json"]);
        assert_eq!((b["events"].as_array().unwrap().len(), b["events"][0]["commit"].as_str()), (1, Some(from.as_str())), "{path}: {b}");
    }
    // Again: nothing to do.
    assert_eq!(json(r, &["merge", "other", "--json"])["outcome"], "up to date");

    // A branch ahead of main: fast-forward.
    ok(r, &["branch", "ahead"]);
    ok(r, &["checkout", "ahead"]);
    write(r, "P3/a.bin", b"patient 3");
    let ahead = ok(r, &["commit", "-m", "ahead"]).trim().to_string();
    ok(r, &["checkout", "main"]);
    let dry = json(r, &["merge", "ahead", "--dry-run", "--json"]);
    assert_eq!((dry["outcome"].as_str(), dry["dry_run"].as_bool(), dry["commit"].as_str()), (Some("fast-forward"), Some(true), Some(ahead.as_str())), "{dry}");
    assert!(!r.join("P3/a.bin").exists() && json(r, &["log", "--json"])[0]["id"] != ahead.as_str());
    let m = json(r, &["merge", "ahead", "--json"]);
    assert_eq!((m["outcome"].as_str(), m["commit"].as_str()), (Some("fast-forward"), Some(ahead.as_str())), "{m}");
    assert!(r.join("P3/a.bin").is_file());

    // The same file changed differently on both sides: nothing changes, exit status 1.
    ok(r, &["branch", "rival"]);
    write(r, "shared.csv", b"main's version\n");
    let head = ok(r, &["commit", "-m", "main edits"]).trim().to_string();
    ok(r, &["checkout", "rival"]);
    write(r, "shared.csv", b"rival's version\n");
    write(r, "P4/a.bin", b"patient 4");
    ok(r, &["commit", "-m", "rival edits"]);
    ok(r, &["checkout", "main"]);
    let before = snapshot(r);
    let e = fails(r, &["merge", "rival"]);
    assert_eq!(e.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&e.stderr).into_owned();
    assert!(msg.contains("1 conflict(s)") && msg.contains("shared.csv") && !msg.contains("P4"), "{msg}");
    assert_eq!(json(r, &["log", "--json"])[0]["id"], head.as_str());
    assert_eq!(snapshot(r), before);
    // A dirty working tree is refused.
    write(r, "scratch.txt", b"wip");
    let e = String::from_utf8_lossy(&fails(r, &["merge", "rival"]).stderr).into_owned();
    assert!(e.contains("scratch.txt") && e.contains("before merging"), "{e}");
    fs::remove_file(r.join("scratch.txt")).unwrap();

    // --prefer ours: the conflict keeps main's version, the rest of rival comes in.
    ok(r, &["branch", "try-ours"]);
    ok(r, &["checkout", "try-ours"]);
    let m = json(r, &["merge", "rival", "--prefer", "ours", "--json"]);
    assert_eq!((m["outcome"].as_str(), m["prefer"].as_str(), m["resolved"].clone()), (Some("merge"), Some("ours"), serde_json::json!(["shared.csv"])), "{m}");
    assert_eq!(fs::read(r.join("shared.csv")).unwrap(), b"main's version\n");
    assert_eq!(fs::read(r.join("P4/a.bin")).unwrap(), b"patient 4");
    let show = json(r, &["show", "--json"]);
    assert_eq!(show["activity"]["parameters"]["prefer"], "ours", "{show}");
    assert!(show["notes"].to_string().contains("shared.csv"), "{show}");
    // --prefer theirs on main: rival's version, and `show` says which conflict it settled.
    ok(r, &["checkout", "main"]);
    let out = cohort(r).args(["merge", "rival", "--prefer", "theirs"]).output().unwrap();
    assert!(out.status.success());
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(e.contains("1 conflict(s) resolved (--prefer theirs: took rival's version)") && e.contains("  shared.csv"), "{e}");
    assert_eq!(fs::read(r.join("shared.csv")).unwrap(), b"rival's version\n");
    assert!(ok(r, &["show"]).contains("note: shared.csv: conflict: took rival's version (--prefer theirs)"));
    assert!(ok(r, &["status"]).contains("working tree clean"));
    ok(r, &["fsck"]);
    // An unknown side is a usage error.
    assert_eq!(fails(r, &["merge", "rival", "--prefer", "mine"]).status.code(), Some(2));
}

/// Conflicts settled one by one or by folder (`--take`), the rest by `--prefer`; a conflict
/// left unsettled, or a `--take` that settles nothing, changes nothing.
#[test]
fn merge_settles_conflicts_by_name_or_folder() {
    let d = repo();
    let r = d.path();
    for (p, v) in [("P1/a.bin", "base a"), ("P1/b.bin", "base b"), ("P2/c.bin", "base c"), ("shared.csv", "base")] {
        write(r, p, v.as_bytes());
    }
    ok(r, &["commit", "-m", "base"]);
    ok(r, &["branch", "rival"]);
    for p in ["P1/a.bin", "P1/b.bin", "P2/c.bin", "shared.csv"] {
        write(r, p, format!("main {p}").as_bytes());
    }
    ok(r, &["commit", "-m", "main edits"]);
    ok(r, &["checkout", "rival"]);
    for p in ["P1/a.bin", "P1/b.bin", "P2/c.bin", "shared.csv"] {
        write(r, p, format!("rival {p}").as_bytes());
    }
    write(r, "P3/d.bin", b"rival only");
    ok(r, &["commit", "-m", "rival edits"]);
    ok(r, &["checkout", "main"]);
    let before = (snapshot(r), json(r, &["log", "--json"])[0]["id"].clone());
    let unchanged = || assert_eq!((snapshot(r), json(r, &["log", "--json"])[0]["id"].clone()), before);
    // Patient 1 settled, the other two conflicts not: they are listed, nothing changes.
    let e = fails(r, &["merge", "rival", "--take", "P1/=theirs"]);
    assert_eq!(e.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&e.stderr).into_owned();
    assert!(msg.contains("2 conflict(s)") && msg.contains("P2/c.bin") && msg.contains("shared.csv") && !msg.contains("P1/") && msg.contains("--take NAME=ours|theirs"), "{msg}");
    unchanged();
    // A --take that settles no conflict (a typo) is an error too.
    let e = fails(r, &["merge", "rival", "--take", "P9=theirs", "--prefer", "ours"]);
    assert_eq!(e.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&e.stderr).into_owned();
    assert!(msg.contains("--take P9: merging rival has no conflict of that name or in that folder"), "{msg}");
    unchanged();
    assert_eq!(fails(r, &["merge", "rival", "--take", "P1"]).status.code(), Some(2));
    assert_eq!(fails(r, &["merge", "rival", "--take", "P1=mine"]).status.code(), Some(2));
    assert_eq!(fails(r, &["merge", "rival", "--take", "P1=ours", "--take", "P1/=theirs"]).status.code(), Some(2));
    unchanged();
    // Patient 1 from rival but b.bin kept (the exact name wins over its folder), patient 2
    // from rival (a folder named without its slash), the rest kept by --prefer.
    let m = json(r, &["merge", "rival", "--take", "P1/=theirs", "--take", "P1/b.bin=ours", "--take", "P2=theirs", "--prefer", "ours", "--json"]);
    let got: Vec<(String, String, String)> = m["resolutions"].as_array().unwrap().iter().map(|x| (x["conflict"].as_str().unwrap().to_string(), x["side"].as_str().unwrap().to_string(), x["by"].as_str().unwrap().to_string())).collect();
    let want = [("P1/a.bin", "theirs", "--take P1/=theirs"), ("P1/b.bin", "ours", "--take P1/b.bin=ours"), ("P2/c.bin", "theirs", "--take P2=theirs"), ("shared.csv", "ours", "--prefer ours")];
    assert_eq!(got, want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())), "{m}");
    for (p, who) in [("P1/a.bin", "rival"), ("P1/b.bin", "main"), ("P2/c.bin", "rival"), ("shared.csv", "main")] {
        assert_eq!(fs::read(r.join(p)).unwrap(), format!("{who} {p}").as_bytes(), "{p}");
    }
    assert_eq!(fs::read(r.join("P3/d.bin")).unwrap(), b"rival only");
    let show = ok(r, &["show"]);
    assert!(show.contains("note: P1/b.bin: conflict: kept this branch's version (--take P1/b.bin=ours)") && show.contains("note: P2/c.bin: conflict: took rival's version (--take P2=theirs)"), "{show}");
    assert!(ok(r, &["status"]).contains("working tree clean"));
    ok(r, &["fsck"]);
}

/// Two curators who merged each other's branch (a criss-cross: two best common ancestors)
/// merge again: the merge of the two ancestors is the base. What either brought in merges
/// cleanly; a file they settled differently in their own merges conflicts (with either
/// ancestor alone as the base, one side's choice would win silently).
#[test]
fn criss_cross_merges_against_the_merge_of_their_bases() {
    let d = repo();
    let r = d.path();
    write(r, "w.csv", b"base w");
    write(r, "x.bin", b"base x");
    ok(r, &["commit", "-m", "base"]);
    ok(r, &["branch", "b"]);
    // a1 and b1: both change w.csv, each one other file.
    write(r, "w.csv", b"a's w");
    write(r, "x.bin", b"a's x");
    let a1 = ok(r, &["commit", "-m", "a1"]).trim().to_string();
    ok(r, &["checkout", "b"]);
    write(r, "w.csv", b"b's w");
    write(r, "y.bin", b"b's y");
    let b1 = ok(r, &["commit", "-m", "b1"]).trim().to_string();
    // Each merges the other's first commit, keeping its own w.csv.
    ok(r, &["merge", &a1, "--take", "w.csv=ours"]);
    ok(r, &["checkout", "main"]);
    ok(r, &["merge", &b1, "--take", "w.csv=ours"]);
    // Then each goes on.
    write(r, "x.bin", b"a's second x");
    ok(r, &["commit", "-m", "a2"]);
    ok(r, &["checkout", "b"]);
    write(r, "z.bin", b"b's z");
    ok(r, &["commit", "-m", "b2"]);
    ok(r, &["checkout", "main"]);
    let before = snapshot(r);
    let e = fails(r, &["merge", "b"]);
    assert_eq!(e.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&e.stderr).into_owned();
    assert!(msg.contains("1 conflict(s)") && msg.contains("w.csv (the merge bases of a criss-cross history disagree on it"), "{msg}");
    assert_eq!(snapshot(r), before);
    let m = json(r, &["merge", "b", "--take", "w.csv=theirs", "--json"]);
    assert_eq!(m["outcome"], "merge", "{m}");
    let mut bases: Vec<&str> = m["bases"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    bases.sort();
    let mut want = [a1.as_str(), b1.as_str()];
    want.sort();
    assert_eq!(bases, want, "{m}");
    for (p, v) in [("w.csv", "b's w"), ("x.bin", "a's second x"), ("y.bin", "b's y"), ("z.bin", "b's z")] {
        assert_eq!(fs::read(r.join(p)).unwrap(), v.as_bytes(), "{p}");
    }
    let show = json(r, &["show", "--json"]);
    assert!(show["activity"]["parameters"]["bases"].as_str().is_some_and(|b| b.contains(&a1) && b.contains(&b1)), "{show}");
    ok(r, &["fsck"]);
    // And again, the other way: b takes main's merge as a fast-forward.
    ok(r, &["checkout", "b"]);
    assert_eq!(json(r, &["merge", "main", "--json"])["outcome"], "fast-forward");
}

#[test]
fn branches_tags_and_op_log() {
    let d = repo();
    let r = d.path();
    write(r, "a", b"1");
    let c1 = ok(r, &["commit", "-m", "one"]).trim().to_string();
    ok(r, &["branch", "exp"]);
    ok(r, &["tag", "v1"]);
    fails(r, &["tag", "v1"]);
    fails(r, &["branch", "bad..name"]);
    ok(r, &["checkout", "exp"]);
    write(r, "a", b"2");
    let c2 = ok(r, &["commit", "-m", "two"]).trim().to_string();
    let br = json(r, &["branch", "--json"]);
    assert_eq!(br["current"], "exp");
    assert_eq!(br["refs"]["exp"], c2.as_str());
    assert_eq!(br["refs"]["main"], c1.as_str());
    assert_eq!(json(r, &["tag", "--json"])["refs"]["v1"], c1.as_str());
    fails(r, &["branch", "-d", "exp"]);
    // Undo the last commit: the branch goes back, and the op log says so.
    ok(r, &["op", "undo"]);
    assert_eq!(json(r, &["branch", "--json"])["refs"]["exp"], c1.as_str());
    let ops = json(r, &["op", "log", "--json"]);
    assert!(ops[0]["description"].as_str().unwrap().starts_with("undo operation"));
    assert!(ops.as_array().unwrap().len() >= 6);
}

#[test]
fn fsck_finds_corruption_and_gc_removes_unreachable() {
    let d = repo();
    let r = d.path();
    write(r, "big.dat", &vec![42u8; 100_000]);
    write(r, "small.txt", b"keep me");
    ok(r, &["commit", "-m", "one"]);
    assert!(ok(r, &["fsck"]).contains("ok"));
    // Make a commit, then move the branch back: its objects become unreachable.
    write(r, "tmp.dat", &(0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>());
    ok(r, &["commit", "-m", "two"]);
    ok(r, &["op", "undo"]);
    let before = json(r, &["du", "--json"])["store_bytes"].as_u64().unwrap();
    let g = json(r, &["gc", "--json"]);
    assert!(g["objects_after"].as_u64().unwrap() < g["objects_before"].as_u64().unwrap());
    let after = json(r, &["du", "--json"]);
    assert!(after["store_bytes"].as_u64().unwrap() < before);
    assert_eq!(after["logical_bytes"], 100_007);
    assert!(after["physical_bytes"].as_u64().unwrap() < 100_007, "zeros compress");
    assert!(ok(r, &["fsck"]).contains("ok"));

    // Flip any byte of the pack (entry headers included): fsck reports it and exits 1.
    let packs: Vec<_> = fs::read_dir(r.join(".cohort/packs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().unwrap() == "pack").collect();
    assert_eq!(packs.len(), 1);
    let orig = fs::read(&packs[0]).unwrap();
    let len = orig.len();
    for at in [0, 5, 12, 12 + 20, 12 + 40, len / 3, len / 2, len - 1] {
        let mut b = orig.clone();
        b[at] ^= 0x55;
        fs::write(&packs[0], &b).unwrap();
        let o = cohort(r).args(["fsck"]).output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(0), "byte {at} flipped, fsck says ok: {s}");
    }
    let mut b = orig.clone();
    b[len / 2] ^= 0x55;
    fs::write(&packs[0], &b).unwrap();
    // Export of corrupted data fails with an error naming the object, never wrong bytes.
    let out = tempfile::tempdir().unwrap();
    let o = cohort(r).args(["export", "HEAD", out.path().join("x").to_str().unwrap()]).output().unwrap();
    if !o.status.success() {
        assert!(String::from_utf8_lossy(&o.stderr).contains("object"));
    } else {
        // The flipped byte hit an object that export does not need (e.g. the op log).
        assert_eq!(fs::read(out.path().join("x/small.txt")).unwrap(), b"keep me");
    }
}

#[test]
fn second_writer_gets_a_clear_error() {
    let d = repo();
    let r = d.path();
    let lock = fs::File::options().write(true).open(r.join(".cohort/lock")).unwrap();
    lock.lock().unwrap();
    write(r, "a", b"1");
    let e = fails(r, &["commit", "-m", "x"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("in use by another cohort process"));
    // Readers are not blocked.
    ok(r, &["op", "log"]);
    drop(lock);
    ok(r, &["commit", "-m", "x"]);
}

#[test]
fn bad_input_is_named() {
    let d = tempfile::tempdir().unwrap();
    let e = fails(d.path(), &["status"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("no cohort store"));
    ok(d.path(), &["init"]);
    fails(d.path(), &["init"]);
    // An unreadable file: the message names it, nothing is committed.
    write(d.path(), "secret.txt", b"x");
    let p = d.path().join("secret.txt");
    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    if fs::read(&p).is_err() {
        // (root can read anything; the check only runs where permissions bite)
        let e = fails(d.path(), &["commit", "-m", "x"]);
        assert!(String::from_utf8_lossy(&e.stderr).contains("secret.txt"));
    }
    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    // A symlink pointing out of the tree is recorded as a link, not followed.
    std::os::unix::fs::symlink("/etc/passwd", d.path().join("out")).unwrap();
    ok(d.path(), &["commit", "-m", "x"]);
    let ls = json(d.path(), &["ls", "--json"]);
    let link = ls.as_array().unwrap().iter().find(|e| e["path"] == "out").unwrap();
    assert_eq!(link["kind"], "symlink");
    assert_eq!(link["size"], "/etc/passwd".len());
}

#[test]
fn ls_streams_every_file_in_path_order() {
    let d = repo();
    let r = d.path();
    // An empty commit lists nothing.
    ok(r, &["commit", "-m", "empty"]);
    assert_eq!(json(r, &["ls", "--json"]), serde_json::json!([]));
    assert_eq!(ok(r, &["ls"]), "");
    // More files than `ls` gathers at once (4,096), in several folders, plus one DICOM file.
    let mut expected = Vec::new();
    for i in 0..4200 {
        let rel = format!("d{}/f{i:05}.txt", i % 3);
        write(r, &rel, format!("{i}").as_bytes());
        expected.push(rel);
    }
    write(r, "d1/ct.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("ls", 0, 0, 0, 0, 8)));
    expected.push("d1/ct.dcm".into());
    expected.sort();
    ok(r, &["commit", "-m", "many"]);
    let text = ok(r, &["ls", "--json"]);
    // The same bytes as serde_json's pretty printer gives for the whole list at once.
    let whole = {
        use cohort::repo::{Context, Repo};
        let repo = Repo::open(r, cohort::store::Mode::Read, Context { user: "t".into(), time_us: None, command: vec![] }).unwrap();
        serde_json::to_string_pretty(&repo.ls("HEAD").unwrap()).unwrap() + "\n"
    };
    let differs = text.bytes().zip(whole.bytes()).position(|(a, b)| a != b);
    assert!(text == whole, "lengths {} and {}, first difference at {differs:?}", text.len(), whole.len());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let paths: Vec<&str> = v.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, expected);
    let ct = v.as_array().unwrap().iter().find(|e| e["path"] == "d1/ct.dcm").unwrap();
    assert_eq!(ct["kind"], "dicom");
    assert_eq!(ct["dicom"]["patient_id"], fake_ct("ls", 0, 0, 0, 0, 8).patient_id);
    let lines: Vec<String> = ok(r, &["ls"]).lines().map(String::from).collect();
    assert_eq!(lines.len(), expected.len());
    assert!(lines.iter().zip(&expected).all(|(l, p)| l.split('\t').next().unwrap().ends_with(&format!(" {p}"))));
}

/// Write the tree `make` builds (it may store objects first) and a commit of it on a new
/// branch, bypassing every check of `cohort commit`: what a hostile or corrupted store holds.
/// HEAD stays where it was. Returns the tree's id.
fn forge_branch(r: &std::path::Path, branch: &str, make: impl FnOnce(&mut cohort::store::ObjectWriter) -> cohort::object::Tree) -> cohort::ObjectId {
    use cohort::object::{Activity, Agent, Commit, Head};
    use cohort::repo::{Context, Repo};
    use cohort::store::Mode;
    let repo = Repo::open(r, Mode::Write, Context { user: "t".into(), time_us: None, command: vec![] }).unwrap();
    let mut w = repo.store.writer().unwrap();
    let t = make(&mut w);
    let tree = w.put(&t).unwrap();
    let act = Activity { kind: "commit".into(), agent: Agent { user: "t".into(), tool: "x".into(), tool_version: "0".into() }, parameters: Default::default(), inputs: vec![], outputs: vec![], started_us: 0, ended_us: 0 };
    let c = w.put(&Commit { tree, parents: vec![], author: "t".into(), time_us: 0, message: branch.into(), activity: act, catalog: None, signature: None, notes: vec![] }).unwrap();
    let mut view = repo.store.view().unwrap();
    view.branches.insert(branch.into(), c);
    assert_eq!(view.head, Head::Branch("main".into()));
    repo.publish(w, "forge".into(), view).unwrap();
    tree
}

#[test]
fn fsck_and_du_name_where_a_missing_object_was_met() {
    use cohort::object::{EntryKind, Tree, TreeEntry};
    let d = repo();
    let r = d.path();
    write(r, "ok.txt", b"fine");
    ok(r, &["commit", "-m", "one"]);
    // Forge a commit whose tree names an object the store never had.
    let absent = cohort::ObjectId::of(b"never stored");
    let tree = forge_branch(r, "lost", |_| Tree { entries: vec![TreeEntry { name: "gone.txt".into(), kind: EntryKind::File, id: absent, size: 12 }] });
    let o = cohort(r).args(["fsck", "--json"]).output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let missing = report["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0]["id"], absent.to_string());
    assert_eq!(missing[0]["problem"], "missing");
    assert_eq!(missing[0]["place"], format!("gone.txt in tree {}", tree.short()));
    // du counts what is there: the tree and the commit, not the absent file.
    let du = json(r, &["du", "lost", "--json"]);
    assert_eq!(du["objects"], 3);
    assert!(du["physical_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn a_tree_that_would_escape_the_export_folder_is_rejected() {
    use cohort::object::{EntryKind, Tree, TreeEntry};
    use cohort::pack::Hint;
    let d = repo();
    let r = d.path();
    write(r, "ok.txt", b"fine");
    ok(r, &["commit", "-m", "one"]);
    // Forge a commit whose tree names "..": as a hostile or corrupted store would.
    forge_branch(r, "evil", |w| {
        let blob = w.put_blob(b"escaped", Hint::Generic).unwrap();
        Tree { entries: vec![TreeEntry { name: "..".into(), kind: EntryKind::File, id: blob, size: 7 }] }
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("inner");
    let e = fails(r, &["export", "evil", dest.to_str().unwrap()]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("invalid name"), "{msg}");
    assert!(!out.path().join("escaped").exists() && !out.path().join("..").join("escaped").exists());
    let e = fails(r, &["checkout", "evil"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("invalid name"));
    assert_eq!(snapshot(r).keys().collect::<Vec<_>>(), vec!["ok.txt"]);
}

/// Text files both sides changed (a clinical CSV, notes) merge line by line, as git merges
/// them, when no line changed on both sides; otherwise, and for binary files, they stay
/// conflicts that say why.
/// Checkout between trees where a folder becomes a file and a file a folder, and a folder
/// empties: the working tree is each tree exactly, with no folder left behind.
#[test]
fn checkout_turns_folders_into_files_and_back() {
    let d = repo();
    let r = d.path();
    write(r, "a/x.csv", b"a folder's file");
    write(r, "a/deep/y.csv", b"deeper");
    write(r, "b", b"a file");
    write(r, "gone/z.csv", b"goes away");
    write(r, "kept/k.csv", b"one");
    let one = ok(r, &["commit", "-m", "one"]).trim().to_string();
    let first = snapshot(r);
    fs::remove_dir_all(r.join("a")).unwrap();
    fs::remove_dir_all(r.join("gone")).unwrap();
    fs::remove_file(r.join("b")).unwrap();
    write(r, "a", b"now a file");
    write(r, "b/inside.csv", b"now a folder");
    write(r, "kept/k.csv", b"two");
    let two = ok(r, &["commit", "-m", "two"]).trim().to_string();
    let second = snapshot(r);
    for _ in 0..2 {
        ok(r, &["checkout", &one]);
        assert_eq!(snapshot(r), first);
        assert!(ok(r, &["status"]).contains("working tree clean"));
        ok(r, &["checkout", &two]);
        assert_eq!(snapshot(r), second);
        assert!(!r.join("gone").exists(), "an emptied folder is removed");
        assert!(ok(r, &["status"]).contains("working tree clean"));
    }
}

/// `cat` gives one file of any commit byte for byte; paths are read as in the working tree,
/// relative to the current folder.
#[test]
fn cat_writes_one_file_of_a_revision() {
    let d = repo();
    let r = d.path();
    let dcm = cohort::dicom::synth::synth_instance(&fake_ct("cat", 0, 0, 0, 0, 8));
    write(r, "P1/s/a.dcm", &dcm);
    write(r, "P1/notes.txt", b"first\n");
    std::os::unix::fs::symlink("s/a.dcm", r.join("P1/link")).unwrap();
    let one = ok(r, &["commit", "-m", "one"]).trim().to_string();
    write(r, "P1/notes.txt", b"second\n");
    ok(r, &["commit", "-m", "two"]);
    let cat = |dir: &std::path::Path, args: &[&str]| cohort(dir).args(args).output().unwrap();
    let o = cat(r, &["cat", "HEAD", "P1/s/a.dcm"]);
    assert!(o.status.success() && o.stdout == dcm, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(cat(r, &["cat", &one, "P1/notes.txt"]).stdout, b"first\n");
    assert_eq!(cat(&r.join("P1"), &["cat", "HEAD~1", "./s/../notes.txt"]).stdout, b"first\n");
    assert_eq!(cat(r, &["cat", "HEAD", "P1/link"]).stdout, b"s/a.dcm", "a link gives its target");
    let out = r.join("P1/copy.dcm");
    ok(&r.join("P1"), &["cat", "HEAD", "s/a.dcm", "-o", "copy.dcm"]);
    assert_eq!(fs::read(&out).unwrap(), dcm);
    let e = String::from_utf8_lossy(&fails(r, &["cat", "HEAD", "P1/s/a.dcm", "-o", "P1/copy.dcm"]).stderr).into_owned();
    assert!(e.contains("already exists (not overwritten)"), "{e}");
    assert_eq!(fs::read(&out).unwrap(), dcm);
    for (args, want) in [
        (vec!["cat", "HEAD", "P1/s"], "P1/s: a folder in HEAD, not a file"),
        (vec!["cat", "HEAD", "P1/copy.dcm"], "P1/copy.dcm: no such file or folder in HEAD"),
        (vec!["cat", "HEAD", "../elsewhere"], "../elsewhere: outside the working folder"),
        (vec!["cat", "HEAD", ".cohort/format"], "inside the store's own folder"),
        (vec!["cat", "nope", "P1/notes.txt"], "unknown revision"),
    ] {
        let e = String::from_utf8_lossy(&fails(r, &args).stderr).into_owned();
        assert!(e.contains(want), "{args:?}: {e}");
    }
}

/// `restore` sets named files and folders back to a revision and leaves HEAD and every other
/// path alone.
#[test]
fn restore_sets_paths_back_and_leaves_the_rest() {
    let d = repo();
    let r = d.path();
    write(r, "P1/a.csv", b"a1");
    write(r, "P1/deep/b.csv", b"b1");
    write(r, "P2/c.csv", b"c1");
    let one = ok(r, &["commit", "-m", "one"]).trim().to_string();
    write(r, "P1/a.csv", b"a2");
    fs::remove_file(r.join("P2/c.csv")).unwrap();
    write(r, "P2/d.csv", b"d2");
    let two = ok(r, &["commit", "-m", "two"]).trim().to_string();
    // Uncommitted: a change, a removal and a new file in P1, a change in P2.
    write(r, "P1/a.csv", b"a3");
    fs::remove_file(r.join("P1/deep/b.csv")).unwrap();
    write(r, "P1/new.csv", b"new");
    write(r, "P2/d.csv", b"d3");
    let s = json(&r.join("P1"), &["restore", ".", "--json"]);
    assert_eq!(s["commit"], two.as_str());
    assert_eq!(s["written"], serde_json::json!(["P1/a.csv", "P1/deep/b.csv"]), "{s}");
    assert_eq!(s["removed"], serde_json::json!(["P1/new.csv"]), "{s}");
    assert_eq!(fs::read(r.join("P1/a.csv")).unwrap(), b"a2");
    assert_eq!(fs::read(r.join("P1/deep/b.csv")).unwrap(), b"b1");
    assert!(!r.join("P1/new.csv").exists());
    assert_eq!(fs::read(r.join("P2/d.csv")).unwrap(), b"d3", "a path not named is left alone");
    let st = ok(r, &["status"]);
    assert_eq!(st.lines().filter(|l| l.starts_with(['A', 'M', 'D'])).collect::<Vec<_>>(), ["M P2/d.csv"], "{st}");
    // From an older commit: P2 as it was there (c.csv back, d.csv gone); HEAD does not move.
    let out = ok(r, &["restore", "--source", &one, "P2"]);
    assert!(out.contains("restored P2/c.csv") && out.contains("removed  P2/d.csv"), "{out}");
    assert_eq!(fs::read(r.join("P2/c.csv")).unwrap(), b"c1");
    assert!(!r.join("P2/d.csv").exists());
    assert_eq!(json(r, &["log", "--json"])[0]["id"], two.as_str());
    let st = ok(r, &["status"]);
    assert!(st.contains("A P2/c.csv") && st.contains("D P2/d.csv"), "{st}");
    // A path in neither is an error, and nothing changes (the other path named included).
    let before = snapshot(r);
    let e = String::from_utf8_lossy(&fails(r, &["restore", "P1", "P3"]).stderr).into_owned();
    assert!(e.contains("P3: neither in HEAD nor in the working tree"), "{e}");
    assert_eq!(snapshot(r), before);
    // Nothing to do is said so.
    let o = cohort(r).args(["restore", "P1"]).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nothing to restore"));
    // The whole tree: as HEAD, like checkout --force, but HEAD stays.
    ok(r, &["restore", "."]);
    assert!(ok(r, &["status"]).contains("working tree clean"));
}

/// `export REV OUT PATH...` writes only the files named (and those in the folders named).
#[test]
fn export_of_some_paths() {
    let d = repo();
    let r = d.path();
    write(r, "P1/s1/a.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("exp", 0, 0, 0, 0, 8)));
    write(r, "P1/s1/b.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("exp", 0, 0, 0, 1, 8)));
    write(r, "P1/s2/c.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("exp", 0, 0, 1, 0, 8)));
    write(r, "P2/d.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("exp", 1, 0, 0, 0, 8)));
    write(r, "labels.csv", b"id,label\n");
    ok(r, &["commit", "-m", "one"]);
    let o = tempfile::tempdir().unwrap();
    let out = o.path().join("out");
    let s = json(r, &["export", "HEAD", out.to_str().unwrap(), "P1/s1", "labels.csv", "P1/s1/a.dcm", "--json"]);
    assert_eq!(s["files"], 3, "each file once: {s}");
    let mut want = snapshot(r);
    want.retain(|p, _| p.starts_with("P1/s1/") || p == "labels.csv");
    assert_eq!(snapshot(&out), want);
    fs::remove_dir_all(&out).unwrap();
    let e = String::from_utf8_lossy(&fails(r, &["export", "HEAD", out.to_str().unwrap(), "P1", "P3"]).stderr).into_owned();
    assert!(e.contains("P3: no such file or folder in HEAD"), "{e}");
    assert!(!out.exists(), "nothing is written when a path is missing");
}

/// `.cohortignore` leaves paths out of commits and status, as `.gitignore` does, and
/// checkout leaves the ignored files alone.
#[test]
fn ignored_paths_are_left_out() {
    let d = repo();
    let r = d.path();
    write(r, ".cohortignore", b"# viewers' litter\n.DS_Store\n*.tmp\n!keep.tmp\n/scratch/\n");
    write(r, "P1/a.csv", b"a");
    write(r, "P1/.DS_Store", b"litter");
    write(r, "P1/x.tmp", b"tmp");
    write(r, "keep.tmp", b"kept");
    write(r, "scratch/big.bin", b"scratch");
    write(r, "P1/scratch/y.csv", b"not the root's scratch");
    ok(r, &["commit", "-m", "one"]);
    let listed = json(r, &["ls", "--json"]);
    let listed: Vec<&str> = listed.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(listed, [".cohortignore", "P1/a.csv", "P1/scratch/y.csv", "keep.tmp"]);
    // Changes to ignored files are not changes.
    write(r, "P1/.DS_Store", b"more litter");
    write(r, "scratch/new.bin", b"new");
    assert!(ok(r, &["status"]).contains("working tree clean"));
    // Checkout leaves them where they are.
    write(r, "P1/a.csv", b"a2");
    ok(r, &["commit", "-m", "two"]);
    ok(r, &["checkout", "HEAD~1"]);
    ok(r, &["checkout", "main"]);
    assert_eq!(fs::read(r.join("P1/.DS_Store")).unwrap(), b"more litter");
    assert_eq!(fs::read(r.join("scratch/new.bin")).unwrap(), b"new");
    // A file committed before it was ignored is then left out of the next commit.
    write(r, ".cohortignore", b".DS_Store\n*.tmp\n!keep.tmp\n/scratch/\nP1/scratch/\n");
    let st = ok(r, &["status"]);
    assert!(st.contains("D P1/scratch/y.csv") && st.contains("M .cohortignore"), "{st}");
    assert!(r.join("P1/scratch/y.csv").exists());
    // A bad pattern is named, and nothing is committed.
    write(r, ".cohortignore", b".DS_Store\n[z-a\n");
    let e = String::from_utf8_lossy(&fails(r, &["commit", "-m", "three"]).stderr).into_owned();
    assert!(e.contains(".cohortignore: line 2: pattern \"[z-a\""), "{e}");
    assert_eq!(json(r, &["log", "--json"]).as_array().unwrap().len(), 2);
}

/// `log -- PATH` lists the commits that changed something there; a merge that took one
/// side's version as it was is not one of them.
#[test]
fn log_of_some_paths() {
    let d = repo();
    let r = d.path();
    write(r, "a.csv", b"a1");
    write(r, "P/b.csv", b"b1");
    let one = ok(r, &["commit", "-m", "one"]).trim().to_string();
    write(r, "a.csv", b"a2");
    let two = ok(r, &["commit", "-m", "two"]).trim().to_string();
    ok(r, &["branch", "side", &one]);
    ok(r, &["checkout", "side"]);
    write(r, "P/b.csv", b"b2");
    let side = ok(r, &["commit", "-m", "side"]).trim().to_string();
    ok(r, &["checkout", "main"]);
    ok(r, &["merge", "side", "-m", "merge"]);
    let ids = |dir: &std::path::Path, args: &[&str]| -> Vec<String> { json(dir, args).as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect() };
    assert_eq!(ids(r, &["log", "--json", "--", "a.csv"]), [two.clone(), one.clone()]);
    assert_eq!(ids(r, &["log", "--json", "--", "P"]), [side.clone(), one.clone()]);
    assert_eq!(ids(&r.join("P"), &["log", "--json", "--", "b.csv"]), [side.clone(), one.clone()], "paths are relative to the current folder");
    // Both paths: the merge differs from each parent in one of them (as git counts it).
    let merge = ids(r, &["log", "--json", "-n", "1"]);
    assert_eq!(ids(r, &["log", "--json", "--", "a.csv", "P/b.csv"]).len(), 4);
    assert_eq!(ids(r, &["log", "--json", "-n", "1", "--", "a.csv", "P/b.csv"]), merge);
    assert_eq!(ids(r, &["log", "--json", "--", "nothing"]).len(), 0);
    assert_eq!(ids(r, &["log", "--json"]).len(), 4);
    // status -- PATH: the changes there only.
    write(r, "a.csv", b"a3");
    write(r, "P/b.csv", b"b3");
    let st = ok(&r.join("P"), &["status", "--", "."]);
    assert!(st.contains("M P/b.csv") && !st.contains("a.csv"), "{st}");
    assert!(ok(r, &["status", "--", "P/other"]).contains("nothing changed there (2 change(s) elsewhere)"));
}

/// `diff A B -- PATH...` and `ls REV -- PATH...` look only at the files there.
#[test]
fn diff_and_ls_of_some_paths() {
    let d = repo();
    let r = d.path();
    write(r, "P1/a.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("dls", 0, 0, 0, 0, 8)));
    write(r, "P2/b.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("dls", 1, 0, 0, 0, 8)));
    write(r, "x", b"a file");
    ok(r, &["commit", "-m", "one"]);
    write(r, "P1/a.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("dls", 0, 0, 0, 0, 9)));
    write(r, "P2/b.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("dls", 1, 0, 0, 0, 9)));
    fs::remove_file(r.join("x")).unwrap();
    write(r, "x/y.csv", b"now a folder");
    ok(r, &["commit", "-m", "two"]);
    let all = json(r, &["diff", "HEAD~1", "--json"]);
    assert_eq!(all["files"].as_array().unwrap().len(), 4, "{all}");
    let some = json(&r.join("P1"), &["diff", "HEAD~1", "--json", "--", ".", "../x", "a.dcm"]);
    let files: Vec<(&str, &str)> = some["files"].as_array().unwrap().iter().map(|c| (c["path"].as_str().unwrap(), c["status"].as_str().unwrap())).collect();
    assert_eq!(files, [("P1/a.dcm", "modified"), ("x", "removed"), ("x/y.csv", "added")], "{some}");
    assert_eq!(some["dicom"].as_array().unwrap().len(), 1, "only P1's patient: {some}");
    let ls = json(r, &["ls", "HEAD~1", "--json", "--", "x", "P2"]);
    let paths: Vec<&str> = ls.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["x", "P2/b.dcm"]);
    let e = String::from_utf8_lossy(&fails(r, &["ls", "--", "P3"]).stderr).into_owned();
    assert!(e.contains("P3: no such file or folder in HEAD"), "{e}");
}

/// `verify-export DIR REV` checks a plain export against the revision's tree: DICOM files
/// as commit hashes them, other files, links; what changed, went or was added.
#[test]
fn verify_export_of_a_plain_export() {
    let d = repo();
    let r = d.path();
    let dcm = cohort::dicom::synth::synth_instance(&fake_ct("vex", 0, 0, 0, 0, 8));
    write(r, "P1/a.dcm", &dcm);
    write(r, "P1/b.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("vex", 0, 0, 0, 1, 8)));
    write(r, "notes.txt", b"notes");
    std::os::unix::fs::symlink("P1/a.dcm", r.join("first")).unwrap();
    ok(r, &["commit", "-m", "one"]);
    write(r, "notes.txt", b"more notes");
    ok(r, &["commit", "-m", "two"]);
    let o = tempfile::tempdir().unwrap();
    let out = o.path().join("x");
    ok(r, &["export", "HEAD", out.to_str().unwrap()]);
    let v = json(r, &["verify-export", out.to_str().unwrap(), "HEAD", "--json"]);
    assert_eq!((v["clean"].as_bool(), v["files"].as_u64(), v["against"].as_str()), (Some(true), Some(4), Some("tree")), "{v}");
    // Without a manifest the revision is needed.
    let e = fails(o.path(), &["verify-export", "x"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("no cohort-manifest.json here (a plain export)"));
    // Against the older commit: notes.txt differs.
    let text = String::from_utf8_lossy(&fails(r, &["verify-export", out.to_str().unwrap(), "HEAD~1"]).stdout).into_owned();
    assert!(text.contains("M notes.txt: 10 bytes, 5 exported") && text.contains("1 of 4 files changed, 0 missing, 0 extra"), "{text}");
    // One attribute of a DICOM header changed at the same length, a link re-pointed, a file
    // gone, a folder added.
    let pos = dcm.windows(4).position(|w| w == b"FAKE").unwrap();
    let mut changed = dcm.clone();
    changed[pos] = b'X';
    fs::write(out.join("P1/a.dcm"), &changed).unwrap();
    fs::remove_file(out.join("first")).unwrap();
    std::os::unix::fs::symlink("P1/b.dcm", out.join("first")).unwrap();
    fs::remove_file(out.join("P1/b.dcm")).unwrap();
    write(&out, "extra/y.txt", b"y");
    let o2 = fails(r, &["verify-export", out.to_str().unwrap(), "HEAD", "--json"]);
    assert_eq!(o2.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    let changed: Vec<&str> = v["changed"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(changed.len(), 2, "{v}");
    assert!(changed.contains(&"P1/a.dcm") && changed.contains(&"first"), "{v}");
    assert_eq!((v["missing"].clone(), v["extra"].clone()), (serde_json::json!(["P1/b.dcm"]), serde_json::json!(["extra/y.txt"])), "{v}");
}

/// `diff` with no revision compares HEAD with the working tree: what a curator's edit did to
/// each attribute, before it is committed; the store is left as it was.
#[test]
fn diff_of_the_working_tree() {
    let d = repo();
    let r = d.path();
    let spec = fake_ct("wtd", 0, 0, 0, 0, 8);
    let dcm = cohort::dicom::synth::synth_instance(&spec);
    write(r, "P1/a.dcm", &dcm);
    write(r, "P1/b.dcm", &cohort::dicom::synth::synth_instance(&fake_ct("wtd", 0, 0, 0, 1, 8)));
    write(r, "notes.txt", b"one\ntwo\n");
    ok(r, &["commit", "-m", "one"]);
    assert!(ok(r, &["diff"]).starts_with("0 added, 0 removed, 0 modified"));
    // The patient's name changed in place (same length), a note edited, a file removed.
    let name = spec.patient_name.as_bytes();
    let pos = dcm.windows(name.len()).position(|w| w == name).unwrap();
    let mut edited = dcm.clone();
    edited[pos] = b'X';
    write(r, "P1/a.dcm", &edited);
    write(r, "notes.txt", b"one\nTWO\n");
    fs::remove_file(r.join("P1/b.dcm")).unwrap();
    let objects_before = fs::read_dir(r.join(".cohort/packs")).unwrap().count();
    let v = json(r, &["diff", "-p", "--json"]);
    assert_eq!((v["added"].as_u64(), v["removed"].as_u64(), v["modified"].as_u64(), v["to"].is_null()), (Some(0), Some(1), Some(2), true), "{v}");
    let inst = &v["dicom"][0]["studies"][0]["series"][0]["instances"];
    let a = inst.as_array().unwrap().iter().find(|i| i["path"] == "P1/a.dcm").unwrap();
    assert_eq!(a["pixel_changed"], false);
    let attrs: Vec<(&str, &str)> = a["attributes"].as_array().unwrap().iter().map(|x| (x["keyword"].as_str().unwrap(), x["new"].as_str().unwrap())).collect();
    let mut want_name = spec.patient_name.clone();
    want_name.replace_range(0..1, "X");
    assert_eq!(attrs, [("PatientName", want_name.as_str())], "{a}");
    assert!(v["text"][0]["patch"].as_str().unwrap().contains("-two\n+TWO"), "{v}");
    // In figures: one instance modified (its name), one removed, in one series.
    let sum = json(r, &["diff", "--summary", "--json"]);
    let dcm_sum = &sum["dicom"];
    assert_eq!((dcm_sum["instances_modified"].as_u64(), dcm_sum["instances_removed"].as_u64(), dcm_sum["series"].as_u64(), dcm_sum["pixel_data_changed"].as_u64()), (Some(1), Some(1), Some(1), Some(0)), "{sum}");
    let counts: Vec<(&str, u64, u64)> = dcm_sum["attributes"].as_array().unwrap().iter().map(|c| (c["keyword"].as_str().unwrap(), c["instances"].as_u64().unwrap(), c["series"].as_u64().unwrap())).collect();
    assert_eq!(counts, [("PatientName", 1, 1)]);
    assert_eq!(dcm_sum["attributes"][0]["example_new"], want_name.as_str());
    assert!(ok(r, &["diff", "--summary"]).contains("(0010,0010) PatientName: 1 instance(s) in 1 series"));
    // Paths narrow it; nothing was stored.
    let v = json(r, &["diff", "--json", "--", "notes.txt"]);
    assert_eq!(v["files"].as_array().unwrap().len(), 1);
    assert_eq!(fs::read_dir(r.join(".cohort/packs")).unwrap().count(), objects_before);
    // Committed, the same change shows between the two commits.
    ok(r, &["commit", "-m", "two"]);
    let c = json(r, &["diff", "HEAD~1", "HEAD", "--json"]);
    assert_eq!(c["dicom"], json(r, &["diff", "HEAD~1", "--json"])["dicom"]);
    assert_eq!(c["dicom"][0]["studies"][0]["series"][0]["instances"].as_array().unwrap().iter().find(|i| i["path"] == "P1/a.dcm").unwrap()["attributes"], a["attributes"]);
}

/// `commit -m MSG -- PATH...` commits the changes there and leaves the others uncommitted.
#[test]
fn commit_of_some_paths() {
    let d = repo();
    let r = d.path();
    write(r, "P1/a.csv", b"a1");
    write(r, "P2/b.csv", b"b1");
    write(r, "c.csv", b"c1");
    ok(r, &["commit", "-m", "one"]);
    write(r, "P1/a.csv", b"a2");
    write(r, "P1/new.csv", b"new");
    write(r, "P2/b.csv", b"b2");
    fs::remove_file(r.join("c.csv")).unwrap();
    let s = json(&r.join("P1"), &["commit", "-m", "P1 only", "--json", "--", "."]);
    assert_eq!((s["added"].as_u64(), s["modified"].as_u64(), s["removed"].as_u64(), s["files"].as_u64()), (Some(1), Some(1), Some(0), Some(4)), "{s}");
    let files = json(r, &["ls", "--json"]);
    let got: Vec<(&str, u64)> = files.as_array().unwrap().iter().map(|e| (e["path"].as_str().unwrap(), e["size"].as_u64().unwrap())).collect();
    assert_eq!(got, [("P1/a.csv", 2), ("P1/new.csv", 3), ("P2/b.csv", 2), ("c.csv", 2)]);
    assert_eq!(ok(r, &["cat", "HEAD", "P2/b.csv"]), "b1", "P2's change is not in the commit");
    let st = ok(r, &["status"]);
    assert!(st.contains("M P2/b.csv") && st.contains("D c.csv") && !st.contains("P1"), "{st}");
    // A removal commits too; a path with no change is nothing to commit; a typo is named.
    ok(r, &["commit", "-m", "c gone", "--", "c.csv"]);
    assert!(!ok(r, &["ls"]).contains("c.csv"));
    let e = String::from_utf8_lossy(&fails(r, &["commit", "-m", "x", "--", "P1"]).stderr).into_owned();
    assert!(e.contains("nothing to commit"), "{e}");
    let e = String::from_utf8_lossy(&fails(r, &["commit", "-m", "x", "--", "P9"]).stderr).into_owned();
    assert!(e.contains("P9: neither in HEAD nor in the working tree"), "{e}");
    ok(r, &["commit", "-m", "rest"]);
    assert!(ok(r, &["status"]).contains("working tree clean"));
    ok(r, &["fsck"]);
}

/// `diff --patch` shows the changed lines of text files, as git does; binary files and
/// DICOM instances (which have their attribute changes) get none.
#[test]
fn diff_patch_shows_the_changed_lines_of_text_files() {
    let d = repo();
    let r = d.path();
    write(r, "labels.csv", b"id,label\n1,a\n2,b\n3,c\n");
    write(r, "notes.txt", b"no newline at the end");
    write(r, "mask.bin", b"\0\x01");
    write(r, "same.csv", b"x\n");
    ok(r, &["commit", "-m", "one"]);
    write(r, "labels.csv", b"id,label\n1,a\n2,B\n3,c\n4,d\n");
    write(r, "notes.txt", b"no newline at the end\nnow one\n");
    write(r, "mask.bin", b"\0\x02");
    write(r, "new.csv", b"added\n");
    ok(r, &["commit", "-m", "two"]);
    let plain = json(r, &["diff", "HEAD~1", "HEAD", "--json"]);
    assert!(plain.get("text").is_none(), "{plain}");
    let d = json(r, &["diff", "HEAD~1", "HEAD", "--patch", "--json"]);
    let text = d["text"].as_array().unwrap();
    assert_eq!(text.iter().map(|t| t["path"].as_str().unwrap()).collect::<Vec<_>>(), ["labels.csv", "mask.bin", "notes.txt"], "{d}");
    assert_eq!((&text[0]["added_lines"], &text[0]["removed_lines"]), (&serde_json::json!(2), &serde_json::json!(1)));
    assert_eq!(text[0]["patch"], "--- a/labels.csv\n+++ b/labels.csv\n@@ -1,4 +1,5 @@\n id,label\n 1,a\n-2,b\n+2,B\n 3,c\n+4,d\n");
    assert_eq!((&text[1]["patch"], &text[1]["skipped"]), (&serde_json::Value::Null, &serde_json::json!("binary")));
    assert!(text[2]["patch"].as_str().unwrap().contains("-no newline at the end\n\\ No newline at end of file\n+no newline at the end\n+now one\n"), "{d}");
    let shown = ok(r, &["diff", "HEAD~1", "HEAD", "-p"]);
    assert!(shown.contains("\n-2,b\n+2,B\n") && shown.contains("mask.bin: lines not shown: binary"), "{shown}");
}

/// Two sites each add patients at the end of the same CSV: a line merge sees one place
/// changed on both sides, a merge by rows (keyed by the first column) takes both.
#[test]
fn tables_both_sides_added_rows_to_merge_row_by_row() {
    let d = repo();
    let r = d.path();
    write(r, "clinical.csv", b"patient_id,age,site\nP001,50,A\nP002,61,A\n");
    write(r, "labels.tsv", b"sop\tlabel\n1.2.3\tnodule\n");
    ok(r, &["commit", "-m", "base"]);
    ok(r, &["branch", "site-b"]);
    write(r, "clinical.csv", b"patient_id,age,site\nP001,50,A\nP002,62,A\nP003,44,A\n");
    write(r, "labels.tsv", b"sop\tlabel\n1.2.3\tnodule\n1.2.4\tnormal\n");
    ok(r, &["commit", "-m", "site A adds P003, corrects P002"]);
    ok(r, &["checkout", "site-b"]);
    write(r, "clinical.csv", b"patient_id,age,site\nP001,50,A\nP002,61,A\nP004,39,B\nP005,70,B\n");
    write(r, "labels.tsv", b"sop\tlabel\n1.2.3\tmass\n1.2.5\tnormal\n");
    ok(r, &["commit", "-m", "site B adds P004 and P005"]);
    ok(r, &["checkout", "main"]);
    let m = json(r, &["merge", "site-b", "--json"]);
    assert_eq!(m["merged_files"], serde_json::json!([
        {"path": "clinical.csv", "how": "rows", "ours": [], "theirs": [], "both": [], "settled": []},
        {"path": "labels.tsv", "how": "rows", "ours": [], "theirs": [], "both": [], "settled": []},
    ]), "{m}");
    assert_eq!(fs::read_to_string(r.join("clinical.csv")).unwrap(), "patient_id,age,site\nP001,50,A\nP002,62,A\nP003,44,A\nP004,39,B\nP005,70,B\n");
    assert_eq!(fs::read_to_string(r.join("labels.tsv")).unwrap(), "sop\tlabel\n1.2.3\tmass\n1.2.4\tnormal\n1.2.5\tnormal\n");
    assert!(ok(r, &["show"]).contains("note: clinical.csv: changed on both sides, merged row by row: a table: this branch's and site-b's rows, keyed by its first column"));
    // The same row changed differently: a conflict naming it, settled row by row.
    ok(r, &["branch", "site-c", "HEAD~2"]);
    ok(r, &["checkout", "site-c"]);
    write(r, "clinical.csv", b"patient_id,age,site\nP001,50,A\nP002,63,C\nP006,20,C\n");
    ok(r, &["commit", "-m", "site C"]);
    ok(r, &["checkout", "main"]);
    let e = String::from_utf8_lossy(&fails(r, &["merge", "site-c"]).stderr).into_owned();
    assert!(e.contains("clinical.csv (both changed the row(s) patient_id=P002)"), "{e}");
    let m = json(r, &["merge", "site-c", "--prefer", "theirs", "--json"]);
    assert_eq!(m["merged_files"][0]["settled"], serde_json::json!(["patient_id=P002"]), "{m}");
    assert_eq!(fs::read_to_string(r.join("clinical.csv")).unwrap(), "patient_id,age,site\nP001,50,A\nP002,63,C\nP003,44,A\nP004,39,B\nP005,70,B\nP006,20,C\n");
    assert!(ok(r, &["show"]).contains("note: clinical.csv: conflict: took site-c's version of patient_id=P002 (--prefer theirs)"));
    assert!(ok(r, &["status"]).contains("working tree clean"));
    ok(r, &["fsck"]);
    // Both add the same patient in different places: the lines merge cleanly, but the table
    // would hold P009 twice; row by row it is a conflict.
    write(r, "visits.csv", b"patient_id,visit\nP001,1\nP002,1\nP003,1\nP004,1\n");
    ok(r, &["commit", "-m", "visits"]);
    ok(r, &["branch", "site-d"]);
    write(r, "visits.csv", b"patient_id,visit\nP001,1\nP009,2\nP002,1\nP003,1\nP004,1\n");
    ok(r, &["commit", "-m", "P009 here"]);
    ok(r, &["checkout", "site-d"]);
    write(r, "visits.csv", b"patient_id,visit\nP001,1\nP002,1\nP003,1\nP004,1\nP009,3\n");
    ok(r, &["commit", "-m", "P009 there"]);
    ok(r, &["checkout", "main"]);
    let e = String::from_utf8_lossy(&fails(r, &["merge", "site-d"]).stderr).into_owned();
    assert!(e.contains("visits.csv (both changed the row(s) patient_id=P009)"), "{e}");
}

#[test]
fn text_files_changed_on_both_sides_merge_line_by_line() {
    let d = repo();
    let r = d.path();
    write(r, "clinical.csv", b"id,label\n1,a\n2,b\n3,c\n4,d\n5,e\n6,f\n");
    write(r, "notes.txt", b"first\nsecond\nthird\nfourth\n");
    write(r, "mask.bin", b"\0\x01\x02 binary\n");
    ok(r, &["commit", "-m", "base"]);
    ok(r, &["branch", "rival"]);
    write(r, "clinical.csv", b"id,label\n1,A\n2,b\n3,c\n4,d\n5,e\n6,f\n7,g\n");
    write(r, "notes.txt", b"first\nsecond, by main\nthird\nfourth, by main\n");
    write(r, "mask.bin", b"\0\x01\x02 main\n");
    ok(r, &["commit", "-m", "main"]);
    ok(r, &["checkout", "rival"]);
    write(r, "clinical.csv", b"id,label\n1,a\n2,b\n3,c\n4,D\n5,e\n6,f\n");
    write(r, "notes.txt", b"first\nsecond, by rival\nthird\nfourth\n");
    write(r, "mask.bin", b"\0\x01\x02 rival\n");
    ok(r, &["commit", "-m", "rival"]);
    ok(r, &["checkout", "main"]);
    let e = String::from_utf8_lossy(&fails(r, &["merge", "rival"]).stderr).into_owned();
    assert!(e.contains("2 conflict(s)") && e.contains("notes.txt (both changed the same lines, in 1 place(s))") && e.contains("mask.bin (not merged line by line: not text)") && !e.contains("clinical.csv"), "{e}");
    // Settled: the notes take rival's line where both changed it, and keep main's other change;
    // the binary file takes rival's whole file.
    let dry = json(r, &["merge", "rival", "--prefer", "theirs", "--json", "--dry-run"]);
    let m = json(r, &["merge", "rival", "--prefer", "theirs", "--json"]);
    assert_eq!(m["merged_files"], dry["merged_files"]);
    assert_eq!(
        m["merged_files"],
        serde_json::json!([
            {"path": "clinical.csv", "how": "lines", "ours": [], "theirs": [], "both": [], "settled": []},
            {"path": "notes.txt", "how": "lines", "ours": [], "theirs": [], "both": [], "settled": ["line 2"]},
        ]),
        "{m}"
    );
    let settled: Vec<&str> = m["resolutions"].as_array().unwrap().iter().map(|x| x["conflict"].as_str().unwrap()).collect();
    assert_eq!(settled, ["mask.bin", "notes.txt"], "{m}");
    assert_eq!(fs::read(r.join("clinical.csv")).unwrap(), b"id,label\n1,A\n2,b\n3,c\n4,D\n5,e\n6,f\n7,g\n");
    assert_eq!(fs::read(r.join("notes.txt")).unwrap(), b"first\nsecond, by rival\nthird\nfourth, by main\n");
    assert_eq!(fs::read(r.join("mask.bin")).unwrap(), b"\0\x01\x02 rival\n");
    let shown = ok(r, &["show"]);
    assert!(shown.contains("note: clinical.csv: changed on both sides, merged line by line: a text file: this branch's and rival's changed lines, which do not overlap"), "{shown}");
    assert!(shown.contains("note: notes.txt: conflict: took rival's version of line 2 (--prefer theirs)"), "{shown}");
    assert!(shown.contains("note: notes.txt: changed on both sides, merged line by line: a text file: this branch's and rival's changed lines; both changed line 2 (a settled conflict)"), "{shown}");
    assert!(ok(r, &["status"]).contains("working tree clean"));
    ok(r, &["fsck"]);
}
