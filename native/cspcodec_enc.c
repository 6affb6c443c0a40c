/* CSP lossless codec: the model analysis shared by bitstreams 1 and 3 (predictor choice, residuals,
 * tokens, contexts, tables) and the version-1 encoder. Included by cspcodec.c (shares its helpers). */

/* ------------------------------------------------------------------ encoder */
/* The 20-byte stream header shared by bitstreams 1-3 (§1): magic, version, sample bytes, transform, H, W, C. */
static void write_header(uint8_t *dst, int version, int bps, int xform, int64_t h, int64_t w, int64_t c) {
    memcpy(dst, MAGIC, 4);
    dst[4] = (uint8_t)version; dst[5] = (uint8_t)bps; dst[6] = (uint8_t)xform; dst[7] = 0;
    wr32(dst + 8, (uint32_t)h); wr32(dst + 12, (uint32_t)w); wr16(dst + 16, (uint32_t)c); wr16(dst + 18, 0);
}

typedef struct {
    int32_t *P;        /* padded plane (h+1) x (w+2) */
    int32_t *E, *E0;   /* padded |e| of the current plane and of plane 0 (cross-plane context) */
    int32_t *EM, *EA, *EG;  /* padded |x - MED|, |x - AVG4|, |x - GRAD| (for PRED_SEL, PRED_SEL3) */
    uint8_t *tok, *ctx0, *ctx1;
    uint8_t *sel;      /* vector path: per sample of the plane, the SEL (bit 0) and SEL3 (bit 1) choices */
    uint32_t *u;
    uint16_t *words;   /* rANS words, filled backwards */
    uint16_t *jh16;    /* vector path: the joint histogram's four 16-bit copies (4 x N_JOINT x NTOK) */
    uint32_t *jtot;    /* and its 32-bit totals (N_JOINT x NTOK) */
    int simd;          /* the AVX-512 row kernels of the model analysis may be used */
    int vec;           /* they are used (simd, and rows shorter than 2^16) */
    int p16;           /* 8-bit tile on the vector path: the model runs on the int16 planes below */
    void *b16;         /* their block (freed with P) */
    int16_t *P16, *E16, *E016, *R16[3]; /* padded planes and error-row rings, row stride S16 (P16: the */
    int16_t *P16s[3];                   /* current plane, one of P16s; three for three-channel tiles) */
    uint16_t *hidx;    /* one row of joint histogram indices */
    int64_t S16;
#if CSP_X86_AVX512
    enc16_tables_t t16; /* the 16-bit kernels' tables */
#endif
} enc_scratch_t;

static inline int32_t sel_pred(const int32_t *pem, const int32_t *cem, const int32_t *pea, const int32_t *cea,
                               int64_t x, int32_t pm, int32_t pa) {
    int32_t sm = 2 * cem[x] + 2 * pem[x + 1] + pem[x] + pem[x + 2];
    int32_t sa = 2 * cea[x] + 2 * pea[x + 1] + pea[x] + pea[x + 2];
    return sm <= sa ? pm : pa;
}

/* PRED_SEL3: MED, AVG4 or GRAD, whichever has the smallest neighbour error score (first on ties). */
static inline int32_t sel3_pred(const int32_t *pem, const int32_t *cem, const int32_t *pea, const int32_t *cea,
                                const int32_t *peg, const int32_t *ceg, int64_t x, int32_t pm, int32_t pa,
                                int32_t pg) {
    int32_t sm = 2 * cem[x] + 2 * pem[x + 1] + pem[x] + pem[x + 2];
    int32_t sa = 2 * cea[x] + 2 * pea[x + 1] + pea[x] + pea[x + 2];
    int32_t sg = 2 * ceg[x] + 2 * peg[x + 1] + peg[x] + peg[x + 2];
    int32_t p = sm <= sa ? pm : pa, smin = sm <= sa ? sm : sa;
    return sg < smin ? pg : p;
}

static inline int32_t grad_pred(int32_t a, int32_t b, int32_t c, int32_t lo, int32_t hi) {
    return clamp32(a + b - c, lo, hi);
}

/* Absolute-error sums and bit-length costs of every predictor over the whole plane, in one pass; also
 * fills EM/EA/EG (|x - MED|, |x - AVG4|, |x - GRAD|). */
