//! The command line: one file per command group; this file parses, builds the context from
//! the environment (the only place that reads it), and turns errors into messages and exit
//! codes.
//!
//! Exit codes: 0 success; 1 the command ran and found problems (fsck, phi-scan, split check);
//! 2 an error (bad input, bad arguments, store trouble).

mod annotate;
mod checkout;
mod commit;
mod deid;
mod diff;
mod ingest;
mod init;
mod log;
mod ls;
mod maint;
mod op;
mod progress;
mod provenance;
mod refs;
mod remote;
mod run;
mod split;
mod status;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cohort::repo::{Context, Repo};
use cohort::store::{Mode, Store};

/// Version control and provenance for medical-imaging (DICOM) datasets.
#[derive(Parser)]
#[command(name = "cohort", version, about, long_about = None)]
pub struct Cli {
    /// Run as if started in this folder.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(init::Args),
    Commit(commit::Args),
    Status(status::Args),
    Log(log::LogArgs),
    Show(log::ShowArgs),
    Ls(ls::Args),
    Find(ls::FindArgs),
    Diff(diff::Args),
    Checkout(checkout::CheckoutArgs),
    Merge(checkout::MergeArgs),
    Export(checkout::ExportArgs),
    Cat(checkout::CatArgs),
    Restore(checkout::RestoreArgs),
    Branch(refs::BranchArgs),
    Tag(refs::TagArgs),
    Fsck(maint::FsckArgs),
    Gc(maint::GcArgs),
    Du(maint::DuArgs),
    Reindex(maint::ReindexArgs),
    Deid(deid::DeidArgs),
    DeidReport(deid::ReportArgs),
    PhiScan(deid::ScanArgs),
    #[command(subcommand)]
    Annotate(annotate::AnnotateCommand),
    Agreement(annotate::AgreementArgs),
    Consensus(annotate::ConsensusArgs),
    #[command(subcommand)]
    Split(split::SplitCommand),
    Verify(verify::VerifyArgs),
    VerifyExport(verify::VerifyExportArgs),
    #[command(subcommand)]
    Remote(remote::RemoteCommand),
    Push(remote::PushArgs),
    Fetch(remote::FetchArgs),
    Pull(remote::PullArgs),
    Clone(remote::CloneArgs),
    #[command(subcommand)]
    Ingest(ingest::IngestCommand),
    Run(run::RunArgs),
    Blame(provenance::BlameArgs),
    Prov(provenance::ProvArgs),
    Card(provenance::CardArgs),
    Rerun(run::RerunArgs),
    Keygen(verify::KeygenArgs),
    /// The operation log: every change of refs.
    #[command(subcommand)]
    Op(op::OpCommand),
}

/// An error for the user: a message, optional hints, and the exit code.
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            let t = s.to_string();
            if !message.contains(&t) {
                message.push_str(&format!(": {t}"));
            }
            src = s.source();
        }
        CliError { message, code: 2 }
    }
}

pub type CliResult = Result<ExitCode, CliError>;

/// Where the command runs, and who runs it.
pub struct Env {
    pub cwd: PathBuf,
    pub quiet: bool,
    pub ctx: Context,
}

impl Env {
    pub fn progress(&self) -> progress::Bars {
        progress::Bars::new(self.quiet)
    }

    /// Open the store of the working folder containing `cwd`.
    pub fn repo(&self, mode: Mode) -> Result<Repo, CliError> {
        let root = Store::discover(&self.cwd)?;
        let repo = Repo::open(&root, mode, self.ctx.clone())?;
        if let Some(damage) = &repo.store.index_damage {
            eprintln!(
                "warning: the index in {} was damaged ({damage}), as by a process killed mid-write; it was moved to index.corrupt and is rebuilt from the objects (nothing stored is lost)",
                repo.store.dir.display()
            );
        }
        Ok(repo)
    }
}

fn context() -> Context {
    let user = std::env::var("COHORT_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    // COHORT_TIME pins the clock (RFC 3339 or microseconds), for reproducible tests and demos.
    let time_us = std::env::var("COHORT_TIME").ok().and_then(|t| {
        t.parse::<i64>()
            .ok()
            .or_else(|| chrono::DateTime::parse_from_rfc3339(&t).ok().map(|d| d.timestamp_micros()))
    });
    Context { user, time_us, command: std::env::args().collect() }
}

/// Print to stdout; a closed pipe (`| head`) is not an error.
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    if o.write_all(s.as_bytes()).and_then(|_| o.flush()).is_err() {
        std::process::exit(0);
    }
}

