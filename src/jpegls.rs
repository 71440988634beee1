//! JPEG-LS decoding (ISO/IEC 14495-1 | ITU-T T.87), lossless and near-lossless, in pure Rust.
//!
//! DICOM's JPEG-LS transfer syntaxes (1.2.840.10008.1.2.4.80 lossless, .81 near-lossless) hold
//! a JPEG-LS stream per frame, which dicom-pixeldata 0.10 decodes only through a C++ library
//! (CharLS). This module decodes such a stream itself, written from the standard's algorithm:
//! the decoder mirrors the coding procedure of Annex A (context modelling, prediction, Golomb
//! coding, run mode) and the interleaving of Annex B, and reads the marker segments of Annex C.
//!
//! Decoded: 2 to 16 bits per sample, 1 to 4 components, NEAR 0 (lossless) and above, the three
//! interleave modes (none, line, sample), preset coding parameters (LSE type 1) with the
//! standard's defaults for any left at zero, and restart intervals (DRI and RSTm).
//! Refused with [`JpegLsError::Unsupported`], never decoded wrongly: mapping tables (LSE types 2
//! and 3, or a scan that selects one), LSE type 4 (dimensions beyond 16 bits), HP's colour
//! transforms (an APP8 "mrfx" segment with a transform other than 0), sub-sampled components,
//! a point transform, and a number of lines left to a DNL marker.
//!
//! Storage tools are fed damaged files: whatever the input, [`decode`] returns (no panic, no
//! overflow, no output larger than [`MAX_SAMPLES`]), and coded data that runs out or breaks the
//! code is an error naming the byte offset, never silently filled in.

use thiserror::Error;

use crate::jpegmarker::{be16, marker_name, segment_end, BitReader, Fault, Stuffing};

/// Most samples (columns × lines × components) a frame may have: 2^28, half a gigabyte of
/// output. Far above any DICOM frame, far below what a damaged header could ask for.
pub(crate) const MAX_SAMPLES: u64 = 1 << 28;

/// J[RUNindex] (A.7.1): a run-length code bit 1 stands for 2^J[RUNindex] samples of the run,
/// and the remainder of an interrupted run is sent in J[RUNindex] bits.
const J: [u32; 32] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Bounds of the bias correction C[Q] (A.6.2).
const MIN_C: i32 = -128;
/// See [`MIN_C`].
const MAX_C: i32 = 127;

/// RESET when the stream gives none (C.2.4.1.1): how many samples a context counts before its
/// statistics are halved.
const DEFAULT_RESET: i32 = 64;

/// Number of regular-mode contexts: the sign-normalised triples of quantized gradients (9^3
/// triples, half of them the negation of the others, plus the all-zero one).
const REGULAR_CONTEXTS: usize = 365;

/// A decoded JPEG-LS image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// Columns (X of the frame header).
    pub width: u32,
    /// Lines (Y of the frame header).
    pub height: u32,
    /// Number of components (1..=4).
    pub components: u8,
    /// Sample precision P from the frame header (2..=16).
    pub precision: u8,
    /// The samples, row by row, a pixel's components together (R,G,B,R,G,B,... whatever the
    /// interleave mode in the stream was), width*height*components values.
    pub samples: Vec<u16>,
}

/// Why a stream could not be decoded. Every variant but the first (which is about byte 0)
/// names the byte offset in the stream where the trouble is, and the marker or scan involved,
/// so that a damaged file can be looked at.
#[derive(Debug, Error)]
pub(crate) enum JpegLsError {
    /// The stream does not start with the SOI marker: it is not JPEG-LS (or not its start).
    #[error("not a JPEG-LS stream: it starts with {found} where the SOI marker FF D8 should be")]
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
    /// Valid JPEG-LS (or a JPEG extension) that this decoder does not implement.
    #[error("{marker} at byte {offset}: unsupported: {reason}")]
    Unsupported {
        offset: usize,
        marker: String,
        reason: String,
    },
    /// The frame is larger than [`MAX_SAMPLES`].
    #[error("SOF55 (FF F7) at byte {offset}: {width}x{height} pixels of {components} components are {samples} samples, more than the {max} this decoder accepts", max = MAX_SAMPLES)]
    TooLarge {
        offset: usize,
        width: u32,
        height: u32,
        components: u8,
        samples: u64,
    },
    /// The entropy-coded data of a scan ends (at a marker or the end of the stream) before the
    /// samples it must code.
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

/// Decode a JPEG-LS stream (one frame, from SOI to EOI) into its samples.
///
/// Marker segments other than those JPEG-LS gives meaning to (APPn, COM, and the like) are
/// skipped by their length. A stream that ends after its last scan without EOI is accepted
/// when every component was decoded: the image is whole.
pub(crate) fn decode(stream: &[u8]) -> Result<Decoded, JpegLsError> {
    crate::jpegmarker::check_soi(stream)?;
    let mut at = 2;
    let mut frame: Option<Frame> = None;
    let mut preset = Preset::default();
    let mut restart_interval: u32 = 0;
    loop {
        let (offset, marker, body, next) = match crate::jpegmarker::next_segment(stream, at)? {
            crate::jpegmarker::Step::End { offset } => return finish(frame, offset),
            crate::jpegmarker::Step::Segment { offset, marker, body, next } => (offset, marker, body, next),
        };
        match marker {
            0xF7 => {
                if frame.is_some() {
                    return Err(invalid(offset, marker, "a second frame header (one frame per stream)"));
                }
                frame = Some(Frame::parse(body, offset)?);
            }
            0xF8 => preset.parse(body, offset)?,
            0xDD => restart_interval = parse_dri(body, offset)?,
            0xDA => {
                let Some(f) = frame.as_mut() else {
                    return Err(invalid(offset, marker, "a scan before the frame header SOF55"));
                };
                let scan = ScanHeader::parse(body, offset, f)?;
                let params = Params::new(&preset, f.precision, scan.near).map_err(|reason| invalid(offset, marker, &reason))?;
                at = decode_scan(stream, next, f, &scan, &params, restart_interval)?;
                continue;
            }
            0xE8 if body.starts_with(b"mrfx") => {
                // HP's colour transform extension: 0 is none, 1 to 3 are HP1 to HP3.
                match body.get(4) {
                    Some(0) => {}
                    Some(&t) => return Err(unsupported(offset, marker, &format!("the HP colour transform {t} (APP8 \"mrfx\")"))),
                    None => return Err(invalid(offset, marker, "an APP8 \"mrfx\" segment without its transform byte")),
                }
            }
            0xDC => return Err(unsupported(offset, marker, "a DNL marker (number of lines given after the first scan)")),
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return Err(unsupported(offset, marker, "the frame header of another JPEG process (not JPEG-LS)"));
            }
            _ => {}
        }
        at = next;
    }
}

