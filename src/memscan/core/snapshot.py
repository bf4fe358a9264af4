"""The Snapshot: what a scan found, and its JSON form (a stable contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional

from .._types import CATEGORIES, Counters, GoRuntime


class Part(NamedTuple):
    """A piece of the address space behind a snapshot's figures: a whole
    mapping, or the part of one that an owner's structures claim (the
    exact tier), with its share of the mapping's counters."""

    start: int
    end: int
    category: str
    state: Optional[str]  # the Go heap's page state or the C allocator's (exact tier), else None
    path: str  # the mapping's path or name (smaps), "" for anonymous memory
    counters: Counters

    def to_dict(self) -> Dict[str, Any]:
        return {"start": self.start, "end": self.end, "category": self.category, "state": self.state,
                "path": self.path, **self.counters.to_dict()}


@dataclass
class Snapshot:
    """Where the resident memory of one process goes, at one time.

    ``categories`` partitions ``total``: every byte of every mapping is in
    exactly one category. It is None when only totals could be had
    (``source == "psutil"``).
    """

    pid: int
    time: float
    source: str  # "smaps" | "psutil"
    tier: str  # "exact" | "layout" | "psutil"
    engine: str  # "cython" | "python"
    total: Counters
    categories: Optional[Dict[str, Counters]]
    go_heap_detail: Optional[Dict[str, Counters]] = None
    go: Optional[GoRuntime] = None
    allocator: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    #: The states of c_malloc (core.exact.C_DETAIL: in_use, free, reserved,
    #: unassigned), adding up to it; None where no C allocator was read.
    c_malloc_detail: Optional[Dict[str, Counters]] = None
    #: Every mapping or exact-tier piece of one (Part), where the scan was
    #: asked for them (scan(mappings=True)) and read smaps; not in to_dict().
    mappings: Optional[List[Part]] = None

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form: exactly the documented keys, sizes in bytes."""
        return {
            "pid": self.pid,
            "time": self.time,
            "source": self.source,
            "tier": self.tier,
            "engine": self.engine,
            "total": self.total.to_dict(),
            "categories": None
            if self.categories is None
            else {name: self.categories[name].to_dict() for name in CATEGORIES},
            "go_heap_detail": None
            if self.go_heap_detail is None
            else {k: v.to_dict() for k, v in self.go_heap_detail.items()},
            "c_malloc_detail": None
            if self.c_malloc_detail is None
            else {k: v.to_dict() for k, v in self.c_malloc_detail.items()},
            "runtime": {
                "go": None
                if self.go is None
                else {"version": self.go.version, "path": self.go.path, "cgo": self.go.cgo},
                "allocator": self.allocator,
            },
            "warnings": list(self.warnings),
        }
