//! End-to-end tests of the DICOM-aware store: every encoding through commit and export
//! byte-exactly, header/pixel sharing, attribute-level diffs grouped by patient/study/series,
//! and files that are not (parseable) DICOM stored whole with a note.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use cohort::dicom::synth::{synth_instance, truncate, SynthSpec, SynthSyntax};
use cohort::repo::{Context, Repo};
use cohort::store::Mode;
use common::*;

fn small(p: usize, st: usize, se: usize, i: usize) -> SynthSpec {
    let mut s = SynthSpec::ct(p, st, se, i);
    s.rows = 32;
    s.columns = 32;
    s
}

fn open(r: &Path) -> Repo {
    Repo::open(r, Mode::Read, Context { user: "t".into(), time_us: None, command: vec![] }).unwrap()
}

#[test]
fn every_encoding_commits_and_exports_byte_exactly() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    ok(r, &["init"]);
    let syntaxes = [SynthSyntax::ExplicitLE, SynthSyntax::ImplicitLE, SynthSyntax::ExplicitBE, SynthSyntax::EncapsulatedJpegBaseline, SynthSyntax::DeflatedExplicitLE];
    let mut expect_dicom = Vec::new();
    for (k, syn) in syntaxes.iter().enumerate() {
        for preamble in [true, false] {
            for frames in [1u32, 3] {
                let mut s = small(k, 0, 0, (preamble as usize) * 10 + frames as usize);
                s.syntax = syn.clone();
                s.preamble = preamble;
                s.frames = frames;
                s.with_private = true;
                s.with_sequence = true;
                let name = format!("enc{k}/p{}_f{frames}.dcm", preamble as u8);
                write(r, &name, &synth_instance(&s));
                expect_dicom.push((name, s.sop_uid.clone(), s.patient_id.clone()));
            }
        }
    }
    // Broken and foreign files are stored whole and never refused.
    let whole = synth_instance(&small(9, 0, 0, 0));
    write(r, "broken/truncated.dcm", &truncate(&whole, whole.len() / 2));
    write(r, "broken/empty.dcm", b"");
    write(r, "broken/garbage.dcm", &[0xffu8; 1000]);
    write(r, "table.csv", b"a,b\n1,2\n");
    // Real-world files from pydicom's test suite (MIT), see tests/data/pydicom/README.md.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom");
    for e in fs::read_dir(&corpus).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "dcm") {
            fs::copy(&p, r.join("corpus").join(p.file_name().unwrap())).or_else(|_| {
                fs::create_dir_all(r.join("corpus")).unwrap();
                fs::copy(&p, r.join("corpus").join(p.file_name().unwrap()))
            }).unwrap();
        }
    }
    let before = snapshot(r);
    let o = cohort(r).args(["commit", "-m", "all encodings"]).output().unwrap();
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The summary names each whole-stored DICOM-looking file once, with a reason.
    for f in ["broken/truncated.dcm", "broken/empty.dcm", "broken/garbage.dcm", "corpus/no_meta.dcm", "corpus/MR_truncated.dcm"] {
        assert_eq!(stderr.matches(&format!("note: {f}: stored whole")).count(), 1, "{f}: {stderr}");
    }
    assert!(!stderr.contains("table.csv"), "a CSV is not reported as failed DICOM");

    let ls = json(r, &["ls", "--json"]);
    let by_path = |p: &str| ls.as_array().unwrap().iter().find(|e| e["path"] == p).unwrap_or_else(|| panic!("{p} not listed")).clone();
    for (name, sop, pid) in &expect_dicom {
        let e = by_path(name);
        assert_eq!(e["kind"], "dicom", "{name}");
        assert_eq!(e["dicom"]["sop_instance_uid"], sop.as_str(), "{name}");
        assert_eq!(e["dicom"]["patient_id"], pid.as_str(), "{name}");
    }
    for f in ["corpus/CT_small.dcm", "corpus/MR_small_bigendian.dcm", "corpus/MR_small_implicit.dcm", "corpus/JPEG2000.dcm", "corpus/SC_rgb_rle_2frame.dcm", "corpus/rtplan.dcm", "corpus/nested_priv_SQ.dcm"] {
        assert_eq!(by_path(f)["kind"], "dicom", "{f}");
    }
    assert_eq!(by_path("corpus/CT_small.dcm")["dicom"]["modality"], "CT");
    assert_eq!(by_path("broken/truncated.dcm")["kind"], "file");
    // The commit records the notes too.
    let show = json(r, &["show", "--json"]);
    assert!(show["notes"].as_array().unwrap().iter().any(|n| n["path"] == "broken/truncated.dcm"));

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("x");
    ok(r, &["export", "HEAD", dest.to_str().unwrap()]);
    assert_eq!(snapshot(&dest), before, "every file exported byte-exactly");
    assert!(ok(r, &["fsck"]).contains("ok"));
}

