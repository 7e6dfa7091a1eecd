"""Patient-grouped, label-stratified train/test split (deterministic given the seed).

Rules:
- A group (patient) is never split: all its images are on one side.
- A group's label is the largest label of its images (a patient with any positive image is positive).
- Strata are (stratum, group label), where `stratum` is an optional extra key per item (prep cxr passes the
  source name, so every source is split ~80:20 on its own, like the paper's Table 1). In each stratum the
  groups, sorted by key, are shuffled with a generator seeded by (seed, a stable digest of the stratum),
  then taken in that order into the test side whenever that brings the test image count closer to
  `round(test_fraction * images in the stratum)`. When no group fits (all overshoot) but the target is at
  least one image and the stratum has two groups or more, the smallest group goes to test, so a label is
  not missing from the test side of a small source. Adding or removing a whole source leaves the other
  sources' splits unchanged.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np

TRAIN, TEST = 0, 1


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def grouped_stratified_split(labels: Sequence[int], groups: Sequence[Hashable], *, test_fraction: float = 0.2,
                             seed: int = 0, strata: Sequence[Hashable] | None = None) -> np.ndarray:
    """Split items into train (0) and test (1). Returns int8 [N]."""
    labels = np.asarray(labels)
    n = len(labels)
    if len(groups) != n or (strata is not None and len(strata) != n):
        raise ValueError(f"labels ({n}), groups ({len(groups)}) and strata must have one entry per item")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if n == 0:
        return np.zeros(0, dtype=np.int8)

    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    group_stratum: dict[Hashable, tuple[str, int]] = {}
    for g, idx in members.items():
        # a group spanning strata (not possible in prep cxr: patient keys include the source) goes to the
        # stratum of its first item
        st_key = repr(strata[idx[0]]) if strata is not None else ""
        group_stratum[g] = (st_key, int(labels[idx].max()))

    by_stratum: dict[tuple[str, int], list[Hashable]] = defaultdict(list)
    for g, key in group_stratum.items():
        by_stratum[key].append(g)

    split = np.zeros(n, dtype=np.int8)
    for key in sorted(by_stratum):
        gs = sorted(by_stratum[key], key=repr)
        sizes = np.array([len(members[g]) for g in gs])
        target = int(round(float(test_fraction) * sizes.sum()))
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _stable_int(f"{key[0]}|{key[1]}")])
        taken = 0
        order = rng.permutation(len(gs))
        for j in order:
            if abs(taken + sizes[j] - target) < abs(taken - target):
                taken += sizes[j]
                split[members[gs[j]]] = TEST
        if taken == 0 and target >= 1 and len(gs) >= 2:
            # every group overshoots the target (e.g. 7 positives in groups of 3, 2, 2 at 20 %): rather than
            # a test side without this label, take the smallest group (first in the shuffled order)
            j = min(order, key=lambda k: sizes[k])
            split[members[gs[j]]] = TEST
    return split


def check_grouping(split: np.ndarray, groups: Sequence[Hashable]) -> list[Hashable]:
    """Groups found on both sides (empty for a valid split)."""
    sides: dict[Hashable, set[int]] = defaultdict(set)
    for s, g in zip(np.asarray(split).tolist(), groups):
        sides[g].add(s)
    return [g for g, s in sides.items() if len(s) > 1]
