"""Aperio SVS source reader.

Follows OpenSlide's ``aperio`` driver: a TIFF whose first ImageDescription starts with ``Aperio``
and whose first directory is tiled. Every tiled directory is a pyramid level, in file order. Stripped
directories are associated images: directory 1 is ``thumbnail``; any other takes its name from the
first word of the second line of its ImageDescription (``label``, ``macro``). Properties are the
``tiff.*`` tags of directory 0 plus ``aperio.*`` pairs parsed from the ``|``-separated description.

Deliberate differences from OpenSlide: tiles with a zero byte count are reported missing (``None`` /
zeros) instead of being painted from the previous level, and OpenSlide's propagation of missing tiles
to the next level is not applied (CSP keeps every stored tile bit-exact).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, ClassVar

import numpy as np

from csp.errors import UnsupportedFormatError
from csp.readers.base import AssociatedImage, Match, Reject, SlideMetadata
from csp.readers.tiff_common import (
    TAG_IMAGEDESCRIPTION,
    TiffLevel,
    TiffSlideReader,
    associated_image,
    compression_name,
    decode_problem,
    glib_strip,
    has_tile_tags,
    icc_profile,
    make_level,
    quiet_tifffile,
    read_tag_string,
    tiff_metadata,
    tiff_properties,
)

APERIO_PREFIX = "Aperio"
APERIO_J2K_YCBCR = 33003

# OpenSlide's fixed-point YCbCr tables (make-tables.c), used for Aperio 33003 JPEG 2000 tiles
_I = np.arange(256, dtype=np.float64) - 128.0
_R_CR = np.round(1.402 * _I).astype(np.int32)
_G_CB = np.round(65536.0 * (0.5 - 0.34414 * _I)).astype(np.int32)
_G_CR = np.round(65536.0 * -0.71414 * _I).astype(np.int32)
_B_CB = np.round(1.772 * _I).astype(np.int32)

_FLOAT_RE = re.compile(r"[ \t\n\v\f\r]*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DATE_RE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})")
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})")
_TZ_RE = re.compile(r"(?:GMT|UTC)?\s*([+-])(\d{2}):?(\d{2})")


def ycbcr_to_rgb(tile: np.ndarray) -> np.ndarray:
    """Convert full-resolution YCbCr uint8 samples to RGB exactly like OpenSlide's JP2K decoder."""
    y = tile[..., 0].astype(np.int32)
    cb, cr = tile[..., 1], tile[..., 2]
    out = np.empty(tile.shape, np.uint8)
    out[..., 0] = np.clip(y + _R_CR[cr], 0, 255)
    out[..., 1] = np.clip(y + ((_G_CB[cb] + _G_CR[cr]) >> 16), 0, 255)
    out[..., 2] = np.clip(y + _B_CB[cb], 0, 255)
    return out


def parse_double(value: str | None) -> float | None:
    """Parse a number like OpenSlide's ``_openslide_parse_double`` (comma accepted as decimal point).

    Returns ``None`` for absent, partial (``"0.5 um"``) or non-finite values.
    """
    if value is None:
        return None
    text = value.replace(",", ".")
    if not _FLOAT_RE.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def parse_aperio_description(description: str) -> dict[str, str]:
    """``aperio.*`` properties from an Aperio ImageDescription, as OpenSlide builds them.

    The text is split on ``|``; the first field (the header) is skipped; each other field is split
    at its first ``=`` and both halves are stripped of ASCII whitespace. Fields without ``=`` carry
    no value and are skipped. A repeated key keeps its last value.
    """
    props: dict[str, str] = {}
    for field in description.split("|")[1:]:
        if "=" not in field:
            continue
        key, value = field.split("=", 1)
        props[f"aperio.{glib_strip(key)}"] = glib_strip(value)
    return props


def associated_name(description: str | None) -> str | None:
    """Name of a non-thumbnail associated image: first word of the description's second line."""
    if description is None:
        return None
    lines = re.split(r"[\r\n]", description)
    if len(lines) < 2 or not lines[1]:
        return None
    name = lines[1].split(" ")[0]
    return name or None


def aperio_scan_date(date: str | None, time: str | None, zone: str | None) -> str | None:
    """ISO 8601 scan date from Aperio ``Date`` (MM/DD/YY), ``Time`` and ``Time Zone`` values.

    Falls back to the raw ``"Date Time"`` text when the values do not parse.
    """
    if not date:
        return None
    dm = _DATE_RE.fullmatch(date.strip())
    tm = _TIME_RE.fullmatch(time.strip()) if time else None
    if dm is None or (time and tm is None):
        return " ".join(v for v in (date, time) if v)
    month, day, year = int(dm.group(1)), int(dm.group(2)), int(dm.group(3))
    if year < 100:
        year += 2000
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return " ".join(v for v in (date, time) if v)
    text = f"{year:04d}-{month:02d}-{day:02d}"
    if tm is not None:
        text += f"T{int(tm.group(1)):02d}:{tm.group(2)}:{tm.group(3)}"
        zm = _TZ_RE.fullmatch(zone.strip()) if zone else None
        if zm is not None:
            text += f"{zm.group(1)}{zm.group(2)}:{zm.group(3)}"
    return text


