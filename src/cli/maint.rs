//! `cohort fsck`, `gc`, `du` and `reindex`.
use std::process::ExitCode;

use cohort::maint;
use cohort::store::Mode;

use super::{human_bytes, json, out, CliResult, Env};

/// Re-hash every object; report any that is missing or corrupt (exit 1 if so).
#[derive(clap::Args)]
pub struct FsckArgs {
    #[arg(long)]
    json: bool,
}

pub fn run_fsck(env: &Env, a: FsckArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let partial = cohort::remote::list_remotes(&repo)?.values().any(|r| r.promisor);
    let r = maint::fsck_with(&repo, partial, &env.progress())?;
    if a.json {
        json(&r);
    } else {
        let mut s = format!("{} objects in {} packs checked, {} reachable from refs\n", r.objects, r.packs, r.reachable);
        for c in &r.corrupt {
            s.push_str(&format!("corrupt: {} in {}: {}\n", c.id, c.place, c.problem));
        }
        for m in &r.missing {
            s.push_str(&format!("missing: {} ({}): {}\n", m.id, m.place, m.problem));
        }
        if r.not_fetched > 0 {
            s.push_str(&format!("{} object(s) not fetched yet (partial clone; fetched on demand)\n", r.not_fetched));
        }
        s.push_str(if r.ok { "ok\n" } else { "store has problems\n" });
        out(&s);
    }
    Ok(if r.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Remove objects that no branch, tag or HEAD reaches.
#[derive(clap::Args)]
pub struct GcArgs {
    #[arg(long)]
    json: bool,
}

pub fn run_gc(env: &Env, a: GcArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let r = maint::gc(&repo, &env.progress())?;
    if a.json {
        json(&r);
    } else {
        out(&format!(
            "kept {} of {} objects; {} -> {}; removed {} packs and {} cached files\n",
            r.objects_after, r.objects_before, human_bytes(r.bytes_before), human_bytes(r.bytes_after), r.packs_removed, r.cache_files_removed
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Logical bytes (sum of file sizes) of a commit and physical bytes stored.
#[derive(clap::Args)]
pub struct DuArgs {
    #[arg(default_value = "HEAD")]
    rev: String,
    #[arg(long)]
    json: bool,
}

pub fn run_du(env: &Env, a: DuArgs) -> CliResult {
    let repo = env.repo(Mode::Read)?;
    let r = maint::du(&repo, &a.rev)?;
    if a.json {
        json(&r);
    } else {
        out(&format!(
            "commit {}\nfiles          {}\nlogical bytes  {} ({})\nphysical bytes {} ({}) in {} objects reachable from this commit's tree\nstore bytes    {} ({}) in all packs\n",
            r.commit.short(), r.files, r.logical_bytes, human_bytes(r.logical_bytes), r.physical_bytes, human_bytes(r.physical_bytes), r.objects, r.store_bytes, human_bytes(r.store_bytes)
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Rebuild the sled index from the objects.
#[derive(clap::Args)]
pub struct ReindexArgs {}

pub fn run_reindex(env: &Env, _a: ReindexArgs) -> CliResult {
    let repo = env.repo(Mode::Write)?;
    let n = repo.reindex(true)?;
    out(&format!("reindexed {n} commits; the stat cache will be rebuilt by the next status\n"));
    Ok(ExitCode::SUCCESS)
}
