//! Per-instance report: what was done to which attribute, never any value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::BurnedIn;

/// What happened to an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportAction {
    /// Removed (X, compound actions resolved to X, private attributes).
    Removed,
    /// Replaced by a zero-length value (Z, Z/D).
    Emptied,
    /// Replaced by a pseudonym (U, patient identity, AE titles) or a new value set by the engine.
    Replaced,
    /// Replaced by a dummy value (D).
    Dummy,
    /// Cleaned (C): free text scrubbed, person name replaced by a dummy.
    Cleaned,
    /// Date shifted by the patient's offset (modified dates option).
    Shifted,
    /// Kept because an option retains it.
    KeptByOption,
    /// Added by the engine (e.g. Patient Identity Removed).
    Added,
}

impl ReportAction {
    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            ReportAction::Removed => "removed",
            ReportAction::Emptied => "emptied",
            ReportAction::Replaced => "replaced",
            ReportAction::Dummy => "dummy",
            ReportAction::Cleaned => "cleaned",
            ReportAction::Shifted => "shifted",
            ReportAction::KeptByOption => "kept-by-option",
            ReportAction::Added => "added",
        }
    }
}

/// One attribute touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntry {
    /// `(gggg,eeee)`.
    pub tag: String,
    /// Dictionary keyword; `PrivateAttribute`/`PrivateCreator` for private tags, empty if unknown.
    pub keyword: String,
    /// Tag path inside the data set, e.g. `(0008,1140)[0]/(0008,1155)`.
    pub path: String,
    /// What was done.
    pub action: ReportAction,
    /// Why: `basic:X`, `retain-uids:K`, `private`, `patient-pseudonym`, `profile-record`, ...
    pub rule: String,
}

/// Counts per instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Attributes removed.
    pub removed: usize,
    /// Attributes emptied.
    pub emptied: usize,
    /// Attributes whose value changed: replaced, dummy, cleaned, shifted or added.
    pub replaced: usize,
    /// Attributes kept: retained by an option, or not listed in the profile and left alone.
    pub kept: usize,
    /// Of `kept`, those retained by an option.
    pub kept_by_option: usize,
    /// Entries per action name.
    pub by_action: BTreeMap<String, usize>,
}

/// Report of one instance. It carries tags, paths and action names only, never values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// Profile revision (PS3.15).
    pub profile_revision: String,
    /// Options applied (names), in option order.
    pub options: Vec<String>,
    /// Fingerprint of the key used.
    pub key_fingerprint: String,
    /// Transfer syntax of the output: the input's, unless compressed pixel data was decoded to be
    /// cleaned (then explicit VR little endian, and a note says from what).
    pub transfer_syntax: String,
    /// Every attribute touched, in data set order.
    pub entries: Vec<ReportEntry>,
    /// Counts.
    pub totals: Totals,
    /// Burned-in annotation status (same as `DeidOutput::burned_in`).
    pub burned_in: BurnedIn,
    /// Name of the pixel rule that applied, if any.
    pub pixel_rule: Option<String>,
    /// Notes about choices made for this instance (no values), e.g. unparsable dates emptied.
    pub notes: Vec<String>,
}

impl InstanceReport {
    pub(crate) fn compute_totals(entries: &[ReportEntry], untouched: usize) -> Totals {
        let mut t = Totals::default();
        for e in entries {
            *t.by_action.entry(e.action.name().to_string()).or_insert(0) += 1;
            match e.action {
                ReportAction::Removed => t.removed += 1,
                ReportAction::Emptied => t.emptied += 1,
                ReportAction::KeptByOption => {
                    t.kept += 1;
                    t.kept_by_option += 1;
                }
                _ => t.replaced += 1,
            }
        }
        t.kept += untouched;
        t
    }
}
