//! `cohort annotate import|list`, `cohort agreement`, `cohort consensus`.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use cohort::annotate::{self, ConsensusMethod, ImportRequest};
use cohort::catalog::{AnnotationKind, LabelSource};
use cohort::store::Mode;

use super::{abs, json, out, CliError, CliResult, Env};

/// Annotations: labels, boxes and segmentations, versioned per task and reader.
#[derive(clap::Subcommand)]
pub enum AnnotateCommand {
    Import(ImportArgs),
    List(ListArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Label,
    Bbox,
    Segmentation,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Source {
    Pathology,
    Genomic,
    Outcome,
    Prospective,
    Retrospective,
    Weak,
}

/// Commit a new annotation version on top of REV (a branch, or HEAD).
///
/// label: CSV of image reference (SOP Instance / Series / Study UID or path), label[, value].
/// bbox: COCO JSON whose images name an instance by file_name (path) or sop_instance_uid.
/// segmentation: a DICOM SEG, or a NIfTI mask with --series UID.
#[derive(clap::Args)]
pub struct ImportArgs {
    rev: String,
    file: PathBuf,
    /// Who annotated.
    #[arg(long)]
    reader: String,
    #[arg(long, value_enum)]
    kind: Kind,
    /// Where the truth comes from, most valuable first: pathology, genomic, outcome
    /// (ground truth), prospective, retrospective, weak.
    #[arg(long, value_enum)]
    source: Source,
    /// Task name (readers of one task are compared); defaults to the kind.
    #[arg(long)]
    task: Option<String>,
    /// NIfTI masks: the series the mask was drawn on.
    #[arg(long)]
    series: Option<String>,
    /// NIfTI masks: names of label values, e.g. 1=liver,2=tumour.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    #[arg(short, long)]
    message: Option<String>,
    #[arg(long)]
    json: bool,
}

/// List the annotation sets of a revision.
#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    json: bool,
}

pub fn run(env: &Env, c: AnnotateCommand) -> CliResult {
    match c {
        AnnotateCommand::Import(a) => import(env, a),
        AnnotateCommand::List(a) => list(env, a),
    }
}

fn import(env: &Env, a: ImportArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let mut names = BTreeMap::new();
    for l in &a.labels {
        let (v, n) = l.split_once('=').ok_or_else(|| CliError { message: format!("--labels {l:?}: expected VALUE=NAME"), code: 2 })?;
        let v: u8 = v.trim().parse().map_err(|_| CliError { message: format!("--labels {l:?}: {v:?} is not a label value 1-255"), code: 2 })?;
        names.insert(v, n.trim().to_string());
    }
    let req = ImportRequest {
        rev: a.rev,
        file: abs(env, &a.file),
        reader: a.reader,
        kind: match a.kind {
            Kind::Label => AnnotationKind::Label,
            Kind::Bbox => AnnotationKind::Bbox,
            Kind::Segmentation => AnnotationKind::Segmentation,
        },
        source: match a.source {
            Source::Pathology => LabelSource::Pathology,
            Source::Genomic => LabelSource::Genomic,
            Source::Outcome => LabelSource::Outcome,
            Source::Prospective => LabelSource::Prospective,
            Source::Retrospective => LabelSource::Retrospective,
            Source::Weak => LabelSource::Weak,
        },
        task: a.task,
        message: a.message,
        series: a.series,
        segment_names: names,
    };
    let s = annotate::import(&repo, &req)?;
    if a.json {
        json(&s);
    } else {
        let what = match s.kind {
            AnnotationKind::Label => format!("{} label(s)", s.labels),
            AnnotationKind::Bbox => format!("{} box(es)", s.boxes),
            AnnotationKind::Segmentation => format!("{} segmented series", s.segmentations),
        };
        let prev = s.previous.map(|p| format!(", replaces {}", p.short())).unwrap_or_default();
        eprintln!("task {} reader {} ({}): {what}{prev}", s.task, s.reader, s.source.name());
        out(&format!("{}\n", s.commit));
    }
    Ok(ExitCode::SUCCESS)
}

fn list(env: &Env, a: ListArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let sets = annotate::list(&repo, &a.rev)?;
    if a.json {
        json(&sets);
        return Ok(ExitCode::SUCCESS);
    }
    if sets.is_empty() {
        out("no annotations\n");
    }
    for s in sets {
        let n = match s.kind {
            AnnotationKind::Label => format!("{} labels", s.labels),
            AnnotationKind::Bbox => format!("{} boxes", s.boxes),
            AnnotationKind::Segmentation => format!("{} series", s.segmentations),
        };
        let counts: Vec<String> = s.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let derived = s.derived.map(|m| format!(" [{m}]")).unwrap_or_default();
        out(&format!(
            "{:<16} {:<14} {:<12} {:<13} {:<12} {}{derived}  {}\n",
            s.task,
            s.reader,
            s.kind.name(),
            s.source.name(),
            n,
            s.id.short(),
            counts.join(" ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Agreement between the readers of a task: Cohen's kappa (2 readers) or Fleiss' kappa for
/// labels, pairwise Dice for segmentations; per reader and overall.
#[derive(clap::Args)]
pub struct AgreementArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    task: String,
    #[arg(long)]
    json: bool,
}

fn num(v: f64) -> String {
    if v.is_finite() { format!("{v:.3}") } else { "n/a".into() }
}

pub fn run_agreement(env: &Env, a: AgreementArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let r = annotate::agreement(&repo, &a.rev, &a.task)?;
    if a.json {
        json(&r);
        return Ok(ExitCode::SUCCESS);
    }
    out(&format!("task {} ({}), {} readers, {} items annotated by all\n", r.task, r.kind.name(), r.readers.len(), r.items));
    out(&format!("overall {}: {}\n", r.statistic, num(r.overall)));
    for p in &r.pairs {
        out(&format!("  {} vs {}: {} over {} item(s)\n", p.a, p.b, num(p.value), p.items));
    }
    for p in &r.per_reader {
        out(&format!("  reader {}: {}\n", p.reader, num(p.value)));
    }
    for (l, v) in &r.per_label {
        out(&format!("  label {l}: Dice {}\n", num(*v)));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Method {
    Majority,
    Staple,
}

/// Commit a consensus of a task's readers (recorded as reader "consensus", with its inputs).
#[derive(clap::Args)]
pub struct ConsensusArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    task: String,
    #[arg(long, value_enum)]
    method: Method,
    #[arg(short, long)]
    message: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run_consensus(env: &Env, a: ConsensusArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let m = match a.method {
        Method::Majority => ConsensusMethod::Majority,
        Method::Staple => ConsensusMethod::Staple,
    };
    let s = annotate::consensus(&repo, &a.rev, &a.task, m, a.message)?;
    if a.json {
        json(&s);
    } else {
        eprintln!(
            "consensus of {} by {} from {} readers: {} resolved, {} unresolved",
            s.task,
            s.method.name(),
            s.inputs.len(),
            s.resolved,
            s.unresolved
        );
        out(&format!("{}\n", s.commit));
    }
    Ok(ExitCode::SUCCESS)
}
