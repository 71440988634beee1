//! Golden tests of the on-disk formats in docs/format.md: the exact bytes of each structured
//! object and of a pack and its index are pinned by files under tests/data/format/, and those
//! committed files must keep decoding. Regenerate (only for a deliberate format change, with a
//! version bump) with COHORT_BLESS=1.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use cohort::catalog::*;
use cohort::object::*;
use cohort::pack::{encode, Hint, Pack, PackWriter};
use cohort::ObjectId;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/format").join(name)
}

fn check(name: &str, bytes: &[u8]) {
    let p = data(name);
    if std::env::var_os("COHORT_BLESS").is_some() {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
    }
    let golden = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (golden file missing)", p.display()));
    assert_eq!(golden, bytes, "{name}: encoding differs from the committed golden file");
}

fn id(n: u8) -> ObjectId {
    ObjectId([n; 32])
}

fn samples() -> (Tree, DicomFile, Commit, Operation) {
    let tree = Tree {
        entries: vec![
            TreeEntry { name: "IM0001.dcm".into(), kind: EntryKind::Dicom, id: id(1), size: 525_000 },
            TreeEntry { name: "labels.csv".into(), kind: EntryKind::File, id: id(2), size: 17 },
            TreeEntry { name: "sub".into(), kind: EntryKind::Tree, id: id(3), size: 99 },
        ],
    };
    let dicom = DicomFile {
        header: id(4),
        pixel_element: vec![0xe0, 0x7f, 0x10, 0x00, b'O', b'W', 0, 0, 0, 0, 8, 0],
        pixel: Some(id(5)),
        trailer: vec![],
        size: 525_000,
        info: InstanceInfo {
            patient_id: Some("FAKE0001".into()),
            study_uid: Some("2.25.1".into()),
            modality: Some("CT".into()),
            rows: Some(512),
            ..Default::default()
        },
    };
    let mut params = BTreeMap::new();
    params.insert("profile".to_string(), "basic".to_string());
    let commit = Commit {
        tree: id(6),
        parents: vec![id(7)],
        author: "tester".into(),
        time_us: 1_767_323_045_000_000,
        message: "import".into(),
        activity: Activity {
            kind: "commit".into(),
            agent: Agent { user: "tester".into(), tool: "cohort".into(), tool_version: "0.1.0".into() },
            parameters: params,
            inputs: vec![ActivityRef { role: "parent".into(), value: id(7).hex() }],
            outputs: vec![],
            started_us: 1,
            ended_us: 2,
        },
        notes: vec![CommitNote { path: "x.dcm".into(), note: "stored whole".into() }],
        catalog: Some(id(10)),
        signature: Some(CommitSignature { signer: "tester".into(), public_key: vec![7; 32], signature: vec![9; 64] }),
    };
    let mut branches = BTreeMap::new();
    branches.insert("main".to_string(), id(8));
    let op = Operation {
        parents: vec![id(9)],
        time_us: 3,
        user: "tester".into(),
        command: vec!["cohort".into(), "commit".into()],
        description: "commit".into(),
        view: View { head: Head::Branch("main".into()), branches, tags: BTreeMap::new() },
    };
    (tree, dicom, commit, op)
}

fn catalog_samples() -> (Catalog, AnnotationSet, Split) {
    let mut cat = Catalog::default();
    cat.annotations.insert(("finding".into(), "reader-a".into()), id(11));
    cat.splits.insert("main".into(), id(12));
    let mut segments = BTreeMap::new();
    segments.insert(1u8, "lesion".to_string());
    let mut voxels = BTreeMap::new();
    voxels.insert(1u8, 72u64);
    let set = AnnotationSet {
        task: "finding".into(),
        kind: AnnotationKind::Segmentation,
        reader: "reader-a".into(),
        source: LabelSource::Retrospective,
        time_us: 4,
        input: Some(InputFile { name: Some("a.csv".into()), blake3: id(13), format: "csv".into() }),
        labels: vec![LabelEntry { target: Target::Series("2.25.2".into()), label: "pos".into(), value: Some("0.9".into()) }],
        boxes: vec![BoxEntry { sop_uid: "2.25.3".into(), frame: 1, label: "nodule".into(), x: 1.5, y: 2.0, w: 3.0, h: 4.25 }],
        segmentations: vec![SegEntry { series_uid: "2.25.2".into(), dims: [16, 16, 4], slice_sops: vec!["2.25.3".into()], segments, mask: id(14), voxels }],
        derivation: Some(Derivation { method: "majority".into(), inputs: vec![("reader-b".into(), id(15))], unresolved: 1 }),
        previous: Some(id(16)),
    };
    let mut assignments = BTreeMap::new();
    assignments.insert("FAKE0001".to_string(), Assignment { part: "train".into(), stratum: "pos".into() });
    let split = Split {
        name: "main".into(),
        group: GroupBy::Patient,
        parts: vec![("train".into(), 70), ("test".into(), 30)],
        seed: 7,
        stratify: Some("finding".into()),
        assignments,
        previous: None,
    };
    (cat, set, split)
}

