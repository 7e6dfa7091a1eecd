"""The allowed range of every numeric option: one table that the command line (at parse time, before any
file is touched) and the configurations (TrainConfig, the demo, prep) read.

A bound refuses what cannot be meant (a negative count, NaN, inf, a number no machine holds in memory or
that has no physical sense), not what is merely unusual; each upper bound says why it is where it is.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

from xpgan.errors import XPGANError


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) >= 1 else f"{x:g}"


@dataclass(frozen=True)
class Bound:
    lo: float
    hi: float
    unit: str = ""           # printed after the range: "pixels", "mm", "1/mm"
    integer: bool = False
    lo_open: bool = False    # lo itself is excluded (a learning rate > 0)
    hi_open: bool = False    # hi itself is excluded (a fraction < 1)
    why: str = ""            # why hi is where it is, printed with a refusal

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        lo = f"> {_num(self.lo)}" if self.lo_open else f">= {_num(self.lo)}"
        hi = f"< {_num(self.hi)}" if self.hi_open else f"<= {_num(self.hi)}"
        unit = f" {self.unit}" if self.unit else ""
        return f"{kind} {lo} and {hi}{unit}"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def check(self, option: str, value: Any) -> Any:
        """`value` when it is within the bound; else XPGANError `OPTION must be ..., got VALUE`."""
        if not self.accepts(value):
            why = f" ({self.why})" if self.why else ""
            raise XPGANError(f"{option} must be {self.describe()}{why}, got {value!r}")
        return value


def _count(hi: float, unit: str = "", lo: float = 1, why: str = "") -> Bound:
    return Bound(lo, hi, unit, integer=True, why=why)


SEED = _count(2**32 - 1, lo=0, why="NumPy seeds are 32-bit")
DETECTOR_SIZE = _count(8192, "pixels", why="an 8192x8192 float32 image and its temporaries take about 1 GiB")
CXR_SIZE = _count(4096, "pixels", lo=8, why="a shard of 64 images of 4096^2 float32 is 4 GiB in the writer's memory")
DEMO_SIZE = _count(512, "pixels", lo=16, why="the demo trains tiny networks on the CPU")

# The image sizes the networks read (model/networks.py): G and D are StyleGAN2 stacks from 4x4 that double
# to the image, the DenseNet121 classifier (every mode has one) halves it five times.
GENERATOR_MIN_IMAGE = 8
CLASSIFIER_MIN_IMAGE = 32
CT_AXIS = _count(1024, "voxels", lo=2)
CT_VOXELS = 512**3   # a stored volume of at most 2^27 voxels: 256 MiB int16, 512 MiB float32 while resized
WORKERS = _count(256, "processes", lo=0)
LOADER_WORKERS = _count(64, "processes", lo=0)
THREADS = _count(256, "threads")
BATCH = _count(4096, "items")
STEPS = _count(10**9, "steps")
EVERY = _count(10**9, "steps")                 # an interval in steps
EVERY_OR_NEVER = _count(10**9, "steps", lo=0)  # 0: never
KEEP = _count(10**6, "checkpoints", lo=0)      # 0: all
EPOCHS = _count(10**6, "epochs")
COUNT = _count(10**9, "items")
INDEX = _count(10**9, lo=0)
DEMO_CT = _count(1000, "studies", lo=2)
DEMO_CXR = _count(100_000, "radiographs", lo=8)
REPEATS = _count(10**6)
LR = Bound(0, 1, lo_open=True)
LOSS_WEIGHT = Bound(0, 1e4)
FRACTION = Bound(0, 1, hi_open=True)
SHARE = Bound(0, 1, lo_open=True)               # a share of items kept: more than none, at most all
MEMORY_GB = Bound(0, 4096, "GB", lo_open=True)
SECONDS = Bound(0, 7 * 86400, "s", lo_open=True)
PIXEL_MM = Bound(0.001, 100, "mm", why="detectors and DRRs have pixels of 0.05 to a few mm")
DISTANCE_MM = Bound(0, 100_000, "mm", lo_open=True)
MU_WATER = Bound(0.005, 1.0, "1/mm", why="water attenuates 0.53/mm at 10 keV and 0.007/mm at 1 MeV")
ANGLE = Bound(-180, 180, "degrees")
OFFSET_MM = Bound(-1000, 1000, "mm", why="a chest CT spans about 300-500 mm: a larger shift of the isocentre "
                  "leaves the volume outside the beam")


def check_offset(option: str, text: str) -> str:
    """`D,H,W` isocentre shift in mm: three numbers, each within OFFSET_MM; returns the text."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise XPGANError(f"{option} must be 3 comma-separated numbers D,H,W in mm, got {text!r}")
    for v in values:
        OFFSET_MM.check(option, v)
    return text


