//! Remotes: push, fetch, pull and clone to S3-compatible object storage or a shared folder,
//! through the `object_store` crate (one API for AWS S3, MinIO, Ceph, Garage and local paths).
//!
//! Layout of a remote (under `s3://bucket/prefix` or a folder):
//! ```text
//! cohort-remote                      "cohort-remote 1\n"
//! packs/<name>.pack, <name>.idx      packs in the store's own format; an index is uploaded
//!                                    after its pack, so a visible index names a whole pack
//! refs/branches/<name>/head          "cohort-ref 1\n<seq>\n<commit hex>\n"
//! refs/branches/<name>/claims/<seq>/<nonce>   "<time_us> <commit hex>\n"
//! refs/tags/<name>/head, refs/tags/<name>/claims/...   the same, for tags (which never move)
//! ```
//! Only objects reachable from the pushed ref travel (a de-identified branch never carries the
//! identified objects of the same store), and only those the remote lacks, in packs of at most
//! 64 MiB: a push interrupted at any point and run again re-sends at most the packs that were
//! in flight. Everything received is decoded and checked against its id before it enters the
//! local store.
//!
//! Ref updates are compare-and-swap built on plain PUT, GET and LIST (Garage ignores
//! conditional writes, so `If-Match` cannot be relied on): a pusher that saw the head at
//! sequence `n` writes a claim for `n + 1`, lists the claims for `n + 1` and re-reads the head;
//! only if its claim is the only live one and the head is still at `n` does it write the head.
//! Of two concurrent pushers at most one wins; the other gets "fetch first". A claim for the
//! same commit is an interrupted earlier try of the same push, not a rival; other claims older
//! than [`CLAIM_LEASE_US`] are ignored (a pusher that crashed mid-update cannot block a branch
//! for longer).
//!
//! A push and a remote gc ([`crate::remotegc`]) exclude each other by the same means: each
//! writes its lock (`locks/push/<nonce>` or `locks/gc/<nonce>`, holding the time it was last
//! renewed), then lists the other kind's locks, and backs off if one is live (younger than
//! [`CLAIM_LEASE_US`]). Of a push and a gc that overlap, at least one sees the other. A push
//! renews its lock after each batch of packs it uploads, a gc before each pack it deletes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::id::ObjectId;
use crate::object::{EntryKind, Head, Structured};
use crate::pack::{Codec, Location};
use crate::progress::{Progress, Unit};
use crate::repo::{Repo, RepoError};
use crate::store::{ObjectWriter, StoreError};

