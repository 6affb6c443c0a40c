"""Pure NumPy/Python reference of bitstream version 2 of the CSP lossless codec (defines it).

Version 2 is designed for decoding speed (``docs/codec.md`` §7); the C (``native/cspcodec2.c``) and
Numba (:mod:`csp.codecs.lossless.numba_v2`) implementations produce and accept the same bytes.

Differences from version 1 (:mod:`.reference`, whose helpers are reused):

* one predictor per plane (MED, AVG4 or AVG2), chosen on the selection rows, no per-sample selection;
* the context of sample ``(y, x)`` depends only on the residual magnitudes ``E`` of row ``y - 1``
  (``4E(x) + 2E(x-1) + 2E(x+1) + E(x-2) + E(x+2)``, zero outside the plane) plus, under RCT for planes
  1 and 2, ``4|e|`` of plane 0 at the same pixel: entropy decoding never waits for pixel reconstruction;
* each plane has one 16-bit word stream shared by four interleaved rANS states (sample ``(y, x)`` uses
  state ``x & 3``) and one raw-bit stream, both in raster order.
"""

from __future__ import annotations

import struct

import numpy as np

from csp.codecs.lossless import reference as v1
from csp.codecs.lossless.reference import (
    ACT0_LUT,
    DTYPES,
    HEADER,
    NTOK,
    PROB_BITS,
    RANS_L,
    TOTAL,
    XFORM_RCT,
    BitReader,
    BitWriter,
)
from csp.errors import CodecError

__all__ = ["VERSION", "decode", "encode", "parse_header"]

VERSION = 2
N_CTX = 16  #: contexts per plane (activity thresholds of version 1's context mode 0)
LANES = 4  #: interleaved rANS states; sample (y, x) uses state x & 3
N_PRED = 3  #: MED, AVG4, AVG2 (version 1's predictor ids 0..2)
#: predictor, activity shift, reserved (u16), table length, word-stream length, raw-bit length
PLANE = struct.Struct("<BBHIII")


def contexts_of_row(above_abs: np.ndarray, cross_abs: np.ndarray | None, shift: int) -> np.ndarray:
    """Contexts of one row from the ``|e|`` of the row above (zeros for row 0) and of plane 0."""
    p = np.zeros(above_abs.shape[0] + 4, np.int64)
    p[2:-2] = above_abs
    act = 4 * p[2:-2] + 2 * (p[1:-3] + p[3:-1]) + p[:-4] + p[4:]
    if cross_abs is not None:
        act = act + 4 * cross_abs
    return ACT0_LUT[np.minimum(act >> shift, 255)]


def plane_contexts(e: np.ndarray, cross: np.ndarray | None, shift: int) -> np.ndarray:
    """Contexts of every sample of a plane with residuals ``e`` (plane 0's residuals ``cross``)."""
    ab = np.abs(e)
    above = np.vstack([np.zeros((1, e.shape[1]), np.int64), ab[:-1]])
    rows = [contexts_of_row(above[y], None if cross is None else np.abs(cross[y]), shift) for y in range(e.shape[0])]
    return np.array(rows, np.int64).reshape(e.shape)


def choose_predictor(plane: np.ndarray, lo: int, hi: int) -> int:
    """Smallest sum of ``bit_length(|e|)`` over the selection rows among MED, AVG4, AVG2 (first on ties)."""
    rows = v1._selection_rows(plane.shape[0])
    costs = [v1._cost(plane, k, lo, hi, rows) for k in range(N_PRED)]
    return costs.index(min(costs))


