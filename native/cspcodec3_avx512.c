/* AVX-512 decoder of bitstream version 3 (planes of 32 lanes).
 *
 * Included by cspcodec3.c; compiled with CSP_AVX512_TARGET (cspcodec_enc_avx512.c) and called only
 * after a run-time CPU check. One loop iteration decodes step t, i.e. one sample of each of the 32 lanes
 * held in two vectors (lanes 0-15 and 16-31: two independent dependency chains, which hides most of the
 * gather and multiply latency), in exactly the order of the scalar path: phase A, the tokens of lanes
 * 0..31, each renormalising from the shared word stream in lane order (a masked expand-load per vector),
 * then phase B, the raw bits, likewise. The neighbours come from registers: a lane's left neighbour is
 * its own result of step t - 1, and the row above is the previous three step vectors moved up one lane
 * (lane 16 takes lane 15 of the same step; lane 0 takes lane 31's previous row from the skew buffer).
 * Idle lanes (ramp-up and ramp-down) are masked: they read no words, keep their state, store nothing.
 */

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
    __m128i sh_act, sh_lvl;
    const int *ent;
} v3k_t;

#define V3_ROW(X, s) _mm512_loadu_si512((const void *)((X) + (s) * V3_LANES))

/* Lanes 0-15 of row s of X moved up one lane: lane 0 gets lane 31 of step s - w + 64 (its row above),
 * 0 before lane 31 has started (lane 0's row 0 has row -1 above: zeros). */
CSP_AVX512_TARGET static inline __m512i v3_upA(const int32_t *X, int64_t s, int64_t w, __m512i vA) {
    const int64_t r = s - w + 2 * V3_LANES;
    const int32_t up = r >= 2 * (V3_LANES - 1) ? X[r * V3_LANES + V3_LANES - 1] : 0;
    return _mm512_alignr_epi32(vA, _mm512_set1_epi32(up), 15);
}
/* Lanes 16-31 moved up one lane: lane 16 gets lane 15 of the same step. */
CSP_AVX512_TARGET static inline __m512i v3_upB(__m512i vB, __m512i vA) { return _mm512_alignr_epi32(vB, vA, 15); }

/* One renormalisation of the active lanes of one vector: lanes below 2^16 take the next words in lane
 * order. Returns the new word pointer. */
CSP_AVX512_TARGET static inline const uint8_t *v3_renorm(__m512i *xs, __mmask16 on, const uint8_t *wp) {
    const __mmask16 m = _mm512_mask_cmplt_epu32_mask(on, *xs, _mm512_set1_epi32((int)RANS_L));
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_expandloadu_epi16(m, (const void *)wp));
    *xs = _mm512_mask_or_epi32(*xs, m, _mm512_slli_epi32(*xs, 16), w);
    return wp + 2 * _mm_popcnt_u32((unsigned)m);
}

/* 2 err(left) + 2 err(above) + err(above-left) + err(above-right), pads 0 */
CSP_AVX512_TARGET static inline __m512i v3_score(__m512i l, __m512i u1, __m512i u2, __m512i u3, __mmask16 n0, __mmask16 nW) {
    const __m512i u2x2 = _mm512_slli_epi32(u2, 1);
    return _mm512_add_epi32(_mm512_maskz_add_epi32(n0, _mm512_slli_epi32(l, 1), u3), _mm512_mask_add_epi32(u2x2, nW, u2x2, u1));
}

/* Prediction, context and token (phase A before the renormalisation) of one vector at step t; rotBz is
 * the column-0 above-left pad (the previous lane's Bz). */
