"""Archive tier: bytes saved on JPEG-sourced slides, anchors in the same run, encode and read speed.

    python benchmarks/bench_archive.py [--size 20000] [--no-large] [--sample 1000] [--effort 9]

For every shared JPEG-based slide (Aperio SVS, DICOM, NDPI, where their readers exist) and a large derived
slide (``make_large_slide``), prints and writes ``benchmarks/results/archive.json``:

- ``source``: bytes of the source's JPEG tile data (what the archive tier repacks);
- ``passthrough`` / ``archive``: container sizes (whole containers, levels CSP builds included) and the
  bytes of the JPEG levels inside them;
- anchors on the same tiles: zstd-19 per tile, JPEG XL recompression without the tricks (tables
  spliced in as recompression requires, no Adobe marker, no shared header), Lepton
  (``lepton-jpeg-python``) when installed; Brunsli has no maintained Python package and imagecodecs is
  built without it here;
- ``archive e7`` / ``archive e<N>``: the archive codec at libjxl effort 7 (imagecodecs' default, the
  fast setting) and at effort N (``--effort``; the archive's own default is 9 where libjxl's encoder is
  reachable, so ``e9`` then repeats the archive figure on the same tiles);
- encode MB/s per core (source JPEG bytes per second of single-threaded packing) and random tile reads
  per second per core (one thread: pread + rebuild + libjpeg-turbo decode) for both tiers.

On the large slide, anchors and the effort row use a seeded random sample of ``--sample`` tiles (their
ratio is what is reported); the tiers' own figures use every tile.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import imagecodecs
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from csp.codecs import get_tile_codec
from csp.codecs.jpeg_archive import (
    _table_body,
    archive_encoding,
    default_archive_effort,
    effort_available,
    tile_kind,
)
from csp.container.reader import ContainerReader
from csp.conversion.pipeline import convert
from csp.errors import CspError
from csp.registry import open_source

WORK = os.environ.get("CSP_BENCH_DIR", os.path.join(HERE, "work"))
SHARED = os.environ.get("CSP_SHARED_SLIDES", os.path.join(os.path.dirname(REPO), "shared", "slides"))
SHARED_SLIDES = ["svs/CMU-1-Small-Region.svs", "dicom/cmu-1-small-region", "ndpi/test3-DAPI-2-(387).ndpi"]


def _jpeg_tiles(reader: Any) -> Iterator[tuple[int, Any, int, int, bytes]]:
    """``(level, SourceLevel, col, row, bytes)`` of every present tile of the reader's JPEG levels."""
    for i, lv in enumerate(reader.levels):
        if lv.encoding.codec != "jpeg":
            continue
        for row in range(-(-lv.height // lv.tile_height)):
            for col in range(-(-lv.width // lv.tile_width)):
                data = reader.read_tile_encoded(i, col, row)
                if data:
                    yield i, lv, col, row, data


def _full_jpeg(data: bytes, tables: bytes | None) -> bytes:
    """A stand-alone JPEG: shared tables spliced in after SOI (what any recompressor needs)."""
    body = _table_body(tables)
    return data if body is None or b"\xff\xdb" in data[:200] else data[:2] + body + data[2:]


def _lepton() -> Callable[[bytes], bytes] | None:
    try:
        import lepton_jpeg_python as lep
    except ImportError:
        return None
    return lambda b: bytes(lep.compress_bytes(b))


def _anchor_sizes(tiles: list[tuple[int, Any, bytes]], effort: int | None) -> dict[str, Any]:
    """Sizes of the anchors (and the higher-effort archive) over ``tiles`` ``(level, SourceLevel, bytes)``."""
    out: dict[str, Any] = {"tiles": len(tiles), "source": sum(len(t) for _, _, t in tiles)}
    zstd = jxl = lep = 0
    lepton = _lepton()
    lep_failed = 0
    efforts = sorted({7, *([effort] if effort is not None else [])})
    codecs: dict[tuple[int, int], Any] = {}
    packed = dict.fromkeys(efforts, 0)
    t_pack = dict.fromkeys(efforts, 0.0)
    for level, lv, data in tiles:
        zstd += len(imagecodecs.zstd_encode(data, level=19))
        full = _full_jpeg(data, lv.encoding.config.get("tables"))
        try:
            jxl += len(imagecodecs.jpegxl_encode_jpeg(full, numthreads=1))
        except Exception:  # noqa: BLE001 - refused: the anchor keeps the JPEG as is
            jxl += len(data)
        if lepton is not None:
            try:
                lep += len(lepton(full))
            except Exception:  # noqa: BLE001
                lep += len(data)
                lep_failed += 1
        for e in efforts:
            if (level, e) not in codecs:
                same = [d for lvl, _, d in tiles if lvl == level]
                codecs[level, e] = get_tile_codec(archive_encoding(lv.encoding, same[:8], effort=e,
                                                                   tiles=len(same)))
                packed[e] += len(codecs[level, e].encoding.config.get("prefix") or b"")
            t = time.perf_counter()
            packed[e] += len(codecs[level, e].pack(data))
            t_pack[e] += time.perf_counter() - t
    out["zstd19"] = zstd
    out["jxl_plain"] = jxl
    if lepton is not None:
        out["lepton"] = lep
        out["lepton_refused"] = lep_failed
    for e in efforts:
        out[f"archive_e{e}"] = packed[e]
        out[f"archive_e{e}_enc_mb_s"] = out["source"] / 1e6 / max(t_pack[e], 1e-9)
    return out


def _encode_speed(tiles: list[tuple[int, Any, bytes]]) -> float:
    """Source MB/s of single-threaded archive packing (level encodings built outside the timing)."""
    codecs: dict[int, Any] = {}
    for level, lv, _ in tiles:
        if level not in codecs:
            codecs[level] = get_tile_codec(archive_encoding(lv.encoding, [d for lvl, _, d in tiles if lvl == level][:8]))
    t = time.perf_counter()
    n = 0
    for level, _, data in tiles:
        codecs[level].pack(data)
        n += len(data)
    return n / 1e6 / (time.perf_counter() - t)


def _read_speed(path: str, reads: int, seed: int) -> dict[str, float]:
    """Random stored-tile decodes per second on one thread, over the container's JPEG-derived levels."""
    with ContainerReader(path) as cr:
        arrs = [a for a in cr.levels if a.encoding.codec in ("jpeg", "jpeg_jxl")]
        coords = [(a, c, r) for a in arrs for c, r in cr.iter_tiles(a)]
        rng = random.Random(seed)
        picks = [rng.choice(coords) for _ in range(reads)]
        outs = {a.path: np.empty(a.tile_shape, a.dtype) for a in arrs}
        for a, c, r in picks[:20]:  # warm the shard indexes
            cr.decode_tile(a, c, r, out=outs[a.path])
        t0, c0 = time.perf_counter(), time.process_time()
        pixels = 0
        for a, c, r in picks:
            cr.decode_tile(a, c, r, out=outs[a.path])
            pixels += a.layout.tile_width * a.layout.tile_height
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tiles_per_s": reads / wall, "tiles_per_cpu_s": reads / max(cpu, 1e-9), "mpix_per_s": pixels / 1e6 / wall}


def _level_bytes(path: str, codecs: tuple[str, ...]) -> int:
    with ContainerReader(path) as cr:
        rec = (cr.completion or {}).get("arrays", {})
        return sum(int(rec.get(a.path, {}).get("bytes", 0)) for a in cr.levels if a.encoding.codec in codecs)


def _scanner_jpeg_bytes(reader: Any, tile_bytes: int) -> int:
    """Bytes the source file spends on the JPEG data of its levels (the denominator of every saving).

    Equal to the tile bytes the reader serves, except for NDPI: there CSP builds standalone tiles from
    restart intervals and repeats the JPEG header in each, so the scanner's own bytes are the level
    strips (StripByteCounts), a little smaller.
    """
    if reader.name != "ndpi":
        return tile_bytes
    import tifffile

    sizes = {(lv.width, lv.height) for lv in reader.levels}
    total = 0
    with tifffile.TiffFile(reader.source_path) as tf:
        for page in tf.pages:
            if (page.imagewidth, page.imagelength) in sizes and page.compression == 7:
                total += int(sum(page.tags["StripByteCounts"].value
                                 if isinstance(page.tags["StripByteCounts"].value, tuple)
                                 else (page.tags["StripByteCounts"].value,)))
    return total or tile_bytes


def bench_slide(src: str, name: str, *, sample: int | None, effort: int | None, reads: int) -> dict[str, Any]:
    """Every figure for one slide."""
    os.makedirs(WORK, exist_ok=True)
    with open_source(src) as reader:
        tiles = [(i, lv, d) for i, lv, _c, _r, d in _jpeg_tiles(reader)]
        tile_bytes = sum(len(d) for _, _, d in tiles)
        source = _scanner_jpeg_bytes(reader, tile_bytes)
    res: dict[str, Any] = {"slide": name, "jpeg_tiles": len(tiles), "source_jpeg_bytes": source,
                           "source_tile_bytes_as_served": tile_bytes}
    if sample is not None and len(tiles) > sample:
        subset = random.Random(7).sample(tiles, sample)
    else:
        subset = tiles
    p_out = os.path.join(WORK, f"archive-bench-{name}-passthrough.csp")
    a_out = os.path.join(WORK, f"archive-bench-{name}-archive.csp")
    t = time.perf_counter()
    convert(src, p_out, overwrite=True, verify=False)
    res["passthrough_convert_s"] = time.perf_counter() - t
    t = time.perf_counter()
    convert(src, a_out, overwrite=True, verify=False, profile="archive")
    res["archive_convert_s"] = time.perf_counter() - t
    res["passthrough_container_bytes"] = os.path.getsize(p_out)
    res["archive_container_bytes"] = os.path.getsize(a_out)
    res["passthrough_jpeg_level_bytes"] = _level_bytes(p_out, ("jpeg",))
    res["archive_jpeg_level_bytes"] = _level_bytes(a_out, ("jpeg_jxl",))
    with ContainerReader(a_out) as cr:
        kinds = {"jxl": 0, "plain": 0, "empty": 0}
        stored = 0
        for arr in cr.levels:
            if arr.encoding.codec != "jpeg_jxl":
                continue
            for c, r in cr.iter_tiles(arr):
                data = cr.tile_bytes(arr, c, r)
                if data is not None:
                    kinds[tile_kind(data)] += 1
                    stored += len(data)
        shared = sum(len(a.encoding.config.get("prefix") or b"") for a in cr.levels
                     if a.encoding.codec == "jpeg_jxl")
    res["archive_shared_header_bytes"] = shared  # stored once per level in the metadata
    stored += shared
    res["archive_tile_bytes"] = stored  # tiles + shared headers
    res["archive_plain_tiles"] = kinds["plain"]
    res["archive_effort"] = default_archive_effort()
    res["archive_ratio"] = stored / source
    res["anchors"] = _anchor_sizes(subset, effort)
    res["anchors"]["sampled"] = subset is not tiles
    res["encode_mb_s_per_core"] = _encode_speed(subset[: min(len(subset), 300)])
    res["reads_archive"] = _read_speed(a_out, reads, 1)
    res["reads_passthrough"] = _read_speed(p_out, reads, 1)
    for p in (p_out, a_out):
        os.remove(p)
    return res


def _ratio(a: dict[str, Any], key: str) -> str:
    return f"{a[key] / a['source']:.3f}" if key in a else "-"


def print_table(rows: list[dict[str, Any]], effort: int | None) -> None:
    """The human-readable table."""
    head = ["slide", "JPEG tiles MB", "passthrough MB", "archive MB", "archive/src", "zstd19", "jxl plain",
            "lepton", "arch e7", f"arch e{effort}" if effort else "arch eN", "enc MB/s", "plain", "reads/s arch",
            "reads/s pass"]
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        a = r["anchors"]
        print(" | ".join([
            r["slide"], f"{r['source_jpeg_bytes'] / 1e6:.3f}", f"{r['passthrough_container_bytes'] / 1e6:.3f}",
            f"{r['archive_container_bytes'] / 1e6:.3f}", f"{r['archive_ratio']:.3f}",
            _ratio(a, "zstd19"), _ratio(a, "jxl_plain"), _ratio(a, "lepton"), _ratio(a, "archive_e7"),
            _ratio(a, f"archive_e{effort}") if effort else "-", f"{r['encode_mb_s_per_core']:.2f}",
            str(r["archive_plain_tiles"]), f"{r['reads_archive']['tiles_per_s']:.0f}",
            f"{r['reads_passthrough']['tiles_per_s']:.0f}"]))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=20_000, help="side of the large derived slide (px)")
    ap.add_argument("--no-large", action="store_true", help="only the shared slides")
    ap.add_argument("--sample", type=int, default=1000, help="tiles sampled for anchors on the large slide")
    ap.add_argument("--effort", type=int, default=9, help="higher libjxl effort row (0 = skip)")
    ap.add_argument("--reads", type=int, default=1500, help="random tile reads per tier")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "archive.json"))
    args = ap.parse_args(argv)
    effort = args.effort if args.effort and effort_available(args.effort) else None
    rows: list[dict[str, Any]] = []
    for rel in SHARED_SLIDES:
        src = os.path.join(SHARED, rel)
        if not os.path.exists(src):
            print(f"skip {rel}: not found", file=sys.stderr)
            continue
        try:
            rows.append(bench_slide(src, os.path.basename(rel.rstrip("/")), sample=None, effort=effort,
                                    reads=args.reads))
        except CspError as exc:  # no reader for this format in this checkout
            print(f"skip {rel}: {exc}", file=sys.stderr)
    if rows:
        agg_src = sum(r["source_jpeg_bytes"] for r in rows)
        agg = {"slides": [r["slide"] for r in rows], "source_jpeg_bytes": agg_src,
               "archive_tile_bytes": sum(r["archive_tile_bytes"] for r in rows)}
        agg["archive_saving"] = 1 - agg["archive_tile_bytes"] / agg_src
        for key in ("zstd19", "jxl_plain", "lepton", "archive_e7", f"archive_e{effort}"):
            if all(key in r["anchors"] for r in rows):
                agg[f"{key}_saving"] = 1 - sum(r["anchors"][key] for r in rows) / agg_src
    else:
        agg = {}
    if not args.no_large:
        sys.path.insert(0, HERE)
        from make_large_slide import make_large_slide

        large = os.path.join(WORK, f"large-{args.size}.svs")
        make_large_slide(large, size=args.size)
        rows.append(bench_slide(large, f"large-{args.size}", sample=args.sample, effort=effort,
                                reads=args.reads))
    print_table(rows, effort)
    if agg:
        print("\naggregate over the shared slides (source JPEG tile bytes saved): "
              + ", ".join(f"{k[:-7]} {v * 100:.1f}%" for k, v in agg.items() if k.endswith("_saving")))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"effort": effort, "rows": rows, "aggregate_shared": agg,
                   "machine": {"cpus": os.cpu_count()}}, fh, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
