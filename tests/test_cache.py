"""The one LRU every cache uses, once() probes, and memscan.clear_caches()."""

from __future__ import annotations

import threading

import memscan
from memscan._cache import LRU, once


def test_lru_is_bounded_and_keeps_the_recently_used():
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "a" is now the most recent: "b" goes first
    lru.put("c", 3)
    assert (lru.get("b"), lru.get("a"), lru.get("c"), len(lru)) == (None, 1, 3, 2)
    assert lru.get("b", "none") == "none"
    assert lru.info() == (3, 2, 2)


def test_get_or_make_makes_once_and_keeps_none():
    lru: LRU[str, object] = LRU(4)
    made = []

    def make():
        made.append(1)
        return None  # a cached "nothing found" is a result too

    assert lru.get_or_make("k", make) is None and lru.get_or_make("k", make) is None
    assert len(made) == 1


def test_a_failed_make_keeps_nothing():
    lru: LRU[str, int] = LRU(4)

    def fail() -> int:
        raise OSError("EIO")

    for _ in range(2):
        try:
            lru.get_or_make("k", fail)
        except OSError:
            pass
    assert len(lru) == 0 and lru.get_or_make("k", lambda: 7) == 7


def test_clear_caches_empties_every_cache_and_probe():
    lru: LRU[int, int] = LRU(8)
    lru.put(1, 1)
    calls = []

    @once
    def probe() -> int:
        calls.append(1)
        return len(calls)

    assert probe() == probe() == 1
    memscan.clear_caches()
    assert len(lru) == 0 and lru.info() == (0, 0, 0)
    assert probe() == 2


def test_lru_shared_between_threads_stays_bounded():
    lru: LRU[int, int] = LRU(16)

    def work(base: int) -> None:
        for i in range(2000):
            lru.put(base + i % 64, i)
            lru.get(base + (i * 7) % 64)

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lru) == 16
