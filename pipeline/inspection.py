"""`xpgan inspect STORE`: a text summary of a CT or CXR store and an optional PNG contact sheet.

Public API
----------
inspect_store(store, *, sheet=None, item=None, max_tiles=48, poses=False) -> str
    Summary: item and done counts, counts per label and severity (CT) or per split x label x source (CXR),
    failures, and the geometry / physics / resize attributes. With `sheet` a PNG is written:
    - CT: a grid of DRRs (done items, evenly spread), each titled with study id, label and severity;
    - CXR: one row block per (split, label) with sample images, titled with source and label;
    - `item=I` (CT): the DRR beside axial, coronal and sagittal mid-slices of volume I (lung window,
      aspect from the voxel spacing); (CXR): the image. Images are drawn in display orientation: head at the
      top and the patient's right on the image's left (DRR, coronal); axial: anterior at the top, patient
      right on the left; sagittal: anterior on the left; each panel marks its edges (R/L, A/P, S). Never
      draws a patient hash.
    - `item=I, poses=True` (CT): the stored DRR, its zero-pose re-render from the stored volume, and random
      posed views as `--drr-aug` draws them (drr/poses.py PoseRanges), each titled with its pose.
summarize_store(group) -> str
check_store(store, *, full=False, deep=False) -> (text, damaged item count)
    The chunks of every done item (xpgan.pipeline.verify): cheap (shard files, indexes, small chunks, each
    chunk's checksum against its item's digest) or, with `full` (`xpgan inspect --verify`), every chunk read
    back against its checksum; `deep` (`--verify --deep`, CT): also DEEP_SAMPLE DRRs, spread over the store,
    re-rendered from their stored volumes and compared (rerender_problems).
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from xpgan import bounds as B
from xpgan.errors import XPGANError, check_writable
from xpgan.options import argument, option
from xpgan.pipeline import schema


@dataclass
class InspectConfig:
    """`inspect`: the store, and what is checked and drawn."""

    store: Path = argument("A CT or CXR Zarr store made by xpgan prep.", "STORE")
    sheet: Optional[Path] = option(None, "Write a PNG contact sheet: FILE.png, or an existing folder (the sheet is "
                                         "named after the store inside it).")
    item: Optional[int] = option(None, "Sheet of one item (CT: DRR beside axial, coronal and sagittal mid-slices) "
                                       "instead of the grid.", bound=B.INDEX)
    verify: bool = option(False, "Read every chunk of every done item back against its checksum (without: shard "
                                 "files, indexes and small chunks only).")
    deep: bool = option(False, "With --verify (CT store): also re-render 8 DRRs, spread over the store, from their "
                               "stored volumes and compare.")
    poses: bool = option(False, "With --item (CT): random posed views of the study, as train --drr-aug draws them, "
                                "rendered from the stored volume.")


def inspect_from(cfg: InspectConfig) -> tuple[str, int]:
    """The `inspect` command: (its text, how many done items have missing or damaged data). The summary is
    replaced by a one-line note when the store is too damaged to summarise (the damage report says why)."""
    if cfg.deep and not cfg.verify:
        raise XPGANError("--deep goes with --verify: xpgan inspect --verify --deep STORE")
    sheet = sheet_path(cfg.sheet, cfg.store, cfg.item, cfg.poses)  # refused before any reading
    report, damaged = check_store(cfg.store, full=cfg.verify, deep=cfg.deep)
    try:
        summary = inspect_store(cfg.store, sheet=sheet, item=cfg.item, poses=cfg.poses)
    except schema.StoreDamageError as exc:
        if not damaged:
            raise
        summary = f"{cfg.store}: no summary: {exc}"
    return f"{summary}\n{report}", damaged

LABEL_NAMES = {schema.LABEL_POSITIVE: "pos", schema.LABEL_NEGATIVE: "neg", schema.LABEL_UNKNOWN: "unk"}
SPLIT_NAMES = schema.SPLIT_NAMES


def _read(group, name: str, selection=Ellipsis):
    """group[name][selection] as NumPy; damaged chunks are a one-line StoreDamageError."""
    return schema.read(group, getattr(group.store, "root", ""), name, selection)


def _str_array(group, name: str) -> list[str]:
    return [str(s) for s in _read(group, name).tolist()]


def _fmt_attrs(d: dict, indent: str = "  ") -> list[str]:
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"{indent}{k}:")
            lines += _fmt_attrs(v, indent + "  ")
        else:
            lines.append(f"{indent}{k}: {v}")
    return lines


def _writing_note(path: str, meta: dict) -> str:
    """What the store's state means for its user: prep writing it now, or a prep run that did not finish."""
    from xpgan.pipeline.store import lock_holder

    holder = lock_holder(path) if path else None
    if holder is not None:
        who = f" (pid {holder})" if holder else ""
        return (f" (a prep run{who} is writing it now: wait for it to finish; train/eval/generate refuse it "
                "until then, unless --allow-incomplete)")
    if meta.get(schema.COMPLETE, True):
        return ""
    return " (its last prep run did not finish: rerun it to resume; train/eval/generate refuse it until then)"


