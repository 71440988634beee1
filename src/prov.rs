//! W3C PROV export for cohort (`crate::prov`).
//!
//! This module owns cohort's in-memory provenance document model — [`ProvDoc`]
//! with its namespace prefixes, entities, activities, agents and the
//! [`Relation`]s between them — and everything needed to hand that document
//! to other PROV tools:
//!
//! * [`to_prov_json`]: W3C PROV-JSON (member submission), pretty-printed;
//! * [`to_prov_n`]: PROV-N (W3C Recommendation), `document … endDocument`;
//! * [`to_dot`]: Graphviz DOT with PROV's usual styling (yellow entity
//!   ellipses, blue activity boxes, orange agent houses, labelled edges);
//! * [`check`]: validation of a document before export.
//!
//! Every serialiser is a total, deterministic function of its input: the
//! same document always yields byte-identical output (maps are walked in
//! key order, relations in list order, and the output does not depend on
//! `serde_json` feature flags such as `preserve_order`). Nothing here does
//! I/O, reads the environment or panics, whatever the input. A document that
//! does not pass [`check`] still serialises, but only a checked document is
//! guaranteed to parse back with the same identifiers (the Python `prov`
//! package's PROV-JSON and PROV-N readers were used to validate this).
//!
//! Format notes:
//! * PROV-JSON: relations without an id get blank ids `_:<tag><n>` where
//!   `<n>` is the relation's 1-based position in [`ProvDoc::relations`] and
//!   `<tag>` is `u`, `g`, `d`, `assoc`, `attr`, `del`, `inf`, `spec` or
//!   `mem` for used … hadMember (see [`Relation::blank_id`]). An `Int` that does
//!   not fit 32 bits is typed `xsd:long` instead of `xsd:int`; a non-finite
//!   `Float` is written as the string `"NaN"`, `"INF"` or `"-INF"`.
//! * PROV-N has no blank-node syntax, so relations without an id are written
//!   without one (`used(a, e, -)`), and the predeclared `prov` and `xsd`
//!   prefixes are never redeclared. Optional arguments are written as `-`
//!   where the grammar needs a marker. Local parts of qualified names are
//!   escaped per the PN_LOCAL production (`\` before `= ' ( ) , : ; [ ]`,
//!   before a leading `-`/`.` and a trailing `.`).
//! * An `xsi:` name used without an `xsi` prefix in [`ProvDoc::prefixes`]
//!   gets `xsi` declared as [`XSI_NS`] in PROV-JSON and PROV-N output.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Number, Value as Json};

/// A qualified name "prefix:local", e.g. "cohort:commit-3f2a…" or "prov:Person".
pub type QName = String;

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A plain string (`xsd:string`).
    Str(String),
    /// An integer (`xsd:int`, or `xsd:long` outside the 32-bit range).
    Int(i64),
    /// A double (`xsd:double`).
    Float(f64),
    /// A qualified name (`prov:QUALIFIED_NAME`).
    QName(QName),
    /// xsd:dateTime, RFC 3339 UTC e.g. "2026-01-02T03:04:05.000000Z"
    Time(String),
}

/// Attribute name -> value; a name may repeat (e.g. several `prov:type`).
pub type Attrs = Vec<(QName, Value)>;

/// A PROV relation between declared elements.
#[derive(Debug, Clone, PartialEq)]
pub enum Relation {
    /// `used(id; activity, entity, time, [attrs])`.
    Used {
        id: Option<QName>,
        activity: QName,
        entity: QName,
        time: Option<String>,
        attrs: Attrs,
    },
    /// `wasGeneratedBy(id; entity, activity, time, [attrs])`.
    WasGeneratedBy {
        id: Option<QName>,
        entity: QName,
        activity: QName,
        time: Option<String>,
        attrs: Attrs,
    },
    /// `wasDerivedFrom(id; generated, used, activity, -, -, [attrs])`.
    WasDerivedFrom {
        id: Option<QName>,
        generated: QName,
        used: QName,
        activity: Option<QName>,
        attrs: Attrs,
    },
    /// `wasAssociatedWith(id; activity, agent, plan, [attrs])`.
    WasAssociatedWith {
        id: Option<QName>,
        activity: QName,
        agent: QName,
        plan: Option<QName>,
        attrs: Attrs,
    },
    /// `wasAttributedTo(id; entity, agent, [attrs])`.
    WasAttributedTo {
        id: Option<QName>,
        entity: QName,
        agent: QName,
        attrs: Attrs,
    },
    /// `actedOnBehalfOf(id; delegate, responsible, [attrs])`.
    ActedOnBehalfOf {
        id: Option<QName>,
        delegate: QName,
        responsible: QName,
        attrs: Attrs,
    },
    /// `wasInformedBy(id; informed, informant, [attrs])`.
    WasInformedBy {
        id: Option<QName>,
        informed: QName,
        informant: QName,
        attrs: Attrs,
    },
    /// `specializationOf(specific, general)`.
    SpecializationOf { specific: QName, general: QName },
    /// `hadMember(collection, entity)`.
    HadMember { collection: QName, entity: QName },
}

/// A PROV document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvDoc {
    /// prefix -> namespace URI (prov, xsd are implicit; add them anyway if present)
    pub prefixes: BTreeMap<String, String>,
    /// Entity id -> attributes.
    pub entities: BTreeMap<QName, Attrs>,
    /// Activity id -> (start time, end time, attributes).
    pub activities: BTreeMap<
        QName,
        (
            Option<String>, /*start*/
            Option<String>, /*end*/
            Attrs,
        ),
    >,
    /// Agent id -> attributes.
    pub agents: BTreeMap<QName, Attrs>,
    /// Relations, in output order.
    pub relations: Vec<Relation>,
}

/// Namespace URI of the predeclared `prov` prefix.
pub const PROV_NS: &str = "http://www.w3.org/ns/prov#";
/// Namespace URI of the predeclared `xsd` prefix.
pub const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema#";
/// Namespace URI used for `xsi` when a document uses it without declaring it.
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The kind of a PROV element, as a relation endpoint requires it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Entity,
    Activity,
    Agent,
}

impl Kind {
    /// Lower-case PROV name of the kind ("entity", "activity", "agent").
    pub fn name(self) -> &'static str {
        match self {
            Kind::Entity => "entity",
            Kind::Activity => "activity",
            Kind::Agent => "agent",
        }
    }
}

/// One positional argument of a relation, in PROV-N order.
enum Slot<'a> {
    /// A required reference to an element of the given kind.
    Ref(&'static str, &'a str, Kind),
    /// An optional reference to an element of the given kind.
    OptRef(&'static str, Option<&'a str>, Kind),
    /// An optional time.
    Time(&'static str, Option<&'a str>),
}

