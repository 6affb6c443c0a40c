"""The CSP container format, version 1, as code (docs/format.md is the normative text).

A container is one Zarr v3 group. Pyramid levels are sharded arrays ``0``, ``1``, ... of shape
``(C, H, W)`` whose inner chunks are single stored tiles; associated images live in the ``associated``
group; group attributes hold OME-NGFF 0.5 ``multiscales`` under ``ome`` and the CSP block under ``csp``;
``csp-complete.json`` is written last and marks the container valid. Since 1.1, levels of time/z
series are 5-D ``(T, C, Z, H, W)`` arrays whose shards each hold tiles of one ``(t, z)`` plane.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = "1.2"  # 1.1: optional 5-D (t, c, z, y, x) levels; 1.2: csp.lossless bitstream version 3
SUPPORTED_MAJOR = 1
COMPLETION_KEY = "csp-complete.json"
ROOT_META_KEY = "zarr.json"
ASSOCIATED_GROUP = "associated"
MASKS_GROUP = "masks"
TISSUE_MASK_PATH = "masks/tissue"
DEFAULT_SHARD_TILES = 16
NGFF_VERSION = "0.5"
INDEX_ENTRY_BYTES = 16  # (offset, nbytes) as two little-endian uint64
INDEX_CRC_BYTES = 4  # crc32c of the index, little-endian
MISSING = 2**64 - 1  # offset/nbytes of an absent inner chunk
AXES_5D = ("t", "c", "z", "y", "x")  # axes of a 5-D level (format 1.1)

#: Encodings whose bytes are the source's, unchanged.
PASSTHROUGH = frozenset({"jpeg", "j2k", "tiff_deflate"})


def level_name(index: int) -> str:
    """Array name of pyramid level ``index`` (0 = full resolution)."""
    return str(index)


def shard_key(array_path: str, shard_row: int, shard_col: int, plane: tuple[int, int] | None = None) -> str:
    """Store key of a shard (Zarr v3 default chunk key encoding, ``/`` separator).

    Axes c,y,x; with ``plane=(t, z)`` the key of a 5-D (t,c,z,y,x) array (format 1.1).
    """
    if plane is not None:
        return f"{array_path}/c/{plane[0]}/0/{plane[1]}/{shard_row}/{shard_col}"
    return f"{array_path}/c/0/{shard_row}/{shard_col}"


def array_meta_key(array_path: str) -> str:
    """Store key of an array's ``zarr.json``."""
    return f"{array_path}/zarr.json"


