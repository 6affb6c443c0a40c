"""Numba implementation of bitstream version 3 of the CSP lossless codec (``docs/codec.md`` §8).

Version 3 keeps version 1's whole model (colour transform, predictors, tokens, contexts, tables) and
changes only the layout and the order of the symbols: per plane, ``L = min(32, max(1, W div 2))``
wavefront lanes (lane ``k`` codes the rows ``k, k + L, ...``, two samples behind lane ``k - 1``), one
shared stream of 16-bit words for 32 rANS states, and the raw bits of each token folded into its
lane's rANS state. The encoder reuses version 1's Numba model (:func:`.numba_model._plane_model`), so
it takes exactly version 1's decisions, then packs each sample's rANS record (raster order) and runs the
backward pass step by step over the lanes, each step one small LLVM intrinsic on 32-lane vectors
(:func:`_rans_step`: a masked gather of the lanes' records, branch-free flush masks, masked
compress-stores of the flushed words, the quotient by a float reciprocal corrected exactly). The decoder is :mod:`.numba_v3_decode` (each step's loops
over the 32 lanes written for LLVM to vectorise). Kernels are compiled on first use (cached on disk),
release the GIL and keep no global state.
"""

from __future__ import annotations

import struct
import zlib

import numba as nb
import numpy as np
from llvmlite import ir as llvmir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from csp.codecs.lossless.numba_codec import (
    _ACT0,
    _ACT1,
    _E_SIZE,
    _JIT,
    _LVL,
    _MAX_CTX,
    _MESSAGES,
    _choose_xform,
    _plane_range,
)
from csp.codecs.lossless.numba_model import _NJ, _fill_plane, _fill_planes, _joint_tables, _plane_model
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
def _plane_records(jix, cmap, ub, freq, start, tnb, recs):
    """rANS record of every sample of a plane (raster order): ``freq | start << 12 | raw-bit count << 24
    | raw bits << 32`` of its token in its context (jix: joint bins, cmap: the context of each joint
    class, ub: raw bits, see :func:`.numba_model._plane_model`)."""
    fs = np.empty(_NJ * NTOK, np.int64)
    for j in range(_NJ):
        k = cmap[j]
        for s in range(NTOK):
            fs[j * NTOK + s] = freq[k, s] | (start[k, s] << 12) | (tnb[s] << 24)
    for i in range(jix.size):
        r = fs[jix[i]]
        recs[i] = r | (np.int64(ub[i]) << 32)


def _is_lanes32(a) -> bool:  # pragma: no cover - used at compile time
    return a in (types.Array(types.int32, 1, "C"), types.Array(types.uint32, 1, "C"))


