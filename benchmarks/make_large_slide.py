"""Build a large, realistic Aperio-style SVS from the real JPEG tiles of the bundled sample.

Level 0 is a mosaic of the scanner's own 240 x 240 JPEG tiles of ``data/CMU-1-Small-Region.svs``
(bytes copied unchanged, shared JPEGTables, coded in RGB exactly like the scanner wrote them), chosen
per position by a seeded random generator so neighbouring tiles differ. Levels with downsample 4, 16
and 64 are what Aperio stores below level 0; here they are the 4x-mean-downsampled mosaic, re-encoded
as RGB-coded JPEG. A thumbnail, the sample's label (LZW) and macro (JPEG) complete the file, in
Aperio's page order, so OpenSlide, tiffslide and CSP all read it as an Aperio slide.

The file is cached: a rebuild happens only when the size/seed stamp differs.

Usage::

    python benchmarks/make_large_slide.py OUT.svs [--size 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator

import imagecodecs
import numpy as np
import tifffile

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(os.path.dirname(HERE), "data", "CMU-1-Small-Region.svs")
TILE = 240
QUALITY = 70
FORMAT_STAMP = "v2"


def _source_tiles(sample: str) -> tuple[list[bytes], list[np.ndarray], bytes, str, np.ndarray, np.ndarray]:
    """Level-0 tile bytes and decoded full tiles, JPEGTables, description, label and macro of the sample."""
    with tifffile.TiffFile(sample) as tf, open(sample, "rb") as fh:
        page = tf.pages[0]
        if page.tilewidth != TILE or page.tilelength != TILE:
            raise SystemExit(f"{sample}: expected {TILE}px tiles, found {page.tilewidth}")
        raw: list[bytes] = []
        decoded: list[np.ndarray] = []
        for i, (off, n) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):
            fh.seek(off)
            data = fh.read(n)
            raw.append(data)
            tile, _, _ = page.decode(data, i, jpegtables=page.jpegtables)
            decoded.append(np.asarray(tile).reshape(TILE, TILE, 3))
        label = next(p for p in tf.pages if "label" in (p.description or "")).asarray()
        macro = next(p for p in tf.pages if "macro" in (p.description or "")).asarray()
        return raw, decoded, bytes(page.jpegtables), page.description, label, macro


def _down4(img: np.ndarray) -> np.ndarray:
    """Mean of 4x4 blocks (image sides must be multiples of 4)."""
    h, w, c = img.shape
    return img.reshape(h // 4, 4, w // 4, 4, c).mean(axis=(1, 3)).round().astype(np.uint8)


def _encode_rgb(tile: np.ndarray) -> bytes:
    """A full JPEG coded in RGB (no colour transform), like Aperio's lower levels."""
    return imagecodecs.jpeg8_encode(tile, level=QUALITY, colorspace="RGB", outcolorspace="RGB")


def _tiles_of(image: np.ndarray) -> Iterator[bytes]:
    h, w, _ = image.shape
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            block = np.zeros((TILE, TILE, 3), np.uint8)
            part = image[y:y + TILE, x:x + TILE]
            block[:part.shape[0], :part.shape[1]] = part
            yield _encode_rgb(block)


def _description(template: str, size: int, header: str) -> str:
    """Aperio ImageDescription: a first line of geometry, then the sample's ``|key = value`` pairs."""
    keys = template.split("|", 1)[1] if "|" in template else "AppMag = 20|MPP = 0.499"
    return f"Aperio Image Library v12.0.15 \r\n{header}|{keys}"


def make_large_slide(out: str, size: int = 50_000, *, seed: int = 20261125, sample: str = SAMPLE) -> str:
    """Write (or reuse) a ``size`` x ``size`` pyramidal SVS built from real JPEG tiles.

    Parameters
    ----------
    out
        Output ``.svs`` path; a ``.stamp`` file beside it records how it was built.
    size
        Level-0 width and height in pixels.
    seed
        Seed of the tile mosaic.

    Returns
    -------
    str
        ``out``.
    """
    stamp_path = out + ".stamp"
    stamp = f"{FORMAT_STAMP} size={size} seed={seed} sample={os.path.getsize(sample)}"
    if os.path.exists(out) and os.path.exists(stamp_path):
        with open(stamp_path) as fh:
            if fh.read() == stamp:
                return out
    t0 = time.perf_counter()
    raw, decoded, tables, description, label, macro = _source_tiles(sample)
    across = down = -(-size // TILE)
    rng = np.random.default_rng(seed)
    choice = rng.integers(0, len(raw), size=(down, across))

    # Levels below 0 come from a 4x-downsampled copy of each source tile, stitched per position.
    small = [_down4(t) for t in decoded]  # 60 x 60 each
    level1 = np.zeros((down * TILE // 4, across * TILE // 4, 3), np.uint8)
    q = TILE // 4
    for r in range(down):
        for c in range(across):
            level1[r * q:(r + 1) * q, c * q:(c + 1) * q] = small[choice[r, c]]
    level1 = level1[: size // 4, : size // 4]
    level2 = _down4(level1[: level1.shape[0] // 4 * 4, : level1.shape[1] // 4 * 4])
    level3 = _down4(level2[: level2.shape[0] // 4 * 4, : level2.shape[1] // 4 * 4])
    thumb_step = max(1, level3.shape[1] // 768)
    thumbnail = np.ascontiguousarray(level3[::thumb_step, ::thumb_step])

    tmp = out + ".partial"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        tw.write(
            (raw[i] for i in choice.ravel()), shape=(size, size, 3), dtype=np.uint8, tile=(TILE, TILE),
            compression="jpeg", compressionargs={"outcolorspace": "RGB"}, subsampling=(1, 1),
            photometric="rgb", jpegtables=tables, subfiletype=0,
            description=_description(description, size, f"{size}x{size} [0,0 {size}x{size}] "
                                     f"({TILE}x{TILE}) JPEG/RGB Q={QUALITY}"),
            metadata=None)
        tw.write(thumbnail, photometric="rgb", compression="jpeg", compressionargs={"level": QUALITY, "outcolorspace": "RGB"},
                 subsampling=(1, 1), subfiletype=0,
                 description=_description(description, size, f"{size}x{size} -> "
                                          f"{thumbnail.shape[1]}x{thumbnail.shape[0]} - "), metadata=None)
        for img in (level1, level2, level3):
            h, w, _ = img.shape
            tw.write(_tiles_of(img), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE), compression="jpeg",
                     compressionargs={"outcolorspace": "RGB"}, subsampling=(1, 1),
                     photometric="rgb", subfiletype=0, metadata=None,
                     description=_description(description, size, f"{size}x{size} [0,0 {w}x{h}] "
                                              f"({TILE}x{TILE}) -> {w}x{h} JPEG/RGB Q={QUALITY}"))
        tw.write(label, photometric="rgb", compression="lzw", subfiletype=1, metadata=None,
                 description=f"Aperio Image Library v12.0.15 \nlabel {label.shape[1]}x{label.shape[0]}")
        tw.write(macro, photometric="rgb", compression="jpeg", compressionargs={"level": QUALITY, "outcolorspace": "RGB"},
                 subsampling=(1, 1), subfiletype=9, metadata=None,
                 description=f"Aperio Image Library v12.0.15 \nmacro {macro.shape[1]}x{macro.shape[0]}")
    os.replace(tmp, out)
    with open(stamp_path, "w") as fh:
        fh.write(stamp)
    print(f"built {out}: {size}x{size}, {os.path.getsize(out) / 1e6:.0f} MB in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args(argv)
    make_large_slide(args.out, args.size, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
