//! Burned-in annotation: detection and rule-based blanking of native pixel data.
//!
//! An instance is *flagged* when Burned In Annotation (0028,0301) is YES, when its modality is
//! one where text is commonly burned in ([`BURNED_IN_MODALITIES`]), or when its SOP class is a
//! Secondary Capture class (`1.2.840.10008.5.1.4.1.1.7` and its multi-frame variants).
//!
//! With the clean-pixel-data option, the first [`PixelRule`] matching the instance (modality,
//! manufacturer, model name, rows, columns; unset fields match anything) gives rectangles that
//! are set to 0 in every frame of the pixel data. Encapsulated (compressed) pixel data is decoded
//! first (`engine::decode_encapsulated`) and written native; what cannot be decoded is reported
//! [`BurnedIn::NotCleaned`].

use serde::{Deserialize, Serialize};

use super::DeidError;

/// Modalities where text (patient banner, measurements, operator notes) is commonly burned into
/// the pixels: ultrasound, secondary capture, other, X-ray angiography, radio fluoroscopy,
/// endoscopy, external-camera photography and general microscopy.
pub const BURNED_IN_MODALITIES: [&str; 8] = ["US", "SC", "OT", "XA", "RF", "ES", "XC", "GM"];

/// Root of the Secondary Capture Image Storage SOP classes (single and multi-frame).
pub const SECONDARY_CAPTURE_SOP_CLASS_ROOT: &str = "1.2.840.10008.5.1.4.1.1.7";

/// Burned-in annotation status of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum BurnedIn {
    /// Nothing suggests burned-in text.
    NotFlagged,
    /// Burned-in text is likely; pixels were not cleaned (option not chosen).
    Flagged { reason: String },
    /// A rule blanked regions of the pixel data.
    Cleaned { rule: String },
    /// Cleaning was required but could not be done (no rule, compressed pixels, ...).
    NotCleaned { reason: String },
}

/// A rectangle in pixels: columns `x..x+width`, rows `y..y+height` (clipped to the image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A burned-in text rule (format: `schema/deid/pixel-rules.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelRule {
    /// Unique name, recorded in the report of instances it applies to.
    pub name: String,
    /// Modality (0008,0060), compared case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    /// Manufacturer (0008,0070), compared case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Manufacturer's Model Name (0008,1090), compared case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Rows (0028,0010).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u32>,
    /// Columns (0028,0011).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<u32>,
    /// Regions to blank.
    pub rectangles: Vec<PixelRect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDocument {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    version: u32,
    rules: Vec<PixelRule>,
}

/// Parse a pixel rule document: `{"version": 1, "rules": [...]}`.
pub fn parse_pixel_rules(json: &str) -> Result<Vec<PixelRule>, DeidError> {
    let doc: RuleDocument = serde_json::from_str(json).map_err(|e| DeidError::PixelRules {
        reason: format!("invalid JSON: {e}"),
    })?;
    if doc.version != 1 {
        return Err(DeidError::PixelRules {
            reason: format!("version {} not supported (1 expected)", doc.version),
        });
    }
    validate_rules(&doc.rules)?;
    Ok(doc.rules)
}

pub(crate) fn validate_rules(rules: &[PixelRule]) -> Result<(), DeidError> {
    let mut names = std::collections::HashSet::new();
    for r in rules {
        if r.name.trim().is_empty() {
            return Err(DeidError::PixelRules {
                reason: "a rule has an empty name".into(),
            });
        }
        if !names.insert(r.name.as_str()) {
            return Err(DeidError::PixelRules {
                reason: format!("duplicate rule name {:?}", r.name),
            });
        }
        if r.rectangles.is_empty() {
            return Err(DeidError::PixelRules {
                reason: format!("rule {:?} has no rectangles", r.name),
            });
        }
        if r.rectangles.iter().any(|q| q.width == 0 || q.height == 0) {
            return Err(DeidError::PixelRules {
                reason: format!("rule {:?} has an empty rectangle", r.name),
            });
        }
    }
    Ok(())
}

/// The attributes of the original header that detection and rules look at.
#[derive(Debug, Clone, Default)]
pub(crate) struct PixelFacts {
    pub burned_in_annotation: Option<String>,
    pub modality: Option<String>,
    pub sop_class_uid: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    pub samples_per_pixel: Option<u32>,
    pub bits_allocated: Option<u32>,
    pub planar_configuration: Option<u32>,
    pub number_of_frames: Option<u32>,
    pub photometric: Option<String>,
}

fn eq_ci(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(want), Some(have)) => want.trim().eq_ignore_ascii_case(have.trim()),
        (Some(_), None) => false,
    }
}

