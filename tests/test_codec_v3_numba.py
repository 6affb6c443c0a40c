"""Bitstream version 3 of the CSP lossless codec, Numba implementation (``numba_v3``): round trips,
version 1's model decisions, byte equality with the reference (``reference_v3``) and damaged streams."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csp.codecs.lossless import numba_codec, numba_v3, reference, reference_v3
from csp.errors import CodecError


def _tile(shape: tuple[int, int, int], dtype: type, pattern: str, seed: int) -> np.ndarray:
    """A synthetic tile: smooth gradients with texture (H&E-like), noise, extremes or near-zero counts."""
    rng = np.random.default_rng(seed)
    maxv = np.iinfo(dtype).max
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w]
    if pattern == "smooth":
        base = 0.5 + 0.3 * np.sin(yy[..., None] / 7.0 + np.arange(c)) * np.cos(xx[..., None] / 5.0)
        img = base * maxv + rng.normal(0, maxv / 60, (h, w, c))
        return np.clip(img, 0, maxv).astype(dtype)
    if pattern == "ramp":  # planar gradients: SEL3 (GRAD) wins
        img = (3 * yy[..., None] + 2 * xx[..., None] + 17 * np.arange(c)) * (maxv // 255)
        return np.clip(img + rng.integers(0, 3, (h, w, c)), 0, maxv).astype(dtype)
    if pattern == "noise":
        return rng.integers(0, maxv + 1, shape).astype(dtype)
    if pattern == "edges":  # extremes side by side: maximal residuals
        m = (yy[..., None] // 2 + xx[..., None] // 3 + np.arange(c)) % 2
        return np.where(m == 1, maxv, 0).astype(dtype)
    return rng.poisson(2.0, shape).astype(dtype)  # fluorescence-like, near zero


SHAPES = [(1, 1), (1, 2), (2, 1), (1, 40), (40, 1), (2, 2), (3, 3), (2, 3), (3, 2), (5, 31), (31, 5),
          (17, 33), (16, 32), (33, 64), (47, 35)]
PATTERNS = ("smooth", "ramp", "noise", "edges", "counts")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_round_trip_shapes(dtype: type, channels: int) -> None:
    for i, (h, w) in enumerate(SHAPES):
        for pattern in PATTERNS:
            tile = _tile((h, w, channels), dtype, pattern, 100 * i + channels)
            data = numba_v3.encode(tile)
            assert data[4] == numba_v3.VERSION
            back = numba_v3.decode(data)
            assert back.dtype == tile.dtype and back.shape == tile.shape
            np.testing.assert_array_equal(back, tile, err_msg=f"{(h, w, channels)} {pattern}")


def test_rct_and_predictors_round_trip_like_version_1() -> None:
    """Version 3 takes version 1's decisions: same transform, descriptors and tables; its stream is the
    same size minus version 1's per-plane stream lengths, states and pads (give or take rANS flushes)."""
    seen_kinds, seen_modes, seen_xforms = set(), set(), set()
    cases = [("smooth", np.uint8), ("smooth", np.uint16), ("counts", np.uint16), ("counts", np.uint8),
             ("noise", np.uint8), ("edges", np.uint16), ("ramp", np.uint8)]
    for seed, (pattern, dtype) in enumerate(cases):
        for shape in ((48, 50, 3), (20, 64, 1), (33, 40, 4)):
            tile = _tile(shape, dtype, pattern, seed)
            data = numba_v3.encode(tile)
            np.testing.assert_array_equal(numba_v3.decode(data), tile)
            v1 = numba_codec.encode(tile)
            (_, _, c), _, xform, planes = reference.parse_header(v1)
            assert data[6] == xform
            seen_xforms.add(xform)
            off = reference.HEADER.size + reference.PLANE.size * c + 4
            tables = b""
            for i, p in enumerate(planes):
                desc = struct.unpack_from("<BBBB", data, reference.HEADER.size + 4 * i)
                assert desc == tuple(p[:4])
                seen_kinds.add(p[0])
                seen_modes.add(p[1])
                tables += v1[off:off + p[4]]
                off += sum(p[4:])
            tpos = reference.HEADER.size + 4 * c + 12
            assert data[tpos:tpos + len(tables)] == tables
            assert struct.unpack_from("<I", data, tpos - 12)[0] == len(tables)
            # v1: 40-byte descriptors, per plane four rANS states and pads;
            # v3: 4-byte descriptors, 32 states, T and N
            assert abs(len(data) - (len(v1) - 52 * c + 136)) <= 2 * numba_v3.LANES + 8 * c + 16
    assert seen_kinds >= {0, 3, 4} and seen_modes == {0, 1} and len(seen_xforms) >= 2


