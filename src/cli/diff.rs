//! `cohort diff A B`: files, then DICOM changes by patient, study and series.
use std::process::ExitCode;

use cohort::store::Mode;

use super::{json, out, CliResult, Env};

/// Added, removed and modified paths between two revisions, or (no revision) between HEAD
/// and the working tree; DICOM changes grouped by patient, study and series, with changed
/// attributes and whether pixel data changed.
#[derive(clap::Args)]
pub struct Args {
    /// The old revision; none: HEAD against the working tree (what is not committed yet).
    a: Option<String>,
    /// The new revision (default HEAD).
    b: Option<String>,
    /// Also show the changed lines of each modified text file (CSV, TSV, JSON, notes), as a
    /// unified diff.
    #[arg(long, short = 'p')]
    patch: bool,
    /// Figures instead of every path: patients, studies, series and instances changed, and
    /// for each attribute that changed, in how many instances and series, with an example.
    #[arg(long, conflicts_with = "patch")]
    summary: bool,
    #[arg(long)]
    json: bool,
    /// After `--`: only the files at and under these paths (as in the working tree, relative
    /// to the current folder).
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<std::path::PathBuf>,
}

pub fn run(env: &Env, a: Args) -> CliResult {
    let d = match &a.a {
        Some(old) => {
            let repo = env.repo(Mode::Read)?;
            let paths = super::tree_paths(env, &repo, &a.paths)?;
            repo.diff(old, a.b.as_deref().unwrap_or("HEAD"), a.patch, &paths)?
        }
        None => {
            // The stat cache is refreshed on the way, as by `status`.
            let repo = env.repo(Mode::Write)?;
            let paths = super::tree_paths(env, &repo, &a.paths)?;
            repo.diff_worktree(a.patch, &paths, &env.progress())?
        }
    };
    if a.summary {
        let sum = cohort::diff::summarize(&d.dicom);
        if a.json {
            #[derive(serde::Serialize)]
            struct Summary<'a> {
                from: Option<cohort::ObjectId>,
                to: Option<cohort::ObjectId>,
                added: usize,
                removed: usize,
                modified: usize,
                dicom: &'a cohort::diff::DicomSummary,
                annotations: &'a cohort::annotate::AnnotationDiff,
            }
            json(&Summary { from: d.from, to: d.to, added: d.added, removed: d.removed, modified: d.modified, dicom: &sum, annotations: &d.annotations });
            return Ok(ExitCode::SUCCESS);
        }
        let mut s = format!("{} added, {} removed, {} modified\n", d.added, d.removed, d.modified);
        if sum.patients > 0 {
            s.push_str(&format!(
                "DICOM: {} instance(s) added, {} removed, {} modified, in {} patient(s), {} study(ies), {} series; pixel data changed in {}{}\n",
                sum.instances_added,
                sum.instances_removed,
                sum.instances_modified,
                sum.patients,
                sum.studies,
                sum.series,
                sum.pixel_data_changed,
                if sum.not_compared > 0 { format!("; {} not compared", sum.not_compared) } else { String::new() }
            ));
        }
        let show = |v: &Option<String>| v.as_ref().map_or("(absent)".to_string(), |x| format!("{x:?}"));
        for at in &sum.attributes {
            s.push_str(&format!("  {} {}: {} instance(s) in {} series, e.g. {} -> {}\n", at.tag, at.path, at.instances, at.series, show(&at.example_old), show(&at.example_new)));
        }
        annotation_lines(&d.annotations, &mut s);
        out(&s);
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        json(&d);
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = format!("{} added, {} removed, {} modified\n", d.added, d.removed, d.modified);
    for c in &d.files {
        s.push_str(&format!("{} {}\n", super::status::letter(c.status), c.path));
    }
    let show = |v: &Option<String>| match v {
        Some(x) => format!("{x:?}"),
        None => "(absent)".into(),
    };
    for p in &d.dicom {
        s.push_str(&format!("\nPatient {}\n", p.patient_id));
        for st in &p.studies {
            s.push_str(&format!("  Study {}\n", st.study_uid));
            for se in &st.series {
                s.push_str(&format!("    Series {}\n", se.series_uid));
                for i in &se.instances {
                    s.push_str(&format!("      {} {}", super::status::letter(i.status), i.path));
                    if let Some(px) = i.pixel_changed {
                        s.push_str(if px { "  [pixel data changed]" } else { "  [pixel data unchanged]" });
                    }
                    s.push('\n');
                    for at in &i.attributes {
                        s.push_str(&format!("          {} {}: {} -> {}\n", at.tag, at.path, show(&at.old), show(&at.new)));
                    }
                    if let Some(e) = &i.attributes_error {
                        s.push_str(&format!("          (attributes not compared: {e})\n"));
                    }
                }
            }
        }
    }
    annotation_lines(&d.annotations, &mut s);
    for t in d.text.iter().flatten() {
        match (&t.patch, &t.skipped) {
            (Some(p), _) => {
                s.push('\n');
                s.push_str(p);
            }
            (None, why) => s.push_str(&format!("\n{}: lines not shown: {}\n", t.path, why.as_deref().unwrap_or("?"))),
        }
    }
    out(&s);
    Ok(ExitCode::SUCCESS)
}

fn annotation_lines(d: &cohort::annotate::AnnotationDiff, s: &mut String) {
    let r = |v: &[f64; 4]| format!("[{}, {}, {}, {}]", v[0], v[1], v[2], v[3]);
    for a in &d.annotations {
        s.push_str(&format!("\nAnnotations {} by {} ({}): {}\n", a.task, a.reader, a.kind.name(), a.status));
        for l in &a.labels {
            let old = l.old.as_deref().unwrap_or("(none)");
            let new = l.new.as_deref().unwrap_or("(none)");
            s.push_str(&format!("  {}: {old} -> {new} (reader {})\n", l.target, l.reader));
        }
        for b in &a.boxes {
            let coords = match (&b.old, &b.new) {
                (Some(o), Some(n)) => format!("{} -> {}", r(o), r(n)),
                (Some(o), None) => r(o),
                (None, Some(n)) => r(n),
                (None, None) => String::new(),
            };
            s.push_str(&format!("  box {} {} frame {} {}: {coords}\n", b.change, b.label, b.frame, b.sop_uid));
        }
        for g in &a.segmentations {
            let dice: Vec<String> = g.dice.iter().map(|(n, v)| format!("{n} Dice {v:.3}")).collect();
            s.push_str(&format!("  segmentation {} series {} {}\n", g.change, g.series_uid, dice.join(", ")));
        }
    }
    for sp in &d.splits {
        s.push_str(&format!(
            "\nSplit {}: {} ({} groups added, {} removed, {} moved)\n",
            sp.name,
            sp.status,
            sp.added_groups,
            sp.removed_groups,
            sp.moved.len()
        ));
        for m in &sp.moved {
            s.push_str(&format!("  {}: {} -> {}\n", m.group, m.old, m.new));
        }
    }
}
