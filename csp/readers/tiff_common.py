"""Shared machinery of the TIFF-based source readers (Aperio SVS, generic tiled TIFF).

The readers keep tifffile as the *reference decoder* (``TiffPage.decode``) but fetch tile bytes
themselves with one ``os.pread`` on the descriptor of the :class:`tifffile.TiffFile` they own, so a
reader holds exactly one file descriptor and reads never move a shared file position.

Property semantics follow OpenSlide 4 (``openslide-decode-tifflike.c``): ``tiff.*`` string tags are
copied up to the first NUL, float tags are formatted like GLib's ``g_ascii_dtostr`` and
``tiff.ResolutionUnit`` defaults to ``inch``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import numpy as np

from csp.errors import CorruptSlideError, CspError, UnsupportedFormatError
from csp.readers.base import AssociatedImage, SlideMetadata, SlideReader, SourceLevel, TileEncoding

# TIFF tag codes
TAG_IMAGEDESCRIPTION = 270
TAG_TILEWIDTH = 322
TAG_TILELENGTH = 323
TAG_ICC_PROFILE = 34675

_STRING_TAGS: tuple[tuple[str, int], ...] = (
    ("tiff.ImageDescription", 270),
    ("tiff.Make", 271),
    ("tiff.Model", 272),
    ("tiff.Software", 305),
    ("tiff.DateTime", 306),
    ("tiff.Artist", 315),
    ("tiff.HostComputer", 316),
    ("tiff.Copyright", 33432),
    ("tiff.DocumentName", 269),
)
_FLOAT_TAGS: tuple[tuple[str, int], ...] = (
    ("tiff.XResolution", 282),
    ("tiff.YResolution", 283),
    ("tiff.XPosition", 286),
    ("tiff.YPosition", 287),
)
_RESOLUTION_UNITS = {1: "none", 2: "inch", 3: "centimeter"}
# TIFF data types holding a byte buffer (OpenSlide: ASCII, UNDEFINED and BYTE) and unsigned ints
_BUFFER_TYPES = frozenset({1, 2, 7})
_UINT_TYPES = frozenset({1, 3, 4, 13, 16, 18})
_FLOAT_TYPES = frozenset({5, 10, 11, 12})

_JPEG = 7
_J2K = frozenset({33003, 33004, 33005, 34712})
_CODEC_IDS: dict[int, str] = {
    code: codec
    for codec, codes in (
        ("tiff_lzw", (5,)),
        ("tiff_deflate", (8, 32946)),
        ("tiff_packbits", (32773,)),
        ("tiff_lzma", (34925,)),
        ("tiff_zstd", (34926, 50000)),
        ("webp", (34927, 50001)),
        ("png", (34933,)),
        ("jpegxr", (22610, 34934)),
        ("jpegxl", (50002, 52546)),
    )
    for code in codes
}
_PREDICTED = frozenset({5, 8, 32946, 34925, 34926, 50000})


# ---- logging -------------------------------------------------------------------------------------
class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


_QUIET_FILTER = _DropAll()
_QUIET_LOCK = threading.Lock()
_quiet_depth = 0


@contextlib.contextmanager
def quiet_tifffile() -> Iterator[None]:
    """Silence the ``tifffile`` logger (damaged files make it noisy); re-entrant and thread-safe."""
    global _quiet_depth
    logger = logging.getLogger("tifffile")
    with _QUIET_LOCK:
        if _quiet_depth == 0:
            logger.addFilter(_QUIET_FILTER)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logger.removeFilter(_QUIET_FILTER)


# ---- formatting and tag access -------------------------------------------------------------------
def format_double(value: float) -> str:
    """Format a double like GLib's ``g_ascii_dtostr`` as used by OpenSlide.

    The shortest of ``%.15g`` / ``%.17g`` that reads back to the same double
    (``0.499`` -> ``"0.499"``, ``4.016129032258064`` -> ``"4.0161290322580641"``).
    """
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.15g}"
    if float(text) != value:
        text = f"{value:.17g}"
    return text


def glib_strip(text: str) -> str:
    """Strip ASCII whitespace like GLib's ``g_strstrip`` (not Unicode spaces)."""
    return text.strip(" \t\n\v\f\r")


def has_tile_tags(page: Any) -> bool:
    """True if the IFD carries TileWidth and TileLength (OpenSlide's notion of a tiled directory).

    tifffile's ``is_tiled`` is not used because tifffile synthesises tiles for NDPI strips.
    """
    return TAG_TILEWIDTH in page.tags and TAG_TILELENGTH in page.tags


