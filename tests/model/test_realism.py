"""The realism figures (model/gmetrics.py): closed forms, and the three anchor cases on the synthetic cohort's
own physics: real vs real is indistinguishable, DRRs vs radiographs are not, and a generator that returns its
DRR scores exactly as the DRRs do."""
import numpy as np
import pytest
import torch

from xpgan.drr import ConeGeometry, render_drr
from xpgan.drr.physics import line_integral_to_image
from xpgan.model import greport
from xpgan.model.gmetrics import (
    cnn_two_sample_auroc,
    linear_two_sample_auroc,
    pixel_w1,
    pooled,
    realism_figures,
    sd_ratio,
)
from xpgan.pipeline.synth.anatomy import chest_phantom
from xpgan.pipeline.synth.radiograph import line_integrals, simulate_radiograph

SIZE = 32


@pytest.fixture(scope="module")
def cohort():
    """DRRs (prep drr's geometry and map) and radiographs (the CXR archive's simulator, per-image exposure,
    scatter, film contrast, blur) of 40 and 80 small synthetic chests, other patients each."""
    drrs, radiographs = [], []
    for i in range(120):
        ph = chest_phantom(1000 + i, shape=(12, 40, 40), severity=int(i % 5), noise_hu=0.0)
        if i < 40:
            p = render_drr(ph.hu, ph.spacing, ConeGeometry(size=SIZE), backend="cpu", output="line_integral")
            drrs.append(line_integral_to_image(np.asarray(p)))
        else:
            rng = np.random.default_rng(i)
            radiographs.append(simulate_radiograph(
                line_integrals(ph, "PA", SIZE), rng, exposure=float(np.exp(rng.normal(0.0, 0.35))),
                scatter=float(rng.uniform(0.2, 0.9)), gamma=float(rng.uniform(1.0, 1.6)),
                blur_px=float(rng.uniform(0.3, 0.8))))
    return torch.from_numpy(np.stack(drrs))[:, None], torch.from_numpy(np.stack(radiographs))[:, None]


def test_real_against_real_is_indistinguishable(cohort):
    _, real = cohort
    a, b = real[::2], real[1::2]
    for pool in (4, 8, 16):
        assert abs(linear_two_sample_auroc(a, b, pool=pool) - 0.5) < 0.2
    assert abs(cnn_two_sample_auroc(a, b) - 0.5) < 0.2


def test_drrs_are_told_from_radiographs(cohort):
    drr, real = cohort
    assert linear_two_sample_auroc(real, drr, pool=8) > 0.95
    assert cnn_two_sample_auroc(real, drr) > 0.9


def test_a_generator_returning_its_drr_scores_as_the_drrs(cohort):
    drr, real = cohort
    imgs = greport.StudyImages(fake=drr.clone(), drr=drr, labels=np.zeros(len(drr), np.int64),
                               index=np.arange(len(drr)))
    fig = greport.realism_report(imgs, real)
    assert fig["g"] == fig["drr"]
    assert fig["real_count"] == len(real) and fig["g"]["count"] == len(drr)
    line = greport.realism_line(fig)
    assert f"{fig['g']['linear_auroc_8']:.2f} (DRRs {fig['drr']['linear_auroc_8']:.2f})" in line


def test_separable_sets_score_one_and_the_test_is_deterministic():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(30, 1, 16, 16, generator=g) * 0.5
    b = a[:20] + 0.3                                   # brighter everywhere
    assert linear_two_sample_auroc(a, b) == 1.0
    with torch.no_grad():                  # a report calls them under no_grad: they train all the same
        assert cnn_two_sample_auroc(a, b, steps=100) > 0.95
        assert linear_two_sample_auroc(a, b) == 1.0
    x = torch.rand(24, 1, 8, 8, generator=g)
    y = torch.rand(24, 1, 8, 8, generator=g)
    assert linear_two_sample_auroc(x, y, seed=5) == linear_two_sample_auroc(x, y, seed=5)


def test_pixel_w1_closed_forms():
    a = torch.full((4, 1, 8, 8), 0.2)
    assert pixel_w1(a, torch.full((3, 1, 8, 8), 0.5)) == pytest.approx(0.3)
    u = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    assert pixel_w1(u, u + 0.1) == pytest.approx(0.1, abs=1e-6)       # a shift moves every quantile by it
    assert pixel_w1(u, u) == 0.0


def test_sd_ratio_and_pooling():
    u = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    assert sd_ratio(0.5 * u, u) == pytest.approx(0.5)
    assert sd_ratio(u + 0.2, u) == pytest.approx(1.0)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert pooled(x, 2).tolist() == [[2.5, 4.5, 10.5, 12.5]]


def test_realism_figures_refuse_too_few_images():
    with pytest.raises(ValueError, match="at least 5 images per set"):
        realism_figures(torch.rand(10, 1, 8, 8), {"g": torch.rand(3, 1, 8, 8)})


def test_too_few_images_give_a_note_not_an_error(cohort):
    drr, real = cohort
    imgs = greport.StudyImages(fake=drr[:6], drr=drr[:6], labels=np.zeros(6, np.int64), index=np.arange(6))
    fig = greport.realism_report(imgs, real[:3])
    assert "g" not in fig and "at least 5 radiographs" in fig["note"]
    assert greport.realism_line(fig).startswith("realism: realism needs at least 5")
