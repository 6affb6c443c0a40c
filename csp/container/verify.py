"""Re-read a container and prove it: shard digests, every tile decodes, bytes/pixels equal the source."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from csp.container.reader import ContainerReader, StoredArray
from csp.errors import CspError, VerificationError
from csp.readers.base import SlideReader

MAX_LISTED = 20


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_container`."""

    path: str
    source: str | None
    tiles_checked: int = 0
    bytes_compared: int = 0
    levels: int = 0
    associated: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify_container(
    path: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None,
    reader: SlideReader | None = None, require_complete: bool = True,
    progress: Callable[[str, int, int], None] | None = None, raise_on_error: bool = True,
) -> VerifyReport:
    """Check a container, optionally against its source.

    Without a source: the completion record's shard digests must match and every tile must decode;
    built levels must equal the 2x downsample of the level above. With a source (``source`` path or an
    open ``reader``): every passthrough tile's bytes must equal the source tile's bytes, and every
    level's decoded pixels must equal the source reader's reference decode, as must associated images.

    Raises
    ------
    VerificationError
        On any mismatch (when ``raise_on_error``); the message lists the first problems.
    """
    own_reader = False
    if reader is None and source is not None:
        from csp.registry import open_source

        reader = open_source(source)
        own_reader = True
    report = VerifyReport(os.fspath(path), None if reader is None else reader.source_path)
    try:
        with ContainerReader(path, require_complete=require_complete) as cr:
            _check_digests(cr, report)
            levels_meta = cr.meta["levels"]
            total = sum(a.layout.tiles_down for a in cr.levels)
            done = 0
            for i, arr in enumerate(cr.levels):
                lm = levels_meta[i]
                if lm["mode"] == "built":
                    _check_built(cr, i, report)
                else:
                    _check_level(cr, arr, lm, reader, report)
                report.levels += 1
                done += arr.layout.tiles_down
                if progress:
                    progress("verify", done, total)
            for name, arr in cr.associated.items():
                _check_associated(cr, name, arr, reader, report)
            _check_tissue(cr, report)
    finally:
        if own_reader and reader is not None:
            reader.close()
    if raise_on_error and report.problems:
        listed = "; ".join(report.problems[:MAX_LISTED])
        more = len(report.problems) - MAX_LISTED
        raise VerificationError(report.path, f"{len(report.problems)} problem(s): {listed}"
                                + (f"; and {more} more" if more > 0 else ""))
    return report


def _problem(report: VerifyReport, text: str) -> None:
    report.problems.append(text)


def _check_digests(cr: ContainerReader, report: VerifyReport) -> None:
    if cr.completion is None:
        return
    for info in cr.completion.get("arrays", {}).values():
        for key, digest in info.get("shards", {}).items():
            data = cr.store.read(key)
            if data is None:
                _problem(report, f"shard {key} is missing")
            elif hashlib.sha256(data).hexdigest() != digest:
                _problem(report, f"shard {key} does not match its recorded sha256 (altered after conversion)")


def _in_image(arr: StoredArray, col: int, row: int) -> tuple[int, int]:
    lay = arr.layout
    return (min(lay.tile_height, lay.height - row * lay.tile_height),
            min(lay.tile_width, lay.width - col * lay.tile_width))


