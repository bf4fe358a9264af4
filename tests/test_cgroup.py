"""Memory cgroups: the reader on a cgroup v2 tree written for the test in
the kernel's formats (laid out as a Kubernetes pod under containerd with the
systemd driver: this machine's memory controller is bound to v1, so no real
v2 memory cgroup can be made here) and on real v1 cgroups created
here, and ``memscan cgroup`` on a real v1 cgroup with a memory limit running
a Go + cgo program, checked against the cgroup's own files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import memscan
from memscan import cli
from memscan.kernel import cgroup, procfs

from helpers.cgroups import memory_cgroup
from helpers.cli import assert_one_line_error, assert_whole, dead_pid, run_cli

MIB = 1 << 20
V2 = Path(__file__).parent / "data" / "cgroup2"
POD_UID = "6f1e2a4c-3b7d-4e8f-9a01-b2c3d4e5f607"
CONTAINER_ID = "3f9a1c2b7e4d5a6b8c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"
# /proc/self/mountinfo of the test VM (hybrid: memory on v1, a
# controller-less cgroup2 at .../unified).
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mountinfo: str, cgroup_text: str) -> int:
    """A /proc with self/mountinfo and one process's cgroup file."""
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(mountinfo)
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(cgroup_text)
    monkeypatch.setattr(procfs, "PROCFS_PATH", str(tmp_path))
    return 4242


def v2_mountinfo(point: Path = V2) -> str:
    return f"30 24 0:26 / {point} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_v2_containerd_pod_systemd_driver(tmp_path, monkeypatch):
    pid = fake_proc(tmp_path, monkeypatch, v2_mountinfo(), (V2 / "pid4242.cgroup").read_text())
    cg = cgroup.of_pid(pid)
    assert cg.version == 2 and cg.pressure_dir is None
    assert cg.path.endswith(f"cri-containerd-{CONTAINER_ID}.scope")
    charge = cgroup.read(cg)
    assert (charge.limit, charge.high, charge.usage, charge.peak) == (256 * MIB, None, 219856896, 240 * MIB)
    assert charge.headroom == 256 * MIB - 219856896
    assert charge.working_set == 219856896 - 40960000
    assert (charge.anon, charge.file, charge.shmem, charge.kernel, charge.sock, charge.swap) == (
        152043520, 61440000, 4194304, 6291456, 0, 0)
    assert (charge.file_active, charge.file_inactive, charge.file_dirty) == (16285696, 40960000, 126976)
    assert (charge.slab, charge.kernel_stack, charge.pagetables) == (3766016, 1015808, 1474560)
    assert charge.events == {"low": 0, "high": 0, "max": 12, "oom": 1, "oom_kill": 1, "oom_group_kill": 0}
    assert charge.pressure["some"]["avg10"] == 0.52 and charge.pressure["full"]["total"] == 1310442
    assert charge.pids == [4242, 4301]
    assert charge.container == {"runtime": "containerd", "container_id": CONTAINER_ID, "pod_uid": POD_UID}
    doc = charge.to_dict()
    assert json.loads(json.dumps(doc))["working_set"] == charge.working_set


@pytest.mark.parametrize("path, expected", [
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice/"
     f"crio-{CONTAINER_ID}.scope", {"runtime": "cri-o", "container_id": CONTAINER_ID, "pod_uid": POD_UID}),
    (f"/kubepods/burstable/pod{POD_UID}/{CONTAINER_ID}", {"container_id": CONTAINER_ID, "pod_uid": POD_UID}),
    (f"/kubepods.slice/kubepods-pod{POD_UID.replace('-', '_')}.slice/cri-containerd-{CONTAINER_ID}.scope",
     {"runtime": "containerd", "container_id": CONTAINER_ID, "pod_uid": POD_UID}),
    (f"/kubepods/pod{POD_UID}", {"pod_uid": POD_UID}),
    (f"/docker/{CONTAINER_ID}", {"runtime": "docker", "container_id": CONTAINER_ID}),
    (f"/system.slice/docker-{CONTAINER_ID}.scope", {"runtime": "docker", "container_id": CONTAINER_ID}),
    ("/system.slice/ssh.service", {}),
    ("/", {}),
])
def test_container_and_pod_from_path(path, expected):
    assert cgroup.container(path) == expected


