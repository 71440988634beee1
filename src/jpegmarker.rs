//! The marker syntax that JPEG (ITU-T T.81 Annex B) and JPEG-LS (ISO/IEC 14495-1 Annex C)
//! share: a stream starts with SOI (FF D8); outside the coded data of a scan it is a run of
//! marker segments, each a marker (FF xx, after any number of fill bytes FF) and, but for the
//! markers that stand alone, a big-endian length that counts itself and the body.
//!
//! [`next_segment`] walks that run for [`crate::jpegls`] and [`crate::jpeg12`], which give
//! the segments their meaning and turn a [`SyntaxError`] into their own error type. The coded
//! data of a scan is read by one [`BitReader`] in both, which differ only in how a byte FF is
//! kept from looking like a marker ([`Stuffing`]); each decoder adds its own ways of reading
//! codes to it.

/// A break of the marker syntax. Offsets are of the stream; `marker` is the marker's code
/// (the decoder names it).
#[derive(Debug)]
pub(crate) enum SyntaxError {
    /// The stream does not start with SOI: `found` says what it starts with.
    NoSoi { found: String },
    /// Where a marker should start there is another byte (or a stuffed FF 00).
    ExpectedMarker { offset: usize, found: String },
    /// The stream ends inside the segment of `marker` at `offset`.
    TruncatedSegment { offset: usize, marker: u8, needed: usize, left: usize },
    /// A marker where none may be, or a segment length below 2.
    Invalid { offset: usize, marker: u8, reason: String },
}

/// What comes next in a stream.
pub(crate) enum Step<'a> {
    /// The stream ends, or says EOI, at `offset`.
    End { offset: usize },
    /// The segment of `marker`, whose marker starts at `offset`: its body (after the length)
    /// and where the stream goes on after it.
    Segment { offset: usize, marker: u8, body: &'a [u8], next: usize },
}

/// Check that `stream` starts with SOI; the first segment is then at byte 2.
pub(crate) fn check_soi(stream: &[u8]) -> Result<(), SyntaxError> {
    if stream.get(..2) == Some(&[0xFF, 0xD8][..]) {
        return Ok(());
    }
    let found = match stream.len() {
        0 => "no data".to_string(),
        1 => format!("{:02X} and then the end", stream[0]),
        _ => format!("{:02X} {:02X}", stream[0], stream[1]),
    };
    Err(SyntaxError::NoSoi { found })
}

/// The next marker segment at or after `at` (skipping fill bytes and TEM, which stands
/// alone); [`Step::End`] at the end of the stream (a marker cut off counts as the end, at its
/// first FF) or at EOI. A second SOI, a restart marker outside a scan, a stuffed FF 00 and a
/// length below 2 are errors.
pub(crate) fn next_segment(stream: &[u8], mut at: usize) -> Result<Step<'_>, SyntaxError> {
    loop {
        let Some(&first) = stream.get(at) else {
            return Ok(Step::End { offset: at });
        };
        if first != 0xFF {
            return Err(SyntaxError::ExpectedMarker { offset: at, found: format!("{first:02X}") });
        }
        // Any number of fill bytes FF may come before a marker (T.81 B.1.1.2).
        let mut ff = at;
        while stream.get(ff + 1) == Some(&0xFF) {
            ff += 1;
        }
        let Some(&marker) = stream.get(ff + 1) else {
            return Ok(Step::End { offset: at });
        };
        let offset = ff;
        at = ff + 2;
        let invalid = |reason: &str| SyntaxError::Invalid { offset, marker, reason: reason.to_string() };
        match marker {
            0xD9 => return Ok(Step::End { offset }),
            0xD8 => return Err(invalid("a second SOI marker")),
            0xD0..=0xD7 => return Err(invalid("a restart marker outside the coded data of a scan")),
            // TEM stands alone (no length).
            0x01 => continue,
            0x00 => return Err(SyntaxError::ExpectedMarker { offset, found: "FF 00 (a stuffed byte, not a marker)".to_string() }),
            _ => {}
        }
        let Some(len) = stream.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
            return Err(SyntaxError::TruncatedSegment { offset, marker, needed: 2, left: stream.len().saturating_sub(at) });
        };
        if len < 2 {
            return Err(invalid(&format!("segment length {len} is below 2")));
        }
        let Some(body) = stream.get(at + 2..at + len) else {
            return Err(SyntaxError::TruncatedSegment { offset, marker, needed: len, left: stream.len() - at });
        };
        return Ok(Step::Segment { offset, marker, body, next: at + len });
    }
}

