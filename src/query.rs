//! `find`: the DICOM instances of a commit whose header attributes meet conditions
//! (`Modality=CT`, `SliceThickness<=1.25`, `SeriesDescription~*axial*`, `!PatientAge`). What
//! a curator selects a sub-cohort with, before exporting it.
//!
//! Only headers are read (never pixel data), in parallel, a batch at a time.
use std::collections::BTreeMap;

use dicom_core::dictionary::DataDictionary;
use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use rayon::prelude::*;
use serde::Serialize;

use crate::diff::TreeSource;
use crate::id::ObjectId;
use crate::object::EntryKind;
use crate::pathsel::{self, PathSelError};
use crate::progress::{Progress, Unit};
use crate::repo::{Repo, RepoError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("condition {expr:?}: {reason}")]
    BadCondition { expr: String, reason: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    PathSel(#[from] PathSelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an attribute's value is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Present,
    Absent,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// A glob over the whole value, ignoring case.
    Matches,
}

/// An attribute named on the command line: by keyword or tag.
#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: String,
    pub tag: (u16, u16),
}

/// One condition on a top-level attribute (or a file meta attribute).
#[derive(Debug, Clone)]
pub struct Condition {
    pub attribute: Attribute,
    pub op: Op,
    pub value: String,
    glob: Option<globset::GlobMatcher>,
}

/// Attributes separated by commas (`Rows,Columns,(0028,0030)`): keywords or tags.
pub fn attributes(list: &str) -> Result<Vec<Attribute>, QueryError> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&list[start..]);
    out.into_iter().map(str::trim).filter(|s| !s.is_empty()).map(attribute).collect()
}

/// An attribute by keyword (`SliceThickness`) or tag (`(0018,0050)`, `0018,0050`, `00180050`).
pub fn attribute(name: &str) -> Result<Attribute, QueryError> {
    let bad = |reason: &str| QueryError::BadCondition { expr: name.to_string(), reason: reason.to_string() };
    let hex = name.trim_start_matches('(').trim_end_matches(')').replace(',', "");
    let tag = if hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let n = u32::from_str_radix(&hex, 16).map_err(|_| bad("not a tag"))?;
        ((n >> 16) as u16, (n & 0xffff) as u16)
    } else {
        match StandardDataDictionary.by_name(name) {
            Some(e) => match e.tag {
                dicom_core::dictionary::TagRange::Single(t) => (t.group(), t.element()),
                _ => return Err(bad("names a range of tags; give one tag as (gggg,eeee)")),
            },
            None => return Err(bad("no such DICOM keyword (keywords are as the standard spells them, e.g. SliceThickness), nor a tag (gggg,eeee)")),
        }
    };
    Ok(Attribute { name: name.to_string(), tag })
}

