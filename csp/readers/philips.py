"""Philips TIFF source reader.

Follows OpenSlide's ``philips-tiff`` driver: a TIFF whose directory-0 Software starts with
``Philips`` and whose directory-0 ImageDescription is a ``DPUfsImport`` XML document (``DataObject``
root) describing exactly one ``WSI`` scanned image. Every tiled directory is a pyramid level (the
later ones must be reduced-resolution and not larger than the previous). Level downsamples are the
rounded ratios of the per-level ``DICOM_PIXEL_SPACING`` values, and lower levels are clipped to
``level-0 size / downsample`` (the scanner pads them to whole tiles). Stripped directories whose
ImageDescription starts with ``Label`` / ``Macro`` are the ``label`` / ``macro`` images; otherwise they
come from base64 JPEG data (``PIM_DP_IMAGE_DATA``) of the ``LABELIMAGE`` / ``MACROIMAGE`` objects.

Sparse slides (several scanned regions) store unscanned tiles with TileByteCounts 0: they are
reported missing (``None``), exactly where OpenSlide leaves the region transparent.

Properties: ``tiff.*`` of directory 0 (without the XML ImageDescription) and ``philips.*`` from the
XML: every top-level attribute without child elements, the attributes of the first WSI object, and
``philips.PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE[i].*`` for each pixel data representation.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
import xml.etree.ElementTree as ET
from types import MappingProxyType
from typing import Any, ClassVar

import imagecodecs
import numpy as np

from csp.errors import CorruptSlideError, UnsupportedFormatError
from csp.readers.base import AssociatedImage, Match, Reject, SlideMetadata, SourceLevel, TileEncoding
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

PHILIPS_SOFTWARE = "Philips"
TAG_SOFTWARE = 305
_SCANNED_IMAGES = "PIM_DP_SCANNED_IMAGES"
_REPRESENTATIONS = "PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE"
_DATETIME_RE = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?")


def parse_philips_xml(text: str) -> ET.Element:
    """Parse the ImageDescription XML and check it is a ``DPUfsImport`` ``DataObject``.

    Raises
    ------
    ValueError
        Not XML, or not the Philips root element / type (message says which).
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"ImageDescription is not XML: {exc}") from exc
    if root.tag != "DataObject":
        raise ValueError(f"XML root is <{root.tag}>, not <DataObject>")
    if root.get("ObjectType") != "DPUfsImport":
        raise ValueError(f"XML root ObjectType is {root.get('ObjectType')!r}, not 'DPUfsImport'")
    return root


def _attribute(obj: ET.Element, name: str) -> ET.Element | None:
    for attr in obj.findall("Attribute"):
        if attr.get("Name") == name:
            return attr
    return None


def _attr_text(obj: ET.Element, name: str) -> str | None:
    attr = _attribute(obj, name)
    return None if attr is None else "".join(attr.itertext())


def scanned_images(root: ET.Element, image_type: str) -> list[ET.Element]:
    """The ``DPScannedImage`` objects of ``PIM_DP_SCANNED_IMAGES`` whose ``PIM_DP_IMAGE_TYPE`` is ``image_type``."""
    holder = _attribute(root, _SCANNED_IMAGES)
    if holder is None:
        return []
    out = []
    for obj in holder.findall("Array/DataObject"):
        types = [a for a in obj.findall("Attribute") if a.get("Name") == "PIM_DP_IMAGE_TYPE"]
        if any("".join(a.itertext()) == image_type for a in types):
            out.append(obj)
    return out


def philips_properties(root: ET.Element) -> dict[str, str]:
    """``philips.*`` properties from the XML, walked like OpenSlide's ``add_properties``."""
    props: dict[str, str] = {}

    def add(obj: ET.Element, prefix: str) -> None:
        for attr in obj.findall("Attribute"):
            name = attr.get("Name")
            if name is None:
                continue
            if name == _SCANNED_IMAGES:
                wsi = [o for o in attr.findall("Array/DataObject") if _attr_text(o, "PIM_DP_IMAGE_TYPE") == "WSI"]
                if wsi:
                    add(wsi[0], prefix)
            elif name == _REPRESENTATIONS:
                for i, sub in enumerate(attr.findall("Array/DataObject")):
                    add(sub, f"{prefix}.{name}[{i}]")
            elif len(attr) == 0:
                props[f"{prefix}.{name}"] = "".join(attr.itertext())

    add(root, "philips")
    return props