impl Relation {
    /// The PROV-N keyword, which is also the PROV-JSON section name.
    pub fn keyword(&self) -> &'static str {
        match self {
            Relation::Used { .. } => "used",
            Relation::WasGeneratedBy { .. } => "wasGeneratedBy",
            Relation::WasDerivedFrom { .. } => "wasDerivedFrom",
            Relation::WasAssociatedWith { .. } => "wasAssociatedWith",
            Relation::WasAttributedTo { .. } => "wasAttributedTo",
            Relation::ActedOnBehalfOf { .. } => "actedOnBehalfOf",
            Relation::WasInformedBy { .. } => "wasInformedBy",
            Relation::SpecializationOf { .. } => "specializationOf",
            Relation::HadMember { .. } => "hadMember",
        }
    }

    /// The relation's own identifier, if it has one.
    pub fn id(&self) -> Option<&QName> {
        match self {
            Relation::Used { id, .. }
            | Relation::WasGeneratedBy { id, .. }
            | Relation::WasDerivedFrom { id, .. }
            | Relation::WasAssociatedWith { id, .. }
            | Relation::WasAttributedTo { id, .. }
            | Relation::ActedOnBehalfOf { id, .. }
            | Relation::WasInformedBy { id, .. } => id.as_ref(),
            Relation::SpecializationOf { .. } | Relation::HadMember { .. } => None,
        }
    }

    /// The relation's extra attributes (always empty for specializationOf
    /// and hadMember, which carry none).
    pub fn attrs(&self) -> &[(QName, Value)] {
        match self {
            Relation::Used { attrs, .. }
            | Relation::WasGeneratedBy { attrs, .. }
            | Relation::WasDerivedFrom { attrs, .. }
            | Relation::WasAssociatedWith { attrs, .. }
            | Relation::WasAttributedTo { attrs, .. }
            | Relation::ActedOnBehalfOf { attrs, .. }
            | Relation::WasInformedBy { attrs, .. } => attrs,
            Relation::SpecializationOf { .. } | Relation::HadMember { .. } => &[],
        }
    }

    /// The blank id PROV-JSON uses for this relation when it has no id of
    /// its own, given its 0-based position in [`ProvDoc::relations`]:
    /// `_:u1`, `_:g2`, `_:d3`, `_:assoc4`, `_:attr5`, `_:del6`, `_:inf7`,
    /// `_:spec8`, `_:mem9`.
    pub fn blank_id(&self, index: usize) -> String {
        let tag = match self {
            Relation::Used { .. } => "u",
            Relation::WasGeneratedBy { .. } => "g",
            Relation::WasDerivedFrom { .. } => "d",
            Relation::WasAssociatedWith { .. } => "assoc",
            Relation::WasAttributedTo { .. } => "attr",
            Relation::ActedOnBehalfOf { .. } => "del",
            Relation::WasInformedBy { .. } => "inf",
            Relation::SpecializationOf { .. } => "spec",
            Relation::HadMember { .. } => "mem",
        };
        format!("_:{tag}{}", index.saturating_add(1))
    }

    /// The positional arguments, in PROV-N order, with their PROV-JSON keys.
    fn slots(&self) -> Vec<Slot<'_>> {
        use Kind::{Activity, Agent, Entity};
        match self {
            Relation::Used {
                activity,
                entity,
                time,
                ..
            } => vec![
                Slot::Ref("prov:activity", activity, Activity),
                Slot::Ref("prov:entity", entity, Entity),
                Slot::Time("prov:time", time.as_deref()),
            ],
            Relation::WasGeneratedBy {
                entity,
                activity,
                time,
                ..
            } => vec![
                Slot::Ref("prov:entity", entity, Entity),
                Slot::Ref("prov:activity", activity, Activity),
                Slot::Time("prov:time", time.as_deref()),
            ],
            Relation::WasDerivedFrom {
                generated,
                used,
                activity,
                ..
            } => vec![
                Slot::Ref("prov:generatedEntity", generated, Entity),
                Slot::Ref("prov:usedEntity", used, Entity),
                Slot::OptRef("prov:activity", activity.as_deref(), Activity),
            ],
            Relation::WasAssociatedWith {
                activity,
                agent,
                plan,
                ..
            } => vec![
                Slot::Ref("prov:activity", activity, Activity),
                Slot::Ref("prov:agent", agent, Agent),
                Slot::OptRef("prov:plan", plan.as_deref(), Entity),
            ],
            Relation::WasAttributedTo { entity, agent, .. } => vec![
                Slot::Ref("prov:entity", entity, Entity),
                Slot::Ref("prov:agent", agent, Agent),
            ],
            Relation::ActedOnBehalfOf {
                delegate,
                responsible,
                ..
            } => vec![
                Slot::Ref("prov:delegate", delegate, Agent),
                Slot::Ref("prov:responsible", responsible, Agent),
            ],
            Relation::WasInformedBy {
                informed,
                informant,
                ..
            } => vec![
                Slot::Ref("prov:informed", informed, Activity),
                Slot::Ref("prov:informant", informant, Activity),
            ],
            Relation::SpecializationOf { specific, general } => vec![
                Slot::Ref("prov:specificEntity", specific, Entity),
                Slot::Ref("prov:generalEntity", general, Entity),
            ],
            Relation::HadMember { collection, entity } => vec![
                Slot::Ref("prov:collection", collection, Entity),
                Slot::Ref("prov:entity", entity, Entity),
            ],
        }
    }
}

// ---------------------------------------------------------------------------
// Qualified names
// ---------------------------------------------------------------------------

