"""CSP lossless predictive pixel codec (codec id ``csp``, Zarr codec ``csp.lossless``).

Three implementations of one bitstream (``docs/codec.md``):

* C (``native/cspcodec.c``, built with cffi during ``pip install``) — used when the extension exists;
* Numba (:mod:`.numba_codec`) — used when the extension is missing (no compiler at install time);
* pure NumPy/Python reference (:mod:`.reference`) — defines the bitstream; slow, for tests.

:func:`encode` and :func:`decode` pick the fastest available implementation (``IMPLEMENTATION``).
All of them raise :class:`~csp.errors.CodecError` for invalid input and corrupt or truncated streams.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from csp.codecs.lossless import reference, reference_v2, reference_v3
from csp.codecs.lossless.reference import MAGIC, VERSION, parse_header

__all__ = ["DEFAULT_VERSION", "IMPLEMENTATION", "MAGIC", "VERSION", "decode", "decode_into", "encode", "implementations",
           "stream_info"]


def _load_fast() -> tuple[str, ModuleType]:
    try:
        from csp.codecs.lossless import c_codec

        return "c", c_codec
    except ImportError:
        pass
    try:
        from csp.codecs.lossless import numba_codec

        return "numba", numba_codec
    except ImportError:  # pragma: no cover - numba is a hard dependency
        return "reference", reference


#: ``"c"``, ``"numba"`` or ``"reference"``: the implementation behind :func:`encode` / :func:`decode`.
IMPLEMENTATION, _IMPL = _load_fast()


def implementations() -> dict[str, ModuleType]:
    """All importable implementations by name (``c`` only when the extension was built)."""
    out: dict[str, ModuleType] = {}
    try:
        from csp.codecs.lossless import c_codec

        out["c"] = c_codec
    except ImportError:
        pass
    from csp.codecs.lossless import numba_codec

    out["numba"] = numba_codec
    out["reference"] = reference
    return out


#: bitstream version written by :func:`encode` by default (every version is always decoded)
DEFAULT_VERSION = 3


def encode(tile: np.ndarray, version: int | None = None) -> bytes:
    """Encode a ``(H, W, C)`` or ``(H, W)`` uint8/uint16 tile losslessly in bitstream ``version``
    (1, 2 or 3; :data:`DEFAULT_VERSION` when None).

    Raises
    ------
    CodecError
        Unsupported dtype or shape.
    """
    return _IMPL.encode(tile, DEFAULT_VERSION if version is None else version)


def decode(data: bytes | bytearray | memoryview | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a stream to its ``(H, W, C)`` tile (into ``out`` when given: C-contiguous, same shape/dtype).

    Raises
    ------
    CodecError
        The stream is corrupt, truncated, of another version, or does not fit ``out``.
    """
    if IMPLEMENTATION == "reference":  # pragma: no cover - numba is always installed
        tile = reference.decode(data)
        if out is not None:
            out[...] = tile
            return out
        return tile
    return _IMPL.decode(data, out)


def decode_into(data: bytes | bytearray | memoryview | np.ndarray,
                out: np.ndarray) -> tuple[tuple[int, int, int], np.dtype] | None:
    """Decode a stream into ``out`` (C-contiguous, writeable) when it holds exactly ``out``'s shape and
    dtype, and return None; else leave ``out`` untouched and return the stream's ``((H, W, C), dtype)``.

    The read path's call: with the C extension the header is checked against ``out`` and the tile
    decoded in one call.

    Raises
    ------
    CodecError
        The stream is corrupt or truncated.
    """
    if IMPLEMENTATION == "c":
        return _IMPL.decode_into(data, out)
    shape, dtype = stream_info(data)
    if shape != out.shape or dtype != out.dtype:
        return shape, dtype
    decode(data, out)
    return None


def stream_info(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[tuple[int, int, int], np.dtype]:
    """``((H, W, C), dtype)`` of a stream (validates magic, version, header checksum and sizes).

    The C extension's header check when it is built (every version, no copy: this runs once per tile
    on the read path), else the reference's parsers."""
    if IMPLEMENTATION == "c":
        return _IMPL.decode_info(data)
    raw = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if len(raw) > 4 and raw[4] == 2:
        shape, dtype, _, _ = reference_v2.parse_header(raw)
        return shape, dtype
    if len(raw) > 4 and raw[4] == 3:
        head = reference_v3.parse_header(raw)
        return head.shape, head.dtype
    shape, dtype, _, _ = parse_header(raw)
    return shape, dtype