def test_mounts_of_a_hybrid_host():
    v1, v2 = cgroup.memory_mounts(HYBRID)
    assert v1 == cgroup.Mount(1, "/", "/sys/fs/cgroup/memory")
    assert v2 == cgroup.Mount(2, "/", "/sys/fs/cgroup/unified")


def test_the_mount_showing_the_whole_hierarchy_wins():
    # Inside a container (a private cgroup namespace entered as the host's):
    # its own /sys/fs/cgroup shows its subtree, the host's bind mount all of it.
    text = ("1200 1100 0:26 /kubepods.slice/x.scope /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"
            "1300 1100 0:26 / /host/sys/fs/cgroup ro - cgroup2 cgroup2 rw\n")
    assert cgroup.memory_mounts(text) == (None, cgroup.Mount(2, "/", "/host/sys/fs/cgroup"))


@pytest.mark.parametrize("name, text, offset", [
    ("memory.stat", "anon 1\nfile\n", 7),
    ("memory.stat", "anon 1\nfile -3\n", 7),
    ("memory.events", "oom_kill one\n", 0),
])
def test_malformed_flat_files(name, text, offset):
    with pytest.raises(memscan.ParseError) as err:
        cgroup.parse_flat(text, name)
    assert (err.value.path, err.value.offset) == (name, offset)


@pytest.mark.parametrize("text", ["some avg10=0.00 avg60=0.00 avg300=0.00\n", "most avg10=1 avg60=1 avg300=1 total=1\n",
                                  "some avg10=x avg60=0.00 avg300=0.00 total=0\n"])
def test_malformed_pressure(text):
    with pytest.raises(memscan.ParseError):
        cgroup.parse_pressure(text, "memory.pressure")


def test_malformed_file_is_named(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "memory.stat").write_text("anon 1\nfile 2 3\n")
    (d / "memory.current").write_text("3\n")
    with pytest.raises(memscan.ParseError) as err:
        cgroup.read(cgroup.Cgroup(2, "/bad", str(d)))
    assert err.value.path == str(d / "memory.stat") and err.value.offset == 7


def test_process_in_no_memory_cgroup(tmp_path, monkeypatch):
    # A hybrid host's cgroup2 has no memory controller; no v1 memory mount.
    pid = fake_proc(tmp_path, monkeypatch, HYBRID.replace("rw,memory", "rw,blkio"), "4:blkio:/\n0::/\n")
    with pytest.raises(memscan.NoSuchCgroup, match="in no memory cgroup"):
        cgroup.of_pid(pid)


def test_cgroup_outside_the_namespace(tmp_path, monkeypatch):
    pid = fake_proc(tmp_path, monkeypatch, v2_mountinfo(), "0::/../../system.slice/x.service\n")
    with pytest.raises(memscan.NoSuchCgroup, match="outside this cgroup namespace"):
        cgroup.of_pid(pid)


def test_cgroup_without_memory_controller(tmp_path, monkeypatch):
    # An intermediate slice of the tree holds no memory files.
    pid = fake_proc(tmp_path, monkeypatch, v2_mountinfo(), "0::/kubepods.slice\n")
    with pytest.raises(memscan.NoSuchCgroup, match="no memory controller"):
        cgroup.of_pid(pid)


def test_malformed_proc_cgroup(tmp_path, monkeypatch):
    pid = fake_proc(tmp_path, monkeypatch, v2_mountinfo(), "0::/\ngarbage\n")
    with pytest.raises(memscan.ParseError) as err:
        cgroup.of_pid(pid)
    assert err.value.offset == 5


