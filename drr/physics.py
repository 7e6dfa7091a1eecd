"""HU -> linear attenuation, and the fixed map from line integrals to image intensities.

Attenuation: mu = mu_water * max(0, 1 + HU/1000), mu_water in 1/mm (default 0.02, about 70 keV).
Air (-1000 HU) gives 0 and lung (about -850 HU) stays distinct from it: nothing below is clamped
except the physically meaningless negative values.

Image map: image = 1 - exp(-(p / P_REF)^2), p = integral of mu dl along the ray (dimensionless).
Monotone, 0 for rays through air, bright where attenuation is high, the same constants for every
image (no per-image normalisation, so intensities are comparable across patients and scanners).
Constants, for PA chest paths at mu_water = 0.02/mm: thin paths (air, the CT table, p < 1) stay
near black because the curve is flat at 0; it is steepest at p = P_REF / sqrt(2) = 2.8, the range of
paths through the lungs (chest wall and ribs plus ~200 mm of lung: p ~ 1.8 -> 0.18, p ~ 3 -> 0.43),
and it saturates slowly above P_REF, keeping the mediastinum (p ~ 5 -> 0.79) and spine (p ~ 7 ->
0.95) apart.  On synthetic chest CTs this gives dark lung fields, a bright heart and spine and a
black background, as a chest radiograph is displayed; the plain 1 - exp(-p / P_REF) was tried and
rejected (lungs grey, low lung/mediastinum contrast).
"""
from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np

from xpgan.errors import DRRArgumentError

MU_WATER_PER_MM = 0.02   # linear attenuation of water, 1/mm (about 70 keV)
P_REF = 4.0              # line-integral scale of the image map (dimensionless)
MAP_POWER = 2.0          # exponent of the image map (Weibull-shaped curve)
IMAGE_MAP_NAME = "one_minus_exp_power"
Output = Literal["image", "line_integral"]
OUTPUTS: tuple[str, ...] = get_args(Output)
OutputOption = Literal[tuple(o.replace("_", "-") for o in OUTPUTS)]  # --output spells line-integral


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """mu (1/mm, float32) from HU: mu_water * max(0, 1 + HU/1000).  NumPy reference, any shape."""
    # (HU + 1000) first, as the kernels do: exact for integer HU, so air (-1000 HU) gives exactly 0
    hu = np.asarray(hu, dtype=np.float32)
    return np.maximum(np.float32(0.0), (hu + np.float32(1000.0)) * np.float32(mu_water / 1000.0)).astype(np.float32)


def line_integral_to_image(p):
    """The documented monotone map of line integrals p >= 0 to [0, 1]: 1 - exp(-(p / P_REF)^2). NumPy in,
    float32 NumPy out; a torch tensor in, a float32 tensor out on its device (differentiable)."""
    if _is_torch(p):
        import torch

        x = torch.clamp(p.float(), min=0.0) / P_REF
        return -torch.expm1(-(x ** MAP_POWER))
    x = np.maximum(np.asarray(p, dtype=np.float32), np.float32(0.0)) / np.float32(P_REF)
    return (-np.expm1(-(x ** np.float32(MAP_POWER)))).astype(np.float32)


def image_to_line_integral(image):
    """Inverse of `line_integral_to_image` on [0, 1) (image 1 maps to +inf). NumPy in, float32 NumPy out; a
    torch tensor in, a float32 tensor out (differentiable; clamp the image below 1 first for a finite p)."""
    if _is_torch(image):
        import torch

        return P_REF * (-torch.log1p(-torch.clamp(image.float(), 0.0, 1.0))) ** (1.0 / MAP_POWER)
    image = np.asarray(image, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return (P_REF * (-np.log1p(-np.clip(image, 0.0, 1.0))) ** (1.0 / MAP_POWER)).astype(np.float32)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def image_map_attrs() -> dict:
    """The image map and its parameters, for store attributes (JSON-serialisable)."""
    return {
        "name": IMAGE_MAP_NAME,
        "formula": "image = 1 - exp(-(p / p_ref) ** power), p = line integral of mu (1/mm) along the ray (mm)",
        "p_ref": P_REF,
        "power": MAP_POWER,
        "attenuation": "mu = mu_water * max(0, 1 + HU/1000)",
        "default_mu_water_per_mm": MU_WATER_PER_MM,
    }


def check_mu_water(mu_water: float) -> float:
    try:
        value = float(mu_water)
    except (TypeError, ValueError):
        raise DRRArgumentError(f"mu_water must be a number in 1/mm, got {mu_water!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise DRRArgumentError(f"mu_water must be a positive finite attenuation in 1/mm, got {mu_water!r}")
    return value
