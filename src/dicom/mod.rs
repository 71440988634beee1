//! DICOM awareness for the store: splitting a DICOM file into
//! header / pixel-element header / pixel value / trailer byte ranges
//! ([`analyze`]), attribute-level header diffs and dumps ([`attrs`]), and a
//! synthetic DICOM generator with fake patients for tests and benchmarks
//! ([`synth`]).
//!
//! This file owns the public types, the error type, and the `analyze` entry
//! point that glues the byte-level walker (`walk.rs`) to a validation pass with
//! `dicom-object`. Nothing in this module prints or reads the environment.

pub mod attrs;
mod splice;
pub mod synth;
mod walk;

use std::borrow::Cow;
use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

pub use attrs::{attribute_path, diff_headers, dump_header, keyword_of, AttributeChange, AttributeRow};
pub use splice::{merge_headers, Changed, HeaderMerge, Settle, Unit, FILE_META};
pub(crate) use walk::TS_DEFLATED_EXPLICIT;

/// Result of [`analyze`]: either a byte-exact split of a DICOM file, or the
/// reason why the file has to be stored whole.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per analysed file; boxing buys nothing
pub enum Analysis {
    Dicom(DicomLayout),
    NotDicom { reason: String },
}

/// Layout of a DICOM file that can be split at its top-level pixel data.
#[derive(Debug, Clone)]
pub struct DicomLayout {
    /// None when the file has no top-level Pixel Data (SR, RT plan, ...):
    /// then the whole file is "header".
    pub pixel: Option<PixelSpan>,
    pub summary: DicomSummary,
}

/// Byte offsets of the top-level pixel data element inside the analysed file.
#[derive(Debug, Clone, Copy)]
pub struct PixelSpan {
    /// `bytes[..element_start]` = header (a valid DICOM file without pixel data);
    /// `bytes[element_start..value_start]` = the pixel element's tag/VR/length bytes;
    /// `bytes[value_start..value_end]` = the pixel value (native pixels, or for
    /// encapsulated data the whole item sequence including the sequence
    /// delimitation item);
    /// `bytes[value_end..]` = trailer (usually empty; e.g. trailing padding).
    pub element_start: u64,
    pub value_start: u64,
    pub value_end: u64,
    pub encapsulated: bool,
    /// BitsAllocated, when known.
    pub bits_allocated: Option<u16>,
    pub big_endian: bool,
}

/// A few identifying top-level attributes, read by the byte-level walker: exactly what a
/// stored DICOM record keeps, so it is the record's own type.
pub type DicomSummary = crate::object::InstanceInfo;

/// Errors of this module. `tag` is formatted as `(gggg,eeee)`, or `-` when no
/// element is concerned.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    /// A header or value length runs past the end of the input or of its container.
    #[error("truncated at offset {offset} in element {tag}: {reason}")]
    Truncated {
        offset: u64,
        tag: String,
        reason: String,
    },
    /// Structurally invalid encoding (unexpected delimiter, nesting too deep, ...).
    #[error("malformed at offset {offset} in element {tag}: {reason}")]
    Malformed {
        offset: u64,
        tag: String,
        reason: String,
    },
    /// A DICOM-ish file this module deliberately does not split.
    #[error("{reason}")]
    Unsupported { reason: String },
    /// `dicom-object` rejected the bytes (or panicked on them).
    #[error("dicom-object: {reason}")]
    Parse { reason: String },
}

impl DicomError {
    /// Add "inside element X at offset N" to the reason of a located error.
    pub(crate) fn within(self, tag: (u16, u16), offset: usize) -> Self {
        let ctx =
            |reason: String| format!("{reason} (inside {} at offset {offset})", tag_string(tag));
        match self {
            DicomError::Truncated {
                offset: o,
                tag: t,
                reason,
            } => DicomError::Truncated {
                offset: o,
                tag: t,
                reason: ctx(reason),
            },
            DicomError::Malformed {
                offset: o,
                tag: t,
                reason,
            } => DicomError::Malformed {
                offset: o,
                tag: t,
                reason: ctx(reason),
            },
            other => other,
        }
    }
}

/// Format a tag as `(gggg,eeee)` with upper-case hex digits.
pub(crate) fn tag_string(tag: (u16, u16)) -> String {
    format!("({:04X},{:04X})", tag.0, tag.1)
}

/// Analyse a file: find its top-level pixel data with the byte-level walker,
/// then check that the header part parses with `dicom-object`.
///
/// Never panics: the walker and `dicom-object` both run under
/// `catch_unwind`. The walker bounds nesting depth (64), checks every length
/// against the input before using it, and refuses the few encodings that
/// `dicom-object` 0.10 would misread (UN of undefined length, binary values
/// whose length is not a multiple of the value size, a wrong file meta group
/// length), so that `dicom-object` never trusts a length beyond the input
/// and no allocation is larger than the input.
pub fn analyze(bytes: &[u8]) -> Analysis {
    let result = split_header(bytes).and_then(|s| check_object(&s.header).map(|_| s));
    match result {
        // A deflated file cannot be cut into header and pixel bytes: it is stored whole, as
        // its header, and read through its inflated form.
        Ok(s) => Analysis::Dicom(DicomLayout {
            pixel: if s.deflated { None } else { s.walked.pixel },
            summary: s.walked.summary,
        }),
        Err(e) => Analysis::NotDicom {
            reason: e.to_string(),
        },
    }
}

/// A file read by the walker.
struct Split<'a> {
    walked: walk::Walked,
    /// Everything before the top-level pixel data: the file's own bytes, or, for a deflated
    /// file, those of its inflated form (see [`walk::inflate`]).
    header: Cow<'a, [u8]>,
    /// Whether the file is in Deflated Explicit VR Little Endian.
    deflated: bool,
}

/// Run the byte-level walker (under `catch_unwind`) and return its result
/// with the header part of `bytes` (everything before the top-level pixel
/// data). Once the walker accepted them, these bytes are safe to hand to
/// `dicom-object` (see `walk::Walker::check_for_dicom_object`).
fn split_header(bytes: &[u8]) -> Result<Split<'_>, DicomError> {
    let inflated = inflate(bytes)?;
    let whole: &[u8] = inflated.as_deref().unwrap_or(bytes);
    let mut walked = walk_guarded(whole)?;
    let header_end = walked.pixel.map_or(whole.len(), |p| p.element_start as usize);
    Ok(match inflated {
        None => Split { walked, header: Cow::Borrowed(&bytes[..header_end]), deflated: false },
        Some(mut v) => {
            walked.summary.transfer_syntax = Some(walk::TS_DEFLATED_EXPLICIT.to_string());
            v.truncate(header_end);
            Split { walked, header: Cow::Owned(v), deflated: true }
        }
    })
}

