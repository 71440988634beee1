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
    /// PEM certificate(s) of a private CA to trust for an https server, besides the public
    /// roots (a hospital's own CA).
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate (chain) for a server that asks for one (mutual TLS); needs
    /// --client-key.
    #[arg(long, value_name = "PEM", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(env: &Env, c: IngestCommand) -> CliResult {
    let IngestCommand::Dicomweb(a) = c;
    let repo = env.repo(Mode::Write)?;
    let auth = a.user.map(|u| (u, std::env::var("COHORT_DICOMWEB_PASSWORD").unwrap_or_default()));
    let tls = cohort::dicomweb::TlsFiles { ca: a.ca_cert.map(|p| super::abs(env, &p)), client: a.client_cert.zip(a.client_key).map(|(c, k)| (super::abs(env, &c), super::abs(env, &k))) };
    let s = ingest::ingest(&repo, &IngestRequest { url: a.url, query: a.query, message: a.message, basic_auth: auth, tls }, &env.progress())?;
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