CSP_AVX512_TARGET CSP_INLINE void v3_phase_a(v3vec_t *V, v3tmp_t *T, const v3k_t *K, __m512i rotBz, const int32_t *X0row,
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
        const __m512i sm = v3_score(V->Ml, V->Mu1, u2[2], u3[2], n0, nW);
        const __m512i sa = v3_score(V->Al, V->Au1, u2[3], u3[3], n0, nW);
        T->p = _mm512_mask_mov_epi32(T->pa, _mm512_cmple_epi32_mask(sm, sa), T->pm);
        if (sel3) {
            T->pg = _mm512_min_epi32(_mm512_max_epi32(abc, K->vlo), K->vhi);
            const __m512i sg = v3_score(V->Gl, V->Gu1, u2[4], u3[4], n0, nW);
            T->p = _mm512_mask_mov_epi32(T->p, _mm512_cmplt_epi32_mask(sg, _mm512_min_epi32(sm, sa)), T->pg);
        }
    }
    __m512i ctx;
    if (mode == 0) ctx = _mm512_permutexvar_epi8(act, K->T_act0);
    else {
        const __m512i lv = _mm512_min_epi32(_mm512_srl_epi32(_mm512_max_epi32(T->p, zero), K->sh_lvl), _mm512_set1_epi32(31));
        ctx = _mm512_add_epi32(_mm512_permutexvar_epi8(act, K->T_act1), _mm512_permutexvar_epi8(lv, K->T_lvl));
    }
    /* token: (ctx << 11) | (x & 2047) -> symbol | (slot - start) << 7 | freq << 19 */
    const __m512i idx = _mm512_ternarylogic_epi32(_mm512_slli_epi32(ctx, PROB_BITS), V->xs, _mm512_set1_epi32(TOTAL - 1), 0xF8);
    const __m512i en = _mm512_i32gather_epi32(idx, K->ent, 4);
    T->s = _mm512_and_si512(en, _mm512_set1_epi32(0x7F));
    T->x1 = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_srli_epi32(en, 19), _mm512_srli_epi32(V->xs, PROB_BITS)),
                             _mm512_and_si512(_mm512_srli_epi32(en, 7), _mm512_set1_epi32(0xFFF)));
    T->nb = _mm512_permutex2var_epi8(K->T_nb0, T->s, K->T_nb1);
    T->bm = _mm512_permutex2var_epi8(K->T_bm0, T->s, K->T_bm1);
}

/* Phase B of one vector after its raw-bit renormalisation: residual, sample, range check, stores and
 * left histories (the caller shifts the up-histories). Returns nonzero when a sample is out of range. */
