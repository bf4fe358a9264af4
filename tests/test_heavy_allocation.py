"""The exact tier on a Go program that allocates flat out on every core
(tests/goprogs/allocator): explicit scans, the Sampler and ``memscan
record``. A full scan that finds the Go heap changing under every read
never ends a Sampler or a recording: its tick carries the last good heap
states, their age in ``states_age``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from typing import Iterator, List

import pytest

import memscan
from memscan import record
from memscan.core import refresh
from memscan.core import sampler as sampler_module
from memscan.core.sampler import Sample, Sampler

from helpers.cprogram import CProgram
from helpers.goprogram import allocator
from helpers.gotoolchain import GO_VERSIONS

pytestmark = pytest.mark.slow

SCANS = 60


@pytest.fixture(scope="module")
def allocating() -> Iterator[CProgram]:
    """The allocator with 16 MiB of live heap and GOMAXPROCS goroutines allocating."""
    prog = CProgram([allocator(GO_VERSIONS[-1], False), "-heap", "16"])
    try:
        time.sleep(0.3)  # past the first GC cycles
        yield prog
    finally:
        prog.stop()


def test_exact_scans_under_flat_out_allocation(allocating):
    """At least 59 of 60 explicit exact scans succeed: arenas are read
    consistently one by one and only the pages that changed are read again.
    Only HeapChanged may fail one (any other error fails the test outright)."""
    ok = 0
    failed: Counter = Counter()
    t0 = time.perf_counter()
    for _ in range(SCANS):
        try:
            snap = memscan.scan(allocating.pid, tier="exact")
        except memscan.HeapChanged as err:
            failed[str(err)] += 1
            continue
        assert snap.tier == "exact" and snap.go_heap_detail is not None
        assert snap.go_heap_detail["objects"].size > 0
        ok += 1
    print(f"\nexact scans of a flat-out allocator ({allocating.report['workers']} goroutines): "
          f"{ok}/{SCANS} succeeded in {time.perf_counter() - t0:.1f} s; failures: {dict(failed)}")
    assert ok >= SCANS - 1, f"{ok}/{SCANS} exact scans succeeded"


def sample_for(s: Sampler, seconds: float) -> List[Sample]:
    got = []
    end = time.monotonic() + seconds
    for smp in s:
        got.append(smp)
        if smp.mono >= end:
            break
    return got


def check_ages(samples: List[Sample]) -> None:
    """Every sample carries heap states, read at its full scan (age 0) or
    since: by the last full scan, or a re-read of the heap between full
    scans, and then aged as time goes by until the next read."""
    last_read = None
    prev = None
    for smp in samples:
        assert smp.tier == "exact" and smp.go_heap_detail is not None and smp.categories is not None
        if smp.snapshot is not None:
            last_read = smp.mono
            assert smp.states_age == 0.0
        assert last_read is not None and 0.0 <= smp.states_age <= smp.mono - last_read + 1e-6, (smp, last_read)
        if prev is not None and smp.states_age > 0 and smp.states_age > prev.states_age:
            # Not read again since the previous sample: aged by the time between them.
            assert smp.states_age == pytest.approx(prev.states_age + smp.mono - prev.mono)
        prev = smp


def test_sampler_survives_flat_out_allocation(allocating):
    with Sampler(allocating.pid, interval=0.02, tier="exact", full_every=0.1, polite=False) as s:
        samples = sample_for(s, 3.0)
        assert not s.exited
    full = [smp for smp in samples if smp.snapshot is not None]
    # A full scan past a failed one: the tick carries states older than the full scans' spacing.
    failed = [smp for smp in samples if smp.snapshot is None and smp.states_age > 0.1 + 0.05]
    print(f"\nSampler: {len(samples)} samples, {len(full)} full scans, {len(failed)} past a failed one")
    # A full scan of this target takes ~0.1-0.4 s (its retries included).
    assert len(samples) >= 3 and full
    check_ages(samples)
    if failed:
        assert any("kept changing" in w for w in s.warnings)


def test_record_survives_flat_out_allocation(allocating, tmp_path):
    out = tmp_path / "rec.csv"
    proc = subprocess.run([sys.executable, "-m", "memscan", "record", str(allocating.pid), "-o", str(out),
                           "--tier", "exact", "--hz", "50", "--full-every", "0.1", "--duration", "3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rec = record.read(str(out))
    assert rec.end is not None and rec.end["event"] == "stop" and rec.end["reason"] == "duration"
    assert len(rec.rows) >= 10 and all(r["tier"] == "exact" for r in rec.rows)
    warned = [ev for ev in rec.events if ev["event"] == "warning" and "kept changing" in ev["message"]]
    print(f"\nrecord: {len(rec.rows)} rows, {len(warned)} warnings")
    assert len(warned) <= 1
    assert all(r["states_age"] is not None and r["go_heap.objects"] is not None for r in rec.rows)
    assert all(r["states_age"] == 0 for r in rec.rows if r["pss"] is not None)


# ------------------------------------------------- the heap changing on cue


@pytest.fixture(scope="module")
def quiet() -> Iterator[CProgram]:
    """The allocator with no goroutine allocating: only the failures a test causes fail."""
    prog = CProgram([allocator(GO_VERSIONS[-1], False), "-workers", "0", "-heap", "16"])
    try:
        yield prog
    finally:
        prog.stop()


@pytest.fixture
def heap_fails(monkeypatch):
    """scan_parts, as the Sampler calls it, raises HeapChanged on the calls
    whose numbers are in the returned set (0-based), and so do the owners'
    reads between full scans after such a call."""
    failing = set()
    real, real_owners = sampler_module.scan_parts, refresh.owner_regions
    calls = []

    def changed() -> memscan.HeapChanged:
        return memscan.HeapChanged("the Go heap kept changing while it was read (3 tries)")

    def scan_parts(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(None)
        if len(calls) - 1 in failing:
            raise changed()
        return real(*args, **kwargs)

    def owner_regions(*args, **kwargs):  # type: ignore[no-untyped-def]
        if len(calls) - 1 in failing:
            raise changed()
        return real_owners(*args, **kwargs)

    monkeypatch.setattr(sampler_module, "scan_parts", scan_parts)
    monkeypatch.setattr(refresh, "owner_regions", owner_regions)
    return failing


def test_a_failed_full_scan_carries_the_last_states(quiet, heap_fails, tmp_path):
    """Full scans 1-3 fail: their ticks and the counts after them carry the
    first scan's states, the age growing, one warning; the next good scan
    resets it. The recording has the ages in its "states_age" column."""
    heap_fails.update({1, 2, 3})
    path = str(tmp_path / "rec.jsonl")
    with Sampler(quiet.pid, interval=0.02, tier="exact", full_every=0.1, polite=False) as s, \
            record.Writer(path, {"memscan": memscan.__version__}) as w:
        record.record(s, w, duration=1.5)
        warnings = list(s.warnings)
    rec = record.read(path)
    ages = rec.column("states_age")
    assert None not in ages and ages[0] == 0 and all(a == 0 for a, r in zip(ages, rec.rows) if r["pss"] is not None)
    # One run of growing ages spans the three failed scans (0.1 s apart);
    # the states are fresh again by the end.
    top = ages.index(max(ages))
    start = top
    while start and ages[start - 1] < ages[start]:
        start -= 1
    mono = rec.column("mono")
    assert ages[top] >= 0.25 and ages[-1] < 0.25
    assert ages[top] - ages[start] == pytest.approx(mono[top] - mono[start], abs=1e-3)
    assert sum("kept changing" in w for w in warnings) == 1
    assert sum(ev["event"] == "warning" for ev in rec.events) == 1


def test_first_full_scan_failing(quiet, heap_fails):
    """No good states yet: sample() raises HeapChanged; iteration skips the
    tick (``missed``) and scans again at the next."""
    heap_fails.update({0, 1, 2})
    with Sampler(quiet.pid, interval=0.01, tier="exact", polite=False) as s:
        with pytest.raises(memscan.HeapChanged):
            s.sample()
        first = next(iter(s))
    assert first.snapshot is not None and first.states_age == 0.0 and first.missed >= 2