/// A marker's name and code, for messages: `SOS (FF DA)`.
pub(crate) fn marker_name(m: u8) -> String {
    let name = match m {
        0xD8 => "SOI".to_string(),
        0xD9 => "EOI".to_string(),
        0xDA => "SOS".to_string(),
        0xC4 => "DHT".to_string(),
        0xC8 => "JPG".to_string(),
        0xCC => "DAC".to_string(),
        0xDB => "DQT".to_string(),
        0xDC => "DNL".to_string(),
        0xDD => "DRI".to_string(),
        0xDE => "DHP".to_string(),
        0xDF => "EXP".to_string(),
        0xFE => "COM".to_string(),
        0x01 => "TEM".to_string(),
        0xF7 => "SOF55".to_string(),
        0xF8 => "LSE".to_string(),
        0xD0..=0xD7 => format!("RST{}", m - 0xD0),
        0xE0..=0xEF => format!("APP{}", m - 0xE0),
        0xC0..=0xCF => format!("SOF{}", m - 0xC0),
        _ => "marker".to_string(),
    };
    format!("{name} (FF {m:02X})")
}

/// A big-endian 16-bit value at `at` of a segment body whose length was checked.
pub(crate) fn be16(body: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([body[at], body[at + 1]])
}

/// How coded data keeps a byte FF from starting a marker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Stuffing {
    /// JPEG (T.81 B.1.1.5): a byte 00 follows each FF and is dropped.
    Byte,
    /// JPEG-LS (ISO/IEC 14495-1 A.1): the byte after each FF holds a stuffed 0 bit at the top
    /// and 7 bits of data.
    Bit,
}

/// Where the coded data starting at `from` ends: the first FF that is not followed by its
/// stuffing (for JPEG a 00; for JPEG-LS a byte below 0x80), which starts a marker or the fill
/// bytes before one, or the end of the stream.
pub(crate) fn segment_end(s: &[u8], from: usize, stuffing: Stuffing) -> usize {
    let mut i = from;
    while let Some(off) = s.get(i..).and_then(|rest| rest.iter().position(|&b| b == 0xFF)) {
        let ff = i + off;
        let stuffed = match (stuffing, s.get(ff + 1)) {
            (Stuffing::Byte, Some(&next)) => next == 0,
            (Stuffing::Bit, Some(&next)) => next < 0x80,
            (_, None) => false,
        };
        if !stuffed {
            return ff;
        }
        i = ff + 2;
    }
    s.len()
}

/// What went wrong in coded data, before the scan decoder adds where.
pub(crate) enum Fault {
    /// More bits were needed than the data has.
    OutOfData,
    /// A code no encoder writes.
    Corrupt(&'static str),
}

/// Reads the bits of one entropy-coded segment (between a scan header or restart marker and
/// the next marker, see [`segment_end`]), most significant first, dropping the stuffing.
pub(crate) struct BitReader<'a> {
    /// The segment's bytes.
    data: &'a [u8],
    /// Offset of `data[0]` in the stream, for messages.
    base: usize,
    stuffing: Stuffing,
    /// Next byte of `data` to load.
    pos: usize,
    /// Bits loaded and not yet read, from the top bit down; the bits below them are 0.
    pub(crate) cache: u64,
    /// How many bits of `cache` are loaded.
    pub(crate) bits: u32,
    /// With bit stuffing: the last byte loaded was FF, so the next holds a stuffed 0 and 7
    /// bits of data.
    after_ff: bool,
}

