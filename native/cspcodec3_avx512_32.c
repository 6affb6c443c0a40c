/* AVX-512 decoder of bitstream version 3 (planes of 32 lanes), 32-bit lanes: the kernel of 16-bit tiles
 * (and of every tile where the 16-bit-lane kernel of cspcodec3_avx512_16.c is not used).
 *
 * Included twice by cspcodec3.c after cspcodec3_avx512.c, with V3W(name) giving each variant's function
 * names and V3W_TARGET its instruction sets: V3W_VBMI = 1 for CPUs with AVX-512 VBMI and VBMI2 (byte
 * permutations, word expand-loads), V3W_VBMI = 0 for AVX-512 F/BW/VL/DQ/CD only (Skylake-SP, Cascade
 * Lake: dword permutations, dword expands, the token tables computed). Called only after a run-time CPU
 * check. One loop iteration decodes step t, i.e. one sample of each of the 32 lanes held in two vectors
 * (lanes 0-15 and 16-31: two independent dependency chains, which hides most of the gather and multiply
 * latency), in exactly the order of the scalar path: phase A, the tokens of lanes 0..31, each
 * renormalising from the shared word stream in lane order (a masked expand per vector), then phase B,
 * the raw bits, likewise. The neighbours come from registers: a lane's left neighbour is its own result
 * of step t - 1, and the row above is the previous three step vectors moved up one lane (lane 16 takes
 * lane 15 of the same step; lane 0 takes lane 31's previous row from the skew buffer). Idle lanes
 * (ramp-up and ramp-down) are masked: they read no words, keep their state, store nothing.
 */

#ifndef V3W_TYPES
#define V3W_TYPES
/* Per vector (16 lanes): the pixel value P, |e| E and the MED/AVG4/GRAD errors M/A/G of step t - 1 in
 * the own lane (l) and moved up one lane (u1); the column-0 pad register Bz and the rANS states. The
 * moved-up vectors of steps t - 2 and t - 3 (u2, u3) are kept in a ring in memory (fewer registers). */
typedef struct {
    __m512i Pl, Pu1, El, Eu1, Ml, Mu1, Al, Au1, Gl, Gu1;
    __m512i Bz, xs;
} v3vec_t;

/* ring[t & 3][array][vector]: array 0..4 = P, E, M, A, G moved up one lane at step t */
typedef __m512i v3ring_t[4][5][2];

/* Per-step temporaries of one vector between the phases. */
typedef struct {
    __mmask16 on, m0, mW;
    __m512i p, pm, pa, pg, s, x1, nb, bm;
} v3tmp_t;

/* Constants of a plane. */
typedef struct {
    __m512i T_act0, T_act1, T_lvl, T_nb0, T_nb1, T_bm0, T_bm1, vlo, vhi, vspan;
    __m512i T_act0h, T_act1h; /* V3W_VBMI = 0: word tables, activities 32-63 */
    __m128i sh_act, sh_lvl;
    const int *ent;
} v3k_t;

#define V3_ROW(X, s) _mm512_loadu_si512((const void *)((X) + (s) * V3_LANES))

static inline void v3_masks(const v3masks_t *MK, const v3dec_t *D, int64_t t, int64_t tw, v3tmp_t *TA, v3tmp_t *TB) {
    const uint32_t on = v3_on(MK, D, t), m0 = MK->m0[tw] & on, mW = MK->mW[tw];
    TA->on = (__mmask16)on; TB->on = (__mmask16)(on >> 16);
    TA->m0 = (__mmask16)m0; TB->m0 = (__mmask16)(m0 >> 16);
    TA->mW = (__mmask16)mW; TB->mW = (__mmask16)(mW >> 16);
}

#endif


/* Lanes 0-15 of row s of X moved up one lane: lane 0 gets lane 31 of step s - w + 64 (its row above),
 * 0 before lane 31 has started (lane 0's row 0 has row -1 above: zeros). */
