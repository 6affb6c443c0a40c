"""OpenSlide-compatible slide objects over CSP containers (fast path) and over vendor sources.

:func:`open_slide` returns an object with the names and semantics of ``openslide.OpenSlide``
(``level_count``, ``dimensions``, ``level_dimensions``, ``level_downsamples``, ``properties`` with the
``openslide.*`` keys, ``associated_images``, ``read_region`` returning RGBA PIL, ``get_thumbnail``,
``get_best_level_for_downsample``, ``close``, context manager) plus NumPy-first extras:
``read_region(..., as_array=True)`` and ``read_tile(level, col, row)``.
"""

from __future__ import annotations

import abc
import io
import os
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from csp.container import spec
from csp.container.cache import TileCache
from csp.container.reader import ContainerReader, paint_region
from csp.container.stores import is_url
from csp.errors import CspError, SlideNotFoundError

PROPERTY_NAME_VENDOR = "openslide.vendor"
PROPERTY_NAME_MPP_X = "openslide.mpp-x"
PROPERTY_NAME_MPP_Y = "openslide.mpp-y"
PROPERTY_NAME_OBJECTIVE_POWER = "openslide.objective-power"
PROPERTY_NAME_COMMENT = "openslide.comment"
PROPERTY_NAME_ICC_SIZE = "openslide.icc-size"


class _LazyImages(Mapping[str, Any]):
    """Mapping name -> RGBA PIL image, decoded on access (like openslide-python)."""

    def __init__(self, slide: AbstractSlide, names: list[str]) -> None:
        self._slide = slide
        self._names = names

    def __getitem__(self, key: str) -> Any:
        if key not in self._names:
            raise KeyError(key)
        return _to_rgba(self._slide._associated_array(key))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _to_rgba(arr: np.ndarray, alpha: np.ndarray | None = None) -> Any:
    from PIL import Image

    h, w = arr.shape[:2]
    rgba = np.empty((h, w, 4), np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] < 3:  # grey (and 2-channel data: its first channel)
        rgba[..., :3] = arr[..., :1]
    else:
        rgba[..., :3] = arr[..., :3]
    rgba[..., 3] = 255 if alpha is None else alpha
    return Image.fromarray(rgba, "RGBA")


