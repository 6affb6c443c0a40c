"""Tests of the Aperio SVS and generic tiled TIFF readers against OpenSlide and tifffile.

Shared sample slides come from ``$CSP_SHARED_SLIDES`` (default ``<repo>/../shared/slides``); tests
that need them are skipped when the directory is absent. Synthetic TIFFs written with tifffile cover
missing tiles, truncation and unsupported layouts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from csp.errors import CorruptSlideError, CspError, UnsupportedFormatError
from csp.readers.aperio import (
    AperioReader,
    aperio_scan_date,
    associated_name,
    parse_aperio_description,
    parse_double,
    ycbcr_to_rgb,
)
from csp.readers.base import Match, Reject, TileEncoding
from csp.readers.generic_tiff import GenericTiffReader, tiff_datetime_iso
from csp.readers.probe import Probe
from csp.readers.tiff_common import format_double

openslide = pytest.importorskip("openslide")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CSP_SHARED_SLIDES", REPO.parent / "shared" / "slides"))

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared slides not found at {SHARED}")

# file -> reader expected to win detection (None: every reader rejects)
EXPECTED_MATCH: dict[str, str | None] = {
    "svs/CMU-1-Small-Region.svs": "aperio",
    "svs/small.svs": "aperio",
    "svs-j2k/tcga-cr-7395-01a-01-ts1.svs": "aperio",
    "tiff/boxes.tiff": "generic-tiff",
    "tiff/small_HE_levels.tiff": "generic-tiff",
    "bad/broken.svs": None,
    "bad/openslide-fuzz-7765c4a2-4.tiff": None,
    "bad/openslide-fuzz-f8d91dee-3.tiff": None,
    "bad/unopenable.tiff": None,
    "bad/unreadable.svs": "aperio",
}
GOOD = [f for f, r in EXPECTED_MATCH.items() if r is not None and not f.startswith("bad/")]
BAD = [f for f in EXPECTED_MATCH if f.startswith("bad/")]
READERS = {"aperio": AperioReader, "generic-tiff": GenericTiffReader}


def shared(name: str) -> str:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} missing")
    return str(path)


def open_reader(path: str):
    """Open ``path`` with the first of our readers that accepts it (as the registry would)."""
    probe = Probe(path)
    try:
        for cls in (AperioReader, GenericTiffReader):
            if cls.detect(probe).accepted:
                return cls.open(probe)
        raise UnsupportedFormatError(path, "no TIFF reader accepts this file")
    finally:
        probe.release()


def detect_verdicts(path: str) -> dict[str, Match | Reject]:
    """Verdicts through ``csp.registry.detect``; our readers directly if the registry cannot load."""
    try:
        from csp import registry

        return {v.reader: v for v in registry.detect(path).verdicts}
    except ImportError:
        probe = Probe(path)
        try:
            return {cls.name: cls.detect(probe) for cls in (AperioReader, GenericTiffReader)}
        finally:
            probe.release()


def first_match(verdicts: dict[str, Match | Reject]) -> str | None:
    for name, verdict in verdicts.items():
        if verdict.accepted:
            return name
    return None


def exact_downsample(slide, level: int) -> int | None:
    """Integer downsample of an OpenSlide level when the level grid maps exactly onto level 0."""
    w0, h0 = slide.level_dimensions[0]
    w, h = slide.level_dimensions[level]
    ds = slide.level_downsamples[level]
    if ds == int(ds) and w * int(ds) == w0 and h * int(ds) == h0:
        return int(ds)
    return None


# ------------------------------------------------------------------------------------------------
# detection
# ------------------------------------------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize("name", list(EXPECTED_MATCH))
def test_detection_verdicts(name: str) -> None:
    path = shared(name)
    verdicts = detect_verdicts(path)
    assert first_match(verdicts) == EXPECTED_MATCH[name], verdicts
    for verdict in verdicts.values():
        assert verdict.reason  # every verdict explains itself


@needs_shared
@pytest.mark.parametrize(
    ("name", "reader", "reason"),
    [
        ("bad/broken.svs", "aperio", "not a TIFF file"),
        ("bad/broken.svs", "generic-tiff", "not a TIFF file"),
        ("tiff/boxes.tiff", "aperio", "ImageDescription does not start with 'Aperio'"),
        ("bad/openslide-fuzz-7765c4a2-4.tiff", "generic-tiff", "level 0 is stripped, not tiled"),
        ("bad/unopenable.tiff", "generic-tiff", "unsupported TIFF compression 52479"),
    ],
)
def test_rejection_reasons(name: str, reader: str, reason: str) -> None:
    verdicts = detect_verdicts(shared(name))
    assert not verdicts[reader].accepted
    assert reason in verdicts[reader].reason


@needs_shared
@pytest.mark.parametrize("name", BAD)
def test_bad_files_raise_csp_errors(name: str) -> None:
    """Each damaged file fails with a CspError naming it: at detection/open or at the first bad tile."""
    path = shared(name)
    try:
        from csp.registry import open_source
    except ImportError:
        open_source = open_reader
    try:
        reader = open_source(path)
    except CspError as exc:
        assert exc.path == path and path in str(exc)
        assert isinstance(exc, UnsupportedFormatError | CorruptSlideError)
        return
    with reader, pytest.raises(CorruptSlideError) as info:
        for level in range(len(reader.levels)):
            src = reader.levels[level]
            for row in range(src.tiles_down):
                for col in range(src.tiles_across):
                    reader.read_tile(level, col, row)
    assert info.value.path == path
    assert "level 0 tile (0,0)" in str(info.value)


@needs_shared
def test_unopenable_open_raises_unsupported() -> None:
    path = shared("bad/unopenable.tiff")
    probe = Probe(path)
    try:
        with pytest.raises(UnsupportedFormatError, match="unsupported TIFF compression 52479"):
            GenericTiffReader.open(probe)
    finally:
        probe.release()


@needs_shared
def test_unreadable_svs_associated_is_corrupt() -> None:
    with open_reader(shared("bad/unreadable.svs")) as reader:
        assert list(reader.associated) == ["thumbnail"]
        with pytest.raises(CorruptSlideError, match="thumbnail"):
            reader.read_associated("thumbnail")


# ------------------------------------------------------------------------------------------------
# structure, pixels and bytes versus OpenSlide and tifffile
# ------------------------------------------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize("name", GOOD)
def test_levels_and_associated_names_match_openslide(name: str) -> None:
    path = shared(name)
    slide = openslide.OpenSlide(path)
    with open_reader(path) as reader:
        assert [(lv.width, lv.height) for lv in reader.levels] == list(slide.level_dimensions)
        for index, lv in enumerate(reader.levels):
            assert lv.tile_width == int(slide.properties[f"openslide.level[{index}].tile-width"])
            assert lv.tile_height == int(slide.properties[f"openslide.level[{index}].tile-height"])
        assert sorted(reader.associated) == sorted(slide.associated_images)
        assert reader.metadata.vendor == slide.properties["openslide.vendor"]


@needs_shared
@pytest.mark.parametrize("name", GOOD)
def test_tiles_match_openslide_and_tifffile(name: str) -> None:
    path = shared(name)
    slide = openslide.OpenSlide(path)
    tf = tifffile.TiffFile(path)
    with open_reader(path) as reader, open(path, "rb") as fh:
        for level, src in enumerate(reader.levels):
            page = tf.pages[reader._levels[level].page_index]
            reference = page.asarray()  # tifffile's whole-image decode, an independent code path
            if reference.ndim == 2:
                reference = reference[:, :, None]
            ds = exact_downsample(slide, level)
            tw, th = src.tile_width, src.tile_height
            for row in range(src.tiles_down):
                for col in range(src.tiles_across):
                    index = row * src.tiles_across + col
                    raw = reader.read_tile_encoded(level, col, row)
                    fh.seek(page.dataoffsets[index])
                    assert raw == fh.read(page.databytecounts[index])
                    tile = reader.read_tile(level, col, row)
                    assert tile.shape == (th, tw, src.channels) and tile.dtype == np.dtype(src.dtype)
                    y0, x0 = row * th, col * tw
                    h, w = min(th, src.height - y0), min(tw, src.width - x0)
                    np.testing.assert_array_equal(tile[:h, :w], reference[y0 : y0 + h, x0 : x0 + w])
                    if ds is not None:
                        region = np.asarray(slide.read_region((x0 * ds, y0 * ds), level, (tw, th)))
                        np.testing.assert_array_equal(tile[:h, :w, :3], region[:h, :w, :3])
    tf.close()


@needs_shared
@pytest.mark.parametrize("name", GOOD)
def test_associated_images_match_openslide(name: str) -> None:
    path = shared(name)
    slide = openslide.OpenSlide(path)
    with open_reader(path) as reader:
        for key, image in slide.associated_images.items():
            ours = reader.read_associated(key)
            expected = np.asarray(image.convert("RGB"))
            assert ours.shape == expected.shape
            assert (reader.associated[key].width, reader.associated[key].height) == image.size
            np.testing.assert_array_equal(ours, expected)
        with pytest.raises(KeyError):
            reader.read_associated("no-such-image")


@needs_shared
@pytest.mark.parametrize("name", GOOD)
def test_properties_match_openslide(name: str) -> None:
    path = shared(name)
    slide = openslide.OpenSlide(path)
    expected = {k: v for k, v in slide.properties.items() if not k.startswith("openslide.")}
    with open_reader(path) as reader:
        assert dict(reader.properties) == expected


@needs_shared
@pytest.mark.parametrize("name", GOOD)
def test_metadata_agrees_with_openslide(name: str) -> None:
    path = shared(name)
    props = openslide.OpenSlide(path).properties
    with open_reader(path) as reader:
        meta = reader.metadata
        for key, ours in (
            ("openslide.mpp-x", meta.mpp_x),
            ("openslide.mpp-y", meta.mpp_y),
            ("openslide.objective-power", meta.objective_power),
        ):
            if key in props:
                assert ours == pytest.approx(float(props[key]), rel=1e-12), key
            else:
                assert ours is None, key
        icc_size = props.get("openslide.icc-size")
        assert (meta.icc_profile is None) == (icc_size is None)
        if icc_size is not None:
            assert len(meta.icc_profile) == int(icc_size)
            assert meta.provenance["icc_profile"] == "tiff tag 34675 (level 0)"
        for field in ("mpp_x", "mpp_y", "objective_power", "scan_date", "scanner", "icc_profile"):
            assert (getattr(meta, field) is not None) == (field in meta.provenance), field


@needs_shared
def test_cmu_metadata_and_encoding() -> None:
    with open_reader(shared("svs/CMU-1-Small-Region.svs")) as reader:
        meta = reader.metadata
        assert meta.vendor == "aperio"
        assert meta.mpp_x == meta.mpp_y == pytest.approx(0.499)
        assert meta.objective_power == 20.0
        assert meta.scan_date == "2009-12-29T09:59:15"
        assert meta.scanner == "CPAPERIOCS"
        assert meta.provenance["mpp_x"] == "aperio.MPP"
        enc = reader.levels[0].encoding
        tf = tifffile.TiffFile(reader.path)
        assert enc == TileEncoding(
            "jpeg", {"tables": tf.pages[0].jpegtables, "colorspace": 2, "outcolorspace": 2}
        )
        tf.close()


@needs_shared
def test_encodings_of_j2k_and_deflate() -> None:
    with open_reader(shared("svs-j2k/tcga-cr-7395-01a-01-ts1.svs")) as reader:
        assert {lv.encoding for lv in reader.levels} == {TileEncoding("j2k", {"colorspace": "rgb"})}
    with open_reader(shared("tiff/boxes.tiff")) as reader:
        assert {lv.encoding for lv in reader.levels} == {TileEncoding("tiff_deflate", {"predictor": 2})}
    with open_reader(shared("tiff/small_HE_levels.tiff")) as reader:
        assert reader.levels[0].encoding == TileEncoding("tiff_deflate", {"predictor": 1})


@needs_shared
@pytest.mark.parametrize("name", GOOD)
def test_passthrough_bytes_decode_like_read_tile(name: str) -> None:
    """The encodings we report are accepted by CSP's tile codecs and decode to ``read_tile``."""
    tile_codecs = pytest.importorskip("csp.codecs.tile")
    with open_reader(shared(name)) as reader:
        for level, src in enumerate(reader.levels):
            assert tile_codecs.can_store(src.encoding), src.encoding
            codec = tile_codecs.get_tile_codec(src.encoding)
            shape = (src.tile_height, src.tile_width, src.channels)
            for row in range(src.tiles_down):
                for col in range(src.tiles_across):
                    data = reader.read_tile_encoded(level, col, row)
                    ours = codec.decode(data, shape, src.dtype)
                    np.testing.assert_array_equal(ours, reader.read_tile(level, col, row))


