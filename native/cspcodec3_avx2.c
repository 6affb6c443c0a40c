/* AVX2 decoder kernel of bitstream version 3 (planes of 32 lanes) for x86-64 CPUs without AVX-512
 * (AMD Zen 2 and 3, Intel client cores): the scalar path decodes only 15-29 MP/s there.
 *
 * Included by cspcodec3.c after the AVX-512 kernels; compiled with target attributes and called only
 * after a run-time CPU check. The same step order, words and errors as v3w_kernel
 * (cspcodec3_avx512_32.c), in 32-bit lanes on the same int32 skew buffers, with four 8-lane vectors per
 * step instead of two 16-lane ones. What AVX2 lacks is replaced: lane masks are vectors (blends instead
 * of masked moves); the context tables are gathered; a renormalisation is a movemask, a 16-byte load
 * and a lane permutation from a table of prefix counts (V3A_EXPAND) instead of an expand-load; the
 * samples of idle lanes are stored like the others (nothing reads a position no sample owns: the output
 * passes read the valid samples only, and lane 0 reads lane 31's rows only where lane 31 is active).
 */

#define V3A_TARGET __attribute__((target("avx2,popcnt")))

static int csp_cpu_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

/* V3A_EXPAND[8 m + i]: the number of set bits of m below bit i (lane i's word in an expand by mask m) */
#define V3A_POP(x) (((x) & 1) + ((x) >> 1 & 1) + ((x) >> 2 & 1) + ((x) >> 3 & 1) + ((x) >> 4 & 1) + ((x) >> 5 & 1) + ((x) >> 6 & 1))
#define V3A_ROW(m) 0, V3A_POP((m) & 1), V3A_POP((m) & 3), V3A_POP((m) & 7), V3A_POP((m) & 15), V3A_POP((m) & 31), \
                   V3A_POP((m) & 63), V3A_POP((m) & 127)
#define V3A_R4(m) V3A_ROW(m), V3A_ROW((m) + 1), V3A_ROW((m) + 2), V3A_ROW((m) + 3)
#define V3A_R16(m) V3A_R4(m), V3A_R4((m) + 4), V3A_R4((m) + 8), V3A_R4((m) + 12)
#define V3A_R64(m) V3A_R16(m), V3A_R16((m) + 16), V3A_R16((m) + 32), V3A_R16((m) + 48)
static const uint8_t V3A_EXPAND[256 * 8] = {V3A_R64(0), V3A_R64(64), V3A_R64(128), V3A_R64(192)};

/* All ones in the lanes whose bit of m8 (8 bits) is set. */
V3A_TARGET static inline __m256i v3a_mask(uint32_t m8) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)(m8 & 255)), bit), bit);
}

/* One renormalisation of the active lanes (on) of one 8-lane vector: lanes below 2^16 take the next
 * words in lane order. Returns the new word pointer (at least 16 bytes must be readable at wp). */
V3A_TARGET static inline const uint8_t *v3a_renorm(__m256i *x, __m256i on, const uint8_t *wp) {
    const __m256i need = _mm256_and_si256(on, _mm256_cmpeq_epi32(_mm256_srli_epi32(*x, 16), _mm256_setzero_si256()));
    const unsigned m = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(need));
    const __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)wp));
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(V3A_EXPAND + 8 * m)));
    *x = _mm256_blendv_epi8(*x, _mm256_or_si256(_mm256_slli_epi32(*x, 16), _mm256_permutevar8x32_epi32(words, idx)), need);
    return wp + 2 * _mm_popcnt_u32(m);
}

/* The 32 lanes of v (four vectors) moved up one lane into out: lane 0 takes `first`. */
V3A_TARGET static inline void v3a_up(__m256i out[4], const __m256i v[4], __m256i first) {
    const __m256i r1 = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
    __m256i rot[4];
    for (int q = 0; q < 4; q++) rot[q] = _mm256_permutevar8x32_epi32(v[q], r1);
    out[0] = _mm256_blend_epi32(rot[0], first, 1);
    for (int q = 1; q < 4; q++) out[q] = _mm256_blend_epi32(rot[q], rot[q - 1], 1);
}

