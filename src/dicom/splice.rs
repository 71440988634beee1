//! Three-way merge of DICOM headers, top-level element by top-level element.
//!
//! Two curators who corrected different attributes of the same instance on two branches
//! changed different top-level elements of its header. Each element (a sequence with all its
//! items) is a unit: one changed on one side only takes that side's bytes, one changed on both
//! sides to the same bytes is kept, and one changed on both sides differently is a conflict,
//! except for a sequence whose items can be matched ([`merge_sequence`]: by the UID that says
//! what each is about, or by place): it is merged item by item, each item's elements by the
//! same rule (down to nested sequences), and written in this branch's encoding of the
//! sequence and its items, defined lengths counted anew. The file meta group
//! (with the preamble before it) is one more unit. The merged header is the units' bytes in
//! tag order, as the data set requires, and must read as DICOM again.
//!
//! Splicing bytes is only sound when every unit is encoded alike, so headers are not merged
//! (the caller keeps the conflict) when:
//! - their transfer syntaxes differ (elements would mix encodings);
//! - Specific Character Set (0008,0005) differs (text of one side would be read in the
//!   other's character set).
//!
//! A group length (gggg,0000), which older writers put in front of each group, counts the
//! bytes of its group: it is not a unit of its own but follows its group. The merge has one
//! where the three-way rule on its presence says so; its value is this branch's (or the
//! other side's) when the merged group is byte for byte that side's, and counted anew
//! otherwise.
//!
//! Nor are they merged when Patient Identity Removed (0012,0062) differs between the two
//! sides: one side de-identified the instance, and what the other side added or changed has
//! not been through that de-identification (a patient's address added there would land in
//! the de-identified file).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::{analyze, walk, Analysis, DicomError, DicomSummary};
use crate::threeway::{pick, Pick};

/// The key of the file meta group unit: no data set element has group 0002.
pub const FILE_META: (u16, u16) = (0x0002, 0x0000);
const SPECIFIC_CHARACTER_SET: (u16, u16) = (0x0008, 0x0005);
const PATIENT_IDENTITY_REMOVED: (u16, u16) = (0x0012, 0x0062);

/// The outcome of [`merge_headers`].
#[derive(Debug)]
pub enum HeaderMerge {
    /// The merged header, its summary, and the units ([`FILE_META`] for the file meta group)
    /// that only this side changed, only the other side, and both alike.
    Merged { header: Vec<u8>, summary: Box<DicomSummary>, changed: Changed },
    /// The units both sides changed, differently.
    Conflict(Vec<Unit>),
    /// Why these headers are not merged element by element.
    NotMergeable(String),
}

/// A unit of a merge: a top-level element ([`FILE_META`] for the file meta group), or an
/// element inside an item of a sequence both sides changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The enclosing sequences, outermost first, each with the item's index (from 0, as in
    /// `diff`'s paths and dcmodify's).
    pub within: Vec<((u16, u16), usize)>,
    pub tag: (u16, u16),
}

impl From<(u16, u16)> for Unit {
    fn from(tag: (u16, u16)) -> Unit {
        Unit { within: Vec::new(), tag }
    }
}

/// The units a merge took from each side.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Changed by this branch only.
    pub ours: Vec<Unit>,
    /// Changed by the other side only.
    pub theirs: Vec<Unit>,
    /// Changed by both, to the same bytes.
    pub both: Vec<Unit>,
    /// Changed by both differently, and settled with the side the caller chose.
    pub settled: Vec<Unit>,
}

impl Changed {
    fn extend(&mut self, other: Changed) {
        self.ours.extend(other.ours);
        self.theirs.extend(other.theirs);
        self.both.extend(other.both);
        self.settled.extend(other.settled);
    }
}

/// The side that takes a unit both sides changed differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ours,
    Theirs,
}

/// A header's units (file meta group and top-level elements), or an item's elements, by key.
type Units<'a> = BTreeMap<(u16, u16), &'a [u8]>;

/// The transfer syntax and units of one header; `None` when a tag appears twice (its units
/// cannot be told apart).
fn units(header: &[u8]) -> Result<(String, Option<Units<'_>>), DicomError> {
    let t = walk::top_level(header)?;
    let mut m = BTreeMap::new();
    m.insert(FILE_META, &header[..t.dataset_start]);
    let n = t.elements.len() + 1;
    for (tag, range) in t.elements {
        m.insert(tag, &header[range]);
    }
    Ok((t.transfer_syntax, (m.len() == n).then_some(m)))
}

/// What stays the same through one merge.
#[derive(Clone, Copy)]
struct Ctx<'s> {
    transfer_syntax: &'s str,
    big_endian: bool,
    settle: Option<Settle>,
}

/// Merged units in tag order: each a side's bytes, or made anew.
type MergedUnits<'a> = Vec<((u16, u16), Cow<'a, [u8]>)>;

/// A sequence merged item by item ([`merge_sequence`]): the merged element and what each
/// side changed in it, or the units both changed differently.
type SequenceMerge = Result<(Vec<u8>, Changed), Vec<Unit>>;

/// The three-way merge of one level's units (a header's, or an item's).
struct Level<'a> {
    /// The merged units in tag order (group lengths, at the top level, apart).
    merged: MergedUnits<'a>,
    changed: Changed,
    conflicts: Vec<Unit>,
    /// Group lengths the merge has, by the three-way rule on their presence.
    group_lengths: Vec<(u16, u16)>,
}

