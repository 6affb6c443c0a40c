"""Numba 2x mean downsampling kernel (equal to :func:`csp.native.reference.downsample2x_reference`)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _downsample2x_kernel(src, out):  # pragma: no cover - compiled
    h, w, c = src.shape
    oh, ow = out.shape[0], out.shape[1]
    for y in range(oh):
        y0 = 2 * y
        y1 = min(y0 + 2, h)
        for x in range(ow):
            x0 = 2 * x
            x1 = min(x0 + 2, w)
            n = (y1 - y0) * (x1 - x0)
            for ch in range(c):
                s = 0
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        s += np.uint32(src[yy, xx, ch])
                out[y, x, ch] = (s + n // 2) // n
    return 0


def downsample2x(src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """2x mean downsample of an ``(H, W, C)`` uint8/uint16 image (see the reference for the rule).

    Parameters
    ----------
    src
        Image; any strides.
    out
        Optional preallocated ``(ceil(H/2), ceil(W/2), C)`` array of the same dtype.
    """
    if src.ndim != 3 or src.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected (H, W, C) uint8/uint16, got {src.shape} {src.dtype}")
    h, w, c = src.shape
    shape = (-(-h // 2), -(-w // 2), c)
    if out is None:
        out = np.empty(shape, src.dtype)
    elif out.shape != shape or out.dtype != src.dtype:
        raise ValueError(f"out must be {shape} {src.dtype}, got {out.shape} {out.dtype}")
    if h and w:
        _downsample2x_kernel(src, out)
    return out
