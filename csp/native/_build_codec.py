"""cffi (out-of-line API mode) builder of the C lossless codec ``csp.native._cspcodec``.

Used by ``setup.py`` (``cffi_modules``) during ``pip install``; can also be run directly to build the
extension in place::

    python csp/native/_build_codec.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "native"

CDEF = """
int64_t csp_encode_bound(int64_t h, int64_t w, int64_t c, int bps);
int64_t csp_encode(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap);
int64_t csp_encode2(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap);
int csp_decode_info(const uint8_t *src, int64_t n, int64_t *h, int64_t *w, int64_t *c, int *bps);
int csp_decode(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes);
int64_t csp_encode3_bound(int64_t h, int64_t w, int64_t c, int bps);
int64_t csp_encode3(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap);
#define CSP_NO_SIMD 1
#define CSP_NO_VBMI 2
#define CSP_NO_AVX512 4
int64_t csp_encode_ex(const void *src, int64_t h, int64_t w, int64_t c, int bps, uint8_t *dst, int64_t cap,
                      int version, int flags);
int csp_decode_ex(const uint8_t *src, int64_t n, void *dst, int64_t dst_bytes, int flags);
int csp_decode_to(const uint8_t *src, int64_t n, void *dst, int64_t h, int64_t w, int64_t c, int bps, int flags);
int csp_simd_available(void);
int csp_simd_bw_available(void);
int csp_simd_avx2_available(void);
"""


def make_ffi(absolute: bool = False) -> FFI:
    """The FFI builder; source paths relative to the project root unless ``absolute``."""
    ffi = FFI()
    ffi.cdef(CDEF)
    src = NATIVE / "cspcodec.c" if absolute else Path("native") / "cspcodec.c"
    ffi.set_source(
        "csp.native._cspcodec",
        '#include "cspcodec.h"',
        sources=[str(src)],
        depends=[str(src.with_name(f)) for f in ("cspcodec_enc.c", "cspcodec2.c", "cspcodec3.c", "cspcodec3_avx512.c",
                                                   "cspcodec3_avx512_16.c", "cspcodec3_avx512_32.c",
                                                   "cspcodec3_avx2.c",
                                                   "cspcodec_enc_avx512.c", "cspcodec_enc_avx512_16.c", "cspcodec.h")],
        include_dirs=[str(NATIVE if absolute else Path("native"))],
        extra_compile_args=["-O3", "-std=c99"] if sys.platform != "win32" else ["/O2"],
    )
    return ffi


#: used by setup.py (``cffi_modules``), which runs from the project root
ffibuilder = make_ffi()

if __name__ == "__main__":
    import shutil
    import tempfile

    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:  # keep objects and generated C out of the tree
        built = Path(make_ffi(absolute=True).compile(tmpdir=tmp, verbose="-v" in sys.argv))
        dest = ROOT / "csp" / "native" / built.name
        # copy beside the target, then rename over it: processes that have the old library mapped keep
        # their (unlinked) file; writing into it in place crashed them
        part = dest.with_name(f".{built.name}.part")
        shutil.copy2(built, part)
        os.replace(part, dest)
        print(f"built csp/native/{built.name}")
