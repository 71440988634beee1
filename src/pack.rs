//! Pack files: many objects in one file, written once and never modified.
//!
//! A commit appends every new object to one pack, fsyncs it once, writes its index and renames
//! both into `packs/`: a pack is either wholly present or absent, and millions of small objects
//! never become millions of small files. Large objects are compressed on their own (zstd level
//! 1; 16-bit native pixel data byte-shuffled first, its two byte planes as two frames), so any
//! of them is read with one `pread`. Small generic objects (DICOM headers, records, trees) are
//! gathered into blocks of about [`BLOCK_LEN`] compressed together: headers of one dataset
//! share most of their bytes, so a block stores them in a fraction of what they take one by one.
//! Writers are shared by threads (see [`PackWriter`]). Layouts are in `docs/format.md` ("Pack
//! files", "Pack index files").

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use crate::id::ObjectId;

pub const PACK_MAGIC: &[u8; 8] = b"COHPACK\0";
pub const IDX_MAGIC: &[u8; 8] = b"COHIDX\0\0";
/// The version this cohort writes. Versions 1 (no blocks, shorter index entries) and 2 (no
/// delta-coded pixel data) are still read.
pub const PACK_VERSION: u32 = 3;
const PACK_HEADER_LEN: u64 = 12;
const ENTRY_HEADER_LEN: u64 = 32 + 1 + 8 + 8;
/// Index entry: id, offset, stored length, raw length, codec; version 2 adds the object's place
/// in its block (offset, block length; both 0 outside blocks).
const IDX_ENTRY_LEN_V1: usize = 32 + 8 + 8 + 8 + 1;
const IDX_ENTRY_LEN: usize = IDX_ENTRY_LEN_V1 + 4 + 4;
const IDX_HEADER_LEN: usize = 8 + 4 + 8;
/// Generic objects up to this size go into blocks.
pub const BLOCK_MEMBER_MAX: usize = 16 << 10;
/// A block is compressed and written once its raw bytes reach this size.
pub const BLOCK_LEN: usize = 128 << 10;
/// Largest block length a reader accepts (guards allocations against a corrupt index).
const MAX_BLOCK: usize = 16 << 20;

/// Index entry length of a pack index version, if this cohort reads that version.
fn idx_entry_len(version: u32) -> Option<usize> {
    match version {
        1 => Some(IDX_ENTRY_LEN_V1),
        2 | 3 => Some(IDX_ENTRY_LEN),
        _ => None,
    }
}
/// Largest object accepted (guards allocations against a corrupt index).
pub const MAX_OBJECT: u64 = 1 << 36;

/// Errors of the pack layer.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a cohort pack index (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: pack format version {version} is not supported (this cohort reads versions 1 to {PACK_VERSION})")]
    Version { path: PathBuf, version: u32 },
    #[error("{path}: corrupt pack index: {reason}")]
    CorruptIndex { path: PathBuf, reason: String },
    #[error("object {id} in {path}: {reason}")]
    CorruptObject { id: ObjectId, path: PathBuf, reason: String },
    #[error("object {0} is not in the store")]
    Missing(ObjectId),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io { path: path.to_path_buf(), source }
}

/// How an object's bytes are stored in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
    /// Bytes of each 16-bit sample split (all first bytes, then all second bytes), then zstd.
    /// Written by versions 1 and 2; still read.
    Shuffle2Zstd = 2,
    /// A member of a block: the entry in the pack is the whole block (one zstd frame of its
    /// members' raw bytes, one after another), and the index says where the member lies in it.
    /// In an [`Encoded`], the data are the raw bytes, still to be gathered into a block.
    Block = 3,
    /// 16-bit samples as differences (each sample minus the one before it), zigzag-mapped
    /// and split into low and high bytes ([`delta16`]), then zstd. Version 3.
    Delta16Zstd = 4,
}

impl Codec {
    fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::Shuffle2Zstd),
            3 => Some(Codec::Block),
            4 => Some(Codec::Delta16Zstd),
            _ => None,
        }
    }
}

/// What the caller knows about an object's bytes, to pick a codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Generic,
    /// Native (uncompressed) pixel data with 16 bits allocated.
    Pixels16,
    /// Already compressed (JPEG & co.): not worth compressing again.
    Incompressible,
}

/// Zigzag: 0, -1, 1, -2, 2 ... to 0, 1, 2, 3, 4 ..., so small differences of either sign have
/// a zero high byte.
fn zigzag(d: u16) -> u16 {
    let d = d as i16;
    ((d << 1) ^ (d >> 15)) as u16
}

fn unzigzag(z: u16) -> u16 {
    (z >> 1) ^ (z & 1).wrapping_neg()
}

/// Native 16-bit pixel data as [`Codec::Delta16Zstd`] stores it before zstd: each little-endian
/// sample minus the one before it (wrapping; the first minus 0), zigzag-mapped, then all low
/// bytes of these values, all high bytes, and an odd trailing byte as it was.
///
/// Why: neighbouring pixels are close, so the differences are small. Their high bytes are
/// nearly all zero, and their low bytes are skewed enough for zstd's entropy coder. On the
/// noisy synthetic CT of `examples/bench.sh`, 45.2% of the raw size with the samples' own bytes
/// split (codec 2) becomes 36.0%; on pydicom's CT_small and MR_small, 64% becomes 48%
/// (docs/benchmarks.md, session 6).
pub fn delta16(raw: &[u8]) -> Vec<u8> {
    let n = raw.len() / 2;
    let mut out = vec![0u8; raw.len()];
    let (lo, rest) = out.split_at_mut(n);
    let (hi, tail) = rest.split_at_mut(n);
    #[cfg(target_arch = "x86_64")]
    let done = delta16_sse2(raw, lo, hi);
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    delta16_portable(raw, lo, hi, done..n);
    tail.copy_from_slice(&raw[2 * n..]);
    out
}

fn sample(raw: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]])
}

/// [`delta16`] of the samples in `range`, one at a time.
fn delta16_portable(raw: &[u8], lo: &mut [u8], hi: &mut [u8], range: std::ops::Range<usize>) {
    for i in range {
        let prev = if i == 0 { 0 } else { sample(raw, i - 1) };
        let z = zigzag(sample(raw, i).wrapping_sub(prev));
        lo[i] = z as u8;
        hi[i] = (z >> 8) as u8;
    }
}

/// [`delta16`] of whole groups of 16 samples with SSE2, from sample 1 on (sample 0 has no
/// predecessor to load); returns the first sample it did not do.
#[cfg(target_arch = "x86_64")]
fn delta16_sse2(raw: &[u8], lo: &mut [u8], hi: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = lo.len();
    if n == 0 {
        return 0;
    }
    // Sample 0 first (its difference is itself), so that every group below has a sample
    // before it.
    delta16_portable(raw, lo, hi, 0..1);
    let mut i = 1;
    while i + 16 <= n {
        // The group's 16 samples and the one before them.
        let r = &raw[2 * i - 2..2 * i + 32];
        // SAFETY: SSE2 is part of the x86_64 baseline, so the CPU has it; `r` is 34 bytes long,
        // so the four 16-byte loads at 0, 2, 16 and 18 are in bounds; `lo` and `hi` have 16
        // bytes at `i` (i + 16 <= n); the unaligned load and store intrinsics need no alignment.
        unsafe {
            let p = r.as_ptr();
            let d0 = _mm_sub_epi16(_mm_loadu_si128(p.add(2).cast()), _mm_loadu_si128(p.cast()));
            let d1 = _mm_sub_epi16(_mm_loadu_si128(p.add(18).cast()), _mm_loadu_si128(p.add(16).cast()));
            let z0 = _mm_xor_si128(_mm_slli_epi16(d0, 1), _mm_srai_epi16(d0, 15));
            let z1 = _mm_xor_si128(_mm_slli_epi16(d1, 1), _mm_srai_epi16(d1, 15));
            let mask = _mm_set1_epi16(0x00ff);
            let low = _mm_packus_epi16(_mm_and_si128(z0, mask), _mm_and_si128(z1, mask));
            let high = _mm_packus_epi16(_mm_srli_epi16(z0, 8), _mm_srli_epi16(z1, 8));
            _mm_storeu_si128(lo[i..i + 16].as_mut_ptr().cast(), low);
            _mm_storeu_si128(hi[i..i + 16].as_mut_ptr().cast(), high);
        }
        i += 16;
    }
    i
}

/// The inverse of [`delta16`]: a cold export runs it on every native 16-bit pixel byte it
/// writes. A running sum is serial; SSE2 does it 8 samples at a time in three shifted adds.
fn undelta16(d: &[u8]) -> Vec<u8> {
    let n = d.len() / 2;
    let mut out = vec![0u8; d.len()];
    let (lo, hi) = (&d[..n], &d[n..2 * n]);
    #[cfg(target_arch = "x86_64")]
    let (done, prev) = undelta16_sse2(lo, hi, &mut out);
    #[cfg(not(target_arch = "x86_64"))]
    let (done, prev) = (0, 0);
    undelta16_portable(lo, hi, &mut out, done, prev);
    out[2 * n..].copy_from_slice(&d[2 * n..]);
    out
}

/// [`undelta16`] of samples `from..`, given the sample before them.
fn undelta16_portable(lo: &[u8], hi: &[u8], out: &mut [u8], from: usize, mut prev: u16) {
    for i in from..lo.len() {
        prev = prev.wrapping_add(unzigzag(u16::from_le_bytes([lo[i], hi[i]])));
        out[2 * i..2 * i + 2].copy_from_slice(&prev.to_le_bytes());
    }
}

/// [`undelta16`] of whole groups of 16 samples with SSE2; returns how many samples it did
/// and the last of them.
#[cfg(target_arch = "x86_64")]
fn undelta16_sse2(lo: &[u8], hi: &[u8], out: &mut [u8]) -> (usize, u16) {
    use std::arch::x86_64::*;
    let mut done = 0;
    // SAFETY (all blocks below): SSE2 is part of the x86_64 baseline; every load and store is
    // of a 16-byte chunk of a slice (chunks_exact); the unaligned intrinsics need no alignment.
    let mut carry = unsafe { _mm_setzero_si128() };
    for ((l, h), o) in lo.chunks_exact(16).zip(hi.chunks_exact(16)).zip(out.chunks_exact_mut(32)) {
        unsafe {
            let (l, h) = (_mm_loadu_si128(l.as_ptr().cast()), _mm_loadu_si128(h.as_ptr().cast()));
            for (k, z) in [_mm_unpacklo_epi8(l, h), _mm_unpackhi_epi8(l, h)].into_iter().enumerate() {
                let one = _mm_set1_epi16(1);
                let mut r = _mm_xor_si128(_mm_srli_epi16(z, 1), _mm_sub_epi16(_mm_setzero_si128(), _mm_and_si128(z, one)));
                // Running sum within the 8 lanes, then add the last sample of the group before.
                r = _mm_add_epi16(r, _mm_slli_si128(r, 2));
                r = _mm_add_epi16(r, _mm_slli_si128(r, 4));
                r = _mm_add_epi16(r, _mm_slli_si128(r, 8));
                r = _mm_add_epi16(r, carry);
                _mm_storeu_si128(o[16 * k..16 * k + 16].as_mut_ptr().cast(), r);
                // Lane 7 into every lane.
                let t = _mm_shufflehi_epi16(r, 0xff);
                carry = _mm_unpackhi_epi64(t, t);
            }
        }
        done += 16;
    }
    let prev = if done == 0 { 0 } else { u16::from_le_bytes([out[2 * done - 2], out[2 * done - 1]]) };
    (done, prev)
}

