//! JPEG extended sequential DCT decoding (ISO/IEC 10918-1 | ITU-T T.81, process 4: Huffman
//! coding, 12-bit samples), in pure Rust.
//!
//! DICOM's transfer syntax 1.2.840.10008.1.2.4.51 (JPEG Extended, processes 2 and 4) holds such
//! streams, mostly 12-bit grey images of old CT, MR and NM archives, which the `jpeg-decoder`
//! crate refuses (it decodes 8-bit samples only). This module decodes them itself, written from
//! the standard: the marker segments of Annex B, the Huffman tables of Annex C, the sequential
//! decoding procedure of Annex F.2 and the inverse DCT of Annex A.3.3.
//!
//! Decoded: frames SOF1 (extended sequential) and SOF0 (baseline) with 8 or 12-bit samples,
//! Huffman coding, 1 to 4 components with sampling factors 1 to 4 (a component sampled at an
//! integral fraction of the largest factors is brought up to full resolution by replicating its
//! samples), interleaved and non-interleaved scans (each component in exactly one scan),
//! quantization tables of 8 or 16-bit entries, restart intervals (DRI and RSTm). APPn, COM and
//! other segments are skipped by their length. No colour transform is made: the samples are
//! the components as coded (YCbCr stays YCbCr), as DICOM's Photometric Interpretation says.
//! Refused with [`Jpeg12Error::Unsupported`], never decoded wrongly: the progressive (SOF2),
//! lossless (SOF3), hierarchical (SOF5 to SOF7, DHP, EXP) and arithmetic-coded (SOF9 and up)
//! processes, JPEG-LS, other precisions, more than 4 components, sampling factors that are not
//! integral fractions of the largest, and a number of lines left to a DNL marker.
//!
//! A sequential scan's Ss, Se, Ah and Al are fixed by the standard (0, 63, 0, 0) and carry no
//! information; a stream with other values there is decoded as the sequential scan it is, as
//! libjpeg (and so dcmtk) does: pydicom's `JPEG-lossy.dcm` has Se 0.
//!
//! Storage tools are fed damaged files: whatever the input, [`decode`] returns (no panic, no
//! overflow, no output larger than [`MAX_SAMPLES`], nothing allocated for a scan whose coded
//! data is too short to hold it), and coded data that runs out or breaks the code is an error
//! naming the byte offset, never silently filled in.

use thiserror::Error;

use crate::jpegmarker::{be16, marker_name, segment_end, BitReader, Fault, Stuffing};

/// Most samples (columns × lines × components) a frame may have: 2^28, half a gigabyte of
/// output. Far above any DICOM frame, far below what a damaged header could ask for.
pub(crate) const MAX_SAMPLES: u64 = 1 << 28;

/// The zig-zag order of Figure A.6: `ZIGZAG[k]` is the index (row × 8 + column) in the 8x8
/// block of the k-th coefficient of the coded sequence.
const ZIGZAG: [u8; 64] = zigzag();

/// Walk the anti-diagonals of the block, up and to the right on even ones (row + column even),
/// down and to the left on odd ones, turning at the edges.
const fn zigzag() -> [u8; 64] {
    let mut order = [0u8; 64];
    let (mut row, mut col) = (0usize, 0usize);
    let mut k = 0;
    while k < 64 {
        order[k] = (row * 8 + col) as u8;
        k += 1;
        if (row + col) % 2 == 0 {
            if col == 7 {
                row += 1;
            } else if row == 0 {
                col += 1;
            } else {
                row -= 1;
                col += 1;
            }
        } else if row == 7 {
            col += 1;
        } else if col == 0 {
            row += 1;
        } else {
            row += 1;
            col -= 1;
        }
    }
    order
}

/// Most blocks an MCU of an interleaved scan may hold (B.2.3).
const MAX_BLOCKS_PER_MCU: u32 = 10;

/// A decoded JPEG image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// Columns (X of the frame header).
    pub width: u32,
    /// Lines (Y of the frame header).
    pub height: u32,
    /// Number of components (1..=4).
    pub components: u8,
    /// Sample precision P from the frame header (8 or 12).
    pub precision: u8,
    /// The samples, row by row, a pixel's components together (in the order of the frame
    /// header), each component at full resolution: width*height*components values, each
    /// below 2^precision.
    pub samples: Vec<u16>,
}

/// Why a stream could not be decoded. Every variant but the first (which is about byte 0)
/// names the byte offset in the stream where the trouble is, and the marker or scan involved,
/// so that a damaged file can be looked at.
#[derive(Debug, Error)]
pub(crate) enum Jpeg12Error {
    /// The stream does not start with the SOI marker: it is not JPEG (or not its start).
    #[error("not a JPEG stream: it starts with {found} where the SOI marker FF D8 should be")]
    NoSoi { found: String },
    /// Where a marker should start there is another byte.
    #[error("byte {offset}: expected a marker (FF xx), found {found}")]
    ExpectedMarker { offset: usize, found: String },
    /// The stream ends inside a marker segment.
    #[error("{marker} at byte {offset}: the stream ends inside the segment ({needed} bytes needed, {left} left)")]
    TruncatedSegment {
        offset: usize,
        marker: String,
        needed: usize,
        left: usize,
    },
    /// The stream ends (or says EOI) before the image is whole.
    #[error("byte {offset}: the stream ends before {missing}")]
    Incomplete { offset: usize, missing: String },
    /// A marker or marker segment breaks the standard.
    #[error("{marker} at byte {offset}: {reason}")]
    Invalid {
        offset: usize,
        marker: String,
        reason: String,
    },
    /// Valid JPEG that this decoder does not implement.
    #[error("{marker} at byte {offset}: unsupported: {reason}")]
    Unsupported {
        offset: usize,
        marker: String,
        reason: String,
    },
    /// The frame is larger than [`MAX_SAMPLES`].
    #[error("{marker} at byte {offset}: {width}x{height} pixels of {components} components are {samples} samples, more than the {max} this decoder accepts", max = MAX_SAMPLES)]
    TooLarge {
        offset: usize,
        marker: String,
        width: u32,
        height: u32,
        components: u8,
        samples: u64,
    },
    /// A scan uses a Huffman or quantization table that no segment before it defined.
    #[error("SOS (FF DA) at byte {offset}: component {component} uses {table} table {id}, which no segment before the scan defines")]
    MissingTable {
        offset: usize,
        component: u8,
        table: &'static str,
        id: u8,
    },
    /// The entropy-coded data of a scan ends (at a marker or the end of the stream) before the
    /// blocks it must code.
    #[error("scan at byte {scan}: the coded data ends at byte {offset}, in {place}")]
    OutOfData {
        scan: usize,
        offset: usize,
        place: String,
    },
    /// The entropy-coded data of a scan holds a code no encoder writes.
    #[error("scan at byte {scan}: corrupt coded data near byte {offset}, in {place}: {reason}")]
    Corrupt {
        scan: usize,
        offset: usize,
        place: String,
        reason: &'static str,
    },
    /// A restart interval is not followed by the restart marker it should be.
    #[error("scan at byte {scan}: expected the restart marker RST{expected} (FF D{expected}) at byte {offset}, found {found}")]
    Restart {
        scan: usize,
        offset: usize,
        expected: u8,
        found: String,
    },
}

/// Decode a JPEG stream (one frame, from SOI to EOI) of the sequential DCT processes with
/// Huffman coding into its samples.
///
/// Marker segments that do not bear on the decoding (APPn, COM, and the like) are skipped by
/// their length. A stream that ends after its last scan without EOI is accepted when every
/// component was decoded: the image is whole.
pub(crate) fn decode(stream: &[u8]) -> Result<Decoded, Jpeg12Error> {
    crate::jpegmarker::check_soi(stream)?;
    let mut at = 2;
    let mut frame: Option<Frame> = None;
    let mut tables = Tables::default();
    let mut restart_interval: u32 = 0;
    loop {
        let (offset, marker, body, next) = match crate::jpegmarker::next_segment(stream, at)? {
            crate::jpegmarker::Step::End { offset } => return finish(frame, offset),
            crate::jpegmarker::Step::Segment { offset, marker, body, next } => (offset, marker, body, next),
        };
        match marker {
            0xC0 | 0xC1 => {
                if frame.is_some() {
                    return Err(invalid(offset, marker, "a second frame header (one frame per stream)"));
                }
                frame = Some(Frame::parse(body, offset, marker)?);
            }
            0xC2 => return Err(unsupported(offset, marker, "the progressive DCT process")),
            0xC3 => return Err(unsupported(offset, marker, "the lossless process")),
            0xC5..=0xC7 | 0xDE | 0xDF => return Err(unsupported(offset, marker, "the hierarchical (differential) processes")),
            0xC9..=0xCB | 0xCD..=0xCF => return Err(unsupported(offset, marker, "arithmetic coding")),
            0xF7 => return Err(unsupported(offset, marker, "JPEG-LS (another standard, ISO/IEC 14495-1)")),
            0xC4 => tables.parse_dht(body, offset)?,
            0xDB => tables.parse_dqt(body, offset)?,
            0xDD => restart_interval = parse_dri(body, offset)?,
            0xDC => return Err(unsupported(offset, marker, "a DNL marker (number of lines given after the first scan)")),
            0xDA => {
                let Some(f) = frame.as_mut() else {
                    return Err(invalid(offset, marker, "a scan before the frame header"));
                };
                let scan = ScanHeader::parse(body, offset, f, &tables)?;
                at = decode_scan(stream, next, f, &scan, restart_interval)?;
                continue;
            }
            // APPn, COM, DAC (meaningless with Huffman coding), JPG, JPGn and reserved markers.
            _ => {}
        }
        at = next;
    }
}

