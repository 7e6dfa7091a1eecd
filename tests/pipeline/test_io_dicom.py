"""DICOM series reading: orientation, slice order, rescale, spacing and folder hygiene."""
import numpy as np
import pydicom
import pytest
from markers import marker_phantom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from xpgan.pipeline.ct.discover import discover_ct
from xpgan.pipeline.ct.readers import probe_ct, read_ct
from xpgan.pipeline.synth.writers import DICOM_ORIENTATIONS, write_dicom_series, write_nifti

SPACING = (2.5, 0.75, 0.5)  # (sd, sh, sw) mm, anisotropic on purpose


@pytest.fixture(scope="module")
def phantom():
    return marker_phantom((8, 9, 10), seed=3)


@pytest.mark.parametrize("slice_order", ["ascending", "descending", "shuffled"])
@pytest.mark.parametrize("orientation", sorted(DICOM_ORIENTATIONS))
def test_every_orientation_and_order_reads_back_canonical(tmp_path, phantom, orientation, slice_order):
    write_dicom_series(tmp_path, phantom, SPACING, orientation=orientation, slice_order=slice_order, seed=5)
    vol = read_ct(tmp_path)
    np.testing.assert_array_equal(vol.hu, phantom)
    np.testing.assert_allclose(vol.spacing, SPACING, atol=1e-5)
    assert vol.kind == "dicom" and vol.hu.dtype == np.float32 and vol.hu.flags.c_contiguous


@pytest.mark.parametrize("orientation", ["axial", "axial_flipped", "coronal", "sagittal"])
def test_written_files_follow_dicom_patient_coordinates(tmp_path, phantom, orientation):
    # Checks the writer against the standard, without our reader: pixel (r, c) of a slice lies at
    # IPP + c * PixelSpacing[1] * row_dir + r * PixelSpacing[0] * col_dir in LPS mm, and canonical voxel
    # (i, j, k) lies at (k * sw, j * sh, -i * sd) (origin 0).
    sd, sh, sw = SPACING
    for path in write_dicom_series(tmp_path, phantom, SPACING, orientation=orientation):
        ds = pydicom.dcmread(path)
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        ipp = np.array(ds.ImagePositionPatient, dtype=float)
        ps = np.array(ds.PixelSpacing, dtype=float)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        for r in range(ds.Rows):
            for c in range(ds.Columns):
                x, y, z = ipp + c * ps[1] * iop[:3] + r * ps[0] * iop[3:]
                i, j, k = (int(round(v)) for v in (-z / sd, y / sh, x / sw))
                assert hu[r, c] == phantom[i, j, k]


