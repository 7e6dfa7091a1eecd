"""CXR readers: PNG/JPEG (8/16-bit, RGB), DICOM (MONOCHROME1/2, window, rescale, 16-bit), letterbox."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xpgan.errors import InputError
from xpgan.pipeline.cxr.readers import content_box, letterbox, read_cxr, read_cxr_depth, write_dicom_cxr


def _anatomy(h=48, w=40, seed=0):
    """A smooth synthetic 'chest': bright body, dark lungs, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    body = np.exp(-((xx - 0.5) ** 2 / 0.08 + (yy - 0.5) ** 2 / 0.15))
    lungs = (np.exp(-(((xx - 0.33) ** 2 + (yy - 0.45) ** 2) / 0.01))
             + np.exp(-(((xx - 0.67) ** 2 + (yy - 0.45) ** 2) / 0.01)))
    img = np.clip(0.8 * body - 0.4 * lungs + 0.02 * rng.standard_normal((h, w)), 0, 1)
    return img


def test_png_8bit_is_scaled_by_255(tmp_path):
    a = (np.arange(30 * 20).reshape(30, 20) % 256).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    x = read_cxr(tmp_path / "a.png")
    assert x.dtype == np.float32 and x.shape == (30, 20)
    np.testing.assert_allclose(x, a / 255.0, atol=1e-7)


def test_png_16bit_keeps_every_level(tmp_path):
    a = (30000 + np.arange(40 * 50).reshape(40, 50)).astype(np.uint16)  # 2000 distinct adjacent levels
    Image.fromarray(a).save(tmp_path / "a16.png")
    x = read_cxr(tmp_path / "a16.png")
    np.testing.assert_allclose(x, a / 65535.0, rtol=0, atol=1e-7)
    assert len(np.unique(x)) == a.size


def test_rgb_png_becomes_luma_grey(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(16, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    x = read_cxr(tmp_path / "rgb.png")
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_rgba_opaque_is_luma_and_transparent_is_refused(tmp_path):
    rgba = np.full((10, 10, 4), 200, dtype=np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "opaque.png")
    np.testing.assert_allclose(read_cxr(tmp_path / "opaque.png"), 200 / 255.0, atol=1e-6)
    rgba[:5, :, 3] = 0  # transparent top half
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    with pytest.raises(InputError, match=r"50\.0% of the image is transparent") as info:
        read_cxr(tmp_path / "rgba.png")
    assert str(tmp_path / "rgba.png") in str(info.value)
    la = np.stack([np.full((6, 6), 90, np.uint8), np.full((6, 6), 128, np.uint8)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    with pytest.raises(InputError, match=r"100\.0% of the image is transparent"):
        read_cxr(tmp_path / "la.png")


@pytest.mark.parametrize("vmax,bits", [(200, 8), (1000, 10), (4000, 12), (4095, 12), (4096, 14), (16000, 14),
                                       (16384, 16), (65535, 16)])
def test_16bit_png_depth_from_its_maximum(tmp_path, vmax, bits):
    a = np.linspace(0, vmax, 30 * 20).reshape(30, 20).round().astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "d.png")
    x, got = read_cxr_depth(tmp_path / "d.png")
    assert got == bits
    np.testing.assert_allclose(x, a / (2.0 ** bits - 1), rtol=0, atol=1e-7)


def test_12bit_png_is_not_stored_nearly_black(tmp_path):
    a = np.linspace(0, 4095, 64 * 64).reshape(64, 64).round().astype(np.uint16)  # a 12-bit detector's values
    Image.fromarray(a).save(tmp_path / "p12.png")
    assert read_cxr(tmp_path / "p12.png").max() == 1.0  # not 4095 / 65535 = 0.0625


def test_dicom_depth_is_bits_stored(tmp_path):
    write_dicom_cxr(tmp_path / "b12.dcm", np.full((8, 8), 1000, np.uint16), bits_stored=12)
    assert read_cxr_depth(tmp_path / "b12.dcm")[1] == 12


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1)])
def test_tiny_image_says_too_small(tmp_path, shape):
    Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match=rf"image too small: {shape[0]}x{shape[1]} pixels \(the minimum is 2x2\)"):
        read_cxr(tmp_path / "tiny.png")


def test_jpeg_grey_close_to_source(tmp_path):
    img = _anatomy(64, 64)
    Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    x = read_cxr(tmp_path / "a.jpg")
    assert x.shape == (64, 64)
    assert np.abs(x - img).mean() < 0.02


def test_dicom_monochrome1_has_monochrome2_polarity(tmp_path):
    img = _anatomy()
    m2 = np.round(img * 4000 + 1000).astype(np.uint16)  # 12-bit-ish values in 16-bit words
    m1 = (65535 - m2).astype(np.uint16)  # same anatomy, inverted storage
    write_dicom_cxr(tmp_path / "m2.dcm", m2, photometric="MONOCHROME2", window=(3000, 4000))
    write_dicom_cxr(tmp_path / "m1.dcm", m1, photometric="MONOCHROME1", window=(65535 - 3000, 4000))
    x2, x1 = read_cxr(tmp_path / "m2.dcm"), read_cxr(tmp_path / "m1.dcm")
    np.testing.assert_allclose(x1, x2, atol=1e-3)
    assert np.corrcoef(x2.ravel(), img.ravel())[0, 1] > 0.99  # bright where the anatomy is bright


def test_dicom_window_maps_exactly_to_unit_range(tmp_path):
    stored = np.array([[0, 1000, 1500, 2000, 2500, 3000, 60000]] * 3, dtype=np.uint16)
    write_dicom_cxr(tmp_path / "w.dcm", stored, window=(2000.5, 1001))  # LINEAR: [1500, 2500] -> [0, 1]
    x = read_cxr(tmp_path / "w.dcm")[0]
    np.testing.assert_allclose(x, [0, 0, 0, 0.5, 1, 1, 1], atol=1e-6)


