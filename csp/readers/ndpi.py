"""Hamamatsu NDPI source reader: restart intervals re-framed as JPEG tiles, no pixel re-encoding.

An NDPI level is one TIFF strip holding one huge baseline JPEG with restart markers (``DRI``). The
byte offset of every restart interval is recorded in the NDPI tag 65426 ``McuStarts`` (high 32 bits in
tag 65432), relative to the strip start. This reader turns a rectangular block of restart intervals
into a standalone baseline JPEG tile:

* the strip's own header (SOI, APPn, COM, DQT, DHT, SOF, DRI, SOS) is kept byte for byte, except that
  the SOF height/width are rewritten to the tile's size;
* the entropy-coded data of each interval is copied unchanged from the source;
* the restart markers between intervals are renumbered ``RST0..RST7`` from 0 inside each tile and the
  last one becomes ``EOI``. ``DRI`` is kept, so the decoder resets DC prediction exactly where the
  scanner's encoder did.

Tile size rule (``tile_size``): an interval is ``restart_interval * mcu_width`` pixels wide and one MCU
row high. A tile is ``k`` intervals across (``k = max(1, 512 // interval_width)``, at most one MCU row
of intervals) and ``m`` MCU rows down, the most that keep the tile within 512 pixels high and
512 x 512 pixels in area (at least one MCU row). So tiles are about 512 x 512, or one interval wide
and proportionally shorter when the interval is wider than 512 pixels (a 3968-pixel interval of 8x8
MCUs gives 3968 x 64 tiles). When chroma is subsampled along an axis, no merging happens along that
axis (``k = 1`` for 4:2:2, ``k = m = 1`` for 4:2:0): libjpeg's fancy upsampling reads chroma across
interval borders inside one JPEG but replicates it at a JPEG's edges, and OpenSlide decodes each
interval as its own JPEG, so only then do the tiles reproduce its pixels.

Every tile's SOF carries the size of the whole MCUs it holds: for edge tiles that is less than the
nominal tile (fewer intervals/MCU rows; the codec pads the rest with zeros, per the contract) and, when
the level size is not a multiple of the MCU, slightly more than the level (the scanner's coded padding,
cropped by readers). The decoder thus sees exactly the MCUs the scanner coded, like OpenSlide's
full-interval decode, so even chroma upsampling at the level's edges gives OpenSlide's pixels.

Levels follow OpenSlide: directories with ``SourceLens`` (tag 65421) > 0 and focal plane (tag 65424)
0 are pyramid levels, in file order and decreasing width; ``SourceLens == -1`` is the ``macro``
associated image; the ``-2`` map directory and directories of other focal planes are not converted,
as by OpenSlide (property ``csp.ndpi.not-converted`` lists them). Offsets are the 64-bit values
tifffile reconstructs from NDPI's high-bit extensions. A level whose JPEG has no restart markers
becomes a single tile holding the strip unchanged (OpenSlide reads it as one tile too).

:meth:`NdpiReader.read_tile` is an independent reference decode: every interval is decoded as its own
JPEG (OpenSlide's method), so verification compares the merged tiles against it. OpenSlide adds
further levels by libjpeg DCT scaling (1/2, 1/4, 1/8 of the smallest level); those are not stored.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from csp.errors import CorruptSlideError, UnsupportedFormatError
from csp.readers.base import AssociatedImage, Match, Reject, SlideMetadata, SourceLevel, TileEncoding
from csp.readers.generic_tiff import tiff_datetime_iso
from csp.readers.tiff_common import (
    TiffLevel,
    TiffSlideReader,
    associated_image,
    format_double,
    icc_profile,
    quiet_tifffile,
    read_tag_float,
    read_tag_string,
    resolution_mpp,
    tiff_metadata,
    tiff_properties,
)

# NDPI private tags
TAG_FORMAT_FLAG = 65420
TAG_SOURCE_LENS = 65421
TAG_X_OFFSET = 65422
TAG_Y_OFFSET = 65423
TAG_FOCAL_PLANE = 65424
TAG_MCU_STARTS = 65426
TAG_REFERENCE = 65427
TAG_MCU_STARTS_HIGH = 65432
TAG_PROPERTY_MAP = 65449

TARGET_TILE = 512
JCS_RGB = 2
JCS_YCBCR = 3
_JPEG_COMPRESSION = 7
_MAX_SINGLE_TILE = 16384  # largest side of a level without restart markers stored as one tile
_SCAN_CHUNK = 16 << 20
_TILING_NOTE = ("split from JPEG restart intervals (McuStarts, tag 65426); entropy-coded data copied "
                "unchanged, only SOF size and restart marker numbers rewritten; no pixel re-encoding")
_SOF_SUPPORTED = frozenset({0xC0, 0xC1})
_SOF_OTHER = frozenset({0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


# ---- JPEG header -------------------------------------------------------------------------------
@dataclass(frozen=True)
class JpegHeader:
    """The header of an NDPI level's JPEG (everything up to the end of the SOS segment)."""

    data: bytes
    sof_size_at: int  # offset of the 4 bytes height, width in ``data``
    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]  # (h, v) per component
    component_ids: tuple[int, ...]
    restart_interval: int
    jfif: bool
    adobe_transform: int | None

    @property
    def mcu_size(self) -> tuple[int, int]:
        """``(mcu_width, mcu_height)`` in pixels of the interleaved scan."""
        if len(self.sampling) == 1:
            return 8, 8
        return 8 * max(h for h, _ in self.sampling), 8 * max(v for _, v in self.sampling)

    @property
    def colorspace(self) -> int:
        """libjpeg's guess of the stored colour space (``JCS_YCbCr`` or ``JCS_RGB``), as OpenSlide gets it."""
        if self.jfif:
            return JCS_YCBCR
        if self.adobe_transform is not None:
            return JCS_RGB if self.adobe_transform == 0 else JCS_YCBCR
        if self.component_ids == (82, 71, 66):  # 'R', 'G', 'B'
            return JCS_RGB
        return JCS_YCBCR

    def with_size(self, height: int, width: int) -> bytes:
        """The header with SOF height/width replaced."""
        at = self.sof_size_at
        return self.data[:at] + struct.pack(">HH", height, width) + self.data[at + 4:]


