//! Three-way merge of a CSV or TSV table row by row, keyed by its first column.
//!
//! Two curators who each add patients to `clinical.csv` both insert lines at its end: a line
//! merge (diff3) sees one place changed on both sides and stops. Read as a table whose rows
//! are named by their first field (a patient, a study, an image), the two additions are two
//! different rows and merge cleanly; so do a row corrected on one side and another row added
//! on the other. Each row is a unit of the three-way rule, compared as its exact bytes:
//! changed on one side only, that side's row; changed on both sides differently (or added
//! under the same key), a conflict, unless a side was chosen for it.
//!
//! The merge applies only when it is sound, else the caller keeps the line merge's verdict:
//! the three versions parse as CSV (quoted fields may hold delimiters and line breaks), have
//! the same header row, and each names every row by a different non-empty first field. The
//! rows keep their bytes; the output is in key order when each version is sorted by its key
//! (as numbers when every key is one), else in this branch's order with the other side's new
//! rows after it, in their order. Line ends follow this branch's header row, and the file
//! ends with a line end when this branch's does.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};

use crate::threeway::{pick, Pick};

/// The outcome of [`merge_rows`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RowMerge {
    /// The merged table, and the rows (named "`column`=`key`") both sides changed differently
    /// that took the chosen side.
    Merged { text: String, settled: Vec<String> },
    /// The rows both sides changed differently, named "`column`=`key`".
    Conflict(Vec<String>),
}

/// A table's header row and its rows (each without its line end), by first field.
struct Table<'a> {
    header: &'a str,
    rows: Vec<(&'a [u8], &'a str)>,
}

/// Strip one line end; `None` when more line ends follow (blank lines after a row).
fn strip_line_end(s: &str) -> Option<&str> {
    let t = s.strip_suffix("\r\n").or_else(|| s.strip_suffix('\n')).unwrap_or(s);
    (!t.ends_with('\n') && !t.ends_with('\r')).then_some(t)
}

fn table(text: &str, delimiter: u8) -> Option<Table<'_>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(text.as_bytes());
    let mut spans: Vec<(usize, &[u8])> = Vec::new();
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).ok()? {
        // (After a CRLF line end the reader places the next record at its LF.)
        let mut start = usize::try_from(record.position()?.byte()).ok()?;
        while start > 0 && text.as_bytes().get(start) == Some(&b'\n') && text.as_bytes()[start - 1] == b'\r' {
            start += 1;
        }
        let key = record.get(0).filter(|k| !k.is_empty())?;
        // The key is the record's first bytes (quoted keys are not used).
        let key = text.as_bytes().get(start..start + key.len()).filter(|raw| *raw == key)?;
        spans.push((start, key));
    }
    // The header is the first line (nothing before it is kept).
    if spans.first()?.0 != 0 {
        return None;
    }
    let ends = spans.iter().skip(1).map(|(s, _)| *s).chain([text.len()]);
    let mut rows = Vec::with_capacity(spans.len());
    for ((start, key), end) in spans.iter().zip(ends) {
        rows.push((*key, strip_line_end(text.get(*start..end)?)?));
    }
    let (_, header) = rows.remove(0);
    Some(Table { header, rows })
}

/// A table's rows by key; `None` when a key names two rows.
fn index<'a>(tb: &Table<'a>) -> Option<HashMap<&'a [u8], &'a str>> {
    let m: HashMap<&[u8], &str> = tb.rows.iter().map(|(k, r)| (*k, *r)).collect();
    (m.len() == tb.rows.len()).then_some(m)
}

