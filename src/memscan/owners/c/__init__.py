"""The C allocator's own view of a live process's anonymous memory.

For the exact tier: the kernel merges neighbouring anonymous mappings, so
glibc's mmapped chunks, the Go runtime's mappings and other mmaps can share
one VMA; only the allocator's structures tell them apart. ``c_regions(pid,
table)`` reads those structures read-only through ``/proc/PID/mem`` and
returns address intervals of kind

=================  ============================================================
``main arena``     ``[heap]`` (brk), once ``main_arena`` validates against it
``arena``          a glibc thread-arena heap (64 MiB-aligned ``heap_info``):
                   its ``rw-p`` head and ``---p`` tail up to +64 MiB
``mmapped chunk``  one glibc mmapped chunk: its whole mapping, header included
``pthread stack``  a glibc thread stack: guard page(s) + stack, TCB at the top
``jemalloc``       an anonymous region of a preloaded jemalloc
``tcmalloc``       ``[heap]`` and the library's static metadata under tcmalloc
``pymalloc arena`` one of CPython's 1 MiB small-object arenas (:mod:`.pymalloc`)
=================  ============================================================

(The structures are glibc's own: malloc/malloc.c, malloc/arena.c and
nptl/allocatestack.c.) Each is found by its own reader, in this order:

- :mod:`.glibc`: ``main_arena`` and ``mp_`` in libc's writable data;
- :mod:`.arenas`: the thread arenas' heaps, validated through the arenas'
  ``next`` ring (which also finds ``main_arena`` when the signature scan
  did not); then ``[heap]`` for the main arena (:mod:`.glibc`);
- :mod:`.bins`: the free chunks of every arena claimed (``CRegions.states``);
- :mod:`.stacks`: pthread stacks, by their guard and their TCB;
- :mod:`.pymalloc`: CPython's small-object arenas and their free pools;
- :mod:`.preloaded`: jemalloc's or tcmalloc's regions, when one owns malloc;
- :mod:`.chunks`: glibc's mmapped chunks, by a walk of the pages left.

They share one :class:`.mappings.Mappings`: the mappings, and the regions
claimed so far (no byte is claimed twice). "Owns malloc" means glibc's main
arena is unused: ``system_mem`` 0, ``top`` still the initial one, no brk and no
mmapped chunk in ``mp_``. (Not "uninitialised", as one might expect:
glibc 2.34+ initialises ``main_arena`` in ``__libc_early_init``, so its
bins point to themselves under a preloaded allocator too.)

Safety: ``/proc/PID/mem`` is opened ``O_RDONLY`` and read with ``os.pread``
only; nothing is written and the target is never ptraced (reading needs
ptrace-read access all the same: ``mm_access()`` in fs/proc/base.c). Before any
read, pagemap must say that every page read is present: reading a
non-present anonymous page would map the shared zero page into the target,
and reading a swapped page would swap it in. Reads are small (16
bytes per probed page, 48 per ``heap_info``, one ``malloc_state`` per arena,
24 per free chunk, two pages per stack, libc's writable data; in CPython
its writable data, its arenas vector and 48 bytes per pool) and their total
is capped (``max_bytes``).

Nothing is guessed silently: whatever cannot be found or does not validate
is left out of ``intervals`` and explained in ``warnings``.
"""

from __future__ import annotations

from itertools import repeat
from operator import itemgetter
from types import ModuleType
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ... import elf
from ..._errors import NoSuchProcess
from ..._types import SmapsTable
from ...kernel import procfs
from ..memory import TargetMemory
from .arenas import ThreadArenas
from .bins import Arena, BadList
from .chunks import check_chunks, mmapped_chunk_len, walk_chunks
from .glibc import MS_SIZE, MS_TOP, Glibc
from .mappings import LimitReached, Mappings
from .pymalloc import Pymalloc
from .preloaded import claim_jemalloc, claim_tcmalloc
from .stacks import find_stacks

__all__ = [
    "CRegions",
    "SPLIT_KINDS",
    "KINDS",
    "MAX_READ_BYTES",
    "c_regions",
    "mmapped_chunk_len",
]

