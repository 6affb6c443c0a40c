/* CSP lossless predictive pixel codec, bitstream version 2 (speed-oriented; docs/codec.md §7).
 *
 * Included at the end of cspcodec.c (shares its static helpers: CRC, tables, RCT, bit writer).
 * Defined by csp/codecs/lossless/reference_v2.py; this file must produce and accept the same bytes.
 *
 * Differences from version 1: one predictor per plane (MED, AVG4 or AVG2, no per-sample selection);
 * the context of a sample depends only on the residual magnitudes of the row above (and of plane 0 at
 * the same pixel under RCT), so entropy decoding never waits for pixel reconstruction; each plane has
 * one word stream shared by four interleaved rANS states (lane = column & 3) and one raw-bit stream.
 * The decoder first entropy-decodes residuals row by row (branch-free, four independent rANS chains),
 * then reconstructs pixels (under RCT the three planes together, three independent chains).
 */

#define V2_PLANE_SIZE 16
#define V2_NCTX 16
#define V2_LANES 4
#define V2_NPRED 3

/* Per plane: predictor (u8), ashift (u8), reserved (u16), table length, word-stream length, raw length */
typedef struct { int kind, ashift; int64_t tl, wl, bl, size; } v2desc_t;

static void v2_read_desc(const uint8_t *d, v2desc_t *D) {
    D->kind = d[0]; D->ashift = d[1];
    D->tl = rd32(d + 4); D->wl = rd32(d + 8); D->bl = rd32(d + 12);
    D->size = D->tl + D->wl + D->bl;
}

static int v2_parse_header(const uint8_t *src, int64_t n, int64_t *h, int64_t *w, int64_t *c, int *bps, int *xform) {
    int64_t hh, ww, cc, hlen; int b, xf;
    int rc = check_header(src, n, 2, HEADER_SIZE, V2_PLANE_SIZE, 1, &hh, &ww, &cc, &b, &xf, &hlen);
    if (rc) return rc;
    int64_t total = hlen + 4;
    for (int64_t p = 0; p < cc; p++) {
        const uint8_t *d = src + HEADER_SIZE + V2_PLANE_SIZE * p;
        v2desc_t D; v2_read_desc(d, &D);
        if (D.kind >= V2_NPRED || D.ashift > 15 || rd16(d + 2) || D.wl < 16 || (D.wl & 1)) return CSP_E_HEADER;
        total += D.size;
    }
    if (total != n) return CSP_E_HEADER;
    *h = hh; *w = ww; *c = cc; *bps = b; *xform = xf;
    return CSP_OK;
}

/* context of every sample of a row: activity of the row above (padded |e| row `ab`, 2 zeros each side)
 * plus, under RCT for planes 1 and 2, plane 0's |e| on this row (x0, or NULL) */
static inline void v2_ctx_row(const int32_t *restrict ab, const int32_t *restrict x0, int64_t w, int sh,
                              const luts_t *L, uint8_t *restrict ctx) {
    if (x0) {
        for (int64_t x = 0; x < w; x++) {
            int32_t e0 = x0[x] < 0 ? -x0[x] : x0[x];
            int32_t act = (4 * ab[x + 2] + 2 * (ab[x + 1] + ab[x + 3]) + ab[x] + ab[x + 4] + 4 * e0) >> sh;
            ctx[x] = L->act0[act > 255 ? 255 : act];
        }
    } else {
        for (int64_t x = 0; x < w; x++) {
            int32_t act = (4 * ab[x + 2] + 2 * (ab[x + 1] + ab[x + 3]) + ab[x] + ab[x + 4]) >> sh;
            ctx[x] = L->act0[act > 255 ? 255 : act];
        }
    }
}

/* ------------------------------------------------------------------ encoder */
/* Writes the frequency tables of hist (V2_NCTX x NTOK) like version 1; fills freq / start. */
static int64_t v2_write_tables(const uint32_t *hist, uint8_t *out, int64_t cap, uint32_t freq[][NTOK],
                               uint32_t start[][NTOK]) {
    bitw_t bw = {out, 0, cap, 0, 0, 0};
    for (int k = 0; k < V2_NCTX; k++)
        if (!write_freqs(&bw, hist + k * NTOK, freq[k], start[k])) freq[k][0] = TOTAL;  /* one-symbol context */
    bw_finish(&bw);
    return bw.overflow ? CSP_E_OUTSIZE : bw.pos;
}

