"""NIfTI reading: every on-disk orientation comes back as the canonical (I, P, L) array of docs/design.md."""
import nibabel as nib
import numpy as np
import pytest
from markers import marker_phantom

from xpgan.pipeline.ct.discover import discover_ct
from xpgan.pipeline.ct.readers import CTHeader, probe_ct, read_ct
from xpgan.pipeline.synth.writers import write_nifti

SPACING = (2.5, 0.75, 0.5)  # (sd, sh, sw) mm, anisotropic on purpose
AXCODES = ["IPL", "RAS", "LPS", "LAS", "PSR", "SRA", "ALI", "RPI"]


@pytest.fixture(scope="module")
def phantom():
    return marker_phantom((10, 12, 14), seed=1)


@pytest.mark.parametrize("axcodes", AXCODES)
def test_every_axcode_reads_back_canonical(tmp_path, phantom, axcodes):
    path = write_nifti(tmp_path / f"ct_{axcodes}.nii.gz", phantom, SPACING, axcodes=tuple(axcodes))
    vol = read_ct(path)
    np.testing.assert_array_equal(vol.hu, phantom)
    np.testing.assert_allclose(vol.spacing, SPACING, rtol=1e-6)
    assert vol.kind == "nifti" and vol.source == str(path)


def test_writer_really_changes_the_on_disk_layout(tmp_path, phantom):
    # Guards the test above: the files differ on disk, only the reader's reorientation makes them equal.
    a = np.asanyarray(nib.load(write_nifti(tmp_path / "a.nii", phantom, SPACING, axcodes=("R", "A", "S"))).dataobj)
    b = np.asanyarray(nib.load(write_nifti(tmp_path / "b.nii", phantom, SPACING, axcodes=("L", "P", "S"))).dataobj)
    assert a.shape == (14, 12, 10) and not np.array_equal(a, b)


def test_hand_made_ras_image_follows_the_convention(tmp_path, phantom):
    # Independent of our writer: a plain RAS+ image with a diagonal affine (x grows towards the patient's
    # right, y anterior, z superior), built from the canonical array by hand.
    sd, sh, sw = SPACING
    ras = np.ascontiguousarray(phantom[::-1, ::-1, ::-1].transpose(2, 1, 0))  # [x: L->R, y: P->A, z: I->S]
    img = nib.Nifti1Image(ras.astype(np.int16), np.diag([sw, sh, sd, 1.0]))
    nib.save(img, tmp_path / "ras.nii")
    vol = read_ct(tmp_path / "ras.nii")
    np.testing.assert_array_equal(vol.hu, phantom)
    # The superior-right rod: highest x (patient's right) and highest z (superior).
    assert ras[-1, 0, -1] == 2000 and vol.hu[0, 0, 0] == 2000


def test_ap_mean_shows_head_at_top_and_right_on_image_left(tmp_path, phantom):
    path = write_nifti(tmp_path / "ct.nii.gz", phantom, SPACING, axcodes=("L", "P", "S"))
    ap = read_ct(path).hu.mean(axis=1)  # [d, w]
    assert ap[0:2, 0:3].min() == 2000  # superior-right rod: top rows, left columns of the image
    assert ap[0:2, -3:].max() < 2000 and ap[-2:, 0:3].max() < 2000


def test_scl_slope_and_inter_are_applied(tmp_path, phantom):
    path = write_nifti(tmp_path / "scaled.nii.gz", phantom, SPACING, axcodes=("R", "A", "S"),
                       scl_slope=0.5, scl_inter=-1024.0)
    raw = nib.load(path).dataobj.get_unscaled()
    assert raw.max() == (2000 + 1024) * 2  # the stored values really are scaled
    np.testing.assert_array_equal(read_ct(path).hu, phantom)


def test_float_data_is_kept(tmp_path):
    hu = marker_phantom((6, 7, 8), seed=2) + np.float32(0.25)
    path = write_nifti(tmp_path / "f.nii", hu, SPACING, axcodes=("P", "S", "R"), dtype=np.float32)
    vol = read_ct(path)
    assert vol.hu.dtype == np.float32 and vol.hu.flags.c_contiguous
    np.testing.assert_array_equal(vol.hu, hu)