/// The image, once the stream says EOI (or ends) at `offset`: an error unless every
/// component was decoded.
fn finish(frame: Option<Frame>, offset: usize) -> Result<Decoded, JpegLsError> {
    let Some(f) = frame else {
        return Err(JpegLsError::Incomplete { offset, missing: "a frame header (SOF55) and a scan".to_string() });
    };
    let missing: Vec<String> = f.ids.iter().zip(&f.done).filter(|(_, d)| !**d).map(|(id, _)| id.to_string()).collect();
    if !missing.is_empty() {
        return Err(JpegLsError::Incomplete { offset, missing: format!("a scan of component(s) {}", missing.join(", ")) });
    }
    Ok(Decoded {
        width: f.width,
        height: f.height,
        components: f.ids.len() as u8,
        precision: f.precision,
        samples: f.samples,
    })
}

impl From<crate::jpegmarker::SyntaxError> for JpegLsError {
    fn from(e: crate::jpegmarker::SyntaxError) -> Self {
        use crate::jpegmarker::SyntaxError as S;
        match e {
            S::NoSoi { found } => JpegLsError::NoSoi { found },
            S::ExpectedMarker { offset, found } => JpegLsError::ExpectedMarker { offset, found },
            S::TruncatedSegment { offset, marker, needed, left } => JpegLsError::TruncatedSegment { offset, marker: marker_name(marker), needed, left },
            S::Invalid { offset, marker, reason } => invalid(offset, marker, &reason),
        }
    }
}

/// [`JpegLsError::Invalid`] for the marker `m` at `offset`.
fn invalid(offset: usize, m: u8, reason: &str) -> JpegLsError {
    JpegLsError::Invalid { offset, marker: marker_name(m), reason: reason.to_string() }
}

/// [`JpegLsError::Unsupported`] for the marker `m` at `offset`.
fn unsupported(offset: usize, m: u8, reason: &str) -> JpegLsError {
    JpegLsError::Unsupported { offset, marker: marker_name(m), reason: reason.to_string() }
}

/// The frame (SOF55): its geometry, its components, and the output being filled in by scans.
struct Frame {
    /// Sample precision P.
    precision: u8,
    /// Columns X.
    width: u32,
    /// Lines Y.
    height: u32,
    /// Component identifiers Ci, in frame order (the order of a pixel's samples in the output).
    ids: Vec<u8>,
    /// Which components a scan has decoded (each is coded in exactly one scan).
    done: Vec<bool>,
    /// The output, width × height × components, a pixel's components together.
    samples: Vec<u16>,
}

impl Frame {
    /// Parse the body of SOF55 at `offset`: P, Y, X, Nf, then per component Ci, Hi/Vi, Tqi.
    fn parse(body: &[u8], offset: usize) -> Result<Frame, JpegLsError> {
        let m = 0xF7;
        if body.len() < 6 {
            return Err(invalid(offset, m, &format!("{} bytes of header, at least 6 needed", body.len())));
        }
        let precision = body[0];
        let height = u32::from(be16(body, 1));
        let width = u32::from(be16(body, 3));
        let nf = body[5];
        if body.len() != 6 + 3 * usize::from(nf) {
            return Err(invalid(offset, m, &format!("{} bytes of header for {nf} components, {} expected", body.len(), 6 + 3 * usize::from(nf))));
        }
        if !(2..=16).contains(&precision) {
            return Err(invalid(offset, m, &format!("sample precision P = {precision}, JPEG-LS allows 2 to 16")));
        }
        if nf == 0 {
            return Err(invalid(offset, m, "no components (Nf = 0)"));
        }
        if nf > 4 {
            return Err(unsupported(offset, m, &format!("{nf} components (this decoder takes 1 to 4)")));
        }
        if width == 0 {
            return Err(invalid(offset, m, "the number of columns X is 0"));
        }
        if height == 0 {
            return Err(unsupported(offset, m, "the number of lines Y is 0 (to be defined by a DNL marker)"));
        }
        let mut ids = Vec::new();
        let mut sampling = Vec::new();
        for c in body[6..].chunks_exact(3) {
            if ids.contains(&c[0]) {
                return Err(invalid(offset, m, &format!("component identifier {} appears twice", c[0])));
            }
            let (h, v) = (c[1] >> 4, c[1] & 0x0F);
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                return Err(invalid(offset, m, &format!("component {}: sampling factors H = {h}, V = {v}, 1 to 4 allowed", c[0])));
            }
            ids.push(c[0]);
            sampling.push((h, v));
        }
        // Equal factors everywhere mean every component is X by Y: no sub-sampling.
        if sampling.iter().any(|s| *s != sampling[0]) {
            let factors: Vec<String> = ids.iter().zip(&sampling).map(|(id, (h, v))| format!("{id}: {h}x{v}")).collect();
            return Err(unsupported(offset, m, &format!("sub-sampled components (sampling factors {})", factors.join(", "))));
        }
        let samples = u64::from(width) * u64::from(height) * u64::from(nf);
        if samples > MAX_SAMPLES {
            return Err(JpegLsError::TooLarge { offset, width, height, components: nf, samples });
        }
        Ok(Frame {
            precision,
            width,
            height,
            done: vec![false; ids.len()],
            ids,
            // Zeroed memory from the allocator: pages a damaged stream never reaches stay
            // untouched.
            samples: vec![0; samples as usize],
        })
    }
}

/// Preset coding parameters from an LSE type 1 segment, as written: 0 means "the default".
/// They hold for the scans that follow, until another LSE replaces them.
#[derive(Default)]
struct Preset {
    maxval: u16,
    t1: u16,
    t2: u16,
    t3: u16,
    reset: u16,
}

impl Preset {
    /// Parse the body of an LSE segment at `offset`: type 1 sets the parameters, the mapping
    /// table and oversize dimension types are refused.
    fn parse(&mut self, body: &[u8], offset: usize) -> Result<(), JpegLsError> {
        let m = 0xF8;
        match body.first() {
            Some(1) => {
                if body.len() != 11 {
                    return Err(invalid(offset, m, &format!("preset coding parameters (type 1) of {} bytes, 11 expected", body.len())));
                }
                *self = Preset {
                    maxval: be16(body, 1),
                    t1: be16(body, 3),
                    t2: be16(body, 5),
                    t3: be16(body, 7),
                    reset: be16(body, 9),
                };
                Ok(())
            }
            Some(t @ (2 | 3)) => Err(unsupported(offset, m, &format!("a mapping table (LSE type {t})"))),
            Some(4) => Err(unsupported(offset, m, "oversize image dimensions (LSE type 4)")),
            Some(t) => Err(invalid(offset, m, &format!("unknown LSE type {t}"))),
            None => Err(invalid(offset, m, "an empty LSE segment")),
        }
    }
}

/// Parse the body of DRI at `offset`: the restart interval in lines, on 2 to 4 bytes (C.2.5
/// widens T.81's 2), 0 for none.
fn parse_dri(body: &[u8], offset: usize) -> Result<u32, JpegLsError> {
    if !(2..=4).contains(&body.len()) {
        return Err(invalid(offset, 0xDD, &format!("a restart interval of {} bytes, 2 to 4 allowed", body.len())));
    }
    Ok(body.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)))
}

