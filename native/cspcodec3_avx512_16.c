/* AVX-512 decoder of bitstream version 3 for 8-bit tiles: the pixel half of a step in 16-bit lanes.
 *
 * Included twice by cspcodec3.c after cspcodec3_avx512.c, with V3H(name) giving each variant's function
 * names and V3H_TARGET its instruction sets: V3H_VBMI = 1 for CPUs with AVX-512 VBMI and VBMI2 (Ice Lake
 * and later, Zen 4: byte permutations, word expand-loads), V3H_VBMI = 0 for AVX-512 F/BW/VL/DQ/CD only
 * (Skylake-SP, Cascade Lake: word permutations, dword expands, the token tables computed). Both decode
 * the same samples; the tests run both against the scalar path. It decodes exactly what v3_avx512_kernel decodes
 * (same step order, same words, same errors), with one difference of representation: the skew buffers
 * are int16 and everything computed from pixels (neighbours, activity, predictions, SEL/SEL3 scores,
 * |errors|, the context) is one vector of 32 int16 lanes per step instead of two of 16 int32 lanes.
 * Only the rANS half (the two state vectors, the table gathers, the renormalisations and the raw bits)
 * stays 32-bit. Every quantity of an 8-bit tile fits 16 bits: plane values lie in [-510, 510], so the
 * |errors| are <= 1020, the SEL/SEL3 scores <= 6 * 1020 and the activity sum <= 12.5 * 1020.
 *
 * Malformed input: the residual code u of a lane can exceed 16 bits only in a corrupt stream. It is
 * narrowed with unsigned saturation (u >= 2^16 becomes e = -2^15), so a sample that is out of range in
 * 32-bit arithmetic is out of range here too, and the step fails exactly where the 32-bit kernel and
 * the scalar path fail (CSP_E_RANGE); nothing decoded after it is used (tests/test_codec_v3_decoder16.py
 * forges such streams; a truncating narrowing fails it). The sample p + e is formed with a saturating
 * add; as |p| <= 510, a wrapping add could not land in range either. The values of idle lanes
 * (ramp-up and ramp-down) are never stored and only reach other idle lanes.
 */

#ifndef V3H_TYPES
#define V3H_TYPES
/* Pixel-domain state of a plane: step t - 1's values, |e|, |x - MED|, |x - AVG4|, |x - GRAD| in the own
 * lane (l) and moved up one lane (u1), and the column-0 pad Bz; 32 int16 lanes each. */
typedef struct {
    __m512i Pl, Pu1, El, Eu1, Ml, Mu1, Al, Au1, Gl, Gu1, Bz;
} v3h_t;

/* Constants of a plane. */
typedef struct {
    __m512i T_act0, T_act0h, T_act1, T_act1h, T_lvl, T_nb0, T_nb1, T_bm0, T_bm1, lo, hi, span, rot, up;
    __m128i sh_act, sh_lvl;
    const int *ent;
} v3hk_t;

#define V3H_EVEN 0x5555555555555555ull /* the low byte of each 16-bit lane */
#endif

/* The instructions the two variants do differently: table look-ups of 16-bit lanes (activity < 64,
 * level < 32) and the output pass's squeeze of 16 pixel dwords to 48 bytes. */
#if V3H_VBMI
#define V3H_LUT64(i, lo, hi) _mm512_maskz_permutexvar_epi8(V3H_EVEN, (i), (lo))
#define V3H_LUT32(i, t) _mm512_maskz_permutexvar_epi8(V3H_EVEN, (i), (t))
#define V3H_SQUEEZE(px, PERM) _mm512_permutexvar_epi8((PERM), (px))
#else
#define V3H_LUT64(i, lo, hi) _mm512_permutex2var_epi16((lo), (i), (hi))
#define V3H_LUT32(i, t) _mm512_permutexvar_epi16((i), (t))
#define V3H_SQUEEZE(px, PERM) \
    _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 3, 7, 11, 15), _mm512_shuffle_epi8((px), (PERM)))