/// PN_CHARS_U: XML NameStartChar (letters, '_', most non-ASCII).
fn is_pn_chars_u(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// NameChars that are not NameStartChars (besides '-', '.', digits): legal
/// inside a local part but not at its start.
fn is_combining(c: char) -> bool {
    matches!(c, '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// PN_CHARS: XML NameChar minus '.'.
fn is_pn_chars(c: char) -> bool {
    is_pn_chars_u(c) || c == '-' || c.is_ascii_digit() || is_combining(c)
}

/// PN_CHARS_OTHERS that PN_LOCAL allows unescaped (besides '%' escapes).
const PN_OTHERS: &str = "/@~&+*?#$!";
/// Characters that PROV-N writes backslash-escaped anywhere in a local part.
const LOCAL_ESCAPED: &str = "='(),:;[]";

/// PN_PREFIX: an NCName that starts with a letter (not '_') and does not end
/// with '.'.
fn is_pn_prefix(p: &str) -> bool {
    let mut chars = p.chars();
    match chars.next() {
        Some(c) if is_pn_chars_u(c) && c != '_' => {}
        _ => return false,
    }
    !p.ends_with('.') && chars.all(|c| is_pn_chars(c) || c == '.')
}

fn is_hex_at(chars: &[char], i: usize) -> bool {
    chars.get(i).is_some_and(|c| c.is_ascii_hexdigit())
}

/// Why `local` cannot be a PROV-N local part, if it cannot.
fn local_problem(local: &str) -> Option<String> {
    let chars: Vec<char> = local.chars().collect();
    match chars.first() {
        None => return Some("empty local part".to_string()),
        Some(&c) if is_combining(c) => {
            return Some(format!("local part cannot start with {c:?}"));
        }
        Some(_) => {}
    }
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c == '%' {
            if is_hex_at(&chars, i + 1) && is_hex_at(&chars, i + 2) {
                i += 3;
                continue;
            }
            return Some("'%' not followed by two hex digits in local part".to_string());
        }
        if !(is_pn_chars(c) || c == '.' || PN_OTHERS.contains(c) || LOCAL_ESCAPED.contains(c)) {
            return Some(format!("character {c:?} not allowed in local part"));
        }
        i += 1;
    }
    None
}

/// Escape a local part for PROV-N. Characters PROV-N cannot write at all
/// (only possible in a document that fails [`check`]) are percent-encoded as
/// UTF-8, so the output still parses.
fn escape_local(local: &str) -> String {
    let chars: Vec<char> = local.chars().collect();
    let last = chars.len().saturating_sub(1);
    let mut out = String::with_capacity(local.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        let leading_or_trailing = (i == 0 && (c == '-' || c == '.')) || (i == last && c == '.');
        if i == 0 && is_combining(c) {
            push_percent(&mut out, c);
        } else if c == '%' {
            if is_hex_at(&chars, i + 1) && is_hex_at(&chars, i + 2) {
                out.push('%');
            } else {
                out.push_str("%25");
            }
        } else if leading_or_trailing || LOCAL_ESCAPED.contains(c) {
            out.push('\\');
            out.push(c);
        } else if is_pn_chars(c) || c == '.' || PN_OTHERS.contains(c) {
            out.push(c);
        } else {
            push_percent(&mut out, c);
        }
    }
    out
}

fn push_percent(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
}

/// A qualified name as PROV-N writes it (prefix, ':', escaped local part).
fn provn_qname(q: &str) -> String {
    match q.split_once(':') {
        Some((prefix, local)) => format!("{prefix}:{}", escape_local(local)),
        None => escape_local(q),
    }
}

// ---------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------

/// Whether `s` is an xsd:dateTime that every PROV reader accepts:
/// `YYYY-MM-DDThh:mm:ss`, optional fraction `.s+`, optional `Z` or
/// `±hh:mm` (at most ±14:00); year 0001–9999, a real calendar day,
/// hour 00–23, minute and second 00–59.
pub fn is_xsd_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        part.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0, 4),
        num(5, 2),
        num(8, 2),
        num(11, 2),
        num(14, 2),
        num(17, 2),
    ) else {
        return false;
    };
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return false;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if year == 0 || day == 0 || day > days || hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let mut i = 19;
    if sep(i, b'.') {
        let digits = b.get(i + 1..).map_or(0, |rest| {
            rest.iter().take_while(|d| d.is_ascii_digit()).count()
        });
        if digits == 0 {
            return false;
        }
        i += 1 + digits;
    }
    match b.get(i) {
        None => true,
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+') | Some(b'-') => {
            let (Some(h), Some(m)) = (num(i + 1, 2), num(i + 4, 2)) else {
                return false;
            };
            sep(i + 3, b':') && i + 6 == b.len() && m <= 59 && (h < 14 || (h == 14 && m == 0))
        }
        Some(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Every qualified name the document mentions, in a deterministic order.
fn all_qnames(doc: &ProvDoc) -> Vec<&str> {
    fn attrs_names<'a>(attrs: &'a [(QName, Value)], out: &mut Vec<&'a str>) {
        for (name, value) in attrs {
            out.push(name);
            if let Value::QName(q) = value {
                out.push(q);
            }
        }
    }
    let mut out = Vec::new();
    for (id, attrs) in &doc.entities {
        out.push(id.as_str());
        attrs_names(attrs, &mut out);
    }
    for (id, (_, _, attrs)) in &doc.activities {
        out.push(id.as_str());
        attrs_names(attrs, &mut out);
    }
    for (id, attrs) in &doc.agents {
        out.push(id.as_str());
        attrs_names(attrs, &mut out);
    }
    for rel in &doc.relations {
        if let Some(id) = rel.id() {
            out.push(id);
        }
        for slot in rel.slots() {
            match slot {
                Slot::Ref(_, name, _) | Slot::OptRef(_, Some(name), _) => out.push(name),
                Slot::OptRef(_, None, _) | Slot::Time(..) => {}
            }
        }
        attrs_names(rel.attrs(), &mut out);
    }
    out
}

/// The prefixes to declare: the document's own, plus `xsi` when it is used
/// but not declared.
fn effective_prefixes(doc: &ProvDoc) -> BTreeMap<String, String> {
    let mut prefixes = doc.prefixes.clone();
    if !prefixes.contains_key("xsi")
        && all_qnames(doc)
            .iter()
            .any(|q| q.split_once(':').is_some_and(|(p, _)| p == "xsi"))
    {
        prefixes.insert("xsi".to_string(), XSI_NS.to_string());
    }
    prefixes
}

/// Canonical text of a double: Rust's shortest round-trip form, or the
/// xsd:double spellings of the non-finite values.
fn double_text(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "INF" } else { "-INF" }.to_string()
    } else {
        format!("{x:?}")
    }
}

fn int_type(n: i64) -> &'static str {
    if i32::try_from(n).is_ok() {
        "xsd:int"
    } else {
        "xsd:long"
    }
}

// ---------------------------------------------------------------------------
// PROV-JSON
// ---------------------------------------------------------------------------

/// A JSON object whose keys are inserted in sorted order, so the output is
/// the same whether or not `serde_json`'s `preserve_order` is enabled.
fn json_object(entries: BTreeMap<String, Json>) -> Json {
    let mut map = Map::new();
    for (k, v) in entries {
        map.insert(k, v);
    }
    Json::Object(map)
}

fn json_typed(value: Json, ty: &str) -> Json {
    let mut m = BTreeMap::new();
    m.insert("$".to_string(), value);
    m.insert("type".to_string(), Json::String(ty.to_string()));
    json_object(m)
}

fn json_value(v: &Value) -> Json {
    match v {
        Value::Str(s) => Json::String(s.clone()),
        Value::Int(n) => json_typed(Json::Number(Number::from(*n)), int_type(*n)),
        Value::Float(x) => {
            let value =
                Number::from_f64(*x).map_or_else(|| Json::String(double_text(*x)), Json::Number);
            json_typed(value, "xsd:double")
        }
        Value::QName(q) => json_typed(Json::String(q.clone()), "prov:QUALIFIED_NAME"),
        Value::Time(t) => json_typed(Json::String(t.clone()), "xsd:dateTime"),
    }
}

/// Attributes as PROV-JSON members; a repeated name becomes a list.
fn json_attrs(attrs: &[(QName, Value)]) -> BTreeMap<String, Json> {
    let mut grouped: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for (name, value) in attrs {
        grouped
            .entry(name.clone())
            .or_default()
            .push(json_value(value));
    }
    grouped
        .into_iter()
        .map(|(k, mut vs)| {
            let v = if vs.len() == 1 {
                vs.pop().unwrap_or(Json::Null)
            } else {
                Json::Array(vs)
            };
            (k, v)
        })
        .collect()
}

/// Render `doc` as W3C PROV-JSON (pretty-printed, two-space indent, keys
/// sorted, trailing newline). Only non-empty sections are written.
pub fn to_prov_json(doc: &ProvDoc) -> String {
    // section -> record id -> record instances (several when ids repeat)
    let mut sections: BTreeMap<&'static str, BTreeMap<String, Vec<Json>>> = BTreeMap::new();
    let mut add = |section: &'static str, id: String, record: BTreeMap<String, Json>| {
        sections
            .entry(section)
            .or_default()
            .entry(id)
            .or_default()
            .push(json_object(record));
    };
    for (id, attrs) in &doc.entities {
        add("entity", id.clone(), json_attrs(attrs));
    }
    for (id, (start, end, attrs)) in &doc.activities {
        let mut rec = json_attrs(attrs);
        if let Some(t) = start {
            rec.insert("prov:startTime".to_string(), Json::String(t.clone()));
        }
        if let Some(t) = end {
            rec.insert("prov:endTime".to_string(), Json::String(t.clone()));
        }
        add("activity", id.clone(), rec);
    }
    for (id, attrs) in &doc.agents {
        add("agent", id.clone(), json_attrs(attrs));
    }
    for (index, rel) in doc.relations.iter().enumerate() {
        let mut rec = json_attrs(rel.attrs());
        for slot in rel.slots() {
            match slot {
                Slot::Ref(key, name, _) | Slot::OptRef(key, Some(name), _) => {
                    rec.insert(key.to_string(), Json::String(name.to_string()));
                }
                Slot::Time(key, Some(t)) => {
                    rec.insert(key.to_string(), Json::String(t.to_string()));
                }
                Slot::OptRef(_, None, _) | Slot::Time(_, None) => {}
            }
        }
        let id = rel.id().cloned().unwrap_or_else(|| rel.blank_id(index));
        add(rel.keyword(), id, rec);
    }

    let mut top: BTreeMap<String, Json> = BTreeMap::new();
    let prefixes = effective_prefixes(doc);
    if !prefixes.is_empty() {
        let p = prefixes
            .into_iter()
            .map(|(k, v)| (k, Json::String(v)))
            .collect();
        top.insert("prefix".to_string(), json_object(p));
    }
    for (section, records) in sections {
        let records = records
            .into_iter()
            .map(|(id, mut instances)| {
                let v = if instances.len() == 1 {
                    instances.pop().unwrap_or(Json::Null)
                } else {
                    Json::Array(instances)
                };
                (id, v)
            })
            .collect();
        top.insert(section.to_string(), json_object(records));
    }
    let mut out = serde_json::to_string_pretty(&json_object(top)).unwrap_or_default();
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------
// PROV-N
// ---------------------------------------------------------------------------

