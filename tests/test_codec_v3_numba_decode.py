"""The Numba decoder of bitstream version 3 (``numba_v3_decode``) keeps 8-bit tiles' skew buffers as int16.

Its lane arithmetic stays int32 and every sample is range-checked before it is narrowed to 16 bits, so
these tests drive the int16 buffers at the edges of their value ranges (0/255 checkerboards and noise:
residuals of +-255 and RCT planes at +-510, every colour transform), over the widths and heights where
the lane layout changes (one lane up to 32 lanes, W = 2L where lane 0's row above is written in the same
step, tiles taller and shorter than 32 rows), through the one-pass output of RGB tiles (with and
without a transform) and the per-plane output of other channel counts; and damaged streams, which the
Numba decoder must reject or accept exactly like the C decoder and the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from csp.codecs.lossless import numba_v3, reference_v3
from csp.errors import CodecError


def _rct_tile(h: int, w: int, k: int, seed: int) -> np.ndarray:
    """An RGB tile whose B - G follows (k * (R - G)) >> 2: the encoder picks transform 1 + k."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    g = (np.sin(yy / 5.0) * np.cos(xx / 7.0) * 60 + 120).astype(np.int64) + rng.integers(-2, 3, (h, w))
    u = (np.sin(xx / 3.0 + seed) * 40).astype(np.int64)
    b = g + ((k * u) >> 2) + rng.integers(-1, 2, (h, w))
    return np.clip(np.stack([g + u, g, b], -1), 0, 255).astype(np.uint8)


def _tile(h: int, w: int, c: int, pattern: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if pattern == "checker":  # 0/255 side by side: residuals of +-255, RCT planes at their extremes
        yy, xx = np.mgrid[0:h, 0:w]
        m = (yy[..., None] + xx[..., None] + np.arange(c)) % 2
        return np.where(m == 1, 255, 0).astype(np.uint8)
    if pattern == "checker-rgb":  # channels in phase: an RCT with U = V = 0 next to Y jumps
        yy, xx = np.mgrid[0:h, 0:w]
        return np.repeat((((yy + xx) % 2) * 255).astype(np.uint8)[..., None], c, axis=2)
    if pattern == "noise":
        return rng.integers(0, 256, (h, w, c)).astype(np.uint8)
    if pattern == "stripes":  # 0/255 columns with a dark row every third: SEL predictors at the extremes
        t = np.zeros((h, w, c), np.uint8)
        t[:, ::2] = 255
        t[::3, :, :1] = 17
        return t
    raise ValueError(pattern)


def _check(tile: np.ndarray) -> int:
    """Round-trips tile through the encoder and the Numba decoder (new array and ``out=``); returns the
    stream's colour transform."""
    data = numba_v3.encode(tile)
    np.testing.assert_array_equal(numba_v3.decode(data), tile, err_msg=str(tile.shape))
    out = np.full_like(tile, 7)
    assert numba_v3.decode(data, out=out) is out
    np.testing.assert_array_equal(out, tile, err_msg=f"{tile.shape} (out=)")
    return int(data[6])


SIZES = [(1, 64), (2, 64), (70, 64), (33, 65), (5, 127), (32, 128), (64, 130), (31, 200), (70, 300),
         (1, 300), (3, 5), (2, 2), (9, 3), (40, 63), (65, 66)]


@pytest.mark.parametrize("pattern", ["checker", "checker-rgb", "noise", "stripes"])
@pytest.mark.parametrize("c", [1, 3, 4])
def test_8_bit_extremes_round_trip(pattern: str, c: int) -> None:
    for i, (h, w) in enumerate(SIZES):
        _check(_tile(h, w, c, pattern, 31 * i + c))


def test_every_colour_transform_round_trips() -> None:
    seen = set()
    for k in range(4):
        for i, (h, w) in enumerate([(40, 80), (70, 64), (17, 300), (1, 96), (66, 130)]):
            seen.add(_check(_rct_tile(h, w, k, 10 * k + i)))
    seen.add(_check(_tile(40, 80, 3, "noise", 5)))
    assert seen == {0, 1, 2, 3, 4}, seen


def test_16_bit_tiles_keep_32_bit_buffers() -> None:
    """16-bit samples do not fit int16 skew buffers: a 0/65535 checkerboard and noise round-trip."""
    for h, w in [(33, 64), (5, 130)]:
        yy, xx = np.mgrid[0:h, 0:w]
        t = np.where(((yy + xx)[..., None] + np.arange(3)) % 2 == 1, 65535, 0).astype(np.uint16)
        _check(t)
        _check(np.random.default_rng(h).integers(0, 65536, (h, w, 3)).astype(np.uint16))


def _outcome(decode, data: bytes) -> object:
    try:
        return decode(data)
    except CodecError:
        return "error"


@pytest.mark.parametrize("pattern", ["checker", "noise", "rct"])
def test_damaged_streams_fail_like_the_reference(pattern: str) -> None:
    """Flipped bytes in the words of a small tile's stream: the Numba decoder rejects the stream exactly
    when the reference does, and otherwise returns the reference's tile (the header checksum does not
    cover the words, so every damaged stream gets to the decoder)."""
    tile = _rct_tile(8, 66, 2, 3) if pattern == "rct" else _tile(8, 66, 3, pattern, 4)
    data = numba_v3.encode(tile)
    rng = np.random.default_rng(len(data))
    rejected = 0
    for _ in range(12):
        bad = bytearray(data)
        pos = int(rng.integers(len(data) // 2, len(data)))  # (the second half: words)
        bad[pos] ^= int(rng.integers(1, 256))
        ref = _outcome(reference_v3.decode, bytes(bad))
        got = _outcome(numba_v3.decode, bytes(bad))
        if isinstance(ref, str):
            rejected += 1
            assert isinstance(got, str), f"byte {pos}: Numba accepted a stream the reference rejects"
        else:
            assert not isinstance(got, str), f"byte {pos}: Numba rejected a stream the reference accepts"
            np.testing.assert_array_equal(got, ref)
    assert rejected > 0


def test_damaged_8_bit_streams_fail_like_the_c_decoder() -> None:
    """Many damaged 8-bit streams of a 240 x 70 RGB tile (more lanes and steps than the reference can
    decode quickly): the Numba decoder and the C decoder agree on every one."""
    c_codec = pytest.importorskip("csp.codecs.lossless.c_codec")
    for k, tile in enumerate([_rct_tile(70, 240, 1, 9), _tile(70, 240, 3, "checker", 2)]):
        data = numba_v3.encode(tile)
        rng = np.random.default_rng(k)
        for _ in range(40):
            bad = bytearray(data)
            pos = int(rng.integers(len(data) // 3, len(data)))
            bad[pos] ^= int(rng.integers(1, 256))
            cc = _outcome(c_codec.decode, bytes(bad))
            got = _outcome(numba_v3.decode, bytes(bad))
            if isinstance(cc, str):
                assert isinstance(got, str), f"byte {pos}: Numba accepted a stream C rejects"
            else:
                assert not isinstance(got, str), f"byte {pos}: Numba rejected a stream C accepts"
                np.testing.assert_array_equal(got, cc)