/// A scan header (SOS).
struct ScanHeader {
    /// Byte offset of the SOS marker, for messages.
    offset: usize,
    /// The scan's components, as indices into the frame's, in the order they are coded.
    comps: Vec<usize>,
    /// The scan's component identifiers, for messages.
    ids: Vec<u8>,
    /// NEAR: the largest error allowed per sample (0: lossless).
    near: i32,
    /// ILV: 0 none (one component), 1 line, 2 sample interleaved.
    ilv: u8,
}

impl ScanHeader {
    /// Parse the body of SOS at `offset`: Ns, per component Csj and Tmj, then NEAR, ILV and
    /// the point transform byte. The components must be in the frame and not yet decoded.
    fn parse(body: &[u8], offset: usize, frame: &Frame) -> Result<ScanHeader, JpegLsError> {
        let m = 0xDA;
        let Some(&ns) = body.first() else {
            return Err(invalid(offset, m, "an empty scan header"));
        };
        let ns = usize::from(ns);
        if body.len() != 1 + 2 * ns + 3 {
            return Err(invalid(offset, m, &format!("{} bytes of header for {ns} components, {} expected", body.len(), 1 + 2 * ns + 3)));
        }
        if ns == 0 || ns > frame.ids.len() {
            return Err(invalid(offset, m, &format!("{ns} components in a scan of a frame of {}", frame.ids.len())));
        }
        let mut comps = Vec::new();
        let mut ids = Vec::new();
        for c in body[1..1 + 2 * ns].chunks_exact(2) {
            let Some(k) = frame.ids.iter().position(|&id| id == c[0]) else {
                return Err(invalid(offset, m, &format!("component {} is not in the frame", c[0])));
            };
            if comps.contains(&k) {
                return Err(invalid(offset, m, &format!("component {} appears twice", c[0])));
            }
            if frame.done[k] {
                return Err(invalid(offset, m, &format!("component {} was already decoded by an earlier scan", c[0])));
            }
            if c[1] != 0 {
                return Err(unsupported(offset, m, &format!("component {} selects mapping table {}", c[0], c[1])));
            }
            comps.push(k);
            ids.push(c[0]);
        }
        let near = body[1 + 2 * ns];
        let ilv = body[2 + 2 * ns];
        let transform = body[3 + 2 * ns];
        if ilv > 2 {
            return Err(invalid(offset, m, &format!("interleave mode ILV = {ilv}, 0 to 2 allowed")));
        }
        if ilv == 0 && ns > 1 {
            return Err(invalid(offset, m, &format!("{ns} components in a scan that interleaves none (ILV = 0)")));
        }
        if transform != 0 {
            return Err(unsupported(offset, m, &format!("a point transform (Al = {}; only 0 is decoded)", transform & 0x0F)));
        }
        Ok(ScanHeader { offset, comps, ids, near: i32::from(near), ilv })
    }
}

/// The coding parameters of a scan (C.2.4.1): the preset parameters or their defaults, and
/// what follows from them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Params {
    maxval: i32,
    near: i32,
    t1: i32,
    t2: i32,
    t3: i32,
    reset: i32,
    /// Number of values a quantized prediction error can take.
    range: i32,
    /// Bits of a quantized prediction error: ceil(log2(RANGE)).
    qbpp: u32,
    /// Most bits a Golomb code word may take (the escape code fills it).
    limit: u32,
}

impl Params {
    /// The parameters of a scan with `near` under `preset`, for precision `p`; the reason if
    /// they break the standard's bounds.
    fn new(preset: &Preset, p: u8, near: i32) -> Result<Params, String> {
        let top = (1i32 << p) - 1;
        let maxval = if preset.maxval == 0 { top } else { i32::from(preset.maxval) };
        if maxval > top {
            return Err(format!("MAXVAL {maxval} does not fit the sample precision of {p} bits"));
        }
        if near > (maxval / 2).min(255) {
            return Err(format!("NEAR {near} above min(255, MAXVAL/2) for MAXVAL {maxval}"));
        }
        let (d1, d2, d3) = default_thresholds(maxval, near);
        let pick = |given: u16, default: i32| if given == 0 { default } else { i32::from(given) };
        let (t1, t2, t3) = (pick(preset.t1, d1), pick(preset.t2, d2), pick(preset.t3, d3));
        let reset = pick(preset.reset, DEFAULT_RESET);
        if reset < 3 || reset > maxval.max(255) {
            return Err(format!("RESET {reset} outside 3 to max(255, MAXVAL)"));
        }
        let range = (maxval + 2 * near) / (2 * near + 1) + 1;
        let qbpp = ceil_log2(range);
        let bpp = ceil_log2(maxval + 1).max(2);
        let limit = 2 * (bpp + bpp.max(8));
        Ok(Params { maxval, near, t1, t2, t3, reset, range, qbpp, limit })
    }
}

/// The default thresholds T1, T2, T3 for `maxval` and `near` (C.2.4.1.1): the basic 3, 7, 21
/// scaled to the sample range and widened by NEAR, kept in order and within MAXVAL.
fn default_thresholds(maxval: i32, near: i32) -> (i32, i32, i32) {
    let clamp = |i: i32, j: i32| if i > maxval || i < j { j } else { i };
    if maxval >= 128 {
        let factor = (maxval.min(4095) + 128) / 256;
        // FACTOR * (BASIC_Ti - i - 1) + i + 1 + (2i + 1) * NEAR, with BASIC_T1..3 = 3, 7, 21.
        let t1 = clamp(factor + 2 + 3 * near, near + 1);
        let t2 = clamp(factor * 4 + 3 + 5 * near, t1);
        let t3 = clamp(factor * 17 + 4 + 7 * near, t2);
        (t1, t2, t3)
    } else {
        let factor = 256 / (maxval + 1);
        let t1 = clamp((3 / factor + 3 * near).max(2), near + 1);
        let t2 = clamp((7 / factor + 5 * near).max(3), t1);
        let t3 = clamp((21 / factor + 7 * near).max(4), t2);
        (t1, t2, t3)
    }
}

/// The smallest n with 2^n >= v (v >= 1).
fn ceil_log2(v: i32) -> u32 {
    let mut n = 0;
    while n < 31 && (1i64 << n) < i64::from(v) {
        n += 1;
    }
    n
}

