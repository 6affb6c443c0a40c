/* AVX-512 row kernels of the encoder's model analysis (bitstreams 1 and 3 share the model).
 *
 * Included by cspcodec.c before the model analysis; compiled with target attributes and used only after
 * a run-time CPU check (csp_cpu_avx512). At encoding time every pixel is known, so the predictions, their
 * errors and the per-sample SEL/SEL3 selections of a row have no serial dependency: each kernel runs 16
 * columns at a time and writes exactly what the scalar code writes (the golden fixtures and the
 * reference implementation check the bytes).
 */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define CSP_X86_AVX512 1
#include <immintrin.h>

/* The instruction sets csp_cpu_avx512 checks (all AVX-512 code of the codec is compiled for them). */
#define CSP_AVX512_TARGET \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx512vbmi,avx512vbmi2,popcnt,prfchw")))

/* The AVX-512 subset of Skylake-SP and Cascade Lake: the 8-bit decoder's second variant
 * (cspcodec3_avx512_16.c with V3H_VBMI = 0) is compiled for it. */
#define CSP_AVX512BW_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512cd,popcnt,prfchw")))

static int csp_cpu_avx512bw(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512cd");
}

/* 1 when the CPU has what the AVX-512 paths need (F, BW, VL, CD, VBMI, VBMI2). */
static int csp_cpu_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd") &&
           __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vbmi2");
}

static inline __mmask16 enc_tail(int64_t x, int64_t w) {
    return w - x >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - x)) - 1);
}

#define ENC_LD(m, p) _mm512_maskz_loadu_epi32((m), (const void *)(p))

/* Neighbours and the fixed predictions of the 16 columns at x of a padded row pair (pr above, cr). */
typedef struct { __m512i a, b, c, d, v, pm, pa, pg, p2; } enc_px_t;

CSP_AVX512_TARGET static inline void enc_predict(enc_px_t *P, const int32_t *pr, const int32_t *cr, int64_t x, __mmask16 m,
                                          __m512i lo, __m512i hi) {
    P->a = ENC_LD(m, cr + x); P->b = ENC_LD(m, pr + x + 1); P->c = ENC_LD(m, pr + x); P->d = ENC_LD(m, pr + x + 2);
    P->v = ENC_LD(m, cr + x + 1);
    const __m512i mx = _mm512_max_epi32(P->a, P->b), mn = _mm512_min_epi32(P->a, P->b);
    const __m512i abc = _mm512_sub_epi32(_mm512_add_epi32(P->a, P->b), P->c);
    P->pm = _mm512_max_epi32(mn, _mm512_min_epi32(mx, abc)); /* MED = median(a, b, a + b - c) */
    __m512i s4 = _mm512_sub_epi32(_mm512_slli_epi32(_mm512_add_epi32(P->a, P->b), 1), P->c);
    s4 = _mm512_srai_epi32(_mm512_add_epi32(s4, _mm512_add_epi32(P->d, _mm512_set1_epi32(2))), 2);
    P->pa = _mm512_min_epi32(_mm512_max_epi32(s4, lo), hi);
    P->pg = _mm512_min_epi32(_mm512_max_epi32(abc, lo), hi);
    P->p2 = _mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(P->a, P->b), _mm512_set1_epi32(1)), 1);
}

CSP_AVX512_TARGET static inline __m512i enc_bitlen(__m512i v) { return _mm512_sub_epi32(_mm512_set1_epi32(32), _mm512_lzcnt_epi32(v)); }

/* R, G, B of the n <= 16 pixels at src (interleaved, bps bytes per sample) as 32-bit lanes. */
typedef struct { __m512i IB, IW, IW2; } enc_rgb_idx_t;

CSP_AVX512_TARGET static inline enc_rgb_idx_t enc_rgb_idx(void) {
    uint8_t ib[64];
    uint16_t iw[32];
    for (int i = 0; i < 64; i++) ib[i] = (uint8_t)(i < 48 ? (i % 16) * 3 + i / 16 : 0); /* R, G, B bytes */
    for (int i = 0; i < 32; i++) iw[i] = (uint16_t)((i % 16) * 3 + (i / 16)); /* R, G words (B: + 2) */
    enc_rgb_idx_t I;
    I.IB = _mm512_loadu_si512(ib); I.IW = _mm512_loadu_si512(iw);
    I.IW2 = _mm512_add_epi16(I.IW, _mm512_set1_epi16(2));
    return I;
}

