"""The unified ``csp`` metadata block and NGFF attributes written into a container."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from collections.abc import Sequence
from typing import Any

from csp.container import spec
from csp.conversion.plan import LevelPlan
from csp.readers.base import SlideReader


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """Streaming sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_identity(path: str, files: Sequence[str] = ()) -> dict[str, Any]:
    """Name, size and sha256 of a source file or of every file of a source folder.

    ``files`` (the reader's :meth:`~csp.readers.base.SlideReader.source_files`) adds every other file a
    multi-file source was read from, e.g. the rest of a DICOM series opened through one of its files.
    """
    if not os.path.isdir(path) and any(os.path.abspath(f) != os.path.abspath(path) for f in files):
        base = os.path.dirname(os.path.abspath(path))
        listed = [{"name": os.path.relpath(f, base), "size": os.path.getsize(f), "sha256": file_sha256(f)}
                  for f in sorted(set(files) | {path})]
        return {"name": os.path.basename(path), "size": sum(f["size"] for f in listed),
                "sha256": file_sha256(path), "files": listed}
    if os.path.isdir(path):
        files = []
        for root, _d, names in os.walk(path):
            for n in sorted(names):
                p = os.path.join(root, n)
                files.append({"name": os.path.relpath(p, path), "size": os.path.getsize(p),
                              "sha256": file_sha256(p)})
        return {"name": os.path.basename(os.path.normpath(path)), "size": sum(f["size"] for f in files),
                "files": files}
    return {"name": os.path.basename(path), "size": os.path.getsize(path), "sha256": file_sha256(path)}


def encoding_json(plan: LevelPlan) -> dict[str, Any]:
    """``{"codec": ..., "config": ...}`` with bytes as base64."""
    return {"codec": plan.encoding.codec, "config": spec.encode_config(plan.encoding.config)}


def build_attributes(reader: SlideReader, plans: Sequence[LevelPlan], associated: dict[str, Any],
                     source: dict[str, Any]) -> dict[str, Any]:
    """Root group attributes: ``ome`` (NGFF 0.5 multiscales) and ``csp`` (unified metadata)."""
    from csp import __version__

    md = reader.metadata
    five_d = any(p.size_t > 1 or p.size_z > 1 for p in plans)
    csp_block: dict[str, Any] = {
        "format": "csp",
        "version": spec.FORMAT_VERSION,
        "source": {**source, "reader": getattr(reader, "inner", reader).name},
        "vendor": md.vendor,
        "mpp": {"x": md.mpp_x, "y": md.mpp_y},
        "objective_power": md.objective_power,
        "scan_date": md.scan_date,
        "scanner": md.scanner,
        "barcode": md.barcode,
        "icc_profile": None if md.icc_profile is None else spec.encode_config({"v": md.icc_profile})["v"],
        "channel_names": list(md.channel_names),
        "axes": list(spec.AXES_5D) if five_d else ["c", "y", "x"],
        "planes": {"t": plans[0].size_t, "z": plans[0].size_z},
        "provenance": dict(md.provenance),
        "properties": dict(reader.properties),
        "levels": [
            {"path": spec.level_name(p.index), "width": p.width, "height": p.height,
             "tile_width": p.tile_width, "tile_height": p.tile_height, "downsample": list(p.downsample),
             "mode": p.mode, "source_level": p.source_level, "origin": p.origin, "encoding": encoding_json(p)}
            for p in plans
        ],
        "associated": associated,
        "converter": {"name": "csp", "version": __version__,
                      "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")},
    }
    ome = spec.multiscales(os.path.splitext(source["name"])[0], [p.downsample for p in plans],
                           (md.mpp_x, md.mpp_y), five_d=five_d, channel_names=md.channel_names)
    return {"ome": ome, "csp": csp_block}
