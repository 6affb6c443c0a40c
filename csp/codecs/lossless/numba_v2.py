"""Numba implementation of bitstream version 2 of the CSP lossless codec (:mod:`.reference_v2`).

Same bytes as the reference and the C code (``native/cspcodec2.c``); reuses the version-1 Numba
helpers. Kernels are compiled on first use (cached on disk), release the GIL and keep no global state.
"""

from __future__ import annotations

import struct
import zlib

import numba as nb
import numpy as np

from csp.codecs.lossless.numba_codec import (
    _E_DATA,
    _E_RANGE,
    _E_SIZE,
    _JIT,
    _MAX_CTX,
    _MESSAGES,
    _bitlen,
    _bw_finish,
    _bw_put,
    _choose_xform,
    _fill_plane,
    _plane_range,
    _predict,
    _read_tables,
    _store_rct_pixel,
    _write_freqs,
)
from csp.codecs.lossless.reference import ACT0_LUT, HEADER, MAGIC, NTOK, PROB_BITS, RANS_L, TOTAL, check_tile
from csp.codecs.lossless.reference_v2 import LANES, N_CTX, N_PRED, PLANE, VERSION, parse_header
from csp.errors import CodecError

__all__ = ["decode", "encode"]

_ACT = ACT0_LUT.astype(np.int64)
#: token -> (raw bit count, base value)
_TOK_NB = np.array([0] * 16 + [(t - 16) // 4 + 2 for t in range(16, NTOK)], np.int64)
_TOK_BASE = np.array(list(range(16)) + [(4 | ((t - 16) & 3)) << ((t - 16) // 4 + 2) for t in range(16, NTOK)],
                     np.int64)


@nb.njit(**_JIT)
def _ctx_row(ab, R0, y, use_x, w, sh, act, ctx):
    """Contexts of row y from the padded |e| row above (ab, 2 zeros each side) and plane 0's residuals."""
    for x in range(w):
        a = 4 * ab[x + 2] + 2 * (ab[x + 1] + ab[x + 3]) + ab[x] + ab[x + 4]
        if use_x:
            a += 4 * abs(R0[y, x])
        a >>= sh
        ctx[x] = act[min(a, 255)]


@nb.njit(**_JIT)
def _token(u):
    if u < 16:
        return u
    n = _bitlen(u) - 1
    return 16 + (n - 4) * 4 + ((u >> (n - 2)) & 3)


@nb.njit(**_JIT)
def _write_tables(hist, tbuf, freq, start):
    bst = np.zeros(4, np.int64)
    wts = np.zeros(NTOK, np.int64)
    f = np.zeros(NTOK, np.int64)
    for k in range(N_CTX):
        if not _write_freqs(tbuf, bst, hist[k], wts, f, freq[k], start[k]):
            freq[k, 0] = TOTAL  # one-symbol context
    _bw_finish(tbuf, bst)
    return -1 if bst[3] else bst[0]


@nb.njit(**_JIT)
def _encode_plane(P, h, w, lo, hi, is16, act, desc, out, pos0, R, R0, use_x):
    # predictor: smallest bit-length sum on the selection rows (first on ties)
    cost = np.zeros(N_PRED, np.int64)
    y = 1 if h > 1 else 0
    while y < h:
        for x in range(w):
            for k in range(N_PRED):
                p = _predict(k, P[y + 1, x], P[y, x + 1], P[y, x], P[y, x + 2], lo, hi)
                cost[k] += _bitlen(abs(P[y + 1, x + 1] - p))
        y += 4
    kind = 0
    for k in range(1, N_PRED):
        if cost[k] < cost[kind]:
            kind = k
    sad = 0
    for y in range(h):
        for x in range(w):
            e = P[y + 1, x + 1] - _predict(kind, P[y + 1, x], P[y, x + 1], P[y, x], P[y, x + 2], lo, hi)
            R[y, x] = e
            sad += abs(e)
    ashift = 0
    if is16:
        ashift = max(0, _bitlen(sad // (h * w)) - 3)
    n = h * w
    tok = np.empty(n, np.int64)
    ctx = np.empty(n, np.int64)
    hist = np.zeros((N_CTX, NTOK), np.int64)
    ab = np.zeros(w + 4, np.int64)
    crow = np.empty(w, np.int64)
    for y in range(h):
        _ctx_row(ab, R0, y, use_x, w, 2 + ashift, act, crow)
        for x in range(w):
            e = R[y, x]
            u = 2 * e if e >= 0 else -2 * e - 1
            t = _token(u)
            tok[y * w + x] = t
            ctx[y * w + x] = crow[x]
            hist[crow[x], t] += 1
            ab[x + 2] = abs(e)
    freq = np.zeros((N_CTX, NTOK), np.int64)
    start = np.zeros((N_CTX, NTOK), np.int64)
    tl = _write_tables(hist, out[pos0:], freq, start)
    if tl < 0:
        return -1
    pos = pos0 + tl
    words = np.empty(n + 8, np.int64)
    wp = n + 8
    st = np.full(LANES, RANS_L, np.int64)
    for i in range(n - 1, -1, -1):
        j = (i % w) & 3
        k = ctx[i]
        s = tok[i]
        f = freq[k, s]
        xs = st[j]
        if xs >= ((RANS_L >> PROB_BITS) << 16) * f:
            wp -= 1
            words[wp] = xs & 0xFFFF
            xs >>= 16
        st[j] = ((xs // f) << PROB_BITS) + (xs % f) + start[k, s]
    nw = n + 8 - wp
    wl = 4 * LANES + 2 * nw
    if pos + wl > out.size:
        return -1
    for j in range(LANES):
        for q in range(4):
            out[pos + 4 * j + q] = (st[j] >> (8 * q)) & 0xFF
    for q in range(nw):
        out[pos + 16 + 2 * q] = words[wp + q] & 0xFF
        out[pos + 17 + 2 * q] = words[wp + q] >> 8
    pos += wl
    bst = np.zeros(4, np.int64)
    bbuf = out[pos:]
    for i in range(n):
        t = tok[i]
        if t >= 16:
            e = R[i // w, i % w]
            _bw_put(bbuf, bst, 2 * e if e >= 0 else -2 * e - 1, (t - 16) // 4 + 2)
    _bw_finish(bbuf, bst)
    if bst[3]:
        return -1
    desc[0] = kind
    desc[1] = ashift
    desc[2] = 0
    desc[3] = tl
    desc[4] = wl
    desc[5] = bst[0]
    return pos + bst[0]


@nb.njit(**_JIT)
def _encode_kernel(src, maxv, act, descs, out, pos0):
    h, w, c = src.shape
    P = np.zeros((h + 1, w + 2), np.int64)
    xform = _choose_xform(src, P, maxv)
    R = np.zeros((h, w), np.int64)
    R0 = np.zeros((h, w), np.int64)
    pos = pos0
    for pl in range(c):
        _fill_plane(src, xform, pl, P)
        lo, hi = _plane_range(xform, pl, maxv)
        pos = _encode_plane(P, h, w, lo, hi, maxv > 255, act, descs[pl], out, pos,
                            R0 if pl == 0 else R, R0, xform >= 1 and pl > 0)
        if pos < 0:
            return -1, xform
    return pos, xform


def encode(tile: np.ndarray) -> bytes:
    """Encode a ``(H, W, C)`` or ``(H, W)`` uint8/uint16 tile in bitstream version 2 (Numba)."""
    arr = np.ascontiguousarray(check_tile(tile))
    h, w, c = arr.shape
    is16 = arr.dtype == np.uint16
    hlen = HEADER.size + PLANE.size * c + 4
    out = np.empty(hlen + c * (2048 + 16 + 4 * h * w), np.uint8)
    descs = np.zeros((c, 6), np.int64)
    pos, xform = _encode_kernel(arr, 65535 if is16 else 255, _ACT, descs, out, hlen)
    if pos < 0:  # pragma: no cover - the buffer bound is generous
        raise CodecError(None, _MESSAGES[_E_SIZE])
    header = HEADER.pack(MAGIC, VERSION, 2 if is16 else 1, int(xform), 0, h, w, c, 0)
    header += b"".join(PLANE.pack(*(int(v) for v in d)) for d in descs)
    out[:hlen] = np.frombuffer(header + struct.pack("<I", zlib.crc32(header)), np.uint8)
    return out[:pos].tobytes()


# ----------------------------------------------------------------------------- decoder
@nb.njit(**_JIT)
def _decode_residuals(data, off, desc, h, w, act, ent, R, R0, use_x, tnb, tbase):
    tl, wl, bl = desc[3], desc[4], desc[5]
    rc = _read_tables(data, off, tl, N_CTX, ent)
    if rc:
        return rc
    ws = off + tl
    st = np.zeros(LANES, np.int64)
    for j in range(LANES):
        v = 0
        for q in range(4):
            v |= np.int64(data[ws + 4 * j + q]) << (8 * q)
        if v < RANS_L:
            return _E_DATA
        st[j] = v
    wp = ws + 16
    wend = ws + wl
    bp = 0  # bit position in the raw stream
    rb = ws + wl
    nbits = 8 * bl
    ab = np.zeros(w + 4, np.int64)
    ctx = np.empty(w, np.int64)
    sh = 2 + desc[1]
    for y in range(h):
        _ctx_row(ab, R0, y, use_x, w, sh, act, ctx)
        for x in range(w):
            j = x & 3
            xs = st[j]
            e_ = ent[ctx[x], xs & (TOTAL - 1)]
            s = e_ & 0x7F
            xs = (e_ >> 19) * (xs >> PROB_BITS) + ((e_ >> 7) & 0xFFF)
            if xs < RANS_L:
                if wp >= wend:
                    return _E_DATA
                xs = (xs << 16) | np.int64(data[wp]) | (np.int64(data[wp + 1]) << 8)
                wp += 2
            st[j] = xs
            nb_ = tnb[s]
            raw = 0
            if nb_:
                if bp + nb_ > nbits:
                    return _E_DATA
                q = bp >> 3
                for k in range(min(4, rb + bl - (rb + q))):
                    raw |= np.int64(data[rb + q + k]) << (8 * k)
                raw = (raw >> (bp & 7)) & ((1 << nb_) - 1)
                bp += nb_
            u = tbase[s] | raw
            e = (u >> 1) ^ -(u & 1)
            R[y, x] = e
            ab[x + 2] = abs(e)
    for j in range(LANES):
        if st[j] != RANS_L:
            return _E_DATA
    if wp != wend or (bp + 7) // 8 != bl:
        return _E_DATA
    return 0


@nb.njit(**_JIT)
def _recon(R, kind, lo, hi, P):
    """Pixels of a plane (into padded P) from its residuals; _E_RANGE if a sample leaves [lo, hi]."""
    h, w = R.shape
    for y in range(h):
        P[y + 1, 0] = P[y, 1]
        for x in range(w):
            v = _predict(kind, P[y + 1, x], P[y, x + 1], P[y, x], P[y, x + 2], lo, hi) + R[y, x]
            if v < lo or v > hi:
                return _E_RANGE
            P[y + 1, x + 1] = v
        P[y + 1, w + 1] = P[y + 1, w]
    return 0


@nb.njit(**_JIT)
def _decode_kernel(data, descs, h, w, c, xform, maxv, off, act, tnb, tbase, out):
    nbuf = 3 if xform else 1
    P = np.zeros((nbuf, h + 1, w + 2), np.int64)
    R = np.zeros((h, w), np.int64)
    R0 = np.zeros((h, w), np.int64)
    ent = np.zeros((_MAX_CTX, TOTAL), np.int64)
    for pl in range(c):
        b = pl if xform else 0
        lo, hi = _plane_range(xform, pl, maxv)
        Rp = R0 if pl == 0 else R
        rc = _decode_residuals(data, off, descs[pl], h, w, act, ent, Rp, R0, xform >= 1 and pl > 0, tnb, tbase)
        if rc:
            return rc
        off += descs[pl, 3] + descs[pl, 4] + descs[pl, 5]
        rc = _recon(Rp, descs[pl, 0], lo, hi, P[b])
        if rc:
            return rc
        if not xform:
            for y in range(h):
                for x in range(w):
                    out[y, x, pl] = P[0, y + 1, x + 1]
    if xform:
        for y in range(h):
            for x in range(w):
                if not _store_rct_pixel(out, y, x, P[0, y + 1, x + 1], P[1, y + 1, x + 1], P[2, y + 1, x + 1],
                                        xform, maxv):
                    return _E_RANGE
    return 0


def decode(data: bytes | bytearray | memoryview | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a version-2 stream to its ``(H, W, C)`` tile (Numba implementation)."""
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    (h, w, c), dtype, xform, planes = parse_header(memoryview(buf))
    if out is None:
        out = np.empty((h, w, c), dtype)
    elif out.shape != (h, w, c) or out.dtype != dtype:
        raise CodecError(None, f"csp codec: stream holds {(h, w, c)} {dtype}, out is {out.shape} {out.dtype}")
    descs = np.array(planes, np.int64)
    rc = _decode_kernel(buf, descs, h, w, c, xform, 65535 if dtype == np.uint16 else 255,
                        HEADER.size + PLANE.size * c + 4, _ACT, _TOK_NB, _TOK_BASE, out)
    if rc:
        raise CodecError(None, f"csp codec (Numba): {_MESSAGES.get(rc, f'error {rc}')}")
    return out
