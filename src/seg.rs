//! TEMP compile placeholder, replaced by helper's module.
pub struct SegmentInfo { pub number: u16, pub label: String }
pub struct SegFrame { pub segment: u16, pub source_sop_uid: Option<String>, pub position: Option<[f64; 3]>, pub mask: Vec<u8> }
pub struct Seg { pub sop_uid: String, pub referenced_series_uid: Option<String>, pub rows: usize, pub columns: usize, pub segments: Vec<SegmentInfo>, pub frames: Vec<SegFrame> }
#[derive(Debug, thiserror::Error)]
pub enum SegError { #[error("x")] X }
pub fn read_seg(_bytes: &[u8]) -> Result<Seg, SegError> { Err(SegError::X) }
