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
from helpers.cprogram import CProgram
from helpers.goprogram import goprog
from helpers.gotoolchain import GO_1_19, GO_VERSIONS
from helpers.processes import stop

MIB = 1 << 20
NO_LIMIT = (1 << 63) - 1  # math.MaxInt64: debug.SetMemoryLimit's "no limit"


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


#: One build of tests/goprogs/memlimit per (Go, ldflags): with DWARF, -w
#: (symbols only: the layout table of its Go version) and -s -w (neither:
#: the environment's GOMEMLIMIT).
LIMIT_BUILDS = [pytest.param(version, ldflags, id=f"go{version}{ldflags.replace(' ', '')}")
                for version in (GO_1_19, GO_VERSIONS[-1]) for ldflags in ("", "-w", "-s -w")]


@pytest.fixture
def memlimit_prog():  # type: ignore[no-untyped-def]
    """``memlimit_prog(version, ldflags, *args, env=None)``: tests/goprogs/memlimit, started."""
    started = []

    def start(version: str, ldflags: str, *args: str, env=None) -> CProgram:  # type: ignore[no-untyped-def]
        prog = CProgram([goprog("memlimit", version, ldflags=ldflags), *args], env=env)
        started.append(prog)
        return prog

    yield start
    for prog in started:
        prog.stop()


@pytest.mark.slow
@pytest.mark.parametrize("version,ldflags", LIMIT_BUILDS)
def test_runtime_memory_limit(memlimit_prog, version, ldflags):
    from memscan.owners.go.memlimit import ENVIRONMENT, RUNTIME, memory_limit

    env = {"GOMEMLIMIT": "1GiB"}
    none = memlimit_prog(version, ldflags, env={"GOMEMLIMIT": "off"})
    started = memlimit_prog(version, ldflags, env=env)
    changed = memlimit_prog(version, ldflags, "-set", str(123456789), env=env)
    assert none.report["memory_limit"] == NO_LIMIT
    assert started.report["memory_limit"] == 1 << 30
    assert changed.report["memory_limit"] == 123456789
    assert memory_limit(none.pid).value is None
    assert memory_limit(started.pid).value == 1 << 30
    if "-s" in ldflags:
        # No symbol table: the environment's value, whatever the program set since.
        assert memory_limit(none.pid).source == ENVIRONMENT
        assert memory_limit(changed.pid) == (1 << 30, ENVIRONMENT)
    else:
        # The runtime's own value (DWARF, or the layout table with -w).
        assert memory_limit(changed.pid) == (changed.report["memory_limit"], RUNTIME)


@pytest.mark.slow
@pytest.mark.parametrize("version", [GO_1_19, GO_VERSIONS[-1]])
def test_stripped_limit_finding(memlimit_prog, version):
    """explain on a binary without symbols: the GOMEMLIMIT of its
    environment, said to be that."""
    prog = memlimit_prog(version, "-s -w", env={"GOMEMLIMIT": "300MiB"})
    assert prog.report["memory_limit"] == 300 * MIB
    with memory_cgroup(limit=256 * MIB) as cg:
        cg.add(prog.pid)
        proc = run_cli("explain", str(prog.pid), "--json", "--tier", "exact")
        assert proc.returncode == 0, proc.stderr
        finding = {f["id"]: f for f in json.loads(proc.stdout)["findings"]}["cgroup_gomemlimit"]
    assert finding["numbers"]["environment_memory_limit_bytes"] == 300 * MIB
    assert "runtime_memory_limit_bytes" not in finding["numbers"]
    assert "GOMEMLIMIT in its environment is 300.0 MiB" in finding["text"]
    assert "debug.SetMemoryLimit may have changed since" in finding["text"]


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("123", 123), ("+5", 5), ("123B", 123), ("1KiB", 1024), ("300MiB", 300 * MIB), ("1GiB", 1 << 30),
    ("2TiB", 2 << 40), (str(NO_LIMIT), NO_LIMIT), ("8388607TiB", 8388607 << 40),
    ("", None), ("-1", None), ("1KB", None), ("1MB", None), ("iB", None), ("KiB", None), ("1PiB", None),
    ("1 MiB", None), ("8388608TiB", None), (str(NO_LIMIT + 1), None), ("1.5GiB", None), ("0x10", None),
    ("1_000", None), ("\u0661", None), ("B", None),
])
def test_parse_byte_count(text, value):
    """As runtime.parseByteCount parses GOMEMLIMIT."""
    from memscan.owners.go.memlimit import parse_byte_count

    assert parse_byte_count(text) == value
