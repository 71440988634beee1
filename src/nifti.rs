//! NIfTI-1 single-file (`.nii` / `.nii.gz`) encoding and decoding.
//!
//! This module owns the on-disk NIfTI-1 format for cohort: [`write_nifti`]
//! produces deterministic little-endian files (identical input gives identical
//! bytes, gzip with mtime 0 and no file name) carrying both an sform and a
//! matching qform, and [`read_nifti`] decodes 3D files of the common integer
//! and float datatypes in either byte order into `f64` voxel values plus the
//! voxel → RAS+ affine. It knows nothing about DICOM; see `crate::volume`.

use std::io::{Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};
use thiserror::Error;

/// Size of the NIfTI-1 header in bytes.
const HEADER_LEN: usize = 348;
/// Offset of the voxel data in files written here (header + 4-byte extension flag).
const VOX_OFFSET: usize = 352;
/// Largest value a NIfTI-1 `dim[]` entry can hold.
const MAX_DIM: usize = i16::MAX as usize;

/// Errors produced while encoding or decoding NIfTI-1 files.
#[derive(Debug, Error)]
pub enum NiftiError {
    /// gzip compression or decompression failed.
    #[error("gzip stream is corrupt or unreadable: {0}")]
    Gzip(#[source] std::io::Error),
    /// The (decompressed) input is shorter than a NIfTI-1 header.
    #[error("input is too short for a NIfTI-1 header: {len} bytes, need at least {need}")]
    TooShort { len: usize, need: usize },
    /// `sizeof_hdr` is 348 in neither byte order.
    #[error("not a NIfTI-1 file: sizeof_hdr is {found} (expected 348 in either byte order)")]
    BadSizeofHdr { found: i32 },
    /// The magic is not `n+1\0` (single-file NIfTI-1).
    #[error("bad NIfTI-1 magic {found:?} (expected \"n+1\\0\" for a single-file .nii)")]
    BadMagic { found: [u8; 4] },
    /// The datatype code is not one of u8, i8, i16, u16, i32, u32, f32, f64.
    #[error("unsupported NIfTI datatype code {code}")]
    UnsupportedDatatype { code: i16 },
    /// The image has more than three non-singleton dimensions.
    #[error("image is not 3D: dim = {dim:?} (dimensions beyond the 3rd must be 1)")]
    NotThreeD { dim: [i16; 8] },
    /// The dimensions are zero, negative or too large.
    #[error("invalid dimensions {dims:?}: {reason}")]
    InvalidDims { dims: [i64; 3], reason: String },
    /// `vox_offset` points inside the header or is not a number.
    #[error("invalid vox_offset {vox_offset} (must be a finite number >= 348)")]
    BadVoxOffset { vox_offset: f32 },
    /// The file holds fewer data bytes than its dimensions require.
    #[error("voxel data truncated: dims {dims:?} of {bytes_per_voxel}-byte voxels need {expected} bytes at offset {offset}, but only {available} are present")]
    DataTooShort {
        dims: [usize; 3],
        bytes_per_voxel: usize,
        offset: usize,
        expected: usize,
        available: usize,
    },
    /// On write: the number of values does not match the dimensions.
    #[error("data has {got} values but dims {dims:?} need {expected}")]
    DataLength {
        dims: [usize; 3],
        expected: usize,
        got: usize,
    },
    /// On write: the affine holds a non-finite number.
    #[error("affine entry [{row}][{col}] is {value}, not a finite number")]
    InvalidAffine { row: usize, col: usize, value: f64 },
}

/// Voxel values of a NIfTI image to be written, x fastest.
#[derive(Debug, Clone, PartialEq)]
pub enum NiftiData {
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    F32(Vec<f32>),
}

impl NiftiData {
    /// Number of voxel values held.
    pub fn len(&self) -> usize {
        match self {
            NiftiData::U8(v) => v.len(),
            NiftiData::I16(v) => v.len(),
            NiftiData::U16(v) => v.len(),
            NiftiData::I32(v) => v.len(),
            NiftiData::F32(v) => v.len(),
        }
    }

    /// True when no values are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// NIfTI datatype code and bits per voxel.
    fn code_and_bitpix(&self) -> (i16, i16) {
        match self {
            NiftiData::U8(_) => (DT_UINT8, 8),
            NiftiData::I16(_) => (DT_INT16, 16),
            NiftiData::U16(_) => (DT_UINT16, 16),
            NiftiData::I32(_) => (DT_INT32, 32),
            NiftiData::F32(_) => (DT_FLOAT32, 32),
        }
    }

    fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            NiftiData::U8(v) => out.extend_from_slice(v),
            NiftiData::I16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NiftiData::U16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NiftiData::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NiftiData::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }
}

