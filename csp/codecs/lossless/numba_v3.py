"""Numba implementation of bitstream version 3 of the CSP lossless codec (``docs/codec.md`` §8).

Version 3 keeps version 1's whole model (colour transform, predictors, tokens, contexts, tables) and
changes only the layout and the order of the symbols: per plane, ``L = min(32, max(1, W div 2))``
wavefront lanes (lane ``k`` codes the rows ``k, k + L, ...``, two samples behind lane ``k - 1``), one
shared stream of 16-bit words for 32 rANS states, and the raw bits of each token folded into its
lane's rANS state. The encoder reuses version 1's Numba model (:func:`.numba_model._analyze_plane`), so
it takes exactly version 1's decisions, then packs each sample's rANS record (raster order) and runs the
backward pass step by step over the lanes. The decoder is :mod:`.numba_v3_decode` (each step's loops
over the 32 lanes written for LLVM to vectorise). Kernels are compiled on first use (cached on disk),
release the GIL and keep no global state.
"""

from __future__ import annotations

import struct
import zlib

import numba as nb
import numpy as np

from csp.codecs.lossless.numba_codec import (
    _ACT0,
    _ACT1,
    _E_SIZE,
    _JIT,
    _LVL,
    _MAX_CTX,
    _MESSAGES,
    _analyze_plane,
    _choose_xform,
    _fill_plane,
    _plane_range,
)
from csp.codecs.lossless.numba_v2 import _TOK_NB
from csp.codecs.lossless.numba_v3_decode import decode as _decode
from csp.codecs.lossless.numba_v3_decode import lane_count
from csp.codecs.lossless.reference import (
    HEADER,
    MAGIC,
    NTOK,
    PROB_BITS,
    RANS_L,
    check_tile,
)
from csp.errors import CodecError

__all__ = ["LANES", "VERSION", "decode", "encode", "lane_count", "parse_header"]

VERSION = 3
LANES = 32  #: rANS states of a tile (lanes 0..L-1 of each plane use states 0..L-1)
DESC = struct.Struct("<BBBB")  #: predictor, context mode, ashift, lshift
LENGTHS = struct.Struct("<II")  #: table bytes T, word bytes N
STATES = struct.Struct(f"<{LANES}I")
#: upper bound of one plane's table bytes: 30 contexts x (1 + 7 + 76 x (3 + 4 + 1)) bits
_TABLE_MAX = (30 * (8 + NTOK * 8) + 7) // 8


