"""The CSP lossless pixel codec: C, Numba and the NumPy reference agree, round trip, reject damage."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csp.codecs import lossless
from csp.codecs.lossless import numba_codec, reference
from csp.errors import CodecError

FIXTURES = Path(__file__).parent / "fixtures" / "codec"
REPO = Path(__file__).resolve().parent.parent
IMPLS = lossless.implementations()
FAST = {k: v for k, v in IMPLS.items() if k != "reference"}
needs_c = pytest.mark.skipif("c" not in IMPLS, reason="C extension csp.native._cspcodec not built")

PATTERNS = ("constant", "noise", "gradient", "edges", "lowvalues")


def make_tile(shape: tuple[int, int, int], dtype: type, pattern: str, seed: int) -> np.ndarray:
    """A synthetic tile of one of the test patterns."""
    rng = np.random.default_rng(seed)
    maxv = np.iinfo(dtype).max
    h, w, c = shape
    if pattern == "constant":
        return np.full(shape, rng.integers(0, maxv + 1), dtype)
    if pattern == "noise":
        return rng.integers(0, maxv + 1, shape).astype(dtype)
    if pattern == "gradient":
        g = np.arange(h)[:, None, None] * 3 + np.arange(w)[None, :, None] * 5 + np.arange(c) * 11
        return (g % (maxv + 1)).astype(dtype)
    if pattern == "edges":  # extremes side by side: maximal residuals
        m = ((np.arange(h)[:, None, None] // 2 + np.arange(w)[None, :, None] // 3 + np.arange(c)) % 2)
        return np.where(m == 1, maxv, 0).astype(dtype)
    return rng.poisson(2.0, shape).astype(dtype)  # fluorescence-like, near zero


tile_args = st.tuples(
    st.integers(1, 300), st.integers(1, 257), st.integers(1, 6), st.sampled_from([np.uint8, np.uint16]),
    st.sampled_from(PATTERNS), st.integers(0, 2**31))
small_tile_args = st.tuples(
    st.integers(1, 24), st.integers(1, 24), st.integers(1, 4), st.sampled_from([np.uint8, np.uint16]),
    st.sampled_from(PATTERNS), st.integers(0, 2**31))

FAST_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _roundtrip(impl, tile: np.ndarray, version: int = 1) -> bytes:
    data = impl.encode(tile, version)
    back = impl.decode(data)
    assert back.shape == tile.shape and back.dtype == tile.dtype
    np.testing.assert_array_equal(back, tile)
    return data


@pytest.mark.parametrize("version", [1, 2, 3])
@FAST_SETTINGS
@given(tile_args)
def test_fast_implementations_round_trip_and_agree(version: int, args) -> None:
    h, w, c, dtype, pattern, seed = args
    tile = make_tile((h, w, c), dtype, pattern, seed)
    streams = {name: _roundtrip(impl, tile, version) for name, impl in FAST.items()}
    assert all(d[4] == version for d in streams.values())
    assert len(set(streams.values())) == 1, "C and Numba encoders must produce identical bytes"


@pytest.mark.parametrize("version", [1, 2, 3])
@settings(max_examples=20, deadline=None)
@given(small_tile_args)
def test_reference_round_trip_and_cross_decoding(version: int, args) -> None:
    h, w, c, dtype, pattern, seed = args
    tile = make_tile((h, w, c), dtype, pattern, seed)
    streams = {name: impl.encode(tile, version) for name, impl in IMPLS.items()}
    assert len(set(streams.values())) == 1, "all encoders must produce identical bytes"
    for enc_name, data in streams.items():
        for dec_name, impl in IMPLS.items():
            back = impl.decode(data)
            assert back.dtype == tile.dtype, (enc_name, dec_name)
            np.testing.assert_array_equal(back, tile, err_msg=f"{enc_name} -> {dec_name}")


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("version", [1, 2, 3])
def test_cross_decoding_full_tile(pattern: str, dtype: type, version: int) -> None:
    tile = make_tile((240, 240, 3), dtype, pattern, 7)
    for enc_name, enc in FAST.items():
        data = enc.encode(tile, version)
        for dec_name, dec in FAST.items():
            np.testing.assert_array_equal(dec.decode(data), tile, err_msg=f"{enc_name} -> {dec_name}")
    # the reference decodes a fast encoder's stream of a smaller crop (it is slow) and writes the same bytes
    crop = np.ascontiguousarray(tile[:40, :33])
    data = next(iter(FAST.values())).encode(crop, version)
    np.testing.assert_array_equal(reference.decode(data), crop)
    assert reference.encode(crop, version) == data


wide_tile_args = st.tuples(
    st.integers(1, 200), st.integers(64, 300), st.integers(1, 4), st.sampled_from([np.uint8, np.uint16]),
    st.sampled_from(PATTERNS), st.integers(0, 2**31))


@needs_c
@FAST_SETTINGS
@given(wide_tile_args, st.integers(0, 10**6), st.integers(0, 7))
def test_simd_paths_equal_scalar_paths(args, where: int, bit: int) -> None:
    """The AVX-512 paths of the C codec give exactly what the portable scalar paths give: the encoders'
    row kernels (bitstreams 1, 2 and 3: same bytes) and the decoder (planes of 32 lanes, W >= 64; also
    its variants for CPUs without VBMI/VBMI2 and its AVX2 kernel), on intact streams and on damaged ones
    (the same tile or all an error)."""
    from csp.codecs.lossless import c_codec

    if not c_codec.SIMD:
        pytest.skip("this CPU has no AVX-512: both paths are the scalar path")
    h, w, c, dtype, pattern, seed = args
    tile = make_tile((h, w, c), dtype, pattern, seed)
    data = c_codec.encode(tile, 3)
    assert c_codec.encode(tile, 3, simd=False) == data
    assert c_codec.encode(tile, 1, simd=False) == c_codec.encode(tile, 1)
    assert c_codec.encode(tile, 2, simd=False) == c_codec.encode(tile, 2)
    paths: list[bool | str] = [True, False] + (["avx512bw"] if c_codec.SIMD_BW else []) + (["avx2"] if c_codec.SIMD_AVX2 else [])
    for simd in paths:
        np.testing.assert_array_equal(c_codec.decode(data, simd=simd), tile)
    i = 40 + where % (len(data) - 40)
    bad = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]
    results = []
    for simd in paths:
        try:
            results.append(c_codec.decode(bad, simd=simd))
        except CodecError as exc:
            results.append(str(exc))
    if any(isinstance(r, str) for r in results):
        assert all(isinstance(r, str) for r in results), results
    else:
        for r in results[1:]:
            np.testing.assert_array_equal(results[0], r)


@pytest.mark.parametrize("pattern", ["edges", "noise", "gradient"])
def test_v2_wide_rows_and_channel_groups(pattern: str) -> None:
    """Rows over 1024 samples take the C decoder's clamped reconstruction; 4 and 7 channels mix groups
    of three planes with single planes."""
    for shape, dtype in (((3, 1100, 3), np.uint16), ((5, 9, 4), np.uint8), ((4, 6, 7), np.uint16)):
        tile = make_tile(shape, dtype, pattern, 11)
        streams = {name: _roundtrip(impl, tile, 2) for name, impl in FAST.items()}
        assert len(set(streams.values())) == 1
        data = next(iter(streams.values()))
        rng = np.random.default_rng(3)
        for _ in range(8):  # damaged payloads fail cleanly or decode to a tile of the right shape
            i = int(rng.integers(60, len(data)))
            bad = data[:i] + bytes([data[i] ^ (1 << int(rng.integers(8)))]) + data[i + 1:]
            for impl in FAST.values():
                try:
                    assert impl.decode(bad).shape == tile.shape
                except CodecError:
                    pass


def test_two_dimensional_input_is_one_channel() -> None:
    tile = make_tile((9, 13, 1), np.uint8, "gradient", 1)
    for impl in IMPLS.values():
        np.testing.assert_array_equal(impl.decode(impl.encode(tile[:, :, 0])), tile)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.int16),
                                 np.zeros((2, 2, 2, 2), np.uint8), np.zeros((0, 4, 3), np.uint8)])
def test_unsupported_input_raises(bad: np.ndarray) -> None:
    for impl in IMPLS.values():
        with pytest.raises(CodecError):
            impl.encode(bad)


def test_decode_into_out() -> None:
    tile = make_tile((31, 17, 2), np.uint16, "noise", 3)
    data = lossless.encode(tile)
    out = np.zeros_like(tile)
    assert lossless.decode(data, out) is out
    np.testing.assert_array_equal(out, tile)
    with pytest.raises(CodecError):
        lossless.decode(data, np.zeros((31, 17, 3), np.uint16))
    assert lossless.stream_info(data) == ((31, 17, 2), np.dtype(np.uint16))
    data2 = lossless.encode(tile, version=2)
    assert data2[4] == 2 and lossless.stream_info(data2) == ((31, 17, 2), np.dtype(np.uint16))
    out[...] = 0
    assert lossless.decode(data2, out) is out
    np.testing.assert_array_equal(out, tile)
    with pytest.raises(CodecError, match="version"):
        lossless.encode(tile, version=9)


# ------------------------------------------------------------------------------------- golden streams
GOLDEN = sorted(p.stem for p in FIXTURES.glob("*.csp"))
GOLDEN_V2 = sorted(p.stem for p in (FIXTURES / "v2").glob("*.csp"))
GOLDEN_V3 = sorted(p.stem for p in (FIXTURES / "v3").glob("*.csp"))


def test_golden_fixtures_present() -> None:
    assert len(GOLDEN) >= 5
    assert GOLDEN_V2 == GOLDEN
    assert GOLDEN_V3 == GOLDEN


@pytest.mark.parametrize("name", GOLDEN_V3)
def test_golden_v3_fixture_decodes(name: str) -> None:
    data = (FIXTURES / "v3" / f"{name}.csp").read_bytes()
    expected = np.load(FIXTURES / f"{name}.npy")
    assert data[4] == 3
    for impl_name, impl in IMPLS.items():
        np.testing.assert_array_equal(impl.decode(data), expected, err_msg=impl_name)
        assert impl.encode(expected, 3) == data, impl_name  # bitstream version 3 is frozen
    assert lossless.encode(expected) == data  # the default


@pytest.mark.parametrize("name", GOLDEN_V2)
def test_golden_v2_fixture_decodes(name: str) -> None:
    data = (FIXTURES / "v2" / f"{name}.csp").read_bytes()
    expected = np.load(FIXTURES / f"{name}.npy")
    assert data[4] == 2
    for impl_name, impl in IMPLS.items():
        np.testing.assert_array_equal(impl.decode(data), expected, err_msg=impl_name)
        assert impl.encode(expected, 2) == data, impl_name  # bitstream version 2 is frozen


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_fixture_decodes(name: str) -> None:
    data = (FIXTURES / f"{name}.csp").read_bytes()
    expected = np.load(FIXTURES / f"{name}.npy")
    for impl_name, impl in IMPLS.items():
        np.testing.assert_array_equal(impl.decode(data), expected, err_msg=impl_name)
    # today's encoders still write the same bytes (bitstream version 1 is frozen)
    assert lossless.encode(expected, version=1) == data


# ------------------------------------------------------------------------------------- damaged streams
def _damaged(data: bytes, mode: str, where: int, bit: int) -> bytes:
    if mode == "truncate":
        return data[: where % len(data)]
    if mode == "extend":
        return data + bytes([bit]) * (1 + where % 5)
    i = where % len(data)
    return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(GOLDEN), st.sampled_from(["truncate", "extend", "flip"]), st.integers(0, 10**6),
       st.integers(0, 7), st.sampled_from(["", "v2", "v3"]))
def test_damaged_streams_fail_cleanly(name: str, mode: str, where: int, bit: int, sub: str) -> None:
    data = (FIXTURES / sub / f"{name}.csp").read_bytes()
    expected = np.load(FIXTURES / f"{name}.npy")
    bad = _damaged(data, mode, where, bit)
    for impl_name, impl in IMPLS.items():
        try:
            back = impl.decode(bad)
        except CodecError:
            continue
        # a flip in the entropy-coded payload may go unnoticed only if it still decodes to a valid tile
        assert mode == "flip", f"{impl_name} accepted a {mode}d stream"
        assert back.shape == expected.shape and back.dtype == expected.dtype


def test_header_checksum_and_version_are_checked() -> None:
    data = bytearray((FIXTURES / "he_rgb_u8.csp").read_bytes())
    for impl in IMPLS.values():
        for pos in (8, 12, 16, 20, 24):  # shape, channels, plane descriptor
            bad = bytearray(data)
            bad[pos] ^= 1
            with pytest.raises(CodecError, match="header|truncated|size"):
                impl.decode(bytes(bad))
        bad = bytearray(data)
        bad[4] = 9
        with pytest.raises(CodecError, match="version"):
            impl.decode(bytes(bad))
        with pytest.raises(CodecError, match="magic"):
            impl.decode(b"JUNK" + bytes(data[4:]))
        with pytest.raises(CodecError):
            impl.decode(b"")


def test_forged_huge_shape_is_rejected() -> None:
    import struct
    import zlib

    data = bytearray((FIXTURES / "gray_u8_gradient.csp").read_bytes())
    hlen = reference.HEADER.size + reference.PLANE.size  # one channel
    for h, w in ((0xFFFFFFFF, 0xFFFFFFFF), (1 << 16, 1 << 16), (0, 5)):
        bad = bytearray(data)
        struct.pack_into("<II", bad, 8, h, w)
        struct.pack_into("<I", bad, hlen, zlib.crc32(bytes(bad[:hlen])))  # a valid checksum
        for impl in IMPLS.values():
            with pytest.raises(CodecError, match="shape|header"):
                impl.decode(bytes(bad))


N_VARIANTS = 3 + 6  #: per stream: intact, half, minus its last byte, six single-bit flips


def _stream_variants(tmp_path: Path, streams: list[bytes], rng: np.random.Generator, first_flip: int) -> list[str]:
    """Files of N_VARIANTS variants of every stream (the intact one first; flips at or after first_flip)."""
    files = []
    for j, data in enumerate(streams):
        variants = [data, data[: len(data) // 2], data[:-1]]
        for _ in range(N_VARIANTS - 3):
            i = int(rng.integers(first_flip, len(data)))
            variants.append(data[:i] + bytes([data[i] ^ (1 << int(rng.integers(8)))]) + data[i + 1:])
        for k, v in enumerate(variants):
            p = tmp_path / f"s{j}-{k}.csp"
            p.write_bytes(v)
            files.append(str(p))
    return files


@needs_c
@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("cc") is None,
                    reason="valgrind or a C compiler is not available")
def test_c_decoder_under_valgrind(tmp_path: Path) -> None:
    exe = tmp_path / "harness"
    subprocess.run(["cc", "-O1", "-g", "-std=c99", f"-I{REPO / 'native'}", str(REPO / "native" / "cspcodec.c"),
                    str(REPO / "native" / "csp_decode_harness.c"), "-o", str(exe)], check=True)
    names = [*GOLDEN, *(f"v2/{n}" for n in GOLDEN_V2), *(f"v3/{n}" for n in GOLDEN_V3)]
    streams = [(FIXTURES / f"{name}.csp").read_bytes() for name in names]
    # 32 lanes (the AVX-512 path where the CPU has it; valgrind has not)
    streams.append(lossless.encode(make_tile((70, 96, 3), np.uint8, "gradient", 2), version=3))
    files = _stream_variants(tmp_path, streams, np.random.default_rng(5), 60)
    res = subprocess.run(["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=all",
                          "-q", str(exe), *files], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-4000:]
    codes = [int(line.split()[-1]) for line in res.stdout.splitlines()]
    assert len(codes) == len(files)
    assert codes[::N_VARIANTS] == [0] * len(streams)  # the intact streams decode
    assert any(c < 0 for c in codes)


@needs_c
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_codec_under_address_sanitizer(tmp_path: Path) -> None:
    """The harness built with AddressSanitizer and UBSan runs the paths valgrind cannot (it has no AVX-512):
    on a CPU with AVX-512, the SIMD decoder and encoder kernels, on intact, truncated and damaged streams
    (the sanitizers check ordinary loads and stores; gathers and masked loads stay in bounds by
    construction: table indices are masked, word reads go through a checked tail copy)."""
    exe = tmp_path / "harness-asan"
    res = subprocess.run(["cc", "-O1", "-g", "-std=c99", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                          f"-I{REPO / 'native'}", str(REPO / "native" / "cspcodec.c"),
                          str(REPO / "native" / "csp_decode_harness.c"), "-o", str(exe)],
                         check=False, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"no sanitizer runtime: {res.stderr[-300:]}")
    tiles = [make_tile((96, 240, 3), np.uint8, "noise", 1), make_tile((70, 130, 3), np.uint16, "edges", 2),
             make_tile((64, 64, 1), np.uint8, "gradient", 3)]
    files = _stream_variants(tmp_path, [lossless.encode(t, version=3) for t in tiles], np.random.default_rng(9), 40)
    res = subprocess.run([str(exe), *files], check=False, capture_output=True, text=True, timeout=300,
                         env={"ASAN_OPTIONS": "detect_leaks=1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-4000:]
    codes = [int(line.split()[-1]) for line in res.stdout.splitlines()]
    assert len(codes) == len(files) and codes[::N_VARIANTS] == [0] * len(tiles)


# ------------------------------------------------------------------------------------- integration
def test_threads_decode_concurrently() -> None:
    tiles = [make_tile((64, 64, 3), np.uint8, p, i) for i, p in enumerate(PATTERNS)] * 2
    tiles = tiles + [make_tile((96, 128, 3), np.uint8, p, i) for i, p in enumerate(PATTERNS)]  # v3, 32 lanes
    streams = [lossless.encode(t, version=1 + k // len(PATTERNS)) for k, t in enumerate(tiles)]  # v1, v2, v3
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(20):
            i = (k + _) % len(tiles)
            if not np.array_equal(lossless.decode(streams[i]), tiles[i]):
                errors.append(f"thread {k} tile {i}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_tile_codec_registry() -> None:
    from csp.codecs.tile import get_tile_codec
    from csp.readers.base import TileEncoding

    codec = get_tile_codec(TileEncoding("csp", {}))
    tile = make_tile((32, 24, 4), np.uint16, "gradient", 2)
    data = codec.encode(tile)
    np.testing.assert_array_equal(codec.decode(data, (32, 24, 4), np.uint16), tile)
    edge = codec.decode(codec.encode(tile[:20, :10]), (32, 24, 4), np.uint16)  # cropped edge tile
    np.testing.assert_array_equal(edge[:20, :10], tile[:20, :10])
    assert not edge[20:].any() and not edge[:, 10:].any()
    with pytest.raises(CodecError):
        codec.decode(data, (32, 24, 4), np.uint8)
    with pytest.raises(CodecError):
        codec.decode(data[:-3], (32, 24, 4), np.uint16)
    with pytest.raises(CodecError, match="does not fit"):
        codec.decode(data, (16, 24, 4), np.uint16)
    assert codec.zarr_codecs_json() == [{"name": "csp.lossless", "configuration": {}}]


def test_zarr_round_trip_through_registered_codec() -> None:
    import zarr
    from zarr.registry import get_codec_class

    from csp.codecs.zarr_codecs import LosslessCodec

    assert get_codec_class("csp.lossless") is LosslessCodec
    data = make_tile((100, 90, 3), np.uint8, "gradient", 4)
    store = zarr.storage.MemoryStore()
    arr = zarr.create_array(store, shape=data.shape, chunks=(48, 40, 3), dtype=data.dtype,
                            serializer=LosslessCodec(), compressors=None, fill_value=0)
    arr[...] = data
    reopened = zarr.open_array(store, mode="r")
    assert reopened.metadata.to_dict()["codecs"][0]["name"] == "csp.lossless"
    np.testing.assert_array_equal(reopened[...], data)
    np.testing.assert_array_equal(reopened[10:60, 35:85], data[10:60, 35:85])


def test_numba_fallback_when_extension_is_missing() -> None:
    code = ("import sys; sys.modules['csp.native._cspcodec'] = None\n"
            "import numpy as np\n"
            "from csp.codecs import lossless\n"
            "assert lossless.IMPLEMENTATION == 'numba', lossless.IMPLEMENTATION\n"
            "t = (np.arange(600) % 251).astype(np.uint8).reshape(10, 20, 3)\n"
            "assert (lossless.decode(lossless.encode(t)) == t).all()\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


@needs_c
def test_numba_matches_c_on_slide_tiles() -> None:
    import tifffile
    from conftest import shared_file

    path = shared_file("svs/CMU-1-Small-Region.svs")
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        img = page.asarray()
    tile = np.ascontiguousarray(img[720:960, 480:720])
    data = IMPLS["c"].encode(tile)
    assert numba_codec.encode(tile) == data
    np.testing.assert_array_equal(numba_codec.decode(data), tile)
    assert 8 * len(data) / (240 * 240) < 12  # sanity: clearly compressed


# ----------------------------------------------------------------------------- Numba encoder model
def _stained(shape: tuple[int, int, int], dtype: type, seed: int) -> np.ndarray:
    """Smooth, channel-correlated texture with noise (H&E-like): exercises the RCT variants."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    maxv = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:h, 0:w]
    shade = 0.2 * maxv * np.sin(yy / 3.0 + seed % 7) * np.cos(xx / 4.0) + rng.normal(0, maxv / 60, (h, w))
    gains = 1.0 + 0.4 * np.arange(c)
    img = 0.55 * maxv + shade[..., None] * gains + rng.normal(0, maxv / 250, (h, w, c))
    return np.clip(img, 0, maxv).astype(dtype)


