//! End-to-end tests of issue #4: annotations, splits and training exports, driven through the
//! binary on synthetic CT series of FAKE patients. Expected values (kappa, Dice, affines) are
//! worked out here by hand or with independent readers (nibabel, pydicom), not with cohort's
//! own code.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use cohort::dicom::synth::{synth_instance, SynthSpec};
use cohort::nifti::{write_nifti, Nifti, NiftiData};
use common::*;
use serde_json::Value;

/// Namespace of this file's test UIDs.
const NS: &str = "annotate_cli";

fn spec(p: usize, i: usize) -> SynthSpec {
    let mut s = fake_ct(NS, p, 0, 0, i, SIZE);
    s.with_private = false;
    s
}

const SIZE: u16 = 32;
const SLICES: usize = 4;

fn path_of(p: usize, i: usize) -> String {
    format!("P{p}/S0/IM{i}.dcm")
}

fn add_patient(r: &Path, p: usize) {
    for i in 0..SLICES {
        write(r, &path_of(p, i), &synth_instance(&spec(p, i)));
    }
}

/// A store with `n` patients committed, in `ds/` of a temp folder (whose other entries are
/// the test's input and output files).
fn dataset(n: usize) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let rp = t.path().join("ds");
    fs::create_dir(&rp).unwrap();
    let r = rp.as_path();
    ok(r, &["init"]);
    for p in 0..n {
        add_patient(r, p);
    }
    ok(r, &["commit", "-m", "import"]);
    t
}

fn series(p: usize) -> String {
    test_uid(NS, &format!("series {p} 0 0"))
}

fn head(r: &Path) -> String {
    json(r, &["log", "--json"])[0]["id"].as_str().unwrap().to_string()
}

fn labels_csv(r: &Path, name: &str, labels: &[&str]) -> std::path::PathBuf {
    let mut s = String::from("series_uid,label\n");
    for (p, l) in labels.iter().enumerate() {
        s.push_str(&format!("{},{l}\n", series(p)));
    }
    let f = r.join("..").join(name);
    fs::write(&f, s).unwrap();
    f
}

fn import_labels(r: &Path, file: &Path, reader: &str) -> String {
    ok(r, &["annotate", "import", "main", file.to_str().unwrap(), "--reader", reader, "--kind", "label", "--source", "retrospective", "--task", "finding"])
}

const A: [&str; 6] = ["pos", "neg", "pos", "neg", "pos", "neg"];
const B: [&str; 6] = ["pos", "neg", "neg", "neg", "pos", "pos"];
const C: [&str; 6] = ["pos", "neg", "pos", "pos", "pos", "neg"];