def test_decode_into_out_and_2d_input() -> None:
    tile = _tile((21, 19, 1), np.uint8, "smooth", 3)
    data = numba_v3.encode(tile[:, :, 0])
    out = np.zeros((21, 19, 1), np.uint8)
    assert numba_v3.decode(data, out) is out
    np.testing.assert_array_equal(out, tile)
    np.testing.assert_array_equal(numba_v3.decode(np.frombuffer(data, np.uint8)), tile)
    with pytest.raises(CodecError, match="out is"):
        numba_v3.decode(data, np.zeros((21, 19, 1), np.uint16))


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4,), np.uint8),
                                 np.zeros((0, 4, 1), np.uint8)])
def test_unsupported_input_raises(bad: np.ndarray) -> None:
    with pytest.raises(CodecError):
        numba_v3.encode(bad)


# ---------------------------------------------------------------------------------------- reference
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_bytes_equal_reference_v3(dtype: type) -> None:
    reference_v3 = pytest.importorskip("csp.codecs.lossless.reference_v3")
    cases = [((1, 1, 1), "noise"), ((1, 7, 2), "smooth"), ((6, 1, 1), "counts"), ((3, 3, 3), "edges"),
             ((2, 5, 4), "noise"), ((21, 34, 3), "ramp"), ((19, 24, 3), "smooth"), ((18, 40, 1), "counts"),
             ((17, 33, 3), "counts"),
             ((20, 36, 3), "noise"), ((16, 31, 2), "edges")]
    for i, (shape, pattern) in enumerate(cases):
        tile = _tile(shape, dtype, pattern, i)
        data = numba_v3.encode(tile)
        ref = reference_v3.encode(tile)
        assert data == ref, f"{shape} {pattern}"
        np.testing.assert_array_equal(reference_v3.decode(data), tile)
        np.testing.assert_array_equal(numba_v3.decode(ref), tile)


# ------------------------------------------------------------------------------------- damaged streams
def _stream() -> tuple[np.ndarray, bytes]:
    tile = _tile((18, 20, 3), np.uint8, "smooth", 7)
    return tile, numba_v3.encode(tile)


def test_truncated_and_extended_streams_raise() -> None:
    _, data = _stream()
    for n in range(len(data)):
        with pytest.raises(CodecError):
            numba_v3.decode(data[:n])
    for extra in (b"\0", b"\0\0", b"\xff" * 5):
        with pytest.raises(CodecError):
            numba_v3.decode(data + extra)


def _with_crc(buf: bytearray, c: int) -> bytes:
    hlen = reference.HEADER.size + 4 * c + 8
    struct.pack_into("<I", buf, hlen, zlib.crc32(bytes(buf[:hlen])))
    return bytes(buf)


def test_header_fields_are_checked() -> None:
    tile, data = _stream()
    c = tile.shape[2]
    hlen = reference.HEADER.size + 4 * c + 8
    for pos in range(hlen + 4):  # any bit flip in the header, descriptors, lengths or CRC
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(CodecError):
            numba_v3.decode(bytes(bad))
    bad = bytearray(data)
    bad[4] = 1
    with pytest.raises(CodecError, match="version"):
        numba_v3.decode(bytes(bad))
    # reserved bytes, predictor, context mode, shifts
    forged = [(7, 1), (18, 1), (19, 2), (20, 5), (21, 7), (22, 16), (23, 16)]
    for pos, value in forged:
        bad = bytearray(data)
        bad[pos] = value
        with pytest.raises(CodecError, match="reserved|descriptor"):
            numba_v3.decode(_with_crc(bad, c))
    bad = bytearray(data)
    struct.pack_into("<II", bad, 8, 1 << 16, 1 << 16)  # a huge shape with a valid CRC
    with pytest.raises(CodecError, match="shape"):
        numba_v3.decode(_with_crc(bad, c))
    tl = struct.unpack_from("<I", data, hlen - 8)[0]
    bad = bytearray(data)
    struct.pack_into("<I", bad, hlen + 4 + tl + 4 * 5, 0xFFFF)  # lane state 5 below 2^16
    with pytest.raises(CodecError, match="lane state"):
        numba_v3.decode(bytes(bad))


