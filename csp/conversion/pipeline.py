"""Converting one slide: plan, stream tiles into shards, write metadata, verify, then complete."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csp.codecs import can_store, get_tile_codec
from csp.container import spec
from csp.container.pyramid import BandCascade, cut_band
from csp.container.reader import paint_region
from csp.container.spec import LevelLayout
from csp.container.stores import open_writer
from csp.container.writer import ContainerWriter, ShardedArrayWriter
from csp.conversion.deid import deidentified, scrub_source
from csp.conversion.metadata import build_attributes, source_identity
from csp.conversion.plan import LevelPlan, pixel_encoding_for, plan_levels
from csp.errors import CodecError, CorruptSlideError
from csp.readers.base import SlideReader

Progress = Callable[[str, int, int], None]  # (stage, done, total)

MASK_MAX_SIDE = 2048
MASK_SATURATION = 20
MASK_WHITE = 220


@dataclass
class ConversionResult:
    """Summary of one conversion."""

    source: str
    output: str
    reader: str
    levels: list[dict[str, Any]]
    associated: list[str]
    bytes_in: int
    bytes_out: int
    seconds: float
    verified: bool
    tiles: int = 0
    source_sha256: str | None = None
    deidentified: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (for reports)."""
        return dict(self.__dict__)


def _layout(p: LevelPlan, shard_tiles: int) -> LevelLayout:
    return LevelLayout.choose(p.width, p.height, p.channels, p.tile_width, p.tile_height, shard_tiles,
                              p.size_t, p.size_z)


def _codecs_json(p: LevelPlan) -> list[dict[str, Any]]:
    return get_tile_codec(p.encoding).zarr_codecs_json()


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    layout: str | None = None,
    overwrite: bool = False,
    shard_tiles: int = spec.DEFAULT_SHARD_TILES,
    build_pyramid: bool = True,
    verify: bool = True,
    deidentify: bool = False,
    progress: Progress | None = None,
    profile: str = "passthrough",
    pixel_codec: str = "csp",
    archive_effort: int | None = None,
) -> ConversionResult:
    """Convert a vendor slide into a CSP container.

    Parameters
    ----------
    src
        Source slide file (or folder for multi-file formats).
    dst
        Container path. ``*.csp`` (or ``*.zip``) gives the single-file layout, anything else a directory,
        unless ``layout`` (``"zip"`` / ``"dir"``) says otherwise.
    overwrite
        Replace an existing output.
    shard_tiles
        Tiles per shard side (a shard holds up to ``shard_tiles**2`` tiles).
    build_pyramid
        Build 2x levels below a single-level source.
    verify
        Re-read the written container and compare it with the source before completing it.
    deidentify
        Drop label and macro images and scrub identifying properties (``docs/deidentification.md``).
    profile
        ``"passthrough"`` stores source tile bytes unchanged; ``"archive"`` stores JPEG levels repacked
        losslessly with JPEG XL (codec ``jpeg_jxl``, see :mod:`csp.conversion.repack`).
    pixel_codec
        Lossless codec wherever pixels are stored (built levels, non-JPEG sources, mask, associated
        images): ``"csp"`` (CSP's own codec, ``docs/codec.md``; the smallest) or ``"zstd"`` (faster to
        decode, larger). Sample types other than uint8/uint16 always use zstd.
    archive_effort
        libjxl effort of the archive recompression, 1-10 (``None``: 9 where libjxl's encoder API is
        reachable, else 7). 9 saves ~1.5 percentage points more than 7 and encodes ~6x slower.

    Returns
    -------
    ConversionResult
        What was written, sizes and timings.

    Raises
    ------
    CspError
        Any problem with the source or the output; the destination is left untouched.
    """
    from csp.registry import open_source

    src, dst = os.fspath(src), os.fspath(dst)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    with open_source(src) as opened:
        reader = deidentified(opened) if deidentify else opened
        plans = plan_levels(reader, build_pyramid=build_pyramid, pixel_codec=pixel_codec)
        if profile != "passthrough":
            from csp.conversion.repack import profile_plans

            plans = profile_plans(reader, plans, profile, effort=archive_effort)
        store = open_writer(dst, layout=layout, overwrite=overwrite)
        try:
            writer = ContainerWriter(store)
            t = time.perf_counter()
            mask_pixels = _write_levels(reader, writer, plans, shard_tiles, progress)
            tissue = _write_mask(writer, mask_pixels, plans[mask_level(plans)], pixel_codec)
            assoc = _write_associated(reader, writer, pixel_codec)
            timings["write_tiles"] = time.perf_counter() - t
            t = time.perf_counter()
            source = source_identity(src, getattr(opened, "source_files", list)())
            if deidentify:
                source = scrub_source(source)
            timings["hash_source"] = time.perf_counter() - t
            attrs = build_attributes(reader, plans, assoc, source)
            attrs["csp"]["tissue"] = tissue
            if deidentify:
                attrs["csp"]["deidentified"] = reader.deid_record  # type: ignore[attr-defined]
            writer.write_metadata(attrs, group_paths=(spec.ASSOCIATED_GROUP, spec.MASKS_GROUP))
            store.seal()
            if verify:
                from csp.container.verify import verify_container

                t = time.perf_counter()
                report = verify_container(store.staging, reader=reader, require_complete=False,
                                          progress=progress, raise_on_error=False)
                if not report.ok:
                    raise CorruptSlideError(src, "conversion check failed (source tile damaged or write error): "
                                                 + "; ".join(report.problems[:10]))
                timings["verify"] = time.perf_counter() - t
            record = writer.completion_record({"source_sha256": source.get("sha256"), "verified": verify})
            store.commit({spec.COMPLETION_KEY: json.dumps(record, indent=1).encode()})
        except BaseException:
            store.abort()
            raise
    tiles = sum(r.tiles_written for r in writer.arrays.values())
    return ConversionResult(
        source=src, output=dst, reader=reader.name,
        levels=[{"index": p.index, "width": p.width, "height": p.height, "mode": p.mode,
                 "encoding": p.encoding.codec, "bytes": writer.arrays[spec.level_name(p.index)].bytes_written}
                for p in plans],
        associated=sorted(assoc), bytes_in=int(source["size"]), bytes_out=store.bytes_written,
        seconds=time.perf_counter() - t0, verified=verify, tiles=tiles, timings=timings,
        source_sha256=source.get("sha256"), deidentified=deidentify)