static void predictor_errors(enc_scratch_t *S, int64_t h, int64_t w, range_t rg, int64_t sads[N_PRED],
                             int64_t costs[N_PRED], int vec) {
    const int64_t W2 = w + 2;
    memset(S->EM, 0, sizeof(int32_t) * (size_t)W2);
    memset(S->EA, 0, sizeof(int32_t) * (size_t)W2);
    memset(S->EG, 0, sizeof(int32_t) * (size_t)W2);
    int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0;
    for (int k = 0; k < N_PRED; k++) sads[k] = costs[k] = 0;
    for (int64_t y = 0; y < h; y++) {
        const int32_t *pr = S->P + y * W2, *cr = pr + W2;
#if CSP_X86_AVX512
        if (S->p16) { /* as below, in 16-bit lanes (the 16-bit planes and rings, stride S16) */
            const int64_t RS = S->S16, po = (y & 1) * RS, co = ((y + 1) & 1) * RS;
            int16_t *const *R = S->R16;
            if (y == 0) for (int k = 0; k < 3; k++) memset(R[k], 0, sizeof(int16_t) * (size_t)(2 * RS));
            int16_t *em = R[0] + co, *ea = R[1] + co, *eg = R[2] + co;
            em[0] = em[w + 1] = ea[0] = ea[w + 1] = eg[0] = eg[w + 1] = 0;
            enc16_errors_row(S->P16 + y * RS, S->P16 + (y + 1) * RS, R[0] + po, R[1] + po, R[2] + po, em, ea, eg, w, rg,
                             &S->t16, costs, S->sel + y * w);
            continue;
        }
        if (vec) { /* EM/EA/EG rows alternate between rows 0 and 1; the model pass reads only S->sel */
            const int64_t po = (y & 1) * W2, co = ((y + 1) & 1) * W2;
            int32_t *em = S->EM + co, *ea = S->EA + co, *eg = S->EG + co;
            em[0] = em[w + 1] = ea[0] = ea[w + 1] = eg[0] = eg[w + 1] = 0;
            enc_errors_row(pr, cr, S->EM + po, S->EA + po, S->EG + po, em, ea, eg, w, rg, sads, costs, S->sel + y * w);
            continue;
        }
#else
        (void)vec;
#endif
        const int32_t *pem = S->EM + y * W2, *pea = S->EA + y * W2, *peg = S->EG + y * W2;
        int32_t *em = S->EM + (y + 1) * W2, *ea = S->EA + (y + 1) * W2, *eg = S->EG + (y + 1) * W2;
        em[0] = em[w + 1] = ea[0] = ea[w + 1] = eg[0] = eg[w + 1] = 0;
        for (int64_t x = 0; x < w; x++) {
            int32_t a = cr[x], b = pr[x + 1], c = pr[x], d = pr[x + 2], v = cr[x + 1];
            int32_t pm = predict(0, a, b, c, d, rg.lo, rg.hi), pa = predict(1, a, b, c, d, rg.lo, rg.hi);
            int32_t pg = grad_pred(a, b, c, rg.lo, rg.hi);
            int32_t e3 = iabs32(v - sel_pred(pem, em, pea, ea, x, pm, pa)); /* uses em/ea up to x - 1 */
            int32_t e4 = iabs32(v - sel3_pred(pem, em, pea, ea, peg, eg, x, pm, pa, pg));
            int32_t e0 = iabs32(v - pm), e1 = iabs32(v - pa), e2 = iabs32(v - predict(2, a, b, c, d, rg.lo, rg.hi));
            em[x + 1] = e0; ea[x + 1] = e1; eg[x + 1] = iabs32(v - pg);
            s0 += e0; s1 += e1; s2 += e2; s3 += e3; s4 += e4;
            c0 += bitlen32(e0); c1 += bitlen32(e1); c2 += bitlen32(e2); c3 += bitlen32(e3); c4 += bitlen32(e4);
        }
    }
    sads[0] += s0; sads[1] += s1; sads[2] += s2; sads[3] += s3; sads[4] += s4;
    costs[0] += c0; costs[1] += c1; costs[2] += c2; costs[3] += c3; costs[4] += c4;
}

static int64_t hist_cost(const uint32_t *hist, int nctx) {
    int64_t cost = 0;
    for (int k = 0; k < nctx; k++) {
        const uint32_t *row = hist + k * NTOK;
        uint64_t n = 0; int last = -1;
        for (int s = 0; s < NTOK; s++) if (row[s]) { n += row[s]; last = s; }
        if (!n) continue;
        int64_t lg = mitchell_log2(n);
        for (int s = 0; s <= last; s++) if (row[s]) cost += (int64_t)row[s] * (lg - mitchell_log2(row[s]));
        cost += 256 * (8 + 3 * (int64_t)(last + 1));
    }
    return cost;
}

/* Encode one plane (already in S->P); |e| goes to Eout, Ecross (or NULL) is the cross-plane |e|.
 * Writes the descriptor to desc and the body to out; returns the body size. */
/* Write one context's frequency table (bitstream versions 1 and 2; read back by read_freqs) from its
 * histogram row; freq/start receive the normalised frequencies the coder uses (all zero for an empty
 * context, which is written as a single 0 bit). Returns the number of symbols (0 when empty). */
