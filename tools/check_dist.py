"""Checks what ``python -m build`` put in dist/ against the git tree.

The sdist must rebuild everything and run every test: it holds each tracked
file of the package sources (the .pyx and all its .pxi include files, the
stubs, py.typed, the demo's Go sources), the tests complete, the benchmarks,
tools and fuzz corpus, and no generated C or compiled object. The wheel holds
the compiled Cython engine, the stubs, py.typed and the Go sources, and no
Cython or C source.

Usage: python tools/check_dist.py [DIST_DIR]   (run from the checkout)
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import List, Set

SDIST_TREES = ("src/", "tests/", "bench/", "tools/", "fuzz/")
SDIST_FILES = ("README.md", "pyproject.toml", "setup.py", "MANIFEST.in")
# Generated or compiled: built from the sdist, never shipped in it.
NOT_IN_SDIST = ("src/*.c", "src/*.so", "src/*.html", "*.pyc")
NOT_IN_WHEEL = ("*.pyx", "*.pxi", "*.c", "*.pyc")


def tracked() -> List[str]:
    out = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        sys.exit(f"check_dist: expected one {pattern} in {dist}, found {[p.name for p in found]}")
    return found[0]


def problems_of_sdist(names: Set[str], files: List[str]) -> List[str]:
    wanted = [f for f in files if f.startswith(SDIST_TREES) or f in SDIST_FILES]
    out = [f"sdist lacks {f}" for f in wanted if f not in names]
    out += [f"sdist holds generated {n}" for n in sorted(names)
            if any(fnmatch.fnmatch(n, p) for p in NOT_IN_SDIST)]
    return out


def problems_of_wheel(names: Set[str], files: List[str]) -> List[str]:
    package = [f[len("src/"):] for f in files if f.startswith("src/memscan/")]
    wanted = [f for f in package if f.endswith((".py", ".pyi", ".go", "go.mod", "py.typed"))]
    out = [f"wheel lacks {f}" for f in wanted if f not in names]
    if not any(fnmatch.fnmatch(n, "memscan/_fast.*.so") for n in names):
        out.append("wheel lacks the compiled engine memscan/_fast.*.so")
    out += [f"wheel holds source {n}" for n in sorted(names)
            if any(fnmatch.fnmatch(n, p) for p in NOT_IN_WHEEL)]
    return out


def main() -> None:
    dist = Path(sys.argv[1] if len(sys.argv) > 1 else "dist")
    files = tracked()
    sdist = one(dist, "memscan-*.tar.gz")
    with tarfile.open(sdist) as tar:
        # Names inside are memscan-X.Y.Z/<path>.
        sdist_names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    wheel = one(dist, "memscan-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        wheel_names = set(whl.namelist())
    problems = problems_of_sdist(sdist_names, files) + problems_of_wheel(wheel_names, files)
    if problems:
        sys.exit("check_dist:\n  " + "\n  ".join(problems))
    print(f"check_dist: {sdist.name} ({len(sdist_names)} files) and {wheel.name} ({len(wheel_names)} files) hold what they must")


if __name__ == "__main__":
    main()