#[test]
fn commit_counts_the_distinct_dicom_instances_it_read() {
    let d = repo();
    let r = d.path();
    let a = synth_instance(&small(0, 0, 0, 0));
    write(r, "a.dcm", &a);
    write(r, "copy/a.dcm", &a);
    write(r, "b.dcm", &synth_instance(&small(0, 0, 0, 1)));
    write(r, "broken.dcm", &truncate(&a, a.len() / 2));
    write(r, "table.csv", b"a,b\n1,2\n");
    let c = json(r, &["commit", "-m", "import", "--json"]);
    assert_eq!(c["files"], 5);
    // Two distinct instances: the copy has the same record, the truncated file is stored whole.
    assert_eq!(c["dicom_instances"], 2, "{c}");
}

#[test]
fn header_only_changes_share_pixel_data() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    ok(r, &["init"]);
    let mut s = SynthSpec::ct(0, 0, 0, 0);
    s.rows = 256;
    s.columns = 256;
    write(r, "a/IM1.dcm", &synth_instance(&s));
    ok(r, &["commit", "-m", "one"]);
    let base = json(r, &["du", "--json"])["store_bytes"].as_u64().unwrap();
    // The same pixels under another header (a corrected copy): costs only a header.
    let mut s2 = s.clone();
    s2.patient_name = "FAKE^RENAMED".into();
    s2.study_description = "corrected".into();
    write(r, "b/IM1.dcm", &synth_instance(&s2));
    ok(r, &["commit", "-m", "copy"]);
    let grown = json(r, &["du", "--json"])["store_bytes"].as_u64().unwrap() - base;
    assert!(grown < 8_000, "a header-only copy of a 128 KiB instance grew the store by {grown} bytes");
    let repo = open(r);
    let ls = repo.ls("HEAD").unwrap();
    let recs: Vec<_> = ls.iter().map(|e| repo.store.read_dicom(&e.id).unwrap()).collect();
    assert_eq!(recs[0].pixel, recs[1].pixel);
    assert_ne!(recs[0].header, recs[1].header);
}

#[test]
fn diff_groups_by_patient_study_series_with_attribute_changes() {
    // Plain and deflated (1.2.840.10008.1.2.1.99): a deflated header is compared inflated.
    for syntax in [SynthSyntax::ExplicitLE, SynthSyntax::DeflatedExplicitLE] {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        ok(r, &["init"]);
        let specs: Vec<SynthSpec> = (0..2)
            .flat_map(|p| (0..2).flat_map(move |se| (0..3).map(move |i| small(p, 0, se, i))))
            .map(|mut s| {
                s.syntax = syntax.clone();
                s
            })
            .collect();
        let path = |s: &SynthSpec| format!("{}/{}/{}.dcm", s.patient_id, s.series_uid, s.instance_number);
        for s in &specs {
            write(r, &path(s), &synth_instance(s));
        }
        ok(r, &["commit", "-m", "import"]);
        // Patient 0: one instance gets a new description (header only); one gets new pixels.
        let mut a = specs[0].clone();
        a.study_description = "FAKE CORRECTED".into();
        write(r, &path(&a), &synth_instance(&a));
        let mut b = specs[1].clone();
        b.pixel_seed ^= 0xdead;
        write(r, &path(&b), &synth_instance(&b));
        // Patient 1: one instance removed.
        fs::remove_file(r.join(path(&specs[11]))).unwrap();
        ok(r, &["commit", "-m", "edit"]);
        let diff = json(r, &["diff", "HEAD~1", "HEAD", "--json"]);
        assert_eq!((diff["added"].as_u64(), diff["removed"].as_u64(), diff["modified"].as_u64()), (Some(0), Some(1), Some(2)));
        let patients = diff["dicom"].as_array().unwrap();
        assert_eq!(patients.len(), 2);
        let p0 = patients.iter().find(|p| p["patient_id"] == specs[0].patient_id.as_str()).unwrap();
        let inst: Vec<&serde_json::Value> = p0["studies"][0]["series"][0]["instances"].as_array().unwrap().iter().collect();
        assert_eq!(p0["studies"][0]["study_uid"], specs[0].study_uid.as_str());
        assert_eq!(p0["studies"][0]["series"][0]["series_uid"], specs[0].series_uid.as_str());
        let ia = inst.iter().find(|i| i["sop_instance_uid"] == a.sop_uid.as_str()).unwrap();
        assert_eq!(ia["pixel_changed"], false);
        let attrs = ia["attributes"].as_array().unwrap();
        assert_eq!(attrs.len(), 1, "{attrs:?}");
        assert_eq!(attrs[0]["tag"], "(0008,1030)");
        assert_eq!(attrs[0]["keyword"], "StudyDescription");
        assert_eq!(attrs[0]["new"], "FAKE CORRECTED");
        let ib = inst.iter().find(|i| i["sop_instance_uid"] == b.sop_uid.as_str()).unwrap();
        assert_eq!(ib["pixel_changed"], true);
        assert_eq!(ib["attributes"].as_array().unwrap().len(), 0);
        let p1 = patients.iter().find(|p| p["patient_id"] == specs[11].patient_id.as_str()).unwrap();
        assert_eq!(p1["studies"][0]["series"][0]["instances"][0]["status"], "removed");
        // The human rendering shows the same, grouped.
        let text = ok(r, &["diff", "HEAD~1", "HEAD"]);
        assert!(text.contains(&format!("Patient {}", specs[0].patient_id)));
        assert!(text.contains("StudyDescription"));
        assert!(text.contains("[pixel data changed]"));
    }
}