#endif

/* X's row t (32 lanes) moved up one lane: lane 0 takes lane 31 of row t - w + 64 (its row above), or
 * 0 while that row is before lane 31's first sample (zrow). */
V3H_TARGET static inline __m512i V3H(up)(const int16_t *X, int64_t t, int64_t w, __m512i cur, __m512i idx,
                                               const int16_t *zrow) {
    const int64_t r = t - w + 2 * V3_LANES;
    const int16_t *src = r >= 2 * (V3_LANES - 1) ? X + r * V3_LANES : zrow;
    return _mm512_permutex2var_epi16(cur, idx, _mm512_loadu_si512((const void *)src));
}

/* 2 err(left) + 2 err(above) + err(above-left) + err(above-right), pads 0 */
V3H_TARGET static inline __m512i V3H(score)(__m512i l, __m512i u1, __m512i u2, __m512i u3, __mmask32 n0, __mmask32 nW) {
    const __m512i u2x2 = _mm512_slli_epi16(u2, 1);
    return _mm512_add_epi16(_mm512_maskz_add_epi16(n0, _mm512_slli_epi16(l, 1), u3), _mm512_mask_add_epi16(u2x2, nW, u2x2, u1));
}

/* One renormalisation of the active lanes of both state vectors: lanes below 2^16 take the next words
 * in lane order (lanes 0-15, then 16-31: one expand-load of up to 32 words). Returns the new word pointer. */
V3H_TARGET static inline const uint8_t *V3H(renorm)(__m512i x[2], const __mmask16 on[2], const uint8_t *wp) {
    const __m512i L = _mm512_set1_epi32((int)RANS_L);
    const __mmask16 ma = _mm512_mask_cmplt_epu32_mask(on[0], x[0], L), mb = _mm512_mask_cmplt_epu32_mask(on[1], x[1], L);
#if V3H_VBMI
    const __mmask32 m = _mm512_kunpackw((__mmask32)mb, (__mmask32)ma);
    const __m512i wd = _mm512_maskz_expandloadu_epi16(m, (const void *)wp);
    x[0] = _mm512_mask_or_epi32(x[0], ma, _mm512_slli_epi32(x[0], 16), _mm512_cvtepu16_epi32(_mm512_castsi512_si256(wd)));
    x[1] = _mm512_mask_or_epi32(x[1], mb, _mm512_slli_epi32(x[1], 16), _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(wd, 1)));
    return wp + 2 * _mm_popcnt_u32((unsigned)m);
#else /* AVX-512F: the 16 next words widened, then a dword expand, per vector */
    const __m512i wa = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)wp));
    x[0] = _mm512_mask_or_epi32(x[0], ma, _mm512_slli_epi32(x[0], 16), _mm512_maskz_expand_epi32(ma, wa));
    wp += 2 * _mm_popcnt_u32((unsigned)ma);
    const __m512i wb = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)wp));
    x[1] = _mm512_mask_or_epi32(x[1], mb, _mm512_slli_epi32(x[1], 16), _mm512_maskz_expand_epi32(mb, wb));
    return wp + 2 * _mm_popcnt_u32((unsigned)mb);
#endif
}