#[test]
fn structured_objects_keep_their_bytes() {
    let (tree, dicom, commit, op) = samples();
    check("tree.bin", &tree.to_bytes());
    check("dicom.bin", &dicom.to_bytes());
    check("commit.bin", &commit.to_bytes());
    check("operation.bin", &op.to_bytes());
    let (cat, set, split) = catalog_samples();
    check("catalog.bin", &cat.to_bytes());
    check("annotations.bin", &set.to_bytes());
    check("split.bin", &split.to_bytes());
    let rd = |n: &str| fs::read(data(n)).unwrap();
    assert_eq!(Catalog::from_bytes(id(0), &rd("catalog.bin")).unwrap(), cat);
    assert_eq!(AnnotationSet::from_bytes(id(0), &rd("annotations.bin")).unwrap(), set);
    assert_eq!(Split::from_bytes(id(0), &rd("split.bin")).unwrap(), split);
    // A version 1 commit (before catalogs) still decodes, with no catalog.
    let v1 = Commit::from_bytes(id(0), &rd("commit-v1.bin")).unwrap();
    assert_eq!(v1, Commit { catalog: None, signature: None, ..commit.clone() });
    assert_eq!(&rd("commit-v1.bin")[4..6], &1u16.to_le_bytes());
    assert_eq!(&commit.to_bytes()[4..6], &2u16.to_le_bytes());
    // And the committed files decode to the same values (backward compatibility).
    let rd = |n: &str| fs::read(data(n)).unwrap();
    assert_eq!(Tree::decode(id(0), &rd("tree.bin")).unwrap(), tree);
    assert_eq!(DicomFile::from_bytes(id(0), &rd("dicom.bin")).unwrap(), dicom);
    assert_eq!(Commit::from_bytes(id(0), &rd("commit.bin")).unwrap(), commit);
    assert_eq!(Operation::from_bytes(id(0), &rd("operation.bin")).unwrap(), op);
}

#[test]
fn documented_layout_of_a_tree() {
    // The layout of docs/format.md, byte by byte, for a one-entry tree.
    let t = Tree { entries: vec![TreeEntry { name: "a".into(), kind: EntryKind::Symlink, id: id(0xab), size: 5 }] };
    let mut want = b"COHT".to_vec();
    want.extend(1u16.to_le_bytes());
    want.extend(1u64.to_le_bytes()); // entries
    want.extend(1u64.to_le_bytes()); // name length
    want.push(b'a');
    want.extend(2u32.to_le_bytes()); // EntryKind::Symlink
    want.extend([0xab; 32]);
    want.extend(5u64.to_le_bytes());
    assert_eq!(t.to_bytes(), want);
}

#[test]
fn version_and_magic_are_checked() {
    let (tree, ..) = samples();
    let mut b = tree.to_bytes();
    b[4] = 2; // version 2
    let e = Tree::decode(id(0), &b).unwrap_err().to_string();
    assert!(e.contains("version 2"), "{e}");
    let e = Commit::from_bytes(id(0), &tree.to_bytes()).unwrap_err().to_string();
    assert!(e.contains("expected a commit"), "{e}");
    // Truncated bodies are corrupt, not a panic.
    let full = tree.to_bytes();
    for n in 0..full.len() {
        assert!(Tree::decode(id(0), &full[..n]).is_err());
    }
}

