/* CSP lossless predictive pixel codec, bitstream version 3 (docs/codec.md §8).
 *
 * Included at the end of cspcodec.c: version 3 keeps version 1's whole model (colour transform,
 * predictors and padding, contexts, tables; analyze_plane and read_tables_from are shared) and changes
 * only the order of the coded symbols. The rows of a plane are dealt to L = min(32, max(1, W / 2))
 * lanes (row y to lane y % L) that run as a wavefront, lane k two samples behind lane k - 1; each lane
 * has its own rANS state, all share one word stream, and raw bits ride in the rANS states. Defined by
 * csp/codecs/lossless/reference_v3.py; this file must produce and accept the same bytes.
 *
 * Decoder memory layout ("skew" buffers): sample q of lane k is decoded at step t = q + 2k and every
 * per-sample array X (pixels P, |e| E, |x - MED| M, |x - AVG4| A, |x - GRAD| G) is stored at
 * X[t * 32 + k]: the 32 samples of a step are two contiguous vectors. The neighbours a sample reads
 * from the row above are then the vectors of steps t - 3 .. t - 1 moved up one lane (lane 0 takes lane
 * L - 1's previous row, W - 2L steps further back). The AVX-512 kernel decodes one step (32 samples)
 * per iteration in this layout; a portable scalar path (same layout) runs the ramp-up and ramp-down
 * steps after a corrupt sample, planes with fewer than 32 lanes, and everything on CPUs without AVX-512.
 */

#define V3_LANES 32
#define V3_DESC 4
#define V3_FIXED (HEADER_SIZE + 8) /* header and the two lengths; + 4C descriptors, then the CRC */

/* Schedule of a plane: lane count, rows per lane, number of steps. */
typedef struct { int64_t L, n[V3_LANES], tend; } v3sched_t;

static void v3_schedule(int64_t h, int64_t w, v3sched_t *S) {
    int64_t L = w / 2;
    if (L < 1) L = 1;
    if (L > V3_LANES) L = V3_LANES;
    S->L = L; S->tend = 0;
    for (int64_t k = 0; k < V3_LANES; k++) {
        S->n[k] = (k < L && k < h) ? (h - k + L - 1) / L : 0;
        if (S->n[k] && S->n[k] * w + 2 * k > S->tend) S->tend = S->n[k] * w + 2 * k;
    }
}

/* Token -> base of u before the raw bits are or-ed in (token itself below 16). */
static inline uint32_t tok_base(int s) { return s < 16 ? (uint32_t)s : ((4u | (uint32_t)((s - 16) & 3)) << TOK_NB[s]); }

/* ------------------------------------------------------------------ encoder */
int64_t csp_encode3_bound(int64_t h, int64_t w, int64_t c, int bps) {
    if (h < 1 || w < 1 || c < 1 || c > 65535 || (bps != 1 && bps != 2)) return CSP_E_ARG;
    if (!shape_ok(h, w, c)) return CSP_E_ARG;
    /* tables: at most 30 contexts of 77 bytes per plane; words: at most two per sample */
    return V3_FIXED + 4 + 4 * V3_LANES + c * (V3_DESC + 2320 + h * w * 4);
}

/* The chosen context table of one plane in the compact form the emitter needs. */
typedef struct { uint16_t freq[MAX_CTX][NTOK], start[MAX_CTX][NTOK]; } v3freq_t;

#if CSP_X86_AVX512
static void v3_avx512_pack(const uint8_t *tk, const uint8_t *cx, uint32_t *uu, int64_t n);
static int64_t v3_avx512_emit_plane(const v3sched_t *SC, int64_t w, const uint32_t *pks, const uint32_t *fs, uint32_t *xs,
                                    uint16_t *wbuf, int64_t wp);
#endif

int64_t csp_encode3(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap) {
    return csp_encode3_simd(src, h, w, c, bps, dst, cap, csp_cpu_avx512());
}

