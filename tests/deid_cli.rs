//! End-to-end tests of issue #3, de-identification as a recorded, reproducible step (DICOM
//! PS3.15 Annex E): `cohort deid`, `cohort deid-report` and `cohort phi-scan` driven through the
//! binary on synthetic instances of FAKE patients. The results are checked with readers that
//! do not share code with the engine (dcmtk's dcmdump, pydicom), by searching every exported
//! and every stored byte for the fake identifiers, and with the store library for sharing of
//! pixel objects.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cohort::deid::{DeidConfig, DeidKey, Deidentifier};
use cohort::dicom::synth::{synth_instance, truncate, SynthSpec, SynthSyntax};
use cohort::store::{Mode, Store};
use common::*;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use serde_json::Value;

/// Namespace of this file's test UIDs.
const NS: &str = "deid_cli";

fn spec(p: usize, study: usize, series: usize, i: usize, size: u16) -> SynthSpec {
    let mut s = fake_ct(NS, p, study, series, i, size);
    let fp = &PATIENTS[p];
    s.patient_name = fp.name.into();
    s.patient_id = fp.id.into();
    s.patient_birth_date = fp.birth.into();
    s.patient_sex = fp.sex.into();
    s.institution_name = INSTITUTION.into();
    s.accession_number = accession(p, study);
    s
}

// ------------------------------------------------------------------ fake patients and data

/// Invented patients; none of these values may survive de-identification.
struct FakePatient {
    name: &'static str,
    id: &'static str,
    birth: &'static str,
    sex: &'static str,
}

const PATIENTS: [FakePatient; 2] = [
    FakePatient { name: "DOE^JOHN", id: "MRN4471902", birth: "19570314", sex: "M" },
    FakePatient { name: "ROE^JANE", id: "MRN8830215", birth: "19630822", sex: "F" },
];
const INSTITUTION: &str = "ST FAKEWELL GENERAL HOSPITAL";
/// Set by the synthesizer in every instance.
const REFERRER: &str = "FAKE^REFERRER";
/// Values of the synthesizer's private block (group 0009), removed by the basic profile.
const PRIVATE_VALUES: [&str; 3] = ["COHORT FAKE PRIVATE", "fake private value", "nested private value"];

fn accession(p: usize, study: usize) -> String {
    format!("ACC{p}{study}X7731")
}

struct Inst {
    /// Path in the identified working tree (folders named after the patient, as PACS exports do).
    path: String,
    spec: SynthSpec,
    bytes: Vec<u8>,
}

fn identified_path(s: &SynthSpec, series: usize, i: usize) -> String {
    format!("{}_{}/{}/series{series}/IM{i:04}.dcm", s.patient_name, s.patient_id, s.accession_number)
}

fn put(r: &Path, s: SynthSpec, path: String) -> Inst {
    let bytes = synth_instance(&s);
    write(r, &path, &bytes);
    Inst { path, spec: s, bytes }
}

/// 2 patients × 2 series × 3 instances, `size`×`size` 16-bit pixels.
fn write_dataset(r: &Path, size: u16) -> Vec<Inst> {
    let mut v = Vec::new();
    for p in 0..2 {
        for se in 0..2 {
            for i in 0..3 {
                let s = spec(p, 0, se, i, size);
                let path = identified_path(&s, se, i);
                v.push(put(r, s, path));
            }
        }
    }
    v
}

/// Every fake identifying string of the data set: names (and name components of 4+
/// characters), patient ids, birth dates, accession numbers, institution, referring physician,
/// study dates, private values.
fn phi_strings(insts: &[Inst]) -> Vec<String> {
    let mut set = BTreeSet::new();
    for i in insts {
        let s = &i.spec;
        set.insert(s.patient_name.clone());
        for c in s.patient_name.split('^').filter(|c| c.len() >= 4) {
            set.insert(c.to_string());
        }
        set.insert(s.patient_id.clone());
        set.insert(s.patient_birth_date.clone());
        set.insert(s.accession_number.clone());
        set.insert(s.institution_name.clone());
        set.insert(s.study_date.clone());
    }
    set.insert(REFERRER.to_string());
    set.extend(PRIVATE_VALUES.iter().map(|s| s.to_string()));
    set.into_iter().collect()
}

/// Values of every (gggg,eeee) UI element, at any depth, of an explicit VR little endian file.
fn ui_values(bytes: &[u8], group: u16, elem: u16) -> Vec<String> {
    let mut pat = Vec::new();
    pat.extend_from_slice(&group.to_le_bytes());
    pat.extend_from_slice(&elem.to_le_bytes());
    pat.extend_from_slice(b"UI");
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(k) = bytes[i..].windows(pat.len()).position(|w| w == pat.as_slice()) {
        let at = i + k + pat.len();
        let len = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
        let v = String::from_utf8_lossy(&bytes[at + 2..at + 2 + len]).trim_end_matches(['\0', ' ']).to_string();
        out.push(v);
        i = at + 2 + len;
    }
    out
}

/// Every UID the identified data set holds (study, series, SOP instance, referenced SOP
/// instances, frame of reference, file meta).
fn original_uids(insts: &[Inst]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for i in insts {
        set.insert(i.spec.study_uid.clone());
        set.insert(i.spec.series_uid.clone());
        set.insert(i.spec.sop_uid.clone());
        for (g, e) in [(0x0008, 0x1155), (0x0020, 0x0052), (0x0002, 0x0003)] {
            set.extend(ui_values(&i.bytes, g, e));
        }
    }
    assert!(set.len() > 3 * insts.len() / 2, "UIDs found in the synthetic data: {set:?}");
    set
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// (file, needle) for each needle found in a file's bytes or path.
fn leaks<'a>(files: impl IntoIterator<Item = (&'a String, &'a Vec<u8>)>, needles: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, bytes) in files {
        for n in needles {
            if contains(bytes, n) || path.contains(n.as_str()) {
                out.push(format!("{path}: {n}"));
            }
        }
    }
    out
}

// ------------------------------------------------------------------ running cohort

struct Env {
    _dir: tempfile::TempDir,
    /// Outside the working tree: keys, rules, exports.
    root: PathBuf,
    /// The working folder with the store.
    work: PathBuf,
    key: PathBuf,
}

fn key_bytes(seed: u8) -> Vec<u8> {
    (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(seed)).collect()
}

fn env() -> Env {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let work = root.join("work");
    fs::create_dir(&work).unwrap();
    ok(&work, &["init"]);
    let key = root.join("deid.key");
    fs::write(&key, key_bytes(1)).unwrap();
    Env { _dir: d, root, work, key }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `cohort deid REV --key-file KEY --json EXTRA...` in `dir`; the JSON summary.
fn deid(dir: &Path, rev: &str, key: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["deid", rev, "--key-file", s(key), "--json"];
    args.extend_from_slice(extra);
    json(dir, &args)
}

fn ls(dir: &Path, rev: &str) -> Vec<Value> {
    json(dir, &["ls", rev, "--json"]).as_array().unwrap().clone()
}

fn paths_of(ls: &[Value]) -> BTreeSet<String> {
    ls.iter().map(|e| e["path"].as_str().unwrap().to_string()).collect()
}

/// Export `rev` of the store in `dir` to a new folder under `root`; the folder and its files.
fn export(dir: &Path, root: &Path, rev: &str) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dest = root.join(format!("export-{n}-{}", rev.replace(['/', '~', '^'], "_")));
    ok(dir, &["export", rev, s(&dest)]);
    let files = snapshot(&dest);
    (dest, files)
}

fn exit_code(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let o = cohort(dir).args(args).output().expect("run cohort");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The engine's pseudonyms under `key` (what the paths and identifiers must be).
fn engine(key: &[u8]) -> Deidentifier {
    Deidentifier::new(DeidKey::from_bytes(key), DeidConfig::default()).unwrap()
}

/// Where the de-identified copy of `spec` must be: `<patient>/<study>/<series>/<sop>.dcm`.
fn pseudonymous_path(eng: &Deidentifier, spec: &SynthSpec) -> String {
    format!(
        "{}/{}/{}/{}.dcm",
        eng.pseudonym_patient(&spec.patient_id),
        eng.pseudonym_uid(&spec.study_uid),
        eng.pseudonym_uid(&spec.series_uid),
        eng.pseudonym_uid(&spec.sop_uid)
    )
}

fn is_pseudo_patient(c: &str) -> bool {
    c.strip_prefix("PSEUDO-").is_some_and(|r| r.len() == 12 && r.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)))
}

fn is_uuid_uid(c: &str) -> bool {
    c.strip_prefix("2.25.").is_some_and(|r| !r.is_empty() && !r.starts_with('0') && r.bytes().all(|b| b.is_ascii_digit())) && c.len() <= 64
}

// ------------------------------------------------------------------ reading DICOM (dicom-object)

