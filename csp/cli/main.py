"""``csp`` command line: ``convert``, ``info``, ``verify``, ``detect``.

``main(argv) -> int`` is what tests call in-process. Every :class:`~csp.errors.CspError` becomes one
clear line on stderr and a non-zero exit code; ``--traceback`` shows the full trace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from csp.container.stores import is_url
from csp.errors import CspError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="csp", description="Lossless whole-slide image container tools.")
    p.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    c = sub.add_parser("convert", help="convert vendor slides into CSP containers")
    c.add_argument("sources", nargs="+",
                   help="slide files, folders (searched recursively; a folder of .dcm files is one slide), "
                        "glob patterns, manifest CSVs (source[,destination][,labels...]) or fsspec URLs")
    c.add_argument("-o", "--output", required=True, help="output directory or URL (created if missing)")
    c.add_argument("-j", "--jobs", type=int, default=1, help="parallel conversion processes (default 1)")
    c.add_argument("--verify", action="store_true",
                   help="also re-read and compare already completed containers with their sources")
    c.add_argument("--report", help="write a per-slide report (.json or .csv)")
    c.add_argument("--dask-scheduler", help="run the batch on this Dask distributed scheduler")
    c.add_argument("--deidentify", action="store_true",
                   help="drop label/macro images and scrub identifying metadata (profile csp-deid-1)")
    c.add_argument("--journal-dir", help="where the resumable run journal lives (default: the output dir)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    c.add_argument("--layout", choices=("zip", "dir"), default="zip",
                   help="zip: one .csp file per slide (default); dir: a .zarr directory per slide")
    c.add_argument("--overwrite", action="store_true", help="replace existing containers")
    c.add_argument("--no-verify", action="store_true", help="skip the re-read comparison with the source")
    c.add_argument("--json", action="store_true", help="print one JSON result per slide")
    c.add_argument("--profile", choices=("passthrough", "archive"), default="passthrough",
                   help="storage tier: passthrough keeps the source tile bytes (default); archive repacks "
                        "JPEG tiles losslessly with JPEG XL (22-32%% smaller tiles, byte-exact on read)")
    c.add_argument("--archive-effort", type=int, choices=range(1, 11), metavar="1-10",
                   help="libjxl effort with --profile archive (default 9 where libjxl's encoder is reachable, "
                        "else 7; 7 encodes ~6x faster and saves ~1.5 points less)")
    c.add_argument("--pixel-codec", choices=("csp", "zstd"), default="csp",
                   help="lossless codec where pixels are stored (built levels, non-JPEG sources): csp "
                        "(smallest, default) or zstd (fastest to decode)")

    r = sub.add_parser("repack", help="move a container between storage tiers (no pixel is touched)")
    r.add_argument("container")
    r.add_argument("-o", "--output", help="write a new container here instead of replacing it in place")
    r.add_argument("--to", choices=("archive", "passthrough"), required=True, help="target tier")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    r.add_argument("--no-verify", action="store_true", help="skip decoding every tile of the new copy")
    r.add_argument("--effort", type=int, choices=range(1, 11), metavar="1-10",
                   help="libjxl effort when archiving (default 9 where libjxl's encoder is reachable, else 7; "
                        "7 encodes ~6x faster and saves ~1.5 points less)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")

    i = sub.add_parser("info", help="describe a container (or a source slide)")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    v = sub.add_parser("verify", help="re-decode every tile and check the container")
    v.add_argument("container")
    v.add_argument("--source", help="compare tile bytes and pixels with this source slide")
    v.add_argument("--json", action="store_true")

    d = sub.add_parser("detect", help="which reader takes a file")
    d.add_argument("path")
    d.add_argument("--debug", action="store_true", help="show why each reader accepted or rejected it")
    return p


def _cmd_convert(args: argparse.Namespace) -> int:
    from csp.cli.progress import BatchDisplay
    from csp.conversion.batch import expand_inputs, run_batch

    if not is_url(args.output):
        os.makedirs(args.output, exist_ok=True)
    jobs = expand_inputs(args.sources, args.output, layout=args.layout)
    if not jobs:
        _err("error: no slide files found in the given inputs")
        return EXIT_FAILED
    display = BatchDisplay(jobs, enabled=not args.json and not args.quiet)
    with display:
        result = run_batch(jobs, workers=args.jobs, overwrite=args.overwrite, verify=not args.no_verify,
                           reverify=args.verify, layout=args.layout, deidentify=args.deidentify,
                           journal_dir=args.journal_dir, dask_scheduler=args.dask_scheduler,
                           on_event=display.event, profile=args.profile,
                           pixel_codec=args.pixel_codec, archive_effort=args.archive_effort)
    if args.report:
        result.write_report(args.report)
    if args.json:
        for o in result.outcomes:
            print(json.dumps(o.__dict__))
    else:
        display.summary(result)
    for o in result.failed:
        _err(f"error: {o.error}")
    if result.failed:
        _err(f"{len(result.failed)} of {len(result.outcomes)} slide(s) failed")
        return EXIT_FAILED
    return EXIT_OK


def describe(path: str) -> dict[str, Any]:
    """Summary of a container or source slide as plain JSON data (what ``csp info`` prints)."""
    from csp.slide import CspSlide, open_slide

    with open_slide(path) as slide:
        props = dict(slide.properties)
        info: dict[str, Any] = {
            "path": path,
            "kind": "csp-container" if isinstance(slide, CspSlide) else "source",
            "vendor": props.get("openslide.vendor"),
            "dimensions": list(slide.dimensions),
            "mpp": [props.get("openslide.mpp-x"), props.get("openslide.mpp-y")],
            "objective_power": props.get("openslide.objective-power"),
            "levels": [
                {"index": i, "width": w, "height": h, "downsample": slide.level_downsamples[i],
                 "tile": [int(props[f"openslide.level[{i}].tile-width"]),
                          int(props[f"openslide.level[{i}].tile-height"])],
                 "encoding": props.get(f"csp.level[{i}].encoding"), "mode": props.get(f"csp.level[{i}].mode")}
                for i, (w, h) in enumerate(slide.level_dimensions)],
            "associated_images": sorted(slide.associated_images),
            "icc_profile_bytes": len(slide.icc_profile) if slide.icc_profile else 0,
        }
        if isinstance(slide, CspSlide):
            meta = slide.metadata
            info["format_version"] = meta["version"]
            info["source"] = meta["source"]
            info["converter"] = meta.get("converter")
            info["complete"] = slide.reader.completion is not None
            info["bytes"] = _container_bytes(path)
            info["dtype"] = str(slide.dtype)
            info["channels"] = slide.channel_count
            info["channel_names"] = list(meta.get("channel_names", []))
            info["axes"] = meta.get("axes", ["c", "y", "x"])
            info["planes"] = meta.get("planes", {"t": 1, "z": 1})
            if any(lv.get("encoding") == "jpeg_jxl" for lv in info["levels"]):
                info["tier"] = "archive"
    return info


def _container_bytes(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _d, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def _cmd_info(args: argparse.Namespace) -> int:
    info = describe(args.path)
    if args.json:
        print(json.dumps(info, indent=1))
        return EXIT_OK
    print(f"{info['path']}  ({info['kind']}, vendor {info['vendor']})")
    if "source" in info:
        src = info["source"]
        print(f"  source      {src['name']}  {_mb(src['size'])}  sha256 {str(src.get('sha256', '-'))[:16]}…"
              f"  reader {src.get('reader')}")
        print(f"  container   format {info['format_version']}, {_mb(info['bytes'])}, "
              f"{'complete' if info['complete'] else 'INCOMPLETE'}")
    print(f"  size        {info['dimensions'][0]} x {info['dimensions'][1]} px, mpp {info['mpp'][0]} x "
          f"{info['mpp'][1]}, objective {info['objective_power']}")
    if "dtype" in info:
        names = f" ({', '.join(info['channel_names'])})" if info["channel_names"] else ""
        planes = info["planes"]
        print(f"  samples     {info['channels']} x {info['dtype']}{names}, axes {','.join(info['axes'])}"
              + (f", {planes['t']} time points x {planes['z']} z planes" if info["axes"][0] == "t" else ""))
    print("  levels")
    for lv in info["levels"]:
        enc = f"  {lv['encoding']} ({lv['mode']})" if lv["encoding"] else ""
        print(f"    {lv['index']:>2}  {lv['width']:>7} x {lv['height']:<7} ds {lv['downsample']:<8.4g} "
              f"tile {lv['tile'][0]}x{lv['tile'][1]}{enc}")
    print(f"  associated  {', '.join(info['associated_images']) or '-'}")
    if info["icc_profile_bytes"]:
        print(f"  icc profile {info['icc_profile_bytes']} bytes")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from csp.container.verify import verify_container

    t0 = time.perf_counter()
    report = verify_container(args.container, source=args.source, raise_on_error=False)
    dt = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**report.__dict__, "ok": report.ok, "seconds": dt}))
    elif report.ok:
        against = f" against {report.source}" if report.source else ""
        print(f"OK {args.container}: {report.levels} levels, {report.tiles_checked} tiles, "
              f"{report.associated} associated images verified{against} in {dt:.2f} s")
    else:
        _err(f"FAILED {args.container}: {len(report.problems)} problem(s)")
        for p in report.problems[:50]:
            _err(f"  {p}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_repack(args: argparse.Namespace) -> int:
    from csp.conversion.repack import repack

    res = repack(args.container, args.output, to=args.to, overwrite=args.overwrite, verify=not args.no_verify,
                 effort=args.effort)
    if args.json:
        print(json.dumps(res.to_json()))
        return EXIT_OK
    print(f"{res.output}: {res.to} tier, {_mb(res.bytes_before)} -> {_mb(res.bytes_after)} "
          f"in {res.seconds:.2f} s")
    for lv in res.levels:
        plain = f", {lv['plain_tiles']} kept as plain JPEG" if lv["plain_tiles"] else ""
        print(f"  level {lv['path']}: {lv['from']} -> {lv['to']}, {lv['tiles']} tiles{plain}")
    return EXIT_OK


def _cmd_detect(args: argparse.Namespace) -> int:
    from csp.registry import detect

    det = detect(args.path)
    match = det.match
    if args.debug:
        for v in det.verdicts:
            mark = "ACCEPT" if v.accepted else "reject"
            print(f"{mark:7} {v.reader:14} {v.reason}")
    if match is None:
        _err(f"{args.path}: no reader accepts this file")
        return EXIT_FAILED
    print(f"{args.path}: {match.reader}")
    return EXIT_OK


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from csp import __version__

        print(f"csp {__version__}")
        return EXIT_OK
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    handler = {"convert": _cmd_convert, "info": _cmd_info, "verify": _cmd_verify, "detect": _cmd_detect,
               "repack": _cmd_repack}
    try:
        return handler[args.command](args)
    except CspError as exc:
        _err(f"error: {exc}")
        if args.traceback:
            traceback.print_exc()
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
