"""Tile codecs: decode (and, where lossless, encode) the stored bytes of one tile.

This module is the fast read path's only codec dependency: it imports NumPy and imagecodecs, never
zarr. Every :class:`TileCodec` is a frozen, stateless object, safe to share between threads; the
heavy lifting happens inside imagecodecs (libjpeg-turbo, OpenJPEG, libdeflate, zstd), which releases
the GIL while decoding.

A decoded tile is always the full stored tile ``(tile_h, tile_w, C)``. A codestream that decodes
smaller than the tile (cropped edge tiles) lands in the top-left corner with the rest set to 0; one
that decodes larger, with other channels or another sample type raises :class:`~csp.errors.CodecError`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import imagecodecs
import numpy as np

from csp.errors import CodecError
from csp.readers.base import TileEncoding

__all__ = [
    "PASSTHROUGH_CODECS",
    "TileCodec",
    "can_store",
    "from_config_json",
    "get_tile_codec",
]

#: Codec ids whose stored bytes are the source's tile bytes, unchanged.
PASSTHROUGH_CODECS: frozenset[str] = frozenset({"jpeg", "j2k", "tiff_deflate"})

Shape3 = tuple[int, int, int]

_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int32)


def _ycbcr_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Full-range (JFIF) YCbCr -> RGB contributions, rounded like OpenSlide's JPEG 2000 path: the green
    # term is summed in 16.16 fixed point (with +0.5 folded into the Cb part) and then shifted down.
    d = np.arange(256, dtype=np.float64) - 128.0
    tables = (_round_half_away(1.402 * d), _round_half_away(65536.0 * (0.5 - 0.34414 * d)),
              _round_half_away(65536.0 * (-0.71414 * d)), _round_half_away(1.772 * d))
    for t in tables:
        t.flags.writeable = False
    return tables


_R_CR, _G_CB, _G_CR, _B_CB = _ycbcr_tables()


def _as_bytes_view(data: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    mv = memoryview(data)  # type: ignore[arg-type]  # ndarray has the buffer protocol
    if mv.ndim != 1 or mv.itemsize != 1 or mv.format not in ("B", "b", "c"):
        mv = mv.cast("B")
    return mv


def _check_out(out: np.ndarray | None, shape: Shape3, dtype: np.dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out has shape {out.shape} and dtype {out.dtype}, expected {shape} {dtype}")
    return out


def _place(tile: np.ndarray, out: np.ndarray, what: str) -> np.ndarray:
    """Copy a decoded ``tile`` into the top-left of ``out`` and zero the rest."""
    if tile.ndim == 2:
        tile = tile[:, :, None]
    th, tw, c = out.shape
    if tile.ndim != 3 or tile.shape[2] != c:
        raise CodecError(None, f"{what} decodes to shape {tile.shape}: expected {c} channel(s)")
    if tile.dtype != out.dtype:
        raise CodecError(None, f"{what} decodes to {tile.dtype} samples, the array stores {out.dtype}")
    h, w = tile.shape[:2]
    if h > th or w > tw:
        raise CodecError(None, f"{what} decodes to {h}x{w} pixels, larger than the {th}x{tw} tile")
    if (h, w) != (th, tw):
        out[h:, :] = 0
        out[:h, w:] = 0
    out[:h, :w] = tile
    return out


def _jpeg_frame(mv: memoryview) -> tuple[int, int, int, int]:
    """``(precision, height, width, components)`` from a JPEG stream's SOF marker."""
    raw = bytes(mv)
    n = len(raw)
    if n < 4 or raw[0] != 0xFF or raw[1] != 0xD8:
        raise CodecError(None, "not a JPEG stream (no SOI marker)")
    i = 2
    while i + 4 <= n:
        if raw[i] != 0xFF:
            raise CodecError(None, f"corrupt JPEG header (no marker at byte {i})")
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack_from(">H", raw, i + 2)
        if marker in _JPEG_SOF:
            if i + 10 > n:
                break
            precision, height, width, comps = struct.unpack_from(">BHHB", raw, i + 4)
            if height == 0 or width == 0:
                raise CodecError(None, "JPEG frame with zero (or DNL-deferred) size is not supported")
            return precision, height, width, comps
        if marker in (0xDA, 0xD9):
            break
        i += 2 + length
    raise CodecError(None, "corrupt or truncated JPEG header (no SOF marker)")


