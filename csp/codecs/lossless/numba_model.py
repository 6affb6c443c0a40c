"""Numba encoder-side model of the CSP lossless codec (``docs/codec.md`` §2-§7), shared by the Numba
encoders of bitstream versions 1 and 3 (version 2 uses the colour transform choice and the helpers).

Same decisions and table bytes as :mod:`.reference`. The per-sample work is written as row loops without
loop-carried dependencies (branch-free min/max formulas, the left neighbour's errors of a row computed in
an earlier loop than the one that reads them, bit lengths by count-leading-zeros) so that LLVM
vectorises them for the host CPU; only the histogram increments stay scalar. :mod:`.numba_codec`
re-exports every name defined here.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from csp.codecs.lossless.reference import ACT0_LUT, ACT1_LUT, LVL_LUT, LVL_THR, N_CTX, NTOK, TOTAL

_MAX_CTX = 32
_N_XFORM = 6
_NCTX0 = N_CTX[0]
_NCTX1 = N_CTX[1]

#: context lookup tables of the reference (mode-1 activity classes pre-multiplied by the level count)
_ACT0, _ACT1, _LVL = ACT0_LUT, ACT1_LUT * (len(LVL_THR) + 1), LVL_LUT

_JIT = {"cache": True, "nogil": True}


@nb.njit(**_JIT)
def _bitlen(x):
    """bit_length of a non-negative int below 2**32 (0 for 0)."""
    n = 0
    if x >= 1 << 16:
        x >>= 16
        n += 16
    if x >= 1 << 8:
        x >>= 8
        n += 8
    if x >= 1 << 4:
        x >>= 4
        n += 4
    if x >= 1 << 2:
        x >>= 2
        n += 2
    if x >= 2:
        x >>= 1
        n += 1
    return n + x


@nb.njit(inline="always", **_JIT)
def _blen(x):
    """bit_length of an int in ``[0, 2**32)`` by count-leading-zeros (branch-free, vectorisable)."""
    return 32 - np.int64(leading_zeros(np.uint32(x)))


_I = np.int32  # the plane, error and score arithmetic fits in int32 (|values| < 2**19): twice the lanes
_CHUNK = 4096  #: columns per int32 partial sum of |e| (< 2**18 each)


@nb.njit(inline="always", **_JIT)
def _med32(a, b, c, lo, hi):
    """MED prediction, branch-free, in int32 arithmetic: a + b - c clamped to [min(a, b), max(a, b)],
    then to [lo, hi]."""
    p = _I(min(max(_I(a + b - c), min(a, b)), max(a, b)))
    return _I(min(max(p, lo), hi))


@nb.njit(inline="always", **_JIT)
def _blen32(x):
    """bit_length of a non-negative int32 (see _blen)."""
    return _I(32) - _I(leading_zeros(np.uint32(x)))


@nb.njit(**_JIT)
def _predict(kind, a, b, c, d, lo, hi):
    if kind == 0:
        mx = max(a, b)
        mn = min(a, b)
        if c >= mx:
            p = mn
        elif c <= mn:
            p = mx
        else:
            p = a + b - c
    elif kind == 1:
        p = (2 * a + 2 * b - c + d + 2) >> 2
    else:
        p = (a + b + 1) >> 1
    return min(max(p, lo), hi)


@nb.njit(**_JIT)
def _mitchell(x):
    n = _blen(x) - 1
    return (n << 8) + (((x << 8) >> n) - 256)


@nb.njit(**_JIT)
def _normalize(w, n, f):
    wt = 0
    for s in range(n):
        wt += w[s]
    tot = 0
    for s in range(n):
        v = (w[s] * TOTAL) // wt if w[s] else 0
        if w[s] and v < 1:
            v = 1
        f[s] = v
        tot += v
    diff = TOTAL - tot
    while diff != 0:
        i = 0
        for s in range(1, n):
            if f[s] > f[i]:
                i = s
        if diff > 0:
            f[i] += diff
            diff = 0
        else:
            take = min(-diff, f[i] - 1)
            if take == 0:
                break
            f[i] -= take
            diff += take


@nb.njit(**_JIT)
def _dequant(length, mant):
    if length <= 2:
        return 0 if length == 0 else ((1 << (length - 1)) | mant)
    return ((2 | mant) << (length - 2)) + (1 << (length - 3))


@nb.njit(**_JIT)
def _sel(EM, EA, y, x, pm, pa):
    """PRED_SEL: MED or AVG4, whichever erred less at the causal neighbours (padded coordinates)."""
    sm = 2 * EM[y + 1, x] + 2 * EM[y, x + 1] + EM[y, x] + EM[y, x + 2]
    sa = 2 * EA[y + 1, x] + 2 * EA[y, x + 1] + EA[y, x] + EA[y, x + 2]
    return pm if sm <= sa else pa


@nb.njit(**_JIT)
def _sel3(EM, EA, EG, y, x, pm, pa, pg):
    """PRED_SEL3: MED, AVG4 or GRAD, whichever erred least at the causal neighbours (first on ties)."""
    sm = 2 * EM[y + 1, x] + 2 * EM[y, x + 1] + EM[y, x] + EM[y, x + 2]
    sa = 2 * EA[y + 1, x] + 2 * EA[y, x + 1] + EA[y, x] + EA[y, x + 2]
    sg = 2 * EG[y + 1, x] + 2 * EG[y, x + 1] + EG[y, x] + EG[y, x + 2]
    p = pm if sm <= sa else pa
    return pg if sg < min(sm, sa) else p


# ----------------------------------------------------------------------------- bit writer (array state)
@nb.njit(**_JIT)
def _bw_put(buf, st, v, nbits):
    """st = [pos, acc, n, overflow]"""
    if nbits == 0:
        return
    st[1] |= (v & ((1 << nbits) - 1)) << st[2]
    st[2] += nbits
    while st[2] >= 8:
        if st[0] < buf.size:
            buf[st[0]] = st[1] & 0xFF
            st[0] += 1
        else:
            st[3] = 1
        st[1] >>= 8
        st[2] -= 8


@nb.njit(**_JIT)
def _bw_finish(buf, st):
    if st[2] > 0:
        if st[0] < buf.size:
            buf[st[0]] = st[1] & 0xFF
            st[0] += 1
        else:
            st[3] = 1
    st[1] = 0
    st[2] = 0


# ----------------------------------------------------------------------------- planes
@nb.njit(**_JIT)
def _fill_plane(src, xform, pl, P):
    """Plane pl of src under colour transform xform into the padded plane P ((H + 1) x (W + 2), any
    signed integer dtype): row 0 zeros, column 0 = the sample above-left-clamped, column W + 1 = the
    row's last sample."""
    h, w = src.shape[0], src.shape[1]
    P[0, :] = 0
    k = _I(xform - 1)
    for y in range(h):
        row = P[y + 1]
        s = src[y]
        if xform == 0:
            for x in range(w):
                row[x + 1] = s[x, pl]
        elif pl == 0:  # int32 arithmetic (samples below 2**16)
            for x in range(w):
                row[x + 1] = _I(_I(_I(s[x, 0]) + _I(2 * _I(s[x, 1])) + _I(s[x, 2])) >> 2)
        elif pl == 1:
            for x in range(w):
                row[x + 1] = _I(_I(s[x, 0]) - _I(s[x, 1]))
        else:
            for x in range(w):
                u = _I(_I(s[x, 0]) - _I(s[x, 1]))
                row[x + 1] = _I(_I(_I(s[x, 2]) - _I(s[x, 1])) - _I(_I(k * u) >> 2))
        row[0] = P[y, 1]
        row[w + 1] = row[w]


