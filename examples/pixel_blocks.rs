//! How the compression of small 16-bit pixel objects would change if several were compressed
//! together: the experiment behind docs/benchmarks.md (session 16). Reads the native pixel data
//! of the DICOM files given, applies the store's pixel transform (`pack::delta16`: sample
//! differences, zigzag, low and high byte planes) and times zstd, one core, with the store's settings
//! (each plane its own frame, as `pack::encode` does) and with alternatives.
//!
//!   cargo run --release --example pixel_blocks -- $(find /tmp/cohort-bench/small -name '*.dcm' | head -4000)
use std::time::Instant;

use cohort::dicom::{analyze, Analysis};
use zstd::zstd_safe::{CParameter, ParamSwitch};

/// A compressor as the store makes them for pixel planes (see `pack::new_compressor`).
fn compressor(level: i32, literals: bool) -> zstd::bulk::Compressor<'static> {
    let mut c = zstd::bulk::Compressor::new(level).expect("zstd context");
    c.set_parameter(CParameter::HashLog(10)).expect("hash log");
    c.set_parameter(CParameter::MinMatch(6)).expect("min match");
    if literals {
        c.set_parameter(CParameter::LiteralCompressionMode(ParamSwitch::Enable)).expect("literal mode");
    }
    c
}

fn main() {
    let mut pixels = Vec::new();
    for f in std::env::args().skip(1) {
        let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        if let Analysis::Dicom(l) = analyze(&bytes) {
            if let Some(p) = l.pixel.filter(|p| !p.encapsulated && p.bits_allocated == Some(16) && !p.big_endian) {
                pixels.push(cohort::pack::delta16(&bytes[p.value_start as usize..p.value_end as usize]));
            }
        }
    }
    if pixels.is_empty() {
        eprintln!("usage: pixel_blocks DICOM_FILES... (native 16-bit little-endian pixel data)");
        std::process::exit(2);
    }
    let raw: usize = pixels.iter().map(Vec::len).sum();
    println!("{} pixel objects, {} bytes, mean {} bytes", pixels.len(), raw, raw / pixels.len());
    let (mut lo, mut hi) = (compressor(-20, true), compressor(-5, true));
    let mut one = compressor(-5, true);
    let mut level1 = zstd::bulk::Compressor::new(1).expect("zstd context");
    let mut two_frames = |a: &[u8], b: &[u8]| lo.compress(a).expect("zstd").len() + hi.compress(b).expect("zstd").len();
    let ways = [
        "the store's: each object's two planes, one frame each",
        "each object as one frame, level -5",
        "each object as one frame, level 1",
        "16 objects' planes together, one frame per plane",
    ];
    for (k, name) in ways.iter().enumerate() {
        let t = Instant::now();
        let stored: usize = match k {
            0 => pixels.iter().map(|x| {
                let (a, b) = x.split_at(x.len() / 2);
                two_frames(a, b)
            }).sum(),
            1 => pixels.iter().map(|x| one.compress(x).expect("zstd").len()).sum(),
            2 => pixels.iter().map(|x| level1.compress(x).expect("zstd").len()).sum(),
            _ => pixels.chunks(16).map(|ch| {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for x in ch {
                    let (p, q) = x.split_at(x.len() / 2);
                    a.extend_from_slice(p);
                    b.extend_from_slice(q);
                }
                two_frames(&a, &b)
            }).sum(),
        };
        let s = t.elapsed().as_secs_f64();
        println!("{name:55} {:7.1} ms  {:5.1}% of raw  {:5.0} MB/s", s * 1e3, 100.0 * stored as f64 / raw as f64, raw as f64 / s / 1e6);
    }
}
