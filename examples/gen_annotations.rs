//! Write the demo annotations of `examples/annotations/` for the demo data of
//! `examples/data/`: two readers' finding labels per CT series (CSV, they disagree on some),
//! and for each CT series a lesion mask per reader (NIfTI, on the series grid; reader b's
//! outline is one pixel wider).
//!
//! `cargo run --example gen_annotations -- examples/data examples/annotations`

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cohort::nifti::{write_nifti, Nifti, NiftiData};

fn dicom_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read folder") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            dicom_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "dcm") {
            out.push(p);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: gen_annotations DATA_DIR OUT_DIR");
        std::process::exit(2);
    }
    let (data, out) = (Path::new(&args[1]), Path::new(&args[2]));
    let mut files = Vec::new();
    dicom_files(data, &mut files);
    files.sort();
    // Series by folder, CT only.
    let mut series: BTreeMap<PathBuf, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for f in files {
        let bytes = fs::read(&f).expect("read");
        series.entry(f.parent().expect("folder").to_path_buf()).or_default().push((f.display().to_string(), bytes));
    }
    fs::create_dir_all(out.join("masks")).expect("create output");
    let mut a = String::from("series_uid,label\n");
    let mut b = String::from("series_uid,label\n");
    let mut n = 0;
    for (dir, files) in &series {
        let vol = cohort::volume::series_volume(files).expect("a series");
        let obj = dicom_object::from_reader(&files[0].1[128..]).ok();
        let modality = obj
            .as_ref()
            .and_then(|o| o.element_by_name("Modality").ok())
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let uid = obj
            .as_ref()
            .and_then(|o| o.element_by_name("SeriesInstanceUID").ok())
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .expect("SeriesInstanceUID");
        if modality != "CT" {
            continue;
        }
        // Labels: reader b disagrees on every third series.
        let la = if n % 2 == 0 { "nodule" } else { "normal" };
        let lb = if n % 3 == 2 { if la == "nodule" { "normal" } else { "nodule" } } else { la };
        a.push_str(&format!("{uid},{la}\n"));
        b.push_str(&format!("{uid},{lb}\n"));
        // Masks: an ellipse on the middle slices.
        let [nx, ny, nz] = vol.dims;
        for (reader, grow) in [("a", 0.0), ("b", 1.0)] {
            let mut m = vec![0u8; nx * ny * nz];
            for k in nz / 3..nz - nz / 3 {
                for y in 0..ny {
                    for x in 0..nx {
                        let dx = (x as f64 - nx as f64 * 0.55) / (nx as f64 * 0.12 + grow);
                        let dy = (y as f64 - ny as f64 * 0.45) / (ny as f64 * 0.09 + grow);
                        if dx * dx + dy * dy <= 1.0 {
                            m[k * nx * ny + y * nx + x] = 1;
                        }
                    }
                }
            }
            let nii = Nifti { dims: vol.dims, pixdim: vol.spacing, affine: vol.affine, data: NiftiData::U8(m) };
            let name = format!("lesion-{}-{reader}.nii.gz", dir.strip_prefix(data).expect("below data").display().to_string().replace('/', "-"));
            fs::write(out.join("masks").join(&name), write_nifti(&nii, true).expect("nifti")).expect("write mask");
            println!("{uid} {}", out.join("masks").join(&name).display());
        }
        n += 1;
    }
    fs::write(out.join("finding-reader-a.csv"), a).expect("write");
    fs::write(out.join("finding-reader-b.csv"), b).expect("write");
}
