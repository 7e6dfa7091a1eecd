"""backend="auto" falls back to the CPU (one warning, a note in the CT store) when the CUDA path fails;
backend="cuda" fails loudly; torch tensors in and out on the CPU; argument checks of tensors."""
import warnings

import numpy as np
import pytest
import torch

from xpgan.drr import (
    ConeGeometry,
    DRRArgumentError,
    ParallelGeometry,
    render,
    render_drr,
    render_drr_batch,
    render_drr_views,
    siddon_cuda,
)


class SimulatedCompileFailure(RuntimeError):
    pass


@pytest.fixture
def failing_gpu(monkeypatch):
    """A GPU that is present but whose CUDA path fails at compile/launch (numba-cuda + numpy 2.5 did this)."""
    def boom(*args, **kwargs):
        raise SimulatedCompileFailure("module 'numpy' has no attribute 'row_stack'")

    monkeypatch.setattr(render, "_FALLBACK", {})
    monkeypatch.setattr(render, "cuda_available", lambda: True)
    monkeypatch.setattr(render, "_cuda_usable", lambda: True)
    monkeypatch.setattr(siddon_cuda, "render_hu_cuda", boom)
    monkeypatch.setattr(siddon_cuda, "render_hu_torch", boom)


def _vol():
    return np.random.default_rng(3).integers(-1000, 1500, size=(6, 7, 8)).astype(np.int16)


def test_auto_falls_back_to_cpu_with_one_warning(failing_gpu):
    vol, g = _vol(), ConeGeometry(view="pa", sdd_mm=60.0, sid_mm=40.0, size=6)
    want = render_drr(vol, (1.0, 1.1, 0.9), g, backend="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = render_drr(vol, (1.0, 1.1, 0.9), g, backend="auto")
        again = render_drr_views(vol, (1.0, 1.1, 0.9), [g, g], backend="auto")
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "row_stack" in msgs[0] and "CPU" in msgs[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(again[1], want)
    assert "row_stack" in render.cuda_fallback_reason()
    assert render.resolve_backend("auto") == "cpu"


def test_cuda_backend_fails_loudly(failing_gpu):
    with pytest.raises(SimulatedCompileFailure):
        render_drr(_vol(), (1.0, 1.0, 1.0), ParallelGeometry(size=4), backend="cuda")
    assert render.cuda_fallback_reason() is None


def test_probe_backend_and_prep_store_note(failing_gpu, tmp_path):
    from xpgan.pipeline.ct.prep_drr import prep_drr
    from xpgan.pipeline.schema import open_store
    from xpgan.pipeline.synth.archives import ARCHIVE_SPACING_RANGE_MM, write_mosmed_archive

    write_mosmed_archive(tmp_path / "mosmed", 2, seed=1, shape=(8, 32, 32), workers=1)
    with pytest.warns(RuntimeWarning, match="rendering on the CPU"):
        s = prep_drr(str(tmp_path / "mosmed"), str(tmp_path / "ct.zarr"), shape=(8, 16, 16),
                     geometry=ConeGeometry(view="pa", size=16), backend="auto", workers=0, progress=False,
                     spacing_range_mm=ARCHIVE_SPACING_RANGE_MM)  # tiny phantoms have coarse voxels
    assert not s.failures
    attrs = open_store(tmp_path / "ct.zarr").attrs["xpgan"]
    assert attrs["backend"] == "auto"
    assert "CUDA path failed" in attrs["backend_note"] and "row_stack" in attrs["backend_note"]


def test_probe_backend_without_gpu_is_cpu(monkeypatch):
    monkeypatch.setattr(render, "_FALLBACK", {})
    monkeypatch.setattr(render, "cuda_available", lambda: False)
    assert render.probe_backend("auto") == ("cpu", None)
    assert render.probe_backend("cpu") == ("cpu", None)


def test_torch_tensors_in_and_out_on_cpu():
    vol = _vol()
    g = ConeGeometry(view="ap", sdd_mm=60.0, sid_mm=40.0, size=5)
    want = render_drr_batch(np.stack([vol, vol[:, ::-1].copy()]), (1.0, 1.0, 1.0), g, backend="cpu")
    t = torch.from_numpy(np.stack([vol, vol[:, ::-1].copy()]))
    got = render_drr_batch(t, (1.0, 1.0, 1.0), g, backend="cpu")
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device.type == "cpu"
    np.testing.assert_array_equal(got.numpy(), want)
    one = render_drr(t[0].double(), (1.0, 1.0, 1.0), g, backend="cpu", output="line_integral")
    np.testing.assert_allclose(one.numpy(), render_drr(vol, (1.0, 1.0, 1.0), g, backend="cpu",
                                                       output="line_integral"), rtol=1e-6)


def test_torch_tensor_argument_checks():
    g = ParallelGeometry(size=4)
    with pytest.raises(DRRArgumentError, match="3 dimensions"):
        render_drr(torch.zeros(2, 3), (1.0, 1.0, 1.0), g, backend="cpu")
    with pytest.raises(DRRArgumentError, match="real numbers"):
        render_drr(torch.zeros(2, 3, 4, dtype=torch.complex64), (1.0, 1.0, 1.0), g, backend="cpu")
    with pytest.raises(DRRArgumentError, match="empty"):
        render_drr_batch(torch.zeros(1, 0, 3, 4), (1.0, 1.0, 1.0), g, backend="cpu")
