"""The ``csp`` command line, called in-process through ``main(argv)``."""

from __future__ import annotations

import json

import pytest

from csp.cli.main import main
from csp.conversion.batch import output_name
from tests.conftest import SAMPLE, shared_file, shared_files


def test_convert_info_verify(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(SAMPLE), "-o", str(out)]) == 0
    dst = out / "CMU-1-Small-Region.csp"
    assert dst.is_file()
    assert "verified" in capsys.readouterr().out
    assert main(["info", str(dst)]) == 0
    text = capsys.readouterr().out
    assert "jpeg (passthrough)" in text and "label" in text
    assert main(["info", "--json", str(dst)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dimensions"] == [2220, 2967] and info["complete"] is True
    assert info["levels"][0]["encoding"] == "jpeg"
    assert main(["verify", str(dst), "--source", str(SAMPLE)]) == 0
    assert capsys.readouterr().out.startswith("OK ")


def test_convert_dir_layout_and_existing_output(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["convert", str(SAMPLE), "-o", str(out), "--layout", "dir", "-q"]) == 0
    assert (out / "CMU-1-Small-Region.zarr" / "zarr.json").is_file()
    # a re-run resumes: the completed slide is skipped
    assert main(["convert", str(SAMPLE), "-o", str(out), "--layout", "dir", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "skipped"
    # an existing container this run did not write is never overwritten silently
    (out / ".csp-journal.sqlite").unlink()
    assert main(["convert", str(SAMPLE), "-o", str(out), "--layout", "dir", "-q"]) == 1
    err = capsys.readouterr().err
    assert "output exists" in err and err.count("\n") == 2  # one line per error + summary


def test_verify_fails_on_tampering(tmp_path, capsys):
    out = tmp_path / "o"
    main(["convert", str(SAMPLE), "-o", str(out), "--layout", "dir"])
    shard = out / "CMU-1-Small-Region.zarr" / "0" / "c" / "0" / "0" / "0"
    b = bytearray(shard.read_bytes())
    b[5000] ^= 1
    shard.write_bytes(bytes(b))
    assert main(["verify", str(out / "CMU-1-Small-Region.zarr")]) == 1
    assert "FAILED" in capsys.readouterr().err


@pytest.mark.parametrize("rel", shared_files("bad") or ["bad/broken.svs"])
def test_bad_inputs_fail_cleanly(rel, tmp_path, capsys):
    src = shared_file(rel)
    out = tmp_path / "o"
    assert main(["convert", str(src), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and str(src) in err[0]
    assert len(err) == 2  # the error line and the summary line; no traceback
    assert [p.name for p in out.iterdir()] == [".csp-journal.sqlite"]  # nothing half-written


def test_detect_debug(capsys):
    assert main(["detect", "--debug", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "ACCEPT  aperio" in out and "reject  csp" in out
    assert out.strip().endswith("aperio")


def test_detect_unknown(tmp_path, capsys):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    assert main(["detect", "--debug", str(p)]) == 1
    assert "no reader accepts" in capsys.readouterr().err


def test_missing_file(capsys):
    assert main(["info", "/nonexistent/slide.svs"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_output_name():
    assert output_name("/a/b/CMU-1.svs", "zip") == "CMU-1.csp"
    assert output_name("/a/b/x.ome.tiff", "dir") == "x.zarr"
    assert output_name("/a/folder/", "zip") == "folder.csp"


def test_info_shows_channels_and_planes(tmp_path, capsys):
    from tests.conftest import shared_file

    src = shared_file("ome-tiff/4D-series.ome.tiff")
    assert main(["convert", str(src), "-o", str(tmp_path), "-q"]) == 0
    capsys.readouterr()
    dst = tmp_path / "4D-series.csp"
    assert main(["info", str(dst), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["axes"] == ["t", "c", "z", "y", "x"] and info["planes"] == {"t": 7, "z": 5}
    assert info["dtype"] == "int8" and info["channels"] == 1
    assert main(["info", str(dst)]) == 0
    assert "7 time points x 5 z planes" in capsys.readouterr().out
