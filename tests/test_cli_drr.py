"""`xpgan drr render` and `xpgan bench drr` through typer's CliRunner, including bad input."""
import gzip

import numpy as np
import pytest
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.pipeline.synth.writers import write_nifti

runner = CliRunner()


def marker_volume():
    hu = np.full((20, 16, 24), -1000.0, dtype=np.float32)  # [d, h, w]: S->I, A->P, R->L
    hu[4:10, 3:13, 3:21] = 0.0                             # a water body
    hu[1:4, 6:9, 1:4] = 2500.0                             # dense marker: superior, patient right
    return hu


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("axcodes", [("I", "P", "L"), ("R", "A", "S"), ("L", "P", "S")])
@pytest.mark.parametrize("geometry, view", [("cone", "pa"), ("cone", "ap"), ("parallel", None)])
def test_marker_at_right_superior_lands_top_left_through_reader_and_cli(tmp_path, axcodes, geometry, view):
    ct = write_nifti(tmp_path / "ct.nii.gz", marker_volume(), (2.0, 2.5, 1.5), axcodes=axcodes)
    out = tmp_path / "drr.npy"
    cone = ["--view", view, "--sdd", 500, "--sid", 400] if geometry == "cone" else []
    res = run("drr", "render", ct, out, "--geometry", geometry, *cone, "--size", 32, "--backend", "cpu")
    assert res.exit_code == 0, res.output
    img = np.load(out)
    assert img.dtype == np.float32 and img.shape == (32, 32)
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert r < 8 and c < 8


@pytest.mark.parametrize("command", ["render", "prep"])
@pytest.mark.parametrize("cone_option", [["--sdd", "900"], ["--sid", "700"], ["--view", "pa"]])
def test_cone_options_with_parallel_geometry_are_refused_by_both_commands(tmp_path, command, cone_option):
    ct = write_nifti(tmp_path / "ct.nii.gz", marker_volume(), (2.0, 2.5, 1.5))
    args = (["drr", "render", ct, tmp_path / "o.npy"] if command == "render"
            else ["prep", "drr", ct.parent, tmp_path / "o.zarr", "--workers", "0"])
    res = run(*args, "--geometry", "parallel", *cone_option, "--size", 32, "--backend", "cpu")
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: --view, --sdd and --sid apply to the cone geometry only (parallel rays run anterior to posterior)"]
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.zarr").exists()


def test_png_output_is_8_bit(tmp_path):
    from PIL import Image

    ct = write_nifti(tmp_path / "ct.nii.gz", marker_volume(), (2.0, 2.5, 1.5))
    res = run("drr", "render", ct, tmp_path / "drr.png", "--size", 24, "--backend", "cpu", "--output", "line-integral")
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(tmp_path / "drr.png"))
    assert img.dtype == np.uint8 and img.shape == (24, 24) and img.max() == 255


def assert_one_line_error(res, *fragments):
    assert res.exit_code != 0
    text = res.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error:")
    for f in fragments:
        assert f in text, text


def test_missing_file_is_one_line_error(tmp_path):
    assert_one_line_error(run("drr", "render", tmp_path / "nope.nii.gz", tmp_path / "o.npy", "--backend", "cpu"),
                          "nope.nii.gz")


def test_non_image_file_is_one_line_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a CT")
    assert_one_line_error(run("drr", "render", bad, tmp_path / "o.npy", "--backend", "cpu"), "notes.txt")


def test_truncated_nifti_is_one_line_error(tmp_path):
    ct = write_nifti(tmp_path / "ct.nii.gz", marker_volume(), (2.0, 2.5, 1.5))
    raw = gzip.decompress(ct.read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2])[:-20])
    assert_one_line_error(run("drr", "render", tmp_path / "cut.nii.gz", tmp_path / "o.npy", "--backend", "cpu"),
                          "cut.nii.gz")


def test_2d_image_is_one_line_error(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.int16), np.eye(4)), str(tmp_path / "flat.nii"))
    assert_one_line_error(run("drr", "render", tmp_path / "flat.nii", tmp_path / "o.npy", "--backend", "cpu"),
                          "flat.nii")


@pytest.mark.parametrize("args, fragment", [(["--geometry", "fan"], "--geometry must be one of cone, parallel"),
                                            (["--backend", "gpu"], "--backend must be one of auto, cpu, cuda"),
                                            (["--sid", "5"], "source inside the volume")])
def test_bad_options_are_one_line_errors(tmp_path, args, fragment):
    ct = write_nifti(tmp_path / "ct.nii.gz", marker_volume(), (2.0, 2.5, 1.5))
    assert_one_line_error(run("drr", "render", ct, tmp_path / "o.npy", "--sdd", 600, *args), fragment)


def test_bad_output_suffix_is_one_line_error(tmp_path):
    assert_one_line_error(run("drr", "render", tmp_path / "ct.nii.gz", tmp_path / "o.jpg"), ".npy or .png")


def test_bench_drr_prints_figures():
    res = run("bench", "drr", "--depth", 8, "--height", 16, "--width", 16, "--size", 16, "--repeats", 2)
    assert res.exit_code == 0, res.output
    assert "DRRs/s" in res.output and "ns per step per core" in res.output and "JIT" in res.output


