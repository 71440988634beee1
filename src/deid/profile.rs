//! The embedded PS3.15 Table E.1-1 and the safe-private list, parsed into rules.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use dicom_core::Tag;
use serde::{Deserialize, Serialize};

use super::{DeidError, DeidOption, PROFILE_REVISION};

const TABLE_PATH: &str = "schema/deid/ps3.15-table-e1-1-2024b.json";
const TABLE_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schema/deid/ps3.15-table-e1-1-2024b.json"
));
const SAFE_PRIVATE_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schema/deid/safe-private.json"
));

/// An action code of Table E.1-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Replace with a non-zero length dummy value consistent with the VR.
    #[serde(rename = "D")]
    D,
    /// Replace with a zero length value.
    #[serde(rename = "Z")]
    Z,
    /// Remove.
    #[serde(rename = "X")]
    X,
    /// Keep (sequences: apply the profile to the items).
    #[serde(rename = "K")]
    K,
    /// Clean.
    #[serde(rename = "C")]
    C,
    /// Replace UID consistently.
    #[serde(rename = "U")]
    U,
    /// Z unless D is required (Type 2 versus Type 1).
    #[serde(rename = "Z/D")]
    ZD,
    /// X unless Z is required.
    #[serde(rename = "X/Z")]
    XZ,
    /// X unless D is required.
    #[serde(rename = "X/D")]
    XD,
    /// X unless Z or D is required.
    #[serde(rename = "X/Z/D")]
    XZD,
    /// X unless Z or replacement of contained instance UIDs is required.
    #[serde(rename = "X/Z/U*")]
    XZUStar,
}

impl Action {
    /// Parse the table's notation.
    pub fn parse(code: &str) -> Option<Action> {
        Some(match code {
            "D" => Action::D,
            "Z" => Action::Z,
            "X" => Action::X,
            "K" => Action::K,
            "C" => Action::C,
            "U" => Action::U,
            "Z/D" => Action::ZD,
            "X/Z" => Action::XZ,
            "X/D" => Action::XD,
            "X/Z/D" => Action::XZD,
            "X/Z/U*" => Action::XZUStar,
            _ => return None,
        })
    }

    /// The table's notation.
    pub fn code(self) -> &'static str {
        match self {
            Action::D => "D",
            Action::Z => "Z",
            Action::X => "X",
            Action::K => "K",
            Action::C => "C",
            Action::U => "U",
            Action::ZD => "Z/D",
            Action::XZ => "X/Z",
            Action::XD => "X/D",
            Action::XZD => "X/Z/D",
            Action::XZUStar => "X/Z/U*",
        }
    }
}

/// Which attributes a row applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TagPattern {
    /// One attribute.
    Exact { group: u16, element: u16 },
    /// A repeating-group pattern such as `(50XX,XXXX)`: `tag & mask == value` on the 32-bit tag.
    Masked { value: u32, mask: u32 },
    /// `(GGGG,EEEE) WHERE GGGG IS ODD`: every private attribute.
    PrivateOddGroup,
}

impl TagPattern {
    /// Parse the table's tag notation.
    pub fn parse(text: &str) -> Option<TagPattern> {
        let t = text.trim().to_ascii_uppercase();
        if t.starts_with("(GGGG,EEEE)") && t.contains("ODD") {
            return Some(TagPattern::PrivateOddGroup);
        }
        let inner = t.strip_prefix('(')?.strip_suffix(')')?;
        let (g, e) = inner.split_once(',')?;
        if g.len() != 4 || e.len() != 4 {
            return None;
        }
        let mut value = 0u32;
        let mut mask = 0u32;
        for c in g.chars().chain(e.chars()) {
            value <<= 4;
            mask <<= 4;
            match c {
                'X' => {}
                _ => {
                    value |= c.to_digit(16)?;
                    mask |= 0xF;
                }
            }
        }
        if mask == u32::MAX {
            Some(TagPattern::Exact {
                group: (value >> 16) as u16,
                element: value as u16,
            })
        } else {
            Some(TagPattern::Masked { value, mask })
        }
    }

    /// Whether `tag` is covered by the pattern.
    pub fn matches(&self, tag: Tag) -> bool {
        let t = (u32::from(tag.group()) << 16) | u32::from(tag.element());
        match *self {
            TagPattern::Exact { group, element } => {
                tag.group() == group && tag.element() == element
            }
            TagPattern::Masked { value, mask } => t & mask == value,
            TagPattern::PrivateOddGroup => tag.group() % 2 == 1,
        }
    }
}

