//! Progress reporting without printing: the library calls a [`Progress`], the CLI draws it.

/// Receives progress of long operations. All methods have do-nothing defaults.
pub trait Progress: Sync {
    /// A new stage begins, with its total (in `unit`s), when known.
    fn stage(&self, _name: &str, _total: Option<u64>, _unit: Unit) {}
    fn inc(&self, _n: u64) {}
    fn finish_stage(&self) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Files,
    Bytes,
    Objects,
}

/// Progress that goes nowhere.
pub struct Silent;
impl Progress for Silent {}