pub const REMOTE_MAGIC: &str = "cohort-remote 1\n";
const PACK_LIMIT: u64 = 64 << 20;
/// A claim older than this (10 minutes) no longer blocks a ref.
pub const CLAIM_LEASE_US: i64 = 600_000_000;
const REMOTES_FILE: &str = "remotes.json";
/// Prefix of remote-tracking branches: `remotes/<remote>/<branch>`.
pub const TRACKING: &str = "remotes";

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("no remote named {0:?} (cohort remote add NAME URL)")]
    NoRemote(String),
    #[error("remote {0:?} exists already")]
    Exists(String),
    #[error("invalid remote name {0:?}")]
    BadName(String),
    #[error("{url}: {message}")]
    Url { url: String, message: String },
    #[error("remote {remote}: {key}: {message}")]
    Store { remote: String, key: String, message: String },
    #[error("remote {remote} is not a cohort remote ({key} missing or wrong)")]
    NotARemote { remote: String, key: String },
    #[error("remote {remote}: object {id} in {pack} is damaged: {reason}; it was not stored")]
    Corrupt { remote: String, id: ObjectId, pack: String, reason: String },
    #[error("remote {remote}: object {id} is missing")]
    Missing { remote: String, id: ObjectId },
    #[error("remote {remote}: {what} {name:?} is at {remote_commit}, which {why}; fetch first (cohort fetch {remote}), then merge or rebase your work")]
    FetchFirst { remote: String, what: &'static str, name: String, remote_commit: String, why: String },
    #[error("remote {remote}: another push to {name:?} is in progress or just won; fetch first and try again")]
    Contended { remote: String, name: String },
    #[error("remote {remote}: {what} is running ({key}); try again when it is done (a lock left by a crashed process lapses 10 minutes after it was last renewed)")]
    Locked { remote: String, what: &'static str, key: String },
    #[error("remote {remote} has no branch {name:?}")]
    NoRemoteBranch { remote: String, name: String },
    #[error("remote {remote} has no {what} {name:?}")]
    NoRemoteRef { remote: String, what: &'static str, name: String },
    #[error("remote {remote}: tag {name:?} is at {remote_commit}, not {local_commit}; tags never move: push the commit under a new tag name")]
    TagMoved { remote: String, name: String, remote_commit: String, local_commit: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    LocalStore(#[from] StoreError),
    #[error(transparent)]
    Path(#[from] crate::pathsel::PathSelError),
    #[error(transparent)]
    Split(#[from] crate::split::SplitError),
}

/// A remote as recorded in `.cohort/remotes.json` (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSpec {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    /// A partial clone: missing objects are fetched from here on demand.
    #[serde(default)]
    pub promisor: bool,
    /// PEM file of CA certificate(s) to trust for an https endpoint, besides the public roots
    /// (an object store behind a hospital's own CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// S3 credentials and settings, from flags or the usual AWS environment variables (read by
/// the CLI, never by the library).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Overrides of the remote's recorded endpoint and region.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: Option<bool>,
    /// Override of the remote's recorded CA file.
    pub ca_cert: Option<PathBuf>,
}

fn valid_remote_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && !n.starts_with(['-', '.']) && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn remotes_path(repo: &Repo) -> PathBuf {
    repo.store.dir.join(REMOTES_FILE)
}

pub fn list_remotes(repo: &Repo) -> Result<BTreeMap<String, RemoteSpec>, RemoteError> {
    let p = remotes_path(repo);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| RemoteError::Io { path: p, source: std::io::Error::other(e) }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(RemoteError::Io { path: p, source }),
    }
}

fn save_remotes(repo: &Repo, r: &BTreeMap<String, RemoteSpec>) -> Result<(), RemoteError> {
    let p = remotes_path(repo);
    let bytes = serde_json::to_vec_pretty(r).expect("serializable");
    crate::fsutil::replace_atomic(&p, &bytes).map_err(|source| RemoteError::Io { path: p, source })
}

pub fn add_remote(repo: &Repo, name: &str, spec: RemoteSpec) -> Result<(), RemoteError> {
    if !valid_remote_name(name) {
        return Err(RemoteError::BadName(name.into()));
    }
    parse_url(&spec.url)?;
    let mut all = list_remotes(repo)?;
    if all.contains_key(name) {
        return Err(RemoteError::Exists(name.into()));
    }
    all.insert(name.into(), spec);
    save_remotes(repo, &all)
}

pub fn remove_remote(repo: &Repo, name: &str) -> Result<(), RemoteError> {
    let mut all = list_remotes(repo)?;
    if all.remove(name).is_none() {
        return Err(RemoteError::NoRemote(name.into()));
    }
    save_remotes(repo, &all)
}

enum Target {
    S3 { bucket: String, prefix: String },
    Local(PathBuf),
}

fn parse_url(url: &str) -> Result<Target, RemoteError> {
    let bad = |m: &str| RemoteError::Url { url: url.into(), message: m.into() };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket: use s3://BUCKET/PREFIX"));
        }
        return Ok(Target::S3 { bucket: bucket.into(), prefix: prefix.trim_matches('/').into() });
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    if url.contains("://") && !url.starts_with("file://") {
        return Err(bad("unsupported scheme: use s3://BUCKET/PREFIX or a folder path"));
    }
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(bad("a folder remote must be an absolute path"));
    }
    Ok(Target::Local(p))
}

/// An open remote.
pub struct Remote {
    pub name: String,
    store: Arc<dyn ObjectStore>,
    /// The same store, retrying a failed request twice at most, for the first request of a
    /// command ([`Remote::check_marker`]): a wrong endpoint or an untrusted certificate is
    /// reported at once instead of after object_store's ten retries.
    probe: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Runtime,
}

/// What is stored on a remote: every pack's index.
#[derive(Default)]
pub struct RemoteIndex {
    pub by_id: HashMap<ObjectId, (String, Location)>,
    pub packs: Vec<String>,
}

impl RemoteIndex {
    /// Add the entries of pack `name` (an object in several packs is found in the first).
    pub(crate) fn add(&mut self, name: &str, entries: &[(ObjectId, Location)]) {
        for (id, loc) in entries {
            self.by_id.entry(*id).or_insert_with(|| (name.to_string(), *loc));
        }
        self.packs.push(name.to_string());
    }
}

/// Build a pack in `dir` with `w` (given at least one object) and take it out of `dir`: its
/// name, pack bytes and index bytes, ready to upload.
pub(crate) fn take_pack(w: ObjectWriter, dir: &Path) -> Result<(String, Vec<u8>, Vec<u8>), RemoteError> {
    let name = w.pack.finish().map_err(StoreError::from)?.expect("objects were added");
    let take = |ext: &str| -> Result<Vec<u8>, RemoteError> {
        let file = dir.join(format!("{name}.{ext}"));
        let bytes = std::fs::read(&file).map_err(|source| RemoteError::Io { path: file.clone(), source })?;
        let _ = std::fs::remove_file(&file);
        Ok(bytes)
    };
    let (pack, idx) = (take("pack")?, take("idx")?);
    Ok((name, pack, idx))
}

impl Remote {
    /// Open a remote for reading and writing (a folder remote is created if missing).
    pub fn open(name: &str, spec: &RemoteSpec, creds: &Credentials) -> Result<Remote, RemoteError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|source| RemoteError::Io { path: PathBuf::from("(tokio runtime)"), source })?;
        let err = |m: String| RemoteError::Url { url: spec.url.clone(), message: m };
        let (store, probe, prefix): (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>, String) = match parse_url(&spec.url)? {
            Target::Local(p) => {
                std::fs::create_dir_all(&p).map_err(|source| RemoteError::Io { path: p.clone(), source })?;
                let local: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&p).map_err(|e| err(e.to_string()))?);
                (local.clone(), local, String::new())
            }
            Target::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket).with_virtual_hosted_style_request(false);
                if let Some(e) = creds.endpoint.clone().or_else(|| spec.endpoint.clone()) {
                    b = b.with_endpoint(e);
                }
                b = b.with_region(creds.region.clone().or_else(|| spec.region.clone()).unwrap_or_else(|| "us-east-1".into()));
                if creds.allow_http.unwrap_or(spec.allow_http) {
                    b = b.with_allow_http(true);
                }
                if let Some(k) = &creds.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = &creds.secret_access_key {
                    b = b.with_secret_access_key(s);
                }
                if let Some(t) = &creds.session_token {
                    b = b.with_token(t);
                }
                if let Some(ca) = creds.ca_cert.as_ref().or(spec.ca_cert.as_ref()) {
                    let pem = std::fs::read(ca).map_err(|source| RemoteError::Io { path: ca.clone(), source })?;
                    let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| RemoteError::Io { path: ca.clone(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not PEM certificates: {e}")) })?;
                    if certs.is_empty() {
                        return Err(RemoteError::Io { path: ca.clone(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)") });
                    }
                    b = b.with_client_options(certs.into_iter().fold(object_store::ClientOptions::default(), |o, c| o.with_root_certificate(c)));
                }
                let quick = object_store::RetryConfig {
                    backoff: object_store::BackoffConfig { init_backoff: std::time::Duration::from_millis(100), max_backoff: std::time::Duration::from_secs(1), base: 2.0 },
                    max_retries: 2,
                    retry_timeout: std::time::Duration::from_secs(10),
                };
                let probe = b.clone().with_retry(quick).build().map_err(|e| err(e.to_string()))?;
                (Arc::new(b.build().map_err(|e| err(e.to_string()))?), Arc::new(probe), prefix)
            }
        };
        Ok(Remote { name: name.into(), store, probe, prefix, rt })
    }

    fn key(&self, k: &str) -> StorePath {
        if self.prefix.is_empty() { StorePath::from(k) } else { StorePath::from(format!("{}/{k}", self.prefix)) }
    }

    fn store_err(&self, key: &str, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Store { remote: self.name.clone(), key: key.into(), message: e.to_string() }
    }

    /// An object store error with its causes (a TLS certificate problem is only in them).
    fn store_fail(&self, key: &str, e: &object_store::Error) -> RemoteError {
        self.store_err(key, crate::dicom::error_chain(e))
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        self.get_from(&self.store, key)
    }

    fn get_from(&self, store: &Arc<dyn ObjectStore>, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let k = self.key(key);
        self.rt.block_on(async {
            match store.get(&k).await {
                Ok(r) => r.bytes().await.map(|b| Some(b.to_vec())).map_err(|e| self.store_fail(key, &e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.store_fail(key, &e)),
            }
        })
    }

    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        let k = self.key(key);
        self.rt.block_on(async { self.store.put(&k, bytes.into()).await.map(|_| ()).map_err(|e| self.store_fail(key, &e)) })
    }

    pub(crate) fn delete(&self, key: &str) -> Result<(), RemoteError> {
        let k = self.key(key);
        self.rt.block_on(async {
            match self.store.delete(&k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.store_fail(key, &e)),
            }
        })
    }

    /// Keys (relative to the remote's root) below `prefix`.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, RemoteError> {
        let k = self.key(prefix);
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut s = self.store.list(Some(&k));
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| self.store_fail(prefix, &e))?;
                let key = m.location.to_string();
                out.push(key.strip_prefix(&strip).unwrap_or(&key).to_string());
            }
            out.sort();
            Ok(out)
        })
    }

    /// Upload packs concurrently, each pack before its index.
    pub(crate) fn put_packs(&self, packs: Vec<(String, Vec<u8>, Vec<u8>)>) -> Result<(), RemoteError> {
        self.rt.block_on(async {
            let jobs = packs.into_iter().map(|(name, pack, idx)| async move {
                let pk = format!("packs/{name}.pack");
                let ik = format!("packs/{name}.idx");
                self.store.put(&self.key(&pk), pack.into()).await.map_err(|e| self.store_fail(&pk, &e))?;
                self.store.put(&self.key(&ik), idx.into()).await.map_err(|e| self.store_fail(&ik, &e))?;
                Ok::<(), RemoteError>(())
            });
            futures::future::try_join_all(jobs).await.map(|_| ())
        })
    }

    /// Make sure this is a cohort remote (creating the marker on an empty one when `create`).
    /// The first request of a command: it gives up after two retries.
    pub fn check_marker(&self, create: bool) -> Result<(), RemoteError> {
        match self.get_from(&self.probe, "cohort-remote")? {
            Some(b) if b == REMOTE_MAGIC.as_bytes() => Ok(()),
            None if create => self.put("cohort-remote", REMOTE_MAGIC.as_bytes().to_vec()),
            _ => Err(RemoteError::NotARemote { remote: self.name.clone(), key: "cohort-remote".into() }),
        }
    }

    /// Every pack index on the remote (indexes are immutable: cached in `cache`).
    pub fn index(&self, cache: &Path) -> Result<RemoteIndex, RemoteError> {
        let mut out = RemoteIndex::default();
        self.each_pack_index(cache, |name, entries| out.add(&name, &entries))?;
        Ok(out)
    }

    /// Call `each` with the name and entries of every pack index on the remote, in name order.
    pub(crate) fn each_pack_index(&self, cache: &Path, mut each: impl FnMut(String, Vec<(ObjectId, Location)>)) -> Result<(), RemoteError> {
        std::fs::create_dir_all(cache).map_err(|source| RemoteError::Io { path: cache.into(), source })?;
        for key in self.list("packs/")? {
            let Some(name) = key.strip_prefix("packs/").and_then(|k| k.strip_suffix(".idx")) else { continue };
            each(name.to_string(), self.pack_index(cache, name)?);
        }
        Ok(())
    }

    /// The entries of the index of pack `name`, from `cache` or downloaded (and then cached).
    /// A cached index that does not parse (written by a process killed before cache writes
    /// became atomic) is downloaded again.
    fn pack_index(&self, cache: &Path, name: &str) -> Result<Vec<(ObjectId, Location)>, RemoteError> {
        let cached = cache.join(format!("{name}.idx"));
        if let Some(entries) = std::fs::read(&cached).ok().and_then(|b| crate::pack::parse_index(&b).ok()) {
            return Ok(entries);
        }
        let key = format!("packs/{name}.idx");
        let b = self.get(&key)?.ok_or_else(|| self.store_err(&key, "vanished while listing"))?;
        let entries = crate::pack::parse_index(&b).map_err(|e| self.store_err(&key, e))?;
        let _ = crate::fsutil::replace_atomic(&cached, &b);
        Ok(entries)
    }

    /// Read a ref: (sequence, commit).
    pub fn read_ref(&self, kind: &str, name: &str) -> Result<Option<(u64, ObjectId)>, RemoteError> {
        let key = format!("refs/{kind}/{name}/head");
        let Some(b) = self.get(&key)? else { return Ok(None) };
        let text = String::from_utf8_lossy(&b);
        let mut l = text.lines();
        let bad = || self.store_err(&key, "not a cohort ref");
        if l.next() != Some("cohort-ref 1") {
            return Err(bad());
        }
        let seq = l.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let id = l.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        Ok(Some((seq, id)))
    }

    /// Branches on the remote.
    pub fn branches(&self) -> Result<BTreeMap<String, ObjectId>, RemoteError> {
        self.refs("branches")
    }

    /// Tags on the remote.
    pub fn tags(&self) -> Result<BTreeMap<String, ObjectId>, RemoteError> {
        self.refs("tags")
    }

    /// The refs of one kind (`branches` or `tags`) on the remote.
    fn refs(&self, kind: &str) -> Result<BTreeMap<String, ObjectId>, RemoteError> {
        let prefix = format!("refs/{kind}/");
        let mut out = BTreeMap::new();
        for k in self.list(&prefix)? {
            if let Some(name) = k.strip_prefix(&prefix).and_then(|k| k.strip_suffix("/head")) {
                if let Some((_, id)) = self.read_ref(kind, name)? {
                    out.insert(name.to_string(), id);
                }
            }
        }
        Ok(out)
    }

    /// Compare-and-swap of a ref (see the module documentation).
    pub fn update_ref(&self, kind: &str, name: &str, expected: Option<(u64, ObjectId)>, new: ObjectId, now_us: i64) -> Result<(), RemoteError> {
        let seq = self.claim(kind, name, expected, new, now_us)?;
        self.put(&format!("refs/{kind}/{name}/head"), format!("cohort-ref 1\n{seq}\n{new}\n").into_bytes())
    }

    /// Delete a ref that is at `expected`, by the same claim protocol as an update (a
    /// deletion claims the next sequence number for the zero id), then its claims, so that
    /// a later push of the same name starts afresh.
    pub fn delete_ref(&self, kind: &str, name: &str, expected: (u64, ObjectId), now_us: i64) -> Result<(), RemoteError> {
        self.claim(kind, name, Some(expected), ObjectId([0; 32]), now_us)?;
        self.delete(&format!("refs/{kind}/{name}/head"))?;
        for k in self.list(&format!("refs/{kind}/{name}/claims/"))? {
            self.delete(&k)?;
        }
        Ok(())
    }

    /// Claim the sequence number after `expected` for `new`; the number, if no rival holds it
    /// and the head is still at `expected`.
    fn claim(&self, kind: &str, name: &str, expected: Option<(u64, ObjectId)>, new: ObjectId, now_us: i64) -> Result<u64, RemoteError> {
        let current = self.read_ref(kind, name)?;
        if current != expected {
            return Err(RemoteError::Contended { remote: self.name.clone(), name: name.into() });
        }
        let seq = expected.map_or(0, |e| e.0) + 1;
        let nonce = hex::encode(ObjectId::of(format!("{now_us} {new} {}", std::process::id()).as_bytes()).0)[..16].to_string();
        let dir = format!("refs/{kind}/{name}/claims/{seq:016}/");
        let mine = format!("{dir}{nonce}");
        self.put(&mine, format!("{now_us} {new}\n").into_bytes())?;
        let mut others = false;
        for k in self.list(&dir)? {
            if k == mine {
                continue;
            }
            // A claim for the same commit is this push tried before (interrupted), not a rival.
            let live = match self.get(&k)? {
                Some(b) => {
                    let text = String::from_utf8_lossy(&b).into_owned();
                    let mut f = text.split_whitespace();
                    let t = f.next().and_then(|t| t.parse::<i64>().ok());
                    let same = f.next() == Some(new.hex().as_str());
                    !same && t.is_some_and(|t| now_us - t < CLAIM_LEASE_US)
                }
                None => false,
            };
            others |= live;
        }
        if others || self.read_ref(kind, name)? != expected {
            let _ = self.delete(&mine);
            return Err(RemoteError::Contended { remote: self.name.clone(), name: name.into() });
        }
        Ok(seq)
    }
}

