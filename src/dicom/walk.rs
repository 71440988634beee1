//! Byte-level DICOM walker: owns locating the top-level Pixel Data element
//! (byte offsets for the header / pixel / trailer split) and reading the
//! summary attributes, without building a data set in memory.
//!
//! Every length is checked against the input (or its enclosing container)
//! before use, nesting is limited to [`MAX_DEPTH`] sequences, and every loop
//! iteration consumes at least 8 bytes, so arbitrary input terminates quickly
//! with an error instead of panicking or allocating.

use super::{tag_string, DicomError, DicomSummary, PixelSpan};
use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Maximum sequence nesting depth accepted.
pub(crate) const MAX_DEPTH: usize = 64;
/// Longest summary string value that is read (longer values are cut).
const MAX_SUMMARY_VALUE: usize = 1024;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIM: (u16, u16) = (0xFFFE, 0xE00D);
const SEQ_DELIM: (u16, u16) = (0xFFFE, 0xE0DD);
/// Pixel Data, Float Pixel Data, Double Float Pixel Data.
const PIXEL_TAGS: [(u16, u16); 3] = [(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)];

const TS_IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub(crate) const TS_EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const TS_DEFLATED: [&str; 2] = ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"];

/// What the walker found.
#[derive(Debug)]
pub(crate) struct Walked {
    pub pixel: Option<PixelSpan>,
    pub summary: DicomSummary,
}

/// Encoding of a data set.
#[derive(Debug, Clone, Copy)]
struct Syntax {
    explicit: bool,
    big: bool,
}

const EXPLICIT_LE: Syntax = Syntax {
    explicit: true,
    big: false,
};
const IMPLICIT_LE: Syntax = Syntax {
    explicit: false,
    big: false,
};

/// A decoded element (or item / delimiter) header.
#[derive(Debug, Clone, Copy)]
struct Header {
    tag: (u16, u16),
    /// None for implicit VR and for item / delimiter tags.
    vr: Option<[u8; 2]>,
    len: u32,
    start: usize,
    value_start: usize,
}

impl Header {
    /// End of a defined-length value (already checked to be within bounds).
    fn value_end(&self) -> usize {
        self.value_start + self.len as usize
    }
}

/// Where the file meta group starts: after the preamble and "DICM", after "DICM" alone, or at
/// 0 for a bare meta group.
fn meta_start(bytes: &[u8]) -> Result<usize, DicomError> {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Ok(132)
    } else if bytes.starts_with(b"DICM") {
        Ok(4)
    } else if bytes.starts_with(&[0x02, 0x00]) {
        // file meta group without preamble and magic (dcmtk reads these)
        Ok(0)
    } else {
        Err(DicomError::Unsupported {
            reason: "no DICOM file meta: no 'DICM' magic code at offset 128 or 0 \
                     (a bare data set without file meta group, or not DICOM at all)"
                .to_string(),
        })
    }
}

/// Deflated Explicit VR Little Endian (PS3.5 A.5): the file meta group as usual, then the
/// data set in Explicit VR Little Endian as one raw deflate stream (RFC 1951).
pub(crate) const TS_DEFLATED_EXPLICIT: &str = "1.2.840.10008.1.2.1.99";
const TS_EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// Largest inflated data set accepted: deflate reaches ratios of 1,000:1, so a small hostile
/// file could otherwise ask for gigabytes.
pub(crate) const MAX_INFLATED: u64 = 1 << 30;

