"""Tile codecs: bit-exact decode of real scanner tiles, zarr-python interop, lossless round trips."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import google_crc32c
import imagecodecs
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tifffile.tifffile import jpeg_decode_colorspace

from csp.codecs import PASSTHROUGH_CODECS, TileCodec, can_store, from_config_json, get_tile_codec
from csp.errors import CodecError
from csp.readers.base import TileEncoding
from tests.conftest import shared_file

SLIDES = [
    "svs/CMU-1-Small-Region.svs",
    "svs/small.svs",
    "svs-j2k/tcga-cr-7395-01a-01-ts1.svs",
    "tiff/boxes.tiff",
    "tiff/small_HE_levels.tiff",
]
MISSING = 2**64 - 1


# ---------------------------------------------------------------------------------------- helpers
def page_encoding(page: tifffile.TiffPage) -> TileEncoding:
    """The TileEncoding a reader derives for a TIFF page (as the readers are meant to)."""
    if page.compression in (6, 7):
        cs, ocs = jpeg_decode_colorspace(page.photometric, page.planarconfig, page.extrasamples, page.is_jfif)
        return TileEncoding("jpeg", {"tables": page.jpegtables, "colorspace": cs, "outcolorspace": ocs})
    if page.compression in (33003, 33005, 34712):
        return TileEncoding("j2k", {"colorspace": "ycbcr"} if page.compression == 33003 else {})
    if page.compression in (8, 32946):
        return TileEncoding("tiff_deflate", {"predictor": int(page.predictor)})
    raise AssertionError(f"unexpected compression {page.compression!r}")


def raw_tiles(path: Path, page: tifffile.TiffPage) -> list[bytes]:
    with open(path, "rb") as fh:
        out = []
        for off, n in zip(page.dataoffsets, page.databytecounts, strict=True):
            fh.seek(off)
            out.append(fh.read(n))
        return out


def tile_shape(page: tifffile.TiffPage) -> tuple[int, int, int]:
    return (page.tilelength, page.tilewidth, page.samplesperpixel)


def tiled_pages(rel: str) -> list[tuple[int, tifffile.TiffPage]]:
    tf = tifffile.TiffFile(shared_file(rel))
    return [(i, p) for i, p in enumerate(tf.pages) if p.is_tiled]


# ---------------------------------------------------------------------- real slides, every tile
@pytest.mark.shared
@pytest.mark.parametrize("rel", SLIDES)
def test_decode_equals_tifffile_every_tile(rel):
    path = shared_file(rel)
    with tifffile.TiffFile(path) as tf:
        pages = [p for p in tf.pages if p.is_tiled]
        assert pages
        for page in pages:
            codec = get_tile_codec(page_encoding(page))
            shape = tile_shape(page)
            scratch = np.empty(shape, page.dtype)
            for index, data in enumerate(raw_tiles(path, page)):
                ref, _, _ = page.decode(data, index, jpegtables=page.jpegtables, _fullsize=True)
                ref = ref.reshape(shape)
                assert np.array_equal(codec.decode(data, shape, page.dtype), ref), (rel, page.index, index)
                got = codec.decode(memoryview(data), shape, page.dtype, out=scratch)
                assert got is scratch and np.array_equal(got, ref)


@pytest.mark.shared
@pytest.mark.parametrize("rel", SLIDES)
def test_decoded_level_equals_tifffile_and_openslide(rel):
    """Tiles assembled into a level equal tifffile's page.asarray() and OpenSlide's read_region."""
    openslide = pytest.importorskip("openslide")
    path = shared_file(rel)
    slide = openslide.OpenSlide(str(path))
    with tifffile.TiffFile(path) as tf:
        pages = [p for p in tf.pages if p.is_tiled]
        for level, page in enumerate(pages):
            codec = get_tile_codec(page_encoding(page))
            th, tw, c = tile_shape(page)
            h, w = page.imagelength, page.imagewidth
            across = -(-w // tw)
            img = np.zeros((-(-h // th) * th, across * tw, c), page.dtype)
            for index, data in enumerate(raw_tiles(path, page)):
                r, col = divmod(index, across)
                img[r * th:(r + 1) * th, col * tw:(col + 1) * tw] = codec.decode(data, (th, tw, c), page.dtype)
            img = img[:h, :w]
            assert np.array_equal(img, page.asarray())
            if level < slide.level_count and slide.level_dimensions[level] == (w, h):
                ref = np.asarray(slide.read_region((0, 0), level, (w, h)))[..., :3]
                assert np.array_equal(img, ref), (rel, level)


@pytest.mark.shared
def test_svs_jpeg_strips_decode():
    """Aperio thumbnails are abbreviated-JPEG strips: the same codec decodes them (last strip short)."""
    path = shared_file("svs/CMU-1-Small-Region.svs")
    with tifffile.TiffFile(path) as tf:
        page = next(p for p in tf.pages if not p.is_tiled and p.compression == 7)
        codec = get_tile_codec(page_encoding(page))
        rows = page.rowsperstrip
        full = page.asarray()
        for i, data in enumerate(raw_tiles(path, page)):
            got = codec.decode(data, (rows, page.imagewidth, 3), np.uint8)
            part = full[i * rows:(i + 1) * rows]
            assert np.array_equal(got[:len(part)], part)
            assert not got[len(part):].any()


# -------------------------------------------------------------------------- zarr round trips
def shard_bytes(tiles: dict[tuple[int, int], bytes], sy: int, sx: int) -> bytes:
    """A sharding_indexed shard by hand: tile bytes, (offset, nbytes) <u8 index, crc32c of index."""
    body = bytearray()
    index = np.full((sy, sx, 2), MISSING, dtype="<u8")
    for (r, c), data in sorted(tiles.items()):
        index[r, c] = (len(body), len(data))
        body += data
    raw = index.tobytes()
    return bytes(body) + raw + google_crc32c.value(raw).to_bytes(4, "little")


def write_passthrough_array(root: Path, name: str, page: tifffile.TiffPage, tiles: list[bytes],
                            codec: TileCodec, shard_tiles: int = 3) -> np.ndarray:
    """Create a sharded CSP-style array with zarr, then store the source tiles by hand as shards."""
    import zarr
    from zarr.codecs import TransposeCodec

    th, tw, c = tile_shape(page)
    h, w = page.imagelength, page.imagewidth
    across, down = -(-w // tw), -(-h // th)
    sx, sy = min(shard_tiles, across), min(shard_tiles, down)
    store = zarr.storage.LocalStore(root)
    zarr.create_array(
        store, name=name, shape=(c, h, w), dtype=page.dtype, chunks=(c, th, tw), shards=(c, th * sy, tw * sx),
        filters=[TransposeCodec(order=(1, 2, 0))], serializer=codec.zarr_codecs()[0], compressors=None,
        fill_value=0, dimension_names=("c", "y", "x"))
    for shard_r in range(-(-down // sy)):
        for shard_c in range(-(-across // sx)):
            chunk = {}
            for r in range(sy):
                for col in range(sx):
                    tr, tc = shard_r * sy + r, shard_c * sx + col
                    if tr < down and tc < across:
                        chunk[(r, col)] = tiles[tr * across + tc]
            key = root / name / "c" / "0" / str(shard_r) / str(shard_c)
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(shard_bytes(chunk, sy, sx))
    return page.asarray().transpose(2, 0, 1)


FRESH_READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    assert not any(m == "csp" or m.startswith("csp.") for m in sys.modules), "csp imported too early"
    import zarr
    results = {}
    for name, expected in json.loads(sys.argv[1]).items():
        arr = zarr.open_array(sys.argv[2], path=name, mode="r")
        results[name] = {
            "codec": arr.metadata.codecs[0].to_dict()["configuration"]["codecs"][1]["name"],
            "equal": bool(np.array_equal(arr[...], np.load(expected))),
            "window": bool(np.array_equal(arr[:, 5:300, 7:251], np.load(expected)[:, 5:300, 7:251])),
        }
    results["_entry_point_loaded"] = "csp.codecs.zarr_codecs" in sys.modules
    print(json.dumps(results))
""")