@nb.njit(**_JIT)
def _fill_planes(src, xform, P3):
    """All planes of src under colour transform xform into P3[pl] (padded as in _fill_plane), in one pass
    over the pixels for 3 channels (one loop reads each pixel's three samples once; int32 arithmetic)."""
    h, w, c = src.shape
    if c != 3:
        for pl in range(c):
            _fill_plane(src, xform, pl, P3[pl])
        return
    k = _I(xform - 1)
    for pl in range(3):
        P3[pl, 0, :] = 0
    for y in range(h):
        s = src[y]
        r0 = P3[0, y + 1]
        r1 = P3[1, y + 1]
        r2 = P3[2, y + 1]
        if xform == 0:
            for x in range(w):
                r0[x + 1] = s[x, 0]
                r1[x + 1] = s[x, 1]
                r2[x + 1] = s[x, 2]
        else:
            for x in range(w):
                rr = _I(s[x, 0])
                gg = _I(s[x, 1])
                bb = _I(s[x, 2])
                u = _I(rr - gg)
                r0[x + 1] = _I(_I(rr + _I(2 * gg) + bb) >> 2)
                r1[x + 1] = u
                r2[x + 1] = _I(_I(bb - gg) - _I(_I(k * u) >> 2))
        for pl in range(3):
            row = P3[pl, y + 1]
            row[0] = P3[pl, y, 1]
            row[w + 1] = row[w]


