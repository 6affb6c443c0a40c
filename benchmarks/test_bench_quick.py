"""pytest-benchmark versions of the read benchmarks on the bundled sample (quick; also run in CI).

``make test`` runs them once each as tests (``--benchmark-disable``); ``pytest benchmarks
--benchmark-enable`` times them. The full side-by-side run is ``benchmarks/bench_read.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import csp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "CMU-1-Small-Region.svs")
openslide = pytest.importorskip("openslide")


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    dst = tmp_path_factory.mktemp("bench") / "sample.csp"
    csp.convert(SAMPLE, dst)
    return str(dst)


def _coords(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return [(int(c), int(r)) for c, r in zip(rng.integers(0, 9, n), rng.integers(0, 12, n), strict=True)]


@pytest.mark.parametrize("reader", ["csp", "openslide"])
def test_tile_aligned_reads(benchmark, container, reader):
    coords = _coords()
    if reader == "csp":
        slide = csp.open_slide(container)
        fn = lambda: [slide.read_tile(0, c, r) for c, r in coords]
    else:
        slide = openslide.OpenSlide(SAMPLE)
        fn = lambda: [slide.read_region((c * 240, r * 240), 0, (240, 240)) for c, r in coords]
    out = benchmark(fn)
    assert len(out) == len(coords)
    slide.close()


@pytest.mark.parametrize("reader", ["csp", "openslide"])
def test_unaligned_windows(benchmark, container, reader):
    rng = np.random.default_rng(1)
    pts = [(int(x), int(y)) for x, y in zip(rng.integers(0, 2220 - 256, 32), rng.integers(0, 2967 - 256, 32),
                                            strict=True)]
    if reader == "csp":
        slide = csp.open_slide(container)
        fn = lambda: [slide.read_region(p, 0, (256, 256), as_array=True) for p in pts]
    else:
        slide = openslide.OpenSlide(SAMPLE)
        fn = lambda: [slide.read_region(p, 0, (256, 256)) for p in pts]
    assert len(benchmark(fn)) == len(pts)
    slide.close()
