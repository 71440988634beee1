//! Three-way merge of DICOM headers, top-level element by top-level element.
//!
//! Two curators who corrected different attributes of the same instance on two branches
//! changed different top-level elements of its header. Each element (a sequence with all its
//! items) is a unit: one changed on one side only takes that side's bytes, one changed on both
//! sides to the same bytes is kept, and one changed on both sides differently is a conflict.
//! The file meta group (with the preamble before it) is one more unit. The merged header is
//! the units' bytes in tag order, as the data set requires, and must read as DICOM again.
//!
//! Splicing bytes is only sound when every unit is encoded alike, so headers are not merged
//! (the caller keeps the conflict) when:
//! - their transfer syntaxes differ (elements would mix encodings);
//! - Specific Character Set (0008,0005) differs (text of one side would be read in the
//!   other's character set).
//!
//! A group length (gggg,0000), which older writers put in front of each group, counts the
//! bytes of its group: it is not a unit of its own but follows its group. The merge has one
//! where the three-way rule on its presence says so; its value is this branch's (or the
//! other side's) when the merged group is byte for byte that side's, and counted anew
//! otherwise.
//!
//! Nor are they merged when Patient Identity Removed (0012,0062) differs between the two
//! sides: one side de-identified the instance, and what the other side added or changed has
//! not been through that de-identification (a patient's address added there would land in
//! the de-identified file).

use std::collections::{BTreeMap, BTreeSet};

use super::{analyze, walk, Analysis, DicomError, DicomSummary};

/// The key of the file meta group unit: no data set element has group 0002.
pub const FILE_META: (u16, u16) = (0x0002, 0x0000);
const SPECIFIC_CHARACTER_SET: (u16, u16) = (0x0008, 0x0005);
const PATIENT_IDENTITY_REMOVED: (u16, u16) = (0x0012, 0x0062);

/// The outcome of [`merge_headers`].
#[derive(Debug)]
pub enum HeaderMerge {
    /// The merged header, its summary, and the units ([`FILE_META`] for the file meta group)
    /// that only this side changed, only the other side, and both alike.
    Merged { header: Vec<u8>, summary: Box<DicomSummary>, changed: Changed },
    /// The units both sides changed, differently.
    Conflict(Vec<(u16, u16)>),
    /// Why these headers are not merged element by element.
    NotMergeable(String),
}

/// The units a merge took from each side.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Changed by this branch only.
    pub ours: Vec<(u16, u16)>,
    /// Changed by the other side only.
    pub theirs: Vec<(u16, u16)>,
    /// Changed by both, to the same bytes.
    pub both: Vec<(u16, u16)>,
    /// Changed by both differently, and settled with the side the caller chose.
    pub settled: Vec<(u16, u16)>,
}

/// The side that takes a unit both sides changed differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ours,
    Theirs,
}

/// A header's units (file meta group and top-level elements) by key.
type Units<'a> = BTreeMap<(u16, u16), &'a [u8]>;

/// The transfer syntax and units of one header.
fn units(header: &[u8]) -> Result<(String, Units<'_>), DicomError> {
    let t = walk::top_level(header)?;
    let mut m = BTreeMap::new();
    m.insert(FILE_META, &header[..t.dataset_start]);
    for (tag, range) in t.elements {
        m.insert(tag, &header[range]);
    }
    Ok((t.transfer_syntax, m))
}

