"""Running the ``memscan`` command and checking how it fails, for the tests."""

from __future__ import annotations

import os
import subprocess
import sys

from memscan import cli

NOBODY = 65534


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m memscan ARGS``, its output captured."""
    return subprocess.run([sys.executable, "-m", "memscan", *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memscan: error:") and words in lines[0], proc.stderr


def assert_whole(text: str) -> None:
    """No cell cut short with "…", no line ending in spaces."""
    assert text and "…" not in text, text
    assert not [line for line in text.splitlines() if line != line.rstrip()], text


def dead_pid() -> int:
    """A pid that no process has any more (until it is reused)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def as_nobody(fn):
    """Run ``fn()`` in a child that dropped to uid/gid nobody (as setpriv
    --reuid does), returning what it printed to stdout and stderr and its status.

    Whatever the child imports must be imported first: as nobody it may not
    read the interpreter's files (under /root here, a 0700 temporary
    directory in CI); building the parser imports what the commands need."""
    cli.parser()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 99
        try:
            os.dup2(w_out, 1)
            os.dup2(w_err, 2)
            # pytest captures sys.stdout in-process: write to the pipes instead.
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            status = fn()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)
    os.close(w_out)
    os.close(w_err)
    with os.fdopen(r_out) as o, os.fdopen(r_err) as e:
        out, err = o.read(), e.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out, err
