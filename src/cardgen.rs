//! Gathering a dataset card (`cohort card`) from a commit: counts per split part,
//! composition read from the DICOM headers, labels, readers and agreement, the
//! de-identification applied, the provenance chain, and warnings. Rendering is `crate::card`.

use std::collections::{BTreeMap, BTreeSet};

use dicom_dictionary_std::tags;
use rayon::prelude::*;

use crate::card::{CardData, Counts, PartCard, ReaderCard, StepCard};
use crate::dataset::Dataset;
use crate::repo::{format_time, Repo, TOOL, VERSION};
use crate::split::SplitError;

/// What `card` is asked for.
pub struct CardRequest {
    pub rev: String,
    /// The split to show; default: the commit's only split, if it has exactly one.
    pub split: Option<String>,
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string()).filter(|s| !s.is_empty())
}

/// Age in years from PatientAge ("045Y", "006M", ...) or from birth and study dates.
fn age_years(obj: &dicom_object::DefaultDicomObject) -> Option<u32> {
    if let Some(a) = text(obj, tags::PATIENT_AGE) {
        let (n, unit) = a.split_at(a.len().saturating_sub(1));
        let n: u32 = n.parse().ok()?;
        return Some(match unit {
            "Y" => n,
            "M" => n / 12,
            "W" => n / 52,
            "D" => n / 365,
            _ => return None,
        });
    }
    let birth = text(obj, tags::PATIENT_BIRTH_DATE)?;
    let study = text(obj, tags::STUDY_DATE)?;
    let y = |d: &str| d.get(0..4)?.parse::<i32>().ok();
    let md = |d: &str| d.get(4..8)?.parse::<i32>().ok();
    let mut years = y(&study)? - y(&birth)?;
    if md(&study)? < md(&birth)? {
        years -= 1;
    }
    u32::try_from(years).ok()
}

fn age_bins(ages: &[Option<u32>]) -> Vec<(String, u64)> {
    let mut bins: BTreeMap<u32, u64> = BTreeMap::new();
    let mut unknown = 0;
    for a in ages {
        match a {
            Some(a) => *bins.entry((a / 10).min(9)).or_insert(0) += 1,
            None => unknown += 1,
        }
    }
    let mut out: Vec<(String, u64)> = bins.into_iter().map(|(b, n)| (if b == 9 { "90+".to_string() } else { format!("{}-{}", b * 10, b * 10 + 9) }, n)).collect();
    if unknown > 0 {
        out.push(("unknown".into(), unknown));
    }
    out
}

