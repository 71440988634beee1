//! DICOM Segmentation objects (SEG, SOP class 1.2.840.10008.5.1.4.1.1.66.4).
//!
//! This module owns reading and writing segmentation masks:
//!
//! - [`read_seg`] decodes a SEG file (with or without the 128-byte preamble
//!   and "DICM", i.e. also starting directly at the file meta group) into
//!   per-frame masks, for BINARY (1 bit per pixel, packed LSB first, frames
//!   concatenated bit-wise without padding between frames), FRACTIONAL (8 bits
//!   per pixel, `value > MaximumFractionalValue / 2` is foreground) and
//!   LABELMAP (Label Map Segmentation Storage: 8 or 16 bits, each pixel the
//!   number of its segment) segmentations, together with the segment list,
//!   the source image of each frame and its plane position. Pixel data may be
//!   native (Implicit or Explicit VR Little Endian), deflated, or compressed
//!   in a syntax cohort decodes (RLE, JPEG lossless, JPEG-LS, JPEG 2000), as
//!   highdicom writes FRACTIONAL and LABELMAP segmentations; compressed frames
//!   are decoded one at a time.
//! - [`write_seg`] encodes a BINARY SEG (Explicit VR Little Endian, with
//!   preamble) from masks over a series of source images; it is meant for
//!   tests and examples, and the same spec always gives the same bytes.
//!
//! Hostile input never panics and never makes the reader allocate much more
//! than the input size: before `dicom-object` parses anything, a walk over
//! the raw bytes checks that every declared value length fits in the input
//! and that sequences nest at most [`MAX_DEPTH`] deep; a compressed frame may
//! decode to at most [`MAX_FRAME_PIXELS`] pixels. Other encapsulated syntaxes
//! (lossy JPEG, video) are refused with [`SegError::Compressed`]; Explicit VR
//! Big Endian with [`SegError::UnsupportedTransferSyntax`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::{tags, uids, StandardDataDictionary};
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};

use crate::dicom::error_chain;

/// SOP Class UID of the (binary / fractional) Segmentation Storage IOD.
pub const SEG_SOP_CLASS_UID: &str = uids::SEGMENTATION_STORAGE;
/// SOP Class UID of the Label Map Segmentation Storage IOD (SegmentationType LABELMAP).
pub const LABELMAP_SEG_SOP_CLASS_UID: &str = uids::LABEL_MAP_SEGMENTATION_STORAGE;

/// Whether `class` is one of the two segmentation SOP classes.
pub fn is_seg_class(class: &str) -> bool {
    class == SEG_SOP_CLASS_UID || class == LABELMAP_SEG_SOP_CLASS_UID
}

/// Most pixels a compressed frame may declare (Rows x Columns), so that a small hostile file
/// cannot make the reader allocate gigabytes: 8192 x 8192, far above any CT, MR or
/// whole-slide tile a segmentation is drawn on.
pub const MAX_FRAME_PIXELS: usize = 1 << 26;

/// Deepest nesting of sequences and items that the reader accepts (a SEG
/// needs about 4; the limit keeps the recursive parser's stack bounded).
pub const MAX_DEPTH: usize = 32;

/// Implementation Class UID written in the file meta group of written SEGs.
const IMPLEMENTATION_CLASS_UID: &str = "2.25.170374151935718837427045418405624474713";
/// Implementation Version Name written in the file meta group.
const IMPLEMENTATION_VERSION_NAME: &str = "COHORT_SEG";
/// Fixed Content Date / Time of written SEGs, so that output is deterministic.
const CONTENT_DATE: &str = "19700101";
const CONTENT_TIME: &str = "000000";

/// Everything that can go wrong reading or writing a SEG.
#[derive(Debug, thiserror::Error)]
pub enum SegError {
    /// Neither a preamble + "DICM" nor a file meta group at the start.
    #[error("not a DICOM file: {reason}")]
    NotDicom { reason: String },
    /// The raw bytes are not well-formed DICOM (found before parsing).
    #[error("malformed DICOM at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    /// `dicom-object` refused the data set.
    #[error("cannot parse DICOM data set: {reason}")]
    Parse { reason: String },
    /// `dicom-object` panicked on the input (caught; should not happen).
    #[error("the DICOM parser panicked on this input")]
    ParserPanicked,
    /// The SOP class is not Segmentation Storage.
    #[error("not a DICOM Segmentation: SOP class is {sop_class} (expected {SEG_SOP_CLASS_UID} or {LABELMAP_SEG_SOP_CLASS_UID})")]
    NotSeg { sop_class: String },
    /// An encapsulated transfer syntax cohort does not decode (lossy JPEG, video).
    #[error(
        "transfer syntax {transfer_syntax} is compressed in a way a segmentation is not; \
         cohort reads native little endian, deflated, RLE, JPEG lossless, JPEG-LS and JPEG 2000"
    )]
    Compressed { transfer_syntax: String },
    /// Any other transfer syntax (big endian, unknown).
    #[error(
        "unsupported transfer syntax {transfer_syntax}; \
         cohort reads native little endian, deflated, RLE, JPEG lossless, JPEG-LS and JPEG 2000"
    )]
    UnsupportedTransferSyntax { transfer_syntax: String },
    /// A compressed frame that does not decode.
    #[error("frame {frame}: {reason}")]
    Frame { frame: usize, reason: String },
    /// A required attribute is absent or empty.
    #[error("missing required attribute {keyword} in {context}")]
    MissingAttribute {
        keyword: &'static str,
        context: String,
    },
    /// An attribute is present but its value cannot be used.
    #[error("invalid {keyword} in {context}: {reason}")]
    InvalidAttribute {
        keyword: &'static str,
        context: String,
        reason: String,
    },
    /// Segmentation Type other than BINARY, FRACTIONAL or LABELMAP.
    #[error("unsupported SegmentationType {0:?} (expected BINARY, FRACTIONAL or LABELMAP)")]
    UnsupportedSegmentationType(String),
    /// Pixel Data holds fewer bits than frames * rows * columns * bits per pixel.
    #[error(
        "pixel data too short: {frames} frames of {rows}x{columns} at {bits_per_pixel} bit(s) \
         per pixel need {needed_bits} bits, Pixel Data holds {actual_bits}"
    )]
    PixelDataTooShort {
        frames: usize,
        rows: usize,
        columns: usize,
        bits_per_pixel: usize,
        needed_bits: u128,
        actual_bits: u128,
    },
    /// A frame (1-based, as in DICOM) names no segment in its per-frame or
    /// shared SegmentIdentificationSequence.
    #[error(
        "frame {frame} has no segment number \
         (no SegmentIdentificationSequence > ReferencedSegmentNumber in its per-frame \
         or the shared functional groups)"
    )]
    FrameWithoutSegment { frame: usize },
    /// A frame (1-based) names a segment that SegmentSequence does not define.
    #[error("frame {frame} references segment {segment}, which is not in SegmentSequence")]
    UnknownSegment { frame: usize, segment: u16 },
    /// The write spec is inconsistent or holds values DICOM cannot encode.
    #[error("invalid SEG write spec: {reason}")]
    InvalidSpec { reason: String },
    /// `dicom-object` failed to encode the object.
    #[error("cannot encode SEG: {reason}")]
    Write { reason: String },
}

/// One segment of SegmentSequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// SegmentNumber (1-based, unique in the object).
    pub number: u16,
    /// SegmentLabel (empty if the file has none).
    pub label: String,
}

/// One decoded frame of a SEG.
#[derive(Debug, Clone, PartialEq)]
pub struct SegFrame {
    /// ReferencedSegmentNumber (per-frame, else shared functional groups); 0 in a label map,
    /// whose frames hold every segment.
    pub segment: u16,
    /// DerivationImageSequence > SourceImageSequence > ReferencedSOPInstanceUID
    /// (per-frame, else shared functional groups), if present.
    pub source_sop_uid: Option<String>,
    /// ReferencedFrameNumber of that source image item, if present: the frame (from 1) of
    /// a multi-frame source image.
    pub source_frame: Option<u32>,
    /// PlanePositionSequence > ImagePositionPatient (per-frame, else shared),
    /// if present.
    pub position: Option<[f64; 3]>,
    /// rows * columns values, row-major (x fastest): 0 or 1; in a label map, each pixel's
    /// segment number (0 for none).
    pub mask: Vec<u8>,
}

/// A decoded SEG.
#[derive(Debug, Clone, PartialEq)]
pub struct Seg {
    /// SOPInstanceUID of the SEG itself.
    pub sop_uid: String,
    /// ReferencedSeriesSequence > SeriesInstanceUID of the first item, if any.
    pub referenced_series_uid: Option<String>,
    pub rows: usize,
    pub columns: usize,
    /// SegmentSequence, in file order (without a label map's segment 0, the background).
    pub segments: Vec<SegmentInfo>,
    /// All frames, in file order.
    pub frames: Vec<SegFrame>,
}

/// One source image that a written SEG refers to.
#[derive(Debug, Clone, PartialEq)]
pub struct SegSource {
    pub sop_uid: String,
    pub sop_class_uid: String,
    /// ImagePositionPatient of the source image (of its frame, for a frame).
    pub position: [f64; 3],
    /// For a multi-frame source image, the frame (from 1) the SEG frame lies on: written as
    /// ReferencedFrameNumber.
    pub frame: Option<u32>,
}

/// What [`write_seg`] encodes.
#[derive(Debug, Clone)]
pub struct SegWriteSpec<'a> {
    pub patient_id: String,
    pub patient_name: String,
    pub study_uid: String,
    /// SeriesInstanceUID of the referenced (source) series.
    pub series_uid: String,
    pub seg_series_uid: String,
    pub seg_sop_uid: String,
    pub rows: usize,
    pub columns: usize,
    /// Row spacing \ column spacing, in mm.
    pub pixel_spacing: [f64; 2],
    /// ImageOrientationPatient of the sources (row direction, then column).
    pub orientation: [f64; 6],
    pub sources: &'a [SegSource],
    pub segments: &'a [SegmentInfo],
    /// one frame per (segment, source index) that has any foreground: (segment number, index into sources, mask rows*cols 0/1)
    pub frames: &'a [(u16, usize, Vec<u8>)],
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// Decode a DICOM Segmentation object from the bytes of a file.
pub fn read_seg(bytes: &[u8]) -> Result<Seg, SegError> {
    let meta_start = locate_meta(bytes)?;
    let meta = walk_meta(bytes, meta_start)?;
    if let Some(class) = &meta.sop_class {
        if !is_seg_class(class) {
            return Err(SegError::NotSeg {
                sop_class: class.clone(),
            });
        }
    }
    let explicit = match meta.transfer_syntax.as_str() {
        uids::IMPLICIT_VR_LITTLE_ENDIAN => false,
        uids::EXPLICIT_VR_LITTLE_ENDIAN => true,
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => {
            // The same file in Explicit VR Little Endian, read as such.
            let inflated = crate::dicom::inflate(bytes)
                .map_err(|e| SegError::Parse { reason: e.to_string() })?
                .ok_or_else(|| SegError::Parse { reason: "the deflated data set does not inflate".into() })?;
            return read_seg(&inflated);
        }
        ts if crate::dicom::decodes_encapsulated(ts) => true,
        "1.2.840.10008.1.2.2" => {
            return Err(SegError::UnsupportedTransferSyntax {
                transfer_syntax: meta.transfer_syntax,
            })
        }
        ts if ts.starts_with("1.2.840.10008.1.2.") => {
            return Err(SegError::Compressed {
                transfer_syntax: meta.transfer_syntax,
            })
        }
        _ => {
            return Err(SegError::UnsupportedTransferSyntax {
                transfer_syntax: meta.transfer_syntax,
            })
        }
    };
    walk_dataset(bytes, meta.dataset_start, explicit)?;
    let file = open_checked(bytes, meta_start)?;
    decode_seg(&file)
}

