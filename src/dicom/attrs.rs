//! Attribute-level view of DICOM headers, built on `dicom-object`: owns
//! flattening a header (file meta group + data set, recursing into sequences
//! item by item) into rows with stable paths, dumping them ([`dump_header`])
//! and diffing two headers ([`diff_headers`]).

use std::collections::{BTreeMap, BTreeSet};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntryRef, TagRange};
use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;

use super::{open_header, tag_string, DicomError};

/// Longest value shown in a row or change (longer ones end with "…").
const MAX_SHOWN: usize = 64;

/// One attribute that differs between two headers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttributeChange {
    /// `"(0010,0010)"`
    pub tag: String,
    /// `"PatientName"`, `"Private"` for private tags, `""` when unknown.
    pub keyword: String,
    /// e.g. `"ReferencedImageSequence[0].ReferencedSOPInstanceUID"`, or the
    /// keyword (the tag for private / unknown / repeating-group tags) at top level.
    pub path: String,
    /// None = attribute absent; values shortened to at most 64 chars with "…".
    pub old: Option<String>,
    pub new: Option<String>,
}

/// One attribute of a header, as listed by [`dump_header`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttributeRow {
    pub tag: String,
    pub keyword: String,
    pub vr: String,
    pub path: String,
    /// Shortened to at most 64 chars with "…"; sequences show `<n items>`,
    /// binary values `<n bytes> hex…`.
    pub value: String,
}

/// A flattened attribute plus what is compared when diffing.
struct Flat {
    row: AttributeRow,
    /// Full (unshortened) comparison value: raw bytes or the full text.
    cmp: Vec<u8>,
}

/// Sort key: tag, item index, tag, item index, ... (so a sequence row sorts
/// right before its items' rows, and items in order).
type Key = Vec<u32>;

fn entry(tag: (u16, u16)) -> Option<&'static DataDictionaryEntryRef<'static>> {
    StandardDataDictionary.by_tag(Tag(tag.0, tag.1))
}

/// Keyword of a tag from the standard dictionary (also repeating groups such
/// as `OverlayData`, private creators and group lengths).
pub fn keyword_of(tag: (u16, u16)) -> Option<&'static str> {
    entry(tag).map(|e| e.alias)
}

/// Keyword for rows: dictionary keyword, else "Private" (odd group) or "".
fn row_keyword(tag: (u16, u16)) -> String {
    match keyword_of(tag) {
        Some(k) => k.to_string(),
        None if tag.0 % 2 == 1 => "Private".to_string(),
        None => String::new(),
    }
}

/// Path component: the keyword when it names exactly this tag, else the tag.
fn path_name(tag: (u16, u16)) -> String {
    match entry(tag) {
        Some(e) if tag.0.is_multiple_of(2) && matches!(e.tag, TagRange::Single(_)) => {
            e.alias.to_string()
        }
        _ => tag_string(tag),
    }
}

/// The path of an attribute inside sequences, as [`diff_headers`] names it: each enclosing
/// sequence with the item's index (from 0), then the attribute, e.g.
/// `"DoseReferenceSequence[0].DoseReferenceDescription"`.
pub fn attribute_path(within: &[((u16, u16), usize)], tag: (u16, u16)) -> String {
    let mut s = String::new();
    for (sequence, item) in within {
        s.push_str(&format!("{}[{item}].", path_name(*sequence)));
    }
    s + &path_name(tag)
}

/// Cut a display value to at most [`MAX_SHOWN`] chars; control chars become spaces.
fn shorten(s: &str) -> String {
    let clean = s.chars().map(|c| if c.is_control() { ' ' } else { c });
    if s.chars().count() > MAX_SHOWN {
        let mut out: String = clean.take(MAX_SHOWN - 1).collect();
        out.push('…');
        out
    } else {
        clean.collect()
    }
}

fn is_binary(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN
    )
}

