"""Shared fixtures; the helpers behind them live in helpers/."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from helpers.cprogram import cprograms
from helpers.engines import ENGINES
from helpers.goprogram import GoProgram, GoPrograms

# pytester runs pytest inside tests; memscan's own plugin is loaded by its
# entry point once installed, and from here when run from a source tree.
pytest_plugins = ["pytester", "memscan.pytest_plugin"]


@pytest.fixture(params=list(ENGINES.values()), ids=list(ENGINES))
def engine(request):  # type: ignore[no-untyped-def]
    """Each engine module built here: ``memscan.engine.pure`` ("python") and
    ``memscan._fast`` ("cython")."""
    return request.param


@pytest.fixture(scope="session")
def go_program(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., GoProgram]]:
    """Factory: ``go_program(version="1.27.3", cgo=False, args=(), env=None)``.

    Builds the bundled demo (memscan/demo) with that Go version (cached
    across runs under ~/.cache/memscan), starts it and returns a
    ``helpers.goprogram.GoProgram`` once its first JSON report arrived: ``.pid``,
    ``.proc``, ``.report`` (last report, a dict), ``.command(cmd) -> dict``.
    Every program started in the session is killed and reaped at its end.
    Tests using it build Go: mark them ``@pytest.mark.slow``.
    """
    programs = GoPrograms(str(tmp_path_factory.mktemp("go-programs")))
    try:
        yield programs.start
    finally:
        programs.stop_all()


@pytest.fixture(scope="session")
def _cprograms(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return cprograms(tmp_path_factory)


@pytest.fixture
def cprog(_cprograms):  # type: ignore[no-untyped-def]
    """Factory: ``cprog("mallocs", *args, env=None)`` starts tests/cprogs/mallocs.c
    (built once a session) and returns a ``helpers.cprogram.CProgram`` with its
    ``.report``. What a test started is stopped when it ends: a churning
    program would take a CPU from every test after it."""
    started = []

    def start(*args, **kwargs):  # type: ignore[no-untyped-def]
        prog = _cprograms(*args, **kwargs)
        started.append(prog)
        return prog

    try:
        yield start
    finally:
        for prog in started:
            prog.stop()