static int64_t csp_encode3_simd(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap,
                                int simd) {
    if (csp_encode3_bound(h, w, c, bps) < 0) return CSP_E_ARG;
    const int64_t N = h * w;
    const int32_t maxv = bps == 1 ? 255 : 65535;
    const int64_t hlen = V3_FIXED + V3_DESC * c;
    if (cap < hlen + 4) return CSP_E_OUTSIZE;
    enc_scratch_t S;
    enc_scratch_planes(&S, h, w, c, bps, simd);
    uint8_t *tokA = (uint8_t *)malloc((size_t)(N * c) * 3);  /* token, context mode 0, mode 1 */
    uint32_t *uA = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)(N * c));
    uint8_t *modes = (uint8_t *)malloc((size_t)c);
    v3freq_t *FQ = (v3freq_t *)malloc(sizeof(v3freq_t) * (size_t)c);
    plane_model_t *M = (plane_model_t *)malloc(sizeof(plane_model_t));
    int64_t wcap = 2 * N * c + 2;
    uint16_t *wbuf = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)wcap);
    int64_t ret = 0;
    if (!S.P || !tokA || !uA || !modes || !FQ || !M || !wbuf) { ret = CSP_E_NOMEM; goto done; }
    luts_t L; make_luts(&L);
    int xform = choose_xform(src, bps, h, w, c, maxv, S.P, simd);
    write_header(dst, 3, bps, xform, h, w, c);
    /* model of every plane (version 1's), tables written in plane order */
    bitw_t bw = {dst + hlen + 4, 0, cap - hlen - 4, 0, 0, 0};
    for (int64_t pl = 0; pl < c; pl++) {
        enc_fill(&S, src, bps, h, w, c, xform, (int)pl);
        S.tok = tokA + pl * N; S.ctx0 = tokA + N * c + pl * N; S.ctx1 = tokA + 2 * N * c + pl * N;
        S.u = uA + pl * N;
        analyze_plane(&S, &L, h, w, plane_range(xform, (int)pl, maxv), bps == 2, pl == 0 ? S.E0 : S.E,
                      (xform && pl > 0) ? S.E0 : NULL, M, &bw);
        if (bw.overflow) { ret = CSP_E_OUTSIZE; goto done; }
        uint8_t *d = dst + HEADER_SIZE + V3_DESC * pl;
        d[0] = (uint8_t)M->kind; d[1] = (uint8_t)M->mode; d[2] = (uint8_t)M->ashift; d[3] = (uint8_t)M->lshift;
        modes[pl] = (uint8_t)M->mode;
        for (int k = 0; k < MAX_CTX; k++)
            for (int s = 0; s < NTOK; s++) {
                FQ[pl].freq[k][s] = (uint16_t)M->freq[k][s];
                FQ[pl].start[k][s] = (uint16_t)M->start[k][s];
            }
    }
    const int64_t tl = bw.pos;
    /* rANS, backwards: planes C-1..0, steps descending, phase B (raw bits) then phase A (tokens),
     * lanes descending; words fill wbuf from the end */
    v3sched_t SC; v3_schedule(h, w, &SC);
    uint32_t xs[V3_LANES];
    for (int k = 0; k < V3_LANES; k++) xs[k] = RANS_L;
    int64_t wp = wcap;
    for (int64_t pl = c - 1; pl >= 0; pl--) {
        const uint8_t *tk = tokA + pl * N, *cx = tokA + (modes[pl] ? 2 : 1) * N * c + pl * N;
        const uint32_t *uu = uA + pl * N;
        const v3freq_t *F = &FQ[pl];
#if CSP_X86_AVX512
        if (simd && SC.L == V3_LANES) {
            uint32_t fs[MAX_CTX * 128]; /* indexed by context << 7 | token, as the packed input holds them */
            for (int k = 0; k < N_CTX[modes[pl]]; k++) /* the contexts of the plane's mode */
                for (int q = 0; q < 128; q++) fs[k * 128 + q] = q < NTOK ? F->freq[k][q] | ((uint32_t)F->start[k][q] << 16) : 0;
            v3_avx512_pack(tk, cx, uA + pl * N, N); /* u is not needed after this plane's pass */
            wp = v3_avx512_emit_plane(&SC, w, uA + pl * N, fs, xs, wbuf, wp);
            continue;
        }
#endif
        /* lane positions at the last step, then walked backwards one step at a time */
        int64_t lr[V3_LANES], lx[V3_LANES];
        for (int64_t k = 0; k < SC.L; k++) {
            const int64_t q = SC.tend - 1 - 2 * k;
            lr[k] = q >= 0 ? q / w : -1; lx[k] = q >= 0 ? q - lr[k] * w : 0;
        }
        for (int64_t t = SC.tend - 1; t >= 0; t--) {
            int64_t idx[V3_LANES];
            for (int64_t k = SC.L - 1; k >= 0; k--) {
                const int64_t r = lr[k], x = lx[k];
                idx[k] = -1;
                if (t - 2 * k < 0) continue;
                if (--lx[k] < 0) { lx[k] = w - 1; lr[k]--; }
                if (r >= SC.n[k]) continue;
                const int64_t i = (k + SC.L * r) * w + x;
                idx[k] = i;
                /* branch-free (the flushes are unpredictable): the word is always written below wp and
                 * kept by moving wp; nb = 0 never flushes and shifts nothing in */
                const int nb = TOK_NB[tk[i]];
                uint32_t v = xs[k];
                const int flush = (uint64_t)v >= (1ull << (32 - nb));
                wbuf[wp - 1] = (uint16_t)v;
                wp -= flush;
                v = flush ? v >> 16 : v;
                xs[k] = (uint32_t)(((uint64_t)v << nb) | (uu[i] & ((1u << nb) - 1)));
            }
            for (int64_t k = SC.L - 1; k >= 0; k--) {
                int64_t i = idx[k];
                if (i < 0) continue;
                int s = tk[i], k2 = cx[i];
                uint32_t f = F->freq[k2][s], v = xs[k];
                const int flush = (uint64_t)v >= ((uint64_t)f << 21);
                wbuf[wp - 1] = (uint16_t)v;
                wp -= flush;
                v = flush ? v >> 16 : v;
                xs[k] = ((v / f) << PROB_BITS) + (v % f) + F->start[k2][s];
            }
        }
    }
    const int64_t nw = wcap - wp;
    int64_t pos = hlen + 4 + tl;
    if (pos + 4 * V3_LANES + 2 * nw > cap) { ret = CSP_E_OUTSIZE; goto done; }
    for (int k = 0; k < V3_LANES; k++) wr32(dst + pos + 4 * k, xs[k]);
    pos += 4 * V3_LANES;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst + pos, wbuf + wp, sizeof(uint16_t) * (size_t)nw); /* the words are little-endian in memory already */
