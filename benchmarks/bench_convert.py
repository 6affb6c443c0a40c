"""Conversion throughput and peak memory on the large derived slide (one job = one process).

    python benchmarks/bench_convert.py [--size 50000] [--slide PATH] [--profiles passthrough archive]

Runs each conversion in a fresh child process and reports its peak RSS (``ru_maxrss``), wall time and
source MB/s per core, per conversion profile, with and without the verification pass. Writes ``benchmarks/results/convert.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = os.environ.get("CSP_BENCH_DIR", os.path.join(REPO, "benchmarks", "work"))

CHILD = """
import sys, time, resource, json
sys.path.insert(0, {repo!r})
import csp
t = time.perf_counter()
r = csp.convert({src!r}, {dst!r}, overwrite=True, verify={verify!r}, **{kw!r})
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": dt, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out, "tiles": r.tiles,
                  "timings": r.timings, "maxrss_kib": ru.ru_maxrss, "cpu_seconds": ru.ru_utime + ru.ru_stime}}))
"""


def run(src: str, dst: str, verify: bool, profile: str) -> dict:
    kw = {} if profile == "passthrough" else {"profile": profile}
    code = CHILD.format(repo=REPO, src=src, dst=dst, verify=verify, kw=kw)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_mib"] = res.pop("maxrss_kib") / 1024
    res["source_mb_per_s"] = res["bytes_in"] / 1e6 / res["seconds"]
    res["source_mb_per_cpu_s"] = res["bytes_in"] / 1e6 / max(res["cpu_seconds"], 1e-9)  # MB/s per core
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slide")
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--profiles", nargs="+", default=["passthrough", "archive"])
    ap.add_argument("--json", default=os.path.join(HERE, "results", "convert.json"))
    args = ap.parse_args(argv)
    os.makedirs(WORK, exist_ok=True)
    slide = args.slide
    if slide is None:
        sys.path.insert(0, HERE)
        from make_large_slide import make_large_slide

        slide = os.path.join(WORK, f"large-{args.size}.svs")
        make_large_slide(slide, size=args.size)
    dst = os.path.join(WORK, "convert-bench.csp")
    results = {"slide": os.path.basename(slide), "source_bytes": os.path.getsize(slide), "runs": {}}
    for profile in args.profiles:
        for verify in (False, True):
            name = f"{profile} + verify" if verify else profile
            try:
                r = run(slide, dst, verify, profile)
            except subprocess.CalledProcessError as exc:
                print(f"{name}: failed ({exc.stderr.strip().splitlines()[-1] if exc.stderr else exc})")
                continue
            results["runs"][name] = r
            print(f"{name:22} {r['seconds']:7.1f} s  {r['source_mb_per_s']:7.1f} MB/s wall  "
                  f"{r['source_mb_per_cpu_s']:7.1f} MB/s per core  "
                  f"peak RSS {r['peak_rss_mib']:7.1f} MiB  {r['bytes_in'] / 1e6:.0f} MB -> "
                  f"{r['bytes_out'] / 1e6:.0f} MB", flush=True)
    if os.path.exists(dst):
        os.remove(dst)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