typedef struct {
    int32_t *P;      /* padded plane (h+1) x (w+2) */
    int32_t *R, *R0; /* residuals of this plane and of plane 0 (h x w) */
    int32_t *ab;     /* padded |e| row (w + 4) */
    uint8_t *tok, *ctx;
    uint8_t *raw;    /* raw bits of the current plane (2 * N + 16 bytes) */
    uint16_t *words;
} v2enc_t;

static int64_t v2_encode_plane(v2enc_t *S, const luts_t *L, int64_t h, int64_t w, range_t rg, int is16,
                               int32_t *R, const int32_t *R0, uint8_t *desc, uint8_t *out, int64_t cap) {
    const int64_t W2 = w + 2, N = h * w;
    /* predictor: smallest sum of bit lengths of |e| over the selection rows, first on ties */
    int64_t cost[V2_NPRED] = {0, 0, 0};
    for (int64_t y = (h > 1 ? 1 : 0); y < h; y += 4) {
        const int32_t *pr = S->P + y * W2, *cr = pr + W2;
        for (int64_t x = 0; x < w; x++) {
            int32_t a = cr[x], b = pr[x + 1], c = pr[x], d = pr[x + 2], v = cr[x + 1];
            for (int k = 0; k < V2_NPRED; k++) cost[k] += bitlen32(iabs32(v - predict(k, a, b, c, d, rg.lo, rg.hi)));
        }
    }
    int kind = 0;
    for (int k = 1; k < V2_NPRED; k++) if (cost[k] < cost[kind]) kind = k;
    int64_t sad = 0;
    for (int64_t y = 0; y < h; y++) {
        const int32_t *pr = S->P + y * W2, *cr = pr + W2;
        int32_t *re = R + y * w;
        for (int64_t x = 0; x < w; x++) {
            int32_t e = cr[x + 1] - predict(kind, cr[x], pr[x + 1], pr[x], pr[x + 2], rg.lo, rg.hi);
            re[x] = e; sad += iabs32(e);
        }
    }
    int ashift = 0;
    if (is16) { ashift = bitlen64((uint64_t)(sad / N)) - 3; if (ashift < 0) ashift = 0; }
    /* two histograms (even / odd columns) so that runs of one bin do not serialise on one counter */
    uint32_t hist[V2_NCTX * NTOK], hist2[V2_NCTX * NTOK];
    memset(hist, 0, sizeof hist); memset(hist2, 0, sizeof hist2);
    memset(S->ab, 0, sizeof(int32_t) * (size_t)(w + 4));
    bitw_t rb = {S->raw, 0, 2 * N + 16, 0, 0, 0}; /* raw bits, raster order (copied out below) */
    for (int64_t y = 0; y < h; y++) {
        const int32_t *re = R + y * w;
        uint8_t *cx = S->ctx + y * w, *tk = S->tok + y * w;
        v2_ctx_row(S->ab, R0 ? R0 + y * w : NULL, w, 2 + ashift, L, cx);
        for (int64_t x = 0; x < w; x++) {
            int32_t e = re[x];
            uint32_t u = e >= 0 ? 2u * (uint32_t)e : 2u * (uint32_t)(-e) - 1u;
            int t = u_token(u);
            tk[x] = (uint8_t)t;
            if (x & 1) hist2[cx[x] * NTOK + t]++; else hist[cx[x] * NTOK + t]++;
            S->ab[x + 2] = iabs32(e);
            if (t >= 16) bw_put(&rb, u, (t - 16) / 4 + 2);
        }
    }
    bw_finish(&rb);
    if (rb.overflow) return CSP_E_OUTSIZE;
    for (int k = 0; k < V2_NCTX * NTOK; k++) hist[k] += hist2[k];
    uint32_t freq[V2_NCTX][NTOK], start[V2_NCTX][NTOK];
    int64_t tl = v2_write_tables(hist, out, cap, freq, start);
    if (tl < 0) return tl;
    /* rANS backwards over the plane; lane x & 3; words fill S->words backwards */
    int64_t wp = N + 8;
    uint32_t st[V2_LANES] = {RANS_L, RANS_L, RANS_L, RANS_L};
    /* x / f through a double reciprocal: after renormalisation x < f * 2^21, so the product is within
     * 2^-30 of the exact quotient, which is >= 1/f away from the next integer unless exact; the one
     * possible error (one too small when x / f is an integer) is corrected below. */
    double rcp[V2_NCTX][NTOK];
    for (int k = 0; k < V2_NCTX; k++)
        for (int s = 0; s < NTOK; s++) rcp[k][s] = freq[k][s] ? 1.0 / (double)freq[k][s] : 0.0;
    for (int64_t y = h - 1; y >= 0; y--) {
        const uint8_t *cxr = S->ctx + y * w, *tkr = S->tok + y * w;
        for (int64_t x = w - 1; x >= 0; x--) {
            const int j = (int)(x & 3), cx = cxr[x], s = tkr[x];
            uint32_t f = freq[cx][s], xs = st[j];
            if ((uint64_t)xs >= ((uint64_t)((RANS_L >> PROB_BITS) << 16) * f)) { S->words[--wp] = (uint16_t)xs; xs >>= 16; }
            uint32_t q = (uint32_t)((double)xs * rcp[cx][s]);
            uint32_t r = xs - q * f;
            uint32_t fix = r >= f;
            q += fix; r -= fix ? f : 0;
            st[j] = (q << PROB_BITS) + r + start[cx][s];
        }
    }
    int64_t nw = N + 8 - wp, wl = 16 + 2 * nw, pos = tl;
    if (pos + wl > cap) return CSP_E_OUTSIZE;
    for (int j = 0; j < V2_LANES; j++) wr32(out + pos + 4 * j, st[j]);
    for (int64_t k = 0; k < nw; k++) wr16(out + pos + 16 + 2 * k, S->words[wp + k]);
    pos += wl;
    if (pos + rb.pos > cap) return CSP_E_OUTSIZE;
    memcpy(out + pos, S->raw, (size_t)rb.pos);
    pos += rb.pos;
    desc[0] = (uint8_t)kind; desc[1] = (uint8_t)ashift; desc[2] = desc[3] = 0;
    wr32(desc + 4, (uint32_t)tl); wr32(desc + 8, (uint32_t)wl); wr32(desc + 12, (uint32_t)rb.pos);
    return pos;
}

