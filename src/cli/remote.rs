//! `cohort remote`, `push`, `fetch`, `pull`, `clone`.
use std::path::PathBuf;
use std::process::ExitCode;

use cohort::remote::{self, Credentials, PartialSpec, RemoteSpec};
use cohort::store::Mode;

use super::{abs, human_bytes, json, out, CliError, CliResult, Env};

/// S3 settings; credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
/// AWS_SESSION_TOKEN, endpoint and region from AWS_ENDPOINT_URL / AWS_REGION, unless given here.
#[derive(clap::Args, Clone, Default)]
pub struct S3Flags {
    /// S3 endpoint, e.g. http://127.0.0.1:3900 for a local Garage or MinIO.
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    region: Option<String>,
    /// Allow plain http to the endpoint.
    #[arg(long)]
    allow_http: bool,
    /// PEM certificate(s) of a private CA to trust for an https endpoint, besides the public
    /// roots (recorded by `remote add`).
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
}

/// The remote `url` as `remote add` and `clone` record it, with the flags' endpoint, region,
/// http and CA (paths made absolute).
fn remote_spec(env: &Env, url: &str, s3: &S3Flags, promisor: bool) -> RemoteSpec {
    RemoteSpec { url: url_arg(env, url), endpoint: s3.endpoint.clone(), region: s3.region.clone(), allow_http: s3.allow_http, promisor, ca_cert: s3.ca_cert.as_ref().map(|p| abs(env, p)) }
}

pub fn credentials(f: &S3Flags) -> Credentials {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Credentials {
        access_key_id: env("AWS_ACCESS_KEY_ID"),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
        session_token: env("AWS_SESSION_TOKEN"),
        endpoint: f.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL")),
        region: f.region.clone().or_else(|| env("AWS_REGION")).or_else(|| env("AWS_DEFAULT_REGION")),
        allow_http: if f.allow_http { Some(true) } else { env("AWS_ALLOW_HTTP").map(|v| v == "true" || v == "1") },
        ca_cert: f.ca_cert.clone(),
    }
}

/// Remotes: s3://BUCKET/PREFIX or a folder.
#[derive(clap::Subcommand)]
pub enum RemoteCommand {
    /// Add a remote.
    Add {
        name: String,
        url: String,
        #[command(flatten)]
        s3: S3Flags,
    },
    /// Remove a remote (its objects stay where they are).
    Remove { name: String },
    /// List remotes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove from the remote every object that none of its branches and tags reaches (what a
    /// branch deleted with `push --delete` left behind). Pushes wait while it runs.
    Gc {
        name: String,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        s3: S3Flags,
        #[arg(long)]
        json: bool,
    },
}

fn url_arg(env: &Env, url: &str) -> String {
    if url.contains("://") { url.to_string() } else { abs(env, &PathBuf::from(url)).display().to_string() }
}

