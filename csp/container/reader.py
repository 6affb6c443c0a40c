"""The fast read path: cached shard indexes, one positional read per tile, decode into a buffer.

zarr-python costs 0.3-1.3 ms per call; this path costs one ``pread`` plus the decode. It reads the
same bytes zarr-python would (the container is plain Zarr v3), which a property test checks.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np

from csp.codecs import TileCodec, get_tile_codec
from csp.container import spec
from csp.container.cache import TileCache
from csp.container.spec import LevelLayout
from csp.container.stores import StoreReader, open_reader
from csp.errors import CodecError, ContainerError, IncompleteContainerError
from csp.readers.base import TileEncoding


@dataclass(frozen=True)
class StoredArray:
    """One stored array (pyramid level or associated image) as the fast path sees it."""

    path: str
    layout: LevelLayout
    dtype: np.dtype
    encoding: TileEncoding
    fill_value: int
    codec: TileCodec

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        """Decoded tile shape ``(tile_h, tile_w, C)``."""
        lay = self.layout
        return (lay.tile_height, lay.tile_width, lay.channels)


def _layout_from_meta(path: str, meta: Mapping[str, Any], where: str) -> tuple[LevelLayout, np.dtype, int]:
    try:
        size_t = size_z = 1
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        sharding = meta["codecs"][0]
        if sharding["name"] != "sharding_indexed":
            raise KeyError("first codec is not sharding_indexed")
        conf = sharding["configuration"]
        if len(meta["shape"]) == 5:  # format 1.1: (t, c, z, y, x), one (t, z) plane per shard
            if list(meta.get("dimension_names") or spec.AXES_5D) != list(spec.AXES_5D):
                raise KeyError(f"5-D dimension_names must be {list(spec.AXES_5D)}")
            size_t, c, size_z, h, w = meta["shape"]
            if shard[0] != 1 or shard[2] != 1:
                raise KeyError("5-D shards must hold one (t, z) plane")
            shard = [shard[1], shard[3], shard[4]]
            _, _, _, th, tw = conf["chunk_shape"]
        else:
            c, h, w = meta["shape"]
            _, th, tw = conf["chunk_shape"]
        if conf.get("index_location", "end") != "end":
            raise KeyError("index_location must be 'end'")
        layout = LevelLayout(int(w), int(h), int(c), int(tw), int(th), int(shard[2]) // int(tw),
                             int(shard[1]) // int(th), int(size_t), int(size_z))
        return layout, np.dtype(meta["data_type"]), int(meta.get("fill_value") or 0)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ContainerError(where, f"array {path}: unsupported or malformed zarr.json ({exc})") from exc


def paint_region(out: np.ndarray, x: int, y: int, width: int, height: int, tile_width: int,
                 tile_height: int, tile: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """Copy the part of a tiled image that overlaps ``out`` (placed at ``(x, y)``) into ``out``.

    ``tile(col, row)`` returns a decoded full-size tile; only tiles overlapping the window are fetched,
    each once. Pixels of ``out`` outside the image are left untouched.
    """
    h, w = out.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x0 >= x1 or y0 >= y1:
        return out
    th, tw = tile_height, tile_width
    for row in range(y0 // th, (y1 - 1) // th + 1):
        ty = row * th
        sy0, sy1 = max(y0, ty), min(y1, ty + th)
        for col in range(x0 // tw, (x1 - 1) // tw + 1):
            tx = col * tw
            sx0, sx1 = max(x0, tx), min(x1, tx + tw)
            t = tile(col, row)
            if t.ndim == 2:
                t = t[:, :, None]
            out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = t[sy0 - ty:sy1 - ty, sx0 - tx:sx1 - tx]
    return out


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    key = (os.getpid(), threads)  # a pool inherited through fork has no threads: make a new one
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="csp-decode")
    return pool


class ContainerReader:
    """Low-level random access to a CSP container's tiles.

    Parameters
    ----------
    path
        Container path (zip file or directory).
    require_complete
        Refuse containers without a completion record (default). Verification tools pass ``False``.
    """

    def __init__(self, path: str | os.PathLike[str], *, require_complete: bool = True,
                 tile_cache: TileCache | None = None) -> None:
        self.path = os.fspath(path)
        self.tile_cache = tile_cache
        self.store: StoreReader = open_reader(self.path)
        try:
            self._load(require_complete)
        except BaseException:
            self.store.close()
            raise
        self._indexes: dict[str, np.ndarray | None] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ metadata
    def _json(self, key: str) -> Any:
        raw = self.store.read(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ContainerError(self.path, f"{key} is not valid JSON ({exc})") from exc

    def _load(self, require_complete: bool) -> None:
        root = self._json(spec.ROOT_META_KEY)
        if root is None:
            raise ContainerError(self.path, "not a Zarr v3 container (no zarr.json)")
        block = (root.get("attributes") or {}).get("csp")
        if not isinstance(block, dict) or block.get("format") != "csp":
            raise ContainerError(self.path, "Zarr group without a 'csp' metadata block: not a CSP container")
        try:
            major, _ = spec.parse_version(str(block.get("version")))
        except ValueError as exc:
            raise ContainerError(self.path, f"bad format version {block.get('version')!r}") from exc
        if major != spec.SUPPORTED_MAJOR:
            raise ContainerError(self.path, f"format version {block['version']} not supported "
                                            f"(this CSP reads {spec.SUPPORTED_MAJOR}.x)")
        self.completion = self._json(spec.COMPLETION_KEY)
        if self.completion is None and require_complete:
            raise IncompleteContainerError(self.path, "no completion record: the conversion did not finish")
        self.attributes: dict[str, Any] = root["attributes"]
        self.meta: dict[str, Any] = block
        self.levels: list[StoredArray] = [self._array(lv["path"], lv["encoding"]) for lv in block["levels"]]
        self.associated: dict[str, StoredArray] = {
            name: self._array(a["path"], a["encoding"]) for name, a in block.get("associated", {}).items()}
        tissue = block.get("tissue")
        self.tissue: StoredArray | None = None if tissue is None else self._array(
            tissue["path"], tissue["encoding"])

    def _array(self, path: str, enc: Mapping[str, Any]) -> StoredArray:
        meta = self._json(spec.array_meta_key(path))
        if meta is None:
            raise ContainerError(self.path, f"array {path} is missing")
        layout, dtype, fill = _layout_from_meta(path, meta, self.path)
        encoding = TileEncoding(enc["codec"], spec.decode_config(enc.get("config", {})))
        return StoredArray(path, layout, dtype, encoding, fill, get_tile_codec(encoding))

    # ------------------------------------------------------------------ tiles
    def _index(self, arr: StoredArray, key: str) -> np.ndarray | None:
        """The (cached) inner-chunk index of shard ``key`` of ``arr``; ``None`` if the shard is absent."""
        try:
            return self._indexes[key]
        except KeyError:
            pass
        lay = arr.layout
        size = self.store.size(key)
        index: np.ndarray | None = None
        if size is not None:
            n = lay.index_bytes
            if size < n:
                raise ContainerError(self.path, f"shard {key} is shorter than its index")
            raw = self.store.read_range(key, size - n, n)
            body, crc = raw[:-4], raw[-4:]
            if google_crc32c.value(body).to_bytes(4, "little") != crc:
                raise ContainerError(self.path, f"shard {key}: index checksum mismatch")
            index = np.frombuffer(body, dtype="<u8").reshape(lay.shard_tiles_y, lay.shard_tiles_x, 2)
            data_end = size - n
            valid = index[..., 0] != spec.MISSING
            if np.any(index[..., 0][valid] + index[..., 1][valid] > data_end):
                raise ContainerError(self.path, f"shard {key}: index points past the shard data")
        with self._lock:
            self._indexes[key] = index
        return index

    def tile_bytes(self, arr: StoredArray, col: int, row: int, *, t: int = 0, z: int = 0) -> bytes | None:
        """Stored bytes of tile (col, row) of ``arr`` (``None`` if the tile is absent).

        ``t`` and ``z`` select the plane of a 5-D (format 1.1) array; 3-D arrays only have (0, 0).
        """
        lay = arr.layout
        if not (0 <= col < lay.tiles_across and 0 <= row < lay.tiles_down):
            raise IndexError(f"tile ({col}, {row}) outside the {lay.tiles_across}x{lay.tiles_down} grid")
        plane = lay.plane_key(t, z)
        sr, sc = divmod(row, lay.shard_tiles_y)
        cc, ci = divmod(col, lay.shard_tiles_x)
        key = spec.shard_key(arr.path, sr, cc, plane)  # formatted once per read (hot path)
        index = self._index(arr, key)
        if index is None:
            return None
        off, n = index[sc, ci]
        if off == spec.MISSING:
            return None
        return self.store.read_range(key, int(off), int(n))

    def decode_tile(self, arr: StoredArray, col: int, row: int, out: np.ndarray | None = None, *,
                    t: int = 0, z: int = 0) -> np.ndarray:
        """Decoded tile ``(tile_h, tile_w, C)`` of plane ``(t, z)``; absent tiles hold the fill value.

        With a tile cache, a cached tile is returned as a read-only array when ``out`` is ``None``.
        """
        cache = self.tile_cache
        if cache is not None:
            key = (self.path, arr.path, col, row) if not (t or z) else (self.path, arr.path, col, row, t, z)
            hit = cache.get(key)
            if hit is not None:
                if out is None:
                    return hit
                out[...] = hit
                return out
        data = self.tile_bytes(arr, col, row, t=t, z=z)
        if data is None:
            if out is None:
                out = np.empty(arr.tile_shape, arr.dtype)
            out[...] = arr.fill_value
        else:
            try:
                out = arr.codec.decode(data, arr.tile_shape, arr.dtype, out=out)
            except CodecError as exc:
                raise CodecError(self.path, f"array {arr.path} tile ({col}, {row}): {exc.detail}") from exc
        if cache is not None:
            cache.put(key, out)
        return out

    def read_tiles(self, arr: StoredArray, coords: Sequence[tuple[int, int]], out: np.ndarray | None = None,
                   *, threads: int = 0, t: int = 0, z: int = 0) -> np.ndarray:
        """Decode many tiles of plane ``(t, z)`` in one call into ``out`` of shape ``(N, tile_h, tile_w, C)``.

        ``threads > 1`` decodes in a thread pool (the decoders release the GIL).
        """
        n = len(coords)
        if out is None:
            out = np.empty((n, *arr.tile_shape), arr.dtype)
        if threads > 1 and n > 1:
            pool = _thread_pool(threads)
            list(pool.map(lambda i: self.decode_tile(arr, *coords[i], out=out[i], t=t, z=z), range(n)))
        else:
            for i, (col, row) in enumerate(coords):
                self.decode_tile(arr, col, row, out=out[i], t=t, z=z)
        return out

    def read_region(self, arr: StoredArray, x: int, y: int, w: int, h: int,
                    out: np.ndarray | None = None, *, t: int = 0, z: int = 0) -> np.ndarray:
        """Pixels ``[y:y+h, x:x+w]`` of plane ``(t, z)`` of ``arr`` as ``(h, w, C)``; outside -> fill value."""
        lay = arr.layout
        lay.plane_key(t, z)  # validate the plane even when the window misses the image
        if out is None:
            out = np.empty((h, w, lay.channels), arr.dtype)
        out[...] = arr.fill_value
        scratch = np.empty(arr.tile_shape, arr.dtype)
        return paint_region(out, x, y, lay.width, lay.height, lay.tile_width, lay.tile_height,
                            lambda col, row: self.decode_tile(arr, col, row, out=scratch, t=t, z=z))

    def read_array(self, arr: StoredArray, *, t: int = 0, z: int = 0) -> np.ndarray:
        """The whole array (plane ``(t, z)``) as ``(H, W, C)`` (for small arrays such as associated images)."""
        return self.read_region(arr, 0, 0, arr.layout.width, arr.layout.height, t=t, z=z)

    def tissue_mask(self) -> tuple[np.ndarray, tuple[float, float]] | None:
        """The stored tissue mask ``(H, W)`` uint8 and its downsample ``(x, y)`` from level 0, if any."""
        if self.tissue is None:
            return None
        ds = self.meta["tissue"]["downsample"]
        return self.read_array(self.tissue)[:, :, 0], (float(ds[0]), float(ds[1]))

    def iter_tiles(self, arr: StoredArray) -> Iterator[tuple[int, int]]:
        """All tile coordinates ``(col, row)`` in storage order."""
        lay = arr.layout
        for row in range(lay.tiles_down):
            for col in range(lay.tiles_across):
                yield col, row

    def close(self) -> None:
        """Release the store's descriptors."""
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
        getattr(self, "_indexes", {}).clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