@pytest.mark.shared
def test_zarr_reads_passthrough_shards_via_entry_points(tmp_path):
    """zarr-python, in a fresh process that never imports csp, reads the hand-written passthrough
    shards through the ``zarr.codecs`` entry points, and a zarr-written zstd array."""
    import zarr

    root = tmp_path / "c.zarr"
    zarr.create_group(zarr.storage.LocalStore(root))
    expected: dict[str, str] = {}
    cases = [("jpeg", "svs/CMU-1-Small-Region.svs", 0), ("jpeg_small", "svs/small.svs", 0),
             ("j2k", "svs-j2k/tcga-cr-7395-01a-01-ts1.svs", 2), ("deflate_p2", "tiff/boxes.tiff", 0),
             ("deflate_p1", "tiff/small_HE_levels.tiff", 1)]
    for name, rel, page_index in cases:
        path = shared_file(rel)
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[page_index]
            codec = get_tile_codec(page_encoding(page))
            ref = write_passthrough_array(root, name, page, raw_tiles(path, page), codec)
        np.save(tmp_path / f"{name}.npy", ref)
        expected[name] = str(tmp_path / f"{name}.npy")
        # in-process too, with csp imported
        assert np.array_equal(zarr.open_array(root, path=name, mode="r")[...], ref)

    # zstd: written by zarr itself with the codecs TileCodec.zarr_codecs() names; the fast decoder
    # must read zarr's inner chunks.
    from zarr.codecs import TransposeCodec

    with tifffile.TiffFile(shared_file("svs/CMU-1-Small-Region.svs")) as tf:
        page = tf.pages[0]
        ref = page.asarray().transpose(2, 0, 1)
    zcodec = get_tile_codec(TileEncoding("zstd", {"level": 3}))
    serializer, *compressors = zcodec.zarr_codecs()
    arr = zarr.create_array(
        zarr.storage.LocalStore(root), name="zstd", shape=ref.shape, dtype=ref.dtype, chunks=(3, 240, 240),
        shards=(3, 480, 720), filters=[TransposeCodec(order=(1, 2, 0))], serializer=serializer,
        compressors=compressors, fill_value=0)
    arr[...] = ref
    np.save(tmp_path / "zstd.npy", ref)
    expected["zstd"] = str(tmp_path / "zstd.npy")
    shard = (root / "zstd" / "c" / "0" / "1" / "2").read_bytes()
    index = np.frombuffer(shard[-(2 * 3 * 16 + 4):-4], "<u8").reshape(2, 3, 2)
    off, n = index[1, 1]
    tile = zcodec.decode(shard[off:off + n], (240, 240, 3), np.uint8)
    assert np.array_equal(tile, ref[:, 720:960, 1680:1920].transpose(1, 2, 0))

    meta = json.loads((root / "jpeg" / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert inner[1] == get_tile_codec(page_encoding(tifffile.TiffFile(
        shared_file("svs/CMU-1-Small-Region.svs")).pages[0])).zarr_codecs_json()[0]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", FRESH_READER, json.dumps(expected), str(root)],
                          check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.pop("_entry_point_loaded") is True
    names = {"jpeg": "csp.jpeg", "jpeg_small": "csp.jpeg", "j2k": "csp.j2k", "deflate_p2": "csp.tiff_deflate",
             "deflate_p1": "csp.tiff_deflate", "zstd": "bytes"}
    for name, res in results.items():
        assert res == {"codec": names[name], "equal": True, "window": True}, name


def test_zarr_writes_tiff_deflate_and_refuses_jpeg(tmp_path):
    import zarr
    from zarr.codecs import TransposeCodec

    from csp.codecs.zarr_codecs import JpegCodec, TiffDeflateCodec

    data = (np.arange(3 * 70 * 90) % 251).astype(np.uint8).reshape(3, 70, 90)
    store = zarr.storage.MemoryStore()
    arr = zarr.create_array(store, name="d", shape=data.shape, dtype="uint8", chunks=(3, 32, 32),
                            shards=(3, 64, 64), filters=[TransposeCodec(order=(1, 2, 0))],
                            serializer=TiffDeflateCodec(predictor=2), compressors=None)
    arr[...] = data
    assert np.array_equal(zarr.open_array(store, path="d")[...], data)
    bad = zarr.create_array(store, name="j", shape=data.shape, dtype="uint8", chunks=(3, 32, 32),
                            filters=[TransposeCodec(order=(1, 2, 0))], serializer=JpegCodec(), compressors=None)
    with pytest.raises(CodecError, match="passthrough-only"):
        bad[...] = data


def test_zarr_codec_dict_round_trip():
    from zarr.registry import get_codec_class

    from csp.codecs.zarr_codecs import Jpeg2kCodec, JpegCodec, TiffDeflateCodec

    tables = bytes(range(256)) * 2
    for enc, cls in [(TileEncoding("jpeg", {"tables": tables, "colorspace": 2, "outcolorspace": 2}), JpegCodec),
                     (TileEncoding("jpeg", {}), JpegCodec), (TileEncoding("j2k", {}), Jpeg2kCodec),
                     (TileEncoding("j2k", {"colorspace": "ycbcr"}), Jpeg2kCodec),
                     (TileEncoding("tiff_deflate", {"predictor": 2}), TiffDeflateCodec)]:
        tc = get_tile_codec(enc)
        (zc,) = tc.zarr_codecs()
        assert type(zc) is cls and zc.encoding == enc and tc.zarr_codec() == zc
        d = json.loads(json.dumps(zc.to_dict()))
        assert d == tc.zarr_codecs_json()[0]
        assert get_codec_class(d["name"]) is cls
        back = cls.from_dict(d)
        assert back == zc and hash(back) == hash(zc)
    z = get_tile_codec(TileEncoding("zstd", {"level": 5}))
    assert [json.loads(json.dumps(c.to_dict())) for c in z.zarr_codecs()] == z.zarr_codecs_json()


# ------------------------------------------------------------------------- property tests
def _tiles(dtypes=(np.uint8, np.uint16)):
    return st.sampled_from(dtypes).flatmap(lambda dt: hnp.arrays(
        dt, st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 5))))


