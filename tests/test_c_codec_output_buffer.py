"""The C encoders write every byte of the stream they return (c_codec.encode hands them an uninitialised
buffer): a buffer full of 0xFF and one full of zeros give the same stream."""

from __future__ import annotations

import numpy as np
import pytest

c_codec = pytest.importorskip("csp.codecs.lossless.c_codec")


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("shape,dtype", [((67, 93, 3), np.uint8), ((40, 130, 1), np.uint16), ((5, 7, 4), np.uint8)])
def test_encoder_output_does_not_depend_on_buffer_contents(version: int, shape: tuple[int, int, int],
                                                          dtype: type) -> None:
    rng = np.random.default_rng(7)
    hi = 256 if dtype == np.uint8 else 4096
    tile = np.ascontiguousarray(np.cumsum(rng.integers(-3, 4, shape), axis=1) % hi).astype(dtype)
    h, w, c = shape
    bps = np.dtype(dtype).itemsize
    lib, ffi = c_codec.lib, c_codec.ffi
    bound = int((lib.csp_encode3_bound if version == 3 else lib.csp_encode_bound)(h, w, c, bps))
    streams = []
    for fill in (0x00, 0xFF):
        out = np.full(bound, fill, np.uint8)
        n = int(lib.csp_encode_ex(ffi.from_buffer(tile), h, w, c, bps, ffi.from_buffer(out), bound, version, 0))
        assert n > 0
        streams.append(out[:n].tobytes())
    assert streams[0] == streams[1]
    assert streams[0] == c_codec.encode(tile, version)
    assert np.array_equal(c_codec.decode(streams[0]), tile)