#: The kinds of ``CRegions.intervals``.
KINDS = ("main arena", "arena", "mmapped chunk", "pthread stack", "jemalloc", "tcmalloc", "pymalloc arena")

#: The kinds whose bytes are in use but for what CRegions.states says.
SPLIT_KINDS = frozenset(("main arena", "arena", "mmapped chunk", "pymalloc arena"))

#: Default cap on the bytes read from /proc/PID/mem by one call: 16 bytes a
#: probed page make this 2M pages (8 GiB) of anonymous memory to walk.
MAX_READ_BYTES = 32 << 20


class CRegions(NamedTuple):
    """What the C allocator's structures say about a process's memory."""

    #: Sorted, non-overlapping ``(start, end, kind)``, kind in :data:`KINDS`;
    #: one interval per object (chunk, heap, stack, mapping), adjacent
    #: intervals of one kind are not merged. Only what validated is here.
    intervals: List[Tuple[int, int, str]]
    #: glibc's own figures, each present only when its structure was found:
    #: ``n_mmaps``, ``mmapped_mem``, ``mmap_threshold`` (``mp_``);
    #: ``main_system_mem`` (``main_arena.system_mem``); ``heaps_size`` (sum
    #: of ``heap_info.size`` over the validated thread-arena heaps); and what
    #: ``mallinfo2()`` would say: ``hblks`` = n_mmaps, ``hblkhd`` =
    #: mmapped_mem, ``arena`` = main_system_mem + heaps_size (only when every
    #: arena of the ring validated).
    counters: Dict[str, int]
    #: Why something is missing, or does not add up (e.g. more chunks found
    #: than ``mp_.n_mmaps`` counts: "unexplained").
    warnings: List[str]
    #: Who owns malloc: "glibc", "jemalloc", "tcmalloc", "mimalloc", "musl"
    #: or None (no C library loaded, e.g. a static Go binary).
    allocator: Optional[str]
    #: What was found: addresses ``main_arena``, ``mp_`` (0 if not found);
    #: counts ``arenas``, ``heaps``, ``chunks``, ``chunk_bytes``,
    #: ``pthread_stacks``, ``stacks_by_shape`` (accepted without a TCB),
    #: ``pages_probed`` (walker reads), ``jemalloc_regions`` (under jemalloc).
    found: Dict[str, int]
    #: Bytes read from /proc/PID/mem (pagemap not included).
    bytes_read: int
    #: (major, minor) of the glibc loaded, from its banner; None if unknown.
    glibc_version: Optional[Tuple[int, int]]
    #: The states of glibc's arenas (:mod:`.bins`), sorted ``(start, end,
    #: state)``: ``free`` (a free chunk or a top chunk, to the byte),
    #: ``reserved`` (a thread-arena heap's address space past
    #: ``heap_info.size``) and ``unassigned`` (an arena whose free lists did
    #: not validate). What is in an arena or mmapped chunk and not here is
    #: in use (tcache included, as in mallinfo2).
    states: List[Tuple[int, int, str]] = []