pub fn run_remote(env: &Env, c: RemoteCommand) -> CliResult {
    match c {
        RemoteCommand::Add { name, url, s3 } => {
            let repo = env.repo(Mode::Write)?;
            remote::add_remote(&repo, &name, remote_spec(env, &url, &s3, false))?;
            eprintln!("added remote {name}");
        }
        RemoteCommand::Remove { name } => {
            let repo = env.repo(Mode::Write)?;
            remote::remove_remote(&repo, &name)?;
            eprintln!("removed remote {name}");
        }
        RemoteCommand::Gc { name, dry_run, s3, json: as_json } => {
            let repo = env.repo(Mode::Write)?;
            let s = cohort::remotegc::gc(&repo, &name, dry_run, &credentials(&s3), &env.progress())?;
            if as_json {
                json(&s);
            } else {
                let verb = if s.dry_run { "would remove" } else { "removed" };
                out(&format!(
                    "{}: {verb} {} object(s), {} ({} pack(s) deleted, {} rewritten, {} kept; {} pack file(s) without index; {} settled claim(s) and lapsed lock(s)); {} kept for {} branch(es) and tag(s)\n",
                    s.remote,
                    s.objects_removed,
                    human_bytes(s.bytes_removed),
                    s.packs_deleted,
                    s.packs_rewritten,
                    s.packs_kept,
                    s.orphans_deleted,
                    s.stale_deleted,
                    human_bytes(s.bytes_kept),
                    s.refs
                ));
            }
        }
        RemoteCommand::List { json: as_json } => {
            let repo = env.repo(Mode::Read)?;
            let all = remote::list_remotes(&repo)?;
            if as_json {
                json(&all);
            } else {
                for (n, s) in all {
                    out(&format!("{n}\t{}{}\n", s.url, if s.promisor { "\t(partial clone source)" } else { "" }));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Send a branch (or with --tag a tag) and every object it reaches that the remote lacks; the
/// remote's branch moves only if it is an ancestor of yours (else: fetch first), a tag never
/// moves. With --delete, delete the branch or tag on the remote instead.
#[derive(clap::Args)]
pub struct PushArgs {
    remote: String,
    /// Branch (default: the current one).
    branch: Option<String>,
    /// Push this tag instead of a branch. Tags never move: a tag of the same name at another
    /// commit on the remote is an error.
    #[arg(long, conflicts_with = "branch")]
    tag: Option<String>,
    /// Delete the branch (named, not the current one by default) or the --tag on the remote
    /// instead of pushing it; a deleted branch's remote-tracking branch goes too. The objects
    /// it reached stay in the remote's packs until `cohort remote gc NAME`.
    #[arg(long)]
    delete: bool,
    #[command(flatten)]
    s3: S3Flags,
    #[arg(long)]
    json: bool,
}

pub fn run_push(env: &Env, a: PushArgs) -> CliResult {
    if a.delete {
        let (kind, name) = match (&a.tag, &a.branch) {
            (Some(t), _) => ("tag", t.clone()),
            (None, Some(b)) => ("branch", b.clone()),
            (None, None) => return Err(CliError { message: "push --delete needs the branch (or --tag) to delete on the remote".into(), code: 2 }),
        };
        let repo = env.repo(if kind == "branch" { Mode::Write } else { Mode::Read })?;
        let s = remote::delete_remote_ref(&repo, &a.remote, kind, &name, &credentials(&a.s3))?;
        if a.json {
            json(&s);
        } else {
            out(&format!("{}: deleted {} {} (was at {}); the objects it reached stay in the remote's packs until `cohort remote gc {}`\n", s.remote, s.kind, s.name, s.commit.short(), s.remote));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let repo = env.repo(Mode::Read)?;
    let s = match &a.tag {
        Some(t) => remote::push_tag(&repo, &a.remote, t, &credentials(&a.s3), &env.progress())?,
        None => remote::push(&repo, &a.remote, a.branch.as_deref(), &credentials(&a.s3), &env.progress())?,
    };
    let what = if s.kind == "tag" { format!("tag {}", s.name) } else { s.name.clone() };
    if a.json {
        json(&s);
    } else if s.up_to_date {
        out(&format!("{} {what}: up to date at {}\n", s.remote, s.commit.short()));
    } else {
        out(&format!(
            "{} {what}: {} -> {} ({} objects, {} in {} pack(s))\n",
            s.remote,
            s.previous.map(|p| p.short()).unwrap_or_else(|| "(new)".into()),
            s.commit.short(),
            s.objects_sent,
            human_bytes(s.bytes_sent),
            s.packs_sent
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Receive the remote's branches (as remotes/NAME/BRANCH) and the objects they need, each
/// checked against its id before it is stored.
#[derive(clap::Args)]
pub struct FetchArgs {
    remote: String,
    #[command(flatten)]
    s3: S3Flags,
    #[arg(long)]
    json: bool,
}

pub fn run_fetch(env: &Env, a: FetchArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let s = remote::fetch(&repo, &a.remote, &credentials(&a.s3), None, &env.progress())?;
    if a.json {
        json(&s);
    } else {
        for (b, id) in &s.branches {
            out(&format!("remotes/{}/{b} {}\n", s.remote, id.short()));
        }
        for (t, id) in &s.new_tags {
            out(&format!("tag {t} {} (new)\n", id.short()));
        }
        warn_tag_conflicts(&s);
        eprintln!("fetched {} objects ({})", s.objects, human_bytes(s.bytes));
    }
    Ok(ExitCode::SUCCESS)
}

fn warn_tag_conflicts(s: &remote::FetchSummary) {
    for (t, id) in &s.tag_conflicts {
        eprintln!("warning: remote {} has tag {t} at {}, another commit than here; kept yours (tags never move)", s.remote, id.short());
    }
}

/// Fetch, then merge the remote's branch of the same name into the current branch (a
/// fast-forward when possible; see `cohort merge`) and update the working tree.
#[derive(clap::Args)]
pub struct PullArgs {
    remote: String,
    /// How merge conflicts are settled (see `cohort merge`).
    #[command(flatten)]
    settle: super::checkout::SettleArgs,
    #[command(flatten)]
    s3: S3Flags,
}

pub fn run_pull(env: &Env, a: PullArgs) -> CliResult {
    let resolve = a.settle.resolve()?;
    let repo = env.repo(Mode::Write)?;
    let s = remote::fetch(&repo, &a.remote, &credentials(&a.s3), None, &env.progress())?;
    warn_tag_conflicts(&s);
    let (_, branch) = repo.head()?;
    let branch = branch.ok_or_else(|| CliError { message: "HEAD is detached: check out a branch to pull into".into(), code: 2 })?;
    if !s.branches.contains_key(&branch) {
        return Err(CliError { message: format!("remote {} has no branch {branch}", a.remote), code: 2 });
    }
    let theirs = format!("{}/{}/{branch}", remote::TRACKING, a.remote);
    // A partial clone fetches what the merged files need first.
    remote::fill_missing(&repo, &theirs, None, &credentials(&a.s3), &env.progress())?;
    super::checkout::merge_into_head(env, &repo, &theirs, None, &resolve, false)?;
    Ok(ExitCode::SUCCESS)
}

/// Make a new working folder from a remote. With --split and --part only the files of that
/// part are fetched (a partial clone); others come on demand with checkout and export.
#[derive(clap::Args)]
pub struct CloneArgs {
    url: String,
    /// The new working folder.
    #[arg(value_name = "DIR")]
    directory: PathBuf,
    /// Branch to check out (default main).
    #[arg(long, default_value = "main")]
    rev: String,
    #[arg(long, requires = "part")]
    split: Option<String>,
    #[arg(long, requires = "split")]
    part: Option<String>,
    #[command(flatten)]
    s3: S3Flags,
}

pub fn run_clone(env: &Env, a: CloneArgs) -> CliResult {
    let dir = abs(env, &a.directory);
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(CliError { message: format!("{}: exists and is not empty", dir.display()), code: 2 });
    }
    // A failed clone leaves nothing behind: the folder as it was (absent, or empty).
    cohort::export::into_new_folder(&dir, || clone_into(env, &a, &dir))
}

fn clone_into(env: &Env, a: &CloneArgs, dir: &std::path::Path) -> CliResult {
    let repo = cohort::Repo::init(dir, env.ctx.clone())?;
    let partial = a.split.clone().zip(a.part.clone()).map(|(split, part)| PartialSpec { split, part });
    remote::add_remote(&repo, "origin", remote_spec(env, &a.url, &a.s3, partial.is_some()))?;
    let creds = credentials(&a.s3);
    let s = remote::fetch(&repo, "origin", &creds, partial.as_ref().map(|p| (a.rev.as_str(), p)), &env.progress())?;
    let commit = *s.branches.get(&a.rev).ok_or_else(|| CliError { message: format!("remote has no branch {}", a.rev), code: 2 })?;
    let mut view = repo.store.view()?;
    view.branches.insert(a.rev.clone(), commit);
    view.head = cohort::object::Head::Branch(a.rev.clone());
    repo.publish(repo.store.writer()?, format!("clone {}: {} at {}", a.url, a.rev, commit.short()), view)?;
    match &partial {
        None => {
            repo.checkout(&a.rev, true, &env.progress())?;
            eprintln!("cloned {} into {} ({} objects, {}); {} at {}", a.url, dir.display(), s.objects, human_bytes(s.bytes), a.rev, commit.short());
        }
        Some(p) => eprintln!(
            "partial clone of {} into {}: {} objects ({}), the files of split {} part {}; export them with `cohort export {} OUT --split {} --part {}`; other files are fetched on demand",
            a.url, dir.display(), s.objects, human_bytes(s.bytes), p.split, p.part, a.rev, p.split, p.part
        ),
    }
    out(&format!("{commit}\n"));
    Ok(ExitCode::SUCCESS)
}
