"""prep drr's fused read + resize: resizing the stored voxels (any on-disk orientation, scaled) gives exactly
what resizing read_ct's float32 HU volume gives, and process_ct parses the header once."""
import nibabel as nib
import numpy as np
import pytest

from xpgan.pipeline.ct.readers import read_ct, read_ct_stored
from xpgan.pipeline.ct.resize import resize_volume
from xpgan.pipeline.synth.writers import write_nifti

SPACING = (2.5, 0.75, 0.5)  # (sd, sh, sw) mm


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(3)
    return np.round(rng.normal(-300, 400, size=(9, 20, 22))).astype(np.float32)  # [d, h, w] HU


@pytest.mark.parametrize("axcodes", ["IPL", "LPS", "RAS", "PSR", "SLA"])
@pytest.mark.parametrize("out_shape", [(5, 10, 11), (14, 8, 30), (9, 10, 22)])  # (9, ., 22): axes kept
def test_stored_voxels_resize_exactly_like_the_float_volume(tmp_path, volume, axcodes, out_shape):
    path = write_nifti(tmp_path / "v.nii.gz", volume, SPACING, axcodes=tuple(axcodes))
    ct = read_ct_stored(path)
    assert ct.data.dtype == np.int16 and not np.shares_memory(ct.data, volume)
    got, sp = resize_volume(ct.data, ct.spacing, out_shape, scale=ct.scale, offset=ct.offset)
    ref = read_ct(path)
    want, sp_want = resize_volume(ref.hu, ref.spacing, out_shape)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    assert sp == sp_want


def test_mirrored_axes_are_really_resampled_in_memory_order(tmp_path, volume):
    # Guards the test above: LPS files give views with mirrored axes, the case the fused kernels handle.
    path = write_nifti(tmp_path / "v.nii.gz", volume, SPACING, axcodes=("L", "P", "S"))
    ct = read_ct_stored(path)
    assert any(s < 0 for s in ct.data.strides) and ct.data[::-1].flags.c_contiguous and ct.data.dtype.isnative


def test_scaled_storage_converts_inside_the_first_pass(tmp_path, volume):
    path = write_nifti(tmp_path / "v.nii.gz", volume, SPACING, axcodes=("R", "A", "S"), scl_slope=0.5,
                       scl_inter=-1024.0)
    ct = read_ct_stored(path)
    assert (ct.scale, ct.offset) == (0.5, -1024.0)
    got, _ = resize_volume(ct.data, ct.spacing, (5, 10, 11), scale=ct.scale, offset=ct.offset)
    ref = read_ct(path)
    np.testing.assert_array_equal(got, resize_volume(ref.hu, ref.spacing, (5, 10, 11))[0])


def test_process_ct_parses_the_header_once(tmp_path, volume, monkeypatch):
    from xpgan.drr import ParallelGeometry
    from xpgan.pipeline.ct.prep_drr import DRRJob, process_ct

    path = write_nifti(tmp_path / "v.nii.gz", volume, SPACING, axcodes=("L", "P", "S"))
    calls = []
    real_load = nib.load
    monkeypatch.setattr(nib, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    job = DRRJob(shape=(4, 8, 8), geometry=ParallelGeometry(size=8).to_dict(), mu_water=0.02, backend="cpu",
                 memory_limit_bytes=10**9)
    out = process_ct(str(path), job=job)
    assert len(calls) == 1
    assert out["volume"].dtype == np.int16 and out["volume"].shape == (4, 8, 8)
