"""Building missing pyramid levels by 2x mean downsampling, streamed in horizontal bands.

A band is one tile row of a level: ``tile_height`` rows (fewer at the bottom) across the full width.
Two consecutive bands of level *k* make one band of level *k+1*; downsampling even-height bands one by
one equals downsampling the whole image (property-tested in the kernel's tests), so memory stays at a
few bands per level whatever the slide height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from csp.container.spec import LevelLayout

BandSink = Callable[[int, int, np.ndarray], None]  # (level, band_row, band)


def built_level_sizes(width: int, height: int, tile_width: int, tile_height: int) -> list[tuple[int, int]]:
    """Sizes of the levels to build below a ``width`` x ``height`` level until one fits in a tile."""
    sizes = []
    w, h = width, height
    while w > tile_width or h > tile_height:
        w, h = -(-w // 2), -(-h // 2)
        sizes.append((w, h))
    return sizes


def downsample2x(band: np.ndarray) -> np.ndarray:
    """2x mean downsample (the Numba kernel from :mod:`csp.native`)."""
    from csp.native import downsample2x as kernel

    return kernel(band)


class BandCascade:
    """Push bands of a base level; receive bands of every built level through ``sink``.

    Parameters
    ----------
    levels
        Number of levels to build below the base level.
    sink
        Called as ``sink(k, band_row, band)`` for built level ``k`` (1-based relative to the base).
    """

    def __init__(self, levels: int, sink: BandSink) -> None:
        self.levels = levels
        self.sink = sink
        self._pending: list[list[np.ndarray]] = [[] for _ in range(levels + 1)]
        self._rows = [0] * (levels + 1)

    def push(self, band: np.ndarray) -> None:
        """Add the next band of the base level."""
        self._push(0, band)

    def _push(self, k: int, band: np.ndarray) -> None:
        if k >= self.levels:
            return
        pending = self._pending[k]
        pending.append(band)
        if len(pending) == 2:
            self._emit(k)

    def _emit(self, k: int) -> None:
        pending = self._pending[k]
        src = pending[0] if len(pending) == 1 else np.concatenate(pending, axis=0)
        pending.clear()
        out = downsample2x(src)
        row = self._rows[k + 1]
        self._rows[k + 1] += 1
        self.sink(k + 1, row, out)
        self._push(k + 1, out)

    def finish(self) -> None:
        """Flush the odd last band of every level, top to bottom."""
        for k in range(self.levels):
            if self._pending[k]:
                self._emit(k)


def cut_band(band: np.ndarray, layout: LevelLayout, fill: int = 0) -> Iterator[np.ndarray]:
    """Split a band into full-size ``(tile_h, tile_w, C)`` tiles, padding the right/bottom edge."""
    th, tw = layout.tile_height, layout.tile_width
    _h, _w, c = band.shape
    for col in range(layout.tiles_across):
        x0 = col * tw
        piece = band[:, x0:x0 + tw]
        if piece.shape[0] == th and piece.shape[1] == tw:
            yield np.ascontiguousarray(piece)
        else:
            tile = np.full((th, tw, c), fill, dtype=band.dtype)
            tile[: piece.shape[0], : piece.shape[1]] = piece
            yield tile