/// The parts of a deflated file's inflated form (Explicit VR Little Endian), as a stored DICOM
/// record holds them for any other file: what de-identification and the diff of pixel data
/// need of a deflated file, which is stored whole. `None` for a file that is not deflated.
pub(crate) struct InflatedParts {
    /// Everything before the top-level pixel data (the whole file when it has none).
    pub header: Vec<u8>,
    /// The pixel element's tag, VR and length bytes; empty without pixel data.
    pub pixel_element: Vec<u8>,
    /// The pixel value; empty without pixel data.
    pub pixel: Vec<u8>,
    /// Whatever follows the pixel value.
    pub trailer: Vec<u8>,
}

/// A deflated file (Deflated Explicit VR Little Endian) as the same file in Explicit VR Little
/// Endian (see [`walk::inflate`]); `None` for a file in any other transfer syntax.
pub(crate) fn inflate(bytes: &[u8]) -> Result<Option<Vec<u8>>, DicomError> {
    catch_unwind(|| walk::inflate(bytes)).map_err(walker_panicked)?
}

/// [`walk::walk`] under `catch_unwind`.
fn walk_guarded(bytes: &[u8]) -> Result<walk::Walked, DicomError> {
    catch_unwind(|| walk::walk(bytes)).map_err(walker_panicked)?
}

/// The error for a panic of the byte-level walker (a bug, reported instead of crashing).
fn walker_panicked(_: Box<dyn std::any::Any + Send>) -> DicomError {
    DicomError::Unsupported { reason: "internal error: byte-level walker panicked".to_string() }
}

/// A deflated file in parts (see [`InflatedParts`]); `None` for any other file.
pub(crate) fn inflated_parts(bytes: &[u8]) -> Result<Option<InflatedParts>, DicomError> {
    let Some(mut whole) = inflate(bytes)? else {
        return Ok(None);
    };
    let walked = walk_guarded(&whole)?;
    let Some(p) = walked.pixel else {
        return Ok(Some(InflatedParts { header: whole, pixel_element: vec![], pixel: vec![], trailer: vec![] }));
    };
    let (e, v, t) = (p.element_start as usize, p.value_start as usize, p.value_end as usize);
    let trailer = whole.split_off(t);
    let pixel = whole.split_off(v);
    let pixel_element = whole.split_off(e);
    Ok(Some(InflatedParts { header: whole, pixel_element, pixel, trailer }))
}

/// Parse the header part of a DICOM file with `dicom-object`, after the
/// walker checked it (so that hostile input cannot make it allocate more than
/// the input size). Pixel data and anything after it are not read.
///
/// A deflated file is read through its inflated form; the object's meta group still names
/// the file's own transfer syntax, so that what is shown of it is what the file says.
pub(crate) fn open_header(bytes: &[u8]) -> Result<DefaultDicomObject, DicomError> {
    let s = split_header(bytes)?;
    let mut obj = open_object(&s.header)?;
    if s.deflated {
        obj.meta_mut().transfer_syntax = walk::TS_DEFLATED_EXPLICIT.to_string();
        obj.meta_mut().update_information_group_length();
    }
    Ok(obj)
}

/// Like [`open_header`], and also say whether `bytes` held top-level pixel data (which a
/// header handed over on its own must not). A deflated file is refused: what would be written
/// from the object is not what it says (see [`inflated_parts`]).
pub(crate) fn open_header_checked(bytes: &[u8]) -> Result<(DefaultDicomObject, bool), DicomError> {
    let s = split_header(bytes)?;
    if s.deflated {
        return Err(DicomError::Unsupported {
            reason: "a deflated file, to be inflated into its parts first".to_string(),
        });
    }
    Ok((open_object(&s.header)?, s.walked.pixel.is_some()))
}

/// Parse a whole DICOM file (preamble auto-detected) with `dicom-object`,
/// converting errors and panics into [`DicomError::Parse`]. Only call this
/// on bytes the walker accepted (see [`split_header`]).
///
/// A file that starts directly with the file meta group (no preamble and no
/// "DICM", as dcmtk writes and reads them) is given to `dicom-object` with a
/// "DICM" prepended, since it insists on the magic code.
fn open_object(bytes: &[u8]) -> Result<DefaultDicomObject, DicomError> {
    guarded(|| {
        let opened = if bare_meta(bytes) {
            OpenFileOptions::new()
                .read_preamble(ReadPreamble::Never)
                .from_reader(Read::chain(&b"DICM"[..], Cursor::new(bytes)))
        } else {
            OpenFileOptions::new()
                .read_preamble(ReadPreamble::Auto)
                .from_reader(Cursor::new(bytes))
        };
        opened.map_err(|e| e.to_string())
    })
}

/// Whether `bytes` start with the file meta group itself: no preamble and no "DICM".
fn bare_meta(bytes: &[u8]) -> bool {
    let has_magic = bytes.starts_with(b"DICM") || bytes.get(128..132) == Some(&b"DICM"[..]);
    !has_magic && bytes.starts_with(&[0x02, 0x00])
}

/// Run a parse of bytes from anywhere: its error, or a panic of the parser, becomes
/// [`DicomError::Parse`].
fn guarded<T>(parse: impl FnOnce() -> Result<T, String>) -> Result<T, DicomError> {
    match catch_unwind(AssertUnwindSafe(parse)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(reason)) => Err(DicomError::Parse { reason }),
        Err(_) => Err(DicomError::Parse { reason: "parser panicked".to_string() }),
    }
}

