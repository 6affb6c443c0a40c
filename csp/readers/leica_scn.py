"""Leica SCN source reader.

Follows OpenSlide's ``leica`` driver: a (Big)TIFF whose directory 0 is tiled and whose directory-0
ImageDescription is an ``scn`` XML document in the Leica namespace (2010/10/01 or 2010/03/10).
``/scn/collection`` (``sizeX``/``sizeY`` in nm) holds ``image`` elements; each has a ``view``
(size and offset in nm) and ``pixels/dimension`` elements mapping TIFF directories (``ifd``) to
resolutions (z-plane 0 only, largest first). An image whose view covers the whole collection at
offset 0 is the macro image (associated image ``macro``, its largest dimension); the other image is
the main image, whose dimensions are the pyramid levels.

CSP supports exactly one brightfield main image. Slides with several main images (OpenSlide
composites them on the collection canvas) or with a fluorescence main image are refused with
:class:`~csp.errors.UnsupportedFormatError`.

Deliberate difference from OpenSlide: OpenSlide's level 0 is the whole collection canvas (main image
placed at its view offset, the rest transparent); CSP's level 0 is the main image itself. OpenSlide's
``openslide.bounds-x``/``-y`` (the offset) are recorded as ``leica.main-image.offset-x``/``-y`` so a
location in CSP level-0 pixels is OpenSlide's location minus that offset.

Properties: ``tiff.*`` of the main image's level-0 directory (without ImageDescription) and
``leica.*`` (barcode, aperture, creation-date, device-model, device-version, illumination-source,
objective) as OpenSlide names them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import xml.etree.ElementTree as ET
from typing import Any, ClassVar

import numpy as np

from csp.errors import CorruptSlideError, UnsupportedFormatError
from csp.readers.base import AssociatedImage, Match, Reject, SlideMetadata
from csp.readers.tiff_common import (
    TAG_IMAGEDESCRIPTION,
    TiffLevel,
    TiffSlideReader,
    associated_image,
    compression_name,
    decode_problem,
    has_tile_tags,
    icc_profile,
    make_level,
    quiet_tifffile,
    read_tag_float,
    read_tag_string,
    resolution_unit,
    tiff_metadata,
    tiff_properties,
)

LEICA_NAMESPACES = (
    "http://www.leica-microsystems.com/scn/2010/10/01",
    "http://www.leica-microsystems.com/scn/2010/03/10",
)
BRIGHTFIELD = "brightfield"


@dataclasses.dataclass(frozen=True)
class LeicaImage:
    """One ``image`` element of the collection."""

    name: str
    is_macro: bool
    illumination: str | None
    objective: str | None
    aperture: str | None
    creation_date: str | None
    device_model: str | None
    device_version: str | None
    view: tuple[int, int, int, int]  # sizeX, sizeY, offsetX, offsetY (nm)
    dimensions: tuple[tuple[int, int, int], ...]  # (ifd, width, height), z-plane 0, widest first


@dataclasses.dataclass(frozen=True)
class LeicaCollection:
    """The parsed ``/scn/collection``."""

    namespace: str
    size: tuple[int, int]  # nm
    barcode: str | None
    images: tuple[LeicaImage, ...]


def _int_attr(node: ET.Element, name: str, what: str) -> int:
    value = node.get(name)
    if value is None:
        raise ValueError(f"{what} has no {name} attribute")
    try:
        return int(value.strip())
    except ValueError as exc:
        raise ValueError(f"{what} attribute {name}={value!r} is not an integer") from exc


def parse_leica_xml(text: str) -> LeicaCollection:
    """Parse a Leica ImageDescription into a :class:`LeicaCollection`.

    Raises
    ------
    ValueError
        Not XML, not in a Leica namespace, or a required element/attribute is missing.
    """
    if not any(ns in text for ns in LEICA_NAMESPACES):
        raise ValueError("ImageDescription does not mention the Leica SCN XML namespace")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"ImageDescription is not XML: {exc}") from exc
    ns = next((n for n in LEICA_NAMESPACES if root.tag == f"{{{n}}}scn"), None)
    if ns is None:
        raise ValueError(f"XML root is {root.tag}, not scn in the Leica default namespace")
    q = f"{{{ns}}}"
    coll = root.find(f"{q}collection")
    if coll is None:
        raise ValueError("no collection element")
    size = (_int_attr(coll, "sizeX", "collection"), _int_attr(coll, "sizeY", "collection"))
    barcode_node = coll.find(f"{q}barcode")
    barcode: str | None
    if barcode_node is not None and barcode_node.text is not None:
        try:
            barcode = base64.b64decode(barcode_node.text.strip()).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            barcode = None
    else:
        barcode = coll.get("barcode")

    def text_of(node: ET.Element, path: str) -> str | None:
        found = node.find(path)
        return None if found is None else (found.text or "")

    images = []
    for index, img in enumerate(coll.findall(f"{q}image")):
        what = f"image {index}"
        view = img.find(f"{q}view")
        if view is None:
            raise ValueError(f"{what} has no view element")
        vx, vy = _int_attr(view, "sizeX", f"{what} view"), _int_attr(view, "sizeY", f"{what} view")
        ox, oy = _int_attr(view, "offsetX", f"{what} view"), _int_attr(view, "offsetY", f"{what} view")
        dims = []
        for dim in img.findall(f"{q}pixels/{q}dimension"):
            z = dim.get("z")
            if z is not None and z != "0":
                continue
            dims.append((_int_attr(dim, "ifd", f"{what} dimension"), _int_attr(dim, "sizeX", f"{what} dimension"),
                         _int_attr(dim, "sizeY", f"{what} dimension")))
        if not dims:
            raise ValueError(f"{what} has no dimension in z-plane 0")
        dims.sort(key=lambda d: -d[1])  # stable, like OpenSlide's width sort
        device = img.find(f"{q}device")
        settings = f"{q}scanSettings/{q}"
        images.append(LeicaImage(
            name=img.get("name", f"image{index}"),
            is_macro=(ox == 0 and oy == 0 and (vx, vy) == size),
            illumination=text_of(img, f"{settings}illuminationSettings/{q}illuminationSource"),
            objective=text_of(img, f"{settings}objectiveSettings/{q}objective"),
            aperture=text_of(img, f"{settings}illuminationSettings/{q}numericalAperture"),
            creation_date=text_of(img, f"{q}creationDate"),
            device_model=None if device is None else device.get("model"),
            device_version=None if device is None else device.get("version"),
            view=(vx, vy, ox, oy),
            dimensions=tuple(dims),
        ))
    if not images:
        raise ValueError("collection has no image")
    return LeicaCollection(ns, size, barcode, tuple(images))


def _check_leica(tiff: Any) -> LeicaCollection:
    page0 = tiff.pages[0]
    if not has_tile_tags(page0):
        raise ValueError("directory 0 is not tiled")
    description = read_tag_string(page0, TAG_IMAGEDESCRIPTION, tiff.filehandle.fileno())
    if description is None:
        raise ValueError("directory 0 has no ImageDescription")
    return parse_leica_xml(description)


def _main_and_macro(path: str, coll: LeicaCollection) -> tuple[LeicaImage, LeicaImage | None]:
    mains = [im for im in coll.images if not im.is_macro]
    if len(mains) != 1:
        raise UnsupportedFormatError(
            path, f"Leica SCN with {len(mains)} main images: only slides with exactly one main image are "
                  "supported (multi-region/multi-image layouts are not)")
    main = mains[0]
    if main.illumination != BRIGHTFIELD:
        raise UnsupportedFormatError(
            path, f"Leica SCN main image illumination is {main.illumination!r}: only brightfield is supported "
                  "(fluorescence layouts are not)")
    macros = [im for im in coll.images if im.is_macro and im.illumination == BRIGHTFIELD]
    if len(macros) > 1:
        raise CorruptSlideError(path, f"found {len(macros)} brightfield macro images")
    return main, (macros[0] if macros else None)


def _leica_properties(coll: LeicaCollection, main: LeicaImage) -> dict[str, str]:
    props: dict[str, str] = {}
    for key, value in (("leica.barcode", coll.barcode), ("leica.aperture", main.aperture),
                       ("leica.creation-date", main.creation_date), ("leica.device-model", main.device_model),
                       ("leica.device-version", main.device_version),
                       ("leica.illumination-source", main.illumination), ("leica.objective", main.objective)):
        if value is not None:
            props[key] = value
    return props


def leica_metadata(properties: dict[str, str], page: Any, main: LeicaImage, icc: bytes | None) -> SlideMetadata:
    """Unified metadata: MPP from the level-0 resolution tags (centimetre unit, as OpenSlide), else from
    the XML view size over the dimension size; objective, date and device from ``leica.*``."""
    fields: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    if resolution_unit(page) == 3:
        for axis, code in (("x", 282), ("y", 283)):
            res = read_tag_float(page, code)
            if res is not None and math.isfinite(res) and res > 0:
                fields[f"mpp_{axis}"] = 10000.0 / float(np.float32(res))  # libtiff returns a float
                provenance[f"mpp_{axis}"] = f"tiff.{axis.upper()}Resolution (centimeter) of the main image level 0"
    _, w0, h0 = main.dimensions[0]
    for axis, nm, px in (("x", main.view[0], w0), ("y", main.view[1], h0)):
        if f"mpp_{axis}" not in fields and nm > 0 and px > 0:
            fields[f"mpp_{axis}"] = nm / px / 1000.0
            provenance[f"mpp_{axis}"] = f"leica view size{axis.upper()} (nm) / dimension size{axis.upper()} (px)"
    objective = properties.get("leica.objective")
    if objective:
        try:
            power = float(objective)
        except ValueError:
            power = float("nan")
        if math.isfinite(power) and power > 0:
            fields["objective_power"] = power
            provenance["objective_power"] = "leica.objective"
    if properties.get("leica.creation-date"):
        fields["scan_date"] = properties["leica.creation-date"]
        provenance["scan_date"] = "leica.creation-date"
    if properties.get("leica.device-model"):
        fields["scanner"] = properties["leica.device-model"]
        provenance["scanner"] = "leica.device-model"
    if properties.get("leica.barcode"):
        fields["barcode"] = properties["leica.barcode"]
        provenance["barcode"] = "leica.barcode (collection <barcode>)"
    return tiff_metadata("leica", fields, provenance, icc, "tiff tag 34675 (main image level 0)")


class LeicaScnReader(TiffSlideReader):
    """Reader of Leica SCN slides with one brightfield main image."""

    name: ClassVar[str] = "leica-scn"

    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept tiled TIFFs whose directory-0 ImageDescription is Leica SCN XML."""
        with quiet_tifffile():
            tiff = probe.tiff
            if tiff is None:
                return Reject(cls.name, probe.tiff_error or "not a TIFF file")
            try:
                coll = _check_leica(tiff)
                codec = compression_name(int(tiff.pages[0].compression))
            except ValueError as exc:
                return Reject(cls.name, str(exc))
            except Exception as exc:  # noqa: BLE001 - damaged IFDs raise many types
                return Reject(cls.name, f"TIFF structure unreadable: {exc}")
        mains = sum(1 for im in coll.images if not im.is_macro)
        return Match(cls.name, f"Leica SCN, {len(coll.images)} image(s) ({mains} main), {codec} tiles")

    @classmethod
    def _build(cls, path: str, tiff: Any) -> LeicaScnReader:
        fd = tiff.filehandle.fileno()
        try:
            coll = _check_leica(tiff)
        except ValueError as exc:
            raise UnsupportedFormatError(path, f"not a Leica SCN slide: {exc}") from exc
        main, macro = _main_and_macro(path, coll)
        pages = tiff.pages
        npages = len(pages)

        def page_of(ifd: int, what: str) -> Any:
            if not 0 <= ifd < npages:
                raise CorruptSlideError(path, f"{what} refers to directory {ifd}; the file has {npages}")
            return pages[ifd]

        levels: list[TiffLevel] = []
        for ifd, _w, _h in main.dimensions:
            page = page_of(ifd, "main image dimension")
            if not has_tile_tags(page):
                raise CorruptSlideError(path, f"main image directory {ifd} is not tiled")
            problem = decode_problem(page)
            if problem is not None:
                raise UnsupportedFormatError(path, f"{problem} (directory {ifd})")
            levels.append(make_level(path, ifd, page))
        first = levels[0].level
        for lv in levels[1:]:
            if (lv.level.channels, lv.level.dtype) != (first.channels, first.dtype):
                raise UnsupportedFormatError(path, f"directory {lv.page_index} has other samples than level 0")

        associated: dict[str, tuple[int, AssociatedImage]] = {}
        if macro is not None:
            ifd = macro.dimensions[0][0]
            associated["macro"] = (ifd, associated_image("macro", ifd, page_of(ifd, "macro dimension")))

        page0 = pages[levels[0].page_index]
        properties = tiff_properties(page0, fd)
        properties.pop("tiff.ImageDescription", None)
        properties.update(_leica_properties(coll, main))
        nm_per_px = main.view[0] / main.dimensions[0][1]  # OpenSlide uses the x density for both axes
        properties["leica.main-image.offset-x"] = str(int(main.view[2] / nm_per_px))
        properties["leica.main-image.offset-y"] = str(int(main.view[3] / nm_per_px))
        metadata = leica_metadata(properties, page0, main, icc_profile(page0))
        return cls(path, tiff, levels, associated, properties, metadata)
