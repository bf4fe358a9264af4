"""``memscan record`` at its defaults (100 Hz, polite) over a Go + cgo
program walking through phases (tests/goprogs/phases: live heap allocated
in steps, dropped, released; C memory leaked in small and large chunks,
half of it freed), which writes its own accounting every 50 ms. Of the
samples taken at least 0.5 s into a phase, at least 98 % match it: the
Go heap's objects and free pages against MemStats, c_malloc against the C
bytes live, next to nothing left in anon_other and nothing resident in
reserved address space."""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from memscan import record

from helpers import gotoolchain

pytestmark = pytest.mark.slow

MIB = 1 << 20
PHASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "goprogs", "phases")
SETTLE = 0.5  # seconds into a phase before a sample must match
MATCHED = 0.98


def mismatches(row: Dict[str, Any], own: Dict[str, Any]) -> List[str]:
    """What of a recorded sample disagrees with the program's own figures."""
    inuse, free = own["HeapInuse"], own["HeapIdle"] - own["HeapReleased"]
    checks = {
        "objects": abs(row["go_heap.objects"] - inuse) <= max(0.03 * inuse, 3 * MIB),
        "free": abs(row["go_heap.free"] - free) <= max(0.03 * free, 3 * MIB),
        "c_malloc": row["c_malloc"] >= own["c_live"],
        "anon_other": row["anon_other"] <= 0.01 * row["rss"],
        # Address space the runtime has not grown into is never resident.
        "reserved": row["go_heap.reserved"] == 0,
    }
    return [name for name, ok in checks.items() if not ok]


@pytest.mark.parametrize("version", [gotoolchain.GO_VERSIONS[-1], gotoolchain.GO_1_19])
def test_recording_matches_the_programs_own_accounting(version, tmp_path):
    from memscan.demo import build as gobuild

    try:
        root = gotoolchain.goroot(version)
    except Exception as err:  # noqa: BLE001 - a toolchain this machine cannot have
        pytest.skip(f"Go {version}: {err}")
    exe = gobuild.build(PHASES_DIR, goroot=root, cgo=True, out_name="phases")
    prog = subprocess.Popen([exe], stdout=subprocess.PIPE, text=True)
    out = str(tmp_path / "phases.csv")
    try:
        rec_proc = subprocess.run([sys.executable, "-m", "memscan", "record", str(prog.pid), "-o", out],
                                  capture_output=True, text=True, timeout=120)
        own = [json.loads(line) for line in prog.stdout.read().splitlines()]
    finally:
        prog.kill()
        prog.wait()
        prog.stdout.close()
    assert rec_proc.returncode == 0, rec_proc.stderr
    rec = record.read(out)
    assert rec.end is not None and rec.end["event"] == "exit"
    times = [o["t"] for o in own]
    judged = 0
    failed: Dict[str, List[float]] = {}
    for row in rec.rows:
        i = bisect.bisect_right(times, row["wall"]) - 1
        # The program's figures at that moment: its last line before, if no
        # phase began between it and the next.
        if i < 0 or i + 1 >= len(own) or own[i + 1]["phase_start"] != own[i]["phase_start"]:
            continue
        if row["wall"] - own[i]["phase_start"] < SETTLE:
            continue
        judged += 1
        for name in mismatches(row, own[i]):
            failed.setdefault(name, []).append(row["mono"])
    bad = len({t for ts in failed.values() for t in ts})
    phases = sorted({o["phase"] for o in own})
    print(f"\nGo {version}: {judged} samples judged over phases {phases}, {bad} off: "
          f"{ {k: len(v) for k, v in failed.items()} }")
    assert len(phases) == 7 and judged >= 500
    assert bad <= (1 - MATCHED) * judged, failed
