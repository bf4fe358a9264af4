"""The pure-Python engine: bytes in, memscan records out.

``memscan/_fast.pyx`` implements the same functions with the same results and the
same ParseError messages (``memscan.engine.protocol.Engine`` lists them); tests
run both over the same inputs. Nothing here opens files by name, knows pids,
translates OSError or calls the kernel: that is ``memscan.kernel``.

- ``smaps``: read_all, parse_smaps, read_parse_smaps, first_overlap, parse_rollup;
- ``status``: parse_status;
- ``classify``: classify, accumulate (the layout tier);
- ``pages``: counting what PAGEMAP_SCAN and pagemap returned.
"""

from .classify import accumulate, classify
from .pages import count_entries, count_exclusive, count_regions, page_ranges, read_plan, scan_spans
from .smaps import first_overlap, parse_rollup, parse_smaps, read_all, read_parse_smaps
from .status import parse_status

__all__ = [
    "read_all",
    "read_parse_smaps",
    "parse_smaps",
    "first_overlap",
    "parse_rollup",
    "parse_status",
    "classify",
    "accumulate",
    "page_ranges",
    "scan_spans",
    "count_regions",
    "read_plan",
    "count_exclusive",
    "count_entries",
]