CSP_AVX512_TARGET static inline void enc_load_rgb(const enc_rgb_idx_t *I, const uint8_t *src, int bps, int64_t n, __m512i *r,
                                                 __m512i *g, __m512i *b) {
    if (bps == 1) {
        const __m512i z = _mm512_maskz_loadu_epi8((__mmask64)((1ull << (3 * n)) - 1), (const void *)src);
        const __m512i p = _mm512_permutexvar_epi8(I->IB, z);
        *r = _mm512_cvtepu8_epi32(_mm512_castsi512_si128(p));
        *g = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(p, 1));
        *b = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(p, 2));
    } else {
        const uint16_t *s16 = (const uint16_t *)(const void *)src;
        const int64_t nw = 3 * n;
        const __m512i lo = _mm512_maskz_loadu_epi16((__mmask32)(nw >= 32 ? 0xFFFFFFFFu : ((1u << nw) - 1)), (const void *)s16);
        const __m512i hi = _mm512_maskz_loadu_epi16((__mmask32)(nw > 32 ? ((1u << (nw - 32)) - 1) : 0), (const void *)(s16 + 32));
        const __m512i rg = _mm512_permutex2var_epi16(lo, I->IW, hi), bb = _mm512_permutex2var_epi16(lo, I->IW2, hi);
        *r = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(rg));
        *g = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(rg, 1));
        *b = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(bb));
    }
}

/* One row of plane pl of an interleaved three-channel tile (fill_plane): the channel, or under RCT
 * (xform = 1 + k) Y = (R + 2G + B) >> 2, U = R - G, V = (B - G) - ((k U) >> 2). */
CSP_AVX512_TARGET static void enc_fill_row_rgb(const uint8_t *src, int bps, int64_t w, int xform, int pl, int32_t *row) {
    const enc_rgb_idx_t I = enc_rgb_idx();
    const __m512i k = _mm512_set1_epi32(xform ? xform - 1 : 0);
    for (int64_t x = 0; x < w; x += 16) {
        const int64_t n = w - x < 16 ? w - x : 16;
        __m512i r, g, b;
        enc_load_rgb(&I, src + 3 * x * bps, bps, n, &r, &g, &b);
        __m512i v;
        if (!xform) v = pl == 0 ? r : (pl == 1 ? g : b);
        else if (pl == 0) v = _mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(r, b), _mm512_slli_epi32(g, 1)), 2);
        else if (pl == 1) v = _mm512_sub_epi32(r, g);
        else v = _mm512_sub_epi32(_mm512_sub_epi32(b, g), _mm512_srai_epi32(_mm512_mullo_epi32(k, _mm512_sub_epi32(r, g)), 2));
        _mm512_mask_storeu_epi32((void *)(row + x), (__mmask16)((1u << n) - 1), v);
    }
}

/* One row of each of the N_CAND planes choose_xform compares (see XF_CAND), in one pass over the pixels:
 * R, G, B, then Y, U, then V for k = 0 .. N_XFORM - 2. rows[j] points at column 0 of candidate j. */
#define N_CAND (3 + 2 + (N_XFORM - 1))
CSP_AVX512_TARGET static void enc_fill_row_cands(const uint8_t *src, int bps, int64_t w, int32_t *const rows[N_CAND]) {
    const enc_rgb_idx_t I = enc_rgb_idx();
    for (int64_t x = 0; x < w; x += 16) {
        const int64_t n = w - x < 16 ? w - x : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1);
        __m512i r, g, b;
        enc_load_rgb(&I, src + 3 * x * bps, bps, n, &r, &g, &b);
        const __m512i u = _mm512_sub_epi32(r, g), bg = _mm512_sub_epi32(b, g);
        _mm512_mask_storeu_epi32((void *)(rows[0] + x), m, r);
        _mm512_mask_storeu_epi32((void *)(rows[1] + x), m, g);
        _mm512_mask_storeu_epi32((void *)(rows[2] + x), m, b);
        _mm512_mask_storeu_epi32((void *)(rows[3] + x), m,
                                 _mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(r, b), _mm512_slli_epi32(g, 1)), 2));
        _mm512_mask_storeu_epi32((void *)(rows[4] + x), m, u);
        for (int k = 0; k < N_XFORM - 1; k++)
            _mm512_mask_storeu_epi32((void *)(rows[5 + k] + x), m,
                                     _mm512_sub_epi32(bg, _mm512_srai_epi32(_mm512_mullo_epi32(_mm512_set1_epi32(k), u), 2)));
    }
}

