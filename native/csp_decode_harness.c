/* Tiny harness for memory checking the C decoder (tests/test_lossless_codec.py runs it under valgrind).
 *
 * Usage: csp_decode_harness FILE...   decodes every file (corrupt ones must fail cleanly) and
 * round-trips small synthetic images through the encoders (bitstream versions 1, 2 and 3). Exit status
 * 0 unless a round trip fails.
 */
#include "cspcodec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int roundtrip(int version) {
    enum { H = 37, W = 70, C = 3 }; /* W >= 64: 32 lanes in version 3 */
    static uint16_t img[H * W * C], back[H * W * C];
    for (int i = 0; i < H * W * C; i++) img[i] = (uint16_t)((i * 2654435761u) >> 20);
    int64_t cap = (version == 3 ? csp_encode3_bound : csp_encode_bound)(H, W, C, 2);
    uint8_t *buf = (uint8_t *)malloc((size_t)cap);
    if (!buf) return 1;
    int64_t n = (version == 3 ? csp_encode3 : version == 2 ? csp_encode2 : csp_encode)(img, H, W, C, 2, buf, cap);
    int rc = n < 0 ? 1 : csp_decode(buf, n, back, (int64_t)sizeof back);
    free(buf);
    return rc != 0 || memcmp(img, back, sizeof img) != 0;
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
            void *out = malloc((size_t)(h * w * c * bps));
            rc = out ? csp_decode(data, n, out, h * w * c * bps) : CSP_E_NOMEM;
            free(out);
        }
        printf("%s %d\n", argv[i], rc);
        free(data);
    }
    return roundtrip(1) || roundtrip(2) || roundtrip(3);
}