int64_t csp_encode2(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap) {
    return csp_encode2_simd(src, h, w, c, bps, dst, cap, csp_cpu_avx512());
}

/* csp_encode2; simd: the AVX-512 row kernels (plane fill, transform choice) may be used. */
static int64_t csp_encode2_simd(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap,
                                int simd) {
    int64_t bound = csp_encode_bound(h, w, c, bps);
    if (bound < 0 || !src || !dst) return CSP_E_ARG;
    const int64_t W2 = w + 2, N = h * w;
    const int32_t maxv = bps == 1 ? 255 : 65535;
    int64_t hlen = HEADER_SIZE + V2_PLANE_SIZE * c;
    if (cap < hlen + 4) return CSP_E_OUTSIZE;
    v2enc_t S;
    const size_t PS = (size_t)((h + 1) * W2);
    S.P = (int32_t *)malloc(sizeof(int32_t) * (PS + 2 * (size_t)N + (size_t)w + 4));
    S.tok = (uint8_t *)malloc((size_t)N * 4 + 16);
    S.words = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(N + 8));
    int64_t ret = 0;
    if (!S.P || !S.tok || !S.words) { ret = CSP_E_NOMEM; goto done; }
    S.R = S.P + PS; S.R0 = S.R + N; S.ab = S.R0 + N; S.ctx = S.tok + N; S.raw = S.ctx + N;
    luts_t L; make_luts(&L);
    int xform = choose_xform(src, bps, h, w, c, maxv, S.P, simd);
    write_header(dst, 2, bps, xform, h, w, c);
    int64_t pos = hlen + 4;
    for (int64_t pl = 0; pl < c; pl++) {
        fill_plane(src, bps, h, w, c, xform, (int)pl, S.P, 0, simd);
        int64_t n = v2_encode_plane(&S, &L, h, w, plane_range(xform, (int)pl, maxv), bps == 2,
                                    pl == 0 ? S.R0 : S.R, (xform && pl > 0) ? S.R0 : NULL,
                                    dst + HEADER_SIZE + V2_PLANE_SIZE * pl, dst + pos, cap - pos);
        if (n < 0) { ret = n; goto done; }
        pos += n;
    }
    wr32(dst + hlen, crc32_bytes(dst, (size_t)hlen));
    ret = pos;
done:
    free(S.P); free(S.tok); free(S.words);
    return ret;
}