@nb.njit(**_JIT)
def _plane_range(xform, pl, maxv):
    """(lo, hi) of plane pl under transform xform (see reference._plane_range)."""
    if xform >= 1 and pl == 1:
        return -maxv, maxv
    if xform >= 1 and pl == 2:
        span = maxv + (((xform - 1) * maxv + 3) >> 2)
        return -span, span
    return 0, maxv


@nb.njit(**_JIT)
def _med_cost(P, h, w, lo, hi):
    """Sum of bit_length(|x - MED|) over the selection rows of the padded plane P."""
    s = 0
    y = 1 if h > 1 else 0
    while y < h:
        s += _med_row_cost(P[y + 1], P[y], w, lo, hi)
        y += 4
    return s


@nb.njit(inline="always", **_JIT)
def _med_run_cost(cur, up, n, lo, hi):
    """int32 sum of bit_length(|x - MED|) over n samples (padded views, as in _errors_row)."""
    s = _I(0)
    for x in range(n):
        m = _med32(_I(cur[x]), _I(up[x + 1]), _I(up[x]), lo, hi)
        s = _I(s + _blen32(_I(abs(_I(_I(cur[x + 1]) - m)))))
    return s


@nb.njit(**_JIT)
def _med_row_cost(cur, up, w, lo, hi):
    """Sum of bit_length(|x - MED|) over one padded row ``cur`` below the padded row ``up`` (int32
    arithmetic: plane values are below 2**18 in magnitude; chunks of _CHUNK columns)."""
    lo = _I(lo)
    hi = _I(hi)
    if w <= _CHUNK:
        return np.int64(_med_run_cost(cur, up, w, lo, hi))
    s = 0
    for x0 in range(0, w, _CHUNK):
        s += _med_run_cost(cur[x0:], up[x0:], min(w - x0, _CHUNK), lo, hi)
    return s