model_tile_args = st.tuples(
    st.integers(1, 24), st.integers(1, 41), st.integers(1, 5), st.sampled_from([np.uint8, np.uint16]),
    st.sampled_from(PATTERNS + ("stained",)), st.integers(0, 2**31), st.sampled_from([np.int32, np.int64]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_tile_args)
def test_numba_model_equals_reference_model(args) -> None:
    """The vectorised Numba model (colour transform, plane fill, predictor errors, tokens, contexts,
    tables) takes the reference's decisions sample by sample, with int32 and int64 plane buffers, and
    the Numba version-1 and version-3 encoders write the reference's bytes."""
    from csp.codecs.lossless import numba_model as nm
    from csp.codecs.lossless import numba_v3, reference_v3

    h, w, c, dtype, pattern, seed, pdt = args
    tile = (_stained((h, w, c), dtype, seed) if pattern == "stained"
            else make_tile((h, w, c), dtype, pattern, seed))
    is16 = dtype == np.uint16
    maxv = 65535 if is16 else 255
    xform = nm._choose_xform(tile, None, maxv)
    assert xform == reference.choose_transform(tile)
    planes = reference.forward_transform(tile, xform)
    P = np.zeros((h + 1, w + 2), pdt)
    E = np.zeros((h + 1, w + 2), pdt)
    E0 = np.zeros((h + 1, w + 2), pdt)
    cross = None
    for pl in range(c):
        nm._fill_plane(tile, xform, pl, P)
        np.testing.assert_array_equal(P[1:, 1:w + 1], planes[pl])
        lo, hi = reference._plane_range(xform, pl, maxv)
        use_x = xform >= 1 and pl > 0
        ref = reference.analyze_plane(planes[pl], lo, hi, is16, cross if use_x else None)
        tok, ctx, uu = np.empty(h * w, np.uint8), np.empty(h * w, np.uint8), np.empty(h * w, np.int64)
        freq, start = np.zeros((32, reference.NTOK), np.int64), np.zeros((32, reference.NTOK), np.int64)
        tbuf, desc = np.zeros(4096, np.uint8), np.zeros(5, np.int64)
        tl = nm._analyze_plane(P, h, w, lo, hi, is16, nm._ACT0, nm._ACT1, nm._LVL, E0 if pl == 0 else E, E0,
                               use_x, tok, ctx, uu, tbuf, freq, start, desc)
        assert tuple(int(v) for v in desc[:4]) == (ref.kind, ref.mode, ref.ashift, ref.lshift)
        assert tbuf[:tl].tobytes() == ref.table_bytes and desc[4] == tl
        np.testing.assert_array_equal(tok.reshape(h, w), ref.tok)
        np.testing.assert_array_equal(ctx.reshape(h, w), ref.ctx)
        np.testing.assert_array_equal(uu.reshape(h, w), ref.u)
        np.testing.assert_array_equal((E0 if pl == 0 else E)[1:, 1:w + 1], ref.abs_e)
        for k, table in enumerate(ref.tables):
            expect = np.zeros(reference.NTOK, np.int64)
            if table is not None:
                expect[:len(table)] = table
            np.testing.assert_array_equal(freq[k], expect)
        if pl == 0:
            cross = ref.abs_e
    assert numba_codec.encode(tile) == reference.encode(tile)
    assert numba_v3.encode(tile) == reference_v3.encode(tile)


@pytest.mark.parametrize("shape", [(2, 4200, 1), (1, 8300, 3)])
def test_numba_encoders_on_rows_wider_than_one_chunk(shape: tuple[int, int, int]) -> None:
    """Rows wider than the model's int32 summing chunk (4096 columns, colour transform choice included)
    give the reference's bytes."""
    from csp.codecs.lossless import numba_v3, reference_v3

    tile = make_tile(shape, np.uint16, "noise", 11)
    assert numba_codec.encode(tile) == reference.encode(tile)
    assert numba_v3.encode(tile) == reference_v3.encode(tile)
