"""The read path's one-call decode (``csp_decode_to`` / ``c_codec.decode_into`` / ``lossless.decode_into``):
a stream decodes into a destination of exactly its shape and sample type, and any other destination is
left untouched, also when its byte count is the same."""

from __future__ import annotations

import numpy as np
import pytest

from csp.codecs import lossless
from csp.codecs.lossless import numba_codec
from csp.codecs.tile import from_config_json
from csp.errors import CodecError

c_codec = pytest.importorskip("csp.codecs.lossless.c_codec")


def _tile(shape: tuple[int, int, int], dtype: type, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = 256 if dtype == np.uint8 else 4096
    return np.ascontiguousarray(np.cumsum(rng.integers(-4, 5, shape), axis=1) % hi).astype(dtype)


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("shape,dtype", [((48, 70, 3), np.uint8), ((33, 65, 1), np.uint16), ((20, 9, 4), np.uint8)])
def test_matching_destination_is_decoded(version: int, shape: tuple[int, int, int], dtype: type) -> None:
    tile = _tile(shape, dtype)
    stream = c_codec.encode(tile, version)
    out = np.full(shape, 7, dtype)
    assert c_codec.decode_into(stream, out) is None
    assert np.array_equal(out, tile)
    out2 = np.zeros(shape, dtype)
    assert lossless.decode_into(stream, out2) is None
    assert np.array_equal(out2, tile)


# each destination has the same byte count as the (24, 30, 3) uint8 stream, and another layout
@pytest.mark.parametrize("shape,dtype", [((24, 90, 1), np.uint8), ((30, 24, 3), np.uint8), ((24, 30, 3), np.uint16),
                                         ((24, 45, 1), np.uint16), ((72, 30, 1), np.uint8)])
@pytest.mark.parametrize("version", [1, 3])
def test_other_layout_of_equal_size_is_left_untouched(shape: tuple[int, int, int], dtype: type, version: int) -> None:
    tile = _tile((24, 30, 3), np.uint8)
    stream = c_codec.encode(tile, version)
    out = np.full(shape, 0xAB, dtype)
    before = out.copy()
    held = c_codec.decode_into(stream, out)
    assert held == ((24, 30, 3), np.dtype(np.uint8))
    assert np.array_equal(out, before)
    # the raw C entry refuses the same way, without writing
    lib, ffi = c_codec.lib, c_codec.ffi
    h, w, c = shape
    rc = lib.csp_decode_to(ffi.from_buffer(stream), len(stream), ffi.from_buffer(out), h, w, c,
                           np.dtype(dtype).itemsize, 0)
    assert rc == -9
    assert np.array_equal(out, before)
    with pytest.raises(CodecError, match="stream holds"):
        c_codec.decode(stream, out)


def test_corrupt_stream_raises_and_generic_path_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    tile = _tile((40, 64, 3), np.uint8)
    stream = bytearray(c_codec.encode(tile, 3))
    stream[len(stream) // 2] ^= 0x5A
    out = np.zeros_like(tile)
    with pytest.raises(CodecError):
        c_codec.decode_into(bytes(stream), out)
    with pytest.raises(CodecError):
        c_codec.decode_into(bytes(stream[:30]), out)  # truncated inside the header
    # the path without the C extension (Numba) returns the same answers
    monkeypatch.setattr(lossless, "IMPLEMENTATION", "numba")
    monkeypatch.setattr(lossless, "_IMPL", numba_codec)
    good = c_codec.encode(tile, 3)
    out = np.zeros_like(tile)
    assert lossless.decode_into(good, out) is None
    assert np.array_equal(out, tile)
    other = np.zeros((40, 192, 1), np.uint8)
    assert lossless.decode_into(good, other) == ((40, 64, 3), np.dtype(np.uint8))
    assert not other.any()


def test_non_contiguous_destination_is_refused() -> None:
    tile = _tile((16, 20, 3), np.uint8)
    stream = c_codec.encode(tile, 3)
    big = np.zeros((16, 40, 3), np.uint8)
    with pytest.raises(CodecError, match="C-contiguous"):
        c_codec.decode_into(stream, big[:, ::2])
    ro = np.zeros((16, 20, 3), np.uint8)
    ro.flags.writeable = False
    with pytest.raises(CodecError, match="writeable"):
        c_codec.decode(stream, ro)


def test_tile_codec_places_smaller_edge_tiles() -> None:
    """An edge tile stored at its own size decodes into the array's full tile (zero beyond it); a full tile
    takes the one-call path."""
    codec = from_config_json("csp", {})
    edge = _tile((10, 13, 3), np.uint8)
    full = _tile((16, 16, 3), np.uint8, seed=5)
    got = codec.decode(codec.encode(edge), (16, 16, 3), np.uint8)
    assert np.array_equal(got[:10, :13], edge) and not got[10:].any() and not got[:, 13:].any()
    assert np.array_equal(codec.decode(codec.encode(full), (16, 16, 3), np.uint8), full)
    with pytest.raises(CodecError, match="does not fit"):
        codec.decode(codec.encode(full), (8, 16, 3), np.uint8)