def image_size_rule(minimum: int = CLASSIFIER_MIN_IMAGE) -> str:
    """The networks' image-size rule in words."""
    sizes = ", ".join(str(minimum * 2**k) for k in range(4))
    return f"a power of two >= {minimum} ({sizes}, ...: the image sizes the networks read)"


def image_size_ok(size: Any, minimum: int = CLASSIFIER_MIN_IMAGE) -> bool:
    """Whether the networks read images of `size` px: a power of two >= minimum."""
    return (isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= minimum
            and not size & (size - 1))


def nearest_image_sizes(size: Any, minimum: int = CLASSIFIER_MIN_IMAGE) -> str:
    """`64 or 128`: the sizes the networks read on either side of `size`."""
    lo = minimum
    while isinstance(size, numbers.Real) and math.isfinite(size) and lo * 2 <= size:
        lo *= 2
    return f"{lo} or {lo * 2}" if isinstance(size, numbers.Real) and lo < size else f"{lo}"


def check_image_size(option: str, value: Any, minimum: int = CLASSIFIER_MIN_IMAGE) -> Any:
    """`value` when the networks read images of that side; else XPGANError `OPTION must be a power of two ...`."""
    if not image_size_ok(value, minimum):
        raise XPGANError(f"{option} must be {image_size_rule(minimum)}, got {value!r}; try "
                         f"{nearest_image_sizes(value, minimum)}")
    return value


def model_image_size(bound: Bound):
    """The rule of an option that sizes images a model will read (prep --size, demo --size): within `bound`
    and a size the networks read (check_image_size), checked when the command line is read."""

    def check(option: str, value: Any) -> Any:
        return check_image_size(option, bound.check(option, value))

    return check


def check_ct_shape(option: str, shape: Sequence[Any]) -> tuple[int, int, int]:
    """D H W: each axis within CT_AXIS and the volume at most CT_VOXELS voxels."""
    if len(shape) != 3:
        raise XPGANError(f"{option} needs three sizes D H W, got {tuple(shape)}")
    d, h, w = (CT_AXIS.check(option, v) for v in shape)
    if d * h * w > CT_VOXELS:
        raise XPGANError(f"{option} {d} {h} {w}: {d * h * w:,} voxels ({d * h * w * 4 / 2**30:.1f} GiB as float32 "
                         f"per volume); the largest allowed volume is {CT_VOXELS:,} voxels (e.g. 512 512 512)")
    return d, h, w


def check_dask_address(option: str, address: str) -> str:
    """[SCHEME://]HOST:PORT of a Dask scheduler (tcp, tls, ucx, ws, wss, inproc)."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    host, colon, port = rest.rpartition(":")
    ok = scheme in ("tcp", "tls", "ucx", "ws", "wss") and colon and host and port.isdigit() and 0 < int(port) < 65536
    if scheme == "inproc" and rest:
        ok = True
    if not ok:
        raise XPGANError(f"{option} must be a Dask scheduler address such as tcp://HOST:8786, got {address!r}")
    return address