/* ------------------------------------------------------------------ decoder */
static const uint32_t V2_TOK_BASE[NTOK] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
#define B4(n) (4u << (n)), (5u << (n)), (6u << (n)), (7u << (n))
    B4(2), B4(3), B4(4), B4(5), B4(6), B4(7), B4(8), B4(9), B4(10), B4(11), B4(12), B4(13), B4(14), B4(15), B4(16)
#undef B4
};

/* Version-2 decoding tables: per context, the token of every slot (uint8, 2 KiB: the hot part stays in
 * L1) and per token freq << 16 | start. */
typedef struct {
    uint8_t sym[V2_NCTX][TOTAL];
    uint32_t fs[V2_NCTX][NTOK];
} v2tables_t;

/* Parse the frequency tables (format of version 1, V2_NCTX contexts) into T. */
static int v2_read_tables(const uint8_t *p, int64_t len, v2tables_t *T) {
    bitr_t r; br_init(&r, p, len);
    for (int k = 0; k < V2_NCTX; k++) {
        uint32_t f[NTOK];
        int nsym;
        if (read_freqs(&r, f, &nsym) != CSP_OK) return CSP_E_TABLE;
        uint32_t acc = 0;
        for (int s = 0; s < nsym; s++) {
            memset(T->sym[k] + acc, s, f[s]);
            T->fs[k][s] = (f[s] << 16) | acc;
            acc += f[s];
        }
        for (int s = nsym; s < NTOK; s++) T->fs[k][s] = 0;
    }
    if (!br_at_end(&r)) return CSP_E_TABLE;
    return CSP_OK;
}

static inline uint64_t rd64le(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* Entropy-decode the residuals of one plane into R (h x w). The word and raw-bit streams are copied to
 * zero-padded scratch (pad >= 2w + 8 bytes) so the inner loop needs no bounds checks: a row reads at
 * most w words and 16w raw bits, and the positions are checked against the true lengths after each row. */
static int v2_decode_residuals(const uint8_t *body, const v2desc_t *D, int64_t h, int64_t w, const luts_t *L,
                               v2tables_t *T, int32_t *R, const int32_t *R0, int32_t *ab, uint8_t *ctx,
                               uint8_t *scratch) {
    int rc = v2_read_tables(body, D->tl, T);
    if (rc) return rc;
    const int64_t pad = 2 * w + 16;
    const uint8_t *ws = body + D->tl;
    uint32_t s0 = rd32(ws), s1 = rd32(ws + 4), s2 = rd32(ws + 8), s3 = rd32(ws + 12);
    if (s0 < RANS_L || s1 < RANS_L || s2 < RANS_L || s3 < RANS_L) return CSP_E_DATA;
    const int64_t nwb = D->wl - 16;
    uint8_t *wbuf = scratch, *rbuf = scratch + nwb + pad;
    memcpy(wbuf, ws + 16, (size_t)nwb); memset(wbuf + nwb, 0, (size_t)pad);
    memcpy(rbuf, ws + D->wl, (size_t)D->bl); memset(rbuf + D->bl, 0, (size_t)pad);
    const uint8_t *wp = wbuf;
    uint64_t bp = 0;
    const uint64_t bmax = 8 * (uint64_t)D->bl;
    const int sh = 2 + D->ashift;
    memset(ab, 0, sizeof(int32_t) * (size_t)(w + 4));
#define V2_DEC(X, ST) do { \
        const uint32_t c_ = ctx[X], slot_ = (ST) & (TOTAL - 1); \
        const uint32_t sym_ = T->sym[c_][slot_], fs_ = T->fs[c_][sym_]; \
        ST = (fs_ >> 16) * ((ST) >> PROB_BITS) + slot_ - (fs_ & 0xFFFF); \
        uint32_t need_ = (ST) < RANS_L; \
        uint32_t wd_ = rd16(wp); \
        ST = need_ ? ((ST) << 16) | wd_ : (ST); \
        wp += 2 * need_; \
        uint32_t nb_ = TOK_NB[sym_]; \
        uint32_t raw_ = (uint32_t)(rd64le(rbuf + (bp >> 3)) >> (bp & 7)) & ((1u << nb_) - 1u); \
        bp += nb_; \
        uint32_t u_ = V2_TOK_BASE[sym_] | raw_; \
        int32_t ev_ = (int32_t)(u_ >> 1) ^ -(int32_t)(u_ & 1); \
        re[X] = ev_; \
        ab[(X) + 2] = ev_ < 0 ? -ev_ : ev_; /* the contexts of this row are already computed */ \
    } while (0)
    for (int64_t y = 0; y < h; y++) {
        int32_t *re = R + y * w;
        v2_ctx_row(ab, R0 ? R0 + y * w : NULL, w, sh, L, ctx);
        int64_t x = 0;
        for (; x + 4 <= w; x += 4) { V2_DEC(x, s0); V2_DEC(x + 1, s1); V2_DEC(x + 2, s2); V2_DEC(x + 3, s3); }
        if (x < w) V2_DEC(x, s0);
        if (x + 1 < w) V2_DEC(x + 1, s1);
        if (x + 2 < w) V2_DEC(x + 2, s2);
        if (wp > wbuf + nwb || bp > bmax) return CSP_E_DATA;
    }
#undef V2_DEC
    if (s0 != RANS_L || s1 != RANS_L || s2 != RANS_L || s3 != RANS_L || wp != wbuf + nwb || (bp + 7) / 8 != (uint64_t)D->bl)
        return CSP_E_DATA;
    return CSP_OK;
}

