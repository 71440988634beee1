//! phi-scan: an independent checker for de-identified DICOM headers.
//!
//! It shares no rule code with [`crate::deid`]: it reads the same data files
//! (`schema/deid/ps3.15-table-e1-1-2024b.json`, `schema/deid/safe-private.json`) with its own
//! parser and applies its own checks, so a mistake in the engine's rule handling is not
//! repeated here. Findings carry tags, paths and reasons, never values.
//!
//! Checks (recursively inside sequences; rows for which a recorded option has a value are
//! skipped, since the option retains or cleans them):
//!
//! * `x-present`: an attribute whose basic action is X is present; for X/Z, X/D, X/Z/D it is
//!   present with a value that is neither empty nor a dummy.
//! * `z-not-empty`: Z or Z/D attribute with a value that is neither empty nor a dummy/pseudonym.
//! * `d-not-dummy`: D attribute with a value that is not a dummy/pseudonym.
//! * `uid-not-replaced`: U attribute (and the file meta's Media Storage SOP Instance UID) not
//!   under `2.25.`, unless Retain UIDs (113110) is recorded.
//! * `private-not-safe`: a private attribute, unless Retain Safe Private (113111) is recorded and
//!   the attribute is in the safe-private list (or is the creator of a block holding one).
//! * `patient-identity-removed`: Patient Identity Removed (0012,0062) is not YES.
//! * `burned-in`: Burned In Annotation YES, a burned-in-prone modality or a secondary capture
//!   SOP class, unless Clean Pixel Data (113101) is recorded.
//! * `known-identifier`: any value (text, or raw bytes of binary values; top-level pixel data
//!   excepted) or file meta text contains one of the known original identifiers given by the
//!   caller (case-insensitive; identifiers shorter than two characters are ignored). The finding
//!   names the identifier by its index.
//!
//! Dummy values accepted: empty, `ANONYMOUS`, `ANONYMIZED`, `19000101`, `000000`,
//! `19000101000000`, `000Y`, `0`, `urn:anonymized`, `PSEUDO-...` patient pseudonyms, `DEID...`
//! AE pseudonyms, UIDs under `2.25.`, all-zero binary values, and sequences whose items are all
//! empty.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use dicom_core::dictionary::DataDictionary;
use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

const TABLE_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schema/deid/ps3.15-table-e1-1-2024b.json"
));
const SAFE_PRIVATE_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schema/deid/safe-private.json"
));

/// Modalities where text is commonly burned into pixels (kept in step with the engine's list by
/// a test, but defined here independently).
pub const PRONE_MODALITIES: [&str; 8] = ["US", "SC", "OT", "XA", "RF", "ES", "XC", "GM"];

const PIXEL_TAGS: [Tag; 3] = [
    tags::PIXEL_DATA,
    tags::FLOAT_PIXEL_DATA,
    tags::DOUBLE_FLOAT_PIXEL_DATA,
];

const SC_ROOT: &str = "1.2.840.10008.5.1.4.1.1.7";
const CODE_CLEAN_PIXEL: &str = "113101";
const CODE_RETAIN_UIDS: &str = "113110";

const DUMMIES: [&str; 9] = [
    "ANONYMOUS",
    "ANONYMIZED",
    "19000101",
    "000000",
    "19000101000000",
    "000Y",
    "0",
    "urn:anonymized",
    "2.25.0",
];

/// Errors of phi-scan.
#[derive(Debug, thiserror::Error)]
pub enum PhiScanError {
    /// The file could not be read as DICOM.
    #[error("cannot read DICOM file: {reason}")]
    Parse { reason: String },
    /// The embedded table is invalid.
    #[error("profile table, row {tag}: {reason}")]
    Table { tag: String, reason: String },
    /// The embedded safe-private list is invalid.
    #[error("safe-private list, entry {entry}: {reason}")]
    SafePrivate { entry: String, reason: String },
}

/// Kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    XPresent,
    ZNotEmpty,
    DNotDummy,
    UidNotReplaced,
    PrivateNotSafe,
    PatientIdentityRemoved,
    BurnedIn,
    KnownIdentifier,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub check: Check,
    /// `(gggg,eeee)`; empty for instance-level findings.
    pub tag: String,
    /// Dictionary keyword, if known.
    pub keyword: String,
    /// Tag path, e.g. `(0008,1140)[0]/(0008,1155)`, or `meta/(0002,0003)`.
    pub path: String,
    /// Why (never a value).
    pub detail: String,
}