def test_sixteen_bit_deflate_reports_byteorder(tmp_path: Path) -> None:
    data = np.random.default_rng(3).integers(0, 65535, (40, 40, 3), dtype=np.uint16)
    for order in ("<", ">"):
        path = tmp_path / f"u16{order == '>'}.tif"
        tifffile.imwrite(path, data, tile=(32, 32), compression="zlib", predictor=2, byteorder=order)
        with open_reader(str(path)) as reader:
            assert reader.levels[0].encoding == TileEncoding(
                "tiff_deflate", {"predictor": 2, "byteorder": order}
            )
            np.testing.assert_array_equal(reader.read_tile(0, 0, 0), data[:32, :32])


# ------------------------------------------------------------------------------------------------
# resources
# ------------------------------------------------------------------------------------------------
def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@needs_shared
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_one_fd_per_reader_and_close_releases_it() -> None:
    path = shared("svs/CMU-1-Small-Region.svs")
    before = _open_fds()
    reader = open_reader(path)
    assert _open_fds() == before + 1
    reader.read_tile(0, 0, 0)
    reader.read_associated("label")
    assert _open_fds() == before + 1
    reader.close()
    reader.close()  # idempotent
    assert _open_fds() == before
    with pytest.raises(ValueError, match="closed"):
        reader.read_tile_encoded(0, 0, 0)
    with open_reader(path) as ctx:
        assert _open_fds() == before + 1
        assert ctx.read_tile_encoded(0, 0, 0)
    assert _open_fds() == before


