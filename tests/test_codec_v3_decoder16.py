"""The C decoder runs 8-bit tiles of bitstream version 3 in 16-bit lanes (native/cspcodec3_avx512_16.c).

No 8-bit encoder writes a residual wider than 16 bits, so these tests forge such streams: a 16-bit tile's
stream relabelled as 8-bit (header dtype code 2 -> 1, checksum recomputed). Its residuals reach 2^17, its
samples leave [0, 255], and its model parameters (shifts) are those of 16-bit data. Every decoder must
treat it alike: the reference, the C decoder's AVX-512 path (saturating 16-bit arithmetic; both its
variants) and scalar path, and the Numba decoder either all reject it or all return the same tile.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csp.codecs.lossless import numba_v3
from csp.codecs.lossless import reference as v1
from csp.codecs.lossless import reference_v3
from csp.errors import CodecError

c_codec = pytest.importorskip("csp.codecs.lossless.c_codec")


def _relabel_as_8_bit(data: bytes) -> bytes:
    """The same stream with dtype code 1 (8-bit) and a valid header checksum."""
    c = v1.HEADER.unpack_from(data, 0)[7]
    hlen = v1.HEADER.size + reference_v3.DESC.size * c + reference_v3.LENGTHS.size
    head = bytearray(data[:hlen])
    assert head[5] == 2
    head[5] = 1
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + data[hlen + 4:]


def _outcomes(data: bytes) -> dict[str, object]:
    decoders = {"reference": reference_v3.decode, "C simd": c_codec.decode,
                "C scalar": lambda d: c_codec.decode(d, simd=False), "Numba": numba_v3.decode}
    if c_codec.SIMD_BW:  # the 16-bit kernel's variant for CPUs without AVX-512 VBMI/VBMI2
        decoders["C avx512bw"] = lambda d: c_codec.decode(d, simd="avx512bw")
    if c_codec.SIMD_AVX2:  # the kernel of CPUs without AVX-512 (32-bit lanes)
        decoders["C avx2"] = lambda d: c_codec.decode(d, simd="avx2")
    out: dict[str, object] = {}
    for name, dec in decoders.items():
        try:
            out[name] = dec(data)
        except CodecError as exc:
            out[name] = "error: " + str(exc).split(": ")[-1]
    return out


def _assert_alike(out: dict[str, object]) -> None:
    first = out["reference"]
    for name, got in out.items():
        if isinstance(first, str):
            assert isinstance(got, str), f"{name} accepted a stream the reference rejects ({first})"
        else:
            assert not isinstance(got, str), f"{name} rejected a stream the reference accepts: {got}"
            np.testing.assert_array_equal(got, first, err_msg=name)


@pytest.mark.parametrize("high", [16500, 32767, 32768, 32769, 32770, 32771, 40000, 65535])
def test_residuals_beyond_16_bits_are_rejected_by_every_decoder(high: int) -> None:
    """One large sample, the last one decoded (bottom right of the last plane; H a multiple of 32, so
    lane 31 holds the bottom row): its residual code u is about 2 * high, at or beyond 2^16 from 32768
    on, and nothing decoded after it could reveal a wrong value. A decoder that narrowed u without
    saturation (2 * 32770 -> 4) would accept the stream and return a tile."""
    tile = np.zeros((64, 96, 3), np.uint16)
    tile[-1, -1, 2] = high
    out = _outcomes(_relabel_as_8_bit(numba_v3.encode(tile)))
    assert all(isinstance(v, str) and "range" in v for v in out.values()), out


def test_wide_residuals_everywhere_are_rejected_by_every_decoder() -> None:
    # 0 / 60000 stripes: residuals near +-60000 in the first row, codes u near 120000
    tile = np.zeros((40, 96, 3), np.uint16)
    tile[:, ::2] = 60000
    tile[::3, :, 1] = 41234
    out = _outcomes(_relabel_as_8_bit(numba_v3.encode(tile)))
    assert all(isinstance(v, str) and "range" in v for v in out.values()), out


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 70), st.integers(64, 140), st.sampled_from([1, 3]), st.sampled_from([255, 600, 40000, 65535]),
       st.integers(0, 2**31))
def test_relabelled_16_bit_streams_decode_alike(h: int, w: int, c: int, top: int, seed: int) -> None:
    """Small 16-bit values (up to `top`) relabelled as 8-bit: some decode to a tile (all samples within
    the 8-bit ranges), most fail somewhere; the decoders agree on which, and on the tile."""
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.integers(-3, 4, (h, w, c)), axis=1) + rng.integers(0, top + 1, (1, 1, c))
    tile = np.clip(smooth, 0, top).astype(np.uint16)
    _assert_alike(_outcomes(_relabel_as_8_bit(numba_v3.encode(tile))))


def test_simd_choice_is_validated() -> None:
    data = c_codec.encode(np.zeros((8, 70, 3), np.uint8), 3)
    with pytest.raises(CodecError, match="SIMD choice"):
        c_codec.decode(data, simd="sse2")
    if c_codec.SIMD_BW:
        np.testing.assert_array_equal(c_codec.decode(data, simd="avx512bw"), np.zeros((8, 70, 3), np.uint8))
