"""DICOM WSI reader: detection, passthrough bytes, pixels equal to OpenSlide, metadata, sparse tiling, errors.

Shared series (``dicom/cmu-1-small-region`` folder, ``dicom/boxes``) are converted with :func:`csp.convert`;
every stored tile's bytes must equal pydicom's frame bytes and the container's ``read_region`` must equal
OpenSlide's on every level. Synthetic files built with pydicom cover TILED_SPARSE (with missing tiles),
YCbCr JPEG, JPEG 2000, native frames, concatenations and damaged files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

import csp
from csp.container.reader import ContainerReader
from csp.errors import CorruptSlideError, CspError, UnsupportedFormatError
from csp.registry import detect, open_source
from tests.conftest import shared_file

pydicom = pytest.importorskip("pydicom")
openslide = pytest.importorskip("openslide")

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

try:  # pydicom >= 3
    from pydicom.encaps import generate_frames
except ImportError:  # pragma: no cover - pydicom 2.x
    from pydicom.encaps import generate_pixel_data_frame as _gen

    def generate_frames(data, *, number_of_frames):
        return _gen(data, number_of_frames)


WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
CMU = "dicom/cmu-1-small-region"
BOXES = "dicom/boxes"
SERIES_SOURCES = [CMU, f"{CMU}/level-4-frames-0-1.dcm", BOXES, f"{BOXES}/boxes_0.dcm", f"{BOXES}/boxes_1.dcm"]


def _one_file(src: Path) -> Path:
    """A file of the series OpenSlide can open (OpenSlide takes any one file of a series)."""
    return src if src.is_file() else min(src.iterdir())


def _rgba(img) -> np.ndarray:
    return np.asarray(img.convert("RGBA") if img.mode != "RGBA" else img)


# ---- synthetic DICOM WSI files ------------------------------------------------------------------------
def _image(h: int = 100, w: int = 150, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.cumsum(rng.integers(0, 255, (h, w, 3)), axis=1) // 60, 0, 255).astype(np.uint8)


def _encode(tile: np.ndarray, ts: str, photometric: str) -> bytes:
    if ts == JPEGBaseline8Bit:
        if photometric == "RGB":
            return bytes(imagecodecs.jpeg8_encode(tile, level=95, colorspace="RGB", outcolorspace="RGB"))
        return bytes(imagecodecs.jpeg8_encode(tile, level=95, subsampling="422"))
    if ts == JPEG2000:
        return bytes(imagecodecs.jpeg2k_encode(tile, level=30, codecformat="J2K"))
    return tile.tobytes()


def make_wsi(
    path: Path,
    image: np.ndarray,
    tile: tuple[int, int] = (32, 48),
    *,
    ts: str = JPEGBaseline8Bit,
    photometric: str = "YBR_FULL_422",
    sparse: bool = False,
    missing: frozenset = frozenset(),
    series: str | None = None,
    image_type: str = "VOLUME",
    frame_range: tuple[int, int] | None = None,
    concatenation: str | None = None,
    layout: str = "bot",
) -> list[bytes]:
    """Write a small VL WSI instance; return the frames written (in file order).

    ``layout`` of encapsulated frames: ``"bot"`` (Basic Offset Table, one fragment per frame), ``"split"``
    (no offset table, two fragments per frame) or ``"eot"`` (Extended Offset Table, empty BOT).
    """
    h, w, c = image.shape
    th, tw = tile
    across, down = -(-w // tw), -(-h // th)
    frames, positions = [], []
    for r in range(down):
        for col in range(across):
            if (col, r) in missing:
                continue
            t = np.zeros((th, tw, c), np.uint8)
            part = image[r * th : (r + 1) * th, col * tw : (col + 1) * tw]
            t[: part.shape[0], : part.shape[1]] = part
            frames.append(_encode(t, ts, photometric))
            positions.append((col * tw + 1, r * th + 1))
    if frame_range is not None:
        frames = frames[frame_range[0] : frame_range[1]]
        positions = positions[frame_range[0] : frame_range[1]]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WSI
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = WSI, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", series or generate_uid()
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "NONE"]
    ds.Manufacturer, ds.ManufacturerModelName = "Synth", "Model 1"
    ds.ContainerIdentifier = "BARCODE-42"
    ds.AcquisitionDateTime = "20240102030405"
    ds.Rows, ds.Columns = th, tw
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = h, w
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = c
    ds.PhotometricInterpretation = "RGB" if ts == ExplicitVRLittleEndian else photometric
    ds.PlanarConfiguration, ds.PixelRepresentation = 0, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.DimensionOrganizationType = "TILED_SPARSE" if sparse else "TILED_FULL"
    ds.TotalPixelMatrixFocalPlanes, ds.NumberOfOpticalPaths = 1, 1
    op = Dataset()
    op.OpticalPathIdentifier, op.ObjectiveLensPower = "1", "40"
    ds.OpticalPathSequence = Sequence([op])
    pm = Dataset()
    pm.PixelSpacing, pm.SliceThickness = [0.00025, 0.0005], 0
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([pm])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    if concatenation is not None and frame_range is not None:
        ds.ConcatenationUID = concatenation
        ds.ConcatenationFrameOffsetNumber = frame_range[0]
        ds.InConcatenationNumber = 1 + (frame_range[0] > 0)
    if sparse:
        items = []
        for x, y in positions:
            pp = Dataset()
            pp.ColumnPositionInTotalImagePixelMatrix, pp.RowPositionInTotalImagePixelMatrix = x, y
            pp.XOffsetInSlideCoordinateSystem = pp.YOffsetInSlideCoordinateSystem = 0
            pp.ZOffsetInSlideCoordinateSystem = 0
            item = Dataset()
            item.PlanePositionSlideSequence = Sequence([pp])
            items.append(item)
        ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    if ts == ExplicitVRLittleEndian:
        ds.PixelData = b"".join(frames)
        ds["PixelData"].VR = "OB"
    elif layout == "eot":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = encapsulate(
            frames, fragments_per_frame=2 if layout == "split" else 1, has_bot=layout == "bot"
        )
        ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(ds, path)
    if ts != ExplicitVRLittleEndian:  # encapsulated fragments are padded to an even length
        frames = [f + b"\0" * (len(f) % 2) for f in frames]
    return frames


def _save(ds: Dataset, path: Path) -> None:
    try:
        ds.save_as(path, enforce_file_format=True)
    except TypeError:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def _tiles_of(reader, level: int = 0) -> np.ndarray:
    lv = reader.levels[level]
    out = np.zeros((lv.tiles_down * lv.tile_height, lv.tiles_across * lv.tile_width, lv.channels), lv.dtype)
    for row in range(lv.tiles_down):
        for col in range(lv.tiles_across):
            out[
                row * lv.tile_height : (row + 1) * lv.tile_height,
                col * lv.tile_width : (col + 1) * lv.tile_width,
            ] = reader.read_tile(level, col, row)
    return out[: lv.height, : lv.width]


# ---- shared series ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rel", SERIES_SOURCES)
def test_detect_and_series_gathering(rel: str) -> None:
    src = shared_file(rel)
    det = detect(src)
    assert det.match is not None and det.match.reader == "dicom", det.verdicts
    with open_source(src) as reader, openslide.OpenSlide(str(_one_file(src))) as ref:
        assert reader.name == "dicom"
        assert [(lv.width, lv.height) for lv in reader.levels] == list(ref.level_dimensions)
        for i, lv in enumerate(reader.levels):
            assert (lv.tile_width, lv.tile_height) == (
                int(ref.properties[f"openslide.level[{i}].tile-width"]),
                int(ref.properties[f"openslide.level[{i}].tile-height"]),
            )
        assert sorted(reader.associated) == sorted(ref.associated_images)


def test_other_readers_refuse_with_reason() -> None:
    src = shared_file(f"{CMU}/level-0-frames-0-30.dcm")
    verdicts = {v.reader: v for v in detect(src).verdicts}
    assert not verdicts["aperio"].accepted and verdicts["aperio"].reason
    d = detect(shared_file(BOXES))
    assert d.match is not None and d.match.reader == "dicom"


@pytest.fixture(scope="module", params=[CMU, f"{BOXES}/boxes_0.dcm"])
def converted(request, tmp_path_factory):
    src = shared_file(request.param)
    dst = tmp_path_factory.mktemp("dicom") / (src.stem + ".csp")
    res = csp.convert(src, dst)
    return src, dst, res


def _source_frames(src: Path) -> dict[tuple[int, int], list[bytes]]:
    """pydicom's frames of every VOLUME file, keyed by total matrix size (independent of the reader)."""
    files = [src] if src.is_file() else sorted(src.iterdir())
    if src.is_file():
        files = sorted(src.parent.iterdir())
    out: dict[tuple[int, int], list[bytes]] = {}
    for f in files:
        ds = pydicom.dcmread(f)
        if ds.ImageType[2] != "VOLUME":
            continue
        out[(int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows))] = list(
            generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))
        )
    return out


