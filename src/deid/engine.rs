//! The transformation of one header.
//!
//! Dummy values written for action D, per VR: PN `ANONYMOUS`; DA `19000101`; TM `000000`;
//! DT `19000101000000`; AS `000Y`; IS/DS `0`; AE/CS/SH/LO/ST/LT/UT/UC `ANONYMIZED`;
//! UR `urn:anonymized`; binary numbers a single 0; OB/UN/OW/OF/OD/OL/OV two or more zero bytes;
//! AT (0000,0000); UI the UID pseudonym; SQ one empty item.

use std::collections::{BTreeSet, HashMap, HashSet};

use dicom_core::dictionary::DataDictionary;
use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::mem::InMemElement;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::pixel::PixelFacts;
use crate::dicom::DecodedPixels;
use super::profile::Action;
use super::report::{InstanceReport, ReportAction, ReportEntry};
use super::text::{self, Scrubber};
use super::{
    pseudonym, BurnedIn, DeidError, DeidOption, DeidOutput, Deidentifier, PixelInput,
    BASIC_PROFILE_CODE, BASIC_PROFILE_MEANING, IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME, PROFILE_REVISION,
};

type Elem = InMemElement<StandardDataDictionary>;
type Obj = InMemDicomObject<StandardDataDictionary>;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

const PIXEL_TAGS: [Tag; 3] = [
    tags::PIXEL_DATA,
    tags::FLOAT_PIXEL_DATA,
    tags::DOUBLE_FLOAT_PIXEL_DATA,
];

/// `(gggg,eeee)`.
pub(crate) fn tag_text(tag: Tag) -> String {
    format!("({:04X},{:04X})", tag.group(), tag.element())
}

fn keyword(tag: Tag) -> String {
    if tag.group() % 2 == 1 {
        if (0x0010..=0x00FF).contains(&tag.element()) {
            return "PrivateCreator".into();
        }
        return "PrivateAttribute".into();
    }
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.alias.to_string())
        .unwrap_or_default()
}

fn join(path: &str, tag: Tag) -> String {
    if path.is_empty() {
        tag_text(tag)
    } else {
        format!("{path}/{}", tag_text(tag))
    }
}

fn first_str(obj: &Obj, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = e.value().to_str().ok()?;
    let s = pseudonym::normalise(&s).to_string();
    Some(s)
}

fn first_u32(obj: &Obj, tag: Tag) -> Option<u32> {
    obj.get(tag)?.value().to_int::<u32>().ok()
}

fn is_text_vr(vr: VR) -> bool {
    matches!(vr, VR::SH | VR::LO | VR::ST | VR::LT | VR::UT | VR::UC)
}

fn strs(values: Vec<String>) -> PrimitiveValue {
    PrimitiveValue::Strs(values.into_iter().collect())
}

fn values_of(elem: &Elem) -> Vec<String> {
    match elem.value() {
        Value::Primitive(PrimitiveValue::Empty) => Vec::new(),
        Value::Primitive(p) => p.to_multi_str().iter().map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    }
}

struct Ctx<'a> {
    d: &'a Deidentifier,
    pseudo_patient: String,
    offset: i64,
    scrubber: Scrubber,
    entries: Vec<ReportEntry>,
    untouched: usize,
    notes: BTreeSet<String>,
}

