"""How DRRs are rendered, as command options: the geometry, water attenuation and ray caster that
`drr render` and `prep drr` both offer (one declaration, so both commands show the same defaults)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from xpgan import bounds as B
from xpgan.drr.geometry import GEOMETRY_KINDS, ConeGeometry, Geometry, GeometryKind, View, make_geometry
from xpgan.drr.physics import MU_WATER_PER_MM
from xpgan.drr.render import Backend
from xpgan.errors import DRRArgumentError
from xpgan.options import option


@dataclass
class DRROptions:
    """The DRR geometry (cone or parallel), water attenuation and ray caster. The cone-only options (view,
    distances) default to None, which keeps ConeGeometry's own values; given with --geometry parallel they
    are refused."""

    geometry: GeometryKind = option("cone", "Ray geometry.")
    view: Optional[View] = option(None, "Cone beam direction: pa (source posterior) or ap.",
                                  default_text=ConeGeometry.view)
    size: int = option(ConeGeometry.size, "Detector size, pixels per side (square).", bound=B.DETECTOR_SIZE)
    pixel_mm: Optional[float] = option(None, "Pixel spacing, mm (cone: detector plane; parallel: isocentre plane).",
                                       bound=B.PIXEL_MM, default_text="the field of view fitted to the volume")
    sdd: Optional[float] = option(None, "Cone: source-to-detector distance, mm.", bound=B.DISTANCE_MM,
                                  default_text=f"{ConeGeometry.sdd_mm:g}")
    sid: Optional[float] = option(None, "Cone: source-to-isocentre (volume centre) distance, mm.",
                                  bound=B.DISTANCE_MM, default_text=f"{ConeGeometry.sid_mm:g}")
    mu_water: float = option(MU_WATER_PER_MM, "Linear attenuation of water, 1/mm.", bound=B.MU_WATER)
    backend: Backend = option("auto", "Ray caster (auto: the GPU if present).")

    def make_geometry(self) -> Geometry:
        """The geometry these options describe; None leaves a cone default in place. View and distances apply
        to the cone only (parallel rays run anterior to posterior)."""
        if self.geometry == "cone":
            kw = {"view": self.view or ConeGeometry.view, "size": self.size, "pixel_mm": self.pixel_mm}
            if self.sdd is not None:
                kw["sdd_mm"] = self.sdd
            if self.sid is not None:
                kw["sid_mm"] = self.sid
            return make_geometry("cone", **kw)
        if self.geometry == "parallel":
            if self.view not in (None, "ap") or self.sdd is not None or self.sid is not None:
                raise DRRArgumentError("--view, --sdd and --sid apply to the cone geometry only (parallel rays run "
                                       "anterior to posterior)")
            return make_geometry("parallel", size=self.size, pixel_mm=self.pixel_mm)
        raise DRRArgumentError(f"unknown geometry {self.geometry!r}; allowed: {', '.join(GEOMETRY_KINDS)}")


@dataclass
class PrepDRROptions(DRROptions):
    """DRROptions as `prep drr` offers them: its DRRs are images the networks read, so their size follows the
    networks' rule (bounds.model_image_size) when the command line is read."""

    size: int = option(ConeGeometry.size, "Detector size, pixels per side (square): a power of two >= "
                                          f"{B.CLASSIFIER_MIN_IMAGE}, the sizes the networks read.",
                       bound=B.model_image_size(B.DETECTOR_SIZE))