@nb.njit(**_JIT)
def _choose_xform(src, P, maxv):
    """Colour transform of src (0 unless 3 channels): the smallest MED cost over the selection rows of
    the three planes among none and RCT k = 0..4 (first on ties). Planes are built only on the two rows
    each selection row needs, and RCT's Y and U once for all k. P is not used (kept for callers)."""
    h, w, c = src.shape
    if c != 3:
        return 0
    w2 = w + 2
    raw = np.zeros((2, 3, w2), np.int32)  # padded rows (above, current) of R, G, B
    yr = np.empty((2, w2), np.int32)
    ur = np.empty((2, w2), np.int32)
    vr = np.empty((2, w2), np.int32)
    cn = 0
    cy = 0
    cu = 0
    cv = np.zeros(_N_XFORM - 1, np.int64)
    y = 1 if h > 1 else 0
    while y < h:
        for ch in range(3):
            up = raw[0, ch]
            cur = raw[1, ch]
            up[:] = 0
            if y >= 1:
                for x in range(w):
                    up[x + 1] = src[y - 1, x, ch]
                up[w + 1] = up[w]
                if y >= 2:
                    up[0] = src[y - 2, 0, ch]
            for x in range(w):
                cur[x + 1] = src[y, x, ch]
            cur[0] = up[1]
            cn += _med_row_cost(cur, up, w, 0, maxv)
        for r in range(2):
            for x in range(w2):
                rr = raw[r, 0, x]
                gg = raw[r, 1, x]
                bb = raw[r, 2, x]
                yr[r, x] = _I(_I(rr + _I(2 * gg) + bb) >> 2)
                ur[r, x] = _I(rr - gg)
        cy += _med_row_cost(yr[1], yr[0], w, 0, maxv)
        cu += _med_row_cost(ur[1], ur[0], w, -maxv, maxv)
        for k in range(_N_XFORM - 1):
            for r in range(2):
                for x in range(w2):
                    vr[r, x] = _I(_I(raw[r, 2, x] - raw[r, 1, x]) - _I(_I(k * ur[r, x]) >> 2))
            lo, hi = _plane_range(k + 1, 2, maxv)
            cv[k] += _med_row_cost(vr[1], vr[0], w, lo, hi)
        y += 4
    best = 0
    bcost = cn
    for k in range(_N_XFORM - 1):
        if cy + cu + cv[k] < bcost:
            bcost = cy + cu + cv[k]
            best = k + 1
    return best


# ----------------------------------------------------------------------------- predictor choice
@nb.njit(inline="always", **_JIT)
def _errors_row(cur, up, n, lo, hi, em, ea, eg, pm, pa, pg):
    """MED, AVG4 and GRAD predictions and errors of n samples of a row (padded views starting one
    sample left of the first; pm/pa/pg unpadded), plus AVG2's errors; returns the int32 sums of
    bit_length(|e|) of MED, AVG4 and AVG2. Loops from 0, so that Numba's indices are non-negative."""
    q0 = q1 = q2 = _I(0)
    for x in range(n):
        a = _I(cur[x])
        b = _I(up[x + 1])
        c = _I(up[x])
        d = _I(up[x + 2])
        v = _I(cur[x + 1])
        m = _med32(a, b, c, lo, hi)
        q = _I(min(max(_I((_I(2 * a) + _I(2 * b) - c + d + 2) >> 2), lo), hi))
        g = _I(min(max(_I(a + b - c), lo), hi))
        e0 = _I(abs(_I(v - m)))
        e1 = _I(abs(_I(v - q)))
        e2 = _I(abs(_I(v - _I(min(max(_I(_I(a + b + 1) >> 1), lo), hi)))))
        em[x + 1] = e0
        ea[x + 1] = e1
        eg[x + 1] = _I(abs(_I(v - g)))
        pm[x] = m
        pa[x] = q
        pg[x] = g
        q0 = _I(q0 + _blen32(e0))
        q1 = _I(q1 + _blen32(e1))
        q2 = _I(q2 + _blen32(e2))
    return q0, q1, q2


@nb.njit(inline="always", **_JIT)
def _select_row(cur, n, em, emu, ea, eau, eg, egu, pm, pa, pg, p3r, p4r):
    """SEL and SEL3 predictions of n samples of a row (views as in _errors_row) from the errors of
    _errors_row; returns the int32 sums of bit_length(|e|) of SEL and SEL3."""
    q3 = q4 = _I(0)
    for x in range(n):
        sm = _I(_I(2 * em[x]) + _I(2 * emu[x + 1]) + emu[x] + emu[x + 2])
        sa = _I(_I(2 * ea[x]) + _I(2 * eau[x + 1]) + eau[x] + eau[x + 2])
        sg = _I(_I(2 * eg[x]) + _I(2 * egu[x + 1]) + egu[x] + egu[x + 2])
        p3 = pm[x] if sm <= sa else pa[x]
        p4 = pg[x] if sg < min(sm, sa) else p3
        p3r[x] = p3
        p4r[x] = p4
        v = _I(cur[x + 1])
        e3 = _I(abs(_I(v - p3)))
        e4 = _I(abs(_I(v - p4)))
        q3 = _I(q3 + _blen32(e3))
        q4 = _I(q4 + _blen32(e4))
    return q3, q4


