"""Ending the processes the tests start: killed, reaped, their pipes closed
(an open pipe left to the garbage collector is a ResourceWarning)."""

from __future__ import annotations

import socket
import subprocess
from typing import Any, Optional


def stop(proc: "subprocess.Popen[Any]", timeout: float = 30) -> Optional[int]:
    """Kill ``proc`` unless it has exited, reap it and close its pipes; its exit status."""
    if proc.poll() is None:
        proc.kill()
    try:
        return proc.wait(timeout)
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # stdin of a killed process: broken pipe on flush
                    pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