/// The same file in Explicit VR Little Endian, when `bytes` is in Deflated Explicit VR Little
/// Endian; `None` for any other transfer syntax. Preamble and magic are kept, the meta group
/// is kept but for its TransferSyntaxUID (and the group length that counts it), and the data
/// set is inflated. What reads attributes or pixels of a deflated file reads this; the store
/// keeps the file's own bytes.
///
/// The standard's stream is raw deflate; a zlib-wrapped one, which some writers produced, is
/// read too. A damaged or over-long stream is an error naming its offset. A file whose meta
/// group cannot be read is not known to be deflated: `None`.
pub(crate) fn inflate(bytes: &[u8]) -> Result<Option<Vec<u8>>, DicomError> {
    use std::io::Read;
    let mut w = Walker::new(bytes);
    // A file with no readable meta group is not deflated: the walker says what is wrong.
    let Some((end, ts)) = meta_start(bytes).and_then(|start| w.walk_meta(start)).ok() else {
        return Ok(None);
    };
    if ts.as_deref() != Some(TS_DEFLATED_EXPLICIT) {
        return Ok(None);
    }
    let start = meta_start(bytes)?;
    // The meta group again, with the new transfer syntax.
    let mut out = bytes[..start].to_vec();
    let mut group_length_at = None;
    let mut pos = start;
    while pos < end {
        let h = w.read_header(pos, end, EXPLICIT_LE)?;
        match h.tag {
            (0x0002, 0x0000) => {
                group_length_at = Some(out.len() + (h.value_start - h.start));
                out.extend_from_slice(&bytes[h.start..h.value_end()]);
            }
            (0x0002, 0x0010) => {
                let mut uid = TS_EXPLICIT_LE.as_bytes().to_vec();
                uid.push(0);
                out.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
                out.extend_from_slice(&(uid.len() as u16).to_le_bytes());
                out.extend_from_slice(&uid);
            }
            _ => out.extend_from_slice(&bytes[h.start..h.value_end()]),
        }
        pos = h.value_end();
    }
    if let Some(at) = group_length_at {
        let counted = (out.len() - (at + 4)) as u32;
        out[at..at + 4].copy_from_slice(&counted.to_le_bytes());
    }
    let meta_len = out.len();
    let stream = &bytes[end..];
    let damaged = |why: String| DicomError::Malformed {
        offset: end as u64,
        tag: "-".to_string(),
        reason: format!("deflated data set: {why}"),
    };
    let read = |reader: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), DicomError> {
        out.truncate(meta_len);
        reader.take(MAX_INFLATED + 1).read_to_end(out).map_err(|e| damaged(e.to_string()))?;
        if (out.len() - meta_len) as u64 > MAX_INFLATED {
            return Err(damaged(format!("inflates to more than {MAX_INFLATED} bytes")));
        }
        Ok(())
    };
    let raw = read(&mut flate2::read::DeflateDecoder::new(stream), &mut out);
    if let Err(e) = raw {
        // A zlib header (CMF 0x78, and a check value that divides by 31).
        let zlib = stream.len() >= 2 && stream[0] == 0x78 && u16::from_be_bytes([stream[0], stream[1]]).is_multiple_of(31);
        if !zlib {
            return Err(e);
        }
        read(&mut flate2::read::ZlibDecoder::new(stream), &mut out)?;
    }
    Ok(Some(out))
}

/// Walk a whole file. See the module docs for the guarantees.
pub(crate) fn walk(bytes: &[u8]) -> Result<Walked, DicomError> {
    let mut w = Walker::new(bytes);
    let (_, syntax) = w.walk_file()?;
    let bits = w.bits_allocated;
    Ok(Walked {
        pixel: w.pixel.map(|mut p| {
            p.bits_allocated = bits;
            p.big_endian = syntax.big;
            p
        }),
        summary: w.summary,
    })
}

fn no_transfer_syntax() -> DicomError {
    DicomError::Unsupported {
        reason: "file meta group has no TransferSyntaxUID (0002,0010)".to_string(),
    }
}

/// A top-level element's tag and the range of its bytes (header and value).
pub(crate) type ElementSpan = ((u16, u16), std::ops::Range<usize>);

/// The top-level layout of a file's header (its bytes before the top-level pixel data): what
/// a three-way merge of headers splices.
pub(crate) struct TopLevel {
    /// Where the data set starts: the preamble, the magic and the file meta group come before.
    pub dataset_start: usize,
    pub transfer_syntax: String,
    /// Each top-level data set element before the pixel data, with its bytes' range (header
    /// and value; a sequence with all its items).
    pub elements: Vec<ElementSpan>,
}

/// Walk a file like [`walk`], and list its top-level elements up to the pixel data.
pub(crate) fn top_level(bytes: &[u8]) -> Result<TopLevel, DicomError> {
    let mut w = Walker::new(bytes);
    w.elements = Some(Vec::new());
    let (dataset_start, _) = w.walk_file()?;
    let transfer_syntax = w.summary.transfer_syntax.take().unwrap_or_default();
    Ok(TopLevel { dataset_start, transfer_syntax, elements: w.elements.unwrap_or_default() })
}

/// The layout of one sequence element (header and value, as [`TopLevel`] lists them): what a
/// three-way merge splices inside a sequence. Ranges are within the element's bytes.
#[derive(Debug)]
pub(crate) struct SequenceLayout {
    /// Where the value starts: the tag, VR and length come before (the length is the four
    /// bytes just before this).
    pub value_start: usize,
    /// Whether the value has a defined length (else it ends with a sequence delimitation item).
    pub defined: bool,
    pub items: Vec<ItemLayout>,
}

/// One item of a [`SequenceLayout`].
#[derive(Debug)]
pub(crate) struct ItemLayout {
    /// Whether the item has a defined length (else it ends with an item delimitation item).
    pub defined: bool,
    /// Each element of the item's data set, with its bytes' range.
    pub elements: Vec<ElementSpan>,
}

