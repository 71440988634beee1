//! Annotations and splits as structured objects, named from a commit's catalog.
//!
//! A commit (format version 2) may name a [`Catalog`]: the annotation sets (one per task and
//! reader) and the splits that belong to that dataset state. They live beside the tree, not in
//! the working folder: checking out a commit never writes them as files, and a commit that only
//! adds labels shares its tree with its parent. Each object links to the version it replaces
//! (`previous`), so re-annotating never loses the old labels.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::id::ObjectId;
use crate::object::Structured;

/// Activity output roles under which a commit names catalog objects (reachability follows them).
pub const CATALOG_ROLE: &str = "catalog";

/// Everything beside the tree that a commit's dataset state has.
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct Catalog {
    /// (task, reader) → [`AnnotationSet`]
    pub annotations: BTreeMap<(String, String), ObjectId>,
    /// split name → [`Split`]
    pub splits: BTreeMap<String, ObjectId>,
}

impl Structured for Catalog {
    const MAGIC: [u8; 4] = *b"COHK";
    const VERSION: u16 = 1;
    const KIND: &'static str = "catalog";
}

impl Catalog {
    pub fn is_empty(&self) -> bool {
        self.annotations.is_empty() && self.splits.is_empty()
    }

    /// Readers of one task, in name order.
    pub fn readers(&self, task: &str) -> Vec<(&str, ObjectId)> {
        self.annotations
            .iter()
            .filter(|((t, _), _)| t == task)
            .map(|((_, r), id)| (r.as_str(), *id))
            .collect()
    }

    /// Every task name, once, in order.
    pub fn tasks(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.annotations.keys().map(|(t, _)| t.as_str()).collect();
        v.dedup();
        v
    }
}

/// What an annotation set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationKind {
    Label,
    Bbox,
    Segmentation,
}

impl AnnotationKind {
    pub fn name(self) -> &'static str {
        match self {
            AnnotationKind::Label => "label",
            AnnotationKind::Bbox => "bbox",
            AnnotationKind::Segmentation => "segmentation",
        }
    }
}

/// Where a label's truth comes from, most valuable first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Encode, Decode, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSource {
    /// Ground truth from tissue.
    Pathology,
    Genomic,
    /// Follow-up outcome.
    Outcome,
    /// Read at the time, with clinical context.
    Prospective,
    /// Read later, for the dataset.
    Retrospective,
    /// Derived: NLP of reports, model output, ...
    Weak,
}

impl LabelSource {
    pub fn name(self) -> &'static str {
        match self {
            LabelSource::Pathology => "pathology",
            LabelSource::Genomic => "genomic",
            LabelSource::Outcome => "outcome",
            LabelSource::Prospective => "prospective",
            LabelSource::Retrospective => "retrospective",
            LabelSource::Weak => "weak",
        }
    }
}

/// The image(s) a label refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize)]
#[serde(tag = "level", content = "id", rename_all = "lowercase")]
pub enum Target {
    /// SOP Instance UID.
    Instance(String),
    /// Series Instance UID.
    Series(String),
    /// Study Instance UID.
    Study(String),
    /// A file that is not DICOM, by path in the tree.
    Path(String),
}

impl Target {
    pub fn level(&self) -> &'static str {
        match self {
            Target::Instance(_) => "instance",
            Target::Series(_) => "series",
            Target::Study(_) => "study",
            Target::Path(_) => "path",
        }
    }
    pub fn value(&self) -> &str {
        match self {
            Target::Instance(v) | Target::Series(v) | Target::Study(v) | Target::Path(v) => v,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.level(), self.value())
    }
}

/// One label: a target, a label name and an optional value (a grade, a score).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct LabelEntry {
    pub target: Target,
    pub label: String,
    pub value: Option<String>,
}

/// One box, in pixel coordinates (x, y of the top-left corner; width, height) of one frame.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct BoxEntry {
    pub sop_uid: String,
    /// 1-based frame number; 1 for single-frame images.
    pub frame: u32,
    pub label: String,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// A label volume on the grid of one series: `mask` is a blob of `dims[0]*dims[1]*dims[2]`