/// A 3D image to be written as NIfTI-1.
#[derive(Debug, Clone, PartialEq)]
pub struct Nifti {
    /// nx, ny, nz; x fastest in `data`.
    pub dims: [usize; 3],
    /// Voxel spacing in mm. Only used when the affine has a zero-length
    /// column; otherwise `pixdim[1..=3]` is written as the affine's column
    /// lengths so that qform and sform describe the same grid.
    pub pixdim: [f64; 3],
    /// Voxel (i, j, k, 1) → RAS+ world mm, written as the sform (and qform).
    pub affine: [[f64; 4]; 4],
    pub data: NiftiData,
}

/// A decoded 3D NIfTI image.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiVolume {
    pub dims: [usize; 3],
    /// Voxel → RAS+ world mm: sform if `sform_code > 0`, else qform if
    /// `qform_code > 0`, else `diag(pixdim)`.
    pub affine: [[f64; 4]; 4],
    /// Voxel values, x fastest, with `scl_slope`/`scl_inter` applied when
    /// the slope is finite and non-zero.
    pub values: Vec<f64>,
}

const DT_UINT8: i16 = 2;
const DT_INT16: i16 = 4;
const DT_INT32: i16 = 8;
const DT_FLOAT32: i16 = 16;
const DT_FLOAT64: i16 = 64;
const DT_INT8: i16 = 256;
const DT_UINT16: i16 = 512;
const DT_UINT32: i16 = 768;

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Encode `n` as a single-file NIfTI-1 image (little endian, vox_offset 352,
/// sform_code = qform_code = 1, mm units), gzip-compressed if `gzip`.
///
/// Output is deterministic. Fails if a dimension is 0 or > 32767, if the
/// number of values does not match the dimensions, or if the affine is not
/// finite.
pub fn write_nifti(n: &Nifti, gzip: bool) -> Result<Vec<u8>, NiftiError> {
    let dims = n.dims;
    let as_i64 = dims.map(|d| i64::try_from(d).unwrap_or(i64::MAX));
    if let Some(d) = dims.iter().find(|&&d| d == 0 || d > MAX_DIM) {
        return Err(NiftiError::InvalidDims {
            dims: as_i64,
            reason: format!("each dimension must be in 1..={MAX_DIM}, got {d}"),
        });
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NiftiError::InvalidDims {
            dims: as_i64,
            reason: "voxel count overflows".into(),
        })?;
    if n.data.len() != expected {
        return Err(NiftiError::DataLength {
            dims,
            expected,
            got: n.data.len(),
        });
    }
    for (row, r) in n.affine.iter().enumerate() {
        if let Some((col, &value)) = r.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(NiftiError::InvalidAffine { row, col, value });
        }
    }

    let (datatype, bitpix) = n.data.code_and_bitpix();
    let quat = quatern_from_affine(&n.affine);

    let mut h = vec![0u8; VOX_OFFSET];
    put_i32(&mut h, 0, HEADER_LEN as i32);
    h[38] = b'r';
    let dim: [i16; 8] = [
        3,
        dims[0] as i16,
        dims[1] as i16,
        dims[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (i, d) in dim.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, *d);
    }
    put_i16(&mut h, 70, datatype);
    put_i16(&mut h, 72, bitpix);
    let (qfac, zooms) = match &quat {
        Some(q) => (q.qfac, q.zooms),
        None => (1.0, n.pixdim),
    };
    let pixdim = [qfac, zooms[0], zooms[1], zooms[2], 1.0, 1.0, 1.0, 1.0];
    for (i, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, *p as f32);
    }
    put_f32(&mut h, 108, VOX_OFFSET as f32);
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 2; // xyzt_units: NIFTI_UNITS_MM, no time unit
    if let Some(q) = &quat {
        put_i16(&mut h, 252, 1); // qform_code: scanner
        put_f32(&mut h, 256, q.b as f32);
        put_f32(&mut h, 260, q.c as f32);
        put_f32(&mut h, 264, q.d as f32);
    }
    put_i16(&mut h, 254, 1); // sform_code: scanner
    put_f32(&mut h, 268, n.affine[0][3] as f32);
    put_f32(&mut h, 272, n.affine[1][3] as f32);
    put_f32(&mut h, 276, n.affine[2][3] as f32);
    for (r, row) in n.affine.iter().take(3).enumerate() {
        for (c, v) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, *v as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    // bytes 348..352: extension flag, all zero.

    let mut out = h;
    out.reserve(expected * (bitpix as usize / 8));
    n.data.write_le(&mut out);

    if !gzip {
        return Ok(out);
    }
    // Level 2: on CT volumes (docs/benchmarks.md, training exports) 1.5 % larger than level 6
    // and a quarter faster; zlib-rs's level 1 is another algorithm, twice as fast again but
    // 40 % larger on noisy CT.
    let mut enc = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::new(2));
    enc.write_all(&out).map_err(NiftiError::Gzip)?;
    enc.finish().map_err(NiftiError::Gzip)
}

