"""Property tests of every engine function that reads bytes: smaps, maps,
smaps_rollup and status text, and pagemap entries.

Valid text is generated from field values (in the kernel's order and
shuffled; fields missing, duplicated, unknown) and must parse back to those
values; then it is mutated (cut at any point, numbers past 2^64 or negative,
junk and non-UTF-8 bytes, CRLF line ends). Whatever the input, the engines
agree, on the result or on the ParseError (message, offset, and the file
once ``procfs.parsed`` names it), and raise nothing but ParseError.

Runs are derandomized with no example database, so CI sees the same
examples every time; ``MEMSCAN_FUZZ_EXAMPLES=N`` runs N random examples per
test instead. fuzz/fuzz_parsers.py is the coverage-guided counterpart; the
inputs it found that broke an engine are the regression cases at the end.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memscan
from memscan import ParseError
from memscan._types import (
    CATEGORIES, NFIELDS, PERM_R, PERM_S, PERM_W, PERM_X, SMAPS_KEYS, UNITLESS_KEYS, VMFLAG_BIT, VMFLAG_UNKNOWN,
    Interval, LayoutContext, MemFields, Status,
)
from memscan.engine import pure
from memscan.kernel import pagemap, procfs
from memscan.owners import memory as targetmem

from helpers.engines import ENGINES, model_counts
from helpers.smapstext import M, header, mutate

DATA = Path(__file__).parent / "data"
MAX_KB = (2**63 - 1) // 1024
PAGE = 4096

_random_runs = int(os.environ.get("MEMSCAN_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_random_runs or 120,
    derandomize=not _random_runs,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(fn, *args):
    """("ok", result) or ("error", msg, offset, path); any other exception propagates."""
    try:
        return ("ok", fn(*args))
    except ParseError as err:
        return ("error", err.msg, err.offset, err.path)


def agreed(name: str, data: bytes):
    """The outcome of parser ``name`` on ``data``, the same in every engine,
    both bare and through procfs.parsed (which adds the file to errors)."""
    results = [outcome(getattr(e, name), data) for e in ENGINES.values()]
    assert all(r == results[0] for r in results), (name, results)
    named = [outcome(procfs.parsed, 4242, "smaps", getattr(e, name), data) for e in ENGINES.values()]
    assert all(r == named[0] for r in named)
    if results[0][0] == "error":
        assert named[0] == results[0][:3] + ("/proc/4242/smaps",)
    return results[0]


def assert_layout_agrees(t) -> None:
    """classify and accumulate of a parsed table: the same in every engine."""
    for ctx in (
        LayoutContext(-1, -1, 8 << 20, True, False, False, []),
        LayoutContext(0, 7, 2 << 20, True, True, True, [Interval(0, 1 << 40, CATEGORIES.index("binary"))]),
    ):
        cats = [e.classify(t, ctx) for e in ENGINES.values()]
        sums = [e.accumulate(t, cats[0]) for e in ENGINES.values()]
        assert all(c == cats[0] for c in cats) and all(s == sums[0] for s in sums)
        total = sums[0][9 * len(CATEGORIES):]
        for k in range(9):
            assert sum(sums[0][9 * c + k] for c in range(len(CATEGORIES))) == total[k]


# ------------------------------------------------------------- generating text

KNOWN_KEYS = set(SMAPS_KEYS) | set(UNITLESS_KEYS) | {"VmFlags"}
kb_st = st.one_of(st.integers(0, 10**6), st.integers(0, MAX_KB))
# Unknown keys start upper-case: a lower-case hex digit would start a header.
unknown_key_st = st.from_regex(r"[A-Z][A-Za-z0-9_]{0,14}", fullmatch=True).filter(lambda k: k not in KNOWN_KEYS)
flag_st = st.one_of(st.sampled_from(sorted(VMFLAG_BIT)), st.from_regex(r"[a-z?]{2}", fullmatch=True))
# Names: any bytes but newline (the kernel escapes it), not starting with a
# space (the parser strips the padding before a name).
name_st = st.one_of(
    st.sampled_from([b"", b"[heap]", b"[stack]", b"[vdso]", b"[anon: Go: heap]", b"/usr/lib/libc.so.6",
                     b"/tmp/a file (deleted)", b"/memfd:x (deleted)", "/tmp/\u00e9t\u00e9".encode()]),
    st.binary(min_size=1, max_size=24).filter(lambda b: b"\n" not in b and b[0] != 32),
)


def value_line(key: str, value: int, unit: bool = True) -> bytes:
    """``key`` and ``value`` as the kernel prints them: the number ends at
    column 24 (a key of 15 characters gets one space, Private_Hugetlb)."""
    prefix = f"{key}:".ljust(16) if len(key) < 15 else f"{key}: "
    return f"{prefix}{value:>{24 - len(prefix)}}{' kB' if unit else ''}".encode()


@st.composite
def records(draw, rollup: bool = False):
    """(header fields, lines) of one mapping; lines are (key, value) pairs,
    value None for VmFlags (flags drawn into the header fields)."""
    start = draw(st.one_of(st.integers(0, 2**47 // PAGE), st.integers(0, 2**52 - 1))) * PAGE
    limit = min(2**63 - 1, 2**64 - 1 - start) // PAGE  # the end fits in 64 bits, the size in 63
    size = min(draw(st.one_of(st.integers(0, 2**20), st.integers(0, limit))), limit) * PAGE
    rec = {
        "start": start, "end": start + size,
        "perms": draw(st.sampled_from(["rw-p", "---p", "r-xp", "rw-s", "r--p", "rwxs", "--xp"])),
        "offset": draw(st.one_of(st.just(0), st.integers(0, 2**64 - 1))),
        "major": draw(st.integers(0, 0xFFF)), "minor": draw(st.integers(0, 0xFFFFF)),
        "inode": draw(st.one_of(st.just(0), st.integers(0, 2**64 - 1))),
        "name": draw(name_st),
        "flags": draw(st.lists(flag_st, max_size=8)),
    }
    if rollup:
        rec.update(start=start, end=start + size, perms="---p", offset=0, major=0, minor=0, inode=0, name=b"[rollup]")
    keys = [k for k in SMAPS_KEYS if draw(st.booleans()) or k in ("Rss", "Size")]
    if rollup:
        keys = [k for k in keys if k not in ("Size", "KernelPageSize", "MMUPageSize")]
    lines = [(k, draw(kb_st)) for k in keys]
    if not rollup:
        lines += [(k, draw(st.integers(0, 10**20 - 1))) for k in UNITLESS_KEYS if draw(st.booleans())]
        lines.append(("VmFlags", None))
    # Fields of other kernels, and a repeated field (the last one counts).
    lines[len(lines) // 2:len(lines) // 2] = [(k, draw(kb_st)) for k in draw(st.lists(unknown_key_st, max_size=2))]
    if draw(st.booleans()) and keys:
        lines.append((draw(st.sampled_from(keys)), draw(kb_st)))
    if draw(st.booleans()):
        lines = draw(st.permutations(lines))
    return rec, lines


def render_record(rec, lines) -> bytes:
    m = M(rec["start"], rec["end"], rec["perms"], rec["name"].decode("utf-8", "surrogateescape"), rec["inode"],
          f"{rec['major']:02x}:{rec['minor']:02x}", rec["offset"])
    out = [header(m).encode("utf-8", "surrogateescape")]
    for key, value in lines:
        if key == "VmFlags":
            out.append(("VmFlags: " + "".join(f + " " for f in rec["flags"])).encode())
        else:
            out.append(value_line(key, value, key not in UNITLESS_KEYS))
    return b"\n".join(out) + b"\n"


def expected_fields(rec, lines) -> list:
    values = dict.fromkeys(SMAPS_KEYS, 0)
    values["Size"] = rec["end"] - rec["start"]
    for key, value in lines:  # in file order: a repeated key keeps its last value
        if key in values:
            values[key] = value * 1024
    return [values[k] for k in SMAPS_KEYS]


def expected_flags(flags) -> int:
    bits = 0
    for f in flags:
        bits |= VMFLAG_BIT.get(f, VMFLAG_UNKNOWN)
    return bits


def perm_bits(perms: str) -> int:
    return ((PERM_R if perms[0] == "r" else 0) | (PERM_W if perms[1] == "w" else 0)
            | (PERM_X if perms[2] == "x" else 0) | (PERM_S if perms[3] == "s" else 0))


def assert_table(t, recs) -> None:
    assert list(t.starts) == [r["start"] for r, _ in recs]
    assert list(t.ends) == [r["end"] for r, _ in recs]
    assert list(t.perms) == [perm_bits(r["perms"]) for r, _ in recs]
    assert list(t.offsets) == [r["offset"] for r, _ in recs]
    assert list(t.devs) == [r["major"] << 32 | r["minor"] for r, _ in recs]
    assert list(t.inodes) == [r["inode"] for r, _ in recs]
    assert t.names == [r["name"].decode("utf-8", "surrogateescape") for r, _ in recs]
    assert list(t.vmflags) == [expected_flags(r["flags"]) if any(k == "VmFlags" for k, _ in ln) else 0
                               for r, ln in recs]
    assert t.fields == array("q", [v for r, ln in recs for v in expected_fields(r, ln)])
    assert list(t.file_starts) == [i for i, (r, _) in enumerate(recs) if r["offset"] == 0 and r["inode"]]


# --------------------------------------------------------------------- smaps


@FUZZ
@given(st.lists(records(), max_size=6))
def test_generated_smaps_parse_to_their_values(recs):
    text = b"".join(render_record(r, ln) for r, ln in recs)
    result = agreed("parse_smaps", text)
    assert result[0] == "ok", result
    assert_table(result[1], recs)
    assert_layout_agrees(result[1])


@FUZZ
@given(st.lists(records(), max_size=6))
def test_generated_maps_parse_to_their_values(recs):
    """maps lines alone (no fields): every size from the addresses."""
    text = b"".join(render_record(r, []) for r, _ in recs)
    result = agreed("parse_smaps", text)
    assert result[0] == "ok", result
    assert_table(result[1], [(r, []) for r, _ in recs])


NUMBERS = [str(2**64), str(2**64 + 1), str(2**63), str(MAX_KB + 1), str(MAX_KB), "-1", "-4", "9" * 25, "0" * 30,
           "18446744073709551615", "1e3", "0x10"]


def mutate_more(text: bytes, data) -> bytes:
    """mutate() (cut, flip, insert, delete), then possibly: a number replaced
    by a huge, negative or odd one; CRLF line ends; a line dropped or
    repeated; bytes that are not UTF-8."""
    text = mutate(text, data)
    kind = data.draw(st.sampled_from(["none", "number", "crlf", "drop", "repeat", "nonutf8"]))
    lines = text.split(b"\n")
    if kind == "number":
        spots = [m.span() for m in re.finditer(rb"\d+", text)]
        if spots:
            a, b = data.draw(st.sampled_from(spots))
            text = text[:a] + data.draw(st.sampled_from(NUMBERS)).encode() + text[b:]
    elif kind == "crlf":
        text = text.replace(b"\n", b"\r\n")
    elif kind in ("drop", "repeat") and len(lines) > 1:
        i = data.draw(st.integers(0, len(lines) - 2))
        lines[i:i + 1] = [] if kind == "drop" else [lines[i], lines[i]]
        text = b"\n".join(lines)
    elif kind == "nonutf8" and text:
        i = data.draw(st.integers(0, len(text) - 1))
        text = text[:i] + data.draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"])) + text[i:]
    return text


@FUZZ
@given(st.lists(records(), min_size=1, max_size=4), st.data())
def test_mutated_smaps_agree(recs, data):
    text = mutate_more(b"".join(render_record(r, ln) for r, ln in recs), data)
    result = agreed("parse_smaps", text)
    if result[0] == "ok":
        assert_layout_agrees(result[1])


@FUZZ
@given(st.binary(max_size=300))
def test_junk_agrees(junk):
    for name in ("parse_smaps", "parse_rollup", "parse_status"):
        agreed(name, junk)


@pytest.mark.parametrize("name", ["sleep.smaps", "sleep.maps"])
def test_truncation_at_every_byte(name):
    """A capture cut anywhere: "truncated line" unless cut at a line end,
    where it parses to the first mappings (a cut read looks complete: only
    a liveness check after reading can tell, see procfs.stat_after_read)."""
    data = (DATA / name).read_bytes()
    full = pure.parse_smaps(data)
    for i in range(len(data)):
        result = agreed("parse_smaps", data[:i])
        if i and data[i - 1] != 10:
            assert result == ("error", "truncated line", data.rfind(b"\n", 0, i) + 1, None)
            continue
        t = result[1]
        n = len(t)
        assert list(t.starts) == list(full.starts[:n]) and t.names == full.names[:n]
        done = max(n - 1, 0) * NFIELDS  # the last mapping may miss fields
        assert t.fields[:done] == full.fields[:done]


# ---------------------------------------------------------------- smaps_rollup


@FUZZ
@given(records(rollup=True), st.data())
def test_generated_rollup(rec, data):
    rec, lines = rec
    text = render_record(rec, lines)
    result = agreed("parse_rollup", text)
    assert result == ("ok", MemFields(*expected_fields(rec, lines)))
    agreed("parse_rollup", mutate_more(text, data))


def test_rollup_truncated_at_every_byte():
    data = (DATA / "sleep.smaps_rollup").read_bytes()
    for i in range(len(data) + 1):
        result = agreed("parse_rollup", data[:i])
        if i == 0:
            assert result == ("error", "expected one rollup record", 0, None)
        elif data[i - 1] != 10:
            assert result[:2] == ("error", "truncated line")
        else:
            assert result[0] == "ok"


# -------------------------------------------------------------------- status

STATUS_KB = {"VmPeak": "vm_peak", "VmSize": "vm_size", "VmHWM": "vm_hwm", "VmRSS": "vm_rss",
             "RssAnon": "rss_anon", "RssFile": "rss_file", "RssShmem": "rss_shmem", "VmData": "vm_data",
             "VmStk": "vm_stk", "VmExe": "vm_exe", "VmLib": "vm_lib", "VmPTE": "vm_pte", "VmSwap": "vm_swap"}
STATUS_OTHER = [b"Umask:\t0022", b"Ngid:\t0", b"TracerPid:\t0", b"Gid:\t0\t0\t0\t0", b"FDSize:\t256", b"Groups:\t ",
                b"VmLck:\t       0 kB", b"HugetlbPages:\t       0 kB", b"SigQ:\t1/96365", b"Cpus_allowed:\t3",
                b"Mems_allowed:\t00000000,00000001", b"untag_mask:\t0xffffffffffffffff", b"Kthread:\t0"]
id_st = st.integers(0, 2**63 - 1)


@st.composite
def statuses(draw):
    """(status text, expected Status)."""
    name = draw(st.binary(max_size=20).filter(lambda b: b"\n" not in b and b[:1] not in (b"\t", b" ")))
    state = draw(st.sampled_from([b"R (running)", b"S (sleeping)", b"Z (zombie)", b"D (disk sleep)", b"I (idle)"]))
    want = {"name": name.decode("utf-8", "surrogateescape"), "state": state[:1].decode(), "tgid": draw(id_st),
            "ppid": -1, "uid": -1, "threads": -1, **{v: -1 for v in STATUS_KB.values()}}
    lines = [b"Name:\t" + name, b"State:\t" + state, b"Tgid:\t%d" % want["tgid"]]
    if draw(st.booleans()):
        want["ppid"] = draw(id_st)
        lines.append(b"PPid:\t%d" % want["ppid"])
    if draw(st.booleans()):
        want["uid"] = draw(id_st)
        lines.append(b"Uid:\t%d\t0\t0\t0" % want["uid"])
    if draw(st.booleans()):
        want["threads"] = draw(id_st)
        lines.append(b"Threads:\t%d" % want["threads"])
    for key, field in STATUS_KB.items():
        if draw(st.booleans()):  # a kernel thread or zombie has no Vm lines at all
            kb = draw(kb_st)
            want[field] = kb * 1024
            lines.append(f"{key}:\t{kb:>8} kB".encode())
    lines += draw(st.lists(st.sampled_from(STATUS_OTHER), max_size=4))
    if draw(st.booleans()):
        lines = draw(st.permutations(lines))
    return b"\n".join(lines) + b"\n", Status(**want)


@FUZZ
@given(statuses(), st.data())
def test_generated_status(status, data):
    text, want = status
    assert agreed("parse_status", text) == ("ok", want)
    agreed("parse_status", mutate_more(text, data))


@pytest.mark.parametrize("name", ["sleep.status", "python.status"])
def test_status_truncated_at_every_byte(name):
    data = (DATA / name).read_bytes()
    for i in range(len(data)):
        result = agreed("parse_status", data[:i])
        if i == 0:
            assert result == ("error", "empty status", 0, None)
        elif data[i - 1] != 10:
            assert result[:2] == ("error", "truncated line")
        else:  # a whole-line cut: valid once the Tgid line is in
            assert result[0] == "ok" or result[1] == "no Tgid line"


# --------------------------------------------------------------------- maps


def test_read_maps_errors_name_the_file(engine, tmp_path, monkeypatch):
    """targetmem.read_maps parses maps with the engine it is given; a
    malformed line is a ParseError naming /proc/PID/maps and the line's offset."""
    pid = 4242
    (tmp_path / str(pid)).mkdir()
    good = (DATA / "sleep.maps").read_bytes()
    monkeypatch.setattr(procfs, "PROCFS_PATH", str(tmp_path))
    (tmp_path / str(pid) / "maps").write_bytes(good)
    maps = targetmem.read_maps(pid, engine)
    assert [m.start for m in maps] == list(pure.parse_smaps(good).starts)
    bad = good.replace(b" r-xp ", b" r-zp ", 1)
    (tmp_path / str(pid) / "maps").write_bytes(bad)
    with pytest.raises(ParseError) as err:
        targetmem.read_maps(pid, engine)
    line = bad.index(b" r-zp ")
    assert (err.value.msg, err.value.offset, err.value.path) == (
        "bad permissions in mapping header", bad.rfind(b"\n", 0, line) + 1, f"{tmp_path}/{pid}/maps")


