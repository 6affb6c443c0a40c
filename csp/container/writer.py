"""Streaming container writer: shards assembled tile-row by tile-row, metadata and completion last.

The writer never decodes or re-encodes passthrough tiles: it stores the bytes it is given. Each shard
is ``concat(tile bytes) + index + crc32c(index)`` exactly as the Zarr v3 ``sharding_indexed`` codec
lays it out (index at the end), so zarr-python reads the container without CSP's fast path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import numpy as np

from csp.container import spec
from csp.container.spec import LevelLayout
from csp.container.stores import StoreWriter


@dataclass
class ArrayRecord:
    """What was written for one array: its path, layout, and per-shard digests."""

    path: str
    layout: LevelLayout
    dtype: str
    codecs: list[dict[str, Any]]
    fill_value: int
    tiles_written: int = 0
    tiles_missing: int = 0
    bytes_written: int = 0
    shard_sha256: dict[str, str] = field(default_factory=dict)


class ShardedArrayWriter:
    """Accepts the tiles of one array row by row and writes full shards as soon as they are complete.

    Memory held: the encoded tiles of at most one row of shards. A 5-D array (format 1.1) is written
    one ``(t, z)`` plane at a time, one writer per plane (see :meth:`ContainerWriter.plane`).
    """

    def __init__(self, store: StoreWriter, record: ArrayRecord, plane: tuple[int, int] = (0, 0)) -> None:
        self.store = store
        self.record = record
        lay = record.layout
        self._plane = lay.plane_key(*plane)
        self._pending: dict[int, list[list[bytes | None]]] = {}
        self._next_row = 0
        self._rows: list[list[bytes | None]] = []
        self._lay = lay

    def add_row(self, row: int, tiles: Sequence[bytes | None]) -> None:
        """Add tile row ``row`` (rows must arrive in order); ``None`` marks an absent tile."""
        lay = self._lay
        if row != self._next_row:
            raise ValueError(f"tile rows must be written in order: got {row}, expected {self._next_row}")
        if len(tiles) != lay.tiles_across:
            raise ValueError(f"row {row} has {len(tiles)} tiles, expected {lay.tiles_across}")
        self._rows.append(list(tiles))
        self._next_row += 1
        if len(self._rows) == lay.shard_tiles_y or self._next_row == lay.tiles_down:
            self._flush_shard_row((row) // lay.shard_tiles_y)

    def _flush_shard_row(self, shard_row: int) -> None:
        lay = self._lay
        sy, sx_tiles = lay.shard_tiles_y, lay.shard_tiles_x
        for shard_col in range(lay.shards_across):
            index = np.full((sy, sx_tiles, 2), spec.MISSING, dtype="<u8")
            parts: list[bytes] = []
            offset = 0
            for r, tile_row in enumerate(self._rows):
                for c in range(sx_tiles):
                    col = shard_col * sx_tiles + c
                    if col >= lay.tiles_across:
                        continue
                    data = tile_row[col]
                    if data is None:
                        self.record.tiles_missing += 1
                        continue
                    index[r, c] = (offset, len(data))
                    parts.append(bytes(data))
                    offset += len(data)
                    self.record.tiles_written += 1
            if not parts:
                continue  # an all-empty shard is simply absent (Zarr fill value)
            index_bytes = index.tobytes()
            crc = google_crc32c.value(index_bytes).to_bytes(4, "little")
            blob = b"".join(parts) + index_bytes + crc
            key = spec.shard_key(self.record.path, shard_row, shard_col, self._plane)
            self.store.put(key, blob)
            self.record.bytes_written += len(blob)
            self.record.shard_sha256[key] = hashlib.sha256(blob).hexdigest()
        self._rows = []

    def finish(self) -> ArrayRecord:
        """Check every row arrived and return the record."""
        if self._next_row != self._lay.tiles_down:
            raise ValueError(f"array {self.record.path}: {self._next_row} of {self._lay.tiles_down} rows written")
        return self.record


class ContainerWriter:
    """Writes one container: arrays, then group metadata, then (after verification) the completion record."""

    def __init__(self, store: StoreWriter) -> None:
        self.store = store
        self.arrays: dict[str, ArrayRecord] = {}
        self._meta_written = False

    def array(
        self, path: str, layout: LevelLayout, dtype: str, codecs: list[dict[str, Any]], fill_value: int = 0,
    ) -> ShardedArrayWriter:
        """Start writing array ``path`` (its ``zarr.json`` is written by :meth:`write_metadata`)."""
        rec = ArrayRecord(path, layout, dtype, codecs, fill_value)
        self.arrays[path] = rec
        return ShardedArrayWriter(self.store, rec)

    def plane(self, path: str, t: int, z: int) -> ShardedArrayWriter:
        """Writer of plane ``(t, z)`` of the 5-D array ``path`` already started with :meth:`array`."""
        return ShardedArrayWriter(self.store, self.arrays[path], (t, z))

    def write_metadata(self, root_attributes: Mapping[str, Any],
                       group_paths: Sequence[str] = (spec.ASSOCIATED_GROUP,)) -> None:
        """Write every array's and group's ``zarr.json`` (root last)."""
        for rec in self.arrays.values():
            meta = spec.array_metadata(rec.layout, rec.dtype, rec.codecs, fill_value=rec.fill_value)
            self.store.put(spec.array_meta_key(rec.path), _dumps(meta))
        for g in group_paths:
            if any(p.startswith(g + "/") for p in self.arrays):
                self.store.put(f"{g}/{spec.ROOT_META_KEY}", _dumps(spec.group_metadata({})))
        self.store.put(spec.ROOT_META_KEY, _dumps(spec.group_metadata(root_attributes)))
        self._meta_written = True

    def completion_record(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        """The completion document: format version, shard digests and per-array counts."""
        return {
            "format": "csp",
            "format_version": spec.FORMAT_VERSION,
            **extra,
            "arrays": {
                p: {"tiles": r.tiles_written, "missing_tiles": r.tiles_missing, "bytes": r.bytes_written,
                    "shards": r.shard_sha256}
                for p, r in self.arrays.items()
            },
        }


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=False).encode("utf-8")