/// Check that `dicom-object` parses `bytes` (a header the walker accepted), without building
/// the object: what a commit needs to know of every file, at a third of the cost.
///
/// This runs the steps of `OpenFileOptions::from_reader` with dicom-object's own token reader
/// (`dicom_parser::DataSetReader`) and checks the token stream as dicom-object's object builder
/// does (a header is followed by its value; items only in sequences; fragments only in pixel
/// sequences; a sequence ends with its delimiter). The one option that differs is that values
/// are read as raw bytes: dicom-object decodes text, but its text decoders replace what they
/// cannot decode and never fail, and the walker already refused binary values of a length
/// that is not a multiple of their size. The unit test `fast_check_agrees_with_dicom_object`
/// holds the two to the same verdict on thousands of damaged files.
fn check_object(bytes: &[u8]) -> Result<(), DicomError> {
    guarded(|| {
        if bare_meta(bytes) {
            check_parts(Read::chain(&b"DICM"[..], bytes), bytes)
        } else if bytes.len() < 4 {
            Err("could not read the preamble: the file is shorter than 4 bytes".to_string())
        } else if bytes.get(128..132) == Some(&b"DICM"[..]) {
            check_parts(&bytes[128..], bytes)
        } else {
            check_parts(bytes, bytes)
        }
    })
}

/// The file meta group and the data set of [`check_object`], from `src` (after the preamble).
/// `whole` is the input, for the rare syntax that needs dicom-object's own path.
fn check_parts<R: Read>(mut src: R, whole: &[u8]) -> Result<(), String> {
    use dicom_encoding::transfer_syntax::{Codec, TransferSyntaxIndex};
    use dicom_parser::dataset::read::{DataSetReader, DataSetReaderOptions, ValueReadStrategy};
    let meta = dicom_object::FileMetaTable::from_reader(&mut src)
        .map_err(|e| format!("could not parse the file meta group: {}", error_chain(&e)))?;
    let ts_uid = meta.transfer_syntax();
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| format!("unrecognized transfer syntax `{ts_uid}`"))?;
    if matches!(ts.codec(), Codec::Dataset(_)) {
        // A data set codec (deflate): the walker stores these whole before we get here, so
        // leave them to dicom-object itself should that ever change.
        return open_object(whole).map(drop).map_err(|e| match e {
            // `guarded` adds the "dicom-object:" of this variant again.
            DicomError::Parse { reason } => reason,
            other => other.to_string(),
        });
    }
    let options = DataSetReaderOptions::default().value_read(ValueReadStrategy::Raw);
    let mut tokens = DataSetReader::new_with_ts_options(std::io::BufReader::new(src), ts, options)
        .map_err(|e| format!("could not create the data set parser: {}", error_chain(&e)))?;
    let mut top_sequences = Vec::new();
    check_tokens(&mut tokens, Some(&mut top_sequences))?;
    // dicom-object fills an empty Media Storage SOP Class / Instance UID from the data set,
    // and fails if that attribute is a sequence.
    use dicom_dictionary_std::tags::{SOP_CLASS_UID, SOP_INSTANCE_UID};
    for (empty, tag) in [
        (meta.media_storage_sop_class_uid().is_empty(), SOP_CLASS_UID),
        (meta.media_storage_sop_instance_uid().is_empty(), SOP_INSTANCE_UID),
    ] {
        if empty && top_sequences.contains(&tag) {
            return Err(format!("could not read {tag} as text: it is a sequence"));
        }
    }
    Ok(())
}

type Token = Result<dicom_parser::dataset::DataToken, dicom_parser::dataset::read::Error>;

/// A token, or why it could not be read.
fn read_token(t: Token) -> Result<dicom_parser::dataset::DataToken, String> {
    t.map_err(|e| format!("could not read a data set token: {}", error_chain(&e)))
}

/// One data set of the token stream, as dicom-object's object builder reads it: the top level,
/// whose sequences' tags go to `top_sequences`, or (`None`) an item.
fn check_tokens<I>(tokens: &mut I, mut top_sequences: Option<&mut Vec<dicom_core::Tag>>) -> Result<(), String>
where
    I: Iterator<Item = Token> + ?Sized,
{
    use dicom_parser::dataset::DataToken;
    while let Some(token) = tokens.next() {
        match read_token(token)? {
            DataToken::PixelSequenceStart => {
                // Fragments and the offset table, up to the sequence delimiter (or the end).
                for token in &mut *tokens {
                    match read_token(token)? {
                        DataToken::SequenceEnd => break,
                        DataToken::OffsetTable(_) | DataToken::ItemValue(_) | DataToken::ItemStart { .. } | DataToken::ItemEnd => {}
                        other => return Err(format!("unexpected token {other} in encapsulated pixel data")),
                    }
                }
            }
            DataToken::ElementHeader(header) => {
                if let Some(top) = top_sequences.as_deref_mut() {
                    // The last element of a tag is the one dicom-object keeps.
                    top.retain(|t| *t != header.tag);
                }
                match tokens.next().map(read_token).transpose()? {
                    Some(DataToken::PrimitiveValue(_)) => {}
                    Some(other) => return Err(format!("unexpected token {other} after the header of {}", header.tag)),
                    None => return Err(format!("missing the value of {}", header.tag)),
                }
            }
            DataToken::SequenceStart { tag, .. } => {
                if let Some(top) = top_sequences.as_deref_mut() {
                    top.push(tag);
                }
                check_sequence(tokens, tag)?;
            }
            DataToken::ItemEnd if top_sequences.is_none() => return Ok(()),
            other => return Err(format!("unexpected token {other}")),
        }
    }
    Ok(())
}

/// The items of a sequence, up to its delimiter.
fn check_sequence<I>(tokens: &mut I, tag: dicom_core::Tag) -> Result<(), String>
where
    I: Iterator<Item = Token> + ?Sized,
{
    use dicom_parser::dataset::DataToken;
    while let Some(token) = tokens.next() {
        match read_token(token)? {
            DataToken::ItemStart { .. } => check_tokens(tokens, None)?,
            DataToken::SequenceEnd => return Ok(()),
            other => return Err(format!("unexpected token {other} in sequence {tag}")),
        }
    }
    Err(format!("the data set ends inside sequence {tag}"))
}

/// An error and its sources, joined with ": " (a source that only repeats its error's text is
/// left out).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Pixel data decoded by the codecs of `dicom-pixeldata` (RLE, JPEG, JPEG 2000): samples
/// interleaved, in native byte order, with the layout the decoder gives.
pub(crate) struct DecodedPixels {
    pub data: Vec<u8>,
    /// RGB after a colour JPEG, whatever the header said.
    pub photometric: String,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
}

