//! `cohort split create|check|show`.
use std::process::ExitCode;

use cohort::catalog::GroupBy;
use cohort::split::{self, SplitRequest};
use cohort::store::Mode;

use super::{json, out, CliResult, Env};

/// Patient-level train/validation/test splits.
#[derive(clap::Subcommand)]
pub enum SplitCommand {
    Create(CreateArgs),
    /// Report leakage between parts; exits 1 when there is any.
    Check(SplitRef),
    /// Counts per part: patients, studies, series, instances and labels.
    Show(SplitRef),
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Group {
    Patient,
    Study,
}

/// Commit a split of REV (or extend the split of that name with new patients).
#[derive(clap::Args)]
pub struct CreateArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    name: String,
    /// Percentages summing to 100: train,test or train,validation,test.
    #[arg(long, value_delimiter = ',', required = true)]
    ratios: Vec<u32>,
    /// Part names (default train,test or train,validation,test).
    #[arg(long, value_delimiter = ',')]
    parts: Option<Vec<String>>,
    /// What is assigned as a whole.
    #[arg(long, value_enum, default_value = "patient")]
    group: Group,
    /// Label task whose labels are balanced across parts.
    #[arg(long)]
    stratify: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(short, long)]
    message: Option<String>,
    #[arg(long)]
    json: bool,
}

/// A split, by name, of a revision.
#[derive(clap::Args)]
pub struct SplitRef {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    json: bool,
}

pub fn run(env: &Env, c: SplitCommand) -> CliResult {
    match c {
        SplitCommand::Create(a) => create(env, a),
        SplitCommand::Check(a) => check(env, a),
        SplitCommand::Show(a) => show(env, a),
    }
}

fn leak_lines(leaks: &[split::Leak]) -> String {
    leaks
        .iter()
        .map(|l| format!("leak: {} {} in {} (e.g. {})\n", l.kind, l.id, l.parts.join(" and "), l.examples.join(", ")))
        .collect()
}

fn create(env: &Env, a: CreateArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let req = SplitRequest {
        rev: a.rev,
        name: a.name,
        ratios: a.ratios,
        parts: a.parts,
        group: match a.group {
            Group::Patient => GroupBy::Patient,
            Group::Study => GroupBy::Study,
        },
        stratify: a.stratify,
        seed: a.seed,
        message: a.message,
    };
    let s = split::create(&repo, &req)?;
    if a.json {
        json(&s);
        return Ok(ExitCode::SUCCESS);
    }
    let per: Vec<String> = s.per_part.iter().map(|(p, n)| format!("{p} {n}")).collect();
    eprintln!("split {}: {} groups ({} new, {} kept their part): {}", s.name, s.groups, s.new_groups, s.kept_groups, per.join(", "));
    if !s.leakage.is_empty() {
        eprint!("{}", leak_lines(&s.leakage));
        eprintln!("warning: the split leaks; see `cohort split check`");
    }
    match s.commit {
        Some(c) => out(&format!("{c}\n")),
        None => eprintln!("nothing new to place: every group already has a part"),
    }
    Ok(ExitCode::SUCCESS)
}

fn check(env: &Env, a: SplitRef) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let r = split::check(&repo, &a.rev, &a.name)?;
    if a.json {
        json(&r);
    } else {
        out(&leak_lines(&r.leaks));
        if r.unassigned > 0 {
            out(&format!("{} instance(s) have no part (e.g. {}); run `cohort split create` again to place them\n", r.unassigned, r.unassigned_examples.join(", ")));
        }
        out(&format!("split {}: {}\n", r.split, if r.ok { "no leakage" } else { "LEAKAGE" }));
    }
    Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn show(env: &Env, a: SplitRef) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let r = split::show(&repo, &a.rev, &a.name)?;
    if a.json {
        json(&r);
        return Ok(ExitCode::SUCCESS);
    }
    let ratios: Vec<String> = r.ratios.iter().map(|(p, n)| format!("{p} {n}%")).collect();
    out(&format!("split {} ({}) by {}, seed {}: {}\n", r.name, r.split.short(), r.group.name(), r.seed, ratios.join(", ")));
    if let Some(t) = &r.stratify {
        out(&format!("stratified by {t}\n"));
    }
    out(&format!("{:<12} {:>9} {:>8} {:>7} {:>9}\n", "part", "patients", "studies", "series", "instances"));
    for (p, c) in &r.parts {
        out(&format!("{:<12} {:>9} {:>8} {:>7} {:>9}\n", p, c.patients, c.studies, c.series, c.instances));
    }
    for (p, c) in &r.parts {
        for (task, labels) in &c.labels {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out(&format!("{p} {task}: {}\n", l.join(" ")));
        }
    }
    if r.unassigned > 0 {
        out(&format!("{} instance(s) without a part\n", r.unassigned));
    }
    for (t, why) in &r.skipped_tasks {
        out(&format!("(labels of {t} not counted: {why})\n"));
    }
    Ok(ExitCode::SUCCESS)
}
