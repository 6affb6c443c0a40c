"""Per-process caches for the read path: open container handles and decoded tiles.

Both are bounded (handles by count, hence file descriptors; tiles by bytes) and thread-safe. Nothing
here survives pickling: a DataLoader worker builds its own caches on first use (fork and spawn alike).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from csp.container.reader import ContainerReader

DEFAULT_MAX_OPEN = 128


class TileCache:
    """LRU cache of decoded tiles with a byte budget.

    Parameters
    ----------
    max_bytes
        Total bytes of cached tile arrays; least recently used tiles are dropped beyond it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> np.ndarray | None:
        """Cached tile (read-only array) or ``None``."""
        with self._lock:
            tile = self._items.get(key)
            if tile is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return tile

    def put(self, key: Hashable, tile: np.ndarray) -> None:
        """Insert a tile (a private copy is kept, marked read-only)."""
        if tile.nbytes > self.max_bytes:
            return
        tile = tile.copy()
        tile.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._items[key] = tile
            self.bytes += tile.nbytes
            while self.bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= dropped.nbytes

    def clear(self) -> None:
        """Drop every tile."""
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


class HandlePool:
    """Open :class:`ContainerReader` handles keyed by path, at most ``max_open`` at a time (LRU).

    An evicted handle is dropped, not closed: its descriptors are released when the last reference to
    it goes (``ContainerReader.__del__``), so a thread still reading through it never sees its
    descriptor closed or reused under it. The pool belongs to one process: after a fork the child
    starts with an empty pool.
    """

    def __init__(self, max_open: int = DEFAULT_MAX_OPEN, tile_cache: TileCache | None = None) -> None:
        self.max_open = max(1, int(max_open))
        self.tile_cache = tile_cache
        self._open: OrderedDict[str, ContainerReader] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.opens = 0

    def get(self, path: str | os.PathLike[str]) -> ContainerReader:
        """The open reader for ``path`` (opened on first use)."""
        from csp.container.reader import ContainerReader

        key = os.fspath(path)
        with self._lock:
            self._check_pid()
            reader = self._open.get(key)
            if reader is not None:
                self._open.move_to_end(key)
                return reader
        reader = ContainerReader(key, tile_cache=self.tile_cache)
        with self._lock:
            existing = self._open.get(key)
            if existing is not None:
                reader.close()
                return existing
            self._open[key] = reader
            self.opens += 1
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)  # closed when its last user lets go
        return reader

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours to manage
            self._open = OrderedDict()
            self._pid = os.getpid()

    def close(self) -> None:
        """Close every handle."""
        with self._lock:
            for r in self._open.values():
                r.close()
            self._open.clear()

    def __len__(self) -> int:
        return len(self._open)


_POOL: HandlePool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> HandlePool:
    """The process-wide pool (``CSP_MAX_OPEN`` and ``CSP_TILE_CACHE_MB`` environment variables)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._pid != os.getpid():
            cache_mb = float(os.environ.get("CSP_TILE_CACHE_MB", "0"))
            _POOL = HandlePool(int(os.environ.get("CSP_MAX_OPEN", DEFAULT_MAX_OPEN)),
                               TileCache(int(cache_mb * 2**20)) if cache_mb > 0 else None)
        return _POOL