def _j2k_size(mv: memoryview) -> tuple[int, int, int, int]:
    """``(bits, height, width, components)`` from a JPEG 2000 codestream's SIZ marker."""
    head = bytes(mv[:4096])
    at = head.find(_J2K_SOC_SIZ)
    if at < 0 or at + 4 + 38 + 3 > len(head):
        raise CodecError(None, "not a JPEG 2000 codestream (no SOC/SIZ marker)")
    (_, _, xsiz, ysiz, xo, yo, _, _, _, _, csiz) = struct.unpack_from(">HHIIIIIIIIH", head, at + 4)
    ssiz = head[at + 4 + 38]
    if xsiz <= xo or ysiz <= yo or csiz == 0:
        raise CodecError(None, "corrupt JPEG 2000 SIZ marker")
    return (ssiz & 0x7F) + 1, ysiz - yo, xsiz - xo, csiz


@dataclass(frozen=True)
class TileCodec:
    """Codec of the stored bytes of one tile (base class; use :func:`get_tile_codec`).

    Attributes
    ----------
    id
        CSP codec id (``"jpeg"``, ``"j2k"``, ``"tiff_deflate"``, ``"zstd"``).
    encoding
        The :class:`~csp.readers.base.TileEncoding` this codec implements.
    passthrough_only
        ``True`` when pixels cannot be encoded (the bytes only ever come from the source).
    """

    encoding: TileEncoding
    id: ClassVar[str] = ""
    passthrough_only: ClassVar[bool] = False
    _keys: ClassVar[frozenset[str]] = frozenset()
    _bytes_keys: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        if self.encoding.codec != self.id:
            raise CodecError(None, f"{type(self).__name__} cannot implement codec {self.encoding.codec!r}")
        unknown = set(self.encoding.config) - self._keys
        if unknown:
            raise CodecError(None, f"codec {self.id!r}: unknown configuration key(s) {sorted(unknown)}")
        self._validate(self.encoding.config)

    def _validate(self, config: Mapping[str, Any]) -> None:
        """Raise :class:`CodecError` for an invalid configuration."""

    # ------------------------------------------------------------------ public API
    def source_bytes(self, stored: bytes | bytearray | memoryview) -> bytes:
        """The source encoding's bytes a stored tile stands for: the stored bytes themselves, except for
        codecs that repack a source encoding losslessly (the archive tier rebuilds the original JPEG)."""
        return bytes(stored)

    def decode(self, data: bytes | bytearray | memoryview | np.ndarray, shape: tuple[int, int, int],
               dtype: np.dtype | str | type, out: np.ndarray | None = None) -> np.ndarray:
        """Decode one stored tile.

        Parameters
        ----------
        data
            The stored tile bytes.
        shape
            Full tile shape ``(tile_h, tile_w, C)``.
        dtype
            Sample type of the array.
        out
            Optional C-contiguous or strided destination of ``shape`` and ``dtype``; its content is
            undefined if decoding fails.

        Returns
        -------
        numpy.ndarray
            ``out`` (or a new array) holding the tile, ``(tile_h, tile_w, C)``.

        Raises
        ------
        CodecError
            The bytes are corrupt or truncated, or decode to a shape/type the array cannot hold.
        """
        shp = tuple(int(s) for s in shape)
        if len(shp) != 3 or min(shp) <= 0:
            raise ValueError(f"tile shape must be (tile_h, tile_w, C), got {shape!r}")
        dt = np.dtype(dtype)
        dest = _check_out(out, shp, dt)  # type: ignore[arg-type]
        work = dest if dest.flags.c_contiguous and dest.flags.writeable else np.empty(shp, dt)
        mv = _as_bytes_view(data)
        if len(mv) == 0:
            raise CodecError(None, f"empty {self.id} tile")
        self._decode_into(mv, work)
        if work is not dest:
            dest[...] = work
        return dest

    def encode(self, tile: np.ndarray) -> bytes:
        """Encode a ``(tile_h, tile_w, C)`` tile losslessly.

        Raises
        ------
        CodecError
            For passthrough-only codecs (``jpeg``, ``j2k``) or if encoding fails.
        """
        if self.passthrough_only:
            raise CodecError(None, f"codec {self.id!r} is passthrough-only: its tiles are the source's "
                                   "bytes and pixels cannot be encoded with it")
        arr = np.asarray(tile)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise ValueError(f"tile must be (tile_h, tile_w, C), got shape {arr.shape}")
        try:
            return self._encode(arr)
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(None, f"{self.id} encode failed: {exc}") from exc

    def config_json(self) -> dict[str, Any]:
        """The configuration as JSON values (``bytes`` as base64 strings); see :func:`from_config_json`."""
        out: dict[str, Any] = {}
        for key, value in self.encoding.config.items():
            if isinstance(value, (bytes, bytearray, memoryview)):
                out[key] = base64.b64encode(bytes(value)).decode("ascii")
            elif isinstance(value, bool) or value is None or isinstance(value, str):
                out[key] = value
            elif isinstance(value, (int, np.integer)):
                out[key] = int(value)
            else:
                out[key] = value
        return out

    @staticmethod
    def from_config_json(codec_id: str, config: Mapping[str, Any]) -> TileCodec:
        """Inverse of :meth:`config_json` (also accepts ``{"base64": ...}`` objects for bytes)."""
        return from_config_json(codec_id, config)

    def zarr_codecs(self) -> list[Any]:
        """The zarr-python codec instances of the inner chunk pipeline after the transpose.

        The array->bytes codec first, then any bytes->bytes codecs. Imports zarr.
        """
        from csp.codecs.zarr_codecs import zarr_codecs_for

        return zarr_codecs_for(self)

    def zarr_codec(self) -> Any:
        """The zarr-python array->bytes codec (first of :meth:`zarr_codecs`). Imports zarr."""
        return self.zarr_codecs()[0]

    def zarr_codecs_json(self) -> list[dict[str, Any]]:
        """:meth:`zarr_codecs` as Zarr v3 JSON (no zarr import), for ``zarr.json``."""
        return [{"name": f"csp.{self.id}", "configuration": self.config_json()}]

    # ------------------------------------------------------------------ per codec
    def _decode_into(self, mv: memoryview, out: np.ndarray) -> None:
        raise NotImplementedError

    def _encode(self, tile: np.ndarray) -> bytes:
        raise NotImplementedError


