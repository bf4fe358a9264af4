"""CPython's pymalloc arenas, read from outside, against the interpreter's
own sys._debugmallocstats(): Debian's python3 (stripped, libpython linked
in) and a CPython built from source (libpython shared, under pyenv)."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

import memscan
from memscan import explain
from memscan.owners import c as cmalloc

from test_cmalloc import smaps

# Millions of small objects (tuples of an int and a str), a third freed;
# the stats go to stderr (C stdio), then the pid to stdout.
TARGET = """
import os, sys
keep = [(i, str(i)) for i in range(int(sys.argv[1]))]
del keep[::3]
sys._debugmallocstats()
sys.stderr.flush()
print(os.getpid(), flush=True)
sys.stdin.read()
"""

INTERPRETERS = sorted({p for p in ["/usr/bin/python3", sys.executable,
                                    *glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/bin/python3"))]
                       if os.path.exists(p)})


def stat(text: str, pattern: str) -> int:
    found = re.search(pattern, text, re.M)
    assert found, pattern
    return int(found.group(1).replace(",", ""))


@pytest.mark.parametrize("python", INTERPRETERS)
def test_arenas_match_debugmallocstats(python):
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] >= (3, 10))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != "True":
        pytest.skip(f"{python}: pymalloc's 1 MiB arenas are CPython 3.10+'s")
    with subprocess.Popen([python, "-c", TARGET, "2000000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env={"PATH": os.environ.get("PATH", "")}) as proc:
        try:
            pid = int(proc.stdout.readline())
            r = cmalloc.c_regions(pid, smaps(pid))
            snap = memscan.scan(pid, tier="exact")
            layout = memscan.scan(pid, tier="layout")
        finally:
            err = proc.communicate(timeout=30)[1]
    assert not [w for w in r.warnings if "pymalloc" in w], r.warnings
    # Only the exact tier reads the arenas: it names pymalloc beside glibc.
    assert snap.allocator == "glibc+pymalloc" and layout.allocator == "glibc"
    c = r.counters
    assert c["pymalloc_arenas"] == stat(err, r"# arenas allocated current\s*=\s*([\d,]+)")
    assert c["pymalloc_free_pools"] == stat(err, r"^([\d,]+) unused pools")
    allocated = stat(err, r"# bytes in allocated blocks\s*=\s*([\d,]+)")
    assert abs(c["pymalloc_allocated_bytes"] - allocated) <= allocated / 1000
    arenas = [(s, e) for s, e, k in r.intervals if k == "pymalloc arena"]
    assert len(arenas) == c["pymalloc_arenas"] and all(e - s == 1 << 20 for s, e in arenas)
    # Every resident page has an owner: anonymous memory nobody claims is at most 1% of RSS.
    assert snap.categories["anon_other"].rss <= snap.total.rss / 100, snap.categories
    d = snap.c_malloc_detail
    assert d["in_use"].rss >= allocated
    assert d["free"].size >= c["pymalloc_free_pools"] << 14
    # explain names where the memory is: C memory, most of it pymalloc's pools in use.
    found = {f.id: f for f in explain.explain(snap)}
    assert "most_memory" in found and found["most_memory"].title.startswith("c_malloc holds"), found
