//! `cohort ls`: the files of a revision with their DICOM identifiers.
use std::process::ExitCode;

use cohort::store::Mode;

use super::{json, out, CliResult, Env};

/// Paths, sizes and ids of a revision's files; for DICOM also patient, study, series and SOP
/// instance UIDs and modality.
#[derive(clap::Args)]
pub struct Args {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    json: bool,
}

pub fn run(env: &Env, a: Args) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let list = repo.ls(&a.rev)?;
    if a.json {
        json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = String::new();
    let d = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for e in &list {
        let kind = serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        s.push_str(&format!("{kind:<10} {:>12} {} {}", e.size, e.id.short(), e.path));
        if let Some(i) = &e.dicom {
            s.push_str(&format!(
                "\tpatient={} study={} series={} sop={} modality={}",
                d(&i.patient_id), d(&i.study_uid), d(&i.series_uid), d(&i.sop_instance_uid), d(&i.modality)
            ));
        }
        s.push('\n');
    }
    out(&s);
    Ok(ExitCode::SUCCESS)
}
