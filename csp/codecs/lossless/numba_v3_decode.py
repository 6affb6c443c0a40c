"""Vectorised Numba decoder of bitstream version 3 of the CSP lossless codec (``docs/codec.md`` §8).

The decoder behind ``numba_v3.decode``: same results and errors as the reference and the C decoder,
written so that LLVM turns each step's loops over the 32 lanes into SIMD code
(16 int32 lanes per AVX-512 vector, gathers for the table look-ups), in the layout of the C decoder
(``native/cspcodec3.c``):

* "skew" buffers: every per-sample array (value, ``|e|``, ``|x - MED|``, ``|x - AVG4|``,
  ``|x - GRAD|``) has one row of ``S = 34`` slots per wavefront step (int16 for 8-bit tiles, whose
  values lie in [-510, 510] and errors within +-2040: half the memory, sign-extending loads; the lane
  arithmetic stays int32 and a sample is range-checked before it is narrowed; int32 for 16-bit
  tiles); lane ``k``'s sample of step
  ``t`` is slot ``k + 2`` of row ``t``. Slot ``k + 1`` of rows ``t - 3 .. t - 1`` is then the
  above-left, above and above-right neighbour of lane ``k`` at step ``t``, slot ``k + 2`` of row
  ``t - 1`` its left neighbour and, at column 0, slot ``k`` of row ``t - 4`` the above-left pad
  (row - 2, column 0): contiguous loads for all lanes. Lane 0's row above belongs to lane ``L - 1``
  (``W - 2L`` steps earlier) and is copied to slot 1, its (row - 2, column 0) to slot 0;
* the lanes of the ramp-up and ramp-down steps and of planes with fewer than 32 lanes are computed
  and masked out (``on``); there is no separate scalar path;
* phase A (neighbours, prediction, context, token) is a Numba loop that reads the plane arrays and
  writes only small stack arrays, so that LLVM needs no run-time aliasing checks to vectorise it;
  phase B is one intrinsic in LLVM vector IR (:func:`_phase_b`): both renormalisations, the raw bits,
  the samples and their stores into the stack and plane arrays, with the 32 states in registers
  throughout (the loop version went through the stack three times a step, in 8-lane pieces);
* the shared word stream: a renormalisation is one vector compare, a population count of its mask and
  a masked expand-load (``llvm.masked.expandload``, VPEXPANDD) of the next words in lane order, from a
  zero-padded int32 copy of the stream (at most 64 words past a position checked after each step);
* small LLVM intrinsics keep the lane arithmetic at int32 (Numba types shifts at 64 bits) and ask for
  512-bit vectors (``prefer-vector-width``, see :func:`_prefer_512`).

Every data-dependent index is clamped (activity 0..255, level 0..31, token 0..75) or checked (the
word position), so corrupt streams raise :class:`~csp.errors.CodecError` and never read or write out of
bounds. Measured on one core (240 x 240 H&E tiles of CMU-1 / TCGA, a shared machine): 78-86 MP/s
against 156-164 MP/s for the C decoder in the same runs, 1.9-2.0x (before the int16 buffers and
_phase_b: 2.05-2.25x; interleaved A/B +12-25% depending on the load).
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
_WPAD = 2 * LANES  #: zero words after the stream (one step reads at most 64 past a checked position)
_JITV = dict(_JIT, error_model="numpy")
i32 = np.int32
assert len(_ACT0) == len(_ACT1) == 256 and len(_LVL) == 32
_A1 = int(np.flatnonzero(np.diff(_ACT1))[-1] + 1) if np.any(np.diff(_ACT1)) else 0  #: _ACT1 is constant from here
#: the context of an activity class a (0..255) and a level class l (0..31): _CTXT[a] in mode 0 (no levels),
#: _CTXT[256 + 32 * min(a, _A1) + l] in mode 1 (one gather per lane instead of two)
_CTXT = np.concatenate([_ACT0, (_ACT1[:_A1 + 1, None] + _LVL[None, :]).reshape(-1)]).astype(np.int32)


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
_shl32 = _shift32("shl", "x << n on int32")


def _renorm_ir(builder, x, onv, wptr, wp):
    """LLVM IR of a renormalisation: the active lanes (onv != 0) whose state is below 2^16 take the next
    words in lane order, ``x = (x << 16) | words[wp + (the number of such lanes below k)]`` (one vector
    compare, a population count of its mask and a masked expand-load, VPEXPANDD, of at most 32 words);
    x (<32 x i32>) holds the states' uint32 bit patterns, onv (<32 x i32>) the lane mask, wptr points
    to the int32 word array's data, wp (i64) is the position; returns (the new states, the new
    position)."""
    i32t = llvmir.IntType(32)
    vty = llvmir.VectorType(i32t, LANES)
    zero = llvmir.Constant(vty, [0] * LANES)
    need = builder.and_(builder.icmp_unsigned("<", x, llvmir.Constant(vty, [RANS_L] * LANES)),
                        builder.icmp_signed("!=", onv, zero))
    ctpop = cgutils.get_or_insert_function(builder.module, llvmir.FunctionType(i32t, [i32t]), "llvm.ctpop.i32")
    cnt = builder.zext(builder.call(ctpop, [builder.bitcast(need, i32t)]), llvmir.IntType(64))
    expand = cgutils.get_or_insert_function(
        builder.module, llvmir.FunctionType(vty, [i32t.as_pointer(), llvmir.VectorType(llvmir.IntType(1), LANES), vty]),
        f"llvm.masked.expandload.v{LANES}i32")
    wv = builder.call(expand, [builder.gep(wptr, [wp]), need, zero])
    xn = builder.select(need, builder.or_(builder.shl(x, llvmir.Constant(vty, [16] * LANES)), wv), x)
    return xn, builder.add(wp, cnt)


def _is_lanes(*arrs) -> bool:  # pragma: no cover - used at compile time
    return all(isinstance(a, types.Array) and a.dtype == types.int32 for a in arrs)


@intrinsic
def _phase_b(typingctx, x1, tok, on, pr, pm, pa, pg, words, wp, lo, hi, xs, tv, te, tm, ta, tg, P, E, M, A, G, r0,
             nst):  # pragma: no cover
    """The second half of a step for the 32 lanes, in vector registers: the renormalisation of the
    states x1 (see :func:`_renorm_ir`), the raw bits of the tokens tok (x >>= nbits, u = base | bits;
    ``docs/codec.md`` §4), the residual e (zigzag of u), the sample v = pr + e and the second
    renormalisation into xs; stores v, |e|, |v - pm|, |v - pa|, |v - pg| into tv, te, tm, ta, tg (idle
    lanes included: their values are never used), and the first nst of these five vectors into the
    plane arrays P, E, M, A, G at r0 (narrowed to their dtype, int16 or int32: a range error is
    returned before they are read). Returns (the word position after both
    renormalisations, 1 if an active lane's sample lies outside [lo, hi] else 0). Every lane value
    is int32 with wrap-around, as in the scalar formulas; words[wp:wp + 64] are read at most."""
    arrs = (x1, tok, on, pr, pm, pa, pg, words, xs, tv, te, tm, ta, tg)
    planes = (P, E, M, A, G)
    if not (_is_lanes(*arrs) and all(isinstance(v, types.Integer) for v in (wp, lo, hi, r0, nst))
            and all(isinstance(a, types.Array) and a.dtype in (types.int16, types.int32) for a in planes)):
        return None
    sig = types.UniTuple(types.int64, 2)(x1, tok, on, pr, pm, pa, pg, words, types.int64, types.int32,
                                         types.int32, xs, tv, te, tm, ta, tg, P, E, M, A, G, types.int64,
                                         types.int64)

    def codegen(context, builder, sig, args):
        ar = [context.make_array(t)(context, builder, a).data if isinstance(t, types.Array) else a
              for t, a in zip(sig.args, args)]
        i32t = llvmir.IntType(32)
        vty = llvmir.VectorType(i32t, LANES)
        vptr = vty.as_pointer()

        def splat(v):
            return llvmir.Constant(vty, [v] * LANES)

        def vsplat(v):  # a run-time i32 in every lane
            u = builder.insert_element(llvmir.Constant(vty, llvmir.Undefined), v, llvmir.Constant(i32t, 0))
            return builder.shuffle_vector(u, u, llvmir.Constant(vty, [0] * LANES))

        def load(p):
            return builder.load(builder.bitcast(p, vptr), align=4)

        def store(v, p):
            builder.store(v, builder.bitcast(p, vptr), align=4)

        absf = cgutils.get_or_insert_function(builder.module, llvmir.FunctionType(vty, [vty, llvmir.IntType(1)]),
                                              f"llvm.abs.v{LANES}i32")

        def vabs(v):
            return builder.call(absf, [v, llvmir.Constant(llvmir.IntType(1), 0)])

        x1p, tokp, onp, prp, pmp, pap, pgp, wordsp, wp, lo, hi, xsp, tvp, tep, tmp, tap, tgp = ar[:17]
        r0, nst = ar[22:]
        onv = load(onp)
        x, wp = _renorm_ir(builder, load(x1p), onv, wordsp, wp)
        tk = load(tokp)
        s = builder.select(builder.icmp_signed("<", tk, splat(NTOK - 1)), tk, splat(NTOK - 1))
        sm = builder.sub(s, splat(16))
        big = builder.icmp_signed(">=", s, splat(16))
        nbits = builder.select(big, builder.add(builder.ashr(sm, splat(2)), splat(2)), splat(0))
        base = builder.select(big, builder.shl(builder.or_(builder.and_(sm, splat(3)), splat(4)), nbits), s)
        u = builder.or_(base, builder.and_(x, builder.sub(builder.shl(splat(1), nbits), splat(1))))
        x = builder.lshr(x, nbits)
        e = builder.xor(builder.ashr(u, splat(1)), builder.sub(splat(0), builder.and_(u, splat(1))))
        v = builder.add(load(prp), e)
        out = builder.or_(builder.icmp_signed("<", v, vsplat(lo)), builder.icmp_signed(">", v, vsplat(hi)))
        out = builder.and_(out, builder.icmp_signed("!=", onv, splat(0)))
        bad = builder.icmp_unsigned("!=", builder.bitcast(out, i32t), llvmir.Constant(i32t, 0))
        vals = (v, vabs(e), vabs(builder.sub(v, load(pmp))), vabs(builder.sub(v, load(pap))),
                vabs(builder.sub(v, load(pgp))))
        for j, (val, dst) in enumerate(zip(vals, (tvp, tep, tmp, tap, tgp))):
            store(val, dst)
            with builder.if_then(builder.icmp_signed(">", nst, llvmir.Constant(nst.type, j))):
                et = context.get_data_type(sig.args[17 + j].dtype)
                nv = val if et.width == 32 else builder.trunc(val, llvmir.VectorType(et, LANES))
                builder.store(nv, builder.bitcast(builder.gep(ar[17 + j], [r0]), nv.type.as_pointer()),
                              align=et.width // 8)
        x, wp = _renorm_ir(builder, x, onv, wordsp, wp)
        store(x, xsp)
        return context.make_tuple(builder, sig.return_type, [wp, builder.zext(bad, llvmir.IntType(64))])

    return sig, codegen


@nb.njit(inline="always", **_JITV)
def _plane_steps(words, nw, wp, xl, ent, ctxt, mode, ash, lsh, xm, h, w, lo, hi, P, E, M, A, G, X0,
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
    a1 = i32(_A1)
    # 0, as a value LLVM does not know: an index it cannot prove non-negative stays sign-extended from
    # 32 bits, which lets the gather use 32-bit indices (VPGATHERDD, 16 lanes; a zero-extended index
    # gives two 8-lane VPGATHERQD)
    z0 = i32(xl.size - LANES)
    m1 = mode != 0
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
    for k in range(LANES):
        xs[k] = xl[k]
    # lane 0 reads the row above from slot 1 (lane nl - 1's sample of step t goes to row t + wrap) and,
    # at column 0, (row - 2, column 0) from slot 0 of row t - 4: lane nl - 2's sample of step t goes to
    # row t + wrap2 (with one lane: its own sample, two rows later)
    wrap = w - 2 * nl + _PAD
    last = nl - 1
    last2 = nl - 2 if nl >= 2 else 0
    wrap2 = wrap if nl >= 2 else 2 * w - 4 + _PAD
    nst = (5 if kvar == 4 else 4) if sel else 2  # plane arrays written per step (P, E[, M, A[, G]])
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
            b = i32(P[np.uint64(r2 + k + 1)])
            aP = i32(P[np.uint64(r1 + k + 2)])
            cP = i32(P[np.uint64(r3 + k + 1)])
            dP = i32(P[np.uint64(r1 + k + 1)])
            cZ = i32(P[np.uint64(r4 + k)])
            eaP = i32(E[np.uint64(r1 + k + 2)])
            ecP = i32(E[np.uint64(r3 + k + 1)])
            edP = i32(E[np.uint64(r1 + k + 1)])
            eb = i32(E[np.uint64(r2 + k + 1)])
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
                maP = i32(M[np.uint64(r1 + k + 2)])
                mcP = i32(M[np.uint64(r3 + k + 1)])
                mdP = i32(M[np.uint64(r1 + k + 1)])
                mb = i32(M[np.uint64(r2 + k + 1)])
                aaP = i32(A[np.uint64(r1 + k + 2)])
                acP = i32(A[np.uint64(r3 + k + 1)])
                adP = i32(A[np.uint64(r1 + k + 1)])
                ab = i32(A[np.uint64(r2 + k + 1)])
                sm = i32(2 * i32((i32(0) if x0 else maP) + mb) + (i32(0) if x0 else mcP) + (i32(0) if xw else mdP))
                sa = i32(2 * i32((i32(0) if x0 else aaP) + ab) + (i32(0) if x0 else acP) + (i32(0) if xw else adP))
                p = med if sm <= sa else avg
                if kvar == 4:
                    gaP = i32(G[np.uint64(r1 + k + 2)])
                    gcP = i32(G[np.uint64(r3 + k + 1)])
                    gdP = i32(G[np.uint64(r1 + k + 1)])
                    gb = i32(G[np.uint64(r2 + k + 1)])
                    grad = min(max(grad, lo32), hi32)
                    sg = i32(2 * i32((i32(0) if x0 else gaP) + gb) + (i32(0) if x0 else gcP)
                             + (i32(0) if xw else gdP))
                    p = grad if sg < min(sm, sa) else p
            xe = i32(X0[np.uint64(r + k + 2)]) & xmask
            act = i32(i32(i32(abs(i32(a - c))) + i32(abs(i32(b - c)))) + i32(i32(abs(i32(b - d))) + eb)
                      + i32(ec + ed) + i32(2 * i32(ea + xe)))
            # (activity and level clamped: idle lanes compute from anything)
            ai = min(max(_sar32(act, ash32), i32(0)), i32(255))
            li = i32(0) if p < 0 else min(_sar32(p, lsh32), i32(31))
            ci = i32(i32(256 + i32(_shl32(min(ai, a1), 5))) + li) if m1 else ai
            ctx = ctxt[np.uint64(i32(ci | z0))]
            x = xs[k]
            e_ = ent[np.uint64(i32(i32(ctx << PROB_BITS) | i32(x & (TOTAL - 1))))]
            xn = i32(i32(e_ >> 19) * i32(i32(x >> PROB_BITS) & 0x1FFFFF) + i32(i32(e_ >> 7) & 0xFFF))
            x1[k] = xn if act_k else x  # idle lanes keep their state (token 0: no raw bits)
            tok[k] = i32(e_ & 0x7F) if act_k else i32(0)
            pr[k] = p
            pm[k] = med
            pa[k] = avg
            pg[k] = grad
        # phase B: both renormalisations, the raw bits and the samples
        wp, bad = _phase_b(x1, tok, on, pr, pm, pa, pg, words, wp, lo32, hi32, xs, tv, te, tm, ta, tg, P, E, M, A,
                           G, r + 2, nst)
        if wp > nw:
            return _E_DATA, wp
        if bad:
            return _E_RANGE, wp
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
def _decode_plane(words, nw, wp, xl, ent, ctxt, mode, ash, lsh, xm, h, w, lo, hi, P, E, M, A, G, X0,
                  kind):
    """_plane_steps specialised for the SEL predictors (its code is inlined with a constant kvar)."""
    if kind <= 2:
        return _plane_steps(words, nw, wp, xl, ent, ctxt, mode, ash, lsh, xm, h, w, lo, hi, P, E, M, A,
                            G, X0, kind, 0)
    if kind == 3:
        return _plane_steps(words, nw, wp, xl, ent, ctxt, mode, ash, lsh, xm, h, w, lo, hi, P, E, M, A,
                            G, X0, kind, 3)
    return _plane_steps(words, nw, wp, xl, ent, ctxt, mode, ash, lsh, xm, h, w, lo, hi, P, E, M, A, G,
                        X0, kind, 4)


@intrinsic
def _halfwords(typingctx, arr):  # pragma: no cover - compiled
    """1 if arr holds 16-bit elements, else 0: a constant of the compiled code (an array's itemsize is a
    run-time field, which would leave the output pass's strides unknown to LLVM)."""
    if not isinstance(arr, types.Array):
        return None
    sig = types.int64(arr)

    def codegen(context, builder, sig, args):
        return context.get_constant(types.int64, 1 if sig.args[0].dtype.bitwidth == 16 else 0)

    return sig, codegen


@nb.njit(inline="always", **_JITV)
def _words(P):
    """The skew buffer P as int32 words and the (shift, stride) to read its slot i: slot i is word
    ``i >> shift``; with int16 buffers (shift 1) the two slots of a word are its low and high half.
    Reading whole words keeps the strided loads of the output pass vectorised (gathers: there are no
    16-bit ones)."""
    return P.view(np.int32), _halfwords(P)


@nb.njit(inline="always", **_JITV)
def _row_base(h, w, nl, y, half):
    """(word index of row y's first sample, (left, right) shifts extracting it from its word)."""
    k = y % nl
    i0 = (_PAD + (y // nl) * w + 2 * k) * _S + k + 2
    if half:  # (_S is even: every sample of the row has i0's parity; little-endian halves)
        return i0 >> 1, i32(16 - 16 * (i0 & 1)), i32(16)
    return i0, i32(0), i32(0)


@nb.njit(**_JITV)
def _store_plane(P, h, w, nl, pl, out):
    """out[:, :, pl] = the plane in the skew buffer P (nl lanes)."""
    c = out.shape[2]
    of = out.reshape(-1)
    Q, half = _words(P)
    st = _S >> half
    for y in range(h):
        j0, ls, rs = _row_base(h, w, nl, y, half)
        o = y * w * c + pl
        for x in range(w):
            of[np.uint64(o + x * c)] = _sar32(_shl32(Q[np.uint64(j0 + x * st)], ls), rs)  # (in [0, maxv]: checked)


@nb.njit(**_JITV)
def _store_rct(P0, P1, P2, h, w, nl, xform, maxv, out):
    """out = the inverse RCT (transform xform; 0: none) of the three planes in the skew buffers P0, P1,
    P2 (as numba_codec._store_rct_pixel); returns _E_RANGE if a sample leaves [0, maxv] (out is then
    partly written), else 0."""
    of = out.reshape(-1)
    Q0, half = _words(P0)
    Q1 = _words(P1)[0]
    Q2 = _words(P2)[0]
    st = _S >> half
    kx = i32(xform - 1)
    mv = i32(maxv)
    bad = i32(0)
    if xform == 0:  # (the decoder checked the samples)
        for y in range(h):
            j0, ls, rs = _row_base(h, w, nl, y, half)
            o = y * w * 3
            for x in range(w):
                i = np.uint64(j0 + x * st)
                j = np.uint64(o + 3 * x)
                of[j] = _sar32(_shl32(Q0[i], ls), rs)
                of[j + np.uint64(1)] = _sar32(_shl32(Q1[i], ls), rs)
                of[j + np.uint64(2)] = _sar32(_shl32(Q2[i], ls), rs)
        return 0
    for y in range(h):
        j0, ls, rs = _row_base(h, w, nl, y, half)
        o = y * w * 3
        for x in range(w):
            i = np.uint64(j0 + x * st)
            u = _sar32(_shl32(Q1[i], ls), rs)
            v0 = i32(_sar32(_shl32(Q2[i], ls), rs) + i32(i32(kx * u) >> 2))
            g = i32(_sar32(_shl32(Q0[i], ls), rs) - i32(i32(u + v0) >> 2))
            r = i32(u + g)
            b = i32(v0 + g)
            bad = i32(bad | r | g | b | i32(mv - r) | i32(mv - g) | i32(mv - b))  # negative: out of range
            j = np.uint64(o + 3 * x)
            of[j] = r
            of[j + np.uint64(1)] = g
            of[j + np.uint64(2)] = b
    return _E_RANGE if bad < 0 else 0


@nb.njit(**_JITV)
def _decode_kernel(data, words, descs, h, w, c, xform, maxv, toff, tlen, ctxt, bdt, out):
    """Decode a checked stream (tables at data[toff:toff + tlen], then the lane states; its words as
    int32 in words, followed by _WPAD zeros) into out; returns 0 or a negative error code. bdt is the
    skew buffers' dtype: int16 for 8-bit tiles (values in [-510, 510], |errors| <= 2040; the lane
    arithmetic stays int32 and a sample is range-checked before it is stored), else int32."""
    nl = lane_count(w)
    nsteps = _steps(h, w, nl)
    rows = _PAD + nsteps + 2 * w + 8
    size = rows * _S
    rgb = xform != 0 or c == 3  # the planes are kept and written out in one pass at the end
    nP = 3 if rgb else 1
    Pb = np.empty((nP, size), bdt)
    Eb = np.empty((2 if xform else 1, size), bdt)
    sel = False
    for pl in range(c):
        sel |= descs[pl, 0] >= 3
    ms = size if sel else _S * (_PAD + 1)
    M = np.empty(ms, bdt)
    A = np.empty(ms, bdt)
    G = np.empty(ms, bdt)
    ent = np.empty(_MAX_CTX * TOTAL, np.int32)  # see _read_tables
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
        P = Pb[pl if rgb else 0]
        E = Eb[1 if (xform and pl > 0) else 0]
        lo, hi = _plane_range(xform, pl, maxv)
        rc, wp = _decode_plane(words, nw, wp, xl, ent, ctxt, mode, 1 + descs[pl, 2], descs[pl, 3],
                               2 if (xform >= 1 and pl > 0) else 0, h, w, lo, hi, P, E, M, A, G, Eb[0],
                               descs[pl, 0])
        if rc:
            return rc
        if not rgb:
            _store_plane(P, h, w, nl, pl, out)
    if tp != tend:
        return _E_TABLE
    if wp != nw:
        return _E_DATA
    for k in range(LANES):
        if xl[k] != RANS_L:
            return _E_DATA
    if rgb:
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
                        _CTXT, np.int16 if dtype == np.uint8 else np.int32, out)
    if rc:
        raise CodecError(None, f"csp codec (Numba, version 3): {_MESSAGES.get(rc, f'error {rc}')}")
    return out
