"""Ventana BIF (and Ventana TIFF) source reader.

Follows OpenSlide's ``ventana`` driver: a TIFF whose directory-0 XMP packet (tag 700) is XML with an
``iScan`` root (or ``Metadata/iScan``). Directories whose ImageDescription contains ``level=`` are
pyramid levels (``level=N mag=M ...``; levels numbered 0, 1, ... in file order with decreasing
magnification, all tiled with the same tile size), sorted by decreasing width. ``Label Image`` (or
``Label_Image``) is the associated image OpenSlide calls ``macro``; ``Thumbnail`` is ``thumbnail``.

BIF level 0 carries a second XMP packet, ``EncodeInfo``, describing the scanned areas (AOIs) and the
stitching of neighbouring tiles (``TileJointInfo`` ``OverlapX``/``OverlapY``). OpenSlide places each
tile by the confidence-weighted mean overlap; when every overlap is zero this is exactly the TIFF tile
grid, and the tiles are passed through unchanged. Non-zero overlaps (tiles that must be shifted and
overlapped) are refused with :class:`~csp.errors.UnsupportedFormatError`, as are AOIs whose position
does not fall on the TIFF tile grid and slides with several Z layers.

Deliberate differences from OpenSlide: tiles outside every scanned AOI are kept (OpenSlide does not
draw them), and level sizes are the directories' sizes (OpenSlide uses the extent of the AOI tiles;
equal when the AOIs cover the whole grid and the image is a whole number of tiles).

Properties: ``ventana.*`` (every non-empty ``iScan`` attribute) and ``tiff.*`` of the level-0
directory (its ImageDescription is the OpenSlide comment).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any, ClassVar

from csp.errors import CorruptSlideError, UnsupportedFormatError
from csp.readers.base import AssociatedImage, Match, Reject, SlideMetadata
from csp.readers.tiff_common import (
    TAG_IMAGEDESCRIPTION,
    TiffLevel,
    TiffSlideReader,
    associated_image,
    compression_name,
    decode_problem,
    has_tile_tags,
    icc_profile,
    make_level,
    quiet_tifffile,
    read_tag_bytes,
    read_tag_string,
    tiff_metadata,
    tiff_properties,
)

TAG_XMP = 700
_ASSOCIATED = {"Label Image": "macro", "Label_Image": "macro", "Thumbnail": "thumbnail"}


def _parse_xml(data: bytes | str, what: str) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"{what} is not XML: {exc}") from exc


def find_iscan(root: ET.Element) -> ET.Element:
    """The ``iScan`` element of the initial XMP (root, or a child of a ``Metadata`` root)."""
    if root.tag == "iScan":
        return root
    if root.tag == "Metadata":
        for child in root:
            if child.tag == "iScan":
                return child
        raise ValueError("no iScan element in the initial XMP packet")
    raise ValueError(f"initial XMP root is <{root.tag}>, not <iScan> or <Metadata>")


def _read_iscan(tiff: Any) -> ET.Element:
    xmp = read_tag_bytes(tiff.pages[0], TAG_XMP, tiff.filehandle.fileno())
    if xmp is None:
        raise ValueError("directory 0 has no XMP packet (tag 700)")
    if b"iScan" not in xmp:
        raise ValueError("iScan not in the directory-0 XMP packet")
    return find_iscan(_parse_xml(xmp, "directory-0 XMP packet"))


def parse_level_description(desc: str) -> tuple[int, float]:
    """``(level, magnification)`` from ``"level=N mag=M ..."``; ValueError if either is missing/invalid."""
    fields = dict(pair.split("=", 1) for pair in desc.split(" ") if "=" in pair)
    if "level" not in fields or "mag" not in fields:
        raise ValueError(f"level description {desc!r} lacks level= or mag=")
    try:
        level = int(fields["level"])
    except ValueError as exc:
        raise ValueError(f"invalid level number in {desc!r}") from exc
    try:
        mag = float(fields["mag"].replace(",", "."))
    except ValueError as exc:
        raise ValueError(f"invalid magnification in {desc!r}") from exc
    if not math.isfinite(mag):
        raise ValueError(f"invalid magnification in {desc!r}")
    return level, mag


def _float_attr(node: ET.Element, name: str) -> float:
    value = node.get(name)
    if value is None:
        raise ValueError(f"<{node.tag}> has no {name} attribute")
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"<{node.tag}> {name}={value!r} is not a number") from exc


def _int_attr(node: ET.Element, name: str) -> int:
    number = _float_attr(node, name)
    if not number.is_integer():
        raise ValueError(f"<{node.tag}> {name}={node.get(name)!r} is not an integer")
    return int(number)


def check_encode_info(xml: bytes, tile_w: int, tile_h: int) -> int:
    """Validate level-0 ``EncodeInfo`` for passthrough; return the number of scanned AOIs.

    Raises
    ------
    ValueError
        Damaged or inconsistent stitching metadata.
    NotImplementedError
        A layout CSP does not support (non-zero tile overlaps, AOIs off the tile grid); the message
        is the reason.
    """
    root = _parse_xml(xml, "level-0 EncodeInfo XMP")
    if root.tag != "EncodeInfo":
        raise ValueError(f"level-0 XMP root is <{root.tag}>, not <EncodeInfo>")
    infos = root.findall("SlideStitchInfo/ImageInfo")
    origin_node = root.find("AoiOrigin")
    origins: list[ET.Element] = [] if origin_node is None else list(origin_node)
    if len(infos) != len(origins):
        raise ValueError("missing or inconsistent region metadata (ImageInfo vs AoiOrigin)")
    areas = []
    for info, origin in zip(infos, origins, strict=True):
        if not _int_attr(info, "AOIScanned"):
            continue
        if (_int_attr(info, "Width"), _int_attr(info, "Height")) != (tile_w, tile_h):
            raise ValueError(f"AOI tile size {info.get('Width')}x{info.get('Height')} is not the TIFF tile "
                             f"size {tile_w}x{tile_h}")
        ox, oy = _int_attr(origin, "OriginX"), _int_attr(origin, "OriginY")
        if ox % tile_w or oy % tile_h:
            raise ValueError(f"AOI origin {ox},{oy} is not divisible by the tile size")
        across, down = _int_attr(info, "NumCols"), _int_attr(info, "NumRows")
        for joint in info.findall("TileJointInfo"):
            if _float_attr(joint, "OverlapX") != 0 or _float_attr(joint, "OverlapY") != 0:
                raise NotImplementedError("overlapping tiles (TileJointInfo) are not supported")
            for attr in ("Tile1", "Tile2"):
                number = _int_attr(joint, attr)
                if not 1 <= number <= across * down:
                    raise ValueError(f"TileJointInfo {attr}={number} outside the AOI's {across}x{down} tiles")
        areas.append((ox // tile_w, oy // tile_h, across, down, _float_attr(info, "Pos-X"),
                      _float_attr(info, "Pos-Y")))
    # With zero overlaps the tile advance is the tile size; Pos-Y counts from below every area.
    top = max((y + down * tile_h for _, _, _, down, _, y in areas), default=0)
    for col, row, _, down, x, y in areas:
        if x != col * tile_w or top - y - down * tile_h != row * tile_h:
            raise NotImplementedError(
                f"AOI at tile ({col},{row}) is positioned at ({x:g},{top - y - down * tile_h:g}), off the TIFF "
                "tile grid: not supported")
    return len(areas)


def ventana_metadata(properties: dict[str, str], icc: bytes | None) -> SlideMetadata:
    """Unified metadata from the ``ventana.*`` properties (as OpenSlide: ScanRes, Magnification)."""
    fields: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    try:
        mpp = float(properties.get("ventana.ScanRes", "").replace(",", "."))
    except ValueError:
        mpp = float("nan")
    if math.isfinite(mpp) and mpp > 0:
        fields["mpp_x"] = fields["mpp_y"] = mpp
        provenance["mpp_x"] = provenance["mpp_y"] = "ventana.ScanRes"
    mag = properties.get("ventana.Magnification", "").strip()
    if mag.isdigit() and int(mag) > 0:
        fields["objective_power"] = float(mag)
        provenance["objective_power"] = "ventana.Magnification"
    parts = [(k, properties[k]) for k in ("ventana.ScannerModel", "ventana.UnitNumber") if properties.get(k)]
    if parts:
        fields["scanner"] = " ".join(v for _, v in parts)
        provenance["scanner"] = " + ".join(k for k, _ in parts)
    return tiff_metadata("ventana", fields, provenance, icc)


class VentanaReader(TiffSlideReader):
    """Reader of Ventana BIF/TIFF slides whose tiles need no stitching."""

    name: ClassVar[str] = "ventana"

    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept TIFFs whose directory-0 XMP packet has an ``iScan`` element."""
        with quiet_tifffile():
            tiff = probe.tiff
            if tiff is None:
                return Reject(cls.name, probe.tiff_error or "not a TIFF file")
            try:
                _read_iscan(tiff)
                fd = tiff.filehandle.fileno()
                levels = [p for p in tiff.pages
                          if "level=" in (read_tag_string(p, TAG_IMAGEDESCRIPTION, fd) or "")]
                codec = compression_name(int(levels[0].compression)) if levels else "no"
            except ValueError as exc:
                return Reject(cls.name, str(exc))
            except Exception as exc:  # noqa: BLE001 - damaged IFDs raise many types
                return Reject(cls.name, f"TIFF structure unreadable: {exc}")
        return Match(cls.name, f"Ventana BIF/TIFF, {len(levels)} level(s), {codec} tiles")

    @classmethod
    def _build(cls, path: str, tiff: Any) -> VentanaReader:
        fd = tiff.filehandle.fileno()
        try:
            iscan = _read_iscan(tiff)
        except ValueError as exc:
            raise UnsupportedFormatError(path, f"not a Ventana slide: {exc}") from exc
        properties = {f"ventana.{k}": v for k, v in iscan.attrib.items() if v}
        z_layers = iscan.get("Z-layers", "1").strip() or "1"
        if z_layers not in ("0", "1"):
            raise UnsupportedFormatError(path, f"Ventana slide with Z-layers={z_layers}: several focal planes "
                                               "are not supported")

        levels: list[TiffLevel] = []
        associated: dict[str, tuple[int, AssociatedImage]] = {}
        prev_mag = math.inf
        for index, page in enumerate(tiff.pages):
            desc = read_tag_string(page, TAG_IMAGEDESCRIPTION, fd)
            if desc is None:
                continue
            if "level=" in desc:
                try:
                    number, mag = parse_level_description(desc)
                except ValueError as exc:
                    raise CorruptSlideError(path, f"directory {index}: {exc}") from exc
                if number != len(levels):
                    raise CorruptSlideError(path, f"directory {index}: unexpected level {number}")
                if mag >= prev_mag:
                    raise CorruptSlideError(path, f"directory {index}: magnification {mag:g} not below the "
                                                  "previous level's")
                prev_mag = mag
                if not has_tile_tags(page):
                    raise CorruptSlideError(path, f"directory {index} (level {number}) is not tiled")
                problem = decode_problem(page)
                if problem is not None:
                    raise UnsupportedFormatError(path, f"{problem} (directory {index})")
                lv = make_level(path, index, page)
                if levels and (lv.level.tile_width, lv.level.tile_height) != (
                        levels[0].level.tile_width, levels[0].level.tile_height):
                    raise CorruptSlideError(path, f"directory {index}: tile size differs from level 0")
                if number == 0:
                    xmp = read_tag_bytes(page, TAG_XMP, fd)
                    if xmp is not None:
                        try:
                            check_encode_info(xmp, lv.level.tile_width, lv.level.tile_height)
                        except NotImplementedError as exc:
                            raise UnsupportedFormatError(path, str(exc)) from exc
                        except ValueError as exc:
                            raise CorruptSlideError(path, str(exc)) from exc
                levels.append(lv)
            elif desc in _ASSOCIATED:
                name = _ASSOCIATED[desc]
                associated[name] = (index, associated_image(name, index, page))
        if not levels:
            raise UnsupportedFormatError(path, "no pyramid levels (no 'level=' directory)")
        first = levels[0].level
        for lv in levels[1:]:
            if (lv.level.channels, lv.level.dtype) != (first.channels, first.dtype):
                raise UnsupportedFormatError(path, f"directory {lv.page_index} has other samples than level 0")
        levels.sort(key=lambda lv: -lv.level.width)  # stable, like OpenSlide

        page0 = tiff.pages[levels[0].page_index]
        properties.update(tiff_properties(page0, fd))
        metadata = ventana_metadata(properties, icc_profile(page0))
        return cls(path, tiff, levels, associated, properties, metadata)