/// Merge one level's units: each by the three-way rule; one both sides changed differently,
/// when it is a sequence with as many items on every side, item by item ([`merge_sequence`]),
/// else it takes the side `ctx.settle` chooses, or is a conflict.
fn merge_level<'a>(ctx: Ctx<'_>, within: &[((u16, u16), usize)], b: &Units<'a>, o: &Units<'a>, t: &Units<'a>, depth: usize) -> Level<'a> {
    let unit = |tag| Unit { within: within.to_vec(), tag };
    let keys: BTreeSet<(u16, u16)> = b.keys().chain(o.keys()).chain(t.keys()).copied().collect();
    let mut level = Level { merged: Vec::new(), changed: Changed::default(), conflicts: Vec::new(), group_lengths: Vec::new() };
    for k in keys {
        let (vb, vo, vt) = (b.get(&k), o.get(&k), t.get(&k));
        if is_group_length(k) {
            // Present by the three-way rule on presence; its value is settled by the caller.
            let (pb, po, pt) = (vb.is_some(), vo.is_some(), vt.is_some());
            if if po == pb { pt } else { po } {
                level.group_lengths.push(k);
            }
            continue;
        }
        let v = match pick(vb, vo, vt) {
            Pick::Unchanged => vo,
            Pick::Both => {
                level.changed.both.push(unit(k));
                vo
            }
            Pick::Ours => {
                level.changed.ours.push(unit(k));
                vo
            }
            Pick::Theirs => {
                level.changed.theirs.push(unit(k));
                vt
            }
            Pick::Conflict => {
                let inner = match (vb, vo, vt) {
                    (Some(xb), Some(xo), Some(xt)) if depth < walk::MAX_DEPTH => merge_sequence(ctx, within, k, [xb, xo, xt], depth + 1),
                    _ => None,
                };
                match inner {
                    Some(Ok((bytes, changed))) => {
                        level.changed.extend(changed);
                        level.merged.push((k, Cow::Owned(bytes)));
                        continue;
                    }
                    Some(Err(conflicts)) => {
                        level.conflicts.extend(conflicts);
                        continue;
                    }
                    None => {}
                }
                if let Some(side) = ctx.settle {
                    level.changed.settled.push(unit(k));
                    if side == Settle::Ours { vo } else { vt }
                } else {
                    level.conflicts.push(unit(k));
                    continue;
                }
            }
        };
        if let Some(v) = v {
            level.merged.push((k, Cow::Borrowed(*v)));
        }
    }
    level
}

/// Merge sequence `tag`, changed differently on both sides, item by item. Items are matched
/// by what they are about when every item of every side has the same identifying UID
/// ([`IDENTITY`], the first that does) and no side repeats one: then items added or removed
/// on one side come in too, and an item removed on one side and changed on the other, or
/// added on both differently, is a conflict. Otherwise items are matched by place, when
/// every side has as many; an item both changed whose identifying UID one side changed is
/// then another item, and the sequence is not merged inside. Each item both changed has its
/// elements merged like a level ([`merge_level`]).
///
/// `Ok` with the merged element (this branch's encoding: its header, and defined or
/// undefined lengths as its sequence and items have them, counted anew; an item only the
/// other side has keeps its own) and what each side changed in it; `Err` with the units both
/// changed differently; `None` when it is not merged inside (then the sequence is one unit).
/// Matched items: (base, ours, theirs), each an index into its side's items.
type Slot = (Option<usize>, Option<usize>, Option<usize>);