def mask_level(plans: list[LevelPlan]) -> int:
    """Level the tissue mask is computed from: the first no larger than ``MASK_MAX_SIDE`` (else the last)."""
    for p in plans:
        if max(p.width, p.height) <= MASK_MAX_SIDE:
            return p.index
    return plans[-1].index


def _write_levels(reader: SlideReader, writer: ContainerWriter, plans: list[LevelPlan], shard_tiles: int,
                  progress: Progress | None) -> np.ndarray:
    """Write every level; return the pixels of the :func:`mask_level` level."""
    built = [p for p in plans if p.mode == "built"]
    want = mask_level(plans)
    mask_bands: list[np.ndarray] = []
    sinks: dict[int, ShardedArrayWriter] = {
        p.index: writer.array(spec.level_name(p.index), _layout(p, shard_tiles), p.dtype, _codecs_json(p))
        for p in plans}
    cascade: BandCascade | None = None
    base_for_cascade = -1
    if built:
        base_for_cascade = built[0].index - 1
        built_codec = get_tile_codec(built[0].encoding)

        def sink(k: int, row: int, band: np.ndarray) -> None:
            p = plans[base_for_cascade + k]
            lay = _layout(p, shard_tiles)
            sinks[p.index].add_row(row, [built_codec.encode(t) for t in cut_band(band, lay)])
            if p.index == want:
                mask_bands.append(band)

        cascade = BandCascade(len(built), sink)
    total = sum(_layout(p, shard_tiles).tiles_down * p.size_t * p.size_z for p in plans if p.mode != "built")
    done = 0
    for p in plans:
        if p.mode == "built":
            continue
        lay = _layout(p, shard_tiles)
        if lay.is_5d:
            done = _write_planes(reader, writer, sinks[p.index], p, lay, progress, done, total)
            continue
        store_codec = get_tile_codec(p.encoding)
        pack = None  # archive tier: source JPEG tiles repacked (not tiles that already are jpeg_jxl)
        if p.mode == "passthrough" and p.source_level is not None \
                and reader.levels[p.source_level].encoding.codec != p.encoding.codec:
            pack = getattr(store_codec, "pack", None)
        feed = cascade is not None and p.index == base_for_cascade
        src_level = p.source_level
        assert src_level is not None
        src_codec = get_tile_codec(reader.levels[src_level].encoding) if p.mode == "passthrough" else None
        shape = (p.tile_height, p.tile_width, p.channels)
        for row in range(lay.tiles_down):
            tiles: list[bytes | None] = []
            decoded: list[np.ndarray] = []
            for col in range(lay.tiles_across):
                if p.mode == "passthrough":
                    data = reader.read_tile_encoded(src_level, col, row)
                    tiles.append(data)
                    if feed:
                        decoded.append(_decode_source(reader, src_codec, data, shape, p, col, row))
                else:
                    pix = reader.read_tile(src_level, col, row)
                    tiles.append(store_codec.encode(pix))
                    if feed:
                        decoded.append(pix)
            if pack is not None:
                from csp.conversion.repack import pack_tiles

                tiles = pack_tiles(pack, tiles)
            sinks[p.index].add_row(row, tiles)
            if feed:
                assert cascade is not None
                band = np.concatenate(decoded, axis=1)[: min(p.tile_height, p.height - row * p.tile_height),
                                                       : p.width]
                cascade.push(band)
            done += 1
            if progress:
                progress("write", done, total)
    if cascade is not None:
        cascade.finish()
    for s in sinks.values():
        s.finish()
    if mask_bands:
        return np.concatenate(mask_bands, axis=0)
    p = plans[want]
    out = np.zeros((p.height, p.width, p.channels), np.dtype(p.dtype))
    assert p.source_level is not None
    return paint_region(out, 0, 0, p.width, p.height, p.tile_width, p.tile_height,
                        lambda c, r: reader.read_tile(p.source_level, c, r))