/// A push's or a gc's hold on a remote (see the module documentation); released when dropped.
pub(crate) struct Lock<'a> {
    remote: &'a Remote,
    key: String,
    /// The kind of lock this one excludes.
    other: &'static str,
    clock: &'a dyn Fn() -> i64,
}

/// What runs under a lock of `kind`, for errors.
fn lock_holder(kind: &str) -> &'static str {
    if kind == "gc" { "a remote gc" } else { "a push" }
}

impl Remote {
    /// Take a lock of `kind` ("push" or "gc"), unless a live lock of the other kind is held.
    pub(crate) fn lock<'a>(&'a self, kind: &'static str, clock: &'a dyn Fn() -> i64) -> Result<Lock<'a>, RemoteError> {
        let now = clock();
        let nonce = &ObjectId::of(format!("{kind} {now} {}", std::process::id()).as_bytes()).hex()[..16];
        let other = if kind == "gc" { "push" } else { "gc" };
        let lock = Lock { remote: self, key: format!("locks/{kind}/{nonce}"), other, clock };
        self.put(&lock.key, format!("{now}\n").into_bytes())?;
        // Dropped on failure: the lock is removed again.
        lock.check()?;
        Ok(lock)
    }

    /// Whether the lock at `key` was renewed within the lease (an unreadable one is not).
    pub(crate) fn lock_live(&self, key: &str, now_us: i64) -> Result<bool, RemoteError> {
        let t = self.get(key)?.and_then(|b| String::from_utf8_lossy(&b).trim().parse::<i64>().ok());
        Ok(t.is_some_and(|t| now_us - t < CLAIM_LEASE_US))
    }
}

