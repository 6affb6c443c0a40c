"""OpenSlide fallback reader: formats only OpenSlide reads convert through its decoded pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

openslide = pytest.importorskip("openslide")

import csp
from csp import registry
from csp.conversion.pipeline import convert
from csp.errors import CodecError, UnsupportedFormatError
from csp.readers import openslide_fallback as fb
from csp.readers.openslide_fallback import OpenSlideFallbackReader, premultiplied_rgb
from csp.readers.probe import Probe

try:
    from tests.conftest import shared_file
except ImportError:  # plain `pytest` run: tests/ itself is on sys.path
    from conftest import shared_file  # type: ignore[no-redef]

FALLBACK = ("csp.readers.openslide_fallback", "OpenSlideFallbackReader")


def _pattern(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise: JPEG-friendly yet different in every pixel neighbourhood."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 3) % 256, (y * 5) % 256, ((x + y) * 2) % 256], -1)
    return np.clip(base + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)


def _save_restart_jpeg(path: Path, pixels: np.ndarray) -> None:
    """Baseline 4:4:4 JPEG with a restart marker after every MCU row, as Hamamatsu VMS requires."""
    from PIL import Image

    Image.fromarray(pixels).save(path, quality=90, subsampling=0, restart_marker_rows=1)
    if b"\xff\xdd" not in path.read_bytes():  # DRI marker missing: this Pillow ignores restart options
        pytest.skip("this Pillow cannot write JPEG restart markers")


def make_vms(folder: Path, size: tuple[int, int], map_size: tuple[int, int]) -> Path:
    """A minimal Hamamatsu VMS slide: INI index, one base JPEG, a map JPEG and a macro image."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    _save_restart_jpeg(folder / "image0.jpg", _pattern(*size, seed=1))
    _save_restart_jpeg(folder / "map.jpg", _pattern(*map_size, seed=2))
    Image.fromarray(_pattern(120, 40, seed=3)).save(folder / "macro.jpg", quality=90)
    vms = folder / "slide.vms"
    vms.write_text(
        "[Virtual Microscope Specimen]\n"
        "NoLayers=1\nNoJpegColumns=1\nNoJpegRows=1\n"
        "ImageFile=image0.jpg\nMapFile=map.jpg\nMacroImage=macro.jpg\n"
        "SourceLens=20\n"
        f"PhysicalWidth={size[0] * 500}\nPhysicalHeight={size[1] * 450}\n")
    return vms


@pytest.fixture(scope="module")
def vms(tmp_path_factory) -> Path:
    # 1000x752 base with a 256x192 map: OpenSlide gives levels with non-integer downsamples (3.91, ...)
    return make_vms(tmp_path_factory.mktemp("vms"), (1000, 752), (256, 192))


@pytest.fixture(scope="module")
def converted_vms(vms, tmp_path_factory):
    dst = tmp_path_factory.mktemp("out") / "slide.csp"
    result = convert(vms, dst)
    return vms, dst, result


