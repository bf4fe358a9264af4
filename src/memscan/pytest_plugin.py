"""pytest plugin: the memory of a process, by category, while a test runs.

Installed with memscan (entry point ``pytest11``). The ``memscan_sampler``
fixture starts sampling a pid in a background thread and stops at the end
of the test; with pytest-benchmark's ``benchmark`` fixture in the same test
the peak and mean rss per category go into ``benchmark.extra_info["memscan"]``
(and so into ``--benchmark-json``)::

    def test_server(benchmark, memscan_sampler, server):
        mem = memscan_sampler(server.pid, interval=0.01)
        benchmark(server.get, "/")
        mem.assert_no_growth("c_malloc", max_bytes=1 << 20)

This module is imported by every pytest session of an environment where
memscan is installed: it imports nothing of memscan until the fixture is
used.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from .core.sampler import Sample, Sampler

TOTAL = "rss"  # the name of the whole process's rss among the categories


class MemoryProfile:
    """Samples of one process, summarised as they arrive (nothing per sample is kept).

    For each category name (and ``"rss"``, the process total; and
    ``"go_heap.<state>"`` in the exact tier), in bytes of resident memory:
    ``peak``, ``mean``, ``first`` and ``last``. ``samples``: how many;
    ``tier``: of the last sample; ``exited``: the process ended while sampled.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples = 0
        self.tier: Optional[str] = None
        self.exited = False
        self.error: Optional[BaseException] = None
        self.peak: Dict[str, int] = {}
        self.first: Dict[str, int] = {}
        self.last: Dict[str, int] = {}
        self._sums: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._sampler: Optional["Sampler"] = None

    # -- figures

    @property
    def mean(self) -> Dict[str, float]:
        with self._lock:
            return {k: v / self.samples for k, v in self._sums.items()} if self.samples else {}

    def growth(self, name: str) -> int:
        """Bytes of ``name`` at the last sample minus at the first."""
        self._require(name)
        return self.last[name] - self.first[name]

    def summary(self) -> Dict[str, Any]:
        """What goes into benchmark.extra_info["memscan"]: JSON-ready."""
        with self._lock:
            return {
                "pid": self.pid,
                "tier": self.tier,
                "samples": self.samples,
                "exited": self.exited,
                "peak": dict(self.peak),
                "mean": {k: round(v / self.samples) for k, v in self._sums.items()} if self.samples else {},
                "growth": {k: self.last[k] - self.first[k] for k in self.last},
            }

    # -- assertions

    def assert_no_growth(self, name: str, max_bytes: int = 0) -> None:
        """Fail unless ``name`` (a category, "rss" or "go_heap.<state>") grew
        by at most ``max_bytes`` between the first and the last sample."""
        grown = self.growth(name)
        if grown > max_bytes:
            from .format import mib

            raise AssertionError(f"memscan: {name} of pid {self.pid} grew by {mib(grown)} over {self.samples} "
                                 f"samples ({mib(self.first[name])} -> {mib(self.last[name])}), "
                                 f"more than the {mib(max_bytes)} allowed")

    def assert_peak_below(self, name: str, max_bytes: int) -> None:
        """Fail unless the peak of ``name`` stayed below ``max_bytes``."""
        self._require(name)
        if self.peak[name] >= max_bytes:
            from .format import mib

            raise AssertionError(f"memscan: peak {name} of pid {self.pid} was {mib(self.peak[name])}, "
                                 f"not below {mib(max_bytes)}")

    def _require(self, name: str) -> None:
        self.stop()
        if self.error is not None:
            raise AssertionError(f"memscan: sampling pid {self.pid} failed: {self.error}") from self.error
        if not self.samples:
            raise AssertionError(f"memscan: no sample of pid {self.pid} was taken")
        if name not in self.last:
            raise KeyError(f"{name!r} was not sampled (sampled: {', '.join(sorted(self.last))})")

    # -- the sampling thread

    def start(self, sampler: "Sampler") -> None:
        sampler.open()  # NoSuchProcess here, in the test, not in the thread
        self._sampler = sampler
        try:
            self._add(sampler.sample())  # at least one sample, even for the shortest test
        except BaseException:
            sampler.close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"memscan-sampler-{self.pid}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (idempotent); figures stay readable."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sampler is not None:
            self.exited = self.exited or self._sampler.exited
            self._sampler.close()
            self._sampler = None

    def _run(self) -> None:
        assert self._sampler is not None
        try:
            for smp in self._sampler:
                if self._stop.is_set():
                    break
                self._add(smp)
        except BaseException as err:  # noqa: BLE001 - reported by the assertions and the fixture
            self.error = err

    def _add(self, smp: "Sample") -> None:
        values = {TOTAL: smp.rss}
        if smp.categories is not None:
            values.update(smp.categories)
        if smp.go_heap_detail is not None:
            values.update({f"go_heap.{k}": v for k, v in smp.go_heap_detail.items()})
        with self._lock:
            if not self.samples:
                self.first = values
            self.samples += 1
            self.tier = smp.tier
            self.last = values
            for k, v in values.items():
                self._sums[k] = self._sums.get(k, 0) + v
                if v > self.peak.get(k, -1):
                    self.peak[k] = v


@pytest.fixture
def memscan_sampler(request: pytest.FixtureRequest) -> Iterator[Callable[..., MemoryProfile]]:
    """Start sampling a pid for the rest of the test: ``memscan_sampler(pid,
    interval=0.01, tier="auto", **Sampler options) -> MemoryProfile``.

    Sampling stops when the test ends (or at ``profile.stop()`` or the first
    assertion). With pytest-benchmark's ``benchmark`` fixture in the test,
    each profile's summary goes into ``benchmark.extra_info["memscan"]``
    (keyed by pid when the test samples several processes).
    """
    from .core.sampler import Sampler

    profiles: List[MemoryProfile] = []

    def start(pid: int, interval: float = 0.01, tier: str = "auto", **options: Any) -> MemoryProfile:
        profile = MemoryProfile(pid)
        profile.start(Sampler(pid, interval=interval, tier=tier, **options))
        profiles.append(profile)
        return profile

    yield start
    for p in profiles:
        p.stop()
    if profiles and "benchmark" in request.fixturenames:
        bench = request.getfixturevalue("benchmark")
        summaries = [p.summary() for p in profiles]
        bench.extra_info["memscan"] = summaries[0] if len(summaries) == 1 else {str(s["pid"]): s for s in summaries}