@dataclass(frozen=True)
class LevelLayout:
    """Geometry of one stored level: image size, tile (inner chunk) size and shard size in tiles."""

    width: int
    height: int
    channels: int
    tile_width: int
    tile_height: int
    shard_tiles_x: int
    shard_tiles_y: int
    size_t: int = 1
    size_z: int = 1

    @property
    def is_5d(self) -> bool:
        """True for a 5-D ``(t, c, z, y, x)`` array (format 1.1): more than one time point or z plane."""
        return self.size_t > 1 or self.size_z > 1

    @property
    def planes(self) -> list[tuple[int, int]]:
        """Every ``(t, z)`` plane in storage order (``[(0, 0)]`` for a 3-D array)."""
        return [(t, z) for t in range(self.size_t) for z in range(self.size_z)]

    def plane_key(self, t: int, z: int) -> tuple[int, int] | None:
        """The ``plane`` argument of :func:`shard_key` for plane ``(t, z)`` (``None`` for 3-D arrays)."""
        if not self.is_5d:
            if t or z:
                raise IndexError(f"plane (t={t}, z={z}) requested from a 3-D (c, y, x) array")
            return None
        if not (0 <= t < self.size_t and 0 <= z < self.size_z):
            raise IndexError(f"plane (t={t}, z={z}) outside the {self.size_t} x {self.size_z} (t x z) planes")
        return (t, z)

    @property
    def tiles_across(self) -> int:
        """Tile columns."""
        return -(-self.width // self.tile_width)

    @property
    def tiles_down(self) -> int:
        """Tile rows."""
        return -(-self.height // self.tile_height)

    @property
    def shards_across(self) -> int:
        """Shard columns."""
        return -(-self.tiles_across // self.shard_tiles_x)

    @property
    def shards_down(self) -> int:
        """Shard rows."""
        return -(-self.tiles_down // self.shard_tiles_y)

    @property
    def index_bytes(self) -> int:
        """Size of a shard's trailing index including its checksum."""
        return self.shard_tiles_x * self.shard_tiles_y * INDEX_ENTRY_BYTES + INDEX_CRC_BYTES

    @classmethod
    def choose(
        cls, width: int, height: int, channels: int, tile_width: int, tile_height: int,
        shard_tiles: int = DEFAULT_SHARD_TILES, size_t: int = 1, size_z: int = 1,
    ) -> LevelLayout:
        """Layout with shards of up to ``shard_tiles`` x ``shard_tiles`` tiles, shrunk for small levels."""
        across = -(-width // tile_width)
        down = -(-height // tile_height)
        return cls(width, height, channels, tile_width, tile_height,
                   max(1, min(shard_tiles, across)), max(1, min(shard_tiles, down)), size_t, size_z)


def encode_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of a codec config: ``bytes`` become ``{"base64": ...}``."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, (bytes, bytearray, memoryview)):
            out[k] = {"base64": base64.b64encode(bytes(v)).decode("ascii")}
        else:
            out[k] = v
    return out


def decode_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`encode_config`."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict) and set(v) == {"base64"}:
            out[k] = base64.b64decode(v["base64"])
        else:
            out[k] = v
    return out


def array_metadata(
    layout: LevelLayout, dtype: str, codecs: Sequence[Mapping[str, Any]], *, fill_value: int = 0,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``zarr.json`` document of a level or associated-image array.

    ``codecs`` are the inner (per tile) array->bytes and bytes->bytes codecs as Zarr v3 JSON; the
    transpose to interleaved ``(y, x, c)`` and the sharding wrapper are added here.
    """
    c, th, tw = layout.channels, layout.tile_height, layout.tile_width
    shape = [c, layout.height, layout.width]
    shard = [c, th * layout.shard_tiles_y, tw * layout.shard_tiles_x]
    inner, order, names = [c, th, tw], [1, 2, 0], ["c", "y", "x"]
    if layout.is_5d:  # format 1.1: (t, c, z, y, x), one inner chunk = one tile of one (t, z) plane
        shape = [layout.size_t, c, layout.size_z, layout.height, layout.width]
        shard = [1, c, 1, *shard[1:]]
        inner, order, names = [1, c, 1, th, tw], [0, 2, 3, 4, 1], list(AXES_5D)
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": shard}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_value,
        "codecs": [{
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": inner,
                "codecs": [{"name": "transpose", "configuration": {"order": order}}, *codecs],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                 {"name": "crc32c"}],
                "index_location": "end",
            },
        }],
        "attributes": dict(attributes or {}),
        "dimension_names": names,
        "storage_transformers": [],
    }


def group_metadata(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The ``zarr.json`` document of a group."""
    return {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes)}


def multiscales(
    name: str, downsamples: Sequence[tuple[float, float]], mpp: tuple[float | None, float | None],
    *, five_d: bool = False, channel_names: Sequence[str] = (),
) -> dict[str, Any]:
    """OME-NGFF 0.5 ``ome`` attribute block for the pyramid (axes c, y, x; micrometres if MPP known).

    ``five_d`` gives the axes t, c, z, y, x of format 1.1 5-D levels; ``channel_names`` adds an
    ``omero`` block whose channel labels are those names.
    """
    known = mpp[0] is not None and mpp[1] is not None
    space: dict[str, Any] = {"type": "space"}
    if known:
        space["unit"] = "micrometer"
    axes = [{"name": "c", "type": "channel"}, {"name": "y", **space}, {"name": "x", **space}]
    if five_d:
        axes = [{"name": "t", "type": "time"}, axes[0], {"name": "z", "type": "space"}, *axes[1:]]
    datasets = []
    for i, (dx, dy) in enumerate(downsamples):
        sy = dy * (mpp[1] if known else 1.0)  # type: ignore[operator]
        sx = dx * (mpp[0] if known else 1.0)  # type: ignore[operator]
        scale = [1.0, 1.0, 1.0, sy, sx] if five_d else [1.0, sy, sx]
        datasets.append({"path": level_name(i), "coordinateTransformations": [
            {"type": "scale", "scale": scale}]})
    out: dict[str, Any] = {"version": NGFF_VERSION,
                           "multiscales": [{"name": name, "axes": axes, "datasets": datasets}]}
    if channel_names:
        out["omero"] = {"channels": [{"label": str(n), "active": True} for n in channel_names]}
    return out


def parse_version(text: str) -> tuple[int, int]:
    """Parse ``"MAJOR.MINOR"``."""
    major, minor = text.split(".", 1)
    return int(major), int(minor)