/// One row of Table E.1-1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRow {
    /// The tag as written in the table, e.g. `(0010,0010)` or `(50XX,XXXX)`.
    pub tag: String,
    /// The attribute name as written in the table.
    pub name: String,
    /// Whether the attribute is used in a standard composite IOD.
    pub in_std_comp_iod: bool,
    /// The parsed tag pattern.
    pub pattern: TagPattern,
    /// Action of the basic profile.
    pub basic: Action,
    /// Actions of the option columns that have a value for this row.
    pub options: BTreeMap<DeidOption, Action>,
}

impl ProfileRow {
    /// The action in force with `options` chosen, and the option that decided it (if any).
    /// Where several chosen options give a value, K wins over C.
    pub fn resolve(
        &self,
        chosen: &std::collections::BTreeSet<DeidOption>,
    ) -> (Action, Option<DeidOption>) {
        let mut best: Option<(Action, DeidOption)> = None;
        for (opt, act) in &self.options {
            if !chosen.contains(opt) {
                continue;
            }
            best = match best {
                None => Some((*act, *opt)),
                Some((Action::K, o)) => Some((Action::K, o)),
                Some(_) if *act == Action::K => Some((Action::K, *opt)),
                keep => keep,
            };
        }
        match best {
            Some((a, o)) => (a, Some(o)),
            None => (self.basic, None),
        }
    }
}

#[derive(Deserialize)]
struct RawTable {
    revision: String,
    source_row_count: usize,
    columns: Vec<RawColumn>,
    rows: Vec<RawRow>,
}

#[derive(Deserialize)]
struct RawColumn {
    name: String,
    cid7050: String,
}

#[derive(Deserialize)]
struct RawRow {
    tag: String,
    name: String,
    in_std_comp_iod: bool,
    basic: String,
    options: BTreeMap<String, String>,
}

fn table_error(reason: impl Into<String>) -> DeidError {
    DeidError::Profile {
        path: TABLE_PATH.to_string(),
        reason: reason.into(),
    }
}

fn parse_table(json: &str) -> Result<Vec<ProfileRow>, DeidError> {
    let raw: RawTable =
        serde_json::from_str(json).map_err(|e| table_error(format!("invalid JSON: {e}")))?;
    if raw.revision != PROFILE_REVISION {
        return Err(table_error(format!(
            "revision {} but {} expected",
            raw.revision, PROFILE_REVISION
        )));
    }
    let mut seen = BTreeMap::new();
    for c in &raw.columns {
        let opt = DeidOption::from_name(&c.name)
            .map_err(|_| table_error(format!("unknown column {:?}", c.name)))?;
        if opt.code() != c.cid7050 {
            return Err(table_error(format!(
                "column {} has code {} but {} expected",
                c.name,
                c.cid7050,
                opt.code()
            )));
        }
        seen.insert(opt, ());
    }
    let table_columns = DeidOption::ALL
        .iter()
        .filter(|o| o.is_table_column())
        .count();
    if seen.len() != table_columns {
        return Err(table_error(format!(
            "{} option columns but {} expected",
            seen.len(),
            table_columns
        )));
    }
    if raw.rows.len() != raw.source_row_count {
        return Err(table_error(format!(
            "{} rows but the source had {}",
            raw.rows.len(),
            raw.source_row_count
        )));
    }
    let mut rows = Vec::with_capacity(raw.rows.len());
    for r in raw.rows {
        let pattern = TagPattern::parse(&r.tag)
            .ok_or_else(|| table_error(format!("row {}: unparsable tag", r.tag)))?;
        let basic = Action::parse(&r.basic)
            .ok_or_else(|| table_error(format!("row {}: unknown action {:?}", r.tag, r.basic)))?;
        let mut options = BTreeMap::new();
        for (name, code) in &r.options {
            let opt = DeidOption::from_name(name)
                .map_err(|_| table_error(format!("row {}: unknown option {name:?}", r.tag)))?;
            let act = match Action::parse(code) {
                Some(a @ (Action::K | Action::C)) => a,
                _ => {
                    return Err(table_error(format!(
                        "row {}: option {name} has unsupported action {code:?}",
                        r.tag
                    )))
                }
            };
            options.insert(opt, act);
        }
        rows.push(ProfileRow {
            tag: r.tag,
            name: r.name,
            in_std_comp_iod: r.in_std_comp_iod,
            pattern,
            basic,
            options,
        });
    }
    Ok(rows)
}

fn cached_rows() -> &'static Result<Vec<ProfileRow>, String> {
    static ROWS: OnceLock<Result<Vec<ProfileRow>, String>> = OnceLock::new();
    ROWS.get_or_init(|| parse_table(TABLE_JSON).map_err(|e| e.to_string()))
}

/// The rows of the embedded Table E.1-1, or an error if the embedded file is invalid.
pub fn try_profile_rows() -> Result<&'static [ProfileRow], DeidError> {
    match cached_rows() {
        Ok(rows) => Ok(rows.as_slice()),
        Err(reason) => Err(table_error(reason.clone())),
    }
}

