"""Ordered registries of readers, extensible through entry points.

Built-in readers are registered in detection order (most specific first, generic TIFF last). Plugins
add readers through the ``csp.readers`` entry-point group; they are tried before the generic fallbacks.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points

from csp.errors import CorruptSlideError, CspError, UnsupportedFormatError
from csp.readers.base import Match, Reject, SlideReader
from csp.readers.probe import Probe

# Order matters: first match wins. (module, class)
# Each vendor reader owns exactly one line below (a commented line = reader not built yet).
_BUILTIN_READERS: tuple[tuple[str, str], ...] = (
    ("csp.readers.container", "ContainerSourceReader"),
    ("csp.readers.dicom", "DicomReader"),
    ("csp.readers.ndpi", "NdpiReader"),
    ("csp.readers.aperio", "AperioReader"),
    ("csp.readers.leica_scn", "LeicaScnReader"),
    ("csp.readers.philips", "PhilipsReader"),
    ("csp.readers.ventana", "VentanaReader"),
    ("csp.readers.ome_tiff", "OmeTiffReader"),
    ("csp.readers.qptiff", "QptiffReader"),
    ("csp.readers.generic_tiff", "GenericTiffReader"),
    ("csp.readers.openslide_fallback", "OpenSlideFallbackReader"),
)
# The last N builtins (generic TIFF, OpenSlide fallback) stay after plugins.
_FALLBACK_COUNT = sum(1 for m, _ in _BUILTIN_READERS if m in ("csp.readers.generic_tiff", "csp.readers.openslide_fallback"))


@dataclass(frozen=True)
class Detection:
    """Outcome of running every reader's ``detect`` on one file."""

    path: str
    verdicts: tuple[Match | Reject, ...]

    @property
    def match(self) -> Match | None:
        """The first accepting verdict, if any."""
        for v in self.verdicts:
            if v.accepted:
                return v  # type: ignore[return-value]
        return None


def _load(spec: tuple[str, str]) -> type[SlideReader]:
    module = importlib.import_module(spec[0])
    return getattr(module, spec[1])


def reader_classes() -> list[type[SlideReader]]:
    """All readers in detection order: specific built-ins, plugins, then generic fallbacks."""
    builtins = [_load(s) for s in _BUILTIN_READERS]
    plugins: list[type[SlideReader]] = []
    for ep in entry_points(group="csp.readers"):
        plugins.append(ep.load())
    head, tail = builtins[:-_FALLBACK_COUNT], builtins[-_FALLBACK_COUNT:]
    return head + plugins + tail


def detect(path: str | os.PathLike[str], *, probe: Probe | None = None) -> Detection:
    """Run every reader's ``detect`` on ``path`` (all of them, for ``csp detect --debug``)."""
    probe = probe or Probe(path)
    verdicts: list[Match | Reject] = []
    for cls in reader_classes():
        try:
            verdicts.append(cls.detect(probe))
        except CspError as exc:
            verdicts.append(Reject(cls.name, exc.detail))
    return Detection(probe.path, tuple(verdicts))


def open_source(path: str | os.PathLike[str]) -> SlideReader:
    """Open a source slide with the first reader that accepts it.

    Raises
    ------
    UnsupportedFormatError
        No reader accepts the file; the message lists each reader's reason.
    """
    probe = Probe(path)
    try:
        det = detect(path, probe=probe)
        match = det.match
        if match is None:
            if probe.looks_like_tiff and probe.tiff is None:
                raise CorruptSlideError(probe.path, probe.tiff_error or "unreadable TIFF")
            reasons = "; ".join(f"{v.reader}: {v.reason}" for v in det.verdicts)
            raise UnsupportedFormatError(probe.path, f"no reader accepts this file ({reasons})")
        cls = {c.name: c for c in reader_classes()}[match.reader]
        return cls.open(probe)
    finally:
        probe.release()
