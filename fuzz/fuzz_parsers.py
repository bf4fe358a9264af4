"""Coverage-guided differential fuzzing of memscan's two engines (atheris).

Every input is given to both engines as smaps (also maps, which the same
parser reads), smaps_rollup and status text, and as the bytes of a pagemap
file counted by ``page_counts_pread``. The engines must agree: the same
result, or the same ParseError (message and offset); with parsed mappings,
the same categories and sums for a few layout contexts; the same page counts
as a per-entry model, and the same ProcessLookupError for ranges past the
end of the file. Anything else (another exception, a disagreement) is a
crash that libFuzzer saves as ``crash-<sha1>``; each one found becomes a test
in tests/test_fuzz_engines.py.

Only the pure engine is coverage-instrumented (``atheris.instrument_imports``):
instrumenting the Cython one needs the extension built by clang with
``-fsanitize=fuzzer-no-link``, and the test machine has gcc only. Its C code
is still run on every input and compared; tools/sanitize.sh runs it under
AddressSanitizer and UBSan.

    pip install atheris
    python3 setup.py build_ext --inplace
    python3 fuzz/fuzz_parsers.py -max_total_time=300

Without corpus directories on the command line, new inputs go to a scratch
directory ($MEMSCAN_FUZZ_WORK, default /tmp/memscan-fuzz) seeded from
fuzz/corpus (trimmed captures of a cgo Go program, kthreadd's status, a real
pagemap excerpt) and tests/data (the parser tests' captures); inputs are at
most 8 KiB unless ``-max_len`` says otherwise.
"""

import os
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

with atheris.instrument_imports(include=["memscan.engine.pure"]):
    from memscan import ParseError
    from memscan.engine import pure
    from memscan.kernel import pagemap
    from memscan._types import CATEGORIES, Interval, LayoutContext

# The tests' model of page_counts (tests/ on the path after memscan is instrumented).
sys.path.insert(0, os.path.join(ROOT, "tests"))
from helpers.engines import model_counts  # noqa: E402

try:
    from memscan import _fast
except ImportError:
    sys.exit("fuzz_parsers: the Cython engine is not built (python3 setup.py build_ext --inplace)")

# exe (dev, inode) of the cgo seed's binary, so that the binary rule fires on it.
CONTEXTS = [
    LayoutContext(0xFE << 32, 2214371, 8 << 20, True, False, False, []),
    LayoutContext(-1, -1, 8 << 20, True, True, False, [Interval(0x57B000, 0x5AD000, CATEGORIES.index("binary"))]),
    LayoutContext(-1, -1, 2 << 20, False, False, True, []),
]


def outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except ParseError as err:
        return "error", err.msg, err.offset, err.path


def check_text(data: bytes) -> None:
    for name in ("parse_smaps", "parse_rollup", "parse_status"):
        a = outcome(getattr(pure, name), data)
        b = outcome(getattr(_fast, name), data)
        assert a == b, (name, a, b)
        if name == "parse_smaps" and a[0] == "ok":
            t = a[1]
            for ctx in CONTEXTS:
                cats = pure.classify(t, ctx)
                assert cats == _fast.classify(t, ctx), ctx
                assert pure.accumulate(t, cats) == _fast.accumulate(t, cats), ctx


def check_pagemap(data: bytes, fd: int) -> None:
    pages = len(data) // 8
    if not pages:
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    cut = data[0] % (pages + 1)
    ranges = [(0, cut << 12), ((cut + (data[-1] & 3)) << 12, pages << 12)]
    if ranges[1][0] > ranges[1][1]:
        ranges.pop()
    entries = [int.from_bytes(data[i : i + 8], "little") for i in range(0, 8 * pages, 8)]
    want = model_counts(entries, ranges, pagemap.zero_pfns())
    assert pagemap.page_counts_pread(fd, ranges, pure) == want
    assert pagemap.page_counts_pread(fd, ranges, _fast) == want
    # A range past the end of the file reads 0 bytes there: what pagemap does
    # once the process exited.
    beyond = [(0, (pages + 1) << 12)]
    for engine in (pure, _fast):
        try:
            pagemap.page_counts_pread(fd, beyond, engine)
        except ProcessLookupError:
            continue
        raise AssertionError(f"{engine.__name__}: no error past the end of the pagemap")


_pagemap_fd = os.memfd_create("fuzz-pagemap")


def test_one_input(data: bytes) -> None:
    check_text(data)
    check_pagemap(data, _pagemap_fd)


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        work = os.environ.get("MEMSCAN_FUZZ_WORK", "/tmp/memscan-fuzz")
        os.makedirs(work, exist_ok=True)
        argv += [work, os.path.join(HERE, "corpus"), os.path.join(ROOT, "tests", "data")]
    if not any(a.startswith("-max_len=") for a in argv):
        argv.append("-max_len=8192")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