static int write_freqs(bitw_t *w, const uint32_t *row, uint32_t freq[NTOK], uint32_t start[NTOK]) {
    int last = -1;
    for (int s = 0; s < NTOK; s++) if (row[s]) last = s;
    memset(freq, 0, sizeof(uint32_t) * NTOK);
    memset(start, 0, sizeof(uint32_t) * NTOK);
    if (last < 0) { bw_put(w, 0, 1); return 0; }
    int nsym = last + 1;
    bw_put(w, 1, 1);
    bw_put(w, (uint64_t)(nsym - 1), 7);
    uint64_t wts[NTOK]; uint32_t f[NTOK];
    for (int s = 0; s < nsym; s++) wts[s] = row[s];
    normalize(wts, nsym, f);
    int prev = 0;
    for (int s = 0; s < nsym; s++) {
        int len = bitlen64(f[s]);
        if (len == prev) bw_put(w, 0, 1);
        else if (len == prev - 1) bw_put(w, 1, 2);
        else if (len == prev + 1) bw_put(w, 3, 3);
        else { bw_put(w, 7, 3); bw_put(w, (uint64_t)len, 4); }
        uint32_t mant = len >= 2 ? (f[s] >> (len - 2)) & 1 : 0;
        bw_put(w, mant, len >= 2 ? 1 : 0);
        wts[s] = dequant(len, mant);
        prev = len;
    }
    normalize(wts, nsym, freq);
    uint32_t acc = 0;
    for (int s = 0; s < NTOK; s++) { start[s] = acc; acc += freq[s]; }
    return nsym;
}

/* The model of one plane (bitstream versions 1 and 3): predictor, context mode and shifts, the
 * normalised frequencies of the chosen mode's contexts (whose table bit stream goes to *bw), and per
 * sample (raster order) the token, both contexts and the residual code u in S. |e| goes to Eout; Ecross
 * (or NULL) is the cross-plane |e|. */
typedef struct {
    int kind, mode, ashift, lshift;
    uint32_t freq[MAX_CTX][NTOK], start[MAX_CTX][NTOK];
} plane_model_t;

/* Contexts of the joint classes j = mode-0 context * NLVL + level class: map0[j] in mode 0, map1[j] in
 * mode 1 (the mode-1 activity classes are the first five mode-0 contexts, the rest merged into the last). */
static void joint_ctx(const luts_t *L, uint8_t map0[N_JOINT], uint8_t map1[N_JOINT]) {
    for (int j = 0; j < N_JOINT; j++) {
        int a0 = j / NLVL, a1 = 0;
        /* act1 is constant over each mode-0 context (its thresholds are a subset of act0's) */
        for (int act = 0; act < 256; act++) if (L->act0[act] == a0) { a1 = L->act1[act]; break; }
        map0[j] = (uint8_t)a0;
        map1[j] = (uint8_t)(a1 + j % NLVL);
    }
}

/* Token of a residual code u (§4). */
static inline int u_token(uint32_t u) {
    if (u < 16) return (int)u;
    const int n = bitlen64(u) - 1;
    return 16 + (n - 4) * 4 + (int)((u >> (n - 2)) & 3);
}

/* The vector path's histogram of (joint class, token): four 16-bit copies (one per column mod 4, which cuts
 * the chains of dependent increments and keeps them in L1), flushed into 32-bit totals before any count
 * could overflow. Tokens of a plane with range [lo, hi] are at most u_token(2 (hi - lo)), which sets the
 * row length nt. */
typedef struct { uint16_t *c16; uint32_t *tot; int nt; int64_t room, per_row; } jhist_t;

static void jh_init(jhist_t *J, range_t rg, int64_t w, uint16_t *c16, uint32_t *tot) {
    J->nt = u_token(2u * (uint32_t)(rg.hi - rg.lo)) + 1;
    J->per_row = w / 4 + 4;
    J->room = 65535;
    J->c16 = c16; J->tot = tot;
    memset(c16, 0, sizeof(uint16_t) * (size_t)(4 * N_JOINT * J->nt));
    memset(tot, 0, sizeof(uint32_t) * (size_t)(N_JOINT * J->nt));
}

static void jh_flush(jhist_t *J) {
    const int64_t n = N_JOINT * J->nt;
    for (int64_t k = 0; k < n; k++) J->tot[k] += (uint32_t)J->c16[k] + J->c16[n + k] + J->c16[2 * n + k] + J->c16[3 * n + k];
    memset(J->c16, 0, sizeof(uint16_t) * (size_t)(4 * n));
    J->room = 65535;
}

static inline void jh_row(jhist_t *J, const uint8_t *jc, const uint8_t *tk, int64_t w) {
    if (J->room < J->per_row) jh_flush(J);
    J->room -= J->per_row;
    const int nt = J->nt;
    uint16_t *ha = J->c16, *hb = ha + N_JOINT * nt, *hc = hb + N_JOINT * nt, *hd = hc + N_JOINT * nt;
    int64_t x = 0;
    for (; x + 3 < w; x += 4) {
        ha[jc[x] * nt + tk[x]]++; hb[jc[x + 1] * nt + tk[x + 1]]++;
        hc[jc[x + 2] * nt + tk[x + 2]]++; hd[jc[x + 3] * nt + tk[x + 3]]++;
    }
    for (; x < w; x++) ha[jc[x] * nt + tk[x]]++;
}