def test_bad_input_cli(tmp_path, monkeypatch, capsys):
    assert_one_line_error(run_cli("cgroup", "/no/such/memscan/cgroup"), "no such cgroup")
    assert_one_line_error(run_cli("cgroup", "--pid", str(dead_pid())), "no longer exists")
    usage = run_cli("cgroup")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    pid = fake_proc(tmp_path, monkeypatch, v2_mountinfo(), "0::/kubepods.slice\n")
    assert cli.main(["cgroup", "--pid", str(pid)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no memory controller" in err[0]


def test_real_v1_cgroup_matches_its_files():
    with memory_cgroup(limit=64 * MIB) as cg:
        found = cgroup.at(cg.path)
        assert (found.version, found.directory) == (1, cg.directory)
        assert cgroup.at(cg.directory) == found
        charge = cgroup.read(found)
        stat = cg.stat()
        assert charge.limit == 64 * MIB and charge.pids == []
        assert charge.usage == cg.number("memory.usage_in_bytes")
        assert (charge.anon, charge.file, charge.file_inactive) == (
            stat["total_rss"], stat["total_cache"], stat["total_inactive_file"])
        assert charge.events == {"failcnt": 0, "oom_kill": 0, "under_oom": 0}


@pytest.mark.slow
def test_cli_ledger_of_a_go_cgo_program(go_program):
    prog = go_program(cgo=True)
    with memory_cgroup(limit=256 * MIB) as cg:
        cg.add(prog.pid)
        assert cgroup.of_pid(prog.pid).directory == cg.directory
        # Pages are charged to the cgroup that faults them in: allocate after the move.
        prog.command("alloc 32")
        prog.command("cleak 16")
        proc = run_cli("cgroup", cg.path, "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        stat = cg.stat()
        assert doc["version"] == 1 and doc["path"] == cg.path and doc["limit"] == 256 * MIB
        assert doc["pids"] == [prog.pid] and [p["pid"] for p in doc["processes"]] == [prog.pid]
        # The idle program's charge moves by a few pages at most between two reads.
        usage = cg.number("memory.usage_in_bytes")
        assert abs(doc["usage"] - usage) < 2 * MIB
        assert abs(doc["anon"] - stat["total_rss"]) < 2 * MIB and doc["anon"] >= 48 * MIB
        assert abs(doc["working_set"] - (usage - stat["total_inactive_file"])) < 2 * MIB
        assert doc["kernel"] is not None and doc["headroom"] == 256 * MIB - doc["usage"]
        cats = doc["processes"][0]["categories"]
        assert cats["go_heap"]["rss"] >= 32 * MIB and cats["c_malloc"]["rss"] >= 16 * MIB
        assert doc["remainder"] == doc["usage"] - doc["process_pss"]
        table = run_cli("cgroup", "--pid", str(prog.pid))
        assert table.returncode == 0 and "remainder" in table.stdout and str(prog.pid) in table.stdout


@pytest.mark.parametrize("tier", ["auto", "psutil"])
def test_cli_table_whole_when_piped(tier):
    """Nine processes in a real cgroup, their table wider than the 80
    columns a pipe gets: nothing cut, no trailing spaces, the path on one
    line; the warnings (the psutil tier's, per process) on stderr only,
    with the figures they say are unknown shown as n/a."""
    with memory_cgroup() as cg:
        procs = [subprocess.Popen(["sleep", "60"]) for _ in range(9)]
        try:
            for p in procs:
                cg.add(p.pid)
            done = subprocess.run([sys.executable, "-m", "memscan", "cgroup", cg.path, "--tier", tier],
                                  capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="80"))
        finally:
            for p in procs:
                p.kill()
                p.wait()
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert_whole(out)
    lines = out.splitlines()
    assert lines[0] == f"cgroup v1 {cg.path}" and "process side (rss MiB by category)" in lines
    assert max(map(len, lines)) > 80 and "warning" not in out
    header = next(line for line in lines if line.startswith("┃ category "))
    assert [int(c.strip()) for c in header.split("┃")[2:-1]] == [p.pid for p in procs]
    pss = next(line for line in lines if line.startswith("│ pss "))
    warnings = done.stderr.splitlines()
    if tier == "psutil":
        assert set(c.strip() for c in pss.split("│")[2:-1]) == {"n/a"}
        assert [w.split(":")[:3] for w in warnings] == [["memscan", " warning", f" pid {p.pid}"] for p in procs]
        assert all("n/a in the table" in w for w in warnings)
    else:
        assert "n/a" not in pss and warnings == []