def test_flipped_payload_bits_fail_cleanly() -> None:
    """A flipped bit in the tables, lane states or words raises CodecError, or (rarely, in the entropy
    coded part) decodes to some tile of the right shape; nothing is read out of bounds."""
    tile, data = _stream()
    c = tile.shape[2]
    start = reference.HEADER.size + 4 * c + 12
    rng = np.random.default_rng(0)
    raised = 0
    positions = list(range(start, len(data))) if len(data) - start < 400 else \
        sorted(rng.choice(np.arange(start, len(data)), 400, replace=False))
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            back = numba_v3.decode(bytes(bad))
        except CodecError:
            raised += 1
            continue
        assert back.shape == tile.shape and back.dtype == tile.dtype
    assert raised >= 0.9 * len(positions)


def test_random_words_never_crash() -> None:
    """Streams with a valid header and random payload (tables of the real stream, random words) raise
    CodecError or decode; the word reads stay inside the stream."""
    tile, data = _stream()
    c = tile.shape[2]
    hlen = reference.HEADER.size + 4 * c + 8
    tl = struct.unpack_from("<I", data, hlen - 8)[0]
    rng = np.random.default_rng(1)
    for nwords in (0, 1, 2, 50, 1000):
        body = rng.integers(0, 256, 64 + 2 * nwords, dtype=np.uint8)
        body[3::4][:16] |= 1  # lane states >= 2^16
        buf = bytearray(data[:hlen + 4 + tl] + body.tobytes())
        struct.pack_into("<I", buf, hlen - 4, 2 * nwords)
        try:
            numba_v3.decode(_with_crc(buf, c))
        except CodecError:
            pass


def test_slide_tile_matches_reference_and_version_1() -> None:
    """A crop of a real H&E slide (decoded JPEG): bytes equal the reference's, pixels round trip, and the
    stream is version 1's size minus its per-plane overheads."""
    reference_v3 = pytest.importorskip("csp.codecs.lossless.reference_v3")
    tifffile = pytest.importorskip("tifffile")
    from conftest import shared_file

    with tifffile.TiffFile(shared_file("svs/CMU-1-Small-Region.svs")) as tf:
        img = tf.pages[0].asarray()
    crop = np.ascontiguousarray(img[700:740, 500:564])
    data = numba_v3.encode(crop)
    assert data == reference_v3.encode(crop)
    np.testing.assert_array_equal(numba_v3.decode(data), crop)
    np.testing.assert_array_equal(reference_v3.decode(data), crop)
    assert len(data) < len(numba_codec.encode(crop))


V3_FIXTURES = Path(__file__).parent / "fixtures" / "codec" / "v3"


@pytest.mark.parametrize("name", sorted(p.stem for p in V3_FIXTURES.glob("*.csp")))
def test_golden_v3_fixtures(name: str) -> None:
    """The golden version-3 streams (written by the reference) decode to their arrays, and the Numba
    encoder writes exactly those bytes."""
    data = (V3_FIXTURES / f"{name}.csp").read_bytes()
    expected = np.load(V3_FIXTURES.parent / f"{name}.npy")
    np.testing.assert_array_equal(numba_v3.decode(data), expected)
    assert numba_v3.encode(expected) == data


