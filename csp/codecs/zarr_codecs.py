"""zarr-python (v3) array->bytes codecs for CSP's passthrough tile encodings.

The classes are registered with zarr through the ``zarr.codecs`` entry points in ``pyproject.toml``
(``csp.jpeg``, ``csp.j2k``, ``csp.tiff_deflate``), so plain ``zarr.open_array`` can read a CSP container
without importing :mod:`csp` first. Each codec is a thin adapter over the matching
:class:`csp.codecs.tile.TileCodec`; its Zarr ``configuration`` is exactly
:meth:`~csp.codecs.tile.TileCodec.config_json`.

In a CSP array the codec sits after ``transpose(order=(1, 2, 0))`` inside ``sharding_indexed``, so it
sees chunks of shape ``(tile_h, tile_w, C)``; 2-D chunks ``(tile_h, tile_w)`` are accepted as one
channel. The fast read path never imports this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.codecs.bytes import BytesCodec
from zarr.codecs.zstd import ZstdCodec
from zarr.core.common import JSON, parse_named_configuration

from csp.codecs.tile import TileCodec, from_config_json, get_tile_codec
from csp.readers.base import TileEncoding

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

__all__ = ["Jpeg2kCodec", "JpegCodec", "TiffDeflateCodec", "zarr_codecs_for"]


@dataclass(frozen=True)
class _TileBytesCodec(ArrayBytesCodec):
    """Base of the CSP tile codecs: one stored tile <-> one ``(tile_h, tile_w, C)`` chunk."""

    is_fixed_size = False
    codec_id: ClassVar[str] = ""

    encoding: TileEncoding

    def __init__(self, *, encoding: TileEncoding | None = None, **config: Any) -> None:
        if encoding is None:
            codec = from_config_json(self.codec_id, config)
        else:
            if config:
                raise TypeError("give either encoding or configuration keywords, not both")
            codec = get_tile_codec(encoding)
        if codec.id != self.codec_id:
            raise ValueError(f"{type(self).__name__} implements {self.codec_id!r}, not {codec.id!r}")
        object.__setattr__(self, "encoding", codec.encoding)

    @classmethod
    def name(cls) -> str:
        """The codec's name in Zarr metadata."""
        return f"csp.{cls.codec_id}"

    @property
    def tile_codec(self) -> TileCodec:
        """The CSP tile codec doing the work."""
        return get_tile_codec(self.encoding)

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        """Build from Zarr v3 JSON ``{"name": "csp.<id>", "configuration": {...}}``."""
        _, configuration = parse_named_configuration(data, cls.name(), require_configuration=False)
        return cls(**dict(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        """Zarr v3 JSON of this codec."""
        return {"name": self.name(), "configuration": self.tile_codec.config_json()}

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        """Refuse arrays whose chunks cannot be tiles (the codec needs 2 or 3 dimensions)."""
        if len(shape) not in (2, 3):
            raise ValueError(f"{self.name()} needs 2-D or 3-D chunks, the array has {len(shape)} dimensions")

    @staticmethod
    def _tile_shape(chunk_spec: ArraySpec) -> tuple[int, int, int]:
        shape = tuple(chunk_spec.shape)
        if len(shape) == 2:
            return (shape[0], shape[1], 1)
        if len(shape) != 3:
            raise ValueError(f"csp tile codecs need 2-D or 3-D chunks, got shape {shape}")
        return shape  # type: ignore[return-value]

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        data = np.ascontiguousarray(chunk_bytes.as_numpy_array()).view(np.uint8)
        tile = self.tile_codec.decode(data, self._tile_shape(chunk_spec),
                                      chunk_spec.dtype.to_native_dtype())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(tile.reshape(chunk_spec.shape))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        tile = np.asarray(chunk_array.as_numpy_array()).reshape(self._tile_shape(chunk_spec))
        return chunk_spec.prototype.buffer.from_bytes(self.tile_codec.encode(tile))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Unknown: the encoded size depends on the content."""
        raise NotImplementedError


@dataclass(frozen=True, init=False)
class JpegCodec(_TileBytesCodec):
    """``csp.jpeg``: JPEG tiles (possibly abbreviated; ``tables`` shared per array). Decode only.

    Configuration: ``tables`` (base64 string or null), ``colorspace``, ``outcolorspace``.
    """

    codec_id: ClassVar[str] = "jpeg"


@dataclass(frozen=True, init=False)
class Jpeg2kCodec(_TileBytesCodec):
    """``csp.j2k``: JPEG 2000 codestream tiles. Decode only. Configuration: optional ``colorspace``."""

    codec_id: ClassVar[str] = "j2k"


@dataclass(frozen=True, init=False)
class TiffDeflateCodec(_TileBytesCodec):
    """``csp.tiff_deflate``: TIFF deflate tiles. Configuration: ``predictor`` (1 or 2), optional
    ``byteorder`` and ``level``. Lossless encode and decode.
    """

    codec_id: ClassVar[str] = "tiff_deflate"


@dataclass(frozen=True, init=False)
class JpegJxlCodec(_TileBytesCodec):
    """``csp.jpeg_jxl``: archive-tier JPEG tiles repacked with JPEG XL, rebuilt byte-exact. Decode only.

    Configuration: as ``csp.jpeg`` plus ``prefix`` (base64 JPEG XL header shared by the tiles, or null).
    """

    codec_id: ClassVar[str] = "jpeg_jxl"


_CLASSES: dict[str, type[_TileBytesCodec]] = {
    c.codec_id: c for c in (JpegCodec, Jpeg2kCodec, TiffDeflateCodec, JpegJxlCodec)}



@dataclass(frozen=True, init=False)
class LosslessCodec(_TileBytesCodec):
    """``csp.lossless``: CSP's lossless predictive pixel codec (``docs/codec.md``). No configuration."""

    codec_id: ClassVar[str] = "csp"

    @classmethod
    def name(cls) -> str:
        """The codec's name in Zarr metadata."""
        return "csp.lossless"


_CLASSES[LosslessCodec.codec_id] = LosslessCodec

def zarr_codecs_for(codec: TileCodec) -> list[Any]:
    """zarr-python codec instances for a tile codec (array->bytes first, then bytes->bytes)."""
    if codec.id == "zstd":
        return [BytesCodec(endian="little"), ZstdCodec(level=int(codec.encoding.config.get("level", 3)))]
    return [_CLASSES[codec.id](encoding=codec.encoding)]