CSP_AVX512_TARGET CSP_INLINE int v3_finish(v3vec_t *V, v3tmp_t *T, const v3k_t *K, __m512i bits, int32_t *P, int32_t *E,
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
CSP_AVX512_TARGET static void v3_init(v3vec_t V[2], v3ring_t ring, const v3dec_t *D, int64_t t0, const int32_t *const X[5]) {
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
            ring[s & 3][a][0] = v3_upA(X[a], s, w, vA);
            ring[s & 3][a][1] = v3_upB(vB, vA);
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

/* Lane masks of step t: on (active lanes), m0 (lanes at column 0), mW (column W-1). m0/mW depend only
 * on t mod W (tables); all lanes are active in steps [full0, full1), between the ramps. */
typedef struct { uint32_t *m0, *mW; int64_t full0, full1; } v3masks_t;

/* Builds the tables of a plane; nonzero (and D->err set) when out of memory. */
static int v3_make_masks(v3masks_t *MK, v3dec_t *D) {
    const int64_t w = D->w;
    MK->m0 = (uint32_t *)malloc(sizeof(uint32_t) * 2 * (size_t)w);
    if (!MK->m0) { D->err = CSP_E_NOMEM; return 1; }
    MK->mW = MK->m0 + w;
    memset(MK->m0, 0, sizeof(uint32_t) * 2 * (size_t)w);
    for (int64_t k = 0; k < V3_LANES; k++) { /* lane k is at column x at steps t = x + 2k (mod w) */
        MK->m0[(2 * k) % w] |= 1u << k;
        MK->mW[(2 * k + w - 1) % w] |= 1u << k;
    }
    MK->full0 = 2 * (V3_LANES - 1); MK->full1 = D->tend;
    for (int64_t k = 0; k < V3_LANES; k++)
        if (D->n[k] * w + 2 * k < MK->full1) MK->full1 = D->n[k] * w + 2 * k;
    return 0;
}

static inline uint32_t v3_on(const v3masks_t *MK, const v3dec_t *D, int64_t t) {
    if (t >= MK->full0 && t < MK->full1) return 0xFFFFFFFFu;
    uint32_t on = 0;
    for (int64_t k = 0; k < V3_LANES; k++) {
        const int64_t q = t - 2 * k;
        if (q >= 0 && q < D->n[k] * D->w) on |= 1u << k;
    }
    return on;
}

static inline void v3_masks(const v3masks_t *MK, const v3dec_t *D, int64_t t, int64_t tw, v3tmp_t *TA, v3tmp_t *TB) {
    const uint32_t on = v3_on(MK, D, t), m0 = MK->m0[tw] & on, mW = MK->mW[tw];
    TA->on = (__mmask16)on; TB->on = (__mmask16)(on >> 16);
    TA->m0 = (__mmask16)m0; TB->m0 = (__mmask16)(m0 >> 16);
    TA->mW = (__mmask16)mW; TB->mW = (__mmask16)(mW >> 16);
}

/* The shared word stream of the kernels: read in place while at least 64 bytes remain (a step reads at
 * most 64); then from a zero-padded copy of the tail, stopping with an error if the stream runs out. */
typedef struct { const uint8_t *wp, *wend, *real; uint8_t tail[12 * V3_LANES]; } v3words_t;

static inline void v3_words_begin(v3words_t *S, const v3dec_t *D) { S->wp = D->wp; S->wend = D->wend; S->real = NULL; }

/* Before a step; nonzero when the stream has run out. */
static inline int v3_words_guard(v3words_t *S) {
    if (S->wend - S->wp >= 4 * V3_LANES) return 0;
    if (!S->real) {
        const int64_t rem = S->wend - S->wp;
        memset(S->tail, 0, sizeof S->tail);
        memcpy(S->tail, S->wp, (size_t)rem);
        S->real = S->wp; S->wp = S->tail; S->wend = S->tail + rem;
        return 0;
    }
    return S->wp > S->wend;
}

static inline void v3_words_end(v3words_t *S, v3dec_t *D) {
    if (S->real) {
        if (S->wp > S->wend) { D->err = CSP_E_DATA; S->wp = S->wend; }
        D->wp = S->real + (S->wp - S->tail);
    } else D->wp = S->wp;
}

CSP_AVX512_TARGET CSP_INLINE int64_t v3_avx512_kernel(v3dec_t *D, int64_t t0, int64_t t1, const int kind, const int mode,
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
        K.T_act0 = _mm512_loadu_si512(t_act0); K.T_act1 = _mm512_loadu_si512(t_act1); K.T_lvl = _mm512_loadu_si512(t_lvl);
        K.T_nb0 = _mm512_loadu_si512(t_nb); K.T_nb1 = _mm512_loadu_si512(t_nb + 64);
        K.T_bm0 = _mm512_loadu_si512(t_bm); K.T_bm1 = _mm512_loadu_si512(t_bm + 64);
        K.vlo = _mm512_set1_epi32(D->lo); K.vhi = _mm512_set1_epi32(D->hi); K.vspan = _mm512_set1_epi32(D->hi - D->lo);
        K.sh_act = _mm_cvtsi32_si128(1 + D->ash); K.sh_lvl = _mm_cvtsi32_si128(D->lsh);
        K.ent = (const int *)&D->T->ent[0][0];
    }
    const int32_t *const X[5] = {P, E, M, A, G};
    v3vec_t V[2];
    v3ring_t ring;
    v3_init(V, ring, D, t0, X);
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
        v3_phase_a(VA, &TA, &K, rotA, cross ? X0 + off : NULL, u2A, u3A, kind, mode, cross);
        v3_phase_a(VB, &TB, &K, rotB, cross ? X0 + off + 16 : NULL, u2B, u3B, kind, mode, cross);
        wp = v3_renorm(&TA.x1, TA.on, wp);
        wp = v3_renorm(&TB.x1, TB.on, wp);
        /* phase B: raw bits */
        const __m512i one = _mm512_set1_epi32(1);
        const __m512i bitsA = _mm512_and_si512(TA.x1, _mm512_sub_epi32(_mm512_sllv_epi32(one, TA.nb), one));
        const __m512i bitsB = _mm512_and_si512(TB.x1, _mm512_sub_epi32(_mm512_sllv_epi32(one, TB.nb), one));
        TA.x1 = _mm512_srlv_epi32(TA.x1, TA.nb);
        TB.x1 = _mm512_srlv_epi32(TB.x1, TB.nb);
        wp = v3_renorm(&TA.x1, TA.on, wp);
        wp = v3_renorm(&TB.x1, TB.on, wp);
        WS.wp = wp;
        bad |= v3_finish(VA, &TA, &K, bitsA, P, E, M, A, G, off, kind);
        bad |= v3_finish(VB, &TB, &K, bitsB, P, E, M, A, G, off + 16, kind);
        if (bad) break;
        /* the new vectors moved up one lane: the above-right neighbours of the next step (u1), then
         * its above and above-left ones (ring) */
        __m512i (*rg)[2] = ring[t & 3];
        rg[0][0] = VA->Pu1 = v3_upA(P, t, w, VA->Pl); rg[0][1] = VB->Pu1 = v3_upB(VB->Pl, VA->Pl);
        rg[1][0] = VA->Eu1 = v3_upA(E, t, w, VA->El); rg[1][1] = VB->Eu1 = v3_upB(VB->El, VA->El);
        if (sel) {
            rg[2][0] = VA->Mu1 = v3_upA(M, t, w, VA->Ml); rg[2][1] = VB->Mu1 = v3_upB(VB->Ml, VA->Ml);
            rg[3][0] = VA->Au1 = v3_upA(A, t, w, VA->Al); rg[3][1] = VB->Au1 = v3_upB(VB->Al, VA->Al);
            if (sel3) { rg[4][0] = VA->Gu1 = v3_upA(G, t, w, VA->Gl); rg[4][1] = VB->Gu1 = v3_upB(VB->Gl, VA->Gl); }
        }
    }
    free(MK.m0);
    _mm512_storeu_si512((void *)D->xs, VA->xs);
    _mm512_storeu_si512((void *)(D->xs + 16), VB->xs);
    if (bad) D->err = CSP_E_RANGE;
    v3_words_end(&WS, D);
    return t;
}

