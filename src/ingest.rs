//! `cohort ingest dicomweb URL`: import straight from a PACS over DICOMweb, recording the
//! query as provenance.
//!
//! Studies are found with QIDO-RS and retrieved series by series with WADO-RS into a staging
//! folder (`.cohort/ingest/<server>/<study>/<series>/`, a series counts once its `complete`
//! marker is written). Only when every series of every matching study is staged are the files
//! moved into the working tree (as `<PatientID>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm`) and
//! committed as one `import` commit whose activity names the server, the query and the study
//! UIDs. A server that fails mid-way leaves what was retrieved staged, reports what is
//! missing, and commits nothing; running the command again retrieves only what is missing.
//! Studies already in HEAD with at least as many instances as the server reports are skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dataset::Dataset;
use crate::dicomweb::{Client, DicomWebError};
use crate::id::ObjectId;
use crate::object::{path_component, ActivityRef};
use crate::progress::{Progress, Unit};
use crate::repo::{CommitOptions, Repo, RepoError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the working tree has uncommitted changes (e.g. {0}); commit them first, so the import commit holds only what was retrieved")]
    Dirty(String),
    #[error(transparent)]
    DicomWeb(#[from] DicomWebError),
    #[error("{failed} of {total} series could not be retrieved (first: study {study} series {series}: {reason}); the {done} series retrieved are kept in {staging} and nothing was committed; run the command again to retrieve the rest")]
    Incomplete { failed: usize, total: usize, done: usize, study: String, series: String, reason: String, staging: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{server}: study {study}: a retrieved part is not DICOM: {reason}")]
    NotDicom { server: String, study: String, reason: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub url: String,
    /// e.g. `PatientID=FAKE0001&StudyDate=2019-2020&ModalitiesInStudy=CT`
    pub query: Option<String>,
    pub message: Option<String>,
    pub basic_auth: Option<(String, String)>,
    /// A private CA and a client certificate for an https server (see [`crate::dicomweb::TlsFiles`]).
    pub tls: crate::dicomweb::TlsFiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestSummary {
    /// None when there was nothing new.
    pub commit: Option<ObjectId>,
    pub studies_found: usize,
    pub studies_skipped: usize,
    pub studies_retrieved: Vec<String>,
    pub series_retrieved: usize,
    pub instances: usize,
    pub bytes: u64,
}

/// Retrieve what the query matches and commit it.
pub fn ingest(repo: &Repo, req: &IngestRequest, progress: &dyn Progress) -> Result<IngestSummary, IngestError> {
    let (status, _) = repo.status(progress)?;
    if let Some(c) = status.changes.first() {
        return Err(IngestError::Dirty(c.path.clone()));
    }
    let mut client = Client::new(&req.url)?;
    if let Some((u, p)) = &req.basic_auth {
        client = client.with_basic_auth(u, p);
    }
    if req.tls.ca.is_some() || req.tls.client.is_some() {
        client = client.with_tls(&req.tls)?;
    }
    let query = match &req.query {
        Some(q) => crate::dicomweb::parse_query(q)?,
        None => vec![],
    };
    let hits = client.search_studies(&query)?;
    // What HEAD already holds.
    let (head, _) = repo.head()?;
    let have: BTreeMap<String, usize> = match head {
        Some(h) => {
            let c = repo.store.read_commit(&h)?;
            let ds = Dataset::load(&repo.store, h, &c.tree)?;
            ds.by_study.iter().map(|(k, v)| (k.clone(), v.len())).collect()
        }
        None => BTreeMap::new(),
    };
    let todo: Vec<_> = hits
        .iter()
        .filter(|h| match (have.get(&h.study_uid), h.number_of_instances) {
            (Some(n), Some(want)) => (*n as u64) < want,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .cloned()
        .collect();
    let skipped = hits.len() - todo.len();
    if todo.is_empty() {
        return Ok(IngestSummary { commit: None, studies_found: hits.len(), studies_skipped: skipped, studies_retrieved: vec![], series_retrieved: 0, instances: 0, bytes: 0 });
    }
    let server_key = ObjectId::of(client.base_url().as_bytes()).short();
    let staging = repo.store.dir.join("ingest").join(&server_key);
    // Series of each study, then retrieve the ones not staged yet.
    let mut plan: Vec<(String, String)> = Vec::new();
    for h in &todo {
        for s in client.search_series(&h.study_uid)? {
            plan.push((h.study_uid.clone(), s.series_uid));
        }
    }
    progress.stage("retrieving series", Some(plan.len() as u64), Unit::Files);
    let mut failures: Vec<(String, String, String)> = Vec::new();
    for (study, series) in &plan {
        let dir = staging.join(path_component(Some(study), "study")).join(path_component(Some(series), "series"));
        if dir.join("complete").exists() {
            progress.inc(1);
            continue;
        }
        match client.retrieve_series(study, series) {
            Ok(parts) => {
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                for (i, p) in parts.iter().enumerate() {
                    let f = dir.join(format!("{i:06}.dcm"));
                    crate::fsutil::write_durable(&f, p).map_err(io(&f))?;
                }
                let m = dir.join("complete");
                crate::fsutil::write_durable(&m, parts.len().to_string().as_bytes()).map_err(io(&m))?;
            }
            Err(e) => failures.push((study.clone(), series.clone(), e.to_string())),
        }
        progress.inc(1);
    }
    progress.finish_stage();
    if let Some((study, series, reason)) = failures.first().cloned() {
        return Err(IngestError::Incomplete {
            failed: failures.len(),
            total: plan.len(),
            done: plan.len() - failures.len(),
            study,
            series,
            reason,
            staging,
        });
    }
    // Everything is staged: lay the files out in the working tree.
    let (mut instances, mut bytes) = (0usize, 0u64);
    let mut moves = Vec::new();
    for (study, series) in &plan {
        let dir = staging.join(path_component(Some(study), "study")).join(path_component(Some(series), "series"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).map_err(io(&dir))?.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "dcm")).collect();
        files.sort();
        for f in files {
            let b = std::fs::read(&f).map_err(io(&f))?;
            let info = match crate::dicom::analyze(&b) {
                crate::dicom::Analysis::Dicom(l) => l.summary,
                crate::dicom::Analysis::NotDicom { reason } => return Err(IngestError::NotDicom { server: req.url.clone(), study: study.clone(), reason }),
            };
            let rel = format!(
                "{}/{}/{}/{}.dcm",
                path_component(info.patient_id.as_deref(), "unknown-patient"),
                path_component(info.study_uid.as_deref().or(Some(study)), "unknown-study"),
                path_component(info.series_uid.as_deref().or(Some(series)), "unknown-series"),
                path_component(info.sop_instance_uid.as_deref(), &format!("instance-{instances}")),
            );
            instances += 1;
            bytes += b.len() as u64;
            moves.push((f, repo.root.join(rel)));
        }
    }
    for (from, to) in &moves {
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        std::fs::rename(from, to).map_err(io(to))?;
    }
    let studies: Vec<String> = todo.iter().map(|h| h.study_uid.clone()).collect();
    let mut parameters = BTreeMap::new();
    parameters.insert("server".into(), client.base_url().to_string());
    parameters.insert("protocol".into(), "DICOMweb QIDO-RS + WADO-RS".into());
    parameters.insert("query".into(), req.query.clone().unwrap_or_default());
    parameters.insert("studies".into(), studies.len().to_string());
    parameters.insert("series".into(), plan.len().to_string());
    parameters.insert("instances".into(), instances.to_string());
    let mut inputs = vec![ActivityRef { role: "url".into(), value: client.base_url().to_string() }];
    inputs.extend(studies.iter().map(|s| ActivityRef { role: "study".into(), value: s.clone() }));
    let opts = CommitOptions {
        message: req.message.clone().unwrap_or_else(|| format!("ingest {} stud(ies) from {}", studies.len(), client.base_url())),
        kind: "import".into(),
        parameters,
        inputs,
        ..Default::default()
    };
    let s = repo.commit(&opts, progress)?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(IngestSummary { commit: Some(s.id), studies_found: hits.len(), studies_skipped: skipped, studies_retrieved: studies, series_retrieved: plan.len(), instances, bytes })
}
