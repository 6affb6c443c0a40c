"""Vectorised Numba decoder of bitstream version 3 of the CSP lossless codec (``docs/codec.md`` §8).

The decoder behind ``numba_v3.decode``: same results and errors as the reference and the C decoder,
written so that LLVM turns each step's loops over the 32 lanes into SIMD code
(16 int32 lanes per AVX-512 vector, gathers for the table look-ups), in the layout of the C decoder
(``native/cspcodec3.c``):

* "skew" buffers: every per-sample array (value, ``|e|``, ``|x - MED|``, ``|x - AVG4|``,
  ``|x - GRAD|``) has one row of ``S = 34`` int32 slots per wavefront step; lane ``k``'s sample of step
  ``t`` is slot ``k + 2`` of row ``t``. Slot ``k + 1`` of rows ``t - 3 .. t - 1`` is then the
  above-left, above and above-right neighbour of lane ``k`` at step ``t``, slot ``k + 2`` of row
  ``t - 1`` its left neighbour and, at column 0, slot ``k`` of row ``t - 4`` the above-left pad
  (row - 2, column 0): contiguous loads for all lanes. Lane 0's row above belongs to lane ``L - 1``
  (``W - 2L`` steps earlier) and is copied to slot 1, its (row - 2, column 0) to slot 0;
* the lanes of the ramp-up and ramp-down steps and of planes with fewer than 32 lanes are computed
  and masked out (``on``); there is no separate scalar path;
* each loop either reads the plane arrays and writes only small stack arrays, or reads stack arrays and
  writes one plane array, so that LLVM needs no run-time aliasing checks to vectorise it;
* the shared word stream: a renormalisation is one vector compare, a population count of its mask and
  a masked expand-load (``llvm.masked.expandload``, VPEXPANDD) of the next words in lane order, from a
  zero-padded int32 copy of the stream (at most 32 words past a position checked after each phase);
* small LLVM intrinsics keep the lane arithmetic at int32 (Numba types shifts at 64 bits) and ask for
  512-bit vectors (``prefer-vector-width``, see :func:`_prefer_512`).

Every data-dependent index is clamped (activity 0..255, level 0..31, token 0..127) or checked (the
word position), so corrupt streams raise :class:`~csp.errors.CodecError` and never read or write out of
bounds. Measured on one core (CMU-1 240 x 240 H&E tiles): 81 MP/s against 18.4 MP/s for the scalar
decoder and 161 MP/s for the C decoder.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir as llvmir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from csp.codecs.lossless.numba_codec import (
    _ACT0,
    _ACT1,
    _E_DATA,
    _E_RANGE,
    _E_TABLE,
    _JIT,
    _LVL,
    _MAX_CTX,
    _MESSAGES,
    _NCTX0,
    _context_freqs,
    _plane_range,
)
from csp.codecs.lossless.reference import NTOK, PROB_BITS, RANS_L, TOTAL
from csp.errors import CodecError

__all__ = ["decode", "lane_count"]

LANES = 32  #: rANS states of a tile
_S = LANES + 2  #: slots per skew row (0, 1: lane 0's neighbours, see _plane_steps; 2..33: lanes 0..31)
_PAD = 4  #: skew rows before step 0 (steps -3..-1 are read)
_WPAD = 2 * LANES  #: zero words after the stream (one step reads at most 32 past a checked position)
_JITV = dict(_JIT, error_model="numpy")
i32 = np.int32
_ACT0_32, _ACT1_32, _LVL_32 = (t.astype(np.int32) for t in (_ACT0, _ACT1, _LVL))  #: context tables (int32 gathers)


@intrinsic
def _stack(typingctx, n, dtype):  # pragma: no cover - compiled
    """A pointer to ``n`` (a literal) uninitialised elements of ``dtype`` on the stack (an alloca in the
    function's entry block: LLVM knows it aliases no array, which lets it vectorise the lane loops)."""
    if not isinstance(n, types.IntegerLiteral):
        return None
    size = n.literal_value
    dt = dtype.dtype

    def impl(context, builder, sig, args):
        return cgutils.alloca_once(builder, context.get_value_type(dt), size=size)

    return types.CPointer(dt)(n, dtype), impl


@intrinsic
def _prefer_512(typingctx):  # pragma: no cover - compiled
    """Ask LLVM for 512-bit vectors in the calling function (the ``prefer-vector-width`` attribute: the
    host CPU model may prefer 256 bits, which halves the lanes per instruction; CPUs without AVX-512
    ignore it). llvmlite only accepts the attribute names it knows, hence the plain set insertion; if
    its attribute set changes shape, the function is compiled without the hint."""

    def impl(context, builder, sig, args):
        attrs = builder.function.attributes
        if isinstance(attrs, set):
            set.add(attrs, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), impl


@nb.njit(inline="always", **_JITV)
def _lanes32():
    """A stack array of 32 int32."""
    return nb.carray(_stack(LANES, np.int32), (LANES,))


@nb.njit(**_JITV)
def lane_count(w: int) -> int:
    """Number of wavefront lanes ``L`` of a plane ``w`` samples wide (bitstream version 3, §8)."""
    return min(LANES, max(1, w // 2))


@nb.njit(**_JITV)
def _steps(h, w, nl):
    """Number of wavefront steps of a plane."""
    n = 0
    for k in range(min(nl, h)):
        n = max(n, 2 * k + ((h - k + nl - 1) // nl) * w)
    return n


def _shift32(op: str, doc: str):
    """An int32 shift intrinsic ``op(x, n)`` (``0 <= n < 32``): Numba types shifts at 64 bits, which
    makes LLVM widen a whole lane computation to int64 vectors (8 lanes per vector instead of 16)."""

    def typer(typingctx, x, n):  # pragma: no cover - compiled
        if x != types.int32 or not isinstance(n, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], context.cast(builder, args[1], n, types.int32))

        return types.int32(x, n), codegen

    typer.__doc__ = doc
    typer.__name__ = f"_{op}32"
    return intrinsic(typer)


_sar32 = _shift32("ashr", "x >> n, arithmetic, on int32")
_shr32 = _shift32("lshr", "x >> n, logical, on the uint32 bit pattern of an int32")
_shl32 = _shift32("shl", "x << n on int32")


@intrinsic
def _renorm(typingctx, xs, xd, on, words, wp):  # pragma: no cover - compiled
    """The renormalisation of the 32 lane states xs (int32 arrays of 32, the uint32 states' bit
    patterns) into xd: the active lanes (on[k] != 0) whose state is below 2^16 take the next words of
    the stream in lane order, ``x = (x << 16) | words[wp + (the number of such lanes below k)]``; returns
    the new position ``wp + (the number of such lanes)``. One vector compare, a population count of its
    mask and a masked expand-load (VPEXPANDD) of the words: it reads words[wp:wp + 32] at most."""
    if not (isinstance(wp, types.Integer) and all(isinstance(a, types.Array) and a.dtype == types.int32
                                                  for a in (xs, xd, on, words))):
        return None
    sig = types.int64(xs, xd, on, words, types.int64)

    def codegen(context, builder, sig, args):
        arrs = [context.make_array(t)(context, builder, a) for t, a in zip(sig.args[:4], args[:4])]
        i32 = llvmir.IntType(32)
        vty = llvmir.VectorType(i32, LANES)
        vptr = vty.as_pointer()
        x = builder.load(builder.bitcast(arrs[0].data, vptr), align=4)
        onv = builder.load(builder.bitcast(arrs[2].data, vptr), align=4)
        zero = llvmir.Constant(vty, [0] * LANES)
        need = builder.and_(builder.icmp_unsigned("<", x, llvmir.Constant(vty, [RANS_L] * LANES)),
                            builder.icmp_signed("!=", onv, zero))
        ctpop = cgutils.get_or_insert_function(builder.module, llvmir.FunctionType(i32, [i32]), "llvm.ctpop.i32")
        cnt = builder.zext(builder.call(ctpop, [builder.bitcast(need, i32)]), llvmir.IntType(64))
        expand = cgutils.get_or_insert_function(
            builder.module, llvmir.FunctionType(vty, [i32.as_pointer(), llvmir.VectorType(llvmir.IntType(1), LANES), vty]),
            f"llvm.masked.expandload.v{LANES}i32")
        wv = builder.call(expand, [builder.gep(arrs[3].data, [args[4]]), need, zero])
        xn = builder.select(need, builder.or_(builder.shl(x, llvmir.Constant(vty, [16] * LANES)), wv), x)
        builder.store(xn, builder.bitcast(arrs[1].data, vptr), align=4)
        return builder.add(args[4], cnt)

    return sig, codegen


@nb.njit(inline="always", **_JITV)
def _plane_steps(words, nw, wp, xl, ent, actt, lvlt, ash, lsh, xm, h, w, lo, hi, P, E, M, A, G, X0,
                 kind, kvar):
    """Decode one plane into the skew buffers P, E (and M, A, G for the SEL predictors); xl holds the
    32 lane states (int32 bit patterns of the uint32 states, updated), words[wp:nw] the stream
    (zero-padded to nw + _WPAD); X0 is plane 0's E, weighted by xm (2 for the cross-plane context, else
    0). kind is the predictor and kvar a constant at every inlined call site (0: kind 0, 1 or 2, chosen
    per lane with a select; 3: SEL; 4: SEL3), so that the SEL code folds away. Returns (error code, word
    position).

    All lane arithmetic is int32 (each result is cast back to int32 so that LLVM keeps 16 lanes per
    512-bit vector); array indices are cast to uint64 (non-negative) so that Numba emits no negative
    index wraparound."""
    _prefer_512()
    S = _S
    nl = lane_count(w)
    nsteps = _steps(h, w, nl)
    sel = kvar >= 3
    lo32 = i32(lo)
    hi32 = i32(hi)
    xmask = i32(-1) if xm else i32(0)  # plane 0's |e| enters the activity (twice) in cross-plane mode
    ash32 = i32(ash)  # 1..16
    lsh32 = i32(lsh)  # 0..15
    wl = i32(w - 1)
    w32 = i32(w)
    # zero what is read before it is written: rows -4..-1, and slots 0 and 1 (lane 0's neighbours) up
    # to row 2W + 4 (lane 0's first row reads row -1 there, and with one lane row -2 too)
    zr = min(P.size // S, _PAD + 2 * w + 5)
    for i in range(_PAD * S):
        P[i] = 0
        E[i] = 0
        if sel:
            M[i] = 0
            A[i] = 0
            G[i] = 0
    for r in range(_PAD, zr):
        P[r * S] = 0
        P[r * S + 1] = 0
        E[r * S + 1] = 0
        if sel:
            M[r * S + 1] = 0
            A[r * S + 1] = 0
            G[r * S + 1] = 0
    q = _lanes32()  # sample index of the lane at the current step
    nq = _lanes32()  # number of samples of the lane
    col = _lanes32()  # column of the lane's sample (q mod W, also before the lane starts)
    on = _lanes32()  # the lane is active at this step
    x1 = _lanes32()
    xs = _lanes32()  # the lane states (a stack copy of xl)
    tok = _lanes32()
    pr = _lanes32()
    pm = _lanes32()
    pa = _lanes32()
    pg = _lanes32()
    tv = _lanes32()
    te = _lanes32()
    tm = _lanes32()
    ta = _lanes32()
    tg = _lanes32()
    for k in range(LANES):
        q[k] = -2 * k
        nq[k] = ((h - k + nl - 1) // nl) * w if k < min(nl, h) else 0
        col[k] = (-2 * k) % w
    nlan = xl.size  # = LANES, as a value LLVM does not know (see the copies below)
    for k in range(LANES):
        xs[k] = xl[k]
    # lane 0 reads the row above from slot 1 (lane nl - 1's sample of step t goes to row t + wrap) and,
    # at column 0, (row - 2, column 0) from slot 0 of row t - 4: lane nl - 2's sample of step t goes to
    # row t + wrap2 (with one lane: its own sample, two rows later)
    wrap = w - 2 * nl + _PAD
    last = nl - 1
    last2 = nl - 2 if nl >= 2 else 0
    wrap2 = wrap if nl >= 2 else 2 * w - 4 + _PAD
    for t in range(nsteps):
        r = (t + _PAD) * S
        r1 = r - S
        r2 = r - 2 * S
        r3 = r - 3 * S
        r4 = r - 4 * S
        # phase A: prediction, context and token of every lane (every load is unconditional and in
        # bounds, then selected: LLVM keeps contiguous vector loads instead of gathers)
        for k in range(LANES):
            qk = q[k]  # the lane's position (its sample index and column), advanced for the next step
            ck = col[k]
            q[k] = i32(qk + 1)
            cn = i32(ck + 1)
            col[k] = i32(0) if cn == w32 else cn
            act_k = qk >= 0 and qk < nq[k]
            on[k] = i32(1) if act_k else i32(0)
            x0 = ck == 0
            xw = ck == wl
            b = P[np.uint64(r2 + k + 1)]
            aP = P[np.uint64(r1 + k + 2)]
            cP = P[np.uint64(r3 + k + 1)]
            dP = P[np.uint64(r1 + k + 1)]
            cZ = P[np.uint64(r4 + k)]
            eaP = E[np.uint64(r1 + k + 2)]
            ecP = E[np.uint64(r3 + k + 1)]
            edP = E[np.uint64(r1 + k + 1)]
            eb = E[np.uint64(r2 + k + 1)]
            a = b if x0 else aP
            c = cZ if x0 else cP
            d = b if xw else dP
            ea = i32(0) if x0 else eaP
            ec = i32(0) if x0 else ecP
            ed = i32(0) if xw else edP
            mx = max(a, b)
            mn = min(a, b)
            grad = i32(a + b - c)
            med = max(mn, min(mx, grad))  # (within [lo, hi] as a, b are: no clamp)
            avg = min(max(i32(i32(2 * a + 2 * b - c + d + 2) >> 2), lo32), hi32)
            if kvar == 0:
                half = i32(i32(a + b + 1) >> 1)
                p = med if kind == 0 else (avg if kind == 1 else half)
            else:
                maP = M[np.uint64(r1 + k + 2)]
                mcP = M[np.uint64(r3 + k + 1)]
                mdP = M[np.uint64(r1 + k + 1)]
                mb = M[np.uint64(r2 + k + 1)]
                aaP = A[np.uint64(r1 + k + 2)]
                acP = A[np.uint64(r3 + k + 1)]
                adP = A[np.uint64(r1 + k + 1)]
                ab = A[np.uint64(r2 + k + 1)]
                sm = i32(2 * i32((i32(0) if x0 else maP) + mb) + (i32(0) if x0 else mcP) + (i32(0) if xw else mdP))
                sa = i32(2 * i32((i32(0) if x0 else aaP) + ab) + (i32(0) if x0 else acP) + (i32(0) if xw else adP))
                p = med if sm <= sa else avg
                if kvar == 4:
                    gaP = G[np.uint64(r1 + k + 2)]
                    gcP = G[np.uint64(r3 + k + 1)]
                    gdP = G[np.uint64(r1 + k + 1)]
                    gb = G[np.uint64(r2 + k + 1)]
                    grad = min(max(grad, lo32), hi32)
                    sg = i32(2 * i32((i32(0) if x0 else gaP) + gb) + (i32(0) if x0 else gcP)
                             + (i32(0) if xw else gdP))
                    p = grad if sg < min(sm, sa) else p
            xe = X0[np.uint64(r + k + 2)] & xmask
            act = i32(i32(i32(abs(i32(a - c))) + i32(abs(i32(b - c)))) + i32(i32(abs(i32(b - d))) + eb)
                      + i32(ec + ed) + i32(2 * i32(ea + xe)))
            # (activity and level clamped: idle lanes compute from anything)
            ai = min(max(_sar32(act, ash32), i32(0)), i32(255))
            li = i32(0) if p < 0 else min(_sar32(p, lsh32), i32(31))
            ctx = i32(actt[np.uint64(ai)] + lvlt[np.uint64(li)])
            x = xs[k]
            e_ = ent[np.uint64(i32(i32(ctx << PROB_BITS) | i32(x & (TOTAL - 1))))]
            xn = i32(i32(e_ >> 19) * i32(i32(x >> PROB_BITS) & 0x1FFFFF) + i32(i32(e_ >> 7) & 0xFFF))
            x1[k] = xn if act_k else x  # idle lanes keep their state (token 0: no raw bits)
            tok[k] = i32(e_ & 0x7F) if act_k else i32(0)
            pr[k] = p
            pm[k] = med
            pa[k] = avg
            pg[k] = grad
        wp = _renorm(x1, x1, on, words, wp)
        if wp > nw:
            return _E_DATA, wp
        # phase B: raw bits, then the sample
        bad = i32(0)
        for k in range(LANES):
            s = min(tok[k], i32(NTOK - 1))
            x = x1[k]
            # token -> raw-bit count and base of u (docs/codec.md §4; numba_v2._TOK_NB, _TOK_BASE)
            sm = i32(s - 16)
            big = s >= 16
            nbits = i32(_sar32(sm, i32(2)) + 2) if big else i32(0)
            base = _shl32(i32(i32(sm & 3) | 4), nbits) if big else s
            u = i32(base | i32(x & i32(_shl32(i32(1), nbits) - 1)))
            xn = _shr32(x, nbits)
            x1[k] = xn
            e = i32(i32(u >> 1) ^ i32(-i32(u & 1)))
            v = i32(pr[k] + e)
            bad |= i32(1) if (on[k] != 0 and (v < lo32 or v > hi32)) else i32(0)
            tv[k] = v
            te[k] = abs(e)
            if sel:
                tm[k] = abs(i32(v - pm[k]))
                ta[k] = abs(i32(v - pa[k]))
                tg[k] = abs(i32(v - pg[k]))
        wp = _renorm(x1, xs, on, words, wp)
        if wp > nw:
            return _E_DATA, wp
        if bad:
            return _E_RANGE, wp
        # copies to the plane arrays: a trip count unknown to LLVM (nlan = 32) keeps these loops
        # vectorised (LLVM unrolled them fully into 32 scalar moves each)
        r0 = r + 2
        for k in range(nlan):
            P[np.uint64(r0 + k)] = tv[k]
        for k in range(nlan):
            E[np.uint64(r0 + k)] = te[k]
        if sel:
            for k in range(nlan):
                M[np.uint64(r0 + k)] = tm[k]
            for k in range(nlan):
                A[np.uint64(r0 + k)] = ta[k]
            if kvar == 4:
                for k in range(nlan):
                    G[np.uint64(r0 + k)] = tg[k]
        if on[last]:  # lane 0's row above
            rw = (t + wrap) * S + 1
            P[rw] = tv[last]
            E[rw] = te[last]
            if sel:
                M[rw] = tm[last]
                A[rw] = ta[last]
                G[rw] = tg[last]
        if on[last2]:  # lane 0's sample (row - 2, column 0), the above-left pad of column 0
            P[(t + wrap2) * S] = tv[last2]
    for k in range(LANES):
        xl[k] = xs[k]
    return 0, wp


@nb.njit(**_JITV)
def _read_tables(data, st, nctx, ent):
    """Read one plane's nctx context tables (version 1's format, ``docs/codec.md`` §5) with the bit
    reader st (see numba_codec._br_get) into the flat decoding table ent: ent[k * 2048 + slot] =
    token | (slot - start) << 7 | freq << 19. Each context is parsed by numba_codec._context_freqs
    (version 1's checks); its slots are filled with contiguous stores (vectorised), a frequency sum above 2048 (which a
    later context would overwrite there) is cut at the row's end. Returns 0 or _E_TABLE."""
    f = np.zeros(NTOK, np.int64)
    wts = np.zeros(NTOK, np.int64)
    for k in range(nctx):
        nsym = _context_freqs(data, st, f, wts)
        if nsym < 0:
            return nsym
        row = k * TOTAL
        acc = 0
        for s in range(nsym):
            n = min(f[s], TOTAL - acc)
            base = i32(s | (f[s] << 19))
            at = row + acc
            for q in range(n):
                ent[np.uint64(at + q)] = i32(base | i32(q << 7))
            acc += n
        for q in range(acc, TOTAL):  # (never: the frequencies sum to at least 2048)
            ent[np.uint64(row + q)] = 0
    return 0


@nb.njit(**_JITV)
def _decode_plane(words, nw, wp, xl, ent, actt, lvlt, ash, lsh, xm, h, w, lo, hi, P, E, M, A, G, X0,
                  kind):
    """_plane_steps specialised for the SEL predictors (its code is inlined with a constant kvar)."""
    if kind <= 2:
        return _plane_steps(words, nw, wp, xl, ent, actt, lvlt, ash, lsh, xm, h, w, lo, hi, P, E, M, A,
                            G, X0, kind, 0)
    if kind == 3:
        return _plane_steps(words, nw, wp, xl, ent, actt, lvlt, ash, lsh, xm, h, w, lo, hi, P, E, M, A,
                            G, X0, kind, 3)
    return _plane_steps(words, nw, wp, xl, ent, actt, lvlt, ash, lsh, xm, h, w, lo, hi, P, E, M, A, G,
                        X0, kind, 4)


@nb.njit(**_JITV)
def _store_plane(P, h, w, nl, pl, out):
    """out[:, :, pl] = the plane in the skew buffer P (nl lanes)."""
    c = out.shape[2]
    of = out.reshape(-1)
    for y in range(h):
        k = y % nl
        i0 = (_PAD + (y // nl) * w + 2 * k) * _S + k + 2
        o = y * w * c + pl
        for x in range(w):
            of[np.uint64(o + x * c)] = P[np.uint64(i0 + x * _S)]


@nb.njit(**_JITV)
def _store_rct(P0, P1, P2, h, w, nl, xform, maxv, out):
    """out = the inverse RCT (transform xform) of the three planes in the skew buffers P0, P1, P2 (as
    numba_codec._store_rct_pixel); returns _E_RANGE if a sample leaves [0, maxv] (out is then partly
    written), else 0."""
    of = out.reshape(-1)
    kx = i32(xform - 1)
    mv = i32(maxv)
    bad = i32(0)
    for y in range(h):
        k = y % nl
        i0 = (_PAD + (y // nl) * w + 2 * k) * _S + k + 2
        o = y * w * 3
        for x in range(w):
            i = np.uint64(i0 + x * _S)
            u = P1[i]
            v0 = i32(P2[i] + i32(i32(kx * u) >> 2))
            g = i32(P0[i] - i32(i32(u + v0) >> 2))
            r = i32(u + g)
            b = i32(v0 + g)
            bad = i32(bad | r | g | b | i32(mv - r) | i32(mv - g) | i32(mv - b))  # negative: out of range
            j = np.uint64(o + 3 * x)
            of[j] = r
            of[j + np.uint64(1)] = g
            of[j + np.uint64(2)] = b
    return _E_RANGE if bad < 0 else 0


@nb.njit(**_JITV)
def _decode_kernel(data, words, descs, h, w, c, xform, maxv, toff, tlen, act0, act1, lvlt, out):
    """Decode a checked stream (tables at data[toff:toff + tlen], then the lane states; its words as
    int32 in words, followed by _WPAD zeros) into out; returns 0 or a negative error code."""
    nl = lane_count(w)
    nsteps = _steps(h, w, nl)
    rows = _PAD + nsteps + 2 * w + 8
    size = rows * _S
    nP = 3 if xform else 1
    Pb = np.empty((nP, size), np.int32)
    Eb = np.empty((2 if xform else 1, size), np.int32)
    sel = False
    for pl in range(c):
        sel |= descs[pl, 0] >= 3
    ms = size if sel else _S * (_PAD + 1)
    M = np.empty(ms, np.int32)
    A = np.empty(ms, np.int32)
    G = np.empty(ms, np.int32)
    ent = np.empty(_MAX_CTX * TOTAL, np.int32)  # see _read_tables
    lvl0 = np.zeros(lvlt.size, lvlt.dtype)
    xl = np.zeros(LANES, np.int32)
    so = toff + tlen
    for k in range(LANES):
        v = np.int64(0)
        for i in range(4):
            v |= np.int64(data[so + 4 * k + i]) << (8 * i)
        xl[k] = i32(v)
    nw = words.size - _WPAD
    wp = 0
    tp = toff
    tend = toff + tlen
    for pl in range(c):
        mode = descs[pl, 1]
        st = np.array([tp, tend, tp, 0, 0, 0], np.int64)
        rc = _read_tables(data, st, 30 if mode else _NCTX0, ent)
        if rc:
            return rc
        tp += (st[5] + 7) // 8
        P = Pb[pl if xform else 0]
        E = Eb[1 if (xform and pl > 0) else 0]
        lo, hi = _plane_range(xform, pl, maxv)
        rc, wp = _decode_plane(words, nw, wp, xl, ent, act1 if mode else act0,
                               lvlt if mode else lvl0, 1 + descs[pl, 2], descs[pl, 3],
                               2 if (xform >= 1 and pl > 0) else 0, h, w, lo, hi, P, E, M, A, G, Eb[0], descs[pl, 0])
        if rc:
            return rc
        if not xform:
            _store_plane(P, h, w, nl, pl, out)
    if tp != tend:
        return _E_TABLE
    if wp != nw:
        return _E_DATA
    for k in range(LANES):
        if xl[k] != RANS_L:
            return _E_DATA
    if xform:
        return _store_rct(Pb[0], Pb[1], Pb[2], h, w, nl, xform, maxv, out)
    return 0


def decode(data: bytes | bytearray | memoryview | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a version-3 stream to its ``(H, W, C)`` tile (into ``out`` when given: C-contiguous, same
    shape and dtype).

    Raises
    ------
    CodecError
        The stream is corrupt, truncated, of another version, or does not fit ``out``.
    """
    from csp.codecs.lossless.numba_v3 import parse_header

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
    w0 = toff + tlen + 4 * LANES
    nw = (buf.size - w0) // 2  # parse_header checked the length
    words = np.zeros(nw + _WPAD, np.int32)
    words[:nw] = np.frombuffer(buf, "<u2", nw, w0)
    rc = _decode_kernel(buf, words, descs, h, w, c, xform, 65535 if dtype == np.uint16 else 255, toff, tlen,
                        _ACT0_32, _ACT1_32, _LVL_32, out)
    if rc:
        raise CodecError(None, f"csp codec (Numba, version 3): {_MESSAGES.get(rc, f'error {rc}')}")
    return out