impl Ctx<'_> {
    fn entry(&mut self, tag: Tag, path: &str, action: ReportAction, rule: &str) {
        self.entries.push(ReportEntry {
            tag: tag_text(tag),
            keyword: keyword(tag),
            path: path.to_string(),
            action,
            rule: rule.to_string(),
        });
    }

    fn process_object(
        &mut self,
        obj: &Obj,
        path: &str,
        clean: bool,
        depth: usize,
    ) -> Result<Obj, DeidError> {
        let mut out = Obj::new_empty();
        let creators: HashMap<(u16, u8), String> = obj
            .iter()
            .filter(|e| e.tag().group() % 2 == 1 && (0x10..=0xFF).contains(&e.tag().element()))
            .filter_map(|e| {
                let c = e.value().to_str().ok()?;
                Some((
                    (e.tag().group(), e.tag().element() as u8),
                    c.trim().to_string(),
                ))
            })
            .collect();
        let retain_safe = self.d.has(DeidOption::RetainSafePrivate);
        let mut kept_blocks = HashSet::new();
        if retain_safe {
            for e in obj.iter() {
                let t = e.tag();
                if t.group() % 2 == 1 && t.element() >= 0x1000 {
                    let block = (t.element() >> 8) as u8;
                    if let Some(c) = creators.get(&(t.group(), block)) {
                        if self.d.safe_private.is_safe(t.group(), c, t.element() as u8) {
                            kept_blocks.insert((t.group(), block));
                        }
                    }
                }
            }
        }
        for elem in obj.iter() {
            let tag = elem.tag();
            let epath = join(path, tag);
            if tag.group() % 2 == 1 {
                self.private(elem, &epath, &creators, &kept_blocks, depth, &mut out)?;
                continue;
            }
            if tag.element() == 0x0000 {
                self.entry(tag, &epath, ReportAction::Removed, "group-length");
                continue;
            }
            if depth == 0 && (tag == tags::PATIENT_ID || tag == tags::PATIENT_NAME) {
                continue; // set after processing
            }
            if depth > 0 && tag == tags::PATIENT_ID && !matches!(elem.value(), Value::Sequence(_)) {
                let vals = values_of(elem);
                if vals.iter().all(|v| pseudonym::normalise(v).is_empty()) {
                    out.put(DataElement::new(tag, elem.vr(), PrimitiveValue::Empty));
                    self.entry(tag, &epath, ReportAction::Emptied, "basic:Z/D");
                } else {
                    let mapped = vals.iter().map(|v| self.d.pseudonym_patient(v)).collect();
                    out.put(DataElement::new(tag, elem.vr(), strs(mapped)));
                    self.entry(tag, &epath, ReportAction::Replaced, "patient-pseudonym");
                }
                continue;
            }
            match self.d.profile.row(tag) {
                Some(row) => {
                    let (act, opt) = row.resolve(&self.d.config.options);
                    let rule = match opt {
                        Some(o) => format!("{}:{}", o.name(), act.code()),
                        None => format!("basic:{}", act.code()),
                    };
                    self.apply(
                        elem,
                        act,
                        opt.is_some(),
                        &rule,
                        &epath,
                        clean,
                        depth,
                        &mut out,
                    )?;
                }
                None => self.keep_unlisted(elem, &epath, clean, depth, &mut out)?,
            }
        }
        Ok(out)
    }

    fn recurse(
        &mut self,
        elem: &Elem,
        path: &str,
        clean: bool,
        depth: usize,
    ) -> Result<Elem, DeidError> {
        let items = elem.items().unwrap_or(&[]);
        let mut new_items = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            new_items.push(self.process_object(item, &format!("{path}[{i}]"), clean, depth + 1)?);
        }
        Ok(DataElement::new(
            elem.tag(),
            VR::SQ,
            Value::Sequence(DataSetSequence::new(new_items, Length::UNDEFINED)),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        elem: &Elem,
        act: Action,
        by_option: bool,
        rule: &str,
        path: &str,
        clean: bool,
        depth: usize,
        out: &mut Obj,
    ) -> Result<(), DeidError> {
        let tag = elem.tag();
        let is_seq = matches!(elem.value(), Value::Sequence(_));
        match act {
            Action::K => {
                if is_seq {
                    let e = self.recurse(elem, path, clean, depth)?;
                    out.put(e);
                } else {
                    out.put(elem.clone());
                }
                if by_option {
                    self.entry(tag, path, ReportAction::KeptByOption, rule);
                } else {
                    self.untouched += 1;
                }
            }
            Action::X | Action::XZ | Action::XD | Action::XZD => {
                self.entry(tag, path, ReportAction::Removed, rule);
            }
            Action::Z | Action::ZD => {
                out.put(empty_of(elem));
                self.entry(tag, path, ReportAction::Emptied, rule);
            }
            Action::D => {
                let (e, action) = self.dummy(elem);
                out.put(e);
                self.entry(tag, path, action, rule);
            }
            Action::U => {
                if is_seq {
                    let e = self.recurse(elem, path, clean, depth)?;
                    out.put(e);
                    self.untouched += 1;
                } else if elem.vr() == VR::UI {
                    out.put(self.replace_uids(elem));
                    self.entry(tag, path, ReportAction::Replaced, rule);
                } else {
                    let (e, action) = self.dummy(elem);
                    out.put(e);
                    self.entry(tag, path, action, rule);
                }
            }
            Action::XZUStar => {
                if is_seq {
                    // keep the sequence, replace the instance UIDs it contains (U*)
                    let e = self.recurse(elem, path, clean, depth)?;
                    out.put(e);
                    self.untouched += 1;
                } else {
                    self.entry(tag, path, ReportAction::Removed, rule);
                }
            }
            Action::C => self.clean_element(elem, rule, path, depth, out)?,
        }
        Ok(())
    }

    fn replace_uids(&self, elem: &Elem) -> Elem {
        let mapped: Vec<String> = values_of(elem)
            .iter()
            .map(|v| {
                let v = pseudonym::normalise(v);
                if v.is_empty() {
                    String::new()
                } else {
                    self.d.pseudonym_uid(v)
                }
            })
            .collect();
        if mapped.is_empty() {
            return DataElement::new(elem.tag(), VR::UI, PrimitiveValue::Empty);
        }
        DataElement::new(elem.tag(), VR::UI, strs(mapped))
    }

    fn dummy(&self, elem: &Elem) -> (Elem, ReportAction) {
        let tag = elem.tag();
        let vr = elem.vr();
        if matches!(elem.value(), Value::Sequence(_)) {
            let seq = DataSetSequence::new(vec![Obj::new_empty()], Length::UNDEFINED);
            return (
                DataElement::new(tag, VR::SQ, Value::Sequence(seq)),
                ReportAction::Dummy,
            );
        }
        if vr == VR::UI {
            return (self.replace_uids(elem), ReportAction::Replaced);
        }
        (
            DataElement::new(tag, vr, dummy_value(vr)),
            ReportAction::Dummy,
        )
    }

    fn clean_element(
        &mut self,
        elem: &Elem,
        rule: &str,
        path: &str,
        depth: usize,
        out: &mut Obj,
    ) -> Result<(), DeidError> {
        let tag = elem.tag();
        let vr = elem.vr();
        if matches!(elem.value(), Value::Sequence(_)) {
            let e = self.recurse(elem, path, true, depth)?;
            out.put(e);
            self.entry(tag, path, ReportAction::Cleaned, rule);
            return Ok(());
        }
        let vals = if is_text_vr(vr) || matches!(vr, VR::DA | VR::DT | VR::AE) {
            values_of(elem)
        } else {
            Vec::new()
        };
        match vr {
            VR::DA | VR::DT => {
                let shifted: Option<Vec<String>> = vals
                    .iter()
                    .map(|v| {
                        if vr == VR::DA {
                            text::shift_da(v, self.offset)
                        } else {
                            text::shift_dt(v, self.offset)
                        }
                    })
                    .collect();
                match shifted {
                    Some(v) if !v.is_empty() => {
                        out.put(DataElement::new(tag, vr, strs(v)));
                        self.entry(tag, path, ReportAction::Shifted, rule);
                    }
                    Some(_) => {
                        out.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
                        self.entry(tag, path, ReportAction::Emptied, rule);
                    }
                    None => {
                        out.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
                        self.entry(tag, path, ReportAction::Emptied, rule);
                        self.notes.insert(format!(
                            "{}: unparsable date emptied instead of shifted",
                            tag_text(tag)
                        ));
                    }
                }
            }
            VR::TM => {
                out.put(elem.clone());
                self.entry(tag, path, ReportAction::KeptByOption, rule);
            }
            VR::AE => {
                let mapped = vals
                    .iter()
                    .map(|v| pseudonym::ae_title(self.d.key(), v))
                    .collect();
                out.put(DataElement::new(tag, vr, strs(mapped)));
                self.entry(tag, path, ReportAction::Cleaned, rule);
            }
            VR::PN => {
                out.put(DataElement::new(tag, vr, dummy_value(VR::PN)));
                self.entry(tag, path, ReportAction::Cleaned, rule);
            }
            VR::UI => {
                out.put(self.replace_uids(elem));
                self.entry(tag, path, ReportAction::Replaced, rule);
            }
            v if is_text_vr(v) => {
                let limit = text::max_len(v);
                let cleaned: Vec<String> =
                    vals.iter().map(|s| self.scrubber.clean(s, limit)).collect();
                out.put(DataElement::new(tag, vr, strs(cleaned)));
                self.entry(tag, path, ReportAction::Cleaned, rule);
            }
            VR::UN => {
                // a value of unknown encoding cannot be cleaned: remove it
                self.entry(tag, path, ReportAction::Removed, &format!("{rule} (VR UN)"));
            }
            _ => {
                // numbers, bitmaps (overlay data), curve samples: nothing textual to clean
                out.put(elem.clone());
                self.entry(tag, path, ReportAction::KeptByOption, rule);
            }
        }
        Ok(())
    }

    fn keep_unlisted(
        &mut self,
        elem: &Elem,
        path: &str,
        clean: bool,
        depth: usize,
        out: &mut Obj,
    ) -> Result<(), DeidError> {
        let tag = elem.tag();
        let vr = elem.vr();
        if matches!(elem.value(), Value::Sequence(_)) {
            let e = self.recurse(elem, path, clean, depth)?;
            out.put(e);
            self.untouched += 1;
            return Ok(());
        }
        if vr == VR::PN {
            // any person name is at risk (PS3.15 E.3.5 note 3), listed in the table or not
            let vals = values_of(elem);
            if vals.iter().any(|v| !pseudonym::normalise(v).is_empty()) {
                out.put(DataElement::new(tag, vr, dummy_value(VR::PN)));
                self.entry(tag, path, ReportAction::Dummy, "unlisted-person-name");
                return Ok(());
            }
        }
        if clean && is_text_vr(vr) {
            let vals = values_of(elem);
            let limit = text::max_len(vr);
            let cleaned: Vec<String> = vals.iter().map(|s| self.scrubber.clean(s, limit)).collect();
            let changed = cleaned
                .iter()
                .zip(vals.iter())
                .any(|(a, b)| a.as_str() != b.trim_end_matches([' ', '\0']));
            if changed {
                out.put(DataElement::new(tag, vr, strs(cleaned)));
                self.entry(tag, path, ReportAction::Cleaned, "cleaned-sequence-content");
                return Ok(());
            }
        }
        out.put(elem.clone());
        self.untouched += 1;
        Ok(())
    }

    fn private(
        &mut self,
        elem: &Elem,
        path: &str,
        creators: &HashMap<(u16, u8), String>,
        kept_blocks: &HashSet<(u16, u8)>,
        depth: usize,
        out: &mut Obj,
    ) -> Result<(), DeidError> {
        let tag = elem.tag();
        let (g, el) = (tag.group(), tag.element());
        let private_row = self.d.profile.private_row();
        let (act, opt) = match private_row {
            Some(r) => r.resolve(&self.d.config.options),
            None => (Action::X, None),
        };
        if opt == Some(DeidOption::RetainSafePrivate) {
            let rule = format!("retain-safe-private:{}", act.code());
            if (0x10..=0xFF).contains(&el) && kept_blocks.contains(&(g, el as u8)) {
                out.put(elem.clone());
                self.entry(tag, path, ReportAction::KeptByOption, &rule);
                return Ok(());
            }
            if el >= 0x1000 {
                let block = (el >> 8) as u8;
                if let Some(c) = creators.get(&(g, block)) {
                    if self.d.safe_private.is_safe(g, c, el as u8) {
                        if matches!(elem.value(), Value::Sequence(_)) {
                            let e = self.recurse(elem, path, false, depth)?;
                            out.put(e);
                        } else {
                            out.put(elem.clone());
                        }
                        self.entry(tag, path, ReportAction::KeptByOption, &rule);
                        return Ok(());
                    }
                }
            }
            self.entry(tag, path, ReportAction::Removed, "private-not-in-safe-list");
            return Ok(());
        }
        self.entry(
            tag,
            path,
            ReportAction::Removed,
            &format!("basic:{}", act.code()),
        );
        Ok(())
    }
}