/// Result of scanning one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Option codes (CID 7050) found in the De-identification Method Code Sequence.
    pub recorded_codes: Vec<String>,
    /// Option names those codes stand for.
    pub recorded_options: Vec<String>,
    /// Findings, in data set order.
    pub findings: Vec<Finding>,
}

impl ScanReport {
    /// True when there is no finding.
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Row {
    /// 8 upper-case characters, hex digits or X.
    pattern: String,
    basic: String,
    /// option name -> K/C
    options: HashMap<String, String>,
}

#[derive(Debug)]
struct Table {
    exact: HashMap<(u16, u16), Row>,
    patterns: Vec<Row>,
    private: Option<Row>,
    /// CID 7050 code -> option name
    code_names: HashMap<String, String>,
    safe: HashSet<(u16, String, u8)>,
}

fn load_table() -> Result<Table, PhiScanError> {
    let bad = |tag: &str, reason: &str| PhiScanError::Table {
        tag: tag.to_string(),
        reason: reason.to_string(),
    };
    let v: serde_json::Value =
        serde_json::from_str(TABLE_JSON).map_err(|e| bad("-", &format!("invalid JSON: {e}")))?;
    let mut code_names = HashMap::new();
    for c in v["columns"]
        .as_array()
        .ok_or_else(|| bad("-", "no columns"))?
    {
        let name = c["name"]
            .as_str()
            .ok_or_else(|| bad("-", "column without name"))?;
        let code = c["cid7050"]
            .as_str()
            .ok_or_else(|| bad("-", "column without code"))?;
        code_names.insert(code.to_string(), name.to_string());
    }
    code_names.insert(CODE_CLEAN_PIXEL.to_string(), "clean-pixel-data".to_string());
    code_names.insert(
        "113102".to_string(),
        "clean-recognizable-visual-features".to_string(),
    );
    let mut exact = HashMap::new();
    let mut patterns = Vec::new();
    let mut private = None;
    for r in v["rows"].as_array().ok_or_else(|| bad("-", "no rows"))? {
        let tag = r["tag"]
            .as_str()
            .ok_or_else(|| bad("-", "row without tag"))?;
        let basic = r["basic"]
            .as_str()
            .ok_or_else(|| bad(tag, "no basic action"))?
            .to_string();
        let mut options = HashMap::new();
        if let Some(o) = r["options"].as_object() {
            for (k, a) in o {
                options.insert(k.clone(), a.as_str().unwrap_or("").to_string());
            }
        }
        let up = tag.to_ascii_uppercase();
        if up.contains("GGGG") {
            private = Some(Row {
                pattern: String::new(),
                basic,
                options,
            });
            continue;
        }
        let hex: String = up
            .chars()
            .filter(|c| c.is_ascii_hexdigit() || *c == 'X')
            .collect();
        if hex.len() != 8 {
            return Err(bad(tag, "unparsable tag"));
        }
        let row = Row {
            pattern: hex.clone(),
            basic,
            options,
        };
        if hex.contains('X') {
            patterns.push(row);
        } else {
            let g = u16::from_str_radix(&hex[..4], 16).map_err(|_| bad(tag, "bad group"))?;
            let e = u16::from_str_radix(&hex[4..], 16).map_err(|_| bad(tag, "bad element"))?;
            exact.insert((g, e), row);
        }
    }
    let sp: serde_json::Value =
        serde_json::from_str(SAFE_PRIVATE_JSON).map_err(|e| PhiScanError::SafePrivate {
            entry: "-".into(),
            reason: format!("invalid JSON: {e}"),
        })?;
    let mut safe = HashSet::new();
    for e in sp["entries"].as_array().into_iter().flatten() {
        let g = e["group"].as_str().unwrap_or("");
        let el = e["element"].as_str().unwrap_or("");
        let c = e["creator"].as_str().unwrap_or("");
        let entry = format!("{g}/{c}/{el}");
        let g = u16::from_str_radix(g, 16).map_err(|_| PhiScanError::SafePrivate {
            entry: entry.clone(),
            reason: "bad group".into(),
        })?;
        let el = u8::from_str_radix(el, 16).map_err(|_| PhiScanError::SafePrivate {
            entry,
            reason: "bad element".into(),
        })?;
        safe.insert((g, c.trim_end().to_string(), el));
    }
    Ok(Table {
        exact,
        patterns,
        private,
        code_names,
        safe,
    })
}

fn table() -> Result<&'static Table, PhiScanError> {
    static T: OnceLock<Result<Table, String>> = OnceLock::new();
    match T.get_or_init(|| load_table().map_err(|e| e.to_string())) {
        Ok(t) => Ok(t),
        Err(reason) => Err(PhiScanError::Table {
            tag: "-".into(),
            reason: reason.clone(),
        }),
    }
}