#[test]
fn status_sees_a_one_byte_change_in_pixel_data() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    ok(r, &["init"]);
    let bytes = synth_instance(&small(0, 0, 0, 0));
    write(r, "x.dcm", &bytes);
    ok(r, &["commit", "-m", "one"]);
    // Same size, same mtime second: the racy-clean guard must still catch it.
    let mut b = bytes.clone();
    let n = b.len() - 3;
    b[n] ^= 1;
    fs::write(r.join("x.dcm"), &b).unwrap();
    assert!(ok(r, &["status"]).contains("M x.dcm"));
}

#[test]
fn uid_lookups_catch_up_lazily_and_rebuild() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    ok(r, &["init"]);
    let a = small(0, 0, 0, 0);
    write(r, "a.dcm", &synth_instance(&a));
    let c1 = ok(r, &["commit", "-m", "one"]).trim().to_string();
    let mut a2 = a.clone();
    a2.study_description = "FAKE EDITED".into();
    write(r, "a.dcm", &synth_instance(&a2));
    let c2 = ok(r, &["commit", "-m", "two"]).trim().to_string();
    let check = || {
        let repo = Repo::open(r, Mode::Write, Context { user: "t".into(), time_us: None, command: vec![] }).unwrap();
        let found = repo.find_uid(cohort::index::UidKind::Instance, &a.sop_uid).unwrap();
        // Two versions of the instance, each introduced by its own commit at the same path.
        let mut commits: Vec<String> = found.iter().flat_map(|(_, c)| c.iter().map(|(id, p)| {
            assert_eq!(p, "a.dcm");
            id.hex()
        })).collect();
        commits.sort();
        let mut want = vec![c1.clone(), c2.clone()];
        want.sort();
        assert_eq!(commits, want);
        assert!(repo.find_uid(cohort::index::UidKind::Instance, "2.25.0").unwrap().is_empty());
    };
    check();
    ok(r, &["reindex"]);
    check();
    // The index can be deleted outright: it is rebuilt from the objects.
    fs::remove_dir_all(r.join(".cohort/index")).unwrap();
    check();
    assert!(ok(r, &["status"]).contains("clean"));
}

