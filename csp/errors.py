"""Exception hierarchy of CSP.

Every error raised on purpose by the library derives from :class:`CspError`. Subclasses mix in the
matching builtin exception so callers may catch either (``except FileNotFoundError`` still works).
Messages always name the file (when there is one) and the problem.
"""

from __future__ import annotations

import os


class CspError(Exception):
    """Root of all CSP errors.

    Parameters
    ----------
    path
        File or container the error is about (may be ``None``).
    detail
        Human readable description of the problem.
    """

    def __init__(self, path: str | os.PathLike[str] | None, detail: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.detail = detail
        super().__init__(self._format())

    def _format(self) -> str:
        if self.path is None:
            return self.detail
        return f"{self.path}: {self.detail}"

    def __reduce__(self):  # keep picklable across process pools
        return (self.__class__, (self.path, self.detail))


class SlideNotFoundError(CspError, FileNotFoundError):
    """The source or container path does not exist."""


class UnsupportedFormatError(CspError, ValueError):
    """No reader accepts the file, or the file uses a feature CSP does not support."""


class CorruptSlideError(CspError, ValueError):
    """The file claims a supported format but its content is damaged or truncated."""


class ContainerError(CspError, ValueError):
    """A CSP container is invalid, incomplete or of an unknown format version."""


class IncompleteContainerError(ContainerError):
    """A container has no completion record: its conversion did not finish."""


class VerificationError(CspError):
    """A container does not match its source or its own recorded checksums."""


class CodecError(CspError, ValueError):
    """A tile could not be encoded or decoded."""


class OutputExistsError(CspError, FileExistsError):
    """The conversion target already exists and overwriting was not requested."""