impl<'a> BitReader<'a> {
    /// A reader of `data`, which starts at byte `base` of the stream.
    pub(crate) fn new(data: &'a [u8], base: usize, stuffing: Stuffing) -> BitReader<'a> {
        BitReader { data, base, stuffing, pos: 0, cache: 0, bits: 0, after_ff: false }
    }

    /// Load bytes until the cache holds more than 56 bits or the data is used up.
    #[inline]
    pub(crate) fn refill(&mut self) {
        while self.bits <= 56 {
            let Some(&b) = self.data.get(self.pos) else { return };
            self.pos += 1;
            if self.after_ff {
                // The segment ends at any FF followed by a byte with its top bit set, so this
                // byte's top bit is the stuffed 0.
                self.cache |= u64::from(b & 0x7F) << (57 - self.bits);
                self.bits += 7;
                self.after_ff = false;
            } else {
                self.cache |= u64::from(b) << (56 - self.bits);
                self.bits += 8;
                if b == 0xFF {
                    match self.stuffing {
                        // Every FF of the segment is followed by its 00 (see `segment_end`).
                        Stuffing::Byte => self.pos += 1,
                        Stuffing::Bit => self.after_ff = true,
                    }
                }
            }
        }
    }

    /// Drop `n` (at most the bits loaded) bits from the cache.
    #[inline]
    pub(crate) fn consume(&mut self, n: u32) {
        self.cache = if n >= 64 { 0 } else { self.cache << n };
        self.bits -= n;
    }

    /// The next `n` (0..=32) bits as a number.
    #[inline]
    pub(crate) fn bits(&mut self, n: u32) -> Result<u32, Fault> {
        if n == 0 {
            return Ok(0);
        }
        if self.bits < n {
            self.refill();
            if self.bits < n {
                return Err(Fault::OutOfData);
            }
        }
        let v = (self.cache >> (64 - n)) as u32;
        self.consume(n);
        Ok(v)
    }

    /// Roughly where reading is, as a byte offset in the stream: the next byte to load, less
    /// the whole bytes still in the cache.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos.saturating_sub(self.bits as usize / 8)
    }

    /// The offset in the stream where the segment's data ends.
    pub(crate) fn end(&self) -> usize {
        self.base + self.data.len()
    }
}

/// The pydicom test files the decoders' tests read, and how they read them.
#[cfg(test)]
pub(crate) mod testfiles {
    use dicom_core::value::{PrimitiveValue, Value};
    use dicom_dictionary_std::tags;
    use dicom_object::{DefaultDicomObject, OpenFileOptions};
    use std::path::{Path, PathBuf};

    /// pydicom's test files (see tests/data/pydicom/README.md).
    pub(crate) const PYDICOM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pydicom");

    pub(crate) fn data(name: &str) -> PathBuf {
        Path::new(PYDICOM).join(name)
    }

    pub(crate) fn open(path: &Path) -> DefaultDicomObject {
        OpenFileOptions::new().open_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub(crate) fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
        obj.element_opt(tag).ok().flatten().and_then(|e| e.to_int::<u32>().ok())
    }

    /// The JPEG or JPEG-LS stream of a single-frame file: its Pixel Data fragments (after the
    /// basic offset table) end to end.
    pub(crate) fn stream_of(path: &Path) -> Vec<u8> {
        let obj = open(path);
        let Value::PixelSequence(seq) = obj.element(tags::PIXEL_DATA).expect("PixelData").value() else {
            panic!("{}: pixel data not encapsulated", path.display())
        };
        let stream: Vec<u8> = seq.fragments().iter().flatten().copied().collect();
        assert!(stream.starts_with(&[0xFF, 0xD8]), "{}: the first fragment is not a JPEG stream", path.display());
        stream
    }

