//! The structured objects of a store and their canonical encoding.
//!
//! Every structured object is stored as `MAGIC (4 bytes) | version (u16 LE) | body`, where the
//! body is bincode 2.0.1 with a fixed configuration (little endian, fixed-width integers,
//! lengths as u64): the layout is written out in `docs/format.md` and pinned by golden tests,
//! so an id never changes because a serializer's defaults did. Blobs (file contents, DICOM
//! headers, pixel data) are stored as their raw bytes, so a plain file's id is its `b3sum`.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

use crate::id::ObjectId;

/// Errors decoding a structured object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {id}: expected a {expected} object, found magic {found:?}")]
    WrongKind { id: ObjectId, expected: &'static str, found: Vec<u8> },
    #[error("object {id}: {kind} format version {version} is newer than this cohort understands ({supported}); upgrade cohort")]
    UnsupportedVersion { id: ObjectId, kind: &'static str, version: u16, supported: u16 },
    #[error("object {id}: corrupt {kind} object: {reason}")]
    Corrupt { id: ObjectId, kind: &'static str, reason: String },
    #[error("object {id}: invalid name {name:?} in tree (names must be one path component)")]
    BadName { id: ObjectId, name: String },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<{ 1 << 30 }>()
}

/// Decode one bincode body exactly (no trailing bytes).
fn decode_body<T: Decode<()>>(id: ObjectId, kind: &'static str, body: &[u8]) -> Result<T, ObjectError> {
    let (v, used) = bincode::decode_from_slice(body, config())
        .map_err(|e| ObjectError::Corrupt { id, kind, reason: e.to_string() })?;
    if used != body.len() {
        return Err(ObjectError::Corrupt { id, kind, reason: format!("{} trailing bytes", body.len() - used) });
    }
    Ok(v)
}

/// A structured object kind with its magic and current format version.
pub trait Structured: Encode + Decode<()> {
    const MAGIC: [u8; 4];
    const VERSION: u16;
    const KIND: &'static str;

    /// The canonical bytes that are hashed and stored.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&Self::MAGIC);
        out.extend_from_slice(&Self::VERSION.to_le_bytes());
        bincode::encode_into_std_write(self, &mut out, config())
            .expect("encoding into a Vec cannot fail");
        out
    }

    fn from_bytes(id: ObjectId, bytes: &[u8]) -> Result<Self, ObjectError> {
        if bytes.len() < 6 || bytes[..4] != Self::MAGIC {
            return Err(ObjectError::WrongKind {
                id,
                expected: Self::KIND,
                found: bytes.iter().take(4).copied().collect(),
            });
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != Self::VERSION {
            return match Self::decode_older(id, version, &bytes[6..]) {
                Some(r) => r,
                None => Err(ObjectError::UnsupportedVersion {
                    id,
                    kind: Self::KIND,
                    version,
                    supported: Self::VERSION,
                }),
            };
        }
        decode_body(id, Self::KIND, &bytes[6..])
    }

    /// Decode a body written by an older format version, if this kind still reads it.
    fn decode_older(_id: ObjectId, _version: u16, _body: &[u8]) -> Option<Result<Self, ObjectError>> {
        None
    }

    fn id(&self) -> ObjectId {
        ObjectId::of(&self.to_bytes())
    }
}

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file stored whole; id = blob id.
    File,
    /// A regular file with the executable bit; id = blob id.
    Executable,
    /// A symbolic link; id = blob of the link target's bytes. Never followed.
    Symlink,
    /// A DICOM file stored as header + pixel data; id = [`DicomFile`] record.
    Dicom,
    /// A folder; id = [`Tree`].
    Tree,
}

impl EntryKind {
    pub fn is_file_like(self) -> bool {
        !matches!(self, EntryKind::Tree)
    }
}

/// One entry of a [`Tree`]: a single path component.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TreeEntry {
    pub name: String,
    pub kind: EntryKind,
    pub id: ObjectId,
    /// Logical size in bytes: the file's size, or for a tree the sum over its subtree.
    pub size: u64,
}