/// Gather everything the card shows.
pub fn gather(repo: &Repo, req: &CardRequest) -> Result<CardData, SplitError> {
    let id = repo.resolve(&req.rev)?;
    let c = repo.store.read_commit(&id)?;
    let cat = repo.store.catalog_of(&c)?;
    let ds = Dataset::load(&repo.store, id, &c.tree)?;
    let mut warnings = Vec::new();
    let split_name = match &req.split {
        Some(s) => Some(s.clone()),
        None if cat.splits.len() == 1 => cat.splits.keys().next().cloned(),
        None => {
            if cat.splits.len() > 1 {
                warnings.push(format!("{} splits ({}); choose one with --split", cat.splits.len(), cat.splits.keys().cloned().collect::<Vec<_>>().join(", ")));
            }
            None
        }
    };

    // Per-instance facts from the headers (in parallel).
    struct Facts {
        manufacturer: Option<String>,
        sex: Option<String>,
        age: Option<u32>,
    }
    let facts: Vec<Option<Facts>> = ds
        .items
        .par_iter()
        .map(|it| {
            it.info.as_ref()?;
            let d = repo.store.read_dicom(&it.entry.id).ok()?;
            let h = repo.store.read(&d.header).ok()?;
            let obj = crate::dicom::open_header(&h).ok()?;
            Some(Facts { manufacturer: text(&obj, tags::MANUFACTURER), sex: text(&obj, tags::PATIENT_SEX), age: age_years(&obj) })
        })
        .collect();
    let mut modality = BTreeMap::new();
    let mut manufacturer = BTreeMap::new();
    let mut sex_by_patient: BTreeMap<String, String> = BTreeMap::new();
    let mut age_by_patient: BTreeMap<String, Option<u32>> = BTreeMap::new();
    for (it, f) in ds.items.iter().zip(&facts) {
        let Some(info) = &it.info else { continue };
        *modality.entry(info.modality.clone().unwrap_or_else(|| "unknown".into())).or_insert(0u64) += 1;
        let patient = info.patient_id.clone().unwrap_or_default();
        if let Some(f) = f {
            *manufacturer.entry(f.manufacturer.clone().unwrap_or_else(|| "unknown".into())).or_insert(0u64) += 1;
            sex_by_patient.entry(patient.clone()).or_insert_with(|| f.sex.clone().unwrap_or_else(|| "unknown".into()));
            age_by_patient.entry(patient).or_insert(f.age);
        }
    }
    let mut sex = BTreeMap::new();
    for s in sex_by_patient.values() {
        *sex.entry(s.clone()).or_insert(0u64) += 1;
    }
    let ages: Vec<Option<u32>> = age_by_patient.values().copied().collect();

    // Parts.
    let mut parts = Vec::new();
    match &split_name {
        Some(name) => {
            let show = crate::split::show(repo, &req.rev, name)?;
            let (_, split, _) = crate::split::load(repo, &req.rev, name)?;
            let part_of = crate::split::parts_of(&ds, &split);
            for (p, pc) in &show.parts {
                let bytes = ds.items.iter().zip(&part_of).filter(|(_, q)| q.as_deref() == Some(p.as_str())).map(|(i, _)| i.entry.size).sum();
                parts.push(PartCard {
                    name: p.clone(),
                    counts: Counts { patients: pc.patients as u64, studies: pc.studies as u64, series: pc.series as u64, instances: pc.instances as u64, bytes },
                    labels: pc.labels.iter().map(|(t, m)| (t.clone(), m.iter().map(|(l, n)| (l.clone(), *n as u64)).collect())).collect(),
                });
            }
            // Keep the split's own part order.
            let order: Vec<&String> = split.parts.iter().map(|(p, _)| p).collect();
            parts.sort_by_key(|p| order.iter().position(|o| **o == p.name).unwrap_or(usize::MAX));
            let check = crate::split::check(repo, &req.rev, name)?;
            for l in check.leaks.iter().take(10) {
                warnings.push(format!("split {name} leaks: {} {} in {}", l.kind, l.id, l.parts.join(" and ")));
            }
            if check.unassigned > 0 {
                warnings.push(format!("{} instance(s) have no part in split {name}", check.unassigned));
            }
        }
        None => {
            let inst: Vec<_> = ds.instances().map(|(_, it)| it).collect();
            let uniq = |f: &dyn Fn(&crate::dataset::Item) -> Option<&str>| inst.iter().filter_map(|i| f(i)).collect::<BTreeSet<_>>().len() as u64;
            let mut labels: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
            for task in cat.tasks() {
                if let Ok((_, set)) = crate::annotate::resolved_set(repo, &cat, task, &id) {
                    for l in &set.labels {
                        *labels.entry(task.to_string()).or_default().entry(l.label.clone()).or_insert(0) += ds.covered(&l.target).len() as u64;
                    }
                }
            }
            parts.push(PartCard {
                name: "all".into(),
                counts: Counts {
                    patients: uniq(&|i| i.patient()),
                    studies: uniq(&|i| i.study()),
                    series: uniq(&|i| i.series()),
                    instances: inst.len() as u64,
                    bytes: inst.iter().map(|i| i.entry.size).sum(),
                },
                labels,
            });
        }
    }

    // Annotations.
    let mut readers = Vec::new();
    for s in crate::annotate::list(repo, &req.rev)? {
        readers.push(ReaderCard {
            task: s.task.clone(),
            reader: s.reader.clone(),
            kind: s.kind.name().into(),
            source: s.source.name().into(),
            items: (s.labels + s.boxes + s.segmentations) as u64,
            consensus_method: s.derived.clone(),
        });
    }
    let mut agreement = Vec::new();
    for task in cat.tasks() {
        if let Ok(a) = crate::annotate::agreement(repo, &req.rev, task) {
            agreement.push((task.to_string(), a.statistic.to_string(), a.overall));
        }
    }

    // De-identification and provenance.
    let hist = crate::provgraph::history(repo, id)?;
    let mut deid = None;
    let mut provenance = Vec::new();
    for (hid, hc) in &hist {
        let p = &hc.activity.parameters;
        if hc.activity.kind == "deid" {
            deid = Some((
                p.get("profile").cloned().unwrap_or_default(),
                p.get("profile-revision").cloned().unwrap_or_default(),
                p.get("options").map(|o| o.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect()).unwrap_or_default(),
                p.get("key-fingerprint").cloned().unwrap_or_default(),
            ));
        }
        let details = p.iter().filter(|(k, v)| v.len() <= 120 && !k.starts_with("code-repo")).map(|(k, v)| (k.clone(), v.clone())).collect();
        provenance.push(StepCard {
            commit: hid.short(),
            time: format_time(hc.time_us),
            kind: hc.activity.kind.clone(),
            user: hc.activity.agent.user.clone(),
            message: hc.message.lines().next().unwrap_or("").to_string(),
            details,
        });
    }
    if deid.is_none() {
        warnings.push("this dataset state is not de-identified".into());
    }
    Ok(CardData {
        title: req.rev.clone(),
        commit: id.hex(),
        commit_time: format_time(c.time_us),
        tool: format!("{TOOL} {VERSION}"),
        split: split_name,
        parts,
        modality,
        manufacturer,
        sex,
        age_years: age_bins(&ages),
        readers,
        agreement,
        deid,
        provenance,
        warnings,
    })
}