fn merge_sequence(ctx: Ctx<'_>, within: &[((u16, u16), usize)], tag: (u16, u16), [b, o, t]: [&[u8]; 3], depth: usize) -> Option<SequenceMerge> {
    // The bytes walked as part of their whole header already; one that does not walk alone
    // is left one unit.
    let layout = |bytes: &[u8]| walk::sequence_layout(bytes, ctx.transfer_syntax).ok().flatten();
    let (lb, lo, lt) = (layout(b)?, layout(o)?, layout(t)?);
    fn item_units<'b>(bytes: &'b [u8], item: &walk::ItemLayout) -> Option<Units<'b>> {
        let m: Units<'b> = item.elements.iter().map(|(k, r)| (*k, &bytes[r.clone()])).collect();
        // A repeated tag, or a group length (which would have to be counted anew), leaves
        // the sequence one unit.
        (m.len() == item.elements.len() && !m.keys().any(|k| is_group_length(*k))).then_some(m)
    }
    // Each side's items: their elements, and whether the item has a defined length.
    let items = |bytes, l: &walk::SequenceLayout| l.items.iter().map(|i| Some((item_units(bytes, i)?, i.defined))).collect::<Option<Vec<_>>>();
    let (ib, io, it) = (items(b, &lb)?, items(o, &lo)?, items(t, &lt)?);
    let identity = IDENTITY.into_iter().find(|k| {
        [&ib, &io, &it].iter().all(|side| {
            let mut seen = BTreeSet::new();
            side.iter().all(|(u, _)| u.get(k).is_some_and(|v| seen.insert(*v)))
        })
    });
    let slots: Vec<Slot> = match identity {
        Some(k) => {
            // Each side's items by their identifying element (present and unique, checked
            // above).
            let keys = |side: &[(Units<'_>, bool)]| side.iter().map(|(u, _)| u[&k].to_vec()).collect::<Vec<Vec<u8>>>();
            let (kb, ko, kt) = (keys(&ib), keys(&io), keys(&it));
            let by_key = |ks: &[Vec<u8>]| ks.iter().enumerate().map(|(i, key)| (key.clone(), i)).collect::<BTreeMap<Vec<u8>, usize>>();
            let (mb, mo, mt) = (by_key(&kb), by_key(&ko), by_key(&kt));
            // This branch's items in their order, then the other side's new ones in theirs.
            let mut slots: Vec<Slot> = ko.iter().enumerate().map(|(i, key)| (mb.get(key).copied(), Some(i), mt.get(key).copied())).collect();
            slots.extend(kt.iter().enumerate().filter(|(_, key)| !mo.contains_key(*key)).map(|(i, key)| (mb.get(key).copied(), None, Some(i))));
            // Base items neither side has any more.
            slots.extend(kb.iter().enumerate().filter(|(_, key)| !mo.contains_key(*key) && !mt.contains_key(*key)).map(|(i, _)| (Some(i), None, None)));
            slots
        }
        None if ib.len() == io.len() && io.len() == it.len() => (0..ib.len()).map(|i| (Some(i), Some(i), Some(i))).collect(),
        None => {
            let (ub, uo, ut): (Vec<_>, Vec<_>, Vec<_>) = (ib.iter().map(|(u, _)| u).collect(), io.iter().map(|(u, _)| u).collect(), it.iter().map(|(u, _)| u).collect());
            align_by_content(&ub, &uo, &ut)?
        }
    };
    let (mut value, mut changed, mut conflicts) = (Vec::new(), Changed::default(), Vec::new());
    let word = |n: u32| if ctx.big_endian { n.to_be_bytes() } else { n.to_le_bytes() };
    let tag_bytes = |(g, e): (u16, u16)| if ctx.big_endian { [g.to_be_bytes(), e.to_be_bytes()].concat() } else { [g.to_le_bytes(), e.to_le_bytes()].concat() };
    let mut place = 0;
    for (sb, so, st) in slots {
        let (ub, uo, ut) = (sb.map(|i| &ib[i].0), so.map(|i| &io[i].0), st.map(|i| &it[i].0));
        let mut here = within.to_vec();
        here.push((tag, place));
        // What an item added or removed as a whole is named by: its identifying UID.
        let whole = |here: &[((u16, u16), usize)]| Unit { within: here.to_vec(), tag: identity.unwrap_or(tag) };
        let merged: Option<(Vec<u8>, bool)> = if let (Some(xb), Some(xo), Some(xt)) = (ub, uo, ut) {
            // On every side: its elements merged (what one side changed comes from it).
            if identity.is_none() && xo != xb && xt != xb && IDENTITY.iter().any(|k| xb.get(k) != xo.get(k) || xb.get(k) != xt.get(k)) {
                // Matched by place, both changed it, and one side made it about another
                // object.
                return None;
            }
            let level = merge_level(ctx, &here, xb, xo, xt, depth);
            if !level.conflicts.is_empty() {
                conflicts.extend(level.conflicts);
                continue;
            }
            changed.extend(level.changed);
            let content: Vec<u8> = level.merged.iter().flat_map(|(_, v)| v.iter().copied()).collect();
            // (This branch has the item: it is on every side.)
            Some((content, so.is_none_or(|i| io[i].1)))
        } else {
            // Missing on some side: added or removed as a whole.
            let ours_item = || so.map(|i| (item_content(&io[i].0), io[i].1));
            let theirs_item = || st.map(|i| (item_content(&it[i].0), it[i].1));
            match (pick(ub, uo, ut), ctx.settle) {
                (Pick::Unchanged, _) => ours_item(),
                (Pick::Both, _) => {
                    changed.both.push(whole(&here));
                    ours_item()
                }
                (Pick::Ours, _) => {
                    changed.ours.push(whole(&here));
                    ours_item()
                }
                (Pick::Theirs, _) => {
                    changed.theirs.push(whole(&here));
                    theirs_item()
                }
                // Removed on one side and changed on the other, or added on both differently.
                (Pick::Conflict, Some(side)) => {
                    changed.settled.push(whole(&here));
                    if side == Settle::Ours { ours_item() } else { theirs_item() }
                }
                (Pick::Conflict, None) => {
                    conflicts.push(whole(&here));
                    continue;
                }
            }
        };
        let Some((content, defined)) = merged else { continue };
        value.extend(tag_bytes(ITEM));
        if defined {
            value.extend(word(u32::try_from(content.len()).ok()?));
            value.extend(&content);
        } else {
            value.extend(word(UNDEFINED));
            value.extend(&content);
            value.extend(tag_bytes(ITEM_DELIM));
            value.extend(word(0));
        }
        place += 1;
    }
    if !conflicts.is_empty() {
        return Some(Err(conflicts));
    }
    let mut element = o[..lo.value_start].to_vec();
    if lo.defined {
        let n = u32::try_from(value.len()).ok()?;
        element[lo.value_start - 4..].copy_from_slice(&word(n));
        element.extend(value);
    } else {
        element.extend(value);
        element.extend(tag_bytes(SEQ_DELIM));
        element.extend(word(0));
    }
    Some(Ok((element, changed)))
}

/// An item's data set: its elements' bytes in tag order.
/// Matched items (base, ours, theirs), for a sequence whose items no UID identifies and whose
/// sides have different numbers of items. Each side is aligned with the base by the longest
/// common run of equal items; between two equal items, as many items on both sides are the
/// same items changed, in place, and otherwise the base's are removed and the side's added.
/// Items both sides added at the same place, unless the same, leave the sequence one unit
/// (None), as does a sequence too long to align.
fn align_by_content<T: PartialEq>(b: &[T], o: &[T], t: &[T]) -> Option<Vec<Slot>> {
    const MAX_CELLS: usize = 1 << 20;
    // Per base item its partner on side `x`, and per place (before base item k; k = len at the
    // end) the items `x` added there.
    type Alignment = (Vec<Option<usize>>, Vec<Vec<usize>>);
    let align = |x: &[T]| -> Option<Alignment> {
        let (n, m) = (b.len(), x.len());
        if (n + 1).saturating_mul(m + 1) > MAX_CELLS {
            return None;
        }
        // lcs[i][j]: the longest common run of b[i..] and x[j..].
        let mut lcs = vec![vec![0u32; m + 1]; n + 1];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i][j] = if b[i] == x[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
            }
        }
        let mut equal = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < n && j < m {
            if b[i] == x[j] {
                equal.push((i, j));
                i += 1;
                j += 1;
            } else if lcs[i + 1][j] >= lcs[i][j + 1] {
                i += 1;
            } else {
                j += 1;
            }
        }
        equal.push((n, m));
        let mut partner = vec![None; n];
        let mut added = vec![Vec::new(); n + 1];
        let (mut pi, mut pj) = (0, 0);
        for (ei, ej) in equal {
            if ei - pi == ej - pj {
                for k in 0..ei - pi {
                    partner[pi + k] = Some(pj + k);
                }
            } else {
                added[ei].extend(pj..ej);
            }
            if ei < n {
                partner[ei] = Some(ej);
            }
            (pi, pj) = (ei + 1, ej + 1);
        }
        Some((partner, added))
    };
    let ((po, ao), (pt, at)) = (align(o)?, align(t)?);
    let mut slots = Vec::new();
    for k in 0..=b.len() {
        match (ao[k].is_empty(), at[k].is_empty()) {
            (false, false) => {
                // Both added here: the same items once, else no order can be chosen.
                if ao[k].len() != at[k].len() || ao[k].iter().zip(&at[k]).any(|(x, y)| o[*x] != t[*y]) {
                    return None;
                }
                slots.extend(ao[k].iter().zip(&at[k]).map(|(x, y)| (None, Some(*x), Some(*y))));
            }
            _ => {
                slots.extend(ao[k].iter().map(|x| (None, Some(*x), None)));
                slots.extend(at[k].iter().map(|y| (None, None, Some(*y))));
            }
        }
        if k < b.len() {
            slots.push((Some(k), po[k], pt[k]));
        }
    }
    Some(slots)
}