@nb.njit(**_JIT)
def _predictor_errors(P, h, w, lo, hi, EM, EA, EG, costs, PS):
    """Bit-length costs (sums of bit_length(|e|)) of every predictor over the plane; uses EM/EA/EG (rows
    y & 1: |x - MED|, |x - AVG4|, |x - GRAD| of the current row and of the row above, zero padded,
    int32) and fills PS[0], PS[1] (the SEL and SEL3 predictions, H x W int32). Per row, a first loop
    computes MED/AVG4/GRAD/AVG2 and their errors, a second one the SEL/SEL3 choices (which read the
    row's errors to the left). Both keep their sums in int32 (so that they vectorise 32-bit wide); rows
    wider than _CHUNK columns are summed chunk by chunk, through array views. (The sums of |e| only
    matter for 16-bit tiles' shifts, for the chosen predictor: see _predictor_sad.)"""
    lo = _I(lo)
    hi = _I(hi)
    EM[0, :] = 0
    EA[0, :] = 0
    EG[0, :] = 0
    pm = np.empty(w, np.int32)
    pa = np.empty(w, np.int32)
    pg = np.empty(w, np.int32)
    c0 = c1 = c2 = c3 = c4 = 0
    for y in range(h):
        cur = P[y + 1]
        em = EM[(y + 1) & 1]
        ea = EA[(y + 1) & 1]
        eg = EG[(y + 1) & 1]
        em[0] = 0
        ea[0] = 0
        eg[0] = 0
        em[w + 1] = 0
        ea[w + 1] = 0
        eg[w + 1] = 0
        up = P[y]
        for x0 in range(0, w, _CHUNK):
            if w <= _CHUNK:  # the whole row (contiguous arrays: vectorised)
                q0, q1, q2 = _errors_row(cur, up, w, lo, hi, em, ea, eg, pm, pa, pg)
            else:
                n = min(w - x0, _CHUNK)
                q0, q1, q2 = _errors_row(cur[x0:], up[x0:], n, lo, hi, em[x0:], ea[x0:], eg[x0:], pm[x0:], pa[x0:],
                                         pg[x0:])
            c0 += q0
            c1 += q1
            c2 += q2
        emu = EM[y & 1]
        eau = EA[y & 1]
        egu = EG[y & 1]
        p3r = PS[0, y]
        p4r = PS[1, y]
        for x0 in range(0, w, _CHUNK):
            if w <= _CHUNK:
                q3, q4 = _select_row(cur, w, em, emu, ea, eau, eg, egu, pm, pa, pg, p3r, p4r)
            else:
                n = min(w - x0, _CHUNK)
                q3, q4 = _select_row(cur[x0:], n, em[x0:], emu[x0:], ea[x0:], eau[x0:], eg[x0:], egu[x0:], pm[x0:],
                                     pa[x0:], pg[x0:], p3r[x0:], p4r[x0:])
            c3 += q3
            c4 += q4
    costs[0] = c0
    costs[1] = c1
    costs[2] = c2
    costs[3] = c3
    costs[4] = c4


@nb.njit(**_JIT)
def _predictor_sad(P, h, w, lo, hi, kind, PS, pbuf):
    """Sum of |e| of predictor ``kind`` over the plane (SEL/SEL3 from PS, the others predicted row by row
    into pbuf)."""
    s = 0
    for y in range(h):
        cur = P[y + 1]
        if kind >= 3:
            pr = PS[kind - 3, y]
        else:
            _prediction_row(kind, cur, P[y], w, lo, hi, pbuf)
            pr = pbuf
        for x in range(w):
            s += abs(np.int64(cur[x + 1]) - np.int64(pr[x]))
    return s


