//! Generate a synthetic DICOM corpus with fake patients, for benchmarks and demos.
//!
//! `cargo run --release --example gen_corpus -- OUT ct 2000` writes 2,000 CT slices of
//! 512×512 16-bit (about 1 GB) as Patient/Study/Series folders; `... OUT small 20000` writes
//! 20,000 small instances (64×64, about 10 KB each); `... OUT demo 24` a tiny mixed set.

use std::fs;
use std::path::Path;

use cohort::dicom::synth::{synth_instance, SynthSpec, SynthSyntax};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: gen_corpus OUT (ct|small|demo) COUNT");
        std::process::exit(2);
    }
    let out = Path::new(&args[1]);
    let kind = args[2].as_str();
    let count: usize = args[3].parse().expect("COUNT must be a number");
    let per_series = match kind {
        "ct" => 100,
        "small" => 50,
        _ => 6,
    };
    for i in 0..count {
        let series_n = i / per_series;
        let patient = series_n / 2;
        let mut spec = SynthSpec::ct(patient, 0, series_n % 2, i % per_series);
        match kind {
            "ct" => {}
            "small" => {
                spec.rows = 64;
                spec.columns = 64;
            }
            "demo" => {
                spec.rows = 64;
                spec.columns = 64;
                if series_n % 2 == 1 {
                    spec.modality = "MR".into();
                }
            }
            other => {
                eprintln!("unknown corpus kind {other:?} (ct, small or demo)");
                std::process::exit(2);
            }
        }
        spec.syntax = SynthSyntax::ExplicitLE;
        let bytes = synth_instance(&spec);
        let dir = out.join(format!("{}/study{}/series{}", spec.patient_id, 0, series_n % 2));
        fs::create_dir_all(&dir).expect("create folder");
        fs::write(dir.join(format!("IM{:05}.dcm", i % per_series)), bytes).expect("write file");
    }
}
