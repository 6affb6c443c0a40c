"""Parse a candidate file's header once and share it between all readers' ``detect``."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

from csp.errors import SlideNotFoundError

HEAD_BYTES = 4096


class Probe:
    """Lazily parsed facts about a candidate source path.

    The TIFF structure is parsed at most once (:attr:`tiff`); parse failures are kept in
    :attr:`tiff_error` so every reader can give a precise rejection reason.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise SlideNotFoundError(self.path, "no such file or directory")
        self.is_dir = os.path.isdir(self.path)
        self.size = 0 if self.is_dir else os.path.getsize(self.path)
        self.head = b""
        if not self.is_dir:
            with open(self.path, "rb") as fh:
                self.head = fh.read(HEAD_BYTES)
        self.tiff_error: str | None = None
        self._opened: list[Any] = []

    @property
    def suffix(self) -> str:
        """Lower-case file extension including the dot (``".svs"``)."""
        return os.path.splitext(self.path)[1].lower()

    @property
    def looks_like_tiff(self) -> bool:
        """True if the file starts with a classic or BigTIFF header."""
        return self.head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

    @cached_property
    def tiff(self) -> Any:
        """The parsed :class:`tifffile.TiffFile`, or ``None`` (see :attr:`tiff_error`)."""
        if self.is_dir or not self.looks_like_tiff:
            self.tiff_error = "not a TIFF file (no TIFF header)"
            return None
        import tifffile

        try:
            tf = tifffile.TiffFile(self.path)
            _ = tf.pages[0]
        except Exception as exc:  # tifffile raises many types on damaged files
            self.tiff_error = f"TIFF structure unreadable: {exc}"
            return None
        self._opened.append(tf)
        return tf

    def release(self) -> None:
        """Close whatever the probe opened (readers that need the file reopen or take ownership)."""
        for obj in self._opened:
            try:
                obj.close()
            except Exception:  # pragma: no cover - closing best effort
                pass
        self._opened.clear()

    def take_tiff(self) -> Any:
        """Hand the parsed TIFF over to a reader; the probe no longer closes it."""
        tf = self.tiff
        if tf is not None and tf in self._opened:
            self._opened.remove(tf)
        return tf
