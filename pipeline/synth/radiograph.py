"""The radiograph simulator of the synthetic CXR archive: phantom line integrals to a film-like image in [0, 1].

simulate_radiograph(p, rng, *, exposure, photons, scatter, gamma, blur_px, unsharp) -> float32 [H, W] in [0, 1]
line_integrals(ph, view, size) -> float32 [size, size]: frontal views cast through the DRR ray caster (cone,
radiography distances), lateral views summed through the volume.  Side markers and collimation are drawn here.
"""
from __future__ import annotations

import numpy as np

from xpgan.drr.physics import MU_WATER_PER_MM, hu_to_mu
from xpgan.pipeline.synth.anatomy import Phantom

__all__ = ["simulate_radiograph", "line_integrals", "add_marker", "collimate"]

# 5x7 bitmaps of the lead side markers.
_GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


def _gauss_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return img
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma_px, mode="nearest")


def simulate_radiograph(
    p: np.ndarray,              # [H, W] line integrals of mu (dimensionless), display orientation
    rng: np.random.Generator,
    *,
    exposure: float = 1.0,      # relative dose (scales photon counts and shifts the film curve)
    photons: float = 4000.0,    # photons per pixel in air at exposure 1
    scatter: float = 0.5,       # scatter-to-primary ratio (broad Gaussian halo)
    gamma: float = 3.0,         # film contrast: slope of the H&D curve per decade of exposure
    blur_px: float = 1.0,       # detector/focal-spot blur, pixels (Gaussian sigma)
    unsharp: float = 0.3,       # edge enhancement of the processing (unsharp-mask gain)
) -> np.ndarray:
    """A radiograph as a person sees it, in [0, 1] (bright = attenuating), from line integrals.

    A different detector response than the DRRs' fixed `1 - exp(-p / p_ref)`: primary exp(-p) plus scatter,
    Poisson quantum noise, blur, a sigmoid film (H&D) curve of log exposure anchored on the lung fields
    (`exposure` moves the anchor), then unsharp-mask edge enhancement.
    """
    p = np.asarray(p, dtype=np.float64)
    prim = np.exp(-np.maximum(p, 0.0))
    sig_s = 0.08 * max(p.shape)
    intensity = prim + scatter * _gauss_blur(prim, sig_s) * (prim.mean() / max(1e-9, _gauss_blur(prim, sig_s).mean()))
    counts = rng.poisson(np.maximum(intensity, 0.0) * photons * exposure) + 0.5
    intensity = _gauss_blur(counts / (photons * exposure), blur_px)
    log_e = np.log10(intensity)
    # Anchor: the film's mid-density sits between the lung fields and the mediastinum of this image.
    body = p > 0.5
    ref = np.percentile(log_e[body], 40) if body.any() else np.median(log_e)
    ref += 0.15 * np.log10(exposure)
    img = 1.0 / (1.0 + np.exp(gamma * np.log(10.0) * (log_e - ref)))  # low exposure -> bright
    if unsharp:
        img = img + unsharp * (img - _gauss_blur(img, 0.03 * max(p.shape)))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def add_marker(img: np.ndarray, side: str, rng: np.random.Generator) -> None:
    """A lead side marker naming the patient's side it lies on (radiographic convention): the image is in
    display orientation (patient's right on the image's left), so "R" goes near the left edge and "L" near
    the right edge, at a random height in the top eighth."""
    if side not in ("L", "R"):
        raise ValueError(f"side must be 'L' or 'R', got {side!r}")
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[side]])
    cell = max(2, img.shape[0] // 90)
    g = np.kron(glyph, np.ones((cell, cell), bool))
    r0 = int(rng.integers(img.shape[0] // 30, img.shape[0] // 8))
    margin = int(img.shape[1] // 20)
    c0 = margin if side == "R" else img.shape[1] - margin - g.shape[1]
    img[r0:r0 + g.shape[0], c0:c0 + g.shape[1]][g] = 0.97


def collimate(img: np.ndarray, rng: np.random.Generator) -> None:
    """Shutter edges: a band on some sides left unexposed (white) or masked black by the processing."""
    h, w = img.shape
    value = 0.96 if rng.uniform() < 0.5 else 0.02
    for side in range(4):
        if rng.uniform() < 0.6:
            n = int(rng.integers(max(1, h // 40), max(2, h // 12)))
            if side == 0:
                img[:n] = value
            elif side == 1:
                img[-n:] = value
            elif side == 2:
                img[:, :n] = value
            else:
                img[:, -n:] = value


def line_integrals(ph: Phantom, view: str, size: int, *, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """[size, size] line integrals of a frontal (cone) or lateral (parallel) projection of the phantom."""
    sd, sh, sw = ph.spacing
    if view != "L":
        from xpgan.drr import ConeGeometry, render_drr

        # Radiography distances differ from the DRR defaults: 1.5 m PA, a 1 m portable AP.
        geo = ConeGeometry(view="pa" if view == "PA" else "ap", sdd_mm=1500.0 if view == "PA" else 1000.0,
                           sid_mm=1300.0 if view == "PA" else 800.0, size=size)
        return np.asarray(render_drr(ph.hu, ph.spacing, geo, backend="cpu", output="line_integral",
                                     mu_water=mu_water), dtype=np.float32)
    p = hu_to_mu(ph.hu, mu_water).sum(axis=2) * sw                          # [d, h]: anterior on the left
    ext = (ph.hu.shape[0] * sd, ph.hu.shape[1] * sh)
    # Square pixels over a square field fitted to the larger extent, centred.
    from scipy.ndimage import map_coordinates

    fov = max(ext)
    c = (np.arange(size) + 0.5) / size * fov - fov / 2.0
    rr = (c + ext[0] / 2.0) / (ext[0] / p.shape[0]) - 0.5
    cc = (c + ext[1] / 2.0) / (ext[1] / p.shape[1]) - 0.5
    R, C = np.meshgrid(rr, cc, indexing="ij")
    return map_coordinates(p, [R, C], order=1, mode="constant", cval=0.0).astype(np.float32)
