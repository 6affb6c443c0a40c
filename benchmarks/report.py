"""Write ``docs/benchmarks.md`` and its plots from the JSON the benchmark scripts wrote.

Every figure in the page comes from ``benchmarks/results/*.json`` (measured by ``bench_read.py``,
``bench_convert.py``, ``bench_archive.py`` and ``bench_codec.py``); nothing is typed in by hand.
Sections whose JSON is absent are left out. Usage: ``python benchmarks/report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
DOCS = os.path.join(os.path.dirname(HERE), "docs")
IMG = os.path.join(DOCS, "img")


def _load(name: str) -> dict[str, Any] | None:
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def _bar_plot(path: str, title: str, groups: dict[str, dict[str, float]], ylabel: str) -> None:
    """Grouped bar chart: ``groups[series][category] = value``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(groups)
    cats = list(dict.fromkeys(c for s in series for c in groups[s]))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, s in enumerate(series):
        xs = [j + i * width for j in range(len(cats))]
        ax.bar(xs, [groups[s].get(c, 0.0) for c in cats], width, label=s)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(cats))])
    ax.set_xticklabels(cats, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_section(r: dict[str, Any]) -> list[str]:
    g = r["geometry"]
    out = ["## Random reads (`benchmarks/bench_read.py`)", "",
           (f"Slide `{r['slide']}`: {g['width']:,} x {g['height']:,} px, {g['across'] * g['down']:,} JPEG tiles of "
           f"{g['tw']}x{g['th']} (built by `benchmarks/make_large_slide.py` from the real tiles of "
           f"CMU-1-Small-Region.svs). {r['seconds']} s per measurement; machine: {r['machine']['cpus']} CPUs, "
           f"Python {r['machine']['python']}."), ""]
    titles = {"aligned": "Random tile-aligned patch reads/s", "window": "Random unaligned 256 px windows/s"}
    plots: dict[str, dict[str, float]] = {}
    for kind in ("aligned", "window"):
        rows = r["rows"].get(kind)
        if not rows:
            continue
        ref = rows.get("OpenSlide (source)", {})
        lim = rows.get("decode-only limit", {})
        out += [f"### {titles[kind]}", "", ("| reader | 1 process | 2 processes | vs OpenSlide (1 proc) "
                "| of decode-only limit (1 proc) |"), "|---|---:|---:|---:|---:|"]
        for name, v in rows.items():
            one, two = v.get("1 proc", 0.0), v.get("2 proc", 0.0)
            ratio = f"{one / ref['1 proc']:.2f}x" if ref.get("1 proc") else ""
            frac = f"{one / lim['1 proc']:.0%}" if lim.get("1 proc") else ""
            out.append(f"| {name} | {_fmt(one)} | {_fmt(two)} | {ratio} | {frac} |")
            plots.setdefault(name, {})[f"{kind} 1p"] = one
            plots[name][f"{kind} 2p"] = two
        out.append("")
    if plots:
        _bar_plot(os.path.join(IMG, "reads.png"), "Random reads per second (higher is better)", plots, "reads/s")
        out += ["![reads per second](img/reads.png)", ""]
    dl = r["rows"].get("dataloader")
    if dl:
        out += ["### PyTorch DataLoader (2 workers, batch 64)", "",
                ("CSP: `CspDataset` + `collate_fn=csp.torch.collate` (batches decoded in one call); "
                "OpenSlide: an equivalent map-style dataset calling `read_region` on the source."), "",
                "| patches | CSP samples/s | OpenSlide samples/s | ratio |", "|---|---:|---:|---:|"]
        for mode, v in dl.items():
            c, o = v.get("CSP", 0.0), v.get("OpenSlide (source)", 0.0)
            out.append(f"| {mode} | {_fmt(c)} | {_fmt(o)} | {c / o:.2f}x |" if o else f"| {mode} | {_fmt(c)} | | |")
        out.append("")
        _bar_plot(os.path.join(IMG, "dataloader.png"), "DataLoader samples/s (2 workers, batch 64)",
                  {name: {m: v.get(name, 0.0) for m, v in dl.items()} for name in ("CSP", "OpenSlide (source)")},
                  "samples/s")
        out += ["![DataLoader samples per second](img/dataloader.png)", ""]
    return out


def convert_section(c: dict[str, Any]) -> list[str]:
    out = ["## Conversion (`benchmarks/bench_convert.py`)", "",
           (f"Source `{c['slide']}`, {c['source_bytes'] / 1e6:,.0f} MB; one job, one process (the archive "
           "profile recompresses on all cores with threads)."), "",
           "| run | seconds | source MB/s (wall) | source MB/s per core (CPU time) | bytes out | peak RSS (MiB) |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, v in c["runs"].items():
        per_core = f"{v['source_mb_per_cpu_s']:.1f}" if "source_mb_per_cpu_s" in v else ""
        out.append(f"| {name} | {v['seconds']:.1f} | {v['source_mb_per_s']:.1f} | {per_core} | {v['bytes_out']:,} | "
                   f"{v['peak_rss_mib']:.0f} |")
    return out + [""]


def archive_section(a: dict[str, Any]) -> list[str]:
    out = ["## Archive tier (`benchmarks/bench_archive.py`)", "",
           ("Sizes relative to the scanner's JPEG bytes of the levels (lower is better; for NDPI the level strips, "
            "not CSP's re-headered tiles). *archive* is CSP's `jpeg_jxl` tier at its default effort (JPEG XL "
            "recompression through libjxl, shared tables and level-shared header, Adobe RGB marker, pad-byte "
            "handling); the anchors are measured in the same run on the same tiles: zstd -19 per tile, plain "
            "JPEG XL recompression (imagecodecs, no tricks), Lepton, and the archive at libjxl's default effort 7. "
            "Encode MB/s per core: archive default and effort 7. Reads: random tiles/s on one core."), "",
           ("| slide | JPEG tiles | source MB | archive | zstd-19 | JXL plain | Lepton | archive e7 | "
            "encode MB/s/core (e7) | reads/s archive | reads/s passthrough |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in a["rows"]:
        src = r["source_jpeg_bytes"]
        an = r.get("anchors", {})

        # anchors may be measured on a sample of the tiles (large slide): relative to the same tiles, then
        # scaled to the scanner's bytes (NDPI tiles as served carry a JPEG header each)
        scale = r.get("source_tile_bytes_as_served", src) / src

        def rel(key: str, an: dict[str, Any] = an, scale: float = scale) -> str:
            return f"{an[key] / an['source'] * scale:.3f}" if an.get(key) else ""

        e7 = an.get("archive_e7_enc_mb_s")
        enc = f"{r['encode_mb_s_per_core']:.2f}" + (f" ({e7:.1f})" if e7 else "")
        out.append(f"| {r['slide']} | {r['jpeg_tiles']:,} | {src / 1e6:.2f} | **{r['archive_ratio']:.3f}** | "
                   f"{rel('zstd19')} | {rel('jxl_plain')} | {rel('lepton')} | {rel('archive_e7')} | {enc} | "
                   f"{r['reads_archive']['tiles_per_s']:,.0f} | {r['reads_passthrough']['tiles_per_s']:,.0f} |")
    agg = a.get("aggregate_shared")
    if agg:
        e7 = f", archive at effort 7 {agg['archive_e7_saving']:.1%}" if "archive_e7_saving" in agg else ""
        out += ["", (f"Aggregate over the shared JPEG slides ({', '.join(agg['slides'])}): archive saves "
                     f"**{agg['archive_saving']:.1%}** of the scanner's JPEG bytes; anchors: zstd-19 "
                     f"{agg['zstd19_saving']:.1%}, plain JPEG XL {agg['jxl_plain_saving']:.1%}, Lepton "
                     f"{agg['lepton_saving']:.1%}{e7}.")]
    return out + [""]


def _table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        out.append("| " + " | ".join(_cell(row.get(c), c) for c in cols) + " |")
    return out


def _cell(v: Any, column: str = "") -> str:
    if isinstance(v, float):
        precise = any(k in column for k in ("bits", "bpp", "size", "ratio", "/ source"))
        return f"{v:.3f}" if precise else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def generic_section(title: str, data: dict[str, Any]) -> list[str]:
    """A section for JSON written as ``{"description": str, "tables": {name: {"columns": [...], "rows": [...]}}}``."""
    out = [f"## {title}", ""]
    if data.get("description"):
        out += [data["description"], ""]
    for name, t in data.get("tables", {}).items():
        out += [f"### {name}", ""] + _table(t["rows"], t["columns"]) + [""]
    if data.get("targets_markdown"):  # bench_codec.py: the targets over its runs
        out += [str(data["targets_markdown"]).rstrip(), ""]
    return out


def codec_plot(data: dict[str, Any]) -> list[str]:
    """Size against decode speed of every codec in every table of ``codec.json`` (one panel per table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = data.get("tables", {})
    if not tables:
        return []
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    names = list(dict.fromkeys(str(r["codec"]) for t in tables.values() for r in t["rows"]))
    style = {n: (f"C{i % 10}", "o" if n.startswith("csp") else "s") for i, n in enumerate(names)}
    fig, axes = plt.subplots(1, len(tables), figsize=(4.0 * len(tables) + 1.6, 3.6), squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items()):
        for row in t["rows"]:
            color, marker = style[str(row["codec"])]
            ax.scatter([row["decode MP/s"]], [row["bits/pixel"]], s=30, color=color, marker=marker,
                       label=str(row["codec"]))
        ax.set_xscale("log")
        ax.set_xticks([10, 30, 100, 300, 1000])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("decode MP/s, one core (log scale)")
        ax.set_ylabel("bits per pixel (lower is better)")
        ax.set_title(name.split(",")[0], fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (4.0 * len(tables) + 1.6), 1))
    fig.savefig(os.path.join(IMG, "codec.png"), dpi=110)
    plt.close(fig)
    return ["![size against decode speed](img/codec.png)", ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(DOCS, "benchmarks.md"))
    args = ap.parse_args(argv)
    os.makedirs(IMG, exist_ok=True)
    lines = ["# Benchmarks", "",
             ("Generated by `python benchmarks/report.py` from the JSON in `benchmarks/results/`; rerun the "
             "benchmark scripts (`make bench`) and this script to refresh. Figures are one run on the "
             "development machine (2 cores, no GPU); ratios compare CSP and its peer in the same run."), ""]
    read = _load("read.json")
    if read:
        lines += read_section(read)
    conv = _load("convert.json")
    if conv:
        lines += convert_section(conv)
    arch = _load("archive.json")
    if arch and "rows" in arch:
        lines += archive_section(arch)
    for fname, title in (("codec.json", "Lossless pixel codec (`benchmarks/bench_codec.py`)"),):
        data = _load(fname)
        if data and "tables" in data:
            lines += generic_section(title, data) + codec_plot(data)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