pub fn json<T: serde::Serialize>(v: &T) {
    out(&(serde_json::to_string_pretty(v).expect("serializable") + "\n"));
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[u]) }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let cwd = match &cli.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
    let env = Env { cwd, quiet: cli.quiet, ctx: context() };
    let r = match cli.command {
        Command::Init(a) => init::run(&env, a),
        Command::Commit(a) => commit::run(&env, a),
        Command::Status(a) => status::run(&env, a),
        Command::Log(a) => log::run_log(&env, a),
        Command::Show(a) => log::run_show(&env, a),
        Command::Ls(a) => ls::run(&env, a),
        Command::Find(a) => ls::run_find(&env, a),
        Command::Diff(a) => diff::run(&env, a),
        Command::Checkout(a) => checkout::run_checkout(&env, a),
        Command::Merge(a) => checkout::run_merge(&env, a),
        Command::Export(a) => checkout::run_export(&env, a),
        Command::Cat(a) => checkout::run_cat(&env, a),
        Command::Restore(a) => checkout::run_restore(&env, a),
        Command::Branch(a) => refs::run_branch(&env, a),
        Command::Tag(a) => refs::run_tag(&env, a),
        Command::Fsck(a) => maint::run_fsck(&env, a),
        Command::Gc(a) => maint::run_gc(&env, a),
        Command::Du(a) => maint::run_du(&env, a),
        Command::Reindex(a) => maint::run_reindex(&env, a),
        Command::Deid(a) => deid::run_deid(&env, a),
        Command::DeidReport(a) => deid::run_report(&env, a),
        Command::PhiScan(a) => deid::run_scan(&env, a),
        Command::Op(c) => op::run(&env, c),
        Command::Annotate(c) => annotate::run(&env, c),
        Command::Agreement(a) => annotate::run_agreement(&env, a),
        Command::Consensus(a) => annotate::run_consensus(&env, a),
        Command::Split(c) => split::run(&env, c),
        Command::Verify(a) => verify::run_verify(&env, a),
        Command::VerifyExport(a) => verify::run_verify_export(&env, a),
        Command::Remote(c) => remote::run_remote(&env, c),
        Command::Push(a) => remote::run_push(&env, a),
        Command::Fetch(a) => remote::run_fetch(&env, a),
        Command::Pull(a) => remote::run_pull(&env, a),
        Command::Clone(a) => remote::run_clone(&env, a),
        Command::Ingest(c) => ingest::run(&env, c),
        Command::Run(a) => run::run_run(&env, a),
        Command::Blame(a) => provenance::run_blame(&env, a),
        Command::Prov(a) => provenance::run_prov(&env, a),
        Command::Card(a) => provenance::run_card(&env, a),
        Command::Rerun(a) => run::run_rerun(&env, a),
        Command::Keygen(a) => verify::run_keygen(&env, a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// Resolve a path argument against the command's folder.
pub fn abs(env: &Env, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { env.cwd.join(p) }
}

/// Path arguments as paths of the working tree (relative to the current folder).
pub fn tree_paths(env: &Env, repo: &Repo, args: &[PathBuf]) -> Result<Vec<String>, CliError> {
    Ok(args.iter().map(|p| cohort::pathsel::tree_path(&repo.root, &env.cwd, p)).collect::<Result<_, _>>()?)
}

/// `repo`, opened to read; in a partial clone, opened again to write, once `fill` has fetched
/// from the promisor remote what the command is about to read (the write lock is taken only
/// then).
pub fn filled(
    env: &Env,
    repo: Repo,
    fill: impl FnOnce(&Repo, &cohort::remote::Credentials, &dyn cohort::progress::Progress) -> Result<u64, cohort::remote::RemoteError>,
) -> Result<Repo, CliError> {
    if !cohort::remote::list_remotes(&repo)?.values().any(|r| r.promisor) {
        return Ok(repo);
    }
    drop(repo);
    let repo = env.repo(Mode::Write)?;
    fill(&repo, &remote::credentials(&Default::default()), &env.progress())?;
    Ok(repo)
}