/* Lane 31 of row t - w + 64 of X (lane 0's row above at step t + 1), 0 before lane 31 has started. */
static inline int32_t v3a_above(const int32_t *X, int64_t t, int64_t w) {
    const int64_t r = t - w + 2 * V3_LANES;
    return r >= 2 * (V3_LANES - 1) ? X[r * V3_LANES + V3_LANES - 1] : 0;
}

/* 2 err(left) + 2 err(above) + err(above-left) + err(above-right), pads 0 (m0, mW: column 0, W - 1) */
V3A_TARGET static inline __m256i v3a_score(__m256i l, __m256i u1, __m256i u2, __m256i u3, __m256i m0, __m256i mW) {
    const __m256i left = _mm256_andnot_si256(m0, _mm256_add_epi32(_mm256_slli_epi32(l, 1), u3));
    return _mm256_add_epi32(_mm256_add_epi32(left, _mm256_slli_epi32(u2, 1)), _mm256_andnot_si256(mW, u1));
}

V3A_TARGET static inline __m256i v3a_clamp(__m256i x, __m256i lo, __m256i hi) { return _mm256_min_epi32(_mm256_max_epi32(x, lo), hi); }

/* Decode all steps of a plane of 32 lanes from step 0 (rows -3..-1 of the buffers zero). Returns the
 * first step not decoded (D->tend unless D->err is set). */
