"""Sanity checks of the Go demo program itself (memscan/demo).

The scanner's tests compare memscan's numbers with what the demo reports, so
first make sure the demo puts its memory where it says, with every
toolchain and cgo setting we test.
"""

from __future__ import annotations

import pytest

from helpers.gotoolchain import GO_VERSIONS

MiB = 1 << 20

HEAP, GARBAGE, GOROUTINES = 64, 32, 50
CMALLOC, CSMALL, CTHREADS = 32, 500, 2
#: The demo's C threads each touch 1 MiB; -csmall allocates 20000 B each.
C_REQUESTED = CMALLOC * MiB + CSMALL * 20000 + CTHREADS * MiB


def vm_rss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


@pytest.mark.slow
@pytest.mark.parametrize("cgo", [False, True], ids=["nocgo", "cgo"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_demo_program(go_program, version: str, cgo: bool) -> None:
    args = ["-heap", HEAP, "-garbage", GARBAGE, "-goroutines", GOROUTINES]
    if cgo:
        args += ["-cmalloc", CMALLOC, "-csmall", CSMALL, "-cthreads", CTHREADS]
    prog = go_program(version=version, cgo=cgo, args=args)
    r = prog.report
    ms = r["memstats"]

    assert r["pid"] == prog.pid
    assert r["go_version"] == f"go{version}"
    assert r["cgo"] is cgo
    assert r["live_heap"] == HEAP * MiB
    assert ms["HeapInuse"] >= HEAP * MiB
    # The garbage was collected before the report: free spans, still mapped.
    assert ms["HeapIdle"] - ms["HeapReleased"] >= GARBAGE * MiB // 2
    # Each parked goroutine holds a 64 KiB stack (~48 KiB in use); allow
    # for a smaller one in case a toolchain's frames come out smaller.
    assert ms["StackInuse"] > GOROUTINES * 32 * 1024
    classes = r["metrics"]
    assert classes["/memory/classes/total:bytes"] == ms["Sys"]
    assert classes["/memory/classes/heap/stacks:bytes"] == ms["StackInuse"]
    assert sum(v for k, v in classes.items() if k != "/memory/classes/total:bytes") == ms["Sys"]

    if cgo:
        mi = r["mallinfo2"]
        assert r["c_big"] == CMALLOC * MiB
        assert r["c_touched"] >= C_REQUESTED
        # One mmapped chunk: request + 16 B header, rounded up to a page.
        assert mi["hblks"] == 1
        assert mi["hblkhd"] >= CMALLOC * MiB
        # Small pieces come from the main arena and the threads' arenas.
        assert mi["uordblks"] >= CSMALL * 20000 + CTHREADS * MiB
    else:
        assert "mallinfo2" not in r and "c_touched" not in r

    # The process can really be that big: everything above was touched.
    rss_before = vm_rss(prog.pid)
    assert rss_before >= (HEAP + (C_REQUESTED // MiB if cgo else 0)) * MiB

    released_before = ms["HeapReleased"]
    after = prog.command("free")
    assert after is prog.report
    assert after["live_heap"] == 0
    assert after["memstats"]["HeapReleased"] >= released_before + HEAP * MiB
    rss_after = vm_rss(prog.pid)
    assert rss_after <= rss_before - HEAP * MiB

    if cgo:
        leaked = prog.command("cleak 8")
        assert leaked["c_big"] == (CMALLOC + 8) * MiB
        assert leaked["mallinfo2"]["hblks"] == 2
        assert leaked["mallinfo2"]["hblkhd"] >= (CMALLOC + 8) * MiB
        assert vm_rss(prog.pid) >= rss_after + 8 * MiB - MiB // 2

    assert prog.command("quit") == {"quit": True}
    assert prog.proc.wait(timeout=30) == 0
