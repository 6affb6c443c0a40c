"""Golden containers: every container kept in ``tests/fixtures/containers`` (one per format version,
written by ``make_golden.py`` and never rewritten) opens, verifies, and gives back its source's pixels
exactly (``docs/format.md`` §9: later 1.x readers read what earlier writers wrote)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from csp.codecs import lossless
from csp.container.reader import ContainerReader
from csp.container.verify import verify_container

HERE = Path(__file__).parent / "fixtures" / "containers"
GOLDEN = sorted(HERE.glob("v*.csp"))


def _source_pixels() -> np.ndarray:
    spec = importlib.util.spec_from_file_location("make_golden", HERE / "make_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.source_pixels()


def test_golden_containers_present() -> None:
    assert [p.name for p in GOLDEN][:1] == ["v1.2.csp"]


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_container_reads_its_source_exactly(path: Path) -> None:
    expected = _source_pixels()
    with ContainerReader(path) as cr:
        assert cr.completion["format_version"] == path.stem[1:]
        level0 = cr.levels[0]
        np.testing.assert_array_equal(cr.read_array(level0), expected)
        data = cr.tile_bytes(level0, 0, 0)
        assert data is not None and lossless.stream_info(data) == ((64, 64, 3), np.dtype(np.uint8))
        if path.stem >= "v1.2":
            assert data[4] == 3  # the csp.lossless bitstream written since format 1.2
    verify_container(path)
