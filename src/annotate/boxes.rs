//! Bounding boxes from COCO-style JSON: `images` (each naming an instance of the commit by
//! `file_name` = path, or `sop_instance_uid`, with an optional 1-based `frame`), `categories`
//! (`id`, `name`) and `annotations` (`image_id`, `category_id`, `bbox` = [x, y, width, height]
//! in pixel coordinates).

use std::collections::HashMap;

use serde::Deserialize;

use super::{input_err, AnnotateError};
use crate::catalog::BoxEntry;
use crate::dataset::Dataset;

#[derive(Deserialize)]
struct Coco {
    images: Vec<Image>,
    #[serde(default)]
    annotations: Vec<Ann>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct Image {
    id: serde_json::Value,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    sop_instance_uid: Option<String>,
    #[serde(default)]
    frame: Option<u32>,
}

#[derive(Deserialize)]
struct Ann {
    image_id: serde_json::Value,
    category_id: serde_json::Value,
    bbox: Vec<f64>,
}

#[derive(Deserialize)]
struct Category {
    id: serde_json::Value,
    name: String,
}

pub(super) fn parse(file: &str, bytes: &[u8], ds: &Dataset) -> Result<Vec<BoxEntry>, AnnotateError> {
    let coco: Coco = serde_json::from_slice(bytes).map_err(|e| {
        input_err(file, format!("line {} column {}", e.line(), e.column()), format!("not COCO JSON: {e}"))
    })?;
    let commit = ds.commit.map(|c| c.short()).unwrap_or_default();
    let mut images: HashMap<String, (usize, u32)> = HashMap::new();
    for (i, im) in coco.images.iter().enumerate() {
        let place = format!("images[{i}]");
        let idx = match (&im.sop_instance_uid, &im.file_name) {
            (Some(u), _) => *ds.by_sop.get(u).ok_or_else(|| input_err(file, &place, format!("SOP Instance UID {u} is not in commit {commit}")))?,
            (None, Some(p)) => {
                let p = p.trim_start_matches("./");
                *ds.by_path.get(p).ok_or_else(|| input_err(file, &place, format!("file_name {p:?} is not a file of commit {commit}")))?
            }
            (None, None) => return Err(input_err(file, &place, "names no image: give file_name (a path) or sop_instance_uid")),
        };
        let item = &ds.items[idx];
        if item.sop().is_none() {
            return Err(input_err(file, &place, format!("{} is not a DICOM instance with a SOP Instance UID", item.path)));
        }
        let frames = item.info.as_ref().and_then(|i| i.number_of_frames).unwrap_or(1).max(1);
        let frame = im.frame.unwrap_or(1);
        if frame == 0 || frame > frames {
            return Err(input_err(file, &place, format!("frame {frame} out of range: {} has {frames} frame(s)", item.path)));
        }
        if images.insert(im.id.to_string(), (idx, frame)).is_some() {
            return Err(input_err(file, &place, format!("image id {} appears twice", im.id)));
        }
    }
    let mut cats: HashMap<String, String> = HashMap::new();
    for (i, c) in coco.categories.iter().enumerate() {
        if c.name.trim().is_empty() {
            return Err(input_err(file, format!("categories[{i}]"), "empty name"));
        }
        cats.insert(c.id.to_string(), c.name.trim().to_string());
    }
    let mut out = Vec::with_capacity(coco.annotations.len());
    for (i, a) in coco.annotations.iter().enumerate() {
        let place = format!("annotations[{i}]");
        let &(idx, frame) = images.get(&a.image_id.to_string()).ok_or_else(|| input_err(file, &place, format!("image_id {} is not in images", a.image_id)))?;
        let label = cats.get(&a.category_id.to_string()).ok_or_else(|| input_err(file, &place, format!("category_id {} is not in categories", a.category_id)))?;
        let [x, y, w, h] = a.bbox[..] else {
            return Err(input_err(file, &place, format!("bbox has {} numbers, expected [x, y, width, height]", a.bbox.len())));
        };
        if ![x, y, w, h].iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 || x < 0.0 || y < 0.0 {
            return Err(input_err(file, &place, format!("bbox {:?} is not a box (x, y >= 0; width, height > 0)", a.bbox)));
        }
        let item = &ds.items[idx];
        let info = item.info.as_ref().expect("checked DICOM above");
        if let (Some(cols), Some(rows)) = (info.columns, info.rows) {
            if x + w > f64::from(cols) + 1e-6 || y + h > f64::from(rows) + 1e-6 {
                return Err(input_err(file, &place, format!("bbox {:?} reaches outside the {cols}x{rows} image {}", a.bbox, item.path)));
            }
        }
        out.push(BoxEntry { sop_uid: item.sop().expect("checked").to_string(), frame, label: label.clone(), x, y, w, h });
    }
    if out.is_empty() {
        return Err(AnnotateError::File { file: file.into(), problem: "no annotations in the file".into() });
    }
    out.sort_by(|a, b| {
        (&a.sop_uid, a.frame, &a.label)
            .cmp(&(&b.sop_uid, b.frame, &b.label))
            .then(a.x.total_cmp(&b.x))
            .then(a.y.total_cmp(&b.y))
            .then(a.w.total_cmp(&b.w))
            .then(a.h.total_cmp(&b.h))
    });
    Ok(out)
}
