"""DICOM WSI (VL Whole Slide Microscopy Image Storage) source reader.

A slide is a DICOM series: one file per pyramid level (or several files per level: concatenations),
plus optional LABEL, OVERVIEW and THUMBNAIL instances. The source is either a folder holding one series
or any one file of it; the other files of the series (same SeriesInstanceUID, and same PyramidUID for
the levels when the file has one) are gathered from the file's folder, as OpenSlide does.

* Levels are the ``VOLUME`` instances grouped by total pixel matrix size, largest first.
* TILED_FULL frames are placed by their index (row-major, first focal plane and optical path);
  TILED_SPARSE frames by their PlanePositionSlideSequence position; positions without a frame are
  missing tiles (``None``).
* JPEG baseline and JPEG 2000 frames are served as their stored bytes (passthrough); native frames are
  decoded (the converter stores them with a lossless pixel codec).
* Associated images: ``label``, ``macro`` (OVERVIEW) and ``thumbnail``, as decoded pixels.
* Properties: every element of the level-0 instance as ``dicom.<Keyword>`` (see
  :func:`~csp.readers.dicom_files.dicom_properties`), like OpenSlide's ``dicom`` vendor.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from csp.errors import CorruptSlideError, CspError, UnsupportedFormatError
from csp.readers.base import AssociatedImage, Match, Reject, SlideMetadata, SlideReader, SourceLevel
from csp.readers.dicom_files import (
    WSI_SOP_CLASS,
    DicomFile,
    dicom_magic,
    dicom_properties,
    file_has_magic,
    quiet_pydicom,
    read_sop_class,
)

#: DICOM ImageType value 3 -> CSP associated image name (OpenSlide's names).
ASSOCIATED_NAMES = {"LABEL": "label", "OVERVIEW": "macro", "THUMBNAIL": "thumbnail"}
_DT_RE = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(\.\d{1,6})?)?)?)?([+-]\d{4})?")


@dataclass
class _Grid:
    """Tile grid of one image: which file and frame holds tile ``(col, row)`` (-1 = missing)."""

    files: list[DicomFile]
    file_index: np.ndarray
    frame_index: np.ndarray
    #: frames not placed because their tile position was already taken (further focal planes / paths)
    dropped: int = 0


def _sibling_files(folder: str) -> list[str]:
    """Regular files of ``folder`` carrying the DICOM preamble, sorted by name."""
    out = []
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if os.path.isfile(p) and file_has_magic(p):
            out.append(p)
    return out


def _open_wsi(path: str) -> DicomFile | None:
    """Parse ``path`` if it is a WSI instance; ``None`` for other DICOM objects."""
    f = DicomFile(path)
    if not f.sop_class:
        f.close()
        raise CorruptSlideError(path, "DICOM header has no SOP Class UID; the file is damaged")
    if f.sop_class != WSI_SOP_CLASS:
        f.close()
        return None
    return f


def _build_grid(files: list[DicomFile], width: int, height: int, what: str) -> _Grid:
    """Place every frame of ``files`` (one image: same size and tiling) on the tile grid."""
    tw, th = files[0].columns, files[0].rows
    across, down = -(-width // tw), -(-height // th)
    file_index = np.full((down, across), -1, np.int32)
    frame_index = np.full((down, across), -1, np.int64)
    dropped = 0
    for k, f in enumerate(files):
        table = f.frames()
        if table.count != f.n_frames:
            raise CorruptSlideError(
                f.path, f"{table.count} frames in Pixel Data, NumberOfFrames says {f.n_frames}"
            )
        positions = f.sparse_positions()
        if positions is None:  # TILED_FULL: frame order is row-major over the grid (first plane/path)
            g = f.concat_offset + np.arange(f.n_frames, dtype=np.int64)
            keep = g < across * down
            rows, cols, frames = g[keep] // across, g[keep] % across, np.nonzero(keep)[0]
        else:
            pos = [(i, p) for i, p in enumerate(positions) if p is not None]
            for i, (x, y) in pos:
                if x % tw or y % th:
                    raise UnsupportedFormatError(
                        f.path,
                        f"{what}: frame {i + 1} at pixel ({x},{y}) is not aligned "
                        f"to the {tw}x{th} tile grid (overlapping tiles are not "
                        "supported)",
                    )
                if not (0 <= x < width and 0 <= y < height):
                    raise CorruptSlideError(
                        f.path,
                        f"{what}: frame {i + 1} at pixel ({x},{y}) lies outside the {width}x{height} image",
                    )
            frames = np.asarray([i for i, _ in pos], np.int64)
            cols = np.asarray([x // tw for _, (x, _y) in pos], np.int64)
            rows = np.asarray([y // th for _, (_x, y) in pos], np.int64)
        for r, c, fr in zip(rows.tolist(), cols.tolist(), frames.tolist(), strict=True):
            if file_index[r, c] < 0:  # first frame wins (further focal planes / optical paths ignored)
                file_index[r, c] = k
                frame_index[r, c] = fr
            else:
                dropped += 1
    return _Grid(files, file_index, frame_index, dropped)


def _iso_datetime(value: str, tz: str | None = None) -> str | None:
    """DICOM DT/DA(+TM) text -> ISO 8601 (``20091229095915`` -> ``2009-12-29T09:59:15``)."""
    m = _DT_RE.fullmatch(value.strip())
    if m is None:
        return None
    y, mo, d, hh, mm, ss, frac, off = m.groups()
    text = f"{y}-{mo}-{d}"
    if hh is not None:
        text += f"T{hh}:{mm or '00'}:{ss or '00'}{frac or ''}"
        off = off or (tz.strip() if tz and re.fullmatch(r"[+-]\d{4}", tz.strip()) else None)
        if off:
            text += f"{off[:3]}:{off[3:]}"
    return text


def _float(value: Any) -> float | None:
    """A DICOM numeric value as a finite float, or ``None`` (absent or unparsable)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def dicom_metadata(ds: Any) -> SlideMetadata:
    """Unified metadata of the level-0 data set, each field with the DICOM keyword it came from.

    MPP from PixelSpacing (mm, row then column spacing), objective power from ObjectiveLensPower, scan
    date from AcquisitionDateTime (else AcquisitionDate/Time, else ContentDate/Time), scanner from
    Manufacturer + ManufacturerModelName, ICC profile from the OpticalPathSequence (else the top-level
    ICCProfile), barcode (ContainerIdentifier).
    """
    fields: dict[str, Any] = {}
    prov: dict[str, str] = {}
    spacing = None
    for group, where in (
        ("SharedFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"),
        ("PerFrameFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence[0]"),
    ):
        seq = ds.get(group)
        if seq and seq[0].get("PixelMeasuresSequence"):
            spacing = seq[0].PixelMeasuresSequence[0].get("PixelSpacing")
            if spacing is not None and len(spacing) == 2:
                prov["mpp_x"] = prov["mpp_y"] = f"{where}.PixelMeasuresSequence.PixelSpacing (mm)"
                break
            spacing = None
    if spacing is not None:
        sy, sx = _float(spacing[0]), _float(spacing[1])
        if sx is not None and sy is not None and sx > 0 and sy > 0:
            fields["mpp_x"], fields["mpp_y"] = sx * 1000.0, sy * 1000.0
        else:
            del prov["mpp_x"], prov["mpp_y"]
    optical = ds.get("OpticalPathSequence") or []
    if optical:
        power = _float(optical[0].get("ObjectiveLensPower"))
        if power is not None and power > 0:
            fields["objective_power"] = power
            prov["objective_power"] = "OpticalPathSequence[0].ObjectiveLensPower"
        icc = optical[0].get("ICCProfile")
        if icc:
            fields["icc_profile"] = bytes(icc)
            prov["icc_profile"] = "OpticalPathSequence[0].ICCProfile"
    if "icc_profile" not in fields and ds.get("ICCProfile"):
        fields["icc_profile"] = bytes(ds.ICCProfile)
        prov["icc_profile"] = "ICCProfile"
    tz = ds.get("TimezoneOffsetFromUTC")
    tz = str(tz) if tz else None
    for keys in (
        ("AcquisitionDateTime",),
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
    ):
        parts = [str(ds.get(k) or "").strip() for k in keys]
        if not parts[0]:
            continue
        date = _iso_datetime("".join(parts), tz) or " ".join(p for p in parts if p)
        fields["scan_date"] = date
        prov["scan_date"] = " + ".join(k for k, p in zip(keys, parts, strict=True) if p)
        break
    scanner_parts = [(k, str(ds.get(k) or "").strip()) for k in ("Manufacturer", "ManufacturerModelName")]
    scanner_parts = [(k, v) for k, v in scanner_parts if v]
    if scanner_parts:
        fields["scanner"] = " ".join(v for _, v in scanner_parts)
        prov["scanner"] = " + ".join(k for k, _ in scanner_parts)
    if str(ds.get("ContainerIdentifier") or "").strip():
        fields["barcode"] = str(ds.get("ContainerIdentifier")).strip()
        prov["barcode"] = "ContainerIdentifier (property dicom.ContainerIdentifier)"
    return SlideMetadata(vendor="dicom", provenance=prov, **fields)