# ------------------------------------------------------------------ pagemap


@st.composite
def page_ranges(draw, pages: int):
    """Sorted, disjoint, page-aligned ranges within ``pages`` pages."""
    cuts = sorted(draw(st.lists(st.integers(0, pages), max_size=10)))
    pairs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    return [(a * PAGE, b * PAGE) for a, b in pairs]


entry_st = st.one_of(
    st.integers(0, 2**64 - 1),
    st.builds(lambda bits, pfn: bits | pfn, st.sampled_from([0, 1 << 63, 1 << 63 | 1 << 56, 1 << 62, 1 << 61 | 1 << 63]),
              st.sampled_from([0, 1, 12345])),
)


@FUZZ
@given(st.lists(entry_st, min_size=1, max_size=300), st.data())
def test_pagemap_bytes_counted_like_the_model(entries, data):
    """page_counts_pread over synthetic pagemap bytes (a memfd): the model's
    counts in every engine; a range past the end of the bytes is what a
    pagemap of an exited process gives: ProcessLookupError, never zeros."""
    zero = pagemap.zero_pfns()
    if zero[0] and data.draw(st.booleans()):
        entries = [e if i % 3 else (1 << 63 | zero[0]) for i, e in enumerate(entries)]
    ranges = data.draw(page_ranges(len(entries)))
    fd = os.memfd_create("pagemap")
    try:
        os.write(fd, array("Q", entries).tobytes())
        want = model_counts(entries, ranges, zero)
        for e in ENGINES.values():
            assert pagemap.page_counts_pread(fd, ranges, e) == want
            with pytest.raises(ProcessLookupError):
                pagemap.page_counts_pread(fd, ranges + [(len(entries) * PAGE, (len(entries) + 1) * PAGE)], e)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def own_pagemap():
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