def aperio_metadata(properties: dict[str, str], icc: bytes | None) -> SlideMetadata:
    """Unified metadata from the ``aperio.*`` properties and the level-0 ICC profile."""
    fields: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    mpp = parse_double(properties.get("aperio.MPP"))
    if mpp is not None and mpp > 0:
        fields["mpp_x"] = fields["mpp_y"] = mpp
        provenance["mpp_x"] = provenance["mpp_y"] = "aperio.MPP"
    power = parse_double(properties.get("aperio.AppMag"))
    if power is not None and power > 0:
        fields["objective_power"] = power
        provenance["objective_power"] = "aperio.AppMag"
    date = aperio_scan_date(
        properties.get("aperio.Date"), properties.get("aperio.Time"), properties.get("aperio.Time Zone")
    )
    if date:
        fields["scan_date"] = date
        provenance["scan_date"] = "aperio.Date + aperio.Time"
    scanner = properties.get("aperio.ScanScope ID")
    if scanner:
        fields["scanner"] = scanner
        provenance["scanner"] = "aperio.ScanScope ID"
    return tiff_metadata("aperio", fields, provenance, icc)


class AperioReader(TiffSlideReader):
    """Reader of Aperio SVS slides (JPEG or JPEG 2000 tiles)."""

    name: ClassVar[str] = "aperio"

    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept TIFFs whose first ImageDescription starts with ``Aperio`` and whose level 0 is tiled."""
        with quiet_tifffile():
            tiff = probe.tiff
            if tiff is None:
                return Reject(cls.name, probe.tiff_error or "not a TIFF file")
            try:
                page0 = tiff.pages[0]
                description = read_tag_string(page0, TAG_IMAGEDESCRIPTION, tiff.filehandle.fileno())
                if description is None or not description.startswith(APERIO_PREFIX):
                    return Reject(cls.name, "ImageDescription does not start with 'Aperio'")
                if not has_tile_tags(page0):
                    return Reject(cls.name, "level 0 is stripped, not tiled")
                tiled = [(i, p) for i, p in enumerate(tiff.pages) if has_tile_tags(p)]
                for index, page in tiled:
                    problem = decode_problem(page)
                    if problem is not None:
                        return Reject(cls.name, f"{problem} (page {index})")
                codec = compression_name(int(page0.compression))
            except Exception as exc:  # noqa: BLE001 - damaged IFDs raise many types
                return Reject(cls.name, f"TIFF structure unreadable: {exc}")
        return Match(cls.name, f"Aperio SVS, {len(tiled)} tiled level(s), {codec} tiles")

    def _postprocess_tile(self, level: TiffLevel, tile: np.ndarray) -> np.ndarray:
        """Aperio 33003 stores YCbCr JPEG 2000 (OpenJPEG returns the raw components): convert to RGB."""
        if level.compression == APERIO_J2K_YCBCR and tile.shape[-1] == 3 and tile.dtype == np.uint8:
            return ycbcr_to_rgb(tile)
        return tile

    @classmethod
    def _build(cls, path: str, tiff: Any) -> AperioReader:
        fd = tiff.filehandle.fileno()
        pages = list(tiff.pages)
        page0 = pages[0]
        description = read_tag_string(page0, TAG_IMAGEDESCRIPTION, fd)
        if description is None or not description.startswith(APERIO_PREFIX):
            raise UnsupportedFormatError(
                path, "not an Aperio slide: ImageDescription does not start with 'Aperio'"
            )
        if not has_tile_tags(page0):
            raise UnsupportedFormatError(path, "not an Aperio slide: level 0 is stripped, not tiled")

        levels: list[TiffLevel] = []
        associated: dict[str, tuple[int, AssociatedImage]] = {}
        for index, page in enumerate(pages):
            if has_tile_tags(page):
                levels.append(make_level(path, index, page))
                continue
            name = (
                "thumbnail"
                if index == 1
                else associated_name(read_tag_string(page, TAG_IMAGEDESCRIPTION, fd))
            )
            if name:
                img = associated_image(name, index, page)
                if img.icc_profile is None:  # OpenSlide gives associated images the slide's profile
                    img = dataclasses.replace(img, icc_profile=icc_profile(page0))
                associated[name] = (index, img)

        first = levels[0].level
        for lv in levels[1:]:
            if (lv.level.channels, lv.level.dtype) != (first.channels, first.dtype):
                raise UnsupportedFormatError(
                    path,
                    f"pyramid page {lv.page_index} has {lv.level.channels}x{lv.level.dtype} samples, "
                    f"level 0 has {first.channels}x{first.dtype}",
                )

        properties = parse_aperio_description(description)
        properties.update(tiff_properties(page0, fd))
        metadata = aperio_metadata(properties, icc_profile(page0))
        return cls(path, tiff, levels, associated, properties, metadata)