/* The plane's constants. */
V3H_TARGET static void V3H(constants)(v3hk_t *K, const v3dec_t *D) {
    uint8_t t_act0[64], t_act1[64], t_lvl[64], t_nb[128], t_bm[128];
    int16_t rot[32], up[32];
    for (int i = 0; i < 64; i++) { t_act0[i] = D->Lu->act0[i]; t_act1[i] = D->Lu->act1[i]; t_lvl[i] = D->Lu->lvl[i & 31]; }
    for (int s = 0; s < 128; s++) {
        t_nb[s] = s < NTOK ? TOK_NB[s] : 0;
        t_bm[s] = (uint8_t)(s < 16 ? s : (s < NTOK ? (4 | ((s - 16) & 3)) : 0));
    }
    for (int i = 0; i < 32; i++) {
        rot[i] = (int16_t)((i + 31) & 31);      /* lane i takes lane i - 1, lane 0 lane 31 */
        up[i] = (int16_t)(i ? i - 1 : 32 + 31); /* lane 0 takes lane 31 of the second operand */
    }
#if V3H_VBMI
    K->T_act0 = _mm512_loadu_si512(t_act0); K->T_act1 = _mm512_loadu_si512(t_act1); K->T_lvl = _mm512_loadu_si512(t_lvl);
    K->T_act0h = K->T_act1h = _mm512_setzero_si512();
#else /* word tables: activity 0-31 and 32-63, level 0-31 */
    K->T_act0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)t_act0));
    K->T_act0h = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(t_act0 + 32)));
    K->T_act1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)t_act1));
    K->T_act1h = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(t_act1 + 32)));
    K->T_lvl = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)t_lvl));
#endif
    K->T_nb0 = _mm512_loadu_si512(t_nb); K->T_nb1 = _mm512_loadu_si512(t_nb + 64);
    K->T_bm0 = _mm512_loadu_si512(t_bm); K->T_bm1 = _mm512_loadu_si512(t_bm + 64);
    K->lo = _mm512_set1_epi16((short)D->lo); K->hi = _mm512_set1_epi16((short)D->hi);
    K->span = _mm512_set1_epi16((short)(D->hi - D->lo));
    K->rot = _mm512_loadu_si512(rot); K->up = _mm512_loadu_si512(up);
    K->sh_act = _mm_cvtsi32_si128(1 + D->ash); K->sh_lvl = _mm_cvtsi32_si128(D->lsh);
    K->ent = (const int *)&D->T->ent[0][0];
}

/* Decode all steps of a plane whose 32 lanes all exist (W >= 64), from step 0. Returns the first step
 * not decoded (D->tend unless D->err is set). */
