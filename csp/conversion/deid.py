"""De-identification profile ``csp-deid-1`` (normative text: docs/deidentification.md).

An allowlist, not a blocklist: only properties known to carry no identity survive (resolution,
magnification, channel and colour information); label and macro images are dropped; the scan date,
scanner serial/ID, barcode and the source file name are removed from the unified metadata. Pixels of the
pyramid are untouched, so the container still verifies pixel-exact against the source.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from csp.readers.base import Match, Reject, SlideReader, SourceLevel

PROFILE = "csp-deid-1"
PROFILE_VERSION = 1

#: Associated images removed (they show the label: names, barcodes, handwriting).
DROPPED_ASSOCIATED = frozenset({"label", "macro", "overview"})

#: Property keys kept (full match, case-insensitive). Everything else is dropped.
ALLOWED_PROPERTIES = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"[a-z0-9-]+\.mpp(-[xy])?",
    r"aperio\.(MPP|AppMag|StripeWidth|ICC Profile|Filtered|Focus Offset|Exposure Scale|Exposure Time)",
    r"aperio\.(Left|Top|LineCameraSkew|LineAreaXOffset|LineAreaYOffset|OriginalWidth|OriginalHeight)",
    r"tiff\.(XResolution|YResolution|ResolutionUnit)",
    r"hamamatsu\.(SourceLens|XOffsetFromSlideCentre|YOffsetFromSlideCentre|ZOffsetFromSlideCentre)",
    r"[a-z0-9-]+\.(objective[-_ ]?power|magnification|appmag)",
    r"[a-z0-9-]+\.(channel|channels|channel-name|stain|wavelength|exposure)[^.]*",
))

#: Unified metadata fields removed.
DROPPED_METADATA = ("scan_date", "scanner", "barcode")


def property_allowed(key: str) -> bool:
    """True if the profile keeps property ``key``."""
    return any(p.fullmatch(key) for p in ALLOWED_PROPERTIES)


class DeidentifiedReader(SlideReader):
    """Wraps a reader: same levels and tiles, scrubbed properties/metadata, no label/macro images."""

    name = "deidentified"

    def __init__(self, inner: SlideReader) -> None:
        self.inner = inner
        self.path = inner.path
        self.levels = inner.levels
        self.plane_shape = inner.plane_shape  # pixels and planes are not touched
        props = dict(inner.properties)
        kept = {k: v for k, v in props.items() if property_allowed(k)}
        self.properties = MappingProxyType(kept)
        self.associated = MappingProxyType({k: v for k, v in inner.associated.items()
                                            if k.lower() not in DROPPED_ASSOCIATED})
        md = inner.metadata
        prov = {k: v for k, v in md.provenance.items() if k not in DROPPED_METADATA}
        self.metadata = dataclasses.replace(md, scan_date=None, scanner=None, barcode=None, provenance=prov)
        self.deid_record: dict[str, Any] = {
            "profile": PROFILE, "profile_version": PROFILE_VERSION,
            "dropped_associated": sorted(set(inner.associated) - set(self.associated)),
            "dropped_properties": len(props) - len(kept),
            "dropped_metadata": [f for f in DROPPED_METADATA if getattr(md, f) is not None],
        }

    @property
    def name_for_source(self) -> str:
        """What the container records as the source name."""
        return "deidentified"

    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:  # pragma: no cover - never registered
        return Reject(cls.name, "wrapper, not a format reader")

    @classmethod
    def open(cls, probe: Any) -> SlideReader:  # pragma: no cover - never registered
        raise NotImplementedError

    def read_tile_encoded(self, level: int, col: int, row: int, **plane: int) -> bytes | None:
        return self.inner.read_tile_encoded(level, col, row, **plane)

    def read_tile(self, level: int, col: int, row: int, **plane: int) -> np.ndarray:
        return self.inner.read_tile(level, col, row, **plane)

    def read_associated(self, name: str) -> np.ndarray:
        if name not in self.associated:
            raise KeyError(name)
        return self.inner.read_associated(name)

    def associated_layout(self, name: str) -> SourceLevel | None:
        return self.inner.associated_layout(name) if name in self.associated else None

    def read_associated_encoded(self, name: str, col: int, row: int) -> bytes | None:
        return self.inner.read_associated_encoded(name, col, row)

    def close(self) -> None:
        self.inner.close()


def deidentified(reader: SlideReader) -> DeidentifiedReader:
    """Wrap ``reader`` with the ``csp-deid-1`` profile."""
    return DeidentifiedReader(reader)


def scrub_source(source: Mapping[str, Any]) -> dict[str, Any]:
    """Source identity without names (file names often carry patient or case identifiers)."""
    out = dict(source)
    out["name"] = "deidentified"
    if "files" in out:
        out["files"] = [{**f, "name": f"file-{i}"} for i, f in enumerate(out["files"])]
    return out