def test_threads_encode_and_decode_concurrently() -> None:
    """The kernels release the GIL and keep no global state: concurrent calls give the same results."""
    import threading

    tiles = [_tile((40, 48, 3), np.uint8, "smooth", s) for s in range(4)]
    streams = [numba_v3.encode(t) for t in tiles]
    failures: list[int] = []

    def work(i: int) -> None:
        for _ in range(5):
            same = numba_v3.encode(tiles[i]) == streams[i]
            if not same or not np.array_equal(numba_v3.decode(streams[i]), tiles[i]):
                failures.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(tiles))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []


# ------------------------------------------------------------------- vectorised decoder (numba_v3_decode)
def _decode_all(data: bytes) -> dict[str, object]:
    """Outcome of every available version-3 decoder on data: the array, or the CodecError class."""
    from csp.codecs.lossless import numba_v3_decode

    out: dict[str, object] = {}
    decoders = {"vector": numba_v3_decode.decode}
    try:
        from csp.codecs.lossless import c_codec
    except ImportError:  # pragma: no cover - the C extension is optional: compare with the reference
        decoders["reference"] = reference_v3.decode
    else:
        decoders["c"] = c_codec.decode
    for name, fn in decoders.items():
        try:
            out[name] = fn(data)
        except CodecError:
            out[name] = CodecError
    return out


def _assert_same_outcome(data: bytes, what: str) -> bool:
    """The vectorised decoder raises exactly when the C decoder (the reference without C) raises, and
    otherwise returns the same array; returns whether it raised."""
    res = _decode_all(data)
    vec = res.pop("vector")
    for name, other in res.items():
        if other is CodecError or vec is CodecError:
            assert vec is other, f"{what}: vector {'raised' if vec is CodecError else 'decoded'}, {name} did not"
        else:
            np.testing.assert_array_equal(vec, other, err_msg=f"{what}: vector != {name}")
    return vec is CodecError


@pytest.mark.parametrize("name", sorted(p.stem for p in V3_FIXTURES.glob("*.csp")))
def test_vectorised_decoder_golden_fixtures(name: str) -> None:
    from csp.codecs.lossless import numba_v3_decode

    data = (V3_FIXTURES / f"{name}.csp").read_bytes()
    expected = np.load(V3_FIXTURES.parent / f"{name}.npy")
    np.testing.assert_array_equal(numba_v3_decode.decode(data), expected)
    assert not _assert_same_outcome(data, name)


def test_vectorised_decoder_slide_tiles() -> None:
    """240 x 240 crops of a real H&E slide (32 lanes, full and ramp steps, RCT) and a narrow strip."""
    tifffile = pytest.importorskip("tifffile")
    from conftest import shared_file

    from csp.codecs.lossless import numba_v3_decode

    with tifffile.TiffFile(shared_file("svs/CMU-1-Small-Region.svs")) as tf:
        img = tf.pages[0].asarray()
    for y, x, h, w in ((600, 400, 240, 240), (1000, 1200, 240, 240), (300, 900, 77, 45)):
        crop = np.ascontiguousarray(img[y:y + h, x:x + w])
        data = numba_v3.encode(crop)
        np.testing.assert_array_equal(numba_v3_decode.decode(data), crop)
        assert not _assert_same_outcome(data, f"crop {y} {x}")


@st.composite
def _tiles(draw: st.DrawFn) -> np.ndarray:
    """Tiles of 1..70 x 1..140 samples (fewer and exactly 32 lanes, odd sizes, H below 32), 1..5
    channels, uint8/uint16, constant, noisy, gradient or smooth content."""
    h = draw(st.integers(1, 70))
    w = draw(st.sampled_from([1, 2, 3, 5, 17, 31, 63, 64, 65, 66, 97, 128, 131, 140]))
    c = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    kind = draw(st.sampled_from(["constant", "noise", "gradient", "smooth", "ramp", "edges", "counts"]))
    seed = draw(st.integers(0, 2**16))
    if kind == "constant":
        value = draw(st.integers(0, int(np.iinfo(dtype).max)))
        return np.full((h, w, c), value, dtype)
    if kind == "gradient":
        yy, xx = np.mgrid[0:h, 0:w]
        img = (yy[..., None] * 7 + xx[..., None] * 3 + 50 * np.arange(c)) % (int(np.iinfo(dtype).max) + 1)
        return img.astype(dtype)
    return _tile((h, w, c), dtype, kind, seed)