#define V3_K(k, m, x) case (k) * 4 + (m) * 2 + (x): return v3_avx512_kernel(D, t0, t1, k, m, x);

/* Decode steps t0 .. t1 - 1 (or fewer, on an error); returns the first step not decoded. */
CSP_AVX512_TARGET static int64_t v3_avx512_run(v3dec_t *D, int64_t t0, int64_t t1) {
    switch (D->kind * 4 + D->mode * 2 + (D->X0 != NULL)) {
        CSP_FOR_VARIANTS(V3_K)
        default: return t0;
    }
}

/* The emitter's input of n samples, one word each: raw bits (u's low TOK_NB[token] bits) | token << 16 |
 * context << 23 (so bits 16.. are the table index context * 128 + token), written over u. */
CSP_AVX512_TARGET static void v3_avx512_pack(const uint8_t *tk, const uint8_t *cx, uint32_t *uu, int64_t n) {
    const __m512i one = _mm512_set1_epi32(1), c16 = _mm512_set1_epi32(16), two = _mm512_set1_epi32(2);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512i t = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, (const void *)(tk + i)));
        const __m512i k = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, (const void *)(cx + i)));
        const __m512i u = _mm512_maskz_loadu_epi32(m, (const void *)(uu + i));
        /* TOK_NB: 0 below 16, else (t - 16) / 4 + 2 */
        const __m512i nb = _mm512_maskz_add_epi32(_mm512_cmpge_epi32_mask(t, c16), _mm512_srli_epi32(_mm512_sub_epi32(t, c16), 2), two);
        const __m512i raw = _mm512_and_si512(u, _mm512_sub_epi32(_mm512_sllv_epi32(one, nb), one));
        const __m512i pk = _mm512_or_si512(raw, _mm512_or_si512(_mm512_slli_epi32(t, 16), _mm512_slli_epi32(k, 23)));
        _mm512_mask_storeu_epi32((void *)(uu + i), m, pk);
    }
}

