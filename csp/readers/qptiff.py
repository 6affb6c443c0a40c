"""Akoya / PerkinElmer QPTIFF (Vectra, Polaris, PhenoImager) source reader.

A QPTIFF stores each fluorescence channel (or the RGB brightfield image) as its own TIFF page; every
page carries a ``PerkinElmer-QPI-ImageDescription`` XML document (``ImageType`` FullResolution,
ReducedResolution, Thumbnail, Overview, Label; channel ``Name``, optional ``Biomarker``,
``Objective``, ...). tifffile groups the pages into the ``qpi`` series (channels on C, reduced
resolutions as pyramid levels); tiles are assembled by :class:`~csp.readers.ome_tiff.PlaneTiffReader`
(stripped pages are cut into 512 x 512 tiles). Channels are kept as channels (C), not read as RGB.

OpenSlide has no QPTIFF driver; CSP's reader is the only way these files are read here.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from csp.errors import CspError, UnsupportedFormatError
from csp.readers.base import AssociatedImage, Match, Reject, SlideMetadata
from csp.readers.generic_tiff import tiff_datetime_iso
from csp.readers.ome_tiff import (
    PlaneTiffReader,
    _child,
    associated_from_page,
    parse_xml,
    series_planes,
)
from csp.readers.tiff_common import (
    icc_profile,
    quiet_tifffile,
    resolution_mpp,
    tiff_metadata,
    tiff_properties,
)

ROOT_TAG = "PerkinElmer-QPI-ImageDescription"
#: QPI ImageType -> CSP associated image name.
ASSOCIATED_TYPES = {"thumbnail": "thumbnail", "overview": "macro", "label": "label"}
#: Top-level XML fields copied into the ``qptiff.*`` properties (per channel for level-0 pages).
_FIELDS = ("DescriptionVersion", "AcquisitionSoftware", "ImageType", "Identifier", "SlideID", "Barcode",
           "ComputerName", "IsUnmixedComponent", "ExposureTime", "SignalUnits", "Name", "Biomarker",
           "Color", "Objective", "CameraName", "ValidationCode")
_SCAN_PIXEL_SIZE = re.compile(
    r"<ScanResolution\b[^>]*>.*?<PixelSizeMicrons>\s*([0-9.eE+-]+)\s*</PixelSizeMicrons>", re.DOTALL)
_CHANNEL_FIELDS = ("Name", "Biomarker", "Color", "ExposureTime", "SignalUnits", "IsUnmixedComponent")


def _is_qpi(tiff: Any) -> bool:
    page = tiff.pages[0]
    return bool(getattr(tiff, "is_qpi", False)) or ROOT_TAG in (page.description or "")[:512]


def _fields(page: Any) -> dict[str, str]:
    """The top-level text fields of a page's QPI XML (empty if absent or malformed)."""
    desc = page.description if hasattr(page, "description") else page.aspage().description
    root = parse_xml(desc)
    if root is None:
        return {}
    out: dict[str, str] = {}
    for name in _FIELDS:
        el = _child(root, name)
        if el is not None and el.text is not None and el.text.strip():
            out[name] = el.text.strip()
    return out


def _power(text: str | None) -> float | None:
    """``"10x"`` / ``"20X"`` / ``"40"`` -> magnification, else ``None``."""
    if not text:
        return None
    digits = text.strip().lower().rstrip("x").strip()
    try:
        value = float(digits)
    except ValueError:
        return None
    return value if value > 0 else None


