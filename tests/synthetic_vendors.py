"""Writers of small, spec-faithful Leica SCN, Philips TIFF and Ventana BIF files for the tests.

No public sample of these formats is small enough to ship, so the tests build them: real H&E pixels
(a crop of ``svs/CMU-1-Small-Region.svs`` from the shared slides, decoded with tifffile) are cut into
256-pixel tiles, each tile is JPEG-encoded with imagecodecs, and the pre-encoded tiles are written
with :class:`tifffile.TiffWriter` (so the tests know every stored tile's exact bytes). The XML
metadata follows the layouts OpenSlide's ``leica``, ``philips-tiff`` and ``ventana`` drivers parse.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

TILE = 256
SOURCE_REL = "svs/CMU-1-Small-Region.svs"


@functools.lru_cache(maxsize=1)
def _source_level0(path: str) -> np.ndarray:
    with tifffile.TiffFile(path) as tf:
        return tf.pages[0].asarray()


def source_pixels(svs_path: str | Path, width: int, height: int, x: int = 200, y: int = 300) -> np.ndarray:
    """An RGB crop ``(height, width, 3)`` of the real slide's level 0 (read-only cached decode)."""
    img = _source_level0(str(svs_path))
    crop = img[y:y + height, x:x + width]
    if crop.shape[:2] != (height, width):
        raise ValueError(f"crop {width}x{height}+{x}+{y} exceeds the source image {img.shape[1]}x{img.shape[0]}")
    return np.ascontiguousarray(crop)


def downsample2(img: np.ndarray) -> np.ndarray:
    """2x mean downsample (odd edges dropped)."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    v = img[:h, :w].astype(np.uint16)
    return ((v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2] + 2) // 4).astype(np.uint8)


def pad_to(img: np.ndarray, width: int, height: int, value: int = 255) -> np.ndarray:
    """``img`` padded on the right/bottom to ``width`` x ``height`` with ``value``."""
    out = np.full((height, width, img.shape[2]), value, np.uint8)
    out[:img.shape[0], :img.shape[1]] = img[:height, :width]
    return out


@dataclass
class TiledImage:
    """A tiled TIFF page to write: pixels, JPEG tiles (row-major) and which tiles are left out."""

    pixels: np.ndarray
    tile: int = TILE
    quality: int = 85
    missing: frozenset[tuple[int, int]] = frozenset()
    tiles: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        h, w = self.pixels.shape[:2]
        across, down = -(-w // self.tile), -(-h // self.tile)
        padded = pad_to(self.pixels, across * self.tile, down * self.tile, 0)
        self.tiles = []
        for row in range(down):
            for col in range(across):
                if (col, row) in self.missing:
                    self.tiles.append(b"")
                    continue
                t = padded[row * self.tile:(row + 1) * self.tile, col * self.tile:(col + 1) * self.tile]
                self.tiles.append(imagecodecs.jpeg8_encode(np.ascontiguousarray(t), level=self.quality))

    @property
    def across(self) -> int:
        """Tile columns."""
        return -(-self.pixels.shape[1] // self.tile)


def _write_tiled(tw: tifffile.TiffWriter, image: TiledImage, **kwargs: object) -> None:
    tw.write(iter(image.tiles), shape=image.pixels.shape, dtype=np.uint8, tile=(image.tile, image.tile),
             compression="jpeg", photometric="rgb", **kwargs)


def _write_stripped_jpeg(tw: tifffile.TiffWriter, pixels: np.ndarray, **kwargs: object) -> None:
    tw.write(pixels, compression="jpeg", compressionargs={"level": 90}, photometric="rgb", rowsperstrip=16, **kwargs)


# ---- Philips TIFF --------------------------------------------------------------------------------
@dataclass
class PhilipsSpec:
    """What :func:`write_philips` stores (returned for the tests' reference)."""

    levels: list[TiledImage]
    level_sizes: list[tuple[int, int]]  # OpenSlide's (clipped) level sizes
    label: np.ndarray
    label_jpeg: bytes  # the base64-decoded PIM_DP_IMAGE_DATA
    macro: np.ndarray
    mpp: float


def _attr(name: str, value: str, vr: str = "IString", group: str = "0x0000", element: str = "0x0000") -> str:
    return f'<Attribute Name="{name}" Group="{group}" Element="{element}" PMSVR="{vr}">{value}</Attribute>'


def philips_xml(spacings_mm: Sequence[float], label_jpeg: bytes | None, *, wsi_count: int = 1,
                objective: int = 20) -> str:
    """A DPUfsImport document: one WSI DPScannedImage with one PixelDataRepresentation per level."""
    reps = "".join(
        '<DataObject ObjectType="PixelDataRepresentation">'
        + _attr("DICOM_PIXEL_SPACING", f"&quot;{s:.9g}&quot; &quot;{s:.9g}&quot;", "IDoubleArray", "0x0028", "0x0030")
        + _attr("PIIM_DP_PIXEL_DATA_REPRESENTATION_NUMBER", str(i), "IUInt16", "0x101D", "0x1009")
        + _attr("PIIM_PIXEL_DATA_REPRESENTATION_COLUMNS", str(4096 >> i), "IUInt32", "0x2001", "0x115E")
        + "</DataObject>"
        for i, s in enumerate(spacings_mm))
    wsi = (
        '<DataObject ObjectType="DPScannedImage">'
        + _attr("DICOM_DERIVATION_DESCRIPTION",
                f"tiff-useBigTIFF=1-useRgb=0-levels={objective},10002,10000-processing=0-q80-"
                "sourceFilename=&quot;T-0001-a-b&quot;", "IString", "0x0008", "0x2111")
        + _attr("DICOM_PIXEL_SPACING", f"&quot;{spacings_mm[0]:.9g}&quot; &quot;{spacings_mm[0]:.9g}&quot;",
                "IDoubleArray", "0x0028", "0x0030")
        + _attr("PIM_DP_IMAGE_TYPE", "WSI", "IString", "0x301D", "0x1004")
        + '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" Element="0x8B01" '
          'PMSVR="IDataObjectArray"><Array>' + reps + "</Array></Attribute>"
        + "</DataObject>")
    label = ""
    if label_jpeg is not None:
        label = ('<DataObject ObjectType="DPScannedImage">'
                 + _attr("PIM_DP_IMAGE_TYPE", "LABELIMAGE", "IString", "0x301D", "0x1004")
                 + _attr("PIM_DP_IMAGE_DATA", base64.b64encode(label_jpeg).decode(), "IString", "0x301D", "0x1005")
                 + "</DataObject>")
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<DataObject ObjectType="DPUfsImport">'
        + _attr("DICOM_MANUFACTURER", "PHILIPS", "IString", "0x0008", "0x0070")
        + _attr("DICOM_SOFTWARE_VERSIONS", "&quot;1.6.5505&quot; &quot;20111208_R44&quot;", "IStringArray",
                "0x0018", "0x1020")
        + _attr("PIM_DP_UFS_BARCODE", base64.b64encode(b"CSP-SYNTH-1").decode(), "IString", "0x301D", "0x1002")
        + _attr("DICOM_ACQUISITION_DATETIME", "20240102101112.000000", "IString", "0x0008", "0x002A")
        + '<Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x301D" Element="0x1003" PMSVR="IDataObjectArray">'
        + "<Array>" + wsi * wsi_count + label + "</Array></Attribute></DataObject>")