V3H_TARGET CSP_INLINE int64_t V3H(kernel)(v3dec_t *D, const int kind, const int mode, const int cross) {
    const int64_t w = D->w, t1 = D->tend;
    const int sel = kind >= PRED_SEL, sel3 = kind == PRED_SEL3;
    int16_t *P = D->P16, *E = D->E16, *M = D->M16, *A = D->A16, *G = D->G16;
    const int16_t *X0 = D->X016;
    v3hk_t K;
    V3H(constants)(&K, D);
    const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1), one16 = _mm512_set1_epi16(1);
    /* step 0: every history is zero (rows -3..-1 and lane 31's rows before its start) */
    int16_t zrow[V3_LANES] __attribute__((aligned(64)));
    memset(zrow, 0, sizeof zrow);
    v3h_t V;
    V.Pl = V.Pu1 = V.El = V.Eu1 = V.Ml = V.Mu1 = V.Al = V.Au1 = V.Gl = V.Gu1 = V.Bz = zero;
    __m512i ring[4][5]; /* ring[t & 3][array]: array 0..4 = P, E, M, A, G of step t moved up one lane */
    for (int i = 0; i < 4; i++)
        for (int a = 0; a < 5; a++) ring[i][a] = zero;
    __m512i xs[2] = {_mm512_loadu_si512(D->xs), _mm512_loadu_si512(D->xs + 16)};
    v3masks_t MK;
    if (v3_make_masks(&MK, D)) return 0;
    int64_t tw = 0;
    v3words_t WS;
    v3_words_begin(&WS, D);
    int bad = 0;
    int64_t t = 0, pfo = 0;
    for (; t < t1; t++) {
        if (v3_words_guard(&WS)) { D->err = CSP_E_DATA; break; }
        const uint8_t *wp = WS.wp;
        const int64_t off = t * V3_LANES;
        if (pfo < D->pfn) { /* two lines a step: an 8-bit RGB tile has 1.5 lines of output per step */
            __builtin_prefetch(D->pf + pfo, 1, 3);
            __builtin_prefetch(D->pf + (pfo + 64 < D->pfn ? pfo + 64 : D->pfn - 1), 1, 3);
            pfo += 128;
        }
        const uint32_t on = v3_on(&MK, D, t), m0u = MK.m0[tw] & on, mWu = MK.mW[tw];
        if (++tw == w) tw = 0;
        const __mmask32 m0 = (__mmask32)m0u, mW = (__mmask32)mWu, n0 = ~m0, nW = ~mW;
        const __m512i *u2 = ring[(t - 2) & 3], *u3 = ring[(t - 3) & 3];
        /* phase A, pixel half (all 32 lanes): neighbours with version 1's pads (column -1 of row y is
         * (y-1, 0), column W of row y-1 is (y-1, W-1), the above-left pad of column 0 is (y-2, 0): the
         * previous lane's Bz) */
        const __m512i rot = _mm512_permutexvar_epi16(K.rot, V.Bz);
        const __m512i b = u2[0];
        const __m512i a = _mm512_mask_mov_epi16(V.Pl, m0, b);
        const __m512i c = _mm512_mask_mov_epi16(u3[0], m0, rot);
        const __m512i d = _mm512_mask_mov_epi16(V.Pu1, mW, b);
        V.Bz = _mm512_mask_mov_epi16(V.Bz, m0, b);
        __m512i rest = _mm512_add_epi16(_mm512_abs_epi16(_mm512_sub_epi16(b, c)), _mm512_abs_epi16(_mm512_sub_epi16(b, d)));
        rest = _mm512_add_epi16(rest, _mm512_mask_add_epi16(u2[1], nW, u2[1], V.Eu1));
        if (cross) rest = _mm512_add_epi16(rest, _mm512_slli_epi16(_mm512_loadu_si512((const void *)(X0 + off)), 1));
        __m512i act = _mm512_add_epi16(_mm512_abs_epi16(_mm512_sub_epi16(a, c)),
                                       _mm512_maskz_add_epi16(n0, _mm512_slli_epi16(V.El, 1), u3[1]));
        act = _mm512_min_epu16(_mm512_srl_epi16(_mm512_add_epi16(act, rest), K.sh_act), _mm512_set1_epi16(63));
        const __m512i mx = _mm512_max_epi16(a, b), mn = _mm512_min_epi16(a, b);
        const __m512i abc = _mm512_sub_epi16(_mm512_add_epi16(a, b), c);
        const __m512i pm = _mm512_max_epi16(mn, _mm512_min_epi16(mx, abc)); /* MED */
        __m512i pa = zero, pg = zero, p;
        if (kind == 1 || sel) {
            __m512i s4 = _mm512_sub_epi16(_mm512_slli_epi16(_mm512_add_epi16(a, b), 1), c);
            s4 = _mm512_srai_epi16(_mm512_add_epi16(s4, _mm512_add_epi16(d, _mm512_set1_epi16(2))), 2);
            pa = _mm512_min_epi16(_mm512_max_epi16(s4, K.lo), K.hi);
        }
        if (kind == 0) p = pm;
        else if (kind == 1) p = pa;
        else if (kind == 2) p = _mm512_srai_epi16(_mm512_add_epi16(_mm512_add_epi16(a, b), one16), 1);
        else {
            const __m512i sm = V3H(score)(V.Ml, V.Mu1, u2[2], u3[2], n0, nW);
            const __m512i sa = V3H(score)(V.Al, V.Au1, u2[3], u3[3], n0, nW);
            p = _mm512_mask_mov_epi16(pa, _mm512_cmple_epi16_mask(sm, sa), pm);
            if (sel3) {
                pg = _mm512_min_epi16(_mm512_max_epi16(abc, K.lo), K.hi);
                const __m512i sg = V3H(score)(V.Gl, V.Gu1, u2[4], u3[4], n0, nW);
                p = _mm512_mask_mov_epi16(p, _mm512_cmplt_epi16_mask(sg, _mm512_min_epi16(sm, sa)), pg);
            }
        }
        __m512i ctx; /* byte tables indexed by the low byte of each lane (activity < 64, level < 32) */
        if (mode == 0) ctx = V3H_LUT64(act, K.T_act0, K.T_act0h);
        else {
            const __m512i lv = _mm512_min_epi16(_mm512_srl_epi16(_mm512_max_epi16(p, zero), K.sh_lvl), _mm512_set1_epi16(31));
            ctx = _mm512_add_epi16(V3H_LUT64(act, K.T_act1, K.T_act1h), V3H_LUT32(lv, K.T_lvl));
        }
        /* phase A, rANS half (lanes 0-15, 16-31): token (ctx << 11) | (x & 2047) -> symbol | (slot - start)
         * << 7 | freq << 19, then the renormalisations in lane order */
        __m512i x1[2], nb[2], bm[2], bits[2];
        const __mmask16 onh[2] = {(__mmask16)on, (__mmask16)(on >> 16)};
        for (int h = 0; h < 2; h++) {
            const __m512i cx = _mm512_cvtepu16_epi32(h ? _mm512_extracti64x4_epi64(ctx, 1) : _mm512_castsi512_si256(ctx));
            const __m512i idx = _mm512_ternarylogic_epi32(_mm512_slli_epi32(cx, PROB_BITS), xs[h], _mm512_set1_epi32(TOTAL - 1), 0xF8);
            const __m512i en = _mm512_i32gather_epi32(idx, K.ent, 4);
            const __m512i s = _mm512_and_si512(en, _mm512_set1_epi32(0x7F));
            x1[h] = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_srli_epi32(en, 19), _mm512_srli_epi32(xs[h], PROB_BITS)),
                                     _mm512_and_si512(_mm512_srli_epi32(en, 7), _mm512_set1_epi32(0xFFF)));