impl Table {
    fn row(&self, tag: Tag) -> Option<&Row> {
        if let Some(r) = self.exact.get(&(tag.group(), tag.element())) {
            return Some(r);
        }
        let hex = format!("{:04X}{:04X}", tag.group(), tag.element());
        self.patterns.iter().find(|r| {
            r.pattern
                .chars()
                .zip(hex.chars())
                .all(|(p, h)| p == 'X' || p == h)
        })
    }
}

fn tag_text(tag: Tag) -> String {
    format!("({:04X},{:04X})", tag.group(), tag.element())
}

fn keyword(tag: Tag) -> String {
    if tag.group() % 2 == 1 {
        return "PrivateAttribute".into();
    }
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.alias.to_string())
        .unwrap_or_default()
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || c == '\0')
}

fn is_dummy_str(s: &str) -> bool {
    let s = trim(s);
    s.is_empty()
        || DUMMIES.contains(&s)
        || s.starts_with("PSEUDO-")
        || (s.starts_with("DEID") && s.len() == 12)
        || s.starts_with("2.25.")
}

type Obj = InMemDicomObject<StandardDataDictionary>;
type Elem = dicom_object::mem::InMemElement<StandardDataDictionary>;

fn texts(p: &PrimitiveValue) -> Vec<String> {
    p.to_multi_str().iter().map(|s| s.to_string()).collect()
}

fn is_binary(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OW
            | VR::OF
            | VR::OD
            | VR::OL
            | VR::OV
            | VR::UN
            | VR::US
            | VR::SS
            | VR::UL
            | VR::SL
            | VR::UV
            | VR::SV
            | VR::FL
            | VR::FD
            | VR::AT
    )
}

/// Value is empty, a dummy or a pseudonym.
fn is_dummy(e: &Elem) -> bool {
    match e.value() {
        Value::Sequence(s) => s.items().iter().all(|i| i.iter().next().is_none()),
        Value::PixelSequence(_) => false,
        Value::Primitive(PrimitiveValue::Empty) => true,
        Value::Primitive(p) => {
            if is_binary(e.vr()) {
                p.to_bytes().iter().all(|x| *x == 0)
            } else {
                texts(p).iter().all(|s| is_dummy_str(s))
            }
        }
    }
}

fn is_empty(e: &Elem) -> bool {
    match e.value() {
        Value::Sequence(s) => s.items().is_empty(),
        Value::PixelSequence(_) => false,
        Value::Primitive(PrimitiveValue::Empty) => true,
        Value::Primitive(p) => !is_binary(e.vr()) && texts(p).iter().all(|s| trim(s).is_empty()),
    }
}

struct Scan<'a> {
    t: &'a Table,
    recorded: BTreeSet<String>,
    known: Vec<String>,
    findings: Vec<Finding>,
}

