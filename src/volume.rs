//! DICOM series → 3D volume, and label masks onto a series grid.
//!
//! This module owns the geometry bridge between DICOM and NIfTI for cohort:
//! [`series_volume`] stacks the slices (native, or compressed with RLE, JPEG
//! baseline or lossless, or JPEG 2000) of one series into a [`Volume`] (sorted
//! along the slice normal, rescaled, with a voxel → RAS+ affine in the NIfTI
//! convention). A slice is a single-frame image or one frame of a multi-frame
//! one: enhanced CT/MR/PET, placed by its per-frame functional groups, or an RT
//! Dose grid, placed by GridFrameOffsetVector and scaled to Gy by
//! DoseGridScaling. Colour images (RGB, YBR_FULL, YBR_FULL_422; in JPEG 2000 YBR_RCT and
//! YBR_ICT; PALETTE COLOR through its lookup tables) become three channels, R, G and B.
//! A 2D image with no patient geometry (projection X-ray, ultrasound, photograph) becomes a
//! volume of one slice on its own plane ([`series_volumes`]: several such images in a
//! series, a volume each). MONOCHROME1 is turned over to read as MONOCHROME2.
//!
//! [`volume_to_niftis`] and [`label_nifti`] turn a volume or a label map on its grid into a
//! `crate::nifti::Nifti`, and [`mask_onto_grid`] maps an integer mask read
//! from NIfTI back onto a series grid, accepting only grids that are the same
//! up to axis permutation and flips.

use std::borrow::Cow;

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::{FileMetaTable, InMemDicomObject, OpenFileOptions};
use thiserror::Error;

use crate::nifti::{Nifti, NiftiData, NiftiVolume};

/// Tolerance for orientation cosines and pixel spacing agreement between slices.
const GEOM_TOL: f64 = 1e-4;
/// Two slices closer than this along the normal (mm) are duplicates.
const DUP_TOL_MM: f64 = 1e-3;
/// Allowed relative deviation of slice gaps from their mean.
const SPACING_REL_TOL: f64 = 0.01;
/// Allowed distance (in grid voxels) of a mask-to-grid matrix entry from an integer.
const GRID_TOL: f64 = 0.01;

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Errors produced while building volumes or mapping masks.
#[derive(Debug, Error)]
pub enum VolumeError {
    /// No files were given.
    #[error("series has no files")]
    Empty,
    /// The file could not be parsed as DICOM.
    #[error("{name}: not a readable DICOM file: {reason}")]
    Parse { name: String, reason: String },
    /// The transfer syntax is neither native (uncompressed) nor one whose pixel data cohort
    /// decodes.
    #[error("{name}: cannot decode the pixel data of transfer syntax {transfer_syntax} (cohort reads native little and big endian, RLE, JPEG baseline, extended, progressive and lossless, JPEG-LS, and JPEG 2000)")]
    Compressed {
        name: String,
        transfer_syntax: String,
    },
    /// A required attribute is absent or empty.
    #[error("{name}: required attribute {keyword} is missing")]
    Missing { name: String, keyword: &'static str },
    /// An attribute is present but its value is unusable.
    #[error("{name}: invalid {keyword}: {reason}")]
    Invalid {
        name: String,
        keyword: &'static str,
        reason: String,
    },
    /// A valid DICOM feature this module does not handle (colour, a multi-frame image that
    /// gives no position per frame, ...).
    #[error("{name}: unsupported: {reason}")]
    Unsupported { name: String, reason: String },
    /// Several files in one series, some without patient geometry: no volume (training
    /// exports make each file its own case).
    #[error("{name}: a 2D image or cine loop with neither ImagePositionPatient nor ImageOrientationPatient, in a series of {count} files: such images (projection X-ray, ultrasound, photographs) are no volume together (the nnunet and monai exports make a case of each file)")]
    SeparateImages { name: String, count: usize },
    /// A slice disagrees with the first slice on grid geometry.
    #[error("{name}: {what} differs from {first}")]
    Inconsistent {
        name: String,
        first: String,
        what: String,
    },
    /// Two slices sit at the same position along the slice normal.
    #[error(
        "{first} and {second} have the same slice position ({position:.4} mm along the normal)"
    )]
    DuplicatePosition {
        first: String,
        second: String,
        position: f64,
    },
    /// Slices are not equally spaced or not on one line.
    #[error("slices are not evenly spaced: {detail}")]
    NonUniformSpacing { detail: String },
    /// The mask's voxel grid is not the grid of the series.
    #[error("mask grid does not match the series grid: {reason}")]
    GridMismatch { reason: String },
    /// The mask's own values and dimensions disagree.
    #[error("invalid mask: {reason}")]
    InvalidMask { reason: String },
    /// A mask voxel is not an integer in 0..=255.
    #[error("mask voxel ({}, {}, {}) has value {value}; labels must be integers in 0..=255", .voxel[0], .voxel[1], .voxel[2])]
    MaskValue { voxel: [usize; 3], value: f64 },
}

/// A 3D image stacked from one DICOM series.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// columns, rows, slices
    pub dims: [usize; 3],
    /// column spacing, row spacing, slice spacing (mm). The slice spacing is
    /// the length of the affine's k column (for one slice: SliceThickness or 1).
    pub spacing: [f64; 3],
    /// voxel → RAS+ (the DICOM LPS affine with its x and y rows negated)
    pub affine: [[f64; 4]; 4],
    /// The id of each slice, in volume order (k = 0..): its SOP Instance UID, or
    /// `UID/frame` for a frame of a multi-frame image ([`slice_id`])
    pub slice_sops: Vec<String>,
    /// 1 (grey) or 3 (colour: R, G, B)
    pub channels: usize,
    /// False for a 2D image the file places in no patient frame: its affine is the image
    /// plane at the origin, columns along x and rows along y of DICOM's patient axes
    /// (projection radiographs, ultrasound, photographs, secondary captures).
    pub patient_geometry: bool,
    /// The frames of one multi-frame image without patient geometry (a cine loop: ultrasound,
    /// angiography; or a stack of 2D images), one after another along k, 1 apart: k counts
    /// frames, not millimetres.
    pub cine: bool,
    /// For a cine loop, the time between frames, from FrameTime (0018,1063), else from
    /// CineRate (0018,0040) as 1000 / rate.
    pub frame_time_ms: Option<f64>,
    /// Some slice was MONOCHROME1 (lowest value white, as projection radiographs often are):
    /// its stored values were turned over within their range (unsigned: 2^BitsStored - 1 - v;
    /// signed: -1 - v) before rescaling, so the volume reads as MONOCHROME2.
    pub inverted: bool,
    /// Rescaled values, x fastest, a colour volume's R volume, then G, then B: I16 when every
    /// slope is 1, every intercept an integer and all values fit i16, else F32.
    pub data: NiftiData,
}

/// One parsed slice.
struct Slice {
    name: String,
    sop: String,
    rows: usize,
    cols: usize,
    /// 1 (grey) or 3 (R, G, B)
    channels: usize,
    /// MONOCHROME1, turned over to read as MONOCHROME2
    inverted: bool,
    /// Which file of the series it comes from (its index).
    file: usize,
    /// A frame of a cine loop ([`Volume::cine`]), and the loop's frame time.
    cine: bool,
    frame_time_ms: Option<f64>,
    g: FrameGeometry,
    /// stored values, row by row, column fastest; a colour image's R plane, then G, then B
    raw: Vec<i32>,
}

/// Stack the files of one series into a volume.
///
/// `files` holds `(name, bytes)` pairs; `name` is only used in errors. Slices
/// are ordered by their position along `row_cosine × col_cosine`.
pub fn series_volume(files: &[(String, Vec<u8>)]) -> Result<Volume, VolumeError> {
    let slices = parse_series(files)?;
    if files.len() > 1 {
        if let Some(s) = slices.iter().find(|s| !s.g.patient) {
            return Err(VolumeError::SeparateImages { name: files[s.file].0.clone(), count: files.len() });
        }
    }
    stack(slices)
}

/// The volumes of a series, each with the index in `files` of the image it is made of when
/// it is one image alone: one volume for a series that stacks into one; one per file for
/// several images without patient geometry, 2D images or cine loops (where
/// [`series_volume`] says [`VolumeError::SeparateImages`]). Each file is decoded once.
pub fn series_volumes(files: &[(String, Vec<u8>)]) -> Result<Vec<(Option<usize>, Volume)>, VolumeError> {
    let slices = parse_series(files)?;
    if files.len() > 1 && slices.iter().any(|s| !s.g.patient) {
        let mut by_file: Vec<Vec<Slice>> = (0..files.len()).map(|_| Vec::new()).collect();
        for s in slices {
            by_file[s.file].push(s);
        }
        return by_file.into_iter().enumerate().map(|(k, frames)| Ok((Some(k), stack(frames)?))).collect();
    }
    Ok(vec![(None, stack(slices)?)])
}

/// Every slice of the files of a series, in file order.
fn parse_series(files: &[(String, Vec<u8>)]) -> Result<Vec<Slice>, VolumeError> {
    if files.is_empty() {
        return Err(VolumeError::Empty);
    }
    Ok(files
        .iter()
        .enumerate()
        .map(|(k, (name, bytes))| parse_frames(name, bytes).map(|frames| frames.into_iter().map(move |s| Slice { file: k, ..s })))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect())
}

/// Stack parsed slices (at least one) into a volume.
fn stack(mut slices: Vec<Slice>) -> Result<Volume, VolumeError> {
    let first = &slices[0];
    for s in &slices[1..] {
        let inconsistent = |what: String| VolumeError::Inconsistent {
            name: s.name.clone(),
            first: first.name.clone(),
            what,
        };
        if s.channels != first.channels {
            return Err(inconsistent(format!("samples per pixel ({} vs {})", s.channels, first.channels)));
        }
        if (s.rows, s.cols) != (first.rows, first.cols) {
            return Err(inconsistent(format!(
                "rows x columns ({} x {} vs {} x {})",
                s.rows, s.cols, first.rows, first.cols
            )));
        }
        let o1 = [s.g.row_cos, s.g.col_cos].concat();
        let o0 = [first.g.row_cos, first.g.col_cos].concat();
        if o1.iter().zip(&o0).any(|(a, b)| (a - b).abs() > GEOM_TOL) {
            return Err(inconsistent(format!(
                "ImageOrientationPatient ({o1:?} vs {o0:?})"
            )));
        }
        if s.g.pixel_spacing
            .iter()
            .zip(&first.g.pixel_spacing)
            .any(|(a, b)| (a - b).abs() > GEOM_TOL * b.abs().max(1.0))
        {
            return Err(inconsistent(format!(
                "PixelSpacing ({:?} vs {:?})",
                s.g.pixel_spacing, first.g.pixel_spacing
            )));
        }
    }

    let (row_cos, col_cos) = (first.g.row_cos, first.g.col_cos);
    let normal = normalize(cross(row_cos, col_cos)).ok_or_else(|| VolumeError::Invalid {
        name: first.name.clone(),
        keyword: "ImageOrientationPatient",
        reason: "row and column directions are parallel".into(),
    })?;
    let key = |s: &Slice| dot(s.g.pos, normal);
    slices.sort_by(|a, b| key(a).total_cmp(&key(b)));

    for w in slices.windows(2) {
        if (key(&w[1]) - key(&w[0])).abs() < DUP_TOL_MM {
            return Err(VolumeError::DuplicatePosition {
                first: w[0].name.clone(),
                second: w[1].name.clone(),
                position: key(&w[0]),
            });
        }
    }

    let n = slices.len();
    let first = &slices[0];
    let last = &slices[n - 1];
    let (step, slice_spacing) = if n == 1 {
        let t = first.g.thickness.filter(|t| *t > 0.0).unwrap_or(1.0);
        (normal.map(|c| c * t), t)
    } else {
        let mean = (key(last) - key(first)) / (n - 1) as f64;
        for w in slices.windows(2) {
            let gap = key(&w[1]) - key(&w[0]);
            if (gap - mean).abs() > SPACING_REL_TOL * mean {
                return Err(VolumeError::NonUniformSpacing {
                    detail: format!(
                        "gap between {} and {} is {gap:.4} mm, mean gap is {mean:.4} mm",
                        w[0].name, w[1].name
                    ),
                });
            }
        }
        let step = [0, 1, 2].map(|r| (last.g.pos[r] - first.g.pos[r]) / (n - 1) as f64);
        let step_len = dot(step, step).sqrt();
        for (k, s) in slices.iter().enumerate() {
            let expected = [0, 1, 2].map(|r| first.g.pos[r] + k as f64 * step[r]);
            let off = [0, 1, 2].map(|r| s.g.pos[r] - expected[r]);
            let dist = dot(off, off).sqrt();
            if dist > SPACING_REL_TOL * step_len + DUP_TOL_MM {
                return Err(VolumeError::NonUniformSpacing {
                    detail: format!(
                        "{} is {dist:.4} mm off the line through the first and last slice positions",
                        s.name
                    ),
                });
            }
        }
        (step, step_len)
    };

    let [row_sp, col_sp] = first.g.pixel_spacing;
    let mut affine = [[0.0; 4]; 4];
    affine[3][3] = 1.0;
    for r in 0..3 {
        let flip = if r < 2 { -1.0 } else { 1.0 };
        affine[r][0] = flip * row_cos[r] * col_sp;
        affine[r][1] = flip * col_cos[r] * row_sp;
        affine[r][2] = flip * step[r];
        affine[r][3] = flip * first.g.pos[r];
    }

    let (rows, cols, channels) = (first.rows, first.cols, first.channels);
    let pixels = rows * cols;
    // Slices in volume order, channel by channel.
    let planes = || (0..channels).flat_map(|c| slices.iter().map(move |s| (s, &s.raw[c * pixels..(c + 1) * pixels])));
    let integral = slices
        .iter()
        .all(|s| s.g.slope == 1.0 && s.g.intercept.fract() == 0.0 && s.g.intercept.abs() <= 1e9);
    let as_i16 = if integral {
        let mut out = Vec::with_capacity(pixels * n * channels);
        let mut fits = true;
        'outer: for (s, plane) in planes() {
            let inter = s.g.intercept as i64;
            for &v in plane {
                match i16::try_from(v as i64 + inter) {
                    Ok(x) => out.push(x),
                    Err(_) => {
                        fits = false;
                        break 'outer;
                    }
                }
            }
        }
        fits.then_some(out)
    } else {
        None
    };
    let data = match as_i16 {
        Some(v) => NiftiData::I16(v),
        None => NiftiData::F32(
            planes()
                .flat_map(|(s, plane)| plane.iter().map(move |&v| (v as f64 * s.g.slope + s.g.intercept) as f32))
                .collect(),
        ),
    };

    Ok(Volume {
        dims: [cols, rows, n],
        spacing: [col_sp, row_sp, slice_spacing],
        affine,
        slice_sops: slices.iter().map(|s| s.sop.clone()).collect(),
        channels,
        patient_geometry: first.g.patient,
        cine: first.cine,
        frame_time_ms: first.frame_time_ms,
        inverted: slices.iter().any(|s| s.inverted),
        data,
    })
}

/// The volume as NIfTI images, one per channel (same dims, spacing and affine): one for a
/// grey volume, R, G and B for a colour one, the layout nnU-Net reads (`_0000`, `_0001`,
/// `_0002`) and MONAI stacks as channels.
pub fn volume_to_niftis(v: &Volume) -> Vec<Nifti> {
    let n = v.dims.iter().product::<usize>();
    let part = |c: usize| {
        let r = c * n..(c + 1) * n;
        match &v.data {
            NiftiData::U8(d) => NiftiData::U8(d[r].to_vec()),
            NiftiData::I16(d) => NiftiData::I16(d[r].to_vec()),
            NiftiData::U16(d) => NiftiData::U16(d[r].to_vec()),
            NiftiData::I32(d) => NiftiData::I32(d[r].to_vec()),
            NiftiData::F32(d) => NiftiData::F32(d[r].to_vec()),
        }
    };
    (0..v.channels).map(|c| Nifti { dims: v.dims, pixdim: v.spacing, affine: v.affine, data: part(c) }).collect()
}

/// A label map on the grid of `v` (u8 per voxel, x fastest, same dims).
///
/// The length of `labels` is not checked here; `crate::nifti::write_nifti`
/// rejects a length that does not match `v.dims`.
pub fn label_nifti(v: &Volume, labels: Vec<u8>) -> Nifti {
    Nifti {
        dims: v.dims,
        pixdim: v.spacing,
        affine: v.affine,
        data: NiftiData::U8(labels),
    }
}

