"""A stream whose planes are each within their ranges but whose inverse colour transform leaves [0, maxv]
(which no encoder writes; a forged or damaged stream can hold it) is rejected by every decoder of
version 3, including the C decoder's AVX-512 output pass."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from csp.codecs.lossless import reference as v1
from csp.codecs.lossless import reference_v3
from csp.errors import CodecError


def _forged_rct_stream(h: int, w: int) -> bytes:
    rng = np.random.default_rng(1)
    xform = v1.XFORM_RCT  # RCT with k = 0
    # Y small, U and V large: G = Y - ((U + V) >> 2) < 0 where the block is set
    y = rng.integers(0, 20, (h, w))
    u = rng.integers(-20, 20, (h, w))
    v = rng.integers(-20, 20, (h, w))
    u[h // 2:, w // 2:] = 250
    v[h // 2:, w // 2:] = 250
    analyses = []
    for i, plane in enumerate((y, u, v)):
        lo, hi = v1._plane_range(xform, i, 255)
        assert lo <= plane.min() and plane.max() <= hi
        cross = analyses[0].abs_e if i > 0 else None
        analyses.append(v1.analyze_plane(plane.astype(np.int64), lo, hi, False, cross))
    states, words = reference_v3._encode_symbols(analyses, h, w)
    tables = b"".join(an.table_bytes for an in analyses)
    head = (reference_v3.HEADER.pack(v1.MAGIC, reference_v3.VERSION, 1, xform, 0, h, w, 3, 0)
            + b"".join(reference_v3.DESC.pack(an.kind, an.mode, an.ashift, an.lshift) for an in analyses)
            + reference_v3.LENGTHS.pack(len(tables), 2 * len(words)))
    return (head + struct.pack("<I", zlib.crc32(head)) + tables + reference_v3.STATES.pack(*states)
            + struct.pack(f"<{len(words)}H", *words))


@pytest.fixture(scope="module")
def forged() -> bytes:
    return _forged_rct_stream(40, 96)  # W >= 64: 32 lanes, the C decoder's vector path


def test_reference_rejects_rct_out_of_range(forged: bytes) -> None:
    with pytest.raises(CodecError, match="range"):
        reference_v3.decode(forged)


@pytest.mark.parametrize("simd", [True, False, "avx512bw", "avx2"])
def test_c_decoder_rejects_rct_out_of_range(forged: bytes, simd: bool | str) -> None:
    c_codec = pytest.importorskip("csp.codecs.lossless.c_codec")
    if (simd == "avx512bw" and not c_codec.SIMD_BW) or (simd == "avx2" and not c_codec.SIMD_AVX2):
        pytest.skip(f"this CPU cannot run the {simd} kernel")
    with pytest.raises(CodecError, match="range"):
        c_codec.decode(forged, simd=simd)


def test_numba_decoder_rejects_rct_out_of_range(forged: bytes) -> None:
    from csp.codecs.lossless import numba_v3

    with pytest.raises(CodecError, match="range"):
        numba_v3.decode(forged)