/// Merge `ours` and `theirs`, two headers (a file's bytes before its top-level pixel data)
/// that both descend from `base`; with `settle`, a unit both changed differently takes that
/// side's bytes instead of being a conflict. Errors are for a header that does not walk as
/// DICOM.
pub fn merge_headers(base: &[u8], ours: &[u8], theirs: &[u8], settle: Option<Settle>) -> Result<HeaderMerge, DicomError> {
    let (b, o, t) = (units(base)?, units(ours)?, units(theirs)?);
    if b.0 != o.0 || o.0 != t.0 {
        return Ok(HeaderMerge::NotMergeable(format!("the transfer syntax differs (base {}, this branch {}, theirs {})", b.0, o.0, t.0)));
    }
    let big_endian = b.0 == walk::TS_EXPLICIT_BE;
    let (b, o, t) = (b.1, o.1, t.1);
    let charset = SPECIFIC_CHARACTER_SET;
    if b.get(&charset) != o.get(&charset) || o.get(&charset) != t.get(&charset) {
        return Ok(HeaderMerge::NotMergeable("Specific Character Set (0008,0005) changed".to_string()));
    }
    if o.get(&PATIENT_IDENTITY_REMOVED) != t.get(&PATIENT_IDENTITY_REMOVED) {
        return Ok(HeaderMerge::NotMergeable(
            "Patient Identity Removed (0012,0062) differs: one side de-identified the instance, and the other side's changes have not been through that de-identification".to_string(),
        ));
    }
    let keys: BTreeSet<(u16, u16)> = b.keys().chain(o.keys()).chain(t.keys()).copied().collect();
    let (mut merged, mut changed, mut conflicts) = (Vec::new(), Changed::default(), Vec::new());
    let mut group_lengths = Vec::new();
    for k in keys {
        let (vb, vo, vt) = (b.get(&k), o.get(&k), t.get(&k));
        if is_group_length(k) {
            // Present by the three-way rule on presence; its value is settled below.
            let (pb, po, pt) = (vb.is_some(), vo.is_some(), vt.is_some());
            if if po == pb { pt } else { po } {
                group_lengths.push(k);
            }
            continue;
        }
        let v = if vo == vt {
            if vo != vb {
                changed.both.push(k);
            }
            vo
        } else if vt == vb {
            changed.ours.push(k);
            vo
        } else if vo == vb {
            changed.theirs.push(k);
            vt
        } else if let Some(side) = settle {
            changed.settled.push(k);
            if side == Settle::Ours { vo } else { vt }
        } else {
            conflicts.push(k);
            continue;
        };
        if let Some(v) = v {
            merged.push((k, *v));
        }
    }
    if !conflicts.is_empty() {
        return Ok(HeaderMerge::Conflict(conflicts));
    }
    let mut counted = Vec::new();
    for g in group_lengths {
        match group_length(g, &merged, [&o, &t], big_endian) {
            Some(v) => counted.push((g, v)),
            None => return Ok(HeaderMerge::NotMergeable(format!("group length {} is not a 4-byte UL", super::tag_string(g)))),
        }
    }
    merged.extend(counted.iter().map(|(k, v)| (*k, v.as_slice())));
    // The file meta group (every side has one, so the merge has one) first, then the data
    // set in tag order.
    merged.sort_by_key(|(k, _)| (*k != FILE_META, *k));
    let header: Vec<u8> = merged.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    match analyze(&header) {
        Analysis::Dicom(layout) if layout.pixel.is_none() => {
            Ok(HeaderMerge::Merged { header, summary: Box::new(layout.summary), changed })
        }
        Analysis::Dicom(_) => Ok(HeaderMerge::NotMergeable("the merged header holds pixel data".to_string())),
        Analysis::NotDicom { reason } => Ok(HeaderMerge::NotMergeable(format!("the merged header does not read as DICOM: {reason}"))),
    }
}

fn is_group_length(k: (u16, u16)) -> bool {
    k.1 == 0 && k != FILE_META
}

