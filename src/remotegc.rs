//! `remote gc`: remove from a remote's packs every object that none of its branches and tags
//! reaches, such as what a deleted branch of identified data left behind.
//!
//! Under a gc lock (a push waits for it, and a gc waits for pushes; see [`crate::remote`]):
//! 1. the remote's refs are read, and the metadata of what they reach (commits, trees, DICOM
//!    records, catalogs) is fetched into the local store, which is enough to know every object
//!    they reach; an object they reach that the remote lacks stops the gc before it changes
//!    anything;
//! 2. a pack whose objects are all reached stays; one with none is deleted; one with some is
//!    rewritten: it is downloaded, each reached object is checked against its id and copied
//!    (as stored) into a new pack, which is uploaded (pack before index) before the old one is
//!    deleted (index before pack). An object already kept in another pack is not copied twice;
//! 3. a pack file left without its index (an interrupted push or gc) is deleted, and so are
//!    claims of ref updates already settled and locks that lapsed.
//!
//! Interrupted at any point, the remote holds every reached object at least once: new packs
//! are complete before an old one goes, so a second run finishes the job (tested by killing
//! a gc at many moments). Pack files without an index are listed only after this run's
//! uploads: a rewritten pack is named by its content, so it may have the name of a pack file
//! an interrupted run left without its index.
//!
//! A fetch that runs during a gc may fail on a pack that was just deleted; run it again.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::id::ObjectId;
use crate::pack::{Codec, Location};
use crate::progress::{Progress, Unit};
use crate::remote::{cache_dir, open_named, Credentials, RemoteError, RemoteIndex};
use crate::repo::Repo;
use crate::store::{ObjectWriter, StoreError};

/// What a remote gc did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RemoteGcSummary {
    pub remote: String,
    pub dry_run: bool,
    /// Branches and tags on the remote, whose objects are kept.
    pub refs: usize,
    pub packs_before: usize,
    /// Packs left as they were.
    pub packs_kept: usize,
    /// Packs replaced by a new pack of their reached objects.
    pub packs_rewritten: usize,
    /// Packs deleted: none of their objects is reached, or all are kept in other packs.
    pub packs_deleted: usize,
    /// Pack files without an index (left by an interrupted push or gc), deleted.
    pub orphans_deleted: usize,
    /// Claims of ref updates already settled (below a ref's current sequence, or of a deleted
    /// ref) and locks that lapsed, deleted.
    pub stale_deleted: usize,
    /// Objects removed from the remote (counting each copy).
    pub objects_removed: u64,
    /// Stored bytes of the objects removed.
    pub bytes_removed: u64,
    /// Stored bytes of the objects kept.
    pub bytes_kept: u64,
}

/// What becomes of one pack.
enum Plan {
    Keep,
    Delete,
    /// Copy these of its objects into a new pack.
    Rewrite(Vec<(ObjectId, Location)>),
}

