"""Both engines, the same behaviour: parsers on real captures, hand-made and
malformed text, Hypothesis-generated input; errors included."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memscan
from memscan import ParseError
from memscan._types import CATEGORIES, F, NFIELDS, Interval, LayoutContext, SmapsTable
from memscan.engine import pure

from helpers.engines import both, fast
from helpers.smapstext import M, mutate, render

DATA = Path(__file__).parent / "data"
CAPTURES = sorted(p for p in DATA.iterdir() if p.suffix in (".smaps", ".maps", ".smaps_rollup"))


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ParseError as err:
        return ("error", err.msg, err.offset)


def test_implementation_is_the_one_built():
    """The compiled engine really loads unless the pure build was asked for."""
    code = "import memscan; print(memscan.IMPLEMENTATION)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ("python" if os.environ.get("MEMSCAN_NO_EXTENSIONS") else "cython")


# ------------------------------------------------------------- real captures


@both
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_engines_agree_on_captures(path):
    data = path.read_bytes()
    assert outcome(pure.parse_smaps, data) == outcome(fast.parse_smaps, data)
    if path.suffix == ".smaps_rollup":
        assert pure.parse_rollup(data) == fast.parse_rollup(data)


@both
@pytest.mark.parametrize("path", [p for p in CAPTURES if p.suffix == ".smaps" and "truncated" not in p.name],
                         ids=lambda p: p.name)
def test_engines_classify_and_sum_alike(path):
    t = pure.parse_smaps(path.read_bytes())
    for go, go_only in ((False, False), (True, False), (True, True)):
        ctx = LayoutContext(-1, -1, 8 << 20, go, go_only, False, [Interval(t.starts[3], t.ends[3], 4)])
        cats = pure.classify(t, ctx)
        assert cats == fast.classify(t, ctx)
        assert pure.accumulate(t, cats) == fast.accumulate(t, cats)


def test_smaps_and_maps_captures_match(engine):
    """smaps and maps of one idle process list the same mappings."""
    smaps = engine.parse_smaps((DATA / "python-odd-mappings.smaps").read_bytes())
    maps = engine.parse_smaps((DATA / "python-odd-mappings.maps").read_bytes())
    assert list(smaps.starts) == list(maps.starts)
    assert smaps.names == maps.names
    assert [v.fields.size for v in smaps.vmas()] == [v.fields.size for v in maps.vmas()]
    names = set(smaps.names)
    assert any(n.endswith("/a file with spaces.bin") for n in names)
    assert any(n.endswith("/gone.bin (deleted)") for n in names)
    assert "/memfd:memscan corpus (deleted)" in names


def test_rollup_capture(engine):
    r = engine.parse_rollup((DATA / "sleep.smaps_rollup").read_bytes())
    assert r.rss > 0 and 0 < r.pss <= r.rss
    assert r.private_clean + r.private_dirty + r.shared_clean + r.shared_dirty == r.rss


def test_older_kernel_without_optional_fields(engine):
    t = engine.parse_smaps((DATA / "derived-kernel5.smaps").read_bytes())
    full = engine.parse_smaps((DATA / "python-odd-mappings.smaps").read_bytes())
    assert len(t) == len(full)
    assert all(v.fields.pss_dirty == 0 and v.fields.ksm == 0 for v in t.vmas())
    assert [v.fields.rss for v in t.vmas()] == [v.fields.rss for v in full.vmas()]


def test_truncated_capture_is_an_error(engine):
    data = (DATA / "derived-truncated.smaps").read_bytes()
    with pytest.raises(ParseError) as err:
        engine.parse_smaps(data)
    assert err.value.msg == "truncated line"
    assert err.value.offset == data.rindex(b"\n") + 1


def test_status_capture(engine):
    st_ = engine.parse_status((DATA / "sleep.status").read_bytes())
    assert st_.name == "sleep" and st_.vm_rss > 0 and st_.threads == 1
    assert st_.vm_rss == st_.rss_anon + st_.rss_file + st_.rss_shmem


# --------------------------------------------------------------- hand-made


def test_fields_in_bytes(engine):
    text = render([M(0x1000, 0x5000, rss=8192, extra={"Swap": 4096, "LazyFree": 4096, "Shared_Clean": 4096})])
    v = engine.parse_smaps(text).vma(0)
    assert (v.start, v.end, v.perms, v.name, v.inode) == (0x1000, 0x5000, "rw-p", "", 0)
    assert v.fields.size == 0x4000 and v.fields.rss == 8192 and v.fields.swap == 4096
    assert v.vmflags == ("rd", "wr", "mr", "mw", "me", "ac")


def test_maps_lines_get_their_size_from_addresses(engine):
    t = engine.parse_smaps(b"00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon\n")
    assert t.vma(0).fields.size == 0x52000 and t.vma(0).dev == (8, 2)
    assert list(t.file_starts) == [0]


def test_unknown_keys_and_flags_are_kept_out(engine):
    text = render([M(0x1000, 0x2000, flags="rd zz")]).replace(b"Locked:", b"NewField:       12 kB\nLocked:")
    v = engine.parse_smaps(text).vma(0)
    assert v.vmflags == ("rd", "??")


MALFORMED = [
    (b"Rss: 4 kB\n", "field before the first mapping header", 0),
    (b"0000-1000 rw-p 00000000 00:00 0\nRss: 4 MB\n", "bad value", 32),
    (b"0000-1000 rw-p 00000000 00:00 0\nRss:4 kB\n", "bad value", 32),
    (b"0000-1000 rw-p 00000000 00:00 0\nRss: 99999999999999999999 kB\n", "value out of range", 32),
    (b"0000-1000 rw-p 00000000 00:00 0\nRss: 999999999999999999999 kB\n", "value out of range", 32),
    (b"0000-1000 rw-p 00000000 00:00 0\nno colon here\n", "unrecognised line", 32),
    (b"0000-1000 rw-p 00000000 00:00 0\nVmFlags: rd w\n", "bad VmFlags", 32),
    (b"0000-1000 rwzp 00000000 00:00 0\n", "bad permissions in mapping header", 0),
    (b"2000-1000 rw-p 00000000 00:00 0\n", "end address below start address", 0),
    (b"00g0-1000 rw-p 00000000 00:00 0\n", "bad start address in mapping header", 0),
    (b"0000-1000 rw-p 00000000 00:00 x\n", "bad inode in mapping header", 0),
    (b"0000-1000 rw-p 00000000 0000 0\n", "bad device in mapping header", 0),
    (b"0000-1000 rw-p 00000000 00:00 0\n\n", "unrecognised line", 32),
    (b"0000-1000 rw-p 00000000 00:00 0", "truncated line", 0),
    (b"\x00\xff\n", "unrecognised line", 0),
]


@pytest.mark.parametrize("text,msg,offset", MALFORMED)
def test_malformed_text(engine, text, msg, offset):
    with pytest.raises(ParseError) as err:
        engine.parse_smaps(text)
    assert (err.value.msg, err.value.offset) == (msg, offset)
    assert "at byte" in str(err.value)


def test_rollup_needs_one_record(engine):
    with pytest.raises(ParseError, match="expected one rollup record"):
        engine.parse_rollup(render([M(0, 0x1000), M(0x1000, 0x2000)]))


def test_read_all_reads_to_eof(engine, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(os.urandom(200_000))
    fd = os.open(p, os.O_RDONLY)
    try:
        buf = bytearray()
        for _ in range(2):  # a second read starts over from offset 0
            n = engine.read_all(fd, buf)
            assert bytes(buf[:n]) == p.read_bytes()
    finally:
        os.close(fd)


# ------------------------------------------------------------ Hypothesis

maps_st = st.lists(
    st.builds(
        lambda start, pages, perms, name, rss: M(start * 4096, (start + pages) * 4096, perms, name,
                                                 inode=7 if name.startswith("/") else 0, rss=min(rss, pages) * 4096),
        st.integers(0, 2**35), st.integers(1, 2**20), st.sampled_from(["rw-p", "---p", "r-xp", "rw-s", "r--p"]),
        st.sampled_from(["", "[heap]", "[stack]", "/usr/lib/libc.so.6", "/tmp/a file", "/x (deleted)", "[anon: Go: heap]"]),
        st.integers(0, 2**20),
    ),
    max_size=8,
)


@both
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maps_st, st.data())
def test_engines_agree_on_generated_text(maps, data):
    text = mutate(render(sorted(maps)), data)
    a, b = outcome(pure.parse_smaps, text), outcome(fast.parse_smaps, text)
    assert a == b
    if a[0] == "ok":
        ctx = LayoutContext(-1, -1, 8 << 20, True, False, False, [])
        assert pure.classify(a[1], ctx) == fast.classify(b[1], ctx)
        assert pure.accumulate(a[1], pure.classify(a[1], ctx)) == fast.accumulate(b[1], fast.classify(b[1], ctx))


@both
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_engines_agree_on_junk(junk):
    assert outcome(pure.parse_smaps, junk) == outcome(fast.parse_smaps, junk)


# -------------------------------------------------------- layout rules

MIB = 1 << 20
CTX = LayoutContext(exe_dev=0xFE << 32, exe_inode=99, stack_size=8 * MIB, go=True, go_only=False,
                    jemalloc=False, intervals=[])


def cats_of(engine, maps, ctx=CTX):
    t = engine.parse_smaps(render(maps))
    return [CATEGORIES[c] for c in engine.classify(t, ctx)]


def test_rules_go_arenas(engine):
    base = 0x378418000000  # Go 1.26+: a random 64 MiB-aligned base below 2^46
    maps = [
        M(0xC000000000, 0xC000000000 + 200 * MIB),  # fixed hint of Go <= 1.25
        M(0xC000000000 + 200 * MIB, 0xC000000000 + 256 * MIB, "---p"),
        M(base, base + 32 * MIB, "---p"),  # random padding below the heap
        M(base + 32 * MIB, base + 100 * MIB),
        M(base + 100 * MIB, base + 128 * MIB, "---p"),
        M(0x500000000000, 0x500000000000 + 64 * MIB),  # above 2^46: not Go's
    ]
    assert cats_of(engine, maps) == ["go_heap"] * 5 + ["c_malloc"]
    # Without a Go runtime nothing is Go heap; MAP_NORESERVE is glibc's.
    assert "go_heap" not in cats_of(engine, maps, CTX._replace(go=False))
    assert cats_of(engine, [M(0xC000000000, 0xC004000000, flags="rd wr nr")])[0] != "go_heap"


def test_rules_stacks_and_glibc_arenas(engine):
    top = 0x7F0000000000
    maps = [
        M(top, top + 4096, "---p", flags="mr mw me nh"),  # guard
        M(top + 4096, top + 4096 + 8 * MIB, flags="rd wr mr mw me ac nh"),  # pthread stack
        M(top + 64 * MIB, top + 64 * MIB + 132 * 1024, flags="rd wr mr mw me nr"),  # glibc arena head
        M(top + 64 * MIB + 132 * 1024, top + 128 * MIB, "---p", flags="mr mw me nr"),  # its tail
        M(top + 200 * MIB, top + 210 * MIB),  # plain anonymous
        M(top + 300 * MIB, top + 301 * MIB, name="[stack]"),
    ]
    assert cats_of(engine, maps) == ["thread_stacks"] * 2 + ["c_malloc"] * 2 + ["anon_other", "thread_stacks"]


def test_rules_names_and_files(engine):
    maps = [
        M(0x400000, 0x401000, "r-xp", "/opt/app/server", inode=99, dev="fe:00"),
        M(0x401000, 0x402000, "rw-p", "/opt/app/server", inode=99, dev="fe:00", offset=4096),
        M(0x402000, 0x404000),  # .bss of the binary, from the ELF
        M(0x500000, 0x501000, "r--p", "/usr/lib/x86_64-linux-gnu/libc.so.6", inode=5, dev="fe:00"),
        M(0x600000, 0x601000, "r--s", "/var/data/table.db", inode=6, dev="fe:00"),
        M(0x700000, 0x701000, "rw-s", "/memfd:cache (deleted)", inode=7, dev="00:01"),
        M(0x800000, 0x801000, "rw-s", "/dev/zero (deleted)", inode=8, dev="00:01"),
        M(0x900000, 0x901000, "rw-s"),
        M(0xA00000, 0xA01000, "r-xp", "[vdso]"),
        M(0xB00000, 0xB01000, name="[heap]"),
        M(0xC00000, 0xC01000, name="[anon: Go: page summary]"),
        M(0xD00000, 0xD01000, name="[anon: glibc: malloc arena]"),
        M(0xE00000, 0xE01000, "rw-p", "/dev/zero", inode=4, dev="00:06"),
    ]
    ctx = CTX._replace(intervals=[Interval(0x402000, 0x404000, memscan._types.BINARY)])
    assert cats_of(engine, maps, ctx) == [
        "binary", "binary", "binary", "shared_libs", "mapped_files", "shmem", "shmem", "shmem",
        "kernel", "c_malloc", "go_runtime", "c_malloc", "anon_other",
    ]


def test_rules_go_runtime_reservations(engine):
    top = 0x7F0000000000
    maps = [
        M(top, top + 512 * MIB, "---p"),  # page summary reservation
        M(top + 512 * MIB, top + 512 * MIB + 4096),  # an island mapped inside it
        M(top + 513 * MIB, top + 545 * MIB, flags="rd wr mr mw me ac nh"),  # heap index
        M(top + 600 * MIB, top + 601 * MIB),  # something else
    ]
    assert cats_of(engine, maps) == ["go_runtime"] * 3 + ["anon_other"]
    # A static Go program has no other allocator: the rest is the runtime's.
    assert cats_of(engine, maps, CTX._replace(go_only=True))[-1] == "go_runtime"
    assert cats_of(engine, maps, CTX._replace(go=False)) == ["anon_other"] * 4


def test_accumulate_is_a_partition(engine):
    t = engine.parse_smaps((DATA / "python.smaps").read_bytes())
    sums = engine.accumulate(t, engine.classify(t, CTX))
    total = sums[9 * len(CATEGORIES):]
    for k in range(9):
        assert sum(sums[9 * c + k] for c in range(len(CATEGORIES))) == total[k]
    assert total[1] == sum(t.fields[i * NFIELDS + F["Rss"]] for i in range(len(t)))


STATUS = (DATA / "python.status").read_bytes()


@both
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_engines_agree_on_status(data):
    text = mutate(STATUS, data)
    assert outcome(pure.parse_status, text) == outcome(fast.parse_status, text)


@both
@pytest.mark.parametrize("path", sorted(DATA.glob("*.status")), ids=lambda p: p.name)
def test_engines_agree_on_status_captures(path):
    assert pure.parse_status(path.read_bytes()) == fast.parse_status(path.read_bytes())


def test_engines_offer_the_same_functions():
    if fast is None:
        pytest.skip("the Cython engine is not built (MEMSCAN_NO_EXTENSIONS)")
    assert sorted(fast.__all__) == sorted(pure.__all__)
    assert all(callable(getattr(fast, name)) for name in fast.__all__)


# --------------------------------------------- reading and parsing at once

PIECES = [0, 1, 4096, 65536, 128 * 1024]


def smaps_fd(pid: int) -> int:
    return os.open(f"/proc/{pid}/smaps", os.O_RDONLY)


@pytest.mark.parametrize("churn", [False, True], ids=["still", "churning"])
def test_read_parse_smaps_is_read_then_parse(engine, cprog, churn):
    """On a process of 1,500 mappings (about 1 MiB of smaps, some 270
    reads), whatever the pieces handed to the helper thread, and with the
    buffer growing mid-read: the table is the parse of the bytes read. A
    churning process changes the text between reads, and the helper parses
    while they happen."""
    prog = cprog("mappings", 1500, *(["churn"] if churn else []))
    fd = smaps_fd(prog.pid)
    try:
        for piece in PIECES:
            buf = bytearray()  # grows from 64 KiB: the helper hands back
            for _ in range(5):
                n, t = engine.read_parse_smaps(fd, buf, piece)
                assert n > 1_000_000 and len(buf) >= n
                assert t == engine.parse_smaps(bytes(buf[:n])), piece
                assert len(t) >= 1500
    finally:
        os.close(fd)


def big_text() -> bytes:
    """Valid smaps of 200 mappings, 160 KiB: more than the first buffer."""
    text = render([M(0x10000 + 0x2000 * i, 0x11000 + 0x2000 * i, name="/lib/x.so" if i % 3 else "") for i in range(200)])
    assert len(text) > 2 * 65536
    return text


@pytest.mark.parametrize("where", [0, 1000, 65536 - 40, 65536 - 1, 65536, 65536 + 30, 100_000, -1])
@pytest.mark.parametrize("piece", [0, 1, 4096])
def test_read_parse_smaps_errors_as_parse_smaps(engine, tmp_path, where, piece):
    """A file is read 64 KiB at a time at first: the helper parses up to the
    last line end before 64 KiB and the reader the rest. A bad byte before,
    at or after that point, or a cut-off end, gives parse_smaps's error,
    returned, not raised."""
    text = bytearray(big_text())
    if where == -1:
        text = text[:-5]
    else:
        text[where] = ord("#")
    want = outcome(pure.parse_smaps, bytes(text))
    assert want[0] == "error"
    p = tmp_path / "smaps"
    p.write_bytes(text)
    fd = os.open(p, os.O_RDONLY)
    try:
        n, got = engine.read_parse_smaps(fd, bytearray(), piece)
    finally:
        os.close(fd)
    assert n == len(text)
    assert isinstance(got, ParseError) and ("error", got.msg, got.offset) == want


def test_read_parse_smaps_of_nothing(engine, tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    fd = os.open(p, os.O_RDONLY)
    try:
        n, t = engine.read_parse_smaps(fd, bytearray(), 4096)
    finally:
        os.close(fd)
    assert n == 0 and t == SmapsTable() and len(t) == 0


@both
def test_read_parse_smaps_from_threads_and_a_fork(cprog):
    """One helper per process: threads that read at once share it or go
    without; a forked child starts its own."""
    prog = cprog("mappings", 1500)
    errors: list = []

    def reader() -> None:
        fd = smaps_fd(prog.pid)
        buf = bytearray()
        try:
            for _ in range(10):
                n, t = fast.read_parse_smaps(fd, buf, 4096)
                if t != fast.parse_smaps(bytes(buf[:n])):
                    errors.append(n)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            reader()
        finally:
            os._exit(1 if errors else 0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_first_overlap(engine):
    page = 0x1000
    assert engine.first_overlap(SmapsTable()) == -1
    assert engine.first_overlap(engine.parse_smaps(render([M(0, page), M(page, 2 * page), M(5 * page, 6 * page)]))) == -1
    # A mapping listed again after it grew across where a read ended.
    grew = [M(0, page), M(page, 2 * page), M(page, 3 * page), M(5 * page, 6 * page)]
    assert engine.first_overlap(engine.parse_smaps(render(grew))) == 2
    assert engine.first_overlap(engine.parse_smaps(render([M(4 * page, 5 * page), M(0, page)]))) == 1


HELPER_THREADS = """
import os, sys
import memscan
from memscan import _fast
def threads():
    return len(os.listdir("/proc/self/task"))
if sys.argv[1] == "one-cpu":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
before = threads()
if sys.argv[1] == "piece":
    fd = os.open("/proc/self/smaps", os.O_RDONLY)
    for _ in range(3):
        _fast.read_parse_smaps(fd, bytearray(), 1)
else:
    for _ in range(3):
        memscan.scan(os.getpid(), tier="layout")
print(threads() - before)
"""


@both
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU here: scans start no helper")
@pytest.mark.parametrize("how,started", [("piece", 1), ("scan", 1), ("one-cpu", 0)])
def test_the_helper_thread_is_one_and_only_where_it_helps(how, started):
    """Reads handed out in pieces start one helper thread per process, and
    scan() does so only where a second CPU can run it."""
    env = {k: v for k, v in os.environ.items() if k != "MEMSCAN_NO_EXTENSIONS"}  # scan() with this engine
    out = subprocess.run([sys.executable, "-c", HELPER_THREADS, how], capture_output=True, text=True, check=True,
                         env=env)
    assert int(out.stdout) == started, out
