/* AVX-512 row kernels of the encoder's model analysis for 8-bit tiles, in 16-bit lanes (32 samples per
 * vector, twice the 32-bit kernels' width).
 *
 * Included by cspcodec.c after cspcodec_enc_avx512.c. Every quantity fits 16 bits when the samples are
 * 8-bit: plane values lie in [-510, 510] (RCT V with k = 4 is the widest), so |errors| <= 1020, the
 * SEL/SEL3 scores <= 6 * 1020, the activity sum <= 10 * 1020, the residual codes u <= 2040 and the
 * predictions before their clamp <= 4 * 510 + 2. The padded planes (values, |e|, the cross-plane |e|)
 * are int16 with the same layout as the 32-bit ones, and the kernels write exactly what the 32-bit
 * kernels and the scalar code write (the tests compare the bytes).
 */
#if CSP_X86_AVX512

static inline __mmask32 enc16_tail(int64_t x, int64_t w) {
    return w - x >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (w - x)) - 1);
}

#define ENC16_LD(m, p) _mm512_maskz_loadu_epi16((m), (const void *)(p))

/* The kernels' constant tables, built once per plane: bit lengths of 0 <= x < 2048 as
 * max(bitlen(x >> 6) + 6 if x >> 6 else 0, bitlen(x & 63)); the left-neighbour permutation; the mode-0
 * context (times NLVL) of an activity below 64 and the level class of a level below 32. */
typedef struct { int16_t hi[32], lo[64], left[32], act0[64], lvl[32]; } enc16_tables_t;

static void enc16_make_tables(enc16_tables_t *T, const luts_t *L) {
    for (int i = 0; i < 32; i++) {
        T->hi[i] = (int16_t)(i ? bitlen64((uint64_t)i) + 6 : 0);
        T->left[i] = (int16_t)(i ? i - 1 : 32 + 31);
        T->lvl[i] = L->lvl[i];
    }
    for (int i = 0; i < 64; i++) { T->lo[i] = (int16_t)bitlen64((uint64_t)i); T->act0[i] = (int16_t)(L->act0[i] * NLVL); }
}

typedef struct { __m512i hi, lo0, lo1, left; } enc16_bitlen_t;

CSP_AVX512_TARGET static inline enc16_bitlen_t enc16_load(const enc16_tables_t *T) {
    enc16_bitlen_t B;
    B.hi = _mm512_loadu_si512(T->hi); B.lo0 = _mm512_loadu_si512(T->lo); B.lo1 = _mm512_loadu_si512(T->lo + 32);
    B.left = _mm512_loadu_si512(T->left);
    return B;
}

CSP_AVX512_TARGET static inline __m512i enc16_bitlen(const enc16_bitlen_t *T, __m512i x) {
    return _mm512_max_epi16(_mm512_permutexvar_epi16(_mm512_srli_epi16(x, 6), T->hi),
                            _mm512_permutex2var_epi16(T->lo0, x, T->lo1)); /* uses the low 6 bits of x */
}

/* [prev[31], cur[0..30]]: the left neighbours of the 32 columns of cur. */
CSP_AVX512_TARGET static inline __m512i enc16_left(__m512i cur, __m512i prev, __m512i idx) {
    return _mm512_permutex2var_epi16(cur, idx, prev);
}

/* Neighbours and fixed predictions of 32 columns (16-bit). */
typedef struct { __m512i a, b, c, d, v, pm, pa, pg, p2; } enc16_px_t;

