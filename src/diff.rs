//! Differences between two trees, and the DICOM view of them.
//!
//! Tree diff walks both Merkle trees together and skips every pair of subtrees with the same
//! id, so its cost follows the number of changes, not the size of the dataset. The DICOM view
//! groups changed instances by patient, study and series and, for a modified instance, lists the
//! attributes that changed and whether its pixel data did.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::dicom::{self, AttributeChange};
use crate::id::ObjectId;
use crate::object::{EntryKind, InstanceInfo, Structured, Tree, TreeEntry};
use crate::store::{Store, StoreError};

/// Where the objects a diff reads come from: the store, plus objects of working-tree files
/// that are not stored (their DICOM records, headers and text, for `diff` of the working tree).
pub struct ObjectSource<'a> {
    pub store: &'a Store,
    pub extra: Option<&'a HashMap<ObjectId, Vec<u8>>>,
}

impl ObjectSource<'_> {
    fn read(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError> {
        match self.extra.and_then(|m| m.get(id)) {
            Some(b) => Ok(b.clone()),
            None => self.store.read(id),
        }
    }

    fn read_dicom(&self, id: &ObjectId) -> Result<crate::object::DicomFile, StoreError> {
        match self.extra.and_then(|m| m.get(id)) {
            Some(b) => Ok(crate::object::DicomFile::from_bytes(*id, b)?),
            None => self.store.read_dicom(id),
        }
    }

    fn contains(&self, id: &ObjectId) -> bool {
        self.extra.is_some_and(|m| m.contains_key(id)) || self.store.contains(id)
    }
}

impl<'a> From<&'a Store> for ObjectSource<'a> {
    fn from(store: &'a Store) -> Self {
        ObjectSource { store, extra: None }
    }
}

/// Where trees come from: the store, plus trees built in memory (a working-tree snapshot).
pub struct TreeSource<'a> {
    pub store: &'a Store,
    pub extra: Option<&'a HashMap<ObjectId, Tree>>,
}

