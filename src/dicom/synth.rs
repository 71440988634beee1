//! Synthetic DICOM instances with FAKE patients, for tests, benchmarks and
//! examples. Owns a small hand-written byte encoder (deliberately not
//! `dicom-object`, so that malformed variants such as [`truncate`]d files can
//! be produced) and a deterministic CT-like pixel generator.
//!
//! All names, IDs and UIDs are invented: UIDs live under the `2.25` (UUID
//! derived) root, patients are called `FAKE^PATIENTnnnn`.

/// Transfer syntax of a synthetic instance.
#[derive(Debug, Clone)]
pub enum SynthSyntax {
    /// 1.2.840.10008.1.2.1
    ExplicitLE,
    /// 1.2.840.10008.1.2
    ImplicitLE,
    /// 1.2.840.10008.1.2.2 (retired, still found in archives)
    ExplicitBE,
    /// 1.2.840.10008.1.2.4.50, with fake (non-decodable) JPEG fragments
    EncapsulatedJpegBaseline,
    /// 1.2.840.10008.1.2.1.99: the explicit VR little endian data set, deflated (RFC 1951)
    DeflatedExplicitLE,
}

impl SynthSyntax {
    fn uid(&self) -> &'static str {
        match self {
            SynthSyntax::ExplicitLE => "1.2.840.10008.1.2.1",
            SynthSyntax::ImplicitLE => "1.2.840.10008.1.2",
            SynthSyntax::ExplicitBE => "1.2.840.10008.1.2.2",
            SynthSyntax::EncapsulatedJpegBaseline => "1.2.840.10008.1.2.4.50",
            SynthSyntax::DeflatedExplicitLE => "1.2.840.10008.1.2.1.99",
        }
    }
}

/// Everything that varies between synthetic instances.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub modality: String,
    pub study_date: String,
    pub study_description: String,
    pub institution_name: String,
    pub accession_number: String,
    pub instance_number: i64,
    pub rows: u16,
    pub columns: u16,
    pub frames: u32,
    /// 8 or 16
    pub bits_allocated: u16,
    pub syntax: SynthSyntax,
    /// 128-byte preamble + "DICM"; without it the file starts directly with
    /// the file meta group (as dcmtk reads and writes such files).
    pub preamble: bool,
    /// ReferencedImageSequence with a nested code sequence, some undefined length.
    pub with_sequence: bool,
    /// Private creator + private tags in group 0009, including a private SQ.
    pub with_private: bool,
    pub pixel_seed: u64,
    pub slice_position: f64,
}

/// splitmix64: tiny deterministic PRNG / hash step.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash a few numbers into one u64.
fn mix(parts: &[u64]) -> u64 {
    let mut s = 0x636F_686F_7274_u64; // "cohort"
    for p in parts {
        s ^= *p;
        s = splitmix(&mut s);
    }
    splitmix(&mut s)
}

/// Deterministic fake UID under the 2.25 root (a 128-bit decimal number).
fn fake_uid(parts: &[u64]) -> String {
    let hi = mix(parts);
    let lo = mix(&[hi, 0x5EED]);
    // clear the top bit so the number never has 40 digits; force non-zero
    let n = ((u128::from(hi) << 64) | u128::from(lo)) >> 1 | 1;
    format!("2.25.{n}")
}