/// The image, once the stream says EOI (or ends) at `offset`: an error unless every
/// component was decoded. Components sampled below the largest factors are replicated up to
/// full resolution.
fn finish(frame: Option<Frame>, offset: usize) -> Result<Decoded, Jpeg12Error> {
    let Some(f) = frame else {
        return Err(Jpeg12Error::Incomplete { offset, missing: "a frame header (SOF0 or SOF1) and a scan".to_string() });
    };
    let missing: Vec<String> = f.comps.iter().filter(|c| c.plane.is_none()).map(|c| c.id.to_string()).collect();
    if !missing.is_empty() {
        return Err(Jpeg12Error::Incomplete { offset, missing: format!("a scan of component(s) {}", missing.join(", ")) });
    }
    let (w, h) = (f.width as usize, f.height as usize);
    let nf = f.comps.len();
    let mut comps = f.comps;
    let samples = if nf == 1 {
        // One component: its plane is the image (xi = X, yi = Y).
        comps[0].plane.take().unwrap_or_default()
    } else {
        let mut out = vec![0u16; w * h * nf];
        for (k, c) in comps.iter().enumerate() {
            let plane = c.plane.as_deref().unwrap_or_default();
            let (rx, ry) = (usize::from(f.hmax / c.h), usize::from(f.vmax / c.v));
            let cw = c.width as usize;
            for (y, row) in out.chunks_exact_mut(w * nf).enumerate() {
                let src = &plane[(y / ry) * cw..(y / ry + 1) * cw];
                for (x, pixel) in row.chunks_exact_mut(nf).enumerate() {
                    pixel[k] = src[x / rx];
                }
            }
        }
        out
    };
    Ok(Decoded {
        width: f.width,
        height: f.height,
        components: nf as u8,
        precision: f.precision,
        samples,
    })
}

impl From<crate::jpegmarker::SyntaxError> for Jpeg12Error {
    fn from(e: crate::jpegmarker::SyntaxError) -> Self {
        use crate::jpegmarker::SyntaxError as S;
        match e {
            S::NoSoi { found } => Jpeg12Error::NoSoi { found },
            S::ExpectedMarker { offset, found } => Jpeg12Error::ExpectedMarker { offset, found },
            S::TruncatedSegment { offset, marker, needed, left } => Jpeg12Error::TruncatedSegment { offset, marker: marker_name(marker), needed, left },
            S::Invalid { offset, marker, reason } => invalid(offset, marker, &reason),
        }
    }
}

/// [`Jpeg12Error::Invalid`] for the marker `m` at `offset`.
fn invalid(offset: usize, m: u8, reason: &str) -> Jpeg12Error {
    Jpeg12Error::Invalid { offset, marker: marker_name(m), reason: reason.to_string() }
}

/// [`Jpeg12Error::Unsupported`] for the marker `m` at `offset`.
fn unsupported(offset: usize, m: u8, reason: &str) -> Jpeg12Error {
    Jpeg12Error::Unsupported { offset, marker: marker_name(m), reason: reason.to_string() }
}

/// A component of the frame.
struct Component {
    /// Component identifier Ci.
    id: u8,
    /// Horizontal sampling factor Hi (1..=4).
    h: u8,
    /// Vertical sampling factor Vi (1..=4).
    v: u8,
    /// Quantization table selector Tqi (0..=3).
    tq: u8,
    /// Columns of the component, xi = ceil(X × Hi / Hmax) (A.1.1).
    width: u32,
    /// Lines of the component, yi = ceil(Y × Vi / Vmax).
    height: u32,
    /// The component's samples, xi × yi, once its scan is decoded.
    plane: Option<Vec<u16>>,
}

/// The frame (SOF0 or SOF1): its geometry and components.
struct Frame {
    /// Sample precision P (8 or 12).
    precision: u8,
    /// Columns X.
    width: u32,
    /// Lines Y.
    height: u32,
    /// Largest horizontal sampling factor.
    hmax: u8,
    /// Largest vertical sampling factor.
    vmax: u8,
    /// The components, in frame order (the order of a pixel's samples in the output).
    comps: Vec<Component>,
}

impl Frame {
    /// Parse the body of the frame header `m` (SOF0 or SOF1) at `offset`: P, Y, X, Nf, then
    /// per component Ci, Hi/Vi, Tqi (B.2.2).
    fn parse(body: &[u8], offset: usize, m: u8) -> Result<Frame, Jpeg12Error> {
        if body.len() < 6 {
            return Err(invalid(offset, m, &format!("{} bytes of header, at least 6 needed", body.len())));
        }
        let precision = body[0];
        let height = u32::from(be16(body, 1));
        let width = u32::from(be16(body, 3));
        let nf = usize::from(body[5]);
        if body.len() != 6 + 3 * nf {
            return Err(invalid(offset, m, &format!("{} bytes of header for {nf} components, which take {}", body.len(), 6 + 3 * nf)));
        }
        if precision != 8 && precision != 12 {
            return Err(unsupported(offset, m, &format!("sample precision {precision} (8 and 12 bits are decoded)")));
        }
        if nf == 0 {
            return Err(invalid(offset, m, "no components"));
        }
        if nf > 4 {
            return Err(unsupported(offset, m, &format!("{nf} components (1 to 4 are decoded)")));
        }
        if width == 0 {
            return Err(invalid(offset, m, "0 samples per line"));
        }
        if height == 0 {
            return Err(unsupported(offset, m, "0 lines: the number of lines given by a DNL marker after the first scan"));
        }
        let samples = u64::from(width) * u64::from(height) * nf as u64;
        if samples > MAX_SAMPLES {
            return Err(Jpeg12Error::TooLarge { offset, marker: marker_name(m), width, height, components: nf as u8, samples });
        }
        let mut comps: Vec<Component> = Vec::with_capacity(nf);
        for c in body[6..].chunks_exact(3) {
            let (id, h, v, tq) = (c[0], c[1] >> 4, c[1] & 15, c[2]);
            if comps.iter().any(|o| o.id == id) {
                return Err(invalid(offset, m, &format!("component {id} is given twice")));
            }
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                return Err(invalid(offset, m, &format!("component {id} has sampling factors {h}x{v} (1 to 4 allowed)")));
            }
            if tq > 3 {
                return Err(invalid(offset, m, &format!("component {id} uses quantization table {tq} (0 to 3 allowed)")));
            }
            comps.push(Component { id, h, v, tq, width: 0, height: 0, plane: None });
        }
        let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
        for c in &mut comps {
            if hmax % c.h != 0 || vmax % c.v != 0 {
                return Err(unsupported(
                    offset,
                    m,
                    &format!("component {} sampled {}x{} against largest factors {hmax}x{vmax}: not an integral fraction", c.id, c.h, c.v),
                ));
            }
            c.width = (width * u32::from(c.h)).div_ceil(u32::from(hmax));
            c.height = (height * u32::from(c.v)).div_ceil(u32::from(vmax));
        }
        Ok(Frame { precision, width, height, hmax, vmax, comps })
    }
}

/// A Huffman table (Annex C), ready for decoding (F.2.2.3).
#[derive(Clone)]
struct Huffman {
    /// For each 9-bit prefix: the length (high byte) and value (low byte) of the code of at
    /// most 9 bits it starts with, or 0 when the code is longer.
    fast: Vec<u16>,
    /// MAXCODE: the largest code of each length 1..=16, -1 where there is none.
    maxcode: [i32; 17],
    /// VALPTR - MINCODE for each length: a code of that length plus this is its value's index.
    delta: [i32; 17],
    /// HUFFVAL: the values, in order of increasing code length.
    values: Vec<u8>,
}

/// Bits of the prefix looked up at once in [`Huffman::fast`].
const FAST_BITS: u32 = 9;

