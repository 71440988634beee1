//! `cohort deid`: de-identification of a whole commit as a new, recorded commit.
//!
//! Every DICOM instance of the source commit goes through [`crate::deid::Deidentifier`]; the
//! new header is stored, the pixel object is shared with the source (unless pixels were
//! cleaned), and instances are laid out as `<patient>/<study>/<series>/<instance>.dcm` with
//! pseudonymous names, since folder names of PACS exports carry identifiers too. The commit
//! records the profile, options, key fingerprint and the source commit id, never the key
//! and never identified content. Its parent is the previous de-identified commit of the
//! target branch, not the identified source: pushing a de-identified branch can never carry
//! identified objects along.

use std::collections::{BTreeMap, HashMap};

use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::deid::{BurnedIn, DeidConfig, DeidKey, DeidOutput, Deidentifier, InstanceReport, PixelInput};
use crate::diff::{list_files, TreeSource};
use crate::id::ObjectId;
use crate::object::{path_component, ActivityRef, DicomFile, EntryKind, Structured};
use crate::pack::Hint;
use crate::progress::{Progress, Unit};
use crate::repo::{CommitDraft, Repo, RepoError};
use crate::store::{ObjectWriter, Store, StoreError};

/// The activity output role under which a commit names its de-identification report object.
pub const REPORT_ROLE: &str = "deid-report";
pub const REPORT_FORMAT: &str = "cohort-deid-report";
pub const REPORT_VERSION: u32 = 1;

/// Errors of a de-identification run.
#[derive(Debug, thiserror::Error)]
pub enum DeidRunError {
    #[error("{path}: {source}")]
    Deid { path: String, source: crate::deid::DeidError },
    #[error("{count} file(s) look like DICOM but cannot be parsed, so they cannot be de-identified (e.g. {example}); they are not copied. Re-run with --drop-unparseable to leave them out")]
    Unparseable { count: usize, example: String },
    #[error("bad --keep pattern {pattern:?}: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("branch {branch:?} holds commit {commit} ({kind}), not a de-identified one; a de-identified commit would descend from it. Choose another --branch")]
    NotDeidBranch { branch: String, commit: String, kind: String },
    #[error("commit {0} has no de-identification report")]
    NoReport(ObjectId),
    #[error("de-identification report {id} is unreadable: {reason}")]
    BadReport { id: ObjectId, reason: String },
    #[error("{path}: {source}")]
    PhiScan { path: String, source: crate::phiscan::PhiScanError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tree(#[from] crate::treebuild::TreeBuildError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// What to de-identify and how.
pub struct DeidRequest<'a> {
    /// Where the identified commit lives (this store, or the hospital's).
    pub source: &'a Store,
    pub source_commit: ObjectId,
    /// The key file's bytes (never stored).
    pub key: Vec<u8>,
    pub config: DeidConfig,
    pub branch: String,
    pub message: String,
    pub keep: Vec<String>,
    pub drop_unparseable: bool,
}

/// One instance in the stored report: its new path and what was done (no values).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportInstance {
    pub path: String,
    pub report: InstanceReport,
}

/// A file of the source that is not in the de-identified commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeftOut {
    /// Source entry id (never the source path, which may carry identifiers).
    pub source_id: ObjectId,
    pub reason: String,
}

/// The report stored with a de-identified commit (JSON blob, see docs/format.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeidReport {
    pub format: String,
    pub version: u32,
    pub source_commit: ObjectId,
    pub profile_revision: String,
    pub options: Vec<String>,
    pub key_fingerprint: String,
    pub instances: Vec<ReportInstance>,
    pub kept_files: Vec<String>,
    pub left_out: Vec<LeftOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeidSummary {
    pub commit: ObjectId,
    pub tree: ObjectId,
    pub branch: String,
    pub instances: usize,
    pub removed: usize,
    pub emptied: usize,
    pub replaced: usize,
    pub kept: usize,
    pub burned_in_flagged: usize,
    pub pixels_cleaned: usize,
    pub burned_in_not_cleaned: usize,
    pub kept_files: usize,
    /// Source paths left out (shown to the user running the command; not stored).
    pub left_out: Vec<(String, String)>,
    pub key_fingerprint: String,
    /// Annotation sets and splits carried over, and references dropped with their images.
    pub followed: crate::annotate::follow::FollowSummary,
}