/// The bytes of group length `g` in the merged `units`: a side's own (first this branch's,
/// then the other's) when the merged group is byte for byte that side's, else that side's
/// element with the group's bytes counted anew. `None` when the element is not 12 bytes (tag,
/// VR UL or implicit, length 4, value), the only form with the value at offset 8.
fn group_length(g: (u16, u16), units: &[((u16, u16), &[u8])], sides: [&Units<'_>; 2], big_endian: bool) -> Option<Vec<u8>> {
    // (Both in tag order: the merged units as the merge makes them, a side's by its map.)
    let in_group = |k: &(u16, u16)| k.0 == g.0 && *k != g;
    let merged = || units.iter().filter(|(k, _)| in_group(k)).map(|(k, v)| (*k, *v));
    for side in sides {
        let Some(own) = side.get(&g) else { continue };
        if side.iter().filter(|(k, _)| in_group(k)).map(|(k, v)| (*k, *v)).eq(merged()) {
            return Some(own.to_vec());
        }
    }
    let template = sides.iter().find_map(|s| s.get(&g))?;
    if template.len() != 12 {
        return None;
    }
    let n = u32::try_from(merged().map(|(_, v)| v.len()).sum::<usize>()).ok()?;
    let mut out = template.to_vec();
    out[8..].copy_from_slice(&if big_endian { n.to_be_bytes() } else { n.to_le_bytes() });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::synth::{synth_instance, SynthSpec, SynthSyntax};

    fn spec(syntax: SynthSyntax) -> SynthSpec {
        let mut s = SynthSpec::ct(3, 0, 0, 1);
        (s.rows, s.columns, s.syntax) = (8, 8, syntax);
        s
    }

    /// The bytes of a file before its pixel data.
    fn header(s: &SynthSpec) -> Vec<u8> {
        let bytes = synth_instance(s);
        match analyze(&bytes) {
            Analysis::Dicom(l) => bytes[..l.pixel.unwrap().element_start as usize].to_vec(),
            Analysis::NotDicom { reason } => panic!("{reason}"),
        }
    }

    /// `bytes` with `element` put at the start of the data set.
    fn with_first(bytes: &[u8], element: &[u8]) -> Vec<u8> {
        with_element_at(bytes, walk::top_level(bytes).unwrap().dataset_start, element)
    }

    #[test]
    fn headers_in_every_syntax_merge_to_the_header_with_both_changes() {
        for syntax in [SynthSyntax::ExplicitLE, SynthSyntax::ImplicitLE, SynthSyntax::ExplicitBE, SynthSyntax::EncapsulatedJpegBaseline] {
            let base = spec(syntax.clone());
            let (mut ours, mut theirs, mut both) = (base.clone(), base.clone(), base.clone());
            ours.patient_name = "FAKE^A^LONGER^NAME".into();
            ours.with_private = false;
            theirs.study_description = "X".into();
            theirs.sop_uid = "2.25.42".into();
            both.patient_name = ours.patient_name.clone();
            both.with_private = false;
            both.study_description = "X".into();
            both.sop_uid = "2.25.42".into();
            let got = merge_headers(&header(&base), &header(&ours), &header(&theirs), None).unwrap();
            let HeaderMerge::Merged { header: h, summary, changed: Changed { ours: o, theirs: t, both: alike, .. } } = got else { panic!("{syntax:?}: {got:?}") };
            assert!(alike.is_empty());
            assert!(h == header(&both), "{syntax:?}");
            assert_eq!((summary.patient_name.as_deref(), summary.sop_instance_uid.as_deref()), (Some("FAKE^A^LONGER^NAME"), Some("2.25.42")));
            // Private tags went with ours; the file meta (its SOP Instance UID) with theirs.
            assert!(o.contains(&(0x0010, 0x0010)) && o.iter().any(|k| k.0 == 0x0009), "{o:?}");
            assert_eq!(t, [FILE_META, (0x0008, 0x0018), (0x0008, 0x1030)], "{syntax:?}");
            // Merging in the other direction gives the same header.
            let HeaderMerge::Merged { header: back, .. } = merge_headers(&header(&base), &header(&theirs), &header(&ours), None).unwrap() else { panic!() };
            assert!(back == h);
        }
    }

    /// `h` with a group length (with its right value) in front of group `g`.
    fn with_group_length(h: &[u8], g: u16) -> Vec<u8> {
        let t = walk::top_level(h).unwrap();
        let group: Vec<_> = t.elements.iter().filter(|(k, _)| k.0 == g).collect();
        let n: usize = group.iter().map(|(_, r)| r.len()).sum();
        let [lo, hi] = g.to_le_bytes();
        let element = [&[lo, hi, 0, 0, b'U', b'L', 4, 0][..], &(n as u32).to_le_bytes()].concat();
        with_element_at(h, group[0].1.start, &element)
    }

    fn with_element_at(h: &[u8], at: usize, element: &[u8]) -> Vec<u8> {
        [&h[..at], element, &h[at..]].concat()
    }

    #[test]
    fn group_lengths_follow_their_group() {
        let base = spec(SynthSyntax::ExplicitLE);
        let (mut ours, mut theirs) = (base.clone(), base.clone());
        ours.institution_name = "FAKE CLINIC WITH A LONGER NAME".into();
        theirs.study_description = "Z".into();
        let mut both = ours.clone();
        both.study_description = "Z".into();
        let gl = |s: &SynthSpec| with_group_length(&with_group_length(&header(s), 0x0008), 0x0010);
        // Both sides changed group 0008: its length is counted anew; group 0010 is as it was.
        let HeaderMerge::Merged { header: h, changed, .. } = merge_headers(&gl(&base), &gl(&ours), &gl(&theirs), None).unwrap() else { panic!() };
        assert!(h == gl(&both));
        assert_eq!(changed, Changed { ours: vec![(0x0008, 0x0080)], theirs: vec![(0x0008, 0x1030)], ..Default::default() });
        // Only one side changed group 0008: that side's bytes, even where the value is wrong.
        let wrong = |s: &SynthSpec| {
            let mut h = gl(s);
            let at = walk::top_level(&h).unwrap().elements.iter().find(|(k, _)| *k == (0x0008, 0)).unwrap().1.start;
            h[at + 8] ^= 0x10;
            h
        };
        let mut other = base.clone();
        other.patient_name = "FAKE^Q".into();
        let HeaderMerge::Merged { header: h, .. } = merge_headers(&wrong(&base), &wrong(&theirs), &wrong(&other), None).unwrap() else { panic!() };
        let mut expect = theirs.clone();
        expect.patient_name = "FAKE^Q".into();
        assert!(h == wrong(&expect));
    }

    #[test]
    fn what_cannot_be_spliced_is_not_merged() {
        let base = spec(SynthSyntax::ExplicitLE);
        let mut ours = base.clone();
        ours.patient_name = "FAKE^B".into();
        let (hb, ho) = (header(&base), header(&ours));
        // The same element changed differently.
        let mut other = base.clone();
        other.patient_name = "FAKE^C".into();
        assert!(matches!(merge_headers(&hb, &ho, &header(&other), None).unwrap(), HeaderMerge::Conflict(t) if t == [(0x0010, 0x0010)]));
        // ... unless settled: that side's bytes.
        for (side, want) in [(Settle::Ours, &ho), (Settle::Theirs, &header(&other))] {
            let HeaderMerge::Merged { header: h, changed, .. } = merge_headers(&hb, &ho, &header(&other), Some(side)).unwrap() else { panic!() };
            assert!(h == *want && changed.settled == [(0x0010, 0x0010)], "{side:?}");
        }
        // Another transfer syntax.
        let implicit = header(&SynthSpec { syntax: SynthSyntax::ImplicitLE, ..base.clone() });
        assert!(matches!(merge_headers(&hb, &ho, &implicit, None).unwrap(), HeaderMerge::NotMergeable(r) if r.contains("transfer syntax differs")));
        // The character set changed on one side (Latin-1 to UTF-8).
        let at = hb.windows(10).position(|w| w == b"ISO_IR 100").unwrap();
        let utf8 = [&hb[..at], b"ISO_IR 192", &hb[at + 10..]].concat();
        assert!(matches!(merge_headers(&hb, &ho, &utf8, None).unwrap(), HeaderMerge::NotMergeable(r) if r.contains("Specific Character Set")));
        // One side de-identified (Patient Identity Removed added), the other added an
        // attribute: not merged, or the address would land in the de-identified file.
        let deid = with_first(&hb, &[0x12, 0, 0x62, 0, b'C', b'S', 4, 0, b'Y', b'E', b'S', b' ']);
        let address = [&hb[..], &[0x10, 0, 0x40, 0x10, b'L', b'O', 4, 0, b'H', b'O', b'M', b'E']].concat();
        assert!(matches!(merge_headers(&hb, &deid, &address, None).unwrap(), HeaderMerge::NotMergeable(r) if r.contains("(0012,0062)")));
        assert!(matches!(merge_headers(&hb, &address, &deid, None).unwrap(), HeaderMerge::NotMergeable(r) if r.contains("(0012,0062)")));
        // Damaged input is an error, never a panic.
        for cut in (0..ho.len()).step_by(7) {
            let _ = merge_headers(&hb, &ho[..cut], &hb, None);
        }
        assert!(merge_headers(&hb, b"not DICOM at all", &hb, None).is_err());
    }
}