# ------------------------------------------------------------------------------------------------
# synthetic files
# ------------------------------------------------------------------------------------------------
def _write_tiled(
    path: Path, image: np.ndarray, *, tile: int = 32, compression=None, holes=(), levels=1
) -> None:
    """Write a tiled pyramid (main IFD chain, reduced levels flagged) with optional empty tiles."""
    with tifffile.TiffWriter(path) as writer:
        for level in range(levels):
            data = image[:: 2**level, :: 2**level]
            h, w = data.shape[:2]
            down, across = -(-h // tile), -(-w // tile)
            padded = np.zeros((down * tile, across * tile, data.shape[2]), data.dtype)
            padded[:h, :w] = data

            def tiles(padded=padded, across=across, down=down, level=level):
                for i in range(down * across):
                    r, c = divmod(i, across)
                    if level == 0 and i in holes:
                        yield None
                    else:
                        yield np.ascontiguousarray(
                            padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
                        )

            writer.write(
                tiles(),
                shape=data.shape,
                dtype=data.dtype,
                tile=(tile, tile),
                compression=compression,
                photometric="rgb",
                subfiletype=1 if level else 0,
                resolution=(40000.0, 40000.0),
                resolutionunit="CENTIMETER",
                software="csp-test",
            )


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 255, (100, 90, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("compression", "codec"), [(None, "raw"), ("lzw", "tiff_lzw"), ("zlib", "tiff_deflate")]
)
def test_synthetic_pyramid_matches_openslide(tmp_path: Path, image: np.ndarray, compression, codec) -> None:
    path = tmp_path / "pyr.tif"
    _write_tiled(path, image, compression=compression, holes=(4,), levels=2)
    slide = openslide.OpenSlide(str(path))
    with open_reader(str(path)) as reader:
        assert isinstance(reader, GenericTiffReader)
        assert [(lv.width, lv.height) for lv in reader.levels] == list(slide.level_dimensions)
        assert reader.levels[0].encoding.codec == codec
        assert reader.read_tile_encoded(0, 1, 1) is None  # tile 4 is missing
        np.testing.assert_array_equal(reader.read_tile(0, 1, 1), np.zeros((32, 32, 3), np.uint8))
        tile = reader.read_tile(0, 0, 0)
        np.testing.assert_array_equal(tile, image[:32, :32])
        region = np.asarray(slide.read_region((0, 0), 0, (32, 32)))
        np.testing.assert_array_equal(tile, region[:, :, :3])
        edge = reader.read_tile(0, 2, 3)  # bottom-right edge tile: 26x4 in image
        np.testing.assert_array_equal(edge[:4, :26], image[96:100, 64:90])
        assert dict(reader.properties) == {
            k: v for k, v in slide.properties.items() if not k.startswith("openslide.")
        }
        assert reader.metadata.mpp_x == pytest.approx(float(slide.properties["openslide.mpp-x"]))
        assert reader.metadata.mpp_x == pytest.approx(0.25)


def test_truncated_file_names_level_and_tile(tmp_path: Path, image: np.ndarray) -> None:
    path = tmp_path / "trunc.tif"
    _write_tiled(path, image, compression="lzw")
    tf = tifffile.TiffFile(path)
    last = int(tf.pages[0].dataoffsets[-1])
    tf.close()
    with open(path, "r+b") as fh:
        fh.truncate(last + 3)  # cut inside the last tile (col 2, row 3)
    with open_reader(str(path)) as reader:
        assert reader.read_tile_encoded(0, 0, 0)
        with pytest.raises(CorruptSlideError, match=r"level 0 tile \(2,3\).*beyond the end of the file"):
            reader.read_tile_encoded(0, 2, 3)
        with pytest.raises(CorruptSlideError, match=r"level 0 tile \(2,3\)"):
            reader.read_tile(0, 2, 3)


def test_corrupt_tile_data_raises_corrupt(tmp_path: Path, image: np.ndarray) -> None:
    path = tmp_path / "bad.tif"
    _write_tiled(path, image, compression="zlib")
    tf = tifffile.TiffFile(path)
    offset = int(tf.pages[0].dataoffsets[1])
    tf.close()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 8)  # destroy the zlib header of tile (1,0)
    with open_reader(str(path)) as reader:
        reader.read_tile(0, 0, 0)
        with pytest.raises(CorruptSlideError, match=r"level 0 tile \(1,0\)") as info:
            reader.read_tile(0, 1, 0)
        assert info.value.path == str(path)