/// Where the file meta group starts: after preamble + "DICM", after a bare
/// "DICM", or at byte 0.
fn locate_meta(bytes: &[u8]) -> Result<usize, SegError> {
    if bytes.get(128..132) == Some(&b"DICM"[..]) {
        Ok(132)
    } else if bytes.starts_with(b"DICM") {
        Ok(4)
    } else if bytes.starts_with(&[0x02, 0x00]) {
        Ok(0)
    } else {
        Err(SegError::NotDicom {
            reason: "no \"DICM\" at byte 128 and no file meta group (0002,xxxx) at byte 0"
                .to_string(),
        })
    }
}

/// What the raw walk of the file meta group found.
struct MetaInfo {
    dataset_start: usize,
    transfer_syntax: String,
    sop_class: Option<String>,
}

/// One element header as laid out in the bytes.
struct RawHeader {
    group: u16,
    element: u16,
    /// The two VR bytes (explicit VR, not an item tag).
    vr: Option<[u8; 2]>,
    len: u32,
    /// Header size in bytes (8 or 12).
    size: usize,
}

const UNDEFINED_LEN: u32 = u32::MAX;

/// VRs with a 2-byte length in explicit VR (PS3.5 7.1.2), as `dicom-encoding`
/// decodes them; every other VR (also unknown ones) has a 4-byte length.
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

fn le16(b: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    b.get(at..end)?.try_into().ok().map(u16::from_le_bytes)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    b.get(at..end)?.try_into().ok().map(u32::from_le_bytes)
}

/// Read an element (or item) header at `pos`; `None` if the input ends first.
fn read_header(b: &[u8], pos: usize, explicit: bool) -> Option<RawHeader> {
    let group = le16(b, pos)?;
    let element = le16(b, pos.checked_add(2)?)?;
    if group == 0xFFFE || !explicit {
        return Some(RawHeader {
            group,
            element,
            vr: None,
            len: le32(b, pos.checked_add(4)?)?,
            size: 8,
        });
    }
    let vr_end = pos.checked_add(6)?;
    let vr: [u8; 2] = b.get(pos.checked_add(4)?..vr_end)?.try_into().ok()?;
    if SHORT_VRS.contains(&&vr) {
        Some(RawHeader {
            group,
            element,
            vr: Some(vr),
            len: u32::from(le16(b, vr_end)?),
            size: 8,
        })
    } else {
        Some(RawHeader {
            group,
            element,
            vr: Some(vr),
            len: le32(b, pos.checked_add(8)?)?,
            size: 12,
        })
    }
}

fn malformed(offset: usize, reason: impl Into<String>) -> SegError {
    SegError::Malformed {
        offset,
        reason: reason.into(),
    }
}

/// End offset of a value of `len` bytes starting at `body`, if it fits in `b`.
fn value_end(b: &[u8], pos: usize, h: &RawHeader, body: usize) -> Result<usize, SegError> {
    usize::try_from(h.len)
        .ok()
        .and_then(|len| body.checked_add(len))
        .filter(|end| *end <= b.len())
        .ok_or_else(|| {
            malformed(
                pos,
                format!(
                    "value length {} of ({:04X},{:04X}) runs past the end of the input ({} bytes)",
                    h.len,
                    h.group,
                    h.element,
                    b.len()
                ),
            )
        })
}

/// Walk the file meta group the way `dicom-object` reads it: a (0002,0000)
/// group length first, then explicit VR LE elements until that many bytes
/// were read.
fn walk_meta(b: &[u8], start: usize) -> Result<MetaInfo, SegError> {
    let truncated = |pos| malformed(pos, "file meta group is truncated");
    let h = read_header(b, start, true).ok_or_else(|| truncated(start))?;
    if (h.group, h.element) != (0x0002, 0x0000) || h.len != 4 {
        return Err(malformed(
            start,
            "file meta group does not start with a 4-byte (0002,0000) group length",
        ));
    }
    let group_len = le32(b, start + h.size).ok_or_else(|| truncated(start))?;
    let mut pos = start + h.size + 4;
    let mut consumed: u64 = 0;
    let mut transfer_syntax = None;
    let mut sop_class = None;
    while consumed < u64::from(group_len) {
        let h = read_header(b, pos, true).ok_or_else(|| truncated(pos))?;
        if h.len == UNDEFINED_LEN {
            return Err(malformed(pos, "undefined length in the file meta group"));
        }
        let body = pos + h.size;
        let end = value_end(b, pos, &h, body)?;
        let text = || {
            let raw = b.get(body..end).unwrap_or(&[]);
            let s = String::from_utf8_lossy(raw);
            s.trim_matches(|c: char| c == '\0' || c == ' ').to_string()
        };
        match (h.group, h.element) {
            (0x0002, 0x0010) => transfer_syntax = Some(text()),
            (0x0002, 0x0002) => sop_class = Some(text()).filter(|s| !s.is_empty()),
            _ => {}
        }
        consumed += (end - pos) as u64;
        pos = end;
    }
    let transfer_syntax = transfer_syntax.ok_or(SegError::MissingAttribute {
        keyword: "TransferSyntaxUID",
        context: "the file meta group".to_string(),
    })?;
    Ok(MetaInfo {
        dataset_start: pos,
        transfer_syntax,
        sop_class,
    })
}

/// A sequence or item that the walk is inside.
#[derive(Clone, Copy)]
enum Open {
    Seq { end: Option<usize>, pixel: bool },
    Item { end: Option<usize> },
}

impl Open {
    fn end(self) -> Option<usize> {
        match self {
            Open::Seq { end, .. } | Open::Item { end } => end,
        }
    }
}

/// Size of one number of a binary VR (1 for all others).
fn binary_unit(vr: VR) -> u32 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::AT | VR::UL | VR::SL | VR::FL | VR::OL | VR::OF => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

/// Check the data set's raw structure before `dicom-object` parses it: every
/// defined length fits in the input (so no value allocation exceeds the
/// input size), elements stay inside their defined-length sequence or item,
/// and nesting is at most [`MAX_DEPTH`]. A header cut short by the end of
/// the input is left for the parser to report.
fn walk_dataset(b: &[u8], start: usize, explicit: bool) -> Result<(), SegError> {
    let dict = StandardDataDictionary;
    let mut stack: Vec<Open> = Vec::new();
    let mut pos = start;
    loop {
        while let Some(end) = stack.last().and_then(|o| o.end()) {
            if pos < end {
                break;
            }
            if pos > end {
                return Err(malformed(
                    pos,
                    "an element runs past the end of its enclosing sequence or item",
                ));
            }
            stack.pop();
        }
        let Some(h) = read_header(b, pos, explicit) else {
            return Ok(());
        };
        let body = pos + h.size;
        let defined = h.len != UNDEFINED_LEN;
        let in_fragments = matches!(stack.last(), Some(Open::Seq { pixel: true, .. }));
        if h.group == 0xFFFE {
            match h.element {
                0xE000 if in_fragments => {
                    if !defined {
                        return Err(malformed(pos, "pixel data fragment of undefined length"));
                    }
                    pos = value_end(b, pos, &h, body)?;
                }
                0xE000 => {
                    let end = if defined {
                        Some(value_end(b, pos, &h, body)?)
                    } else {
                        None
                    };
                    stack.push(Open::Item { end });
                    pos = body;
                }
                0xE00D | 0xE0DD if h.len != 0 => {
                    return Err(malformed(pos, "delimitation item with a non-zero length"));
                }
                0xE00D => {
                    if matches!(stack.last(), Some(Open::Item { .. })) {
                        stack.pop();
                    }
                    pos = body;
                }
                0xE0DD => {
                    if matches!(stack.last(), Some(Open::Seq { .. })) {
                        stack.pop();
                    }
                    pos = body;
                }
                _ if defined => pos = value_end(b, pos, &h, body)?,
                _ => return Err(malformed(pos, "unknown item tag of undefined length")),
            }
        } else if in_fragments {
            return Err(malformed(pos, "expected a pixel data fragment item"));
        } else {
            let tag = Tag(h.group, h.element);
            let is_pixel = tag == tags::PIXEL_DATA;
            // the VR as dicom-parser resolves it
            let vr = match h.vr {
                Some(bytes) => VR::from_binary(bytes).unwrap_or(VR::UN),
                None if is_pixel || (h.group >> 8 == 0x60 && h.element == 0x3000) => VR::OW,
                None => dict.by_tag(tag).map_or(VR::UN, |e| e.vr().relaxed()),
            };
            if !defined {
                // undefined length: a sequence, or encapsulated pixel data
                stack.push(Open::Seq {
                    end: None,
                    pixel: is_pixel,
                });
                pos = body;
            } else if vr == VR::SQ {
                let end = value_end(b, pos, &h, body)?;
                stack.push(Open::Seq {
                    end: Some(end),
                    pixel: false,
                });
                pos = body;
            } else {
                // dicom-parser reads only whole binary numbers and then
                // continues mid-value: refuse lengths that are not a
                // multiple of the number size
                let unit = binary_unit(vr);
                if h.len % unit != 0 {
                    return Err(malformed(
                        pos,
                        format!(
                            "length {} of ({:04X},{:04X}) is not a multiple of {unit} (VR {})",
                            h.len,
                            h.group,
                            h.element,
                            vr.to_string()
                        ),
                    ));
                }
                pos = value_end(b, pos, &h, body)?;
            }
        }
        if stack.len() > MAX_DEPTH {
            return Err(malformed(
                pos,
                format!("sequences nest deeper than {MAX_DEPTH} levels"),
            ));
        }
    }
}

/// Parse with `dicom-object` (after the raw walk accepted the bytes),
/// turning errors and panics into [`SegError`].
fn open_checked(bytes: &[u8], meta_start: usize) -> Result<DefaultDicomObject, SegError> {
    let body = bytes.get(meta_start..).unwrap_or(&[]);
    let result = catch_unwind(AssertUnwindSafe(|| {
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .from_reader(Read::chain(&b"DICM"[..], body))
    }));
    match result {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => Err(SegError::Parse {
            reason: error_chain(&e),
        }),
        Err(_) => Err(SegError::ParserPanicked),
    }
}