/// A PROV-N string literal with `"`, `\` and the ECHAR controls escaped.
fn provn_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{C}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn provn_value(v: &Value) -> String {
    match v {
        Value::Str(s) => provn_string(s),
        Value::Int(n) if i32::try_from(*n).is_ok() => n.to_string(),
        Value::Int(n) => format!("\"{n}\" %% xsd:long"),
        Value::Float(x) => format!("\"{}\" %% xsd:double", double_text(*x)),
        Value::QName(q) => format!("'{}'", provn_qname(q)),
        Value::Time(t) => format!("{} %% xsd:dateTime", provn_string(t)),
    }
}

/// `, [name=value, …]`, or nothing for no attributes.
fn provn_attrs(attrs: &[(QName, Value)]) -> String {
    if attrs.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = attrs
        .iter()
        .map(|(name, value)| format!("{}={}", provn_qname(name), provn_value(value)))
        .collect();
    format!(", [{}]", pairs.join(", "))
}

/// An IRI between angle brackets; characters an IRI_REF cannot hold (only
/// in a document that fails [`check`]) are percent-encoded.
fn provn_iri(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len() + 2);
    out.push('<');
    for c in uri.chars() {
        if iri_forbidden(c) {
            push_percent(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out.push('>');
    out
}

fn iri_forbidden(c: char) -> bool {
    c <= ' ' || "<>\"{}|^`\\".contains(c)
}

fn provn_time(t: Option<&str>) -> String {
    t.map_or_else(|| "-".to_string(), str::to_string)
}

fn provn_relation(rel: &Relation) -> String {
    let mut args: Vec<String> = rel
        .slots()
        .into_iter()
        .map(|slot| match slot {
            Slot::Ref(_, name, _) => provn_qname(name),
            Slot::OptRef(_, name, _) => name.map_or_else(|| "-".to_string(), provn_qname),
            Slot::Time(_, t) => provn_time(t),
        })
        .collect();
    // wasDerivedFrom takes 2 or 5 arguments: e2, e1[, a, g, u].
    if let Relation::WasDerivedFrom { activity, .. } = rel {
        if activity.is_some() {
            args.push("-".to_string());
            args.push("-".to_string());
        } else {
            args.truncate(2);
        }
    }
    let id = rel
        .id()
        .map(|id| format!("{}; ", provn_qname(id)))
        .unwrap_or_default();
    format!(
        "{}({id}{}{})",
        rel.keyword(),
        args.join(", "),
        provn_attrs(rel.attrs())
    )
}

/// Render `doc` as a PROV-N `document … endDocument` (two-space indent,
/// prefixes first, then entities, activities, agents, relations).
pub fn to_prov_n(doc: &ProvDoc) -> String {
    let mut out = String::from("document\n");
    let mut declared_any = false;
    for (prefix, uri) in effective_prefixes(doc) {
        if prefix == "prov" || prefix == "xsd" {
            continue; // predeclared by PROV-N
        }
        out.push_str(&format!("  prefix {prefix} {}\n", provn_iri(&uri)));
        declared_any = true;
    }
    let has_records = !(doc.entities.is_empty()
        && doc.activities.is_empty()
        && doc.agents.is_empty()
        && doc.relations.is_empty());
    if declared_any && has_records {
        out.push('\n');
    }
    for (id, attrs) in &doc.entities {
        out.push_str(&format!(
            "  entity({}{})\n",
            provn_qname(id),
            provn_attrs(attrs)
        ));
    }
    for (id, (start, end, attrs)) in &doc.activities {
        let times = if start.is_none() && end.is_none() {
            String::new()
        } else {
            format!(
                ", {}, {}",
                provn_time(start.as_deref()),
                provn_time(end.as_deref())
            )
        };
        out.push_str(&format!(
            "  activity({}{times}{})\n",
            provn_qname(id),
            provn_attrs(attrs)
        ));
    }
    for (id, attrs) in &doc.agents {
        out.push_str(&format!(
            "  agent({}{})\n",
            provn_qname(id),
            provn_attrs(attrs)
        ));
    }
    for rel in &doc.relations {
        out.push_str("  ");
        out.push_str(&provn_relation(rel));
        out.push('\n');
    }
    out.push_str("endDocument\n");
    out
}

// ---------------------------------------------------------------------------
// DOT
// ---------------------------------------------------------------------------

/// A double-quoted DOT string: `\` and `"` escaped, line breaks as `\n`.
fn dot_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn plain_value(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::QName(s) | Value::Time(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Float(x) => double_text(*x),
    }
}

/// Node label: the id, then each `prov:label` value on its own line.
fn dot_label(id: &str, attrs: &[(QName, Value)]) -> String {
    let mut label = id.to_string();
    for (name, value) in attrs {
        if name == "prov:label" {
            label.push('\n');
            label.push_str(&plain_value(value));
        }
    }
    dot_string(&label)
}

fn dot_edge_style(rel: &Relation) -> &'static str {
    match rel {
        Relation::Used { .. } => ", fontsize=\"10.0\", color=\"red4\", fontcolor=\"red\"",
        Relation::WasGeneratedBy { .. } => {
            ", fontsize=\"10.0\", color=\"darkgreen\", fontcolor=\"darkgreen\""
        }
        Relation::WasAssociatedWith { .. }
        | Relation::WasAttributedTo { .. }
        | Relation::ActedOnBehalfOf { .. } => ", fontsize=\"10.0\", color=\"#FED37F\"",
        _ => ", fontsize=\"10.0\"",
    }
}

/// Render `doc` as a Graphviz digraph (bottom-to-top, like `prov.dot`):
/// entities as yellow ellipses, activities as blue boxes, agents as orange
/// houses, one labelled edge per relation from its first argument to its
/// second (e.g. activity → entity for `used`). Nodes are labelled with the
/// id plus any `prov:label` values.
pub fn to_dot(doc: &ProvDoc) -> String {
    let mut out = String::from("digraph \"prov\" {\n  rankdir=\"BT\";\n");
    const ENTITY: &str =
        "shape=\"oval\", style=\"filled\", fillcolor=\"#FFFC87\", color=\"#808080\"";
    const ACTIVITY: &str =
        "shape=\"box\", style=\"filled\", fillcolor=\"#9FB1FC\", color=\"#0000FF\"";
    const AGENT: &str = "shape=\"house\", style=\"filled\", fillcolor=\"#FED37F\"";
    for (id, attrs) in &doc.entities {
        out.push_str(&format!(
            "  {} [label={}, {ENTITY}];\n",
            dot_string(id),
            dot_label(id, attrs)
        ));
    }
    for (id, (_, _, attrs)) in &doc.activities {
        out.push_str(&format!(
            "  {} [label={}, {ACTIVITY}];\n",
            dot_string(id),
            dot_label(id, attrs)
        ));
    }
    for (id, attrs) in &doc.agents {
        out.push_str(&format!(
            "  {} [label={}, {AGENT}];\n",
            dot_string(id),
            dot_label(id, attrs)
        ));
    }
    for rel in &doc.relations {
        let ends: Vec<&str> = rel
            .slots()
            .into_iter()
            .filter_map(|slot| match slot {
                Slot::Ref(_, name, _) => Some(name),
                _ => None,
            })
            .collect();
        if let [from, to, ..] = ends.as_slice() {
            out.push_str(&format!(
                "  {} -> {} [label={}{}];\n",
                dot_string(from),
                dot_string(to),
                dot_string(rel.keyword()),
                dot_edge_style(rel)
            ));
        }
    }
    out.push_str("}\n");
    out
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

/// PROV's formal attribute names; they are written from the record's own
/// fields, so an extra attribute may not use one.
const RESERVED_ATTRS: [&str; 26] = [
    "prov:entity",
    "prov:activity",
    "prov:trigger",
    "prov:informed",
    "prov:informant",
    "prov:starter",
    "prov:ender",
    "prov:agent",
    "prov:plan",
    "prov:delegate",
    "prov:responsible",
    "prov:generatedEntity",
    "prov:usedEntity",
    "prov:generation",
    "prov:usage",
    "prov:specificEntity",
    "prov:generalEntity",
    "prov:alternate1",
    "prov:alternate2",
    "prov:bundle",
    "prov:influencee",
    "prov:influencer",
    "prov:collection",
    "prov:time",
    "prov:startTime",
    "prov:endTime",
];

struct Checker<'a> {
    doc: &'a ProvDoc,
}

impl Checker<'_> {
    fn qname(&self, q: &str, what: &str) -> Result<(), String> {
        let Some((prefix, local)) = q.split_once(':') else {
            return Err(format!("{what}: qualified name {q:?} has no prefix"));
        };
        if !is_pn_prefix(prefix) {
            return Err(format!(
                "{what}: qualified name {q:?} has an invalid prefix {prefix:?}"
            ));
        }
        if !matches!(prefix, "prov" | "xsd" | "xsi") && !self.doc.prefixes.contains_key(prefix) {
            return Err(format!(
                "{what}: prefix {prefix:?} of {q:?} is not declared"
            ));
        }
        if let Some(problem) = local_problem(local) {
            return Err(format!("{what}: qualified name {q:?}: {problem}"));
        }
        Ok(())
    }

    fn time(&self, t: &str, what: &str) -> Result<(), String> {
        if is_xsd_datetime(t) {
            Ok(())
        } else {
            Err(format!("{what}: {t:?} is not an xsd:dateTime"))
        }
    }

    fn attrs(&self, attrs: &[(QName, Value)], what: &str) -> Result<(), String> {
        for (name, value) in attrs {
            let at = format!("{what}, attribute {name:?}");
            self.qname(name, &at)?;
            if RESERVED_ATTRS.contains(&name.as_str()) {
                return Err(format!(
                    "{at}: is a formal PROV attribute, not an extra one"
                ));
            }
            match value {
                Value::QName(q) => self.qname(q, &at)?,
                Value::Time(t) => self.time(t, &at)?,
                Value::Str(_) | Value::Int(_) | Value::Float(_) => {}
            }
        }
        Ok(())
    }

    fn declared(&self, name: &str, kind: Kind) -> bool {
        match kind {
            Kind::Entity => self.doc.entities.contains_key(name),
            Kind::Activity => self.doc.activities.contains_key(name),
            Kind::Agent => self.doc.agents.contains_key(name),
        }
    }

    fn kinds_of(&self, name: &str) -> Vec<&'static str> {
        [Kind::Entity, Kind::Activity, Kind::Agent]
            .into_iter()
            .filter(|k| self.declared(name, *k))
            .map(Kind::name)
            .collect()
    }

    fn endpoint(&self, key: &str, name: &str, kind: Kind, what: &str) -> Result<(), String> {
        let at = format!("{what}, {key}");
        self.qname(name, &at)?;
        if self.declared(name, kind) {
            return Ok(());
        }
        let kinds = self.kinds_of(name);
        if kinds.is_empty() {
            Err(format!(
                "{at}: {name:?} is not declared (expected an {})",
                kind.name()
            ))
        } else {
            Err(format!(
                "{at}: {name:?} is declared as {} but must be an {}",
                kinds.join("/"),
                kind.name()
            ))
        }
    }

    fn run(&self) -> Result<(), String> {
        let doc = self.doc;
        for (prefix, uri) in &doc.prefixes {
            if !is_pn_prefix(prefix) {
                return Err(format!(
                    "prefix {prefix:?} is not a valid PROV-N prefix name"
                ));
            }
            if prefix == "default" {
                return Err("prefix \"default\" is reserved by PROV-JSON".to_string());
            }
            if uri.is_empty() {
                return Err(format!("prefix {prefix:?}: empty namespace URI"));
            }
            if let Some(c) = uri.chars().find(|&c| iri_forbidden(c)) {
                return Err(format!(
                    "prefix {prefix:?}: character {c:?} not allowed in a namespace URI"
                ));
            }
            let fixed = match prefix.as_str() {
                "prov" => Some(PROV_NS),
                "xsd" => Some(XSD_NS),
                _ => None,
            };
            if let Some(expected) = fixed {
                if uri != expected {
                    return Err(format!(
                        "prefix {prefix:?} must be bound to <{expected}>, not <{uri}>"
                    ));
                }
            }
        }
        for (id, attrs) in &doc.entities {
            let what = format!("entity {id:?}");
            self.qname(id, &what)?;
            self.attrs(attrs, &what)?;
        }
        for (id, (start, end, attrs)) in &doc.activities {
            let what = format!("activity {id:?}");
            self.qname(id, &what)?;
            if let Some(t) = start {
                self.time(t, &format!("{what}, start time"))?;
            }
            if let Some(t) = end {
                self.time(t, &format!("{what}, end time"))?;
            }
            self.attrs(attrs, &what)?;
        }
        for (id, attrs) in &doc.agents {
            let what = format!("agent {id:?}");
            self.qname(id, &what)?;
            self.attrs(attrs, &what)?;
        }
        let mut ids: HashSet<&str> = HashSet::new();
        for (index, rel) in doc.relations.iter().enumerate() {
            let mut what = format!("relation #{} ({})", index + 1, rel.keyword());
            if let Some(id) = rel.id() {
                what = format!("{what} {id:?}");
                self.qname(id, &what)?;
                if !ids.insert(id) {
                    return Err(format!("{what}: duplicate relation id {id:?}"));
                }
            }
            for slot in rel.slots() {
                match slot {
                    Slot::Ref(key, name, kind) | Slot::OptRef(key, Some(name), kind) => {
                        self.endpoint(key, name, kind, &what)?;
                    }
                    Slot::Time(key, Some(t)) => self.time(t, &format!("{what}, {key}"))?,
                    Slot::OptRef(_, None, _) | Slot::Time(_, None) => {}
                }
            }
            self.attrs(rel.attrs(), &what)?;
        }
        Ok(())
    }
}