CSP_AVX512_TARGET static inline void enc16_predict(enc16_px_t *P, const int16_t *pr, const int16_t *cr, int64_t x,
                                                  __mmask32 m, __m512i lo, __m512i hi) {
    P->a = ENC16_LD(m, cr + x); P->b = ENC16_LD(m, pr + x + 1); P->c = ENC16_LD(m, pr + x);
    P->d = ENC16_LD(m, pr + x + 2); P->v = ENC16_LD(m, cr + x + 1);
    const __m512i mx = _mm512_max_epi16(P->a, P->b), mn = _mm512_min_epi16(P->a, P->b);
    const __m512i ab = _mm512_add_epi16(P->a, P->b), abc = _mm512_sub_epi16(ab, P->c);
    P->pm = _mm512_max_epi16(mn, _mm512_min_epi16(mx, abc));
    __m512i s4 = _mm512_sub_epi16(_mm512_slli_epi16(ab, 1), P->c);
    s4 = _mm512_srai_epi16(_mm512_add_epi16(s4, _mm512_add_epi16(P->d, _mm512_set1_epi16(2))), 2);
    P->pa = _mm512_min_epi16(_mm512_max_epi16(s4, lo), hi);
    P->pg = _mm512_min_epi16(_mm512_max_epi16(abc, lo), hi);
    P->p2 = _mm512_srai_epi16(_mm512_add_epi16(ab, _mm512_set1_epi16(1)), 1);
}

CSP_AVX512_TARGET static inline __m512i enc16_score(const int16_t *pe, __m512i left, int64_t x, __mmask32 m) {
    const __m512i two = _mm512_add_epi16(left, ENC16_LD(m, pe + x + 1));
    return _mm512_add_epi16(_mm512_slli_epi16(two, 1), _mm512_add_epi16(ENC16_LD(m, pe + x), ENC16_LD(m, pe + x + 2)));
}

/* R, G, B of the n <= 32 interleaved 8-bit pixels at src as 16-bit lanes (zero beyond n). */
typedef struct { __m512i r, g, b; } enc16_rgb_idx_t;

CSP_AVX512_TARGET static inline enc16_rgb_idx_t enc16_rgb_idx(void) {
    uint8_t ir[64], ig[64], ib[64];
    for (int i = 0; i < 64; i++) {
        ir[i] = (uint8_t)(i < 32 ? 3 * i : 0); ig[i] = (uint8_t)(i < 32 ? 3 * i + 1 : 0); ib[i] = (uint8_t)(i < 32 ? 3 * i + 2 : 0);
    }
    enc16_rgb_idx_t I;
    I.r = _mm512_loadu_si512(ir); I.g = _mm512_loadu_si512(ig); I.b = _mm512_loadu_si512(ib);
    return I;
}

CSP_AVX512_TARGET static inline void enc16_load_rgb(const enc16_rgb_idx_t *I, const uint8_t *src, int64_t n, __m512i *r,
                                                   __m512i *g, __m512i *b) {
    const int64_t nb = 3 * n;
    const __m512i z0 = _mm512_maskz_loadu_epi8(nb >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1), (const void *)src);
    const __m512i z1 = _mm512_maskz_loadu_epi8(nb > 64 ? (((__mmask64)1 << (nb - 64)) - 1) : 0, (const void *)(src + 64));
    *r = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_permutex2var_epi8(z0, I->r, z1)));
    *g = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_permutex2var_epi8(z0, I->g, z1)));
    *b = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_permutex2var_epi8(z0, I->b, z1)));
}

/* One row (columns 0..w-1, unpadded) of plane pl of an 8-bit tile with c channels under xform. */
CSP_AVX512_TARGET static void enc16_fill_row(const uint8_t *src, int64_t w, int64_t c, int xform, int pl, int16_t *row) {
    if (c != 3) {
        for (int64_t x = 0; x < w; x++) row[x] = src[x * c + pl];
        return;
    }
    const enc16_rgb_idx_t I = enc16_rgb_idx();
    const __m512i k = _mm512_set1_epi16((int16_t)(xform ? xform - 1 : 0));
    for (int64_t x = 0; x < w; x += 32) {
        const int64_t n = w - x < 32 ? w - x : 32;
        __m512i r, g, b;
        enc16_load_rgb(&I, src + 3 * x, n, &r, &g, &b);
        __m512i v;
        if (!xform) v = pl == 0 ? r : (pl == 1 ? g : b);
        else if (pl == 0) v = _mm512_srai_epi16(_mm512_add_epi16(_mm512_add_epi16(r, b), _mm512_slli_epi16(g, 1)), 2);
        else if (pl == 1) v = _mm512_sub_epi16(r, g);
        else v = _mm512_sub_epi16(_mm512_sub_epi16(b, g), _mm512_srai_epi16(_mm512_mullo_epi16(k, _mm512_sub_epi16(r, g)), 2));
        _mm512_mask_storeu_epi16((void *)(row + x), enc16_tail(x, w), v);
    }
}