LOSSLESS = st.sampled_from([
    TileEncoding("zstd", {"level": 3}), TileEncoding("zstd", {"level": 1}), TileEncoding("zstd", {}),
    TileEncoding("tiff_deflate", {"predictor": 1}), TileEncoding("tiff_deflate", {"predictor": 2}),
    TileEncoding("tiff_deflate", {"predictor": 2, "byteorder": ">"}),
    TileEncoding("tiff_deflate", {"predictor": 1, "byteorder": ">", "level": 9}),
])


@settings(max_examples=300, deadline=None)
@given(enc=LOSSLESS, tile=_tiles())
def test_lossless_round_trip(enc, tile):
    codec = get_tile_codec(enc)
    data = codec.encode(tile)
    assert isinstance(data, bytes)
    assert np.array_equal(codec.decode(data, tile.shape, tile.dtype), tile)
    out = np.full(tile.shape, 7, tile.dtype)
    assert codec.decode(data, tile.shape, tile.dtype, out=out) is out and np.array_equal(out, tile)


@settings(max_examples=100, deadline=None)
@given(tile=_tiles((np.uint16,)))
def test_tiff_deflate_matches_tifffile_encoding(tile):
    """Tiles tifffile writes (zlib, predictor 2, 16-bit, 1..5 samples) decode to the written pixels."""
    codec = get_tile_codec(TileEncoding("tiff_deflate", {"predictor": 2}))
    data = codec.encode(tile)
    h, w, c = tile.shape
    import io

    buf = io.BytesIO()
    kw = {"photometric": "minisblack"} if c == 1 else {
        "photometric": "rgb" if c >= 3 else "minisblack", "planarconfig": "contig",
        "extrasamples": ["unspecified"] * (c - 3) if c > 3 else None}
    tifffile.imwrite(buf, tile[..., 0] if c == 1 else tile, compression="zlib", predictor=2,
                     tile=(16 * -(-h // 16), 16 * -(-w // 16)), **kw)
    with tifffile.TiffFile(io.BytesIO(buf.getvalue())) as tf:
        page = tf.pages[0]
        src = raw_tiles_from(buf.getvalue(), page)[0]
        full = codec.decode(src, (page.tilelength, page.tilewidth, c), tile.dtype)
        assert np.array_equal(full[:h, :w], tile)
    assert np.array_equal(codec.decode(data, tile.shape, tile.dtype), tile)


def raw_tiles_from(blob: bytes, page: tifffile.TiffPage) -> list[bytes]:
    return [blob[o:o + n] for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]


def _sample_streams() -> dict[str, tuple[TileEncoding, bytes, tuple[int, int, int]]]:
    rng = np.random.default_rng(1)
    tile = (np.cumsum(rng.integers(-4, 5, (32, 48, 3)), axis=1) % 256).astype(np.uint8)
    out = {}
    for enc in (TileEncoding("zstd", {"level": 3}), TileEncoding("tiff_deflate", {"predictor": 2})):
        out[enc.codec] = (enc, get_tile_codec(enc).encode(tile), tile.shape)
    out["jpeg"] = (TileEncoding("jpeg", {}), bytes(imagecodecs.jpeg8_encode(tile, level=90)), tile.shape)
    out["j2k"] = (TileEncoding("j2k", {}), bytes(imagecodecs.jpeg2k_encode(tile, level=30, codecformat="j2k")),
                  tile.shape)
    return out


STREAMS = _sample_streams()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(STREAMS)), data=st.data())
def test_truncated_raises_codec_error(name, data):
    enc, stream, shape = STREAMS[name]
    cut = data.draw(st.integers(0, len(stream) - 1), label="cut")
    with pytest.raises(CodecError):
        get_tile_codec(enc).decode(stream[:cut], shape, np.uint8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(STREAMS)), data=st.data())
