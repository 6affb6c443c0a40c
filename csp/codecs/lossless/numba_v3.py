"""Numba implementation of bitstream version 3 of the CSP lossless codec (``docs/codec.md`` §8).

Version 3 keeps version 1's whole model (colour transform, predictors, tokens, contexts, tables) and
changes only the layout and the order of the symbols: per plane, ``L = min(32, max(1, W div 2))``
wavefront lanes (lane ``k`` codes the rows ``k, k + L, ...``, two samples behind lane ``k - 1``), one
shared stream of 16-bit words for 32 rANS states, and the raw bits of each token folded into its
lane's rANS state. The encoder reuses version 1's Numba model (:func:`.numba_codec._analyze_plane`), so
it takes exactly version 1's decisions; the decoder works per plane as a loop over wavefront steps with
an inner loop over the lanes. Kernels are compiled on first use (cached on disk), release the GIL and
keep no global state.
"""

from __future__ import annotations

import struct
import zlib

import numba as nb
import numpy as np

from csp.codecs.lossless.numba_codec import (
    _ACT0,
    _ACT1,
    _E_DATA,
    _E_RANGE,
    _E_SIZE,
    _E_TABLE,
    _JIT,
    _LVL,
    _MAX_CTX,
    _MESSAGES,
    _NCTX0,
    _analyze_plane,
    _choose_xform,
    _fill_plane,
    _parse_tables,
    _plane_range,
    _predict,
    _store_rct_pixel,
)
from csp.codecs.lossless.numba_v2 import _TOK_BASE, _TOK_NB
from csp.codecs.lossless.reference import (
    HEADER,
    MAGIC,
    NTOK,
    PROB_BITS,
    RANS_L,
    TOTAL,
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
def lane_count(w: int) -> int:
    """Number of wavefront lanes ``L`` of a plane ``w`` samples wide."""
    return min(LANES, max(1, w // 2))


@nb.njit(**_JIT)
def _lane_ends(h, w, nl):
    """ends[k] = first step after lane k's last sample (2k + n_k * w; 0 for a lane without rows)."""
    ends = np.zeros(LANES, np.int64)
    for k in range(min(nl, h)):
        ends[k] = 2 * k + ((h - k + nl - 1) // nl) * w
    return ends


# ----------------------------------------------------------------------------- encoder
@nb.njit(**_JIT)
def _schedule(h, w, nl, ends, nsteps):
    """idx[t * nl + k] = raster index of the sample lane k codes at step t (-1 when inactive)."""
    idx = np.full(nsteps * nl, -1, np.int64)
    for k in range(nl):
        row = k
        col = 0
        for t in range(2 * k, ends[k]):
            idx[t * nl + k] = row * w + col
            col += 1
            if col == w:
                col = 0
                row += nl
    return idx


@nb.njit(**_JIT)
def _encode_kernel(src, maxv, act0, act1, lvlt, descs, tbuf, words, states):
    """Model of every plane (version 1's), then the backward rANS pass over the version-3 schedule.

    Returns (table bytes, index of the first word in ``words``, colour transform); table bytes -1 if a
    buffer is too small."""
    h, w, c = src.shape
    n = h * w
    P = np.zeros((h + 1, w + 2), np.int64)
    xform = _choose_xform(src, P, maxv)
    E = np.zeros((h + 1, w + 2), np.int64)
    E0 = np.zeros((h + 1, w + 2), np.int64)
    tok = np.empty(n, np.uint8)
    ctx = np.empty(n, np.uint8)
    uu = np.empty(n, np.int64)
    freq = np.zeros((_MAX_CTX, NTOK), np.int64)
    start = np.zeros((_MAX_CTX, NTOK), np.int64)
    # per sample of the tile (plane-major, raster order): frequency, start, raw-bit count, raw bits
    sf = np.empty(c * n, np.uint16)
    ss = np.empty(c * n, np.uint16)
    snb = np.empty(c * n, np.uint8)
    sraw = np.empty(c * n, np.uint16)
    tpos = 0
    for pl in range(c):
        _fill_plane(src, xform, pl, P)
        lo, hi = _plane_range(xform, pl, maxv)
        tl = _analyze_plane(P, h, w, lo, hi, maxv > 255, act0, act1, lvlt, E0 if pl == 0 else E, E0,
                            xform >= 1 and pl > 0, tok, ctx, uu, tbuf[tpos:], freq, start, descs[pl])
        if tl < 0:
            return -1, 0, xform
        tpos += tl
        base = pl * n
        for i in range(n):
            k = ctx[i]
            s = tok[i]
            nbits = 0 if s < 16 else (s - 16) // 4 + 2
            sf[base + i] = freq[k, s]
            ss[base + i] = start[k, s]
            snb[base + i] = nbits
            sraw[base + i] = uu[i] & ((1 << nbits) - 1)
    nl = lane_count(w)
    ends = _lane_ends(h, w, nl)
    nsteps = ends.max()
    idx = _schedule(h, w, nl, ends, nsteps)
    xs = np.full(LANES, RANS_L, np.int64)
    wp = words.size
    flim = (RANS_L >> PROB_BITS) << 16
    for pl in range(c - 1, -1, -1):
        base = pl * n
        for t in range(nsteps - 1, -1, -1):
            row = t * nl
            for k in range(nl - 1, -1, -1):  # phase B: raw bits
                i = idx[row + k]
                if i < 0:
                    continue
                nbits = np.int64(snb[base + i])
                if nbits:
                    x = xs[k]
                    if x >= (np.int64(1) << (32 - nbits)):
                        if wp == 0:
                            return -1, 0, xform
                        wp -= 1
                        words[wp] = x & 0xFFFF
                        x >>= 16
                    xs[k] = (x << nbits) | np.int64(sraw[base + i])
            for k in range(nl - 1, -1, -1):  # phase A: tokens
                i = idx[row + k]
                if i < 0:
                    continue
                f = np.int64(sf[base + i])
                x = xs[k]
                if x >= flim * f:
                    if wp == 0:
                        return -1, 0, xform
                    wp -= 1
                    words[wp] = x & 0xFFFF
                    x >>= 16
                xs[k] = ((x // f) << PROB_BITS) + (x % f) + np.int64(ss[base + i])
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
    words = np.empty(2 * h * w * c + 2, np.uint16)  # at most one word per token and one per raw-bit group
    states = np.zeros(LANES, np.int64)
    tl, wp, xform = _encode_kernel(arr, 65535 if is16 else 255, _ACT0, _ACT1, _LVL, descs, tbuf, words,
                                   states)
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


#: fields of a padded sample in the decoder's interleaved plane array (one cache line holds the
#: neighbours' values, |e| and the SEL/SEL3 predictor errors together)
_F_P, _F_E, _F_EM, _F_EA, _F_EG, _NF = 0, 1, 2, 3, 4, 5


@nb.njit(**_JIT)
def _clear_pads(Q, h, w):
    """Zero row -1 and the pad columns -1 and W of the padded interleaved plane Q (the decoder writes
    every other field before reading it)."""
    w2 = w + 2
    for i in range(w2 * _NF):
        Q[i] = 0
    for y in range(1, h + 1):
        for f in range(_NF):
            Q[(y * w2) * _NF + f] = 0
            Q[(y * w2 + w + 1) * _NF + f] = 0


@nb.njit(inline="always", **_JIT)
def _plane_steps(data, wpos, wend, xs, ent, tnb, tbase, desc, h, w, lo, hi, act0, act1, lvlt, Q, X, use_x,
                 kind):
    """Decode one plane into Q, the flat padded plane (row stride w + 2) of _NF interleaved int32 fields
    per sample: value, |e| and, for SEL/SEL3, |e| of MED/AVG4/GRAD; X is plane 0's Q (cross-plane |e|).
    xs holds the 32 lane states; words are read from data[wpos:wend]; ent is the flat decoding table
    (2048 entries per context); kind is the predictor, a constant at each (inlined) call site so that
    the per-sample predictor branches fold away. Returns (error code, word position).

    Array indices are cast to uint64 (all are non-negative) so that Numba drops its negative-index
    wraparound code from the hot loop.
    """
    mode, ash, lsh = desc[1], 1 + desc[2], desc[3]
    w2 = w + 2
    up = w2 * _NF  # one row up
    nl = lane_count(w)
    ends = _lane_ends(h, w, nl)
    nsteps = ends.max()
    full_from = 2 * (nl - 1)  # from this step until the first lane ends, every lane is active
    full_to = ends[:nl].min()
    lpi = np.empty(LANES, np.int64)  # Q index of the lane's next sample
    lcol = np.zeros(LANES, np.int64)
    ltok = np.zeros(LANES, np.int64)
    lp = np.zeros(LANES, np.int64)
    lpm = np.zeros(LANES, np.int64)
    lpa = np.zeros(LANES, np.int64)
    lpg = np.zeros(LANES, np.int64)
    for k in range(LANES):
        lpi[k] = ((k + 1) * w2 + 1) * _NF
    next_row = (nl * w2 - w + 1) * _NF  # from the last sample of a lane's row to its next row
    sel = kind >= 3
    wp = wpos
    for t in range(nsteps):
        khi = min(nl - 1, t >> 1)
        full = full_from <= t < full_to
        # phase A: prediction, context and token of every active lane
        for k in range(khi + 1):
            if not full and t >= ends[k]:
                continue
            i = lpi[k]
            j = i - up
            if lcol[k] == 0:
                Q[np.uint64(i - _NF)] = Q[np.uint64(j)]  # column -1 of this row = the sample above
            a = np.int64(Q[np.uint64(i - _NF)])
            b = np.int64(Q[np.uint64(j)])
            c = np.int64(Q[np.uint64(j - _NF)])
            d = np.int64(Q[np.uint64(j + _NF)])
            if kind == 0:
                p = _predict(0, a, b, c, d, lo, hi)
            elif kind == 1:
                p = _predict(1, a, b, c, d, lo, hi)
            elif kind == 2:
                p = (a + b + 1) >> 1
            else:
                pm = _predict(0, a, b, c, d, lo, hi)
                pa = _predict(1, a, b, c, d, lo, hi)
                sm = (2 * (np.int64(Q[np.uint64(i - _NF + _F_EM)]) + Q[np.uint64(j + _F_EM)])
                      + Q[np.uint64(j - _NF + _F_EM)] + Q[np.uint64(j + _NF + _F_EM)])
                sa = (2 * (np.int64(Q[np.uint64(i - _NF + _F_EA)]) + Q[np.uint64(j + _F_EA)])
                      + Q[np.uint64(j - _NF + _F_EA)] + Q[np.uint64(j + _NF + _F_EA)])
                p = pm if sm <= sa else pa
                pg = 0
                if kind == 4:
                    pg = min(max(a + b - c, lo), hi)
                    sg = (2 * (np.int64(Q[np.uint64(i - _NF + _F_EG)]) + Q[np.uint64(j + _F_EG)])
                          + Q[np.uint64(j - _NF + _F_EG)] + Q[np.uint64(j + _NF + _F_EG)])
                    if sg < min(sm, sa):
                        p = pg
                lpm[k] = pm
                lpa[k] = pa
                lpg[k] = pg
            act = (abs(a - c) + abs(b - c) + abs(b - d) + np.int64(Q[np.uint64(j + _F_E)])
                   + Q[np.uint64(j - _NF + _F_E)] + Q[np.uint64(j + _NF + _F_E)]
                   + 2 * Q[np.uint64(i - _NF + _F_E)])
            if use_x:
                act += 2 * X[np.uint64(i + _F_E)]
            act = min(act >> ash, 255)
            if mode == 0:
                ctx = act0[np.uint64(act)]
            else:
                ctx = act1[np.uint64(act)] + lvlt[np.uint64(0 if p < 0 else min(p >> lsh, 31))]
            x = xs[k]
            e_ = np.int64(ent[np.uint64((ctx << PROB_BITS) | (x & (TOTAL - 1)))])
            x = (e_ >> 19) * (x >> PROB_BITS) + ((e_ >> 7) & 0xFFF)
            if x < RANS_L:
                if wp >= wend:
                    return _E_DATA, wp
                x = (x << 16) | np.int64(data[np.uint64(wp)]) | (np.int64(data[np.uint64(wp + 1)]) << 8)
                wp += 2
            xs[k] = x
            ltok[k] = e_ & 0x7F
            lp[k] = p
        # phase B: raw bits and reconstruction
        for k in range(khi + 1):
            if not full and t >= ends[k]:
                continue
            s = np.uint64(ltok[k])
            u = tbase[s]
            nbits = tnb[s]
            if nbits:
                x = xs[k]
                u |= x & ((1 << nbits) - 1)
                x >>= nbits
                if x < RANS_L:
                    if wp >= wend:
                        return _E_DATA, wp
                    x = (x << 16) | np.int64(data[np.uint64(wp)]) | (np.int64(data[np.uint64(wp + 1)]) << 8)
                    wp += 2
                xs[k] = x
            e = (u >> 1) ^ -(u & 1)
            v = lp[k] + e
            if v < lo or v > hi:
                return _E_RANGE, wp
            i = lpi[k]
            Q[np.uint64(i)] = v
            Q[np.uint64(i + _F_E)] = abs(e)
            if sel:
                Q[np.uint64(i + _F_EM)] = abs(v - lpm[k])
                Q[np.uint64(i + _F_EA)] = abs(v - lpa[k])
                Q[np.uint64(i + _F_EG)] = abs(v - lpg[k])
            col = lcol[k] + 1
            if col == w:
                Q[np.uint64(i + _NF)] = v  # column W of this row = its last sample
                lcol[k] = 0
                lpi[k] = i + next_row
            else:
                lcol[k] = col
                lpi[k] = i + _NF
    return 0, wp


@nb.njit(**_JIT)
def _decode_plane(data, wpos, wend, xs, ent, tnb, tbase, desc, h, w, lo, hi, act0, act1, lvlt, Q, X, use_x):
    """_plane_steps specialised per predictor (its code is inlined with a constant kind)."""
    kind = desc[0]
    if kind == 0:
        return _plane_steps(data, wpos, wend, xs, ent, tnb, tbase, desc, h, w, lo, hi, act0, act1, lvlt, Q, X,
                            use_x, 0)
    if kind == 1:
        return _plane_steps(data, wpos, wend, xs, ent, tnb, tbase, desc, h, w, lo, hi, act0, act1, lvlt, Q, X,
                            use_x, 1)
    if kind == 2:
        return _plane_steps(data, wpos, wend, xs, ent, tnb, tbase, desc, h, w, lo, hi, act0, act1, lvlt, Q, X,
                            use_x, 2)
    if kind == 3:
        return _plane_steps(data, wpos, wend, xs, ent, tnb, tbase, desc, h, w, lo, hi, act0, act1, lvlt, Q, X,
                            use_x, 3)
    return _plane_steps(data, wpos, wend, xs, ent, tnb, tbase, desc, h, w, lo, hi, act0, act1, lvlt, Q, X,
                        use_x, 4)


@nb.njit(**_JIT)
def _decode_kernel(data, descs, h, w, c, xform, maxv, toff, tlen, act0, act1, lvlt, tnb, tbase, out):
    """Decode a checked stream (tables at data[toff:toff + tlen], then the lane states and the words up
    to the end) into out; returns 0 or a negative error code."""
    w2 = w + 2
    size = (h + 1) * w2 * _NF
    nbuf = 3 if xform else 1
    Q = np.empty((nbuf, size), np.int32)
    for b in range(nbuf):
        _clear_pads(Q[b], h, w)
    ent = np.zeros((_MAX_CTX, TOTAL), np.int32)  # token | (slot - start) << 7 | freq << 19
    xs = np.zeros(LANES, np.int64)
    so = toff + tlen
    for k in range(LANES):
        v = np.int64(0)
        for q in range(4):
            v |= np.int64(data[so + 4 * k + q]) << (8 * q)
        xs[k] = v
    wp = so + 4 * LANES
    wend = data.size
    tp = toff
    tend = toff + tlen
    for pl in range(c):
        st = np.array([tp, tend, tp, 0, 0, 0], np.int64)
        rc = _parse_tables(data, st, 30 if descs[pl, 1] else _NCTX0, ent)
        if rc:
            return rc
        tp += (st[5] + 7) // 8
        b = pl if xform else 0
        lo, hi = _plane_range(xform, pl, maxv)
        rc, wp = _decode_plane(data, wp, wend, xs, ent.reshape(-1), tnb, tbase, descs[pl], h, w, lo, hi,
                               act0, act1, lvlt, Q[b], Q[0], xform >= 1 and pl > 0)
        if rc:
            return rc
        if not xform:
            for y in range(h):
                r = ((y + 1) * w2 + 1) * _NF
                for x in range(w):
                    out[y, x, pl] = Q[0, r + x * _NF]
    if tp != tend:
        return _E_TABLE
    if wp != wend:
        return _E_DATA
    for k in range(LANES):
        if xs[k] != RANS_L:
            return _E_DATA
    if xform:
        for y in range(h):
            r = ((y + 1) * w2 + 1) * _NF
            for x in range(w):
                q = r + x * _NF
                if not _store_rct_pixel(out, y, x, np.int64(Q[0, q]), np.int64(Q[1, q]), np.int64(Q[2, q]), xform,
                                        maxv):
                    return _E_RANGE
    return 0


def decode(data: bytes | bytearray | memoryview | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a version-3 stream to its ``(H, W, C)`` tile (into ``out`` when given: C-contiguous, same
    shape and dtype).

    Raises
    ------
    CodecError
        The stream is corrupt, truncated, of another version, or does not fit ``out``.
    """
    if isinstance(data, np.ndarray):
        buf = data.reshape(-1).view(np.uint8)
    else:
        buf = np.frombuffer(data, np.uint8)
    (h, w, c), dtype, xform, descs, toff, tlen = parse_header(buf)
    if out is None:
        out = np.empty((h, w, c), dtype)
    elif out.shape != (h, w, c) or out.dtype != dtype or not out.flags.c_contiguous:
        raise CodecError(None, f"csp codec: stream holds {(h, w, c)} {dtype}, out is {out.shape} {out.dtype}"
                               f"{'' if out.flags.c_contiguous else ' (not C-contiguous)'}")
    rc = _decode_kernel(buf, descs, h, w, c, xform, 65535 if dtype == np.uint16 else 255, toff, tlen,
                        _ACT0, _ACT1, _LVL, _TOK_NB, _TOK_BASE, out)
    if rc:
        raise CodecError(None, f"csp codec (Numba, version 3): {_MESSAGES.get(rc, f'error {rc}')}")
    return out