fn put_i16(h: &mut [u8], off: usize, v: i16) {
    h[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_i32(h: &mut [u8], off: usize, v: i32) {
    h[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_f32(h: &mut [u8], off: usize, v: f32) {
    h[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

type M3 = [[f64; 3]; 3];

/// Quaternion parameters of a qform (NIfTI-1 convention, `a >= 0`).
struct Quatern {
    b: f64,
    c: f64,
    d: f64,
    qfac: f64,
    zooms: [f64; 3],
}

/// NIfTI-1 `mat44_to_quatern`: voxel sizes from the column lengths, the
/// nearest rotation by polar decomposition, `qfac = -1` for left-handed
/// grids. `None` when a column has zero length (no qform possible).
fn quatern_from_affine(a: &[[f64; 4]; 4]) -> Option<Quatern> {
    let mut m: M3 = [[0.0; 3]; 3];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = a[r][c];
        }
    }
    let mut zooms = [0.0; 3];
    for (c, z) in zooms.iter_mut().enumerate() {
        let norm = (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return None;
        }
        *z = norm;
        for row in m.iter_mut() {
            row[c] /= norm;
        }
    }
    let mut p = polar(&m)?;
    let qfac = if det3(&p) > 0.0 {
        1.0
    } else {
        for row in p.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    };
    let (r11, r12, r13) = (p[0][0], p[0][1], p[0][2]);
    let (r21, r22, r23) = (p[1][0], p[1][1], p[1][2]);
    let (r31, r32, r33) = (p[2][0], p[2][1], p[2][2]);
    let tr = r11 + r22 + r33 + 1.0;
    let (qa, mut qb, mut qc, mut qd);
    if tr > 0.5 {
        qa = 0.5 * tr.sqrt();
        qb = 0.25 * (r32 - r23) / qa;
        qc = 0.25 * (r13 - r31) / qa;
        qd = 0.25 * (r21 - r12) / qa;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            qb = 0.5 * xd.sqrt();
            qc = 0.25 * (r12 + r21) / qb;
            qd = 0.25 * (r13 + r31) / qb;
            qa = 0.25 * (r32 - r23) / qb;
        } else if yd > 1.0 {
            qc = 0.5 * yd.sqrt();
            qb = 0.25 * (r12 + r21) / qc;
            qd = 0.25 * (r23 + r32) / qc;
            qa = 0.25 * (r13 - r31) / qc;
        } else {
            qd = 0.5 * zd.sqrt();
            qb = 0.25 * (r13 + r31) / qd;
            qc = 0.25 * (r23 + r32) / qd;
            qa = 0.25 * (r21 - r12) / qd;
        }
        if qa < 0.0 {
            qb = -qb;
            qc = -qc;
            qd = -qd;
        }
    }
    if ![qb, qc, qd].iter().all(|v| v.is_finite()) {
        return None;
    }
    Some(Quatern {
        b: qb,
        c: qc,
        d: qd,
        qfac,
        zooms,
    })
}

fn det3(m: &M3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

fn inv3(m: &M3) -> Option<M3> {
    let det = det3(m);
    if det == 0.0 || !det.is_finite() {
        return None;
    }
    let mut r = [[0.0; 3]; 3];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // cofactor of m[j][i]
            let (a0, a1) = ((j + 1) % 3, (j + 2) % 3);
            let (b0, b1) = ((i + 1) % 3, (i + 2) % 3);
            *v = (m[a0][b0] * m[a1][b1] - m[a0][b1] * m[a1][b0]) / det;
        }
    }
    Some(r)
}

/// Orthogonal polar factor of `m` by Newton iteration `X ← (X + X⁻ᵀ)/2`.
fn polar(m: &M3) -> Option<M3> {
    let mut x = *m;
    for _ in 0..100 {
        let y = inv3(&x)?;
        let mut z = [[0.0; 3]; 3];
        let mut dif = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                z[i][j] = 0.5 * (x[i][j] + y[j][i]);
                dif += (z[i][j] - x[i][j]).abs();
            }
        }
        x = z;
        if dif < 1e-14 {
            break;
        }
    }
    Some(x)
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
    big: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut b = [0u8; N];
        // Callers only read header fields after checking buf.len() >= 348.
        if let Some(src) = self.buf.get(off..off + N) {
            b.copy_from_slice(src);
        }
        if self.big {
            b.reverse();
        }
        b
    }
    fn i16(&self, off: usize) -> i16 {
        i16::from_le_bytes(self.bytes(off))
    }
    fn i32(&self, off: usize) -> i32 {
        i32::from_le_bytes(self.bytes(off))
    }
    fn f32(&self, off: usize) -> f32 {
        f32::from_le_bytes(self.bytes(off))
    }
}

/// Where and how the voxel data of a file is stored, from its header.
struct Layout {
    big: bool,
    dims: [usize; 3],
    datatype: i16,
    size: usize,
    offset: usize,
    expected: usize,
}