def test_corrupt_decodes_or_raises_codec_error(name, data):
    enc, stream, shape = STREAMS[name]
    buf = bytearray(stream)
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)),
                               min_size=1, max_size=12), label="edits")
    for pos, val in edits:
        buf[pos] = val
    try:
        out = get_tile_codec(enc).decode(bytes(buf), shape, np.uint8)
    except CodecError as exc:
        assert exc.path is None and str(exc)
    else:
        assert out.shape == shape and out.dtype == np.uint8


# --------------------------------------------------------------------------- geometry / edges
def test_smaller_codestream_goes_top_left_larger_raises():
    rng = np.random.default_rng(2)
    small = rng.integers(0, 255, (40, 24, 3)).astype(np.uint8)
    big = rng.integers(0, 255, (80, 24, 3)).astype(np.uint8)
    for enc, encode, decode in [
        (TileEncoding("jpeg", {}), lambda a: imagecodecs.jpeg8_encode(a, level=95), imagecodecs.jpeg8_decode),
        (TileEncoding("j2k", {}), lambda a: imagecodecs.jpeg2k_encode(a, level=0, codecformat="j2k"),
         imagecodecs.jpeg2k_decode),
    ]:
        codec = get_tile_codec(enc)
        data = bytes(encode(small))
        out = np.full((64, 64, 3), 9, np.uint8)
        got = codec.decode(data, (64, 64, 3), np.uint8, out=out)
        assert got is out
        assert np.array_equal(got[:40, :24], decode(data)) and not got[40:].any() and not got[:, 24:].any()
        with pytest.raises(CodecError, match="larger than"):
            codec.decode(bytes(encode(big)), (64, 64, 3), np.uint8)
        with pytest.raises(CodecError, match=r"channel|component"):
            codec.decode(data, (64, 64, 1), np.uint8)