impl Scan<'_> {
    fn find(&mut self, check: Check, tag: Option<Tag>, path: &str, detail: impl Into<String>) {
        self.findings.push(Finding {
            check,
            tag: tag.map(tag_text).unwrap_or_default(),
            keyword: tag.map(keyword).unwrap_or_default(),
            path: path.to_string(),
            detail: detail.into(),
        });
    }

    fn option_recorded(&self, row: &Row) -> bool {
        row.options.keys().any(|o| self.recorded.contains(o))
    }

    fn known_in_value(&mut self, e: &Elem, path: &str) {
        if self.known.is_empty() {
            return;
        }
        let hay: Vec<u8> = match e.value() {
            Value::Primitive(PrimitiveValue::Empty) => return,
            Value::Primitive(p) => {
                if is_binary(e.vr()) {
                    p.to_bytes().to_vec()
                } else {
                    texts(p).join("\\").into_bytes()
                }
            }
            Value::PixelSequence(f) => f.fragments().iter().flatten().copied().collect(),
            Value::Sequence(_) => return,
        };
        let hay = hay.to_ascii_lowercase();
        let hits: Vec<usize> = self
            .known
            .iter()
            .enumerate()
            .filter(|(_, k)| hay.windows(k.len()).any(|w| w == k.as_bytes()))
            .map(|(i, _)| i)
            .collect();
        for i in hits {
            self.find(
                Check::KnownIdentifier,
                Some(e.tag()),
                path,
                format!("value contains known identifier #{i}"),
            );
        }
    }

    fn object(&mut self, obj: &Obj, path: &str) {
        let safe_private = self.recorded.contains("retain-safe-private");
        let mut creators: HashMap<(u16, u8), String> = HashMap::new();
        for e in obj.iter() {
            let t = e.tag();
            if t.group() % 2 == 1 && (0x10..=0xFF).contains(&t.element()) {
                if let Ok(c) = e.value().to_str() {
                    creators.insert((t.group(), t.element() as u8), trim(&c).to_string());
                }
            }
        }
        let mut safe_blocks = HashSet::new();
        for e in obj.iter() {
            let t = e.tag();
            if t.group() % 2 == 1 && t.element() >= 0x1000 {
                let b = (t.element() >> 8) as u8;
                if let Some(c) = creators.get(&(t.group(), b)) {
                    if self
                        .t
                        .safe
                        .contains(&(t.group(), c.clone(), t.element() as u8))
                    {
                        safe_blocks.insert((t.group(), b));
                    }
                }
            }
        }
        for e in obj.iter() {
            let tag = e.tag();
            let p = if path.is_empty() {
                tag_text(tag)
            } else {
                format!("{path}/{}", tag_text(tag))
            };
            if path.is_empty() && PIXEL_TAGS.contains(&tag) {
                continue; // pixel values are not text; burned-in text is the burned-in check
            }
            self.known_in_value(e, &p);
            if tag.group() % 2 == 1 {
                let el = tag.element();
                let ok = safe_private
                    && self
                        .t
                        .private
                        .as_ref()
                        .is_some_and(|r| self.option_recorded(r))
                    && if (0x10..=0xFF).contains(&el) {
                        safe_blocks.contains(&(tag.group(), el as u8))
                    } else {
                        el >= 0x1000
                            && creators
                                .get(&(tag.group(), (el >> 8) as u8))
                                .is_some_and(|c| {
                                    self.t.safe.contains(&(tag.group(), c.clone(), el as u8))
                                })
                    };
                if !ok {
                    self.find(
                        Check::PrivateNotSafe,
                        Some(tag),
                        &p,
                        "private attribute present",
                    );
                }
            } else if let Some(row) = self.t.row(tag).cloned() {
                self.check_row(&row, e, &p);
            }
            if let Value::Sequence(seq) = e.value() {
                for (i, item) in seq.items().iter().enumerate() {
                    self.object(item, &format!("{p}[{i}]"));
                }
            }
        }
    }

    fn check_row(&mut self, row: &Row, e: &Elem, p: &str) {
        if self.option_recorded(row) {
            return;
        }
        let tag = e.tag();
        let basic = row.basic.as_str();
        match basic {
            "X" => self.find(
                Check::XPresent,
                Some(tag),
                p,
                "basic profile X: must be removed",
            ),
            "X/Z" | "X/D" | "X/Z/D" if !is_dummy(e) => self.find(
                Check::XPresent,
                Some(tag),
                p,
                format!("basic profile {basic}: present with a real value"),
            ),
            "Z" | "Z/D" if !is_empty(e) && !is_dummy(e) => self.find(
                Check::ZNotEmpty,
                Some(tag),
                p,
                format!("basic profile {basic}: not empty and not a dummy"),
            ),
            "D" => {
                let ok = if e.vr() == VR::UI {
                    self.uids_ok(e)
                } else {
                    is_dummy(e)
                };
                if !ok {
                    self.find(
                        Check::DNotDummy,
                        Some(tag),
                        p,
                        "basic profile D: not a dummy",
                    );
                }
            }
            "U" if !self.uids_ok(e) => self.find(
                Check::UidNotReplaced,
                Some(tag),
                p,
                "basic profile U: UID not under 2.25.",
            ),
            _ => {}
        }
    }

    fn uids_ok(&self, e: &Elem) -> bool {
        if self.recorded.contains("retain-uids") {
            return true;
        }
        match e.value() {
            Value::Primitive(p) => texts(p).iter().all(|u| {
                let u = trim(u);
                u.is_empty() || u.starts_with("2.25.")
            }),
            _ => true,
        }
    }
}

