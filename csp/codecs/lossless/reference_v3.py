"""Pure NumPy/Python reference of bitstream version 3 of the CSP lossless codec (defines it).

Version 3 (``docs/codec.md`` §9) keeps version 1's whole model (:mod:`.reference`, reused here: colour
transform, predictors, shifts, tokens, contexts, context mode and frequency tables) and changes only the
layout and the order in which symbols enter the entropy coder, so that 32 samples can be decoded at
once:

* ``L = min(32, max(1, W // 2))`` lanes per plane; lane ``k`` codes the rows ``k, k + L, ...`` in raster
  order, running two samples behind lane ``k - 1`` (a wavefront: the samples of one step never depend
  on each other);
* 32 rANS states (lane ``k`` uses state ``k``, carried over from plane to plane) share one 16-bit
  word stream for the whole tile;
* the raw low bits of a token are coded as a uniform symbol in the lane's rANS state (no bit stream):
  in every step, first the tokens of all active lanes, then their raw bits.

Layout: ``header (20) | C x 4-byte descriptors | u32 table bytes T | u32 word bytes N | crc32 | tables |
32 x u32 lane states | words``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from csp.codecs.lossless import reference as v1
from csp.codecs.lossless.reference import (
    HEADER,
    MAGIC,
    N_CTX,
    N_PRED,
    PROB_BITS,
    RANS_L,
    TOTAL,
    XFORM_RCT,
    BitReader,
    PlaneAnalysis,
)
from csp.errors import CodecError

__all__ = ["VERSION", "Header", "WordReader", "decode", "encode", "get_bits", "lane_count", "parse_header", "put_bits",
           "put_token", "schedule"]

VERSION = 3
LANES = 32  #: rANS states of a tile (lanes 0..31)
DESC = struct.Struct("<BBBB")  #: predictor, context mode, ashift, lshift
LENGTHS = struct.Struct("<II")  #: table bytes T, word bytes N
STATES = struct.Struct(f"<{LANES}I")  #: final encoder states of lanes 0..31

Step = list[tuple[int, int, int]]  #: the active lanes of one step: ``(k, y, x)`` in increasing ``k``


def lane_count(w: int) -> int:
    """Number of lanes ``L = min(32, max(1, W div 2))`` of a plane ``w`` samples wide."""
    return min(LANES, max(1, w // 2))


def schedule(h: int, w: int) -> list[Step]:
    """The steps of a ``(h, w)`` plane in decoding order.

    Lane ``k`` codes rows ``k, k + L, ...``; its ``q``-th sample is ``(k + L * (q // w), q % w)`` and it is
    coded at step ``t = 2k + q``. Step ``t`` lists the active lanes in increasing ``k``.
    """
    n_lanes = lane_count(w)
    counts = [len(range(k, h, n_lanes)) * w for k in range(n_lanes)]  # samples of lane k
    n_steps = max(2 * k + n for k, n in enumerate(counts) if n)
    steps: list[Step] = []
    for t in range(n_steps):
        step: Step = []
        for k in range(n_lanes):
            q = t - 2 * k
            if 0 <= q < counts[k]:
                step.append((k, k + n_lanes * (q // w), q % w))
        steps.append(step)
    return steps


# --------------------------------------------------------------------------- rANS primitives
def put_token(x: int, freq: int, start: int, pushed: list[int]) -> int:
    """Encoder side of a token of frequency ``freq`` and cumulative ``start`` (phase A): renormalise
    (push ``x & 0xFFFF`` to ``pushed`` if ``x >= freq << 21``), then code it; returns the new state."""
    if x >= ((RANS_L >> PROB_BITS) << 16) * freq:  # = freq << 21
        pushed.append(x & 0xFFFF)
        x >>= 16
    return ((x // freq) << PROB_BITS) + (x % freq) + start


def put_bits(x: int, value: int, n: int, pushed: list[int]) -> int:
    """Encoder side of the ``n`` low bits of ``value`` as a uniform symbol (phase B, ``0 <= n <= 16``)."""
    if n == 0:
        return x
    if x >= 1 << (32 - n):
        pushed.append(x & 0xFFFF)
        x >>= 16
    return (x << n) | (value & ((1 << n) - 1))


class WordReader:
    """The shared 16-bit word stream of a tile, read in decoding order."""

    def __init__(self, words: tuple[int, ...]) -> None:
        self.words = words
        self.pos = 0

    def renorm(self, x: int) -> int:
        """``x`` after the decoder's renormalisation: below 2^16 it takes the next word."""
        if x >= RANS_L:
            return x
        if self.pos >= len(self.words):
            raise CodecError(None, "truncated csp rANS word stream")
        x = (x << 16) | self.words[self.pos]
        self.pos += 1
        return x


def get_bits(x: int, n: int, reader: WordReader) -> tuple[int, int]:
    """Decoder side of :func:`put_bits`: ``(the n raw bits, new state)``."""
    if n == 0:
        return 0, x
    return x & ((1 << n) - 1), reader.renorm(x >> n)


# --------------------------------------------------------------------------- encoder
def _analyze_tile(arr: np.ndarray) -> tuple[int, list[PlaneAnalysis]]:
    """Version 1's model of every plane of a checked tile: ``(transform, analyses)``."""
    is16 = arr.dtype == np.uint16
    maxv = 65535 if is16 else 255
    xform = v1.choose_transform(arr)
    analyses: list[PlaneAnalysis] = []
    for i, plane in enumerate(v1.forward_transform(arr, xform)):
        cross = analyses[0].abs_e if (xform >= XFORM_RCT and i > 0) else None
        analyses.append(v1.analyze_plane(plane, *v1._plane_range(xform, i, maxv), is16, cross))
    return xform, analyses


def _encode_symbols(analyses: list[PlaneAnalysis], h: int, w: int) -> tuple[list[int], list[int]]:
    """rANS-code every plane's tokens and raw bits backwards; ``(final lane states, words)`` with the
    words in decoding order."""
    states = [RANS_L] * LANES
    pushed: list[int] = []
    steps = schedule(h, w)
    for an in reversed(analyses):
        ctx, tok, u, nbits = an.ctx, an.tok, an.u, an.nbits
        for step in reversed(steps):
            for k, y, x in reversed(step):  # phase B: raw bits as a uniform n-bit symbol
                states[k] = put_bits(states[k], int(u[y, x]), int(nbits[y, x]), pushed)
            for k, y, x in reversed(step):  # phase A: the token in its context
                c, s = int(ctx[y, x]), int(tok[y, x])
                states[k] = put_token(states[k], an.tables[c][s], an.starts[c][s], pushed)  # type: ignore[index]
    pushed.reverse()
    return states, pushed


def encode(tile: np.ndarray) -> bytes:
    """Encode a ``(H, W, C)`` or ``(H, W)`` uint8/uint16 tile in bitstream version 3 (reference).

    The model decisions (transform, predictor, context mode, shifts, tables) are exactly version 1's.
    """
    arr = v1.check_tile(tile)
    h, w, c = arr.shape
    xform, analyses = _analyze_tile(arr)
    states, words = _encode_symbols(analyses, h, w)
    tables = b"".join(an.table_bytes for an in analyses)
    head = (HEADER.pack(MAGIC, VERSION, 2 if arr.dtype == np.uint16 else 1, xform, 0, h, w, c, 0)
            + b"".join(DESC.pack(an.kind, an.mode, an.ashift, an.lshift) for an in analyses)
            + LENGTHS.pack(len(tables), 2 * len(words)))
    return (head + struct.pack("<I", zlib.crc32(head)) + tables + STATES.pack(*states)
            + struct.pack(f"<{len(words)}H", *words))


# --------------------------------------------------------------------------- decoder
@dataclass(frozen=True)
class Header:
    """A parsed and validated version-3 header (see :func:`parse_header`)."""

    shape: tuple[int, int, int]  #: ``(H, W, C)``
    dtype: np.dtype  #: uint8 or uint16
    xform: int  #: colour transform (0 = none, 1 + k = RCT)
    descs: list[tuple[int, int, int, int]]  #: per plane ``(predictor, context mode, ashift, lshift)``
    table_pos: int  #: offset of the tables
    table_len: int  #: their size T
    states: list[int]  #: the 32 initial decoder states (lanes 0..31)
    words_pos: int  #: offset of the word stream
    words_len: int  #: its size N in bytes


def parse_header(data: bytes | bytearray | memoryview) -> Header:
    """Validate a version-3 stream's header and layout; raises :class:`CodecError` on any problem.

    Checks the magic, version byte 3, CRC-32, zero reserved bytes, dtype code, transform (RCT only with
    C = 3), shape, plane descriptors, even word length, the exact total length and lane states >= 2^16.
    """
    raw = bytes(data)
    mv, (h, w, c), dcode, xform, pos = v1.check_header(raw, VERSION, DESC, strict_reserved=True,
                                                        trailer=LENGTHS.size)
    descs = [DESC.unpack_from(mv, HEADER.size + DESC.size * i) for i in range(c)]
    for kind, mode, ashift, lshift in descs:
        if kind >= N_PRED or mode > 1 or ashift > 15 or lshift > 15:
            raise CodecError(None, "csp stream header has an invalid plane descriptor")
    tlen, nlen = LENGTHS.unpack_from(mv, HEADER.size + DESC.size * c)
    if nlen % 2:
        raise CodecError(None, f"csp stream header has an odd word-stream length {nlen}")
    total = pos + tlen + STATES.size + nlen
    if total != len(raw):
        raise CodecError(None, f"csp stream is {len(raw)} bytes, its header describes {total}")
    states = list(STATES.unpack_from(raw, pos + tlen))
    if min(states) < RANS_L:
        raise CodecError(None, "csp stream has an invalid rANS lane state (below 2^16)")
    dtype = np.dtype(np.uint16) if dcode == 2 else np.dtype(np.uint8)  # DTYPES[dcode], typed
    return Header((h, w, c), dtype, xform, descs, pos, tlen, states, pos + tlen + STATES.size, nlen)


def decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a version-3 stream to its ``(H, W, C)`` tile (reference implementation)."""
    raw = bytes(data)
    hd = parse_header(raw)
    h, w, _ = hd.shape
    maxv = 65535 if hd.dtype == np.uint16 else 255
    br = BitReader(raw[hd.table_pos:hd.table_pos + hd.table_len], "csp frequency tables")
    plane_tables = []
    for desc in hd.descs:
        plane_tables.append(v1.decoding_tables(v1.read_tables_from(br, N_CTX[desc[1]])))
        br.pos = (br.pos + 7) & ~7  # every plane's tables start at a byte boundary
    br.check_end()
    reader = WordReader(struct.unpack_from(f"<{hd.words_len // 2}H", raw, hd.words_pos))
    states = list(hd.states)
    steps = schedule(h, w)
    planes: list[np.ndarray] = []
    err0: np.ndarray | None = None
    for i, desc in enumerate(hd.descs):
        freqs, starts, luts = plane_tables[i]
        cross = err0 if (hd.xform >= XFORM_RCT and i > 0) else None
        model = v1.SampleModel(h, w, desc, *v1._plane_range(hd.xform, i, maxv), cross)
        for step in steps:
            pending = []
            for k, y, x in step:  # phase A: tokens
                cx = model.context(y, x)
                st = states[k]
                slot = st & (TOTAL - 1)
                s = luts[cx[0]][slot]
                states[k] = reader.renorm(freqs[cx[0]][s] * (st >> PROB_BITS) + slot - starts[cx[0]][s])
                pending.append((s, cx))
            for (k, y, x), (s, cx) in zip(step, pending):  # phase B: raw bits, then the sample
                bits, states[k] = get_bits(states[k], v1.token_extra_bits(s), reader)
                uu = v1.u_of_token(s, bits)
                model.store(y, x, (uu >> 1) ^ -(uu & 1), cx)
        plane, err = model.result()
        err0 = err if i == 0 else err0
        planes.append(plane)
    if any(st != RANS_L for st in states) or reader.pos != len(reader.words):
        raise CodecError(None, "corrupt csp rANS stream (final lane states or unused words)")
    chans = v1.inverse_transform(planes, hd.xform)
    if any(ch.min() < 0 or ch.max() > maxv for ch in chans):
        raise CodecError(None, "corrupt csp stream: colour transform leaves the sample range")
    return np.stack(chans, axis=-1).astype(hd.dtype)