def test_tile_bytes_equal_source_frames(converted) -> None:
    src, dst, res = converted
    assert res.reader == "dicom"
    frames = _source_frames(src)
    with ContainerReader(dst) as cr:
        assert len(cr.levels) == len(frames)
        for lvl, arr in enumerate(cr.levels):
            assert cr.meta["levels"][lvl]["mode"] == "passthrough"
            want = frames[(arr.layout.width, arr.layout.height)]
            across = arr.layout.tiles_across
            assert len(want) == across * arr.layout.tiles_down
            for i, data in enumerate(want):
                got = cr.tile_bytes(arr, i % across, i // across)
                assert got is not None and hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), (
                    lvl,
                    i,
                )


def _windows(rng: np.random.Generator, w: int, h: int, tw: int, th: int):
    """Random windows crossing tile edges, one across the bottom-right image corner, the whole level."""
    for _ in range(6):
        x = (
            int(rng.integers(1, w // tw + 1)) * tw - int(rng.integers(1, 40))
            if w > tw
            else int(rng.integers(0, w))
        )
        y = (
            int(rng.integers(1, h // th + 1)) * th - int(rng.integers(1, 40))
            if h > th
            else int(rng.integers(0, h))
        )
        yield x, y, int(rng.integers(1, 300)), int(rng.integers(1, 300))
    yield w - 5, h - 5, 40, 40
    yield 0, 0, w, h


def test_read_region_equals_openslide(converted) -> None:
    src, dst, _ = converted
    rng = np.random.default_rng(7)
    with csp.open_slide(dst) as slide, openslide.OpenSlide(str(_one_file(src))) as ref:
        assert slide.level_dimensions == ref.level_dimensions
        for level, (lw, lh) in enumerate(ref.level_dimensions):
            ds = slide.level_downsamples[level]
            assert ds == pytest.approx(ref.level_downsamples[level])
            # OpenSlide resamples at fractional level offsets; its whole level read at (0, 0) is exact.
            full = np.asarray(ref.read_region((0, 0), level, (lw, lh)))
            tw = int(ref.properties[f"openslide.level[{level}].tile-width"])
            th = int(ref.properties[f"openslide.level[{level}].tile-height"])
            for lx, ly, w, h in _windows(rng, lw, lh, tw, th):
                loc = (int(np.ceil(lx * ds)), int(np.ceil(ly * ds)))  # floor(loc / ds) == (lx, ly)
                got = _rgba(slide.read_region(loc, level, (w, h)))
                want = np.zeros((h, w, 4), np.uint8)
                x0, y0, x1, y1 = max(lx, 0), max(ly, 0), min(lx + w, lw), min(ly + h, lh)
                want[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = full[y0:y1, x0:x1]
                np.testing.assert_array_equal(got, want, err_msg=f"level {level} window {(lx, ly, w, h)}")
                if level == 0:
                    np.testing.assert_array_equal(got, np.asarray(ref.read_region(loc, 0, (w, h))))


def test_verify_against_source(converted) -> None:
    src, dst, _ = converted
    report = csp.verify(dst, source=src)
    assert report.ok and report.tiles_checked > 0


def test_properties_metadata_and_associated_match_openslide(converted) -> None:
    src, dst, _ = converted
    with open_source(src) as reader, openslide.OpenSlide(str(_one_file(src))) as ref:
        expected = {k: v for k, v in ref.properties.items() if k.startswith("dicom.")}
        assert dict(reader.properties) == expected
        md = reader.metadata
        assert md.vendor == "dicom" == ref.properties["openslide.vendor"]
        assert md.mpp_x == pytest.approx(float(ref.properties["openslide.mpp-x"]))
        assert md.mpp_y == pytest.approx(float(ref.properties["openslide.mpp-y"]))
        assert md.provenance["mpp_x"].endswith("PixelSpacing (mm)")
        power = ref.properties.get("openslide.objective-power")
        assert md.objective_power == (None if power is None else pytest.approx(float(power)))
        icc = ref.properties.get("openslide.icc-size")
        assert (len(md.icc_profile) if md.icc_profile else None) == (None if icc is None else int(icc))
        assert md.scan_date is not None and md.provenance["scan_date"]
        assoc = {name: np.asarray(img.convert("RGB")) for name, img in ref.associated_images.items()}
        for name, want in assoc.items():
            assert np.array_equal(reader.read_associated(name), want), name
    with csp.open_slide(dst) as slide:
        assert sorted(slide.associated_images) == sorted(assoc)
        for name, want in assoc.items():
            assert np.array_equal(np.asarray(slide.associated_images[name].convert("RGB")), want), name


def test_boxes_metadata_with_provenance() -> None:
    src = shared_file(f"{BOXES}/boxes_1.dcm")
    with open_source(src) as reader:
        md = reader.metadata
        assert md.objective_power == 20.0 and md.provenance["objective_power"].endswith("ObjectiveLensPower")
        assert md.scanner == "Leica Biosystems Aperio converted by com.pixelmed.convert.TIFFToDicom"
        assert md.provenance["scanner"] == "Manufacturer + ManufacturerModelName"
        assert (
            md.scan_date == "2009-12-29T09:59:15+00:00"
            and md.provenance["scan_date"] == "AcquisitionDateTime"
        )
        assert md.provenance["icc_profile"] == "OpticalPathSequence[0].ICCProfile"
        assert (
            reader.properties["dicom.ContainerIdentifier"] == "SLIDE_1"
            and "ContainerIdentifier" in md.provenance["barcode"]
            and md.barcode == "SLIDE_1"
        )
        # the native THUMBNAIL equals pydicom's decode
        want = pydicom.dcmread(src).pixel_array
        assert np.array_equal(reader.read_associated("thumbnail"), want)


# ---- synthetic files ----------------------------------------------------------------------------------
def test_tiled_sparse_with_missing_tiles(tmp_path: Path) -> None:
    img = _image()
    missing = frozenset({(1, 1), (0, 3)})
    path = tmp_path / "sparse" / "a.dcm"
    frames = make_wsi(path, img, sparse=True, missing=missing)
    with open_source(path) as reader:
        lv = reader.levels[0]
        assert (lv.tiles_across, lv.tiles_down) == (4, 4) and lv.encoding.codec == "jpeg"
        k = 0
        for row in range(4):
            for col in range(4):
                got = reader.read_tile_encoded(0, col, row)
                if (col, row) in missing:
                    assert got is None
                    assert not reader.read_tile(0, col, row).any()
                else:
                    assert got == frames[k]
                    k += 1
    dst = tmp_path / "sparse.csp"
    csp.convert(path, dst)
    with csp.open_slide(dst) as slide, openslide.OpenSlide(str(path)) as ref:
        a = _rgba(slide.read_region((0, 0), 0, (150, 100)))
        b = np.asarray(ref.read_region((0, 0), 0, (150, 100)))
        assert (b[..., 3] == 0).sum() == 32 * 48 + 4 * 48  # OpenSlide also leaves the missing tiles empty
        assert np.array_equal(a, b)


@pytest.mark.parametrize("layout", ["split", "eot"])
def test_fragment_layouts(tmp_path: Path, layout: str) -> None:
    img = _image(seed=4)
    path = tmp_path / layout / "a.dcm"
    frames = make_wsi(path, img, layout=layout)
    same = tmp_path / "bot" / "a.dcm"  # the same frames with a Basic Offset Table, which OpenSlide reads
    assert make_wsi(same, img) == frames
    ds = pydicom.dcmread(path)
    want = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    with open_source(path) as reader, openslide.OpenSlide(str(same)) as ref:
        assert [reader.read_tile_encoded(0, i % 4, i // 4) for i in range(16)] == want
        assert np.array_equal(_tiles_of(reader), np.asarray(ref.read_region((0, 0), 0, (150, 100)))[..., :3])


@pytest.mark.parametrize("kind", ["ybr422", "rgb-jpeg", "j2k", "native"])
def test_synthetic_encodings_match_openslide(tmp_path: Path, kind: str) -> None:
    img = _image(seed=3)
    kw = {
        "ybr422": {},
        "rgb-jpeg": {"photometric": "RGB"},
        "j2k": {"ts": JPEG2000, "photometric": "RGB"},
        "native": {"ts": ExplicitVRLittleEndian},
    }[kind]
    path = tmp_path / kind / "a.dcm"
    make_wsi(path, img, **kw)
    dst = tmp_path / f"{kind}.csp"
    res = csp.convert(path, dst)
    assert res.levels[0]["mode"] == ("pixel" if kind == "native" else "passthrough")
    with csp.open_slide(dst) as slide, openslide.OpenSlide(str(path)) as ref:
        a = _rgba(slide.read_region((0, 0), 0, (150, 100)))
        b = np.asarray(ref.read_region((0, 0), 0, (150, 100)))
        assert np.array_equal(a, b)
    if kind == "native":
        assert np.array_equal(a[..., :3], img)
    with open_source(path) as reader:
        assert np.array_equal(_tiles_of(reader), b[..., :3])
    md = csp.open_slide(dst).metadata
    assert md["mpp"] == {"x": pytest.approx(0.5), "y": pytest.approx(0.25)}
    assert md["objective_power"] == 40.0 and md["scanner"] == "Synth Model 1"
    assert md["scan_date"] == "2024-01-02T03:04:05"


def test_concatenation_and_associated_in_folder(tmp_path: Path) -> None:
    img = _image(seed=5)
    series, concat = generate_uid(), generate_uid()
    folder = tmp_path / "series"
    f1 = make_wsi(folder / "p1.dcm", img, series=series, frame_range=(0, 6), concatenation=concat)
    f2 = make_wsi(folder / "p2.dcm", img, series=series, frame_range=(6, 16), concatenation=concat)
    make_wsi(folder / "level1.dcm", img[::4, ::4].copy(), series=series)
    make_wsi(folder / "label.dcm", img[:20, :30].copy(), (20, 30), series=series, image_type="LABEL")
    make_wsi(folder / "overview.dcm", img[:40, :60].copy(), (40, 60), series=series, image_type="OVERVIEW")
    (folder / "README.txt").write_text("not DICOM")
    for source in (folder, folder / "p2.dcm", folder / "label.dcm"):
        with open_source(source) as reader, openslide.OpenSlide(str(folder / "p1.dcm")) as ref:
            assert [(lv.width, lv.height) for lv in reader.levels] == list(ref.level_dimensions)
            assert [reader.read_tile_encoded(0, i % 4, i // 4) for i in range(16)] == f1 + f2
            for level, (w, h) in enumerate(ref.level_dimensions):
                want = np.asarray(ref.read_region((0, 0), level, (w, h)))[..., :3]
                assert np.array_equal(_tiles_of(reader, level), want), level
            assert sorted(reader.associated) == sorted(ref.associated_images) == ["label", "macro"]
            for name, image in ref.associated_images.items():
                assert np.array_equal(reader.read_associated(name), np.asarray(image.convert("RGB"))), name
    # a tiled (multi-frame) native thumbnail is assembled from its frames
    make_wsi(
        folder / "thumb.dcm",
        img[:70, :100].copy(),
        (32, 48),
        series=series,
        image_type="THUMBNAIL",
        ts=ExplicitVRLittleEndian,
    )
    with open_source(folder) as reader:
        assert np.array_equal(reader.read_associated("thumbnail"), img[:70, :100])


def test_folder_with_two_series_is_refused(tmp_path: Path) -> None:
    make_wsi(tmp_path / "a.dcm", _image())
    make_wsi(tmp_path / "b.dcm", _image(seed=2))
    with pytest.raises(UnsupportedFormatError, match="2 DICOM WSI series"):
        open_source(tmp_path)
    with open_source(tmp_path / "b.dcm") as reader:  # one file chooses its series
        assert len(reader.levels) == 1


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    src = shared_file(f"{CMU}/level-0-frames-0-30.dcm")
    folder = tmp_path / "trunc"
    folder.mkdir()
    bad = folder / src.name
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CorruptSlideError, match=src.name) as err:
        open_source(bad)
    assert "truncated" in str(err.value)
    with pytest.raises(CspError, match=src.name):
        csp.convert(folder, tmp_path / "out.csp")
    assert not (tmp_path / "out.csp").exists()


def test_garbled_header_and_foreign_dicom(tmp_path: Path) -> None:
    garbled = tmp_path / "g" / "x.dcm"
    garbled.parent.mkdir()
    garbled.write_bytes(b"\0" * 128 + b"DICM" + os.urandom(300))
    with pytest.raises(CorruptSlideError, match="x.dcm"):
        open_source(garbled)
    header_only = tmp_path / "h" / "y.dcm"
    make_wsi(header_only, _image())
    header_only.write_bytes(header_only.read_bytes()[:700])
    with pytest.raises(CorruptSlideError, match="y.dcm"):
        open_source(header_only)
    ct = tmp_path / "ct.dcm"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    _save(ds, ct)
    verdict = next(v for v in detect(ct).verdicts if v.reader == "dicom")
    assert not verdict.accepted and "not VL Whole Slide" in verdict.reason
    with pytest.raises(UnsupportedFormatError):
        open_source(ct)


def test_metadata_fallbacks() -> None:
    from csp.readers.dicom import dicom_metadata

    ds = Dataset()
    ds.ContentDate, ds.ContentTime, ds.TimezoneOffsetFromUTC = "20210720", "133842.5", "-0500"
    ds.Manufacturer = "Acme"
    ds.ICCProfile = b"icc-bytes"
    item = Dataset()
    pm = Dataset()
    pm.PixelSpacing = ["0.0005", "0.00025"]
    item.PixelMeasuresSequence = Sequence([pm])
    ds.PerFrameFunctionalGroupsSequence = Sequence([item])
    md = dicom_metadata(ds)
    assert (md.mpp_x, md.mpp_y) == (pytest.approx(0.25), pytest.approx(0.5))
    assert md.provenance["mpp_x"].startswith("PerFrameFunctionalGroupsSequence[0]")
    assert md.scan_date == "2021-07-20T13:38:42.5-05:00"
    assert md.provenance["scan_date"] == "ContentDate + ContentTime"
    assert md.scanner == "Acme" and md.provenance["scanner"] == "Manufacturer"
    assert md.icc_profile == b"icc-bytes" and md.provenance["icc_profile"] == "ICCProfile"
    assert md.objective_power is None and "objective_power" not in md.provenance
    assert "barcode" not in md.provenance
    empty = dicom_metadata(Dataset())
    assert (empty.mpp_x, empty.scan_date, empty.scanner, empty.icc_profile) == (None, None, None, None)


def test_source_identity_lists_every_series_file(tmp_path: Path) -> None:
    """Opened through one file, the container's source record still hashes every file of the series."""
    src = shared_file(f"{CMU}/level-0-frames-0-30.dcm")
    dst = tmp_path / "one.csp"
    csp.convert(src, dst, verify=False)
    with csp.open_slide(dst) as s:
        source = s.metadata["source"]
    folder = src.parent
    want = sorted(n for n in os.listdir(folder) if n.endswith(".dcm"))
    assert [f["name"] for f in source["files"]] == want
    assert source["size"] == sum((folder / n).stat().st_size for n in want)
    for f in source["files"]:
        assert f["sha256"] == hashlib.sha256((folder / f["name"]).read_bytes()).hexdigest()


def test_further_focal_planes_are_counted_not_silently_lost() -> None:
    """Frames sharing a tile position (further focal planes / optical paths) are counted; the first
    frame per position is kept and the reader reports the others in ``csp.dicom.not-converted``."""
    from types import SimpleNamespace

    from csp.readers.dicom import _build_grid

    class Fake:
        columns, rows, n_frames, concat_offset = 32, 48, 3, 0

        def frames(self):
            return SimpleNamespace(count=3)

        def sparse_positions(self):
            return [(0, 0), (32, 0), (0, 0)]  # frame 3: a second focal plane of tile (0, 0)

    grid = _build_grid([Fake()], 64, 48, "level 0")  # type: ignore[list-item]
    assert grid.dropped == 1
    assert grid.frame_index.tolist() == [[0, 1]]