impl SynthSpec {
    /// Deterministic, realistic CT slice defaults (512×512, 16-bit, explicit
    /// VR LE, preamble, with sequences and private tags) for fake patient
    /// `patient`, study `study`, series `series`, slice `instance`.
    pub fn ct(patient: usize, study: usize, series: usize, instance: usize) -> Self {
        let (p, st, se, i) = (patient as u64, study as u64, series as u64, instance as u64);
        SynthSpec {
            patient_id: format!("FAKE{patient:04}"),
            patient_name: format!("FAKE^PATIENT{patient:04}"),
            patient_birth_date: format!("19{:02}{:02}{:02}", 40 + p % 60, 1 + p % 12, 1 + p % 28),
            patient_sex: if patient.is_multiple_of(2) { "F" } else { "M" }.to_string(),
            study_uid: fake_uid(&[1, p, st]),
            series_uid: fake_uid(&[2, p, st, se]),
            sop_uid: fake_uid(&[3, p, st, se, i]),
            modality: "CT".to_string(),
            study_date: format!("2024{:02}{:02}", 1 + (p + st) % 12, 1 + (p * 7 + st) % 28),
            study_description: "FAKE CT CHEST W/O CONTRAST".to_string(),
            institution_name: "FAKE GENERAL HOSPITAL".to_string(),
            accession_number: format!("FAKEACC{patient:04}{study:02}"),
            instance_number: instance as i64 + 1,
            rows: 512,
            columns: 512,
            frames: 1,
            bits_allocated: 16,
            syntax: SynthSyntax::ExplicitLE,
            preamble: true,
            with_sequence: true,
            with_private: true,
            pixel_seed: mix(&[4, p, st, se, i]),
            slice_position: -(instance as f64) * 2.5,
        }
    }
}

/// Cut a file after `keep` bytes (or return it whole when shorter).
pub fn truncate(bytes: &[u8], keep: usize) -> Vec<u8> {
    bytes[..keep.min(bytes.len())].to_vec()
}

const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Byte encoder for one data set encoding.
struct Enc {
    out: Vec<u8>,
    explicit: bool,
    big: bool,
}

/// One sequence item: its encoded data set and whether it has undefined length.
struct Item {
    body: Vec<u8>,
    undefined: bool,
}

impl Enc {
    fn new(explicit: bool, big: bool) -> Self {
        Enc {
            out: Vec::new(),
            explicit,
            big,
        }
    }

    /// An empty encoder with the same encoding (for item bodies).
    fn child(&self) -> Self {
        Enc::new(self.explicit, self.big)
    }

    fn u16(&mut self, v: u16) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    fn header(&mut self, g: u16, e: u16, vr: &str, len: u32) {
        self.u16(g);
        self.u16(e);
        if self.explicit {
            self.out.extend_from_slice(vr.as_bytes());
            if matches!(
                vr,
                "OB" | "OD" | "OF" | "OL" | "OV" | "OW" | "SQ" | "UC" | "UR" | "UT" | "UN"
            ) {
                self.out.extend_from_slice(&[0, 0]);
                self.u32(len);
            } else {
                // short-length VRs: callers keep values below 64 KiB
                self.u16(len as u16);
            }
        } else {
            self.u32(len);
        }
    }

    /// An element with raw value bytes, padded to even length.
    fn raw(&mut self, g: u16, e: u16, vr: &str, value: &[u8]) {
        let pad = value.len() % 2;
        self.header(g, e, vr, (value.len() + pad) as u32);
        self.out.extend_from_slice(value);
        if pad == 1 {
            let fill = if matches!(vr, "UI" | "OB" | "UN") {
                0
            } else {
                b' '
            };
            self.out.push(fill);
        }
    }

    /// A text element (padding chosen by VR).
    fn text(&mut self, g: u16, e: u16, vr: &str, s: &str) {
        self.raw(g, e, vr, s.as_bytes());
    }

    fn us(&mut self, g: u16, e: u16, v: u16) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.raw(g, e, "US", &b);
    }

    /// A sequence of items, each of defined or undefined length.
    fn seq(&mut self, g: u16, e: u16, items: &[Item], undefined: bool) {
        let items_len: usize = items
            .iter()
            .map(|i| 8 + i.body.len() + if i.undefined { 8 } else { 0 })
            .sum();
        self.header(
            g,
            e,
            "SQ",
            if undefined {
                UNDEFINED
            } else {
                items_len as u32
            },
        );
        for item in items {
            self.item(item.body.len() as u32, item.undefined);
            self.out.extend_from_slice(&item.body);
            if item.undefined {
                self.delimiter(0xE00D);
            }
        }
        if undefined {
            self.delimiter(0xE0DD);
        }
    }

    fn item(&mut self, len: u32, undefined: bool) {
        self.u16(0xFFFE);
        self.u16(0xE000);
        self.u32(if undefined { UNDEFINED } else { len });
    }

    fn delimiter(&mut self, e: u16) {
        self.u16(0xFFFE);
        self.u16(e);
        self.u32(0);
    }
}

