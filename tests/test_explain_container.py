"""memscan explain on a Go + cgo program in a real v1 memory cgroup with a
limit: page cache charged to it, the GOMEMLIMIT that fits, the process that
holds the most, and an OOM kill the kernel made in it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.cgroups import memory_cgroup
from helpers.cli import run_cli
from helpers.processes import stop

MIB = 1 << 20


def in_cgroup(cg, script: str) -> "subprocess.Popen[str]":
    """``sh -c script`` started inside ``cg`` (it moves itself in first)."""
    return subprocess.Popen(["sh", "-c", f"echo $$ > {cg.directory}/cgroup.procs && {script}"], text=True)


@pytest.mark.slow
def test_container_findings(go_program, tmp_path):
    prog = go_program(cgo=True, args=("-goroutines", "4"), env={"GOMEMLIMIT": "300MiB"})
    with memory_cgroup(limit=256 * MIB) as cg:
        cg.add(prog.pid)
        prog.command("alloc 48")
        # A hog the OOM killer picks (oom_score_adj 1000) over the Go program.
        hog = in_cgroup(cg, f"echo 1000 > /proc/$$/oom_score_adj && exec {sys.executable} -c "
                            "'x = bytearray(400 << 20); x[::4096] = b\"x\" * len(x[::4096])'")
        assert hog.wait(60) == -9
        # Then (the OOM's reclaim would have dropped it) 48 MiB of page cache
        # charged to the cgroup, and a process that holds little.
        writer = in_cgroup(cg, f"head -c {48 * MIB} /dev/zero > {tmp_path / 'cache'}")
        assert writer.wait(60) == 0
        sleeper = in_cgroup(cg, "exec sleep 300")
        try:
            proc = run_cli("explain", str(prog.pid), "--json", "--tier", "exact")
            assert proc.returncode == 0, proc.stderr
            doc = json.loads(proc.stdout)
            assert doc["cgroup"]["path"] == cg.path and doc["cgroup"]["limit"] == 256 * MIB
            found = {f["id"]: f for f in doc["findings"]}
            assert found["cgroup_oom_kills"]["numbers"]["oom_kills"] == 1
            assert doc["findings"][0]["severity"] == "warning"
            cache = found["cgroup_page_cache"]["numbers"]
            assert cache["file_bytes"] >= 40 * MIB and cache["reclaimable_bytes"] <= cache["file_bytes"]
            limit = found["cgroup_gomemlimit"]["numbers"]
            assert limit["go_heap_bytes"] >= 48 * MIB
            assert limit["suggested_gomemlimit_bytes"] == int(256 * MIB * 0.9) - limit["other_charge_bytes"]
            assert f"GOMEMLIMIT to about {limit['suggested_gomemlimit_bytes'] >> 20}MiB" in \
                found["cgroup_gomemlimit"]["text"]
            # Read from the runtime's structures: above the cgroup's limit.
            assert limit["runtime_memory_limit_bytes"] == 300 * MIB
            assert "above the cgroup's limit" in found["cgroup_gomemlimit"]["text"]
            assert found["cgroup_top_process"]["numbers"]["pid"] == prog.pid
            text = run_cli("explain", str(prog.pid))
            assert text.returncode == 0 and "OOM kill" in text.stdout and "GOMEMLIMIT" in text.stdout
        finally:
            stop(sleeper)


@pytest.mark.slow
def test_runtime_memory_limit(go_program):
    from memscan.owners.go.memlimit import memory_limit

    assert memory_limit(go_program().pid) is None
    assert memory_limit(go_program(env={"GOMEMLIMIT": "1GiB"}).pid) == 1 << 30