/// Display text and comparison bytes of a primitive value.
fn primitive(v: &PrimitiveValue, vr: VR) -> (String, Vec<u8>) {
    if is_binary(vr) {
        let bytes = v.to_bytes();
        let hex: String = bytes.iter().take(24).map(|b| format!("{b:02x}")).collect();
        (format!("<{} bytes> {hex}", bytes.len()), bytes.into_owned())
    } else {
        let s = v.to_str().into_owned();
        let cmp = s.as_bytes().to_vec();
        (s, cmp)
    }
}

fn push(
    out: &mut BTreeMap<Key, Flat>,
    key: Key,
    tag: (u16, u16),
    vr: VR,
    path: String,
    shown: String,
    cmp: Vec<u8>,
) {
    let row = AttributeRow {
        tag: tag_string(tag),
        keyword: row_keyword(tag),
        vr: vr.to_string().to_owned(), // VR::to_string gives the 2-letter code
        path,
        value: shorten(&shown),
    };
    out.insert(key, Flat { row, cmp });
}

/// Flatten a data set (recursively) into `out`.
fn flatten_object(
    obj: &InMemDicomObject,
    key: &[u32],
    prefix: &str,
    out: &mut BTreeMap<Key, Flat>,
) {
    for elem in obj.iter() {
        let t = elem.tag();
        let tag = (t.group(), t.element());
        let mut k = key.to_vec();
        k.push((u32::from(tag.0) << 16) | u32::from(tag.1));
        let name = path_name(tag);
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match elem.value() {
            Value::Primitive(v) => {
                let (shown, cmp) = primitive(v, elem.vr());
                push(out, k, tag, elem.vr(), path, shown, cmp);
            }
            Value::Sequence(seq) => {
                let items = seq.items();
                let shown = format!(
                    "<{} item{}>",
                    items.len(),
                    if items.len() == 1 { "" } else { "s" }
                );
                push(
                    out,
                    k.clone(),
                    tag,
                    elem.vr(),
                    path.clone(),
                    shown.clone(),
                    shown.into_bytes(),
                );
                for (i, item) in items.iter().enumerate() {
                    let mut ik = k.clone();
                    ik.push(u32::try_from(i).unwrap_or(u32::MAX));
                    flatten_object(item, &ik, &format!("{path}[{i}]"), out);
                }
            }
            Value::PixelSequence(ps) => {
                let frags = ps.fragments();
                let total: usize = frags.iter().map(|f| f.len()).sum();
                let shown = format!("<encapsulated: {} fragments, {total} bytes>", frags.len());
                let mut cmp = Vec::with_capacity(total);
                for f in frags {
                    cmp.extend_from_slice(f);
                }
                push(out, k, tag, elem.vr(), path, shown, cmp);
            }
        }
    }
}

/// Parse a header with `dicom-object` and flatten file meta + data set.
fn flatten_file(bytes: &[u8]) -> Result<BTreeMap<Key, Flat>, DicomError> {
    let obj = open_header(bytes)?;
    let mut out = BTreeMap::new();
    for elem in obj.meta().to_element_iter() {
        let t = elem.tag();
        let tag = (t.group(), t.element());
        if let Value::Primitive(v) = elem.value() {
            let (shown, cmp) = primitive(v, elem.vr());
            let key = vec![(u32::from(tag.0) << 16) | u32::from(tag.1)];
            push(&mut out, key, tag, elem.vr(), path_name(tag), shown, cmp);
        }
    }
    flatten_object(&obj.into_inner(), &[], "", &mut out);
    Ok(out)
}

/// All attributes of a header (file meta first, then the data set in tag
/// order, sequence items right after their sequence). Given a whole file,
/// only its header part (before the top-level pixel data) is listed. Fails
/// on anything [`analyze`](super::analyze) would not split.
pub fn dump_header(bytes: &[u8]) -> Result<Vec<AttributeRow>, DicomError> {
    Ok(flatten_file(bytes)?.into_values().map(|f| f.row).collect())
}