impl Lock<'_> {
    /// Renew this lock, and fail if a live lock of the other kind is held.
    pub(crate) fn renew(&self) -> Result<(), RemoteError> {
        self.remote.put(&self.key, format!("{}\n", (self.clock)()).into_bytes())?;
        self.check()
    }

    fn check(&self) -> Result<(), RemoteError> {
        let now = (self.clock)();
        for k in self.remote.list(&format!("locks/{}/", self.other))? {
            if self.remote.lock_live(&k, now)? {
                return Err(RemoteError::Locked { remote: self.remote.name.clone(), what: lock_holder(self.other), key: k });
            }
        }
        Ok(())
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        let _ = self.remote.delete(&self.key);
    }
}

pub(crate) fn cache_dir(repo: &Repo, remote: &str) -> PathBuf {
    repo.store.dir.join("remote-cache").join(remote)
}

pub fn open_named(repo: &Repo, name: &str, creds: &Credentials) -> Result<(Remote, RemoteSpec), RemoteError> {
    let all = list_remotes(repo)?;
    let spec = all.get(name).cloned().ok_or_else(|| RemoteError::NoRemote(name.into()))?;
    Ok((Remote::open(name, &spec, creds)?, spec))
}

#[derive(Debug, Clone, Serialize)]
pub struct PushSummary {
    pub remote: String,
    /// "branch" or "tag"
    pub kind: &'static str,
    /// The branch or tag pushed.
    pub name: String,
    pub commit: ObjectId,
    pub previous: Option<ObjectId>,
    pub objects_sent: u64,
    pub bytes_sent: u64,
    pub packs_sent: usize,
    pub up_to_date: bool,
}

/// Is `ancestor` reachable from `tip` through parents (with local objects)?
pub fn is_ancestor(repo: &Repo, ancestor: ObjectId, tip: ObjectId) -> bool {
    let mut stack = vec![tip];
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        if id == ancestor {
            return true;
        }
        if !seen.insert(id) {
            continue;
        }
        if let Ok(c) = repo.store.read_commit(&id) {
            stack.extend(c.parents);
        }
    }
    false
}

/// Push a branch (and every object it reaches that the remote lacks).
pub fn push(repo: &Repo, remote_name: &str, branch: Option<&str>, creds: &Credentials, progress: &dyn Progress) -> Result<PushSummary, RemoteError> {
    let (remote, _) = open_named(repo, remote_name, creds)?;
    remote.check_marker(true)?;
    let view = repo.store.view()?;
    let branch = match branch {
        Some(b) => b.to_string(),
        None => match &view.head {
            Head::Branch(b) => b.clone(),
            Head::Detached(_) => return Err(RepoError::BadRevision { rev: "HEAD".into(), reason: "detached; name the branch to push".into() }.into()),
        },
    };
    let commit = *view.branches.get(&branch).ok_or_else(|| RepoError::NoSuchRef { what: "branch", name: branch.clone() })?;
    let expected = remote.read_ref("branches", &branch)?;
    if let Some((_, cur)) = expected {
        if cur == commit {
            return Ok(PushSummary { remote: remote_name.into(), kind: "branch", name: branch, commit, previous: Some(cur), objects_sent: 0, bytes_sent: 0, packs_sent: 0, up_to_date: true });
        }
        if !repo.store.contains(&cur) || !is_ancestor(repo, cur, commit) {
            let why = if repo.store.contains(&cur) { "is not an ancestor of your commit" } else { "you have not fetched" };
            return Err(RemoteError::FetchFirst { remote: remote_name.into(), what: "branch", name: branch, remote_commit: cur.short(), why: why.into() });
        }
    }
    let clock = || repo.ctx.now_us();
    let lock = remote.lock("push", &clock)?;
    let (objects_sent, bytes_sent, packs_sent) = send_reachable(repo, &remote, remote_name, commit, &format!("branch {branch}"), &lock, progress)?;
    remote.update_ref("branches", &branch, expected, commit, repo.ctx.now_us())?;
    drop(lock);
    Ok(PushSummary { remote: remote_name.into(), kind: "branch", name: branch, commit, previous: expected.map(|e| e.1), objects_sent, bytes_sent, packs_sent, up_to_date: false })
}

/// What deleting a branch or tag on a remote did.
#[derive(Debug, Clone, Serialize)]
pub struct DeleteSummary {
    pub remote: String,
    /// "branch" or "tag"
    pub kind: &'static str,
    pub name: String,
    /// Where it was.
    pub commit: ObjectId,
}

