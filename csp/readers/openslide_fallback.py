"""OpenSlide fallback reader: any slide OpenSlide opens that no native CSP reader claims.

It is registered last, so it only sees files every native reader refused (MIRAX, Hamamatsu VMS/VMU,
Sakura, Trestle, ... and, until their native readers exist, NDPI and friends). Nothing is passed
through: tiles are OpenSlide's *decoded* pixels, which the converter stores pixel-lossless (the level
encoding id :data:`DECODED_CODEC` is not a storable codec, so the planner gives every level mode
``"pixel"``; :attr:`SlideMetadata.provenance` ``["pixels"]`` says OpenSlide decoded them).

Pixel grid (the choice that makes the container equal OpenSlide pixel for pixel)
    A stored level is exactly ``read_region((0, 0), level, level_dimensions[level])``, the whole level
    as OpenSlide paints it. OpenSlide places a region at level coordinate ``location / downsample`` and
    resamples when that is fractional; a full-level read is internally split into 4096x4096 areas at
    level-0 locations ``int(col * 4096 * downsample)``.

    * Integer downsample (the usual case): tile ``(col, row)`` is read at level-0 location
      ``(col * 512 * ds, row * 512 * ds)``, which lands exactly on level pixel ``(col * 512, row * 512)``;
      those pixels equal the full-level read and OpenSlide's ``read_region`` at any integer level pixel.
    * Non-integer downsample: the reader issues the very 4096x4096 area reads OpenSlide makes for a
      full-level read and cuts tiles out of them (512 divides 4096; an LRU cache of
      :data:`AREA_CACHE_BYTES` keeps recent areas, so a level wider than about five areas is decoded
      up to 8 times over when tiles are read row by row).

Alpha
    OpenSlide returns premultiplied ARGB. CSP stores RGB: the premultiplied colour samples exactly as
    OpenSlide produced them, so opaque pixels are unchanged and transparent areas (no scanned data)
    keep OpenSlide's value, black. Alpha itself is dropped. Pixels beyond the level's width/height in
    padded edge tiles are zero.

Properties are OpenSlide's, all kept verbatim (``openslide.*`` included); the unified metadata takes
MPP and objective power from ``openslide.mpp-x/-y`` and ``openslide.objective-power``. Associated
images are OpenSlide's ``associated_images`` as RGB.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from ctypes import POINTER, c_uint32
from typing import Any, ClassVar

import numpy as np

from csp.errors import CodecError, CorruptSlideError, UnsupportedFormatError
from csp.readers.aperio import parse_double
from csp.readers.base import (
    AssociatedImage,
    Match,
    Reject,
    SlideMetadata,
    SlideReader,
    SourceLevel,
    TileEncoding,
)

#: Stored tile size of every level (must divide :data:`OPENSLIDE_AREA`).
TILE = 512
#: OpenSlide splits ``read_region`` requests into areas of this many level pixels per side.
OPENSLIDE_AREA = 4096
#: Encoding id of OpenSlide-decoded levels: not a storable codec, so levels are stored as pixels.
DECODED_CODEC = "openslide-decoded"
#: Memory for cached 4096x4096 areas of non-integer-downsample levels.
AREA_CACHE_BYTES = 256 << 20
NOT_INSTALLED = "openslide-python not installed"


def _import_openslide() -> Any | None:
    """The ``openslide`` module, or ``None`` when openslide-python is not installed."""
    try:
        import openslide
    except ImportError:
        return None
    return openslide


def premultiplied_rgb(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied RGB from openslide-python's straight (un-premultiplied) RGBA.

    openslide-python divides OpenSlide's premultiplied samples by alpha, truncating
    (``c' = c * 255 // a``); ``ceil(c' * a / 255)`` recovers ``c`` exactly for every ``a`` and ``c <= a``.
    Opaque pixels are returned unchanged, fully transparent ones as 0.
    """
    rgb = np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3]
    partial = alpha != 255
    if partial.any():
        a = alpha[partial].astype(np.uint32)[:, None]
        rgb[partial] = ((rgb[partial].astype(np.uint32) * a + 254) // 255).astype(np.uint8)
    return rgb


def _argb_to_rgb(argb: np.ndarray) -> np.ndarray:
    """RGB samples of OpenSlide's native-endian premultiplied ARGB words."""
    b = argb.view(np.uint8).reshape(*argb.shape, 4)
    if sys.byteorder == "little":  # bytes B, G, R, A
        return np.ascontiguousarray(b[..., 2::-1])
    return np.ascontiguousarray(b[..., 1:])


def _exact_integer(ds: float) -> int | None:
    """``ds`` as an int when it is an exact integer >= 1, else ``None``."""
    return int(ds) if ds >= 1 and float(ds).is_integer() else None


class OpenSlideFallbackReader(SlideReader):
    """Reader of any slide OpenSlide opens; pixels are decoded by OpenSlide (never passed through)."""

    name: ClassVar[str] = "openslide-fallback"

    def __init__(self, path: str, slide: Any, vendor: str) -> None:
        self.path = path
        self._slide = slide
        self._vendor = vendor
        self._downsamples = tuple(float(d) for d in slide.level_downsamples)
        self._dims = tuple((int(w), int(h)) for w, h in slide.level_dimensions)
        self._areas: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._area_bytes = 0
        self._use_raw = True
        self.levels = tuple(
            SourceLevel(w, h, TILE, TILE, 3, "uint8",
                        TileEncoding(DECODED_CODEC, {"vendor": vendor, "downsample": ds}))
            for (w, h), ds in zip(self._dims, self._downsamples, strict=True))
        self.properties = {str(k): str(v) for k, v in slide.properties.items()}
        self.associated = {
            name: AssociatedImage(name, *self._associated_size(name), 3,
                                  source_tag=f"OpenSlide associated image {name!r}")
            for name in slide.associated_images}
        self.metadata = self._build_metadata()

    # ---- detection
    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept files OpenSlide recognises *and* opens (it only runs after every native reader)."""
        openslide = _import_openslide()
        if openslide is None:
            return Reject(cls.name, NOT_INSTALLED)
        try:
            vendor = openslide.OpenSlide.detect_format(probe.path)
        except Exception as exc:  # noqa: BLE001 - the C library reports many kinds of failure
            return Reject(cls.name, f"OpenSlide cannot inspect the file: {exc}")
        if vendor is None:
            return Reject(cls.name, "OpenSlide does not recognise the file")
        try:
            openslide.OpenSlide(probe.path).close()
        except Exception as exc:  # noqa: BLE001
            return Reject(cls.name, f"OpenSlide recognises {vendor!r} but cannot open it: {exc}")
        return Match(cls.name, f"OpenSlide format {vendor!r}: pixels decoded by OpenSlide, not passed through")

    @classmethod
    def open(cls, probe: Any) -> OpenSlideFallbackReader:
        """Open the file with OpenSlide.

        Raises
        ------
        UnsupportedFormatError
            openslide-python is missing or OpenSlide does not recognise the file.
        CorruptSlideError
            OpenSlide recognises the format but fails to open the file.
        """
        path = probe.path
        openslide = _import_openslide()
        if openslide is None:
            raise UnsupportedFormatError(path, NOT_INSTALLED)
        try:
            vendor = openslide.OpenSlide.detect_format(path)
        except Exception as exc:
            raise UnsupportedFormatError(path, f"OpenSlide cannot inspect the file: {exc}") from exc
        if vendor is None:
            raise UnsupportedFormatError(path, "OpenSlide does not recognise the file")
        try:
            slide = openslide.OpenSlide(path)
        except Exception as exc:
            raise CorruptSlideError(path, f"OpenSlide recognises {vendor!r} but cannot open it: {exc}") from exc
        try:
            return cls(path, slide, vendor)
        except Exception as exc:
            slide.close()
            if isinstance(exc, CorruptSlideError | UnsupportedFormatError):
                raise
            raise CorruptSlideError(path, f"OpenSlide failed while reading the slide's structure: {exc}") from exc

    # ---- metadata
    def _associated_size(self, name: str) -> tuple[int, int]:
        w = self.properties.get(f"openslide.associated.{name}.width")
        h = self.properties.get(f"openslide.associated.{name}.height")
        if w is not None and h is not None:
            return int(w), int(h)
        img = self._slide.associated_images[name]
        return int(img.size[0]), int(img.size[1])

    def _icc_profile(self) -> bytes | None:
        from openslide import lowlevel

        read = getattr(lowlevel, "read_icc_profile", None)
        if read is None:
            return None
        try:
            data = read(self._slide._osr)
        except Exception:  # noqa: BLE001 - older OpenSlide without ICC support
            return None
        return bytes(data) if data else None

    def _build_metadata(self) -> SlideMetadata:
        import openslide

        props = self.properties
        fields: dict[str, Any] = {}
        provenance: dict[str, str] = {}
        for field, key in (("mpp_x", "openslide.mpp-x"), ("mpp_y", "openslide.mpp-y"),
                           ("objective_power", "openslide.objective-power")):
            value = parse_double(props.get(key))
            if value is not None and value > 0:
                fields[field] = value
                provenance[field] = key
        icc = self._icc_profile()
        if icc:
            fields["icc_profile"] = icc
            provenance["icc_profile"] = "OpenSlide ICC profile (openslide.icc-size)"
        provenance["pixels"] = (
            f"decoded by OpenSlide {openslide.__library_version__} ({self._vendor} driver) via read_region; "
            "stored as premultiplied RGB, alpha dropped; no source tile bytes passed through")
        return SlideMetadata(vendor=props.get("openslide.vendor", self._vendor), provenance=provenance,
                             **fields)

    # ---- pixels
    def _read_rgb(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        """``(h, w, 3)`` premultiplied RGB of OpenSlide's ``read_region`` at level-0 ``(x0, y0)``."""
        from openslide import lowlevel

        try:
            raw = getattr(lowlevel, "_read_region", None) if self._use_raw else None
            if raw is not None:
                argb = np.zeros((h, w), np.uint32)
                raw(self._slide._osr, argb.ctypes.data_as(POINTER(c_uint32)), x0, y0, level, w, h)
                return _argb_to_rgb(argb)
            rgba = np.asarray(self._slide.read_region((x0, y0), level, (w, h)))
            return premultiplied_rgb(rgba)
        except Exception as exc:
            raise CorruptSlideError(
                self.path, f"OpenSlide failed to read level {level} at ({x0}, {y0}) size {w}x{h}: {exc}"
            ) from exc

    def _area(self, level: int, ax: int, ay: int) -> np.ndarray:
        """One of the 4096x4096 areas OpenSlide paints for a full-level read (cached)."""
        key = (level, ax, ay)
        hit = self._areas.get(key)
        if hit is not None:
            self._areas.move_to_end(key)
            return hit
        ds = self._downsamples[level]
        lw, lh = self._dims[level]
        # same arithmetic as openslide_read_region: int64 = double(col * d) * ds, truncated
        x0, y0 = int(float(ax * OPENSLIDE_AREA) * ds), int(float(ay * OPENSLIDE_AREA) * ds)
        w, h = min(OPENSLIDE_AREA, lw - ax * OPENSLIDE_AREA), min(OPENSLIDE_AREA, lh - ay * OPENSLIDE_AREA)
        area = self._read_rgb(x0, y0, level, w, h)
        self._areas[key] = area
        self._area_bytes += area.nbytes
        while self._area_bytes > AREA_CACHE_BYTES and len(self._areas) > 1:
            _, old = self._areas.popitem(last=False)
            self._area_bytes -= old.nbytes
        return area

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """Decoded ``(512, 512, 3)`` tile of OpenSlide's level image (zero beyond the level's edges)."""
        if not 0 <= level < len(self.levels):
            raise ValueError(f"level {level} out of range (0..{len(self.levels) - 1})")
        lv = self.levels[level]
        if not (0 <= col < lv.tiles_across and 0 <= row < lv.tiles_down):
            raise ValueError(f"tile ({col}, {row}) outside level {level} ({lv.tiles_across}x{lv.tiles_down})")
        lx, ly = col * TILE, row * TILE
        w, h = min(TILE, lv.width - lx), min(TILE, lv.height - ly)
        out = np.zeros((TILE, TILE, 3), np.uint8)
        ids = _exact_integer(self._downsamples[level])
        if ids is not None:
            out[:h, :w] = self._read_rgb(lx * ids, ly * ids, level, w, h)
        else:
            area = self._area(level, lx // OPENSLIDE_AREA, ly // OPENSLIDE_AREA)
            ox, oy = lx % OPENSLIDE_AREA, ly % OPENSLIDE_AREA
            out[:h, :w] = area[oy:oy + h, ox:ox + w]
        return out

    def read_tile_encoded(self, level: int, col: int, row: int) -> bytes | None:
        """Not available: OpenSlide serves decoded pixels only."""
        raise CodecError(self.path, f"level {level} tile ({col}, {row}): the OpenSlide fallback has no "
                                    "encoded tiles (pixels are decoded by OpenSlide)")

    def read_associated(self, name: str) -> np.ndarray:
        """OpenSlide's associated image ``name`` as ``(h, w, 3)`` premultiplied RGB."""
        if name not in self.associated:
            raise KeyError(name)
        try:
            rgba = np.asarray(self._slide.associated_images[name])
        except Exception as exc:
            raise CorruptSlideError(self.path, f"OpenSlide failed to read associated image {name!r}: {exc}") from exc
        return premultiplied_rgb(rgba)

    def source_files(self) -> list[str]:
        """The index file plus the data files of the multi-file formats OpenSlide reads.

        Hamamatsu VMS/VMU: every ``*File*`` / ``MacroImage`` entry of the INI index; MIRAX: every file in
        the folder named after the ``.mrxs`` file. Other formats: the file itself.
        """
        files = [self.path]
        folder, name = os.path.split(os.path.abspath(self.path))
        stem, ext = os.path.splitext(name)
        if ext.lower() in (".vms", ".vmu"):
            try:
                with open(self.path, encoding="utf-8", errors="replace") as fh:
                    lines = fh.read().splitlines()
            except OSError:
                return files
            for line in lines:
                key, sep, value = line.partition("=")
                key, value = key.strip(), value.strip()
                if sep and value and ("File" in key or key == "MacroImage"):
                    p = os.path.join(folder, value)
                    if os.path.isfile(p):
                        files.append(p)
        elif ext.lower() == ".mrxs" and os.path.isdir(os.path.join(folder, stem)):
            data = os.path.join(folder, stem)
            files += [os.path.join(data, n) for n in sorted(os.listdir(data))
                      if os.path.isfile(os.path.join(data, n))]
        return sorted(set(files))

    def close(self) -> None:
        """Close the OpenSlide handle and drop cached areas."""
        self._areas.clear()
        self._area_bytes = 0
        if self._slide is not None:
            self._slide.close()
            self._slide = None
