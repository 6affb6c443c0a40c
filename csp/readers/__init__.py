"""Source-format readers.

Each reader implements :class:`csp.readers.base.SlideReader`; :mod:`csp.registry` lists them in
detection order. The concrete readers are imported lazily (``csp.readers.AperioReader``) so that
importing the package stays cheap and free of import cycles.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["AperioReader", "GenericTiffReader"]

_LAZY = {
    "AperioReader": "csp.readers.aperio",
    "GenericTiffReader": "csp.readers.generic_tiff",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'csp.readers' has no attribute {name!r}")
    return getattr(import_module(module), name)
