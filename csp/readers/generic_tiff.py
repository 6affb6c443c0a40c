"""Generic tiled pyramidal TIFF source reader (the fallback of the registry).

Follows OpenSlide's ``generic-tiff`` driver: the first directory must be tiled (TileWidth and
TileLength tags present); pyramid levels are directory 0 plus every later tiled directory whose
NewSubfileType has the reduced-resolution bit, sorted by decreasing width (stable). Only the main
IFD chain is considered (no SubIFDs). Properties are the ``tiff.*`` tags of directory 0; there are
no associated images.

Deliberate difference from OpenSlide: a reduced-resolution directory whose samples per pixel or
sample type differ from level 0 is skipped, since CSP stores one typed array per pyramid.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from csp.errors import UnsupportedFormatError
from csp.readers.base import Match, Reject, SlideMetadata
from csp.readers.tiff_common import (
    TiffLevel,
    TiffSlideReader,
    compression_name,
    decode_problem,
    has_tile_tags,
    icc_profile,
    make_level,
    quiet_tifffile,
    resolution_mpp,
    tiff_metadata,
    tiff_properties,
)

_log = logging.getLogger(__name__)
_TIFF_DATETIME = re.compile(r"(\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2})")
FILETYPE_REDUCEDIMAGE = 1


def _sample_signature(page: Any) -> tuple[int, str]:
    return int(page.samplesperpixel), str(page.dtype)


def pyramid_pages(pages: list[Any]) -> list[tuple[int, Any]]:
    """The ``(index, page)`` pairs OpenSlide uses as levels, largest first.

    Parameters
    ----------
    pages
        All pages of the main IFD chain; ``pages[0]`` must be tiled.
    """
    if not pages or not has_tile_tags(pages[0]):
        return []
    signature = _sample_signature(pages[0])
    chosen: list[tuple[int, Any]] = [(0, pages[0])]
    for index, page in enumerate(pages[1:], start=1):
        if not has_tile_tags(page) or not int(page.subfiletype) & FILETYPE_REDUCEDIMAGE:
            continue
        if _sample_signature(page) != signature:
            _log.debug(
                "page %d skipped: samples %s differ from level 0 %s",
                index,
                _sample_signature(page),
                signature,
            )
            continue
        chosen.append((index, page))
    chosen.sort(key=lambda item: -int(item[1].imagewidth))  # list.sort is stable, like GLib's
    return chosen


def tiff_datetime_iso(value: str | None) -> str | None:
    """ISO 8601 form of a TIFF DateTime (``YYYY:MM:DD HH:MM:SS``); other text is returned as is."""
    if not value:
        return None
    match = _TIFF_DATETIME.fullmatch(value.strip())
    if match is None:
        return value.strip() or None
    y, mo, d, h, mi, s = match.groups()
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}"


def generic_metadata(page0: Any, properties: dict[str, str]) -> SlideMetadata:
    """Unified metadata of a generic TIFF from its level-0 tags."""
    fields: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    mpp_x, mpp_y = resolution_mpp(page0)
    if mpp_x is not None:
        fields["mpp_x"] = mpp_x
        provenance["mpp_x"] = "tiff.XResolution + tiff.ResolutionUnit=centimeter (level 0)"
    if mpp_y is not None:
        fields["mpp_y"] = mpp_y
        provenance["mpp_y"] = "tiff.YResolution + tiff.ResolutionUnit=centimeter (level 0)"
    date = tiff_datetime_iso(properties.get("tiff.DateTime"))
    if date:
        fields["scan_date"] = date
        provenance["scan_date"] = "tiff.DateTime"
    make, model = properties.get("tiff.Make", "").strip(), properties.get("tiff.Model", "").strip()
    scanner = " ".join(v for v in (make, model) if v)
    if scanner:
        fields["scanner"] = scanner
        provenance["scanner"] = " + ".join(k for k, v in (("tiff.Make", make), ("tiff.Model", model)) if v)
    icc = icc_profile(page0)
    return tiff_metadata("generic-tiff", fields, provenance, icc)


class GenericTiffReader(TiffSlideReader):
    """Reader of tiled (pyramidal) TIFF files of any origin."""

    name: ClassVar[str] = "generic-tiff"

    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept any TIFF whose first directory is tiled and whose levels tifffile can decode."""
        with quiet_tifffile():
            tiff = probe.tiff
            if tiff is None:
                return Reject(cls.name, probe.tiff_error or "not a TIFF file")
            try:
                if not has_tile_tags(tiff.pages[0]):
                    return Reject(cls.name, "level 0 is stripped, not tiled")
                chosen = pyramid_pages(list(tiff.pages))
                for index, page in chosen:
                    problem = decode_problem(page)
                    if problem is not None:
                        return Reject(cls.name, f"{problem} (page {index})")
                codec = compression_name(int(tiff.pages[0].compression))
            except Exception as exc:  # noqa: BLE001 - damaged IFDs raise many types
                return Reject(cls.name, f"TIFF structure unreadable: {exc}")
        return Match(cls.name, f"tiled TIFF, {len(chosen)} pyramid level(s), {codec} tiles")

    @classmethod
    def _build(cls, path: str, tiff: Any) -> GenericTiffReader:
        fd = tiff.filehandle.fileno()
        pages = list(tiff.pages)
        if not pages or not has_tile_tags(pages[0]):
            raise UnsupportedFormatError(path, "not a tiled TIFF: level 0 is stripped, not tiled")
        levels: list[TiffLevel] = [make_level(path, index, page) for index, page in pyramid_pages(pages)]
        properties = tiff_properties(pages[0], fd)
        metadata = generic_metadata(pages[0], properties)
        return cls(path, tiff, levels, {}, properties, metadata)