fn missing(keyword: &'static str, context: &str) -> SegError {
    SegError::MissingAttribute {
        keyword,
        context: context.to_string(),
    }
}

fn invalid(keyword: &'static str, context: &str, reason: impl Into<String>) -> SegError {
    SegError::InvalidAttribute {
        keyword,
        context: context.to_string(),
        reason: reason.into(),
    }
}

/// Trimmed text of an attribute; `None` if absent, not text-like or empty.
fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.value().to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

fn required_text(
    obj: &InMemDicomObject,
    tag: Tag,
    keyword: &'static str,
    context: &str,
) -> Result<String, SegError> {
    text(obj, tag).ok_or_else(|| missing(keyword, context))
}

/// First value of an integer attribute; `None` if absent or empty.
fn int(
    obj: &InMemDicomObject,
    tag: Tag,
    keyword: &'static str,
    context: &str,
) -> Result<Option<i64>, SegError> {
    if text(obj, tag).is_none() {
        return Ok(None);
    }
    match obj.get(tag) {
        None => Ok(None),
        Some(e) => e
            .value()
            .to_int::<i64>()
            .map(Some)
            .map_err(|err| invalid(keyword, context, error_chain(&err))),
    }
}

/// First value of an unsigned 16-bit attribute; `None` if absent or empty.
fn int_u16(
    obj: &InMemDicomObject,
    tag: Tag,
    keyword: &'static str,
    context: &str,
) -> Result<Option<u16>, SegError> {
    match int(obj, tag, keyword, context)? {
        None => Ok(None),
        Some(v) => u16::try_from(v)
            .map(Some)
            .map_err(|_| invalid(keyword, context, format!("{v} is not in 0..=65535"))),
    }
}

fn required_u16(
    obj: &InMemDicomObject,
    tag: Tag,
    keyword: &'static str,
    context: &str,
) -> Result<u16, SegError> {
    int_u16(obj, tag, keyword, context)?.ok_or_else(|| missing(keyword, context))
}

/// Items of a sequence attribute; `None` if absent or not a sequence.
pub(crate) fn items(obj: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    obj.get(tag)?.value().items()
}

pub(crate) fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    items(obj, tag)?.first()
}

/// The functional group macro `group_tag` of a frame: per-frame first, then
/// shared.
pub(crate) fn group<'a>(
    per_frame: &'a InMemDicomObject,
    shared: Option<&'a InMemDicomObject>,
    group_tag: Tag,
) -> Option<&'a InMemDicomObject> {
    first_item(per_frame, group_tag).or_else(|| shared.and_then(|s| first_item(s, group_tag)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SegType {
    Binary,
    Fractional { max: u16 },
    Labelmap,
}

/// Where a SEG's frames are: native pixel data (all frames, bit- or byte-packed), or
/// encapsulated frames, decoded one at a time.
enum FrameSource<'a> {
    Native(Cow<'a, [u8]>),
    Encapsulated,
}

/// The `pixels` values of frame `k` (from 0) at `bits` bits allocated.
fn frame_values(file: &DefaultDicomObject, source: &FrameSource<'_>, k: usize, pixels: usize, bits: u16) -> Result<Vec<u16>, SegError> {
    let bad = |reason: String| SegError::Frame { frame: k + 1, reason };
    let unpack_bits = |bytes: &[u8], first_bit: usize| (first_bit..first_bit + pixels).map(|bit| bytes.get(bit / 8).map_or(0, |b| u16::from((b >> (bit % 8)) & 1))).collect();
    match source {
        FrameSource::Native(bytes) => Ok(match bits {
            1 => unpack_bits(bytes, k * pixels),
            8 => bytes.get(k * pixels..(k + 1) * pixels).unwrap_or(&[]).iter().map(|&v| u16::from(v)).collect(),
            _ => bytes.get(2 * k * pixels..2 * (k + 1) * pixels).unwrap_or(&[]).chunks_exact(2).map(|w| u16::from_le_bytes([w[0], w[1]])).collect(),
        }),
        FrameSource::Encapsulated => {
            let ts = file.meta().transfer_syntax().trim_end_matches('\0');
            let frame = u32::try_from(k).map_err(|_| bad("too many frames".into()))?;
            let values: Vec<u16> = if ts == uids::RLE_LOSSLESS {
                // One RLE segment per byte of a sample; a 1-bit frame is its packed bits.
                let stream = crate::dicom::frame_streams(file, Some(frame)).map_err(bad)?.concat();
                match bits {
                    1 => unpack_bits(&crate::volume::rle_decode(&stream, pixels.div_ceil(8), 1, 1).map_err(bad)?, 0),
                    8 => crate::volume::rle_decode(&stream, pixels, 1, 1).map_err(bad)?.into_iter().map(u16::from).collect(),
                    _ => crate::volume::rle_decode(&stream, pixels, 2, 1).map_err(bad)?.chunks_exact(2).map(|w| u16::from_le_bytes([w[0], w[1]])).collect(),
                }
            } else {
                // The codestream itself is read only to check a JPEG 2000 one's size and to
                // decode 1-bit frames; other frames are decoded from the file.
                let stream = if is_j2k(ts) || bits == 1 { crate::dicom::frame_streams(file, Some(frame)).map_err(bad)?.concat() } else { Vec::new() };
                if is_j2k(ts) {
                    // The decoder allocates what the codestream declares: check that first.
                    match j2k_size(&stream) {
                        Some(n) if n == pixels as u64 => {}
                        Some(n) => return Err(bad(format!("the JPEG 2000 codestream declares {n} pixels, Rows x Columns is {pixels}"))),
                        None => return Err(bad("not a JPEG 2000 codestream (no SOC and SIZ markers)".into())),
                    }
                }
                if bits == 1 {
                    // The codecs write a 1-bit segmentation's frames as 8-bit samples, 0 or 1;
                    // the DICOM codec adapters refuse BitsAllocated 1, so the codestream is
                    // decoded here.
                    one_component_stream(ts, &stream).map_err(bad)?
                } else {
                    let d = crate::dicom::decode_pixel_data(file, Some(frame)).map_err(bad)?;
                    if d.samples_per_pixel != 1 {
                        return Err(bad(format!("{} samples per pixel (1 expected)", d.samples_per_pixel)));
                    }
                    match d.bits_allocated {
                        1 | 8 => d.data.into_iter().map(u16::from).collect(),
                        _ => d.data.chunks_exact(2).map(|w| u16::from_ne_bytes([w[0], w[1]])).collect(),
                    }
                }
            };
            if values.len() != pixels {
                return Err(bad(format!("decodes to {} pixels, Rows x Columns is {pixels}", values.len())));
            }
            Ok(values)
        }
    }
}

/// JPEG 2000 (Part 1 and High-Throughput) transfer syntaxes.
fn is_j2k(ts: &str) -> bool {
    ts.starts_with("1.2.840.10008.1.2.4.9") || ts.starts_with("1.2.840.10008.1.2.4.20")
}

/// The number of pixels a JPEG 2000 codestream declares in its SIZ marker segment (ISO/IEC
/// 15444-1 A.5.1: after SOC, Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz, 32 bits each).
fn j2k_size(stream: &[u8]) -> Option<u64> {
    if stream.get(..4)? != [0xFF, 0x4F, 0xFF, 0x51] {
        return None;
    }
    let word = |at: usize| stream.get(at..at + 4).map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
    let (x, y, xo, yo) = (word(8)?, word(12)?, word(16)?, word(20)?);
    Some(x.checked_sub(xo)? * y.checked_sub(yo)?)
}

/// The samples of a one-component JPEG 2000 or JPEG-LS codestream.
fn one_component_stream(ts: &str, stream: &[u8]) -> Result<Vec<u16>, String> {
    let samples: Vec<u16> = if crate::dicom::JPEG_LS.contains(&ts) {
        let d = catch_unwind(|| crate::jpegls::decode(stream)).map_err(|_| "the JPEG-LS decoder panicked".to_string())?.map_err(|e| e.to_string())?;
        if d.components != 1 {
            return Err(format!("the JPEG-LS stream has {} components (1 expected)", d.components));
        }
        d.samples
    } else if is_j2k(ts) {
        let image = catch_unwind(|| jpeg2k::Image::from_bytes(stream)).map_err(|_| "the JPEG 2000 decoder panicked".to_string())?.map_err(|e| format!("JPEG 2000: {e}"))?;
        let components = image.components();
        if components.len() != 1 {
            return Err(format!("the JPEG 2000 stream has {} components (1 expected)", components.len()));
        }
        components[0].data().iter().map(|&v| u16::try_from(v).unwrap_or(0)).collect()
    } else {
        return Err(format!("1-bit frames in transfer syntax {ts} (cohort reads them native, in RLE, JPEG-LS or JPEG 2000)"));
    };
    Ok(samples)
}

fn decode_seg(file: &DefaultDicomObject) -> Result<Seg, SegError> {
    const TOP: &str = "the data set";
    let obj: &InMemDicomObject = file;
    let sop_class = required_text(obj, tags::SOP_CLASS_UID, "SOPClassUID", TOP)?;
    if !is_seg_class(&sop_class) {
        return Err(SegError::NotSeg { sop_class });
    }
    let sop_uid = required_text(obj, tags::SOP_INSTANCE_UID, "SOPInstanceUID", TOP)?;
    let rows = required_u16(obj, tags::ROWS, "Rows", TOP)?;
    let columns = required_u16(obj, tags::COLUMNS, "Columns", TOP)?;
    if rows == 0 || columns == 0 {
        let keyword = if rows == 0 { "Rows" } else { "Columns" };
        return Err(invalid(
            keyword,
            TOP,
            format!("image size {rows}x{columns}"),
        ));
    }
    let (rows, columns) = (usize::from(rows), usize::from(columns));
    let n_frames = int(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames", TOP)?
        .ok_or_else(|| missing("NumberOfFrames", TOP))?;
    if n_frames < 1 {
        return Err(invalid("NumberOfFrames", TOP, format!("{n_frames} frames")));
    }
    let bits_allocated = required_u16(obj, tags::BITS_ALLOCATED, "BitsAllocated", TOP)?;
    let seg_type =
        match required_text(obj, tags::SEGMENTATION_TYPE, "SegmentationType", TOP)?.as_str() {
            "BINARY" => SegType::Binary,
            "FRACTIONAL" => {
                let max = required_u16(
                    obj,
                    tags::MAXIMUM_FRACTIONAL_VALUE,
                    "MaximumFractionalValue",
                    TOP,
                )?;
                if max == 0 || max > 255 {
                    return Err(invalid(
                        "MaximumFractionalValue",
                        TOP,
                        format!("{max} is not in 1..=255"),
                    ));
                }
                SegType::Fractional { max }
            }
            "LABELMAP" => SegType::Labelmap,
            other => return Err(SegError::UnsupportedSegmentationType(other.to_string())),
        };
    let bits_per_pixel: usize = match seg_type {
        SegType::Binary => 1,
        SegType::Fractional { .. } => 8,
        SegType::Labelmap if bits_allocated == 16 => 16,
        SegType::Labelmap => 8,
    };
    if usize::from(bits_allocated) != bits_per_pixel {
        return Err(invalid(
            "BitsAllocated",
            TOP,
            format!("{bits_allocated} (a {bits_per_pixel}-bit segmentation type)"),
        ));
    }

    let mut segments = read_segments(obj)?;
    if seg_type == SegType::Labelmap {
        // Segment 0 of a label map is the background, the pixels of no segment.
        segments.retain(|s| s.number != 0);
    }

    // Pixel data, checked for size before any mask is allocated.
    let pixel_elem = obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| missing("PixelData", TOP))?;
    let native = !crate::dicom::decodes_encapsulated(file.meta().transfer_syntax());
    let pixel_source = match pixel_elem.value() {
        Value::Primitive(PrimitiveValue::U8(v)) if native => FrameSource::Native(Cow::Borrowed(&v[..])),
        // OW (implicit VR): words back to little-endian bytes
        Value::Primitive(PrimitiveValue::U16(v)) if native => {
            FrameSource::Native(Cow::Owned(v.iter().flat_map(|w| w.to_le_bytes()).collect()))
        }
        Value::Primitive(PrimitiveValue::Empty) if native => FrameSource::Native(Cow::Borrowed(&[][..])),
        Value::PixelSequence(_) if !native => FrameSource::Encapsulated,
        Value::PixelSequence(_) => {
            return Err(invalid(
                "PixelData",
                TOP,
                "encapsulated pixel data in a native transfer syntax",
            ))
        }
        Value::Primitive(_) if !native => return Err(invalid("PixelData", TOP, "native pixel data in a compressed transfer syntax")),
        _ => return Err(invalid("PixelData", TOP, "not a byte or word value")),
    };
    let n_frames = usize::try_from(n_frames).unwrap_or(usize::MAX);
    let pixels_per_frame = rows * columns; // both <= 65535: the product fits in u32
    let needed_bits = (n_frames as u128) * (pixels_per_frame as u128) * (bits_per_pixel as u128);
    let actual_bits = match &pixel_source {
        FrameSource::Native(p) => (p.len() as u128) * 8,
        // Each frame is checked as it is decoded; here only its size is bounded.
        FrameSource::Encapsulated if pixels_per_frame > MAX_FRAME_PIXELS => {
            return Err(invalid("Rows", TOP, format!("{rows}x{columns} frames: more than {MAX_FRAME_PIXELS} pixels a frame")));
        }
        FrameSource::Encapsulated => needed_bits,
    };
    if needed_bits > actual_bits {
        return Err(SegError::PixelDataTooShort {
            frames: n_frames,
            rows,
            columns,
            bits_per_pixel,
            needed_bits,
            actual_bits,
        });
    }

    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok_or_else(|| missing("PerFrameFunctionalGroupsSequence", TOP))?;
    if per_frame.len() != n_frames {
        return Err(invalid(
            "PerFrameFunctionalGroupsSequence",
            TOP,
            format!("{} items for NumberOfFrames {n_frames}", per_frame.len()),
        ));
    }
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);

    let mut frames = Vec::with_capacity(n_frames);
    for (k, item) in per_frame.iter().enumerate() {
        let frame_no = k + 1;
        let ctx = format!("PerFrameFunctionalGroupsSequence item {frame_no}");
        let segment = match group(item, shared, tags::SEGMENT_IDENTIFICATION_SEQUENCE) {
            // A label map's frames hold all segments.
            _ if seg_type == SegType::Labelmap => 0,
            Some(g) => int_u16(
                g,
                tags::REFERENCED_SEGMENT_NUMBER,
                "ReferencedSegmentNumber",
                &ctx,
            )?
            .ok_or(SegError::FrameWithoutSegment { frame: frame_no })?,
            None => return Err(SegError::FrameWithoutSegment { frame: frame_no }),
        };
        if seg_type != SegType::Labelmap && !segments.iter().any(|s| s.number == segment) {
            return Err(SegError::UnknownSegment {
                frame: frame_no,
                segment,
            });
        }
        let source = group(item, shared, tags::DERIVATION_IMAGE_SEQUENCE)
            .and_then(|d| first_item(d, tags::SOURCE_IMAGE_SEQUENCE));
        let source_sop_uid = source.and_then(|s| text(s, tags::REFERENCED_SOP_INSTANCE_UID));
        let source_frame = match source.and_then(|s| text(s, tags::REFERENCED_FRAME_NUMBER)) {
            None => None,
            Some(t) => Some(
                t.split('\\')
                    .next()
                    .and_then(|n| n.trim().parse::<u32>().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| invalid("ReferencedFrameNumber", &ctx, format!("{t:?} is not a frame number")))?,
            ),
        };
        let position = match group(item, shared, tags::PLANE_POSITION_SEQUENCE) {
            Some(p) => read_position(p, &ctx)?,
            None => None,
        };
        let values = frame_values(file, &pixel_source, k, pixels_per_frame, bits_allocated)?;
        let mask = match seg_type {
            SegType::Binary => values.iter().map(|&v| u8::from(v != 0)).collect(),
            SegType::Fractional { max } => values.iter().map(|&v| u8::from(v.saturating_mul(2) > max)).collect(),
            SegType::Labelmap => {
                if let Some(&v) = values.iter().find(|&&v| v != 0 && !segments.iter().any(|s| s.number == v)) {
                    return Err(SegError::UnknownSegment { frame: frame_no, segment: v });
                }
                values.iter().map(|&v| u8::try_from(v).map_err(|_| invalid("PixelData", &ctx, format!("segment number {v}: cohort's masks hold segments 1 to 255")))).collect::<Result<_, _>>()?
            }
        };
        frames.push(SegFrame {
            segment,
            source_sop_uid,
            source_frame,
            position,
            mask,
        });
    }

    let referenced_series_uid = first_item(obj, tags::REFERENCED_SERIES_SEQUENCE)
        .and_then(|s| text(s, tags::SERIES_INSTANCE_UID));

    Ok(Seg {
        sop_uid,
        referenced_series_uid,
        rows,
        columns,
        segments,
        frames,
    })
}

fn read_segments(obj: &InMemDicomObject) -> Result<Vec<SegmentInfo>, SegError> {
    let seq = items(obj, tags::SEGMENT_SEQUENCE)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("SegmentSequence", "the data set"))?;
    let mut segments: Vec<SegmentInfo> = Vec::with_capacity(seq.len());
    for (i, item) in seq.iter().enumerate() {
        let ctx = format!("SegmentSequence item {}", i + 1);
        let number = required_u16(item, tags::SEGMENT_NUMBER, "SegmentNumber", &ctx)?;
        if segments.iter().any(|s| s.number == number) {
            return Err(invalid(
                "SegmentNumber",
                &ctx,
                format!("segment number {number} appears twice"),
            ));
        }
        // SegmentLabel is Type 1, but a missing label does not make the masks
        // unusable: read it as empty.
        let label = text(item, tags::SEGMENT_LABEL).unwrap_or_default();
        segments.push(SegmentInfo { number, label });
    }
    Ok(segments)
}

