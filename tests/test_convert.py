"""Conversion of every shared SVS / SVS-J2K / tiled TIFF slide: bytes and pixels equal the source.

(a) every stored tile's bytes equal the source tile's bytes (sha256);
(b) ``read_region`` of the container equals OpenSlide's ``read_region`` of the source on every level,
    for random windows including ones crossing tile and image edges.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tifffile

import csp
from csp.container.reader import ContainerReader
from tests.conftest import shared_file, shared_files

openslide = pytest.importorskip("openslide")

SLIDES = shared_files("svs", "svs-j2k", "tiff") or ["svs/CMU-1-Small-Region.svs"]


@pytest.fixture(scope="module", params=SLIDES)
def converted(request, tmp_path_factory):
    src = shared_file(request.param)
    dst = tmp_path_factory.mktemp("conv") / (src.stem + ".csp")
    res = csp.convert(src, dst)
    return src, dst, res


def _tiff_levels(src):
    """Tiled pages of the source in OpenSlide level order."""
    with openslide.OpenSlide(str(src)) as ref:
        dims = ref.level_dimensions
    tf = tifffile.TiffFile(src)
    pages = [p for p in tf.pages if p.is_tiled]
    out = []
    for w, h in dims:
        out.append(next(p for p in pages if (p.imagewidth, p.imagelength) == (w, h)))
    return tf, out


def test_tile_bytes_equal_source(converted):
    src, dst, _res = converted
    tf, pages = _tiff_levels(src)
    with ContainerReader(dst) as cr, open(src, "rb") as fh:
        assert len(cr.levels) >= len(pages)
        for lvl, page in enumerate(pages):
            arr = cr.levels[lvl]
            assert cr.meta["levels"][lvl]["mode"] == "passthrough"
            across = arr.layout.tiles_across
            for i, (off, n) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):
                fh.seek(off)
                want = hashlib.sha256(fh.read(n)).hexdigest()
                got = cr.tile_bytes(arr, i % across, i // across)
                assert got is not None and hashlib.sha256(got).hexdigest() == want, (lvl, i)
    tf.close()


def _windows(rng, w, h, n=25):
    sizes = [(1, 1), (7, 300), (256, 256), (300, 90), (513, 257)]
    for i in range(n):
        ww, hh = sizes[i % len(sizes)]
        yield int(rng.integers(-ww // 2, max(w - ww // 2, 1))), int(rng.integers(-hh // 2, max(h - hh // 2, 1))), ww, hh
    yield w - 5, h - 5, 40, 40  # crosses the bottom-right image corner
    yield 0, 0, w, h  # the whole level


def test_read_region_equals_openslide_every_level(converted):
    src, dst, _ = converted
    rng = np.random.default_rng(1234)
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide:
        assert slide.level_count >= ref.level_count
        for lvl in range(ref.level_count):
            assert slide.level_dimensions[lvl] == ref.level_dimensions[lvl]
            lw, lh = ref.level_dimensions[lvl]
            ds = slide.level_downsamples[lvl]
            assert ds == pytest.approx(ref.level_downsamples[lvl])
            # OpenSlide resamples at fractional level offsets; its level image read at (0, 0) is exact.
            full = np.asarray(ref.read_region((0, 0), lvl, (lw, lh)))
            for lx, ly, w, h in _windows(rng, lw, lh):
                # a level-0 location whose floor(location / downsample) is exactly (lx, ly)
                loc = (int(np.ceil(lx * ds)), int(np.ceil(ly * ds)))
                got = np.asarray(slide.read_region(loc, lvl, (w, h)))
                want = np.zeros((h, w, 4), np.uint8)
                x0, y0, x1, y1 = max(lx, 0), max(ly, 0), min(lx + w, lw), min(ly + h, lh)
                if x0 < x1 and y0 < y1:
                    want[y0 - ly:y1 - ly, x0 - lx:x1 - lx] = full[y0:y1, x0:x1]
                np.testing.assert_array_equal(got, want, err_msg=f"level {lvl} window {(lx, ly, w, h)}")
                if lvl == 0:  # level 0: also straight against OpenSlide's own read_region
                    np.testing.assert_array_equal(got, np.asarray(ref.read_region(loc, 0, (w, h))))


def test_associated_images_equal_openslide(converted):
    src, dst, _ = converted
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide:
        assert set(slide.associated_images) == set(ref.associated_images)
        for name, img in ref.associated_images.items():
            np.testing.assert_array_equal(np.asarray(slide.associated_images[name])[..., :3],
                                          np.asarray(img)[..., :3], err_msg=name)


def test_properties_match_openslide(converted):
    src, dst, _ = converted
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide:
        mine = slide.properties
        for key, value in ref.properties.items():
            if key.startswith("openslide.level[") and int(key[16:key.index("]")]) >= ref.level_count:
                continue
            if key in ("openslide.quickhash-1", "openslide.level-count"):
                continue
            assert key in mine, key
            if key.endswith(".downsample") or key.startswith("openslide.mpp"):
                assert float(mine[key]) == pytest.approx(float(value)), key
            else:
                assert mine[key] == value, key


def test_verify_against_source(converted):
    src, dst, _ = converted
    report = csp.verify(dst, source=src)
    assert report.ok and report.tiles_checked > 0
