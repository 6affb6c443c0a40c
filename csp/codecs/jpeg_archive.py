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
    the level's common JPEG XL header bytes (configuration ``prefix``: the signature, ``ftyp`` and
    ``jbrd`` JPEG-reconstruction boxes, then the codestream box's header and the first bytes of the
    codestream, identical for the tiles of a level) were cut from the payload and are put back before
    decoding. The codestream box is written with size 0 ("to the end", allowed for the last box) so
    that its header is common too; older containers whose prefix stops before that box read the same;
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

The recompression effort (configuration ``effort``, informational) is 9 by default: imagecodecs'
``jpegxl_encode_jpeg`` has no effort setting, so the encoder of the libjxl that imagecodecs bundles is
called through ctypes (:class:`_LibJxlEncoder`; same library, byte-identical output at effort 7). Measured
on the shared slides (Aperio, DICOM, NDPI): 2.5% / 1.2% / 2.3% smaller than effort 7, about 7x slower to
encode, rebuilds ~6% slower. Without that library the default effort 7 of imagecodecs is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
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

__all__ = ["ADOBE_RGB_APP14", "ARCHIVE_EFFORT", "DEFAULT_EFFORT", "JpegJxlTileCodec", "archive_encoding",
           "default_archive_effort", "effort_available", "jxl_header_prefix", "tile_kind"]

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
#: The archive tier's effort when libjxl's encoder is reachable (see :func:`default_archive_effort`).
#: Measured on the shared slides: 1.3-2.5% smaller than effort 7 (~0.4-0.7 MB/s per core to encode
#: instead of 4-7), rebuilds ~6% slower; effort 10 is no smaller.
ARCHIVE_EFFORT = 9
#: Bytes of the codestream (after the last box's header) a level's shared prefix may cover: the
#: codestream's size header and image metadata, identical for tiles of one size and JPEG header.
_MAX_CODESTREAM_PREFIX = 24


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


