"""On-the-fly, 3D-consistent DRR augmentation in training (`xpgan train --drr-aug`, off by default).

    --drr-aug none            the DRRs stored at prep time (the default; Table 2 replication unchanged)
    --drr-aug pose            every CT sample of a step gets a fresh random pose
    --drr-aug pose+intensity  (mode drr only) a pose, then a random exposure (drr/poses.py IntensityRanges):
                              line integrals scaled by U(0.85, 1.15) (beam energy) and Gaussian noise of
                              std U(0, 0.01) on the image

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

Where: on a CPU run, inside DataLoader workers on the CPU kernel (one numba thread per worker; workers are
spawned, not forked, because numba's OpenMP pool is not fork-safe), or in the training process when
num_workers is 0.  On a CUDA device with a usable DRR GPU backend, the workers only read the volume and
draw the pose; `finish_on_device` then renders the batch's posed DRRs from the volumes on the GPU in one
launch (GPU-resident: torch CUDA tensors in and out) and, in mode xpgan, resamples the volumes with torch's
grid_sample there (the same trilinear map as drr/resample.py); exposure noise there comes from a torch
generator seeded by the sample's draw.

Determinism and resume: CT sample k of rank r (counted over the whole run: epoch, batch, position) draws
from np.random.default_rng([seed, 0x4155, r, k]), so the poses do not depend on the worker count or on
which worker renders a sample, and a resume re-draws exactly: k comes from the stream position saved in the
checkpoint, and the checkpoint's "augment" entry (mode, RNG key, next draw) is checked against it.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
from torch.utils.data import Dataset, Sampler

from xpgan.drr.poses import IntensityRanges, PoseRanges
from xpgan.errors import XPGANError
from xpgan.model.config import check_drr_aug
from xpgan.pipeline import schema

RNG_SALT = 0x4155  # "AU": keeps augmentation draws apart from every other stream seeded with `seed`


class KeyedSampler(Sampler):
    """Positions of `chain` as (position, draw number), draw numbers counting up from `start`."""

    def __init__(self, chain, start: int):
        self.chain, self.start = chain, int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for k, pos in enumerate(self.chain, start=self.start):
            yield (int(pos), k)


class AugmentedCT(Dataset):
    """A CTDataset whose samples are re-rendered under random poses (module docstring).

    Indexed by (position, draw number) keys from `KeyedSampler` (BatchStream does this for datasets with
    `keyed`).  Items: {"drr": [1, R, R] in [0, 1], "ct_label", "index"} plus, in mode xpgan,
    "ct": [1, D, H, W] in [-1, 1] (the volume in the posed frame) and its "beam" (model/beam.py)."""

    mp_context = "spawn"  # numba's OpenMP pool does not survive fork once the parent has used it

    def __init__(self, base, *, train_mode: str, aug: str, seed: int, rank: int = 0,
                 ranges: PoseRanges = PoseRanges(), intensity: Optional[IntensityRanges] = None,
                 render_in_workers: bool = True):
        check_drr_aug(train_mode, aug)
        if aug == "none":
            raise XPGANError("an augmented CT dataset needs a --drr-aug other than none")
        self.base, self.train_mode, self.aug = base, train_mode, aug
        self.seed, self.rank, self.ranges = int(seed), int(rank), ranges
        self.intensity = (intensity or IntensityRanges()) if aug == "pose+intensity" else None
        self.geometry, self.mu_water = schema.ct_render_setup(base._g(), base.path,
                                                                 "--drr-aug re-renders DRRs with it")
        if self.geometry.size != base.img_res:
            raise XPGANError(f"{base.path}: the store's geometry has {self.geometry.size} px but its DRRs "
                             f"{base.img_res} px")
        self.block_ids, self.labels, self.indices = base.block_ids, base.labels, base.indices
        self.render_in_workers = bool(render_in_workers)
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
        from xpgan.model.transforms import normalize_hu

        self._one_thread_in_workers()
        pos, draw = key
        j = int(self.indices[pos])
        hu = np.asarray(self.base._a("volume")[j])                                  # [D, H, W] HU
        spacing = np.asarray(self.base._a("spacing")[j], dtype=np.float64)          # [3] mm
        rng = self.rng(draw)
        pose = random_pose(rng, self.ranges)
        if self.train_mode == "xpgan":
            pose["sid_mm"] = None                  # G cannot see the source distance: keep the store's
        if not self.render_in_workers:
            return self._for_device(hu, spacing, pose, rng, pos, j)
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
            out.update(self._beam(pos))
        return out

    def _beam(self, pos: int) -> dict:
        """G's beam for the volume in the posed frame: the unposed ones (resampling keeps shape and spacing)."""
        return {"beam": self.base.beams[pos]} if self.base.beams is not None else {}

    def _for_device(self, hu, spacing, pose, rng, pos: int, j: int) -> dict:
        """What `finish_on_device` needs: the volume, its spacing, the pose (and exposure) of this draw."""
        sid = pose["sid_mm"] if pose["sid_mm"] is not None else np.nan
        out = {"hu": hu, "spacing": spacing, "ct_label": int(self.labels[pos]), "index": j,
               "pose": np.array([pose["yaw_deg"], pose["pitch_deg"], pose["roll_deg"], *pose["offset_mm"], sid])}
        if self.train_mode == "xpgan":
            out.update(self._beam(pos))
        if self.intensity is not None:
            lo, hi = self.intensity.atten_scale
            out["exposure"] = np.array([rng.uniform(lo, hi), rng.uniform(0.0, self.intensity.noise_std)])
            out["noise_seed"] = int(rng.integers(2 ** 62))
        return out