/// Decode one frame (or, with `None`, all frames) of the encapsulated pixel data of `file`.
/// The codecs run under `catch_unwind`: they see bytes from the store, which may come from
/// anywhere. The error is the reason, for the caller to put in context.
pub(crate) fn decode_pixel_data(file: &DefaultDicomObject, frame: Option<u32>) -> Result<DecodedPixels, String> {
    use dicom_pixeldata::PixelDecoder;
    if let Some(frames) = unmarked_rgb_jpeg(file, frame) {
        return decode_rgb_jpeg(&frames);
    }
    let ts = file.meta().transfer_syntax().trim_end_matches('\0');
    if JPEG_PROGRESSIVE.contains(&ts) {
        return decode_progressive(file, frame);
    }
    if JPEG_LS.contains(&ts) {
        return decode_own(file, frame, "JPEG-LS", |s| crate::jpegls::decode(s).map(|d| (d.components, d.precision, d.samples)).map_err(|e| e.to_string()));
    }
    if ts == JPEG_EXTENDED && int_of(file, dicom_dictionary_std::tags::BITS_ALLOCATED) == Some(16) {
        // 12-bit samples, which jpeg-decoder does not decode.
        return decode_own(file, frame, "JPEG", |s| crate::jpeg12::decode(s).map(|d| (d.components, d.precision, d.samples)).map_err(|e| e.to_string()));
    }
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let d = match frame {
            Some(f) => file.decode_pixel_data_frame(f),
            None => file.decode_pixel_data(),
        }?;
        Ok::<_, dicom_pixeldata::Error>(DecodedPixels {
            photometric: d.photometric_interpretation().as_str().to_string(),
            samples_per_pixel: d.samples_per_pixel(),
            bits_allocated: d.bits_allocated(),
            data: d.into_data(),
        })
    }));
    match decoded {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err("the decoder panicked".into()),
    }
}

/// The JPEG streams of the frames asked for, when `file` is a colour JPEG (baseline or
/// extended, 8 bits) that DICOM declares RGB and whose streams say nothing of their colour
/// (no JFIF or Adobe marker, component ids other than 'R', 'G', 'B'). PS3.5 8.2.1: such
/// components are R, G and B, not transformed; the JPEG decoder, left to guess, takes
/// components 1, 2, 3 for YCbCr (pydicom's `SC_jpeg_no_color_transform.dcm`). A frame is one
/// fragment, or all fragments of a single-frame image; anything else is left to dicom-pixeldata.
fn unmarked_rgb_jpeg(file: &DefaultDicomObject, frame: Option<u32>) -> Option<Vec<Vec<u8>>> {
    use dicom_dictionary_std::tags;
    let ts = file.meta().transfer_syntax().trim_end_matches('\0');
    if !matches!(ts, "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51") {
        return None;
    }
    let text = |tag| file.element_opt(tag).ok().flatten().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_string());
    let int = |tag| file.element_opt(tag).ok().flatten().and_then(|e| e.to_int::<u32>().ok());
    if int(tags::SAMPLES_PER_PIXEL) != Some(3) || int(tags::BITS_ALLOCATED) != Some(8) || text(tags::PHOTOMETRIC_INTERPRETATION).as_deref() != Some("RGB") {
        return None;
    }
    let streams = frame_streams(file, frame).ok()?;
    if streams.iter().any(|s| jpeg_says_colour(s)) {
        return None;
    }
    Some(streams)
}

/// A syntax with encapsulated (compressed) pixel data that [`decode_pixel_data`] decodes:
/// the codecs of `dicom-pixeldata` built in, JPEG-LS, and progressive JPEG.
pub(crate) fn decodes_encapsulated(ts: &str) -> bool {
    use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
    let ts = ts.trim_end_matches('\0');
    JPEG_LS.contains(&ts) || JPEG_PROGRESSIVE.contains(&ts) || TransferSyntaxRegistry.get(ts).is_some_and(|t| t.is_encapsulated_pixel_data() && t.can_decode_all())
}

/// The retired progressive JPEG syntaxes (PS3.5 A.4.1; SOF2 frames), which dicom-rs does
/// not register: spectral selection (processes 6 and 8) and full progression (10 and 12).
/// They are registered below as encapsulated syntaxes without a codec, so that dicom-object
/// parses such files; [`decode_progressive`] decodes their 8-bit frames with jpeg-decoder.
const JPEG_PROGRESSIVE: [&str; 2] = ["1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"];

dicom_encoding::submit_transfer_syntax!(dicom_encoding::transfer_syntax::AdapterFreeTransferSyntax::new_ele(
    "1.2.840.10008.1.2.4.53",
    "JPEG Spectral Selection, Non-Hierarchical (Process 6 & 8)",
    dicom_encoding::transfer_syntax::Codec::EncapsulatedPixelData(None, None)
));
dicom_encoding::submit_transfer_syntax!(dicom_encoding::transfer_syntax::AdapterFreeTransferSyntax::new_ele(
    "1.2.840.10008.1.2.4.55",
    "JPEG Full Progression, Non-Hierarchical (Process 10 & 12)",
    dicom_encoding::transfer_syntax::Codec::EncapsulatedPixelData(None, None)
));

