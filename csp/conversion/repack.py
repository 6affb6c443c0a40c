"""Storage tiers: the ``archive`` conversion profile and ``csp repack`` between tiers.

``passthrough`` keeps the source's tile bytes; ``archive`` stores JPEG levels repacked losslessly with
JPEG XL (codec ``jpeg_jxl``, :mod:`csp.codecs.jpeg_archive`), from which the exact source JPEG bytes are
rebuilt on read. Levels stored otherwise (JPEG 2000, deflate, pixel-lossless, built levels) are the same
in both tiers. :func:`repack` moves a finished container between tiers without decoding a pixel: it
rewrites the JPEG levels' shards and metadata into a staged copy, verifies the copy, and publishes it
atomically (replacing the original in place only after success).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import numpy as np

from csp.codecs import get_tile_codec
from csp.codecs.jpeg_archive import JpegJxlTileCodec, archive_encoding, tile_kind
from csp.container import spec
from csp.container.reader import ContainerReader, StoredArray
from csp.container.stores import open_writer
from csp.conversion.plan import LevelPlan
from csp.errors import ContainerError, VerificationError
from csp.readers.base import SlideReader, TileEncoding

__all__ = ["PROFILES", "RepackResult", "archive_stats", "profile_plans", "repack"]

#: Storage tiers a container can be written in.
PROFILES = ("passthrough", "archive")
#: Source tiles sampled per level to find the JPEG XL header the level's tiles share.
PREFIX_SAMPLES = 8


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown storage profile {profile!r} (expected one of {', '.join(PROFILES)})")


def _sample_positions(cols: int, rows: int, n: int = PREFIX_SAMPLES) -> list[tuple[int, int]]:
    """Up to ``n`` tile positions spread evenly over a ``cols`` x ``rows`` grid."""
    total = cols * rows
    picks = sorted({int(k) for k in np.linspace(0, total - 1, num=min(n, total))})
    return [(k % cols, k // cols) for k in picks]


_POOLS: dict[int, ThreadPoolExecutor] = {}


def pack_tiles(fn: Callable[[bytes], bytes], tiles: Sequence[bytes | None]) -> list[bytes | None]:
    """``fn`` applied to every present tile, on all cores (libjxl releases the GIL); ``None`` stays ``None``."""
    todo = [i for i, t in enumerate(tiles) if t]
    out: list[bytes | None] = list(tiles)
    if len(todo) < 2 or (os.cpu_count() or 1) < 2:
        for i in todo:
            out[i] = fn(tiles[i])  # type: ignore[arg-type]
        return out
    pool = _POOLS.get(os.getpid())  # a pool inherited through fork has no threads: make a new one
    if pool is None:
        pool = _POOLS[os.getpid()] = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="csp-pack")
    for i, data in zip(todo, pool.map(fn, [tiles[i] for i in todo]), strict=True):
        out[i] = data
    return out


def profile_plans(reader: SlideReader, plans: Sequence[LevelPlan], profile: str, *,
                  effort: int | None = None) -> list[LevelPlan]:
    """``plans`` adjusted for a storage ``profile``: with ``"archive"`` JPEG passthrough levels get ``jpeg_jxl``.

    ``effort``: libjxl effort of the recompression (``None``: the archive default, see
    :func:`~csp.codecs.jpeg_archive.archive_encoding`).

    Raises
    ------
    ValueError
        Unknown profile.
    """
    _check_profile(profile)
    out = list(plans)
    if profile == "passthrough":
        return out
    for i, p in enumerate(out):
        if p.mode != "passthrough" or p.encoding.codec != "jpeg" or p.size_t > 1 or p.size_z > 1:
            continue
        assert p.source_level is not None
        cols, rows = -(-p.width // p.tile_width), -(-p.height // p.tile_height)
        samples = [reader.read_tile_encoded(p.source_level, c, r) for c, r in _sample_positions(cols, rows)]
        enc = archive_encoding(p.encoding, samples, effort=effort, tiles=cols * rows)
        out[i] = dataclasses.replace(p, encoding=enc)
    return out


@dataclass
class RepackResult:
    """Summary of one :func:`repack`."""

    source: str
    output: str
    to: str
    levels: list[dict[str, Any]] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0

    @property
    def plain_tiles(self) -> int:
        """Tiles of archived levels kept as plain JPEG (refused or not byte-exact after recompression)."""
        return sum(lv.get("plain_tiles", 0) for lv in self.levels)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {**self.__dict__, "plain_tiles": self.plain_tiles}


def _new_encoding(cr: ContainerReader, arr: StoredArray, to: str, effort: int | None
                  ) -> tuple[TileEncoding, Callable[[bytes], bytes]] | None:
    """Target encoding and per-tile byte transform of one level, or ``None`` to copy it unchanged."""
    if arr.layout.is_5d:
        return None
    if to == "archive" and arr.encoding.codec == "jpeg":
        lay = arr.layout
        samples = [cr.tile_bytes(arr, c, r) for c, r in _sample_positions(lay.tiles_across, lay.tiles_down)]
        enc = archive_encoding(arr.encoding, samples, effort=effort, tiles=lay.tiles_across * lay.tiles_down)
        codec = get_tile_codec(enc)
        return enc, codec.pack  # type: ignore[attr-defined]
    if to == "passthrough" and isinstance(arr.codec, JpegJxlTileCodec):
        return arr.codec.jpeg_encoding(), arr.codec.restore
    return None


def _rebuild_shard(blob: bytes, lay: spec.LevelLayout, fn: Callable[[bytes], bytes], key: str, where: str,
                   kinds: dict[str, int], archive: bool) -> bytes:
    """A shard with every present tile replaced by ``fn(tile)``, laid out as the container writer does."""
    n = lay.index_bytes
    if len(blob) < n:
        raise ContainerError(where, f"shard {key} is shorter than its index")
    body, crc = blob[-n:-4], blob[-4:]
    if google_crc32c.value(body).to_bytes(4, "little") != crc:
        raise ContainerError(where, f"shard {key}: index checksum mismatch")
    index = np.frombuffer(body, dtype="<u8").reshape(-1, 2)
    new_index = np.full(index.shape, spec.MISSING, dtype="<u8")
    parts: list[bytes] = []
    offset = 0
    data_end = len(blob) - n
    present = [k for k in range(len(index)) if index[k, 0] != spec.MISSING]
    if any(int(index[k, 0]) + int(index[k, 1]) > data_end for k in present):
        raise ContainerError(where, f"shard {key}: index points past the shard data")
    new_tiles = pack_tiles(fn, [blob[int(index[k, 0]):int(index[k, 0]) + int(index[k, 1])] for k in present])
    for k, data in zip(present, new_tiles, strict=True):
        assert data is not None
        kinds[tile_kind(data) if archive else "jpeg"] += 1
        new_index[k] = (offset, len(data))
        parts.append(data)
        offset += len(data)
    index_bytes = new_index.tobytes()
    return b"".join(parts) + index_bytes + google_crc32c.value(index_bytes).to_bytes(4, "little")


def repack(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, to: str = "archive",
           overwrite: bool = False, verify: bool = True, effort: int | None = None,
           progress: Callable[[str, int, int], None] | None = None) -> RepackResult:
    """Move a container between storage tiers without touching pixels.

    Parameters
    ----------
    path
        A complete CSP container.
    out
        Destination; ``None`` (or ``path`` itself) replaces the container in place, after success only.
    to
        ``"archive"`` (JPEG levels -> ``jpeg_jxl``) or ``"passthrough"`` (``jpeg_jxl`` -> the source JPEG).
    overwrite
        Replace an existing ``out`` (other than ``path``).
    verify
        Decode every tile of the staged copy before publishing it.
    effort
        libjxl effort when archiving (``None``: 9 where libjxl's encoder is reachable, else 7; see
        :func:`~csp.codecs.jpeg_archive.archive_encoding`). Lower is faster and a little larger.

    Returns
    -------
    RepackResult
        Per-level tile counts and sizes.

    Raises
    ------
    CspError
        Unreadable or incomplete container, a damaged tile, or a failed verification; nothing is published.
    """
    _check_profile(to)
    src = os.fspath(path)
    dst = src if out is None else os.fspath(out)
    in_place = os.path.abspath(dst) == os.path.abspath(src)
    t0 = time.perf_counter()
    result = RepackResult(src, dst, to)
    with ContainerReader(src) as cr:
        plans: dict[str, tuple[StoredArray, TileEncoding, Callable[[bytes], bytes]]] = {}
        for arr in cr.levels:
            got = _new_encoding(cr, arr, to, effort)
            if got is not None:
                plans[arr.path] = (arr, *got)
        layout = ("dir" if os.path.isdir(src) else "zip") if in_place else None
        store = open_writer(dst, layout=layout, overwrite=overwrite or in_place)
        try:
            completion = dict(cr.completion or {})
            arrays_rec = {p: dict(v) for p, v in completion.get("arrays", {}).items()}
            kinds: dict[str, dict[str, int]] = {p: {"jxl": 0, "plain": 0, "jpeg": 0, "empty": 0} for p in plans}
            level_bytes: dict[str, int] = {}
            digests = {k: d for rec in arrays_rec.values() for k, d in rec.get("shards", {}).items()}
            keys = [k for k in cr.store.keys() if k != spec.COMPLETION_KEY]  # noqa: SIM118 - not a dict
            for done, key in enumerate(keys):
                data = cr.store.read(key)
                assert data is not None
                if key in digests and hashlib.sha256(data).hexdigest() != digests[key]:
                    raise ContainerError(src, f"shard {key} does not match its recorded sha256 (altered after "
                                              "conversion): refusing to repack a damaged container")
                result.bytes_before += len(data)
                level = key.split("/", 1)[0]
                if level in plans and key.startswith(f"{level}/c/"):
                    arr, _enc, fn = plans[level]
                    data = _rebuild_shard(data, arr.layout, fn, key, src, kinds[level], to == "archive")
                    level_bytes[level] = level_bytes.get(level, 0) + len(data)
                    rec = arrays_rec.setdefault(level, {})
                    rec.setdefault("shards", {})[key] = hashlib.sha256(data).hexdigest()
                elif level in plans and key == spec.array_meta_key(level):
                    data = _level_meta(data, plans[level][1], src)
                elif key == spec.ROOT_META_KEY:
                    data = _root_meta(data, {p: e for p, (_a, e, _f) in plans.items()}, src)
                store.put(key, data)
                result.bytes_after += len(data)
                if progress:
                    progress("repack", done + 1, len(keys))
            for p, nbytes in level_bytes.items():
                arrays_rec[p]["bytes"] = nbytes
            store.seal()
            if verify:
                from csp.container.verify import verify_container

                report = verify_container(store.staging, require_complete=False, raise_on_error=False)
                if not report.ok:
                    raise VerificationError(dst, "repacked copy failed verification: "
                                                 + "; ".join(report.problems[:10]))
            completion["arrays"] = arrays_rec
            completion["repacked"] = {"to": to, "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                                      "verified": verify}
            record = json.dumps(completion, indent=1).encode()
            result.bytes_after += len(record) - len(cr.store.read(spec.COMPLETION_KEY) or b"")
            store.commit({spec.COMPLETION_KEY: record})
        except BaseException:
            store.abort()
            raise
    for p, (arr, enc, _fn) in plans.items():
        k = kinds[p]
        result.levels.append({"path": p, "from": arr.encoding.codec, "to": enc.codec,
                              "tiles": k["jxl"] + k["plain"] + k["jpeg"], "jxl_tiles": k["jxl"],
                              "plain_tiles": k["plain"], "bytes": level_bytes.get(p, 0)})
    result.seconds = time.perf_counter() - t0
    return result


def _level_meta(raw: bytes, enc: TileEncoding, where: str) -> bytes:
    meta = json.loads(raw)
    try:
        inner = meta["codecs"][0]["configuration"]["codecs"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ContainerError(where, f"malformed array metadata ({exc})") from exc
    meta["codecs"][0]["configuration"]["codecs"] = [inner[0], *get_tile_codec(enc).zarr_codecs_json()]
    return json.dumps(meta, indent=1, sort_keys=False).encode("utf-8")


def _root_meta(raw: bytes, encodings: dict[str, TileEncoding], where: str) -> bytes:
    meta = json.loads(raw)
    try:
        levels = meta["attributes"]["csp"]["levels"]
    except (KeyError, TypeError) as exc:
        raise ContainerError(where, f"malformed root metadata ({exc})") from exc
    for lv in levels:
        enc = encodings.get(lv["path"])
        if enc is not None:
            lv["encoding"] = {"codec": enc.codec, "config": spec.encode_config(enc.config)}
    return json.dumps(meta, indent=1, sort_keys=False).encode("utf-8")


def archive_stats(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Per archived level of a container: tiles stored as JPEG XL, tiles kept plain, and their bytes."""
    out: dict[str, dict[str, int]] = {}
    with ContainerReader(path) as cr:
        for arr in cr.levels:
            if not isinstance(arr.codec, JpegJxlTileCodec):
                continue
            st = {"jxl": 0, "plain": 0, "bytes": 0}
            for col, row in cr.iter_tiles(arr):
                data = cr.tile_bytes(arr, col, row)
                if data is None:
                    continue
                st[tile_kind(data)] += 1
                st["bytes"] += len(data)
            out[arr.path] = st
    return out