/* The padded 16-bit plane (h+1 rows of stride W2 >= w + 2, row 0 zero) of plane pl of an 8-bit tile
 * (fill_plane's layout). */
CSP_AVX512_TARGET static void enc16_fill_plane(const uint8_t *src, int64_t h, int64_t w, int64_t c, int xform, int pl,
                                               int16_t *P, int64_t W2) {
    memset(P, 0, sizeof(int16_t) * (size_t)W2);
    for (int64_t y = 0; y < h; y++) {
        int16_t *row = P + (y + 1) * W2;
        enc16_fill_row(src + y * w * c, w, c, xform, pl, row + 1);
        row[0] = P[y * W2 + 1];
        row[w + 1] = row[w];
    }
}

/* Candidate j of choose_xform (XF_CAND order: R, G, B, Y, U, V for k = 0 .. N_XFORM - 2) of pixels r, g, b. */
CSP_AVX512_TARGET static inline __m512i enc16_cand(int j, __m512i r, __m512i g, __m512i b) {
    if (j == 0) return r;
    if (j == 1) return g;
    if (j == 2) return b;
    if (j == 3) return _mm512_srai_epi16(_mm512_add_epi16(_mm512_add_epi16(r, b), _mm512_slli_epi16(g, 1)), 2);
    const __m512i u = _mm512_sub_epi16(r, g);
    if (j == 4) return u;
    return _mm512_sub_epi16(_mm512_sub_epi16(b, g), _mm512_srai_epi16(_mm512_mullo_epi16(_mm512_set1_epi16((int16_t)(j - 5)), u), 2));
}

/* The MED costs (sum of bit lengths of |x - MED|) of one selection row of every choose_xform candidate
 * plane of an 8-bit three-channel tile, added to cost[]: cur is the row, above the row above (NULL: the
 * zero row above row 0), pad_cur / pad_above the pixels left of their column 0 (the first pixel of the row
 * above each; zeros where that row does not exist). The transforms act per pixel, so a candidate's left
 * neighbours are the candidate of the left-shifted R, G, B: no candidate row is stored. */
CSP_AVX512_TARGET static void enc16_xform_costs_row(const uint8_t *above, const uint8_t *cur, int64_t w, const uint8_t pad_above[3],
                                                    const uint8_t pad_cur[3], const enc16_tables_t *T, int64_t cost[N_CAND]) {
    const enc16_rgb_idx_t I = enc16_rgb_idx();
    const enc16_bitlen_t BT = enc16_load(T);
    __m512i acc[N_CAND]; /* per lane at most ceil(w / 32) * 11 < 2^15 */
    for (int j = 0; j < N_CAND; j++) acc[j] = _mm512_setzero_si512();
    __m512i pr = _mm512_set1_epi16(pad_cur[0]), pg = _mm512_set1_epi16(pad_cur[1]), pb = _mm512_set1_epi16(pad_cur[2]);
    __m512i qr = _mm512_set1_epi16(pad_above[0]), qg = _mm512_set1_epi16(pad_above[1]), qb = _mm512_set1_epi16(pad_above[2]);
    for (int64_t x = 0; x < w; x += 32) {
        const int64_t n = w - x < 32 ? w - x : 32;
        const __mmask32 m = enc16_tail(x, w);
        __m512i r, g, b, ra = _mm512_setzero_si512(), ga = ra, ba = ra;
        enc16_load_rgb(&I, cur + 3 * x, n, &r, &g, &b);
        if (above) enc16_load_rgb(&I, above + 3 * x, n, &ra, &ga, &ba);
        const __m512i lr = enc16_left(r, pr, BT.left), lg = enc16_left(g, pg, BT.left), lb = enc16_left(b, pb, BT.left);
        const __m512i lra = enc16_left(ra, qr, BT.left), lga = enc16_left(ga, qg, BT.left), lba = enc16_left(ba, qb, BT.left);
        pr = r; pg = g; pb = b; qr = ra; qg = ga; qb = ba;
        for (int j = 0; j < N_CAND; j++) {
            const __m512i A = enc16_cand(j, lr, lg, lb), V = enc16_cand(j, r, g, b);
            const __m512i B = enc16_cand(j, ra, ga, ba), C = enc16_cand(j, lra, lga, lba);
            const __m512i mx = _mm512_max_epi16(A, B), mn = _mm512_min_epi16(A, B);
            const __m512i pm = _mm512_max_epi16(mn, _mm512_min_epi16(mx, _mm512_sub_epi16(_mm512_add_epi16(A, B), C)));
            acc[j] = _mm512_mask_add_epi16(acc[j], m, acc[j], enc16_bitlen(&BT, _mm512_abs_epi16(_mm512_sub_epi16(V, pm))));
        }
    }
    for (int j = 0; j < N_CAND; j++) cost[j] += _mm512_reduce_add_epi32(_mm512_madd_epi16(acc[j], _mm512_set1_epi16(1)));
}

