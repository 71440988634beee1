//! The marker syntax that JPEG (ITU-T T.81 Annex B) and JPEG-LS (ISO/IEC 14495-1 Annex C)
//! share: a stream starts with SOI (FF D8); outside the coded data of a scan it is a run of
//! marker segments, each a marker (FF xx, after any number of fill bytes FF) and, but for the
//! markers that stand alone, a big-endian length that counts itself and the body.
//!
//! [`next_segment`] walks that run for [`crate::jpegls`] and [`crate::jpeg12`], which give
//! the segments their meaning and turn a [`SyntaxError`] into their own error type.

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
