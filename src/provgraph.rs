//! The history up to a commit as a W3C PROV document (`cohort prov`).
//!
//! Entities: commits, the DICOM instances (by SOP Instance UID) and their stored versions
//! (by object id), annotation sets, splits, code versions of runs. Activities: one per commit
//! (its recorded activity, with parameters). Agents: users, readers, and cohort as a software
//! agent acting on the user's behalf. Relations: used (parent commits, source commits, inputs,
//! annotation inputs), wasGeneratedBy, wasDerivedFrom (commit from parent, de-identified
//! instance from its source, new version from old, consensus from its inputs),
//! wasAssociatedWith, wasAttributedTo, actedOnBehalfOf, specializationOf (a stored version of
//! an instance).

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::dataset::Dataset;
use crate::diff::{diff_trees, TreeSource};
use crate::id::ObjectId;
use crate::object::{Commit, EntryKind};
use crate::prov::{Attrs, ProvDoc, QName, Relation, Value};
use crate::repo::{Repo, RepoError};

pub const NAMESPACE: &str = "urn:cohort:";

/// A QName local part: letters, digits and `._-/` kept, anything else %-escaped.
fn local(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn q(kind: &str, v: &str) -> QName {
    format!("cohort:{kind}/{}", local(v))
}

fn time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".into())
}

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

struct Builder {
    doc: ProvDoc,
}

impl Builder {
    fn agent_user(&mut self, user: &str) -> QName {
        let id = q("user", user);
        self.doc.agents.entry(id.clone()).or_insert_with(|| vec![("prov:type".into(), Value::QName("prov:Person".into())), ("prov:label".into(), s(user))]);
        id
    }
    fn agent_tool(&mut self, tool: &str, version: &str) -> QName {
        let id = q("software", &format!("{tool}-{version}"));
        self.doc.agents.entry(id.clone()).or_insert_with(|| {
            vec![("prov:type".into(), Value::QName("prov:SoftwareAgent".into())), ("prov:label".into(), s(&format!("{tool} {version}")))]
        });
        id
    }
    fn entity(&mut self, id: &QName, attrs: Attrs) {
        self.doc.entities.entry(id.clone()).or_insert(attrs);
    }
}

/// Every commit `rev` descends from (parents, and the sources of deid commits in this store),
/// each after everything it was made from (clocks can be pinned or skewed, so order comes from
/// the graph, not from times).
pub fn history(repo: &Repo, start: ObjectId) -> Result<Vec<(ObjectId, Commit)>, RepoError> {
    let mut done = HashSet::new();
    let mut out = Vec::new();
    // Iterative post-order: (id, children pushed?)
    let mut stack = vec![(start, false)];
    let mut commits: HashMap<ObjectId, Commit> = HashMap::new();
    while let Some((id, expanded)) = stack.pop() {
        if done.contains(&id) {
            continue;
        }
        if expanded {
            done.insert(id);
            if let Some(c) = commits.remove(&id) {
                out.push((id, c));
            }
            continue;
        }
        if !repo.store.contains(&id) {
            done.insert(id);
            continue;
        }
        let c = repo.store.read_commit(&id)?;
        stack.push((id, true));
        let mut from: Vec<ObjectId> = c.parents.clone();
        from.extend(crate::lineage::source_commit(&c));
        for p in from.into_iter().rev() {
            if !done.contains(&p) {
                stack.push((p, false));
            }
        }
        commits.insert(id, c);
    }
    Ok(out)
}