@nb.njit(**_JIT)
def _prediction_row(kind, cur, up, w, lo, hi, pr):
    """Prediction ``kind`` (MED, AVG4 or AVG2) of one padded row into pr."""
    lo = _I(lo)
    hi = _I(hi)
    if kind == 0:
        for x in range(w):
            pr[x] = _med32(_I(cur[x]), _I(up[x + 1]), _I(up[x]), lo, hi)
    elif kind == 1:
        for x in range(w):
            a = _I(cur[x])
            b = _I(up[x + 1])
            pr[x] = _I(min(max(_I((_I(2 * a) + _I(2 * b) - _I(up[x]) + _I(up[x + 2]) + 2) >> 2), lo), hi))
    else:
        for x in range(w):
            pr[x] = _I(min(max(_I(_I(_I(cur[x]) + _I(up[x + 1]) + 1) >> 1), lo), hi))


@nb.njit(**_JIT)
def _residual_row(cur, pr, w, er, tr, ur, raw):
    """Residuals of one row: |e| into the padded row er, tokens into tr and into ur the zigzag codes u, or
    if raw their raw bits (the low bit_length(u) - 3 bits, below the three bits the token carries; none
    for tokens below 16). int32 arithmetic: |e| < 2**19."""
    for x in range(w):
        e = _I(_I(cur[x + 1]) - _I(pr[x]))
        er[x + 1] = _I(abs(e))
        u = _I(_I(e << 1) ^ _I(e >> 31))
        nn = _I(_blen32(u) - 1)
        t = _I(_I(4 * nn) + _I(_I(u >> _I(max(_I(nn - 2), _I(0)))) & 3))
        tr[x] = u if u < 16 else t
        rb = _I(u & _I(_I(_I(1) << _I(max(_I(nn - 2), _I(0)))) - 1)) if u >= 16 else _I(0)
        ur[x] = rb if raw else u


@nb.njit(**_JIT)
def _abs_sum(P, h, w):
    s = 0
    for y in range(h):
        row = P[y + 1]
        for x in range(w):
            s += abs(np.int64(row[x + 1]))
    return s, h * w


# ----------------------------------------------------------------------------- tables
@nb.njit(**_JIT)
def _hist_cost(hist, nctx):
    cost = 0
    for k in range(nctx):
        n = 0
        last = -1
        for s in range(NTOK):
            if hist[k, s]:
                n += hist[k, s]
                last = s
        if n == 0:
            continue
        lg = _mitchell(n)
        for s in range(last + 1):
            if hist[k, s]:
                cost += hist[k, s] * (lg - _mitchell(hist[k, s]))
        cost += 256 * (8 + 3 * (last + 1))
    return cost


@nb.njit(**_JIT)
def _write_freqs(tbuf, bst, row, wts, f, freq, start):
    """Write one context's frequency table (versions 1 and 2) from histogram ``row``; ``freq``/``start``
    get the normalised frequencies (zero for an empty context, written as one 0 bit). Returns nsym."""
    last = -1
    for s in range(NTOK):
        freq[s] = 0
        start[s] = 0
        if row[s]:
            last = s
    if last < 0:
        _bw_put(tbuf, bst, 0, 1)
        return 0
    nsym = last + 1
    _bw_put(tbuf, bst, 1, 1)
    _bw_put(tbuf, bst, nsym - 1, 7)
    for s in range(nsym):
        wts[s] = row[s]
    _normalize(wts, nsym, f)
    prev = 0
    for s in range(nsym):
        length = _blen(f[s])
        if length == prev:
            _bw_put(tbuf, bst, 0, 1)
        elif length == prev - 1:
            _bw_put(tbuf, bst, 1, 2)
        elif length == prev + 1:
            _bw_put(tbuf, bst, 3, 3)
        else:
            _bw_put(tbuf, bst, 7, 3)
            _bw_put(tbuf, bst, length, 4)
        mant = (f[s] >> (length - 2)) & 1 if length >= 2 else 0
        _bw_put(tbuf, bst, mant, 1 if length >= 2 else 0)
        wts[s] = _dequant(length, mant)
        prev = length
    _normalize(wts, nsym, f)
    acc = 0
    for s in range(NTOK):
        fs = f[s] if s < nsym else 0
        freq[s] = fs
        start[s] = acc
        acc += fs
    return nsym