impl TreeSource<'_> {
    pub fn tree(&self, id: &ObjectId) -> Result<Tree, StoreError> {
        if let Some(t) = self.extra.and_then(|m| m.get(id)) {
            return Ok(t.clone());
        }
        self.store.read_tree(id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Added,
    Removed,
    Modified,
}

/// One changed file (never a folder: folder changes are listed file by file).
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub path: String,
    pub status: Status,
    pub old: Option<EntryRef>,
    pub new: Option<EntryRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryRef {
    pub kind: EntryKind,
    pub id: ObjectId,
    pub size: u64,
}

impl From<&TreeEntry> for EntryRef {
    fn from(e: &TreeEntry) -> Self {
        EntryRef { kind: e.kind, id: e.id, size: e.size }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") }
}

/// Every file below a tree, as (path, entry).
pub fn list_files(src: &TreeSource, id: &ObjectId, prefix: &str, out: &mut Vec<(String, TreeEntry)>) -> Result<(), StoreError> {
    for_each_file(src, id, prefix, &mut |p, e| {
        out.push((p, e));
        Ok(())
    })
}

/// Hand every file below a tree to `f`, as (path, entry), in path order; stops at the first
/// error, of the store or of `f`.
pub fn for_each_file<E: From<StoreError>>(src: &TreeSource, id: &ObjectId, prefix: &str, f: &mut dyn FnMut(String, TreeEntry) -> Result<(), E>) -> Result<(), E> {
    for e in src.tree(id)?.entries {
        let p = join(prefix, &e.name);
        if e.kind == EntryKind::Tree {
            for_each_file(src, &e.id, &p, f)?;
        } else {
            f(p, e)?;
        }
    }
    Ok(())
}

fn side(src: &TreeSource, e: &TreeEntry, path: &str, status: Status, out: &mut Vec<Change>) -> Result<(), StoreError> {
    if e.kind == EntryKind::Tree {
        let mut files = Vec::new();
        list_files(src, &e.id, path, &mut files)?;
        for (p, f) in files {
            let r = Some(EntryRef::from(&f));
            out.push(match status {
                Status::Added => Change { path: p, status, old: None, new: r },
                _ => Change { path: p, status, old: r, new: None },
            });
        }
    } else {
        let r = Some(EntryRef::from(e));
        out.push(match status {
            Status::Added => Change { path: path.to_string(), status, old: None, new: r },
            _ => Change { path: path.to_string(), status, old: r, new: None },
        });
    }
    Ok(())
}

/// File-level changes from tree `a` to tree `b` (either may be absent: empty).
pub fn diff_trees(src: &TreeSource, a: Option<ObjectId>, b: Option<ObjectId>) -> Result<Vec<Change>, StoreError> {
    let mut out = Vec::new();
    diff_rec(src, a, b, "", &mut out)?;
    Ok(out)
}

fn diff_rec(src: &TreeSource, a: Option<ObjectId>, b: Option<ObjectId>, prefix: &str, out: &mut Vec<Change>) -> Result<(), StoreError> {
    if a == b {
        return Ok(());
    }
    let ta = match a { Some(id) => src.tree(&id)?, None => Tree::default() };
    let tb = match b { Some(id) => src.tree(&id)?, None => Tree::default() };
    let (mut i, mut j) = (0, 0);
    while i < ta.entries.len() || j < tb.entries.len() {
        let ea = ta.entries.get(i);
        let eb = tb.entries.get(j);
        let ord = match (ea, eb) {
            (Some(x), Some(y)) => x.name.as_bytes().cmp(y.name.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let x = ea.expect("left entry");
                side(src, x, &join(prefix, &x.name), Status::Removed, out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let y = eb.expect("right entry");
                side(src, y, &join(prefix, &y.name), Status::Added, out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (ea.expect("left"), eb.expect("right"));
                // (Equal entries give nothing.)
                entry_pair(src, &join(prefix, &x.name), Some(x), Some(y), out)?;
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// The changes between what two trees have at one path (an entry, or nothing), in path order.
pub fn diff_entries(src: &TreeSource, path: &str, a: Option<&TreeEntry>, b: Option<&TreeEntry>) -> Result<Vec<Change>, StoreError> {
    let mut out = Vec::new();
    entry_pair(src, path, a, b, &mut out)?;
    Ok(out)
}

fn entry_pair(src: &TreeSource, p: &str, a: Option<&TreeEntry>, b: Option<&TreeEntry>, out: &mut Vec<Change>) -> Result<(), StoreError> {
    match (a, b) {
        (None, None) => {}
        (Some(x), None) => side(src, x, p, Status::Removed, out)?,
        (None, Some(y)) => side(src, y, p, Status::Added, out)?,
        (Some(x), Some(y)) if x.id == y.id && x.kind == y.kind => {}
        (Some(x), Some(y)) => match (x.kind == EntryKind::Tree, y.kind == EntryKind::Tree) {
            (true, true) => diff_rec(src, Some(x.id), Some(y.id), p, out)?,
            (false, false) => out.push(Change { path: p.to_string(), status: Status::Modified, old: Some(x.into()), new: Some(y.into()) }),
            _ => {
                side(src, x, p, Status::Removed, out)?;
                side(src, y, p, Status::Added, out)?;
            }
        },
    }
    Ok(())
}

/// A changed DICOM instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceChange {
    pub path: String,
    pub status: Status,
    pub sop_instance_uid: Option<String>,
    pub modality: Option<String>,
    /// For a modified instance: did the pixel data change?
    pub pixel_changed: Option<bool>,
    /// For a modified instance: attributes that changed (values shortened).
    pub attributes: Vec<AttributeChange>,
    /// Set when the attribute diff could not be computed.
    pub attributes_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesChanges {
    pub series_uid: String,
    pub instances: Vec<InstanceChange>,
}
#[derive(Debug, Clone, Serialize)]
pub struct StudyChanges {
    pub study_uid: String,
    pub series: Vec<SeriesChanges>,
}
#[derive(Debug, Clone, Serialize)]
pub struct PatientChanges {
    pub patient_id: String,
    pub studies: Vec<StudyChanges>,
}

/// The DICOM changes of a diff in figures: how many patients, studies, series and instances,
/// and for each attribute that changed, in how many instances and series (`diff --summary`:
/// what a correction or a tool run did to 20,000 files, on one screen).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DicomSummary {
    pub patients: usize,
    pub studies: usize,
    pub series: usize,
    pub instances_added: usize,
    pub instances_removed: usize,
    pub instances_modified: usize,
    /// Modified instances whose pixel data changed.
    pub pixel_data_changed: usize,
    /// Modified instances whose attributes could not be compared.
    pub not_compared: usize,
    /// In tag order (attributes inside sequences by their path).
    pub attributes: Vec<AttributeCount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttributeCount {
    pub tag: String,
    pub keyword: String,
    pub path: String,
    /// Instances in which it changed, and the series they are in.
    pub instances: usize,
    pub series: usize,
    /// One change, as an example (the first in patient, study, series and path order).
    pub example_old: Option<String>,
    pub example_new: Option<String>,
}

/// The figures of a DICOM view.
pub fn summarize(dicom: &[PatientChanges]) -> DicomSummary {
    let mut s = DicomSummary { patients: dicom.len(), ..Default::default() };
    let mut counts: BTreeMap<(String, String), (AttributeCount, std::collections::HashSet<&str>)> = BTreeMap::new();
    for p in dicom {
        s.studies += p.studies.len();
        for st in &p.studies {
            s.series += st.series.len();
            for se in &st.series {
                for i in &se.instances {
                    match i.status {
                        Status::Added => s.instances_added += 1,
                        Status::Removed => s.instances_removed += 1,
                        Status::Modified => s.instances_modified += 1,
                    }
                    s.pixel_data_changed += usize::from(i.pixel_changed == Some(true));
                    s.not_compared += usize::from(i.attributes_error.is_some());
                    for a in &i.attributes {
                        let (c, series) = counts.entry((a.tag.clone(), a.path.clone())).or_insert_with(|| {
                            let c = AttributeCount { tag: a.tag.clone(), keyword: a.keyword.clone(), path: a.path.clone(), instances: 0, series: 0, example_old: a.old.clone(), example_new: a.new.clone() };
                            (c, std::collections::HashSet::new())
                        });
                        c.instances += 1;
                        series.insert(se.series_uid.as_str());
                    }
                }
            }
        }
    }
    s.attributes = counts.into_values().map(|(mut c, series)| {
        c.series = series.len();
        c
    }).collect();
    s
}

/// Largest text file (each side) whose changed lines [`text_patches`] shows.
pub const MAX_PATCH_TEXT: u64 = 4 << 20;

/// The changed lines of a modified text file (`cohort diff --patch`).
#[derive(Debug, Clone, Serialize)]
pub struct TextPatch {
    pub path: String,
    pub added_lines: usize,
    pub removed_lines: usize,
    /// A unified diff (`--- a/PATH`, `+++ b/PATH`, hunks with 3 lines of context), as
    /// `git diff` writes; None when not shown, and `skipped` says why.
    pub patch: Option<String>,
    pub skipped: Option<String>,
}

/// A file's bytes as text: UTF-8 without NUL bytes (CSV, TSV, JSON, notes), as `merge`
/// merges them line by line.
pub fn as_text(bytes: Vec<u8>) -> Option<String> {
    String::from_utf8(bytes).ok().filter(|t| !t.contains('\0'))
}

/// The changed lines of each modified plain file among `changes` (DICOM instances have
/// their attribute changes instead): a patch for text files up to [`MAX_PATCH_TEXT`] bytes a
/// side, else why not (binary, larger, or a partial clone's file not here).
pub fn text_patches(store: &ObjectSource, changes: &[Change]) -> Result<Vec<TextPatch>, StoreError> {
    let plain = |e: &Option<EntryRef>| e.as_ref().filter(|e| matches!(e.kind, EntryKind::File | EntryKind::Executable)).cloned();
    let mut out = Vec::new();
    for c in changes {
        let (Some(old), Some(new)) = (plain(&c.old), plain(&c.new)) else { continue };
        let skipped = |why: &str| TextPatch { path: c.path.clone(), added_lines: 0, removed_lines: 0, patch: None, skipped: Some(why.to_string()) };
        if old.size > MAX_PATCH_TEXT || new.size > MAX_PATCH_TEXT {
            out.push(skipped(&format!("larger than {} MiB", MAX_PATCH_TEXT >> 20)));
            continue;
        }
        if !store.contains(&old.id) || !store.contains(&new.id) {
            out.push(skipped("not in this store (a partial clone)"));
            continue;
        }
        let (Some(a), Some(b)) = (as_text(store.read(&old.id)?), as_text(store.read(&new.id)?)) else {
            out.push(skipped("binary"));
            continue;
        };
        let patch = diffy::DiffOptions::new().set_original_filename(format!("a/{}", c.path)).set_modified_filename(format!("b/{}", c.path)).create_patch(&a, &b);
        let count = |want: fn(&diffy::Line<'_, str>) -> bool| patch.hunks().iter().flat_map(|h| h.lines()).filter(|l| want(l)).count();
        out.push(TextPatch {
            path: c.path.clone(),
            added_lines: count(|l| matches!(l, diffy::Line::Insert(_))),
            removed_lines: count(|l| matches!(l, diffy::Line::Delete(_))),
            patch: Some(diffy::PatchFormatter::new().missing_newline_message(true).fmt_patch(&patch).to_string()),
            skipped: None,
        });
    }
    Ok(out)
}

/// The full answer of `cohort diff`.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub from: Option<ObjectId>,
    /// None: the working tree.
    pub to: Option<ObjectId>,
    pub added: usize,
    pub removed: usize,
    pub modified: usize,
    pub files: Vec<Change>,
    pub dicom: Vec<PatientChanges>,
    /// Annotation and split changes.
    pub annotations: crate::annotate::AnnotationDiff,
    /// With `--patch`: the changed lines of each modified text file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Vec<TextPatch>>,
}

const UNKNOWN: &str = "(unknown)";

/// Whether the pixel value changed, when either side is a deflated file (stored whole, its
/// pixel data inside the compressed stream, so that the records' pixel objects do not tell):
/// the pixel values of the two, inflated where need be, compared. `None` when neither side is
/// deflated, or one cannot be inflated (the records' objects are compared then).
fn pixel_change_of_deflated(store: &ObjectSource, a: &crate::object::DicomFile, b: &crate::object::DicomFile) -> Result<Option<bool>, StoreError> {
    let deflated = |d: &crate::object::DicomFile| d.pixel.is_none() && d.info.transfer_syntax.as_deref() == Some(crate::dicom::TS_DEFLATED_EXPLICIT);
    if !deflated(a) && !deflated(b) || a.header == b.header && a.pixel == b.pixel {
        return Ok(None);
    }
    let pixel_of = |d: &crate::object::DicomFile| -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(p) = &d.pixel {
            return Ok(Some(store.read(p)?));
        }
        Ok(match dicom::inflated_parts(&store.read(&d.header)?) {
            Ok(Some(parts)) => Some(parts.pixel),
            Ok(None) => Some(Vec::new()),
            Err(_) => None,
        })
    };
    Ok(match (pixel_of(a)?, pixel_of(b)?) {
        (Some(x), Some(y)) => Some(x != y),
        _ => None,
    })
}

/// Group DICOM changes by patient / study / series, with attribute diffs for modified instances.
pub fn dicom_view(store: &ObjectSource, changes: &[Change]) -> Result<Vec<PatientChanges>, StoreError> {
    type Key = (String, String, String);
    let mut groups: BTreeMap<Key, Vec<InstanceChange>> = BTreeMap::new();
    let info_of = |r: &Option<EntryRef>| -> Result<Option<(InstanceInfo, crate::object::DicomFile)>, StoreError> {
        match r {
            Some(e) if e.kind == EntryKind::Dicom => {
                let d = store.read_dicom(&e.id)?;
                Ok(Some((d.info.clone(), d)))
            }
            _ => Ok(None),
        }
    };
    for c in changes {
        let old = info_of(&c.old)?;
        let new = info_of(&c.new)?;
        let Some((info, _)) = new.as_ref().or(old.as_ref()) else { continue };
        let key = (
            info.patient_id.clone().unwrap_or_else(|| UNKNOWN.into()),
            info.study_uid.clone().unwrap_or_else(|| UNKNOWN.into()),
            info.series_uid.clone().unwrap_or_else(|| UNKNOWN.into()),
        );
        let mut ic = InstanceChange {
            path: c.path.clone(),
            status: c.status,
            sop_instance_uid: info.sop_instance_uid.clone(),
            modality: info.modality.clone(),
            pixel_changed: None,
            attributes: vec![],
            attributes_error: None,
        };
        if let (Some((_, a)), Some((_, b))) = (&old, &new) {
            ic.pixel_changed = Some(match pixel_change_of_deflated(store, a, b)? {
                Some(changed) => changed,
                None => a.pixel != b.pixel,
            });
            if a.header != b.header {
                let ha = store.read(&a.header)?;
                let hb = store.read(&b.header)?;
                match dicom::diff_headers(&ha, &hb) {
                    Ok(v) => ic.attributes = v,
                    Err(e) => ic.attributes_error = Some(e.to_string()),
                }
            }
        } else if c.status == Status::Modified {
            // A file that became DICOM, or stopped being DICOM.
            ic.attributes_error = Some("one side is not stored as DICOM".into());
        }
        groups.entry(key).or_default().push(ic);
    }
    let mut patients: Vec<PatientChanges> = Vec::new();
    for ((p, st, se), inst) in groups {
        if patients.last().map(|x| &x.patient_id) != Some(&p) {
            patients.push(PatientChanges { patient_id: p.clone(), studies: vec![] });
        }
        let pat = patients.last_mut().expect("just pushed");
        if pat.studies.last().map(|x| &x.study_uid) != Some(&st) {
            pat.studies.push(StudyChanges { study_uid: st.clone(), series: vec![] });
        }
        let study = pat.studies.last_mut().expect("just pushed");
        study.series.push(SeriesChanges { series_uid: se, instances: inst });
    }
    Ok(patients)
}