@nb.njit(**_JIT)
def _lane_ends(h, w, nl):
    """ends[k] = first step after lane k's last sample (2k + n_k * w; 0 for a lane without rows)."""
    ends = np.zeros(LANES, np.int64)
    for k in range(min(nl, h)):
        ends[k] = 2 * k + ((h - k + nl - 1) // nl) * w
    return ends


# ----------------------------------------------------------------------------- encoder
@nb.njit(**_JIT)
def _plane_records(tok, ctx, uu, freq, start, tnb, recs):
    """rANS record of every sample of a plane (raster order): ``freq | start << 12 | raw-bit count << 24
    | raw bits << 32`` of its token in its context."""
    fs = np.empty(_MAX_CTX * NTOK, np.int64)
    for k in range(_MAX_CTX):
        for s in range(NTOK):
            fs[k * NTOK + s] = freq[k, s] | (start[k, s] << 12) | (tnb[s] << 24)
    for i in range(tok.size):
        r = fs[np.int64(ctx[i]) * NTOK + np.int64(tok[i])]
        recs[i] = r | ((uu[i] & ((np.int64(1) << (r >> 24)) - 1)) << 32)


@nb.njit(error_model="numpy", **_JIT)
def _rans_backward(recs, h, w, xs, words, wp):
    """Backward rANS pass of one plane (recs: its samples' records from _plane_records) over the
    version-3 schedule: lane k codes the rows k, k + L, ... and is at step t on sample t - 2k of its
    sequence. Per step (last to first), every active lane pushes its raw bits, then every active lane
    its token; the 16-bit words a lane flushes go to words[.. wp] in the order lanes L-1 .. 0 of each
    phase. Each lane walks its samples backward with a cursor (raster index, column). The state updates
    are branch-free loops over the lanes (an inactive lane gets a zero record and keeps its state); the
    quotient by the frequency is a float division (exact for states below 2**32). words must have at
    least 64 free entries below the lowest word written. Returns the new wp, -1 if words is too small.
    """
    nl = lane_count(w)
    ends = _lane_ends(h, w, nl)
    nsteps = ends.max()
    fsh = 32 - PROB_BITS  # a token flushes when x >= ((RANS_L >> PROB_BITS) << 16) * freq
    ci = np.zeros(LANES, np.int64)  # raster index of the lane's next sample (backward)
    cx = np.zeros(LANES, np.int64)  # its column
    for k in range(min(nl, h)):
        ci[k] = (k + ((h - k + nl - 1) // nl - 1) * nl) * w + w - 1
        cx[k] = w - 1
    rec = np.zeros(LANES, np.int64)
    wv = np.zeros(LANES, np.int64)
    fl = np.zeros(LANES, np.int64)
    jump = (nl - 1) * w + 1
    for t in range(nsteps - 1, -1, -1):
        for k in range(nl):  # the lanes' records
            if t < ends[k] and t >= 2 * k:
                i = ci[k]
                rec[k] = recs[i]
                if cx[k] == 0:
                    cx[k] = w - 1
                    ci[k] = i - jump
                else:
                    cx[k] -= 1
                    ci[k] = i - 1
            else:
                rec[k] = 0
        for k in range(nl):  # phase B: raw bits
            r = rec[k]
            nbits = (r >> 24) & 0xFF
            x = xs[k]
            f = x >= (np.int64(1) << (32 - nbits))
            wv[k] = x & 0xFFFF
            fl[k] = f
            x = (x >> 16) if f else x
            xs[k] = (x << nbits) | (r >> 32)
        for k in range(nl - 1, -1, -1):
            words[wp - 1] = wv[k]
            wp -= fl[k]
        for k in range(nl):  # phase A: tokens
            r = rec[k]
            fq = r & 0xFFF
            x = xs[k]
            act = fq != 0
            f = act & (x >= (fq << fsh))
            wv[k] = x & 0xFFFF
            fl[k] = f
            x = (x >> 16) if f else x
            fd = max(fq, 1)
            q = np.int64(np.float64(x) / np.float64(fd))
            rem = np.int64(np.uint32(np.uint32(x) - np.uint32(np.uint32(q) * np.uint32(fd))))  # x % fd
            xn = (q << PROB_BITS) + rem + ((r >> 12) & 0xFFF)
            xs[k] = xn if act else x
        for k in range(nl - 1, -1, -1):
            words[wp - 1] = wv[k]
            wp -= fl[k]
        if wp < 64:
            return -1
    return wp


@nb.njit(**_JIT)
def _encode_kernel(src, maxv, act0, act1, lvlt, tnb, descs, tbuf, words, states):
    """Model of every plane (version 1's), then the backward rANS pass over the version-3 schedule.

    Returns (table bytes, index of the first word in ``words``, colour transform); table bytes -1 if a
    buffer is too small."""
    h, w, c = src.shape
    n = h * w
    P = np.zeros((h + 1, w + 2), np.int32)
    xform = _choose_xform(src, P, maxv)
    E = np.zeros((h + 1, w + 2), np.int32)
    E0 = np.zeros((h + 1, w + 2), np.int32)
    tok = np.empty(n, np.uint8)
    ctx = np.empty(n, np.uint8)
    uu = np.empty(n, np.int64)
    freq = np.zeros((_MAX_CTX, NTOK), np.int64)
    start = np.zeros((_MAX_CTX, NTOK), np.int64)
    recs = np.empty((c, n), np.int64)
    tpos = 0
    for pl in range(c):
        _fill_plane(src, xform, pl, P)
        lo, hi = _plane_range(xform, pl, maxv)
        tl = _analyze_plane(P, h, w, lo, hi, maxv > 255, act0, act1, lvlt, E0 if pl == 0 else E, E0,
                            xform >= 1 and pl > 0, tok, ctx, uu, tbuf[tpos:], freq, start, descs[pl])
        if tl < 0:
            return -1, 0, xform
        tpos += tl
        _plane_records(tok, ctx, uu, freq, start, tnb, recs[pl])
    xs = np.full(LANES, RANS_L, np.int64)
    wp = words.size
    for pl in range(c - 1, -1, -1):
        wp = _rans_backward(recs[pl], h, w, xs, words, wp)
        if wp < 0:
            return -1, 0, xform
    states[:] = xs
    return tpos, wp, xform


def encode(tile: np.ndarray) -> bytes:
    """Encode a ``(H, W, C)`` or ``(H, W)`` uint8/uint16 tile in bitstream version 3 (Numba).

    Raises
    ------
    CodecError
        Unsupported dtype or shape.
    """
    arr = np.ascontiguousarray(check_tile(tile))
    h, w, c = arr.shape
    is16 = arr.dtype == np.uint16
    descs = np.zeros((c, 5), np.int64)
    tbuf = np.empty(c * _TABLE_MAX, np.uint8)
    # at most one word per token and one per raw-bit group, plus the kernel's 64 spare entries
    words = np.empty(2 * h * w * c + 66, np.uint16)
    states = np.zeros(LANES, np.int64)
    tl, wp, xform = _encode_kernel(arr, 65535 if is16 else 255, _ACT0, _ACT1, _LVL, _TOK_NB, descs, tbuf,
                                   words, states)
    if tl < 0:  # pragma: no cover - the buffer bounds are exact upper bounds
        raise CodecError(None, _MESSAGES[_E_SIZE])
    nw = words.size - wp
    header = HEADER.pack(MAGIC, VERSION, 2 if is16 else 1, int(xform), 0, h, w, c, 0)
    header += b"".join(DESC.pack(*(int(v) for v in d[:4])) for d in descs)
    header += LENGTHS.pack(int(tl), 2 * nw)
    return b"".join((header, struct.pack("<I", zlib.crc32(header)), tbuf[:tl].tobytes(),
                     STATES.pack(*(int(v) for v in states)), words[wp:].astype("<u2", copy=False).tobytes()))


# ----------------------------------------------------------------------------- decoder
def parse_header(buf: np.ndarray) -> tuple[tuple[int, int, int], np.dtype, int, np.ndarray, int, int]:
    """Check a version-3 stream's header, descriptors, lengths, CRC, total length and lane states.

    Returns ``((H, W, C), dtype, transform, descriptors (C x 4 int64), table offset, T)``.

    Raises
    ------
    CodecError
        Another magic or version, a checksum mismatch, invalid fields, a wrong length or lane state.
    """
    from csp.codecs.lossless import reference_v3  # defines the header checks

    head = reference_v3.parse_header(memoryview(buf))
    descs = np.array(head.descs, np.int64).reshape(len(head.descs), 4)
    return head.shape, head.dtype, head.xform, descs, head.table_pos, head.table_len


def decode(data: bytes | bytearray | memoryview | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a version-3 stream to its ``(H, W, C)`` tile (:func:`.numba_v3_decode.decode`, the
    vectorised decoder).

    Raises
    ------
    CodecError
        The stream is corrupt, truncated, of another version, or does not fit ``out``.
    """
    return _decode(data, out)