def _check_level(cr: ContainerReader, arr: StoredArray, lm: dict, reader: SlideReader | None,
                 report: VerifyReport) -> None:
    src_level = lm.get("source_level", int(arr.path))
    passthrough = lm["mode"] == "passthrough"
    for t, z, col, row in _plane_tiles(cr, arr):
        kw = {"t": t, "z": z} if arr.layout.is_5d else {}  # source readers take t/z only for 5-D sources
        where = f"level {arr.path} plane (t={t}, z={z}) tile ({col}, {row})" if kw else \
            f"level {arr.path} tile ({col}, {row})"
        try:
            stored = cr.tile_bytes(arr, col, row, t=t, z=z)
            pixels = cr.decode_tile(arr, col, row, t=t, z=z)
        except CspError as exc:
            _problem(report, f"{where}: {exc.detail}")
            continue
        report.tiles_checked += 1
        if reader is None:
            continue
        if passthrough:
            src_bytes = reader.read_tile_encoded(src_level, col, row)
            report.bytes_compared += len(src_bytes or b"")
            if stored is not None and reader.levels[src_level].encoding.codec != arr.encoding.codec:
                try:  # a repacked tile (archive tier) stands for the source's bytes it rebuilds
                    stored = arr.codec.source_bytes(stored)
                except CspError as exc:
                    _problem(report, f"{where}: {exc.detail}")
                    continue
            if src_bytes != stored:
                _problem(report, f"level {arr.path} tile ({col}, {row}): stored bytes differ from the source")
                continue
            if stored is None:
                continue
        try:
            ref = reader.read_tile(src_level, col, row, **kw)
        except CspError as exc:
            _problem(report, f"source level {src_level} tile ({col}, {row}): {exc.detail}")
            continue
        h, w = _in_image(arr, col, row)
        if ref.ndim == 2:
            ref = ref[:, :, None]
        same = np.array_equal(pixels[:h, :w], ref[:h, :w], equal_nan=pixels.dtype.kind in "fc")
        if ref.dtype != pixels.dtype or not same:
            _problem(report, f"{where}: decoded pixels differ from the source")


def _plane_tiles(cr: ContainerReader, arr: StoredArray) -> list[tuple[int, int, int, int]]:
    """``(t, z, col, row)`` of every tile of every plane (plane (0, 0) only for 3-D arrays)."""
    return [(t, z, col, row) for t, z in arr.layout.planes for col, row in cr.iter_tiles(arr)]


def _check_built(cr: ContainerReader, i: int, report: VerifyReport) -> None:
    from csp.container.pyramid import downsample2x

    above, arr = cr.levels[i - 1], cr.levels[i]
    lay, up = arr.layout, above.layout
    th = lay.tile_height
    for row in range(lay.tiles_down):
        try:
            y = row * th
            h = min(th, lay.height - y)
            band = cr.read_region(arr, 0, y, lay.width, h)
            src = cr.read_region(above, 0, 2 * y, up.width, min(2 * th, up.height - 2 * y))
        except CspError as exc:
            _problem(report, f"level {arr.path} row {row}: {exc.detail}")
            continue
        report.tiles_checked += lay.tiles_across
        if not np.array_equal(downsample2x(src), band):
            _problem(report, f"level {arr.path} tile row {row}: not the 2x downsample of level {above.path}")


def _check_associated(cr: ContainerReader, name: str, arr: StoredArray, reader: SlideReader | None,
                      report: VerifyReport) -> None:
    try:
        img = cr.read_array(arr)
    except CspError as exc:
        _problem(report, f"associated image {name}: {exc.detail}")
        return
    report.associated += 1
    if reader is None:
        return
    if name not in reader.associated:
        _problem(report, f"associated image {name} is not in the source")
        return
    ref = reader.read_associated(name)
    if ref.ndim == 2:
        ref = ref[:, :, None]
    if not np.array_equal(img, ref):
        _problem(report, f"associated image {name}: pixels differ from the source")


def _check_tissue(cr: ContainerReader, report: VerifyReport) -> None:
    if cr.tissue is None:
        return
    from csp.native import tissue_mask

    t = cr.meta["tissue"]
    try:
        stored = cr.read_array(cr.tissue)[:, :, 0]
        pixels = cr.read_array(cr.levels[int(t["level"])])
    except CspError as exc:
        _problem(report, f"tissue mask: {exc.detail}")
        return
    if not np.array_equal(stored, tissue_mask(pixels, int(t["saturation"]), int(t["white"]))):
        _problem(report, f"tissue mask does not match level {t['level']}")
