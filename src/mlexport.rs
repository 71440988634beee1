//! `cohort export --split NAME --format files|nnunet|monai|csv`: one part (or every part) of a
//! split, in the layout training code reads, with a manifest naming the commit and split.
//!
//! Output is deterministic: the same commit, split and options give the same bytes (NIfTI is
//! gzipped with a zero timestamp, lists are sorted, the manifest has no clock time).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::annotate::AnnotateError;
use crate::catalog::{AnnotationKind, AnnotationSet, SegEntry};
use crate::dataset::Dataset;
use crate::export::{ExportError, LinkMode};
use crate::id::ObjectId;
use crate::object::TreeEntry;
use crate::progress::{Progress, Unit};
use crate::repo::{Repo, RepoError, TOOL, VERSION};
use crate::split::SplitError;
use crate::store::StoreError;

pub const MANIFEST: &str = "cohort-manifest.json";
pub const MANIFEST_FORMAT: &str = "cohort-export-manifest";
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum MlExportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("series {series}: {problem}")]
    Series { series: String, problem: String },
    #[error("--task {task:?}: {problem}")]
    Task { task: String, problem: String },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Split(#[from] SplitError),
    #[error(transparent)]
    Annotate(#[from] AnnotateError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MlExportError + '_ {
    move |source| MlExportError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Files,
    Nnunet,
    Monai,
    Csv,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Files => "files",
            Format::Nnunet => "nnunet",
            Format::Monai => "monai",
            Format::Csv => "csv",
        }
    }
}

#[derive(Debug, Clone)]
pub struct MlExportRequest {
    pub rev: String,
    pub out: PathBuf,
    pub split: String,
    pub part: Option<String>,
    pub format: Format,
    /// Annotation task: segmentation masks (nnunet, monai) or label columns (csv, monai).
    pub task: Option<String>,
    pub link: LinkMode,
    /// Leave out a series that cannot become a volume (pixel data that does not decode,
    /// slices that disagree on their grid, ...) and list it with the reason under the
    /// manifest's `skipped`, instead of failing the export.
    pub skip_bad_series: bool,
}

/// One written file, as the manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    /// cohort object id of a stored file (exported byte for byte)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectId>,
    /// BLAKE3 of a generated file (NIfTI, JSON, CSV)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blake3: Option<ObjectId>,
}

/// A volume case (nnunet, monai): which series it is.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub case: String,
    pub part: String,
    pub series_uid: String,
    /// The image of a case that is one image of its series (2D images without patient
    /// geometry, several in a series).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sop_uid: Option<String>,
    /// Its item in the dataset.
    #[serde(skip)]
    pub item: Option<usize>,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub slices: usize,
    /// 1 (grey) or 3 (R, G, B: one image file per channel)
    pub channels: usize,
    /// False for a 2D image with no patient geometry (its affine is its own plane)
    pub patient_geometry: bool,
    /// MONOCHROME1 images, their values turned over to read as MONOCHROME2
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inverted: bool,
    /// A cine loop: its frames along the third axis, one voxel apart (frames, not mm)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cine: bool,
    /// A cine loop's time between frames (FrameTime, or 1000 / CineRate)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_time_ms: Option<f64>,
    pub has_label: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub format: &'static str,
    pub version: u32,
    pub tool: String,
    pub tool_version: String,
    pub commit: ObjectId,
    pub split: String,
    pub split_id: ObjectId,
    pub part: Option<String>,
    pub export_format: Format,
    pub task: Option<String>,
    pub annotation_set: Option<ObjectId>,
    pub cases: Vec<Case>,
    /// Series left out, and why (e.g. a training case without a mask).
    pub skipped: Vec<(String, String)>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MlExportSummary {
    pub commit: ObjectId,
    pub split: String,
    pub format: Format,
    pub files: usize,
    pub cases: usize,
    pub skipped: usize,
    pub manifest: PathBuf,
}

struct Ctx<'a> {
    repo: &'a Repo,
    ds: Dataset,
    parts: Vec<Option<String>>,
    out: PathBuf,
    written: Vec<ManifestFile>,
}