def _write_planes(reader: SlideReader, writer: ContainerWriter, first: ShardedArrayWriter, p: LevelPlan,
                  lay: LevelLayout, progress: Progress | None, done: int, total: int) -> int:
    """Write every ``(t, z)`` plane of a 5-D pixel level (format 1.1); return the updated row count."""
    if p.mode != "pixel" or p.source_level is None:
        raise ValueError(f"level {p.index}: 5-D levels are stored as pixels, not {p.mode}")
    codec = get_tile_codec(p.encoding)
    path = spec.level_name(p.index)
    for t, z in lay.planes:
        sink = first if (t, z) == (0, 0) else writer.plane(path, t, z)
        for row in range(lay.tiles_down):
            sink.add_row(row, [codec.encode(reader.read_tile(p.source_level, col, row, t=t, z=z))  # type: ignore[call-arg]
                               for col in range(lay.tiles_across)])
            done += 1
            if progress:
                progress("write", done, total)
        sink.finish()
    return done


def _write_mask(writer: ContainerWriter, pixels: np.ndarray, level: LevelPlan,
                pixel_codec: str = "csp") -> dict[str, Any]:
    from csp.native import tissue_mask

    mask = tissue_mask(pixels, MASK_SATURATION, MASK_WHITE)
    h, w = mask.shape
    enc = pixel_encoding_for("uint8", pixel_codec)
    codec = get_tile_codec(enc)
    sink = writer.array(spec.TISSUE_MASK_PATH, LevelLayout(w, h, 1, w, h, 1, 1), "uint8",
                        codec.zarr_codecs_json())
    sink.add_row(0, [codec.encode(np.ascontiguousarray(mask[:, :, None]))])
    sink.finish()
    return {"path": spec.TISSUE_MASK_PATH, "level": level.index, "width": w, "height": h,
            "downsample": list(level.downsample), "method": "csp.tissue.v1",
            "saturation": MASK_SATURATION, "white": MASK_WHITE,
            "encoding": {"codec": enc.codec, "config": dict(enc.config)},
            "tissue_fraction": round(float(mask.mean()), 6) if mask.size else 0.0}


def _decode_source(reader: SlideReader, codec: Any, data: bytes | None, shape: tuple[int, int, int],
                   p: LevelPlan, col: int, row: int) -> np.ndarray:
    if data is None:
        return np.zeros(shape, dtype=p.dtype)
    try:
        return codec.decode(data, shape, np.dtype(p.dtype))
    except CodecError as exc:
        raise CorruptSlideError(reader.source_path,
                                f"level {p.source_level} tile ({col}, {row}) does not decode: {exc.detail}") from exc


def _b64(data: bytes | None) -> Any:
    return None if data is None else spec.encode_config({"v": data})["v"]


def _write_associated(reader: SlideReader, writer: ContainerWriter, pixel_codec: str = "csp") -> dict[str, Any]:
    """Store associated images: JPEG strips passed through where the reader serves them, else pixels."""
    out: dict[str, Any] = {}
    for name in sorted(reader.associated):
        path = f"{spec.ASSOCIATED_GROUP}/{name}"
        src = reader.associated_layout(name)
        if src is not None and can_store(src.encoding):
            lay = LevelLayout.choose(src.width, src.height, src.channels, src.tile_width, src.tile_height)
            enc, mode = src.encoding, "passthrough"
            sink = writer.array(path, lay, src.dtype, get_tile_codec(enc).zarr_codecs_json())
            for row in range(lay.tiles_down):
                sink.add_row(row, [reader.read_associated_encoded(name, col, row)
                                   for col in range(lay.tiles_across)])
            w, h, c = src.width, src.height, src.channels
        else:
            img = reader.read_associated(name)
            if img.ndim == 2:
                img = img[:, :, None]
            h, w, c = img.shape
            lay = LevelLayout(w, h, c, w, h, 1, 1)
            enc, mode = pixel_encoding_for(str(img.dtype), pixel_codec), "pixel"
            codec = get_tile_codec(enc)
            sink = writer.array(path, lay, str(img.dtype), codec.zarr_codecs_json())
            sink.add_row(0, [codec.encode(np.ascontiguousarray(img))])
        sink.finish()
        out[name] = {"path": path, "width": w, "height": h, "channels": c, "mode": mode,
                     "source": reader.associated[name].source_tag,
                     "icc_profile": _b64(reader.associated[name].icc_profile),
                     "encoding": {"codec": enc.codec, "config": spec.encode_config(enc.config)}}
    return out