#if V3H_VBMI
            nb[h] = _mm512_permutex2var_epi8(K.T_nb0, s, K.T_nb1);
            bm[h] = _mm512_permutex2var_epi8(K.T_bm0, s, K.T_bm1);
#else /* TOK_NB and the token's base bits computed: s < 16: 0 and s; else (s - 16) / 4 + 2 and 4 | (s - 16) % 4 */
            const __mmask16 big = _mm512_cmpge_epu32_mask(s, _mm512_set1_epi32(16));
            const __m512i s16 = _mm512_sub_epi32(s, _mm512_set1_epi32(16));
            nb[h] = _mm512_maskz_add_epi32(big, _mm512_srli_epi32(s16, 2), _mm512_set1_epi32(2));
            bm[h] = _mm512_mask_mov_epi32(s, big, _mm512_or_si512(_mm512_and_si512(s16, _mm512_set1_epi32(3)), _mm512_set1_epi32(4)));
#endif
        }
        wp = V3H(renorm)(x1, onh, wp);
        /* phase B: raw bits */
        for (int h = 0; h < 2; h++) {
            bits[h] = _mm512_and_si512(x1[h], _mm512_sub_epi32(_mm512_sllv_epi32(one, nb[h]), one));
            x1[h] = _mm512_srlv_epi32(x1[h], nb[h]);
        }
        wp = V3H(renorm)(x1, onh, wp);
        WS.wp = wp;
        __m512i u32[2];
        for (int h = 0; h < 2; h++) {
            xs[h] = _mm512_mask_mov_epi32(xs[h], onh[h], x1[h]);
            u32[h] = _mm512_or_si512(_mm512_sllv_epi32(bm[h], nb[h]), bits[h]); /* < 2^19 */
        }
        /* residual and sample in 16 bits (saturating: see the header); the pack interleaves the two
         * vectors per 128 bits, the quadword permutation restores the lane order */
        const __m512i u = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), _mm512_packus_epi32(u32[0], u32[1]));
        const __m512i e = _mm512_xor_si512(_mm512_srli_epi16(u, 1), _mm512_sub_epi16(zero, _mm512_and_si512(u, one16)));
        const __m512i v = _mm512_adds_epi16(p, e);
        bad = _mm512_mask_cmpgt_epu16_mask((__mmask32)on, _mm512_sub_epi16(v, K.lo), K.span) != 0;
        const __m512i ae = _mm512_abs_epi16(e);
        _mm512_mask_storeu_epi16((void *)(P + off), (__mmask32)on, v);
        _mm512_mask_storeu_epi16((void *)(E + off), (__mmask32)on, ae);
        V.Pl = v; V.El = ae;
        if (sel) {
            V.Ml = _mm512_abs_epi16(_mm512_sub_epi16(v, pm));
            V.Al = _mm512_abs_epi16(_mm512_sub_epi16(v, pa));
            _mm512_mask_storeu_epi16((void *)(M + off), (__mmask32)on, V.Ml);
            _mm512_mask_storeu_epi16((void *)(A + off), (__mmask32)on, V.Al);
            if (sel3) {
                V.Gl = _mm512_abs_epi16(_mm512_sub_epi16(v, pg));
                _mm512_mask_storeu_epi16((void *)(G + off), (__mmask32)on, V.Gl);
            }
        }
        if (bad) break;
        /* the new vectors moved up one lane: the next step's above-right neighbours (u1), then its
         * above and above-left ones (ring) */
        __m512i *rg = ring[t & 3];
        rg[0] = V.Pu1 = V3H(up)(P, t, w, V.Pl, K.up, zrow);
        rg[1] = V.Eu1 = V3H(up)(E, t, w, V.El, K.up, zrow);
        if (sel) {
            rg[2] = V.Mu1 = V3H(up)(M, t, w, V.Ml, K.up, zrow);
            rg[3] = V.Au1 = V3H(up)(A, t, w, V.Al, K.up, zrow);
            if (sel3) rg[4] = V.Gu1 = V3H(up)(G, t, w, V.Gl, K.up, zrow);
        }
    }
    free(MK.m0);
    _mm512_storeu_si512((void *)D->xs, xs[0]);
    _mm512_storeu_si512((void *)(D->xs + 16), xs[1]);
    if (bad) D->err = CSP_E_RANGE;
    v3_words_end(&WS, D);
    return t;
}

