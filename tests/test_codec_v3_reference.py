"""Reference implementation of bitstream version 3 of the CSP lossless codec (docs/codec.md §8).

Round trips, version 1's model decisions, the wavefront schedule, the layout and sizes, damaged streams
and the golden version-3 streams ``tests/fixtures/codec/v3/*.csp``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_lossless_codec import PATTERNS, make_tile  # the shared synthetic test tiles

from csp.codecs.lossless import reference as v1
from csp.codecs.lossless import reference_v3 as v3
from csp.errors import CodecError

FIXTURES = Path(__file__).parent / "fixtures" / "codec"
GOLDEN_V3 = sorted(p.stem for p in (FIXTURES / "v3").glob("*.csp"))

def he_like(h: int, w: int, seed: int = 3) -> np.ndarray:
    """Smooth pink/purple uint8 RGB texture with noise (H&E-like: RCT and context modelling matter)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 40 * np.sin(yy / 5.0) * np.cos(xx / 7.0)
    shade = base + rng.normal(0, 4, (h, w))  # stain density: shared by the channels
    rgb = np.stack([200 + shade, 140 + 1.4 * shade, 190 + 0.6 * shade], axis=-1) + rng.normal(0, 1, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _roundtrip(tile: np.ndarray) -> bytes:
    data = v3.encode(tile)
    assert data[4] == 3
    back = v3.decode(data)
    assert back.shape == v1.check_tile(tile).shape
    assert back.dtype == tile.dtype
    np.testing.assert_array_equal(back.reshape(tile.shape), tile)
    return data


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("shape", [
    (1, 1, 1), (1, 7, 2), (6, 1, 3), (2, 2, 1), (3, 3, 4), (2, 5, 3),  # one lane (W < 4)
    (13, 9, 2),  # W < 32: 4 lanes
    (9, 40, 1),  # H < 16 (20 lanes)
    (21, 34, 3),  # H not a multiple of the lane count
    (13, 70, 1),  # 32 lanes, H < 32
    (35, 64, 2),  # 32 lanes, H not a multiple of 32
    (32, 32, 3),
])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_round_trip_shapes(shape: tuple[int, int, int], dtype: type) -> None:
    for pattern in ("noise", "gradient"):
        _roundtrip(make_tile(shape, dtype, pattern, sum(shape)))


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_round_trip_patterns_rgb(pattern: str, dtype: type) -> None:
    tile = make_tile((19, 24, 3), dtype, pattern, 11)
    data = _roundtrip(tile)
    assert v3.parse_header(data).xform == v1.choose_transform(tile)


def test_round_trip_rct_and_two_dimensional_input() -> None:
    tile = he_like(20, 26)
    data = _roundtrip(tile)
    assert v3.parse_header(data).xform >= v1.XFORM_RCT  # the chroma planes are coded under RCT
    gray = tile[:, :, 1]
    assert v3.decode(v3.encode(gray)).shape == (20, 26, 1)
    np.testing.assert_array_equal(v3.decode(v3.encode(gray))[:, :, 0], gray)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 20), st.integers(1, 40), st.integers(1, 4), st.sampled_from([np.uint8, np.uint16]),
       st.sampled_from(PATTERNS), st.integers(0, 2**31))
def test_round_trip_property(h: int, w: int, c: int, dtype: type, pattern: str, seed: int) -> None:
    _roundtrip(make_tile((h, w, c), dtype, pattern, seed))


def test_unsupported_input_raises() -> None:
    for bad in (np.zeros((4, 4, 1), np.int16), np.zeros((0, 4, 1), np.uint8), np.zeros(5, np.uint8)):
        with pytest.raises(CodecError):
            v3.encode(bad)


