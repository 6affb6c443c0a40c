"""CSP: a lossless, unified, Zarr v3-based container for whole-slide images, with fast tile reads.

Main entry points: :func:`convert` (vendor slide -> container), :func:`open_slide` (OpenSlide-compatible
reader), :func:`verify` (re-read and compare), :func:`detect` (which reader takes a file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csp.errors import (
    CodecError,
    ContainerError,
    CorruptSlideError,
    CspError,
    IncompleteContainerError,
    OutputExistsError,
    SlideNotFoundError,
    UnsupportedFormatError,
    VerificationError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from csp.container.verify import verify_container as verify
    from csp.conversion.pipeline import convert
    from csp.registry import detect
    from csp.slide import open_slide

_LAZY = {
    "convert": ("csp.conversion.pipeline", "convert"),
    "open_slide": ("csp.slide", "open_slide"),
    "verify": ("csp.container.verify", "verify_container"),
    "detect": ("csp.registry", "detect"),
    "CspSlide": ("csp.slide", "CspSlide"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'csp' has no attribute {name!r}")


__all__ = [
    "CodecError", "ContainerError", "CorruptSlideError", "CspError", "CspSlide", "IncompleteContainerError",
    "OutputExistsError", "SlideNotFoundError", "UnsupportedFormatError", "VerificationError", "__version__",
    "convert", "detect", "open_slide", "verify",
]
