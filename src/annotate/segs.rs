//! Segmentations: a DICOM SEG, or a NIfTI label mask with the series it belongs to, stored as
//! one label volume on the grid of the series (slices ordered by position).

use std::collections::BTreeMap;

use super::{AnnotateError, ImportRequest};
use crate::catalog::SegEntry;
use crate::dataset::Dataset;
use crate::id::ObjectId;
use crate::pack::Hint;
use crate::repo::Repo;
use crate::store::ObjectWriter;
use crate::volume::Volume;

fn file_err(file: &str, problem: impl Into<String>) -> AnnotateError {
    AnnotateError::File { file: file.into(), problem: problem.into() }
}

/// The volume of one series of the commit (pixels included: the grid is what matters here,
/// but reading it whole also proves the series can be exported).
pub(crate) fn load_series(repo: &Repo, ds: &Dataset, series: &str) -> Result<Volume, AnnotateError> {
    let items = ds.by_series.get(series).ok_or_else(|| AnnotateError::Task {
        task: String::new(),
        problem: format!("series {series} is not in commit {}", ds.commit.map(|c| c.short()).unwrap_or_default()),
    })?;
    let mut files = Vec::with_capacity(items.len());
    for &i in items {
        files.push((ds.items[i].path.clone(), ds.file_bytes(&repo.store, i)?));
    }
    crate::volume::series_volume(&files).map_err(|e| file_err(&format!("series {series}"), e.to_string()))
}

fn is_nifti(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
        || (bytes.len() >= 348 && (bytes[..4] == 348i32.to_le_bytes() || bytes[..4] == 348i32.to_be_bytes()))
}