/* med_cost of one row: the sum of bit_length(|x - MED|). MED needs no range (a median of a, b, a+b-c). */
CSP_AVX512_TARGET static int64_t enc_med_cost_row(const int32_t *pr, const int32_t *cr, int64_t w) {
    __m512i C = _mm512_setzero_si512();
    for (int64_t x = 0; x < w; x += 16) {
        const __mmask16 m = enc_tail(x, w);
        const __m512i a = ENC_LD(m, cr + x), b = ENC_LD(m, pr + x + 1), c = ENC_LD(m, pr + x), v = ENC_LD(m, cr + x + 1);
        const __m512i mx = _mm512_max_epi32(a, b), mn = _mm512_min_epi32(a, b);
        const __m512i pm = _mm512_max_epi32(mn, _mm512_min_epi32(mx, _mm512_sub_epi32(_mm512_add_epi32(a, b), c)));
        C = _mm512_mask_add_epi32(C, m, C, enc_bitlen(_mm512_abs_epi32(_mm512_sub_epi32(v, pm))));
    }
    return _mm512_reduce_add_epi32(C);
}

/* [prev[15], cur[0..14]]: the left neighbours of the 16 columns of cur (prev: the 16 columns before). */
CSP_AVX512_TARGET static inline __m512i enc_left(__m512i cur, __m512i prev) { return _mm512_alignr_epi32(cur, prev, 15); }

/* 2 err(left) + 2 err(above) + err(above-left) + err(above-right) of the 16 columns at x; pe is the padded
 * row above, left the errors of the columns x - 1 .. x + 14. */
CSP_AVX512_TARGET static inline __m512i enc_score_l(const int32_t *pe, __m512i left, int64_t x, __mmask16 m) {
    const __m512i two = _mm512_add_epi32(left, ENC_LD(m, pe + x + 1));
    return _mm512_add_epi32(_mm512_slli_epi32(two, 1), _mm512_add_epi32(ENC_LD(m, pe + x), ENC_LD(m, pe + x + 2)));
}

/* predictor_errors for one row, in one pass: fills the row's |x - MED|, |x - AVG4|, |x - GRAD| (em, ea,
 * eg, padded; the left neighbours' errors come from the previous vector), adds each predictor's absolute
 * errors and bit lengths to sads/costs, and stores per sample the SEL/SEL3 choices in sel (bit 0: SEL
 * takes MED, bit 1: SEL3 takes GRAD; otherwise SEL3 takes SEL's choice). */