V3W_TARGET static inline __m512i V3W(upA)(const int32_t *X, int64_t s, int64_t w, __m512i vA) {
    const int64_t r = s - w + 2 * V3_LANES;
    const int32_t up = r >= 2 * (V3_LANES - 1) ? X[r * V3_LANES + V3_LANES - 1] : 0;
    return _mm512_alignr_epi32(vA, _mm512_set1_epi32(up), 15);
}
/* Lanes 16-31 moved up one lane: lane 16 gets lane 15 of the same step. */
V3W_TARGET static inline __m512i V3W(upB)(__m512i vB, __m512i vA) { return _mm512_alignr_epi32(vB, vA, 15); }

/* One renormalisation of the active lanes of one vector: lanes below 2^16 take the next words in lane
 * order. Returns the new word pointer. */
V3W_TARGET static inline const uint8_t *V3W(renorm)(__m512i *xs, __mmask16 on, const uint8_t *wp) {
    const __mmask16 m = _mm512_mask_cmplt_epu32_mask(on, *xs, _mm512_set1_epi32((int)RANS_L));
#if V3W_VBMI
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_expandloadu_epi16(m, (const void *)wp));
#else
    const __m512i w = _mm512_maskz_expand_epi32(m, _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)wp)));
#endif
    *xs = _mm512_mask_or_epi32(*xs, m, _mm512_slli_epi32(*xs, 16), w);
    return wp + 2 * _mm_popcnt_u32((unsigned)m);
}

/* 2 err(left) + 2 err(above) + err(above-left) + err(above-right), pads 0 */
V3W_TARGET static inline __m512i V3W(score)(__m512i l, __m512i u1, __m512i u2, __m512i u3, __mmask16 n0, __mmask16 nW) {
    const __m512i u2x2 = _mm512_slli_epi32(u2, 1);
    return _mm512_add_epi32(_mm512_maskz_add_epi32(n0, _mm512_slli_epi32(l, 1), u3), _mm512_mask_add_epi32(u2x2, nW, u2x2, u1));
}

/* Prediction, context and token (phase A before the renormalisation) of one vector at step t; rotBz is
 * the column-0 above-left pad (the previous lane's Bz). */
V3W_TARGET CSP_INLINE void V3W(phase_a)(v3vec_t *V, v3tmp_t *T, const v3k_t *K, __m512i rotBz, const int32_t *X0row,
                                     const __m512i *u2, const __m512i *u3, const int kind, const int mode,
                                     const int cross) {
    const int sel = kind >= PRED_SEL, sel3 = kind == PRED_SEL3;
    const __m512i zero = _mm512_setzero_si512();
    const __mmask16 n0 = (__mmask16)~T->m0, nW = (__mmask16)~T->mW;
    /* version 1's pads: column -1 of row y is (y-1, 0), column W of row y-1 is (y-1, W-1); the
     * above-left pad of column 0 is (y-2, 0), the previous lane's Bz */
    const __m512i b = u2[0];
    const __m512i a = _mm512_mask_mov_epi32(V->Pl, T->m0, b);
    const __m512i c = _mm512_mask_mov_epi32(u3[0], T->m0, rotBz);
    const __m512i d = _mm512_mask_mov_epi32(V->Pu1, T->mW, b);
    V->Bz = _mm512_mask_mov_epi32(V->Bz, T->m0, b);
    /* context first (the critical path): |a-c| + 2 E(left) + the rest */
    __m512i rest = _mm512_add_epi32(_mm512_abs_epi32(_mm512_sub_epi32(b, c)), _mm512_abs_epi32(_mm512_sub_epi32(b, d)));
    rest = _mm512_add_epi32(rest, _mm512_mask_add_epi32(u2[1], nW, u2[1], V->Eu1));
    if (cross) rest = _mm512_add_epi32(rest, _mm512_slli_epi32(_mm512_loadu_si512((const void *)X0row), 1));
    __m512i act = _mm512_add_epi32(_mm512_abs_epi32(_mm512_sub_epi32(a, c)),
                                   _mm512_maskz_add_epi32(n0, _mm512_slli_epi32(V->El, 1), u3[1]));
    act = _mm512_min_epu32(_mm512_srl_epi32(_mm512_add_epi32(act, rest), K->sh_act), _mm512_set1_epi32(63));
    const __m512i mx = _mm512_max_epi32(a, b), mn = _mm512_min_epi32(a, b);
    const __m512i abc = _mm512_sub_epi32(_mm512_add_epi32(a, b), c);
    T->pm = _mm512_max_epi32(mn, _mm512_min_epi32(mx, abc)); /* MED = median(a, b, a + b - c) */
    T->pa = zero; T->pg = zero;
    if (kind == 1 || sel) {
        __m512i s4 = _mm512_sub_epi32(_mm512_slli_epi32(_mm512_add_epi32(a, b), 1), c);
        s4 = _mm512_srai_epi32(_mm512_add_epi32(s4, _mm512_add_epi32(d, _mm512_set1_epi32(2))), 2);
        T->pa = _mm512_min_epi32(_mm512_max_epi32(s4, K->vlo), K->vhi);
    }
    if (kind == 0) T->p = T->pm;
    else if (kind == 1) T->p = T->pa;
    else if (kind == 2) T->p = _mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(a, b), _mm512_set1_epi32(1)), 1);
    else {
        const __m512i sm = V3W(score)(V->Ml, V->Mu1, u2[2], u3[2], n0, nW);
        const __m512i sa = V3W(score)(V->Al, V->Au1, u2[3], u3[3], n0, nW);
        T->p = _mm512_mask_mov_epi32(T->pa, _mm512_cmple_epi32_mask(sm, sa), T->pm);
        if (sel3) {
            T->pg = _mm512_min_epi32(_mm512_max_epi32(abc, K->vlo), K->vhi);
            const __m512i sg = V3W(score)(V->Gl, V->Gu1, u2[4], u3[4], n0, nW);
            T->p = _mm512_mask_mov_epi32(T->p, _mm512_cmplt_epi32_mask(sg, _mm512_min_epi32(sm, sa)), T->pg);
        }
    }
    __m512i ctx;
    /* table look-ups by the low byte (word) of each dword; the other bytes (words) index entry 0, which is
     * 0 in every table */
