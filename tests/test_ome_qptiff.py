"""OME-TIFF and QPTIFF readers: multi-channel, z and t kept, pixel-lossless against tifffile.

OpenSlide cannot read either format (it has no OME-TIFF or QPTIFF driver, and these files are stripped,
so its generic-tiff driver refuses them too; ``test_openslide_cannot_read`` pins that), so the reference
decode is tifffile's: every level, plane and channel of the container must equal tifffile's array
exactly, sample type included.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

import csp
from csp.cli.main import main
from csp.container import spec
from csp.container.reader import ContainerReader
from csp.container.verify import verify_container
from csp.conversion.pipeline import convert
from csp.errors import CspError
from csp.readers.ome_tiff import ome_metadata, parse_xml
from csp.registry import detect, open_source
from tests.conftest import shared_file

QPTIFF = "qptiff/small_vectra.qptiff"
OME_4D = "ome-tiff/4D-series.ome.tiff"


def _levels(path: Path) -> list[np.ndarray]:
    """tifffile's decode of every level of series 0."""
    with tifffile.TiffFile(path) as tf:
        return [lvl.asarray() for lvl in tf.series[0].levels]


def _as_tczyx(arr: np.ndarray, axes: str) -> np.ndarray:
    """A tifffile array as (T, C, Z, Y, X), missing axes of size 1 (S folded into C)."""
    if axes.endswith("S"):
        arr, axes = np.moveaxis(arr, -1, 0), "C" + axes[:-1]
    for ax in "TCZ":
        if ax not in axes:
            arr, axes = arr[np.newaxis], ax + axes
    return np.transpose(arr, [axes.index(a) for a in "TCZYX"])


def _check_container_equals_source(out: Path, src: Path) -> None:
    with tifffile.TiffFile(src) as tf:
        axes = tf.series[0].axes
    refs = [_as_tczyx(a, axes) for a in _levels(src)]
    with csp.open_slide(out) as slide:
        assert slide.plane_shape == refs[0].shape[0:3:2]
        assert slide.channel_count == refs[0].shape[1]
        for level, ref in enumerate(refs):
            assert slide.level_dimensions[level] == (ref.shape[4], ref.shape[3])
            for t in range(ref.shape[0]):
                for z in range(ref.shape[2]):
                    got = slide.read_region((0, 0), level, slide.level_dimensions[level], as_array=True,
                                            plane=(t, z))
                    assert got.dtype == ref.dtype
                    np.testing.assert_array_equal(np.moveaxis(got, 2, 0), ref[t, :, z])


def test_detect_picks_the_right_reader() -> None:
    assert detect(shared_file(QPTIFF)).match.reader == "qptiff"
    assert detect(shared_file(OME_4D)).match.reader == "ome-tiff"


def test_openslide_cannot_read() -> None:
    openslide = pytest.importorskip("openslide")
    for rel in (QPTIFF, OME_4D):
        with pytest.raises(openslide.OpenSlideError):
            openslide.OpenSlide(str(shared_file(rel)))


def test_qptiff_channels_lossless(tmp_path: Path) -> None:
    src = shared_file(QPTIFF)
    out = tmp_path / "vectra.csp"
    res = convert(src, out)
    assert res.reader == "qptiff" and res.levels[0]["mode"] == "pixel"
    _check_container_equals_source(out, src)
    verify_container(out, source=src)  # raises on any mismatch
    assert main(["verify", str(out), "--source", str(src)]) == 0
    with csp.open_slide(out) as slide:
        md = slide.metadata
        assert md["channel_names"] == ["DAPI", "FITC", "Cy3"]
        assert md["axes"] == ["c", "y", "x"]
        assert md["objective_power"] == 10.0
        assert md["mpp"]["x"] == pytest.approx(10000 / (4294967295 / 213260))
        assert set(md["provenance"]) >= {"mpp_x", "objective_power", "scanner", "scan_date", "channel_names"}
        assert md["scan_date"] == "2020-10-30T13:32:10"
        # three fluorescence channels on C; the PIL path renders the first three as R, G, B
        region = slide.read_region((256, 128), 0, (64, 48), as_array=True)
        rgba = np.asarray(slide.read_region((256, 128), 0, (64, 48)))
        np.testing.assert_array_equal(rgba[..., :3], region)
        with tifffile.TiffFile(src) as tf:
            thumb = tf.pages[3].asarray()
            label = tf.pages[5].asarray()
        assert sorted(slide.associated_images) == ["label", "macro", "thumbnail"]
        np.testing.assert_array_equal(slide._associated_array("thumbnail"), thumb)
        np.testing.assert_array_equal(slide._associated_array("label"), label)
        omero = slide.reader.attributes["ome"]["omero"]["channels"]
        assert [c["label"] for c in omero] == ["DAPI", "FITC", "Cy3"]


