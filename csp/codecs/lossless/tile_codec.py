"""The ``csp`` tile codec: CSP's own lossless predictive codec behind the :class:`TileCodec` interface.

Registered in :data:`csp.codecs.tile._CODECS` under id ``"csp"``; in Zarr metadata it is the
array->bytes codec ``csp.lossless`` (no configuration: every stream carries its own header).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from csp.codecs import lossless
from csp.codecs.tile import TileCodec, _place
from csp.errors import CodecError

__all__ = ["ZARR_NAME", "CspTileCodec"]

#: Name of the codec in Zarr v3 metadata (and of its ``zarr.codecs`` entry point).
ZARR_NAME = "csp.lossless"


@dataclass(frozen=True)
class CspTileCodec(TileCodec):
    """Lossless CSP predictive codec (``docs/codec.md``) for uint8/uint16 tiles with any channel count."""

    id: ClassVar[str] = "csp"

    def _decode_into(self, mv: memoryview, out: np.ndarray) -> None:
        held = lossless.decode_into(mv, out)  # the common case: one call, the header parsed once
        if held is None:
            return
        shape, dtype = held
        if dtype != out.dtype:
            raise CodecError(None, f"csp tile holds {dtype} samples, the array stores {out.dtype}")
        if shape[0] > out.shape[0] or shape[1] > out.shape[1] or shape[2] != out.shape[2]:
            raise CodecError(None, f"csp tile is {shape}, it does not fit the {out.shape} tile")
        _place(lossless.decode(mv), out, "csp tile")

    def _encode(self, tile: np.ndarray) -> bytes:
        return lossless.encode(tile)

    def zarr_codecs_json(self) -> list[dict[str, Any]]:
        """``[{"name": "csp.lossless", "configuration": {}}]``."""
        return [{"name": ZARR_NAME, "configuration": {}}]
