"""Every shared sample is claimed by the expected reader; ``csp detect --debug`` explains the others."""

from __future__ import annotations

import pytest

from csp.cli.main import main
from csp.registry import detect
from tests.conftest import shared_file

EXPECTED = {
    "svs/CMU-1-Small-Region.svs": "aperio",
    "svs/small.svs": "aperio",
    "svs-j2k/tcga-cr-7395-01a-01-ts1.svs": "aperio",
    "tiff/boxes.tiff": "generic-tiff",
    "tiff/small_HE_levels.tiff": "generic-tiff",
    "ndpi/test3-DAPI-2-(387).ndpi": "ndpi",
    "dicom/cmu-1-small-region": "dicom",
    "dicom/boxes": "dicom",
    "qptiff/small_vectra.qptiff": "qptiff",
    "ome-tiff/4D-series.ome.tiff": "ome-tiff",
}


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_detect_names_reader_and_reasons(rel, capsys):
    path = shared_file(rel)
    det = detect(path)
    assert det.match is not None and det.match.reader == EXPECTED[rel], [str(v) for v in det.verdicts]
    assert main(["detect", "--debug", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"ACCEPT  {EXPECTED[rel]}" in out
    # every reader before the winner says why it refused
    before = [v for v in det.verdicts[: det.verdicts.index(det.match)]]
    assert before and all(not v.accepted and v.reason for v in before)
    for v in before:
        assert f"reject  {v.reader}" in out
    assert out.strip().endswith(EXPECTED[rel])
