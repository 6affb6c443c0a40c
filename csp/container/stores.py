"""Byte stores for containers: a directory (one file per key) or a single uncompressed zip file.

Writers stage output under a temporary name and publish it atomically with :meth:`commit`, so a
crashed conversion never leaves something at the destination path that looks finished. Readers serve
positional reads (``pread``) so tiles are fetched with one system call and no seek state is shared.
"""

from __future__ import annotations

import abc
import os
import shutil
import struct
import threading
import zipfile

from csp.errors import ContainerError, OutputExistsError, SlideNotFoundError

ZIP_SUFFIXES = (".csp", ".zip", ".ozx")


def is_zip_path(path: str) -> bool:
    """True if a container path denotes the single-file (zip) layout."""
    return os.path.isfile(path) or (not os.path.isdir(path) and path.lower().endswith(ZIP_SUFFIXES))


# ----------------------------------------------------------------------------------------- writers
class StoreWriter(abc.ABC):
    """Write-once store: ``put`` keys, then :meth:`commit` (atomic publish) or :meth:`abort`."""

    def __init__(self, path: str, *, overwrite: bool = False) -> None:
        self.path = os.fspath(path)
        if os.path.exists(self.path) and not overwrite:
            raise OutputExistsError(self.path, "output exists (pass overwrite=True / --overwrite)")
        self.overwrite = overwrite
        self.staging = f"{self.path}.partial-{os.getpid()}"
        self.bytes_written = 0

    @abc.abstractmethod
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` under ``key`` (each key written once)."""

    @abc.abstractmethod
    def _close(self) -> None: ...

    def seal(self) -> None:
        """Stop writing data so the staged output can be read back (for verification)."""
        self._close()

    @abc.abstractmethod
    def _append(self, key: str, data: bytes) -> None: ...

    def commit(self, last: dict[str, bytes] | None = None) -> None:
        """Write the ``last`` keys (the completion record), then publish the staged output atomically."""
        self._close()
        for key, data in (last or {}).items():
            self._append(key, data)
        if os.path.exists(self.path):
            _remove(self.path)
        os.replace(self.staging, self.path)

    def abort(self) -> None:
        """Drop everything written so far."""
        try:
            self._close()
        finally:
            _remove(self.staging)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


class DirWriter(StoreWriter):
    """Directory layout: every key is a file below the container directory."""

    def __init__(self, path: str, *, overwrite: bool = False) -> None:
        super().__init__(path, overwrite=overwrite)
        _remove(self.staging)
        os.makedirs(self.staging)

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        target = os.path.join(self.staging, *key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(data)
        self.bytes_written += len(data)

    def _close(self) -> None:
        pass

    def _append(self, key: str, data: bytes) -> None:
        self.put(key, data)


class ZipWriter(StoreWriter):
    """Single-file layout: a zip archive whose members are stored uncompressed (range-readable)."""

    def __init__(self, path: str, *, overwrite: bool = False) -> None:
        super().__init__(path, overwrite=overwrite)
        _remove(self.staging)
        self._zip: zipfile.ZipFile | None = zipfile.ZipFile(
            self.staging, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        assert self._zip is not None
        info = zipfile.ZipInfo(key, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        with self._zip.open(info, "w", force_zip64=len(data) > 0x7FFF0000) as fh:
            fh.write(data)
        self.bytes_written += len(data)

    def _close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def _append(self, key: str, data: bytes) -> None:
        with zipfile.ZipFile(self.staging, "a", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            info = zipfile.ZipInfo(key, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, data)
        self.bytes_written += len(data)


def open_writer(path: str, *, layout: str | None = None, overwrite: bool = False) -> StoreWriter:
    """Writer for ``path``; ``layout`` is ``"zip"`` or ``"dir"`` (default: by suffix, zip for .csp)."""
    if layout is None:
        layout = "zip" if path.lower().endswith(ZIP_SUFFIXES) else "dir"
    if layout == "zip":
        return ZipWriter(path, overwrite=overwrite)
    if layout == "dir":
        return DirWriter(path, overwrite=overwrite)
    raise ValueError(f"unknown container layout {layout!r} (expected 'zip' or 'dir')")


# ----------------------------------------------------------------------------------------- readers
class StoreReader(abc.ABC):
    """Random-access reads of a container's keys. Thread-safe; holds at most a few descriptors."""

    path: str

    @abc.abstractmethod
    def size(self, key: str) -> int | None:
        """Byte size of ``key`` or ``None`` if absent."""

    @abc.abstractmethod
    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes of ``key`` at ``offset`` (one positional read)."""

    def read(self, key: str) -> bytes | None:
        """Whole value of ``key`` or ``None`` if absent."""
        n = self.size(key)
        if n is None:
            return None
        return self.read_range(key, 0, n)

    @abc.abstractmethod
    def keys(self) -> list[str]:
        """All keys (for verification and copying)."""

    def close(self) -> None:
        """Release descriptors."""


def _pread_exact(fd: int, length: int, offset: int, path: str) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise ContainerError(path, f"truncated: wanted {length} bytes at offset {offset}, got {len(data)}")
    return data


class DirReader(StoreReader):
    """Reads a directory-layout container; one descriptor per shard file, opened on first use."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise SlideNotFoundError(self.path, "container directory not found")
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def _file(self, key: str) -> str:
        return os.path.join(self.path, *key.split("/"))

    def size(self, key: str) -> int | None:
        try:
            return os.path.getsize(self._file(key))
        except OSError:
            return None

    def _fd(self, key: str) -> int:
        fd = self._fds.get(key)
        if fd is None:
            with self._lock:
                fd = self._fds.get(key)
                if fd is None:
                    fd = os.open(self._file(key), os.O_RDONLY)
                    self._fds[key] = fd
        return fd

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        return _pread_exact(self._fd(key), length, offset, self._file(key))

    def keys(self) -> list[str]:
        out = []
        for root, _dirs, files in os.walk(self.path):
            rel = os.path.relpath(root, self.path)
            for f in files:
                out.append(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
        return sorted(out)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class ZipReader(StoreReader):
    """Reads a single-file container through one descriptor; member data offsets resolved once."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise SlideNotFoundError(self.path, "container file not found")
        try:
            with zipfile.ZipFile(self.path) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ContainerError(self.path, f"not a readable CSP zip container ({exc})") from exc
        self._members: dict[str, tuple[int, int]] = {}
        self._fd = os.open(self.path, os.O_RDONLY)
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                raise ContainerError(self.path, f"member {info.filename} is compressed; CSP zips store members")
            header = _pread_exact(self._fd, 30, info.header_offset, self.path)
            if header[:4] != b"PK\x03\x04":
                raise ContainerError(self.path, f"bad local header for member {info.filename}")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            self._members[info.filename] = (start, info.file_size)

    def size(self, key: str) -> int | None:
        m = self._members.get(key)
        return None if m is None else m[1]

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        start, size = self._members[key]
        if offset + length > size:
            raise ContainerError(self.path, f"read past end of member {key}")
        return _pread_exact(self._fd, length, start + offset, self.path)

    def keys(self) -> list[str]:
        return sorted(self._members)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def is_url(path: str) -> bool:
    """True for fsspec URLs such as ``s3://bucket/key`` (``file://`` counts as a URL too)."""
    return "://" in path


class FsspecReader(StoreReader):
    """Reads a container from any fsspec filesystem (object stores) with one ranged GET per tile.

    Works for both layouts: for a zip container the member offsets are resolved once from the
    central directory and each tile is a byte range of the one object.
    """

    def __init__(self, url: str, **storage_options: object) -> None:
        import fsspec

        self.path = url
        self._fs, self._root = fsspec.core.url_to_fs(url, **storage_options)
        try:
            info = self._fs.info(self._root)
        except FileNotFoundError as exc:
            raise SlideNotFoundError(url, "no such container") from exc
        self._sizes: dict[str, int] = {}
        self._zip: dict[str, tuple[int, int]] | None = None
        if info.get("type") != "directory":
            self._zip = {}
            try:
                with self._fs.open(self._root, "rb") as fh, zipfile.ZipFile(fh) as zf:
                    infos = zf.infolist()
                    for zi in infos:
                        if zi.compress_type != zipfile.ZIP_STORED:
                            raise ContainerError(url, f"member {zi.filename} is compressed")
                        fh.seek(zi.header_offset)
                        header = fh.read(30)
                        name_len, extra_len = struct.unpack("<HH", header[26:30])
                        self._zip[zi.filename] = (zi.header_offset + 30 + name_len + extra_len, zi.file_size)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise ContainerError(url, f"not a readable CSP zip container ({exc})") from exc

    def _key_path(self, key: str) -> str:
        return f"{self._root.rstrip('/')}/{key}"

    def size(self, key: str) -> int | None:
        if self._zip is not None:
            m = self._zip.get(key)
            return None if m is None else m[1]
        if key not in self._sizes:
            try:
                self._sizes[key] = int(self._fs.size(self._key_path(key)))
            except FileNotFoundError:
                return None
        return self._sizes[key]

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if self._zip is not None:
            start, size = self._zip[key]
            if offset + length > size:
                raise ContainerError(self.path, f"read past end of member {key}")
            data = self._fs.cat_file(self._root, start=start + offset, end=start + offset + length)
        else:
            data = self._fs.cat_file(self._key_path(key), start=offset, end=offset + length)
        if len(data) != length:
            raise ContainerError(self.path, f"truncated read of {key}: {len(data)} of {length} bytes")
        return bytes(data)

    def keys(self) -> list[str]:
        if self._zip is not None:
            return sorted(self._zip)
        root = self._root.rstrip("/")
        return sorted(p[len(root) + 1:] for p in self._fs.find(root))


def open_reader(path: str | os.PathLike[str]) -> StoreReader:
    """Reader for a container path (directory or zip file) or an fsspec URL."""
    path = os.fspath(path)
    if is_url(path):
        return FsspecReader(path)
    if not os.path.exists(path):
        raise SlideNotFoundError(path, "no such container")
    return DirReader(path) if os.path.isdir(path) else ZipReader(path)