/// The order of keys: as numbers when every key is one, else bytewise.
fn key_order<'k>(mut keys: impl Iterator<Item = &'k [u8]>) -> impl Fn(&[u8], &[u8]) -> Ordering {
    let number = |k: &[u8]| std::str::from_utf8(k).ok().and_then(|s| s.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
    let numeric = keys.all(|k| number(k).is_some());
    move |a: &[u8], b: &[u8]| if numeric { number(a).partial_cmp(&number(b)).unwrap_or(Ordering::Equal).then_with(|| a.cmp(b)) } else { a.cmp(b) }
}

/// Whether `text` is a table this merge can key: a header row, then rows named by different
/// first fields.
pub(crate) fn is_keyed(text: &str, delimiter: u8) -> bool {
    table(text, delimiter).as_ref().and_then(index).is_some()
}

/// Merge three versions of a table (`delimiter` `,` or tab); `None` when they are not tables
/// this merge can key (see the module docs). With `settle`, a row both changed differently
/// takes that side's version (`true`: theirs).
pub(crate) fn merge_rows(base: &str, ours: &str, theirs: &str, delimiter: u8, settle_theirs: Option<bool>) -> Option<RowMerge> {
    let (b, o, t) = (table(base, delimiter)?, table(ours, delimiter)?, table(theirs, delimiter)?);
    if b.header != o.header || o.header != t.header {
        return None;
    }
    let (ib, io, it) = (index(&b)?, index(&o)?, index(&t)?);
    let column = String::from_utf8_lossy(table_key_name(o.header, delimiter)).into_owned();
    let name = |k: &[u8]| format!("{column}={}", String::from_utf8_lossy(k));
    let keys: BTreeSet<&[u8]> = ib.keys().chain(io.keys()).chain(it.keys()).copied().collect();
    let (mut merged, mut conflicts, mut settled) = (HashMap::new(), Vec::new(), Vec::new());
    for k in &keys {
        let (vb, vo, vt) = (ib.get(k), io.get(k), it.get(k));
        let v = match (pick(vb, vo, vt), settle_theirs) {
            (Pick::Unchanged | Pick::Both | Pick::Ours, _) => vo,
            (Pick::Theirs, _) => vt,
            (Pick::Conflict, Some(theirs_side)) => {
                settled.push(name(k));
                if theirs_side { vt } else { vo }
            }
            (Pick::Conflict, None) => {
                conflicts.push(name(k));
                continue;
            }
        };
        if let Some(v) = v {
            merged.insert(*k, *v);
        }
    }
    if !conflicts.is_empty() {
        return Some(RowMerge::Conflict(conflicts));
    }
    // The order: by key when every version is sorted by it, else ours, then theirs' new rows.
    let order = key_order(keys.iter().copied());
    let sorted = |tb: &Table<'_>| tb.rows.windows(2).all(|w| order(w[0].0, w[1].0) != Ordering::Greater);
    let mut out_keys: Vec<&[u8]> = merged.keys().copied().collect();
    if sorted(&b) && sorted(&o) && sorted(&t) {
        out_keys.sort_by(|x, y| order(x, y));
    } else {
        let mut seen = HashSet::new();
        out_keys = o.rows.iter().chain(&t.rows).map(|(k, _)| *k).filter(|k| merged.contains_key(k) && seen.insert(*k)).collect();
    }
    // (The header row starts ours: see `table`.)
    let line_end = if ours[o.header.len()..].starts_with("\r\n") { "\r\n" } else { "\n" };
    let mut text = String::with_capacity(ours.len().max(theirs.len()));
    text.push_str(o.header);
    for k in out_keys {
        text.push_str(line_end);
        text.push_str(merged[k]);
    }
    if ours.ends_with('\n') {
        text.push_str(line_end);
    }
    Some(RowMerge::Merged { text, settled })
}

/// The name of the key column: the header's first field as written.
fn table_key_name(header: &str, delimiter: u8) -> &[u8] {
    let h = header.as_bytes();
    let end = h.iter().position(|c| *c == delimiter).unwrap_or(h.len());
    &h[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(b: &str, o: &str, t: &str) -> Option<RowMerge> {
        merge_rows(b, o, t, b',', None)
    }

    fn text(r: Option<RowMerge>) -> String {
        match r {
            Some(RowMerge::Merged { text, .. }) => text,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rows_added_on_both_sides_merge() {
        let base = "patient_id,age\nP1,50\nP2,61\n";
        let ours = "patient_id,age\nP1,50\nP2,61\nP3,44\n";
        let theirs = "patient_id,age\nP1,51\nP2,61\nP4,39\n";
        assert_eq!(text(merged(base, ours, theirs)), "patient_id,age\nP1,51\nP2,61\nP3,44\nP4,39\n");
        // Unsorted tables keep this branch's order, the other side's new rows after.
        let base = "id,x\nb,1\na,2\n";
        assert_eq!(text(merged(base, "id,x\nb,1\na,2\nz,3\n", "id,x\nc,9\nb,1\na,2\n")), "id,x\nb,1\na,2\nz,3\nc,9\n");
        // Numeric keys sort as numbers; CRLF line ends and a missing final line end kept.
        let base = "n;v\r\n9;a\r\n10;b";
        let r = merge_rows(base, "n;v\r\n9;a\r\n10;B", "n;v\r\n2;z\r\n9;a\r\n10;b", b';', None);
        assert_eq!(text(r), "n;v\r\n2;z\r\n9;a\r\n10;B");
    }

    #[test]
    fn quoted_fields_with_line_breaks_are_one_row() {
        let base = "id,note\n1,\"two\nlines, and a comma\"\n2,plain\n";
        let ours = "id,note\n1,\"two\nlines, and a comma\"\n2,changed\n";
        let theirs = "id,note\n1,\"two\nlines, edited\"\n2,plain\n3,new\n";
        assert_eq!(text(merged(base, ours, theirs)), "id,note\n1,\"two\nlines, edited\"\n2,changed\n3,new\n");
    }

    #[test]
    fn the_same_row_changed_differently_conflicts_unless_settled() {
        let base = "id,label\n1,a\n2,b\n";
        let (ours, theirs) = ("id,label\n1,x\n2,b\n3,c\n", "id,label\n1,y\n2,b\n3,d\n");
        assert_eq!(merged(base, ours, theirs), Some(RowMerge::Conflict(vec!["id=1".into(), "id=3".into()])));
        assert_eq!(
            merge_rows(base, ours, theirs, b',', Some(true)),
            Some(RowMerge::Merged { text: theirs.to_string(), settled: vec!["id=1".into(), "id=3".into()] })
        );
        // Removed on one side, changed on the other: a conflict too.
        assert_eq!(merged(base, "id,label\n2,b\n", "id,label\n1,z\n2,b\n"), Some(RowMerge::Conflict(vec!["id=1".into()])));
        // Removed on one side only: removed.
        assert_eq!(text(merged(base, "id,label\n2,b\n", "id,label\n1,a\n2,b\n4,e\n")), "id,label\n2,b\n4,e\n");
    }

    #[test]
    fn keyed_tables_are_told_apart() {
        assert!(is_keyed("id,v\n1,a\n2,b\n", b','));
        assert!(!is_keyed("id,v\n1,a\n1,b\n", b','));
        assert!(!is_keyed("", b','));
    }

    #[test]
    fn what_is_not_a_keyed_table_is_left_to_the_line_merge() {
        let base = "id,v\n1,a\n";
        // Header changed, a repeated key, an empty key, blank lines, not CSV at all.
        assert_eq!(merged(base, "id,w\n1,a\n", "id,v\n1,b\n"), None);
        assert_eq!(merged(base, "id,v\n1,a\n1,b\n", "id,v\n1,a\n2,c\n"), None);
        assert_eq!(merged(base, "id,v\n,a\n", "id,v\n1,a\n2,c\n"), None);
        assert_eq!(merged(base, "id,v\n1,a\n\n2,b\n", "id,v\n1,a\n3,c\n"), None);
        assert_eq!(merged(base, "id,v\n\"unclosed\n", "id,v\n1,a\n3,c\n"), None);
        assert_eq!(merged("", "", "x\n"), None);
    }
}
