"""Synthetic chest phantoms and the demo archives (xpgan.pipeline.synth)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from xpgan.pipeline.synth import anatomy as P
from xpgan.pipeline.synth import archives, radiograph

SHAPE = (24, 96, 96)


@pytest.fixture(scope="module")
def clean():
    """A noiseless CT-3 phantom: every label's HU is the painted value (plus partial volume)."""
    return P.chest_phantom(7, shape=(28, 128, 128), severity=3, noise_hu=0.0)


def test_same_seed_same_volume():
    a = P.chest_phantom(3, shape=SHAPE, severity=2)
    b = P.chest_phantom(3, shape=SHAPE, severity=2)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.spacing == b.spacing


def test_other_seed_other_patient():
    a = P.chest_phantom(3, shape=SHAPE)
    b = P.chest_phantom(4, shape=SHAPE)
    assert a.spacing != b.spacing
    assert np.mean(a.labels != b.labels) > 0.02


@pytest.mark.parametrize("label, lo, hi", [
    (P.FAT, -130, -70), (P.SOFT, 20, 100), (P.HEART, 30, 50), (P.GGO, -800, -250),
    (P.CONSOLIDATION, -400, 60), (P.BONE, 390, 1200),
])
def test_tissue_hu_ranges(clean, label, lo, hi):
    hu = clean.hu[clean.labels == label]
    assert hu.size > 50, P.TISSUE_NAMES[label]
    p5, p95 = np.percentile(hu, [5, 95])
    assert lo <= p5 and p95 <= hi, (P.TISSUE_NAMES[label], p5, p95)


def test_healthy_lung_hu_range():
    ph = P.chest_phantom(7, shape=(28, 128, 128), severity=0, noise_hu=0.0)
    hu = ph.hu[ph.labels == P.LUNG]
    p5, p50, p95 = np.percentile(hu, [5, 50, 95])
    assert -910 <= p5 and p95 <= -780 and -880 <= p50 <= -820, (p5, p50, p95)


def test_lesion_medians_match_the_documented_ranges(clean):
    ggo = np.median(clean.hu[clean.labels == P.GGO])
    cons = np.median(clean.hu[clean.labels == P.CONSOLIDATION])
    assert -700 <= ggo <= -300
    assert -100 <= cons <= 30


def test_air_outside_and_vessels_brighter_than_lung(clean):
    assert np.all(clean.hu[clean.labels == P.AIR] == -1000.0)
    assert np.median(clean.hu[clean.labels == P.VESSEL]) > -450
    cortical = clean.hu[clean.labels == P.BONE].max()
    assert cortical >= 1000  # cortical bone brighter than the cancellous core


def test_involvement_grows_with_severity():
    for seed in (0, 1):
        inv = [P.chest_phantom(seed, shape=SHAPE, severity=s, noise_hu=0).lung_involvement() for s in range(5)]
        assert inv[0] == 0.0
        assert all(b > a for a, b in zip(inv, inv[1:])), inv
        assert inv[1] < 0.25 and inv[4] > 0.4, inv


def test_positive_lungs_denser_and_anatomy_unchanged():
    neg = P.chest_phantom(5, shape=SHAPE, severity=0, noise_hu=0)
    pos = P.chest_phantom(5, shape=SHAPE, severity=3, noise_hu=0)
    lung = neg.labels == P.LUNG
    assert pos.hu[lung].mean() > neg.hu[lung].mean() + 80
    outside = ~np.isin(neg.labels, (P.LUNG, P.VESSEL))
    np.testing.assert_array_equal(pos.labels[outside], neg.labels[outside])


def _centroid(mask):
    return np.array(np.nonzero(mask)).mean(axis=1)  # (d, h, w)