def _encode_plane(plane: np.ndarray, lo: int, hi: int, is16: bool,
                  cross: np.ndarray | None) -> tuple[bytes, bytes, np.ndarray]:
    _, w = plane.shape
    kind = choose_predictor(plane, lo, hi)
    e = plane - v1.plane_prediction(plane, kind, lo, hi)
    ashift = max(0, int(int(np.abs(e).sum()) // e.size).bit_length() - 3) if is16 else 0
    ctx = plane_contexts(e, cross, 2 + ashift).ravel()
    u = np.where(e >= 0, 2 * e, -2 * e - 1).ravel()
    tok, nbits = v1.token_of(u)
    hist = np.zeros((N_CTX, NTOK), np.int64)
    np.add.at(hist, (ctx, tok), 1)
    table_bytes, tables = v1._write_tables(hist, N_CTX)
    starts = [None if t is None else np.concatenate(([0], np.cumsum(t)[:-1])).tolist() for t in tables]
    states = [RANS_L] * LANES
    words: list[int] = []  # emitted backwards
    lane = (np.arange(u.size) % w) & 3
    for i in range(u.size - 1, -1, -1):
        k, s, j = int(ctx[i]), int(tok[i]), int(lane[i])
        f = tables[k][s]
        x = states[j]
        if x >= ((RANS_L >> PROB_BITS) << 16) * f:
            words.append(x & 0xFFFF)
            x >>= 16
        states[j] = ((x // f) << PROB_BITS) + (x % f) + starts[k][s]
    wstream = struct.pack(f"<{LANES}I", *states) + struct.pack(f"<{len(words)}H", *words[::-1])
    bw = BitWriter()
    for uu, nb in zip(u.tolist(), nbits.tolist()):
        bw.put(uu, nb)
    raw = bw.finish()
    head = PLANE.pack(kind, ashift, 0, len(table_bytes), len(wstream), len(raw))
    return head, table_bytes + wstream + raw, e


def encode(tile: np.ndarray) -> bytes:
    """Encode a ``(H, W, C)`` or ``(H, W)`` uint8/uint16 tile in bitstream version 2 (reference)."""
    return v1.encode_stream(tile, VERSION, _encode_plane)


def parse_header(data: bytes | memoryview) -> tuple[tuple[int, int, int], np.dtype, int, list[tuple[int, ...]]]:
    """``((H, W, C), dtype, transform, planes)`` of a version-2 stream; checks magic, CRC and sizes."""
    mv, (h, w, c), dcode, xform, total = v1.check_header(data, VERSION, PLANE, strict_reserved=True)
    planes = [PLANE.unpack_from(mv, HEADER.size + PLANE.size * i) for i in range(c)]
    for kind, ashift, res, tl, wl, bl in planes:
        if kind >= N_PRED or ashift > 15 or res or wl < 4 * LANES or wl % 2:
            raise CodecError(None, "csp stream header has an invalid plane descriptor")
        total += tl + wl + bl
    if total != len(mv):
        raise CodecError(None, f"csp stream is {len(mv)} bytes, its header describes {total}")
    return (h, w, c), DTYPES[dcode], xform, planes


def _decode_residuals(body: bytes, desc: tuple[int, ...], h: int, w: int, cross: np.ndarray | None) -> np.ndarray:
    _kind, ashift, _, tl, wl, bl = desc
    tables = v1._read_tables(body[:tl], N_CTX)
    tables = [t if t is not None else [TOTAL] + [0] * (NTOK - 1) for t in tables]
    starts = [np.concatenate(([0], np.cumsum(t)[:-1])).tolist() for t in tables]
    luts = [np.repeat(np.arange(NTOK), t).tolist() for t in tables]
    states = list(struct.unpack_from(f"<{LANES}I", body, tl))
    if min(states) < RANS_L:
        raise CodecError(None, "corrupt csp rANS stream (initial state)")
    nw = (wl - 4 * LANES) // 2
    words = struct.unpack_from(f"<{nw}H", body, tl + 4 * LANES)
    br = BitReader(body[tl + wl:tl + wl + bl], "csp raw-bit stream")
    wpos = 0
    e = np.zeros((h, w), np.int64)
    above = np.zeros(w, np.int64)
    for y in range(h):
        ctx = contexts_of_row(above, None if cross is None else np.abs(cross[y]), 2 + ashift).tolist()
        row = e[y]
        for x in range(w):
            j = x & 3
            st = states[j]
            k = ctx[x]
            slot = st & (TOTAL - 1)
            s = luts[k][slot]
            st = tables[k][s] * (st >> PROB_BITS) + slot - starts[k][s]
            if st < RANS_L:
                if wpos >= nw:
                    raise CodecError(None, "truncated csp rANS stream")
                st = (st << 16) | words[wpos]
                wpos += 1
            states[j] = st
            uu = v1.u_of_token(s, br.get(v1.token_extra_bits(s)))
            row[x] = (uu >> 1) ^ -(uu & 1)
        above = np.abs(row)
    if any(st != RANS_L for st in states) or wpos != nw:
        raise CodecError(None, "corrupt csp rANS stream (final state mismatch)")
    br.check_end()
    return e


def _reconstruct(e: np.ndarray, kind: int, lo: int, hi: int) -> np.ndarray:
    h, w = e.shape
    p = np.zeros((h + 1, w + 2), np.int64)  # padded like reference._padded
    for y in range(h):
        prev = p[y].tolist()
        cur = [prev[1]] + [0] * (w + 1)
        er = e[y].tolist()
        for x in range(w):
            a, b, c, d = cur[x], prev[x + 1], prev[x], prev[x + 2]
            pred = int(v1.predict(kind, np.int64(a), np.int64(b), np.int64(c), np.int64(d), lo, hi))
            v = pred + er[x]
            if v < lo or v > hi:
                raise CodecError(None, "corrupt csp stream: decoded sample out of range")
            cur[x + 1] = v
        cur[w + 1] = cur[w]
        p[y + 1] = cur
    return p[1:, 1:w + 1]


def decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a version-2 stream to its ``(H, W, C)`` tile (reference implementation)."""
    raw = bytes(data)
    (h, w, c), dtype, xform, planes = parse_header(raw)
    maxv = 65535 if dtype == np.uint16 else 255
    pos = HEADER.size + PLANE.size * c + 4
    out = []
    e0 = None
    for i, desc in enumerate(planes):
        n = sum(desc[3:])
        cross = e0 if (xform >= XFORM_RCT and i > 0) else None
        e = _decode_residuals(raw[pos:pos + n], desc, h, w, cross)
        e0 = e if i == 0 else e0
        out.append(_reconstruct(e, desc[0], *v1._plane_range(xform, i, maxv)))
        pos += n
    chans = v1.inverse_transform(out, xform)
    if any(ch.min() < 0 or ch.max() > maxv for ch in chans):
        raise CodecError(None, "corrupt csp stream: colour transform leaves the sample range")
    return np.stack(chans, axis=-1).astype(dtype)