def read_tag_bytes(page: Any, code: int, fd: int) -> bytes | None:
    """Stored bytes of a byte-typed tag (ASCII/BYTE/UNDEFINED) up to the first NUL, or ``None``.

    The value is read with ``os.pread`` at the tag's value offset, exactly as stored (no decoding or
    whitespace stripping by tifffile).
    """
    tag = page.tags.get(code)
    if tag is None or int(tag.dtype) not in _BUFFER_TYPES:
        return None
    try:
        raw = os.pread(fd, int(tag.count), int(tag.valueoffset))
    except (OSError, ValueError, OverflowError):
        return None
    if len(raw) != tag.count:
        return None
    return raw.split(b"\x00", 1)[0]


def read_tag_string(page: Any, code: int, fd: int) -> str | None:
    """A byte-typed tag decoded as UTF-8 (undecodable bytes replaced), cut at the first NUL."""
    raw = read_tag_bytes(page, code, fd)
    return None if raw is None else raw.decode("utf-8", "replace")


def read_tag_float(page: Any, code: int) -> float | None:
    """First value of a RATIONAL/SRATIONAL/FLOAT/DOUBLE tag as a double (OpenSlide semantics)."""
    tag = page.tags.get(code)
    if tag is None or int(tag.dtype) not in _FLOAT_TYPES or tag.count < 1:
        return None
    value = tag.value
    if int(tag.dtype) in (5, 10):  # rationals: tifffile gives (num, den) pairs
        flat = np.asarray(value, dtype=np.float64).ravel()
        if flat.size < 2:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(flat[0]) / np.float64(flat[1]))
    flat = np.asarray(value, dtype=np.float64).ravel()
    return float(flat[0]) if flat.size else None


def resolution_unit(page: Any) -> int:
    """ResolutionUnit of a page; 2 (inch) when absent or not an unsigned integer, like OpenSlide."""
    tag = page.tags.get(296)
    if tag is None or int(tag.dtype) not in _UINT_TYPES or tag.count < 1:
        return 2
    value = tag.value
    if isinstance(value, tuple | list):
        value = value[0]
    return int(value)


def tiff_properties(page: Any, fd: int) -> dict[str, str]:
    """OpenSlide's ``tiff.*`` properties of one directory (OpenSlide uses directory 0)."""
    props: dict[str, str] = {}
    for name, code in _STRING_TAGS:
        value = read_tag_string(page, code, fd)
        if value is not None:
            props[name] = value
    for name, code in _FLOAT_TAGS:
        number = read_tag_float(page, code)
        if number is not None:
            props[name] = format_double(number)
    props["tiff.ResolutionUnit"] = _RESOLUTION_UNITS.get(resolution_unit(page), "unknown")
    return props


def resolution_mpp(page: Any) -> tuple[float | None, float | None]:
    """Microns per pixel from X/YResolution, only for ResolutionUnit=centimeter (as OpenSlide).

    Inch resolutions are ignored: they are usually a 72 dpi writer default, not a scan resolution.
    """
    if resolution_unit(page) != 3:
        return None, None
    out: list[float | None] = []
    for code in (282, 283):
        res = read_tag_float(page, code)
        out.append(10000.0 / res if res and math.isfinite(res) and res > 0 else None)
    return out[0], out[1]


def icc_profile(page: Any) -> bytes | None:
    """Bytes of the InterColorProfile tag (34675) of a page, or ``None``."""
    tag = page.tags.get(TAG_ICC_PROFILE)
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, bytes | bytearray):
        return bytes(value) or None
    try:
        return bytes(np.asarray(value, dtype=np.uint8).ravel().tobytes()) or None
    except (TypeError, ValueError):
        return None


# ---- encodings and decodability ------------------------------------------------------------------
def tiff_metadata(vendor: str, fields: dict[str, Any], provenance: dict[str, str], icc: bytes | None,
                  icc_source: str = "tiff tag 34675 (level 0)") -> SlideMetadata:
    """The :class:`SlideMetadata` of a TIFF-based reader: the collected ``fields`` and their
    ``provenance``, plus the ICC profile (when present) read from ``icc_source``."""
    if icc:
        fields["icc_profile"] = icc
        provenance["icc_profile"] = icc_source
    return SlideMetadata(vendor=vendor, provenance=provenance, **fields)


def compression_name(compression: int) -> str:
    """tifffile's name of a compression value, or ``"unknown"``."""
    import tifffile

    try:
        return tifffile.COMPRESSION(compression).name
    except ValueError:
        return "unknown"


