"""On-the-fly, 3D-consistent DRR augmentation in training (`xpgan train --drr-aug`, off by default).

    --drr-aug none            the DRRs stored at prep time (the default; Table 2 replication unchanged)
    --drr-aug pose            every CT sample of a step gets a fresh random pose
    --drr-aug pose+intensity  (mode drr only) a pose, then a random exposure: line integrals scaled by
                              U(0.85, 1.15) (beam energy) and Gaussian noise of std U(0, 0.01) on the image

Pose ranges (drr/poses.py PoseRanges): yaw and pitch uniform in +-8 degrees, roll +-5 degrees, isocentre
offsets +-(10, 5, 10) mm along (d, h, w), source-isocentre distance 1000-1800 mm (cone stores; the
source-detector gap is kept; a fitted field of view is refitted, so SID changes the perspective, not the
scale).  The pose convention (yaw + = LAO, pitch + = cranial, roll + = clockwise): drr/geometry.py.

Training mode drr: the posed DRR of the item's stored CT volume (its spacing, the store's geometry and
mu_water) replaces the stored DRR as the classifier's sample.
Training mode xpgan: one pose for both sides of G.  G's input is the volume resampled into the posed frame
(`resample_to_pose`, linear, air outside) and the L1 target is the posed DRR of the stored volume (exact
Siddon), so G is never asked to guess the pose.  The SID stays the store's there: nothing in G's input
would tell it the source distance.

Where: inside DataLoader workers on the CPU kernel (one numba thread per worker; workers are spawned,
not forked, because numba's OpenMP pool is not fork-safe), or in the training process when
num_workers is 0.  (On a GPU machine the workers still render on their CPUs; see the closing note.)

Determinism and resume: CT sample k of rank r (counted over the whole run: epoch, batch, position) draws
from np.random.default_rng([seed, 0x4155, r, k]), so the poses do not depend on the worker count or on
which worker renders a sample, and a resume re-draws exactly: k comes from the stream position saved in the
checkpoint, and the checkpoint's "augment" entry (mode, RNG key, next draw) is checked against it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
from torch.utils.data import Dataset, Sampler

from xpgan.drr.poses import PoseRanges
from xpgan.errors import XPGANError

AUG_MODES = ("none", "pose", "pose+intensity")
RNG_SALT = 0x4155  # "AU": keeps augmentation draws apart from every other stream seeded with `seed`


@dataclass(frozen=True)
class IntensityRanges:
    atten_scale: tuple = (0.85, 1.15)   # factor on the line integrals (beam energy / exposure)
    noise_std: float = 0.01             # Gaussian image noise std drawn from U(0, noise_std)


class KeyedSampler(Sampler):
    """Positions of `chain` as (position, draw number), draw numbers counting up from `start`."""

    def __init__(self, chain, start: int):
        self.chain, self.start = chain, int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for k, pos in enumerate(self.chain, start=self.start):
            yield (int(pos), k)


def store_geometry(group, path: str):
    """The DRR geometry and mu_water a CT store was prepared with (its `xpgan` attribute)."""
    from xpgan.drr import geometry_from_dict

    meta = dict(group.attrs["xpgan"])
    if not isinstance(meta.get("geometry"), dict):
        raise XPGANError(f"{path}: the store records no DRR geometry (attribute xpgan.geometry); --drr-aug "
                         "re-renders DRRs with it (stores made by xpgan prep drr have it)")
    geometry = geometry_from_dict(meta["geometry"])
    mu_water = float(meta.get("physics", {}).get("mu_water_per_mm", meta.get("mu_water_per_mm", 0.02)))
    return geometry, mu_water


class AugmentedCT(Dataset):
    """A CTDataset whose samples are re-rendered under random poses (module docstring).

    Indexed by (position, draw number) keys from `KeyedSampler` (BatchStream does this for datasets with
    `keyed`).  Items: {"drr": [1, R, R] in [0, 1], "ct_label", "index"} plus, in mode xpgan,
    "ct": [1, D, H, W] in [-1, 1] (the volume in the posed frame)."""

    mp_context = "spawn"  # numba's OpenMP pool does not survive fork once the parent has used it

    def __init__(self, base, *, train_mode: str, aug: str, seed: int, rank: int = 0,
                 ranges: PoseRanges = PoseRanges(), intensity: Optional[IntensityRanges] = None):
        if aug not in AUG_MODES[1:]:
            raise XPGANError(f"--drr-aug must be one of {', '.join(AUG_MODES)}, got {aug!r}")
        if train_mode not in ("xpgan", "drr"):
            raise XPGANError(f"--drr-aug applies to modes xpgan and drr, not {train_mode!r}")
        if aug == "pose+intensity" and train_mode != "drr":
            raise XPGANError("--drr-aug pose+intensity applies to --mode drr only (in mode xpgan G could not "
                             "know the exposure change of its L1 target)")
        self.base, self.train_mode, self.aug = base, train_mode, aug
        self.seed, self.rank, self.ranges = int(seed), int(rank), ranges
        self.intensity = (intensity or IntensityRanges()) if aug == "pose+intensity" else None
        self.geometry, self.mu_water = store_geometry(base._g(), base.path)
        if self.geometry.size != base.img_res:
            raise XPGANError(f"{base.path}: the store's geometry has {self.geometry.size} px but its DRRs "
                             f"{base.img_res} px")
        self.block_ids, self.labels, self.indices = base.block_ids, base.labels, base.indices
        self._threads_set = False

    keyed = staticmethod(KeyedSampler)

    def __len__(self) -> int:
        return len(self.base)

    def rng(self, draw: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, RNG_SALT, self.rank, int(draw)])

    def _one_thread_in_workers(self) -> None:
        if not self._threads_set:
            from torch.utils.data import get_worker_info

            if get_worker_info() is not None:  # several workers share the cores: one kernel thread each
                import numba

                numba.set_num_threads(1)
            self._threads_set = True

    def __getitem__(self, key) -> dict:
        from xpgan.drr import render_drr
        from xpgan.drr.physics import line_integral_to_image
        from xpgan.drr.poses import apply_pose, random_pose, resample_to_pose
        from xpgan.model.data import normalize_hu

        self._one_thread_in_workers()
        pos, draw = key
        j = int(self.indices[pos])
        hu = np.asarray(self.base._a("volume")[j])                                  # [D, H, W] HU
        spacing = np.asarray(self.base._a("spacing")[j], dtype=np.float64)          # [3] mm
        rng = self.rng(draw)
        pose = random_pose(rng, self.ranges)
        if self.train_mode == "xpgan":
            pose["sid_mm"] = None                  # G cannot see the source distance: keep the store's
        p = render_drr(hu, spacing, apply_pose(self.geometry, pose), backend="cpu", output="line_integral",
                       mu_water=self.mu_water)                                       # [R, R]
        out = {"ct_label": int(self.labels[pos]), "index": j}
        if self.intensity is not None:
            lo, hi = self.intensity.atten_scale
            p = p * np.float32(rng.uniform(lo, hi))
            img = line_integral_to_image(p)
            img = img + rng.normal(0.0, rng.uniform(0.0, self.intensity.noise_std), img.shape).astype(np.float32)
            out["drr"] = np.clip(img, 0.0, 1.0, out=img)[None]
        else:
            out["drr"] = line_integral_to_image(p)[None]
        if self.train_mode == "xpgan":
            out["ct"] = normalize_hu(resample_to_pose(hu, spacing, pose), self.base.hu_window)[None]
        return out


def checkpoint_state(stream) -> dict:
    """The augmentation RNG state of a CT stream for the checkpoint: mode, key and the next draw number."""
    ds = stream.dataset
    return {"mode": ds.aug, "key": [ds.seed, RNG_SALT, ds.rank], "next_draw": next_draw(stream)}


def next_draw(stream) -> int:
    return (stream.epoch * stream.batches_per_epoch + stream.batch) * stream.batch_size


def check_checkpoint_state(saved: Optional[dict], stream) -> None:
    """On resume: the checkpoint's augmentation state must be the one the restored stream continues."""
    want = checkpoint_state(stream)
    if saved is None or saved.get("mode") != want["mode"] or list(saved.get("key", [])) != want["key"] \
            or int(saved.get("next_draw", -1)) != want["next_draw"]:
        raise XPGANError(f"the checkpoint's augmentation state {saved} does not match this run's {want}; "
                         "resume with the run's own --drr-aug and seed")
