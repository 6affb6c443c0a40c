/* AVX-512 decoder of bitstream version 3 for the steady state of a plane (all sixteen lanes active).
 *
 * Included by cspcodec3.c; compiled for AVX-512 F/BW/VL/VBMI/VBMI2 with target attributes and called only
 * after a run-time CPU check. One loop iteration decodes step t, i.e. one sample of each of the sixteen
 * lanes, in exactly the order of the scalar path (phase A: tokens of lanes 0..15, each renormalising
 * from the shared word stream in lane order, which is what a masked expand-load does; phase B: raw
 * bits, likewise). The neighbours come from registers: a lane's left neighbour is its own result of
 * step t - 1, and the row above is the previous three step vectors moved up one lane (lane 0 takes lane
 * 15's previous row from the skew buffer). Results are stored to the skew buffers, so the scalar path
 * can continue where this loop stops (the end of the steady state).
 */
#include <immintrin.h>

#define V3_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vbmi2,popcnt")))

/* Vector v (step s of skew buffer X) moved up one lane; lane 0 gets lane 15 of step s - w + 32 (the same
 * columns one row up, for lane 0). */
V3_TARGET static inline __m512i v3_up(const int32_t *X, int64_t s, int64_t w, __m512i v) {
    return _mm512_alignr_epi32(v, _mm512_set1_epi32(X[(s - w + 32) * V3_LANES + 15]), 15);
}

#define V3_ROW(X, s) _mm512_loadu_si512((const void *)((X) + (s) * V3_LANES))

/* One renormalisation of all lanes: lanes below 2^16 take the next words, in lane order. */
#define V3_RENORM(xs)                                                                         \
    do {                                                                                      \
        __mmask16 m_ = _mm512_cmplt_epu32_mask(xs, vRL);                                      \
        __m512i w_ = _mm512_cvtepu16_epi32(_mm256_maskz_expandloadu_epi16(m_, (const void *)wp)); \
        xs = _mm512_mask_or_epi32(xs, m_, _mm512_slli_epi32(xs, 16), w_);                      \
        wp += 2 * _mm_popcnt_u32((unsigned)m_);                                                \
    } while (0)