/* The three padded 16-bit planes of an 8-bit RGB tile under xform (enc16_fill_plane's layout), in one
 * pass over the pixels. */
CSP_AVX512_TARGET static void enc16_fill_planes3(const uint8_t *src, int64_t h, int64_t w, int xform, int16_t *const P[3],
                                                 int64_t W2) {
    const enc16_rgb_idx_t I = enc16_rgb_idx();
    const __m512i k = _mm512_set1_epi16((int16_t)(xform ? xform - 1 : 0));
    for (int j = 0; j < 3; j++) memset(P[j], 0, sizeof(int16_t) * (size_t)W2);
    for (int64_t y = 0; y < h; y++) {
        const uint8_t *s = src + y * w * 3;
        int16_t *r0 = P[0] + (y + 1) * W2 + 1, *r1 = P[1] + (y + 1) * W2 + 1, *r2 = P[2] + (y + 1) * W2 + 1;
        for (int64_t x = 0; x < w; x += 32) {
            const int64_t n = w - x < 32 ? w - x : 32;
            const __mmask32 m = enc16_tail(x, w);
            __m512i r, g, b;
            enc16_load_rgb(&I, s + 3 * x, n, &r, &g, &b);
            if (xform) {
                const __m512i u = _mm512_sub_epi16(r, g);
                _mm512_mask_storeu_epi16((void *)(r0 + x), m,
                                         _mm512_srai_epi16(_mm512_add_epi16(_mm512_add_epi16(r, b), _mm512_slli_epi16(g, 1)), 2));
                _mm512_mask_storeu_epi16((void *)(r1 + x), m, u);
                _mm512_mask_storeu_epi16((void *)(r2 + x), m,
                                         _mm512_sub_epi16(_mm512_sub_epi16(b, g), _mm512_srai_epi16(_mm512_mullo_epi16(k, u), 2)));
            } else {
                _mm512_mask_storeu_epi16((void *)(r0 + x), m, r);
                _mm512_mask_storeu_epi16((void *)(r1 + x), m, g);
                _mm512_mask_storeu_epi16((void *)(r2 + x), m, b);
            }
        }
        for (int j = 0; j < 3; j++) {
            int16_t *row = P[j] + (y + 1) * W2;
            row[0] = P[j][y * W2 + 1];
            row[w + 1] = row[w];
        }
    }
}