#if V3W_VBMI
    if (mode == 0) ctx = _mm512_permutexvar_epi8(act, K->T_act0);
    else {
        const __m512i lv = _mm512_min_epi32(_mm512_srl_epi32(_mm512_max_epi32(T->p, zero), K->sh_lvl), _mm512_set1_epi32(31));
        ctx = _mm512_add_epi32(_mm512_permutexvar_epi8(act, K->T_act1), _mm512_permutexvar_epi8(lv, K->T_lvl));
    }
#else
    if (mode == 0) ctx = _mm512_permutex2var_epi16(K->T_act0, act, K->T_act0h);
    else {
        const __m512i lv = _mm512_min_epi32(_mm512_srl_epi32(_mm512_max_epi32(T->p, zero), K->sh_lvl), _mm512_set1_epi32(31));
        ctx = _mm512_add_epi32(_mm512_permutex2var_epi16(K->T_act1, act, K->T_act1h), _mm512_permutexvar_epi16(lv, K->T_lvl));
    }
#endif
    /* token: (ctx << 11) | (x & 2047) -> symbol | (slot - start) << 7 | freq << 19 */
    const __m512i idx = _mm512_ternarylogic_epi32(_mm512_slli_epi32(ctx, PROB_BITS), V->xs, _mm512_set1_epi32(TOTAL - 1), 0xF8);
    const __m512i en = _mm512_i32gather_epi32(idx, K->ent, 4);
    T->s = _mm512_and_si512(en, _mm512_set1_epi32(0x7F));
    T->x1 = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_srli_epi32(en, 19), _mm512_srli_epi32(V->xs, PROB_BITS)),
                             _mm512_and_si512(_mm512_srli_epi32(en, 7), _mm512_set1_epi32(0xFFF)));
#if V3W_VBMI
    T->nb = _mm512_permutex2var_epi8(K->T_nb0, T->s, K->T_nb1);
    T->bm = _mm512_permutex2var_epi8(K->T_bm0, T->s, K->T_bm1);
#else /* TOK_NB and the token's base bits computed: s < 16: 0 and s; else (s - 16) / 4 + 2 and 4 | (s - 16) % 4 */
    {
        const __mmask16 big = _mm512_cmpge_epu32_mask(T->s, _mm512_set1_epi32(16));
        const __m512i s16 = _mm512_sub_epi32(T->s, _mm512_set1_epi32(16));
        T->nb = _mm512_maskz_add_epi32(big, _mm512_srli_epi32(s16, 2), _mm512_set1_epi32(2));
        T->bm = _mm512_mask_mov_epi32(T->s, big, _mm512_or_si512(_mm512_and_si512(s16, _mm512_set1_epi32(3)), _mm512_set1_epi32(4)));
    }