V3_TARGET CSP_INLINE int64_t v3_avx512_kernel(v3dec_t *D, int64_t t0, int64_t t1, const int kind, const int mode,
                                              const int cross) {
    const int64_t w = D->w;
    const int sel = kind >= PRED_SEL, sel3 = kind == PRED_SEL3;
    int32_t *P = D->P, *E = D->E, *M = D->M, *A = D->A, *G = D->G;
    const int32_t *X0 = D->X0;
    const int *ent = (const int *)&D->T->ent[0][0];
    uint8_t t_act0[64], t_act1[64], t_lvl[64], t_nb[128], t_bm[128];
    for (int i = 0; i < 64; i++) { t_act0[i] = D->Lu->act0[i]; t_act1[i] = D->Lu->act1[i]; t_lvl[i] = D->Lu->lvl[i & 31]; }
    for (int s = 0; s < 128; s++) {
        t_nb[s] = s < NTOK ? TOK_NB[s] : 0;
        t_bm[s] = (uint8_t)(s < 16 ? s : (s < NTOK ? (4 | ((s - 16) & 3)) : 0));
    }
    const __m512i T_act0 = _mm512_loadu_si512(t_act0), T_act1 = _mm512_loadu_si512(t_act1);
    const __m512i T_lvl = _mm512_loadu_si512(t_lvl);
    const __m512i T_nb0 = _mm512_loadu_si512(t_nb), T_nb1 = _mm512_loadu_si512(t_nb + 64);
    const __m512i T_bm0 = _mm512_loadu_si512(t_bm), T_bm1 = _mm512_loadu_si512(t_bm + 64);
    const __m512i vlo = _mm512_set1_epi32(D->lo), vhi = _mm512_set1_epi32(D->hi);
    const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1), two = _mm512_set1_epi32(2);
    const __m512i vRL = _mm512_set1_epi32((int)RANS_L), m2047 = _mm512_set1_epi32(TOTAL - 1);
    const __m512i m7f = _mm512_set1_epi32(0x7F), mfff = _mm512_set1_epi32(0xFFF), c63 = _mm512_set1_epi32(63);
    const __m512i c31 = _mm512_set1_epi32(31), vW = _mm512_set1_epi32((int)w), vW1 = _mm512_set1_epi32((int)(w - 1));
    const __m128i sh_act = _mm_cvtsi32_si128(1 + D->ash), sh_lvl = _mm_cvtsi32_si128(D->lsh);

    /* lane positions at step t0 and the pad register Bz (per lane, the `b` of its last column-0 sample:
     * the above-left pad of the next lane's column 0) */
    int32_t xp[V3_LANES], bz[V3_LANES];
    for (int64_t k = 0; k < V3_LANES; k++) {
        int64_t q = t0 - 2 * k, r = q / w, x = q - r * w, y = k + V3_LANES * r;
        xp[k] = (int32_t)x;
        bz[k] = (x >= 1 && y >= 1) ? P[v3_at(V3_LANES, w, y - 1, 0)] : 0;
    }
    __m512i xpos = _mm512_loadu_si512(xp), Bz = _mm512_loadu_si512(bz);

    /* histories: own lane at t - 1 (l), row above at t - 1, t - 2, t - 3 (u1, u2, u3) */
    __m512i Pl = V3_ROW(P, t0 - 1), Pu1 = v3_up(P, t0 - 1, w, Pl);
    __m512i Pu2 = v3_up(P, t0 - 2, w, V3_ROW(P, t0 - 2)), Pu3 = v3_up(P, t0 - 3, w, V3_ROW(P, t0 - 3));
    __m512i El = V3_ROW(E, t0 - 1), Eu1 = v3_up(E, t0 - 1, w, El);
    __m512i Eu2 = v3_up(E, t0 - 2, w, V3_ROW(E, t0 - 2)), Eu3 = v3_up(E, t0 - 3, w, V3_ROW(E, t0 - 3));
    __m512i Ml = zero, Mu1 = zero, Mu2 = zero, Mu3 = zero, Al = zero, Au1 = zero, Au2 = zero, Au3 = zero;
    __m512i Gl = zero, Gu1 = zero, Gu2 = zero, Gu3 = zero;
    if (sel) {
        Ml = V3_ROW(M, t0 - 1); Mu1 = v3_up(M, t0 - 1, w, Ml);
        Mu2 = v3_up(M, t0 - 2, w, V3_ROW(M, t0 - 2)); Mu3 = v3_up(M, t0 - 3, w, V3_ROW(M, t0 - 3));
        Al = V3_ROW(A, t0 - 1); Au1 = v3_up(A, t0 - 1, w, Al);
        Au2 = v3_up(A, t0 - 2, w, V3_ROW(A, t0 - 2)); Au3 = v3_up(A, t0 - 3, w, V3_ROW(A, t0 - 3));
    }
    if (sel3) {
        Gl = V3_ROW(G, t0 - 1); Gu1 = v3_up(G, t0 - 1, w, Gl);
        Gu2 = v3_up(G, t0 - 2, w, V3_ROW(G, t0 - 2)); Gu3 = v3_up(G, t0 - 3, w, V3_ROW(G, t0 - 3));
    }
    __m512i xs = _mm512_loadu_si512(D->xs);
    /* words: read in place while at least 32 remain (a step reads at most 32); then from a zero-padded
     * copy of the tail, stopping with an error if the stream runs out */
    const uint8_t *wp = D->wp, *wend = D->wend, *real = NULL;
    uint8_t tail[12 * V3_LANES];
    __mmask16 bad = 0;
    int64_t t = t0;
    for (; t < t1; t++) {
        if (wend - wp < 4 * V3_LANES) {
            if (!real) {
                int64_t rem = wend - wp;
                memset(tail, 0, sizeof tail);
                memcpy(tail, wp, (size_t)rem);
                real = wp; wp = tail; wend = tail + rem;
            } else if (wp > wend) { D->err = CSP_E_DATA; break; }
        }
        const __mmask16 m0 = _mm512_cmpeq_epi32_mask(xpos, zero), mW = _mm512_cmpeq_epi32_mask(xpos, vW1);
        const __mmask16 n0 = (__mmask16)~m0, nW = (__mmask16)~mW;
        /* neighbours with version 1's pads: column -1 of row y is (y-1, 0), column W of row y-1 is
         * (y-1, W-1); the above-left pad of column 0 is (y-2, 0) = the previous lane's Bz */
        const __m512i b = Pu2;
        const __m512i a = _mm512_mask_mov_epi32(Pl, m0, b);
        const __m512i c = _mm512_mask_mov_epi32(Pu3, m0, _mm512_alignr_epi32(Bz, Bz, 15));
        const __m512i d = _mm512_mask_mov_epi32(Pu1, mW, b);
        Bz = _mm512_mask_mov_epi32(Bz, m0, b);
        const __m512i mx = _mm512_max_epi32(a, b), mn = _mm512_min_epi32(a, b);
        const __m512i abc = _mm512_sub_epi32(_mm512_add_epi32(a, b), c);
        __m512i pm = _mm512_mask_mov_epi32(abc, _mm512_cmple_epi32_mask(c, mn), mx);
        pm = _mm512_mask_mov_epi32(pm, _mm512_cmpge_epi32_mask(c, mx), mn);
        __m512i pa = zero, pg = zero, p;
        if (kind == 1 || sel) {
            __m512i s4 = _mm512_sub_epi32(_mm512_slli_epi32(_mm512_add_epi32(a, b), 1), c);
            s4 = _mm512_srai_epi32(_mm512_add_epi32(s4, _mm512_add_epi32(d, two)), 2);
            pa = _mm512_min_epi32(_mm512_max_epi32(s4, vlo), vhi);
        }
        if (kind == 0) p = pm;
        else if (kind == 1) p = pa;
        else if (kind == 2) p = _mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(a, b), one), 1);
        else {
            const __m512i sm = _mm512_add_epi32(
                _mm512_slli_epi32(_mm512_add_epi32(_mm512_maskz_mov_epi32(n0, Ml), Mu2), 1),
                _mm512_add_epi32(_mm512_maskz_mov_epi32(n0, Mu3), _mm512_maskz_mov_epi32(nW, Mu1)));
            const __m512i sa = _mm512_add_epi32(
                _mm512_slli_epi32(_mm512_add_epi32(_mm512_maskz_mov_epi32(n0, Al), Au2), 1),
                _mm512_add_epi32(_mm512_maskz_mov_epi32(n0, Au3), _mm512_maskz_mov_epi32(nW, Au1)));
            p = _mm512_mask_mov_epi32(pa, _mm512_cmple_epi32_mask(sm, sa), pm);
            if (sel3) {
                pg = _mm512_min_epi32(_mm512_max_epi32(abc, vlo), vhi);
                const __m512i sg = _mm512_add_epi32(
                    _mm512_slli_epi32(_mm512_add_epi32(_mm512_maskz_mov_epi32(n0, Gl), Gu2), 1),
                    _mm512_add_epi32(_mm512_maskz_mov_epi32(n0, Gu3), _mm512_maskz_mov_epi32(nW, Gu1)));
                p = _mm512_mask_mov_epi32(p, _mm512_cmplt_epi32_mask(sg, _mm512_min_epi32(sm, sa)), pg);
            }
        }
        /* context */
        __m512i act = _mm512_add_epi32(_mm512_abs_epi32(_mm512_sub_epi32(a, c)), _mm512_abs_epi32(_mm512_sub_epi32(b, c)));
        act = _mm512_add_epi32(act, _mm512_abs_epi32(_mm512_sub_epi32(b, d)));
        act = _mm512_add_epi32(act, _mm512_add_epi32(Eu2, _mm512_maskz_mov_epi32(n0, Eu3)));
        act = _mm512_add_epi32(act, _mm512_add_epi32(_mm512_maskz_mov_epi32(nW, Eu1),
                                                     _mm512_slli_epi32(_mm512_maskz_mov_epi32(n0, El), 1)));
        if (cross) act = _mm512_add_epi32(act, _mm512_slli_epi32(V3_ROW(X0, t), 1));
        act = _mm512_min_epu32(_mm512_srl_epi32(act, sh_act), c63);
        __m512i ctx;
        if (mode == 0) ctx = _mm512_permutexvar_epi8(act, T_act0);
        else {
            __m512i lv = _mm512_min_epi32(_mm512_srl_epi32(_mm512_max_epi32(p, zero), sh_lvl), c31);
            ctx = _mm512_add_epi32(_mm512_permutexvar_epi8(act, T_act1), _mm512_permutexvar_epi8(lv, T_lvl));
        }
        /* phase A: tokens */
        const __m512i idx = _mm512_or_si512(_mm512_slli_epi32(ctx, PROB_BITS), _mm512_and_si512(xs, m2047));
        const __m512i en = _mm512_i32gather_epi32(idx, ent, 4);
        const __m512i s = _mm512_and_si512(en, m7f);
        xs = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_srli_epi32(en, 19), _mm512_srli_epi32(xs, PROB_BITS)),
                              _mm512_and_si512(_mm512_srli_epi32(en, 7), mfff));
        V3_RENORM(xs);
        /* phase B: raw bits */
        const __m512i nb = _mm512_permutex2var_epi8(T_nb0, s, T_nb1);
        const __m512i bm = _mm512_permutex2var_epi8(T_bm0, s, T_bm1);
        const __m512i bits = _mm512_and_si512(xs, _mm512_sub_epi32(_mm512_sllv_epi32(one, nb), one));
        xs = _mm512_srlv_epi32(xs, nb);
        V3_RENORM(xs);
        const __m512i u = _mm512_or_si512(_mm512_sllv_epi32(bm, nb), bits);
        const __m512i e = _mm512_xor_si512(_mm512_srli_epi32(u, 1), _mm512_sub_epi32(zero, _mm512_and_si512(u, one)));
        __m512i v = _mm512_add_epi32(p, e);
        bad |= _mm512_cmplt_epi32_mask(v, vlo) | _mm512_cmpgt_epi32_mask(v, vhi);
        v = _mm512_min_epi32(_mm512_max_epi32(v, vlo), vhi);
        const __m512i ae = _mm512_abs_epi32(e);
        _mm512_storeu_si512((void *)(P + t * V3_LANES), v);
        _mm512_storeu_si512((void *)(E + t * V3_LANES), ae);
        Pu3 = Pu2; Pu2 = Pu1; Pu1 = v3_up(P, t, w, v); Pl = v;
        Eu3 = Eu2; Eu2 = Eu1; Eu1 = v3_up(E, t, w, ae); El = ae;
        if (sel) {
            const __m512i em = _mm512_abs_epi32(_mm512_sub_epi32(v, pm)), ea = _mm512_abs_epi32(_mm512_sub_epi32(v, pa));
            _mm512_storeu_si512((void *)(M + t * V3_LANES), em);
            _mm512_storeu_si512((void *)(A + t * V3_LANES), ea);
            Mu3 = Mu2; Mu2 = Mu1; Mu1 = v3_up(M, t, w, em); Ml = em;
            Au3 = Au2; Au2 = Au1; Au1 = v3_up(A, t, w, ea); Al = ea;
            if (sel3) {
                const __m512i eg = _mm512_abs_epi32(_mm512_sub_epi32(v, pg));
                _mm512_storeu_si512((void *)(G + t * V3_LANES), eg);
                Gu3 = Gu2; Gu2 = Gu1; Gu1 = v3_up(G, t, w, eg); Gl = eg;
            }
        }
        xpos = _mm512_add_epi32(xpos, one);
        xpos = _mm512_mask_mov_epi32(xpos, _mm512_cmpeq_epi32_mask(xpos, vW), zero);
    }
    _mm512_storeu_si512((void *)D->xs, xs);
    if (real) {
        if (wp > wend) { D->err = CSP_E_DATA; wp = wend; }
        D->wp = real + (wp - tail);
    } else D->wp = wp;
    if (bad) D->err = CSP_E_RANGE;
    return t;
}

#define V3_K(k, m, x) case (k) * 4 + (m) * 2 + (x): return v3_avx512_kernel(D, t0, t1, k, m, x);

/* Decode steps t0 .. t1 - 1 (all lanes active) or fewer; returns the first step not decoded. */
V3_TARGET static int64_t v3_avx512_run(v3dec_t *D, int64_t t0, int64_t t1) {
    switch (D->kind * 4 + D->mode * 2 + (D->X0 != NULL)) {
        V3_K(0, 0, 0) V3_K(0, 0, 1) V3_K(0, 1, 0) V3_K(0, 1, 1)
        V3_K(1, 0, 0) V3_K(1, 0, 1) V3_K(1, 1, 0) V3_K(1, 1, 1)
        V3_K(2, 0, 0) V3_K(2, 0, 1) V3_K(2, 1, 0) V3_K(2, 1, 1)
        V3_K(3, 0, 0) V3_K(3, 0, 1) V3_K(3, 1, 0) V3_K(3, 1, 1)
        V3_K(4, 0, 0) V3_K(4, 0, 1) V3_K(4, 1, 0) V3_K(4, 1, 1)
        default: return t0;
    }
}