/// Build the PROV document of the history up to `rev`.
pub fn prov(repo: &Repo, rev: &str) -> Result<ProvDoc, RepoError> {
    let start = repo.resolve(rev)?;
    let hist = history(repo, start)?;
    let mut b = Builder { doc: ProvDoc::default() };
    b.doc.prefixes.insert("cohort".into(), NAMESPACE.into());
    b.doc.prefixes.insert("prov".into(), crate::prov::PROV_NS.into());
    b.doc.prefixes.insert("xsd".into(), crate::prov::XSD_NS.into());
    let src = TreeSource { store: &repo.store, extra: None };
    let mut on_behalf: BTreeSet<(QName, QName)> = BTreeSet::new();
    let mut set_entity: HashMap<ObjectId, QName> = HashMap::new();
    let in_history: HashSet<ObjectId> = hist.iter().map(|(i, _)| *i).collect();
    for (id, c) in &hist {
        let ce = q("commit", &id.hex());
        let act = q("activity", &id.hex());
        let user = b.agent_user(&c.activity.agent.user);
        let tool = b.agent_tool(&c.activity.agent.tool, &c.activity.agent.tool_version);
        on_behalf.insert((tool.clone(), user.clone()));
        let mut attrs: Attrs = vec![
            ("prov:type".into(), Value::QName("cohort:Commit".into())),
            ("prov:label".into(), s(c.message.lines().next().unwrap_or(""))),
            ("cohort:tree".into(), s(&c.tree.hex())),
        ];
        if let Some(sig) = &c.signature {
            attrs.push(("cohort:signedBy".into(), s(&sig.signer)));
        }
        b.entity(&ce, attrs);
        let mut aattrs: Attrs = vec![("prov:type".into(), Value::QName(format!("cohort:{}", local(&c.activity.kind))))];
        for (k, v) in &c.activity.parameters {
            aattrs.push((format!("cohort:{}", local(k)), s(v)));
        }
        b.doc.activities.insert(act.clone(), (Some(time(c.activity.started_us)), Some(time(c.activity.ended_us.max(c.activity.started_us))), aattrs));
        let rel = &mut b.doc.relations;
        rel.push(Relation::WasGeneratedBy { id: None, entity: ce.clone(), activity: act.clone(), time: Some(time(c.time_us)), attrs: vec![] });
        rel.push(Relation::WasAssociatedWith { id: None, activity: act.clone(), agent: user.clone(), plan: None, attrs: vec![] });
        rel.push(Relation::WasAssociatedWith { id: None, activity: act.clone(), agent: tool.clone(), plan: None, attrs: vec![] });
        rel.push(Relation::WasAttributedTo { id: None, entity: ce.clone(), agent: user.clone(), attrs: vec![] });
        let mut used_commits: Vec<ObjectId> = c.parents.clone();
        used_commits.extend(crate::lineage::source_commit(c));
        for p in used_commits.iter().filter(|p| in_history.contains(p)) {
            let pe = q("commit", &p.hex());
            b.doc.relations.push(Relation::Used { id: None, activity: act.clone(), entity: pe.clone(), time: None, attrs: vec![] });
            b.doc.relations.push(Relation::WasDerivedFrom { id: None, generated: ce.clone(), used: pe, activity: Some(act.clone()), attrs: vec![] });
        }
        // Code that ran.
        if let Some(g) = c.activity.parameters.get("code-git-commit") {
            let code = q("code", g);
            let mut ca: Attrs = vec![("prov:type".into(), Value::QName("cohort:Code".into())), ("cohort:gitCommit".into(), s(g))];
            if let Some(sc) = c.activity.parameters.get("code-script") {
                ca.push(("cohort:script".into(), s(sc)));
            }
            b.entity(&code, ca);
            b.doc.relations.push(Relation::Used { id: None, activity: act.clone(), entity: code, time: None, attrs: vec![] });
        }
        // Instances introduced or changed by this commit.
        let parent_tree = repo.store.tree_of(c.parents.first())?;
        let parent_tree = if crate::lineage::source_commit(c).is_some() { None } else { parent_tree };
        let changes = diff_trees(&src, parent_tree, Some(c.tree))?;
        let source_ds = match crate::lineage::source_commit(c) {
            Some(sc) if repo.store.contains(&sc) => {
                let scm = repo.store.read_commit(&sc)?;
                Some(Dataset::load(&repo.store, sc, &scm.tree)?)
            }
            _ => None,
        };
        for ch in &changes {
            let Some(n) = &ch.new else { continue };
            if n.kind != EntryKind::Dicom {
                continue;
            }
            let d = repo.store.read_dicom(&n.id)?;
            let Some(sop) = d.info.sop_instance_uid.clone() else { continue };
            let inst = q("instance", &sop);
            b.entity(&inst, vec![("prov:type".into(), Value::QName("cohort:Instance".into())), ("cohort:sopInstanceUID".into(), s(&sop))]);
            let ver = q("object", &n.id.hex());
            let mut va: Attrs = vec![("prov:type".into(), Value::QName("cohort:StoredInstance".into())), ("cohort:path".into(), s(&ch.path))];
            if let Some(m) = &d.info.modality {
                va.push(("cohort:modality".into(), s(m)));
            }
            b.entity(&ver, va);
            b.doc.relations.push(Relation::SpecializationOf { specific: ver.clone(), general: inst });
            b.doc.relations.push(Relation::WasGeneratedBy { id: None, entity: ver.clone(), activity: act.clone(), time: None, attrs: vec![] });
            b.doc.relations.push(Relation::HadMember { collection: ce.clone(), entity: ver.clone() });
            if let Some(o) = &ch.old {
                if o.kind == EntryKind::Dicom {
                    let old = q("object", &o.id.hex());
                    if b.doc.entities.contains_key(&old) {
                        b.doc.relations.push(Relation::WasDerivedFrom { id: None, generated: ver.clone(), used: old, activity: Some(act.clone()), attrs: vec![] });
                    }
                }
            }
            if let (Some(sds), Some(px)) = (&source_ds, d.pixel) {
                if let Some(si) = sds.items.iter().find(|i| i.pixel == Some(px)) {
                    let old = q("object", &si.entry.id.hex());
                    if b.doc.entities.contains_key(&old) {
                        b.doc.relations.push(Relation::Used { id: None, activity: act.clone(), entity: old.clone(), time: None, attrs: vec![] });
                        b.doc.relations.push(Relation::WasDerivedFrom { id: None, generated: ver.clone(), used: old, activity: Some(act.clone()), attrs: vec![("prov:type".into(), Value::QName("cohort:Deidentification".into()))] });
                    }
                }
            }
        }
        // Annotation sets and splits this commit made.
        let cat = repo.store.catalog_of(c)?;
        let parent_cat = match c.parents.first() {
            Some(p) if crate::lineage::source_commit(c).is_none() => repo.store.catalog_of(&repo.store.read_commit(p)?)?,
            _ => Default::default(),
        };
        for ((task, reader), sid) in &cat.annotations {
            if parent_cat.annotations.get(&(task.clone(), reader.clone())) == Some(sid) || set_entity.contains_key(sid) {
                continue;
            }
            let set = repo.store.read_annotations(sid)?;
            let se = q("annotations", &sid.hex());
            b.entity(
                &se,
                vec![
                    ("prov:type".into(), Value::QName("cohort:AnnotationSet".into())),
                    ("cohort:task".into(), s(task)),
                    ("cohort:reader".into(), s(reader)),
                    ("cohort:kind".into(), s(set.kind.name())),
                    ("cohort:source".into(), s(set.source.name())),
                    ("cohort:items".into(), Value::Int((set.labels.len() + set.boxes.len() + set.segmentations.len()) as i64)),
                ],
            );
            b.doc.relations.push(Relation::WasGeneratedBy { id: None, entity: se.clone(), activity: act.clone(), time: Some(time(set.time_us)), attrs: vec![] });
            b.doc.relations.push(Relation::HadMember { collection: ce.clone(), entity: se.clone() });
            if set.derivation.is_none() && crate::lineage::source_commit(c).is_none() {
                let ra = q("reader", reader);
                b.doc.agents.entry(ra.clone()).or_insert_with(|| vec![("prov:type".into(), Value::QName("prov:Person".into())), ("prov:label".into(), s(reader))]);
                b.doc.relations.push(Relation::WasAttributedTo { id: None, entity: se.clone(), agent: ra, attrs: vec![] });
            }
            let mut from: Vec<ObjectId> = set.previous.into_iter().collect();
            if let Some(d) = &set.derivation {
                from.extend(d.inputs.iter().map(|(_, i)| *i));
            }
            if crate::lineage::source_commit(c).is_some() {
                // Mapped from the source commit's set of the same (task, reader).
                if let Some(sc) = crate::lineage::source_commit(c).filter(|sc| repo.store.contains(sc)) {
                    if let Some(old) = repo.store.catalog_of(&repo.store.read_commit(&sc)?)?.annotations.get(&(task.clone(), reader.clone())) {
                        from.push(*old);
                    }
                }
            }
            for f in from {
                if let Some(fe) = set_entity.get(&f) {
                    b.doc.relations.push(Relation::WasDerivedFrom { id: None, generated: se.clone(), used: fe.clone(), activity: Some(act.clone()), attrs: vec![] });
                    b.doc.relations.push(Relation::Used { id: None, activity: act.clone(), entity: fe.clone(), time: None, attrs: vec![] });
                }
            }
            set_entity.insert(*sid, se);
        }
        for (name, sid) in &cat.splits {
            if parent_cat.splits.get(name) == Some(sid) {
                continue;
            }
            let split = repo.store.read_split(sid)?;
            let se = q("split", &sid.hex());
            let parts: Vec<String> = split.parts.iter().map(|(p, r)| format!("{p}={r}")).collect();
            b.entity(
                &se,
                vec![
                    ("prov:type".into(), Value::QName("cohort:Split".into())),
                    ("cohort:name".into(), s(name)),
                    ("cohort:ratios".into(), s(&parts.join(","))),
                    ("cohort:groups".into(), Value::Int(split.assignments.len() as i64)),
                ],
            );
            b.doc.relations.push(Relation::WasGeneratedBy { id: None, entity: se.clone(), activity: act.clone(), time: None, attrs: vec![] });
            b.doc.relations.push(Relation::HadMember { collection: ce.clone(), entity: se.clone() });
        }
    }
    // cohort acted on behalf of each user who ran it.
    for (t, u) in on_behalf {
        b.doc.relations.push(Relation::ActedOnBehalfOf { id: None, delegate: t, responsible: u, attrs: vec![] });
    }
    Ok(b.doc)
}
