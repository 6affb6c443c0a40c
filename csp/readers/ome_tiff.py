"""OME-TIFF source reader, and the plane-assembling TIFF reader it shares with QPTIFF.

Microscopy TIFFs (OME-TIFF, Akoya/PerkinElmer QPTIFF) store one grey (or RGB) *plane* per TIFF page:
channels, z sections and time points are separate pages, and pyramid levels are SubIFDs (OME) or
reduced pages (QPTIFF). tifffile's series parsing maps pages to ``(t, c, z)``; this module assembles
container tiles from them:

- a tile holds every channel of one ``(t, z)`` plane, ``(tile_h, tile_w, C)``, channels in source order
  (pages of the C axis, each contributing its samples);
- tiled pages keep their tile size; stripped pages are cut into :data:`STRIP_TILE` tiles whose pixels
  are decoded from the strips they overlap (decoded segments are kept in a small LRU cache);
- pixels are decoded by tifffile (``TiffPage.decode``), the reference decoder, and stored losslessly by
  the converter (``pixel`` mode): separate channel pages cannot be passed through as one tile. The
  exception is a single-page (RGB or grey) tiled level without t/z whose tile encoding the container
  can store (JPEG, JPEG 2000, deflate): its tiles are served as stored bytes (``passthrough``).

Sources with more than one time point or z section expose ``plane_shape = (T, Z)`` and take
``read_tile(level, col, row, t=, z=)``; the converter then writes 5-D (format 1.1) levels.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from csp.errors import CorruptSlideError, CspError, UnsupportedFormatError
from csp.readers.base import (
    AssociatedImage,
    Match,
    Reject,
    SlideMetadata,
    SlideReader,
    SourceLevel,
    TileEncoding,
)
from csp.readers.tiff_common import (
    build_from_probe,
    decode_problem,
    has_tile_tags,
    icc_profile,
    quiet_tifffile,
    resolution_mpp,
    tiff_metadata,
    tiff_properties,
    tile_encoding,
)

#: Tile size used for stripped sources (clamped to the image size rounded up to 16).
STRIP_TILE = 512
#: Bytes of decoded segments kept per reader.
SEGMENT_CACHE_BYTES = 64 << 20
_PLANE_AXES = frozenset("TCZ")


@dataclass(frozen=True)
class PlaneLevel:
    """One pyramid level: its :class:`SourceLevel` and the page of every ``(t, c_page, z)``.

    ``pages[t][c][z]`` is a tifffile page or frame (``None`` when the source lacks it); each page
    contributes ``samples`` channels.
    """

    level: SourceLevel
    pages: tuple[tuple[tuple[Any, ...], ...], ...]
    samples: int


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def series_planes(path: str, series: Any) -> tuple[list[PlaneLevel], tuple[int, int], int]:
    """Describe every level of a tifffile series as :class:`PlaneLevel`.

    Returns the levels, ``(T, Z)`` and the channel count ``C`` (= channel pages x samples per page).

    Raises
    ------
    UnsupportedFormatError
        Axes other than T, C, Z, Y, X, S with a size above 1, pages of other files, or pages tifffile
        cannot decode.
    """
    axes, shape = str(series.axes), tuple(int(s) for s in series.shape)
    samples = 1
    if axes.endswith("YXS"):
        samples = shape[-1]
        page_axes, page_shape = axes[:-3], shape[:-3]
    elif axes.endswith("YX"):
        page_axes, page_shape = axes[:-2], shape[:-2]
    else:
        raise UnsupportedFormatError(path, f"image axes {axes!r} do not end with Y, X (and samples)")
    for ax, n in zip(page_axes, page_shape, strict=True):
        if ax not in _PLANE_AXES and n > 1:
            raise UnsupportedFormatError(path, f"image axis {ax!r} of size {n} is not supported "
                                               "(only time T, channel C and z Z)")
    dims = {ax: n for ax, n in zip(page_axes, page_shape, strict=True) if ax in _PLANE_AXES}
    size_t, size_c, size_z = dims.get("T", 1), dims.get("C", 1), dims.get("Z", 1)
    levels: list[PlaneLevel] = []
    for k, lvl in enumerate(series.levels):
        pages = list(lvl.pages)
        if len(pages) != int(np.prod(page_shape, dtype=np.int64)):
            raise CorruptSlideError(path, f"level {k}: {len(pages)} pages for {page_axes}={page_shape}")
        grid = [[[None] * size_z for _ in range(size_c)] for _ in range(size_t)]
        for i, page in enumerate(pages):
            idx = dict(zip(page_axes, np.unravel_index(i, page_shape) if page_shape else (), strict=True))
            grid[idx.get("T", 0)][idx.get("C", 0)][idx.get("Z", 0)] = page
        first = next((p for p in pages if p is not None), None)
        if first is None:
            raise CorruptSlideError(path, f"level {k} has no pages")
        key = first.keyframe
        if any(p is not None and p.parent is not series.parent for p in pages):
            raise UnsupportedFormatError(path, "multi-file OME-TIFF (planes in other files) is not supported")
        problem = decode_problem(key)
        if problem is not None:
            raise UnsupportedFormatError(path, f"level {k}: {problem}")
        width, height = int(key.imagewidth), int(key.imagelength)
        if has_tile_tags(key):
            tw, th = int(key.tilewidth), int(key.tilelength)
            layout = "tiles"
        else:
            tw, th = min(STRIP_TILE, _round16(width)), min(STRIP_TILE, _round16(height))
            layout = "strips"
        encoding = TileEncoding("tiff-planes", {"compression": int(key.compression), "layout": layout})
        if layout == "tiles" and size_c == size_t == size_z == 1 and grid[0][0][0] is not None:
            from csp.codecs import can_store

            native = tile_encoding(key)
            if can_store(native):
                encoding = native  # one page = the whole tile: its stored bytes can be kept
        level = SourceLevel(width, height, tw, th, size_c * samples, np.dtype(key.dtype).name, encoding)
        levels.append(PlaneLevel(level, tuple(tuple(tuple(z) for z in c) for c in grid), samples))
    return levels, (size_t, size_z), size_c * samples


def _band_bytes(lv: PlaneLevel) -> int:
    """Decoded bytes of the segments one tile row of a level overlaps, over all channel pages."""
    page = next((p for c in lv.pages[0] for p in c if p is not None), None)
    if page is None:
        return 0
    key = page.keyframe
    src = lv.level
    rows = src.tile_height + (src.tile_height if has_tile_tags(key) else int(key.rowsperstrip or 1))
    width = -(-src.width // src.tile_width) * src.tile_width
    return rows * width * src.channels * np.dtype(src.dtype).itemsize


class PlaneTiffReader(SlideReader):
    """Base of the microscopy TIFF readers: tiles assembled from per-channel/z/t pages.

    Subclasses implement ``detect`` and ``_build``.
    """

    name: ClassVar[str] = ""

    def __init__(self, path: str, tiff: Any, levels: Sequence[PlaneLevel], plane_shape: tuple[int, int],
                 associated_pages: Mapping[str, tuple[Any, AssociatedImage]], properties: Mapping[str, str],
                 metadata: SlideMetadata) -> None:
        if not levels:
            raise UnsupportedFormatError(path, "no image level found")
        self.path = path
        self._tiff = tiff
        self._fd = tiff.filehandle.fileno()
        self._size = os.fstat(self._fd).st_size
        self._levels = tuple(levels)
        self.levels = tuple(lv.level for lv in levels)
        self.plane_shape = (int(plane_shape[0]), int(plane_shape[1]))
        self._assoc = {name: page for name, (page, _) in associated_pages.items()}
        self.associated = MappingProxyType({name: img for name, (_, img) in associated_pages.items()})
        self.properties = MappingProxyType(dict(properties))
        self.metadata = metadata
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        # Hold at least one tile row of every channel's strips: converting row by row then decodes
        # each strip once, whatever the image width.
        self._cache_limit = max([SEGMENT_CACHE_BYTES, *(_band_bytes(lv) for lv in self._levels)])
        self._lock = threading.Lock()
        self._closed = False

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def _build(cls, path: str, tiff: Any) -> PlaneTiffReader:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def open(cls, probe: Any) -> PlaneTiffReader:
        """Take ownership of the probe's parsed TIFF and build the reader.

        Raises
        ------
        UnsupportedFormatError
            The file is not of this flavour or uses an unsupported layout.
        CorruptSlideError
            The TIFF structure is damaged.
        """
        return build_from_probe(probe, cls._build)

    # ---- pixels --------------------------------------------------------------------------------
    def read_tile_encoded(self, level: int, col: int, row: int) -> bytes | None:
        """Stored bytes of a tile of a single-page tiled level (``None`` if absent).

        Raises
        ------
        UnsupportedFormatError
            The level's tiles are assembled from several pages or strips (no stored tile bytes exist;
            use :meth:`read_tile`).
        CorruptSlideError
            The tile lies beyond the end of the file.
        """
        lv = self._levels[level]
        if lv.level.encoding.codec == "tiff-planes":
            raise UnsupportedFormatError(self.path, f"level {level} tiles are assembled from separate "
                                                    "channel/plane pages or strips; there are no stored "
                                                    "tile bytes (use read_tile)")
        src = lv.level
        if not (0 <= col < src.tiles_across and 0 <= row < src.tiles_down):
            raise IndexError(f"{self.path}: tile ({col},{row}) outside level {level} grid "
                             f"{src.tiles_across}x{src.tiles_down}")
        page = lv.pages[0][0][0]
        index = row * src.tiles_across + col
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        if offset == 0 or count == 0:
            return None
        if offset + count > self._size:
            raise CorruptSlideError(self.path, f"level {level} tile ({col},{row}) extends beyond the end "
                                               "of the file; the file is truncated")
        return os.pread(self._fd, count, offset)

    def read_tile(self, level: int, col: int, row: int, t: int = 0, z: int = 0) -> np.ndarray:
        """Decoded tile ``(tile_h, tile_w, C)`` of plane ``(t, z)``; pixels outside the image are 0.

        Raises
        ------
        IndexError
            Level, tile or plane out of range.
        CorruptSlideError
            A segment cannot be read or decoded.
        """
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        if not 0 <= level < len(self._levels):
            raise IndexError(f"{self.path}: level {level} out of range (0..{len(self._levels) - 1})")
        lv = self._levels[level]
        src = lv.level
        if not (0 <= col < src.tiles_across and 0 <= row < src.tiles_down):
            raise IndexError(f"{self.path}: tile ({col},{row}) outside level {level} grid "
                             f"{src.tiles_across}x{src.tiles_down}")
        if not (0 <= t < self.plane_shape[0] and 0 <= z < self.plane_shape[1]):
            raise IndexError(f"{self.path}: plane (t={t}, z={z}) outside {self.plane_shape}")
        out = np.zeros((src.tile_height, src.tile_width, src.channels), src.dtype)
        x0, y0 = col * src.tile_width, row * src.tile_height
        x1, y1 = min(x0 + src.tile_width, src.width), min(y0 + src.tile_height, src.height)
        for c, zs in enumerate(lv.pages[t]):
            page = zs[z]
            if page is not None:
                s0 = c * lv.samples
                self._paint(page, x0, y0, x1, y1, out[: y1 - y0, : x1 - x0, s0:s0 + lv.samples], level)
        return out

    def _paint(self, page: Any, x0: int, y0: int, x1: int, y1: int, out: np.ndarray, level: int) -> None:
        """Decode the segments of ``page`` overlapping ``[y0:y1, x0:x1]`` into ``out``."""
        key = page.keyframe
        width, height = int(key.imagewidth), int(key.imagelength)
        if has_tile_tags(key):
            sw, sh = int(key.tilewidth), int(key.tilelength)
        else:
            sw, sh = width, min(int(key.rowsperstrip or height), height)
        across = -(-width // sw)  # sample planes (PlanarConfiguration=2) are refused at opening
        for srow in range(y0 // sh, (y1 - 1) // sh + 1):
            for scol in range(x0 // sw, (x1 - 1) // sw + 1):
                seg = self._segment(page, srow * across + scol, level)
                if seg is None:
                    continue
                ty, tx = srow * sh, scol * sw
                ay0, ax0 = max(y0, ty), max(x0, tx)
                ay1, ax1 = min(y1, ty + seg.shape[0]), min(x1, tx + seg.shape[1])
                if ay0 < ay1 and ax0 < ax1:
                    out[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = seg[ay0 - ty:ay1 - ty, ax0 - tx:ax1 - tx]

    def _segment(self, page: Any, index: int, level: int) -> np.ndarray | None:
        """Decoded segment ``index`` of ``page`` as ``(h, w, samples)``; ``None`` if it is absent."""
        ckey = (id(page), int(page.offset), index)
        with self._lock:
            hit = self._cache.get(ckey)
            if hit is not None:
                self._cache.move_to_end(ckey)
                return hit
        offsets, counts = page.dataoffsets, page.databytecounts
        if index >= len(offsets) or index >= len(counts):
            raise CorruptSlideError(self.path, f"level {level} page {page.index}: no segment {index} "
                                               f"({len(offsets)} in the directory)")
        offset, count = int(offsets[index]), int(counts[index])
        if offset == 0 or count == 0:
            return None
        if offset + count > self._size:
            raise CorruptSlideError(self.path, f"level {level} page {page.index} segment {index} extends "
                                               f"beyond the end of the file; the file is truncated")
        try:
            data = os.pread(self._fd, count, offset)
            key = page.keyframe
            with quiet_tifffile():
                decoded, _, _ = key.decode(data, index, jpegtables=key.jpegtables)
            seg = np.asarray(decoded)
            if seg.ndim == 4:
                seg = seg[0]
            if seg.ndim == 2:
                seg = seg[:, :, None]
            if seg.ndim != 3:
                raise ValueError(f"decoded segment has shape {seg.shape}")
        except CspError:
            raise
        except Exception as exc:  # imagecodecs/tifffile raise many exception types
            raise CorruptSlideError(self.path, f"level {level} page {page.index} segment {index}: "
                                               f"{type(exc).__name__}: {exc}") from exc
        with self._lock:
            self._cache[ckey] = seg
            self._cache_bytes += seg.nbytes
            while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
        return seg

    def read_associated(self, name: str) -> np.ndarray:
        """Decoded associated image ``(height, width, channels)``.

        Raises
        ------
        KeyError
            No associated image of that name.
        CorruptSlideError
            The image cannot be decoded.
        """
        if name not in self._assoc:
            raise KeyError(f"{self.path}: no associated image {name!r} (have {sorted(self._assoc)})")
        try:
            with quiet_tifffile():
                image = np.asarray(self._assoc[name].asarray())
        except Exception as exc:
            raise CorruptSlideError(self.path, f"associated image {name!r}: {type(exc).__name__}: {exc}") from exc
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise CorruptSlideError(self.path, f"associated image {name!r}: unexpected shape {image.shape}")
        return image

    def close(self) -> None:
        """Close the owned TIFF (its single file descriptor); idempotent."""
        if not self._closed:
            self._closed = True
            self._cache.clear()
            with contextlib.suppress(Exception):
                self._tiff.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} levels={len(self.levels)} planes={self.plane_shape}>"


def associated_from_page(name: str, page: Any, tag: str) -> tuple[Any, AssociatedImage]:
    """``(page, AssociatedImage)`` for an associated page."""
    key = page.keyframe
    img = AssociatedImage(name, int(key.imagewidth), int(key.imagelength), int(key.samplesperpixel),
                          source_tag=tag, icc_profile=icc_profile(key))
    return page, img


# ---- OME-XML -------------------------------------------------------------------------------------
_UNIT_MICRONS = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "micron": 1.0, "nm": 1e-3, "pm": 1e-6,
                 "Å": 1e-4, "mm": 1e3, "cm": 1e4, "dm": 1e5, "m": 1e6}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _child(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    found = _children(el, name)
    return found[0] if found else None


def parse_xml(text: str) -> ET.Element | None:
    """Parse an XML document given as text (encoding declaration ignored); ``None`` if malformed."""
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text or "")
    try:
        return ET.fromstring(text)
    except ET.ParseError:
        return None


def ome_metadata(root: ET.Element | None, series_name: str, index: int, channels: int,
                 page0: Any, properties: Mapping[str, str]) -> SlideMetadata:
    """Unified metadata from OME-XML: physical pixel size, objective, microscope, date, channel names.

    The OME ``Image`` is the one named like the series, else the ``index``-th. Missing OME sizes fall
    back to the TIFF resolution tags (centimetre unit only).
    """
    fields: dict[str, Any] = {}
    prov: dict[str, str] = {}
    images = [] if root is None else _children(root, "Image")
    image = next((im for im in images if im.get("Name") == series_name), None)
    if image is None and index < len(images):
        image = images[index]
    pixels = _child(image, "Pixels")
    for axis in ("X", "Y"):
        raw = None if pixels is None else pixels.get(f"PhysicalSize{axis}")
        unit = "µm" if pixels is None else pixels.get(f"PhysicalSize{axis}Unit", "µm")
        try:
            value = float(raw) * _UNIT_MICRONS[unit] if raw is not None else None
        except (ValueError, KeyError):
            value = None
        if value is not None and value > 0:
            fields[f"mpp_{axis.lower()}"] = value
            prov[f"mpp_{axis.lower()}"] = f"OME Pixels@PhysicalSize{axis} ({unit})"
    if "mpp_x" not in fields or "mpp_y" not in fields:
        mx, my = resolution_mpp(page0)
        if mx is not None and my is not None:
            fields["mpp_x"], fields["mpp_y"] = mx, my
            prov["mpp_x"] = prov["mpp_y"] = "tiff X/YResolution + ResolutionUnit=centimeter"
    date = _child(image, "AcquisitionDate")
    if date is not None and (date.text or "").strip():
        fields["scan_date"] = date.text.strip()  # type: ignore[union-attr]
        prov["scan_date"] = "OME Image/AcquisitionDate"
    instruments = [] if root is None else _children(root, "Instrument")
    ref = _child(image, "InstrumentRef")
    instrument = next((i for i in instruments if ref is not None and i.get("ID") == ref.get("ID")),
                      instruments[0] if len(instruments) == 1 else None)
    scope = _child(instrument, "Microscope")
    if scope is not None:
        name = " ".join(v for v in (scope.get("Manufacturer"), scope.get("Model")) if v)
        if name:
            fields["scanner"] = name
            prov["scanner"] = "OME Instrument/Microscope@Manufacturer+Model"
    objectives = [] if instrument is None else _children(instrument, "Objective")
    osettings = _child(image, "ObjectiveSettings")
    objective = next((o for o in objectives if osettings is not None and o.get("ID") == osettings.get("ID")),
                     objectives[0] if len(objectives) == 1 else None)
    if objective is not None and objective.get("NominalMagnification"):
        try:
            fields["objective_power"] = float(objective.get("NominalMagnification", ""))
            prov["objective_power"] = "OME Instrument/Objective@NominalMagnification"
        except ValueError:
            pass
    names = [] if pixels is None else [ch.get("Name") or ch.get("ID") or f"channel {i}"
                                       for i, ch in enumerate(_children(pixels, "Channel"))]
    if names and len(names) != channels:
        per = channels // len(names) if channels % len(names) == 0 else 0
        names = [f"{n}:{s}" for n in names for s in range(per)] if per else []
    if names:
        fields["channel_names"] = tuple(names)
        prov["channel_names"] = "OME Pixels/Channel@Name (ID when unnamed)"
    icc = icc_profile(page0)
    return tiff_metadata("ome-tiff", fields, prov, icc)


_ASSOCIATED_WORDS = ("label", "macro", "thumbnail", "overview")


class OmeTiffReader(PlaneTiffReader):
    """OME-TIFF (single file): channels, z and time of the first image; SubIFD pyramids.

    Later OME images whose name contains label/macro/thumbnail/overview become associated images.
    """

    name: ClassVar[str] = "ome-tiff"

    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept TIFFs whose first ImageDescription is OME-XML and whose first image tifffile can map."""
        with quiet_tifffile():
            tiff = probe.tiff
            if tiff is None:
                return Reject(cls.name, probe.tiff_error or "not a TIFF file")
            try:
                if not tiff.is_ome:
                    return Reject(cls.name, "no OME-XML in the first ImageDescription")
                series = tiff.series[0]
                levels, planes, channels = series_planes(probe.path, series)
            except CspError as exc:
                return Reject(cls.name, exc.detail)
            except Exception as exc:  # noqa: BLE001 - damaged IFDs/XML raise many types
                return Reject(cls.name, f"OME-TIFF structure unreadable: {exc}")
        return Match(cls.name, f"OME-TIFF {series.axes} {tuple(series.shape)} {series.dtype}, "
                               f"{len(levels)} level(s), {channels} channel(s), (T, Z) = {planes}")

    @classmethod
    def _build(cls, path: str, tiff: Any) -> OmeTiffReader:
        if not tiff.is_ome:
            raise UnsupportedFormatError(path, "not an OME-TIFF (no OME-XML)")
        all_series = list(tiff.series)
        series = all_series[0]
        levels, planes, channels = series_planes(path, series)
        page0 = levels[0].pages[0][0][0] or tiff.pages[0]
        fd = tiff.filehandle.fileno()
        properties = tiff_properties(tiff.pages[0], fd)
        root = parse_xml(tiff.ome_metadata or "")
        metadata = ome_metadata(root, str(series.name), 0, channels, page0.keyframe, properties)
        assoc: dict[str, tuple[Any, AssociatedImage]] = {}
        for k, s in enumerate(all_series[1:], start=1):
            label = str(s.name or "").lower()
            word = next((w for w in _ASSOCIATED_WORDS if w in label), None)
            if word is None or len(s.pages) != 1 or s.pages[0] is None:
                continue
            name = "macro" if word == "overview" else word
            if name not in assoc:
                assoc[name] = associated_from_page(name, s.pages[0], f"OME image {k} ({s.name})")
        properties["ome.image-name"] = str(series.name)
        properties["ome.axes"] = str(series.axes)
        properties["ome.shape"] = ",".join(str(int(n)) for n in series.shape)
        return cls(path, tiff, levels, planes, assoc, properties, metadata)