/// The items of `element`, the bytes of one element of a data set in transfer syntax `ts`,
/// when it is a sequence (`None` for any other element, and for UN of undefined length,
/// whose content is encoded otherwise). Errors are for bytes that do not walk as one element.
pub(crate) fn sequence_layout(element: &[u8], ts: &str) -> Result<Option<SequenceLayout>, DicomError> {
    let syn = syntax_of(ts)?;
    let mut w = Walker::new(element);
    w.checking = false;
    let h = w.read_header(0, element.len(), syn)?;
    let sequence = if h.len == UNDEFINED { h.vr != Some(*b"UN") && !PIXEL_TAGS.contains(&h.tag) } else { parser_vr(&h) == VR::SQ };
    if !sequence || h.tag.0 == 0xFFFE {
        return Ok(None);
    }
    let defined = h.len != UNDEFINED;
    let limit = if defined { h.value_end() } else { element.len() };
    let item_syn = Syntax { explicit: false, big: syn.big };
    let (mut pos, mut items) = (h.value_start, Vec::new());
    let malformed = |pos: usize, tag: (u16, u16), reason: &str| DicomError::Malformed { offset: pos as u64, tag: tag_string(tag), reason: reason.to_string() };
    loop {
        if defined && pos == limit {
            break;
        }
        let ih = w.read_header(pos, limit, item_syn)?;
        if ih.tag == SEQ_DELIM && !defined {
            pos = ih.value_start;
            break;
        }
        if ih.tag != ITEM {
            return Err(malformed(pos, ih.tag, "expected an item (FFFE,E000) or sequence delimiter"));
        }
        let item_defined = ih.len != UNDEFINED;
        let item_end = if item_defined { Some(ih.value_end()) } else { None };
        let item_limit = item_end.unwrap_or(limit);
        let (mut at, mut elements) = (ih.value_start, Vec::new());
        loop {
            if item_end == Some(at) {
                pos = at;
                break;
            }
            let eh = w.read_header(at, item_limit, syn)?;
            if eh.tag == ITEM_DELIM && !item_defined {
                pos = eh.value_start;
                break;
            }
            if eh.tag.0 == 0xFFFE {
                return Err(malformed(at, eh.tag, "unexpected item/delimiter tag inside a data set"));
            }
            let end = if eh.len == UNDEFINED {
                let inner = if eh.vr == Some(*b"UN") { IMPLICIT_LE } else { syn };
                w.walk_items(eh.value_start, None, inner, 1, eh.tag == PIXEL_TAGS[0])?
            } else {
                eh.value_end()
            };
            elements.push((eh.tag, at..end));
            at = end;
        }
        items.push(ItemLayout { defined: item_defined, elements });
    }
    if pos != element.len() {
        return Err(malformed(pos, h.tag, "bytes after the end of the sequence"));
    }
    Ok(Some(SequenceLayout { value_start: h.value_start, defined, items }))
}

/// How the data set of a file in transfer syntax `ts` is encoded.
fn syntax_of(ts: &str) -> Result<Syntax, DicomError> {
    Ok(match ts {
        TS_IMPLICIT_LE => IMPLICIT_LE,
        TS_EXPLICIT_BE => Syntax {
            explicit: true,
            big: true,
        },
        t if TS_DEFLATED.contains(&t) => {
            return Err(DicomError::Unsupported {
                reason: if t == TS_DEFLATED_EXPLICIT {
                    "deflated transfer syntax: to be inflated first (dicom::inflate)".to_string()
                } else {
                    "JPIP referenced deflate transfer syntax (its pixel data is a link): stored whole".to_string()
                },
            })
        }
        // every other transfer syntax (native or encapsulated) is explicit VR LE
        _ => EXPLICIT_LE,
    })
}

struct Walker<'a> {
    b: &'a [u8],
    summary: DicomSummary,
    pixel: Option<PixelSpan>,
    bits_allocated: Option<u16>,
    /// True while walking bytes that `dicom-object` will parse (everything
    /// before the top-level pixel data): see [`Walker::check_for_dicom_object`].
    checking: bool,
    /// When wanted ([`top_level`]): each top-level element before the pixel data, with the
    /// range of its bytes.
    elements: Option<Vec<ElementSpan>>,
}

impl<'a> Walker<'a> {
    /// A walker at the start of `bytes`, checking what dicom-object would misread.
    fn new(bytes: &'a [u8]) -> Self {
        Walker { b: bytes, summary: DicomSummary::default(), pixel: None, bits_allocated: None, checking: true, elements: None }
    }

    /// Walk the whole file: its file meta group (the transfer syntax goes into the summary),
    /// then its data set. Returns where the data set starts and how it is encoded.
    fn walk_file(&mut self) -> Result<(usize, Syntax), DicomError> {
        let (pos, ts) = self.walk_meta(meta_start(self.b)?)?;
        let ts = ts.ok_or_else(no_transfer_syntax)?;
        let syntax = syntax_of(&ts)?;
        self.summary.transfer_syntax = Some(ts);
        self.walk_dataset(pos, Some(self.b.len()), syntax, 0, true)?;
        Ok((pos, syntax))
    }
}