def decode_problem(page: Any) -> str | None:
    """Why tifffile cannot decode this page's segments, or ``None`` if it can.

    Checks the decompressor registry first (precise message) and then asks tifffile's decode
    function, which raises immediately for unsupported predictors, sample formats, etc.
    """
    import tifffile

    compression = int(page.compression)
    if compression != 1 and compression not in tifffile.TIFF.DECOMPRESSORS:
        name = compression_name(compression)
        what = "not a known TIFF compression" if name == "unknown" else name
        return f"unsupported TIFF compression {compression} ({what}): no decoder available"
    if int(page.planarconfig) != 1 and int(page.samplesperpixel) > 1:
        return "separate sample planes (PlanarConfiguration=2) are not supported"
    if int(page.imagedepth) != 1 or int(getattr(page, "tiledepth", 1)) != 1:
        return f"volumetric TIFF (ImageDepth={page.imagedepth}) is not supported"
    try:
        page.decode(None, 0)
    except Exception as exc:  # noqa: BLE001 - tifffile returns raising stubs for unsupported layouts
        return f"TIFF compression {compression} not decodable: {exc}"
    return None


def tile_encoding(page: Any) -> TileEncoding:
    """The :class:`TileEncoding` of a tiled page's stored segments.

    ``jpeg``: ``tables``/``colorspace``/``outcolorspace`` exactly as tifffile decodes the page;
    ``j2k``: ``colorspace`` ``"ycbcr"`` (Aperio 33003) or ``"rgb"``; predictor-capable codecs
    (``tiff_deflate``, ``tiff_lzw``, ...): ``predictor`` plus ``byteorder`` for multi-byte samples.
    Codecs CSP cannot store as they are are decoded through :meth:`TiffSlideReader.read_tile`.
    """
    from tifffile.tifffile import jpeg_decode_colorspace

    compression = int(page.compression)
    predictor = int(page.predictor)
    if compression == 1:
        return TileEncoding("raw", {})
    if compression == _JPEG:
        colorspace, outcolorspace = jpeg_decode_colorspace(
            int(page.photometric), int(page.planarconfig), tuple(page.extrasamples), bool(page.is_jfif)
        )
        return TileEncoding(
            "jpeg",
            {"tables": page.jpegtables or None, "colorspace": colorspace, "outcolorspace": outcolorspace},
        )
    if compression in _J2K:  # only Aperio 33003 needs a colour conversion after OpenJPEG
        return TileEncoding("j2k", {"colorspace": "ycbcr" if compression == 33003 else "rgb"})
    codec = _CODEC_IDS.get(compression)
    if codec is None:
        return TileEncoding("tiff", {"compression": compression, "predictor": predictor})
    config: dict[str, Any] = {"predictor": predictor} if compression in _PREDICTED else {}
    if config and np.dtype(page.dtype).itemsize > 1:  # differencing works on native-order samples
        config["byteorder"] = ">" if page.parent.byteorder == ">" else "<"
    return TileEncoding(codec, config)


# ---- the shared reader ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TiffLevel:
    """A pyramid level backed by one tiled TIFF page."""

    page_index: int
    level: SourceLevel
    offsets: np.ndarray
    bytecounts: np.ndarray
    decode: Callable[..., Any]
    jpegtables: bytes | None
    compression: int


def make_level(path: str, page_index: int, page: Any) -> TiffLevel:
    """Describe a tiled page as a :class:`TiffLevel`, validating what tile access relies on."""
    problem = decode_problem(page)
    if problem is not None:
        raise UnsupportedFormatError(path, f"{problem} (page {page_index})")
    level = SourceLevel(  # width, height, tile width/height, samples, dtype, encoding
        int(page.imagewidth),
        int(page.imagelength),
        int(page.tilewidth),
        int(page.tilelength),
        int(page.samplesperpixel),
        np.dtype(page.dtype).name,
        tile_encoding(page),
    )
    if level.width <= 0 or level.height <= 0 or level.tile_width <= 0 or level.tile_height <= 0:
        raise CorruptSlideError(path, f"page {page_index}: invalid image or tile size")
    offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
    counts = np.asarray(page.databytecounts, dtype=np.uint64)
    need = level.tiles_across * level.tiles_down
    if offsets.size < need or counts.size < need:
        raise CorruptSlideError(
            path, f"page {page_index}: {min(offsets.size, counts.size)} tile offsets for {need} tiles"
        )
    jpegtables = page.jpegtables or None
    return TiffLevel(page_index, level, offsets, counts, page.decode, jpegtables, int(page.compression))


