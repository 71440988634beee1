"""Make a fake CT series (4 slices, 40x36, fake patient) and the same two-segment mask as
DICOM segmentations written by highdicom in every form it writes: BINARY native and JPEG
2000, FRACTIONAL native, RLE, JPEG-LS and JPEG 2000, LABELMAP native (explicit and implicit
VR), RLE, JPEG-LS and JPEG 2000; and the mask as NIfTI (nibabel) in the series' geometry,
the reference. Usage: highdicom_segs.py OUT. Writes OUT/ct/*.dcm, OUT/segs/*.dcm,
OUT/truth.nii.gz and OUT/series.txt (the CT series UID)."""
import os, sys
import numpy as np, pydicom, highdicom as hd, nibabel as nib
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless, JPEGLSLossless, CTImageStorage

out = sys.argv[1]
rows, cols, n = 40, 36, 4
uid = lambda what: pydicom.uid.generate_uid(entropy_srcs=["cohort highdicom test", what])
study, series, frame_of_ref = uid("study"), uid("series"), uid("for")
os.makedirs(os.path.join(out, "ct"), exist_ok=True)
os.makedirs(os.path.join(out, "segs"), exist_ok=True)
src = []
for k in range(n):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid(f"sop {k}")
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_ref
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "FAKE0001", "FAKE^ONE", "", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "20200101", "000000", "", "", "1"
    ds.SeriesNumber, ds.InstanceNumber, ds.Modality, ds.Manufacturer = 1, k + 1, "CT", "cohort test"
    # Slices stored from the top down, so that the volume's slice order is not file order.
    ds.ImagePositionPatient = [-10.0, -20.0, 12.5 - 2.5 * k]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.6], 2.5
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, cols, 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, 1, "MONOCHROME2"
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = (np.arange(rows * cols, dtype=np.int16) + k).tobytes()
    ds.save_as(os.path.join(out, "ct", f"{k}.dcm"), enforce_file_format=True)
    src.append(ds)

# The mask, per source image (k, row, column): segment 1 on two slices, segment 2 on one,
# an asymmetric shape so that a flip or a transposition shows.
mask = np.zeros((n, rows, cols), dtype=np.uint8)
mask[1, 3:9, 2:7] = 1
mask[1, 20:22, 30:35] = 1
mask[2, 5:12, 4:10] = 2
mask[3, 0:2, 0:3] = 1
code = hd.sr.CodedConcept
descriptions = [
    hd.seg.SegmentDescription(segment_number=i + 1, segment_label=label, segmented_property_category=code("91723000", "SCT", "Anatomical Structure"), segmented_property_type=code(c, "SCT", m), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    for i, (label, c, m) in enumerate([("liver", "10200004", "Liver"), ("lesion", "52988006", "Lesion")])
]
forms = [
    ("binary", ExplicitVRLittleEndian, "BINARY"),
    ("binary_j2k", JPEG2000Lossless, "BINARY"),
    ("fractional", ExplicitVRLittleEndian, "FRACTIONAL"),
    ("fractional_rle", RLELossless, "FRACTIONAL"),
    ("fractional_jls", JPEGLSLossless, "FRACTIONAL"),
    ("fractional_j2k", JPEG2000Lossless, "FRACTIONAL"),
    ("labelmap", ExplicitVRLittleEndian, "LABELMAP"),
    ("labelmap_implicit", ImplicitVRLittleEndian, "LABELMAP"),
    ("labelmap_rle", RLELossless, "LABELMAP"),
    ("labelmap_jls", JPEGLSLossless, "LABELMAP"),
    ("labelmap_j2k", JPEG2000Lossless, "LABELMAP"),
]
for name, ts, kind in forms:
    seg = hd.seg.Segmentation(
        source_images=src, pixel_array=mask, segmentation_type=kind, segment_descriptions=descriptions,
        series_instance_uid=uid(f"seg series {name}"), series_number=2, sop_instance_uid=uid(f"seg {name}"), instance_number=1,
        manufacturer="cohort test", manufacturer_model_name="highdicom", software_versions=hd.__version__, device_serial_number="1",
        transfer_syntax_uid=ts, max_fractional_value=200 if kind == "FRACTIONAL" else 1,
    )
    seg.save_as(os.path.join(out, "segs", f"{name}.dcm"))

# The reference: the mask as NIfTI on the series grid. Voxel (i, j, k) = (column, row,
# slice from the bottom) is at IPP(bottom) + i * 0.6 x + j * 0.7 y + k * 2.5 z (LPS); NIfTI
# is RAS.
data = mask[::-1].transpose(2, 1, 0)
lps = np.array([[0.6, 0, 0, -10.0], [0, 0.7, 0, -20.0], [0, 0, 2.5, 12.5 - 2.5 * (n - 1)], [0, 0, 0, 1]])
nib.save(nib.Nifti1Image(data, np.diag([-1, -1, 1, 1]) @ lps), os.path.join(out, "truth.nii.gz"))
open(os.path.join(out, "series.txt"), "w").write(series)