/* jh_row with the bins' indices (joint class * nt + token) given. */
static inline void jh_row_idx(jhist_t *J, const uint16_t *ix, int64_t w) {
    if (J->room < J->per_row) jh_flush(J);
    J->room -= J->per_row;
    const int64_t n = N_JOINT * J->nt;
    uint16_t *ha = J->c16, *hb = ha + n, *hc = hb + n, *hd = hc + n;
    int64_t x = 0;
    for (; x + 3 < w; x += 4) { ha[ix[x]]++; hb[ix[x + 1]]++; hc[ix[x + 2]]++; hd[ix[x + 3]]++; }
    for (; x < w; x++) ha[ix[x]]++;
}

/* Both modes' histograms (NTOK per context) from the joint one. */
static void jh_finish(jhist_t *J, const uint8_t map0[N_JOINT], const uint8_t map1[N_JOINT], uint32_t *hist0,
                      uint32_t *hist1) {
    jh_flush(J);
    for (int j = 0; j < N_JOINT; j++)
        for (int s = 0; s < J->nt; s++) {
            const uint32_t n = J->tot[j * J->nt + s];
            hist0[map0[j] * NTOK + s] += n;
            hist1[map1[j] * NTOK + s] += n;
        }
}

static void analyze_plane(enc_scratch_t *S, const luts_t *L, int64_t h, int64_t w, range_t rg, int is16,
                          int32_t *Eout, const int32_t *Ecross, plane_model_t *M, bitw_t *bw) {
    const int64_t W2 = w + 2;
    /* the vector path counts (joint class, token) once per sample; both modes' histograms follow */
    const int vec = S->vec;
    jhist_t J;
    if (vec) jh_init(&J, rg, w, S->jh16, S->jtot);
    int64_t sads[N_PRED], costs[N_PRED];
    predictor_errors(S, h, w, rg, sads, costs, vec);
    int kind = 0;
    for (int k = 1; k < N_PRED; k++) if (costs[k] < costs[kind]) kind = k;
    int ashift = 0, lshift = 0;
    if (is16) {
        int64_t cnt, asum = plane_abs_sum(S->P, h, w, &cnt);
        ashift = bitlen64((uint64_t)(sads[kind] / cnt)) - 3; if (ashift < 0) ashift = 0;
        lshift = bitlen64((uint64_t)(asum / cnt)) - 5; if (lshift < 0) lshift = 0;
    }
    uint32_t hist0[16 * NTOK], hist1[30 * NTOK];
    memset(hist0, 0, sizeof hist0); memset(hist1, 0, sizeof hist1);
    memset(Eout, 0, sizeof(int32_t) * (size_t)W2);
    int64_t i = 0;
    for (int64_t y = 0; y < h; y++) {
        const int32_t *pr = S->P + y * W2, *cr = pr + W2;
        const int32_t *pe = Eout + y * W2;
        int32_t *ce = Eout + (y + 1) * W2;
        const int32_t *xe = Ecross ? Ecross + (y + 1) * W2 : NULL;
#if CSP_X86_AVX512
        if (S->p16) { /* the int16 planes (stride S16); is16 = 0, so ashift = lshift = 0 */
            const int64_t RS = S->S16;
            int16_t *E16 = Eout == S->E0 ? S->E016 : S->E16;
            if (y == 0) memset(E16, 0, sizeof(int16_t) * (size_t)RS);
            int16_t *ce16 = E16 + (y + 1) * RS;
            ce16[0] = ce16[w + 1] = 0;
            enc16_model_row(kind, S->P16 + y * RS, S->P16 + (y + 1) * RS, E16 + y * RS, ce16,
                            Ecross ? S->E016 + (y + 1) * RS : NULL, S->sel + i, w, rg, &S->t16, J.nt, S->tok + i,
                            S->ctx0 + i, S->u + i, S->hidx);
            jh_row_idx(&J, S->hidx, w);
            i += w;
            continue;
        }
#endif
        ce[0] = ce[w + 1] = 0;
#if CSP_X86_AVX512
        if (vec) { /* the row's SEL/SEL3 choices are in S->sel already (predictor_errors) */
            enc_model_row(kind, pr, cr, pe, ce, xe, S->sel + i, w, rg, ashift, lshift, L, S->tok + i, S->ctx0 + i, S->u + i);
            jh_row(&J, S->ctx0 + i, S->tok + i, w);
            i += w;
            continue;
        }
#endif
        const int32_t *pem = S->EM + y * W2, *pea = S->EA + y * W2, *peg = S->EG + y * W2;
        int32_t *cem = S->EM + (y + 1) * W2, *cea = S->EA + (y + 1) * W2, *ceg = S->EG + (y + 1) * W2;
        cem[0] = cem[w + 1] = cea[0] = cea[w + 1] = ceg[0] = ceg[w + 1] = 0;
        for (int64_t x = 0; x < w; x++, i++) {
            int32_t a = cr[x], b = pr[x + 1], c = pr[x], d = pr[x + 2];
            int32_t p;
            if (kind == PRED_SEL) { /* MED/AVG4 errors of this row are computed as we go (like the decoder) */
                int32_t pm = predict(0, a, b, c, d, rg.lo, rg.hi), pa = predict(1, a, b, c, d, rg.lo, rg.hi);
                p = sel_pred(pem, cem, pea, cea, x, pm, pa);
                cem[x + 1] = iabs32(cr[x + 1] - pm);
                cea[x + 1] = iabs32(cr[x + 1] - pa);
            } else if (kind == PRED_SEL3) {
                int32_t pm = predict(0, a, b, c, d, rg.lo, rg.hi), pa = predict(1, a, b, c, d, rg.lo, rg.hi);
                int32_t pg = grad_pred(a, b, c, rg.lo, rg.hi);
                p = sel3_pred(pem, cem, pea, cea, peg, ceg, x, pm, pa, pg);
                cem[x + 1] = iabs32(cr[x + 1] - pm);
                cea[x + 1] = iabs32(cr[x + 1] - pa);
                ceg[x + 1] = iabs32(cr[x + 1] - pg);
            } else p = predict(kind, a, b, c, d, rg.lo, rg.hi);
            int32_t e = cr[x + 1] - p;
            int32_t ae = iabs32(e);
            ce[x + 1] = ae;
            uint32_t u = e >= 0 ? 2u * (uint32_t)e : 2u * (uint32_t)(-e) - 1u;
            const int t = u_token(u);
            int32_t act = iabs32(a - c) + iabs32(b - c) + iabs32(b - d) + pe[x + 1] + pe[x] + pe[x + 2] + 2 * ce[x];
            if (xe) act += 2 * xe[x + 1];
            act >>= 1 + ashift;
            if (act > 255) act = 255;
            int32_t lv = p < 0 ? 0 : (p >> lshift);
            if (lv > 31) lv = 31;
            int k0 = L->act0[act], k1 = L->act1[act] + L->lvl[lv];
            S->tok[i] = (uint8_t)t; S->ctx0[i] = (uint8_t)k0; S->ctx1[i] = (uint8_t)k1; S->u[i] = u;
            hist0[k0 * NTOK + t]++; hist1[k1 * NTOK + t]++;
        }
    }
    uint8_t map0[N_JOINT], map1[N_JOINT];
    if (vec) {
        joint_ctx(L, map0, map1);
        jh_finish(&J, map0, map1, hist0, hist1);
    }
    int mode = hist_cost(hist1, 30) < hist_cost(hist0, 16) ? 1 : 0;
#if CSP_X86_AVX512
    if (vec) enc_map_joint(S->ctx0, mode ? map1 : map0, mode ? S->ctx1 : S->ctx0, h * w); /* joint -> context */
#endif
    const uint32_t *hist = mode ? hist1 : hist0;
    int nctx = N_CTX[mode];
    memset(M->freq, 0, sizeof M->freq);
    memset(M->start, 0, sizeof M->start);
    for (int k = 0; k < nctx; k++) write_freqs(bw, hist + k * NTOK, M->freq[k], M->start[k]);
    bw_finish(bw);
    M->kind = kind; M->mode = mode; M->ashift = ashift; M->lshift = lshift;
}