/// A folder: entries sorted by name (byte order), names unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct Tree {
    pub entries: Vec<TreeEntry>,
}

impl Structured for Tree {
    const MAGIC: [u8; 4] = *b"COHT";
    const VERSION: u16 = 1;
    const KIND: &'static str = "tree";
}

/// Reject names that could escape the folder they are written into.
pub fn valid_name(name: &str) -> bool {
    !(name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0'))
}

/// A DICOM value (a patient id, a study, series or instance UID) as one folder or file name
/// of a layout that cohort makes (ingest, de-identification), or `fallback` when the value is
/// absent, empty once its padding (spaces, NUL) is trimmed, not a [`valid_name`], or would
/// make a hidden entry (a leading dot).
pub fn path_component(value: Option<&str>, fallback: &str) -> String {
    match value.map(|v| v.trim_matches(|c: char| c == ' ' || c == '\0')) {
        Some(v) if valid_name(v) && !v.starts_with('.') => v.to_string(),
        _ => fallback.to_string(),
    }
}

impl Tree {
    /// Decode and check a tree: names must be single, safe path components, sorted and unique.
    pub fn decode(id: ObjectId, bytes: &[u8]) -> Result<Tree, ObjectError> {
        let t = <Tree as Structured>::from_bytes(id, bytes)?;
        for e in &t.entries {
            if !valid_name(&e.name) {
                return Err(ObjectError::BadName { id, name: e.name.clone() });
            }
        }
        if t.entries.windows(2).any(|w| w[0].name.as_bytes() >= w[1].name.as_bytes()) {
            return Err(ObjectError::Corrupt {
                id,
                kind: "tree",
                reason: "entries not sorted or not unique".into(),
            });
        }
        Ok(t)
    }

    pub fn get(&self, name: &str) -> Option<&TreeEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// DICOM identifiers of one instance, read from its header when it was committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct InstanceInfo {
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    pub modality: Option<String>,
    pub transfer_syntax: Option<String>,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    pub number_of_frames: Option<u32>,
    pub instance_number: Option<i64>,
}

/// A DICOM file addressed in parts: the file's bytes are exactly
/// `header ++ pixel_element ++ pixel ++ trailer`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DicomFile {
    /// Blob: everything before the top-level Pixel Data element (a valid DICOM file on its own).
    pub header: ObjectId,
    /// The Pixel Data element's tag, VR and length bytes (empty when there is no pixel data).
    pub pixel_element: Vec<u8>,
    /// Blob: the Pixel Data value, shared by every file with the same pixels.
    pub pixel: Option<ObjectId>,
    /// Bytes after the pixel data (usually none).
    pub trailer: Vec<u8>,
    /// Total file size.
    pub size: u64,
    pub info: InstanceInfo,
}

impl Structured for DicomFile {
    const MAGIC: [u8; 4] = *b"COHD";
    const VERSION: u16 = 1;
    const KIND: &'static str = "dicom";
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct Agent {
    pub user: String,
    pub tool: String,
    pub tool_version: String,
}

/// A reference from an activity to something it used or produced.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct ActivityRef {
    /// What it is: "commit", "object", "path", "url", "key-fingerprint", ...
    pub role: String,
    pub value: String,
}

/// What was done to make a commit: recorded inside the commit, so inside its id.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct Activity {
    /// import, commit, deid, annotate, split, consensus, run, ...
    pub kind: String,
    pub agent: Agent,
    pub parameters: BTreeMap<String, String>,
    pub inputs: Vec<ActivityRef>,
    pub outputs: Vec<ActivityRef>,
    /// Microseconds since the Unix epoch, UTC.
    pub started_us: i64,
    pub ended_us: i64,
}

/// Something worth telling about a commit's content, e.g. a file stored whole and why.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct CommitNote {
    pub path: String,
    pub note: String,
}