#endif
}

/* Phase B of one vector after its raw-bit renormalisation: residual, sample, range check, stores and
 * left histories (the caller shifts the up-histories). Returns nonzero when a sample is out of range. */
V3W_TARGET CSP_INLINE int V3W(finish)(v3vec_t *V, v3tmp_t *T, const v3k_t *K, __m512i bits, int32_t *P, int32_t *E,
                                   int32_t *M, int32_t *A, int32_t *G, int64_t off, const int kind) {
    const int sel = kind >= PRED_SEL, sel3 = kind == PRED_SEL3;
    const __m512i one = _mm512_set1_epi32(1);
    V->xs = _mm512_mask_mov_epi32(V->xs, T->on, T->x1);
    const __m512i u = _mm512_or_si512(_mm512_sllv_epi32(T->bm, T->nb), bits);
    const __m512i e = _mm512_xor_si512(_mm512_srli_epi32(u, 1), _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_and_si512(u, one)));
    const __m512i v = _mm512_add_epi32(T->p, e);
    const int bad = _mm512_mask_cmpgt_epu32_mask(T->on, _mm512_sub_epi32(v, K->vlo), K->vspan) != 0;
    const __m512i ae = _mm512_abs_epi32(e);
    _mm512_mask_storeu_epi32((void *)(P + off), T->on, v);
    _mm512_mask_storeu_epi32((void *)(E + off), T->on, ae);
    V->Pl = v; V->El = ae;
    if (sel) {
        V->Ml = _mm512_abs_epi32(_mm512_sub_epi32(v, T->pm));
        V->Al = _mm512_abs_epi32(_mm512_sub_epi32(v, T->pa));
        _mm512_mask_storeu_epi32((void *)(M + off), T->on, V->Ml);
        _mm512_mask_storeu_epi32((void *)(A + off), T->on, V->Al);
        if (sel3) {
            V->Gl = _mm512_abs_epi32(_mm512_sub_epi32(v, T->pg));
            _mm512_mask_storeu_epi32((void *)(G + off), T->on, V->Gl);
        }
    }
    return bad;
}


/* Initial state at step t0 from the skew buffers (zeros before step 0): left and moved-up histories of
 * both vectors, the ring, Bz and the states. */
V3W_TARGET static void V3W(init)(v3vec_t V[2], v3ring_t ring, const v3dec_t *D, int64_t t0, const int32_t *const X[5]) {
    const int64_t w = D->w;
    int32_t bz[V3_LANES];
    for (int64_t k = 0; k < V3_LANES; k++) {
        const int64_t q = t0 - 2 * k, r = q >= 0 ? q / w : -1, x = q >= 0 ? q - r * w : q, y = k + V3_LANES * r;
        bz[k] = (q >= 0 && x >= 1 && y >= 1) ? D->P[v3_at(V3_LANES, w, y - 1, 0)] : 0;
    }
    for (int h = 0; h < 2; h++) {
        V[h].Bz = _mm512_loadu_si512(bz + 16 * h);
        V[h].xs = _mm512_loadu_si512(D->xs + 16 * h);
    }
    for (int j = 1; j <= 3; j++) {
        const int64_t s = t0 - j;
        for (int a = 0; a < 5; a++) {
            const __m512i vA = V3_ROW(X[a], s), vB = V3_ROW(X[a] + 16, s);
            ring[s & 3][a][0] = V3W(upA)(X[a], s, w, vA);
            ring[s & 3][a][1] = V3W(upB)(vB, vA);
        }
    }
    __m512i *l[5] = {&V[0].Pl, &V[0].El, &V[0].Ml, &V[0].Al, &V[0].Gl};
    __m512i *u[5] = {&V[0].Pu1, &V[0].Eu1, &V[0].Mu1, &V[0].Au1, &V[0].Gu1};
    for (int a = 0; a < 5; a++) {
        const ptrdiff_t dl = l[a] - &V[0].Pl, du = u[a] - &V[0].Pl;
        for (int h = 0; h < 2; h++) {
            *(&V[h].Pl + dl) = V3_ROW(X[a] + 16 * h, t0 - 1);
            *(&V[h].Pl + du) = ring[(t0 - 1) & 3][a][h];
        }
    }
}