# ------------------------------------------------------------------------------- version 1's model
@pytest.mark.parametrize("name,tile", [
    ("he", he_like(24, 30)),
    ("u16_lowvalues", make_tile((17, 21, 2), np.uint16, "lowvalues", 5)),
    ("u16_rgb_noise", make_tile((9, 12, 3), np.uint16, "noise", 6)),
    ("u8_gradient", make_tile((11, 35, 1), np.uint8, "gradient", 7)),
    ("u8_edges4", make_tile((10, 10, 4), np.uint8, "edges", 8)),
])
def test_model_decisions_and_tables_equal_version_1(name: str, tile: np.ndarray) -> None:
    data1, data3 = v1.encode(tile), v3.encode(tile)
    shape, dtype, xform, planes = v1.parse_header(data1)
    hd = v3.parse_header(data3)
    assert (hd.shape, hd.dtype, hd.xform) == (shape, dtype, xform)
    assert hd.descs == [tuple(p[:4]) for p in planes]
    # the tables of each plane are version 1's table bytes, concatenated
    pos, tables1 = v1.HEADER.size + v1.PLANE.size * shape[2] + 4, []
    for p in planes:
        tables1.append(data1[pos:pos + p[4]])
        pos += sum(p[4:])
    assert data3[hd.table_pos:hd.table_pos + hd.table_len] == b"".join(tables1)


@pytest.mark.parametrize("source", ["he_like_64", "he_rgb_u8", "fluo_u16_2ch"])
def test_layout_and_size_against_version_1(source: str) -> None:
    tile = he_like(64, 64) if source == "he_like_64" else np.load(FIXTURES / f"{source}.npy")
    data1, data3 = v1.encode(tile), v3.encode(tile)
    (_, _, c), _, _, planes = v1.parse_header(data1)
    hd = v3.parse_header(data3)
    assert len(data3) == 20 + 4 * c + 12 + hd.table_len + 4 * v3.LANES + hd.words_len
    assert hd.words_pos + hd.words_len == len(data3)
    # entropy-coded payload: version 1's words and raw bits (without its 4 * C final states and pads)
    payload1 = sum(sum(p[5::2]) - 4 * v1.N_STREAMS + sum(p[6::2]) for p in planes)
    assert -(4 * c + 2 * v3.LANES + 2) <= hd.words_len - payload1 <= 2 * 4 * c + 2
    # fixed overheads: version 1 has 40-byte descriptors and 4 x 4-byte final states per plane, version 3
    # 4-byte descriptors, 8 bytes of lengths and 32 x 4-byte lane states per tile
    fixed1, fixed3 = 20 + 40 * c + 4 + 16 * c, 20 + 4 * c + 12 + 4 * v3.LANES
    assert abs((len(data3) - fixed3 - hd.table_len) - (len(data1) - fixed1 - hd.table_len)) <= 2 * v3.LANES + 8 * c
    if source != "fluo_u16_2ch":  # RGB tiles of 1440+ pixels: smaller (64 x 64 H&E-like: 6426 vs 6468 bytes)
        assert len(data3) < len(data1)


# ------------------------------------------------------------------------------------ rANS primitives
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tokens_and_raw_bits_share_one_state(seed: int) -> None:
    """Tokens and raw-bit groups of 0..16 bits (16 = the 19-bit residuals of uint16 chroma) interleaved
    in one state decode back in order; the state ends at 2^16 with every word used."""
    rng = np.random.default_rng(seed)
    freqs, starts = [2000, 40, 8], [0, 2000, 2040]
    symbols: list[tuple[str, int, int]] = []
    for _ in range(400):
        if rng.random() < 0.5:
            symbols.append(("token", int(rng.choice(3, p=[0.9, 0.07, 0.03])), 0))
        else:
            n = int(rng.integers(0, 17))
            symbols.append(("bits", int(rng.integers(0, 1 << 20)) if n else 0, n))
    x, pushed = v3.RANS_L, []
    for kind, value, n in reversed(symbols):
        x = (v3.put_token(x, freqs[value], starts[value], pushed) if kind == "token"
             else v3.put_bits(x, value, n, pushed))
        assert v3.RANS_L <= x < 1 << 32
    reader = v3.WordReader(tuple(reversed(pushed)))
    for kind, value, n in symbols:
        if kind == "token":
            slot = x & (v3.TOTAL - 1)
            s = 0 if slot < 2000 else (1 if slot < 2040 else 2)
            assert s == value
            x = reader.renorm(freqs[s] * (x >> v3.PROB_BITS) + slot - starts[s])
        else:
            bits, x = v3.get_bits(x, n, reader)
            assert bits == value & ((1 << n) - 1)
    assert x == v3.RANS_L and reader.pos == len(pushed)


