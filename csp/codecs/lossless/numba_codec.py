"""Numba implementation of the CSP lossless codec (same bitstream as :mod:`.reference` and the C code).

Used when the C extension is not available. The encoder-side model (colour transform, predictor,
tokens, contexts, tables) lives in :mod:`.numba_model` and is re-exported from here. Kernels are
compiled on first use (cached on disk) and release the GIL (``nogil=True``); they keep no global state.
"""

from __future__ import annotations

import struct
import zlib

import numba as nb
import numpy as np

from csp.codecs.lossless.numba_model import (  # noqa: F401 - re-exported for the other Numba modules
    _ACT0,
    _ACT1,
    _JIT,
    _LVL,
    _MAX_CTX,
    _N_XFORM,
    _NCTX0,
    _abs_sum,
    _analyze_plane,
    _bitlen,
    _bw_finish,
    _bw_put,
    _choose_xform,
    _dequant,
    _fill_plane,
    _hist_cost,
    _med_cost,
    _mitchell,
    _normalize,
    _plane_range,
    _predict,
    _predictor_errors,
    _sel,
    _sel3,
    _write_freqs,
)
from csp.codecs.lossless.reference import (  # noqa: F401 - re-exported
    ACT0_LUT,
    ACT1_LUT,
    HEADER,
    LVL_LUT,
    LVL_THR,
    MAGIC,
    N_CTX,
    N_STREAMS,
    NTOK,
    PLANE,
    PROB_BITS,
    RANS_L,
    TOTAL,
    VERSION,
    check_tile,
    parse_header,
)
from csp.errors import CodecError

__all__ = ["decode", "encode"]

_E_TABLE, _E_DATA, _E_RANGE, _E_SIZE = -6, -7, -8, -9
_MESSAGES = {
    _E_TABLE: "corrupt csp frequency table",
    _E_DATA: "corrupt or truncated csp entropy-coded data",
    _E_RANGE: "corrupt csp stream: decoded sample out of range",
    _E_SIZE: "csp encoder output buffer too small",
}


# ----------------------------------------------------------------------------- encoder
@nb.njit(**_JIT)
def _store_rct_pixel(out, y, x, yy, u, v, xform, maxv):
    """Inverse RCT of one pixel's Y, U, V into ``out[y, x, :3]`` (all bitstream versions); False when a
    sample leaves ``[0, maxv]`` (a corrupt stream)."""
    v0 = v + (((xform - 1) * u) >> 2)
    g = yy - ((u + v0) >> 2)
    r = u + g
    b = v0 + g
    if r < 0 or r > maxv or g < 0 or g > maxv or b < 0 or b > maxv:
        return False
    out[y, x, 0] = r
    out[y, x, 1] = g
    out[y, x, 2] = b
    return True