V3W_TARGET CSP_INLINE int64_t V3W(kernel)(v3dec_t *D, int64_t t0, int64_t t1, const int kind, const int mode,
                                              const int cross) {
    const int64_t w = D->w;
    const int sel = kind >= PRED_SEL, sel3 = kind == PRED_SEL3;
    int32_t *P = D->P, *E = D->E, *M = D->M, *A = D->A, *G = D->G;
    const int32_t *X0 = D->X0;
    v3k_t K;
    {
        uint8_t t_act0[64], t_act1[64], t_lvl[64], t_nb[128], t_bm[128];
        for (int i = 0; i < 64; i++) { t_act0[i] = D->Lu->act0[i]; t_act1[i] = D->Lu->act1[i]; t_lvl[i] = D->Lu->lvl[i & 31]; }
        for (int s = 0; s < 128; s++) {
            t_nb[s] = s < NTOK ? TOK_NB[s] : 0;
            t_bm[s] = (uint8_t)(s < 16 ? s : (s < NTOK ? (4 | ((s - 16) & 3)) : 0));
        }
#if V3W_VBMI
        K.T_act0 = _mm512_loadu_si512(t_act0); K.T_act1 = _mm512_loadu_si512(t_act1); K.T_lvl = _mm512_loadu_si512(t_lvl);
        K.T_act0h = K.T_act1h = _mm512_setzero_si512();
#else /* word tables: activities 0-31 and 32-63, levels 0-31 */
        K.T_act0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)t_act0));
        K.T_act0h = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(t_act0 + 32)));
        K.T_act1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)t_act1));
        K.T_act1h = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(t_act1 + 32)));
        K.T_lvl = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)t_lvl));