struct Done {
    old_info: crate::object::InstanceInfo,
    new_path: String,
    out: DeidOutput,
    record: DicomFile,
    header_id: ObjectId,
    cleaned: Option<(ObjectId, Vec<u8>)>,
    /// The pixel value of a deflated file, inflated: a new object (see below).
    inflated_pixel: Option<(ObjectId, Vec<u8>)>,
}

/// Run de-identification and commit the result on `req.branch` of `repo`.
pub fn deidentify(repo: &Repo, req: DeidRequest, progress: &dyn Progress) -> Result<DeidSummary, DeidRunError> {
    let started = chrono::Utc::now().timestamp_micros();
    check_target_branch(repo, &req.branch)?;
    let engine = Deidentifier::new(DeidKey::from_bytes(&req.key), req.config.clone())
        .map_err(|source| DeidRunError::Deid { path: "(configuration)".into(), source })?;
    let keep = build_globs(&req.keep)?;
    let src = req.source;
    let commit = src.read_commit(&req.source_commit)?;
    let mut files = Vec::new();
    list_files(&TreeSource { store: src, extra: None }, &commit.tree, "", &mut files)?;

    // Classify every file first: nothing is written if the run is refused.
    let mut dicoms = Vec::new();
    let mut kept = Vec::new();
    let mut left_out: Vec<(String, String, ObjectId)> = Vec::new();
    let mut unparseable = Vec::new();
    for (path, e) in &files {
        match e.kind {
            EntryKind::Dicom => dicoms.push((path.clone(), e.clone())),
            EntryKind::Symlink => left_out.push((path.clone(), "symbolic link".into(), e.id)),
            _ => {
                let bytes = src.read(&e.id)?;
                if crate::worktree::looks_like_dicom(path, &bytes) {
                    unparseable.push(path.clone());
                    left_out.push((path.clone(), "not parseable as DICOM".into(), e.id));
                } else if keep.is_match(path) {
                    kept.push((path.clone(), e.clone()));
                } else {
                    left_out.push((path.clone(), "not DICOM (use --keep GLOB to keep it)".into(), e.id));
                }
            }
        }
    }
    if !unparseable.is_empty() && !req.drop_unparseable {
        return Err(DeidRunError::Unparseable { count: unparseable.len(), example: unparseable[0].clone() });
    }

    let clean_pixels = req.config.options.contains(&crate::deid::DeidOption::CleanPixelData);
    progress.stage("de-identifying", Some(dicoms.len() as u64), Unit::Files);
    let done: Vec<Done> = dicoms
        .par_iter()
        .map(|(path, e)| -> Result<Done, DeidRunError> {
            let rec = src.read_dicom(&e.id)?;
            let header = src.read(&rec.header)?;
            // A deflated file is stored whole, as its header. It is de-identified in its
            // inflated form, in parts like any other record, and written out in Explicit VR
            // Little Endian (lossless, and what every reader reads), its pixel value a new object.
            let parts = match rec.pixel {
                None => crate::dicom::inflated_parts(&header).map_err(|e| DeidRunError::Deid {
                    path: path.clone(),
                    source: crate::deid::DeidError::Parse { reason: e.to_string() },
                })?,
                Some(_) => None,
            };
            let (header, rec, inflated_pixel) = match parts {
                None => (header, rec, None),
                Some(p) => {
                    let pixel = (!p.pixel_element.is_empty()).then(|| (ObjectId::of(&p.pixel), p.pixel));
                    let size = (p.header.len() + p.pixel_element.len() + pixel.as_ref().map_or(0, |x| x.1.len()) + p.trailer.len()) as u64;
                    let rec = DicomFile { size, pixel_element: p.pixel_element, pixel: pixel.as_ref().map(|x| x.0), trailer: p.trailer, ..rec };
                    (p.header, rec, pixel)
                }
            };
            let pixels = match (&rec.pixel, clean_pixels, &inflated_pixel) {
                (Some(_), true, Some((_, bytes))) => Some(bytes.clone()),
                (Some(p), true, None) => Some(src.read(p)?),
                _ => None,
            };
            let encapsulated = rec.pixel_element.len() >= 8 && rec.pixel_element.ends_with(&[0xff, 0xff, 0xff, 0xff]);
            let input = pixels.as_deref().map(|b| PixelInput { bytes: b, encapsulated });
            let out = engine.deidentify(&header, input).map_err(|source| DeidRunError::Deid { path: path.clone(), source })?;
            let header_id = ObjectId::of(&out.header);
            let cleaned = out.cleaned_pixel.as_ref().map(|p| (ObjectId::of(p), p.clone()));
            let info = match crate::dicom::analyze(&out.header) {
                crate::dicom::Analysis::Dicom(l) => l.summary,
                crate::dicom::Analysis::NotDicom { .. } => Default::default(),
            };
            // The file is header ++ pixel element ++ pixels ++ trailer; only the header changes
            // (and the pixels, when cleaned; compressed ones decoded to be cleaned get a native
            // element header too).
            let pixel_len = rec.size - (header.len() + rec.pixel_element.len() + rec.trailer.len()) as u64;
            let new_pixel_len = cleaned.as_ref().map_or(pixel_len, |c| c.1.len() as u64);
            let pixel_element = out.pixel_element.clone().unwrap_or_else(|| rec.pixel_element.clone());
            let record = DicomFile {
                header: header_id,
                size: (out.header.len() + pixel_element.len() + rec.trailer.len()) as u64 + new_pixel_len,
                pixel_element,
                pixel: cleaned.as_ref().map(|c| c.0).or(rec.pixel),
                trailer: rec.trailer.clone(),
                info,
            };
            let new_path = format!(
                "{}/{}/{}/{}",
                path_component(Some(&out.new_patient_id), "unknown-patient"),
                path_component(out.new_study_uid.as_deref(), "unknown-study"),
                path_component(out.new_series_uid.as_deref(), "unknown-series"),
                path_component(out.new_sop_uid.as_deref(), "unknown-instance"),
            );
            progress.inc(1);
            Ok(Done { old_info: rec.info.clone(), new_path, out, record, header_id, cleaned, inflated_pixel })
        })
        .collect::<Result<_, _>>()?;
    progress.finish_stage();

    // Write objects; lay out paths (a repeated SOP Instance UID gets a numbered suffix).
    let mut w = repo.store.writer()?;
    let mut tree_files = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut instances = Vec::new();
    let (mut removed, mut emptied, mut replaced, mut kept_n, mut flagged, mut cleaned_n, mut not_cleaned) = (0, 0, 0, 0, 0, 0, 0);
    for d in &done {
        put_blob(&repo.store, &mut w, d.header_id, &d.out.header)?;
        match &d.cleaned {
            Some((id, bytes)) => put_blob(&repo.store, &mut w, *id, bytes)?,
            None => match (&d.inflated_pixel, &d.record.pixel) {
                (Some((id, bytes)), _) => put_blob(&repo.store, &mut w, *id, bytes)?,
                (None, Some(p)) => copy_if_missing(src, &repo.store, &mut w, p)?,
                (None, None) => {}
            },
        }
        let rb = d.record.to_bytes();
        let rid = ObjectId::of(&rb);
        put_blob(&repo.store, &mut w, rid, &rb)?;
        let n = seen.entry(d.new_path.clone()).or_insert(0);
        *n += 1;
        let path = if *n == 1 { format!("{}.dcm", d.new_path) } else { format!("{}_{}.dcm", d.new_path, n) };
        tree_files.push((path.clone(), EntryKind::Dicom, rid, d.record.size));
        let t = &d.out.report.totals;
        removed += t.removed;
        emptied += t.emptied;
        replaced += t.replaced;
        kept_n += t.kept;
        match &d.out.burned_in {
            BurnedIn::NotFlagged => {}
            BurnedIn::Flagged { .. } => flagged += 1,
            BurnedIn::Cleaned { .. } => cleaned_n += 1,
            BurnedIn::NotCleaned { .. } => not_cleaned += 1,
        }
        instances.push(ReportInstance { path, report: d.out.report.clone() });
    }
    for (path, e) in &kept {
        copy_if_missing(src, &repo.store, &mut w, &e.id)?;
        tree_files.push((path.clone(), e.kind, e.id, e.size));
    }
    let (tree, _) = crate::treebuild::build(&repo.store, &mut w, &tree_files)?;

    // Annotations and splits follow their images: references are mapped to the new UIDs,
    // patient pseudonyms and paths.
    let mut maps = crate::annotate::follow::DeidMaps::default();
    for d in &done {
        let pairs = [
            (&d.old_info.sop_instance_uid, &d.out.new_sop_uid),
            (&d.old_info.series_uid, &d.out.new_series_uid),
            (&d.old_info.study_uid, &d.out.new_study_uid),
        ];
        for (old, new) in pairs {
            if let (Some(o), Some(n)) = (old, new) {
                maps.uids.insert(o.clone(), n.clone());
            }
        }
        if let Some(p) = &d.old_info.patient_id {
            maps.patients.insert(p.clone(), d.out.new_patient_id.clone());
        }
        maps.add_identifiers(d.old_info.patient_id.as_deref(), d.old_info.patient_name.as_deref());
    }
    for (path, _) in &kept {
        maps.paths.insert(path.clone(), path.clone());
    }
    let source_catalog = src.catalog_of(&commit)?;
    let (mut new_catalog, followed) = crate::annotate::follow::follow(src, &repo.store, &mut w, &source_catalog, &maps)?;

    let options: Vec<String> = req.config.options.iter().map(|o| o.name().to_string()).collect();
    let report = DeidReport {
        format: REPORT_FORMAT.into(),
        version: REPORT_VERSION,
        source_commit: req.source_commit,
        profile_revision: crate::deid::PROFILE_REVISION.into(),
        options: options.clone(),
        key_fingerprint: engine.key_fingerprint(),
        instances,
        kept_files: kept.iter().map(|(p, _)| p.clone()).collect(),
        left_out: left_out.iter().map(|(_, r, id)| LeftOut { source_id: *id, reason: r.clone() }).collect(),
    };
    let report_bytes = serde_json::to_vec(&report).expect("report serializes");
    let report_id = ObjectId::of(&report_bytes);
    put_blob(&repo.store, &mut w, report_id, &report_bytes)?;

    let view = repo.store.view()?;
    let parent = view.branches.get(&req.branch).copied();
    // Annotations made on the de-identified branch itself stay, unless the source has the
    // same (task, reader) or split name.
    if let Some(p) = &parent {
        let old = repo.store.catalog_of(&repo.store.read_commit(p)?)?;
        for (k, v) in old.annotations {
            new_catalog.annotations.entry(k).or_insert(v);
        }
        for (k, v) in old.splits {
            new_catalog.splits.entry(k).or_insert(v);
        }
    }
    let catalog = if new_catalog.is_empty() { None } else { Some(w.put(&new_catalog)?) };
    let mut parameters = BTreeMap::new();
    parameters.insert("profile".into(), "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile".into());
    parameters.insert("profile-revision".into(), crate::deid::PROFILE_REVISION.into());
    parameters.insert("options".into(), options.join(","));
    parameters.insert("key-fingerprint".into(), engine.key_fingerprint());
    if !req.keep.is_empty() {
        parameters.insert("keep".into(), req.keep.join(","));
    }
    if !req.config.pixel_rules.is_empty() {
        let rules: Vec<&str> = req.config.pixel_rules.iter().map(|r| r.name.as_str()).collect();
        parameters.insert("pixel-rules".into(), rules.join(","));
    }
    let c = repo.draft_commit(CommitDraft {
        tree,
        parent,
        author: repo.ctx.user.clone(),
        message: req.message.clone(),
        kind: "deid".into(),
        parameters,
        inputs: vec![ActivityRef { role: "source-commit".into(), value: req.source_commit.hex() }],
        outputs: [ActivityRef { role: "tree".into(), value: tree.hex() }, ActivityRef { role: REPORT_ROLE.into(), value: report_id.hex() }]
            .into_iter()
            .chain(catalog.map(|k| ActivityRef { role: crate::catalog::CATALOG_ROLE.into(), value: k.hex() }))
            .collect(),
        started_us: started,
        notes: vec![],
        catalog,
    });
    let id = w.put(&c)?;
    let mut view = view;
    view.branches.insert(req.branch.clone(), id);
    repo.publish(w, format!("deid {} -> {} on {}", req.source_commit.short(), id.short(), req.branch), view)?;
    Ok(DeidSummary {
        commit: id,
        tree,
        branch: req.branch,
        instances: done.len(),
        removed,
        emptied,
        replaced,
        kept: kept_n,
        burned_in_flagged: flagged,
        pixels_cleaned: cleaned_n,
        burned_in_not_cleaned: not_cleaned,
        kept_files: kept.len(),
        left_out: left_out.into_iter().map(|(p, r, _)| (p, r)).collect(),
        key_fingerprint: engine.key_fingerprint(),
        followed,
    })
}

