"""Pure NumPy reference implementations: the executable specification of every native kernel."""

from __future__ import annotations

import numpy as np


def downsample2x_reference(src: np.ndarray) -> np.ndarray:
    """2x mean downsample of an ``(H, W, C)`` uint8/uint16 image.

    ``out[y, x, c] = (s + n // 2) // n`` where ``s`` is the sum and ``n`` the number of the pixels of the
    2x2 block ``src[2y:2y+2, 2x:2x+2, c]`` that lie inside the image (at an odd right or bottom edge the
    block holds 2 or 1 pixels). Integer arithmetic only. Output shape ``(ceil(H/2), ceil(W/2), C)``.
    """
    if src.ndim != 3 or src.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected (H, W, C) uint8/uint16, got {src.shape} {src.dtype}")
    h, w, c = src.shape
    oh, ow = -(-h // 2), -(-w // 2)
    pad = np.zeros((2 * oh, 2 * ow, c), np.uint64)
    pad[:h, :w] = src
    cnt = np.zeros((2 * oh, 2 * ow, 1), np.uint64)
    cnt[:h, :w] = 1
    s = pad.reshape(oh, 2, ow, 2, c).sum(axis=(1, 3))
    n = cnt.reshape(oh, 2, ow, 2, 1).sum(axis=(1, 3))
    return ((s + n // 2) // n).astype(src.dtype)


def tissue_mask_reference(rgb: np.ndarray, saturation: int = 20, white: int = 220) -> np.ndarray:
    """Tissue mask of a low-resolution RGB(A) image: ``(H, W)`` uint8, 1 = tissue.

    A pixel is tissue when its colour spread ``max(R,G,B) - min(R,G,B)`` is at least ``saturation``
    (stained tissue is coloured; glass, dust and pen-free background are grey) and its darkest channel
    is below ``white`` (not bright background). Images with fewer than 3 channels use the first channel
    only: tissue when it is below ``white``.
    """
    if rgb.ndim != 3:
        raise ValueError(f"expected (H, W, C), got {rgb.shape}")
    if rgb.shape[2] < 3:
        return (rgb[..., 0] < white).astype(np.uint8)
    c = rgb[..., :3].astype(np.int32)
    spread = c.max(axis=2) - c.min(axis=2)
    return ((spread >= saturation) & (c.min(axis=2) < white)).astype(np.uint8)