#define V3H_K(k, m, x) case (k) * 4 + (m) * 2 + (x): return V3H(kernel)(D, k, m, x);

/* Decode a whole 8-bit plane of 32 lanes into D's int16 skew buffers; returns the first step not decoded. */
V3H_TARGET static int64_t V3H(run)(v3dec_t *D) {
    switch (D->kind * 4 + D->mode * 2 + (D->X016 != NULL)) {
        CSP_FOR_VARIANTS(V3H_K)
        default: D->err = CSP_E_HEADER; return 0;
    }
}

/* fill_entries with 16-entry stores (table building is a tenth of a tile's decoding time). */
V3H_TARGET static void V3H(fill)(uint32_t *e, uint32_t v, uint32_t f) {
    const __m512i step = _mm512_set1_epi32(16 << 7);
    __m512i cur = _mm512_add_epi32(_mm512_set1_epi32((int)v),
                                   _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 7));
    uint32_t q = 0;
    for (; q + 16 <= f; q += 16) {
        _mm512_storeu_si512((void *)(e + q), cur);
        cur = _mm512_add_epi32(cur, step);
    }
    if (q < f) _mm512_mask_storeu_epi32((void *)(e + q), (__mmask16)((1u << (f - q)) - 1), cur);
}

/* In-place transpose of a 16 x 16 block of int32 (r[i] becomes column i). */
V3H_TARGET static inline void V3H(transpose16)(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) { t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]); t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]); }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]); r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]); r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 16; i += 8)
        for (int j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0xDD);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xDD);
    }
}