fn read_position(plane: &InMemDicomObject, ctx: &str) -> Result<Option<[f64; 3]>, SegError> {
    let Some(elem) = plane.get(tags::IMAGE_POSITION_PATIENT) else {
        return Ok(None);
    };
    if text(plane, tags::IMAGE_POSITION_PATIENT).is_none() {
        return Ok(None);
    }
    let ctx = format!("{ctx} > PlanePositionSequence");
    let values = elem
        .value()
        .to_multi_float64()
        .map_err(|e| invalid("ImagePositionPatient", &ctx, error_chain(&e)))?;
    match values.as_slice() {
        [x, y, z] if x.is_finite() && y.is_finite() && z.is_finite() => Ok(Some([*x, *y, *z])),
        _ => Err(invalid(
            "ImagePositionPatient",
            &ctx,
            format!("expected 3 finite numbers, got {values:?}"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Encode a BINARY SEG (Explicit VR Little Endian, with preamble).
///
/// Frames are written in the order given. FrameOfReferenceUID and
/// DimensionOrganizationUID are derived deterministically from the spec's
/// UIDs, Content Date/Time are fixed, so the same spec gives the same bytes.
pub fn write_seg(spec: &SegWriteSpec) -> Result<Vec<u8>, SegError> {
    let obj = build_seg_object(spec)?;
    encode_file(obj, uids::EXPLICIT_VR_LITTLE_ENDIAN)
}

fn bad_spec(reason: impl Into<String>) -> SegError {
    SegError::InvalidSpec {
        reason: reason.into(),
    }
}

/// A UID as PS3.5 9.1 allows it: at most 64 characters, dot-separated
/// numeric components without leading zeros.
fn check_uid(field: &str, uid: &str) -> Result<(), SegError> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c.len() == 1 || !c.starts_with('0'))
        });
    if ok {
        Ok(())
    } else {
        Err(bad_spec(format!(
            "{field} {uid:?} is not a valid DICOM UID"
        )))
    }
}

/// A single-valued text of at most `max_chars` characters, without
/// backslash or control characters.
fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), SegError> {
    if value.chars().count() > max_chars {
        return Err(bad_spec(format!(
            "{field} is longer than {max_chars} characters"
        )));
    }
    if value.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(bad_spec(format!(
            "{field} {value:?} contains a backslash or a control character"
        )));
    }
    Ok(())
}