/// Format a DS value (at most 16 chars for the values used here).
fn ds(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
const SC_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";

/// SOP class for a modality (the pixels stay CT-like whatever the modality).
fn sop_class(modality: &str) -> &'static str {
    match modality {
        "CT" => CT_IMAGE_STORAGE,
        "MR" => MR_IMAGE_STORAGE,
        _ => SC_IMAGE_STORAGE,
    }
}

const IMPLEMENTATION_CLASS_UID: &str = "2.25.170374151935718837427045418405624474713";

/// Encode one synthetic instance as a complete DICOM file. Text values must
/// stay below 64 KiB and the pixel data below 4 GiB (not checked).
pub fn synth_instance(spec: &SynthSpec) -> Vec<u8> {
    let encapsulated = matches!(spec.syntax, SynthSyntax::EncapsulatedJpegBaseline);
    let ct = spec.modality == "CT";
    let big = matches!(spec.syntax, SynthSyntax::ExplicitBE);
    let explicit = !matches!(spec.syntax, SynthSyntax::ImplicitLE);

    let mut file = Vec::new();
    if spec.preamble {
        file.extend_from_slice(&[0u8; 128]);
        file.extend_from_slice(b"DICM");
    }
    file.extend_from_slice(&file_meta(spec));

    let mut d = Enc::new(explicit, big);
    let pos = spec.slice_position;
    // Constant within a series, as on a real scanner.
    let uid_sum = spec.series_uid.bytes().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    let series_number = (mix(&[5, uid_sum]) % 9 + 1).to_string();
    d.text(0x0008, 0x0005, "CS", "ISO_IR 100");
    d.text(0x0008, 0x0008, "CS", "ORIGINAL\\PRIMARY\\AXIAL");
    d.text(0x0008, 0x0016, "UI", sop_class(&spec.modality));
    d.text(0x0008, 0x0018, "UI", &spec.sop_uid);
    d.text(0x0008, 0x0020, "DA", &spec.study_date);
    d.text(0x0008, 0x0021, "DA", &spec.study_date);
    d.text(0x0008, 0x0023, "DA", &spec.study_date);
    d.text(0x0008, 0x0030, "TM", "101500");
    d.text(0x0008, 0x0031, "TM", "102012");
    d.text(0x0008, 0x0033, "TM", "102014.250");
    d.text(0x0008, 0x0050, "SH", &spec.accession_number);
    d.text(0x0008, 0x0060, "CS", &spec.modality);
    d.text(0x0008, 0x0070, "LO", "FAKE MEDICAL SYSTEMS");
    d.text(0x0008, 0x0080, "LO", &spec.institution_name);
    d.text(0x0008, 0x0090, "PN", "FAKE^REFERRER");
    d.text(0x0008, 0x1030, "LO", &spec.study_description);
    d.text(0x0008, 0x103E, "LO", "FAKE AXIAL 2.5MM");
    d.text(0x0008, 0x1090, "LO", "SYNTHETIC SCANNER 64");
    if spec.with_sequence {
        referenced_image_sequence(&mut d, spec);
    }
    if spec.with_private {
        private_block(&mut d);
    }
    d.text(0x0010, 0x0010, "PN", &spec.patient_name);
    d.text(0x0010, 0x0020, "LO", &spec.patient_id);
    d.text(0x0010, 0x0030, "DA", &spec.patient_birth_date);
    d.text(0x0010, 0x0040, "CS", &spec.patient_sex);
    d.text(0x0018, 0x0050, "DS", "2.5");
    if ct {
        d.text(0x0018, 0x0060, "DS", "120");
        d.text(0x0018, 0x1151, "IS", "250");
    }
    d.text(0x0018, 0x5100, "CS", "HFS");
    d.text(0x0020, 0x000D, "UI", &spec.study_uid);
    d.text(0x0020, 0x000E, "UI", &spec.series_uid);
    d.text(0x0020, 0x0010, "SH", "1");
    d.text(0x0020, 0x0011, "IS", &series_number);
    d.text(0x0020, 0x0013, "IS", &spec.instance_number.to_string());
    let half_fov = f64::from(spec.columns) * 0.7 / 2.0;
    d.text(
        0x0020,
        0x0032,
        "DS",
        &format!("{}\\{}\\{}", ds(-half_fov), ds(-half_fov), ds(pos)),
    );
    d.text(0x0020, 0x0037, "DS", "1\\0\\0\\0\\1\\0");
    d.text(
        0x0020,
        0x0052,
        "UI",
        &fake_uid(&[6, spec.study_uid.len() as u64, mix_str(&spec.study_uid)]),
    );
    d.text(0x0020, 0x1041, "DS", &ds(pos));
    d.us(0x0028, 0x0002, 1);
    d.text(0x0028, 0x0004, "CS", "MONOCHROME2");
    if spec.frames > 1 {
        d.text(0x0028, 0x0008, "IS", &spec.frames.to_string());
    }
    d.us(0x0028, 0x0010, spec.rows);
    d.us(0x0028, 0x0011, spec.columns);
    d.text(0x0028, 0x0030, "DS", "0.7\\0.7");
    let bits = spec.bits_allocated;
    let stored = if bits == 16 { 12 } else { bits };
    d.us(0x0028, 0x0100, bits);
    d.us(0x0028, 0x0101, stored);
    d.us(0x0028, 0x0102, stored.saturating_sub(1));
    d.us(0x0028, 0x0103, 0);
    if bits == 16 && ct {
        d.text(0x0028, 0x1050, "DS", "40");
        d.text(0x0028, 0x1051, "DS", "400");
        d.text(0x0028, 0x1052, "DS", "-1024");
        d.text(0x0028, 0x1053, "DS", "1");
    }
    if encapsulated {
        d.text(0x0028, 0x2110, "CS", "01");
    }
    pixel_data(&mut d, spec, encapsulated);

    if matches!(spec.syntax, SynthSyntax::DeflatedExplicitLE) {
        use std::io::Write;
        let mut z = flate2::write::DeflateEncoder::new(file, flate2::Compression::default());
        z.write_all(&d.out).and_then(|()| z.finish()).expect("deflating into memory does not fail")
    } else {
        file.extend_from_slice(&d.out);
        file
    }
}