/// A snapshot of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Commit {
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    pub author: String,
    /// Microseconds since the Unix epoch, UTC.
    pub time_us: i64,
    pub message: String,
    pub activity: Activity,
    pub notes: Vec<CommitNote>,
    /// Annotations and splits of this dataset state ([`crate::catalog::Catalog`]); new in
    /// version 2.
    pub catalog: Option<ObjectId>,
    /// An ed25519 signature over the id of this commit without its signature (see
    /// [`crate::sign`]); new in version 2.
    pub signature: Option<CommitSignature>,
}

/// Who signed a commit, with what key, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CommitSignature {
    pub signer: String,
    /// ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
    /// ed25519 signature (64 bytes) of `"cohort commit signature v1\0" || unsigned id`.
    pub signature: Vec<u8>,
}

/// A commit as format version 1 wrote it (before catalogs).
#[derive(Decode)]
struct CommitV1 {
    tree: ObjectId,
    parents: Vec<ObjectId>,
    author: String,
    time_us: i64,
    message: String,
    activity: Activity,
    notes: Vec<CommitNote>,
}

impl Structured for Commit {
    const MAGIC: [u8; 4] = *b"COHC";
    const VERSION: u16 = 2;
    const KIND: &'static str = "commit";

    fn decode_older(id: ObjectId, version: u16, body: &[u8]) -> Option<Result<Self, ObjectError>> {
        (version == 1).then(|| {
            decode_body::<CommitV1>(id, Self::KIND, body).map(|c| Commit {
                tree: c.tree,
                parents: c.parents,
                author: c.author,
                time_us: c.time_us,
                message: c.message,
                activity: c.activity,
                notes: c.notes,
                catalog: None,
                signature: None,
            })
        })
    }
}

/// Where HEAD points.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Head {
    /// On a branch (which may not exist yet, before the first commit).
    Branch(String),
    Detached(ObjectId),
}

/// All refs at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct View {
    pub head: Head,
    pub branches: BTreeMap<String, ObjectId>,
    pub tags: BTreeMap<String, ObjectId>,
}

/// One entry of the operation log: a change of refs, with the view after it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Operation {
    pub parents: Vec<ObjectId>,
    pub time_us: i64,
    pub user: String,
    pub command: Vec<String>,
    pub description: String,
    pub view: View,
}

impl Structured for Operation {
    const MAGIC: [u8; 4] = *b"COHO";
    const VERSION: u16 = 1;
    const KIND: &'static str = "operation";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_drop_padding_and_fall_back_on_unsafe_values() {
        let c = |v: Option<&str>| path_component(v, "fallback");
        assert_eq!(c(Some("PAT001")), "PAT001");
        assert_eq!(c(Some("1.2.840.10008.1 \0")), "1.2.840.10008.1");
        assert_eq!(c(Some("  with inner space ")), "with inner space");
        for bad in [None, Some(""), Some("  "), Some("\0"), Some("."), Some(".."), Some(".hidden"), Some("a/b"), Some("a\\b"), Some("a\0b")] {
            assert_eq!(c(bad), "fallback", "{bad:?}");
        }
    }

    #[test]
    fn roundtrip_and_magic() {
        let t = Tree {
            entries: vec![TreeEntry {
                name: "a.dcm".into(),
                kind: EntryKind::Dicom,
                id: ObjectId::of(b"x"),
                size: 3,
            }],
        };
        let b = t.to_bytes();
        assert_eq!(&b[..4], b"COHT");
        assert_eq!(Tree::decode(ObjectId::of(&b), &b).unwrap(), t);
        assert!(Commit::from_bytes(ObjectId::of(&b), &b).is_err());
    }

    #[test]
    fn tree_rejects_escaping_names() {
        for bad in ["..", ".", "a/b", "", "/etc"] {
            let t = Tree {
                entries: vec![TreeEntry {
                    name: bad.into(),
                    kind: EntryKind::File,
                    id: ObjectId::of(b"x"),
                    size: 1,
                }],
            };
            let b = t.to_bytes();
            assert!(Tree::decode(ObjectId::of(&b), &b).is_err(), "{bad}");
        }
    }
}
