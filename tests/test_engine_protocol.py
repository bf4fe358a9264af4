"""The engines against their protocol (memscan.engine.protocol.Engine), and
the Cython engine against its stub (memscan/_fast.pyi, by mypy's stubtest)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import memscan
from memscan.engine.protocol import Engine

from helpers.engines import ENGINES


def _kernels() -> list:
    return sorted(n for n, v in vars(Engine).items() if not n.startswith("_") and callable(v))


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engine_has_the_protocols_functions(name):
    module = ENGINES[name]
    assert sorted(module.__all__) == _kernels()
    for kernel in _kernels():
        want = list(inspect.signature(getattr(Engine, kernel)).parameters.values())[1:]  # without self
        got = list(inspect.signature(getattr(module, kernel)).parameters.values())
        assert [(p.name, p.kind, p.default) for p in got] == [(p.name, p.kind, p.default) for p in want], kernel


def test_stub_matches_the_extension(tmp_path):
    """mypy's stubtest: every name, argument and default of memscan/_fast.pyi
    is the built extension's."""
    pytest.importorskip("mypy")
    if "cython" not in ENGINES:
        pytest.skip("the Cython engine is not built (MEMSCAN_NO_EXTENSIONS)")
    config = tmp_path / "mypy.ini"
    # Only the stub is checked: the modules it imports are not (they are not stubs).
    config.write_text("[mypy]\nfollow_imports = silent\n")
    env = dict(os.environ)
    package = Path(memscan.__file__).parent
    if not (package / "py.typed").exists():
        env["MYPYPATH"] = str(package.parent)  # a source tree: mypy reads its modules as sources
    run = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(config), "memscan._fast"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