@intrinsic
def _rans_step(typingctx, xs, ci, cx, ends, cur, recs, words, wp):  # pragma: no cover - compiled
    """Step ``t = cur[0]`` of the backward pass for the 32 lane states ``xs`` (uint32, C-contiguous):
    the active lanes (``2k <= t < ends[k]``) gather their record ``recs[ci[k]]`` (see
    :func:`_plane_records`; a masked gather, the others get a zero record, which leaves their state
    unchanged), then phase B (raw bits) and phase A (token); then each active lane's cursor moves one
    sample back (``ci`` raster index, ``cx`` column; ``cur[1]`` = W - 1, ``cur[2]`` = the jump from a
    row's first sample to the lane's previous row's last, ``(L - 1) W + 1``).

    The words a phase flushes are stored below ``wp`` in ``words`` (uint16, C-contiguous) in lane
    order (lanes L-1 .. 0 pushed, so lane 0's word is lowest) with a masked compress-store
    (VPCOMPRESSW with AVX512-VBMI2; LLVM scalarises it elsewhere); returns the new ``wp`` (at most 64
    below the old).

    Phase B flushes when ``x >= 2**(32 - nbits)``, i.e. when ``ctlz(x) < nbits``; phase A when
    ``x >> (32 - PROB_BITS) >= freq`` (freq may be 2**PROB_BITS). The quotient ``x // freq`` (below
    2**21 after the flush) is the float product ``x * (1 / freq)`` corrected by at most one either way.
    All lane arithmetic is on <32 x i32> vectors, so the state stays 32-bit wide."""
    if not (all(_is_lanes32(a) for a in (xs, ci, cx, ends)) and cur == types.Array(types.int32, 1, "C")
            and recs == types.Array(types.int64, 1, "C") and words == types.Array(types.uint16, 1, "C")
            and isinstance(wp, types.Integer)):
        return None
    sig = types.int64(xs, ci, cx, ends, cur, recs, words, types.int64)

    def codegen(context, builder, sig, args):
        xa, ca, xca, ea, ua, ra, wa = (context.make_array(sig.args[j])(context, builder, args[j])
                                       for j in range(7))
        wp = args[7]
        i1, i16, i32, i64 = (llvmir.IntType(n) for n in (1, 16, 32, 64))
        vty, hty, qty = (llvmir.VectorType(t, LANES) for t in (i32, i16, i64))
        fty = llvmir.VectorType(llvmir.FloatType(), LANES)
        mty = llvmir.VectorType(i1, LANES)
        pty = llvmir.VectorType(i64.as_pointer(), LANES)
        vptr = vty.as_pointer()

        def cv(v, t=vty):
            return llvmir.Constant(t, [v] * LANES)

        mod = builder.module
        ctpop = cgutils.get_or_insert_function(mod, llvmir.FunctionType(i32, [i32]), "llvm.ctpop.i32")
        ctlz = cgutils.get_or_insert_function(mod, llvmir.FunctionType(vty, [vty, i1]), f"llvm.ctlz.v{LANES}i32")
        cstore = cgutils.get_or_insert_function(
            mod, llvmir.FunctionType(llvmir.VoidType(), [hty, i16.as_pointer(), mty]),
            f"llvm.masked.compressstore.v{LANES}i16")
        gather = cgutils.get_or_insert_function(mod, llvmir.FunctionType(qty, [pty, i32, mty, qty]),
                                                f"llvm.masked.gather.v{LANES}i64.v{LANES}p0i64")
        wdata = builder.bitcast(wa.data, i16.as_pointer())

        def push(x, f, wp):
            cnt = builder.zext(builder.call(ctpop, [builder.bitcast(f, i32)]), i64)
            wp = builder.sub(wp, cnt)
            builder.call(cstore, [builder.trunc(x, hty), builder.gep(wdata, [wp]), f])
            return builder.select(f, builder.lshr(x, cv(16)), x), wp

        def splat(v, t):
            e = builder.insert_element(llvmir.Constant(t, None), v, llvmir.Constant(i32, 0))
            return builder.shuffle_vector(e, llvmir.Constant(t, None), llvmir.Constant(vty, [0] * LANES))

        def scalar(j):
            return builder.load(builder.gep(ua.data, [llvmir.Constant(i32, j)]))

        tv = splat(scalar(0), vty)
        on = builder.and_(builder.icmp_signed(">=", tv, llvmir.Constant(vty, [2 * k for k in range(LANES)])),
                          builder.icmp_signed("<", tv, builder.load(builder.bitcast(ea.data, vptr), align=4)))
        # the records: addresses recs.data + 8 * ci, gathered for the active lanes
        base = splat(builder.ptrtoint(ra.data, i64), qty)
        ciptr = builder.bitcast(ca.data, vptr)
        civ = builder.load(ciptr, align=4)
        ptrs = builder.inttoptr(builder.add(base, builder.mul(builder.sext(civ, qty), cv(8, qty))), pty)
        r = builder.call(gather, [ptrs, llvmir.Constant(i32, 8), on, cv(0, qty)])
        a = builder.trunc(r, vty)
        b = builder.trunc(builder.lshr(r, cv(32, qty)), vty)
        # the cursors (off the states' dependency chain)
        cxptr = builder.bitcast(xca.data, vptr)
        cxv = builder.load(cxptr, align=4)
        wrap = builder.icmp_signed("==", cxv, cv(0))
        dec = builder.select(on, builder.select(wrap, splat(scalar(2), vty), cv(1)), cv(0))
        builder.store(builder.sub(civ, dec), ciptr, align=4)
        cxn = builder.select(wrap, splat(scalar(1), vty), builder.sub(cxv, cv(1)))
        builder.store(builder.select(on, cxn, cxv), cxptr, align=4)
        xptr = builder.bitcast(xa.data, vptr)
        x = builder.load(xptr, align=4)
        # phase B: raw bits
        nbits = builder.lshr(a, cv(24))
        x, wp = push(x, builder.icmp_unsigned("<", builder.call(ctlz, [x, llvmir.Constant(i1, 0)]), nbits), wp)
        x = builder.or_(builder.shl(x, nbits), b)
        # phase A: token
        fq = builder.and_(a, cv(0xFFF))
        act = builder.icmp_unsigned("!=", fq, cv(0))
        fa = builder.and_(act, builder.icmp_unsigned(">=", builder.lshr(x, cv(32 - PROB_BITS)), fq))
        x, wp = push(x, fa, wp)
        fd = builder.select(act, fq, cv(1))
        xq = builder.select(act, x, cv(0))
        rc = builder.fdiv(cv(1.0, fty), builder.uitofp(fd, fty))
        q = builder.fptosi(builder.fmul(builder.uitofp(xq, fty), rc), vty)
        r = builder.sub(xq, builder.mul(q, fd))
        neg = builder.icmp_signed("<", r, cv(0))
        q = builder.select(neg, builder.sub(q, cv(1)), q)
        r = builder.select(neg, builder.add(r, fd), r)
        big = builder.icmp_signed(">=", r, fd)
        q = builder.select(big, builder.add(q, cv(1)), q)
        r = builder.select(big, builder.sub(r, fd), r)
        st = builder.and_(builder.lshr(a, cv(12)), cv(0xFFF))
        xn = builder.add(builder.add(builder.shl(q, cv(PROB_BITS)), r), st)
        builder.store(builder.select(act, xn, x), xptr, align=4)
        return wp

    return sig, codegen