/// Pixel data of codec 2 (written by versions 1 and 2) back to its samples: low bytes, high
/// bytes and an odd trailing byte interleaved again. The compiler vectorizes this loop.
fn unshuffle2(sh: &[u8]) -> Vec<u8> {
    let n = sh.len() / 2;
    let mut out = vec![0u8; sh.len()];
    let (lo, hi) = (&sh[..n], &sh[n..2 * n]);
    for ((o, l), h) in out.chunks_exact_mut(2).zip(lo).zip(hi) {
        o[0] = *l;
        o[1] = *h;
    }
    out[2 * n..].copy_from_slice(&sh[2 * n..]);
    out
}

/// An object ready to be appended: `data` is `raw` encoded with `codec` (for
/// [`Codec::Block`], the raw bytes, which the writer gathers into a block).
pub struct Encoded {
    pub id: ObjectId,
    pub codec: Codec,
    pub raw_len: u64,
    pub data: Vec<u8>,
}

/// What a zstd context is tuned for.
#[derive(Clone, Copy)]
enum Profile {
    /// Headers, trees, records, files that are not DICOM: level 1.
    Generic = 0,
    /// The high bytes of 16-bit pixel differences (nearly all zero).
    PixelHigh = 1,
    /// Their low bytes (mostly noise: matches are rare, entropy coding does the work).
    PixelLow = 2,
}

thread_local! {
    // One zstd context per thread and profile: creating one per object costs more than
    // compressing a small DICOM header.
    static COMPRESSORS: std::cell::RefCell<[Option<zstd::bulk::Compressor<'static>>; 3]> = const { std::cell::RefCell::new([None, None, None]) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// zstd level 1 for everything but pixel data.
const LEVEL: i32 = 1;
/// Pixel data (after [`delta16`]): level -5 for the high-byte plane and -20 for the low-byte
/// plane, both with a 1 KiB-entry hash table (it stays in the L1 cache), matches of at least 6
/// bytes (noise makes shorter ones rare and costly to try), and Huffman coding of literals,
/// which zstd leaves off at negative levels by default. On the noisy low bytes that entropy
/// coding is all the gain. Measured on 200 noisy synthetic 512x512 CT slices, one core, stored
/// size and compression speed of the two planes: without literal coding 42.6% at 1,250 MB/s;
/// with it on the low plane 37.3% at 680-900 MB/s, on both 36.0% at 930 MB/s; both at level 1
/// 35.5% at 250 MB/s. (The samples' own bytes split, codec 2 as written before: 45.2% at
/// 710-950 MB/s.) Pixel data is nearly all of a dataset's bytes, and a commit must keep pace
/// with `cp -r`.
const PIXEL_HIGH_LEVEL: i32 = -5;
const PIXEL_LOW_LEVEL: i32 = -20;
const PIXEL_HASH_LOG: u32 = 10;
const PIXEL_MIN_MATCH: u32 = 6;

fn new_compressor(p: Profile) -> Option<zstd::bulk::Compressor<'static>> {
    let level = match p {
        Profile::Generic => return zstd::bulk::Compressor::new(LEVEL).ok(),
        Profile::PixelHigh => PIXEL_HIGH_LEVEL,
        Profile::PixelLow => PIXEL_LOW_LEVEL,
    };
    let mut c = zstd::bulk::Compressor::new(level).ok()?;
    c.set_parameter(zstd::zstd_safe::CParameter::HashLog(PIXEL_HASH_LOG)).ok()?;
    c.set_parameter(zstd::zstd_safe::CParameter::MinMatch(PIXEL_MIN_MATCH)).ok()?;
    c.set_parameter(zstd::zstd_safe::CParameter::LiteralCompressionMode(zstd::zstd_safe::ParamSwitch::Enable)).ok()?;
    Some(c)
}

/// Compress `parts`, each as its own zstd frame, into one buffer: concatenated frames are
/// ordinary zstd data, and decode to the concatenated parts.
fn zstd_compress(parts: &[(&[u8], Profile)]) -> Option<Vec<u8>> {
    COMPRESSORS.with(|cs| {
        let mut cs = cs.borrow_mut();
        let mut out: Option<Vec<u8>> = None;
        for (bytes, p) in parts {
            let slot = &mut cs[*p as usize];
            if slot.is_none() {
                *slot = new_compressor(*p);
            }
            let frame = slot.as_mut()?.compress(bytes).ok()?;
            match &mut out {
                None => out = Some(frame),
                Some(o) => o.extend_from_slice(&frame),
            }
        }
        out
    })
}

fn zstd_decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        d.as_mut().expect("just set").decompress(data, raw_len).map_err(|e| e.to_string())
    })
}

/// Compress an object's bytes (CPU work, meant for worker threads). Small generic objects are
/// left raw, for the writer to compress in a block with others.
pub fn encode(id: ObjectId, raw: &[u8], hint: Hint) -> Encoded {
    let raw_len = raw.len() as u64;
    if hint == Hint::Generic && raw.len() <= BLOCK_MEMBER_MAX {
        return Encoded { id, codec: Codec::Block, raw_len, data: raw.to_vec() };
    }
    let attempt = match hint {
        Hint::Incompressible => None,
        _ if raw.len() < 64 => None,
        Hint::Pixels16 => {
            let planes = delta16(raw);
            let (low, high) = planes.split_at(raw.len() / 2);
            zstd_compress(&[(low, Profile::PixelLow), (high, Profile::PixelHigh)]).map(|d| (Codec::Delta16Zstd, d))
        }
        Hint::Generic => zstd_compress(&[(raw, Profile::Generic)]).map(|d| (Codec::Zstd, d)),
    };
    match attempt {
        Some((codec, data)) if data.len() < raw.len() => Encoded { id, codec, raw_len, data },
        _ => Encoded { id, codec: Codec::Raw, raw_len, data: raw.to_vec() },
    }
}

/// Decode the stored bytes of an object that is not in a block (raw ones are borrowed).
fn decode(codec: Codec, data: &[u8], raw_len: u64) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    use std::borrow::Cow;
    match codec {
        Codec::Raw => Ok(Cow::Borrowed(data)),
        Codec::Zstd => zstd_decompress(data, raw_len as usize).map(Cow::Owned),
        Codec::Shuffle2Zstd => zstd_decompress(data, raw_len as usize).map(|d| Cow::Owned(unshuffle2(&d))),
        Codec::Delta16Zstd => zstd_decompress(data, raw_len as usize).map(|d| Cow::Owned(undelta16(&d))),
        Codec::Block => Err("a block member needs its block".into()),
    }
}

/// Decompress a block (the stored bytes of a [`Codec::Block`] location) and check its length.
pub fn decode_block(loc: &Location, stored: &[u8]) -> Result<Vec<u8>, String> {
    if loc.block_len as usize > MAX_BLOCK {
        return Err(format!("its block would hold {} bytes, more than blocks ever do", loc.block_len));
    }
    let raw = zstd_decompress(stored, loc.block_len as usize).map_err(|e| format!("cannot decompress its block: {e}"))?;
    if raw.len() != loc.block_len as usize {
        return Err(format!("its block holds {} bytes, index says {}", raw.len(), loc.block_len));
    }
    Ok(raw)
}

/// Check raw bytes against the length and id an index gives them.
fn check_raw(id: ObjectId, loc: &Location, raw: &[u8]) -> Result<(), String> {
    if raw.len() as u64 != loc.raw_len {
        return Err(format!("{} bytes, index says {}", raw.len(), loc.raw_len));
    }
    if ObjectId::of(raw) != id {
        return Err("content does not match its id (hash mismatch)".into());
    }
    Ok(())
}

/// A block member's bytes, cut from its decompressed block and checked against its id.
pub fn member_verified(id: ObjectId, loc: &Location, block: &[u8]) -> Result<Vec<u8>, String> {
    let start = loc.block_at as usize;
    let raw = start
        .checked_add(loc.raw_len as usize)
        .and_then(|end| block.get(start..end))
        .ok_or_else(|| format!("bytes {start}+{} lie outside its block of {}", loc.raw_len, block.len()))?;
    check_raw(id, loc, raw)?;
    Ok(raw.to_vec())
}

/// Check the stored bytes of an object that is not in a block against its id, by decoding
/// them (objects received from a remote are checked this way before they enter a store; block
/// members with [`decode_block`] and [`member_verified`]).
pub fn check_stored(id: ObjectId, loc: &Location, stored: &[u8]) -> Result<(), String> {
    check_raw(id, loc, &decode(loc.codec, stored, loc.raw_len)?)
}

/// The raw bytes of an object that is not in a block, decoded from its stored bytes and
/// checked against its id, as [`check_stored`] checks them.
pub fn stored_verified(id: ObjectId, loc: &Location, stored: &[u8]) -> Result<Vec<u8>, String> {
    let raw = decode(loc.codec, stored, loc.raw_len)?.into_owned();
    check_raw(id, loc, &raw)?;
    Ok(raw)
}