/* enc_errors_row in 16-bit lanes (costs only: the absolute-error sums serve 16-bit tiles alone). */
CSP_AVX512_TARGET static void enc16_errors_row(const int16_t *pr, const int16_t *cr, const int16_t *pem, const int16_t *pea,
                                               const int16_t *peg, int16_t *em, int16_t *ea, int16_t *eg, int64_t w,
                                               range_t rg, const enc16_tables_t *T, int64_t costs[N_PRED],
                                               uint8_t *sel) {
    const __m512i lo = _mm512_set1_epi16((int16_t)rg.lo), hi = _mm512_set1_epi16((int16_t)rg.hi);
    const __m512i one = _mm512_set1_epi16(1), two = _mm512_set1_epi16(2);
    const enc16_bitlen_t BT = enc16_load(T);
    const __m512i LI = BT.left;
    __m512i C[N_PRED]; /* per lane at most ceil(w / 32) * 11 < 2^15 (w < 2^16) */
    for (int k = 0; k < N_PRED; k++) C[k] = _mm512_setzero_si512();
    __m512i l0 = _mm512_setzero_si512(), l1 = l0, lg = l0;
    for (int64_t x = 0; x < w; x += 32) {
        const __mmask32 m = enc16_tail(x, w);
        enc16_px_t P;
        enc16_predict(&P, pr, cr, x, m, lo, hi);
        const __m512i e0 = _mm512_abs_epi16(_mm512_sub_epi16(P.v, P.pm)), e1 = _mm512_abs_epi16(_mm512_sub_epi16(P.v, P.pa));
        const __m512i e2 = _mm512_abs_epi16(_mm512_sub_epi16(P.v, P.p2)), eG = _mm512_abs_epi16(_mm512_sub_epi16(P.v, P.pg));
        _mm512_mask_storeu_epi16((void *)(em + x + 1), m, e0);
        _mm512_mask_storeu_epi16((void *)(ea + x + 1), m, e1);
        _mm512_mask_storeu_epi16((void *)(eg + x + 1), m, eG);
        C[0] = _mm512_mask_add_epi16(C[0], m, C[0], enc16_bitlen(&BT, e0));
        C[1] = _mm512_mask_add_epi16(C[1], m, C[1], enc16_bitlen(&BT, e1));
        C[2] = _mm512_mask_add_epi16(C[2], m, C[2], enc16_bitlen(&BT, e2));
        const __m512i sm = enc16_score(pem, enc16_left(e0, l0, LI), x, m), sa = enc16_score(pea, enc16_left(e1, l1, LI), x, m);
        const __m512i sg = enc16_score(peg, enc16_left(eG, lg, LI), x, m);
        l0 = e0; l1 = e1; lg = eG;
        const __mmask32 tm = _mm512_cmple_epi16_mask(sm, sa), tg = _mm512_cmplt_epi16_mask(sg, _mm512_min_epi16(sm, sa));
        const __m512i e3 = _mm512_mask_mov_epi16(e1, tm, e0), e4 = _mm512_mask_mov_epi16(e3, tg, eG);
        C[3] = _mm512_mask_add_epi16(C[3], m, C[3], enc16_bitlen(&BT, e3));
        C[4] = _mm512_mask_add_epi16(C[4], m, C[4], enc16_bitlen(&BT, e4));
        const __m512i sb = _mm512_mask_add_epi16(_mm512_maskz_mov_epi16(tm, one), tg, _mm512_maskz_mov_epi16(tm, one), two);
        _mm256_mask_storeu_epi8((void *)(sel + x), m, _mm512_cvtepi16_epi8(sb));
    }
    for (int k = 0; k < N_PRED; k++) costs[k] += _mm512_reduce_add_epi32(_mm512_madd_epi16(C[k], _mm512_set1_epi16(1)));
}

/* enc_model_row in 16-bit lanes for an 8-bit tile (ashift = lshift = 0); also stores each sample's joint
 * histogram index joint * nt + token in hidx (row-local). */
