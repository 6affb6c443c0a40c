"""The README's main job (``make demo`` = ``python -m csp.demo``) runs and reports what a user needs."""

from __future__ import annotations

from csp.demo import main


def test_demo_converts_reports_and_matches_openslide(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "CMU-1-Small-Region.csp").exists()
    assert "verified against the source: True" in out
    assert "jpeg (passthrough)" in out and "csp (built)" in out
    assert "same pixels as OpenSlide on the source: True" in out
    assert "every JPEG tile rebuilt byte-exact: True" in out
    assert (tmp_path / "CMU-1-Small-Region.archive.csp").exists()
