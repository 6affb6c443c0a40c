"""Batch conversion at scale: isolation, resume after kill -9, Dask, S3 (loopback), de-identification."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import csp
from csp.cli.main import main
from csp.container.reader import ContainerReader
from tests.conftest import REPO, SAMPLE, SHARED, shared_files

GOOD = shared_files("svs", "svs-j2k", "tiff")
BAD = shared_files("bad")


def tile_hashes(path) -> dict[str, dict[str, str]]:
    """Per-array shard digests of a container (identical tile bytes <=> identical digests)."""
    with ContainerReader(path) as cr:
        return {k: v["shards"] for k, v in cr.completion["arrays"].items()}


@pytest.mark.skipif(not GOOD or not BAD, reason="shared slides absent")
def test_batch_with_bad_files_jobs2(tmp_path, capsys):
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    srcs = [str(SHARED / r) for r in GOOD + BAD]
    code = main(["convert", *srcs, "-o", str(out), "--jobs", "2", "--report", str(report), "-q"])
    assert code == 1  # "some failed"
    rows = {r["source"]: r for r in json.loads(report.read_text())["slides"]}
    assert set(rows) == set(srcs)
    for r in GOOD:
        row = rows[str(SHARED / r)]
        assert row["status"] == "done" and row["verified"], row
        assert csp.verify(row["dest"], source=row["source"]).ok
    err = capsys.readouterr().err
    for r in BAD:
        row = rows[str(SHARED / r)]
        assert row["status"] == "failed" and str(SHARED / r) in row["error"]
        assert not os.path.exists(row["dest"])
        assert str(SHARED / r) in err
    assert f"{len(BAD)} of {len(srcs)} slide(s) failed" in err


def test_directory_glob_and_manifest_inputs(tmp_path):
    from csp.conversion.batch import expand_inputs

    d = tmp_path / "in" / "sub"
    d.mkdir(parents=True)
    shutil.copy(SAMPLE, d / "a.svs")
    shutil.copy(SAMPLE, tmp_path / "in" / "b.svs")
    (tmp_path / "in" / "notes.txt").write_text("x")
    dcm = tmp_path / "in" / "dicomslide"
    dcm.mkdir()
    (dcm / "l0.dcm").write_bytes(b"")
    jobs = expand_inputs([str(tmp_path / "in")], str(tmp_path / "o"))
    assert sorted(os.path.basename(j.source) for j in jobs) == ["a.svs", "b.svs", "dicomslide"]
    assert len(expand_inputs([str(tmp_path / "in" / "**" / "*.svs")], "o")) == 2
    man = tmp_path / "m.csv"
    man.write_text(f"source,destination,diagnosis\n{d / 'a.svs'},{tmp_path / 'x.csp'},tumour\n")
    (job,) = expand_inputs([str(man)], "ignored")
    assert job.dest == str(tmp_path / "x.csp") and job.labels == {"diagnosis": "tumour"}


def test_kill9_then_resume(tmp_path):
    """kill -9 during a batch; the re-run converts only what was left and everything verifies."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        shutil.copy(SAMPLE, src / f"s{i}.svs")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "csp.cli.main", "convert", str(src), "-o", str(out), "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    journal = out / ".csp-journal.sqlite"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if journal.exists():
            try:
                with sqlite3.connect(journal) as db:
                    done = db.execute("SELECT COUNT(*) FROM slides WHERE status='done'").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "batch finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {p.name for p in out.glob("*.csp")}
    assert 2 <= len(finished_before) < 6
    report = tmp_path / "r.json"
    assert main(["convert", str(src), "-o", str(out), "-q", "--report", str(report)]) == 0
    rows = json.loads(report.read_text())["slides"]
    skipped = {os.path.basename(r["dest"]) for r in rows if r["status"] == "skipped"}
    converted = {os.path.basename(r["dest"]) for r in rows if r["status"] == "done"}
    assert skipped == finished_before and len(converted) == 6 - len(finished_before)
    assert not list(out.glob("*.partial-*"))
    for i in range(6):
        assert csp.verify(out / f"s{i}.csp", source=src / f"s{i}.svs").ok


def test_changed_source_is_redone(tmp_path):
    src = tmp_path / "s.svs"
    shutil.copy(SAMPLE, src)
    out = tmp_path / "o"
    assert main(["convert", str(src), "-o", str(out), "-q"]) == 0
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    report = tmp_path / "r.json"
    assert main(["convert", str(src), "-o", str(out), "-q", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["slides"][0]["status"] == "changed-redone"


def test_dask_local_cluster_identical_containers(tmp_path):
    distributed = pytest.importorskip("distributed")
    srcs = [str(SAMPLE)] + [str(SHARED / r) for r in GOOD if r.startswith("tiff/")]
    local, remote = tmp_path / "local", tmp_path / "dask"
    assert main(["convert", *srcs, "-o", str(local), "-q"]) == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        assert main(["convert", *srcs, "-o", str(remote), "-q", "--dask-scheduler", cluster.scheduler_address]) == 0
    for f in sorted(os.listdir(local)):
        if f.endswith(".csp"):
            assert tile_hashes(local / f) == tile_hashes(remote / f)


@pytest.fixture()
def s3_server(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import fsspec

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"endpoint_url": endpoint},
                                                   "skip_instance_cache": True})
    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    fs.mkdir("slides")
    fs.mkdir("out")
    yield fs
    server.stop()