# ----------------------------------------------------------------------------- plane model
_NLVL = len(LVL_THR) + 1  #: level classes
_NJ = _NCTX0 * _NLVL  #: joint classes (mode-0 context, level class): each fixes both modes' contexts
_HJ = _NJ * NTOK  #: bins of the joint histogram


@nb.njit(inline="always", **_JIT)
def _count1(jlut, ci, tr, jr, x, hj, off):
    k = _I(jlut[ci[x]] + _I(tr[x]))
    jr[x] = k
    hj[off + k] += 1


@nb.njit(**_JIT)
def _count_row(jlut, ci, tr, jr, w, hj):
    """Joint bins of one row (jr: joint class * NTOK + token; the class from jlut at the activity-level
    indices ci, the token from tr) and their counts in the four copies of hj (column x goes to copy
    x % 4, which cuts the chains of dependent increments when neighbours fall in the same bin)."""
    x = 0
    while x + 4 <= w:
        _count1(jlut, ci, tr, jr, x, hj, 0)
        _count1(jlut, ci, tr, jr, x + 1, hj, _HJ)
        _count1(jlut, ci, tr, jr, x + 2, hj, 2 * _HJ)
        _count1(jlut, ci, tr, jr, x + 3, hj, 3 * _HJ)
        x += 4
    while x < w:
        _count1(jlut, ci, tr, jr, x, hj, 0)
        x += 1


@nb.njit(**_JIT)
def _joint_tables(act0, act1, lvlt):
    """(jlut, map0, map1) of the context tables act0/act1/lvlt: jlut[act * 32 + lvl] = joint class * NTOK
    of (activity, level); map0/map1[joint class] = its mode-0/mode-1 context (the mode-1 activity classes
    merge mode-0 contexts, so each joint class has one context in each mode)."""
    jlut = np.empty(256 * 32, np.int32)
    map0 = np.zeros(_NJ, np.int64)
    map1 = np.zeros(_NJ, np.int64)
    for a in range(256):
        for lv in range(32):
            j = act0[a] * _NLVL + lvlt[lv]
            jlut[a * 32 + lv] = j * NTOK
            map0[j] = act0[a]
            map1[j] = act1[a] + lvlt[lv]
    return jlut, map0, map1


