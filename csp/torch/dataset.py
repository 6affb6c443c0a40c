"""PyTorch datasets over a :class:`~csp.torch.index.TileIndex` (this module imports torch).

Datasets hold only the index (plain NumPy) and options, so they pickle cheaply into DataLoader workers
under fork and spawn; each worker opens containers on first use through its own bounded handle pool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info

from csp.container.cache import HandlePool, TileCache, default_pool
from csp.torch.index import TileIndex

_COORD_KEYS = ("label", "slide", "level", "x", "y")


class PatchBatch(Sequence):
    """A batch read in one call by :meth:`CspDataset.__getitems__`, already collated.

    It is also a sequence of per-sample dicts (views into the batch), so PyTorch's ``default_collate``
    still works; :func:`collate` returns :attr:`collated` directly and saves a copy of every image.
    """

    def __init__(self, collated: dict[str, torch.Tensor]) -> None:
        self.collated = collated

    def __len__(self) -> int:
        return int(self.collated["image"].shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return {k: (v[i] if k == "image" else int(v[i])) for k, v in self.collated.items()}


def collate(batch: Any) -> Any:
    """``collate_fn`` for DataLoaders over CSP datasets: batches read by ``__getitems__`` pass through
    unchanged, anything else goes to :func:`torch.utils.data.default_collate`."""
    if isinstance(batch, PatchBatch):
        return batch.collated
    return default_collate(batch)


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 tensor; in a DataLoader worker it lives in shared memory so sending it costs no copy."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    n = int(np.prod(shape))
    try:
        storage = torch.UntypedStorage._new_shared(n)  # what default_collate does in workers
        return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)
    except (AttributeError, RuntimeError):  # pragma: no cover - older/newer torch
        return torch.empty(shape, dtype=torch.uint8).share_memory_()


class _Reader:
    """Shared sample reading for both dataset flavours."""

    def __init__(self, index: TileIndex, transform: Callable[[Any], Any] | None, output: str,
                 max_open: int | None, tile_cache_mb: float) -> None:
        if output not in ("torch", "numpy"):
            raise ValueError("output must be 'torch' or 'numpy'")
        self.index = index
        self.transform = transform
        self.output = output
        self.max_open = max_open
        self.tile_cache_mb = tile_cache_mb
        self._pool: HandlePool | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"] = None  # never ship open handles to another process
        return state

    def _get_pool(self) -> HandlePool:
        if self._pool is None:
            if self.max_open is None and self.tile_cache_mb <= 0:
                self._pool = default_pool()
            else:
                cache = TileCache(int(self.tile_cache_mb * 2**20)) if self.tile_cache_mb > 0 else None
                self._pool = HandlePool(self.max_open or 128, cache)
        return self._pool

    def read(self, i: int) -> dict[str, Any]:
        e = self.index.entries[i]
        pw, ph = self.index.patch_size
        cr = self._get_pool().get(self.index.slides[int(e["slide"])])
        arr = cr.read_region(cr.levels[int(e["level"])], int(e["x"]), int(e["y"]), pw, ph)
        image: Any = np.ascontiguousarray(arr.transpose(2, 0, 1))  # CHW
        if self.output == "torch":
            image = torch.from_numpy(image)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": int(e["label"]), "slide": int(e["slide"]), "level": int(e["level"]),
                "x": int(e["x"]), "y": int(e["y"])}

    def read_batch(self, indices: Sequence[int]) -> PatchBatch:
        """Read many patches in one call into one ``(N, C, H, W)`` uint8 tensor (no transform).

        A patch inside one stored tile costs one decode and one HWC->CHW copy straight into the batch;
        other windows go through ``read_region`` first. Equals stacking :meth:`read` samples (tested).
        """
        ent = self.index.entries[np.asarray(indices, dtype=np.int64)]
        pw, ph = self.index.patch_size
        pool = self._get_pool()
        first = pool.get(self.index.slides[int(ent["slide"][0])]) if len(ent) else None
        channels = first.levels[int(ent["level"][0])].layout.channels if first is not None else 3
        images = _batch_tensor((len(ent), channels, ph, pw))
        dst = images.numpy()
        window: np.ndarray | None = None
        scratch: np.ndarray | None = None
        for i, e in enumerate(ent):
            cr = pool.get(self.index.slides[int(e["slide"])])
            arr = cr.levels[int(e["level"])]
            lay = arr.layout
            x, y = int(e["x"]), int(e["y"])
            col, ox = divmod(x, lay.tile_width)
            row, oy = divmod(y, lay.tile_height)
            if (x >= 0 and y >= 0 and ox + pw <= lay.tile_width and oy + ph <= lay.tile_height
                    and x + pw <= lay.width and y + ph <= lay.height):
                if scratch is None or scratch.shape != arr.tile_shape or scratch.dtype != arr.dtype:
                    scratch = np.empty(arr.tile_shape, arr.dtype)
                src = cr.decode_tile(arr, col, row, out=scratch)[oy:oy + ph, ox:ox + pw]
            else:
                if window is None or window.shape[2] != lay.channels or window.dtype != arr.dtype:
                    window = np.empty((ph, pw, lay.channels), arr.dtype)
                src = cr.read_region(arr, x, y, pw, ph, out=window)
            dst[i] = src.transpose(2, 0, 1)
        out: dict[str, torch.Tensor] = {"image": images}
        for k in _COORD_KEYS:
            out[k] = torch.from_numpy(ent[k].astype(np.int64))
        return PatchBatch(out)


class CspDataset(_Reader, Dataset):
    """Map-style dataset: ``ds[i]`` -> ``{"image": uint8 CHW tensor, "label", "slide", "level", "x", "y"}``.

    Parameters
    ----------
    index
        The patches to serve.
    transform
        Called on the CHW image (tensor or array) before it is returned.
    output
        ``"torch"`` (default) or ``"numpy"``.
    max_open, tile_cache_mb
        Per-worker handle pool size and decoded-tile cache budget (default: the process pool).
    """

    def __init__(self, index: TileIndex, transform: Callable[[Any], Any] | None = None, output: str = "torch",
                 max_open: int | None = None, tile_cache_mb: float = 0.0) -> None:
        super().__init__(index, transform, output, max_open, tile_cache_mb)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.read(int(i))

    def __getitems__(self, indices: Sequence[int]) -> Sequence[dict[str, Any]]:
        """Batched read used by ``DataLoader`` (PyTorch >= 2.0) when ``batch_size`` is set.

        Without a transform and with tensor output the batch is decoded straight into one tensor
        (:class:`PatchBatch`; pass ``collate_fn=csp.torch.collate`` to skip re-stacking it).
        """
        if self.transform is not None or self.output != "torch" or not len(indices):
            return [self.read(int(i)) for i in indices]
        return self.read_batch(indices)


class CspIterableDataset(_Reader, IterableDataset):
    """Iterable dataset: shuffled per epoch, sharded by distributed rank and by DataLoader worker.

    Each (rank, worker) pair reads a disjoint slice of one permutation of the index (seed + epoch), so
    ``world_size`` ranks with any number of workers together read every patch exactly once per epoch.
    Call :meth:`set_epoch` between epochs to reshuffle.
    """

    def __init__(self, index: TileIndex, *, shuffle: bool = True, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, transform: Callable[[Any], Any] | None = None,
                 output: str = "torch", max_open: int | None = None, tile_cache_mb: float = 0.0) -> None:
        super().__init__(index, transform, output, max_open, tile_cache_mb)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        if rank is None or world_size is None:
            rank, world_size = _dist_rank()
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of the next iteration."""
        self.epoch = int(epoch)

    def order(self, worker: int = 0, workers: int = 1) -> np.ndarray:
        """Index positions this (rank, worker) reads in the current epoch."""
        n = len(self.index)
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        return perm[self.rank::self.world_size][worker::workers]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for i in self.order(worker, workers):
            yield self.read(int(i))

    def __len__(self) -> int:
        return len(self.order())


def _dist_rank() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
