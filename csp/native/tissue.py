"""Numba tissue-mask kernel (equal to :func:`csp.native.reference.tissue_mask_reference`)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _mask_rgb(src, saturation, white, out):  # pragma: no cover - compiled
    h, w = out.shape
    for y in range(h):
        for x in range(w):
            r = np.int32(src[y, x, 0])
            g = np.int32(src[y, x, 1])
            b = np.int32(src[y, x, 2])
            hi = max(r, max(g, b))
            lo = min(r, min(g, b))
            out[y, x] = 1 if (hi - lo >= saturation and lo < white) else 0
    return 0


def tissue_mask(rgb: np.ndarray, saturation: int = 20, white: int = 220) -> np.ndarray:
    """Tissue mask ``(H, W)`` uint8 of an ``(H, W, C)`` image (rule: see the reference)."""
    if rgb.ndim != 3:
        raise ValueError(f"expected (H, W, C), got {rgb.shape}")
    if rgb.shape[2] < 3:
        return (rgb[..., 0] < white).astype(np.uint8)
    out = np.empty(rgb.shape[:2], np.uint8)
    _mask_rgb(rgb, np.int32(saturation), np.int32(white), out)
    return out