def test_grayscale_and_uint16_j2k():
    g = (np.arange(32 * 32) % 200).astype(np.uint8).reshape(32, 32)
    assert np.array_equal(get_tile_codec(TileEncoding("jpeg", {})).decode(
        imagecodecs.jpeg8_encode(g, level=90), (32, 32, 1), np.uint8)[..., 0], imagecodecs.jpeg8_decode(
        imagecodecs.jpeg8_encode(g, level=90)))
    w = (np.arange(32 * 32 * 3) % 4000).astype(np.uint16).reshape(32, 32, 3)
    data = imagecodecs.jpeg2k_encode(w, level=0, codecformat="j2k")
    j2k = get_tile_codec(TileEncoding("j2k", {}))
    assert np.array_equal(j2k.decode(data, (32, 32, 3), np.uint16), w)
    with pytest.raises(CodecError):
        j2k.decode(data, (32, 32, 3), np.uint8)


def test_j2k_ycbcr_matches_fixed_point_formula():
    rng = np.random.default_rng(3)
    ycc = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    ycc[0, 0] = (128, 128, 128)
    ycc[0, 1] = (255, 0, 255)
    data = imagecodecs.jpeg2k_encode(ycc, level=0, codecformat="j2k", mct=False)
    got = get_tile_codec(TileEncoding("j2k", {"colorspace": "ycbcr"})).decode(data, (16, 16, 3), np.uint8)

    def rnd(x: float) -> int:  # C round(): half away from zero
        return int(np.sign(x) * np.floor(abs(x) + 0.5))

    y, cb, cr = (ycc[..., i].astype(int) for i in range(3))
    exp = np.empty_like(ycc)
    for (i, j), yy in np.ndenumerate(y):
        b_, r_ = cb[i, j] - 128, cr[i, j] - 128
        g = (rnd(65536 * (0.5 - 0.34414 * b_)) + rnd(65536 * -0.71414 * r_)) >> 16
        exp[i, j] = [min(255, max(0, yy + v)) for v in (rnd(1.402 * r_), g, rnd(1.772 * b_))]
    assert np.array_equal(got, exp)
    assert tuple(got[0, 0]) == (128, 128, 128)