impl Ctx<'_> {
    fn write_generated(&mut self, rel: &str, bytes: &[u8]) -> Result<(), MlExportError> {
        let f = write_generated(&self.out, rel, bytes)?;
        self.written.push(f);
        Ok(())
    }
}

/// Write a file cohort made (a volume, a table) at `out/rel`; its manifest entry.
fn write_generated(out: &Path, rel: &str, bytes: &[u8]) -> Result<ManifestFile, MlExportError> {
    let p = out.join(rel);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).map_err(io(d))?;
    }
    fs::write(&p, bytes).map_err(io(&p))?;
    Ok(ManifestFile { path: rel.into(), size: bytes.len() as u64, object: None, blake3: Some(ObjectId::of(bytes)) })
}

fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("serializable");
    b.push(b'\n');
    b
}

/// Export one part (or all parts) of a split.
pub fn export(repo: &Repo, req: &MlExportRequest, progress: &dyn Progress) -> Result<MlExportSummary, MlExportError> {
    let (commit, split, ds) = crate::split::load(repo, &req.rev, &req.split)?;
    if let Some(p) = &req.part {
        if !split.parts.iter().any(|(n, _)| n == p) {
            return Err(SplitError::NoPart {
                name: req.split.clone(),
                part: p.clone(),
                parts: split.parts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
            }
            .into());
        }
    }
    let cat = repo.store.catalog_of(&repo.store.read_commit(&commit)?)?;
    let sid = cat.splits[&req.split];
    let parts: Vec<Option<String>> = crate::split::parts_of(&ds, &split)
        .into_iter()
        .map(|p| p.filter(|p| req.part.as_ref().is_none_or(|want| want == p)))
        .collect();
    let mut cx = Ctx { repo, ds, parts, out: req.out.clone(), written: vec![] };

    // The annotation set the export uses.
    let task_set: Option<(String, AnnotationSet)> = match &req.task {
        Some(t) => {
            let (_, s) = crate::annotate::resolved_set(repo, &cat, t, &commit)?;
            Some((t.clone(), s))
        }
        None if matches!(req.format, Format::Nnunet) => {
            let segs: Vec<&str> = cat
                .tasks()
                .into_iter()
                .filter(|t| cat.readers(t).iter().any(|(_, id)| repo.store.read_annotations(id).map(|s| s.kind == AnnotationKind::Segmentation).unwrap_or(false)))
                .collect();
            match segs[..] {
                [t] => Some((t.to_string(), crate::annotate::resolved_set(repo, &cat, t, &commit)?.1)),
                [] => return Err(MlExportError::Usage(format!("nnunet needs a segmentation task: commit {} has none (cohort annotate import ... --kind segmentation)", commit.short()))),
                _ => return Err(MlExportError::Usage(format!("several segmentation tasks ({}): choose one with --task", segs.join(", ")))),
            }
        }
        None => None,
    };
    let set_id = req.task.as_ref().or(task_set.as_ref().map(|(t, _)| t)).and_then(|t| {
        cat.readers(t).into_iter().find(|(_, id)| task_set.as_ref().is_some_and(|(_, s)| repo.store.read_annotations(id).map(|x| &x == s).unwrap_or(false))).map(|(_, id)| id)
    });

    crate::export::into_new_folder(&req.out, || {
        let mut cases = Vec::new();
        let mut skipped = Vec::new();
        match req.format {
            Format::Files => export_files(&mut cx, req, progress)?,
            Format::Csv => {
                export_files(&mut cx, req, progress)?;
                let csv = csv_table(&cx, &cat, &commit, req)?;
                cx.write_generated("dataset.csv", &csv)?;
            }
            Format::Nnunet | Format::Monai => {
                let set = task_set.as_ref().map(|(_, s)| s);
                if let Some(s) = set {
                    if req.format == Format::Nnunet && s.kind != AnnotationKind::Segmentation {
                        return Err(MlExportError::Task { task: s.task.clone(), problem: format!("is a {} task; nnunet needs a segmentation task", s.kind.name()) });
                    }
                }
                volumes(&mut cx, req, set, &split.parts, &mut cases, &mut skipped, progress)?;
            }
        }
        cx.written.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            version: MANIFEST_VERSION,
            tool: TOOL.into(),
            tool_version: VERSION.into(),
            commit,
            split: req.split.clone(),
            split_id: sid,
            part: req.part.clone(),
            export_format: req.format,
            task: task_set.as_ref().map(|(t, _)| t.clone()),
            annotation_set: set_id,
            cases: cases.clone(),
            skipped: skipped.clone(),
            files: cx.written.clone(),
        };
        let mpath = req.out.join(MANIFEST);
        fs::write(&mpath, json_bytes(&manifest)).map_err(io(&mpath))?;
        Ok(MlExportSummary { commit, split: req.split.clone(), format: req.format, files: cx.written.len(), cases: cases.len(), skipped: skipped.len(), manifest: mpath })
    })
}

