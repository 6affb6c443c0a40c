"""Pure NumPy/Python reference of the CSP lossless predictive pixel codec (bitstream version 1).

This module *defines* the bitstream (prose in ``docs/codec.md``); the C (``native/cspcodec.c``) and
Numba (:mod:`csp.codecs.lossless.numba_codec`) implementations must produce and accept exactly the
same bytes. It is slow (a Python loop per sample when decoding) and meant for tests and as the
specification, not for production use.

Outline
-------
* The tile ``(H, W, C)`` (uint8 or uint16) is split into ``C`` planes. With three channels the encoder
  may apply the reversible colour transform RCT (``Y = (R + 2G + B) >> 2, U = R - G,
  V = (B - G) - ((k * U) >> 2)`` with a per-tile k = 0..4).
* Every plane is coded in raster order: a predictor chosen per plane (MED, AVG4, AVG2, or SEL / SEL3 =
  per sample whichever of MED, AVG4 (and GRAD) erred least at the causal neighbours) gives a residual
  ``e``;
  ``u = zigzag(e)`` becomes a token (``u < 16`` directly, larger values as exponent + two mantissa
  bits, the remaining low bits go raw to a separate bit stream).
* Tokens are coded with rANS (32-bit state, 16-bit words, 11-bit probabilities) under static per-plane
  per-context frequency tables. The context is a quantised local activity (gradients of the causal
  neighbours, residual magnitudes, and under RCT the residual of plane 0 at the same pixel) and, in
  context mode 1, the quantised predicted level. Rows ``y % 4 == j`` form stream ``j`` (own rANS
  state, words and raw bits), so a decoder may work on four rows at once (wavefront).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from csp.errors import CodecError

__all__ = [
    "MAGIC",
    "VERSION",
    "decode",
    "encode",
    "parse_header",
]

MAGIC = b"CSPL"
VERSION = 1

NTOK = 76  #: token alphabet size (enough for 19-bit zigzag residuals)
PROB_BITS = 11  #: rANS probability precision
TOTAL = 1 << PROB_BITS
RANS_L = 1 << 16  #: lower bound of the rANS state
N_STREAMS = 4  #: rows y with y % 4 == j are coded in stream j (own rANS state, words and raw bits)

PRED_MED, PRED_AVG4, PRED_AVG2, PRED_SEL, PRED_SEL3 = 0, 1, 2, 3, 4
N_PRED = 5
PRED_GRAD = -1  #: a + b - c (only inside PRED_SEL3, not selectable on its own)
XFORM_NONE, XFORM_RCT = 0, 1
N_XFORM = 6  #: transform 1 + k (k = 0..4): RCT with V = (B - G) - ((k * (R - G)) >> 2)

#: activity thresholds of context mode 0 (16 contexts) and mode 1 (5 activity x 6 level contexts)
ACT0_THR = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 22, 26, 32, 40)
ACT1_THR = (1, 2, 3, 4)
LVL_THR = (1, 2, 4, 8, 16)
N_CTX = (len(ACT0_THR) + 1, (len(ACT1_THR) + 1) * (len(LVL_THR) + 1))
MAX_CTX = 32
MAX_SAMPLES = 1 << 32  #: streams (and tiles) hold fewer than H * W * C = 2**32 samples

HEADER = struct.Struct("<4sBBBBIIHH")  # magic, version, dtype code, transform, reserved, H, W, C, reserved
# predictor, ctx mode, act shift, level shift, table length, then (rANS length, raw-bits length) per stream
PLANE = struct.Struct("<BBBBI" + "II" * N_STREAMS)
DTYPES = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16)}


def _lut(thr: tuple[int, ...], n: int) -> np.ndarray:
    return np.searchsorted(np.array(thr), np.arange(n), side="right").astype(np.int64)


ACT0_LUT = _lut(ACT0_THR, 256)  #: activity (clamped to 255) -> mode-0 context
ACT1_LUT = _lut(ACT1_THR, 256)  #: activity (clamped to 255) -> mode-1 activity class
LVL_LUT = _lut(LVL_THR, 32)  #: level (clamped to 31) -> mode-1 level class


# --------------------------------------------------------------------------- small integer helpers
def token_of(u: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Token and number of raw extra bits of zigzag values ``u`` (vectorised)."""
    u = np.asarray(u, dtype=np.int64)
    n = np.zeros_like(u)
    big = u >= 16
    if big.any():
        n[big] = np.floor(np.log2(u[big])).astype(np.int64)
        # guard floating point rounding of log2 at powers of two
        n[big] -= (np.left_shift(1, n[big]) > u[big])
        n[big] += (np.left_shift(1, n[big] + 1) <= u[big])
    tok = np.where(big, 16 + (n - 4) * 4 + ((u >> np.maximum(n - 2, 0)) & 3), u)
    nbits = np.where(big, n - 2, 0)
    return tok, nbits