/// Delete a branch or tag on a remote (and, for a branch, its remote-tracking branch here).
/// The objects it reached stay in the remote's packs (other refs may reach them) until a
/// remote gc ([`crate::remotegc`]).
pub fn delete_remote_ref(repo: &Repo, remote_name: &str, kind: &'static str, name: &str, creds: &Credentials) -> Result<DeleteSummary, RemoteError> {
    let (remote, _) = open_named(repo, remote_name, creds)?;
    remote.check_marker(true)?;
    let dir = if kind == "tag" { "tags" } else { "branches" };
    let current = remote.read_ref(dir, name)?.ok_or_else(|| RemoteError::NoRemoteRef { remote: remote_name.into(), what: kind, name: name.into() })?;
    remote.delete_ref(dir, name, current, repo.ctx.now_us())?;
    if kind == "branch" {
        let tracking = format!("{TRACKING}/{remote_name}/{name}");
        let mut view = repo.store.view()?;
        if view.branches.remove(&tracking).is_some() {
            repo.publish(repo.store.writer()?, format!("push {remote_name}: deleted branch {name}"), view)?;
        }
    }
    Ok(DeleteSummary { remote: remote_name.into(), kind, name: name.into(), commit: current.1 })
}

/// Push a tag (and every object it reaches that the remote lacks). Tags never move: a tag of
/// the same name at another commit on the remote is an error, and nothing is sent.
pub fn push_tag(repo: &Repo, remote_name: &str, tag: &str, creds: &Credentials, progress: &dyn Progress) -> Result<PushSummary, RemoteError> {
    let (remote, _) = open_named(repo, remote_name, creds)?;
    remote.check_marker(true)?;
    let view = repo.store.view()?;
    let commit = *view.tags.get(tag).ok_or_else(|| RepoError::NoSuchRef { what: "tag", name: tag.into() })?;
    match remote.read_ref("tags", tag)? {
        Some((_, cur)) if cur == commit => {
            return Ok(PushSummary { remote: remote_name.into(), kind: "tag", name: tag.into(), commit, previous: Some(cur), objects_sent: 0, bytes_sent: 0, packs_sent: 0, up_to_date: true });
        }
        Some((_, cur)) => return Err(RemoteError::TagMoved { remote: remote_name.into(), name: tag.into(), remote_commit: cur.short(), local_commit: commit.short() }),
        None => {}
    }
    let clock = || repo.ctx.now_us();
    let lock = remote.lock("push", &clock)?;
    let (objects_sent, bytes_sent, packs_sent) = send_reachable(repo, &remote, remote_name, commit, &format!("tag {tag}"), &lock, progress)?;
    // Two pushes of the same new tag race like two pushes of a branch: one wins.
    remote.update_ref("tags", tag, None, commit, repo.ctx.now_us())?;
    drop(lock);
    Ok(PushSummary { remote: remote_name.into(), kind: "tag", name: tag.into(), commit, previous: None, objects_sent, bytes_sent, packs_sent, up_to_date: false })
}

/// Send every object `commit` reaches that the remote lacks, in packs; `what` names the ref
/// for errors. The push `lock` is renewed after each batch of packs. Returns (objects, stored
/// bytes, packs) sent.
fn send_reachable(repo: &Repo, remote: &Remote, remote_name: &str, commit: ObjectId, what: &str, lock: &Lock<'_>, progress: &dyn Progress) -> Result<(u64, u64, usize), RemoteError> {
    // What the ref reaches, minus what the remote has.
    let mut problems = Vec::new();
    let reach = crate::maint::reachable(&repo.store, &[(commit, what.to_string())], &mut problems);
    if let Some(p) = problems.first() {
        return Err(RemoteError::Missing { remote: format!("(local) {}", p.place), id: p.id });
    }
    let index = remote.index(&cache_dir(repo, remote_name))?;
    let mut missing: Vec<ObjectId> = reach.into_iter().filter(|id| !index.by_id.contains_key(id)).collect();
    // In the order they are stored, so that the members of a block are read one after another.
    missing.sort_by_cached_key(|id| repo.store.locate(id).map(|(p, l)| (p.name.clone(), l.offset, l.block_at, *id)));
    let total: u64 = missing.iter().filter_map(|id| repo.store.stored_len(id)).sum();
    progress.stage("pushing", Some(total), Unit::Bytes);
    let staging = tempfile::Builder::new().prefix("push-").tempdir_in(repo.store.tmp_dir()).map_err(|source| RemoteError::Io { path: repo.store.tmp_dir(), source })?;
    let (mut sent_objects, mut sent_bytes, mut packs) = (0u64, 0u64, 0usize);
    let mut chunk: Vec<ObjectId> = Vec::new();
    let mut chunk_bytes = 0u64;
    // Packs are built one at a time and uploaded UPLOADS_IN_FLIGHT at a time.
    // (name, pack bytes, index bytes, objects, stored bytes)
    type BuiltPack = (String, Vec<u8>, Vec<u8>, u64, u64);
    const UPLOADS_IN_FLIGHT: usize = 4;
    let mut ready: Vec<BuiltPack> = Vec::new();
    let upload = |ready: &mut Vec<BuiltPack>, sent_objects: &mut u64, sent_bytes: &mut u64, packs: &mut usize| -> Result<(), RemoteError> {
        let batch: Vec<_> = std::mem::take(ready);
        let stats: Vec<(u64, u64)> = batch.iter().map(|b| (b.3, b.4)).collect();
        remote.put_packs(batch.into_iter().map(|(n, p, i, _, _)| (n, p, i)).collect())?;
        lock.renew()?;
        for (objects, bytes) in stats {
            *sent_objects += objects;
            *sent_bytes += bytes;
            *packs += 1;
            progress.inc(bytes);
        }
        Ok(())
    };
    let build = |chunk: &mut Vec<ObjectId>, chunk_bytes: &mut u64, ready: &mut Vec<BuiltPack>| -> Result<(), RemoteError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut w = ObjectWriter { pack: crate::pack::PackWriter::create(staging.path(), &repo.store.tmp_dir()).map_err(StoreError::from)? };
        for id in chunk.iter() {
            repo.store.copy_object_to(id, &mut w)?;
        }
        let (name, pb, ib) = take_pack(w, staging.path())?;
        ready.push((name, pb, ib, chunk.len() as u64, *chunk_bytes));
        chunk.clear();
        *chunk_bytes = 0;
        Ok(())
    };
    for id in missing {
        let n = repo.store.stored_len(&id).unwrap_or(0);
        if chunk_bytes + n > PACK_LIMIT && !chunk.is_empty() {
            build(&mut chunk, &mut chunk_bytes, &mut ready)?;
            if ready.len() >= UPLOADS_IN_FLIGHT {
                upload(&mut ready, &mut sent_objects, &mut sent_bytes, &mut packs)?;
            }
        }
        chunk.push(id);
        chunk_bytes += n;
    }
    build(&mut chunk, &mut chunk_bytes, &mut ready)?;
    upload(&mut ready, &mut sent_objects, &mut sent_bytes, &mut packs)?;
    progress.finish_stage();
    Ok((sent_objects, sent_bytes, packs))
}

