"""Build hook for the C lossless codec; all project metadata lives in pyproject.toml.

``cffi_modules`` compiles ``native/cspcodec.c`` (which includes the bitstream version 2 and 3 files
and the AVX-512 kernels, chosen at run time) into ``csp.native._cspcodec`` (cffi out-of-line API
mode) during ``pip install``. A failed compile (no C compiler) only warns: the codec then falls back
to its Numba implementation.
"""

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that skips (with a warning) an extension that does not compile."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back to Numba
            print(f"WARNING: building {ext.name} failed ({exc}); csp will use its Numba codec instead")


setup(cffi_modules=["csp/native/_build_codec.py:ffibuilder"], cmdclass={"build_ext": OptionalBuildExt})
