//! Keyed, deterministic pseudonyms: UIDs, patient identity, AE titles and the date offset.
//!
//! Every pseudonym is `blake3::keyed_hash(key, domain || 0x00 || value)` with a per-use domain
//! string, so the same value never maps to related outputs in two domains, and nothing can be
//! reversed or recomputed without the key. Values are normalised first by trimming DICOM padding
//! (trailing spaces and NULs, and leading spaces).

use super::DeidKey;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Patient pseudonym prefix.
pub(crate) const PATIENT_PREFIX: &str = "PSEUDO-";

pub(crate) fn normalise(value: &str) -> &str {
    value.trim_matches(|c: char| c == ' ' || c == '\0')
}

fn keyed(key: &DeidKey, domain: &str, value: &str) -> [u8; 32] {
    let mut msg = Vec::with_capacity(domain.len() + 1 + value.len());
    msg.extend_from_slice(domain.as_bytes());
    msg.push(0);
    msg.extend_from_slice(normalise(value).as_bytes());
    *blake3::keyed_hash(key.hash_key(), &msg).as_bytes()
}

fn base32(bytes: &[u8], chars: usize) -> String {
    let mut out = String::with_capacity(chars);
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let idx = ((acc >> bits) & 0x1F) as usize;
            out.push(char::from(BASE32[idx]));
            if out.len() == chars {
                return out;
            }
        }
    }
    out
}

/// `2.25.<decimal of the first 16 bytes of the keyed hash>`: at most 44 characters.
pub(crate) fn uid(key: &DeidKey, uid: &str) -> String {
    let h = keyed(key, "uid", uid);
    let mut first = [0u8; 16];
    first.copy_from_slice(&h[..16]);
    format!("2.25.{}", u128::from_be_bytes(first))
}

/// `PSEUDO-` + 12 base32 characters (60 bits).
pub(crate) fn patient(key: &DeidKey, patient_id: &str) -> String {
    let h = keyed(key, "patient", patient_id);
    format!("{PATIENT_PREFIX}{}", base32(&h, 12))
}

/// `DEID` + 8 base32 characters: 12 characters, valid as AE title (max 16).
pub(crate) fn ae_title(key: &DeidKey, ae: &str) -> String {
    let h = keyed(key, "ae", ae);
    format!("DEID{}", base32(&h, 8))
}

/// Per-patient shift in days, uniformly in [-3650, -365].
pub(crate) fn date_offset_days(key: &DeidKey, patient_id: &str) -> i64 {
    let h = keyed(key, "date-offset", patient_id);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    let span = 3650 - 365 + 1;
    -3650 + (u64::from_le_bytes(first) % span) as i64
}