fn mix_str(s: &str) -> u64 {
    let parts: Vec<u64> = s.bytes().map(u64::from).collect();
    mix(&parts)
}

/// File meta group (always explicit VR little endian), with group length.
fn file_meta(spec: &SynthSpec) -> Vec<u8> {
    let mut m = Enc::new(true, false);
    m.raw(0x0002, 0x0001, "OB", &[0x00, 0x01]);
    m.text(0x0002, 0x0002, "UI", sop_class(&spec.modality));
    m.text(0x0002, 0x0003, "UI", &spec.sop_uid);
    m.text(0x0002, 0x0010, "UI", spec.syntax.uid());
    m.text(0x0002, 0x0012, "UI", IMPLEMENTATION_CLASS_UID);
    m.text(0x0002, 0x0013, "SH", "COHORT_SYNTH");
    let mut g = Enc::new(true, false);
    g.raw(0x0002, 0x0000, "UL", &(m.out.len() as u32).to_le_bytes());
    g.out.extend_from_slice(&m.out);
    g.out
}

/// ReferencedImageSequence (undefined length) with two items, one of
/// undefined and one of defined length, each with a nested
/// PurposeOfReferenceCodeSequence (one defined, one undefined length).
fn referenced_image_sequence(d: &mut Enc, spec: &SynthSpec) {
    let mut items = Vec::new();
    for k in 0..2u64 {
        let mut code = d.child();
        code.text(0x0008, 0x0100, "SH", "121311");
        code.text(0x0008, 0x0102, "SH", "DCM");
        code.text(0x0008, 0x0104, "LO", "Localizer");
        let mut it = d.child();
        it.text(0x0008, 0x1150, "UI", CT_IMAGE_STORAGE);
        it.text(
            0x0008,
            0x1155,
            "UI",
            &fake_uid(&[7, k, mix_str(&spec.series_uid)]),
        );
        it.seq(
            0x0040,
            0xA170,
            &[Item {
                body: code.out,
                undefined: k == 1,
            }],
            k == 1,
        );
        items.push(Item {
            body: it.out,
            undefined: k == 0,
        });
    }
    d.seq(0x0008, 0x1140, &items, true);
}