def open_last_box(stream: bytes) -> bytes:
    """``stream`` with its last box's size field set to 0 ("to the end of the file", valid for the last box).

    The size is the only per-tile byte run before the codestream; without it the codestream's own header
    joins the bytes a level's tiles share. Streams that are not a box container are returned unchanged.
    """
    boxes = jxl_boxes(stream)
    if len(boxes) < 2:
        return stream
    _kind, off, _size = boxes[-1]
    if stream[off:off + 4] in (b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"):  # already open / 64-bit size
        return stream
    return stream[:off] + b"\x00\x00\x00\x00" + stream[off + 4:]


def jxl_header_prefix(streams: Iterable[bytes]) -> bytes:
    """Common header of JPEG XL streams, which a level stores once instead of once per tile.

    The boxes before the last (signature, ``ftyp``, ``jbrd`` JPEG reconstruction data) are the same for
    tiles sharing tables and size; so, once the last box is opened (:func:`open_last_box`), are its header
    and the first bytes of the codestream (size header, image metadata: at most
    ``_MAX_CODESTREAM_PREFIX`` bytes). The codestream part is only shared when at least two different
    streams agree on it.
    """
    heads: list[bytes] = []
    cuts: list[int] = []
    for s in streams:
        s = open_last_box(bytes(s))
        boxes = jxl_boxes(s)
        if len(boxes) >= 2:
            off = boxes[-1][1]
            cuts.append(off)
            heads.append(s[: off + 8 + _MAX_CODESTREAM_PREFIX] if s[off:off + 4] == b"\x00\x00\x00\x00" else s[:off])
    if not heads:
        return b""
    if len(set(heads)) < 2:
        heads = [h[: min(cuts)] for h in heads]
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
                jxl = open_last_box(_recompress(full, effort))
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

    def source_bytes(self, stored: bytes | bytearray | memoryview) -> bytes:
        """The original JPEG bytes (see :meth:`restore`)."""
        return self.restore(stored)

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


class _LibJxlEncoder:
    """libjxl's JPEG-transcoding encoder called through ctypes, with any effort.

    imagecodecs bundles libjxl as a shared library but its ``jpegxl_encode_jpeg`` has no effort
    setting; this calls the same library's encoder API (``JxlEncoderAddJPEGFrame``) directly. At the
    default effort its output is byte-identical to imagecodecs'. Decoding always goes through imagecodecs.
    """

    _EFFORT = 0  # JXL_ENC_FRAME_SETTING_EFFORT
    _NEED_MORE_OUTPUT = 2

    def __init__(self, lib: Any) -> None:
        c = ctypes
        lib.JxlEncoderCreate.restype = c.c_void_p
        lib.JxlEncoderCreate.argtypes = [c.c_void_p]
        lib.JxlEncoderDestroy.argtypes = [c.c_void_p]
        lib.JxlEncoderAllowExpertOptions.argtypes = [c.c_void_p]
        lib.JxlEncoderUseContainer.argtypes = [c.c_void_p, c.c_int]
        lib.JxlEncoderStoreJPEGMetadata.argtypes = [c.c_void_p, c.c_int]
        lib.JxlEncoderFrameSettingsCreate.restype = c.c_void_p
        lib.JxlEncoderFrameSettingsCreate.argtypes = [c.c_void_p, c.c_void_p]
        lib.JxlEncoderFrameSettingsSetOption.argtypes = [c.c_void_p, c.c_int, c.c_int64]
        lib.JxlEncoderAddJPEGFrame.argtypes = [c.c_void_p, c.c_char_p, c.c_size_t]
        lib.JxlEncoderCloseInput.argtypes = [c.c_void_p]
        lib.JxlEncoderProcessOutput.argtypes = [c.c_void_p, c.POINTER(c.POINTER(c.c_uint8)),
                                                c.POINTER(c.c_size_t)]
        self._lib = lib

    def __call__(self, jpeg: bytes, effort: int, chunk: int | None = None) -> bytes:
        """JPEG XL (container, with JPEG reconstruction data) of a complete JPEG stream at ``effort``.

        ``chunk``: size of the first output buffer (default: the JPEG's size, at least 4 KiB).
        """
        lib = self._lib
        enc = lib.JxlEncoderCreate(None)
        if not enc:
            raise MemoryError("JxlEncoderCreate failed")
        try:
            if effort > 9:
                lib.JxlEncoderAllowExpertOptions(enc)
            settings = lib.JxlEncoderFrameSettingsCreate(enc, None)
            if (lib.JxlEncoderUseContainer(enc, 1) or lib.JxlEncoderStoreJPEGMetadata(enc, 1) or not settings
                    or lib.JxlEncoderFrameSettingsSetOption(settings, self._EFFORT, effort)
                    or lib.JxlEncoderAddJPEGFrame(settings, jpeg, len(jpeg))):
                raise ValueError("libjxl refused this JPEG")
            lib.JxlEncoderCloseInput(enc)
            size = chunk or max(4096, len(jpeg))
            out = bytearray()
            while True:
                buf = (ctypes.c_uint8 * size)()
                ptr = ctypes.cast(buf, ctypes.POINTER(ctypes.c_uint8))
                avail = ctypes.c_size_t(size)
                status = lib.JxlEncoderProcessOutput(enc, ctypes.byref(ptr), ctypes.byref(avail))
                out += memoryview(buf)[: size - avail.value]
                if status == 0:
                    return bytes(out)
                if avail.value == size:  # no progress: offer a larger buffer
                    size *= 2
                if status != self._NEED_MORE_OUTPUT or len(out) + size > 8 * len(jpeg) + (2 << 20):
                    raise ValueError("libjxl failed to recompress this JPEG")
        finally:
            lib.JxlEncoderDestroy(enc)


@functools.lru_cache(maxsize=1)
def _libjxl_encoder() -> _LibJxlEncoder | None:
    """The ctypes libjxl encoder, or ``None`` when no libjxl shared library with the encoder API is found.

    Looks for the copy bundled with imagecodecs' wheel (``imagecodecs.libs``) first, then a system libjxl.
    """
    imagecodecs.jpegxl_version()  # loads imagecodecs' libjxl and its dependencies into the process
    base = os.path.dirname(os.path.abspath(imagecodecs.__file__))
    libs = os.path.join(os.path.dirname(base), "imagecodecs.libs")  # auditwheel / delvewheel
    candidates: list[str] = []
    for pattern in (os.path.join(libs, "libjxl-*.so*"), os.path.join(libs, "jxl-*.dll"),
                    os.path.join(base, ".dylibs", "libjxl.*dylib")):  # delocate (macOS)
        candidates += sorted(glob.glob(pattern))
    system = ctypes.util.find_library("jxl")
    if system:
        candidates.append(system)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            if lib.JxlEncoderVersion() < 9000:  # 0.9: JPEG transcoding at every effort, stable option ids
                continue
            return _LibJxlEncoder(lib)
        except (OSError, AttributeError):
            continue
    return None


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
    return (effort in (None, DEFAULT_EFFORT) or _libjxl_encoder() is not None
            or (effort is not None and _effort_encoder(effort) is not None))


def default_archive_effort() -> int:
    """The effort :func:`archive_encoding` uses when none is given: :data:`ARCHIVE_EFFORT` when libjxl's
    encoder is reachable through ctypes, otherwise libjxl's default through imagecodecs."""
    return ARCHIVE_EFFORT if _libjxl_encoder() is not None else DEFAULT_EFFORT


def _candidate_efforts(effort: int | None) -> tuple[int | None, ...]:
    """Encoder settings tried per tile (the smallest result is kept).

    With libjxl reached through ctypes only ``effort`` is tried: measured on the shared slides, effort 9
    alone is within 0.01% of the per-tile best of efforts 7, 8 and 9. The pillow-jxl fallback codes
    4:4:4 YCbCr strips (NDPI) ~6% worse than the default at effort 8-9, so there the default is tried too.
    """
    if effort in (None, DEFAULT_EFFORT):
        return (None,)
    if _libjxl_encoder() is not None:
        return (effort,)
    return (None, effort)


def _recompress(full: bytes, effort: int | None) -> bytes:
    """JPEG XL lossless recompression of a complete JPEG stream (with JPEG reconstruction data)."""
    if effort not in (None, DEFAULT_EFFORT):
        lib = _libjxl_encoder()
        if lib is not None:
            return lib(full, effort)
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
    level's ``prefix`` (stored once in the configuration instead of once per tile). ``effort``: libjxl
    1..10, ``None`` = :func:`default_archive_effort` (9 when libjxl's encoder is reachable through ctypes,
    else 7); efforts other than 7 need that library or ``pillow-jxl-plugin``, without both the default 7
    is used. It is recorded in the configuration (``None`` for 7); decoding never depends on it. ``tiles``, the level's tile
    count, disables the shared header below :data:`MIN_PREFIX_TILES` tiles (it would cost more than it
    saves).
    """
    if jpeg_encoding.codec != "jpeg":
        raise CodecError(None, f"only jpeg levels can be archived, not {jpeg_encoding.codec!r}")
    if effort is None:
        effort = default_archive_effort()
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