/* Encode one plane (already in S->P) in bitstream version 1; |e| goes to Eout, Ecross (or NULL) is the
 * cross-plane |e|. Writes the descriptor to desc and the body to out; returns the body size. */
static int64_t encode_plane(enc_scratch_t *S, const luts_t *L, int64_t h, int64_t w, range_t rg, int is16,
                            int32_t *Eout, const int32_t *Ecross, uint8_t *desc, uint8_t *out, int64_t cap) {
    plane_model_t M; /* ~20 KB */
    bitw_t bw = {out, 0, cap, 0, 0, 0};
    analyze_plane(S, L, h, w, rg, is16, Eout, Ecross, &M, &bw);
    if (bw.overflow) return CSP_E_OUTSIZE;
    int64_t tl = bw.pos;
    const int kind = M.kind, mode = M.mode, ashift = M.ashift, lshift = M.lshift;
    const uint8_t *ctx = mode ? S->ctx1 : S->ctx0;
    uint32_t (*freq)[NTOK] = M.freq, (*start)[NTOK] = M.start;
    /* rANS, backwards. Stream j codes rows y % 4 == j; its words fill region j of the scratch buffer
     * backwards. The four streams are independent, so the loop interleaves them (one row group at a
     * time, right to left) for instruction-level parallelism. */
    int64_t wbase[N_STREAMS], wp[N_STREAMS];
    uint32_t st[N_STREAMS];
    {
        int64_t acc = 0;
        for (int j = 0; j < N_STREAMS; j++) {
            int64_t rows = h > j ? (h - j + N_STREAMS - 1) / N_STREAMS : 0;
            acc += rows * w + 2;
            wbase[j] = acc; wp[j] = acc; st[j] = RANS_L;
        }
    }
    for (int64_t y0 = ((h - 1) / N_STREAMS) * N_STREAMS; y0 >= 0; y0 -= N_STREAMS) {
        int nr = h - y0 < N_STREAMS ? (int)(h - y0) : N_STREAMS;
        for (int64_t x = w - 1; x >= 0; x--) {
            for (int j = 0; j < nr; j++) {
                int64_t k = (y0 + j) * w + x;
                int cx = ctx[k], s = S->tok[k];
                uint32_t f = freq[cx][s], xs = st[j];
                uint64_t x_max = (uint64_t)((RANS_L >> PROB_BITS) << 16) * f;
                if ((uint64_t)xs >= x_max) { S->words[--wp[j]] = (uint16_t)xs; xs >>= 16; }
                st[j] = ((xs / f) << PROB_BITS) + (xs % f) + start[cx][s];
            }
        }
    }
    int64_t pos = tl;
    for (int j = 0; j < N_STREAMS; j++) {
        int64_t nw = wbase[j] - wp[j], rl = 4 + 2 * nw;
        if (pos + rl > cap) return CSP_E_OUTSIZE;
        wr32(out + pos, st[j]);
        for (int64_t k = 0; k < nw; k++) wr16(out + pos + 4 + 2 * k, S->words[wp[j] + k]);
        pos += rl;
        bitw_t bx = {out + pos, 0, cap - pos, 0, 0, 0};
        for (int64_t y = j; y < h; y += N_STREAMS)
            for (int64_t x = 0; x < w; x++) {
                int t = S->tok[y * w + x];
                if (t >= 16) bw_put(&bx, S->u[y * w + x], (t - 16) / 4 + 2);
            }
        bw_finish(&bx);
        if (bx.overflow) return CSP_E_OUTSIZE;
        pos += bx.pos;
        wr32(desc + 8 + 8 * j, (uint32_t)rl);
        wr32(desc + 12 + 8 * j, (uint32_t)bx.pos);
    }
    desc[0] = (uint8_t)kind; desc[1] = (uint8_t)mode; desc[2] = (uint8_t)ashift; desc[3] = (uint8_t)lshift;
    wr32(desc + 4, (uint32_t)tl);
    return pos;
}

