"""Deciding, per level, how a slide is stored: before any byte is written."""

from __future__ import annotations

from dataclasses import dataclass

from csp.codecs import can_store
from csp.container.pyramid import built_level_sizes
from csp.readers.base import SlideReader, TileEncoding

#: CSP's own lossless predictive codec (``docs/codec.md``): uint8/uint16, the smallest.
CSP_ENCODING = TileEncoding("csp", {})
#: zstd over raw samples: any sample type, the fastest to decode, ~1.5x the size of ``csp``.
ZSTD_ENCODING = TileEncoding("zstd", {"level": 3})
#: Choices of ``convert(pixel_codec=...)`` for levels CSP builds or sources that cannot be passed through.
PIXEL_CODECS = ("csp", "zstd")
#: Default pixel-lossless encoding (for uint8/uint16 data; other sample types use zstd).
PIXEL_ENCODING = CSP_ENCODING


def pixel_encoding_for(dtype: str, codec: str = "csp") -> TileEncoding:
    """The pixel-lossless encoding of ``dtype`` samples under the ``codec`` choice (``PIXEL_CODECS``).

    ``csp`` covers uint8 and uint16; other sample types (int8, float32, ...) fall back to zstd.
    """
    if codec not in PIXEL_CODECS:
        raise ValueError(f"pixel_codec must be one of {PIXEL_CODECS}, not {codec!r}")
    if codec == "csp" and str(dtype) in ("uint8", "uint16"):
        return CSP_ENCODING
    return ZSTD_ENCODING


@dataclass(frozen=True)
class LevelPlan:
    """How one container level is produced.

    ``mode`` is ``"passthrough"`` (source tile bytes stored unchanged), ``"pixel"`` (source tiles decoded
    and stored with a lossless pixel codec) or ``"built"`` (downsampled 2x from the level above).
    """

    index: int
    mode: str
    width: int
    height: int
    tile_width: int
    tile_height: int
    channels: int
    dtype: str
    encoding: TileEncoding
    source_level: int | None
    downsample: tuple[float, float]
    size_t: int = 1
    size_z: int = 1

    @property
    def origin(self) -> str:
        """Human description of where the level's pixels come from."""
        if self.mode == "built":
            return f"built: 2x mean downsample of level {self.index - 1}"
        return f"source level {self.source_level} ({self.mode})"


def plan_levels(reader: SlideReader, *, build_pyramid: bool = True,
                pixel_codec: str = "csp") -> list[LevelPlan]:
    """Plan every container level for ``reader``'s slide.

    Stored levels are passed through where their encoding can be stored as is; otherwise their pixels are
    stored losslessly. A single-level source gets a 2x pyramid built below it (``build_pyramid``).

    Sources with several time points or z planes (a reader attribute ``plane_shape = (T, Z)``) give
    5-D levels (format 1.1) stored as pixels; no pyramid is built for them, nor for sample types other
    than uint8/uint16 (the 2x downsample is defined for those).
    """
    plans: list[LevelPlan] = []
    base = reader.levels[0]
    size_t, size_z = (int(v) for v in reader.plane_shape)
    planar = size_t > 1 or size_z > 1
    if planar or base.dtype not in ("uint8", "uint16"):
        build_pyramid = False
    for i, lv in enumerate(reader.levels):
        passthrough = can_store(lv.encoding) and not planar
        plans.append(LevelPlan(
            index=i, mode="passthrough" if passthrough else "pixel", width=lv.width, height=lv.height,
            tile_width=lv.tile_width, tile_height=lv.tile_height, channels=lv.channels, dtype=lv.dtype,
            encoding=lv.encoding if passthrough else pixel_encoding_for(lv.dtype, pixel_codec), source_level=i,
            downsample=(base.width / lv.width, base.height / lv.height), size_t=size_t, size_z=size_z))
    if build_pyramid and len(reader.levels) == 1:
        for w, h in built_level_sizes(base.width, base.height, base.tile_width, base.tile_height):
            i = len(plans)
            plans.append(LevelPlan(
                index=i, mode="built", width=w, height=h, tile_width=base.tile_width,
                tile_height=base.tile_height, channels=base.channels, dtype=base.dtype,
                encoding=pixel_encoding_for(base.dtype, pixel_codec), source_level=None,
                downsample=(base.width / w, base.height / h)))
    return plans
