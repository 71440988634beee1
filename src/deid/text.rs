//! Text cleaning (action C on descriptors) and date shifting.

use std::collections::HashSet;

/// Maximum value length in characters for string VRs (None: no practical limit).
pub(crate) fn max_len(vr: dicom_core::VR) -> Option<usize> {
    use dicom_core::VR;
    match vr {
        VR::AE | VR::CS | VR::SH | VR::DA => Some(16),
        VR::AS => Some(4),
        VR::LO => Some(64),
        VR::PN => Some(64),
        VR::ST => Some(1024),
        VR::LT => Some(10240),
        VR::UI => Some(64),
        _ => None,
    }
}

/// Words after which the next word is taken to be a name.
const TITLES: [&str; 6] = ["dr", "mr", "mrs", "ms", "prof", "miss"];

/// Identifying values of one instance, used to clean free text.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scrubber {
    /// Lowercase tokens of 4+ bytes, matched as substrings (in insertion order).
    long: Vec<String>,
    long_seen: HashSet<String>,
    /// Lowercase tokens of 2-3 bytes, matched as whole words.
    short: HashSet<String>,
}

impl Scrubber {
    /// Add a value (whole) and its words as identifying tokens.
    pub(crate) fn add_value(&mut self, value: &str, min_word: usize) {
        let v = value.trim().to_ascii_lowercase();
        self.add_token(&v);
        for w in v.split(|c: char| !c.is_alphanumeric()) {
            if w.len() >= min_word {
                self.add_token(w);
            }
        }
    }

    fn add_token(&mut self, t: &str) {
        let t = t.trim();
        if t.len() >= 4 {
            if self.long_seen.insert(t.to_string()) {
                self.long.push(t.to_string());
            }
        } else if t.len() >= 2 {
            self.short.insert(t.to_string());
        }
    }