def test_standard_axial_slice_layout(tmp_path, phantom):
    # Standard axial (IOP 1,0,0,0,1,0): columns run to the patient's left, rows to posterior, and the
    # most superior slice (highest z) is canonical slice 0.
    paths = write_dicom_series(tmp_path, phantom, SPACING, orientation="axial", slice_order="shuffled")
    top = max(paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    ds = pydicom.dcmread(top)
    np.testing.assert_array_equal(ds.pixel_array.astype(np.float32) + float(ds.RescaleIntercept), phantom[0])


def test_ap_mean_shows_head_at_top_and_right_on_image_left(tmp_path, phantom):
    write_dicom_series(tmp_path, phantom, SPACING, orientation="sagittal", slice_order="descending")
    ap = read_ct(tmp_path).hu.mean(axis=1)  # [d, w]
    assert ap[0:2, 0:3].min() == 2000
    assert ap[0:2, -3:].max() < 2000 and ap[-2:, 0:3].max() < 2000


def test_rescale_slope_and_intercept_are_applied(tmp_path, phantom):
    hu = phantom / 2  # halves: exact with slope 0.5
    write_dicom_series(tmp_path, hu, SPACING, rescale_slope=0.5, rescale_intercept=-1000.0, signed=True)
    stored = [pydicom.dcmread(p).pixel_array for p in sorted(tmp_path.iterdir())]
    assert stored[0].dtype == np.int16 and max(s.max() for s in stored) == (1000 + 1000) * 2
    np.testing.assert_array_equal(read_ct(tmp_path).hu, hu)


def test_unsigned_and_signed_pixels_give_the_same_volume(tmp_path, phantom):
    write_dicom_series(tmp_path / "u", phantom, SPACING, rescale_intercept=-1024.0, signed=False)
    write_dicom_series(tmp_path / "s", phantom, SPACING, rescale_intercept=0.0, signed=True)
    assert probe_ct(tmp_path / "u").dtype == np.uint16 and probe_ct(tmp_path / "s").dtype == np.int16
    np.testing.assert_array_equal(read_ct(tmp_path / "u").hu, read_ct(tmp_path / "s").hu)


def test_slice_spacing_comes_from_positions_not_slice_thickness(tmp_path, phantom):
    for path in write_dicom_series(tmp_path, phantom, SPACING):
        ds = pydicom.dcmread(path)
        ds.SliceThickness = "1.0"  # thick/thin reconstructions often overlap: the gap is what counts
        ds.save_as(path)
    assert read_ct(tmp_path).spacing[0] == pytest.approx(SPACING[0])


def test_extra_files_are_skipped(tmp_path, phantom):
    write_dicom_series(tmp_path, phantom, SPACING, slice_order="shuffled")
    (tmp_path / "README").write_text("exported by a scanner\n")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    _write_non_image_dicom(tmp_path / "SR0001.dcm")
    np.testing.assert_array_equal(read_ct(tmp_path).hu, phantom)


def test_probe_matches_read_without_pixel_data(tmp_path, phantom):
    write_dicom_series(tmp_path, phantom, SPACING, orientation="coronal")
    vol = read_ct(tmp_path)
    for path in tmp_path.iterdir():  # cut the pixel data short: only a reader of pixels notices
        data = path.read_bytes()
        path.write_bytes(data[:-20])
    head = probe_ct(tmp_path)
    assert head.kind == "dicom" and head.shape == vol.hu.shape
    np.testing.assert_allclose(head.spacing, vol.spacing)


def test_patient_id_is_kept_out_of_repr(tmp_path, phantom):
    write_dicom_series(tmp_path, phantom, SPACING, patient_id="SECRET-42", patient_name="Doe^Jane")
    vol = read_ct(tmp_path)
    assert vol.patient_id == "SECRET-42"
    assert "SECRET" not in repr(vol) and "Doe" not in repr(vol)


def test_series_folders_are_found(tmp_path, phantom):
    write_dicom_series(tmp_path / "p2" / "series", phantom, SPACING)
    write_dicom_series(tmp_path / "p1", phantom, SPACING)
    write_nifti(tmp_path / "p1b.nii.gz", phantom, SPACING)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README").write_text("x")
    disc = discover_ct(tmp_path)
    assert [it.rel for it in disc.items] == ["p1", "p1b.nii.gz", "p2/series"]
    assert disc.skipped == [("docs/README", "not NIfTI or DICOM")]


def _write_non_image_dicom(path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)


def test_slightly_oblique_series_takes_closest_axes(tmp_path, phantom):
    # Rotate every slice's frame 10 degrees about the patient's z axis (an oblique in-plane orientation).
    t = np.deg2rad(10.0)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    for path in write_dicom_series(tmp_path, phantom, SPACING, orientation="axial_flipped", slice_order="shuffled"):
        ds = pydicom.dcmread(path)
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([rot @ iop[:3], rot @ iop[3:]])]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in rot @ np.array(ds.ImagePositionPatient, dtype=float)]
        ds.save_as(path)
    vol = read_ct(tmp_path)
    np.testing.assert_array_equal(vol.hu, phantom)
    np.testing.assert_allclose(vol.spacing, SPACING, atol=1e-5)


def test_preamble_less_files_are_read(tmp_path, phantom):
    # Old archives hold raw datasets (no 128-byte preamble, no file meta, implicit VR little endian).
    for path in write_dicom_series(tmp_path, phantom, SPACING, slice_order="shuffled"):
        ds = pydicom.dcmread(path)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True)
        assert path.read_bytes()[:2] == b"\x08\x00"
    assert [it.path for it in discover_ct(tmp_path).items] == [str(tmp_path.resolve())]
    np.testing.assert_array_equal(read_ct(tmp_path).hu, phantom)