/// Decode a single-file NIfTI-1 image (`.nii`, or `.nii.gz` detected by the
/// gzip magic `1f 8b`), either byte order.
///
/// A gzip stream is decompressed only as far as the header says the data
/// goes (the rest is checked but not kept), so a small corrupt or hostile
/// file cannot make this allocate more than its header asks for.
pub fn read_nifti(bytes: &[u8]) -> Result<NiftiVolume, NiftiError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        let lay = layout(bytes)?;
        return decode(bytes, &lay);
    }
    let mut dec = MultiGzDecoder::new(bytes);
    let mut buf = Vec::new();
    (&mut dec)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut buf)
        .map_err(NiftiError::Gzip)?;
    let lay = layout(&buf)?;
    let total = lay.offset.saturating_add(lay.expected);
    (&mut dec)
        .take(total.saturating_sub(HEADER_LEN) as u64)
        .read_to_end(&mut buf)
        .map_err(NiftiError::Gzip)?;
    // Drain the rest so a corrupt stream (bad CRC, truncation) is still an error.
    std::io::copy(&mut dec, &mut std::io::sink()).map_err(NiftiError::Gzip)?;
    decode(&buf, &lay)
}

fn layout(buf: &[u8]) -> Result<Layout, NiftiError> {
    if buf.len() < HEADER_LEN {
        return Err(NiftiError::TooShort {
            len: buf.len(),
            need: HEADER_LEN,
        });
    }
    let le = Reader { buf, big: false };
    let r = if le.i32(0) == HEADER_LEN as i32 {
        le
    } else {
        let be = Reader { buf, big: true };
        if be.i32(0) != HEADER_LEN as i32 {
            return Err(NiftiError::BadSizeofHdr { found: le.i32(0) });
        }
        be
    };
    let magic: [u8; 4] = [buf[344], buf[345], buf[346], buf[347]];
    if &magic != b"n+1\0" {
        return Err(NiftiError::BadMagic { found: magic });
    }

    let mut dim = [0i16; 8];
    for (i, d) in dim.iter_mut().enumerate() {
        *d = r.i16(40 + 2 * i);
    }
    let ndim = dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(NiftiError::InvalidDims {
            dims: [dim[1], dim[2], dim[3]].map(i64::from),
            reason: format!("dim[0] = {ndim} is not in 1..=7"),
        });
    }
    let ndim = ndim as usize;
    if (4..=ndim).any(|i| dim[i] != 1) {
        return Err(NiftiError::NotThreeD { dim });
    }
    let raw3 = [1, 2, 3].map(|i| if i <= ndim { dim[i] } else { 1 });
    if raw3.iter().any(|&d| d < 1) {
        return Err(NiftiError::InvalidDims {
            dims: raw3.map(i64::from),
            reason: "dimensions must be >= 1".into(),
        });
    }
    let dims = raw3.map(|d| d as usize);

    let datatype = r.i16(70);
    let size: usize = match datatype {
        DT_UINT8 | DT_INT8 => 1,
        DT_INT16 | DT_UINT16 => 2,
        DT_INT32 | DT_UINT32 | DT_FLOAT32 => 4,
        DT_FLOAT64 => 8,
        code => return Err(NiftiError::UnsupportedDatatype { code }),
    };

    let vox_offset = r.f32(108);
    if !(vox_offset.is_finite() && vox_offset >= HEADER_LEN as f32) {
        return Err(NiftiError::BadVoxOffset { vox_offset });
    }
    let offset = vox_offset as usize;
    let expected = dims
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NiftiError::InvalidDims {
            dims: raw3.map(i64::from),
            reason: "data size overflows".into(),
        })?;
    Ok(Layout {
        big: r.big,
        dims,
        datatype,
        size,
        offset,
        expected,
    })
}

fn decode(buf: &[u8], lay: &Layout) -> Result<NiftiVolume, NiftiError> {
    let &Layout {
        big,
        dims,
        datatype,
        size,
        offset,
        expected,
    } = lay;
    let r = Reader { buf, big };
    let data = buf
        .get(offset..)
        .and_then(|rest| rest.get(..expected))
        .ok_or(NiftiError::DataTooShort {
            dims,
            bytes_per_voxel: size,
            offset,
            expected,
            available: buf.len().saturating_sub(offset),
        })?;

    let mut values = decode_values(data, datatype, size, r.big);
    let slope = r.f32(112) as f64;
    let inter = r.f32(116) as f64;
    if slope != 0.0 && slope.is_finite() {
        let inter = if inter.is_finite() { inter } else { 0.0 };
        if slope != 1.0 || inter != 0.0 {
            values.iter_mut().for_each(|v| *v = *v * slope + inter);
        }
    }

    let mut pixdim = [0f64; 8];
    for (i, p) in pixdim.iter_mut().enumerate() {
        *p = r.f32(76 + 4 * i) as f64;
    }
    let qform_code = r.i16(252);
    let sform_code = r.i16(254);
    let affine = if sform_code > 0 {
        let mut a = identity4();
        for (row, a_row) in a.iter_mut().take(3).enumerate() {
            for (c, v) in a_row.iter_mut().enumerate() {
                *v = r.f32(280 + 16 * row + 4 * c) as f64;
            }
        }
        a
    } else if qform_code > 0 {
        let q = [256, 260, 264, 268, 272, 276].map(|off| r.f32(off) as f64);
        affine_from_quatern(q, &pixdim)
    } else {
        let mut a = identity4();
        for i in 0..3 {
            a[i][i] = pixdim[i + 1];
        }
        a
    };

    Ok(NiftiVolume {
        dims,
        affine,
        values,
    })
}