def test_raw_bits_are_coded_exactly() -> None:
    rng = np.random.default_rng(4)
    groups = [(int(rng.integers(0, 1 << 16)), int(rng.integers(1, 17))) for _ in range(300)]
    x, pushed = v3.RANS_L, []
    for value, n in reversed(groups):
        x = v3.put_bits(x, value, n, pushed)
    # every raw bit costs exactly one bit: 16 per pushed word plus the growth of the final state
    assert 16 * len(pushed) + x.bit_length() - v3.RANS_L.bit_length() == sum(n for _, n in groups)


# ------------------------------------------------------------------------------------ wavefront
@pytest.mark.parametrize("w", [1, 2, 3, 4, 5, 7, 8, 31, 32, 33, 63, 64, 65, 70])
@pytest.mark.parametrize("h", [1, 2, 5, 16, 17, 33, 35])
def test_schedule_is_a_valid_wavefront(h: int, w: int) -> None:
    steps = v3.schedule(h, w)
    n_lanes = v3.lane_count(w)
    when: dict[tuple[int, int], int] = {}
    for t, step in enumerate(steps):
        assert step, "no empty steps"
        assert [k for k, _, _ in step] == sorted({k for k, _, _ in step})
        for k, y, x in step:
            assert y % n_lanes == k and (y, x) not in when
            when[(y, x)] = t
    assert len(when) == h * w
    for (y, x), t in when.items():
        if x > 0:
            assert when[(y, x - 1)] < t
        if y > 0:  # above, above-left / column -1 pad (y-1, 0), above-right / column W pad (y-1, W-1)
            for xx in {max(x - 1, 0), x, min(x + 1, w - 1)}:
                assert when[(y - 1, xx)] < t


# ------------------------------------------------------------------------------------ golden streams
def test_golden_v3_fixtures_present() -> None:
    assert GOLDEN_V3 == sorted(p.stem for p in FIXTURES.glob("*.npy"))
    assert len(GOLDEN_V3) >= 5


@pytest.mark.parametrize("name", GOLDEN_V3)
def test_golden_v3_fixture_decodes_and_reencodes(name: str) -> None:
    data = (FIXTURES / "v3" / f"{name}.csp").read_bytes()
    expected = np.load(FIXTURES / f"{name}.npy")
    assert data[4] == 3
    np.testing.assert_array_equal(v3.decode(data), expected)
    assert v3.encode(expected) == data  # bitstream version 3 is frozen


# ------------------------------------------------------------------------------------ damaged streams
def _regions(data: bytes) -> dict[str, range]:
    hd = v3.parse_header(data)
    c = hd.shape[2]
    d0 = v1.HEADER.size
    return {
        "header": range(d0), "descriptors": range(d0, d0 + 4 * c), "lengths": range(d0 + 4 * c, d0 + 4 * c + 8),
        "crc": range(hd.table_pos - 4, hd.table_pos), "tables": range(hd.table_pos, hd.table_pos + hd.table_len),
        "states": range(hd.words_pos - 4 * v3.LANES, hd.words_pos), "words": range(hd.words_pos, len(data)),
    }


@pytest.mark.parametrize("name", ["he_rgb_u8", "fluo_u16_2ch", "noise_u8_6ch"])
def test_bit_flips_in_every_region_are_detected(name: str) -> None:
    """Flips in the CRC-covered part are always rejected. In the payload a flip may go unnoticed where
    it only changes raw residual bits (they ride in the rANS state, like version 1's raw-bit stream) or
    table padding; then the stream must still decode to a tile of the right shape."""
    data = (FIXTURES / "v3" / f"{name}.csp").read_bytes()
    expected = np.load(FIXTURES / f"{name}.npy")
    rng = np.random.default_rng(1)
    for region, span in _regions(data).items():
        picks = {span[0], span[-1]} | {int(i) for i in rng.choice(span, size=min(6, len(span)), replace=False)}
        detected = 0
        for i in sorted(picks):
            for bit in (0, 3, 7):
                bad = bytearray(data)
                bad[i] ^= 1 << bit
                try:
                    back = v3.decode(bytes(bad))
                except CodecError:
                    detected += 1
                    continue
                assert region in ("tables", "states", "words"), f"flip at {i} in the {region} accepted"
                assert back.shape == expected.shape and back.dtype == expected.dtype
        assert detected >= len(picks), f"too few flips detected in the {region}"


