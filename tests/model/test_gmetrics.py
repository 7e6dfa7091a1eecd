"""Generator figures against closed forms and slow references."""
import itertools

import numpy as np
import pytest
import torch

from xpgan.model.gmetrics import (
    generator_figures,
    identification,
    kid,
    matched_and_other_l1,
    ncc_matrix,
    specific,
    variation,
)


def test_matched_and_other_study_l1_closed_forms():
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    same, other = matched_and_other_l1(target.clone(), target)        # a generator that follows its study
    assert same == 0.0
    # |t_i - t_j| per pair (pixel means): (0,1) 1, (0,2) 1, (1,2) 1 -> every ordered pair i != j: 1
    assert other == pytest.approx(1.0)
    mean_chest = target.mean(dim=0, keepdim=True).expand(3, 2)        # the same image for every study
    same, other = matched_and_other_l1(mean_chest, target)
    # a constant prediction scores the same against any study: matched = mean over i, other = mean over i != j,
    # both averages of |m - t_j| with every j weighted equally
    assert same == pytest.approx(other)
    assert np.isnan(matched_and_other_l1(target[:1], target[:1])[1])


def test_ncc_is_one_for_an_affine_copy_and_minus_one_for_a_negative():
    t = torch.rand(4, 50)
    m = ncc_matrix(3.0 * t + 2.0, t)
    torch.testing.assert_close(m.diagonal(), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(ncc_matrix(-t, t).diagonal(), -torch.ones(4, dtype=torch.float64))


def test_identification_of_a_follower_a_constant_and_a_permutation():
    t = torch.rand(10, 64)
    assert identification(t + 0.01 * torch.randn_like(t), t) == 1.0
    # one image for all: only the study it happens to correlate with best is "identified" -> chance, 1/n
    assert identification(t.mean(dim=0, keepdim=True).expand(10, 64), t) == pytest.approx(0.1)
    assert identification(torch.zeros(10, 64), t) == 0.0                              # ties are misses
    assert identification(t[torch.tensor([1, 0, *range(2, 10)])], t) == pytest.approx(0.8)


def test_variation_is_the_mean_per_pixel_sd():
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    assert variation(x) == pytest.approx(2.0 / 2)                        # sd of (0, 2, 4) = 2; of (1, 1, 1) = 0


def kid_reference(x, y):
    k = lambda a, b: (float(a @ b) / x.shape[1] + 1.0) ** 3  # noqa: E731
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_pairwise_reference_and_separates_distributions():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=g).double(), torch.randn(9, 5, generator=g).double() + 0.5
    assert kid(x, y) == pytest.approx(kid_reference(x, y), rel=1e-10)
    same = [kid(torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)) for _ in range(3)]
    assert abs(np.mean(same)) < 0.05                                    # unbiased: ~0 for one distribution
    assert kid(torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g) + 1.0) > 10 * max(map(abs, same))
    with pytest.raises(ValueError):
        kid(torch.randn(1, 3), torch.randn(4, 3))


def test_generator_figures_of_a_perfect_and_of_a_mean_generator():
    t = torch.rand(6, 16)
    mean = t.mean(dim=0)
    perfect = generator_figures(t.clone(), t, mean)
    assert perfect["identification"] == 1.0 and perfect["l1_g"] == 0.0 and perfect["variation_ratio"] == 1.0
    blob = generator_figures(mean[None].expand(6, 16), t, mean)
    assert blob["identification"] == pytest.approx(1 / 6) and blob["l1_own_over_other"] == pytest.approx(1.0)
    assert blob["variation_ratio"] == 0.0 and blob["l1_g"] == pytest.approx(blob["l1_mean_image"])


def test_study_specific_part_identifies_a_follower_whose_common_appearance_differs():
    # 32 "chests": one shared anatomy plus small study-specific detail; G keeps the detail but draws the
    # shared part with another appearance (a different common image), as a G bridging a domain gap does
    g = torch.Generator().manual_seed(0)
    anatomy, detail = torch.rand(1, 400, generator=g), 0.05 * torch.rand(32, 400, generator=g)
    drr = anatomy + detail
    other_look = torch.rand(1, 400, generator=g)
    fake = other_look + 0.8 * detail + 0.01 * torch.rand(32, 400, generator=g)
    fig = generator_figures(fake, drr, drr.mean(dim=0))
    assert fig["identification"] < 0.2                       # the shared appearance dominates the plain NCC
    assert fig["identification_specific"] == 1.0 and fig["l1_own_over_other_specific"] < 0.5
    # a G that draws one image for every study has no study-specific part: no study is identified
    same = generator_figures(other_look.expand(32, 400), drr, drr.mean(dim=0))
    assert same["identification_specific"] == 0.0
    torch.testing.assert_close(specific(drr).mean(dim=0), torch.zeros(400, dtype=torch.float64))
