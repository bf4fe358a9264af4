"""The flight recorder's cost (``memscan record PID --ring``), per hour.

A recorder left running on a service for days must be cheap: this runs it
on the bundled Go demo (``-heap 64``) for MEASURE_S seconds at a few rates
and tiers, and prints the recorder's CPU seconds per hour (user + system,
extrapolated from the run) and its RSS at the end, which the bounded ring
keeps flat however long it runs. Nothing fails on timing; the run must end
cleanly (Ctrl-C writes the ring) and the ring hold RING_S seconds.

    python -m pytest bench -k ring -s
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from memscan import record

from conftest import _read_json_line, smoke_mode, stop

MEASURE_S = 30.0
SMOKE_S = 6.0
RING_S = 5.0
SETTINGS = (("2", "layout"), ("10", "layout"), ("10", "auto"))


@pytest.mark.parametrize("hz, tier", SETTINGS, ids=[f"{hz}Hz-{tier}" for hz, tier in SETTINGS])
def test_ring_cost_per_hour(request, go_demo, tmp_path, hz, tier):  # type: ignore[no-untyped-def]
    seconds = SMOKE_S if smoke_mode(request.config) else MEASURE_S
    err_path = tmp_path / "demo.stderr"
    with open(err_path, "wb") as err:
        target = subprocess.Popen([go_demo.exe, "-heap", "64"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=err)
    try:
        _read_json_line(target, 60, err_path)
        out = tmp_path / "ring.jsonl"
        rec = subprocess.Popen([sys.executable, "-m", "memscan", "record", str(target.pid), "--ring", str(RING_S),
                                "--hz", hz, "--tier", tier, "-o", str(out)], stderr=subprocess.PIPE)
        me = psutil.Process(rec.pid)
        time.sleep(2.0)  # start-up (imports, the first full scan) is not the steady cost
        start = me.cpu_times()
        time.sleep(seconds)
        end = me.cpu_times()
        rss = me.memory_info().rss
        rec.send_signal(signal.SIGINT)
        _, stderr = rec.communicate(timeout=60)
        assert rec.returncode == 130, stderr
        got = record.read(str(out))
        mono = got.column("mono")
        # Lines leave the ring by the time they were made, a sample's mono by when it began.
        assert got.end["reason"] == "interrupted" and mono[-1] - mono[0] <= RING_S + 0.1
        cpu = (end.user - start.user) + (end.system - start.system)
        per_hour = cpu * 3600 / seconds
        print(f"\nring {RING_S:g} s, {hz} Hz, tier {tier}: {per_hour:,.0f} CPU s per hour "
              f"({100 * cpu / seconds:.2f}% of a CPU), recorder RSS {rss / (1 << 20):.1f} MiB")
    finally:
        stop(target)