V3A_TARGET CSP_INLINE int64_t v3a_kernel(v3dec_t *D, const int kind, const int mode, const int cross) {
    const int64_t w = D->w, t1 = D->tend;
    const int sel = kind >= PRED_SEL, sel3 = kind == PRED_SEL3;
    int32_t *const X[5] = {D->P, D->E, D->M, D->A, D->G};
    const int32_t *X0 = D->X0;
    __m256i TA0[4]; /* the mode-0 context of activities 16 i .. 16 i + 15, in both 128-bit halves */
    for (int i = 0; i < 4; i++) TA0[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(D->Lu->act0 + 16 * i)));
    const int *ent = (const int *)&D->T->ent[0][0];
    const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1), vlo = _mm256_set1_epi32(D->lo);
    const __m256i vhi = _mm256_set1_epi32(D->hi), c16 = _mm256_set1_epi32(16);
    const __m128i sh_act = _mm_cvtsi32_si128(1 + D->ash), sh_lvl = _mm_cvtsi32_si128(D->lsh);
    /* per array (P, E, M, A, G) and vector: step t - 1's values (l), moved up one lane (u1) */
    __m256i L[5][4], U1[5][4], Bz[4], xs[4];
    __m256i ring[4][5][4]; /* ring[t & 3][array]: step t moved up one lane */
    for (int q = 0; q < 4; q++) {
        for (int a = 0; a < 5; a++) L[a][q] = U1[a][q] = zero;
        Bz[q] = zero;
        xs[q] = _mm256_loadu_si256((const __m256i *)(D->xs + 8 * q));
    }
    for (int i = 0; i < 4; i++)
        for (int a = 0; a < 5; a++)
            for (int q = 0; q < 4; q++) ring[i][a][q] = zero;
    v3masks_t MK;
    if (v3_make_masks(&MK, D)) return 0;
    int64_t tw = 0;
    v3words_t WS;
    v3_words_begin(&WS, D);
    int bad = 0;
    int64_t t = 0;
    for (; t < t1; t++) {
        if (v3_words_guard(&WS)) { D->err = CSP_E_DATA; break; }
        const uint8_t *wp = WS.wp;
        const int64_t off = t * V3_LANES;
        const uint32_t on = v3_on(&MK, D, t), m0 = MK.m0[tw] & on, mW = MK.mW[tw];
        if (++tw == w) tw = 0;
        __m256i (*u2)[4] = ring[(t - 2) & 3], (*u3)[4] = ring[(t - 3) & 3];
        __m256i rotBz[4], onv[4], p[4], pm[4], pa[4], pg[4], x1[4], nb[4], bm[4], bits[4];
        {
            const __m256i r1 = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
            v3a_up(rotBz, Bz, _mm256_permutevar8x32_epi32(Bz[3], r1)); /* lane 0 takes lane 31 */
        }
        /* phase A: prediction, context and token of every lane */
        for (int q = 0; q < 4; q++) {
            const __m256i m0v = v3a_mask(m0 >> 8 * q), mWv = v3a_mask(mW >> 8 * q);
            onv[q] = v3a_mask(on >> 8 * q);
            /* version 1's pads: column -1 of row y is (y-1, 0), column W of row y-1 is (y-1, W-1); the
             * above-left pad of column 0 is (y-2, 0), the previous lane's Bz */
            const __m256i b = u2[0][q];
            const __m256i a = _mm256_blendv_epi8(L[0][q], b, m0v);
            const __m256i c = _mm256_blendv_epi8(u3[0][q], rotBz[q], m0v);
            const __m256i d = _mm256_blendv_epi8(U1[0][q], b, mWv);
            Bz[q] = _mm256_blendv_epi8(Bz[q], b, m0v);
            __m256i act = _mm256_add_epi32(_mm256_abs_epi32(_mm256_sub_epi32(b, c)), _mm256_abs_epi32(_mm256_sub_epi32(b, d)));
            act = _mm256_add_epi32(act, _mm256_add_epi32(u2[1][q], _mm256_andnot_si256(mWv, U1[1][q])));
            if (cross) act = _mm256_add_epi32(act, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(X0 + off + 8 * q)), 1));
            act = _mm256_add_epi32(act, _mm256_abs_epi32(_mm256_sub_epi32(a, c)));
            act = _mm256_add_epi32(act, _mm256_andnot_si256(m0v, _mm256_add_epi32(_mm256_slli_epi32(L[1][q], 1), u3[1][q])));
            act = _mm256_min_epu32(_mm256_srl_epi32(act, sh_act), _mm256_set1_epi32(63));
            const __m256i abc = _mm256_sub_epi32(_mm256_add_epi32(a, b), c);
            pm[q] = _mm256_max_epi32(_mm256_min_epi32(a, b), _mm256_min_epi32(_mm256_max_epi32(a, b), abc)); /* MED */
            pa[q] = pg[q] = zero;
            if (kind == 1 || sel) {
                __m256i s4 = _mm256_sub_epi32(_mm256_slli_epi32(_mm256_add_epi32(a, b), 1), c);
                s4 = _mm256_srai_epi32(_mm256_add_epi32(s4, _mm256_add_epi32(d, _mm256_set1_epi32(2))), 2);
                pa[q] = v3a_clamp(s4, vlo, vhi);
            }
            if (kind == 0) p[q] = pm[q];
            else if (kind == 1) p[q] = pa[q];
            else if (kind == 2) p[q] = _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(a, b), one), 1);
            else {
                const __m256i sm = v3a_score(L[2][q], U1[2][q], u2[2][q], u3[2][q], m0v, mWv);
                const __m256i sa = v3a_score(L[3][q], U1[3][q], u2[3][q], u3[3][q], m0v, mWv);
                p[q] = _mm256_blendv_epi8(pa[q], pm[q], _mm256_cmpgt_epi32(_mm256_add_epi32(sa, one), sm)); /* sm <= sa */
                if (sel3) {
                    pg[q] = v3a_clamp(abc, vlo, vhi);
                    const __m256i sg = v3a_score(L[4][q], U1[4][q], u2[4][q], u3[4][q], m0v, mWv);
                    p[q] = _mm256_blendv_epi8(p[q], pg[q], _mm256_cmpgt_epi32(_mm256_min_epi32(sm, sa), sg));
                }
            }
            /* the context without table gathers (slow on AMD's Zen 2/3): mode 0 by byte shuffles of the
             * activity table (16 entries each), mode 1 as min(act, 4) * NLVL + bitlen(min(level, 16)) */
            __m256i ctx;
            if (mode == 0) {
                const __m256i hi4 = _mm256_srli_epi32(act, 4); /* act < 64: which 16-entry table */
                __m256i r = _mm256_shuffle_epi8(TA0[0], act);
                r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(TA0[1], act), _mm256_cmpeq_epi32(hi4, one));
                r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(TA0[2], act), _mm256_cmpeq_epi32(hi4, _mm256_set1_epi32(2)));
                r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(TA0[3], act), _mm256_cmpeq_epi32(hi4, _mm256_set1_epi32(3)));
                ctx = _mm256_and_si256(r, _mm256_set1_epi32(255));
            } else {
                const __m256i lv = _mm256_min_epi32(_mm256_srl_epi32(_mm256_max_epi32(p[q], zero), sh_lvl), c16);
                const __m256i e = _mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(lv)), 23); /* 127 + bitlen - 1 */
                const __m256i lc = _mm256_max_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(126)), zero);
                const __m256i ac = _mm256_min_epu32(act, _mm256_set1_epi32(4));
                ctx = _mm256_add_epi32(_mm256_mullo_epi32(ac, _mm256_set1_epi32(NLVL)), lc);
            }
            /* token: (ctx << 11) | (x & 2047) -> symbol | (slot - start) << 7 | freq << 19 */
            const __m256i idx = _mm256_or_si256(_mm256_slli_epi32(ctx, PROB_BITS), _mm256_and_si256(xs[q], _mm256_set1_epi32(TOTAL - 1)));
            const __m256i en = _mm256_i32gather_epi32(ent, idx, 4);
            const __m256i s = _mm256_and_si256(en, _mm256_set1_epi32(0x7F));
            x1[q] = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_srli_epi32(en, 19), _mm256_srli_epi32(xs[q], PROB_BITS)),
                                     _mm256_and_si256(_mm256_srli_epi32(en, 7), _mm256_set1_epi32(0xFFF)));
            /* TOK_NB and the token's base bits: s < 16: 0 and s; else (s - 16) / 4 + 2 and 4 | (s - 16) % 4 */
            const __m256i big = _mm256_cmpgt_epi32(s, _mm256_set1_epi32(15)), s16 = _mm256_sub_epi32(s, c16);
            nb[q] = _mm256_and_si256(big, _mm256_add_epi32(_mm256_srli_epi32(s16, 2), _mm256_set1_epi32(2)));
            bm[q] = _mm256_blendv_epi8(s, _mm256_or_si256(_mm256_and_si256(s16, _mm256_set1_epi32(3)), _mm256_set1_epi32(4)), big);
        }
        for (int q = 0; q < 4; q++) wp = v3a_renorm(&x1[q], onv[q], wp);
        /* phase B: raw bits */
        for (int q = 0; q < 4; q++) {
            bits[q] = _mm256_and_si256(x1[q], _mm256_sub_epi32(_mm256_sllv_epi32(one, nb[q]), one));
            x1[q] = _mm256_srlv_epi32(x1[q], nb[q]);
        }
        for (int q = 0; q < 4; q++) wp = v3a_renorm(&x1[q], onv[q], wp);
        WS.wp = wp;
        __m256i badv = zero;
        for (int q = 0; q < 4; q++) {
            xs[q] = _mm256_blendv_epi8(xs[q], x1[q], onv[q]);
            const __m256i u = _mm256_or_si256(_mm256_sllv_epi32(bm[q], nb[q]), bits[q]);
            const __m256i e = _mm256_xor_si256(_mm256_srli_epi32(u, 1), _mm256_sub_epi32(zero, _mm256_and_si256(u, one)));
            const __m256i v = _mm256_add_epi32(p[q], e);
            badv = _mm256_or_si256(badv, _mm256_and_si256(onv[q], _mm256_or_si256(_mm256_cmpgt_epi32(vlo, v), _mm256_cmpgt_epi32(v, vhi))));
            const int64_t o = off + 8 * q;
            L[0][q] = v; L[1][q] = _mm256_abs_epi32(e);
            _mm256_storeu_si256((__m256i *)(X[0] + o), v);
            _mm256_storeu_si256((__m256i *)(X[1] + o), L[1][q]);
            if (sel) {
                L[2][q] = _mm256_abs_epi32(_mm256_sub_epi32(v, pm[q]));
                L[3][q] = _mm256_abs_epi32(_mm256_sub_epi32(v, pa[q]));
                _mm256_storeu_si256((__m256i *)(X[2] + o), L[2][q]);
                _mm256_storeu_si256((__m256i *)(X[3] + o), L[3][q]);
                if (sel3) {
                    L[4][q] = _mm256_abs_epi32(_mm256_sub_epi32(v, pg[q]));
                    _mm256_storeu_si256((__m256i *)(X[4] + o), L[4][q]);
                }
            }
        }
        if (!_mm256_testz_si256(badv, badv)) { bad = 1; break; }
        /* the new vectors moved up one lane: the next step's above-right neighbours (u1), then its above
         * and above-left ones (ring) */
        const int na = sel3 ? 5 : sel ? 4 : 2;
        for (int a = 0; a < na; a++) {
            v3a_up(ring[t & 3][a], L[a], _mm256_set1_epi32(v3a_above(X[a], t, w)));
            for (int q = 0; q < 4; q++) U1[a][q] = ring[t & 3][a][q];
        }
    }
    free(MK.m0);
    for (int q = 0; q < 4; q++) _mm256_storeu_si256((__m256i *)(D->xs + 8 * q), xs[q]);
    if (bad) D->err = CSP_E_RANGE;
    v3_words_end(&WS, D);
    return t;
}