#if CSP_X86_AVX512
/* The transform with the smallest MED cost from the candidates' costs (R, G, B, Y, U, V for each k). */
static int xform_from_costs(const int64_t cc[N_CAND]) {
    int64_t cost[N_XFORM];
    cost[0] = cc[0] + cc[1] + cc[2];
    for (int xf = 1; xf < N_XFORM; xf++) cost[xf] = cc[3] + cc[4] + cc[4 + xf];
    int xform = 0;
    for (int xf = 1; xf < N_XFORM; xf++) if (cost[xf] < cost[xform]) xform = xf;
    return xform;
}

/* choose_xform of a three-channel tile with every candidate plane filled in one pass per row (the same
 * costs as the plane-by-plane path): buf holds the padded row pair (above, current) of the N_CAND
 * candidates, 2 * N_CAND * (w + 2) samples. */
static int choose_xform_fused(const void *src, int bps, int64_t h, int64_t w, int32_t *buf) {
    const int64_t W2 = w + 2;
    static const int8_t cand_xf[N_CAND] = {0, 0, 0, 1, 1, 1, 2, 3, 4, 5}, cand_pl[N_CAND] = {0, 1, 2, 0, 1, 2, 2, 2, 2, 2};
    int64_t cc[N_CAND] = {0};
    int32_t *above[N_CAND], *cur[N_CAND];
    for (int j = 0; j < N_CAND; j++) { above[j] = buf + (2 * j) * W2; cur[j] = above[j] + W2; }
    if (h == 1) memset(buf, 0, sizeof(int32_t) * (size_t)(2 * N_CAND * W2)); /* the row above row 0 is zero */
    for (int64_t y = (h > 1 ? 1 : 0); y < h; y += 4) {
        int32_t *ra[N_CAND], *rc[N_CAND];
        for (int j = 0; j < N_CAND; j++) { ra[j] = above[j] + 1; rc[j] = cur[j] + 1; }
        if (y > 0) enc_fill_row_cands((const uint8_t *)src + (y - 1) * w * 3 * bps, bps, w, ra);
        enc_fill_row_cands((const uint8_t *)src + y * w * 3 * bps, bps, w, rc);
        for (int j = 0; j < N_CAND; j++) {
            if (y > 0) {
                above[j][0] = y > 1 ? plane_sample(src, bps, w, 3, cand_xf[j], cand_pl[j], y - 2, 0) : 0;
                above[j][w + 1] = above[j][w];
            }
            cur[j][0] = above[j][1] * (y > 0);
            cur[j][w + 1] = cur[j][w];
            cc[j] += enc_med_cost_row(above[j], cur[j], w);
        }
    }
    return xform_from_costs(cc);
}

