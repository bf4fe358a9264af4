"""Builds memscan's Cython engine (metadata lives in pyproject.toml).

MEMSCAN_NO_EXTENSIONS=1 builds without it (the pure-Python engine is used);
MEMSCAN_DEBUG=1 turns on bounds, wraparound and overflow checks, line
tracing and -O0 -g. A compile error fails the build: memscan never falls
back to pure Python silently at build time.
"""

import os
import sys

from setuptools import setup

NO_EXTENSIONS = bool(os.environ.get("MEMSCAN_NO_EXTENSIONS")) or sys.implementation.name != "cpython"
DEBUG = bool(os.environ.get("MEMSCAN_DEBUG"))

ext_modules = []
if NO_EXTENSIONS:
    print("memscan: pure-Python build (MEMSCAN_NO_EXTENSIONS set or not CPython)")
else:
    from Cython.Build import cythonize
    from setuptools import Extension

    directives = {
        "language_level": "3",
        "embedsignature": True,
        "freethreading_compatible": True,
        "cdivision": True,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "overflowcheck": DEBUG,
        "initializedcheck": DEBUG,
    }
    macros = []
    cflags = ["-O2", "-Wall", "-Wno-unused-function"]
    if DEBUG:
        directives["linetrace"] = True
        macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
        cflags = ["-O0", "-g", "-Wall", "-Wno-unused-function"]
    ext_modules = cythonize(
        [
            Extension(
                "memscan._fast",
                ["src/memscan/_fast.pyx"],
                define_macros=macros,
                extra_compile_args=cflags,
            )
        ],
        compiler_directives=directives,
        annotate=DEBUG,
    )
    print(f"memscan: building the Cython engine ({'debug' if DEBUG else 'release'})")

setup(ext_modules=ext_modules)