def _ref_rgb(ref, level: int, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """OpenSlide's region as premultiplied RGB (what the fallback stores)."""
    return premultiplied_rgb(np.asarray(ref.read_region(location, level, size)))


def _windows(rng, w: int, h: int, n: int = 12):
    sizes = [(1, 1), (7, 90), (64, 64), (130, 33), (300, 257)]
    for i in range(n):
        ww, hh = sizes[i % len(sizes)]
        yield int(rng.integers(-ww // 2, max(w - ww // 2, 1))), int(rng.integers(-hh // 2, max(h - hh // 2, 1))), ww, hh
    yield w - 5, h - 5, 40, 40


def assert_container_equals_openslide(src: Path, dst: Path, seed: int = 7) -> None:
    """Every OpenSlide level of ``src`` equals the container's, whole and in random windows."""
    rng = np.random.default_rng(seed)
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide:
        assert slide.level_count >= ref.level_count
        for lvl in range(ref.level_count):
            lw, lh = ref.level_dimensions[lvl]
            assert slide.level_dimensions[lvl] == (lw, lh)
            ds = slide.level_downsamples[lvl]
            assert ds == pytest.approx(ref.level_downsamples[lvl])
            full = np.asarray(ref.read_region((0, 0), lvl, (lw, lh)))
            got_full = np.asarray(slide.read_region((0, 0), lvl, (lw, lh)))
            np.testing.assert_array_equal(got_full[..., :3], premultiplied_rgb(full), err_msg=f"level {lvl}")
            for lx, ly, w, h in _windows(rng, lw, lh):
                loc = (int(np.ceil(lx * ds)), int(np.ceil(ly * ds)))  # floor(loc / ds) == (lx, ly)
                got = np.asarray(slide.read_region(loc, lvl, (w, h)))
                want = np.zeros((h, w, 4), np.uint8)
                x0, y0, x1, y1 = max(lx, 0), max(ly, 0), min(lx + w, lw), min(ly + h, lh)
                if x0 < x1 and y0 < y1:
                    want[y0 - ly:y1 - ly, x0 - lx:x1 - lx] = full[y0:y1, x0:x1]
                np.testing.assert_array_equal(got, want, err_msg=f"level {lvl} window {(lx, ly, w, h)}")
                if float(ds).is_integer():  # integer level pixels: OpenSlide's own read_region is exact
                    loc = (lx * int(ds), ly * int(ds))
                    np.testing.assert_array_equal(
                        got, np.asarray(ref.read_region(loc, lvl, (w, h))),
                        err_msg=f"level {lvl} window {(lx, ly, w, h)} vs read_region")


def test_detect_picks_fallback_only_for_openslide_only_formats(vms):
    det = registry.detect(vms)
    assert det.match is not None and det.match.reader == "openslide-fallback"
    assert "hamamatsu" in det.match.reason
    assert [v.reader for v in det.verdicts if v.accepted] == ["openslide-fallback"]
    assert registry.reader_classes()[-1] is OpenSlideFallbackReader


def test_vms_container_equals_openslide_every_level(converted_vms):
    src, dst, result = converted_vms
    assert result.reader == "openslide-fallback" and result.verified
    with openslide.OpenSlide(str(src)) as ref:
        ds = ref.level_downsamples
        assert any(not float(d).is_integer() for d in ds)  # the awkward case is exercised
        assert len(result.levels) == ref.level_count
    assert_container_equals_openslide(src, dst)


def test_vms_metadata_marks_levels_decoded(converted_vms):
    src, dst, _ = converted_vms
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide:
        meta = slide.metadata
        assert meta["source"]["reader"] == "openslide-fallback"
        assert meta["vendor"] == "hamamatsu"
        assert {lv["mode"] for lv in meta["levels"]} == {"pixel"}
        assert all(slide.properties[f"csp.level[{i}].mode"] == "pixel" for i in range(slide.level_count))
        assert "decoded by OpenSlide" in meta["provenance"]["pixels"]
        # every OpenSlide property is kept; vendor keys verbatim
        for key, value in ref.properties.items():
            if not key.startswith("openslide."):
                assert slide.properties[key] == value, key
        assert meta["properties"] == dict(ref.properties)
        assert meta["mpp"]["x"] == pytest.approx(float(ref.properties["openslide.mpp-x"]))
        assert meta["mpp"]["y"] == pytest.approx(float(ref.properties["openslide.mpp-y"]))
        assert meta["provenance"]["mpp_x"] == "openslide.mpp-x"
        assert meta["objective_power"] == pytest.approx(20.0)
        assert meta["provenance"]["objective_power"] == "openslide.objective-power"
        assert set(slide.associated_images) == set(ref.associated_images) == {"macro"}
        np.testing.assert_array_equal(np.asarray(slide.associated_images["macro"]),
                                      np.asarray(ref.associated_images["macro"]))


def test_wide_non_integer_level_follows_openslide_area_split(tmp_path):
    """A non-integer-downsample level wider than 4096 px is cut from OpenSlide's own 4096-px areas."""
    src = make_vms(tmp_path, (8200, 32), (4304, 16))
    with openslide.OpenSlide(str(src)) as ref:
        lvl = next(i for i, d in enumerate(ref.level_downsamples) if not float(d).is_integer())
        lw, lh = ref.level_dimensions[lvl]
        assert lw > fb.OPENSLIDE_AREA
        full = premultiplied_rgb(np.asarray(ref.read_region((0, 0), lvl, (lw, lh))))
    probe = Probe(src)
    with OpenSlideFallbackReader.open(probe) as reader:
        lv = reader.levels[lvl]
        got = np.concatenate([np.concatenate([reader.read_tile(lvl, c, r) for c in range(lv.tiles_across)], 1)
                              for r in range(lv.tiles_down)], 0)
        np.testing.assert_array_equal(got[:lh, :lw], full)
        assert not got[lh:].any() and not got[:, lw:].any()  # edge padding is zero
    probe.release()


def test_svs_through_fallback_equals_openslide(monkeypatch, tmp_path):
    """With the native readers removed, an Aperio SVS converts through OpenSlide's pixels."""
    src = shared_file("svs/CMU-1-Small-Region.svs")
    monkeypatch.setattr(registry, "_BUILTIN_READERS", (FALLBACK,))
    monkeypatch.setattr(registry, "_FALLBACK_COUNT", 1)
    assert registry.detect(src).match.reader == "openslide-fallback"
    dst = tmp_path / "svs.csp"
    result = convert(src, dst)
    assert result.reader == "openslide-fallback"
    assert [lv["mode"] for lv in result.levels if lv["mode"] != "built"] == ["pixel"]
    assert_container_equals_openslide(src, dst)
    with openslide.OpenSlide(str(src)) as ref, csp.open_slide(dst) as slide:
        assert set(slide.associated_images) == set(ref.associated_images)
        for name, img in ref.associated_images.items():
            np.testing.assert_array_equal(np.asarray(slide.associated_images[name]), np.asarray(img), err_msg=name)
        assert slide.metadata["properties"]["aperio.AppMag"] == ref.properties["aperio.AppMag"]


def test_non_slide_rejected_with_fallback_reason(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a slide\n")
    verdict = OpenSlideFallbackReader.detect(Probe(path))
    assert not verdict.accepted and verdict.reason == "OpenSlide does not recognise the file"
    with pytest.raises(UnsupportedFormatError) as info:
        registry.open_source(path)
    assert "openslide-fallback: OpenSlide does not recognise the file" in str(info.value)
    assert str(path) in str(info.value)


def test_recognised_but_unopenable_file_is_rejected():
    path = shared_file("bad/unopenable.tiff")  # OpenSlide detects generic-tiff, then fails to open it
    verdict = OpenSlideFallbackReader.detect(Probe(path))
    assert not verdict.accepted
    assert "cannot open" in verdict.reason and "52479" in verdict.reason


def test_missing_openslide_python_rejects(monkeypatch, vms):
    monkeypatch.setattr(fb, "_import_openslide", lambda: None)
    verdict = OpenSlideFallbackReader.detect(Probe(vms))
    assert not verdict.accepted and verdict.reason == "openslide-python not installed"
    with pytest.raises(UnsupportedFormatError, match="openslide-fallback: openslide-python not installed"):
        registry.open_source(vms)


def test_no_encoded_tiles(vms):
    probe = Probe(vms)
    with OpenSlideFallbackReader.open(probe) as reader:
        assert reader.levels[0].encoding.codec == fb.DECODED_CODEC
        with pytest.raises(CodecError, match="decoded by OpenSlide"):
            reader.read_tile_encoded(0, 0, 0)
        with pytest.raises(ValueError):
            reader.read_tile(0, 99, 0)


def test_raw_and_public_read_paths_agree(vms):
    """The raw premultiplied ARGB path equals openslide-python's RGBA re-premultiplied."""
    probe = Probe(vms)
    with OpenSlideFallbackReader.open(probe) as reader:
        raw = reader._read_rgb(100, 50, 0, 300, 200)
        reader._use_raw = False
        public = reader._read_rgb(100, 50, 0, 300, 200)
    np.testing.assert_array_equal(raw, public)


def test_premultiplied_rgb_inverts_openslide_python_exactly():
    """For every alpha and premultiplied sample, un-premultiply (openslide-python) then ours is identity."""
    from ctypes import c_uint32

    convert_mod = getattr(openslide.lowlevel, "_convert", None)
    if convert_mod is None:
        pytest.skip("openslide-python has no _convert module")
    pairs = np.array([(a, c) for a in range(256) for c in range(a + 1)], np.uint32)
    a, c = pairs[:, 0], pairs[:, 1]
    words = (a << 24) | (c << 16) | (((c + 1) // 2) << 8) | (c // 3)
    buf = (len(words) * c_uint32)(*words.tolist())
    convert_mod.argb2rgba(buf)
    rgba = np.frombuffer(buf, np.uint8).reshape(1, -1, 4)
    got = premultiplied_rgb(rgba)[0]
    np.testing.assert_array_equal(got, np.stack([c, (c + 1) // 2, c // 3], -1).astype(np.uint8))


def test_vms_source_identity_hashes_every_data_file(converted_vms):
    """The container's source record covers the JPEG files of the VMS, not only its INI index."""
    import hashlib

    vms, dst, _ = converted_vms
    with csp.open_slide(dst) as s:
        source = s.metadata["source"]
    names = [f["name"] for f in source["files"]]
    assert names == sorted(["slide.vms", "image0.jpg", "map.jpg", "macro.jpg"])
    for f in source["files"]:
        assert f["sha256"] == hashlib.sha256((vms.parent / f["name"]).read_bytes()).hexdigest()


def _bare_reader(path: Path) -> OpenSlideFallbackReader:
    """A reader object without an OpenSlide handle: source_files needs only the path."""
    reader = object.__new__(OpenSlideFallbackReader)
    reader.path = str(path)
    return reader


def test_mirax_source_files_are_the_index_and_its_data_folder(tmp_path):
    """MIRAX: the .mrxs index plus every file (not subfolder) of the folder named after it; files
    beside the index that belong to other slides are not part of this one."""
    mrxs = tmp_path / "case 7.mrxs"
    mrxs.write_bytes(b"mirax index")
    data = tmp_path / "case 7"
    data.mkdir()
    for name in ("Slidedat.ini", "Index.dat", "Data0000.dat", "Data0001.dat"):
        (data / name).write_bytes(name.encode())
    (data / "thumbs").mkdir()
    (tmp_path / "other.mrxs").write_bytes(b"another slide")
    got = _bare_reader(mrxs).source_files()
    want = sorted([str(mrxs)] + [str(data / n) for n in ("Slidedat.ini", "Index.dat", "Data0000.dat", "Data0001.dat")])
    assert got == want
    # no data folder (an incomplete copy): the index alone
    lone = tmp_path / "lone.mrxs"
    lone.write_bytes(b"x")
    assert _bare_reader(lone).source_files() == [str(lone)]


def test_vms_source_files_skip_missing_and_unrelated_entries(tmp_path):
    vms = make_vms(tmp_path / "v", (64, 48), (32, 24))
    text = vms.read_text() + "OptimisationFile=missing.opt\nNotes=free text\n"
    vms.write_text(text)
    got = [Path(p).name for p in _bare_reader(vms).source_files()]
    assert got == sorted(["slide.vms", "image0.jpg", "map.jpg", "macro.jpg"])