/// The bit reading of JPEG-LS: single bits and Golomb codes.
impl BitReader<'_> {
    /// The next bit.
    #[inline]
    fn bit(&mut self) -> Result<bool, Fault> {
        Ok(self.bits(1)? == 1)
    }

    /// The number of 0 bits before the next 1 bit, which is read too; more than `max` zeros
    /// is an error (no code word has them).
    #[inline]
    fn zeros(&mut self, max: u32) -> Result<u32, Fault> {
        let mut count = 0u32;
        loop {
            if self.bits == 0 {
                self.refill();
                if self.bits == 0 {
                    return Err(Fault::OutOfData);
                }
            }
            let lz = self.cache.leading_zeros();
            if lz < self.bits {
                count += lz;
                self.consume(lz + 1);
                break;
            }
            count += self.bits;
            self.consume(self.bits);
            if count > max {
                break;
            }
        }
        if count > max {
            return Err(Fault::Corrupt("a Golomb code longer than LIMIT bits"));
        }
        Ok(count)
    }

    /// A value coded with the limited-length Golomb code of parameter `k` (A.5.3): a unary
    /// high part and k low bits, or, once the unary part reaches `limit` - qbpp - 1 zeros, the
    /// escape: the value minus one in `qbpp` bits.
    #[inline]
    fn golomb(&mut self, k: u32, limit: u32, qbpp: u32) -> Result<u64, Fault> {
        let escape = limit.saturating_sub(qbpp + 1);
        let high = self.zeros(escape)?;
        if high < escape {
            Ok((u64::from(high) << k) | u64::from(self.bits(k)?))
        } else {
            Ok(u64::from(self.bits(qbpp)?) + 1)
        }
    }
}

/// The statistics of a regular-mode context (A.2): sum of error magnitudes A, bias sum B,
/// bias correction C, count N.
#[derive(Clone, Copy)]
struct Context {
    a: i64,
    b: i64,
    c: i32,
    n: i64,
}

/// The statistics of a run interruption context (A.7.2): A and N as above, and Nn, the count
/// of negative errors.
#[derive(Clone, Copy)]
struct RunContext {
    a: i64,
    n: i64,
    nn: i64,
}

/// The decoding state of one scan: its parameters and contexts, shared by all components of
/// the scan (Annex B: interleaved components use one set of contexts; each component keeps
/// its own run index in line interleaving).
struct Coder {
    p: Params,
    /// 2*NEAR + 1: the step of the quantized error.
    step: i32,
    /// Quantization of a gradient d into -4..=4, at index d + MAXVAL (A.3.3): gradients are
    /// differences of reconstructed samples, which lie in 0..=MAXVAL.
    quant: Vec<i8>,
    regular: [Context; REGULAR_CONTEXTS],
    /// Run interruption contexts: [0] for RItype 0 (365 in the standard), [1] for RItype 1.
    run: [RunContext; 2],
    /// Run interruption in sample-interleaved mode codes every component as RItype 0 (see
    /// [`Coder::interruption`]).
    pixel_runs: bool,
}

impl Coder {
    /// The state at the start of a scan with parameters `p`.
    fn new(p: Params, pixel_runs: bool) -> Coder {
        let quant = (-p.maxval..=p.maxval).map(|d| quantize(d, &p)).collect();
        let mut coder = Coder {
            step: 2 * p.near + 1,
            quant,
            regular: [Context { a: 0, b: 0, c: 0, n: 1 }; REGULAR_CONTEXTS],
            run: [RunContext { a: 0, n: 1, nn: 0 }; 2],
            p,
            pixel_runs,
        };
        coder.reset();
        coder
    }

    /// Initialise every context (A.2), at the start of a scan and after a restart marker.
    fn reset(&mut self) {
        let a = i64::from(((self.p.range + 32) / 64).max(2));
        self.regular = [Context { a, b: 0, c: 0, n: 1 }; REGULAR_CONTEXTS];
        self.run = [RunContext { a, n: 1, nn: 0 }; 2];
    }

    /// The signed context number of gradients d1, d2, d3: 81*Q1 + 9*Q2 + Q3, in -364..=364,
    /// 0 when all three are within NEAR (run mode).
    #[inline]
    fn context(&self, d1: i32, d2: i32, d3: i32) -> i32 {
        let q = |d: i32| i32::from(self.quant[(d + self.p.maxval) as usize]);
        81 * q(d1) + 9 * q(d2) + q(d3)
    }

    /// The reconstructed sample for the prediction `px` and the quantized error `err` already
    /// signed, as the encoder reconstructs it (A.4), with the wrap-around of the modular
    /// reduction of the error undone, then clamped to 0..=MAXVAL.
    #[inline]
    fn reconstruct(&self, px: i32, err: i32) -> i32 {
        let mut rx = px + err * self.step;
        if rx < -self.p.near {
            rx += self.p.range * self.step;
        } else if rx > self.p.maxval + self.p.near {
            rx -= self.p.range * self.step;
        }
        rx.clamp(0, self.p.maxval)
    }

    /// A mapped error value read from the stream, refused when larger than any error of the
    /// sample range maps to (a damaged stream), so that the arithmetic after stays small.
    #[inline]
    fn mapped(&self, v: u64) -> Result<i32, Fault> {
        if v > 2 * self.p.range as u64 + 2 {
            return Err(Fault::Corrupt("a prediction error beyond the sample range"));
        }
        Ok(v as i32)
    }

    /// Decode a sample in regular mode (A.4 to A.6) with signed context `q`, neighbours
    /// `ra` (left), `rb` (above), `rc` (above left).
    #[inline]
    fn regular(&mut self, br: &mut BitReader, q: i32, ra: i32, rb: i32, rc: i32) -> Result<i32, Fault> {
        let sign = if q < 0 { -1 } else { 1 };
        let ctx = self.regular[q.unsigned_abs() as usize];
        // Median edge detector, then the context's bias correction.
        let med = if rc >= ra.max(rb) {
            ra.min(rb)
        } else if rc <= ra.min(rb) {
            ra.max(rb)
        } else {
            ra + rb - rc
        };
        let px = (med + sign * ctx.c).clamp(0, self.p.maxval);
        let k = golomb_k(ctx.n, ctx.a);
        let m = self.mapped(br.golomb(k, self.p.limit, self.p.qbpp)?)?;
        // Inverse of the error mapping (A.5.2); the mapping is turned around when a lossless
        // context with k = 0 has a negative bias.
        let mut err = if m & 1 == 0 { m >> 1 } else { -((m + 1) >> 1) };
        if self.p.near == 0 && k == 0 && 2 * ctx.b <= -ctx.n {
            err = -err - 1;
        }
        self.update(q.unsigned_abs() as usize, err);
        Ok(self.reconstruct(px, sign * err))
    }

    /// Update a regular context with the error `err` of its sample (A.6): A, B, N, halved
    /// every RESET samples, and the bias correction C moved when the mean bias leaves
    /// (-1, 0].
    #[inline]
    fn update(&mut self, q: usize, err: i32) {
        let reset = i64::from(self.p.reset);
        let step = i64::from(self.step);
        let ctx = &mut self.regular[q];
        ctx.b += i64::from(err) * step;
        ctx.a += i64::from(err.unsigned_abs());
        if ctx.n == reset {
            ctx.a >>= 1;
            ctx.b >>= 1;
            ctx.n >>= 1;
        }
        ctx.n += 1;
        if ctx.b <= -ctx.n {
            ctx.b += ctx.n;
            if ctx.c > MIN_C {
                ctx.c -= 1;
            }
            if ctx.b <= -ctx.n {
                ctx.b = -ctx.n + 1;
            }
        } else if ctx.b > 0 {
            ctx.b -= ctx.n;
            if ctx.c < MAX_C {
                ctx.c += 1;
            }
            if ctx.b > 0 {
                ctx.b = 0;
            }
        }
    }

