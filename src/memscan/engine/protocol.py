"""What an engine is: the functions both engines provide, with the same
signatures and results (``memscan.engine.pure``, the specification, and the
Cython ``memscan._fast``). Every engine is a module; a module satisfies this
protocol structurally (PEP 544), so ``get_engine()`` and the code it serves
can be typed with it.

An engine turns bytes into records: it parses /proc text, classifies and sums
mappings, and counts pagemap words that ``memscan.kernel.pagemap`` read. Its
only I/O is ``read_all`` and ``read_parse_smaps`` (the Cython engine parses
smaps while the kernel produces it).
"""

from __future__ import annotations

from array import array
from typing import List, Protocol, Sequence, Tuple, Union

from .._errors import ParseError
from .._types import LayoutContext, MemFields, SmapsTable, Status

__all__ = ["Engine", "Buffer"]

#: The bytes an engine parses or counts.
Buffer = Union[bytes, bytearray, memoryview]


class Engine(Protocol):
    """The engine functions; ``memscan.engine.pure`` documents each."""

    # /proc text: reading, parsing (engine.pure.smaps, engine.pure.status).
    def read_all(self, fd: int, buf: bytearray) -> int: ...

    def read_parse_smaps(self, fd: int, buf: bytearray, piece: int = 0) -> Tuple[int, Union[SmapsTable, ParseError]]: ...

    def parse_smaps(self, buf: Buffer) -> SmapsTable: ...

    def first_overlap(self, t: SmapsTable) -> int: ...

    def parse_rollup(self, buf: Buffer) -> MemFields: ...

    def parse_status(self, buf: Buffer) -> Status: ...

    # The layout tier (engine.pure.classify).
    def classify(self, t: SmapsTable, ctx: LayoutContext) -> bytearray: ...

    def accumulate(self, t: SmapsTable, cats: Buffer) -> List[int]: ...

    # Page counting over pagemap words (engine.pure.pages).
    def page_ranges(self, ranges: Sequence[Tuple[int, int]]) -> array[int]: ...

    def scan_spans(self, rng: array[int], gap: int) -> array[int]: ...

    def count_regions(self, words: Sequence[int], rng: array[int], first: int, last: int, private: Buffer,
                      out: array[int], segs: array[int]) -> None: ...

    def read_plan(self, segs: array[int], per_read: int, gap: int) -> array[int]: ...

    def count_exclusive(self, entries: memoryview, first: int, segs: array[int], i: int, out: array[int]) -> None: ...

    def count_entries(self, entries: memoryview, first: int, segs: array[int], i: int, out: array[int],
                      zero_pfns: Tuple[int, int, int]) -> None: ...
