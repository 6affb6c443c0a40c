/* AVX-512 code of bitstream version 3 shared by the decoder kernels (lane masks, the word stream) and
 * the encoder's rANS pass.
 *
 * Included by cspcodec3.c before the decoder kernels (cspcodec3_avx512_32.c, cspcodec3_avx512_16.c);
 * compiled with CSP_AVX512_TARGET (cspcodec_enc_avx512.c) and called only after a run-time CPU check.
 */

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

/* The output passes' bookkeeping of lane k over a block of B steps (B <= W): x, r (the lane's column and
 * row index at the block's first step) advance by B. Returns 0 when none of the block's samples is the
 * lane's; else R gets [lo, hi) (the valid elements j: sample r W + x + j in [0, n_k W)), jc (the
 * elements before the row end; the others go to the lane's next row) and the row y and column x0 of
 * element 0. */
typedef struct { int64_t lo, hi, jc, y, x0; } v3run_t;

static inline int v3_lane_run(int64_t *x, int64_t *r, int64_t k, int64_t B, int64_t w, const int64_t *n, v3run_t *R) {
    const int64_t x0 = *x, r0 = *r, q = r0 * w + x0;
    *x += B;
    if (*x >= w) { *x -= w; (*r)++; }
    R->lo = q < 0 ? -q : 0;
    R->hi = n[k] * w - q < B ? n[k] * w - q : B;
    if (R->lo >= R->hi) return 0;
    R->jc = w - x0 < B ? w - x0 : B;
    R->y = k + V3_LANES * r0;
    R->x0 = x0;
    return 1;
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
