"""Container layouts, the fast path against zarr-python, completion and tamper detection."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import csp
from csp.container import spec
from csp.container.reader import ContainerReader
from csp.container.stores import open_reader
from csp.errors import (
    ContainerError,
    CspError,
    IncompleteContainerError,
    OutputExistsError,
    VerificationError,
)
from tests.conftest import SAMPLE


@pytest.fixture(scope="module", params=["zip", "dir"])
def sample_container(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    dst = d / ("sample.csp" if request.param == "zip" else "sample.zarr")
    res = csp.convert(SAMPLE, dst, layout=request.param)
    return dst, res


def _zarr_root(path):
    if os.path.isdir(path):
        return zarr.open_group(str(path), mode="r")
    return zarr.open_group(zarr.storage.ZipStore(str(path), mode="r"), mode="r")


def test_layouts_and_members(sample_container):
    dst, res = sample_container
    if zipfile.is_zipfile(dst):
        with zipfile.ZipFile(dst) as zf:
            infos = zf.infolist()
            assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
            assert infos[-1].filename == spec.COMPLETION_KEY  # written last
    else:
        assert (dst / spec.COMPLETION_KEY).is_file()
    with ContainerReader(dst) as cr:
        assert cr.completion["format_version"] == spec.FORMAT_VERSION
        assert cr.meta["levels"][0]["mode"] == "passthrough"
        assert all(lv["mode"] == "built" for lv in cr.meta["levels"][1:])
        assert len(cr.levels) == len(res.levels) >= 4  # 2967 px high / 240 px tiles -> built levels


def test_zarr_python_sees_the_pyramid_and_same_pixels(sample_container):
    """zarr.open (codecs found through the entry points) returns exactly the fast path's pixels."""
    dst, _ = sample_container
    root = _zarr_root(dst)
    ms = root.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["axes"][1]["unit"] == "micrometer"
    with ContainerReader(dst) as cr:
        for i, arr in enumerate(cr.levels):
            z = root[ms["datasets"][i]["path"]]
            assert z.shape == (3, arr.layout.height, arr.layout.width)
            whole = cr.read_region(arr, 0, 0, arr.layout.width, arr.layout.height)
            np.testing.assert_array_equal(np.moveaxis(z[...], 0, -1), whole)
        for name, arr in cr.associated.items():
            np.testing.assert_array_equal(np.moveaxis(root[f"associated/{name}"][...], 0, -1),
                                          cr.read_array(arr))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_path_equals_zarr_python(sample_container, data):
    """Property: any window read through the fast path equals zarr-python's read of the same array."""
    dst, _ = sample_container
    root = _zarr_root(dst)
    with ContainerReader(dst) as cr:
        lvl = data.draw(st.integers(0, len(cr.levels) - 1))
        arr = cr.levels[lvl]
        W, H = arr.layout.width, arr.layout.height
        x = data.draw(st.integers(0, W - 1))
        y = data.draw(st.integers(0, H - 1))
        w = data.draw(st.integers(1, W - x))
        h = data.draw(st.integers(1, H - y))
        fast = cr.read_region(arr, x, y, w, h)
        ref = np.moveaxis(root[str(lvl)][:, y:y + h, x:x + w], 0, -1)
        np.testing.assert_array_equal(fast, ref)


def test_built_levels_are_reference_downsample(sample_container):
    from csp.native.reference import downsample2x_reference

    dst, _ = sample_container
    with ContainerReader(dst) as cr:
        prev = cr.read_array(cr.levels[0])
        for arr in cr.levels[1:]:
            want = downsample2x_reference(prev)
            got = cr.read_array(arr)
            np.testing.assert_array_equal(got, want)
            prev = got


def test_output_exists_is_refused(sample_container):
    dst, _ = sample_container
    with pytest.raises(OutputExistsError):
        csp.convert(SAMPLE, dst)


def test_incomplete_container_is_refused(sample_container, tmp_path):
    dst, _ = sample_container
    broken = tmp_path / "broken.zarr"
    if os.path.isdir(dst):
        shutil.copytree(dst, broken)
    else:
        with zipfile.ZipFile(dst) as zf:
            zf.extractall(broken)
    os.remove(broken / spec.COMPLETION_KEY)
    with pytest.raises(IncompleteContainerError, match="completion record"):
        csp.open_slide(broken)
    # verification tools may still look inside
    assert csp.verify(broken, require_complete=False).ok


def test_altered_tile_bytes_fail_verify(tmp_path):
    dst = tmp_path / "s.zarr"
    csp.convert(SAMPLE, dst, layout="dir")
    shard = dst / "0" / "c" / "0" / "0" / "0"
    blob = bytearray(shard.read_bytes())
    blob[1000] ^= 0x5A  # inside the first tile's entropy-coded data
    shard.write_bytes(bytes(blob))
    with pytest.raises(VerificationError, match="sha256"):
        csp.verify(dst)
    with pytest.raises(VerificationError, match="differ from the source"):
        csp.verify(dst, source=SAMPLE)


