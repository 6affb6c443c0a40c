"""Archive tier: JPEG tiles repacked with JPEG XL, rebuilt byte-exact, read like the source.

(a) every JPEG tile of the shared SVS / DICOM / NDPI slides round-trips byte-exact (sha256 per tile) and
    decodes to the passthrough codec's pixels;
(b) ``convert(profile="archive")`` gives a container whose ``read_region`` equals OpenSlide's on every
    source level, and that plain zarr-python reads with the same pixels;
(c) ``repack`` archive -> passthrough gives shards identical to a direct passthrough conversion, in place
    and atomically; damaged tiles raise CodecError; refused tiles are kept plain.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil

import imagecodecs
import numpy as np
import pytest

import csp
from csp.cli.main import main
from csp.codecs import get_tile_codec
from csp.codecs import jpeg_archive as ja
from csp.codecs.jpeg_archive import (
    ADOBE_RGB_APP14,
    TAG_ADOBE,
    TAG_JXL,
    TAG_PAD,
    TAG_PREFIX,
    TAG_TABLES,
    archive_encoding,
    effort_available,
    tile_kind,
)
from csp.container.reader import ContainerReader
from csp.conversion.repack import archive_stats, repack
from csp.errors import CodecError, CspError, OutputExistsError
from csp.readers.base import TileEncoding
from csp.registry import open_source
from tests.conftest import shared_file

openslide = pytest.importorskip("openslide")

SVS = "svs/CMU-1-Small-Region.svs"
JPEG_SLIDES = [SVS, "dicom/cmu-1-small-region", "ndpi/test3-DAPI-2-(387).ndpi", "svs/small.svs"]


def _jpeg_levels(reader):
    for i, lv in enumerate(reader.levels):
        if lv.encoding.codec == "jpeg":
            yield i, lv


def _tiles(reader, i, lv):
    for row in range(-(-lv.height // lv.tile_height)):
        for col in range(-(-lv.width // lv.tile_width)):
            yield col, row, reader.read_tile_encoded(i, col, row)


# the NDPI slide's 3.3 MB take ~10 s at the archive's effort 9: there libjxl's faster default is used
@pytest.mark.parametrize(("rel", "effort"), [(r, 7 if r.startswith("ndpi/") else None) for r in JPEG_SLIDES])
def test_every_jpeg_tile_round_trips_byte_exact(rel, effort):
    src = shared_file(rel)
    with open_source(src) as reader:
        levels = list(_jpeg_levels(reader))
        assert levels, f"{rel}: no JPEG level"
        jxl = tiles = src_bytes = stored_bytes = 0
        for i, lv in levels:
            samples = [t for _c, _r, t in _tiles(reader, i, lv)][:8]
            codec = get_tile_codec(archive_encoding(lv.encoding, samples, effort=effort))
            jpeg = get_tile_codec(lv.encoding)
            shape = (lv.tile_height, lv.tile_width, lv.channels)
            for col, row, data in _tiles(reader, i, lv):
                if data is None:
                    continue
                stored = codec.pack(data)
                restored = codec.restore(stored)
                assert hashlib.sha256(restored).hexdigest() == hashlib.sha256(data).hexdigest(), (i, col, row)
                assert np.array_equal(codec.decode(stored, shape, lv.dtype), jpeg.decode(data, shape, lv.dtype))
                tiles += 1
                jxl += tile_kind(stored) == "jxl"
                src_bytes += len(data)
                stored_bytes += len(stored)
        assert stored_bytes <= src_bytes + tiles  # never more than the 1-byte tag per tile
        if src_bytes > 100_000:  # real slides: most tiles recompress and the tier pays
            assert jxl >= 0.8 * tiles
            assert stored_bytes < 0.85 * src_bytes


def test_aperio_tricks_tables_adobe_prefix():
    src = shared_file(SVS)
    with open_source(src) as reader:
        lv = reader.levels[0]
        data = reader.read_tile_encoded(0, 1, 1)
        enc = archive_encoding(lv.encoding, [reader.read_tile_encoded(0, c, 0) for c in range(4)])
    codec = get_tile_codec(enc)
    assert enc.config["prefix"] and enc.config["tables"] == lv.encoding.config["tables"]
    full, flags = codec.prepare(data)
    assert flags == TAG_ADOBE | TAG_TABLES  # abbreviated, RGB-coded Aperio tile
    assert full.startswith(b"\xff\xd8" + ADOBE_RGB_APP14) and b"\xff\xdb" in full[:400]
    stored = codec.pack(data)
    assert stored[0] == TAG_JXL | TAG_PREFIX | TAG_ADOBE | TAG_TABLES
    assert codec.restore(stored) == data
    # the level's shared JPEG XL header is not repeated in the tile
    assert not stored[1:].startswith(enc.config["prefix"][:32])


def _pil_jpeg(seed: int = 3, **options) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.cumsum(rng.integers(0, 9, (96, 128, 3)), axis=1).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=85, **options)
    return buf.getvalue()


def test_restart_markers_round_trip():
    data = _pil_jpeg(restart_marker_blocks=3)
    assert b"\xff\xdd" in data and b"\xff\xd0" in data
    codec = get_tile_codec(archive_encoding(TileEncoding("jpeg", {}), [data]))
    stored = codec.pack(data)
    assert tile_kind(stored) == "jxl" and codec.restore(stored) == data
    ref = imagecodecs.jpeg8_decode(data)
    assert np.array_equal(codec.decode(stored, ref.shape, np.uint8), ref)


def test_refused_tiles_kept_plain():
    img = (np.arange(64 * 64 * 3, dtype=np.uint16).reshape(64, 64, 3) * 7) % 4096
    data = bytes(imagecodecs.jpeg8_encode(img, bitspersample=12))  # libjxl refuses 12-bit JPEG
    codec = get_tile_codec(archive_encoding(TileEncoding("jpeg", {}), [data]))
    stored = codec.pack(data)
    assert stored[0] == 0 and stored[1:] == data and tile_kind(stored) == "plain"
    assert codec.restore(stored) == data
    junk = b"\xff\xd8 not really a jpeg \xff\xd9"
    assert codec.restore(codec.pack(junk)) == junk


def test_corrupt_archive_tile_raises_codec_error():
    data = _pil_jpeg()
    codec = get_tile_codec(archive_encoding(TileEncoding("jpeg", {}), [data]))
    stored = codec.pack(data)
    assert tile_kind(stored) == "jxl"
    shape = (96, 128, 3)
    for bad in (stored[: len(stored) // 2], bytes([0x40]) + stored[1:], stored[:1], b""):
        with pytest.raises(CodecError):
            codec.decode(bad, shape, np.uint8)
    no_prefix = get_tile_codec(TileEncoding("jpeg_jxl", {"prefix": None}))
    if stored[0] & TAG_PREFIX:
        with pytest.raises(CodecError):
            no_prefix.restore(stored)


@pytest.mark.skipif(not effort_available(9), reason="no libjxl encoder with an effort setting here")
def test_higher_effort_is_still_byte_exact():
    data = _pil_jpeg()
    fast = get_tile_codec(archive_encoding(TileEncoding("jpeg", {}), [data], effort=7))
    high = get_tile_codec(archive_encoding(TileEncoding("jpeg", {}), [data], effort=9))
    assert fast.encoding.config["effort"] is None and high.encoding.config["effort"] == 9
    for codec in (fast, high):
        stored = codec.pack(data)
        assert tile_kind(stored) == "jxl" and codec.restore(stored) == data
        assert fast.restore(stored) == data  # decoding does not depend on the effort


needs_libjxl = pytest.mark.skipif(ja._libjxl_encoder() is None, reason="libjxl shared library not found")


@needs_libjxl
def test_ctypes_encoder_matches_imagecodecs_and_is_the_default():
    src = shared_file(SVS)
    with open_source(src) as reader:
        lv = reader.levels[0]
        tiles = [reader.read_tile_encoded(0, c, 1) for c in range(3)]
    enc = archive_encoding(lv.encoding, tiles)
    assert enc.config["effort"] == ja.ARCHIVE_EFFORT == ja.default_archive_effort()
    codec = get_tile_codec(enc)
    lib = ja._libjxl_encoder()
    for data in tiles:
        full, _flags = codec.prepare(data)
        # same library, same settings: byte-identical to imagecodecs at libjxl's default effort
        assert lib(full, ja.DEFAULT_EFFORT) == bytes(imagecodecs.jpegxl_encode_jpeg(full, numthreads=1))
        high = lib(full, 9)
        assert bytes(imagecodecs.jpegxl_decode_jpeg(high)) == full
        assert lib(full, 9, chunk=100) == high  # output gathered over many small buffers
        stored = codec.pack(data)
        assert codec.restore(stored) == data
        assert len(stored) < len(data) * 0.8


def test_without_libjxl_the_default_effort_is_used(monkeypatch):
    monkeypatch.setattr(ja, "_libjxl_encoder", lambda: None)
    monkeypatch.setattr(ja, "_effort_encoder", lambda effort: None)
    assert ja.default_archive_effort() == ja.DEFAULT_EFFORT and not effort_available(9)
    data = _pil_jpeg()
    codec = get_tile_codec(archive_encoding(TileEncoding("jpeg", {}), [data], effort=9))
    assert codec.encoding.config["effort"] is None
    stored = codec.pack(data)
    assert tile_kind(stored) == "jxl" and codec.restore(stored) == data


def test_prefix_reaches_into_the_codestream_and_old_prefixes_still_read():
    tiles = [_pil_jpeg(seed) for seed in (3, 4, 5)]
    enc = archive_encoding(TileEncoding("jpeg", {}), tiles, tiles=8)
    prefix = enc.config["prefix"]
    codec = get_tile_codec(enc)
    for data in tiles:
        stored = codec.pack(data)
        assert stored[0] & TAG_PREFIX and codec.restore(stored) == data
        whole = prefix + stored[1:]
        last = ja.jxl_boxes(whole)[-1]
        assert whole[last[1]:last[1] + 4] == bytes(4)  # the last box is opened: its header is shared
        assert whole[last[1] + 4:last[1] + 8] in (b"jxlc", b"jxlp")
        assert len(prefix) > last[1] + 8  # the codestream's first bytes are shared too
    # a one-sample prefix cannot tell shared codestream bytes from this tile's: boxes before it only
    one = ja.jxl_header_prefix([ja.open_last_box(ja._recompress(codec.prepare(tiles[0])[0], None))])
    assert one and len(one) <= ja.jxl_boxes(prefix + codec.pack(tiles[0])[1:])[-1][1]
    # containers written before the codestream was shared: prefix = boxes before it, sized last box
    data = tiles[1]
    stream = ja._recompress(codec.prepare(data)[0], None)
    cut = ja.jxl_boxes(stream)[-1][1]
    old = get_tile_codec(TileEncoding("jpeg_jxl", {"prefix": stream[:cut]}))
    assert old.restore(bytes([TAG_JXL | TAG_PREFIX]) + stream[cut:]) == data
    assert old.restore(bytes([TAG_JXL]) + stream) == data


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    src = shared_file(SVS)
    d = tmp_path_factory.mktemp("archive")
    assert main(["convert", str(src), "-o", str(d / "arch"), "--profile", "archive", "-q"]) == 0
    csp.convert(src, d / "pass.csp")
    return src, d / "arch" / "CMU-1-Small-Region.csp", d / "pass.csp"


def test_archive_container_reads_like_openslide(containers):
    src, arch, passthrough = containers
    with ContainerReader(arch) as cr:
        assert cr.levels[0].encoding.codec == "jpeg_jxl"
        assert cr.meta["levels"][0]["mode"] == "passthrough"
    assert archive_stats(arch)["0"]["plain"] == 0
    assert os.path.getsize(arch) < os.path.getsize(passthrough)
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(arch) as slide:
        for lvl in range(ref.level_count):
            w, h = ref.level_dimensions[lvl]
            want = np.asarray(ref.read_region((0, 0), lvl, (w, h)).convert("RGB"))
            got = slide.read_region((0, 0), lvl, (w, h), as_array=True)
            assert np.array_equal(got, want), lvl
            x, y = int(w * 0.37), int(h * 0.61)
            want = np.asarray(ref.read_region((x, y), lvl, (300, 200)).convert("RGB"))
            assert np.array_equal(np.asarray(slide.read_region((x, y), lvl, (300, 200)).convert("RGB")), want)
    report = csp.verify(arch, source=src)  # restored tile bytes compared with the source's
    assert report.ok and report.bytes_compared > 1_000_000


def test_zarr_reads_archive_container(containers):
    zarr = pytest.importorskip("zarr")
    _src, arch, _ = containers
    store = zarr.storage.ZipStore(str(arch), mode="r")
    try:
        level0 = zarr.open_group(store, mode="r")["0"]
        with ContainerReader(arch) as cr:
            lay = cr.levels[0].layout
            want = cr.read_region(cr.levels[0], 0, 0, lay.width, lay.height)
        got = np.moveaxis(np.asarray(level0[:, :, :]), 0, -1)
        assert np.array_equal(got, want)
    finally:
        store.close()


def _shards(path):
    with ContainerReader(path) as cr:
        keys = cr.store.keys()  # a StoreReader, not a dict
        return {k: cr.store.read(k) for k in keys if "/c/" in k}, cr.store.read("0/zarr.json")


def test_repack_archive_to_passthrough_equals_direct(containers, tmp_path):
    src, arch, passthrough = containers
    back = tmp_path / "back.csp"
    res = repack(arch, back, to="passthrough")
    assert [lv["to"] for lv in res.levels] == ["jpeg"]
    got, got_meta = _shards(back)
    want, want_meta = _shards(passthrough)
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in want)
    assert got_meta == want_meta
    assert csp.verify(back, source=src).ok
    with pytest.raises(OutputExistsError):
        repack(arch, back, to="passthrough")


def test_repack_in_place_cli(containers, tmp_path, capsys):
    src, _arch, passthrough = containers
    target = tmp_path / "slide.csp"
    shutil.copy(passthrough, target)
    before = os.path.getsize(target)
    assert main(["repack", str(target), "--to", "archive"]) == 0
    assert "jpeg -> jpeg_jxl" in capsys.readouterr().out
    assert os.path.getsize(target) < before
    assert sorted(os.listdir(tmp_path)) == ["slide.csp"]  # no staging left behind
    with ContainerReader(target) as cr:
        assert cr.levels[0].encoding.codec == "jpeg_jxl"
    assert csp.verify(target, source=src).ok
    assert main(["repack", str(target), "--to", "passthrough"]) == 0
    got, _ = _shards(target)
    want, _ = _shards(passthrough)
    assert got == want


@pytest.mark.parametrize("rel", ["dicom/cmu-1-small-region", "ndpi/test3-DAPI-2-(387).ndpi"])
def test_archive_conversion_of_other_vendors(rel, tmp_path, monkeypatch):
    src = shared_file(rel)
    monkeypatch.setattr(ja, "ARCHIVE_EFFORT", ja.DEFAULT_EFFORT)  # the fast effort: this tests the plumbing
    res = csp.convert(src, tmp_path / "a.csp", profile="archive")  # verified against the source
    assert res.verified and any(lv["encoding"] == "jpeg_jxl" for lv in res.levels)
    report = csp.verify(tmp_path / "a.csp", source=src)
    assert report.ok and report.bytes_compared > 0


def test_dicom_style_pad_byte_round_trips_and_shares_the_header():
    tiles = [_pil_jpeg() + b"\x00", _pil_jpeg(seed=4) + b"\x00"]
    enc = archive_encoding(TileEncoding("jpeg", {}), tiles, tiles=len(tiles) + 2)
    codec = get_tile_codec(enc)
    for data in tiles:
        stored = codec.pack(data)
        assert stored[0] & TAG_PAD and stored[0] & TAG_PREFIX
        assert codec.restore(stored) == data
    assert len(enc.config["prefix"]) > 200  # the reconstruction data (tables) is shared, not per tile
    few = archive_encoding(TileEncoding("jpeg", {}), tiles, tiles=1)
    assert few.config["prefix"] is None  # a one-tile level would store the header twice in metadata


def test_archive_container_as_a_source_keeps_its_tiles(containers, tmp_path):
    _src, arch, _ = containers
    res = csp.convert(arch, tmp_path / "again.csp")  # verified against the archive container
    assert res.verified and res.levels[0]["encoding"] == "jpeg_jxl"
    got, _ = _shards(tmp_path / "again.csp")
    want, _ = _shards(arch)
    assert got["0/c/0/0/0"] == want["0/c/0/0/0"]


def test_failed_repack_leaves_the_container_untouched(tmp_path):
    src = shared_file(SVS)
    path = tmp_path / "s.zarr"
    csp.convert(src, path, layout="dir", profile="archive")
    shard = path / "0" / "c" / "0" / "0" / "0"
    blob = bytearray(shard.read_bytes())
    blob[0:40] = bytes(40)  # damage the first tile's tag and JPEG XL header (the index stays valid)
    shard.write_bytes(bytes(blob))
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(CspError):  # the recorded shard digest no longer matches
        repack(path, to="passthrough")
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["s.zarr"]
    with ContainerReader(path) as cr, pytest.raises(CodecError):  # the damaged tile does not decode
        cr.decode_tile(cr.levels[0], 0, 0)


def test_convert_archive_effort_option(tmp_path):
    """``csp convert --profile archive --archive-effort 7`` records and uses that effort; the default is
    the archive default; both rebuild the source bytes exactly."""
    from csp.codecs.jpeg_archive import default_archive_effort

    src = shared_file(SVS)
    assert main(["convert", str(src), "-o", str(tmp_path / "e7"), "--profile", "archive",
                 "--archive-effort", "7", "-q"]) == 0
    with ContainerReader(tmp_path / "e7" / "CMU-1-Small-Region.csp") as cr:
        assert cr.levels[0].encoding.config["effort"] is None  # 7 = libjxl's default, recorded as None
        e7 = sum(len(cr.tile_bytes(cr.levels[0], c, r) or b"") for c, r in cr.iter_tiles(cr.levels[0]))
    dflt = csp.convert(src, tmp_path / "d.csp", profile="archive", verify=False)
    with ContainerReader(dflt.output) as cr:
        want = default_archive_effort()
        assert cr.levels[0].encoding.config["effort"] == (None if want == 7 else want)
        ed = sum(len(cr.tile_bytes(cr.levels[0], c, r) or b"") for c, r in cr.iter_tiles(cr.levels[0]))
    if want > 7:
        assert ed < e7  # the higher default effort pays on these tiles
    assert csp.verify(tmp_path / "e7" / "CMU-1-Small-Region.csp", source=src).ok
