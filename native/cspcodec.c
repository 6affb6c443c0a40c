/* CSP lossless predictive pixel codec, bitstream version 1 (its encoder: cspcodec_enc.c; versions 2 and 3:
 * cspcodec2.c and cspcodec3.c,
 * included at the end).
 *
 * The bitstream is defined by csp/codecs/lossless/reference.py and described in docs/codec.md; this
 * file must produce and accept exactly the same bytes. No global mutable state; every call owns its
 * scratch memory. The decoder checks every read against the stream bounds and every decoded sample
 * against its range, so a corrupt stream yields an error code, never an out-of-bounds access.
 */
#include "cspcodec.h"

#include <stdlib.h>
#include <string.h>

/* 64-byte aligned blocks (free with csp_free64): the vector kernels load and store whole 64-byte rows of
 * their scratch buffers, and a buffer at malloc's 16-byte alignment splits every one of them across two
 * cache lines. The block's malloc pointer is kept just before it. */
static void *csp_alloc64(size_t n) {
    unsigned char *raw = (unsigned char *)malloc(n + 64 + sizeof(void *));
    if (!raw) return NULL;
    void **a = (void **)(((uintptr_t)(raw + sizeof(void *)) + 63) & ~(uintptr_t)63);
    a[-1] = raw;
    return a;
}
static void csp_free64(void *p) { if (p) free(((void **)p)[-1]); }

#define NTOK 76
#define N_XFORM 6 /* 0 = none, 1 + k = RCT with V = (B - G) - ((k * U) >> 2), k = 0..4 */
#define PROB_BITS 11
#define TOTAL (1u << PROB_BITS)
#define RANS_L (1u << 16)
#define N_STREAMS 4
#define N_PRED 5
#define PRED_SEL 3
#define PRED_SEL3 4
#define MAX_CTX 32
#define NLVL 6
#define N_JOINT (16 * NLVL) /* joint context classes of the encoder: mode-0 context x level class */
#define HEADER_SIZE 20
#define PLANE_SIZE (8 + 8 * N_STREAMS)

static const int N_CTX[2] = {16, 30};

#if defined(__GNUC__) || defined(__clang__)
#define CSP_INLINE static inline __attribute__((always_inline))
#else
#define CSP_INLINE static inline
#endif
static const uint8_t MAGIC[4] = {'C', 'S', 'P', 'L'};