/// Map an integer mask read from NIfTI onto the grid (dims + affine) of a
/// series volume.
///
/// `M = inverse(grid_affine) * mask_affine` must be a signed permutation with
/// integer translation (within 0.01 voxel), shapes must match under that
/// permutation and every mask voxel must land inside the grid; otherwise
/// [`VolumeError::GridMismatch`] says whether shape, spacing, orientation or
/// origin differ. Values must be integers in 0..=255 ([`VolumeError::MaskValue`]
/// names the first bad voxel, in mask coordinates). Returns labels on the grid,
/// x fastest.
pub fn mask_onto_grid(
    mask: &NiftiVolume,
    grid_dims: [usize; 3],
    grid_affine: &[[f64; 4]; 4],
) -> Result<Vec<u8>, VolumeError> {
    let mismatch = |reason: String| VolumeError::GridMismatch { reason };
    let mdims = mask.dims;
    let mcount = checked_count(mdims).ok_or_else(|| VolumeError::InvalidMask {
        reason: format!("dims {mdims:?} overflow"),
    })?;
    if mask.values.len() != mcount {
        return Err(VolumeError::InvalidMask {
            reason: format!("{} values for dims {mdims:?}", mask.values.len()),
        });
    }
    let gcount = checked_count(grid_dims)
        .ok_or_else(|| mismatch(format!("grid dims {grid_dims:?} overflow")))?;

    let g_lin = linear(grid_affine);
    let m_lin = linear(&mask.affine);
    let g_inv =
        inv3(&g_lin).ok_or_else(|| mismatch("the series grid affine is singular".into()))?;
    if mask.affine.iter().flatten().any(|v| !v.is_finite()) {
        return Err(mismatch("the mask affine is not finite".into()));
    }
    let l = mul3(&g_inv, &m_lin);
    let t = {
        let d = [0, 1, 2].map(|r| mask.affine[r][3] - grid_affine[r][3]);
        [0, 1, 2].map(|r| dot(g_inv[r], d))
    };

    // Linear part: signed permutation?
    let mut perm = [usize::MAX; 3]; // grid axis r <- mask axis perm[r]
    let mut sign = [0i64; 3];
    let mut ok = true;
    for (r, row) in l.iter().enumerate() {
        for (j, &m) in row.iter().enumerate() {
            let rm = m.round();
            if (m - rm).abs() >= GRID_TOL || rm.abs() > 1.0 {
                ok = false;
            } else if rm != 0.0 {
                if perm[r] != usize::MAX {
                    ok = false;
                }
                perm[r] = j;
                sign[r] = rm as i64;
            }
        }
    }
    let mut used = [false; 3];
    for &p in &perm {
        match used.get_mut(p) {
            Some(u) if !*u => *u = true,
            _ => ok = false,
        }
    }
    if !ok {
        let msz = col_norms(&m_lin);
        let gsz = col_norms(&g_lin);
        let lnorm = col_norms(&l);
        return Err(mismatch(
            if lnorm.iter().any(|n| (n - 1.0).abs() >= GRID_TOL) {
                format!(
                "spacing differs: mask voxel size {} mm vs series voxel size {} mm (mask {mdims:?}, series {grid_dims:?})",
                fmt3(msz),
                fmt3(gsz)
            )
            } else {
                format!(
                "orientation differs: mask axes expressed in series voxels are {}, not a signed axis permutation",
                fmt_m3(&l)
            )
            },
        ));
    }

    let permuted = perm.map(|p| mdims[p]);
    if permuted != grid_dims {
        return Err(mismatch(if perm == [0, 1, 2] {
            format!("shape differs: mask {mdims:?} vs series {grid_dims:?}")
        } else {
            format!(
                "shape differs: mask {mdims:?} (reordered onto series axes: {permuted:?}) vs series {grid_dims:?}"
            )
        }));
    }

    let mut shift = [0i64; 3];
    for r in 0..3 {
        let rt = t[r].round();
        if (t[r] - rt).abs() >= GRID_TOL || rt.abs() > 1e12 {
            return Err(mismatch(format!(
                "origin differs: mask voxel (0, 0, 0) lies at series voxel {}, between voxel centres",
                fmt3(t)
            )));
        }
        shift[r] = rt as i64;
    }
    for r in 0..3 {
        let n = grid_dims[r] as i64;
        let (a, b) = (shift[r], shift[r] + sign[r] * (n - 1));
        let (lo, hi) = (a.min(b), a.max(b));
        if lo != 0 || hi != n - 1 {
            return Err(mismatch(format!(
                "origin differs: mask covers series voxels {lo}..={hi} along axis {r}, the series has 0..={}",
                n - 1
            )));
        }
    }

    let mut out = vec![0u8; gcount];
    let [gx, gy, _] = grid_dims;
    let mut idx = 0usize;
    for k in 0..mdims[2] {
        for j in 0..mdims[1] {
            for i in 0..mdims[0] {
                let value = mask.values[idx];
                idx += 1;
                let rv = value.round();
                if !((value - rv).abs() <= 1e-4 && (0.0..=255.0).contains(&rv)) {
                    return Err(VolumeError::MaskValue {
                        voxel: [i, j, k],
                        value,
                    });
                }
                let m = [i as i64, j as i64, k as i64];
                let g = [0, 1, 2].map(|r| (shift[r] + sign[r] * m[perm[r]]) as usize);
                out[g[0] + gx * (g[1] + gy * g[2])] = rv as u8;
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// DICOM parsing
// ---------------------------------------------------------------------------

/// The slices of one file: its one frame, or every frame of a multi-frame image (enhanced
/// CT, MR or PET with functional groups, or an RT Dose grid with GridFrameOffsetVector).
fn parse_frames(name: &str, bytes: &[u8]) -> Result<Vec<Slice>, VolumeError> {
    let parse_err = |reason: String| VolumeError::Parse {
        name: name.to_string(),
        reason,
    };
    // A deflated file is read as the same file in Explicit VR Little Endian.
    let inflated = crate::dicom::inflate(bytes).map_err(|e| parse_err(e.to_string()))?;
    let bytes: &[u8] = inflated.as_deref().unwrap_or(bytes);
    // Position the input at the "DICM" magic that dicom-object expects.
    let body: Cow<[u8]> = if bytes.get(128..132) == Some(b"DICM".as_slice()) {
        Cow::Borrowed(&bytes[128..])
    } else if bytes.starts_with(b"DICM") {
        Cow::Borrowed(bytes)
    } else if bytes.starts_with(&[0x02, 0x00]) {
        Cow::Owned([b"DICM".as_slice(), bytes].concat())
    } else {
        return Err(parse_err(
            "no DICM magic (with or without preamble) and no file meta group".into(),
        ));
    };

    // dicom-object trusts element lengths and would allocate up to 4 GiB for a
    // corrupt one, so check every length against the bytes actually present.
    let meta_end =
        scan_meta_group(&body).map_err(|e| parse_err(format!("file meta group: {e}")))?;
    let meta = FileMetaTable::from_reader(&body[..])
        .map_err(|e| parse_err(format!("file meta group: {e}")))?;
    let ts = meta.transfer_syntax().to_string();
    let encapsulated = crate::dicom::decodes_encapsulated(&ts);
    let big_endian = match ts.as_str() {
        IMPLICIT_VR_LE | EXPLICIT_VR_LE => false,
        EXPLICIT_VR_BE => true,
        // Every syntax with encapsulated pixel data encodes its data set in explicit VR LE.
        _ if encapsulated => false,
        _ => {
            return Err(VolumeError::Compressed {
                name: name.to_string(),
                transfer_syntax: ts,
            })
        }
    };
    let enc = Enc {
        explicit: ts != IMPLICIT_VR_LE,
        big: big_endian,
    };
    scan_elements(&body, meta_end, body.len(), enc, false, 0)
        .map_err(|e| parse_err(format!("data set: {e}")))?;
    let obj_file = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(&body[..])
        .map_err(|e| parse_err(e.to_string()))?;
    let obj: &InMemDicomObject = &obj_file;
    let a = Attrs { obj, name };

    let frames = match a.opt_uint(tags::NUMBER_OF_FRAMES, "NumberOfFrames")? {
        None => 1,
        Some(0) => return Err(a.invalid("NumberOfFrames", "is 0".into())),
        Some(f) => f as usize,
    };
    let spp = a.opt_uint(tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?.unwrap_or(1);
    let photometric = match a.get(tags::PHOTOMETRIC_INTERPRETATION) {
        Some(_) => a.req_str(tags::PHOTOMETRIC_INTERPRETATION, "PhotometricInterpretation")?,
        None => "MONOCHROME2".to_string(),
    };
    let colour = match (spp, photometric.as_str()) {
        (1, _) => Colour::Grey,
        (3, "RGB") => Colour::Rgb,
        (3, "YBR_RCT" | "YBR_ICT") if encapsulated => Colour::Rgb,
        (3, "YBR_FULL") => Colour::YbrFull,
        (3, "YBR_FULL_422") => Colour::YbrFull422,
        (3, other) => {
            return Err(a.unsupported(format!(
                "a colour image in PhotometricInterpretation {other} (cohort reads RGB, YBR_FULL and YBR_FULL_422, and YBR_RCT and YBR_ICT in JPEG 2000); export such series with --format files or csv"
            )))
        }
        (n, _) => return Err(a.invalid("SamplesPerPixel", format!("{n} (must be 1 or 3)"))),
    };
    // Colour samples are together (0) or plane by plane (1); YBR_FULL_422 is always 0.
    let interleaved = match a.opt_uint(tags::PLANAR_CONFIGURATION, "PlanarConfiguration")? {
        _ if colour == Colour::Grey || colour == Colour::YbrFull422 => true,
        None | Some(0) => true,
        Some(1) => false,
        Some(other) => return Err(a.invalid("PlanarConfiguration", format!("{other} (must be 0 or 1)"))),
    };
    let sop = a.req_str(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?;
    let rows = a.req_uint(tags::ROWS, "Rows")?;
    let cols = a.req_uint(tags::COLUMNS, "Columns")?;
    if rows == 0 || cols == 0 {
        return Err(a.invalid("Rows", format!("image is {rows} rows x {cols} columns")));
    }
    let bits = a.req_uint(tags::BITS_ALLOCATED, "BitsAllocated")?;
    if !matches!(bits, 8 | 16 | 32) {
        return Err(a.unsupported(format!("BitsAllocated = {bits} (only 8, 16 or 32)")));
    }
    let bits_stored = a.opt_uint(tags::BITS_STORED, "BitsStored")?.unwrap_or(bits);
    if bits_stored == 0 || bits_stored > bits {
        return Err(a.invalid(
            "BitsStored",
            format!("{bits_stored} with BitsAllocated {bits}"),
        ));
    }
    let signed = match a.req_uint(tags::PIXEL_REPRESENTATION, "PixelRepresentation")? {
        0 => false,
        1 => true,
        other => return Err(a.invalid("PixelRepresentation", format!("{other} (must be 0 or 1)"))),
    };
    // Geometry first: it also proves that `frames` is what the file holds.
    let geometry = frame_geometry(&a, frames)?;
    let palette = match photometric.as_str() {
        "PALETTE COLOR" if spp == 1 => Some(Palette::read(&a)?),
        _ => None,
    };

    let (rows, cols) = (rows as usize, cols as usize);
    let per_frame = rows * cols;
    if colour == Colour::YbrFull422 && !encapsulated && cols % 2 == 1 {
        return Err(a.unsupported(format!("YBR_FULL_422 with an odd number of columns ({cols})")));
    }
    let mut raw: Vec<Vec<i32>> = if encapsulated {
        (0..frames)
            .map(|k| decode_encapsulated(&obj_file, &a, k, per_frame, colour, bits, bits_stored, signed))
            .collect::<Result<_, _>>()?
    } else {
        let stored = colour.stored_samples(per_frame);
        let all = decode_pixels(&a, stored.saturating_mul(frames), bits, bits_stored, signed, big_endian)?;
        all.chunks_exact(stored).map(|f| colour_planes(f, per_frame, colour, interleaved, bits_stored)).collect()
    };
    if let Some(p) = &palette {
        for frame in &mut raw {
            *frame = p.apply(frame);
        }
    }
    // MONOCHROME1 shows its lowest value white: stored values are turned over within their
    // range (PS3.3 C.7.6.3.1.2) so that every exported image reads as MONOCHROME2.
    let inverted = colour == Colour::Grey && palette.is_none() && photometric == "MONOCHROME1";
    if inverted {
        let top = if signed { -1 } else { ((1u64 << bits_stored) - 1) as i64 };
        for frame in &mut raw {
            for v in frame.iter_mut() {
                *v = i32::try_from(top - i64::from(*v)).map_err(|_| a.unsupported(format!("MONOCHROME1 value {v} turned over is {} (above {})", top - i64::from(*v), i32::MAX)))?;
            }
        }
    }
    let channels = if palette.is_some() { 3 } else { colour.samples() };
    let cine = frames > 1 && geometry.iter().all(|g| !g.patient);
    let frame_time_ms = if cine { frame_time(&a)? } else { None };

    Ok(geometry
        .into_iter()
        .zip(raw.iter_mut())
        .enumerate()
        .map(|(k, (g, raw))| Slice {
            name: if frames == 1 { name.to_string() } else { format!("{name} frame {}", k + 1) },
            sop: slice_id(&sop, (frames > 1).then_some(k + 1)),
            rows,
            cols,
            channels,
            inverted,
            file: 0,
            cine,
            frame_time_ms,
            g,
            raw: std::mem::take(raw),
        })
        .collect())
}

/// The name of a slice in [`Volume::slice_sops`] and in a stored segmentation: the SOP
/// Instance UID of a single-frame image (`frame` None), `<SOP Instance UID>/<frame number>`
/// (from 1) for a frame of a multi-frame one. A UID holds only digits and dots, so the two
/// cannot clash. [`split_slice_id`] is its inverse.
pub fn slice_id(sop: &str, frame: Option<impl std::fmt::Display>) -> String {
    match frame {
        None => sop.to_string(),
        Some(f) => format!("{sop}/{f}"),
    }
}

/// The SOP Instance UID of a slice id, and its frame number if it names a frame.
pub fn split_slice_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once('/') {
        Some((sop, frame)) => (sop, Some(frame)),
        None => (id, None),
    }
}

/// Where one frame lies and how its stored values become real values.
#[derive(Clone, Copy)]
struct FrameGeometry {
    pos: [f64; 3],
    row_cos: [f64; 3],
    col_cos: [f64; 3],
    /// DICOM PixelSpacing: [between rows, between columns]
    pixel_spacing: [f64; 2],
    thickness: Option<f64>,
    slope: f64,
    intercept: f64,
    /// Placed in the patient by the file; false for a 2D image placed on its own plane
    /// ([`image_plane`]).
    patient: bool,
}

/// The geometry of each of the `frames` frames of an image:
/// - an image with PerFrameFunctionalGroupsSequence (enhanced CT, MR, PET...): each frame's
///   Plane Position, Plane Orientation, Pixel Measures and Pixel Value Transformation
///   macros, from its own item, else from SharedFunctionalGroupsSequence, else (orientation,
///   spacing, thickness, rescale) from the top level;
/// - an RT Dose grid: ImagePositionPatient moved along the slice normal by each value of
///   GridFrameOffsetVector (PS3.3 C.8.8.3.2: relative to the first frame when the first
///   value is 0; z coordinates, for an axial grid, when it equals the position's z);
/// - a single frame: the top level.
///
/// DoseGridScaling, where present, scales the rescaled values (the dose in Gy).
fn frame_geometry(a: &Attrs<'_>, frames: usize) -> Result<Vec<FrameGeometry>, VolumeError> {
    let dose_scaling = a.opt_float(tags::DOSE_GRID_SCALING, "DoseGridScaling")?.unwrap_or(1.0);
    let top = |at: &Attrs<'_>, plane: Option<&Attrs<'_>>, orient: Option<&Attrs<'_>>, measures: Option<&Attrs<'_>>, values: Option<&Attrs<'_>>| -> Result<FrameGeometry, VolumeError> {
        let pos = plane.unwrap_or(at).req_floats::<3>(tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient")?;
        let o = orient.unwrap_or(at);
        let iop = o.req_floats::<6>(tags::IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient")?;
        let (row_cos, col_cos) = o.orientation(iop)?;
        let m = measures.filter(|m| m.get(tags::PIXEL_SPACING).is_some()).unwrap_or(at);
        let pixel_spacing = m.req_floats::<2>(tags::PIXEL_SPACING, "PixelSpacing")?;
        if pixel_spacing.iter().any(|v| *v <= 0.0) {
            return Err(m.invalid("PixelSpacing", format!("{pixel_spacing:?} must be positive")));
        }
        let thickness = measures
            .and_then(|m| m.opt_float(tags::SLICE_THICKNESS, "SliceThickness").ok().flatten())
            .or_else(|| at.opt_float(tags::SLICE_THICKNESS, "SliceThickness").ok().flatten());
        let v = values.filter(|v| v.get(tags::RESCALE_SLOPE).is_some() || v.get(tags::RESCALE_INTERCEPT).is_some()).unwrap_or(at);
        let slope = v.opt_float(tags::RESCALE_SLOPE, "RescaleSlope")?.unwrap_or(1.0);
        let intercept = v.opt_float(tags::RESCALE_INTERCEPT, "RescaleIntercept")?.unwrap_or(0.0);
        Ok(FrameGeometry { pos, row_cos, col_cos, pixel_spacing, thickness, slope: slope * dose_scaling, intercept: intercept * dose_scaling, patient: true })
    };

    if let Some(items) = crate::seg::items(a.obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE) {
        if items.len() != frames {
            return Err(a.invalid("PerFrameFunctionalGroupsSequence", format!("has {} items for {frames} frames", items.len())));
        }
        let shared = crate::seg::first_item(a.obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
        return items
            .iter()
            .enumerate()
            .map(|(k, item)| {
                let name = format!("{} frame {}", a.name, k + 1);
                let group = |tag: Tag| crate::seg::group(item, shared, tag).map(|obj| Attrs { obj, name: &name });
                let at = Attrs { obj: a.obj, name: &name };
                let plane = group(tags::PLANE_POSITION_SEQUENCE).ok_or(VolumeError::Missing { name: name.clone(), keyword: "PlanePositionSequence" })?;
                top(&at, Some(&plane), group(tags::PLANE_ORIENTATION_SEQUENCE).as_ref(), group(tags::PIXEL_MEASURES_SEQUENCE).as_ref(), group(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).as_ref())
            })
            .collect();
    }
    if let Some(detector) = nm_tomo_detector(a) {
        let det = Attrs { obj: detector, name: a.name };
        let first = top(a, Some(&det), Some(&det), None, None)?;
        return nm_tomo_slices(a, first, frames);
    }
    if a.get(tags::IMAGE_POSITION_PATIENT).is_none() && a.get(tags::IMAGE_ORIENTATION_PATIENT).is_none() {
        // A 2D image on its own plane; a multi-frame one (a cine loop, a stack of 2D images)
        // is its frames one after another along k, 1 apart.
        let plane = image_plane(a)?;
        return Ok((0..frames).map(|k| FrameGeometry { pos: [0.0, 0.0, k as f64], ..plane }).collect());
    }
    let first = top(a, None, None, None, None)?;
    if frames == 1 {
        return Ok(vec![first]);
    }
    let Some(offsets) = a.get(tags::GRID_FRAME_OFFSET_VECTOR) else {
        return Err(a.unsupported(format!("multi-frame image (NumberOfFrames = {frames}) that gives no position per frame (neither PerFrameFunctionalGroupsSequence nor GridFrameOffsetVector)")));
    };
    let offsets = offsets.to_multi_float64().map_err(|e| a.invalid("GridFrameOffsetVector", e.to_string()))?;
    if offsets.len() != frames || offsets.iter().any(|v| !v.is_finite()) {
        return Err(a.invalid("GridFrameOffsetVector", format!("{} values for {frames} frames", offsets.len())));
    }
    let normal = normalize(cross(first.row_cos, first.col_cos)).ok_or_else(|| a.invalid("ImageOrientationPatient", "row and column directions are parallel".into()))?;
    let axial = first.row_cos == [1.0, 0.0, 0.0] && first.col_cos == [0.0, 1.0, 0.0];
    let base = if offsets[0] == 0.0 {
        0.0
    } else if axial && (offsets[0] - first.pos[2]).abs() < DUP_TOL_MM {
        first.pos[2]
    } else {
        return Err(a.invalid("GridFrameOffsetVector", format!("first value {} is neither 0 nor the z of ImagePositionPatient of an axial grid", offsets[0])));
    };
    Ok(offsets
        .iter()
        .map(|off| FrameGeometry { pos: [0, 1, 2].map(|r| first.pos[r] + (off - base) * normal[r]), ..first })
        .collect())
}

/// The Detector Information item that places a reconstructed NM tomography (SPECT) image,
/// one whose ImageType value 3 is RECON TOMO or RECON GATED TOMO and whose top level has no
/// ImagePositionPatient: the NM Detector Module (PS3.3 C.8.4.11) puts the position and
/// orientation of the first frame in DetectorInformationSequence, the reconstruction's
/// slices being its frames (sequenced by Slice Vector, C.8.4.8.1.1).
fn nm_tomo_detector<'a>(a: &Attrs<'a>) -> Option<&'a InMemDicomObject> {
    if a.get(tags::IMAGE_POSITION_PATIENT).is_some() {
        return None;
    }
    let image_type = a.get(tags::IMAGE_TYPE)?.to_multi_str().ok()?.into_owned();
    if !matches!(image_type.get(2).map(|v| v.trim()), Some("RECON TOMO" | "RECON GATED TOMO")) {
        return None;
    }
    crate::seg::first_item(a.obj, tags::DETECTOR_INFORMATION_SEQUENCE).filter(|d| d.get(tags::IMAGE_POSITION_PATIENT).is_some())
}

/// The frames of a reconstructed NM tomography image, `first` being the first slice's
/// geometry: slice n (SliceVector, from 1; frame order when absent) lies (n - 1) x
/// SpacingBetweenSlices (else SliceThickness) along the normal row x column of the first
/// frame; a negative spacing stacks the slices the other way (NM Reconstruction Module,
/// PS3.3 C.8.4.15). A gated reconstruction (several time slots) is 4D: an error.
fn nm_tomo_slices(a: &Attrs<'_>, first: FrameGeometry, frames: usize) -> Result<Vec<FrameGeometry>, VolumeError> {
    let slots = a.opt_uint(tags::NUMBER_OF_TIME_SLOTS, "NumberOfTimeSlots")?.unwrap_or(1);
    if slots > 1 {
        return Err(a.unsupported(format!("gated NM tomography with {slots} time slots: a volume per slot (4D), which training exports do not write")));
    }
    let spacing = match a.opt_float(tags::SPACING_BETWEEN_SLICES, "SpacingBetweenSlices")? {
        Some(s) => s,
        None => first.thickness.ok_or_else(|| a.missing("SpacingBetweenSlices"))?,
    };
    if !spacing.is_finite() || spacing == 0.0 {
        return Err(a.invalid("SpacingBetweenSlices", format!("{spacing} places every slice at the same position")));
    }
    let slices: Vec<f64> = match a.get(tags::SLICE_VECTOR) {
        None => (0..frames).map(|k| k as f64).collect(),
        Some(v) => {
            let v = v.to_multi_int::<i64>().map_err(|e| a.invalid("SliceVector", e.to_string()))?;
            if v.len() != frames || v.iter().any(|n| *n < 1) {
                return Err(a.invalid("SliceVector", format!("{} values for {frames} frames, each a slice number from 1", v.len())));
            }
            v.iter().map(|n| (n - 1) as f64).collect()
        }
    };
    let normal = normalize(cross(first.row_cos, first.col_cos)).ok_or_else(|| a.invalid("ImageOrientationPatient", "row and column directions are parallel".into()))?;
    Ok(slices.iter().map(|n| FrameGeometry { pos: [0, 1, 2].map(|r| first.pos[r] + n * spacing * normal[r]), ..first }).collect())
}

/// The time between the frames of a cine loop (ms): FrameTime (0018,1063), else 1000 /
/// CineRate (0018,0040) frames per second. A value that is not a positive number is an error.
fn frame_time(a: &Attrs<'_>) -> Result<Option<f64>, VolumeError> {
    if let Some(t) = a.opt_float(tags::FRAME_TIME, "FrameTime")? {
        if !(t.is_finite() && t > 0.0) {
            return Err(a.invalid("FrameTime", format!("{t} ms (a positive number expected)")));
        }
        return Ok(Some(t));
    }
    if let Some(rate) = a.opt_float(tags::CINE_RATE, "CineRate")? {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(a.invalid("CineRate", format!("{rate} frames per second (a positive number expected)")));
        }
        return Ok(Some(1000.0 / rate));
    }
    Ok(None)
}

/// The geometry of a 2D image that the file places in no patient frame (no
/// ImagePositionPatient or ImageOrientationPatient: projection radiographs, ultrasound,
/// photographs, secondary captures): its own plane, columns along x and rows along y of
/// DICOM's patient axes, the first pixel at the origin. The spacing is PixelSpacing, else
/// ImagerPixelSpacing (projection radiography, at the detector), else
/// NominalScannedPixelSpacing (scanned film), else 1 mm.
fn image_plane(a: &Attrs<'_>) -> Result<FrameGeometry, VolumeError> {
    let mut pixel_spacing = [1.0, 1.0];
    for (tag, kw) in [(tags::PIXEL_SPACING, "PixelSpacing"), (tags::IMAGER_PIXEL_SPACING, "ImagerPixelSpacing"), (tags::NOMINAL_SCANNED_PIXEL_SPACING, "NominalScannedPixelSpacing")] {
        if a.get(tag).is_some() {
            pixel_spacing = a.req_floats::<2>(tag, kw)?;
            if pixel_spacing.iter().any(|v| *v <= 0.0) {
                return Err(a.invalid(kw, format!("{pixel_spacing:?} must be positive")));
            }
            break;
        }
    }
    Ok(FrameGeometry {
        pos: [0.0; 3],
        row_cos: [1.0, 0.0, 0.0],
        col_cos: [0.0, 1.0, 0.0],
        pixel_spacing,
        thickness: None,
        slope: a.opt_float(tags::RESCALE_SLOPE, "RescaleSlope")?.unwrap_or(1.0),
        intercept: a.opt_float(tags::RESCALE_INTERCEPT, "RescaleIntercept")?.unwrap_or(0.0),
        patient: false,
    })
}

/// The largest frame cohort decodes from compressed pixel data. Compressed data says little
/// about the size it decodes to (a blank image compresses to almost nothing), so a corrupt
/// Rows x Columns must not decide how much memory is taken: 4096 x 4096 16-bit images are
/// 32 MiB, the largest CT, MR and mammography frames well below this.
const MAX_DECODED_FRAME: usize = 256 << 20;

/// Decode frame `frame` (from 0) of encapsulated pixel data into stored values: `count`
/// pixels, plane by plane for a colour image (R, G, B).
#[allow(clippy::too_many_arguments)]
fn decode_encapsulated(
    file: &dicom_object::DefaultDicomObject,
    a: &Attrs<'_>,
    frame: usize,
    count: usize,
    colour: Colour,
    bits: u32,
    bits_stored: u32,
    signed: bool,
) -> Result<Vec<i32>, VolumeError> {
    let spp = colour.samples();
    match a.get(tags::PIXEL_DATA).as_deref().map(|e| e.value()) {
        None => return Err(a.missing("PixelData")),
        Some(Value::PixelSequence(_)) => {}
        Some(_) => return Err(a.invalid("PixelData", "is not encapsulated, as its transfer syntax says it is".into())),
    }
    let bytes_per = (bits / 8) as usize;
    let need = count.saturating_mul(bytes_per).saturating_mul(spp);
    if need > MAX_DECODED_FRAME {
        return Err(a.unsupported(format!("a frame of {need} bytes decoded (more than {MAX_DECODED_FRAME})")));
    }
    let cannot = |why: String| a.invalid("PixelData", format!("cannot decode frame {}: {why}", frame + 1));
    if file.meta().transfer_syntax().trim_end_matches('\0') == RLE_LOSSLESS {
        // dicom-pixeldata 0.10 decodes RLE of 8 and 16 bits only; RT Dose grids are 32.
        let Some(Value::PixelSequence(seq)) = a.obj.element_opt(tags::PIXEL_DATA).ok().flatten().map(|e| e.value()) else {
            return Err(a.missing("PixelData"));
        };
        let fragment = seq.fragments().get(frame).ok_or_else(|| cannot(format!("RLE has one fragment per frame, and there are {}", seq.fragments().len())))?;
        if colour == Colour::YbrFull422 {
            return Err(a.invalid("PhotometricInterpretation", "YBR_FULL_422 with RLE (PS3.5 G.2 allows RGB or YBR_FULL only)".into()));
        }
        let data = rle_decode(fragment, count, bytes_per, spp).map_err(cannot)?;
        let values = stored_values(a, &data, bytes_per, bits_stored, signed, u16::from_le_bytes)?;
        return Ok(colour_planes(&values, count, colour, false, bits_stored));
    }
    let frame_no = u32::try_from(frame).map_err(|_| a.invalid("NumberOfFrames", format!("{frame} frames")))?;
    let decoded = crate::dicom::decode_pixel_data(file, Some(frame_no)).map_err(cannot)?;
    let data = decoded.data;
    if data.len() < need {
        return Err(a.invalid("PixelData", format!("decodes to {} bytes, but {count} pixels of {spp} sample(s) of {bits} bits need {need}", data.len())));
    }
    // The decoders give samples in native byte order, a colour pixel's samples together, and
    // full-resolution colour: RGB, or YCbCr where they leave it so (the header is no guide:
    // the JPEG decoder converts YBR_FULL_422 to RGB).
    let values = stored_values(a, &data[..need], bytes_per, bits_stored, signed, u16::from_ne_bytes)?;
    let after = match colour {
        Colour::Grey => Colour::Grey,
        _ if decoded.photometric.starts_with("YBR_FULL") => Colour::YbrFull,
        _ => Colour::Rgb,
    };
    Ok(colour_planes(&values, count, after, true, bits_stored))
}

/// The red, green and blue lookup tables of a PALETTE COLOR image (PS3.3 C.7.6.3.1.5): a
/// stored value below the first mapped value takes the first entry, above the last the last.
/// A table may be given whole or segmented ([`expand_segmented`]).
struct Palette {
    first: i64,
    /// R, G and B entries, as stored (8 or 16 bits)
    tables: [Vec<i32>; 3],
}

impl Palette {
    fn read(a: &Attrs<'_>) -> Result<Palette, VolumeError> {
        let sets = [
            (tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, "RedPaletteColorLookupTableDescriptor", tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, "RedPaletteColorLookupTableData", tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA),
            (tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, "GreenPaletteColorLookupTableDescriptor", tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA, "GreenPaletteColorLookupTableData", tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA),
            (tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, "BluePaletteColorLookupTableDescriptor", tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA, "BluePaletteColorLookupTableData", tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA),
        ];
        let mut first = None;
        let mut tables: [Vec<i32>; 3] = Default::default();
        for (k, (desc_tag, desc_kw, data_tag, data_kw, segmented)) in sets.into_iter().enumerate() {
            let d = a.req_floats::<3>(desc_tag, desc_kw)?;
            let entries = match d[0] {
                0.0 => 65536,
                n if (1.0..=65535.0).contains(&n) => n as usize,
                n => return Err(a.invalid(desc_kw, format!("{n} entries"))),
            };
            let f = d[1] as i64;
            if *first.get_or_insert(f) != f {
                return Err(a.invalid(desc_kw, format!("first mapped value {f} differs from the red table's")));
            }
            let (elem, data_kw, is_segmented) = match (a.get(data_tag), a.get(segmented)) {
                (Some(e), _) => (e, data_kw, false),
                (None, Some(e)) => (e, SEGMENTED_KEYWORDS[k], true),
                (None, None) => return Err(a.missing(data_kw)),
            };
            // The table is stored as 8 or 16 bits allocated: 8-bit entries two to a word.
            let bytes: Vec<u8> = match elem.value() {
                Value::Primitive(PrimitiveValue::U16(v)) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
                Value::Primitive(PrimitiveValue::U8(b)) => b.to_vec(),
                _ => return Err(a.invalid(data_kw, "is not a table of words or bytes".into())),
            };
            let mut values: Vec<i32> = match d[2] {
                8.0 => bytes.iter().map(|&b| i32::from(b)).collect(),
                16.0 => bytes.chunks_exact(2).map(|c| i32::from(u16::from_le_bytes([c[0], c[1]]))).collect(),
                n => return Err(a.invalid(desc_kw, format!("{n} bits an entry (must be 8 or 16)"))),
            };
            if is_segmented {
                values = expand_segmented(&values, entries, d[2] == 8.0).map_err(|e| a.invalid(data_kw, e))?;
            }
            if values.len() < entries {
                return Err(a.invalid(data_kw, format!("holds {} entries, its descriptor says {entries}", values.len())));
            }
            tables[k] = values[..entries].to_vec();
        }
        Ok(Palette { first: first.unwrap_or(0), tables })
    }

    /// Grey stored values to an R, a G and a B plane.
    fn apply(&self, values: &[i32]) -> Vec<i32> {
        let mut out = Vec::with_capacity(values.len() * 3);
        for t in &self.tables {
            let last = t.len() as i64 - 1;
            out.extend(values.iter().map(|&v| t[(i64::from(v) - self.first).clamp(0, last) as usize]));
        }
        out
    }
}

const SEGMENTED_KEYWORDS: [&str; 3] = ["SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData"];

/// Expand segmented palette data (PS3.3 C.7.9.2) to its `entries` table entries. Each
/// segment is an opcode, a length and its data: 0, discrete: `length` entries as they are; 1,
/// linear: one end value, the `length` entries after the previous segment's last on the
/// straight line to it (rounded half to even, as pydicom and numpy round); 2, indirect: the
/// `length` segments that start at an offset (in entries: 32 bits, least significant 16
/// first; with 8-bit entries, four of them, least significant first) copied. Fewer entries
/// than `entries` is an error, as is anything that would expand past it.
fn expand_segmented(data: &[i32], entries: usize, bits8: bool) -> Result<Vec<i32>, String> {
    let mut out = Vec::with_capacity(entries);
    segments(data, 0, None, &mut out, entries, bits8, 0)?;
    if out.len() < entries {
        return Err(format!("segments expand to {} entries, the descriptor says {entries}", out.len()));
    }
    Ok(out)
}

/// Expand the segments of `data` from `at` (at most `count` of them) onto `out`.
fn segments(data: &[i32], mut at: usize, count: Option<usize>, out: &mut Vec<i32>, entries: usize, bits8: bool, depth: usize) -> Result<(), String> {
    let word = |i: usize| data.get(i).copied().ok_or_else(|| format!("a segment runs past the end of the data ({} entries)", data.len()));
    let mut done = 0;
    // A trailing entry alone is padding (8-bit data padded to an even length).
    while at + 1 < data.len() && count.is_none_or(|c| done < c) {
        let (opcode, length) = (data[at], data[at + 1] as usize);
        if out.len() + length > entries && opcode != 2 {
            return Err(format!("segments expand past the {entries} entries of the descriptor"));
        }
        match opcode {
            0 => {
                out.extend((0..length).map(|i| word(at + 2 + i)).collect::<Result<Vec<_>, _>>()?);
                at += 2 + length;
            }
            1 => {
                let y0 = *out.last().ok_or("a linear segment comes first, with no value to start from")?;
                let y1 = word(at + 2)?;
                if length > 0 {
                    let (start, end) = (f64::from(y0) + f64::from(y1 - y0) / length as f64, f64::from(y1));
                    let step = if length > 1 { (end - start) / (length - 1) as f64 } else { 0.0 };
                    out.extend((0..length).map(|i| if i + 1 == length { y1 } else { (start + i as f64 * step).round_ties_even() as i32 }));
                }
                at += 3;
            }
            2 => {
                if depth >= 4 || out.is_empty() {
                    return Err("an indirect segment nested too deep, or first".into());
                }
                let (parts, bits) = if bits8 { (4, 8) } else { (2, 16) };
                let mut offset = 0usize;
                for i in (0..parts).rev() {
                    offset = offset << bits | (word(at + 2 + i)? as usize & ((1 << bits) - 1));
                }
                segments(data, offset, Some(length), out, entries, bits8, depth + 1)?;
                at += 2 + parts;
            }
            op => return Err(format!("segment opcode {op} at entry {at} (0, 1 or 2 expected)")),
        }
        done += 1;
    }
    Ok(())
}

/// How a pixel's samples are stored: grey (one sample), or colour to become R, G and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Colour {
    Grey,
    /// RGB, and JPEG 2000's YBR_RCT and YBR_ICT, whose decoder gives RGB.
    Rgb,
    /// YCbCr, full resolution (PS3.3 C.7.6.3.1.2).
    YbrFull,
    /// YCbCr with the chroma of two horizontal neighbours shared: Y Y Cb Cr per pair.
    YbrFull422,
}

impl Colour {
    /// Samples per pixel after decoding.
    fn samples(self) -> usize {
        if self == Colour::Grey {
            1
        } else {
            3
        }
    }

    /// Stored samples of one frame of `pixels` pixels.
    fn stored_samples(self, pixels: usize) -> usize {
        match self {
            Colour::Grey => pixels,
            Colour::YbrFull422 => pixels.saturating_mul(2),
            _ => pixels.saturating_mul(3),
        }
    }
}

/// One frame's stored samples as planes: grey unchanged, colour as an R, a G and a B plane
/// of `pixels` values each. `interleaved`: a colour pixel's samples are together (Planar
/// Configuration 0), else plane by plane. YCbCr becomes RGB by PS3.3 C.7.6.3.1.2, rounded
/// and clamped to the range of `bits_stored` bits as pydicom does.
fn colour_planes(s: &[i32], pixels: usize, colour: Colour, interleaved: bool, bits_stored: u32) -> Vec<i32> {
    let max = ((1u64 << bits_stored) - 1) as f64;
    let half = (1u64 << (bits_stored - 1)) as f64;
    let ybr = |y: i32, cb: i32, cr: i32| -> [i32; 3] {
        let (y, cb, cr) = (f64::from(y), f64::from(cb) - half, f64::from(cr) - half);
        let v = [y + 1.402 * cr, y - 0.114 * 1.772 / 0.587 * cb - 0.299 * 1.402 / 0.587 * cr, y + 1.772 * cb];
        v.map(|c| (c + 0.5).floor().clamp(0.0, max) as i32)
    };
    if colour == Colour::Grey {
        return s[..pixels].to_vec();
    }
    let mut out = vec![0i32; pixels * 3];
    let (r, gb) = out.split_at_mut(pixels);
    let (g, b) = gb.split_at_mut(pixels);
    let mut put = |i: usize, px: [i32; 3]| {
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    };
    match colour {
        Colour::Grey => {}
        Colour::YbrFull422 => {
            for (p, q) in s.chunks_exact(4).take(pixels / 2).enumerate() {
                put(2 * p, ybr(q[0], q[2], q[3]));
                put(2 * p + 1, ybr(q[1], q[2], q[3]));
            }
        }
        Colour::Rgb | Colour::YbrFull => {
            for i in 0..pixels {
                let px = if interleaved { [s[3 * i], s[3 * i + 1], s[3 * i + 2]] } else { [s[i], s[pixels + i], s[2 * pixels + i]] };
                put(i, if colour == Colour::YbrFull { ybr(px[0], px[1], px[2]) } else { px });
            }
        }
    }
    out
}

/// One frame of grey-scale RLE Lossless (PS3.5 Annex G) to `count` samples of `bytes_per`
/// bytes each, little endian: a 64-byte header (the number of segments, then the offset of
/// each), one PackBits segment per byte of a sample, the most significant first.
///
/// A colour image (`spp` 3) has one segment per byte of each sample, the samples in order
/// (R, then G, then B); the result holds the samples plane by plane, `count` of each.
pub(crate) fn rle_decode(fragment: &[u8], count: usize, bytes_per: usize, spp: usize) -> Result<Vec<u8>, String> {
    let word = |i: usize| fragment.get(4 * i..4 * i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let segments = word(0).ok_or("the RLE header is truncated")?;
    if segments != bytes_per * spp {
        return Err(format!("{segments} RLE segments, but {spp} sample(s) of {bytes_per} byte(s) a pixel need {}", bytes_per * spp));
    }
    let mut out = vec![0u8; count * bytes_per * spp];
    for seg in 0..segments {
        let start = word(1 + seg).ok_or("the RLE header is truncated")?;
        let end = if seg + 1 < segments { word(2 + seg).ok_or("the RLE header is truncated")? } else { fragment.len() };
        let data = fragment.get(start..end).filter(|_| start >= 64).ok_or_else(|| format!("RLE segment {} at bytes {start}..{end} of a fragment of {}", seg + 1, fragment.len()))?;
        // Segment `seg` holds byte `bytes_per - 1 - seg % bytes_per` (little-endian order) of
        // every sample of plane `seg / bytes_per`.
        let plane = &mut out[seg / bytes_per * count * bytes_per..][..count * bytes_per];
        let byte = bytes_per - 1 - seg % bytes_per;
        let (mut at, mut n) = (0, 0);
        while n < count && at < data.len() {
            let control = data[at] as i8;
            at += 1;
            match control {
                -128 => {}
                0.. => {
                    let run = control as usize + 1;
                    let lit = data.get(at..at + run).ok_or_else(|| format!("RLE segment {} ends inside a literal run", seg + 1))?;
                    for &b in lit.iter().take(count - n) {
                        plane[n * bytes_per + byte] = b;
                        n += 1;
                    }
                    at += run;
                }
                _ => {
                    let b = *data.get(at).ok_or_else(|| format!("RLE segment {} ends inside a repeat run", seg + 1))?;
                    at += 1;
                    for _ in 0..(1 - control as isize).min((count - n) as isize) {
                        plane[n * bytes_per + byte] = b;
                        n += 1;
                    }
                }
            }
        }
        if n < count {
            return Err(format!("RLE segment {} decodes to {n} bytes, {count} needed", seg + 1));
        }
    }
    Ok(out)
}

/// The stored values of `samples`, 1, 2 or 4 bytes each (`u16_of` reads 2 bytes in their
/// byte order): each sample's low `bits_stored` bits, sign-extended when signed. An unsigned
/// 32-bit value above `i32::MAX` is an error (it names the value); no dose grid or image
/// seen holds one.
fn stored_values(a: &Attrs<'_>, samples: &[u8], bytes_per: usize, bits_stored: u32, signed: bool, u16_of: fn([u8; 2]) -> u16) -> Result<Vec<i32>, VolumeError> {
    let value = |u: u32| -> Result<i32, VolumeError> {
        if signed {
            let shift = 32 - bits_stored;
            Ok(((u << shift) as i32) >> shift)
        } else {
            let u = if bits_stored >= 32 { u } else { u & ((1u32 << bits_stored) - 1) };
            i32::try_from(u).map_err(|_| a.unsupported(format!("stored pixel value {u} (above {})", i32::MAX)))
        }
    };
    match bytes_per {
        1 => samples.iter().map(|&b| value(u32::from(b))).collect(),
        2 => samples.chunks_exact(2).map(|c| value(u32::from(u16_of([c[0], c[1]])))).collect(),
        // Samples of 4 bytes in the byte order of `u16_of`: its low half first if little endian.
        _ => {
            let little = u16_of([1, 0]) == 1;
            samples
                .chunks_exact(4)
                .map(|c| {
                    let (lo, hi) = if little { (u16_of([c[0], c[1]]), u16_of([c[2], c[3]])) } else { (u16_of([c[2], c[3]]), u16_of([c[0], c[1]])) };
                    value(u32::from(lo) | u32::from(hi) << 16)
                })
                .collect()
        }
    }
}

fn decode_pixels(
    a: &Attrs<'_>,
    count: usize,
    bits: u32,
    bits_stored: u32,
    signed: bool,
    big_endian: bool,
) -> Result<Vec<i32>, VolumeError> {
    let elem = a
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| a.missing("PixelData"))?;
    let prim = match elem.value() {
        Value::Primitive(p) => p,
        Value::PixelSequence(_) => {
            return Err(a.unsupported("encapsulated (compressed) pixel data".into()))
        }
        Value::Sequence(_) => return Err(a.invalid("PixelData", "is a sequence".into())),
    };
    // Bytes in little-endian sample order. dicom-object decodes OW values to
    // native u16 per the transfer syntax; OB stays raw bytes.
    // A big-endian 32-bit sample read as two native 16-bit words has its high word first.
    let le: Cow<[u8]> = match prim {
        PrimitiveValue::U8(b) if big_endian && bits > 8 => {
            Cow::Owned(b.chunks(bits as usize / 8).flat_map(|c| c.iter().rev().copied()).collect())
        }
        PrimitiveValue::U8(b) => Cow::Borrowed(&b[..]),
        PrimitiveValue::U16(v) if big_endian && bits == 32 => {
            Cow::Owned(v.chunks(2).flat_map(|c| c.iter().rev().flat_map(|x| x.to_le_bytes())).collect())
        }
        PrimitiveValue::U16(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        PrimitiveValue::I16(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        PrimitiveValue::U32(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        PrimitiveValue::I32(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        other => {
            return Err(a.invalid(
                "PixelData",
                format!(
                    "unexpected value type {:?}",
                    dicom_core::value::DicomValueType::value_type(other)
                ),
            ))
        }
    };
    let bytes_per = (bits / 8) as usize;
    let need = count.saturating_mul(bytes_per);
    if le.len() < need {
        return Err(a.invalid(
            "PixelData",
            format!(
                "{} bytes, but {count} pixels of {bits} bits need {need}",
                le.len()
            ),
        ));
    }
    stored_values(a, &le[..need], bytes_per, bits_stored, signed, u16::from_le_bytes)
}

/// The value of a standard element stored as UN, in its dictionary VR (text, or the binary
/// numbers little endian); `None` for a private or unknown tag, a VR kept as bytes, or
/// bytes that do not fit the VR.
fn un_as_dictionary_vr(tag: Tag, bytes: &[u8]) -> Option<(VR, PrimitiveValue)> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    let vr = dicom_dictionary_std::StandardDataDictionary.by_tag(tag)?.vr().relaxed();
    let nums = |n: usize| bytes.len().is_multiple_of(n).then(|| bytes.chunks_exact(n));
    let value = match vr {
        VR::AE | VR::AS | VR::CS | VR::DA | VR::DS | VR::DT | VR::IS | VR::LO | VR::PN | VR::SH | VR::TM | VR::UC | VR::UI => {
            let text = std::str::from_utf8(bytes).ok()?;
            PrimitiveValue::Strs(text.trim_end_matches(['\0', ' ']).split('\\').map(str::to_string).collect())
        }
        VR::LT | VR::ST | VR::UT | VR::UR => PrimitiveValue::Str(std::str::from_utf8(bytes).ok()?.trim_end_matches(['\0', ' ']).to_string()),
        VR::US => PrimitiveValue::U16(nums(2)?.map(|c| u16::from_le_bytes([c[0], c[1]])).collect()),
        VR::SS => PrimitiveValue::I16(nums(2)?.map(|c| i16::from_le_bytes([c[0], c[1]])).collect()),
        VR::UL => PrimitiveValue::U32(nums(4)?.map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        VR::SL => PrimitiveValue::I32(nums(4)?.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        VR::FL => PrimitiveValue::F32(nums(4)?.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        VR::FD => PrimitiveValue::F64(nums(8)?.map(|c| f64::from_le_bytes(std::array::from_fn(|i| c[i]))).collect()),
        _ => return None,
    };
    Some((vr, value))
}

struct Attrs<'a> {
    obj: &'a InMemDicomObject,
    name: &'a str,
}

impl Attrs<'_> {
    fn missing(&self, keyword: &'static str) -> VolumeError {
        VolumeError::Missing {
            name: self.name.to_string(),
            keyword,
        }
    }
    fn invalid(&self, keyword: &'static str, reason: String) -> VolumeError {
        VolumeError::Invalid {
            name: self.name.to_string(),
            keyword,
            reason,
        }
    }
    fn unsupported(&self, reason: String) -> VolumeError {
        VolumeError::Unsupported {
            name: self.name.to_string(),
            reason,
        }
    }

    /// The element, unless absent or with an empty value. A standard element stored as UN
    /// (explicit VR writers that did not know its VR) is read as its dictionary VR, as
    /// PS3.5 6.2.2 allows: its bytes are the value encoded little endian.
    fn get(&self, tag: Tag) -> Option<Cow<'_, InMemElement>> {
        let e = self.obj.element_opt(tag).ok().flatten()?;
        let e = match e.value() {
            Value::Primitive(PrimitiveValue::U8(bytes)) if e.vr() == VR::UN => match un_as_dictionary_vr(tag, bytes) {
                Some((vr, value)) => Cow::Owned(InMemElement::new(tag, vr, value)),
                None => Cow::Borrowed(e),
            },
            _ => Cow::Borrowed(e),
        };
        let blank = |s: &str| s.trim_matches(|c: char| c.is_whitespace() || c == '\0').is_empty();
        match e.value() {
            Value::Primitive(PrimitiveValue::Empty) => None,
            // Only text is looked at as text: formatting Pixel Data (OW) as a string to see
            // whether it is empty took a quarter of a CT series' export.
            Value::Primitive(p @ (PrimitiveValue::Str(_) | PrimitiveValue::Strs(_))) if blank(&p.to_str()) => None,
            Value::Primitive(p) if p.multiplicity() == 0 => None,
            _ => Some(e),
        }
    }

    fn req_str(&self, tag: Tag, kw: &'static str) -> Result<String, VolumeError> {
        let e = self.get(tag).ok_or_else(|| self.missing(kw))?;
        let s = e
            .to_str()
            .map_err(|err| self.invalid(kw, err.to_string()))?;
        Ok(s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string())
    }

    fn opt_uint(&self, tag: Tag, kw: &'static str) -> Result<Option<u32>, VolumeError> {
        self.get(tag)
            .map(|e| {
                e.to_int::<u32>()
                    .map_err(|err| self.invalid(kw, err.to_string()))
            })
            .transpose()
    }

    fn req_uint(&self, tag: Tag, kw: &'static str) -> Result<u32, VolumeError> {
        self.opt_uint(tag, kw)?.ok_or_else(|| self.missing(kw))
    }

    fn opt_float(&self, tag: Tag, kw: &'static str) -> Result<Option<f64>, VolumeError> {
        match self.get(tag) {
            None => Ok(None),
            Some(e) => {
                let v = e
                    .to_float64()
                    .map_err(|err| self.invalid(kw, err.to_string()))?;
                if !v.is_finite() {
                    return Err(self.invalid(kw, format!("{v} is not finite")));
                }
                Ok(Some(v))
            }
        }
    }

    /// The row and column direction cosines of ImageOrientationPatient `iop`, normalised;
    /// an error unless they are two orthogonal directions.
    fn orientation(&self, iop: [f64; 6]) -> Result<([f64; 3], [f64; 3]), VolumeError> {
        let bad = || self.invalid("ImageOrientationPatient", format!("{iop:?} is not two orthogonal directions"));
        let row = normalize([iop[0], iop[1], iop[2]]).ok_or_else(bad)?;
        let col = normalize([iop[3], iop[4], iop[5]]).ok_or_else(bad)?;
        if dot(row, col).abs() > 0.01 {
            return Err(bad());
        }
        Ok((row, col))
    }

    fn req_floats<const N: usize>(
        &self,
        tag: Tag,
        kw: &'static str,
    ) -> Result<[f64; N], VolumeError> {
        let e = self.get(tag).ok_or_else(|| self.missing(kw))?;
        let v = e
            .to_multi_float64()
            .map_err(|err| self.invalid(kw, err.to_string()))?;
        let arr: [f64; N] = v
            .as_slice()
            .try_into()
            .map_err(|_| self.invalid(kw, format!("has {} values, expected {N}", v.len())))?;
        if arr.iter().any(|x| !x.is_finite()) {
            return Err(self.invalid(kw, format!("{arr:?} is not finite")));
        }
        Ok(arr)
    }
}

// ---------------------------------------------------------------------------
// Length pre-scan (guards dicom-object against corrupt element lengths)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Enc {
    explicit: bool,
    big: bool,
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const MAX_DEPTH: usize = 32;

fn rd_u16(b: &[u8], at: usize, big: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(s)
    } else {
        u16::from_le_bytes(s)
    })
}

fn rd_u32(b: &[u8], at: usize, big: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

/// Element header at `at`: (group, element, VR bytes if explicit, value length, header length).
fn element_header(
    b: &[u8],
    at: usize,
    end: usize,
    enc: Enc,
) -> Result<(u16, u16, [u8; 2], u32, usize), String> {
    let truncated = || format!("element header at byte {at} is truncated");
    if at + 8 > end {
        return Err(truncated());
    }
    let g = rd_u16(b, at, enc.big).ok_or_else(truncated)?;
    let e = rd_u16(b, at + 2, enc.big).ok_or_else(truncated)?;
    if g == 0xFFFE || !enc.explicit {
        let len = rd_u32(b, at + 4, enc.big).ok_or_else(truncated)?;
        return Ok((g, e, *b"  ", len, 8));
    }
    let vr = [b[at + 4], b[at + 5]];
    match &vr {
        b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UN" | b"UR" | b"UT"
        | b"SV" | b"UV" => {
            if at + 12 > end {
                return Err(truncated());
            }
            let len = rd_u32(b, at + 8, enc.big).ok_or_else(truncated)?;
            Ok((g, e, vr, len, 12))
        }
        b"AE" | b"AS" | b"AT" | b"CS" | b"DA" | b"DS" | b"DT" | b"FL" | b"FD" | b"IS" | b"LO"
        | b"LT" | b"PN" | b"SH" | b"SL" | b"SS" | b"ST" | b"TM" | b"UI" | b"UL" | b"US" => {
            let len = rd_u16(b, at + 6, enc.big).ok_or_else(truncated)?;
            Ok((g, e, vr, u32::from(len), 8))
        }
        _ => Err(format!(
            "element ({g:04X},{e:04X}) at byte {at} has unknown VR {:?}",
            String::from_utf8_lossy(&vr)
        )),
    }
}

/// Walk the file meta group (explicit VR LE) after "DICM"; returns where it ends.
fn scan_meta_group(b: &[u8]) -> Result<usize, String> {
    let enc = Enc {
        explicit: true,
        big: false,
    };
    let mut at = 4;
    while rd_u16(b, at, false) == Some(0x0002) {
        let (g, e, _, len, hl) = element_header(b, at, b.len(), enc)?;
        if len == UNDEFINED {
            return Err(format!("({g:04X},{e:04X}) has undefined length"));
        }
        at = checked_end(at + hl, len, b.len(), g, e)?;
    }
    Ok(at)
}

fn checked_end(start: usize, len: u32, end: usize, g: u16, e: u16) -> Result<usize, String> {
    let stop = start.checked_add(len as usize).filter(|&s| s <= end);
    stop.ok_or_else(|| {
        format!(
            "({g:04X},{e:04X}) claims {len} bytes but only {} remain",
            end.saturating_sub(start)
        )
    })
}

/// Check the lengths of the elements in `b[at..end]`, recursing into sequences.
/// With `in_item`, an item delimiter ends the walk.
fn scan_elements(
    b: &[u8],
    mut at: usize,
    end: usize,
    enc: Enc,
    in_item: bool,
    depth: usize,
) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err("sequences nested too deeply".into());
    }
    while at < end {
        let (g, e, vr, len, hl) = element_header(b, at, end, enc)?;
        at += hl;
        if (g, e) == (0xFFFE, 0xE00D) && in_item {
            return Ok(at);
        }
        if len == UNDEFINED {
            let inner = if &vr == b"UN" {
                Enc {
                    explicit: false,
                    big: false,
                }
            } else {
                enc
            };
            let fragments = (g, e) == (0x7FE0, 0x0010);
            at = scan_items(b, at, end, inner, None, fragments, depth + 1)?;
        } else {
            let stop = checked_end(at, len, end, g, e)?;
            let is_sq = if enc.explicit { &vr == b"SQ" } else { false };
            if is_sq {
                scan_items(b, at, stop, enc, Some(stop), false, depth + 1)?;
            }
            at = stop;
        }
    }
    if in_item {
        return Err("item without delimiter at end of data".into());
    }
    Ok(at)
}

/// Check the items of a sequence starting at `at`; `defined_end` is the end
/// of a defined-length sequence, otherwise a sequence delimiter ends it.
fn scan_items(
    b: &[u8],
    mut at: usize,
    end: usize,
    enc: Enc,
    defined_end: Option<usize>,
    fragments: bool,
    depth: usize,
) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err("sequences nested too deeply".into());
    }
    loop {
        if defined_end.is_some_and(|d| at >= d) {
            return Ok(at);
        }
        let big = enc.big;
        let (g, e, len) = match (
            rd_u16(b, at, big),
            rd_u16(b, at + 2, big),
            rd_u32(b, at + 4, big),
        ) {
            (Some(g), Some(e), Some(l)) if at + 8 <= end => (g, e, l),
            _ => return Err(format!("sequence item header at byte {at} is truncated")),
        };
        at += 8;
        match (g, e) {
            (0xFFFE, 0xE0DD) => return Ok(at),
            (0xFFFE, 0xE000) if len == UNDEFINED && !fragments => {
                at = scan_elements(b, at, end, enc, true, depth + 1)?;
            }
            (0xFFFE, 0xE000) if len != UNDEFINED => {
                let stop = checked_end(at, len, end, g, e)?;
                if !fragments {
                    scan_elements(b, at, stop, enc, false, depth + 1)?;
                }
                at = stop;
            }
            _ => {
                return Err(format!(
                    "expected a sequence item at byte {}, found ({g:04X},{e:04X})",
                    at - 8
                ))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Small linear algebra
// ---------------------------------------------------------------------------

type M3 = [[f64; 3]; 3];

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn normalize(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(a, a).sqrt();
    (n > 1e-6 && n.is_finite()).then(|| a.map(|c| c / n))
}

fn linear(a: &[[f64; 4]; 4]) -> M3 {
    [0, 1, 2].map(|r| [a[r][0], a[r][1], a[r][2]])
}

fn col_norms(m: &M3) -> [f64; 3] {
    [0, 1, 2].map(|c| (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt())
}

fn mul3(a: &M3, b: &M3) -> M3 {
    [0, 1, 2].map(|r| [0, 1, 2].map(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}

fn inv3(m: &M3) -> Option<M3> {
    let det = dot(m[0], cross(m[1], m[2]));
    if det == 0.0 || !det.is_finite() {
        return None;
    }
    // rows of the inverse transposed = cross products of the rows of m
    let c0 = cross(m[1], m[2]);
    let c1 = cross(m[2], m[0]);
    let c2 = cross(m[0], m[1]);
    Some([0, 1, 2].map(|r| [c0[r] / det, c1[r] / det, c2[r] / det]))
}

fn checked_count(d: [usize; 3]) -> Option<usize> {
    d[0].checked_mul(d[1])?.checked_mul(d[2])
}

fn fmt3(v: [f64; 3]) -> String {
    format!("({:.4}, {:.4}, {:.4})", v[0], v[1], v[2])
}

fn fmt_m3(m: &M3) -> String {
    let rows: Vec<String> = m.iter().map(|r| fmt3(*r)).collect();
    format!("[{}]", rows.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::header::Header;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, VR};
    use dicom_object::FileMetaTableBuilder;

    #[derive(Clone)]
    struct Spec {
        sop: String,
        pos: [f64; 3],
        iop: [f64; 6],
        rows: u16,
        cols: u16,
        spacing: [f64; 2],
        bits: u16,
        signed: bool,
        slope: Option<f64>,
        intercept: Option<f64>,
        thickness: Option<f64>,
        frames: Option<u32>,
        pixels: Vec<i32>,
        ts: &'static str,
        omit: Vec<Tag>,
        /// more top-level elements
        extra: Vec<InMemElement>,
    }

    fn spec(k: usize, z: f64) -> Spec {
        Spec {
            sop: format!("1.2.3.{k}"),
            pos: [-100.0, -120.0, z],
            iop: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            rows: 5,
            cols: 4,
            spacing: [0.7, 0.6],
            bits: 16,
            signed: true,
            slope: Some(1.0),
            intercept: Some(-1024.0),
            thickness: Some(2.5),
            frames: None,
            pixels: (0..20).map(|p| (k * 100 + p) as i32).collect(),
            ts: EXPLICIT_VR_LE,
            omit: Vec::new(),
            extra: Vec::new(),
        }
    }

    fn ds(vals: &[f64]) -> PrimitiveValue {
        PrimitiveValue::Strs(vals.iter().map(|v| format!("{v}")).collect())
    }

    fn make_dicom(s: &Spec) -> Vec<u8> {
        let mut els = vec![
            DataElement::new(
                tags::SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2"),
            ),
            DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(s.sop.as_str()),
            ),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(s.rows)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(s.cols)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(s.bits)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(s.bits)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(s.bits - 1)),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")),
            DataElement::new(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(s.signed as u16),
            ),
            DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&s.pos)),
            DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&s.iop)),
            DataElement::new(tags::PIXEL_SPACING, VR::DS, ds(&s.spacing)),
        ];
        // a nested sequence, so the length pre-scan walks items in every syntax
        let code = InMemDicomObject::from_element_iter([DataElement::new(
            tags::CODE_VALUE,
            VR::SH,
            PrimitiveValue::from("113072"),
        )]);
        let item = InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4.5"),
            ),
            DataElement::new(
                tags::DERIVATION_CODE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![code]),
            ),
        ]);
        els.push(DataElement::new(
            tags::REFERENCED_IMAGE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item.clone(), item]),
        ));
        if let Some(v) = s.slope {
            els.push(DataElement::new(tags::RESCALE_SLOPE, VR::DS, ds(&[v])));
        }
        if let Some(v) = s.intercept {
            els.push(DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, ds(&[v])));
        }
        if let Some(v) = s.thickness {
            els.push(DataElement::new(tags::SLICE_THICKNESS, VR::DS, ds(&[v])));
        }
        if let Some(f) = s.frames {
            els.push(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                PrimitiveValue::from(f.to_string()),
            ));
        }
        let px = if s.bits == 16 {
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(s.pixels.iter().map(|&v| v as u16).collect()),
            )
        } else {
            let mut b: Vec<u8> = s.pixels.iter().map(|&v| v as u8).collect();
            if b.len() % 2 == 1 {
                b.push(0);
            }
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PrimitiveValue::U8(b.into_iter().collect()),
            )
        };
        els.extend(s.extra.iter().cloned());
        let px = if s.ts == RLE_LOSSLESS {
            // one fragment per frame
            let per_frame = usize::from(s.rows) * usize::from(s.cols);
            let fragments = s.pixels.chunks(per_frame).map(|f| rle_encode(f, s.bits)).collect::<Vec<_>>();
            DataElement::new(tags::PIXEL_DATA, VR::OB, dicom_core::value::PixelFragmentSequence::new(Vec::<u32>::new(), fragments))
        } else {
            px
        };
        els.push(px);
        let els: Vec<_> = els
            .into_iter()
            .filter(|e| !s.omit.contains(&e.tag()))
            .collect();
        let obj = InMemDicomObject::from_element_iter(els);
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(s.ts))
            .expect("meta");
        let mut out = Vec::new();
        file.write_all(&mut out).expect("write dicom");
        out
    }

    /// RLE Lossless (PS3.5 Annex G) of one frame, by hand and independent of the decoder: one
    /// segment per byte of a sample, most significant first, each a run of PackBits literals.
    fn rle_encode(pixels: &[i32], bits: u16) -> Vec<u8> {
        let planes: Vec<Vec<u8>> = if bits == 16 {
            vec![pixels.iter().map(|&v| (v as u16 >> 8) as u8).collect(), pixels.iter().map(|&v| v as u8).collect()]
        } else {
            vec![pixels.iter().map(|&v| v as u8).collect()]
        };
        let mut segments = Vec::new();
        for plane in planes {
            let mut seg = Vec::new();
            for chunk in plane.chunks(128) {
                seg.push((chunk.len() - 1) as u8);
                seg.extend_from_slice(chunk);
            }
            if seg.len() % 2 == 1 {
                seg.push(0x80); // a no-op byte pads the segment to an even length
            }
            segments.push(seg);
        }
        let mut header = [0u32; 16];
        header[0] = segments.len() as u32;
        let mut at = 64u32;
        for (i, seg) in segments.iter().enumerate() {
            header[i + 1] = at;
            at += seg.len() as u32;
        }
        let mut out: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
        segments.iter().for_each(|seg| out.extend_from_slice(seg));
        out
    }

    fn files(specs: &[Spec]) -> Vec<(String, Vec<u8>)> {
        specs
            .iter()
            .map(|s| (format!("{}.dcm", s.sop), make_dicom(s)))
            .collect()
    }

    fn three() -> Vec<Spec> {
        vec![spec(0, 10.0), spec(1, 12.5), spec(2, 15.0)]
    }

    fn i16_data(v: &Volume) -> &[i16] {
        match &v.data {
            NiftiData::I16(d) => d,
            other => panic!("expected I16, got {other:?}"),
        }
    }
    fn f32_data(v: &Volume) -> &[f32] {
        match &v.data {
            NiftiData::F32(d) => d,
            other => panic!("expected F32, got {other:?}"),
        }
    }

    fn close(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4]) -> bool {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn three_slices_shuffled() {
        let s = three();
        let v = series_volume(&files(&[s[2].clone(), s[0].clone(), s[1].clone()])).unwrap();
        assert_eq!(v.dims, [4, 5, 3]);
        assert_eq!(v.slice_sops, vec!["1.2.3.0", "1.2.3.1", "1.2.3.2"]);
        assert_eq!(v.spacing, [0.6, 0.7, 2.5]);
        let expected = [
            [-0.6, 0.0, 0.0, 100.0],
            [0.0, -0.7, 0.0, 120.0],
            [0.0, 0.0, 2.5, 10.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(close(&v.affine, &expected), "{:?}", v.affine);
        let d = i16_data(&v);
        assert_eq!(d.len(), 60);
        // value(i, j, k) = slice k, row j, column i = k*100 + j*4 + i - 1024
        for k in 0..3 {
            for j in 0..5 {
                for i in 0..4 {
                    assert_eq!(
                        d[i + 4 * (j + 5 * k)] as i32,
                        (k * 100 + j * 4 + i) as i32 - 1024
                    );
                }
            }
        }
    }

    #[test]
    fn descending_positions_and_oblique_geometry() {
        // sagittal-ish oblique: rows along +y tilted, columns along -z
        let c = 0.8f64;
        let s = (1.0 - c * c).sqrt();
        let iop = [0.0, c, s, 0.0, -s, c]; // row cos, col cos (orthonormal)
        let normal = cross([0.0, c, s], [0.0, -s, c]); // = (c*c + s*s, 0, 0) = +x
        let mk = |k: usize, d: f64| {
            let mut sp = spec(k, 0.0);
            sp.iop = iop;
            sp.pos = [5.0 + d * normal[0], 1.0, 2.0];
            sp
        };
        let specs = vec![mk(0, 3.0), mk(1, 0.0), mk(2, 6.0)];
        let v = series_volume(&files(&specs)).unwrap();
        assert_eq!(v.slice_sops, vec!["1.2.3.1", "1.2.3.0", "1.2.3.2"]);
        let exp = [
            [0.0, 0.0, -3.0, -5.0],
            [-c * 0.6, s * 0.7, 0.0, -1.0],
            [s * 0.6, c * 0.7, 0.0, 2.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(close(&v.affine, &exp), "{:?}", v.affine);
        assert!((v.spacing[2] - 3.0).abs() < 1e-9);
    }

    #[test]
    fn rescale_choices() {
        // non-unit slope -> F32
        let mut s = three();
        s.iter_mut().for_each(|x| x.slope = Some(0.5));
        let v = series_volume(&files(&s)).unwrap();
        let d = f32_data(&v);
        assert_eq!(d[1], 1.0 * 0.5 - 1024.0);
        // fractional intercept -> F32
        let mut s = three();
        s[1].intercept = Some(0.5);
        let d = series_volume(&files(&s)).unwrap();
        assert_eq!(f32_data(&d)[20], 100.5);
        assert_eq!(f32_data(&d)[0], -1024.0);
        // defaults (no slope/intercept) on unsigned data exceeding i16 -> F32
        let mut s = three();
        s.iter_mut().for_each(|x| {
            x.slope = None;
            x.intercept = None;
            x.signed = false;
            x.pixels[3] = 65535;
        });
        let v = series_volume(&files(&s)).unwrap();
        assert_eq!(f32_data(&v)[3], 65535.0);
        // unsigned in range, no rescale -> I16
        s.iter_mut().for_each(|x| x.pixels[3] = 3000);
        let v = series_volume(&files(&s)).unwrap();
        assert_eq!(i16_data(&v)[3], 3000);
        // signed negative stored values
        let mut s = three();
        s[0].pixels[0] = -5;
        s[0].intercept = Some(0.0);
        let v = series_volume(&files(&s)).unwrap();
        assert_eq!(i16_data(&v)[0], -5);
    }

    #[test]
    fn transfer_syntaxes_bit_depths_and_preambles() {
        let base = |ts: &'static str, bits: u16, signed: bool| {
            let mut s = three();
            s.iter_mut().for_each(|x| {
                x.ts = ts;
                x.bits = bits;
                x.signed = signed;
                x.intercept = Some(0.0);
                if bits == 8 {
                    x.pixels = (0..20i32)
                        .map(|p| if signed { p - 10 } else { p * 12 })
                        .collect();
                } else {
                    x.pixels = (0..20i32)
                        .map(|p| if signed { p * 997 - 9000 } else { p * 1500 })
                        .collect();
                }
            });
            s
        };
        for ts in [IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE] {
            for bits in [8u16, 16] {
                for signed in [false, true] {
                    let s = base(ts, bits, signed);
                    let v = series_volume(&files(&s))
                        .unwrap_or_else(|e| panic!("{ts} {bits} {signed}: {e}"));
                    let expect: Vec<f64> = s
                        .iter()
                        .flat_map(|x| x.pixels.iter().map(|&p| p as f64))
                        .collect();
                    let got: Vec<f64> = match &v.data {
                        NiftiData::I16(d) => d.iter().map(|&x| x as f64).collect(),
                        NiftiData::F32(d) => d.iter().map(|&x| x as f64).collect(),
                        other => panic!("{other:?}"),
                    };
                    assert_eq!(got, expect, "{ts} bits {bits} signed {signed}");
                }
            }
        }
        // without preamble, and starting directly at group 0002
        let s = three();
        let f = files(&s);
        let no_pre: Vec<_> = f
            .iter()
            .map(|(n, b)| (n.clone(), b[128..].to_vec()))
            .collect();
        let bare: Vec<_> = f
            .iter()
            .map(|(n, b)| (n.clone(), b[132..].to_vec()))
            .collect();
        let v0 = series_volume(&f).unwrap();
        assert_eq!(series_volume(&no_pre).unwrap(), v0);
        assert_eq!(series_volume(&bare).unwrap(), v0);
    }

    #[test]
    fn rle_compressed_slices_give_the_volume_of_the_uncompressed_ones() {
        for (bits, signed) in [(16u16, true), (16, false), (8, false), (8, true)] {
            let mut s = three();
            for x in s.iter_mut() {
                x.bits = bits;
                x.signed = signed;
                x.intercept = Some(0.0);
                x.pixels = (0..20i32)
                    .map(|p| match (bits, signed) {
                        (16, true) => p * 1999 - 20000,
                        (16, false) => p * 3000 + 7,
                        (_, true) => p * 13 - 128,
                        _ => p * 13,
                    })
                    .collect();
            }
            let native = series_volume(&files(&s)).unwrap();
            s.iter_mut().for_each(|x| x.ts = RLE_LOSSLESS);
            let f = files(&s);
            assert!(f[0].1.windows(4).any(|w| w == [0xFE, 0xFF, 0x00, 0xE0]), "the pixel data is encapsulated");
            assert_eq!(series_volume(&f).unwrap(), native, "{bits} bits, signed {signed}");
        }
    }

    #[test]
    fn pydicom_files_decode_as_pydicom_decodes_them() {
        let read = |name: &str| {
            let path = format!("{}/tests/data/pydicom/{name}", env!("CARGO_MANIFEST_DIR"));
            (name.to_string(), std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        };
        let values = |v: &Volume| -> Vec<f64> {
            match &v.data {
                NiftiData::I16(d) => d.iter().map(|&x| f64::from(x)).collect(),
                NiftiData::F32(d) => d.iter().map(|&x| f64::from(x)).collect(),
                other => panic!("{other:?}"),
            }
        };
        // The same MR image in five encodings, three of them compressed: one volume.
        let native = series_volume(&[read("MR_small_implicit.dcm")]).unwrap();
        for name in ["MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"] {
            let v = series_volume(&[read(name)]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(values(&v), values(&native), "{name}");
            assert_eq!((v.dims, v.affine), (native.dims, native.affine), "{name}");
        }
        // Sums of pixel_array * RescaleSlope + RescaleIntercept by pydicom 3.0.2 with
        // pylibjpeg-openjpeg 2.6: an independent decoder of the same data.
        for (name, dims, sum) in [("MR_small_implicit.dcm", [64, 64, 1], 2_125_338.0), ("693_J2KI.dcm", [512, 512, 1], -270_617_240.0)] {
            let v = series_volume(&[read(name)]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(v.dims, dims, "{name}");
            assert_eq!(values(&v).iter().sum::<f64>(), sum, "{name}");
        }
    }

    #[test]
    fn rt_dose_grids_decode_as_pydicom_decodes_them() {
        let read = |name: &str| {
            let path = format!("{}/tests/data/pydicom/{name}", env!("CARGO_MANIFEST_DIR"));
            (name.to_string(), std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        };
        // 15 frames of 10x10 unsigned 32-bit values, DoseGridScaling 1e-6, frames 5 mm apart
        // by GridFrameOffsetVector. pydicom 3.0.2: pixel_array.sum() 1519910000, and
        // pixel_array[3, 4, 5] (frame, row, column) 1026000.
        let implicit = series_volume(&[read("rtdose.dcm")]).unwrap();
        assert_eq!(implicit.dims, [10, 10, 15]);
        let d = f32_data(&implicit);
        let sum: f64 = d.iter().map(|&x| f64::from(x)).sum();
        assert!((sum - 1519.91).abs() < 1e-3, "{sum}");
        assert!((d[5 + 4 * 10 + 3 * 100] - 1.026).abs() < 1e-6, "{}", d[345]);
        let want = [
            [-10.0, 0.0, 0.0, -189.43125],
            [0.0, -10.0, 0.0, -199.43125],
            [0.0, 0.0, 5.0, -761.87],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(close(&implicit.affine, &want), "{:?}", implicit.affine);
        let sop = implicit.slice_sops[0].split_once('/').unwrap().0.to_string();
        assert_eq!(implicit.slice_sops, (1..=15).map(|k| format!("{sop}/{k}")).collect::<Vec<_>>());
        assert_eq!(split_slice_id(&implicit.slice_sops[2]), (sop.as_str(), Some("3")));
        // The same grid in big endian and RLE: the same volume.
        for name in ["rtdose_expb.dcm", "rtdose_rle.dcm"] {
            let v = series_volume(&[read(name)]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v, implicit, "{name}");
        }
        // One frame: no frame number in its id, and (no SliceThickness) 1 mm thick.
        let one = series_volume(&[read("rtdose_1frame.dcm")]).unwrap();
        assert_eq!(one.dims, [10, 10, 1]);
        assert_eq!(one.slice_sops, [sop]);
        let sum: f64 = f32_data(&one).iter().map(|&x| f64::from(x)).sum();
        assert!((sum - 101.378).abs() < 1e-4, "{sum}");
    }

    /// An enhanced multi-frame image holding the frames of `specs` (in their order): its
    /// positions per frame, its orientation and pixel measures shared, its rescale per
    /// frame; the top level has no position and a wrong pixel spacing, to show they are
    /// not what is read.
    fn enhanced(specs: &[Spec], sop: &str) -> Spec {
        let item = |els: Vec<InMemElement>| InMemDicomObject::from_element_iter(els);
        let seq = |tag: Tag, obj: InMemDicomObject| DataElement::new(tag, VR::SQ, DataSetSequence::from(vec![obj]));
        let per_frame: Vec<InMemDicomObject> = specs
            .iter()
            .map(|s| {
                item(vec![
                    seq(tags::PLANE_POSITION_SEQUENCE, item(vec![DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&s.pos))])),
                    seq(
                        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                        item(vec![
                            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, ds(&[s.intercept.unwrap_or(0.0)])),
                            DataElement::new(tags::RESCALE_SLOPE, VR::DS, ds(&[s.slope.unwrap_or(1.0)])),
                        ]),
                    ),
                ])
            })
            .collect();
        let first = &specs[0];
        let shared = item(vec![
            seq(tags::PIXEL_MEASURES_SEQUENCE, item(vec![
                DataElement::new(tags::PIXEL_SPACING, VR::DS, ds(&first.spacing)),
                DataElement::new(tags::SLICE_THICKNESS, VR::DS, ds(&[first.thickness.unwrap_or(1.0)])),
            ])),
            seq(tags::PLANE_ORIENTATION_SEQUENCE, item(vec![DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&first.iop))])),
        ]);
        Spec {
            sop: sop.to_string(),
            spacing: [9.0, 9.0],
            slope: None,
            intercept: None,
            thickness: None,
            frames: Some(specs.len() as u32),
            pixels: specs.iter().flat_map(|s| s.pixels.iter().copied()).collect(),
            omit: vec![tags::IMAGE_POSITION_PATIENT],
            extra: vec![
                DataElement::new(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, VR::SQ, DataSetSequence::from(per_frame)),
                DataElement::new(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, VR::SQ, DataSetSequence::from(vec![shared])),
            ],
            ..first.clone()
        }
    }

    #[test]
    fn enhanced_multi_frame_is_the_volume_of_its_frames() {
        let s = three();
        let single = series_volume(&files(&s)).unwrap();
        // Frames stored out of order: at z 15, 10, 12.5.
        for ts in [EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE, RLE_LOSSLESS] {
            let mut multi = enhanced(&[s[2].clone(), s[0].clone(), s[1].clone()], "1.2.3.9");
            multi.ts = ts;
            let v = series_volume(&files(&[multi])).unwrap_or_else(|e| panic!("{ts}: {e}"));
            assert_eq!((v.dims, v.affine, &v.data), (single.dims, single.affine, &single.data), "{ts}");
            assert_eq!(v.slice_sops, ["1.2.3.9/2", "1.2.3.9/3", "1.2.3.9/1"], "{ts}");
        }
        // Two multi-frame files of one series, and a per-frame slope that is not 1.
        let mut s2 = three();
        s2[1].slope = Some(0.5);
        let single = series_volume(&files(&s2)).unwrap();
        let a = enhanced(&[s2[0].clone(), s2[2].clone()], "1.2.3.10");
        let b = enhanced(&[s2[1].clone()], "1.2.3.11");
        let v = series_volume(&files(&[a, b])).unwrap();
        assert_eq!((v.dims, v.affine, &v.data), (single.dims, single.affine, &single.data));
        assert_eq!(v.slice_sops, ["1.2.3.10/1", "1.2.3.11", "1.2.3.10/2"]);
    }

    /// A reconstructed NM tomography (SPECT) image holding the slices of `specs` as frames in
    /// their order, numbered by SliceVector: position and orientation only in
    /// DetectorInformationSequence, the spacing in SpacingBetweenSlices.
    fn nm_tomo(specs: &[Spec], slice_numbers: &[u16], sop: &str) -> Spec {
        let first = &specs[0];
        // The position of slice 1.
        let one = &specs[slice_numbers.iter().position(|n| *n == 1).unwrap_or(0)];
        let detector = InMemDicomObject::from_element_iter(vec![
            DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&one.pos)),
            DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&first.iop)),
        ]);
        Spec {
            sop: sop.to_string(),
            frames: Some(specs.len() as u32),
            pixels: specs.iter().flat_map(|s| s.pixels.iter().copied()).collect(),
            omit: vec![tags::IMAGE_POSITION_PATIENT, tags::IMAGE_ORIENTATION_PATIENT],
            extra: vec![
                DataElement::new(tags::IMAGE_TYPE, VR::CS, PrimitiveValue::Strs(["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"].map(String::from).into_iter().collect())),
                DataElement::new(tags::DETECTOR_INFORMATION_SEQUENCE, VR::SQ, DataSetSequence::from(vec![detector])),
                DataElement::new(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(&[2.5])),
                DataElement::new(tags::SLICE_VECTOR, VR::US, PrimitiveValue::U16(slice_numbers.iter().copied().collect())),
            ],
            ..first.clone()
        }
    }

    #[test]
    fn nm_reconstructed_tomography_is_the_volume_of_its_slices() {
        // Three slices 2.5 mm apart, oblique, stored as frames in the order 3, 1, 2.
        let mut s = three();
        for x in s.iter_mut() {
            x.iop = [0.6, 0.8, 0.0, 0.0, 0.0, -1.0];
        }
        let normal = normalize(cross([0.6, 0.8, 0.0], [0.0, 0.0, -1.0])).unwrap();
        for (k, x) in s.iter_mut().enumerate() {
            x.pos = [0, 1, 2].map(|r| [-100.0, -120.0, 10.0][r] + 2.5 * k as f64 * normal[r]);
        }
        let single = series_volume(&files(&s)).unwrap();
        let mut nm = nm_tomo(&[s[2].clone(), s[0].clone(), s[1].clone()], &[3, 1, 2], "1.2.3.9");
        let v = series_volume(&files(std::slice::from_ref(&nm))).unwrap();
        assert_eq!((v.dims, &v.data), (single.dims, &single.data));
        assert!(close(&v.affine, &single.affine), "{:?} vs {:?}", v.affine, single.affine);
        assert_eq!(v.slice_sops, ["1.2.3.9/2", "1.2.3.9/3", "1.2.3.9/1"]);
        assert!(v.patient_geometry && !v.cine);
        // A negative spacing stacks the slices against the normal: slice 1 is the last one.
        let mut against = nm_tomo(&[s[2].clone(), s[1].clone(), s[0].clone()], &[1, 2, 3], "1.2.3.12");
        against.extra[2] = DataElement::new(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(&[-2.5]));
        let v = series_volume(&files(&[against])).unwrap();
        assert_eq!((v.dims, &v.data), (single.dims, &single.data));
        assert!(close(&v.affine, &single.affine));
        // Without SliceVector the frames are the slices in order; SliceThickness stands in
        // for a missing SpacingBetweenSlices.
        let mut plain = nm_tomo(&s, &[], "1.2.3.10");
        plain.extra.retain(|e| e.tag() != tags::SLICE_VECTOR && e.tag() != tags::SPACING_BETWEEN_SLICES);
        let v = series_volume(&files(&[plain.clone()])).unwrap();
        assert_eq!((v.dims, &v.data), (single.dims, &single.data));
        assert!(close(&v.affine, &single.affine));
        plain.thickness = None;
        match err(&[plain]) {
            VolumeError::Missing { name, keyword } => assert_eq!((name.as_str(), keyword), ("1.2.3.10.dcm", "SpacingBetweenSlices")),
            e => panic!("{e}"),
        }
        // A gated reconstruction is 4D; a SliceVector that does not count the frames is wrong.
        let mut gated = nm.clone();
        gated.extra.push(DataElement::new(tags::NUMBER_OF_TIME_SLOTS, VR::US, PrimitiveValue::from(8u16)));
        match err(&[gated]) {
            VolumeError::Unsupported { reason, .. } => assert!(reason.contains("8 time slots"), "{reason}"),
            e => panic!("{e}"),
        }
        nm.extra[3] = DataElement::new(tags::SLICE_VECTOR, VR::US, PrimitiveValue::U16([1u16, 2].into_iter().collect()));
        match err(&[nm]) {
            VolumeError::Invalid { keyword, reason, .. } => assert_eq!((keyword, reason.as_str()), ("SliceVector", "2 values for 3 frames, each a slice number from 1")),
            e => panic!("{e}"),
        }
        // An NM image that is no reconstruction (a static or whole-body image) stays a stack of
        // frames without patient geometry.
        let mut planar = nm_tomo(&s, &[1, 2, 3], "1.2.3.11");
        planar.extra[0] = DataElement::new(tags::IMAGE_TYPE, VR::CS, PrimitiveValue::Strs(["ORIGINAL", "PRIMARY", "STATIC", "EMISSION"].map(String::from).into_iter().collect()));
        let v = series_volume(&files(&[planar])).unwrap();
        assert!(!v.patient_geometry && v.cine);
    }

    #[test]
    fn multi_frame_errors_name_the_file_and_frame() {
        let s = three();
        // Fewer per-frame items than frames.
        let mut m = enhanced(&s, "1.2.3.9");
        m.frames = Some(4);
        match err(&[m]) {
            VolumeError::Invalid { name, keyword, reason } => {
                assert_eq!((name.as_str(), keyword, reason.as_str()), ("1.2.3.9.dcm", "PerFrameFunctionalGroupsSequence", "has 3 items for 4 frames"));
            }
            e => panic!("{e}"),
        }
        // A frame without a position.
        let mut m = enhanced(&s, "1.2.3.9");
        if let Value::Sequence(seq) = m.extra[0].value() {
            let mut items = seq.items().to_vec();
            items[1].remove_element(tags::PLANE_POSITION_SEQUENCE);
            m.extra[0] = DataElement::new(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, VR::SQ, DataSetSequence::from(items));
        }
        match err(&[m]) {
            VolumeError::Missing { name, keyword } => assert_eq!((name.as_str(), keyword), ("1.2.3.9.dcm frame 2", "PlanePositionSequence")),
            e => panic!("{e}"),
        }
        // Pixel data for fewer frames than NumberOfFrames says.
        let mut m = enhanced(&s, "1.2.3.9");
        m.pixels.truncate(40);
        match err(&[m]) {
            VolumeError::Invalid { name, keyword, .. } => assert_eq!((name.as_str(), keyword), ("1.2.3.9.dcm", "PixelData")),
            e => panic!("{e}"),
        }
        // Frames with nothing to place them by.
        let mut m = spec(0, 1.0);
        m.frames = Some(2);
        m.pixels = (0..40).collect();
        match err(&[m]) {
            VolumeError::Unsupported { name, reason } => {
                assert_eq!(name, "1.2.3.0.dcm");
                assert!(reason.contains("no position per frame"), "{reason}");
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn compressed_pixel_data_that_does_not_decode_is_an_error_naming_the_file() {
        let mut s = three();
        s.iter_mut().for_each(|x| x.ts = RLE_LOSSLESS);
        let good = files(&s);
        // Point the second segment past the end of the fragment, claim more segments than
        // there are, and claim one segment for 16-bit samples.
        type Damage = fn(&mut Vec<u8>, usize);
        let damage: [(&str, Damage); 3] = [
            ("offset", |b, at| b[at + 9] = 0xFF),
            ("segments", |b, at| b[at] = 9),
            ("one segment", |b, at| b[at] = 1),
        ];
        for (what, hurt) in damage {
            let mut f = good.clone();
            let b = &mut f[2].1;
            // The fragment starts after the empty offset table item and the fragment item header.
            let px = b.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).unwrap();
            let at = px + 12 + 8 + 8;
            hurt(b, at);
            match series_volume(&f) {
                Err(e) => assert!(e.to_string().starts_with("1.2.3.2.dcm: invalid PixelData: cannot decode"), "{what}: {e}"),
                Ok(_) => panic!("{what}: damaged RLE decoded"),
            }
        }
        // A syntax whose codec is not built in (MPEG-2 video) is named as such.
        let mut s = three();
        s[1].ts = "1.2.840.10008.1.2.4.100";
        match series_volume(&files(&s)).unwrap_err() {
            VolumeError::Compressed { name, transfer_syntax } => {
                assert_eq!((name.as_str(), transfer_syntax.as_str()), ("1.2.3.1.dcm", "1.2.840.10008.1.2.4.100"));
            }
            e => panic!("{e}"),
        }
    }

    fn pydicom_file(name: &str) -> (String, Vec<u8>) {
        (name.to_string(), std::fs::read(format!("{}/tests/data/pydicom/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap())
    }

    fn values(v: &Volume) -> Vec<f64> {
        match &v.data {
            NiftiData::I16(d) => d.iter().map(|&x| f64::from(x)).collect(),
            NiftiData::F32(d) => d.iter().map(|&x| f64::from(x)).collect(),
            other => panic!("{other:?}"),
        }
    }

    /// R, G, B of pixel (row, col) of a one-slice colour volume.
    fn rgb(v: &Volume, row: usize, col: usize) -> [f64; 3] {
        let n = v.dims[0] * v.dims[1];
        let d = values(v);
        [0, 1, 2].map(|c| d[c * n + row * v.dims[0] + col])
    }

    /// pydicom's test card in five encodings. The expected values are pydicom 3.0's
    /// (`pixel_array`, which converts YCbCr to RGB): its sums, and pixels of the card's
    /// red, blue-grey and white fields.
    #[test]
    fn colour_images_become_r_g_b_channels() {
        let card = series_volume(&[pydicom_file("SC_rgb_rle.dcm")]).unwrap();
        assert_eq!((card.dims, card.channels, card.patient_geometry), ([100, 100, 1], 3, false));
        assert_eq!(card.spacing, [1.0, 1.0, 1.0]);
        assert_eq!(values(&card).iter().sum::<f64>(), 3_831_000.0);
        assert_eq!((rgb(&card, 0, 0), rgb(&card, 50, 5), rgb(&card, 30, 30), rgb(&card, 99, 99)), ([255.0, 0.0, 0.0], [128.0, 128.0, 255.0], [128.0, 255.0, 128.0], [255.0; 3]));
        // The 2D image sits on its own plane: columns along x, rows along y (LPS), at 0.
        assert_eq!(card.affine, [[-1.0, 0.0, 0.0, -0.0], [0.0, -1.0, 0.0, -0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]);

        // JPEG 2000 lossless: the same planes.
        let j2k = series_volume(&[pydicom_file("SC_rgb_gdcm_KY.dcm")]).unwrap();
        assert_eq!(values(&j2k), values(&card));
        // 16-bit RLE, six segments: 257 times each value (F32: above i16).
        let rle16 = series_volume(&[pydicom_file("SC_rgb_rle_16bit.dcm")]).unwrap();
        assert_eq!(values(&rle16), values(&card).iter().map(|v| v * 257.0).collect::<Vec<_>>());
        // Native YBR_FULL_422, converted as pydicom converts it.
        let ybr = series_volume(&[pydicom_file("SC_ybr_full_422_uncompressed.dcm")]).unwrap();
        assert_eq!(values(&ybr).iter().sum::<f64>(), 3_832_000.0);
        assert_eq!((rgb(&ybr, 0, 0), rgb(&ybr, 50, 5), rgb(&ybr, 30, 30)), ([254.0, 0.0, 0.0], [125.0, 130.0, 255.0], [130.0, 254.0, 130.0]));
        // Lossy JPEG in YBR_FULL: within 6 of the lossless card, as pydicom's decode is.
        let jpeg = series_volume(&[pydicom_file("SC_rgb_jpeg_dcmtk.dcm")]).unwrap();
        let worst = values(&jpeg).iter().zip(values(&card)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst > 0.0 && worst <= 6.0, "{worst}");
        // Near-lossless JPEG-LS, components by line and by sample: each value within NEAR of
        // the lossless card (the bound JPEG-LS guarantees; NEAR is 2 in both streams).
        for name in ["SC_rgb_jls_lossy_line.dcm", "SC_rgb_jls_lossy_sample.dcm"] {
            let jls = series_volume(&[pydicom_file(name)]).unwrap();
            assert_eq!((jls.dims, jls.channels), (card.dims, 3), "{name}");
            let worst = values(&jls).iter().zip(values(&card)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst > 0.0 && worst <= 2.0, "{name}: {worst}");
        }
        // Big endian, plane by plane (PlanarConfiguration 1): pixels as pydicom reads them.
        let us = series_volume(&[pydicom_file("ExplVR_BigEnd.dcm")]).unwrap();
        assert_eq!((us.dims, us.channels), ([80, 60, 1], 3));
        assert_eq!((values(&us).iter().sum::<f64>(), rgb(&us, 10, 20), rgb(&us, 59, 79)), (2_470_716.0, [255.0, 255.0, 0.0], [255.0, 232.0, 0.0]));
        // The one-channel NIfTI images of a colour volume: R, G, B.
        let n = crate::volume::volume_to_niftis(&card);
        assert_eq!(n.len(), 3);
        assert_eq!(n[2].data, NiftiData::I16(values(&card)[20_000..].iter().map(|&v| v as i16).collect()));
    }

    /// Progressive JPEG, full progression and spectral selection (retired syntaxes, 8-bit,
    /// which dcmtk still writes and dicom-rs does not register), grey and colour
    /// (YBR_FULL_422): each volume within 2 (grey) or 4 (colour) of dcmtk's libjpeg decode of
    /// the same stream, the two decoders' inverse DCT and chroma upsampling differing.
    #[test]
    fn progressive_jpeg_decodes_as_dcmdjpeg_decodes_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = |tool: &str, args: &[&std::path::Path]| {
            let o = std::process::Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool} (dcmtk, .ci/run installs it): {e}"));
            assert!(o.status.success(), "{tool}: {}", String::from_utf8_lossy(&o.stderr));
        };
        let mut grey = spec(0, 10.0);
        (grey.rows, grey.cols, grey.bits, grey.signed, grey.slope, grey.intercept) = (48, 64, 8, false, None, None);
        grey.pixels = (0..48 * 64).map(|p| ((p % 64) * 3 + (p / 64) * 2 + (p * 7919 % 17)) % 256).collect();
        for (name, bytes, tolerance) in [("grey.dcm", make_dicom(&grey), 2.0), ("rgb.dcm", pydicom_file("ExplVR_BigEnd.dcm").1, 4.0)] {
            let src = dir.path().join(name);
            std::fs::write(&src, bytes).unwrap();
            for (flag, ts) in [("+ep", "1.2.840.10008.1.2.4.55"), ("+es", "1.2.840.10008.1.2.4.53")] {
                let jpeg = dir.path().join(format!("{flag}{name}"));
                let plain = dir.path().join(format!("plain{flag}{name}"));
                run("dcmcjpeg", &[std::path::Path::new(flag), &src, &jpeg]);
                run("dcmdjpeg", &[&jpeg, &plain]);
                let bytes = std::fs::read(&jpeg).unwrap();
                assert!(bytes.windows(ts.len()).any(|w| w == ts.as_bytes()), "{flag} {name}: not {ts}");
                let ours = series_volume(&[(name.to_string(), bytes)]).unwrap_or_else(|e| panic!("{flag} {name}: {e}"));
                let theirs = series_volume(&[(name.to_string(), std::fs::read(&plain).unwrap())]).unwrap();
                assert_eq!((ours.dims, ours.channels), (theirs.dims, theirs.channels), "{flag} {name}");
                let (a, b) = (values(&ours), values(&theirs));
                let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
                let mean = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64;
                println!("{flag} {name}: off by up to {worst}, {mean:.3} on average");
                assert!(worst <= tolerance && mean < 0.5, "{flag} {name}: off by up to {worst}, {mean} on average");
            }
        }
    }

    /// An RGB JPEG with nothing in its stream to say so: pydicom reads a near-grey picture
    /// (sum 47,966,767; pixel (28, 79) is [182, 165, 169]); taken for YCbCr, every value was
    /// off by up to 137.
    #[test]
    fn rgb_jpeg_without_markers_is_not_colour_converted() {
        let v = series_volume(&[pydicom_file("SC_jpeg_no_color_transform.dcm")]).unwrap();
        assert_eq!((v.dims, v.channels), ([256, 256, 1], 3));
        let sum: f64 = values(&v).iter().sum();
        assert!((sum - 47_966_767.0).abs() <= 256.0 * 256.0 * 3.0, "{sum}");
        for (at, want) in [((28, 79), [182.0, 165.0, 169.0]), ((100, 100), [244.0; 3])] {
            let got = rgb(&v, at.0, at.1);
            assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1.0), "{at:?}: {got:?}");
        }
    }

    /// A palette colour image: stored values through the red, green and blue tables, below
    /// the first mapped value the first entry, above the last the last; 16-bit entries, and
    /// 8-bit ones two to a word.
    #[test]
    fn palette_colour_goes_through_its_tables() {
        let palette = |bits: u16, tables: [Vec<u16>; 3], segmented: bool| {
            let mut s = spec(0, 10.0);
            (s.bits, s.signed, s.slope, s.intercept) = (8, false, None, None);
            s.pixels = (0..20).map(|p| 8 + p % 6).collect();
            // Replaces MONOCHROME2 (the later element of a tag wins).
            s.extra.push(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("PALETTE COLOR")));
            let entries = 4u16;
            let desc = [tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR];
            let data = [tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA];
            for (k, t) in tables.into_iter().enumerate() {
                s.extra.push(DataElement::new(desc[k], VR::US, PrimitiveValue::U16([entries, 10, bits].into_iter().collect())));
                let tag = if segmented && k == 0 { tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA } else { data[k] };
                s.extra.push(DataElement::new(tag, VR::OW, PrimitiveValue::U16(t.into_iter().collect())));
            }
            series_volume(&[("palette.dcm".into(), make_dicom(&s))])
        };
        // Stored 8..=13 -> entries 0, 0, 0, 1, 2, 3.
        let idx = |v: i32| (v - 10).clamp(0, 3) as usize;
        let pixels: Vec<i32> = (0..20).map(|p| 8 + p % 6).collect();
        let (r, g, b) = (vec![100u16, 200, 300, 400], vec![1u16, 2, 3, 4], vec![0u16, 65535, 7, 8]);
        let v = palette(16, [r.clone(), g.clone(), b.clone()], false).unwrap();
        assert_eq!(v.channels, 3);
        let want: Vec<f64> = [&r, &g, &b].iter().flat_map(|t| pixels.iter().map(|&p| f64::from(t[idx(p)]))).collect();
        assert_eq!(values(&v), want);
        // 8-bit entries, packed two to a word: [10, 20, 30, 40] and so on.
        let packed = |e: [u16; 4]| vec![e[0] | e[1] << 8, e[2] | e[3] << 8];
        let v = palette(8, [packed([10, 20, 30, 40]), packed([1, 2, 3, 4]), packed([5, 6, 7, 255])], false).unwrap();
        let want: Vec<f64> = [[10, 20, 30, 40], [1, 2, 3, 4], [5, 6, 7, 255]].iter().flat_map(|t| pixels.iter().map(|&p| f64::from(t[idx(p)]))).collect();
        assert_eq!(values(&v), want);
        // The red table segmented: a discrete segment of two, a linear one to 400 over two
        // entries (300, 400): the same volume.
        let v = palette(16, [vec![0, 2, 100, 200, 1, 2, 400], g.clone(), b.clone()], true).unwrap();
        let want: Vec<f64> = [&r, &g, &b].iter().flat_map(|t| pixels.iter().map(|&p| f64::from(t[idx(p)]))).collect();
        assert_eq!(values(&v), want);
        // Segments that do not fill the table, and short tables, are errors naming the file.
        let e = palette(16, [vec![0, 2, 100, 200], g.clone(), b.clone()], true).unwrap_err().to_string();
        assert!(e.contains("palette.dcm") && e.contains("SegmentedRedPaletteColorLookupTableData") && e.contains("expand to 2 entries, the descriptor says 4"), "{e}");
        let e = palette(16, [r, g, vec![1, 2]], false).unwrap_err().to_string();
        assert!(e.contains("palette.dcm") && e.contains("BluePaletteColorLookupTableData") && e.contains("holds 2 entries"), "{e}");
    }

    /// Segmented palette data expands as the standard's three segment types say, and as
    /// pydicom expands it (`_expand_segmented_lut`, run here on the same data): discrete,
    /// linear (rounded half to even), indirect (16-bit offsets, and 8-bit ones in four bytes).
    #[test]
    fn segmented_palettes_expand_as_pydicom_expands_them() {
        // Discrete 3, linear to 10 over 4 (2.5 a step from 0: 2, 5, 8, 10 after rounding
        // 2.5 -> 2 and 7.5 -> 8), then the two segments at entry 0 again.
        let data = [0, 3, 0, 7, 0, 1, 4, 10, 2, 2, 0, 0];
        assert_eq!(expand_segmented(&data, 14, false).unwrap(), [0, 7, 0, 2, 5, 8, 10, 0, 7, 0, 2, 5, 8, 10]);
        assert!(expand_segmented(&data, 15, false).unwrap_err().contains("expand to 14 entries"));
        assert!(expand_segmented(&data, 13, false).unwrap_err().contains("expand past"));
        assert!(expand_segmented(&[1, 2, 5], 2, false).unwrap_err().contains("linear segment comes first"));
        assert!(expand_segmented(&[0, 1, 5, 7, 1], 2, false).unwrap_err().contains("opcode 7"));
        assert!(expand_segmented(&[0, 1, 5, 2, 1, 3, 0], 9, false).unwrap_err().contains("too deep"), "an indirect segment that copies itself");
        assert!(expand_segmented(&[0, 4, 5], 4, false).unwrap_err().contains("past the end"));
        // Programs of every segment type, 8 and 16 bits, against pydicom.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as i32
        };
        let mut cases = Vec::new();
        for case in 0..40 {
            let bits8 = case % 2 == 1;
            let max = if bits8 { 256 } else { 65536 };
            let mut data = vec![0, 2, next(max), next(max)];
            for _ in 0..6 {
                match next(3) {
                    0 => {
                        let n = 1 + next(5);
                        data.extend([0, n]);
                        data.extend((0..n).map(|_| next(max)));
                    }
                    1 => data.extend([1, 1 + next(40), next(max)]),
                    _ => data.extend(if bits8 { vec![2, 1, 0, 0, 0, 0] } else { vec![2, 1, 0, 0] }),
                }
            }
            let lut = {
                let mut out = Vec::new();
                segments(&data, 0, None, &mut out, usize::MAX, bits8, 0).unwrap();
                out
            };
            assert_eq!(expand_segmented(&data, lut.len(), bits8).unwrap(), lut);
            cases.push(format!("[{}, [{}], [{}]]", bits8, data.iter().map(i32::to_string).collect::<Vec<_>>().join(","), lut.iter().map(i32::to_string).collect::<Vec<_>>().join(",")));
        }
        let check = r#"
import json, sys
from pydicom.pixels.processing import _expand_segmented_lut
bad = [i for i, (bits8, data, ours) in enumerate(json.loads(sys.stdin.read()))
       if _expand_segmented_lut(tuple(data), "<B" if bits8 else "<H") != ours]
print("ok" if not bad else "differ: %s" % bad)
"#;
        let mut child = std::process::Command::new("python3").args(["-c", check]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("python3 with pydicom (.ci/run installs it)");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(format!("[{}]", cases.join(",")).as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok", "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// Damaged colour files (bytes overwritten anywhere, or cut short) give an error or a
    /// volume, never a panic. A fixed xorshift sequence makes the run repeatable.
    #[test]
    fn damaged_colour_files_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let files = ["SC_rgb_rle.dcm", "SC_rgb_rle_16bit.dcm", "SC_rgb_gdcm_KY.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm", "ExplVR_BigEnd.dcm", "SC_jpeg_no_color_transform.dcm"];
        let (mut errors, mut volumes) = (0, 0);
        for name in files {
            let (_, good) = pydicom_file(name);
            for round in 0..150 {
                let mut bytes = good.clone();
                if round % 5 == 4 {
                    bytes.truncate(next() as usize % bytes.len());
                } else {
                    for _ in 0..1 + round % 4 {
                        let at = next() as usize % bytes.len();
                        bytes[at] = next() as u8;
                    }
                }
                match std::panic::catch_unwind(|| series_volume(&[(name.to_string(), bytes)])) {
                    Ok(Ok(_)) => volumes += 1,
                    Ok(Err(e)) => {
                        assert!(e.to_string().contains(name) || matches!(e, VolumeError::NonUniformSpacing { .. } | VolumeError::DuplicatePosition { .. }), "{e}");
                        errors += 1;
                    }
                    Err(_) => panic!("{name}, round {round}: panicked"),
                }
            }
        }
        assert!(errors > 100 && volumes > 100, "{errors} errors, {volumes} volumes");
    }

    /// MONOCHROME1 (lowest value white) reads as MONOCHROME2 after export: unsigned values
    /// become 2^BitsStored - 1 - v, signed ones -1 - v, before the rescale; MONOCHROME2 and
    /// colour stay as stored.
    #[test]
    fn monochrome1_is_turned_over() {
        let mono1 = |signed: bool| {
            let mut s = spec(0, 10.0);
            (s.signed, s.slope, s.intercept) = (signed, None, Some(5.0));
            s.extra.push(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME1")));
            series_volume(&[("m1.dcm".into(), make_dicom(&s))]).unwrap()
        };
        let plain = series_volume(&[("m2.dcm".into(), make_dicom(&spec(0, 10.0)))]).unwrap();
        assert!(!plain.inverted);
        let u = mono1(false);
        assert!(u.inverted);
        assert_eq!(values(&u), (0..20).map(|p| f64::from(65535 - p + 5)).collect::<Vec<_>>());
        let i = mono1(true);
        assert_eq!(values(&i), (0..20).map(|p| f64::from(-1 - p + 5)).collect::<Vec<_>>());
        assert!(!series_volume(&[pydicom_file("SC_rgb_rle.dcm")]).unwrap().inverted);
    }

    #[test]
    fn two_dimensional_images_that_are_no_volume_say_what_to_do() {
        // A multi-frame image with no patient geometry (a cine loop, a stack of photos): its
        // frames along k, 1 apart. pydicom: frame 2 is 255 - frame 1, sums 3,831,000 and
        // 3,819,000 (R, G, B together).
        let two = series_volume(&[pydicom_file("SC_rgb_rle_2frame.dcm")]).unwrap();
        assert_eq!((two.dims, two.channels, two.patient_geometry, two.cine, two.frame_time_ms), ([100, 100, 2], 3, false, true, None));
        assert_eq!((two.spacing, two.slice_sops.len()), ([1.0, 1.0, 1.0], 2));
        assert!(two.slice_sops[1].ends_with("/2"), "{:?}", two.slice_sops);
        let v = values(&two);
        let frame_sum = |k: usize| (0..3).map(|c| v[(c * 2 + k) * 10_000..(c * 2 + k + 1) * 10_000].iter().sum::<f64>()).sum::<f64>();
        assert_eq!((frame_sum(0), frame_sum(1)), (3_831_000.0, 3_819_000.0));
        assert_eq!(v[10_000], 255.0 - v[0], "frame 2 is frame 1 turned over");
        assert!(!series_volume(&[pydicom_file("SC_rgb_rle.dcm")]).unwrap().cine, "one frame is no cine loop");
        // Two 2D images in one series: no volume either.
        match series_volume(&[pydicom_file("SC_rgb_rle.dcm"), pydicom_file("SC_rgb_gdcm_KY.dcm")]).unwrap_err() {
            e @ VolumeError::SeparateImages { count: 2, .. } => assert!(e.to_string().contains("SC_rgb_rle.dcm: a 2D image"), "{e}"),
            e => panic!("{e}"),
        }
        // series_volumes makes them a volume each, in file order; a stacking series stays one.
        let each = series_volumes(&[pydicom_file("SC_rgb_rle.dcm"), pydicom_file("SC_rgb_gdcm_KY.dcm")]).unwrap();
        assert_eq!(each.iter().map(|(k, v)| (*k, v.dims)).collect::<Vec<_>>(), [(Some(0), [100, 100, 1]), (Some(1), [100, 100, 1])]);
        assert_eq!(each[0].1.data, series_volume(&[pydicom_file("SC_rgb_rle.dcm")]).unwrap().data);
        // A cine loop and a 2D image in one series: a volume per file, the loop's frames together.
        let mixed = series_volumes(&[pydicom_file("SC_rgb_rle_2frame.dcm"), pydicom_file("SC_rgb_rle.dcm")]).unwrap();
        assert_eq!(mixed.iter().map(|(k, v)| (*k, v.dims, v.cine)).collect::<Vec<_>>(), [(Some(0), [100, 100, 2], true), (Some(1), [100, 100, 1], false)]);
        match series_volume(&[pydicom_file("SC_rgb_rle_2frame.dcm"), pydicom_file("SC_rgb_rle.dcm")]).unwrap_err() {
            e @ VolumeError::SeparateImages { count: 2, .. } => assert!(e.to_string().starts_with("SC_rgb_rle_2frame.dcm: "), "{e}"),
            e => panic!("{e}"),
        }
        let ct = series_volumes(&files(&three())).unwrap();
        assert_eq!((ct.len(), ct[0].0, ct[0].1.dims[2]), (1, None, 3));
        // A grey 2D image: one slice, spacing from PixelSpacing.
        let nm = series_volume(&[pydicom_file("JPEG2000.dcm")]).unwrap();
        assert_eq!((nm.dims, nm.channels, nm.patient_geometry, nm.spacing), ([256, 1024, 1], 1, false, [2.26, 2.26, 1.0]));
        // The same image in 12-bit lossy JPEG (process 4), decoded by crate::jpeg12: its
        // maximum is 264, as dcmdjpeg decodes it (278 before the lossy compression), and it
        // stays close to the JPEG 2000 copy (mean difference 4.2); the two copies (one byte
        // apart in a scan header) decode alike.
        let lossy = series_volume(&[pydicom_file("JPEG-lossy.dcm")]).unwrap();
        assert_eq!((lossy.dims, lossy.spacing), (nm.dims, nm.spacing));
        let v = values(&lossy);
        assert_eq!(v.iter().copied().fold(f64::MIN, f64::max), 264.0);
        let mean = v.iter().zip(values(&nm)).map(|(a, b)| (a - b).abs()).sum::<f64>() / v.len() as f64;
        assert!(mean > 0.0 && mean < 5.0, "{mean}");
        assert_eq!(series_volume(&[pydicom_file("JPGExtended.dcm")]).unwrap().data, lossy.data);
    }

    #[test]
    fn colour_that_cannot_be_read_is_an_error_naming_the_file() {
        let (name, mut bytes) = pydicom_file("SC_rgb_rle.dcm");
        // PhotometricInterpretation "RGB " -> "HSV " (retired): unsupported, named.
        let at = bytes.windows(4).position(|w| w == b"RGB ").unwrap();
        bytes[at..at + 4].copy_from_slice(b"HSV ");
        match series_volume(&[(name.clone(), bytes.clone())]).unwrap_err() {
            VolumeError::Unsupported { name: n, reason } => assert!(n == name && reason.contains("PhotometricInterpretation HSV"), "{reason}"),
            e => panic!("{e}"),
        }
        // The RLE header claims two segments for three samples.
        bytes[at..at + 4].copy_from_slice(b"RGB ");
        let frag = bytes.windows(4).rposition(|w| w == [0xFE, 0xFF, 0x00, 0xE0]).unwrap() + 8;
        bytes[frag] = 2;
        let e = series_volume(&[(name, bytes)]).unwrap_err().to_string();
        assert!(e.contains("SC_rgb_rle.dcm") && e.contains("2 RLE segments, but 3 sample(s)"), "{e}");
    }

    #[test]
    fn bits_stored_masks_and_sign_extends() {
        let mut s = three();
        s.truncate(1);
        s[0].intercept = None;
        s[0].pixels[0] = 0x0fff; // 12-bit two's complement -1
        s[0].pixels[1] = 0xf005; // garbage in high bits
        let mut bytes = make_dicom(&s[0]);
        // patch BitsStored (written as US 16) to 12: find element (0028,0101)
        let tag = [0x28, 0x00, 0x01, 0x01, b'U', b'S', 2, 0, 16, 0];
        let at = bytes.windows(tag.len()).position(|w| w == tag).unwrap();
        bytes[at + 8] = 12;
        let v = series_volume(&[("a".into(), bytes)]).unwrap();
        assert_eq!(&i16_data(&v)[..2], &[-1, 5]);
    }

    #[test]
    fn single_slice() {
        let mut s = vec![spec(0, 4.0)];
        let v = series_volume(&files(&s)).unwrap();
        assert_eq!(v.dims, [4, 5, 1]);
        assert_eq!(v.spacing[2], 2.5);
        assert_eq!(v.affine[2][2], 2.5);
        s[0].thickness = None;
        let v = series_volume(&files(&s)).unwrap();
        assert_eq!(v.spacing[2], 1.0);
        assert_eq!(v.affine[2][2], 1.0);
    }

    fn err(specs: &[Spec]) -> VolumeError {
        series_volume(&files(specs)).unwrap_err()
    }

    #[test]
    fn series_errors() {
        assert!(matches!(series_volume(&[]), Err(VolumeError::Empty)));

        // RLE claimed, native pixel data given: patch the transfer syntax UID in the meta group
        let mut f = files(&three());
        let from = b"1.2.840.10008.1.2.1\0";
        let to = b"1.2.840.10008.1.2.5\0"; // RLE lossless
        let at = f[1].1.windows(from.len()).position(|w| w == from).unwrap();
        f[1].1[at..at + from.len()].copy_from_slice(to);
        let e = series_volume(&f).unwrap_err();
        assert!(e.to_string().starts_with("1.2.3.1.dcm"), "{e}");

        for (tag, kw) in [
            (tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient"),
            (tags::IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient"),
            (tags::PIXEL_SPACING, "PixelSpacing"),
            (tags::SOP_INSTANCE_UID, "SOPInstanceUID"),
            (tags::ROWS, "Rows"),
            (tags::COLUMNS, "Columns"),
            (tags::BITS_ALLOCATED, "BitsAllocated"),
            (tags::PIXEL_REPRESENTATION, "PixelRepresentation"),
            (tags::PIXEL_DATA, "PixelData"),
        ] {
            let mut s = three();
            s[2].omit = vec![tag];
            match err(&s) {
                VolumeError::Missing { name, keyword } => {
                    assert_eq!((name.as_str(), keyword), ("1.2.3.2.dcm", kw));
                }
                e => panic!("{kw}: {e}"),
            }
        }

        let mut s = three();
        s[0].frames = Some(2);
        assert!(matches!(err(&s), VolumeError::Unsupported { .. }));
        s[0].frames = Some(1);
        assert!(series_volume(&files(&s)).is_ok());

        let mut s = three();
        s[1].rows = 4;
        s[1].pixels.truncate(16);
        assert!(matches!(err(&s), VolumeError::Inconsistent { .. }));

        let mut s = three();
        s[1].iop = [1.0, 0.0, 0.0, 0.0, 0.99995, 0.01];
        assert!(matches!(err(&s), VolumeError::Inconsistent { .. }));

        let mut s = three();
        s[2].spacing = [0.7, 0.61];
        assert!(matches!(err(&s), VolumeError::Inconsistent { .. }));

        let mut s = three();
        s[2].pos = s[0].pos;
        s[2].sop = "1.2.3.99".into();
        let e = err(&s);
        let msg = e.to_string();
        assert!(matches!(e, VolumeError::DuplicatePosition { .. }));
        assert!(
            msg.contains("1.2.3.0.dcm") && msg.contains("1.2.3.99.dcm"),
            "{msg}"
        );

        let mut s = three();
        s[2].pos[2] = 15.2; // gaps 2.5 and 2.7
        assert!(matches!(err(&s), VolumeError::NonUniformSpacing { .. }));
        s[2].pos[2] = 15.01; // within 1%
        assert!(series_volume(&files(&s)).is_ok());

        let mut s = three();
        s[1].pos[0] += 3.0; // off the line
        assert!(matches!(err(&s), VolumeError::NonUniformSpacing { .. }));

        let mut s = three();
        s[0].pixels.truncate(10);
        assert!(matches!(
            err(&s),
            VolumeError::Invalid {
                keyword: "PixelData",
                ..
            }
        ));

        let mut s = three();
        s[0].bits = 8;
        s[0].pixels = vec![0; 20];
        s[1].bits = 8;
        s[1].pixels = vec![0; 20];
        s[2].bits = 8;
        s[2].pixels = vec![0; 20];
        s[0].iop = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        assert!(matches!(
            err(&s),
            VolumeError::Invalid {
                keyword: "ImageOrientationPatient",
                ..
            }
        ));

        let garbage = vec![(
            "junk".to_string(),
            b"hello world, definitely not DICOM".to_vec(),
        )];
        assert!(matches!(
            series_volume(&garbage),
            Err(VolumeError::Parse { .. })
        ));
    }

    #[test]
    fn truncated_and_flipped_dicom_never_panics() {
        for ts in [IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE, RLE_LOSSLESS] {
            let mut sp = spec(0, 0.0);
            sp.ts = ts;
            let good = make_dicom(&sp);
            assert!(series_volume(&[("g".into(), good.clone())]).is_ok());
            for len in 0..good.len() {
                let r = series_volume(&[("t".into(), good[..len].to_vec())]);
                assert!(r.is_err(), "{ts}: truncation to {len} bytes accepted");
            }
            for pos in 0..good.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut b = good.clone();
                    b[pos] ^= flip;
                    let _ = series_volume(&[("f".into(), b)]);
                }
            }
        }
    }

    #[test]
    fn length_scan_defined_length_sequences() {
        // explicit VR LE: (0008,1140) SQ defined length { item defined length { (0008,1155) UI "1.2" } }
        let mut ds = vec![0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0];
        let item_body = [
            0x08u8, 0x00, 0x55, 0x11, b'U', b'I', 4, 0, b'1', b'.', b'2', 0,
        ];
        let item_len = 8 + item_body.len() as u32;
        ds.extend_from_slice(&item_len.to_le_bytes());
        ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        ds.extend_from_slice(&(item_body.len() as u32).to_le_bytes());
        ds.extend_from_slice(&item_body);
        let enc = Enc {
            explicit: true,
            big: false,
        };
        assert_eq!(scan_elements(&ds, 0, ds.len(), enc, false, 0), Ok(ds.len()));
        let mut bad = ds.clone();
        bad[8] += 1; // sequence longer than the data
        assert!(scan_elements(&bad, 0, bad.len(), enc, false, 0).is_err());
        let mut bad = ds.clone();
        bad[16] += 8; // item longer than its sequence
        assert!(scan_elements(&bad, 0, bad.len(), enc, false, 0).is_err());
        // deep nesting is refused, not a stack overflow
        let mut deep = Vec::new();
        for _ in 0..200 {
            deep.extend_from_slice(&[
                0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xff, 0xff, 0xff, 0xff,
            ]);
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xff, 0xff, 0xff, 0xff]);
        }
        assert!(scan_elements(&deep, 0, deep.len(), enc, false, 0)
            .unwrap_err()
            .contains("nested"));
    }

    // ---- masks ----

    fn grid() -> Volume {
        series_volume(&files(&three())).unwrap()
    }

    fn labels_for(v: &Volume) -> Vec<u8> {
        (0..v.dims.iter().product::<usize>())
            .map(|i| (i % 7) as u8)
            .collect()
    }

    fn mat_mul4(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4]) -> [[f64; 4]; 4] {
        [0, 1, 2, 3].map(|r| [0, 1, 2, 3].map(|c| (0..4).map(|k| a[r][k] * b[k][c]).sum()))
    }

    /// Build a mask whose voxel (m0, m1, m2) is grid voxel F * m.
    fn remapped(v: &Volume, labels: &[u8], f: [[f64; 4]; 4], mdims: [usize; 3]) -> NiftiVolume {
        let [gx, gy, _] = v.dims;
        let mut values = Vec::new();
        for c in 0..mdims[2] {
            for b in 0..mdims[1] {
                for a in 0..mdims[0] {
                    let m = [a as f64, b as f64, c as f64, 1.0];
                    let g: Vec<usize> = (0..3)
                        .map(|r| (0..4).map(|k| f[r][k] * m[k]).sum::<f64>() as usize)
                        .collect();
                    values.push(labels[g[0] + gx * (g[1] + gy * g[2])] as f64);
                }
            }
        }
        NiftiVolume {
            dims: mdims,
            affine: mat_mul4(&v.affine, &f),
            values,
        }
    }

    fn ident() -> [[f64; 4]; 4] {
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    #[test]
    fn mask_identity_round_trip_through_nifti() {
        let v = grid();
        let labels = labels_for(&v);
        let bytes = crate::nifti::write_nifti(&label_nifti(&v, labels.clone()), true).unwrap();
        let m = crate::nifti::read_nifti(&bytes).unwrap();
        assert_eq!(mask_onto_grid(&m, v.dims, &v.affine).unwrap(), labels);
        // the volume itself round trips too
        let vb = crate::nifti::write_nifti(&volume_to_niftis(&v)[0], false).unwrap();
        let back = crate::nifti::read_nifti(&vb).unwrap();
        assert_eq!(
            back.values,
            i16_data(&v).iter().map(|&x| x as f64).collect::<Vec<_>>()
        );
    }

    #[test]
    fn mask_flipped_and_permuted() {
        let v = grid();
        let labels = labels_for(&v);
        let [nx, ny, nz] = v.dims;
        // flipped along y
        let mut f = ident();
        f[1][1] = -1.0;
        f[1][3] = (ny - 1) as f64;
        let m = remapped(&v, &labels, f, v.dims);
        assert_ne!(
            m.values,
            labels.iter().map(|&x| x as f64).collect::<Vec<_>>()
        );
        assert_eq!(mask_onto_grid(&m, v.dims, &v.affine).unwrap(), labels);
        // permuted: mask axes (a, b, c) -> grid (x = b, y = c, z = a), with x flipped too
        let f = [
            [0.0, -1.0, 0.0, (nx - 1) as f64],
            [0.0, 0.0, 1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let m = remapped(&v, &labels, f, [nz, nx, ny]);
        assert_eq!(mask_onto_grid(&m, v.dims, &v.affine).unwrap(), labels);
        // float32 precision noise in the mask affine is tolerated
        let mut m2 = m.clone();
        m2.affine[0][3] += 1e-4;
        m2.affine[1][1] *= 1.0 + 1e-6;
        assert_eq!(mask_onto_grid(&m2, v.dims, &v.affine).unwrap(), labels);
    }

    fn mismatch_reason(m: &NiftiVolume, v: &Volume) -> String {
        match mask_onto_grid(m, v.dims, &v.affine) {
            Err(VolumeError::GridMismatch { reason }) => reason,
            other => panic!("expected GridMismatch, got {other:?}"),
        }
    }

    #[test]
    fn mask_mismatches() {
        let v = grid();
        let labels = labels_for(&v);
        let good = remapped(&v, &labels, ident(), v.dims);

        let mut m = good.clone();
        m.dims = [4, 5, 2];
        m.values.truncate(40);
        let r = mismatch_reason(&m, &v);
        assert!(
            r.contains("shape") && r.contains("[4, 5, 2]") && r.contains("[4, 5, 3]"),
            "{r}"
        );

        let mut m = good.clone();
        for row in m.affine.iter_mut().take(3) {
            row[0] *= 2.0;
        }
        assert!(mismatch_reason(&m, &v).contains("spacing"));

        let mut m = good.clone();
        let (c, s) = (0.6f64, 0.8f64); // rotate mask in-plane
        let f = [
            [c, -s, 0.0, 0.0],
            [s, c, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        m.affine = mat_mul4(&v.affine, &f);
        assert!(mismatch_reason(&m, &v).contains("orientation"));

        let mut m = good.clone();
        m.affine = mat_mul4(
            &v.affine,
            &[
                [1.0, 0.0, 0.0, 0.5],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        );
        assert!(mismatch_reason(&m, &v).contains("origin"));

        let mut m = good.clone();
        m.affine = mat_mul4(
            &v.affine,
            &[
                [1.0, 0.0, 0.0, 1.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        );
        let r = mismatch_reason(&m, &v);
        assert!(r.contains("origin") && r.contains("1..=4"), "{r}");

        let mut sing = v.affine;
        sing[2] = [0.0; 4];
        assert!(matches!(
            mask_onto_grid(&good, v.dims, &sing),
            Err(VolumeError::GridMismatch { .. })
        ));

        let mut m = good.clone();
        m.values.pop();
        assert!(matches!(
            mask_onto_grid(&m, v.dims, &v.affine),
            Err(VolumeError::InvalidMask { .. })
        ));
    }

    #[test]
    fn mask_bad_values() {
        let v = grid();
        let labels = labels_for(&v);
        for bad in [-1.0, 256.0, 1.5, f64::NAN] {
            let mut m = remapped(&v, &labels, ident(), v.dims);
            m.values[5] = bad;
            m.values[9] = -3.0;
            match mask_onto_grid(&m, v.dims, &v.affine) {
                Err(VolumeError::MaskValue { voxel, value }) => {
                    assert_eq!(voxel, [1, 1, 0]);
                    assert!(value.is_nan() || value == bad);
                }
                other => panic!("{other:?}"),
            }
        }
        let mut m = remapped(&v, &labels, ident(), v.dims);
        m.values[0] = 255.0;
        m.values[1] = 2.0 + 1e-6;
        let out = mask_onto_grid(&m, v.dims, &v.affine).unwrap();
        assert_eq!(&out[..2], &[255, 2]);
    }
}