/// The selected instances by path: `OUT/path` for one part, `OUT/<part>/path` for all.
fn file_layout(cx: &Ctx, req: &MlExportRequest) -> Vec<(String, usize)> {
    cx.ds
        .instances()
        .filter_map(|(i, it)| {
            let p = cx.parts[i].as_ref()?;
            Some((if req.part.is_some() { it.path.clone() } else { format!("{p}/{}", it.path) }, i))
        })
        .collect()
}

fn export_files(cx: &mut Ctx, req: &MlExportRequest, progress: &dyn Progress) -> Result<(), MlExportError> {
    let layout = file_layout(cx, req);
    let files: Vec<(String, TreeEntry)> = layout.iter().map(|(p, i)| (p.clone(), cx.ds.items[*i].entry.clone())).collect();
    crate::export::write_files(&cx.repo.store, &cx.out, &files, req.link, progress)?;
    cx.written.extend(files.iter().map(|(p, e)| ManifestFile { path: p.clone(), size: e.size, object: Some(e.id), blake3: None }));
    Ok(())
}

/// Label of every item for a label task (an item covered by several targets takes the most
/// specific: instance, then series, then study).
fn item_labels(ds: &Dataset, set: &AnnotationSet) -> Vec<Option<String>> {
    let mut out: Vec<Option<(u8, String)>> = vec![None; ds.items.len()];
    for l in &set.labels {
        let rank = match l.target.level() {
            "instance" | "path" => 0,
            "series" => 1,
            _ => 2,
        };
        for i in ds.covered(&l.target) {
            if out[i].as_ref().is_none_or(|(r, _)| rank < *r) {
                out[i] = Some((rank, l.label.clone()));
            }
        }
    }
    out.into_iter().map(|o| o.map(|(_, l)| l)).collect()
}

fn csv_table(cx: &Ctx, cat: &crate::catalog::Catalog, commit: &ObjectId, req: &MlExportRequest) -> Result<Vec<u8>, MlExportError> {
    let tasks: Vec<String> = match &req.task {
        Some(t) => vec![t.clone()],
        None => cat.tasks().into_iter().map(str::to_string).collect(),
    };
    let mut cols: Vec<(String, Vec<Option<String>>)> = Vec::new();
    for t in tasks {
        match crate::annotate::resolved_set(cx.repo, cat, &t, commit) {
            Ok((_, s)) if s.kind == AnnotationKind::Label => cols.push((t, item_labels(&cx.ds, &s))),
            Ok((_, s)) if req.task.is_some() => {
                return Err(MlExportError::Task { task: t, problem: format!("is a {} task; csv label columns come from label tasks", s.kind.name()) });
            }
            Err(e) if req.task.is_some() => return Err(e.into()),
            _ => {}
        }
    }
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    let mut header = vec!["path", "patient_id", "study_uid", "series_uid", "sop_uid", "split"];
    header.extend(cols.iter().map(|(t, _)| t.as_str()));
    let csv_err = |e: csv::Error| MlExportError::Usage(format!("writing dataset.csv: {e}"));
    w.write_record(&header).map_err(csv_err)?;
    let mut rows = file_layout(cx, req);
    rows.sort();
    for (path, i) in rows {
        let it = &cx.ds.items[i];
        let mut rec = vec![
            path,
            it.patient().unwrap_or("").to_string(),
            it.study().unwrap_or("").to_string(),
            it.series().unwrap_or("").to_string(),
            it.sop().unwrap_or("").to_string(),
            cx.parts[i].clone().unwrap_or_default(),
        ];
        rec.extend(cols.iter().map(|(_, v)| v[i].clone().unwrap_or_default()));
        w.write_record(&rec).map_err(csv_err)?;
    }
    w.into_inner().map_err(|e| MlExportError::Usage(format!("writing dataset.csv: {e}")))
}