    /// Decode the length of a run (A.7.1) of at most `left` samples: bits 1 each stand for
    /// 2^J[RUNindex] samples (fewer when the line ends first), a bit 0 is followed by the
    /// rest of the run in J[RUNindex] bits. Returns the length and whether the run reached the
    /// end of the line (otherwise an interruption sample follows).
    #[inline]
    fn run_length(&mut self, br: &mut BitReader, left: usize, run_index: &mut usize) -> Result<(usize, bool), Fault> {
        let mut n = 0usize;
        loop {
            let j = J[(*run_index).min(31)];
            if br.bit()? {
                let full = 1usize << j;
                let take = full.min(left - n);
                n += take;
                if take == full && *run_index < 31 {
                    *run_index += 1;
                }
                if n == left {
                    return Ok((n, true));
                }
            } else {
                n += br.bits(j)? as usize;
                if n >= left {
                    return Err(Fault::Corrupt("a run interrupted beyond the end of its line"));
                }
                return Ok((n, false));
            }
        }
    }

    /// Decode the sample that interrupts a run (A.7.2), with neighbours `ra` (the run's value)
    /// and `rb` (above), after a run coded with `run_index`.
    ///
    /// RItype 1 (Ra and Rb within NEAR) predicts Ra; RItype 0 predicts Rb with the sign of
    /// Rb - Ra. In sample-interleaved scans every component of the interrupting pixel is coded
    /// as RItype 0 (Px = Rb, sign of Rb - Ra, context 365), which is what the JPEG-LS encoders
    /// in use write there (CharLS, and dcmtk through it).
    #[inline]
    fn interruption(&mut self, br: &mut BitReader, ra: i32, rb: i32, run_index: usize) -> Result<i32, Fault> {
        let ritype = !self.pixel_runs && (ra - rb).abs() <= self.p.near;
        let (px, sign) = if ritype { (ra, 1) } else { (rb, if ra > rb { -1 } else { 1 }) };
        let t = usize::from(ritype);
        let ctx = self.run[t];
        let temp = if ritype { ctx.a + (ctx.n >> 1) } else { ctx.a };
        let k = golomb_k(ctx.n, temp);
        let limit = self.p.limit.saturating_sub(J[run_index.min(31)] + 1);
        let em = self.mapped(br.golomb(k, limit, self.p.qbpp)?)?;
        // EMErrval = 2|Errval| - RItype - map, where map says which sign the odd/even
        // choice stands for; undo it.
        let sum = em + i32::from(ritype);
        let map = sum & 1;
        let magnitude = (sum + map) >> 1;
        let negative_maps = k != 0 || 2 * ctx.nn >= ctx.n;
        let err = if (map == 1) == negative_maps { -magnitude } else { magnitude };
        let ctx = &mut self.run[t];
        if err < 0 {
            ctx.nn += 1;
        }
        ctx.a += i64::from((em + 1 - i32::from(ritype)) >> 1);
        if ctx.n == i64::from(self.p.reset) {
            ctx.a >>= 1;
            ctx.n >>= 1;
            ctx.nn >>= 1;
        }
        ctx.n += 1;
        Ok(self.reconstruct(px, sign * err))
    }

    /// Decode one line of one component (no interleaving, or line interleaving). `prev` and
    /// `cur` hold the line above and this line at 1..=width, with room for the neighbours
    /// beyond the edges at 0 and width + 1 (the standard's edge rules: the first sample's left
    /// neighbour is the sample above it, whose own left neighbour is the previous line's, and
    /// the last sample's above-right neighbour is the sample above it).
    fn line(&mut self, br: &mut BitReader, prev: &[i32], cur: &mut [i32], run_index: &mut usize) -> Result<(), Fault> {
        let w = cur.len() - 2;
        cur[0] = prev[1];
        let mut x = 1;
        while x <= w {
            let (ra, rb, rc, rd) = (cur[x - 1], prev[x], prev[x - 1], prev[x + 1]);
            let q = self.context(rd - rb, rb - rc, rc - ra);
            if q != 0 {
                cur[x] = self.regular(br, q, ra, rb, rc)?;
                x += 1;
                continue;
            }
            let (n, eol) = self.run_length(br, w + 1 - x, run_index)?;
            cur[x..x + n].fill(ra);
            x += n;
            if eol {
                break;
            }
            cur[x] = self.interruption(br, ra, prev[x], *run_index)?;
            *run_index = run_index.saturating_sub(1);
            x += 1;
        }
        cur[w + 1] = cur[w];
        Ok(())
    }

    /// Decode one line of a sample-interleaved scan (Annex B): per pixel, run mode when every
    /// component's gradients are within NEAR (the run goes on while every component equals
    /// its left neighbour), else each component in regular mode with its own context.
    fn pixel_line(&mut self, br: &mut BitReader, prev: &[Vec<i32>], cur: &mut [Vec<i32>], run_index: &mut usize) -> Result<(), Fault> {
        let w = cur[0].len() - 2;
        for (c, p) in cur.iter_mut().zip(prev) {
            c[0] = p[1];
        }
        let mut x = 1;
        while x <= w {
            let mut qs = [0i32; 4];
            for ((q, c), p) in qs.iter_mut().zip(cur.iter()).zip(prev) {
                *q = self.context(p[x + 1] - p[x], p[x] - p[x - 1], p[x - 1] - c[x - 1]);
            }
            if qs.iter().any(|&q| q != 0) {
                for ((&q, c), p) in qs.iter().zip(cur.iter_mut()).zip(prev) {
                    c[x] = self.regular(br, q, c[x - 1], p[x], p[x - 1])?;
                }
                x += 1;
                continue;
            }
            let (n, eol) = self.run_length(br, w + 1 - x, run_index)?;
            for c in cur.iter_mut() {
                let ra = c[x - 1];
                c[x..x + n].fill(ra);
            }
            x += n;
            if eol {
                break;
            }
            for (c, p) in cur.iter_mut().zip(prev) {
                c[x] = self.interruption(br, c[x - 1], p[x], *run_index)?;
            }
            *run_index = run_index.saturating_sub(1);
            x += 1;
        }
        for c in cur.iter_mut() {
            c[w + 1] = c[w];
        }
        Ok(())
    }
}

/// The Golomb parameter of a context (A.5.1): the smallest k with N * 2^k >= A. At most 32:
/// a damaged stream can inflate A, and the value read is checked after.
#[inline]
fn golomb_k(n: i64, a: i64) -> u32 {
    // N shifted to A's bit length is within a factor of two of A: one more shift at most.
    let k = n.leading_zeros().saturating_sub(a.leading_zeros()).min(32);
    if k < 32 && (n << k) < a {
        k + 1
    } else {
        k
    }
}

