"""The archive tier's tile codec ``jpeg_jxl``: JPEG tiles repacked losslessly with JPEG XL.

A stored tile is a one-byte tag followed by a payload. The tag says how to rebuild the scanner's
original JPEG bytes, which are then decoded exactly as the passthrough ``jpeg`` codec decodes them
(libjpeg-turbo; libjxl's own pixel output is never used):

``0x00``
    plain: the payload is the original JPEG bytes (tiles the recompressor refuses or does not
    round-trip byte-exact).
bit ``0x01`` (JPEG XL)
    the payload is a JPEG XL stream made by ``jpegxl_encode_jpeg``; ``jpegxl_decode_jpeg`` gives the
    JPEG that was recompressed, from which the transforms flagged by the other bits are undone:
bit ``0x02`` (prefix)
    the level's common JPEG XL header bytes (configuration ``prefix``: the signature, ``ftyp``, the
    codestream header and the ``jbrd`` JPEG-reconstruction box, identical for the tiles of a level)
    were cut from the payload and are put back before decoding;
bit ``0x04`` (Adobe)
    an Adobe APP14 segment with ``transform = 0`` was inserted after SOI before recompression (tiles
    coded in RGB: it tells the recompressor the components are not YCbCr, which it codes better);
bit ``0x08`` (tables)
    the level's shared JPEGTables (DQT/DHT; configuration ``tables``) were spliced in after SOI
    (abbreviated TIFF tiles cannot be recompressed on their own);
bit ``0x10`` (pad)
    the tile ended with one 0x00 byte after EOI (DICOM pads frames to an even length); it was removed
    before recompression and is appended again (otherwise every tile's reconstruction data differs and
    the level cannot share it).

Every tile is packed by :meth:`JpegJxlTileCodec.pack`, which checks that :meth:`~JpegJxlTileCodec.restore`
gives back the original bytes and falls back to plain otherwise: the tier is lossless by construction.
"""

from __future__ import annotations

import functools
import os
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import imagecodecs

from csp.codecs.tile import JpegTileCodec
from csp.errors import CodecError
from csp.readers.base import TileEncoding

__all__ = ["ADOBE_RGB_APP14", "DEFAULT_EFFORT", "JpegJxlTileCodec", "archive_encoding", "effort_available",
           "jxl_header_prefix", "tile_kind"]

TAG_PLAIN = 0x00
TAG_JXL = 0x01
TAG_PREFIX = 0x02
TAG_ADOBE = 0x04
TAG_TABLES = 0x08
TAG_PAD = 0x10
_TAG_ALL = TAG_JXL | TAG_PREFIX | TAG_ADOBE | TAG_TABLES | TAG_PAD

#: APP14 "Adobe" segment, version 100, no flags, colour transform 0 (components are RGB, not YCbCr).
ADOBE_RGB_APP14 = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_JCS_RGB = 2  # libjpeg J_COLOR_SPACE value tifffile gives for RGB-coded (photometric RGB) tiles
_MIN_PREFIX = 16
#: A shared header is stored twice in the metadata (zarr.json and the csp block, base64): only levels with
#: at least this many tiles gain from it.
MIN_PREFIX_TILES = 4
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB})
#: libjxl's default effort, the one imagecodecs.jpegxl_encode_jpeg uses.
DEFAULT_EFFORT = 7