CSP_AVX512_TARGET static void enc16_model_row(int kind, const int16_t *pr, const int16_t *cr, const int16_t *pe, int16_t *ce,
                                              const int16_t *xe, const uint8_t *sel, int64_t w, range_t rg,
                                              const enc16_tables_t *T, int nt, uint8_t *tok, uint8_t *joint, uint32_t *u,
                                              uint16_t *hidx) {
    const __m512i lo = _mm512_set1_epi16((int16_t)rg.lo), hi = _mm512_set1_epi16((int16_t)rg.hi);
    const __m512i three = _mm512_set1_epi16(3), c16 = _mm512_set1_epi16(16);
    const enc16_bitlen_t BT = enc16_load(T);
    const __m512i LI = BT.left;
    const __m512i T0a = _mm512_loadu_si512(T->act0), T0b = _mm512_loadu_si512(T->act0 + 32), TL = _mm512_loadu_si512(T->lvl);
    __m512i lae = _mm512_setzero_si512();
    for (int64_t x = 0; x < w; x += 32) {
        const __mmask32 m = enc16_tail(x, w);
        enc16_px_t P;
        enc16_predict(&P, pr, cr, x, m, lo, hi);
        __m512i p;
        if (kind == 0) p = P.pm;
        else if (kind == 1) p = P.pa;
        else if (kind == 2) p = P.p2;
        else {
            const __m512i sb = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, (const void *)(sel + x)));
            p = _mm512_mask_mov_epi16(P.pa, _mm512_test_epi16_mask(sb, _mm512_set1_epi16(1)), P.pm);
            if (kind == PRED_SEL3) p = _mm512_mask_mov_epi16(p, _mm512_test_epi16_mask(sb, _mm512_set1_epi16(2)), P.pg);
        }
        const __m512i e = _mm512_sub_epi16(P.v, p);
        const __m512i uu = _mm512_xor_si512(_mm512_slli_epi16(e, 1), _mm512_srai_epi16(e, 15)); /* zigzag */
        const __m512i n = _mm512_sub_epi16(enc16_bitlen(&BT, uu), _mm512_set1_epi16(1));
        __m512i t = _mm512_add_epi16(_mm512_add_epi16(c16, _mm512_slli_epi16(_mm512_sub_epi16(n, _mm512_set1_epi16(4)), 2)),
                                     _mm512_and_si512(_mm512_srlv_epi16(uu, _mm512_sub_epi16(n, _mm512_set1_epi16(2))), three));
        t = _mm512_mask_mov_epi16(t, _mm512_cmplt_epu16_mask(uu, c16), uu);
        const __m512i ae = _mm512_abs_epi16(e);
        _mm512_mask_storeu_epi16((void *)(ce + x + 1), m, ae);
        _mm512_mask_storeu_epi32((void *)(u + x), (__mmask16)m, _mm512_cvtepu16_epi32(_mm512_castsi512_si256(uu)));
        _mm512_mask_storeu_epi32((void *)(u + x + 16), (__mmask16)(m >> 16), _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(uu, 1)));
        _mm256_mask_storeu_epi8((void *)(tok + x), m, _mm512_cvtepi16_epi8(t));
        __m512i act = _mm512_add_epi16(_mm512_abs_epi16(_mm512_sub_epi16(P.a, P.c)), _mm512_abs_epi16(_mm512_sub_epi16(P.b, P.c)));
        act = _mm512_add_epi16(act, _mm512_abs_epi16(_mm512_sub_epi16(P.b, P.d)));
        act = _mm512_add_epi16(act, _mm512_add_epi16(ENC16_LD(m, pe + x + 1), _mm512_add_epi16(ENC16_LD(m, pe + x), ENC16_LD(m, pe + x + 2))));
        act = _mm512_add_epi16(act, _mm512_slli_epi16(enc16_left(ae, lae, LI), 1));
        lae = ae;
        if (xe) act = _mm512_add_epi16(act, _mm512_slli_epi16(ENC16_LD(m, xe + x + 1), 1));
        act = _mm512_min_epu16(_mm512_srli_epi16(act, 1), _mm512_set1_epi16(63)); /* the tables are flat from 40 */
        const __m512i lv = _mm512_min_epi16(_mm512_max_epi16(p, _mm512_setzero_si512()), _mm512_set1_epi16(31));
        const __m512i j = _mm512_add_epi16(_mm512_permutex2var_epi16(T0a, act, T0b), _mm512_permutexvar_epi16(lv, TL));
        _mm256_mask_storeu_epi8((void *)(joint + x), m, _mm512_cvtepi16_epi8(j));
        _mm512_mask_storeu_epi16((void *)(hidx + x), m, _mm512_add_epi16(_mm512_mullo_epi16(j, _mm512_set1_epi16((int16_t)nt)), t));
    }
}

#endif