/// The quantized gradient (A.3.3): -4..=4 by the thresholds, 0 within NEAR.
fn quantize(d: i32, p: &Params) -> i8 {
    if d <= -p.t3 {
        -4
    } else if d <= -p.t2 {
        -3
    } else if d <= -p.t1 {
        -2
    } else if d < -p.near {
        -1
    } else if d <= p.near {
        0
    } else if d < p.t1 {
        1
    } else if d < p.t2 {
        2
    } else if d < p.t3 {
        3
    } else {
        4
    }
}

/// Decode the coded data of the scan `scan`, which starts at byte `start` of `s`, into the
/// frame's output. Returns the offset of the marker that ends the scan.
///
/// With a restart interval of `restart` lines (0: none), the data is in segments of that many
/// lines, each followed by the next RSTm marker; at each, the contexts and run indices start
/// afresh and the line above the first line is zeros again, as at the start of the scan, so
/// that each interval decodes on its own.
fn decode_scan(s: &[u8], start: usize, frame: &mut Frame, scan: &ScanHeader, params: &Params, restart: u32) -> Result<usize, JpegLsError> {
    let w = frame.width as usize;
    let h = frame.height as usize;
    let nf = frame.ids.len();
    let nc = scan.comps.len();
    let mut coder = Coder::new(params.clone(), scan.ilv == 2 && nc > 1);
    let mut prev = vec![vec![0i32; w + 2]; nc];
    let mut cur = vec![vec![0i32; w + 2]; nc];
    let mut run_index = vec![0usize; nc];
    let interval = if restart == 0 { h } else { restart as usize };
    let mut pos = start;
    let mut y = 0;
    let mut restarts = 0u8;
    while y < h {
        let end = segment_end(s, pos, Stuffing::Bit);
        let mut br = BitReader::new(&s[pos..end], pos, Stuffing::Bit);
        let last = h.min(y.saturating_add(interval));
        while y < last {
            let mut component = 0;
            let result = if scan.ilv == 2 && nc > 1 {
                coder.pixel_line(&mut br, &prev, &mut cur, &mut run_index[0])
            } else {
                (0..nc).try_for_each(|c| {
                    component = c;
                    coder.line(&mut br, &prev[c], &mut cur[c], &mut run_index[c])
                })
            };
            if let Err(fault) = result {
                let place = if scan.ilv == 2 && nc > 1 {
                    format!("line {} of {h}", y + 1)
                } else {
                    format!("line {} of {h} of component {}", y + 1, scan.ids[component])
                };
                return Err(match fault {
                    Fault::OutOfData => JpegLsError::OutOfData { scan: scan.offset, offset: br.end(), place },
                    Fault::Corrupt(reason) => JpegLsError::Corrupt { scan: scan.offset, offset: br.offset(), place, reason },
                });
            }
            let row = &mut frame.samples[y * w * nf..(y + 1) * w * nf];
            for (line, &k) in cur.iter().zip(&scan.comps) {
                for (pixel, &v) in row.chunks_exact_mut(nf).zip(&line[1..=w]) {
                    pixel[k] = v as u16;
                }
            }
            std::mem::swap(&mut prev, &mut cur);
            y += 1;
        }
        pos = end;
        if y < h {
            let expected = restarts % 8;
            let mut m = pos;
            while s.get(m + 1) == Some(&0xFF) {
                m += 1;
            }
            match (s.get(m), s.get(m + 1)) {
                (Some(0xFF), Some(&b)) if b == 0xD0 + expected => pos = m + 2,
                (Some(0xFF), Some(&b)) => return Err(JpegLsError::Restart { scan: scan.offset, offset: m, expected, found: marker_name(b) }),
                _ => return Err(JpegLsError::Restart { scan: scan.offset, offset: m, expected, found: "the end of the stream".to_string() }),
            }
            restarts = restarts.wrapping_add(1);
            coder.reset();
            run_index.fill(0);
            for line in &mut prev {
                line.fill(0);
            }
        }
    }
    for &k in &scan.comps {
        frame.done[k] = true;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpegmarker::testfiles::*;
    use dicom_dictionary_std::tags;
    use std::path::Path;
    use std::process::Command;

    /// The JPEG-LS files among them: near-lossless 8 and 16 bits, lossless 16 bits signed,
    /// and near-lossless colour, line and sample interleaved.
    const JLS_FILES: [&str; 5] = [
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_jls_lossy_sample.dcm",
    ];

    /// The pixel values dcmtk's dcmdjpls decodes `path` to, or None when dcmdjpls is not
    /// installed.
    fn dcmdjpls(path: &Path, dir: &Path) -> Option<Vec<u16>> {
        let out = dir.join("dcmdjpls-out.dcm");
        let status = Command::new("dcmdjpls").arg(path).arg(&out).status().ok()?;
        assert!(status.success(), "dcmdjpls {} failed", path.display());
        Some(native_samples(&open(&out)))
    }

    fn decoded(path: &Path) -> Decoded {
        decode(&stream_of(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Lossless JPEG-LS of pydicom's MR_small decodes to the native MR_small's Pixel Data,
    /// word for word: an oracle that needs no other decoder.
    #[test]
    fn mr_small_lossless_is_the_native_image() {
        let d = decoded(&data("MR_small_jpeg_ls_lossless.dcm"));
        assert_eq!((d.width, d.height, d.components, d.precision), (64, 64, 1, 16));
        assert_eq!(d.samples, native_samples(&open(&data("MR_small.dcm"))));
    }

    /// Every JPEG-LS test file decodes to exactly what dcmtk's dcmdjpls (CharLS) decodes it to.
    #[test]
    fn test_files_match_dcmdjpls() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in JLS_FILES {
            let path = data(name);
            let Some(expected) = dcmdjpls(&path, dir.path()) else {
                println!("SKIPPED test_files_match_dcmdjpls: dcmdjpls not installed (apt-get install dcmtk)");
                return;
            };
            let d = decoded(&path);
            let obj = open(&path);
            assert_eq!(d.width, int(&obj, tags::COLUMNS).unwrap(), "{name}");
            assert_eq!(d.height, int(&obj, tags::ROWS).unwrap(), "{name}");
            assert_eq!(u32::from(d.components), int(&obj, tags::SAMPLES_PER_PIXEL).unwrap(), "{name}");
            assert!(d.samples == expected, "{name}: differs from dcmdjpls at sample {:?}", d.samples.iter().zip(&expected).position(|(a, b)| a != b));
        }
    }

    /// Streams written by dcmtk's dcmcjpls with each interleave mode, lossless and with several
    /// NEAR, and with preset thresholds and RESET: each decodes to what dcmdjpls decodes it to,
    /// and to within NEAR of the original pixels (lossless: exactly them).
    #[test]
    fn dcmcjpls_streams_match_dcmdjpls() {
        if Command::new("dcmcjpls").arg("--version").output().is_err() || Command::new("dcmdjpls").arg("--version").output().is_err() {
            println!("SKIPPED dcmcjpls_streams_match_dcmdjpls: dcmcjpls or dcmdjpls not installed (apt-get install dcmtk)");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        // Native unsigned 8 and 16-bit grey images: dcmdjpls's decodes of the near-lossless test
        // files (dcmcjpls codes signed images, MR_small and CT_small, only losslessly).
        let native = |name: &str| {
            let out = dir.path().join(name.replace(".dcm", "_native.dcm"));
            let status = Command::new("dcmdjpls").arg(data(name)).arg(&out).status().expect("dcmdjpls");
            assert!(status.success(), "dcmdjpls {name}");
            out
        };
        let inputs = [
            data("MR_small.dcm"),
            data("CT_small.dcm"),
            data("ExplVR_BigEnd.dcm"),
            native("JPEGLSNearLossless_08.dcm"),
            native("JPEGLSNearLossless_16.dcm"),
        ];
        // Options and the NEAR they give. dcmcjpls 3.6.7 aborts on a RESET other than 64 with
        // sample interleaving, so that combination is left out.
        let options: [(&[&str], u16); 10] = [
            (&[], 0),
            (&["+is"], 0),
            (&["+in"], 0),
            (&["+en", "+md", "1"], 1),
            (&["+en", "+md", "4", "+is"], 4),
            (&["+en", "+md", "3", "+in"], 3),
            (&["+en", "+md", "7", "+il"], 7),
            (&["+t1", "5", "+t2", "9", "+t3", "30", "+rs", "32"], 0),
            (&["+en", "+md", "2", "+t1", "6", "+t2", "11", "+t3", "40", "+rs", "16", "+in"], 2),
            (&["+en", "+md", "2", "+t1", "6", "+t2", "11", "+t3", "40", "+is"], 2),
        ];
        let encoded = dir.path().join("encoded.dcm");
        let reference = dir.path().join("reference.dcm");
        for input in &inputs {
            let original = open(input);
            let signed = int(&original, tags::PIXEL_REPRESENTATION) == Some(1);
            let colour = int(&original, tags::SAMPLES_PER_PIXEL) == Some(3);
            let original = native_samples(&original);
            for (opts, near) in options {
                if signed && near > 0 {
                    continue;
                }
                let what = format!("{} {opts:?}", input.display());
                let status = Command::new("dcmcjpls").args(opts).arg(input).arg(&encoded).status().expect("dcmcjpls");
                assert!(status.success(), "dcmcjpls {what}");
                let d = decoded(&encoded);
                assert_eq!(d.samples.len(), original.len(), "{what}");
                let worst = d.samples.iter().zip(&original).map(|(a, b)| a.abs_diff(*b)).max();
                assert!(worst <= Some(near), "{what}: off the original by {worst:?}, NEAR is {near}");
                let status = Command::new("dcmdjpls").arg(&encoded).arg(&reference).output().expect("dcmdjpls").status;
                if status.success() {
                    let expected = native_samples(&open(&reference));
                    assert!(d.samples == expected, "{what}: differs from dcmdjpls at sample {:?}", d.samples.iter().zip(&expected).position(|(a, b)| a != b));
                } else {
                    // dcmtk's CharLS 1.x cannot read an LSE segment after the first scan, which
                    // its own encoder writes before each scan of a non-interleaved colour image
                    // with preset parameters: there only the bound above is checked.
                    assert!(colour && opts.contains(&"+in") && opts.contains(&"+rs"), "dcmdjpls failed on {what}");
                }
            }
        }
    }

    /// A stream of `width` × `height` samples of `precision` bits, one component, one scan of
    /// NEAR 0 whose coded data is `coded`, with the marker segments `extra` before the scan.
    fn grey_stream(precision: u8, width: u16, height: u16, extra: &[u8], coded: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xF7, 0, 11, precision];
        s.extend(height.to_be_bytes());
        s.extend(width.to_be_bytes());
        s.extend([1, 1, 0x11, 0]);
        s.extend(extra);
        s.extend([0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0, 0]);
        s.extend(coded);
        s.extend([0xFF, 0xD9]);
        s
    }

    /// Streams coded by hand from the standard's procedure, 8 bits, default parameters
    /// (RANGE 256, LIMIT 32, so contexts start with A = 4, N = 1: k = 2).
    #[test]
    fn hand_coded_streams() {
        // 4 zeros: in run mode from the first sample (all neighbours 0); J[0..4] = 0, so
        // four bits 1 code one sample each and reach the end of the line.
        let d = decode(&grey_stream(8, 4, 1, &[], &[0b1111_0000])).expect("zeros");
        assert_eq!(d.samples, [0, 0, 0, 0]);
        // One sample 5: run mode, bit 0 ends the run at length 0 (J[0] = 0 bits of
        // remainder); the interruption sample has Ra = Rb = 0, so RItype 1, Px = 0, Errval 5,
        // TEMP = A + N/2 = 4, k = 2, map 0: EMErrval = 2*5 - 1 = 9 = 0b10_01: unary 2 (001)
        // and low bits 01. Bits 0 001 01, padded with 0.
        let d = decode(&grey_stream(8, 1, 1, &[], &[0b0001_0100])).expect("one sample");
        assert_eq!(d.samples, [5]);
        // Then a second line 5: Ra = Rb = Rd = 5 (edges), Rc = 0, so gradients 0, 5, -5 quantize
        // to 0, 2, -2 (T1 3, T2 7): regular mode, MED predicts 5, error 0 codes as 1 00.
        let d = decode(&grey_stream(8, 1, 2, &[], &[0b0001_0110, 0])).expect("two lines");
        assert_eq!(d.samples, [5, 5]);
        // The same two lines with a restart interval of one line: the second line starts
        // afresh (contexts, zero line above), so it is coded as the first.
        let dri = [0xFF, 0xDD, 0, 4, 0, 1];
        let mut s = grey_stream(8, 1, 2, &dri, &[0b0001_0100, 0xFF, 0xD0, 0b0001_0100]);
        assert_eq!(decode(&s).expect("restart").samples, [5, 5]);
        // A restart marker with the wrong number is refused.
        let at = s.len() - 4;
        s[at] = 0xD3;
        assert!(matches!(decode(&s), Err(JpegLsError::Restart { expected: 0, .. })), "{:?}", decode(&s));
        // An LSE segment setting MAXVAL 100 (7 bits; RANGE 101, LIMIT 30, A = 2, k = 1):
        // one sample 5 is EMErrval 9 = 0b100_1: unary 4, low bit 1: bits 0 00001 1.
        let lse = [0xFF, 0xF8, 0, 13, 1, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0];
        let d = decode(&grey_stream(8, 1, 1, &lse, &[0b0000_0110])).expect("MAXVAL 100");
        assert_eq!(d.samples, [5]);
    }

    /// Default thresholds (C.2.4.1.1), against the values the 16-bit test files write out in
    /// their LSE segments and the standard's 8-bit defaults.
    #[test]
    fn default_thresholds_follow_the_standard() {
        assert_eq!(default_thresholds(255, 0), (3, 7, 21));
        assert_eq!(default_thresholds(65535, 0), (18, 67, 276));
        assert_eq!(default_thresholds(65535, 2), (24, 77, 290));
        assert_eq!(default_thresholds(4095, 0), (18, 67, 276));
        // Small MAXVAL: FACTOR = 256 / (MAXVAL + 1) = 16, thresholds kept at 2, 3, 4.
        assert_eq!(default_thresholds(15, 0), (2, 3, 4));
        // Clamped to MAXVAL and in order.
        assert_eq!(default_thresholds(3, 1), (3, 3, 3));
        let p = Params::new(&Preset::default(), 12, 0).expect("12 bits");
        assert_eq!((p.range, p.qbpp, p.limit), (4096, 12, 48));
        let p = Params::new(&Preset::default(), 8, 3).expect("NEAR 3");
        assert_eq!((p.range, p.qbpp, p.limit), (38, 6, 32));
    }

    /// The Golomb parameter by bit lengths is the standard's loop's.
    #[test]
    fn golomb_k_is_the_smallest_shift() {
        for n in 1..300i64 {
            for a in (0..5000i64).chain([1 << 20, (1 << 33) + 5, 1 << 40]) {
                let mut k = 0;
                while k < 32 && (n << k) < a {
                    k += 1;
                }
                assert_eq!(golomb_k(n, a), k, "N {n} A {a}");
            }
        }
    }

    /// What is not decoded is refused with an error that says so.
    #[test]
    fn refusals() {
        assert!(matches!(decode(&[]), Err(JpegLsError::NoSoi { .. })));
        assert!(matches!(decode(&[0xFF, 0xD9, 0xFF, 0xD8]), Err(JpegLsError::NoSoi { .. })));
        let good = grey_stream(8, 1, 1, &[], &[0b0001_0100]);
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(decode(&bad), Err(JpegLsError::NoSoi { .. })));
        // Sub-sampled: component 2 at half the resolution of component 1.
        let sub = [0xFF, 0xD8, 0xFF, 0xF7, 0, 14, 8, 0, 4, 0, 4, 2, 1, 0x22, 0, 2, 0x11, 0, 0xFF, 0xD9];
        let e = decode(&sub).unwrap_err();
        assert!(matches!(e, JpegLsError::Unsupported { .. }) && e.to_string().contains("sub-sampled"), "{e}");
        // LSE types 2 to 4.
        for t in [2u8, 3, 4] {
            let lse = [0xFF, 0xF8, 0, 5, t, 0, 0];
            let e = decode(&grey_stream(8, 1, 1, &lse, &[0b0001_0100])).unwrap_err();
            assert!(matches!(e, JpegLsError::Unsupported { .. }) && e.to_string().contains("LSE type"), "{e}");
        }
        // HP colour transform.
        let app8 = [0xFF, 0xE8, 0, 7, b'm', b'r', b'f', b'x', 1];
        let e = decode(&grey_stream(8, 1, 1, &app8, &[0b0001_0100])).unwrap_err();
        assert!(e.to_string().contains("HP colour transform 1"), "{e}");
        let app8 = [0xFF, 0xE8, 0, 7, b'm', b'r', b'f', b'x', 0];
        assert_eq!(decode(&grey_stream(8, 1, 1, &app8, &[0b0001_0100])).expect("transform 0").samples, [5]);
        // Y = 0 (DNL), a point transform, a mapping table selected by the scan.
        let mut dnl = good.clone();
        dnl[7..9].copy_from_slice(&[0, 0]);
        assert!(decode(&dnl).unwrap_err().to_string().contains("DNL"));
        let sos = good.iter().position(|&b| b == 0xDA).expect("SOS") - 1;
        let mut pt = good.clone();
        pt[sos + 9] = 1;
        assert!(decode(&pt).unwrap_err().to_string().contains("point transform"));
        let mut table = good.clone();
        table[sos + 6] = 1;
        assert!(decode(&table).unwrap_err().to_string().contains("mapping table"));
        // Too large: 65535 x 65535.
        let mut big = good.clone();
        big[7..11].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(decode(&big), Err(JpegLsError::TooLarge { .. })));
        // Lossy JPEG is not JPEG-LS.
        let mut sof0 = good.clone();
        sof0[3] = 0xC0;
        assert!(matches!(decode(&sof0), Err(JpegLsError::Unsupported { .. })));
        // A scan that is not followed by its component's data: EOI too early.
        let eoi = [0xFF, 0xD8, 0xFF, 0xF7, 0, 11, 8, 0, 1, 0, 1, 1, 1, 0x11, 0, 0xFF, 0xD9];
        assert!(matches!(decode(&eoi), Err(JpegLsError::Incomplete { .. })));
    }

    /// Coded data that runs out is an error naming where it ends.
    #[test]
    fn truncated_scan_names_the_offset() {
        let s = stream_of(&data("MR_small_jpeg_ls_lossless.dcm"));
        let cut = s.len() / 2;
        match decode(&s[..cut]) {
            Err(JpegLsError::OutOfData { offset, scan, .. }) => {
                assert_eq!(offset, cut);
                assert_eq!(scan, 0x1E);
            }
            other => panic!("{other:?}"),
        }
    }

    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Damaged streams (every truncation of the five test streams, and thousands of seeded
    /// single-byte changes) are decoded or refused, never a panic; a truncated stream that
    /// decodes gives the whole image (it lost only bytes no sample needed).
    #[test]
    fn damaged_streams_never_panic() {
        let guarded = |bytes: &[u8]| match std::panic::catch_unwind(|| decode(bytes)) {
            Ok(result) => {
                if let Ok(d) = &result {
                    let n = u64::from(d.width) * u64::from(d.height) * u64::from(d.components);
                    assert!(n <= MAX_SAMPLES && d.samples.len() as u64 == n);
                }
                result
            }
            Err(_) => panic!("decode panicked on {bytes:02X?}"),
        };
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for name in JLS_FILES {
            let s = stream_of(&data(name));
            let whole = guarded(&s).expect("the undamaged stream");
            for keep in 0..s.len() {
                if let Ok(d) = guarded(&s[..keep]) {
                    assert_eq!(d, whole, "{name} cut to {keep} bytes decodes to another image");
                }
            }
            for _ in 0..3000 {
                let mut bytes = s.clone();
                let at = (next(&mut rng) % s.len() as u64) as usize;
                bytes[at] = match next(&mut rng) % 3 {
                    0 => 0xFF,
                    _ => bytes[at] ^ (1 + next(&mut rng) % 255) as u8,
                };
                let _ = guarded(&bytes);
            }
        }
    }
}
