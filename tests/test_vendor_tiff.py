"""Leica SCN, Philips TIFF and Ventana BIF: detection, lossless conversion, OpenSlide equality.

The slides are written by :mod:`tests.synthetic_vendors` (real H&E JPEG tiles, vendor XML as the
OpenSlide drivers parse it) because no public sample of these formats is small enough to ship.
For each: the right reader is chosen; every stored tile's bytes equal the bytes the writer put in the
source (sha256); ``read_region`` of the container equals OpenSlide's ``read_region`` of the source on
every level; associated images, vendor properties and metadata (MPP / objective with provenance)
match. Refusals: Ventana overlapping tiles, Leica multi-image and fluorescence layouts, Philips with
two WSI images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import csp
from csp.container.reader import ContainerReader
from csp.errors import UnsupportedFormatError
from csp.registry import detect, open_source

try:
    from tests import synthetic_vendors as sv
    from tests.conftest import shared_file
except ModuleNotFoundError:  # plain `pytest`: the repository root is not on sys.path, tests/ is
    import synthetic_vendors as sv  # type: ignore[no-redef]
    from conftest import shared_file  # type: ignore[no-redef]

PHILIPS_SPARSE = ((0, 1, 1), (0, 3, 2), (1, 1, 0))  # (level, col, row) stored with TileByteCounts 0
VENDORS = ("philips", "leica-scn", "ventana")
SUFFIX = {"philips": ".tiff", "leica-scn": ".scn", "ventana": ".bif", "ventana-tiff": ".tif"}


@pytest.fixture(scope="module")
def svs() -> Path:
    return shared_file(sv.SOURCE_REL)


@pytest.fixture(scope="module", params=(*VENDORS, "ventana-tiff"))
def slide(request, tmp_path_factory, svs):
    """(reader name, source path, writer spec, container path) — written and converted once per case.

    ``ventana-tiff`` is a Ventana file without the level-0 EncodeInfo (no stitching metadata).
    """
    case = request.param
    folder = tmp_path_factory.mktemp(case)
    src = folder / f"synthetic{SUFFIX[case]}"
    if case == "philips":
        spec = sv.write_philips(src, svs, sparse=PHILIPS_SPARSE)
    elif case == "leica-scn":
        spec = sv.write_leica(src, svs)
    else:
        spec = sv.write_ventana(src, svs, encode_info=case == "ventana")
    vendor = case.removesuffix("-tiff")
    dst = folder / "synthetic.csp"
    csp.convert(src, dst)
    return vendor, src, spec, dst


def _offset(vendor: str, spec) -> tuple[int, int]:
    """Where CSP's level 0 origin lies in OpenSlide's level-0 coordinates (Leica: the main image)."""
    return spec.offset_px if vendor == "leica-scn" else (0, 0)


def test_detect_picks_vendor_reader(slide):
    vendor, src, _, _ = slide
    det = detect(src)
    assert det.match is not None and det.match.reader == vendor, det.verdicts
    order = [v.reader for v in det.verdicts]
    assert order.index("aperio") < order.index(vendor) < order.index("generic-tiff")
    aperio = next(v for v in det.verdicts if v.reader == "aperio")
    assert not aperio.accepted


def test_tile_bytes_equal_source(slide):
    _, src, spec, dst = slide
    with ContainerReader(dst) as cr, open_source(src) as reader:
        assert len(cr.levels) == len(spec.levels)
        for lvl, written in enumerate(spec.levels):
            assert cr.meta["levels"][lvl]["mode"] == "passthrough"
            arr = cr.levels[lvl]
            grid = reader.levels[lvl]
            assert (arr.layout.tiles_across, arr.layout.tiles_down) == (grid.tiles_across, grid.tiles_down)
            for row in range(grid.tiles_down):
                for col in range(grid.tiles_across):
                    want = written.tiles[row * written.across + col]  # the directory's own (padded) grid
                    got = cr.tile_bytes(arr, col, row)
                    src_bytes = reader.read_tile_encoded(lvl, col, row)
                    if want == b"":
                        assert got is None and src_bytes is None, (lvl, col, row)
                        continue
                    assert got is not None and src_bytes is not None
                    digest = hashlib.sha256(want).hexdigest()
                    assert hashlib.sha256(got).hexdigest() == digest, (lvl, col, row)
                    assert hashlib.sha256(src_bytes).hexdigest() == digest, (lvl, col, row)


def _windows(rng, w, h, n=12):
    sizes = [(1, 1), (7, 300), (256, 256), (300, 90), (513, 257)]
    for i in range(n):
        ww, hh = sizes[i % len(sizes)]
        yield (int(rng.integers(-ww // 2, max(w - ww // 2, 1))), int(rng.integers(-hh // 2, max(h - hh // 2, 1))),
               ww, hh)
    yield w - 5, h - 5, 40, 40  # crosses the bottom-right corner


def test_read_region_equals_openslide_every_level(slide):
    openslide = pytest.importorskip("openslide")
    vendor, src, spec, dst = slide
    ox, oy = _offset(vendor, spec)
    rng = np.random.default_rng(7)
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as mine:
        assert mine.level_count == ref.level_count
        for lvl in range(ref.level_count):
            ds = ref.level_downsamples[lvl]
            assert mine.level_downsamples[lvl] == pytest.approx(ds)
            lw, lh = mine.level_dimensions[lvl]
            if vendor != "leica-scn":
                assert (lw, lh) == ref.level_dimensions[lvl]
            full = np.asarray(ref.read_region((ox, oy), lvl, (lw, lh)))
            np.testing.assert_array_equal(np.asarray(mine.read_region((0, 0), lvl, (lw, lh))), full,
                                          err_msg=f"{vendor} level {lvl}")
            for lx, ly, w, h in _windows(rng, lw, lh):
                loc = (int(np.ceil(lx * ds)), int(np.ceil(ly * ds)))
                got = np.asarray(mine.read_region(loc, lvl, (w, h)))
                want = np.zeros((h, w, 4), np.uint8)
                x0, y0, x1, y1 = max(lx, 0), max(ly, 0), min(lx + w, lw), min(ly + h, lh)
                if x0 < x1 and y0 < y1:
                    want[y0 - ly:y1 - ly, x0 - lx:x1 - lx] = full[y0:y1, x0:x1]
                np.testing.assert_array_equal(got, want, err_msg=f"{vendor} level {lvl} window {(lx, ly, w, h)}")
                if lvl == 0 and lx >= 0 and ly >= 0 and lx + w <= lw and ly + h <= lh:
                    direct = np.asarray(ref.read_region((loc[0] + ox, loc[1] + oy), 0, (w, h)))
                    np.testing.assert_array_equal(got, direct)


def test_associated_images_equal_openslide(slide):
    openslide = pytest.importorskip("openslide")
    vendor, src, _, dst = slide
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as mine:
        assert set(mine.associated_images) == set(ref.associated_images) != set()
        for name, img in ref.associated_images.items():
            np.testing.assert_array_equal(np.asarray(mine.associated_images[name])[..., :3],
                                          np.asarray(img)[..., :3], err_msg=f"{vendor} {name}")


def test_vendor_properties_match_openslide(slide):
    openslide = pytest.importorskip("openslide")
    vendor, src, _, dst = slide
    prefix = vendor.split("-")[0] + "."
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as mine:
        props = mine.properties
        keys = [k for k in ref.properties if k.startswith((prefix, "tiff."))]
        assert any(k.startswith(prefix) for k in keys)
        for key in keys:
            assert props.get(key) == ref.properties[key], key
        for key in ("openslide.mpp-x", "openslide.mpp-y", "openslide.objective-power"):
            assert float(props[key]) == pytest.approx(float(ref.properties[key])), key
        assert ("openslide.comment" in props) == ("openslide.comment" in ref.properties)
        if vendor == "leica-scn":  # CSP level 0 is the main image; OpenSlide's bounds locate it
            assert props["leica.main-image.offset-x"] == ref.properties["openslide.bounds-x"]
            assert props["leica.main-image.offset-y"] == ref.properties["openslide.bounds-y"]


def test_metadata_mpp_objective_with_provenance(slide):
    vendor, _, spec, dst = slide
    with csp.open_slide(dst) as mine:
        md = mine.metadata
    assert md["vendor"] == vendor.split("-")[0]
    assert md["mpp"]["x"] == pytest.approx(spec.mpp) and md["mpp"]["y"] == pytest.approx(spec.mpp)
    assert md["objective_power"] == (40.0 if vendor == "ventana" else 20.0)
    for field in ("mpp_x", "mpp_y", "objective_power"):
        assert md["provenance"][field]
    want_barcode = {"philips": "CSP-SYNTH-1", "leica-scn": "LEICA-SYNTH"}.get(vendor)
    assert md["barcode"] == want_barcode
    if want_barcode:
        assert md["provenance"]["barcode"]


def test_verify_against_source(slide):
    _, src, _, dst = slide
    report = csp.verify(dst, source=src)
    assert report.ok and report.tiles_checked > 0


# ---- format specifics ----------------------------------------------------------------------------
def test_philips_sparse_tiles_and_padded_levels(tmp_path, svs):
    openslide = pytest.importorskip("openslide")
    src = tmp_path / "sparse.tiff"
    spec = sv.write_philips(src, svs, sparse=PHILIPS_SPARSE)
    with open_source(src) as reader:
        assert [(lv.width, lv.height) for lv in reader.levels] == spec.level_sizes
        assert reader.read_tile_encoded(0, 1, 1) is None
        assert reader.read_tile_encoded(0, 0, 0) == spec.levels[0].tiles[0]
        # level 1 is stored 768 wide (3 tile columns); CSP's 2-column grid must index the stored grid
        assert reader.levels[1].tiles_across == 2 and spec.levels[1].across == 3
        assert reader.read_tile_encoded(1, 0, 1) == spec.levels[1].tiles[3]
        assert not reader.read_tile(0, 1, 1).any()
    dst = tmp_path / "sparse.csp"
    csp.convert(src, dst)
    with ContainerReader(dst) as cr:  # the XML label's JPEG is kept byte for byte
        assert cr.meta["associated"]["label"]["mode"] == "passthrough"
        assert cr.tile_bytes(cr.associated["label"], 0, 0) == spec.label_jpeg
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as mine:
        for lvl, col, row in PHILIPS_SPARSE:
            ds = int(ref.level_downsamples[lvl])
            loc = (col * 256 * ds, row * 256 * ds)
            w, h = min(256, ref.level_dimensions[lvl][0] - col * 256), min(256, ref.level_dimensions[lvl][1] - row * 256)
            want = np.asarray(ref.read_region(loc, lvl, (w, h)))
            got = np.asarray(mine.read_region(loc, lvl, (w, h)))
            assert not want.any(), "OpenSlide leaves a missing Philips tile transparent black"
            np.testing.assert_array_equal(got, want)
        # a window straddling a present and a missing tile
        np.testing.assert_array_equal(np.asarray(mine.read_region((200, 200), 0, (120, 120))),
                                      np.asarray(ref.read_region((200, 200), 0, (120, 120))))


def test_philips_two_wsi_images_refused(tmp_path, svs):
    src = tmp_path / "two.tiff"
    sv.write_philips(src, svs, wsi_count=2)
    assert detect(src).match.reader == "philips"
    with pytest.raises(UnsupportedFormatError, match="expected one WSI image"):
        csp.convert(src, tmp_path / "two.csp")


def test_ventana_aoi_off_tile_grid_refused(tmp_path, svs):
    src = tmp_path / "offgrid.bif"
    sv.write_ventana(src, svs, aoi_pos=(100, 0))
    with pytest.raises(UnsupportedFormatError, match="off the TIFF tile grid"):
        open_source(src)


def test_ventana_overlapping_tiles_refused(tmp_path, svs):
    src = tmp_path / "overlap.bif"
    sv.write_ventana(src, svs, overlap=(-3, 2))
    assert detect(src).match.reader == "ventana"
    with pytest.raises(UnsupportedFormatError, match=r"overlapping tiles \(TileJointInfo\) are not supported"):
        csp.convert(src, tmp_path / "overlap.csp")
    assert not (tmp_path / "overlap.csp").exists()


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"main_images": 2}, "2 main images"),
    ({"illumination": "fluorescence"}, "only brightfield"),
])
def test_leica_unsupported_layouts_refused(tmp_path, svs, kwargs, reason):
    src = tmp_path / "refused.scn"
    sv.write_leica(src, svs, **kwargs)
    assert detect(src).match.reader == "leica-scn"
    with pytest.raises(UnsupportedFormatError, match=reason):
        open_source(src)


def test_non_vendor_tiff_rejected_by_vendor_readers(svs):
    det = detect(svs)
    verdicts = {v.reader: v for v in det.verdicts}
    assert det.match.reader == "aperio"
    for vendor in VENDORS:
        assert not verdicts[vendor].accepted and verdicts[vendor].reason


@pytest.mark.parametrize("case", ["philips", "leica-scn"])
def test_deidentify_drops_barcode_and_label(case, tmp_path, svs):
    """The unified barcode, its vendor property (raw and base64) and the label image leave no trace."""
    import base64

    src = tmp_path / f"s{SUFFIX[case]}"
    if case == "philips":
        sv.write_philips(src, svs, sparse=PHILIPS_SPARSE)
        barcode = "CSP-SYNTH-1"
    else:
        sv.write_leica(src, svs)
        barcode = "LEICA-SYNTH"
    dst = tmp_path / "d.csp"
    csp.convert(src, dst, deidentify=True)
    blob = dst.read_bytes()
    for needle in (barcode.encode(), base64.b64encode(barcode.encode())):
        assert needle not in blob
    with csp.open_slide(dst) as s:
        assert s.metadata["barcode"] is None and "barcode" not in s.metadata["provenance"]
        assert not {"label", "macro"} & set(s.associated_images)
    assert csp.verify(dst, source=src).ok
