"""Corner cases of the C encoder's AVX-512 model path, each compared with the portable scalar path (the
bytes must be equal): the joint histogram's 16-bit counters flushed mid-plane, the two-row ring of
predictor errors on tall planes, and widths that end in a partial vector."""

from __future__ import annotations

import numpy as np
import pytest

c_codec = pytest.importorskip("csp.codecs.lossless.c_codec")
pytestmark = pytest.mark.skipif(not c_codec.SIMD, reason="the CPU has no AVX-512: only the scalar path runs")


@pytest.mark.parametrize("version", [1, 3])
def test_tall_constant_plane_overflows_a_16_bit_counter(version: int) -> None:
    # one bin takes almost every sample: 1,100 rows x 64 per row and copy > 65,535, so the counters must
    # flush (a few other values keep the table from being a single-symbol one, whose count is irrelevant)
    tile = np.full((1100, 256, 1), 77, np.uint8)
    tile[::37, ::41] = 80
    data = c_codec.encode(tile, version)
    assert data == c_codec.encode(tile, version, simd=False)
    np.testing.assert_array_equal(c_codec.decode(data), tile)


@pytest.mark.parametrize("shape,dtype", [((3500, 64, 3), np.uint8), ((700, 97, 2), np.uint16), ((2, 300, 3), np.uint8),
                                         ((1, 65, 3), np.uint8), ((33, 17, 1), np.uint16)])
def test_vector_model_path_equals_scalar_path(shape: tuple[int, int, int], dtype: type) -> None:
    rng = np.random.default_rng(sum(shape))
    hi = 256 if dtype == np.uint8 else 65536
    smooth = np.cumsum(rng.integers(-2, 3, shape), axis=1) + np.cumsum(rng.integers(-2, 3, shape), axis=0)
    tile = ((smooth - smooth.min()) % hi).astype(dtype)
    for version in (1, 2, 3):
        data = c_codec.encode(tile, version)
        assert data == c_codec.encode(tile, version, simd=False), version
        np.testing.assert_array_equal(c_codec.decode(data), tile)


def _extreme_rgb_tiles() -> list[np.ndarray]:
    """8-bit RGB tiles at the edges of the 16-bit lane path's ranges: uniform noise and 0/255
    checkerboards (|errors| up to 1020), and channel relations that make the colour-transform choice
    pick RCT with every k, where V = (B - G) - ((k U) >> 2) reaches +-510."""
    rng = np.random.default_rng(17)
    tiles = []
    for i in range(200):
        h, w = int(rng.integers(1, 70)), int(rng.integers(64, 200))
        g = rng.integers(0, 256, (h, w))
        kind = i % 5
        if kind == 0:
            t = rng.integers(0, 256, (h, w, 3))
        elif kind == 1:
            t = ((np.indices((h, w)).sum(0) % 2) * 255)[..., None].repeat(3, 2)
        elif kind == 2:
            t = np.stack([g, g, 255 - g], 2)
        elif kind == 3:
            t = np.stack([g, 255 - g, rng.integers(0, 256, (h, w))], 2)
        else:
            t = np.stack([g, g // 2, g], 2)
            m = rng.random((h, w)) < 0.1
            t[m] = rng.integers(0, 256, (int(m.sum()), 3))
        tiles.append(np.ascontiguousarray(t.astype(np.uint8)))
    return tiles


def test_16_bit_lane_path_at_its_value_ranges() -> None:
    """The 8-bit encoder path computes in 16-bit lanes on the claim that every quantity fits: at the
    extremes of plane values and errors it writes the scalar path's bytes, and every RCT k occurs."""
    xforms = set()
    for tile in _extreme_rgb_tiles():
        for version in (1, 3):
            data = c_codec.encode(tile, version)
            assert data == c_codec.encode(tile, version, simd=False), (tile.shape, version)
            xforms.add(data[6])
        np.testing.assert_array_equal(c_codec.decode(c_codec.encode(tile, 3)), tile)
    assert xforms == {0, 1, 2, 3, 4, 5}