    /// The native pixel data of a file as sample values, a pixel's samples together
    /// (PlanarConfiguration 1 is turned into 0): bytes for 8 bits allocated, 16-bit words
    /// (signed or not, as stored) for 16.
    pub(crate) fn native_samples(obj: &DefaultDicomObject) -> Vec<u16> {
        let bits = int(obj, tags::BITS_ALLOCATED).expect("BitsAllocated");
        let count = (int(obj, tags::ROWS).expect("Rows") * int(obj, tags::COLUMNS).expect("Columns")) as usize;
        let spp = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as usize;
        let Value::Primitive(p) = obj.element(tags::PIXEL_DATA).expect("PixelData").value() else {
            panic!("pixel data not native")
        };
        let bytes: Vec<u8> = match p {
            PrimitiveValue::U8(b) => b.to_vec(),
            PrimitiveValue::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            PrimitiveValue::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            other => panic!("unexpected pixel data value {other:?}"),
        };
        let mut values: Vec<u16> = match bits {
            8 => bytes.iter().map(|&b| u16::from(b)).collect(),
            16 => bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
            b => panic!("{b} bits allocated"),
        };
        // An odd number of 8-bit values is padded to an even length.
        values.truncate(count * spp);
        if spp > 1 && int(obj, tags::PLANAR_CONFIGURATION) == Some(1) {
            values = (0..count * spp).map(|i| values[(i % spp) * count + i / spp]).collect();
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(stream: &[u8]) -> Result<Vec<(usize, u8, Vec<u8>)>, SyntaxError> {
        check_soi(stream)?;
        let mut at = 2;
        let mut out = Vec::new();
        loop {
            match next_segment(stream, at)? {
                Step::End { offset } => {
                    out.push((offset, 0xD9, vec![]));
                    return Ok(out);
                }
                Step::Segment { offset, marker, body, next } => {
                    out.push((offset, marker, body.to_vec()));
                    at = next;
                }
            }
        }
    }

    #[test]
    fn segments_fill_bytes_tem_and_the_end() {
        // SOI, COM "ab", fill bytes then APP0 "x", TEM, EOI.
        let s = [0xFF, 0xD8, 0xFF, 0xFE, 0, 4, b'a', b'b', 0xFF, 0xFF, 0xFF, 0xE0, 0, 3, b'x', 0xFF, 0x01, 0xFF, 0xD9];
        let got = segments(&s).unwrap();
        assert_eq!(got, [(2, 0xFE, b"ab".to_vec()), (10, 0xE0, b"x".to_vec()), (17, 0xD9, vec![])]);
        // The end of the stream, or a lone FF at it, is the end.
        assert_eq!(segments(&s[..15]).unwrap().last().unwrap().0, 15);
        assert_eq!(segments(&s[..16]).unwrap().last().unwrap().0, 15);
    }

    #[test]
    fn broken_syntax_is_an_error_at_its_offset() {
        assert!(matches!(check_soi(&[]), Err(SyntaxError::NoSoi { found }) if found == "no data"));
        assert!(matches!(check_soi(&[0xFF]), Err(SyntaxError::NoSoi { found }) if found == "FF and then the end"));
        let soi = |rest: &[u8]| [&[0xFF, 0xD8][..], rest].concat();
        assert!(matches!(segments(&soi(&[0x12])), Err(SyntaxError::ExpectedMarker { offset: 2, .. })));
        assert!(matches!(segments(&soi(&[0xFF, 0x00])), Err(SyntaxError::ExpectedMarker { offset: 2, .. })));
        assert!(matches!(segments(&soi(&[0xFF, 0xD8])), Err(SyntaxError::Invalid { offset: 2, marker: 0xD8, .. })));
        assert!(matches!(segments(&soi(&[0xFF, 0xD3])), Err(SyntaxError::Invalid { offset: 2, marker: 0xD3, .. })));
        assert!(matches!(segments(&soi(&[0xFF, 0xFE, 0, 1])), Err(SyntaxError::Invalid { reason, .. }) if reason.contains("below 2")));
        assert!(matches!(segments(&soi(&[0xFF, 0xFE, 0])), Err(SyntaxError::TruncatedSegment { offset: 2, marker: 0xFE, needed: 2, left: 1 })));
        assert!(matches!(segments(&soi(&[0xFF, 0xFE, 0, 9, 1])), Err(SyntaxError::TruncatedSegment { needed: 9, left: 3, .. })));
    }
}