#else
    for (int64_t k = 0; k < nw; k++) wr16(dst + pos + 2 * k, wbuf[wp + k]);
#endif
    pos += 2 * nw;
    wr32(dst + HEADER_SIZE + V3_DESC * c, (uint32_t)tl);
    wr32(dst + HEADER_SIZE + V3_DESC * c + 4, (uint32_t)(2 * nw));
    wr32(dst + hlen, crc32_bytes(dst, (size_t)hlen));
    ret = pos;
done:
    free(S.P); free(S.b16); free(tokA); free(uA); free(modes); free(FQ); free(M); free(wbuf);
    return ret;
}

/* ------------------------------------------------------------------ decoder */
static int v3_parse_header(const uint8_t *src, int64_t n, int64_t *h, int64_t *w, int64_t *c, int *bps, int *xform,
                           int64_t *tl, int64_t *wl) {
    int64_t hh, ww, cc, hlen; int b, xf;
    int rc = check_header(src, n, 3, V3_FIXED, V3_DESC, 1, &hh, &ww, &cc, &b, &xf, &hlen);
    if (rc) return rc;
    for (int64_t p = 0; p < cc; p++) {
        const uint8_t *d = src + HEADER_SIZE + V3_DESC * p;
        if (d[0] >= N_PRED || d[1] > 1 || d[2] > 15 || d[3] > 15) return CSP_E_HEADER;
    }
    int64_t t = rd32(src + HEADER_SIZE + V3_DESC * cc), wlen = rd32(src + HEADER_SIZE + V3_DESC * cc + 4);
    if ((wlen & 1) || hlen + 4 + t + 4 * V3_LANES + wlen != n) return CSP_E_HEADER;
    for (int k = 0; k < V3_LANES; k++)
        if (rd32(src + hlen + 4 + t + 4 * k) < RANS_L) return CSP_E_HEADER;
    *h = hh; *w = ww; *c = cc; *bps = b; *xform = xf; *tl = t; *wl = wlen;
    return CSP_OK;
}