/// The target branch must be a valid ref name and, if it exists, hold a de-identified commit:
/// the new commit's parent is the branch's commit, so targeting a branch of identified commits
/// (`--branch main`) would make identified history an ancestor of the de-identified commit and
/// move that branch under its working tree.
fn check_target_branch(repo: &Repo, branch: &str) -> Result<(), DeidRunError> {
    let valid = crate::repo::valid_ref_name(branch);
    if !valid {
        return Err(RepoError::BadRefName { what: "branch", name: branch.into() }.into());
    }
    if let Some(tip) = repo.store.view()?.branches.get(branch) {
        let kind = repo.store.read_commit(tip)?.activity.kind;
        if kind != "deid" {
            return Err(DeidRunError::NotDeidBranch { branch: branch.into(), commit: tip.short(), kind });
        }
    }
    Ok(())
}

fn build_globs(patterns: &[String]) -> Result<GlobSet, DeidRunError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(p).map_err(|e| DeidRunError::BadGlob { pattern: p.clone(), reason: e.to_string() })?;
        b.add(g);
    }
    b.build().map_err(|e| DeidRunError::BadGlob { pattern: patterns.join(" "), reason: e.to_string() })
}

fn put_blob(store: &Store, w: &mut ObjectWriter, id: ObjectId, bytes: &[u8]) -> Result<(), StoreError> {
    if !store.contains(&id) && !w.contains(&id) {
        w.put_blob(bytes, Hint::Generic)?;
    }
    Ok(())
}