/// Progressive JPEG frames, 8 bits, grey or colour. A colour stream is converted to RGB when
/// the header says YBR (PS3.5 8.2.1: what the JPEG encoder took as YCbCr) and taken as RGB
/// otherwise; the result is RGB either way.
fn decode_progressive(file: &DefaultDicomObject, frame: Option<u32>) -> Result<DecodedPixels, String> {
    use dicom_dictionary_std::tags;
    let bits_allocated = int_of(file, tags::BITS_ALLOCATED).ok_or("BitsAllocated is missing")?;
    if bits_allocated != 8 {
        return Err(format!("progressive JPEG with BitsAllocated {bits_allocated}: cohort decodes 8-bit progressive JPEG only"));
    }
    let samples_per_pixel = int_of(file, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let header = file.element_opt(tags::PHOTOMETRIC_INTERPRETATION).ok().flatten().and_then(|e| e.to_str().ok().map(|s| s.trim().to_string())).unwrap_or_else(|| "MONOCHROME2".into());
    let (transform, format) = match samples_per_pixel {
        1 => (jpeg_decoder::ColorTransform::None, jpeg_decoder::PixelFormat::L8),
        3 if header.starts_with("YBR") => (jpeg_decoder::ColorTransform::YCbCr, jpeg_decoder::PixelFormat::RGB24),
        3 => (jpeg_decoder::ColorTransform::RGB, jpeg_decoder::PixelFormat::RGB24),
        n => return Err(format!("progressive JPEG with {n} samples per pixel (1 or 3 expected)")),
    };
    let data = jpeg_decoder_frames(&frame_streams(file, frame)?, transform, format)?;
    let photometric = if samples_per_pixel == 3 { "RGB".to_string() } else { header };
    Ok(DecodedPixels { data, photometric, samples_per_pixel, bits_allocated })
}

/// The transfer syntaxes of JPEG-LS: lossless and near-lossless (PS3.5 A.4.3).
pub(crate) const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

/// The codestreams of the frames asked for (all with `None`) of encapsulated pixel data.
/// PS3.5 A.4: a frame is one fragment or several; a single-frame image is all its fragments,
/// one fragment per frame is the usual case, and otherwise each frame's first fragment starts
/// with an SOI marker (FF D8), which is how its fragments are told apart.
pub(crate) fn frame_streams(file: &DefaultDicomObject, frame: Option<u32>) -> Result<Vec<Vec<u8>>, String> {
    use dicom_core::value::Value;
    use dicom_dictionary_std::tags;
    let element = file.element_opt(tags::PIXEL_DATA).ok().flatten().ok_or("there is no Pixel Data")?;
    let Value::PixelSequence(seq) = element.value() else { return Err("the Pixel Data is not encapsulated".into()) };
    let fragments = seq.fragments();
    let frames = file.element_opt(tags::NUMBER_OF_FRAMES).ok().flatten().and_then(|e| e.to_int::<u32>().ok()).unwrap_or(1).max(1) as usize;
    let streams: Vec<Vec<u8>> = if frames == 1 {
        vec![fragments.iter().flatten().copied().collect()]
    } else if fragments.len() == frames {
        fragments.iter().map(|f| f.to_vec()).collect()
    } else {
        let mut grouped: Vec<Vec<u8>> = Vec::new();
        for f in fragments {
            match grouped.last_mut() {
                Some(last) if !f.starts_with(&[0xFF, 0xD8]) => last.extend_from_slice(f),
                _ => grouped.push(f.to_vec()),
            }
        }
        if grouped.len() != frames {
            return Err(format!("{} fragments for {frames} frames, and their start-of-image markers do not tell the frames apart", fragments.len()));
        }
        grouped
    };
    match frame {
        None => Ok(streams),
        Some(f) => match streams.into_iter().nth(f as usize) {
            Some(s) => Ok(vec![s]),
            None => Err(format!("there is no frame {} of {frames}", u64::from(f) + 1)),
        },
    }
}

/// JPEG extended (process 2 and 4): 8 or 12-bit samples, Huffman coded (PS3.5 A.4.1).
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

/// An integer attribute of `file`'s data set.
fn int_of(file: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u16> {
    file.element_opt(tag).ok().flatten().and_then(|e| e.to_int::<u16>().ok())
}

/// Decode frames with one of cohort's own decoders (`decode`: components, precision and
/// samples of one stream; [`crate::jpegls`], [`crate::jpeg12`]): samples interleaved, in
/// native byte order, 8 bits when BitsAllocated says 8 and 16 otherwise. The photometric
/// interpretation is the header's (DICOM forbids the colour transforms of JPEG-LS part 2, and
/// a JPEG stream's YCbCr stays YCbCr), at full resolution: YBR_FULL_422 becomes YBR_FULL.
fn decode_own(file: &DefaultDicomObject, frame: Option<u32>, codec: &str, decode: impl Fn(&[u8]) -> Result<(u8, u8, Vec<u16>), String>) -> Result<DecodedPixels, String> {
    use dicom_dictionary_std::tags;
    let bits_allocated = int_of(file, tags::BITS_ALLOCATED).ok_or("BitsAllocated is missing")?;
    if bits_allocated != 8 && bits_allocated != 16 {
        return Err(format!("{codec} with BitsAllocated {bits_allocated} (8 or 16 expected)"));
    }
    let samples_per_pixel = int_of(file, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let header = file
        .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "MONOCHROME2".into());
    let photometric = if header.starts_with("YBR_FULL") { "YBR_FULL".to_string() } else { header };
    let mut data = Vec::new();
    for (k, s) in frame_streams(file, frame)?.iter().enumerate() {
        let (components, precision, samples) = catch_unwind(AssertUnwindSafe(|| decode(s)))
            .map_err(|_| format!("the {codec} decoder panicked"))?
            .map_err(|e| format!("{codec} stream {}: {e}", k + 1))?;
        if u16::from(components) != samples_per_pixel {
            return Err(format!("the {codec} stream has {components} component(s), but SamplesPerPixel is {samples_per_pixel}"));
        }
        if precision > 8 && bits_allocated == 8 {
            return Err(format!("the {codec} stream has {precision}-bit samples, but BitsAllocated is 8"));
        }
        if bits_allocated == 8 {
            data.extend(samples.iter().map(|&v| v as u8));
        } else {
            data.extend(samples.iter().flat_map(|v| v.to_ne_bytes()));
        }
    }
    Ok(DecodedPixels { data, photometric, samples_per_pixel, bits_allocated })
}

/// Whether a JPEG stream says how its colour is coded: a JFIF (APP0) or Adobe (APP14)
/// marker, or component ids 'R', 'G', 'B' in its frame header. Unreadable: treated as saying
/// so (the stream is then left to the usual decoder and its errors).
fn jpeg_says_colour(s: &[u8]) -> bool {
    let mut at = 2;
    if s.get(..2) != Some(&[0xFF, 0xD8]) {
        return true;
    }
    while let (Some(&0xFF), Some(&marker)) = (s.get(at), s.get(at + 1)) {
        if marker == 0xFF {
            at += 1;
            continue;
        }
        let Some(len) = s.get(at + 2..at + 4).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else { return true };
        let body = s.get(at + 4..at + 2 + len).unwrap_or(&[]);
        match marker {
            0xE0 if body.starts_with(b"JFIF\0") => return true,
            0xEE if body.starts_with(b"Adobe") => return true,
            // SOF0 / SOF1: precision, height, width, component count, then id, sampling, table.
            0xC0 | 0xC1 => {
                let ids: Vec<u8> = body.get(6..).unwrap_or(&[]).chunks_exact(3).map(|c| c[0]).collect();
                if ids == [b'R', b'G', b'B'] {
                    return true;
                }
            }
            0xDA => return false,
            _ => {}
        }
        at += 2 + len;
    }
    true
}

/// Decode 8-bit colour JPEG streams with no colour transform: R, G, B interleaved.
fn decode_rgb_jpeg(streams: &[Vec<u8>]) -> Result<DecodedPixels, String> {
    let data = jpeg_decoder_frames(streams, jpeg_decoder::ColorTransform::RGB, jpeg_decoder::PixelFormat::RGB24)?;
    Ok(DecodedPixels { data, photometric: "RGB".into(), samples_per_pixel: 3, bits_allocated: 8 })
}

/// 8-bit JPEG streams decoded by jpeg-decoder with colour `transform`, each of which must
/// decode to `format`; their samples end to end.
fn jpeg_decoder_frames(streams: &[Vec<u8>], transform: jpeg_decoder::ColorTransform, format: jpeg_decoder::PixelFormat) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    for (k, s) in streams.iter().enumerate() {
        let decoded = catch_unwind(AssertUnwindSafe(|| {
            let mut d = jpeg_decoder::Decoder::new(Cursor::new(s));
            d.set_color_transform(transform);
            let pixels = d.decode().map_err(|e| e.to_string())?;
            let info = d.info().ok_or("the JPEG stream has no frame header")?;
            if info.pixel_format != format {
                return Err(format!("the JPEG stream decodes to {:?}, {format:?} expected", info.pixel_format));
            }
            Ok(pixels)
        }))
        .map_err(|_| "the JPEG decoder panicked".to_string())?
        .map_err(|e: String| format!("JPEG stream {}: {e}", k + 1))?;
        data.extend(decoded);
    }
    Ok(data)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::synth::{synth_instance, truncate, SynthSpec, SynthSyntax};
    use super::*;

    /// Directory of the pydicom test files shipped with the crate.
    pub(crate) const PYDICOM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pydicom");

    pub(crate) const ALL_SYNTAXES: [SynthSyntax; 4] = [
        SynthSyntax::ExplicitLE,
        SynthSyntax::ImplicitLE,
        SynthSyntax::ExplicitBE,
        SynthSyntax::EncapsulatedJpegBaseline,
    ];

    /// A small synthetic spec (fast to generate and analyse).
    pub(crate) fn small(syntax: SynthSyntax) -> SynthSpec {
        let mut s = SynthSpec::ct(1, 0, 0, 2);
        s.rows = 24;
        s.columns = 32;
        s.syntax = syntax;
        s
    }

    /// Check that a layout's ranges are ordered and reassemble `bytes` exactly.
    pub(crate) fn assert_reassembles(bytes: &[u8], layout: &DicomLayout) {
        let Some(p) = layout.pixel else { return };
        let (a, b, c) = (
            p.element_start as usize,
            p.value_start as usize,
            p.value_end as usize,
        );
        assert!(
            a < b && b <= c && c <= bytes.len(),
            "bad span {p:?} for {} bytes",
            bytes.len()
        );
        let mut joined = bytes[..a].to_vec();
        joined.extend_from_slice(&bytes[a..b]);
        joined.extend_from_slice(&bytes[b..c]);
        joined.extend_from_slice(&bytes[c..]);
        assert_eq!(joined, bytes);
        // the element header is 8 or 12 bytes and starts with a pixel data tag
        assert!(b - a == 8 || b - a == 12);
        let tag = if p.big_endian {
            [0x7F, 0xE0]
        } else {
            [0xE0, 0x7F]
        };
        assert_eq!(bytes[a..a + 2], tag);
    }

    fn layout(bytes: &[u8]) -> DicomLayout {
        match analyze(bytes) {
            Analysis::Dicom(l) => l,
            Analysis::NotDicom { reason } => panic!("expected DICOM, got NotDicom: {reason}"),
        }
    }

    fn header_of<'a>(bytes: &'a [u8], l: &DicomLayout) -> &'a [u8] {
        &bytes[..l.pixel.map_or(bytes.len(), |p| p.element_start as usize)]
    }

    #[test]
    fn synth_matrix_splits_exactly() {
        let mut cases = 0;
        for syntax in ALL_SYNTAXES {
            for preamble in [true, false] {
                for extras in [true, false] {
                    for frames in [1u32, 3] {
                        for bits in [16u16, 8] {
                            let mut spec = small(syntax.clone());
                            spec.preamble = preamble;
                            spec.with_sequence = extras;
                            spec.with_private = extras;
                            spec.frames = frames;
                            spec.bits_allocated = bits;
                            let bytes = synth_instance(&spec);
                            let l = layout(&bytes);
                            assert_reassembles(&bytes, &l);
                            let p = l.pixel.expect("synthetic files have pixel data");
                            let enc = matches!(syntax, SynthSyntax::EncapsulatedJpegBaseline);
                            assert_eq!(p.encapsulated, enc);
                            assert_eq!(p.big_endian, matches!(syntax, SynthSyntax::ExplicitBE));
                            assert_eq!(p.bits_allocated, Some(bits));
                            assert_eq!(p.value_end as usize, bytes.len(), "no trailer expected");
                            let value = &bytes[p.value_start as usize..p.value_end as usize];
                            if enc {
                                assert_eq!(value[..4], [0xFE, 0xFF, 0x00, 0xE0]);
                                assert_eq!(
                                    value[value.len() - 8..],
                                    [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]
                                );
                            } else {
                                assert_eq!(
                                    value.len(),
                                    24 * 32 * frames as usize * usize::from(bits / 8)
                                );
                            }
                            let s = &l.summary;
                            let want = DicomSummary {
                                patient_id: Some(spec.patient_id.clone()),
                                patient_name: Some(spec.patient_name.clone()),
                                study_uid: Some(spec.study_uid.clone()),
                                series_uid: Some(spec.series_uid.clone()),
                                sop_instance_uid: Some(spec.sop_uid.clone()),
                                sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.2".to_string()),
                                modality: Some(spec.modality.clone()),
                                transfer_syntax: s.transfer_syntax.clone(),
                                rows: Some(24),
                                columns: Some(32),
                                number_of_frames: (frames > 1).then_some(frames),
                                instance_number: Some(spec.instance_number),
                            };
                            assert_eq!(s, &want);
                            // the header alone is a valid DICOM file without pixel data
                            let obj = open_header(header_of(&bytes, &l)).expect("header parses");
                            assert!(obj.element(dicom_core::Tag(0x7FE0, 0x0010)).is_err());
                            let name = obj
                                .element(dicom_core::Tag(0x0010, 0x0010))
                                .expect("PatientName")
                                .to_str()
                                .expect("text")
                                .to_string();
                            assert_eq!(name, spec.patient_name);
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 64);
    }

    #[test]
    fn transfer_syntax_is_reported() {
        let uids = [
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.4.50",
        ];
        for (syntax, uid) in ALL_SYNTAXES.into_iter().zip(uids) {
            let l = layout(&synth_instance(&small(syntax)));
            assert_eq!(l.summary.transfer_syntax.as_deref(), Some(uid));
        }
    }

    #[test]
    fn truncated_files_are_not_dicom() {
        for syntax in ALL_SYNTAXES {
            let mut spec = small(syntax);
            spec.frames = 2;
            let bytes = synth_instance(&spec);
            let p = layout(&bytes).pixel.expect("pixel");
            for keep in 0..bytes.len() {
                let cut = truncate(&bytes, keep);
                match analyze(&cut) {
                    Analysis::NotDicom { reason } => {
                        if keep > p.value_start as usize {
                            assert!(reason.contains("offset"), "{reason}");
                        }
                    }
                    Analysis::Dicom(l) => {
                        // only a cut at an element boundary before the pixel data can be valid
                        assert!(keep <= p.element_start as usize, "cut at {keep} accepted");
                        assert!(l.pixel.is_none());
                        assert_reassembles(&cut, &l);
                    }
                }
            }
            // a cut inside the pixel value names the pixel data element
            let keep = (p.value_start + p.value_end) as usize / 2;
            match analyze(&truncate(&bytes, keep)) {
                Analysis::NotDicom { reason } => {
                    assert!(reason.contains("(7FE0,0010)"), "{reason}")
                }
                Analysis::Dicom(_) => panic!("truncated pixel data accepted"),
            }
        }
    }

    /// splitmix64 for the deterministic fuzz loops.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn check_no_panic(bytes: &[u8]) {
        if let Analysis::Dicom(l) = analyze(bytes) {
            assert_reassembles(bytes, &l);
            let _ = dump_header(header_of(bytes, &l));
        }
    }

    #[test]
    fn fuzz_garbage_never_panics() {
        let mut rng = 42u64;
        let valid = synth_instance(&small(SynthSyntax::ExplicitLE));
        for case in 0..2000 {
            let len = (next(&mut rng) % 700) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next(&mut rng) as u8).collect();
            // a third start with a real preamble + file meta, to get past the magic check
            if case % 3 == 0 {
                let keep = 132 + (next(&mut rng) % 200) as usize;
                let mut v = valid[..keep].to_vec();
                v.append(&mut bytes);
                bytes = v;
            }
            // and some use mostly "interesting" bytes (0xFF lengths, item tags)
            if case % 5 == 0 {
                for b in bytes.iter_mut().skip(132) {
                    *b = [0xFF, 0xFE, 0xE0, 0x00, 0xDD, 0x0D, b'S', b'Q'][(*b % 8) as usize];
                }
            }
            check_no_panic(&bytes);
        }
    }

    #[test]
    fn fuzz_byte_flips_never_panic() {
        let mut rng = 7u64;
        let originals: Vec<Vec<u8>> = ALL_SYNTAXES
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let mut spec = small(s);
                spec.rows = 8;
                spec.columns = 8;
                spec.frames = 2;
                spec.preamble = i % 2 == 0;
                synth_instance(&spec)
            })
            .collect();
        for case in 0..3000 {
            let mut bytes = originals[case % originals.len()].clone();
            let flips = 1 + next(&mut rng) % 4;
            for _ in 0..flips {
                let at = (next(&mut rng) % bytes.len() as u64) as usize;
                bytes[at] = match next(&mut rng) % 3 {
                    0 => next(&mut rng) as u8,
                    1 => 0xFF,
                    _ => bytes[at] ^ 0x80,
                };
            }
            check_no_panic(&bytes);
        }
    }

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{PYDICOM}/{name}")).expect("pydicom test file present")
    }

    #[test]
    fn pydicom_native_files() {
        for (name, big) in [
            ("CT_small.dcm", false),
            ("MR_small_bigendian.dcm", true),
            ("MR_small_implicit.dcm", false),
        ] {
            let bytes = read(name);
            let l = layout(&bytes);
            assert_reassembles(&bytes, &l);
            let p = l.pixel.expect("pixel data");
            assert!(!p.encapsulated);
            assert_eq!(p.big_endian, big, "{name}");
            assert_eq!(p.bits_allocated, Some(16));
            let side = if name.starts_with("CT") { 128 } else { 64 };
            assert_eq!(p.value_end - p.value_start, side * side * 2, "{name}");
            assert_eq!(
                (l.summary.rows, l.summary.columns),
                (Some(side as u32), Some(side as u32))
            );
            let modality = if name.starts_with("CT") { "CT" } else { "MR" };
            assert_eq!(l.summary.modality.as_deref(), Some(modality));
            assert!(l.summary.patient_name.is_some() && l.summary.study_uid.is_some());
            open_header(header_of(&bytes, &l)).expect("header parses");
        }
        let ct = layout(&read("CT_small.dcm")).summary;
        assert_eq!(ct.patient_id.as_deref(), Some("1CT1"));
        assert_eq!(ct.patient_name.as_deref(), Some("CompressedSamples^CT1"));
        assert_eq!(ct.instance_number, Some(1));
    }

    #[test]
    fn pydicom_encapsulated_files() {
        for (name, frames) in [
            ("JPEG2000.dcm", Some(1)),
            ("SC_rgb_rle_2frame.dcm", Some(2)),
        ] {
            let bytes = read(name);
            let l = layout(&bytes);
            assert_reassembles(&bytes, &l);
            let p = l.pixel.expect("pixel data");
            assert!(p.encapsulated, "{name}");
            let v = &bytes[p.value_start as usize..p.value_end as usize];
            assert_eq!(v[v.len() - 8..], [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
            assert_eq!(l.summary.number_of_frames, frames);
        }
    }

    #[test]
    fn pydicom_structural_files() {
        // no pixel data: the whole file is header
        let rtplan = read("rtplan.dcm");
        let l = layout(&rtplan);
        assert!(l.pixel.is_none());
        assert_eq!(l.summary.modality.as_deref(), Some("RTPLAN"));
        // nested private sequences (implicit VR)
        let bytes = read("nested_priv_SQ.dcm");
        let l = layout(&bytes);
        assert_reassembles(&bytes, &l);
        assert_eq!(l.pixel.map(|p| p.value_end - p.value_start), Some(2));
    }

    #[test]
    fn pydicom_rejected_files() {
        match analyze(&read("no_meta.dcm")) {
            Analysis::NotDicom { reason } => assert!(reason.contains("file meta"), "{reason}"),
            Analysis::Dicom(_) => panic!("no_meta.dcm has no file meta"),
        }
        match analyze(&read("MR_truncated.dcm")) {
            Analysis::NotDicom { reason } => {
                assert!(
                    reason.contains("(7FE0,0010)") && reason.contains("offset"),
                    "{reason}"
                )
            }
            Analysis::Dicom(_) => panic!("MR_truncated.dcm is truncated"),
        }
        // The walker reads UN of undefined length (implicit VR LE content), but
        // dicom-object would read that content as explicit VR: stored whole.
        match analyze(&read("UN_sequence.dcm")) {
            Analysis::NotDicom { reason } => {
                assert!(
                    reason.contains("(4453,100C)") && reason.contains("UN of undefined length"),
                    "{reason}"
                )
            }
            Analysis::Dicom(_) => panic!("dicom-object cannot read UN_sequence.dcm"),
        }
    }

    /// The check a commit runs ([`check_object`]) and a full parse by dicom-object give the
    /// same verdict on every header the walker lets through: synthetic files of every syntax,
    /// cut at every byte, with random bytes flipped or garbage appended, and pydicom's files.
    #[test]
    fn fast_check_agrees_with_dicom_object() {
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for syntax in ALL_SYNTAXES {
            for extras in [true, false] {
                let mut spec = small(syntax.clone());
                spec.rows = 4;
                spec.columns = 4;
                spec.with_sequence = extras;
                spec.with_private = extras;
                spec.preamble = extras;
                let bytes = synth_instance(&spec);
                inputs.extend((0..bytes.len()).map(|keep| truncate(&bytes, keep)));
                inputs.push(bytes);
            }
        }
        let mut rng = 11u64;
        let originals = inputs.clone();
        for case in 0..20_000 {
            let original = &originals[(next(&mut rng) % originals.len() as u64) as usize];
            let mut bytes = original.clone();
            if bytes.is_empty() {
                continue;
            }
            for _ in 0..1 + next(&mut rng) % 3 {
                let at = (next(&mut rng) % bytes.len() as u64) as usize;
                bytes[at] = match next(&mut rng) % 4 {
                    0 => next(&mut rng) as u8,
                    1 => 0xFF,
                    2 => [0xFE, 0xE0, 0xDD, 0x0D, b'S', b'Q', b'U', b'N'][(next(&mut rng) % 8) as usize],
                    _ => bytes[at] ^ 0x80,
                };
            }
            if case % 7 == 0 {
                bytes.extend((0..next(&mut rng) % 40).map(|_| next(&mut rng) as u8));
            }
            inputs.push(bytes);
        }
        for entry in std::fs::read_dir(PYDICOM).expect("pydicom test files") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "dcm") {
                inputs.push(std::fs::read(&path).expect("readable test file"));
            }
        }
        let (mut accepted, mut rejected) = (0, 0);
        for bytes in &inputs {
            let Ok(s) = split_header(bytes) else { continue };
            let fast = check_object(&s.header);
            let full = open_object(&s.header);
            assert_eq!(fast.is_ok(), full.is_ok(), "fast check: {fast:?}, dicom-object: {:?}", full.map(drop));
            if fast.is_ok() {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        // Both verdicts occur, so that neither side of the comparison is vacuous.
        assert!(accepted > 500 && rejected > 50, "{accepted} accepted, {rejected} rejected");
    }

    #[test]
    fn deflated_file_is_read_through_its_inflated_form() {
        let bytes = std::fs::read(format!("{PYDICOM}/image_dfl.dcm")).expect("test file");
        let Analysis::Dicom(l) = analyze(&bytes) else { panic!("deflated file not read as DICOM") };
        // Stored whole: its pixel data cannot be cut out of the compressed stream.
        assert!(l.pixel.is_none());
        assert_eq!(l.summary.transfer_syntax.as_deref(), Some(TS_DEFLATED_EXPLICIT));
        assert!(l.summary.sop_instance_uid.as_deref().is_some_and(|u| u.starts_with("1.3.6.1.4.1.5962")));
        // The header object names the file's own transfer syntax; the inflated form is a
        // readable Explicit VR Little Endian file with the same attributes.
        let obj = open_header(&bytes).expect("header");
        assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), TS_DEFLATED_EXPLICIT);
        let whole = inflate(&bytes).expect("inflates").expect("is deflated");
        let Analysis::Dicom(e) = analyze(&whole) else { panic!("inflated form not DICOM") };
        assert_eq!(e.summary.transfer_syntax.as_deref(), Some("1.2.840.10008.1.2.1"));
        assert_eq!(e.summary.sop_instance_uid, l.summary.sop_instance_uid);
        let parts = inflated_parts(&bytes).expect("parts").expect("deflated");
        let p = e.pixel.expect("pixel data");
        assert_eq!(parts.pixel, whole[p.value_start as usize..p.value_end as usize]);
        assert_eq!([parts.header.clone(), parts.pixel_element, parts.pixel, parts.trailer].concat(), whole);
        // A file in another syntax is not inflated.
        assert!(inflate(&std::fs::read(format!("{PYDICOM}/MR_small.dcm")).expect("test file")).expect("reads").is_none());
        // Damaged streams: an error naming the deflated data set, never a panic.
        for cut in (200..bytes.len()).step_by(97) {
            if let Analysis::NotDicom { reason } = analyze(&bytes[..cut]) {
                assert!(!reason.is_empty());
            }
        }
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 1000..n - 900].iter_mut().for_each(|b| *b ^= 0x5a);
        match analyze(&bad) {
            Analysis::NotDicom { reason } => assert!(reason.contains("deflated data set") || reason.contains("offset"), "{reason}"),
            Analysis::Dicom(_) => {}
        }
    }

    #[test]
    fn non_dicom_inputs() {
        for bytes in [&b""[..], b"DICM", b"hello world", &[0u8; 300][..]] {
            assert!(matches!(analyze(bytes), Analysis::NotDicom { .. }));
        }
    }
}
