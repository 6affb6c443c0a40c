"""Hamamatsu NDPI: restart intervals re-framed as JPEG tiles, checked against tifffile and OpenSlide.

The shared sample (``ndpi/test3-DAPI-2-(387).ndpi``) is converted once; the container must keep the
scanner's entropy-coded bytes verbatim (no pixel re-encoding) and decode to OpenSlide's pixels. The
synthetic tests build small NDPI-like TIFFs (JPEG strips with restart markers, 4:4:4 and 4:2:0).
"""

from __future__ import annotations

import io
import re
import shutil
import struct

import numpy as np
import pytest
import tifffile

import csp
from csp.container.reader import ContainerReader
from csp.errors import CorruptSlideError, CspError, UnsupportedFormatError
from csp.readers.ndpi import (
    NdpiReader,
    mcu_starts,
    parse_jpeg_header,
    parse_property_map,
    tile_size,
)
from csp.registry import detect, open_source

try:
    from tests.conftest import shared_file
except ModuleNotFoundError:  # plain ``pytest`` puts tests/ (not the repo) on sys.path
    from conftest import shared_file

openslide = pytest.importorskip("openslide")

SAMPLE = "ndpi/test3-DAPI-2-(387).ndpi"
RST = re.compile(rb"\xff[\xd0-\xd7]")


# ---- helpers independent of the reader ---------------------------------------------------------
def _scan_start(jpeg: bytes) -> int:
    """Offset of the first entropy-coded byte (after the SOS segment)."""
    at = jpeg.index(b"\xff\xda")
    (length,) = struct.unpack_from(">H", jpeg, at + 2)
    return at + 2 + length


def _sof_size(jpeg: bytes) -> tuple[int, int]:
    at = jpeg.index(b"\xff\xc0")
    h, w = struct.unpack_from(">HH", jpeg, at + 5)
    return h, w


def _source_levels(src):
    """tifffile's view: NDPI pyramid pages (tifffile cuts them into restart-interval 'tiles')."""
    tf = tifffile.TiffFile(src)
    pages = [p for p in tf.pages if p.tags.valueof(65421) and p.tags.valueof(65421) > 0]
    return tf, pages


