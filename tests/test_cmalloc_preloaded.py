"""Preloaded allocators (jemalloc, tcmalloc) against their own statistics,
and Redis, a real program on Debian's jemalloc.

tests/cprogs/allocstats.c mallocs small objects, frees every other one
(fragmentation: pages half used), frees one block of a few MiB (free
pages the allocator keeps), and prints what the allocator says of itself:
jemalloc's mallctl() stats, gperftools' MallocExtension properties.
memscan reads neither allocator's structures (owners.c.preloaded says
why): it sees their regions' resident pages, of which only the pages
purged with MADV_FREE (LazyFree) are known free.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import Dict, List

import pytest

import memscan
from memscan import explain

from helpers.cli import run_cli

from test_cmalloc import JEMALLOC, TCMALLOC

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")

needs_jemalloc = pytest.mark.skipif(not os.path.exists(JEMALLOC),
                                    reason=f"{JEMALLOC} not installed (apt-get install libjemalloc2)")

#: jemalloc's stats.resident is a maximum (jemalloc's manual): it counts
#: the base blocks of its metadata in whole, touched or not, so memscan finds
#: 2.5 to 4.6 MiB less in these runs (5.3.0; stats.metadata itself varied
#: from 3.6 to 5.7 MiB with where the rtree's nodes fell). The pages of
#: active and dirty extents are resident, every byte of them written, but
#: the tail of the last slab of each size class: a MiB covers that. Muzzy
#: pages (MADV_FREE) are resident until reclaimed yet out of jemalloc's count.
SLAB_TAILS = 1 * MIB


def warned_unread(snap: memscan.Snapshot, name: str) -> bool:
    return any(f"{name} owns malloc" in w and "cannot be told apart" in w for w in snap.warnings)


@needs_jemalloc
@pytest.mark.parametrize("conf", [None, "dirty_decay_ms:0,muzzy_decay_ms:-1"], ids=["default", "muzzy"])
def test_jemalloc_against_mallctl(cprog, conf):
    env = {"LD_PRELOAD": JEMALLOC, **({"MALLOC_CONF": conf} if conf else {})}
    prog = cprog("allocstats", 64, "big=4", env=env)
    je = prog.report["jemalloc"]
    snap = memscan.scan(prog.pid, tier="exact")
    assert snap.allocator == "jemalloc"
    c = snap.categories["c_malloc"]
    muzzy = je["arenas.4096.pmuzzy"] * PAGE
    assert je["resident"] - je["metadata"] - SLAB_TAILS <= c.rss <= je["resident"] + muzzy, (c, je)
    # Half the small objects were freed into pages still in use: jemalloc
    # knows (allocated ~ half of active), memscan cannot, and says so.
    assert je["allocated"] < 0.6 * je["active"]
    assert warned_unread(snap, "jemalloc"), snap.warnings
    d = snap.c_malloc_detail
    assert d["in_use"].rss == 0 and d["free"].rss == d["free"].lazyfree
    # What memscan calls free is what jemalloc purged lazily and the kernel
    # has not reclaimed: muzzy pages, and unused memory by jemalloc's count.
    assert d["free"].rss <= min(muzzy, je["resident"] + muzzy - je["allocated"])
    assert d["unassigned"].rss >= je["active"] - SLAB_TAILS


@pytest.mark.skipif(not os.path.exists(TCMALLOC), reason=f"{TCMALLOC} not installed (apt-get install libtcmalloc-minimal4)")
@pytest.mark.parametrize("release", [False, True], ids=["kept", "released"])
def test_tcmalloc_against_malloc_extension(cprog, release):
    prog = cprog("allocstats", 64, "big=4", *(["release"] if release else []), env={"LD_PRELOAD": TCMALLOC})
    tc = prog.report["tcmalloc"]
    snap = memscan.scan(prog.pid, tier="exact")
    assert snap.allocator == "tcmalloc"
    c = snap.categories["c_malloc"]
    # generic.total_physical_bytes is heap_size - pageheap_unmapped_bytes +
    # metadata, pages as tcmalloc counts them (gperftools 2.10), whether
    # touched or not; memscan's [heap] and the library's .bss metadata
    # were within 1.2 MiB of it. 2 MiB + 2% leaves room for the .bss.
    assert abs(c.rss - tc["total_physical_bytes"]) <= 2 * MIB + 0.02 * tc["total_physical_bytes"], (c, tc)
    if release:
        assert tc["pageheap_unmapped_bytes"] >= 4 * MIB and tc["pageheap_free_bytes"] == 0
    else:
        assert tc["pageheap_free_bytes"] >= 4 * MIB
    assert warned_unread(snap, "tcmalloc"), snap.warnings
    d = snap.c_malloc_detail
    assert d["in_use"].rss == 0 and d["free"].rss == d["free"].lazyfree
    # gperftools releases with MADV_DONTNEED on Linux unless built otherwise:
    # a lazily freed page would be one it counts unmapped.
    assert d["free"].rss <= tc["pageheap_unmapped_bytes"]


# --------------------------------------------------------------------------
# Redis (Debian 12's redis-server links the system libjemalloc.so.2)


class Redis:
    """redis-server on a unix socket (no TCP port, no persistence), and a
    minimal RESP client: pipelined commands, replies read one by one."""

    def __init__(self, workdir: str) -> None:
        self.path = os.path.join(workdir, "redis.sock")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.path, "--save", "", "--appendonly", "no",
             "--dir", workdir], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("redis-server did not open its socket")
            time.sleep(0.02)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)
        self.file = self.sock.makefile("rb")

    def send(self, commands: List[List[bytes]]) -> List[bytes]:
        self.sock.sendall(b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in c)
                                   for c in commands))
        return [self._reply() for _ in commands]

    def _reply(self) -> bytes:
        line = self.file.readline()
        assert line[:1] != b"-", line
        if line[:1] == b"$":
            return self.file.read(int(line[1:]) + 2)[:-2]
        return line.rstrip(b"\r\n")

    def info(self) -> Dict[str, str]:
        text = self.send([[b"INFO", b"memory"]])[0].decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def stop(self) -> None:
        if hasattr(self, "sock"):
            self.sock.close()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    r = Redis(str(tmp_path))
    yield r
    r.stop()


KEYS = 300_000
BATCH = 10_000


def test_redis_half_deleted(redis):
    """Redis after deleting every other key of 300k of ~200 bytes: jemalloc
    keeps the freed half in pages still in use (INFO's allocator_frag_ratio
    ~1.7). memscan finds jemalloc's resident memory and, unable to split it,
    says that freed memory may be among it, with jemalloc's remedies."""
    value = b"v" * 200
    for i in range(0, KEYS, BATCH):
        assert set(redis.send([[b"SET", b"key:%d" % k, value] for k in range(i, i + BATCH)])) == {b"+OK"}
    for i in range(0, KEYS, BATCH):
        assert set(redis.send([[b"DEL", b"key:%d" % k] for k in range(i, i + BATCH, 2)])) == {b":1"}
    info = redis.info()
    assert info["mem_allocator"].startswith("jemalloc")
    allocated, active, resident = (int(info[k]) for k in ("allocator_allocated", "allocator_active",
                                                           "allocator_resident"))
    assert resident > 1.5 * allocated, info  # the case to explain: half of it freed, yet resident

    snap = memscan.scan(redis.proc.pid, tier="exact")
    assert snap.allocator == "jemalloc"
    c = snap.categories["c_malloc"]
    # INFO has no metadata figure: active (objects' pages, no dirty ones)
    # bounds it from below instead.
    assert active - SLAB_TAILS <= c.rss <= resident, (c.rss, info)
    assert snap.c_malloc_detail["unassigned"].rss >= active - SLAB_TAILS
    assert warned_unread(snap, "jemalloc")

    found = {f["id"]: f for f in explain.report([snap])["findings"]}
    frag = found["c_fragmentation"]
    assert frag["numbers"]["unknown_rss_bytes"] == snap.c_malloc_detail["unassigned"].rss
    assert "allocator_resident" in frag["text"] and "dirty_decay_ms" in frag["text"]
    assert "activedefrag" in frag["text"] and "MEMORY PURGE" in frag["text"]
    out = run_cli("explain", str(redis.proc.pid))
    assert out.returncode == 0, out.stderr
    assert "jemalloc memory not split into in use and freed" in out.stdout, out.stdout