/* ------------------------------------------------------------------ small helpers */
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void wr16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static uint32_t crc32_bytes(const uint8_t *p, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static inline int bitlen64(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }

static inline int act0_ctx(int act) {
    static const int thr[15] = {1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 22, 26, 32, 40};
    int k = 0;
    while (k < 15 && act >= thr[k]) k++;
    return k;
}
static inline int act1_cls(int act) { return act >= 4 ? 4 : act; }
static inline int lvl_cls(int v) { /* thresholds 1, 2, 4, 8, 16 */
    return v < 1 ? 0 : v < 2 ? 1 : v < 4 ? 2 : v < 8 ? 3 : v < 16 ? 4 : 5;
}

typedef struct {
    uint8_t act0[256];
    uint8_t act1[256]; /* activity class * NLVL */
    uint8_t lvl[32];
} luts_t;

static void make_luts(luts_t *L) {
    for (int i = 0; i < 256; i++) { L->act0[i] = (uint8_t)act0_ctx(i); L->act1[i] = (uint8_t)(act1_cls(i) * NLVL); }
    for (int i = 0; i < 32; i++) L->lvl[i] = (uint8_t)lvl_cls(i);
}

static inline int32_t clamp32(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline int32_t iabs32(int32_t v) { return v < 0 ? -v : v; }

/* Prediction clamped to [lo, hi]. MED and AVG2 stay within [min(a, b), max(a, b)], so they need no
 * clamp when a and b are in range (always, in the encoder and in a valid stream; the decoder rejects
 * out-of-range samples). */
CSP_INLINE int32_t predict(int kind, int32_t a, int32_t b, int32_t c, int32_t d, int32_t lo, int32_t hi) {
    if (kind == 0) {
        int32_t mx = a > b ? a : b, mn = a < b ? a : b;
        return c >= mx ? mn : (c <= mn ? mx : a + b - c);
    }
    if (kind == 1) return clamp32((2 * a + 2 * b - c + d + 2) >> 2, lo, hi); /* >> is a floor shift */
    return (a + b + 1) >> 1;
}

static int64_t mitchell_log2(uint64_t x) {
    int n = bitlen64(x) - 1;
    return ((int64_t)n << 8) + (int64_t)(((x << 8) >> n) - 256);
}

/* Deterministic normalisation to TOTAL (see reference.normalize). */
static void normalize(const uint64_t *w, int n, uint32_t *f) {
    uint64_t wt = 0;
    for (int s = 0; s < n; s++) wt += w[s];
    int64_t sum = 0;
    for (int s = 0; s < n; s++) {
        uint64_t v = w[s] ? (w[s] * TOTAL) / wt : 0;
        if (w[s] && v < 1) v = 1;
        f[s] = (uint32_t)v;
        sum += v;
    }
    int64_t diff = (int64_t)TOTAL - sum;
    while (diff != 0) {
        int i = 0;
        for (int s = 1; s < n; s++) if (f[s] > f[i]) i = s;
        if (diff > 0) { f[i] += (uint32_t)diff; diff = 0; }
        else {
            int64_t take = -diff < (int64_t)f[i] - 1 ? -diff : (int64_t)f[i] - 1;
            if (take == 0) break; /* impossible: NTOK < TOTAL */
            f[i] -= (uint32_t)take;
            diff += take;
        }
    }
}

static inline uint32_t dequant(int len, uint32_t mant) {
    if (len <= 2) return len == 0 ? 0 : ((1u << (len - 1)) | mant);
    return ((2u | mant) << (len - 2)) + (1u << (len - 3));
}

/* ------------------------------------------------------------------ bit writer / reader */
typedef struct { uint8_t *buf; int64_t pos, cap; uint64_t acc; int n; int overflow; } bitw_t;

static inline void bw_put(bitw_t *w, uint64_t v, int nb) {
    if (!nb) return;
    w->acc |= (v & ((1ull << nb) - 1)) << w->n;
    w->n += nb;
    while (w->n >= 8) {
        if (w->pos < w->cap) w->buf[w->pos++] = (uint8_t)w->acc; else w->overflow = 1;
        w->acc >>= 8; w->n -= 8;
    }
}
static inline void bw_finish(bitw_t *w) {
    if (w->n) { if (w->pos < w->cap) w->buf[w->pos++] = (uint8_t)w->acc; else w->overflow = 1; }
    w->acc = 0; w->n = 0;
}

typedef struct { const uint8_t *p; int64_t len, bytepos; uint64_t acc; int n; int64_t bits_read; } bitr_t;

static inline void br_init(bitr_t *r, const uint8_t *p, int64_t len) {
    r->p = p; r->len = len; r->bytepos = 0; r->acc = 0; r->n = 0; r->bits_read = 0;
}
/* nb <= 32; returns -1 (as int64) on overrun */
static inline int64_t br_get(bitr_t *r, int nb) {
    if (!nb) return 0;
    while (r->n < nb) {
        if (r->bytepos >= r->len) return -1;
        r->acc |= (uint64_t)r->p[r->bytepos++] << r->n;
        r->n += 8;
    }
    uint64_t v = r->acc & ((1ull << nb) - 1);
    r->acc >>= nb; r->n -= nb; r->bits_read += nb;
    return (int64_t)v;
}
static inline int br_at_end(const bitr_t *r) { return ((r->bits_read + 7) >> 3) == r->len; }

/* ------------------------------------------------------------------ planes */
typedef struct { int32_t lo, hi; } range_t;

static range_t plane_range(int xform, int plane, int32_t maxv) {
    range_t r = {0, maxv};
    if (xform >= 1 && plane == 1) r.lo = -maxv;
    if (xform >= 1 && plane == 2) { r.hi = maxv + (((xform - 1) * maxv + 3) >> 2); r.lo = -r.hi; }
    return r;
}

static inline int32_t rct(int xform, int pl, int32_t r, int32_t g, int32_t b) {
    if (pl == 0) return (r + 2 * g + b) >> 2;
    if (pl == 1) return r - g;
    return (b - g) - (((xform - 1) * (r - g)) >> 2);
}

/* Inverse of rct: R, G, B from the Y, U, V samples of one pixel under transform xform >= 1. */
static inline void inverse_rct(int xform, int32_t Y, int32_t U, int32_t V, int32_t *r, int32_t *g, int32_t *b) {
    const int32_t v = V + (((xform - 1) * U) >> 2);
    *g = Y - ((U + v) >> 2);
    *r = U + *g;
    *b = v + *g;
}

static inline int32_t plane_sample(const void *src, int bps, int64_t w, int64_t c, int xform, int pl,
                                   int64_t y, int64_t x) {
    const int64_t i = (y * w + x) * c;
    if (xform == 0) return bps == 1 ? ((const uint8_t *)src)[i + pl] : ((const uint16_t *)src)[i + pl];
    int32_t r, g, b;
    if (bps == 1) { const uint8_t *q = (const uint8_t *)src + i; r = q[0]; g = q[1]; b = q[2]; }
    else { const uint16_t *q = (const uint16_t *)src + i; r = q[0]; g = q[1]; b = q[2]; }
    return rct(xform, pl, r, g, b);
}

/* Selection rows: y = 1, 5, 9, ... (row 0 for one-row planes); their predictions need row y - 1. */
static inline int sel_row(int64_t y, int64_t h) { return (h > 1 ? y >= 1 && ((y - 1) & 3) == 0 : y == 0); }
static inline int sel_needed(int64_t y, int64_t h) { return sel_row(y, h) || (y + 1 < h && sel_row(y + 1, h)); }

/* AVX-512 row kernels of the model analysis (run-time dispatch) */
#include "cspcodec_enc_avx512.c"
#include "cspcodec_enc_avx512_16.c"

/* Fill padded plane buffer P ((h+1) x (w+2)) of channel/plane `pl` of src under xform (only the rows
 * the selection-row statistics need when sel_only). */
static void fill_plane(const void *src, int bps, int64_t h, int64_t w, int64_t c, int xform, int pl, int32_t *P,
                       int sel_only, int simd) {
    int64_t W2 = w + 2;
    memset(P, 0, sizeof(int32_t) * (size_t)W2);
    for (int64_t y = 0; y < h; y++) {
#if CSP_X86_AVX512
        if (simd && c == 3 && w < 65536 && (!sel_only || sel_needed(y, h))) {
            int32_t *row = P + (y + 1) * W2;
            enc_fill_row_rgb((const uint8_t *)src + y * w * 3 * bps, bps, w, xform, pl, row + 1);
            row[0] = y > 0 ? plane_sample(src, bps, w, c, xform, pl, y - 1, 0) : 0; /* row y-1 may be unfilled */
            row[w + 1] = row[w];
            continue;
        }
#else
        (void)simd;
#endif
        if (sel_only) {
            if (!sel_needed(y, h)) continue;
            int32_t *row = P + (y + 1) * W2;
            for (int64_t x = 0; x < w; x++) row[x + 1] = plane_sample(src, bps, w, c, xform, pl, y, x);
            row[0] = y > 0 ? plane_sample(src, bps, w, c, xform, pl, y - 1, 0) : 0;
            row[w + 1] = row[w];
            continue;
        }
        int32_t *row = P + (y + 1) * W2;
        const int64_t base = y * w * c;
        if (xform == 0) {
            if (bps == 1) { const uint8_t *s = (const uint8_t *)src + base + pl; for (int64_t x = 0; x < w; x++) row[x + 1] = s[x * c]; }
            else { const uint16_t *s = (const uint16_t *)src + base + pl; for (int64_t x = 0; x < w; x++) row[x + 1] = s[x * c]; }
        } else {
            for (int64_t x = 0; x < w; x++) {
                int32_t r, g, b;
                if (bps == 1) { const uint8_t *s = (const uint8_t *)src + base + x * 3; r = s[0]; g = s[1]; b = s[2]; }
                else { const uint16_t *s = (const uint16_t *)src + base + x * 3; r = s[0]; g = s[1]; b = s[2]; }
                row[x + 1] = rct(xform, pl, r, g, b);
            }
        }
        row[0] = P[y * W2 + 1];
        row[w + 1] = row[w];
    }
}

static inline int bitlen32(int32_t v) { return v ? 32 - __builtin_clz((uint32_t)v) : 0; }

/* Sum of bit_length(|x - MED|) over the selection rows (colour transform choice). */
static int64_t med_cost(const int32_t *P, int64_t h, int64_t w, range_t rg, int simd) {
    int64_t W2 = w + 2, s = 0;
    for (int64_t y = (h > 1 ? 1 : 0); y < h; y += 4) {
        const int32_t *pr = P + y * W2, *cr = pr + W2;
#if CSP_X86_AVX512
        if (simd && w < 65536) { s += enc_med_cost_row(pr, cr, w); continue; }
#else
        (void)simd;
#endif
        for (int64_t x = 0; x < w; x++)
            s += bitlen32(iabs32(cr[x + 1] - predict(0, cr[x], pr[x + 1], pr[x], pr[x + 2], rg.lo, rg.hi)));
    }
    return s;
}

static int64_t plane_abs_sum(const int32_t *P, int64_t h, int64_t w, int64_t *count) {
    int64_t W2 = w + 2, s = 0, n = 0;
    for (int64_t y = 0; y < h; y++) {
        const int32_t *cr = P + (y + 1) * W2;
        for (int64_t x = 0; x < w; x++) s += iabs32(cr[x + 1]);
        n += w;
    }
    *count = n;
    return s;
}

#define MAX_SAMPLES (1ll << 32) /* H * W * C must stay below this */

/* 1 <= h, w and h * w * c < MAX_SAMPLES (checked without overflow; c <= 65535) */
static int shape_ok(int64_t h, int64_t w, int64_t c) {
    if (h < 1 || w < 1 || c < 1 || h >= MAX_SAMPLES || w >= MAX_SAMPLES || w > MAX_SAMPLES / h) return 0;
    return h * w * c < MAX_SAMPLES;
}

int64_t csp_encode_bound(int64_t h, int64_t w, int64_t c, int bps) {
    if (h < 1 || w < 1 || c < 1 || c > 65535 || (bps != 1 && bps != 2)) return CSP_E_ARG;
    if (!shape_ok(h, w, c)) return CSP_E_ARG;
    int64_t n = h * w;
    return HEADER_SIZE + 4 + c * (PLANE_SIZE + 2048 + 16 + n * 4);
}

/* ------------------------------------------------------------------ encoder (model analysis, version 1) */
#include "cspcodec_enc.c"

/* ------------------------------------------------------------------ decoder */
typedef struct {
    int kind, mode, ashift, lshift;
    int64_t tl, rl[N_STREAMS], bl[N_STREAMS], size;
} plane_desc_t;

static void read_desc(const uint8_t *d, plane_desc_t *D) {
    D->kind = d[0]; D->mode = d[1]; D->ashift = d[2]; D->lshift = d[3];
    D->tl = rd32(d + 4);
    D->size = D->tl;
    for (int j = 0; j < N_STREAMS; j++) {
        D->rl[j] = rd32(d + 8 + 8 * j); D->bl[j] = rd32(d + 12 + 8 * j);
        D->size += D->rl[j] + D->bl[j];
    }
}

/* The header checks of every bitstream version: magic, version byte, channel count, the CRC-32 of the
 * first hlen = fixed + per_plane * C bytes, sample type, transform, shape; with strict, zero reserved
 * bytes (versions 2 and 3). */
static int check_header(const uint8_t *src, int64_t n, int version, int64_t fixed, int64_t per_plane, int strict,
                        int64_t *h, int64_t *w, int64_t *c, int *bps, int *xform, int64_t *hlen_out) {
    if (!src || n < HEADER_SIZE) return CSP_E_HEADER;
    if (memcmp(src, MAGIC, 4) != 0) return CSP_E_MAGIC;
    if (src[4] != version) return CSP_E_VERSION;
    int64_t cc = rd16(src + 16);
    int64_t hlen = fixed + per_plane * cc;
    if (cc == 0 || n < hlen + 4) return CSP_E_HEADER;
    if (rd32(src + hlen) != crc32_bytes(src, (size_t)hlen)) return CSP_E_HEADER;
    int b = src[5], xf = src[6];
    if ((b != 1 && b != 2) || xf >= N_XFORM || (xf >= 1 && cc != 3)) return CSP_E_HEADER;
    if (strict && (src[7] || rd16(src + 18))) return CSP_E_HEADER;
    int64_t hh = rd32(src + 8), ww = rd32(src + 12);
    if (!shape_ok(hh, ww, cc)) return CSP_E_HEADER;
    *h = hh; *w = ww; *c = cc; *bps = b; *xform = xf; *hlen_out = hlen;
    return CSP_OK;
}

static int parse_header(const uint8_t *src, int64_t n, int64_t *h, int64_t *w, int64_t *c, int *bps, int *xform) {
    int64_t hh, ww, cc, hlen; int b, xf;
    int rc = check_header(src, n, 1, HEADER_SIZE, PLANE_SIZE, 0, &hh, &ww, &cc, &b, &xf, &hlen);
    if (rc) return rc;
    int64_t total = hlen + 4;
    for (int64_t p = 0; p < cc; p++) {
        const uint8_t *d = src + HEADER_SIZE + PLANE_SIZE * p;
        if (d[0] >= N_PRED || d[1] > 1 || d[2] > 15 || d[3] > 15) return CSP_E_HEADER;
        total += (int64_t)rd32(d + 4);
        for (int j = 0; j < N_STREAMS; j++) {
            int64_t rl = rd32(d + 8 + 8 * j);
            if (rl < 4 || (rl & 1)) return CSP_E_HEADER;
            total += rl + (int64_t)rd32(d + 12 + 8 * j);
        }
    }
    if (total != n) return CSP_E_HEADER;
    *h = hh; *w = ww; *c = cc; *bps = b; *xform = xf;
    return CSP_OK;
}

static int v2_parse_header(const uint8_t *src, int64_t n, int64_t *h, int64_t *w, int64_t *c, int *bps, int *xform);
static int csp_decode2(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes);
static int v3_parse_header(const uint8_t *src, int64_t n, int64_t *h, int64_t *w, int64_t *c, int *bps, int *xform,
                           int64_t *tl, int64_t *wl);
static int csp_decode3(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes, int flags);

int csp_decode_info(const uint8_t *src, int64_t n, int64_t *h, int64_t *w, int64_t *c, int *bps) {
    int xf;
    if (src && n >= HEADER_SIZE && src[4] == 2) return v2_parse_header(src, n, h, w, c, bps, &xf);
    if (src && n >= HEADER_SIZE && src[4] == 3) { int64_t tl, wl; return v3_parse_header(src, n, h, w, c, bps, &xf, &tl, &wl); }
    return parse_header(src, n, h, w, c, bps, &xf);
}

/* Decoding table: per context and slot, symbol (7 bits) | slot - start (12 bits) << 7 | freq << 19. */
typedef struct {
    uint32_t ent[MAX_CTX][TOTAL];
} dtables_t;

/* Read one context's frequency table (shared by bitstream versions 1 and 2): symbol count into
 * *nsym, normalised frequencies (summing to TOTAL) into f. Returns CSP_OK or CSP_E_TABLE. */
static int read_freqs(bitr_t *r, uint32_t f[NTOK], int *nsym_out) {
    uint64_t wts[NTOK];
    int64_t present = br_get(r, 1);
    if (present < 0) return CSP_E_TABLE;
    if (!present) { *nsym_out = 1; f[0] = TOTAL; return CSP_OK; }
    int64_t v = br_get(r, 7);
    if (v < 0 || v + 1 > NTOK) return CSP_E_TABLE;
    int nsym = (int)v + 1;
    uint64_t any = 0;
    int64_t prev = 0;
    for (int s = 0; s < nsym; s++) {
        int64_t len, b0 = br_get(r, 1), b1 = 0, b2 = 0;
        if (b0 == 1) b1 = br_get(r, 1);
        if (b1 == 1) b2 = br_get(r, 1);
        if (b0 < 0 || b1 < 0 || b2 < 0) return CSP_E_TABLE;
        if (!b0) len = prev;
        else if (!b1) len = prev - 1;
        else if (!b2) len = prev + 1;
        else len = br_get(r, 4);
        if (len < 0 || len > PROB_BITS + 1) return CSP_E_TABLE;
        int64_t mant = br_get(r, len >= 2 ? 1 : 0);
        if (mant < 0) return CSP_E_TABLE;
        wts[s] = dequant((int)len, (uint32_t)mant);
        any |= wts[s];
        prev = len;
    }
    if (!any) return CSP_E_TABLE;
    normalize(wts, nsym, f);
    *nsym_out = nsym;
    return CSP_OK;
}

/* Fill the decoding-table entries of one symbol: e[q] = v + (q << 7) for q < f. */
typedef void (*fill_fn)(uint32_t *e, uint32_t v, uint32_t f);

static void fill_entries(uint32_t *e, uint32_t v, uint32_t f) {
    for (uint32_t q = 0; q < f; q++) e[q] = v + (q << 7); /* vectorised */
}

/* Read nctx context tables from *r into T (versions 1 and 3); fill writes each symbol's entries. */
static int read_tables_from(bitr_t *r, int nctx, dtables_t *T, fill_fn fill) {
    for (int k = 0; k < nctx; k++) {
        uint32_t f[NTOK];
        int nsym;
        if (read_freqs(r, f, &nsym) != CSP_OK) return CSP_E_TABLE;
        uint32_t acc = 0;
        for (int s = 0; s < nsym; s++) {
            fill(T->ent[k] + acc, (uint32_t)s | (f[s] << 19), f[s]);
            acc += f[s];
        }
    }
    return CSP_OK;
}

static int read_tables(const uint8_t *p, int64_t len, int nctx, dtables_t *T) {
    bitr_t r; br_init(&r, p, len);
    int rc = read_tables_from(&r, nctx, T, fill_entries);
    if (rc) return rc;
    if (!br_at_end(&r)) return CSP_E_TABLE;
    return CSP_OK;
}

/* Decoder stream: rANS state and word pointer, raw-bit reader (p/end/acc/n). The scalar fields are
 * 64-bit so that stores to the int32 sample rows cannot alias them (keeps them in registers). */
typedef struct {
    uint64_t x;
    const uint8_t *wp, *wend;
    const uint8_t *bp, *bend;
    uint64_t acc;
    int64_t n;
    uint64_t err;  /* stream overrun seen */
} dstream_t;

typedef struct {
    const luts_t *L;
    const dtables_t *T;
    int ash, lsh;
    int32_t lo, hi;
} dctx_t;

/* Per-plane scratch layout: four padded (h+1) x (w+2) int32 arrays in one block, at fixed offsets
 * from the pixel array P: |e| (OFF_E), |x - MED| (OFF_M), |x - AVG4| (OFF_A). The cross-plane |e| (plane
 * 0 under RCT) is at offset xoff from P. A row is then addressed by one pointer `cr` (current padded
 * pixel row) and W2 = w + 2. */
#define OFF_E (1 * ps)
#define OFF_M (2 * ps)
#define OFF_A (3 * ps)
#define OFF_G (4 * ps)
#define NARR 5 /* arrays per plane block */

/* Raw bits (0 <= nb <= 16) from a stream; flags *err on overrun. Refills 32 bits at a time while at
 * least four bytes remain, then byte by byte. */
CSP_INLINE uint32_t ds_bits(dstream_t *S, int nb) {
    if (S->n < 16) {
        if (S->bend - S->bp >= 4) { S->acc |= (uint64_t)rd32(S->bp) << S->n; S->bp += 4; S->n += 32; }
        else {
            while (S->n < nb) {
                if (S->bp < S->bend) S->acc |= (uint64_t)(*S->bp++) << S->n;
                else S->err = 1;
                S->n += 8;
            }
        }
    }
    uint32_t v = (uint32_t)(S->acc & ((1u << nb) - 1));
    S->acc >>= nb; S->n -= nb;
    return v;
}

/* Token -> (raw bit count, base value): u = base | raw bits. */
static const uint8_t TOK_NB[NTOK] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 8,
    9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14,
    15, 15, 15, 15, 16, 16, 16, 16};

/* Decode sample x of the row at cr. Returns nonzero on a range error; stream errors go to S->err.
 * kind (predictor), mode (context mode) and cross (cross-plane context) are compile-time constants at
 * every call site (see decode_rows), so each combination gets its own branch-free copy. */
CSP_INLINE int decode_sample(const dctx_t *C, int32_t *cr, const int64_t W2, const int64_t ps, const int64_t xoff,
                             int64_t x, dstream_t *S, const int kind, const int mode, const int cross) {
    const int32_t *pr = cr - W2;
    int32_t *ce = cr + OFF_E;
    const int32_t *pe = ce - W2;
    int32_t a = cr[x], b = pr[x + 1], c = pr[x], d = pr[x + 2];
    int32_t p, pm = 0, pa = 0;
    int32_t pg = 0;
    if (kind == PRED_SEL) {
        pm = predict(0, a, b, c, d, C->lo, C->hi);
        pa = predict(1, a, b, c, d, C->lo, C->hi);
        const int32_t *cm = cr + OFF_M, *ca = cr + OFF_A;
        p = sel_pred(cm - W2, cm, ca - W2, ca, x, pm, pa);
    } else if (kind == PRED_SEL3) {
        pm = predict(0, a, b, c, d, C->lo, C->hi);
        pa = predict(1, a, b, c, d, C->lo, C->hi);
        pg = grad_pred(a, b, c, C->lo, C->hi);
        const int32_t *cm = cr + OFF_M, *ca = cr + OFF_A, *cg = cr + OFF_G;
        p = sel3_pred(cm - W2, cm, ca - W2, ca, cg - W2, cg, x, pm, pa, pg);
    } else p = predict(kind, a, b, c, d, C->lo, C->hi);
    int32_t act = iabs32(a - c) + iabs32(b - c) + iabs32(b - d) + pe[x + 1] + pe[x] + pe[x + 2] + 2 * ce[x];
    if (cross) act += 2 * cr[xoff + x + 1];
    act >>= C->ash;
    if (act > 255) act = 255;
    int k;
    if (mode == 0) k = C->L->act0[act];
    else { int32_t lv = p < 0 ? 0 : (p >> C->lsh); if (lv > 31) lv = 31; k = C->L->act1[act] + C->L->lvl[lv]; }
    uint32_t xs = (uint32_t)S->x;
    uint32_t slot = xs & (TOTAL - 1);
    uint32_t ent = C->T->ent[k][slot];
    int s = (int)(ent & 0x7F);
    xs = (ent >> 19) * (xs >> PROB_BITS) + ((ent >> 7) & 0xFFF);
    /* branch-free renormalisation (the branch would be unpredictable) */
    int need = xs < RANS_L, avail = S->wp < S->wend;
    uint32_t word = avail ? rd16(S->wp) : 0;
    xs = need ? (xs << 16) | word : xs;
    S->wp += 2 * (need & avail);
    S->err |= (uint64_t)(need & !avail);
    S->x = xs;
    int nb = TOK_NB[s];
    uint32_t base = s < 16 ? (uint32_t)s : ((4u | (uint32_t)((s - 16) & 3)) << nb);
    uint32_t u = base | ds_bits(S, nb);
    int32_t e = (int32_t)(u >> 1) ^ -(int32_t)(u & 1);
    int32_t v0 = p + e, v = clamp32(v0, C->lo, C->hi); /* stored clamped: no overflow on corrupt input */
    cr[x + 1] = v;
    ce[x + 1] = iabs32(e);
    if (kind == PRED_SEL || kind == PRED_SEL3) { cr[OFF_M + x + 1] = iabs32(v - pm); cr[OFF_A + x + 1] = iabs32(v - pa); }
    if (kind == PRED_SEL3) cr[OFF_G + x + 1] = iabs32(v - pg);
    return v != v0;
}

/* The row loop of decode_plane for one (predictor, context mode, cross-plane) combination. Rows
 * y0..y0+3 are decoded together as a wavefront (row r runs two samples behind row r-1): each row has
 * its own stream, so these are four independent dependency chains. */
CSP_INLINE int decode_rows(const dctx_t *C, int32_t *P, const int64_t ps, const int64_t xoff, dstream_t *S,
                           int64_t h, int64_t w, const int kind, const int mode, const int cross) {
    const int64_t W2 = w + 2;
    int bad = 0;
    for (int64_t y0 = 0; y0 < h; y0 += N_STREAMS) {
        int nr = h - y0 < N_STREAMS ? (int)(h - y0) : N_STREAMS;
        int32_t *cr0 = P + (y0 + 1) * W2;
        for (int r = 0; r < nr; r++) { /* zero the |e| pads; left pixel pad is set when the row starts */
            int32_t *cr = cr0 + r * W2;
            cr[OFF_E] = cr[OFF_E + w + 1] = cr[OFF_M] = cr[OFF_M + w + 1] = cr[OFF_A] = cr[OFF_A + w + 1] = 0;
            cr[OFF_G] = cr[OFF_G + w + 1] = 0;
        }
        if (nr == N_STREAMS && w >= 8) {
            int32_t *c1 = cr0 + W2, *c2 = cr0 + 2 * W2, *c3 = cr0 + 3 * W2;
            for (int64_t t = 0; t < 6; t++) /* ramp-up: row r starts at t = 2r */
                for (int r = 0; r < 4; r++) {
                    int64_t x = t - 2 * r;
                    int32_t *cr = cr0 + r * W2;
                    if (x < 0) break;
                    if (x == 0) cr[0] = cr[1 - W2];
                    bad |= decode_sample(C, cr, W2, ps, xoff, x, &S[r], kind, mode, cross);
                }
            c3[0] = c3[1 - W2];
            dstream_t s0 = S[0], s1 = S[1], s2 = S[2], s3 = S[3]; /* locals: kept in registers */
            for (int64_t x = 6; x < w; x++) { /* steady state, all four rows active */
                bad |= decode_sample(C, cr0, W2, ps, xoff, x, &s0, kind, mode, cross);
                bad |= decode_sample(C, c1, W2, ps, xoff, x - 2, &s1, kind, mode, cross);
                bad |= decode_sample(C, c2, W2, ps, xoff, x - 4, &s2, kind, mode, cross);
                bad |= decode_sample(C, c3, W2, ps, xoff, x - 6, &s3, kind, mode, cross);
            }
            S[0] = s0; S[1] = s1; S[2] = s2; S[3] = s3;
            cr0[w + 1] = cr0[w];
            for (int64_t t = w; t < w + 6; t++) /* ramp-down */
                for (int r = 1; r < 4; r++) {
                    int64_t x = t - 2 * r;
                    int32_t *cr = cr0 + r * W2;
                    if (x >= w || x < 0) continue;
                    bad |= decode_sample(C, cr, W2, ps, xoff, x, &S[r], kind, mode, cross);
                    if (x == w - 1) cr[w + 1] = cr[w];
                }
        } else {
            for (int r = 0; r < nr; r++) { /* narrow tiles / last rows: plain raster order */
                int32_t *cr = cr0 + r * W2;
                cr[0] = cr[1 - W2];
                for (int64_t x = 0; x < w; x++)
                    bad |= decode_sample(C, cr, W2, ps, xoff, x, &S[r], kind, mode, cross);
                cr[w + 1] = cr[w];
            }
        }
        if (bad) return CSP_E_RANGE;
        if (S[0].err | S[1].err | S[2].err | S[3].err) return CSP_E_DATA;
    }
    return CSP_OK;
}

/* Every (predictor, context mode, cross-plane context) combination, for the switches that dispatch to
 * a decoder specialised at compile time (versions 1 and 3); the case label is kind * 4 + mode * 2 + x. */
#define CSP_FOR_VARIANTS(X) \
    X(0, 0, 0) X(0, 0, 1) X(0, 1, 0) X(0, 1, 1) X(1, 0, 0) X(1, 0, 1) X(1, 1, 0) X(1, 1, 1) \
    X(2, 0, 0) X(2, 0, 1) X(2, 1, 0) X(2, 1, 1) X(3, 0, 0) X(3, 0, 1) X(3, 1, 0) X(3, 1, 1) \
    X(4, 0, 0) X(4, 0, 1) X(4, 1, 0) X(4, 1, 1)

#define CSP_ROWS(k, m, x) case (k) * 4 + (m) * 2 + (x): rc = decode_rows(&C, P, ps, xoff, S, h, w, k, m, x); break;

/* Decode one plane into the block at P (layout above); xoff = offset of the cross-plane |e| or 0. */
static int decode_plane(const uint8_t *body, const plane_desc_t *D, int64_t h, int64_t w, range_t rg,
                        const luts_t *L, dtables_t *T, int32_t *P, const int64_t ps, const int64_t xoff) {
    const int64_t W2 = w + 2;
    int rc = read_tables(body, D->tl, N_CTX[D->mode], T);
    if (rc) return rc;
    dstream_t S[N_STREAMS];
    const uint8_t *q = body + D->tl;
    for (int j = 0; j < N_STREAMS; j++) {
        S[j].x = rd32(q);
        if (S[j].x < RANS_L) return CSP_E_DATA;
        S[j].wp = q + 4; S[j].wend = q + D->rl[j];
        S[j].bp = q + D->rl[j]; S[j].bend = S[j].bp + D->bl[j]; S[j].acc = 0; S[j].n = 0; S[j].err = 0;
        q += D->rl[j] + D->bl[j];
    }
    dctx_t C = {L, T, 1 + D->ashift, D->lshift, rg.lo, rg.hi};
    for (int k = 0; k < NARR; k++) memset(P + k * ps, 0, sizeof(int32_t) * (size_t)W2); /* virtual row -1 */
    switch (D->kind * 4 + D->mode * 2 + (xoff != 0)) {
        CSP_FOR_VARIANTS(CSP_ROWS)
        default: return CSP_E_HEADER;
    }
    if (rc) return rc;
    /* every stream fully consumed: final rANS state, all words, all raw-bit bytes (< 8 bits left) */
    for (int j = 0; j < N_STREAMS; j++)
        if (S[j].x != RANS_L || S[j].wp != S[j].wend || S[j].bp != S[j].bend || S[j].n >= 8) return CSP_E_DATA;
    return CSP_OK;
}

int csp_decode(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes) {
    return csp_decode_ex(src, n, dst, dst_bytes, 0);
}

int csp_decode_to(const uint8_t *src, int64_t n, void *dst, int64_t h, int64_t w, int64_t c, int bps, int flags) {
    int64_t sh, sw, sc; int sb;
    const int rc = csp_decode_info(src, n, &sh, &sw, &sc, &sb);
    if (rc) return rc;
    if (sh != h || sw != w || sc != c || sb != bps) return CSP_E_OUTSIZE;
    return csp_decode_ex(src, n, dst, h * w * c * bps, flags);
}

int csp_decode_ex(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes, int flags) {
    int64_t h, w, c; int bps, xform;
    if (src && n >= HEADER_SIZE && src[4] == 2) return csp_decode2(src, n, dst, dst_bytes);
    if (src && n >= HEADER_SIZE && src[4] == 3) return csp_decode3(src, n, dst, dst_bytes, flags);
    int rc = parse_header(src, n, &h, &w, &c, &bps, &xform);
    if (rc) return rc;
    if (!dst || dst_bytes != h * w * c * bps) return CSP_E_OUTSIZE;
    const int64_t W2 = w + 2, PS = (h + 1) * W2;
    const int32_t maxv = bps == 1 ? 255 : 65535;
    int nbuf = xform ? 3 : 1;
    /* per plane (1, or 3 under RCT): pixels, |e|, |x - MED|, |x - AVG4|, |x - GRAD| */
    int32_t *P = (int32_t *)malloc(sizeof(int32_t) * (size_t)(NARR * PS * nbuf));
    dtables_t *T = (dtables_t *)malloc(sizeof(dtables_t));
    if (!P || !T) { rc = CSP_E_NOMEM; goto done; }
    luts_t L; make_luts(&L);
    int64_t off = HEADER_SIZE + PLANE_SIZE * c + 4;
    for (int64_t pl = 0; pl < c; pl++) {
        plane_desc_t D;
        read_desc(src + HEADER_SIZE + PLANE_SIZE * pl, &D);
        int32_t *Pp = P + (xform ? pl : 0) * NARR * PS;
        int64_t xoff = (xform && pl > 0) ? (PS - pl * NARR * PS) : 0; /* plane 0's |e| */
        rc = decode_plane(src + off, &D, h, w, plane_range(xform, (int)pl, maxv), &L, T, Pp, PS, xoff);
        if (rc) goto done;
        off += D.size;
        if (!xform) { /* store channel pl */
            for (int64_t y = 0; y < h; y++) {
                const int32_t *row = Pp + (y + 1) * W2 + 1;
                if (bps == 1) { uint8_t *o = (uint8_t *)dst + y * w * c + pl; for (int64_t x = 0; x < w; x++) o[x * c] = (uint8_t)row[x]; }
                else { uint16_t *o = (uint16_t *)dst + y * w * c + pl; for (int64_t x = 0; x < w; x++) o[x * c] = (uint16_t)row[x]; }
            }
        }
    }
    if (xform) {
        for (int64_t y = 0; y < h; y++) {
            const int32_t *Y = P + (y + 1) * W2 + 1, *U = Y + NARR * PS, *V = Y + 2 * NARR * PS;
            for (int64_t x = 0; x < w; x++) {
                int32_t r, g, b;
                inverse_rct(xform, Y[x], U[x], V[x], &r, &g, &b);
                if ((uint32_t)r > (uint32_t)maxv || (uint32_t)g > (uint32_t)maxv || (uint32_t)b > (uint32_t)maxv) { rc = CSP_E_RANGE; goto done; }
                if (bps == 1) { uint8_t *o = (uint8_t *)dst + (y * w + x) * 3; o[0] = (uint8_t)r; o[1] = (uint8_t)g; o[2] = (uint8_t)b; }
                else { uint16_t *o = (uint16_t *)dst + (y * w + x) * 3; o[0] = (uint16_t)r; o[1] = (uint16_t)g; o[2] = (uint16_t)b; }
            }
        }
    }
    rc = CSP_OK;
done:
    free(P); free(T);
    return rc;
}

static int64_t csp_encode2_simd(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap,
                                int simd);
static int64_t csp_encode3_simd(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap,
                                int simd);

int64_t csp_encode_ex(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap,
                      int version, int flags) {
    const int simd = !(flags & CSP_NO_SIMD) && csp_cpu_avx512();
    if (version == 1) return csp_encode1(src, h, w, c, bps, dst, cap, simd);
    if (version == 2) return csp_encode2_simd(src, h, w, c, bps, dst, cap, simd);
    if (version == 3) return csp_encode3_simd(src, h, w, c, bps, dst, cap, simd);
    return CSP_E_VERSION;
}

/* bitstream version 2 (shares the helpers above) */
#include "cspcodec2.c"

/* bitstream version 3 (version 1's model, sixteen SIMD lanes) */
#include "cspcodec3.c"