def test_stripped_and_planar_tiffs_are_rejected(tmp_path: Path, image: np.ndarray) -> None:
    stripped = tmp_path / "strips.tif"
    tifffile.imwrite(stripped, image, photometric="rgb")
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(
        planar, np.moveaxis(image, -1, 0), photometric="rgb", planarconfig="separate", tile=(32, 32)
    )
    for path, reason in ((stripped, "level 0 is stripped, not tiled"), (planar, "PlanarConfiguration=2")):
        probe = Probe(path)
        try:
            verdict = GenericTiffReader.detect(probe)
            assert not verdict.accepted and reason in verdict.reason
        finally:
            probe.release()


def test_not_a_tiff(tmp_path: Path) -> None:
    path = tmp_path / "x.svs"
    path.write_bytes(b"hello, not a slide" * 10)
    probe = Probe(path)
    try:
        for cls in (AperioReader, GenericTiffReader):
            verdict = cls.detect(probe)
            assert not verdict.accepted and "not a TIFF file" in verdict.reason
        with pytest.raises(UnsupportedFormatError, match="not a TIFF"):
            AperioReader.open(probe)
    finally:
        probe.release()


def test_aperio_open_on_generic_file_is_refused(tmp_path: Path, image: np.ndarray) -> None:
    path = tmp_path / "g.tif"
    _write_tiled(path, image)
    probe = Probe(path)
    try:
        with pytest.raises(UnsupportedFormatError, match="Aperio"):
            AperioReader.open(probe)
    finally:
        probe.release()