/* Decoder state of one plane. */
typedef struct {
    int64_t h, w, L, tend;
    const int64_t *n;
    int32_t *P, *E, *M, *A, *G; /* skew buffers of this plane (row t at X + 32 t; rows down to -pad) */
    const int32_t *X0;          /* plane 0's |e| (cross-plane context) or NULL */
    int16_t *P16, *E16, *M16, *A16, *G16; /* the same as int16 (8-bit tiles on the AVX-512 path), or NULL */
    const int16_t *X016;
    uint8_t *pf; int64_t pfn; /* output bytes to prefetch for writing while decoding (last plane), or 0 */
    int bw;                   /* the AVX-512 kernels' F/BW variants (else the VBMI ones) */
    int avx2;                 /* the AVX2 kernel instead of the scalar path (CPUs without AVX-512) */
    const dtables_t *T;
    const luts_t *Lu;
    int kind, mode, ash, lsh;
    int32_t lo, hi;
    uint32_t xs[V3_LANES];
    int64_t r[V3_LANES], x[V3_LANES]; /* lane positions (v3_seek) */
    const uint8_t *wp, *wend;
    int err; /* CSP_E_DATA / CSP_E_RANGE seen */
} v3dec_t;

/* Sample (y, x) of a skew buffer X of lane count L and width w. */
static inline int64_t v3_at(int64_t L, int64_t w, int64_t y, int64_t x) {
    int64_t k = y % L, r = y / L;
    return (r * w + x + 2 * k) * V3_LANES + k;
}

static inline uint32_t v3_next_word(v3dec_t *D, uint32_t x) {
    if (x >= RANS_L) return x;
    if (D->wend - D->wp < 2) { D->err = CSP_E_DATA; return RANS_L; }
    x = (x << 16) | rd16(D->wp);
    D->wp += 2;
    return x;
}

/* Where lane k is at step t: sample index q = t - 2k, row index r = q / w, column x (kept in D->r, D->x
 * and advanced one step at a time by v3_advance; v3_seek sets them for any step). */
static void v3_seek(v3dec_t *D, int64_t t) {
    for (int64_t k = 0; k < D->L; k++) {
        int64_t q = t - 2 * k;
        if (q < 0) { D->r[k] = -1; D->x[k] = q; continue; } /* not started: x counts up to 0 */
        D->r[k] = q / D->w; D->x[k] = q - D->r[k] * D->w;
    }
}

static inline void v3_advance(v3dec_t *D) {
    for (int64_t k = 0; k < D->L; k++)
        if (++D->x[k] == D->w || D->x[k] == 0) { D->x[k] = 0; D->r[k]++; }
}

/* One step of the portable decoder: phase A (tokens) then phase B (raw bits, reconstruction) for the
 * active lanes, in lane order; then advances the lane positions. kind, mode and cross (plane 0's |e| in
 * the context) are compile-time constants at every call site (v3_steps_scalar), like version 1's. */
