//! Label files: CSV rows of (image reference, label name, optional value).
//!
//! The reference is a SOP Instance, Series or Study Instance UID, or a path in the commit.
//! A header row names the columns (`sop_uid`, `series_uid`, `study_uid`, `path` or `uid`, then
//! `label` and optionally `value`); without one, the columns are reference, label, value and the
//! reference's level is found by looking it up. A path to a DICOM file is stored as its SOP
//! Instance UID, so the label follows the image through de-identification.

use std::collections::HashMap;

use super::{input_err, AnnotateError};
use crate::catalog::{LabelEntry, Target};
use crate::dataset::Dataset;

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Instance,
    Series,
    Study,
    Path,
    Any,
}

fn level_of_column(name: &str) -> Option<Level> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "sop_uid" | "sop_instance_uid" | "sopinstanceuid" | "instance" | "instance_uid" => Level::Instance,
        "series_uid" | "series_instance_uid" | "seriesinstanceuid" | "series" => Level::Series,
        "study_uid" | "study_instance_uid" | "studyinstanceuid" | "study" => Level::Study,
        "path" | "file" => Level::Path,
        "uid" | "target" | "image" | "id" => Level::Any,
        _ => return None,
    })
}

fn resolve(ds: &Dataset, level: Level, v: &str) -> Option<Target> {
    let inst = || ds.by_sop.contains_key(v).then(|| Target::Instance(v.to_string()));
    let series = || ds.by_series.contains_key(v).then(|| Target::Series(v.to_string()));
    let study = || ds.by_study.contains_key(v).then(|| Target::Study(v.to_string()));
    let path = || {
        let p = v.trim_start_matches("./");
        ds.by_path.get(p).map(|&i| match ds.items[i].sop() {
            Some(s) => Target::Instance(s.to_string()),
            None => Target::Path(p.to_string()),
        })
    };
    match level {
        Level::Instance => inst(),
        Level::Series => series(),
        Level::Study => study(),
        Level::Path => path(),
        Level::Any => inst().or_else(series).or_else(study).or_else(path),
    }
}

/// Parse and resolve a label CSV against the commit's images.
pub(super) fn parse(file: &str, bytes: &[u8], ds: &Dataset) -> Result<Vec<LabelEntry>, AnnotateError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(bytes);
    let mut level = Level::Any;
    let (mut ref_col, mut label_col, mut value_col) = (0usize, 1usize, Some(2usize));
    let mut header_len: Option<usize> = None;
    let mut out: Vec<LabelEntry> = Vec::new();
    let mut seen: HashMap<Target, u64> = HashMap::new();
    for (n, rec) in rdr.records().enumerate() {
        let line = n as u64 + 1;
        let rec = rec.map_err(|e| input_err(file, format!("line {line}"), format!("not valid CSV: {e}")))?;
        if rec.iter().all(|f| f.is_empty()) {
            continue;
        }
        if n == 0 {
            let names: Vec<String> = rec.iter().map(|f| f.trim_start_matches('\u{feff}').to_ascii_lowercase()).collect();
            if let Some(li) = names.iter().position(|f| f == "label") {
                let Some(ri) = names.iter().position(|f| level_of_column(f).is_some()) else {
                    return Err(input_err(file, "line 1", "header has a 'label' column but no image column (sop_uid, series_uid, study_uid, path or uid)"));
                };
                level = level_of_column(&names[ri]).expect("checked");
                ref_col = ri;
                label_col = li;
                value_col = names.iter().position(|f| f == "value");
                header_len = Some(names.len());
                continue;
            }
        }
        match header_len {
            Some(h) if rec.len() != h => {
                return Err(input_err(file, format!("line {line}"), format!("{} field(s), the header has {h}", rec.len())));
            }
            None if !(2..=3).contains(&rec.len()) => {
                return Err(input_err(file, format!("line {line}"), format!("expected reference,label[,value]: found {} field(s)", rec.len())));
            }
            _ => {}
        }
        let reference = rec.get(ref_col).unwrap_or("");
        let label = rec.get(label_col).unwrap_or("");
        if reference.is_empty() {
            return Err(input_err(file, format!("line {line}"), "empty image reference"));
        }
        if label.is_empty() {
            return Err(input_err(file, format!("line {line}"), format!("empty label for {reference}")));
        }
        let target = resolve(ds, level, reference).ok_or_else(|| {
            input_err(
                file,
                format!("line {line}"),
                format!("{reference:?} is not an image of commit {} (no such UID or path)", ds.commit.map(|c| c.short()).unwrap_or_default()),
            )
        })?;
        if let Some(first) = seen.insert(target.clone(), line) {
            return Err(input_err(file, format!("line {line}"), format!("{target} is already labelled on line {first}; a task gives one label per image (use another --task for more)")));
        }
        let value = value_col.and_then(|c| rec.get(c)).filter(|v| !v.is_empty()).map(str::to_string);
        out.push(LabelEntry { target, label: label.to_string(), value });
    }
    if out.is_empty() {
        return Err(AnnotateError::File { file: file.into(), problem: "no labels in the file".into() });
    }
    out.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(out)
}