class AbstractSlide(abc.ABC):
    """Shared OpenSlide-style behaviour; subclasses provide level geometry and tile decoding.

    Multi-channel, time and z data: :attr:`dtype`, :attr:`channel_count` and :attr:`plane_shape`
    describe the samples; ``read_region(..., plane=(t, z))`` and ``read_tile(..., t=, z=)`` pick a
    plane (default ``(0, 0)``). The RGBA PIL output is defined for uint8 samples only: 1 or 2 channels
    render the first channel as grey, 3 or more render the first three as RGB; other sample types
    raise :class:`~csp.errors.CspError` (use ``as_array=True``).
    """

    _level_sizes: list[tuple[int, int]]
    _tile_sizes: list[tuple[int, int]]
    _channels: int
    _dtype: np.dtype = np.dtype(np.uint8)
    _planes: tuple[int, int] = (1, 1)

    @property
    def dtype(self) -> np.dtype:
        """Sample type of the levels (``uint8`` for RGB slides)."""
        return self._dtype

    @property
    def channel_count(self) -> int:
        """Number of channels (samples per pixel)."""
        return self._channels

    @property
    def plane_shape(self) -> tuple[int, int]:
        """``(T, Z)``: number of time points and z planes (``(1, 1)`` for ordinary slides)."""
        return self._planes

    def _plane_kw(self, t: int, z: int) -> dict[str, int]:
        if not (0 <= t < self._planes[0] and 0 <= z < self._planes[1]):
            raise ValueError(f"plane (t={t}, z={z}) out of range: the slide has {self._planes[0]} time "
                             f"point(s) and {self._planes[1]} z plane(s)")
        return {"t": t, "z": z} if self._planes != (1, 1) else {}

    # ---- subclass hooks
    @abc.abstractmethod
    def _tile(self, level: int, col: int, row: int, **plane: int) -> np.ndarray: ...

    @abc.abstractmethod
    def _tile_present(self, level: int, col: int, row: int) -> bool: ...

    @abc.abstractmethod
    def _associated_array(self, name: str) -> np.ndarray: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Release file handles."""

    # ---- OpenSlide API
    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self._level_sizes)

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self._level_sizes[0]

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of every level."""
        return tuple(self._level_sizes)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of every level relative to level 0 (mean of the x and y factors, as OpenSlide)."""
        w0, h0 = self._level_sizes[0]
        return tuple((w0 / w + h0 / h) / 2.0 for w, h in self._level_sizes)

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """Index of the level with the largest downsample not above ``downsample``."""
        ds = self.level_downsamples
        if downsample < ds[0]:
            return 0
        for i in range(1, len(ds)):
            if downsample < ds[i]:
                return i - 1
        return len(ds) - 1

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int], *,
                    as_array: bool = False, plane: tuple[int, int] = (0, 0)) -> Any:
        """Read a region.

        Parameters
        ----------
        location
            ``(x, y)`` of the top-left pixel in level-0 coordinates.
        level
            Pyramid level.
        size
            ``(width, height)`` of the region at ``level``.
        as_array
            Return a ``(height, width, C)`` NumPy array of the stored samples instead of an RGBA PIL
            image. Pixels outside the image are 0 in the array and transparent in the PIL image.
        plane
            ``(t, z)`` of the plane to read for time/z series (format 1.1); ``(0, 0)`` otherwise.

        Raises
        ------
        CspError
            A PIL image is requested for samples other than uint8 (read them with ``as_array=True``).
        """
        kw = self._plane_kw(int(plane[0]), int(plane[1]))
        if not as_array and self._dtype != np.uint8:
            raise CspError(getattr(self, "_path", None),
                           f"cannot render {self._dtype} samples ({self._channels} channel(s)) as an RGBA "
                           "image; use read_region(..., as_array=True)")
        w, h = int(size[0]), int(size[1])
        if w < 0 or h < 0:
            raise ValueError(f"negative region size {size}")
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range (0..{self.level_count - 1})")
        ds = self.level_downsamples[level]
        lx, ly = int(np.floor(location[0] / ds)), int(np.floor(location[1] / ds))
        lw, lh = self._level_sizes[level]
        tw, th = self._tile_sizes[level]
        out = np.zeros((h, w, self._channels), self._dtype)
        paint_region(out, lx, ly, lw, lh, tw, th, lambda c, r: self._tile(level, c, r, **kw))
        if as_array:
            return out
        alpha = np.zeros((h, w), np.uint8)
        ax0, ay0 = max(lx, 0), max(ly, 0)
        ax1, ay1 = min(lx + w, lw), min(ly + h, lh)
        if ax0 < ax1 and ay0 < ay1:
            alpha[ay0 - ly:ay1 - ly, ax0 - lx:ax1 - lx] = 255
            self._clear_missing(alpha, level, lx, ly)
        out[alpha == 0] = 0
        return _to_rgba(out, alpha)

    def _clear_missing(self, alpha: np.ndarray, level: int, lx: int, ly: int) -> None:
        h, w = alpha.shape
        tw, th = self._tile_sizes[level]
        lw, lh = self._level_sizes[level]
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + w, lw), min(ly + h, lh)
        for row in range(y0 // th, (y1 - 1) // th + 1):
            for col in range(x0 // tw, (x1 - 1) // tw + 1):
                if not self._tile_present(level, col, row):
                    ys, xs = row * th - ly, col * tw - lx
                    alpha[max(ys, 0):max(ys + th, 0), max(xs, 0):max(xs + tw, 0)] = 0

    def read_tile(self, level: int, col: int, row: int, t: int = 0, z: int = 0) -> np.ndarray:
        """Decoded stored tile ``(h, w, C)`` of plane ``(t, z)``, cropped to the image at the edges."""
        tw, th = self._tile_sizes[level]
        lw, lh = self._level_sizes[level]
        tile = self._tile(level, col, row, **self._plane_kw(t, z))
        return tile[: min(th, lh - row * th), : min(tw, lw - col * tw)]

    def get_thumbnail(self, size: tuple[int, int]) -> Any:
        """RGB PIL thumbnail fitting in ``size`` (aspect kept), from the best level."""
        from PIL import Image

        w0, h0 = self.dimensions
        downsample = max(w0 / size[0], h0 / size[1])
        level = self.get_best_level_for_downsample(downsample)
        tile = self.read_region((0, 0), level, self._level_sizes[level])
        bg = Image.new("RGB", tile.size, "#ffffff")
        thumb = Image.composite(tile.convert("RGB"), bg, tile.getchannel("A"))
        thumb.thumbnail(size, Image.LANCZOS)
        return thumb

    @property
    def associated_images(self) -> Mapping[str, Any]:
        """Name -> RGBA PIL image (decoded on access)."""
        return _LazyImages(self, self._associated_names())

    @abc.abstractmethod
    def _associated_names(self) -> list[str]: ...

    @abc.abstractmethod
    def _associated_shape(self, name: str) -> tuple[int, int]: ...

    def _associated_icc(self, name: str) -> bytes | None:
        return None

    @property
    def color_profile(self) -> Any:
        """The ICC profile as a ``PIL.ImageCms.ImageCmsProfile`` or ``None``."""
        icc = self.icc_profile
        if icc is None:
            return None
        from PIL import ImageCms

        return ImageCms.getOpenProfile(io.BytesIO(icc))

    @property
    def icc_profile(self) -> bytes | None:
        """Raw ICC profile bytes or ``None``."""
        return None

    def __enter__(self) -> AbstractSlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _standard_properties(self, vendor: str, mpp: tuple[Any, Any], objective: Any,
                             comment: str | None) -> dict[str, str]:
        props: dict[str, str] = {PROPERTY_NAME_VENDOR: vendor}
        if comment is not None:
            props[PROPERTY_NAME_COMMENT] = comment
        if mpp[0] is not None:
            props[PROPERTY_NAME_MPP_X] = repr(float(mpp[0]))
        if mpp[1] is not None:
            props[PROPERTY_NAME_MPP_Y] = repr(float(mpp[1]))
        if objective is not None:
            props[PROPERTY_NAME_OBJECTIVE_POWER] = _num(objective)
        props["openslide.level-count"] = str(self.level_count)
        for i, ((w, h), (tw, th), ds) in enumerate(zip(self._level_sizes, self._tile_sizes,
                                                       self.level_downsamples, strict=True)):
            props[f"openslide.level[{i}].width"] = str(w)
            props[f"openslide.level[{i}].height"] = str(h)
            props[f"openslide.level[{i}].downsample"] = repr(ds)
            props[f"openslide.level[{i}].tile-width"] = str(tw)
            props[f"openslide.level[{i}].tile-height"] = str(th)
        for name in self._associated_names():
            h, w = self._associated_shape(name)
            props[f"openslide.associated.{name}.width"] = str(w)
            props[f"openslide.associated.{name}.height"] = str(h)
            icc = self._associated_icc(name)
            if icc is not None:
                props[f"openslide.associated.{name}.icc-size"] = str(len(icc))
        if self.icc_profile is not None:
            props[PROPERTY_NAME_ICC_SIZE] = str(len(self.icc_profile))
        return props


def _num(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


class CspSlide(AbstractSlide):
    """A CSP container opened for reading (through the fast path).

    Parameters
    ----------
    path
        Container path (``.csp`` file or container directory).
    """

    def __init__(self, path: str | os.PathLike[str], *, tile_cache: TileCache | None = None) -> None:
        self._path = os.fspath(path)
        self._reader = ContainerReader(self._path, tile_cache=tile_cache)
        meta = self._reader.meta
        self._meta = meta
        self._level_sizes = [(a.layout.width, a.layout.height) for a in self._reader.levels]
        self._tile_sizes = [(a.layout.tile_width, a.layout.tile_height) for a in self._reader.levels]
        self._channels = self._reader.levels[0].layout.channels
        self._dtype = self._reader.levels[0].dtype
        lay0 = self._reader.levels[0].layout
        self._planes = (lay0.size_t, lay0.size_z)
        icc = meta.get("icc_profile")
        self._icc = None if icc is None else spec.decode_config({"v": icc})["v"]
        props = dict(meta.get("properties", {}))
        props.update(self._standard_properties(
            meta.get("vendor", "csp"), (meta["mpp"]["x"], meta["mpp"]["y"]), meta.get("objective_power"),
            props.get("tiff.ImageDescription")))
        props["csp.format-version"] = meta["version"]
        props["csp.source-name"] = meta["source"]["name"]
        if "sha256" in meta["source"]:
            props["csp.source-sha256"] = meta["source"]["sha256"]
        for i, lv in enumerate(meta["levels"]):
            props[f"csp.level[{i}].encoding"] = lv["encoding"]["codec"]
            props[f"csp.level[{i}].mode"] = lv["mode"]
        self._properties = MappingProxyType(props)

    @property
    def properties(self) -> Mapping[str, str]:
        """OpenSlide-style properties: the source's vendor properties, ``openslide.*`` and ``csp.*``."""
        return self._properties

    @property
    def metadata(self) -> dict[str, Any]:
        """The container's unified ``csp`` metadata block."""
        return self._meta

    @property
    def icc_profile(self) -> bytes | None:
        return self._icc

    @property
    def reader(self) -> ContainerReader:
        """The low-level fast-path reader."""
        return self._reader

    def _tile(self, level: int, col: int, row: int, **plane: int) -> np.ndarray:
        return self._reader.decode_tile(self._reader.levels[level], col, row, t=plane.get("t", 0),
                                        z=plane.get("z", 0))

    def _tile_present(self, level: int, col: int, row: int) -> bool:
        return self._reader.tile_bytes(self._reader.levels[level], col, row) is not None

    def _associated_names(self) -> list[str]:
        return sorted(self._reader.associated)

    def _associated_array(self, name: str) -> np.ndarray:
        return self._reader.read_array(self._reader.associated[name])

    def _associated_shape(self, name: str) -> tuple[int, int]:
        lay = self._reader.associated[name].layout
        return lay.height, lay.width

    def _associated_icc(self, name: str) -> bytes | None:
        icc = self._meta.get("associated", {}).get(name, {}).get("icc_profile")
        return None if icc is None else spec.decode_config({"v": icc})["v"]

    def close(self) -> None:
        """Release the container's file descriptors."""
        self._reader.close()

    def __repr__(self) -> str:
        return f"CspSlide({self._path!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable for DataLoader workers (spawn): the copy reopens the container in its process.
        return (CspSlide, (self._path,))


