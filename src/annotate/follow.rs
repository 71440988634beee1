//! Annotations and splits following their images through de-identification: every reference
//! is mapped to the new UIDs, patient pseudonyms and paths, and nothing else comes along (the
//! imported file's name, links to identified versions).

use std::collections::HashMap;

use crate::catalog::{AnnotationSet, Catalog, GroupBy, Split, Target};
use crate::id::ObjectId;
use crate::pack::Hint;
use crate::store::{ObjectWriter, Store, StoreError};

/// Old value → new value, as de-identification produced them.
#[derive(Debug, Default)]
pub struct DeidMaps {
    /// SOP Instance, Series and Study Instance UIDs.
    pub uids: HashMap<String, String>,
    pub patients: HashMap<String, String>,
    /// Paths of files kept (non-DICOM files keep their path; DICOM labels use UIDs).
    pub paths: HashMap<String, String>,
    /// Identifying strings of the source (Patient IDs, name components): a label, value or
    /// segment name that contains one is replaced.
    pub identifiers: Vec<String>,
}

/// What replaces free text that contained an identifier.
pub const REDACTED: &str = "(redacted)";

impl DeidMaps {
    fn clean(&self, s: &str, redacted: &mut u64) -> String {
        let lower = s.to_lowercase();
        if self.identifiers.iter().any(|i| lower.contains(i.as_str())) {
            *redacted += 1;
            REDACTED.to_string()
        } else {
            s.to_string()
        }
    }

    /// Add the identifying strings of one source patient.
    pub fn add_identifiers(&mut self, patient_id: Option<&str>, patient_name: Option<&str>) {
        let mut add = |v: &str| {
            let v = v.trim().to_lowercase();
            // Short fragments ("M", "DR") would match ordinary words.
            if v.chars().count() >= 4 && !self.identifiers.contains(&v) {
                self.identifiers.push(v);
            }
        };
        if let Some(p) = patient_id {
            add(p);
        }
        if let Some(n) = patient_name {
            for part in n.split(['^', ' ', '=']) {
                add(part);
            }
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FollowSummary {
    pub annotation_sets: usize,
    pub splits: usize,
    /// References to images that are not in the de-identified commit (dropped).
    pub dropped: u64,
    /// Labels, values and segment names replaced because they contained an identifier.
    pub redacted: u64,
}

fn map_target(t: &Target, m: &DeidMaps) -> Option<Target> {
    Some(match t {
        Target::Instance(u) => Target::Instance(m.uids.get(u)?.clone()),
        Target::Series(u) => Target::Series(m.uids.get(u)?.clone()),
        Target::Study(u) => Target::Study(m.uids.get(u)?.clone()),
        Target::Path(p) => Target::Path(m.paths.get(p)?.clone()),
    })
}

fn map_set(src: &Store, dst: &Store, w: &mut ObjectWriter, s: &AnnotationSet, m: &DeidMaps, ids: &HashMap<ObjectId, ObjectId>, sum: &mut FollowSummary) -> Result<AnnotationSet, StoreError> {
    let (dropped, redacted) = (&mut sum.dropped, &mut sum.redacted);
    let mut out = s.clone();
    out.previous = None;
    if let Some(i) = &mut out.input {
        i.name = None;
    }
    out.labels = s
        .labels
        .iter()
        .filter_map(|l| match map_target(&l.target, m) {
            Some(t) => Some(crate::catalog::LabelEntry {
                target: t,
                label: m.clean(&l.label, redacted),
                value: l.value.as_ref().map(|v| m.clean(v, redacted)),
            }),
            None => {
                *dropped += 1;
                None
            }
        })
        .collect();
    out.labels.sort_by(|a, b| a.target.cmp(&b.target));
    out.boxes = s
        .boxes
        .iter()
        .filter_map(|b| match m.uids.get(&b.sop_uid) {
            Some(u) => Some(crate::catalog::BoxEntry { sop_uid: u.clone(), label: m.clean(&b.label, redacted), ..b.clone() }),
            None => {
                *dropped += 1;
                None
            }
        })
        .collect();
    out.segmentations.clear();
    for g in &s.segmentations {
        let series = m.uids.get(&g.series_uid);
        // A slice id is a SOP Instance UID, or "UID/frame" for a frame of a multi-frame image.
        let slices: Option<Vec<String>> = g
            .slice_sops
            .iter()
            .map(|id| {
                let (sop, frame) = crate::volume::split_slice_id(id);
                m.uids.get(sop).map(|u| crate::volume::slice_id(u, frame))
            })
            .collect();
        let (Some(series), Some(slices)) = (series, slices) else {
            *dropped += 1;
            continue;
        };
        if !dst.contains(&g.mask) && !w.contains(&g.mask) {
            w.put_blob(&src.read(&g.mask)?, Hint::Generic)?;
        }
        let segments = g.segments.iter().map(|(v, n)| (*v, m.clean(n, redacted))).collect();
        out.segmentations.push(crate::catalog::SegEntry { series_uid: series.clone(), slice_sops: slices, segments, ..g.clone() });
    }
    out.segmentations.sort_by(|a, b| a.series_uid.cmp(&b.series_uid));
    if let Some(d) = &mut out.derivation {
        d.inputs = d.inputs.iter().filter_map(|(r, id)| ids.get(id).map(|n| (r.clone(), *n))).collect();
    }
    Ok(out)
}

fn map_split(s: &Split, m: &DeidMaps, sum: &mut FollowSummary) -> Split {
    let mut out = s.clone();
    out.previous = None;
    out.assignments.clear();
    for (g, a) in &s.assignments {
        let new = match s.group {
            GroupBy::Patient => m.patients.get(g),
            GroupBy::Study => m.uids.get(g),
        };
        match new {
            Some(n) => {
                let a = crate::catalog::Assignment { part: a.part.clone(), stratum: m.clean(&a.stratum, &mut sum.redacted) };
                out.assignments.insert(n.clone(), a);
            }
            None => sum.dropped += 1,
        }
    }
    out
}

/// Map every annotation set and split of `cat` (objects in `src`) into `w` (for store `dst`).
pub fn follow(src: &Store, dst: &Store, w: &mut ObjectWriter, cat: &Catalog, m: &DeidMaps) -> Result<(Catalog, FollowSummary), StoreError> {
    let mut out = Catalog::default();
    let mut sum = FollowSummary::default();
    let mut ids: HashMap<ObjectId, ObjectId> = HashMap::new();
    let mut sets: Vec<(&(String, String), &ObjectId, AnnotationSet)> = Vec::new();
    for (k, id) in &cat.annotations {
        sets.push((k, id, src.read_annotations(id)?));
    }
    // Readers' sets first, so that a consensus can name its mapped inputs.
    sets.sort_by_key(|(_, _, s)| s.derivation.is_some());
    for (k, id, s) in sets {
        let mapped = map_set(src, dst, w, &s, m, &ids, &mut sum)?;
        let new = w.put(&mapped)?;
        ids.insert(*id, new);
        out.annotations.insert(k.clone(), new);
        sum.annotation_sets += 1;
    }
    for (name, id) in &cat.splits {
        let s = map_split(&src.read_split(id)?, m, &mut sum);
        out.splits.insert(name.clone(), w.put(&s)?);
        sum.splits += 1;
    }
    Ok((out, sum))
}