def parse_pixel_spacing(value: str | None) -> tuple[float, float] | None:
    """``(x, y)`` spacing in mm from a ``"row" "column"`` DICOM_PIXEL_SPACING value, or ``None``."""
    if value is None:
        return None
    parts = value.split(" ")
    if len(parts) != 2:
        return None
    try:
        row, col = (float(glib_strip(p.replace('"', " ")).replace(",", ".")) for p in parts)
    except ValueError:
        return None
    if not (math.isfinite(row) and math.isfinite(col)):
        return None
    return col, row


def objective_from_derivation(derivation: str | None) -> int | None:
    """Objective power from ``DICOM_DERIVATION_DESCRIPTION`` (first ``levels=`` entry if 1..200)."""
    if not derivation:
        return None
    for item in derivation.split("-"):
        key, _, value = item.partition("=")
        if key == "sourceFilename":
            return None
        if key == "levels":
            first = value.split(",")[0]
            if first.isdigit() and 0 < int(first) <= 200:
                return int(first)
            return None
    return None


def _iso_datetime(value: str | None) -> str | None:
    if not value:
        return None
    m = _DATETIME_RE.fullmatch(value.strip())
    if m is None:
        return value.strip() or None
    y, mo, d, h, mi, s = m.groups()
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}"


def philips_metadata(properties: dict[str, str], icc: bytes | None) -> SlideMetadata:
    """Unified metadata from the ``philips.*`` properties."""
    fields: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    spacing = parse_pixel_spacing(properties.get("philips.DICOM_PIXEL_SPACING"))
    if spacing is not None and spacing[0] > 0 and spacing[1] > 0:
        fields["mpp_x"], fields["mpp_y"] = 1e3 * spacing[0], 1e3 * spacing[1]
        provenance["mpp_x"] = provenance["mpp_y"] = "philips.DICOM_PIXEL_SPACING (mm, row then column)"
    power = objective_from_derivation(properties.get("philips.DICOM_DERIVATION_DESCRIPTION"))
    if power is not None:
        fields["objective_power"] = float(power)
        provenance["objective_power"] = "philips.DICOM_DERIVATION_DESCRIPTION (levels=)"
    date = _iso_datetime(properties.get("philips.DICOM_ACQUISITION_DATETIME"))
    if date:
        fields["scan_date"] = date
        provenance["scan_date"] = "philips.DICOM_ACQUISITION_DATETIME"
    parts = [(k, properties[k].strip()) for k in ("philips.DICOM_MANUFACTURER",
                                                   "philips.DICOM_MANUFACTURERS_MODEL_NAME",
                                                   "philips.DICOM_DEVICE_SERIAL_NUMBER")
             if properties.get(k, "").strip()]
    if parts:
        fields["scanner"] = " ".join(v for _, v in parts)
        provenance["scanner"] = " + ".join(k for k, _ in parts)
    if properties.get("philips.PIM_DP_UFS_BARCODE", "").strip():
        raw = properties["philips.PIM_DP_UFS_BARCODE"].strip()
        try:  # Philips stores it base64-encoded
            fields["barcode"] = base64.b64decode(raw, validate=True).decode("utf-8")
            provenance["barcode"] = "philips.PIM_DP_UFS_BARCODE (base64-decoded)"
        except (binascii.Error, ValueError, UnicodeDecodeError):
            fields["barcode"] = raw
            provenance["barcode"] = "philips.PIM_DP_UFS_BARCODE"
    return tiff_metadata("philips", fields, provenance, icc)


