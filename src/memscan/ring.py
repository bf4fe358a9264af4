"""The flight recorder: ``memscan record PID --ring SECONDS``.

Samples are kept in memory for the last SECONDS only (a bounded ring of
recording lines) and written, as an ordinary recording, when the target
exits, when ``--trigger`` fires, or on Ctrl-C. The exit event says how the
target ended: its wait status (``status``, or ``signal`` for a death by
signal) when memscan could still read it, and ``oom_kill`` from its memory
cgroup's OOM-kill counter: true when the counter rose over the last seconds
before the death.
"""

from __future__ import annotations

import collections
import operator
import re
import signal
import sys
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from ._errors import Error, NoSuchCgroup
from ._types import CATEGORIES
from .core.sampler import Sample, Sampler
from .format import SIZE_UNITS, size
from .kernel import cgroup, procfs
from .kernel.exits import ExitWatch
from .record import Writer, _Interrupt, format_of, header, record

__all__ = ["RingWriter", "Trigger", "run"]

_TRIGGER = re.compile(r"^\s*([a-z_]+)\s*(>=|>)\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*|%)\s*$", re.I)
# The cgroup's counters are read at most this often (seconds) while sampling.
_CGROUP_EVERY = 0.25


class Trigger:
    """``rss>1GiB``, ``go_heap>=512MiB`` (any category), ``cgroup>90%`` (of the
    memory cgroup's limit) or ``cgroup>900MiB``."""

    def __init__(self, text: str) -> None:
        m = _TRIGGER.match(text)
        if m is None or m.group(1) not in ("rss", "cgroup", *CATEGORIES):
            raise ValueError(f"not a trigger: {text!r} (e.g. rss>1GiB, go_heap>512MiB, cgroup>90%)")
        self.text = text.strip()
        self.what, self.compare = m.group(1), operator.gt if m.group(2) == ">" else operator.ge
        unit, number = m.group(4).lower(), float(m.group(3))
        self.percent = unit == "%"
        if self.percent and self.what != "cgroup":
            raise ValueError(f"not a trigger: {text!r} (a percentage is of the cgroup's limit: cgroup>90%)")
        if not self.percent and unit not in SIZE_UNITS:
            raise ValueError(f"not a trigger: {text!r} (unknown unit {m.group(4)!r})")
        self.value = number if self.percent else size(m.group(3) + unit)

    def fired(self, s: Sample, usage: Optional[int], limit: Optional[int]) -> bool:
        if self.what == "cgroup":
            if usage is None:
                return False
            if self.percent:
                return limit is not None and self.compare(100.0 * usage / limit, self.value)
            return self.compare(usage, self.value)
        value = s.rss if self.what == "rss" else (s.categories or {}).get(self.what)
        return value is not None and self.compare(value, self.value)


class RingWriter(Writer):
    """A Writer whose lines after the header wait in memory, those older
    than ``seconds`` dropped, until :meth:`flush` writes them. ``limit``
    bounds the number of lines whatever the clock does."""

    def __init__(self, path: str, meta: Dict[str, Any], seconds: float, limit: int) -> None:
        super().__init__(path, dict(meta, ring=seconds))
        self.seconds = seconds
        self._head: List[str] = []
        self._ring: Deque[Tuple[float, str]] = collections.deque(maxlen=limit)
        self._in_head = False
        self.flushed = 0

    def __enter__(self) -> "RingWriter":
        return self

    def _start(self, *args: Any, **kwargs: Any) -> None:
        self._in_head = True
        try:
            super()._start(*args, **kwargs)
        finally:
            self._in_head = False

    def _put(self, line: str) -> None:
        if self._in_head:
            self._head.append(line)
            return
        now = time.monotonic()
        self._ring.append((now, line))
        while self._ring and self._ring[0][0] < now - self.seconds:
            self._ring.popleft()

    def flush(self) -> int:
        """Write the header and what the ring holds; the samples written."""
        ring = [line for _, line in self._ring]
        head, self._head = self._head, []
        self._ring.clear()
        for line in head + ring:
            Writer._put(self, line)
        self.flushed = sum(1 for line in ring if not line.startswith(('{"event"', "# event:")))
        return self.flushed