@needs_shared
def test_copied_svs_with_renamed_extension_still_detected(tmp_path: Path) -> None:
    path = tmp_path / "slide.tif"
    shutil.copy(shared("svs/small.svs"), path)
    assert first_match(detect_verdicts(str(path))) == "aperio"


# ------------------------------------------------------------------------------------------------
# parsing helpers (OpenSlide semantics)
# ------------------------------------------------------------------------------------------------
def test_format_double_matches_glib() -> None:
    assert format_double(0.499) == "0.499"
    assert format_double(4.016129032258064) == "4.0161290322580641"
    assert format_double(14861707 / 524288) == "28.346456527709961"
    assert format_double(2.0) == "2"
    assert format_double(float("inf")) == "inf"


def test_parse_aperio_description() -> None:
    desc = "Aperio Image Library v10 \r\n46920x33014|AppMag = 20| MPP =0.4990 ||noequals|A=b=c|AppMag = 40"
    assert parse_aperio_description(desc) == {
        "aperio.AppMag": "40",
        "aperio.MPP": "0.4990",
        "aperio.A": "b=c",
    }
    assert parse_aperio_description("Aperio only header") == {}


def test_associated_name_and_dates() -> None:
    assert associated_name("Aperio Image Library v11.2.1 \nlabel 387x463") == "label"
    assert (
        associated_name("Aperio Image Library v11.2.1 \r\nmacro 1280x431") is None
    )  # "\r\n" -> empty line 1
    assert associated_name("single line") is None
    assert aperio_scan_date("12/29/09", "09:59:15", None) == "2009-12-29T09:59:15"
    assert aperio_scan_date("12/29/09", "09:59:15", "GMT-0500") == "2009-12-29T09:59:15-05:00"
    assert aperio_scan_date("yesterday", None, None) == "yesterday"
    assert tiff_datetime_iso("2023:07:12 05:00:01") == "2023-07-12T05:00:01"
    assert parse_double("0,25") == 0.25
    assert parse_double("0.25um") is None
    assert parse_double("nan") is None


def test_ycbcr_conversion_neutral_and_primaries() -> None:
    ycc = np.array([[[128, 128, 128], [255, 128, 128], [0, 128, 128], [76, 85, 255]]], np.uint8)
    rgb = ycbcr_to_rgb(ycc)
    assert rgb[0, 0].tolist() == [128, 128, 128]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[0, 2].tolist() == [0, 0, 0]
    assert rgb[0, 3, 0] >= 250 and rgb[0, 3, 1] <= 5 and rgb[0, 3, 2] <= 5  # pure red