def c_regions(pid: int, table: SmapsTable, *, max_bytes: int = MAX_READ_BYTES,
              stack_limit: Optional[int] = -1, skip: Sequence[Tuple[int, int]] = (),
              engine: Optional[ModuleType] = None, free_lists: bool = True) -> CRegions:
    """The C allocator's regions of process ``pid``.

    ``table``: the process's parsed smaps (``engine.parse_smaps``; a maps
    table works too, but without VmFlags jemalloc regions cannot be told and
    the stack shape rule is weaker). ``max_bytes``: cap on the bytes read
    from /proc/PID/mem; reaching it stops the chunk walk with a warning.
    ``stack_limit``: the target's RLIMIT_STACK soft limit in bytes (None:
    unlimited), read from /proc/PID/limits when left at -1; used only to
    find the TCB of a stack whose mapping merged with one above it.
    ``skip``: (start, end) ranges another owner's structures already account
    for (e.g. the Go heap's arenas, which Go reserves whole, so no glibc
    mmap can land inside them): not walked for chunk headers, and no chunk
    may extend into them. Only a speed-up; should a range be wrong, a chunk
    missed shows in the ``mp_`` cross-check. ``engine``: the engine that
    parses and counts what is read (None: the default one). ``free_lists``:
    walk glibc's free lists into ``CRegions.states`` (one read per free
    chunk, the bulk of the reads of a fragmented heap); without, the arenas
    are claimed whole and ``states`` is empty.

    Raises NoSuchProcess, AccessDenied (reading another process's memory
    needs ptrace-read access) as every /proc read does.
    """
    if stack_limit == -1:
        try:
            stack_limit = procfs.stack_limit(pid)
        except Exception:  # noqa: BLE001 - only a hint
            stack_limit = None
    names = [n for n in table.names if n.startswith("/")]
    hint = elf.allocator(names)
    mem_path = procfs.path(pid, "mem")
    with procfs.translated(pid, mem_path):
        tgt = TargetMemory(pid, max_bytes, over_limit=LimitReached, subject="C allocator", engine=engine)
        try:
            maps = Mappings(pid, table, tgt, skip)
            glibc = Glibc(maps)
            allocator = _run(maps, glibc, hint, stack_limit, free_lists)
        except ProcessLookupError as err:
            raise NoSuchProcess(pid) from err
        finally:
            tgt.close()
    # A process that exits mid-scan reads as nothing (pread returns 0 bytes,
    # PAGEMAP_SCAN finds no pages): never report that as "no C memory".
    st = procfs.stat(pid)
    if st.gone or st.exiting:
        raise NoSuchProcess(pid, "process exited during the scan")
    intervals = sorted(maps.intervals)
    for (a0, a1, k0), (b0, b1, k1) in zip(intervals, intervals[1:]):
        if b0 < a1:  # cannot happen: every claim checks what is claimed
            raise AssertionError(f"overlapping C regions {a0:#x}-{a1:#x} {k0} and {b0:#x}-{b1:#x} {k1}")
    return CRegions(intervals, maps.counters, maps.warnings, allocator, maps.found, tgt.charged, glibc.version,
                    sorted(maps.states))