/// Two curators change the same instances on two branches. Where they changed different
/// attributes (or one the pixel data and the other an attribute), the merge takes both
/// changes: each merged file is byte for byte the file made with both changes at once.
/// Where they changed the same attribute differently, or one rewrote the file in another
/// transfer syntax, the file stays a conflict that names why.
#[test]
fn dicom_instances_changed_on_both_sides_merge_attribute_by_attribute() {
    let d = repo();
    let r = d.path();
    let base: Vec<SynthSpec> = (0..7).map(|i| small(0, 0, 0, i)).collect();
    let name = |i: usize| format!("P0/s0/IM{i}.dcm");
    for (i, s) in base.iter().enumerate() {
        write(r, &name(i), &synth_instance(s));
    }
    ok(r, &["commit", "-m", "import"]);
    ok(r, &["branch", "rival"]);
    // What each side does to each instance, and what a merge should give.
    type Edit = fn(&mut SynthSpec);
    let edits: [(Edit, Edit); 7] = [
        (|s| s.patient_name = "FAKE^RENAMED".into(), |s| s.study_description = "CHEST CT, corrected".into()),
        (|s| s.pixel_seed += 1, |s| s.institution_name = "FAKE HOSPITAL, corrected".into()),
        (|s| s.with_sequence = false, |s| { s.accession_number = "ACC-FIXED".into(); s.study_description = "same fix".into() }),
        (|s| s.study_description = "same fix".into(), |s| s.patient_sex = "O".into()),
        (|s| { s.study_description = "main's description".into(); s.institution_name = "MAIN CLINIC".into() }, |s| s.study_description = "rival's description".into()),
        (|s| s.patient_name = "FAKE^OTHER".into(), |s| s.syntax = SynthSyntax::ImplicitLE),
        (|s| s.institution_name = "FAKE CLINIC".into(), |s| { s.pixel_seed += 7; s.rows = 16 }),
    ];
    let (mut ours, mut theirs) = (base.clone(), base.clone());
    for (i, (o, t)) in edits.iter().enumerate() {
        o(&mut ours[i]);
        t(&mut theirs[i]);
    }
    // Instance 3: rival also makes main's change to the description (same bytes).
    theirs[3].study_description = "same fix".into();
    for (i, s) in ours.iter().enumerate() {
        write(r, &name(i), &synth_instance(s));
    }
    ok(r, &["commit", "-m", "main's corrections"]);
    ok(r, &["checkout", "rival"]);
    for (i, s) in theirs.iter().enumerate() {
        write(r, &name(i), &synth_instance(s));
    }
    ok(r, &["commit", "-m", "rival's corrections"]);
    ok(r, &["checkout", "main"]);
    let before = snapshot(r);

    // Two true conflicts, each with its reason; nothing changes.
    let e = fails(r, &["merge", "rival"]);
    assert_eq!(e.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&e.stderr).into_owned();
    assert!(msg.contains("2 conflict(s)"), "{msg}");
    assert!(msg.contains("P0/s0/IM4.dcm (both changed (0008,1030) StudyDescription)"), "{msg}");
    assert!(msg.contains("P0/s0/IM5.dcm (not merged attribute by attribute: the transfer syntax differs"), "{msg}");
    assert!(!msg.contains("IM0") && !msg.contains("IM1") && !msg.contains("IM2") && !msg.contains("IM3"), "{msg}");
    assert_eq!(snapshot(r), before);

    // A dry run says what the merge would do, and changes nothing.
    let dry = json(r, &["merge", "rival", "--take", "P0/s0/IM4.dcm=theirs", "--prefer", "ours", "--dry-run", "--json"]);
    assert_eq!((dry["dry_run"].as_bool(), dry["merged_files"].as_array().map(Vec::len), dry["resolved"].as_array().map(Vec::len)), (Some(true), Some(6), Some(2)), "{dry}");
    assert_eq!(snapshot(r), before);
    assert_eq!(json(r, &["log", "--json"])[0]["message"], "main's corrections");

    // Settled, the conflicts take a side: IM4 its description from rival and its other
    // change from main, IM5 (no attribute merge) main's whole file. The other five take both
    // sides' changes.
    let out = cohort(r).args(["merge", "rival", "--take", "P0/s0/IM4.dcm=theirs", "--prefer", "ours", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((m["merged_files"].clone(), m["resolutions"].clone(), m["dry_run"].as_bool()), (dry["merged_files"].clone(), dry["resolutions"].clone(), Some(false)));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains("6 DICOM instance(s) changed on both sides, merged attribute by attribute"), "{said}");
    let merged: Vec<(String, serde_json::Value, serde_json::Value, serde_json::Value)> = m["merged_files"].as_array().unwrap().iter().map(|x| (x["path"].as_str().unwrap().to_string(), x["ours"].clone(), x["theirs"].clone(), x["both"].clone())).collect();
    let j = |v: &[&str]| serde_json::json!(v);
    assert_eq!(merged, vec![
        (name(0), j(&["(0010,0010) PatientName"]), j(&["(0008,1030) StudyDescription"]), j(&[])),
        (name(1), j(&["pixel data"]), j(&["(0008,0080) InstitutionName"]), j(&[])),
        (name(2), j(&["(0008,1140) ReferencedImageSequence"]), j(&["(0008,0050) AccessionNumber", "(0008,1030) StudyDescription"]), j(&[])),
        (name(3), j(&[]), j(&["(0010,0040) PatientSex"]), j(&["(0008,1030) StudyDescription"])),
        (name(4), j(&["(0008,0080) InstitutionName"]), j(&[]), j(&[])),
        (name(6), j(&["(0008,0080) InstitutionName"]), j(&["(0028,0010) Rows", "pixel data"]), j(&[])),
    ], "{m}");
    assert_eq!(m["merged_files"][4]["settled"], j(&["(0008,1030) StudyDescription"]), "{m}");
    assert_eq!(m["resolved"], j(&[&name(4), &name(5)]), "{m}");
    let mut both = base.clone();
    for (i, (o, t)) in edits.iter().enumerate() {
        o(&mut both[i]);
        t(&mut both[i]);
    }
    for (i, s) in both.iter().enumerate().filter(|(i, _)| *i != 5) {
        assert!(fs::read(r.join(name(i))).unwrap() == synth_instance(s), "{}: not the file with both changes", name(i));
    }
    assert_eq!(fs::read(r.join(name(5))).unwrap(), synth_instance(&ours[5]));
    // The merged records are what a commit of those bytes makes: the tree is clean, the
    // store is sound, and ls shows the merged attributes.
    assert!(ok(r, &["status"]).contains("working tree clean"));
    ok(r, &["fsck"]);
    let ls = json(r, &["ls", "HEAD", "--json"]);
    let row = ls.as_array().unwrap().iter().find(|x| x["path"] == name(0).as_str()).unwrap().clone();
    assert_eq!(row["dicom"]["patient_name"], "FAKE^RENAMED", "{row}");
    let show = ok(r, &["show"]);
    assert!(show.contains("note: P0/s0/IM1.dcm: changed on both sides, merged attribute by attribute: this branch changed pixel data; rival changed (0008,0080) InstitutionName\n"), "{show}");
    assert!(show.contains("note: P0/s0/IM4.dcm: conflict: took rival's version of (0008,1030) StudyDescription (--take P0/s0/IM4.dcm=theirs)"), "{show}");
    assert!(show.contains("note: P0/s0/IM5.dcm: conflict: kept this branch's version (--prefer ours)"), "{show}");
    assert!(show.contains("note: P0/s0/IM3.dcm: changed on both sides, merged attribute by attribute: this branch changed nothing; rival changed (0010,0040) PatientSex; both changed (0008,1030) StudyDescription alike"), "{show}");
    // An auditor's blame: the merge made this version, with what came from the other side.
    let rival = json(r, &["show", "rival", "--json"])["id"].as_str().unwrap()[..12].to_string();
    let b = json(r, &["blame", &name(0), "--json"]);
    let first = &b["events"][0];
    assert_eq!((first["event"].as_str(), first["details"]["other-parents"].as_str()), (Some("merged"), Some(rival.as_str())), "{b}");
    assert!(first["summary"].as_str().unwrap().contains("StudyDescription") && first["details"]["merge-note"].as_str().unwrap().contains("attribute by attribute"), "{b}");
    assert_eq!(b["events"][1]["event"], "modified", "{b}");
    // The diff from main's side to the merge is rival's corrections alone.
    let diff = ok(r, &["diff", "HEAD~1", "HEAD"]);
    assert!(diff.contains("StudyDescription") && diff.contains("InstitutionName") && !diff.contains("PatientName"), "{diff}");
}

/// An independent check on real-world files (pydicom's test files, MIT; tests/data/pydicom):
/// Two curators edit different attributes inside the same sequence (items of defined and
/// undefined length, nested three deep, big endian), or one adds an item: the sequence is
/// merged item by item, and
/// the merge is byte for byte what dcmtk's dcmodify writes when it makes both edits. The same
/// nested attribute edited differently is a conflict named down to the item, and settling it
/// keeps the other side's change in that sequence.
#[test]
fn edits_inside_one_sequence_merge_item_by_item() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom");
    let d = repo();
    let r = d.path();
    // file, this branch's edit, the rival's edit, the units each side changed (a sequence
    // only one side changed is one unit; dcmodify writes every sequence with defined lengths,
    // so in JPEG2000.dcm both sides changed the nested one)
    let cases = [
        ("rtplan.dcm", "(300a,0010)[0].(300a,0016)=MAIN'S LONGER DESCRIPTION", "(300a,0010)[0].(300a,0020)=TARGET", "(300A,0016) DoseReferenceSequence[0].DoseReferenceDescription", "(300A,0020) DoseReferenceSequence[0].DoseReferenceType"),
        ("rtplan_implicit.dcm", "(300a,0010)[1].(300a,0014)=VOLUME", "(300a,0010)[0].(300a,0018)=1\\2\\3", "(300A,0014) DoseReferenceSequence[1].DoseReferenceStructureType", "(300A,0018) DoseReferenceSequence[0].DoseReferencePointCoordinates"),
        ("JPEG2000.dcm", "(0008,2112)[0].(0040,a170)[0].(0008,0104)=Meaning By Main", "(0008,2112)[0].(0008,1150)=1.2.840.10008.5.1.4.1.1.7.4", "(0008,0104) SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeMeaning", "(0008,1150) SourceImageSequence[0].ReferencedSOPClassUID"),
        // The rival adds a second item: items are matched by their Referenced SOP Instance UID.
        ("JPEG-lossy.dcm", "(0008,2112)[0].(0040,a170)[0].(0008,0104)=Meaning By Main", "(0008,2112)[1].(0008,1155)=1.2.826.0.1.3680043.2.1125.43", "(0008,0104) SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeMeaning", "(0008,1155) SourceImageSequence[1].ReferencedSOPInstanceUID"),
        ("CT_small.dcm", "(0010,1002)[0].(0010,0020)=FAKE1", "(0010,1002)[1].(0010,0020)=FAKE-22", "(0010,0020) OtherPatientIDsSequence[0].PatientID", "(0010,0020) OtherPatientIDsSequence[1].PatientID"),
        ("rtdose_expb.dcm", "(300c,0002)[0].(0008,1150)=1.2.840.10008.5.1.4.1.1.481.8", "(300c,0002)[0].(300c,0020)[0].(300c,0004)[0].(300c,0006)=12", "(0008,1150) ReferencedRTPlanSequence[0].ReferencedSOPClassUID", "(300C,0020) ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence"),
    ];
    for (f, ..) in &cases {
        if let Some(source) = f.strip_suffix("_implicit.dcm") {
            // rtplan.dcm in implicit VR, by dcmtk's dcmconv.
            fs::create_dir_all(r.join("files")).unwrap();
            let o = Command::new("dcmconv").arg("+ti").arg(corpus.join(format!("{source}.dcm"))).arg(r.join("files").join(f)).output().expect("dcmconv (dcmtk)");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        } else {
            write(r, &format!("files/{f}"), &fs::read(corpus.join(f)).unwrap());
        }
    }
    ok(r, &["commit", "-m", "import"]);
    let dcmodify = |path: &Path, edit: &str| {
        let o = Command::new("dcmodify").args(["-nb", "-i", edit]).arg(path).output().expect("dcmodify (dcmtk; .ci/run installs it)");
        assert!(o.status.success(), "dcmodify {edit} {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    };
    let base: Vec<Vec<u8>> = cases.iter().map(|(f, ..)| fs::read(r.join("files").join(f)).unwrap()).collect();
    ok(r, &["branch", "rival"]);
    ok(r, &["branch", "rival2"]);
    for (f, ours, ..) in &cases {
        dcmodify(&r.join("files").join(f), ours);
    }
    ok(r, &["commit", "-m", "main's edits"]);
    ok(r, &["checkout", "rival"]);
    for (f, _, theirs, ..) in &cases {
        dcmodify(&r.join("files").join(f), theirs);
    }
    ok(r, &["commit", "-m", "rival's edits"]);
    ok(r, &["checkout", "main"]);
    let m = json(r, &["merge", "rival", "--json"]);
    let both = tempfile::tempdir().unwrap();
    for ((f, ours, theirs, ours_unit, theirs_unit), b) in cases.iter().zip(&base) {
        let x = both.path().join(f);
        fs::write(&x, b).unwrap();
        dcmodify(&x, ours);
        dcmodify(&x, theirs);
        assert!(fs::read(r.join("files").join(f)).unwrap() == fs::read(&x).unwrap(), "{f}: the merge is not what dcmodify makes with both edits");
        let e = m["merged_files"].as_array().unwrap().iter().find(|e| e["path"] == format!("files/{f}")).unwrap_or_else(|| panic!("{f}: {m}"));
        assert_eq!((&e["ours"], &e["theirs"]), (&serde_json::json!([ours_unit]), &serde_json::json!([theirs_unit])), "{f}: {e}");
    }
    assert!(ok(r, &["status"]).contains("working tree clean"));
    // The same nested attribute, changed differently: a conflict named down to the item.
    ok(r, &["checkout", "rival2"]);
    dcmodify(&r.join("files/rtplan.dcm"), "(300a,0010)[0].(300a,0016)=RIVAL2");
    ok(r, &["commit", "-m", "rival2's edit"]);
    ok(r, &["checkout", "main"]);
    let e = String::from_utf8_lossy(&fails(r, &["merge", "rival2"]).stderr).into_owned();
    assert!(e.contains("files/rtplan.dcm (both changed (300A,0016) DoseReferenceSequence[0].DoseReferenceDescription)"), "{e}");
    // Settled for rival2: its description, and this branch's Dose Reference Type stays.
    let m = json(r, &["merge", "rival2", "--prefer", "theirs", "--json"]);
    let e = &m["merged_files"][0];
    assert_eq!(e["settled"], serde_json::json!(["(300A,0016) DoseReferenceSequence[0].DoseReferenceDescription"]), "{m}");
    let dump = Command::new("dcmdump").args(["-q", "+P", "300a,0016", "+P", "300a,0020"]).arg(r.join("files/rtplan.dcm")).output().unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("[RIVAL2]") && dump.contains("[TARGET]"), "{dump}");
    ok(r, &["fsck"]);
}

/// A file stored whole in the base (a bare data set, or a placeholder) that both sides
/// replaced with DICOM stays a conflict, and says why.
#[test]
fn a_file_stored_whole_on_one_side_is_not_merged_by_attribute() {
    let d = repo();
    let r = d.path();
    write(r, "IM1.dcm", b"placeholder, not DICOM yet");
    ok(r, &["commit", "-m", "base"]);
    ok(r, &["branch", "rival"]);
    write(r, "IM1.dcm", &synth_instance(&small(1, 1, 1, 1)));
    ok(r, &["commit", "-m", "main"]);
    ok(r, &["checkout", "rival"]);
    write(r, "IM1.dcm", &synth_instance(&small(1, 1, 1, 2)));
    ok(r, &["commit", "-m", "rival"]);
    ok(r, &["checkout", "main"]);
    let e = String::from_utf8_lossy(&fails(r, &["merge", "rival"]).stderr).into_owned();
    assert!(e.contains("IM1.dcm (not merged attribute by attribute: stored whole, not as DICOM, in the base)"), "{e}");
}

/// dcmtk's dcmodify edits one attribute of each file on one branch and another attribute on
/// the other; the merge must be byte for byte what dcmodify writes when it makes both edits
/// one after the other. Files dcmodify rewrites with a new random UID on each run, and the
/// deflated one, stay conflicts.
#[test]
fn merged_real_world_files_equal_dcmodify_making_both_edits() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom");
    let d = repo();
    let r = d.path();
    let mut names = Vec::new();
    for e in fs::read_dir(&corpus).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "dcm") {
            let name = format!("files/{}", p.file_name().unwrap().to_str().unwrap());
            write(r, &name, &fs::read(&p).unwrap());
            names.push(name);
        }
    }
    names.sort();
    ok(r, &["commit", "-m", "import"]);
    // Only what is stored as DICOM can be merged by attribute.
    let ls = json(r, &["ls", "HEAD", "--json"]);
    names.retain(|n| ls.as_array().unwrap().iter().any(|x| x["path"] == n.as_str() && x["kind"] == "dicom"));
    let base: BTreeMap<String, Vec<u8>> = names.iter().map(|n| (n.clone(), fs::read(r.join(n)).unwrap())).collect();
    let dcmodify = |path: &Path, edit: &str| {
        let o = Command::new("dcmodify").args(["-nb", "-i", edit]).arg(path).output().expect("dcmodify (dcmtk; .ci/run installs it)");
        o.status.success()
    };
    let (ours_edit, theirs_edit) = ("(0008,1030)=CORRECTED BY MAIN", "(0010,0040)=O");
    ok(r, &["branch", "rival"]);
    names.retain(|n| dcmodify(&r.join(n), ours_edit));
    ok(r, &["commit", "-m", "main's edit"]);
    ok(r, &["checkout", "rival"]);
    // (dcmodify refuses the second edit where Patient Sex is UN: those change on one side.)
    names.retain(|n| dcmodify(&r.join(n), theirs_edit));
    ok(r, &["commit", "-m", "rival's edit"]);
    ok(r, &["checkout", "main"]);
    let out = cohort(r).args(["merge", "rival", "--prefer", "ours", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // (A file whose conflict --prefer settled attribute by attribute is merged too; it is not
    // what dcmodify makes.)
    let merged: Vec<&str> = m["merged_files"].as_array().unwrap().iter().filter(|x| x["settled"] == serde_json::json!([])).map(|x| x["path"].as_str().unwrap()).collect();
    let both = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for n in &names {
        let f = both.path().join(n.replace('/', "_"));
        fs::write(&f, &base[n]).unwrap();
        assert!(dcmodify(&f, ours_edit) && dcmodify(&f, theirs_edit));
        let expected = fs::read(&f).unwrap();
        if merged.contains(&n.as_str()) {
            assert!(fs::read(r.join(n)).unwrap() == expected, "{n}: the merge is not what dcmodify makes with both edits");
            checked += 1;
        }
    }
    // Group lengths, big endian, implicit VR, encapsulated pixel data of every kind are among
    // them.
    assert!(checked >= 25, "{checked} of {} merged: {m}", names.len());
    // The two left: deflated, and one that dcmodify gave a new random Media Storage SOP
    // Instance UID on each side (it has no SOP Instance UID of its own).
    assert_eq!(m["resolved"], serde_json::json!(["files/image_dfl.dcm", "files/nested_priv_SQ.dcm"]), "{m}");
    assert_eq!(checked + 2, names.len());
    assert!(merged.contains(&"files/ExplVR_BigEnd.dcm") && merged.contains(&"files/MR_small_implicit.dcm"), "{m}");
    assert!(ok(r, &["status"]).contains("working tree clean"));
    ok(r, &["fsck"]);
}

/// `find` selects instances by header attributes in every transfer syntax, and its list feeds
/// `export --paths-from`.
#[test]
fn find_selects_instances_by_attribute() {
    let d = repo();
    let r = d.path();
    let syntaxes = [SynthSyntax::ExplicitLE, SynthSyntax::ImplicitLE, SynthSyntax::ExplicitBE, SynthSyntax::EncapsulatedJpegBaseline, SynthSyntax::DeflatedExplicitLE];
    let mut specs = Vec::new();
    for i in 0..10usize {
        let mut s = fake_ct("find", i % 3, 0, 0, i, 8 + (i as u16 % 2) * 8);
        s.modality = if i % 4 == 0 { "MR".into() } else { "CT".into() };
        s.study_date = format!("2019{:02}15", i + 1);
        s.institution_name = if i % 2 == 0 { "Fake General Hospital".into() } else { "Other Clinic".into() };
        s.instance_number = i as i64 * 10;
        s.syntax = syntaxes[i % syntaxes.len()].clone();
        let path = format!("{}/i{i}.dcm", s.patient_id);
        write(r, &path, &synth_instance(&s));
        specs.push((path, s));
    }
    write(r, "notes.txt", b"not DICOM");
    ok(r, &["commit", "-m", "import"]);
    let found = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["find"];
        a.extend_from_slice(args);
        ok(r, &a).lines().map(|l| l.split('\t').next().unwrap().to_string()).collect()
    };
    let want = |f: &dyn Fn(&SynthSpec) -> bool| -> Vec<String> {
        let mut v: Vec<String> = specs.iter().filter(|(_, s)| f(s)).map(|(p, _)| p.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(found(&["-w", "Modality=CT"]), want(&|s| s.modality == "CT"));
    assert_eq!(found(&["-w", "Modality!=CT"]), want(&|s| s.modality != "CT"));
    assert_eq!(found(&["-w", "InstanceNumber>=50"]), want(&|s| s.instance_number >= 50), "numbers compare as numbers");
    assert_eq!(found(&["-w", "StudyDate<20190601", "-w", "Modality=CT"]), want(&|s| s.study_date.as_str() < "20190601" && s.modality == "CT"));
    assert_eq!(found(&["-w", "InstitutionName~*general*"]), want(&|s| s.institution_name.contains("General")));
    assert_eq!(found(&["-w", "Rows=16"]), want(&|s| s.rows == 16));
    assert_eq!(found(&["-w", "(0002,0010)=1.2.840.10008.1.2"]), want(&|s| matches!(s.syntax, SynthSyntax::ImplicitLE)), "file meta attributes");
    assert_eq!(found(&["-w", "PixelData"]).len(), 10);
    assert_eq!(found(&["-w", "!PatientID"]).len(), 0);
    assert_eq!(found(&[]).len(), 10, "no condition: every instance");
    assert_eq!(found(&["--", "FAKE0001"]), want(&|s| s.patient_id == "FAKE0001"));
    // --show and --json give the values.
    let out = ok(r, &["find", "-w", "Modality=MR", "--show", "StudyDate,(0008,0080)"]);
    let (p0, s0) = specs.iter().find(|(_, s)| s.modality == "MR").unwrap();
    assert!(out.lines().any(|l| l == format!("{p0}\t{}\t{}", s0.study_date, s0.institution_name)), "{out}");
    let j = json(r, &["find", "-w", "Modality=MR", "--json"]);
    assert_eq!(j["instances"], 10);
    assert_eq!(j["matches"][0]["values"]["Modality"], "MR");
    // Counted by patient: the patient's ID, how many match, the first match's values.
    let by = ok(r, &["find", "-w", "Modality=CT", "--by", "patient", "--show", "Modality"]);
    let mut want_by: Vec<String> = Vec::new();
    for p in ["FAKE0000", "FAKE0001", "FAKE0002"] {
        let n = specs.iter().filter(|(_, s)| s.patient_id == p && s.modality == "CT").count();
        want_by.push(format!("{p}\t{n}\tCT"));
    }
    assert_eq!(by.lines().collect::<Vec<_>>(), want_by);
    let g = json(r, &["find", "--by", "series", "--json"]);
    assert_eq!(g.as_array().unwrap().len(), 3, "one series per patient here: {g}");
    // Bad conditions are named.
    for (cond, why) in [("Modality?CT", "no such DICOM keyword"), ("=CT", "no attribute named"), ("Modality~[", "Modality~[")] {
        let e = String::from_utf8_lossy(&fails(r, &["find", "-w", cond]).stderr).into_owned();
        assert!(e.contains(why), "{cond}: {e}");
    }
    // The list feeds an export.
    let list = r.join("../ct-list.txt");
    fs::write(&list, ok(r, &["find", "-w", "Modality=CT"])).unwrap();
    let o = tempfile::tempdir().unwrap();
    let out = o.path().join("ct");
    ok(r, &["export", "HEAD", out.to_str().unwrap(), "--paths-from", list.to_str().unwrap()]);
    let mut got: Vec<String> = snapshot(&out).into_keys().collect();
    got.sort();
    assert_eq!(got, want(&|s| s.modality == "CT"));
    for p in &got {
        assert_eq!(fs::read(out.join(p)).unwrap(), fs::read(r.join(p)).unwrap());
    }
    fs::remove_file(&list).unwrap();
}
