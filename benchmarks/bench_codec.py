"""Benchmark: CSP lossless codec (C and Numba) against JPEG XL e3, JPEG-LS and zstd, side by side.

Single core, one run: every codec encodes and decodes the same decoded tiles.

* ``svs``: all full 240x240 RGB tiles of level 0 of ``CMU-1-Small-Region.svs`` (decoded with tifffile);
* ``svs-j2k``: 30 random full 240x240 RGB tiles of level 0 of the TCGA slide with Aperio JPEG 2000
  tiles (smooth, wavelet-decoded content; skipped when the file is absent);
* ``qptiff``: 240x240 tiles of the three full-resolution channels of ``small_vectra.qptiff`` stacked as
  ``(240, 240, 3)`` uint8 (multiplex), including the cropped edge tiles; the size is also reported
  relative to the source file.

Usage::

    python benchmarks/bench_codec.py [--slides DIR] [--repeat N] [--runs N] [--max-tiles N] [--out FILE.md] [--json FILE]

CSP rows are given per bitstream version (``v1``, ``v2``, ``v3``) and implementation (C, Numba). On a CPU
with every AVX-512 extension the C decoder uses, three more ``csp v3 (C, ...)`` rows decode through the
kernels that other CPUs run (AVX-512 without VBMI/VBMI2, AVX2, the portable scalar path), each with the
encoder those CPUs run (the portable one, ``simd=False``). ``--json``
writes the tables as ``{"description": str, "tables": {name: {"columns": [...], "rows": [...]}}}``
(rendered by ``benchmarks/report.py``; the project keeps them in ``benchmarks/results/codec.json``).

After the tables, a targets table checks the codec's speed and size targets (:data:`TARGETS`: decode
>= 150 MP/s, >= 10x JPEG XL e3 and >= 4x JPEG-LS; encode >= 100 MP/s; Numba within 2x of C; size no
larger than JPEG XL e3 and JPEG-LS; QPTIFF <= 0.65 of its file) on every tile set. On a shared machine
the speeds drift by 5-15% between full runs, so ``--runs N`` measures everything N times and the targets
table gives each target's worst value over the runs and whether every run met it (the codec tables are
the first run's).

Speeds are megapixels (tile pixels, all channels together) per second, best of ``--repeat`` passes;
decoding is timed into a preallocated array (``out=``) and into a new array per tile;
bits per pixel = 8 * bytes / pixels. Every round trip is verified pixel by pixel.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

# one core: no BLAS/OpenMP worker threads competing with the measured thread (set before numpy loads)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import imagecodecs
import numpy as np
import tifffile

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SLIDES = Path(os.environ.get("CSP_SHARED_SLIDES", REPO.parent / "shared" / "slides"))


def svs_tiles(slides: Path, limit: int) -> list[np.ndarray]:
    """Decoded full 240x240 tiles of level 0 of CMU-1-Small-Region.svs."""
    with tifffile.TiffFile(slides / "svs" / "CMU-1-Small-Region.svs") as tf:
        img = tf.pages[0].asarray()
    th = tw = 240
    tiles = [np.ascontiguousarray(img[y:y + th, x:x + tw])
             for y in range(0, img.shape[0] - th + 1, th) for x in range(0, img.shape[1] - tw + 1, tw)]
    return tiles[:limit]


def j2k_tiles(slides: Path, limit: int) -> list[np.ndarray]:
    """30 random decoded full 240x240 tiles of level 0 of the TCGA JPEG 2000 slide (fixed seed)."""
    path = slides / "svs-j2k" / "tcga-cr-7395-01a-01-ts1.svs"
    if not path.exists():
        return []
    with tifffile.TiffFile(path) as tf:
        img = tf.pages[0].asarray()
    tiles = [np.ascontiguousarray(img[y:y + 240, x:x + 240])
             for y in range(0, img.shape[0] - 239, 240) for x in range(0, img.shape[1] - 239, 240)]
    pick = np.random.default_rng(0).choice(len(tiles), min(30, len(tiles), limit), replace=False)
    return [tiles[i] for i in pick]


def qptiff_tiles(slides: Path, limit: int) -> tuple[list[np.ndarray], int]:
    """240x240x3 tiles of the full-resolution channels of small_vectra.qptiff, and the file size."""
    path = slides / "qptiff" / "small_vectra.qptiff"
    with tifffile.TiffFile(path) as tf:
        pages = [p for p in tf.pages if p.shape == tf.pages[0].shape and p.ndim == 2]
        img = np.stack([p.asarray() for p in pages], axis=-1)
    tiles = [np.ascontiguousarray(img[y:y + 240, x:x + 240])
             for y in range(0, img.shape[0], 240) for x in range(0, img.shape[1], 240)]
    return tiles[:limit], path.stat().st_size


Codec = tuple[Callable[[np.ndarray], bytes], Callable[[bytes, np.ndarray | None], np.ndarray]]


def _c_decode(data: bytes, out: np.ndarray | None, *, simd: bool | str) -> np.ndarray:
    from csp.codecs.lossless import c_codec

    return c_codec.decode(data, out, simd=simd)


def codecs() -> dict[str, Codec]:
    """name -> (encode, decode(stream, out)); decode writes into ``out`` when it is given."""
    from csp.codecs import lossless

    impls = lossless.implementations()
    out: dict[str, Codec] = {}
    for version in (1, 2, 3):
        for key, label in (("c", "C"), ("numba", "Numba")):
            if key in impls:
                impl = impls[key]
                out[f"csp v{version} ({label})"] = (functools.partial(impl.encode, version=version), impl.decode)
    if "c" in impls:  # the C decoder's other kernels, as the CPUs that lack this one's instructions run them
        c = impls["c"]
        scalar_enc = functools.partial(c.encode, version=3, simd=False)  # their encoder: the portable one
        paths = [("AVX-512 without VBMI", "avx512bw", getattr(c, "SIMD_BW", False)),
                 ("AVX2", "avx2", getattr(c, "SIMD_AVX2", False)), ("scalar", False, True)]
        for label, simd, available in paths:
            if available and getattr(c, "SIMD", False):
                out[f"csp v3 (C, {label})"] = (scalar_enc, functools.partial(_c_decode, simd=simd))
    out["JPEG XL e3"] = (lambda t: imagecodecs.jpegxl_encode(t, lossless=True, effort=3, numthreads=1),
                         lambda b, o: imagecodecs.jpegxl_decode(b, numthreads=1, out=o))
    out["JPEG-LS"] = (imagecodecs.jpegls_encode, lambda b, o: imagecodecs.jpegls_decode(b, out=o))
    out["zstd-3"] = (lambda t: imagecodecs.zstd_encode(t.tobytes(), level=3),
                     lambda b, o: imagecodecs.zstd_decode(b, out=None if o is None else o.reshape(-1).view(np.uint8)))
    return out


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(tiles: list[np.ndarray], repeat: int) -> list[dict[str, object]]:
    """Size and speed of every codec on ``tiles`` (round trips verified). Decoding is timed twice: into
    a preallocated array of the tile's shape (``out=``, as a data loader filling its batch does; every
    codec here supports it) and into a new array per tile."""
    npix = sum(t.shape[0] * t.shape[1] for t in tiles)
    rows = []
    for name, (enc, dec) in codecs().items():
        enc(tiles[0]), dec(enc(tiles[0]), None)  # warm up (JIT, tables)
        streams = [enc(t) for t in tiles]
        outs = [np.empty_like(t) for t in tiles]
        for t, s, o in zip(tiles, streams, outs):
            new = dec(s, None)
            if name.startswith("zstd"):
                new = np.frombuffer(new, t.dtype)
            dec(s, o)
            for back in (np.asarray(new), o):
                if not np.array_equal(back.reshape(t.shape), t):
                    raise AssertionError(f"{name} round trip differs")
        t_enc = _best(lambda enc=enc: [enc(t) for t in tiles], repeat)
        t_dec = _best(lambda dec=dec, streams=streams, outs=outs: [dec(s, o) for s, o in zip(streams, outs)], repeat)
        t_new = _best(lambda dec=dec, streams=streams: [dec(s, None) for s in streams], repeat)
        nbytes = sum(len(s) for s in streams)
        rows.append({"codec": name, "bytes": nbytes, "bpp": 8 * nbytes / npix,
                     "enc": npix / t_enc / 1e6, "dec": npix / t_dec / 1e6, "dec_new": npix / t_new / 1e6})
    return rows


def table(title: str, rows: list[dict[str, object]], source_bytes: int | None = None) -> str:
    """Markdown table of :func:`measure` rows."""
    head = ("| codec | bits/pixel | encode MP/s | decode MP/s | decode, new array MP/s |"
            + (" size / source file |" if source_bytes else ""))
    sep = "|---|---|---|---|---|" + ("---|" if source_bytes else "")
    lines = [f"### {title}", "", head, sep]
    for r in rows:
        line = f"| {r['codec']} | {r['bpp']:.3f} | {r['enc']:.1f} | {r['dec']:.1f} | {r['dec_new']:.1f} |"
        if source_bytes:
            line += f" {int(r['bytes']) / source_bytes:.3f} |"  # type: ignore[call-overload]
        lines.append(line)
    return "\n".join(lines) + "\n"


#: the speed and size targets of the codec (issue 7), checked on each tile set of a run
TARGETS: list[tuple[str, str, float]] = [
    ("C v3 decode MP/s", ">=", 150.0),
    ("C v3 decode / JPEG XL e3 decode", ">=", 10.0),
    ("C v3 decode / JPEG-LS decode", ">=", 4.0),
    ("C v3 encode MP/s", ">=", 100.0),
    ("C v3 decode / Numba v3 decode", "<=", 2.0),
    ("C v3 encode / Numba v3 encode", "<=", 2.0),
    ("v3 bits/pixel / JPEG XL e3", "<=", 1.0),
    ("v3 bits/pixel / JPEG-LS", "<=", 1.0),
    ("v3 bytes / source file", "<=", 0.65),
]


def target_values(rows: list[dict[str, object]], source_bytes: int | None = None) -> dict[str, float]:
    """The measured value of every target in :data:`TARGETS` that ``rows`` (one tile set) can give."""
    by = {str(r["codec"]): r for r in rows}
    c, n = by.get("csp v3 (C)"), by.get("csp v3 (Numba)")
    jxl, jls = by.get("JPEG XL e3"), by.get("JPEG-LS")
    out: dict[str, float] = {}
    if c is None:
        return out
    f = {k: float(v) for k, v in c.items() if k != "codec"}  # type: ignore[arg-type]
    out["C v3 decode MP/s"] = f["dec"]
    out["C v3 encode MP/s"] = f["enc"]
    for name, other in (("JPEG XL e3", jxl), ("JPEG-LS", jls)):
        if other is not None:
            out[f"C v3 decode / {name} decode"] = f["dec"] / float(other["dec"])  # type: ignore[arg-type]
            out[f"v3 bits/pixel / {name}"] = f["bpp"] / float(other["bpp"])  # type: ignore[arg-type]
    if n is not None:
        out["C v3 decode / Numba v3 decode"] = f["dec"] / float(n["dec"])  # type: ignore[arg-type]
        out["C v3 encode / Numba v3 encode"] = f["enc"] / float(n["enc"])  # type: ignore[arg-type]
    if source_bytes:
        out["v3 bytes / source file"] = f["bytes"] / source_bytes
    return out


def targets_table(runs: list[dict[str, dict[str, float]]]) -> str:
    """Markdown table of the targets per tile set over the runs: the worst value of each (the lowest for
    a lower bound, the highest for an upper one), the range, and whether every run met it."""
    sets = list(runs[0])
    lines = [f"### Targets over {len(runs)} run(s): worst value (range), met in every run?", "",
             "| target | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for name, op, bound in TARGETS:
        cells = []
        for s in sets:
            vals = [r[s][name] for r in runs if name in r.get(s, {})]
            if not vals:
                cells.append("-")
                continue
            worst = min(vals) if op == ">=" else max(vals)
            ok = all(v >= bound for v in vals) if op == ">=" else all(v <= bound for v in vals)
            rng = f" ({min(vals):.3g}-{max(vals):.3g})" if len(vals) > 1 else ""
            cells.append(f"{worst:.3g}{rng} {'met' if ok else 'MISSED'}")
        lines.append(f"| {name} {op} {bound:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


COLUMNS = ["codec", "bits/pixel", "encode MP/s", "decode MP/s", "decode, new array MP/s"]


def json_table(rows: list[dict[str, object]], source_bytes: int | None = None) -> dict[str, object]:
    """A :func:`measure` table in the ``benchmarks/report.py`` JSON format."""
    cols = COLUMNS + (["size / source file"] if source_bytes else [])
    out = []
    for r in rows:
        row = {"codec": r["codec"], "bits/pixel": round(float(r["bpp"]), 3),  # type: ignore[arg-type]
               "encode MP/s": round(float(r["enc"]), 1), "decode MP/s": round(float(r["dec"]), 1),  # type: ignore[arg-type]
               "decode, new array MP/s": round(float(r["dec_new"]), 1)}  # type: ignore[arg-type]
        if source_bytes:
            row["size / source file"] = round(int(r["bytes"]) / source_bytes, 3)  # type: ignore[call-overload]
        out.append(row)
    return {"columns": cols, "rows": out}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally write) the Markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=Path, default=DEFAULT_SLIDES)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-tiles", type=int, default=10**6)
    ap.add_argument("--runs", type=int, default=1,
                    help="measure everything this many times (the speeds drift between runs on a shared "
                         "machine); the tables are the first run's, the targets table covers every run")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", type=Path, help="also write the tables as JSON (report.py format)")
    args = ap.parse_args(argv)
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # single core
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass
    from csp.codecs import lossless

    parts = [(f"CSP lossless codec benchmark (implementation used by default: {lossless.IMPLEMENTATION}; "
              f"imagecodecs {imagecodecs.__version__}; single core, best of {args.repeat})\n")]
    tables: dict[str, object] = {}

    def add(title: str, rows: list[dict[str, object]], source_bytes: int | None = None) -> None:
        parts.append(table(title, rows, source_bytes))
        tables[title] = json_table(rows, source_bytes)
        print(parts[-1], flush=True)

    tiles = svs_tiles(args.slides, args.max_tiles)
    jtiles = j2k_tiles(args.slides, args.max_tiles)
    qtiles, src = qptiff_tiles(args.slides, args.max_tiles)
    qsrc = src if args.max_tiles >= 10**6 else None
    sets = [("CMU-1", f"CMU-1-Small-Region.svs, {len(tiles)} decoded 240x240 RGB tiles", tiles, None)]
    if jtiles:
        sets.append(("TCGA", f"tcga-cr-7395-01a-01-ts1.svs (JPEG 2000 H&E), {len(jtiles)} decoded 240x240 RGB tiles",
                     jtiles, None))
    sets.append(("QPTIFF", f"small_vectra.qptiff, {len(qtiles)} tiles 240x240x3 (uint8 multiplex)", qtiles, qsrc))
    runs: list[dict[str, dict[str, float]]] = []
    for run in range(max(1, args.runs)):
        values: dict[str, dict[str, float]] = {}
        for short, title, set_tiles, source in sets:
            rows = measure(set_tiles, args.repeat)
            if run == 0:
                add(title, rows, source)
            values[short] = target_values(rows, source)
        runs.append(values)
        if args.runs > 1:
            print(f"run {run + 1}/{args.runs}: " + "; ".join(
                f"{k}: C dec {v.get('C v3 decode MP/s', 0):.1f}, enc {v.get('C v3 encode MP/s', 0):.1f}, "
                f"/JPEG-LS {v.get('C v3 decode / JPEG-LS decode', 0):.2f}, "
                f"C/Numba dec {v.get('C v3 decode / Numba v3 decode', 0):.2f}, "
                f"enc {v.get('C v3 encode / Numba v3 encode', 0):.2f}" for k, v in values.items()), flush=True)
    parts.append(targets_table(runs))
    print(parts[-1], flush=True)
    text = "\n".join(parts)
    if args.out:
        args.out.write_text(text)
    if args.json:
        desc = (f"{parts[0].strip()}. MP/s = megapixels (all channels of a pixel together) per second; "
                "decode = into a preallocated array (out=), decode, new array = a new array per tile; "
                "csp v1/v2/v3 = bitstream version; every round trip verified pixel by pixel.")
        args.json.write_text(json.dumps({"description": desc, "tables": tables, "targets": runs,
                                         "targets_markdown": parts[-1]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
