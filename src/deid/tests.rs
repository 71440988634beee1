//! Tests of the de-identification engine and phi-scan on FAKE patients only.

use std::collections::BTreeSet;

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};

use super::*;
use crate::phiscan::{self, Check};

const KEY: &[u8] = b"FAKE test key material, 0123456789abcdef";
const KEY2: &[u8] = b"another FAKE key, fedcba9876543210 zz";

/// Strings planted in the fake instance that must not survive de-identification.
const PHI: &[&str] = &[
    "FAKEDOE",
    "JANEFAKE",
    "FAKEPID12345",
    "FAKEOTHERID77",
    "FAKESTREET",
    "FAKEACC998",
    "FAKE GENERAL",
    "FAKEREFDOC",
    "FAKEOPERATOR",
    "FAKESTATION1",
    "FAKESERIAL555",
    "FAKESTUDYID",
    "FAKENESTED",
    "FAKEPRIV",
    "FAKEUNSAFE",
    "FAKEOVERLAY",
    "FAKECURVE",
    "FAKEHISTORY",
    "FAKESRCAE",
    "FAKEREPORT",
    "FAKEVERIFIER",
    "20210315",
    "20210316",
    "20210317",
    "19800101",
    "101500",
    "1.2.826.0.1.3680043.2.1125.1.",
];

type Elem = InMemElement;

fn st(tag: Tag, vr: VR, v: &str) -> Elem {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

fn sq(tag: Tag, items: Vec<InMemDicomObject>) -> Elem {
    DataElement::new(
        tag,
        VR::SQ,
        Value::Sequence(DataSetSequence::new(items, Length::UNDEFINED)),
    )
}

fn obj(elems: Vec<Elem>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elems)
}

#[derive(Clone)]
struct Fake {
    patient_id: &'static str,
    patient_name: &'static str,
    study: &'static str,
    series: &'static str,
    sop: &'static str,
    referenced_sop: &'static str,
    study_date: &'static str,
    modality: &'static str,
    ts: &'static str,
    burned_in: Option<&'static str>,
    rows: u16,
    columns: u16,
    bits: u16,
    spp: u16,
    planar: u16,
    frames: Option<&'static str>,
    sop_class: &'static str,
}

impl Default for Fake {
    fn default() -> Self {
        Fake {
            patient_id: "FAKEPID12345",
            patient_name: "FAKEDOE^JANEFAKE",
            study: "1.2.826.0.1.3680043.2.1125.1.111",
            series: "1.2.826.0.1.3680043.2.1125.1.222",
            sop: "1.2.826.0.1.3680043.2.1125.1.333",
            referenced_sop: "1.2.826.0.1.3680043.2.1125.1.555",
            study_date: "20210315",
            modality: "CT",
            ts: uids::EXPLICIT_VR_LITTLE_ENDIAN,
            burned_in: None,
            rows: 8,
            columns: 10,
            bits: 16,
            spp: 1,
            planar: 0,
            frames: None,
            sop_class: uids::CT_IMAGE_STORAGE,
        }
    }
}