def summarize_store(group, path: str = "") -> str:
    meta = dict(group.attrs[schema.META])
    kind = meta.get(schema.KIND, "?")
    done = _read(group, "done").astype(bool)
    n = int(done.size)
    lines = [f"{path}: {kind} store, {n} items, {int(done.sum())} done, {n - int(done.sum())} not done"
             + _writing_note(path, meta)]
    arrays = ", ".join(f"{name} {group[name].dtype} {tuple(group[name].shape)}" for name in sorted(group.array_keys()))
    lines.append(f"arrays: {arrays}")
    label = _read(group, "label") if "label" in group else np.full(n, -1)
    if kind == "ct":
        counts = Counter(int(v) for v in label[done])
        lines.append("label (done items): " + ", ".join(f"{LABEL_NAMES.get(k, k)}={counts[k]}"
                                                       for k in sorted(counts, reverse=True)))
        if "severity" in group:
            sev = _read(group, "severity")[done]
            sc = Counter(int(v) for v in sev)
            lines.append("severity (done items): " + ", ".join(
                (f"CT-{k}={sc[k]}" if k >= 0 else f"unknown={sc[k]}") for k in sorted(sc)))
    elif kind == "cxr":
        split = _read(group, "split") if "split" in group else np.zeros(n, int)
        source = _str_array(group, "source") if "source" in group else [""] * n
        table = Counter((source[i], int(split[i]), int(label[i])) for i in np.flatnonzero(done))
        lines.append("counts (done items): source / split: neg pos")
        for src in sorted({k[0] for k in table}):
            for sp in (0, 1):
                neg, pos = table[(src, sp, 0)], table[(src, sp, 1)]
                if neg or pos:
                    lines.append(f"  {src or '-'} / {SPLIT_NAMES.get(sp, sp)}: {neg} {pos}")
        if "patient" in group:
            pats = _str_array(group, "patient")
            tr = {pats[i] for i in np.flatnonzero(done & (split == 0)) if pats[i]}
            te = {pats[i] for i in np.flatnonzero(done & (split == 1)) if pats[i]}
            lines.append(f"patients: {len(tr)} train, {len(te)} test, {len(tr & te)} on both sides")
    from xpgan.pipeline.store import failure_count

    failures = list(group.attrs.get("failures", []))
    total = failure_count(group)
    lines.append(f"failures: {total}" + (f" (the first {len(failures)} here; all in {schema.failures_csv_path(path)})"
                                         if total > len(failures) else ""))
    for f in failures[:20]:
        where = f.get("path") or f.get("source") or f.get("id") or ""
        lines.append(f"  [{f.get('index')}] {where}: {f.get('reason', '')}")
    if total > 20:
        lines.append(f"  ... and {total - 20} more")
    skip = {"identity", "failures", schema.ARRAY_METADATA}
    lines.append("attributes:")
    lines += _fmt_attrs({k: v for k, v in meta.items() if k not in skip}, "  ")
    return "\n".join(lines)


def _even_pick(indices: np.ndarray, k: int) -> np.ndarray:
    if indices.size <= k:
        return indices
    return indices[np.linspace(0, indices.size - 1, k).round().astype(int)]


def wrapped_name(text: str, width: int = 18) -> str:
    """A name over as many title lines of at most `width` characters as it needs (never cut), broken after
    '-', '_' or a space where it can."""
    lines, line = [], ""
    for piece in re.findall(r"[^-_ ]*[-_ ]?", str(text)):
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        while len(piece) > width:
            lines.append(piece[:width])
            piece = piece[width:]
        line += piece
    return "\n".join(x.rstrip(" ") for x in lines + [line] if x)