fn open_dcm(path: &Path) -> DefaultDicomObject {
    OpenFileOptions::new().open_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn get_str(o: &InMemDicomObject, tag: Tag) -> Option<String> {
    o.get(tag).map(|e| e.value().to_str().map(|s| s.trim_end_matches(['\0', ' ']).to_string()).unwrap_or_default())
}

fn method_codes(o: &InMemDicomObject) -> Vec<String> {
    o.get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .and_then(|e| e.items())
        .map(|items| items.iter().filter_map(|i| get_str(i, tags::CODE_VALUE)).collect())
        .unwrap_or_default()
}

fn days(da: &str) -> i64 {
    let d = chrono::NaiveDate::parse_from_str(da, "%Y%m%d").unwrap_or_else(|e| panic!("date {da:?}: {e}"));
    d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days()
}

/// Check `v` against the subset of JSON Schema that `schema/deid-report.schema.json` uses
/// (type, required, properties, items, const, enum and its two patterns); panics on anything else.
fn conforms(v: &Value, schema: &Value, at: &str) {
    let s = schema.as_object().unwrap();
    for (k, rule) in s {
        match k.as_str() {
            "$schema" | "$id" | "title" | "description" => {}
            "type" => {
                let okay = match rule.as_str().unwrap() {
                    "object" => v.is_object(),
                    "array" => v.is_array(),
                    "string" => v.is_string(),
                    "integer" => v.is_u64() || v.is_i64(),
                    other => panic!("schema type {other} not handled"),
                };
                assert!(okay, "{at}: not a {rule}: {v}");
            }
            "required" => {
                for r in rule.as_array().unwrap() {
                    assert!(v.get(r.as_str().unwrap()).is_some(), "{at}: required {r} missing");
                }
            }
            "properties" => {
                for (name, sub) in rule.as_object().unwrap() {
                    if let Some(x) = v.get(name) {
                        conforms(x, sub, &format!("{at}.{name}"));
                    }
                }
            }
            "items" => {
                for (i, x) in v.as_array().unwrap().iter().enumerate() {
                    conforms(x, rule, &format!("{at}[{i}]"));
                }
            }
            "const" => assert_eq!(v, rule, "{at}"),
            "enum" => assert!(rule.as_array().unwrap().contains(v), "{at}: {v} not in {rule}"),
            "pattern" => {
                let x = v.as_str().unwrap();
                let okay = match rule.as_str().unwrap() {
                    "^[0-9a-f]{64}$" => x.len() == 64 && x.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                    r"^\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)$" => {
                        x.len() == 11 && x.starts_with('(') && x.ends_with(')') && x.as_bytes()[5] == b',' && x[1..5].bytes().chain(x[6..10].bytes()).all(|b| b.is_ascii_hexdigit())
                    }
                    other => panic!("schema pattern {other} not handled"),
                };
                assert!(okay, "{at}: {x} does not match {rule}");
            }
            other => panic!("schema keyword {other} not handled"),
        }
    }
}

fn report_schema() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/deid-report.schema.json");
    serde_json::from_str(&fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

// ------------------------------------------------------------------ 1. basic

#[test]
fn deid_writes_pseudonymous_layout_and_no_identifier_survives() {
    let e = env();
    let w = &e.work;
    let insts = write_dataset(w, 32);
    write(w, "labels.csv", b"series,label\n1,nodule\n2,normal\n");
    write(w, "notes.txt", b"reviewed twice\n");
    ok(w, &["commit", "-m", "PACS export"]);

    let sum = deid(w, "main", &e.key, &[]);
    assert_eq!(sum["instances"], 12, "{sum}");
    assert_eq!(sum["branch"], "deid");
    assert_eq!(sum["kept_files"], 0);
    let left: BTreeSet<&str> = sum["left_out"].as_array().unwrap().iter().map(|l| l[0].as_str().unwrap()).collect();
    assert_eq!(left, BTreeSet::from(["labels.csv", "notes.txt"]), "non-DICOM files are left out without --keep");

    // Every instance, and only the instances, at <PSEUDO-…>/<2.25…>/<2.25…>/<2.25…>.dcm, with
    // the identifiers of its header in its path.
    let listing = ls(w, "deid");
    assert_eq!(listing.len(), 12, "{listing:?}");
    for entry in &listing {
        let p = entry["path"].as_str().unwrap();
        let c: Vec<&str> = p.split('/').collect();
        assert_eq!(c.len(), 4, "{p}");
        let sop = c[3].strip_suffix(".dcm").unwrap_or_else(|| panic!("{p}: not .dcm"));
        assert!(is_pseudo_patient(c[0]), "{p}");
        for u in [c[1], c[2], sop] {
            assert!(is_uuid_uid(u), "{p}: {u}");
        }
        assert_eq!(entry["kind"], "dicom", "{p}");
        let d = &entry["dicom"];
        assert_eq!((d["patient_id"].as_str(), d["patient_name"].as_str()), (Some(c[0]), Some(c[0])), "{p}");
        assert_eq!((d["study_uid"].as_str(), d["series_uid"].as_str(), d["sop_instance_uid"].as_str()), (Some(c[1]), Some(c[2]), Some(sop)), "{p}");
    }
    let eng = engine(&key_bytes(1));
    let expected: BTreeSet<String> = insts.iter().map(|i| pseudonymous_path(&eng, &i.spec)).collect();
    assert_eq!(expected.len(), 12);
    assert_eq!(paths_of(&listing), expected, "each source instance appears once, under its pseudonyms");
    let patients: BTreeSet<&str> = listing.iter().map(|e| e["dicom"]["patient_id"].as_str().unwrap()).collect();
    let series: BTreeSet<&str> = listing.iter().map(|e| e["dicom"]["series_uid"].as_str().unwrap()).collect();
    assert_eq!((patients.len(), series.len()), (2, 4));

    let phi = phi_strings(&insts);
    let uids = original_uids(&insts);
    let mut needles = phi.clone();
    needles.extend(uids.iter().cloned());
    for p in paths_of(&listing) {
        for n in &needles {
            assert!(!p.contains(n.as_str()), "output path {p} contains {n}");
        }
    }

    // --keep keeps matching non-DICOM files as they are; others stay out.
    let kept = deid(w, "main", &e.key, &["--branch", "deid-keep", "--keep", "*.csv"]);
    assert_eq!(kept["kept_files"], 1, "{kept}");
    let kept_paths = paths_of(&ls(w, "deid-keep"));
    assert_eq!(kept_paths.len(), 13);
    assert!(kept_paths.contains("labels.csv") && !kept_paths.contains("notes.txt"), "{kept_paths:?}");
    let (_, kept_files) = export(w, &e.root, "deid-keep");
    assert_eq!(kept_files["labels.csv"], fs::read(w.join("labels.csv")).unwrap());

    // The independent scan: the de-identified commit passes, the identified one does not,
    // also when it searches for the known original identifiers.
    let known = e.root.join("known.txt");
    fs::write(&known, phi.join("\n")).unwrap();
    assert_eq!(exit_code(w, &["phi-scan", "deid"]).0, Some(0));
    assert_eq!(exit_code(w, &["phi-scan", "deid", "--known", s(&known)]).0, Some(0));
    let (code, out, _) = exit_code(w, &["phi-scan", "main", "--json"]);
    assert_eq!(code, Some(1), "phi-scan of identified data must fail: {out}");
    let scan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(scan["clean"], false);
    assert_eq!(scan["findings"].as_array().unwrap().len(), 12, "every identified instance has findings");

    // A kept file keeps its source path and bytes: `--keep` is the user's call, but phi-scan
    // --known must then report identifiers in paths and non-DICOM content too.
    let nested = format!("{}_{}/review.csv", PATIENTS[1].name, PATIENTS[1].id);
    write(w, &nested, b"series,label\n1,normal\n");
    write(w, "extra/ids.csv", format!("id\n{}\n", PATIENTS[0].id.to_lowercase()).as_bytes());
    ok(w, &["commit", "-m", "more labels"]);
    deid(w, "main", &e.key, &["--branch", "deid-nested", "--keep", "*.csv"]);
    assert!(paths_of(&ls(w, "deid-nested")).contains(&nested));
    assert_eq!(exit_code(w, &["phi-scan", "deid-nested"]).0, Some(0), "without --known only headers are checked");
    let (code, out, _) = exit_code(w, &["phi-scan", "deid-nested", "--known", s(&known), "--json"]);
    assert_eq!(code, Some(1), "{out}");
    let scan: Value = serde_json::from_str(&out).unwrap();
    let mut found: Vec<(String, String)> = scan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["report"]["findings"].as_array().unwrap().iter().map(|x| (f["path"].as_str().unwrap().to_string(), x["path"].as_str().unwrap().to_string())))
        .collect();
    found.sort();
    found.dedup();
    assert_eq!(found, vec![(nested.clone(), "path".to_string()), ("extra/ids.csv".to_string(), "content".to_string())], "{out}");
    assert_eq!(scan["instances"], 12);
    for f in scan["findings"].as_array().unwrap() {
        for x in f["report"]["findings"].as_array().unwrap() {
            let detail = x["detail"].as_str().unwrap();
            assert!(detail.contains("known identifier #") && !detail.contains("MRN"), "findings name identifiers by index only: {detail}");
        }
    }

    // Every exported byte, DICOM or not, is free of the fake identifiers and original UIDs.
    for rev in ["deid", "deid-keep"] {
        let (_, files) = export(w, &e.root, rev);
        assert_eq!(files.len(), if rev == "deid" { 12 } else { 13 });
        let found = leaks(&files, &needles);
        assert!(found.is_empty(), "{rev} leaks: {found:?}");
    }
    // The same search finds every one of them in the identified export, so it can fail.
    let (_, orig) = export(w, &e.root, "main");
    let all: Vec<u8> = orig.values().flatten().copied().collect();
    for n in &needles {
        assert!(contains(&all, n), "the search string {n:?} is not in the identified data");
    }
}

// ------------------------------------------------------------------ 2. independent readers

fn require_dcmdump() {
    let found = Command::new("sh").args(["-c", "command -v dcmdump"]).output().is_ok_and(|o| o.status.success());
    assert!(found, "dcmdump (dcmtk) is required for this cross-check: install it (apt-get install -y dcmtk; .ci/run does)");
}

fn require_pydicom() {
    let found = Command::new("python3").args(["-c", "import pydicom"]).output().is_ok_and(|o| o.status.success());
    assert!(found, "python3 with pydicom is required for this cross-check: install it (pip install pydicom; .ci/run does)");
}

/// The value in brackets of a top-level element of a dcmdump listing.
fn dump_value(dump: &str, tag: &str) -> Option<String> {
    let line = dump.lines().find(|l| l.starts_with(tag))?;
    let (_, rest) = line.split_once('[')?;
    Some(rest.split_once(']')?.0.to_string())
}

const PYDICOM_CHECK: &str = r#"
import json, sys, warnings
import pydicom
args = sys.argv[1:]
for deid_path, orig_path in zip(args[::2], args[1::2]):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = pydicom.dcmread(deid_path)
        values = [str(el.value) for el in d.iterall() if el.tag != 0x7FE00010]
    o = pydicom.dcmread(orig_path)
    r = {
        "path": deid_path,
        "warnings": [str(w.message) for w in caught],
        "identity_removed": str(d.get("PatientIdentityRemoved", "")),
        "codes": [str(i.CodeValue) for i in d.get("DeidentificationMethodCodeSequence", [])],
        "patient_id": str(d.PatientID),
        "patient_name": str(d.PatientName),
        "uids": [str(d.SOPInstanceUID), str(d.StudyInstanceUID), str(d.SeriesInstanceUID)],
        "meta_sop": str(d.file_meta.MediaStorageSOPInstanceUID),
        "transfer_syntax": str(d.file_meta.TransferSyntaxUID),
        "orig_transfer_syntax": str(o.file_meta.TransferSyntaxUID),
        "pixels_equal": d.PixelData == o.PixelData,
        "pixel_len": len(d.PixelData),
        "values": values,
    }
    if not d.file_meta.TransferSyntaxUID.is_compressed:
        try:
            import numpy
            r["pixel_array_equal"] = bool((d.pixel_array == o.pixel_array).all())
        except ImportError:
            pass
    print(json.dumps(r))
"#;

#[test]
fn dcmdump_and_pydicom_read_the_deidentified_files() {
    require_dcmdump();
    require_pydicom();
    let e = env();
    let w = &e.work;
    let mut insts = write_dataset(w, 32);
    // The other encodings too: implicit VR, big endian, encapsulated, deflated; multi-frame.
    let others = [SynthSyntax::ImplicitLE, SynthSyntax::ExplicitBE, SynthSyntax::EncapsulatedJpegBaseline, SynthSyntax::DeflatedExplicitLE];
    for (k, syntax) in others.into_iter().enumerate() {
        let mut sp = spec(1, 0, 5, k, 32);
        sp.syntax = syntax;
        sp.frames = 1 + k as u32;
        let path = identified_path(&sp, 5, k);
        insts.push(put(w, sp, path));
    }
    ok(w, &["commit", "-m", "PACS export"]);
    assert_eq!(deid(w, "main", &e.key, &[])["instances"], 16);
    let (dir, _) = export(w, &e.root, "deid");
    let eng = engine(&key_bytes(1));
    let mut needles = phi_strings(&insts);
    needles.extend(original_uids(&insts));

    let mut py_args = Vec::new();
    for inst in &insts {
        let rel = pseudonymous_path(&eng, &inst.spec);
        let f = dir.join(&rel);
        assert!(f.is_file(), "{rel} exported");
        let o = Command::new("dcmdump").arg(&f).output().expect("run dcmdump");
        let (dump, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "dcmdump {rel}: {:?}\n{err}", o.status);
        assert!(!err.contains("E: ") && !err.contains("W: "), "dcmdump {rel} complains:\n{err}");
        assert_eq!(dump_value(&dump, "(0012,0062)").as_deref(), Some("YES"), "PatientIdentityRemoved:\n{dump}");
        let pseudo = eng.pseudonym_patient(&inst.spec.patient_id);
        assert_eq!(dump_value(&dump, "(0010,0020)"), Some(pseudo.clone()), "PatientID");
        assert_eq!(dump_value(&dump, "(0010,0010)"), Some(pseudo), "PatientName");
        let sop = dump_value(&dump, "(0008,0018)").expect("SOPInstanceUID");
        for tag in ["(0008,0018)", "(0020,000d)", "(0020,000e)", "(0020,0052)", "(0002,0003)"] {
            let v = dump_value(&dump, tag).unwrap_or_else(|| panic!("{tag} missing in {rel}"));
            assert!(is_uuid_uid(&v), "{tag} = {v} in {rel}");
        }
        assert_eq!(dump_value(&dump, "(0002,0003)"), Some(sop.clone()), "MediaStorageSOPInstanceUID = SOPInstanceUID");
        assert_eq!(format!("{sop}.dcm"), rel.rsplit('/').next().unwrap());
        let nested: Vec<&str> = dump.lines().filter(|l| l.trim_start().starts_with("(0008,1155)")).collect();
        assert_eq!(nested.len(), 2, "two referenced images");
        for l in nested {
            let v = l.split_once('[').unwrap().1.split_once(']').unwrap().0;
            assert!(is_uuid_uid(v), "ReferencedSOPInstanceUID {v}");
        }
        for n in &needles {
            assert!(!dump.contains(n.as_str()), "dcmdump of {rel} shows {n}");
        }
        py_args.push(f);
        py_args.push(w.join(&inst.path));
    }

    let o = Command::new("python3").arg("-c").arg(PYDICOM_CHECK).args(&py_args).output().expect("run python3");
    assert!(o.status.success(), "pydicom check failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let results: Vec<Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), insts.len());
    for (r, inst) in results.iter().zip(&insts) {
        let p = r["path"].as_str().unwrap();
        assert_eq!(r["warnings"].as_array().unwrap().len(), 0, "pydicom warns on {p}: {}", r["warnings"]);
        assert_eq!(r["identity_removed"], "YES", "{p}");
        assert!(r["codes"].as_array().unwrap().iter().any(|c| c == "113100"), "{p}: {}", r["codes"]);
        let pseudo = eng.pseudonym_patient(&inst.spec.patient_id);
        assert_eq!((r["patient_id"].as_str(), r["patient_name"].as_str()), (Some(pseudo.as_str()), Some(pseudo.as_str())), "{p}");
        for u in r["uids"].as_array().unwrap() {
            assert!(is_uuid_uid(u.as_str().unwrap()), "{p}: {u}");
        }
        assert_eq!(r["meta_sop"], r["uids"][0], "{p}");
        if r["orig_transfer_syntax"] == "1.2.840.10008.1.2.1.99" {
            // A deflated data set is de-identified through its inflated form and written so.
            assert_eq!(r["transfer_syntax"], "1.2.840.10008.1.2.1", "{p}: a deflated source is written inflated");
        } else {
            assert_eq!(r["transfer_syntax"], r["orig_transfer_syntax"], "{p}: written in the source's transfer syntax");
        }
        assert!(r["pixel_len"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(r["pixels_equal"], true, "{p}: pixel data differs from the original");
        if let Some(eq) = r.get("pixel_array_equal") {
            assert_eq!(eq, true, "{p}: pixel_array differs");
        }
        for v in r["values"].as_array().unwrap() {
            let v = v.as_str().unwrap();
            for n in &needles {
                assert!(!v.contains(n.as_str()), "{p}: pydicom reads a value containing {n}: {v}");
            }
        }
    }
}

// ------------------------------------------------------------------ 3. reproducibility

/// Every `2.25.` UID and `PSEUDO-` pseudonym in the bytes of a set of files.
fn tokens(files: &BTreeMap<String, Vec<u8>>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, bytes) in files {
        let text = String::from_utf8_lossy(bytes).into_owned() + " " + path;
        for prefix in ["2.25.", "PSEUDO-"] {
            let mut rest = text.as_str();
            while let Some(k) = rest.find(prefix) {
                let tail = &rest[k + prefix.len()..];
                let n = tail.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(tail.len());
                out.insert(format!("{prefix}{}", &tail[..n]));
                rest = &tail[n..];
            }
        }
    }
    out.remove(cohort::deid::IMPLEMENTATION_CLASS_UID);
    out
}

#[test]
fn same_key_same_tree_other_key_nothing_shared() {
    let e = env();
    let w = &e.work;
    let insts = write_dataset(w, 32);
    ok(w, &["commit", "-m", "PACS export"]);
    let a = deid(w, "main", &e.key, &["--branch", "run-a"]);
    let b = deid(w, "main", &e.key, &["--branch", "run-b"]);
    assert_eq!(a["tree"], b["tree"], "same source, key and options: same tree");
    let tree = |rev: &str| json(w, &["show", rev, "--json"])["tree"].clone();
    assert_eq!(tree("run-a"), tree("run-b"));
    assert_eq!(tree("run-a"), a["tree"]);
    let show = json(w, &["show", "run-a", "--json"]);
    assert_eq!(show["activity"]["kind"], "deid");
    assert_eq!(show["activity"]["parameters"]["key-fingerprint"], blake3::hash(&key_bytes(1)).to_hex().as_str());
    let dump = serde_json::to_string(&show).unwrap();
    assert!(!dump.contains(&hex::encode(key_bytes(1))), "the key itself is never recorded");

    // Another store, the same files committed again (other commit times): the same tree.
    let d2 = tempfile::tempdir().unwrap();
    ok(d2.path(), &["init"]);
    for i in &insts {
        write(d2.path(), &i.path, &i.bytes);
    }
    let c = cohort(d2.path()).args(["commit", "-m", "again"]).env("COHORT_TIME", "2027-05-06T07:08:09Z").output().unwrap();
    assert!(c.status.success());
    assert_eq!(deid(d2.path(), "main", &e.key, &[])["tree"], a["tree"], "reproducible in another store");

    // Another key: every pseudonym and every UID differs.
    let key2 = e.root.join("other.key");
    fs::write(&key2, key_bytes(2)).unwrap();
    let c2 = deid(w, "main", &key2, &["--branch", "run-c"]);
    assert_ne!(c2["tree"], a["tree"]);
    let (_, fa) = export(w, &e.root, "run-a");
    let (_, fc) = export(w, &e.root, "run-c");
    let (ta, tc) = (tokens(&fa), tokens(&fc));
    let uid_count = |t: &BTreeSet<String>| t.iter().filter(|x| x.starts_with("2.25.")).count();
    // 12 SOP + 4 series + 2 study + 8 referenced + 2 frame-of-reference UIDs, 2 patients.
    assert!(uid_count(&ta) >= 28 && ta.iter().filter(|x| x.starts_with("PSEUDO-")).count() == 2, "{ta:?}");
    assert_eq!(uid_count(&ta), uid_count(&tc));
    let shared: Vec<&String> = ta.intersection(&tc).collect();
    assert!(shared.is_empty(), "pseudonyms shared between two keys: {shared:?}");
    assert!(ta.is_disjoint(&original_uids(&insts)));
}

// ------------------------------------------------------------------ 4. references

#[test]
fn references_stay_consistent_inside_the_deidentified_commit() {
    let e = env();
    let w = &e.work;
    // Series 0: the synthesizer references two UIDs per series (the same in every instance of
    // the series); give two siblings exactly those SOP Instance UIDs, so that every instance of
    // the series references instances present in the data set.
    let probe = synth_instance(&spec(0, 0, 0, 0, 32));
    let refs = ui_values(&probe, 0x0008, 0x1155);
    assert_eq!(refs.len(), 2);
    let mut insts = Vec::new();
    for i in 0..4 {
        let mut sp = spec(0, 0, 0, i, 32);
        if i >= 2 {
            sp.sop_uid = refs[i - 2].clone();
        }
        let path = identified_path(&sp, 0, i);
        insts.push(put(w, sp, path));
    }
    // Series 1 references UIDs outside the data set.
    for i in 0..3 {
        let sp = spec(0, 0, 1, i, 32);
        let path = identified_path(&sp, 1, i);
        insts.push(put(w, sp, path));
    }
    ok(w, &["commit", "-m", "with references"]);
    let sum = deid(w, "main", &e.key, &[]);
    assert_eq!(sum["instances"], 7);
    let (dir, _) = export(w, &e.root, "deid");
    let eng = engine(&key_bytes(1));

    let mut by_series: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut frames = BTreeSet::new();
    let listing = ls(w, "deid");
    for entry in &listing {
        let f = open_dcm(&dir.join(entry["path"].as_str().unwrap()));
        let sop = get_str(&f, tags::SOP_INSTANCE_UID).unwrap();
        assert_eq!(f.meta().media_storage_sop_instance_uid().trim_end_matches('\0'), sop, "file meta names the new SOP Instance UID");
        assert_eq!(entry["dicom"]["sop_instance_uid"], sop.as_str());
        let items = f.get(tags::REFERENCED_IMAGE_SEQUENCE).and_then(|x| x.items()).expect("ReferencedImageSequence kept").to_vec();
        let r: Vec<String> = items.iter().map(|it| get_str(it, tags::REFERENCED_SOP_INSTANCE_UID).unwrap()).collect();
        for it in &items {
            assert_eq!(get_str(it, tags::REFERENCED_SOP_CLASS_UID).as_deref(), Some("1.2.840.10008.5.1.4.1.1.2"), "class UIDs are not instance UIDs");
        }
        by_series.entry(get_str(&f, tags::SERIES_INSTANCE_UID).unwrap()).or_default().push(r);
        frames.insert(get_str(&f, tags::FRAME_OF_REFERENCE_UID).unwrap());
    }
    let new_sop_of = |i: usize| eng.pseudonym_uid(&insts[i].spec.sop_uid);
    let s0 = by_series.get(&eng.pseudonym_uid(&insts[0].spec.series_uid)).expect("series 0");
    assert_eq!(s0.len(), 4);
    for r in s0 {
        assert_eq!(r, &vec![new_sop_of(2), new_sop_of(3)], "references point at the de-identified siblings");
    }
    assert!(paths_of(&listing).iter().any(|p| p.ends_with(&format!("/{}.dcm", new_sop_of(2)))));
    let s1 = by_series.get(&eng.pseudonym_uid(&insts[4].spec.series_uid)).expect("series 1");
    assert_eq!(s1.len(), 3);
    let originals = ui_values(&insts[4].bytes, 0x0008, 0x1155);
    for r in s1 {
        assert_eq!(r, &s1[0], "the same original reference maps to the same pseudonym in every instance");
        assert_eq!(r.len(), 2);
        assert_ne!(r[0], r[1]);
        for (new, old) in r.iter().zip(&originals) {
            assert!(is_uuid_uid(new) && new != old, "{new} replaces {old}");
        }
    }
    assert_eq!(frames.len(), 1, "one study, one frame of reference: {frames:?}");
}

// ------------------------------------------------------------------ 5. storage

#[test]
fn deidentified_commit_shares_pixel_objects() {
    let e = env();
    let w = &e.work;
    let insts = write_dataset(w, 64);
    ok(w, &["commit", "-m", "PACS export"]);
    let before = json(w, &["du", "--json"]);
    let logical = before["logical_bytes"].as_u64().unwrap();
    let store_before = before["store_bytes"].as_u64().unwrap();
    deid(w, "main", &e.key, &[]);
    let store_after = json(w, &["du", "--json"])["store_bytes"].as_u64().unwrap();
    let grown = store_after - store_before;
    let ratio = grown as f64 / logical as f64;
    // Measured (debug build, 12 instances of 64×64 16-bit with the synthesizer's sequences and
    // private tags, 119,988 logical bytes): the pack files grew by 20,061 bytes, 16.7%, because
    // every instance costs its new header (1,711 bytes raw, ~918 stored: about 9% of a 10 KB
    // file, UIDs compress poorly) and its DICOM record (~355 bytes), plus 9 trees (2,267), the
    // report (48,619 bytes of JSON, 1,602 stored), the commit and the operation (908). The pack
    // index (2,104 bytes) is not in `store_bytes`. So the 10% first hoped for cannot hold at this
    // image size; storing the pixels again would cost 44,976 bytes more (54% in total), and
    // headers stored uncompressed ~9.5 KB more (~25%): both fail the bound below.
    assert!(ratio < 0.20, "de-identification grew the store by {grown} bytes, {:.1}% of {logical} logical bytes", ratio * 100.0);
    assert_eq!(insts.len(), 12);

    // Structurally: every de-identified record points at the source's pixel object, and each
    // pixel object is stored exactly once.
    let store = Store::open(&w.join(".cohort"), Mode::Read).unwrap();
    let pixels = |rev: &str| -> BTreeSet<cohort::ObjectId> {
        ls(w, rev).iter().map(|x| store.read_dicom(&x["id"].as_str().unwrap().parse().unwrap()).unwrap().pixel.expect("pixel object")).collect()
    };
    let (src, dst) = (pixels("main"), pixels("deid"));
    assert_eq!(src.len(), 12);
    assert_eq!(src, dst, "the de-identified commit shares the source's pixel objects");
    let mut copies: BTreeMap<cohort::ObjectId, usize> = BTreeMap::new();
    for pack in store.packs() {
        for (id, _) in pack.entries() {
            *copies.entry(id).or_default() += 1;
        }
    }
    for p in &src {
        assert_eq!(copies.get(p), Some(&1), "pixel object {p} stored once");
    }
}

// ------------------------------------------------------------------ 6. options

#[test]
fn options_change_what_is_kept_and_bad_options_commit_nothing() {
    let e = env();
    let w = &e.work;
    // Patient 0: two studies 65 days apart; patient 1: one study.
    let mut insts = Vec::new();
    for (study, date) in [(0, "20240110"), (1, "20240315")] {
        for i in 0..2 {
            let mut sp = spec(0, study, 0, i, 32);
            sp.study_date = date.into();
            let path = identified_path(&sp, 0, i);
            insts.push(put(w, sp, path));
        }
    }
    let mut sp = spec(1, 0, 0, 0, 32);
    sp.study_date = "20240110".into();
    let path = identified_path(&sp, 0, 0);
    insts.push(put(w, sp, path));
    ok(w, &["commit", "-m", "two studies"]);
    let eng = engine(&key_bytes(1));

    // Basic profile: dates and sex emptied, UIDs replaced.
    deid(w, "main", &e.key, &["--branch", "basic"]);
    let (basic, _) = export(w, &e.root, "basic");
    for i in &insts {
        let f = open_dcm(&basic.join(pseudonymous_path(&eng, &i.spec)));
        assert_eq!(get_str(&f, tags::STUDY_DATE).as_deref(), Some(""), "basic: StudyDate emptied");
        assert_eq!(get_str(&f, tags::PATIENT_SEX).as_deref(), Some(""), "basic: PatientSex emptied");
        assert_eq!(get_str(&f, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).as_deref(), Some("REMOVED"));
    }

    // Modified dates: shifted by a per-patient offset, intervals kept.
    let opt = "retain-longitudinal-temporal-information-modified-dates";
    let sum = deid(w, "main", &e.key, &["--branch", "dates", "--option", opt]);
    assert_eq!(json(w, &["show", "dates", "--json"])["activity"]["parameters"]["options"], opt);
    assert_eq!(sum["instances"], 5);
    let (dates, _) = export(w, &e.root, "dates");
    let mut shifted: BTreeMap<(usize, String), String> = BTreeMap::new();
    for i in &insts {
        let f = open_dcm(&dates.join(pseudonymous_path(&eng, &i.spec)));
        let d = get_str(&f, tags::STUDY_DATE).unwrap();
        assert_eq!(get_str(&f, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).as_deref(), Some("MODIFIED"));
        assert!(method_codes(&f).contains(&"113107".to_string()), "{:?}", method_codes(&f));
        let shift = days(&d) - days(&i.spec.study_date);
        assert!((-3650..=-365).contains(&shift), "shift {shift} days");
        assert_eq!(shift, eng.date_offset_days(&i.spec.patient_id), "per-patient offset");
        assert_eq!(get_str(&f, tags::SERIES_DATE).map(|x| days(&x)), Some(days(&d)), "SeriesDate shifted alike");
        let p = PATIENTS.iter().position(|p| p.id == i.spec.patient_id).unwrap();
        if let Some(prev) = shifted.insert((p, i.spec.study_date.clone()), d.clone()) {
            assert_eq!(prev, d, "one study, one date");
        }
    }
    let (a, b) = (&shifted[&(0, "20240110".to_string())], &shifted[&(0, "20240315".to_string())]);
    assert_eq!(days(b) - days(a), 65, "the interval between the studies of a patient is kept: {a} {b}");
    assert_ne!(a, &"20240110");
    assert_eq!(exit_code(w, &["phi-scan", "dates"]).0, Some(0), "shifted dates pass the scan");

    // Retain UIDs: the original UIDs, in the headers and in the paths.
    deid(w, "main", &e.key, &["--branch", "uids", "--option", "retain-uids"]);
    let listing = ls(w, "uids");
    let sops: BTreeSet<&str> = listing.iter().map(|x| x["dicom"]["sop_instance_uid"].as_str().unwrap()).collect();
    let orig: BTreeSet<&str> = insts.iter().map(|i| i.spec.sop_uid.as_str()).collect();
    assert_eq!(sops, orig);
    let (uids, _) = export(w, &e.root, "uids");
    for i in &insts {
        let rel = format!("{}/{}/{}/{}.dcm", eng.pseudonym_patient(&i.spec.patient_id), i.spec.study_uid, i.spec.series_uid, i.spec.sop_uid);
        let f = open_dcm(&uids.join(&rel));
        assert_eq!(get_str(&f, tags::STUDY_INSTANCE_UID).as_deref(), Some(i.spec.study_uid.as_str()));
        assert_eq!(f.meta().media_storage_sop_instance_uid().trim_end_matches('\0'), i.spec.sop_uid);
        assert!(method_codes(&f).contains(&"113110".to_string()));
        assert_eq!(get_str(&f, tags::PATIENT_ID), Some(eng.pseudonym_patient(&i.spec.patient_id)), "patient still pseudonymous");
    }

    // Retain patient characteristics: PatientSex kept.
    deid(w, "main", &e.key, &["--branch", "chars", "--option", "retain-patient-characteristics"]);
    let (chars, _) = export(w, &e.root, "chars");
    for i in &insts {
        let f = open_dcm(&chars.join(pseudonymous_path(&eng, &i.spec)));
        assert_eq!(get_str(&f, tags::PATIENT_SEX), Some(i.spec.patient_sex.clone()));
        assert!(method_codes(&f).contains(&"113108".to_string()));
    }

    // Unknown and conflicting options: a clear error, exit 2, nothing committed.
    let ops = ok(w, &["op", "log", "--json"]);
    let branches = ok(w, &["branch", "--json"]);
    let (code, _, err) = exit_code(w, &["deid", "main", "--key-file", s(&e.key), "--option", "retain-everything", "--branch", "bad"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown de-identification option") && err.contains("retain-everything"), "{err}");
    let (code, _, err) = exit_code(w, &["deid", "main", "--key-file", s(&e.key), "--branch", "bad", "--option", opt, "--option", "retain-longitudinal-temporal-information-full-dates"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("conflicting options"), "{err}");
    let short = e.root.join("short.key");
    fs::write(&short, b"0123456789").unwrap();
    let (code, _, err) = exit_code(w, &["deid", "main", "--key-file", s(&short), "--branch", "bad"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("too short"), "{err}");
    // The target branch: a valid name, and not a branch of identified commits (the new commit
    // would descend from them, and the checked-out branch would move under the working tree).
    for bad in ["", "a b", "x/../y", "-x"] {
        let (code, _, err) = exit_code(w, &["deid", "main", "--key-file", s(&e.key), &format!("--branch={bad}")]);
        assert_eq!(code, Some(2), "--branch {bad:?}: {err}");
        assert!(err.contains("invalid branch name"), "{err}");
    }
    let (code, _, err) = exit_code(w, &["deid", "main", "--key-file", s(&e.key), "--branch", "main"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a de-identified one"), "{err}");
    assert_eq!(ok(w, &["op", "log", "--json"]), ops, "no operation recorded");
    assert_eq!(ok(w, &["branch", "--json"]), branches, "no branch created or moved");
    assert!(ok(w, &["status"]).contains("clean"));

    // Re-running onto an existing de-identified branch adds a commit on top of it.
    let before = json(w, &["show", "basic", "--json"])["id"].clone();
    let again = deid(w, "main", &e.key, &["--branch", "basic", "-m", "again"]);
    let show = json(w, &["show", "basic", "--json"]);
    assert_eq!(show["id"], again["commit"]);
    assert_eq!(show["parents"][0], before);
    assert_eq!(show["tree"], json(w, &["show", "basic~1", "--json"])["tree"], "same input, same tree");
}

// ------------------------------------------------------------------ 7. --from another store

#[test]
fn deid_from_another_store_copies_no_identified_object() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("hospital");
    let b = d.path().join("research");
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let key = d.path().join("deid.key");
    fs::write(&key, key_bytes(1)).unwrap();
    ok(&a, &["init"]);
    let insts = write_dataset(&a, 32);
    write(&a, "labels.csv", format!("patient,label\n{},nodule\n", PATIENTS[0].id).as_bytes());
    let source = ok(&a, &["commit", "-m", "PACS export"]).trim().to_string();
    ok(&b, &["init"]);

    let sum = deid(&b, "main", &key, &["--from", s(&a)]);
    assert_eq!(sum["instances"], 12);
    let refs = json(&b, &["branch", "--json"]);
    assert_eq!(refs["refs"]["deid"], sum["commit"], "{refs}");
    let fsck = json(&b, &["fsck", "--json"]);
    assert_eq!(fsck["ok"], true, "{fsck}");
    let ops = json(&b, &["op", "log", "--json"]).as_array().unwrap().len() as u64;
    assert_eq!(fsck["objects"].as_u64(), fsck["reachable"].as_u64().map(|r| r + ops), "nothing but the op log is unreachable: {fsck}");
    let show = json(&b, &["show", "deid", "--json"]);
    let inputs = show["activity"]["inputs"].as_array().unwrap();
    assert!(inputs.iter().any(|i| i["role"] == "source-commit" && i["value"] == source.as_str()), "{inputs:?}");
    assert_eq!(show["parents"].as_array().unwrap().len(), 0, "no identified parent");
    assert_eq!(exit_code(&b, &["phi-scan", "deid"]).0, Some(0));
    // The hospital store is unchanged.
    assert_eq!(json(&a, &["branch", "--json"])["refs"].as_object().unwrap().len(), 1);

    let mut needles = phi_strings(&insts);
    needles.extend(original_uids(&insts));
    // Every commit of B, exported.
    let mut commits = BTreeSet::new();
    for (_, id) in refs["refs"].as_object().unwrap() {
        for c in json(&b, &["log", id.as_str().unwrap(), "--json"]).as_array().unwrap() {
            commits.insert(c["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(commits.len(), 1);
    for c in &commits {
        let (_, files) = export(&b, d.path(), c);
        assert_eq!(files.len(), 12);
        let found = leaks(&files, &needles);
        assert!(found.is_empty(), "export of {c} leaks {found:?}");
    }
    // Every object of B, decoded.
    let store = Store::open(&b.join(".cohort"), Mode::Read).unwrap();
    let mut n = 0;
    for pack in store.packs() {
        for (id, loc) in pack.entries() {
            let bytes = pack.read(id, loc).unwrap();
            let found = leaks([(&id.to_string(), &bytes)], &needles);
            assert!(found.is_empty(), "object of the research store holds {found:?}");
            n += 1;
        }
    }
    assert!(n > 12 * 2, "objects read: {n}");
    // No identified header or file of A was copied (pixel objects are shared by design).
    let hospital = Store::open(&a.join(".cohort"), Mode::Read).unwrap();
    for e in ls(&a, "main") {
        let id: cohort::ObjectId = e["id"].as_str().unwrap().parse().unwrap();
        assert!(!store.contains(&id), "{} copied", e["path"]);
        if e["kind"] == "dicom" {
            let rec = hospital.read_dicom(&id).unwrap();
            assert!(!store.contains(&rec.header), "identified header of {} copied", e["path"]);
            assert!(store.contains(&rec.pixel.unwrap()), "pixel object shared");
        }
    }
    // And no file of B's store folder (index, op log, ...) holds them in clear.
    let raw: BTreeMap<String, Vec<u8>> = snapshot(&b.join(".cohort"));
    let found = leaks(&raw, &needles);
    assert!(found.is_empty(), "research store files hold {found:?}");
    // The same search over the hospital's decoded objects finds them, so it can fail. (Its
    // pack files need not show them in clear: headers are compressed together in blocks.)
    let hospital_found = hospital.packs().iter().any(|p| p.entries().any(|(id, loc)| contains(&p.read(id, loc).unwrap(), PATIENTS[0].id)));
    assert!(hospital_found);

    // gc keeps the report (an activity output) and the pixel objects.
    ok(&b, &["gc"]);
    assert_eq!(json(&b, &["fsck", "--json"])["ok"], true);
    assert_eq!(json(&b, &["deid-report", "deid", "--json"])["instances"].as_array().unwrap().len(), 12);
    let (_, again) = export(&b, d.path(), "deid");
    assert_eq!(again.len(), 12);
}

// ------------------------------------------------------------------ 8. unparseable files

#[test]
fn unparseable_dicom_refuses_the_run_unless_dropped() {
    let e = env();
    let w = &e.work;
    let mut insts = Vec::new();
    for i in 0..2 {
        let sp = spec(0, 0, 0, i, 32);
        let path = identified_path(&sp, 0, i);
        insts.push(put(w, sp, path));
    }
    let whole = synth_instance(&spec(0, 0, 0, 7, 32));
    let bad = truncate(&whole, whole.len() / 2);
    let bad_path = format!("{}_{}/bad.dcm", PATIENTS[0].name, PATIENTS[0].id);
    write(w, &bad_path, &bad);
    let commit = cohort(w).args(["commit", "-m", "with a broken file"]).output().unwrap();
    assert!(commit.status.success());
    assert!(String::from_utf8_lossy(&commit.stderr).contains("bad.dcm"), "the commit notes the broken file");

    let ops = ok(w, &["op", "log", "--json"]);
    let branches = ok(w, &["branch", "--json"]);
    let (code, out, err) = exit_code(w, &["deid", "main", "--key-file", s(&e.key)]);
    assert_eq!(code, Some(2), "stdout {out}\nstderr {err}");
    assert!(err.contains("bad.dcm") && err.contains("--drop-unparseable"), "{err}");
    assert!(out.is_empty(), "no commit id printed: {out}");
    assert_eq!(ok(w, &["op", "log", "--json"]), ops, "no operation recorded");
    assert_eq!(ok(w, &["branch", "--json"]), branches, "no branch created");
    let (code, _, _) = exit_code(w, &["show", "deid"]);
    assert_eq!(code, Some(2));

    let sum = deid(w, "main", &e.key, &["--drop-unparseable"]);
    assert_eq!(sum["instances"], 2);
    let report = json(w, &["deid-report", "deid", "--json"]);
    conforms(&report, &report_schema(), "report");
    let left = report["left_out"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["source_id"], blake3::hash(&bad).to_hex().as_str(), "names the source object, not its path");
    assert!(left[0]["reason"].as_str().unwrap().contains("pars"), "{left:?}");
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("bad.dcm") && !text.contains(PATIENTS[0].id), "the stored report never names source paths");
    assert_eq!(paths_of(&ls(w, "deid")).len(), 2);
    assert_eq!(exit_code(w, &["phi-scan", "deid"]).0, Some(0));
}

// ------------------------------------------------------------------ 9. deid-report

#[test]
fn deid_report_lists_every_instance_and_agrees_with_the_files() {
    let e = env();
    let w = &e.work;
    let insts = write_dataset(w, 32);
    let source = ok(w, &["commit", "-m", "PACS export"]).trim().to_string();
    let sum = deid(w, "main", &e.key, &[]);
    let out = ok(w, &["deid-report", "deid", "--json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    conforms(&report, &report_schema(), "report");
    assert_eq!(report["format"], "cohort-deid-report");
    assert_eq!(report["source_commit"], source.as_str());
    assert_eq!(report["key_fingerprint"], blake3::hash(&key_bytes(1)).to_hex().as_str());
    assert_eq!(report["profile_revision"], "2024b");
    let listing = ls(w, "deid");
    let instances = report["instances"].as_array().unwrap();
    let listed: BTreeSet<String> = instances.iter().map(|i| i["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(instances.len(), 12);
    assert_eq!(listed, paths_of(&listing), "every instance listed once");

    let (dir, _) = export(w, &e.root, "deid");
    let mut totals = 0;
    for inst in instances {
        let path = inst["path"].as_str().unwrap();
        let f = open_dcm(&dir.join(path));
        let entries = inst["report"]["entries"].as_array().unwrap();
        let mut actions: BTreeMap<String, String> = BTreeMap::new();
        for en in entries {
            let tag = en["tag"].as_str().unwrap();
            let rule = en["rule"].as_str().unwrap();
            let action = en["action"].as_str().unwrap();
            assert!(tag.len() == 11 && tag.starts_with('(') && tag.as_bytes()[5] == b',', "{en}");
            assert!(!rule.is_empty(), "{en}");
            assert!(["removed", "emptied", "replaced", "dummy", "cleaned", "shifted", "kept-by-option", "added"].contains(&action), "{en}");
            let p = en["path"].as_str().unwrap();
            if p == tag {
                actions.insert(tag.to_string(), action.to_string());
                // Top-level entries agree with the file.
                let g = u16::from_str_radix(&tag[1..5], 16).unwrap();
                let el = u16::from_str_radix(&tag[6..10], 16).unwrap();
                let v = get_str(&f, Tag(g, el));
                match action {
                    "removed" => assert!(f.get(Tag(g, el)).is_none(), "{path}: {tag} reported removed but present"),
                    "emptied" => assert_eq!(v.as_deref(), Some(""), "{path}: {tag} reported emptied"),
                    "replaced" | "added" => assert!(f.get(Tag(g, el)).is_some(), "{path}: {tag} reported {action} but absent"),
                    _ => {}
                }
            }
        }
        for (tag, action) in [("(0010,0010)", "replaced"), ("(0010,0020)", "replaced"), ("(0008,0050)", "emptied"), ("(0008,0080)", "removed"), ("(0010,0030)", "emptied"), ("(0009,0010)", "removed"), ("(0012,0062)", "added")] {
            assert_eq!(actions.get(tag).map(String::as_str), Some(action), "{path}: {tag} in {actions:?}");
        }
        let t = &inst["report"]["totals"];
        totals += t["removed"].as_u64().unwrap();
        assert_eq!(t["removed"].as_u64().unwrap() as usize, entries.iter().filter(|x| x["action"] == "removed").count());
    }
    assert_eq!(Some(totals), sum["removed"].as_u64(), "the summary adds up the report");

    let mut needles = phi_strings(&insts);
    needles.extend(original_uids(&insts));
    let text = ok(w, &["deid-report", "deid"]);
    for n in &needles {
        assert!(!out.contains(n.as_str()), "deid-report --json shows {n}");
        assert!(!text.contains(n.as_str()), "deid-report shows {n}");
    }
    assert!(text.contains(&source) && text.lines().count() > 12 * 10, "{text}");
}

// ------------------------------------------------------------------ 10. burned-in text

#[test]
fn clean_pixel_data_blanks_the_rule_rectangle() {
    let e = env();
    let w = &e.work;
    let mut insts = Vec::new();
    for (series, bits) in [(0usize, 16u16), (1, 8)] {
        let mut sp = spec(0, 0, series, 0, 32);
        sp.modality = "US".into();
        sp.bits_allocated = bits;
        let path = identified_path(&sp, series, 0);
        insts.push(put(w, sp, path));
    }
    ok(w, &["commit", "-m", "ultrasound"]);
    let (x0, y0, rw, rh) = (6usize, 10usize, 14usize, 8usize);
    let rules = e.root.join("rules.json");
    fs::write(&rules, format!(r#"{{"version": 1, "rules": [{{"name": "test-us-banner", "modality": "US", "rectangles": [{{"x": {x0}, "y": {y0}, "width": {rw}, "height": {rh}}}]}}]}}"#)).unwrap();
    let eng = engine(&key_bytes(1));
    let pixels = |bytes: &[u8], bits: u16| -> Vec<u8> { bytes[bytes.len() - 32 * 32 * usize::from(bits / 8)..].to_vec() };
    let inside = |k: usize| (y0..y0 + rh).contains(&(k / 32)) && (x0..x0 + rw).contains(&(k % 32));

    // Without the option: flagged, pixels untouched, and the scan fails.
    let flagged = deid(w, "main", &e.key, &["--branch", "flagged"]);
    assert_eq!(flagged["burned_in_flagged"], 2, "{flagged}");
    let (code, out, _) = exit_code(w, &["phi-scan", "flagged", "--json"]);
    assert_eq!(code, Some(1), "{out}");
    let scan: Value = serde_json::from_str(&out).unwrap();
    let checks: Vec<&Value> = scan["findings"].as_array().unwrap().iter().flat_map(|f| f["report"]["findings"].as_array().unwrap()).map(|x| &x["check"]).collect();
    assert_eq!(checks.len(), 2, "only the burned-in findings: {checks:?}");
    assert!(checks.iter().all(|c| *c == "burned-in"), "{checks:?}");
    let (fdir, _) = export(w, &e.root, "flagged");
    for i in &insts {
        let got = fs::read(fdir.join(pseudonymous_path(&eng, &i.spec))).unwrap();
        assert_eq!(pixels(&got, i.spec.bits_allocated), pixels(&i.bytes, i.spec.bits_allocated));
    }

    // A rule that matches nothing: not cleaned, the scan still fails.
    let other = e.root.join("other.json");
    fs::write(&other, r#"{"version": 1, "rules": [{"name": "ct-only", "modality": "CT", "rectangles": [{"x": 0, "y": 0, "width": 4, "height": 4}]}]}"#).unwrap();
    let nc = deid(w, "main", &e.key, &["--branch", "unmatched", "--option", "clean-pixel-data", "--pixel-rules", s(&other)]);
    assert_eq!((nc["burned_in_not_cleaned"].as_u64(), nc["pixels_cleaned"].as_u64()), (Some(2), Some(0)), "{nc}");
    assert_eq!(exit_code(w, &["phi-scan", "unmatched"]).0, Some(1));

    // With the option and a matching rule: zero inside the rectangle, unchanged outside.
    let sum = deid(w, "main", &e.key, &["--branch", "clean", "--option", "clean-pixel-data", "--pixel-rules", s(&rules)]);
    assert_eq!(sum["pixels_cleaned"], 2, "{sum}");
    let (dir, _) = export(w, &e.root, "clean");
    for i in &insts {
        let bits = i.spec.bits_allocated;
        let bpp = usize::from(bits / 8);
        let f = dir.join(pseudonymous_path(&eng, &i.spec));
        let (orig, got) = (pixels(&i.bytes, bits), pixels(&fs::read(&f).unwrap(), bits));
        let nonzero_inside = (0..32 * 32).filter(|k| inside(*k) && orig[k * bpp..(k + 1) * bpp].iter().any(|b| *b != 0)).count();
        assert!(nonzero_inside > rw * rh / 2, "the rectangle has content to blank ({nonzero_inside} pixels, {bits}-bit)");
        for k in 0..32 * 32 {
            let (o, g) = (&orig[k * bpp..(k + 1) * bpp], &got[k * bpp..(k + 1) * bpp]);
            if inside(k) {
                assert!(g.iter().all(|b| *b == 0), "{bits}-bit pixel {k} (x {}, y {}) not blanked", k % 32, k / 32);
            } else {
                assert_eq!(o, g, "{bits}-bit pixel {k} (x {}, y {}) changed", k % 32, k / 32);
            }
        }
        let h = open_dcm(&f);
        assert_eq!(get_str(&h, tags::BURNED_IN_ANNOTATION).as_deref(), Some("NO"));
        assert!(method_codes(&h).contains(&"113101".to_string()), "{:?}", method_codes(&h));
    }
    assert_eq!(exit_code(w, &["phi-scan", "clean"]).0, Some(0), "cleaned instances pass the scan");
    let report = json(w, &["deid-report", "clean", "--json"]);
    for inst in report["instances"].as_array().unwrap() {
        assert_eq!(inst["report"]["burned_in"]["status"], "cleaned");
        assert_eq!(inst["report"]["pixel_rule"], "test-us-banner");
    }
    assert_eq!(json(w, &["show", "clean", "--json"])["activity"]["parameters"]["pixel-rules"], "test-us-banner");
}

#[test]
fn clean_pixel_data_decodes_compressed_pixel_data_and_writes_it_native() {
    require_dcmdump();
    require_pydicom();
    let e = env();
    let w = &e.work;
    // Six ultrasound instances, compressed in place by dcmtk: 16-bit RLE, JPEG lossless and
    // JPEG-LS lossless, 8-bit JPEG baseline, 12-bit JPEG extended and JPEG-LS near-lossless
    // (lossy; their SOP Instance UIDs kept).
    let codecs: [(u16, &str, &[&str], &str); 6] = [
        (16, "dcmcrle", &[], "1.2.840.10008.1.2.5"),
        (16, "dcmcjpeg", &[], "1.2.840.10008.1.2.4.70"),
        (8, "dcmcjpeg", &["+eb", "+un"], "1.2.840.10008.1.2.4.50"),
        (16, "dcmcjpeg", &["+ee", "+un"], "1.2.840.10008.1.2.4.51"),
        (16, "dcmcjpls", &[], "1.2.840.10008.1.2.4.80"),
        (8, "dcmcjpls", &["+en", "+un"], "1.2.840.10008.1.2.4.81"),
    ];
    let mut insts = Vec::new();
    for (i, (bits, tool, args, _)) in codecs.iter().enumerate() {
        let mut sp = spec(0, 0, 0, i, 32);
        sp.modality = "US".into();
        sp.bits_allocated = *bits;
        let inst = put(w, sp, identified_path(&spec(0, 0, 0, i, 32), 0, i));
        let f = w.join(&inst.path);
        let tmp = f.with_extension("tmp");
        let o = Command::new(tool).args(*args).arg(&f).arg(&tmp).output().expect("run dcmtk");
        assert!(o.status.success(), "{tool}: {}", String::from_utf8_lossy(&o.stderr));
        fs::rename(&tmp, &f).unwrap();
        insts.push(inst);
    }
    // What the compressed files hold, decoded by dcmtk (for the lossy one, its own decoder).
    let reference: Vec<Vec<u8>> = insts
        .iter()
        .zip(&codecs)
        .map(|(i, (_, encoder, _, _))| {
            let out = e.root.join("plain.dcm");
            let tool = match *encoder {
                "dcmcrle" => "dcmdrle",
                "dcmcjpls" => "dcmdjpls",
                _ => "dcmdjpeg",
            };
            let o = Command::new(tool).arg(w.join(&i.path)).arg(&out).output().unwrap();
            assert!(o.status.success(), "{tool}: {}", String::from_utf8_lossy(&o.stderr));
            let b = fs::read(&out).unwrap();
            b[b.len() - 32 * 32 * usize::from(i.spec.bits_allocated / 8)..].to_vec()
        })
        .collect();
    ok(w, &["commit", "-m", "compressed ultrasound"]);
    let (x0, y0, rw, rh) = (6usize, 10usize, 14usize, 8usize);
    let rules = e.root.join("rules.json");
    fs::write(&rules, format!(r#"{{"version": 1, "rules": [{{"name": "test-us-banner", "modality": "US", "rectangles": [{{"x": {x0}, "y": {y0}, "width": {rw}, "height": {rh}}}]}}]}}"#)).unwrap();
    let sum = deid(w, "main", &e.key, &["--branch", "clean", "--option", "clean-pixel-data", "--pixel-rules", s(&rules)]);
    assert_eq!((sum["pixels_cleaned"].as_u64(), sum["burned_in_not_cleaned"].as_u64()), (Some(6), Some(0)), "{sum}");
    let eng = engine(&key_bytes(1));
    let (dir, _) = export(w, &e.root, "clean");
    let inside = |k: usize| (y0..y0 + rh).contains(&(k / 32)) && (x0..x0 + rw).contains(&(k % 32));
    for ((inst, want), (bits, _, _, ts)) in insts.iter().zip(&reference).zip(&codecs) {
        let f = dir.join(pseudonymous_path(&eng, &inst.spec));
        let dump = Command::new("dcmdump").args(["-Un", "+P", "0002,0010", "+P", "0028,2110"]).arg(&f).output().unwrap();
        let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
        assert!(dump.contains("[1.2.840.10008.1.2.1]"), "{ts}: written as explicit VR little endian: {dump}");
        // dcmcjpeg and dcmcjpls mark their lossy output themselves; cohort marks JPEG
        // baseline and extended on decoding when the source did not.
        assert_eq!(dump.contains("[01]"), [".50", ".51", ".81"].iter().any(|t| ts.ends_with(t)), "{ts}: LossyImageCompression: {dump}");
        let bpp = usize::from(bits / 8);
        let b = fs::read(&f).unwrap();
        let got = &b[b.len() - 32 * 32 * bpp..];
        let value = |p: &[u8], k: usize| if bpp == 2 { i32::from(u16::from_le_bytes([p[2 * k], p[2 * k + 1]])) } else { i32::from(p[k]) };
        let blanked = (0..32 * 32).filter(|k| inside(*k) && value(want, *k) != 0).count();
        assert!(blanked > rw * rh / 2, "{ts}: the rectangle has content to blank");
        for k in 0..32 * 32 {
            let (g, o) = (value(got, k), value(want, k));
            if inside(k) {
                assert_eq!(g, 0, "{ts}: pixel {k} (x {}, y {}) not blanked", k % 32, k / 32);
            } else if ts.ends_with(".50") || ts.ends_with(".51") {
                // Two JPEG decoders (jpeg-decoder or jpeg12 here, libjpeg in dcmtk) may round
                // differently.
                assert!((g - o).abs() <= 2, "{ts}: pixel {k}: {g} against dcmtk's {o}");
            } else {
                assert_eq!(g, o, "{ts}: pixel {k} (x {}, y {}) changed", k % 32, k / 32);
            }
        }
        // An independent reader decodes the file as written.
        let py = "import sys, pydicom; d = pydicom.dcmread(sys.argv[1]); a = d.pixel_array; assert a.shape == (32, 32), a.shape; assert (a[10:18, 6:20] == 0).all(); assert d.BurnedInAnnotation == 'NO'; print(d.file_meta.TransferSyntaxUID)";
        let o = Command::new("python3").args(["-c", py]).arg(&f).output().unwrap();
        assert!(o.status.success(), "{ts}: pydicom: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(exit_code(w, &["phi-scan", "clean"]).0, Some(0), "cleaned instances pass the scan");
    let report = json(w, &["deid-report", "clean", "--json"]);
    for inst in report["instances"].as_array().unwrap() {
        assert_eq!(inst["report"]["burned_in"]["status"], "cleaned", "{inst}");
        assert_eq!(inst["report"]["transfer_syntax"], "1.2.840.10008.1.2.1", "{inst}");
        let notes = inst["report"]["notes"].to_string();
        assert!(notes.contains("decoded from transfer syntax"), "{notes}");
    }
}

/// A store holding one pydicom test file (modality OT), de-identified with clean-pixel-data
/// and a rule blanking `(x, y, width, height)`; checks that the instance was cleaned, then runs
/// the python script `check` on the original file and the exported clean one (sys.argv[1]
/// and [2]), which must succeed.
fn clean_one_pydicom_file(name: &str, (x, y, width, height): (u32, u32, u32, u32), check: &str) {
    require_pydicom();
    let e = env();
    let w = &e.work;
    let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pydicom").join(name);
    fs::copy(&original, w.join(name)).unwrap();
    ok(w, &["commit", "-m", name]);
    let rules = e.root.join("rules.json");
    fs::write(&rules, format!(r#"{{"version": 1, "rules": [{{"name": "banner", "modality": "OT", "rectangles": [{{"x": {x}, "y": {y}, "width": {width}, "height": {height}}}]}}]}}"#)).unwrap();
    let sum = deid(w, "main", &e.key, &["--branch", "clean", "--option", "clean-pixel-data", "--pixel-rules", s(&rules)]);
    assert_eq!((sum["pixels_cleaned"].as_u64(), sum["burned_in_not_cleaned"].as_u64()), (Some(1), Some(0)), "{sum}");
    let (dir, files) = export(w, &e.root, "clean");
    assert_eq!(files.len(), 1);
    let out = dir.join(files.keys().next().unwrap());
    let o = Command::new("python3").args(["-c", check]).arg(&original).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

#[test]
fn clean_pixel_data_decodes_colour_jpeg_to_rgb_as_pydicom_does() {
    // pydicom's test file (MIT): 100x100 colour JPEG baseline, YBR_FULL_422, modality OT.
    // pydicom decodes both (the original through its own JPEG plugin, YBR to RGB): the output
    // is RGB, zero in the rectangle and pydicom's decode of the original elsewhere.
    let py = "import sys, numpy as np, pydicom
o = pydicom.dcmread(sys.argv[1]).pixel_array.astype(int)
d = pydicom.dcmread(sys.argv[2])
n = d.pixel_array.astype(int)
assert d.file_meta.TransferSyntaxUID == '1.2.840.10008.1.2.1', d.file_meta.TransferSyntaxUID
assert d.PhotometricInterpretation == 'RGB' and d.PlanarConfiguration == 0 and d.LossyImageCompression == '01'
assert n.shape == o.shape == (100, 100, 3), (n.shape, o.shape)
assert (n[:20, :50] == 0).all() and o[:20, :50].any()
m = np.ones(o.shape[:2], bool); m[:20, :50] = False
# Two JPEG decoders (jpeg-decoder here, libjpeg through Pillow there) may round differently.
assert np.abs(n[m] - o[m]).max() <= 2, np.abs(n[m] - o[m]).max()
print('ok')";
    clean_one_pydicom_file("SC_rgb_dcmtk_+eb+cy+s2.dcm", (0, 0, 50, 20), py);
}

#[test]
fn clean_pixel_data_blanks_native_ybr_full_422_to_black() {
    // pydicom's test file (MIT): the 100x100 colour card, native YBR_FULL_422 (Y Y Cb Cr per
    // pair of pixels), modality OT. x 1..5 starts and ends inside a pair of pixels: pairs
    // (0, 1) to (4, 5) are blanked.
    // pydicom converts both to RGB: black where blanked, the original elsewhere.
    let py = "import sys, numpy as np, pydicom
o = pydicom.dcmread(sys.argv[1]).pixel_array.astype(int)
d = pydicom.dcmread(sys.argv[2])
n = d.pixel_array.astype(int)
assert d.PhotometricInterpretation == 'YBR_FULL_422', d.PhotometricInterpretation
assert n.shape == o.shape == (100, 100, 3), (n.shape, o.shape)
assert (n[:20, :6] == 0).all(), n[:20, :6].max()
assert o[:20, :6].any()
m = np.ones(o.shape[:2], bool); m[:20, :6] = False
assert (n[m] == o[m]).all()
print('ok')";
    clean_one_pydicom_file("SC_ybr_full_422_uncompressed.dcm", (1, 0, 4, 20), py);
}

// ------------------------------------------------------------------ known bug, outside deidrun

/// A file that starts directly with the file meta group (no preamble, no "DICM", as dcmtk
/// reads and writes them) is committed as DICOM (`dicom::open_object` prepends the magic for
/// dicom-object), but the engine (`src/deid/engine.rs`, `deidentify`) and the scanner
/// (`src/phiscan.rs`, `scan`) open headers with `ReadPreamble::Auto` only and fail with "Could
/// not parse meta group data set": `deid` exits 2 and so does `phi-scan` of the source.
#[test]
fn instances_without_preamble_are_deidentified_and_scanned() {
    let e = env();
    let w = &e.work;
    let mut sp = spec(0, 0, 0, 0, 32);
    sp.preamble = false;
    let inst = put(w, sp, "bare/IM0001".into());
    ok(w, &["commit", "-m", "dcmtk-style file"]);
    assert_eq!(ls(w, "main")[0]["kind"], "dicom", "committed as DICOM");
    assert_eq!(exit_code(w, &["phi-scan", "main"]).0, Some(1), "the identified file has findings");
    assert_eq!(deid(w, "main", &e.key, &[])["instances"], 1);
    assert_eq!(exit_code(w, &["phi-scan", "deid"]).0, Some(0));
    let (dir, files) = export(w, &e.root, "deid");
    let f = open_dcm(&dir.join(pseudonymous_path(&engine(&key_bytes(1)), &inst.spec)));
    assert_eq!(get_str(&f, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"));
    let mut needles = phi_strings(std::slice::from_ref(&inst));
    needles.push(inst.spec.sop_uid.clone());
    assert!(leaks(&files, &needles).is_empty());
}