fn fake_object(f: &Fake) -> InMemDicomObject {
    let nested_level2 = obj(vec![
        st(Tag(0x0008, 0x0100), VR::SH, "121311"),
        st(Tag(0x0040, 0xA123), VR::PN, "FAKENESTED^PERSON"),
        st(tags::PATIENT_ID, VR::LO, f.patient_id),
        st(tags::STUDY_DATE, VR::DA, f.study_date),
    ]);
    let ref_item = obj(vec![
        st(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            uids::CT_IMAGE_STORAGE,
        ),
        st(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, f.referenced_sop),
        sq(
            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
            vec![nested_level2],
        ),
    ]);
    let content_item = obj(vec![
        st(tags::VALUE_TYPE, VR::CS, "TEXT"),
        st(
            tags::TEXT_VALUE,
            VR::UT,
            "FAKEREPORT for FAKEDOE JANEFAKE, seen 20210315",
        ),
        st(tags::PERSON_NAME, VR::PN, "FAKEVERIFIER^ANNA"),
        st(tags::DATE, VR::DA, "20210316"),
    ]);
    let private_item = obj(vec![st(tags::PATIENT_NAME, VR::PN, f.patient_name)]);
    let mut e = vec![
        st(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
        st(tags::INSTANCE_CREATION_DATE, VR::DA, "20210317"),
        st(tags::SOP_CLASS_UID, VR::UI, f.sop_class),
        st(tags::SOP_INSTANCE_UID, VR::UI, f.sop),
        st(tags::STUDY_DATE, VR::DA, f.study_date),
        st(tags::SERIES_DATE, VR::DA, f.study_date),
        st(tags::ACQUISITION_DATE, VR::DA, "20210316"),
        st(tags::CONTENT_DATE, VR::DA, "20210317"),
        st(tags::ACQUISITION_DATE_TIME, VR::DT, "20210316101530.123456"),
        st(tags::STUDY_TIME, VR::TM, "101500"),
        st(tags::ACQUISITION_TIME, VR::TM, "101530"),
        st(tags::ACCESSION_NUMBER, VR::SH, "FAKEACC998"),
        st(tags::MODALITY, VR::CS, f.modality),
        st(tags::MANUFACTURER, VR::LO, "ACME"),
        st(tags::INSTITUTION_NAME, VR::LO, "FAKE GENERAL HOSPITAL"),
        st(
            tags::INSTITUTION_ADDRESS,
            VR::ST,
            "42 FAKESTREET SPRINGFIELD",
        ),
        st(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "FAKEREFDOC^ALBERT"),
        st(tags::STATION_NAME, VR::SH, "FAKESTATION1"),
        st(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            "CT CHEST FOR FAKEDOE JANEFAKE FAKEPID12345",
        ),
        st(tags::SERIES_DESCRIPTION, VR::LO, "AXIAL 5MM"),
        st(tags::OPERATORS_NAME, VR::PN, "FAKEOPERATOR^BOB"),
        st(tags::MANUFACTURER_MODEL_NAME, VR::LO, "MODEL-X"),
        sq(tags::REFERENCED_IMAGE_SEQUENCE, vec![ref_item]),
        st(tags::PATIENT_NAME, VR::PN, f.patient_name),
        st(tags::PATIENT_ID, VR::LO, f.patient_id),
        st(tags::PATIENT_BIRTH_DATE, VR::DA, "19800101"),
        st(tags::PATIENT_SEX, VR::CS, "F"),
        st(Tag(0x0010, 0x1000), VR::LO, "FAKEOTHERID77"),
        st(tags::PATIENT_AGE, VR::AS, "041Y"),
        st(tags::PATIENT_WEIGHT, VR::DS, "70"),
        st(
            tags::ADDITIONAL_PATIENT_HISTORY,
            VR::LT,
            "FAKEHISTORY of FAKEDOE",
        ),
        st(tags::DEVICE_SERIAL_NUMBER, VR::LO, "FAKESERIAL555"),
        st(tags::STUDY_INSTANCE_UID, VR::UI, f.study),
        st(tags::SERIES_INSTANCE_UID, VR::UI, f.series),
        st(tags::STUDY_ID, VR::SH, "FAKESTUDYID"),
        st(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.2.1125.1.444",
        ),
        st(tags::SAMPLES_PER_PIXEL, VR::US, ""),
        st(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            if f.spp == 3 { "RGB" } else { "MONOCHROME2" },
        ),
        sq(tags::CONTENT_SEQUENCE, vec![content_item]),
        // private block, with a private SQ
        st(Tag(0x0009, 0x0010), VR::LO, "FAKE PRIVATE CREATOR"),
        st(Tag(0x0009, 0x1001), VR::LO, "FAKEPRIVNAME"),
        sq(Tag(0x0009, 0x1002), vec![private_item]),
        // safe-listed private attribute (SIEMENS MR HEADER B value) and an unsafe neighbour
        st(Tag(0x0019, 0x0010), VR::LO, "SIEMENS MR HEADER"),
        st(Tag(0x0019, 0x100C), VR::IS, "1000"),
        st(Tag(0x0019, 0x1010), VR::LO, "FAKEUNSAFE"),
        // curve and overlay
        DataElement::new(Tag(0x5000, 0x0005), VR::US, PrimitiveValue::from(2_u16)),
        st(Tag(0x5000, 0x2500), VR::LO, "FAKECURVE label of FAKEDOE"),
        DataElement::new(
            Tag(0x5000, 0x3000),
            VR::OB,
            PrimitiveValue::from(b"FAKECURVEDATA!".to_vec()),
        ),
        DataElement::new(Tag(0x6000, 0x0010), VR::US, PrimitiveValue::from(4_u16)),
        DataElement::new(Tag(0x6000, 0x0011), VR::US, PrimitiveValue::from(4_u16)),
        st(Tag(0x6000, 0x4000), VR::LT, "FAKEOVERLAY comment"),
        DataElement::new(
            Tag(0x6000, 0x3000),
            VR::OW,
            PrimitiveValue::from(b"FAKEOVERLAYBITS!".to_vec()),
        ),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(f.rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(f.columns)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(f.bits)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(f.bits)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(f.bits - 1)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ),
    ];
    // Samples per Pixel with a real value
    e.retain(|x| x.tag() != tags::SAMPLES_PER_PIXEL);
    e.push(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(f.spp),
    ));
    if f.spp > 1 {
        e.push(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(f.planar),
        ));
    }
    if let Some(n) = f.frames {
        e.push(st(tags::NUMBER_OF_FRAMES, VR::IS, n));
    }
    if let Some(b) = f.burned_in {
        e.push(st(tags::BURNED_IN_ANNOTATION, VR::CS, b));
    }
    obj(e)
}

fn write_file(o: InMemDicomObject, ts: &str) -> Vec<u8> {
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .source_application_entity_title("FAKESRCAE"),
        )
        .expect("meta");
    let mut out = Vec::new();
    file.write_all(&mut out).expect("write");
    out
}

fn fake_file(f: &Fake) -> Vec<u8> {
    write_file(fake_object(f), f.ts)
}

fn engine(options: &[DeidOption]) -> Deidentifier {
    engine_with(KEY, options, Vec::new())
}

fn engine_with(key: &[u8], options: &[DeidOption], rules: Vec<PixelRule>) -> Deidentifier {
    let config = DeidConfig {
        options: options.iter().copied().collect(),
        pixel_rules: rules,
    };
    Deidentifier::new(DeidKey::from_bytes(key), config).expect("engine")
}

fn open(bytes: &[u8]) -> DefaultDicomObject {
    OpenFileOptions::new()
        .from_reader(bytes)
        .expect("output parses")
}

fn get_str(o: &InMemDicomObject, tag: Tag) -> Option<String> {
    o.get(tag).map(|e| {
        e.value()
            .to_str()
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    })
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn leaked(bytes: &[u8]) -> Vec<&'static str> {
    PHI.iter().copied().filter(|p| contains(bytes, p)).collect()
}

fn codes(o: &InMemDicomObject) -> Vec<String> {
    o.get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .and_then(|e| e.items())
        .unwrap_or(&[])
        .iter()
        .filter_map(|i| get_str(i, tags::CODE_VALUE))
        .collect()
}

// ---------------------------------------------------------------- profile data

fn source_table() -> Option<serde_json::Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    for rel in ["../shared", "../../shared"] {
        let p = format!("{root}/{rel}/dicom-standard/confidentiality_profile_attributes.json");
        if let Ok(text) = std::fs::read_to_string(&p) {
            return serde_json::from_str(&text).ok();
        }
    }
    None
}

