"""Run the C test programs in tests/cprogs/: compiled once per session,
each prints one JSON line of its own accounting, then waits for EOF."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
from typing import Any, Callable, Dict, Optional, Sequence

import pytest

from .processes import stop

CPROGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cprogs")


class CProgram:
    """A running test program and the JSON line it printed."""

    def __init__(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 30) -> None:
        # The program runs with the allocator a test preloads, if any, never
        # with what this process was started with (tools/sanitize.sh preloads
        # ASan into pytest, whose malloc ignores the programs' mallopt()).
        full_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=full_env, text=True
        )
        self.pid = self.proc.pid
        sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                self.stop()
                raise AssertionError(f"{argv} printed nothing within {timeout} s")
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"{argv} exited with status {self.proc.wait(10)}")
        self.report: Dict[str, Any] = json.loads(line)
        assert self.report["pid"] == self.pid

    def stop(self) -> None:
        stop(self.proc, 10)


def cprograms(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., CProgram]:
    """Factory: ``start("mallocs", *args, env=None) -> CProgram``; each C
    source is compiled on first use (into a temporary directory). Stopping
    what it started is the caller's (the ``cprog`` fixture does it per test)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the C test programs")
    out = tmp_path_factory.mktemp("cprogs")
    built: Dict[str, str] = {}

    def start(name: str, *args: Any, env: Optional[Dict[str, str]] = None) -> CProgram:
        if name not in built:
            exe = str(out / name)
            subprocess.run(
                [gcc, "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", exe,
                 os.path.join(CPROGS, name + ".c")],
                check=True,
            )
            built[name] = exe
        return CProgram([built[name], *map(str, args)], env)

    return start