/// bytes (x fastest, slices in `slice_sops` order, sorted by position), 0 = background.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct SegEntry {
    pub series_uid: String,
    pub dims: [u32; 3],
    /// The slice ids of the series' volume (`crate::volume::slice_id`): a SOP Instance UID,
    /// or `UID/frame` for a frame of a multi-frame image.
    pub slice_sops: Vec<String>,
    /// label value → name
    pub segments: BTreeMap<u8, String>,
    pub mask: ObjectId,
    /// Foreground voxels per label value, kept for cards and counts without reading the mask.
    pub voxels: BTreeMap<u8, u64>,
}

/// Foreground voxels per label value of a label map.
pub fn voxel_counts(labels: &[u8]) -> BTreeMap<u8, u64> {
    let mut out = BTreeMap::new();
    for &v in labels {
        if v > 0 {
            *out.entry(v).or_insert(0) += 1;
        }
    }
    out
}

impl SegEntry {
    /// A lookup table from this mask's label values to 1-based positions in `names` (a shared
    /// value space across masks whose readers numbered segments differently); 0 stays 0.
    /// Every segment name of this mask must be in `names`.
    pub fn value_map(&self, names: &[String]) -> [u8; 256] {
        let mut lut = [0u8; 256];
        for (v, n) in &self.segments {
            if let Some(i) = names.iter().position(|x| x == n) {
                lut[usize::from(*v)] = i as u8 + 1;
            }
        }
        lut
    }
}

/// The file an annotation set was read from (its content hash; the name is dropped by deid).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct InputFile {
    pub name: Option<String>,
    pub blake3: ObjectId,
    pub format: String,
}

/// How a consensus was made.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Derivation {
    pub method: String,
    /// The annotation sets it was made from, with their readers.
    pub inputs: Vec<(String, ObjectId)>,
    /// Items left without a consensus (ties), by target.
    pub unresolved: u64,
}

/// One version of one reader's annotations for one task.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct AnnotationSet {
    pub task: String,
    pub kind: AnnotationKind,
    pub reader: String,
    pub source: LabelSource,
    pub time_us: i64,
    pub input: Option<InputFile>,
    pub labels: Vec<LabelEntry>,
    pub boxes: Vec<BoxEntry>,
    pub segmentations: Vec<SegEntry>,
    pub derivation: Option<Derivation>,
    /// The version of this (task, reader) it replaces.
    pub previous: Option<ObjectId>,
}

impl Structured for AnnotationSet {
    const MAGIC: [u8; 4] = *b"COHA";
    const VERSION: u16 = 1;
    const KIND: &'static str = "annotation set";
}

/// What a split assigns: whole patients or whole studies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Patient,
    Study,
}

impl GroupBy {
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Patient => "patient",
            GroupBy::Study => "study",
        }
    }
}

/// The part (and stratum) of one group.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Assignment {
    pub part: String,
    pub stratum: String,
}

/// A train/validation/test split: every assignment is recorded, so it never depends on the
/// code that made it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Split {
    pub name: String,
    pub group: GroupBy,
    /// (part name, percent), summing to 100.
    pub parts: Vec<(String, u32)>,
    pub seed: u64,
    /// Label task whose labels were the strata.
    pub stratify: Option<String>,
    /// group id (Patient ID or Study Instance UID) → assignment
    pub assignments: BTreeMap<String, Assignment>,
    pub previous: Option<ObjectId>,
}

impl Structured for Split {
    const MAGIC: [u8; 4] = *b"COHS";
    const VERSION: u16 = 1;
    const KIND: &'static str = "split";
}

/// Every object a catalog reaches (for gc, fsck and copying between stores): the annotation
/// sets, their masks and the splits. Previous versions are reached through older commits.
pub fn catalog_children(cat: &Catalog, read_set: &mut dyn FnMut(&ObjectId) -> Option<AnnotationSet>) -> Vec<ObjectId> {
    let mut out = Vec::new();
    for id in cat.annotations.values() {
        out.push(*id);
        if let Some(set) = read_set(id) {
            out.extend(set.segmentations.iter().map(|s| s.mask));
        }
    }
    out.extend(cat.splits.values().copied());
    out
}