class _CgroupWatch:
    """The target's memory cgroup, read every ``_CGROUP_EVERY`` seconds:
    usage and limit for a trigger, the OOM-kill counter for the exit event."""

    def __init__(self, pid: int, needed: bool) -> None:
        try:
            self.cg: Optional[cgroup.Cgroup] = cgroup.of_pid(pid)
        except NoSuchCgroup:
            if needed:
                raise
            self.cg = None
        self.usage: Optional[int] = None
        self.limit: Optional[int] = None
        self.kills: Deque[Tuple[float, Optional[int]]] = collections.deque(maxlen=16)
        self._last = -1.0
        self.poll()
        if needed and self.limit is None:
            raise Error(f"the memory cgroup of pid {pid} ({self.cg.path if self.cg else '?'}) has no limit")

    def poll(self) -> None:
        now = time.monotonic()
        if self.cg is None or now - self._last < _CGROUP_EVERY:
            return
        self._last = now
        try:
            self.usage, self.limit = cgroup.usage_and_limit(self.cg)
        except (NoSuchCgroup, FileNotFoundError):
            self.usage = None
        self.kills.append((now, cgroup.oom_kills(self.cg)))

    def oom_killed(self) -> Optional[bool]:
        """The counter now against its value about two seconds before: the
        kernel counts the kill before it signals the victim, so the rise may
        already show in the last read before the death was seen."""
        if self.cg is None:
            return None
        after = cgroup.oom_kills(self.cg)
        now = time.monotonic()
        known = [(t, k) for t, k in self.kills if k is not None]
        if after is None or not known:
            return None
        before = [k for t, k in known if t <= now - 2.0]
        return after > (before[-1] if before else known[0][1])


def _exit_fields(pid: int, starttime: int, watch: _CgroupWatch, exits: ExitWatch, t0: float) -> Dict[str, Any]:
    """How the target ended: its wait status, from the proc connector (any
    process, even one its parent reaped at once), else from /proc while it
    is exiting or a zombie (its exit_code is final once it is a zombie).
    ``died``: when, on the recording's clock (time 0 at ``t0``), where the
    connector said."""
    code = exits.status(timeout=0.5)
    deadline = time.monotonic() + 1.0
    while code is None and time.monotonic() < deadline:
        try:
            st = procfs.stat(pid)
        except Error:
            break
        if st.starttime != starttime:
            break
        if st.state in "ZXx":
            code = procfs.exit_code(pid, starttime)
            break
        time.sleep(0.005)
    fields: Dict[str, Any] = {"status": None, "signal": None,
                              "died": None if exits.when is None else round(exits.when - t0, 6)}
    if code is not None:
        if code & 0x7F:
            fields["signal"] = signal.Signals(code & 0x7F).name if code & 0x7F in signal.valid_signals() \
                else code & 0x7F
        else:
            fields["status"] = code >> 8
    fields["oom_kill"] = watch.oom_killed()
    if watch.cg is not None:
        fields["cgroup"] = watch.cg.path
    return fields


def run(pid: int, output: str, *, seconds: float, trigger: Optional[Trigger], hz: float, duration: Optional[float],
        tier: str, engine: Optional[str], full_every: float) -> int:
    """``memscan record --ring``: sample into memory, write the last
    ``seconds`` when the target exits, ``trigger`` fires or on Ctrl-C."""
    format_of(output)
    meta = header(pid, tier=tier, hz=hz, full_every=full_every)
    if trigger is not None:
        meta["trigger"] = trigger.text
    starttime = procfs.stat(pid).starttime
    watch = _CgroupWatch(pid, trigger is not None and trigger.what == "cgroup")
    exits = ExitWatch(pid)
    # Twice the lines the rate allows, plus room for events: bounded even if
    # the clock stalls.
    limit = int(seconds * hz * 2) + 1000
    fired: List[str] = []
    with Sampler(pid, 1.0 / hz, tier, full_every=full_every, engine=engine) as sampler, \
            RingWriter(output, meta, seconds, limit) as writer, _Interrupt() as interrupt:

        def each(s: Sample) -> None:
            watch.poll()
            if trigger is not None and not fired and trigger.fired(s, watch.usage, watch.limit):
                fired.append(trigger.text)

        def stop() -> Optional[str]:
            return "trigger" if fired else ("interrupted" if interrupt.asked else None)

        try:
            end = record(sampler, writer, duration=duration, stop=stop, each=each,
                         exit_fields=lambda: _exit_fields(pid, starttime, watch, exits, writer.t0[0] if writer.t0 else 0.0))
        finally:
            exits.close()
        kept = writer.flush()
    say = {"exit": f"pid {pid} exited", "duration": "done", "interrupted": "interrupted",
           "trigger": f"{trigger.text if trigger else ''} fired"}[end.get("reason", "exit")]
    how = ""
    if end["event"] == "exit":
        how = f"signal {end['signal']}" if end["signal"] else (
            "exit status unknown" if end["status"] is None else f"status {end['status']}")
        how = f" ({how}{', OOM-killed' if end.get('oom_kill') else ''})"
    print(f"memscan: {say}{how}: the last {seconds:g} s, {kept:,} samples, in {output}", file=sys.stderr)
    return 130 if end.get("reason") == "interrupted" else 0


def parse_trigger(text: str) -> Trigger:
    """argparse type for ``--trigger``."""
    import argparse

    try:
        return Trigger(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None