def _interval_mosaic(src, page_index: int) -> np.ndarray:
    """A level decoded one restart interval at a time, each as its own JPEG built from tifffile's
    interval header (SOF = interval size) and the interval's bytes with its marker turned into EOI."""
    import imagecodecs

    with tifffile.TiffFile(src) as tf, open(src, "rb") as fh:
        page = tf.pages[page_index]
        tw, th = page.tilewidth, page.tilelength
        per_row = -(-page.imagewidth // tw)
        out = np.zeros((-(-page.imagelength // th) * th, per_row * tw, 3), np.uint8)
        for j, (off, n) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):
            fh.seek(off)
            data = fh.read(n)
            tile = imagecodecs.jpeg8_decode(page.jpegheader + data[:-1] + b"\xd9")
            y, x = (j // per_row) * th, (j % per_row) * tw
            out[y:y + th, x:x + tw] = tile
        return out[:page.imagelength, :page.imagewidth]


def _rgb(img) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


# ---- detection -----------------------------------------------------------------------------------
def test_detect_prefers_ndpi():
    src = shared_file(SAMPLE)
    det = detect(src)
    assert det.match is not None and det.match.reader == "ndpi", det.verdicts
    verdicts = {v.reader: v for v in det.verdicts}
    for other in ("aperio", "generic-tiff"):
        if other in verdicts:
            assert not verdicts[other].accepted, verdicts[other]


# ---- conversion of the shared sample -------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    src = shared_file(SAMPLE)
    dst = tmp_path_factory.mktemp("ndpi") / "sample.csp"
    res = csp.convert(src, dst)
    return src, dst, res


def test_levels_are_passthrough_jpeg_and_labelled(converted):
    src, dst, res = converted
    assert res.reader == "ndpi"
    tf, pages = _source_levels(src)
    with tf, ContainerReader(dst) as cr:
        for lvl in range(len(pages)):
            meta = cr.meta["levels"][lvl]
            assert meta["mode"] == "passthrough"
            assert res.levels[lvl]["encoding"] == "jpeg"
        assert cr.meta["associated"]["macro"]["mode"] == "passthrough"  # the macro's JPEG strip as is
        assert cr.meta["vendor"] == "hamamatsu"
    with csp.open_slide(dst) as slide:
        note = slide.properties["csp.ndpi.tiling"]
        assert "restart" in note and "no pixel re-encoding" in note


def test_every_tile_decodes_and_levels_equal_openslide(converted):
    src, dst, _ = converted
    tf, pages = _source_levels(src)
    tf.close()
    with ContainerReader(dst) as cr:
        for lvl in range(len(pages)):
            arr = cr.levels[lvl]
            for col, row in cr.iter_tiles(arr):
                tile = cr.decode_tile(arr, col, row)
                assert tile.shape == arr.tile_shape
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide:
        for lvl in range(len(pages)):
            assert slide.level_dimensions[lvl] == ref.level_dimensions[lvl]
            w, h = ref.level_dimensions[lvl]
            if w * h > 5_000_000:  # level 0 is checked by windows below
                continue
            got = _rgb(slide.read_region((0, 0), lvl, (w, h)))
            want = _rgb(ref.read_region((0, 0), lvl, (w, h)))
            assert np.array_equal(got, want), lvl


def test_level0_windows_equal_openslide(converted):
    src, dst, _ = converted
    rng = np.random.default_rng(387)
    with ContainerReader(dst) as cr:
        tile_h = cr.levels[0].layout.tile_height
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide:
        w, h = ref.level_dimensions[0]
        windows = [(0, 0, w, 2 * tile_h + 3), (w - 300, h - 200, 400, 300), (-10, -10, 50, 50)]
        for _ in range(12):
            ww, hh = int(rng.integers(1, 600)), int(rng.integers(1, 600))
            y = int(rng.integers(1, h // tile_h)) * tile_h - int(rng.integers(1, hh + 1))  # crosses a tile edge
            windows.append((int(rng.integers(-ww // 2, w)), y, ww, hh))
        for x, y, ww, hh in windows:
            got = _rgb(slide.read_region((x, y), 0, (ww, hh)))
            want = _rgb(ref.read_region((x, y), 0, (ww, hh)))
            assert np.array_equal(got, want), (x, y, ww, hh)


def test_entropy_coded_bytes_are_verbatim_source_slices(converted):
    src, dst, _ = converted
    tf, pages = _source_levels(src)
    with tf, ContainerReader(dst) as cr, open(src, "rb") as fh:
        for lvl, page in enumerate(pages):
            interval_w, mcu_h = page.tilewidth, page.tilelength  # tifffile's restart-interval tiles
            per_row = -(-page.imagewidth // interval_w)
            source_header = page.jpegheader
            arr = cr.levels[lvl]
            lay = arr.layout
            assert lay.tile_width % interval_w == 0 and lay.tile_height % mcu_h == 0
            k, m = lay.tile_width // interval_w, lay.tile_height // mcu_h
            for col, row in cr.iter_tiles(arr):
                tile = cr.tile_bytes(arr, col, row)
                assert tile is not None and tile.endswith(b"\xff\xd9")
                start = _scan_start(tile)
                # header: the source's own tables etc.; only SOF size differs
                mcu_rows = -(-page.imagelength // mcu_h)
                covered_h = min(m, mcu_rows - row * m) * mcu_h  # whole MCUs held by the tile
                covered_w = min(k, per_row - col * k) * interval_w
                assert _sof_size(tile) == (covered_h, covered_w)
                sof = tile.index(b"\xff\xc0") + 5
                assert tile[:sof] + tile[sof + 4:start] == source_header[:sof] + source_header[sof + 4:]
                body = tile[start:-2]
                markers = [mm.group() for mm in RST.finditer(body)]
                assert markers == [bytes([0xFF, 0xD0 + i % 8]) for i in range(len(markers))]
                segments = RST.split(body)
                want_idx = [r * per_row + c
                            for r in range(row * m, min((row + 1) * m, -(-page.imagelength // mcu_h)))
                            for c in range(col * k, min((col + 1) * k, per_row))]
                assert len(segments) == len(want_idx)
                for seg, j in zip(segments, want_idx, strict=True):
                    fh.seek(page.dataoffsets[j])
                    assert seg == fh.read(page.databytecounts[j] - 2), (lvl, col, row, j)


def test_container_not_larger_than_source_levels(converted):
    src, _, res = converted
    tf, pages = _source_levels(src)
    with tf:
        for lvl, page in enumerate(pages):
            strip_bytes = int(page.tags[279].value[0])
            assert res.levels[lvl]["bytes"] <= 1.05 * strip_bytes, (lvl, res.levels[lvl]["bytes"], strip_bytes)


def test_macro_metadata_and_properties(converted):
    src, dst, _ = converted
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide, open_source(src) as reader:
        assert set(slide.associated_images) == set(ref.associated_images) == {"macro"}
        assert np.array_equal(_rgb(slide.associated_images["macro"]), _rgb(ref.associated_images["macro"]))
        props = dict(reader.properties)
        want = {k: v for k, v in ref.properties.items() if k.startswith(("tiff.", "hamamatsu."))}
        assert {k: props.get(k) for k in want} == want
        md = reader.metadata
        assert md.vendor == "hamamatsu"
        assert md.mpp_x == pytest.approx(float(ref.properties["openslide.mpp-x"]))
        assert md.objective_power == float(ref.properties["openslide.objective-power"])
        assert "65421" in md.provenance["objective_power"]
        assert "282" in md.provenance["mpp_x"]
        assert md.scan_date == "2017-02-07T13:06:43"


def test_reader_reference_decode_equals_tiles(converted):
    """read_tile decodes each interval on its own (OpenSlide's way); the re-framed tile must agree."""
    src, _, _ = converted
    from csp.codecs import get_tile_codec

    with open_source(src) as reader:
        for lvl in (1, 3):
            lv = reader.levels[lvl]
            codec = get_tile_codec(lv.encoding)
            for row in range(lv.tiles_down):
                data = reader.read_tile_encoded(lvl, 0, row)
                got = codec.decode(data, (lv.tile_height, lv.tile_width, 3), np.uint8)
                assert np.array_equal(got, reader.read_tile(lvl, 0, row))


def test_truncated_ndpi_names_the_file(tmp_path):
    src = shared_file(SAMPLE)
    data = src.read_bytes()
    bad = tmp_path / "truncated.ndpi"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CspError) as info:
        csp.convert(bad, tmp_path / "out.csp")
    assert str(bad) in str(info.value)
    assert not (tmp_path / "out.csp").exists()


def test_renamed_ndpi_is_still_read(tmp_path):
    src = shared_file(SAMPLE)
    renamed = tmp_path / "slide.tif"
    shutil.copyfile(src, renamed)
    assert detect(renamed).match.reader == "ndpi"
    with open_source(renamed) as reader, open_source(src) as orig:
        assert reader.levels == orig.levels
        assert reader.read_tile_encoded(0, 0, 3) == orig.read_tile_encoded(0, 0, 3)


# ---- pure functions ----------------------------------------------------------------------------
def test_mcu_starts_combine_high_words():
    class Tag:
        def __init__(self, value):
            self.value = np.asarray(value, np.uint32)

    class Page:
        def __init__(self, tags):
            self.tags = tags

    low, high = [660, 2752, 16], [0, 0, 1]
    assert mcu_starts(Page({65426: Tag(low), 65432: Tag(high)})).tolist() == [660, 2752, (1 << 32) + 16]
    assert mcu_starts(Page({65426: Tag(low)})).tolist() == low
    assert mcu_starts(Page({65426: Tag(low), 65432: Tag([0])})) is None  # inconsistent: scan instead
    assert mcu_starts(Page({})) is None


def test_parse_property_map_like_openslide():
    text = "A=1\r\nB=x=y\r\n=skip\r\nC=\r\nD=2\rmore\r\nA=3"
    assert parse_property_map(text) == {"hamamatsu.A": "3", "hamamatsu.B": "x=y", "hamamatsu.D": "2\rmore"}


def _header(sampling: bytes, dri: int, width: int = 4096, height: int = 64, sof: int = 0xC0) -> bytes:
    comps = b"".join(bytes([i + 1, s, 0]) for i, s in enumerate(sampling))
    sof_seg = struct.pack(">BHHB", 8, height, width, len(sampling)) + comps
    sos = bytes([len(sampling)]) + b"".join(bytes([i + 1, 0]) for i in range(len(sampling))) + b"\x00\x3f\x00"
    return (b"\xff\xd8" + b"\xff" + bytes([sof]) + struct.pack(">H", len(sof_seg) + 2) + sof_seg
            + b"\xff\xdd\x00\x04" + struct.pack(">H", dri) + b"\xff\xda" + struct.pack(">H", len(sos) + 2) + sos)


def test_tile_size_rule():
    full = parse_jpeg_header(_header(b"\x11\x11\x11", 8))  # 64-pixel intervals, 4:4:4
    assert full.mcu_size == (8, 8) and full.colorspace == 3
    assert tile_size(full, 4096, 4096) == (8, 64)  # 512 x 512
    wide = parse_jpeg_header(_header(b"\x11\x11\x11", 496))  # 3968-pixel interval
    assert tile_size(wide, 3968, 4864) == (1, 8)  # 3968 x 64
    assert tile_size(wide, 3968, 16) == (1, 2)  # never taller than the level
    sub = parse_jpeg_header(_header(b"\x22\x11\x11", 4))  # 4:2:0, 64-pixel intervals of 16x16 MCUs
    assert sub.mcu_size == (16, 16)
    assert tile_size(sub, 4096, 4096) == (1, 1)  # chroma upsampling: one interval per tile
    h21 = parse_jpeg_header(_header(b"\x21\x11\x11", 4))  # 4:2:2: merge down only
    assert tile_size(h21, 4096, 4096) == (1, 64)


def test_parse_jpeg_header_refuses_unsplittable():
    with pytest.raises(ValueError, match="progressive"):
        parse_jpeg_header(_header(b"\x11\x11\x11", 8, sof=0xC2))
    with pytest.raises(ValueError, match="SOI"):
        parse_jpeg_header(b"not a jpeg")
    with pytest.raises(ValueError, match="truncated"):
        parse_jpeg_header(_header(b"\x11\x11\x11", 8)[:20])


# ---- synthetic NDPI files ----------------------------------------------------------------------
def _restart_jpeg(img: np.ndarray, subsampling: int, blocks: int) -> bytes:
    """A JPEG with a restart marker every ``blocks`` MCUs (Pillow), like an NDPI level."""
    image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    image.fromarray(img).save(buf, "JPEG", quality=90, subsampling=subsampling, restart_marker_blocks=blocks)
    data = buf.getvalue()
    if b"\xff\xdd" not in data:  # pragma: no cover - Pillow too old to write restart markers
        pytest.skip("Pillow did not write restart markers")
    return data


_TYPE_SIZE = {2: 1, 3: 2, 4: 4, 5: 8, 9: 4, 11: 4}
_TYPE_FMT = {3: "H", 4: "I", 9: "i", 11: "f"}


def _ndpi_bytes(pages: list[tuple[bytes, dict[int, tuple[int, object]]]]) -> bytes:
    """A little-endian NDPI: classic TIFF entries with 64-bit header/next-IFD offsets and a block of
    zero high words after each IFD (the layout tifffile and OpenSlide read as NDPI)."""
    out = bytearray(b"II*\x00" + b"\x00" * 8)
    link = 4  # where the offset of the next IFD goes (8 bytes)
    for strip, tags in pages:
        strip_at = len(out)
        out += strip
        tags = dict(tags)
        tags[273] = (4, strip_at)
        tags[279] = (4, len(strip))
        entries = []
        for code in sorted(tags):
            typ, value = tags[code]
            if typ == 2:
                raw = str(value).encode() + b"\x00"
                count = len(raw)
            elif typ == 5:
                raw = struct.pack("<II", *value)
                count = 1
            else:
                vals = value if isinstance(value, (list, tuple)) else [value]
                raw = struct.pack(f"<{len(vals)}{_TYPE_FMT[typ]}", *vals)
                count = len(vals)
            if len(raw) > 4:
                if len(out) % 2:
                    out += b"\x00"
                at = len(out)
                out += raw
                raw = struct.pack("<I", at)
            entries.append(struct.pack("<HHI", code, typ, count) + raw.ljust(4, b"\x00"))
        if len(out) % 2:
            out += b"\x00"
        ifd = len(out)
        out[link:link + 8] = struct.pack("<Q", ifd)
        out += struct.pack("<H", len(entries)) + b"".join(entries)
        link = len(out)
        out += b"\x00" * 8 + b"\x00" * (4 * len(entries))  # next IFD (64-bit) + high words
    return bytes(out)


def _write_ndpi(path, levels: list[np.ndarray], subsampling: int, per_row: int, *, macro: bool = True,
                break_starts: bool = False, plain_last: bool = False, focal_copy: bool = False) -> None:
    """A minimal NDPI: one JPEG strip per level (``per_row`` restart intervals per MCU row) plus NDPI
    tags (McuStarts computed from the markers)."""
    pages = []
    mcu_w = {0: 8, 1: 16, 2: 16}[subsampling]
    for i, img in enumerate(levels):
        mcus = -(-img.shape[1] // mcu_w)
        if per_row and (i < len(levels) - 1 or not plain_last):
            assert mcus % per_row == 0
            jpeg = _restart_jpeg(img, subsampling, mcus // per_row)
        else:  # no restart markers at all
            buf = io.BytesIO()
            pytest.importorskip("PIL.Image").fromarray(img).save(buf, "JPEG", quality=90, subsampling=subsampling)
            jpeg = buf.getvalue()
        start = _scan_start(jpeg)
        starts = [start] + [mm.end() + start for mm in RST.finditer(jpeg[start:])]
        if break_starts:
            starts = [x + 5 for x in starts]
        h, w = img.shape[:2]
        res = round(10000 / (0.5 * 2**i))
        tags = {256: (4, w), 257: (4, h), 258: (3, [8, 8, 8]), 259: (3, 7), 262: (3, 6), 271: (2, "Hamamatsu"),
                277: (3, 3), 278: (4, h), 282: (5, (res, 1)), 283: (5, (res, 1)), 296: (3, 3),
                65420: (3, 1), 65421: (11, 20.0 / 2**i), 65424: (9, 0), 65426: (4, starts)}
        if i == 0:
            tags[65449] = (2, "Product=TEST\r\nNDP.S/N=123\r\n")
        pages.append((jpeg, tags))
        if focal_copy and i == 0:  # the same image as another focal plane (not converted)
            pages.append((jpeg, {**tags, 65424: (9, 1)}))
    if macro:
        small = np.full((40, 120, 3), 200, np.uint8)
        small[:, :60] = (30, 90, 160)
        mj = io.BytesIO()
        pytest.importorskip("PIL.Image").fromarray(small).save(mj, "JPEG", quality=95)
        pages.append((mj.getvalue(), {256: (4, 120), 257: (4, 40), 258: (3, [8, 8, 8]), 259: (3, 7),
                                      262: (3, 6), 277: (3, 3), 278: (4, 40), 65420: (3, 1),
                                      65421: (11, -1.0)}))
    with open(path, "wb") as fh:
        fh.write(_ndpi_bytes(pages))


def _tissue(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 3 + yy) % 256, (yy * 2) % 256, (xx ^ yy) % 256], -1).astype(np.uint8)
    return np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("subsampling", "per_row"), [(0, 3), (0, 1), (2, 3), (1, 3)],
                         ids=["444-3-per-row", "444-row", "420", "422"])
def test_synthetic_ndpi_matches_openslide(tmp_path, subsampling, per_row):
    src = tmp_path / "synthetic.ndpi"
    base = _tissue(608, 960, subsampling)
    _write_ndpi(src, [base, base[::2, ::2].copy()], subsampling, per_row)
    with open_source(src) as reader:
        assert reader.name == "ndpi" and len(reader.levels) == 2
        assert reader.metadata.mpp_x == pytest.approx(0.5)
        assert reader.properties["hamamatsu.Product"] == "TEST"
    dst = tmp_path / "synthetic.csp"
    res = csp.convert(src, dst)
    assert [lv["mode"] for lv in res.levels[:2]] == ["passthrough", "passthrough"]
    with csp.open_slide(dst) as slide:
        for lvl in range(2):
            want = _interval_mosaic(src, lvl)
            h, w = want.shape[:2]
            assert np.array_equal(slide.read_region((0, 0), lvl, (w, h), as_array=True), want), lvl
    with csp.open_slide(dst) as slide:
        with openslide.OpenSlide(str(src)) as ref:
            assert slide.level_dimensions[:2] == ref.level_dimensions[:2]
            assert np.array_equal(_rgb(slide.associated_images["macro"]), _rgb(ref.associated_images["macro"]))
        for lvl in range(2):
            with openslide.OpenSlide(str(src)) as ref:  # an OpenSlide error is sticky: fresh handle
                w, h = ref.level_dimensions[lvl]
                try:
                    want = _rgb(ref.read_region((0, 0), lvl, (w, h)))
                except openslide.OpenSlideError as exc:
                    # OpenSlide 4.0 sets the interval size after libjpeg has sized the scan from the SOF;
                    # with 4:2:0 (context-row upsampling) libjpeg then reads past the interval and fails.
                    assert subsampling == 2, exc
                    continue
            assert np.array_equal(_rgb(slide.read_region((0, 0), lvl, (w, h))), want), lvl


@pytest.mark.parametrize(("subsampling", "shape", "per_row"), [(0, (603, 1004), 2), (2, (600, 1000), 3)],
                         ids=["444", "420"])
def test_synthetic_partial_edge_mcus(tmp_path, subsampling, shape, per_row):
    """Level sizes that are not a multiple of the MCU: the last MCU row/column is partial."""
    src = tmp_path / "partial.ndpi"
    _write_ndpi(src, [_tissue(*shape, 11)], subsampling, per_row, macro=False)
    dst = tmp_path / "partial.csp"
    csp.convert(src, dst)
    want = _interval_mosaic(src, 0)
    with csp.open_slide(dst) as slide:
        assert slide.level_dimensions[0] == shape[::-1]
        got = slide.read_region((0, 0), 0, shape[::-1], as_array=True)
    assert np.array_equal(got, want)


def test_synthetic_level_without_restart_markers_is_one_tile(tmp_path):
    src = tmp_path / "plain.ndpi"
    base = _tissue(128, 256, 7)
    _write_ndpi(src, [base, base[::2, ::2].copy()], 0, 2, plain_last=True, focal_copy=True)
    with open_source(src) as reader:
        small = reader.levels[1]
        assert (small.tile_width, small.tile_height, small.tiles_across, small.tiles_down) == (128, 64, 1, 1)
        with open(src, "rb") as fh, tifffile.TiffFile(src) as tf:
            page = tf.pages[2]  # directory 1 is the other focal plane
            fh.seek(page.dataoffsets[0])
            assert reader.read_tile_encoded(1, 0, 0) == fh.read(page.databytecounts[0])  # the strip as is
        assert reader.properties["csp.ndpi.not-converted"] == "directory 1 (focal plane 1)"
    dst = tmp_path / "plain.csp"
    csp.convert(src, dst)
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide:
        for lvl in range(2):
            w, h = ref.level_dimensions[lvl]
            assert np.array_equal(_rgb(slide.read_region((0, 0), lvl, (w, h))),
                                  _rgb(ref.read_region((0, 0), lvl, (w, h)))), lvl


def test_synthetic_damaged_restart_marker_is_reported(tmp_path):
    src = tmp_path / "damaged.ndpi"
    _write_ndpi(src, [_tissue(64, 256, 3)], 0, 4, macro=False)
    data = bytearray(src.read_bytes())
    at = data.index(b"\xff\xd3")  # a restart marker inside the strip
    data[at + 1] = 0x00  # now a stuffed 0xFF byte: one interval boundary vanishes
    src.write_bytes(bytes(data))
    with pytest.raises(CorruptSlideError) as info:
        open_source(src)
    assert str(src) in str(info.value) and "restart" in str(info.value)


def test_marker_damaged_after_open_is_reported_on_read(tmp_path):
    src = tmp_path / "later.ndpi"
    _write_ndpi(src, [_tissue(64, 256, 4)], 0, 4, macro=False)
    with open_source(src) as reader:
        data = bytearray(src.read_bytes())
        at = data.index(b"\xff\xd2")
        data[at + 1] = 0x00
        src.write_bytes(bytes(data))  # same inode: the open reader sees the change
        with pytest.raises(CorruptSlideError, match="McuStarts"):
            reader.read_tile_encoded(0, 0, 0)
        with pytest.raises(CorruptSlideError, match=str(at + 2)):
            reader.read_tile(0, 0, 0)


def test_synthetic_bad_mcu_starts_fall_back_to_scanning(tmp_path):
    src = tmp_path / "badstarts.ndpi"
    img = _tissue(64, 256, 5)
    _write_ndpi(src, [img], 0, 4, macro=False, break_starts=True)
    good = tmp_path / "good.ndpi"
    _write_ndpi(good, [img], 0, 4, macro=False)
    with open_source(src) as reader, open_source(good) as ref:
        assert reader.levels == ref.levels
        for row in range(reader.levels[0].tiles_down):
            assert reader.read_tile_encoded(0, 0, row) == ref.read_tile_encoded(0, 0, row)


def test_not_ndpi_is_rejected(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), tile=(16, 16))
    det = detect(path)
    assert not next(v for v in det.verdicts if v.reader == "ndpi").accepted
    from csp.readers.probe import Probe

    probe = Probe(path)
    try:
        with pytest.raises((UnsupportedFormatError, CorruptSlideError)):
            NdpiReader.open(probe)
    finally:
        probe.release()
