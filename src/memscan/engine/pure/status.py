"""The /proc/PID/status parser of the pure-Python engine (fs/proc/array.c,
task_mem() in fs/proc/task_mmu.c)."""

from __future__ import annotations

from typing import List

from ..._errors import ParseError
from ..._types import STATUS_INT_KEYS, STATUS_KB_KEYS, Status
from ..protocol import Buffer
from .smaps import _DEC, _MAX_I64, _value

__all__ = ["parse_status"]

_STATUS_KB = {k.encode(): v for k, v in STATUS_KB_KEYS.items()}
_STATUS_INT = {k.encode(): v for k, v in STATUS_INT_KEYS.items()}


def parse_status(buf: Buffer) -> Status:
    """Parse /proc/PID/status. Absent numeric lines are -1."""
    data = bytes(buf)
    if not data:
        raise ParseError("empty status", 0)
    if data[-1] != 10:
        raise ParseError("truncated line", data.rfind(b"\n") + 1)
    out: List[object] = ["", ""] + [-1] * 17
    pos = 0
    for line in data[:-1].split(b"\n"):
        base = pos
        pos += len(line) + 1
        colon = line.find(b":")
        if colon <= 0:
            raise ParseError("unrecognised line", base)
        key = line[:colon]
        if key == b"Name":
            out[0] = line[colon + 1 :].lstrip(b"\t ").decode("utf-8", "surrogateescape")
        elif key == b"State":
            out[1] = line[colon + 1 :].lstrip(b"\t ")[:1].decode("utf-8", "surrogateescape")
        elif key in _STATUS_KB:
            out[_STATUS_KB[key]] = _value(line.replace(b"\t", b" "), colon + 1, True, base)
        elif key in _STATUS_INT:
            # "Uid:\t0\t0\t0\t0": the real id comes first.
            rest = line[colon + 1 :].lstrip(b"\t ")
            first = rest.split(b"\t", 1)[0]
            if not first or not all(ch in _DEC for ch in first) or len(first) > 19:
                raise ParseError("bad value", base)
            if int(first) > _MAX_I64:
                raise ParseError("value out of range", base)
            out[_STATUS_INT[key]] = int(first)
    if out[2] == -1:
        raise ParseError("no Tgid line", 0)
    return Status(*out)  # type: ignore[arg-type]