fn copy_if_missing(src: &Store, dst: &Store, w: &mut ObjectWriter, id: &ObjectId) -> Result<(), StoreError> {
    if !dst.contains(id) {
        src.copy_object_to(id, w)?;
    }
    Ok(())
}

/// The de-identification report of a commit.
pub fn report(store: &Store, commit: ObjectId) -> Result<DeidReport, DeidRunError> {
    let c = store.read_commit(&commit)?;
    let rid = c
        .activity
        .outputs
        .iter()
        .find(|o| o.role == REPORT_ROLE)
        .and_then(|o| o.value.parse::<ObjectId>().ok())
        .ok_or(DeidRunError::NoReport(commit))?;
    let bytes = store.read(&rid)?;
    let r: DeidReport = serde_json::from_slice(&bytes).map_err(|e| DeidRunError::BadReport { id: rid, reason: e.to_string() })?;
    if r.format != REPORT_FORMAT || r.version != REPORT_VERSION {
        return Err(DeidRunError::BadReport { id: rid, reason: format!("format {} version {}", r.format, r.version) });
    }
    Ok(r)
}

/// Findings of an independent PHI scan of every DICOM instance of a commit.
#[derive(Debug, Clone, Serialize)]
pub struct PhiScanResult {
    pub commit: ObjectId,
    pub instances: usize,
    pub clean: bool,
    pub findings: Vec<PathFindings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathFindings {
    pub path: String,
    pub report: crate::phiscan::ScanReport,
}

/// Scan each instance's header with [`crate::phiscan`] (which does not share code with the
/// de-identification engine). With known identifiers, also search every path and the bytes of
/// every non-DICOM file: `phi-scan --known` promises identifiers found anywhere, and a commit
/// can hold files kept by `deid --keep` at their source paths, which phiscan never sees.
pub fn phi_scan(store: &Store, commit: ObjectId, known: &[String], progress: &dyn Progress) -> Result<PhiScanResult, DeidRunError> {
    let c = store.read_commit(&commit)?;
    let mut files = Vec::new();
    list_files(&TreeSource { store, extra: None }, &c.tree, "", &mut files)?;
    // Matched like phiscan does: trimmed, case-insensitive, 2 characters or more.
    let known_lc: Vec<String> = known
        .iter()
        .map(|k| k.trim_matches(|c: char| c == ' ' || c == '\0').to_ascii_lowercase())
        .filter(|k| k.len() >= 2)
        .collect();
    let (dicoms, others): (Vec<_>, Vec<_>) = files.into_iter().partition(|(_, e)| e.kind == EntryKind::Dicom);
    progress.stage("scanning", Some(dicoms.len() as u64), Unit::Files);
    let mut reports: Vec<PathFindings> = dicoms
        .par_iter()
        .map(|(path, e)| -> Result<PathFindings, DeidRunError> {
            let rec = store.read_dicom(&e.id)?;
            let header = store.read(&rec.header)?;
            progress.inc(1);
            let mut report = crate::phiscan::scan(&header, known).map_err(|source| DeidRunError::PhiScan { path: path.clone(), source })?;
            report.findings.extend(known_in(path.as_bytes(), &known_lc, "path"));
            Ok(PathFindings { path: path.clone(), report })
        })
        .collect::<Result<_, _>>()?;
    progress.finish_stage();
    let n = reports.len();
    if !known_lc.is_empty() {
        for (path, e) in &others {
            let mut findings = known_in(path.as_bytes(), &known_lc, "path");
            findings.extend(known_in(&store.read(&e.id)?, &known_lc, "content"));
            let report = crate::phiscan::ScanReport { recorded_codes: vec![], recorded_options: vec![], findings };
            reports.push(PathFindings { path: path.clone(), report });
        }
    }
    let findings: Vec<PathFindings> = reports.into_iter().filter(|r| !r.report.passed()).collect();
    Ok(PhiScanResult { commit, instances: n, clean: findings.is_empty(), findings })
}

/// Known-identifier findings for `bytes` (a path or a file's content), named by index only.
fn known_in(bytes: &[u8], known_lc: &[String], place: &str) -> Vec<crate::phiscan::Finding> {
    if known_lc.is_empty() {
        return vec![];
    }
    let hay = bytes.to_ascii_lowercase();
    known_lc
        .iter()
        .enumerate()
        .filter(|(_, k)| hay.windows(k.len()).any(|w| w == k.as_bytes()))
        .map(|(i, _)| crate::phiscan::Finding {
            check: crate::phiscan::Check::KnownIdentifier,
            tag: String::new(),
            keyword: String::new(),
            path: place.to_string(),
            detail: format!("{place} contains known identifier #{i}"),
        })
        .collect()
}