def test_orientation_heart_left_spine_posterior_apices_superior():
    for seed in (0, 11, 12):
        ph = P.chest_phantom(seed, shape=(32, 128, 128), noise_hu=0)
        d, h, w = ph.labels.shape
        heart = _centroid(ph.labels == P.HEART)
        assert heart[2] > w / 2 + 5                     # patient's left = higher w
        assert heart[1] < h / 2                          # anterior half
        mid = np.zeros_like(ph.labels, bool)
        mid[:, :, w // 2 - 3: w // 2 + 3] = True
        spine = _centroid((ph.labels == P.BONE) & mid & (np.arange(h) > h // 2)[None, :, None])
        sternum_side = (ph.labels == P.BONE) & mid & (np.arange(h) < h // 2)[None, :, None]
        assert spine[1] > h / 2 and sternum_side.sum() < ((ph.labels == P.BONE) & mid).sum() / 2
        lung_per_slice = (ph.labels == P.LUNG).sum(axis=(1, 2))
        rows = np.flatnonzero(lung_per_slice)
        assert rows[0] < d * 0.25 and lung_per_slice[0] == 0   # apices near the top, air/neck above
        assert lung_per_slice[rows[0]] < lung_per_slice.max() / 3  # narrow apices
        right = (ph.labels[:, :, : w // 2] == P.LUNG).sum()
        left = (ph.labels[:, :, w // 2:] == P.LUNG).sum()
        assert right > left                               # the heart takes room from the left lung


def test_ap_mean_is_display_oriented():
    """docs/design.md: volume.mean(axis=1) is an AP view with the heart (patient's left) on the image's right."""
    ph = P.chest_phantom(2, shape=(32, 128, 128), noise_hu=0)
    ap = ph.hu.mean(axis=1)                              # [d, w]
    d, w = ap.shape
    lungs = (ph.labels == P.LUNG).any(axis=1)
    heart_rows = slice(int(_centroid(ph.labels == P.HEART)[0]) - 2, int(_centroid(ph.labels == P.HEART)[0]) + 3)
    band = ap[heart_rows]
    # Across the heart's rows, the image-right half (patient left) holds more soft tissue than the left half.
    assert band[:, w // 2 + 8: w // 2 + 30].mean() > band[:, w // 2 - 30: w // 2 - 8].mean()
    assert lungs[: d // 2].sum() > 0


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        P.chest_phantom(0, shape=(2, 10, 10))
    with pytest.raises(ValueError):
        P.chest_phantom(0, shape=SHAPE, severity=5)
    with pytest.raises(ValueError):
        P.chest_phantom(0, shape=SHAPE, pattern="flu")


def test_mosmed_archive_layout_registry_and_readback(tmp_path):
    import nibabel as nib

    from xpgan.pipeline.ct.readers import read_ct

    recs = archives.write_mosmed_archive(tmp_path, 6, seed=2, shape=(16, 64, 64), as_dicom=True)
    assert sorted({r.category for r in recs}) == [0, 1, 2, 3, 4]
    assert [r.study_id for r in recs] == [f"study_{i:04d}" for i in range(1, 7)]
    assert len({r.shape[0] for r in recs}) > 1                     # slice counts vary
    with open(tmp_path / "dataset_registry.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["study_id"], r["category"]) for r in rows] == [(r.study_id, f"CT-{r.category}") for r in recs]
    for r, row in zip(recs, rows):
        assert r.path == tmp_path / row["study_file"]
        assert r.path.parent.name == f"CT-{r.category}" and r.path.name.endswith(".nii.gz")
    img = nib.load(str(recs[0].path))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")          # not the canonical orientation on disk
    assert img.get_data_dtype() == np.int16
    for r in recs[:2]:
        ph = P.chest_phantom(r.seed, shape=r.shape, severity=r.category)
        want = np.clip(np.rint(ph.hu), -1024, 3071)
        vol = read_ct(r.path)
        np.testing.assert_array_equal(vol.hu, want)
        np.testing.assert_allclose(vol.spacing, r.spacing, rtol=1e-5)
        np.testing.assert_array_equal(read_ct(r.dicom_dir).hu, want)


def test_mosmed_dicom_carries_fake_phi(tmp_path):
    import pydicom

    recs = archives.write_mosmed_archive(tmp_path, 1, seed=0, shape=(6, 32, 32), as_dicom=True, categories=[2])
    ds = pydicom.dcmread(next(iter(sorted(recs[0].dicom_dir.iterdir()))))
    assert str(ds.PatientName) and str(ds.PatientID).startswith("MRN") and ds.PatientBirthDate


@pytest.fixture(scope="module")
def cxr_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxr")
    recs = archives.write_cxr_archive(root, 30, seed=1, size=96, phantom_shape=(32, 48, 48), n_missing=1)
    return root, recs


def test_cxr_csv_quirks(cxr_archive):
    import pandas as pd

    root, recs = cxr_archive
    lines = (root / "metadata.csv").read_text().splitlines()
    assert lines[0].split(",")[:5] == ["patientid", "offset", "sex", "age", "finding"]
    assert all(line.endswith(",") for line in lines)              # the collection's trailing comma
    df = pd.read_csv(root / "metadata.csv")
    assert df.columns[-1].startswith("Unnamed")
    assert len(df) == len(recs)
    assert {"PA", "AP", "L"} <= set(df["view"]) and "CT" in set(df["modality"])
    assert df["finding"].str.contains("COVID-19").any() and (df["finding"] == "No Finding").any()


def test_cxr_imbalance_patients_and_files(cxr_archive):
    from PIL import Image

    root, recs = cxr_archive
    frontal = [r for r in recs if r.view in ("PA", "AP", "AP Supine") and r.modality == "X-ray"]
    assert len(frontal) == 30
    pos = sum(r.label for r in frontal)
    assert 3 <= pos <= 9                                           # few positives (~18 %)
    assert all((r.label == 1) == ("COVID-19" in r.finding) for r in recs)
    per_patient = {}
    for r in frontal:
        per_patient.setdefault(r.patientid, set()).add(r.label)
    assert len(per_patient) < len(frontal)                        # some patients have several images
    assert all(len(v) == 1 for v in per_patient.values())         # one label per patient
    fmts = {r.fmt for r in recs}
    assert {"png8", "png16", "dicom_m2", "dicom_m1", "missing"} <= fmts
    for r in recs:
        path = root / "images" / r.filename
        assert path.exists() == (r.fmt != "missing")
    png16 = next(r for r in recs if r.fmt == "png16")
    assert Image.open(root / "images" / png16.filename).mode in ("I;16", "I")


def test_cxr_images_read_back_display_oriented(cxr_archive):
    import pydicom

    from xpgan.pipeline.cxr.readers import read_cxr

    root, recs = cxr_archive
    m1 = next(r for r in recs if r.fmt == "dicom_m1")
    m2 = next(r for r in recs if r.fmt == "dicom_m2")
    ds = pydicom.dcmread(root / "images" / m1.filename)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and str(ds.PatientName)
    for r in (m1, m2, next(r for r in recs if r.fmt == "png8")):
        img = read_cxr(root / "images" / r.filename)
        h, w = img.shape
        centre = img[h // 3: 2 * h // 3, w // 2 - w // 16: w // 2 + w // 16].mean()   # mediastinum: bright
        lungs = np.concatenate([img[h // 3: 2 * h // 3, w // 4 - w // 16: w // 4 + w // 16],
                                img[h // 3: 2 * h // 3, 3 * w // 4 - w // 16: 3 * w // 4 + w // 16]]).mean()
        assert centre > lungs + 0.15, (r.fmt, centre, lungs)


def test_radiograph_is_monotone_in_attenuation():
    p = np.tile(np.linspace(0.0, 6.0, 64, dtype=np.float32), (64, 1))
    img = radiograph.simulate_radiograph(p, np.random.default_rng(0), photons=1e7, scatter=0.0, blur_px=0.0,
                                         unsharp=0.0)
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
    row = img[32]
    assert np.all(np.diff(row[2:-2]) >= -1e-3) and row[-3] > row[2] + 0.5


@pytest.mark.slow
def test_archives_do_not_depend_on_worker_count(tmp_path):
    import nibabel as nib

    a = archives.write_mosmed_archive(tmp_path / "a", 2, seed=4, shape=(8, 32, 32), workers=1)
    b = archives.write_mosmed_archive(tmp_path / "b", 2, seed=4, shape=(8, 32, 32), workers=2)
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(np.asarray(nib.load(str(ra.path)).dataobj),
                                      np.asarray(nib.load(str(rb.path)).dataobj))
    kw = dict(seed=4, size=48, phantom_shape=(16, 24, 24), n_lateral=1, n_ct_rows=1)
    ca = archives.write_cxr_archive(tmp_path / "ca", 6, workers=1, **kw)
    cb = archives.write_cxr_archive(tmp_path / "cb", 6, workers=2, **kw)
    assert ca == cb
    assert (tmp_path / "ca" / "metadata.csv").read_bytes() == (tmp_path / "cb" / "metadata.csv").read_bytes()
    for r in ca:
        if r.fmt.startswith("png"):
            assert (tmp_path / "ca" / "images" / r.filename).read_bytes() == \
                (tmp_path / "cb" / "images" / r.filename).read_bytes()