def test_ome_4d_series_is_5d(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    src = shared_file(OME_4D)
    out = tmp_path / "series.zarr"
    convert(src, out, layout="dir")
    _check_container_equals_source(out, src)
    verify_container(out, source=src)
    assert main(["verify", str(out), "--source", str(src)]) == 0
    ref = _levels(src)[0]  # (T, Z, Y, X) int8
    arr = zarr.open_array(str(out / "0"), mode="r")  # plain zarr-python sees the 5-D array
    assert arr.shape == (7, 1, 5, 167, 439) and arr.dtype == np.int8
    np.testing.assert_array_equal(arr[:, 0], ref)
    meta = json.loads((out / "0" / "zarr.json").read_text())
    assert meta["dimension_names"] == ["t", "c", "z", "y", "x"]
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert [a["type"] for a in attrs["ome"]["multiscales"][0]["axes"]] == [
        "time", "channel", "space", "space", "space"]
    assert attrs["csp"]["version"] == spec.FORMAT_VERSION and attrs["csp"]["planes"] == {"t": 7, "z": 5}
    with csp.open_slide(out) as slide:
        np.testing.assert_array_equal(slide.read_tile(0, 0, 0, t=6, z=4)[..., 0], ref[6, 4])
        with pytest.raises(ValueError):
            slide.read_tile(0, 0, 0, t=7)
        with pytest.raises(CspError, match="as_array=True"):
            slide.read_region((0, 0), 0, (10, 10))  # int8 samples have no RGBA rendering
    with ContainerReader(out) as cr:
        lay = cr.levels[0].layout
        assert (lay.size_t, lay.size_z, lay.is_5d) == (7, 5, True)
        assert cr.tile_bytes(cr.levels[0], 0, 0, t=3, z=2) is not None
    # re-converting the container keeps every plane (not only t=0, z=0)
    again = tmp_path / "again.csp"
    convert(out, again)
    verify_container(again, source=out)
    with csp.open_slide(again) as slide:
        for t, z in ((0, 0), (3, 2), (6, 4)):
            np.testing.assert_array_equal(slide.read_tile(0, 0, 0, t=t, z=z)[:167, :439, 0], ref[t, z])


def test_source_slide_reads_planes() -> None:
    src = shared_file(OME_4D)
    ref = _levels(src)[0]
    with csp.open_slide(src) as slide:
        got = slide.read_region((5, 7), 0, (100, 50), as_array=True, plane=(2, 3))
        np.testing.assert_array_equal(got[..., 0], ref[2, 3, 7:57, 5:105])


def _write_pyramid_ome(path: Path) -> np.ndarray:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:300, 0:200]
    data = np.stack([(yy * 150 + xx * 7) % 65536, 40000 - yy * xx % 9000]).astype(np.uint16)
    data = data + rng.integers(0, 64, data.shape, dtype=np.uint16)
    opts = {"tile": (64, 64), "compression": "zlib", "photometric": "minisblack"}
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(data, subifds=2, metadata={
            "axes": "CYX", "PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.25,
            "PhysicalSizeYUnit": "µm", "Channel": {"Name": ["DAPI", "CD8"]}}, **opts)
        tw.write(data[:, ::2, ::2], subfiletype=1, **opts)
        tw.write(data[:, ::4, ::4], subfiletype=1, **opts)
    return data


def test_synthetic_pyramidal_ome_uint16(tmp_path: Path) -> None:
    src = tmp_path / "pyr.ome.tif"
    _write_pyramid_ome(src)
    assert detect(src).match.reader == "ome-tiff"
    with open_source(src) as reader:
        assert [(lv.width, lv.height, lv.tile_width) for lv in reader.levels] == [
            (200, 300, 64), (100, 150, 64), (50, 75, 64)]
        assert reader.metadata.mpp_x == pytest.approx(0.25) and reader.metadata.mpp_y == pytest.approx(0.25)
    out = tmp_path / "pyr.csp"
    res = convert(src, out)
    assert [lv["mode"] for lv in res.levels] == ["pixel"] * 3
    _check_container_equals_source(out, src)
    verify_container(out, source=src)
    with csp.open_slide(out) as slide:
        assert slide.metadata["channel_names"] == ["DAPI", "CD8"]
        assert slide.dtype == np.uint16 and slide.plane_shape == (1, 1)


def test_synthetic_stripped_tczyx_uint16(tmp_path: Path) -> None:
    src = tmp_path / "tczyx.ome.tif"
    rng = np.random.default_rng(5)
    data = rng.integers(0, 4096, (2, 2, 3, 40, 530), dtype=np.uint16)  # wider than one 512 tile
    tifffile.imwrite(src, data, ome=True, rowsperstrip=7, compression="zlib", predictor=True,
                     photometric="minisblack", metadata={"axes": "TCZYX"})
    out = tmp_path / "tczyx.csp"
    convert(src, out)
    _check_container_equals_source(out, src)
    verify_container(out, source=src)
    with csp.open_slide(out) as slide:
        assert slide.plane_shape == (2, 3) and slide.channel_count == 2
        assert slide.level_count == 1  # no pyramid is built for 5-D levels