#define V3A_K(k, m, x) case (k) * 4 + (m) * 2 + (x): return v3a_kernel(D, k, m, x);

/* Decode a whole plane of 32 lanes into D's int32 skew buffers; returns the first step not decoded. */
V3A_TARGET static int64_t v3a_run(v3dec_t *D) {
    switch (D->kind * 4 + D->mode * 2 + (D->X0 != NULL)) {
        CSP_FOR_VARIANTS(V3A_K)
        default: D->err = CSP_E_HEADER; return 0;
    }
}

/* In-place transpose of an 8 x 8 block of int32 (r[i] becomes column i). */
V3A_TARGET static inline void v3a_transpose8(__m256i r[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) { t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]); t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]); }
    for (int i = 0; i < 8; i += 4) { /* u[i + j]: columns j and j + 4 of rows i..i + 3 */
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]); u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]); u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2x128_si256(u[j], u[j + 4], 0x20);
        r[j + 4] = _mm256_permute2x128_si256(u[j], u[j + 4], 0x31);
    }
}

/* v3_output3 for uint8 tiles of 32 lanes on the AVX2 path: per step row and group of 8 lanes, the
 * inverse RCT on the three planes' vectors (checking the active lanes' range) and one pixel dword each
 * (R | G << 8 | B << 16); blocks of 8 steps x 8 lanes are transposed, so that each vector holds 8
 * consecutive samples of one lane, squeezed to 24 bytes and stored (runs cut by a row end or by the
 * lane's first or last sample through a small buffer). The buffers must be readable up to step tend + 7. */
