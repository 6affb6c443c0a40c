"""The hardened read path: batched reads, tile cache, handle pool, pickling, fsspec URLs."""

from __future__ import annotations

import os
import pickle
import shutil

import fsspec
import numpy as np
import pytest

import csp
from csp.container.cache import HandlePool, TileCache
from csp.container.reader import ContainerReader
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    d = tmp_path_factory.mktemp("rp")
    dst = d / "s.csp"
    csp.convert(SAMPLE, dst)
    return dst


def test_read_tiles_batched_equals_single(container):
    with ContainerReader(container) as cr:
        arr = cr.levels[0]
        coords = [(c, r) for r in range(arr.layout.tiles_down) for c in range(arr.layout.tiles_across)]
        single = np.stack([cr.decode_tile(arr, c, r) for c, r in coords])
        np.testing.assert_array_equal(cr.read_tiles(arr, coords), single)
        np.testing.assert_array_equal(cr.read_tiles(arr, coords, threads=2), single)


def test_tile_cache_budget_and_equality(container):
    cache = TileCache(max_bytes=5 * 240 * 240 * 3)
    with ContainerReader(container, tile_cache=cache) as cr, ContainerReader(container) as plain:
        arr = cr.levels[0]
        for r in range(3):
            for c in range(3):
                np.testing.assert_array_equal(cr.decode_tile(arr, c, r), plain.decode_tile(arr, c, r))
        assert len(cache) == 5 and cache.bytes <= cache.max_bytes
        first = cr.decode_tile(arr, 2, 2)
        assert cache.hits >= 1 and not first.flags.writeable
        region = cr.read_region(arr, 100, 100, 500, 400)
        np.testing.assert_array_equal(region, plain.read_region(arr, 100, 100, 500, 400))


def test_handle_pool_bounds_open_handles(container, tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"c{i}.csp"
        shutil.copy(container, p)
        paths.append(p)
    pool = HandlePool(max_open=3)
    for p in paths * 2:
        r = pool.get(p)
        r.decode_tile(r.levels[0], 0, 0)
    assert len(pool) == 3
    assert pool.get(paths[-1]) is pool.get(paths[-1])
    pool.close()


def test_slide_pickles_and_reopens(container):
    with csp.open_slide(container) as slide:
        want = slide.read_region((300, 400), 0, (256, 256), as_array=True)
        clone = pickle.loads(pickle.dumps(slide))
    try:
        np.testing.assert_array_equal(clone.read_region((300, 400), 0, (256, 256), as_array=True), want)
    finally:
        clone.close()


@pytest.mark.parametrize("layout", ["zip", "dir"])
def test_fsspec_url_reads(container, tmp_path, layout):
    """Containers read through fsspec (ranged reads) give the same pixels as local files."""
    fs = fsspec.filesystem("memory")
    if layout == "zip":
        url = "memory://bucket/s.csp"
        fs.pipe_file("/bucket/s.csp", container.read_bytes())
    else:
        local = tmp_path / "s.zarr"
        csp.convert(SAMPLE, local, layout="dir")
        url = "memory://bucket/s.zarr"
        for root, _d, files in os.walk(local):
            for f in files:
                full = os.path.join(root, f)
                fs.pipe_file("/bucket/s.zarr/" + os.path.relpath(full, local), open(full, "rb").read())
    with csp.open_slide(url) as remote, csp.open_slide(container) as local_slide:
        assert remote.level_dimensions == local_slide.level_dimensions
        for lvl in range(remote.level_count):
            np.testing.assert_array_equal(
                remote.read_region((500, 600), lvl, (300, 200), as_array=True),
                local_slide.read_region((500, 600), lvl, (300, 200), as_array=True))
    assert csp.verify(url).ok


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


RSS_BOUND = 150 * 2**20  # stated bound for 10,000 slides through one pool
FD_BOUND = 128 + 16  # pool size + slack


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_ten_thousand_handles_bounded(tmp_path):
    """10,000 containers opened and read through one pool: descriptors and memory stay bounded."""
    import tifffile

    from csp.container.cache import HandlePool

    src = tmp_path / "tiny.tiff"
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    tifffile.imwrite(src, img, tile=(64, 64), compression="jpeg", photometric="rgb")
    one = tmp_path / "tiny.csp"
    csp.convert(src, one)
    paths = []
    for i in range(10_000):
        p = tmp_path / f"s{i:05d}.csp"
        os.link(one, p)
        paths.append(p)
    pool = HandlePool(max_open=128)
    fds0, rss0 = _open_fds(), _rss_bytes()
    peak_fds = 0
    for i, p in enumerate(paths):
        r = pool.get(p)
        r.decode_tile(r.levels[0], i % 2, (i // 2) % 2)
        if i % 500 == 0:
            peak_fds = max(peak_fds, _open_fds() - fds0)
    grown = _rss_bytes() - rss0
    assert peak_fds <= FD_BOUND, peak_fds
    assert grown < RSS_BOUND, f"RSS grew by {grown / 2**20:.1f} MiB"
    assert len(pool) == 128
    pool.close()
