//! The images of one commit, indexed by path and by DICOM UID: what annotations resolve their
//! references against, what splits group, and what training exports walk.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use crate::diff::{list_files, TreeSource};
use crate::id::ObjectId;
use crate::object::{EntryKind, InstanceInfo, TreeEntry};
use crate::store::{Store, StoreError};

/// One file of the commit.
#[derive(Debug, Clone)]
pub struct Item {
    pub path: String,
    pub entry: TreeEntry,
    /// DICOM identifiers (None for files stored whole).
    pub info: Option<InstanceInfo>,
    /// The pixel object (DICOM only): identical pixels share it.
    pub pixel: Option<ObjectId>,
}

impl Item {
    pub fn sop(&self) -> Option<&str> {
        self.info.as_ref()?.sop_instance_uid.as_deref()
    }
    pub fn series(&self) -> Option<&str> {
        self.info.as_ref()?.series_uid.as_deref()
    }
    pub fn study(&self) -> Option<&str> {
        self.info.as_ref()?.study_uid.as_deref()
    }
    pub fn patient(&self) -> Option<&str> {
        self.info.as_ref()?.patient_id.as_deref()
    }
}

/// Every file of a commit with lookups.
#[derive(Debug, Default)]
pub struct Dataset {
    pub commit: Option<ObjectId>,
    pub items: Vec<Item>,
    pub by_path: HashMap<String, usize>,
    pub by_sop: HashMap<String, usize>,
    pub by_series: BTreeMap<String, Vec<usize>>,
    pub by_study: BTreeMap<String, Vec<usize>>,
}

impl Dataset {
    /// Read the files of `tree` (DICOM records in parallel).
    pub fn load(store: &Store, commit: ObjectId, tree: &ObjectId) -> Result<Dataset, StoreError> {
        let mut files = Vec::new();
        list_files(&TreeSource { store, extra: None }, tree, "", &mut files)?;
        let items: Vec<Item> = files
            .into_par_iter()
            .map(|(path, entry)| -> Result<Item, StoreError> {
                if entry.kind == EntryKind::Dicom {
                    let d = store.read_dicom(&entry.id)?;
                    Ok(Item { path, entry, info: Some(d.info), pixel: d.pixel })
                } else {
                    Ok(Item { path, entry, info: None, pixel: None })
                }
            })
            .collect::<Result<_, _>>()?;
        let mut ds = Dataset { commit: Some(commit), ..Default::default() };
        for (i, it) in items.iter().enumerate() {
            ds.by_path.insert(it.path.clone(), i);
            if let Some(s) = it.sop() {
                // A repeated SOP Instance UID keeps its first path (paths are sorted).
                ds.by_sop.entry(s.to_string()).or_insert(i);
            }
            if let Some(s) = it.series() {
                ds.by_series.entry(s.to_string()).or_default().push(i);
            }
            if let Some(s) = it.study() {
                ds.by_study.entry(s.to_string()).or_default().push(i);
            }
        }
        ds.items = items;
        Ok(ds)
    }

    /// The DICOM items.
    pub fn instances(&self) -> impl Iterator<Item = (usize, &Item)> {
        self.items.iter().enumerate().filter(|(_, it)| it.info.is_some())
    }

    /// The items a label target covers (empty when the target is not in this commit).
    pub fn covered(&self, t: &crate::catalog::Target) -> Vec<usize> {
        use crate::catalog::Target;
        match t {
            Target::Instance(u) => self.by_sop.get(u).map(|i| vec![*i]).unwrap_or_default(),
            Target::Series(u) => self.by_series.get(u).cloned().unwrap_or_default(),
            Target::Study(u) => self.by_study.get(u).cloned().unwrap_or_default(),
            Target::Path(p) => self.by_path.get(p).map(|i| vec![*i]).unwrap_or_default(),
        }
    }

    /// The whole file bytes of an item.
    pub fn file_bytes(&self, store: &Store, i: usize) -> Result<Vec<u8>, crate::export::ExportError> {
        let it = &self.items[i];
        let mut out = Vec::with_capacity(it.entry.size as usize);
        crate::export::write_entry_bytes(store, it.entry.kind, &it.entry.id, &mut out, std::path::Path::new(&it.path))?;
        Ok(out)
    }
}