def test_ome_metadata_fields() -> None:
    xml = """<?xml version="1.0" encoding="UTF-8"?>
    <OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">
     <Instrument ID="Instrument:0"><Microscope Manufacturer="Zeiss" Model="Axio Scan.Z1"/>
      <Objective ID="Objective:0" NominalMagnification="20.0"/><Objective ID="Objective:1" NominalMagnification="40"/>
     </Instrument>
     <Image ID="Image:0" Name="slide"><AcquisitionDate>2021-03-04T05:06:07</AcquisitionDate>
      <InstrumentRef ID="Instrument:0"/><ObjectiveSettings ID="Objective:1"/>
      <Pixels PhysicalSizeX="0.5" PhysicalSizeY="500" PhysicalSizeYUnit="nm" SizeC="2">
       <Channel ID="Channel:0:0" Name="DAPI"/><Channel ID="Channel:0:1"/></Pixels></Image></OME>"""
    with tifffile.TiffFile(shared_file(OME_4D)) as tf:
        md = ome_metadata(parse_xml(xml), "slide", 0, 2, tf.pages[0], {})
    assert (md.mpp_x, md.mpp_y) == (pytest.approx(0.5), pytest.approx(0.5))
    assert md.objective_power == 40.0 and md.scanner == "Zeiss Axio Scan.Z1"
    assert md.scan_date == "2021-03-04T05:06:07"
    assert md.channel_names == ("DAPI", "Channel:0:1")
    assert md.provenance["objective_power"].startswith("OME")


def test_single_page_rgb_jpeg_ome_is_passed_through(tmp_path: Path) -> None:
    """An RGB OME-TIFF with JPEG tiles keeps its tile bytes (verify compares them with the source)."""
    yy, xx = np.mgrid[0:300, 0:200]
    rgb = np.stack([yy % 256, xx % 256, (xx + yy) % 256], -1).astype(np.uint8)
    src = tmp_path / "rgb.ome.tif"
    with tifffile.TiffWriter(src, ome=True) as tw:
        tw.write(rgb, subifds=1, tile=(64, 64), compression="jpeg", photometric="rgb")
        tw.write(rgb[::2, ::2], subfiletype=1, tile=(64, 64), compression="jpeg", photometric="rgb")
    out = tmp_path / "rgb.csp"
    res = convert(src, out)
    assert [(lv["mode"], lv["encoding"]) for lv in res.levels] == [("passthrough", "jpeg")] * 2
    report = verify_container(out, source=src)
    assert report.bytes_compared > 0
    _check_container_equals_source(out, src)
    with open_source(src) as reader:
        assert reader.read_tile_encoded(0, 1, 1)[:2] == b"\xff\xd8"


def _qpi_xml(kind: str, name: str = "", marker: str = "") -> str:
    extra = f"<Name>{name}</Name>" if name else ""
    extra += f"<Biomarker>{marker}</Biomarker>" if marker else ""
    return ('<?xml version="1.0" encoding="utf-16"?>\r\n<PerkinElmer-QPI-ImageDescription>'
            f"<DescriptionVersion>2</DescriptionVersion><AcquisitionSoftware>TestScope 2.1</AcquisitionSoftware>"
            f"<ImageType>{kind}</ImageType>{extra}<Objective>20x</Objective>"
            "</PerkinElmer-QPI-ImageDescription>")


