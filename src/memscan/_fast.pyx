# cython: language_level=3, embedsignature=True, freethreading_compatible=True, cdivision=True
"""The Cython engine: the hot loops of ``memscan.engine.pure``, over bytes, in C.

Same functions, arguments, results and ParseError messages as the pure-Python engine
(whose docstrings are the specification; ``memscan.engine.protocol.Engine``
lists them); tests run both over the same inputs. The smaps parser runs
without the GIL, on the reading thread or a helper (read_parse_smaps);
Python objects are created once it is done.

The code is in include files under engine/fast/, one per concern, in the
order they build on each other; this file holds what they share.
"""

from cpython cimport array
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_SetFromErrno
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcmp, memcpy, memset
from posix.unistd cimport lseek, read


cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil
    bint __builtin_add_overflow(int64_t, int64_t, int64_t*) nogil

import array as _array_mod

from ._errors import ParseError
from ._types import (
    CATEGORIES, NFIELDS, PAGE_RANGES_ERROR, SMAPS_KEYS, STATUS_INT_KEYS, STATUS_KB_KEYS, UNITLESS_KEYS,
    VMFLAG_NAMES, MemFields, SmapsTable, Status,
)
from .kernel import linux
from .layout import rules
from .layout.rules import by_name

__all__ = [
    "read_all", "read_parse_smaps", "parse_smaps", "first_overlap", "parse_rollup", "parse_status",
    "classify", "accumulate",
    "page_ranges", "scan_spans", "count_regions", "read_plan", "count_exclusive", "count_entries",
]

DEF NF = 25          # len(SMAPS_KEYS), checked at import below
DEF NCAT = 10        # len(CATEGORIES)
DEF NCOUNT = 9       # Counters fields

if NFIELDS != NF or len(CATEGORIES) != NCAT:
    raise ImportError("memscan._fast was built for another _types layout")

cdef array.array _Q = _array_mod.array("Q")
cdef array.array _q = _array_mod.array("q")

cdef int64_t MAX_I64 = 0x7FFFFFFFFFFFFFFF
cdef int64_t MAX_KB = MAX_I64 // 1024
cdef uint64_t U32_MAX = 0xFFFFFFFF
cdef uint64_t SPACES8 = 0x2020202020202020ULL
# (2**64 - 1) // 10: one more decimal digit beyond it overflows 64 bits.
cdef uint64_t U64_TENTH = 1844674407370955161ULL
# The layout tier's sizes, from their home (memscan.layout.rules).
cdef uint64_t ARENA = rules.ARENA
cdef uint64_t GO_HEAP_LIMIT = rules.GO_HEAP_LIMIT
cdef uint64_t GUARD_MAX = rules.GUARD_MAX
cdef uint64_t VMFLAG_UNKNOWN = (<uint64_t>1) << 63

# Category codes, as in _types.CATEGORIES.
cdef enum:
    GO_HEAP, GO_RUNTIME, C_MALLOC, THREAD_STACKS, BINARY, SHARED_LIBS,
    MAPPED_FILES, SHMEM, KERNEL, ANON_OTHER

cdef enum:
    PERM_R = 1
    PERM_W = 2
    PERM_X = 4
    PERM_S = 8


include "engine/fast/vec.pxi"
include "engine/fast/smaps.pxi"
include "engine/fast/read.pxi"
include "engine/fast/status.pxi"
include "engine/fast/classify.pxi"
include "engine/fast/pages.pxi"