/* Reconstruct one sample: prediction kind k from a (left), b, c, d; v clamped, flag on clamp. */
#define V2_PRED(k, a, b, c, d, lo, hi, out) do { \
        if ((k) == 0) { int32_t mx_ = (a) > (b) ? (a) : (b), mn_ = (a) < (b) ? (a) : (b); \
                        out = (c) >= mx_ ? mn_ : ((c) <= mn_ ? mx_ : (a) + (b) - (c)); } \
        else if ((k) == 1) out = clamp32((2 * (a) + 2 * (b) - (c) + (d) + 2) >> 2, lo, hi); \
        else out = ((a) + (b) + 1) >> 1; \
    } while (0)

/* One padded row (w + 2) of a plane from its residuals and the previous padded row. Returns nonzero
 * when a sample fell outside [lo, hi] (stored clamped). */
CSP_INLINE int v2_recon_row_k(const int kind, const int32_t *pr, int32_t *cr, const int32_t *re, int64_t w, int32_t lo, int32_t hi) {
    int bad = 0;
    cr[0] = pr[1];
    int32_t a = cr[0];
    for (int64_t x = 0; x < w; x++) {
        int32_t p;
        V2_PRED(kind, a, pr[x + 1], pr[x], pr[x + 2], lo, hi, p);
        int32_t v0 = p + re[x], v = clamp32(v0, lo, hi);
        bad |= v != v0;
        cr[x + 1] = a = v;
    }
    cr[w + 1] = cr[w];
    return bad;
}

static int v2_recon_row(int kind, const int32_t *pr, int32_t *cr, const int32_t *re, int64_t w, int32_t lo, int32_t hi) {
    if (kind == 0) return v2_recon_row_k(0, pr, cr, re, w, lo, hi);
    if (kind == 1) return v2_recon_row_k(1, pr, cr, re, w, lo, hi);
    return v2_recon_row_k(2, pr, cr, re, w, lo, hi);
}

/* Three planes at once (RCT): three independent dependency chains in one loop. K0..K2 are the
 * predictors (compile-time constants at the call sites, or -1: read from kinds[] per sample, a
 * perfectly predicted branch). */
