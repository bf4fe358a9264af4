"""The ``memscan`` command: scan, ps, demo, record, plot, watch, export, explain, cgroup.

Every failure ends with one line on stderr and a non-zero exit status:
1 for a memscan error (no such process, access denied, malformed procfs),
2 for bad usage, 130 on Ctrl-C. ``MEMSCAN_TRACEBACK=1`` shows tracebacks
of unexpected errors, for bug reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Dict, Optional, Sequence, Union

from . import targets
from ._errors import Error, NoSuchProcess
from ._types import CATEGORIES
from ._version import __version__
from .core.scanner import TIERS, scan
from .engine import ENGINES
from .format import biggest, mib, render, render_mappings, show
from .kernel import procfs
from .processes import command_line, executable
from .targets import pid_number, regex


def named(pid: int) -> Dict[str, Optional[str]]:
    """The process's command name and executable path, each None where the
    kernel does not say (the process exited since, or the executable link
    of another user's process without CAP_SYS_PTRACE)."""
    try:
        command: Optional[str] = procfs.comm(pid)
    except Error:
        command = None
    return {"command": command, "executable": executable(pid)}


def cmd_scan(args: argparse.Namespace) -> int:
    if args.top is not None and args.mappings is None:
        args.usage_error("--top needs --mappings")
    category = None if args.mappings is True else args.mappings
    docs = []
    for pid in targets.resolve(args):
        try:
            snap = scan(pid, tier=args.tier, engine=args.engine, mappings=args.mappings is not None)
            header = f"pid {pid}: {command_line(pid, quoted=True)}"
        except NoSuchProcess as err:
            if args.match is None:
                raise
            # Matched a moment ago: it exited since, the others are still there to scan.
            print(f"memscan: warning: {err}", file=sys.stderr)
            continue
        if args.mappings is not None and snap.mappings is None:
            raise Error(f"--mappings needs smaps: the {snap.tier} tier has totals only")
        top = None if snap.mappings is None else biggest(snap.mappings, category, args.top or 20)
        if args.json:
            listed = {} if top is None else {"mappings": [p.to_dict() for p in top]}
            docs.append(dict(snap.to_dict(), **named(pid), **listed))
            continue
        print(header)
        if top is None:
            render(snap)
        else:
            render_mappings(snap, top, category)
    if args.json:
        print(json.dumps(docs if args.match is not None else docs[0], indent=None if args.compact else 2))
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from .processes import processes

    found = processes(go_only=args.go)
    if args.json:
        print(json.dumps([{"pid": p.pid, "name": p.name, "rss": p.rss, "path": p.path, "command": p.command,
                           "go": p.go and {"version": p.go.version, "path": p.go.path, "cgo": p.go.cgo}}
                          for p in found], indent=2))
        return 0
    table = Table(title="Go processes" if args.go else "processes", title_justify="left")
    for col, just in (("pid", "right"), ("name", "left"), ("rss MiB", "right"), ("Go", "left"), ("cgo", "left"),
                      ("path or command", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for p in found:
        go = ("-", "-") if p.go is None else (p.go.version, "yes" if p.go.cgo else "no")
        # A Go runtime in a library is that library's; the executable, or
        # the command line where its link may not be read, otherwise; names
        # such as "[heap]" escaped, not taken for rich markup.
        where = p.go.path if p.go else p.path or p.command
        table.add_row(str(p.pid), escape(p.name), mib(p.rss, unit=False), *go, escape(where))
    show(table)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(quick=args.quick, output=args.output)


def cmd_record(args: argparse.Namespace) -> int:
    pid = targets.resolve(args)[0]
    if args.ring is not None:
        from . import ring

        return ring.run(pid, args.output, seconds=args.ring, trigger=args.trigger, hz=args.hz,
                        duration=args.duration, tier=args.tier, engine=args.engine, full_every=args.full_every)
    if args.trigger is not None:
        args.usage_error("--trigger needs --ring")
    from .record import run

    return run(pid, args.output, hz=args.hz, duration=args.duration, tier=args.tier, engine=args.engine,
               full_every=args.full_every)


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot

    print(f"memscan: plotted {args.recording} into {plot(args.recording, args.output)}", file=sys.stderr)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from .watch import run

    return run(targets.resolve(args)[0], interval=args.interval, tier=args.tier, window=args.window)


def never_existed(pid: int) -> bool:
    """No process ``pid``, and none had it as far as memscan can tell: the
    kernel hands out pids in rising order up to pid_max, then wraps
    (kernel/pid.c, alloc_pid), so a pid above the last one given
    (ns_last_pid, Linux 3.3+) or above pid_max was not used since the last
    wrap. A missing pid below is a process that exited: "no longer exists"."""
    if os.path.exists(procfs.path(pid, "")):
        return False
    try:
        with open(f"{procfs.PROCFS_PATH}/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
        with open(f"{procfs.PROCFS_PATH}/sys/kernel/ns_last_pid") as f:
            last = int(f.read())
    except (OSError, ValueError):
        return False
    return pid > last or pid > pid_max


def positive(text: str) -> float:
    """argparse type: a number greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def count(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    value = positive(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}")
    return int(value)


def cmd_export(args: argparse.Namespace) -> int:
    from . import export

    processes = bool(args.pid or args.match is not None or args.go)
    if not processes and not args.cgroup:
        args.usage_error("give the processes to export: --pid PID, --match REGEX or --go (or cgroups: --cgroup PATH)")
    if args.once and args.textfile is None:
        args.usage_error("--once needs --textfile")
    chosen = export.Targets(args.pid, args.match, args.go) if processes else None
    cgroups = None if args.cgroup is None else [p for p in args.cgroup if p]
    return export.run(chosen, args.tier, args.listen, args.textfile, args.interval, args.once, cgroups)


def cmd_explain(args: argparse.Namespace) -> int:
    from . import explain

    from .explain_container import add

    if isinstance(args.pid, str) and args.match is None:
        if args.seconds or args.memstats or args.tier != "auto":
            args.usage_error("--for, --memstats and --tier are for a live process, not a recording")
        from . import explain_recording

        doc = explain_recording.run(args.pid)
    else:
        pid = targets.resolve(args)[0]
        snaps, memstats = explain.look(pid, args.tier, args.seconds, args.memstats)
        doc = explain.report(snaps, memstats)
        add(doc, pid, args.tier, snaps[-1])
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        explain.render(doc)
    return 0


def cmd_cgroup(args: argparse.Namespace) -> int:
    from . import cgroups

    if (args.target is None) == (args.pid is None):
        args.usage_error("give one cgroup: a PATH or --pid PID")
    doc = cgroups.ledger(cgroups.target(args.target, args.pid), args.tier)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        cgroups.render(doc)
    return 0


def _trigger(text: str):  # type: ignore[no-untyped-def]
    from .ring import parse_trigger

    return parse_trigger(text)


def pid_or_path(text: str) -> Union[int, str]:
    """argparse type of ``explain``'s target: a number is a pid (1 or more),
    anything else the path of a recording."""
    return pid_number(text) if re.fullmatch(r"[-+]?\d+", text) else text


TIER_HELP = ("exact: also the Go heap's page states and the C allocator's chunks (read from /proc/PID/mem, "
             "needs ptrace rights); layout: by mapping, from smaps alone; psutil: totals only; auto (default): "
             "the best tier permitted, with a warning naming what was missing")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="memscan",
        description="Where a process's resident memory goes: Go heap, runtime, C malloc, stacks, libraries.",
    )
    ap.add_argument("--version", action="version", version=f"memscan {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do (COMMAND -h for more)")

    s = sub.add_parser("scan", help="attribute one process's memory to categories")
    targets.add_arguments(s, several=True)
    s.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    s.add_argument("--compact", action="store_true", help="with --json: one line")
    s.add_argument("--tier", choices=TIERS, default="auto", help=TIER_HELP)
    s.add_argument("--engine", choices=sorted(ENGINES), default=None, help="parser engine (default: fastest)")
    s.add_argument("--mappings", nargs="?", const=True, choices=CATEGORIES, metavar="CATEGORY",
                   help="instead of the categories: the biggest mappings by rss (of CATEGORY only if given), cut "
                        "by owner where the exact tier splits them, with the Go heap's or C allocator's state")
    s.add_argument("--top", type=count, metavar="N", help="with --mappings: the N biggest (default 20)")
    s.set_defaults(func=cmd_scan)

    p = sub.add_parser("ps", help="list the processes memscan can see, with the Go runtime of those running Go")
    p.add_argument("--go", action="store_true", help="only the processes running Go")
    p.add_argument("--json", action="store_true", help="the list as JSON")
    p.set_defaults(func=cmd_ps)

    d = sub.add_parser("demo", help="walk the bundled Go program through allocate, free, release and a cgo leak; "
                                    "record, plot and explain it (needs memscan[demo])")
    d.add_argument("--quick", action="store_true", help="smaller amounts and shorter phases (~15 s)")
    d.add_argument("-o", "--output", default="memscan-demo", metavar="DIR",
                   help="directory for the recording and its plot (default: ./memscan-demo)")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("record", help="record a process's memory by category over time (CSV or JSON Lines)")
    targets.add_arguments(r)
    r.add_argument("-o", "--output", required=True, help="file to write: NAME.csv or NAME.jsonl")
    r.add_argument("--hz", type=positive, default=100.0, help="samples per second (default 100)")
    r.add_argument("--duration", type=positive, default=None,
                   help="seconds to record (default: until the process exits or Ctrl-C)")
    r.add_argument("--tier", choices=TIERS, default="auto", help=TIER_HELP)
    r.add_argument("--full-every", type=positive, default=1.0, metavar="SECONDS",
                   help="seconds between full scans, which add pss, swap and uss (default 1); a full scan "
                        "is also spaced so that scans last at most 1%% of the time (one taking 20 ms comes "
                        "every 2 s at most), the first one's one-time work not counted")
    r.add_argument("--engine", choices=sorted(ENGINES), default=None, help="parser engine (default: fastest)")
    r.add_argument("--ring", type=positive, metavar="SECONDS",
                   help="flight recorder: keep only the last SECONDS in memory and write them when the process "
                        "exits, --trigger fires or on Ctrl-C")
    r.add_argument("--trigger", type=_trigger, metavar="EXPR",
                   help="with --ring: write when this holds, e.g. rss>1GiB, go_heap>512MiB, cgroup>90%%")
    r.set_defaults(func=cmd_record)

    pl = sub.add_parser("plot", help="draw a recording: memory by category over time (needs memscan[plot])")
    pl.add_argument("recording", help="a file written by memscan record")
    pl.add_argument("-o", "--output", help="image to write, png/svg/pdf by its name (default: RECORDING.png)")
    pl.set_defaults(func=cmd_plot)

    w = sub.add_parser("watch", help="a live table of a process's memory by category")
    targets.add_arguments(w)
    w.add_argument("--interval", type=positive, default=0.1, help="seconds between samples (default 0.1)")
    w.add_argument("--tier", choices=TIERS, default="auto", help=TIER_HELP)
    w.add_argument("--window", type=positive, default=10.0, metavar="SECONDS",
                   help="the change and trend columns cover this many seconds (default 10)")
    w.set_defaults(func=cmd_watch)

    from .explain import duration

    e = sub.add_parser("export", help="Prometheus metrics of processes, served or for node_exporter's textfile "
                                      "collector (needs memscan[prometheus])")
    e.add_argument("--pid", type=pid_number, action="append", default=[], help="a process to export (repeatable)")
    e.add_argument("--match", type=regex, metavar="REGEX", help="export the processes whose command line or name matches")
    e.add_argument("--go", action="store_true", help="export every Go process memscan can see")
    e.add_argument("--cgroup", nargs="?", const="", action="append", metavar="PATH",
                   help="also export memory cgroup series: of PATH (repeatable), or without PATH of the exported "
                        "processes' cgroups, with each process's container and pod")
    out = e.add_mutually_exclusive_group()
    out.add_argument("--listen", metavar="HOST:PORT",
                     help="serve /metrics here (default 127.0.0.1:9573; 0.0.0.0:9573 for every interface)")
    out.add_argument("--textfile", metavar="PATH", help="write the metrics to PATH (NAME.prom) instead, atomically")
    e.add_argument("--interval", type=positive, default=15.0,
                   help="with --textfile: seconds between writes (default 15)")
    e.add_argument("--once", action="store_true", help="with --textfile: write once and exit")
    e.add_argument("--tier", choices=TIERS, default="auto", help=TIER_HELP)
    e.set_defaults(func=cmd_export, usage_error=e.error)

    x = sub.add_parser("explain", help="what a process's memory figures mean, in plain words")
    targets.add_arguments(x, type=pid_or_path, metavar="PID|FILE",
                          help="a process, or a recording of one (memscan record's .csv or .jsonl)")
    x.add_argument("--for", dest="seconds", type=duration, metavar="DURATION",
                   help="watch for this long (e.g. 30s, 2m), one scan a second, and report growth")
    x.add_argument("--memstats", metavar="URL", help="an expvar endpoint (http://HOST:PORT/debug/vars) of the "
                                                      "process, to set the Go runtime's figures beside the OS's")
    x.add_argument("--json", action="store_true", help="the findings as JSON")
    x.add_argument("--tier", choices=TIERS, default="auto", help=TIER_HELP)
    x.set_defaults(func=cmd_explain)

    c = sub.add_parser("cgroup", help="the ledger of a memory cgroup's charge (limit, usage, working set, page "
                                      "cache, kernel memory, events) beside a scan of each of its processes")
    c.add_argument("target", nargs="?", metavar="PATH",
                   help="the cgroup: its directory, or its path inside the memory hierarchy")
    c.add_argument("--pid", type=pid_number, help="the memory cgroup of this process instead")
    c.add_argument("--json", action="store_true", help="the ledger as JSON")
    c.add_argument("--tier", choices=TIERS, default="auto", help=TIER_HELP)
    c.set_defaults(func=cmd_cgroup, usage_error=c.error)
    comparing(sub)
    return ap


def cmd_diff(args: argparse.Namespace) -> int:
    from .diff import run

    return run(args.a, args.b, args.json)


def cmd_check(args: argparse.Namespace) -> int:
    from .check import run

    if not args.max and not args.max_growth:
        args.usage_error("give at least one bound: --max WHAT=SIZE or --max-growth WHAT=SIZE")
    if bool(args.max_growth) != (args.seconds is not None):
        args.usage_error("--max-growth needs --for DURATION, and --for is for --max-growth")
    return run(targets.resolve(args)[0], args.max, args.max_growth, args.seconds, args.tier, args.json)


def comparing(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The parsers of ``diff`` and ``check``."""
    from .check import bound
    from .explain import duration

    df = sub.add_parser("diff", help="how memory moved between two scans (scan --json) or two points of a recording")
    df.add_argument("a", metavar="A", help="a scan's JSON file, or a recording at a position: FILE@SECONDS, "
                                           "FILE@first, FILE@last (a recording alone: its first row)")
    df.add_argument("b", metavar="B", nargs="?", help="the same (a recording alone: its last row); without B, "
                                                      "A's recording from A's position (or its start) to its end")
    df.add_argument("--json", action="store_true", help="the diff as JSON, every figure included")
    df.set_defaults(func=cmd_diff)

    ck = sub.add_parser("check", help="exit 1 when a process's memory passes a bound (for CI, cron, health checks)")
    targets.add_arguments(ck)
    what = "WHAT: rss, a category (c_malloc) or a state (go_heap.free); SIZE: 512MiB, 1GiB, 100MB, bytes"
    ck.add_argument("--max", type=bound, action="append", default=[], metavar="WHAT=SIZE",
                    help=f"the most WHAT may hold (repeatable); {what}")
    ck.add_argument("--max-growth", type=bound, action="append", default=[], metavar="WHAT=SIZE",
                    help="the most WHAT may grow over --for (repeatable)")
    ck.add_argument("--for", dest="seconds", type=duration, metavar="DURATION",
                    help="with --max-growth: scan at the start and after this long (e.g. 30s, 2m); no default")
    ck.add_argument("--json", action="store_true", help="the results as JSON")
    ck.add_argument("--tier", choices=TIERS, default="auto", help=TIER_HELP)
    ck.set_defaults(func=cmd_check, usage_error=ck.error)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        pid = getattr(args, "pid", None)  # explain's: a pid or a file; export's: a list
        if isinstance(pid, int) and never_existed(pid):
            raise Error(f"no such process (pid {pid})")
        return int(args.func(args))
    except Error as err:
        print(f"memscan: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("memscan: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into head(1) and friends: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # noqa: BLE001 - the CLI never shows a traceback
        if os.environ.get("MEMSCAN_TRACEBACK"):
            raise
        print(f"memscan: internal error: {type(err).__name__}: {err} "
              "(set MEMSCAN_TRACEBACK=1 for details)", file=sys.stderr)
        return 70