def _segments(jpeg: bytes) -> list[tuple[int, int]]:
    """``(marker, offset)`` of the header segments of a JPEG stream, up to and including SOS."""
    out: list[tuple[int, int]] = []
    i, n = 2, len(jpeg)
    while i + 4 <= n:
        if jpeg[i] != 0xFF:
            break
        marker = jpeg[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        out.append((marker, i))
        if marker == 0xDA or marker == 0xD9 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            break
        (length,) = struct.unpack_from(">H", jpeg, i + 2)
        i += 2 + length
    return out


def _table_body(tables: bytes | None) -> bytes | None:
    """The segments of a JPEGTables stream without its SOI/EOI (``None`` if unusable)."""
    if tables is None or len(tables) < 6 or tables[:2] != _SOI or tables[-2:] != _EOI:
        return None
    return bytes(tables[2:-2])


def jxl_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """``(type, offset, size)`` of the top-level boxes of a JPEG XL container (empty if not one)."""
    out: list[tuple[bytes, int, int]] = []
    i, n = 0, len(data)
    while i + 8 <= n:
        size, kind = struct.unpack_from(">I4s", data, i)
        if size == 1:
            if i + 16 > n:
                return []
            (size,) = struct.unpack_from(">Q", data, i + 8)
        elif size == 0:
            size = n - i
        if size < 8 or i + size > n:
            return []
        out.append((kind, i, size))
        i += size
    return out if i == n else []


def jxl_header_prefix(streams: Iterable[bytes]) -> bytes:
    """Common header of JPEG XL streams: the bytes before each stream's last box, common to all.

    The last box carries the entropy-coded image; the boxes before it (signature, ``ftyp``, codestream
    header, ``jbrd``) are the same for tiles sharing tables and size, so a level stores them once.
    """
    heads: list[bytes] = []
    for s in streams:
        boxes = jxl_boxes(s)
        if len(boxes) >= 2:
            heads.append(bytes(s[: boxes[-1][1]]))
    if not heads:
        return b""
    common: bytes = os.path.commonprefix(heads)  # type: ignore[assignment]  # str|bytes stub
    return bytes(common)


def tile_kind(stored: bytes | bytearray | memoryview) -> str:
    """``"plain"``, ``"jxl"`` or ``"empty"`` for one stored ``jpeg_jxl`` tile (from its tag byte)."""
    if len(stored) == 0:
        return "empty"
    return "jxl" if stored[0] & TAG_JXL else "plain"


@dataclass(frozen=True)
class JpegJxlTileCodec(JpegTileCodec):
    """Archive codec: JPEG tiles stored as JPEG XL recompressions, rebuilt byte-exact on read.

    Configuration: ``tables``, ``colorspace``, ``outcolorspace`` exactly as the ``jpeg`` codec (they
    apply to the rebuilt JPEG), plus ``prefix`` (bytes or None), the JPEG XL header shared by the
    level's tiles. Use :meth:`pack` to store a source tile and :meth:`restore` to get it back.
    """

    id: ClassVar[str] = "jpeg_jxl"
    passthrough_only: ClassVar[bool] = True
    _keys: ClassVar[frozenset[str]] = frozenset({"tables", "colorspace", "outcolorspace", "prefix", "effort"})
    _bytes_keys: ClassVar[frozenset[str]] = frozenset({"tables", "prefix"})
    _what: ClassVar[str] = "JPEG"

    def _validate(self, config: Mapping[str, Any]) -> None:
        super()._validate(config)
        prefix = config.get("prefix")
        if prefix is not None and not isinstance(prefix, (bytes, bytearray, memoryview)):
            raise CodecError(None, f"jpeg_jxl: 'prefix' must be bytes or None, not {type(prefix).__name__}")
        effort = config.get("effort")
        if effort is not None and (isinstance(effort, bool) or not isinstance(effort, int) or not 1 <= effort <= 10):
            raise CodecError(None, f"jpeg_jxl: 'effort' must be an int 1..10 or None, not {effort!r}")

    # ------------------------------------------------------------------ configuration helpers
    @property
    def _body(self) -> bytes | None:
        return _table_body(self.encoding.config.get("tables"))

    @property
    def _prefix(self) -> bytes:
        p = self.encoding.config.get("prefix")
        return b"" if p is None else bytes(p)

    def jpeg_encoding(self) -> TileEncoding:
        """The passthrough ``jpeg`` encoding of the rebuilt tiles (what ``csp repack --to passthrough`` stores)."""
        cfg = {k: v for k, v in self.encoding.config.items() if k not in ("prefix", "effort")}
        return TileEncoding("jpeg", cfg)

    # ------------------------------------------------------------------ pack / restore
    def prepare(self, jpeg: bytes) -> tuple[bytes, int]:
        """The JPEG to recompress and its transform flags (tables spliced in, Adobe marker inserted)."""
        segs = _segments(jpeg)
        markers = {m for m, _ in segs}
        flags = 0
        head = b""
        sof = next((jpeg[o + 9] for m, o in segs if m in (0xC0, 0xC1, 0xC2) and o + 10 <= len(jpeg)), 0)
        if (self.encoding.config.get("colorspace") in (_JCS_RGB, "RGB", "rgb") and sof == 3
                and not markers & {0xE0, 0xEE}):
            head += ADOBE_RGB_APP14
            flags |= TAG_ADOBE
        body = self._body
        if body is not None and 0xDB not in markers:
            head += body
            flags |= TAG_TABLES
        if jpeg.endswith(b"\xff\xd9\x00"):
            jpeg = jpeg[:-1]
            flags |= TAG_PAD
        return jpeg[:2] + head + jpeg[2:], flags

    def _unprepare(self, full: bytes, flags: int) -> bytes:
        i = 2
        if flags & TAG_ADOBE:
            if full[i:i + len(ADOBE_RGB_APP14)] != ADOBE_RGB_APP14:
                raise CodecError(None, "corrupt jpeg_jxl tile: the inserted Adobe marker is missing")
            i += len(ADOBE_RGB_APP14)
        if flags & TAG_TABLES:
            body = self._body
            if body is None or full[i:i + len(body)] != body:
                raise CodecError(None, "corrupt jpeg_jxl tile: the spliced JPEG tables are missing")
            i += len(body)
        if full[:2] != _SOI:
            raise CodecError(None, "corrupt jpeg_jxl tile: the rebuilt stream is not a JPEG")
        return full[:2] + full[i:] + (b"\x00" if flags & TAG_PAD else b"")

    def pack(self, jpeg: bytes | bytearray | memoryview) -> bytes:
        """Stored bytes for one source JPEG tile: JPEG XL when it round-trips byte-exact and is smaller."""
        src = bytes(jpeg)
        plain = bytes([TAG_PLAIN]) + src
        if len(src) < 4 or src[:2] != _SOI:
            return plain
        full, flags = self.prepare(src)
        best = plain
        for effort in _candidate_efforts(self.encoding.config.get("effort")):
            try:
                jxl = _recompress(full, effort)
            except Exception:  # noqa: BLE001, S112 - the recompressor refuses this JPEG: keep it plain
                continue
            tag = flags | TAG_JXL
            prefix = self._prefix
            if prefix and jxl.startswith(prefix):
                jxl = jxl[len(prefix):]
                tag |= TAG_PREFIX
            stored = bytes([tag]) + jxl
            if len(stored) >= len(best):
                continue
            try:
                if self.restore(stored) == src:
                    best = stored
            except CodecError:
                continue
        return best

    def restore(self, stored: bytes | bytearray | memoryview) -> bytes:
        """The original JPEG bytes of one stored tile.

        Raises
        ------
        CodecError
            Unknown tag, or a payload that is corrupt or truncated.
        """
        mv = memoryview(stored).cast("B") if not isinstance(stored, bytes) else stored
        if len(mv) < 2:
            raise CodecError(None, "truncated jpeg_jxl tile")
        tag = mv[0]
        if tag & ~_TAG_ALL or (tag and not tag & TAG_JXL):
            raise CodecError(None, f"corrupt jpeg_jxl tile: unknown tag byte 0x{tag:02x}")
        if tag == TAG_PLAIN:
            return bytes(mv[1:])
        payload = bytes(mv[1:])
        if tag & TAG_PREFIX:
            if not self._prefix:
                raise CodecError(None, "jpeg_jxl tile needs the level's JPEG XL prefix, which is not configured")
            payload = self._prefix + payload
        try:
            full = bytes(imagecodecs.jpegxl_decode_jpeg(payload, numthreads=1))
        except Exception as exc:  # any libjxl failure means damaged data
            raise CodecError(None, f"corrupt or truncated jpeg_jxl tile: {exc or type(exc).__name__}") from exc
        return self._unprepare(full, tag)

    def _decode_into(self, mv: memoryview, out: Any) -> None:
        jpeg = self.restore(mv)
        super()._decode_into(memoryview(jpeg), out)


def _effort_encoder(effort: int) -> Any:
    """This thread's pillow-jxl (libjxl) JPEG-transcoding encoder at ``effort``, or ``None`` if not installed."""
    return _thread_encoder(effort, threading.get_ident())


@functools.lru_cache(maxsize=64)
def _thread_encoder(effort: int, _thread: int) -> Any:
    try:
        from pillow_jxl.pillow_jxl import Encoder
    except ImportError:
        return None
    return Encoder(mode="RGB", lossless=True, quality=100, decoding_speed=0, effort=effort, use_container=True,
                   use_original_profile=False, num_threads=1)


def effort_available(effort: int | None) -> bool:
    """Whether JPEG recompression at ``effort`` is possible here (``None``/7: always, via imagecodecs)."""
    return effort in (None, DEFAULT_EFFORT) or _effort_encoder(effort) is not None


def _candidate_efforts(effort: int | None) -> tuple[int | None, ...]:
    """Encoder settings tried per tile (the smaller result is kept): the default, and ``effort`` if set.

    Measured on the shared slides: effort 9 saves another 1-2% on Aperio and DICOM tiles but loses
    ~6% on NDPI strips against the default, so both are tried when a higher effort is asked for.
    """
    if effort in (None, DEFAULT_EFFORT):
        return (None,)
    return (None, effort)


def _recompress(full: bytes, effort: int | None) -> bytes:
    """JPEG XL lossless recompression of a complete JPEG stream (with JPEG reconstruction data)."""
    if effort not in (None, DEFAULT_EFFORT):
        enc = _effort_encoder(effort)
        if enc is not None:
            frame = next(((full[o + 7] << 8 | full[o + 8], full[o + 5] << 8 | full[o + 6])
                          for m, o in _segments(full) if m in _SOF_MARKERS and o + 9 <= len(full)), (1, 1))
            return bytes(enc(full, frame[0], frame[1], jpeg_encode=True))
    return bytes(imagecodecs.jpegxl_encode_jpeg(full, numthreads=1))


def archive_encoding(jpeg_encoding: TileEncoding, samples: Sequence[bytes | None] = (), *,
                     effort: int | None = None, tiles: int | None = None) -> TileEncoding:
    """The ``jpeg_jxl`` encoding for a level stored with ``jpeg_encoding``.

    ``samples`` are a few of the level's source tiles; the JPEG XL header they share becomes the
    level's ``prefix`` (stored once in the configuration instead of once per tile). ``effort`` (libjxl
    1..10; ``None`` = libjxl's default 7 through imagecodecs) needs ``pillow-jxl-plugin`` for other
    values; without it the default is used. Decoding never depends on it. ``tiles``, the level's tile
    count, disables the shared header below :data:`MIN_PREFIX_TILES` tiles (it would cost more than it
    saves).
    """
    if jpeg_encoding.codec != "jpeg":
        raise CodecError(None, f"only jpeg levels can be archived, not {jpeg_encoding.codec!r}")
    if effort == DEFAULT_EFFORT or not effort_available(effort):
        effort = None
    cfg = {**dict(jpeg_encoding.config), "prefix": None, "effort": effort}
    probe = JpegJxlTileCodec(TileEncoding("jpeg_jxl", cfg))
    streams: list[bytes] = []
    for s in samples:
        if not s:
            continue
        packed = probe.pack(s)
        if packed[0] & TAG_JXL:
            streams.append(packed[1:])
    prefix = jxl_header_prefix(streams)
    if len(prefix) >= _MIN_PREFIX and (tiles is None or tiles >= MIN_PREFIX_TILES):
        cfg["prefix"] = prefix
    return TileEncoding("jpeg_jxl", cfg)