impl Condition {
    /// `KEY`, `!KEY`, or `KEY` then `=`, `!=`, `<`, `<=`, `>`, `>=` or `~` and a value.
    pub fn parse(expr: &str) -> Result<Condition, QueryError> {
        let bad = |reason: &str| QueryError::BadCondition { expr: expr.to_string(), reason: reason.to_string() };
        let (key, op, value) = if let Some(k) = expr.strip_prefix('!') {
            (k, Op::Absent, "")
        } else {
            match expr.find(['=', '!', '<', '>', '~']) {
                None => (expr, Op::Present, ""),
                Some(i) => {
                    let rest = &expr[i..];
                    let (op, len) = [("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("=", Op::Eq), ("<", Op::Lt), (">", Op::Gt), ("~", Op::Matches)]
                        .into_iter()
                        .find(|(s, _)| rest.starts_with(s))
                        .map(|(s, op)| (op, s.len()))
                        .ok_or_else(|| bad("expected KEY, !KEY, or KEY=, !=, <, <=, >, >= or ~ and a value"))?;
                    (&expr[..i], op, &rest[len..])
                }
            }
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(bad("no attribute named before the operator"));
        }
        let attribute = attribute(key).map_err(|e| match e {
            QueryError::BadCondition { reason, .. } => bad(&format!("{key}: {reason}")),
            other => other,
        })?;
        let glob = if op == Op::Matches {
            Some(globset::GlobBuilder::new(value).case_insensitive(true).literal_separator(false).build().map_err(|e| bad(&e.kind().to_string()))?.compile_matcher())
        } else {
            None
        };
        Ok(Condition { attribute, op, value: value.to_string(), glob })
    }

    /// Whether an attribute as found meets the condition.
    fn test(&self, v: &Found) -> bool {
        let s = match (self.op, v) {
            (Op::Present, v) => return !matches!(v, Found::Absent),
            (Op::Absent, v) => return matches!(v, Found::Absent),
            (_, Found::Absent | Found::Other(_)) => return false,
            (_, Found::Text(s)) => s,
        };
        match self.op {
            Op::Eq => s == &self.value,
            Op::Ne => s != &self.value,
            Op::Matches => self.glob.as_ref().is_some_and(|g| g.is_match(s)),
            op => {
                let ord = match (first_number(s), self.value.trim().parse::<f64>().ok()) {
                    (Some(a), Some(b)) => a.partial_cmp(&b),
                    _ => Some(s.as_str().cmp(self.value.as_str())),
                };
                ord.is_some_and(|o| match op {
                    Op::Lt => o.is_lt(),
                    Op::Le => o.is_le(),
                    Op::Gt => o.is_gt(),
                    _ => o.is_ge(),
                })
            }
        }
    }
}

/// An attribute of one header.
enum Found {
    Absent,
    /// Its text (numbers as text too), without padding.
    Text(String),
    /// A value with no text: binary data or a sequence, as shown.
    Other(String),
}

impl Found {
    fn shown(self) -> Option<String> {
        match self {
            Found::Absent => None,
            Found::Text(s) | Found::Other(s) => Some(s),
        }
    }
}

fn of_value<I, P>(v: &Value<I, P>, vr: VR) -> Found {
    match v {
        Value::Primitive(p) if matches!(vr, VR::OB | VR::OW | VR::OD | VR::OF | VR::OL | VR::OV | VR::UN) => Found::Other(format!("<{} bytes>", p.calculate_byte_len())),
        Value::Primitive(p) => Found::Text(p.to_str().trim_matches(|c: char| c == ' ' || c == '\0').to_string()),
        Value::Sequence(sq) => Found::Other(format!("<sequence of {} items>", sq.items().len())),
        Value::PixelSequence(_) => Found::Other("<encapsulated pixel data>".into()),
    }
}

/// The attribute `tag` of a parsed header (file meta attributes included).
fn found(obj: &dicom_object::DefaultDicomObject, tag: (u16, u16)) -> Found {
    let t = Tag(tag.0, tag.1);
    if tag.0 == 0x0002 {
        return obj.meta().to_element_iter().find(|e| e.tag() == t).map_or(Found::Absent, |e| of_value(e.value(), e.vr()));
    }
    match obj.element(t) {
        Ok(e) => of_value(e.value(), e.vr()),
        Err(_) => Found::Absent,
    }
}

/// The first value of a multi-valued number (`0.5\0.5`), as a number.
fn first_number(s: &str) -> Option<f64> {
    s.split('\\').next()?.trim().parse().ok()
}

/// An instance that meets every condition.
#[derive(Debug, Clone, Serialize)]
pub struct Match {
    pub path: String,
    pub id: ObjectId,
    /// The values of the attributes the conditions and `show` name (None: absent; binary
    /// values and sequences show as `<binary>` and `<sequence of N items>`).
    pub values: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindReport {
    pub commit: ObjectId,
    /// DICOM instances looked at.
    pub instances: usize,
    pub matches: Vec<Match>,
    /// Instances whose header could not be read as DICOM, and why (none in a healthy store).
    pub unreadable: Vec<(String, String)>,
}

const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// What `find --by` counts matches by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Patient,
    Study,
    Series,
}

impl GroupBy {
    /// The attribute whose value names a group.
    pub fn keyword(self) -> &'static str {
        match self {
            GroupBy::Patient => "PatientID",
            GroupBy::Study => "StudyInstanceUID",
            GroupBy::Series => "SeriesInstanceUID",
        }
    }
}

/// The matches of one patient, study or series.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// The group's PatientID, StudyInstanceUID or SeriesInstanceUID (None: absent).
    pub key: Option<String>,
    pub instances: usize,
    /// The first match in path order, and the values of its attributes.
    pub first_path: String,
    pub values: BTreeMap<String, Option<String>>,
}

/// The matches grouped by patient, study or series, in the order their first match comes
/// (path order). The matches must carry the group's attribute (name it to [`find`]).
pub fn group(matches: &[Match], by: GroupBy) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    let mut index: std::collections::HashMap<Option<String>, usize> = std::collections::HashMap::new();
    for m in matches {
        let key = m.values.get(by.keyword()).cloned().flatten();
        match index.get(&key) {
            Some(&i) => out[i].instances += 1,
            None => {
                index.insert(key.clone(), out.len());
                out.push(Group { key, instances: 1, first_path: m.path.clone(), values: m.values.clone() });
            }
        }
    }
    out
}

/// How many instances are read before their headers are parsed (in parallel).
const BATCH: usize = 4096;