/* The rANS pass of one plane of 32 lanes, backwards (the encoder's side of v3_avx512_kernel): steps from
 * the last down, in each step phase B (raw bits) then phase A (tokens), each phase pushing the words of
 * lanes 31..16 then 15..0 (a compress-store per vector: ascending lanes at ascending addresses below wp,
 * as the scalar pass leaves them). Per lane the sample index is walked backwards and the sample's packed
 * word (pks, from v3_avx512_pack) gathered, then its table entry (fs: freq | start << 16 per context and
 * token, 128 per context). x / f is computed in float (quotient below 2^21, off by at most one) and corrected exactly.
 * Returns the new wp. */
CSP_AVX512_TARGET static int64_t v3_avx512_emit_plane(const v3sched_t *SC, int64_t w, const uint32_t *pks,
                                              const uint32_t *fs, uint32_t *xs, uint16_t *wbuf, int64_t wp) {
    uint8_t t_nb[128];
    for (int s = 0; s < 128; s++) t_nb[s] = s < NTOK ? TOK_NB[s] : 0;
    const __m512i T_nb0 = _mm512_loadu_si512(t_nb), T_nb1 = _mm512_loadu_si512(t_nb + 64);
    const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1), t7f = _mm512_set1_epi32(0x7F);
    const __m512i ffff = _mm512_set1_epi32(0xFFFF), c32 = _mm512_set1_epi32(32);
    const __m512i w1 = _mm512_set1_epi32((int)(w - 1));
    const __m512i wrap = _mm512_set1_epi32((int)(1 + (V3_LANES - 1) * w));
    __m512i X[2], Q[2], NW[2], COL[2], IDX[2];
    for (int h = 0; h < 2; h++) {
        int32_t q[16], nw[16], col[16], idx[16];
        for (int i = 0; i < 16; i++) {
            const int64_t k = 16 * h + i, q0 = SC->tend - 1 - 2 * k;
            const int64_t r = q0 >= 0 ? q0 / w : 0, x = q0 >= 0 ? q0 - r * w : 0;
            q[i] = (int32_t)q0; nw[i] = (int32_t)(SC->n[k] * w); col[i] = (int32_t)x;
            idx[i] = (int32_t)((k + V3_LANES * r) * w + x);
        }
        X[h] = _mm512_loadu_si512(xs + 16 * h); Q[h] = _mm512_loadu_si512(q); NW[h] = _mm512_loadu_si512(nw);
        COL[h] = _mm512_loadu_si512(col); IDX[h] = _mm512_loadu_si512(idx);
    }
    for (int64_t t = SC->tend - 1; t >= 0; t--) {
        __mmask16 on[2];
        __m512i tok[2], u[2], fsv[2];
        for (int h = 0; h < 2; h++) {
            on[h] = _mm512_cmpge_epi32_mask(Q[h], zero) & _mm512_cmplt_epi32_mask(Q[h], NW[h]);
            const __m512i pk = _mm512_mask_i32gather_epi32(zero, on[h], IDX[h], (const int *)pks, 4);
            const __m512i ct = _mm512_srli_epi32(pk, 16); /* context << 7 | token */
            tok[h] = _mm512_and_si512(ct, t7f);
            u[h] = _mm512_and_si512(pk, ffff);
            fsv[h] = _mm512_mask_i32gather_epi32(zero, on[h], ct, (const int *)fs, 4);
        }
        for (int h = 1; h >= 0; h--) { /* phase B: raw bits */
            const __m512i nb = _mm512_permutex2var_epi8(T_nb0, tok[h], T_nb1);
            __m512i v = X[h];
            const __mmask16 fl = _mm512_mask_cmpge_epu32_mask(on[h] & _mm512_cmpneq_epi32_mask(nb, zero), v,
                                                             _mm512_sllv_epi32(one, _mm512_sub_epi32(c32, nb)));
            const int n = _mm_popcnt_u32((unsigned)fl);
            _mm256_mask_compressstoreu_epi16((void *)(wbuf + wp - n), fl, _mm512_cvtepi32_epi16(v));
            wp -= n;
            v = _mm512_mask_srli_epi32(v, fl, v, 16);
            v = _mm512_or_si512(_mm512_sllv_epi32(v, nb), u[h]);
            X[h] = _mm512_mask_mov_epi32(X[h], on[h], v);
        }
        for (int h = 1; h >= 0; h--) { /* phase A: tokens */
            const __m512i f = _mm512_and_si512(fsv[h], ffff), start = _mm512_srli_epi32(fsv[h], 16);
            __m512i v = X[h];
            const __mmask16 fl = _mm512_mask_cmpge_epu32_mask(on[h], _mm512_srli_epi32(v, 21), f); /* v >= f << 21 */
            const int n = _mm_popcnt_u32((unsigned)fl);
            _mm256_mask_compressstoreu_epi16((void *)(wbuf + wp - n), fl, _mm512_cvtepi32_epi16(v));
            wp -= n;
            v = _mm512_mask_srli_epi32(v, fl, v, 16);
            const __m512i fsafe = _mm512_max_epi32(f, one); /* idle lanes: f = 0 */
            /* q = v / f to within one: v < f 2^21, so q < 2^21, and float(v) * (1/f) with 1/f from rcp14 and
             * one Newton step (relative error < 2^-22 in all) is off by less than one; the two corrections
             * below make q and r exact. 1/f does not depend on the state, so only the multiply is on the
             * state's dependency chain (a division was). */
            const __m512 ff = _mm512_cvtepi32_ps(fsafe), r0 = _mm512_rcp14_ps(ff);
            const __m512 rf = _mm512_fmadd_ps(r0, _mm512_fnmadd_ps(ff, r0, _mm512_set1_ps(1.0f)), r0);
            __m512i q = _mm512_cvttps_epu32(_mm512_mul_ps(_mm512_cvtepu32_ps(v), rf));
            __m512i r = _mm512_sub_epi32(v, _mm512_mullo_epi32(q, fsafe));
            const __mmask16 neg = _mm512_cmplt_epi32_mask(r, zero);
            q = _mm512_mask_sub_epi32(q, neg, q, one); r = _mm512_mask_add_epi32(r, neg, r, fsafe);
            const __mmask16 big = _mm512_cmpge_epi32_mask(r, fsafe);
            q = _mm512_mask_add_epi32(q, big, q, one); r = _mm512_mask_sub_epi32(r, big, r, fsafe);
            v = _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(q, PROB_BITS), r), start);
            X[h] = _mm512_mask_mov_epi32(X[h], on[h], v);
        }
        for (int h = 0; h < 2; h++) { /* one sample back: the previous column, or the end of the row above */
            Q[h] = _mm512_sub_epi32(Q[h], one);
            const __mmask16 w0 = _mm512_cmpeq_epi32_mask(COL[h], zero);
            IDX[h] = _mm512_mask_sub_epi32(_mm512_sub_epi32(IDX[h], one), w0, IDX[h], wrap);
            COL[h] = _mm512_mask_mov_epi32(_mm512_sub_epi32(COL[h], one), w0, w1);
        }
    }
    _mm512_storeu_si512((void *)xs, X[0]);
    _mm512_storeu_si512((void *)(xs + 16), X[1]);
    return wp;
}