fn item_content(units: &Units<'_>) -> Vec<u8> {
    units.values().flat_map(|v| v.iter().copied()).collect()
}

/// The attributes that say which object an item is about (Referenced SOP Instance UID, SOP
/// Instance UID, Study and Series Instance UID, UID): an item whose one changed is another item.
const IDENTITY: [(u16, u16); 5] = [(0x0008, 0x1155), (0x0008, 0x0018), (0x0020, 0x000D), (0x0020, 0x000E), (0x0040, 0xA124)];

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIM: (u16, u16) = (0xFFFE, 0xE00D);
const SEQ_DELIM: (u16, u16) = (0xFFFE, 0xE0DD);

/// Merge `ours` and `theirs`, two headers (a file's bytes before its top-level pixel data)
/// that both descend from `base`; with `settle`, a unit both changed differently takes that
/// side's bytes instead of being a conflict. Errors are for a header that does not walk as
/// DICOM.
pub fn merge_headers(base: &[u8], ours: &[u8], theirs: &[u8], settle: Option<Settle>) -> Result<HeaderMerge, DicomError> {
    let (b, o, t) = (units(base)?, units(ours)?, units(theirs)?);
    if b.0 != o.0 || o.0 != t.0 {
        return Ok(HeaderMerge::NotMergeable(format!("the transfer syntax differs (base {}, this branch {}, theirs {})", b.0, o.0, t.0)));
    }
    let ctx = Ctx { transfer_syntax: &b.0, big_endian: b.0 == walk::TS_EXPLICIT_BE, settle };
    let (Some(b), Some(o), Some(t)) = (b.1, o.1, t.1) else {
        return Ok(HeaderMerge::NotMergeable("a top-level tag appears twice".to_string()));
    };
    let charset = SPECIFIC_CHARACTER_SET;
    if b.get(&charset) != o.get(&charset) || o.get(&charset) != t.get(&charset) {
        return Ok(HeaderMerge::NotMergeable("Specific Character Set (0008,0005) changed".to_string()));
    }
    if o.get(&PATIENT_IDENTITY_REMOVED) != t.get(&PATIENT_IDENTITY_REMOVED) {
        return Ok(HeaderMerge::NotMergeable(
            "Patient Identity Removed (0012,0062) differs: one side de-identified the instance, and the other side's changes have not been through that de-identification".to_string(),
        ));
    }
    let Level { mut merged, changed, conflicts, group_lengths } = merge_level(ctx, &[], &b, &o, &t, 0);
    if !conflicts.is_empty() {
        return Ok(HeaderMerge::Conflict(conflicts));
    }
    let mut counted = Vec::new();
    for g in group_lengths {
        match group_length(g, &merged, [&o, &t], ctx.big_endian) {
            Some(v) => counted.push((g, v)),
            None => return Ok(HeaderMerge::NotMergeable(format!("group length {} is not a 4-byte UL", super::tag_string(g)))),
        }
    }
    merged.extend(counted.into_iter().map(|(k, v)| (k, Cow::Owned(v))));
    // The file meta group (every side has one, so the merge has one) first, then the data
    // set in tag order.
    merged.sort_by_key(|(k, _)| (*k != FILE_META, *k));
    let header: Vec<u8> = merged.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    match analyze(&header) {
        Analysis::Dicom(layout) if layout.pixel.is_none() => {
            Ok(HeaderMerge::Merged { header, summary: Box::new(layout.summary), changed })
        }
        Analysis::Dicom(_) => Ok(HeaderMerge::NotMergeable("the merged header holds pixel data".to_string())),
        Analysis::NotDicom { reason } => Ok(HeaderMerge::NotMergeable(format!("the merged header does not read as DICOM: {reason}"))),
    }
}