def _check_philips(tiff: Any) -> tuple[str, ET.Element]:
    """Directory-0 checks shared by detect and open; raises ValueError with the reason."""
    page0 = tiff.pages[0]
    fd = tiff.filehandle.fileno()
    software = read_tag_string(page0, TAG_SOFTWARE, fd)
    if software is None or not software.startswith(PHILIPS_SOFTWARE):
        raise ValueError("Software tag does not start with 'Philips'")
    description = read_tag_string(page0, TAG_IMAGEDESCRIPTION, fd)
    if description is None:
        raise ValueError("directory 0 has no ImageDescription")
    return description, parse_philips_xml(description)


class PhilipsReader(TiffSlideReader):
    """Reader of Philips TIFF slides (JPEG tiles, possibly sparse)."""

    name: ClassVar[str] = "philips"

    def __init__(self, *args: Any, page_tiles_across: list[int], xml_images: dict[str, bytes],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._page_across = tuple(page_tiles_across)
        self._xml_images = dict(xml_images)
        extra: dict[str, AssociatedImage] = {}
        for name, data in self._xml_images.items():
            h, w, c = self._decode_jpeg(name, data).shape
            extra[name] = AssociatedImage(name, w, h, c, source_tag=f"XML PIM_DP_IMAGE_DATA ({name})")
        if extra:
            merged = dict(self.associated)
            merged.update(extra)
            self.associated = MappingProxyType(merged)

    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept TIFFs whose Software starts with ``Philips`` and whose description is DPUfsImport XML."""
        with quiet_tifffile():
            tiff = probe.tiff
            if tiff is None:
                return Reject(cls.name, probe.tiff_error or "not a TIFF file")
            try:
                _check_philips(tiff)
                tiled = [(i, p) for i, p in enumerate(tiff.pages) if has_tile_tags(p)]
                if not tiled:
                    return Reject(cls.name, "no tiled directory")
                for index, page in tiled:
                    problem = decode_problem(page)
                    if problem is not None:
                        return Reject(cls.name, f"{problem} (page {index})")
                codec = compression_name(int(tiled[0][1].compression))
            except ValueError as exc:
                return Reject(cls.name, str(exc))
            except Exception as exc:  # noqa: BLE001 - damaged IFDs raise many types
                return Reject(cls.name, f"TIFF structure unreadable: {exc}")
        return Match(cls.name, f"Philips TIFF, {len(tiled)} tiled level(s), {codec} tiles")

    @classmethod
    def _build(cls, path: str, tiff: Any) -> PhilipsReader:
        fd = tiff.filehandle.fileno()
        try:
            _, root = _check_philips(tiff)
        except ValueError as exc:
            raise UnsupportedFormatError(path, f"not a Philips TIFF: {exc}") from exc
        wsi = scanned_images(root, "WSI")
        if len(wsi) != 1:
            raise UnsupportedFormatError(path, f"expected one WSI image in the Philips XML, found {len(wsi)}")

        pages = list(tiff.pages)
        levels: list[TiffLevel] = []
        associated: dict[str, tuple[int, AssociatedImage]] = {}
        for index, page in enumerate(pages):
            if has_tile_tags(page):
                if levels and not int(page.subfiletype) & 1:
                    raise CorruptSlideError(path, f"directory {index} is tiled but not reduced-resolution")
                lv = make_level(path, index, page)
                if levels and (lv.level.width > levels[-1].level.width or lv.level.height > levels[-1].level.height):
                    raise CorruptSlideError(path, f"directory {index} is larger than the level above it")
                levels.append(lv)
                continue
            desc = read_tag_string(page, TAG_IMAGEDESCRIPTION, fd) or ""
            for prefix, name in (("Label", "label"), ("Macro", "macro")):
                if desc.startswith(prefix):
                    associated[name] = (index, associated_image(name, index, page))
        if not levels:
            raise UnsupportedFormatError(path, "no tiled pyramid level found")

        # per-level downsample from DICOM_PIXEL_SPACING; lower levels clipped to level 0 / downsample
        reps = _attribute(wsi[0], _REPRESENTATIONS)
        spacings = [] if reps is None else [
            parse_pixel_spacing(_attr_text(o, "DICOM_PIXEL_SPACING"))
            for o in reps.findall("Array/DataObject") if o.get("ObjectType") == "PixelDataRepresentation"
            and _attribute(o, "DICOM_PIXEL_SPACING") is not None]
        if len(spacings) != len(levels) or any(s is None for s in spacings):
            raise CorruptSlideError(path, f"XML has {len(spacings)} usable pixel spacings for {len(levels)} "
                                          "tiled levels: cannot derive level downsamples")
        page_across = [lv.level.tiles_across for lv in levels]
        w0, h0 = levels[0].level.width, levels[0].level.height
        sx0, sy0 = spacings[0]  # type: ignore[misc]
        for i in range(1, len(levels)):
            sx, sy = spacings[i]  # type: ignore[misc]
            ds = round(((sx / sx0) + (sy / sy0)) / 2)
            if ds < 1:
                raise CorruptSlideError(path, f"level {i}: pixel spacing gives downsample {ds}")
            w, h = int(w0 / ds), int(h0 / ds)
            src = levels[i].level
            if w > src.width or h > src.height:
                raise CorruptSlideError(path, f"level {i}: directory {levels[i].page_index} is "
                                              f"{src.width}x{src.height}, smaller than {w}x{h} implied by "
                                              "the pixel spacing")
            levels[i] = dataclasses.replace(levels[i], level=dataclasses.replace(src, width=w, height=h))

        xml_images: dict[str, bytes] = {}
        for image_type, name in (("LABELIMAGE", "label"), ("MACROIMAGE", "macro")):
            if name in associated:
                continue
            objs = scanned_images(root, image_type)
            data = _attr_text(objs[0], "PIM_DP_IMAGE_DATA") if objs else None
            if data:
                try:
                    xml_images[name] = base64.b64decode("".join(data.split()))
                except (binascii.Error, ValueError):
                    continue  # OpenSlide treats associated-image errors as non-fatal

        properties = tiff_properties(pages[0], fd)
        properties.pop("tiff.ImageDescription", None)
        properties.update(philips_properties(root))
        metadata = philips_metadata(properties, icc_profile(pages[0]))
        return cls(path, tiff, levels, associated, properties, metadata, page_tiles_across=page_across,
                   xml_images=xml_images)

    def _locate(self, level: int, col: int, row: int) -> tuple[TiffLevel, int]:
        """Tile index in the directory's own (padded) tile grid."""
        lv, _ = super()._locate(level, col, row)
        return lv, row * self._page_across[level] + col

    def _decode_jpeg(self, name: str, data: bytes) -> np.ndarray:
        try:
            image = np.asarray(imagecodecs.jpeg8_decode(data))
        except Exception as exc:  # imagecodecs raises its own error types
            raise CorruptSlideError(self.path, f"associated image {name!r} (XML JPEG): {exc}") from exc
        return image[:, :, np.newaxis] if image.ndim == 2 else image

    def associated_layout(self, name: str) -> SourceLevel | None:
        """XML RGB images are served as their one JPEG (passthrough); directory images as JPEG strips."""
        if name in self._xml_images:
            img = self.associated[name]
            if img.channels != 3:
                return None  # grayscale: stored as decoded pixels
            # a JFIF stream: libjpeg reads its colour space from the markers and outputs RGB (JCS_RGB = 2)
            encoding = TileEncoding("jpeg", {"tables": None, "colorspace": None, "outcolorspace": 2})
            return SourceLevel(img.width, img.height, img.width, img.height, 3, "uint8", encoding)
        return super().associated_layout(name)

    def read_associated_encoded(self, name: str, col: int, row: int) -> bytes | None:
        """The XML image's JPEG bytes (one tile), or a strip of a directory image."""
        if name in self._xml_images:
            self._check_open()
            if (col, row) != (0, 0):
                raise IndexError(f"{self.path}: associated image {name} has no tile ({col},{row})")
            return self._xml_images[name]
        return super().read_associated_encoded(name, col, row)

    def read_associated(self, name: str) -> np.ndarray:
        """Decoded label/macro, from its directory or from the XML's base64 JPEG."""
        self._check_open()
        if name in self._xml_images:
            return self._decode_jpeg(name, self._xml_images[name])
        return super().read_associated(name)


__all__ = ["PhilipsReader", "parse_philips_xml", "philips_properties"]
