"""Patient-grouped, label-stratified split: grouping, stratification, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from xpgan.pipeline.cxr.split import check_grouping, grouped_stratified_split


def _cohort(seed=0, n_patients=300):
    rng = np.random.default_rng(seed)
    labels, groups, strata = [], [], []
    for p in range(n_patients):
        k = int(rng.integers(1, 5))  # 1..4 images per patient
        lab = int(rng.random() < 0.3)
        src = "A" if p % 3 else "B"
        for _ in range(k):
            labels.append(lab)
            groups.append(f"{src}/p{p}")
            strata.append(src)
    return np.array(labels), groups, strata


def test_no_group_on_both_sides():
    labels, groups, strata = _cohort()
    split = grouped_stratified_split(labels, groups, test_fraction=0.2, seed=1, strata=strata)
    assert check_grouping(split, groups) == []


def test_stratified_by_label_and_stratum():
    labels, groups, strata = _cohort()
    split = grouped_stratified_split(labels, groups, test_fraction=0.2, seed=1, strata=strata)
    strata = np.array(strata)
    for s in ("A", "B"):
        for lab in (0, 1):
            sel = (strata == s) & (labels == lab)
            frac = split[sel].mean()
            assert abs(frac - 0.2) < 0.03, (s, lab, frac)


def test_deterministic_and_seed_dependent():
    labels, groups, strata = _cohort()
    a = grouped_stratified_split(labels, groups, test_fraction=0.2, seed=7, strata=strata)
    b = grouped_stratified_split(labels, groups, test_fraction=0.2, seed=7, strata=strata)
    c = grouped_stratified_split(labels, groups, test_fraction=0.2, seed=8, strata=strata)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_independent_of_item_order():
    labels, groups, strata = _cohort()
    perm = np.random.default_rng(5).permutation(len(labels))
    a = grouped_stratified_split(labels, groups, test_fraction=0.25, seed=3, strata=strata)
    b = grouped_stratified_split(labels[perm], [groups[i] for i in perm], test_fraction=0.25, seed=3,
                                 strata=[strata[i] for i in perm])
    np.testing.assert_array_equal(a[perm], b)


def test_mixed_label_patient_counts_as_positive():
    # Patient "m" has one positive and three negative images; the only positive patient, so with
    # test_fraction 0.5 of the single positive stratum it is all-or-nothing, and never split.
    labels = [0, 0, 0, 1] + [0] * 20
    groups = ["m"] * 4 + [f"n{i}" for i in range(20)]
    for seed in range(10):
        split = grouped_stratified_split(labels, groups, test_fraction=0.5, seed=seed)
        assert len(set(split[:4].tolist())) == 1
        # the negatives-only stratum (20 single-image patients) gets exactly half
        assert split[4:].sum() == 10


def test_adding_a_source_keeps_other_splits():
    labels, groups, strata = _cohort()
    a = grouped_stratified_split(labels, groups, test_fraction=0.2, seed=2, strata=strata)
    extra = 50
    b = grouped_stratified_split(np.r_[labels, np.ones(extra, int)], groups + [f"C/q{i}" for i in range(extra)],
                                 test_fraction=0.2, seed=2, strata=strata + ["C"] * extra)
    np.testing.assert_array_equal(a, b[: len(a)])
    assert b[len(a):].sum() == 10


def test_bad_arguments():
    with pytest.raises(ValueError):
        grouped_stratified_split([0, 1], ["a"], test_fraction=0.2)
    with pytest.raises(ValueError):
        grouped_stratified_split([0, 1], ["a", "b"], test_fraction=1.0)


def test_small_stratum_still_reaches_test():
    # 7 positives in patients of 3, 2, 2 images: target round(1.4) = 1 fits no group; the smallest goes to test
    labels = [1] * 7 + [0] * 30
    groups = ["a"] * 3 + ["b"] * 2 + ["c"] * 2 + [f"n{i}" for i in range(30)]
    for seed in range(5):
        split = grouped_stratified_split(labels, groups, test_fraction=0.2, seed=seed)
        assert split[:7].sum() == 2 and split[:3].sum() == 0
        assert split[7:].sum() == 6
