"""Tile codecs of the CSP container.

:mod:`csp.codecs.tile` holds the fast, zarr-free decoders used by the read path;
:mod:`csp.codecs.zarr_codecs` adapts them to zarr-python (imported only when zarr needs them).

Codec ids and configurations (values of a :class:`~csp.readers.base.TileEncoding`):

``jpeg``
    ``tables`` (bytes or None), ``colorspace``, ``outcolorspace`` as tifffile's
    ``jpeg_decode_colorspace`` derives them. Passthrough only.
``j2k``
    optional ``colorspace`` (None/``"rgb"``, or ``"ycbcr"`` for Aperio 33003). Passthrough only.
``tiff_deflate``
    ``predictor`` (1 or 2), optional ``byteorder`` (``"<"``/``">"``) and ``level``. Lossless.
``zstd``
    ``level``: raw little-endian interleaved samples, zstd-compressed. Lossless.
"""

from __future__ import annotations

from csp.codecs.tile import (
    PASSTHROUGH_CODECS,
    J2kTileCodec,
    JpegTileCodec,
    TiffDeflateTileCodec,
    TileCodec,
    ZstdTileCodec,
    can_store,
    from_config_json,
    get_tile_codec,
)

__all__ = [
    "PASSTHROUGH_CODECS",
    "J2kTileCodec",
    "JpegTileCodec",
    "TiffDeflateTileCodec",
    "TileCodec",
    "ZstdTileCodec",
    "can_store",
    "from_config_json",
    "get_tile_codec",
]