/// Where `id` is among `count` sorted ids (`id_at(i)` is the i-th), if it is there.
///
/// Ids are BLAKE3 hashes, spread evenly over their range, so the first steps guess the
/// position from the id's first 8 bytes (interpolation) and the rest halve what is left. On
/// a million objects a plain binary search makes about 20 steps, each touching a different
/// part of the index (a cache miss, or a page of a cold index read from disk); the guesses
/// leave a few. At most 3 guesses are made, so ids that are not evenly spread (a crafted
/// index) cost no more than a binary search plus 3 steps.
fn find_sorted<'a>(count: usize, id_at: impl Fn(usize) -> &'a [u8], id: &[u8; 32]) -> Option<usize> {
    let key_of = |b: &[u8]| u64::from_be_bytes(b[..8].try_into().expect("ids are 32 bytes"));
    let key = key_of(id);
    // Candidates are [lo, hi); their keys lie in [lo_key, hi_key].
    let (mut lo, mut hi) = (0usize, count);
    let (mut lo_key, mut hi_key) = (0u64, u64::MAX);
    let mut guesses = 0;
    while lo < hi {
        let mid = if guesses < 3 && hi - lo > 8 {
            guesses += 1;
            let span = u128::from(hi_key - lo_key) + 1;
            let at = u128::from(key - lo_key) * (hi - lo) as u128 / span;
            lo + (at as usize).min(hi - lo - 1)
        } else {
            (lo + hi) / 2
        };
        let mid_id = id_at(mid);
        let mid_key = key_of(mid_id);
        match mid_key.cmp(&key).then_with(|| mid_id.cmp(&id[..])) {
            std::cmp::Ordering::Less => (lo, lo_key) = (mid + 1, mid_key),
            std::cmp::Ordering::Greater => (hi, hi_key) = (mid, mid_key),
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

/// One index entry of a given version (the slice is exactly one entry long).
fn parse_entry(b: &[u8], version: u32) -> (ObjectId, Option<Codec>, Location) {
    let id = ObjectId::from_slice(&b[..32]).expect("32 bytes");
    let u = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().expect("8 bytes"));
    let w = |r: std::ops::Range<usize>| u32::from_le_bytes(b[r].try_into().expect("4 bytes"));
    // Blocks came with version 2, delta-coded pixel data with version 3: an older index that
    // names one is corrupt.
    let codec = Codec::from_u8(b[56]).filter(|c| match c {
        Codec::Block => version >= 2,
        Codec::Delta16Zstd => version >= 3,
        _ => true,
    });
    let (block_at, block_len) = if version >= 2 { (w(57..61), w(61..65)) } else { (0, 0) };
    let loc = Location { offset: u(32..40), stored_len: u(40..48), raw_len: u(48..56), codec: codec.unwrap_or(Codec::Raw), block_at, block_len };
    (id, codec, loc)
}

/// What a pack index's header says, once its magic, version and length are checked.
struct IndexShape {
    version: u32,
    entry_len: usize,
    count: usize,
}

/// Why a pack index's header was refused.
enum ShapeError {
    BadMagic,
    Version(u32),
    /// The file's length does not fit its entry count.
    Length(String),
}

/// Check the magic, version and length of a pack index (not its checksum).
fn index_shape(idx: &[u8]) -> Result<IndexShape, ShapeError> {
    if idx.len() < IDX_HEADER_LEN + 32 || &idx[..8] != IDX_MAGIC {
        return Err(ShapeError::BadMagic);
    }
    let version = u32::from_le_bytes(idx[8..12].try_into().expect("4 bytes"));
    let entry_len = idx_entry_len(version).ok_or(ShapeError::Version(version))?;
    let count = u64::from_le_bytes(idx[12..20].try_into().expect("8 bytes")) as usize;
    if count.checked_mul(entry_len).and_then(|n| n.checked_add(IDX_HEADER_LEN + 32)) != Some(idx.len()) {
        return Err(ShapeError::Length(format!("{} bytes for {count} entries", idx.len())));
    }
    Ok(IndexShape { version, entry_len, count })
}

/// Whether a pack index's last 32 bytes are the BLAKE3 hash of the rest (its length was
/// checked by [`index_shape`]).
fn checksum_ok(idx: &[u8]) -> bool {
    let (body, sum) = idx.split_at(idx.len() - 32);
    blake3::hash(body).as_bytes() == sum
}

/// Parse and check a pack index held in memory (magic, version, length, checksum, codecs).
pub fn parse_index(idx: &[u8]) -> Result<Vec<(ObjectId, Location)>, String> {
    let IndexShape { version, entry_len, count } = index_shape(idx).map_err(|e| match e {
        ShapeError::BadMagic => "not a cohort pack index".to_string(),
        ShapeError::Version(v) => format!("pack index version {v}"),
        ShapeError::Length(reason) => reason,
    })?;
    if !checksum_ok(idx) {
        return Err("checksum mismatch".into());
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let b = &idx[IDX_HEADER_LEN + i * entry_len..][..entry_len];
        let (id, codec, loc) = parse_entry(b, version);
        if codec.is_none() {
            return Err(format!("object {id}: unknown codec {}", b[56]));
        }
        if loc.raw_len > MAX_OBJECT || loc.stored_len > MAX_OBJECT {
            return Err(format!("object {id}: size out of range"));
        }
        out.push((id, loc));
    }
    Ok(out)
}

/// Location of an object inside a pack.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    /// Where the stored bytes start (for a block member: its block's).
    pub offset: u64,
    /// How many stored bytes (for a block member: its whole block's).
    pub stored_len: u64,
    /// The object's own length.
    pub raw_len: u64,
    pub codec: Codec,
    /// For a block member: where it starts in the block's raw bytes, and their length.
    pub block_at: u32,
    pub block_len: u32,
}

impl Location {
    /// Stored bytes that belong to this object: a block member gets the share of its block in
    /// proportion to its raw size.
    pub fn stored_share(&self) -> u64 {
        if self.codec == Codec::Block && self.block_len > 0 {
            (u128::from(self.stored_len) * u128::from(self.raw_len) / u128::from(self.block_len)) as u64
        } else {
            self.stored_len
        }
    }
}

/// Appends objects to a new pack in the store's temp folder; [`PackWriter::finish`] makes it
/// durable and visible.
///
/// Many threads may add objects at once (`add` takes `&self`): a short lock reserves each
/// object's place in the pack, and one writer thread of the pack's own does the `pwrite`s, so
/// the threads that read, hash and compress never wait for the filesystem (ext4 serializes
/// writes to one file, and a write may wait for pages under writeback). Objects smaller than
/// [`DIRECT_WRITE`] are gathered under the lock and handed over a megabyte at a time. Small
/// generic objects ([`Codec::Block`] in their [`Encoded`]) go into the open block; the thread
/// whose object fills it compresses it, outside the lock.
pub struct PackWriter {
    packs_dir: PathBuf,
    tmp_path: PathBuf,
    file: Arc<File>,
    state: Mutex<WriteState>,
    /// Writes for the writer thread; `None` once it was told to stop.
    jobs: Option<SyncSender<WriteJob>>,
    /// The writer thread: bytes it wrote, or its first error.
    thread: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
    /// Set by the writer thread when a write failed (disk full...), so that the threads adding
    /// objects stop at their next object instead of compressing the rest for nothing.
    failed: Arc<Mutex<Option<(std::io::ErrorKind, String)>>>,
    /// Buffers of small objects the writer thread is done with, for the next ones (see
    /// [`SPARE_BUFFERS`]).
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Buffers of small objects kept for reuse. A fresh 1 MiB buffer grown by doubling costs a
/// copy of everything in it and, in new memory, a page fault for every 4 KiB: on a commit of
/// 20,000 small files, 11 % of the CPU (`perf`, session 9).
const SPARE_BUFFERS: usize = 4;
/// The capacity of a buffer of small objects: [`BUFFER_LEN`] and one more object. Only buffers
/// of exactly this capacity are kept, not the data of a large object (which may be any size).
const SMALL_BUFFER_CAPACITY: usize = BUFFER_LEN + DIRECT_WRITE + ENTRY_HEADER_LEN as usize;

#[derive(Default)]
struct WriteState {
    /// Where the next object goes (= bytes reserved so far, header included).
    offset: u64,
    /// Entries of small objects not yet handed over; they belong at `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    entries: Vec<(ObjectId, Location)>,
    /// Every id added, written or not yet (in the open block, or being compressed).
    ids: HashSet<ObjectId>,
    /// The open block: raw bytes of its members, and each member's id, offset and length.
    block: Vec<u8>,
    members: Vec<(ObjectId, u32, u32)>,
}

/// Bytes to write at a position of the pack.
struct WriteJob {
    at: u64,
    parts: Vec<Vec<u8>>,
}

/// Objects at least this large are handed to the writer thread as they are.
const DIRECT_WRITE: usize = 64 << 10;
/// The buffer of small objects is handed over when it reaches this size.
const BUFFER_LEN: usize = 1 << 20;
/// Writes waiting for the writer thread, at most (this bounds the memory they hold).
const QUEUE_LEN: usize = 16;
/// The writer thread asks the kernel to start writeback every this many bytes, so that the
/// final fsync has little left to wait for.
const WRITEBACK_CHUNK: u64 = 8 << 20;

impl PackWriter {
    pub fn create(packs_dir: &Path, tmp_dir: &Path) -> Result<Self, PackError> {
        Self::create_with(packs_dir, tmp_dir, true)
    }

    /// `direct`: write the pack with direct I/O where the filesystem allows it (see
    /// [`write_jobs`]); tests turn it off to cover the buffered path on every machine.
    fn create_with(packs_dir: &Path, tmp_dir: &Path, direct: bool) -> Result<Self, PackError> {
        let tmp = tempfile::Builder::new()
            .prefix("pack-")
            .suffix(".tmp")
            .tempfile_in(tmp_dir)
            .map_err(io(tmp_dir))?;
        let (file, tmp_path) = tmp.keep().map_err(|e| PackError::Io {
            path: tmp_dir.to_path_buf(),
            source: e.error,
        })?;
        let mut header = Vec::with_capacity(PACK_HEADER_LEN as usize);
        header.extend_from_slice(PACK_MAGIC);
        header.extend_from_slice(&PACK_VERSION.to_le_bytes());
        let direct_file = if direct { open_direct(&tmp_path) } else { None };
        let file = Arc::new(file);
        let failed = Arc::new(Mutex::new(None));
        let (tx, rx) = std::sync::mpsc::sync_channel::<WriteJob>(QUEUE_LEN);
        let spare = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (file, failed, spare) = (Arc::clone(&file), Arc::clone(&failed), Arc::clone(&spare));
            std::thread::Builder::new()
                .name("cohort-pack-writer".into())
                .spawn(move || write_jobs(&file, direct_file, rx, &failed, &spare))
                .map_err(io(&tmp_path))?
        };
        let w = PackWriter {
            packs_dir: packs_dir.to_path_buf(),
            tmp_path,
            file,
            state: Mutex::new(WriteState { offset: PACK_HEADER_LEN, buf_start: PACK_HEADER_LEN, ..WriteState::default() }),
            jobs: Some(tx),
            thread: Some(thread),
            failed,
            spare,
        };
        w.send(WriteJob { at: 0, parts: vec![header] })?;
        Ok(w)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WriteState> {
        // A thread that panicked while holding the lock left no half-made entry behind (each
        // change under the lock is a few pushes), so the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this pack already holds `id`.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.state().ids.contains(id)
    }

    /// Objects added so far.
    pub fn len(&self) -> usize {
        self.state().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes reserved so far (header included), plus the raw bytes of the open block (written
    /// compressed when it fills or the pack is finished).
    pub fn bytes(&self) -> u64 {
        let st = self.state();
        st.offset + st.block.len() as u64
    }

    /// Append an encoded object (a second copy of the same id is skipped). Safe to call from
    /// many threads at once.
    pub fn add(&self, e: Encoded) -> Result<(), PackError> {
        if e.codec == Codec::Block {
            return self.add_to_block(e.id, &e.data);
        }
        self.add_alone(e.id, e.codec, e.raw_len, e.data)
    }

    /// Append an object stored on its own (a second copy of the same id is skipped).
    fn add_alone(&self, id: ObjectId, codec: Codec, raw_len: u64, data: Vec<u8>) -> Result<(), PackError> {
        if !self.state().ids.insert(id) {
            return Ok(());
        }
        self.append(id, codec, raw_len, data, None)
    }

    /// Put a small object's raw bytes into the open block; compress and write the block if
    /// that filled it.
    fn add_to_block(&self, id: ObjectId, raw: &[u8]) -> Result<(), PackError> {
        let full = {
            let mut st = self.state();
            if !st.ids.insert(id) {
                return Ok(());
            }
            let at = st.block.len() as u32;
            if st.block.capacity() == 0 {
                // Room for a full block at once: no copies as it grows.
                st.block.reserve_exact(BLOCK_LEN + BLOCK_MEMBER_MAX);
            }
            st.block.extend_from_slice(raw);
            st.members.push((id, at, raw.len() as u32));
            if st.block.len() >= BLOCK_LEN {
                Some((std::mem::take(&mut st.block), std::mem::take(&mut st.members)))
            } else {
                None
            }
        };
        match full {
            Some((block, members)) => self.write_block(block, members),
            None => Ok(()),
        }
    }

    /// Compress a block and append it, with an index entry for each member.
    fn write_block(&self, block: Vec<u8>, members: Vec<(ObjectId, u32, u32)>) -> Result<(), PackError> {
        // One zstd frame at level 1; blocks are small, so this never fails short of memory.
        let data = zstd_compress(&[(&block, Profile::Generic)]).ok_or_else(|| PackError::Io {
            path: self.tmp_path.clone(),
            source: std::io::Error::other("zstd could not compress a block"),
        })?;
        self.append(ObjectId::of(&block), Codec::Block, block.len() as u64, data, Some(members))
    }

    /// Reserve the place of one pack entry (an object, or a block with its `members`), record
    /// its index entries, and hand its bytes to the writer thread. The caller has put the ids
    /// into `ids` already.
    fn append(&self, id: ObjectId, codec: Codec, raw_len: u64, data: Vec<u8>, members: Option<Vec<(ObjectId, u32, u32)>>) -> Result<(), PackError> {
        let mut head = Vec::with_capacity(ENTRY_HEADER_LEN as usize);
        head.extend_from_slice(&id.0);
        head.push(codec as u8);
        head.extend_from_slice(&raw_len.to_le_bytes());
        head.extend_from_slice(&(data.len() as u64).to_le_bytes());
        let mut jobs = Vec::new();
        {
            let mut st = self.state();
            let at = st.offset;
            st.offset += ENTRY_HEADER_LEN + data.len() as u64;
            let loc = Location { offset: at + ENTRY_HEADER_LEN, stored_len: data.len() as u64, raw_len, codec, block_at: 0, block_len: 0 };
            match members {
                None => st.entries.push((id, loc)),
                Some(ms) => {
                    let block_len = raw_len as u32;
                    st.entries.extend(ms.into_iter().map(|(m, block_at, len)| (m, Location { raw_len: u64::from(len), block_at, block_len, ..loc })));
                }
            }
            if data.len() >= DIRECT_WRITE {
                // The buffer ends where this object starts: hand over both.
                if !st.buf.is_empty() {
                    jobs.push(WriteJob { at: st.buf_start, parts: vec![std::mem::take(&mut st.buf)] });
                }
                st.buf_start = st.offset;
                jobs.push(WriteJob { at, parts: vec![head, data] });
            } else {
                if st.buf.capacity() == 0 {
                    st.buf = self.spare_buffer();
                }
                st.buf.extend_from_slice(&head);
                st.buf.extend_from_slice(&data);
                if st.buf.len() >= BUFFER_LEN {
                    jobs.push(WriteJob { at: st.buf_start, parts: vec![std::mem::take(&mut st.buf)] });
                    st.buf_start = st.offset;
                }
            }
        }
        for job in jobs {
            self.send(job)?;
        }
        Ok(())
    }

    /// An empty buffer for small objects, with room for [`BUFFER_LEN`] bytes and one more
    /// object: one the writer thread gave back, else a new one.
    fn spare_buffer(&self) -> Vec<u8> {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        spare.unwrap_or_else(|| Vec::with_capacity(SMALL_BUFFER_CAPACITY))
    }

    fn send(&self, job: WriteJob) -> Result<(), PackError> {
        if let Some((kind, msg)) = &*self.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(PackError::Io { path: self.tmp_path.clone(), source: std::io::Error::new(*kind, msg.clone()) });
        }
        let stopped = || PackError::Io { path: self.tmp_path.clone(), source: std::io::Error::other("the pack's writer thread stopped") };
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())
    }

    /// Tell the writer thread to stop once its queue is written; what it wrote, or its error.
    fn stop_writer(&mut self) -> Result<u64, PackError> {
        self.jobs = None;
        let Some(t) = self.thread.take() else { return Ok(0) };
        match t.join() {
            Ok(r) => r.map_err(io(&self.tmp_path)),
            Err(_) => Err(PackError::Io { path: self.tmp_path.clone(), source: std::io::Error::other("the pack's writer thread panicked") }),
        }
    }

    /// Copy an object as stored in another pack, without recompressing (used by gc and push);
    /// a block member is read out of its block and goes into a block of this pack.
    pub fn copy_from(&self, pack: &Pack, id: ObjectId, loc: Location) -> Result<(), PackError> {
        if self.contains(&id) {
            return Ok(());
        }
        if loc.codec == Codec::Block {
            return self.add_to_block(id, &pack.read(id, loc)?);
        }
        self.add_alone(id, loc.codec, loc.raw_len, pack.read_stored(id, loc)?)
    }

    /// Make the pack durable, write its index, and move both into `packs/`. Returns the pack's
    /// name, or `None` if nothing was added (nothing is written then).
    pub fn finish(mut self) -> Result<Option<String>, PackError> {
        let open = {
            let mut st = self.state();
            (std::mem::take(&mut st.block), std::mem::take(&mut st.members))
        };
        if !open.1.is_empty() {
            self.write_block(open.0, open.1)?;
        }
        let mut st = std::mem::take(&mut *self.state());
        if !st.buf.is_empty() {
            self.send(WriteJob { at: st.buf_start, parts: vec![std::mem::take(&mut st.buf)] })?;
        }
        let written = self.stop_writer()?;
        if st.entries.is_empty() {
            return Ok(None);
        }
        // Every reserved byte must have been written: a caller whose add failed got an error
        // that should have stopped it before it got here.
        if written != st.offset {
            return Err(PackError::Io {
                path: self.tmp_path.clone(),
                source: std::io::Error::other(format!("{written} bytes written of {} reserved", st.offset)),
            });
        }
        self.file.sync_all().map_err(io(&self.tmp_path))?;

        st.entries.sort_by_key(|e| e.0);
        let mut idx = Vec::with_capacity(IDX_HEADER_LEN + st.entries.len() * IDX_ENTRY_LEN + 32);
        idx.extend_from_slice(IDX_MAGIC);
        idx.extend_from_slice(&PACK_VERSION.to_le_bytes());
        idx.extend_from_slice(&(st.entries.len() as u64).to_le_bytes());
        for (id, l) in &st.entries {
            idx.extend_from_slice(&id.0);
            idx.extend_from_slice(&l.offset.to_le_bytes());
            idx.extend_from_slice(&l.stored_len.to_le_bytes());
            idx.extend_from_slice(&l.raw_len.to_le_bytes());
            idx.push(l.codec as u8);
            idx.extend_from_slice(&l.block_at.to_le_bytes());
            idx.extend_from_slice(&l.block_len.to_le_bytes());
        }
        let sum = blake3::hash(&idx);
        idx.extend_from_slice(sum.as_bytes());
        let name = format!("pack-{}", &sum.to_hex()[..32]);

        let idx_tmp = self.tmp_path.with_extension("idx.tmp");
        crate::fsutil::write_durable(&idx_tmp, &idx).map_err(io(&idx_tmp))?;
        let pack_path = self.packs_dir.join(format!("{name}.pack"));
        let idx_path = self.packs_dir.join(format!("{name}.idx"));
        // The pack goes first: an index is only ever visible next to its complete pack.
        fs::rename(&self.tmp_path, &pack_path).map_err(io(&pack_path))?;
        fs::rename(&idx_tmp, &idx_path).map_err(io(&idx_path))?;
        crate::fsutil::sync_dir(&self.packs_dir).map_err(io(&self.packs_dir))?;
        Ok(Some(name))
    }
}

/// Open a second descriptor on the pack being written, for direct I/O (`O_DIRECT`: writes go
/// from our buffer to the disk, not through the page cache). `None` where the system or the
/// filesystem does not offer it.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// Direct writes go out in pieces of this many bytes, from a buffer aligned to [`DIRECT_ALIGN`].
const DIRECT_CHUNK: usize = 4 << 20;
/// Offsets, lengths and buffer addresses of direct writes are multiples of this (the largest
/// logical block size of common disks).
const DIRECT_ALIGN: usize = 4096;

/// Where the writer thread puts bytes: through the page cache at their offsets (buffered), or
/// gathered in file order into aligned chunks written straight to the disk (direct).
///
/// Why direct: a commit's pack is written once and made durable at once, so going through the
/// page cache only costs a copy and the kernel's writeback, and evicts what was cached. On
/// this machine 450 MB took 1.0-1.5 s written direct in 4 MiB pieces, against 1.6-1.7 s
/// written through the cache and fsynced (docs/benchmarks.md, session 5). A filesystem that
/// refuses direct I/O (EINVAL at open or at the first write) gets buffered writes.
struct Sink<'a> {
    file: &'a File,
    direct: Option<Direct>,
    /// Buffered bytes written since writeback was last started.
    since_kick: u64,
    /// Bytes handed over so far (header included).
    taken: u64,
    /// Where written buffers of small objects go back to (see [`SPARE_BUFFERS`]).
    spare: &'a Mutex<Vec<Vec<u8>>>,
}

struct Direct {
    file: File,
    /// `buf[pad..pad + fill]` are gathered bytes that belong at file offset `base`;
    /// `buf[pad..]` starts on a [`DIRECT_ALIGN`] boundary in memory.
    buf: Vec<u8>,
    pad: usize,
    fill: usize,
    base: u64,
    /// Jobs that arrived before the bytes in front of them (adding threads reserve places in
    /// order but hand them over in any order), by offset.
    early: std::collections::BTreeMap<u64, WriteJob>,
}

impl Direct {
    fn new(file: File) -> Option<Direct> {
        let buf = vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN];
        let pad = buf.as_ptr().align_offset(DIRECT_ALIGN);
        (pad < DIRECT_ALIGN).then_some(Direct { file, buf, pad, fill: 0, base: 0, early: Default::default() })
    }

    /// The file offset the next gathered byte belongs at.
    fn end(&self) -> u64 {
        self.base + self.fill as u64
    }
}

