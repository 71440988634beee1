//! `cohort checkout` and `cohort export`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cohort::export::LinkMode;
use cohort::store::Mode;

use super::{abs, human_bytes, json, out, CliResult, Env};

/// Set the working tree to a revision (refuses to lose uncommitted changes unless --force).
#[derive(clap::Args)]
pub struct CheckoutArgs {
    rev: String,
    /// Discard uncommitted changes: the working tree becomes exactly REV.
    #[arg(long)]
    force: bool,
}

pub fn run_checkout(env: &Env, a: CheckoutArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    // A partial clone fetches what this revision's files need first.
    cohort::remote::fill_missing(&repo, &a.rev, None, &super::remote::credentials(&Default::default()), &env.progress())?;
    // A fresh partial clone has no files yet: nothing in the working folder can be lost.
    let empty = std::fs::read_dir(&repo.root).map(|d| d.filter_map(Result::ok).all(|e| e.file_name() == cohort::store::STORE_DIR)).unwrap_or(false);
    let id = repo.checkout(&a.rev, a.force || empty, &env.progress())?;
    eprintln!("HEAD is now at {} ({})", id.short(), a.rev);
    Ok(ExitCode::SUCCESS)
}

/// Merge a revision into the current branch (the working tree must be clean): a fast-forward
/// when possible, else a commit with two parents. Files and catalog entries (annotation sets,
/// splits) changed on one side take that side; changed differently on both, they are
/// conflicts, listed, and nothing changes (exit status 1), unless `--take` or `--prefer`
/// settles them.
#[derive(clap::Args)]
pub struct MergeArgs {
    rev: String,
    /// Message of the merge commit (default: "Merge REV into BRANCH").
    #[arg(short, long)]
    message: Option<String>,
    #[command(flatten)]
    settle: SettleArgs,
    /// Only say what the merge would do (files from each side, files merged attribute by
    /// attribute or line by line, conflicts); change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

/// How merge conflicts are settled (`merge`, `pull`).
#[derive(clap::Args, Default)]
pub struct SettleArgs {
    /// Settle one conflict, or those in a folder, by taking a side: NAME=ours keeps the
    /// current branch's version, NAME=theirs takes the other's. NAME is a conflict as the
    /// merge lists it (a path, `annotations TASK/READER`, `split NAME`) or a folder of them
    /// (`P0001/`, `annotations TASK`); the most specific NAME wins. Repeatable; each must
    /// settle at least one conflict.
    #[arg(long, value_name = "NAME=SIDE")]
    take: Vec<String>,
    /// Settle every conflict no --take settles by taking this side. The merge commit notes
    /// each conflict settled and how.
    #[arg(long, value_enum)]
    prefer: Option<Prefer>,
}

impl SettleArgs {
    pub fn resolve(&self) -> Result<cohort::merge::Resolve, super::CliError> {
        let mut take = Vec::new();
        for t in &self.take {
            let side = match t.rsplit_once('=') {
                Some((name, "ours")) if !name.is_empty() => (name, cohort::merge::Prefer::Ours),
                Some((name, "theirs")) if !name.is_empty() => (name, cohort::merge::Prefer::Theirs),
                _ => return Err(super::CliError { message: format!("--take {t:?}: expected NAME=ours or NAME=theirs"), code: 2 }),
            };
            if take.iter().any(|(n, _): &(String, _)| n.trim_end_matches('/') == side.0.trim_end_matches('/')) {
                return Err(super::CliError { message: format!("--take {t:?}: {} is named twice", side.0), code: 2 });
            }
            take.push((side.0.to_string(), side.1));
        }
        Ok(cohort::merge::Resolve { prefer: self.prefer.map(Into::into), take })
    }
}

pub fn run_merge(env: &Env, a: MergeArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    cohort::remote::fill_missing(&repo, &a.rev, None, &super::remote::credentials(&Default::default()), &env.progress())?;
    let s = merge_into_head(env, &repo, &a.rev, a.message.as_deref(), &a.settle.resolve()?, a.dry_run)?;
    if a.json {
        json(&s);
    }
    Ok(ExitCode::SUCCESS)
}

/// Merge `rev` into the current branch and say what happened (on stderr, so `--json` output
/// stays clean); conflicts exit with status 1.
pub fn merge_into_head(env: &Env, repo: &cohort::Repo, rev: &str, message: Option<&str>, resolve: &cohort::merge::Resolve, dry_run: bool) -> Result<cohort::merge::MergeSummary, super::CliError> {
    let s = match cohort::merge::merge(repo, rev, message, resolve, dry_run, &env.progress()) {
        Ok(s) => s,
        Err(e @ (cohort::merge::MergeError::Conflicts { .. } | cohort::merge::MergeError::TakeUnused { .. })) => return Err(super::CliError { message: e.to_string(), code: 1 }),
        Err(e) => return Err(e.into()),
    };
    match s.outcome {
        "merge" if s.dry_run => eprintln!(
            "{}: would merge {rev} ({} file(s) and {} annotation set(s) or split(s) from it); nothing changed (--dry-run)",
            s.branch, s.files_from_theirs, s.catalog_from_theirs
        ),
        "fast-forward" if s.dry_run => eprintln!("{}: would fast-forward to {}; nothing changed (--dry-run)", s.branch, s.commit.short()),
        "merge" => eprintln!(
            "{}: merged {rev} ({} file(s) and {} annotation set(s) or split(s) from it): {}",
            s.branch,
            s.files_from_theirs,
            s.catalog_from_theirs,
            s.commit.short()
        ),
        "fast-forward" => eprintln!("{}: fast-forward to {}", s.branch, s.commit.short()),
        _ => eprintln!("{}: already up to date with {rev}", s.branch),
    }
    if !s.merged_files.is_empty() {
        let dicom = s.merged_files.iter().filter(|m| m.how == cohort::merge::MergedBy::Attributes).count();
        let text = s.merged_files.len() - dicom;
        match (dicom, text) {
            (_, 0) => eprintln!("{dicom} DICOM instance(s) changed on both sides, merged attribute by attribute:"),
            (0, _) => eprintln!("{text} text file(s) changed on both sides, merged line by line (tables row by row):"),
            _ => eprintln!("{dicom} DICOM instance(s) changed on both sides, merged attribute by attribute, and {text} text file(s) line by line (tables row by row):"),
        }
        for m in &s.merged_files {
            eprintln!("  {}: {}", m.path, m.describe(rev));
        }
    }
    let resolved = if s.dry_run { "would be resolved" } else { "resolved" };
    let side = |p| match p {
        cohort::merge::Prefer::Ours => "kept this branch's version".to_string(),
        cohort::merge::Prefer::Theirs => format!("took {rev}'s version"),
    };
    match s.prefer {
        // All settled by --prefer: one line says how.
        Some(p) if resolve.take.is_empty() && !s.resolutions.is_empty() => {
            eprintln!("{} conflict(s) {} (--prefer {}: {}):", s.resolutions.len(), resolved, p.name(), side(p));
            for r in &s.resolutions {
                eprintln!("  {}", r.conflict);
            }
        }
        _ if !s.resolutions.is_empty() => {
            eprintln!("{} conflict(s) {resolved}:", s.resolutions.len());
            for r in &s.resolutions {
                eprintln!("  {}: {} ({})", r.conflict, side(r.side), r.by);
            }
        }
        _ => {}
    }
    Ok(s)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Prefer {
    Ours,
    Theirs,
}

impl From<Prefer> for cohort::merge::Prefer {
    fn from(p: Prefer) -> Self {
        match p {
            Prefer::Ours => cohort::merge::Prefer::Ours,
            Prefer::Theirs => cohort::merge::Prefer::Theirs,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Link {
    Copy,
    Hardlink,
    Reflink,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Files,
    Nnunet,
    Monai,
    Csv,
}

/// Write a revision's files into a new folder, byte-identical to what was committed; or,
/// with --split, one part of a split in the layout training code reads.
#[derive(clap::Args)]
pub struct ExportArgs {
    rev: String,
    out: PathBuf,
    /// Only these files and folders of REV (paths as in the working tree, relative to the
    /// current folder), at their paths.
    #[arg(conflicts_with = "split")]
    paths: Vec<PathBuf>,
    /// Also the paths listed in this file, one a line, as `ls` and `find` print them (paths
    /// of the tree, from its root); `-` reads them from standard input.
    #[arg(long, value_name = "FILE", conflicts_with = "split")]
    paths_from: Option<PathBuf>,
    /// How files are made: copies, hardlinks or reflinks to the store's read-only cache.
    #[arg(long, value_enum, default_value = "copy")]
    link: Link,
    /// Export a split of REV (see `cohort split`).
    #[arg(long)]
    split: Option<String>,
    /// Only this part of the split (default: every part, each in its own folder or list).
    #[arg(long, requires = "split")]
    part: Option<String>,
    /// files: instances by path; nnunet: nnU-Net v2 raw dataset; monai: NIfTI + datalist.json;
    /// csv: files + dataset.csv with labels.
    #[arg(long, value_enum, requires = "split")]
    format: Option<Format>,
    /// Annotation task: masks (nnunet, monai) or label columns (csv, monai).
    #[arg(long, requires = "split")]
    task: Option<String>,
    /// nnunet, monai: leave out a series that cannot become a volume (pixel data that does
    /// not decode, slices that disagree on their grid), listed with the reason in the
    /// manifest's `skipped`, instead of failing the export.
    #[arg(long, requires = "split")]
    skip_bad_series: bool,
    #[arg(long)]
    json: bool,
}

pub fn run_export(env: &Env, a: ExportArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let mut paths = super::tree_paths(env, &repo, &a.paths)?;
    if let Some(f) = &a.paths_from {
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|e| super::CliError { message: format!("standard input: {e}"), code: 2 })?
        } else {
            let f = abs(env, f);
            std::fs::read_to_string(&f).map_err(|e| super::CliError { message: format!("{}: {e}", f.display()), code: 2 })?
        };
        let listed: Vec<String> = text.lines().map(|l| l.split('\t').next().unwrap_or("").trim_matches('/').to_string()).filter(|l| !l.is_empty()).collect();
        if listed.is_empty() {
            return Err(super::CliError { message: format!("{}: lists no paths; nothing to export", f.display()), code: 2 });
        }
        paths.extend(listed);
    }
    // A partial clone fetches what the export needs first (only the part's files with --part,
    // or the files named).
    let repo = super::filled(env, repo, |repo, creds, progress| {
        let part = a.split.clone().zip(a.part.clone()).map(|(split, part)| cohort::remote::PartialSpec { split, part });
        if paths.is_empty() {
            cohort::remote::fill_missing(repo, &a.rev, part.as_ref(), creds, progress)
        } else {
            cohort::remote::fill_missing_paths(repo, &a.rev, &paths, creds, progress)
        }
    })?;
    let mode = match a.link {
        Link::Copy => LinkMode::Copy,
        Link::Hardlink => LinkMode::Hardlink,
        Link::Reflink => LinkMode::Reflink,
    };
    if let Some(split) = a.split {
        let req = cohort::mlexport::MlExportRequest {
            rev: a.rev,
            out: abs(env, &a.out),
            split,
            part: a.part,
            format: match a.format.unwrap_or(Format::Files) {
                Format::Files => cohort::mlexport::Format::Files,
                Format::Nnunet => cohort::mlexport::Format::Nnunet,
                Format::Monai => cohort::mlexport::Format::Monai,
                Format::Csv => cohort::mlexport::Format::Csv,
            },
            task: a.task,
            link: mode,
            skip_bad_series: a.skip_bad_series,
        };
        let s = cohort::mlexport::export(&repo, &req, &env.progress())?;
        if a.json {
            json(&s);
        } else {
            let cases = if s.cases > 0 { format!(", {} case(s)", s.cases) } else { String::new() };
            let skipped = if s.skipped > 0 { format!(", {} series skipped (see the manifest)", s.skipped) } else { String::new() };
            out(&format!(
                "exported split {} of {} as {} to {}: {} files{cases}{skipped}; manifest {}\n",
                s.split,
                s.commit.short(),
                s.format.name(),
                a.out.display(),
                s.files,
                s.manifest.display()
            ));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let s = if paths.is_empty() {
        repo.export(&a.rev, &abs(env, &a.out), mode, &env.progress())?
    } else {
        repo.export_paths(&a.rev, &paths, &abs(env, &a.out), mode, &env.progress())?
    };
    if a.json {
        json(&s);
    } else {
        out(&format!("exported {} files ({}) to {}\n", s.files, human_bytes(s.bytes), a.out.display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Write one file of a revision to standard output (or to a new file with -o), byte for byte
/// as it was committed; a symbolic link gives its target.
#[derive(clap::Args)]
pub struct CatArgs {
    rev: String,
    /// The file's path, as in the working tree (relative to the current folder).
    path: PathBuf,
    /// Write to this new file instead (an existing file is not overwritten).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run_cat(env: &Env, a: CatArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let path = cohort::pathsel::tree_path(&repo.root, &env.cwd, &a.path)?;
    let repo = super::filled(env, repo, |repo, creds, progress| cohort::remote::fill_missing_paths(repo, &a.rev, std::slice::from_ref(&path), creds, progress))?;
    match &a.output {
        Some(o) => {
            let dest = abs(env, o);
            let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&dest).map_err(|e| super::CliError {
                message: format!("{}: {}", dest.display(), if e.kind() == std::io::ErrorKind::AlreadyExists { "already exists (not overwritten)".to_string() } else { e.to_string() }),
                code: 2,
            })?;
            let mut w = std::io::BufWriter::new(f);
            let r = repo.cat(&a.rev, &path, &mut w, &dest).and_then(|e| {
                use std::io::Write;
                w.flush().map_err(|source| cohort::repo::RepoError::Io { path: dest.clone(), source })?;
                Ok(e)
            });
            if let Err(e) = r {
                drop(w);
                let _ = std::fs::remove_file(&dest);
                return Err(e.into());
            }
        }
        None => {
            use std::io::IsTerminal;
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                // Binary bytes would garble the terminal: look before writing.
                let mut probe = Vec::new();
                match repo.cat(&a.rev, &path, &mut ProbeWriter(&mut probe), Path::new("standard output")) {
                    // The probe stops the writing after 8 KiB (a real fault shows below).
                    Ok(_) | Err(cohort::repo::RepoError::Export(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                if probe.contains(&0) {
                    return Err(super::CliError { message: format!("{path}: binary (DICOM or other); redirect the output or use -o FILE"), code: 2 });
                }
            }
            let mut w = BrokenPipeIsEnd(std::io::BufWriter::new(stdout.lock()));
            repo.cat(&a.rev, &path, &mut w, Path::new("standard output"))?;
            use std::io::Write;
            w.flush().map_err(|e| super::CliError { message: format!("standard output: {e}"), code: 2 })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps the first 8 KiB written to it, then refuses more (an error the caller expects).
struct ProbeWriter<'a>(&'a mut Vec<u8>);

impl std::io::Write for ProbeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (8 << 10) - self.0.len();
        if room == 0 {
            return Err(std::io::Error::other("enough seen"));
        }
        let n = room.min(buf.len());
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Standard output where a reader that went away (`| head`) ends the command quietly.
struct BrokenPipeIsEnd<W>(W);

impl<W: std::io::Write> std::io::Write for BrokenPipeIsEnd<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).inspect_err(quit_on_broken_pipe)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().inspect_err(quit_on_broken_pipe)
    }
}

fn quit_on_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
}

/// Set files or folders of the working tree back to what a revision (default HEAD) has
/// there: changed files are written back, files the revision lacks there are removed. HEAD
/// and every other path stay as they are.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Files or folders, as in the working tree (relative to the current folder; `.` is all
    /// of it there).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The revision to take them from.
    #[arg(long, short, default_value = "HEAD", value_name = "REV")]
    source: String,
    #[arg(long)]
    json: bool,
}

pub fn run_restore(env: &Env, a: RestoreArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let paths = super::tree_paths(env, &repo, &a.paths)?;
    cohort::remote::fill_missing_paths(&repo, &a.source, &paths, &super::remote::credentials(&Default::default()), &env.progress())?;
    let s = repo.restore(&a.source, &paths, &env.progress())?;
    if a.json {
        json(&s);
    } else if s.written.is_empty() && s.removed.is_empty() {
        eprintln!("nothing to restore: already as in {} ({})", a.source, s.commit.short());
    } else {
        for p in &s.written {
            out(&format!("restored {p}\n"));
        }
        for p in &s.removed {
            out(&format!("removed  {p}\n"));
        }
        eprintln!("{} file(s) restored and {} removed, as in {} ({})", s.written.len(), s.removed.len(), a.source, s.commit.short());
    }
    Ok(ExitCode::SUCCESS)
}