def test_tiff_deflate_short_and_long_streams():
    codec = get_tile_codec(TileEncoding("tiff_deflate", {"predictor": 1}))
    rows = (np.arange(5 * 8 * 3) % 256).astype(np.uint8).reshape(5, 8, 3)
    got = codec.decode(imagecodecs.zlib_encode(rows.tobytes()), (8, 8, 3), np.uint8)
    assert np.array_equal(got[:5], rows) and not got[5:].any()
    extra = np.concatenate([rows, rows]).tobytes()  # more than the tile holds: keep the first bytes
    assert np.array_equal(codec.decode(imagecodecs.zlib_encode(extra), (4, 8, 3), np.uint8), rows[:4])
    with pytest.raises(CodecError, match="expected"):
        codec.decode(imagecodecs.zlib_encode(rows.tobytes()[:-1]), (8, 8, 3), np.uint8)


def test_out_argument_checks_and_strided_out():
    codec = get_tile_codec(TileEncoding("zstd", {"level": 3}))
    tile = (np.arange(4 * 6 * 2) % 256).astype(np.uint8).reshape(4, 6, 2)
    data = codec.encode(tile)
    with pytest.raises(ValueError):
        codec.decode(data, tile.shape, np.uint8, out=np.empty((4, 6, 3), np.uint8))
    with pytest.raises(ValueError):
        codec.decode(data, tile.shape, np.uint8, out=np.empty((4, 6, 2), np.uint16))
    big = np.zeros((4, 12, 2), np.uint8)
    strided = big[:, ::2]
    assert codec.decode(data, tile.shape, np.uint8, out=strided) is strided
    assert np.array_equal(big[:, ::2], tile) and not big[:, 1::2].any()
    with pytest.raises(CodecError, match="expected"):
        codec.decode(data, (4, 6, 1), np.uint8)
    with pytest.raises(CodecError, match="empty"):
        codec.decode(b"", (4, 6, 2), np.uint8)