class DicomReader(SlideReader):
    """Reader of DICOM VL Whole Slide Microscopy series (folder or one file of the series)."""

    name: ClassVar[str] = "dicom"

    # ---- detection ---------------------------------------------------------------------------------
    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept a DICOM WSI file (``DICM`` preamble, WSI SOP class) or a folder holding one.

        A file with the preamble whose meta header is damaged is accepted too, so that opening it
        reports the damage (:class:`~csp.errors.CorruptSlideError`) instead of "unsupported format".
        """
        try:
            import pydicom  # noqa: F401
        except ImportError:  # pragma: no cover - pydicom is a declared dependency
            return Reject(cls.name, "pydicom is not installed")
        if probe.is_dir:
            candidates = _sibling_files(probe.path)
            if not candidates:
                return Reject(cls.name, "folder holds no DICOM file (no 'DICM' preamble)")
            for p in candidates:
                try:
                    if read_sop_class(p) == WSI_SOP_CLASS:
                        return Match(
                            cls.name,
                            f"folder with {len(candidates)} DICOM file(s), VL Whole Slide "
                            f"Microscopy ({os.path.basename(p)})",
                        )
                except CspError:
                    continue
            return Reject(
                cls.name,
                f"folder holds {len(candidates)} DICOM file(s), none is a VL Whole Slide Microscopy image",
            )
        if not dicom_magic(probe.head):
            return Reject(cls.name, "not a DICOM file (no 'DICM' preamble at byte 128)")
        try:
            sop = read_sop_class(probe.path)
        except CspError as exc:
            return Match(cls.name, f"DICOM preamble, but damaged meta header ({exc.detail})")
        if not sop:
            return Match(cls.name, "DICOM preamble, but no SOP Class UID in the meta header (damaged file)")
        if sop != WSI_SOP_CLASS:
            return Reject(
                cls.name,
                f"DICOM SOP class {sop or '(none)'} is not VL Whole Slide Microscopy ({WSI_SOP_CLASS})",
            )
        return Match(cls.name, "DICOM VL Whole Slide Microscopy image")

    # ---- opening -----------------------------------------------------------------------------------
    @classmethod
    def open(cls, probe: Any) -> DicomReader:
        """Gather the series and build the reader.

        Raises
        ------
        CorruptSlideError
            A file of the series is truncated or damaged (the message names it).
        UnsupportedFormatError
            Not a WSI series, several series in one folder, or an unsupported encoding/layout.
        """
        return cls(probe.path)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._files: list[DicomFile] = []
        try:
            with quiet_pydicom():  # pydicom converts values lazily and warns on harmless deviations
                self._build()
        except BaseException:
            self.close()
            raise

    def source_files(self) -> list[str]:
        """The series' DICOM files (levels, concatenations and associated images)."""
        return sorted({f.path for f in self._files})

    def _gather(self) -> tuple[list[DicomFile], list[DicomFile]]:
        """Parse the series' files: ``(volume instances, associated instances)``."""
        if os.path.isdir(self.path):
            for p in _sibling_files(self.path):
                f = _open_wsi(p)  # a damaged file in the slide's folder is an error
                if f is not None:
                    self._files.append(f)
            volumes = [f for f in self._files if f.flavor not in ASSOCIATED_NAMES]
            keys = sorted({(f.series_uid, f.pyramid_uid or "") for f in volumes})
            if not keys:
                raise UnsupportedFormatError(
                    self.path, "folder holds no DICOM WSI VOLUME (pyramid level) image"
                )
            if len(keys) > 1:
                raise UnsupportedFormatError(
                    self.path,
                    f"folder holds {len(keys)} DICOM WSI series/pyramids "
                    "(SeriesInstanceUID/PyramidUID); open one file of the "
                    "series to choose",
                )
            series, pyramid = keys[0][0], keys[0][1] or None
        else:
            first = _open_wsi(self.path)
            if first is None:
                raise UnsupportedFormatError(
                    self.path, "DICOM object is not a VL Whole Slide Microscopy image"
                )
            self._files.append(first)
            for p in _sibling_files(os.path.dirname(os.path.abspath(self.path))):
                if os.path.samefile(p, self.path):
                    continue
                try:
                    f = _open_wsi(p)
                except CspError:
                    continue  # damaged siblings may belong to other series; the chosen one reports its own
                if f is not None and f.series_uid == first.series_uid:
                    self._files.append(f)
                elif f is not None:
                    f.close()
            series = first.series_uid
            pyramid = first.pyramid_uid if first.flavor not in ASSOCIATED_NAMES else None
        volumes = [
            f
            for f in self._files
            if f.series_uid == series
            and f.flavor not in ASSOCIATED_NAMES
            and (pyramid is None or f.pyramid_uid == pyramid)
        ]
        if pyramid is None and len({f.pyramid_uid for f in volumes}) > 1:
            raise UnsupportedFormatError(
                self.path, "series holds several pyramids (PyramidUID); open a file of the wanted pyramid"
            )
        assoc = [f for f in self._files if f.series_uid == series and f.flavor in ASSOCIATED_NAMES]
        if not volumes:
            raise UnsupportedFormatError(self.path, "DICOM series has no VOLUME (pyramid level) image")
        return volumes, assoc

    def _build(self) -> None:
        volumes, assoc = self._gather()
        by_size: dict[tuple[int, int], list[DicomFile]] = {}
        for f in volumes:
            by_size.setdefault((f.total_columns, f.total_rows), []).append(f)
        sizes = sorted(by_size, key=lambda s: (s[0] * s[1], s), reverse=True)
        levels: list[SourceLevel] = []
        self._grids: list[_Grid] = []
        for w, h in sizes:
            files = sorted(by_size[(w, h)], key=lambda f: (f.concat_offset, f.instance_number, f.path))
            level, grid = self._image(files, w, h, f"level {len(levels)}")
            levels.append(level)
            self._grids.append(grid)
        base = levels[0]
        for i, lv in enumerate(levels[1:], 1):
            if (lv.channels, lv.dtype) != (base.channels, base.dtype):
                raise UnsupportedFormatError(
                    self.path,
                    f"level {i} has {lv.channels}x{lv.dtype} samples, level 0 "
                    f"has {base.channels}x{base.dtype}",
                )
        self.levels = tuple(levels)
        base_ds = self._grids[0].files[0].ds
        self.metadata = dicom_metadata(base_ds)
        props = dicom_properties(base_ds)
        dropped = sum(g.dropped for g in self._grids)
        if dropped:  # say so rather than lose them silently
            props["csp.dicom.not-converted"] = (
                f"{dropped} frames of further focal planes / optical paths (the first one per tile is kept)")
        self.properties = MappingProxyType(props)
        self._assoc: dict[str, tuple[SourceLevel, _Grid]] = {}
        images: dict[str, AssociatedImage] = {}
        for f in sorted(assoc, key=lambda f: (f.instance_number, f.path)):
            name = ASSOCIATED_NAMES[f.flavor]
            if name in images:
                continue
            level, grid = self._image([f], f.total_columns, f.total_rows, f"associated image {name}")
            optical = f.ds.get("OpticalPathSequence") or []
            icc = optical[0].get("ICCProfile") if optical else None
            images[name] = AssociatedImage(
                name,
                level.width,
                level.height,
                level.channels,
                source_tag=f"{os.path.basename(f.path)} (ImageType {f.flavor})",
                icc_profile=bytes(icc) if icc else self.metadata.icc_profile,
            )
            self._assoc[name] = (level, grid)
        self.associated = MappingProxyType(images)

    def _image(self, files: list[DicomFile], width: int, height: int, what: str) -> tuple[SourceLevel, _Grid]:
        f0 = files[0]
        encoding = f0.encoding()
        for f in files[1:]:
            if (f.columns, f.rows, f.samples, f.dtype) != (
                f0.columns,
                f0.rows,
                f0.samples,
                f0.dtype,
            ) or f.encoding() != encoding:
                raise UnsupportedFormatError(
                    f.path,
                    f"{what}: files differ in tile size, samples or encoding "
                    f"({os.path.basename(f0.path)} vs {os.path.basename(f.path)})",
                )
        level = SourceLevel(width, height, f0.columns, f0.rows, f0.samples, f0.dtype, encoding)
        return level, _build_grid(files, width, height, what)

    # ---- tile access -------------------------------------------------------------------------------
    def _frame(
        self, grid: _Grid, level: SourceLevel, col: int, row: int, what: str
    ) -> tuple[DicomFile, int] | None:
        if not (0 <= col < level.tiles_across and 0 <= row < level.tiles_down):
            raise IndexError(
                f"{self.path}: tile ({col},{row}) outside {what} grid {level.tiles_across}x{level.tiles_down}"
            )
        k = int(grid.file_index[row, col])
        if k < 0:
            return None
        return grid.files[k], int(grid.frame_index[row, col])

    def _level(self, level: int) -> tuple[SourceLevel, _Grid]:
        if not self._files:
            raise ValueError(f"{self.path}: reader is closed")
        if not 0 <= level < len(self.levels):
            raise IndexError(f"{self.path}: level {level} out of range (0..{len(self.levels) - 1})")
        return self.levels[level], self._grids[level]

    def read_tile_encoded(self, level: int, col: int, row: int) -> bytes | None:
        """Stored bytes of the frame at tile ``(col, row)``; ``None`` where no frame exists.

        For native (uncompressed) levels the bytes are the frame's raw samples.
        """
        lv, grid = self._level(level)
        hit = self._frame(grid, lv, col, row, f"level {level}")
        if hit is None:
            return None
        f, index = hit
        return f.read_frame(index)

    def _decode(self, f: DicomFile, lv: SourceLevel, data: bytes, where: str) -> np.ndarray:
        shape = (lv.tile_height, lv.tile_width, lv.channels)
        try:
            if not f.encapsulated:
                return f.decode_native(data)
            from csp.codecs import get_tile_codec

            return get_tile_codec(lv.encoding).decode(data, shape, lv.dtype)
        except CspError as exc:
            raise CorruptSlideError(f.path, f"{where}: {exc.detail}") from exc
        except Exception as exc:
            raise CorruptSlideError(f.path, f"{where}: {type(exc).__name__}: {exc}") from exc

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """Decoded tile ``(tile_height, tile_width, channels)``; zeros where no frame exists.

        Raises
        ------
        CorruptSlideError
            The frame cannot be read or decoded (the message names the file).
        """
        lv, grid = self._level(level)
        hit = self._frame(grid, lv, col, row, f"level {level}")
        if hit is None:
            return np.zeros((lv.tile_height, lv.tile_width, lv.channels), lv.dtype)
        f, index = hit
        return self._decode(f, lv, f.read_frame(index), f"level {level} frame {index + 1}")

    def read_associated(self, name: str) -> np.ndarray:
        """Decoded associated image ``(height, width, channels)`` (frames assembled, missing = 0).

        Raises
        ------
        KeyError
            No associated image of that name.
        """
        if name not in self._assoc:
            raise KeyError(f"{self.path}: no associated image {name!r} (have {sorted(self._assoc)})")
        lv, grid = self._assoc[name]
        out = np.zeros(
            (lv.tiles_down * lv.tile_height, lv.tiles_across * lv.tile_width, lv.channels), lv.dtype
        )
        for row in range(lv.tiles_down):
            for col in range(lv.tiles_across):
                hit = self._frame(grid, lv, col, row, name)
                if hit is None:
                    continue
                f, index = hit
                tile = self._decode(f, lv, f.read_frame(index), f"{name} frame {index + 1}")
                out[
                    row * lv.tile_height : (row + 1) * lv.tile_height,
                    col * lv.tile_width : (col + 1) * lv.tile_width,
                ] = tile
        return np.ascontiguousarray(out[: lv.height, : lv.width])

    @property
    def files(self) -> tuple[str, ...]:
        """Paths of every DICOM file the reader uses (levels first)."""
        seen = [f.path for g in getattr(self, "_grids", []) for f in g.files]
        seen += [f.path for _, g in getattr(self, "_assoc", {}).values() for f in g.files]
        return tuple(dict.fromkeys(seen))

    def close(self) -> None:
        """Close every file; idempotent."""
        files, self._files = self._files, []
        for f in files:
            f.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"<DicomReader {self.path!r} levels={len(getattr(self, 'levels', ()))}>"
