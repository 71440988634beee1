//! `cohort ingest dicomweb`.
use std::process::ExitCode;

use cohort::ingest::{self, IngestRequest};
use cohort::store::Mode;

use super::{human_bytes, json, out, CliResult, Env};

/// Import from a PACS.
#[derive(clap::Subcommand)]
pub enum IngestCommand {
    /// Find studies with QIDO-RS, retrieve them with WADO-RS into Patient/Study/Series folders,
    /// and commit them as one import (the activity records the server, query and study UIDs).
    /// Running it again retrieves only what is new; a failure commits nothing and keeps what
    /// was retrieved for the next run.
    Dicomweb(DicomwebArgs),
}

#[derive(clap::Args)]
pub struct DicomwebArgs {
    /// DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web
    url: String,
    /// QIDO-RS query, e.g. 'PatientID=FAKE0001&StudyDate=2019-2020&ModalitiesInStudy=CT'
    #[arg(long)]
    query: Option<String>,
    #[arg(short, long)]
    message: Option<String>,
    /// Basic-auth user; the password is read from COHORT_DICOMWEB_PASSWORD.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(env: &Env, c: IngestCommand) -> CliResult {
    let IngestCommand::Dicomweb(a) = c;
    let repo = env.repo(Mode::Write)?;
    let auth = a.user.map(|u| (u, std::env::var("COHORT_DICOMWEB_PASSWORD").unwrap_or_default()));
    let s = ingest::ingest(&repo, &IngestRequest { url: a.url, query: a.query, message: a.message, basic_auth: auth }, &env.progress())?;
    if a.json {
        json(&s);
        return Ok(ExitCode::SUCCESS);
    }
    match s.commit {
        Some(c) => {
            out(&format!("{c}\n"));
            eprintln!(
                "{} studies found, {} already here; retrieved {} studies, {} series, {} instances ({})",
                s.studies_found,
                s.studies_skipped,
                s.studies_retrieved.len(),
                s.series_retrieved,
                s.instances,
                human_bytes(s.bytes)
            );
        }
        None => eprintln!("{} studies found, all already here: nothing to retrieve", s.studies_found),
    }
    Ok(ExitCode::SUCCESS)
}
