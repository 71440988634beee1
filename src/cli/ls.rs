//! `cohort ls`: the files of a revision with their DICOM identifiers.
use std::process::ExitCode;

use cohort::store::Mode;

use super::{out, CliResult, Env};

/// Paths, sizes and ids of a revision's files; for DICOM also patient, study, series and SOP
/// instance UIDs and modality.
#[derive(clap::Args)]
pub struct Args {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    json: bool,
    /// After `--`: only the files at and under these paths (as in the working tree, relative
    /// to the current folder).
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<std::path::PathBuf>,
}

pub fn run(env: &Env, a: Args) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    // Written as the entries come: a revision of millions of files is never held whole.
    let mut w = Lines::default();
    let mut first = true;
    let d = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let paths = super::tree_paths(env, &repo, &a.paths)?;
    repo.ls_paths(&a.rev, &paths, &mut |e| {
        if a.json {
            // The layout of serde_json's pretty printer for the whole array, one element at a time.
            let item = serde_json::to_string_pretty(&e).expect("serializable");
            w.push(if first { "[\n" } else { ",\n" });
            for (i, line) in item.lines().enumerate() {
                w.push(if i == 0 { "  " } else { "\n  " });
                w.push(line);
            }
        } else {
            let kind = serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            w.push(&format!("{kind:<10} {:>12} {} {}", e.size, e.id.short(), e.path));
            if let Some(i) = &e.dicom {
                w.push(&format!(
                    "\tpatient={} study={} series={} sop={} modality={}",
                    d(&i.patient_id), d(&i.study_uid), d(&i.series_uid), d(&i.sop_instance_uid), d(&i.modality)
                ));
            }
            w.push("\n");
        }
        first = false;
    })?;
    if a.json {
        w.push(if first { "[]\n" } else { "\n]\n" });
    }
    w.flush();
    Ok(ExitCode::SUCCESS)
}

/// Output gathered in 64 KiB pieces, each written as soon as it is full.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn push(&mut self, s: &str) {
        self.0.push_str(s);
        if self.0.len() >= 64 << 10 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        out(&self.0);
        self.0.clear();
    }
}

/// DICOM instances whose header attributes meet every condition: `-w Modality=CT -w
/// 'SliceThickness<=1.25' -w 'SeriesDescription~*axial*' -w '!ContrastBolusAgent'`. Prints
/// their paths (with --show, the values too, tab-separated), ready for `export --paths-from`.
#[derive(clap::Args)]
pub struct FindArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    /// A condition on a top-level or file meta attribute, by keyword or tag: KEY (present),
    /// !KEY (absent), KEY=VALUE, KEY!=VALUE, KEY<N, <=, >, >= (numbers, else text order,
    /// which orders DICOM dates and times), KEY~GLOB (any case). Repeatable: all must hold.
    #[arg(short = 'w', long = "where", value_name = "COND")]
    conditions: Vec<String>,
    /// Also show these attributes' values (comma-separated keywords or tags).
    #[arg(long, value_name = "KEYS")]
    show: Vec<String>,
    /// One line per patient, study or series with matches: its PatientID or UID, how many
    /// instances match, and the --show values of its first match.
    #[arg(long, value_enum)]
    by: Option<By>,
    #[arg(long)]
    json: bool,
    /// After `--`: only instances at and under these paths (relative to the current folder).
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<std::path::PathBuf>,
}

pub fn run_find(env: &Env, a: FindArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let paths = super::tree_paths(env, &repo, &a.paths)?;
    // A partial clone fetches the headers it lacks first (small; never pixel data).
    let repo = super::filled(env, repo, |repo, creds, progress| cohort::remote::fill_missing_headers(repo, &a.rev, &paths, creds, progress))?;
    let conditions = a.conditions.iter().map(|c| cohort::query::Condition::parse(c)).collect::<Result<Vec<_>, _>>()?;
    let mut show = Vec::new();
    for list in &a.show {
        show.extend(cohort::query::attributes(list)?);
    }
    let by = a.by.map(|b| match b {
        By::Patient => cohort::query::GroupBy::Patient,
        By::Study => cohort::query::GroupBy::Study,
        By::Series => cohort::query::GroupBy::Series,
    });
    let mut named = show.clone();
    if let Some(b) = by {
        named.push(cohort::query::attribute(b.keyword())?);
    }
    let r = cohort::query::find(&repo, &a.rev, &paths, &conditions, &named, &env.progress())?;
    for (p, why) in &r.unreadable {
        eprintln!("warning: {p}: header not read: {why}");
    }
    if let Some(b) = by {
        let groups = cohort::query::group(&r.matches, b);
        if a.json {
            super::json(&groups);
        } else {
            let mut w = Lines::default();
            for g in &groups {
                row(&mut w, &format!("{}\t{}", g.key.as_deref().unwrap_or("-"), g.instances), &g.values, &show);
            }
            w.flush();
        }
        eprintln!("{} of {} DICOM instances in {} match, in {} {}", r.matches.len(), r.instances, r.commit.short(), groups.len(), match b {
            cohort::query::GroupBy::Patient => "patient(s)",
            cohort::query::GroupBy::Study => "study(ies)",
            cohort::query::GroupBy::Series => "series",
        });
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        super::json(&r);
    } else {
        let mut w = Lines::default();
        for m in &r.matches {
            row(&mut w, &m.path, &m.values, &show);
        }
        w.flush();
    }
    eprintln!("{} of {} DICOM instances in {} match", r.matches.len(), r.instances, r.commit.short());
    Ok(ExitCode::SUCCESS)
}

/// One line of `find`'s output: `lead`, then the values of the attributes shown (`-` when
/// absent), tab-separated.
fn row(w: &mut Lines, lead: &str, values: &std::collections::BTreeMap<String, Option<String>>, show: &[cohort::query::Attribute]) {
    w.push(lead);
    for k in show {
        w.push("\t");
        w.push(values.get(&k.name).and_then(|v| v.as_deref()).unwrap_or("-"));
    }
    w.push("\n");
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum By {
    Patient,
    Study,
    Series,
}
