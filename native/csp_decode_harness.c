/* Tiny harness for memory checking the C decoder (tests/test_lossless_codec.py runs it under valgrind).
 *
 * Usage: csp_decode_harness FILE...   decodes every file through every decoder path the CPU has (corrupt
 * ones must fail cleanly, and alike on every path) and round-trips small synthetic 8- and 16-bit images
 * of several shapes through the encoders (bitstream versions 1, 2 and 3) and every decoder path.
 * Exit status 0 unless a round trip fails (1) or two paths disagree on a file (3).
 */
#include "cspcodec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The csp_decode_ex flags of every decoder path this CPU has, once each (the best first, then AVX-512
 * without VBMI, AVX2, scalar); returns how many. */
static int decoder_paths(int flags[4]) {
    const int avx512 = csp_simd_available(), bw = csp_simd_bw_available(), avx2 = csp_simd_avx2_available();
    const int all[4] = {0, CSP_NO_VBMI, CSP_NO_AVX512, CSP_NO_SIMD};
    const int run[4] = {1, avx512 && bw, (avx512 || bw) && avx2, avx512 || bw || avx2};
    int n = 0;
    for (int f = 0; f < 4; f++)
        if (run[f]) flags[n++] = all[f];
    return n;
}

/* Encode a synthetic h x w x c image (bps 1 or 2) in `version`, decode it, compare. 0 when it matches. */
static int roundtrip(int version, int bps, int64_t h, int64_t w, int64_t c) {
    const size_t n = (size_t)(h * w * c), bytes = n * (size_t)bps;
    uint8_t *img = (uint8_t *)malloc(bytes), *back = (uint8_t *)malloc(bytes);
    int64_t cap = (version == 3 ? csp_encode3_bound : csp_encode_bound)(h, w, c, bps);
    uint8_t *buf = cap > 0 ? (uint8_t *)malloc((size_t)cap) : NULL;
    int bad = 1;
    if (img && back && buf) {
        for (size_t i = 0; i < n; i++) { /* smooth channels with noise, and a few extremes */
            const uint32_t v = (uint32_t)(((i / (size_t)c) % (size_t)w) * 3 + (i % (size_t)c) * 40) + (((uint32_t)i * 2654435761u) >> 28);
            const uint32_t x = (i % 97 == 0) ? 0xFFFFFFFFu : v;
            if (bps == 1) img[i] = (uint8_t)x; else ((uint16_t *)img)[i] = (uint16_t)(x * 37u);
        }
        int64_t m = (version == 3 ? csp_encode3 : version == 2 ? csp_encode2 : csp_encode)(img, h, w, c, bps, buf, cap);
        bad = m < 0;
        int flags[4];
        const int np = decoder_paths(flags);
        for (int f = 0; !bad && f < np; f++) {
            memset(back, 0xA5, bytes);
            bad = csp_decode_ex(buf, m, back, (int64_t)bytes, flags[f]) != 0 || memcmp(img, back, bytes) != 0;
        }
    }
    free(img); free(back); free(buf);
    if (bad) fprintf(stderr, "round trip failed: version %d, %d bytes/sample, %lld x %lld x %lld\n", version, bps,
                     (long long)h, (long long)w, (long long)c);
    return bad;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { perror(argv[i]); return 2; }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *data = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
        if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) { fclose(f); return 2; }
        fclose(f);
        int64_t h, w, c; int bps;
        int rc = csp_decode_info(data, n, &h, &w, &c, &bps);
        if (rc == 0 && h * w * c * bps <= (1 << 26)) {
            /* every path: the same verdict, and the same samples where the stream decodes */
            const size_t bytes = (size_t)(h * w * c * bps);
            uint8_t *out = (uint8_t *)malloc(bytes), *other = (uint8_t *)malloc(bytes);
            int flags[4];
            const int np = decoder_paths(flags);
            rc = out && other ? csp_decode(data, n, out, (int64_t)bytes) : CSP_E_NOMEM;
            for (int f = 1; out && other && f < np; f++) {
                const int r = csp_decode_ex(data, n, other, (int64_t)bytes, flags[f]);
                if ((r == 0) != (rc == 0) || (r == 0 && memcmp(out, other, bytes) != 0)) {
                    fprintf(stderr, "%s: decoder path %d gives %d, the default path %d\n", argv[i], flags[f], r, rc);
                    return 3;
                }
            }
            free(out); free(other);
        }
        printf("%s %d\n", argv[i], rc);
        free(data);
    }
    /* W >= 64: 32 lanes in version 3; 8-bit tiles take the encoder's 16-bit path; 4 channels: no RCT */
    static const int64_t shapes[][3] = {{37, 70, 3}, {5, 3, 1}, {66, 257, 3}, {33, 64, 4}, {1, 90, 3}};
    int bad = 0;
    for (int v = 1; v <= 3; v++)
        for (int bps = 1; bps <= 2; bps++)
            for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
                bad |= roundtrip(v, bps, shapes[k][0], shapes[k][1], shapes[k][2]);
    return bad;
}
