"""Run the bundled Go demo program (memscan/demo) as a test subject.

The program prints one JSON report after setting up its memory, then answers
one JSON line per command on stdin (see the comment at the top of
``src/memscan/demo/main.go``). :class:`GoProgram` wraps one running instance;
:class:`GoPrograms` builds, starts and finally reaps them (the
``go_program`` fixture in conftest.py is its ``start`` method).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import gotoolchain
from .processes import stop

__all__ = ["GoProgram", "GoPrograms", "GoProgramError", "STARTUP_TIMEOUT", "COMMAND_TIMEOUT", "allocator"]

#: Seconds allowed for setup (the first report) and for one command's answer.
STARTUP_TIMEOUT = 60.0
COMMAND_TIMEOUT = 60.0


class GoProgramError(AssertionError):
    """The program died, timed out or answered something that is not JSON.

    An AssertionError so that pytest shows it as a test failure with the
    message, not as an error deep inside a helper.
    """


class GoProgram:
    """One running demo program.

    Attributes:
        proc: the ``subprocess.Popen`` (text mode, stdin/stdout pipes).
        pid: its process id.
        report: the last JSON report (dict) it printed.
        binary: path of the executable, version/cgo/args: how it was started.
        stderr_path: file holding the program's stderr.
    """

    def __init__(
        self,
        proc: "subprocess.Popen[str]",
        binary: str,
        version: str,
        cgo: bool,
        args: Sequence[str],
        stderr_path: Optional[str] = None,
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.binary = binary
        self.version = version
        self.cgo = cgo
        self.args = tuple(args)
        self.stderr_path = stderr_path
        self.report: Dict[str, Any] = {}
        self._sel = selectors.DefaultSelector()
        assert proc.stdout is not None
        self._sel.register(proc.stdout, selectors.EVENT_READ)

    def __repr__(self) -> str:
        return f"<GoProgram pid={self.pid} go{self.version} cgo={self.cgo} args={' '.join(self.args)!r}>"

    def _read_json(self, timeout: float, what: str) -> Dict[str, Any]:
        """One line from stdout, parsed; fail clearly on death or timeout.

        ``select`` on the pipe and then ``readline``: the program writes each
        answer with a single write() ending in a newline, so once the pipe is
        readable the whole line follows at once.
        """
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GoProgramError(f"{self!r}: no answer to {what} within {timeout:.0f} s")
            if self._sel.select(left):
                break
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=10)
            raise GoProgramError(f"{self!r} exited with status {code} before answering {what}{self._stderr()}")
        try:
            value = json.loads(line)
        except ValueError:
            raise GoProgramError(f"{self!r} answered {what} with non-JSON: {line!r}") from None
        if not isinstance(value, dict):
            raise GoProgramError(f"{self!r} answered {what} with {value!r}, not an object")
        return value

    def _stderr(self) -> str:
        """The program's stderr, once it has exited (it goes to a file)."""
        if not self.stderr_path:
            return ""
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            return ""
        return f"; stderr:\n{text[-4000:]}" if text else ""

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> Dict[str, Any]:
        """Read the first report (the program is set up when it appears)."""
        self.report = self._read_json(timeout, "startup")
        return self.report

    def command(self, cmd: str, timeout: float = COMMAND_TIMEOUT) -> Dict[str, Any]:
        """Send one command line, return its JSON answer.

        A report updates :attr:`report`; an ``{"error": ...}`` answer raises.
        """
        assert self.proc.stdin is not None
        if self.proc.poll() is not None:
            raise GoProgramError(f"{self!r} already exited with status {self.proc.returncode}{self._stderr()}")
        try:
            self.proc.stdin.write(cmd.rstrip("\n") + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            code = self.proc.wait(timeout=10)
            raise GoProgramError(f"{self!r} exited with status {code} before {cmd!r}{self._stderr()}") from None
        answer = self._read_json(timeout, repr(cmd))
        if "error" in answer:
            raise GoProgramError(f"{self!r} refused {cmd!r}: {answer['error']}")
        if "memstats" in answer:
            self.report = answer
        return answer

    def stop(self) -> Optional[int]:
        """Kill (if running) and reap the process; return its exit status."""
        self._sel.close()
        return stop(self.proc)


class GoPrograms:
    """Builds the demo per (version, cgo) once and keeps every started program;
    ``ldflags`` and ``buildmode`` as for ``go build`` (e.g. ``"-s -w"``, ``"pie"``)."""

    def __init__(self, stderr_dir: str, ldflags: str = "", buildmode: str = "exe") -> None:
        self._stderr_dir = stderr_dir
        self.ldflags = ldflags
        self.buildmode = buildmode
        self._binaries: Dict[Tuple[str, bool], str] = {}
        self.started: List[GoProgram] = []

    def binary(self, version: str, cgo: bool) -> str:
        key = (version, cgo)
        if key not in self._binaries:
            # Imported here, not at the top: conftest imports this module, and
            # a half-written memscan must not break every other test's setup.
            from memscan.demo import build as gobuild

            self._binaries[key] = gobuild.build(
                gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=cgo, ldflags=self.ldflags,
                buildmode=self.buildmode, out_name="memscandemo"
            )
        return self._binaries[key]

    def start(
        self,
        version: str = "1.27.3",
        cgo: bool = False,
        args: Sequence[str] = (),
        env: Optional[Mapping[str, str]] = None,
        timeout: float = STARTUP_TIMEOUT,
    ) -> GoProgram:
        """Build (cached) and start the demo; return it once it reported.

        ``args`` are the program's flags, e.g. ``("-heap", "64")``; ``env``
        entries are added to the inherited environment (e.g. ``GODEBUG``).
        """
        binary = self.binary(version, cgo)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        stderr_path = os.path.join(self._stderr_dir, f"go{version}-cgo{int(cgo)}-{len(self.started)}.stderr")
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(
                [binary, *map(str, args)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,  # a file, not a pipe: it can never fill up and block the program
                text=True,
                env=full_env,
            )
        prog = GoProgram(proc, binary, version, cgo, [str(a) for a in args], stderr_path)
        self.started.append(prog)
        prog.wait_ready(timeout)
        return prog

    def stop_all(self) -> None:
        for prog in self.started:
            prog.stop()
        self.started.clear()


def c_shared_demo(version: str) -> str:
    """The demo built as a Go c-shared library (cgo), cached like every build."""
    from memscan.demo import build as gobuild

    return gobuild.build(gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=True, buildmode="c-shared",
                         out_name="libdemo.so")


GOPROGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "goprogs")


def goprog(name: str, version: str, cgo: bool = False, ldflags: str = "") -> str:
    """tests/goprogs/NAME built (cached like every build); run it with
    ``helpers.cprogram.CProgram`` (it prints one JSON line with its pid)."""
    from memscan.demo import build as gobuild

    return gobuild.build(os.path.join(GOPROGS_DIR, name), goroot=gotoolchain.goroot(version), cgo=cgo,
                         ldflags=ldflags, out_name=name)


def allocator(version: str, cgo: bool, ldflags: str = "") -> str:
    """tests/goprogs/allocator built: a Go program allocating flat out on
    every core, which can exit on its own."""
    return goprog("allocator", version, cgo, ldflags)


def scan_once_started(pid: int, tier: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """memscan.scan of a host of a Go c-shared library, once the library's
    runtime has its first heap arena: it starts on a thread of its own after
    dlopen returns. Bounded: the last scan is returned after ``timeout``."""
    import memscan

    deadline = time.monotonic() + timeout
    while True:
        snap = memscan.scan(pid, tier=tier)
        if snap.categories["go_heap"].size > 0 or time.monotonic() > deadline:
            return snap
        time.sleep(0.05)
