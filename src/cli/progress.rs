//! Progress bars on stderr when it is a terminal; nothing when piped.

use std::io::IsTerminal;
use std::sync::Mutex;

use cohort::progress::{Progress, Unit};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Bars {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Bars {
        Bars { enabled: !quiet && std::io::stderr().is_terminal(), bar: Mutex::new(None) }
    }
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: Option<u64>, unit: Unit) {
        if !self.enabled {
            return;
        }
        let pb = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        let tmpl = match unit {
            Unit::Bytes => "{msg:>12} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            Unit::Files => "{msg:>12} [{bar:40}] {pos}/{len} files ({files_per_sec}, {eta})",
            Unit::Objects => "{msg:>12} [{bar:40}] {pos}/{len} objects ({eta})",
        };
        if let Ok(style) = ProgressStyle::with_template(tmpl) {
            // (indicatif's own {per_sec} shows four decimals: "507,301.2238/s".)
            let per_sec = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            };
            pb.set_style(style.with_key("files_per_sec", per_sec).progress_chars("=> "));
        }
        pb.set_message(name.to_string());
        *self.bar.lock().expect("bar lock") = Some(pb);
    }

    fn inc(&self, n: u64) {
        if let Some(pb) = self.bar.lock().expect("bar lock").as_ref() {
            pb.inc(n);
        }
    }

    fn finish_stage(&self) {
        if let Some(pb) = self.bar.lock().expect("bar lock").take() {
            pb.finish_and_clear();
        }
    }
}
