//! TEMPORARY placeholder until the real module lands (same API).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DicomError(String);
pub enum Analysis { Dicom(DicomLayout), NotDicom { reason: String } }
pub fn analyze(_bytes: &[u8]) -> Analysis { Analysis::NotDicom { reason: "placeholder".into() } }
#[derive(Debug, Clone)]
pub struct DicomLayout { pub pixel: Option<PixelSpan>, pub summary: DicomSummary }
#[derive(Debug, Clone, Copy)]
pub struct PixelSpan { pub element_start: u64, pub value_start: u64, pub value_end: u64, pub encapsulated: bool, pub bits_allocated: Option<u16>, pub big_endian: bool }
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DicomSummary {
    pub patient_id: Option<String>, pub patient_name: Option<String>,
    pub study_uid: Option<String>, pub series_uid: Option<String>,
    pub sop_instance_uid: Option<String>, pub sop_class_uid: Option<String>,
    pub modality: Option<String>, pub transfer_syntax: Option<String>,
    pub rows: Option<u32>, pub columns: Option<u32>, pub number_of_frames: Option<u32>,
    pub instance_number: Option<i64>,
}
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttributeChange { pub tag: String, pub keyword: String, pub path: String, pub old: Option<String>, pub new: Option<String> }
pub fn diff_headers(_old: &[u8], _new: &[u8]) -> Result<Vec<AttributeChange>, DicomError> { Ok(vec![]) }