CSP_AVX512_TARGET static void enc_errors_row(const int32_t *pr, const int32_t *cr, const int32_t *pem, const int32_t *pea,
                                      const int32_t *peg, int32_t *em, int32_t *ea, int32_t *eg, int64_t w, range_t rg,
                                      int64_t sads[N_PRED], int64_t costs[N_PRED], uint8_t *sel) {
    const __m512i lo = _mm512_set1_epi32(rg.lo), hi = _mm512_set1_epi32(rg.hi), one = _mm512_set1_epi32(1);
    __m512i S[N_PRED], C[N_PRED];
    for (int k = 0; k < N_PRED; k++) { S[k] = _mm512_setzero_si512(); C[k] = _mm512_setzero_si512(); }
    __m512i l0 = _mm512_setzero_si512(), l1 = l0, lg = l0; /* errors of the previous 16 columns (pad: 0) */
    for (int64_t x = 0; x < w; x += 16) {
        const __mmask16 m = enc_tail(x, w);
        enc_px_t P;
        enc_predict(&P, pr, cr, x, m, lo, hi);
        const __m512i e0 = _mm512_abs_epi32(_mm512_sub_epi32(P.v, P.pm)), e1 = _mm512_abs_epi32(_mm512_sub_epi32(P.v, P.pa));
        const __m512i e2 = _mm512_abs_epi32(_mm512_sub_epi32(P.v, P.p2)), eG = _mm512_abs_epi32(_mm512_sub_epi32(P.v, P.pg));
        _mm512_mask_storeu_epi32((void *)(em + x + 1), m, e0);
        _mm512_mask_storeu_epi32((void *)(ea + x + 1), m, e1);
        _mm512_mask_storeu_epi32((void *)(eg + x + 1), m, eG);
        S[0] = _mm512_mask_add_epi32(S[0], m, S[0], e0); C[0] = _mm512_mask_add_epi32(C[0], m, C[0], enc_bitlen(e0));
        S[1] = _mm512_mask_add_epi32(S[1], m, S[1], e1); C[1] = _mm512_mask_add_epi32(C[1], m, C[1], enc_bitlen(e1));
        S[2] = _mm512_mask_add_epi32(S[2], m, S[2], e2); C[2] = _mm512_mask_add_epi32(C[2], m, C[2], enc_bitlen(e2));
        /* SEL and SEL3 from the errors of the row above and of the left neighbours */
        const __m512i sm = enc_score_l(pem, enc_left(e0, l0), x, m), sa = enc_score_l(pea, enc_left(e1, l1), x, m);
        const __m512i sg = enc_score_l(peg, enc_left(eG, lg), x, m);
        l0 = e0; l1 = e1; lg = eG;
        const __mmask16 tm = _mm512_cmple_epi32_mask(sm, sa), tg = _mm512_cmplt_epi32_mask(sg, _mm512_min_epi32(sm, sa));
        const __m512i e3 = _mm512_mask_mov_epi32(e1, tm, e0), e4 = _mm512_mask_mov_epi32(e3, tg, eG);
        S[3] = _mm512_mask_add_epi32(S[3], m, S[3], e3); C[3] = _mm512_mask_add_epi32(C[3], m, C[3], enc_bitlen(e3));
        S[4] = _mm512_mask_add_epi32(S[4], m, S[4], e4); C[4] = _mm512_mask_add_epi32(C[4], m, C[4], enc_bitlen(e4));
        const __m512i sb = _mm512_mask_add_epi32(_mm512_maskz_mov_epi32(tm, one), tg, _mm512_maskz_mov_epi32(tm, one),
                                                 _mm512_set1_epi32(2));
        _mm_mask_storeu_epi8((void *)(sel + x), m, _mm512_cvtepi32_epi8(sb));
    }
    for (int k = 0; k < N_PRED; k++) { /* lanes hold at most w / 16 * 2^19 < 2^31 (w < 2^16, checked) */
        sads[k] += _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(S[k])),
                                                            _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(S[k], 1))));
        costs[k] += _mm512_reduce_add_epi32(C[k]);
    }
}

/* The main model pass of one row for predictor kind, in one pass: residual magnitudes (ce, padded), and
 * per sample the token, the joint context class (mode-0 context * NLVL + level class, from which both
 * modes' contexts follow: see joint_ctx) and the residual code u (tok, joint, u at the row's sample
 * index). sel holds the row's SEL/SEL3 choices (enc_errors_row). */
