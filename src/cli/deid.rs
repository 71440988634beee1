//! `cohort deid`, `cohort deid-report` and `cohort phi-scan`.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use cohort::deid::{parse_pixel_rules, DeidConfig, DeidOption};
use cohort::deidrun::{self, DeidRequest};
use cohort::repo::Repo;
use cohort::store::{Mode, Store};

use super::{abs, json, out, CliError, CliResult, Env};

/// De-identify every DICOM instance of REV (DICOM PS3.15 Annex E, Basic Application Level
/// Confidentiality Profile) into a new commit on a de-identified branch.
#[derive(clap::Args)]
pub struct DeidArgs {
    /// The identified commit.
    rev: String,
    /// Secret key file (at least 16 bytes). Only its BLAKE3 fingerprint is recorded.
    #[arg(long)]
    key_file: PathBuf,
    /// Profile option, by the standard's name in kebab case (repeatable): retain-safe-private,
    /// retain-uids, retain-device-identity, retain-institution-identity,
    /// retain-patient-characteristics, retain-longitudinal-temporal-information-full-dates,
    /// retain-longitudinal-temporal-information-modified-dates, clean-descriptors,
    /// clean-structured-content, clean-graphics, clean-pixel-data.
    #[arg(long = "option", value_name = "NAME")]
    options: Vec<String>,
    /// Burned-in text rules (JSON, schema/deid/pixel-rules.schema.json) for clean-pixel-data.
    #[arg(long)]
    pixel_rules: Option<PathBuf>,
    /// Branch that receives the de-identified commit.
    #[arg(long, default_value = "deid")]
    branch: String,
    #[arg(short, long, default_value = "de-identify")]
    message: String,
    /// Keep non-DICOM files matching this glob (repeatable); others are left out.
    #[arg(long, value_name = "GLOB")]
    keep: Vec<String>,
    /// Leave out files that look like DICOM but cannot be parsed, instead of failing.
    #[arg(long)]
    drop_unparseable: bool,
    /// Read the identified commit from another store (e.g. the hospital's); only
    /// de-identified objects are written into this one.
    #[arg(long, value_name = "PATH")]
    from: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run_deid(env: &Env, a: DeidArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let key_path = abs(env, &a.key_file);
    let key = std::fs::read(&key_path).map_err(|e| CliError { message: format!("{}: {e}", key_path.display()), code: 2 })?;
    let mut options = BTreeSet::new();
    for o in &a.options {
        options.insert(DeidOption::from_name(o)?);
    }
    let pixel_rules = match &a.pixel_rules {
        Some(p) => {
            let p = abs(env, p);
            let text = std::fs::read_to_string(&p).map_err(|e| CliError { message: format!("{}: {e}", p.display()), code: 2 })?;
            parse_pixel_rules(&text).map_err(|e| CliError { message: format!("{}: {e}", p.display()), code: 2 })?
        }
        None => vec![],
    };
    // The source: this store, or another one opened read-only.
    let other;
    let (source, source_commit): (&Store, _) = match &a.from {
        Some(p) => {
            let root = Store::discover(&abs(env, p))?;
            other = Repo::open(&root, Mode::Read, env.ctx.clone())?;
            let c = other.resolve(&a.rev)?;
            (&other.store, c)
        }
        None => {
            let c = repo.resolve(&a.rev)?;
            (&repo.store, c)
        }
    };
    let req = DeidRequest {
        source,
        source_commit,
        key,
        config: DeidConfig { options, pixel_rules },
        branch: a.branch,
        message: a.message,
        keep: a.keep,
        drop_unparseable: a.drop_unparseable,
    };
    let s = deidrun::deidentify(&repo, req, &env.progress())?;
    if a.json {
        json(&s);
        return Ok(ExitCode::SUCCESS);
    }
    out(&format!("{}\n", s.commit));
    eprintln!(
        "de-identified {} instances onto branch {} (key fingerprint {}): attributes removed {}, emptied {}, replaced {}, kept {}",
        s.instances, s.branch, &s.key_fingerprint[..16], s.removed, s.emptied, s.replaced, s.kept
    );
    eprintln!(
        "burned-in text: {} flagged (not cleaned), {} cleaned, {} could not be cleaned; {} non-DICOM files kept",
        s.burned_in_flagged, s.pixels_cleaned, s.burned_in_not_cleaned, s.kept_files
    );
    let f = &s.followed;
    if f.annotation_sets + f.splits > 0 {
        eprintln!(
            "followed: {} annotation set(s) and {} split(s) mapped to the new UIDs; {} reference(s) to images left out dropped; {} label(s) redacted for containing an identifier",
            f.annotation_sets, f.splits, f.dropped, f.redacted
        );
    }
    for (p, why) in &s.left_out {
        eprintln!("left out: {p}: {why}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Per instance of a de-identified commit: every attribute touched and the action taken
/// (never the values).
#[derive(clap::Args)]
pub struct ReportArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    json: bool,
}

pub fn run_report(env: &Env, a: ReportArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let id = repo.resolve(&a.rev)?;
    let r = deidrun::report(&repo.store, id)?;
    if a.json {
        json(&r);
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = format!(
        "source commit {}\nprofile PS3.15 E.1-1 rev {}; options: {}\nkey fingerprint {}\n",
        r.source_commit,
        r.profile_revision,
        if r.options.is_empty() { "none".to_string() } else { r.options.join(", ") },
        r.key_fingerprint
    );
    for i in &r.instances {
        let t = &i.report.totals;
        s.push_str(&format!("\n{}  (removed {}, emptied {}, replaced {}, kept {})\n", i.path, t.removed, t.emptied, t.replaced, t.kept));
        for e in &i.report.entries {
            s.push_str(&format!("  {} {:<40} {:<14} {}\n", e.tag, if e.path.contains('/') { &e.path } else { &e.keyword }, e.action.name(), e.rule));
        }
        let bi = serde_json::to_value(&i.report.burned_in).ok().and_then(|v| v.get("status").and_then(|x| x.as_str()).map(String::from)).unwrap_or_default();
        if bi != "not-flagged" {
            s.push_str(&format!("  burned-in text: {bi}\n"));
        }
    }
    for l in &r.kept_files {
        s.push_str(&format!("\nkept (not DICOM): {l}"));
    }
    for l in &r.left_out {
        s.push_str(&format!("\nleft out: source object {}: {}", l.source_id.short(), l.reason));
    }
    s.push('\n');
    out(&s);
    Ok(ExitCode::SUCCESS)
}

/// Check a commit for identifiers, independently of the de-identification code: attributes
/// the profile removes, private groups outside the safe list, PatientIdentityRemoved, burned-in
/// text not cleaned, and (with --known) given identifier values anywhere. Exit 1 on findings.
#[derive(clap::Args)]
pub struct ScanArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    /// A file of known identifiers (one per line: names, patient ids, ...) to search for.
    #[arg(long)]
    known: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run_scan(env: &Env, a: ScanArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let id = repo.resolve(&a.rev)?;
    let known: Vec<String> = match &a.known {
        Some(p) => {
            let p = abs(env, p);
            std::fs::read_to_string(&p)
                .map_err(|e| CliError { message: format!("{}: {e}", p.display()), code: 2 })?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        }
        None => vec![],
    };
    let r = deidrun::phi_scan(&repo.store, id, &known, &env.progress())?;
    if a.json {
        json(&r);
    } else {
        let mut s = format!("{} instances scanned in {}\n", r.instances, r.commit.short());
        for f in &r.findings {
            for x in &f.report.findings {
                let check = serde_json::to_value(x.check).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                s.push_str(&format!("{}: {} {} {}: {}\n", f.path, check, x.tag, x.keyword, x.detail));
            }
        }
        s.push_str(if r.clean { "no findings\n" } else { "FINDINGS: identifiers may remain\n" });
        out(&s);
    }
    Ok(if r.clean { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
