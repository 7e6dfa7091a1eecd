"""Bad inputs give InputError with the path and a one-line reason (no other exception types)."""
import gzip

import nibabel as nib
import numpy as np
import pydicom
import pytest
from markers import marker_phantom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from xpgan.errors import InputError
from xpgan.pipeline.ct.readers import MemoryLimitError, probe_ct, read_ct
from xpgan.pipeline.synth.writers import write_dicom_series, write_nifti

SPACING = (2.0, 0.8, 0.8)


@pytest.fixture(scope="module")
def phantom():
    return marker_phantom((6, 7, 8), seed=4)


def _refused(path, *words, probe=True):
    """read_ct (and probe_ct, when the header alone shows the problem) refuse `path` naming it."""
    readers = (read_ct, probe_ct) if probe else (read_ct,)
    for reader in readers:
        with pytest.raises(InputError) as info:
            reader(path)
        msg = str(info.value)
        assert str(path) in msg and "\n" not in msg, msg
        for word in words:
            assert word in msg.lower(), msg


def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.nii.gz", "no such file")


def test_text_file_named_nii_gz(tmp_path):
    path = tmp_path / "fake.nii.gz"
    path.write_text("this is not an image\n")
    _refused(path, "nifti")


def test_gzipped_text_named_nii_gz(tmp_path):
    path = tmp_path / "fake2.nii.gz"
    path.write_bytes(gzip.compress(b"hello " * 100))
    _refused(path, "nifti")


def test_text_file_named_nii(tmp_path):
    path = tmp_path / "fake.nii"
    path.write_text("x" * 1000)
    _refused(path, "nifti")


def test_unknown_file_type(tmp_path):
    path = tmp_path / "scan.txt"
    path.write_text("hello")
    _refused(path, "not a nifti file")


def test_truncated_nii_gz(tmp_path):
    phantom = marker_phantom((20, 30, 40), seed=4)  # large enough that half the file holds the header
    path = write_nifti(tmp_path / "cut.nii.gz", phantom, SPACING)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert probe_ct(path).shape == phantom.shape  # the header is intact...
    _refused(path, "truncated", probe=False)  # ...the data is not


def test_truncated_uncompressed_nii(tmp_path, phantom):
    path = write_nifti(tmp_path / "cut.nii", phantom, SPACING)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    _refused(path, "truncated", probe=False)


@pytest.mark.parametrize("shape", [(8, 9), (8, 9, 1), (8, 1, 9)])
def test_2d_nifti(tmp_path, shape):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), path)
    _refused(path, "2d" if len(shape) == 3 else "3d")


def test_true_4d_nifti(tmp_path):
    path = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6, 3), np.int16), np.eye(4)), path)
    _refused(path, "3d image")


def test_degenerate_affine(tmp_path):
    path = tmp_path / "zero.nii"
    img = nib.Nifti1Image(np.zeros((6, 6, 6), np.int16), np.eye(4))
    img.set_qform(None)
    img.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code="scanner")
    nib.save(img, path)
    _refused(path, "affine")


def test_empty_folder(tmp_path):
    _refused(tmp_path, "no dicom images")


def test_folder_with_only_non_dicom_files(tmp_path):
    (tmp_path / "README").write_text("nothing here")
    (tmp_path / "notes.txt").write_text("nothing here either")
    _refused(tmp_path, "no dicom images")