/* choose_xform_fused for an 8-bit tile in 16-bit lanes, without storing the candidate rows. */
static int choose_xform_fused16(const uint8_t *src, int64_t h, int64_t w) {
    enc16_tables_t T;
    luts_t L;
    make_luts(&L);
    enc16_make_tables(&T, &L);
    int64_t cc[N_CAND] = {0};
    static const uint8_t zero[3] = {0, 0, 0};
    for (int64_t y = (h > 1 ? 1 : 0); y < h; y += 4) {
        const uint8_t *above = y > 0 ? src + (y - 1) * w * 3 : NULL;
        const uint8_t *pad_above = y > 1 ? src + (y - 2) * w * 3 : zero, *pad_cur = y > 0 ? above : zero;
        /* the tile's first touch: prefetch the next four rows (the next selection row pair, and the two
         * rows between, which the plane fills read next) */
        for (int64_t o = 0, end = (y + 5 < h ? 4 : h - y - 1) * w * 3; o < end; o += 64)
            _mm_prefetch((const char *)(src + (y + 1) * w * 3 + o), _MM_HINT_T0);
        enc16_xform_costs_row(above, src + y * w * 3, w, pad_above, pad_cur, &T, cc);
    }
    return xform_from_costs(cc);
}
#endif

/* Colour transform of a tile (§2): none or RCT k = 0..4 by the MED cost of the selection rows; P is
 * a padded plane scratch buffer. */
static int choose_xform(const void *src, int bps, int64_t h, int64_t w, int64_t c, int32_t maxv, int32_t *P, int simd) {
    int xform = 0;
#if CSP_X86_AVX512
    if (c == 3 && simd && w < 65536 && bps == 1) return choose_xform_fused16((const uint8_t *)src, h, w);
    if (c == 3 && simd && w < 65536) {
        int32_t *buf = (int32_t *)malloc(sizeof(int32_t) * (size_t)(2 * N_CAND * (w + 2)));
        if (buf) {
            xform = choose_xform_fused(src, bps, h, w, buf);
            free(buf);
            return xform;
        }
    }
#endif
    if (c == 3) {
        /* none, then RCT with k = 0..4; Y and U are the same for every k */
        int64_t cost[N_XFORM] = {0}, yu = 0;
        for (int pl = 0; pl < 3; pl++) {
            fill_plane(src, bps, h, w, c, 0, pl, P, 1, simd);
            cost[0] += med_cost(P, h, w, plane_range(0, pl, maxv), simd);
        }
        for (int pl = 0; pl < 2; pl++) {
            fill_plane(src, bps, h, w, c, 1, pl, P, 1, simd);
            yu += med_cost(P, h, w, plane_range(1, pl, maxv), simd);
        }
        for (int xf = 1; xf < N_XFORM; xf++) {
            fill_plane(src, bps, h, w, c, xf, 2, P, 1, simd);
            cost[xf] = yu + med_cost(P, h, w, plane_range(xf, 2, maxv), simd);
        }
        for (int xf = 1; xf < N_XFORM; xf++) if (cost[xf] < cost[xform]) xform = xf;
    }
    return xform;
}

/* Plane pl of src under xform into the scratch's padded plane (int16 on the 8-bit vector path). */
static void enc_fill(enc_scratch_t *S, const void *src, int bps, int64_t h, int64_t w, int64_t c, int xform, int pl) {
#if CSP_X86_AVX512
    if (S->p16 && c == 3) { /* all three planes in one pass at plane 0 */
        if (pl == 0) enc16_fill_planes3((const uint8_t *)src, h, w, xform, S->P16s, S->S16);
        S->P16 = S->P16s[pl];
        return;
    }
    if (S->p16) { enc16_fill_plane((const uint8_t *)src, h, w, c, xform, pl, S->P16s[0], S->S16); S->P16 = S->P16s[0]; return; }
#endif
    fill_plane(src, bps, h, w, c, xform, pl, S->P, 0, S->simd);
}

/* The six padded (h+1) x (w+2) planes of the model analysis (P, E, E0, EM, EA, EG) in one block; all NULL
 * when out of memory. */
