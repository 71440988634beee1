//! `cohort verify REV`: prove a history intact. Every object reachable from REV (commits up
//! to the root, trees, DICOM records, headers, pixel data, catalogs, annotations, masks,
//! splits, reports) is read and re-hashed against its id, and every commit signature is
//! checked, naming its signer.

use rayon::prelude::*;
use serde::Serialize;

use crate::id::ObjectId;
use crate::maint::{reachable, Problem};
use crate::progress::{Progress, Unit};
use crate::repo::{Repo, RepoError};

#[derive(Debug, Clone, Serialize)]
pub struct SignatureCheck {
    pub commit: ObjectId,
    pub signer: String,
    pub key_fingerprint: String,
    pub valid: bool,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub commit: ObjectId,
    pub commits: usize,
    pub objects: usize,
    pub bytes: u64,
    pub signed: Vec<SignatureCheck>,
    pub unsigned: usize,
    pub problems: Vec<Problem>,
    pub ok: bool,
}

/// Verify the history that ends at `rev`.
pub fn verify(repo: &Repo, rev: &str, progress: &dyn Progress) -> Result<VerifyReport, RepoError> {
    let start = repo.resolve(rev)?;
    let store = &repo.store;
    let mut problems = Vec::new();
    let all = reachable(store, &[(start, format!("revision {rev}"))], &mut problems);
    // Commits first (their signatures), then every object's bytes against its id.
    let mut commits = Vec::new();
    let mut stack = vec![start];
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Ok(c) = store.read_commit(&id) {
            stack.extend(c.parents.iter().copied());
            commits.push((id, c));
        }
    }
    let mut signed = Vec::new();
    for (id, c) in &commits {
        if let (Some(s), Some(r)) = (&c.signature, crate::sign::check_signature(c)) {
            signed.push(SignatureCheck {
                commit: *id,
                signer: s.signer.clone(),
                key_fingerprint: crate::sign::key_fingerprint(&s.public_key),
                valid: r.is_ok(),
                problem: r.err(),
            });
        }
    }
    signed.sort_by_key(|s| s.commit);
    let ids: Vec<ObjectId> = all.into_iter().collect();
    progress.stage("verifying", Some(ids.len() as u64), Unit::Objects);
    let results: Vec<Result<u64, Problem>> = ids
        .par_iter()
        .map(|id| {
            let r = store.read(id).map(|b| b.len() as u64).map_err(|e| Problem { id: *id, place: "store".into(), problem: e.to_string() });
            progress.inc(1);
            r
        })
        .collect();
    progress.finish_stage();
    let mut bytes = 0;
    for r in results {
        match r {
            Ok(n) => bytes += n,
            Err(p) => problems.push(p),
        }
    }
    problems.sort_by_key(|p| p.id);
    problems.dedup_by_key(|p| p.id);
    for s in &signed {
        if !s.valid {
            problems.push(Problem { id: s.commit, place: format!("signature by {}", s.signer), problem: s.problem.clone().unwrap_or_default() });
        }
    }
    let ok = problems.is_empty();
    Ok(VerifyReport { commit: start, commits: commits.len(), objects: ids.len(), bytes, unsigned: commits.len() - signed.len(), signed, problems, ok })
}
