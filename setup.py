"""Builds the optional CPU kernel extension; everything else is in pyproject.toml.

The extension is optional: where no C compiler (or no OpenMP) is available the
build goes on without it (or single-threaded), and lmpress falls back to its torch
reference kernel with a warning.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalOpenMPBuild(build_ext):
    """Try the build with OpenMP, then without; never fail the install over it."""

    def build_extension(self, ext):  # noqa: ANN001
        base_compile, base_link = list(ext.extra_compile_args), list(ext.extra_link_args)
        for extra in (["-fopenmp"], []):
            ext.extra_compile_args = base_compile + extra
            ext.extra_link_args = base_link + extra
            try:
                super().build_extension(ext)
                return
            except Exception as e:  # noqa: BLE001 - any compiler failure means "try the next"
                print(f"lmpress: building {ext.name} with {extra or 'no OpenMP'} failed: {e}")
        print("lmpress: CPU kernels not built; the torch reference kernel will be used")


setup(
    ext_modules=[
        Extension(
            "lmpress.kernels._cpu",
            sources=[
                "lmpress/kernels/_cpu.c",
                "lmpress/kernels/decode_ops.c",
                "lmpress/kernels/lut.c",
                "lmpress/kernels/grid.c",
            ],
            depends=[
                "lmpress/kernels/decode_ops.h",
                "lmpress/kernels/grid.h",
                "lmpress/kernels/linear.h",
                "lmpress/kernels/lut.h",
                "lmpress/kernels/simd.h",
            ],
            extra_compile_args=["-O3", "-std=c11", "-fno-strict-aliasing"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalOpenMPBuild},
)