def test_corrupt_index_checksum_is_detected(tmp_path):
    dst = tmp_path / "s.zarr"
    csp.convert(SAMPLE, dst, layout="dir")
    shard = dst / "0" / "c" / "0" / "0" / "0"
    blob = bytearray(shard.read_bytes())
    blob[-10] ^= 0xFF
    shard.write_bytes(bytes(blob))
    with csp.open_slide(dst) as slide, pytest.raises(ContainerError, match="checksum"):
        slide.read_region((0, 0), 0, (10, 10))


def test_not_a_container(tmp_path):
    p = tmp_path / "x.zarr"
    p.mkdir()
    (p / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    with pytest.raises(ContainerError, match="not a CSP container"):
        ContainerReader(p)
    bad = tmp_path / "bad.csp"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ContainerError):
        open_reader(bad)


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    from csp.conversion import pipeline

    def boom(*a, **k):
        raise csp.CorruptSlideError("x", "simulated failure")

    monkeypatch.setattr(pipeline, "_write_associated", boom)
    dst = tmp_path / "out.csp"
    with pytest.raises(csp.CorruptSlideError):
        csp.convert(SAMPLE, dst)
    assert os.listdir(tmp_path) == []


def test_tissue_mask_stored_and_checked(sample_container):
    from csp.native.reference import tissue_mask_reference

    dst, _ = sample_container
    with ContainerReader(dst) as cr:
        mask, ds = cr.tissue_mask()
        t = cr.meta["tissue"]
        level = cr.levels[t["level"]]
        assert mask.shape == (level.layout.height, level.layout.width)
        assert max(mask.shape) <= 2048 and ds[0] >= 1
        np.testing.assert_array_equal(mask, tissue_mask_reference(cr.read_array(level)))
        assert 0.2 < mask.mean() < 0.95  # the sample is mostly tissue with some glass


_SLOW_CONVERT = """
import sys, time
import csp.container.writer as w
orig = w.ShardedArrayWriter.add_row
def slow(self, row, tiles):
    orig(self, row, tiles)
    print("row", flush=True)
    time.sleep(0.2)
w.ShardedArrayWriter.add_row = slow
from csp.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("suffix", [".csp", ".zarr"])
def test_killed_conversion_leaves_nothing_complete_and_rerun_completes(tmp_path, suffix):
    """kill -9 mid-way through `csp convert`: nothing opens as complete; the same command then succeeds."""
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "out"
    args = ["convert", str(SAMPLE), "-o", str(out), "-q"]
    if suffix == ".zarr":
        args += ["--layout", "dir"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERT, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for _ in range(3):  # a few rows of tiles are written
        assert proc.stdout.readline().startswith("row")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = list(out.iterdir()) if out.exists() else []
    for p in leftovers:
        if p.name.startswith("."):
            continue
        with pytest.raises(CspError):
            csp.open_slide(p)
        try:
            ok = csp.verify(p).ok
        except CspError:
            ok = False
        assert not ok
    env_run = subprocess.run([sys.executable, "-m", "csp.cli.main", *args], env=env, capture_output=True, text=True)
    assert env_run.returncode == 0, env_run.stderr
    made = [p for p in out.iterdir() if p.name.endswith(suffix)]
    assert len(made) == 1
    assert csp.verify(made[0], source=SAMPLE).ok
    with csp.open_slide(made[0]) as s:
        assert s.dimensions == (2220, 2967)


def test_pixel_codec_choice_same_pixels_csp_smaller(sample_container, tmp_path):
    """Built levels, mask and pixel associated images use CSP's codec by default; zstd is the fast option.
    Both decode to identical pixels, and the CSP codec stores them in fewer bytes."""
    dst, _ = sample_container
    alt = tmp_path / "zstd.csp"
    csp.convert(SAMPLE, alt, pixel_codec="zstd")
    with ContainerReader(dst) as a, ContainerReader(alt) as b:
        built = [i for i, lm in enumerate(a.meta["levels"]) if lm["mode"] == "built"]
        assert built
        size_a = size_b = 0
        for i in built:
            la, lb = a.levels[i], b.levels[i]
            assert la.encoding.codec == "csp" and lb.encoding.codec == "zstd"
            np.testing.assert_array_equal(a.read_array(la), b.read_array(lb))
            size_a += a.completion["arrays"][la.path]["bytes"]
            size_b += b.completion["arrays"][lb.path]["bytes"]
        assert size_a < 0.8 * size_b
    with pytest.raises(ValueError, match="pixel_codec"):
        csp.convert(SAMPLE, tmp_path / "bad.csp", pixel_codec="png")