fn is_einval(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

impl<'a> Sink<'a> {
    fn new(file: &'a File, direct: Option<File>, spare: &'a Mutex<Vec<Vec<u8>>>) -> Sink<'a> {
        Sink { file, direct: direct.and_then(Direct::new), since_kick: 0, taken: 0, spare }
    }

    /// Give the buffers of a written job that are worth keeping back to the adding threads.
    fn recycle(&self, job: WriteJob) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        for mut part in job.parts {
            if part.capacity() == SMALL_BUFFER_CAPACITY && spare.len() < SPARE_BUFFERS {
                part.clear();
                spare.push(part);
            }
        }
    }

    fn put(&mut self, job: WriteJob) -> std::io::Result<()> {
        self.taken += job.parts.iter().map(|p| p.len() as u64).sum::<u64>();
        if let Some(d) = &mut self.direct {
            if job.at != d.end() {
                d.early.insert(job.at, job);
                return Ok(());
            }
        }
        let mut next = Some(job);
        while let Some(job) = next {
            let mut at = job.at;
            for part in &job.parts {
                self.put_part(part, at)?;
                at += part.len() as u64;
            }
            self.recycle(job);
            next = match &mut self.direct {
                Some(d) => d.early.remove(&d.end()),
                None => None,
            };
        }
        Ok(())
    }

    /// Bytes that belong at `at` (in direct mode, the end of what was gathered).
    fn put_part(&mut self, bytes: &[u8], at: u64) -> std::io::Result<()> {
        let mut done = 0;
        while done < bytes.len() {
            let Some(d) = &mut self.direct else {
                return self.buffered(&bytes[done..], at + done as u64);
            };
            let take = (bytes.len() - done).min(DIRECT_CHUNK - d.fill);
            d.buf[d.pad + d.fill..][..take].copy_from_slice(&bytes[done..done + take]);
            d.fill += take;
            done += take;
            if d.fill == DIRECT_CHUNK {
                self.flush_direct(DIRECT_CHUNK)?;
            }
        }
        Ok(())
    }

    fn buffered(&mut self, bytes: &[u8], at: u64) -> std::io::Result<()> {
        self.file.write_all_at(bytes, at)?;
        self.since_kick += bytes.len() as u64;
        if self.since_kick >= WRITEBACK_CHUNK {
            start_writeback(self.file);
            self.since_kick = 0;
        }
        Ok(())
    }

    /// Write the first `len` gathered bytes (a multiple of [`DIRECT_ALIGN`], zero-padded past
    /// what was gathered) straight to the disk.
    fn flush_direct(&mut self, len: usize) -> std::io::Result<()> {
        let d = self.direct.as_mut().expect("only called in direct mode");
        match d.file.write_all_at(&d.buf[d.pad..][..len], d.base) {
            Ok(()) => {
                let kept = d.fill.saturating_sub(len);
                d.buf.copy_within(d.pad + len..d.pad + len + kept, d.pad);
                d.base += len as u64;
                d.fill = kept;
                Ok(())
            }
            Err(e) if is_einval(&e) => self.fall_back(),
            Err(e) => Err(e),
        }
    }

    /// The filesystem refused a direct write: write what was gathered, and every job that came
    /// early, through the page cache, and go on that way.
    fn fall_back(&mut self) -> std::io::Result<()> {
        let Some(d) = self.direct.take() else { return Ok(()) };
        self.buffered(&d.buf[d.pad..][..d.fill], d.base)?;
        for (mut at, job) in d.early {
            for part in &job.parts {
                self.buffered(part, at)?;
                at += part.len() as u64;
            }
        }
        Ok(())
    }

    /// Write the last gathered bytes (padded to a whole block, then the file is cut to its
    /// length); returns the bytes handed over.
    fn finish(mut self) -> std::io::Result<u64> {
        if let Some(d) = &mut self.direct {
            if let Some((at, _)) = d.early.first_key_value() {
                // Reserved bytes in front of it never came (a caller stopped half-way).
                return Err(std::io::Error::other(format!("bytes handed over for offset {at} but none up to it after {}", d.end())));
            }
            let (fill, end) = (d.fill, d.end());
            if fill > 0 {
                let padded = fill.next_multiple_of(DIRECT_ALIGN);
                d.buf[d.pad + fill..d.pad + padded].fill(0);
                self.flush_direct(padded)?;
                self.file.set_len(end)?;
            }
        }
        Ok(self.taken)
    }
}