/// Remove from remote `remote_name` every object no branch or tag on it reaches. With
/// `dry_run`, only say what would go (nothing on the remote changes; metadata of its refs is
/// still fetched into the local store).
pub fn gc(repo: &Repo, remote_name: &str, dry_run: bool, creds: &Credentials, progress: &dyn Progress) -> Result<RemoteGcSummary, RemoteError> {
    let (remote, _) = open_named(repo, remote_name, creds)?;
    remote.check_marker(false)?;
    let clock = || repo.ctx.now_us();
    let lock = if dry_run { None } else { Some(remote.lock("gc", &clock)?) };
    let mut roots: Vec<(ObjectId, String)> = remote.branches()?.into_iter().map(|(n, id)| (id, format!("branch {n}"))).collect();
    roots.extend(remote.tags()?.into_iter().map(|(n, id)| (id, format!("tag {n}"))));
    let cache = cache_dir(repo, remote_name);
    // Every pack's index, read once: for the walk (by id) and the plan (by pack).
    let (mut index, mut members) = (RemoteIndex::default(), BTreeMap::new());
    remote.each_pack_index(&cache, |name, entries| {
        index.add(&name, &entries);
        members.insert(name, entries);
    })?;

    // 1. Everything the refs reach.
    let tips: Vec<ObjectId> = roots.iter().map(|r| r.0).collect::<HashSet<_>>().into_iter().collect();
    let mut w = repo.store.writer()?;
    crate::remote::fetch_metadata(repo, &remote, &index, &tips, &mut w, progress)?;
    repo.store.finish_pack(w)?;
    let (mut problems, mut absent) = (Vec::new(), Vec::new());
    let reach = crate::maint::reachable_with_absent_blobs(&repo.store, &roots, &mut problems, &mut absent);
    if let Some(p) = problems.first() {
        return Err(RemoteError::Missing { remote: format!("(local, {}: {}; gc not started)", p.place, p.problem), id: p.id });
    }
    if let Some(id) = reach.iter().find(|id| !index.by_id.contains_key(*id)) {
        return Err(RemoteError::Missing { remote: format!("{remote_name} (reached by its refs; gc not started)"), id: *id });
    }

    // 2. What becomes of each pack: whole ones first, so that what they hold is not copied.
    let mut summary = RemoteGcSummary {
        remote: remote_name.into(),
        dry_run,
        refs: roots.len(),
        packs_before: members.len(),
        packs_kept: 0,
        packs_rewritten: 0,
        packs_deleted: 0,
        orphans_deleted: 0,
        stale_deleted: 0,
        objects_removed: 0,
        bytes_removed: 0,
        bytes_kept: 0,
    };
    let mut kept: HashSet<ObjectId> = HashSet::new();
    let mut plans: BTreeMap<&str, Plan> = BTreeMap::new();
    for (name, entries) in &members {
        if entries.iter().all(|(id, _)| reach.contains(id)) {
            kept.extend(entries.iter().map(|e| e.0));
            summary.bytes_kept += entries.iter().map(|e| e.1.stored_share()).sum::<u64>();
            plans.insert(name, Plan::Keep);
            summary.packs_kept += 1;
        }
    }
    for (name, entries) in &members {
        if plans.contains_key(name.as_str()) {
            continue;
        }
        let mut wanted = Vec::new();
        for &(id, loc) in entries {
            if reach.contains(&id) && kept.insert(id) {
                wanted.push((id, loc));
                summary.bytes_kept += loc.stored_share();
            } else {
                summary.objects_removed += 1;
                summary.bytes_removed += loc.stored_share();
            }
        }
        if wanted.is_empty() {
            plans.insert(name, Plan::Delete);
            summary.packs_deleted += 1;
        } else {
            plans.insert(name, Plan::Rewrite(wanted));
            summary.packs_rewritten += 1;
        }
    }
    let Some(lock) = lock else {
        summary.orphans_deleted = orphans(&remote)?.len();
        return Ok(summary);
    };

    // 3. New packs for the rewritten ones, all uploaded before anything is deleted.
    let staging = tempfile::Builder::new().prefix("remote-gc-").tempdir_in(repo.store.tmp_dir()).map_err(|source| RemoteError::Io { path: repo.store.tmp_dir(), source })?;
    let rewrites: Vec<(&str, &Vec<(ObjectId, Location)>)> = plans.iter().filter_map(|(n, p)| if let Plan::Rewrite(w) = p { Some((*n, w)) } else { None }).collect();
    progress.stage("rewriting packs", Some(rewrites.len() as u64), Unit::Objects);
    for (name, wanted) in rewrites {
        remote.put_packs(vec![rewrite(&remote, repo, staging.path(), name, wanted)?])?;
        lock.renew()?;
        progress.inc(1);
    }
    progress.finish_stage();

    // 4. The old packs go: index first, so that no reader sees an index without its pack.
    for (name, plan) in &plans {
        if matches!(plan, Plan::Keep) {
            continue;
        }
        lock.renew()?;
        remote.delete(&format!("packs/{name}.idx"))?;
        remote.delete(&format!("packs/{name}.pack"))?;
        let _ = std::fs::remove_file(cache.join(format!("{name}.idx")));
    }
    // Listed only now: a pack this run uploaded may have the name (its content's) of a pack
    // file an interrupted run left without its index, and it has its index now.
    for name in orphans(&remote)? {
        lock.renew()?;
        remote.delete(&format!("packs/{name}.pack"))?;
        summary.orphans_deleted += 1;
    }
    // 5. Leftovers of finished or crashed work: claims for sequence numbers a ref has passed
    // (or of a ref that is gone), and locks that lapsed.
    for key in stale(&remote, repo.ctx.now_us())? {
        remote.delete(&key)?;
        summary.stale_deleted += 1;
    }
    drop(lock);
    Ok(summary)
}