@nb.njit(**_JIT)
def _rans_backward(recs, h, w, xs, words, wp):
    """Backward rANS pass of one plane (recs: its samples' records from _plane_records) over the
    version-3 schedule: lane k codes the rows k, k + L, ... and is at step t on sample t - 2k of its
    sequence. Per step (last to first) :func:`_rans_step` gathers the active lanes' records and runs
    phase B then phase A; then each active lane's cursor (raster index, column; int32 lane arrays,
    branch-free) moves one sample back. xs holds the 32 lane states (uint32, updated). words must have
    at least 64 free entries below the lowest word written. Returns the new wp, -1 if words is too
    small."""
    nl = lane_count(w)
    ends64 = _lane_ends(h, w, nl)
    nsteps = ends64.max()
    ends = ends64.astype(np.int32)
    ci = np.zeros(LANES, np.int32)  # raster index of the lane's next sample (backward)
    cx = np.zeros(LANES, np.int32)  # its column
    for k in range(min(nl, h)):
        ci[k] = (k + ((h - k + nl - 1) // nl - 1) * nl) * w + w - 1
        cx[k] = w - 1
    cur = np.array([0, w - 1, (nl - 1) * w + 1], np.int32)  # step, W - 1, jump
    for t in range(nsteps - 1, -1, -1):
        cur[0] = t
        wp = _rans_step(xs, ci, cx, ends, cur, recs, words, wp)
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
    xform = _choose_xform(src, None, maxv)
    # RGB: the three planes filled in one pass over the pixels; other channel counts (multiplex: maybe
    # dozens) one plane at a time, so that memory does not grow with C
    P3 = np.zeros((c if c == 3 else 1, h + 1, w + 2), np.int32)
    E = np.zeros((h + 1, w + 2), np.int32)
    E0 = np.zeros((h + 1, w + 2), np.int32)
    tok = np.empty(n, np.uint8)
    jix = np.empty(n, np.int16)
    cmap = np.empty(_NJ, np.int64)
    uu = np.empty(n, np.int32)
    freq = np.zeros((_MAX_CTX, NTOK), np.int64)
    start = np.zeros((_MAX_CTX, NTOK), np.int64)
    recs = np.empty((c, n), np.int64)
    jlut, map0, map1 = _joint_tables(act0, act1, lvlt)
    tpos = 0
    if c == 3:
        _fill_planes(src, xform, P3)
    for pl in range(c):
        if c == 3:
            P = P3[pl]
        else:
            P = P3[0]
            _fill_plane(src, xform, pl, P)
        lo, hi = _plane_range(xform, pl, maxv)
        tl = _plane_model(P, h, w, lo, hi, maxv > 255, jlut, map0, map1, E0 if pl == 0 else E, E0,
                          xform >= 1 and pl > 0, tok, jix, uu, tbuf[tpos:], freq, start, descs[pl], cmap, True)
        if tl < 0:
            return -1, 0, xform
        tpos += tl
        _plane_records(jix, cmap, uu, freq, start, tnb, recs[pl])
    xs = np.full(LANES, RANS_L, np.uint32)
    wp = words.size
    for pl in range(c - 1, -1, -1):
        wp = _rans_backward(recs[pl], h, w, xs, words, wp)
        if wp < 0:
            return -1, 0, xform
    for k in range(LANES):
        states[k] = xs[k]
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