def write_philips(path: str | Path, svs_path: str | Path, *, sparse: Sequence[tuple[int, int, int]] = (),
                  wsi_count: int = 1) -> PhilipsSpec:
    """Write a 3-level Philips TIFF (level 0 1024x768; padded lower levels like the scanner's).

    ``sparse`` lists ``(level, col, row)`` tiles stored with TileByteCounts 0 (unscanned area).
    Level 1 is stored 768x512 (one padding tile column beyond its 512x384 extent), level 2 256x256.
    The label is a base64 JPEG in the XML; the macro is a stripped directory described ``Macro``.
    """
    base = source_pixels(svs_path, 1024, 768)
    l1, l2 = downsample2(base), downsample2(downsample2(base))
    pages = [base, pad_to(l1, 768, 512), pad_to(l2, 256, 256)]
    levels = [TiledImage(p, missing=frozenset((c, r) for lv, c, r in sparse if lv == i))
              for i, p in enumerate(pages)]
    label = source_pixels(svs_path, 200, 160, 1500, 2500)
    macro = source_pixels(svs_path, 320, 120, 100, 2000)
    mpp = 0.25
    label_jpeg = bytes(imagecodecs.jpeg8_encode(label, level=90))
    xml = philips_xml([mpp / 1000 * 2 ** i for i in range(3)], label_jpeg, wsi_count=wsi_count)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        _write_tiled(tw, levels[0], description=xml, software="Philips DP v1.0", metadata=None)
        for lv in levels[1:]:
            _write_tiled(tw, lv, subfiletype=1, software="Philips DP v1.0", metadata=None)
        _write_stripped_jpeg(tw, macro, description="Macro", software="Philips DP v1.0", metadata=None)
    return PhilipsSpec(levels, [(1024, 768), (512, 384), (256, 192)], label, label_jpeg, macro, mpp)


# ---- Leica SCN -----------------------------------------------------------------------------------
LEICA_NS = "http://www.leica-microsystems.com/scn/2010/10/01"