@settings(max_examples=60, deadline=None)
@given(_tiles())
def test_vectorised_decoder_equals_c_and_reference(tile: np.ndarray) -> None:
    from csp.codecs.lossless import numba_v3_decode

    data = numba_v3.encode(tile)
    np.testing.assert_array_equal(numba_v3_decode.decode(data), tile)
    assert not _assert_same_outcome(data, f"{tile.shape} {tile.dtype}")
    if tile.size <= 1200:  # the pure-Python reference defines the stream (slow: small tiles only)
        np.testing.assert_array_equal(reference_v3.decode(data), tile)


def _damaged_cases() -> list[tuple[str, bytes]]:
    """Streams of a 32-lane tile and a 9-lane tile, truncated and with flipped payload bits."""
    cases = []
    rng = np.random.default_rng(5)
    for shape, dtype, pattern in (((40, 96, 3), np.uint8, "smooth"), ((23, 18, 2), np.uint16, "noise")):
        tile = _tile(shape, dtype, pattern, 11)
        data = numba_v3.encode(tile)
        start = reference.HEADER.size + 4 * shape[2] + 12
        for n in sorted(set(rng.integers(start, len(data), 40).tolist()) | {len(data) - 1, len(data) - 2}):
            cases.append((f"{shape} cut {n}", data[:n]))
        for pos in rng.integers(start, len(data), 120).tolist():
            bad = bytearray(data)
            bad[pos] ^= 1 << int(rng.integers(0, 8))
            cases.append((f"{shape} flip {pos}", bytes(bad)))
    return cases


def test_vectorised_decoder_damaged_streams_match_c() -> None:
    """Truncated streams raise; a flipped bit makes the vectorised decoder raise exactly when the C
    decoder raises (and otherwise decode the same array)."""
    raised = 0
    cases = _damaged_cases()
    for what, data in cases:
        did = _assert_same_outcome(data, what)
        raised += did
        if "cut" in what:
            assert did, what
    assert raised >= len(cases) // 2


def test_vectorised_decoder_random_words_never_crash() -> None:
    """Valid headers and tables with random lane states and words (32 lanes): CodecError or a tile,
    the same outcome as the C decoder, and no read outside the stream."""
    tile = _tile((36, 80, 3), np.uint8, "smooth", 2)
    data = numba_v3.encode(tile)
    c = tile.shape[2]
    hlen = reference.HEADER.size + 4 * c + 8
    tl = struct.unpack_from("<I", data, hlen - 8)[0]
    rng = np.random.default_rng(3)
    for nwords in (0, 1, 31, 32, 33, 500, 5000):
        body = rng.integers(0, 256, 128 + 2 * nwords, dtype=np.uint8)
        body[3:128:4] |= 1  # lane states >= 2^16
        buf = bytearray(data[:hlen + 4 + tl] + body.tobytes())
        struct.pack_into("<I", buf, hlen - 4, 2 * nwords)
        _assert_same_outcome(_with_crc(buf, c), f"{nwords} random words")