#[test]
fn every_table_row_is_handled() {
    let rows = try_profile_rows().expect("embedded table parses");
    assert_eq!(rows.len(), 621);
    let raw: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/deid/ps3.15-table-e1-1-2024b.json"
    )))
    .expect("json");
    assert_eq!(raw["source_row_count"].as_u64(), Some(rows.len() as u64));
    assert_eq!(raw["revision"].as_str(), Some(PROFILE_REVISION));
    let chosen: BTreeSet<DeidOption> = DeidOption::ALL.iter().copied().collect();
    for r in rows {
        // a known action for the basic profile and for every option value
        assert_eq!(Action::parse(r.basic.code()), Some(r.basic), "{}", r.tag);
        for (o, a) in &r.options {
            assert!(o.is_table_column());
            assert!(matches!(a, Action::K | Action::C), "{} {o}", r.tag);
        }
        let _ = r.resolve(&chosen);
    }
    let patterns: Vec<_> = rows
        .iter()
        .filter(|r| !matches!(r.pattern, TagPattern::Exact { .. }))
        .collect();
    assert_eq!(patterns.len(), 4);
    assert!(TagPattern::parse("(50XX,XXXX)")
        .expect("p")
        .matches(Tag(0x5002, 0x3000)));
    assert!(TagPattern::parse("(60XX,3000)")
        .expect("p")
        .matches(Tag(0x6000, 0x3000)));
    assert!(!TagPattern::parse("(60XX,3000)")
        .expect("p")
        .matches(Tag(0x6000, 0x4000)));
    // compare with the source extraction when the shared folder is there
    match source_table() {
        Some(src) => {
            let src = src.as_array().expect("array");
            assert_eq!(src.len(), rows.len());
            for (s, r) in src.iter().zip(rows) {
                assert_eq!(
                    s["tag"].as_str().map(str::to_ascii_uppercase).as_deref(),
                    Some(r.tag.as_str())
                );
                assert_eq!(s["basicProfile"].as_str(), Some(r.basic.code()));
            }
        }
        None => eprintln!("source table not found beside the crate; compared counts only"),
    }
}

#[test]
fn options_names_and_codes() {
    for o in DeidOption::ALL {
        assert_eq!(DeidOption::from_name(o.name()).expect("name"), o);
        assert_eq!(DeidOption::from_code(o.code()), Some(o));
        let json = serde_json::to_string(&o).expect("ser");
        assert_eq!(json, format!("\"{}\"", o.name()));
    }
    let codes: BTreeSet<_> = DeidOption::ALL.iter().map(|o| o.code()).collect();
    assert_eq!(codes.len(), 11);
    assert!(!codes.contains("113102"));
    assert!(DeidOption::from_name("retain-everything").is_err());
    assert_eq!(DeidOption::CleanDescriptors.code(), "113105");
    assert_eq!(DeidOption::RetainInstitutionIdentity.code(), "113112");
}

#[test]
fn safe_private_list_loads() {
    let e = safe_private_entries();
    assert!(e.len() > 50);
    assert!(e
        .iter()
        .any(|x| x.creator == "SIEMENS MR HEADER" && x.element == "0C"));
    assert!(e
        .iter()
        .all(|x| !matches!(x.vr.as_str(), "SQ" | "OB" | "UI" | "LT" | "")));
}

#[test]
fn burned_in_lists_agree() {
    assert_eq!(pixel::BURNED_IN_MODALITIES, phiscan::PRONE_MODALITIES);
}

// ---------------------------------------------------------------- basic profile

#[test]
fn basic_profile_removes_every_planted_identifier() {
    let input = fake_file(&Fake::default());
    assert!(
        leaked(&input).len() == PHI.len(),
        "fixture must carry every fake value"
    );
    let d = engine(&[]);
    let out = d.deidentify(&input, None).expect("deid");
    assert_eq!(leaked(&out.header), Vec::<&str>::new());
    assert_eq!(&out.header[..128], &[0u8; 128][..]);
    assert_eq!(&out.header[128..132], b"DICM");

    let f = open(&out.header);
    assert_eq!(f.meta().transfer_syntax(), uids::EXPLICIT_VR_LITTLE_ENDIAN);
    assert_eq!(
        f.meta().implementation_class_uid(),
        IMPLEMENTATION_CLASS_UID
    );
    assert_eq!(f.meta().source_application_entity_title, None);
    assert_eq!(
        get_str(&f, tags::PATIENT_IDENTITY_REMOVED).as_deref(),
        Some("YES")
    );
    assert_eq!(
        get_str(&f, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).as_deref(),
        Some("REMOVED")
    );
    assert_eq!(codes(&f), vec!["113100".to_string()]);
    let pid = get_str(&f, tags::PATIENT_ID).expect("pid");
    assert!(pid.starts_with("PSEUDO-") && pid.len() == 19);
    assert_eq!(get_str(&f, tags::PATIENT_NAME), Some(pid.clone()));
    assert_eq!(out.new_patient_id, pid);
    // Z: emptied, X: removed, U: replaced, D: dummy
    assert_eq!(get_str(&f, tags::ACCESSION_NUMBER).as_deref(), Some(""));
    assert_eq!(get_str(&f, tags::STUDY_DATE).as_deref(), Some(""));
    assert!(f.get(tags::INSTITUTION_NAME).is_none());
    assert!(f.get(tags::STUDY_DESCRIPTION).is_none());
    assert!(f.get(tags::SERIES_DESCRIPTION).is_none());
    assert!(f.get(tags::PATIENT_AGE).is_none());
    assert!(f.get(Tag(0x6000, 0x3000)).is_none());
    assert!(f.get(Tag(0x5000, 0x3000)).is_none());
    assert!(f.get(Tag(0x0009, 0x0010)).is_none());
    assert!(f.get(Tag(0x0019, 0x100C)).is_none());
    assert_eq!(get_str(&f, tags::MANUFACTURER).as_deref(), Some("ACME"));
    assert_eq!(
        get_str(&f, tags::SOP_CLASS_UID).as_deref(),
        Some(uids::CT_IMAGE_STORAGE)
    );
    let study = get_str(&f, tags::STUDY_INSTANCE_UID).expect("study");
    assert!(study.starts_with("2.25.") && study.len() <= 64);
    assert_eq!(Some(study.clone()), out.new_study_uid);
    assert_eq!(study, d.pseudonym_uid("1.2.826.0.1.3680043.2.1125.1.111"));
    assert_eq!(
        f.meta().media_storage_sop_instance_uid(),
        out.new_sop_uid.as_deref().expect("sop")
    );
    // nested: U* sequence kept, reference replaced, level-2 person name dummy, patient id pseudonym
    let item = &f
        .get(tags::REFERENCED_IMAGE_SEQUENCE)
        .and_then(|e| e.items())
        .expect("ref seq")[0];
    assert_eq!(
        get_str(item, tags::REFERENCED_SOP_INSTANCE_UID),
        Some(d.pseudonym_uid("1.2.826.0.1.3680043.2.1125.1.555"))
    );
    let l2 = &item
        .get(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE)
        .and_then(|e| e.items())
        .expect("l2")[0];
    assert_eq!(
        get_str(l2, Tag(0x0040, 0xA123)).as_deref(),
        Some("ANONYMOUS")
    );
    assert_eq!(get_str(l2, tags::PATIENT_ID), Some(pid));
    assert_eq!(get_str(l2, tags::STUDY_DATE).as_deref(), Some(""));
    // content sequence D: one empty item
    let cs = f
        .get(tags::CONTENT_SEQUENCE)
        .and_then(|e| e.items())
        .expect("content");
    assert_eq!(cs.len(), 1);
    assert!(cs[0].iter().next().is_none());

    // report: touched attributes, no values
    let r = &out.report;
    let json = serde_json::to_string(r).expect("json");
    for p in PHI {
        assert!(!json.contains(p), "report leaks {p}");
    }
    let find = |path: &str| r.entries.iter().find(|e| e.path == path).map(|e| e.action);
    assert_eq!(find("(0008,0080)"), Some(ReportAction::Removed));
    assert_eq!(find("(0008,0050)"), Some(ReportAction::Emptied));
    assert_eq!(find("(0020,000D)"), Some(ReportAction::Replaced));
    assert_eq!(
        find("(0008,1140)[0]/(0008,1155)"),
        Some(ReportAction::Replaced)
    );
    assert_eq!(
        find("(0008,1140)[0]/(0040,A170)[0]/(0040,A123)"),
        Some(ReportAction::Dummy)
    );
    assert_eq!(find("(0009,1002)"), Some(ReportAction::Removed));
    assert_eq!(find("(0012,0062)"), Some(ReportAction::Added));
    assert!(
        r.totals.removed > 10 && r.totals.emptied > 3 && r.totals.replaced > 3 && r.totals.kept > 5
    );
    assert_eq!(r.key_fingerprint, blake3::hash(KEY).to_hex().to_string());
    assert_eq!(out.burned_in, BurnedIn::NotFlagged);
}