/// The writer thread: write each job where it belongs (see [`Sink`]), and return the bytes
/// written (header included). After an error it keeps taking jobs without writing them, so
/// that no adding thread waits forever.
fn write_jobs(
    file: &File,
    direct: Option<File>,
    jobs: std::sync::mpsc::Receiver<WriteJob>,
    flag: &Mutex<Option<(std::io::ErrorKind, String)>>,
    spare: &Mutex<Vec<Vec<u8>>>,
) -> std::io::Result<u64> {
    let mut sink = Sink::new(file, direct, spare);
    let mut failed = None;
    for job in jobs {
        if failed.is_some() {
            continue;
        }
        if let Err(e) = sink.put(job) {
            *flag.lock().unwrap_or_else(|e| e.into_inner()) = Some((e.kind(), e.to_string()));
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => sink.finish(),
    }
}

/// Tell the kernel that a pack is mostly read in order (export, fsck, gc and push read
/// objects in the order they were written), so that it reads ahead further: a pack written
/// with direct I/O is not in the page cache. Only a hint.
fn advise_sequential(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain call on an open descriptor; offset and length 0 mean the whole file.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Wait for the writeback started last time, then start writing the file's new dirty pages,
/// so that the final fsync has little left to wait for and the writer thread keeps pace with
/// the disk (the adding threads wait for it only when its queue is full). Only a hint: its
/// failure changes nothing about correctness (fsync follows).
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is open for the duration of the calls; length 0 means "to the end".
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WAIT_BEFORE);
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        // Stop the writer thread before its file goes away (its result no longer matters).
        let _ = self.stop_writer();
        // An unfinished pack is garbage; a finished one was renamed away already.
        let _ = fs::remove_file(&self.tmp_path);
    }
}

/// A finished pack and its index, opened for reading.
pub struct Pack {
    pub name: String,
    pub pack_path: PathBuf,
    file: File,
    file_len: u64,
    /// The index file, mapped (see [`crate::fsutil::Mapped`]).
    idx: crate::fsutil::Mapped,
    count: usize,
    version: u32,
    entry_len: usize,
    /// Distinguishes this pack's blocks in [`BLOCK_CACHE`].
    uid: u64,
}