/// Download `ids` from the remote into `w`, checking each against its id first.
fn download(repo: &Repo, remote: &Remote, index: &RemoteIndex, ids: &[ObjectId], w: &mut ObjectWriter, progress: &dyn Progress) -> Result<u64, RemoteError> {
    download_kept(repo, remote, index, ids, w, None, progress)
}

/// [`download`], and with `keep` the raw bytes of every object downloaded go there too (for
/// a walk that must read objects before their pack is finished).
fn download_kept(
    repo: &Repo,
    remote: &Remote,
    index: &RemoteIndex,
    ids: &[ObjectId],
    w: &mut ObjectWriter,
    mut keep: Option<&mut HashMap<ObjectId, Vec<u8>>>,
    progress: &dyn Progress,
) -> Result<u64, RemoteError> {
    let keeping = keep.is_some();
    let mut by_pack: BTreeMap<&str, Vec<(ObjectId, Location)>> = BTreeMap::new();
    for id in ids {
        if repo.store.contains(id) || w.contains(id) {
            continue;
        }
        let (pack, loc) = index.by_id.get(id).ok_or_else(|| RemoteError::Missing { remote: remote.name.clone(), id: *id })?;
        by_pack.entry(pack.as_str()).or_default().push((*id, *loc));
    }
    // Batches of ranges, fetched four at a time, then checked in parallel. The members of one
    // block share its range: it is fetched and decompressed once for all of them.
    type Range = Vec<(ObjectId, Location)>;
    let mut batches: Vec<(&str, Vec<Range>)> = Vec::new();
    for (pack, mut entries) in by_pack {
        entries.sort_by_key(|e| e.1.offset);
        let ranges: Vec<Range> = entries.chunk_by(|a, b| a.1.offset == b.1.offset).map(|r| r.to_vec()).collect();
        for b in ranges.chunks(128) {
            batches.push((pack, b.to_vec()));
        }
    }
    let mut bytes = 0;
    for group in batches.chunks(4) {
        let fetched: Vec<Vec<Vec<u8>>> = remote.rt.block_on(async {
            let jobs = group.iter().map(|(pack, batch)| {
                let ranges: Vec<std::ops::Range<u64>> = batch.iter().map(|r| r[0].1.offset..r[0].1.offset + r[0].1.stored_len).collect();
                let key = format!("packs/{pack}.pack");
                async move {
                    remote.store.get_ranges(&remote.key(&key), &ranges).await.map(|v| v.into_iter().map(|b| b.to_vec()).collect::<Vec<_>>()).map_err(|e| remote.store_fail(&key, &e))
                }
            });
            futures::future::try_join_all(jobs).await
        })?;
        for ((pack, batch), data) in group.iter().zip(fetched) {
            use rayon::prelude::*;
            let corrupt = |id: &ObjectId, reason: String| RemoteError::Corrupt { remote: remote.name.clone(), id: *id, pack: pack.to_string(), reason };
            // Block members are checked and kept raw (they go into a block of this store's
            // pack); other objects, one to a range, are checked and kept as stored (and, when
            // the caller keeps them, raw too).
            type Checked = (Option<Vec<Vec<u8>>>, Option<Vec<u8>>);
            let checked: Vec<Checked> = batch
                .par_iter()
                .zip(data.par_iter())
                .map(|(range, stored)| {
                    let (id, loc) = &range[0];
                    if stored.len() as u64 != loc.stored_len {
                        return Err(corrupt(id, "truncated".into()));
                    }
                    if loc.codec != Codec::Block {
                        if range.len() > 1 {
                            return Err(corrupt(id, format!("{} objects at one offset in the remote's index", range.len())));
                        }
                        return if keeping {
                            crate::pack::stored_verified(*id, loc, stored).map(|raw| (None, Some(raw)))
                        } else {
                            crate::pack::check_stored(*id, loc, stored).map(|()| (None, None))
                        }
                        .map_err(|e| corrupt(id, e));
                    }
                    let block = crate::pack::decode_block(loc, stored).map_err(|e| corrupt(id, e))?;
                    range.iter().map(|(id, loc)| crate::pack::member_verified(*id, loc, &block).map_err(|e| corrupt(id, e))).collect::<Result<_, _>>().map(|m| (Some(m), None))
                })
                .collect::<Result<_, _>>()?;
            for ((range, stored), (members, raw)) in batch.iter().zip(data).zip(checked) {
                let encoded: Vec<(Location, crate::pack::Encoded)> = match members {
                    None => {
                        let (id, loc) = range[0];
                        if let (Some(keep), Some(raw)) = (keep.as_deref_mut(), raw) {
                            keep.insert(id, raw);
                        }
                        vec![(loc, crate::pack::Encoded { id, codec: loc.codec, raw_len: loc.raw_len, data: stored })]
                    }
                    Some(raws) => range
                        .iter()
                        .zip(raws)
                        .map(|((id, loc), raw)| {
                            let e = crate::pack::encode(*id, &raw, crate::pack::Hint::Generic);
                            if let Some(keep) = keep.as_deref_mut() {
                                keep.insert(*id, raw);
                            }
                            (*loc, e)
                        })
                        .collect(),
                };
                for (loc, e) in encoded {
                    w.add_encoded(e)?;
                    bytes += loc.stored_share();
                    progress.inc(loc.stored_share());
                }
            }
        }
    }
    Ok(bytes)
}

#[derive(Debug, Clone, Serialize)]
pub struct FetchSummary {
    pub remote: String,
    pub branches: BTreeMap<String, ObjectId>,
    /// Tags of the remote this store did not have, now created here.
    pub new_tags: BTreeMap<String, ObjectId>,
    /// Tags of the remote whose name is taken here by another commit: left as they are
    /// (tags never move); the remote's commit.
    pub tag_conflicts: BTreeMap<String, ObjectId>,
    pub objects: u64,
    pub bytes: u64,
}

/// Which objects a partial clone wants: everything but the file contents of DICOM instances
/// outside the chosen split part (and their non-DICOM neighbours).
pub struct PartialSpec {
    pub split: String,
    pub part: String,
}