#[test]
fn deterministic_and_key_separated() {
    let input = fake_file(&Fake::default());
    let a = engine(&[]).deidentify(&input, None).expect("a");
    let b = engine(&[]).deidentify(&input, None).expect("b");
    assert_eq!(a.header, b.header);
    assert_eq!(a.report, b.report);
    let c = engine_with(KEY2, &[], Vec::new())
        .deidentify(&input, None)
        .expect("c");
    assert_ne!(a.new_patient_id, c.new_patient_id);
    assert_ne!(a.new_study_uid, c.new_study_uid);
    assert_ne!(a.new_sop_uid, c.new_sop_uid);
    assert_ne!(a.report.key_fingerprint, c.report.key_fingerprint);
    // unrelated: no common 8-character substring between the two UID pseudonyms' numbers
    let (ua, uc) = (a.new_study_uid.expect("ua"), c.new_study_uid.expect("uc"));
    assert!(!(0..ua.len().saturating_sub(13)).any(|i| uc.contains(&ua[i + 5..i + 13])));
    let da = engine(&[]).date_offset_days("FAKEPID12345");
    assert!((-3650..=-365).contains(&da));
}

#[test]
fn weak_key_and_conflicting_options_rejected() {
    let e = Deidentifier::new(DeidKey::from_bytes(b"short"), DeidConfig::default());
    assert!(matches!(e, Err(DeidError::WeakKey { .. })));
    let config = DeidConfig {
        options: [
            DeidOption::RetainLongitudinalTemporalInformationFullDates,
            DeidOption::RetainLongitudinalTemporalInformationModifiedDates,
        ]
        .into_iter()
        .collect(),
        pixel_rules: Vec::new(),
    };
    assert!(matches!(
        Deidentifier::new(DeidKey::from_bytes(KEY), config),
        Err(DeidError::ConflictingOptions { .. })
    ));
    assert!(!format!("{:?}", DeidKey::from_bytes(KEY)).contains("FAKE"));
}

#[test]
fn bad_input_is_an_error() {
    let d = engine(&[]);
    assert!(matches!(
        d.deidentify(b"not dicom at all", None),
        Err(DeidError::Parse { .. })
    ));
    let mut o = fake_object(&Fake::default());
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(vec![0u8; 160]),
    ));
    let with_pixels = write_file(o, uids::EXPLICIT_VR_LITTLE_ENDIAN);
    assert!(matches!(
        d.deidentify(&with_pixels, None),
        Err(DeidError::PixelDataInHeader { .. })
    ));
}

#[test]
fn same_transfer_syntax_out() {
    for ts in [
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.2",
        uids::JPEG_BASELINE8_BIT,
    ] {
        let input = fake_file(&Fake {
            ts,
            ..Fake::default()
        });
        let out = engine(&[]).deidentify(&input, None).expect("deid");
        let f = open(&out.header);
        assert_eq!(f.meta().transfer_syntax(), ts);
        assert_eq!(leaked(&out.header), Vec::<&str>::new(), "{ts}");
        assert_eq!(
            get_str(&f, tags::PATIENT_IDENTITY_REMOVED).as_deref(),
            Some("YES")
        );
    }
}

// ---------------------------------------------------------------- options