@dataclass
class LeicaSpec:
    """What :func:`write_leica` stores."""

    levels: list[TiledImage]
    macro: np.ndarray
    offset_px: tuple[int, int]  # main image offset in OpenSlide level-0 pixels
    mpp: float


def _leica_image(name: str, dims: Sequence[tuple[int, int, int]], view: tuple[int, int, int, int],
                 illumination: str, objective: str) -> str:
    dim_xml = "".join(f'<dimension sizeX="{w}" sizeY="{h}" r="{r}" ifd="{ifd}" />'
                      for r, (w, h, ifd) in enumerate(dims))
    sx, sy, ox, oy = view
    return (
        f'<image name="{name}" uuid="urn:uuid:{abs(hash(name)) % 10**8:08d}-0000-0000-0000-000000000000">'
        "<creationDate>2012-06-08T12:25:02.84Z</creationDate>"
        '<device model="Leica SCN400;Leica SCN" version="1.4.0.11084 2012/06/01 10:57:55;1.4.0.11088" />'
        f'<pixels sizeX="{dims[0][0]}" sizeY="{dims[0][1]}">{dim_xml}</pixels>'
        f'<view sizeX="{sx}" sizeY="{sy}" offsetX="{ox}" offsetY="{oy}" spacingZ="NaN" />'
        "<scanSettings><objectiveSettings><objective>" + objective + "</objective></objectiveSettings>"
        "<illuminationSettings><numericalAperture>0.55</numericalAperture>"
        f"<illuminationSource>{illumination}</illuminationSource></illuminationSettings></scanSettings>"
        "</image>")


def write_leica(path: str | Path, svs_path: str | Path, *, main_images: int = 1,
                illumination: str = "brightfield") -> LeicaSpec:
    """Write a Leica SCN BigTIFF: a 3-level macro (dirs 0-2) and a 3-level main image (dirs 3-5).

    The collection is 3072x2048 level-0 pixels at 500 nm/px; the 1024x768 main image sits at pixel
    (512, 256). ``main_images`` > 1 repeats the main image (the layout CSP refuses).
    """
    nm = 500
    base = source_pixels(svs_path, 1024, 768)
    mains = [base, downsample2(base), downsample2(downsample2(base))]
    macro0 = source_pixels(svs_path, 384, 256, 0, 0)
    macros = [macro0, downsample2(macro0), downsample2(downsample2(macro0))]
    coll_w, coll_h = 3072 * nm, 2048 * nm
    ox, oy = 512 * nm, 256 * nm
    levels = [TiledImage(m) for m in mains]
    images = [_leica_image("macro", [(m.shape[1], m.shape[0], i) for i, m in enumerate(macros)],
                           (coll_w, coll_h, 0, 0), "brightfield", "1.25")]
    for k in range(main_images):
        images.append(_leica_image(f"main{k}", [(m.shape[1], m.shape[0], 3 + i) for i, m in enumerate(mains)],
                                   (1024 * nm, 768 * nm, ox + k * 10 * nm, oy), illumination, "20"))
    xml = ('<?xml version="1.0" encoding="utf-8"?>\n'
           f'<scn xmlns="{LEICA_NS}"><collection name="synthetic" '
           f'uuid="urn:uuid:00000000-0000-0000-0000-000000000001" sizeX="{coll_w}" sizeY="{coll_h}">'
           f"<barcode>{base64.b64encode(b'LEICA-SYNTH').decode()}</barcode>"
           + "".join(images) + "</collection></scn>")
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, m in enumerate(macros):
            res = (1e4 / (nm * 1e-3 * 8 * 2 ** i),) * 2  # pixels per cm
            _write_tiled(tw, TiledImage(m), description=xml if i == 0 else None, resolution=res,
                         resolutionunit="CENTIMETER", software="Leica SCN", metadata=None)
        for i, lv in enumerate(levels):
            res = (1e4 / (nm * 1e-3 * 2 ** i),) * 2
            _write_tiled(tw, lv, resolution=res, resolutionunit="CENTIMETER", metadata=None)
    return LeicaSpec(levels, macro0, (512, 256), nm / 1000)


# ---- Ventana BIF ---------------------------------------------------------------------------------
@dataclass
class VentanaSpec:
    """What :func:`write_ventana` stores."""

    levels: list[TiledImage]
    label: np.ndarray
    thumbnail: np.ndarray
    mpp: float


def _serpentine_number(col: int, row_from_bottom: int, across: int) -> int:
    """1-based BIF tile number: rows from the bottom, odd rows numbered right to left."""
    c = across - 1 - col if row_from_bottom % 2 else col
    return row_from_bottom * across + c + 1