class QptiffReader(PlaneTiffReader):
    """QPTIFF multiplexed fluorescence / brightfield slides: channels on C, pyramid levels, extras."""

    name: ClassVar[str] = "qptiff"

    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept TIFFs whose first page has PerkinElmer QPI XML and whose images tifffile can map."""
        with quiet_tifffile():
            tiff = probe.tiff
            if tiff is None:
                return Reject(cls.name, probe.tiff_error or "not a TIFF file")
            try:
                if not _is_qpi(tiff):
                    return Reject(cls.name, "no PerkinElmer-QPI ImageDescription")
                series = tiff.series[0]
                levels, _, channels = series_planes(probe.path, series)
            except CspError as exc:
                return Reject(cls.name, exc.detail)
            except Exception as exc:  # noqa: BLE001 - damaged IFDs raise many types
                return Reject(cls.name, f"QPTIFF structure unreadable: {exc}")
        return Match(cls.name, f"QPTIFF {series.axes} {tuple(series.shape)} {series.dtype}, "
                               f"{len(levels)} level(s), {channels} channel(s)")

    @classmethod
    def _build(cls, path: str, tiff: Any) -> QptiffReader:
        if not _is_qpi(tiff):
            raise UnsupportedFormatError(path, "not a QPTIFF (no PerkinElmer-QPI ImageDescription)")
        series = tiff.series[0]
        levels, planes, channels = series_planes(path, series)
        if planes != (1, 1):
            raise UnsupportedFormatError(path, f"QPTIFF with (T, Z) = {planes} is not supported")
        level_pages = {id(p) for lv in levels for c in lv.pages[0] for p in c if p is not None}
        base_pages = [c[0] for c in levels[0].pages[0]]
        page0 = base_pages[0].keyframe
        fd = tiff.filehandle.fileno()
        properties = tiff_properties(page0, fd)
        per_channel = [_fields(p) for p in base_pages if p is not None]
        for i, f in enumerate(per_channel):
            for k in _CHANNEL_FIELDS:
                if k in f:
                    properties[f"qptiff.channel[{i}].{k}"] = f[k]
        first = per_channel[0] if per_channel else {}
        for k in ("DescriptionVersion", "AcquisitionSoftware", "Identifier", "SlideID", "Barcode",
                  "ComputerName", "Objective", "CameraName"):
            if k in first:
                properties[f"qptiff.{k}"] = first[k]
        assoc: dict[str, tuple[Any, AssociatedImage]] = {}
        for index, page in enumerate(tiff.pages):
            if id(page) in level_pages or index in {p.index for p in base_pages if p is not None}:
                continue
            kind = _fields(page).get("ImageType", "").lower()
            name = ASSOCIATED_TYPES.get(kind)
            if name is not None and name not in assoc:
                assoc[name] = associated_from_page(name, page, f"tiff page {index} (QPI {kind})")
        metadata = cls._metadata(page0, properties, per_channel, channels)
        return cls(path, tiff, levels, planes, assoc, properties, metadata)

    @staticmethod
    def _metadata(page0: Any, properties: dict[str, str], per_channel: list[dict[str, str]],
                  channels: int) -> SlideMetadata:
        fields: dict[str, Any] = {}
        prov: dict[str, str] = {}
        mx, my = resolution_mpp(page0)
        if mx is not None and my is not None:
            fields["mpp_x"], fields["mpp_y"] = mx, my
            prov["mpp_x"] = prov["mpp_y"] = "tiff X/YResolution + ResolutionUnit=centimeter (level 0)"
        else:
            found = _SCAN_PIXEL_SIZE.search(page0.description or "")
            size = float(found.group(1)) if found else 0.0
            if size > 0:
                fields["mpp_x"] = fields["mpp_y"] = size
                prov["mpp_x"] = prov["mpp_y"] = "QPI XML ScanProfile/ScanResolution/PixelSizeMicrons"
        first = per_channel[0] if per_channel else {}
        power = _power(first.get("Objective"))
        if power is not None:
            fields["objective_power"] = power
            prov["objective_power"] = "qptiff.Objective (QPI XML <Objective>)"
        scanner = first.get("AcquisitionSoftware")
        if scanner:
            fields["scanner"] = scanner
            prov["scanner"] = "qptiff.AcquisitionSoftware (QPI XML <AcquisitionSoftware>)"
        date = tiff_datetime_iso(properties.get("tiff.DateTime"))
        if date:
            fields["scan_date"] = date
            prov["scan_date"] = "tiff.DateTime"
        names = []
        for f in per_channel:
            name, marker = f.get("Name"), f.get("Biomarker")
            label = name or marker or ""
            if name and marker and marker != name:
                label = f"{name} ({marker})"
            names.append(label)
        if len(names) == channels and any(names):
            fields["channel_names"] = tuple(n or f"channel {i}" for i, n in enumerate(names))
            prov["channel_names"] = "QPI XML <Name> (+ <Biomarker>) of each level-0 channel page"
        icc = icc_profile(page0)
        return tiff_metadata("qptiff", fields, prov, icc)
