"""One ray's exact radiological path (Siddon's method, Jacobs' incremental form), backend-neutral.

`ray_integral` is plain Python on scalars and a flat array, so the same source is compiled by
`numba.njit` for the CPU kernel and by `numba.cuda.jit(device=True)` for the GPU kernel: both
backends share one definition of every rounding-sensitive step.

Conventions (see geometry.py for the frame): the ray is a + t*(b - a), t >= 0, clipped to the box
[0, nd*sd] x [0, nh*sh] x [0, nw*sw]; voxel i along an axis covers [i*s, (i+1)*s), so a ray lying
exactly on an interior voxel plane is charged to the voxel on the plane's upper side, and one on
the box's upper face misses.  The result is sum(length_mm * max(0, vol[voxel] + offset)) over
crossed voxels: with HU and offset 1000 that is sum(length * (1 + HU/1000)) * 1000, so the kernels read
the HU volume as it is (int16 or float32: no conversion pass, half the memory traffic for int16) and
the caller multiplies by mu_water / 1000.

Loop structure (Jacobs' incremental stepping, reorganised for speed): the axis crossed most often
(the "main" axis: anterior-posterior for chest views) is handled in runs.  Between two crossings of
the other ("minor") axes, the number of main-axis crossings is known in advance, every voxel strictly
inside the run has the same length (the main axis increment), so the run is a counted loop that
only sums voxel values (an integer sum for int16 HU): no compare, no float dependency per voxel.
Minor-axis crossings are single incremental steps.  Exits are detected by integer crossing counts,
so no voxel outside the volume is ever read whatever the rounding.
"""
from __future__ import annotations

import math


def ray_integral(vol, offset, base, nd, nh, nw, sd, sh, sw, ax, ay, az, bx, by, bz):
    """sum over voxels of (path length, mm) * max(0, vol[base + (i*nh + j)*nw + k] + offset), ray a -> b -> beyond."""
    dx = bx - ax
    dy = by - ay
    dz = bz - az
    inf = math.inf
    ex = nd * sd
    ey = nh * sh
    ez = nw * sw
    tmin = 0.0
    tmax = inf
    # Entry and exit parameters: intersection of the three slabs.  An axis the ray does not move
    # along only decides hit or miss (half-open, like the voxels).
    if dx != 0.0:
        t0 = -ax / dx
        t1 = (ex - ax) / dx
        tmin = max(tmin, min(t0, t1))
        tmax = min(tmax, max(t0, t1))
    elif not (0.0 <= ax < ex):
        return 0.0
    if dy != 0.0:
        t0 = -ay / dy
        t1 = (ey - ay) / dy
        tmin = max(tmin, min(t0, t1))
        tmax = min(tmax, max(t0, t1))
    elif not (0.0 <= ay < ey):
        return 0.0
    if dz != 0.0:
        t0 = -az / dz
        t1 = (ez - az) / dz
        tmin = max(tmin, min(t0, t1))
        tmax = min(tmax, max(t0, t1))
    elif not (0.0 <= az < ez):
        return 0.0
    if not (tmin < tmax) or (dx == 0.0 and dy == 0.0 and dz == 0.0):
        return 0.0

    # Entry voxel from the entry point, clamped: the entry face itself rounds to either side.
    ix = min(max(int(math.floor((ax + tmin * dx) / sd)), 0), nd - 1)
    iy = min(max(int(math.floor((ay + tmin * dy) / sh)), 0), nh - 1)
    iz = min(max(int(math.floor((az + tmin * dz) / sw)), 0), nw - 1)

    # Per axis: parameter of the next plane crossing, the increment between crossings, the flat index
    # step, and the number of crossings left before the one that leaves the box.
    plane_stride = nh * nw
    if dx > 0.0:
        tx = ((ix + 1) * sd - ax) / dx
        dtx = sd / dx
        stepx = plane_stride
        leftx = nd - 1 - ix
    elif dx < 0.0:
        tx = (ix * sd - ax) / dx
        dtx = -sd / dx
        stepx = -plane_stride
        leftx = ix
    else:
        tx = inf
        dtx = inf
        stepx = 0
        leftx = 0
    if dy > 0.0:
        ty = ((iy + 1) * sh - ay) / dy
        dty = sh / dy
        stepy = nw
        lefty = nh - 1 - iy
    elif dy < 0.0:
        ty = (iy * sh - ay) / dy
        dty = -sh / dy
        stepy = -nw
        lefty = iy
    else:
        ty = inf
        dty = inf
        stepy = 0
        lefty = 0
    if dz > 0.0:
        tz = ((iz + 1) * sw - az) / dz
        dtz = sw / dz
        stepz = 1
        leftz = nw - 1 - iz
    elif dz < 0.0:
        tz = (iz * sw - az) / dz
        dtz = -sw / dz
        stepz = -1
        leftz = iz
    else:
        tz = inf
        dtz = inf
        stepz = 0
        leftz = 0

    # Main axis m: the smallest increment; a and b are the minor axes.
    if dty <= dtx and dty <= dtz:
        tm, dtm, sm, lm = ty, dty, stepy, lefty
        ta, dta, sa, la = tx, dtx, stepx, leftx
        tb, dtb, sb, lb = tz, dtz, stepz, leftz
    elif dtz <= dtx:
        tm, dtm, sm, lm = tz, dtz, stepz, leftz
        ta, dta, sa, la = tx, dtx, stepx, leftx
        tb, dtb, sb, lb = ty, dty, stepy, lefty
    else:
        tm, dtm, sm, lm = tx, dtx, stepx, leftx
        ta, dta, sa, la = ty, dty, stepy, lefty
        tb, dtb, sb, lb = tz, dtz, stepz, leftz

    inv_dtm = 1.0 / dtm
    zero = offset - offset  # 0 of the value type: integer sums for integer volumes and offsets
    idx = base + (ix * nh + iy) * nw + iz
    t = tmin
    acc = 0.0
    while True:
        tnext = min(ta, tb)
        if tm <= tnext:
            # n main crossings at tm + j*dtm (j < n) come before the next minor one; if that reaches
            # the lm-th crossing, the last one leaves the box.
            kf = (tnext - tm) * inv_dtm
            if kf >= lm:
                n = lm + 1
            else:
                n = int(kf) + 1
            acc += (tm - t) * max(zero, vol[idx] + offset)
            run = zero
            for _ in range(n - 1):
                idx += sm
                run += max(zero, vol[idx] + offset)
            acc += run * dtm
            if n > lm:
                break
            idx += sm
            lm -= n
            t = tm + (n - 1) * dtm
            tm = tm + n * dtm
        elif ta <= tb:
            acc += (ta - t) * max(zero, vol[idx] + offset)
            if la == 0:
                break
            la -= 1
            t = ta
            ta += dta
            idx += sa
        else:
            acc += (tb - t) * max(zero, vol[idx] + offset)
            if lb == 0:
                break
            lb -= 1
            t = tb
            tb += dtb
            idx += sb
    return acc * math.sqrt(dx * dx + dy * dy + dz * dz)