CSP_INLINE void v3_step_scalar(v3dec_t *D, int64_t t, const int kind, const int mode, const int cross) {
    const int64_t L = D->L, w = D->w;
    const int sel = kind >= PRED_SEL, sel3 = kind == PRED_SEL3;
    int32_t pred[V3_LANES], pm[V3_LANES], pa[V3_LANES], pg[V3_LANES];
    int tok[V3_LANES];
    int64_t pos[V3_LANES];
    for (int64_t k = 0; k < L; k++) {
        const int64_t r = D->r[k], x = D->x[k];
        pos[k] = -1;
        if (r < 0 || r >= D->n[k]) continue;
        /* the row above: lane k - 1 at the same row index, or lane L - 1 one row index up */
        const int64_t ka = k ? k - 1 : L - 1, ra = k ? r : r - 1;
        int32_t a, b = 0, c = 0, d = 0, Ea = 0, Eb = 0, Ec = 0, Ed = 0;
        int32_t Ma = 0, Mb = 0, Mc = 0, Md = 0, Aa = 0, Ab = 0, Ac = 0, Ad = 0, Ga = 0, Gb = 0, Gc = 0, Gd = 0;
        if (ra >= 0) {
            int64_t i = (ra * w + x + 2 * ka) * V3_LANES + ka;
            b = D->P[i]; Eb = D->E[i];
            if (sel) { Mb = D->M[i]; Ab = D->A[i]; }
            if (sel3) Gb = D->G[i];
            if (x > 0) {
                int64_t j = i - V3_LANES;
                c = D->P[j]; Ec = D->E[j];
                if (sel) { Mc = D->M[j]; Ac = D->A[j]; }
                if (sel3) Gc = D->G[j];
            } else { /* (y - 2, 0) */
                const int64_t kb = ka ? ka - 1 : L - 1, rb = ka ? ra : ra - 1;
                c = rb >= 0 ? D->P[(rb * w + 2 * kb) * V3_LANES + kb] : 0;
            }
            if (x + 1 < w) {
                int64_t j = i + V3_LANES;
                d = D->P[j]; Ed = D->E[j];
                if (sel) { Md = D->M[j]; Ad = D->A[j]; }
                if (sel3) Gd = D->G[j];
            } else d = b;
        }
        if (x > 0) {
            int64_t j = (t - 1) * V3_LANES + k;
            a = D->P[j]; Ea = D->E[j];
            if (sel) { Ma = D->M[j]; Aa = D->A[j]; }
            if (sel3) Ga = D->G[j];
        } else a = b;
        const int32_t lo = D->lo, hi = D->hi;
        int32_t m = predict(0, a, b, c, d, lo, hi), av = predict(1, a, b, c, d, lo, hi);
        int32_t g = clamp32(a + b - c, lo, hi), p;
        if (!sel) p = kind == 0 ? m : (kind == 1 ? av : predict(2, a, b, c, d, lo, hi));
        else {
            int32_t sm = 2 * Ma + 2 * Mb + Mc + Md, sa = 2 * Aa + 2 * Ab + Ac + Ad;
            p = sm <= sa ? m : av;
            if (sel3) {
                int32_t sg = 2 * Ga + 2 * Gb + Gc + Gd, smin = sm <= sa ? sm : sa;
                if (sg < smin) p = g;
            }
        }
        int32_t act = iabs32(a - c) + iabs32(b - c) + iabs32(b - d) + Eb + Ec + Ed + 2 * Ea;
        if (cross) act += 2 * D->X0[t * V3_LANES + k];
        act >>= 1 + D->ash;
        if (act > 255) act = 255;
        int ctx;
        if (mode == 0) ctx = D->Lu->act0[act];
        else { int32_t lv = p < 0 ? 0 : (p >> D->lsh); if (lv > 31) lv = 31; ctx = D->Lu->act1[act] + D->Lu->lvl[lv]; }
        uint32_t xs = D->xs[k], slot = xs & (TOTAL - 1);
        uint32_t ent = D->T->ent[ctx][slot];
        tok[k] = (int)(ent & 0x7F);
        xs = (ent >> 19) * (xs >> PROB_BITS) + ((ent >> 7) & 0xFFF);
        D->xs[k] = v3_next_word(D, xs);
        pred[k] = p; pm[k] = m; pa[k] = av; pg[k] = g;
        pos[k] = t * V3_LANES + k;
    }
    for (int64_t k = 0; k < L; k++) {
        if (pos[k] < 0) continue;
        int s = tok[k], nb = TOK_NB[s];
        uint32_t u = tok_base(s);
        if (nb) {
            uint32_t xs = D->xs[k];
            u |= xs & ((1u << nb) - 1);
            D->xs[k] = v3_next_word(D, xs >> nb);
        }
        int32_t e = (int32_t)(u >> 1) ^ -(int32_t)(u & 1);
        int32_t v0 = pred[k] + e, v = clamp32(v0, D->lo, D->hi);
        if (v != v0) D->err = CSP_E_RANGE;
        int64_t j = pos[k];
        D->P[j] = v; D->E[j] = iabs32(e);
        if (sel) { D->M[j] = iabs32(v - pm[k]); D->A[j] = iabs32(v - pa[k]); }
        if (sel3) D->G[j] = iabs32(v - pg[k]);
    }
    v3_advance(D);
}

