"""The C implementation of the CSP lossless codec (``native/cspcodec.c`` through cffi).

Importing this module raises :class:`ImportError` when the compiled extension
``csp.native._cspcodec`` is missing (no compiler at install time); :mod:`csp.codecs.lossless` then
falls back to the Numba implementation. cffi releases the GIL around every C call.
"""

from __future__ import annotations

import numpy as np

from csp.codecs.lossless.reference import check_tile
from csp.errors import CodecError
from csp.native._cspcodec import ffi, lib  # ImportError when the extension was not built

__all__ = ["SIMD", "SIMD_AVX2", "SIMD_BW", "decode", "decode_info", "decode_into", "encode"]

#: True when this CPU runs the AVX-512 kernels (decoder of bitstream version 3 for planes at least 64
#: samples wide; the encoder's model analysis): AVX-512 F/BW/VL/DQ/CD with VBMI and VBMI2
SIMD = bool(lib.csp_simd_available())
#: True when this CPU runs the version 3 decoder's AVX-512 kernels in their variants without VBMI/VBMI2
#: (AVX-512 F/BW/VL/DQ/CD: Skylake-SP, Cascade Lake; used there instead of the scalar path)
SIMD_BW = bool(lib.csp_simd_bw_available())
#: True when this CPU runs the version 3 decoder's AVX2 kernel (used where AVX-512 is missing)
SIMD_AVX2 = bool(lib.csp_simd_avx2_available())

_ERRORS = {
    -1: "invalid argument",
    -2: "out of memory",
    -3: "not a csp lossless stream (bad magic)",
    -4: "unsupported csp stream version",
    -5: "corrupt or truncated csp stream header (checksum or sizes)",
    -6: "corrupt csp frequency table",
    -7: "corrupt or truncated csp entropy-coded data",
    -8: "corrupt csp stream: decoded sample out of range",
    -9: "destination buffer has the wrong size",
}


_E_OUTSIZE = -9  #: CSP_E_OUTSIZE: the stream holds another shape than the destination


def _error(code: int) -> CodecError:
    return CodecError(None, f"csp codec (C): {_ERRORS.get(code, f'error {code}')}")


def encode(tile: np.ndarray, version: int = 1, *, simd: bool = True) -> bytes:
    """Encode a ``(H, W, C)`` or ``(H, W)`` uint8/uint16 tile in bitstream ``version`` (1, 2 or 3).

    ``simd=False`` forces the portable scalar model analysis (the AVX-512 row kernels are used otherwise
    where the CPU has them; the bytes are the same, which the tests check)."""
    if version not in (1, 2, 3):
        raise CodecError(None, f"csp codec: cannot write bitstream version {version}")
    arr = np.ascontiguousarray(check_tile(tile))
    if arr.dtype.byteorder == ">":  # pragma: no cover - big-endian input
        arr = arr.astype(arr.dtype.newbyteorder("="))
    h, w, c = arr.shape
    bps = arr.dtype.itemsize
    bound = int((lib.csp_encode3_bound if version == 3 else lib.csp_encode_bound)(h, w, c, bps))
    if bound < 0:
        raise _error(bound)
    out = np.empty(bound, np.uint8)  # not zeroed: the bound is about 4 bytes per sample, the stream far less
    n = int(lib.csp_encode_ex(ffi.from_buffer(arr), h, w, c, bps, ffi.from_buffer(out), bound, version,
                              0 if simd else lib.CSP_NO_SIMD))
    if n < 0:
        raise _error(n)
    return out[:n].tobytes()


def decode_info(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[tuple[int, int, int], np.dtype]:
    """``((H, W, C), dtype)`` of a stream (validates the header)."""
    buf = ffi.from_buffer(data)
    hwc = ffi.new("int64_t[3]")
    bps = ffi.new("int *")
    rc = lib.csp_decode_info(buf, len(buf), hwc, hwc + 1, hwc + 2, bps)
    if rc < 0:
        raise _error(rc)
    return (int(hwc[0]), int(hwc[1]), int(hwc[2])), np.dtype(np.uint8 if bps[0] == 1 else np.uint16)


def _flags(simd: bool | str) -> int:
    if simd == "avx512bw":
        if not SIMD_BW:
            raise CodecError(None, "csp codec (C): this CPU has no AVX-512 F/BW/VL/DQ/CD")
        return int(lib.CSP_NO_VBMI)
    if simd == "avx2":
        if not SIMD_AVX2:
            raise CodecError(None, "csp codec (C): this CPU has no AVX2")
        return int(lib.CSP_NO_AVX512)
    if simd is True or simd is False:
        return 0 if simd else int(lib.CSP_NO_SIMD)
    raise CodecError(None, f"csp codec (C): unknown SIMD choice {simd!r}")


_SAMPLE_BYTES = {np.dtype(np.uint8): 1, np.dtype(np.uint16): 2}


def decode_into(data: bytes | bytearray | memoryview | np.ndarray, out: np.ndarray, *,
                simd: bool | str = True) -> tuple[tuple[int, int, int], np.dtype] | None:
    """Decode a stream into ``out`` when it holds exactly ``out``'s shape and dtype; return None then.

    Otherwise ``out`` is left untouched and the stream's ``((H, W, C), dtype)`` is returned (the header
    is valid), so that a caller can place a smaller tile itself. One call into C checks the header
    against ``out`` and decodes (the read path's common case parses the header once). ``out`` must be
    C-contiguous and writeable; ``simd`` as in :func:`decode`.

    Raises
    ------
    CodecError
        The stream is corrupt or truncated, or ``out`` is not a writeable C-contiguous array.
    """
    flags = _flags(simd)
    bps = _SAMPLE_BYTES.get(out.dtype)
    if (bps is None or out.ndim != 3 or not out.flags.c_contiguous or not out.flags.writeable
            or out.dtype.byteorder == ">"):
        shape, dtype = decode_info(data)
        if out.shape == shape and out.dtype == dtype:
            raise CodecError(None, "csp codec: out must be a writeable C-contiguous array")
        return shape, dtype
    buf = ffi.from_buffer(data)
    h, w, c = out.shape
    rc = lib.csp_decode_to(buf, len(buf), ffi.from_buffer(out), h, w, c, bps, flags)
    if rc == _E_OUTSIZE:
        return decode_info(data)
    if rc < 0:
        raise _error(rc)
    return None


def decode(data: bytes | bytearray | memoryview | np.ndarray, out: np.ndarray | None = None,
           *, simd: bool | str = True) -> np.ndarray:
    """Decode a stream to its ``(H, W, C)`` tile, into ``out`` (C-contiguous, matching) if given.

    ``simd=False`` forces the portable scalar C path of bitstream version 3; ``simd="avx512bw"`` the
    AVX-512 kernel variants that CPUs without VBMI/VBMI2 run (needs :data:`SIMD_BW`), ``simd="avx2"``
    the kernel of CPUs without AVX-512 (needs :data:`SIMD_AVX2`). By
    default the best path this CPU has is used; all give the same result, which the tests check."""
    if out is not None:
        held = decode_into(data, out, simd=simd)
        if held is not None:
            shape, dtype = held
            raise CodecError(None, f"csp codec: stream holds {shape} {dtype}, out is {out.shape} {out.dtype}")
        return out
    flags = _flags(simd)
    shape, dtype = decode_info(data)
    out = np.empty(shape, dtype)
    buf = ffi.from_buffer(data)
    rc = lib.csp_decode_ex(buf, len(buf), ffi.from_buffer(out), out.nbytes, flags)
    if rc < 0:
        raise _error(rc)
    return out