fn run(options: &[DeidOption]) -> (DeidOutput, DefaultDicomObject) {
    let out = engine(options)
        .deidentify(&fake_file(&Fake::default()), None)
        .expect("deid");
    let f = open(&out.header);
    (out, f)
}

#[test]
fn retain_uids_keeps_uids() {
    let (out, f) = run(&[DeidOption::RetainUids]);
    assert_eq!(
        get_str(&f, tags::STUDY_INSTANCE_UID).as_deref(),
        Some("1.2.826.0.1.3680043.2.1125.1.111")
    );
    assert_eq!(
        f.meta().media_storage_sop_instance_uid(),
        "1.2.826.0.1.3680043.2.1125.1.333"
    );
    assert!(codes(&f).contains(&"113110".to_string()));
    assert!(out
        .report
        .entries
        .iter()
        .any(|e| e.path == "(0020,000D)" && e.action == ReportAction::KeptByOption));
}

#[test]
fn retain_device_and_institution_identity() {
    let (_, f) = run(&[DeidOption::RetainDeviceIdentity]);
    assert_eq!(
        get_str(&f, tags::DEVICE_SERIAL_NUMBER).as_deref(),
        Some("FAKESERIAL555")
    );
    assert_eq!(
        get_str(&f, tags::STATION_NAME).as_deref(),
        Some("FAKESTATION1")
    );
    assert!(f.get(tags::INSTITUTION_NAME).is_none());
    let (_, f) = run(&[DeidOption::RetainInstitutionIdentity]);
    assert_eq!(
        get_str(&f, tags::INSTITUTION_NAME).as_deref(),
        Some("FAKE GENERAL HOSPITAL")
    );
    assert!(f.get(tags::DEVICE_SERIAL_NUMBER).is_none());
    assert!(codes(&f).contains(&"113112".to_string()));
}

#[test]
fn retain_patient_characteristics() {
    let (_, f) = run(&[]);
    assert_eq!(get_str(&f, tags::PATIENT_SEX).as_deref(), Some(""));
    assert!(f.get(tags::PATIENT_WEIGHT).is_none());
    let (_, f) = run(&[DeidOption::RetainPatientCharacteristics]);
    assert_eq!(get_str(&f, tags::PATIENT_SEX).as_deref(), Some("F"));
    assert_eq!(get_str(&f, tags::PATIENT_AGE).as_deref(), Some("041Y"));
    assert_eq!(get_str(&f, tags::PATIENT_WEIGHT).as_deref(), Some("70"));
    assert!(f.get(tags::PATIENT_BIRTH_DATE).is_some_and(|e| e
        .value()
        .to_str()
        .map(|s| s.trim().is_empty())
        .unwrap_or(false)));
}

#[test]
fn full_dates_kept() {
    let (_, f) = run(&[DeidOption::RetainLongitudinalTemporalInformationFullDates]);
    assert_eq!(get_str(&f, tags::STUDY_DATE).as_deref(), Some("20210315"));
    assert_eq!(get_str(&f, tags::STUDY_TIME).as_deref(), Some("101500"));
    assert_eq!(
        get_str(&f, tags::ACQUISITION_DATE_TIME).as_deref(),
        Some("20210316101530.123456")
    );
    assert_eq!(get_str(&f, tags::PATIENT_BIRTH_DATE).as_deref(), Some(""));
    assert_eq!(
        get_str(&f, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).as_deref(),
        Some("UNMODIFIED")
    );
}

fn day_number(da: &str) -> i64 {
    let y: i64 = da[0..4].parse().expect("y");
    let m: i64 = da[4..6].parse().expect("m");
    let d: i64 = da[6..8].parse().expect("d");
    // days from civil (same algorithm as the engine, re-implemented for the test)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy
}

#[test]
fn modified_dates_shift_and_keep_intervals() {
    let opt = [DeidOption::RetainLongitudinalTemporalInformationModifiedDates];
    let d = engine(&opt);
    let a = d.deidentify(&fake_file(&Fake::default()), None).expect("a");
    let later = Fake {
        study_date: "20220101",
        sop: "1.2.826.0.1.3680043.2.1125.1.334",
        ..Fake::default()
    };
    let b = d.deidentify(&fake_file(&later), None).expect("b");
    let (fa, fb) = (open(&a.header), open(&b.header));
    let sa = get_str(&fa, tags::STUDY_DATE).expect("sa");
    let sb = get_str(&fb, tags::STUDY_DATE).expect("sb");
    let offset = d.date_offset_days("FAKEPID12345");
    assert_eq!(day_number(&sa) - day_number("20210315"), offset);
    assert_eq!(
        day_number(&sb) - day_number(&sa),
        day_number("20220101") - day_number("20210315")
    );
    // within one instance: acquisition one day after study
    let acq = get_str(&fa, tags::ACQUISITION_DATE).expect("acq");
    assert_eq!(day_number(&acq) - day_number(&sa), 1);
    let dt = get_str(&fa, tags::ACQUISITION_DATE_TIME).expect("dt");
    assert_eq!(&dt[..8], acq.as_str());
    assert_eq!(&dt[8..], "101530.123456");
    assert_eq!(get_str(&fa, tags::STUDY_TIME).as_deref(), Some("101500"));
    assert_eq!(get_str(&fa, tags::PATIENT_BIRTH_DATE).as_deref(), Some(""));
    assert_eq!(
        get_str(&fa, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).as_deref(),
        Some("MODIFIED")
    );
    assert!(a
        .report
        .entries
        .iter()
        .any(|e| e.path == "(0008,0020)" && e.action == ReportAction::Shifted));
    // another patient gets its own offset
    let other = Fake {
        patient_id: "FAKEPID99999",
        ..Fake::default()
    };
    let c = d.deidentify(&fake_file(&other), None).expect("c");
    let sc = get_str(&open(&c.header), tags::STUDY_DATE).expect("sc");
    assert_eq!(
        day_number(&sc) - day_number("20210315"),
        d.date_offset_days("FAKEPID99999")
    );
}