/// Attribute-level diff of two headers (file meta included, sequences
/// compared item by item), in the same order as [`dump_header`].
pub fn diff_headers(old: &[u8], new: &[u8]) -> Result<Vec<AttributeChange>, DicomError> {
    let mut a = flatten_file(old)?;
    let mut b = flatten_file(new)?;
    let keys: BTreeSet<Key> = a.keys().chain(b.keys()).cloned().collect();
    let mut changes = Vec::new();
    for k in keys {
        let (x, y) = (a.remove(&k), b.remove(&k));
        let (row, old, new) = match (x, y) {
            (Some(x), Some(y)) if x.cmp == y.cmp && x.row.vr == y.row.vr => continue,
            (Some(x), Some(y)) => {
                let new = Some(y.row.value.clone());
                (y.row, Some(x.row.value), new)
            }
            (Some(x), None) => {
                let old = Some(x.row.value.clone());
                (x.row, old, None)
            }
            (None, Some(y)) => {
                let new = Some(y.row.value.clone());
                (y.row, None, new)
            }
            (None, None) => continue,
        };
        changes.push(AttributeChange {
            tag: row.tag,
            keyword: row.keyword,
            path: row.path,
            old,
            new,
        });
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::synth::{synth_instance, SynthSpec};
    use crate::dicom::tests::{small, ALL_SYNTAXES, PYDICOM};
    use crate::dicom::{analyze, Analysis};

    /// The header part of a file, as produced by the split.
    fn header(bytes: &[u8]) -> Vec<u8> {
        match analyze(bytes) {
            Analysis::Dicom(l) => {
                bytes[..l.pixel.map_or(bytes.len(), |p| p.element_start as usize)].to_vec()
            }
            Analysis::NotDicom { reason } => panic!("not DICOM: {reason}"),
        }
    }

    /// Replace the `nth` occurrence of `from` by `to` (same length).
    fn replace_nth(bytes: &mut [u8], from: &[u8], to: &[u8], nth: usize) {
        let at = bytes
            .windows(from.len())
            .enumerate()
            .filter(|(_, w)| *w == from)
            .nth(nth)
            .map(|(i, _)| i)
            .expect("occurrence present");
        bytes[at..at + to.len()].copy_from_slice(to);
    }

    #[test]
    fn diff_patient_name_and_nested_value() {
        for syntax in ALL_SYNTAXES {
            let old_spec = small(syntax);
            let mut new_spec = old_spec.clone();
            new_spec.patient_name = "FAKE^RENAMED".to_string();
            let old = synth_instance(&old_spec);
            let mut new = synth_instance(&new_spec);
            // CodeMeaning inside the second ReferencedImageSequence item
            replace_nth(&mut new, b"Localizer", b"Localized", 1);
            let changes = diff_headers(&header(&old), &header(&new)).expect("diff");
            assert_eq!(
                changes,
                vec![
                    AttributeChange {
                        tag: "(0008,0104)".to_string(),
                        keyword: "CodeMeaning".to_string(),
                        path: "ReferencedImageSequence[1].PurposeOfReferenceCodeSequence[0].CodeMeaning"
                            .to_string(),
                        old: Some("Localizer".to_string()),
                        new: Some("Localized".to_string()),
                    },
                    AttributeChange {
                        tag: "(0010,0010)".to_string(),
                        keyword: "PatientName".to_string(),
                        path: "PatientName".to_string(),
                        old: Some("FAKE^PATIENT0001".to_string()),
                        new: Some("FAKE^RENAMED".to_string()),
                    },
                ]
            );
        }
    }

    #[test]
    fn diff_includes_file_meta_and_additions() {
        let a = small(crate::dicom::synth::SynthSyntax::ExplicitLE);
        let mut b = a.clone();
        b.sop_uid = "2.25.1234".to_string();
        b.with_private = false;
        let changes =
            diff_headers(&header(&synth_instance(&a)), &header(&synth_instance(&b))).expect("diff");
        let find = |path: &str| changes.iter().find(|c| c.path == path).cloned();
        let meta = find("MediaStorageSOPInstanceUID").expect("file meta change");
        assert_eq!(meta.tag, "(0002,0003)");
        assert_eq!(meta.new.as_deref(), Some("2.25.1234"));
        assert!(find("SOPInstanceUID").is_some());
        assert!(find("FileMetaInformationGroupLength").is_some());
        let private = find("(0009,1001)").expect("removed private tag");
        assert_eq!(
            (private.keyword.as_str(), private.new.as_deref()),
            ("Private", None)
        );
        assert_eq!(private.old.as_deref(), Some("fake private value"));
        let nested = find("(0009,1010)[0].(0009,1011)").expect("removed nested private tag");
        assert_eq!(nested.old.as_deref(), Some("nested private value"));
        assert!(changes.iter().all(|c| c.old != c.new));
    }

    #[test]
    fn dump_lists_nested_and_meta_rows() {
        for syntax in ALL_SYNTAXES {
            let spec = small(syntax);
            let rows = dump_header(&header(&synth_instance(&spec))).expect("dump");
            let row = |path: &str| {
                rows.iter()
                    .find(|r| r.path == path)
                    .unwrap_or_else(|| panic!("{path}"))
            };
            assert_eq!(row("TransferSyntaxUID").tag, "(0002,0010)");
            assert_eq!(row("ReferencedImageSequence").value, "<2 items>");
            let r = row("ReferencedImageSequence[0].ReferencedSOPInstanceUID");
            assert_eq!(
                (r.tag.as_str(), r.keyword.as_str(), r.vr.as_str()),
                ("(0008,1155)", "ReferencedSOPInstanceUID", "UI")
            );
            assert_eq!(row("PatientName").value, spec.patient_name);
            assert_eq!(row("Rows").value, "24");
            assert_eq!(row("(0009,0010)").keyword, "PrivateCreator");
            assert!(
                rows.iter().all(|r| r.tag != "(7FE0,0010)"),
                "header has no pixel data"
            );
            // meta first, then tag order
            assert!(rows[0].tag.starts_with("(0002,"));
        }
    }

    #[test]
    fn shorten_and_keywords() {
        let long = "x".repeat(100);
        let s = shorten(&long);
        assert_eq!(s.chars().count(), 64);
        assert!(s.ends_with('…'));
        assert_eq!(shorten("a\nb"), "a b");
        assert_eq!(keyword_of((0x0010, 0x0010)), Some("PatientName"));
        assert_eq!(keyword_of((0x6002, 0x3000)), Some("OverlayData"));
        assert_eq!(path_name((0x6002, 0x3000)), "(6002,3000)");
        assert_eq!(keyword_of((0x0009, 0x1001)), None);
        assert_eq!(row_keyword((0x0009, 0x1001)), "Private");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            dump_header(b"not dicom"),
            Err(DicomError::Unsupported { .. })
        ));
        assert!(diff_headers(b"", b"").is_err());
        // a header the walker accepts but dicom-object rejects (no group length)
        let mut spec = small(crate::dicom::synth::SynthSyntax::ExplicitLE);
        spec.with_private = false;
        let file = synth_instance(&spec);
        let mut no_group_length = file[..132].to_vec();
        no_group_length.extend_from_slice(&file[144..]);
        assert!(matches!(
            dump_header(&no_group_length),
            Err(DicomError::Parse { .. })
        ));
        // a whole file: only the header part is listed
        let rows = dump_header(&file).expect("dump");
        assert!(rows.iter().all(|r| r.tag != "(7FE0,0010)"));
    }

    #[test]
    fn pydicom_headers_diff_to_nothing_against_themselves() {
        for name in [
            "CT_small.dcm",
            "MR_small_bigendian.dcm",
            "JPEG2000.dcm",
            "rtplan.dcm",
            "nested_priv_SQ.dcm",
        ] {
            let bytes = std::fs::read(format!("{PYDICOM}/{name}")).expect("test file");
            let h = header(&bytes);
            assert!(!dump_header(&h).expect("dump").is_empty());
            assert_eq!(diff_headers(&h, &h).expect("diff"), vec![], "{name}");
        }
        let _ = SynthSpec::ct(0, 0, 0, 0);
    }
}