@FUZZ
@given(st.lists(st.sampled_from(["untouched", "read", "written"]), min_size=1, max_size=600), st.data())
def test_page_states_of_this_process(own_pagemap, states, data):
    """page_counts (PAGEMAP_SCAN where the kernel has it, with and without
    ranges marked private) and the pread path over anonymous pages of this
    process put in drawn states: written pages are present and exclusive,
    read ones the zero page, untouched ones absent."""
    n = len(states)
    m = mmap.mmap(-1, n * PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m.madvise(mmap.MADV_NOHUGEPAGE)  # one THP would make untouched pages present
        for i, s in enumerate(states):
            if s == "written":
                m[i * PAGE] = 1
            elif s == "read":
                m[i * PAGE]
        c = ctypes.c_char.from_buffer(m)  # the mapping's address
        base = ctypes.addressof(c)
        del c
        local = data.draw(page_ranges(n))
        ranges = [(base + a, base + b) for a, b in local]
        want = []
        for a, b in local:
            part = states[a // PAGE:b // PAGE]
            want += [part.count("read") + part.count("written"), 0, part.count("written"), part.count("read")]
        # Without visible PFNs (not root) pread cannot tell the zero page: it is then shared, not zero.
        pread_want = want if pagemap.zero_pfns()[0] else [0 if i % 4 == 3 else v for i, v in enumerate(want)]
        # Ranges marked private (no shared pages in smaps) count their present
        # non-zero pages exclusive unread: these pages are, so the counts stay.
        private = bytes(data.draw(st.lists(st.integers(0, 1), max_size=len(ranges))))
        for e in ENGINES.values():
            assert pagemap.page_counts(own_pagemap, ranges, e) == want
            assert pagemap.page_counts(own_pagemap, ranges, e, private) == want
            assert pagemap.page_counts_pread(own_pagemap, ranges, e) == pread_want
    finally:
        m.close()


BAD_RANGES = [[(1, PAGE)], [(2 * PAGE, PAGE)], [(0, 2 * PAGE), (PAGE, 3 * PAGE)], [(-PAGE, 0)], [(0, 1 << 64)],
              [(1 << 64, 0)]]


@pytest.mark.parametrize("ranges", BAD_RANGES, ids=str)
def test_bad_ranges_are_value_errors(own_pagemap, ranges):
    """(2^64, 0) was an OverflowError in the Cython engine (start checked
    after the conversion to 64 bits)."""
    for e in ENGINES.values():
        for fn in (pagemap.page_counts, pagemap.page_counts_pread):
            with pytest.raises(ValueError, match="ranges must be sorted"):
                fn(own_pagemap, ranges, e)


# ------------------------------------------------- found by fuzzing: regressions

REGRESSIONS = [
    # Status ids of 19 digits above 2^63 - 1 wrapped negative in the Cython engine.
    ("parse_status", b"Name:\tx\nTgid:\t9999999999999999999\n", ("error", "value out of range", 8, None)),
    ("parse_status", b"Tgid:\t9223372036854775808\n", ("error", "value out of range", 0, None)),
    ("parse_status", b"Tgid:\t9223372036854775807\n", None),
    # A mapping of 2^63 bytes or more: OverflowError in the pure engine, a
    # negative Size in the Cython one.
    ("parse_smaps", b"0-ffffffffffffffff r--p 00000000 00:00 0\n", ("error", "mapping size out of range", 0, None)),
    ("parse_smaps", b"0-8000000000000000 r--p 00000000 00:00 0\n", ("error", "mapping size out of range", 0, None)),
    ("parse_smaps", b"1-8000000000000000 r--p 00000000 00:00 0\n", None),
]


@pytest.mark.parametrize("name,text,want", REGRESSIONS, ids=lambda x: x if isinstance(x, str) else None)
def test_regressions(name, text, want):
    result = agreed(name, text)
    if want is None:
        assert result[0] == "ok"
    else:
        assert result == want


def test_sums_beyond_64_bits_are_exact():
    """Three mappings of Rss near 2^63 bytes each: the Cython accumulate's
    int64 sums overflowed (undefined behaviour in C); both engines now give
    Python's exact sums."""
    rss = MAX_KB
    text = b"".join(b"%x-%x rw-p 00000000 00:00 0\nRss:  %d kB\n" % (i * PAGE, (i + 1) * PAGE, rss) for i in range(3))
    t = agreed("parse_smaps", text)[1]
    ctx = LayoutContext(-1, -1, 8 << 20, False, False, False, [])
    for e in ENGINES.values():
        sums = e.accumulate(t, e.classify(t, ctx))
        assert sums[9 * len(CATEGORIES) + 1] == 3 * rss * 1024