#[test]
fn clean_descriptors_scrubs_text() {
    let (out, f) = run(&[DeidOption::CleanDescriptors]);
    let desc = get_str(&f, tags::STUDY_DESCRIPTION).expect("kept, cleaned");
    assert!(desc.starts_with("CT CHEST FOR"), "{desc}");
    assert!(!desc.contains("FAKEDOE") && !desc.contains("JANEFAKE") && !desc.contains("FAKEPID"));
    assert_eq!(
        get_str(&f, tags::SERIES_DESCRIPTION).as_deref(),
        Some("AXIAL 5MM")
    );
    let hist = get_str(&f, tags::ADDITIONAL_PATIENT_HISTORY).expect("history");
    assert!(!hist.contains("FAKEDOE"));
    assert!(out
        .report
        .entries
        .iter()
        .any(|e| e.path == "(0008,1030)" && e.action == ReportAction::Cleaned));
    assert_eq!(
        leaked(&out.header)
            .into_iter()
            .filter(|p| *p != "FAKEHISTORY")
            .collect::<Vec<_>>(),
        Vec::<&str>::new()
    );
}

#[test]
fn clean_structured_content_recurses() {
    let (out, f) = run(&[DeidOption::CleanStructuredContent]);
    let cs = f
        .get(tags::CONTENT_SEQUENCE)
        .and_then(|e| e.items())
        .expect("content");
    let text = get_str(&cs[0], tags::TEXT_VALUE).expect("text kept");
    assert!(
        text.starts_with("FAKEREPORT for") || text.contains("for"),
        "{text}"
    );
    assert!(!text.contains("FAKEDOE") && !text.contains("20210315"));
    assert_eq!(
        get_str(&cs[0], tags::PERSON_NAME).as_deref(),
        Some("ANONYMOUS")
    );
    assert!(out
        .report
        .entries
        .iter()
        .any(|e| e.path == "(0040,A730)" && e.action == ReportAction::Cleaned));
}

#[test]
fn clean_graphics_keeps_overlays_cleaned() {
    let (out, f) = run(&[DeidOption::CleanGraphics]);
    assert!(f.get(Tag(0x6000, 0x3000)).is_some());
    let c = get_str(&f, Tag(0x6000, 0x4000)).expect("overlay comment");
    assert!(!c.contains("FAKEOVERLAY"));
    let l = get_str(&f, Tag(0x5000, 0x2500)).expect("curve label");
    assert!(!l.contains("FAKEDOE"));
    assert!(out
        .report
        .entries
        .iter()
        .any(|e| e.path == "(6000,3000)" && e.action == ReportAction::KeptByOption));
}

#[test]
fn retain_safe_private_keeps_listed_only() {
    let (out, f) = run(&[DeidOption::RetainSafePrivate]);
    assert_eq!(
        get_str(&f, Tag(0x0019, 0x0010)).as_deref(),
        Some("SIEMENS MR HEADER")
    );
    assert_eq!(get_str(&f, Tag(0x0019, 0x100C)).as_deref(), Some("1000"));
    assert!(f.get(Tag(0x0019, 0x1010)).is_none());
    assert!(f.get(Tag(0x0009, 0x0010)).is_none());
    assert!(f.get(Tag(0x0009, 0x1002)).is_none());
    assert!(codes(&f).contains(&"113111".to_string()));
    assert_eq!(leaked(&out.header), Vec::<&str>::new());
    let scan = phiscan::scan(&out.header, &[]).expect("scan");
    assert!(scan.passed(), "{:?}", scan.findings);
}

// ---------------------------------------------------------------- consistency

#[test]
fn uids_consistent_across_instances_of_a_study() {
    let d = engine(&[]);
    let a = Fake::default();
    let b = Fake {
        sop: "1.2.826.0.1.3680043.2.1125.1.334",
        referenced_sop: "1.2.826.0.1.3680043.2.1125.1.333",
        ..Fake::default()
    };
    let oa = d.deidentify(&fake_file(&a), None).expect("a");
    let ob = d.deidentify(&fake_file(&b), None).expect("b");
    assert_eq!(oa.new_study_uid, ob.new_study_uid);
    assert_eq!(oa.new_series_uid, ob.new_series_uid);
    assert_ne!(oa.new_sop_uid, ob.new_sop_uid);
    assert_eq!(oa.new_patient_id, ob.new_patient_id);
    let (fa, fb) = (open(&oa.header), open(&ob.header));
    assert_eq!(
        get_str(&fa, tags::FRAME_OF_REFERENCE_UID),
        get_str(&fb, tags::FRAME_OF_REFERENCE_UID)
    );
    let item = &fb
        .get(tags::REFERENCED_IMAGE_SEQUENCE)
        .and_then(|e| e.items())
        .expect("refs")[0];
    assert_eq!(
        get_str(item, tags::REFERENCED_SOP_INSTANCE_UID),
        oa.new_sop_uid
    );
    assert_eq!(
        fa.meta().media_storage_sop_instance_uid(),
        oa.new_sop_uid.as_deref().expect("sop")
    );
}

// ---------------------------------------------------------------- pixels

fn rule(name: &str, modality: Option<&str>, rect: PixelRect) -> PixelRule {
    PixelRule {
        name: name.into(),
        modality: modality.map(String::from),
        manufacturer: Some("acme".into()),
        model: None,
        rows: None,
        columns: None,
        rectangles: vec![rect],
    }
}

