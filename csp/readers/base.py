"""The :class:`SlideReader` contract every source-format reader implements.

A reader exposes a slide as an ordered list of :class:`SourceLevel` (full resolution first), each a grid
of stored tiles. Encoded and decoded tile access are kept apart: the converter copies
:meth:`SlideReader.read_tile_encoded` bytes straight into the container (passthrough) and only uses
:meth:`SlideReader.read_tile` when pixels must be re-encoded or verified.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from csp.readers.probe import Probe


@dataclass(frozen=True)
class TileEncoding:
    """How the bytes of a stored tile are encoded.

    ``codec`` is a CSP codec id (``"jpeg"``, ``"j2k"``, ``"deflate"``, ``"lzw"``, ``"raw"``, ...) and
    ``config`` its parameters, e.g. ``{"tables": b"...", "colorspace": 2}`` for abbreviated JPEG.
    Values are plain Python (``bytes`` allowed; the container spec encodes them as base64).
    """

    codec: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))

    def __hash__(self) -> int:
        return hash((self.codec, tuple(sorted((k, repr(v)) for k, v in self.config.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TileEncoding):
            return NotImplemented
        return self.codec == other.codec and dict(self.config) == dict(other.config)

    def __reduce__(self):
        return (TileEncoding, (self.codec, dict(self.config)))


@dataclass(frozen=True)
class SourceLevel:
    """One stored pyramid level of a source slide.

    Attributes
    ----------
    width, height
        Level size in pixels.
    tile_width, tile_height
        Stored tile size; tiles at the right/bottom edges are stored full size (padded).
    channels
        Samples per pixel (3 for RGB).
    dtype
        NumPy dtype string of a sample, e.g. ``"uint8"``.
    encoding
        Encoding of the stored tile bytes.
    """

    width: int
    height: int
    tile_width: int
    tile_height: int
    channels: int
    dtype: str
    encoding: TileEncoding

    @property
    def tiles_across(self) -> int:
        """Number of tile columns."""
        return -(-self.width // self.tile_width)

    @property
    def tiles_down(self) -> int:
        """Number of tile rows."""
        return -(-self.height // self.tile_height)


@dataclass(frozen=True)
class AssociatedImage:
    """A non-pyramidal image stored beside the slide (label, macro, thumbnail)."""

    name: str
    width: int
    height: int
    channels: int
    source_tag: str = ""
    icc_profile: bytes | None = None


@dataclass(frozen=True)
class SlideMetadata:
    """Unified metadata a reader extracts from its vendor format.

    ``provenance`` maps each field name to the source tag or property it came from.
    """

    vendor: str
    mpp_x: float | None = None
    mpp_y: float | None = None
    objective_power: float | None = None
    scan_date: str | None = None
    scanner: str | None = None
    icc_profile: bytes | None = None
    channel_names: tuple[str, ...] = ()
    barcode: str | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    """A reader accepts a file."""

    reader: str
    reason: str
    accepted: ClassVar[bool] = True


@dataclass(frozen=True)
class Reject:
    """A reader refuses a file, with a human reason."""

    reader: str
    reason: str
    accepted: ClassVar[bool] = False


class SlideReader(abc.ABC):
    """Contract of a source-format reader.

    Subclasses set :attr:`name` (registry key) and implement :meth:`detect` and :meth:`open`. Instances
    are not thread-safe unless stated; the converter uses one per slide.
    """

    name: ClassVar[str] = ""
    #: ``(T, Z)`` time points and z planes (format 1.1). Readers with more than one plane accept
    #: keyword arguments ``t=`` and ``z=`` in :meth:`read_tile` and :meth:`read_tile_encoded`.
    plane_shape: tuple[int, int] = (1, 1)

    path: str
    levels: tuple[SourceLevel, ...]
    metadata: SlideMetadata
    properties: Mapping[str, str]
    associated: Mapping[str, AssociatedImage]

    @classmethod
    @abc.abstractmethod
    def detect(cls, probe: Probe) -> Match | Reject:
        """Decide from the shared :class:`~csp.readers.probe.Probe` whether this reader takes the file."""

    @classmethod
    @abc.abstractmethod
    def open(cls, probe: Probe) -> SlideReader:
        """Open the probed file. Raise a :class:`~csp.errors.CspError` subclass on bad input."""

    @abc.abstractmethod
    def read_tile_encoded(self, level: int, col: int, row: int) -> bytes | None:
        """Return the stored bytes of a tile exactly as in the source, or ``None`` if it is absent."""

    @abc.abstractmethod
    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """Return the decoded tile as ``(tile_height, tile_width, channels)`` (full stored size)."""

    @abc.abstractmethod
    def read_associated(self, name: str) -> np.ndarray:
        """Return an associated image as ``(height, width, channels)`` decoded pixels."""

    def associated_layout(self, name: str) -> SourceLevel | None:
        """Strip/tile layout of an associated image whose stored bytes can be kept as they are.

        Readers that can serve an associated image's encoded strips return a :class:`SourceLevel`
        (``tile_width`` = image width for strips) and implement :meth:`read_associated_encoded`;
        the default ``None`` makes the converter store decoded pixels instead.
        """
        return None

    def read_associated_encoded(self, name: str, col: int, row: int) -> bytes | None:
        """Stored bytes of one strip/tile of an associated image (see :meth:`associated_layout`)."""
        raise NotImplementedError(f"{type(self).__name__} does not serve encoded associated images")

    def source_files(self) -> list[str]:
        """Every file the slide's data was read from (multi-file formats list all of them)."""
        return [self.source_path]

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def source_path(self) -> str:
        """Path of the main source file."""
        return os.fspath(self.path)