#define V3_S(k, m, x) case (k) * 4 + (m) * 2 + (x): for (; t < t1; t++) v3_step_scalar(D, t, k, m, x); break;

/* Steps t0 .. t1 - 1 with the portable decoder, specialised per predictor, context mode and cross. */
static void v3_steps_scalar(v3dec_t *D, int64_t t0, int64_t t1) {
    int64_t t = t0;
    switch (D->kind * 4 + D->mode * 2 + (D->X0 != NULL)) {
        CSP_FOR_VARIANTS(V3_S)
        default: D->err = CSP_E_HEADER;
    }
}

#if CSP_X86_AVX512
#include "cspcodec3_avx512.c"
#define V3W_VBMI 1
#define V3W(name) v3w_##name
#define V3W_TARGET CSP_AVX512_TARGET
#include "cspcodec3_avx512_32.c"
#undef V3W_VBMI
#undef V3W
#undef V3W_TARGET
#define V3W_VBMI 0
#define V3W(name) v3w_bw_##name
#define V3W_TARGET CSP_AVX512BW_TARGET
#include "cspcodec3_avx512_32.c"
#undef V3W_VBMI
#undef V3W
#undef V3W_TARGET
#define V3H_VBMI 1
#define V3H(name) v3h_##name
#define V3H_TARGET CSP_AVX512_TARGET
#include "cspcodec3_avx512_16.c"
#undef V3H_VBMI
#undef V3H
#undef V3H_TARGET
#define V3H_VBMI 0
#define V3H(name) v3h_bw_##name
#define V3H_TARGET CSP_AVX512BW_TARGET
#include "cspcodec3_avx512_16.c"
#undef V3H_VBMI
#undef V3H
#undef V3H_TARGET
#include "cspcodec3_avx2.c"
#endif

/* Decode one plane into D's skew buffers from step 0 to the end. */
static int v3_decode_plane(v3dec_t *D, int simd) {
    int64_t t = 0;
    v3_seek(D, 0);
#if CSP_X86_AVX512
    if (D->P16) { /* 8-bit planes of 32 lanes: the whole plane in one kernel call */
        t = D->bw ? v3h_bw_run(D) : v3h_run(D);
        return D->err ? D->err : (t == D->tend ? CSP_OK : CSP_E_DATA);
    }
    if (D->avx2 && D->L == V3_LANES) {
        t = v3a_run(D);
        if (D->err) return D->err;
        v3_seek(D, t);
    } else if (simd && D->L == V3_LANES) {
        t = (D->bw ? v3w_bw_run : v3w_run)(D, 0, D->tend); /* idle lanes (ramp-up, ramp-down) are masked */
        if (D->err) return D->err;
        v3_seek(D, t);
    }
#else
    (void)simd;
#endif
    v3_steps_scalar(D, t, D->tend);
    return D->err;
}

/* Write a three-channel tile from the skew buffers of its planes (P0, P0 + SK, P0 + 2 SK), with the
 * inverse RCT when xform > 0 (checking the result range). */
static int v3_output3(const int32_t *P0, int64_t SK, int64_t L, int64_t h, int64_t w, int xform, int bps, void *dst) {
    const int32_t maxv = bps == 1 ? 255 : 65535;
    const int32_t *P1 = P0 + SK, *P2 = P0 + 2 * SK;
    for (int64_t y = 0; y < h; y++) {
        const int64_t i0 = v3_at(L, w, y, 0);
        for (int64_t x = 0; x < w; x++) {
            int64_t i = i0 + x * V3_LANES;
            int32_t r = P0[i], g = P1[i], b = P2[i];
            if (xform) {
                inverse_rct(xform, r, g, b, &r, &g, &b);
                if ((uint32_t)r > (uint32_t)maxv || (uint32_t)g > (uint32_t)maxv || (uint32_t)b > (uint32_t)maxv) return CSP_E_RANGE;
            }
            if (bps == 1) { uint8_t *o = (uint8_t *)dst + (y * w + x) * 3; o[0] = (uint8_t)r; o[1] = (uint8_t)g; o[2] = (uint8_t)b; }
            else { uint16_t *o = (uint16_t *)dst + (y * w + x) * 3; o[0] = (uint16_t)r; o[1] = (uint16_t)g; o[2] = (uint16_t)b; }
        }
    }
    return CSP_OK;
}