def _fail(what: str, exc: BaseException) -> CodecError:
    detail = str(exc) or type(exc).__name__
    return CodecError(None, f"corrupt or truncated {what} tile: {detail}")


@dataclass(frozen=True)
class _ImageCodec(TileCodec):
    """Shared decode logic of codestreams that carry their own size (JPEG, JPEG 2000)."""

    _what: ClassVar[str] = ""

    def _raw_decode(self, mv: memoryview, out: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _frame(self, mv: memoryview) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def _check(self, mv: memoryview) -> None:
        """Cheap integrity check before decoding."""

    def _post(self, out: np.ndarray) -> None:
        """Colour conversion after decoding (in place)."""

    def _decode_into(self, mv: memoryview, out: np.ndarray) -> None:
        self._check(mv)
        try:  # fast path: the codestream is exactly the tile
            self._raw_decode(mv, out)
            fast = True
        except Exception:
            fast = False
        if fast:
            self._post(out)
            return
        # Slow path: learn the codestream's size from its header before letting the decoder allocate
        # (a corrupt header must not make it allocate gigabytes), then decode and place it.
        bits, h, w, comps = self._frame(mv)
        th, tw, c = out.shape
        if h > th or w > tw:
            raise CodecError(None, f"{self._what} codestream is {h}x{w} pixels, larger than the "
                                   f"{th}x{tw} tile")
        if comps != c:
            raise CodecError(None, f"{self._what} codestream has {comps} component(s), the array "
                                   f"stores {c} channel(s)")
        if bits > 8 * out.dtype.itemsize:
            raise CodecError(None, f"{self._what} codestream has {bits}-bit samples, the array stores "
                                   f"{out.dtype}")
        try:
            tile = self._raw_decode(mv, None)
        except Exception as exc:
            raise _fail(self._what, exc) from exc
        _place(tile, out, f"{self._what} codestream")
        self._post(out)


@dataclass(frozen=True)
class JpegTileCodec(_ImageCodec):
    """Baseline/extended JPEG tiles, possibly abbreviated with shared tables (TIFF compression 6/7)."""

    id: ClassVar[str] = "jpeg"
    passthrough_only: ClassVar[bool] = True
    _keys: ClassVar[frozenset[str]] = frozenset({"tables", "colorspace", "outcolorspace"})
    _bytes_keys: ClassVar[frozenset[str]] = frozenset({"tables"})
    _what: ClassVar[str] = "JPEG"

    def _validate(self, config: Mapping[str, Any]) -> None:
        tables = config.get("tables")
        if tables is not None and not isinstance(tables, (bytes, bytearray, memoryview)):
            raise CodecError(None, f"jpeg: 'tables' must be bytes or None, not {type(tables).__name__}")
        for key in ("colorspace", "outcolorspace"):
            v = config.get(key)
            if v is not None and not isinstance(v, (int, np.integer, str)):
                raise CodecError(None, f"jpeg: {key!r} must be an int, a str or None, not {v!r}")

    def _check(self, mv: memoryview) -> None:
        # libjpeg only warns on a truncated stream and fills the rest with grey; refuse it instead.
        # 0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed), so it marks the real end.
        if bytes(mv[-32:]).rfind(b"\xff\xd9") < 0:
            raise CodecError(None, "truncated JPEG tile (no end-of-image marker)")

    def _raw_decode(self, mv: memoryview, out: np.ndarray | None) -> np.ndarray:
        cfg = self.encoding.config
        tables = cfg.get("tables")
        return imagecodecs.jpeg8_decode(
            mv,  # type: ignore[arg-type]
            tables=None if tables is None else bytes(tables), colorspace=cfg.get("colorspace"),
            outcolorspace=cfg.get("outcolorspace"), out=out)

    def _frame(self, mv: memoryview) -> tuple[int, int, int, int]:
        return _jpeg_frame(mv)


@dataclass(frozen=True)
class J2kTileCodec(_ImageCodec):
    """JPEG 2000 codestream tiles (Aperio compression 33003/33005, TIFF 34712).

    Configuration ``colorspace``: ``None``/``"rgb"`` (default) returns the decoded components as
    OpenJPEG produces them, which is what tifffile does for every JPEG 2000 compression (33005 tiles
    use the codestream's own multi-component transform). ``"ycbcr"`` additionally converts
    full-range YCbCr to RGB with OpenSlide's fixed-point rounding (Aperio 33003).
    """

    id: ClassVar[str] = "j2k"
    passthrough_only: ClassVar[bool] = True
    _keys: ClassVar[frozenset[str]] = frozenset({"colorspace"})
    _what: ClassVar[str] = "JPEG 2000"

    def _validate(self, config: Mapping[str, Any]) -> None:
        if config.get("colorspace") not in (None, "rgb", "ycbcr"):
            raise CodecError(None, f"j2k: 'colorspace' must be None, 'rgb' or 'ycbcr', "
                                   f"not {config.get('colorspace')!r}")

    def _raw_decode(self, mv: memoryview, out: np.ndarray | None) -> np.ndarray:
        return imagecodecs.jpeg2k_decode(mv, out=out)  # type: ignore[arg-type]

    def _frame(self, mv: memoryview) -> tuple[int, int, int, int]:
        return _j2k_size(mv)

    def _post(self, out: np.ndarray) -> None:
        if self.encoding.config.get("colorspace") != "ycbcr":
            return
        if out.shape[2] != 3 or out.dtype != np.uint8:
            raise CodecError(None, "j2k: YCbCr conversion needs 3 uint8 channels")
        y = out[..., 0].astype(np.int32)
        cb = out[..., 1]
        cr = out[..., 2]
        r = y + _R_CR[cr]
        g = y + ((_G_CB[cb] + _G_CR[cr]) >> 16)
        b = y + _B_CB[cb]
        out[..., 0] = np.clip(r, 0, 255)
        out[..., 1] = np.clip(g, 0, 255)
        out[..., 2] = np.clip(b, 0, 255)


def _byteorder(config: Mapping[str, Any]) -> Literal["<", ">"]:
    return ">" if config.get("byteorder", "<") == ">" else "<"


@dataclass(frozen=True)
class TiffDeflateTileCodec(TileCodec):
    """TIFF deflate (zlib; compression 8/32946) tiles with optional horizontal differencing.

    Configuration: ``predictor`` 1 (none) or 2 (horizontal differencing, per sample along x);
    optional ``byteorder`` (``"<"`` default, ``">"`` for big-endian TIFF files with 16-bit samples);
    optional ``level`` (1-9, default 6) used only when encoding.
    """

    id: ClassVar[str] = "tiff_deflate"
    _keys: ClassVar[frozenset[str]] = frozenset({"predictor", "byteorder", "level"})

    def _validate(self, config: Mapping[str, Any]) -> None:
        if config.get("predictor", 1) not in (1, 2):
            raise CodecError(None, f"tiff_deflate: predictor {config.get('predictor')!r} is not supported "
                                   "(only 1 = none and 2 = horizontal differencing)")
        if config.get("byteorder", "<") not in ("<", ">"):
            raise CodecError(None, f"tiff_deflate: byteorder must be '<' or '>', not {config['byteorder']!r}")
        level = config.get("level", 6)
        if not isinstance(level, (int, np.integer)) or not 0 <= int(level) <= 9:
            raise CodecError(None, f"tiff_deflate: level must be an int 0..9, not {level!r}")

    def _decode_into(self, mv: memoryview, out: np.ndarray) -> None:
        full = out.nbytes
        dst = out.data.cast("B")
        try:
            n = len(imagecodecs.deflate_decode(mv, out=dst))  # type: ignore[arg-type]
        except Exception:
            n = self._decode_capped(mv, dst)  # more data than the tile holds, or corrupt
        th, tw, c = out.shape
        row = tw * c * out.dtype.itemsize
        if n != full:
            if n == 0 or n % row:
                raise CodecError(None, f"deflate tile decodes to {n} bytes, expected {full} "
                                       f"({th}x{tw}x{c} {out.dtype})")
            out[n // row:] = 0  # rows missing at the bottom edge
        rows = out[: n // row]
        if out.dtype.itemsize > 1 and _byteorder(self.encoding.config) != _native():
            rows.byteswap(inplace=True)
        if self.encoding.config.get("predictor", 1) == 2:
            imagecodecs.delta_decode(rows, axis=-2, out=rows)

    @staticmethod
    def _decode_capped(mv: memoryview, dst: memoryview) -> int:
        # Like tifffile, keep the first tile-size bytes of a stream that holds more; never inflate
        # more than that (a corrupt stream must not allocate without bound).
        d = zlib.decompressobj()
        try:
            got = d.decompress(mv, len(dst))
            while not d.eof and d.unconsumed_tail:  # check the rest of the stream, discarding it
                d.decompress(d.unconsumed_tail, 1 << 20)
        except zlib.error as exc:
            raise _fail("deflate", exc) from exc
        if not d.eof:
            raise CodecError(None, "corrupt or truncated deflate tile: the stream ends early")
        dst[: len(got)] = got
        return len(got)

    def _encode(self, tile: np.ndarray) -> bytes:
        cfg = self.encoding.config
        arr = np.ascontiguousarray(tile)
        if cfg.get("predictor", 1) == 2:
            arr = imagecodecs.delta_encode(arr, axis=-2)
        dt = arr.dtype.newbyteorder(_byteorder(cfg)) if arr.dtype.itemsize > 1 else arr.dtype
        return bytes(imagecodecs.zlib_encode(arr.astype(dt, copy=False).tobytes(), level=int(cfg.get("level", 6))))


def _native() -> str:
    return "<" if np.little_endian else ">"


@dataclass(frozen=True)
class ZstdTileCodec(TileCodec):
    """Raw little-endian interleaved samples compressed with zstd (zarr ``bytes`` + ``zstd``)."""

    id: ClassVar[str] = "zstd"
    _keys: ClassVar[frozenset[str]] = frozenset({"level"})

    def _validate(self, config: Mapping[str, Any]) -> None:
        level = config.get("level", 3)
        if not isinstance(level, (int, np.integer)) or isinstance(level, bool) or not -131072 <= level <= 22:
            raise CodecError(None, f"zstd: level must be an int <= 22, not {level!r}")

    def _decode_into(self, mv: memoryview, out: np.ndarray) -> None:
        expected = f"expected {out.nbytes} bytes ({'x'.join(map(str, out.shape))} {out.dtype})"
        try:
            n = len(imagecodecs.zstd_decode(mv, out=out.data.cast("B")))  # type: ignore[arg-type]
        except Exception as exc:
            if "too small" in str(exc):
                raise CodecError(None, f"zstd tile decodes to more than the tile: {expected}") from exc
            raise _fail("zstd", exc) from exc
        if n != out.nbytes:
            raise CodecError(None, f"zstd tile decodes to {n} bytes, {expected}")
        if out.dtype.itemsize > 1 and not np.little_endian:  # pragma: no cover - big-endian hosts
            out.byteswap(inplace=True)

    def _encode(self, tile: np.ndarray) -> bytes:
        arr = np.ascontiguousarray(tile, dtype=tile.dtype.newbyteorder("<"))
        return bytes(imagecodecs.zstd_encode(arr.tobytes(), level=int(self.encoding.config.get("level", 3))))

    def zarr_codecs_json(self) -> list[dict[str, Any]]:
        """``[bytes(little), zstd(level)]`` as Zarr v3 JSON."""
        return [{"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": int(self.encoding.config.get("level", 3)),
                                                   "checksum": False}}]


_CODECS: Mapping[str, type[TileCodec]] = {
    c.id: c for c in (JpegTileCodec, J2kTileCodec, TiffDeflateTileCodec, ZstdTileCodec)}


@functools.lru_cache(maxsize=512)
def get_tile_codec(encoding: TileEncoding) -> TileCodec:
    """The (cached) :class:`TileCodec` implementing ``encoding``.

    Raises
    ------
    CodecError
        Unknown codec id or invalid configuration.
    """
    cls = _CODECS.get(encoding.codec)
    if cls is None:
        raise CodecError(None, f"unknown tile codec {encoding.codec!r} (known: {', '.join(sorted(_CODECS))})")
    return cls(encoding)


def from_config_json(codec_id: str, config: Mapping[str, Any]) -> TileCodec:
    """Build the codec from :meth:`TileCodec.config_json` output.

    Bytes-valued keys (JPEG ``tables``) are given as base64 strings or ``{"base64": ...}`` objects.
    """
    cls = _CODECS.get(codec_id)
    if cls is None:
        raise CodecError(None, f"unknown tile codec {codec_id!r} (known: {', '.join(sorted(_CODECS))})")
    parsed: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and set(value) == {"base64"}:
            value = value["base64"]
        if key in cls._bytes_keys and isinstance(value, str):
            try:
                value = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise CodecError(None, f"{codec_id}: {key!r} is not valid base64 ({exc})") from exc
        parsed[key] = value
    return get_tile_codec(TileEncoding(codec_id, parsed))


def can_store(encoding: TileEncoding) -> bool:
    """Whether tiles with ``encoding`` can be stored in a container as they are (and decoded back)."""
    try:
        get_tile_codec(encoding)
    except CodecError:
        return False
    return True


from csp.codecs.jpeg_archive import JpegJxlTileCodec

_CODECS = {**_CODECS, JpegJxlTileCodec.id: JpegJxlTileCodec}

from csp.codecs.lossless.tile_codec import CspTileCodec  # lossless pixel codec (imports this module)

_CODECS = {**_CODECS, CspTileCodec.id: CspTileCodec}
