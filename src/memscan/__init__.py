"""memscan: where a process's resident memory goes.

Attributes every resident byte of a Linux process to the Go heap, Go runtime
metadata, C malloc, thread stacks, the binary, shared libraries, mapped
files, shared memory, kernel pages, or other anonymous memory.

    >>> import memscan
    >>> snap = memscan.scan(pid)
    >>> snap.categories["go_heap"].rss
"""

from ._cache import clear_caches
from ._errors import (
    AccessDenied,
    BuildError,
    Error,
    HeapChanged,
    NoRuntimeInfo,
    NoSuchCgroup,
    NoSuchProcess,
    ParseError,
    ReadLimitExceeded,
    ToolchainMissing,
)
from ._types import CATEGORIES, COUNTER_FIELDS, Counters, GoRuntime
from ._version import __version__
from .core.sampler import Sample, Sampler
from .core.scanner import TIERS, scan
from .core.snapshot import Snapshot
from .engine import IMPLEMENTATION

__all__ = [
    "AccessDenied",
    "BuildError",
    "CATEGORIES",
    "COUNTER_FIELDS",
    "Counters",
    "Error",
    "GoRuntime",
    "HeapChanged",
    "IMPLEMENTATION",
    "NoRuntimeInfo",
    "NoSuchCgroup",
    "NoSuchProcess",
    "ParseError",
    "ReadLimitExceeded",
    "Sample",
    "Sampler",
    "Snapshot",
    "TIERS",
    "ToolchainMissing",
    "clear_caches",
    "scan",
    "__version__",
]