/* Stores one block of an 8-bit three-channel tile: px[i] holds the pixel dwords (R | G << 8 | B << 16)
 * of 16 consecutive steps of lane 16 g + i before the transpose; x[i], r[i] are that lane's column and
 * row index at the block's first step, advanced here by 16 steps. After the transpose each vector holds
 * 16 consecutive samples of one lane (consecutive columns of one row, or the end of one row and the
 * start of the lane's next row), squeezed to 48 bytes with one byte permutation and stored with byte
 * masks; samples outside the lane's [0, n_k W) are not stored. */
V3H_TARGET static inline void V3H(store_block)(__m512i px[16], int g, int64_t x[16], int64_t r[16], const int64_t *n,
                                                    int64_t w, __m512i PERM, uint8_t *dst) {
    V3H(transpose16)(px);
    for (int i = 0; i < 16; i++) {
        v3run_t R;
        if (!v3_lane_run(&x[i], &r[i], 16 * g + i, 16, w, n, &R)) continue;
        const __m512i z = V3H_SQUEEZE(px[i], PERM);
        uint8_t *base = dst + (R.y * w + R.x0) * 3;
        const int64_t b1 = R.hi < R.jc ? R.hi : R.jc, a2 = R.lo > R.jc ? R.lo : R.jc;
        if (R.lo < b1) _mm512_mask_storeu_epi8(base, (__mmask64)(((1ull << (3 * b1)) - 1) & ~((1ull << (3 * R.lo)) - 1)), z);
        if (a2 < R.hi) _mm512_mask_storeu_epi8(base + (V3_LANES * w - w) * 3, (__mmask64)(((1ull << (3 * R.hi)) - 1) & ~((1ull << (3 * a2)) - 1)), z);
    }
}

/* Writes an 8-bit three-channel tile from the int16 skew buffers of its planes (P0, P0 + SK, P0 + 2 SK)
 * with the inverse RCT when xform > 0 (checking the result range). Per step row, the RCT runs on the
 * three planes' 32 lanes at once, and two word permutations form each lane's pixel dword
 * (R | G << 8 | B << 16) for lanes 0-15 and 16-31; blocks of 16 steps x 16 lanes are then transposed
 * and stored (store_block). The buffers must be readable up to step tend + 15. */