/// Private block in group 0009: creator, a few private values and a private
/// SQ (undefined length, one undefined-length item with its own creator).
fn private_block(d: &mut Enc) {
    d.text(0x0009, 0x0010, "LO", "COHORT FAKE PRIVATE");
    d.text(0x0009, 0x1001, "LO", "fake private value");
    d.raw(0x0009, 0x1002, "OB", &[1, 2, 3, 4, 5, 6]);
    let mut it = d.child();
    it.text(0x0009, 0x0010, "LO", "COHORT FAKE PRIVATE");
    it.text(0x0009, 0x1011, "LO", "nested private value");
    d.seq(
        0x0009,
        0x1010,
        &[Item {
            body: it.out,
            undefined: true,
        }],
        true,
    );
}

/// Pixel Data: native (OW / OB) or encapsulated (basic offset table + one
/// fake JPEG fragment per frame).
fn pixel_data(d: &mut Enc, spec: &SynthSpec, encapsulated: bool) {
    let frame_len = usize::from(spec.rows) * usize::from(spec.columns);
    if encapsulated {
        let mut rng = spec.pixel_seed;
        let frags: Vec<Vec<u8>> = (0..spec.frames)
            .map(|_| {
                // even length: FFD8 + fake entropy-coded bytes + FFD9
                let n = (frame_len / 4).max(16) & !1;
                let mut f = vec![0xFF, 0xD8];
                f.extend((0..n).map(|_| (splitmix(&mut rng) >> 56) as u8));
                f.extend_from_slice(&[0xFF, 0xD9]);
                f
            })
            .collect();
        d.header(0x7FE0, 0x0010, "OB", UNDEFINED);
        d.item(4 * spec.frames, false);
        let mut offset = 0u32;
        for f in &frags {
            d.out.extend_from_slice(&offset.to_le_bytes());
            offset += 8 + f.len() as u32;
        }
        for f in &frags {
            d.item(f.len() as u32, false);
            d.out.extend_from_slice(f);
        }
        d.delimiter(0xE0DD);
        return;
    }
    let values = ct_pixels(spec);
    if spec.bits_allocated == 16 {
        let mut bytes = Vec::with_capacity(values.len() * 2);
        for v in values {
            let b = if d.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            bytes.extend_from_slice(&b);
        }
        d.raw(0x7FE0, 0x0010, "OW", &bytes);
    } else {
        let bytes: Vec<u8> = values.iter().map(|v| (v / 8).min(255) as u8).collect();
        d.raw(0x7FE0, 0x0010, "OB", &bytes);
    }
}

