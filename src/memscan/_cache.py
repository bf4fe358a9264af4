"""What memscan remembers between scans, and ``clear_caches()`` to forget it.

Every cache is an :class:`LRU` or a :func:`once` value. Entries are keyed
by what makes them valid (a file's identity, a process's start time and
loaded files, where a library is mapped), so a stale entry is never
reached, only aged out. Forgetting is for tests and benchmarks that want a
first scan's work again, and for long-lived processes that want the memory
back.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, Tuple, TypeVar

__all__ = ["LRU", "once", "clear_caches"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

_MISSING: Any = object()

# Every LRU and once value alive, for clear_caches(); weak, so that a cache
# of an object (a Sampler's) goes away with it.
_caches: "weakref.WeakSet[Any]" = weakref.WeakSet()
_caches_lock = threading.Lock()


def _register(cache: Any) -> None:
    with _caches_lock:
        _caches.add(cache)


class LRU(Generic[K, V]):
    """At most ``size`` entries, the least recently used dropped first; one
    lock makes it safe to share between threads (samplers scan on their own).
    ``hits`` and ``misses`` count the lookups since the last ``clear()``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = self.misses = 0
        self._data: "OrderedDict[K, V]" = OrderedDict()
        self._lock = threading.Lock()
        _register(self)

    def get(self, key: K, default: Any = None) -> Any:
        """The entry of ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            try:
                value = self._data[key]
            except KeyError:
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The entry of ``key``, or ``make()``'s result, kept. ``make`` runs
        outside the lock (it may parse a file): two threads that miss at once
        both make the entry, and the second one's stays."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = make()
            self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def info(self) -> Tuple[int, int, int]:
        """(hits, misses, entries)."""
        with self._lock:
            return self.hits, self.misses, len(self._data)

    def __len__(self) -> int:
        return len(self._data)


class _Once(Generic[T]):
    """``fn()``, found at the first call and remembered until cleared."""

    def __init__(self, fn: Callable[[], T]) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._value: Any = _MISSING
        self._lock = threading.Lock()
        _register(self)

    def __call__(self) -> T:
        value = self._value
        if value is _MISSING:
            with self._lock:
                if self._value is _MISSING:
                    self._value = self._fn()
                value = self._value
        return value

    def clear(self) -> None:
        with self._lock:
            self._value = _MISSING


def once(fn: Callable[[], T]) -> "_Once[T]":
    """Decorator: a probe of this machine (a kernel feature, a PFN) made at
    the first call only; ``clear_caches()`` makes the next call probe again."""
    return _Once(fn)


def clear_caches() -> None:
    """Forget everything memscan remembers between scans: parsed ELF files
    and Go layouts, layout facts of processes, the C allocator's statics,
    decoded heap arenas, and the probes of this machine."""
    with _caches_lock:
        caches = list(_caches)
    for cache in caches:
        cache.clear()