def test_oblique_affine_takes_closest_axes(tmp_path, phantom):
    path = write_nifti(tmp_path / "oblique.nii.gz", phantom, SPACING, axcodes=("R", "A", "S"), rotate_deg=30.0)
    vol = read_ct(path)
    np.testing.assert_array_equal(vol.hu, phantom)
    np.testing.assert_allclose(vol.spacing, SPACING, rtol=1e-5)  # column lengths, not their projections


def test_singleton_fourth_dimension_is_read_as_3d(tmp_path, phantom):
    path = write_nifti(tmp_path / "4d.nii.gz", phantom, SPACING, axcodes=("L", "A", "S"), singleton_4d=True)
    assert nib.load(path).shape == (14, 12, 10, 1)
    np.testing.assert_array_equal(read_ct(path).hu, phantom)


def test_probe_matches_read(tmp_path, phantom):
    path = write_nifti(tmp_path / "p.nii.gz", phantom, SPACING, axcodes=("P", "S", "R"))
    head = probe_ct(path)
    vol = read_ct(path)
    assert isinstance(head, CTHeader) and head.kind == "nifti"
    assert head.shape == vol.hu.shape == (10, 12, 14)
    np.testing.assert_allclose(head.spacing, vol.spacing)
    assert head.dtype == np.int16 and head.nbytes_float32 == vol.hu.nbytes


def test_probe_reads_no_pixel_data(tmp_path, phantom):
    path = write_nifti(tmp_path / "cut.nii", phantom, SPACING)
    data = path.read_bytes()
    path.write_bytes(data[:400])  # header (352 bytes) and a few voxels only
    assert probe_ct(path).shape == (10, 12, 14)


def test_discovery_is_sorted_and_finds_nifti(tmp_path, phantom):
    for name in ["b/study_2.nii.gz", "a/study_1.nii", "a/notes.txt", ".hidden/x.nii.gz", "c/study_3.nii.gz"]:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("txt"):
            p.write_text("hello")
        else:
            write_nifti(p, phantom, SPACING)
    disc = discover_ct(tmp_path)
    assert [it.rel for it in disc.items] == ["a/study_1.nii", "b/study_2.nii.gz", "c/study_3.nii.gz"]
    assert disc.skipped == [(".hidden", "hidden"), ("a/notes.txt", "not NIfTI or DICOM")]


def _nibabel_reference(path):
    """Slow, plain reference: nibabel's scaled float64 data brought to RAS+ by as_closest_canonical, then
    to (I, P, L) by hand: reverse every axis (-> L, P, I) and reverse the axis order (-> I, P, L)."""
    img = nib.as_closest_canonical(nib.load(path))
    ras = img.get_fdata()  # [x: L->R, y: P->A, z: I->S]
    if ras.ndim == 4:
        ras = ras[..., 0]
    return ras[::-1, ::-1, ::-1].transpose(2, 1, 0).astype(np.float32)  # [z: S->I, y: A->P, x: R->L]


@pytest.mark.parametrize("variant", ["int16", "big_endian", "uint8_scaled", "float64", "nifti2", "plain_nii"])
def test_matches_plain_nibabel_reference(tmp_path, phantom, variant):
    axcodes = ("L", "P", "S")
    suffix = ".nii" if variant == "plain_nii" else ".nii.gz"
    path = tmp_path / f"{variant}{suffix}"
    if variant == "uint8_scaled":
        write_nifti(path, phantom, SPACING, axcodes=axcodes, dtype=np.uint8, scl_slope=16.0, scl_inter=-1024.0)
    elif variant == "float64":
        write_nifti(path, phantom + 0.5, SPACING, axcodes=axcodes, dtype=np.float64)
    else:
        write_nifti(path, phantom, SPACING, axcodes=axcodes)
    if variant in ("big_endian", "nifti2"):
        img = nib.load(path)
        data = np.asanyarray(img.dataobj).astype(">i2" if variant == "big_endian" else np.int16)
        klass = nib.Nifti2Image if variant == "nifti2" else nib.Nifti1Image
        new = klass(data, img.affine)
        if variant == "big_endian":
            new = nib.Nifti1Image(data, img.affine, nib.Nifti1Header(endianness=">"))
        nib.save(new, path)
        assert (nib.load(path).header.endianness == ">") == (variant == "big_endian")
        assert isinstance(nib.load(path), nib.Nifti2Image) == (variant == "nifti2")
    np.testing.assert_array_equal(read_ct(path).hu, _nibabel_reference(path))