/// CT-like stored values (rescale intercept -1024): 0 outside the circular
/// field of view, air ~24 around the body, an elliptic body ~1040 with a fat
/// rim, two lungs ~200, a spine ~1500, smooth texture and noise σ≈12–30 (zstd: ~45%).
fn ct_pixels(spec: &SynthSpec) -> Vec<u16> {
    let (rows, cols) = (usize::from(spec.rows), usize::from(spec.columns));
    let mut out = Vec::with_capacity(rows * cols * spec.frames as usize);
    let mut rng = spec.pixel_seed;
    let r = rows.min(cols) as f64 / 2.0;
    for frame in 0..spec.frames {
        let z = spec.slice_position + f64::from(frame) * 2.5;
        let body = 0.85 + 0.05 * (z / 40.0).sin();
        for y in 0..rows {
            for x in 0..cols {
                let nx = (x as f64 + 0.5 - cols as f64 / 2.0) / r;
                let ny = (y as f64 + 0.5 - rows as f64 / 2.0) / r;
                let fov = nx * nx + ny * ny;
                let bits = splitmix(&mut rng);
                if fov > 1.0 {
                    out.push(0);
                    continue;
                }
                // approximately normal noise: sum of 4 uniforms, σ≈1
                let u: f64 = (0..4)
                    .map(|k| ((bits >> (16 * k)) & 0xFFFF) as f64 / 65535.0)
                    .sum::<f64>()
                    - 2.0;
                let noise = u * 1.73;
                let e = (nx / body).powi(2) + (ny / (body * 0.72)).powi(2);
                let lung =
                    |cx: f64| ((nx - cx) / 0.28).powi(2) + ((ny + 0.05) / 0.42).powi(2) < 1.0;
                let spine = (nx * nx + (ny - 0.42).powi(2)) < 0.012;
                let v = if e > 1.0 {
                    24.0 + 12.0 * noise
                } else if spine {
                    1500.0 + 40.0 * (nx * 30.0).sin() + 30.0 * noise
                } else if lung(-0.35) || lung(0.35) {
                    200.0 + 30.0 * (nx * 23.0 + ny * 17.0).sin() + 25.0 * noise
                } else if e > 0.85 {
                    930.0 + 30.0 * noise
                } else {
                    1040.0 + 25.0 * (nx * 9.0).sin() * (ny * 7.0).cos() + 30.0 * noise
                };
                out.push(v.clamp(0.0, 4095.0) as u16);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let a = SynthSpec::ct(1, 2, 3, 4);
        assert_eq!(
            synth_instance(&a),
            synth_instance(&SynthSpec::ct(1, 2, 3, 4))
        );
        let b = SynthSpec::ct(1, 2, 3, 5);
        assert_eq!(a.study_uid, b.study_uid);
        assert_eq!(a.series_uid, b.series_uid);
        assert_ne!(a.sop_uid, b.sop_uid);
        assert_ne!(a.pixel_seed, b.pixel_seed);
        assert_eq!(a.patient_name, "FAKE^PATIENT0001");
        for uid in [&a.study_uid, &a.series_uid, &a.sop_uid] {
            assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{uid}");
            assert!(!uid[5..].starts_with('0'));
        }
    }

    #[test]
    fn ct_pixels_look_like_ct() {
        let mut spec = SynthSpec::ct(0, 0, 0, 0);
        spec.rows = 128;
        spec.columns = 128;
        let px = ct_pixels(&spec);
        assert_eq!(px.len(), 128 * 128);
        let centre = px[64 * 128 + 64];
        assert!(
            (900..1200).contains(&centre),
            "soft tissue at the centre: {centre}"
        );
        assert_eq!(px[0], 0, "outside the field of view");
        assert!(px.iter().all(|v| *v <= 4095));
    }

    #[test]
    fn layout_and_truncate() {
        let mut spec = SynthSpec::ct(0, 0, 0, 0);
        spec.rows = 4;
        spec.columns = 4;
        spec.preamble = false;
        let bytes = synth_instance(&spec);
        assert_eq!(
            &bytes[..4],
            &[0x02, 0x00, 0x00, 0x00],
            "starts with the file meta group"
        );
        spec.preamble = true;
        let bytes = synth_instance(&spec);
        assert_eq!(&bytes[128..132], b"DICM");
        // 4x4 16-bit pixels at the very end, in an OW element
        assert_eq!(
            &bytes[bytes.len() - 44..bytes.len() - 32],
            &[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 32, 0, 0, 0]
        );
        assert_eq!(truncate(&bytes, 10), bytes[..10].to_vec());
        assert_eq!(truncate(&bytes, usize::MAX), bytes);
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(-179.2), "-179.2");
    }

    #[test]
    fn sop_class_follows_modality() {
        let mut spec = SynthSpec::ct(0, 0, 0, 0);
        spec.rows = 4;
        spec.columns = 4;
        spec.modality = "MR".to_string();
        let bytes = synth_instance(&spec);
        let found = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(found(MR_IMAGE_STORAGE.as_bytes()));
        assert!(!found(b"-1024"), "no CT rescale for MR");
    }
}