/// The header and pixel objects of the DICOM instances in one part of a split of `commit`
/// (whose trees, records and split must be present).
fn part_objects(repo: &Repo, commit: ObjectId, spec: &PartialSpec) -> Result<Vec<ObjectId>, RemoteError> {
    let (_, split, ds) = crate::split::load(repo, &commit.hex(), &spec.split)?;
    let parts = crate::split::parts_of(&ds, &split);
    let mut out = Vec::new();
    for (it, part) in ds.items.iter().zip(&parts) {
        if part.as_deref() == Some(spec.part.as_str()) && it.entry.kind == EntryKind::Dicom {
            let d = repo.store.read_dicom(&it.entry.id)?;
            out.push(d.header);
            out.extend(d.pixel);
        }
    }
    Ok(out)
}

/// Download the history of `tips` (commit objects) and the metadata of each tip: trees, DICOM
/// records, catalog, annotation sets, masks and splits; not the files' contents.
///
/// What is downloaded lands in one pack, finished at the end: a fetch killed half-way stores
/// none of it. So a metadata object in this store always comes with everything it reaches
/// (commits their ancestors, trees their subtrees and records, catalogs their annotation sets,
/// masks and splits), and the walk stops at objects already here: a fetch costs what is new,
/// not the size of the history or of the dataset. Each object is read as the kind its parent
/// says it is (a DICOM record is never tried as a tree). Returns (objects, bytes).
pub(crate) fn fetch_metadata(repo: &Repo, remote: &Remote, index: &RemoteIndex, tips: &[ObjectId], w: &mut ObjectWriter, progress: &dyn Progress) -> Result<(u64, u64), RemoteError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Commit,
        Tree,
        Catalog,
        Annotations,
        /// Read by nobody here: DICOM records, masks, splits.
        Leaf,
    }
    progress.stage("fetching metadata", None, Unit::Objects);
    let (mut objects, mut bytes) = (0u64, 0u64);
    let mut seen = HashSet::new();
    let mut level: Vec<(ObjectId, Kind)> = tips.iter().map(|t| (*t, Kind::Commit)).collect();
    let mut tip_commits = Vec::new();
    while !level.is_empty() {
        // Objects already here are complete; only new ones are downloaded and read.
        let need: Vec<(ObjectId, Kind)> = level.into_iter().filter(|(id, _)| seen.insert(*id) && !repo.store.contains(id) && !w.contains(id)).collect();
        // Leaves (most of the objects: a record per instance) are stored, not kept to be read.
        let (leaves, read): (Vec<_>, Vec<_>) = need.into_iter().partition(|(_, kind)| *kind == Kind::Leaf);
        let leaves: Vec<ObjectId> = leaves.into_iter().map(|(id, _)| id).collect();
        bytes += download(repo, remote, index, &leaves, w, progress)?;
        let ids: Vec<ObjectId> = read.iter().map(|(id, _)| *id).collect();
        let mut raw = HashMap::new();
        bytes += download_kept(repo, remote, index, &ids, w, Some(&mut raw), progress)?;
        objects += (leaves.len() + ids.len()) as u64;
        let mut next = Vec::new();
        for (id, kind) in read {
            let bytes = raw.get(&id).ok_or_else(|| RemoteError::Missing { remote: remote.name.clone(), id })?;
            let pack = || index.by_id.get(&id).map(|(p, _)| p.clone()).unwrap_or_default();
            let corrupt = |what: &str, e: crate::object::ObjectError| RemoteError::Corrupt { remote: remote.name.clone(), id, pack: pack(), reason: format!("not a readable {what}: {e}") };
            match kind {
                Kind::Commit => {
                    let c = crate::object::Commit::from_bytes(id, bytes).map_err(|e| corrupt("commit", e))?;
                    next.extend(c.parents.iter().map(|p| (*p, Kind::Commit)));
                    if tips.contains(&id) {
                        tip_commits.push(c);
                    }
                }
                Kind::Tree => {
                    let t = crate::object::Tree::decode(id, bytes).map_err(|e| corrupt("tree", e))?;
                    for e in t.entries {
                        match e.kind {
                            EntryKind::Tree => next.push((e.id, Kind::Tree)),
                            EntryKind::Dicom => next.push((e.id, Kind::Leaf)),
                            _ => {}
                        }
                    }
                }
                Kind::Catalog => {
                    let k = crate::catalog::Catalog::from_bytes(id, bytes).map_err(|e| corrupt("catalog", e))?;
                    next.extend(k.annotations.values().map(|a| (*a, Kind::Annotations)));
                    next.extend(k.splits.values().map(|s| (*s, Kind::Leaf)));
                }
                Kind::Annotations => {
                    let a = crate::catalog::AnnotationSet::from_bytes(id, bytes).map_err(|e| corrupt("annotation set", e))?;
                    next.extend(a.segmentations.iter().map(|s| (s.mask, Kind::Leaf)));
                }
                Kind::Leaf => {}
            }
        }
        // The tree and catalog of each new tip (a tip already here has its own).
        for c in tip_commits.drain(..) {
            next.push((c.tree, Kind::Tree));
            next.extend(c.catalog.map(|k| (k, Kind::Catalog)));
        }
        level = next;
    }
    repo.store.finish_pack(std::mem::replace(w, repo.store.writer()?))?;
    progress.finish_stage();
    Ok((objects, bytes))
}

