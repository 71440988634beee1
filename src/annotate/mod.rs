//! `cohort annotate`: labels, boxes and segmentations as versioned annotation sets, linked to
//! the images of a commit by DICOM UIDs; their diff, reader agreement and consensus.
//!
//! An import resolves every reference against the commit it goes on top of and refuses the
//! whole file on the first bad line, naming it; nothing is committed then.

mod boxes;
pub mod compare;
pub mod follow;
mod labels;
mod segs;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::catalog::{AnnotationKind, AnnotationSet, Catalog, InputFile, LabelSource};
use crate::dataset::Dataset;
use crate::id::ObjectId;
use crate::object::ActivityRef;
use crate::repo::{CatalogChange, Repo, RepoError};
use crate::store::StoreError;

pub use compare::{agreement, consensus, diff_catalogs, Agreement, AnnotationDiff, ConsensusMethod};

/// Errors of annotation commands.
#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A problem at one place of an input file (line, JSON path).
    #[error("{file}: {place}: {problem}")]
    Input { file: String, place: String, problem: String },
    #[error("{file}: {problem}")]
    File { file: String, problem: String },
    #[error("invalid {what} name {name:?}: use letters, digits, '.', '_', '-' and '/'")]
    BadName { what: &'static str, name: String },
    #[error("no annotations for task {task:?} in commit {commit}{hint}")]
    NoTask { task: String, commit: String, hint: String },
    #[error("task {task:?}: {problem}")]
    Task { task: String, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
}

pub(crate) fn input_err(file: &str, place: impl Into<String>, problem: impl Into<String>) -> AnnotateError {
    AnnotateError::Input { file: file.to_string(), place: place.into(), problem: problem.into() }
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub rev: String,
    pub file: PathBuf,
    pub reader: String,
    pub kind: AnnotationKind,
    pub source: LabelSource,
    /// Task name; defaults to the kind's name.
    pub task: Option<String>,
    pub message: Option<String>,
    /// Segmentation from NIfTI: the series the mask belongs to.
    pub series: Option<String>,
    /// Segmentation from NIfTI: label value → name.
    pub segment_names: BTreeMap<u8, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub commit: ObjectId,
    pub annotation_set: ObjectId,
    pub task: String,
    pub reader: String,
    pub kind: AnnotationKind,
    pub source: LabelSource,
    pub labels: usize,
    pub boxes: usize,
    pub segmentations: usize,
    pub previous: Option<ObjectId>,
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), AnnotateError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['-', '.'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'));
    if ok { Ok(()) } else { Err(AnnotateError::BadName { what, name: name.into() }) }
}

/// Import one file as a new version of (task, reader) on top of `req.rev`.
pub fn import(repo: &Repo, req: &ImportRequest) -> Result<ImportSummary, AnnotateError> {
    let started = repo.ctx.now_us();
    let task = req.task.clone().unwrap_or_else(|| req.kind.name().to_string());
    check_name("task", &task)?;
    check_name("reader", &req.reader)?;
    let (base, commit) = repo.catalog_base(&req.rev)?;
    let bytes = std::fs::read(&req.file).map_err(|source| AnnotateError::Io { path: req.file.clone(), source })?;
    let name = req.file.display().to_string();
    let ds = Dataset::load(&repo.store, base, &commit.tree)?;
    let mut catalog = repo.store.catalog_of(&commit)?;
    let key = (task.clone(), req.reader.clone());
    let previous = catalog.annotations.get(&key).copied();
    let prev_set = previous.map(|p| repo.store.read_annotations(&p)).transpose()?;
    if let Some(p) = &prev_set {
        if p.kind != req.kind {
            return Err(AnnotateError::Task {
                task,
                problem: format!("holds {} annotations; a task has one kind (use another --task)", p.kind.name()),
            });
        }
    }
    let mut w = repo.store.writer()?;
    let mut set = AnnotationSet {
        task: task.clone(),
        kind: req.kind,
        reader: req.reader.clone(),
        source: req.source,
        time_us: started,
        input: Some(InputFile {
            name: req.file.file_name().map(|n| n.to_string_lossy().into_owned()),
            blake3: ObjectId::of(&bytes),
            format: String::new(),
        }),
        labels: vec![],
        boxes: vec![],
        segmentations: vec![],
        derivation: None,
        previous,
    };
    let format = match req.kind {
        AnnotationKind::Label => {
            set.labels = labels::parse(&name, &bytes, &ds)?;
            "csv"
        }
        AnnotationKind::Bbox => {
            set.boxes = boxes::parse(&name, &bytes, &ds)?;
            "coco-json"
        }
        AnnotationKind::Segmentation => {
            let (entry, format) = segs::import(repo, &ds, &name, &bytes, req, &mut w)?;
            // A segmentation file covers one series: the new version keeps the reader's
            // masks of other series.
            if let Some(p) = &prev_set {
                set.segmentations = p.segmentations.iter().filter(|s| s.series_uid != entry.series_uid).cloned().collect();
            }
            set.segmentations.push(entry);
            set.segmentations.sort_by(|a, b| a.series_uid.cmp(&b.series_uid));
            format
        }
    };
    if let Some(i) = &mut set.input {
        i.format = format.into();
    }
    let set_id = w.put(&set)?;
    catalog.annotations.insert(key, set_id);
    let mut parameters = BTreeMap::new();
    parameters.insert("task".into(), task.clone());
    parameters.insert("reader".into(), req.reader.clone());
    parameters.insert("kind".into(), req.kind.name().into());
    parameters.insert("source".into(), req.source.name().into());
    parameters.insert("format".into(), format.into());
    let mut inputs = vec![ActivityRef { role: "file-blake3".into(), value: ObjectId::of(&bytes).hex() }];
    if let Some(p) = previous {
        inputs.push(ActivityRef { role: "previous-annotations".into(), value: p.hex() });
    }
    let message = req.message.clone().unwrap_or_else(|| format!("annotate {task}: {} by {}", req.kind.name(), req.reader));
    let commit_id = repo.commit_catalog(
        &req.rev,
        w,
        &catalog,
        CatalogChange {
            kind: "annotate".into(),
            message,
            parameters,
            inputs,
            outputs: vec![ActivityRef { role: "annotations".into(), value: set_id.hex() }],
            started_us: started,
        },
    )?;
    Ok(ImportSummary {
        commit: commit_id,
        annotation_set: set_id,
        task,
        reader: req.reader.clone(),
        kind: req.kind,
        source: req.source,
        labels: set.labels.len(),
        boxes: set.boxes.len(),
        segmentations: set.segmentations.len(),
        previous,
    })
}

/// One annotation set as `annotate list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SetSummary {
    pub task: String,
    pub reader: String,
    pub id: ObjectId,
    pub kind: AnnotationKind,
    pub source: LabelSource,
    pub time_us: i64,
    pub labels: usize,
    pub boxes: usize,
    pub segmentations: usize,
    /// Label name → count (labels and boxes), or segment name → series with it.
    pub counts: BTreeMap<String, u64>,
    pub derived: Option<String>,
    pub previous: Option<ObjectId>,
}