CSP_INLINE int v2_recon_row3_k(const int *kinds, int32_t *const *pr, int32_t *const *cr, const int32_t *const *re,
                               int64_t w, const range_t *rg, const int K0, const int K1, const int K2,
                               const int CL) {
    const int k0 = K0 >= 0 ? K0 : kinds[0], k1 = K1 >= 0 ? K1 : kinds[1], k2 = K2 >= 0 ? K2 : kinds[2];
    const int32_t *p0 = pr[0], *p1 = pr[1], *p2 = pr[2], *e0 = re[0], *e1 = re[1], *e2 = re[2];
    int32_t *c0 = cr[0], *c1 = cr[1], *c2 = cr[2];
    int32_t a0 = c0[0] = p0[1], a1 = c1[0] = p1[1], a2 = c2[0] = p2[1];
    const uint32_t s0 = (uint32_t)(rg[0].hi - rg[0].lo), s1 = (uint32_t)(rg[1].hi - rg[1].lo);
    const uint32_t s2 = (uint32_t)(rg[2].hi - rg[2].lo);
    int bad = 0;
    for (int64_t x = 0; x < w; x++) {
        int32_t q0, q1, q2, v;
        (void)v; (void)s0; (void)s1; (void)s2;
        V2_PRED(k0, a0, p0[x + 1], p0[x], p0[x + 2], rg[0].lo, rg[0].hi, q0);
        V2_PRED(k1, a1, p1[x + 1], p1[x], p1[x + 2], rg[1].lo, rg[1].hi, q1);
        V2_PRED(k2, a2, p2[x + 1], p2[x], p2[x + 2], rg[2].lo, rg[2].hi, q2);
        q0 += e0[x]; q1 += e1[x]; q2 += e2[x];
        if (CL) {
            v = clamp32(q0, rg[0].lo, rg[0].hi); bad |= v != q0; q0 = v;
            v = clamp32(q1, rg[1].lo, rg[1].hi); bad |= v != q1; q1 = v;
            v = clamp32(q2, rg[2].lo, rg[2].hi); bad |= v != q2; q2 = v;
        } else { /* range-checked, not clamped: see v2_recon_row3 */
            bad |= ((uint32_t)(q0 - rg[0].lo) > s0) | ((uint32_t)(q1 - rg[1].lo) > s1) | ((uint32_t)(q2 - rg[2].lo) > s2);
        }
        c0[x + 1] = a0 = q0; c1[x + 1] = a1 = q1; c2[x + 1] = a2 = q2;
    }
    c0[w + 1] = c0[w]; c1[w + 1] = c1[w]; c2[w + 1] = c2[w];
    return bad;
}

/* One specialised copy per predictor combination (27) for rows of up to 1024 samples; these store
 * out-of-range samples unclamped (the row is rejected afterwards): starting from a valid row above, each
 * prediction lies within its neighbours (MED, AVG2) or is clamped (AVG4) and |e| < 2^19, so no value
 * of the row exceeds 2^30 in magnitude. Wider rows use the generic clamped loop. */
static int v2_recon_row3(const int *kinds, int32_t *const *pr, int32_t *const *cr, const int32_t *const *re,
                         int64_t w, const range_t *rg) {
    if (w > 1024) return v2_recon_row3_k(kinds, pr, cr, re, w, rg, -1, -1, -1, 1);
#define V2_R3(a, b, c) case (a) * 9 + (b) * 3 + (c): return v2_recon_row3_k(kinds, pr, cr, re, w, rg, a, b, c, 0);
#define V2_R3B(a, b) V2_R3(a, b, 0) V2_R3(a, b, 1) V2_R3(a, b, 2)
#define V2_R3A(a) V2_R3B(a, 0) V2_R3B(a, 1) V2_R3B(a, 2)
    switch (kinds[0] * 9 + kinds[1] * 3 + kinds[2]) {
        V2_R3A(0) V2_R3A(1) V2_R3A(2)
        default: return v2_recon_row3_k(kinds, pr, cr, re, w, rg, -1, -1, -1, 1);
    }
#undef V2_R3A
#undef V2_R3B
#undef V2_R3
}

/* Store padded row cr (w + 2) as channel ch of output row y. */
static inline void v2_store(void *dst, int bps, int64_t y, int64_t w, int64_t c, int64_t ch, const int32_t *cr) {
    if (bps == 1) { uint8_t *o = (uint8_t *)dst + y * w * c + ch; for (int64_t x = 0; x < w; x++) o[x * c] = (uint8_t)cr[x + 1]; }
    else { uint16_t *o = (uint16_t *)dst + y * w * c + ch; for (int64_t x = 0; x < w; x++) o[x * c] = (uint16_t)cr[x + 1]; }
}

/* Inverse RCT of one row (three padded plane rows) into the output; nonzero if a sample leaves [0, maxv]. */
static int v2_store_rct(void *dst, int bps, int64_t y, int64_t w, int k4, int32_t maxv, int32_t *const *cr) {
    const int32_t *Y = cr[0] + 1, *U = cr[1] + 1, *V = cr[2] + 1;
    uint32_t oor = 0;
    if (bps == 1) {
        uint8_t *o = (uint8_t *)dst + y * w * 3;
        for (int64_t x = 0; x < w; x++) {
            int32_t r, g, b;
            inverse_rct(k4 + 1, Y[x], U[x], V[x], &r, &g, &b);
            oor |= (uint32_t)r | (uint32_t)g | (uint32_t)b;
            o[3 * x] = (uint8_t)r; o[3 * x + 1] = (uint8_t)g; o[3 * x + 2] = (uint8_t)b;
        }
    } else {
        uint16_t *o = (uint16_t *)dst + y * w * 3;
        for (int64_t x = 0; x < w; x++) {
            int32_t r, g, b;
            inverse_rct(k4 + 1, Y[x], U[x], V[x], &r, &g, &b);
            oor |= (uint32_t)r | (uint32_t)g | (uint32_t)b;
            o[3 * x] = (uint16_t)r; o[3 * x + 1] = (uint16_t)g; o[3 * x + 2] = (uint16_t)b;
        }
    }
    return oor > (uint32_t)maxv; /* maxv = 2^k - 1: a negative or too large sample sets a higher bit */
}