#[test]
fn native_16bit_multiframe_cleaned() {
    let f = Fake {
        modality: "US",
        burned_in: Some("YES"),
        frames: Some("2"),
        ..Fake::default()
    };
    let (rows, cols) = (8usize, 10usize);
    let pixels: Vec<u8> = (0..rows * cols * 2 * 2)
        .map(|i| (i % 251) as u8 | 1)
        .collect();
    let r = rule(
        "us-banner",
        Some("US"),
        PixelRect {
            x: 2,
            y: 1,
            width: 3,
            height: 2,
        },
    );
    let d = engine_with(KEY, &[DeidOption::CleanPixelData], vec![r]);
    let out = d
        .deidentify(
            &fake_file(&f),
            Some(PixelInput {
                bytes: &pixels,
                encapsulated: false,
            }),
        )
        .expect("deid");
    assert_eq!(
        out.burned_in,
        BurnedIn::Cleaned {
            rule: "us-banner".into()
        }
    );
    assert_eq!(out.report.pixel_rule.as_deref(), Some("us-banner"));
    let px = out.cleaned_pixel.expect("cleaned");
    assert_eq!(px.len(), pixels.len());
    for frame in 0..2 {
        for y in 0..rows {
            for x in 0..cols {
                let o = frame * rows * cols * 2 + (y * cols + x) * 2;
                let inside = (2..5).contains(&x) && (1..3).contains(&y);
                if inside {
                    assert_eq!(&px[o..o + 2], &[0, 0]);
                } else {
                    assert_eq!(&px[o..o + 2], &pixels[o..o + 2]);
                }
            }
        }
    }
    let h = open(&out.header);
    assert_eq!(
        get_str(&h, tags::BURNED_IN_ANNOTATION).as_deref(),
        Some("NO")
    );
    assert!(codes(&h).contains(&"113101".to_string()));
    let scan = phiscan::scan(&out.header, &[]).expect("scan");
    assert!(scan.passed(), "{:?}", scan.findings);
}

#[test]
fn native_8bit_rgb_cleaned_both_planar_configurations() {
    let (rows, cols) = (4usize, 6usize);
    for planar in [0u16, 1] {
        let f = Fake {
            modality: "SC",
            bits: 8,
            spp: 3,
            planar,
            rows: 4,
            columns: 6,
            ..Fake::default()
        };
        let pixels = vec![0xAAu8; rows * cols * 3];
        let r = rule(
            "sc-top",
            None,
            PixelRect {
                x: 0,
                y: 0,
                width: 100,
                height: 1,
            },
        );
        let d = engine_with(KEY, &[DeidOption::CleanPixelData], vec![r]);
        let out = d
            .deidentify(
                &fake_file(&f),
                Some(PixelInput {
                    bytes: &pixels,
                    encapsulated: false,
                }),
            )
            .expect("deid");
        let px = out.cleaned_pixel.expect("cleaned");
        for y in 0..rows {
            for x in 0..cols {
                for s in 0..3 {
                    let o = if planar == 0 {
                        (y * cols + x) * 3 + s
                    } else {
                        s * rows * cols + y * cols + x
                    };
                    assert_eq!(
                        px[o],
                        if y == 0 { 0 } else { 0xAA },
                        "planar {planar} y {y} x {x} s {s}"
                    );
                }
            }
        }
    }
}

#[test]
fn encapsulated_reported_not_cleaned() {
    let f = Fake {
        modality: "US",
        ts: uids::JPEG_BASELINE8_BIT,
        ..Fake::default()
    };
    let r = rule(
        "us-banner",
        Some("US"),
        PixelRect {
            x: 0,
            y: 0,
            width: 4,
            height: 4,
        },
    );
    let d = engine_with(KEY, &[DeidOption::CleanPixelData], vec![r]);
    let frag = [0xFFu8, 0xD8, 0xFF, 0xD9];
    let out = d
        .deidentify(
            &fake_file(&f),
            Some(PixelInput {
                bytes: &frag,
                encapsulated: true,
            }),
        )
        .expect("deid");
    assert!(matches!(out.burned_in, BurnedIn::NotCleaned { .. }));
    assert!(out.cleaned_pixel.is_none());
    let h = open(&out.header);
    assert!(!codes(&h).contains(&"113101".to_string()));
    let scan = phiscan::scan(&out.header, &[]).expect("scan");
    assert!(scan.findings.iter().any(|x| x.check == Check::BurnedIn));
    // no rule for a flagged instance is also "not cleaned"
    let d = engine_with(KEY, &[DeidOption::CleanPixelData], Vec::new());
    let out = d.deidentify(&fake_file(&f), None).expect("deid");
    assert!(matches!(out.burned_in, BurnedIn::NotCleaned { .. }));
}

#[test]
fn flagged_without_option() {
    let f = Fake {
        modality: "CT",
        burned_in: Some("YES"),
        ..Fake::default()
    };
    let out = engine(&[]).deidentify(&fake_file(&f), None).expect("deid");
    assert!(matches!(out.burned_in, BurnedIn::Flagged { .. }));
    let f = Fake {
        sop_class: uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
        ..Fake::default()
    };
    let out = engine(&[]).deidentify(&fake_file(&f), None).expect("deid");
    assert!(matches!(out.burned_in, BurnedIn::Flagged { .. }));
    let out = engine(&[])
        .deidentify(&fake_file(&Fake::default()), None)
        .expect("deid");
    assert_eq!(out.burned_in, BurnedIn::NotFlagged);
}