def test_dicom_rescale_applied_before_window(tmp_path):
    stored = np.array([[0, 100, 200, 300]] * 2, dtype=np.uint16)
    # modality values = 2 * stored - 100 -> [-100, 100, 300, 500]; LINEAR window (200.5, 201) = [100, 300]
    write_dicom_cxr(tmp_path / "r.dcm", stored, rescale=(2.0, -100.0), window=(200.5, 201))
    x = read_cxr(tmp_path / "r.dcm")[0]
    np.testing.assert_allclose(x, [0, 0, 1, 1], atol=1e-6)
    write_dicom_cxr(tmp_path / "r2.dcm", stored, rescale=(2.0, -100.0), window=(200.5, 401))
    np.testing.assert_allclose(read_cxr(tmp_path / "r2.dcm")[0], [0, 0.25, 0.75, 1], atol=1e-6)  # [0, 400]


def test_dicom_16bit_precision_kept_without_voi(tmp_path):
    # 16-bit stored values spanning the full range; no window: percentile 0.5/99.5 stretch.
    stored = np.linspace(0, 65535, 200 * 200).round().astype(np.uint16).reshape(200, 200)
    write_dicom_cxr(tmp_path / "p.dcm", stored)
    x = read_cxr(tmp_path / "p.dcm").astype(np.float64)
    lo, hi = np.percentile(stored.astype(np.float64), [0.5, 99.5], method="inverted_cdf")
    np.testing.assert_allclose(x, np.clip((stored - lo) / (hi - lo), 0, 1), atol=1e-6)
    inner = x[(x > 0) & (x < 1)]
    assert len(np.unique(inner)) > 30000  # far more than 256 grey levels survive


def test_dicom_signed_16bit(tmp_path):
    stored = np.array([[-2000, -1000, 0, 1000, 2000]] * 2, dtype=np.int16)
    write_dicom_cxr(tmp_path / "s.dcm", stored, window=(0.5, 2001))
    np.testing.assert_allclose(read_cxr(tmp_path / "s.dcm")[0], [0, 0, 0.5, 1, 1], atol=1e-6)


def test_dicom_multiframe_refused(tmp_path):
    write_dicom_cxr(tmp_path / "mf.dcm", np.zeros((2, 8, 8), dtype=np.uint16))
    with pytest.raises(InputError, match="multi-frame"):
        read_cxr(tmp_path / "mf.dcm")


def test_bad_files_raise_input_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)
    for name in ("bad.png", "bad.dcm", "missing.png"):
        with pytest.raises(InputError) as info:
            read_cxr(tmp_path / name)
        assert name in str(info.value)


def test_letterbox_keeps_aspect_centred_on_black():
    img = np.ones((100, 50), dtype=np.float32)
    out = letterbox(img, 64)
    assert out.shape == (64, 64) and out.dtype == np.float32
    top, left, h, w = content_box((100, 50), 64)
    assert (top, left, h, w) == (0, 16, 64, 32)
    np.testing.assert_allclose(out[:, left:left + w], 1.0, atol=1e-6)  # constant stays constant
    assert out[:, :left].max() == 0 and out[:, left + w:].max() == 0


def test_letterbox_antialiases_stripes():
    # 1-pixel black/white stripes shrunk 8x average to grey; naive sub-sampling would give 0 or 1.
    img = np.zeros((512, 512), dtype=np.float32)
    img[:, ::2] = 1.0
    out = letterbox(img, 64)
    np.testing.assert_allclose(out[4:-4, 4:-4], 0.5, atol=0.02)


def test_letterbox_no_overshoot_and_identity_at_size():
    rng = np.random.default_rng(3)
    img = (rng.random((300, 200)) > 0.5).astype(np.float32)
    out = letterbox(img, 128)
    assert out.min() >= 0.0 and out.max() <= 1.0
    same = rng.random((64, 64)).astype(np.float32)
    np.testing.assert_array_equal(letterbox(same, 64), same)


def test_dicom_rle_compressed_reads_like_uncompressed(tmp_path):
    import pydicom
    from pydicom.uid import RLELossless

    stored = np.round(_anatomy() * 60000).astype(np.uint16)
    write_dicom_cxr(tmp_path / "raw.dcm", stored, window=(30000, 60000))
    ds = pydicom.dcmread(tmp_path / "raw.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    np.testing.assert_array_equal(read_cxr(tmp_path / "rle.dcm"), read_cxr(tmp_path / "raw.dcm"))


def test_dicom_without_decoder_or_pixels_is_input_error(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    write_dicom_cxr(tmp_path / "a.dcm", np.zeros((8, 8), np.uint16))
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8 not really a jpeg \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpegls.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="decode"):
        read_cxr(tmp_path / "jpegls.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="without pixel data"):
        read_cxr(tmp_path / "nopix.dcm")


def test_dicom_voi_lut_sequence_scaled_by_lut_range(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    stored = np.arange(100, dtype=np.uint16).reshape(10, 10) + 50  # 50..149
    write_dicom_cxr(tmp_path / "v.dcm", stored)
    ds = pydicom.dcmread(tmp_path / "v.dcm")
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [200, 0, 16])  # 200 entries from stored value 0
    item.add_new("LUTData", "US", [min(4000, 40 * max(0, v - 50)) for v in range(200)])  # ramp on 50..150
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(tmp_path / "lut.dcm", enforce_file_format=True)
    x = read_cxr(tmp_path / "lut.dcm")
    np.testing.assert_allclose(x, (stored - 50) * 40 / 4000.0, atol=1e-6)
