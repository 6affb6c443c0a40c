"""A patch index built up front from a list of containers: what a training epoch will read.

The index is plain NumPy (no torch needed), seeded and reproducible, and cheap to pickle into
DataLoader workers. Patch coordinates are in the pixels of the chosen level.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from csp.container.cache import default_pool
from csp.container.reader import ContainerReader
from csp.errors import CspError

ENTRY_DTYPE = np.dtype([("slide", "<i4"), ("level", "<i2"), ("x", "<i4"), ("y", "<i4"), ("label", "<i8")])
MODES = ("aligned", "grid", "random")


def load_labels(source: Mapping[str, int] | str | os.PathLike[str] | None) -> dict[str, int]:
    """Labels keyed by slide path or by file stem, from a dict or a CSV with ``slide,label`` columns."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return {str(k): int(v) for k, v in source.items()}
    with open(source, newline="") as fh:
        rows = csv.DictReader(fh)
        if rows.fieldnames is None or not {"slide", "label"} <= set(rows.fieldnames):
            raise CspError(os.fspath(source), "label CSV needs 'slide' and 'label' columns")
        return {r["slide"]: int(r["label"]) for r in rows}


def _stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    return base.split(".")[0]


def choose_level(cr: ContainerReader, level: int | None, mpp: float | None) -> int:
    """The level to sample: ``level`` as given, or the one whose microns-per-pixel is closest to ``mpp``."""
    if mpp is None:
        lv = 0 if level is None else level
        if not 0 <= lv < len(cr.levels):
            raise CspError(cr.path, f"level {lv} out of range (0..{len(cr.levels) - 1})")
        return lv
    base = cr.meta.get("mpp", {}).get("x")
    if base is None:
        raise CspError(cr.path, "target mpp requested but the slide has no microns-per-pixel")
    w0 = cr.levels[0].layout.width
    errors = [abs(np.log(base * w0 / a.layout.width / mpp)) for a in cr.levels]
    return int(np.argmin(errors))


@dataclass
class TileIndex:
    """Patches to read: ``entries`` (slide, level, x, y, label) over ``slides``, all ``patch_size``."""

    slides: list[str]
    entries: np.ndarray
    patch_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def build(
        cls,
        containers: Sequence[str | os.PathLike[str]],
        *,
        patch_size: int | tuple[int, int] = 256,
        mode: str = "aligned",
        level: int | None = None,
        mpp: float | None = None,
        stride: int | None = None,
        patches_per_slide: int = 100,
        min_tissue: float = 0.5,
        labels: Mapping[str, int] | str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> TileIndex:
        """Build an index.

        Parameters
        ----------
        mode
            ``"aligned"``: patches that lie inside one stored tile (one decode per sample; several per
            tile when the tile is a multiple of the patch); ``"grid"``: a regular grid with ``stride``
            (default: the patch size) ignoring tile boundaries; ``"random"``: ``patches_per_slide``
            random windows per slide drawn from tissue.
        level, mpp
            Level index, or target microns-per-pixel (the closest level is used).
        min_tissue
            Minimum fraction of tissue (stored mask) under a patch; 0 keeps everything.
        labels
            Dict or CSV (``slide,label``), keyed by container path or file stem; missing -> -1.
        seed
            Seeds the random mode; same inputs + seed -> same index.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        pw, ph = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
        label_map = load_labels(labels)
        rng = np.random.default_rng(seed)
        slides = [os.fspath(c) for c in containers]
        parts = []
        pool = default_pool()
        for si, path in enumerate(slides):
            cr = pool.get(path)
            lv = choose_level(cr, level, mpp)
            arr = cr.levels[lv]
            lay = arr.layout
            if mode == "aligned":
                if pw > lay.tile_width or ph > lay.tile_height:
                    raise CspError(path, f"aligned patches of {pw}x{ph} do not fit in {lay.tile_width}x"
                                         f"{lay.tile_height} tiles: use mode='grid' or a smaller patch")
                xs_in = np.arange(0, lay.tile_width - pw + 1, pw)
                ys_in = np.arange(0, lay.tile_height - ph + 1, ph)
                tx = np.arange(lay.tiles_across) * lay.tile_width
                ty = np.arange(lay.tiles_down) * lay.tile_height
                xs = (tx[:, None] + xs_in[None, :]).ravel()
                ys = (ty[:, None] + ys_in[None, :]).ravel()
                gx, gy = np.meshgrid(xs, ys)
            elif mode == "grid":
                step = stride or pw
                gx, gy = np.meshgrid(np.arange(0, lay.width - pw + 1, step),
                                     np.arange(0, lay.height - ph + 1, stride or ph))
            else:
                n = patches_per_slide * 8  # oversample, then keep tissue ones
                gx = rng.integers(0, max(lay.width - pw, 0) + 1, n)
                gy = rng.integers(0, max(lay.height - ph, 0) + 1, n)
            x, y = gx.ravel(), gy.ravel()
            keep = (x + pw <= lay.width) & (y + ph <= lay.height)
            x, y = x[keep], y[keep]
            if min_tissue > 0:
                frac = _tissue_fraction(cr, lv, x, y, pw, ph)
                if frac is not None:
                    ok = frac >= min_tissue
                    x, y = x[ok], y[ok]
            if mode == "random":
                x, y = x[:patches_per_slide], y[:patches_per_slide]
            label = label_map.get(path, label_map.get(_stem(path), -1))
            e = np.empty(len(x), ENTRY_DTYPE)
            e["slide"], e["level"], e["x"], e["y"], e["label"] = si, lv, x, y, label
            parts.append(e)
        entries = np.concatenate(parts) if parts else np.empty(0, ENTRY_DTYPE)
        return cls(slides, entries, (pw, ph))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index as ``.npz``."""
        np.savez(path, slides=np.array(self.slides), entries=self.entries, patch_size=np.array(self.patch_size))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TileIndex:
        """Read an index written by :meth:`save`."""
        with np.load(path) as z:
            return cls([str(s) for s in z["slides"]], z["entries"], tuple(int(v) for v in z["patch_size"]))


def _tissue_fraction(cr: ContainerReader, level: int, x: np.ndarray, y: np.ndarray, pw: int,
                     ph: int) -> np.ndarray | None:
    """Fraction of mask pixels that are tissue under each patch (integral image over the mask)."""
    got = cr.tissue_mask()
    if got is None:
        return None
    mask, (mdx, mdy) = got
    lay0, lay = cr.levels[0].layout, cr.levels[level].layout
    # patch corners: level -> level 0 -> mask pixels
    sx = (lay0.width / lay.width) / mdx
    sy = (lay0.height / lay.height) / mdy
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    x0 = np.clip(np.floor(x * sx).astype(np.int64), 0, mask.shape[1] - 1)
    y0 = np.clip(np.floor(y * sy).astype(np.int64), 0, mask.shape[0] - 1)
    x1 = np.clip(np.ceil((x + pw) * sx).astype(np.int64), x0 + 1, mask.shape[1])
    y1 = np.clip(np.ceil((y + ph) * sy).astype(np.int64), y0 + 1, mask.shape[0])
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return total / ((x1 - x0) * (y1 - y0))
