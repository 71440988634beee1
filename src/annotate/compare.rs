//! Comparing annotations: what changed between two commits (`cohort diff`), how much readers
//! agree (`cohort agreement`), and their consensus (`cohort consensus`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::{task_sets, AnnotateError};
use crate::catalog::{AnnotationKind, AnnotationSet, BoxEntry, Catalog, Derivation, LabelEntry, SegEntry, Target};
use crate::id::ObjectId;
use crate::object::ActivityRef;
use crate::pack::Hint;
use crate::repo::{CatalogChange, Repo};
use crate::store::{Store, StoreError};

// ---------------------------------------------------------------- diff

#[derive(Debug, Clone, Serialize)]
pub struct LabelChange {
    pub target: Target,
    pub old: Option<String>,
    pub new: Option<String>,
    pub reader: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BoxChange {
    pub sop_uid: String,
    pub frame: u32,
    pub label: String,
    /// added, removed or moved
    pub change: &'static str,
    pub old: Option<[f64; 4]>,
    pub new: Option<[f64; 4]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegChange {
    pub series_uid: String,
    /// added, removed or modified
    pub change: &'static str,
    /// Dice between the two versions per segment name (modified only).
    pub dice: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetDiff {
    pub task: String,
    pub reader: String,
    pub kind: AnnotationKind,
    /// added, removed or modified
    pub status: &'static str,
    pub old: Option<ObjectId>,
    pub new: Option<ObjectId>,
    pub labels: Vec<LabelChange>,
    pub boxes: Vec<BoxChange>,
    pub segmentations: Vec<SegChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MovedGroup {
    pub group: String,
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitDiff {
    pub name: String,
    pub status: &'static str,
    pub added_groups: usize,
    pub removed_groups: usize,
    pub moved: Vec<MovedGroup>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AnnotationDiff {
    pub annotations: Vec<SetDiff>,
    pub splits: Vec<SplitDiff>,
}

impl AnnotationDiff {
    pub fn is_empty(&self) -> bool {
        self.annotations.is_empty() && self.splits.is_empty()
    }
}

fn rect(b: &BoxEntry) -> [f64; 4] {
    [b.x, b.y, b.w, b.h]
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let i = ix * iy;
    i / (a[2] * a[3] + b[2] * b[3] - i)
}

fn label_changes(reader: &str, old: &[LabelEntry], new: &[LabelEntry]) -> Vec<LabelChange> {
    let o: BTreeMap<&Target, &str> = old.iter().map(|l| (&l.target, l.label.as_str())).collect();
    let n: BTreeMap<&Target, &str> = new.iter().map(|l| (&l.target, l.label.as_str())).collect();
    let keys: BTreeSet<&Target> = o.keys().chain(n.keys()).copied().collect();
    keys.into_iter()
        .filter(|k| o.get(k) != n.get(k))
        .map(|k| LabelChange {
            target: k.clone(),
            old: o.get(k).map(|s| s.to_string()),
            new: n.get(k).map(|s| s.to_string()),
            reader: reader.to_string(),
        })
        .collect()
}

fn box_changes(old: &[BoxEntry], new: &[BoxEntry]) -> Vec<BoxChange> {
    type Key = (String, u32, String);
    type Rects = Vec<[f64; 4]>;
    let mut groups: BTreeMap<Key, (Rects, Rects)> = BTreeMap::new();
    for b in old {
        groups.entry((b.sop_uid.clone(), b.frame, b.label.clone())).or_default().0.push(rect(b));
    }
    for b in new {
        groups.entry((b.sop_uid.clone(), b.frame, b.label.clone())).or_default().1.push(rect(b));
    }
    let mut out = Vec::new();
    for ((sop, frame, label), (mut o, mut n)) in groups {
        // Unchanged boxes first, then pair the rest by best overlap.
        o.retain(|r| match n.iter().position(|x| x == r) {
            Some(i) => {
                n.remove(i);
                false
            }
            None => true,
        });
        let mk = |change, old, new| BoxChange { sop_uid: sop.clone(), frame, label: label.clone(), change, old, new };
        while !o.is_empty() && !n.is_empty() {
            let mut best = (0, 0, -1.0);
            for (i, a) in o.iter().enumerate() {
                for (j, b) in n.iter().enumerate() {
                    let v = iou(a, b);
                    if v > best.2 {
                        best = (i, j, v);
                    }
                }
            }
            let a = o.remove(best.0);
            let b = n.remove(best.1);
            out.push(mk("moved", Some(a), Some(b)));
        }
        out.extend(o.into_iter().map(|a| mk("removed", Some(a), None)));
        out.extend(n.into_iter().map(|b| mk("added", None, Some(b))));
    }
    out
}

fn seg_changes(store: &Store, old: &[SegEntry], new: &[SegEntry]) -> Result<Vec<SegChange>, StoreError> {
    let o: BTreeMap<&str, &SegEntry> = old.iter().map(|s| (s.series_uid.as_str(), s)).collect();
    let n: BTreeMap<&str, &SegEntry> = new.iter().map(|s| (s.series_uid.as_str(), s)).collect();
    let keys: BTreeSet<&str> = o.keys().chain(n.keys()).copied().collect();
    let mut out = Vec::new();
    for k in keys {
        match (o.get(k), n.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => out.push(SegChange { series_uid: k.into(), change: "modified", dice: named_dice(store, a, b)? }),
            (Some(_), None) => out.push(SegChange { series_uid: k.into(), change: "removed", dice: BTreeMap::new() }),
            (None, Some(_)) => out.push(SegChange { series_uid: k.into(), change: "added", dice: BTreeMap::new() }),
            (None, None) => {}
        }
    }
    Ok(out)
}

/// Dice per segment name between two masks of one series (names either side has; a name
/// on one side only scores 0, both empty scores 1).
fn named_dice(store: &Store, a: &SegEntry, b: &SegEntry) -> Result<BTreeMap<String, f64>, StoreError> {
    let ma = store.read(&a.mask)?;
    let mb = store.read(&b.mask)?;
    let mut out = BTreeMap::new();
    let names: BTreeSet<&String> = a.segments.values().chain(b.segments.values()).collect();
    for name in names {
        let va = a.segments.iter().find(|(_, n)| *n == name).map(|(v, _)| *v);
        let vb = b.segments.iter().find(|(_, n)| *n == name).map(|(v, _)| *v);
        out.insert(name.clone(), dice_by_value(&ma, va, &mb, vb));
    }
    Ok(out)
}

fn dice_by_value(a: &[u8], va: Option<u8>, b: &[u8], vb: Option<u8>) -> f64 {
    let (mut na, mut nb, mut both) = (0u64, 0u64, 0u64);
    if a.len() != b.len() {
        return 0.0;
    }
    for (x, y) in a.iter().zip(b) {
        let ia = va == Some(*x);
        let ib = vb == Some(*y);
        na += ia as u64;
        nb += ib as u64;
        both += (ia && ib) as u64;
    }
    if na + nb == 0 { 1.0 } else { 2.0 * both as f64 / (na + nb) as f64 }
}

fn set_diff(store: &Store, task: &str, reader: &str, old: Option<(ObjectId, AnnotationSet)>, new: Option<(ObjectId, AnnotationSet)>) -> Result<SetDiff, StoreError> {
    let empty = |k| AnnotationSet {
        task: task.into(),
        kind: k,
        reader: reader.into(),
        source: crate::catalog::LabelSource::Weak,
        time_us: 0,
        input: None,
        labels: vec![],
        boxes: vec![],
        segmentations: vec![],
        derivation: None,
        previous: None,
    };
    let kind = new.as_ref().or(old.as_ref()).map(|(_, s)| s.kind).unwrap_or(AnnotationKind::Label);
    let status = match (&old, &new) {
        (None, _) => "added",
        (_, None) => "removed",
        _ => "modified",
    };
    let (oid, o) = old.map(|(i, s)| (Some(i), s)).unwrap_or_else(|| (None, empty(kind)));
    let (nid, n) = new.map(|(i, s)| (Some(i), s)).unwrap_or_else(|| (None, empty(kind)));
    Ok(SetDiff {
        task: task.into(),
        reader: reader.into(),
        kind,
        status,
        old: oid,
        new: nid,
        labels: label_changes(reader, &o.labels, &n.labels),
        boxes: box_changes(&o.boxes, &n.boxes),
        segmentations: seg_changes(store, &o.segmentations, &n.segmentations)?,
    })
}

/// Annotation and split changes from catalog `a` to catalog `b`.
pub fn diff_catalogs(store: &Store, a: &Catalog, b: &Catalog) -> Result<AnnotationDiff, StoreError> {
    let mut out = AnnotationDiff::default();
    let keys: BTreeSet<&(String, String)> = a.annotations.keys().chain(b.annotations.keys()).collect();
    for k in keys {
        let (oa, ob) = (a.annotations.get(k), b.annotations.get(k));
        if oa == ob {
            continue;
        }
        let read = |id: Option<&ObjectId>| -> Result<Option<(ObjectId, AnnotationSet)>, StoreError> {
            id.map(|i| Ok((*i, store.read_annotations(i)?))).transpose()
        };
        out.annotations.push(set_diff(store, &k.0, &k.1, read(oa)?, read(ob)?)?);
    }
    let names: BTreeSet<&String> = a.splits.keys().chain(b.splits.keys()).collect();
    for name in names {
        let (sa, sb) = (a.splits.get(name), b.splits.get(name));
        if sa == sb {
            continue;
        }
        let ra = sa.map(|i| store.read_split(i)).transpose()?;
        let rb = sb.map(|i| store.read_split(i)).transpose()?;
        let status = match (&ra, &rb) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "modified",
        };
        let (ea, eb) = (BTreeMap::new(), BTreeMap::new());
        let aa = ra.as_ref().map_or(&ea, |s| &s.assignments);
        let ab = rb.as_ref().map_or(&eb, |s| &s.assignments);
        let moved = aa
            .iter()
            .filter_map(|(g, x)| ab.get(g).filter(|y| y.part != x.part).map(|y| MovedGroup { group: g.clone(), old: x.part.clone(), new: y.part.clone() }))
            .collect();
        out.splits.push(SplitDiff {
            name: name.clone(),
            status,
            added_groups: ab.keys().filter(|g| !aa.contains_key(*g)).count(),
            removed_groups: aa.keys().filter(|g| !ab.contains_key(*g)).count(),
            moved,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------- agreement

#[derive(Debug, Clone, Serialize)]
pub struct PairAgreement {
    pub a: String,
    pub b: String,
    /// Cohen's kappa (labels) or mean Dice (segmentations).
    pub value: f64,
    /// Items both labelled, or (series, segment) pairs compared.
    pub items: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReaderAgreement {
    pub reader: String,
    /// Mean of the reader's pairwise values.
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub commit: ObjectId,
    pub task: String,
    pub kind: AnnotationKind,
    /// cohen-kappa, fleiss-kappa or dice
    pub statistic: &'static str,
    pub readers: Vec<String>,
    /// Items every reader labelled (labels), or series every reader segmented.
    pub items: usize,
    pub overall: f64,
    pub per_reader: Vec<ReaderAgreement>,
    pub pairs: Vec<PairAgreement>,
    /// Segmentations: mean Dice per segment name.
    pub per_label: BTreeMap<String, f64>,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn stats_err(task: &str, e: crate::stats::StatsError) -> AnnotateError {
    AnnotateError::Task { task: task.into(), problem: e.to_string() }
}

/// The readers' own sets (consensus sets are not readers).
fn reader_sets(repo: &Repo, cat: &Catalog, task: &str, commit: &ObjectId) -> Result<Vec<(String, ObjectId, AnnotationSet)>, AnnotateError> {
    let sets: Vec<_> = task_sets(repo, cat, task, commit)?.into_iter().filter(|(_, _, s)| s.derivation.is_none()).collect();
    if sets.len() < 2 {
        return Err(AnnotateError::Task {
            task: task.into(),
            problem: format!("has {} reader(s); agreement and consensus need at least 2", sets.len()),
        });
    }
    Ok(sets)
}

/// Label maps per target, with categories numbered in name order.
fn label_votes(sets: &[(String, ObjectId, AnnotationSet)]) -> (Vec<String>, Vec<BTreeMap<Target, usize>>) {
    let cats: BTreeSet<&str> = sets.iter().flat_map(|(_, _, s)| s.labels.iter().map(|l| l.label.as_str())).collect();
    let cats: Vec<String> = cats.into_iter().map(str::to_string).collect();
    let index: HashMap<&str, usize> = cats.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let maps = sets
        .iter()
        .map(|(_, _, s)| s.labels.iter().map(|l| (l.target.clone(), index[l.label.as_str()])).collect())
        .collect();
    (cats, maps)
}

/// How much the readers of a task agree.
pub fn agreement(repo: &Repo, rev: &str, task: &str) -> Result<Agreement, AnnotateError> {
    let commit = repo.resolve(rev)?;
    let cat = repo.store.catalog_of(&repo.store.read_commit(&commit)?)?;
    let sets = reader_sets(repo, &cat, task, &commit)?;
    let kind = sets[0].2.kind;
    let readers: Vec<String> = sets.iter().map(|(r, _, _)| r.clone()).collect();
    let mut pairs = Vec::new();
    let mut per_label: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (statistic, overall, items) = match kind {
        AnnotationKind::Label => {
            let (_, maps) = label_votes(&sets);
            for i in 0..maps.len() {
                for j in i + 1..maps.len() {
                    let (a, b): (Vec<usize>, Vec<usize>) = maps[i].iter().filter_map(|(t, x)| maps[j].get(t).map(|y| (*x, *y))).unzip();
                    let value = if a.is_empty() { f64::NAN } else { crate::stats::cohen_kappa(&a, &b).map_err(|e| stats_err(task, e))? };
                    pairs.push(PairAgreement { a: readers[i].clone(), b: readers[j].clone(), value, items: a.len() });
                }
            }
            let common: Vec<&Target> = maps[0].keys().filter(|t| maps.iter().all(|m| m.contains_key(*t))).collect();
            if common.is_empty() {
                return Err(AnnotateError::Task { task: task.into(), problem: "no image is labelled by every reader".into() });
            }
            if maps.len() == 2 {
                ("cohen-kappa", pairs[0].value, common.len())
            } else {
                let ratings: Vec<Vec<usize>> = common.iter().map(|t| maps.iter().map(|m| m[*t]).collect()).collect();
                ("fleiss-kappa", crate::stats::fleiss_kappa(&ratings).map_err(|e| stats_err(task, e))?, common.len())
            }
        }
        AnnotationKind::Segmentation => {
            let masks: Vec<BTreeMap<&str, &SegEntry>> = sets.iter().map(|(_, _, s)| s.segmentations.iter().map(|g| (g.series_uid.as_str(), g)).collect()).collect();
            for i in 0..masks.len() {
                for j in i + 1..masks.len() {
                    let mut vals = Vec::new();
                    for (series, a) in &masks[i] {
                        if let Some(b) = masks[j].get(series) {
                            for (name, d) in named_dice(&repo.store, a, b)? {
                                per_label.entry(name).or_default().push(d);
                                vals.push(d);
                            }
                        }
                    }
                    pairs.push(PairAgreement { a: readers[i].clone(), b: readers[j].clone(), value: mean(&vals), items: vals.len() });
                }
            }
            let common = masks[0].keys().filter(|s| masks.iter().all(|m| m.contains_key(*s))).count();
            if common == 0 {
                return Err(AnnotateError::Task { task: task.into(), problem: "no series is segmented by every reader".into() });
            }
            let vals: Vec<f64> = pairs.iter().map(|p| p.value).filter(|v| v.is_finite()).collect();
            ("dice", mean(&vals), common)
        }
        AnnotationKind::Bbox => {
            return Err(AnnotateError::Task { task: task.into(), problem: "agreement is computed for label and segmentation tasks, not boxes".into() });
        }
    };
    let per_reader = readers
        .iter()
        .map(|r| {
            let v: Vec<f64> = pairs.iter().filter(|p| (&p.a == r || &p.b == r) && p.value.is_finite()).map(|p| p.value).collect();
            ReaderAgreement { reader: r.clone(), value: mean(&v) }
        })
        .collect();
    Ok(Agreement {
        commit,
        task: task.into(),
        kind,
        statistic,
        readers,
        items,
        overall,
        per_reader,
        pairs,
        per_label: per_label.into_iter().map(|(k, v)| (k, mean(&v))).collect(),
    })
}

// ---------------------------------------------------------------- consensus

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsensusMethod {
    Majority,
    Staple,
}

impl ConsensusMethod {
    pub fn name(self) -> &'static str {
        match self {
            ConsensusMethod::Majority => "majority",
            ConsensusMethod::Staple => "staple",
        }
    }
}

/// The reader name a consensus set is recorded under.
pub const CONSENSUS_READER: &str = "consensus";

#[derive(Debug, Clone, Serialize)]
pub struct ConsensusSummary {
    pub commit: ObjectId,
    pub annotation_set: ObjectId,
    pub task: String,
    pub method: ConsensusMethod,
    pub inputs: Vec<(String, ObjectId)>,
    /// Images (labels) or series (segmentations) with a consensus.
    pub resolved: usize,
    /// Ties, or items not every reader annotated (STAPLE).
    pub unresolved: u64,
}

const STAPLE_ITER: usize = 100;
const STAPLE_TOL: f64 = 1e-7;

/// Combine the readers of a task into a consensus annotation set and commit it.
pub fn consensus(repo: &Repo, rev: &str, task: &str, method: ConsensusMethod, message: Option<String>) -> Result<ConsensusSummary, AnnotateError> {
    let started = repo.ctx.now_us();
    let (commit, c) = repo.catalog_base(rev)?;
    let mut cat = repo.store.catalog_of(&c)?;
    let sets = reader_sets(repo, &cat, task, &commit)?;
    let kind = sets[0].2.kind;
    let source = sets.iter().map(|(_, _, s)| s.source).max().expect("two or more sets");
    let inputs: Vec<(String, ObjectId)> = sets.iter().map(|(r, id, _)| (r.clone(), *id)).collect();
    let mut w = repo.store.writer()?;
    let mut out = AnnotationSet {
        task: task.into(),
        kind,
        reader: CONSENSUS_READER.into(),
        source,
        time_us: started,
        input: None,
        labels: vec![],
        boxes: vec![],
        segmentations: vec![],
        derivation: None,
        previous: cat.annotations.get(&(task.to_string(), CONSENSUS_READER.to_string())).copied(),
    };
    let mut unresolved = 0u64;
    let resolved = match kind {
        AnnotationKind::Label => {
            let (cats, maps) = label_votes(&sets);
            let targets: BTreeSet<&Target> = maps.iter().flat_map(|m| m.keys()).collect();
            let (items, votes): (Vec<&Target>, Vec<Vec<usize>>) = match method {
                ConsensusMethod::Majority => targets.iter().map(|t| (*t, maps.iter().filter_map(|m| m.get(*t).copied()).collect())).unzip(),
                ConsensusMethod::Staple => {
                    let all: Vec<&Target> = targets.iter().copied().filter(|t| maps.iter().all(|m| m.contains_key(*t))).collect();
                    unresolved += (targets.len() - all.len()) as u64;
                    all.iter().map(|t| (*t, maps.iter().map(|m| m[*t]).collect())).unzip()
                }
            };
            let decided: Vec<Option<usize>> = match method {
                ConsensusMethod::Majority => crate::stats::majority(&votes),
                ConsensusMethod::Staple => {
                    let r = crate::stats::staple(&votes, cats.len(), STAPLE_ITER, STAPLE_TOL).map_err(|e| stats_err(task, e))?;
                    r.labels.into_iter().map(Some).collect()
                }
            };
            for (t, d) in items.into_iter().zip(decided) {
                match d {
                    Some(k) => out.labels.push(LabelEntry { target: t.clone(), label: cats[k].clone(), value: None }),
                    None => unresolved += 1,
                }
            }
            out.labels.len()
        }
        AnnotationKind::Segmentation => {
            let masks: Vec<BTreeMap<&str, &SegEntry>> = sets.iter().map(|(_, _, s)| s.segmentations.iter().map(|g| (g.series_uid.as_str(), g)).collect()).collect();
            let all_series: BTreeSet<&str> = masks.iter().flat_map(|m| m.keys().copied()).collect();
            for series in &all_series {
                let per: Vec<&SegEntry> = masks.iter().filter_map(|m| m.get(series).copied()).collect();
                if per.len() < masks.len() {
                    unresolved += 1;
                    continue;
                }
                // One value space for every reader: segment names in order.
                let names: BTreeSet<&String> = per.iter().flat_map(|g| g.segments.values()).collect();
                let names: Vec<String> = names.into_iter().cloned().collect();
                if names.len() > 255 {
                    return Err(AnnotateError::Task { task: task.into(), problem: format!("series {series}: more than 255 segment names") });
                }
                let mut maps = Vec::with_capacity(per.len());
                for g in &per {
                    if g.dims != per[0].dims || g.slice_sops != per[0].slice_sops {
                        return Err(AnnotateError::Task { task: task.into(), problem: format!("series {series}: readers' masks are on different grids") });
                    }
                    let raw = repo.store.read(&g.mask)?;
                    let lut = g.value_map(&names);
                    maps.push(raw.into_iter().map(|v| lut[usize::from(v)]).collect::<Vec<u8>>());
                }
                let refs: Vec<&[u8]> = maps.iter().map(|m| m.as_slice()).collect();
                let labels = match method {
                    ConsensusMethod::Majority => crate::stats::majority_map(&refs).map_err(|e| stats_err(task, e))?,
                    ConsensusMethod::Staple => crate::stats::staple_map(&refs, STAPLE_ITER, STAPLE_TOL).map_err(|e| stats_err(task, e))?.0,
                };
                let voxels = crate::catalog::voxel_counts(&labels);
                let mask = ObjectId::of(&labels);
                if !repo.store.contains(&mask) && !w.contains(&mask) {
                    w.put_blob(&labels, Hint::Generic)?;
                }
                out.segmentations.push(SegEntry {
                    series_uid: series.to_string(),
                    dims: per[0].dims,
                    slice_sops: per[0].slice_sops.clone(),
                    segments: names.iter().enumerate().map(|(i, n)| (i as u8 + 1, n.clone())).collect(),
                    mask,
                    voxels,
                });
            }
            out.segmentations.len()
        }
        AnnotationKind::Bbox => {
            return Err(AnnotateError::Task { task: task.into(), problem: "consensus is made for label and segmentation tasks, not boxes".into() });
        }
    };
    out.derivation = Some(Derivation { method: method.name().into(), inputs: inputs.clone(), unresolved });
    let set_id = w.put(&out)?;
    cat.annotations.insert((task.to_string(), CONSENSUS_READER.to_string()), set_id);
    let mut parameters = BTreeMap::new();
    parameters.insert("task".into(), task.to_string());
    parameters.insert("method".into(), method.name().into());
    let change = CatalogChange {
        kind: "consensus".into(),
        message: message.unwrap_or_else(|| format!("consensus of {task} by {} ({} readers)", method.name(), inputs.len())),
        parameters,
        inputs: inputs.iter().map(|(r, id)| ActivityRef { role: format!("annotations:{r}"), value: id.hex() }).collect(),
        outputs: vec![ActivityRef { role: "annotations".into(), value: set_id.hex() }],
        started_us: started,
    };
    let new_commit = repo.commit_catalog(rev, w, &cat, change)?;
    Ok(ConsensusSummary { commit: new_commit, annotation_set: set_id, task: task.into(), method, inputs, resolved, unresolved })
}