CSP_AVX512_TARGET static void enc_model_row(int kind, const int32_t *pr, const int32_t *cr, const int32_t *pe, int32_t *ce,
                                     const int32_t *xe, const uint8_t *sel, int64_t w, range_t rg, int ashift, int lshift,
                                     const luts_t *L, uint8_t *tok, uint8_t *joint, uint32_t *u) {
    const __m512i lo = _mm512_set1_epi32(rg.lo), hi = _mm512_set1_epi32(rg.hi);
    const __m512i three = _mm512_set1_epi32(3), c16 = _mm512_set1_epi32(16);
    uint8_t t_act0[64], t_lvl[64];
    for (int i = 0; i < 64; i++) { t_act0[i] = (uint8_t)(L->act0[i] * NLVL); t_lvl[i] = L->lvl[i & 31]; }
    const __m512i T0 = _mm512_loadu_si512(t_act0), TL = _mm512_loadu_si512(t_lvl);
    const __m128i sh = _mm_cvtsi32_si128(1 + ashift), shl = _mm_cvtsi32_si128(lshift);
    __m512i lae = _mm512_setzero_si512(); /* |e| of the previous 16 columns (pad: 0) */
    for (int64_t x = 0; x < w; x += 16) {
        const __mmask16 m = enc_tail(x, w);
        enc_px_t P;
        enc_predict(&P, pr, cr, x, m, lo, hi);
        __m512i p;
        if (kind == 0) p = P.pm;
        else if (kind == 1) p = P.pa;
        else if (kind == 2) p = P.p2;
        else {
            const __m512i sb = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, (const void *)(sel + x)));
            p = _mm512_mask_mov_epi32(P.pa, _mm512_test_epi32_mask(sb, _mm512_set1_epi32(1)), P.pm);
            if (kind == PRED_SEL3) p = _mm512_mask_mov_epi32(p, _mm512_test_epi32_mask(sb, _mm512_set1_epi32(2)), P.pg);
        }
        const __m512i e = _mm512_sub_epi32(P.v, p);
        const __m512i uu = _mm512_xor_si512(_mm512_slli_epi32(e, 1), _mm512_srai_epi32(e, 31)); /* zigzag */
        /* u < 16: u; else 16 + 4 (n - 4) + ((u >> (n - 2)) & 3), n = bit length - 1 */
        const __m512i n = _mm512_sub_epi32(_mm512_set1_epi32(31), _mm512_lzcnt_epi32(uu));
        __m512i t = _mm512_add_epi32(_mm512_add_epi32(c16, _mm512_slli_epi32(_mm512_sub_epi32(n, _mm512_set1_epi32(4)), 2)),
                                     _mm512_and_si512(_mm512_srlv_epi32(uu, _mm512_sub_epi32(n, _mm512_set1_epi32(2))), three));
        t = _mm512_mask_mov_epi32(t, _mm512_cmplt_epu32_mask(uu, c16), uu);
        const __m512i ae = _mm512_abs_epi32(e);
        _mm512_mask_storeu_epi32((void *)(ce + x + 1), m, ae);
        _mm512_mask_storeu_epi32((void *)(u + x), m, uu);
        _mm_mask_storeu_epi8((void *)(tok + x), m, _mm512_cvtepi32_epi8(t));
        /* context: activity (with the left neighbour's |e| from the previous vector) and level */
        __m512i act = _mm512_add_epi32(_mm512_abs_epi32(_mm512_sub_epi32(P.a, P.c)), _mm512_abs_epi32(_mm512_sub_epi32(P.b, P.c)));
        act = _mm512_add_epi32(act, _mm512_abs_epi32(_mm512_sub_epi32(P.b, P.d)));
        act = _mm512_add_epi32(act, _mm512_add_epi32(ENC_LD(m, pe + x + 1), _mm512_add_epi32(ENC_LD(m, pe + x), ENC_LD(m, pe + x + 2))));
        act = _mm512_add_epi32(act, _mm512_slli_epi32(enc_left(ae, lae), 1));
        lae = ae;
        if (xe) act = _mm512_add_epi32(act, _mm512_slli_epi32(ENC_LD(m, xe + x + 1), 1));
        act = _mm512_min_epu32(_mm512_srl_epi32(act, sh), _mm512_set1_epi32(63)); /* the tables are flat from 40 */
        const __m512i lv = _mm512_min_epi32(_mm512_srl_epi32(_mm512_max_epi32(p, _mm512_setzero_si512()), shl),
                                            _mm512_set1_epi32(31));
        const __m512i j = _mm512_add_epi32(_mm512_permutexvar_epi8(act, T0), _mm512_permutexvar_epi8(lv, TL));
        _mm_mask_storeu_epi8((void *)(joint + x), m, _mm512_cvtepi32_epi8(j));
    }
}

/* ctx[i] = map[joint[i]] for n samples (map: N_JOINT entries). */
CSP_AVX512_TARGET static void enc_map_joint(const uint8_t *joint, const uint8_t *map, uint8_t *ctx, int64_t n) {
    uint8_t t[128] = {0};
    memcpy(t, map, N_JOINT);
    const __m512i T0 = _mm512_loadu_si512(t), T1 = _mm512_loadu_si512(t + 64);
    for (int64_t i = 0; i < n; i += 64) {
        const __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - i)) - 1);
        const __m512i j = _mm512_maskz_loadu_epi8(m, (const void *)(joint + i));
        _mm512_mask_storeu_epi8((void *)(ctx + i), m, _mm512_permutex2var_epi8(T0, j, T1));
    }
}
#else
#define CSP_X86_AVX512 0
static int csp_cpu_avx512(void) { return 0; }
static int csp_cpu_avx512bw(void) { return 0; }
#endif