def test_s3_roundtrip_identical_to_local(tmp_path, s3_server):
    fs = s3_server
    fs.put_file(str(SAMPLE), "slides/cmu.svs")
    local = tmp_path / "local"
    assert main(["convert", str(SAMPLE), "-o", str(local), "-q"]) == 0
    assert main(["convert", "s3://slides/cmu.svs", "-o", "s3://out", "-q",
                 "--journal-dir", str(tmp_path / "j")]) == 0
    assert fs.exists("out/cmu.csp") and not fs.exists("out/cmu.csp.partial-upload")
    fetched = tmp_path / "fetched.csp"
    fs.get_file("out/cmu.csp", str(fetched))
    assert tile_hashes(fetched) == tile_hashes(local / "CMU-1-Small-Region.csp")
    with csp.open_slide("s3://out/cmu.csp") as remote, csp.open_slide(fetched) as here:  # ranged reads
        np.testing.assert_array_equal(remote.read_region((100, 200), 0, (300, 300), as_array=True),
                                      here.read_region((100, 200), 0, (300, 300), as_array=True))
    # re-run: resumes from the journal, nothing converted again
    report = tmp_path / "r.json"
    assert main(["convert", "s3://slides/cmu.svs", "-o", "s3://out", "-q", "--journal-dir", str(tmp_path / "j"),
                 "--report", str(report)]) == 0
    assert json.loads(report.read_text())["slides"][0]["status"] == "skipped"


def test_deidentify_leaves_no_identifying_bytes(tmp_path):
    import tifffile

    from csp.registry import open_source

    out = tmp_path / "o"
    assert main(["convert", str(SAMPLE), "-o", str(out), "-q", "--deidentify"]) == 0
    dst = out / "CMU-1-Small-Region.csp"
    blob = dst.read_bytes()
    with zipfile.ZipFile(dst) as zf:  # also every member, in case a reader sees them differently
        blob += b"".join(zf.read(n) for n in zf.namelist())
    # 1. no byte sequence of the label or macro images (every 48-byte window of their stored strips)
    with tifffile.TiffFile(SAMPLE) as tf, open(SAMPLE, "rb") as fh:
        for page in tf.pages[2:]:
            assert page.description.split("\n")[1].split()[0] in ("label", "macro")
            for off, n in zip(page.dataoffsets, page.databytecounts, strict=True):
                fh.seek(off)
                data = fh.read(n)
                for i in range(0, max(len(data) - 48, 1), 997):
                    assert data[i:i + 48] not in blob
    # 2. none of the identifying property values
    with open_source(SAMPLE) as r:
        props = dict(r.properties)
    identifying = [props[k] for k in ("aperio.ScanScope ID", "aperio.Filename", "aperio.Date", "aperio.Time",
                                      "aperio.User", "aperio.ImageID", "tiff.ImageDescription")]
    identifying += ["2009-12-29", "CMU-1-Small-Region"]
    for value in identifying:
        assert value.encode() not in blob, value
        assert value.encode("utf-16-le") not in blob, value
    with csp.open_slide(dst) as s:
        assert set(s.associated_images) == {"thumbnail"}
        d = s.metadata["deidentified"]
        assert d["profile"] == "csp-deid-1" and set(d["dropped_associated"]) == {"label", "macro"}
        assert s.properties["aperio.MPP"] == "0.4990"  # what science needs stays
    assert csp.verify(dst, source=SAMPLE).ok  # still pixel-exact


def test_rerun_with_other_profile_redoes_finished_slides(tmp_path):
    """A finished slide is skipped only when the output settings match; --profile archive redoes it."""
    from csp.container.reader import ContainerReader

    out = tmp_path / "out"
    report = tmp_path / "r.json"
    assert main(["convert", str(SAMPLE), "-o", str(out), "-q"]) == 0
    assert main(["convert", str(SAMPLE), "-o", str(out), "-q", "--report", str(report)]) == 0
    assert [r["status"] for r in json.loads(report.read_text())["slides"]] == ["skipped"]
    assert main(["convert", str(SAMPLE), "-o", str(out), "-q", "--profile", "archive",
                 "--report", str(report)]) == 0
    assert [r["status"] for r in json.loads(report.read_text())["slides"]] == ["changed-redone"]
    with ContainerReader(out / "CMU-1-Small-Region.csp") as cr:
        assert cr.levels[0].encoding.codec == "jpeg_jxl"
    assert main(["convert", str(SAMPLE), "-o", str(out), "-q", "--profile", "archive",
                 "--report", str(report)]) == 0
    assert [r["status"] for r in json.loads(report.read_text())["slides"]] == ["skipped"]
