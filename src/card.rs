//! Dataset cards: the human-readable report of one commit of a dataset.
//!
//! This module owns the card's data model ([`CardData`] and its parts) and its
//! three renderings: Markdown ([`render_markdown`]), one self-contained HTML
//! file with inline CSS and inline SVG charts ([`render_html`]), and pretty JSON
//! ([`render_json`]); plus the two SVG chart builders ([`bar_chart_svg`],
//! [`grouped_bar_chart_svg`]).
//!
//! It does not collect the data: callers fill [`CardData`] from the store.
//!
//! Guarantees:
//! - Every section ([`SECTIONS`]) is always present, in the same order in both
//!   formats; a section without data says so in one line.
//! - Every caller string is escaped: HTML/XML escaping in HTML and SVG (text
//!   and attributes), Markdown escaping in Markdown. Control characters,
//!   XML-invalid characters and bidirectional override characters are
//!   replaced by U+FFFD.
//! - The HTML has no scripts, no external URLs, no event handlers, and a
//!   Content-Security-Policy that forbids everything but inline style.
//! - Output is deterministic: the same data gives the same bytes (no clock,
//!   no hash-map iteration order; maps are `BTreeMap`, lists keep their order).
//! - No input panics: arithmetic saturates, divisions are guarded, strings are
//!   cut on character boundaries, non-finite numbers are printed as such.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Section headings, in the order both renderings emit them.
pub const SECTIONS: [&str; 7] = [
    "Summary",
    "Composition",
    "Labels",
    "Annotations",
    "De-identification",
    "Provenance",
    "Warnings",
];

/// Counts of one part of the dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub bytes: u64,
}

/// One part of a split ("train", "validation", "test"), or "all" when there is no split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartCard {
    /// "train", "validation", "test", or "all" when there is no split.
    pub name: String,
    pub counts: Counts,
    /// task -> label -> instances
    pub labels: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One reader (annotator or model) of one task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderCard {
    pub task: String,
    pub reader: String,
    pub kind: String,
    pub source: String,
    pub items: u64,
    pub consensus_method: Option<String>,
}

/// One step of the provenance chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCard {
    /// Short commit id.
    pub commit: String,
    /// RFC 3339 UTC.
    pub time: String,
    pub kind: String,
    pub user: String,
    pub message: String,
    /// Parameters worth showing.
    pub details: Vec<(String, String)>,
}

/// Everything a dataset card shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CardData {
    pub title: String,
    /// Full commit id.
    pub commit: String,
    pub commit_time: String,
    /// e.g. "cohort 0.1.0".
    pub tool: String,
    /// Split name, with its parts in `parts`; `None`: one part "all".
    pub split: Option<String>,
    pub parts: Vec<PartCard>,
    /// Instances per modality.
    pub modality: BTreeMap<String, u64>,
    pub manufacturer: BTreeMap<String, u64>,
    /// Patients per PatientSex (M, F, O, unknown).
    pub sex: BTreeMap<String, u64>,
    /// Histogram bins in order, e.g. ("40-49", 3), ("unknown", 1).
    pub age_years: Vec<(String, u64)>,
    pub readers: Vec<ReaderCard>,
    /// (task, statistic, value)
    pub agreement: Vec<(String, String, f64)>,
    /// (profile, revision, options, key fingerprint)
    pub deid: Option<(String, String, Vec<String>, String)>,
    /// Oldest first.
    pub provenance: Vec<StepCard>,
    /// e.g. "split v1 leaks: ...".
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------
// Escaping and formatting helpers
// ---------------------------------------------------------------------------

/// Characters that must not reach any output: controls (other than tab and
/// newline), XML-invalid and non-characters, and bidirectional overrides /
/// isolates (which can make displayed text lie about its content).
fn is_unsafe_char(c: char) -> bool {
    let u = c as u32;
    (u < 0x20 && c != '\t' && c != '\n')
        || (0x7f..=0x9f).contains(&u)
        || (0xfdd0..=0xfdef).contains(&u)
        || (u & 0xfffe) == 0xfffe
        || (0x202a..=0x202e).contains(&u)
        || (0x2066..=0x2069).contains(&u)
}

/// Escapes text for HTML and XML, in element content and in quoted attributes.
/// Only the five XML entities are produced, so the result is valid in SVG too.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    let s = s.replace("\r\n", "\n");
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\r' => o.push('\n'),
            c if is_unsafe_char(c) => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// Escapes text for Markdown. In table cells (`cell == true`) a line break
/// becomes `<br>`; elsewhere it becomes a space, so a value can never start a
/// new block. Markdown punctuation is backslash-escaped; `<`, `>` and `&` become
/// entities so no HTML or entity survives.
fn md_esc(s: &str, cell: bool) -> String {
    let mut o = String::with_capacity(s.len());
    let s = s.replace("\r\n", "\n");
    for c in s.chars() {
        match c {
            '\n' | '\r' => o.push_str(if cell { "<br>" } else { " " }),
            '\t' => o.push(' '),
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '~' | '#' => {
                o.push('\\');
                o.push(c);
            }
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            c if is_unsafe_char(c) => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

fn md_cell(s: &str) -> String {
    md_esc(s, true)
}

fn md_text(s: &str) -> String {
    md_esc(s, false)
}

/// `s`, or `placeholder` when `s` is blank.
fn or_blank<'a>(s: &'a str, placeholder: &'a str) -> &'a str {
    if s.trim().is_empty() {
        placeholder
    } else {
        s
    }
}

/// At most `max` characters of `s`, with "…" when cut. Never splits a character.
fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut o: String = s.chars().take(max.saturating_sub(1)).collect();
    o.push('…');
    o
}

fn sum<I: IntoIterator<Item = u64>>(it: I) -> u64 {
    it.into_iter().fold(0u64, |a, b| a.saturating_add(b))
}

/// Exact sum, for shares (cannot overflow for fewer than 2^64 terms).
fn sum_wide<I: IntoIterator<Item = u64>>(it: I) -> u128 {
    it.into_iter()
        .fold(0u128, |a, b| a.saturating_add(u128::from(b)))
}

/// "12.3%" of `total`, or "–" when the total is zero.
fn pct(v: u64, total: u128) -> String {
    if total == 0 {
        return "–".to_string();
    }
    format!("{:.1}%", v as f64 * 100.0 / total as f64)
}

/// Binary size, e.g. "512 B", "1.5 GiB".
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut f = b as f64;
    let mut i = 0usize;
    while f >= 1024.0 && i + 1 < UNITS.len() {
        f /= 1024.0;
        i += 1;
    }
    format!("{f:.1} {}", UNITS.get(i).copied().unwrap_or("B"))
}

/// A statistic: three decimals, or "NaN" / "+inf" / "-inf".
fn fmt_stat(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+inf" } else { "-inf" }.to_string()
    } else {
        let r = format!("{v:.3}");
        if r.trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
        {
            // no "-0.000"
            r.trim_start_matches('-').to_string()
        } else {
            r
        }
    }
}

/// `v * width / max`, at least 1 for a non-zero value, 0 when `max` is 0.
fn scaled(v: u64, max: u64, width: u64) -> u64 {
    if max == 0 || v == 0 {
        return 0;
    }
    let n = (u128::from(v) * u128::from(width)) / u128::from(max);
    u64::try_from(n).unwrap_or(width).clamp(1, width)
}

/// Text bar for Markdown, at most 20 blocks.
fn text_bar(v: u64, max: u64) -> String {
    "█".repeat(usize::try_from(scaled(v, max, 20)).unwrap_or(20))
}