@nb.njit(**_JIT)
def _plane_model(P, h, w, lo, hi, is16, jlut, map0, map1, E, X, use_x, tok, jix, uu, tbuf, freq, start,
                 desc, cmap, raw):
    """The model of a plane (all versions that use version 1's model): predictor, shifts, tokens,
    contexts and context mode; writes the frequency tables (bit stream, zero padded) into tbuf.

    jlut, map0 and map1 are the context tables of :func:`_joint_tables`. Fills tok/jix/uu (raster order:
    token, joint bin = joint class * NTOK + token, zigzag residual u or if raw its raw bits, see
    _residual_row), cmap (context of each joint class in the chosen mode), freq/start (normalised table
    of each context), E (|e|, padded; X is the cross-plane |e| if use_x) and desc[0:5] = kind, mode,
    ashift, lshift, table bytes. Returns the table bytes (-1 if tbuf is too small). P, E and X may be of
    any signed integer dtype wide enough for the plane's values. The samples are counted once, in a
    joint (class, token) histogram that folds into both modes' histograms.
    """
    costs = np.zeros(5, np.int64)
    EM = np.empty((2, w + 2), np.int32)
    EA = np.empty((2, w + 2), np.int32)
    EG = np.empty((2, w + 2), np.int32)
    PS = np.empty((2, h, w), np.int32)
    _predictor_errors(P, h, w, lo, hi, EM, EA, EG, costs, PS)
    kind = 0
    for k in range(1, 5):
        if costs[k] < costs[kind]:
            kind = k
    ashift = 0
    lshift = 0
    pbuf = np.empty(w, np.int32)
    if is16:
        asum, cnt = _abs_sum(P, h, w)
        ashift = max(0, _bitlen(_predictor_sad(P, h, w, lo, hi, kind, PS, pbuf) // cnt) - 3)
        lshift = max(0, _bitlen(asum // cnt) - 5)
    ash = 1 + ashift
    xmul = _I(2 if use_x else 0)
    hj = np.zeros(4 * _HJ, np.int32)
    ci = np.empty(w, np.int32)
    E[0, :] = 0
    for y in range(h):
        cur = P[y + 1]
        up = P[y]
        if kind >= 3:
            pr = PS[kind - 3, y]
        else:
            _prediction_row(kind, cur, up, w, lo, hi, pbuf)
            pr = pbuf
        er = E[y + 1]
        er[0] = 0
        er[w + 1] = 0
        base = y * w
        _residual_row(cur, pr, w, er, tok[base:base + w], uu[base:base + w], raw)
        eu = E[y]
        xr = X[y + 1]
        for x in range(w):  # activity and level (no table look-ups: they vectorise badly)
            a = _I(cur[x])
            b = _I(up[x + 1])
            c = _I(up[x])
            d = _I(up[x + 2])
            act = _I(_I(abs(_I(a - c))) + _I(abs(_I(b - c))) + _I(abs(_I(b - d))) + _I(eu[x + 1]) + _I(eu[x])
                     + _I(eu[x + 2]) + _I(2 * _I(er[x])) + _I(xmul * _I(xr[x + 1])))
            act = _I(min(_I(act >> ash), 255))
            ci[x] = _I(act * 32) + _I(max(min(_I(pr[x] >> lshift), 31), 0))
        _count_row(jlut, ci, tok[base:base + w], jix[base:base + w], w, hj)
    hist0 = np.zeros((_NCTX0, NTOK), np.int64)
    hist1 = np.zeros((_NCTX1, NTOK), np.int64)
    for j in range(_NJ):
        k0 = map0[j]
        k1 = map1[j]
        for t in range(NTOK):
            i = j * NTOK + t
            v = hj[i] + hj[_HJ + i] + hj[2 * _HJ + i] + hj[3 * _HJ + i]
            hist0[k0, t] += v
            hist1[k1, t] += v
    mode = 1 if _hist_cost(hist1, _NCTX1) < _hist_cost(hist0, _NCTX0) else 0
    nctx = _NCTX1 if mode else _NCTX0
    hist = hist1 if mode else hist0
    cmap[:_NJ] = map1 if mode else map0
    bst = np.zeros(4, np.int64)
    wts = np.zeros(NTOK, np.int64)
    f = np.zeros(NTOK, np.int64)
    for k in range(nctx):
        _write_freqs(tbuf, bst, hist[k], wts, f, freq[k], start[k])
    _bw_finish(tbuf, bst)
    if bst[3]:
        return -1
    tl = bst[0]
    desc[0] = kind
    desc[1] = mode
    desc[2] = ashift
    desc[3] = lshift
    desc[4] = tl
    return tl


@nb.njit(**_JIT)
def _analyze_plane(P, h, w, lo, hi, is16, act0, act1, lvlt, E, X, use_x, tok, ctx, uu, tbuf, freq, start,
                   desc):
    """:func:`_plane_model` with each sample's context (of the chosen mode) in ctx (raster order) instead
    of its joint bin. Returns the table bytes (-1 if tbuf is too small)."""
    jix = np.empty(h * w, np.int16)
    cmap = np.empty(_NJ, np.int64)
    jlut, map0, map1 = _joint_tables(act0, act1, lvlt)
    tl = _plane_model(P, h, w, lo, hi, is16, jlut, map0, map1, E, X, use_x, tok, jix, uu, tbuf, freq, start,
                      desc, cmap, False)
    for i in range(h * w):
        ctx[i] = cmap[jix[i] // NTOK]
    return tl