/// Series of the selected items, as cases in a stable order.
fn series_cases(cx: &Ctx) -> Vec<(String, String, Vec<usize>)> {
    let mut by: BTreeMap<(String, String, String), (String, Vec<usize>)> = BTreeMap::new();
    for (i, it) in cx.ds.instances() {
        let (Some(p), Some(series)) = (&cx.parts[i], it.series()) else { continue };
        let key = (it.patient().unwrap_or("").to_string(), it.study().unwrap_or("").to_string(), series.to_string());
        by.entry(key).or_insert_with(|| (p.clone(), vec![])).1.push(i);
    }
    by.into_iter().map(|((_, _, s), (p, items))| (s, p, items)).collect()
}

/// Why an instance is no image for a volume, if it is none: it has no Rows (structured
/// reports, RT structure sets and plans, presentation states, key object selections, ...), or
/// it is a segmentation, whose masks come in as annotations.
fn not_an_image(it: &crate::dataset::Item) -> Option<&'static str> {
    let info = it.info.as_ref()?;
    if info.sop_class_uid.as_deref().is_some_and(crate::seg::is_seg_class) || info.modality.as_deref() == Some("SEG") {
        return Some("a DICOM SEG: import it with `cohort annotate import --kind segmentation` to export its masks as labels");
    }
    if info.rows.is_none() {
        return Some("no Rows: a report, structure set, plan or other non-image object");
    }
    None
}

/// The image file of channel `c` of a case: nnU-Net's `imagesTr/CASE_000c.nii.gz` (or
/// `imagesTs`); for MONAI `images/CASE.nii.gz`, or `images/CASE_000c.nii.gz` for each of
/// several channels (listed together in the datalist, which MONAI stacks as channels).
fn image_rel(nnunet: bool, test: bool, case: &str, channels: usize, c: usize) -> String {
    match (nnunet, channels) {
        (true, _) => format!("images{}/{case}_{c:04}.nii.gz", if test { "Ts" } else { "Tr" }),
        (false, 1) => format!("images/{case}.nii.gz"),
        (false, _) => format!("images/{case}_{c:04}.nii.gz"),
    }
}

