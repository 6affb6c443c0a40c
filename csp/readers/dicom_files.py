"""Low-level access to one DICOM WSI file: header, frame byte ranges, frame positions, properties.

The header is parsed with pydicom up to (not including) the Pixel Data element; the Pixel Data
element itself is never loaded. For encapsulated transfer syntaxes the item tags of the fragments are
walked with small reads to find every fragment's byte range, and fragments are grouped into frames
with the Extended Offset Table, the Basic Offset Table or (without either) one fragment per frame /
JPEG or JPEG 2000 start markers. Native frames are located arithmetically. Frames are then fetched with
one ``os.pread`` per fragment.
"""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from csp.errors import CorruptSlideError, UnsupportedFormatError
from csp.readers.base import TileEncoding
from csp.readers.tiff_common import format_double

#: SOP Class UID of VL Whole Slide Microscopy Image Storage.
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
DICM_MAGIC_OFFSET = 128

_NATIVE = {"1.2.840.10008.1.2": "<", "1.2.840.10008.1.2.1": "<"}
_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_J2K = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
_IMPLICIT = "1.2.840.10008.1.2"

_ITEM = 0xE000FFFE  # (FFFE,E000) read as little-endian uint32 of group|element<<16
_SEQ_DELIM = 0xE0DDFFFE
_PIXEL_DATA = 0x00107FE0
_EXPLICIT_LONG_VRS = frozenset({b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"})

# JPEG colour spaces of libjpeg (imagecodecs JPEG8.CS): GRAYSCALE=1, RGB=2, YCbCr=3
_JCS_RGB = 2
_JCS_YCBCR = 3

_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_INDEXED_STRING_VRS = frozenset({"CS", "DS", "IS", "AE", "AS", "DA", "DT", "TM", "UI"})


def dicom_magic(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) carries the DICOM Part 10 ``DICM`` preamble."""
    return head[DICM_MAGIC_OFFSET : DICM_MAGIC_OFFSET + 4] == b"DICM"


def file_has_magic(path: str) -> bool:
    """True if the file at ``path`` starts with the DICOM preamble (unreadable files: False)."""
    try:
        with open(path, "rb") as fh:
            return dicom_magic(fh.read(DICM_MAGIC_OFFSET + 4))
    except OSError:
        return False


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom warns about harmless value-format deviations (e.g. UIDs ending in '.'): silence it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def read_sop_class(path: str) -> str:
    """MediaStorageSOPClassUID from the file meta group (cheap: the data set is not parsed).

    Raises
    ------
    CorruptSlideError
        The file meta group cannot be read.
    """
    from pydicom.filereader import read_file_meta_info

    try:
        with quiet_pydicom():
            meta = read_file_meta_info(path)
            return str(meta.get("MediaStorageSOPClassUID", ""))
    except Exception as exc:
        raise CorruptSlideError(path, f"DICOM file meta information unreadable: {exc}") from exc


@dataclass
class FrameTable:
    """Byte ranges of the frames of one file: frame ``i`` is fragments ``first[i]:first[i + 1]``."""

    frag_offsets: np.ndarray
    frag_lengths: np.ndarray
    first: np.ndarray

    @property
    def count(self) -> int:
        """Number of frames."""
        return int(self.first.size - 1)


def _u32(raw: bytes, at: int = 0) -> int:
    return int(struct.unpack_from("<I", raw, at)[0])


class DicomFile:
    """One DICOM WSI instance: parsed header and the byte ranges of its frames.

    Attributes
    ----------
    path
        File path.
    ds
        The pydicom data set without Pixel Data (file meta in ``ds.file_meta``).
    transfer_syntax
        Transfer Syntax UID.
    """

    def __init__(self, path: str) -> None:
        import pydicom

        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.size = os.fstat(self._fd).st_size
            try:
                with quiet_pydicom(), open(path, "rb") as fh:
                    self.ds = pydicom.dcmread(fh, stop_before_pixels=True)
                    self._pixel_tell = fh.tell()
            except Exception as exc:
                raise CorruptSlideError(
                    path, f"DICOM header unreadable: {type(exc).__name__}: {exc}"
                ) from exc
            self.transfer_syntax = str(self.ds.file_meta.get("TransferSyntaxUID", ""))
            self.sop_class = str(
                self.ds.get("SOPClassUID", self.ds.file_meta.get("MediaStorageSOPClassUID", ""))
            )
            self._describe()
            self._frames: FrameTable | None = None
            self._native_offset = 0
        except BaseException:
            os.close(self._fd)
            raise

    # ---- header ------------------------------------------------------------------------------------
    def _int(self, keyword: str, default: int | None = None) -> int:
        value = self.ds.get(keyword, default)
        if value is None or value == "":
            if default is None:
                raise CorruptSlideError(self.path, f"DICOM attribute {keyword} is missing")
            return default
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise CorruptSlideError(
                self.path, f"DICOM attribute {keyword} is not a number: {value!r}"
            ) from exc

    def _describe(self) -> None:
        ds = self.ds
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        self.flavor = image_type[2] if len(image_type) > 2 else "VOLUME"
        self.rows = self._int("Rows")
        self.columns = self._int("Columns")
        self.total_columns = self._int("TotalPixelMatrixColumns", self.columns)
        self.total_rows = self._int("TotalPixelMatrixRows", self.rows)
        self.samples = self._int("SamplesPerPixel", 1)
        self.bits_allocated = self._int("BitsAllocated", 8)
        self.n_frames = self._int("NumberOfFrames", 1)
        self.planar = self._int("PlanarConfiguration", 0)
        self.photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        self.series_uid = str(ds.get("SeriesInstanceUID", ""))
        self.pyramid_uid = str(ds.get("PyramidUID", "")) or None
        self.organization = str(ds.get("DimensionOrganizationType", "")).strip().upper()
        self.concat_offset = self._int("ConcatenationFrameOffsetNumber", 0)
        self.instance_number = self._int("InstanceNumber", 0)
        if (
            min(self.rows, self.columns, self.total_rows, self.total_columns, self.samples, self.n_frames)
            <= 0
        ):
            raise CorruptSlideError(self.path, "DICOM image or frame size is zero or negative")

    @property
    def dtype(self) -> str:
        """NumPy dtype name of a sample."""
        return {8: "uint8", 16: "uint16"}.get(self.bits_allocated, f"bits{self.bits_allocated}")

    @property
    def encapsulated(self) -> bool:
        """True for compressed (encapsulated) Pixel Data."""
        return self.transfer_syntax not in _NATIVE

    def encoding(self) -> TileEncoding:
        """How the frames' bytes are encoded, as a CSP :class:`TileEncoding`.

        JPEG frames are decoded like OpenSlide does: ``RGB`` photometric interpretation means no colour
        transform (even when the stream has a JFIF marker), ``YBR_*`` means YCbCr -> RGB.

        Raises
        ------
        UnsupportedFormatError
            Transfer syntax, sample layout or photometric interpretation not supported.
        """
        ts, pi = self.transfer_syntax, self.photometric
        if self.bits_allocated not in (8, 16):
            raise UnsupportedFormatError(self.path, f"BitsAllocated {self.bits_allocated} is not supported")
        if ts in _NATIVE:
            if pi not in ("RGB", "MONOCHROME2"):
                raise UnsupportedFormatError(
                    self.path,
                    f"native frames with PhotometricInterpretation {pi} "
                    "are not supported (only RGB and MONOCHROME2)",
                )
            return TileEncoding("raw", {})
        if self.bits_allocated != 8:
            raise UnsupportedFormatError(
                self.path, f"compressed frames with {self.bits_allocated}-bit samples are not supported"
            )
        if ts == _JPEG_BASELINE:
            if self.samples == 1:
                return TileEncoding("jpeg", {})
            if pi == "RGB":
                return TileEncoding("jpeg", {"colorspace": _JCS_RGB, "outcolorspace": _JCS_RGB})
            if pi.startswith("YBR_"):
                return TileEncoding("jpeg", {"colorspace": _JCS_YCBCR, "outcolorspace": _JCS_RGB})
            raise UnsupportedFormatError(
                self.path, f"JPEG frames with PhotometricInterpretation {pi} are not supported"
            )
        if ts in _J2K:
            if self.samples == 1 or pi in ("RGB", "YBR_ICT", "YBR_RCT"):
                return TileEncoding("j2k", {"colorspace": "rgb"})
            if pi == "YBR_FULL":
                return TileEncoding("j2k", {"colorspace": "ycbcr"})
            raise UnsupportedFormatError(
                self.path, f"JPEG 2000 frames with PhotometricInterpretation {pi} are not supported"
            )
        raise UnsupportedFormatError(
            self.path,
            f"transfer syntax {ts} is not supported (only native, JPEG "
            "baseline 1.2.840.10008.1.2.4.50 and JPEG 2000 .90/.91)",
        )

    # ---- frame positions ---------------------------------------------------------------------------
    def sparse_positions(self) -> list[tuple[int, int] | None] | None:
        """Per-frame ``(x, y)`` 0-based pixel positions for TILED_SPARSE files, else ``None``.

        A frame without a PlanePositionSlideSequence position is ``None``.
        """
        per_frame = self.ds.get("PerFrameFunctionalGroupsSequence")
        if self.organization == "TILED_FULL" or not per_frame:
            return None
        out: list[tuple[int, int] | None] = []
        found = False
        for item in per_frame:
            pos = None
            seq = item.get("PlanePositionSlideSequence")
            if seq:
                col = seq[0].get("ColumnPositionInTotalImagePixelMatrix")
                row = seq[0].get("RowPositionInTotalImagePixelMatrix")
                if col is not None and row is not None:
                    pos = (int(col) - 1, int(row) - 1)
                    found = True
            out.append(pos)
        if not found and self.organization != "TILED_SPARSE":
            return None
        if len(out) != self.n_frames:
            raise CorruptSlideError(
                self.path, f"PerFrameFunctionalGroupsSequence has {len(out)} items for {self.n_frames} frames"
            )
        return out

    # ---- frame byte ranges -------------------------------------------------------------------------
    def _pread(self, n: int, offset: int) -> bytes:
        try:
            data = os.pread(self._fd, n, offset)
        except OSError as exc:
            raise CorruptSlideError(self.path, f"read failed at offset {offset}: {exc}") from exc
        return data

    def _pixel_header(self) -> tuple[int, int]:
        """``(value offset, value length)`` of the top-level Pixel Data element."""
        at = self._pixel_tell
        explicit = self.transfer_syntax != _IMPLICIT
        head = self._pread(12, at)
        if len(head) < 8 or _u32(head) != _PIXEL_DATA:
            raise CorruptSlideError(
                self.path,
                f"no Pixel Data element after the header (offset {at}); the file is truncated or damaged",
            )
        if explicit and head[4:6] in _EXPLICIT_LONG_VRS:
            if len(head) < 12:
                raise CorruptSlideError(self.path, "Pixel Data element header truncated")
            return at + 12, _u32(head, 8)
        if explicit:
            return at + 8, int(struct.unpack_from("<H", head, 6)[0])
        return at + 8, _u32(head, 4)

    def frames(self) -> FrameTable:
        """The frame table (built on first use).

        Raises
        ------
        CorruptSlideError
            The Pixel Data is truncated or its item structure is damaged.
        """
        if self._frames is None:
            self._frames = self._build_frames()
        return self._frames

    def _build_frames(self) -> FrameTable:
        start, length = self._pixel_header()
        n = self.n_frames
        if not self.encapsulated:
            frame_bytes = self.rows * self.columns * self.samples * (self.bits_allocated // 8)
            if length == 0xFFFFFFFF:
                raise CorruptSlideError(self.path, "native Pixel Data with undefined length")
            if length < frame_bytes * n or start + frame_bytes * n > self.size:
                raise CorruptSlideError(
                    self.path,
                    f"native Pixel Data holds {min(length, self.size - start)} "
                    f"bytes, {n} frames need {frame_bytes * n}; the file is "
                    "truncated",
                )
            offsets = start + np.arange(n, dtype=np.uint64) * np.uint64(frame_bytes)
            return FrameTable(offsets, np.full(n, frame_bytes, np.uint64), np.arange(n + 1, dtype=np.int64))
        if length != 0xFFFFFFFF:
            raise CorruptSlideError(self.path, "encapsulated Pixel Data must have undefined length")
        bot, frags = self._walk_items(start)
        frag_off = np.asarray([f[0] for f in frags], dtype=np.uint64)
        frag_len = np.asarray([f[1] for f in frags], dtype=np.uint64)
        first = self._group_fragments(bot, frags)
        return FrameTable(frag_off, frag_len, first)

    def _walk_items(self, start: int) -> tuple[list[int], list[tuple[int, int, int]]]:
        """Basic Offset Table and ``(value offset, length, offset relative to first fragment)`` items."""
        pos = start
        head = self._pread(8, pos)
        if len(head) < 8 or _u32(head) != _ITEM:
            raise CorruptSlideError(
                self.path,
                f"encapsulated Pixel Data: no Basic Offset Table item at offset "
                f"{pos}; the file is truncated or damaged",
            )
        bot_len = _u32(head, 4)
        raw = self._pread(bot_len, pos + 8)
        if len(raw) != bot_len or bot_len % 4:
            raise CorruptSlideError(
                self.path, "encapsulated Pixel Data: Basic Offset Table truncated or invalid"
            )
        bot = list(struct.unpack(f"<{bot_len // 4}I", raw))
        pos += 8 + bot_len
        first_frag = pos
        frags: list[tuple[int, int, int]] = []
        while True:
            head = self._pread(8, pos)
            if len(head) < 8:
                raise CorruptSlideError(
                    self.path,
                    f"encapsulated Pixel Data ends without a sequence delimiter "
                    f"(offset {pos}, {len(frags)} fragments read); the file is "
                    "truncated",
                )
            tag, item_len = _u32(head), _u32(head, 4)
            if tag == _SEQ_DELIM:
                break
            if tag != _ITEM or item_len == 0xFFFFFFFF:
                raise CorruptSlideError(
                    self.path, f"encapsulated Pixel Data: invalid item tag at offset {pos}"
                )
            if pos + 8 + item_len > self.size:
                raise CorruptSlideError(
                    self.path,
                    f"fragment {len(frags)} at offset {pos} (+{item_len} bytes) "
                    f"extends beyond the end of the file ({self.size} bytes); "
                    "the file is truncated",
                )
            frags.append((pos + 8, item_len, pos - first_frag))
            pos += 8 + item_len
        return bot, frags

    def _group_fragments(self, bot: list[int], frags: list[tuple[int, int, int]]) -> np.ndarray:
        """Index of each frame's first fragment (plus the end), from EOT, BOT or start markers."""
        n, nf = self.n_frames, len(frags)
        rel = [f[2] for f in frags]
        table: list[int] | None = None
        eot = self.ds.get("ExtendedOffsetTable")
        if eot is not None and len(eot) >= 8 * n:
            table = [int(v) for v in np.frombuffer(bytes(eot), "<u8")[:n]]
        elif len(bot) == n and n > 0:
            table = bot
        if table is not None:
            where = {r: i for i, r in enumerate(rel)}
            try:
                firsts = [where[t] for t in table]
            except KeyError as exc:
                raise CorruptSlideError(
                    self.path, f"offset table entry {exc} does not point at a fragment"
                ) from exc
            if firsts != sorted(firsts) or (firsts and firsts[0] != 0):
                raise CorruptSlideError(self.path, "offset table is not increasing")
            return np.asarray([*firsts, nf], dtype=np.int64)
        if nf == n:
            return np.arange(n + 1, dtype=np.int64)
        if n == 1:
            return np.asarray([0, nf], dtype=np.int64)
        if nf < n:
            raise CorruptSlideError(
                self.path, f"encapsulated Pixel Data has {nf} fragments for {n} frames; the file is truncated"
            )
        starts = [i for i, (off, ln, _) in enumerate(frags) if ln >= 2 and self._is_frame_start(off)]
        if len(starts) != n or starts[0] != 0:
            raise CorruptSlideError(
                self.path,
                f"cannot split {nf} fragments into {n} frames (no offset table "
                f"and {len(starts)} codestream starts)",
            )
        return np.asarray([*starts, nf], dtype=np.int64)

    def _is_frame_start(self, offset: int) -> bool:
        head = self._pread(12, offset)
        return head[:2] == b"\xff\xd8" or head[:4] == b"\xff\x4f\xff\x51" or head[4:8] == b"jP  "

    def read_frame(self, index: int) -> bytes:
        """Stored bytes of frame ``index`` (0-based), exactly as in the file.

        Raises
        ------
        CorruptSlideError
            Short read (the file changed or is truncated).
        """
        table = self.frames()
        if not 0 <= index < table.count:
            raise CorruptSlideError(self.path, f"frame {index + 1} requested, the file has {table.count}")
        parts = []
        for k in range(int(table.first[index]), int(table.first[index + 1])):
            off, ln = int(table.frag_offsets[k]), int(table.frag_lengths[k])
            data = self._pread(ln, off)
            if len(data) != ln:
                raise CorruptSlideError(
                    self.path,
                    f"frame {index + 1}: short read ({len(data)} of {ln} bytes "
                    f"at offset {off}); the file is truncated",
                )
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def decode_native(self, data: bytes) -> np.ndarray:
        """Native frame bytes as a ``(rows, columns, samples)`` array."""
        dt = np.dtype(self.dtype).newbyteorder("<")
        arr = np.frombuffer(data, dtype=dt)
        if self.planar == 1 and self.samples > 1:
            arr = arr.reshape(self.samples, self.rows, self.columns).transpose(1, 2, 0)
        else:
            arr = arr.reshape(self.rows, self.columns, self.samples)
        return np.ascontiguousarray(arr, dtype=np.dtype(self.dtype))

    def close(self) -> None:
        """Close the file descriptor; idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


# ---- properties -------------------------------------------------------------------------------------
def _scalar(value: Any, vr: str) -> str:
    if value is None:
        return ""
    if vr in ("FL", "FD") and isinstance(value, float):
        return format_double(float(value))
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace")
    return str(value)


def _flatten(ds: Any, prefix: str, out: dict[str, str]) -> None:
    for elem in ds:
        if elem.tag.element == 0 or elem.tag.is_private or elem.tag == 0x7FE00010:
            continue
        keyword = elem.keyword
        vr = str(elem.VR)
        if not keyword or vr in _BINARY_VRS:
            continue
        key = f"{prefix}{keyword}"
        if vr == "SQ":
            for i, item in enumerate(elem.value or []):
                _flatten(item, f"{key}[{i}].", out)
            continue
        value = elem.value
        if vr == "AT":
            if value is None or value == []:
                continue
            tags = (
                value if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
            )
            halves = [h for t in tags for h in (int(t) >> 16, int(t) & 0xFFFF)]
            for i, h in enumerate(halves):
                out[f"{key}[{i}]"] = str(h)
            continue
        multi = type(value).__name__ == "MultiValue" or isinstance(value, list | tuple)
        if multi and (vr in _INDEXED_STRING_VRS or vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV")):
            for i, v in enumerate(value):
                out[f"{key}[{i}]"] = _scalar(v, vr)
        elif multi:
            out[key] = "\\".join(_scalar(v, vr) for v in value)
        else:
            out[key] = _scalar(value, vr)


def dicom_properties(ds: Any) -> dict[str, str]:
    """``dicom.*`` properties of a data set (file meta included), named like OpenSlide's.

    Elements are named by keyword; sequence items are ``Name[i].Sub``; multi-valued numbers and code
    strings are ``Name[i]``; other multi-valued strings are joined with a backslash; binary values
    (OB/OW/UN...) and private or group-length elements are skipped.
    """
    out: dict[str, str] = {}
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _flatten(meta, "dicom.", out)
    _flatten(ds, "dicom.", out)
    return out