/// Split line shared by both renderings (unescaped).
fn split_line(card: &CardData) -> String {
    match &card.split {
        Some(name) => format!(
            "Split: {} ({} part{}).",
            or_blank(name, "(unnamed)"),
            card.parts.len(),
            if card.parts.len() == 1 { "" } else { "s" }
        ),
        None => "No split: all data is shown as one part.".to_string(),
    }
}

const NOTE_TOTAL: &str =
    "Totals add the parts: a patient or study found in more than one part is counted more than once.";
const NO_PARTS: &str = "No counts recorded.";
const NO_LABELS: &str = "No labels recorded.";
const NO_READERS: &str = "No annotations recorded.";
const NO_AGREEMENT: &str = "No agreement statistics recorded.";
const NOT_DEID: &str = "Not de-identified: there is no de-identification record for this commit; the data may contain protected health information.";
const NO_PROVENANCE: &str = "No provenance recorded.";
const NO_WARNINGS: &str = "No warnings.";

/// One composition block: heading, first column's name, bins, "no data" line.
type Block = (&'static str, &'static str, Vec<(String, u64)>, &'static str);

/// The four composition blocks.
fn composition(card: &CardData) -> [Block; 4] {
    let m =
        |map: &BTreeMap<String, u64>| map.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>();
    [
        (
            "Modality (instances)",
            "Modality",
            m(&card.modality),
            "No modality data recorded.",
        ),
        (
            "Manufacturer",
            "Manufacturer",
            m(&card.manufacturer),
            "No manufacturer data recorded.",
        ),
        (
            "Sex (patients)",
            "Sex",
            m(&card.sex),
            "No sex data recorded.",
        ),
        (
            "Age (years)",
            "Age",
            card.age_years.clone(),
            "No age data recorded.",
        ),
    ]
}

/// Union of tasks over all parts, sorted.
fn tasks(card: &CardData) -> Vec<&str> {
    let mut t: Vec<&str> = card
        .parts
        .iter()
        .flat_map(|p| p.labels.keys().map(String::as_str))
        .collect();
    t.sort_unstable();
    t.dedup();
    t
}

/// Union of labels of `task` over all parts, sorted.
fn labels_of<'a>(card: &'a CardData, task: &str) -> Vec<&'a str> {
    let mut l: Vec<&str> = card
        .parts
        .iter()
        .filter_map(|p| p.labels.get(task))
        .flat_map(|m| m.keys().map(String::as_str))
        .collect();
    l.sort_unstable();
    l.dedup();
    l
}

fn label_count(part: &PartCard, task: &str, label: &str) -> u64 {
    part.labels
        .get(task)
        .and_then(|m| m.get(label))
        .copied()
        .unwrap_or(0)
}