V3A_TARGET static int v3a_output3_u8(const int32_t *P0, int64_t SK, const int64_t *n, int64_t tend, int64_t w, int xform,
                                     uint8_t *dst) {
    const __m256i SQ = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
                                        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    const __m256i JOIN = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7), vmax = _mm256_set1_epi32(255);
    const __m256i vk = _mm256_set1_epi32(xform ? xform - 1 : 0), m1 = _mm256_set1_epi32(-1);
    __m256i over = _mm256_setzero_si256(); /* OR of the active lanes' RCT outputs */
    for (int g = 0; g < 4; g++) {
        int64_t x[8], r[8]; /* column and row index of each lane's sample at the block's first step */
        int32_t k2[8], nw[8];
        for (int i = 0; i < 8; i++) {
            const int64_t k = 8 * g + i;
            x[i] = -2 * k; r[i] = 0; k2[i] = (int32_t)(2 * k); nw[i] = (int32_t)(n[k] * w);
        }
        const __m256i K2 = _mm256_loadu_si256((const __m256i *)k2), NW = _mm256_loadu_si256((const __m256i *)nw);
        for (int64_t tb = 0; tb < tend; tb += 8) {
            __m256i px[8];
            for (int j = 0; j < 8; j++) {
                const int32_t *row = P0 + (tb + j) * V3_LANES + 8 * g;
                __m256i rr = _mm256_loadu_si256((const __m256i *)row);
                __m256i gg = _mm256_loadu_si256((const __m256i *)(row + SK));
                __m256i bb = _mm256_loadu_si256((const __m256i *)(row + 2 * SK));
                if (xform) {
                    const __m256i q = _mm256_sub_epi32(_mm256_set1_epi32((int)(tb + j)), K2);
                    const __m256i on = _mm256_and_si256(_mm256_cmpgt_epi32(q, m1), _mm256_cmpgt_epi32(NW, q));
                    const __m256i U = gg, V = _mm256_add_epi32(bb, _mm256_srai_epi32(_mm256_mullo_epi32(vk, gg), 2));
                    gg = _mm256_sub_epi32(rr, _mm256_srai_epi32(_mm256_add_epi32(U, V), 2));
                    rr = _mm256_add_epi32(U, gg);
                    bb = _mm256_add_epi32(V, gg);
                    over = _mm256_or_si256(over, _mm256_and_si256(on, _mm256_or_si256(_mm256_or_si256(rr, gg), bb)));
                }
                px[j] = _mm256_or_si256(_mm256_and_si256(rr, vmax),
                                        _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(gg, vmax), 8),
                                                        _mm256_slli_epi32(_mm256_and_si256(bb, vmax), 16)));
            }
            v3a_transpose8(px);
            for (int i = 0; i < 8; i++) {
                v3run_t R;
                if (!v3_lane_run(&x[i], &r[i], 8 * g + i, 8, w, n, &R)) continue;
                const __m256i z = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(px[i], SQ), JOIN);
                uint8_t *base = dst + (R.y * w + R.x0) * 3;
                if (R.lo == 0 && R.hi == 8 && R.jc == 8) { /* 8 pixels of one row: 24 bytes */
                    _mm_storeu_si128((__m128i *)base, _mm256_castsi256_si128(z));
                    _mm_storel_epi64((__m128i *)(base + 16), _mm256_extracti128_si256(z, 1));
                    continue;
                }
                uint8_t tmp[32];
                _mm256_storeu_si256((__m256i *)tmp, z);
                const int64_t b1 = R.hi < R.jc ? R.hi : R.jc, a2 = R.lo > R.jc ? R.lo : R.jc;
                if (R.lo < b1) memcpy(base + 3 * R.lo, tmp + 3 * R.lo, (size_t)(3 * (b1 - R.lo)));
                if (a2 < R.hi) memcpy(base + (V3_LANES * w - w) * 3 + 3 * a2, tmp + 3 * a2, (size_t)(3 * (R.hi - a2)));
            }
        }
    }
    return _mm256_testz_si256(over, _mm256_set1_epi32(~255)) ? CSP_OK : CSP_E_RANGE;
}