/// Scan one DICOM file (header or complete file; preamble optional).
///
/// `known_identifiers`: original identifying values (patient IDs, names, ...) that must not
/// appear anywhere; matching is case-insensitive on text and raw bytes.
pub fn scan(file: &[u8], known_identifiers: &[String]) -> Result<ScanReport, PhiScanError> {
    let t = table()?;
    // The dicom module's reader (shared with the store, not with the de-identification
    // engine's rules): vetted by its walker, and files without preamble or "DICM" open too.
    let f = crate::dicom::open_header(file).map_err(|e| PhiScanError::Parse {
        reason: e.to_string(),
    })?;
    let meta = f.meta().clone();
    let obj: Obj = f.into_inner();

    let mut codes = Vec::new();
    if let Some(seq) = obj.get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE) {
        for item in seq.items().unwrap_or(&[]) {
            let scheme = item
                .get(tags::CODING_SCHEME_DESIGNATOR)
                .and_then(|e| e.value().to_str().ok().map(|s| trim(&s).to_string()));
            let code = item
                .get(tags::CODE_VALUE)
                .and_then(|e| e.value().to_str().ok().map(|s| trim(&s).to_string()));
            if let (Some(s), Some(c)) = (scheme, code) {
                if s == "DCM" {
                    codes.push(c);
                }
            }
        }
    }
    let recorded: BTreeSet<String> = codes
        .iter()
        .filter_map(|c| t.code_names.get(c).cloned())
        .collect();
    let known: Vec<String> = known_identifiers
        .iter()
        .map(|k| trim(k).to_ascii_lowercase())
        .filter(|k| k.len() >= 2)
        .collect();
    let mut s = Scan {
        t,
        recorded,
        known,
        findings: Vec::new(),
    };

    // file meta
    let media_uid = trim(meta.media_storage_sop_instance_uid()).to_string();
    // An empty UID identifies nobody.
    if !codes.iter().any(|c| c == CODE_RETAIN_UIDS) && !media_uid.is_empty() && !media_uid.starts_with("2.25.") {
        s.find(
            Check::UidNotReplaced,
            Some(tags::MEDIA_STORAGE_SOP_INSTANCE_UID),
            "meta/(0002,0003)",
            "Media Storage SOP Instance UID not under 2.25.",
        );
    }
    if !s.known.is_empty() {
        let meta_texts = [
            meta.source_application_entity_title.clone(),
            meta.sending_application_entity_title.clone(),
            meta.receiving_application_entity_title.clone(),
            Some(media_uid.clone()),
        ];
        for m in meta_texts.into_iter().flatten() {
            let m = m.to_ascii_lowercase();
            for (i, k) in s.known.clone().iter().enumerate() {
                if m.contains(k.as_str()) {
                    s.find(
                        Check::KnownIdentifier,
                        None,
                        "meta",
                        format!("file meta contains known identifier #{i}"),
                    );
                }
            }
        }
    }

    s.object(&obj, "");

    // patient identity removed
    let pir = obj
        .get(tags::PATIENT_IDENTITY_REMOVED)
        .and_then(|e| e.value().to_str().ok().map(|v| trim(&v).to_string()));
    if pir.as_deref() != Some("YES") {
        s.find(
            Check::PatientIdentityRemoved,
            Some(tags::PATIENT_IDENTITY_REMOVED),
            "(0012,0062)",
            "Patient Identity Removed is not YES",
        );
    }

    // burned-in
    if !codes.iter().any(|c| c == CODE_CLEAN_PIXEL) {
        let get = |tag: Tag| {
            obj.get(tag)
                .and_then(|e| e.value().to_str().ok().map(|v| trim(&v).to_string()))
        };
        let mut reasons = Vec::new();
        if get(tags::BURNED_IN_ANNOTATION).as_deref() == Some("YES") {
            reasons.push("Burned In Annotation is YES".to_string());
        }
        if let Some(m) = get(tags::MODALITY) {
            if PRONE_MODALITIES.contains(&m.to_ascii_uppercase().as_str()) {
                reasons.push(format!("modality {m} commonly carries burned-in text"));
            }
        }
        if let Some(c) = get(tags::SOP_CLASS_UID) {
            if c == SC_ROOT || c.starts_with(&format!("{SC_ROOT}.")) {
                reasons.push("secondary capture SOP class".to_string());
            }
        }
        if !reasons.is_empty() {
            s.find(
                Check::BurnedIn,
                None,
                "",
                format!(
                    "{}; Clean Pixel Data (113101) not recorded",
                    reasons.join("; ")
                ),
            );
        }
    }

    let recorded_options = s.recorded.iter().cloned().collect();
    Ok(ScanReport {
        recorded_codes: codes,
        recorded_options,
        findings: s.findings,
    })
}