fn empty_of(elem: &Elem) -> Elem {
    if matches!(elem.value(), Value::Sequence(_)) {
        DataElement::new(
            elem.tag(),
            VR::SQ,
            Value::Sequence(DataSetSequence::empty()),
        )
    } else {
        DataElement::new(elem.tag(), elem.vr(), PrimitiveValue::Empty)
    }
}

/// A dummy value valid for the VR (non-zero length).
pub(crate) fn dummy_value(vr: VR) -> PrimitiveValue {
    match vr {
        VR::PN => PrimitiveValue::from("ANONYMOUS"),
        VR::DA => PrimitiveValue::from("19000101"),
        VR::TM => PrimitiveValue::from("000000"),
        VR::DT => PrimitiveValue::from("19000101000000"),
        VR::AS => PrimitiveValue::from("000Y"),
        VR::IS | VR::DS => PrimitiveValue::from("0"),
        VR::UR => PrimitiveValue::from("urn:anonymized"),
        VR::UI => PrimitiveValue::from("2.25.0"),
        VR::US => PrimitiveValue::U16([0].into_iter().collect()),
        VR::SS => PrimitiveValue::I16([0].into_iter().collect()),
        VR::UL => PrimitiveValue::U32([0].into_iter().collect()),
        VR::SL => PrimitiveValue::I32([0].into_iter().collect()),
        VR::UV => PrimitiveValue::U64([0].into_iter().collect()),
        VR::SV => PrimitiveValue::I64([0].into_iter().collect()),
        VR::FL => PrimitiveValue::F32([0.0].into_iter().collect()),
        VR::FD => PrimitiveValue::F64([0.0].into_iter().collect()),
        VR::AT => PrimitiveValue::Tags([Tag(0, 0)].into_iter().collect()),
        VR::OW => PrimitiveValue::U16([0].into_iter().collect()),
        VR::OF => PrimitiveValue::F32([0.0].into_iter().collect()),
        VR::OD => PrimitiveValue::F64([0.0].into_iter().collect()),
        VR::OL => PrimitiveValue::U32([0].into_iter().collect()),
        VR::OV => PrimitiveValue::U64([0].into_iter().collect()),
        VR::OB | VR::UN => PrimitiveValue::U8([0, 0].into_iter().collect()),
        _ => PrimitiveValue::from("ANONYMIZED"),
    }
}