/// Validate `doc`; returns the first problem found, checking prefixes, then
/// entities, activities, agents (each in id order) and relations (in order).
///
/// It rejects:
/// * a prefix that is not a PROV-N `PN_PREFIX` (an NCName starting with a
///   letter and not ending in `.`), the prefix `default` (PROV-JSON uses that
///   key for the default namespace), an empty namespace URI or one holding a
///   space, control character, `<`, `>`, `"`, `{`, `}`, `|`, `^`, backquote
///   or `\`, and `prov`/`xsd`
///   bound to anything but [`PROV_NS`]/[`XSD_NS`];
/// * a qualified name (id, endpoint, attribute name or `Value::QName`) that has
///   no `:`, whose prefix is invalid or not declared (`prov`, `xsd` and `xsi`
///   are always allowed), or whose local part is empty, starts with U+00B7,
///   U+0300–U+036F or U+203F–U+2040, contains `%` not followed by two hex
///   digits, or contains a character outside XML NameChar, `.`,
///   `/ @ ~ & + * ? # $ !` and the escapable `= ' ( ) , : ; [ ]` (so no
///   whitespace, `"`, `<`, `>`, `\`, `{`, `}`, `|`, `^` or backquote);
/// * a time (activity start/end, relation time, `Value::Time`) that is not an
///   xsd:dateTime per [`is_xsd_datetime`];
/// * an extra attribute named after a formal PROV attribute (`prov:time`,
///   `prov:entity`, `prov:startTime`, …);
/// * a relation endpoint that is not declared, or not declared with the kind
///   the relation needs (a plan must be an entity);
/// * two relations with the same id.
pub fn check(doc: &ProvDoc) -> Result<(), String> {
    Checker { doc }.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        x.to_string()
    }

    /// entity e1 (with type + label), activity a1, agent ag1, used + generated.
    fn tiny() -> ProvDoc {
        let mut doc = ProvDoc::default();
        doc.prefixes.insert(s("ex"), s("http://example.org/"));
        doc.entities.insert(
            s("ex:e1"),
            vec![
                (s("prov:type"), Value::QName(s("ex:Commit"))),
                (s("prov:label"), Value::Str(s("say \"hi\"\nback\\slash"))),
            ],
        );
        doc.activities.insert(
            s("ex:a1"),
            (
                Some(s("2026-01-02T03:04:05Z")),
                None,
                vec![(s("ex:n"), Value::Int(3))],
            ),
        );
        doc.agents.insert(
            s("ex:ag1"),
            vec![(s("prov:type"), Value::QName(s("prov:Person")))],
        );
        doc.relations.push(Relation::Used {
            id: None,
            activity: s("ex:a1"),
            entity: s("ex:e1"),
            time: Some(s("2026-01-02T03:04:06Z")),
            attrs: vec![],
        });
        doc.relations.push(Relation::WasAssociatedWith {
            id: Some(s("ex:assoc")),
            activity: s("ex:a1"),
            agent: s("ex:ag1"),
            plan: None,
            attrs: vec![(s("prov:role"), Value::Float(0.5))],
        });
        doc
    }

    #[test]
    fn golden_prov_json() {
        let expected = r##"{
  "activity": {
    "ex:a1": {
      "ex:n": {
        "$": 3,
        "type": "xsd:int"
      },
      "prov:startTime": "2026-01-02T03:04:05Z"
    }
  },
  "agent": {
    "ex:ag1": {
      "prov:type": {
        "$": "prov:Person",
        "type": "prov:QUALIFIED_NAME"
      }
    }
  },
  "entity": {
    "ex:e1": {
      "prov:label": "say \"hi\"\nback\\slash",
      "prov:type": {
        "$": "ex:Commit",
        "type": "prov:QUALIFIED_NAME"
      }
    }
  },
  "prefix": {
    "ex": "http://example.org/"
  },
  "used": {
    "_:u1": {
      "prov:activity": "ex:a1",
      "prov:entity": "ex:e1",
      "prov:time": "2026-01-02T03:04:06Z"
    }
  },
  "wasAssociatedWith": {
    "ex:assoc": {
      "prov:activity": "ex:a1",
      "prov:agent": "ex:ag1",
      "prov:role": {
        "$": 0.5,
        "type": "xsd:double"
      }
    }
  }
}
"##;
        assert_eq!(to_prov_json(&tiny()), expected);
    }

    #[test]
    fn golden_prov_n() {
        let expected = r#"document
  prefix ex <http://example.org/>

  entity(ex:e1, [prov:type='ex:Commit', prov:label="say \"hi\"\nback\\slash"])
  activity(ex:a1, 2026-01-02T03:04:05Z, -, [ex:n=3])
  agent(ex:ag1, [prov:type='prov:Person'])
  used(ex:a1, ex:e1, 2026-01-02T03:04:06Z)
  wasAssociatedWith(ex:assoc; ex:a1, ex:ag1, -, [prov:role="0.5" %% xsd:double])
endDocument
"#;
        assert_eq!(to_prov_n(&tiny()), expected);
    }

    #[test]
    fn golden_dot() {
        let expected = r##"digraph "prov" {
  rankdir="BT";
  "ex:e1" [label="ex:e1\nsay \"hi\"\nback\\slash", shape="oval", style="filled", fillcolor="#FFFC87", color="#808080"];
  "ex:a1" [label="ex:a1", shape="box", style="filled", fillcolor="#9FB1FC", color="#0000FF"];
  "ex:ag1" [label="ex:ag1", shape="house", style="filled", fillcolor="#FED37F"];
  "ex:a1" -> "ex:e1" [label="used", fontsize="10.0", color="red4", fontcolor="red"];
  "ex:a1" -> "ex:ag1" [label="wasAssociatedWith", fontsize="10.0", color="#FED37F"];
}
"##;
        assert_eq!(to_dot(&tiny()), expected);
    }

    #[test]
    fn tiny_doc_checks() {
        assert_eq!(check(&tiny()), Ok(()));
        assert_eq!(check(&ProvDoc::default()), Ok(()));
    }

    #[test]
    fn empty_doc_outputs() {
        let doc = ProvDoc::default();
        assert_eq!(to_prov_json(&doc), "{}\n");
        assert_eq!(to_prov_n(&doc), "document\nendDocument\n");
        assert_eq!(to_dot(&doc), "digraph \"prov\" {\n  rankdir=\"BT\";\n}\n");
    }

    #[test]
    fn deterministic() {
        let a = tiny();
        let mut b = ProvDoc::default();
        // Same content, inserted in another order.
        for (k, v) in a.agents.iter().rev() {
            b.agents.insert(k.clone(), v.clone());
        }
        for (k, v) in a.activities.iter().rev() {
            b.activities.insert(k.clone(), v.clone());
        }
        for (k, v) in a.entities.iter().rev() {
            b.entities.insert(k.clone(), v.clone());
        }
        b.prefixes = a.prefixes.clone();
        b.relations = a.relations.clone();
        for _ in 0..3 {
            assert_eq!(to_prov_json(&a), to_prov_json(&b));
            assert_eq!(to_prov_n(&a), to_prov_n(&b));
            assert_eq!(to_dot(&a), to_dot(&b));
        }
    }

    #[test]
    fn blank_ids_follow_relation_positions() {
        let mut doc = tiny();
        doc.relations.push(Relation::WasGeneratedBy {
            id: None,
            entity: s("ex:e1"),
            activity: s("ex:a1"),
            time: None,
            attrs: vec![],
        });
        doc.relations.push(Relation::SpecializationOf {
            specific: s("ex:e1"),
            general: s("ex:e1"),
        });
        doc.relations.push(Relation::HadMember {
            collection: s("ex:e1"),
            entity: s("ex:e1"),
        });
        let json = to_prov_json(&doc);
        for id in ["\"_:u1\"", "\"_:g3\"", "\"_:spec4\"", "\"_:mem5\""] {
            assert!(json.contains(id), "{id} missing in {json}");
        }
        let n = to_prov_n(&doc);
        assert!(n.contains("  wasGeneratedBy(ex:e1, ex:a1, -)\n"));
        assert!(n.contains("  specializationOf(ex:e1, ex:e1)\n"));
        assert!(n.contains("  hadMember(ex:e1, ex:e1)\n"));
        assert!(!n.contains("_:"));
    }

    #[test]
    fn relation_arity_in_prov_n() {
        let mut doc = tiny();
        doc.entities.insert(s("ex:e0"), vec![]);
        doc.entities.insert(s("ex:plan"), vec![]);
        doc.agents.insert(s("ex:ag0"), vec![]);
        doc.activities.insert(s("ex:a0"), (None, None, vec![]));
        doc.relations = vec![
            Relation::WasDerivedFrom {
                id: None,
                generated: s("ex:e1"),
                used: s("ex:e0"),
                activity: None,
                attrs: vec![],
            },
            Relation::WasDerivedFrom {
                id: Some(s("ex:d")),
                generated: s("ex:e1"),
                used: s("ex:e0"),
                activity: Some(s("ex:a1")),
                attrs: vec![(s("prov:type"), Value::QName(s("prov:Revision")))],
            },
            Relation::WasAssociatedWith {
                id: None,
                activity: s("ex:a1"),
                agent: s("ex:ag1"),
                plan: Some(s("ex:plan")),
                attrs: vec![],
            },
            Relation::WasAttributedTo {
                id: None,
                entity: s("ex:e1"),
                agent: s("ex:ag1"),
                attrs: vec![],
            },
            Relation::ActedOnBehalfOf {
                id: None,
                delegate: s("ex:ag1"),
                responsible: s("ex:ag0"),
                attrs: vec![],
            },
            Relation::WasInformedBy {
                id: None,
                informed: s("ex:a1"),
                informant: s("ex:a0"),
                attrs: vec![],
            },
        ];
        assert_eq!(check(&doc), Ok(()));
        let n = to_prov_n(&doc);
        for line in [
            "  activity(ex:a0)\n",
            "  wasDerivedFrom(ex:e1, ex:e0)\n",
            "  wasDerivedFrom(ex:d; ex:e1, ex:e0, ex:a1, -, -, [prov:type='prov:Revision'])\n",
            "  wasAssociatedWith(ex:a1, ex:ag1, ex:plan)\n",
            "  wasAttributedTo(ex:e1, ex:ag1)\n",
            "  actedOnBehalfOf(ex:ag1, ex:ag0)\n",
            "  wasInformedBy(ex:a1, ex:a0)\n",
        ] {
            assert!(n.contains(line), "{line:?} missing in\n{n}");
        }
        let json = to_prov_json(&doc);
        assert!(json.contains("\"prov:plan\": \"ex:plan\""));
        assert!(json.contains("\"prov:generatedEntity\": \"ex:e1\""));
        assert!(json.contains("\"prov:usedEntity\": \"ex:e0\""));
        assert!(json.contains("\"prov:delegate\": \"ex:ag1\""));
        assert!(json.contains("\"prov:responsible\": \"ex:ag0\""));
        assert!(json.contains("\"prov:informed\": \"ex:a1\""));
        assert!(json.contains("\"prov:informant\": \"ex:a0\""));
    }

    #[test]
    fn check_undeclared_endpoint() {
        let mut doc = tiny();
        doc.relations.push(Relation::WasAttributedTo {
            id: None,
            entity: s("ex:nope"),
            agent: s("ex:ag1"),
            attrs: vec![],
        });
        let err = check(&doc).unwrap_err();
        assert!(err.contains("\"ex:nope\" is not declared"), "{err}");
        assert!(err.contains("relation #3 (wasAttributedTo)"), "{err}");
    }

    #[test]
    fn check_wrong_kind() {
        let mut doc = tiny();
        doc.relations.push(Relation::Used {
            id: None,
            activity: s("ex:e1"),
            entity: s("ex:e1"),
            time: None,
            attrs: vec![],
        });
        let err = check(&doc).unwrap_err();
        assert!(
            err.contains("declared as entity but must be an activity"),
            "{err}"
        );
        // A plan must be an entity.
        let mut doc = tiny();
        doc.relations.push(Relation::WasAssociatedWith {
            id: None,
            activity: s("ex:a1"),
            agent: s("ex:ag1"),
            plan: Some(s("ex:ag1")),
            attrs: vec![],
        });
        let err = check(&doc).unwrap_err();
        assert!(
            err.contains("prov:plan") && err.contains("must be an entity"),
            "{err}"
        );
    }

    #[test]
    fn check_undeclared_prefix() {
        let mut doc = tiny();
        doc.entities.insert(s("zz:e"), vec![]);
        let err = check(&doc).unwrap_err();
        assert!(
            err.contains("prefix \"zz\" of \"zz:e\" is not declared"),
            "{err}"
        );
        let mut doc = tiny();
        doc.agents.insert(
            s("ex:x"),
            vec![(s("prov:type"), Value::QName(s("foaf:Person")))],
        );
        assert!(check(&doc).unwrap_err().contains("prefix \"foaf\""));
        // prov, xsd and xsi are always allowed.
        let mut doc = tiny();
        doc.entities.insert(
            s("ex:x"),
            vec![
                (s("xsi:type"), Value::QName(s("xsd:string"))),
                (s("prov:value"), Value::Int(1)),
            ],
        );
        assert_eq!(check(&doc), Ok(()));
        // ... and an undeclared xsi is declared in the output.
        assert!(to_prov_n(&doc).contains(&format!("prefix xsi <{XSI_NS}>")));
        assert!(to_prov_json(&doc).contains(&format!("\"xsi\": \"{XSI_NS}\"")));
    }

    #[test]
    fn check_duplicate_relation_id() {
        let mut doc = tiny();
        doc.relations.push(Relation::WasInformedBy {
            id: Some(s("ex:assoc")),
            informed: s("ex:a1"),
            informant: s("ex:a1"),
            attrs: vec![],
        });
        let err = check(&doc).unwrap_err();
        assert!(err.contains("duplicate relation id \"ex:assoc\""), "{err}");
        // Duplicates still serialise, as a list under one PROV-JSON key.
        let mut doc = tiny();
        let dup = doc.relations[1].clone();
        doc.relations.push(dup);
        let json: Json = serde_json::from_str(&to_prov_json(&doc)).unwrap();
        assert!(json["wasAssociatedWith"]["ex:assoc"].is_array());
    }

    #[test]
    fn check_qname_syntax() {
        let bad = |q: &str| {
            let mut doc = tiny();
            doc.entities.insert(q.to_string(), vec![]);
            check(&doc).unwrap_err()
        };
        assert!(bad("noprefix").contains("has no prefix"));
        assert!(bad("ex:").contains("empty local part"));
        assert!(bad("ex:a b").contains("' '"));
        assert!(bad("ex:a\"b").contains("not allowed"));
        assert!(bad("ex:a\\b").contains("not allowed"));
        assert!(bad("ex:a<b").contains("not allowed"));
        assert!(bad("ex:50%").contains("'%'"));
        assert!(bad("ex:\u{B7}x").contains("cannot start"));
        assert!(bad("_:b1").contains("invalid prefix"));
        assert!(bad("1ex:a").contains("invalid prefix"));
        // Allowed local parts, escaped where PROV-N needs it.
        let mut doc = tiny();
        for q in [
            "ex:instance/2.25.1234",
            "ex:a:b",
            "ex:-x.",
            "ex:q=(1,2);[k]'",
            "ex:50%25",
            "ex:\u{e9}t\u{e9}",
            "ex:1",
        ] {
            doc.entities.insert(q.to_string(), vec![]);
        }
        assert_eq!(check(&doc), Ok(()));
        let n = to_prov_n(&doc);
        for esc in [
            "entity(ex:instance/2.25.1234)",
            "entity(ex:a\\:b)",
            "entity(ex:\\-x\\.)",
            "entity(ex:q\\=\\(1\\,2\\)\\;\\[k\\]\\')",
            "entity(ex:50%25)",
            "entity(ex:\u{e9}t\u{e9})",
            "entity(ex:1)",
        ] {
            assert!(n.contains(esc), "{esc} missing in\n{n}");
        }
    }

    #[test]
    fn check_prefixes_times_and_reserved_attrs() {
        let with_prefix = |p: &str, uri: &str| {
            let mut doc = tiny();
            doc.prefixes.insert(p.to_string(), uri.to_string());
            check(&doc)
        };
        assert!(with_prefix("default", "http://x/").is_err());
        assert!(with_prefix("bad.", "http://x/").is_err());
        assert!(with_prefix("ok", "").is_err());
        assert!(with_prefix("ok", "http://x/a b").is_err());
        assert!(with_prefix("prov", "http://example.org/prov#").is_err());
        assert_eq!(with_prefix("prov", PROV_NS), Ok(()));
        assert_eq!(with_prefix("xsd", XSD_NS), Ok(()));

        let mut doc = tiny();
        doc.activities
            .insert(s("ex:a2"), (Some(s("yesterday")), None, vec![]));
        assert!(check(&doc)
            .unwrap_err()
            .contains("\"yesterday\" is not an xsd:dateTime"));

        let mut doc = tiny();
        doc.entities
            .insert(s("ex:e2"), vec![(s("prov:time"), Value::Str(s("x")))]);
        assert!(check(&doc).unwrap_err().contains("formal PROV attribute"));

        let mut doc = tiny();
        doc.entities.insert(
            s("ex:e2"),
            vec![(s("ex:when"), Value::Time(s("2026-02-30T00:00:00Z")))],
        );
        assert!(check(&doc).is_err());
    }

    #[test]
    fn datetimes() {
        for ok in [
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.000000Z",
            "2024-02-29T23:59:59.5+01:00",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05-14:00",
        ] {
            assert!(is_xsd_datetime(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-01-02",
            "2026-01-02 03:04:05Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-02T24:00:00Z",
            "2026-01-02T03:04:05.Z",
            "2026-01-02T03:04:05+15:00",
            "2026-01-02T03:04:05ZZ",
            "0000-01-01T00:00:00Z",
            "２０２６-01-02T03:04:05Z",
            "2026-01-02T03:04:05+01:0",
        ] {
            assert!(!is_xsd_datetime(bad), "{bad}");
        }
    }

    #[test]
    fn escaping_of_strings() {
        let mut doc = ProvDoc::default();
        doc.prefixes.insert(s("ex"), s("http://example.org/"));
        let nasty = "q\"uote\\ back\nnew\r\nline\ttab";
        doc.entities.insert(
            s("ex:e"),
            vec![
                (s("prov:label"), Value::Str(s(nasty))),
                (s("ex:t"), Value::Time(s("2026-01-02T03:04:05Z"))),
            ],
        );
        assert_eq!(check(&doc), Ok(()));
        let n = to_prov_n(&doc);
        assert!(
            n.contains(r#"prov:label="q\"uote\\ back\nnew\r\nline\ttab""#),
            "{n}"
        );
        assert!(
            n.contains(r#"ex:t="2026-01-02T03:04:05Z" %% xsd:dateTime"#),
            "{n}"
        );
        let dot = to_dot(&doc);
        assert!(
            dot.contains(r#"label="ex:e\nq\"uote\\ back\nnew\nline	tab""#),
            "{dot}"
        );
        // JSON round-trips the exact string.
        let json: Json = serde_json::from_str(&to_prov_json(&doc)).unwrap();
        assert_eq!(json["entity"]["ex:e"]["prov:label"], Json::String(s(nasty)));
        assert_eq!(json["entity"]["ex:e"]["ex:t"]["type"], "xsd:dateTime");
        // Every output is a single line per record: no raw newline inside.
        assert_eq!(n.lines().count(), 5);
        assert_eq!(dot.lines().count(), 4);
    }

    #[test]
    fn value_kinds() {
        let mut doc = ProvDoc::default();
        doc.prefixes.insert(s("ex"), s("http://example.org/"));
        doc.entities.insert(
            s("ex:e"),
            vec![
                (s("prov:type"), Value::QName(s("ex:A"))),
                (s("prov:type"), Value::QName(s("ex:B"))),
                (s("ex:big"), Value::Int(1 << 40)),
                (s("ex:neg"), Value::Int(-7)),
                (s("ex:f"), Value::Float(1.0)),
                (s("ex:nan"), Value::Float(f64::NAN)),
                (s("ex:inf"), Value::Float(f64::NEG_INFINITY)),
            ],
        );
        let json: Json = serde_json::from_str(&to_prov_json(&doc)).unwrap();
        let e = &json["entity"]["ex:e"];
        assert_eq!(e["prov:type"][0]["$"], "ex:A");
        assert_eq!(e["prov:type"][1]["$"], "ex:B");
        assert_eq!(e["ex:big"]["type"], "xsd:long");
        assert_eq!(e["ex:big"]["$"], 1_i64 << 40);
        assert_eq!(e["ex:neg"]["type"], "xsd:int");
        assert_eq!(e["ex:f"]["$"], 1.0);
        assert_eq!(e["ex:nan"]["$"], "NaN");
        assert_eq!(e["ex:inf"]["$"], "-INF");
        let n = to_prov_n(&doc);
        assert!(n.contains(
            "[prov:type='ex:A', prov:type='ex:B', ex:big=\"1099511627776\" %% xsd:long, ex:neg=-7, \
             ex:f=\"1.0\" %% xsd:double, ex:nan=\"NaN\" %% xsd:double, ex:inf=\"-INF\" %% xsd:double]"
        ), "{n}");
    }

    #[test]
    fn garbage_never_panics() {
        let weird = [
            "",
            ":",
            "::",
            "a:",
            ":b",
            "\u{0}",
            "\u{B7}",
            "ex:\u{300}",
            "ex:%",
            "ex:%4",
            "é:ü",
            "ex:.",
            "ex:-",
        ];
        let mut doc = ProvDoc::default();
        doc.prefixes.insert(s("bad prefix"), s("<>\" "));
        for w in weird {
            doc.entities.insert(
                w.to_string(),
                vec![(w.to_string(), Value::QName(w.to_string()))],
            );
            doc.activities.insert(
                w.to_string(),
                (Some(w.to_string()), Some(w.to_string()), vec![]),
            );
            doc.relations.push(Relation::Used {
                id: Some(w.to_string()),
                activity: w.to_string(),
                entity: w.to_string(),
                time: Some(w.to_string()),
                attrs: vec![(w.to_string(), Value::Time(w.to_string()))],
            });
            assert!(!is_xsd_datetime(w));
        }
        assert!(check(&doc).is_err());
        let _ = (to_prov_json(&doc), to_prov_n(&doc), to_dot(&doc));
        // Unwritable characters are percent-encoded in PROV-N.
        assert_eq!(escape_local("a b\u{300}"), "a%20b\u{300}");
        assert_eq!(escape_local("\u{300}x"), "%CC%80x");
        assert_eq!(escape_local("%4"), "%254");
        assert_eq!(provn_iri("a b"), "<a%20b>");
    }
}