static void enc_scratch_planes(enc_scratch_t *S, int64_t h, int64_t w, int64_t c, int bps, int simd) {
    const size_t PS = (size_t)((h + 1) * (w + 2)), NJ = (size_t)N_JOINT * NTOK;
    S->simd = simd;
    S->vec = CSP_X86_AVX512 && simd && w < 65536;
    S->p16 = S->vec && bps == 1;
#if CSP_X86_AVX512
    luts_t L;
    make_luts(&L);
    enc16_make_tables(&S->t16, &L);
#endif
    /* + the joint histogram's totals and copies, and the SEL/SEL3 choices */
    S->P = (int32_t *)malloc(sizeof(int32_t) * (PS * 6 + NJ) + sizeof(uint16_t) * 4 * NJ + (size_t)(h * w));
    S->jtot = S->P ? (uint32_t *)(S->P + 6 * PS) : NULL;
    S->jh16 = S->P ? (uint16_t *)(S->jtot + NJ) : NULL;
    S->sel = S->P ? (uint8_t *)(S->jh16 + 4 * NJ) : NULL;
    S->E = S->P ? S->P + PS : NULL; S->E0 = S->P ? S->P + 2 * PS : NULL;
    S->EM = S->P ? S->P + 3 * PS : NULL; S->EA = S->P ? S->P + 4 * PS : NULL; S->EG = S->P ? S->P + 5 * PS : NULL;
    /* the 16-bit path's planes P16, E16, E016 and the rows pairs of its three error rings, each with column 0
     * of every row 64-byte aligned (stride S16, a multiple of 32 samples): its loads and stores then split
     * fewer cache lines (unaligned rows made the error pass 2x slower). Without them, the 32-bit path runs. */
    S->b16 = NULL;
    if (S->p16) {
        const int64_t S16 = (w + 2 + 31) & ~(int64_t)31;
        const int64_t PL = (h + 1) * S16, P3 = c == 3 ? PL : 0; /* three-channel tiles: all planes at once */
        const int64_t sizes[9] = {PL, PL, PL, 2 * S16, 2 * S16, 2 * S16, S16, P3, P3};
        int16_t **dst[9] = {&S->P16s[0], &S->E16, &S->E016, &S->R16[0], &S->R16[1], &S->R16[2], (int16_t **)&S->hidx,
                            &S->P16s[1], &S->P16s[2]};
        int64_t total = 0;
        for (int k = 0; k < 9; k++) total += sizes[k];
        S->b16 = malloc(sizeof(int16_t) * (size_t)total + 64 * 10);
        if (!S->b16) S->p16 = 0;
        char *p = (char *)S->b16;
        for (int k = 0; k < 9 && S->b16; k++) { /* &X[1] aligned: X at most 63 bytes after p */
            int16_t *x = (int16_t *)(((uintptr_t)p + 2 + 63) & ~(uintptr_t)63) - 1;
            *dst[k] = x;
            p = (char *)(x + sizes[k]);
        }
        S->S16 = S16;
        if (S->b16) S->hidx++; /* its column 0 is the aligned one */
    }
}

static int64_t csp_encode1(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap,
                           int simd) {
    int64_t bound = csp_encode_bound(h, w, c, bps);
    if (bound < 0) return CSP_E_ARG;
    const int64_t N = h * w;
    const int32_t maxv = bps == 1 ? 255 : 65535;
    int64_t hlen = HEADER_SIZE + PLANE_SIZE * c;
    if (cap < hlen + 4) return CSP_E_OUTSIZE;
    enc_scratch_t S;
    enc_scratch_planes(&S, h, w, c, bps, simd);
    S.tok = (uint8_t *)malloc((size_t)N * 3);
    S.u = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)N);
    S.words = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(N + 2 * N_STREAMS + 16));
    int64_t ret = 0;
    if (!S.P || !S.tok || !S.u || !S.words) { ret = CSP_E_NOMEM; goto done; }
    S.ctx0 = S.tok + N; S.ctx1 = S.tok + 2 * N;
    luts_t L; make_luts(&L);
    int xform = choose_xform(src, bps, h, w, c, maxv, S.P, simd);
    write_header(dst, 1, bps, xform, h, w, c);
    int64_t pos = hlen + 4;
    for (int64_t pl = 0; pl < c; pl++) {
        enc_fill(&S, src, bps, h, w, c, xform, (int)pl);
        int64_t n = encode_plane(&S, &L, h, w, plane_range(xform, (int)pl, maxv), bps == 2,
                                 pl == 0 ? S.E0 : S.E, (xform && pl > 0) ? S.E0 : NULL,
                                 dst + HEADER_SIZE + PLANE_SIZE * pl, dst + pos, cap - pos);
        if (n < 0) { ret = n; goto done; }
        pos += n;
    }
    wr32(dst + hlen, crc32_bytes(dst, (size_t)hlen));
    ret = pos;
done:
    free(S.P); free(S.b16); free(S.tok); free(S.u); free(S.words);
    return ret;
}

int64_t csp_encode(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap) {
    return csp_encode1(src, h, w, c, bps, dst, cap, csp_cpu_avx512());
}