#[test]
fn readers_disagree_kappa_consensus_and_label_diff() {
    let t = dataset(6);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    let a = labels_csv(r, "a.csv", &A);
    let b = labels_csv(r, "b.csv", &B);
    import_labels(r, &a, "reader-a");
    let after_a = head(r);
    import_labels(r, &b, "reader-b");
    // Two readers: Cohen's kappa. Agree on 4 of 6 (po = 2/3); each says pos 3 times
    // (pe = 1/2): kappa = (2/3 - 1/2) / (1/2) = 1/3.
    let ag = json(r, &["agreement", "--task", "finding", "--json"]);
    assert_eq!(ag["statistic"], "cohen-kappa");
    assert!((ag["overall"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9, "{ag}");
    assert_eq!(ag["items"], 6);

    // Three readers: Fleiss' kappa, worked out by hand. Per item (pos, neg) counts:
    // (3,0) (0,3) (2,1) (1,2) (3,0) (1,2): P_i = 1, 1, 1/3, 1/3, 1, 1/3 -> P̄ = 2/3;
    // p_pos = 10/18, p_neg = 8/18 -> P̄e = (100 + 64) / 324; kappa = (P̄ - P̄e) / (1 - P̄e).
    let c = labels_csv(r, "c.csv", &C);
    import_labels(r, &c, "reader-c");
    let ag = json(r, &["agreement", "--task", "finding", "--json"]);
    let pe = 164.0 / 324.0;
    let expected = (2.0 / 3.0 - pe) / (1.0 - pe);
    assert_eq!(ag["statistic"], "fleiss-kappa");
    assert!((ag["overall"].as_f64().unwrap() - expected).abs() < 1e-9, "{ag} vs {expected}");
    assert_eq!(ag["per_reader"].as_array().unwrap().len(), 3);

    // Majority consensus, with its inputs recorded.
    ok(r, &["consensus", "--task", "finding", "--method", "majority"]);
    let list = json(r, &["annotate", "list", "--json"]);
    let cons = list.as_array().unwrap().iter().find(|s| s["reader"] == "consensus").expect("consensus set");
    assert_eq!(cons["derived"], "majority");
    assert_eq!(cons["counts"]["pos"], 3, "{cons}");
    assert_eq!(cons["counts"]["neg"], 3, "{cons}");
    let show = json(r, &["show", "HEAD", "--json"]);
    let text = show.to_string();
    assert!(text.contains("consensus") && text.contains("annotations:reader-a"), "{text}");

    // STAPLE agrees with the majority here (reader c and a are closer to it than b).
    ok(r, &["consensus", "--task", "finding", "--method", "staple"]);
    let list = json(r, &["annotate", "list", "--json"]);
    let cons = list.as_array().unwrap().iter().find(|s| s["reader"] == "consensus").unwrap();
    assert_eq!(cons["derived"], "staple");
    assert!(cons["previous"].is_string(), "the staple consensus replaces the majority one: {cons}");

    // Re-annotating: reader a changes its mind about patient 2; the diff names it.
    let mut a2 = A;
    a2[2] = "neg";
    let a2f = labels_csv(r, "a2.csv", &a2);
    import_labels(r, &a2f, "reader-a");
    let d = json(r, &["diff", "HEAD~1", "HEAD", "--json"]);
    let sets = d["annotations"]["annotations"].as_array().unwrap();
    assert_eq!(sets.len(), 1, "{d}");
    let ch = &sets[0]["labels"][0];
    assert_eq!(ch["target"]["id"], series(2));
    assert_eq!((ch["old"].as_str(), ch["new"].as_str(), ch["reader"].as_str()), (Some("pos"), Some("neg"), Some("reader-a")));
    let human = ok(r, &["diff", "HEAD~1", "HEAD"]);
    assert!(human.contains("pos -> neg (reader reader-a)"), "{human}");
    // The old version stays reachable: from its commit, and as `previous`.
    let old = json(r, &["annotate", "list", &after_a, "--json"]);
    assert_eq!(old[0]["counts"]["pos"], 3);
    let new = json(r, &["annotate", "list", "--json"]);
    let a_now = new.as_array().unwrap().iter().find(|s| s["reader"] == "reader-a").unwrap();
    assert_eq!(a_now["previous"], old[0]["id"]);
    assert_eq!(a_now["counts"]["pos"], 2);
    // gc keeps every version, fsck is clean.
    ok(r, &["gc"]);
    ok(r, &["fsck"]);
    assert_eq!(json(r, &["annotate", "list", &after_a, "--json"])[0]["id"], old[0]["id"]);
    // A normal commit keeps the annotations.
    write(r, "notes.txt", b"curation notes\n");
    ok(r, &["commit", "-m", "notes"]);
    assert_eq!(json(r, &["annotate", "list", "--json"]).as_array().unwrap().len(), 4);
}

#[test]
fn bad_label_files_name_the_line_and_commit_nothing() {
    let t = dataset(2);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    let before = ok(r, &["op", "log"]);
    let cases: [(&str, String, &str); 5] = [
        ("unknown.csv", format!("series_uid,label\n{},pos\n2.25.999,neg\n", series(0)), "line 3"),
        ("short.csv", format!("{},pos\n{}\n", series(0), series(1)), "line 2"),
        ("empty-label.csv", format!("uid,label\n{},\n", series(0)), "line 2"),
        ("dup.csv", format!("uid,label\n{0},pos\n{0},neg\n", series(0)), "already labelled on line 2"),
        ("nothing.csv", "uid,label\n".to_string(), "no labels"),
    ];
    for (name, body, needle) in cases {
        let f = r.join("..").join(name);
        fs::write(&f, body).unwrap();
        let o = fails(r, &["annotate", "import", "main", f.to_str().unwrap(), "--reader", "x", "--kind", "label", "--source", "weak"]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
        assert_eq!(o.status.code(), Some(2));
    }
    assert!(String::from_utf8_lossy(&fails(r, &["annotate", "import", "main", "/nonexistent.csv", "--reader", "x", "--kind", "label", "--source", "weak"]).stderr).contains("/nonexistent.csv"));
    assert_eq!(ok(r, &["op", "log"]), before, "nothing was committed");
    // Paths work as references too, and the label then names the instance.
    let f = r.join("..").join("paths.csv");
    fs::write(&f, format!("{},pos,0.9\n{},neg\n", path_of(0, 1), path_of(1, 0))).unwrap();
    ok(r, &["annotate", "import", "main", f.to_str().unwrap(), "--reader", "x", "--kind", "label", "--source", "pathology"]);
    let l = json(r, &["annotate", "list", "--json"]);
    assert_eq!(l[0]["source"], "pathology");
    assert_eq!(l[0]["labels"], 2);
}

#[test]
fn boxes_added_and_moved() {
    let t = dataset(1);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    let coco = |x: f64| {
        serde_json::json!({
            "images": [{"id": 1, "file_name": path_of(0, 0)}, {"id": 2, "sop_instance_uid": test_uid(NS, "sop 0 0 0 1")}],
            "categories": [{"id": 7, "name": "nodule"}],
            "annotations": [
                {"image_id": 1, "category_id": 7, "bbox": [x, 2.0, 4.0, 4.0]},
                {"image_id": 2, "category_id": 7, "bbox": [1.0, 1.0, 3.0, 3.0]}
            ]
        })
        .to_string()
    };
    let f = r.join("..").join("boxes.json");
    fs::write(&f, coco(2.0)).unwrap();
    let args = ["annotate", "import", "main", f.to_str().unwrap(), "--reader", "r1", "--kind", "bbox", "--source", "retrospective"];
    ok(r, &args);
    fs::write(&f, coco(6.0)).unwrap();
    ok(r, &args);
    let d = json(r, &["diff", "HEAD~1", "HEAD", "--json"]);
    let boxes = d["annotations"]["annotations"][0]["boxes"].as_array().unwrap().clone();
    assert_eq!(boxes.len(), 1, "{boxes:?}");
    assert_eq!(boxes[0]["change"], "moved");
    assert_eq!(boxes[0]["old"][0], 2.0);
    assert_eq!(boxes[0]["new"][0], 6.0);
    // A box outside the image (x 30..34 of 32 columns), an unknown category, an unknown file.
    for (body, needle) in [
        (coco(f64::from(SIZE) - 2.0), "annotations[0]"),
        (coco(2.0).replace("\"category_id\":7", "\"category_id\":8"), "category_id 8"),
        (coco(2.0).replace("P0/S0/IM0.dcm", "P9/none.dcm"), "images[0]"),
    ] {
        fs::write(&f, body).unwrap();
        let e = String::from_utf8_lossy(&fails(r, &args).stderr).into_owned();
        assert!(e.contains("boxes.json") && e.contains(needle), "{e}");
    }
}

/// The NIfTI affine (RAS) of the synthetic series, from the synthesizer's geometry: origin
/// (-11.2, -11.2, z) LPS, 0.7 mm pixels, slices 2.5 mm apart, lowest slice (instance 3) first.
fn expected_affine() -> [[f64; 4]; 4] {
    let half = f64::from(SIZE) * 0.7 / 2.0;
    [[-0.7, 0.0, 0.0, half], [0.0, -0.7, 0.0, half], [0.0, 0.0, 2.5, -2.5 * (SLICES as f64 - 1.0)], [0.0, 0.0, 0.0, 1.0]]
}

/// A mask with a box of `value` over x0..x1, 4..10 on slices 1 and 2.
fn mask(x0: usize, x1: usize, value: u8) -> Vec<u8> {
    let n = usize::from(SIZE);
    let mut m = vec![0u8; n * n * SLICES];
    for k in 1..3 {
        for y in 4..10 {
            for x in x0..x1 {
                m[k * n * n + y * n + x] = value;
            }
        }
    }
    m
}

fn nifti_file(dir: &Path, name: &str, data: Vec<u8>) -> std::path::PathBuf {
    let n = usize::from(SIZE);
    let nii = Nifti { dims: [n, n, SLICES], pixdim: [0.7, 0.7, 2.5], affine: expected_affine(), data: NiftiData::U8(data) };
    let p = dir.join(name);
    fs::write(&p, write_nifti(&nii, true).unwrap()).unwrap();
    p
}

fn import_mask(r: &Path, file: &Path, reader: &str, p: usize) {
    ok(
        r,
        &["annotate", "import", "main", file.to_str().unwrap(), "--reader", reader, "--kind", "segmentation", "--source", "retrospective", "--series", &series(p), "--labels", "1=lesion"],
    );
}

/// [`dataset`] with `n` patients, each with the same lesion mask from reader `a`.
fn masked_dataset(n: usize) -> tempfile::TempDir {
    let t = dataset(n);
    let r = t.path().join("ds");
    let m = nifti_file(t.path(), "m.nii.gz", mask(4, 10, 1));
    for p in 0..n {
        import_mask(&r, &m, "a", p);
    }
    t
}

#[test]
fn segmentations_dice_between_readers_and_versions() {
    let t = dataset(2);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    let d = r.join("..");
    import_mask(r, &nifti_file(&d, "a.nii.gz", mask(4, 10, 1)), "a", 0);
    import_mask(r, &nifti_file(&d, "b.nii.gz", mask(5, 11, 1)), "b", 0);
    // 72 voxels each, 60 shared: Dice = 120 / 144.
    let ag = json(r, &["agreement", "--task", "segmentation", "--json"]);
    assert_eq!(ag["statistic"], "dice");
    assert!((ag["overall"].as_f64().unwrap() - 120.0 / 144.0).abs() < 1e-9, "{ag}");
    assert!((ag["per_label"]["lesion"].as_f64().unwrap() - 120.0 / 144.0).abs() < 1e-9, "{ag}");
    // A new version by reader a: Dice between versions in the diff.
    import_mask(r, &nifti_file(&d, "a2.nii.gz", mask(4, 7, 1)), "a", 0);
    let diff = json(r, &["diff", "HEAD~1", "HEAD", "--json"]);
    let seg = &diff["annotations"]["annotations"][0]["segmentations"][0];
    // old 72 voxels, new 36, all shared: 72 / 108.
    assert!((seg["dice"]["lesion"].as_f64().unwrap() - 72.0 / 108.0).abs() < 1e-9, "{diff}");
    // Consensus of the two (majority of 2 = both).
    ok(r, &["consensus", "--task", "segmentation", "--method", "majority"]);
    let cons = json(r, &["annotate", "list", "--json"]);
    assert!(cons.as_array().unwrap().iter().any(|s| s["reader"] == "consensus" && s["segmentations"] == 1));
    // A mask that does not fit the series: the error names the file and both shapes.
    let n = usize::from(SIZE);
    let bad = Nifti { dims: [n, n, 3], pixdim: [0.7, 0.7, 2.5], affine: expected_affine(), data: NiftiData::U8(vec![0; n * n * 3]) };
    let p = d.join("bad.nii.gz");
    fs::write(&p, write_nifti(&bad, true).unwrap()).unwrap();
    let o = fails(r, &["annotate", "import", "main", p.to_str().unwrap(), "--reader", "a", "--kind", "segmentation", "--source", "weak", "--series", &series(1)]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("bad.nii.gz") && e.contains("does not fit"), "{e}");
    // No --series for a NIfTI mask.
    let o = fails(r, &["annotate", "import", "main", p.to_str().unwrap(), "--reader", "a", "--kind", "segmentation", "--source", "weak"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--series"));
}

fn assignments(r: &Path, rev: &str) -> BTreeMap<String, String> {
    let s = json(r, &["split", "show", rev, "--name", "main", "--json"]);
    s["assignments"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["part"].as_str().unwrap().to_string())).collect()
}

#[test]
fn split_is_patient_level_stable_when_growing_and_validated() {
    let t = dataset(20);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    for (ratios, needle) in [("70,15,10", "sum to 95"), ("100", "2 or more"), ("70,0,30", "2 or more")] {
        let e = String::from_utf8_lossy(&fails(r, &["split", "create", "--name", "main", "--ratios", ratios]).stderr).into_owned();
        assert!(e.contains(needle), "{ratios}: {e}");
    }
    ok(r, &["split", "create", "--name", "main", "--ratios", "70,15,15", "--seed", "3"]);
    let first = assignments(r, "HEAD");
    assert_eq!(first.len(), 20);
    let count = |m: &BTreeMap<String, String>, p: &str| m.values().filter(|v| *v == p).count();
    assert_eq!((count(&first, "train"), count(&first, "validation"), count(&first, "test")), (14, 3, 3));
    let show = json(r, &["split", "show", "--name", "main", "--json"]);
    assert_eq!(show["parts"]["train"]["patients"], 14);
    assert_eq!(show["parts"]["train"]["instances"], 14 * SLICES);
    let check = cohort(r).args(["split", "check", "--name", "main"]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    // The dataset grows: old patients keep their part, new ones are placed and balanced.
    for p in 20..30 {
        add_patient(r, p);
    }
    ok(r, &["commit", "-m", "ten more patients"]);
    let unplaced = json(r, &["split", "check", "--name", "main", "--json"]);
    assert_eq!(unplaced["unassigned"], 10 * SLICES);
    ok(r, &["split", "create", "--name", "main", "--ratios", "70,15,15", "--seed", "3"]);
    let second = assignments(r, "HEAD");
    assert_eq!(second.len(), 30);
    for (g, p) in &first {
        assert_eq!(&second[g], p, "patient {g} moved");
    }
    let (tr, va, te) = (count(&second, "train"), count(&second, "validation"), count(&second, "test"));
    assert_eq!(tr + va + te, 30);
    assert!((tr as i64 - 21).abs() <= 1 && (va as i64 - 4).abs() <= 1 && (te as i64 - 4).abs() <= 1, "{tr} {va} {te}");
    let diff = json(r, &["diff", "HEAD~1", "HEAD", "--json"]);
    assert_eq!(diff["annotations"]["splits"][0]["added_groups"], 10);
    assert_eq!(diff["annotations"]["splits"][0]["moved"].as_array().unwrap().len(), 0);
    // Changing the settings of an existing split is refused.
    let e = String::from_utf8_lossy(&fails(r, &["split", "create", "--name", "main", "--ratios", "80,10,10", "--seed", "3"]).stderr).into_owned();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn leakage_of_one_patient_under_two_ids_with_the_same_pixels() {
    let t = dataset(8);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    // Patient 0 again, under another Patient ID and other UIDs: same pixel data.
    for i in 0..SLICES {
        let mut s = spec(0, i);
        s.patient_id = "FAKE-DUPLICATE".into();
        s.study_uid = test_uid(NS, "dup study");
        s.series_uid = test_uid(NS, "dup series");
        s.sop_uid = test_uid(NS, &format!("dup sop {i}"));
        write(r, &format!("DUP/IM{i}.dcm"), &synth_instance(&s));
    }
    ok(r, &["commit", "-m", "a duplicate under another ID"]);
    let (mut leaked, mut clean) = (false, false);
    for seed in 0..40 {
        let name = format!("s{seed}");
        ok(r, &["split", "create", "--name", &name, "--ratios", "50,50", "--seed", &seed.to_string()]);
        let show = json(r, &["split", "show", "--name", &name, "--json"]);
        let a = &show["assignments"];
        let same = a["FAKE0000"]["part"] == a["FAKE-DUPLICATE"]["part"];
        let o = cohort(r).args(["split", "check", "--name", &name, "--json"]).output().unwrap();
        let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
        if same {
            assert!(o.status.success(), "{rep}");
            clean = true;
        } else {
            assert_eq!(o.status.code(), Some(1), "{rep}");
            let leaks = rep["leaks"].as_array().unwrap();
            assert_eq!(leaks.len(), SLICES, "{rep}");
            assert!(leaks.iter().all(|l| l["kind"] == "pixel-data"));
            leaked = true;
        }
        if leaked && clean {
            break;
        }
    }
    assert!(leaked && clean, "40 seeds should give both outcomes");
}

fn require_nibabel() {
    let found = Command::new("python3").args(["-c", "import nibabel, pydicom, numpy"]).output().is_ok_and(|o| o.status.success());
    assert!(found, "python3 with nibabel, pydicom and numpy is required for this cross-check: pip install nibabel pydicom numpy (.ci/run does)");
}

/// Read back exported NIfTI volumes with nibabel and compare them with the DICOM slices read
/// by pydicom: shape, affine (from the DICOM tags, computed in Python) and values.
const NIBABEL_CHECK: &str = r#"
import json, sys, os, glob
import nibabel as nib, numpy as np, pydicom
out, src = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(out, "cohort-manifest.json")))
for case in manifest["cases"]:
    sub = "Ts" if case["part"] == "test" else "Tr"
    img = nib.load(os.path.join(out, "images" + sub, case["case"] + "_0000.nii.gz"))
    files = [pydicom.dcmread(f) for f in glob.glob(os.path.join(src, "**", "*.dcm"), recursive=True)]
    files = [d for d in files if d.SeriesInstanceUID == case["series_uid"]]
    files.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    data = np.asarray(img.dataobj)
    assert data.shape == (32, 32, 4), data.shape
    for k, d in enumerate(files):
        px = d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        assert np.array_equal(data[:, :, k].T, px), ("values differ", case["case"], k)
    o = [float(x) for x in files[0].ImagePositionPatient]
    dz = float(files[1].ImagePositionPatient[2]) - o[2]
    sp = [float(x) for x in files[0].PixelSpacing]
    lps = np.array([[sp[1], 0, 0, o[0]], [0, sp[0], 0, o[1]], [0, 0, dz, o[2]], [0, 0, 0, 1]])
    ras = np.diag([-1, -1, 1, 1]) @ lps
    assert np.allclose(img.affine, ras, atol=1e-4), (img.affine, ras)
    assert np.allclose(img.get_qform(), img.get_sform(), atol=1e-4)
    if case["has_label"]:
        lab = nib.load(os.path.join(out, "labels" + sub, case["case"] + ".nii.gz"))
        assert np.allclose(lab.affine, ras, atol=1e-4)
        ld = np.asarray(lab.dataobj)
        assert ld.shape == (32, 32, 4)
        assert set(np.unique(ld)) <= {0, 1}, np.unique(ld)
        assert int((ld == 1).sum()) == 72, int((ld == 1).sum())
        assert ld[4, 4, 1] == 1 and ld[4, 4, 0] == 0
print("ok", len(manifest["cases"]))
"#;

#[test]
fn export_nnunet_monai_csv_files_with_manifest() {
    let t = masked_dataset(6);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    let d = r.join("..");
    let f = labels_csv(r, "l.csv", &A);
    import_labels(r, &f, "a");
    ok(r, &["split", "create", "--name", "main", "--ratios", "60,20,20"]);
    let commit = head(r);
    let src = r.to_str().unwrap();

    let out1 = d.join("nn1");
    ok(r, &["export", "HEAD", out1.to_str().unwrap(), "--split", "main", "--format", "nnunet", "--task", "segmentation"]);
    let manifest: Value = serde_json::from_slice(&fs::read(out1.join("cohort-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["commit"], commit.as_str());
    assert_eq!(manifest["split"], "main");
    let ds: Value = serde_json::from_slice(&fs::read(out1.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(ds["channel_names"]["0"], "CT");
    assert_eq!(ds["labels"]["background"], 0);
    assert_eq!(ds["labels"]["lesion"], 1);
    assert_eq!(ds["file_ending"], ".nii.gz");
    let tr = fs::read_dir(out1.join("imagesTr")).unwrap().count();
    let ts = fs::read_dir(out1.join("imagesTs")).unwrap().count();
    assert_eq!(ds["numTraining"], tr);
    assert_eq!(tr + ts, 6);
    assert_eq!(fs::read_dir(out1.join("labelsTr")).unwrap().count(), tr);
    let folds: Value = serde_json::from_slice(&fs::read(out1.join("splits_final.json")).unwrap()).unwrap();
    assert_eq!(folds[0]["train"].as_array().unwrap().len() + folds[0]["val"].as_array().unwrap().len(), tr);
    // Deterministic: a second export has the same bytes.
    let out2 = d.join("nn2");
    ok(r, &["export", "HEAD", out2.to_str().unwrap(), "--split", "main", "--format", "nnunet"]);
    assert_eq!(snapshot(&out1), snapshot(&out2));
    require_nibabel();
    let o = Command::new("python3").args(["-c", NIBABEL_CHECK, out1.to_str().unwrap(), src]).output().unwrap();
    assert!(o.status.success(), "nibabel check failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));

    // MONAI datalist.
    let mo = d.join("monai");
    ok(r, &["export", "HEAD", mo.to_str().unwrap(), "--split", "main", "--format", "monai", "--task", "segmentation"]);
    let dl: Value = serde_json::from_slice(&fs::read(mo.join("datalist.json")).unwrap()).unwrap();
    let n: usize = ["training", "validation", "test"].iter().map(|k| dl[k].as_array().unwrap().len()).sum();
    assert_eq!(n, 6);
    let e = &dl["training"][0];
    assert!(mo.join(e["image"].as_str().unwrap()).is_file() && mo.join(e["label"].as_str().unwrap()).is_file(), "{dl}");

    // CSV: one row per instance, with the label column.
    let cs = d.join("csv");
    ok(r, &["export", "HEAD", cs.to_str().unwrap(), "--split", "main", "--part", "train", "--format", "csv", "--task", "finding"]);
    let table = fs::read_to_string(cs.join("dataset.csv")).unwrap();
    let mut lines = table.lines();
    assert_eq!(lines.next().unwrap(), "path,patient_id,study_uid,series_uid,sop_uid,split,finding");
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty() && rows.iter().all(|l| l.contains(",train,")), "{table}");
    for row in &rows {
        let path = row.split(',').next().unwrap();
        assert_eq!(fs::read(cs.join(path)).unwrap(), fs::read(r.join(path)).unwrap(), "{path} exported byte for byte");
    }
    let p0 = rows.iter().find(|l| l.contains("FAKE0000"));
    if let Some(l) = p0 {
        assert!(l.ends_with(",pos"), "{l}");
    }

    // files: every part in its own folder.
    let fo = d.join("files");
    ok(r, &["export", "HEAD", fo.to_str().unwrap(), "--split", "main"]);
    let total: usize = ["train", "validation", "test"].iter().map(|p| snapshot(&fo.join(p)).len()).sum();
    assert_eq!(total, 6 * SLICES);
    // An unknown part is an error naming the parts.
    let e = String::from_utf8_lossy(&fails(r, &["export", "HEAD", d.join("x").to_str().unwrap(), "--split", "main", "--part", "dev"]).stderr).into_owned();
    assert!(e.contains("train, validation, test"), "{e}");
    // A training export that fails half-way (here: the store's export cache cannot be
    // written) leaves no folder that looks like a finished export, and can be run again.
    let cache = r.join(".cohort/cache");
    fs::remove_dir_all(&cache).unwrap();
    fs::write(&cache, b"not a folder").unwrap();
    let hl = d.join("hardlinked");
    let e = String::from_utf8_lossy(&fails(r, &["export", "HEAD", hl.to_str().unwrap(), "--split", "main", "--format", "csv", "--task", "finding", "--link", "hardlink"]).stderr).into_owned();
    assert!(e.contains(".cohort/cache"), "{e}");
    assert!(!hl.exists());
    fs::remove_file(&cache).unwrap();
    ok(r, &["export", "HEAD", hl.to_str().unwrap(), "--split", "main", "--format", "csv", "--task", "finding", "--link", "hardlink"]);
    assert!(hl.join("cohort-manifest.json").is_file());

    // verify-export: every export is as written, checked against its manifest from a folder
    // with no store (as on a GPU box), and against the revision it came from.
    for o in [&out1, &mo, &cs, &fo, &hl] {
        let v = json(&d, &["verify-export", o.to_str().unwrap(), "--json"]);
        assert_eq!((v["clean"].as_bool(), v["commit"].as_str(), v["against"].as_str()), (Some(true), Some(commit.as_str()), Some("manifest")), "{v}");
        assert_eq!(v["same"], v["files"]);
    }
    assert!(ok(r, &["verify-export", out1.to_str().unwrap(), "HEAD"]).contains(&format!("as exported from commit {}", &commit[..12])));
    let e = fails(r, &["verify-export", out1.to_str().unwrap(), "HEAD~1"]);
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains(&format!("was exported from commit {}, not from HEAD~1", &commit[..12])));
    // Tampering is found: a volume and a DICOM file changed at the same size, a file gone,
    // one added.
    let nii = fs::read_dir(out1.join("imagesTr")).unwrap().next().unwrap().unwrap().path();
    let flip_last = |p: &Path| {
        let mut b = fs::read(p).unwrap();
        let n = b.len() - 1;
        b[n] ^= 1;
        fs::write(p, b).unwrap();
    };
    flip_last(&nii);
    let o = fails(&d, &["verify-export", out1.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let rel = nii.strip_prefix(&out1).unwrap().to_str().unwrap().to_string();
    assert!(text.contains(&format!("M {rel}: content differs")) && text.contains("NOT AS EXPORTED"), "{text}");
    let dcm = rows[0].split(',').next().unwrap();
    flip_last(&cs.join(dcm));
    fs::remove_file(cs.join("dataset.csv")).unwrap();
    fs::write(cs.join("notes.txt"), b"mine").unwrap();
    let v = cohort(&d).args(["verify-export", cs.to_str().unwrap(), "--json"]).output().unwrap();
    assert_eq!(v.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["changed"][0]["path"], dcm, "{v}");
    assert_eq!((v["missing"].clone(), v["extra"].clone(), v["clean"].as_bool()), (serde_json::json!(["dataset.csv"]), serde_json::json!(["notes.txt"]), Some(false)), "{v}");
    // A manifest naming a file outside its folder is refused, not followed.
    let mpath = cs.join("cohort-manifest.json");
    let mut m: Value = serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
    m["files"][0]["path"] = Value::from("../ds/secret.csv");
    fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let e = fails(&d, &["verify-export", cs.to_str().unwrap()]);
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("not a cohort export manifest: file path \"../ds/secret.csv\" is not a path inside the export folder"));
}

/// The DICOM files of the three patients `compressed_series_export_the_same_volumes_as_uncompressed_ones` uses.
fn dicom_files(r: &Path) -> Vec<std::path::PathBuf> {
    (0..3).flat_map(|p| (0..SLICES).map(move |i| r.join(path_of(p, i)))).collect()
}

/// Compress every DICOM file of `r` in place with a lossless codec: dcmtk's JPEG lossless
/// (process 14, first-order prediction) or RLE, or JPEG 2000 lossless through pydicom with
/// pylibjpeg-openjpeg. Returns the transfer syntax UID the files now have.
fn compress_in_place(r: &Path, codec: &str) -> &'static str {
    let files = dicom_files(r);
    let run = |c: &mut Command| {
        let o = c.output().unwrap_or_else(|e| panic!("{codec}: cannot run the encoder ({e}); .ci/run installs dcmtk, pydicom, pylibjpeg and pylibjpeg-openjpeg"));
        assert!(o.status.success(), "{codec}: {}", String::from_utf8_lossy(&o.stderr));
    };
    if codec == "jpeg2000-lossless" {
        let j2k = "import sys, pydicom
from pydicom.uid import JPEG2000Lossless
for f in sys.argv[1:]:
    d = pydicom.dcmread(f)
    d.compress(JPEG2000Lossless, generate_instance_uid=False)
    d.save_as(f)";
        run(Command::new("python3").args(["-c", j2k]).args(&files));
    } else {
        for f in &files {
            let tmp = f.with_extension("tmp");
            run(Command::new(if codec == "rle" { "dcmcrle" } else { "dcmcjpeg" }).arg(f).arg(&tmp));
            fs::rename(&tmp, f).unwrap();
        }
    }
    match codec {
        "jpeg-lossless" => "1.2.840.10008.1.2.4.70",
        "rle" => "1.2.840.10008.1.2.5",
        _ => "1.2.840.10008.1.2.4.90",
    }
}

#[test]
fn compressed_series_export_the_same_volumes_as_uncompressed_ones() {
    let t = masked_dataset(3);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    let d = r.join("..");
    ok(r, &["split", "create", "--name", "main", "--ratios", "70,30", "--parts", "train,test"]);
    // Signed samples with negative values, as CT stores Hounsfield units: the case where a
    // decoder that hands back unsigned bit patterns would go wrong.
    require_nibabel();
    let signed = "import sys, numpy as np, pydicom
for f in sys.argv[1:]:
    d = pydicom.dcmread(f)
    a = d.pixel_array.astype(np.int32) - 1024
    assert a.min() < 0
    d.PixelRepresentation = 1; d.BitsStored = 16; d.HighBit = 15
    d.PixelData = a.astype('<i2').tobytes()
    d.save_as(f)";
    let o = Command::new("python3").args(["-c", signed]).args(dicom_files(r)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(r, &["commit", "-m", "signed"]);
    let originals = snapshot(r);
    let volumes = |out: &Path| {
        let mut all = snapshot(out);
        all.remove("cohort-manifest.json");
        all
    };
    let plain = d.join("plain");
    ok(r, &["export", "HEAD", plain.to_str().unwrap(), "--split", "main", "--format", "nnunet"]);
    let expected = volumes(&plain);
    assert_eq!(expected.keys().filter(|k| k.ends_with(".nii.gz")).count(), 6, "{:?}", expected.keys());
    for codec in ["jpeg-lossless", "rle", "jpeg2000-lossless"] {
        let ts = compress_in_place(r, codec);
        let sop = test_uid(NS, "sop 0 0 0 0");
        let listed = json(r, &["ls", "--json"]).to_string();
        assert!(listed.contains(&sop), "{listed}");
        let dump = Command::new("dcmdump").args(["-Un", "+P", "0002,0010"]).arg(r.join(path_of(0, 0))).output().unwrap();
        assert!(String::from_utf8_lossy(&dump.stdout).contains(ts), "{codec}: {}", String::from_utf8_lossy(&dump.stdout));
        ok(r, &["commit", "-m", &format!("recompressed: {codec}")]);
        let out = d.join(codec);
        ok(r, &["export", "HEAD", out.to_str().unwrap(), "--split", "main", "--format", "nnunet"]);
        assert!(volumes(&out) == expected, "{codec}: the volumes differ from the uncompressed series' export");
        // Back to the uncompressed files for the next codec.
        for (path, bytes) in &originals {
            if !path.starts_with(".cohort") {
                write(r, path, bytes);
            }
        }
    }
}

#[test]
fn annotations_and_splits_follow_deidentification() {
    let t = dataset(4);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    let f = labels_csv(r, "labels_FAKE^PATIENT0000.csv", &["pos", "neg", "pos", "neg"]);
    import_labels(r, &f, "a");
    // A reader's free-text value that names the patient.
    let g = t.path().join("notes.csv");
    fs::write(&g, format!("uid,label,value\n{},pos,\"compare FAKE^PATIENT0000 2019 study\"\n", series(0))).unwrap();
    ok(r, &["annotate", "import", "main", g.to_str().unwrap(), "--reader", "b", "--kind", "label", "--source", "weak", "--task", "notes"]);
    let m = nifti_file(&r.join(".."), "m.nii.gz", mask(4, 10, 1));
    import_mask(r, &m, "a", 1);
    ok(r, &["split", "create", "--name", "main", "--ratios", "50,50"]);
    let before = assignments(r, "HEAD");
    let key = r.join("..").join("key");
    fs::write(&key, b"a test key that is long enough 0123456789").unwrap();
    ok(r, &["deid", "HEAD", "--key-file", key.to_str().unwrap()]);
    let sets = json(r, &["annotate", "list", "deid", "--json"]);
    assert_eq!(sets.as_array().unwrap().len(), 3, "{sets}");
    let labels = sets.as_array().unwrap().iter().find(|s| s["kind"] == "label").unwrap();
    assert_eq!(labels["counts"]["pos"], 2);
    // The labels now name the new series UIDs, which are in the de-identified commit.
    let ls = json(r, &["ls", "deid", "--json"]);
    let new_series: std::collections::BTreeSet<String> = ls.as_array().unwrap().iter().filter_map(|e| e["series_uid"].as_str().map(str::to_string)).collect();
    let shown = json(r, &["split", "show", "deid", "--name", "main", "--json"]);
    let after: BTreeMap<String, String> = shown["assignments"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["part"].as_str().unwrap().to_string())).collect();
    assert_eq!(after.len(), 4);
    assert!(after.keys().all(|k| k.starts_with("PSEUDO-")), "{after:?}");
    let mut a: Vec<&String> = before.values().collect();
    let mut b: Vec<&String> = after.values().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(shown["parts"]["train"]["labels"]["finding"].as_object().map(|m| m.values().map(|v| v.as_u64().unwrap()).sum::<u64>()).unwrap_or(0) + shown["parts"]["test"]["labels"]["finding"].as_object().map(|m| m.values().map(|v| v.as_u64().unwrap()).sum::<u64>()).unwrap_or(0), 16);
    for s in 0..4 {
        assert!(!new_series.contains(&series(s)));
    }
    // Nothing identifying in the de-identified branch's objects: phi-scan stays clean, and no
    // stored byte of the branch names a patient, an old UID or the label file's name.
    let o = cohort(r).args(["phi-scan", "deid"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let ex = r.join("..").join("deid-export");
    ok(r, &["export", "deid", ex.to_str().unwrap(), "--split", "main", "--format", "csv", "--task", "finding"]);
    let table = fs::read_to_string(ex.join("dataset.csv")).unwrap();
    for p in 0..4 {
        assert!(!table.contains(&format!("FAKE{p:04}")) && !table.contains(&series(p)), "{table}");
    }
    assert!(table.contains("PSEUDO-"));
    let manifest = fs::read_to_string(ex.join("cohort-manifest.json")).unwrap();
    assert!(!manifest.contains("FAKE"), "{manifest}");
    // The annotation sets of the de-identified commit keep no file name and no link to the
    // identified versions.
    let store = cohort::store::Store::open(&r.join(".cohort"), cohort::store::Mode::Read).unwrap();
    let repo_view = store.view().unwrap();
    let c = store.read_commit(&repo_view.branches["deid"]).unwrap();
    let cat = store.catalog_of(&c).unwrap();
    for id in cat.annotations.values() {
        let set = store.read_annotations(id).unwrap();
        for l in &set.labels {
            assert!(l.value.as_deref().is_none_or(|v| !v.contains("FAKE")), "{l:?}");
            if set.task == "notes" {
                assert_eq!(l.value.as_deref(), Some(cohort::annotate::follow::REDACTED));
            }
        }
        assert!(set.input.as_ref().is_none_or(|i| i.name.is_none()), "{:?}", set.input);
        assert!(set.previous.is_none());
    }
}

#[test]
fn dicom_seg_import_matches_the_same_mask_from_nifti() {
    use cohort::seg::{write_seg, SegSource, SegWriteSpec, SegmentInfo};
    let t = dataset(1);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    let n = usize::from(SIZE);
    let plane = |x0: usize, x1: usize| {
        let mut m = vec![0u8; n * n];
        for y in 4..10 {
            for x in x0..x1 {
                m[y * n + x] = 1;
            }
        }
        m
    };
    let sources: Vec<SegSource> = (0..SLICES)
        .map(|i| SegSource { sop_uid: test_uid(NS, &format!("sop 0 0 0 {i}")), sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(), position: [-f64::from(SIZE) * 0.35, -f64::from(SIZE) * 0.35, -2.5 * i as f64], frame: None })
        .collect();
    let segments = [SegmentInfo { number: 1, label: "lesion".into() }, SegmentInfo { number: 2, label: "vessel".into() }];
    // Lesion on instances 1 and 2 (volume slices 2 and 1, as in `mask`), vessel on instance 0.
    let frames = vec![(1u16, 1usize, plane(4, 10)), (1, 2, plane(4, 10)), (2, 0, plane(0, 2))];
    let spec = SegWriteSpec {
        patient_id: "FAKE0000".into(),
        patient_name: "FAKE^PATIENT0000".into(),
        study_uid: test_uid(NS, "study 0 0"),
        series_uid: series(0),
        seg_series_uid: test_uid(NS, "seg series"),
        seg_sop_uid: test_uid(NS, "seg sop"),
        rows: n,
        columns: n,
        pixel_spacing: [0.7, 0.7],
        orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        sources: &sources,
        segments: &segments,
        frames: &frames,
    };
    let seg = t.path().join("lesion.seg.dcm");
    fs::write(&seg, write_seg(&spec).unwrap()).unwrap();
    ok(r, &["annotate", "import", "main", seg.to_str().unwrap(), "--reader", "a", "--kind", "segmentation", "--source", "pathology"]);
    let l = json(r, &["annotate", "list", "--json"]);
    assert_eq!(l[0]["counts"]["lesion"], 1);
    assert_eq!(l[0]["counts"]["vessel"], 1);
    // The same lesion drawn in NIfTI by reader b: Dice 1 for the lesion, 0 for the vessel
    // that b did not draw.
    import_mask(r, &nifti_file(t.path(), "b.nii.gz", mask(4, 10, 1)), "b", 0);
    let ag = json(r, &["agreement", "--task", "segmentation", "--json"]);
    assert_eq!(ag["per_label"]["lesion"], 1.0, "{ag}");
    assert_eq!(ag["per_label"]["vessel"], 0.0, "{ag}");
    // A SEG whose frames point at an image the commit does not hold.
    let mut bad_sources = sources.clone();
    bad_sources[1].sop_uid = "2.25.12345".into();
    let bad = SegWriteSpec { sources: &bad_sources, ..spec };
    let p = t.path().join("bad.seg.dcm");
    fs::write(&p, write_seg(&bad).unwrap()).unwrap();
    let e = String::from_utf8_lossy(&fails(r, &["annotate", "import", "main", p.to_str().unwrap(), "--reader", "c", "--kind", "segmentation", "--source", "weak"]).stderr).into_owned();
    assert!(e.contains("bad.seg.dcm") && e.contains("2.25.12345"), "{e}");
    // Not a SEG at all.
    let e = String::from_utf8_lossy(&fails(r, &["annotate", "import", "main", rp.join(path_of(0, 0)).to_str().unwrap(), "--reader", "c", "--kind", "segmentation", "--source", "weak"]).stderr).into_owned();
    assert!(e.contains("IM0.dcm"), "{e}");
}

/// The same two-segment mask as highdicom writes it in every form (BINARY, FRACTIONAL and
/// LABELMAP; native, RLE, JPEG-LS and JPEG 2000) imports as the same mask, equal to the mask
/// written as NIfTI with nibabel (`tests/scripts/highdicom_segs.py`); a label map naming a
/// segment it does not define and a frame that does not decode are errors naming the file.
#[test]
fn highdicom_segmentations_in_every_form_import_as_the_same_mask() {
    let found = Command::new("python3").args(["-c", "import highdicom, nibabel"]).output().is_ok_and(|o| o.status.success());
    assert!(found, "python3 with highdicom and nibabel is required for this cross-check: pip install highdicom nibabel (.ci/run does)");
    let t = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/highdicom_segs.py");
    let o = Command::new("python3").arg(&script).arg(t.path()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = t.path().join("ct");
    let r = r.as_path();
    ok(r, &["init"]);
    ok(r, &["commit", "-m", "fake CT"]);
    let series = fs::read_to_string(t.path().join("series.txt")).unwrap();
    let truth = t.path().join("truth.nii.gz");
    ok(r, &["annotate", "import", "HEAD", truth.to_str().unwrap(), "--reader", "nifti", "--kind", "segmentation", "--source", "retrospective", "--task", "organs", "--series", &series, "--labels", "1=liver,2=lesion"]);
    let mut forms: Vec<String> = fs::read_dir(t.path().join("segs")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".dcm").to_string()).collect();
    forms.sort();
    assert_eq!(forms.len(), 11, "{forms:?}");
    for form in &forms {
        let f = t.path().join("segs").join(format!("{form}.dcm"));
        ok(r, &["annotate", "import", "HEAD", f.to_str().unwrap(), "--reader", form, "--kind", "segmentation", "--source", "retrospective", "--task", "organs"]);
    }
    let ag = json(r, &["agreement", "--task", "organs", "--json"]);
    assert_eq!(ag["readers"].as_array().unwrap().len(), 12, "{ag}");
    assert_eq!(ag["overall"], 1.0, "{ag}");
    assert_eq!((&ag["per_label"]["liver"], &ag["per_label"]["lesion"]), (&Value::from(1.0), &Value::from(1.0)), "{ag}");
    for p in ag["pairs"].as_array().unwrap() {
        assert_eq!(p["value"], 1.0, "{p}");
    }
    // A label map with a pixel of segment 7, which it does not define.
    let check = |name: &str, bytes: Vec<u8>, want: &str| {
        let f = t.path().join(name);
        fs::write(&f, bytes).unwrap();
        let e = String::from_utf8_lossy(&fails(r, &["annotate", "import", "HEAD", f.to_str().unwrap(), "--reader", "bad", "--kind", "segmentation", "--source", "weak", "--task", "organs"]).stderr).into_owned();
        assert!(e.contains(name) && e.contains(want), "{e}");
    };
    let mut lab = fs::read(t.path().join("segs/labelmap.dcm")).unwrap();
    let n = lab.len();
    lab[n - 1] = 7;
    check("seven.dcm", lab, "references segment 7");
    // An RLE frame whose header counts 5 segments for 8-bit samples.
    let mut rle = fs::read(t.path().join("segs/labelmap_rle.dcm")).unwrap();
    let item = rle.windows(4).rposition(|w| w == [0xFE, 0xFF, 0x00, 0xE0]).unwrap();
    rle[item + 8] = 5;
    check("rle.dcm", rle, "frame 3: 5 RLE segments");
    // A JPEG 2000 frame that declares a larger image than Rows x Columns: refused before the
    // decoder allocates it.
    let mut j2k = fs::read(t.path().join("segs/binary_j2k.dcm")).unwrap();
    let soc = j2k.windows(4).position(|w| w == [0xFF, 0x4F, 0xFF, 0x51]).unwrap();
    j2k[soc + 8..soc + 12].copy_from_slice(&60000u32.to_be_bytes());
    check("j2k.dcm", j2k, "frame 1: the JPEG 2000 codestream declares");
    // Damaged anywhere (a byte overwritten in the last half, where the frames are): an error
    // or an import, never a crash. A fixed xorshift sequence makes the run repeatable.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for form in &forms {
        let good = fs::read(t.path().join("segs").join(format!("{form}.dcm"))).unwrap();
        for k in 0..12 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bad = good.clone();
            let at = good.len() / 2 + (x as usize) % (good.len() / 2);
            bad[at] = (x >> 32) as u8;
            let f = t.path().join(format!("fuzz-{form}-{k}.dcm"));
            fs::write(&f, &bad).unwrap();
            let o = cohort(r).args(["annotate", "import", "HEAD", f.to_str().unwrap(), "--reader", "fuzz", "--kind", "segmentation", "--source", "weak", "--task", "fuzz"]).output().unwrap();
            assert!(matches!(o.status.code(), Some(0..=2)), "{form} byte {at}: {:?} {}", o.status, String::from_utf8_lossy(&o.stderr));
        }
    }
}

/// pydicom's RT Dose grid (15 frames, unsigned 32-bit, DoseGridScaling) with a SEG drawn on
/// two of its frames (ReferencedFrameNumber): imported, and exported for nnU-Net as a
/// volume in Gy with its label map, checked with nibabel against pydicom's reading of the
/// same file.
#[test]
fn rt_dose_grid_with_a_seg_on_its_frames_exports_for_training() {
    use cohort::seg::{write_seg, SegSource, SegWriteSpec, SegmentInfo};
    const DOSE_CHECK: &str = r#"
import sys, glob, os
import nibabel as nib, numpy as np, pydicom
out, dose = sys.argv[1], sys.argv[2]
d = pydicom.dcmread(dose)
gy = d.pixel_array.astype(np.float64) * float(d.DoseGridScaling)
img = nib.load(glob.glob(os.path.join(out, "imagesTr", "*.nii.gz"))[0])
data = np.asarray(img.dataobj)
assert data.shape == (10, 10, 15), data.shape
for k in range(15):
    assert np.allclose(data[:, :, k].T, gy[k], atol=1e-6), ("frame", k)
o = [float(x) for x in d.ImagePositionPatient]
ras = np.diag([-1, -1, 1, 1]) @ np.array([[10, 0, 0, o[0]], [0, 10, 0, o[1]], [0, 0, 5, o[2]], [0, 0, 0, 1]])
assert np.allclose(img.affine, ras, atol=1e-4), img.affine
lab = np.asarray(nib.load(glob.glob(os.path.join(out, "labelsTr", "*.nii.gz"))[0]).dataobj)
assert int((lab == 1).sum()) == 36, int((lab == 1).sum())
for k in (3, 4):
    assert (lab[:, :, k].T[2:5, 1:7] == 1).all(), k
print("ok")
"#;
    let t = tempfile::tempdir().unwrap();
    let rp = t.path().join("ds");
    let r = rp.as_path();
    fs::create_dir_all(r.join("dose")).unwrap();
    let dose = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom/rtdose.dcm");
    fs::copy(&dose, r.join("dose/rtdose.dcm")).unwrap();
    ok(r, &["init"]);
    ok(r, &["commit", "-m", "dose grid"]);

    let sop = "1.9.999.999.99.9.9999.9999.20030818153516";
    let sources: Vec<SegSource> = (0..15u32)
        .map(|k| SegSource { sop_uid: sop.into(), sop_class_uid: "1.2.840.10008.5.1.4.1.1.481.2".into(), position: [189.43125, 199.43125, -761.87 + 5.0 * f64::from(k)], frame: Some(k + 1) })
        .collect();
    let mut plane = vec![0u8; 100];
    for y in 2..5 {
        for x in 1..7 {
            plane[y * 10 + x] = 1;
        }
    }
    let segments = [SegmentInfo { number: 1, label: "target".into() }];
    let frames = vec![(1u16, 3usize, plane.clone()), (1, 4, plane)];
    let spec = SegWriteSpec {
        patient_id: "id11111".into(),
        patient_name: "Lastname^Firstname".into(),
        study_uid: "1.2.999.999.99.9.9999.8888".into(),
        series_uid: "1.2.777.777.77.7.7777.7777".into(),
        seg_series_uid: test_uid(NS, "dose seg series"),
        seg_sop_uid: test_uid(NS, "dose seg sop"),
        rows: 10,
        columns: 10,
        pixel_spacing: [10.0, 10.0],
        orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        sources: &sources,
        segments: &segments,
        frames: &frames,
    };
    // Without ReferencedFrameNumber a frame of a multi-frame image is not named.
    let unframed: Vec<SegSource> = sources.iter().map(|s| SegSource { frame: None, ..s.clone() }).collect();
    let p = t.path().join("unframed.seg.dcm");
    fs::write(&p, write_seg(&SegWriteSpec { sources: &unframed, ..spec.clone() }).unwrap()).unwrap();
    let e = String::from_utf8_lossy(&fails(r, &["annotate", "import", "main", p.to_str().unwrap(), "--reader", "a", "--kind", "segmentation", "--source", "prospective"]).stderr).into_owned();
    assert!(e.contains("unframed.seg.dcm") && e.contains("ReferencedFrameNumber"), "{e}");

    let seg = t.path().join("target.seg.dcm");
    fs::write(&seg, write_seg(&spec).unwrap()).unwrap();
    ok(r, &["annotate", "import", "main", seg.to_str().unwrap(), "--reader", "a", "--kind", "segmentation", "--source", "prospective"]);
    ok(r, &["split", "create", "--name", "main", "--ratios", "50,50"]);
    let out = t.path().join("nn");
    ok(r, &["export", "HEAD", out.to_str().unwrap(), "--split", "main", "--format", "nnunet"]);
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("cohort-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["cases"][0]["part"], "train", "{manifest}");
    require_nibabel();
    let o = Command::new("python3").args(["-c", DOSE_CHECK, out.to_str().unwrap(), dose.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "nibabel check failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));

    // De-identified, the grid gets a new SOP Instance UID: the segmentation follows it frame
    // by frame, and the export of the de-identified commit has the same label map.
    let key = t.path().join("key");
    fs::write(&key, b"a test key that is long enough 0123456789").unwrap();
    ok(r, &["deid", "HEAD", "--key-file", key.to_str().unwrap()]);
    let sets = json(r, &["annotate", "list", "deid", "--json"]);
    assert_eq!(sets.as_array().unwrap().len(), 1, "{sets}");
    let out2 = t.path().join("nn-deid");
    ok(r, &["export", "deid", out2.to_str().unwrap(), "--split", "main", "--format", "nnunet"]);
    let labels = |dir: &Path| fs::read(fs::read_dir(dir.join("labelsTr")).unwrap().next().unwrap().unwrap().path()).unwrap();
    assert_eq!(labels(&out2), labels(&out));
}

/// Two readers label on two branches; merging the branches gives both annotation sets, and
/// Cohen's kappa as if they had worked on one branch. The same reader on both is a conflict.
#[test]
fn readers_on_two_branches_merge_into_one_catalog() {
    let t = dataset(6);
    let rp = t.path().join("ds");
    let r = rp.as_path();
    ok(r, &["branch", "reader-b"]);
    ok(r, &["branch", "reader-b-too"]);
    import_labels(r, &labels_csv(r, "a.csv", &A), "reader-a");
    let f = labels_csv(r, "b.csv", &B);
    ok(r, &["annotate", "import", "reader-b", f.to_str().unwrap(), "--reader", "reader-b", "--kind", "label", "--source", "retrospective", "--task", "finding"]);
    let m = json(r, &["merge", "reader-b", "--json"]);
    assert_eq!((m["outcome"].as_str(), m["catalog_from_theirs"].as_u64(), m["files_from_theirs"].as_u64()), (Some("merge"), Some(1), Some(0)), "{m}");
    let ag = json(r, &["agreement", "--task", "finding", "--json"]);
    assert!((ag["overall"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9, "{ag}");
    // blame of reader-b's set leads to the commit on its branch.
    let on_branch = json(r, &["log", "reader-b", "--json"])[0]["id"].as_str().unwrap().to_string();
    let b = json(r, &["blame", "finding/reader-b", "--json"]);
    assert_eq!(b["events"][0]["commit"], on_branch.as_str(), "{b}");
    // reader-a labelled on the other branch as well, differently: a conflict naming the set.
    ok(r, &["annotate", "import", "reader-b-too", labels_csv(r, "c.csv", &C).to_str().unwrap(), "--reader", "reader-a", "--kind", "label", "--source", "retrospective", "--task", "finding"]);
    let e = fails(r, &["merge", "reader-b-too"]);
    assert_eq!(e.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&e.stderr).into_owned();
    assert!(msg.contains("annotations finding/reader-a"), "{msg}");
    // Taking the other branch's labels for reader-a settles it; the commit says so.
    let set_of = |list: serde_json::Value, reader: &str| list.as_array().unwrap().iter().find(|s| s["reader"] == reader).map(|s| s["id"].clone());
    let theirs_set = set_of(json(r, &["annotate", "list", "reader-b-too", "--json"]), "reader-a");
    let ours_set = set_of(json(r, &["annotate", "list", "--json"]), "reader-a");
    assert_ne!(theirs_set, ours_set);
    // Settled for the whole task (its readers' sets lie "in" it, as files in a folder).
    let m = json(r, &["merge", "reader-b-too", "--take", "annotations finding=theirs", "--json"]);
    assert_eq!((m["outcome"].as_str(), m["resolved"].clone()), (Some("merge"), serde_json::json!(["annotations finding/reader-a"])), "{m}");
    assert_eq!(m["resolutions"][0]["by"], "--take annotations finding=theirs", "{m}");
    assert!(ok(r, &["show"]).contains("note: annotations finding/reader-a: conflict: took reader-b-too's version (--take annotations finding=theirs)"));
    let merged = json(r, &["annotate", "list", "--json"]);
    assert_eq!(set_of(merged.clone(), "reader-a"), theirs_set, "{merged}");
    assert!(set_of(merged, "reader-b").is_some());
}

/// Read back a MONAI export of 2D images with nibabel: each case's channel files, stacked,
/// equal pydicom's decode of its image (YCbCr converted to RGB), and the affine is the image
/// plane at the origin, spaced by PixelSpacing (else 1 mm).
const IMAGES_2D_CHECK: &str = r#"
import json, sys, os, glob
import nibabel as nib, numpy as np, pydicom
from pydicom.pixels import pixel_array
out, src = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(out, "cohort-manifest.json")))
datalist = json.load(open(os.path.join(out, "datalist.json")))
entries = {}
for part in datalist.values():
    for e in part:
        imgs = e["image"] if isinstance(e["image"], list) else [e["image"]]
        entries[imgs[0]] = imgs
by_series, by_sop = {}, {}
for f in glob.glob(os.path.join(src, "*", "*.dcm")):
    d = pydicom.dcmread(f, stop_before_pixels=True)
    by_series.setdefault(d.SeriesInstanceUID, []).append(f)
    by_sop[d.SOPInstanceUID] = f
for case in manifest["cases"]:
    first = "images/" + case["case"] + ("_0000" if case["channels"] > 1 else "") + ".nii.gz"
    imgs = entries[first]
    assert len(imgs) == case["channels"], (imgs, case)
    vols = [nib.load(os.path.join(out, i)) for i in imgs]
    data = np.stack([np.asarray(v.dataobj) for v in vols], axis=-1)  # x, y, z, c
    path = by_sop[case["sop_uid"]] if "sop_uid" in case else by_series[case["series_uid"]][0]
    d = pydicom.dcmread(path)
    px = pixel_array(path).astype(np.float64)
    if px.ndim == 2:
        px = px[..., None]
    assert data.shape == (d.Columns, d.Rows, 1, case["channels"]), data.shape
    assert np.array_equal(data[:, :, 0, :].transpose(1, 0, 2), px), ("values differ", case["case"])
    sp = [float(x) for x in d.get("PixelSpacing", [1, 1])]
    want = np.diag([-sp[1], -sp[0], 1.0, 1.0])
    for v in vols:
        assert np.allclose(v.affine, want, atol=1e-6), (v.affine, want)
print("ok", len(manifest["cases"]))
"#;

/// A store in `<temp>/ds` holding the given pydicom test files (folder, file name), committed,
/// with a 50/50 split `s`.
fn pydicom_split(files: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("ds");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom");
    for (dir, file) in files {
        fs::create_dir_all(r.join(dir)).unwrap();
        fs::copy(data.join(file), r.join(dir).join(file)).unwrap();
    }
    ok(&r, &["init"]);
    ok(&r, &["commit", "-m", "pydicom test files"]);
    ok(&r, &["split", "create", "--name", "s", "--ratios", "50,50"]);
    (t, r)
}

/// A progressive JPEG file (the retired syntax 1.2.840.10008.1.2.4.55, written by dcmtk from
/// pydicom's big-endian RGB ultrasound image) is committed as DICOM, not stored whole, and
/// exports as a colour case.
#[test]
fn progressive_jpeg_is_dicom_and_exports() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("ds");
    fs::create_dir_all(r.join("US")).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom/ExplVR_BigEnd.dcm");
    let o = Command::new("dcmcjpeg").arg("+ep").arg(&src).arg(r.join("US/progressive.dcm")).output().expect("dcmcjpeg (dcmtk; .ci/run installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = r.as_path();
    ok(r, &["init"]);
    let o = cohort(r).args(["commit", "-m", "progressive"]).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!said.contains("stored whole"), "{said}");
    let ls = json(r, &["ls", "HEAD", "--json"]);
    assert_eq!(ls[0]["kind"], "dicom", "{ls}");
    ok(r, &["split", "create", "--name", "s", "--ratios", "50,50"]);
    let out = t.path().join("monai");
    ok(r, &["export", "HEAD", out.to_str().unwrap(), "--split", "s", "--format", "monai"]);
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("cohort-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["cases"].as_array().unwrap().len(), 1, "{manifest}");
    assert_eq!(manifest["cases"][0]["channels"], 3, "{manifest}");
}

/// A series whose pixel data does not decode fails a training export, naming the file, unless
/// `--skip-bad-series` leaves it out and lists it in the manifest. pydicom's test files (MIT):
/// MR_small, and an RGB JPEG whose first fragment has lost its start-of-image marker.
#[test]
fn a_series_that_does_not_decode_fails_the_export_or_is_skipped() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("ds");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom");
    fs::create_dir_all(r.join("MR")).unwrap();
    fs::copy(data.join("MR_small.dcm"), r.join("MR/MR_small.dcm")).unwrap();
    let mut bad = fs::read(data.join("SC_rgb_jpeg_dcmtk.dcm")).unwrap();
    let soi = bad.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF]).expect("a JPEG fragment");
    bad[soi..soi + 2].copy_from_slice(&[0, 0]);
    write(&r, "SC/broken.dcm", &bad);
    let r = r.as_path();
    ok(r, &["init"]);
    ok(r, &["commit", "-m", "one good series, one broken"]);
    ok(r, &["split", "create", "--name", "s", "--ratios", "50,50"]);
    let failed = t.path().join("failed");
    let o = fails(r, &["export", "HEAD", failed.to_str().unwrap(), "--split", "s", "--format", "monai"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("SC/broken.dcm") && err.contains("--skip-bad-series"), "{err}");
    assert!(!failed.exists(), "a failed export leaves no folder behind");
    let out = t.path().join("monai");
    let said = ok(r, &["export", "HEAD", out.to_str().unwrap(), "--split", "s", "--format", "monai", "--skip-bad-series"]);
    assert!(said.contains("1 case(s), 1 series skipped"), "{said}");
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("cohort-manifest.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1, "{manifest}");
    assert_eq!(cases[0]["slices"], 1, "{manifest}");
    let skipped = manifest["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{manifest}");
    let why = skipped[0][1].as_str().unwrap();
    assert!(why.starts_with("series left out: SC/broken.dcm: "), "{why}");
    let series: Value = json(r, &["ls", "HEAD", "--json"]);
    let sc = series.as_array().unwrap().iter().find(|e| e["path"] == "SC/broken.dcm").unwrap();
    assert_eq!(skipped[0][0], sc["dicom"]["series_uid"], "{sc}");
    // The one good case is there and nothing of the broken one.
    let datalist: Value = serde_json::from_slice(&fs::read(out.join("datalist.json")).unwrap()).unwrap();
    let listed: usize = datalist.as_object().unwrap().values().map(|v| v.as_array().map_or(0, |a| a.len())).sum();
    assert_eq!(listed, 1, "{datalist}");
    let images: Vec<_> = fs::read_dir(out.join("images")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(images.len(), 1, "{images:?}");
}

/// Colour and 2D images in a MONAI export, read back with nibabel and compared with pydicom's
/// decode (which converts YCbCr to RGB): an ultrasound RGB image (big endian, plane by plane),
/// a native YBR_FULL_422 card, and a grey nuclear-medicine image in JPEG 2000, none with
/// patient geometry.
#[test]
fn colour_and_2d_images_export_as_channels() {
    let (t, r) = pydicom_split(&[("US", "ExplVR_BigEnd.dcm"), ("SC", "SC_ybr_full_422_uncompressed.dcm"), ("NM", "JPEG2000.dcm")]);
    let r = r.as_path();
    let out = t.path().join("monai");
    ok(r, &["export", "HEAD", out.to_str().unwrap(), "--split", "s", "--format", "monai"]);
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("cohort-manifest.json")).unwrap()).unwrap();
    let mut channels: Vec<u64> = manifest["cases"].as_array().unwrap().iter().map(|c| c["channels"].as_u64().unwrap()).collect();
    channels.sort();
    assert_eq!(channels, [1, 3, 3], "{manifest}");
    assert!(manifest["cases"].as_array().unwrap().iter().all(|c| c["patient_geometry"] == false), "{manifest}");
    require_nibabel();
    let o = Command::new("python3").args(["-c", IMAGES_2D_CHECK, out.to_str().unwrap(), r.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "nibabel check failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok 3");

    // nnU-Net: a mask on each 2D image (on its own plane), then one channel file per colour.
    let series_of = |c: &Value| c["series_uid"].as_str().unwrap().to_string();
    for case in manifest["cases"].as_array().unwrap() {
        let (w, h) = match case["channels"].as_u64() {
            Some(1) => (256, 1024),
            _ if series_of(case).starts_with("1.2.840.113619") => (80, 60),
            _ => (100, 100),
        };
        let sp = if w == 256 { 2.26 } else { 1.0 };
        let mut labels = vec![0u8; w * h];
        labels[w * 5 + 7] = 1;
        let nii = Nifti { dims: [w, h, 1], pixdim: [sp, sp, 1.0], affine: [[-sp, 0.0, 0.0, 0.0], [0.0, -sp, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]], data: NiftiData::U8(labels) };
        let p = t.path().join(format!("{w}.nii.gz"));
        fs::write(&p, write_nifti(&nii, true).unwrap()).unwrap();
        ok(r, &["annotate", "import", "main", p.to_str().unwrap(), "--reader", "a", "--kind", "segmentation", "--source", "retrospective", "--series", &series_of(case), "--labels", "1=lesion"]);
    }
    // Grey and colour cases together: nnU-Net needs the same channels everywhere.
    let o = fails(r, &["export", "HEAD", t.path().join("nn-mixed").to_str().unwrap(), "--split", "s", "--format", "nnunet"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("nnU-Net needs the same channels in every case"), "{e}");
    assert!(!t.path().join("nn-mixed").exists());
    fs::remove_dir_all(r.join("NM")).unwrap();
    ok(r, &["commit", "-m", "colour only"]);
    let nn = t.path().join("nn");
    ok(r, &["export", "HEAD", nn.to_str().unwrap(), "--split", "s", "--format", "nnunet"]);
    let ds: Value = serde_json::from_slice(&fs::read(nn.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(ds["channel_names"], serde_json::json!({"0": "R", "1": "G", "2": "B"}));
    let mut images: Vec<String> = ["imagesTr", "imagesTs"].iter().flat_map(|d| fs::read_dir(nn.join(d)).into_iter().flatten().map(|e| e.unwrap().file_name().into_string().unwrap())).collect();
    images.sort();
    assert_eq!(images, ["case_0000_0000.nii.gz", "case_0000_0001.nii.gz", "case_0000_0002.nii.gz", "case_0001_0000.nii.gz", "case_0001_0001.nii.gz", "case_0001_0002.nii.gz"]);
}

/// Two 2D images of one series (no patient geometry) are two cases, each with its own image
/// and its own label from a label task.
#[test]
fn images_of_a_2d_series_are_cases_of_their_own() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("ds");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom");
    fs::create_dir_all(r.join("SC")).unwrap();
    for file in ["SC_ybr_full_422_uncompressed.dcm", "SC_rgb_rle.dcm"] {
        fs::copy(data.join(file), r.join("SC").join(file)).unwrap();
    }
    fs::create_dir_all(r.join("NM")).unwrap();
    fs::copy(data.join("JPEG2000.dcm"), r.join("NM/nm.dcm")).unwrap();
    let r = r.as_path();
    ok(r, &["init"]);
    ok(r, &["commit", "-m", "two card images in one series"]);
    let labels = t.path().join("labels.csv");
    fs::write(&labels, "path,label\nSC/SC_rgb_rle.dcm,sharp\nSC/SC_ybr_full_422_uncompressed.dcm,soft\nNM/nm.dcm,soft\n").unwrap();
    ok(r, &["annotate", "import", "main", labels.to_str().unwrap(), "--reader", "a", "--kind", "label", "--source", "retrospective", "--task", "quality"]);
    ok(r, &["split", "create", "--name", "s", "--ratios", "50,50"]);
    let out = t.path().join("monai");
    ok(r, &["export", "HEAD", out.to_str().unwrap(), "--split", "s", "--format", "monai", "--task", "quality"]);
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("cohort-manifest.json")).unwrap()).unwrap();
    let sc: Vec<&Value> = manifest["cases"].as_array().unwrap().iter().filter(|c| c["sop_uid"].is_string()).collect();
    assert_eq!(sc.len(), 2, "{manifest}");
    assert_eq!(sc[0]["series_uid"], sc[1]["series_uid"]);
    assert!(sc[0]["case"].as_str().unwrap().ends_with("_001") && sc[1]["case"].as_str().unwrap().ends_with("_002"), "{manifest}");
    // Each image case carries its own image's label.
    let datalist: Value = serde_json::from_slice(&fs::read(out.join("datalist.json")).unwrap()).unwrap();
    let label_of = |case: &str| {
        let first = format!("images/{case}_0000.nii.gz");
        datalist.as_object().unwrap().values().flat_map(|v| v.as_array().unwrap().iter()).find(|e| e["image"][0] == first.as_str()).map(|e| e["label"].clone())
    };
    let mut got: Vec<(String, Value)> = sc.iter().map(|c| (c["sop_uid"].as_str().unwrap().to_string(), label_of(c["case"].as_str().unwrap()).unwrap())).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let sop = |f: &str| {
        let o = Command::new("python3").args(["-c", "import pydicom,sys; print(pydicom.dcmread(sys.argv[1], stop_before_pixels=True).SOPInstanceUID)", data.join(f).to_str().unwrap()]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    require_nibabel();
    let mut want = vec![(sop("SC_rgb_rle.dcm"), Value::from("sharp")), (sop("SC_ybr_full_422_uncompressed.dcm"), Value::from("soft"))];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
    let o = Command::new("python3").args(["-c", IMAGES_2D_CHECK, out.to_str().unwrap(), r.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "nibabel check failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok 3");
}

/// Cine loops (multi-frame images without patient geometry) export as a volume of their
/// frames, marked `cine` with their frame time; instances that are no image (an RT plan) stay
/// out of the volume export with a note instead of failing it. Read back with nibabel and
/// compared with pydicom's decode, frame by frame.
#[test]
fn cine_loops_export_as_frames_and_non_images_are_left_out() {
    // pydicom's test files (MIT): a 30-frame ultrasound loop in JPEG (YBR_FULL_422, FrameTime
    // 33.333 ms), a 2-frame RGB RLE image, and an RT plan (no pixel data).
    let (t, r) = pydicom_split(&[("US", "examples_ybr_color.dcm"), ("SC", "SC_rgb_rle_2frame.dcm"), ("RT", "rtplan.dcm")]);
    let r = r.as_path();
    let out = t.path().join("monai");
    let said = ok(r, &["export", "HEAD", out.to_str().unwrap(), "--split", "s", "--format", "monai"]);
    assert!(said.contains("1 series skipped"), "{said}");
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("cohort-manifest.json")).unwrap()).unwrap();
    let mut cases: Vec<(u64, bool, Value)> = manifest["cases"].as_array().unwrap().iter().map(|c| (c["slices"].as_u64().unwrap(), c["cine"] == true, c["frame_time_ms"].clone())).collect();
    cases.sort_by_key(|c| c.0);
    assert_eq!(cases, [(2, true, Value::Null), (30, true, Value::from(33.333))], "{manifest}");
    let skipped = manifest["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{manifest}");
    let why = skipped[0][1].as_str().unwrap();
    assert!(why.starts_with("series left out: 1 instance(s) that are no image, e.g. RT/rtplan.dcm (no Rows"), "{why}");
    require_nibabel();
    let check = r#"
import json, sys, os, glob
import nibabel as nib, numpy as np, pydicom
out, src = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(out, "cohort-manifest.json")))
by_series = {}
for f in glob.glob(os.path.join(src, "*", "*.dcm")):
    d = pydicom.dcmread(f, stop_before_pixels=True)
    by_series[d.SeriesInstanceUID] = f
for case in manifest["cases"]:
    imgs = [nib.load(os.path.join(out, "images", case["case"] + "_%04d.nii.gz" % c)) for c in range(3)]
    data = np.stack([np.asarray(v.dataobj) for v in imgs], axis=-1).astype(int)  # x, y, frame, c
    d = pydicom.dcmread(by_series[case["series_uid"]])
    px = d.pixel_array.astype(int)  # frame, row, column, c (YCbCr converted to RGB)
    assert data.shape == (d.Columns, d.Rows, int(d.NumberOfFrames), 3), data.shape
    ours = data.transpose(2, 1, 0, 3)
    diff = np.abs(ours - px)
    if "RLE" in d.file_meta.TransferSyntaxUID.name:
        assert diff.max() == 0, (case["case"], diff.max())
    else:
        # Two JPEG decoders (jpeg-decoder here, libjpeg there) round and upsample the 4:2:2
        # chroma differently: 180 of 6.9 million samples differ by 3, 0.2 % by more than 1.
        assert diff.max() <= 3 and (diff > 1).mean() < 0.005, (case["case"], diff.max(), (diff > 1).mean())
    assert np.allclose(imgs[0].header.get_zooms(), (1.0, 1.0, 1.0)), imgs[0].header.get_zooms()
print("ok", len(manifest["cases"]))
"#;
    let o = Command::new("python3").args(["-c", check, out.to_str().unwrap(), r.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "nibabel check failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok 2");
}