/// Every annotation set of a commit.
pub fn list(repo: &Repo, rev: &str) -> Result<Vec<SetSummary>, AnnotateError> {
    let id = repo.resolve(rev)?;
    let c = repo.store.read_commit(&id)?;
    let cat = repo.store.catalog_of(&c)?;
    summarize(repo, &cat)
}

fn summarize(repo: &Repo, cat: &Catalog) -> Result<Vec<SetSummary>, AnnotateError> {
    let mut out = Vec::new();
    for ((task, reader), id) in &cat.annotations {
        let s = repo.store.read_annotations(id)?;
        let mut counts = BTreeMap::new();
        for l in &s.labels {
            *counts.entry(l.label.clone()).or_insert(0) += 1;
        }
        for b in &s.boxes {
            *counts.entry(b.label.clone()).or_insert(0) += 1;
        }
        for g in &s.segmentations {
            for (v, n) in &g.segments {
                if g.voxels.get(v).copied().unwrap_or(0) > 0 {
                    *counts.entry(n.clone()).or_insert(0) += 1;
                }
            }
        }
        out.push(SetSummary {
            task: task.clone(),
            reader: reader.clone(),
            id: *id,
            kind: s.kind,
            source: s.source,
            time_us: s.time_us,
            labels: s.labels.len(),
            boxes: s.boxes.len(),
            segmentations: s.segmentations.len(),
            counts,
            derived: s.derivation.as_ref().map(|d| d.method.clone()),
            previous: s.previous,
        });
    }
    Ok(out)
}

/// The annotation sets of one task in a commit's catalog, by reader.
pub(crate) fn task_sets(repo: &Repo, cat: &Catalog, task: &str, commit: &ObjectId) -> Result<Vec<(String, ObjectId, AnnotationSet)>, AnnotateError> {
    let readers = cat.readers(task);
    if readers.is_empty() {
        let tasks = cat.tasks();
        let hint = if tasks.is_empty() { String::new() } else { format!(" (tasks: {})", tasks.join(", ")) };
        return Err(AnnotateError::NoTask { task: task.into(), commit: commit.short(), hint });
    }
    readers
        .into_iter()
        .map(|(r, id)| Ok((r.to_string(), id, repo.store.read_annotations(&id)?)))
        .collect()
}

/// The one set that speaks for a task: its consensus if there is one, else its only reader.
pub(crate) fn resolved_set(repo: &Repo, cat: &Catalog, task: &str, commit: &ObjectId) -> Result<(String, AnnotationSet), AnnotateError> {
    let mut sets = task_sets(repo, cat, task, commit)?;
    if let Some(i) = sets.iter().position(|(_, _, s)| s.derivation.is_some()) {
        let (r, _, s) = sets.swap_remove(i);
        return Ok((r, s));
    }
    if sets.len() == 1 {
        let (r, _, s) = sets.pop().expect("one");
        return Ok((r, s));
    }
    Err(AnnotateError::Task {
        task: task.into(),
        problem: format!(
            "has {} readers ({}) and no consensus; run `cohort consensus REV --task {task}` first",
            sets.len(),
            sets.iter().map(|(r, _, _)| r.as_str()).collect::<Vec<_>>().join(", ")
        ),
    })
}