@nb.njit(**_JIT)
def _encode_plane(P, h, w, lo, hi, is16, act0, act1, lvlt, desc, out, pos0, E, X, use_x):
    """Encode the plane in P into out[pos0:]; |e| goes to E, X is the cross-plane |e| (if use_x).

    Fills desc (PLANE fields); returns the new position (-1 if out is too small)."""
    n = h * w
    tok = np.empty(n, np.uint8)
    ctx = np.empty(n, np.uint8)
    uu = np.empty(n, np.int64)
    freq = np.zeros((_MAX_CTX, NTOK), np.int64)
    start = np.zeros((_MAX_CTX, NTOK), np.int64)
    tl = _analyze_plane(P, h, w, lo, hi, is16, act0, act1, lvlt, E, X, use_x, tok, ctx, uu, out[pos0:],
                        freq, start, desc)
    if tl < 0:
        return -1
    bst = np.zeros(4, np.int64)
    pos = pos0 + tl
    # rANS, backward: the four streams (rows y % 4 == j) interleaved sample by sample, so that their
    # independent state updates overlap; the quotient by the frequency is a float division (exact for
    # states below 2**32)
    ng = (h + N_STREAMS - 1) // N_STREAMS
    wsz = ng * w + 2
    words = np.empty((N_STREAMS, wsz), np.uint16)
    xs = np.full(N_STREAMS, RANS_L, np.int64)
    wps = np.full(N_STREAMS, wsz, np.int64)
    fsh = 32 - PROB_BITS  # flush when x >= ((RANS_L >> PROB_BITS) << 16) * freq
    for g in range(ng - 1, -1, -1):
        ns = min(N_STREAMS, h - g * N_STREAMS)
        for x in range(w - 1, -1, -1):
            for j in range(ns):
                i = (g * N_STREAMS + j) * w + x
                k = ctx[i]
                s = tok[i]
                fq = freq[k, s]
                xj = xs[j]
                if xj >= fq << fsh:
                    wps[j] -= 1
                    words[j, wps[j]] = xj & 0xFFFF
                    xj >>= 16
                q = np.int64(np.float64(xj) / np.float64(fq))
                xs[j] = (q << PROB_BITS) + (xj - q * fq) + start[k, s]
    for j in range(N_STREAMS):
        x_state = xs[j]
        wp = wps[j]
        nw = wsz - wp
        rl = 4 + 2 * nw
        if pos + rl > out.size:
            return -1
        for q in range(4):
            out[pos + q] = (x_state >> (8 * q)) & 0xFF
        for q in range(nw):
            out[pos + 4 + 2 * q] = words[j, wp + q] & 0xFF
            out[pos + 5 + 2 * q] = words[j, wp + q] >> 8
        pos += rl
        # raw bits, forward
        bst[:] = 0
        bbuf = out[pos:]
        y = j
        while y < h:
            for x in range(w):
                t = tok[y * w + x]
                if t >= 16:
                    _bw_put(bbuf, bst, uu[y * w + x], (t - 16) // 4 + 2)
            y += N_STREAMS
        _bw_finish(bbuf, bst)
        if bst[3]:
            return -1
        pos += bst[0]
        desc[5 + 2 * j] = rl
        desc[6 + 2 * j] = bst[0]
    return pos


@nb.njit(**_JIT)
def _encode_kernel(src, maxv, act0, act1, lvlt, descs, out, pos0):
    h, w, c = src.shape
    P = np.zeros((h + 1, w + 2), np.int64)
    xform = _choose_xform(src, P, maxv)
    E = np.zeros((h + 1, w + 2), np.int64)
    E0 = np.zeros((h + 1, w + 2), np.int64)
    pos = pos0
    for pl in range(c):
        _fill_plane(src, xform, pl, P)
        lo, hi = _plane_range(xform, pl, maxv)
        pos = _encode_plane(P, h, w, lo, hi, maxv > 255, act0, act1, lvlt, descs[pl], out, pos,
                            E0 if pl == 0 else E, E0, xform >= 1 and pl > 0)
        if pos < 0:
            return -1, xform
    return pos, xform


def encode(tile: np.ndarray, version: int = 1) -> bytes:
    """Encode a ``(H, W, C)`` or ``(H, W)`` uint8/uint16 tile in bitstream ``version`` (Numba)."""
    if version == 2:
        from csp.codecs.lossless import numba_v2

        return numba_v2.encode(tile)
    if version == 3:
        from csp.codecs.lossless import numba_v3

        return numba_v3.encode(tile)
    if version != 1:
        raise CodecError(None, f"csp codec: cannot write bitstream version {version}")
    arr = np.ascontiguousarray(check_tile(tile))
    h, w, c = arr.shape
    is16 = arr.dtype == np.uint16
    hlen = HEADER.size + PLANE.size * c + 4
    out = np.empty(hlen + c * (2048 + 16 + 4 * h * w), np.uint8)
    descs = np.zeros((c, 5 + 2 * N_STREAMS), np.int64)
    pos, xform = _encode_kernel(arr, 65535 if is16 else 255, _ACT0, _ACT1, _LVL, descs, out, hlen)
    if pos < 0:  # pragma: no cover - the buffer bound is generous
        raise CodecError(None, _MESSAGES[_E_SIZE])
    header = HEADER.pack(MAGIC, VERSION, 2 if is16 else 1, int(xform), 0, h, w, c, 0)
    header += b"".join(PLANE.pack(*(int(v) for v in d)) for d in descs)
    out[:hlen] = np.frombuffer(header + struct.pack("<I", zlib.crc32(header)), np.uint8)
    return out[:pos].tobytes()


# ----------------------------------------------------------------------------- decoder
@nb.njit(**_JIT)
def _br_get(data, st, nbits):
    """Bit reader over data with state st = [start, end, bytepos, acc, n, bits_read]; -1 on overrun."""
    if nbits == 0:
        return 0
    while st[4] < nbits:
        if st[2] >= st[1]:
            return -1
        st[3] |= np.int64(data[st[2]]) << st[4]
        st[2] += 1
        st[4] += 8
    v = st[3] & ((1 << nbits) - 1)
    st[3] >>= nbits
    st[4] -= nbits
    st[5] += nbits
    return v


@nb.njit(**_JIT)
def _br_at_end(st):
    return (st[5] + 7) // 8 == st[1] - st[0]


@nb.njit(**_JIT)
def _read_tables(data, start0, length, nctx, ent):
    """Read the tables into ent[k, slot] = token | (slot - start) << 7 | freq << 19 (as in the C code)."""
    st = np.array([start0, start0 + length, start0, 0, 0, 0], np.int64)
    rc = _parse_tables(data, st, nctx, ent)
    if rc:
        return rc
    if not _br_at_end(st):
        return _E_TABLE
    return 0


@nb.njit(**_JIT)
def _context_freqs(data, st, f, wts):
    """Read one context's frequency table (``docs/codec.md`` §5) with the bit reader st (see _br_get)
    into f (normalised frequencies; wts is scratch); returns the number of symbols, or _E_TABLE."""
    present = _br_get(data, st, 1)
    if present < 0:
        return _E_TABLE
    if present == 0:
        f[0] = TOTAL
        return 1
    v = _br_get(data, st, 7)
    if v < 0 or v + 1 > NTOK:
        return _E_TABLE
    nsym = v + 1
    anyw = 0
    prev = 0
    for s in range(nsym):
        b0 = _br_get(data, st, 1)
        b1 = _br_get(data, st, 1) if b0 == 1 else 0
        b2 = _br_get(data, st, 1) if b1 == 1 else 0
        if b0 < 0 or b1 < 0 or b2 < 0:
            return _E_TABLE
        if b0 == 0:
            length = prev
        elif b1 == 0:
            length = prev - 1
        elif b2 == 0:
            length = prev + 1
        else:
            length = _br_get(data, st, 4)
        if length < 0 or length > PROB_BITS + 1:
            return _E_TABLE
        prev = length
        mant = _br_get(data, st, 1 if length >= 2 else 0)
        if mant < 0:
            return _E_TABLE
        wts[s] = _dequant(length, mant)
        anyw |= wts[s]
    if anyw == 0:
        return _E_TABLE
    _normalize(wts, nsym, f)
    return nsym


@nb.njit(**_JIT)
def _parse_tables(data, st, nctx, ent):
    """Read nctx context tables with the bit reader st (see _br_get) into ent (as _read_tables), without
    the end check; st[5] is then the number of bits read."""
    f = np.zeros(NTOK, np.int64)
    wts = np.zeros(NTOK, np.int64)
    for k in range(nctx):
        nsym = _context_freqs(data, st, f, wts)
        if nsym < 0:
            return nsym
        acc = 0
        for s in range(nsym):
            for q in range(f[s]):
                ent[k, acc + q] = s | (q << 7) | (f[s] << 19)
            acc += f[s]
    return 0


@nb.njit(**_JIT)
def _decode_plane(data, off, desc, h, w, lo, hi, act0, act1, lvlt, P, E, X, use_x):
    kind, mode, ash, lsh = desc[0], desc[1], 1 + desc[2], desc[3]
    ent = np.zeros((_MAX_CTX, TOTAL), np.int64)
    rc = _read_tables(data, off, desc[4], 30 if mode else _NCTX0, ent)
    if rc:
        return rc
    st = np.zeros((N_STREAMS, 8), np.int64)
    q = off + desc[4]
    for j in range(N_STREAMS):
        rl = desc[5 + 2 * j]
        bl = desc[6 + 2 * j]
        x0 = (np.int64(data[q]) | (np.int64(data[q + 1]) << 8) | (np.int64(data[q + 2]) << 16)
              | (np.int64(data[q + 3]) << 24))
        if x0 < RANS_L:
            return _E_DATA
        st[j, 0] = x0
        st[j, 1] = q + 4
        st[j, 2] = q + rl
        st[j, 3] = q + rl
        st[j, 4] = q + rl + bl
        q += rl + bl
    E[:, :] = 0
    EM = np.zeros((h + 1, w + 2), np.int64)
    EA = np.zeros((h + 1, w + 2), np.int64)
    EG = np.zeros((h + 1, w + 2), np.int64)
    P[0, :] = 0
    err = 0
    for y in range(h):
        j = y % N_STREAMS
        xs = st[j, 0]
        wp = st[j, 1]
        we = st[j, 2]
        bp = st[j, 3]
        be = st[j, 4]
        bacc = st[j, 5]
        bn = st[j, 6]
        P[y + 1, 0] = P[y, 1]
        a = P[y, 1]
        for x in range(w):
            b = P[y, x + 1]
            c = P[y, x]
            d = P[y, x + 2]
            pm = pa = pg = 0
            if kind == 1:
                p = min(max((2 * a + 2 * b - c + d + 2) >> 2, lo), hi)
            elif kind == 2:
                p = (a + b + 1) >> 1
            else:
                pm = _predict(0, a, b, c, d, lo, hi)
                p = pm
                if kind == 3:
                    pa = _predict(1, a, b, c, d, lo, hi)
                    p = _sel(EM, EA, y, x, pm, pa)
                elif kind == 4:
                    pa = _predict(1, a, b, c, d, lo, hi)
                    pg = min(max(a + b - c, lo), hi)
                    p = _sel3(EM, EA, EG, y, x, pm, pa, pg)
            act = abs(a - c) + abs(b - c) + abs(b - d) + E[y, x + 1] + E[y, x] + E[y, x + 2] + 2 * E[y + 1, x]
            if use_x:
                act += 2 * X[y + 1, x + 1]
            act = min(act >> ash, 255)
            if mode == 0:
                k = act0[act]
            else:
                lv = 0 if p < 0 else min(p >> lsh, 31)
                k = act1[act] + lvlt[lv]
            slot = xs & (TOTAL - 1)
            e_ = ent[k, slot]
            s = e_ & 0x7F
            xs = (e_ >> 19) * (xs >> PROB_BITS) + ((e_ >> 7) & 0xFFF)
            if xs < RANS_L:
                if wp < we:
                    xs = (xs << 16) | np.int64(data[wp]) | (np.int64(data[wp + 1]) << 8)
                    wp += 2
                else:
                    err = 1
                    xs = RANS_L
            if s < 16:
                u = s
            else:
                nb_ = (s - 16) // 4 + 2
                while bn < nb_:
                    if bp < be:
                        bacc |= np.int64(data[bp]) << bn
                        bp += 1
                    else:
                        err = 1
                    bn += 8
                u = ((4 | ((s - 16) & 3)) << nb_) | (bacc & ((1 << nb_) - 1))
                bacc >>= nb_
                bn -= nb_
            e = (u >> 1) ^ -(u & 1)
            v = p + e
            if v < lo or v > hi:
                return _E_RANGE
            P[y + 1, x + 1] = v
            E[y + 1, x + 1] = abs(e)
            if kind >= 3:
                EM[y + 1, x + 1] = abs(v - pm)
                EA[y + 1, x + 1] = abs(v - pa)
                EG[y + 1, x + 1] = abs(v - pg)
            a = v
        P[y + 1, w + 1] = P[y + 1, w]
        st[j, 0] = xs
        st[j, 1] = wp
        st[j, 3] = bp
        st[j, 5] = bacc
        st[j, 6] = bn
        if err:
            return _E_DATA
    for j in range(N_STREAMS):
        if st[j, 0] != RANS_L or st[j, 1] != st[j, 2] or st[j, 3] != st[j, 4] or st[j, 6] >= 8:
            return _E_DATA
    return 0


@nb.njit(**_JIT)
def _decode_kernel(data, descs, h, w, c, xform, maxv, off, act0, act1, lvlt, out):
    nbuf = 3 if xform else 1
    P = np.zeros((nbuf, h + 1, w + 2), np.int64)
    E = np.zeros((h + 1, w + 2), np.int64)
    E0 = np.zeros((h + 1, w + 2), np.int64)
    for pl in range(c):
        b = pl if xform else 0
        lo, hi = _plane_range(xform, pl, maxv)
        rc = _decode_plane(data, off, descs[pl], h, w, lo, hi, act0, act1, lvlt, P[b],
                           E0 if pl == 0 else E, E0, xform >= 1 and pl > 0)
        if rc:
            return rc
        for q in range(4, descs.shape[1]):
            off += descs[pl, q]
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
    """Decode a stream (version 1, 2 or 3) to its ``(H, W, C)`` tile (Numba implementation)."""
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buf.size > 4 and buf[4] == 2:
        from csp.codecs.lossless import numba_v2

        return numba_v2.decode(buf, out)
    if buf.size > 4 and buf[4] == 3:
        from csp.codecs.lossless import numba_v3

        return numba_v3.decode(buf, out)
    (h, w, c), dtype, xform, planes = parse_header(memoryview(buf))
    if out is None:
        out = np.empty((h, w, c), dtype)
    elif out.shape != (h, w, c) or out.dtype != dtype:
        raise CodecError(None, f"csp codec: stream holds {(h, w, c)} {dtype}, out is {out.shape} {out.dtype}")
    descs = np.array(planes, np.int64)
    rc = _decode_kernel(buf, descs, h, w, c, xform, 65535 if dtype == np.uint16 else 255,
                        HEADER.size + PLANE.size * c + 4, _ACT0, _ACT1, _LVL, out)
    if rc:
        raise CodecError(None, f"csp codec (Numba): {_MESSAGES.get(rc, f'error {rc}')}")
    return out