impl PixelFacts {
    /// Why the instance is flagged as likely to carry burned-in text, if it is.
    pub(crate) fn flag_reason(&self) -> Option<String> {
        if self.burned_in_annotation.as_deref().map(str::trim) == Some("YES") {
            return Some("BurnedInAnnotation (0028,0301) is YES".into());
        }
        if let Some(m) = &self.modality {
            let m = m.trim().to_ascii_uppercase();
            if BURNED_IN_MODALITIES.contains(&m.as_str()) {
                return Some(format!("modality {m} commonly carries burned-in text"));
            }
        }
        if let Some(c) = &self.sop_class_uid {
            let c = c.trim_end_matches(['\0', ' ']);
            if c == SECONDARY_CAPTURE_SOP_CLASS_ROOT
                || c.starts_with(&format!("{SECONDARY_CAPTURE_SOP_CLASS_ROOT}."))
            {
                return Some("secondary capture SOP class".into());
            }
        }
        None
    }

    pub(crate) fn matches(&self, r: &PixelRule) -> bool {
        eq_ci(&r.modality, &self.modality)
            && eq_ci(&r.manufacturer, &self.manufacturer)
            && eq_ci(&r.model, &self.model)
            && r.rows.is_none_or(|v| self.rows == Some(v))
            && r.columns.is_none_or(|v| self.columns == Some(v))
    }