fn validate_spec(spec: &SegWriteSpec) -> Result<(), SegError> {
    check_uid("study_uid", &spec.study_uid)?;
    check_uid("series_uid", &spec.series_uid)?;
    check_uid("seg_series_uid", &spec.seg_series_uid)?;
    check_uid("seg_sop_uid", &spec.seg_sop_uid)?;
    check_text("patient_id", &spec.patient_id, 64)?;
    check_text("patient_name", &spec.patient_name, 64 * 5)?;
    if !(1..=65535).contains(&spec.rows) || !(1..=65535).contains(&spec.columns) {
        return Err(bad_spec(format!(
            "image size {}x{} is not within 1..=65535",
            spec.rows, spec.columns
        )));
    }
    if !spec.pixel_spacing.iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(bad_spec(format!(
            "pixel_spacing {:?} must be finite and positive",
            spec.pixel_spacing
        )));
    }
    if !spec.orientation.iter().all(|v| v.is_finite())
        || norm(slice_normal(&spec.orientation)) < 1e-6
    {
        return Err(bad_spec(format!(
            "orientation {:?} does not give two non-parallel direction vectors",
            spec.orientation
        )));
    }
    if spec.sources.is_empty() {
        return Err(bad_spec("no source images"));
    }
    for (i, s) in spec.sources.iter().enumerate() {
        check_uid(&format!("sources[{i}].sop_uid"), &s.sop_uid)?;
        check_uid(&format!("sources[{i}].sop_class_uid"), &s.sop_class_uid)?;
        if !s.position.iter().all(|v| v.is_finite()) {
            return Err(bad_spec(format!("sources[{i}].position is not finite")));
        }
    }
    if spec.segments.is_empty() {
        return Err(bad_spec("no segments"));
    }
    for (i, s) in spec.segments.iter().enumerate() {
        if s.number == 0 {
            return Err(bad_spec(format!(
                "segments[{i}] has number 0 (numbers start at 1)"
            )));
        }
        if spec.segments[..i].iter().any(|o| o.number == s.number) {
            return Err(bad_spec(format!(
                "segment number {} appears twice",
                s.number
            )));
        }
        check_text(&format!("segments[{i}].label"), &s.label, 64)?;
    }
    if spec.frames.is_empty() {
        return Err(bad_spec("no frames (a SEG needs at least one)"));
    }
    let pixels = spec.rows * spec.columns;
    let total_bytes = (pixels as u128 * spec.frames.len() as u128).div_ceil(8);
    if total_bytes > u128::from(u32::MAX - 1) {
        return Err(bad_spec("pixel data would exceed 4 GiB"));
    }
    for (i, (segment, source, mask)) in spec.frames.iter().enumerate() {
        if !spec.segments.iter().any(|s| s.number == *segment) {
            return Err(bad_spec(format!(
                "frames[{i}] names unknown segment {segment}"
            )));
        }
        if *source >= spec.sources.len() {
            return Err(bad_spec(format!(
                "frames[{i}] names source {source}, but there are {} sources",
                spec.sources.len()
            )));
        }
        if mask.len() != pixels {
            return Err(bad_spec(format!(
                "frames[{i}] mask has {} values, expected rows*columns = {pixels}",
                mask.len()
            )));
        }
        if mask.iter().any(|v| *v > 1) {
            return Err(bad_spec(format!(
                "frames[{i}] mask holds a value other than 0 or 1"
            )));
        }
        if spec.frames[..i]
            .iter()
            .any(|(s, src, _)| s == segment && src == source)
        {
            return Err(bad_spec(format!(
                "frames[{i}] repeats segment {segment} on source {source}"
            )));
        }
    }
    Ok(())
}

fn slice_normal(o: &[f64; 6]) -> [f64; 3] {
    [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ]
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// A DS value of at most 16 characters.
fn format_ds(v: f64) -> String {
    let shortest = format!("{v}");
    if shortest.len() <= 16 {
        return shortest;
    }
    let a = v.abs();
    if a != 0.0 && (1e-3..1e15).contains(&a) {
        for precision in (0..=16usize).rev() {
            let s = format!("{v:.precision$}");
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s
            };
            if s.len() <= 16 {
                return s;
            }
        }
    }
    for precision in (0..=16usize).rev() {
        let s = format!("{v:.precision$e}");
        // rounding up must not leave the f64 range (f64::MAX)
        if s.len() <= 16 && s.parse::<f64>().is_ok_and(f64::is_finite) {
            return s;
        }
    }
    "0".to_string()
}

/// A "2.25." UID from a 128-bit FNV-1a hash of `parts`, shaped as a
/// version 8 (custom) UUID.
fn derived_uid(parts: &[&str]) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut h = OFFSET;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h = (h & !(0xF << 76)) | (0x8 << 76); // version 8
    h = (h & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant
    format!("2.25.{h}")
}

fn text_el(tag: Tag, vr: VR, value: &str) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn empty_el(tag: Tag, vr: VR) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

fn multi_text_el(tag: Tag, vr: VR, values: Vec<String>) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::Strs(values.into_iter().collect()))
}

fn ds_el(tag: Tag, values: &[f64]) -> InMemElement {
    multi_text_el(tag, VR::DS, values.iter().map(|v| format_ds(*v)).collect())
}