/// The DICOM instances of `rev` (at and under `paths`, all when empty) that meet every
/// condition, in path order, with the values of the attributes named.
pub fn find(repo: &Repo, rev: &str, paths: &[String], conditions: &[Condition], show: &[Attribute], progress: &dyn Progress) -> Result<FindReport, QueryError> {
    let commit = repo.resolve(rev)?;
    let tree = repo.store.read_commit(&commit)?.tree;
    let src = TreeSource { store: &repo.store, extra: None };
    let instances: Vec<(String, ObjectId)> = pathsel::files_under(&src, tree, paths, rev)?.into_iter().filter(|(_, e)| e.kind == EntryKind::Dicom).map(|(p, e)| (p, e.id)).collect();
    let mut named: Vec<&Attribute> = Vec::new();
    for a in conditions.iter().map(|c| &c.attribute).chain(show) {
        if !named.iter().any(|n| n.name == a.name) {
            named.push(a);
        }
    }
    progress.stage("reading headers", Some(instances.len() as u64), Unit::Files);
    let mut matches = Vec::new();
    let mut unreadable = Vec::new();
    for batch in instances.chunks(BATCH) {
        let results: Vec<Result<Result<Option<Match>, String>, StoreError>> = batch
            .par_iter()
            .map(|(path, id)| {
                let r = (|| {
                    let record = repo.store.read_dicom(id)?;
                    if !repo.store.contains(&record.header) {
                        return Ok(Err("header not in this store (a partial clone that could not fetch it)".to_string()));
                    }
                    let header = repo.store.read(&record.header)?;
                    Ok(match crate::dicom::open_header(&header) {
                        Err(e) => Err(e.to_string()),
                        Ok(obj) => {
                            let found: Vec<(&str, Found)> = named
                                .iter()
                                .map(|a| {
                                    // Pixel data is stored apart from the header; a
                                    // deflated file is stored whole, its pixel data inside.
                                    let f = if a.tag == PIXEL_DATA {
                                        let n = match record.pixel {
                                            Some(_) => Some(record.size.saturating_sub((record.trailer.len() + header.len() + record.pixel_element.len()) as u64)),
                                            None => crate::dicom::inflated_parts(&header).ok().flatten().filter(|p| !p.pixel_element.is_empty()).map(|p| p.pixel.len() as u64),
                                        };
                                        n.map_or(Found::Absent, |n| Found::Other(format!("<{n} bytes>")))
                                    } else {
                                        found(&obj, a.tag)
                                    };
                                    (a.name.as_str(), f)
                                })
                                .collect();
                            let get = |name: &str| found.iter().find(|(n, _)| *n == name).map(|(_, f)| f);
                            let ok = conditions.iter().all(|c| get(&c.attribute.name).is_some_and(|f| c.test(f)));
                            Ok(ok.then(|| Match { path: path.clone(), id: *id, values: found.into_iter().map(|(n, f)| (n.to_string(), f.shown())).collect() }))
                        }
                    })
                })();
                progress.inc(1);
                r
            })
            .collect();
        for ((path, _), r) in batch.iter().zip(results) {
            match r? {
                Ok(m) => matches.extend(m),
                Err(reason) => unreadable.push((path.clone(), reason)),
            }
        }
    }
    progress.finish_stage();
    Ok(FindReport { commit, instances: instances.len(), matches, unreadable })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(cond: &str, v: Found) -> bool {
        Condition::parse(cond).unwrap().test(&v)
    }

    #[test]
    fn conditions() {
        let c = Condition::parse("SliceThickness<=1.25").unwrap();
        assert_eq!((c.attribute.tag, c.op, c.value.as_str()), ((0x0018, 0x0050), Op::Le, "1.25"));
        assert_eq!(Condition::parse("(0010,0010)!=X").unwrap().attribute.tag, (0x0010, 0x0010));
        assert_eq!(Condition::parse("00100020").unwrap().op, Op::Present);
        assert_eq!(Condition::parse("!PatientAge").unwrap().op, Op::Absent);
        let text = |s: &str| Found::Text(s.into());
        assert!(holds("SliceThickness<=1.25", text("1.0")) && !holds("SliceThickness<=1.25", text("2.5")));
        assert!(holds("PixelSpacing>0.4", text("0.5\\0.5")), "the first of several values");
        assert!(holds("InstanceNumber>9", text("10")), "as numbers, not as text");
        assert!(holds("StudyDate>=20200101", text("20210305")) && !holds("StudyDate>=20200101", text("20191231")));
        assert!(holds("SeriesDescription~*AXIAL*", text("fake axial 2mm")), "globs ignore case");
        assert!(holds("Modality=CT", text("CT")) && !holds("Modality=CT", text("CTX")));
        assert!(!holds("Modality!=CT", Found::Absent), "an absent attribute meets no comparison");
        assert!(holds("!Modality", Found::Absent) && !holds("Modality", Found::Absent));
        assert!(holds("ReferencedImageSequence", Found::Other("<sequence of 2 items>".into())));
        assert!(!holds("ReferencedImageSequence=x", Found::Other("<sequence of 2 items>".into())));
        for bad in ["", "=1", "Nonsense=1", "Modality~[", "OverlayData=1"] {
            assert!(Condition::parse(bad).is_err(), "{bad:?}");
        }
        let m = |p: &str, series: Option<&str>| Match { path: p.into(), id: ObjectId::of(p.as_bytes()), values: [("SeriesInstanceUID".to_string(), series.map(String::from))].into() };
        let g = group(&[m("a", Some("1")), m("b", Some("2")), m("c", Some("1")), m("d", None)], GroupBy::Series);
        let got: Vec<(Option<&str>, usize, &str)> = g.iter().map(|g| (g.key.as_deref(), g.instances, g.first_path.as_str())).collect();
        assert_eq!(got, [(Some("1"), 2, "a"), (Some("2"), 1, "b"), (None, 1, "d")]);
        let names: Vec<String> = attributes("Rows, (0028,0030),00280011,").unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["Rows", "(0028,0030)", "00280011"]);
    }
}
