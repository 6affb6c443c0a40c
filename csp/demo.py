"""The main job on the bundled sample: convert, verify, read back, compare, report.

Run with ``make demo`` (or ``python -m csp.demo [SLIDE] [--out DIR]``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(os.path.dirname(HERE), "data", "CMU-1-Small-Region.svs")


def main(argv: list[str] | None = None) -> int:
    """Convert ``SLIDE`` (default: the bundled sample), verify it and print a short report."""
    ap = argparse.ArgumentParser(prog="python -m csp.demo")
    ap.add_argument("slide", nargs="?", default=SAMPLE)
    ap.add_argument("--out", default="demo-out")
    args = ap.parse_args(argv)

    import csp
    from csp.conversion.batch import output_name

    os.makedirs(args.out, exist_ok=True)
    dst = os.path.join(args.out, output_name(args.slide, "zip"))
    print(f"csp {csp.__version__}: converting {args.slide}")
    res = csp.convert(args.slide, dst, overwrite=True)
    print(f"  -> {dst}  in {res.seconds:.2f} s (verified against the source: {res.verified})")
    print(f"  bytes: source {res.bytes_in:,}  container {res.bytes_out:,}  "
          f"({res.bytes_out / res.bytes_in:.3f}x)")
    with csp.open_slide(dst) as slide:
        print(f"  vendor {slide.properties['openslide.vendor']}, mpp "
              f"{slide.properties.get('openslide.mpp-x', '?')}, objective "
              f"{slide.properties.get('openslide.objective-power', '?')}x, associated images: "
              f"{', '.join(slide.associated_images) or '-'}")
        print("  level  size              tile     encoding        stored bytes")
        for lv in res.levels:
            i = lv["index"]
            tw = slide.properties[f"openslide.level[{i}].tile-width"]
            th = slide.properties[f"openslide.level[{i}].tile-height"]
            print(f"  {i:>5}  {lv['width']:>6} x {lv['height']:<6}  {tw}x{th:<5} "
                  f"{lv['encoding'] + ' (' + lv['mode'] + ')':<15} {lv['bytes']:>12,}")
        w, h = slide.dimensions
        loc, size = (w // 3, h // 3), (512, 512)
        t = time.perf_counter()
        region = slide.read_region(loc, 0, size)
        dt = (time.perf_counter() - t) * 1e3
        arr = np.asarray(region)
        print(f"  read_region({loc}, 0, {size}) -> {region.mode} {region.size} in {dt:.2f} ms, "
              f"mean RGB {arr[..., :3].reshape(-1, 3).mean(0).round(1).tolist()}")
        n, t = 200, time.perf_counter()
        rng = np.random.default_rng(0)
        lw, lh = slide.level_dimensions[0]
        for _ in range(n):
            slide.read_region((int(rng.integers(0, lw - 256)), int(rng.integers(0, lh - 256))), 0, (256, 256),
                              as_array=True)
        print(f"  {n / (time.perf_counter() - t):,.0f} random 256x256 reads/s (one thread)")
        try:
            import openslide
        except ImportError:
            print("  (openslide-python not installed: skipping the OpenSlide comparison)")
        else:
            with openslide.OpenSlide(args.slide) as ref:
                ref_arr = np.asarray(ref.read_region(loc, 0, size))
            same = np.array_equal(ref_arr[..., :3], arr[..., :3])
            print(f"  same pixels as OpenSlide on the source: {same}")
            if not same:
                return 1
    return _archive_tier(dst, res.levels)


def _archive_tier(dst: str, levels: list[dict]) -> int:
    """Repack the container's JPEG levels into the archive tier and check the JPEG bytes come back."""
    from csp.container.reader import ContainerReader
    from csp.conversion.repack import repack

    arch = dst[: -len(".csp")] + ".archive.csp"
    r = repack(dst, arch, to="archive", overwrite=True)
    before = sum(lv["bytes"] for lv in levels if lv["encoding"] == "jpeg")
    after = sum(lv["bytes"] for lv in r.levels)
    with ContainerReader(dst) as a, ContainerReader(arch) as b:
        arr_a, arr_b = a.levels[0], b.levels[0]
        def restored(c: int, w: int) -> bytes | None:
            data = b.tile_bytes(arr_b, c, w)
            return None if data is None else arr_b.codec.restore(data)

        exact = all(a.tile_bytes(arr_a, c, w) == restored(c, w) for c, w in a.iter_tiles(arr_a))
    print(f"  archive tier ({arch}): JPEG levels {before:,} -> {after:,} bytes "
          f"({1 - after / before:.1%} smaller) in {r.seconds:.1f} s; every JPEG tile rebuilt byte-exact: {exact}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
