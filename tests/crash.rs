//! Crash consistency: kill -9 a committing process at many moments; the store must reopen
//! with either the old or the new commit complete, fsck clean, and nothing lost.
mod common;

use std::time::{Duration, Instant};

use common::*;

fn fill(root: &std::path::Path, round: u64) {
    // Pseudo-random, partly compressible content so that a commit takes measurable time.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ round;
    for i in 0..150 {
        let n = 20_000 + (i * 997) % 60_000;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(if x.is_multiple_of(3) { (x >> 24) as u8 } else { (i % 7) as u8 });
        }
        write(root, &format!("s{}/f{i:03}.bin", i % 5), &v);
    }
}

#[test]
fn kill_during_commit_leaves_a_consistent_store() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    ok(r, &["init"]);
    fill(r, 0);
    ok(r, &["commit", "-m", "base"]);

    // Calibrate: how long does a commit of fresh content take here?
    fill(r, 1);
    let t = Instant::now();
    ok(r, &["commit", "-m", "calibrate"]);
    let full = t.elapsed().max(Duration::from_millis(20));

    let rounds = 16u64;
    let mut completed = 0;
    for round in 0..rounds {
        fill(r, 100 + round);
        let expected = snapshot(r);
        let heads_before = json(r, &["log", "--json"]);
        let before = heads_before[0]["id"].as_str().unwrap().to_string();
        let mut child = cohort(r).args(["commit", "-m", &format!("round {round}")]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        // Spread the kills over the whole commit, and past its end.
        let at = full.mul_f64((round as f64 + 0.5) / rounds as f64 * 1.4);
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();

        let o = cohort(r).args(["fsck"]).output().unwrap();
        assert!(o.status.success(), "round {round} (killed at {at:?}, {status:?}): fsck failed:\n{}", String::from_utf8_lossy(&o.stdout));
        let log = json(r, &["log", "--json"]);
        let head = log[0]["id"].as_str().unwrap().to_string();
        if head != before {
            completed += 1;
            assert_eq!(log[1]["id"].as_str().unwrap(), before, "the new commit's parent is the old head");
            let out = tempfile::tempdir().unwrap();
            let dest = out.path().join("x");
            ok(r, &["export", "HEAD", dest.to_str().unwrap()]);
            assert_eq!(snapshot(&dest), expected, "round {round}: the completed commit holds exactly the tree");
        }
        // The store is writable again (lock released) and status works.
        let st = json(r, &["status", "--json"]);
        assert_eq!(st["clean"].as_bool().unwrap(), head != before, "round {round}");
        if head == before {
            ok(r, &["commit", "-m", &format!("round {round} again")]);
        }
    }
    // Every round ends with its content committed; gc and fsck stay clean.
    ok(r, &["gc"]);
    assert!(ok(r, &["fsck"]).contains("ok"));
    eprintln!("{completed} of {rounds} killed commits had completed");
}

/// sled rewrites its `conf` file when it opens; a kill at that moment leaves it torn, and sled
/// then refuses the whole index. The index only caches what the objects hold: cohort moves it
/// aside, says so, and rebuilds it.
#[test]
fn a_torn_index_is_rebuilt_and_nothing_is_lost() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    ok(r, &["init"]);
    fill(r, 7);
    let head = ok(r, &["commit", "-m", "base"]).trim().to_string();
    let conf = r.join(".cohort/index/conf");
    let mut b = std::fs::read(&conf).unwrap();
    b.iter_mut().take(16).for_each(|x| *x ^= 0x5a);
    std::fs::write(&conf, b).unwrap();
    let o = cohort(r).args(["status"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let warning = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(warning.contains("index") && warning.contains("rebuilt"), "{warning}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("working tree clean"));
    // Warned once: the new index opens cleanly.
    assert!(!String::from_utf8_lossy(&cohort(r).args(["status"]).output().unwrap().stderr).contains("damaged"));
    assert_eq!(json(r, &["log", "--json"])[0]["id"], head.as_str());
    ok(r, &["fsck"]);
    write(r, "more.txt", b"after the repair\n");
    ok(r, &["commit", "-m", "after"]);
    assert!(r.join(".cohort/index.corrupt").is_dir());
}