int csp_simd_available(void) { return csp_cpu_avx512(); }
int csp_simd_bw_available(void) { return csp_cpu_avx512bw(); }
int csp_simd_avx2_available(void) {
#if CSP_X86_AVX512
    return csp_cpu_avx2();
#else
    return 0;
#endif
}

static int csp_decode3(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes, int flags) {
    int64_t h, w, c, tl, wl; int bps, xform;
    int rc = v3_parse_header(src, n, &h, &w, &c, &bps, &xform, &tl, &wl);
    if (rc) return rc;
    if (!dst || dst_bytes != h * w * c * bps) return CSP_E_OUTSIZE;
    const int32_t maxv = bps == 1 ? 255 : 65535;
    v3sched_t SC; v3_schedule(h, w, &SC);
    const int64_t pad = 4;                                 /* rows before step 0 (steps -3..-1 are read) */
    const int64_t rows = pad + SC.tend + 20, SK = rows * V3_LANES; /* + 16: the output pass reads whole blocks */
    const int nP = c == 3 ? 3 : 1; /* three-channel tiles are written together at the end */
    /* 8-bit tiles of 32 lanes on the AVX-512 path: int16 skew buffers (cspcodec3_avx512_16.c) */
    /* simd: the AVX-512 kernels for VBMI/VBMI2 CPUs; bw: else their variants for AVX-512 F/BW/VL/DQ/CD
     * (also where CSP_NO_VBMI asks for them) */
    const int simd = !(flags & (CSP_NO_SIMD | CSP_NO_VBMI | CSP_NO_AVX512)) && csp_cpu_avx512();
    const int bw = !simd && !(flags & (CSP_NO_SIMD | CSP_NO_AVX512)) && csp_cpu_avx512bw();
    int avx2 = 0; /* else the AVX2 kernel (cspcodec3_avx2.c) */
#if CSP_X86_AVX512
    avx2 = !simd && !bw && !(flags & CSP_NO_SIMD) && csp_cpu_avx2();
#endif
    const int h16 = CSP_X86_AVX512 && (simd || bw) && bps == 1 && SC.L == V3_LANES;
    const size_t esz = h16 ? sizeof(int16_t) : sizeof(int32_t);
    char *buf = (char *)csp_alloc64(esz * (size_t)(SK * (nP + 5))); /* rows of 64 or 128 bytes */
    dtables_t *T = (dtables_t *)malloc(sizeof(dtables_t));
    if (!buf || !T) { rc = CSP_E_NOMEM; goto done; }
    luts_t Lu; make_luts(&Lu);
    const int64_t hlen = V3_FIXED + V3_DESC * c;
    const uint8_t *tab = src + hlen + 4, *lanes = tab + tl;
    int64_t toff = 0;
    v3dec_t D;
    memset(&D, 0, sizeof D);
    D.h = h; D.w = w; D.L = SC.L; D.tend = SC.tend; D.n = SC.n; D.T = T; D.Lu = &Lu; D.bw = bw; D.avx2 = avx2;
    for (int k = 0; k < V3_LANES; k++) D.xs[k] = rd32(lanes + 4 * k);
    D.wp = lanes + 4 * V3_LANES; D.wend = D.wp + wl;
    /* the arrays of a plane: element offsets from buf (rows down to -pad) */
    const int64_t o0 = pad * V3_LANES, oE0 = (nP + 4) * SK + o0;
    for (int64_t pl = 0; pl < c; pl++) {
        const uint8_t *d = src + HEADER_SIZE + V3_DESC * pl;
        D.kind = d[0]; D.mode = d[1]; D.ash = d[2]; D.lsh = d[3];
        bitr_t r; br_init(&r, tab + toff, tl - toff);
        fill_fn fill = fill_entries;
#if CSP_X86_AVX512
        if (simd) fill = v3h_fill;
        else if (bw) fill = v3h_bw_fill;
#endif
        if (read_tables_from(&r, N_CTX[D.mode], T, fill)) { rc = CSP_E_TABLE; goto done; }
        toff += (r.bits_read + 7) >> 3;
        range_t rg = plane_range(xform, (int)pl, maxv);
        D.lo = rg.lo; D.hi = rg.hi;
        const int64_t off[6] = {(nP == 3 ? pl : 0) * SK + o0, (xform && pl == 0) ? oE0 : nP * SK + o0,
                                (nP + 1) * SK + o0, (nP + 2) * SK + o0, (nP + 3) * SK + o0, (xform && pl > 0) ? oE0 : -1};
        if (h16) {
            int16_t *b16 = (int16_t *)buf;
            D.P16 = b16 + off[0]; D.E16 = b16 + off[1]; D.M16 = b16 + off[2]; D.A16 = b16 + off[3]; D.G16 = b16 + off[4];
            D.X016 = off[5] >= 0 ? b16 + off[5] : NULL;
        } else {
            int32_t *b32 = (int32_t *)buf;
            D.P = b32 + off[0]; D.E = b32 + off[1]; D.M = b32 + off[2]; D.A = b32 + off[3]; D.G = b32 + off[4];
            D.X0 = off[5] >= 0 ? b32 + off[5] : NULL;
            int32_t *arrs[5] = {D.P, D.E, D.M, D.A, D.G};
            /* the 32-bit AVX-512 path starts from steps -3..-1 (zeros); nothing else reads before it writes */
            for (int i = 0; i < 5; i++) memset(arrs[i] - 3 * V3_LANES, 0, sizeof(int32_t) * 3 * V3_LANES);
        }
        /* the last plane of an 8-bit three-channel tile: its decoding is latency-bound, so bring the
         * output lines into the cache meanwhile (they are usually cold: a batch buffer) */
        if (h16 && nP == 3 && pl == 2) { D.pf = (uint8_t *)dst; D.pfn = h * w * 3; }
        rc = v3_decode_plane(&D, simd || bw);
        if (rc) goto done;
        if (nP == 1) { /* store channel pl */
            for (int64_t y = 0; y < h; y++) {
                const int64_t i0 = v3_at(SC.L, w, y, 0);
                if (h16) { const int16_t *row = D.P16 + i0; uint8_t *o = (uint8_t *)dst + y * w * c + pl; for (int64_t x = 0; x < w; x++) o[x * c] = (uint8_t)row[x * V3_LANES]; }
                else if (bps == 1) { const int32_t *row = D.P + i0; uint8_t *o = (uint8_t *)dst + y * w * c + pl; for (int64_t x = 0; x < w; x++) o[x * c] = (uint8_t)row[x * V3_LANES]; }
                else { const int32_t *row = D.P + i0; uint16_t *o = (uint16_t *)dst + y * w * c + pl; for (int64_t x = 0; x < w; x++) o[x * c] = (uint16_t)row[x * V3_LANES]; }
            }
        }
    }
    if (toff != tl) { rc = CSP_E_TABLE; goto done; }
    for (int k = 0; k < V3_LANES; k++) if (D.xs[k] != RANS_L) { rc = CSP_E_DATA; goto done; }
    if (D.wp != D.wend) { rc = CSP_E_DATA; goto done; }
    if (nP == 3) {
#if CSP_X86_AVX512
        if (h16) {
            rc = (bw ? v3h_bw_output3_u8 : v3h_output3_u8)((const int16_t *)buf + o0, SK, SC.n, SC.tend, w, xform, (uint8_t *)dst);
            goto done;
        }
        if (avx2 && bps == 1 && SC.L == V3_LANES) {
            rc = v3a_output3_u8((const int32_t *)buf + o0, SK, SC.n, SC.tend, w, xform, (uint8_t *)dst);
            goto done;
        }
#endif
        rc = v3_output3((const int32_t *)buf + o0, SK, SC.L, h, w, xform, bps, dst);
        goto done;
    }
    rc = CSP_OK;
done:
    csp_free64(buf); free(T);
    return rc;
}