/// Names of the pack files on the remote that have no index.
fn orphans(remote: &crate::remote::Remote) -> Result<Vec<String>, RemoteError> {
    let keys: HashSet<String> = remote.list("packs/")?.into_iter().collect();
    Ok(keys
        .iter()
        .filter_map(|k| k.strip_prefix("packs/").and_then(|k| k.strip_suffix(".pack")))
        .filter(|n| !keys.contains(&format!("packs/{n}.idx")))
        .map(str::to_string)
        .collect())
}

/// Keys of claims below their ref's current sequence number or of refs that are gone, and
/// of locks not renewed within the lease.
fn stale(remote: &crate::remote::Remote, now_us: i64) -> Result<Vec<String>, RemoteError> {
    let mut out = Vec::new();
    for kind in ["branches", "tags"] {
        for key in remote.list(&format!("refs/{kind}/"))? {
            // refs/KIND/NAME/claims/SEQ/NONCE (a branch name may hold slashes)
            let Some((name, rest)) = key.strip_prefix(&format!("refs/{kind}/")).and_then(|k| k.split_once("/claims/")) else { continue };
            let Some(seq) = rest.split('/').next().and_then(|q| q.parse::<u64>().ok()) else { continue };
            let current = remote.read_ref(kind, name)?.map(|(s, _)| s);
            if current.is_none_or(|c| seq <= c) {
                out.push(key);
            }
        }
    }
    for kind in ["push", "gc"] {
        for key in remote.list(&format!("locks/{kind}/"))? {
            if !remote.lock_live(&key, now_us)? {
                out.push(key);
            }
        }
    }
    Ok(out)
}

/// Download pack `name` of the remote into `dir`, copy `wanted` of its objects (each checked
/// against its id) into a new pack, and return the new pack's name, pack and index bytes.
fn rewrite(remote: &crate::remote::Remote, repo: &Repo, dir: &std::path::Path, name: &str, wanted: &[(ObjectId, Location)]) -> Result<(String, Vec<u8>, Vec<u8>), RemoteError> {
    let fetched = dir.join("in");
    let built = dir.join("built");
    for d in [&fetched, &built] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).map_err(|source| RemoteError::Io { path: d.clone(), source })?;
    }
    for ext in ["pack", "idx"] {
        let key = format!("packs/{name}.{ext}");
        let bytes = remote.get(&key)?.ok_or_else(|| RemoteError::Store { remote: remote.name.clone(), key: key.clone(), message: "vanished during gc".into() })?;
        let path = fetched.join(format!("{name}.{ext}"));
        std::fs::write(&path, bytes).map_err(|source| RemoteError::Io { path, source })?;
    }
    let corrupt = |id: ObjectId, reason: String| RemoteError::Corrupt { remote: remote.name.clone(), id, pack: name.to_string(), reason };
    let pack = crate::pack::Pack::open(&fetched, name).map_err(StoreError::from)?;
    pack.verify_index().map_err(StoreError::from)?;
    let w = ObjectWriter { pack: crate::pack::PackWriter::create(&built, &repo.store.tmp_dir()).map_err(StoreError::from)? };
    for (id, loc) in wanted {
        if loc.codec == Codec::Block {
            // Read out of its block (and checked) by the copy.
            w.pack.copy_from(&pack, *id, *loc).map_err(|e| corrupt(*id, e.to_string()))?;
        } else {
            let stored = pack.read_stored(*id, *loc).map_err(|e| corrupt(*id, e.to_string()))?;
            crate::pack::check_stored(*id, loc, &stored).map_err(|e| corrupt(*id, e))?;
            w.add_encoded(crate::pack::Encoded { id: *id, codec: loc.codec, raw_len: loc.raw_len, data: stored })?;
        }
    }
    crate::remote::take_pack(w, &built)
}