#endif
        K.T_nb0 = _mm512_loadu_si512(t_nb); K.T_nb1 = _mm512_loadu_si512(t_nb + 64);
        K.T_bm0 = _mm512_loadu_si512(t_bm); K.T_bm1 = _mm512_loadu_si512(t_bm + 64);
        K.vlo = _mm512_set1_epi32(D->lo); K.vhi = _mm512_set1_epi32(D->hi); K.vspan = _mm512_set1_epi32(D->hi - D->lo);
        K.sh_act = _mm_cvtsi32_si128(1 + D->ash); K.sh_lvl = _mm_cvtsi32_si128(D->lsh);
        K.ent = (const int *)&D->T->ent[0][0];
    }
    const int32_t *const X[5] = {P, E, M, A, G};
    v3vec_t V[2];
    v3ring_t ring;
    V3W(init)(V, ring, D, t0, X);
    v3vec_t *const VA = &V[0], *const VB = &V[1];
    v3masks_t MK;
    if (v3_make_masks(&MK, D)) return t0;
    int64_t tw = t0 % w;
    v3words_t WS;
    v3_words_begin(&WS, D);
    int bad = 0;
    int64_t t = t0;
    for (; t < t1; t++) {
        if (v3_words_guard(&WS)) { D->err = CSP_E_DATA; break; }
        const uint8_t *wp = WS.wp;
        const int64_t off = t * V3_LANES;
        v3tmp_t TA, TB;
        v3_masks(&MK, D, t, tw, &TA, &TB);
        if (++tw == w) tw = 0;
        const __m512i rotA = _mm512_alignr_epi32(VA->Bz, VB->Bz, 15), rotB = _mm512_alignr_epi32(VB->Bz, VA->Bz, 15);
        const __m512i u2A[5] = {ring[(t - 2) & 3][0][0], ring[(t - 2) & 3][1][0], ring[(t - 2) & 3][2][0], ring[(t - 2) & 3][3][0], ring[(t - 2) & 3][4][0]};
        const __m512i u3A[5] = {ring[(t - 3) & 3][0][0], ring[(t - 3) & 3][1][0], ring[(t - 3) & 3][2][0], ring[(t - 3) & 3][3][0], ring[(t - 3) & 3][4][0]};
        const __m512i u2B[5] = {ring[(t - 2) & 3][0][1], ring[(t - 2) & 3][1][1], ring[(t - 2) & 3][2][1], ring[(t - 2) & 3][3][1], ring[(t - 2) & 3][4][1]};
        const __m512i u3B[5] = {ring[(t - 3) & 3][0][1], ring[(t - 3) & 3][1][1], ring[(t - 3) & 3][2][1], ring[(t - 3) & 3][3][1], ring[(t - 3) & 3][4][1]};
        /* phase A: tokens of lanes 0-15, then 16-31 */
        V3W(phase_a)(VA, &TA, &K, rotA, cross ? X0 + off : NULL, u2A, u3A, kind, mode, cross);
        V3W(phase_a)(VB, &TB, &K, rotB, cross ? X0 + off + 16 : NULL, u2B, u3B, kind, mode, cross);
        wp = V3W(renorm)(&TA.x1, TA.on, wp);
        wp = V3W(renorm)(&TB.x1, TB.on, wp);
        /* phase B: raw bits */
        const __m512i one = _mm512_set1_epi32(1);
        const __m512i bitsA = _mm512_and_si512(TA.x1, _mm512_sub_epi32(_mm512_sllv_epi32(one, TA.nb), one));
        const __m512i bitsB = _mm512_and_si512(TB.x1, _mm512_sub_epi32(_mm512_sllv_epi32(one, TB.nb), one));
        TA.x1 = _mm512_srlv_epi32(TA.x1, TA.nb);
        TB.x1 = _mm512_srlv_epi32(TB.x1, TB.nb);
        wp = V3W(renorm)(&TA.x1, TA.on, wp);
        wp = V3W(renorm)(&TB.x1, TB.on, wp);
        WS.wp = wp;
        bad |= V3W(finish)(VA, &TA, &K, bitsA, P, E, M, A, G, off, kind);
        bad |= V3W(finish)(VB, &TB, &K, bitsB, P, E, M, A, G, off + 16, kind);
        if (bad) break;
        /* the new vectors moved up one lane: the above-right neighbours of the next step (u1), then
         * its above and above-left ones (ring) */
        __m512i (*rg)[2] = ring[t & 3];
        rg[0][0] = VA->Pu1 = V3W(upA)(P, t, w, VA->Pl); rg[0][1] = VB->Pu1 = V3W(upB)(VB->Pl, VA->Pl);
        rg[1][0] = VA->Eu1 = V3W(upA)(E, t, w, VA->El); rg[1][1] = VB->Eu1 = V3W(upB)(VB->El, VA->El);
        if (sel) {
            rg[2][0] = VA->Mu1 = V3W(upA)(M, t, w, VA->Ml); rg[2][1] = VB->Mu1 = V3W(upB)(VB->Ml, VA->Ml);
            rg[3][0] = VA->Au1 = V3W(upA)(A, t, w, VA->Al); rg[3][1] = VB->Au1 = V3W(upB)(VB->Al, VA->Al);
            if (sel3) { rg[4][0] = VA->Gu1 = V3W(upA)(G, t, w, VA->Gl); rg[4][1] = VB->Gu1 = V3W(upB)(VB->Gl, VA->Gl); }
        }
    }
    free(MK.m0);
    _mm512_storeu_si512((void *)D->xs, VA->xs);
    _mm512_storeu_si512((void *)(D->xs + 16), VB->xs);
    if (bad) D->err = CSP_E_RANGE;
    v3_words_end(&WS, D);
    return t;
}

#define V3_K(k, m, x) case (k) * 4 + (m) * 2 + (x): return V3W(kernel)(D, t0, t1, k, m, x);

/* Decode steps t0 .. t1 - 1 (or fewer, on an error); returns the first step not decoded. */
V3W_TARGET static int64_t V3W(run)(v3dec_t *D, int64_t t0, int64_t t1) {
    switch (D->kind * 4 + D->mode * 2 + (D->X0 != NULL)) {
        CSP_FOR_VARIANTS(V3_K)
        default: return t0;
    }
}


#undef V3_K