fn is_group_length(k: (u16, u16)) -> bool {
    k.1 == 0 && k != FILE_META
}

/// The bytes of group length `g` in the merged `units`: a side's own (first this branch's,
/// then the other's) when the merged group is byte for byte that side's, else that side's
/// element with the group's bytes counted anew. `None` when the element is not 12 bytes (tag,
/// VR UL or implicit, length 4, value), the only form with the value at offset 8.
fn group_length(g: (u16, u16), units: &MergedUnits<'_>, sides: [&Units<'_>; 2], big_endian: bool) -> Option<Vec<u8>> {
    // (Both in tag order: the merged units as the merge makes them, a side's by its map.)
    let in_group = |k: &(u16, u16)| k.0 == g.0 && *k != g;
    let merged = || units.iter().filter(|(k, _)| in_group(k)).map(|(k, v)| (*k, v.as_ref()));
    for side in sides {
        let Some(own) = side.get(&g) else { continue };
        if side.iter().filter(|(k, _)| in_group(k)).map(|(k, v)| (*k, *v)).eq(merged()) {
            return Some(own.to_vec());
        }
    }
    let template = sides.iter().find_map(|s| s.get(&g))?;
    if template.len() != 12 {
        return None;
    }
    let n = u32::try_from(merged().map(|(_, v)| v.len()).sum::<usize>()).ok()?;
    let mut out = template.to_vec();
    out[8..].copy_from_slice(&if big_endian { n.to_be_bytes() } else { n.to_le_bytes() });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::synth::{synth_instance, SynthSpec, SynthSyntax};

    fn spec(syntax: SynthSyntax) -> SynthSpec {
        let mut s = SynthSpec::ct(3, 0, 0, 1);
        (s.rows, s.columns, s.syntax) = (8, 8, syntax);
        s
    }

    fn tops(tags: &[(u16, u16)]) -> Vec<Unit> {
        tags.iter().map(|t| Unit::from(*t)).collect()
    }

    /// The bytes of a file before its pixel data.
    fn header(s: &SynthSpec) -> Vec<u8> {
        let bytes = synth_instance(s);
        match analyze(&bytes) {
            Analysis::Dicom(l) => bytes[..l.pixel.unwrap().element_start as usize].to_vec(),
            Analysis::NotDicom { reason } => panic!("{reason}"),
        }
    }

    /// `bytes` with `element` put at the start of the data set.
    fn with_first(bytes: &[u8], element: &[u8]) -> Vec<u8> {
        with_element_at(bytes, walk::top_level(bytes).unwrap().dataset_start, element)
    }

    #[test]
    fn headers_in_every_syntax_merge_to_the_header_with_both_changes() {
        for syntax in [SynthSyntax::ExplicitLE, SynthSyntax::ImplicitLE, SynthSyntax::ExplicitBE, SynthSyntax::EncapsulatedJpegBaseline] {
            let base = spec(syntax.clone());
            let (mut ours, mut theirs, mut both) = (base.clone(), base.clone(), base.clone());
            ours.patient_name = "FAKE^A^LONGER^NAME".into();
            ours.with_private = false;
            theirs.study_description = "X".into();
            theirs.sop_uid = "2.25.42".into();
            both.patient_name = ours.patient_name.clone();
            both.with_private = false;
            both.study_description = "X".into();
            both.sop_uid = "2.25.42".into();
            let got = merge_headers(&header(&base), &header(&ours), &header(&theirs), None).unwrap();
            let HeaderMerge::Merged { header: h, summary, changed: Changed { ours: o, theirs: t, both: alike, .. } } = got else { panic!("{syntax:?}: {got:?}") };
            assert!(alike.is_empty());
            assert!(h == header(&both), "{syntax:?}");
            assert_eq!((summary.patient_name.as_deref(), summary.sop_instance_uid.as_deref()), (Some("FAKE^A^LONGER^NAME"), Some("2.25.42")));
            // Private tags went with ours; the file meta (its SOP Instance UID) with theirs.
            assert!(o.contains(&(0x0010, 0x0010).into()) && o.iter().any(|k| k.tag.0 == 0x0009), "{o:?}");
            assert_eq!(t, tops(&[FILE_META, (0x0008, 0x0018), (0x0008, 0x1030)]), "{syntax:?}");
            // Merging in the other direction gives the same header.
            let HeaderMerge::Merged { header: back, .. } = merge_headers(&header(&base), &header(&theirs), &header(&ours), None).unwrap() else { panic!() };
            assert!(back == h);
        }
    }

    /// `h` with a group length (with its right value) in front of group `g`.
    fn with_group_length(h: &[u8], g: u16) -> Vec<u8> {
        let t = walk::top_level(h).unwrap();
        let group: Vec<_> = t.elements.iter().filter(|(k, _)| k.0 == g).collect();
        let n: usize = group.iter().map(|(_, r)| r.len()).sum();
        let [lo, hi] = g.to_le_bytes();
        let element = [&[lo, hi, 0, 0, b'U', b'L', 4, 0][..], &(n as u32).to_le_bytes()].concat();
        with_element_at(h, group[0].1.start, &element)
    }

    fn with_element_at(h: &[u8], at: usize, element: &[u8]) -> Vec<u8> {
        [&h[..at], element, &h[at..]].concat()
    }

    #[test]
    fn group_lengths_follow_their_group() {
        let base = spec(SynthSyntax::ExplicitLE);
        let (mut ours, mut theirs) = (base.clone(), base.clone());
        ours.institution_name = "FAKE CLINIC WITH A LONGER NAME".into();
        theirs.study_description = "Z".into();
        let mut both = ours.clone();
        both.study_description = "Z".into();
        let gl = |s: &SynthSpec| with_group_length(&with_group_length(&header(s), 0x0008), 0x0010);
        // Both sides changed group 0008: its length is counted anew; group 0010 is as it was.
        let HeaderMerge::Merged { header: h, changed, .. } = merge_headers(&gl(&base), &gl(&ours), &gl(&theirs), None).unwrap() else { panic!() };
        assert!(h == gl(&both));
        assert_eq!(changed, Changed { ours: tops(&[(0x0008, 0x0080)]), theirs: tops(&[(0x0008, 0x1030)]), ..Default::default() });
        // Only one side changed group 0008: that side's bytes, even where the value is wrong.
        let wrong = |s: &SynthSpec| {
            let mut h = gl(s);
            let at = walk::top_level(&h).unwrap().elements.iter().find(|(k, _)| *k == (0x0008, 0)).unwrap().1.start;
            h[at + 8] ^= 0x10;
            h
        };
        let mut other = base.clone();
        other.patient_name = "FAKE^Q".into();
        let HeaderMerge::Merged { header: h, .. } = merge_headers(&wrong(&base), &wrong(&theirs), &wrong(&other), None).unwrap() else { panic!() };
        let mut expect = theirs.clone();
        expect.patient_name = "FAKE^Q".into();
        assert!(h == wrong(&expect));
    }

    /// `h` with the `nth` occurrence of `from` replaced by `to` (of the same length).
    fn replace_nth(h: &[u8], from: &[u8], to: &[u8], nth: usize) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = h.windows(from.len()).enumerate().filter(|(_, w)| *w == from).nth(nth).unwrap().0;
        [&h[..at], to, &h[at + from.len()..]].concat()
    }

    #[test]
    fn edits_inside_one_sequence_merge_item_by_item_in_every_syntax() {
        // ReferencedImageSequence (undefined length): item 1 of undefined length holding a
        // code sequence of defined length, item 2 the other way round.
        for syntax in [SynthSyntax::ExplicitLE, SynthSyntax::ImplicitLE, SynthSyntax::ExplicitBE, SynthSyntax::EncapsulatedJpegBaseline] {
            let hb = header(&spec(syntax.clone()));
            let ho = replace_nth(&hb, b"Localizer ", b"LOCALIZER ", 0);
            let ht = replace_nth(&hb, b"Localizer ", b"Scout view", 1);
            let got = merge_headers(&hb, &ho, &ht, None).unwrap();
            let HeaderMerge::Merged { header: h, changed, .. } = got else { panic!("{syntax:?}: {got:?}") };
            assert!(h == replace_nth(&ho, b"Localizer ", b"Scout view", 0), "{syntax:?}");
            // (The code sequence, which only one side changed, is the unit.)
            let seq = |item| Unit { within: vec![((0x0008, 0x1140), item)], tag: (0x0040, 0xA170) };
            let code = |item| Unit { within: vec![((0x0008, 0x1140), item), ((0x0040, 0xA170), 0)], tag: (0x0008, 0x0104) };
            assert_eq!(changed, Changed { ours: vec![seq(0)], theirs: vec![seq(1)], ..Default::default() }, "{syntax:?}");
            // The same nested attribute changed differently: a conflict named down to it,
            // unless settled.
            let hx = replace_nth(&hb, b"Localizer ", b"Topogram  ", 0);
            assert!(matches!(merge_headers(&hb, &ho, &hx, None).unwrap(), HeaderMerge::Conflict(u) if u == [code(0)]), "{syntax:?}");
            let HeaderMerge::Merged { header: h, changed, .. } = merge_headers(&hb, &ht, &hx, Some(Settle::Theirs)).unwrap() else { panic!() };
            assert!(h == replace_nth(&hx, b"Localizer ", b"Scout view", 0) && changed.theirs == [seq(0)] && changed.settled.is_empty(), "{syntax:?}");
            let HeaderMerge::Merged { header: h, changed, .. } = merge_headers(&hb, &ho, &hx, Some(Settle::Theirs)).unwrap() else { panic!() };
            assert!(h == hx && changed.settled == [code(0)], "{syntax:?}");
        }
    }

    #[test]
    fn an_item_one_side_made_about_another_object_is_not_merged_inside() {
        // This branch points the first item at another image (its Referenced SOP Instance
        // UID); the other side corrects that item's code. Matched by what they reference, the
        // old item is removed on one side and changed on the other: a conflict.
        let hb = header(&spec(SynthSyntax::ExplicitLE));
        let t = walk::top_level(&hb).unwrap();
        let seq = t.elements.iter().find(|(k, _)| *k == (0x0008, 0x1140)).unwrap().1.clone();
        let layout = walk::sequence_layout(&hb[seq.clone()], "1.2.840.10008.1.2.1").unwrap().unwrap();
        let uid = layout.items[0].elements.iter().find(|(k, _)| *k == (0x0008, 0x1155)).unwrap().1.clone();
        let mut ho = hb.clone();
        let last = seq.start + uid.end - 2;
        ho[last] = if ho[last] == b'1' { b'2' } else { b'1' };
        let ht = replace_nth(&hb, b"Localizer ", b"LOCALIZER ", 0);
        let old_item = Unit { within: vec![((0x0008, 0x1140), 2)], tag: (0x0008, 0x1155) };
        assert!(matches!(merge_headers(&hb, &ho, &ht, None).unwrap(), HeaderMerge::Conflict(u) if u == [old_item.clone()]));
        // Settled for this branch: its item stays, the old one is gone.
        let HeaderMerge::Merged { header: h, changed, .. } = merge_headers(&hb, &ho, &ht, Some(Settle::Ours)).unwrap() else { panic!() };
        assert!(h == ho && changed.settled == [old_item]);
        // The same UID change with the other side's change in the other item merges.
        let ht = replace_nth(&hb, b"Localizer ", b"LOCALIZER ", 1);
        let HeaderMerge::Merged { header: h, .. } = merge_headers(&hb, &ho, &ht, None).unwrap() else { panic!() };
        assert!(h == replace_nth(&ho, b"Localizer ", b"LOCALIZER ", 1));
    }

    #[test]
    fn items_are_matched_by_what_they_reference() {
        let hb = header(&spec(SynthSyntax::ExplicitLE));
        let ho = replace_nth(&hb, b"Localizer ", b"LOCALIZER ", 0);
        // The other side dropped the second item (the sequence has undefined length, so
        // nothing else changes); this branch corrected the first one's code. Both land.
        let t = walk::top_level(&hb).unwrap();
        let seq = t.elements.iter().find(|(k, _)| *k == (0x0008, 0x1140)).unwrap().1.clone();
        let layout = walk::sequence_layout(&hb[seq.clone()], "1.2.840.10008.1.2.1").unwrap().unwrap();
        assert_eq!((layout.defined, layout.items.len(), layout.items[0].defined, layout.items[1].defined), (false, 2, false, true));
        let first_item_end = seq.start + layout.items[0].elements.last().unwrap().1.end + 8;
        let end_of_items = seq.end - 8;
        let ht = [&hb[..first_item_end], &hb[end_of_items..]].concat();
        let HeaderMerge::Merged { header: h, changed, .. } = merge_headers(&hb, &ho, &ht, None).unwrap() else { panic!() };
        assert!(h == [&ho[..first_item_end], &ho[end_of_items..]].concat());
        let item = |place, tag| Unit { within: vec![((0x0008, 0x1140), place)], tag };
        assert_eq!(changed, Changed { ours: vec![item(0, (0x0040, 0xA170))], theirs: vec![item(1, (0x0008, 0x1155))], ..Default::default() });
        // And in the other direction: the same header.
        let HeaderMerge::Merged { header: back, .. } = merge_headers(&hb, &ht, &ho, None).unwrap() else { panic!() };
        assert!(back == h);
        // Damaged bytes give errors, never panics.
        for ts in ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"] {
            let element = &hb[seq.clone()];
            for cut in 0..element.len() {
                let _ = walk::sequence_layout(&element[..cut], ts);
            }
            for at in 0..element.len() {
                let mut e = element.to_vec();
                e[at] ^= 0xFF;
                let _ = walk::sequence_layout(&e, ts);
            }
        }
        // Not a sequence at all: the walker says so.
        let name = t.elements.iter().find(|(k, _)| *k == (0x0010, 0x0010)).unwrap().1.clone();
        assert!(walk::sequence_layout(&hb[name], "1.2.840.10008.1.2.1").unwrap().is_none());
    }

    #[test]
    fn items_without_uids_are_aligned_by_content() {
        let s = |v: &[u8]| v.to_vec();
        let slots = |b: &[u8], o: &[u8], t: &[u8]| align_by_content(&s(b), &s(o), &s(t));
        // This branch appended an item, the other changed one.
        assert_eq!(slots(b"abc", b"abcd", b"aXc"), Some(vec![(Some(0), Some(0), Some(0)), (Some(1), Some(1), Some(1)), (Some(2), Some(2), Some(2)), (None, Some(3), None)]));
        // One removed an item, the other added one at the end.
        assert_eq!(slots(b"abc", b"ac", b"abce"), Some(vec![(Some(0), Some(0), Some(0)), (Some(1), None, Some(1)), (Some(2), Some(1), Some(2)), (None, None, Some(3))]));
        // One item became two: removed, and two added in its place.
        assert_eq!(slots(b"abc", b"aXYc", b"abc"), Some(vec![(Some(0), Some(0), Some(0)), (Some(1), None, Some(1)), (None, Some(1), None), (None, Some(2), None), (Some(2), Some(3), Some(2))]));
        // Both added the same item at the same place: once; different ones: no order to choose.
        assert_eq!(slots(b"ab", b"abz", b"abz"), Some(vec![(Some(0), Some(0), Some(0)), (Some(1), Some(1), Some(1)), (None, Some(2), Some(2))]));
        assert_eq!(slots(b"ab", b"abz", b"aby"), None);
    }

    /// A Procedure Code Sequence (no UIDs in its items) of these (value, meaning) codes, in
    /// explicit VR little endian, undefined lengths.
    fn code_sequence(codes: &[(&str, &str)]) -> Vec<u8> {
        let el = |g: u16, e: u16, vr: &[u8], v: &str| {
            let mut v = v.as_bytes().to_vec();
            if v.len() % 2 == 1 {
                v.push(b' ');
            }
            [&g.to_le_bytes()[..], &e.to_le_bytes(), vr, &(v.len() as u16).to_le_bytes(), &v].concat()
        };
        let mut out = [&[0x08, 0x00, 0x32, 0x10][..], b"SQ", &[0, 0, 0xFF, 0xFF, 0xFF, 0xFF]].concat();
        for (value, meaning) in codes {
            out.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
            out.extend(el(0x0008, 0x0100, b"SH", value));
            out.extend(el(0x0008, 0x0102, b"SH", "FAKE"));
            out.extend(el(0x0008, 0x0104, b"LO", meaning));
            out.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        }
        out.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        out
    }

    #[test]
    fn sequences_without_uids_merge_when_one_side_adds_an_item() {
        let h = header(&spec(SynthSyntax::ExplicitLE));
        // (0008,1032) goes before Series Description (0008,103E).
        let at = h.windows(4).position(|w| w == [0x08, 0x00, 0x3E, 0x10]).unwrap();
        let with = |codes: &[(&str, &str)]| with_element_at(&h, at, &code_sequence(codes));
        let hb = with(&[("C1", "CT HEAD"), ("C2", "CT CHEST")]);
        let ho = with(&[("C1", "CT HEAD"), ("C2", "CT CHEST"), ("C3", "CT ABDOMEN")]);
        let ht = with(&[("C1", "CT HEAD"), ("C2", "CT THORAX")]);
        let want = with(&[("C1", "CT HEAD"), ("C2", "CT THORAX"), ("C3", "CT ABDOMEN")]);
        let HeaderMerge::Merged { header: got, changed, .. } = merge_headers(&hb, &ho, &ht, None).unwrap() else { panic!("not merged") };
        assert!(got == want);
        assert_eq!(changed.theirs, vec![Unit { within: vec![((0x0008, 0x1032), 1)], tag: (0x0008, 0x0104) }]);
        assert_eq!(changed.ours, vec![Unit { within: vec![((0x0008, 0x1032), 2)], tag: (0x0008, 0x1032) }]);
        let HeaderMerge::Merged { header: back, .. } = merge_headers(&hb, &ht, &ho, None).unwrap() else { panic!("not merged") };
        assert!(back == want, "the same either way");
        // Both sides added different items at the end: one unit, a conflict.
        let hx = with(&[("C1", "CT HEAD"), ("C2", "CT CHEST"), ("C4", "CT PELVIS")]);
        assert!(matches!(merge_headers(&hb, &ho, &hx, None).unwrap(), HeaderMerge::Conflict(c) if c == tops(&[(0x0008, 0x1032)])));
    }

    /// Headers damaged at random (every side, each syntax) give a merge, a conflict, a refusal
    /// or an error, never a panic; whatever merges reads as DICOM.
    #[test]
    fn damaged_headers_never_panic() {
        let mut rng = 0x5eed_u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as usize
        };
        for syntax in [SynthSyntax::ExplicitLE, SynthSyntax::ImplicitLE, SynthSyntax::ExplicitBE] {
            let hb = header(&spec(syntax));
            let ho = replace_nth(&hb, b"Localizer ", b"LOCALIZER ", 0);
            let ht = replace_nth(&hb, b"Localizer ", b"Scout view", 1);
            for round in 0..400 {
                let mut sides = [hb.clone(), ho.clone(), ht.clone()];
                let side = &mut sides[round % 3];
                for _ in 0..1 + next() % 3 {
                    let at = next() % side.len();
                    side[at] = (next() & 0xFF) as u8;
                }
                if let Ok(HeaderMerge::Merged { header, .. }) = merge_headers(&sides[0], &sides[1], &sides[2], [None, Some(Settle::Ours)][round % 2]) {
                    assert!(matches!(analyze(&header), Analysis::Dicom(_)));
                }
            }
        }
    }

    #[test]
    fn what_cannot_be_spliced_is_not_merged() {
        let base = spec(SynthSyntax::ExplicitLE);
        let mut ours = base.clone();
        ours.patient_name = "FAKE^B".into();
        let (hb, ho) = (header(&base), header(&ours));
        // The same element changed differently.
        let mut other = base.clone();
        other.patient_name = "FAKE^C".into();
        assert!(matches!(merge_headers(&hb, &ho, &header(&other), None).unwrap(), HeaderMerge::Conflict(t) if t == tops(&[(0x0010, 0x0010)])));
        // ... unless settled: that side's bytes.
        for (side, want) in [(Settle::Ours, &ho), (Settle::Theirs, &header(&other))] {
            let HeaderMerge::Merged { header: h, changed, .. } = merge_headers(&hb, &ho, &header(&other), Some(side)).unwrap() else { panic!() };
            assert!(h == *want && changed.settled == tops(&[(0x0010, 0x0010)]), "{side:?}");
        }
        // Another transfer syntax.
        let implicit = header(&SynthSpec { syntax: SynthSyntax::ImplicitLE, ..base.clone() });
        assert!(matches!(merge_headers(&hb, &ho, &implicit, None).unwrap(), HeaderMerge::NotMergeable(r) if r.contains("transfer syntax differs")));
        // The character set changed on one side (Latin-1 to UTF-8).
        let at = hb.windows(10).position(|w| w == b"ISO_IR 100").unwrap();
        let utf8 = [&hb[..at], b"ISO_IR 192", &hb[at + 10..]].concat();
        assert!(matches!(merge_headers(&hb, &ho, &utf8, None).unwrap(), HeaderMerge::NotMergeable(r) if r.contains("Specific Character Set")));
        // One side de-identified (Patient Identity Removed added), the other added an
        // attribute: not merged, or the address would land in the de-identified file.
        let deid = with_first(&hb, &[0x12, 0, 0x62, 0, b'C', b'S', 4, 0, b'Y', b'E', b'S', b' ']);
        let address = [&hb[..], &[0x10, 0, 0x40, 0x10, b'L', b'O', 4, 0, b'H', b'O', b'M', b'E']].concat();
        assert!(matches!(merge_headers(&hb, &deid, &address, None).unwrap(), HeaderMerge::NotMergeable(r) if r.contains("(0012,0062)")));
        assert!(matches!(merge_headers(&hb, &address, &deid, None).unwrap(), HeaderMerge::NotMergeable(r) if r.contains("(0012,0062)")));
        // Damaged input is an error, never a panic.
        for cut in (0..ho.len()).step_by(7) {
            let _ = merge_headers(&hb, &ho[..cut], &hb, None);
        }
        assert!(merge_headers(&hb, b"not DICOM at all", &hb, None).is_err());
    }
}