impl Huffman {
    /// The table of BITS (`counts[l - 1]` codes of length l) and HUFFVAL, or why it is not one:
    /// codes are given to the values in order, each length's codes following the previous
    /// length's doubled (C.2); a length with more codes than are left is no table.
    fn new(counts: &[u8; 16], values: &[u8]) -> Result<Huffman, String> {
        let mut fast = vec![0u16; 1 << FAST_BITS];
        let mut maxcode = [-1i32; 17];
        let mut delta = [0i32; 17];
        let mut code: u32 = 0;
        let mut index: usize = 0;
        for (l, &count) in (1..=16u32).zip(counts) {
            let count = u32::from(count);
            if code + count > 1 << l {
                return Err(format!("{count} codes of length {l}, more than the {} left", (1u32 << l) - code));
            }
            if count > 0 {
                delta[l as usize] = index as i32 - code as i32;
                for _ in 0..count {
                    if l <= FAST_BITS {
                        let shift = FAST_BITS - l;
                        let entry = ((l as u16) << 8) | u16::from(values[index]);
                        fast[(code << shift) as usize..((code + 1) << shift) as usize].fill(entry);
                    }
                    code += 1;
                    index += 1;
                }
                maxcode[l as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        Ok(Huffman { fast, maxcode, delta, values: values.to_vec() })
    }

    /// The next value coded with this table.
    #[inline]
    fn decode(&self, br: &mut BitReader) -> Result<u8, Fault> {
        let (peek, avail) = br.peek16();
        let entry = self.fast[(peek >> (16 - FAST_BITS)) as usize];
        if entry != 0 {
            let len = u32::from(entry >> 8);
            if len > avail {
                return Err(Fault::OutOfData);
            }
            br.consume(len);
            return Ok(entry as u8);
        }
        for l in FAST_BITS + 1..=16 {
            let code = (peek >> (16 - l)) as i32;
            if code <= self.maxcode[l as usize] {
                if l > avail {
                    return Err(Fault::OutOfData);
                }
                br.consume(l);
                let index = code + self.delta[l as usize];
                return usize::try_from(index).ok().and_then(|i| self.values.get(i).copied()).ok_or(Fault::Corrupt("a Huffman code outside its table"));
            }
        }
        if avail < 16 {
            Err(Fault::OutOfData)
        } else {
            Err(Fault::Corrupt("bits that begin no code of the Huffman table"))
        }
    }
}

/// The tables defined so far: Huffman DC and AC tables and quantization tables, 4 of each.
#[derive(Default)]
struct Tables {
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    /// Quantization tables in natural (row by row) order.
    quant: [Option<[u16; 64]>; 4],
}

impl Tables {
    /// Parse the body of DHT at `offset`: one or more tables, each Tc/Th, 16 counts and the
    /// values (B.2.4.2).
    fn parse_dht(&mut self, body: &[u8], offset: usize) -> Result<(), Jpeg12Error> {
        let m = 0xC4;
        let mut at = 0;
        if body.is_empty() {
            return Err(invalid(offset, m, "no table in the segment"));
        }
        while at < body.len() {
            let Some(head) = body.get(at..at + 17) else {
                return Err(invalid(offset, m, &format!("the segment ends inside a table's code counts ({} bytes left, 17 needed)", body.len() - at)));
            };
            let (class, id) = (head[0] >> 4, head[0] & 15);
            if class > 1 || id > 3 {
                return Err(invalid(offset, m, &format!("table class {class} and identifier {id} (0 or 1, and 0 to 3 allowed)")));
            }
            let counts: [u8; 16] = head[1..17].try_into().unwrap_or([0; 16]);
            let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
            if n > 256 {
                return Err(invalid(offset, m, &format!("{n} codes in a table (at most 256)")));
            }
            let Some(values) = body.get(at + 17..at + 17 + n) else {
                return Err(invalid(offset, m, &format!("the segment ends inside a table's {n} values")));
            };
            let table = Huffman::new(&counts, values).map_err(|e| invalid(offset, m, &format!("table {} {id}: {e}", if class == 0 { "DC" } else { "AC" })))?;
            if class == 0 {
                self.dc[usize::from(id)] = Some(table);
            } else {
                self.ac[usize::from(id)] = Some(table);
            }
            at += 17 + n;
        }
        Ok(())
    }

    /// Parse the body of DQT at `offset`: one or more tables, each Pq/Tq then 64 entries of
    /// 8 (Pq 0) or 16 bits (Pq 1) in zig-zag order (B.2.4.1).
    fn parse_dqt(&mut self, body: &[u8], offset: usize) -> Result<(), Jpeg12Error> {
        let m = 0xDB;
        if body.is_empty() {
            return Err(invalid(offset, m, "no table in the segment"));
        }
        let mut at = 0;
        while at < body.len() {
            let (pq, tq) = (body[at] >> 4, body[at] & 15);
            if pq > 1 || tq > 3 {
                return Err(invalid(offset, m, &format!("precision {pq} and identifier {tq} (0 or 1, and 0 to 3 allowed)")));
            }
            let size = 64 << pq;
            let Some(entries) = body.get(at + 1..at + 1 + size) else {
                return Err(invalid(offset, m, &format!("table {tq} needs {size} bytes of entries, the segment has {} left", body.len() - at - 1)));
            };
            let mut table = [0u16; 64];
            for (k, &pos) in ZIGZAG.iter().enumerate() {
                table[usize::from(pos)] = if pq == 0 { u16::from(entries[k]) } else { be16(entries, 2 * k) };
            }
            self.quant[usize::from(tq)] = Some(table);
            at += 1 + size;
        }
        Ok(())
    }
}

/// Parse the body of DRI at `offset`: the restart interval in MCUs, 0 for none (B.2.4.4).
fn parse_dri(body: &[u8], offset: usize) -> Result<u32, Jpeg12Error> {
    if body.len() != 2 {
        return Err(invalid(offset, 0xDD, &format!("a restart interval of {} bytes, 2 needed", body.len())));
    }
    Ok(u32::from(be16(body, 0)))
}

/// One component of a scan, with what decoding it needs.
struct ScanComponent {
    /// Index of the component in the frame.
    index: usize,
    /// DC and AC Huffman tables (copies of the ones in force when the scan starts).
    dc: Huffman,
    ac: Huffman,
    /// Quantization table, natural order.
    quant: [u16; 64],
}

/// A scan header (SOS) with the tables it uses.
struct ScanHeader {
    /// Byte offset of the SOS marker, for messages.
    offset: usize,
    /// The scan's components in the order they are coded.
    comps: Vec<ScanComponent>,
}

impl ScanHeader {
    /// Parse the body of SOS at `offset`: Ns, per component Csj and Tdj/Taj, then Ss, Se and
    /// Ah/Al (B.2.3). The components must be in the frame and not yet decoded, and their
    /// tables defined.
    fn parse(body: &[u8], offset: usize, frame: &Frame, tables: &Tables) -> Result<ScanHeader, Jpeg12Error> {
        let m = 0xDA;
        let Some(&ns) = body.first() else {
            return Err(invalid(offset, m, "an empty scan header"));
        };
        let ns = usize::from(ns);
        if !(1..=4).contains(&ns) {
            return Err(invalid(offset, m, &format!("{ns} components in the scan (1 to 4 allowed)")));
        }
        if body.len() != 4 + 2 * ns {
            return Err(invalid(offset, m, &format!("{} bytes of header for {ns} components, which take {}", body.len(), 4 + 2 * ns)));
        }
        let mut comps: Vec<ScanComponent> = Vec::with_capacity(ns);
        let mut blocks = 0u32;
        for c in body[1..1 + 2 * ns].chunks_exact(2) {
            let (id, td, ta) = (c[0], c[1] >> 4, c[1] & 15);
            let Some(index) = frame.comps.iter().position(|fc| fc.id == id) else {
                return Err(invalid(offset, m, &format!("component {id} is not in the frame")));
            };
            if comps.iter().any(|sc| sc.index == index) {
                return Err(invalid(offset, m, &format!("component {id} is given twice")));
            }
            let fc = &frame.comps[index];
            if fc.plane.is_some() {
                return Err(invalid(offset, m, &format!("component {id} was in an earlier scan (each is in one scan of a sequential frame)")));
            }
            if td > 3 || ta > 3 {
                return Err(invalid(offset, m, &format!("component {id} uses Huffman tables {td} and {ta} (0 to 3 allowed)")));
            }
            let missing = |table, tid| Jpeg12Error::MissingTable { offset, component: id, table, id: tid };
            let dc = tables.dc[usize::from(td)].clone().ok_or_else(|| missing("Huffman DC", td))?;
            let ac = tables.ac[usize::from(ta)].clone().ok_or_else(|| missing("Huffman AC", ta))?;
            let quant = tables.quant[usize::from(fc.tq)].ok_or_else(|| missing("quantization", fc.tq))?;
            blocks += u32::from(fc.h) * u32::from(fc.v);
            comps.push(ScanComponent { index, dc, ac, quant });
        }
        if ns > 1 && blocks > MAX_BLOCKS_PER_MCU {
            return Err(invalid(offset, m, &format!("{blocks} blocks in an MCU (at most {MAX_BLOCKS_PER_MCU})")));
        }
        Ok(ScanHeader { offset, comps })
    }
}

/// The bit reading of the Huffman-coded DCT processes.
impl BitReader<'_> {
    /// The next 16 bits (zeros past the end of the data) and how many of them are data.
    #[inline]
    fn peek16(&mut self) -> (u32, u32) {
        if self.bits < 16 {
            self.refill();
        }
        ((self.cache >> 48) as u32, self.bits.min(16))
    }

    /// A coefficient or DC difference of magnitude category `s` (1..=15): `s` bits, extended
    /// to a negative value when the top one is 0 (F.2.2.1, EXTEND).
    #[inline]
    fn extend(&mut self, s: u32) -> Result<i32, Fault> {
        let v = self.bits(s)? as i32;
        Ok(if v < 1 << (s - 1) { v - (1 << s) + 1 } else { v })
    }

}

/// Decode one block of quantized coefficients (F.2.2): the DC difference, added to the
/// component's prediction `pred`, then the AC coefficients as runs of zeros and values, into
/// `coef` in natural order (which must hold zeros). Returns whether an AC coefficient is not 0.
#[inline]
fn decode_block(br: &mut BitReader, dc: &Huffman, ac: &Huffman, pred: &mut i32, coef: &mut [i32; 64]) -> Result<bool, Fault> {
    let t = u32::from(dc.decode(br)?);
    if t > 15 {
        return Err(Fault::Corrupt("a DC difference category above 15"));
    }
    if t > 0 {
        *pred = pred.wrapping_add(br.extend(t)?);
    }
    coef[0] = *pred;
    let mut any_ac = false;
    let mut k = 1usize;
    while k < 64 {
        let rs = ac.decode(br)?;
        let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
        if s == 0 {
            match r {
                0 => break,
                15 => {
                    k += 16;
                    if k > 64 {
                        return Err(Fault::Corrupt("a run of 16 zeros past the end of the block"));
                    }
                    continue;
                }
                _ => return Err(Fault::Corrupt("an AC code of a run and no value other than EOB and ZRL")),
            }
        }
        k += r;
        if k > 63 {
            return Err(Fault::Corrupt("a run of zeros past the end of the block"));
        }
        coef[usize::from(ZIGZAG[k])] = br.extend(s)?;
        any_ac = true;
        k += 1;
    }
    Ok(any_ac)
}

/// The inverse DCT of A.3.3 as two passes of one dimension: `basis[x][u]` is C(u)/2 ×
/// cos((2x + 1)uπ/16), with C(0) = 1/√2 and C(u) = 1 otherwise, so that a sample is
/// Σv basis[y][v] Σu basis[x][u] S(v,u).
struct Idct {
    basis: [[f64; 8]; 8],
    /// The level shift 2^(P-1).
    shift: f64,
    /// The largest sample, 2^P - 1.
    max: f64,
}

impl Idct {
    fn new(precision: u8) -> Idct {
        let mut basis = [[0f64; 8]; 8];
        for (x, row) in basis.iter_mut().enumerate() {
            for (u, b) in row.iter_mut().enumerate() {
                let c = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
                *b = c / 2.0 * (((2 * x + 1) * u) as f64 * std::f64::consts::PI / 16.0).cos();
            }
        }
        Idct { basis, shift: f64::from(1u32 << (precision - 1)), max: f64::from((1u32 << precision) - 1) }
    }

    /// A reconstructed sample: level-shifted, rounded to the nearest integer and clamped.
    #[inline]
    fn sample(&self, v: f64) -> u16 {
        (v + self.shift).round().clamp(0.0, self.max) as u16
    }

    /// Dequantize the coefficients `coef` (natural order) with `quant`, transform them, and
    /// write the samples that lie in the plane (`stride` samples a line, `lines` lines) to
    /// the block whose top-left sample is (`x0`, `y0`).
    #[allow(clippy::too_many_arguments)]
    fn block(&self, coef: &[i32; 64], any_ac: bool, quant: &[u16; 64], plane: &mut [u16], stride: usize, lines: usize, x0: usize, y0: usize) {
        let cols = stride.saturating_sub(x0).min(8);
        let rows = lines.saturating_sub(y0).min(8);
        if cols == 0 || rows == 0 {
            return;
        }
        let mut out = [[0f64; 8]; 8];
        if any_ac {
            // Rows of frequencies (fixed v) to rows of samples along x, then down the columns.
            let mut tmp = [[0f64; 8]; 8];
            for v in 0..8 {
                let f: [f64; 8] = std::array::from_fn(|u| f64::from(coef[v * 8 + u]) * f64::from(quant[v * 8 + u]));
                if f.iter().all(|&c| c == 0.0) {
                    continue;
                }
                for (x, t) in tmp[v].iter_mut().enumerate() {
                    *t = self.basis[x].iter().zip(&f).map(|(b, c)| b * c).sum();
                }
            }
            for (y, line) in out.iter_mut().enumerate() {
                for (x, s) in line.iter_mut().enumerate() {
                    *s = (0..8).map(|v| self.basis[y][v] * tmp[v][x]).sum();
                }
            }
        } else {
            // Only S(0,0): every sample is C(0)² / 4 × S(0,0) = S(0,0) / 8.
            let dc = f64::from(coef[0]) * f64::from(quant[0]) / 8.0;
            out = [[dc; 8]; 8];
        }
        for (y, line) in out.iter().enumerate().take(rows) {
            let at = (y0 + y) * stride + x0;
            for (dst, &v) in plane[at..at + cols].iter_mut().zip(line) {
                *dst = self.sample(v);
            }
        }
    }
}

/// Decode the coded data of the scan `scan`, which starts at byte `start` of `s`, into the
/// planes of its components. Returns the offset of the marker that ends the scan.
///
/// With one component the scan is non-interleaved: its MCUs are single blocks, the
/// ceil(xi/8) × ceil(yi/8) blocks of the component, row by row. With more, each MCU holds
/// Hj × Vj blocks of each component j in scan order, and the MCUs cover the frame padded to
/// 8·Hmax × 8·Vmax (A.2). With a restart interval of `restart` MCUs (0: none), the data is in
/// segments of that many MCUs, each followed by the next RSTm marker; at each, the DC
/// predictions start again from 0.
fn decode_scan(s: &[u8], start: usize, frame: &mut Frame, scan: &ScanHeader, restart: u32) -> Result<usize, Jpeg12Error> {
    let ns = scan.comps.len();
    // Per scan component: blocks across an MCU and down, blocks per line of the component.
    let (mcus_across, mcus_down, layout): (usize, usize, Vec<(usize, usize)>) = if ns == 1 {
        let c = &frame.comps[scan.comps[0].index];
        ((c.width as usize).div_ceil(8), (c.height as usize).div_ceil(8), vec![(1, 1)])
    } else {
        let across = (frame.width as usize).div_ceil(8 * usize::from(frame.hmax));
        let down = (frame.height as usize).div_ceil(8 * usize::from(frame.vmax));
        let layout = scan.comps.iter().map(|sc| (usize::from(frame.comps[sc.index].h), usize::from(frame.comps[sc.index].v))).collect();
        (across, down, layout)
    };
    let total = mcus_across * mcus_down;
    let blocks: usize = total * layout.iter().map(|(h, v)| h * v).sum::<usize>();
    // Each block takes at least 2 bits (a DC code and an AC code): a stream too short for the
    // scan is refused before its planes are allocated.
    let least = blocks.div_ceil(4);
    if s.len().saturating_sub(start) < least {
        return Err(Jpeg12Error::OutOfData {
            scan: scan.offset,
            offset: s.len(),
            place: format!("a scan of {blocks} blocks, which take at least {least} bytes"),
        });
    }
    let mut planes: Vec<Vec<u16>> = scan
        .comps
        .iter()
        .map(|sc| {
            let c = &frame.comps[sc.index];
            vec![0u16; c.width as usize * c.height as usize]
        })
        .collect();
    let idct = Idct::new(frame.precision);
    let interval = if restart == 0 { total } else { restart as usize };
    let mut pos = start;
    let mut m = 0usize;
    let mut restarts = 0u8;
    while m < total {
        let end = segment_end(s, pos, Stuffing::Byte);
        let mut br = BitReader::new(&s[pos..end], pos, Stuffing::Byte);
        let mut pred = [0i32; 4];
        let last = total.min(m.saturating_add(interval));
        while m < last {
            let (mx, my) = (m % mcus_across, m / mcus_across);
            for (j, sc) in scan.comps.iter().enumerate() {
                let c = &frame.comps[sc.index];
                let (stride, lines) = (c.width as usize, c.height as usize);
                let (bh, bv) = layout[j];
                for by in 0..bv {
                    for bx in 0..bh {
                        let mut coef = [0i32; 64];
                        match decode_block(&mut br, &sc.dc, &sc.ac, &mut pred[j], &mut coef) {
                            Ok(any_ac) => {
                                let (x0, y0) = ((mx * bh + bx) * 8, (my * bv + by) * 8);
                                idct.block(&coef, any_ac, &sc.quant, &mut planes[j], stride, lines, x0, y0);
                            }
                            Err(fault) => {
                                let place = if ns == 1 {
                                    format!("block {} of {total} of component {}", m + 1, c.id)
                                } else {
                                    format!("MCU {} of {total}, a block of component {}", m + 1, c.id)
                                };
                                return Err(match fault {
                                    Fault::OutOfData => Jpeg12Error::OutOfData { scan: scan.offset, offset: br.end(), place },
                                    Fault::Corrupt(reason) => Jpeg12Error::Corrupt { scan: scan.offset, offset: br.offset(), place, reason },
                                });
                            }
                        }
                    }
                }
            }
            m += 1;
        }
        pos = end;
        // After each interval but the last, its restart marker; after the last, one is
        // tolerated (some encoders end every interval with one).
        if restart > 0 {
            let expected = restarts % 8;
            let mut at = pos;
            while s.get(at + 1) == Some(&0xFF) {
                at += 1;
            }
            match (s.get(at), s.get(at + 1)) {
                (Some(0xFF), Some(&b)) if b == 0xD0 + expected => pos = at + 2,
                _ if m == total => {}
                (Some(0xFF), Some(&b)) => return Err(Jpeg12Error::Restart { scan: scan.offset, offset: at, expected, found: marker_name(b) }),
                _ => return Err(Jpeg12Error::Restart { scan: scan.offset, offset: at, expected, found: "the end of the stream".to_string() }),
            }
            restarts = restarts.wrapping_add(1);
        }
    }
    for (sc, plane) in scan.comps.iter().zip(planes) {
        frame.comps[sc.index].plane = Some(plane);
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpegmarker::testfiles::*;
    use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    use std::path::Path;
    use std::process::Command;

    /// Its two 12-bit JPEG Extended files: the same 256x1024 NM image, one with a scan header
    /// that says Se 0 (libjpeg warns and decodes it as sequential), one with Se 63.
    const EXTENDED_FILES: [&str; 2] = ["JPEG-lossy.dcm", "JPGExtended.dcm"];

    /// Run a dcmtk tool; a missing dcmtk fails the test (CI installs it: .ci/run).
    fn dcmtk(tool: &str, args: &[&str], input: &Path, output: &Path) {
        let out = Command::new(tool)
            .args(args)
            .arg(input)
            .arg(output)
            .output()
            .unwrap_or_else(|e| panic!("{tool} (dcmtk) could not be run: {e}. This test needs dcmtk: apt-get install dcmtk"));
        assert!(out.status.success(), "{tool} {args:?} {} failed: {}", input.display(), String::from_utf8_lossy(&out.stderr));
    }

    /// What dcmtk's dcmdjpeg (IJG libjpeg 6b, 8 and 12-bit builds) decodes `path` to, without
    /// a colour transform and a pixel's samples together.
    fn dcmdjpeg(path: &Path, dir: &Path) -> Vec<u16> {
        let out = dir.join("dcmdjpeg-out.dcm");
        dcmtk("dcmdjpeg", &["+cn", "+px"], path, &out);
        native_samples(&open(&out))
    }

    /// The largest difference between `ours` and `reference` and how many samples differ;
    /// fails `what` when the lengths differ or a sample differs by more than `tolerance`.
    fn compare(what: &str, ours: &[u16], reference: &[u16], tolerance: u16) -> (u16, usize) {
        assert_eq!(ours.len(), reference.len(), "{what}: sample counts");
        let worst = ours.iter().zip(reference).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        let differ = ours.iter().zip(reference).filter(|(a, b)| a != b).count();
        let first = ours.iter().zip(reference).position(|(a, b)| a.abs_diff(*b) == worst);
        assert!(worst <= tolerance, "{what}: off by {worst} (more than {tolerance}) at sample {first:?}, {differ} samples differ");
        println!("{what}: {differ} of {} samples differ, by at most {worst}", ours.len());
        (worst, differ)
    }

    /// pydicom's two JPEG Extended files decode as dcmtk's libjpeg decodes them: every sample
    /// within 1: 1619 of the 262144 samples (0.6 %) differ, by 1, each where the exact inverse
    /// DCT here lands within 0.09 of a half (libjpeg's integer inverse DCT rounds otherwise). Against the header: 256 columns, 1024 rows,
    /// 12 bits, and values from SmallestImagePixelValue 0 up to 264, below the original's
    /// LargestImagePixelValue 278 (the image is lossy).
    #[test]
    fn pydicom_files_match_dcmdjpeg() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in EXTENDED_FILES {
            let path = data(name);
            let obj = open(&path);
            assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2.4.51", "{name}");
            let d = decode(&stream_of(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((d.width, d.height, d.components, d.precision), (256, 1024, 1, 12), "{name}");
            assert_eq!(d.width, int(&obj, tags::COLUMNS).unwrap());
            assert_eq!(d.height, int(&obj, tags::ROWS).unwrap());
            let (min, max) = (d.samples.iter().min().copied(), d.samples.iter().max().copied());
            assert_eq!(min.map(u32::from), int(&obj, tags::SMALLEST_IMAGE_PIXEL_VALUE), "{name}");
            assert_eq!(int(&obj, tags::LARGEST_IMAGE_PIXEL_VALUE), Some(278), "{name}");
            assert_eq!(max, Some(264), "{name}");
            let (_, differ) = compare(name, &d.samples, &dcmdjpeg(&path, dir.path()), 1);
            assert!(differ < d.samples.len() / 100, "{name}: {differ} samples differ from dcmdjpeg");
        }
    }

    /// Pixel data of a test DICOM file.
    enum Pixels<'a> {
        /// Native samples (Explicit VR Little Endian), a pixel's samples together.
        Native(&'a [u16]),
        /// One JPEG stream, encapsulated (JPEG Extended transfer syntax).
        Jpeg(&'a [u8]),
    }

    /// Write a single-frame secondary-capture DICOM file of `cols` x `rows` pixels of `spp`
    /// samples, `bits` bits stored in 8 or 16 allocated, to `path`.
    fn write_dicom(path: &Path, cols: usize, rows: usize, spp: u16, bits: u16, photometric: &str, pixels: Pixels) {
        let allocated: u16 = if bits > 8 { 16 } else { 8 };
        let mut els = vec![
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.826.0.1.3680043.2.1143.12.1")),
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("OT")),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(spp)),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(photometric)),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows as u16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(cols as u16)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(allocated)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
        ];
        if spp > 1 {
            els.push(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, PrimitiveValue::from(0u16)));
        }
        let (ts, pixel_data) = match pixels {
            Pixels::Native(v) if allocated == 16 => ("1.2.840.10008.1.2.1", DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(v.iter().copied().collect()))),
            Pixels::Native(v) => {
                let mut b: Vec<u8> = v.iter().map(|&x| x as u8).collect();
                if b.len() % 2 == 1 {
                    b.push(0);
                }
                ("1.2.840.10008.1.2.1", DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(b.into_iter().collect())))
            }
            Pixels::Jpeg(stream) => {
                let mut fragment = stream.to_vec();
                if fragment.len() % 2 == 1 {
                    fragment.push(0);
                }
                ("1.2.840.10008.1.2.4.51", DataElement::new(tags::PIXEL_DATA, VR::OB, PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment])))
            }
        };
        els.push(pixel_data);
        let file = InMemDicomObject::from_element_iter(els).with_meta(FileMetaTableBuilder::new().transfer_syntax(ts)).expect("file meta");
        file.write_to_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// A test image of `width` x `height` pixels of `spp` samples below 2^`bits`, a pixel's
    /// samples together: smooth gradients (different per sample), a bright and a dark
    /// rectangle with sharp edges, a checkerboard of the extremes and a patch of noise.
    fn test_image(width: usize, height: usize, spp: usize, bits: u32) -> Vec<u16> {
        let max = (1u32 << bits) - 1;
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut out = Vec::with_capacity(width * height * spp);
        for y in 0..height {
            for x in 0..width {
                for c in 0..spp {
                    let (fx, fy) = (x as f64 / width as f64, y as f64 / height as f64);
                    let smooth = (0.5 + 0.35 * (fx * (3.0 + c as f64)).sin() * (fy * 2.0 + c as f64).cos()) * f64::from(max);
                    let v = if (width / 6..width / 3).contains(&x) && (height / 5..height / 2).contains(&y) {
                        max - (c as u32) * max / 5
                    } else if (width / 2..width * 3 / 4).contains(&x) && (height * 2 / 3..height * 5 / 6).contains(&y) {
                        (c as u32) * 7
                    } else if x >= width * 4 / 5 && y < height / 4 {
                        if (x + y) % 2 == 0 { max } else { 0 }
                    } else if x < width / 8 && y >= height * 3 / 4 {
                        (next(&mut rng) % u64::from(max + 1)) as u32
                    } else {
                        smooth.round() as u32
                    };
                    out.push(v.min(max) as u16);
                }
            }
        }
        out
    }

    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Streams written by dcmtk's dcmcjpeg (IJG libjpeg 6b) from synthetic images, extended
    /// sequential 12 and 8-bit (SOF1) and baseline (SOF0), grey and colour (4:4:4, RGB with an
    /// Adobe marker, and sub-sampled 4:2:2 and 4:2:0), even and odd sizes, several qualities:
    /// each decodes as dcmdjpeg decodes it, within 1. Except the chroma of the sub-sampled
    /// streams: libjpeg brings chroma sampled at half the rate (2x1 and 2x2) up with its
    /// "fancy" triangular interpolation, where this decoder replicates (as it does for other
    /// ratios, see `encoded_streams_match_dcmdjpeg`); there luma is within 1, and chroma within
    /// 3 on average (1.65 for 2x1, 2.06 for 2x2 on this image of sharp edges and noise).
    ///
    /// Samples that differ (by 1) from dcmdjpeg: 112 of 3072 for the 64x48 12-bit image at
    /// dcmcjpeg's default quality 90, 99 at quality 100, 78 at 30; 43 and 33 of 1073 for the
    /// 37x29 12-bit image at 90 and 100; 18 to 43 of 1073 for the 8-bit grey ones; 54 to 136 of
    /// 3219 or 9216 for the colour ones.
    #[test]
    fn dcmcjpeg_streams_match_dcmdjpeg() {
        let dir = tempfile::tempdir().expect("temp dir");
        let native = dir.path().join("native.dcm");
        let encoded = dir.path().join("encoded.dcm");
        // (width, height, samples per pixel, bits, photometric, dcmcjpeg options, SOF marker and
        // precision expected, chroma at half the rate of luma).
        type Case = (usize, usize, u16, u16, &'static str, &'static [&'static str], u8, u8, bool);
        let cases: &[Case] = &[
            (64, 48, 1, 12, "MONOCHROME2", &["+ee"], 0xC1, 12, false),
            (64, 48, 1, 12, "MONOCHROME2", &["+ee", "+q", "100"], 0xC1, 12, false),
            (64, 48, 1, 12, "MONOCHROME2", &["+ee", "+q", "30"], 0xC1, 12, false),
            (37, 29, 1, 12, "MONOCHROME2", &["+ee"], 0xC1, 12, false),
            (37, 29, 1, 12, "MONOCHROME2", &["+ee", "+q", "100"], 0xC1, 12, false),
            (64, 48, 1, 12, "MONOCHROME2", &["+ee", "+be"], 0xC1, 8, false),
            (37, 29, 1, 8, "MONOCHROME2", &["+ee"], 0xC1, 8, false),
            (37, 29, 1, 8, "MONOCHROME2", &["+ee", "+bt"], 0xC1, 12, false),
            (37, 29, 1, 8, "MONOCHROME2", &["+eb"], 0xC0, 8, false),
            (37, 29, 1, 8, "MONOCHROME2", &["+eb", "-ho"], 0xC0, 8, false),
            (64, 48, 3, 8, "RGB", &["+ee", "+s4"], 0xC1, 8, false),
            (37, 29, 3, 8, "RGB", &["+ee", "+cr"], 0xC1, 8, false),
            (37, 29, 3, 8, "RGB", &["+ee", "+bt", "+s4"], 0xC1, 12, false),
            (37, 29, 3, 12, "RGB", &["+ee", "+s4", "+q", "95"], 0xC1, 12, false),
            (37, 29, 3, 8, "RGB", &["+ee"], 0xC1, 8, true),
            (37, 29, 3, 8, "RGB", &["+ee", "+n2"], 0xC1, 8, true),
            (37, 29, 3, 8, "RGB", &["+ee", "+n1"], 0xC1, 8, true),
        ];
        for &(w, h, spp, bits, photometric, opts, sof, precision, subsampled) in cases {
            let what = format!("{w}x{h}x{spp} {bits} bits {opts:?}");
            let original = test_image(w, h, usize::from(spp), u32::from(bits));
            write_dicom(&native, w, h, spp, bits, photometric, Pixels::Native(&original));
            dcmtk("dcmcjpeg", opts, &native, &encoded);
            let stream = stream_of(&encoded);
            let at = stream.iter().position(|&b| b == 0xC0 || b == 0xC1).expect("SOF");
            assert_eq!((stream[at - 1], stream[at], stream[at + 3]), (0xFF, sof, precision), "{what}: frame header");
            let d = decode(&stream).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((d.width, d.height, d.components, d.precision), (w as u32, h as u32, spp as u8, precision), "{what}");
            let reference = dcmdjpeg(&encoded, dir.path());
            if subsampled {
                let luma = |v: &[u16]| v.iter().step_by(3).copied().collect::<Vec<u16>>();
                compare(&format!("{what} luma"), &luma(&d.samples), &luma(&reference), 1);
                let chroma: Vec<(u16, u16)> = d.samples.iter().zip(&reference).enumerate().filter(|(i, _)| i % 3 != 0).map(|(_, (a, b))| (*a, *b)).collect();
                let mean = chroma.iter().map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / chroma.len() as f64;
                println!("{what} chroma: {mean:.2} off on average");
                assert!(mean <= 3.0, "{what}: chroma {mean} off dcmdjpeg's on average");
            } else {
                compare(&what, &d.samples, &reference, 1);
            }
        }
    }

    /// A component of a stream for [`encode`]: its sampling factors, quantization table and
    /// samples at its own resolution (xi × yi of A.1.1).
    struct EncComponent {
        h: u8,
        v: u8,
        tq: u8,
        samples: Vec<u16>,
    }

    /// What [`encode`] writes: a frame, its tables, and how it is split into scans.
    struct EncImage {
        /// Frame header marker: 0xC0 or 0xC1.
        sof: u8,
        precision: u8,
        width: usize,
        height: usize,
        comps: Vec<EncComponent>,
        /// Quantization tables 0, 1, ... in natural order, with their entry size (Pq).
        quant: Vec<(u8, [u16; 64])>,
        /// The scans, each a list of component indices.
        scans: Vec<Vec<usize>>,
        /// Restart interval in MCUs (0: none, no DRI).
        restart: u16,
        /// Fill bytes FF before every marker after coded data, and an RST after the last
        /// interval too.
        fill: bool,
    }

    impl EncImage {
        /// Component `c`'s columns and lines (A.1.1).
        fn dims(&self, c: usize) -> (usize, usize) {
            let hmax = self.comps.iter().map(|c| c.h).max().unwrap_or(1);
            let vmax = self.comps.iter().map(|c| c.v).max().unwrap_or(1);
            let k = &self.comps[c];
            ((self.width * usize::from(k.h)).div_ceil(usize::from(hmax)), (self.height * usize::from(k.v)).div_ceil(usize::from(vmax)))
        }
    }

    /// Appends bits to coded data, stuffing a 00 after each FF byte (F.1.2.3).
    struct BitWriter {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }

    impl BitWriter {
        fn put(&mut self, value: u32, len: u32) {
            for i in (0..len).rev() {
                self.acc = (self.acc << 1) | ((value >> i) & 1);
                self.n += 1;
                if self.n == 8 {
                    self.out.push(self.acc as u8);
                    if self.acc == 0xFF {
                        self.out.push(0);
                    }
                    self.acc = 0;
                    self.n = 0;
                }
            }
        }

        /// Pad the last byte with 1 bits (F.1.2.3).
        fn flush(&mut self) {
            while self.n != 0 {
                self.put(1, 1);
            }
        }
    }

    /// The Huffman tables of [`encode`]: every DC category 0..=15 in a 5-bit code and every AC
    /// run/size (EOB, ZRL, runs 0 to 15 of sizes 1 to 15) in an 8-bit code, the code being the
    /// value's rank (C.2 gives consecutive codes to the values of one length).
    fn enc_tables() -> (Vec<u8>, Vec<u8>) {
        let dc: Vec<u8> = (0..16).collect();
        let mut ac = vec![0x00, 0xF0];
        ac.extend((0..16u8).flat_map(|r| (1..16u8).map(move |s| (r << 4) | s)));
        ac.sort_unstable();
        (dc, ac)
    }

    /// Magnitude category of a DC difference or AC coefficient (F.1.2.1, F.1.2.2) and its
    /// additional bits.
    fn category(v: i32) -> (u32, u32) {
        let s = 32 - v.unsigned_abs().leading_zeros();
        let bits = if v < 0 { (v - 1) as u32 & ((1u32 << s) - 1) } else { v as u32 };
        (s, bits)
    }

    /// A JPEG stream of `img`, written from the standard (forward DCT of A.3.3, the coding of
    /// F.1.2), independent of the decoder: blocks beyond a component's edge repeat its last
    /// column and line.
    fn encode(img: &EncImage) -> Vec<u8> {
        let (dc_values, ac_values) = enc_tables();
        let shift = f64::from(1u32 << (img.precision - 1));
        let idct = Idct::new(img.precision);
        let mut s = vec![0xFF, 0xD8];
        let segment = |s: &mut Vec<u8>, marker: u8, body: &[u8]| {
            s.extend([0xFF, marker]);
            s.extend(((body.len() + 2) as u16).to_be_bytes());
            s.extend(body);
        };
        segment(&mut s, 0xFE, b"cohort jpeg12 test stream");
        segment(&mut s, 0xE1, &[0xFF, 0xD9, 0xFF, 0xDA, 0, 0]);
        let mut dqt = Vec::new();
        for (t, (pq, table)) in img.quant.iter().enumerate() {
            dqt.push((pq << 4) | t as u8);
            for &pos in &ZIGZAG {
                let q = table[usize::from(pos)];
                if *pq == 0 {
                    dqt.push(q as u8);
                } else {
                    dqt.extend(q.to_be_bytes());
                }
            }
        }
        segment(&mut s, 0xDB, &dqt);
        let mut sof = vec![img.precision];
        sof.extend((img.height as u16).to_be_bytes());
        sof.extend((img.width as u16).to_be_bytes());
        sof.push(img.comps.len() as u8);
        for (j, c) in img.comps.iter().enumerate() {
            sof.extend([j as u8 * 3 + 1, (c.h << 4) | c.v, c.tq]);
        }
        segment(&mut s, img.sof, &sof);
        // Tables 0 and 1 of each class, the same codes.
        let mut dht = Vec::new();
        for (class, values, len) in [(0u8, &dc_values, 5usize), (1, &ac_values, 8)] {
            for id in 0..2u8 {
                dht.push((class << 4) | id);
                let mut counts = [0u8; 16];
                counts[len - 1] = values.len() as u8;
                dht.extend(counts);
                dht.extend(values.iter());
            }
        }
        segment(&mut s, 0xC4, &dht);
        if img.restart > 0 {
            segment(&mut s, 0xDD, &img.restart.to_be_bytes());
        }
        let hmax = img.comps.iter().map(|c| usize::from(c.h)).max().unwrap_or(1);
        let vmax = img.comps.iter().map(|c| usize::from(c.v)).max().unwrap_or(1);
        for scan in &img.scans {
            let mut sos = vec![scan.len() as u8];
            for &j in scan {
                sos.extend([j as u8 * 3 + 1, ((j as u8 % 2) << 4) | (j as u8 % 2)]);
            }
            sos.extend([0, 63, 0]);
            segment(&mut s, 0xDA, &sos);
            let (across, down, layout): (usize, usize, Vec<(usize, usize)>) = if scan.len() == 1 {
                let (cw, ch) = img.dims(scan[0]);
                (cw.div_ceil(8), ch.div_ceil(8), vec![(1, 1)])
            } else {
                let layout = scan.iter().map(|&j| (usize::from(img.comps[j].h), usize::from(img.comps[j].v))).collect();
                (img.width.div_ceil(8 * hmax), img.height.div_ceil(8 * vmax), layout)
            };
            let total = across * down;
            let mut bw = BitWriter { out: Vec::new(), acc: 0, n: 0 };
            let mut pred = [0i32; 4];
            let mut restarts = 0u8;
            for m in 0..total {
                if img.restart > 0 && m > 0 && m % usize::from(img.restart) == 0 {
                    bw.flush();
                    if img.fill {
                        bw.out.extend([0xFF, 0xFF]);
                    }
                    bw.out.extend([0xFF, 0xD0 + restarts % 8]);
                    restarts = restarts.wrapping_add(1);
                    pred = [0; 4];
                }
                let (mx, my) = (m % across, m / across);
                for (k, &j) in scan.iter().enumerate() {
                    let c = &img.comps[j];
                    let (cw, ch) = img.dims(j);
                    let quant = &img.quant[usize::from(c.tq)].1;
                    let (bh, bv) = layout[k];
                    for by in 0..bv {
                        for bx in 0..bh {
                            let (x0, y0) = ((mx * bh + bx) * 8, (my * bv + by) * 8);
                            let block: [f64; 64] = std::array::from_fn(|i| {
                                let (x, y) = ((x0 + i % 8).min(cw - 1), (y0 + i / 8).min(ch - 1));
                                f64::from(c.samples[y * cw + x]) - shift
                            });
                            // S(v,u) = Σy Σx basis[y][v] basis[x][u] s(y,x), quantized.
                            let coef: [i32; 64] = std::array::from_fn(|i| {
                                let (v, u) = (i / 8, i % 8);
                                let mut sum = 0.0;
                                for y in 0..8 {
                                    for x in 0..8 {
                                        sum += idct.basis[y][v] * idct.basis[x][u] * block[y * 8 + x];
                                    }
                                }
                                (sum / f64::from(quant[i])).round() as i32
                            });
                            let (size, bits) = category(coef[0] - pred[k]);
                            pred[k] = coef[0];
                            bw.put(size, 5);
                            bw.put(bits, size);
                            let mut run = 0u8;
                            for &pos in &ZIGZAG[1..] {
                                let v = coef[usize::from(pos)];
                                if v == 0 {
                                    run += 1;
                                    continue;
                                }
                                while run >= 16 {
                                    bw.put(ac_values.iter().position(|&x| x == 0xF0).unwrap() as u32, 8);
                                    run -= 16;
                                }
                                let (size, bits) = category(v);
                                let symbol = (run << 4) | size as u8;
                                bw.put(ac_values.iter().position(|&x| x == symbol).unwrap() as u32, 8);
                                bw.put(bits, size);
                                run = 0;
                            }
                            if run > 0 {
                                bw.put(0, 8);
                            }
                        }
                    }
                }
            }
            bw.flush();
            if img.fill {
                if img.restart > 0 && total % usize::from(img.restart) == 0 {
                    bw.out.extend([0xFF, 0xD0 + restarts % 8]);
                }
                bw.out.extend([0xFF, 0xFF, 0xFF]);
            }
            s.extend(bw.out);
        }
        s.extend([0xFF, 0xD9]);
        s
    }

    /// The samples of `img`, each component replicated up to the frame's resolution, a pixel's
    /// components together: what [`decode`] should give back when they are finely quantized.
    fn upsampled(img: &EncImage) -> Vec<u16> {
        let hmax = img.comps.iter().map(|c| usize::from(c.h)).max().unwrap_or(1);
        let vmax = img.comps.iter().map(|c| usize::from(c.v)).max().unwrap_or(1);
        let mut out = Vec::new();
        for y in 0..img.height {
            for x in 0..img.width {
                for (j, c) in img.comps.iter().enumerate() {
                    let (cw, _) = img.dims(j);
                    out.push(c.samples[(y / (vmax / usize::from(c.v))) * cw + x / (hmax / usize::from(c.h))]);
                }
            }
        }
        out
    }

    /// An [`EncImage`] of `width` x `height`, components sampled as `factors` (h, v), made of
    /// the test image's planes at each component's resolution, quantization tables of 1s
    /// (16-bit entries for the second, with one 2), one scan per entry of `scans`.
    fn enc_image(precision: u8, width: usize, height: usize, factors: &[(u8, u8)], scans: Vec<Vec<usize>>, restart: u16, fill: bool) -> EncImage {
        let mut img = EncImage {
            sof: 0xC1,
            precision,
            width,
            height,
            comps: Vec::new(),
            quant: vec![(0, [1; 64]), (1, [1; 64])],
            scans,
            restart,
            fill,
        };
        img.quant[1].1[63] = 2;
        for (j, &(h, v)) in factors.iter().enumerate() {
            img.comps.push(EncComponent { h, v, tq: (j % 2) as u8, samples: Vec::new() });
        }
        for j in 0..factors.len() {
            let (cw, ch) = img.dims(j);
            let mut plane = test_image(cw, ch, factors.len(), u32::from(precision));
            plane = plane.into_iter().skip(j).step_by(factors.len()).collect();
            img.comps[j].samples = plane;
        }
        img
    }

    /// Streams coded by [`encode`] with what dcmcjpeg does not write: non-interleaved scans,
    /// restart intervals (fill bytes before the markers, an RST after the last interval),
    /// 16-bit quantization entries, sampling factors that libjpeg replicates (1x2, 4x1, 3x3,
    /// 4x4), 2 and 4 components, and SOF0 with 12 bits. Each decodes to within 2 of the coded
    /// samples (quantization by 1 but for one coefficient; all are within 1), and as dcmdjpeg
    /// decodes it, within 1 (8 to 213 samples of 1073 to 6519 differ).
    #[test]
    fn encoded_streams_match_dcmdjpeg() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("encoded.dcm");
        // (precision, width, height, sampling factors, scans, restart interval, fill bytes).
        type Case = (u8, usize, usize, &'static [(u8, u8)], &'static [&'static [usize]], u16, bool);
        let cases: &[Case] = &[
            (12, 37, 29, &[(1, 1)], &[&[0]], 0, false),
            (12, 37, 29, &[(1, 1)], &[&[0]], 1, true),
            (12, 64, 48, &[(2, 2)], &[&[0]], 5, false),
            (8, 37, 29, &[(1, 1)], &[&[0]], 3, true),
            (12, 37, 29, &[(1, 1), (1, 1), (1, 1)], &[&[0, 1, 2]], 2, true),
            (12, 37, 29, &[(1, 1), (1, 1), (1, 1)], &[&[2], &[0], &[1]], 0, false),
            (12, 37, 29, &[(1, 2), (1, 1), (1, 1)], &[&[0, 1, 2]], 0, false),
            (12, 37, 29, &[(1, 2), (1, 1), (1, 1)], &[&[0], &[1, 2]], 4, true),
            (8, 37, 29, &[(4, 1), (1, 1), (1, 1)], &[&[0, 1, 2]], 1, false),
            (12, 53, 41, &[(3, 3), (1, 1), (1, 1)], &[&[0, 1], &[2]], 0, true),
            (12, 70, 9, &[(4, 4), (1, 1), (2, 2)], &[&[1], &[0], &[2]], 7, false),
            (8, 19, 70, &[(2, 1), (2, 1), (1, 1)], &[&[0, 2], &[1]], 3, true),
            // Two and four components: DICOM has no such images, dcmdjpeg is not asked.
            (12, 21, 13, &[(1, 1), (1, 1)], &[&[0, 1]], 0, false),
            (12, 30, 20, &[(2, 1), (1, 1), (1, 1), (2, 1)], &[&[0, 1, 2, 3]], 2, false),
            (8, 30, 20, &[(1, 1), (1, 2), (1, 1), (1, 2)], &[&[3, 2], &[1, 0]], 0, true),
        ];
        for (n, &(precision, w, h, factors, scans, restart, fill)) in cases.iter().enumerate() {
            let what = format!("{n}: {w}x{h} {precision} bits {factors:?} scans {scans:?} restart {restart}");
            let mut img = enc_image(precision, w, h, factors, scans.iter().map(|s| s.to_vec()).collect(), restart, fill);
            if n == 0 {
                img.sof = 0xC0;
            }
            let stream = encode(&img);
            let d = decode(&stream).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((d.width, d.height, usize::from(d.components), d.precision), (w as u32, h as u32, factors.len(), precision), "{what}");
            compare(&format!("{what} vs coded"), &d.samples, &upsampled(&img), 2);
            // 2x1 chroma is interpolated by libjpeg, see dcmcjpeg_streams_match_dcmdjpeg.
            let fancy = factors.len() == 3 && factors[1..].iter().any(|&(h, v)| {
                let (hmax, vmax) = (factors.iter().map(|f| f.0).max().unwrap(), factors.iter().map(|f| f.1).max().unwrap());
                hmax == 2 * h && (vmax == v || vmax == 2 * v)
            });
            if !fancy && (factors.len() == 1 || factors.len() == 3) {
                let photometric = if factors.len() == 3 { "YBR_FULL" } else { "MONOCHROME2" };
                write_dicom(&file, w, h, factors.len() as u16, u16::from(precision), photometric, Pixels::Jpeg(&stream));
                compare(&format!("{what} vs dcmdjpeg"), &d.samples, &dcmdjpeg(&file, dir.path()), 1);
            }
        }
    }

    /// Offset of the first segment `marker` before the first scan of a stream of [`encode`]
    /// (or the SOS marker itself).
    fn segment_at(s: &[u8], marker: u8) -> usize {
        let mut at = 2;
        loop {
            assert_eq!(s[at], 0xFF);
            if s[at + 1] == marker {
                return at;
            }
            assert_ne!(s[at + 1], 0xDA, "no segment {marker:02X} before the scan");
            at += 2 + usize::from(be16(s, at + 2));
        }
    }

    /// A small valid 12-bit grey stream of [`encode`], with the frame header at `sof`.
    fn small() -> (Vec<u8>, usize) {
        let s = encode(&enc_image(12, 19, 11, &[(1, 1)], vec![vec![0]], 0, false));
        let sof = segment_at(&s, 0xC1);
        (s, sof)
    }

    fn refused(s: &[u8], what: &str) -> Jpeg12Error {
        match decode(s) {
            Ok(_) => panic!("{what}: decoded"),
            Err(e) => e,
        }
    }

    /// What is not decoded is refused with an error that says so.
    #[test]
    fn refusals() {
        assert!(matches!(decode(&[]), Err(Jpeg12Error::NoSoi { .. })));
        assert!(matches!(decode(&[0xFF, 0xD9, 0xFF, 0xD8]), Err(Jpeg12Error::NoSoi { .. })));
        let (good, sof) = small();
        decode(&good).expect("the stream as coded");
        // Other processes, by their frame header marker.
        for (marker, says) in [
            (0xC2, "progressive"),
            (0xC3, "lossless"),
            (0xC5, "hierarchical"),
            (0xC7, "hierarchical"),
            (0xC9, "arithmetic"),
            (0xCA, "arithmetic"),
            (0xCB, "arithmetic"),
            (0xCD, "arithmetic"),
            (0xF7, "JPEG-LS"),
        ] {
            let mut s = good.clone();
            s[sof + 1] = marker;
            let e = refused(&s, says);
            assert!(matches!(&e, Jpeg12Error::Unsupported { offset, .. } if *offset == sof) && e.to_string().contains(says), "{e}");
            assert!(e.to_string().contains(&format!("FF {marker:02X}")), "{e}");
        }
        // Precision, dimensions, size.
        let mut s = good.clone();
        s[sof + 4] = 16;
        let e = refused(&s, "16 bits");
        assert!(matches!(e, Jpeg12Error::Unsupported { .. }) && e.to_string().contains("precision 16"), "{e}");
        let mut s = good.clone();
        s[sof + 7..sof + 9].copy_from_slice(&[0, 0]);
        let e = refused(&s, "width 0");
        assert!(matches!(e, Jpeg12Error::Invalid { .. }) && e.to_string().contains("0 samples per line"), "{e}");
        let mut s = good.clone();
        s[sof + 5..sof + 7].copy_from_slice(&[0, 0]);
        let e = refused(&s, "height 0");
        assert!(matches!(e, Jpeg12Error::Unsupported { .. }) && e.to_string().contains("DNL"), "{e}");
        let mut s = good.clone();
        s[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let e = refused(&s, "65535x65535");
        assert!(matches!(e, Jpeg12Error::TooLarge { samples: 4_294_836_225, .. }), "{e}");
        // 16384x16384, MAX_SAMPLES exactly: the coded data is far too short for its 2^22
        // blocks, which is said before half a gigabyte is allocated.
        let mut s = good.clone();
        s[sof + 5..sof + 9].copy_from_slice(&[0x40, 0, 0x40, 0]);
        let e = refused(&s, "16384x16384");
        assert!(matches!(&e, Jpeg12Error::OutOfData { offset, .. } if *offset == s.len()) && e.to_string().contains("4194304 blocks"), "{e}");
        // Missing tables: a DC table the scan names but no DHT defined, no DHT at all, a
        // quantization table the frame names but no DQT defined.
        let sos = segment_at(&good, 0xDA);
        let mut s = good.clone();
        s[sos + 6] = 0x20;
        let e = refused(&s, "DC table 2");
        assert!(matches!(e, Jpeg12Error::MissingTable { table: "Huffman DC", id: 2, component: 1, .. }), "{e}");
        let mut s = good.clone();
        s[segment_at(&good, 0xC4) + 1] = 0xE2;
        let e = refused(&s, "no DHT");
        assert!(matches!(&e, Jpeg12Error::MissingTable { offset, table: "Huffman DC", id: 0, .. } if *offset == sos), "{e}");
        let mut s = good.clone();
        s[sof + 12] = 3;
        let e = refused(&s, "quantization table 3");
        assert!(matches!(e, Jpeg12Error::MissingTable { table: "quantization", id: 3, .. }), "{e}");
        // DQT lengths that do not fit the tables (this one has 8 and 16-bit tables, 65 and 129
        // bytes); a table with more codes of a length than there are.
        let dqt = segment_at(&good, 0xDB);
        assert_eq!(be16(&good, dqt + 2), 2 + 65 + 129);
        for len in [2 + 65 + 128, 2 + 65 + 130, 2 + 64, 2] {
            let mut s = good.clone();
            s[dqt + 2..dqt + 4].copy_from_slice(&(len as u16).to_be_bytes());
            let e = refused(&s, "DQT length");
            assert!(matches!(&e, Jpeg12Error::Invalid { offset, marker, .. } if *offset == dqt && marker.starts_with("DQT")), "{len}: {e}");
        }
        let dht = segment_at(&good, 0xC4);
        let mut s = good.clone();
        s[dht + 5] = 3;
        let e = refused(&s, "3 codes of length 1");
        assert!(matches!(e, Jpeg12Error::Invalid { .. }) && e.to_string().contains("3 codes of length 1"), "{e}");
        // Sampling factors: not an integral fraction; too many blocks in an MCU.
        let img = enc_image(8, 16, 16, &[(3, 1), (2, 1)], vec![vec![0], vec![1]], 0, false);
        let e = refused(&encode(&img), "3x1 and 2x1");
        assert!(matches!(e, Jpeg12Error::Unsupported { .. }) && e.to_string().contains("integral"), "{e}");
        let img = enc_image(8, 16, 16, &[(4, 3), (1, 1)], vec![vec![0, 1]], 0, false);
        let e = refused(&encode(&img), "13 blocks");
        assert!(matches!(e, Jpeg12Error::Invalid { .. }) && e.to_string().contains("13 blocks in an MCU"), "{e}");
        // A component in two scans; a scan before the frame; a DNL marker; EOI before the scan.
        let img = enc_image(8, 16, 16, &[(1, 1), (1, 1)], vec![vec![0, 1], vec![1]], 0, false);
        let e = refused(&encode(&img), "twice");
        assert!(e.to_string().contains("earlier scan"), "{e}");
        let mut s = good.clone();
        s[sof + 1] = 0xE3;
        assert!(refused(&s, "no frame").to_string().contains("a scan before the frame header"));
        let mut s = good.clone();
        s[dht + 1] = 0xDC;
        assert!(matches!(refused(&s, "DNL"), Jpeg12Error::Unsupported { .. }));
        let mut s = good[..sos].to_vec();
        s.extend([0xFF, 0xD9]);
        assert!(matches!(refused(&s, "no scan"), Jpeg12Error::Incomplete { .. }));
        // Scan header: a component not in the frame.
        let mut s = good.clone();
        s[sos + 5] = 9;
        assert!(refused(&s, "component 9").to_string().contains("component 9 is not in the frame"));
    }

    /// Coded data that runs out is an error naming where it ends (not zeros filled in); a
    /// wrong restart marker is an error naming the one expected.
    #[test]
    fn truncated_scan_and_wrong_restart() {
        let s = stream_of(&data("JPGExtended.dcm"));
        let cut = s.len() / 2;
        match decode(&s[..cut]) {
            Err(Jpeg12Error::OutOfData { offset, scan, place }) => {
                assert_eq!(offset, cut);
                assert_eq!(scan, segment_at(&s, 0xDA));
                assert!(place.starts_with("block "), "{place}");
            }
            other => panic!("{other:?}"),
        }
        // Cut just before EOI (the fragment is padded to an even length with an FF after it):
        // the last block needs the last byte of coded data.
        let end = s.windows(2).rposition(|w| w == [0xFF, 0xD9]).expect("EOI");
        assert_eq!(end, s.len() - 3);
        assert!(decode(&s[..end]).is_ok(), "whole without EOI");
        assert!(matches!(decode(&s[..end - 1]), Err(Jpeg12Error::OutOfData { .. })));
        // Restart interval of 1 MCU: the first marker made RST3.
        let img = enc_image(12, 16, 8, &[(1, 1)], vec![vec![0]], 1, false);
        let mut s = encode(&img);
        let sos = segment_at(&s, 0xDA);
        let coded = sos + 2 + usize::from(be16(&s, sos + 2));
        let rst = coded + s[coded..].windows(2).position(|w| w == [0xFF, 0xD0]).expect("RST0");
        s[rst + 1] = 0xD3;
        match decode(&s) {
            Err(Jpeg12Error::Restart { offset, expected: 0, found, .. }) => {
                assert_eq!(offset, rst);
                assert!(found.starts_with("RST3"), "{found}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Damaged streams (every truncation, and thousands of seeded single-byte changes) are
    /// decoded or refused, never a panic; a truncated stream that decodes gives the whole
    /// image (it lost only bytes no sample needed).
    #[test]
    fn damaged_streams_never_panic() {
        let guarded = |bytes: &[u8]| match std::panic::catch_unwind(|| decode(bytes)) {
            Ok(result) => {
                if let Ok(d) = &result {
                    let n = u64::from(d.width) * u64::from(d.height) * u64::from(d.components);
                    assert!(n <= MAX_SAMPLES && d.samples.len() as u64 == n);
                    assert!(d.samples.iter().all(|&v| v >> d.precision == 0));
                }
                result
            }
            Err(_) => panic!("decode panicked on {bytes:02X?}"),
        };
        let streams = [
            encode(&enc_image(12, 19, 11, &[(1, 1)], vec![vec![0]], 0, false)),
            encode(&enc_image(12, 21, 13, &[(1, 2), (1, 1), (1, 1)], vec![vec![0, 1, 2]], 2, true)),
            encode(&enc_image(8, 21, 13, &[(2, 1), (1, 1), (1, 1)], vec![vec![1], vec![0, 2]], 3, false)),
            stream_of(&data("JPGExtended.dcm")),
        ];
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for (n, s) in streams.iter().enumerate() {
            let whole = guarded(s).expect("the undamaged stream");
            // The pydicom stream is large: every 7th truncation of it.
            let step = if s.len() > 5000 { 7 } else { 1 };
            for keep in (0..s.len()).step_by(step) {
                if let Ok(d) = guarded(&s[..keep]) {
                    assert_eq!(d, whole, "stream {n} cut to {keep} bytes decodes to another image");
                }
            }
            for _ in 0..if s.len() > 5000 { 1000 } else { 3000 } {
                let mut bytes = s.clone();
                let at = (next(&mut rng) % s.len() as u64) as usize;
                bytes[at] = match next(&mut rng) % 3 {
                    0 => 0xFF,
                    _ => bytes[at] ^ (1 + next(&mut rng) % 255) as u8,
                };
                if let Ok(d) = guarded(&bytes) {
                    // A change in the headers may change the geometry, one in the coded data
                    // only the values.
                    if at > segment_at(s, 0xDA) + 14 {
                        assert_eq!((d.width, d.height, d.components), (whole.width, whole.height, whole.components), "stream {n}, byte {at}");
                    }
                }
            }
        }
    }

    /// The zig-zag order is Figure A.6's.
    #[test]
    fn zigzag_is_figure_a6() {
        #[rustfmt::skip]
        let figure: [u8; 64] = [
            0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
            12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
            35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
            58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
        ];
        assert_eq!(ZIGZAG, figure);
        let mut seen = [false; 64];
        ZIGZAG.iter().for_each(|&i| seen[usize::from(i)] = true);
        assert!(seen.iter().all(|&s| s));
    }

    /// Annex K's luminance DC table (Table K.3) gets Table K.3's codes, decoded from the bits.
    #[test]
    fn huffman_table_k3() {
        let counts = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
        let values: Vec<u8> = (0..12).collect();
        let t = Huffman::new(&counts, &values).expect("K.3");
        // (category, code length, code) from Table K.3.
        let codes: [(u8, u32, u32); 12] =
            [(0, 2, 0b00), (1, 3, 0b010), (2, 3, 0b011), (3, 3, 0b100), (4, 3, 0b101), (5, 3, 0b110), (6, 4, 0b1110), (7, 5, 0b11110), (8, 6, 0b111110), (9, 7, 0b1111110), (10, 8, 0b11111110), (11, 9, 0b111111110)];
        let mut w = BitWriter { out: Vec::new(), acc: 0, n: 0 };
        for &(_, len, code) in &codes {
            w.put(code, len);
        }
        w.flush();
        let mut br = BitReader::new(&w.out, 0, Stuffing::Byte);
        for &(category, ..) in &codes {
            assert_eq!(t.decode(&mut br).ok(), Some(category));
        }
        // The padding 1s begin no code: the data ends.
        assert!(matches!(t.decode(&mut br), Err(Fault::OutOfData)));
        // A length with too many codes is no table.
        assert!(Huffman::new(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[1, 2, 3]).is_err());
        // Long codes (16 bits) go through the slow path.
        let mut counts = [0u8; 16];
        counts[15] = 200;
        let values: Vec<u8> = (0..200).collect();
        let t = Huffman::new(&counts, &values).expect("16-bit codes");
        let mut w = BitWriter { out: Vec::new(), acc: 0, n: 0 };
        w.put(199, 16);
        w.put(7, 16);
        w.flush();
        let mut br = BitReader::new(&w.out, 0, Stuffing::Byte);
        assert_eq!(t.decode(&mut br).ok(), Some(199));
        assert_eq!(t.decode(&mut br).ok(), Some(7));
    }

    /// The inverse DCT inverts the forward DCT of [`encode`], and a block of only DC is flat.
    #[test]
    fn idct_inverts_the_fdct() {
        let idct = Idct::new(12);
        let mut rng = 7u64;
        let samples: [f64; 64] = std::array::from_fn(|_| (next(&mut rng) % 4096) as f64 - 2048.0);
        let coef: [i32; 64] = std::array::from_fn(|i| {
            let (v, u) = (i / 8, i % 8);
            let mut sum = 0.0;
            for y in 0..8 {
                for x in 0..8 {
                    sum += idct.basis[y][v] * idct.basis[x][u] * samples[y * 8 + x] * 16.0;
                }
            }
            sum.round() as i32
        });
        let mut plane = [0u16; 64];
        idct.block(&coef, true, &[1; 64], &mut plane, 8, 8, 0, 0);
        // Coefficients of 16 times the samples, rounded: back within 1 of 16 × sample + 2048.
        for (p, s) in plane.iter().zip(&samples) {
            let expected = (s * 16.0 + 2048.0).clamp(0.0, 4095.0);
            assert!((f64::from(*p) - expected).abs() <= 1.0, "{p} {expected}");
        }
        let mut flat = [0i32; 64];
        flat[0] = -80;
        let (mut a, mut b) = ([0u16; 64], [0u16; 64]);
        idct.block(&flat, false, &[3; 64], &mut a, 8, 8, 0, 0);
        idct.block(&flat, true, &[3; 64], &mut b, 8, 8, 0, 0);
        assert_eq!(a, [2048 - 30; 64]);
        assert_eq!(a, b);
    }
}