/// Fetch from a remote: objects, and remote-tracking branches `remotes/<remote>/<branch>`.
/// With `partial`, only the commit objects of history, the metadata of `rev` (trees, DICOM
/// records, catalog) and the file contents of the chosen split part come along.
pub fn fetch(repo: &Repo, remote_name: &str, creds: &Credentials, partial: Option<(&str, &PartialSpec)>, progress: &dyn Progress) -> Result<FetchSummary, RemoteError> {
    let (remote, spec) = open_named(repo, remote_name, creds)?;
    remote.check_marker(false)?;
    let branches = remote.branches()?;
    let tags = remote.tags()?;
    let index = remote.index(&cache_dir(repo, remote_name))?;
    let mut w = repo.store.writer()?;
    let mut objects = 0u64;
    let mut bytes = 0u64;
    match partial {
        // A partial clone stays partial: history and metadata of every branch and tag, file
        // contents on demand (checkout, export).
        None if spec.promisor => {
            let tips: Vec<ObjectId> = branches.values().chain(tags.values()).copied().collect();
            (objects, bytes) = fetch_metadata(repo, &remote, &index, &tips, &mut w, progress)?;
        }
        None => {
            let mut ids: Vec<ObjectId> = index.by_id.keys().copied().filter(|id| !repo.store.contains(id)).collect();
            ids.sort();
            let total: u64 = ids.iter().map(|id| index.by_id[id].1.stored_share()).sum();
            progress.stage("fetching", Some(total), Unit::Bytes);
            bytes += download(repo, &remote, &index, &ids, &mut w, progress)?;
            objects += ids.len() as u64;
            progress.finish_stage();
        }
        Some((rev, spec)) => {
            let commit = branches.get(rev).copied().or_else(|| rev.parse().ok()).ok_or_else(|| RemoteError::NoRemoteBranch { remote: remote_name.into(), name: rev.into() })?;
            (objects, bytes) = fetch_metadata(repo, &remote, &index, &[commit], &mut w, progress)?;
            // The contents of the chosen part.
            let mut want = part_objects(repo, commit, spec)?;
            want.sort();
            want.dedup();
            let total: u64 = want.iter().filter_map(|id| index.by_id.get(id)).map(|(_, l)| l.stored_share()).sum();
            progress.stage("fetching images", Some(total), Unit::Bytes);
            bytes += download(repo, &remote, &index, &want, &mut w, progress)?;
            objects += want.len() as u64;
            progress.finish_stage();
        }
    }
    let mut view = repo.store.view()?;
    view.branches.retain(|k, _| !k.starts_with(&format!("{TRACKING}/{remote_name}/")));
    for (b, id) in &branches {
        if repo.store.contains(id) || w.contains(id) {
            view.branches.insert(format!("{TRACKING}/{remote_name}/{b}"), *id);
        }
    }
    // Tags are created as they are on the remote, never moved (a partial fetch skips those
    // whose commit it did not bring).
    let (mut new_tags, mut tag_conflicts) = (BTreeMap::new(), BTreeMap::new());
    for (t, id) in tags {
        match view.tags.get(&t) {
            Some(local) if *local == id => {}
            Some(_) => {
                tag_conflicts.insert(t, id);
            }
            None if repo.store.contains(&id) || w.contains(&id) => {
                view.tags.insert(t.clone(), id);
                new_tags.insert(t, id);
            }
            None => {}
        }
    }
    repo.publish(w, format!("fetch {remote_name}: {} branch(es), {} new tag(s), {objects} object(s)", branches.len(), new_tags.len()), view)?;
    Ok(FetchSummary { remote: remote_name.into(), branches, new_tags, tag_conflicts, objects, bytes })
}

/// Fetch the objects a commit's files need that this (partial) store lacks, from its promisor
/// remote: every file of the commit, or with `part` only the instances of that split part.
/// Returns how many objects were fetched.
pub fn fill_missing(repo: &Repo, rev: &str, part: Option<&PartialSpec>, creds: &Credentials, progress: &dyn Progress) -> Result<u64, RemoteError> {
    fill(repo, rev, part.map_or(Scope::All, Scope::Part), creds, progress)
}

/// [`fill_missing`] for the files at and under `paths` of the commit only (`cat`, `restore`,
/// `export REV OUT PATH...`). A path the commit lacks is left to the command to report.
pub fn fill_missing_paths(repo: &Repo, rev: &str, paths: &[String], creds: &Credentials, progress: &dyn Progress) -> Result<u64, RemoteError> {
    fill(repo, rev, Scope::Paths(paths), creds, progress)
}

/// [`fill_missing`] for the headers only of the DICOM instances at and under `paths` (all
/// when empty): what `find` reads.
pub fn fill_missing_headers(repo: &Repo, rev: &str, paths: &[String], creds: &Credentials, progress: &dyn Progress) -> Result<u64, RemoteError> {
    fill(repo, rev, Scope::Headers(paths), creds, progress)
}

/// Which files of a commit a partial clone fetches.
enum Scope<'a> {
    All,
    Part(&'a PartialSpec),
    Paths(&'a [String]),
    Headers(&'a [String]),
}

fn fill(repo: &Repo, rev: &str, scope: Scope, creds: &Credentials, progress: &dyn Progress) -> Result<u64, RemoteError> {
    let promisor = list_remotes(repo)?.into_iter().find(|(_, s)| s.promisor);
    let Some((name, spec)) = promisor else { return Ok(0) };
    let id = repo.resolve(rev)?;
    let c = repo.store.read_commit(&id)?;
    let wanted = |repo: &Repo| -> Result<Vec<ObjectId>, RemoteError> {
        let mut missing = Vec::new();
        match scope {
            Scope::All => {
                crate::maint::reachable_from_trees(&repo.store, &[(c.tree, format!("tree of {rev}"))], &mut missing);
            }
            Scope::Part(spec) => return Ok(part_objects(repo, id, spec)?.into_iter().filter(|i| !repo.store.contains(i)).collect()),
            Scope::Paths(paths) => {
                let src = crate::diff::TreeSource { store: &repo.store, extra: None };
                let (mut trees, mut records) = (Vec::new(), Vec::new());
                for p in paths {
                    match crate::pathsel::entry_at(&src, c.tree, p)? {
                        Some(e) if e.kind == EntryKind::Tree => trees.push((e.id, p.clone())),
                        Some(e) if e.kind == EntryKind::Dicom => records.push((e.id, p.clone())),
                        Some(e) if !repo.store.contains(&e.id) => missing.push(crate::maint::Problem { id: e.id, place: p.clone(), problem: "missing".into() }),
                        _ => {}
                    }
                }
                crate::maint::reachable_from_trees(&repo.store, &trees, &mut missing);
                crate::maint::reachable_from_records(&repo.store, &records, &mut missing);
            }
            Scope::Headers(paths) => {
                let src = crate::diff::TreeSource { store: &repo.store, extra: None };
                let everything = [String::new()];
                let mut headers = Vec::new();
                for p in if paths.is_empty() { &everything[..] } else { paths } {
                    let files = match crate::pathsel::files_under(&src, c.tree, std::slice::from_ref(p), rev) {
                        Ok(f) => f,
                        Err(crate::pathsel::PathSelError::NotInRevision { .. }) => continue,
                        Err(e) => return Err(RemoteError::Path(e)),
                    };
                    for (_, e) in files.into_iter().filter(|(_, e)| e.kind == EntryKind::Dicom) {
                        let h = repo.store.read_dicom(&e.id)?.header;
                        if !repo.store.contains(&h) {
                            headers.push(h);
                        }
                    }
                }
                return Ok(headers);
            }
        }
        Ok(missing.into_iter().filter(|p| p.problem == "missing").map(|p| p.id).collect())
    };
    let mut ids = wanted(repo)?;
    if ids.is_empty() {
        return Ok(0);
    }
    let remote = Remote::open(&name, &spec, creds)?;
    remote.check_marker(false)?;
    let index = remote.index(&cache_dir(repo, &name))?;
    let mut total = 0u64;
    // Records reveal their header and pixel objects only once fetched: repeat until complete.
    loop {
        ids.sort();
        ids.dedup();
        let mut w = repo.store.writer()?;
        progress.stage("fetching missing objects", None, Unit::Bytes);
        download(repo, &remote, &index, &ids, &mut w, progress)?;
        progress.finish_stage();
        total += ids.len() as u64;
        repo.store.finish_pack(w)?;
        let next = wanted(repo)?;
        if next.is_empty() || next.iter().all(|i| ids.contains(i)) {
            break;
        }
        ids = next;
    }
    Ok(total)
}