/* Planes are decoded in groups of three (one group under RCT; single planes when fewer than three
 * remain): residuals of the group first, then its reconstruction with three interleaved chains. */
static int csp_decode2(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes) {
    int64_t h, w, c; int bps, xform;
    int rc = v2_parse_header(src, n, &h, &w, &c, &bps, &xform);
    if (rc) return rc;
    if (!dst || dst_bytes != h * w * c * bps) return CSP_E_OUTSIZE;
    const int64_t N = h * w, W2 = w + 2;
    const int32_t maxv = bps == 1 ? 255 : 65535;
    const int nres = c >= 3 ? 3 : 1; /* residual planes kept at once */
    int64_t maxseg = 0;
    for (int64_t pl = 0; pl < c; pl++) {
        v2desc_t D; v2_read_desc(src + HEADER_SIZE + V2_PLANE_SIZE * pl, &D);
        if (D.wl + D.bl > maxseg) maxseg = D.wl + D.bl;
    }
    int32_t *R = (int32_t *)malloc(sizeof(int32_t) * ((size_t)(nres * N) + (size_t)(w + 4) + 6 * (size_t)W2));
    uint8_t *ctx = (uint8_t *)malloc((size_t)w + (size_t)maxseg + 2 * (size_t)(2 * w + 16));
    v2tables_t *T = (v2tables_t *)malloc(sizeof(v2tables_t));
    if (!R || !ctx || !T) { rc = CSP_E_NOMEM; goto done; }
    int32_t *ab = R + nres * N, *rows = ab + w + 4; /* rows: 3 planes x (previous, current) padded rows */
    uint8_t *scratch = ctx + w;
    luts_t L; make_luts(&L);
    int64_t off = HEADER_SIZE + V2_PLANE_SIZE * c + 4;
    for (int64_t g = 0; g < c;) {
        const int gs = c - g >= 3 ? 3 : 1;
        int kinds[3] = {0, 0, 0};
        range_t rgs[3];
        int32_t *pr[3], *cr[3];
        const int32_t *re[3];
        for (int q = 0; q < gs; q++) {
            const int64_t pl = g + q;
            v2desc_t D; v2_read_desc(src + HEADER_SIZE + V2_PLANE_SIZE * pl, &D);
            rc = v2_decode_residuals(src + off, &D, h, w, &L, T, R + q * N, (xform && pl > 0) ? R : NULL, ab, ctx,
                                     scratch);
            if (rc) goto done;
            off += D.size;
            kinds[q] = D.kind;
            rgs[q] = plane_range(xform, (int)pl, maxv);
            pr[q] = rows + 2 * q * W2; cr[q] = pr[q] + W2;
            memset(pr[q], 0, sizeof(int32_t) * (size_t)W2);
        }
        for (int64_t y = 0; y < h; y++) {
            for (int q = 0; q < gs; q++) re[q] = R + q * N + y * w;
            int bad = gs == 3 ? v2_recon_row3(kinds, pr, cr, re, w, rgs)
                              : v2_recon_row(kinds[0], pr[0], cr[0], re[0], w, rgs[0].lo, rgs[0].hi);
            if (bad) { rc = CSP_E_RANGE; goto done; }
            if (xform) {
                if (v2_store_rct(dst, bps, y, w, xform - 1, maxv, cr)) { rc = CSP_E_RANGE; goto done; }
            } else {
                for (int q = 0; q < gs; q++) v2_store(dst, bps, y, w, c, g + q, cr[q]);
            }
            for (int q = 0; q < gs; q++) { int32_t *t = pr[q]; pr[q] = cr[q]; cr[q] = t; }
        }
        g += gs;
    }
    rc = CSP_OK;
done:
    free(R); free(ctx); free(T);
    return rc;
}