fn us_el(tag: Tag, value: u16) -> InMemElement {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

fn at_el(tag: Tag, value: Tag) -> InMemElement {
    DataElement::new(
        tag,
        VR::AT,
        PrimitiveValue::Tags(std::iter::once(value).collect()),
    )
}

fn seq_el(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(
        tag,
        VR::SQ,
        Value::Sequence(DataSetSequence::new(items, Length::UNDEFINED)),
    )
}

fn item(elements: Vec<InMemElement>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn code_item(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    item(vec![
        text_el(tags::CODE_VALUE, VR::SH, value),
        text_el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text_el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// The SEG data set of a spec (validated here).
fn build_seg_object(spec: &SegWriteSpec) -> Result<InMemDicomObject, SegError> {
    validate_spec(spec)?;
    let pixels_per_frame = spec.rows * spec.columns;
    let rows = u16::try_from(spec.rows).map_err(|_| bad_spec("rows > 65535"))?;
    let columns = u16::try_from(spec.columns).map_err(|_| bad_spec("columns > 65535"))?;

    // Rank of each source along the slice normal: the ImagePositionPatient
    // dimension index (equal positions share an index).
    let normal = slice_normal(&spec.orientation);
    let along: Vec<f64> = spec
        .sources
        .iter()
        .map(|s| dot(s.position, normal))
        .collect();
    let mut order: Vec<usize> = (0..spec.sources.len()).collect();
    order.sort_by(|&a, &b| {
        let (da, db) = (
            along.get(a).copied().unwrap_or(0.0),
            along.get(b).copied().unwrap_or(0.0),
        );
        da.total_cmp(&db).then(a.cmp(&b))
    });
    let mut position_index = vec![0u32; spec.sources.len()];
    let mut rank = 0u32;
    let mut previous: Option<[f64; 3]> = None;
    let mut min_gap: Option<f64> = None;
    let mut previous_along: Option<f64> = None;
    for &i in &order {
        let (Some(src), Some(&d)) = (spec.sources.get(i), along.get(i)) else {
            continue;
        };
        if previous != Some(src.position) {
            rank += 1;
            previous = Some(src.position);
        }
        if let Some(slot) = position_index.get_mut(i) {
            *slot = rank;
        }
        if let Some(p) = previous_along {
            let gap = (d - p) / norm(normal);
            if gap > 1e-6 && min_gap.is_none_or(|g| gap < g) {
                min_gap = Some(gap);
            }
        }
        previous_along = Some(d);
    }
    // The spec has no slice thickness: use the closest spacing of the source
    // planes, or 1 mm for a single plane.
    let slice_thickness = min_gap.unwrap_or(1.0);

    // Do two segments claim the same pixel of the same source?
    let mut union: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut overlap = false;
    for (_, source, mask) in spec.frames {
        let seen = union
            .entry(*source)
            .or_insert_with(|| vec![0u8; pixels_per_frame]);
        for (s, m) in seen.iter_mut().zip(mask) {
            if *m == 1 {
                overlap |= *s == 1;
                *s = 1;
            }
        }
    }

    // Bit-packed pixel data: frame k starts at bit k * rows * columns, LSB
    // first, no padding between frames; the value is padded to even length.
    let total_bits = pixels_per_frame * spec.frames.len();
    let mut pixel_data = vec![0u8; total_bits.div_ceil(8)];
    if pixel_data.len() % 2 == 1 {
        pixel_data.push(0);
    }
    for (k, (_, _, mask)) in spec.frames.iter().enumerate() {
        for (i, &v) in mask.iter().enumerate() {
            if v == 1 {
                let bit = k * pixels_per_frame + i;
                if let Some(byte) = pixel_data.get_mut(bit / 8) {
                    *byte |= 1 << (bit % 8);
                }
            }
        }
    }

    let frame_of_reference_uid = derived_uid(&["cohort-seg-frame-of-reference", &spec.series_uid]);
    let dimension_org_uid = derived_uid(&["cohort-seg-dimension-organization", &spec.seg_sop_uid]);

    let segment_items = spec
        .segments
        .iter()
        .map(|s| {
            item(vec![
                us_el(tags::SEGMENT_NUMBER, s.number),
                text_el(tags::SEGMENT_LABEL, VR::LO, &s.label),
                text_el(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "MANUAL"),
                seq_el(
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    vec![code_item("91723000", "SCT", "Anatomical Structure")],
                ),
                seq_el(
                    tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                    vec![code_item("85756007", "SCT", "Tissue")],
                ),
            ])
        })
        .collect();

    let dimension_index = |pointer: Tag, group_pointer: Tag, label: &str| {
        item(vec![
            text_el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dimension_org_uid),
            at_el(tags::DIMENSION_INDEX_POINTER, pointer),
            at_el(tags::FUNCTIONAL_GROUP_POINTER, group_pointer),
            text_el(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };

    let shared = item(vec![
        seq_el(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(vec![
                ds_el(tags::SLICE_THICKNESS, &[slice_thickness]),
                ds_el(tags::PIXEL_SPACING, &spec.pixel_spacing),
            ])],
        ),
        seq_el(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(vec![ds_el(
                tags::IMAGE_ORIENTATION_PATIENT,
                &spec.orientation,
            )])],
        ),
    ]);

    let mut per_frame = Vec::with_capacity(spec.frames.len());
    for (segment, source_index, _) in spec.frames {
        let source = spec
            .sources
            .get(*source_index)
            .ok_or_else(|| bad_spec(format!("source index {source_index} out of range")))?;
        let pos_index = position_index.get(*source_index).copied().unwrap_or(1);
        per_frame.push(item(vec![
            seq_el(
                tags::DERIVATION_IMAGE_SEQUENCE,
                vec![item(vec![
                    seq_el(
                        tags::SOURCE_IMAGE_SEQUENCE,
                        vec![item(vec![
                            text_el(
                                tags::REFERENCED_SOP_CLASS_UID,
                                VR::UI,
                                &source.sop_class_uid,
                            ),
                            text_el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &source.sop_uid),
                        ]
                        .into_iter()
                        .chain(source.frame.map(|f| text_el(tags::REFERENCED_FRAME_NUMBER, VR::IS, &f.to_string())))
                        .chain([
                            seq_el(
                                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                                vec![code_item(
                                    "121322",
                                    "DCM",
                                    "Source image for image processing operation",
                                )],
                            ),
                            text_el(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"),
                        ])
                        .collect())],
                    ),
                    seq_el(
                        tags::DERIVATION_CODE_SEQUENCE,
                        vec![code_item("113076", "DCM", "Segmentation")],
                    ),
                ])],
            ),
            seq_el(
                tags::FRAME_CONTENT_SEQUENCE,
                vec![item(vec![DataElement::new(
                    tags::DIMENSION_INDEX_VALUES,
                    VR::UL,
                    PrimitiveValue::U32([u32::from(*segment), pos_index].into_iter().collect()),
                )])],
            ),
            seq_el(
                tags::PLANE_POSITION_SEQUENCE,
                vec![item(vec![ds_el(
                    tags::IMAGE_POSITION_PATIENT,
                    &source.position,
                )])],
            ),
            seq_el(
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                vec![item(vec![us_el(tags::REFERENCED_SEGMENT_NUMBER, *segment)])],
            ),
        ]));
    }

    let referenced_instances = spec
        .sources
        .iter()
        .map(|s| {
            item(vec![
                text_el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &s.sop_class_uid),
                text_el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &s.sop_uid),
            ])
        })
        .collect();

    let non_ascii = !spec.patient_name.is_ascii()
        || !spec.patient_id.is_ascii()
        || spec.segments.iter().any(|s| !s.label.is_ascii());

    let mut elements = vec![
        // SOP Common
        text_el(tags::SOP_CLASS_UID, VR::UI, SEG_SOP_CLASS_UID),
        text_el(tags::SOP_INSTANCE_UID, VR::UI, &spec.seg_sop_uid),
        // Patient
        text_el(tags::PATIENT_NAME, VR::PN, &spec.patient_name),
        text_el(tags::PATIENT_ID, VR::LO, &spec.patient_id),
        empty_el(tags::PATIENT_BIRTH_DATE, VR::DA),
        empty_el(tags::PATIENT_SEX, VR::CS),
        // General Study
        text_el(tags::STUDY_INSTANCE_UID, VR::UI, &spec.study_uid),
        empty_el(tags::STUDY_DATE, VR::DA),
        empty_el(tags::STUDY_TIME, VR::TM),
        empty_el(tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        empty_el(tags::STUDY_ID, VR::SH),
        empty_el(tags::ACCESSION_NUMBER, VR::SH),
        // General Series / Segmentation Series
        text_el(tags::MODALITY, VR::CS, "SEG"),
        text_el(tags::SERIES_INSTANCE_UID, VR::UI, &spec.seg_series_uid),
        text_el(tags::SERIES_NUMBER, VR::IS, "1"),
        // Frame of Reference
        text_el(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &frame_of_reference_uid,
        ),
        empty_el(tags::POSITION_REFERENCE_INDICATOR, VR::LO),
        // General / Enhanced General Equipment
        text_el(tags::MANUFACTURER, VR::LO, "cohort"),
        text_el(tags::MANUFACTURER_MODEL_NAME, VR::LO, "cohort"),
        text_el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        text_el(tags::SOFTWARE_VERSIONS, VR::LO, "cohort"),
        // General Image / Segmentation Image
        multi_text_el(
            tags::IMAGE_TYPE,
            VR::CS,
            vec!["DERIVED".to_string(), "PRIMARY".to_string()],
        ),
        text_el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        text_el(tags::CONTENT_DATE, VR::DA, CONTENT_DATE),
        text_el(tags::CONTENT_TIME, VR::TM, CONTENT_TIME),
        text_el(tags::CONTENT_LABEL, VR::CS, "SEGMENTATION"),
        empty_el(tags::CONTENT_DESCRIPTION, VR::LO),
        empty_el(tags::CONTENT_CREATOR_NAME, VR::PN),
        text_el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        text_el(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        text_el(
            tags::SEGMENTS_OVERLAP,
            VR::CS,
            if overlap { "YES" } else { "NO" },
        ),
        seq_el(tags::SEGMENT_SEQUENCE, segment_items),
        // Image Pixel
        us_el(tags::SAMPLES_PER_PIXEL, 1),
        text_el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us_el(tags::ROWS, rows),
        us_el(tags::COLUMNS, columns),
        us_el(tags::BITS_ALLOCATED, 1),
        us_el(tags::BITS_STORED, 1),
        us_el(tags::HIGH_BIT, 0),
        us_el(tags::PIXEL_REPRESENTATION, 0),
        // Multi-frame Functional Groups / Dimension
        text_el(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            &spec.frames.len().to_string(),
        ),
        seq_el(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item(vec![text_el(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                &dimension_org_uid,
            )])],
        ),
        seq_el(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                dimension_index(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "ReferencedSegmentNumber",
                ),
                dimension_index(
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "ImagePositionPatient",
                ),
            ],
        ),
        seq_el(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]),
        seq_el(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
        // Common Instance Reference
        seq_el(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![item(vec![
                text_el(tags::SERIES_INSTANCE_UID, VR::UI, &spec.series_uid),
                seq_el(tags::REFERENCED_INSTANCE_SEQUENCE, referenced_instances),
            ])],
        ),
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixel_data)),
    ];
    if non_ascii {
        elements.push(text_el(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    }
    Ok(InMemDicomObject::from_element_iter(elements))
}

/// A data set as a complete file (preamble, "DICM", file meta group) in the
/// given transfer syntax.
fn encode_file(obj: InMemDicomObject, transfer_syntax: &str) -> Result<Vec<u8>, SegError> {
    let write_err = |e: &dyn std::error::Error| SegError::Write {
        reason: error_chain(e),
    };
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(transfer_syntax)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name(IMPLEMENTATION_VERSION_NAME),
        )
        .map_err(|e| write_err(&e))?;
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| write_err(&e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const ROWS: usize = 5;
    const COLS: usize = 3; // 15 pixels per frame: frames straddle byte boundaries

    /// Owned data behind a [`SegWriteSpec`].
    struct Fixture {
        sources: Vec<SegSource>,
        segments: Vec<SegmentInfo>,
        frames: Vec<(u16, usize, Vec<u8>)>,
    }

    fn mask(f: impl Fn(usize, usize) -> bool) -> Vec<u8> {
        (0..ROWS)
            .flat_map(|r| (0..COLS).map(move |c| (r, c)))
            .map(|(r, c)| u8::from(f(r, c)))
            .collect()
    }

    impl Fixture {
        fn new() -> Self {
            let sources = (0..3)
                .map(|i| SegSource {
                    sop_uid: format!("1.2.826.0.1.3680043.8.498.10.{}", i + 1),
                    sop_class_uid: CT.to_string(),
                    position: [-100.25, -120.5, 2.5 * i as f64],
                    // the last a frame of a multi-frame image
                    frame: (i == 2).then_some(7),
                })
                .collect();
            let segments = vec![
                SegmentInfo {
                    number: 1,
                    label: "liver".to_string(),
                },
                SegmentInfo {
                    number: 2,
                    label: "tumor".to_string(),
                },
            ];
            let frames = vec![
                (1, 0, mask(|r, c| r >= 1 && c >= 1)),
                (1, 1, mask(|r, c| (r + c) % 2 == 0)),
                (
                    2,
                    1,
                    mask(|r, c| r == 0 && c == 0 || r == ROWS - 1 && c == COLS - 1),
                ),
                (2, 2, mask(|r, _| r == 2)),
            ];
            Fixture {
                sources,
                segments,
                frames,
            }
        }

        fn spec(&self) -> SegWriteSpec<'_> {
            SegWriteSpec {
                patient_id: "PAT-001".to_string(),
                patient_name: "Doe^Jane".to_string(),
                study_uid: "1.2.826.0.1.3680043.8.498.1".to_string(),
                series_uid: "1.2.826.0.1.3680043.8.498.2".to_string(),
                seg_series_uid: "1.2.826.0.1.3680043.8.498.3".to_string(),
                seg_sop_uid: "1.2.826.0.1.3680043.8.498.4".to_string(),
                rows: ROWS,
                columns: COLS,
                pixel_spacing: [0.75, 0.8],
                orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                sources: &self.sources,
                segments: &self.segments,
                frames: &self.frames,
            }
        }

        fn assert_matches(&self, seg: &Seg) {
            let spec = self.spec();
            assert_eq!(seg.sop_uid, spec.seg_sop_uid);
            assert_eq!(
                seg.referenced_series_uid.as_deref(),
                Some(spec.series_uid.as_str())
            );
            assert_eq!((seg.rows, seg.columns), (ROWS, COLS));
            assert_eq!(seg.segments, self.segments);
            assert_eq!(seg.frames.len(), self.frames.len());
            for (got, (segment, source, mask)) in seg.frames.iter().zip(&self.frames) {
                let src = &self.sources[*source];
                assert_eq!(got.segment, *segment);
                assert_eq!(got.source_sop_uid.as_deref(), Some(src.sop_uid.as_str()));
                assert_eq!(got.source_frame, src.frame);
                assert_eq!(got.position, Some(src.position));
                assert_eq!(&got.mask, mask);
            }
        }
    }

    fn fixture_object() -> InMemDicomObject {
        build_seg_object(&Fixture::new().spec()).unwrap()
    }

    fn encode(obj: InMemDicomObject) -> Vec<u8> {
        encode_file(obj, uids::EXPLICIT_VR_LITTLE_ENDIAN).unwrap()
    }

    /// Apply `f` to item `index` (0-based) of a sequence of `obj`.
    fn edit_item(
        obj: &mut InMemDicomObject,
        seq: Tag,
        index: usize,
        f: impl FnOnce(&mut InMemDicomObject),
    ) {
        let mut all = items(obj, seq).unwrap().to_vec();
        f(&mut all[index]);
        obj.put(seq_el(seq, all));
    }

    fn raw_pixel_data(bytes: &[u8]) -> Vec<u8> {
        let file = open_checked(bytes, 132).unwrap();
        file.get(tags::PIXEL_DATA)
            .unwrap()
            .value()
            .to_bytes()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn round_trip_binary() {
        let f = Fixture::new();
        let bytes = write_seg(&f.spec()).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        assert!(bytes[..128].iter().all(|b| *b == 0));
        f.assert_matches(&read_seg(&bytes).unwrap());
    }

    #[test]
    fn reads_without_preamble() {
        let f = Fixture::new();
        let bytes = write_seg(&f.spec()).unwrap();
        // starting directly at group 0002, as dcmtk writes and reads them
        assert_eq!(&bytes[132..134], &[0x02, 0x00]);
        f.assert_matches(&read_seg(&bytes[132..]).unwrap());
        // and a bare "DICM" before the meta group
        f.assert_matches(&read_seg(&bytes[128..]).unwrap());
    }

    #[test]
    fn reads_implicit_vr_little_endian() {
        let f = Fixture::new();
        let obj = build_seg_object(&f.spec()).unwrap();
        let bytes = encode_file(obj, uids::IMPLICIT_VR_LITTLE_ENDIAN).unwrap();
        f.assert_matches(&read_seg(&bytes).unwrap());
    }

    #[test]
    fn frames_are_bit_packed_without_padding() {
        let sources = Fixture::new().sources;
        let segments = Fixture::new().segments;
        let one_pixel = |p: usize| {
            let mut m = vec![0u8; ROWS * COLS];
            m[p] = 1;
            m
        };
        // 4 frames of 15 pixels = 60 bits = 8 bytes (already even)
        let frames = vec![
            (1, 0, vec![0u8; ROWS * COLS]),
            (1, 1, one_pixel(0)),  // bit 15: byte 1, bit 7
            (2, 1, one_pixel(14)), // bit 44: byte 5, bit 4
            (2, 2, one_pixel(1)),  // bit 46: byte 5, bit 6
        ];
        let f = Fixture {
            sources,
            segments,
            frames,
        };
        let bytes = write_seg(&f.spec()).unwrap();
        assert_eq!(raw_pixel_data(&bytes), vec![0, 0x80, 0, 0, 0, 0x50, 0, 0]);
        f.assert_matches(&read_seg(&bytes).unwrap());

        // 3 frames = 45 bits = 6 bytes: bits 0, 15 + 14 = 29 and 30 + 1 = 31
        let f3 = Fixture {
            frames: f.frames[1..].to_vec(),
            ..Fixture::new()
        };
        let bytes = write_seg(&f3.spec()).unwrap();
        assert_eq!(raw_pixel_data(&bytes), vec![1, 0, 0, 0xA0, 0, 0]);
        f3.assert_matches(&read_seg(&bytes).unwrap());
    }

    #[test]
    fn attributes_of_written_seg() {
        let bytes = write_seg(&Fixture::new().spec()).unwrap();
        let file = open_checked(&bytes, 132).unwrap();
        assert_eq!(
            file.meta().transfer_syntax(),
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        );
        assert_eq!(file.meta().media_storage_sop_class_uid(), SEG_SOP_CLASS_UID);
        let t = |tag| text(&file, tag).unwrap();
        assert_eq!(t(tags::MODALITY), "SEG");
        assert_eq!(t(tags::SEGMENTATION_TYPE), "BINARY");
        assert_eq!(t(tags::IMAGE_TYPE), "DERIVED\\PRIMARY");
        assert_eq!(t(tags::NUMBER_OF_FRAMES), "4");
        assert_eq!(t(tags::SEGMENTS_OVERLAP), "YES"); // frames 2 and 3 share pixel (0,0)
        let shared = first_item(&file, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).unwrap();
        let measures = first_item(shared, tags::PIXEL_MEASURES_SEQUENCE).unwrap();
        assert_eq!(
            text(measures, tags::SLICE_THICKNESS).as_deref(),
            Some("2.5")
        );
        assert_eq!(
            text(measures, tags::PIXEL_SPACING).as_deref(),
            Some("0.75\\0.8")
        );
        let per_frame = items(&file, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).unwrap();
        let content = first_item(&per_frame[2], tags::FRAME_CONTENT_SEQUENCE).unwrap();
        let dims: Vec<u32> = content
            .get(tags::DIMENSION_INDEX_VALUES)
            .unwrap()
            .value()
            .to_multi_int()
            .unwrap();
        assert_eq!(dims, vec![2, 2]);
        let refs = first_item(&file, tags::REFERENCED_SERIES_SEQUENCE).unwrap();
        assert_eq!(
            items(refs, tags::REFERENCED_INSTANCE_SEQUENCE)
                .unwrap()
                .len(),
            3
        );
        let uid = text(&file, tags::FRAME_OF_REFERENCE_UID).unwrap();
        check_uid("frame of reference", &uid).unwrap();
    }

    #[test]
    fn write_is_deterministic() {
        let f = Fixture::new();
        assert_eq!(write_seg(&f.spec()).unwrap(), write_seg(&f.spec()).unwrap());
    }

    #[test]
    fn non_ascii_text_round_trips() {
        let mut f = Fixture::new();
        f.segments[1].label = "Läsion ü".to_string();
        let mut spec = f.spec();
        spec.patient_name = "Müller^Zoë".to_string();
        let bytes = write_seg(&spec).unwrap();
        let seg = read_seg(&bytes).unwrap();
        assert_eq!(seg.segments[1].label, "Läsion ü");
        let file = open_checked(&bytes, 132).unwrap();
        assert_eq!(
            text(&file, tags::PATIENT_NAME).as_deref(),
            Some("Müller^Zoë")
        );
    }

    /// Turn the fixture into a FRACTIONAL SEG (8 bits per pixel), pixel
    /// values on either side of MaximumFractionalValue / 2.
    fn fractional(f: &Fixture, max: u16) -> InMemDicomObject {
        let mut obj = build_seg_object(&f.spec()).unwrap();
        obj.put(text_el(tags::SEGMENTATION_TYPE, VR::CS, "FRACTIONAL"));
        obj.put(text_el(
            tags::SEGMENTATION_FRACTIONAL_TYPE,
            VR::CS,
            "PROBABILITY",
        ));
        obj.put(us_el(tags::MAXIMUM_FRACTIONAL_VALUE, max));
        obj.put(us_el(tags::BITS_ALLOCATED, 8));
        obj.put(us_el(tags::BITS_STORED, 8));
        obj.put(us_el(tags::HIGH_BIT, 7));
        let half = max / 2; // max is even in these tests: half itself is background
        let mut pixels = Vec::new();
        for (k, (_, _, m)) in f.frames.iter().enumerate() {
            for (i, v) in m.iter().enumerate() {
                let wobble = ((k + i) % 3) as u16;
                let value = if *v == 1 {
                    half + 1 + wobble
                } else {
                    half - wobble
                };
                pixels.push(value as u8);
            }
        }
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(pixels),
        ));
        obj
    }

    #[test]
    fn reads_fractional() {
        let f = Fixture::new();
        for max in [200u16, 254] {
            f.assert_matches(&read_seg(&encode(fractional(&f, max))).unwrap());
            // implicit VR: pixel data comes back as OW words
            let implicit =
                encode_file(fractional(&f, max), uids::IMPLICIT_VR_LITTLE_ENDIAN).unwrap();
            f.assert_matches(&read_seg(&implicit).unwrap());
        }
    }

    #[test]
    fn fractional_needs_8_bits_and_a_maximum() {
        let f = Fixture::new();
        let mut obj = fractional(&f, 200);
        obj.remove_element(tags::MAXIMUM_FRACTIONAL_VALUE);
        let err = read_seg(&encode(obj)).unwrap_err();
        assert!(
            matches!(
                err,
                SegError::MissingAttribute {
                    keyword: "MaximumFractionalValue",
                    ..
                }
            ),
            "{err}"
        );
        let mut obj = fractional(&f, 200);
        obj.put(us_el(tags::BITS_ALLOCATED, 1));
        let err = read_seg(&encode(obj)).unwrap_err();
        assert!(
            matches!(
                err,
                SegError::InvalidAttribute {
                    keyword: "BitsAllocated",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn segment_number_from_shared_groups() {
        let f = Fixture {
            frames: Fixture::new()
                .frames
                .into_iter()
                .filter(|fr| fr.0 == 1)
                .collect(),
            ..Fixture::new()
        };
        let mut obj = build_seg_object(&f.spec()).unwrap();
        for i in 0..f.frames.len() {
            edit_item(
                &mut obj,
                tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
                i,
                |it| {
                    it.remove_element(tags::SEGMENT_IDENTIFICATION_SEQUENCE);
                },
            );
        }
        edit_item(&mut obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, 0, |it| {
            it.put(seq_el(
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                vec![item(vec![us_el(tags::REFERENCED_SEGMENT_NUMBER, 1)])],
            ));
        });
        f.assert_matches(&read_seg(&encode(obj)).unwrap());
    }

    #[test]
    fn optional_references_may_be_absent() {
        let mut obj = fixture_object();
        obj.remove_element(tags::REFERENCED_SERIES_SEQUENCE);
        edit_item(
            &mut obj,
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            0,
            |it| {
                it.remove_element(tags::DERIVATION_IMAGE_SEQUENCE);
                it.remove_element(tags::PLANE_POSITION_SEQUENCE);
            },
        );
        let seg = read_seg(&encode(obj)).unwrap();
        assert_eq!(seg.referenced_series_uid, None);
        assert_eq!(seg.frames[0].source_sop_uid, None);
        assert_eq!(seg.frames[0].position, None);
        assert!(seg.frames[1].source_sop_uid.is_some());
    }

    #[test]
    fn error_not_a_seg() {
        let ct = InMemDicomObject::from_element_iter([
            text_el(tags::SOP_CLASS_UID, VR::UI, CT),
            text_el(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4"),
            text_el(tags::MODALITY, VR::CS, "CT"),
            us_el(tags::ROWS, 2),
            us_el(tags::COLUMNS, 2),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(vec![0u8; 8])),
        ]);
        let err = read_seg(&encode(ct.clone())).unwrap_err();
        assert!(
            matches!(&err, SegError::NotSeg { sop_class } if sop_class == CT),
            "{err}"
        );
        assert!(err.to_string().contains(CT));

        // file meta says SEG, the data set says CT: the data set decides
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid(SEG_SOP_CLASS_UID)
            .media_storage_sop_instance_uid("1.2.3.4")
            .build()
            .unwrap();
        let mut bytes = Vec::new();
        ct.with_exact_meta(meta).write_all(&mut bytes).unwrap();
        let err = read_seg(&bytes).unwrap_err();
        assert!(
            matches!(&err, SegError::NotSeg { sop_class } if sop_class == CT),
            "{err}"
        );
    }

    #[test]
    fn error_truncated_pixel_data() {
        let mut obj = fixture_object();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(vec![0xFFu8; 6]),
        ));
        let err = read_seg(&encode(obj)).unwrap_err();
        match &err {
            SegError::PixelDataTooShort {
                needed_bits,
                actual_bits,
                frames,
                ..
            } => assert_eq!((*needed_bits, *actual_bits, *frames), (60, 48, 4)),
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("need 60 bits"), "{err}");
    }

    #[test]
    fn error_missing_segment_sequence() {
        let mut obj = fixture_object();
        obj.remove_element(tags::SEGMENT_SEQUENCE);
        let err = read_seg(&encode(obj)).unwrap_err();
        assert!(
            matches!(
                err,
                SegError::MissingAttribute {
                    keyword: "SegmentSequence",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("SegmentSequence"));
    }

    #[test]
    fn error_missing_required_attributes() {
        for (tag, keyword) in [
            (tags::SOP_INSTANCE_UID, "SOPInstanceUID"),
            (tags::ROWS, "Rows"),
            (tags::COLUMNS, "Columns"),
            (tags::NUMBER_OF_FRAMES, "NumberOfFrames"),
            (tags::BITS_ALLOCATED, "BitsAllocated"),
            (tags::SEGMENTATION_TYPE, "SegmentationType"),
            (tags::PIXEL_DATA, "PixelData"),
            (
                tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
                "PerFrameFunctionalGroupsSequence",
            ),
        ] {
            let mut obj = fixture_object();
            obj.remove_element(tag);
            let err = read_seg(&encode(obj)).unwrap_err();
            assert!(
                matches!(&err, SegError::MissingAttribute { keyword: k, .. } if *k == keyword),
                "{keyword}: {err}"
            );
            assert!(err.to_string().contains(keyword));
        }
        let mut obj = fixture_object();
        edit_item(&mut obj, tags::SEGMENT_SEQUENCE, 1, |it| {
            it.remove_element(tags::SEGMENT_NUMBER);
        });
        let err = read_seg(&encode(obj)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required attribute SegmentNumber in SegmentSequence item 2"
        );
    }

    #[test]
    fn error_frame_without_segment() {
        let mut obj = fixture_object();
        edit_item(
            &mut obj,
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            1,
            |it| {
                it.remove_element(tags::SEGMENT_IDENTIFICATION_SEQUENCE);
            },
        );
        let err = read_seg(&encode(obj)).unwrap_err();
        assert!(
            matches!(err, SegError::FrameWithoutSegment { frame: 2 }),
            "{err}"
        );
    }

    #[test]
    fn error_unknown_segment() {
        let mut obj = fixture_object();
        edit_item(
            &mut obj,
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            2,
            |it| {
                it.put(seq_el(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item(vec![us_el(tags::REFERENCED_SEGMENT_NUMBER, 9)])],
                ));
            },
        );
        let err = read_seg(&encode(obj)).unwrap_err();
        assert!(
            matches!(
                err,
                SegError::UnknownSegment {
                    frame: 3,
                    segment: 9
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn error_frame_count_mismatch() {
        let mut obj = fixture_object();
        obj.put(text_el(tags::NUMBER_OF_FRAMES, VR::IS, "3"));
        let err = read_seg(&encode(obj)).unwrap_err();
        assert!(
            matches!(
                err,
                SegError::InvalidAttribute {
                    keyword: "PerFrameFunctionalGroupsSequence",
                    ..
                }
            ),
            "{err}"
        );
    }

    /// Replace the 20-byte Explicit VR LE transfer syntax value in place.
    fn with_transfer_syntax(bytes: &[u8], ts: &[u8; 20]) -> Vec<u8> {
        let needle = b"1.2.840.10008.1.2.1\0";
        let at = bytes.windows(20).position(|w| w == needle).unwrap();
        let mut out = bytes.to_vec();
        out[at..at + 20].copy_from_slice(ts);
        out
    }

    #[test]
    fn error_compressed_and_unsupported_syntaxes() {
        let bytes = write_seg(&Fixture::new().spec()).unwrap();
        // Native pixel data under a compressed syntax's name.
        let rle = with_transfer_syntax(&bytes, b"1.2.840.10008.1.2.5\0");
        let err = read_seg(&rle).unwrap_err();
        assert!(matches!(&err, SegError::InvalidAttribute { keyword: "PixelData", reason, .. } if reason == "native pixel data in a compressed transfer syntax"), "{err}");
        let unknown = with_transfer_syntax(&bytes, b"1.2.840.10008.1.2.9\0");
        let err = read_seg(&unknown).unwrap_err();
        assert!(matches!(&err, SegError::Compressed { transfer_syntax } if transfer_syntax == "1.2.840.10008.1.2.9"), "{err}");
        let be = with_transfer_syntax(&bytes, b"1.2.840.10008.1.2.2\0");
        let err = read_seg(&be).unwrap_err();
        assert!(
            matches!(err, SegError::UnsupportedTransferSyntax { .. }),
            "{err}"
        );
    }

    #[test]
    fn deflated_seg_reads_as_its_inflated_form() {
        use std::io::Write;
        let bytes = write_seg(&Fixture::new().spec()).unwrap();
        let start = walk_meta(&bytes, 132).unwrap().dataset_start;
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid(SEG_SOP_CLASS_UID)
            .media_storage_sop_instance_uid("1.2.3.4")
            .build()
            .unwrap();
        let mut deflated = vec![0u8; 128];
        deflated.extend_from_slice(b"DICM");
        meta.write(&mut deflated).unwrap();
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&bytes[start..]).unwrap();
        deflated.extend(z.finish().unwrap());
        assert_eq!(read_seg(&deflated).unwrap(), read_seg(&bytes).unwrap());
        // Not deflate data: an error, no panic.
        let mut broken = deflated[..deflated.len() - 40].to_vec();
        broken.extend_from_slice(&[0xFF; 40]);
        assert!(read_seg(&broken).is_err());
    }

    #[test]
    fn error_not_dicom() {
        for bytes in [&b""[..], b"hello world", &[0u8; 300]] {
            let err = read_seg(bytes).unwrap_err();
            assert!(matches!(err, SegError::NotDicom { .. }), "{err}");
        }
    }

    #[test]
    fn huge_declared_length_is_refused_before_parsing() {
        let bytes = write_seg(&Fixture::new().spec()).unwrap();
        let header = [0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
        let at = bytes.windows(8).rposition(|w| w == header).unwrap();
        let mut bad = bytes.clone();
        bad[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let err = read_seg(&bad).unwrap_err();
        assert!(matches!(err, SegError::Malformed { .. }), "{err}");
    }

    #[test]
    fn binary_value_of_odd_length_is_refused_before_parsing() {
        // dicom-parser would read one US and go on mid-value, out of step
        let bytes = write_seg(&Fixture::new().spec()).unwrap();
        let header = [0x28, 0x00, 0x02, 0x01, b'U', b'S', 2, 0]; // HighBit
        let at = bytes.windows(8).position(|w| w == header).unwrap();
        let mut bad = bytes.clone();
        bad[at + 6] = 3;
        let err = read_seg(&bad).unwrap_err();
        assert!(err.to_string().contains("not a multiple of 2"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let bytes = write_seg(&Fixture::new().spec()).unwrap();
        let meta_end = 132 + 12 + le32(&bytes, 132 + 8).unwrap() as usize;
        let mut deep = bytes[..meta_end].to_vec();
        for _ in 0..10_000 {
            // (0008,1115) SQ of undefined length, then an item of undefined length
            deep.extend_from_slice(&[
                0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let err = read_seg(&deep).unwrap_err();
        assert!(err.to_string().contains("nest deeper"), "{err}");
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        let f = Fixture::new();
        let bytes = write_seg(&f.spec()).unwrap();
        let check = |input: &[u8]| -> Result<Seg, SegError> {
            let result = read_seg(input);
            match &result {
                Err(SegError::ParserPanicked) => panic!("dicom-object panicked"),
                Ok(seg) => {
                    assert!(seg
                        .frames
                        .iter()
                        .all(|fr| fr.mask.len() == seg.rows * seg.columns));
                }
                Err(_) => {}
            }
            result
        };
        for len in 0..bytes.len() {
            assert!(
                check(&bytes[..len]).is_err(),
                "truncated to {len} bytes parsed"
            );
            if (132..400).contains(&len) {
                // the same truncation without the preamble (meta group and
                // the start of the data set; the rest is as above)
                assert!(check(&bytes[132..len]).is_err());
            }
        }
        // every byte flipped once, the pattern rotating (a debug build parses
        // slowly: all four patterns on every byte would take 4 times longer)
        let mut flipped = bytes.clone();
        for i in 0..bytes.len() {
            let pattern = [0xFFu8, 0x80, 0x01, 0x10][i % 4];
            flipped[i] ^= pattern;
            let _ = check(&flipped);
            flipped[i] ^= pattern;
        }
        // flipping a pixel bit changes exactly one mask value
        let seg = check(&bytes).unwrap();
        let last = bytes.len() - 2; // last pixel data byte holding bits 48..55
        flipped[last] ^= 0x01; // bit 48 = frame 3 (0-based), pixel 3
        let flipped_seg = check(&flipped).unwrap();
        assert_ne!(seg.frames[3].mask[3], flipped_seg.frames[3].mask[3]);
    }

    #[test]
    fn write_spec_is_validated() {
        let f = Fixture::new();
        let expect = |spec: &SegWriteSpec, what: &str| {
            let err = write_seg(spec).unwrap_err();
            assert!(matches!(err, SegError::InvalidSpec { .. }), "{err}");
            assert!(err.to_string().contains(what), "{err} lacks {what}");
        };
        let mut frames = f.frames.clone();
        frames[1].2.pop();
        expect(
            &SegWriteSpec {
                frames: &frames,
                ..f.spec()
            },
            "mask has 14 values",
        );
        let mut frames = f.frames.clone();
        frames[0].0 = 7;
        expect(
            &SegWriteSpec {
                frames: &frames,
                ..f.spec()
            },
            "unknown segment 7",
        );
        let mut frames = f.frames.clone();
        frames[0].1 = 3;
        expect(
            &SegWriteSpec {
                frames: &frames,
                ..f.spec()
            },
            "names source 3",
        );
        let mut frames = f.frames.clone();
        frames[2].2[0] = 2;
        expect(
            &SegWriteSpec {
                frames: &frames,
                ..f.spec()
            },
            "other than 0 or 1",
        );
        let mut frames = f.frames.clone();
        frames.push(frames[0].clone());
        expect(
            &SegWriteSpec {
                frames: &frames,
                ..f.spec()
            },
            "repeats segment 1 on source 0",
        );
        expect(
            &SegWriteSpec {
                frames: &[],
                ..f.spec()
            },
            "no frames",
        );
        let dup = vec![f.segments[0].clone(), f.segments[0].clone()];
        expect(
            &SegWriteSpec {
                segments: &dup,
                ..f.spec()
            },
            "appears twice",
        );
        expect(
            &SegWriteSpec {
                seg_sop_uid: "1.2.03".into(),
                ..f.spec()
            },
            "seg_sop_uid",
        );
        expect(
            &SegWriteSpec {
                rows: 0,
                ..f.spec()
            },
            "image size",
        );
        expect(
            &SegWriteSpec {
                orientation: [1.0, 0.0, 0.0, 2.0, 0.0, 0.0],
                ..f.spec()
            },
            "orientation",
        );
        expect(
            &SegWriteSpec {
                pixel_spacing: [0.0, 1.0],
                ..f.spec()
            },
            "pixel_spacing",
        );
        let mut segments = f.segments.clone();
        segments[0].label = "a\\b".into();
        expect(
            &SegWriteSpec {
                segments: &segments,
                ..f.spec()
            },
            "backslash",
        );
    }

    #[test]
    fn ds_values_fit_16_characters() {
        for v in [
            0.0,
            -0.0,
            2.5,
            -123.456_789_012_345_67,
            0.1 + 0.2,
            1e-20,
            -7.25e-5,
            123_456_789_012_345_680.0,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let s = format_ds(v);
            assert!(s.len() <= 16, "{v} -> {s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - v).abs() <= v.abs() * 1e-7, "{v} -> {s}");
        }
        assert_eq!(format_ds(-100.25), "-100.25");
    }

    #[test]
    fn derived_uids_are_valid() {
        for parts in [&["a"][..], &["", ""], &["x"; 5]] {
            let uid = derived_uid(parts);
            check_uid("derived", &uid).unwrap();
        }
        assert_ne!(derived_uid(&["a", "b"]), derived_uid(&["ab"]));
    }
}
