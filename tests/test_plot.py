"""memscan plot, from a real recording of a Go program that is killed while
it is recorded: what the figure holds, the image written, both formats."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading

import pytest

from memscan import plot, record
from memscan._types import CATEGORIES
from memscan.core.sampler import Sampler

pytestmark = pytest.mark.slow

ARGS = ("-heap", 32, "-garbage", 16, "-goroutines", 20)


@pytest.fixture(scope="module")
def recordings(go_program, tmp_path_factory):
    """The same samples of a static Go program written as CSV and as JSON
    Lines, until the program is killed after 1 s."""
    prog = go_program(args=ARGS)
    d = tmp_path_factory.mktemp("plot")
    paths = str(d / "run.csv"), str(d / "run.jsonl")
    meta = record.header(prog.pid, tier="exact", hz=200, full_every=0.25)
    killer = threading.Timer(1.0, prog.stop)
    with Sampler(prog.pid, 1 / 200, "exact", full_every=0.25) as sampler, \
            record.Writer(paths[0], meta) as csv, record.Writer(paths[1], meta) as jsonl:
        killer.start()
        end = record.record(sampler, csv, each=jsonl.write)
        jsonl.event(**end)
    killer.join()
    return prog, paths


def legend(ax):  # type: ignore[no-untyped-def]
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_figure_of_a_recording(recordings):
    prog, (path, _) = recordings
    rec = record.read(path)
    fig = plot.figure(rec)
    top, heap = fig.axes
    # A static Go program: no C allocator, no libraries, no shared memory.
    shown = [c for c in CATEGORIES if any(rec.column(c))]
    assert {"go_heap", "go_runtime", "binary"} <= set(shown)
    assert not {"c_malloc", "shared_libs", "shmem", "mapped_files"} & set(shown)
    assert legend(top) == shown[::-1] + ["rss (total)", "pss (full scans)"]  # as stacked, top down
    assert len(top.collections) == len(shown)  # one stacked area each
    # The Go heap by page states; "reserved" is address space, never resident.
    assert {"objects", "stacks"} <= set(legend(heap)) and "reserved" not in legend(heap)
    # The stack's top is the rss line: the categories add up to it.
    rss = next(line for line in top.lines if line.get_label() == "rss (total)")
    assert list(rss.get_ydata()) == [r["rss"] / plot.MIB for r in rec.rows]
    # The exit, marked on both panels and labelled once.
    assert rec.end is not None and rec.end["event"] == "exit"
    for ax in (top, heap):
        assert any(list(line.get_xdata()) == [rec.end["mono"]] * 2 for line in ax.lines)
    assert [t.get_text() for t in top.texts] == ["exited"]
    assert "MiB" in top.get_ylabel() and "seconds" in heap.get_xlabel()
    # Named by its command name and arguments, not the path of its build.
    name = os.path.basename(prog.binary)[:15]  # comm: TASK_COMM_LEN is 16 with the NUL
    assert rec.meta["name"] == name and rec.meta["command"].startswith(prog.binary)
    [title] = [t.get_text() for t in fig.texts if t.get_text().startswith("pid ")]
    assert title.startswith(f"pid {prog.pid}: {name} -heap 32 -garbage 16 -goroutines 20\n"), title
    assert os.path.dirname(prog.binary) not in title
    # A recording from before the header named the command: its command line, as recorded.
    assert plot.title_command({k: v for k, v in rec.meta.items() if k != "name"}) == rec.meta["command"]


def png_size(path: str):  # type: ignore[no-untyped-def]
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", head
    return struct.unpack(">II", head[16:24])


def test_both_formats_give_the_same_picture(recordings, tmp_path):
    _, (csv, jsonl) = recordings
    a, b = record.read(csv), record.read(jsonl)
    assert a.rows == b.rows and a.meta == b.meta and a.events == b.events and len(a.rows) > 20
    outs = [plot.plot(p, str(tmp_path / f"{i}.png")) for i, p in enumerate((csv, jsonl))]
    assert png_size(outs[0]) == (1100, 850)  # 11 x 8.5 inches at 100 dpi: two panels
    with open(outs[0], "rb") as f0, open(outs[1], "rb") as f1:
        assert f0.read() == f1.read()


def test_cli(recordings, tmp_path):
    _, (csv, jsonl) = recordings
    done = subprocess.run([sys.executable, "-m", "memscan", "plot", jsonl], capture_output=True, text=True,
                          timeout=60)
    png = jsonl[: -len(".jsonl")] + ".png"
    assert done.returncode == 0 and done.stderr == f"memscan: plotted {jsonl} into {png}\n", done
    assert png_size(png) == (1100, 850)
    svg = str(tmp_path / "run.svg")
    done = subprocess.run([sys.executable, "-m", "memscan", "plot", csv, "-o", svg], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done
    with open(svg) as f:
        assert "<svg" in f.read(1000)


def test_without_matplotlib(recordings):
    """Without the plot extra: one line saying what to install."""
    _, (csv, _) = recordings
    code = ("import sys; sys.modules['matplotlib'] = None; from memscan.cli import main; "
            f"sys.exit(main(['plot', {csv!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done
    assert done.stderr == "memscan: error: plotting needs matplotlib: pip install 'memscan[plot]'\n"


def test_stale_stretches_are_hatched(tmp_path):
    """Runs of samples whose states are older than STALE_AFTER: hatched on
    both panels, to the sample that replaced them, labelled once."""
    ages = [0.0, 0.5, 1.5, 2.0, 0.0, 0.4, 1.2, None]
    rows = [{**dict.fromkeys(record.COLUMNS), "seq": i, "mono": i * 0.5, "tier": "exact", "missed": 0,
             "rss": 8 << 20, **dict.fromkeys(CATEGORIES, 0), "go_heap": 8 << 20,
             **dict.fromkeys(record.DETAIL_COLUMNS, 0), "go_heap.objects": 8 << 20, "states_age": age}
            for i, age in enumerate(ages)]
    rec = record.Recording(str(tmp_path / "r.csv"), {"pid": 1}, record.COLUMNS, rows, [])
    assert plot.stale_stretches(rec) == [(1.0, 2.0), (3.0, 3.5)]
    top, heap = plot.figure(rec).axes
    for ax in (top, heap):
        assert [p.get_hatch() for p in ax.patches] == ["//", "//"]
    assert legend(top)[-1] == f"states > {plot.STALE_AFTER:g} s old"
    assert not any("old" in label for label in legend(heap))