def bif_encode_info(across: int, down: int, tile: int, overlap: tuple[int, int] = (0, 0),
                    pos: tuple[int, int] = (0, 0)) -> str:
    """Level-0 EncodeInfo XML: one scanned AOI at the origin with RIGHT/UP joints of ``overlap``."""
    joints = []
    for r_top in range(down):
        rb = down - 1 - r_top
        for col in range(across):
            if col + 1 < across:
                joints.append(
                    f'<TileJointInfo FlagJoined="1" Confidence="95" Direction="RIGHT" '
                    f'Tile1="{_serpentine_number(col, rb, across)}" Tile2="{_serpentine_number(col + 1, rb, across)}" '
                    f'OverlapX="{overlap[0]}" OverlapY="0"/>')
            if r_top > 0:
                joints.append(
                    f'<TileJointInfo FlagJoined="1" Confidence="90" Direction="UP" '
                    f'Tile1="{_serpentine_number(col, rb, across)}" Tile2="{_serpentine_number(col, rb + 1, across)}" '
                    f'OverlapX="0" OverlapY="{overlap[1]}"/>')
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<EncodeInfo Ver="2">'
        '<SlideInfo><AoiInfo XIMAGESIZE="256" YIMAGESIZE="256" NumRows="1" NumCols="1" Pos-X="0" Pos-Y="0"/>'
        "</SlideInfo>"
        '<AoiOrigin><AOI0 OriginX="0" OriginY="0"/></AoiOrigin>'
        "<SlideStitchInfo>"
        f'<ImageInfo AOIScanned="1" AOIIndex="0" Width="{tile}" Height="{tile}" NumRows="{down}" '
        f'NumCols="{across}" Pos-X="{pos[0]}" Pos-Y="{pos[1]}">' + "".join(joints) + "</ImageInfo>"
        "</SlideStitchInfo></EncodeInfo>")


def iscan_xml(mpp: float, magnification: int) -> str:
    """The initial XMP packet of a BIF (``<iScan>`` with scan attributes)."""
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<iScan BuildDate="01/02/2019" BuildVersion="3.3.1.1" CameraType="SYN" Magnification="{magnification}" '
            f'ScanRes="{mpp}" ScannerModel="VENTANA DP 200" UnitNumber="SYN001" Z-layers="1" '
            'SlideAnnotation="" ScanWhitePoint="235" ScanMode="regular" FocusMode="auto" '
            'LabelBoundary="15.25,62.25,79.0,62.25,79.0,-3.5,15.25,-3.5">'
            '<AOI0 Left="100" Top="200" Right="900" Bottom="700"/></iScan>')


def write_ventana(path: str | Path, svs_path: str | Path, *, overlap: tuple[int, int] = (0, 0),
                  aoi_pos: tuple[int, int] = (0, 0), encode_info: bool = True) -> VentanaSpec:
    """Write a Ventana BIF: label (dir 0, with the iScan XMP), thumbnail, then levels 0-2.

    Level 0 is 1024x768 (4x3 tiles of 256), magnification 40/20/10; the level-0 directory carries the
    EncodeInfo XMP whose tile joints all have ``overlap`` and whose AOI lies at ``aoi_pos`` (``Pos-X``,
    ``Pos-Y``). ``encode_info=False`` leaves it out (a plain "Ventana TIFF" without stitching data).
    """
    mpp, mag = 0.25, 40
    base = source_pixels(svs_path, 1024, 768)
    levels = [TiledImage(base), TiledImage(downsample2(base)), TiledImage(downsample2(downsample2(base)))]
    label = source_pixels(svs_path, 240, 200, 1600, 2600)
    thumb = downsample2(downsample2(downsample2(base)))
    xmp_tag = 700
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        _write_stripped_jpeg(tw, label, description="Label Image", metadata=None,
                             extratags=[(xmp_tag, 1, 0, iscan_xml(mpp, mag).encode(), True)])
        _write_stripped_jpeg(tw, thumb, description="Thumbnail", metadata=None)
        for i, lv in enumerate(levels):
            extratags = []
            if i == 0 and encode_info:
                info = bif_encode_info(4, 3, TILE, overlap, aoi_pos)
                extratags = [(xmp_tag, 1, 0, info.encode(), True)]
            _write_tiled(tw, lv, description=f"level={i} mag={mag >> i} quality=90", metadata=None,
                         extratags=extratags)
    return VentanaSpec(levels, label, thumb, mpp)


def tile_bytes(spec_levels: Sequence[TiledImage]) -> Iterator[tuple[int, int, int, bytes]]:
    """``(level, col, row, bytes)`` of every stored tile of the given levels."""
    for i, lv in enumerate(spec_levels):
        for k, data in enumerate(lv.tiles):
            yield i, k % lv.across, k // lv.across, data