#[allow(clippy::too_many_arguments)]
fn volumes(
    cx: &mut Ctx,
    req: &MlExportRequest,
    set: Option<&AnnotationSet>,
    split_parts: &[(String, u32)],
    cases: &mut Vec<Case>,
    skipped: &mut Vec<(String, String)>,
    progress: &dyn Progress,
) -> Result<(), MlExportError> {
    let series = series_cases(cx);
    let masks: BTreeMap<&str, &SegEntry> = set.map(|s| s.segmentations.iter().map(|g| (g.series_uid.as_str(), g)).collect()).unwrap_or_default();
    // One label value space for the whole dataset: segment names in order.
    let names: Vec<String> = masks.values().flat_map(|g| g.segments.values().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
    if names.len() > 255 {
        return Err(MlExportError::Usage("more than 255 segment names".into()));
    }
    let class_labels = set.filter(|s| s.kind == AnnotationKind::Label).map(|s| item_labels(&cx.ds, s));
    let nnunet = req.format == Format::Nnunet;
    let mut todo = Vec::new();
    for (s, part, items) in series {
        // Instances that are no image stay out of the volumes, said once per series.
        let (items, others): (Vec<usize>, Vec<usize>) = items.into_iter().partition(|&i| not_an_image(&cx.ds.items[i]).is_none());
        if let Some(&first) = others.first() {
            let why = not_an_image(&cx.ds.items[first]).unwrap_or_default();
            let what = if items.is_empty() { "series left out" } else { "left out of the series" };
            skipped.push((s.clone(), format!("{what}: {} instance(s) that are no image, e.g. {} ({why})", others.len(), cx.ds.items[first].path)));
        }
        if items.is_empty() {
            continue;
        }
        let mask = masks.get(s.as_str()).copied();
        let is_test = part == "test";
        if nnunet && !is_test && mask.is_none() {
            skipped.push((s.clone(), format!("{part} case without a segmentation: nnU-Net needs a label for every training case")));
            continue;
        }
        todo.push((s, part, items, mask));
    }
    let modalities: BTreeSet<String> = todo.iter().filter_map(|(_, _, items, _)| cx.ds.items[items[0]].info.as_ref()?.modality.clone()).collect();
    progress.stage("writing volumes", Some(todo.len() as u64), Unit::Files);
    let repo = cx.repo;
    let ds = &cx.ds;
    let dest = &cx.out;
    // Each case is written as soon as it is built: a dataset's volumes are never all in memory.
    // Per series: its cases and their files, or (with --skip-bad-series) why it was left out.
    type Built = Result<Vec<(Case, Vec<ManifestFile>)>, String>;
    let built: Vec<Built> = todo
        .par_iter()
        .enumerate()
        .map(|(n, (s, part, items, mask))| -> Result<_, MlExportError> {
            let mut files = Vec::with_capacity(items.len());
            for &i in items {
                files.push((ds.items[i].path.clone(), ds.file_bytes(&repo.store, i)?));
            }
            // A series is a case; a series of 2D images without patient geometry (views of a
            // radiograph, ultrasound captures) is a case per image, `case_NNNN_KKK`.
            let vols = match crate::volume::series_volumes(&files) {
                Ok(v) => v,
                Err(e) if req.skip_bad_series => {
                    progress.inc(1);
                    return Ok(Err(format!("series left out: {e}")));
                }
                Err(e) => {
                    return Err(MlExportError::Series { series: s.clone(), problem: format!("{e} (--skip-bad-series leaves such a series out of the export and lists it in the manifest)") })
                }
            };
            let vols: Vec<(String, Option<usize>, crate::volume::Volume)> = vols
                .into_iter()
                .map(|(k, v)| match k {
                    None => (format!("case_{n:04}"), None, v),
                    Some(k) => (format!("case_{n:04}_{:03}", k + 1), Some(items[k]), v),
                })
                .collect();
            drop(files);
            let mut cases = Vec::with_capacity(vols.len());
            for (case, item, vol) in vols {
                // A mask belongs to a series volume (none can be imported onto separate images).
                let mask = mask.filter(|_| item.is_none());
                let is_test = part == "test";
                let lab_rel = if nnunet {
                    let d = if is_test { "Ts" } else { "Tr" };
                    format!("labels{d}/{case}.nii.gz")
                } else {
                    format!("labels/{case}.nii.gz")
                };
                let mut out = Vec::new();
                for (c, channel) in crate::volume::volume_to_niftis(&vol).iter().enumerate() {
                    let img = crate::nifti::write_nifti(channel, true).map_err(|e| MlExportError::Series { series: s.clone(), problem: e.to_string() })?;
                    out.push(write_generated(dest, &image_rel(nnunet, is_test, &case, vol.channels, c), &img)?);
                }
                if let Some(g) = mask {
                    if g.slice_sops != vol.slice_sops || g.dims.map(|d| d as usize) != vol.dims {
                        return Err(MlExportError::Series { series: s.clone(), problem: "the mask's grid no longer matches the series".into() });
                    }
                    let raw = repo.store.read(&g.mask)?;
                    let lut = g.value_map(&names);
                    let labels: Vec<u8> = raw.into_iter().map(|v| lut[usize::from(v)]).collect();
                    let lab = crate::nifti::write_nifti(&crate::volume::label_nifti(&vol, labels), true).map_err(|e| MlExportError::Series { series: s.clone(), problem: e.to_string() })?;
                    out.push(write_generated(dest, &lab_rel, &lab)?);
                }
                let first = &ds.items[item.unwrap_or(items[0])];
                cases.push((
                    Case {
                        case,
                        part: part.clone(),
                        series_uid: s.clone(),
                        sop_uid: item.and_then(|i| ds.items[i].sop()).map(str::to_string),
                        item,
                        patient_id: first.patient().map(str::to_string),
                        study_uid: first.study().map(str::to_string),
                        slices: vol.dims[2],
                        channels: vol.channels,
                        patient_geometry: vol.patient_geometry,
                        inverted: vol.inverted,
                        cine: vol.cine,
                        frame_time_ms: vol.frame_time_ms,
                        has_label: mask.is_some(),
                    },
                    out,
                ));
            }
            progress.inc(1);
            Ok(Ok(cases))
        })
        .collect::<Result<_, _>>()?;
    progress.finish_stage();
    for ((s, ..), built) in todo.iter().zip(built) {
        match built {
            Ok(built) => {
                for (case, files) in built {
                    cx.written.extend(files);
                    cases.push(case);
                }
            }
            Err(why) => skipped.push((s.clone(), why)),
        }
    }
    let channels = cases.first().map_or(1, |c| c.channels);
    if let Some(other) = cases.iter().find(|c| c.channels != channels).filter(|_| nnunet) {
        let first = &cases[0];
        return Err(MlExportError::Usage(format!(
            "series {} has {} channel(s) and series {} has {}: nnU-Net needs the same channels in every case; export grey and colour series to separate datasets (e.g. with separate splits)",
            first.series_uid, first.channels, other.series_uid, other.channels
        )));
    }
    if nnunet {
        let mut labels = serde_json::Map::new();
        labels.insert("background".into(), 0.into());
        for (i, n) in names.iter().enumerate() {
            labels.insert(n.clone(), (i + 1).into());
        }
        let mut channel_names = serde_json::Map::new();
        if channels == 3 {
            for (c, name) in ["R", "G", "B"].iter().enumerate() {
                channel_names.insert(c.to_string(), (*name).into());
            }
        } else {
            channel_names.insert("0".into(), modalities.iter().next().cloned().unwrap_or_else(|| "image".into()).into());
        }
        let training = cases.iter().filter(|c| c.part != "test").count();
        let dataset = serde_json::json!({
            "channel_names": channel_names,
            "labels": labels,
            "numTraining": training,
            "file_ending": ".nii.gz",
            "name": req.split,
            "description": "exported by cohort; see cohort-manifest.json for the commit and split",
        });
        cx.write_generated("dataset.json", &json_bytes(&dataset))?;
        if split_parts.iter().any(|(p, _)| p == "validation") {
            let pick = |p: &str| cases.iter().filter(|c| c.part == p).map(|c| c.case.clone()).collect::<Vec<_>>();
            let folds = serde_json::json!([{ "train": pick("train"), "val": pick("validation") }]);
            cx.write_generated("splits_final.json", &json_bytes(&folds))?;
        }
    } else {
        // MONAI datalist: one list per part, training/validation/test named as MONAI does.
        let mut lists: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for (p, _) in split_parts {
            let key = match p.as_str() {
                "train" => "training".to_string(),
                other => other.to_string(),
            };
            if req.part.as_ref().is_some_and(|want| want != p) {
                continue;
            }
            let entries = cases
                .iter()
                .filter(|c| &c.part == p)
                .map(|c| {
                    let mut e = serde_json::Map::new();
                    let image: serde_json::Value = match c.channels {
                        1 => image_rel(false, false, &c.case, 1, 0).into(),
                        n => (0..n).map(|k| serde_json::Value::from(image_rel(false, false, &c.case, n, k))).collect(),
                    };
                    e.insert("image".into(), image);
                    if c.has_label {
                        e.insert("label".into(), format!("labels/{}.nii.gz", c.case).into());
                    } else if let Some(labels) = &class_labels {
                        let items = match &c.item {
                            Some(i) => std::slice::from_ref(i),
                            None => &cx.ds.by_series[&c.series_uid][..],
                        };
                        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
                        for i in items {
                            if let Some(l) = &labels[*i] {
                                *votes.entry(l.as_str()).or_insert(0) += 1;
                            }
                        }
                        if let Some((l, _)) = votes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))) {
                            e.insert("label".into(), l.to_string().into());
                        }
                    }
                    serde_json::Value::Object(e)
                })
                .collect();
            lists.insert(key, entries);
        }
        cx.write_generated("datalist.json", &json_bytes(&lists))?;
    }
    Ok(())
}