def test_dicom_without_pixel_data(tmp_path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.save_as(tmp_path / "IM0001.dcm", enforce_file_format=True)
    _refused(tmp_path, "ct image without pixel data")  # names the file, IM0001.dcm


def test_single_dicom_file_is_refused(tmp_path, phantom):
    paths = write_dicom_series(tmp_path, phantom, SPACING)
    _refused(paths[0], "single dicom file")


def test_single_slice_series(tmp_path, phantom):
    paths = write_dicom_series(tmp_path, phantom, SPACING)
    for p in paths[1:]:
        p.unlink()
    _refused(tmp_path, "2d")


def test_mixed_series_uids(tmp_path, phantom):
    write_dicom_series(tmp_path, phantom, SPACING, series_uid="1.2.3.1", prefix="A")
    write_dicom_series(tmp_path, phantom, SPACING, series_uid="1.2.3.2", prefix="B", origin_mm=(0, 0, 100))
    _refused(tmp_path, "mixed series", "seriesinstanceuid")


def test_mixed_orientations(tmp_path, phantom):
    write_dicom_series(tmp_path, phantom, SPACING, series_uid="1.2.3", prefix="A")
    write_dicom_series(tmp_path, phantom, SPACING, series_uid="1.2.3", prefix="B", orientation="coronal",
                       origin_mm=(0, 0, 100))
    _refused(tmp_path, "mixed series", "imageorientationpatient")


def test_inconsistent_image_sizes(tmp_path, phantom):
    write_dicom_series(tmp_path, phantom, SPACING, series_uid="1.2.3", prefix="A")
    write_dicom_series(tmp_path, phantom[:, :5], SPACING, series_uid="1.2.3", prefix="B", origin_mm=(0, 0, 100))
    _refused(tmp_path, "inconsistent sizes")


def test_inconsistent_pixel_spacing(tmp_path, phantom):
    write_dicom_series(tmp_path, phantom, SPACING, series_uid="1.2.3", prefix="A")
    write_dicom_series(tmp_path, phantom, (2.0, 0.8, 0.9), series_uid="1.2.3", prefix="B", origin_mm=(0, 0, 100))
    _refused(tmp_path, "inconsistent sizes", "pixelspacing")


def test_duplicate_positions(tmp_path, phantom):
    write_dicom_series(tmp_path, phantom, SPACING, series_uid="1.2.3", prefix="A")
    write_dicom_series(tmp_path, phantom, SPACING, series_uid="1.2.3", prefix="B")
    _refused(tmp_path, "duplicate slice positions")


def test_missing_slice(tmp_path, phantom):
    paths = write_dicom_series(tmp_path, phantom, SPACING)
    paths[3].unlink()
    _refused(tmp_path, "uneven slice gaps")


def test_truncated_pixel_data(tmp_path, phantom):
    paths = write_dicom_series(tmp_path, phantom, SPACING)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-30])
    with pytest.raises(InputError) as info:
        read_ct(tmp_path)
    assert str(paths[2]) in str(info.value) and "\n" not in str(info.value)


def test_missing_orientation_tag(tmp_path, phantom):
    paths = write_dicom_series(tmp_path, phantom, SPACING)
    ds = pydicom.dcmread(paths[1])
    del ds.ImageOrientationPatient
    ds.save_as(paths[1])
    with pytest.raises(InputError, match="ImageOrientationPatient"):
        read_ct(tmp_path)


def _edit_all(paths, **values):
    for p in paths:
        ds = pydicom.dcmread(p)
        for key, value in values.items():
            setattr(ds, key, value)
        ds.save_as(p)


def test_non_ct_modality_series(tmp_path, phantom):
    paths = write_dicom_series(tmp_path, phantom, SPACING)
    _edit_all(paths, SOPClassUID="1.2.840.10008.5.1.4.1.1.4", Modality="MR")  # MR Image Storage
    _refused(tmp_path, "no ct images", "mr")


def test_enhanced_multiframe_ct(tmp_path, phantom):
    paths = write_dicom_series(tmp_path, phantom, SPACING)
    _edit_all(paths[:1], SOPClassUID="1.2.840.10008.5.1.4.1.1.2.1")
    with pytest.raises(InputError, match="multi-frame"):
        read_ct(tmp_path)


def test_gantry_tilted_series(tmp_path, phantom):
    paths = write_dicom_series(tmp_path, phantom, SPACING)
    for p in paths:  # 15 degrees of tilt: y shifts with z
        ds = pydicom.dcmread(p)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [f"{x:.4f}", f"{y + z * np.tan(np.deg2rad(15)):.4f}", f"{z:.4f}"]
        ds.save_as(p)
    _refused(tmp_path, "gantry tilt")


def test_memory_limit_refuses_from_the_header_before_reading(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((2000, 2000, 2000))
    hdr.set_sform(np.diag([0.5, 0.5, 0.5, 1.0]), code="scanner")
    path = tmp_path / "huge.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 1004)  # the header claims 16 GB; the data is not there
    with pytest.raises(MemoryLimitError) as info:
        read_ct(path, max_bytes=10**9)
    msg = str(info.value)
    assert str(path) in msg and "48.0 GB" in msg and "1.0 GB memory limit" in msg, msg  # 8e9 x (2 + 4)
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_memory_need_is_stored_bytes_plus_float32_per_voxel(tmp_path, phantom, dtype):
    path = tmp_path / "v.nii.gz"
    write_nifti(path, phantom, SPACING, dtype=dtype)
    need = phantom.size * (np.dtype(dtype).itemsize + 4)
    assert probe_ct(path).read_bytes == need
    np.testing.assert_array_equal(read_ct(path, max_bytes=need).hu, read_ct(path).hu)
    with pytest.raises(MemoryLimitError):
        read_ct(path, max_bytes=need - 1)


def test_memory_limit_bounds_a_dicom_series_by_its_files(tmp_path, phantom):
    folder = tmp_path / "series"
    write_dicom_series(folder, phantom, SPACING)
    on_disk = sum(f.stat().st_size for f in folder.iterdir())
    with pytest.raises(InputError, match="memory limit"):
        read_ct(folder, max_bytes=on_disk - 1)
    np.testing.assert_array_equal(read_ct(folder, max_bytes=on_disk + phantom.size * 6).hu, read_ct(folder).hu)
