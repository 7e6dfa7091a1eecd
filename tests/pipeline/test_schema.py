"""xpgan.pipeline.schema: docs/design.md agrees with it; format versions (old stores open, newer are refused)."""
import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import InputError, XPGANError
from xpgan.model.data import CXRDataset, cxr_store_info
from xpgan.pipeline import schema
from xpgan.pipeline import store as st

DOC = Path(__file__).resolve().parents[2] / "docs" / "design.md"
runner = CliRunner()


def _doc_table(heading: str) -> dict[str, tuple[str, str, str]]:
    """{array: (dtype, shape, fill)} from the markdown table under `heading` in docs/design.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    rows = {}
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        m = re.match(r"\|\s*`(\w+)`\s*\|\s*([\w]+)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    return rows


def _fill_text(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return '""' if v == "" else str(v)


@pytest.mark.parametrize("kind,heading", [("ct", "### CT store"), ("cxr", "### CXR store")])
def test_design_doc_store_tables_match_the_schema(kind, heading):
    doc = _doc_table(heading)
    fields = schema.FIELDS[kind]
    assert list(doc) == [f.name for f in fields]
    for f in fields:
        dtype, shape, fill = doc[f.name]
        assert dtype == f.dtype, f.name
        dims = ", ".join(("N",) + tuple(str(d) for d in f.dims))
        assert shape == (f"({dims})" if f.dims else "(N,)"), f.name
        assert fill == _fill_text(f.fill), f.name


def test_design_doc_names_the_format_version_and_attribute_keys():
    text = DOC.read_text(encoding="utf-8")
    assert f"version **{schema.FORMAT_VERSION}**" in text
    versions = re.findall(r"^\| (\d+) \|", text[text.index("### Format versions"):], flags=re.M)
    assert [int(v) for v in versions] == list(schema.READABLE_VERSIONS)
    for key in (schema.KIND, schema.VERSION, schema.IDENTITY, schema.ITEMS_PER_SHARD, schema.COMPLETE):
        assert f"`{schema.META}.{key}`" in text
    assert f"`{schema.FAILURES}`" in text
    for path in (schema.lock_path("OUT.zarr"), schema.failures_csv_path("OUT.zarr"), schema.salt_path("OUT.zarr")):
        assert f"`{path.name}`" in text
    assert "1 − exp(−(p/4)²)" in text and schema.P_REF == 4.0 and schema.MAP_POWER == 2.0


def test_item_arrays_follow_the_fields():
    arrays = schema.item_arrays("ct", {"D": 4, "H": 5, "W": 6, "S": 7}, optional=("patient",))
    assert arrays["volume"] == schema.ArraySpec("int16", (4, 5, 6), 0)
    assert arrays["drr"].item_shape == (7, 7) and arrays["spacing"].item_shape == (3,)
    assert "patient" in arrays and "done" not in arrays
    assert "patient" not in schema.item_arrays("ct", {"D": 4, "H": 5, "W": 6, "S": 7})
    with pytest.raises(ValueError):
        schema.item_arrays("cxr", {"S": 8}, optional=("volume",))


def _cxr_store(path, n=6, size=8):
    g = st.create_or_open(path, kind="cxr", arrays=schema.item_arrays("cxr", {"S": size}), n_items=n,
                          attrs={"size": size}, identity={}, items_per_shard=4)
    st.write_items(g, {i: {"image": np.full((size, size), i / n, np.float32), "label": i % 2,
                           "patient": f"p{i}", "source": "s", "split": int(i >= 4)} for i in range(n)})
    st.set_complete(g, True)
    return g


def test_small_arrays_of_fill_values_are_written_so_a_missing_chunk_is_damage(tmp_path):
    from xpgan.pipeline.verify import scan

    path = tmp_path / "c.zarr"
    g = st.create_or_open(path, kind="cxr", arrays=schema.item_arrays("cxr", {"S": 8}), n_items=2, attrs={},
                          identity={})
    st.write_items(g, {i: {"image": np.ones((8, 8), np.float32), "label": -1, "patient": "", "source": "",
                           "split": -1} for i in range(2)})
    assert (path / "label" / "c" / "0").is_file() and (path / "patient" / "c" / "0").is_file()
    assert not scan(g, path, full=True).problems
    (path / "label" / "c" / "0").unlink()
    assert [p.reason for p in scan(g, path).problems] == ["chunk file missing"]


def test_every_chunk_ends_in_a_crc32c(tmp_path):
    from zarr.codecs import Crc32cCodec

    g = _cxr_store(tmp_path / "c.zarr")
    assert g.attrs[schema.META][schema.VERSION] == schema.FORMAT_VERSION
    inner = g["image"].metadata.codecs[0].codecs
    assert isinstance(inner[-1], Crc32cCodec)
    for name in ("label", "patient", "source", "split", "done"):
        assert isinstance(g[name].metadata.codecs[-1], Crc32cCodec), name


def _version_1_store(path, *, with_version=True, n=6, size=8):
    """A store as the first release wrote it: Blosc without chunk checksums inside shards, zstd elsewhere."""
    from zarr.codecs import BloscCodec

    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    img = np.stack([np.full((size, size), (i + 1) / n, np.float32) for i in range(n)])
    g.create_array("image", data=img, chunks=(1, size, size), shards=(4, size, size),
                   compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")])
    g.create_array("label", data=(np.arange(n) % 2).astype(np.int8), chunks=(n,))
    for name, values in (("patient", [f"p{i}" for i in range(n)]), ("source", ["s"] * n)):
        arr = g.create_array(name, shape=(n,), dtype=str, chunks=(n,), fill_value="")
        arr[:] = np.array(values, dtype=object)
    g.create_array("split", data=(np.arange(n) >= 4).astype(np.int8), chunks=(n,))
    g.create_array("done", data=np.ones(n, bool), chunks=(n,))
    meta = {"kind": "cxr", "size": size, "items_per_shard": 4, "identity": {}, "complete": True}
    if with_version:
        meta["version"] = 1
    g.attrs.update({"xpgan": meta, "failures": []})
    return path


@pytest.mark.parametrize("with_version", [True, False])
def test_version_1_stores_still_open_and_read(tmp_path, with_version):
    path = _version_1_store(tmp_path / "old.zarr", with_version=with_version)
    g = schema.open_store(path, "cxr")
    assert schema.store_version(g.attrs["xpgan"]) == 1
    assert cxr_store_info(path).n == 6
    ds = CXRDataset(path, part="train_all")
    np.testing.assert_array_equal(ds[0]["cxr"][0], np.full((8, 8), (ds.indices[0] + 1) / 6, np.float32))
    res = runner.invoke(app, ["inspect", str(path), "--verify"])
    assert res.exit_code == 0, res.output
    assert "6 done items OK" in res.output and "format version 1 has no chunk checksums" in res.output


def test_version_1_cxr_store_with_failures_counts_as_finished(tmp_path):
    # format 1 prep cxr left `complete` false when items failed; every item done or failed is a finished run
    path = _version_1_store(tmp_path / "old.zarr")
    g = zarr.open_group(str(path), mode="r+")
    done = g["done"][:]
    done[5] = False
    g["done"][:] = done
    g.attrs["xpgan"] = {**g.attrs["xpgan"], "complete": False}
    g.attrs["failures"] = [{"index": 5, "id": "x", "path": "", "reason": "bad file"}]
    assert cxr_store_info(path).n == 6
    g.attrs["failures"] = []
    with pytest.raises(XPGANError, match=r"\(5 of 6 items done\); prep it again with --overwrite"):
        cxr_store_info(path)


def test_version_1_store_is_not_resumed(tmp_path):
    path = _version_1_store(tmp_path / "old.zarr")
    with pytest.raises(XPGANError, match=r"format version 1 .*--overwrite"):
        st.create_or_open(path, kind="cxr", arrays=schema.item_arrays("cxr", {"S": 8}), n_items=6, attrs={},
                          identity={})


@pytest.mark.parametrize("version,match", [(4, "newer than this xpgan reads"), ("2", "unknown store format version"),
                                           (0, "unknown store format version")])
def test_newer_or_unknown_versions_are_refused(tmp_path, version, match):
    path = tmp_path / "s.zarr"
    g = _cxr_store(path)
    g.attrs["xpgan"] = {**g.attrs["xpgan"], "version": version}
    with pytest.raises(InputError, match=match):
        schema.open_store(path, "cxr")
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and match in res.output


def test_wrong_dtype_and_missing_array_are_refused(tmp_path):
    path = tmp_path / "s.zarr"
    _cxr_store(path)
    g = zarr.open_group(str(path), mode="r+")
    del g["split"]
    with pytest.raises(InputError, match="lacks array"):
        schema.open_store(path, "cxr")
    g.create_array("split", data=np.zeros(6, np.float32), chunks=(6,))
    with pytest.raises(InputError, match="'split' has dtype float32, expected int8"):
        schema.open_store(path, "cxr")


def test_storedamageerror_recovers_its_line_from_a_dataloader_traceback():
    wrapped = ("Caught StoreDamageError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
               "last):\n  File \"x.py\", line 1, in f\nxpgan.pipeline.schema.StoreDamageError: s.zarr: array "
               "'image' item 3: damaged data (checksum mismatch)\n")
    assert str(schema.StoreDamageError(wrapped)) == "s.zarr: array 'image' item 3: damaged data (checksum mismatch)"


def test_ct_render_setup_reads_the_geometry_and_mu_water_prep_recorded(tmp_path):
    from xpgan.drr import ConeGeometry, geometry_from_dict

    geom = ConeGeometry(size=16, view="ap", sdd_mm=1500.0, sid_mm=1200.0)
    arrays = schema.item_arrays("ct", {"D": 2, "H": 3, "W": 4, "S": 16})
    for name, meta, mu in (("new", {schema.GEOMETRY: geom.to_dict(), schema.PHYSICS: {schema.MU_WATER: 0.025}}, 0.025),
                           ("top", {schema.GEOMETRY: geom.to_dict(), schema.MU_WATER: 0.018}, 0.018),
                           ("default", {schema.GEOMETRY: geom.to_dict()}, 0.02)):
        g = st.create_or_open(tmp_path / f"{name}.zarr", kind="ct", arrays=arrays, n_items=1, attrs=meta,
                              identity={})
        got, mu_water = schema.ct_render_setup(g, tmp_path / f"{name}.zarr", "testing")
        assert got == geometry_from_dict(geom.to_dict()) and mu_water == pytest.approx(mu), name
        small, _ = schema.ct_render_setup(g, tmp_path / f"{name}.zarr", "testing", size=8)
        assert small.size == 8 and small.sdd_mm == 1500.0 and small.view == "ap"
    bare = st.create_or_open(tmp_path / "bare.zarr", kind="ct", arrays=arrays, n_items=1, attrs={}, identity={})
    with pytest.raises(XPGANError, match=r"bare\.zarr: the store records no DRR geometry .*; testing"):
        schema.ct_render_setup(bare, tmp_path / "bare.zarr", "testing")
