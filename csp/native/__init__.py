"""Native kernels. The only package that imports numba (and, later, cffi).

Kernels are loaded lazily so importing :mod:`csp` (and the CLI) does not pay numba's start-up cost.
:mod:`csp.native.reference` holds the pure NumPy definition of every kernel.
"""

from __future__ import annotations

from typing import Any

__all__ = ["downsample2x", "tissue_mask"]


def __getattr__(name: str) -> Any:
    if name == "downsample2x":
        from csp.native.downsample import downsample2x

        return downsample2x
    if name == "tissue_mask":
        from csp.native.tissue import tissue_mask

        return tissue_mask
    raise AttributeError(f"module 'csp.native' has no attribute {name!r}")