#[test]
fn pack_and_index_keep_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    fs::create_dir(&packs).unwrap();
    let w = PackWriter::create(&packs, dir.path()).unwrap();
    // Three small objects go into one block (codec 3): one zstd frame of 9 bytes, which zstd
    // stores as a raw block inside the frame.
    for o in [&b"alpha"[..], b"beta", b""] {
        w.add(encode(ObjectId::of(o), o, Hint::Generic)).unwrap();
    }
    // And 16-bit pixel data, delta-coded (codec 4, version 3).
    let pixels = sample_pixels();
    let e = encode(ObjectId::of(&pixels), &pixels, Hint::Pixels16);
    assert_eq!(e.codec, cohort::pack::Codec::Delta16Zstd);
    w.add(e).unwrap();
    let name = w.finish().unwrap().unwrap();
    check("sample.pack", &fs::read(packs.join(format!("{name}.pack"))).unwrap());
    check("sample.idx", &fs::read(packs.join(format!("{name}.idx"))).unwrap());
    // The committed packs are readable by this version: version 3 (delta-coded pixel data),
    // version 2 (blocks), and version 1 (before blocks: objects stored alone, 57-byte index
    // entries), as earlier stores hold.
    for v in ["sample", "sample-v2", "sample-v1"] {
        let gd = tempfile::tempdir().unwrap();
        fs::copy(data(&format!("{v}.pack")), gd.path().join("pack-x.pack")).unwrap();
        fs::copy(data(&format!("{v}.idx")), gd.path().join("pack-x.idx")).unwrap();
        let p = Pack::open(gd.path(), "pack-x").unwrap();
        p.verify_index().unwrap();
        p.verify_layout().unwrap();
        for o in [&b"alpha"[..], b"beta", b""] {
            let id = ObjectId::of(o);
            assert_eq!(p.read(id, p.find(&id).unwrap()).unwrap(), o, "{v}");
        }
        if v == "sample" {
            let id = ObjectId::of(&pixels);
            assert_eq!(p.read(id, p.find(&id).unwrap()).unwrap(), pixels);
        }
    }
}

/// 201 little-endian 16-bit samples (an odd byte at the end): a ramp with a wobble, which
/// crosses a byte boundary and goes down as well as up.
fn sample_pixels() -> Vec<u8> {
    let mut v: Vec<u8> = (0..201u16).flat_map(|i| (1000 + i * 3 - (i % 7) * 5).to_le_bytes()).collect();
    v.push(0x5a);
    v
}

#[test]
fn decoders_never_panic_on_damaged_bytes() {
    // Every single-byte change and every truncation of each golden object: an error or a value,
    // never a panic or a runaway allocation (bincode is configured with a 1 GiB limit, and
    // lengths are checked against the input).
    for name in ["tree.bin", "dicom.bin", "commit.bin", "commit-v1.bin", "operation.bin", "catalog.bin", "annotations.bin", "split.bin"] {
        let good = fs::read(data(name)).unwrap();
        let mut cases: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        for i in 0..good.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] ^= x;
                cases.push(b);
            }
        }
        for b in &cases {
            let _ = Tree::decode(id(0), b);
            let _ = DicomFile::from_bytes(id(0), b);
            let _ = Commit::from_bytes(id(0), b);
            let _ = Operation::from_bytes(id(0), b);
            let _ = Catalog::from_bytes(id(0), b);
            let _ = AnnotationSet::from_bytes(id(0), b);
            let _ = Split::from_bytes(id(0), b);
        }
    }
    // Damaged pack indexes and packs (both versions): open or read fails cleanly, never panics.
    for v in ["sample", "sample-v2", "sample-v1"] {
        damaged_packs_fail_cleanly(&format!("{v}.idx"), &format!("{v}.pack"));
    }
}

fn damaged_packs_fail_cleanly(idx_name: &str, pack_name: &str) {
    let idx = fs::read(data(idx_name)).unwrap();
    let pack = fs::read(data(pack_name)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..idx.len() {
        let mut b = idx.clone();
        b[i] ^= 0xff;
        fs::write(dir.path().join("p.idx"), &b).unwrap();
        fs::write(dir.path().join("p.pack"), &pack).unwrap();
        if let Ok(p) = Pack::open(dir.path(), "p") {
            let _ = p.verify_index();
            let _ = p.verify_layout();
            for (oid, loc) in p.entries().collect::<Vec<_>>() {
                let _ = p.read(oid, loc);
            }
        }
    }
    for n in 0..pack.len() {
        fs::write(dir.path().join("p.idx"), &idx).unwrap();
        fs::write(dir.path().join("p.pack"), &pack[..n]).unwrap();
        let p = Pack::open(dir.path(), "p").unwrap();
        assert!(p.verify_layout().is_err(), "a pack cut at {n} bytes passes the layout check");
        for (oid, loc) in p.entries().collect::<Vec<_>>() {
            let _ = p.read(oid, loc);
        }
    }
}