# ------------------------------------------------------------------------------ vectorised backward pass
def _scalar_backward(xs: list[int], recs: np.ndarray, h: int, w: int) -> list[int]:
    """The backward pass of ``docs/codec.md`` §8 written plainly: lane k codes rows k, k + L, ... and
    is at step t on sample t - 2k of its sequence; per step (last to first) phase B then phase A over
    lanes L-1 .. 0, each flushed word pushed in front of the stream. Updates xs; returns the words."""
    nl = numba_v3.lane_count(w)
    lanes = []  # per lane: the raster indices of its sequence
    for k in range(min(nl, h)):
        lanes.append([y * w + x for y in range(k, h, nl) for x in range(w)])
    nsteps = max(2 * k + len(seq) for k, seq in enumerate(lanes))
    out: list[int] = []
    for t in range(nsteps - 1, -1, -1):
        for phase in "BA":
            pushed = []
            for k in range(len(lanes) - 1, -1, -1):
                j = t - 2 * k
                if not 0 <= j < len(lanes[k]):
                    continue
                r, x = int(recs[lanes[k][j]]), xs[k]
                nbits, fq, start, bits = (r >> 24) & 0xFF, r & 0xFFF, (r >> 12) & 0xFFF, r >> 32
                if phase == "B":
                    if x >= 1 << (32 - nbits):
                        pushed.append(x & 0xFFFF)
                        x >>= 16
                    xs[k] = (x << nbits) | bits
                else:
                    if x >= fq << (32 - reference.PROB_BITS):
                        pushed.append(x & 0xFFFF)
                        x >>= 16
                    xs[k] = ((x // fq) << reference.PROB_BITS) + x % fq + start
            out = pushed[::-1] + out
    return out


@pytest.mark.parametrize("h, w", [(70, 64), (37, 20), (3, 90), (9, 3)])
def test_vectorised_backward_pass_matches_scalar_model(h: int, w: int) -> None:
    """Random records (full-probability tokens, 16 raw bits, states near 2**32) on planes with 32 and
    fewer lanes and lanes without rows: the gathered records, the compress-stored words and the
    states equal the plain model's, the quotients of the float reciprocal included."""
    rng = np.random.default_rng(h * w)
    n = h * w
    total = 1 << reference.PROB_BITS
    fq = rng.integers(1, total + 1, n)
    fq[rng.random(n) < 0.1] = total
    fq[rng.random(n) < 0.05] = 1
    start = (rng.random(n) * (total - fq + 1)).astype(np.int64)
    nbits = rng.integers(0, 17, n)
    raw = rng.integers(0, 1 << 16, n) & ((1 << nbits) - 1)
    recs = (fq | (start << 12) | (nbits << 24) | (raw << 32)).astype(np.int64)
    xs0 = rng.integers(reference.RANS_L, 1 << 32, numba_v3.LANES, dtype=np.uint64)
    xs0[:4] = [reference.RANS_L, (1 << 32) - 1, (1 << 32) - 2, 1 << 31]
    xs = xs0.astype(np.uint32)
    words = np.zeros(2 * n + 66, np.uint16)
    wp = numba_v3._rans_backward(recs, h, w, xs, words, words.size)
    want_xs = [int(v) for v in xs0]
    want = _scalar_backward(want_xs, recs, h, w)
    assert wp == words.size - len(want) and len(want) > n // 2
    assert words[wp:].tolist() == want
    assert xs.tolist() == want_xs
    small = len(want) + 63  # the pass needs 64 free entries below its last word
    assert numba_v3._rans_backward(recs, h, w, xs0.astype(np.uint32), words[:small], small) == -1
    assert numba_v3._rans_backward(recs, h, w, xs0.astype(np.uint32), words[:small + 1], small + 1) == 64


# ------------------------------------------------------------------------------ encoder model fast paths
def test_joint_context_classes_give_both_modes_contexts() -> None:
    """Each (activity, level) pair's joint class (mode-0 context, level class) maps to the pair's mode-0
    and mode-1 contexts of the reference's tables, for every activity 0..255 and level 0..31: the
    joint histogram folds into both modes' histograms exactly."""
    from csp.codecs.lossless import numba_model as nm

    jlut, map0, map1 = nm._joint_tables(nm._ACT0, nm._ACT1, nm._LVL)
    acts, lvls = np.meshgrid(np.arange(256), np.arange(32), indexing="ij")
    joint = jlut[acts * 32 + lvls] // reference.NTOK
    assert joint.min() >= 0 and joint.max() < nm._NJ
    np.testing.assert_array_equal(map0[joint], reference.ACT0_LUT[acts])
    np.testing.assert_array_equal(map1[joint], reference.ACT1_LUT[acts] * (len(reference.LVL_THR) + 1)
                                  + reference.LVL_LUT[lvls])
    assert len(np.unique(joint)) == nm._NJ  # every class occurs: none of the folded rows is spurious


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_planes_filled_in_one_pass_equal_plane_by_plane(dtype: type, channels: int) -> None:
    """_fill_planes (all planes in one pass over the pixels) writes _fill_plane's padded planes under every
    colour transform, on extremes (0/max checkerboards, noise) of both sample widths."""
    from csp.codecs.lossless import numba_model as nm

    maxv = int(np.iinfo(dtype).max)
    for pattern, shape in (("edges", (9, 13)), ("noise", (7, 5)), ("noise", (1, 1)), ("smooth", (4, 30))):
        tile = _tile((*shape, channels), dtype, pattern, channels)
        for xform in range(6 if channels == 3 else 1):
            h, w = shape
            P3 = np.full((channels, h + 1, w + 2), 7, np.int32)
            nm._fill_planes(tile, xform, P3)
            P = np.zeros((h + 1, w + 2), np.int32)
            for pl in range(channels):
                nm._fill_plane(tile, xform, pl, P)
                np.testing.assert_array_equal(P3[pl], P, err_msg=f"{pattern} {xform} {pl}")
                lo, hi = nm._plane_range(xform, pl, maxv)
                assert lo <= P3[pl, 1:, 1:w + 1].min() and P3[pl, 1:, 1:w + 1].max() <= hi


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_plane_model_joint_bins_match_reference_contexts(dtype: type) -> None:
    """The plane model's per-sample joint bins (joint class * NTOK + token) with its map of the chosen
    mode give the reference model's tokens and contexts, its residual codes (or with raw=True their raw
    bits, which the version-3 records take), and the v3 encoder its bytes, on every colour transform of
    noisy, checkerboard and smooth tiles (the joint histogram path of both context modes)."""
    from csp.codecs.lossless import numba_model as nm

    maxv = int(np.iinfo(dtype).max)
    jlut, map0, map1 = nm._joint_tables(nm._ACT0, nm._ACT1, nm._LVL)
    modes = set()
    for pattern, shape in (("noise", (12, 17)), ("edges", (10, 21)), ("smooth", (16, 24)), ("counts", (9, 9))):
        tile = _tile((*shape, 3), dtype, pattern, 3)
        h, w = shape
        for xform in range(6):
            planes = reference.forward_transform(tile, xform)
            E = np.zeros((h + 1, w + 2), np.int32)
            E0 = np.zeros((h + 1, w + 2), np.int32)
            P3 = np.zeros((3, h + 1, w + 2), np.int32)
            nm._fill_planes(tile, xform, P3)
            cross = None
            for pl in range(3):
                lo, hi = nm._plane_range(xform, pl, maxv)
                use_x = xform >= 1 and pl > 0
                ref = reference.analyze_plane(planes[pl], lo, hi, maxv > 255, cross if use_x else None)
                tok, jix = np.empty(h * w, np.uint8), np.empty(h * w, np.int16)
                uu, cmap = np.empty(h * w, np.int32), np.empty(nm._NJ, np.int64)
                freq = np.zeros((32, reference.NTOK), np.int64)
                start = np.zeros((32, reference.NTOK), np.int64)
                tbuf, desc = np.zeros(4096, np.uint8), np.zeros(5, np.int64)
                u, t = ref.u.ravel().astype(np.int64), ref.tok.ravel().astype(np.int64)
                nbits = np.where(t >= 16, (t - 16) // 4 + 2, 0)
                for raw, want in ((False, u), (True, u & ((1 << nbits) - 1))):  # codes, or their raw bits
                    tl = nm._plane_model(P3[pl], h, w, lo, hi, maxv > 255, jlut, map0, map1,
                                         E0 if pl == 0 else E, E0, use_x, tok, jix, uu, tbuf, freq, start, desc,
                                         cmap, raw)
                    assert tuple(int(v) for v in desc[:4]) == (ref.kind, ref.mode, ref.ashift, ref.lshift)
                    assert tbuf[:tl].tobytes() == ref.table_bytes
                    np.testing.assert_array_equal(jix % reference.NTOK, t)
                    np.testing.assert_array_equal(tok, t)
                    np.testing.assert_array_equal(cmap[jix // reference.NTOK], ref.ctx.ravel())
                    np.testing.assert_array_equal(uu, want)
                modes.add(ref.mode)
                if pl == 0:
                    cross = ref.abs_e
        assert numba_v3.encode(tile) == reference_v3.encode(tile)
    assert modes == {0, 1}