/// Recently decompressed blocks, shared by all packs: (pack uid, block offset) and its raw
/// bytes, most recent last. Reading the members of one block one after another (export,
/// fsck, gc, push) decompresses it once.
static BLOCK_CACHE: Mutex<Vec<CachedBlock>> = Mutex::new(Vec::new());
/// (pack uid, block offset) and the block's raw bytes.
type CachedBlock = ((u64, u64), Arc<Vec<u8>>);
/// Blocks kept in [`BLOCK_CACHE`] (at most 32 × ~144 KiB).
const BLOCK_CACHE_LEN: usize = 32;
static NEXT_PACK_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Pack {
    pub fn open(packs_dir: &Path, name: &str) -> Result<Pack, PackError> {
        let idx_path = packs_dir.join(format!("{name}.idx"));
        let pack_path = packs_dir.join(format!("{name}.pack"));
        let idx = crate::fsutil::Mapped::open(&idx_path).map_err(io(&idx_path))?;
        let IndexShape { version, entry_len, count } = index_shape(&idx).map_err(|e| match e {
            ShapeError::BadMagic => PackError::BadMagic { path: idx_path.clone() },
            ShapeError::Version(version) => PackError::Version { path: idx_path.clone(), version },
            ShapeError::Length(reason) => PackError::CorruptIndex { path: idx_path.clone(), reason },
        })?;
        let file = File::open(&pack_path).map_err(io(&pack_path))?;
        let file_len = file.metadata().map_err(io(&pack_path))?.len();
        advise_sequential(&file);
        let uid = NEXT_PACK_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Pack { name: name.to_string(), pack_path, file, file_len, idx, count, version, entry_len, uid })
    }

    /// Check the index's own checksum.
    pub fn verify_index(&self) -> Result<(), PackError> {
        if !checksum_ok(&self.idx) {
            return Err(PackError::CorruptIndex {
                path: self.pack_path.with_extension("idx"),
                reason: "checksum mismatch".into(),
            });
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Check the pack's own structure against its index: magic and version, that the entries,
    /// each with a header repeating its id (a block's: the hash of its raw bytes), codec and
    /// lengths, exactly tile the file, and that the members of each block exactly tile it.
    /// (Object contents are checked by [`Pack::read`].)
    pub fn verify_layout(&self) -> Result<(), PackError> {
        let bad = |reason: String| PackError::CorruptIndex { path: self.pack_path.clone(), reason };
        let mut head = [0u8; PACK_HEADER_LEN as usize];
        self.file.read_exact_at(&mut head, 0).map_err(|e| PackError::Io { path: self.pack_path.clone(), source: e })?;
        if &head[..8] != PACK_MAGIC || head[8..12] != self.version.to_le_bytes() {
            return Err(bad("bad pack magic, or a version other than its index's".into()));
        }
        let entries = self.entries_in_pack_order();
        let mut pos = PACK_HEADER_LEN;
        for group in entries.chunk_by(|a, b| a.1.offset == b.1.offset) {
            let (id, loc) = group[0];
            if loc.offset != pos + ENTRY_HEADER_LEN {
                return Err(bad(format!("object {id} at offset {} but the previous entry ends at {pos}", loc.offset)));
            }
            let mut h = [0u8; ENTRY_HEADER_LEN as usize];
            self.file.read_exact_at(&mut h, pos).map_err(|e| PackError::Io { path: self.pack_path.clone(), source: e })?;
            let entry_raw_len = if loc.codec == Codec::Block { u64::from(loc.block_len) } else { loc.raw_len };
            let ok = (loc.codec == Codec::Block || h[..32] == id.0)
                && h[32] == loc.codec as u8
                && h[33..41] == entry_raw_len.to_le_bytes()
                && h[41..49] == loc.stored_len.to_le_bytes();
            if !ok {
                return Err(bad(format!("entry header of object {id} at offset {pos} does not match the index")));
            }
            if loc.codec == Codec::Block {
                let mut at = 0u64;
                for (m, l) in group {
                    if l.codec != Codec::Block || l.stored_len != loc.stored_len || l.block_len != loc.block_len || u64::from(l.block_at) != at {
                        return Err(bad(format!("block member {m} at offset {pos} does not fit its block")));
                    }
                    at += l.raw_len;
                }
                if at != u64::from(loc.block_len) {
                    return Err(bad(format!("the members of the block at offset {pos} hold {at} of its {} bytes", loc.block_len)));
                }
            } else if group.len() > 1 {
                return Err(bad(format!("{} objects share offset {}", group.len(), loc.offset)));
            }
            pos = loc.offset + loc.stored_len;
        }
        if pos != self.file_len {
            return Err(bad(format!("{} bytes after the last entry", self.file_len as i128 - pos as i128)));
        }
        Ok(())
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    fn entry(&self, i: usize) -> (ObjectId, Location) {
        let b = &self.idx[IDX_HEADER_LEN + i * self.entry_len..][..self.entry_len];
        let (id, codec, loc) = parse_entry(b, self.version);
        // An unknown codec byte is reported when the object is read.
        (id, if codec.is_some() { loc } else { Location { raw_len: u64::MAX, ..loc } })
    }

    fn id_at(&self, i: usize) -> &[u8] {
        &self.idx[IDX_HEADER_LEN + i * self.entry_len..][..32]
    }

    /// The entry of `id`, if the index has it (see [`find_sorted`]).
    pub fn find(&self, id: &ObjectId) -> Option<Location> {
        find_sorted(self.count, |i| self.id_at(i), &id.0).map(|i| self.entry(i).1)
    }

    /// Ids starting with the given hex prefix.
    pub fn find_prefix(&self, prefix: &str, out: &mut Vec<ObjectId>) {
        let lo = self.lower_bound(prefix);
        for i in lo..self.count {
            let h = hex::encode(self.id_at(i));
            if !h.starts_with(prefix) {
                break;
            }
            out.push(self.entry(i).0);
        }
    }

    fn lower_bound(&self, prefix: &str) -> usize {
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if hex::encode(self.id_at(mid)).as_str() < prefix {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub fn entries(&self) -> impl Iterator<Item = (ObjectId, Location)> + '_ {
        (0..self.count).map(|i| self.entry(i))
    }

    /// The entries in the order their bytes lie in the pack, block members by their place in
    /// the block (an empty member starts where the next one does: it comes first). Reading in
    /// this order decompresses each block once.
    pub fn entries_in_pack_order(&self) -> Vec<(ObjectId, Location)> {
        let mut entries: Vec<(ObjectId, Location)> = self.entries().collect();
        entries.sort_by_key(|e| (e.1.offset, e.1.block_at, e.1.raw_len));
        entries
    }

    /// The stored (still compressed) bytes of an object.
    pub fn read_stored(&self, id: ObjectId, loc: Location) -> Result<Vec<u8>, PackError> {
        let corrupt = |reason: String| PackError::CorruptObject { id, path: self.pack_path.clone(), reason };
        if loc.raw_len > MAX_OBJECT || loc.stored_len > MAX_OBJECT {
            return Err(corrupt("unknown codec or impossible size in index".into()));
        }
        match loc.offset.checked_add(loc.stored_len) {
            Some(end) if end <= self.file_len => {}
            _ => return Err(corrupt(format!("extends past the end of the pack ({} bytes)", self.file_len))),
        }
        let mut buf = vec![0u8; loc.stored_len as usize];
        self.file.read_exact_at(&mut buf, loc.offset).map_err(|e| PackError::Io {
            path: self.pack_path.clone(),
            source: e,
        })?;
        Ok(buf)
    }

    /// Read, decompress and verify an object against its id.
    pub fn read(&self, id: ObjectId, loc: Location) -> Result<Vec<u8>, PackError> {
        let corrupt = |reason: String| PackError::CorruptObject { id, path: self.pack_path.clone(), reason };
        if loc.codec == Codec::Block {
            let block = self.block(id, loc)?;
            return member_verified(id, &loc, &block).map_err(corrupt);
        }
        let stored = self.read_stored(id, loc)?;
        let decoded = match decode(loc.codec, &stored, loc.raw_len).map_err(|e| corrupt(format!("cannot decompress: {e}")))? {
            std::borrow::Cow::Owned(raw) => Some(raw),
            std::borrow::Cow::Borrowed(_) => None,
        };
        // Raw objects are their stored bytes.
        let raw = decoded.unwrap_or(stored);
        check_raw(id, &loc, &raw).map_err(corrupt)?;
        Ok(raw)
    }

    /// The decompressed block that holds member `id` (from [`BLOCK_CACHE`] if it is there).
    fn block(&self, id: ObjectId, loc: Location) -> Result<Arc<Vec<u8>>, PackError> {
        let key = (self.uid, loc.offset);
        let cache = || BLOCK_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut c = cache();
            if let Some(i) = c.iter().position(|(k, _)| *k == key) {
                let hit = c.remove(i);
                let block = Arc::clone(&hit.1);
                c.push(hit);
                return Ok(block);
            }
        }
        let stored = self.read_stored(id, loc)?;
        let block = Arc::new(decode_block(&loc, &stored).map_err(|reason| PackError::CorruptObject { id, path: self.pack_path.clone(), reason })?);
        let mut c = cache();
        if c.len() >= BLOCK_CACHE_LEN {
            c.remove(0);
        }
        c.push((key, Arc::clone(&block)));
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn find_sorted_finds_every_id_and_no_other() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            rng
        };
        let mut random_id = |prefix: Option<u64>| {
            let mut b = [0u8; 32];
            for c in b.chunks_mut(8) {
                c.copy_from_slice(&next().to_be_bytes());
            }
            if let Some(p) = prefix {
                b[..8].copy_from_slice(&p.to_be_bytes());
            }
            b
        };
        // Even spread (real ids), clustered first bytes, all first 8 bytes equal, the extreme
        // keys, and sizes around the switch to plain halving.
        let sets: Vec<Vec<[u8; 32]>> = vec![
            (0..5000).map(|_| random_id(None)).collect(),
            (0..3000).map(|i| random_id(Some(if i % 3 == 0 { 7 } else { u64::MAX - (i % 5) }))).collect(),
            (0..500).map(|_| random_id(Some(42))).collect(),
            vec![random_id(Some(0)), random_id(Some(u64::MAX)), random_id(Some(1)), random_id(Some(u64::MAX - 1))],
            (0..9).map(|_| random_id(None)).collect(),
            vec![random_id(None)],
            vec![],
        ];
        for mut ids in sets {
            ids.sort();
            ids.dedup();
            let at = |i: usize| &ids[i][..];
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(find_sorted(ids.len(), at, id), Some(i));
                // Same first 8 bytes, different rest: absent.
                let mut other = *id;
                other[31] ^= 1;
                if ids.binary_search(&other).is_err() {
                    assert_eq!(find_sorted(ids.len(), at, &other), None);
                }
            }
            for p in [None, Some(0), Some(u64::MAX), Some(7), Some(42)] {
                let absent = random_id(p);
                assert_eq!(find_sorted(ids.len(), at, &absent), ids.binary_search(&absent).ok());
            }
        }
    }

    /// Codec 2's layout (docs/format.md): low bytes, high bytes, odd tail byte.
    fn shuffle2(v: &[u8]) -> Vec<u8> {
        let half = v.len() / 2;
        let mut out: Vec<u8> = (0..half).map(|i| v[2 * i]).collect();
        out.extend((0..half).map(|i| v[2 * i + 1]));
        out.extend(&v[2 * half..]);
        out
    }

    #[test]
    fn unshuffle_undoes_the_layout_of_codec_2() {
        for n in [0usize, 1, 2, 3, 10, 11, 15, 16, 17, 31, 32, 33, 47, 1001, 4096] {
            let v: Vec<u8> = (0..n).map(|i| (i * 37 + i / 256) as u8).collect();
            assert_eq!(unshuffle2(&shuffle2(&v)), v, "n = {n}");
        }
    }

    /// [`delta16`] as docs/format.md words it, one sample at a time.
    fn delta16_reference(v: &[u8]) -> Vec<u8> {
        let half = v.len() / 2;
        let z: Vec<u16> = (0..half)
            .map(|i| {
                let prev = if i == 0 { 0 } else { u16::from_le_bytes([v[2 * i - 2], v[2 * i - 1]]) };
                let d = u16::from_le_bytes([v[2 * i], v[2 * i + 1]]).wrapping_sub(prev) as i16;
                ((d << 1) ^ (d >> 15)) as u16
            })
            .collect();
        let mut out: Vec<u8> = z.iter().map(|z| *z as u8).collect();
        out.extend(z.iter().map(|z| (*z >> 8) as u8));
        out.extend(&v[2 * half..]);
        out
    }

    #[test]
    fn delta16_matches_its_definition_and_undelta16_undoes_it() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in [0usize, 1, 2, 3, 4, 5, 30, 31, 32, 33, 34, 35, 63, 64, 65, 66, 67, 1001, 4096, 70_001] {
            // Smooth runs, jumps of either sign across the whole range (wrapping), and noise.
            let v: Vec<u8> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match (i / 40) % 3 {
                        0 => (i / 3) as u8,
                        1 => x as u8,
                        _ => [0x00, 0xff, 0x80, 0x7f][x as usize % 4],
                    }
                })
                .collect();
            let expected = delta16_reference(&v);
            assert_eq!(delta16(&v), expected, "n = {n}");
            assert_eq!(undelta16(&expected), v, "n = {n}");
            // The portable paths, whatever the machine running the tests.
            let half = n / 2;
            let (mut lo, mut hi) = (vec![0u8; half], vec![0u8; half]);
            delta16_portable(&v, &mut lo, &mut hi, 0..half);
            assert_eq!(lo[..], expected[..half], "n = {n}");
            assert_eq!(hi[..], expected[half..2 * half], "n = {n}");
            let mut out = vec![0u8; 2 * half];
            undelta16_portable(&expected[..half], &expected[half..2 * half], &mut out, 0, 0);
            assert_eq!(out[..], v[..2 * half], "n = {n}");
        }
        // Every difference maps to its zigzag code and back.
        for d in 0..=u16::MAX {
            assert_eq!(unzigzag(zigzag(d)), d);
        }
        assert_eq!([zigzag(0), zigzag(u16::MAX), zigzag(1), zigzag(0xfffe)], [0, 1, 2, 3]);
    }

    /// A temp folder with an empty `packs` folder in it.
    fn packs_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let packs = dir.path().join("packs");
        fs::create_dir(&packs).unwrap();
        (dir, packs)
    }

    /// Noisy 16-bit samples like CT: a smooth high byte, a noisy low byte.
    fn noisy_pixels(n: usize) -> Vec<u8> {
        let mut x = 0x1234_5678_u64;
        (0..n)
            .flat_map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (1000 + (i % 512) as u16 / 4 + (x % 40) as u16).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn pixel_data_is_two_zstd_frames_of_differences_that_decode_as_one() {
        for n in [4096usize, 512 * 512] {
            let mut raw = noisy_pixels(n);
            for odd in [false, true] {
                if odd {
                    raw.push(0x5a);
                }
                let e = encode(ObjectId::of(&raw), &raw, Hint::Pixels16);
                assert_eq!(e.codec, Codec::Delta16Zstd, "n = {n}");
                assert!(e.data.len() < raw.len() * 3 / 4, "noisy 16-bit data shrinks: {} of {}", e.data.len(), raw.len());
                // The low-byte plane is the first frame; the high bytes (and odd byte) the second.
                let first = zstd::zstd_safe::find_frame_compressed_size(&e.data).unwrap();
                assert!(first < e.data.len());
                let low = zstd::bulk::decompress(&e.data[..first], raw.len()).unwrap();
                assert_eq!(low, delta16_reference(&raw)[..raw.len() / 2]);
                assert_eq!(decode(e.codec, &e.data, e.raw_len).unwrap(), raw);
                // Smaller than the samples' own bytes split and compressed as codec 2 did.
                let planes = shuffle2(&raw);
                let (lo, hi) = planes.split_at(raw.len() / 2);
                let before = zstd::bulk::compress(lo, -20).unwrap().len() + zstd::bulk::compress(hi, -5).unwrap().len();
                assert!(e.data.len() < before, "{} against {before}", e.data.len());
            }
        }
    }

    #[test]
    fn pixel_data_of_earlier_stores_still_decodes() {
        let raw = noisy_pixels(10_000);
        // One frame at level -5 (version 1), and the two planes as two frames (version 2).
        let one_frame = zstd::bulk::compress(&shuffle2(&raw), -5).unwrap();
        assert_eq!(decode(Codec::Shuffle2Zstd, &one_frame, raw.len() as u64).unwrap(), raw);
        let planes = shuffle2(&raw);
        let (lo, hi) = planes.split_at(raw.len() / 2);
        let mut two = zstd::bulk::compress(lo, -20).unwrap();
        two.extend(zstd::bulk::compress(hi, -5).unwrap());
        assert_eq!(decode(Codec::Shuffle2Zstd, &two, raw.len() as u64).unwrap(), raw);
    }

    #[test]
    fn the_sink_writes_jobs_handed_over_in_any_order_direct_or_buffered() {
        let dir = tempfile::tempdir().unwrap();
        // Jobs of 1 byte to 3 chunks, in 1 to 3 parts, that tile 11.5 MiB (not a whole number
        // of blocks), handed over in a scrambled order within windows of 8 jobs.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let total = 11 * (1 << 20) + (1 << 19) + 5;
        let expected: Vec<u8> = (0..total).map(|_| rnd(256) as u8).collect();
        let mut jobs = Vec::new();
        let mut at = 0usize;
        while at < total {
            let len = match rnd(4) {
                0 => 1 + rnd(100) as usize,
                1 => 1 + rnd(70_000) as usize,
                _ => 1 + rnd(3 * DIRECT_CHUNK as u64) as usize,
            }
            .min(total - at);
            let cut = if len > 2 { 1 + rnd(len as u64 - 1) as usize } else { len };
            let parts = vec![expected[at..at + cut].to_vec(), expected[at + cut..at + len].to_vec()];
            jobs.push(WriteJob { at: at as u64, parts });
            at += len;
        }
        for w in jobs.chunks_mut(8) {
            w.reverse();
            w.rotate_left(3);
        }
        for direct in [true, false] {
            let path = dir.path().join(format!("pack-{direct}"));
            let file = File::create(&path).unwrap();
            let direct_file = if direct { open_direct(&path) } else { None };
            if direct && direct_file.is_none() {
                eprintln!("direct I/O is not offered for {}: only the buffered path was tested", path.display());
                continue;
            }
            let spare = Mutex::new(Vec::new());
            let mut sink = Sink::new(&file, direct_file, &spare);
            assert_eq!(sink.direct.is_some(), direct);
            for j in &jobs {
                sink.put(WriteJob { at: j.at, parts: j.parts.clone() }).unwrap();
            }
            // Direct writes were not refused on the way (no fall back to buffered).
            assert_eq!(sink.direct.is_some(), direct);
            assert_eq!(sink.finish().unwrap(), total as u64);
            assert_eq!(fs::read(&path).unwrap(), expected, "direct = {direct}");
        }
        // A direct write the filesystem refuses (here: from a buffer one byte off its
        // alignment, which Linux refuses with EINVAL) falls back to buffered writes, and
        // nothing gathered or early is lost.
        let path = dir.path().join("refused");
        let file = File::create(&path).unwrap();
        if let Some(d) = open_direct(&path) {
            let spare = Mutex::new(Vec::new());
            let mut sink = Sink::new(&file, Some(d), &spare);
            sink.direct.as_mut().unwrap().pad += 1;
            for j in &jobs {
                sink.put(WriteJob { at: j.at, parts: j.parts.clone() }).unwrap();
            }
            let fell_back = sink.direct.is_none();
            assert_eq!(sink.finish().unwrap(), total as u64);
            assert_eq!(fs::read(&path).unwrap(), expected);
            if !fell_back {
                eprintln!("{}: the filesystem took unaligned direct writes; the fall back was not exercised", path.display());
            }
        }
        // A job whose place was never reached is an error, not a silent hole.
        let path = dir.path().join("gap");
        let file = File::create(&path).unwrap();
        if let Some(d) = open_direct(&path) {
            let spare = Mutex::new(Vec::new());
            let mut sink = Sink::new(&file, Some(d), &spare);
            sink.put(WriteJob { at: 0, parts: vec![vec![1; 10]] }).unwrap();
            sink.put(WriteJob { at: 20, parts: vec![vec![2; 10]] }).unwrap();
            assert!(sink.finish().unwrap_err().to_string().contains("offset 20"));
        }
    }

    #[test]
    fn many_threads_add_at_once_and_every_object_reads_back() {
        for direct in [true, false] {
            many_threads_add_at_once(direct);
        }
    }

    fn many_threads_add_at_once(direct: bool) {
        let (dir, packs) = packs_dir();
        let w = PackWriter::create_with(&packs, dir.path(), direct).unwrap();
        // Small objects (gathered in the buffer) and large ones (written as they are), some
        // added by several threads at once (kept once).
        let objs: Vec<Vec<u8>> = (0..400u32)
            .map(|i| {
                let len = if i % 5 == 0 { DIRECT_WRITE + i as usize * 131 } else { 1 + i as usize * 37 };
                (0..len).map(|k| ((k as u32).wrapping_mul(2654435761) ^ i).to_le_bytes()[k % 4]).collect()
            })
            .collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (w, objs) = (&w, &objs);
                s.spawn(move || {
                    for (i, o) in objs.iter().enumerate() {
                        if i % 4 == t || i % 7 == 0 {
                            let hint = if i % 3 == 0 { Hint::Pixels16 } else { Hint::Generic };
                            w.add(encode(ObjectId::of(o), o, hint)).unwrap();
                        }
                    }
                });
            }
        });
        assert_eq!(w.len(), objs.len());
        let spare = Arc::clone(&w.spare);
        let name = w.finish().unwrap().unwrap();
        // The writer thread gave the full buffers of small objects back (over 2 MiB of them
        // went through), and kept nothing else: not the data of a large object.
        let spare = spare.lock().unwrap();
        assert!(!spare.is_empty() && spare.len() <= SPARE_BUFFERS, "{} spare buffers", spare.len());
        assert!(spare.iter().all(|b| b.is_empty() && b.capacity() == SMALL_BUFFER_CAPACITY));
        let p = Pack::open(&packs, &name).unwrap();
        p.verify_index().unwrap();
        p.verify_layout().unwrap();
        assert_eq!(p.len(), objs.len());
        for o in &objs {
            let id = ObjectId::of(o);
            assert_eq!(&p.read(id, p.find(&id).unwrap()).unwrap(), o);
        }
    }

    /// Only the writer's own buffers of small objects go back for reuse, emptied, and at most
    /// [`SPARE_BUFFERS`] of them; the data of a large object, whatever its size, does not.
    #[test]
    fn only_buffers_of_small_objects_are_kept_for_reuse() {
        let file = tempfile::tempfile().unwrap();
        let spare = Mutex::new(Vec::new());
        let sink = Sink::new(&file, None, &spare);
        let small = || {
            let mut b = Vec::with_capacity(SMALL_BUFFER_CAPACITY);
            b.extend_from_slice(&[7; BUFFER_LEN]);
            b
        };
        let large = vec![1u8; BUFFER_LEN + 300_000];
        let larger = vec![2u8; SMALL_BUFFER_CAPACITY * 2];
        sink.recycle(WriteJob { at: 0, parts: vec![large, small(), larger, vec![3; 10]] });
        assert_eq!(spare.lock().unwrap().len(), 1);
        sink.recycle(WriteJob { at: 0, parts: (0..SPARE_BUFFERS + 2).map(|_| small()).collect() });
        let spare = spare.lock().unwrap();
        assert_eq!(spare.len(), SPARE_BUFFERS);
        assert!(spare.iter().all(|b| b.is_empty() && b.capacity() == SMALL_BUFFER_CAPACITY));
    }

    #[test]
    fn an_empty_writer_leaves_nothing_behind() {
        let (dir, packs) = packs_dir();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        assert!(PackWriter::create(&packs, &tmp).unwrap().finish().unwrap().is_none());
        // Dropped without finishing: its temp file goes too.
        let w = PackWriter::create(&packs, &tmp).unwrap();
        w.add(encode(ObjectId::of(b"x"), b"x", Hint::Generic)).unwrap();
        drop(w);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(fs::read_dir(&packs).unwrap().count(), 0);
    }

    /// Small DICOM-header-like objects: mostly the same bytes, a few that differ.
    fn header_like(i: u32) -> Vec<u8> {
        let mut h = b"DICM\x02\x00\x00\x00UL\x04\x00".repeat(40);
        h.extend_from_slice(format!("FAKE^PATIENT^{i:05} 1.2.826.0.1.3680043.8.498.{i}").as_bytes());
        h.extend((0..(i % 300)).map(|k| (k * 7) as u8));
        h
    }

    #[test]
    fn small_objects_share_blocks_and_cost_less_than_alone() {
        let (dir, packs) = packs_dir();
        let w = PackWriter::create(&packs, dir.path()).unwrap();
        let mut objs: Vec<Vec<u8>> = (0..3000).map(header_like).collect();
        std::thread::scope(|s| {
            for t in 0..3 {
                let (w, objs) = (&w, &objs);
                s.spawn(move || {
                    for o in objs.iter().skip(t) {
                        w.add(encode(ObjectId::of(o), o, Hint::Generic)).unwrap();
                    }
                });
            }
        });
        // An empty member starts where the next one does; here the next one's id sorts before
        // it (the index is in id order, the layout check must not depend on it).
        let empty = ObjectId::of(b"");
        let next = (0u8..).map(|k| vec![k; 3]).find(|o| ObjectId::of(o) < empty).unwrap();
        for o in [vec![], next] {
            w.add(encode(ObjectId::of(&o), &o, Hint::Generic)).unwrap();
            objs.push(o);
        }
        assert_eq!(w.len(), objs.len());
        let name = w.finish().unwrap().unwrap();
        let p = Pack::open(&packs, &name).unwrap();
        p.verify_index().unwrap();
        p.verify_layout().unwrap();
        let mut offsets = HashSet::new();
        for o in &objs {
            let id = ObjectId::of(o);
            let loc = p.find(&id).unwrap();
            assert_eq!(loc.codec, Codec::Block);
            offsets.insert(loc.offset);
            assert_eq!(&p.read(id, loc).unwrap(), o);
        }
        let raw: usize = objs.iter().map(Vec::len).sum();
        assert!(offsets.len() <= raw / BLOCK_LEN + 3, "{} blocks for {raw} bytes", offsets.len());
        // Compressed one by one, these would take far more.
        let alone: usize = objs.iter().map(|o| zstd::bulk::compress(o, LEVEL).unwrap().len()).sum();
        let packed = fs::metadata(&p.pack_path).unwrap().len() as usize;
        assert!(packed * 4 < alone, "blocks {packed} bytes, one by one {alone}");
        // du's shares of the members add up to their blocks' stored bytes (each rounded down).
        let shares: u64 = p.entries().map(|(_, l)| l.stored_share()).sum();
        let blocks: HashMap<u64, u64> = p.entries().map(|(_, l)| (l.offset, l.stored_len)).collect();
        let stored: u64 = blocks.values().sum();
        assert!(shares <= stored && shares + objs.len() as u64 >= stored, "{shares} of {stored}");
    }

    #[test]
    fn block_members_are_copied_into_new_blocks_and_damage_names_the_member() {
        let (dir, packs) = packs_dir();
        let w = PackWriter::create(&packs, dir.path()).unwrap();
        let objs: Vec<Vec<u8>> = (0..200).map(header_like).collect();
        let big = noisy_pixels(40_000);
        for o in &objs {
            w.add(encode(ObjectId::of(o), o, Hint::Generic)).unwrap();
        }
        w.add(encode(ObjectId::of(&big), &big, Hint::Pixels16)).unwrap();
        let a = Pack::open(&packs, &w.finish().unwrap().unwrap()).unwrap();
        // gc and push copy objects pack to pack: every second one here.
        let w = PackWriter::create(&packs, dir.path()).unwrap();
        let keep: Vec<&Vec<u8>> = objs.iter().step_by(2).chain([&big]).collect();
        for o in &keep {
            let id = ObjectId::of(o);
            w.copy_from(&a, id, a.find(&id).unwrap()).unwrap();
        }
        let b = Pack::open(&packs, &w.finish().unwrap().unwrap()).unwrap();
        b.verify_layout().unwrap();
        assert_eq!(b.len(), keep.len());
        for o in &keep {
            let id = ObjectId::of(o);
            assert_eq!(&b.read(id, b.find(&id).unwrap()).unwrap(), *o);
        }
        // Damage the block's compressed bytes: a member read fails and names the member.
        let id = ObjectId::of(&objs[0]);
        let loc = b.find(&id).unwrap();
        let mut bytes = fs::read(&b.pack_path).unwrap();
        bytes[(loc.offset + loc.stored_len / 2) as usize] ^= 0x55;
        fs::write(&b.pack_path, &bytes).unwrap();
        let b = Pack::open(&packs, &b.name).unwrap();
        let err = b.read(id, loc).unwrap_err().to_string();
        assert!(err.contains(&id.hex()), "{err}");
        // The layout still tiles; damage inside a block is content damage, for read to find.
        b.verify_layout().unwrap();
    }

    /// A pack and its index of an older `version`, made by hand: each object's raw bytes,
    /// codec and stored bytes (no blocks).
    fn handmade_pack(packs: &Path, name: &str, version: u32, objs: &[(Vec<u8>, Codec, Vec<u8>)]) -> Vec<u8> {
        let mut pack = PACK_MAGIC.to_vec();
        pack.extend_from_slice(&version.to_le_bytes());
        let mut entries = Vec::new();
        for (raw, codec, data) in objs {
            let id = ObjectId::of(raw);
            pack.extend_from_slice(&id.0);
            pack.push(*codec as u8);
            pack.extend_from_slice(&(raw.len() as u64).to_le_bytes());
            pack.extend_from_slice(&(data.len() as u64).to_le_bytes());
            entries.push((id, pack.len() as u64, data.len() as u64, raw.len() as u64, *codec as u8));
            pack.extend_from_slice(data);
        }
        entries.sort();
        let mut idx = IDX_MAGIC.to_vec();
        idx.extend_from_slice(&version.to_le_bytes());
        idx.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (id, off, stored, raw, codec) in &entries {
            idx.extend_from_slice(&id.0);
            for v in [off, stored, raw] {
                idx.extend_from_slice(&v.to_le_bytes());
            }
            idx.push(*codec);
            if version >= 2 {
                idx.extend_from_slice(&[0; 8]);
            }
        }
        let sum = blake3::hash(&idx);
        idx.extend_from_slice(sum.as_bytes());
        fs::write(packs.join(format!("{name}.pack")), &pack).unwrap();
        fs::write(packs.join(format!("{name}.idx")), &idx).unwrap();
        idx
    }

    #[test]
    fn version_1_and_2_packs_still_read_and_codec_2_in_version_3() {
        let (_dir, packs) = packs_dir();
        let header = header_like(3);
        let pixels = noisy_pixels(5000);
        let planes = shuffle2(&pixels);
        let (lo, hi) = planes.split_at(pixels.len() / 2);
        let mut two_frames = zstd::bulk::compress(lo, -20).unwrap();
        two_frames.extend(zstd::bulk::compress(hi, -5).unwrap());
        let objs = vec![
            (b"small raw".to_vec(), Codec::Raw, b"small raw".to_vec()),
            (header.clone(), Codec::Zstd, zstd::bulk::compress(&header, 1).unwrap()),
            (pixels.clone(), Codec::Shuffle2Zstd, two_frames),
        ];
        // Version 3 packs hold codec 2 too: fetch and gc copy objects as they were stored.
        for version in [1, 2, 3] {
            let name = format!("pack-v{version}");
            let idx = handmade_pack(&packs, &name, version, &objs);
            let p = Pack::open(&packs, &name).unwrap();
            p.verify_index().unwrap();
            p.verify_layout().unwrap();
            assert_eq!(parse_index(&idx).unwrap().len(), 3);
            for (raw, _, _) in &objs {
                let id = ObjectId::of(raw);
                assert_eq!(&p.read(id, p.find(&id).unwrap()).unwrap(), raw);
            }
            // A version this cohort does not know is refused with its number.
            let mut future = idx.clone();
            future[8..12].copy_from_slice(&9u32.to_le_bytes());
            fs::write(packs.join(format!("{name}.idx")), &future).unwrap();
            let err = Pack::open(&packs, &name).err().unwrap().to_string();
            assert!(err.contains("version 9"), "{err}");
        }
        // Delta-coded pixel data came with version 3: an older index naming it is corrupt.
        let e = encode(ObjectId::of(&pixels), &pixels, Hint::Pixels16);
        assert_eq!(e.codec, Codec::Delta16Zstd);
        let idx = handmade_pack(&packs, "pack-v2-delta", 2, &[(pixels.clone(), e.codec, e.data.clone())]);
        assert!(parse_index(&idx).unwrap_err().contains("unknown codec 4"));
        let idx = handmade_pack(&packs, "pack-v3-delta", 3, &[(pixels.clone(), e.codec, e.data)]);
        assert_eq!(parse_index(&idx).unwrap().len(), 1);
        let p = Pack::open(&packs, "pack-v3-delta").unwrap();
        assert_eq!(p.read(ObjectId::of(&pixels), p.find(&ObjectId::of(&pixels)).unwrap()).unwrap(), pixels);
    }

    #[test]
    fn write_then_read_and_detect_corruption() {
        let (dir, packs) = packs_dir();
        let w = PackWriter::create(&packs, dir.path()).unwrap();
        let objs: Vec<Vec<u8>> = vec![b"hello".to_vec(), vec![7u8; 10_000], (0..5000u32).flat_map(|x| (x as u16).to_le_bytes()).collect()];
        let hints = [Hint::Generic, Hint::Generic, Hint::Pixels16];
        for (o, h) in objs.iter().zip(hints) {
            w.add(encode(ObjectId::of(o), o, h)).unwrap();
        }
        let name = w.finish().unwrap().unwrap();
        let p = Pack::open(&packs, &name).unwrap();
        p.verify_index().unwrap();
        for o in &objs {
            let id = ObjectId::of(o);
            assert_eq!(&p.read(id, p.find(&id).unwrap()).unwrap(), o);
        }
        assert!(p.find(&ObjectId::of(b"nope")).is_none());
        // Flip a byte of the big object's stored data: read must fail, naming the object.
        let id = ObjectId::of(&objs[1]);
        let loc = p.find(&id).unwrap();
        let mut bytes = fs::read(&p.pack_path).unwrap();
        bytes[loc.offset as usize] ^= 0xff;
        fs::write(&p.pack_path, &bytes).unwrap();
        let p = Pack::open(&packs, &name).unwrap();
        let err = p.read(id, loc).unwrap_err().to_string();
        assert!(err.contains(&id.hex()), "{err}");
    }
}