class SourceSlide(AbstractSlide):
    """A vendor slide opened through CSP's own readers (no conversion), with the same API."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from csp.registry import open_source

        self._path = os.fspath(path)
        self._src = open_source(self._path)
        lv = self._src.levels
        self._level_sizes = [(x.width, x.height) for x in lv]
        self._tile_sizes = [(x.tile_width, x.tile_height) for x in lv]
        self._channels = lv[0].channels
        self._dtype = np.dtype(lv[0].dtype)
        self._planes = tuple(int(v) for v in getattr(self._src, "plane_shape", (1, 1)))  # type: ignore[assignment]
        md = self._src.metadata
        props = dict(self._src.properties)
        props.update(self._standard_properties(md.vendor, (md.mpp_x, md.mpp_y), md.objective_power,
                                               props.get("tiff.ImageDescription")))
        self._properties = MappingProxyType(props)

    @property
    def properties(self) -> Mapping[str, str]:
        """OpenSlide-style properties."""
        return self._properties

    @property
    def icc_profile(self) -> bytes | None:
        return self._src.metadata.icc_profile

    def _tile(self, level: int, col: int, row: int, **plane: int) -> np.ndarray:
        return self._src.read_tile(level, col, row, **plane)

    def _tile_present(self, level: int, col: int, row: int) -> bool:
        return True

    def _associated_names(self) -> list[str]:
        return sorted(self._src.associated)

    def _associated_array(self, name: str) -> np.ndarray:
        return self._src.read_associated(name)

    def _associated_shape(self, name: str) -> tuple[int, int]:
        a = self._src.associated[name]
        return a.height, a.width

    def _associated_icc(self, name: str) -> bytes | None:
        return self._src.associated[name].icc_profile

    def close(self) -> None:
        """Release the source reader."""
        self._src.close()


def is_container(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` looks like a CSP container (directory with zarr.json or a zip with one)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, spec.ROOT_META_KEY))
    if os.path.isfile(path):
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    return False


def open_slide(path: str | os.PathLike[str]) -> AbstractSlide:
    """Open a CSP container (fast path) or, failing that, a vendor slide through CSP's readers.

    Raises
    ------
    SlideNotFoundError
        The path does not exist.
    CspError
        The file is neither a valid container nor a supported slide.
    """
    path = os.fspath(path)
    if is_url(path):
        return CspSlide(path)
    if not os.path.exists(path):
        raise SlideNotFoundError(path, "no such file or directory")
    if is_container(path):
        return CspSlide(path)
    return SourceSlide(path)


__all__ = ["AbstractSlide", "CspError", "CspSlide", "SourceSlide", "is_container", "open_slide"]