pub(super) fn import(
    repo: &Repo,
    ds: &Dataset,
    file: &str,
    bytes: &[u8],
    req: &ImportRequest,
    w: &mut ObjectWriter,
) -> Result<(SegEntry, &'static str), AnnotateError> {
    let (series, labels, segments, format) = if is_nifti(bytes) {
        let series = req.series.clone().ok_or_else(|| file_err(file, "a NIfTI mask needs --series UID (the series it was drawn on)"))?;
        let vol = load_series(repo, ds, &series)?;
        let mask = crate::nifti::read_nifti(bytes).map_err(|e| file_err(file, e.to_string()))?;
        let labels = crate::volume::mask_onto_grid(&mask, vol.dims, &vol.affine).map_err(|e| file_err(file, format!("does not fit series {series}: {e}")))?;
        let mut segments = BTreeMap::new();
        let mut present: Vec<u8> = labels.iter().copied().filter(|&v| v > 0).collect();
        present.sort_unstable();
        present.dedup();
        for v in present {
            segments.insert(v, req.segment_names.get(&v).cloned().unwrap_or_else(|| format!("label-{v}")));
        }
        for (v, n) in &req.segment_names {
            segments.insert(*v, n.clone());
        }
        (series, labels, segments, (vol, "nifti"))
    } else {
        let seg = crate::seg::read_seg(bytes).map_err(|e| file_err(file, e.to_string()))?;
        // The series: that of the source images, else the referenced series.
        let from_sources: Vec<&str> = seg
            .frames
            .iter()
            .filter_map(|f| f.source_sop_uid.as_deref())
            .filter_map(|s| ds.by_sop.get(s).and_then(|&i| ds.items[i].series()))
            .collect();
        let series = match from_sources.first() {
            Some(s) => {
                if let Some(other) = from_sources.iter().find(|x| *x != s) {
                    return Err(file_err(file, format!("frames refer to images of two series ({s} and {other}); one SEG per series")));
                }
                s.to_string()
            }
            None => seg.referenced_series_uid.clone().ok_or_else(|| file_err(file, "refers to no image of this commit and names no series"))?,
        };
        if let Some(req_series) = &req.series {
            if req_series != &series {
                return Err(file_err(file, format!("segments series {series}, not --series {req_series}")));
            }
        }
        let vol = load_series(repo, ds, &series)?;
        let [nx, ny, nz] = vol.dims;
        if seg.columns != nx || seg.rows != ny {
            return Err(file_err(file, format!("mask is {}x{} but series {series} is {nx}x{ny}", seg.columns, seg.rows)));
        }
        let slice_of: std::collections::HashMap<&str, usize> = vol.slice_sops.iter().enumerate().map(|(k, s)| (s.as_str(), k)).collect();
        let mut labels = vec![0u8; nx * ny * nz];
        let mut segments = BTreeMap::new();
        for s in &seg.segments {
            let v = u8::try_from(s.number).map_err(|_| file_err(file, format!("segment number {} is above 255", s.number)))?;
            segments.insert(v, if s.label.is_empty() { format!("segment-{v}") } else { s.label.clone() });
        }
        for (fi, f) in seg.frames.iter().enumerate() {
            let k = match (&f.source_sop_uid, &f.position) {
                // A frame of a multi-frame source image is the slice "SOP/frame".
                (Some(src), _) => {
                    let id = crate::volume::slice_id(src, f.source_frame);
                    match slice_of.get(id.as_str()) {
                        Some(&k) => k,
                        None if f.source_frame.is_none() && slice_of.contains_key(crate::volume::slice_id(src, Some(1)).as_str()) => {
                            return Err(file_err(file, format!("frame {}: source image {src} is multi-frame, and the frame names no ReferencedFrameNumber", fi + 1)));
                        }
                        None => {
                            let what = f.source_frame.map_or(format!("source image {src}"), |n| format!("frame {n} of source image {src}"));
                            return Err(file_err(file, format!("frame {}: {what} is not a slice of series {series} in this commit", fi + 1)));
                        }
                    }
                }
                (None, Some(pos)) => slice_at(&vol, pos).ok_or_else(|| file_err(file, format!("frame {}: position {pos:?} is on no slice of series {series}", fi + 1)))?,
                (None, None) => return Err(file_err(file, format!("frame {}: names neither a source image nor a position", fi + 1))),
            };
            let v = u8::try_from(f.segment).unwrap_or(0);
            let plane = &mut labels[k * nx * ny..(k + 1) * nx * ny];
            for (dst, &m) in plane.iter_mut().zip(&f.mask) {
                if m != 0 {
                    // A label map's frame (segment 0) holds each pixel's segment number.
                    *dst = if f.segment == 0 { m } else { v };
                }
            }
        }
        (series, labels, segments, (vol, "dicom-seg"))
    };
    let (vol, fmt) = format;
    let voxels = crate::catalog::voxel_counts(&labels);
    if let Some(v) = voxels.keys().find(|v| !segments.contains_key(v)) {
        return Err(file_err(file, format!("mask holds label value {v}, which no segment names")));
    }
    let mask = ObjectId::of(&labels);
    if !repo.store.contains(&mask) && !w.contains(&mask) {
        w.put_blob(&labels, Hint::Generic)?;
    }
    let dims = vol.dims.map(|d| d as u32);
    Ok((SegEntry { series_uid: series, dims, slice_sops: vol.slice_sops.clone(), segments, mask, voxels }, fmt))
}

/// The slice whose origin is at `pos` (LPS, mm), within a tenth of the slice spacing.
fn slice_at(vol: &Volume, pos: &[f64; 3]) -> Option<usize> {
    let a = &vol.affine;
    let tol = (vol.spacing[2].abs() * 0.1).max(1e-3);
    (0..vol.dims[2]).find(|&k| {
        let k = k as f64;
        // RAS → LPS: negate x and y.
        let o = [-(a[0][2] * k + a[0][3]), -(a[1][2] * k + a[1][3]), a[2][2] * k + a[2][3]];
        o.iter().zip(pos).all(|(a, b)| (a - b).abs() <= tol)
    })
}