fn identity4() -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    a
}

fn decode_values(data: &[u8], datatype: i16, size: usize, big: bool) -> Vec<f64> {
    fn arr<const N: usize>(c: &[u8], big: bool) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&c[..N]);
        if big {
            b.reverse();
        }
        b
    }
    let chunks = data.chunks_exact(size);
    match datatype {
        DT_UINT8 => data.iter().map(|&v| v as f64).collect(),
        DT_INT8 => data.iter().map(|&v| v as i8 as f64).collect(),
        DT_INT16 => chunks
            .map(|c| i16::from_le_bytes(arr(c, big)) as f64)
            .collect(),
        DT_UINT16 => chunks
            .map(|c| u16::from_le_bytes(arr(c, big)) as f64)
            .collect(),
        DT_INT32 => chunks
            .map(|c| i32::from_le_bytes(arr(c, big)) as f64)
            .collect(),
        DT_UINT32 => chunks
            .map(|c| u32::from_le_bytes(arr(c, big)) as f64)
            .collect(),
        DT_FLOAT32 => chunks
            .map(|c| f32::from_le_bytes(arr(c, big)) as f64)
            .collect(),
        _ => chunks.map(|c| f64::from_le_bytes(arr(c, big))).collect(),
    }
}

/// NIfTI-1 `quatern_to_mat44`. `q` = quatern_b, c, d, qoffset_x, y, z.
fn affine_from_quatern(q: [f64; 6], pixdim: &[f64; 8]) -> [[f64; 4]; 4] {
    let [mut b, mut c, mut d, qx, qy, qz] = q.map(|v| if v.is_finite() { v } else { 0.0 });
    let sum = b * b + c * c + d * d;
    let a = if 1.0 - sum < 1e-7 {
        let s = 1.0 / sum.sqrt();
        if s.is_finite() {
            b *= s;
            c *= s;
            d *= s;
        }
        0.0
    } else {
        (1.0 - sum).sqrt()
    };
    let zoom = |p: f64| if p > 0.0 && p.is_finite() { p } else { 1.0 };
    let (dx, dy) = (zoom(pixdim[1]), zoom(pixdim[2]));
    let qfac = if pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let dz = zoom(pixdim[3]) * qfac;
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let mut m = identity4();
    let t = [qx, qy, qz];
    for i in 0..3 {
        m[i][0] = r[i][0] * dx;
        m[i][1] = r[i][1] * dy;
        m[i][2] = r[i][2] * dz;
        m[i][3] = t[i];
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique_affine() -> [[f64; 4]; 4] {
        // rotation about z by 30 degrees, flipped x (as LPS->RAS does), spacing 0.8, 0.9, 2.5
        let (s, c) = (30f64.to_radians().sin(), 30f64.to_radians().cos());
        [
            [-0.8 * c, 0.9 * s, 0.0, 120.5],
            [-0.8 * s, -0.9 * c, 0.0, -33.25],
            [0.0, 0.0, 2.5, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    fn sample(data: NiftiData) -> Nifti {
        Nifti {
            dims: [3, 2, 2],
            pixdim: [0.8, 0.9, 2.5],
            affine: oblique_affine(),
            data,
        }
    }

    fn all_dtypes() -> Vec<(NiftiData, Vec<f64>)> {
        let u8s: Vec<u8> = vec![0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255];
        let i16s: Vec<i16> = vec![-32768, -1024, -1, 0, 1, 2, 3, 100, 1000, 4095, 30000, 32767];
        let u16s: Vec<u16> = vec![0, 1, 2, 3, 4, 5, 6, 7, 1000, 40000, 65534, 65535];
        let i32s: Vec<i32> = vec![
            i32::MIN,
            -70000,
            -1,
            0,
            1,
            2,
            3,
            4,
            5,
            70000,
            1 << 30,
            i32::MAX,
        ];
        let f32s: Vec<f32> = vec![
            -1.5, 0.0, 0.25, 1e-6, 3.5, 1e20, -7.0, 8.0, 9.5, 10.0, 11.0, 12.125,
        ];
        vec![
            (
                NiftiData::U8(u8s.clone()),
                u8s.iter().map(|&v| v as f64).collect(),
            ),
            (
                NiftiData::I16(i16s.clone()),
                i16s.iter().map(|&v| v as f64).collect(),
            ),
            (
                NiftiData::U16(u16s.clone()),
                u16s.iter().map(|&v| v as f64).collect(),
            ),
            (
                NiftiData::I32(i32s.clone()),
                i32s.iter().map(|&v| v as f64).collect(),
            ),
            (
                NiftiData::F32(f32s.clone()),
                f32s.iter().map(|&v| v as f64).collect(),
            ),
        ]
    }

    fn assert_affine_close(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4], tol: f64) {
        for r in 0..4 {
            for c in 0..4 {
                assert!(
                    (a[r][c] - b[r][c]).abs() <= tol,
                    "affine differs at [{r}][{c}]: {a:?} vs {b:?}"
                );
            }
        }
    }

    /// Affine from the qform fields of a written header (LE), for checking agreement.
    fn qform_of(bytes: &[u8]) -> [[f64; 4]; 4] {
        let r = Reader {
            buf: bytes,
            big: false,
        };
        let mut pixdim = [0f64; 8];
        for (i, p) in pixdim.iter_mut().enumerate() {
            *p = r.f32(76 + 4 * i) as f64;
        }
        let q = [256, 260, 264, 268, 272, 276].map(|off| r.f32(off) as f64);
        affine_from_quatern(q, &pixdim)
    }

    #[test]
    fn round_trip_every_dtype_plain_and_gzip() {
        for (data, expected) in all_dtypes() {
            for gz in [false, true] {
                let n = sample(data.clone());
                let bytes = write_nifti(&n, gz).expect("write");
                assert_eq!(bytes.starts_with(&[0x1f, 0x8b]), gz);
                let v = read_nifti(&bytes).expect("read");
                assert_eq!(v.dims, [3, 2, 2]);
                assert_eq!(v.values, expected, "dtype {data:?} gz {gz}");
                assert_affine_close(&v.affine, &n.affine, 1e-5);
            }
        }
    }

    #[test]
    fn header_bytes() {
        let n = sample(NiftiData::I16((0..12).collect()));
        let b = write_nifti(&n, false).unwrap();
        assert_eq!(b.len(), 352 + 24);
        assert_eq!(i32::from_le_bytes(b[0..4].try_into().unwrap()), 348);
        assert_eq!(&b[344..348], b"n+1\0");
        assert_eq!(&b[348..352], &[0, 0, 0, 0]);
        let i16_at = |o: usize| i16::from_le_bytes(b[o..o + 2].try_into().unwrap());
        let f32_at = |o: usize| f32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(
            (0..8).map(|i| i16_at(40 + 2 * i)).collect::<Vec<_>>(),
            vec![3, 3, 2, 2, 1, 1, 1, 1]
        );
        assert_eq!(i16_at(70), DT_INT16);
        assert_eq!(i16_at(72), 16);
        assert_eq!(f32_at(108), 352.0);
        assert_eq!(b[123], 2);
        assert_eq!(i16_at(252), 1, "qform_code");
        assert_eq!(i16_at(254), 1, "sform_code");
        assert_eq!(f32_at(112), 1.0);
        // determinant of the sample affine is positive -> qfac = 1
        assert_eq!(f32_at(76), 1.0);
        assert!((f32_at(80) - 0.8).abs() < 1e-6);
        assert!((f32_at(84) - 0.9).abs() < 1e-6);
        assert!((f32_at(88) - 2.5).abs() < 1e-6);
        assert_eq!(f32_at(280 + 12), 120.5);
        assert_eq!(i16::from_le_bytes(b[352..354].try_into().unwrap()), 0);
        assert_eq!(i16::from_le_bytes(b[374..376].try_into().unwrap()), 11);
        // qform agrees with sform
        assert_affine_close(&qform_of(&b), &n.affine, 1e-5);
    }

    #[test]
    fn qform_matches_for_left_handed_and_axis_swapped_affines() {
        let affines = [
            // typical dcm2niix-style axial: diag(-0.7, -0.7, 3) (LPS identity)
            [
                [-0.7, 0.0, 0.0, 90.0],
                [0.0, -0.7, 0.0, 100.0],
                [0.0, 0.0, 3.0, -50.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            // left-handed: x flipped only
            [
                [-1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 2.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            // sagittal: i -> -y, j -> -z, k -> x
            [
                [0.0, 0.0, 1.2, -10.0],
                [-0.5, 0.0, 0.0, 20.0],
                [0.0, -0.5, 0.0, 30.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            // coronal, 180 degree about x
            [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, -4.0, 0.0],
                [0.0, -1.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        ];
        for a in affines {
            let n = Nifti {
                dims: [2, 2, 2],
                pixdim: [1.0; 3],
                affine: a,
                data: NiftiData::U8(vec![0; 8]),
            };
            let b = write_nifti(&n, false).unwrap();
            assert_affine_close(&qform_of(&b), &a, 1e-5);
        }
    }

    #[test]
    fn deterministic_output() {
        let n = sample(NiftiData::F32((0..12).map(|v| v as f32 * 0.5).collect()));
        assert_eq!(
            write_nifti(&n, false).unwrap(),
            write_nifti(&n, false).unwrap()
        );
        let g1 = write_nifti(&n, true).unwrap();
        let g2 = write_nifti(&n, true).unwrap();
        assert_eq!(g1, g2);
        assert_eq!(&g1[4..8], &[0, 0, 0, 0], "gzip mtime must be 0");
        assert_eq!(g1[3] & 0x08, 0, "no FNAME in gzip header");
    }

    #[test]
    fn write_rejects_bad_input() {
        let mut n = sample(NiftiData::U8(vec![0; 11]));
        assert!(matches!(
            write_nifti(&n, false),
            Err(NiftiError::DataLength {
                expected: 12,
                got: 11,
                ..
            })
        ));
        n.data = NiftiData::U8(vec![0; 12]);
        n.affine[0][0] = f64::NAN;
        assert!(matches!(
            write_nifti(&n, false),
            Err(NiftiError::InvalidAffine { .. })
        ));
        n.affine = oblique_affine();
        n.dims = [0, 2, 2];
        assert!(matches!(
            write_nifti(&n, false),
            Err(NiftiError::InvalidDims { .. })
        ));
        n.dims = [40000, 1, 1];
        n.data = NiftiData::U8(vec![0; 40000]);
        assert!(matches!(
            write_nifti(&n, false),
            Err(NiftiError::InvalidDims { .. })
        ));
    }

    #[test]
    fn degenerate_affine_writes_sform_only() {
        let mut a = identity4();
        a[2][2] = 0.0;
        let n = Nifti {
            dims: [1, 1, 1],
            pixdim: [1.0, 2.0, 3.0],
            affine: a,
            data: NiftiData::U8(vec![7]),
        };
        let b = write_nifti(&n, false).unwrap();
        assert_eq!(i16::from_le_bytes([b[252], b[253]]), 0);
        let v = read_nifti(&b).unwrap();
        assert_eq!(v.affine, a);
        assert_eq!(v.values, vec![7.0]);
    }

    /// Byte-swap every numeric header field and the data of a LE file.
    fn to_big_endian(le: &[u8], elem: usize) -> Vec<u8> {
        let mut b = le.to_vec();
        let mut fields: Vec<(usize, usize)> = vec![(0, 4), (32, 4), (36, 2)];
        fields.extend((0..8).map(|i| (40 + 2 * i, 2)));
        fields.extend([
            (56, 4),
            (60, 4),
            (64, 4),
            (68, 2),
            (70, 2),
            (72, 2),
            (74, 2),
        ]);
        fields.extend((0..8).map(|i| (76 + 4 * i, 4)));
        fields.extend([(108, 4), (112, 4), (116, 4), (120, 2)]);
        fields.extend((0..4).map(|i| (124 + 4 * i, 4)));
        fields.extend([(140, 4), (144, 4), (252, 2), (254, 2)]);
        fields.extend((0..18).map(|i| (256 + 4 * i, 4)));
        for (off, len) in fields {
            b[off..off + len].reverse();
        }
        for chunk in b[352..].chunks_exact_mut(elem) {
            chunk.reverse();
        }
        b
    }

    #[test]
    fn reads_big_endian() {
        for (data, expected) in all_dtypes() {
            let elem = data.code_and_bitpix().1 as usize / 8;
            let n = sample(data);
            let be = to_big_endian(&write_nifti(&n, false).unwrap(), elem);
            assert_eq!(&be[0..4], &[0, 0, 1, 0x5c]);
            let v = read_nifti(&be).unwrap();
            assert_eq!(v.values, expected);
            assert_affine_close(&v.affine, &n.affine, 1e-5);
        }
    }

    fn set_i16(b: &mut [u8], off: usize, v: i16) {
        b[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set_f32(b: &mut [u8], off: usize, v: f32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn reads_i8_u32_f64() {
        // i8: reinterpret u8 data
        let mut b = write_nifti(
            &sample(NiftiData::U8(vec![
                0, 1, 127, 128, 255, 5, 6, 7, 8, 9, 10, 11,
            ])),
            false,
        )
        .unwrap();
        set_i16(&mut b, 70, DT_INT8);
        let v = read_nifti(&b).unwrap();
        assert_eq!(&v.values[..5], &[0.0, 1.0, 127.0, -128.0, -1.0]);
        // u32: reinterpret i32 data
        let mut b = write_nifti(
            &sample(NiftiData::I32(vec![-1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])),
            false,
        )
        .unwrap();
        set_i16(&mut b, 70, DT_UINT32);
        set_i16(&mut b, 72, 32);
        let v = read_nifti(&b).unwrap();
        assert_eq!(v.values[0], u32::MAX as f64);
        // f64: 24 f32 slots hold 12 f64 values
        let vals: Vec<f64> = (0..12).map(|i| i as f64 * 1.125 - 3.0).collect();
        let mut b = write_nifti(&sample(NiftiData::U8(vec![0; 12])), false).unwrap();
        b.truncate(352);
        vals.iter()
            .for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
        set_i16(&mut b, 70, DT_FLOAT64);
        set_i16(&mut b, 72, 64);
        assert_eq!(read_nifti(&b).unwrap().values, vals);
    }

    #[test]
    fn scaling_and_affine_fallbacks() {
        let mut b = write_nifti(&sample(NiftiData::I16((0..12).collect())), false).unwrap();
        set_f32(&mut b, 112, 2.0);
        set_f32(&mut b, 116, -1.0);
        assert_eq!(read_nifti(&b).unwrap().values[..3], [-1.0, 1.0, 3.0]);
        set_f32(&mut b, 112, 0.0);
        assert_eq!(
            read_nifti(&b).unwrap().values[..3],
            [0.0, 1.0, 2.0],
            "slope 0 means unscaled"
        );
        // qform only
        set_i16(&mut b, 254, 0);
        assert_affine_close(&read_nifti(&b).unwrap().affine, &oblique_affine(), 1e-5);
        // neither: pixdim diagonal
        set_i16(&mut b, 252, 0);
        let a = read_nifti(&b).unwrap().affine;
        assert!(
            (a[0][0] - 0.8).abs() < 1e-6
                && (a[1][1] - 0.9).abs() < 1e-6
                && (a[2][2] - 2.5).abs() < 1e-6
        );
        assert_eq!(a[0][3], 0.0);
    }

    #[test]
    fn dims_handling() {
        let base = write_nifti(&sample(NiftiData::U8(vec![1; 12])), false).unwrap();
        let mut b = base.clone();
        set_i16(&mut b, 40, 4); // dim[0] = 4, dim[4] = 1 is fine
        assert_eq!(read_nifti(&b).unwrap().dims, [3, 2, 2]);
        set_i16(&mut b, 48, 2); // dim[4] = 2
        assert!(matches!(read_nifti(&b), Err(NiftiError::NotThreeD { .. })));
        let mut b = base.clone();
        set_i16(&mut b, 42, 0);
        assert!(matches!(
            read_nifti(&b),
            Err(NiftiError::InvalidDims { .. })
        ));
        let mut b = base.clone();
        set_i16(&mut b, 46, 3); // nz = 3 -> needs 18 bytes, 12 present
        assert!(matches!(
            read_nifti(&b),
            Err(NiftiError::DataTooShort {
                expected: 18,
                available: 12,
                ..
            })
        ));
    }

    #[test]
    fn clear_errors() {
        let base = write_nifti(&sample(NiftiData::U8(vec![1; 12])), false).unwrap();
        assert!(matches!(
            read_nifti(&base[..100]),
            Err(NiftiError::TooShort { len: 100, .. })
        ));
        assert!(matches!(read_nifti(&[]), Err(NiftiError::TooShort { .. })));
        let mut b = base.clone();
        b[345] = b'i';
        assert!(matches!(read_nifti(&b), Err(NiftiError::BadMagic { .. })));
        let mut b = base.clone();
        set_i16(&mut b, 70, 1024); // int64: unsupported
        let e = read_nifti(&b).unwrap_err();
        assert!(matches!(e, NiftiError::UnsupportedDatatype { code: 1024 }));
        assert!(e.to_string().contains("1024"));
        let mut b = base.clone();
        b[0] = 0;
        assert!(matches!(
            read_nifti(&b),
            Err(NiftiError::BadSizeofHdr { .. })
        ));
        let mut b = base.clone();
        set_f32(&mut b, 108, f32::NAN);
        assert!(matches!(
            read_nifti(&b),
            Err(NiftiError::BadVoxOffset { .. })
        ));
        assert!(matches!(
            read_nifti(&[0x1f, 0x8b, 8, 0, 1, 2]),
            Err(NiftiError::Gzip(_))
        ));
        assert!(matches!(
            read_nifti(&base[..360]),
            Err(NiftiError::DataTooShort { .. })
        ));
    }

    #[test]
    fn gzip_reads_only_what_the_header_needs() {
        let n = sample(NiftiData::U8((0..12).collect()));
        let mut plain = write_nifti(&n, false).unwrap();
        plain.extend(std::iter::repeat_n(9u8, 1 << 20)); // trailing bytes beyond the data
        let gz = |b: &[u8]| {
            let mut e = GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), Compression::default());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let v = read_nifti(&gz(&plain)).unwrap();
        assert_eq!(v.values, (0..12).map(f64::from).collect::<Vec<_>>());
        // header claims more than the stream holds
        plain.truncate(352 + 12);
        set_i16(&mut plain, 46, 30000);
        assert!(matches!(
            read_nifti(&gz(&plain)),
            Err(NiftiError::DataTooShort { .. })
        ));
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        let n = Nifti {
            dims: [2, 2, 1],
            pixdim: [1.0; 3],
            affine: oblique_affine(),
            data: NiftiData::I16(vec![1, -2, 3, -4]),
        };
        for gz in [false, true] {
            let good = write_nifti(&n, gz).unwrap();
            for len in 0..good.len() {
                assert!(
                    read_nifti(&good[..len]).is_err(),
                    "truncated to {len} (gz {gz}) should fail"
                );
            }
            for pos in 0..good.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut b = good.clone();
                    b[pos] ^= flip;
                    let _ = read_nifti(&b); // must not panic
                }
            }
        }
        // garbage
        for seed in 0u32..64 {
            let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
            let g: Vec<u8> = (0..(seed as usize * 13))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = read_nifti(&g);
        }
    }
}
