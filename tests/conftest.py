"""Shared fixtures: where the team's sample slides live, and the report header."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CSP_SHARED_SLIDES", REPO.parent / "shared" / "slides"))
SAMPLE = REPO / "data" / "CMU-1-Small-Region.svs"


def shared_file(rel: str) -> Path:
    """Path of a shared sample slide, skipping the test when the collection is absent."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"shared slide {rel} not available (set CSP_SHARED_SLIDES)")
    return p


def shared_files(*subdirs: str) -> list[str]:
    """Relative names of the shared slides in ``subdirs`` (empty when the collection is absent)."""
    out = []
    for d in subdirs:
        folder = SHARED / d
        if folder.is_dir():
            out.extend(f"{d}/{n}" for n in sorted(os.listdir(folder)))
    return out


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"shared slides: {SHARED} ({'present' if SHARED.is_dir() else 'absent: those tests skip'})"]
    try:
        import imagecodecs
        import numba
        import tifffile
        import zarr

        lines.append(f"zarr {zarr.__version__}, tifffile {tifffile.__version__}, imagecodecs "
                     f"{imagecodecs.__version__} (libjpeg-turbo {imagecodecs.JPEG8.version if hasattr(imagecodecs, 'JPEG8') else '?'}), numba {numba.__version__}")
    except Exception as exc:  # pragma: no cover
        lines.append(f"version probe failed: {exc}")
    try:
        import openslide

        lines.append(f"openslide {openslide.__library_version__}, openslide-python {openslide.__version__}")
    except Exception:
        lines.append("openslide not available: differential tests skip")
    return lines