/// VRs whose explicit encoding has a 16-bit length (PS3.5 7.1.2). Every other
/// VR, including unknown ones, has 2 reserved bytes and a 32-bit length: this
/// is also how `dicom-encoding` decodes them, which keeps the walker and the
/// validating parser in agreement about every length.
fn is_short_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// The VR `dicom-object` assigns to an element: the explicit VR (unknown ones
/// become UN), or in implicit VR the dictionary's (OW for pixel and overlay
/// data, UN for unknown tags), exactly as `dicom-encoding` resolves it.
fn parser_vr(h: &Header) -> VR {
    match h.vr {
        Some(vr) => VR::from_binary(vr).unwrap_or(VR::UN),
        None if h.tag == (0x7FE0, 0x0010) || (h.tag.0 >> 8 == 0x60 && h.tag.1 == 0x3000) => VR::OW,
        None => StandardDataDictionary
            .by_tag(Tag(h.tag.0, h.tag.1))
            .map_or(VR::UN, |e| e.vr.relaxed()),
    }
}

/// Size of one value of a binary numeric VR (1 for text and byte VRs).
fn unit_size(vr: VR) -> u32 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::AT | VR::UL | VR::SL | VR::FL | VR::OL | VR::OF => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

/// Trim DICOM padding (spaces and NULs) from a text value; None when empty.
fn text_value(raw: &[u8]) -> Option<String> {
    let raw = &raw[..raw.len().min(MAX_SUMMARY_VALUE)];
    let s = String::from_utf8_lossy(raw);
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

impl Walker<'_> {
    fn u16_at(&self, pos: usize, big: bool) -> u16 {
        let a = [self.b[pos], self.b[pos + 1]];
        if big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }

    fn u32_at(&self, pos: usize, big: bool) -> u32 {
        let a = [
            self.b[pos],
            self.b[pos + 1],
            self.b[pos + 2],
            self.b[pos + 3],
        ];
        if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    /// Decode the element header at `pos`; header and defined-length value
    /// must end at or before `limit`.
    fn read_header(&self, pos: usize, limit: usize, syn: Syntax) -> Result<Header, DicomError> {
        let truncated = |tag: String, reason: String| DicomError::Truncated {
            offset: pos as u64,
            tag,
            reason,
        };
        if pos + 8 > limit {
            let tag = if pos + 4 <= limit {
                tag_string((self.u16_at(pos, syn.big), self.u16_at(pos + 2, syn.big)))
            } else {
                "-".to_string()
            };
            return Err(truncated(
                tag,
                format!("element header runs past end of data (limit {limit})"),
            ));
        }
        let tag = (self.u16_at(pos, syn.big), self.u16_at(pos + 2, syn.big));
        let (vr, len, value_start) = if tag.0 == 0xFFFE || !syn.explicit {
            (None, self.u32_at(pos + 4, syn.big), pos + 8)
        } else {
            let vr = [self.b[pos + 4], self.b[pos + 5]];
            if !is_short_vr(vr) {
                if pos + 12 > limit {
                    return Err(truncated(
                        tag_string(tag),
                        format!("element header runs past end of data (limit {limit})"),
                    ));
                }
                (Some(vr), self.u32_at(pos + 8, syn.big), pos + 12)
            } else {
                (Some(vr), u32::from(self.u16_at(pos + 6, syn.big)), pos + 8)
            }
        };
        if len != UNDEFINED && (len as usize) > limit - value_start {
            return Err(truncated(
                tag_string(tag),
                format!(
                    "value length {len} at offset {value_start} runs past end of data (limit {limit})"
                ),
            ));
        }
        Ok(Header {
            tag,
            vr,
            len,
            start: pos,
            value_start,
        })
    }

    /// Walk the file meta group (explicit VR LE, group 0002) starting at
    /// `pos`; returns the position after it and the transfer syntax UID.
    fn walk_meta(&mut self, mut pos: usize) -> Result<(usize, Option<String>), DicomError> {
        let mut ts = None;
        let mut ms_class = None;
        let mut ms_instance = None;
        let mut seen = false;
        // (declared group length, offset where the group length counts from)
        let mut group_length: Option<(u32, usize)> = None;
        while pos + 2 <= self.b.len() && self.u16_at(pos, false) == 0x0002 {
            let h = self.read_header(pos, self.b.len(), EXPLICIT_LE)?;
            if h.len == UNDEFINED {
                return Err(DicomError::Malformed {
                    offset: pos as u64,
                    tag: tag_string(h.tag),
                    reason: "undefined length in file meta group".to_string(),
                });
            }
            let value = &self.b[h.value_start..h.value_end()];
            match h.tag.1 {
                0x0000 if !seen && value.len() == 4 => {
                    group_length = Some((self.u32_at(h.value_start, false), h.value_end()));
                }
                0x0002 => ms_class = text_value(value),
                0x0003 => ms_instance = text_value(value),
                0x0010 => ts = text_value(value),
                _ => {}
            }
            seen = true;
            pos = h.value_end();
        }
        if !seen {
            return Err(DicomError::Unsupported {
                reason: format!(
                    "no file meta group (group 0002) after the 'DICM' magic at offset {pos}"
                ),
            });
        }
        // dicom-object trusts the group length: a wrong one would make it
        // parse the data set from the wrong offset.
        if let Some((declared, from)) = group_length {
            if declared as usize != pos - from {
                return Err(DicomError::Malformed {
                    offset: from as u64 - 12,
                    tag: "(0002,0000)".to_string(),
                    reason: format!(
                        "file meta group length says {declared} bytes but the group has {}",
                        pos - from
                    ),
                });
            }
        }
        // Fallbacks for the summary, overridden by the data set's own values.
        self.summary.sop_class_uid = ms_class;
        self.summary.sop_instance_uid = ms_instance;
        Ok((pos, ts))
    }

    /// Walk data set elements from `pos`: up to `end` when given (defined
    /// length container / whole file), else up to and including an item
    /// delimitation item. `top` marks the top-level data set. Returns the
    /// position after the data set.
    fn walk_dataset(
        &mut self,
        mut pos: usize,
        end: Option<usize>,
        syn: Syntax,
        depth: usize,
        top: bool,
    ) -> Result<usize, DicomError> {
        let limit = end.unwrap_or(self.b.len());
        loop {
            if end == Some(pos) {
                return Ok(pos);
            }
            if end.is_none() && pos >= limit {
                return Err(DicomError::Truncated {
                    offset: pos as u64,
                    tag: "-".to_string(),
                    reason: "item of undefined length has no item delimitation item".to_string(),
                });
            }
            let h = self.read_header(pos, limit, syn)?;
            if h.tag.0 == 0xFFFE {
                if h.tag == ITEM_DELIM && end.is_none() {
                    return Ok(h.value_start);
                }
                return Err(DicomError::Malformed {
                    offset: pos as u64,
                    tag: tag_string(h.tag),
                    reason: "unexpected item/delimiter tag inside a data set".to_string(),
                });
            }
            let is_pixel = top && PIXEL_TAGS.contains(&h.tag) && self.pixel.is_none();
            if is_pixel {
                // dicom-object only ever sees the bytes before this element
                self.checking = false;
            }
            // errors inside a top-level element also name that element
            let within = |e: DicomError| if top { e.within(h.tag, h.start) } else { e };
            if h.len == UNDEFINED {
                // encapsulated pixel data (also nested, e.g. icons, as dicom-object does)
                let fragments = is_pixel || h.tag == PIXEL_TAGS[0];
                let inner = if h.vr == Some(*b"UN") {
                    // UN of undefined length: its content is implicit VR LE
                    self.check_for_dicom_object(
                        &h,
                        "UN of undefined length: implicit VR content \
                         inside an explicit VR data set, which dicom-object reads as explicit VR",
                    )?;
                    IMPLICIT_LE
                } else {
                    syn
                };
                let value_end = self
                    .walk_items(h.value_start, None, inner, depth + 1, fragments)
                    .map_err(within)?;
                if is_pixel {
                    self.set_pixel(&h, value_end, true);
                }
                pos = value_end;
            } else {
                if is_pixel {
                    self.set_pixel(&h, h.value_end(), false);
                } else if top && self.pixel.is_none() {
                    self.capture(&h, syn);
                }
                let vr = parser_vr(&h);
                if !is_pixel && vr == VR::SQ {
                    self.walk_items(h.value_start, Some(h.value_end()), syn, depth + 1, false)
                        .map_err(within)?;
                } else if h.len % unit_size(vr) != 0 {
                    self.check_for_dicom_object(&h, &format!(
                        "value length {} is not a multiple of {} ({vr:?}), dicom-object would lose sync",
                        h.len,
                        unit_size(vr)
                    ))?;
                }
                pos = h.value_end();
            }
            if top && self.pixel.is_none() {
                if let Some(list) = &mut self.elements {
                    list.push((h.tag, h.start..pos));
                }
            }
        }
    }

    /// Walk the items of a sequence (or the fragments of encapsulated pixel
    /// data) from `pos`: up to `end` when given, else up to and including the
    /// sequence delimitation item. Returns the position after the last item.
    fn walk_items(
        &mut self,
        mut pos: usize,
        end: Option<usize>,
        syn: Syntax,
        depth: usize,
        fragments: bool,
    ) -> Result<usize, DicomError> {
        if depth > MAX_DEPTH {
            return Err(DicomError::Malformed {
                offset: pos as u64,
                tag: "-".to_string(),
                reason: format!("sequences nested deeper than {MAX_DEPTH}"),
            });
        }
        let limit = end.unwrap_or(self.b.len());
        let mut first = true;
        loop {
            if end == Some(pos) {
                return Ok(pos);
            }
            // item tags never carry a VR, so read them as implicit
            let item_syn = Syntax {
                explicit: false,
                big: syn.big,
            };
            let h = self.read_header(pos, limit, item_syn)?;
            if fragments && first && h.tag == ITEM && h.len % 4 != 0 {
                self.check_for_dicom_object(
                    &h,
                    "basic offset table length is not a multiple of 4",
                )?;
            }
            first = false;
            match h.tag {
                SEQ_DELIM if end.is_none() => return Ok(h.value_start),
                ITEM if h.len == UNDEFINED && !fragments => {
                    pos = self.walk_dataset(h.value_start, None, syn, depth, false)?;
                }
                ITEM if h.len != UNDEFINED => {
                    if !fragments {
                        self.walk_dataset(h.value_start, Some(h.value_end()), syn, depth, false)?;
                    }
                    pos = h.value_end();
                }
                _ => {
                    return Err(DicomError::Malformed {
                        offset: pos as u64,
                        tag: tag_string(h.tag),
                        reason: if fragments {
                            "expected a pixel data fragment item of defined length".to_string()
                        } else {
                            "expected an item (FFFE,E000) or sequence delimiter".to_string()
                        },
                    })
                }
            }
        }
    }

    /// `dicom-object` (0.10) misreads some encodings that the walker accepts,
    /// after which it reads garbage lengths and may allocate gigabytes before
    /// failing. While walking bytes it will parse, refuse them up front with
    /// a [`DicomError::Parse`] (the file is then stored whole).
    fn check_for_dicom_object(&self, h: &Header, problem: &str) -> Result<(), DicomError> {
        if !self.checking {
            return Ok(());
        }
        Err(DicomError::Parse {
            reason: format!(
                "cannot read element {} at offset {}: {problem}",
                tag_string(h.tag),
                h.start
            ),
        })
    }

    fn set_pixel(&mut self, h: &Header, value_end: usize, encapsulated: bool) {
        if self.pixel.is_none() {
            self.pixel = Some(PixelSpan {
                element_start: h.start as u64,
                value_start: h.value_start as u64,
                value_end: value_end as u64,
                encapsulated,
                bits_allocated: None,
                big_endian: false,
            });
        }
    }

    /// Record a top-level (header) defined-length element's value in the summary.
    fn capture(&mut self, h: &Header, syn: Syntax) {
        let value = &self.b[h.value_start..h.value_end()];
        let us = (value.len() >= 2).then(|| self.u16_at(h.value_start, syn.big));
        let s = &mut self.summary;
        match h.tag {
            (0x0008, 0x0016) => s.sop_class_uid = text_value(value).or(s.sop_class_uid.take()),
            (0x0008, 0x0018) => {
                s.sop_instance_uid = text_value(value).or(s.sop_instance_uid.take())
            }
            (0x0008, 0x0060) => s.modality = text_value(value),
            (0x0010, 0x0010) => s.patient_name = text_value(value),
            (0x0010, 0x0020) => s.patient_id = text_value(value),
            (0x0020, 0x000D) => s.study_uid = text_value(value),
            (0x0020, 0x000E) => s.series_uid = text_value(value),
            (0x0020, 0x0013) => s.instance_number = text_value(value).and_then(|v| v.parse().ok()),
            (0x0028, 0x0008) => s.number_of_frames = text_value(value).and_then(|v| v.parse().ok()),
            (0x0028, 0x0010) => s.rows = us.map(u32::from),
            (0x0028, 0x0011) => s.columns = us.map(u32::from),
            (0x0028, 0x0100) => self.bits_allocated = us,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::{analyze, Analysis};

    /// Append an explicit VR little endian element.
    fn el(out: &mut Vec<u8>, tag: (u16, u16), vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        if is_short_vr(*vr) {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(value);
    }

    /// Append an explicit VR element header of undefined length.
    fn open(out: &mut Vec<u8>, tag: (u16, u16), vr: &[u8; 2]) {
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&[0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }

    /// Append an item / delimiter tag with a length.
    fn item(out: &mut Vec<u8>, e: u16, len: u32) {
        out.extend_from_slice(&[0xFE, 0xFF]);
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }

    /// Preamble, "DICM" and a file meta group for transfer syntax `ts`.
    fn file(ts: &str) -> Vec<u8> {
        let mut m = Vec::new();
        el(&mut m, (0x0002, 0x0001), b"OB", &[0, 1]);
        el(
            &mut m,
            (0x0002, 0x0002),
            b"UI",
            b"1.2.840.10008.5.1.4.1.1.7\0",
        );
        el(&mut m, (0x0002, 0x0003), b"UI", b"2.25.42\0");
        let mut t = ts.as_bytes().to_vec();
        if t.len() % 2 == 1 {
            t.push(0);
        }
        el(&mut m, (0x0002, 0x0010), b"UI", &t);
        el(&mut m, (0x0002, 0x0012), b"UI", b"2.25.43\0");
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        el(
            &mut out,
            (0x0002, 0x0000),
            b"UL",
            &(m.len() as u32).to_le_bytes(),
        );
        out.extend_from_slice(&m);
        out
    }

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";

    fn walked(bytes: &[u8]) -> Walked {
        walk(bytes).unwrap_or_else(|e| panic!("walk failed: {e}"))
    }

    fn not_dicom(bytes: &[u8]) -> String {
        match analyze(bytes) {
            Analysis::NotDicom { reason } => reason,
            Analysis::Dicom(l) => panic!("expected NotDicom, got {l:?}"),
        }
    }

    #[test]
    fn nesting_depth_is_bounded() {
        for (depth, ok) in [(MAX_DEPTH, true), (MAX_DEPTH + 1, false), (5000, false)] {
            let mut f = file(EXPLICIT);
            for _ in 0..depth {
                open(&mut f, (0x0040, 0xA730), b"SQ");
                item(&mut f, 0xE000, UNDEFINED);
            }
            for _ in 0..depth {
                item(&mut f, 0xE00D, 0);
                item(&mut f, 0xE0DD, 0);
            }
            match analyze(&f) {
                Analysis::Dicom(l) => assert!(ok && l.pixel.is_none(), "depth {depth} accepted"),
                Analysis::NotDicom { reason } => {
                    assert!(
                        !ok && reason.contains("nested deeper"),
                        "depth {depth}: {reason}"
                    )
                }
            }
        }
    }

    #[test]
    fn trailer_odd_lengths_and_float_pixels() {
        let mut f = file(EXPLICIT);
        el(&mut f, (0x0010, 0x0010), b"PN", b"ODD"); // odd length is accepted
        el(&mut f, (0x0028, 0x0100), b"US", &32u16.to_le_bytes());
        let start = f.len();
        el(&mut f, (0x7FE0, 0x0008), b"OF", &[0u8; 16]);
        let end = f.len();
        el(&mut f, (0xFFFC, 0xFFFC), b"OB", &[0u8; 6]); // data set trailing padding
        let Analysis::Dicom(l) = analyze(&f) else {
            panic!("rejected")
        };
        let p = l.pixel.expect("float pixel data found");
        assert_eq!(
            (p.element_start, p.value_start, p.value_end),
            (start as u64, start as u64 + 12, end as u64)
        );
        assert_eq!(p.bits_allocated, Some(32));
        assert_eq!(f.len() - end, 18, "trailer kept");
        assert_eq!(l.summary.patient_name.as_deref(), Some("ODD"));
    }

    #[test]
    fn nested_encapsulated_icon_and_un_in_trailer() {
        let mut f = file("1.2.840.10008.1.2.4.50");
        // IconImageSequence with an encapsulated icon inside the header
        open(&mut f, (0x0088, 0x0200), b"SQ");
        item(&mut f, 0xE000, UNDEFINED);
        open(&mut f, (0x7FE0, 0x0010), b"OB");
        item(&mut f, 0xE000, 0);
        item(&mut f, 0xE000, 4);
        f.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xD9]);
        item(&mut f, 0xE0DD, 0);
        item(&mut f, 0xE00D, 0);
        item(&mut f, 0xE0DD, 0);
        let start = f.len();
        open(&mut f, (0x7FE0, 0x0010), b"OB");
        item(&mut f, 0xE000, 0);
        item(&mut f, 0xE000, 2);
        f.extend_from_slice(&[1, 2]);
        item(&mut f, 0xE0DD, 0);
        let end = f.len();
        // a UN of undefined length after the pixel data (implicit VR content)
        open(&mut f, (0x0009, 0x1000), b"UN");
        item(&mut f, 0xE000, UNDEFINED);
        f.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0, b'C', b'T']);
        item(&mut f, 0xE00D, 0);
        item(&mut f, 0xE0DD, 0);
        let Analysis::Dicom(l) = analyze(&f) else {
            panic!("rejected")
        };
        let p = l.pixel.expect("pixel");
        assert!(p.encapsulated);
        assert_eq!((p.element_start, p.value_end), (start as u64, end as u64));
    }

    #[test]
    fn un_of_undefined_length_is_walked_as_implicit() {
        let mut f = file(EXPLICIT);
        open(&mut f, (0x0009, 0x1000), b"UN");
        item(&mut f, 0xE000, UNDEFINED);
        // implicit VR LE content: a nested undefined-length sequence
        f.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
        item(&mut f, 0xE000, UNDEFINED);
        f.extend_from_slice(&[0x20, 0x00, 0x0E, 0x00, 4, 0, 0, 0, b'1', b'.', b'2', 0]);
        item(&mut f, 0xE00D, 0);
        item(&mut f, 0xE0DD, 0);
        item(&mut f, 0xE00D, 0);
        item(&mut f, 0xE0DD, 0);
        el(&mut f, (0x0010, 0x0020), b"LO", b"ID");
        // the walker reads it (here with the dicom-object check off), and
        // finds the element after it
        let mut w = Walker {
            b: &f,
            summary: DicomSummary::default(),
            pixel: None,
            bits_allocated: None,
            checking: false,
            elements: None,
        };
        let (pos, _) = w.walk_meta(132).expect("meta");
        assert_eq!(
            w.walk_dataset(pos, Some(f.len()), EXPLICIT_LE, 0, true)
                .expect("walk"),
            f.len()
        );
        assert_eq!(w.summary.patient_id.as_deref(), Some("ID"));
        // but dicom-object would misread it, so the file is stored whole
        assert!(not_dicom(&f).contains("UN of undefined length"));
    }

    #[test]
    fn rejects_what_dicom_object_would_misread() {
        // wrong file meta group length
        let mut f = file(EXPLICIT);
        f[140] += 2;
        assert!(not_dicom(&f).contains("file meta group length"));
        // a US value of 3 bytes
        let mut f = file(EXPLICIT);
        el(&mut f, (0x0028, 0x0010), b"US", &[1, 0, 0]);
        assert!(not_dicom(&f).contains("not a multiple of 2"));
        // ... which is fine after the pixel data, where dicom-object never looks
        let mut f = file(EXPLICIT);
        el(&mut f, (0x7FE0, 0x0010), b"OW", &[0, 0]);
        el(&mut f, (0x0029, 0x0010), b"US", &[1, 0, 0]);
        assert!(matches!(analyze(&f), Analysis::Dicom(_)));
    }

    #[test]
    fn transfer_syntax_edge_cases() {
        let deflated = file("1.2.840.10008.1.2.1.99");
        // no deflate stream after the meta group: an error naming it
        assert!(not_dicom(&deflated).contains("deflated data set"), "{}", not_dicom(&deflated));
        // JPIP referenced deflate: its pixel data is a link; stored whole
        assert!(not_dicom(&file("1.2.840.10008.1.2.4.95")).contains("stored whole"));
        // big endian: US values and lengths are decoded big endian
        let mut f = file("1.2.840.10008.1.2.2");
        f.extend_from_slice(&[0x00, 0x28, 0x00, 0x10, b'U', b'S', 0, 2, 0x01, 0x02]);
        f.extend_from_slice(&[
            0x7F, 0xE0, 0x00, 0x10, b'O', b'W', 0, 0, 0, 0, 0, 4, 1, 2, 3, 4,
        ]);
        let w = walked(&f);
        assert_eq!(w.summary.rows, Some(0x0102));
        let p = w.pixel.expect("pixel");
        assert!(p.big_endian);
        assert_eq!(p.value_end - p.value_start, 4);
        // no meta at all, or meta without a transfer syntax
        assert!(
            not_dicom(&[0x08, 0x00, 0x05, 0x00, b'C', b'S', 0, 0]).contains("no DICOM file meta")
        );
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        el(&mut f, (0x0002, 0x0001), b"OB", &[0, 1]);
        assert!(not_dicom(&f).contains("no TransferSyntaxUID"));
    }

    #[test]
    fn magic_without_preamble_and_bare_meta() {
        let mut f = file(EXPLICIT);
        el(&mut f, (0x0010, 0x0020), b"LO", b"ID");
        el(&mut f, (0x7FE0, 0x0010), b"OB", &[9, 9]);
        for cut in [128usize, 132] {
            let g = &f[cut..];
            let Analysis::Dicom(l) = analyze(g) else {
                panic!("rejected after cutting {cut}")
            };
            assert_eq!(l.pixel.expect("pixel").value_end as usize, g.len());
            assert_eq!(l.summary.patient_id.as_deref(), Some("ID"));
        }
    }

    #[test]
    fn truncation_names_offset_and_tag() {
        let mut f = file(EXPLICIT);
        let at = f.len();
        el(&mut f, (0x0010, 0x0010), b"PN", b"NAME");
        f.truncate(f.len() - 1);
        let reason = not_dicom(&f);
        assert!(
            reason.contains(&format!("offset {at}")) && reason.contains("(0010,0010)"),
            "{reason}"
        );
    }
}