/// The rows of the embedded Table E.1-1 (empty only if the embedded file were invalid, which a
/// test rules out; [`try_profile_rows`] reports the reason).
pub fn profile_rows() -> &'static [ProfileRow] {
    try_profile_rows().unwrap_or(&[])
}

/// Indexed view of the profile rows.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    rows: &'static [ProfileRow],
    exact: HashMap<Tag, usize>,
    masked: Vec<usize>,
    private: Option<usize>,
}

impl Profile {
    pub(crate) fn load() -> Result<Profile, DeidError> {
        let rows = try_profile_rows()?;
        let mut exact = HashMap::new();
        let mut masked = Vec::new();
        let mut private = None;
        for (i, r) in rows.iter().enumerate() {
            match r.pattern {
                TagPattern::Exact { group, element } => {
                    exact.insert(Tag(group, element), i);
                }
                TagPattern::Masked { .. } => masked.push(i),
                TagPattern::PrivateOddGroup => private = Some(i),
            }
        }
        Ok(Profile {
            rows,
            exact,
            masked,
            private,
        })
    }

    /// The row for a standard (even group) attribute.
    pub(crate) fn row(&self, tag: Tag) -> Option<&'static ProfileRow> {
        let rows = self.rows;
        if let Some(&i) = self.exact.get(&tag) {
            return rows.get(i);
        }
        self.masked
            .iter()
            .filter_map(|&i| rows.get(i))
            .find(|r| r.pattern.matches(tag))
    }

    /// The row for private attributes.
    pub(crate) fn private_row(&self) -> Option<&'static ProfileRow> {
        let rows = self.rows;
        self.private.and_then(|i| rows.get(i))
    }
}

/// One entry of the safe-private list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafePrivateEntry {
    /// Private group, 4 hex digits.
    pub group: String,
    /// Private Creator value.
    pub creator: String,
    /// Element number within the private block (the low byte), 2 hex digits.
    pub element: String,
    /// VR as given by PS3.15 Table E.3.10-1.
    pub vr: String,
    /// Meaning as given by the table.
    pub name: String,
}

#[derive(Deserialize)]
struct RawSafePrivate {
    entries: Vec<SafePrivateEntry>,
}

fn cached_safe_private() -> &'static Result<Vec<SafePrivateEntry>, String> {
    static LIST: OnceLock<Result<Vec<SafePrivateEntry>, String>> = OnceLock::new();
    LIST.get_or_init(|| {
        let raw: RawSafePrivate = serde_json::from_str(SAFE_PRIVATE_JSON)
            .map_err(|e| format!("invalid JSON in schema/deid/safe-private.json: {e}"))?;
        for e in &raw.entries {
            parse_entry(e)?;
        }
        Ok(raw.entries)
    })
}

fn parse_entry(e: &SafePrivateEntry) -> Result<(u16, String, u8), String> {
    let group = u16::from_str_radix(&e.group, 16)
        .map_err(|_| format!("entry {}/{}: bad group", e.group, e.element))?;
    let element = u8::from_str_radix(&e.element, 16)
        .map_err(|_| format!("entry {}/{}: bad element", e.group, e.element))?;
    if group % 2 == 0 {
        return Err(format!(
            "entry {}/{}: group is not private",
            e.group, e.element
        ));
    }
    Ok((group, e.creator.trim_end().to_string(), element))
}

/// The safe-private list embedded from `schema/deid/safe-private.json` (empty if invalid; the
/// engine refuses to start in that case).
pub fn safe_private_entries() -> &'static [SafePrivateEntry] {
    match cached_safe_private() {
        Ok(v) => v.as_slice(),
        Err(_) => &[],
    }
}

/// Lookup set for safe private attributes.
#[derive(Debug, Clone)]
pub(crate) struct SafePrivateSet {
    set: HashSet<(u16, String, u8)>,
}

impl SafePrivateSet {
    pub(crate) fn load() -> Result<SafePrivateSet, DeidError> {
        let entries = match cached_safe_private() {
            Ok(v) => v,
            Err(reason) => {
                return Err(DeidError::SafePrivate {
                    reason: reason.clone(),
                })
            }
        };
        let mut set = HashSet::new();
        for e in entries {
            set.insert(parse_entry(e).map_err(|reason| DeidError::SafePrivate { reason })?);
        }
        Ok(SafePrivateSet { set })
    }

    /// Whether the element `(group, xxee)` under private creator `creator` is safe.
    pub(crate) fn is_safe(&self, group: u16, creator: &str, element_low: u8) -> bool {
        self.set
            .contains(&(group, creator.trim_end().to_string(), element_low))
    }
}
