"""Side-by-side read benchmarks: CSP vs OpenSlide vs tiffslide vs zarr-python vs the decode-only limit.

Measures, in one run, on a large realistic slide (built from the real sample tiles by
``make_large_slide.py``) and its CSP container:

1. random tile-aligned patch reads/s (one stored tile per sample);
2. random unaligned 256x256 windows/s;
3. DataLoader samples/s (2 workers, batch 64): CSP dataset vs an equivalent OpenSlide-based dataset.

Rows 1-2 run on one core (one process, one thread) and with 2 worker processes (aggregate). Prints a
table with ratios to OpenSlide and writes JSON (``--json``).

    python benchmarks/bench_read.py                      # 50,000 x 50,000 slide (built once, cached)
    python benchmarks/bench_read.py --size 40000 --seconds 5
    python benchmarks/bench_read.py --slide data/CMU-1-Small-Region.svs --seconds 1   # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
WORK = os.environ.get("CSP_BENCH_DIR", os.path.join(REPO, "benchmarks", "work"))
PATCH = 256


# ------------------------------------------------------------------------------------------- setup
def prepare(slide: str | None, size: int) -> tuple[str, str]:
    """Source slide path and its CSP container (both built once and cached under ``WORK``)."""
    import csp

    os.makedirs(WORK, exist_ok=True)
    if slide is None:
        sys.path.insert(0, HERE)
        from make_large_slide import make_large_slide

        slide = os.path.join(WORK, f"large-{size}.svs")
        make_large_slide(slide, size=size)
    container = os.path.join(WORK, os.path.splitext(os.path.basename(slide))[0] + ".csp")
    stamp = container + ".src"
    key = f"{os.path.abspath(slide)} {os.path.getsize(slide)} {os.path.getmtime(slide)}"
    if not (os.path.exists(container) and os.path.exists(stamp) and _read_text(stamp) == key):
        t = time.perf_counter()
        res = csp.convert(slide, container, overwrite=True)
        print(f"converted {slide} -> {container} in {time.perf_counter() - t:.1f} s "
              f"({res.tiles} tiles, {res.bytes_out / 1e6:.1f} MB)", flush=True)
        with open(stamp, "w") as fh:
            fh.write(key)
    return slide, container


def _read_text(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def geometry(container: str) -> dict[str, int]:
    from csp.container.reader import ContainerReader

    with ContainerReader(container) as cr:
        lay = cr.levels[0].layout
        return {"width": lay.width, "height": lay.height, "tw": lay.tile_width, "th": lay.tile_height,
                "across": lay.tiles_across, "down": lay.tiles_down}


# ------------------------------------------------------------------------------------------- readers
# Each factory returns (read_aligned(col, row), read_window(x, y)) for one process.
def csp_reader(slide: str, container: str, g: dict[str, int]) -> tuple[Callable, Callable]:
    import csp

    s = csp.open_slide(container)
    return (lambda c, r: s.read_tile(0, c, r),
            lambda x, y: s.read_region((x, y), 0, (PATCH, PATCH), as_array=True))


def openslide_reader(slide: str, container: str, g: dict[str, int]) -> tuple[Callable, Callable]:
    import openslide

    s = openslide.OpenSlide(slide)  # default cache (32 MiB in OpenSlide 4)
    tw, th = g["tw"], g["th"]
    return (lambda c, r: np.asarray(s.read_region((c * tw, r * th), 0, (tw, th))),
            lambda x, y: np.asarray(s.read_region((x, y), 0, (PATCH, PATCH))))


def tiffslide_reader(slide: str, container: str, g: dict[str, int]) -> tuple[Callable, Callable]:
    import tiffslide

    s = tiffslide.TiffSlide(slide)
    tw, th = g["tw"], g["th"]
    return (lambda c, r: s.read_region((c * tw, r * th), 0, (tw, th), as_array=True),
            lambda x, y: s.read_region((x, y), 0, (PATCH, PATCH), as_array=True))


def zarr_reader(slide: str, container: str, g: dict[str, int]) -> tuple[Callable, Callable]:
    import zarr

    store = zarr.storage.ZipStore(container, mode="r") if os.path.isfile(container) else container
    z = zarr.open_group(store, mode="r")["0"]
    tw, th = g["tw"], g["th"]
    return (lambda c, r: z[:, r * th:(r + 1) * th, c * tw:(c + 1) * tw],
            lambda x, y: z[:, y:y + PATCH, x:x + PATCH])


def decode_only_reader(slide: str, container: str, g: dict[str, int]) -> tuple[Callable, Callable]:
    """The physical limit: pread of the source tile bytes + libjpeg-turbo decode, nothing else."""
    import imagecodecs
    import tifffile

    tf = tifffile.TiffFile(slide)
    page = tf.pages[0]
    offsets = np.asarray(page.dataoffsets)
    counts = np.asarray(page.databytecounts)
    tables = page.jpegtables
    fd = os.open(slide, os.O_RDONLY)
    tw, th, across = g["tw"], g["th"], g["across"]
    out = np.empty((th, tw, 3), np.uint8)
    from tifffile.tifffile import jpeg_decode_colorspace

    cs, ocs = jpeg_decode_colorspace(int(page.photometric), int(page.planarconfig), tuple(page.extrasamples),
                                     bool(page.is_jfif))

    def tile(c: int, r: int) -> np.ndarray:
        i = r * across + c
        data = os.pread(fd, int(counts[i]), int(offsets[i]))
        return imagecodecs.jpeg8_decode(data, tables=tables, colorspace=cs, outcolorspace=ocs, out=out)

    def window(x: int, y: int) -> None:
        for r in range(y // th, (y + PATCH - 1) // th + 1):
            for c in range(x // tw, (x + PATCH - 1) // tw + 1):
                tile(c, r)

    return tile, window


READERS: dict[str, Callable[..., tuple[Callable, Callable]]] = {
    "CSP": csp_reader,
    "OpenSlide (source)": openslide_reader,
    "tiffslide (source)": tiffslide_reader,
    "zarr-python (container)": zarr_reader,
    "decode-only limit": decode_only_reader,
}


def _run(name: str, kind: str, slide: str, container: str, g: dict[str, int], seconds: float,
         seed: int) -> tuple[int, float]:
    aligned, window = READERS[name](slide, container, g)
    fn = aligned if kind == "aligned" else window
    rng = np.random.default_rng(seed)
    if kind == "aligned":
        pts = np.stack([rng.integers(0, g["across"] - 1, 200_000), rng.integers(0, g["down"] - 1, 200_000)], 1)
    else:
        pts = np.stack([rng.integers(0, g["width"] - PATCH, 200_000),
                        rng.integers(0, g["height"] - PATCH, 200_000)], 1)
    for a, b in pts[:20]:  # warm-up (imports, first decode)
        fn(int(a), int(b))
    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for a, b in pts[n % 199_000:n % 199_000 + 50]:
            fn(int(a), int(b))
        n += 50
    return n, time.perf_counter() - t0


def _worker(args: tuple) -> tuple[int, float]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return _run(*args)


def measure(name: str, kind: str, slide: str, container: str, g: dict[str, int], seconds: float,
            workers: int) -> float:
    """Reads per second: one process, or ``workers`` processes in parallel (aggregate)."""
    if workers <= 1:
        n, dt = _run(name, kind, slide, container, g, seconds, 0)
        return n / dt
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.map(_worker, [(name, kind, slide, container, g, seconds, s + 1) for s in range(workers)])
    return sum(n for n, _ in results) / max(dt for _, dt in results)


# ------------------------------------------------------------------------------------------- dataloader
class OpenSlideDataset:
    """The equivalent OpenSlide-based dataset: same index, ``read_region`` on the source slide."""

    def __init__(self, index: Any, sources: list[str]) -> None:
        self.index = index
        self.sources = sources
        self._slides: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import openslide
        import torch

        e = self.index.entries[i]
        si = int(e["slide"])
        if si not in self._slides:  # opened lazily in each worker (OpenSlide handles do not pickle)
            self._slides[si] = openslide.OpenSlide(self.sources[si])
        pw, ph = self.index.patch_size
        img = np.asarray(self._slides[si].read_region((int(e["x"]), int(e["y"])), 0, (pw, ph)))[..., :3]
        return {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), "label": int(e["label"])}


def measure_dataloader(slide: str, container: str, seconds: float, mode: str) -> dict[str, float]:
    import torch

    from csp.torch import CspDataset, TileIndex, collate

    idx = TileIndex.build([container], patch_size=224 if mode == "aligned" else PATCH,
                          mode="aligned" if mode == "aligned" else "random", patches_per_slide=20_000,
                          min_tissue=0.0, seed=0)
    out = {}
    # CSP's documented loader setup: batches decoded in one call (__getitems__) and passed through by
    # csp.torch.collate; the OpenSlide dataset uses PyTorch's default per-sample path.
    for name, ds, coll in (("CSP", CspDataset(idx), collate),
                           ("OpenSlide (source)", OpenSlideDataset(idx, [slide]), None)):
        loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2,
                                             generator=torch.Generator().manual_seed(0),
                                             persistent_workers=False, collate_fn=coll)
        it = iter(loader)
        next(it)  # workers started, first batch
        n, t0 = 0, time.perf_counter()
        for batch in it:
            n += len(batch["label"])
            if time.perf_counter() - t0 > seconds:
                break
        out[name] = n / (time.perf_counter() - t0)
        del it, loader
    return out


# ------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide", help="source slide (default: build the large synthetic-from-real slide)")
    ap.add_argument("--size", type=int, default=50_000, help="side of the built slide in pixels")
    ap.add_argument("--seconds", type=float, default=4.0, help="time per measurement")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "read.json"))
    ap.add_argument("--skip", nargs="*", default=[], help="reader names to skip")
    args = ap.parse_args(argv)

    slide, container = prepare(args.slide, args.size)
    g = geometry(container)
    print(f"slide {slide}: {g['width']} x {g['height']} px, {g['across'] * g['down']} tiles "
          f"of {g['tw']}x{g['th']}; container {container}", flush=True)
    results: dict[str, Any] = {"slide": os.path.basename(slide), "geometry": g, "seconds": args.seconds,
                               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                               "rows": {}}
    for kind, title in (("aligned", "random tile-aligned patch reads/s"),
                        ("window", f"random unaligned {PATCH}x{PATCH} windows/s")):
        rows = {}
        for name in READERS:
            if name in args.skip:
                continue
            rows[name] = {f"{w} proc": measure(name, kind, slide, container, g, args.seconds, w) for w in (1, 2)}
            print(f"  {kind:8} {name:26} " + "  ".join(f"{k}: {v:8.0f}" for k, v in rows[name].items()),
                  flush=True)
        results["rows"][kind] = rows
    try:
        results["rows"]["dataloader"] = {
            mode: measure_dataloader(slide, container, args.seconds * 2, mode) for mode in ("aligned", "random")}
    except ImportError as exc:
        print(f"(DataLoader rows skipped: {exc})")
    print_table(results)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"wrote {args.json}")
    return 0


def print_table(results: dict[str, Any]) -> None:
    """Markdown table with ratios to OpenSlide and to the decode-only limit."""
    print()
    for kind in ("aligned", "window"):
        rows = results["rows"].get(kind, {})
        ref = rows.get("OpenSlide (source)")
        lim = rows.get("decode-only limit")
        print(f"| {kind} | 1 proc/s | 2 proc/s | vs OpenSlide (1 / 2) | vs decode-only (1 / 2) |")
        print("|---|---|---|---|---|")
        for name, r in rows.items():
            vs = f"{r['1 proc'] / ref['1 proc']:.2f}x / {r['2 proc'] / ref['2 proc']:.2f}x" if ref else "-"
            vl = f"{r['1 proc'] / lim['1 proc']:.0%} / {r['2 proc'] / lim['2 proc']:.0%}" if lim else "-"
            print(f"| {name} | {r['1 proc']:.0f} | {r['2 proc']:.0f} | {vs} | {vl} |")
        print()
    dl = results["rows"].get("dataloader")
    if dl:
        print("| DataLoader (2 workers, batch 64) | CSP samples/s | OpenSlide samples/s | ratio |")
        print("|---|---|---|---|")
        for mode, r in dl.items():
            print(f"| {mode} patches | {r['CSP']:.0f} | {r['OpenSlide (source)']:.0f} | "
                  f"{r['CSP'] / r['OpenSlide (source)']:.2f}x |")
        print()


if __name__ == "__main__":
    sys.exit(main())