def associated_image(name: str, page_index: int, page: Any) -> AssociatedImage:
    """Describe a (stripped) TIFF page as an associated image."""
    size = (int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel))
    return AssociatedImage(name, *size, source_tag=f"tiff page {page_index}", icc_profile=icc_profile(page))


R = TypeVar("R")


def build_from_probe(probe: Any, build: Callable[[str, Any], R]) -> R:
    """Take ownership of the probe's parsed TIFF and run ``build(path, tiff)`` on it.

    The TIFF is closed again if building fails; a damaged structure becomes :class:`CorruptSlideError`,
    a file that is not a TIFF :class:`UnsupportedFormatError`.
    """
    tiff = probe.take_tiff()
    if tiff is None:
        detail = probe.tiff_error or "not a TIFF file"
        if probe.looks_like_tiff:
            raise CorruptSlideError(probe.path, detail)
        raise UnsupportedFormatError(probe.path, detail)
    try:
        with quiet_tifffile():
            return build(probe.path, tiff)
    except CspError:
        tiff.close()
        raise
    except Exception as exc:  # tifffile raises many types on damaged structures
        tiff.close()
        raise CorruptSlideError(probe.path, f"TIFF structure unreadable: {exc}") from exc


class TiffSlideReader(SlideReader):
    """Base of the TIFF readers: one owned :class:`tifffile.TiffFile`, tiles by ``os.pread``.

    Subclasses implement ``detect`` and ``_build`` (choose levels, associated images, properties
    and metadata from the parsed TIFF).
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        path: str,
        tiff: Any,
        levels: list[TiffLevel],
        associated_pages: Mapping[str, tuple[int, AssociatedImage]],
        properties: Mapping[str, str],
        metadata: SlideMetadata,
    ) -> None:
        if not levels:
            raise UnsupportedFormatError(path, "no tiled pyramid level found")
        self.path = path
        self._tiff = tiff
        self._fd = tiff.filehandle.fileno()
        self._size = os.fstat(self._fd).st_size
        self._levels = tuple(levels)
        self._assoc_pages = {name: idx for name, (idx, _) in associated_pages.items()}
        self.levels = tuple(lv.level for lv in levels)
        self.associated = MappingProxyType({name: img for name, (_, img) in associated_pages.items()})
        self.properties = MappingProxyType(dict(properties))
        self.metadata = metadata
        self._closed = False

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def _build(cls, path: str, tiff: Any) -> TiffSlideReader:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def open(cls, probe: Any) -> TiffSlideReader:
        """Take ownership of the probe's parsed TIFF and build the reader.

        Raises
        ------
        UnsupportedFormatError
            The file is not a TIFF of this flavour or uses an unsupported feature.
        CorruptSlideError
            The TIFF structure is damaged.
        """
        return build_from_probe(probe, cls._build)

    # ---- tile access ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")

    def _locate(self, level: int, col: int, row: int) -> tuple[TiffLevel, int]:
        self._check_open()
        if not 0 <= level < len(self._levels):
            raise IndexError(f"{self.path}: level {level} out of range (0..{len(self._levels) - 1})")
        lv = self._levels[level]
        if not (0 <= col < lv.level.tiles_across and 0 <= row < lv.level.tiles_down):
            raise IndexError(
                f"{self.path}: tile ({col},{row}) outside level {level} grid "
                f"{lv.level.tiles_across}x{lv.level.tiles_down}"
            )
        return lv, row * lv.level.tiles_across + col

    def read_tile_encoded(self, level: int, col: int, row: int) -> bytes | None:
        """Stored bytes of one tile (one ``os.pread``); ``None`` for a missing tile.

        Raises
        ------
        CorruptSlideError
            The tile's byte range lies beyond the end of the file.
        """
        lv, index = self._locate(level, col, row)
        offset = int(lv.offsets[index])
        count = int(lv.bytecounts[index])
        if offset == 0 or count == 0:
            return None
        where = f"level {level} tile ({col},{row})"
        if offset + count > self._size:
            raise CorruptSlideError(
                self.path,
                f"{where}: data at offset {offset} (+{count} bytes) extends beyond the end of the "
                f"file ({self._size} bytes); the file is truncated",
            )
        try:
            data = os.pread(self._fd, count, offset)
        except OSError as exc:
            raise CorruptSlideError(self.path, f"{where}: read failed: {exc}") from exc
        if len(data) != count:
            raise CorruptSlideError(self.path, f"{where}: short read ({len(data)} of {count} bytes)")
        return data

    def associated_layout(self, name: str) -> SourceLevel | None:
        """JPEG-compressed stripped associated pages are served strip by strip (passthrough)."""
        page = self._tiff.pages[self._assoc_pages[name]]
        if int(page.compression) != _JPEG or has_tile_tags(page) or int(page.planarconfig) != 1:
            return None
        w, h = int(page.imagewidth), int(page.imagelength)
        rows = min(int(page.rowsperstrip or h), h)
        if len(page.dataoffsets) != -(-h // rows):
            return None
        return SourceLevel(w, h, w, rows, int(page.samplesperpixel), np.dtype(page.dtype).name,
                           tile_encoding(page))

    def read_associated_encoded(self, name: str, col: int, row: int) -> bytes | None:
        """Stored bytes of strip ``row`` of a JPEG associated page (``col`` must be 0)."""
        self._check_open()
        page = self._tiff.pages[self._assoc_pages[name]]
        if col != 0 or not 0 <= row < len(page.dataoffsets):
            raise IndexError(f"{self.path}: associated image {name} has no strip ({col},{row})")
        offset, count = int(page.dataoffsets[row]), int(page.databytecounts[row])
        if offset == 0 or count == 0:
            return None
        if offset + count > self._size:
            raise CorruptSlideError(self.path, f"associated image {name} strip {row} extends beyond the "
                                               f"end of the file; the file is truncated")
        return os.pread(self._fd, count, offset)

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """Decoded tile ``(tile_height, tile_width, channels)`` via tifffile; zeros if missing.

        Raises
        ------
        CorruptSlideError
            The tile cannot be read or decoded.
        """
        data = self.read_tile_encoded(level, col, row)
        lv, index = self._locate(level, col, row)
        src = lv.level
        shape = (src.tile_height, src.tile_width, src.channels)
        if data is None:
            return np.zeros(shape, dtype=src.dtype)
        try:
            with quiet_tifffile():
                decoded, _, _ = lv.decode(data, index, jpegtables=lv.jpegtables)
            tile = np.asarray(decoded)
            if tile.ndim == 4:  # (depth=1, length, width, samples)
                tile = tile[0]
            elif tile.ndim == 2:
                tile = tile[:, :, np.newaxis]
            if tile.ndim != 3:
                raise ValueError(f"decoded tile has unexpected shape {tile.shape}")
            if tile.shape[2] != src.channels:
                raise ValueError(f"decoded {tile.shape[2]} samples per pixel, expected {src.channels}")
        except CspError:
            raise
        except Exception as exc:  # imagecodecs/tifffile raise many exception types
            raise CorruptSlideError(
                self.path, f"level {level} tile ({col},{row}): {type(exc).__name__}: {exc}"
            ) from exc
        if tile.shape != shape:  # decoders may return only the in-image part of edge tiles
            padded = np.zeros(shape, dtype=src.dtype)
            h, w = min(tile.shape[0], shape[0]), min(tile.shape[1], shape[1])
            padded[:h, :w] = tile[:h, :w]
            tile = padded
        return np.ascontiguousarray(self._postprocess_tile(lv, tile), dtype=src.dtype)

    def _postprocess_tile(self, level: TiffLevel, tile: np.ndarray) -> np.ndarray:
        """Hook for format-specific pixel fixes after tifffile's decode (identity here)."""
        return tile

    def read_associated(self, name: str) -> np.ndarray:
        """Decoded associated image ``(height, width, channels)``.

        Raises
        ------
        KeyError
            No associated image of that name.
        CorruptSlideError
            The image data cannot be decoded.
        """
        self._check_open()
        if name not in self._assoc_pages:
            raise KeyError(f"{self.path}: no associated image {name!r} (have {sorted(self._assoc_pages)})")
        index = self._assoc_pages[name]
        try:
            with quiet_tifffile():
                image = np.asarray(self._tiff.pages[index].asarray())
        except Exception as exc:
            raise CorruptSlideError(
                self.path, f"associated image {name!r} (page {index}): {type(exc).__name__}: {exc}"
            ) from exc
        if image.ndim == 2:
            image = image[:, :, np.newaxis]
        if image.ndim != 3:
            raise CorruptSlideError(self.path, f"associated image {name!r}: unexpected shape {image.shape}")
        return image

    def close(self) -> None:
        """Close the owned TIFF (and with it the single file descriptor); idempotent."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._tiff.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} levels={len(self.levels)}>"