fn details_line(details: &[(String, String)]) -> String {
    details
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn counts_cells(c: &Counts) -> [String; 6] {
    [
        c.patients.to_string(),
        c.studies.to_string(),
        c.series.to_string(),
        c.instances.to_string(),
        c.bytes.to_string(),
        human_bytes(c.bytes),
    ]
}

fn total_counts(parts: &[PartCard]) -> Counts {
    Counts {
        patients: sum(parts.iter().map(|p| p.counts.patients)),
        studies: sum(parts.iter().map(|p| p.counts.studies)),
        series: sum(parts.iter().map(|p| p.counts.series)),
        instances: sum(parts.iter().map(|p| p.counts.instances)),
        bytes: sum(parts.iter().map(|p| p.counts.bytes)),
    }
}

const COUNT_HEADERS: [&str; 7] = [
    "Part",
    "Patients",
    "Studies",
    "Series",
    "Instances",
    "Bytes",
    "Size",
];

// ---------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------

fn md_row(o: &mut String, cells: &[String]) {
    o.push('|');
    for c in cells {
        o.push(' ');
        o.push_str(c);
        o.push_str(" |");
    }
    o.push('\n');
}

/// Header row (escaped here) plus alignment row; `numeric[i]` right-aligns column i.
fn md_header(o: &mut String, headers: &[String], numeric: &[bool]) {
    let h: Vec<String> = headers.iter().map(|s| md_cell(s)).collect();
    md_row(o, &h);
    let a: Vec<String> = (0..headers.len())
        .map(|i| {
            if numeric.get(i).copied().unwrap_or(false) {
                "---:"
            } else {
                "---"
            }
            .to_string()
        })
        .collect();
    md_row(o, &a);
}

/// Renders the card as GitHub-flavoured Markdown.
pub fn render_markdown(card: &CardData) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Dataset card: {}\n",
        md_text(or_blank(&card.title, "(untitled)"))
    );
    let _ = writeln!(o, "- Commit: {}", md_text(or_blank(&card.commit, "(none)")));
    let _ = writeln!(
        o,
        "- Time: {}",
        md_text(or_blank(&card.commit_time, "(none)"))
    );
    let _ = writeln!(o, "- Tool: {}", md_text(or_blank(&card.tool, "(none)")));
    let _ = writeln!(
        o,
        "- Split: {}",
        match &card.split {
            Some(s) => md_text(or_blank(s, "(unnamed)")),
            None => "none".to_string(),
        }
    );
    let _ = writeln!(o, "- Warnings: {}", card.warnings.len());

    // Summary
    let _ = writeln!(o, "\n## {}\n", SECTIONS[0]);
    let _ = writeln!(o, "{}\n", md_text(&split_line(card)));
    if card.parts.is_empty() {
        let _ = writeln!(o, "{NO_PARTS}");
    } else {
        let headers: Vec<String> = COUNT_HEADERS.iter().map(|s| s.to_string()).collect();
        md_header(
            &mut o,
            &headers,
            &[false, true, true, true, true, true, true],
        );
        for p in &card.parts {
            let mut cells = vec![md_cell(or_blank(&p.name, "(unnamed)"))];
            cells.extend(counts_cells(&p.counts));
            md_row(&mut o, &cells);
        }
        if card.parts.len() > 1 {
            let mut cells = vec!["**Total**".to_string()];
            cells.extend(
                counts_cells(&total_counts(&card.parts))
                    .into_iter()
                    .map(|c| format!("**{c}**")),
            );
            md_row(&mut o, &cells);
            let _ = writeln!(o, "\n{NOTE_TOTAL}");
        }
    }

    // Composition
    let _ = writeln!(o, "\n## {}", SECTIONS[1]);
    for (heading, column, bins, none) in composition(card) {
        let _ = writeln!(o, "\n### {heading}\n");
        if bins.is_empty() {
            let _ = writeln!(o, "{none}");
            continue;
        }
        let total = sum_wide(bins.iter().map(|b| b.1));
        let max = bins.iter().map(|b| b.1).max().unwrap_or(0);
        let headers = [column, "Count", "Share", "Bar"].map(String::from);
        md_header(&mut o, &headers, &[false, true, true, false]);
        for (k, v) in &bins {
            let bar = format!("{} {v}", text_bar(*v, max));
            md_row(
                &mut o,
                &[
                    md_cell(or_blank(k, "(empty)")),
                    v.to_string(),
                    pct(*v, total),
                    bar.trim_start().to_string(),
                ],
            );
        }
    }

    // Labels
    let _ = writeln!(o, "\n## {}\n", SECTIONS[2]);
    let tasks = tasks(card);
    if tasks.is_empty() {
        let _ = writeln!(o, "{NO_LABELS}");
    } else {
        let _ = writeln!(o, "Instances per label and part.");
        let several = card.parts.len() > 1;
        for task in tasks {
            let _ = writeln!(o, "\n### Task: {}\n", md_text(or_blank(task, "(unnamed)")));
            let mut headers = vec!["Label".to_string()];
            headers.extend(
                card.parts
                    .iter()
                    .map(|p| or_blank(&p.name, "(unnamed)").to_string()),
            );
            let mut numeric = vec![false];
            numeric.extend(card.parts.iter().map(|_| true));
            if several {
                headers.push("Total".to_string());
                numeric.push(true);
            }
            md_header(&mut o, &headers, &numeric);
            for label in labels_of(card, task) {
                let mut cells = vec![md_cell(or_blank(label, "(empty)"))];
                let counts: Vec<u64> = card
                    .parts
                    .iter()
                    .map(|p| label_count(p, task, label))
                    .collect();
                cells.extend(counts.iter().map(u64::to_string));
                if several {
                    cells.push(sum(counts).to_string());
                }
                md_row(&mut o, &cells);
            }
        }
    }

    // Annotations
    let _ = writeln!(o, "\n## {}\n", SECTIONS[3]);
    if card.readers.is_empty() {
        let _ = writeln!(o, "{NO_READERS}");
    } else {
        let headers = ["Task", "Reader", "Kind", "Source", "Items", "Consensus"].map(String::from);
        md_header(&mut o, &headers, &[false, false, false, false, true, false]);
        for r in &card.readers {
            md_row(
                &mut o,
                &[
                    md_cell(&r.task),
                    md_cell(&r.reader),
                    md_cell(&r.kind),
                    md_cell(&r.source),
                    r.items.to_string(),
                    md_cell(r.consensus_method.as_deref().unwrap_or("none")),
                ],
            );
        }
    }
    let _ = writeln!(o, "\n### Agreement\n");
    if card.agreement.is_empty() {
        let _ = writeln!(o, "{NO_AGREEMENT}");
    } else {
        for (task, stat, v) in &card.agreement {
            let _ = writeln!(
                o,
                "- {} — {}: {}",
                md_text(or_blank(task, "(unnamed)")),
                md_text(or_blank(stat, "(unnamed)")),
                fmt_stat(*v)
            );
        }
    }

    // De-identification
    let _ = writeln!(o, "\n## {}\n", SECTIONS[4]);
    match &card.deid {
        None => {
            let _ = writeln!(o, "> **Warning: {NOT_DEID}**");
        }
        Some((profile, revision, options, fingerprint)) => {
            let _ = writeln!(o, "- Profile: {}", md_text(or_blank(profile, "(none)")));
            let _ = writeln!(o, "- Revision: {}", md_text(or_blank(revision, "(none)")));
            let opts = if options.is_empty() {
                "(none)".to_string()
            } else {
                options
                    .iter()
                    .map(|s| md_text(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(o, "- Options: {opts}");
            let _ = writeln!(
                o,
                "- Key fingerprint: {}",
                md_text(or_blank(fingerprint, "(none)"))
            );
        }
    }

    // Provenance
    let _ = writeln!(o, "\n## {}\n", SECTIONS[5]);
    if card.provenance.is_empty() {
        let _ = writeln!(o, "{NO_PROVENANCE}");
    } else {
        let _ = writeln!(o, "Steps, oldest first.\n");
        let headers =
            ["#", "Commit", "Time", "Kind", "User", "Message", "Details"].map(String::from);
        md_header(
            &mut o,
            &headers,
            &[true, false, false, false, false, false, false],
        );
        for (i, s) in card.provenance.iter().enumerate() {
            md_row(
                &mut o,
                &[
                    (i.saturating_add(1)).to_string(),
                    md_cell(&s.commit),
                    md_cell(&s.time),
                    md_cell(&s.kind),
                    md_cell(&s.user),
                    md_cell(&s.message),
                    md_cell(&details_line(&s.details)),
                ],
            );
        }
    }

    // Warnings
    let _ = writeln!(o, "\n## {}\n", SECTIONS[6]);
    if card.warnings.is_empty() {
        let _ = writeln!(o, "{NO_WARNINGS}");
    } else {
        for w in &card.warnings {
            let _ = writeln!(o, "- {}", md_text(or_blank(w, "(empty warning)")));
        }
    }
    o
}

// ---------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------

const CSS: &str =
    "body{font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,Helvetica,Arial,sans-serif;\
max-width:62rem;margin:2rem auto;padding:0 1rem;color:#1f2328;background:#ffffff;line-height:1.45}\
h1{font-size:1.6rem;margin:0 0 .5rem}\
h2{font-size:1.25rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}\
h3{font-size:1.05rem;margin:1.2rem 0 .4rem}\
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:0}\
dl.meta dt{font-weight:600}dl.meta dd{margin:0;word-break:break-all}\
table{border-collapse:collapse;margin:.5rem 0}\
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.total td{font-weight:600}\
td.msg{white-space:pre-wrap}\
.none{color:#57606a;font-style:italic}\
.note{color:#57606a;font-size:.9rem}\
.warn{background:#fff4e5;border-left:4px solid #d97706;padding:.5rem .75rem}\
ul.warn{padding-left:2rem}\
figure{margin:0}\
svg{max-width:100%;height:auto}";

fn html_table_open(o: &mut String, headers: &[String], numeric: &[bool]) {
    o.push_str("<table>\n<thead><tr>");
    for (i, h) in headers.iter().enumerate() {
        let class = if numeric.get(i).copied().unwrap_or(false) {
            " class=\"n\""
        } else {
            ""
        };
        let _ = write!(o, "<th scope=\"col\"{class}>{}</th>", esc(h));
    }
    o.push_str("</tr></thead>\n<tbody>\n");
}

/// One row of already-escaped cells.
fn html_row(o: &mut String, class: &str, cells: &[String], numeric: &[bool]) {
    if class.is_empty() {
        o.push_str("<tr>");
    } else {
        let _ = write!(o, "<tr class=\"{class}\">");
    }
    for (i, c) in cells.iter().enumerate() {
        let class = if numeric.get(i).copied().unwrap_or(false) {
            " class=\"n\""
        } else {
            ""
        };
        let _ = write!(o, "<td{class}>{c}</td>");
    }
    o.push_str("</tr>\n");
}

fn html_none(o: &mut String, line: &str) {
    let _ = writeln!(o, "<p class=\"none\">{}</p>", esc(line));
}

/// Renders the card as one self-contained HTML file: inline CSS, inline SVG
/// charts, no scripts, no external resources.
pub fn render_html(card: &CardData) -> String {
    let mut o = String::new();
    let title = or_blank(&card.title, "(untitled)");
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        o,
        "<meta name=\"generator\" content=\"{}\">",
        esc(&card.tool)
    );
    let _ = writeln!(o, "<title>Dataset card: {}</title>", esc(title));
    let _ = writeln!(o, "<style>{CSS}</style>\n</head>\n<body>");

    // Header
    let _ = writeln!(
        o,
        "<header>\n<h1>Dataset card: {}</h1>\n<dl class=\"meta\">",
        esc(title)
    );
    let split = match &card.split {
        Some(s) => or_blank(s, "(unnamed)").to_string(),
        None => "none".to_string(),
    };
    for (k, v) in [
        ("Commit", or_blank(&card.commit, "(none)").to_string()),
        ("Time", or_blank(&card.commit_time, "(none)").to_string()),
        ("Tool", or_blank(&card.tool, "(none)").to_string()),
        ("Split", split),
        ("Warnings", card.warnings.len().to_string()),
    ] {
        let _ = writeln!(o, "<dt>{k}</dt><dd>{}</dd>", esc(&v));
    }
    o.push_str("</dl>\n</header>\n<main>\n");

    // Summary
    let _ = writeln!(o, "<section id=\"summary\">\n<h2>{}</h2>", SECTIONS[0]);
    let _ = writeln!(o, "<p>{}</p>", esc(&split_line(card)));
    if card.parts.is_empty() {
        html_none(&mut o, NO_PARTS);
    } else {
        let headers: Vec<String> = COUNT_HEADERS.iter().map(|s| s.to_string()).collect();
        let numeric = [false, true, true, true, true, true, true];
        html_table_open(&mut o, &headers, &numeric);
        for p in &card.parts {
            let mut cells = vec![esc(or_blank(&p.name, "(unnamed)"))];
            cells.extend(counts_cells(&p.counts));
            html_row(&mut o, "", &cells, &numeric);
        }
        if card.parts.len() > 1 {
            let mut cells = vec!["Total".to_string()];
            cells.extend(counts_cells(&total_counts(&card.parts)));
            html_row(&mut o, "total", &cells, &numeric);
        }
        o.push_str("</tbody>\n</table>\n");
        if card.parts.len() > 1 {
            let _ = writeln!(o, "<p class=\"note\">{}</p>", esc(NOTE_TOTAL));
        }
    }
    o.push_str("</section>\n");

    // Composition
    let _ = writeln!(o, "<section id=\"composition\">\n<h2>{}</h2>", SECTIONS[1]);
    for (heading, _column, bins, none) in composition(card) {
        let _ = writeln!(o, "<h3>{}</h3>", esc(heading));
        if bins.is_empty() {
            html_none(&mut o, none);
        } else {
            let _ = writeln!(o, "<figure>{}</figure>", bar_chart(heading, &bins, false));
        }
    }
    o.push_str("</section>\n");

    // Labels
    let _ = writeln!(o, "<section id=\"labels\">\n<h2>{}</h2>", SECTIONS[2]);
    let tasks = tasks(card);
    if tasks.is_empty() {
        html_none(&mut o, NO_LABELS);
    } else {
        o.push_str("<p class=\"note\">Instances per label and part.</p>\n");
        for task in tasks {
            let task_name = or_blank(task, "(unnamed)");
            let _ = writeln!(o, "<h3>Task: {}</h3>", esc(task_name));
            let groups: Vec<(String, Vec<(String, u64)>)> = labels_of(card, task)
                .into_iter()
                .map(|label| {
                    let bars = card
                        .parts
                        .iter()
                        .map(|p| {
                            (
                                or_blank(&p.name, "(unnamed)").to_string(),
                                label_count(p, task, label),
                            )
                        })
                        .collect();
                    (or_blank(label, "(empty)").to_string(), bars)
                })
                .collect();
            let chart_title = format!("Labels of {task_name} per part");
            let _ = writeln!(
                o,
                "<figure>{}</figure>",
                grouped_chart(&chart_title, &groups, false)
            );
        }
    }
    o.push_str("</section>\n");

    // Annotations
    let _ = writeln!(o, "<section id=\"annotations\">\n<h2>{}</h2>", SECTIONS[3]);
    if card.readers.is_empty() {
        html_none(&mut o, NO_READERS);
    } else {
        let headers = ["Task", "Reader", "Kind", "Source", "Items", "Consensus"].map(String::from);
        let numeric = [false, false, false, false, true, false];
        html_table_open(&mut o, &headers, &numeric);
        for r in &card.readers {
            html_row(
                &mut o,
                "",
                &[
                    esc(&r.task),
                    esc(&r.reader),
                    esc(&r.kind),
                    esc(&r.source),
                    r.items.to_string(),
                    esc(r.consensus_method.as_deref().unwrap_or("none")),
                ],
                &numeric,
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
    o.push_str("<h3>Agreement</h3>\n");
    if card.agreement.is_empty() {
        html_none(&mut o, NO_AGREEMENT);
    } else {
        o.push_str("<ul>\n");
        for (task, stat, v) in &card.agreement {
            let _ = writeln!(
                o,
                "<li>{} — {}: {}</li>",
                esc(or_blank(task, "(unnamed)")),
                esc(or_blank(stat, "(unnamed)")),
                fmt_stat(*v)
            );
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n");

    // De-identification
    let _ = writeln!(
        o,
        "<section id=\"de-identification\">\n<h2>{}</h2>",
        SECTIONS[4]
    );
    match &card.deid {
        None => {
            let _ = writeln!(
                o,
                "<p class=\"warn\"><strong>Warning: {}</strong></p>",
                esc(NOT_DEID)
            );
        }
        Some((profile, revision, options, fingerprint)) => {
            let opts = if options.is_empty() {
                "(none)".to_string()
            } else {
                options.join(", ")
            };
            o.push_str("<dl class=\"meta\">\n");
            for (k, v) in [
                ("Profile", or_blank(profile, "(none)")),
                ("Revision", or_blank(revision, "(none)")),
                ("Options", opts.as_str()),
                ("Key fingerprint", or_blank(fingerprint, "(none)")),
            ] {
                let _ = writeln!(o, "<dt>{k}</dt><dd>{}</dd>", esc(v));
            }
            o.push_str("</dl>\n");
        }
    }
    o.push_str("</section>\n");

    // Provenance
    let _ = writeln!(o, "<section id=\"provenance\">\n<h2>{}</h2>", SECTIONS[5]);
    if card.provenance.is_empty() {
        html_none(&mut o, NO_PROVENANCE);
    } else {
        o.push_str("<p class=\"note\">Steps, oldest first.</p>\n");
        let headers =
            ["#", "Commit", "Time", "Kind", "User", "Message", "Details"].map(String::from);
        let numeric = [true, false, false, false, false, false, false];
        html_table_open(&mut o, &headers, &numeric);
        for (i, s) in card.provenance.iter().enumerate() {
            let cells = [
                i.saturating_add(1).to_string(),
                esc(&s.commit),
                esc(&s.time),
                esc(&s.kind),
                esc(&s.user),
                esc(&s.message),
                esc(&details_line(&s.details)),
            ];
            // message and details keep their line breaks
            let mut row = String::from("<tr>");
            for (j, c) in cells.iter().enumerate() {
                let class = match j {
                    0 => " class=\"n\"",
                    5 | 6 => " class=\"msg\"",
                    _ => "",
                };
                let _ = write!(row, "<td{class}>{c}</td>");
            }
            row.push_str("</tr>\n");
            o.push_str(&row);
        }
        o.push_str("</tbody>\n</table>\n");
    }
    o.push_str("</section>\n");

    // Warnings
    let _ = writeln!(o, "<section id=\"warnings\">\n<h2>{}</h2>", SECTIONS[6]);
    if card.warnings.is_empty() {
        html_none(&mut o, NO_WARNINGS);
    } else {
        o.push_str("<ul class=\"warn\">\n");
        for w in &card.warnings {
            let _ = writeln!(o, "<li>{}</li>", esc(or_blank(w, "(empty warning)")));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n</main>\n</body>\n</html>\n");
    o
}

/// Renders the card data as pretty JSON (deterministic: maps are sorted, lists
/// keep their order; non-finite statistics become `null`).
pub fn render_json(card: &CardData) -> String {
    serde_json::to_string_pretty(card).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// SVG
// ---------------------------------------------------------------------------

const SVG_W: u64 = 480;
/// Right edge of the bar labels.
const LABEL_END: u64 = 124;
/// Left edge of the bars.
const BAR_X: u64 = 130;
/// Longest bar, for the largest value; leaves room for a 20-digit value.
const BAR_MAX: u64 = 210;
const ROW_H: u64 = 18;
const BAR_H: u64 = 12;
const TOP: u64 = 30;
const BOTTOM: u64 = 8;
const LEGEND_ROW: u64 = 16;
const LEGEND_COLS: u64 = 3;
const GROUP_HEAD: u64 = 16;
const GROUP_GAP: u64 = 6;
const LABEL_CHARS: usize = 20;
const TEXT: &str = "#1f2328";
const MUTED: &str = "#57606a";
const BAR_COLOUR: &str = "#4c78a8";
const PALETTE: [&str; 8] = [
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d",
];

fn svg_open(o: &mut String, title: &str, height: u64, standalone: bool) {
    let t = esc(title);
    let ns = if standalone {
        " xmlns=\"http://www.w3.org/2000/svg\""
    } else {
        ""
    };
    let _ = write!(
        o,
        "<svg{ns} width=\"{SVG_W}\" height=\"{height}\" viewBox=\"0 0 {SVG_W} {height}\" role=\"img\" \
aria-label=\"{t}\" font-family=\"sans-serif\" font-size=\"11\">\n<title>{t}</title>\n\
<rect x=\"0\" y=\"0\" width=\"{SVG_W}\" height=\"{height}\" fill=\"#ffffff\"/>\n\
<text x=\"8\" y=\"19\" font-size=\"13\" font-weight=\"bold\" fill=\"{TEXT}\">{}</text>\n",
        esc(&truncate_chars(title, 64))
    );
}

/// One horizontal bar row at `y`: `label` right-aligned before the bar, the
/// value after it, `tooltip` as the row's accessible title.
fn svg_bar_row(
    o: &mut String,
    y: u64,
    tooltip: &str,
    label: &str,
    value: u64,
    max: u64,
    colour: &str,
) {
    let len = scaled(value, max, BAR_MAX);
    let base = y.saturating_add(BAR_H.saturating_sub(2));
    let _ = writeln!(
        o,
        "<g><title>{}: {value}</title>\
<text x=\"{LABEL_END}\" y=\"{base}\" text-anchor=\"end\" fill=\"{TEXT}\">{}</text>\
<rect x=\"{BAR_X}\" y=\"{y}\" width=\"{len}\" height=\"{BAR_H}\" fill=\"{colour}\"/>\
<text x=\"{}\" y=\"{base}\" fill=\"{MUTED}\">{value}</text></g>",
        esc(tooltip),
        esc(&truncate_chars(label, LABEL_CHARS)),
        BAR_X.saturating_add(len).saturating_add(4),
    );
}

fn svg_no_data(o: &mut String, y: u64) {
    let _ = writeln!(
        o,
        "<text x=\"8\" y=\"{}\" font-style=\"italic\" fill=\"{MUTED}\">No data</text>",
        y.saturating_add(BAR_H.saturating_sub(2))
    );
}

fn rows(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn bar_chart(title: &str, bars: &[(String, u64)], standalone: bool) -> String {
    let n = rows(bars.len()).max(1);
    let height = TOP
        .saturating_add(n.saturating_mul(ROW_H))
        .saturating_add(BOTTOM);
    let mut o = String::new();
    svg_open(&mut o, title, height, standalone);
    if bars.is_empty() {
        svg_no_data(&mut o, TOP);
    }
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0);
    let mut y = TOP;
    for (label, v) in bars {
        let label = or_blank(label, "(empty)");
        svg_bar_row(&mut o, y, label, label, *v, max, BAR_COLOUR);
        y = y.saturating_add(ROW_H);
    }
    o.push_str("</svg>");
    o
}

fn grouped_chart(title: &str, groups: &[(String, Vec<(String, u64)>)], standalone: bool) -> String {
    // Series in order of first appearance; colour by that index.
    let mut series: Vec<&str> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, bars) in groups {
        for (name, _) in bars {
            if !index.contains_key(name.as_str()) {
                index.insert(name.as_str(), series.len());
                series.push(name.as_str());
            }
        }
    }
    let colour = |name: &str| {
        let i = index.get(name).copied().unwrap_or(0);
        PALETTE
            .get(i % PALETTE.len())
            .copied()
            .unwrap_or(BAR_COLOUR)
    };
    let legend_rows = rows(series.len()).div_ceil(LEGEND_COLS);
    let mut height = TOP.saturating_add(legend_rows.saturating_mul(LEGEND_ROW));
    if groups.is_empty() {
        height = height.saturating_add(ROW_H);
    }
    for (_, bars) in groups {
        height = height
            .saturating_add(GROUP_HEAD)
            .saturating_add(rows(bars.len()).max(1).saturating_mul(ROW_H))
            .saturating_add(GROUP_GAP);
    }
    height = height.saturating_add(BOTTOM);

    let mut o = String::new();
    svg_open(&mut o, title, height, standalone);
    let mut y = TOP;
    for (row, chunk) in series.chunks(LEGEND_COLS as usize).enumerate() {
        let ly = y.saturating_add(rows(row).saturating_mul(LEGEND_ROW));
        for (col, name) in chunk.iter().enumerate() {
            let x = 8u64.saturating_add(rows(col).saturating_mul(150));
            let _ = writeln!(
                o,
                "<g><rect x=\"{x}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
<text x=\"{}\" y=\"{}\" fill=\"{TEXT}\">{}</text></g>",
                colour(name),
                x.saturating_add(14),
                ly.saturating_add(9),
                esc(&truncate_chars(or_blank(name, "(empty)"), 22))
            );
        }
    }
    y = y.saturating_add(legend_rows.saturating_mul(LEGEND_ROW));
    if groups.is_empty() {
        svg_no_data(&mut o, y);
    }
    let max = groups
        .iter()
        .flat_map(|g| g.1.iter().map(|b| b.1))
        .max()
        .unwrap_or(0);
    for (group, bars) in groups {
        let _ = writeln!(
            o,
            "<text x=\"8\" y=\"{}\" font-weight=\"bold\" fill=\"{TEXT}\">{}</text>",
            y.saturating_add(12),
            esc(&truncate_chars(or_blank(group, "(empty)"), 64))
        );
        y = y.saturating_add(GROUP_HEAD);
        if bars.is_empty() {
            svg_no_data(&mut o, y);
            y = y.saturating_add(ROW_H);
        }
        for (name, v) in bars {
            let shown = or_blank(name, "(empty)");
            let tooltip = format!("{} / {shown}", or_blank(group, "(empty)"));
            svg_bar_row(&mut o, y, &tooltip, shown, *v, max, colour(name));
            y = y.saturating_add(ROW_H);
        }
        y = y.saturating_add(GROUP_GAP);
    }
    o.push_str("</svg>");
    o
}

/// A standalone SVG (with namespace) of horizontal bars: one row per bar with
/// its label, a bar proportional to the largest value, and the value. Fixed
/// width 480; height grows with the number of bars.
pub fn bar_chart_svg(title: &str, bars: &[(String, u64)]) -> String {
    bar_chart(title, bars, true)
}

/// A standalone SVG (with namespace) of grouped horizontal bars, e.g. one group
/// per label with one bar per part. Series (the bar names) get fixed colours in
/// order of first appearance, shown in a legend; all bars share one scale.
pub fn grouped_bar_chart_svg(title: &str, groups: &[(String, Vec<(String, u64)>)]) -> String {
    grouped_chart(title, groups, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>|x";

    fn labels(pairs: &[(&str, &[(&str, u64)])]) -> BTreeMap<String, BTreeMap<String, u64>> {
        pairs
            .iter()
            .map(|(t, ls)| {
                (
                    t.to_string(),
                    ls.iter().map(|(l, n)| (l.to_string(), *n)).collect(),
                )
            })
            .collect()
    }

    fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn part(name: &str, n: u64, l: BTreeMap<String, BTreeMap<String, u64>>) -> PartCard {
        PartCard {
            name: name.into(),
            counts: Counts {
                patients: n,
                studies: n * 2,
                series: n * 3,
                instances: n * 100,
                bytes: n * 1_048_576,
            },
            labels: l,
        }
    }

    fn sample() -> CardData {
        CardData {
            title: "Lung CT pilot".into(),
            commit: "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            commit_time: "2024-05-01T12:00:00Z".into(),
            tool: "cohort 0.1.0".into(),
            split: Some("v1".into()),
            parts: vec![
                part(
                    "train",
                    70,
                    labels(&[(
                        "nodule",
                        &[("benign", 4101), ("malignant", 2903), (EVIL, 7)],
                    )]),
                ),
                part(
                    "validation",
                    15,
                    labels(&[("nodule", &[("benign", 811), ("malignant", 617)])]),
                ),
                part(
                    "test",
                    15,
                    labels(&[("nodule", &[("benign", 809), ("malignant", 599)])]),
                ),
            ],
            modality: map(&[("CT", 9000), ("SEG", 1000)]),
            manufacturer: map(&[("GE", 6000), ("SIEMENS", 4000), (EVIL, 1)]),
            sex: map(&[("F", 48), ("M", 51), ("unknown", 1)]),
            age_years: vec![
                ("60-69".into(), 40),
                ("40-49".into(), 12),
                ("unknown".into(), 3),
            ],
            readers: vec![
                ReaderCard {
                    task: "nodule".into(),
                    reader: "rad1".into(),
                    kind: "human".into(),
                    source: "import:csv".into(),
                    items: 777,
                    consensus_method: None,
                },
                ReaderCard {
                    task: "nodule".into(),
                    reader: EVIL.into(),
                    kind: "consensus".into(),
                    source: "majority".into(),
                    items: 778,
                    consensus_method: Some("majority_vote".into()),
                },
            ],
            agreement: vec![("nodule".into(), "fleiss_kappa".into(), 0.8123)],
            deid: Some((
                "basic".into(),
                "2023b".into(),
                vec!["retain_dates".into()],
                "sha256:abcd1234".into(),
            )),
            provenance: vec![
                StepCard {
                    commit: "aaaa1111".into(),
                    time: "2024-04-01T09:00:00Z".into(),
                    kind: "import".into(),
                    user: "alice".into(),
                    message: "initial import".into(),
                    details: vec![("files".into(), "12345".into())],
                },
                StepCard {
                    commit: "bbbb2222".into(),
                    time: "2024-04-02T09:00:00Z".into(),
                    kind: "split".into(),
                    user: "bob".into(),
                    message: "split by patient\nseed fixed".into(),
                    details: vec![
                        ("seed".into(), "42".into()),
                        ("ratios".into(), "70/15/15".into()),
                    ],
                },
            ],
            warnings: vec!["split v1 leaks: patient P7 in train and test".into()],
        }
    }

    /// Every string field set to `s`.
    fn hostile(s: &str) -> CardData {
        let l = labels(&[(s, &[(s, 5)])]);
        CardData {
            title: s.into(),
            commit: s.into(),
            commit_time: s.into(),
            tool: s.into(),
            split: Some(s.into()),
            parts: vec![part(s, 3, l.clone()), part(s, 4, l)],
            modality: map(&[(s, 1)]),
            manufacturer: map(&[(s, 2)]),
            sex: map(&[(s, 3)]),
            age_years: vec![(s.into(), 4)],
            readers: vec![ReaderCard {
                task: s.into(),
                reader: s.into(),
                kind: s.into(),
                source: s.into(),
                items: 1,
                consensus_method: Some(s.into()),
            }],
            agreement: vec![(s.into(), s.into(), f64::NAN)],
            deid: Some((s.into(), s.into(), vec![s.into(), s.into()], s.into())),
            provenance: vec![StepCard {
                commit: s.into(),
                time: s.into(),
                kind: s.into(),
                user: s.into(),
                message: s.into(),
                details: vec![(s.into(), s.into())],
            }],
            warnings: vec![s.into()],
        }
    }

    const VOID: [&str; 6] = ["meta", "br", "hr", "img", "link", "input"];

    /// Minimal well-formedness checker: balanced tags, quoted attributes without
    /// `<`, only well-formed entities, no raw `>` in text. `html` allows a
    /// doctype and unclosed void elements; otherwise exactly one root element.
    fn check_markup(s: &str, html: bool) -> Result<(), String> {
        fn entity_ok(rest: &str) -> bool {
            let Some(end) = rest.find(';') else {
                return false;
            };
            let name = &rest[1..end];
            if let Some(num) = name.strip_prefix('#') {
                !num.is_empty() && num.chars().all(|c| c.is_ascii_digit())
            } else {
                ["amp", "lt", "gt", "quot", "apos"].contains(&name)
            }
        }
        let b = s.as_bytes();
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0usize;
        let mut i = 0usize;
        while i < b.len() {
            match b[i] {
                b'<' => {
                    let rest = &s[i..];
                    if rest.starts_with("<!--") {
                        i += rest.find("-->").ok_or("unclosed comment")? + 3;
                        continue;
                    }
                    if rest.starts_with("<!") {
                        if !html || !stack.is_empty() {
                            return Err("doctype out of place".into());
                        }
                        i += rest.find('>').ok_or("unclosed doctype")? + 1;
                        continue;
                    }
                    if let Some(r) = rest.strip_prefix("</") {
                        let end = r.find('>').ok_or("unclosed end tag")?;
                        let name = &r[..end];
                        match stack.pop() {
                            Some(open) if open == name => {}
                            other => return Err(format!("</{name}> closes {other:?} at {i}")),
                        }
                        i += 2 + end + 1;
                        continue;
                    }
                    // start tag
                    let mut j = i + 1;
                    while j < b.len()
                        && (b[j].is_ascii_alphanumeric() || b[j] == b'-' || b[j] == b':')
                    {
                        j += 1;
                    }
                    let name = s[i + 1..j].to_string();
                    if name.is_empty() {
                        return Err(format!("raw '<' at {i}"));
                    }
                    let mut attrs: Vec<String> = Vec::new();
                    let self_closing;
                    loop {
                        while j < b.len() && b[j] == b' ' {
                            j += 1;
                        }
                        if j >= b.len() {
                            return Err("unterminated tag".into());
                        }
                        if s[j..].starts_with("/>") {
                            self_closing = true;
                            j += 2;
                            break;
                        }
                        if b[j] == b'>' {
                            self_closing = false;
                            j += 1;
                            break;
                        }
                        let eq = s[j..].find('=').ok_or("attribute without value")? + j;
                        let an = &s[j..eq];
                        if an.is_empty()
                            || !an
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
                        {
                            return Err(format!("bad attribute name {an:?}"));
                        }
                        if attrs.iter().any(|a| a == an) {
                            return Err(format!("duplicate attribute {an}"));
                        }
                        if an.starts_with("on") {
                            return Err(format!("event handler attribute {an}"));
                        }
                        attrs.push(an.to_string());
                        if b.get(eq + 1) != Some(&b'"') {
                            return Err("unquoted attribute".into());
                        }
                        let close = s[eq + 2..].find('"').ok_or("unclosed attribute")? + eq + 2;
                        let val = &s[eq + 2..close];
                        if val.contains('<') {
                            return Err("'<' in attribute".into());
                        }
                        for (k, _) in val.match_indices('&') {
                            if !entity_ok(&val[k..]) {
                                return Err("bad entity in attribute".into());
                            }
                        }
                        j = close + 1;
                    }
                    let void = html && VOID.contains(&name.as_str());
                    if stack.is_empty() {
                        roots += 1;
                    }
                    if !self_closing && !void {
                        stack.push(name.clone());
                    }
                    // raw text elements: skip to their end tag
                    if name == "style" {
                        let end = s[j..].find("</style>").ok_or("unclosed style")?;
                        j += end;
                    }
                    i = j;
                }
                b'&' => {
                    if !entity_ok(&s[i..]) {
                        return Err(format!("bad entity at {i}"));
                    }
                    i += 1;
                }
                b'>' => return Err(format!("raw '>' at {i}")),
                _ => {
                    if stack.is_empty() && !b[i].is_ascii_whitespace() {
                        return Err(format!("text outside root at {i}"));
                    }
                    i += 1;
                }
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    fn positions(doc: &str, heads: &[String]) -> Vec<usize> {
        heads
            .iter()
            .map(|h| {
                doc.find(h.as_str())
                    .unwrap_or_else(|| panic!("missing {h:?}"))
            })
            .collect()
    }

    fn svgs(html: &str) -> Vec<&str> {
        html.match_indices("<svg")
            .map(|(i, _)| {
                let end = html[i..].find("</svg>").expect("closed svg") + i + "</svg>".len();
                &html[i..end]
            })
            .collect()
    }

    #[test]
    fn markdown_sections_in_order() {
        let md = render_markdown(&sample());
        let mut heads = vec!["# Dataset card: Lung CT pilot".to_string()];
        heads.extend(SECTIONS.iter().map(|s| format!("\n## {s}\n")));
        let pos = positions(&md, &heads);
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
        let sub = [
            "### Modality",
            "### Manufacturer",
            "### Sex",
            "### Age",
            "### Task: nodule",
            "### Agreement",
        ];
        let pos = positions(&md, &sub.map(String::from));
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    }

    #[test]
    fn html_sections_in_order() {
        let html = render_html(&sample());
        let mut heads = vec!["<h1>Dataset card: Lung CT pilot</h1>".to_string()];
        heads.extend(SECTIONS.iter().map(|s| format!("<h2>{s}</h2>")));
        let pos = positions(&html, &heads);
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    }

    #[test]
    fn markdown_numbers_and_content() {
        let md = render_markdown(&sample());
        for needle in [
            "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "2024-05-01T12:00:00Z",
            "cohort 0.1.0",
            "Split: v1 (3 parts).",
            "| train | 70 | 140 | 210 | 7000 | 73400320 | 70.0 MiB |",
            "| validation | 15 | 30 | 45 | 1500 | 15728640 | 15.0 MiB |",
            "| **Total** | **100** | **200** | **300** | **10000** | **104857600** | **100.0 MiB** |",
            "| CT | 9000 | 90.0% | ████████████████████ 9000 |",
            "| SEG | 1000 | 10.0% | ██ 1000 |",
            "| 60-69 | 40 |",
            "| Label | train | validation | test | Total |",
            "| benign | 4101 | 811 | 809 | 5721 |",
            "| rad1 | human | import:csv | 777 | none |",
            "| majority\\_vote |",
            "- nodule — fleiss\\_kappa: 0.812",
            "- Profile: basic",
            "- Key fingerprint: sha256:abcd1234",
            "| 2 | bbbb2222 | 2024-04-02T09:00:00Z | split | bob | split by patient<br>seed fixed | seed=42; ratios=70/15/15 |",
            "- split v1 leaks: patient P7 in train and test",
            "- Warnings: 1",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
    }

    #[test]
    fn html_numbers_and_content() {
        let html = render_html(&sample());
        for needle in [
            "<td>train</td><td class=\"n\">70</td><td class=\"n\">140</td>",
            "<tr class=\"total\"><td>Total</td><td class=\"n\">100</td>",
            "104857600",
            ">9000</text>",
            ">4101</text>",
            "<dt>Split</dt><dd>v1</dd>",
            "<p>Split: v1 (3 parts).</p>",
        ] {
            assert!(html.contains(needle), "missing {needle:?}");
        }
        assert!(html.contains("fleiss_kappa: 0.812"));
        assert!(html.contains("<dt>Key fingerprint</dt><dd>sha256:abcd1234</dd>"));
        assert!(html.contains("split by patient\nseed fixed"));
        assert!(html.contains("<li>split v1 leaks: patient P7 in train and test</li>"));
        assert_eq!(
            svgs(&html).len(),
            5,
            "four composition charts and one label chart"
        );
    }

    #[test]
    fn evil_label_never_raw() {
        let card = sample();
        let md = render_markdown(&card);
        let html = render_html(&card);
        assert!(!md.contains("<script"), "{md}");
        assert!(!html.contains("<script"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;|x"));
        assert!(
            md.contains("| &lt;script&gt;alert(1)&lt;/script&gt;\\|x | 7 | 0 | 0 | 7 |"),
            "{md}"
        );
        assert_table_shapes(&md);
    }

    /// Every Markdown table row has as many unescaped pipes as its header row.
    fn assert_table_shapes(md: &str) {
        let pipes = |l: &str| l.matches('|').count() - l.matches("\\|").count();
        let mut header: Option<&str> = None;
        for line in md.lines() {
            if !line.starts_with('|') {
                header = None;
                continue;
            }
            let h = *header.get_or_insert(line);
            assert_eq!(pipes(line), pipes(h), "row {line:?} vs header {h:?}");
        }
    }

    #[test]
    fn hostile_strings_everywhere() {
        for s in [
            EVIL,
            "\"'><img src=x onerror=alert(1)>&amp;&#x3c;",
            "a\nb\r\nc\rd\u{0}e\u{7}f\u{202e}g\u{ffff}h\u{85}",
            "**bold** _it_ `code` [link](javascript:alert(1)) ~~s~~ # \\",
            "",
            "   ",
            "]]> <![CDATA[ --> <!--",
            "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 é 漢字 🙂‍↔️ very long label that goes on and on and on beyond any chart width",
        ] {
            let card = hostile(s);
            let md = render_markdown(&card);
            let html = render_html(&card);
            assert!(
                !html.contains("<script") && !html.contains("<img") && !html.contains("<!["),
                "{s:?}"
            );
            assert!(
                !md.contains("<script") && !md.contains("<img") && !md.contains("<!--"),
                "{s:?}"
            );
            assert!(!md.contains("[link]") && !md.contains("**bold**"), "{s:?}");
            assert_table_shapes(&md);
            for bad in ['\u{0}', '\u{7}', '\u{202e}', '\u{ffff}', '\u{85}', '\r'] {
                assert!(!md.contains(bad) && !html.contains(bad), "{s:?} {bad:?}");
            }
            check_markup(&html, true).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            for svg in svgs(&html) {
                check_markup(svg, false).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            }
            // Markdown: no line outside a table cell starts a new block from data
            for line in md.lines() {
                assert!(
                    line.is_empty()
                        || line.starts_with('#')
                        || line.starts_with("- ")
                        || line.starts_with('|')
                        || line.starts_with("> ")
                        || line.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                    "{s:?}: {line:?}"
                );
            }
        }
    }

    #[test]
    fn empty_card_says_no_data() {
        let card = CardData::default();
        let md = render_markdown(&card);
        let html = render_html(&card);
        for doc in [&md, &html] {
            for line in [
                "No split: all data is shown as one part.",
                NO_PARTS,
                "No modality data recorded.",
                "No manufacturer data recorded.",
                "No sex data recorded.",
                "No age data recorded.",
                NO_LABELS,
                NO_READERS,
                NO_AGREEMENT,
                NOT_DEID,
                NO_PROVENANCE,
                NO_WARNINGS,
            ] {
                assert!(doc.contains(line), "missing {line:?}");
            }
            for s in SECTIONS {
                assert!(doc.contains(s));
            }
            assert!(doc.contains("(untitled)"));
        }
        check_markup(&html, true).expect("balanced");
        assert!(svgs(&html).is_empty());
        assert!(!md.contains("| ---"), "no empty tables");
    }

    #[test]
    fn deterministic() {
        let a = sample();
        let mut b = sample();
        // same maps built in another insertion order
        b.modality = [("SEG".to_string(), 1000), ("CT".to_string(), 9000)]
            .into_iter()
            .collect();
        assert_eq!(render_markdown(&a), render_markdown(&b));
        assert_eq!(render_html(&a), render_html(&b));
        assert_eq!(render_json(&a), render_json(&b));
        assert_eq!(render_html(&a), render_html(&a.clone()));
        let bars = vec![("a".to_string(), 1), ("b".to_string(), 2)];
        assert_eq!(bar_chart_svg("t", &bars), bar_chart_svg("t", &bars));
    }

    #[test]
    fn html_is_self_contained_and_balanced() {
        let html = render_html(&sample());
        check_markup(&html, true).expect("balanced");
        assert!(html.starts_with("<!DOCTYPE html>"));
        for bad in [
            "<script", "http://", "https://", "src=", "href=", "url(", "@import", "xmlns", "<link",
        ] {
            assert!(!html.contains(bad), "{bad:?}");
        }
        assert!(html.contains("default-src 'none'"));
        for svg in svgs(&html) {
            check_markup(svg, false).expect("svg well-formed");
        }
    }

    #[test]
    fn svg_well_formed_and_proportional() {
        let bars = vec![
            ("full".to_string(), 200),
            ("half".to_string(), 100),
            ("tiny".to_string(), 1),
            ("zero".to_string(), 0),
            (EVIL.to_string(), 50),
        ];
        let svg = bar_chart_svg("Chart <&> \"t\"", &bars);
        check_markup(&svg, false).expect("well-formed");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"480\""));
        assert!(svg.contains("<title>Chart &lt;&amp;&gt; &quot;t&quot;</title>"));
        assert!(svg.contains(&format!(
            "width=\"{BAR_MAX}\" height=\"{BAR_H}\" fill=\"{BAR_COLOUR}\""
        )));
        assert!(svg.contains(&format!("width=\"{}\" height", BAR_MAX / 2)));
        assert!(
            svg.contains("width=\"1\" height"),
            "a non-zero value stays visible"
        );
        assert!(svg.contains("width=\"0\" height"));
        assert!(!svg.contains("<script"));
        let h = TOP + 5 * ROW_H + BOTTOM;
        assert!(svg.contains(&format!("height=\"{h}\" viewBox=\"0 0 480 {h}\"")));

        for bars in [vec![], vec![("z".to_string(), 0u64), ("y".to_string(), 0)]] {
            let svg = bar_chart_svg("", &bars);
            check_markup(&svg, false).expect("well-formed");
        }
        assert!(bar_chart_svg("e", &[]).contains("No data"));
        let huge = vec![
            ("max".to_string(), u64::MAX),
            ("one".to_string(), 1),
            ("mid".to_string(), u64::MAX / 2),
        ];
        let svg = bar_chart_svg("huge", &huge);
        check_markup(&svg, false).expect("well-formed");
        assert!(svg.contains(&u64::MAX.to_string()));
        assert!(
            svg.contains(&format!("width=\"{}\" height", BAR_MAX / 2 - 1))
                || svg.contains(&format!("width=\"{}\" height", BAR_MAX / 2))
        );
    }

    #[test]
    fn grouped_svg() {
        let groups = vec![
            (
                "benign".to_string(),
                vec![("train".to_string(), 400), ("test".to_string(), 100)],
            ),
            (
                EVIL.to_string(),
                vec![("train".to_string(), 200), ("validation".to_string(), 0)],
            ),
            ("empty".to_string(), vec![]),
        ];
        let svg = grouped_bar_chart_svg("Labels", &groups);
        check_markup(&svg, false).expect("well-formed");
        assert!(!svg.contains("<script"));
        // series colours fixed by first appearance: train, test, validation
        assert_eq!(
            svg.matches(&format!("fill=\"{}\"", PALETTE[0])).count(),
            3,
            "legend + 2 train bars"
        );
        assert_eq!(svg.matches(&format!("fill=\"{}\"", PALETTE[1])).count(), 2);
        assert!(svg.contains(&format!("width=\"{BAR_MAX}\"")));
        assert!(svg.contains(&format!("width=\"{}\"", BAR_MAX / 2)));
        assert!(svg.contains("No data"));
        check_markup(&grouped_bar_chart_svg("", &[]), false).expect("well-formed");
        let many: Vec<(String, Vec<(String, u64)>)> = (0..20)
            .map(|i| {
                (
                    format!("g{i}"),
                    (0..12).map(|j| (format!("s{j}"), i * j)).collect(),
                )
            })
            .collect();
        check_markup(&grouped_bar_chart_svg("many", &many), false).expect("well-formed");
    }

    #[test]
    fn huge_counts_and_odd_numbers() {
        let mut card = sample();
        for p in &mut card.parts {
            p.counts = Counts {
                patients: u64::MAX,
                studies: u64::MAX,
                series: u64::MAX,
                instances: u64::MAX,
                bytes: u64::MAX,
            };
        }
        card.modality = map(&[("CT", u64::MAX), ("MR", u64::MAX)]);
        card.agreement = vec![
            ("t".into(), "nan".into(), f64::NAN),
            ("t".into(), "inf".into(), f64::INFINITY),
            ("t".into(), "ninf".into(), f64::NEG_INFINITY),
            ("t".into(), "negzero".into(), -0.0001),
            ("t".into(), "big".into(), 1e300),
        ];
        let md = render_markdown(&card);
        let html = render_html(&card);
        assert!(md.contains(&u64::MAX.to_string()));
        assert!(md.contains("16.0 EiB"));
        assert!(md.contains("50.0%"));
        for s in ["nan: NaN", "inf: +inf", "ninf: -inf", "negzero: 0.000"] {
            assert!(md.contains(s) && html.contains(s), "{s}");
        }
        check_markup(&html, true).expect("balanced");
        let json = render_json(&card);
        assert!(json.contains("null"), "NaN becomes null");
    }

    #[test]
    fn no_split_and_deid_lines() {
        let mut card = sample();
        card.split = None;
        card.parts = vec![part("all", 5, BTreeMap::new())];
        card.deid = None;
        let md = render_markdown(&card);
        let html = render_html(&card);
        assert!(
            md.contains("No split: all data is shown as one part.") && md.contains("- Split: none")
        );
        assert!(!md.contains("**Total**"), "no total row for one part");
        assert!(!html.contains("class=\"total\""));
        assert!(md.contains(&format!("> **Warning: {NOT_DEID}**")));
        assert!(html.contains("<p class=\"warn\"><strong>Warning: Not de-identified"));
        assert!(md.contains(NO_LABELS) && html.contains(NO_LABELS));
    }

    #[test]
    fn escaping_helpers() {
        assert_eq!(
            md_cell("a|b`c*d_e<f>g\nh\r\ni"),
            "a\\|b\\`c\\*d\\_e&lt;f&gt;g<br>h<br>i"
        );
        assert_eq!(md_text("x\ny # [z]"), "x y \\# \\[z\\]");
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(esc("a\u{0}b\u{202e}c"), "a\u{fffd}b\u{fffd}c");
        assert_eq!(truncate_chars("ééééé", 3), "éé…");
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abc", 0), "…");
        assert_eq!(scaled(5, 0, 210), 0);
        assert_eq!(scaled(u64::MAX, u64::MAX, 210), 210);
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(pct(1, 0), "–");
        assert_eq!(text_bar(0, 10), "");
        assert_eq!(text_bar(1, 1000), "█");
    }

    #[test]
    fn json_round_trip() {
        let card = sample();
        let back: CardData = serde_json::from_str(&render_json(&card)).expect("parses");
        assert_eq!(back, card);
    }
}