#[test]
fn pixel_rules_document() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/deid/pixel-rules.example.json"
    ));
    let rules = parse_pixel_rules(text).expect("example parses");
    assert!(!rules.is_empty());
    assert!(parse_pixel_rules(r#"{"version":1,"rules":[{"name":"a","rectangles":[]}]}"#).is_err());
    assert!(parse_pixel_rules(r#"{"version":2,"rules":[]}"#).is_err());
    assert!(parse_pixel_rules(r#"{"version":1,"rules":[{"name":"a","typo":1,"rectangles":[{"x":0,"y":0,"width":1,"height":1}]}]}"#).is_err());
}

// ---------------------------------------------------------------- phi-scan

fn known() -> Vec<String> {
    ["FAKEPID12345", "FAKEDOE^JANEFAKE", "FAKEDOE", "FAKEACC998"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn phiscan_passes_deid_output() {
    for opts in [
        vec![],
        vec![DeidOption::RetainUids],
        vec![
            DeidOption::CleanDescriptors,
            DeidOption::CleanStructuredContent,
            DeidOption::CleanGraphics,
        ],
        vec![
            DeidOption::RetainLongitudinalTemporalInformationModifiedDates,
            DeidOption::RetainPatientCharacteristics,
        ],
        vec![
            DeidOption::RetainDeviceIdentity,
            DeidOption::RetainInstitutionIdentity,
            DeidOption::RetainSafePrivate,
        ],
    ] {
        let (out, _) = run(&opts);
        let report = phiscan::scan(&out.header, &known()).expect("scan");
        assert!(report.passed(), "{opts:?}: {:#?}", report.findings);
        let names: BTreeSet<_> = opts.iter().map(|o| o.name().to_string()).collect();
        assert_eq!(
            report
                .recorded_options
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            names
        );
    }
}

#[test]
fn phiscan_finds_problems_in_raw_input() {
    let input = fake_file(&Fake {
        modality: "US",
        ..Fake::default()
    });
    let r = phiscan::scan(&input, &known()).expect("scan");
    let checks: BTreeSet<Check> = r.findings.iter().map(|f| f.check).collect();
    for c in [
        Check::XPresent,
        Check::ZNotEmpty,
        Check::DNotDummy,
        Check::UidNotReplaced,
        Check::PrivateNotSafe,
        Check::PatientIdentityRemoved,
        Check::BurnedIn,
        Check::KnownIdentifier,
    ] {
        assert!(checks.contains(&c), "missing {c:?}");
    }
    let json = serde_json::to_string(&r).expect("json");
    for p in PHI {
        if !p.starts_with("1.2.826") {
            assert!(!json.contains(p), "scan report leaks {p}");
        }
    }
    // nested findings have paths
    assert!(r
        .findings
        .iter()
        .any(|f| f.path == "(0008,1140)[0]/(0008,1155)" && f.check == Check::UidNotReplaced));
    assert!(r.findings.iter().any(|f| f.path.starts_with("(0009,1002)")));
}

#[test]
fn phiscan_catches_tampering() {
    // a deid output where someone put an identifier back into an unlisted attribute
    let (out, f) = run(&[]);
    let mut o = f.into_inner();
    o.put(st(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\FAKEPID12345"));
    o.put(st(tags::INSTITUTION_NAME, VR::LO, "SOMEWHERE"));
    let bytes = write_file(o, uids::EXPLICIT_VR_LITTLE_ENDIAN);
    let r = phiscan::scan(&bytes, &known()).expect("scan");
    assert!(r
        .findings
        .iter()
        .any(|x| x.check == Check::KnownIdentifier && x.tag == "(0008,0008)"));
    assert!(r
        .findings
        .iter()
        .any(|x| x.check == Check::XPresent && x.tag == "(0008,0080)"));
    // sanity: untouched output passes
    assert!(phiscan::scan(&out.header, &known()).expect("scan").passed());
}

// ---------------------------------------------------------------- dcmtk

#[test]
fn dcmdump_reads_output() {
    let probe = std::process::Command::new("dcmdump")
        .arg("--version")
        .output();
    if probe.is_err() {
        println!("SKIPPED dcmdump_reads_output: dcmdump not installed (apt-get install dcmtk)");
        return;
    }
    let out = engine(&[DeidOption::CleanDescriptors])
        .deidentify(&fake_file(&Fake::default()), None)
        .expect("deid");
    let dir = std::env::temp_dir().join(format!("cohort-deid-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("deid.dcm");
    std::fs::write(&path, &out.header).expect("write");
    let res = std::process::Command::new("dcmdump")
        .arg("-q")
        .arg(&path)
        .output()
        .expect("dcmdump runs");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "dcmdump failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(text.contains("(0012,0062) CS [YES]"), "{text}");
    assert!(
        text.contains(&format!("(0010,0020) LO [{}]", out.new_patient_id)),
        "{text}"
    );
    assert!(text.contains("(0012,0064) SQ"), "{text}");
    assert!(text.contains("113100"), "{text}");
    for p in PHI {
        assert!(!text.contains(p), "dcmdump shows {p}");
    }
}

#[test]
fn header_without_preamble_and_threads() {
    let input = fake_file(&Fake::default());
    let d = engine(&[]);
    let with = d.deidentify(&input, None).expect("with preamble");
    let without = d.deidentify(&input[128..], None).expect("without preamble");
    assert_eq!(with.header, without.header);
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Deidentifier>();
    assert!(!profile_rows().is_empty());
}

#[test]
fn unknown_vr_descriptor_removed_under_clean() {
    let mut o = fake_object(&Fake::default());
    o.put(DataElement::new(
        tags::STUDY_DESCRIPTION,
        VR::UN,
        PrimitiveValue::from(b"FAKEDOE UNKNOWN VR ".to_vec()),
    ));
    let input = write_file(o, uids::EXPLICIT_VR_LITTLE_ENDIAN);
    let out = engine(&[DeidOption::CleanDescriptors])
        .deidentify(&input, None)
        .expect("deid");
    assert!(!contains(&out.header, "FAKEDOE"));
    assert!(open(&out.header).get(tags::STUDY_DESCRIPTION).is_none());
}

#[test]
fn missing_patient_id_and_second_pass() {
    let mut o = fake_object(&Fake::default());
    o.remove_element(tags::PATIENT_ID);
    let input = write_file(o, uids::EXPLICIT_VR_LITTLE_ENDIAN);
    let d = engine(&[]);
    let out = d.deidentify(&input, None).expect("deid");
    assert_eq!(
        out.new_patient_id,
        d.pseudonym_patient("name:FAKEDOE^JANEFAKE")
    );
    assert!(out
        .report
        .entries
        .iter()
        .any(|e| e.path == "(0010,0020)" && e.action == ReportAction::Added));
    // de-identifying de-identified output works and stays clean
    let again = d.deidentify(&out.header, None).expect("second pass");
    assert_eq!(leaked(&again.header), Vec::<&str>::new());
    assert!(phiscan::scan(&again.header, &known())
        .expect("scan")
        .passed());
    assert_eq!(codes(&open(&again.header)), vec!["113100".to_string()]);
}