def parse_jpeg_header(buf: bytes) -> JpegHeader:
    """Parse a baseline/extended Huffman JPEG header up to and including its (single) SOS segment.

    Raises
    ------
    ValueError
        Not a JPEG, truncated header, or a coding the reader cannot split (progressive, lossless,
        arithmetic, non-interleaved first scan).
    """
    if buf[:2] != b"\xff\xd8":
        raise ValueError("no JPEG SOI marker at the start of the strip")
    i, n = 2, len(buf)
    dri = 0
    sof: tuple[int, int, int, tuple[tuple[int, int], ...], tuple[int, ...]] | None = None
    jfif = False
    adobe: int | None = None
    while True:
        if i + 4 > n:
            raise ValueError("JPEG header truncated before the SOS marker")
        if buf[i] != 0xFF:
            raise ValueError(f"JPEG header: no marker at byte {i}")
        marker = buf[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
            continue
        if marker == 0xD9:
            raise ValueError("JPEG ends before its SOS marker")
        (length,) = struct.unpack_from(">H", buf, i + 2)
        seg = buf[i + 4:i + 2 + length]
        if len(seg) != length - 2 or length < 2:
            raise ValueError("JPEG header truncated inside a marker segment")
        if marker in _SOF_SUPPORTED:
            precision, height, width, ncomp = struct.unpack_from(">BHHB", seg, 0)
            if precision != 8 or len(seg) < 6 + 3 * ncomp:
                raise ValueError(f"unsupported JPEG frame ({precision}-bit samples)")
            comps = [struct.unpack_from(">BBB", seg, 6 + 3 * c) for c in range(ncomp)]
            sof = (i + 5, height, width, tuple((f >> 4, f & 15) for _, f, _ in comps),
                   tuple(cid for cid, _, _ in comps))
        elif marker in _SOF_OTHER:
            raise ValueError(f"JPEG coding SOF{marker - 0xC0} (progressive/lossless/arithmetic) "
                             "cannot be split at restart markers")
        elif marker == 0xDD:
            if length < 4:
                raise ValueError("JPEG DRI segment too short")
            (dri,) = struct.unpack_from(">H", seg, 0)
        elif marker == 0xE0 and seg[:5] == b"JFIF\x00":
            jfif = True
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            adobe = seg[11]
        elif marker == 0xDA:
            if sof is None:
                raise ValueError("JPEG SOS before any SOF")
            if seg[0] != len(sof[3]):
                raise ValueError("JPEG first scan is not interleaved over all components")
            end = i + 2 + length
            return JpegHeader(bytes(buf[:end]), sof[0], sof[2], sof[1], sof[3], sof[4], dri, jfif, adobe)
        i += 2 + length


# ---- tiling ------------------------------------------------------------------------------------
def tile_size(header: JpegHeader, width: int, height: int) -> tuple[int, int]:
    """``(intervals_across, mcu_rows_down)`` per tile (see the module docstring for the rule)."""
    mcu_w, mcu_h = header.mcu_size
    interval_w = header.restart_interval * mcu_w
    per_row = -(-width // mcu_w) // header.restart_interval
    mcu_rows = -(-height // mcu_h)
    h_sub = len({h for h, _ in header.sampling}) > 1
    v_sub = len({v for _, v in header.sampling}) > 1
    k = 1 if h_sub else max(1, min(per_row, TARGET_TILE // interval_w))
    rows_px = TARGET_TILE * TARGET_TILE // max(k * interval_w, TARGET_TILE)  # <= 512, less for wide tiles
    m = 1 if v_sub else max(1, min(mcu_rows, rows_px // mcu_h))
    return k, m


@dataclass(frozen=True)
class NdpiLevel(TiffLevel):
    """A pyramid level of an NDPI: one JPEG strip cut into restart intervals.

    ``offsets``/``bytecounts`` (from :class:`TiffLevel`) are the absolute file offsets and byte
    counts of the restart intervals, each including its trailing ``RSTn`` (or final ``EOI``) marker.
    """

    header: JpegHeader
    strip_offset: int
    strip_bytes: int
    intervals_across: int  # restart intervals per MCU row
    mcu_rows: int
    tile_intervals: int  # intervals across one tile (k)
    tile_mcu_rows: int  # MCU rows down one tile (m)
    single: bool  # no restart markers: the whole strip is the only tile


def mcu_starts(page: Any) -> np.ndarray | None:
    """Interval offsets relative to the strip (tag 65426 plus high words of tag 65432), or ``None``."""
    tag = page.tags.get(TAG_MCU_STARTS)
    if tag is None:
        return None
    low = np.asarray(tag.value, dtype=np.uint64).ravel()
    high_tag = page.tags.get(TAG_MCU_STARTS_HIGH)
    if high_tag is not None:
        high = np.asarray(high_tag.value, dtype=np.uint64).ravel()
        if high.size != low.size:
            return None
        low = low + (high << np.uint64(32))
    return low.astype(np.int64)


def _scan_restart_markers(fd: int, start: int, count: int, header_len: int) -> np.ndarray:
    """Interval offsets (relative to the strip) found by scanning the strip for RST markers."""
    found = [np.array([header_len], dtype=np.int64)]
    pos = header_len
    end = start + count
    prev_ff = False
    while start + pos < end:
        chunk = os.pread(fd, min(_SCAN_CHUNK, end - start - pos), start + pos)
        if not chunk:
            break
        arr = np.frombuffer(chunk, dtype=np.uint8)
        is_rst = (arr >= 0xD0) & (arr <= 0xD7)
        ff_before = np.empty(arr.size, dtype=bool)
        ff_before[0] = prev_ff
        ff_before[1:] = arr[:-1] == 0xFF
        hits = np.flatnonzero(is_rst & ff_before)
        found.append(hits.astype(np.int64) + pos + 1)  # interval starts right after the marker
        prev_ff = bool(arr[-1] == 0xFF)
        pos += arr.size
    return np.concatenate(found)


def _read_exact(fd: int, path: str, count: int, offset: int, what: str) -> bytes:
    try:
        data = os.pread(fd, count, offset)
    except OSError as exc:
        raise CorruptSlideError(path, f"{what}: read failed: {exc}") from exc
    if len(data) != count:
        raise CorruptSlideError(path, f"{what}: short read ({len(data)} of {count} bytes at offset "
                                      f"{offset}); the file is truncated")
    return data


def make_ndpi_level(path: str, page_index: int, page: Any, fd: int, file_size: int) -> NdpiLevel:
    """Describe one NDPI pyramid directory, validating what tile access relies on."""
    where = f"directory {page_index}"
    width, height = int(page.imagewidth), int(page.imagelength)
    if int(page.compression) != _JPEG_COMPRESSION:
        raise UnsupportedFormatError(path, f"{where}: compression {int(page.compression)}, expected JPEG")
    if int(page.samplesperpixel) != 3 or np.dtype(page.dtype) != np.uint8:
        raise UnsupportedFormatError(path, f"{where}: {int(page.samplesperpixel)} samples of "
                                           f"{np.dtype(page.dtype)}; only 8-bit RGB NDPI is supported")
    offs, counts = page.tags.get(273), page.tags.get(279)
    if offs is None or counts is None:
        raise CorruptSlideError(path, f"{where}: no StripOffsets/StripByteCounts")
    offs_v, counts_v = np.ravel(offs.value), np.ravel(counts.value)
    if offs_v.size != 1 or counts_v.size != 1:
        raise UnsupportedFormatError(path, f"{where}: {offs_v.size} strips, NDPI levels have one")
    strip, nbytes = int(offs_v[0]), int(counts_v[0])  # 64-bit values rebuilt by tifffile's NDPI parser
    if width <= 0 or height <= 0 or nbytes <= 0:
        raise CorruptSlideError(path, f"{where}: empty image or strip")
    if strip + nbytes > file_size:
        raise CorruptSlideError(path, f"{where}: JPEG strip at offset {strip} (+{nbytes} bytes) extends "
                                      f"beyond the end of the file ({file_size} bytes); the file is truncated")
    starts = mcu_starts(page)
    guess = int(starts[0]) if starts is not None and starts.size and 0 < starts[0] < 1 << 20 else 1 << 16
    header: JpegHeader | None = None
    problem = ""
    for head_len in dict.fromkeys((min(nbytes, guess), min(nbytes, 1 << 22))):
        try:
            header = parse_jpeg_header(_read_exact(fd, path, head_len, strip, f"{where} JPEG header"))
            break
        except ValueError as exc:
            problem = str(exc)
    if header is None:
        raise CorruptSlideError(path, f"{where}: {problem}")
    if len(header.sampling) != 3:
        raise UnsupportedFormatError(path, f"{where}: JPEG has {len(header.sampling)} components, expected 3")
    encoding = TileEncoding("jpeg", {"tables": None, "colorspace": header.colorspace, "outcolorspace": JCS_RGB})
    tail = _read_exact(fd, path, min(16, nbytes), strip + nbytes - min(16, nbytes), f"{where} JPEG end")
    eoi = tail.rfind(b"\xff\xd9")
    if eoi < 0:
        raise CorruptSlideError(path, f"{where}: JPEG strip has no end-of-image marker (truncated data)")
    data_end = nbytes - len(tail) + eoi + 2  # relative end of the JPEG inside the strip

    common: dict[str, Any] = {"page_index": page_index, "decode": page.decode, "jpegtables": None,
                              "compression": _JPEG_COMPRESSION, "header": header, "strip_offset": strip,
                              "strip_bytes": data_end}
    if max(width, height) <= 65535 and (header.width, header.height) != (width, height):
        raise CorruptSlideError(path, f"{where}: JPEG is {header.width}x{header.height}, TIFF says "
                                      f"{width}x{height}")
    if header.restart_interval == 0:
        if max(width, height) > _MAX_SINGLE_TILE:
            raise UnsupportedFormatError(path, f"{where}: {width}x{height} JPEG without restart markers is "
                                               f"too large to store as one tile")
        level = SourceLevel(width, height, width, height, 3, "uint8", encoding)
        return NdpiLevel(level=level, offsets=np.array([strip], np.uint64),
                         bytecounts=np.array([data_end], np.uint64), intervals_across=1, mcu_rows=1,
                         tile_intervals=1, tile_mcu_rows=1, single=True, **common)

    mcu_w, mcu_h = header.mcu_size
    mcus_per_row = -(-width // mcu_w)
    if mcus_per_row % header.restart_interval:
        raise UnsupportedFormatError(path, f"{where}: restart interval {header.restart_interval} MCUs does "
                                           f"not divide the {mcus_per_row} MCUs of a row")
    per_row = mcus_per_row // header.restart_interval
    mcu_rows = -(-height // mcu_h)
    total = per_row * mcu_rows
    if not (_valid_starts(starts, total, len(header.data), data_end)
            and _markers_present(fd, strip, starts)):  # type: ignore[arg-type]
        starts = _scan_restart_markers(fd, strip, data_end, len(header.data))
        if not _valid_starts(starts, total, len(header.data), data_end):
            raise CorruptSlideError(path, f"{where}: found {0 if starts is None else starts.size} restart "
                                          f"intervals, expected {total}")
    assert starts is not None
    ends = np.append(starts[1:], data_end)
    k, m = tile_size(header, width, height)
    iw = header.restart_interval * mcu_w
    if k * iw > 65535:
        raise UnsupportedFormatError(path, f"{where}: restart intervals are {iw} pixels wide, more than a "
                                           "JPEG frame can hold (65535)")
    level = SourceLevel(width, height, k * iw, m * mcu_h, 3, "uint8", encoding)
    return NdpiLevel(level=level, offsets=(starts + strip).astype(np.uint64),
                     bytecounts=(ends - starts).astype(np.uint64), intervals_across=per_row,
                     mcu_rows=mcu_rows, tile_intervals=k, tile_mcu_rows=m, single=False, **common)


def _markers_present(fd: int, strip: int, starts: np.ndarray, samples: int = 64) -> bool:
    """Spot-check that restart markers precede up to ``samples`` evenly spaced recorded interval starts.

    Every interval is checked again when its tile is read; this only decides at open time whether
    the McuStarts table is usable or the strip must be scanned.
    """
    if starts.size < 2:
        return True
    picks = np.unique(np.linspace(1, starts.size - 1, min(samples, starts.size - 1)).astype(np.int64))
    for j in picks:
        mark = os.pread(fd, 2, strip + int(starts[j]) - 2)
        if len(mark) != 2 or mark[0] != 0xFF or not 0xD0 <= mark[1] <= 0xD7:
            return False
    return True


def _valid_starts(starts: np.ndarray | None, total: int, header_len: int, data_end: int) -> bool:
    if starts is None or starts.size != total:
        return False
    if starts[0] < header_len or starts[-1] >= data_end - 2:
        return False
    return bool(np.all(np.diff(starts) > 2))


# ---- properties and metadata -------------------------------------------------------------------
def _sint_tag(page: Any, code: int) -> int | None:
    tag = page.tags.get(code)
    if tag is None or tag.count < 1:
        return None
    try:
        return int(np.ravel(tag.value)[0])
    except (TypeError, ValueError):
        return None


def parse_property_map(text: str) -> dict[str, str]:
    """``hamamatsu.*`` pairs of the NDPI property map (tag 65449) as OpenSlide splits them.

    Records are separated by CR LF; each is split at its first ``=``; records with an empty key or
    value are skipped; later keys win.
    """
    props: dict[str, str] = {}
    for record in text.split("\r\n"):
        key, sep, value = record.partition("=")
        if sep and key and value:
            props[f"hamamatsu.{key}"] = value
    return props


def ndpi_properties(page0: Any, fd: int) -> dict[str, str]:
    """OpenSlide's ``tiff.*`` and ``hamamatsu.*`` properties of an NDPI (directory 0)."""
    props = tiff_properties(page0, fd)
    text = read_tag_string(page0, TAG_PROPERTY_MAP, fd)
    if text:
        props.update(parse_property_map(text))
    lens = read_tag_float(page0, TAG_SOURCE_LENS)
    if lens is not None:
        props["hamamatsu.SourceLens"] = format_double(lens)
    for code, name in ((TAG_X_OFFSET, "hamamatsu.XOffsetFromSlideCentre"),
                       (TAG_Y_OFFSET, "hamamatsu.YOffsetFromSlideCentre")):
        value = _sint_tag(page0, code)
        if value is not None:
            props[name] = str(value)
    reference = read_tag_string(page0, TAG_REFERENCE, fd)
    if reference is not None:
        props["hamamatsu.Reference"] = reference
    props["csp.ndpi.tiling"] = _TILING_NOTE
    return props


def ndpi_metadata(page0: Any, props: dict[str, str]) -> SlideMetadata:
    """Unified metadata of an NDPI with the source tag of each value."""
    fields: dict[str, Any] = {}
    prov: dict[str, str] = {}
    mpp_x, mpp_y = resolution_mpp(page0)
    for key, value, tag in (("mpp_x", mpp_x, "XResolution (282)"), ("mpp_y", mpp_y, "YResolution (283)")):
        if value is not None:
            fields[key] = value
            prov[key] = f"tiff tag {tag} with ResolutionUnit=centimeter, directory 0"
    lens = read_tag_float(page0, TAG_SOURCE_LENS)
    if lens is not None and math.isfinite(lens) and lens > 0:
        fields["objective_power"] = lens
        prov["objective_power"] = "NDPI tag 65421 SourceLens (hamamatsu.SourceLens)"
    date = tiff_datetime_iso(props.get("tiff.DateTime"))
    if date:
        fields["scan_date"] = date
        prov["scan_date"] = "tiff tag 306 DateTime"
    model = props.get("tiff.Model", "").strip()
    serial = props.get("hamamatsu.NDP.S/N", "").strip()
    if model:
        fields["scanner"] = f"Hamamatsu {model}" + (f" S/N {serial}" if serial else "")
        prov["scanner"] = "tiff tag 272 Model" + (" + NDPI property map NDP.S/N (tag 65449)" if serial else "")
    icc = icc_profile(page0)
    return tiff_metadata("hamamatsu", fields, prov, icc, "tiff tag 34675 (directory 0)")


# ---- the reader --------------------------------------------------------------------------------
class NdpiReader(TiffSlideReader):
    """Reader of Hamamatsu NDPI slides; levels are served as JPEG tiles re-framed from restart intervals."""

    name: ClassVar[str] = "ndpi"

    @classmethod
    def detect(cls, probe: Any) -> Match | Reject:
        """Accept TIFFs whose first directory carries the NDPI format flag tag 65420 (as OpenSlide)."""
        with quiet_tifffile():
            tiff = probe.tiff
            if tiff is None:
                return Reject(cls.name, probe.tiff_error or "not a TIFF file")
            try:
                page0 = tiff.pages[0]
                if TAG_FORMAT_FLAG not in page0.tags:
                    return Reject(cls.name, f"no NDPI format tag {TAG_FORMAT_FLAG} in directory 0")
                lens = [read_tag_float(p, TAG_SOURCE_LENS) for p in tiff.pages]
            except Exception as exc:  # noqa: BLE001 - damaged IFDs raise many types
                return Reject(cls.name, f"TIFF structure unreadable: {exc}")
        levels = sum(1 for v in lens if v is not None and v > 0)
        if not levels:
            return Reject(cls.name, "NDPI without pyramid directories (SourceLens > 0)")
        return Match(cls.name, f"Hamamatsu NDPI, {levels} JPEG level(s) split at restart markers")

    @classmethod
    def _build(cls, path: str, tiff: Any) -> NdpiReader:
        if tiff.is_ndpi:
            return cls._build_ndpi(path, tiff)
        # tifffile applies NDPI's 64-bit offset rules only to files named *.ndpi: re-parse with them
        import tifffile

        reparsed = tifffile.TiffFile(path, is_ndpi=True)
        tiff.close()
        try:
            return cls._build_ndpi(path, reparsed)
        except BaseException:
            reparsed.close()
            raise

    @classmethod
    def _build_ndpi(cls, path: str, tiff: Any) -> NdpiReader:
        fd = tiff.filehandle.fileno()
        size = os.fstat(fd).st_size
        pages = list(tiff.pages)
        page0 = pages[0]
        if TAG_FORMAT_FLAG not in page0.tags:
            raise UnsupportedFormatError(path, f"not an NDPI: no tag {TAG_FORMAT_FLAG} in directory 0")
        levels: list[TiffLevel] = []
        associated: dict[str, tuple[int, AssociatedImage]] = {}
        dropped: list[str] = []
        for index, page in enumerate(pages):
            lens = read_tag_float(page, TAG_SOURCE_LENS)
            if lens is None:
                raise CorruptSlideError(path, f"directory {index}: no SourceLens tag {TAG_SOURCE_LENS}")
            rows = page.tags.get(278)
            if rows is not None and int(np.ravel(rows.value)[0]) != int(page.imagelength):
                raise UnsupportedFormatError(path, f"directory {index}: RowsPerStrip differs from the height")
            if lens > 0:
                plane = _sint_tag(page, TAG_FOCAL_PLANE) or 0
                if plane != 0:
                    dropped.append(f"directory {index} (focal plane {plane})")
                    continue
                if levels and int(page.imagewidth) >= levels[-1].level.width:
                    raise UnsupportedFormatError(path, f"directory {index}: levels not in decreasing size")
                levels.append(make_ndpi_level(path, index, page, fd, size))
            elif lens == -1 and "macro" not in associated:
                associated["macro"] = (index, associated_image("macro", index, page))
            else:
                kind = "map" if lens == -2 else f"SourceLens {format_double(lens)}"
                dropped.append(f"directory {index} ({kind})")
        if not levels:
            raise UnsupportedFormatError(path, "NDPI without pyramid directories (SourceLens > 0)")
        properties = ndpi_properties(page0, fd)
        if dropped:  # what is not converted, like OpenSlide: other focal planes, the map
            properties["csp.ndpi.not-converted"] = "; ".join(dropped)
        return cls(path, tiff, levels, associated, properties, ndpi_metadata(page0, properties))

    # ---- tiles ---------------------------------------------------------------------------------
    def _tile_intervals(self, lv: NdpiLevel, col: int, row: int) -> tuple[list[tuple[int, int]], int, int]:
        """Runs ``[a, b)`` of interval indices (in tile raster order) and the height/width they cover."""
        r0 = row * lv.tile_mcu_rows
        r1 = min(r0 + lv.tile_mcu_rows, lv.mcu_rows)
        c0 = col * lv.tile_intervals
        c1 = min(c0 + lv.tile_intervals, lv.intervals_across)
        runs: list[tuple[int, int]] = []
        for r in range(r0, r1):
            a, b = r * lv.intervals_across + c0, r * lv.intervals_across + c1
            if runs and runs[-1][1] == a:
                runs[-1] = (runs[-1][0], b)
            else:
                runs.append((a, b))
        mcu_w, mcu_h = lv.header.mcu_size
        return runs, (r1 - r0) * mcu_h, (c1 - c0) * lv.header.restart_interval * mcu_w

    def _read_run(self, lv: NdpiLevel, a: int, b: int, where: str) -> bytes:
        start = int(lv.offsets[a])
        count = int(lv.offsets[b - 1] + lv.bytecounts[b - 1]) - start
        if start + count > self._size:
            raise CorruptSlideError(self.path, f"{where}: data at offset {start} (+{count} bytes) extends "
                                               f"beyond the end of the file ({self._size} bytes); truncated")
        return _read_exact(self._fd, self.path, count, start, where)

    def _marker_error(self, lv: NdpiLevel, where: str, offset: int) -> CorruptSlideError:
        return CorruptSlideError(self.path, f"{where}: no restart marker before file offset {offset}; the "
                                            f"McuStarts table (tag {TAG_MCU_STARTS}) of directory "
                                            f"{lv.page_index} does not match the JPEG data")

    def read_tile_encoded(self, level: int, col: int, row: int) -> bytes | None:
        """A standalone baseline JPEG of the tile: source entropy-coded bytes, rewritten SOF and RSTn.

        Raises
        ------
        CorruptSlideError
            Data beyond the end of the file, or restart markers not where McuStarts says.
        """
        base, _ = self._locate(level, col, row)
        lv: NdpiLevel = base  # type: ignore[assignment]
        where = f"level {level} tile ({col},{row})"
        if lv.single:
            return self._read_run(lv, 0, 1, where)
        runs, h, w = self._tile_intervals(lv, col, row)
        out = bytearray(lv.header.with_size(h, w))
        marks: list[np.ndarray] = []
        for a, b in runs:
            chunk = self._read_run(lv, a, b, where)
            rel_ends = (lv.offsets[a:b] + lv.bytecounts[a:b] - lv.offsets[a]).astype(np.int64)
            marks.append(len(out) + rel_ends - 1)  # second byte of each trailing marker
            out += chunk
        pos = np.concatenate(marks)
        intervals = np.concatenate([np.arange(a, b) for a, b in runs])
        arr = np.frombuffer(out, dtype=np.uint8)
        second = arr[pos]
        last_is_eoi = runs[-1][1] == len(lv.offsets)
        ok = (arr[pos - 1] == 0xFF) & (second >= 0xD0) & (second <= 0xD7)
        if last_is_eoi:
            ok[-1] = second[-1] == 0xD9
        if not ok.all():
            j = int(intervals[np.flatnonzero(~ok)[0]])
            raise self._marker_error(lv, where, int(lv.offsets[j] + lv.bytecounts[j]))
        numbers = (0xD0 + np.arange(pos.size) % 8).astype(np.uint8)
        numbers[-1] = 0xD9
        arr[pos] = numbers
        return bytes(out)

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """Reference decode, independent of the tile re-framing: each restart interval is decoded as
        its own JPEG (header with the interval's size, data ending in EOI), as OpenSlide does.

        Raises
        ------
        CorruptSlideError
            The data cannot be read or decoded.
        """
        import imagecodecs

        base, _ = self._locate(level, col, row)
        lv: NdpiLevel = base  # type: ignore[assignment]
        src = lv.level
        cfg = src.encoding.config
        where = f"level {level} tile ({col},{row})"
        tile = np.zeros((src.tile_height, src.tile_width, 3), np.uint8)

        def decode(data: bytes) -> np.ndarray:
            try:
                return np.asarray(imagecodecs.jpeg8_decode(data, colorspace=cfg["colorspace"],
                                                           outcolorspace=cfg["outcolorspace"]))
            except Exception as exc:  # imagecodecs raises its own error types
                raise CorruptSlideError(self.path, f"{where}: JPEG does not decode: {exc}") from exc

        if lv.single:
            img = decode(self._read_run(lv, 0, 1, where))
            tile[:img.shape[0], :img.shape[1]] = img[:src.tile_height, :src.tile_width]
            return tile
        mcu_w, mcu_h = lv.header.mcu_size
        iw = lv.header.restart_interval * mcu_w
        head = lv.header.with_size(mcu_h, iw)
        runs, _, _ = self._tile_intervals(lv, col, row)
        first_row = row * lv.tile_mcu_rows
        first_col = col * lv.tile_intervals
        for a, b in runs:
            chunk = self._read_run(lv, a, b, where)
            base_off = int(lv.offsets[a])
            for j in range(a, b):
                lo = int(lv.offsets[j]) - base_off
                hi = lo + int(lv.bytecounts[j])
                body = chunk[lo:hi]
                if body[-2] != 0xFF or not (0xD0 <= body[-1] <= 0xD7 or body[-1] == 0xD9):
                    raise self._marker_error(lv, where, int(lv.offsets[j]) + hi - lo)
                img = decode(head + body[:-1] + b"\xd9")
                y = (j // lv.intervals_across - first_row) * mcu_h
                x = (j % lv.intervals_across - first_col) * iw
                tile[y:y + mcu_h, x:x + iw] = img[:mcu_h, :iw]
        return tile