    /// Add a DA value in the formats commonly typed into free text.
    pub(crate) fn add_date(&mut self, da: &str) {
        let d = da.trim();
        if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
            return;
        }
        let (y, m, dd) = (&d[0..4], &d[4..6], &d[6..8]);
        for f in [
            d.to_string(),
            format!("{y}-{m}-{dd}"),
            format!("{y}/{m}/{dd}"),
            format!("{y}.{m}.{dd}"),
            format!("{dd}/{m}/{y}"),
            format!("{m}/{dd}/{y}"),
            format!("{dd}.{m}.{y}"),
            format!("{dd}-{m}-{y}"),
            format!("{m}-{dd}-{y}"),
        ] {
            self.add_token(&f);
        }
    }

    /// Clean one text value: identifying tokens, words with 5+ digits and the word after a
    /// title are replaced by `*` (one `*` per run); the result is cut to `limit` characters.
    pub(crate) fn clean(&self, text: &str, limit: Option<usize>) -> String {
        let lower = text.to_ascii_lowercase();
        let mut mark = vec![false; text.len()];
        for tok in &self.long {
            for (i, _) in lower.match_indices(tok.as_str()) {
                for m in mark.iter_mut().skip(i).take(tok.len()) {
                    *m = true;
                }
            }
        }
        // word pass
        let mut words: Vec<(usize, usize)> = Vec::new();
        let mut start: Option<usize> = None;
        for (i, c) in text.char_indices() {
            if c.is_alphanumeric() {
                if start.is_none() {
                    start = Some(i);
                }
            } else if let Some(s) = start.take() {
                words.push((s, i));
            }
        }
        if let Some(s) = start {
            words.push((s, text.len()));
        }
        let mut after_title = false;
        for &(s, e) in &words {
            let w = &lower[s..e];
            let digits = w.bytes().filter(|b| b.is_ascii_digit()).count();
            let hit = after_title || self.short.contains(w) || digits >= 5;
            after_title = TITLES.contains(&w);
            if hit {
                for m in mark.iter_mut().take(e).skip(s) {
                    *m = true;
                }
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut in_mark = false;
        for (i, c) in text.char_indices() {
            if mark.get(i).copied().unwrap_or(false) {
                if !in_mark {
                    out.push('*');
                }
                in_mark = true;
            } else {
                in_mark = false;
                out.push(c);
            }
        }
        let out = out.trim_end().to_string();
        match limit {
            Some(n) if out.chars().count() > n => out.chars().take(n).collect(),
            _ => out,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// Shift a date of 4, 6 or 8 digits (YYYY, YYYYMM, YYYYMMDD) by `days`, keeping its precision.
/// Partial dates are shifted from their first day.
fn shift_digits(d: &str, days: i64) -> Option<String> {
    if !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = d.get(0..4)?.parse().ok()?;
    let (m, dd) = match d.len() {
        4 => (1, 1),
        6 => (d.get(4..6)?.parse().ok()?, 1),
        8 => (d.get(4..6)?.parse().ok()?, d.get(6..8)?.parse().ok()?),
        _ => return None,
    };
    if !(1..=12).contains(&m) || dd < 1 || dd > days_in_month(y, m) {
        return None;
    }
    let (ny, nm, nd) = civil_from_days(days_from_civil(y, m, dd) + days);
    if !(0..=9999).contains(&ny) {
        return None;
    }
    Some(match d.len() {
        4 => format!("{ny:04}"),
        6 => format!("{ny:04}{nm:02}"),
        _ => format!("{ny:04}{nm:02}{nd:02}"),
    })
}

/// Shift one DA value (a date or a date range `A-B`, either side may be empty).
pub(crate) fn shift_da(value: &str, days: i64) -> Option<String> {
    let v = value.trim();
    if v.is_empty() {
        return Some(String::new());
    }
    if let Some((a, b)) = v.split_once('-') {
        let a = if a.is_empty() {
            String::new()
        } else {
            shift_digits(a, days)?
        };
        let b = if b.is_empty() {
            String::new()
        } else {
            shift_digits(b, days)?
        };
        return Some(format!("{a}-{b}"));
    }
    shift_digits(v, days)
}

/// Shift the date part of one DT value (or DT range); time, fraction and UTC offset are kept.
pub(crate) fn shift_dt(value: &str, days: i64) -> Option<String> {
    let v = value.trim();
    if v.is_empty() {
        return Some(String::new());
    }
    if let Some(p) = range_dash(v) {
        let (a, b) = (&v[..p], &v[p + 1..]);
        let a = if a.is_empty() {
            String::new()
        } else {
            shift_single_dt(a, days)?
        };
        let b = if b.is_empty() {
            String::new()
        } else {
            shift_single_dt(b, days)?
        };
        return Some(format!("{a}-{b}"));
    }
    shift_single_dt(v, days)
}

/// Position of the '-' separating a DT range; a '-' followed by exactly four digits at the end
/// is a UTC offset instead.
fn range_dash(v: &str) -> Option<usize> {
    v.char_indices().find_map(|(i, c)| {
        if c != '-' {
            return None;
        }
        let after = &v[i + 1..];
        let is_offset = i > 0 && after.len() == 4 && after.bytes().all(|b| b.is_ascii_digit());
        (!is_offset).then_some(i)
    })
}

fn shift_single_dt(v: &str, days: i64) -> Option<String> {
    let digits = v.bytes().take(8).take_while(|b| b.is_ascii_digit()).count();
    let date_len = match digits {
        8 => 8,
        6 | 7 => 6,
        4 | 5 => 4,
        _ => return None,
    };
    let shifted = shift_digits(&v[..date_len], days)?;
    Some(format!("{shifted}{}", &v[date_len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for z in [-800000, -1, 0, 1, 11016, 18262, 2932896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }

    #[test]
    fn shifts() {
        assert_eq!(shift_da("20200301", -1).as_deref(), Some("20200229"));
        assert_eq!(
            shift_da("20200101-20200201", -31).as_deref(),
            Some("20191201-20200101")
        );
        assert_eq!(shift_da("-20200201", 1).as_deref(), Some("-20200202"));
        assert_eq!(shift_da("2020AB01", 1), None);
        assert_eq!(shift_da("20200230", 1), None);
        assert_eq!(
            shift_dt("20200301120000.5+0100", -1).as_deref(),
            Some("20200229120000.5+0100")
        );
        assert_eq!(
            shift_dt("20200301-0500", -1).as_deref(),
            Some("20200229-0500")
        );
        assert_eq!(shift_dt("202003", -40).as_deref(), Some("202001"));
        assert_eq!(
            shift_dt("20200101000000-20200102000000", 1).as_deref(),
            Some("20200102000000-20200103000000")
        );
    }

    #[test]
    fn scrubber_cleans() {
        let mut s = Scrubber::default();
        s.add_value("DOE^JOHN", 2);
        s.add_value("MRN-998877", 4);
        s.add_date("19700215");
        let c = s.clean(
            "CT chest for John Doe, DOB 15/02/1970, mrn-998877, Dr. Who ref 1234567",
            Some(64),
        );
        assert!(!c.to_lowercase().contains("john"));
        assert!(!c.to_lowercase().contains("doe"));
        assert!(!c.contains("1970"));
        assert!(!c.contains("998877"));
        assert!(!c.contains("Who"));
        assert!(!c.contains("1234567"));
        assert!(c.starts_with("CT chest for"));
    }
}
