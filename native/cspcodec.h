/* CSP lossless predictive pixel codec, bitstream versions 1, 2 and 3 (see docs/codec.md);
 * csp_decode and csp_decode_info accept both versions.
 *
 * Thread-safe, no global state: every call allocates (and frees) its own scratch memory.
 * All functions return >= 0 on success and a negative CSP_E* code on failure.
 */
#ifndef CSPCODEC_H
#define CSPCODEC_H

#include <stddef.h>
#include <stdint.h>

#define CSP_OK 0
#define CSP_E_ARG (-1)       /* invalid argument (shape, dtype, buffer size) */
#define CSP_E_NOMEM (-2)     /* out of memory */
#define CSP_E_MAGIC (-3)     /* not a csp stream */
#define CSP_E_VERSION (-4)   /* unsupported bitstream version */
#define CSP_E_HEADER (-5)    /* corrupt or truncated header (checksum, sizes) */
#define CSP_E_TABLE (-6)     /* corrupt frequency table */
#define CSP_E_DATA (-7)      /* corrupt or truncated entropy-coded data */
#define CSP_E_RANGE (-8)     /* decoded sample out of range */
#define CSP_E_OUTSIZE (-9)   /* destination buffer too small / wrong size */

/* Upper bound of the encoded size of an (h, w, c) tile with bps bytes per sample (1 or 2). */
int64_t csp_encode_bound(int64_t h, int64_t w, int64_t c, int bps);

/* Encode interleaved little/native-endian samples src[h][w][c] (uint8 when bps == 1, uint16 when
 * bps == 2) into dst (capacity cap). Returns the stream size or a negative error code. */
int64_t csp_encode(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap);

/* Encode like csp_encode, in bitstream version 2 (faster to decode and encode; see docs/codec.md). */
int64_t csp_encode2(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap);

/* Encode like csp_encode, in bitstream version 3 (version 1's model in sixteen wavefront lanes; decoded
 * with AVX-512 where the CPU has it). dst needs csp_encode3_bound bytes. */
int64_t csp_encode3_bound(int64_t h, int64_t w, int64_t c, int bps);
int64_t csp_encode3(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap);

/* Read the shape of a stream (checks magic, version, checksum and sizes). */
int csp_decode_info(const uint8_t *src, int64_t n, int64_t *h, int64_t *w, int64_t *c, int *bps);

/* Decode a stream into dst (h * w * c samples of bps bytes; dst_bytes must match exactly). */
int csp_decode(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes);

/* Flag of csp_encode_ex / csp_decode_ex: use the portable scalar code, not the AVX-512 or AVX2 kernels
 * (tests compare them; the output is the same). */
#define CSP_NO_SIMD 1
/* Flag of csp_decode_ex: decode version 3 with the AVX-512 kernel variants that need only AVX-512
 * F/BW/VL/DQ/CD (what CPUs without VBMI/VBMI2 run) even where VBMI is present (tests compare them). */
#define CSP_NO_VBMI 2
/* Flag of csp_decode_ex: decode version 3 with the AVX2 kernel (what CPUs without AVX-512 run) even where
 * AVX-512 is present (tests compare it). */
#define CSP_NO_AVX512 4

/* csp_encode (version 1), csp_encode2 or csp_encode3 by version, with flags. */
int64_t csp_encode_ex(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap,
                      int version, int flags);

/* csp_decode with flags. */
int csp_decode_ex(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes, int flags);

/* csp_decode_ex into dst of exactly h x w x c samples of bps bytes: CSP_E_OUTSIZE, without decoding, when
 * the (valid) stream holds another shape or sample size (equal byte counts are not enough). */
int csp_decode_to(const uint8_t *src, int64_t n, void *dst, int64_t h, int64_t w, int64_t c, int bps, int flags);

/* 1 when this CPU runs the AVX-512 kernels (version 3 decoder for 32-lane planes, model analysis), else 0. */
int csp_simd_available(void);

/* 1 when this CPU runs the AVX-512 F/BW variants of the version 3 decoder, else 0. */
int csp_simd_bw_available(void);

/* 1 when this CPU runs the AVX2 kernel of the version 3 decoder, else 0. */
int csp_simd_avx2_available(void);

#endif