def arena_states(maps: Mappings, g: Glibc, arenas: ThreadArenas, valid: Dict[int, List[int]]) -> None:
    """The free chunks of every arena claimed, and the thread arenas'
    reserved address space, into ``maps.states``; ``fordblks`` and
    ``uordblks`` as mallinfo2 counts them when every arena was read."""
    safe_linking = None if g.version is None else g.version >= (2, 32)
    todo: List[Tuple[int, Optional[Sequence[int]], List[Tuple[int, int]]]] = []
    main = [(s, e) for s, e, k in maps.intervals if k == "main arena"]
    if main:
        todo.append((g.main_arena, maps.tgt.words_if_present(g.main_arena, MS_SIZE // 8), main))
    for ar, bases in valid.items():
        heaps = [(b, b + arenas.heap_cands[b][2]) for b in bases]
        todo.append((ar, arenas.arena_state.get(ar), heaps))
        maps.states.extend((e, b + g.heap_max, "reserved") for b, (_, e) in zip(bases, heaps) if e < b + g.heap_max)
    fordblks = 0
    complete = bool(main) and arenas.ring_complete
    for ar, state, heaps in todo:
        try:
            free = _free_chunks(maps, ar, state, heaps, safe_linking)
        except BadList as why:
            maps.warn(f"arena at {ar:#x}: its free lists do not validate ({why}): its memory is counted "
                      "as unassigned, not split into in use and free")
            maps.states.extend((lo, hi, "unassigned") for lo, hi in heaps)
            complete = False
            continue
        starts, ends = list(map(itemgetter(0), free)), list(map(itemgetter(1), free))
        maps.states.extend(zip(starts, ends, repeat("free")))
        fordblks += sum(ends) - sum(starts)
    if complete and "arena" in maps.counters:
        maps.counters["fordblks"] = fordblks
        maps.counters["uordblks"] = maps.counters["arena"] - fordblks


#: Walks of an arena's free lists before they are called bad: the target
#: runs on, and a list its thread changes mid-walk reads as broken.
FREE_LIST_TRIES = 2


def _free_chunks(maps: Mappings, ar: int, state: Optional[Sequence[int]], heaps: List[Tuple[int, int]],
                 safe_linking: Optional[bool]) -> List[Tuple[int, int]]:
    """The free chunks of the arena at ``ar``; a failed walk is tried again
    with its malloc_state read afresh. Raises BadList."""
    why = BadList("its malloc_state is not readable")
    for attempt in range(FREE_LIST_TRIES):
        if attempt:
            state = maps.tgt.words_if_present(ar, MS_SIZE // 8)
        if state is None:
            break
        try:
            return Arena(maps, ar, state, heaps, safe_linking).free_chunks()
        except BadList as err:
            why = err
    raise why


def _run(maps: Mappings, g: Glibc, hint: Optional[str], stack_limit: Optional[int], free_lists: bool) -> Optional[str]:
    """Every reader in turn; who owns malloc."""
    libc = g.find_libc()
    if not libc:
        if hint in ("musl", "mimalloc", "jemalloc", "tcmalloc"):
            maps.warn(f"{hint} without glibc: C allocator regions are not identified")
        elif maps.heap_rows:
            maps.warn("[heap] present but no shared libc loaded (static binary?): C allocator not identified")
        return hint
    try:
        g.read_libc_data(libc)
        g.find_main_arena(last_try=False)
        if not g.main_arena:
            g.read_libc_bss(libc)
            g.find_main_arena(last_try=True)
        g.find_mp()
        g.remember_statics()
        if g.main_arena:
            g.main_arena_fields()
        preloaded = hint in ("jemalloc", "tcmalloc", "mimalloc")
        # glibc 2.34+ initialises main_arena in __libc_early_init, before
        # any malloc: under a preloaded allocator its bins point to
        # themselves all the same. Unused means: no memory (system_mem 0),
        # top still the initial one, no mmapped chunk, no brk.
        unused = not g.main_arena or (
            g.main_fields.get("system_mem") == 0
            and g.main_fields.get("top") == g.main_arena + MS_TOP
            and (g.mp is None or (g.mp["n_mmaps"] == 0 and g.mp["sbrk_base"] == 0))
        )
        owner = hint if preloaded and unused else "glibc"
        if preloaded and not unused:
            maps.warn(f"{hint} is loaded but glibc's main_arena is in use: glibc malloc is taken as the allocator")
        # Thread arenas first (their heaps can look like anything else's shape).
        if owner == "glibc":
            arenas = ThreadArenas(maps, g)
            valid = arenas.check_ring(arenas.find_heaps())
            if g.main_arena and not g.main_fields:
                g.main_arena_fields()  # found through the ring
            heaps = 0
            size = 0
            for ar, bases in valid.items():
                for b in bases:
                    maps.claim(b, b + g.heap_max, "arena")
                    heaps += 1
                    size += arenas.heap_cands[b][2]
            maps.found["arenas"] = len(valid)
            maps.found["heaps"] = heaps
            maps.counters["heaps_size"] = size
            if g.main_arena:
                g.claim_main_arena()
                if "main_system_mem" in maps.counters and arenas.ring_complete:
                    maps.counters["arena"] = maps.counters["main_system_mem"] + size
            else:
                maps.warn("main_arena not found in libc's data: [heap] and thread arenas not attributed")
            if free_lists:
                arena_states(maps, g, arenas, valid)
        find_stacks(maps, stack_limit)
        Pymalloc(maps).find()
        if owner == "jemalloc":
            claim_jemalloc(maps)
            if maps.heap_range:
                maps.warn(f"[heap] ({maps.heap_range[1] - maps.heap_range[0]} bytes) not attributed: glibc's "
                          "main arena does not use it under jemalloc (jemalloc's dss?)")
        elif owner == "tcmalloc":
            claim_tcmalloc(maps)
            if not maps.heap_range:
                maps.warn("tcmalloc owns malloc but there is no [heap]: the memory it mmaps when sbrk fails "
                          "is not located")
        elif owner == "mimalloc":
            maps.warn("mimalloc owns malloc: its regions are not identified")
        if owner == "glibc":
            chunks, runs = walk_chunks(maps)
            for start, total in chunks:
                maps.claim(start, start + total, "mmapped chunk")
            check_chunks(maps, g.mp, chunks, runs)
        return owner
    except LimitReached:
        maps.warn(f"read limit of {maps.tgt.limit} bytes reached before the scan finished: results are partial")
        return hint
