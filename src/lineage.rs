//! Lineage: the history of one image or one annotation set, across commits and across
//! de-identification (`cohort blame`), and the whole history as a W3C PROV document
//! (`cohort prov`).
//!
//! A de-identified instance shares its pixel object with its identified source (unless its
//! pixels were cleaned), so lineage crosses a `deid` commit by finding, in the source commit,
//! the instance with the same pixel data; no identified path is stored on the de-identified
//! side.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::annotate::diff_catalogs;
use crate::catalog::{Catalog, Target};
use crate::dataset::{Dataset, Item};
use crate::id::ObjectId;
use crate::object::Commit;
use crate::repo::{format_time, Repo, RepoError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error("{target:?} is neither a path, a SOP Instance UID nor an annotation set (TASK/READER) of commit {commit}")]
    NotFound { target: String, commit: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One step in the life of an image or annotation set.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub commit: ObjectId,
    pub time: String,
    /// The commit's activity kind.
    pub kind: String,
    pub user: String,
    pub message: String,
    /// imported, modified, merged, de-identified, annotated, placed-in-split, new-version,
    /// consensus, ...
    pub event: String,
    pub summary: String,
    /// The image's path in that commit.
    pub path: Option<String>,
    pub details: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlameReport {
    pub target: String,
    pub commit: ObjectId,
    /// image or annotation
    pub subject: &'static str,
    pub events: Vec<Event>,
    /// Where the walk stopped early, and why (e.g. a source commit not in this store).
    pub stopped: Option<String>,
}

/// The commit a deid commit was made from (None for other commits).
pub fn source_commit(c: &Commit) -> Option<ObjectId> {
    if c.activity.kind != "deid" {
        return None;
    }
    c.activity.inputs.iter().find(|r| r.role == "source-commit").and_then(|r| r.value.parse().ok())
}

fn event(id: ObjectId, c: &Commit, what: &str, summary: String, path: Option<&str>) -> Event {
    Event {
        commit: id,
        time: format_time(c.time_us),
        kind: c.activity.kind.clone(),
        user: c.activity.agent.user.clone(),
        message: c.message.lines().next().unwrap_or("").to_string(),
        event: what.into(),
        summary,
        path: path.map(str::to_string),
        details: BTreeMap::new(),
    }
}

fn covers(t: &Target, it: &Item) -> bool {
    match t {
        Target::Instance(u) => it.sop() == Some(u),
        Target::Series(u) => it.series() == Some(u),
        Target::Study(u) => it.study() == Some(u),
        Target::Path(p) => it.path == *p,
    }
}

fn catalog_of(repo: &Repo, c: Option<&Commit>) -> Result<Catalog, StoreError> {
    match c {
        Some(c) => repo.store.catalog_of(c),
        None => Ok(Catalog::default()),
    }
}

/// Annotation and split events of commit `c` (against its parent) that concern `it`.
fn catalog_events(repo: &Repo, id: ObjectId, c: &Commit, parent: Option<&Commit>, it: &Item, out: &mut Vec<Event>) -> Result<(), StoreError> {
    if parent.map(|p| p.catalog) == Some(c.catalog) || (parent.is_none() && c.catalog.is_none()) {
        return Ok(());
    }
    let (old, new) = (catalog_of(repo, parent)?, repo.store.catalog_of(c)?);
    let d = diff_catalogs(&repo.store, &old, &new)?;
    let hits_of = |set: &crate::catalog::AnnotationSet| -> Vec<String> {
        let mut hits: Vec<String> = set.labels.iter().filter(|l| covers(&l.target, it)).map(|l| format!("label {} ({})", l.label, l.target.level())).collect();
        hits.extend(set.boxes.iter().filter(|b| it.sop() == Some(b.sop_uid.as_str())).map(|b| format!("box {} at [{}, {}, {}, {}]", b.label, b.x, b.y, b.w, b.h)));
        hits.extend(set.segmentations.iter().filter(|g| it.series() == Some(g.series_uid.as_str())).map(|g| {
            let names: Vec<&str> = g.segments.values().map(String::as_str).collect();
            format!("segmentation of its series ({}, mask {})", names.join(", "), g.mask.short())
        }));
        hits
    };
    for sd in &d.annotations {
        let Some(sid) = sd.new else { continue };
        let set = repo.store.read_annotations(&sid)?;
        let hits = hits_of(&set);
        // Only versions that changed what this image has.
        let before = match sd.old {
            Some(o) => hits_of(&repo.store.read_annotations(&o)?),
            None => vec![],
        };
        if hits.is_empty() || hits == before {
            continue;
        }
        let what = if set.derivation.is_some() { "consensus" } else { "annotated" };
        let mut e = event(id, c, what, format!("task {} by {} ({}): {}", sd.task, sd.reader, set.source.name(), hits.join("; ")), Some(&it.path));
        e.details.insert("annotation-set".into(), sid.hex());
        e.details.insert("reader".into(), sd.reader.clone());
        e.details.insert("source".into(), set.source.name().into());
        if let Some(dv) = &set.derivation {
            e.details.insert("method".into(), dv.method.clone());
        }
        out.push(e);
    }
    for sp in &d.splits {
        let Some(sid) = new.splits.get(&sp.name) else { continue };
        let split = repo.store.read_split(sid)?;
        let Some(group) = crate::split::group_of(split.group, it) else { continue };
        let Some(a) = split.assignments.get(&group) else { continue };
        let before = old.splits.get(&sp.name).map(|o| repo.store.read_split(o)).transpose()?.and_then(|o| o.assignments.get(&group).map(|x| x.part.clone()));
        if before.as_deref() == Some(a.part.as_str()) {
            continue;
        }
        let mut e = event(id, c, "placed-in-split", format!("split {} part {} ({} {group})", sp.name, a.part, split.group.name()), Some(&it.path));
        e.details.insert("split".into(), sid.hex());
        out.push(e);
    }
    Ok(())
}

/// The lineage of an image (path or SOP Instance UID) or annotation set (TASK/READER).
pub fn blame(repo: &Repo, target: &str, rev: &str) -> Result<BlameReport, LineageError> {
    let start = repo.resolve(rev)?;
    let c0 = repo.store.read_commit(&start)?;
    let ds = Dataset::load(&repo.store, start, &c0.tree)?;
    let idx = ds.by_path.get(target.trim_start_matches("./")).or_else(|| ds.by_sop.get(target)).copied();
    if let Some(i) = idx {
        return image_lineage(repo, target, start, ds.items[i].clone());
    }
    if let Some((task, reader)) = target.split_once('/') {
        let cat = repo.store.catalog_of(&c0)?;
        if cat.annotations.contains_key(&(task.to_string(), reader.to_string())) {
            return annotation_lineage(repo, target, start, task, reader);
        }
    }
    Err(LineageError::NotFound { target: target.into(), commit: start.short() })
}

fn image_lineage(repo: &Repo, target: &str, start: ObjectId, mut it: Item) -> Result<BlameReport, LineageError> {
    let mut events = Vec::new();
    let mut cur = Some(start);
    let mut stopped = None;
    let mut datasets: HashMap<ObjectId, Dataset> = HashMap::new();
    while let Some(id) = cur {
        let c = repo.store.read_commit(&id)?;
        if let Some(src) = source_commit(&c) {
            // De-identified from `src`: continue with the source instance (same pixel object).
            let mut e = event(id, &c, "de-identified", String::new(), Some(&it.path));
            for k in ["profile-revision", "options", "key-fingerprint"] {
                if let Some(v) = c.activity.parameters.get(k) {
                    e.details.insert(k.into(), v.clone());
                }
            }
            e.summary = format!(
                "PS3.15 Annex E rev {} options [{}]",
                e.details.get("profile-revision").cloned().unwrap_or_default(),
                e.details.get("options").cloned().unwrap_or_default()
            );
            // (Its annotations and splits are the source's, mapped: their events are found
            // in the source history.)
            if !repo.store.contains(&src) {
                events.push(e);
                stopped = Some(format!("source commit {} is not in this store", src.short()));
                break;
            }
            if let std::collections::hash_map::Entry::Vacant(v) = datasets.entry(src) {
                let sc = repo.store.read_commit(&src)?;
                v.insert(Dataset::load(&repo.store, src, &sc.tree)?);
            }
            let sds = &datasets[&src];
            let found = it.pixel.and_then(|px| sds.items.iter().find(|s| s.pixel == Some(px))).cloned();
            match found {
                Some(s) => {
                    e.details.insert("source-path".into(), s.path.clone());
                    events.push(e);
                    it = s;
                    cur = Some(src);
                }
                None => {
                    events.push(e);
                    stopped = Some(format!("no instance of source commit {} has the same pixel data (cleaned pixels?)", src.short()));
                    break;
                }
            }
            continue;
        }
        let src = crate::diff::TreeSource { store: &repo.store, extra: None };
        let (parent_id, parent) = follow_parent(repo, &c, |p| Ok(crate::pathsel::entry_at(&src, p.tree, &it.path)?.map(|e| e.id) == Some(it.entry.id)))?.unzip();
        catalog_events(repo, id, &c, parent.as_ref(), &it, &mut events)?;
        let before = match &parent {
            Some(p) => crate::pathsel::entry_at(&src, p.tree, &it.path)?,
            None => None,
        };
        match before {
            None => {
                let what = if c.activity.kind == "commit" { "imported".to_string() } else { c.activity.kind.clone() };
                let mut e = event(id, &c, &what, format!("added as {}", it.path), Some(&it.path));
                e.details.insert("object".into(), it.entry.id.hex());
                events.push(e);
                break;
            }
            Some(b) if b.id != it.entry.id => {
                let mut summary = "changed".to_string();
                if b.kind == crate::object::EntryKind::Dicom && it.entry.kind == crate::object::EntryKind::Dicom {
                    let (x, y) = (repo.store.read_dicom(&b.id)?, repo.store.read_dicom(&it.entry.id)?);
                    let mut what = Vec::new();
                    if x.header != y.header {
                        if let (Ok(hx), Ok(hy)) = (repo.store.read(&x.header), repo.store.read(&y.header)) {
                            if let Ok(ch) = crate::dicom::diff_headers(&hx, &hy) {
                                let kws: BTreeSet<&str> = ch.iter().map(|a| a.keyword.as_str()).collect();
                                what.push(format!("header: {}", kws.into_iter().collect::<Vec<_>>().join(", ")));
                            }
                        }
                    }
                    if x.pixel != y.pixel {
                        what.push("pixel data".into());
                    }
                    summary = format!("changed {}", what.join("; "));
                }
                // At a merge, a version that no parent holds was merged here (attribute by
                // attribute, or line by line): what changed came from the other parent(s).
                let merged = c.parents.len() > 1;
                let others: Vec<String> = c.parents.iter().filter(|p| Some(**p) != parent_id).map(ObjectId::short).collect();
                let (what, summary) = if merged { ("merged", format!("{summary}, from {} (the other side of the merge)", others.join(", "))) } else { ("modified", summary) };
                let mut e = event(id, &c, what, summary, Some(&it.path));
                e.details.insert("object".into(), it.entry.id.hex());
                e.details.insert("previous-object".into(), b.id.hex());
                if merged {
                    e.details.insert("other-parents".into(), others.join(" "));
                    if let Some(n) = c.notes.iter().find(|n| n.path == it.path) {
                        e.details.insert("merge-note".into(), n.note.clone());
                    }
                }
                events.push(e);
                if let Ok(d) = repo.store.read_dicom(&b.id) {
                    it.pixel = d.pixel;
                    it.info = Some(d.info);
                }
                it.entry = b;
            }
            Some(_) => {}
        }
        cur = parent_id;
    }
    Ok(BlameReport { target: target.into(), commit: start, subject: "image", events, stopped })
}

/// The parent whose history a lineage follows, and its commit: the first, except at a merge,
/// where it is the first parent holding the subject as the merge commit does (the side it
/// came from). Each parent is read once.
fn follow_parent(repo: &Repo, c: &Commit, same: impl Fn(&Commit) -> Result<bool, LineageError>) -> Result<Option<(ObjectId, Commit)>, LineageError> {
    let mut first = None;
    for (k, p) in c.parents.iter().enumerate() {
        let pc = repo.store.read_commit(p)?;
        if c.parents.len() == 1 || same(&pc)? {
            return Ok(Some((*p, pc)));
        }
        if k == 0 {
            first = Some((*p, pc));
        }
    }
    Ok(first)
}

fn annotation_lineage(repo: &Repo, target: &str, start: ObjectId, task: &str, reader: &str) -> Result<BlameReport, LineageError> {
    let key = (task.to_string(), reader.to_string());
    let mut events = Vec::new();
    let mut cur = Some(start);
    let mut stopped = None;
    while let Some(id) = cur {
        let c = repo.store.read_commit(&id)?;
        let now = repo.store.catalog_of(&c)?.annotations.get(&key).copied();
        let Some(set_id) = now else { break };
        if let Some(src) = source_commit(&c) {
            let mut e = event(id, &c, "de-identified", "references mapped to the de-identified UIDs and paths".into(), None);
            e.details.insert("annotation-set".into(), set_id.hex());
            events.push(e);
            if !repo.store.contains(&src) {
                stopped = Some(format!("source commit {} is not in this store", src.short()));
                break;
            }
            cur = Some(src);
            continue;
        }
        let (parent_id, parent) = follow_parent(repo, &c, |p| Ok(repo.store.catalog_of(p)?.annotations.get(&key) == Some(&set_id)))?.unzip();
        let before = match &parent {
            Some(p) => repo.store.catalog_of(p)?.annotations.get(&key).copied(),
            None => None,
        };
        if before != Some(set_id) {
            let set = repo.store.read_annotations(&set_id)?;
            let n = set.labels.len() + set.boxes.len() + set.segmentations.len();
            let (what, summary) = match &set.derivation {
                Some(d) => ("consensus", format!("{} of {}", d.method, d.inputs.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", "))),
                None if before.is_none() => ("annotated", format!("{n} {} annotation(s), source {}", set.kind.name(), set.source.name())),
                None => ("new-version", format!("{n} {} annotation(s), source {}", set.kind.name(), set.source.name())),
            };
            let mut e = event(id, &c, what, summary, None);
            e.details.insert("annotation-set".into(), set_id.hex());
            if let Some(i) = &set.input {
                e.details.insert("file-blake3".into(), i.blake3.hex());
            }
            events.push(e);
        }
        cur = parent_id;
    }
    Ok(BlameReport { target: target.into(), commit: start, subject: "annotation", events, stopped })
}
