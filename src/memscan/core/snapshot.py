"""The Snapshot: what a scan found, and its JSON form (a stable contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .._types import CATEGORIES, Counters, GoRuntime


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