fn collect_identifiers(d: &Deidentifier, obj: &Obj, s: &mut Scrubber) {
    for e in obj.iter() {
        let tag = e.tag();
        match e.value() {
            Value::Sequence(seq) => {
                for item in seq.items() {
                    collect_identifiers(d, item, s);
                }
            }
            Value::Primitive(_) if tag.group() % 2 == 0 => {
                let vr = e.vr();
                if vr == VR::PN {
                    for v in &values_of(e) {
                        s.add_value(v, 2);
                    }
                } else if vr == VR::DA {
                    for v in &values_of(e) {
                        for part in v.split('-') {
                            s.add_date(part);
                        }
                    }
                } else if matches!(
                    vr,
                    VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC | VR::AE
                ) {
                    if let Some(row) = d.profile.row(tag) {
                        let descriptive = row.options.contains_key(&DeidOption::CleanDescriptors)
                            || row
                                .options
                                .contains_key(&DeidOption::CleanStructuredContent)
                            || row.options.contains_key(&DeidOption::CleanGraphics);
                        if row.basic != Action::K && !descriptive {
                            for v in &values_of(e) {
                                s.add_value(v, 4);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn pixel_facts(obj: &Obj) -> PixelFacts {
    PixelFacts {
        burned_in_annotation: first_str(obj, tags::BURNED_IN_ANNOTATION),
        modality: first_str(obj, tags::MODALITY),
        sop_class_uid: first_str(obj, tags::SOP_CLASS_UID),
        manufacturer: first_str(obj, tags::MANUFACTURER),
        model: first_str(obj, tags::MANUFACTURER_MODEL_NAME),
        rows: first_u32(obj, tags::ROWS),
        columns: first_u32(obj, tags::COLUMNS),
        samples_per_pixel: first_u32(obj, tags::SAMPLES_PER_PIXEL),
        bits_allocated: first_u32(obj, tags::BITS_ALLOCATED),
        planar_configuration: first_u32(obj, tags::PLANAR_CONFIGURATION),
        number_of_frames: first_u32(obj, tags::NUMBER_OF_FRAMES),
        photometric: first_str(obj, tags::PHOTOMETRIC_INTERPRETATION),
    }
}

/// The largest pixel data (all frames) decoded to be cleaned: a 200-frame 640 x 480 RGB
/// ultrasound clip is 184 MB. Compressed bytes do not bound the decoded size, so the header's
/// geometry is checked against this before anything is decoded.
const MAX_DECODED_PIXELS: usize = 1 << 30;

/// Decode encapsulated pixel data (the value: basic offset table item, fragment items,
/// sequence delimiter) of the instance whose header is `file`, with the codecs of
/// `dicom-pixeldata`, under `catch_unwind`. All frames, interleaved samples.
fn decode_encapsulated(file: &dicom_object::DefaultDicomObject, facts: &PixelFacts, value: &[u8]) -> Result<DecodedPixels, String> {
    let frames = facts.number_of_frames.unwrap_or(1).max(1) as usize;
    let size = [facts.rows, facts.columns, facts.samples_per_pixel.or(Some(1)), facts.bits_allocated.map(|b| b.div_ceil(8))]
        .into_iter()
        .try_fold(frames, |acc, v| v.and_then(|v| acc.checked_mul(v as usize)))
        .ok_or("Rows, Columns or BitsAllocated missing, or the size overflows")?;
    if size > MAX_DECODED_PIXELS {
        return Err(format!("the pixel data would decode to {size} bytes (more than {MAX_DECODED_PIXELS})"));
    }
    let mut items = Vec::new();
    let mut at = 0usize;
    while at + 8 <= value.len() {
        let tag = (u16::from_le_bytes([value[at], value[at + 1]]), u16::from_le_bytes([value[at + 2], value[at + 3]]));
        let len = u32::from_le_bytes([value[at + 4], value[at + 5], value[at + 6], value[at + 7]]) as usize;
        at += 8;
        match tag {
            (0xFFFE, 0xE0DD) => break,
            (0xFFFE, 0xE000) if len <= value.len() - at => {
                items.push(value[at..at + len].to_vec());
                at += len;
            }
            _ => return Err(format!("the encapsulated pixel data has no valid item at byte {}", at - 8)),
        }
    }
    if items.is_empty() {
        return Err("the encapsulated pixel data has no basic offset table item".into());
    }
    let table = items.remove(0);
    let offsets: Vec<u32> = table.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let mut f = file.clone();
    f.put(DataElement::new(tags::PIXEL_DATA, VR::OB, dicom_core::value::PixelFragmentSequence::new(offsets, items)));
    crate::dicom::decode_pixel_data(&f, None).map_err(|why| format!("its pixel data cannot be decoded: {why}"))
}

/// The Pixel Data element header of native pixel bytes (padded to even length by the caller).
fn native_pixel_element(bits_allocated: u16, len: usize) -> Result<Vec<u8>, String> {
    let len = u32::try_from(len).map_err(|_| format!("{len} bytes of pixel data do not fit one element"))?;
    let mut e = vec![0xE0, 0x7F, 0x10, 0x00];
    e.extend_from_slice(if bits_allocated > 8 { b"OW" } else { b"OB" });
    e.extend_from_slice(&[0, 0]);
    e.extend_from_slice(&len.to_le_bytes());
    Ok(e)
}

/// Decide the burned-in status and clean pixels if required and possible. Compressed pixel
/// data is decoded to be cleaned (and then written native, in the layout the returned
/// [`DecodedPixels`] says; its `data` is moved out, what is left is that layout).
fn burned_in(
    d: &Deidentifier,
    facts: &PixelFacts,
    file: &dicom_object::DefaultDicomObject,
    pixel: Option<PixelInput<'_>>,
) -> (BurnedIn, Option<Vec<u8>>, Option<String>, Option<DecodedPixels>) {
    let flag = facts.flag_reason();
    if !d.has(DeidOption::CleanPixelData) {
        return match flag {
            Some(reason) => (BurnedIn::Flagged { reason }, None, None, None),
            None => (BurnedIn::NotFlagged, None, None, None),
        };
    }
    let rule = d.config.pixel_rules.iter().find(|r| facts.matches(r));
    let Some(rule) = rule else {
        return match flag {
            Some(reason) => (
                BurnedIn::NotCleaned {
                    reason: format!("{reason}; no pixel rule matches"),
                },
                None,
                None,
                None,
            ),
            None => (BurnedIn::NotFlagged, None, None, None),
        };
    };
    let name = Some(rule.name.clone());
    let not_cleaned = |why: String| (BurnedIn::NotCleaned { reason: format!("rule {:?} matches but {why}", rule.name) }, None, name.clone(), None);
    let Some(p) = pixel else {
        return not_cleaned("no pixel data was supplied".into());
    };
    let (native, decoded) = if p.encapsulated {
        match decode_encapsulated(file, facts, p.bytes) {
            Ok(mut d) => (std::borrow::Cow::Owned(std::mem::take(&mut d.data)), Some(d)),
            Err(why) => return not_cleaned(why),
        }
    } else {
        (std::borrow::Cow::Borrowed(p.bytes), None)
    };
    let layout = match &decoded {
        Some(info) => PixelFacts {
            photometric: Some(info.photometric.clone()),
            samples_per_pixel: Some(u32::from(info.samples_per_pixel)),
            bits_allocated: Some(u32::from(info.bits_allocated)),
            planar_configuration: Some(0),
            ..facts.clone()
        },
        None => facts.clone(),
    };
    match layout.blank(&native, rule) {
        Ok(mut bytes) => {
            if bytes.len() % 2 == 1 {
                bytes.push(0);
            }
            (BurnedIn::Cleaned { rule: rule.name.clone() }, Some(bytes), name, decoded)
        }
        Err(why) => not_cleaned(why),
    }
}

pub(crate) fn deidentify(
    d: &Deidentifier,
    header: &[u8],
    pixel: Option<PixelInput<'_>>,
) -> Result<DeidOutput, DeidError> {
    // Through the dicom module: its walker vets the bytes before dicom-object sees them, and
    // it reads files with no preamble and no "DICM" (bare meta group) like everything else.
    let (file, has_pixels) = crate::dicom::open_header_checked(header).map_err(|e| DeidError::Parse {
        reason: e.to_string(),
    })?;
    if has_pixels {
        return Err(DeidError::PixelDataInHeader { tag: tag_text(tags::PIXEL_DATA) });
    }
    let meta = file.meta().clone();
    let ts = meta.transfer_syntax().to_string();
    let facts = pixel_facts(&file);
    // Decided before the header is taken apart: decoding compressed pixel data needs it whole.
    let (burned, cleaned_pixel, pixel_rule, decoded) = burned_in(d, &facts, &file, pixel);
    let obj: Obj = file.into_inner();
    for t in PIXEL_TAGS {
        if obj.get(t).is_some() {
            return Err(DeidError::PixelDataInHeader { tag: tag_text(t) });
        }
    }

    let orig_id = first_str(&obj, tags::PATIENT_ID).unwrap_or_default();
    let orig_name = first_str(&obj, tags::PATIENT_NAME).unwrap_or_default();
    let patient_key = if !orig_id.is_empty() {
        orig_id.clone()
    } else if !orig_name.is_empty() {
        format!("name:{orig_name}")
    } else {
        let sop = first_str(&obj, tags::SOP_INSTANCE_UID)
            .unwrap_or_else(|| meta.media_storage_sop_instance_uid().to_string());
        format!("sop:{sop}")
    };
    let pseudo_patient = d.pseudonym_patient(&patient_key);
    let offset = d.date_offset_days(&patient_key);
    let mut scrubber = Scrubber::default();
    collect_identifiers(d, &obj, &mut scrubber);

    let mut ctx = Ctx {
        d,
        pseudo_patient: pseudo_patient.clone(),
        offset,
        scrubber,
        entries: Vec::new(),
        untouched: 0,
        notes: BTreeSet::new(),
    };
    let mut out = ctx.process_object(&obj, "", false, 0)?;

    // patient identity: one pseudonym for ID and name
    for (tag, vr) in [(tags::PATIENT_NAME, VR::PN), (tags::PATIENT_ID, VR::LO)] {
        let existed = obj.get(tag).is_some();
        out.put(DataElement::new(
            tag,
            vr,
            PrimitiveValue::from(ctx.pseudo_patient.as_str()),
        ));
        let action = if existed {
            ReportAction::Replaced
        } else {
            ReportAction::Added
        };
        ctx.entry(tag, &tag_text(tag), action, "patient-pseudonym");
    }

    // burned-in annotation
    if matches!(burned, BurnedIn::Cleaned { .. }) {
        let existed = out.get(tags::BURNED_IN_ANNOTATION).is_some();
        out.put(DataElement::new(
            tags::BURNED_IN_ANNOTATION,
            VR::CS,
            PrimitiveValue::from("NO"),
        ));
        let action = if existed {
            ReportAction::Replaced
        } else {
            ReportAction::Added
        };
        ctx.entry(
            tags::BURNED_IN_ANNOTATION,
            "(0028,0301)",
            action,
            "clean-pixel-data",
        );
    }
    // Compressed pixel data that was decoded to be cleaned is written native, in explicit VR
    // little endian (the data set of every encapsulated syntax is already encoded so), with the
    // sample layout the decoder gave.
    let mut out_ts = ts.clone();
    let mut pixel_element = None;
    if let (Some(info), Some(px)) = (&decoded, &cleaned_pixel) {
        pixel_element = Some(native_pixel_element(info.bits_allocated, px.len()).map_err(|reason| DeidError::Write { transfer_syntax: ts.clone(), reason })?);
        out_ts = EXPLICIT_VR_LE.to_string();
        // JPEG baseline and extended are always lossy: once decoded, nothing else says so.
        let lossy = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"].contains(&ts.as_str())
            && first_str(&out, tags::LOSSY_IMAGE_COMPRESSION).is_none();
        let mut set = |tag: Tag, vr: VR, value: PrimitiveValue| {
            let existed = out.get(tag).is_some();
            out.put(DataElement::new(tag, vr, value));
            ctx.entry(tag, &tag_text(tag), if existed { ReportAction::Replaced } else { ReportAction::Added }, "clean-pixel-data");
        };
        if facts.photometric.as_deref().map(str::trim) != Some(info.photometric.as_str()) {
            set(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(info.photometric.as_str()));
        }
        if info.samples_per_pixel > 1 && facts.planar_configuration != Some(0) {
            set(tags::PLANAR_CONFIGURATION, VR::US, PrimitiveValue::from(0u16));
        }
        if lossy {
            set(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, PrimitiveValue::from("01"));
        }
        ctx.notes.insert(format!("pixel data decoded from transfer syntax {ts} to be cleaned; written as explicit VR little endian"));
    }

    // options applied and the record of the method
    let pixel_applied = d.has(DeidOption::CleanPixelData)
        && matches!(burned, BurnedIn::Cleaned { .. } | BurnedIn::NotFlagged);
    let applied: Vec<DeidOption> = DeidOption::ALL
        .iter()
        .copied()
        .filter(|o| d.has(*o) && (*o != DeidOption::CleanPixelData || pixel_applied))
        .collect();
    if d.has(DeidOption::CleanPixelData) && !pixel_applied {
        ctx.notes.insert(
            "clean-pixel-data not recorded in the method: pixel data was not cleaned".to_string(),
        );
    }
    let longitudinal = if d.has(DeidOption::RetainLongitudinalTemporalInformationFullDates) {
        "UNMODIFIED"
    } else if d.has(DeidOption::RetainLongitudinalTemporalInformationModifiedDates) {
        "MODIFIED"
    } else {
        "REMOVED"
    };
    let mut method = vec![
        "cohort deid v1".to_string(),
        format!("DICOM PS3.15 {PROFILE_REVISION} {BASIC_PROFILE_MEANING}"),
    ];
    method.extend(applied.iter().map(|o| o.name().to_string()));
    let mut items = vec![code_item(BASIC_PROFILE_CODE, BASIC_PROFILE_MEANING)];
    items.extend(applied.iter().map(|o| code_item(o.code(), o.meaning())));
    let records: Vec<Elem> = vec![
        DataElement::new(
            tags::PATIENT_IDENTITY_REMOVED,
            VR::CS,
            PrimitiveValue::from("YES"),
        ),
        DataElement::new(tags::DEIDENTIFICATION_METHOD, VR::LO, strs(method)),
        DataElement::new(
            tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
            VR::SQ,
            Value::Sequence(DataSetSequence::new(items, Length::UNDEFINED)),
        ),
        DataElement::new(
            tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
            VR::CS,
            PrimitiveValue::from(longitudinal),
        ),
    ];
    for e in records {
        let tag = e.tag();
        let existed = out.get(tag).is_some();
        out.put(e);
        let action = if existed {
            ReportAction::Replaced
        } else {
            ReportAction::Added
        };
        ctx.entry(tag, &tag_text(tag), action, "profile-record");
    }

    // new file meta: same transfer syntax and SOP class, new instance UID, cohort as implementer
    let new_sop = first_str(&out, tags::SOP_INSTANCE_UID);
    let media_uid = match &new_sop {
        Some(u) if !u.is_empty() => u.clone(),
        _ => {
            let orig = meta.media_storage_sop_instance_uid();
            if d.has(DeidOption::RetainUids) || orig.is_empty() {
                orig.to_string()
            } else {
                d.pseudonym_uid(orig)
            }
        }
    };
    let meta_rule = if d.has(DeidOption::RetainUids) {
        "retain-uids:K"
    } else {
        "basic:U"
    };
    let meta_action = if d.has(DeidOption::RetainUids) {
        ReportAction::KeptByOption
    } else {
        ReportAction::Replaced
    };
    ctx.entry(
        tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
        "meta/(0002,0003)",
        meta_action,
        meta_rule,
    );
    let new_meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(meta.media_storage_sop_class_uid())
        .media_storage_sop_instance_uid(media_uid)
        .transfer_syntax(out_ts.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| DeidError::Write {
            transfer_syntax: out_ts.clone(),
            reason: e.to_string(),
        })?;

    let new_study_uid = first_str(&out, tags::STUDY_INSTANCE_UID);
    let new_series_uid = first_str(&out, tags::SERIES_INSTANCE_UID);
    let file = out.with_exact_meta(new_meta);
    let mut bytes = Vec::with_capacity(header.len() + 512);
    file.write_all(&mut bytes).map_err(|e| DeidError::Write {
        transfer_syntax: out_ts.clone(),
        reason: e.to_string(),
    })?;

    let totals = InstanceReport::compute_totals(&ctx.entries, ctx.untouched);
    let report = InstanceReport {
        profile_revision: PROFILE_REVISION.to_string(),
        options: applied.iter().map(|o| o.name().to_string()).collect(),
        key_fingerprint: d.key_fingerprint(),
        transfer_syntax: out_ts,
        entries: ctx.entries,
        totals,
        burned_in: burned.clone(),
        pixel_rule,
        notes: ctx.notes.into_iter().collect(),
    };
    Ok(DeidOutput {
        header: bytes,
        cleaned_pixel,
        pixel_element,
        report,
        burned_in: burned,
        new_patient_id: pseudo_patient,
        new_study_uid,
        new_series_uid,
        new_sop_uid: new_sop,
    })
}

fn code_item(code: &str, meaning: &str) -> Obj {
    Obj::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(code)),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from("DCM"),
        ),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
    ])
}