def test_synthetic_tiled_qptiff_pyramid(tmp_path: Path) -> None:
    """A tiled QPTIFF with reduced-resolution pages: every level kept, channels named, extras found."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 60000, (2, 256, 192), dtype=np.uint16)
    src = tmp_path / "multiplex.qptiff"
    tiled = {"tile": (64, 64), "compression": "zlib", "photometric": "minisblack", "metadata": None,
             "software": "PerkinElmer-QPI", "resolution": (20000.0, 20000.0), "resolutionunit": "CENTIMETER"}
    flat = {"photometric": "rgb", "metadata": None, "software": "PerkinElmer-QPI"}
    rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    names = [("DAPI", ""), ("Opal 520", "CD8")]
    with tifffile.TiffWriter(src) as tw:
        for c, (name, marker) in enumerate(names):
            tw.write(data[c], description=_qpi_xml("FullResolution", name, marker), **tiled)
        tw.write(rgb, description=_qpi_xml("Thumbnail"), **flat)
        for k in (1, 2):
            for c, (name, marker) in enumerate(names):
                tw.write(data[c, :: 2**k, :: 2**k], description=_qpi_xml("ReducedResolution", name, marker),
                         **tiled)
        tw.write(rgb[::2], description=_qpi_xml("Overview"), **flat)
        tw.write(rgb[:, ::2], description=_qpi_xml("Label"), **flat)
    assert detect(src).match.reader == "qptiff"
    out = tmp_path / "multiplex.csp"
    res = convert(src, out)
    assert [(lv["width"], lv["height"], lv["mode"]) for lv in res.levels] == [
        (192, 256, "pixel"), (96, 128, "pixel"), (48, 64, "pixel")]
    _check_container_equals_source(out, src)
    verify_container(out, source=src)
    with csp.open_slide(out) as slide:
        md = slide.metadata
        assert md["channel_names"] == ["DAPI", "Opal 520 (CD8)"]
        assert md["mpp"] == {"x": pytest.approx(0.5), "y": pytest.approx(0.5)}
        assert md["objective_power"] == 20.0 and md["scanner"] == "TestScope 2.1"
        assert sorted(slide.associated_images) == ["label", "macro", "thumbnail"]
        np.testing.assert_array_equal(slide._associated_array("macro"), rgb[::2])
        with pytest.raises(CspError, match="uint16"):
            slide.get_thumbnail((32, 32))


def test_qptiff_pixel_size_from_xml_without_resolution_tags(tmp_path: Path) -> None:
    src = tmp_path / "one.qptiff"
    xml = _qpi_xml("FullResolution", "DAPI").replace(
        "</PerkinElmer-QPI-ImageDescription>",
        "<ScanProfile><root><ScanResolution ref='r'><PixelSizeMicrons>0.4972</PixelSizeMicrons>"
        "</ScanResolution></root></ScanProfile></PerkinElmer-QPI-ImageDescription>")
    data = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    tifffile.imwrite(src, data, description=xml, software="PerkinElmer-QPI", metadata=None, rowsperstrip=4,
                     compression="lzw", photometric="minisblack")
    with open_source(src) as reader:
        assert reader.name == "qptiff"
        md = reader.metadata
        assert (md.mpp_x, md.mpp_y) == (0.4972, 0.4972)
        assert "PixelSizeMicrons" in md.provenance["mpp_x"]
        assert md.channel_names == ("DAPI",)
        np.testing.assert_array_equal(reader.read_tile(0, 0, 0)[:30, :40, 0], data)


def test_float32_z_stack_with_nan(tmp_path: Path) -> None:
    src = tmp_path / "float.ome.tif"
    data = np.random.default_rng(9).random((3, 33, 45), dtype=np.float32)
    data[1, 5, 7] = np.nan
    tifffile.imwrite(src, data, ome=True, photometric="minisblack", metadata={"axes": "ZYX"})
    out = tmp_path / "float.csp"
    convert(src, out)
    _check_container_equals_source(out, src)
    verify_container(out, source=src)
    with csp.open_slide(out) as slide:
        assert slide.dtype == np.float32 and slide.plane_shape == (1, 3)


def test_3d_containers_keep_the_1_0_layout(tmp_path: Path) -> None:
    """Sources without t/z still give (c, y, x) arrays; a container marked 1.0 (no axes/planes) reads."""
    src = tmp_path / "pyr.ome.tif"
    data = _write_pyramid_ome(src)
    out = tmp_path / "pyr.zarr"
    convert(src, out, layout="dir")
    meta = json.loads((out / "0" / "zarr.json").read_text())
    assert meta["shape"] == [2, 300, 200] and meta["dimension_names"] == ["c", "y", "x"]
    assert (out / "0" / "c" / "0" / "0" / "0").is_file()
    root = json.loads((out / "zarr.json").read_text())
    block = root["attributes"]["csp"]
    assert block["axes"] == ["c", "y", "x"]
    block["version"] = "1.0"
    del block["axes"], block["planes"]
    (out / "zarr.json").write_text(json.dumps(root))
    with csp.open_slide(out) as slide:
        assert slide.plane_shape == (1, 1)
        got = slide.read_region((0, 0), 0, (200, 300), as_array=True)
        np.testing.assert_array_equal(np.moveaxis(got, 2, 0), data)


def test_deidentified_5d_conversion_keeps_every_plane(tmp_path: Path) -> None:
    """De-identification wraps the reader; planes still reach the converter and the verifier."""
    src = shared_file(OME_4D)
    out = tmp_path / "deid.csp"
    convert(src, out, deidentify=True)
    verify_container(out, source=src)
    ref = _levels(src)[0]
    with csp.open_slide(out) as slide:
        assert slide.metadata["deidentified"]["profile"]
        for t, z in ((0, 0), (6, 4)):
            np.testing.assert_array_equal(slide.read_tile(0, 0, 0, t=t, z=z)[:167, :439, 0], ref[t, z])