def sheet_path(sheet: str | os.PathLike | None, store: Path, item: int | None, poses: bool) -> Path | None:
    """Where the sheet goes: `--sheet FILE.png` as given; an existing folder gets the default name inside it
    (STORE.png, STORE.itemN.png, STORE.itemN.poses.png); no --sheet with --item: that name beside the store.
    Anything else is refused before any drawing."""
    name = f"{store.name}{f'.item{item}' if item is not None else ''}{'.poses' if poses else ''}.png"
    if sheet is None:
        return store.with_name(name) if item is not None else None
    sheet = Path(sheet)
    if sheet.is_dir():
        sheet = sheet / name
    elif sheet.suffix.lower() != ".png":
        raise XPGANError(f"{sheet}: --sheet must be a .png file or an existing folder")
    check_writable(sheet, "sheet")
    return sheet


def _figure(ncols: int, nrows: int, tile_in: float = 1.8):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * tile_in, nrows * (tile_in + 0.4)), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def _save(fig, sheet: Path) -> None:
    import matplotlib.pyplot as plt

    sheet.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(sheet, dpi=100, facecolor="white")
    plt.close(fig)


def _ct_grid(group, sheet: Path, max_tiles: int) -> int:
    done = np.flatnonzero(_read(group, "done").astype(bool))
    pick = _even_pick(done, max_tiles)
    if pick.size == 0:
        raise XPGANError(f"{sheet}: no done items to draw")
    ids = _str_array(group, "study_id")
    label = _read(group, "label")
    sev = _read(group, "severity") if "severity" in group else np.full(label.shape, -1)
    ncols = int(min(8, pick.size))
    nrows = int(np.ceil(pick.size / ncols))
    fig, axes = _figure(ncols, nrows)
    for ax, i in zip(axes.flat, pick):
        ax.imshow(_read(group, "drr", int(i)), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        s = f" CT-{sev[i]}" if sev[i] >= 0 else ""
        ax.set_title(f"{wrapped_name(ids[i])}\n{LABEL_NAMES.get(int(label[i]), label[i])}{s}", fontsize=7)
    fig.suptitle("DRRs (head at top, patient right on image left)", fontsize=9)
    _save(fig, sheet)
    return int(pick.size)


def _cxr_grid(group, sheet: Path, max_tiles: int) -> int:
    done = _read(group, "done").astype(bool)
    label = _read(group, "label")
    split = _read(group, "split") if "split" in group else np.zeros(label.shape, int)
    source = _str_array(group, "source") if "source" in group else [""] * label.size
    blocks = [(sp, lb) for sp in (0, 1) for lb in (1, 0)]
    per_row = 8
    rows = []
    for sp, lb in blocks:
        idx = np.flatnonzero(done & (split == sp) & (label == lb))
        if idx.size:
            rows.append((sp, lb, _even_pick(idx, per_row)))
    if not rows:
        raise XPGANError(f"{sheet}: no done items to draw")
    ncols = max(r[2].size for r in rows)
    fig, axes = _figure(ncols, len(rows))
    for r, (sp, lb, idx) in enumerate(rows):
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(_read(group, "image", int(i)), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"{SPLIT_NAMES.get(sp, sp)} {LABEL_NAMES.get(lb, lb)}\n{wrapped_name(source[i])}", fontsize=7)
    fig.suptitle("CXR store: one row per split x label", fontsize=9)
    _save(fig, sheet)
    return int(sum(r[2].size for r in rows))


def _ct_item(group, sheet: Path, i: int) -> None:
    vol = _read(group, "volume", i).astype(np.float32)  # [D, H, W] HU
    sd, sh, sw = (float(v) for v in _read(group, "spacing", i))
    ids = _str_array(group, "study_id")
    label = int(_read(group, "label", i))
    d, h, w = vol.shape
    win = {"cmap": "gray", "vmin": -1000.0, "vmax": 400.0, "interpolation": "nearest"}
    fig, axes = _figure(4, 1, tile_in=3.0)
    axes[0, 0].imshow(_read(group, "drr", i), cmap="gray", vmin=0.0, vmax=1.0)
    axes[0, 0].set_title("DRR", fontsize=9)
    axes[0, 1].imshow(vol[d // 2], aspect=sh / sw, **win)  # rows anterior->posterior, cols right->left
    axes[0, 1].set_title(f"axial d={d // 2}", fontsize=9)
    axes[0, 2].imshow(vol[:, h // 2, :], aspect=sd / sw, **win)  # rows superior->inferior, cols right->left
    axes[0, 2].set_title(f"coronal h={h // 2}", fontsize=9)
    axes[0, 3].imshow(vol[:, :, w // 2], aspect=sd / sh, **win)  # rows superior->inferior, cols anterior->posterior
    axes[0, 3].set_title(f"sagittal w={w // 2}", fontsize=9)
    for ax, (left, right, top) in zip(axes[0], (("R", "L", "S"), ("R", "L", "A"), ("R", "L", "S"), ("A", "P", "S"))):
        _orientation_marks(ax, left, right, top)
    fig.suptitle(f"item {i}: {ids[i]}  label {LABEL_NAMES.get(label, label)}  spacing "
                 f"({sd:.2f}, {sh:.2f}, {sw:.2f}) mm  [window -1000..400 HU]", fontsize=9)
    _save(fig, sheet)


def _orientation_marks(ax, left: str, right: str, top: str) -> None:
    """The patient directions at a panel's left, right and top edges (R/L, A/P, S), in yellow on the image."""
    style = {"color": "yellow", "fontsize": 9, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.03, 0.5, left, ha="left", va="center", **style)
    ax.text(0.97, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.97, top, ha="center", va="top", **style)


def _ct_poses(group, store: Path, sheet: Path, i: int, n_views: int = 6, seed: int = 0) -> None:
    from xpgan.drr import render_drr_views
    from xpgan.drr.poses import apply_pose, random_pose

    drr = np.asarray(group["drr"][i], dtype=np.float32)
    base, mu_water = schema.ct_render_setup(group, store, "--poses cannot re-render its DRRs", size=int(drr.shape[-1]))
    rng = np.random.default_rng([seed, i])
    poses = [{}] + [random_pose(rng) for _ in range(n_views)]
    views = render_drr_views(np.asarray(group["volume"][i]), np.asarray(group["spacing"][i], dtype=np.float64),
                             [apply_pose(base, p) for p in poses], backend="auto", mu_water=mu_water)
    fig, axes = _figure(4, -(-(n_views + 2) // 4), tile_in=2.4)
    tiles = [(drr, "stored DRR")] + [(v, _pose_title(p, base)) for v, p in zip(views, poses)]
    for ax, (img, title) in zip(axes.flat, tiles):
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=7)
    ids = _str_array(group, "study_id")
    fig.suptitle(f"item {i}: {ids[i]}  posed views as --drr-aug draws them (yaw + = LAO, pitch + = cranial, "
                 f"roll + = clockwise)", fontsize=8)
    _save(fig, sheet)


def _pose_title(pose: dict, base) -> str:
    if not pose:
        return "re-rendered, zero pose"
    off = ", ".join(f"{v:+.0f}" for v in pose["offset_mm"])
    sid = f" SID {pose['sid_mm']:.0f}" if getattr(base, "sid_mm", None) is not None else ""
    return (f"yaw {pose['yaw_deg']:+.1f} pitch {pose['pitch_deg']:+.1f} roll {pose['roll_deg']:+.1f}\n"

            f"offset ({off}) mm{sid}")


def _cxr_item(group, sheet: Path, i: int) -> None:
    fig, axes = _figure(1, 1, tile_in=4.0)
    axes[0, 0].imshow(_read(group, "image", i), cmap="gray", vmin=0.0, vmax=1.0)
    src = _str_array(group, "source")[i] if "source" in group else ""
    axes[0, 0].set_title(f"item {i} {src} label {int(_read(group, 'label', i))}", fontsize=9)
    _save(fig, sheet)


def inspect_store(store: str | os.PathLike, *, sheet: str | os.PathLike | None = None, item: int | None = None,
                  max_tiles: int = 48, poses: bool = False) -> str:
    """Summary text of a CT or CXR store; writes a PNG contact sheet when `sheet` is given."""
    store = Path(store)
    group = schema.open_store(store)
    kind = group.attrs[schema.META].get(schema.KIND)
    if kind not in ("ct", "cxr"):
        raise XPGANError(f"{store}: unknown store kind {kind!r} (expected ct or cxr)")
    text = summarize_store(group, str(store))
    n = int(group["done"].shape[0])
    if poses and (item is None or kind != "ct"):
        raise XPGANError("--poses needs a CT store and --item N (the study whose posed views are drawn)")
    if item is not None:
        if not 0 <= item < n:
            raise XPGANError(f"--item {item} is out of range: the store has items 0..{n - 1}")
        if not bool(_read(group, "done", item)):
            raise XPGANError(f"--item {item} is not done (failed or not yet processed)")
    sheet = sheet_path(sheet, store, item, poses)
    if sheet is not None:
        if item is not None and poses:
            _ct_poses(group, store, sheet, item)
            text += f"\nsheet: {sheet} (item {item}, posed views)"
        elif item is not None:
            (_ct_item if kind == "ct" else _cxr_item)(group, sheet, item)
            text += f"\nsheet: {sheet} (item {item})"
        else:
            k = (_ct_grid if kind == "ct" else _cxr_grid)(group, sheet, max_tiles)
            text += f"\nsheet: {sheet} ({k} images)"
    return text


DEEP_SAMPLE = 8  # DRRs re-rendered by `inspect --verify --deep`
DEEP_TOLERANCE = 1e-3  # largest difference allowed between a stored DRR and its re-render (image in [0, 1])


def rerender_problems(group, store: Path, sample: int = DEEP_SAMPLE) -> list:
    """verify.Problems for the DRRs, among `sample` done items spread over a CT store, that differ from a
    re-render of their stored volume and spacing with the store's geometry and physics (more than
    DEEP_TOLERANCE): a DRR that does not belong to its volume."""
    from xpgan.drr import render_drr
    from xpgan.pipeline.verify import Problem

    done = np.flatnonzero(_read(group, "done").astype(bool))
    pick = _even_pick(done, sample)
    if not pick.size:
        return []
    size = int(group["drr"].shape[-1])
    geometry, mu_water = schema.ct_render_setup(group, store, "--deep cannot re-render its DRRs", size=size)
    bad = []
    for i in pick.tolist():
        stored = _read(group, "drr", i)
        again = render_drr(_read(group, "volume", i), _read(group, "spacing", i).astype(np.float64), geometry,
                           backend="auto", output="image", mu_water=mu_water)
        diff = float(np.max(np.abs(np.asarray(again, dtype=np.float32) - stored)))
        if not diff <= DEEP_TOLERANCE:
            bad.append(Problem("drr", schema.chunk_file(group["drr"], i),
                               f"the stored DRR differs from a re-render of the stored volume (max difference "
                               f"{diff:.4f})", (i,)))
    return bad


def check_store(store: str | os.PathLike, *, full: bool = False, deep: bool = False) -> tuple[str, int]:
    """Text about the chunks of every done item, and how many done items have missing or damaged data.
    `deep` (CT stores): also re-render a sample of DRRs from their stored volumes (rerender_problems)."""
    from xpgan.pipeline.verify import scan

    store = Path(store)
    group = schema.open_store(store)
    found = scan(group, store, full=full)
    if deep and group.attrs[schema.META].get(schema.KIND) == "ct" and not found.problems:
        found.problems += rerender_problems(group, store)
    depth = "every chunk read back" if full else "shard files, shard indexes and small chunks checked"
    if deep and group.attrs[schema.META].get(schema.KIND) == "ct":
        depth += f"; up to {DEEP_SAMPLE} DRRs re-rendered from their volumes"
    if full and found.version < 2:
        depth += (f"; format version {found.version} has no chunk checksums: chunks were decoded, but changed "
                  "bytes may go unnoticed; prep again with --overwrite to add them")
    damaged = found.damaged_items
    if not found.problems:
        return f"verify: {found.n_done} done items OK ({depth})", 0
    lines = [f"verify: {len(damaged)} of {found.n_done} done items have missing or damaged data ({depth}):"]
    lines += [f"  {p.line()}" for p in found.problems[:20]]
    if len(found.problems) > 20:
        lines.append(f"  ... and {len(found.problems) - 20} more")
    lines.append(f"  rerun the prep command that made {store} to redo them")
    return "\n".join(lines), max(1, len(damaged))