def test_folder_without_images_is_one_line_error(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "readme.txt").write_text("no DICOM here")
    assert_one_line_error(run("drr", "render", folder, tmp_path / "o.npy", "--backend", "cpu"), "series")


def test_dicom_series_renders_like_nifti(tmp_path):
    from xpgan.pipeline.synth.writers import write_dicom_series

    hu = marker_volume()
    write_dicom_series(tmp_path / "dcm", hu, (2.0, 2.5, 1.5))
    write_nifti(tmp_path / "ct.nii.gz", hu, (2.0, 2.5, 1.5))
    for src, out in ((tmp_path / "dcm", tmp_path / "a.npy"), (tmp_path / "ct.nii.gz", tmp_path / "b.npy")):
        res = run("drr", "render", src, out, "--size", 24, "--backend", "cpu", "--output", "line-integral")
        assert res.exit_code == 0, res.output
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), rtol=1e-5, atol=1e-6)


def test_pose_options_render_the_posed_geometry(tmp_path):
    from xpgan.drr import ConeGeometry, render_drr
    from xpgan.pipeline.ct.readers import read_ct

    ct = write_nifti(tmp_path / "ct.nii.gz", marker_volume(), (2.0, 2.5, 1.5))
    out = tmp_path / "posed.npy"
    res = run("drr", "render", ct, out, "--size", 24, "--backend", "cpu", "--sdd", 500, "--sid", 400,
              "--yaw", 7.5, "--pitch", -3, "--roll", 10, "--offset", "1,-2,3")
    assert res.exit_code == 0, res.output
    vol = read_ct(ct)
    g = ConeGeometry(sdd_mm=500.0, sid_mm=400.0, size=24, yaw_deg=7.5, pitch_deg=-3.0, roll_deg=10.0,
                     offset_mm=(1.0, -2.0, 3.0))
    np.testing.assert_array_equal(np.load(out), render_drr(vol.hu, vol.spacing, g, backend="cpu"))
    plain = tmp_path / "plain.npy"
    assert run("drr", "render", ct, plain, "--size", 24, "--backend", "cpu", "--sdd", 500, "--sid", 400).exit_code == 0
    assert not np.array_equal(np.load(out), np.load(plain))


def test_yaw_sweep_writes_a_strip_and_a_stack(tmp_path):
    from PIL import Image

    from xpgan.pipeline.picture import labelled_grid

    ct = write_nifti(tmp_path / "ct.nii.gz", marker_volume(), (2.0, 2.5, 1.5))
    res = run("drr", "render", ct, tmp_path / "sweep.npy", "--size", 16, "--backend", "cpu", "--yaw-sweep", "-10,10,5")
    assert res.exit_code == 0, res.output
    assert "5 views" in res.output and "yaw -10; yaw -5; yaw 0; yaw 5; yaw 10" in res.output
    stack = np.load(tmp_path / "sweep.npy")
    assert stack.shape == (5, 16, 16)
    assert run("drr", "render", ct, tmp_path / "strip.png", "--size", 16, "--backend", "cpu",
               "--yaw-sweep", "-10,10,5").exit_code == 0
    angles = [[f"yaw {a}\N{DEGREE SIGN}" for a in (-10, -5, 0, 5, 10)]]   # one row, each view under its angle
    want = labelled_grid([list(stack)], captions=angles)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "strip.png")), want)
    single = tmp_path / "yaw5.npy"
    assert run("drr", "render", ct, single, "--size", 16, "--backend", "cpu", "--yaw", 5).exit_code == 0
    np.testing.assert_array_equal(stack[3], np.load(single))
    sweep = ("--size", 16, "--backend", "cpu", "--yaw-sweep", "-4,4,4", "--pitch-sweep", "0,6,3")
    assert run("drr", "render", ct, tmp_path / "grid.npy", *sweep).exit_code == 0
    res = run("drr", "render", ct, tmp_path / "grid.png", *sweep)
    assert res.exit_code == 0, res.output
    views = np.load(tmp_path / "grid.npy")
    rows = [list(views[3 * r:3 * r + 3]) for r in range(3)]  # one row per yaw, one column per pitch
    captions = [[f"yaw {y}\N{DEGREE SIGN} pitch {p}\N{DEGREE SIGN}" for p in (0, 3, 6)] for y in (-4, 0, 4)]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "grid.png")),
                                  labelled_grid(rows, captions=captions))


@pytest.mark.parametrize("args, fragment", [(("--yaw-sweep", "1,2"), "START,STOP,STEP"),
                                            (("--yaw-sweep", "0,10,-2"), "STEP"),
                                            (("--offset", "1,2"), "--offset"),
                                            (("--yaw", "nan"), "--yaw must be a number >= -180 and <= 180 degrees")])
def test_bad_pose_options_are_one_line_errors(tmp_path, args, fragment):
    ct = write_nifti(tmp_path / "ct.nii.gz", marker_volume(), (2.0, 2.5, 1.5))
    assert_one_line_error(run("drr", "render", ct, tmp_path / "o.npy", "--backend", "cpu", *args), fragment)