def _pose_from_vector(v) -> dict:
    sid = float(v[6])
    return {"yaw_deg": float(v[0]), "pitch_deg": float(v[1]), "roll_deg": float(v[2]),
            "offset_mm": (float(v[3]), float(v[4]), float(v[5])), "sid_mm": None if np.isnan(sid) else sid}


def resample_to_pose_torch(hu, spacings: np.ndarray, poses: list):
    """torch [B, D, H, W] HU (any device) -> float32 HU in each item's posed frame, air outside; the same
    trilinear map as drr/poses.resample_to_pose (grid_sample, zero padding on HU + 1000)."""
    import torch

    from xpgan.drr.poses import pose_resample_map

    shape = tuple(hu.shape[1:])
    n = np.array(shape, dtype=np.float64)
    perm = [2, 1, 0]  # grid_sample's coordinates run (w, h, d)
    theta = np.zeros((len(poses), 3, 4))
    for b, (sp, pose) in enumerate(zip(spacings, poses)):
        m, start = pose_resample_map(shape, sp, pose)
        # normalised coordinates (align_corners=False): x = (2 i + 1) / n - 1 on both sides
        a = (2.0 / n)[:, None] * m * (n / 2.0)[None, :]
        t = (2.0 / n) * (m @ ((n - 1.0) / 2.0) + start) + 1.0 / n - 1.0
        theta[b, :, :3], theta[b, :, 3] = a[np.ix_(perm, perm)], t[perm]
    vol = (hu.float() + 1000.0)[:, None]                                         # [B, 1, D, H, W], air = 0
    grid = torch.nn.functional.affine_grid(torch.as_tensor(theta, dtype=torch.float32, device=vol.device),
                                           list(vol.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0] - 1000.0


def finish_on_device(batch: dict, dataset: AugmentedCT, device, *, backend: str = "auto") -> dict:
    """A batch of `render_in_workers=False` samples -> {"drr" [B, 1, R, R] (and "ct" [B, 1, D, H, W]),
    "ct_label", "index"} on `device`: all posed DRRs in one render_drr_batch launch (backend "auto": the GPU)."""
    import torch

    from xpgan.drr import render_drr_batch
    from xpgan.drr.poses import apply_pose
    from xpgan.drr.render import finish_output  # the image map on torch tensors (on their device)

    hu = batch.pop("hu").to(device)                                               # [B, D, H, W] HU
    spacings = batch.pop("spacing").numpy().astype(np.float64)                    # [B, 3]
    poses = [_pose_from_vector(v) for v in batch.pop("pose").numpy()]
    # a CUDA tensor is read in place and the result stays on the GPU (drr/render.py); a CPU tensor is
    # rendered by the CPU kernel
    p = render_drr_batch(hu, spacings, [apply_pose(dataset.geometry, q) for q in poses], backend=backend,
                         output="line_integral", mu_water=dataset.mu_water).to(device)   # [B, R, R]
    exposure = batch.pop("exposure", None)
    seeds = batch.pop("noise_seed", None)
    if exposure is not None:
        exposure = exposure.to(device=device, dtype=torch.float32)
        p = p * exposure[:, 0, None, None]
    img = finish_output(p, "image")                                                     # [B, R, R] in [0, 1]
    if exposure is not None:
        noise = torch.stack([torch.randn(img.shape[1:], device=device,
                                         generator=torch.Generator(device=device).manual_seed(int(sd)))
                             for sd in seeds])
        img = (img + noise * exposure[:, 1, None, None]).clamp_(0.0, 1.0)
    batch["drr"] = img[:, None]
    if dataset.train_mode == "xpgan":
        lo, hi = dataset.base.hu_window
        vol = resample_to_pose_torch(hu, spacings, poses)
        batch["ct"] = ((vol - lo) * (2.0 / (hi - lo)) - 1.0).clamp_(-1.0, 1.0)[:, None]
    return batch


def checkpoint_state(stream) -> dict:
    """The augmentation RNG state of a CT stream for the checkpoint: mode, key and the next draw number.
    Rank r draws sample k from default_rng([*key, r, k]); every rank is at the same k (equal shares)."""
    ds = stream.dataset
    return {"mode": ds.aug, "key": [ds.seed, RNG_SALT], "next_draw": next_draw(stream)}


def next_draw(stream) -> int:
    return (stream.epoch * stream.batches_per_epoch + stream.batch) * stream.batch_size


def check_checkpoint_state(saved: Optional[dict], stream) -> None:
    """On resume: the checkpoint's augmentation state must be the one the restored stream continues."""
    want = checkpoint_state(stream)
    if saved is None or saved.get("mode") != want["mode"] or list(saved.get("key", [])) != want["key"] \
            or int(saved.get("next_draw", -1)) != want["next_draw"]:
        raise XPGANError(f"the checkpoint's augmentation state {saved} does not match this run's {want}; "
                         "resume with the run's own --drr-aug and seed")