def u_of_token(tok: int, extra: int) -> int:
    """Inverse of :func:`token_of`: zigzag value from a token and its raw extra bits."""
    if tok < 16:
        return tok
    n = (tok - 16) // 4 + 4
    m = (tok - 16) & 3
    return ((4 | m) << (n - 2)) | extra


def token_extra_bits(tok: int) -> int:
    """Number of raw bits following token ``tok``."""
    return 0 if tok < 16 else (tok - 16) // 4 + 2


def mitchell_log2(x: int) -> int:
    """``log2(x) * 256`` by Mitchell's piecewise-linear approximation (integer, ``x >= 1``)."""
    n = x.bit_length() - 1
    return (n << 8) + (((x << 8) >> n) - 256)


def normalize(weights: list[int]) -> list[int]:
    """Scale non-negative ``weights`` to frequencies summing to :data:`TOTAL` (each used symbol >= 1).

    Deterministic integer algorithm shared by all implementations: proportional floor with a minimum
    of 1, then the surplus/deficit goes to (or is taken from) the currently largest frequency (first
    index on ties), repeatedly.
    """
    w_total = sum(weights)
    f = [0 if w == 0 else max(1, (w * TOTAL) // w_total) for w in weights]
    diff = TOTAL - sum(f)
    while diff != 0:
        i = max(range(len(f)), key=lambda k: (f[k], -k))
        if diff > 0:
            f[i] += diff
            diff = 0
        else:
            take = min(-diff, f[i] - 1)
            if take == 0:  # pragma: no cover - impossible with NTOK < TOTAL
                raise CodecError(None, "cannot normalise frequency table")
            f[i] -= take
            diff += take
    return f


def dequantize_freq(length: int, mant: int) -> int:
    """Weight represented by a stored ``(bit length, mantissa bit)`` pair of a frequency."""
    if length <= 2:
        return 0 if length == 0 else (1 << (length - 1)) | mant
    return ((2 | mant) << (length - 2)) + (1 << (length - 3))


class BitWriter:
    """LSB-first bit writer."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, nbits: int) -> None:
        """Append the ``nbits`` low bits of ``value``."""
        if nbits:
            self.acc |= (value & ((1 << nbits) - 1)) << self.n
            self.n += nbits
            while self.n >= 8:
                self.out.append(self.acc & 0xFF)
                self.acc >>= 8
                self.n -= 8

    def finish(self) -> bytes:
        """Flush (zero padded to a byte) and return the bytes."""
        if self.n:
            self.out.append(self.acc & 0xFF)
            self.acc = 0
            self.n = 0
        return bytes(self.out)


class BitReader:
    """LSB-first bit reader over ``data``; reading past the end raises :class:`CodecError`."""

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self.data = bytes(data)
        self.pos = 0  # in bits
        self.what = what

    def get(self, nbits: int) -> int:
        """Read ``nbits`` bits."""
        if nbits == 0:
            return 0
        end = self.pos + nbits
        if end > 8 * len(self.data):
            raise CodecError(None, f"truncated {self.what}")
        v = int.from_bytes(self.data[self.pos >> 3:(end + 7) >> 3], "little") >> (self.pos & 7)
        self.pos = end
        return v & ((1 << nbits) - 1)

    def check_end(self) -> None:
        """The stream must be consumed up to its last (padding) byte."""
        if (self.pos + 7) >> 3 != len(self.data):
            raise CodecError(None, f"{self.what} has {len(self.data) - ((self.pos + 7) >> 3)} unused bytes")


# --------------------------------------------------------------------------- planes and prediction
def _plane_range(xform: int, plane: int, maxv: int) -> tuple[int, int]:
    if xform >= XFORM_RCT and plane == 1:
        return -maxv, maxv
    if xform >= XFORM_RCT and plane == 2:
        span = maxv + (((xform - 1) * maxv + 3) >> 2)
        return -span, span
    return 0, maxv


def forward_transform(tile: np.ndarray, xform: int) -> list[np.ndarray]:
    """Planes (int64, ``(H, W)``) of a ``(H, W, C)`` tile under colour transform ``xform``.

    ``xform = 1 + k`` is RCT ``Y = (R + 2G + B) >> 2, U = R - G, V = (B - G) - ((k * U) >> 2)``: the
    second chroma plane is decorrelated from the first with a per-tile factor ``k / 4`` (k = 0..4).
    """
    t = tile.astype(np.int64)
    planes = [t[..., c] for c in range(t.shape[2])]
    if xform >= XFORM_RCT:
        r, g, b = planes[:3]
        u = r - g
        planes[:3] = [(r + 2 * g + b) >> 2, u, (b - g) - (((xform - 1) * u) >> 2)]
    return planes


def inverse_transform(planes: list[np.ndarray], xform: int) -> list[np.ndarray]:
    """Channels from decoded planes (inverse of :func:`forward_transform`)."""
    out = list(planes)
    if xform >= XFORM_RCT:
        y, u, v = planes[:3]
        v = v + (((xform - 1) * u) >> 2)
        g = y - ((u + v) >> 2)
        out[:3] = [u + g, g, v + g]
    return out


def _padded(plane: np.ndarray) -> np.ndarray:
    """``(H+1, W+2)`` buffer: row 0 zeros, left pad = sample above-left-clamped, right pad = last."""
    h, w = plane.shape
    p = np.zeros((h + 1, w + 2), np.int64)
    p[1:, 1:w + 1] = plane
    p[1:, 0] = p[:-1, 1]
    p[1:, w + 1] = p[1:, w]
    return p


def predict(kind: int, a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray,
            lo: int, hi: int) -> np.ndarray:
    """Prediction ``kind`` from the neighbours (left, above, above-left, above-right), clamped."""
    if kind == PRED_MED:
        mx = np.maximum(a, b)
        mn = np.minimum(a, b)
        p = np.where(c >= mx, mn, np.where(c <= mn, mx, a + b - c))
    elif kind == PRED_AVG4:
        p = (2 * a + 2 * b - c + d + 2) >> 2
    elif kind == PRED_AVG2:
        p = (a + b + 1) >> 1
    elif kind == PRED_GRAD:
        p = a + b - c
    else:
        raise CodecError(None, f"unknown predictor {kind}")
    return np.clip(p, lo, hi)


def _neighbours(p: np.ndarray) -> tuple[np.ndarray, ...]:
    return p[1:, :-2], p[:-1, 1:-1], p[:-1, :-2], p[:-1, 2:]  # a, b, c, d


def _zero_padded(v: np.ndarray) -> np.ndarray:
    out = np.zeros((v.shape[0] + 1, v.shape[1] + 2), np.int64)
    out[1:, 1:-1] = v
    return out


def _score(err: np.ndarray) -> np.ndarray:
    """``2*left + 2*above + above-left + above-right`` of per-pixel errors (zero outside the tile)."""
    ea, eb, ec, ed = _neighbours(_zero_padded(err))
    return 2 * ea + 2 * eb + ec + ed


def plane_prediction(plane: np.ndarray, kind: int, lo: int, hi: int) -> np.ndarray:
    """Prediction of every sample of ``plane`` (the encoder's view: all samples known).

    ``PRED_SEL`` takes, per sample, MED or AVG4, whichever had the smaller :func:`_score` of absolute
    errors at the causal neighbours (MED on ties). ``PRED_SEL3`` chooses the same way among MED, AVG4
    and GRAD (``a + b - c``), first on ties.
    """
    a, b, c, d = _neighbours(_padded(plane))
    if kind not in (PRED_SEL, PRED_SEL3):
        return predict(kind, a, b, c, d, lo, hi)
    pm = predict(PRED_MED, a, b, c, d, lo, hi)
    pa = predict(PRED_AVG4, a, b, c, d, lo, hi)
    sm, sa = _score(np.abs(plane - pm)), _score(np.abs(plane - pa))
    if kind == PRED_SEL:
        return np.where(sm <= sa, pm, pa)
    pg = predict(PRED_GRAD, a, b, c, d, lo, hi)
    sg = _score(np.abs(plane - pg))
    best = np.where(sa < sm, pa, pm)
    return np.where(sg < np.minimum(sm, sa), pg, best)


def _selection_rows(h: int) -> slice:
    return slice(min(1, h - 1), h, 4)


def _bitlen_sum(e: np.ndarray) -> int:
    """Sum of ``bit_length(|e|)`` (0 for 0): a cheap, exact integer proxy of the coded size."""
    a = np.abs(e)
    return int(sum(int((a >= (1 << k)).sum()) for k in range(20)))


def _cost(plane: np.ndarray, kind: int, lo: int, hi: int, rows: slice = slice(None)) -> int:
    """Encoder's selection cost of a predictor: :func:`_bitlen_sum` of its residuals on ``rows`` (all
    rows when choosing the predictor, the selection rows when choosing the colour transform)."""
    return _bitlen_sum(plane[rows] - plane_prediction(plane, kind, lo, hi)[rows])


def _sad(plane: np.ndarray, kind: int, lo: int, hi: int) -> int:
    return int(np.abs(plane - plane_prediction(plane, kind, lo, hi)).sum())


def _contexts(e: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, pred: np.ndarray,
              cross: np.ndarray | None, ashift: int, lshift: int) -> tuple[np.ndarray, np.ndarray]:
    ea, eb, ec, ed = _neighbours(_zero_padded(np.abs(e)))
    act = np.abs(a - c) + np.abs(b - c) + np.abs(b - d) + eb + ec + ed + 2 * ea
    if cross is not None:
        act = act + 2 * cross
    act = act >> (1 + ashift)
    act = np.minimum(act, 255)
    lvl = LVL_LUT[np.minimum(np.maximum(pred, 0) >> lshift, 31)]
    return ACT0_LUT[act], ACT1_LUT[act] * (len(LVL_THR) + 1) + lvl


# --------------------------------------------------------------------------- encoder
def _hist_cost(hist: np.ndarray) -> int:
    """Integer size estimate (1/256 bit) of coding with per-context static tables ``hist``."""
    cost = 0
    for row in hist:
        n = int(row.sum())
        if n == 0:
            continue
        nz = np.nonzero(row)[0]
        lg_n = mitchell_log2(n)
        cost += sum(int(row[s]) * (lg_n - mitchell_log2(int(row[s]))) for s in nz)
        cost += 256 * (8 + 3 * (int(nz[-1]) + 1))
    return cost


def _write_tables(hist: np.ndarray, nctx: int) -> tuple[bytes, list[list[int] | None]]:
    bw = BitWriter()
    tables: list[list[int] | None] = []
    for k in range(nctx):
        row = [int(v) for v in hist[k]]
        if not any(row):
            bw.put(0, 1)
            tables.append(None)
            continue
        bw.put(1, 1)
        nsym = max(s for s in range(NTOK) if row[s]) + 1
        bw.put(nsym - 1, 7)
        weights = []
        prev = 0
        for f in normalize(row[:nsym]):
            length = f.bit_length()
            if length == prev:
                bw.put(0b0, 1)
            elif length == prev - 1:
                bw.put(0b01, 2)  # bits 1, 0 (LSB first)
            elif length == prev + 1:
                bw.put(0b011, 3)  # bits 1, 1, 0
            else:
                bw.put(0b111, 3)
                bw.put(length, 4)
            mant = (f >> (length - 2)) & 1 if length >= 2 else 0
            bw.put(mant, 1 if length >= 2 else 0)
            weights.append(dequantize_freq(length, mant))
            prev = length
        tables.append(normalize(weights) + [0] * (NTOK - nsym))
    return bw.finish(), tables


@dataclass
class PlaneAnalysis:
    """Version 1's model decisions and symbols of one plane (shared by versions 1 and 3).

    ``ctx``, ``tok``, ``u``, ``nbits`` and ``abs_e`` are ``(H, W)`` int64 arrays: the context (of
    ``mode``), token, zigzag residual, raw-bit count and ``|e|`` of every sample. ``tables`` holds the
    normalised frequencies per context (``None`` for an absent context) as the decoder rebuilds them from
    ``table_bytes``, ``starts`` their cumulative starts.
    """

    kind: int
    mode: int
    ashift: int
    lshift: int
    table_bytes: bytes
    tables: list[list[int] | None]
    starts: list[list[int] | None]
    ctx: np.ndarray
    tok: np.ndarray
    u: np.ndarray
    nbits: np.ndarray
    abs_e: np.ndarray


def analyze_plane(plane: np.ndarray, lo: int, hi: int, is16: bool, cross: np.ndarray | None) -> PlaneAnalysis:
    """Version 1's per-plane model: predictor, shifts, context mode, tables and per-sample symbols.

    ``plane`` holds the samples (range ``[lo, hi]``), ``cross`` the ``|e|`` of plane 0 for the chroma
    planes under RCT (else ``None``).
    """
    costs = [_cost(plane, k, lo, hi) for k in range(N_PRED)]
    kind = costs.index(min(costs))
    count = plane.size
    if is16:
        ashift = max(0, (_sad(plane, kind, lo, hi) // count).bit_length() - 3)
        lshift = max(0, (int(np.abs(plane).sum()) // count).bit_length() - 5)
    else:
        ashift = lshift = 0
    a, b, c, d = _neighbours(_padded(plane))
    pred = plane_prediction(plane, kind, lo, hi)
    e = plane - pred
    u = np.where(e >= 0, 2 * e, -2 * e - 1)
    tok, nbits = token_of(u)
    ctx0, ctx1 = _contexts(e, a, b, c, d, pred, cross, ashift, lshift)
    hists = []
    for ctx, nctx in ((ctx0, N_CTX[0]), (ctx1, N_CTX[1])):
        hist = np.zeros((nctx, NTOK), np.int64)
        np.add.at(hist, (ctx.ravel(), tok.ravel()), 1)
        hists.append(hist)
    mode = 1 if _hist_cost(hists[1]) < _hist_cost(hists[0]) else 0
    table_bytes, tables = _write_tables(hists[mode], N_CTX[mode])
    starts = [None if t is None else np.concatenate(([0], np.cumsum(t)[:-1])).tolist() for t in tables]
    return PlaneAnalysis(kind, mode, ashift, lshift, table_bytes, tables, starts, (ctx0, ctx1)[mode],
                         tok, u, nbits, np.abs(e))


def _encode_plane(plane: np.ndarray, lo: int, hi: int, is16: bool,
                  cross: np.ndarray | None) -> tuple[bytes, bytes, np.ndarray]:
    h, w = plane.shape
    an = analyze_plane(plane, lo, hi, is16, cross)
    kind, mode, ashift, lshift = an.kind, an.mode, an.ashift, an.lshift
    table_bytes, tables, starts = an.table_bytes, an.tables, an.starts
    ctx, tok, u, nbits = an.ctx, an.tok, an.u, an.nbits
    lengths: list[int] = []
    streams: list[bytes] = []
    for j in range(N_STREAMS):
        rows = range(j, h, N_STREAMS)
        # raw extra bits, forward (raster) order
        bw = BitWriter()
        for y in rows:
            for x in np.nonzero(nbits[y])[0]:
                bw.put(int(u[y, x]), int(nbits[y, x]))
        bits_bytes = bw.finish()
        # rANS, reverse order
        state = RANS_L
        words: list[int] = []
        for y in reversed(rows):
            for x in range(w - 1, -1, -1):
                k = int(ctx[y, x])
                sym = int(tok[y, x])
                f = tables[k][sym]  # type: ignore[index]
                if state >= ((RANS_L >> PROB_BITS) << 16) * f:
                    words.append(state & 0xFFFF)
                    state >>= 16
                state = ((state // f) << PROB_BITS) + (state % f) + starts[k][sym]  # type: ignore[index]
        rans = struct.pack("<I", state) + struct.pack(f"<{len(words)}H", *reversed(words))
        lengths += [len(rans), len(bits_bytes)]
        streams += [rans, bits_bytes]
    head = PLANE.pack(kind, mode, ashift, lshift, len(table_bytes), *lengths)
    return head, table_bytes + b"".join(streams), an.abs_e


def choose_transform(tile: np.ndarray) -> int:
    """Colour transform the encoder uses for ``tile`` (3 channels only): the smallest :func:`_cost` of
    MED over the three planes among none and RCT with k = 0..4 (first on ties)."""
    if tile.shape[2] != 3:
        return XFORM_NONE
    maxv = 255 if tile.dtype == np.uint8 else 65535
    costs = []
    for xf in range(N_XFORM):
        planes = forward_transform(tile, xf)
        rows = _selection_rows(tile.shape[0])
        costs.append(sum(_cost(p, PRED_MED, *_plane_range(xf, i, maxv), rows) for i, p in enumerate(planes)))
    return costs.index(min(costs))


def check_tile(tile: np.ndarray) -> np.ndarray:
    """Validate an input tile and return it as ``(H, W, C)``."""
    arr = np.asarray(tile)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise CodecError(None, f"csp codec: tile must be (H, W, C), got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise CodecError(None, f"csp codec: only uint8 and uint16 tiles are supported, not {arr.dtype}")
    h, w, c = arr.shape
    if h < 1 or w < 1 or not 1 <= c <= 65535 or h * w * c >= MAX_SAMPLES:
        raise CodecError(None, f"csp codec: unsupported tile shape {arr.shape}")
    return arr


def encode(tile: np.ndarray, version: int = 1) -> bytes:
    """Encode a ``(H, W, C)`` or ``(H, W)`` uint8/uint16 tile in bitstream ``version`` (reference)."""
    if version == 2:
        from csp.codecs.lossless import reference_v2

        return reference_v2.encode(tile)
    if version == 3:
        from csp.codecs.lossless import reference_v3

        return reference_v3.encode(tile)
    if version != 1:
        raise CodecError(None, f"csp codec: cannot write bitstream version {version}")
    return encode_stream(tile, VERSION, _encode_plane)


def encode_stream(tile: np.ndarray, version: int,
                  encode_plane: Callable[..., tuple[bytes, bytes, np.ndarray]]) -> bytes:
    """The stream layout every version shares: checked tile, colour transform, header (with ``version``),
    plane descriptors and CRC, then the plane bodies. ``encode_plane(plane, lo, hi, is16, cross)`` returns
    ``(descriptor bytes, body bytes, residuals)`` of one plane in that version's coding."""
    arr = check_tile(tile)
    h, w, c = arr.shape
    is16 = arr.dtype == np.uint16
    maxv = 65535 if is16 else 255
    xform = choose_transform(arr)
    heads, bodies = [], []
    err0 = None
    for i, plane in enumerate(forward_transform(arr, xform)):
        cross = err0 if (xform >= XFORM_RCT and i > 0) else None
        head, body, err = encode_plane(plane, *_plane_range(xform, i, maxv), is16, cross)
        err0 = err if i == 0 else err0
        heads.append(head)
        bodies.append(body)
    header = HEADER.pack(MAGIC, version, 2 if is16 else 1, xform, 0, h, w, c, 0) + b"".join(heads)
    return header + struct.pack("<I", zlib.crc32(header)) + b"".join(bodies)


# --------------------------------------------------------------------------- decoder
def check_header(data: bytes | memoryview, version: int, plane: struct.Struct, *, strict_reserved: bool = False,
                 trailer: int = 0) -> tuple[memoryview, tuple[int, int, int], int, int, int]:
    """Checks every version shares (magic, ``version``, header CRC, dtype, transform, shape).

    Returns ``(stream, (H, W, C), dtype code, transform, header length incl. CRC)``; ``plane`` is the
    version's plane-descriptor struct. ``strict_reserved``: reserved header fields must be zero.
    ``trailer``: bytes after the plane descriptors that the CRC also covers (version 3's lengths).
    """
    mv = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if len(mv) < HEADER.size:
        raise CodecError(None, f"csp stream truncated: {len(mv)} bytes, header needs {HEADER.size}")
    magic, ver, dcode, xform, res0, h, w, c, res1 = HEADER.unpack_from(mv, 0)
    if magic != MAGIC:
        raise CodecError(None, f"not a csp lossless stream (magic {bytes(magic)!r})")
    if ver != version:
        raise CodecError(None, f"csp stream version {ver} is not supported by the version-{version} reader")
    hlen = HEADER.size + plane.size * c + trailer
    if c == 0 or len(mv) < hlen + 4:
        raise CodecError(None, "csp stream truncated inside its header")
    (crc,) = struct.unpack_from("<I", mv, hlen)
    if crc != zlib.crc32(mv[:hlen]):
        raise CodecError(None, "csp stream header checksum mismatch (corrupt header)")
    if (dcode not in DTYPES or xform >= N_XFORM or (xform >= XFORM_RCT and c != 3)
            or (strict_reserved and (res0 or res1))):
        raise CodecError(None, f"csp stream header has invalid dtype code {dcode}, transform {xform} (C = {c}) "
                         f"or non-zero reserved bytes ({res0}, {res1})")
    if h == 0 or w == 0 or h * w * c >= MAX_SAMPLES:
        raise CodecError(None, f"csp stream has an invalid shape {h}x{w}x{c}")
    return mv, (h, w, c), dcode, xform, hlen + 4


def parse_header(data: bytes | memoryview) -> tuple[tuple[int, int, int], np.dtype, int, list[tuple[int, ...]]]:
    """``((H, W, C), dtype, transform, planes)`` of a stream; checks magic, version, CRC and sizes."""
    mv, (h, w, c), dcode, xform, total = check_header(data, VERSION, PLANE)
    planes = [PLANE.unpack_from(mv, HEADER.size + PLANE.size * i) for i in range(c)]
    for kind, mode, ashift, lshift, *lens in planes:
        rls = lens[1::2]
        if kind >= N_PRED or mode > 1 or ashift > 15 or lshift > 15 or any(r < 4 or r % 2 for r in rls):
            raise CodecError(None, "csp stream header has an invalid plane descriptor")
        total += sum(lens)
    if total != len(mv):
        raise CodecError(None, f"csp stream is {len(mv)} bytes, its header describes {total}")
    return (h, w, c), DTYPES[dcode], xform, planes


def _read_tables(data: bytes, nctx: int) -> list[list[int] | None]:
    br = BitReader(data, "csp frequency tables")
    tables = read_tables_from(br, nctx)
    br.check_end()
    return tables


def read_tables_from(br: BitReader, nctx: int) -> list[list[int] | None]:
    """Read the frequency tables of ``nctx`` contexts (§5) from ``br`` (not byte aligned at the end)."""
    tables: list[list[int] | None] = []
    for _ in range(nctx):
        if not br.get(1):
            tables.append(None)
            continue
        nsym = br.get(7) + 1
        if nsym > NTOK:
            raise CodecError(None, "csp frequency table has too many symbols")
        weights = []
        prev = 0
        for _ in range(nsym):
            if not br.get(1):
                length = prev
            elif not br.get(1):
                length = prev - 1
            elif not br.get(1):
                length = prev + 1
            else:
                length = br.get(4)
            if not 0 <= length <= PROB_BITS + 1:
                raise CodecError(None, "csp frequency table entry out of range")
            weights.append(dequantize_freq(length, br.get(1 if length >= 2 else 0)))
            prev = length
        if not any(weights):
            raise CodecError(None, "csp frequency table is empty")
        tables.append(normalize(weights) + [0] * (NTOK - nsym))
    return tables


def decoding_tables(tables: list[list[int] | None]) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """``(frequencies, starts, slot -> token lookups)`` per context; an absent context decodes as
    "always token 0" (never used by a valid stream)."""
    freqs = [t if t is not None else [TOTAL] + [0] * (NTOK - 1) for t in tables]
    starts = [np.concatenate(([0], np.cumsum(t)[:-1])).tolist() for t in freqs]
    luts = [np.repeat(np.arange(NTOK), t).tolist() for t in freqs]
    return freqs, starts, luts


class SampleModel:
    """Version 1's causal per-sample model of a plane being decoded (shared by versions 1 and 3).

    :meth:`context` gives the context and prediction of sample ``(y, x)`` from its decoded neighbours
    (left, the three above and the column -1 / column W pads); :meth:`store` records the decoded residual.
    Any order in which those neighbours precede the sample works (raster order, version 3's wavefront).
    """

    def __init__(self, h: int, w: int, desc: tuple[int, ...], lo: int, hi: int, cross: np.ndarray | None
                 ) -> None:
        self.w, self.lo, self.hi, self.cross = w, lo, hi, cross
        self.kind, self.mode, self.ashift, self.lshift = desc[:4]
        self.p = np.zeros((h + 1, w + 2), np.int64)  # padded samples (row 0 = row -1)
        self.eb = np.zeros((h + 1, w + 2), np.int64)  # |e| (zero outside the plane)
        # |error| of MED, AVG4 and GRAD (for PRED_SEL, PRED_SEL3)
        self.em, self.ev, self.eg = (np.zeros((h + 1, w + 2), np.int64) for _ in range(3))

    def context(self, y: int, x: int) -> tuple[int, int, int, int, int]:
        """``(context, prediction, MED, AVG4, GRAD predictions)`` of sample ``(y, x)``."""
        lo, hi, kind = self.lo, self.hi, self.kind
        prow, crow = self.p[y], self.p[y + 1]
        if x == 0:
            crow[0] = prow[1]  # column -1 of row y holds (y - 1, 0)
        perr, cerr = self.eb[y], self.eb[y + 1]
        a, b, c, d = int(crow[x]), int(prow[x + 1]), int(prow[x]), int(prow[x + 2])
        mx, mn = max(a, b), min(a, b)
        pm = min(max(mn if c >= mx else (mx if c <= mn else a + b - c), lo), hi)
        pa = min(max((2 * a + 2 * b - c + d + 2) >> 2, lo), hi)
        pg = min(max(a + b - c, lo), hi)
        if kind == PRED_MED:
            pr = pm
        elif kind == PRED_AVG4:
            pr = pa
        elif kind == PRED_AVG2:
            pr = min(max((a + b + 1) >> 1, lo), hi)
        else:
            em, ev, eg = self.em, self.ev, self.eg
            sm = 2 * int(em[y + 1, x]) + 2 * int(em[y, x + 1]) + int(em[y, x]) + int(em[y, x + 2])
            sa = 2 * int(ev[y + 1, x]) + 2 * int(ev[y, x + 1]) + int(ev[y, x]) + int(ev[y, x + 2])
            pr = pm if sm <= sa else pa
            if kind == PRED_SEL3:
                sg = 2 * int(eg[y + 1, x]) + 2 * int(eg[y, x + 1]) + int(eg[y, x]) + int(eg[y, x + 2])
                if sg < min(sm, sa):
                    pr = pg
        act = (abs(a - c) + abs(b - c) + abs(b - d) + int(perr[x + 1]) + int(perr[x]) + int(perr[x + 2])
               + 2 * int(cerr[x]))
        if self.cross is not None:
            act += 2 * int(self.cross[y, x])
        act = min(act >> (1 + self.ashift), 255)
        if self.mode == 0:
            k = int(ACT0_LUT[act])
        else:
            k = int(ACT1_LUT[act]) * (len(LVL_THR) + 1) + int(LVL_LUT[min(max(pr, 0) >> self.lshift, 31)])
        return k, pr, pm, pa, pg

    def store(self, y: int, x: int, e: int, ctx: tuple[int, int, int, int, int]) -> int:
        """Record residual ``e`` of sample ``(y, x)`` (``ctx`` from :meth:`context`); returns the sample."""
        _, pr, pm, pa, pg = ctx
        v = pr + e
        if v < self.lo or v > self.hi:
            raise CodecError(None, "corrupt csp stream: decoded sample out of range")
        self.p[y + 1, x + 1] = v
        if x == self.w - 1:
            self.p[y + 1, x + 2] = v  # column W of row y
        self.eb[y + 1, x + 1] = abs(e)
        self.em[y + 1, x + 1] = abs(v - pm)
        self.ev[y + 1, x + 1] = abs(v - pa)
        self.eg[y + 1, x + 1] = abs(v - pg)
        return v

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The decoded plane and its ``|e|`` (``(H, W)`` int64 each)."""
        return self.p[1:, 1:self.w + 1], self.eb[1:, 1:self.w + 1]


def _decode_plane(body: bytes, desc: tuple[int, ...], h: int, w: int, lo: int, hi: int,
                  cross: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    mode, tl, lens = desc[1], desc[4], desc[5:]
    tables, starts, luts = decoding_tables(_read_tables(body[:tl], N_CTX[mode]))
    states, words, wpos, readers = [], [], [0] * N_STREAMS, []
    pos = tl
    for j in range(N_STREAMS):
        rl, bl = lens[2 * j], lens[2 * j + 1]
        (st,) = struct.unpack_from("<I", body, pos)
        if st < RANS_L:
            raise CodecError(None, "csp rANS stream has an invalid initial state")
        states.append(st)
        words.append(struct.unpack_from(f"<{(rl - 4) // 2}H", body, pos + 4))
        readers.append(BitReader(body[pos + rl:pos + rl + bl], "csp raw bit stream"))
        pos += rl + bl
    model = SampleModel(h, w, desc, lo, hi, cross)
    for y in range(h):
        j = y % N_STREAMS
        ws, br = words[j], readers[j]
        for x in range(w):
            cx = model.context(y, x)
            k = cx[0]
            xs = states[j]
            slot = xs & (TOTAL - 1)
            s = luts[k][slot]
            xs = tables[k][s] * (xs >> PROB_BITS) + slot - starts[k][s]
            if xs < RANS_L:
                if wpos[j] >= len(ws):
                    raise CodecError(None, "truncated csp rANS stream")
                xs = (xs << 16) | ws[wpos[j]]
                wpos[j] += 1
            states[j] = xs
            uu = u_of_token(s, br.get(token_extra_bits(s)))
            model.store(y, x, (uu >> 1) ^ -(uu & 1), cx)
    for j in range(N_STREAMS):
        if states[j] != RANS_L or wpos[j] != len(words[j]):
            raise CodecError(None, "corrupt csp rANS stream (final state mismatch)")
        readers[j].check_end()
    return model.result()


def decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a stream (version 1, 2 or 3) to its ``(H, W, C)`` tile (reference implementation)."""
    raw = bytes(data)
    if len(raw) > 4 and raw[4] == 2:
        from csp.codecs.lossless import reference_v2

        return reference_v2.decode(raw)
    if len(raw) > 4 and raw[4] == 3:
        from csp.codecs.lossless import reference_v3

        return reference_v3.decode(raw)
    (h, w, c), dtype, xform, planes = parse_header(raw)
    maxv = 65535 if dtype == np.uint16 else 255
    pos = HEADER.size + PLANE.size * c + 4
    out = []
    err0 = None
    for i, desc in enumerate(planes):
        n = sum(desc[4:])
        cross = err0 if (xform >= XFORM_RCT and i > 0) else None
        plane, err = _decode_plane(raw[pos:pos + n], desc, h, w, *_plane_range(xform, i, maxv), cross)
        err0 = err if i == 0 else err0
        out.append(plane)
        pos += n
    chans = inverse_transform(out, xform)
    if any(ch.min() < 0 or ch.max() > maxv for ch in chans):
        raise CodecError(None, "corrupt csp stream: colour transform leaves the sample range")
    return np.stack(chans, axis=-1).astype(dtype)