V3H_TARGET static int V3H(output3_u8)(const int16_t *P0, int64_t SK, const int64_t *n, int64_t tend, int64_t w,
                                           int xform, uint8_t *dst) {
    uint8_t perm[64];
#if V3H_VBMI
    uint8_t rg[64];
#endif
    int16_t lo[32], hi[32];
    int32_t k2[32], nw[32];
    for (int i = 0; i < 64; i++) {
#if V3H_VBMI
        perm[i] = (uint8_t)(i < 48 ? (i / 3) * 4 + i % 3 : 63);
#else /* per 128 bits: the 4 pixels' 12 bytes first (the dword permutation then joins the four groups) */
        perm[i] = (uint8_t)(i % 16 < 12 ? (i % 16 / 3) * 4 + i % 16 % 3 : 0x80);
#endif
#if V3H_VBMI
        rg[i] = (uint8_t)(i & 1 ? 64 + i - 1 : i); /* byte 2k: R's low byte, byte 2k + 1: G's low byte */
#endif
    }
    for (int i = 0; i < 16; i++) {
        lo[2 * i] = (int16_t)i; lo[2 * i + 1] = (int16_t)(32 + i);            /* dword i: RG(i) | B(i) << 16 */
        hi[2 * i] = (int16_t)(16 + i); hi[2 * i + 1] = (int16_t)(48 + i);
    }
    int64_t full1 = tend; /* steps [62, full1): every lane active */
    for (int k = 0; k < V3_LANES; k++) {
        k2[k] = 2 * k; nw[k] = (int32_t)(n[k] * w);
        if (n[k] * w + 2 * k < full1) full1 = n[k] * w + 2 * k;
    }
    const __m512i PERM = _mm512_loadu_si512(perm);
#if V3H_VBMI
    const __m512i RG = _mm512_loadu_si512(rg);
#endif
    const __m512i LO = _mm512_loadu_si512(lo), HI = _mm512_loadu_si512(hi);
    const __m512i K2A = _mm512_loadu_si512(k2), K2B = _mm512_loadu_si512(k2 + 16);
    const __m512i NWA = _mm512_loadu_si512(nw), NWB = _mm512_loadu_si512(nw + 16);
    const __m512i vk = _mm512_set1_epi16((short)(xform ? xform - 1 : 0));
    __m512i over = _mm512_setzero_si512(); /* OR of the active lanes' RCT outputs */
    int64_t x[V3_LANES], r[V3_LANES]; /* column and row index of each lane's sample at the block's first step */
    for (int k = 0; k < V3_LANES; k++) { x[k] = -2 * k; r[k] = 0; }
    for (int64_t tb = 0; tb < tend; tb += 16) {
        __m512i px[2][16];
        for (int j = 0; j < 16; j++) {
            const int64_t t = tb + j;
            const int16_t *row = P0 + t * V3_LANES;
            __m512i rr = _mm512_loadu_si512((const void *)row);
            __m512i gg = _mm512_loadu_si512((const void *)(row + SK));
            __m512i bb = _mm512_loadu_si512((const void *)(row + 2 * SK));
            if (xform) {
                __mmask32 on = 0xFFFFFFFFu;
                if (t < 2 * (V3_LANES - 1) || t >= full1) { /* lane k holds sample t - 2k when 0 <= t - 2k < n_k w */
                    const __m512i tv = _mm512_set1_epi32((int)t);
                    const __m512i qa = _mm512_sub_epi32(tv, K2A), qb = _mm512_sub_epi32(tv, K2B);
                    const __mmask16 a = _mm512_cmpge_epi32_mask(qa, _mm512_setzero_si512()) & _mm512_cmplt_epi32_mask(qa, NWA);
                    const __mmask16 b = _mm512_cmpge_epi32_mask(qb, _mm512_setzero_si512()) & _mm512_cmplt_epi32_mask(qb, NWB);
                    on = (__mmask32)((uint32_t)a | (uint32_t)b << 16);
                }
                const __m512i U = gg, V = _mm512_add_epi16(bb, _mm512_srai_epi16(_mm512_mullo_epi16(vk, gg), 2));
                gg = _mm512_sub_epi16(rr, _mm512_srai_epi16(_mm512_add_epi16(U, V), 2));
                rr = _mm512_add_epi16(U, gg);
                bb = _mm512_add_epi16(V, gg);
                /* a value outside [0, 255] has a bit above the low 8 set (negatives: the sign bits) */
                over = _mm512_or_si512(over, _mm512_maskz_mov_epi16(on, _mm512_ternarylogic_epi32(rr, gg, bb, 0xFE)));
            }
            /* in range, B's high byte is 0 */
#if V3H_VBMI
            const __m512i rgw = _mm512_permutex2var_epi8(rr, RG, gg);
#else
            const __m512i rgw = _mm512_or_si512(_mm512_and_si512(rr, _mm512_set1_epi16(255)), _mm512_slli_epi16(gg, 8));
#endif
            px[0][j] = _mm512_permutex2var_epi16(rgw, LO, bb);
            px[1][j] = _mm512_permutex2var_epi16(rgw, HI, bb);
        }
        for (int g = 0; g < 2; g++) V3H(store_block)(px[g], g, x + 16 * g, r + 16 * g, n, w, PERM, dst);
    }
    return _mm512_test_epi16_mask(over, _mm512_set1_epi16(~255)) ? CSP_E_RANGE : CSP_OK;
}

#undef V3H_LUT64
#undef V3H_LUT32
#undef V3H_SQUEEZE
