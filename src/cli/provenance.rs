//! `cohort blame`, `cohort prov`, `cohort card`.
use std::path::PathBuf;
use std::process::ExitCode;

use cohort::store::Mode;

use super::{abs, json, out, CliError, CliResult, Env};

/// The lineage of one image (path or SOP Instance UID) or annotation set (TASK/READER),
/// newest first: every commit that produced or changed it, across de-identification.
#[derive(clap::Args)]
pub struct BlameArgs {
    target: String,
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    json: bool,
}

pub fn run_blame(env: &Env, a: BlameArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let r = cohort::lineage::blame(&repo, &a.target, &a.rev)?;
    if a.json {
        json(&r);
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = format!("{} {} at {}\n", r.subject, r.target, r.commit.short());
    for e in &r.events {
        s.push_str(&format!("{} {} {:<15} {} ({} by {})\n", e.commit.short(), e.time, e.event, e.summary, e.kind, e.user));
        if let Some(p) = &e.path {
            if e.event == "imported" || e.event == "de-identified" {
                s.push_str(&format!("    path {p}\n"));
            }
        }
        if let Some(sp) = e.details.get("source-path") {
            s.push_str(&format!("    from {sp}\n"));
        }
    }
    if let Some(why) = &r.stopped {
        s.push_str(&format!("(lineage stops: {why})\n"));
    }
    out(&s);
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ProvFormat {
    ProvJson,
    ProvN,
    Dot,
}

/// The history up to REV as W3C PROV: PROV-JSON (default), PROV-N or Graphviz dot.
#[derive(clap::Args)]
pub struct ProvArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long, value_enum, default_value = "prov-json")]
    format: ProvFormat,
}

pub fn run_prov(env: &Env, a: ProvArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let doc = cohort::provgraph::prov(&repo, &a.rev)?;
    cohort::prov::check(&doc).map_err(|e| CliError { message: format!("internal error: the PROV document is not valid: {e}"), code: 2 })?;
    out(&match a.format {
        ProvFormat::ProvJson => cohort::prov::to_prov_json(&doc),
        ProvFormat::ProvN => cohort::prov::to_prov_n(&doc),
        ProvFormat::Dot => cohort::prov::to_dot(&doc),
    });
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CardFormat {
    Md,
    Html,
    Json,
}

/// A dataset card an auditor can read: counts per split part, composition, labels, readers,
/// agreement, de-identification, provenance chain, warnings.
#[derive(clap::Args)]
pub struct CardArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    /// Write here instead of standard output.
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "md")]
    format: CardFormat,
    /// The split to show (default: the commit's only split).
    #[arg(long)]
    split: Option<String>,
}

pub fn run_card(env: &Env, a: CardArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let data = cohort::cardgen::gather(&repo, &cohort::cardgen::CardRequest { rev: a.rev, split: a.split })?;
    let text = match a.format {
        CardFormat::Md => cohort::card::render_markdown(&data),
        CardFormat::Html => cohort::card::render_html(&data),
        CardFormat::Json => cohort::card::render_json(&data),
    };
    match a.out {
        Some(p) => {
            let p = abs(env, &p);
            std::fs::write(&p, text).map_err(|e| CliError { message: format!("{}: {e}", p.display()), code: 2 })?;
            eprintln!("wrote {}", p.display());
        }
        None => out(&text),
    }
    Ok(ExitCode::SUCCESS)
}