@pytest.mark.parametrize("name", ["he_rgb_u8", "gray_u8_gradient", "rgb_u16_chroma"])
def test_truncated_and_extended_streams_are_rejected(name: str) -> None:
    data = (FIXTURES / "v3" / f"{name}.csp").read_bytes()
    for n in range(len(data)):  # the header check rejects every truncation before decoding
        with pytest.raises(CodecError):
            v3.parse_header(data[:n])
    for n in (0, 3, 20, 43, len(data) // 2, len(data) - 2, len(data) - 1):
        with pytest.raises(CodecError):
            v3.decode(data[:n])
    for extra in (b"\0", b"\0\0", b"\xff" * 5):
        with pytest.raises(CodecError, match="bytes"):
            v3.decode(data + extra)


def _recrc(bad: bytearray) -> bytes:
    c = struct.unpack_from("<H", bad, 16)[0]
    n = v1.HEADER.size + 4 * c + 8
    struct.pack_into("<I", bad, n, zlib.crc32(bytes(bad[:n])))
    return bytes(bad)


def test_header_fields_are_validated() -> None:
    data = (FIXTURES / "v3" / "he_rgb_u8.csp").read_bytes()
    hd = v3.parse_header(data)

    def patched(pos: int, fmt: str, value: int, fix_crc: bool = True) -> bytes:
        bad = bytearray(data)
        struct.pack_into(fmt, bad, pos, value)
        return _recrc(bad) if fix_crc else bytes(bad)

    cases = {
        "magic": (b"JUNK" + data[4:], "magic"),
        "version 1": (patched(4, "<B", 1, False), "version"),
        "version 4": (patched(4, "<B", 4, False), "version"),
        "crc": (patched(8, "<I", 41, False), "checksum"),
        "dtype": (patched(5, "<B", 3), "dtype"),
        "transform": (patched(6, "<B", 6), "transform"),
        "reserved 7": (patched(7, "<B", 1), "reserved"),
        "reserved 18": (patched(18, "<H", 1), "reserved"),
        "height": (patched(8, "<I", 41), "rANS|range"),  # the length does not depend on H
        "shape": (patched(8, "<I", 1 << 28), "shape"),  # H * W * C >= 2^32
        "predictor": (patched(20, "<B", 5), "descriptor"),
        "mode": (patched(21, "<B", 2), "descriptor"),
        "ashift": (patched(22, "<B", 16), "descriptor"),
        "table length": (patched(32, "<I", hd.table_len + 2), "bytes"),
        "odd words": (patched(36, "<I", hd.words_len + 1), "odd"),
        "lane state": (patched(hd.table_pos + hd.table_len + 4 * 7, "<I", 0xFFFF), "lane state"),
    }
    for what, (bad, match) in cases.items():
        with pytest.raises(CodecError, match=match):
            v3.decode(bad)
            pytest.fail(f"{what}: accepted")
    gray = (FIXTURES / "v3" / "gray_u8_gradient.csp").read_bytes()
    bad = bytearray(gray)
    bad[6] = 1  # RCT needs three channels
    with pytest.raises(CodecError, match="transform"):
        v3.decode(_recrc(bad))


def test_word_stream_consistency_is_checked() -> None:
    data = (FIXTURES / "v3" / "fluo_u16_2ch.csp").read_bytes()
    hd = v3.parse_header(data)
    # two words fewer (length fields kept consistent): the decoder runs out of words or ends off 2^16
    bad = bytearray(data[:-4])
    struct.pack_into("<I", bad, v1.HEADER.size + 4 * hd.shape[2] + 4, hd.words_len - 4)
    with pytest.raises(CodecError, match="rANS"):
        v3.decode(_recrc(bad))
    # two extra words: unused at the end
    bad = bytearray(data + b"\x01\x00\x02\x00")
    struct.pack_into("<I", bad, v1.HEADER.size + 4 * hd.shape[2] + 4, hd.words_len + 4)
    with pytest.raises(CodecError, match="rANS"):
        v3.decode(_recrc(bad))