    /// Blank the rule's rectangles in every frame of native pixel data: black, that is every
    /// sample 0, but the chroma of YCbCr (YBR_FULL, YBR_FULL_422), which is set to its middle
    /// value (128 at 8 bits), black too. YBR_FULL_422 stores a pair of pixels as Y Y Cb Cr: a
    /// rectangle is widened to whole pairs, so no trace of text is left in a shared chroma.
    pub(crate) fn blank(&self, pixels: &[u8], rule: &PixelRule) -> Result<Vec<u8>, String> {
        let rows = self.rows.ok_or("Rows (0028,0010) missing")? as usize;
        let cols = self.columns.ok_or("Columns (0028,0011) missing")? as usize;
        let spp = self.samples_per_pixel.unwrap_or(1) as usize;
        let bits = self
            .bits_allocated
            .ok_or("BitsAllocated (0028,0100) missing")?;
        let frames = self.number_of_frames.unwrap_or(1).max(1) as usize;
        let planar = self.planar_configuration.unwrap_or(0);
        let photometric = self.photometric.as_deref().map(str::trim).unwrap_or("");
        let ycbcr = spp == 3 && photometric.starts_with("YBR");
        let pairs = photometric == "YBR_FULL_422";
        if photometric.ends_with("_420") || (photometric.ends_with("_422") && !pairs) {
            return Err(format!("photometric interpretation {photometric} not supported"));
        }
        if pairs && (spp != 3 || cols % 2 == 1 || planar != 0) {
            return Err(format!("YBR_FULL_422 with {spp} samples per pixel, {cols} columns and planar configuration {planar} (3, an even number and 0 expected)"));
        }
        let bps = match bits {
            8 | 16 | 32 | 64 => (bits / 8) as usize,
            other => return Err(format!("BitsAllocated {other} not supported")),
        };
        if rows == 0 || cols == 0 || spp == 0 {
            return Err("empty image geometry".into());
        }
        if ycbcr && bps != 1 {
            return Err(format!("{photometric} with BitsAllocated {bits} (8 expected)"));
        }
        // Samples of a row: two per pixel for YBR_FULL_422 (Y Y Cb Cr per pair).
        let row_samples = if pairs { cols.checked_mul(2) } else { cols.checked_mul(spp) };
        let frame_len = row_samples
            .and_then(|v| v.checked_mul(rows))
            .and_then(|v| v.checked_mul(bps))
            .ok_or("image geometry overflows")?;
        let needed = frame_len
            .checked_mul(frames)
            .ok_or("image geometry overflows")?;
        if pixels.len() < needed {
            return Err(format!(
                "pixel data has {} bytes, geometry needs {needed}",
                pixels.len()
            ));
        }
        // Black: 0, and for chroma (8 bits) the middle of the range.
        let mut out = pixels.to_vec();
        let sample = |out: &mut [u8], at: usize, chroma: bool| out[at..at + bps].fill(if chroma { 128 } else { 0 });
        for f in 0..frames {
            let base = f * frame_len;
            for r in &rule.rectangles {
                let mut x0 = (r.x as usize).min(cols);
                let mut x1 = (r.x as usize).saturating_add(r.width as usize).min(cols);
                let y0 = (r.y as usize).min(rows);
                let y1 = (r.y as usize).saturating_add(r.height as usize).min(rows);
                if x0 >= x1 || y0 >= y1 {
                    continue;
                }
                if pairs {
                    (x0, x1) = (x0 & !1, (x1 + 1).min(cols) & !1);
                }
                for y in y0..y1 {
                    if pairs {
                        for k in (x0..x1).step_by(2) {
                            let at = base + (y * cols + k) * 2 * bps;
                            for (j, chroma) in [false, false, true, true].into_iter().enumerate() {
                                sample(&mut out, at + j * bps, chroma);
                            }
                        }
                    } else if spp == 1 || planar == 0 {
                        for x in x0..x1 {
                            for c in 0..spp {
                                sample(&mut out, base + ((y * cols + x) * spp + c) * bps, ycbcr && c > 0);
                            }
                        }
                    } else {
                        for plane in 0..spp {
                            let pb = base + plane * rows * cols * bps;
                            for x in x0..x1 {
                                sample(&mut out, pb + (y * cols + x) * bps, ycbcr && plane > 0);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(x: u32, y: u32, width: u32, height: u32) -> PixelRule {
        parse_pixel_rules(&format!(r#"{{"version": 1, "rules": [{{"name": "r", "rectangles": [{{"x": {x}, "y": {y}, "width": {width}, "height": {height}}}]}}]}}"#)).unwrap().remove(0)
    }

    fn facts(photometric: &str, cols: u32, rows: u32, spp: u32, bits: u32, planar: u32) -> PixelFacts {
        PixelFacts {
            rows: Some(rows),
            columns: Some(cols),
            samples_per_pixel: Some(spp),
            bits_allocated: Some(bits),
            planar_configuration: Some(planar),
            photometric: Some(photometric.into()),
            ..PixelFacts::default()
        }
    }

    #[test]
    fn grey_and_rgb_rectangles_are_zeroed_and_nothing_else() {
        // 4x3 grey, 16 bits: the rectangle x 1..3, y 1 is zero, the rest as it was.
        let px: Vec<u8> = (1..=24).collect();
        let out = facts("MONOCHROME2", 4, 3, 1, 16, 0).blank(&px, &rule(1, 1, 2, 1)).unwrap();
        let zeroed: Vec<usize> = (0..24).filter(|&k| out[k] != px[k]).collect();
        assert_eq!(zeroed, [10, 11, 12, 13]);
        assert!(zeroed.iter().all(|&k| out[k] == 0));
        // 2x2 RGB interleaved and planar: pixel (1, 0) black in all three samples.
        let px: Vec<u8> = (1..=12).collect();
        let out = facts("RGB", 2, 2, 3, 8, 0).blank(&px, &rule(1, 0, 5, 1)).unwrap();
        assert_eq!(out, [1, 2, 3, 0, 0, 0, 7, 8, 9, 10, 11, 12]);
        let out = facts("RGB", 2, 2, 3, 8, 1).blank(&px, &rule(1, 0, 1, 1)).unwrap();
        assert_eq!(out, [1, 0, 3, 4, 5, 0, 7, 8, 9, 0, 11, 12]);
    }

    #[test]
    fn ycbcr_is_blanked_to_black_with_neutral_chroma() {
        // YBR_FULL: Y 0, Cb and Cr 128 (0 in all three would be green).
        let px: Vec<u8> = (1..=12).collect();
        let out = facts("YBR_FULL", 2, 2, 3, 8, 0).blank(&px, &rule(0, 1, 1, 1)).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 0, 128, 128, 10, 11, 12]);
        let out = facts("YBR_FULL", 2, 2, 3, 8, 1).blank(&px, &rule(0, 1, 1, 1)).unwrap();
        assert_eq!(out, [1, 2, 0, 4, 5, 6, 128, 8, 9, 10, 128, 12]);
        // YBR_FULL_422, 6x2: a pair of pixels is Y Y Cb Cr. A rectangle over pixel 3 of row 1
        // blanks the pair (2, 3) whole; pixel 2 shares its chroma.
        let px: Vec<u8> = (1..=24).collect();
        let out = facts("YBR_FULL_422", 6, 2, 3, 8, 0).blank(&px, &rule(3, 1, 1, 1)).unwrap();
        let mut want = px.clone();
        want[16..20].copy_from_slice(&[0, 0, 128, 128]);
        assert_eq!(out, want);
        // A rectangle from pixel 1 to 4 (inclusive) widens to pairs 0..3: pixels 0 to 5.
        let out = facts("YBR_FULL_422", 6, 2, 3, 8, 0).blank(&px, &rule(1, 0, 4, 1)).unwrap();
        assert_eq!(&out[..12], [0, 0, 128, 128, 0, 0, 128, 128, 0, 0, 128, 128]);
        assert_eq!(&out[12..], &px[12..]);
        // Too short, odd columns, more than 8 bits, 4:2:0: errors, never a wrong blank.
        let f = facts("YBR_FULL_422", 6, 2, 3, 8, 0);
        assert!(f.blank(&px[..23], &rule(0, 0, 1, 1)).unwrap_err().contains("geometry needs 24"));
        assert!(facts("YBR_FULL_422", 5, 2, 3, 8, 0).blank(&px, &rule(0, 0, 1, 1)).unwrap_err().contains("5 columns"));
        assert!(facts("YBR_FULL", 2, 2, 3, 16, 0).blank(&[0; 24], &rule(0, 0, 1, 1)).unwrap_err().contains("BitsAllocated 16"));
        assert!(facts("YBR_PARTIAL_420", 2, 2, 3, 8, 0).blank(&px, &rule(0, 0, 1, 1)).is_err());
    }
}
