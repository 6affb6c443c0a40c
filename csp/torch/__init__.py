"""PyTorch adapter (optional extra ``csp[torch]``; torch is imported only when a dataset is used).

- :class:`TileIndex` — patches chosen up front (grid, tile-aligned or random; per level or target MPP;
  filtered by the stored tissue mask; labels from a dict or CSV; seeded).
- :class:`CspDataset` (map-style) and :class:`CspIterableDataset` (distributed sharding, per-epoch
  reshuffle) returning uint8 CHW tensors (or NumPy) with their coordinates.
- :func:`collate` — ``collate_fn`` that takes batches :class:`CspDataset` decodes in one call
  (``__getitems__``) without re-stacking them.
"""

from typing import Any

from csp.torch.index import TileIndex, load_labels


def __getattr__(name: str) -> Any:
    if name in ("CspDataset", "CspIterableDataset", "PatchBatch", "collate"):
        try:
            from csp.torch import dataset
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("csp.torch datasets need PyTorch: pip install 'csp[torch]'") from exc
        return getattr(dataset, name)
    raise AttributeError(f"module 'csp.torch' has no attribute {name!r}")


__all__ = ["CspDataset", "CspIterableDataset", "PatchBatch", "TileIndex", "collate", "load_labels"]