def test_concurrent_decode_is_consistent():
    codec, stream, shape = get_tile_codec(STREAMS["j2k"][0]), STREAMS["j2k"][1], STREAMS["j2k"][2]
    ref = codec.decode(stream, shape, np.uint8)
    bad: list[int] = []

    def work() -> None:
        out = np.empty(shape, np.uint8)
        for _ in range(20):
            if not np.array_equal(codec.decode(stream, shape, np.uint8, out=out), ref):
                bad.append(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


# ------------------------------------------------------------------------ config / registry
CONFIGS = [
    TileEncoding("jpeg", {"tables": b"\xff\xd8\x00\x01\xff\xd9", "colorspace": 2, "outcolorspace": 2}),
    TileEncoding("jpeg", {"tables": None, "colorspace": None, "outcolorspace": "CMYK"}),
    TileEncoding("jpeg", {}),
    TileEncoding("j2k", {}),
    TileEncoding("j2k", {"colorspace": "ycbcr"}),
    TileEncoding("tiff_deflate", {"predictor": 2}),
    TileEncoding("tiff_deflate", {"predictor": 1, "byteorder": ">", "level": 4}),
    TileEncoding("zstd", {"level": 3}),
]


@pytest.mark.parametrize("enc", CONFIGS, ids=lambda e: f"{e.codec}-{len(e.config)}")
def test_config_json_round_trip(enc):
    codec = get_tile_codec(enc)
    cj = codec.config_json()
    text = json.dumps(cj)
    back = TileCodec.from_config_json(enc.codec, json.loads(text))
    assert back.encoding == enc and back is codec  # cached instance
    assert back.config_json() == cj
    if enc.config.get("tables"):
        assert cj["tables"] == base64.b64encode(enc.config["tables"]).decode()
        alt = dict(cj, tables={"base64": cj["tables"]})  # the container spec's {"base64"} form
        assert from_config_json(enc.codec, alt).encoding == enc


def test_registry_and_validation():
    assert PASSTHROUGH_CODECS == {"jpeg", "j2k", "tiff_deflate"}
    enc = TileEncoding("zstd", {"level": 3})
    assert get_tile_codec(enc) is get_tile_codec(TileEncoding("zstd", {"level": 3}))
    assert get_tile_codec(enc).id == "zstd" and not get_tile_codec(enc).passthrough_only
    for cid in ("jpeg", "j2k"):
        c = get_tile_codec(TileEncoding(cid, {}))
        assert c.passthrough_only
        with pytest.raises(CodecError, match="passthrough-only"):
            c.encode(np.zeros((8, 8, 3), np.uint8))
    bad = [TileEncoding("lzw", {}), TileEncoding("tiff_deflate", {"predictor": 3}),
           TileEncoding("jpeg", {"tables": "notbytes"}), TileEncoding("j2k", {"colorspace": "lab"}),
           TileEncoding("zstd", {"level": "fast"}), TileEncoding("zstd", {"level": 3, "x": 1})]
    for b in bad:
        assert not can_store(b)
        with pytest.raises(CodecError):
            get_tile_codec(b)
    assert all(can_store(e) for e in CONFIGS)
    with pytest.raises(CodecError, match="base64"):
        from_config_json("jpeg", {"tables": "@@@"})


def test_tile_module_does_not_import_zarr():
    code = ("import sys; import csp.codecs, csp.codecs.tile; "
            "print(any(m == 'zarr' or m.startswith('zarr.') for m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
