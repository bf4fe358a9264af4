# cython: language_level=3, embedsignature=True, freethreading_compatible=True, cdivision=True
"""The Cython engine: the hot loops of ``memscan.engine.pure``, over bytes, in C.

Same functions, arguments, results and ParseError messages as the pure-Python engine
(whose docstrings are the specification); tests run both over the same
inputs. The smaps parser runs without the GIL, on the reading thread or a
helper (read_parse_smaps); Python objects are created once it is done.
"""

from cpython cimport array
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_SetFromErrno
from cpython.mem cimport PyMem_Free
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
from .engine.pure import _STATUS_INT, _STATUS_KB
from .engine.pure import accumulate as _exact_accumulate
from .layout import rules
from .layout.rules import by_name
from ._types import CATEGORIES, NFIELDS, SMAPS_KEYS, UNITLESS_KEYS, VMFLAG_NAMES, MemFields, SmapsTable, Status

__all__ = ["read_all", "parse_smaps", "first_overlap", "parse_rollup", "parse_status", "classify", "accumulate"]

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

# Keys as C strings, in SMAPS_KEYS order, then the unit-less keys.
cdef bytes _KEYS_BLOB = b"".join(k.encode() + b"\0" for k in SMAPS_KEYS)
cdef const char* _key_ptr[NF]
cdef Py_ssize_t _key_len[NF]
cdef bytes _UNITLESS_BLOB = b"".join(k.encode() + b"\0" for k in UNITLESS_KEYS)
cdef const char* _unitless_ptr[4]
cdef Py_ssize_t _unitless_len[4]
cdef Py_ssize_t _n_unitless = len(UNITLESS_KEYS)
cdef bytes _FLAGS_BLOB = b"".join(k.encode() for k in VMFLAG_NAMES)
cdef Py_ssize_t _n_flags = len(VMFLAG_NAMES)
cdef uint64_t VM_NR = (<uint64_t>1) << VMFLAG_NAMES.index("nr")
cdef uint64_t VM_NH = (<uint64_t>1) << VMFLAG_NAMES.index("nh")


cdef void _init_keys():
    cdef const char* p = _KEYS_BLOB
    cdef Py_ssize_t i, n
    for i in range(NF):
        n = len(SMAPS_KEYS[i])
        _key_ptr[i] = p
        _key_len[i] = n
        p += n + 1
    p = _UNITLESS_BLOB
    for i in range(_n_unitless):
        n = len(UNITLESS_KEYS[i])
        _unitless_ptr[i] = p
        _unitless_len[i] = n
        p += n + 1

_init_keys()

# Each key as the kernel pads it ("Rss:" and spaces to column 16), as two
# words; keys of 15 or more bytes leave no room for padding (Private_Hugetlb
# is printed with a narrower number) and are not on the fast path.
cdef uint64_t _key_w0[NF]
cdef uint64_t _key_w1[NF]
cdef bint _key_fast[NF]
cdef uint32_t _KB_NL


cdef void _init_padded():
    global _KB_NL
    cdef bytes padded
    cdef const char* p
    cdef Py_ssize_t i
    for i in range(NF):
        padded = (SMAPS_KEYS[i] + ":").ljust(16).encode()
        _key_fast[i] = len(SMAPS_KEYS[i]) < 15
        p = padded
        memcpy(&_key_w0[i], p, 8)
        memcpy(&_key_w1[i], p + 8, 8)
    p = b" kB\n"
    memcpy(&_KB_NL, p, 4)

_init_padded()


cdef int _rewind(int fd, bytearray buf) except -1:
    """To offset 0 of ``fd``, with room for 64 KiB in ``buf``."""
    if len(buf) < 65536:
        PyByteArray_Resize(buf, 65536)
    if lseek(fd, 0, 0) < 0:
        PyErr_SetFromErrno(OSError)
    return 0


cdef Py_ssize_t _read_at(int fd, bytearray buf, Py_ssize_t n) except -1:
    """One read() into ``buf`` at ``n``, ``buf`` doubled first if full
    (realloc in place where it can: no temporary object, no copy); what
    read() gave, 0 at the end."""
    cdef Py_ssize_t got, size = len(buf)
    cdef char* p
    if n == size:
        size *= 2
        PyByteArray_Resize(buf, size)
    p = PyByteArray_AS_STRING(buf)
    with nogil:
        got = read(fd, p + n, size - n)
    if got < 0:
        PyErr_SetFromErrno(OSError)
    return got


def read_all(int fd, bytearray buf):
    """Read ``fd`` from offset 0 to EOF into ``buf`` (grown as needed); return the length."""
    cdef Py_ssize_t n = 0, got
    _rewind(fd, buf)
    while True:
        got = _read_at(fd, buf, n)
        if got == 0:
            return n
        n += got


# ------------------------------------------------------------ growable vectors

cdef struct Vec:
    char* data
    Py_ssize_t len    # bytes used
    Py_ssize_t cap    # bytes allocated

cdef int vec_grow(Vec* v, Py_ssize_t extra) noexcept nogil:
    """Room for ``extra`` more bytes; -1 when memory is exhausted. libc's
    allocator, as the parse may run on a thread without the GIL."""
    cdef Py_ssize_t cap
    cdef char* d
    if v.len + extra <= v.cap:
        return 0
    cap = v.cap * 2
    if cap < v.len + extra:
        cap = v.len + extra
    if cap < 4096:
        cap = 4096
    d = <char*>realloc(v.data, cap)
    if d == NULL:
        return -1
    v.data = d
    v.cap = cap
    return 0

cdef int vec_reserve(Vec* v, Py_ssize_t extra) except -1:
    if vec_grow(v, extra) < 0:
        raise MemoryError()
    return 0

cdef inline int vec_u64(Vec* v, uint64_t x) noexcept nogil:
    if v.len + 8 > v.cap and vec_grow(v, 8) < 0:
        return -1
    (<uint64_t*>(v.data + v.len))[0] = x
    v.len += 8
    return 0

cdef array.array vec_array(Vec* v, array.array template):
    cdef Py_ssize_t n = v.len // 8
    cdef array.array a = array.clone(template, n, False)
    if n:
        memcpy(a.data.as_voidptr, v.data, v.len)
    return a


# ------------------------------------------------------------------- parsing

cdef inline bint is_hex(unsigned char c) noexcept nogil:
    return (48 <= c <= 57) or (97 <= c <= 102)

cdef inline bint is_keychar(unsigned char c) noexcept nogil:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 95


# The smaps parser runs without the GIL (possibly on the reading thread's
# helper, see read_parse_smaps): it records the first error as a code and
# an offset, raised as a ParseError once the GIL is held.
cdef enum:
    E_NONE, E_NOMEM, E_START, E_END, E_OFFSET, E_DEVICE, E_END_BELOW, E_SIZE, E_PERMS, E_INODE,
    E_UNRECOGNISED, E_BEFORE_HEADER, E_VALUE, E_RANGE, E_VMFLAGS

_MESSAGES = (
    "", "", "bad start address in mapping header", "bad end address in mapping header",
    "bad offset in mapping header", "bad device in mapping header", "end address below start address",
    "mapping size out of range", "bad permissions in mapping header", "bad inode in mapping header",
    "unrecognised line", "field before the first mapping header", "bad value", "value out of range",
    "bad VmFlags",
)


cdef object _parse_error(str msg, Py_ssize_t offset):
    return ParseError(msg, offset)


cdef object _error_of(int code, Py_ssize_t offset):
    return ParseError(_MESSAGES[code], offset)


cdef Py_ssize_t _cut_at(const unsigned char* s, Py_ssize_t total) noexcept nogil:
    """-1 if the text ends with a newline, else where its last line starts."""
    cdef Py_ssize_t q = total - 1
    if s[q] == 10:
        return -1
    while q >= 0 and s[q] != 10:
        q -= 1
    return q + 1


cdef int _check_complete(const unsigned char* s, Py_ssize_t total) except -1:
    """The kernel ends every line with a newline: anything else was cut short."""
    cdef Py_ssize_t q = _cut_at(s, total)
    if q >= 0:
        raise _parse_error("truncated line", q)
    return 0


# Value of each byte as a lower-case hex digit, 255 for any other byte.
cdef unsigned char _hexval[256]


cdef void _init_hex():
    cdef int c
    memset(_hexval, 255, sizeof(_hexval))
    for c in range(10):
        _hexval[48 + c] = c
    for c in range(6):
        _hexval[97 + c] = 10 + c

_init_hex()


cdef Py_ssize_t _hex(const unsigned char* s, Py_ssize_t pos, Py_ssize_t n, unsigned char stop,
                     uint64_t* out) noexcept nogil:
    """Lower-case hex from ``pos`` up to ``stop``; returns the index after
    ``stop``, or -1."""
    cdef Py_ssize_t q = pos
    cdef uint64_t v = 0
    cdef unsigned char d
    while q < n:
        d = _hexval[s[q]]
        if d == 255:
            break
        if q - pos < 16:  # more digits are an error: never shift bits out
            v = (v << 4) | d
        q += 1
    if q == pos or q - pos > 16 or q >= n or s[q] != stop:
        return -1
    out[0] = v
    return q + 1


cdef inline bint _blank(unsigned char c, bint tabs) noexcept nogil:
    return c == 32 or (tabs and c == 9)


cdef int _value(const unsigned char* s, Py_ssize_t p, Py_ssize_t n, bint unit,
                int64_t* out, bint tabs) noexcept nogil:
    """``<spaces><digits>[ kB]`` from ``p`` to ``n`` (the end of the line);
    with ``tabs``, a tab counts as a space (status pads with tabs). Returns
    E_NONE, E_VALUE or E_RANGE."""
    cdef Py_ssize_t q = p, r
    cdef uint64_t v = 0
    cdef bint overflow = False
    while q < n and _blank(s[q], tabs):
        q += 1
    r = q
    while r < n and 48 <= s[r] <= 57:
        # No arithmetic that wraps: the debug build (MEMSCAN_DEBUG) traps it.
        if v > U64_TENTH or (v == U64_TENTH and s[r] > 53):
            overflow = True
        else:
            v = v * 10 + (s[r] - 48)
        r += 1
    if r == q or q == p:
        return E_VALUE
    if r - q > 20:
        return E_RANGE
    if unit:
        if n - r != 3 or not _blank(s[r], tabs) or s[r + 1] != 107 or s[r + 2] != 66:
            return E_VALUE
        if overflow or v > <uint64_t>MAX_KB:
            return E_RANGE
        out[0] = <int64_t>v * 1024
        return E_NONE
    if r != n:
        return E_VALUE
    out[0] = 0
    return E_NONE


# VmFlags two-letter code -> bit number + 1 (0: unknown), indexed by the
# two bytes' low 7 bits.
cdef unsigned char _flag_bit[128 * 128]


cdef void _init_flags():
    cdef const unsigned char* names = _FLAGS_BLOB
    cdef Py_ssize_t k
    memset(_flag_bit, 0, sizeof(_flag_bit))
    for k in range(_n_flags):
        _flag_bit[(names[2 * k] & 127) * 128 + (names[2 * k + 1] & 127)] = <unsigned char>(k + 1)

_init_flags()


cdef int _vmflags(const unsigned char* s, Py_ssize_t p, Py_ssize_t n, uint64_t* out) noexcept nogil:
    cdef uint64_t bits = 0
    cdef Py_ssize_t q
    cdef unsigned char b
    while p < n:
        if s[p] == 32:
            p += 1
            continue
        q = p
        while q < n and s[q] != 32:
            q += 1
        if q - p != 2:
            return E_VMFLAGS
        b = 0 if (s[p] | s[p + 1]) & 128 else _flag_bit[s[p] * 128 + s[p + 1]]
        bits |= ((<uint64_t>1) << (b - 1)) if b else VMFLAG_UNKNOWN
        p = q
    out[0] = bits
    return E_NONE


cdef struct Parse:
    # Where the next line starts, and what the lines before it left open.
    Py_ssize_t pos
    Py_ssize_t expect     # the key the kernel prints next (index in SMAPS_KEYS)
    Py_ssize_t nrows
    uint64_t start        # of the last mapping
    uint64_t end
    bint size_seen        # the last mapping had a Size line
    int err               # the first error (E_NONE: none) and where
    Py_ssize_t err_at
    # One row per mapping.
    Vec starts
    Vec ends
    Vec offsets
    Vec inodes
    Vec devs
    Vec flags
    Vec fields            # NF int64 per row
    Vec file_starts
    Vec perms             # one byte per row
    Vec names             # offset and length of the name in the text, per row


cdef void _parse_free(Parse* st) noexcept nogil:
    free(st.starts.data); free(st.ends.data); free(st.offsets.data); free(st.inodes.data)
    free(st.devs.data); free(st.flags.data); free(st.fields.data); free(st.file_starts.data)
    free(st.perms.data); free(st.names.data)


cdef inline int _fail(Parse* st, int code, Py_ssize_t at) noexcept nogil:
    st.err = code
    st.err_at = at
    return -1


cdef int _parse_lines(Parse* st, const unsigned char* s, Py_ssize_t limit) noexcept nogil:
    """Parse the lines of ``s`` from ``st.pos`` to ``limit``, which ends a
    line: resumable, as text arrives. Returns 0, or -1 with the error in
    ``st`` (nothing more is parsed after one)."""
    cdef Py_ssize_t pos = st.pos, eol, p, q, k, expect = st.expect
    cdef uint64_t start = st.start, end = st.end, offset, major, minor, inode, v, w0, w1
    cdef uint32_t w2
    cdef unsigned char perms
    cdef int64_t value
    cdef int64_t* row = NULL
    cdef bint size_seen = st.size_seen, unit
    cdef int rc
    if st.err:
        return -1
    if st.nrows:
        row = <int64_t*>(st.fields.data + st.fields.len - 8 * NF)
    while pos < limit:
        # Fast path for the common line: the key the kernel prints next,
        # then "<spaces><digits> kB\n". Anything else takes the general
        # path below, which finds the end of the line first.
        if st.nrows and expect < NF and _key_fast[expect] and pos + 28 <= limit:
            # The kernel prints "%-16s%8lu kB\n": 16 bytes that are the
            # same for every line of a key, an 8-byte right-aligned number,
            # then " kB\n". Compare words, not bytes; anything unusual
            # takes the general path below.
            memcpy(&w0, s + pos, 8)
            memcpy(&w1, s + pos + 8, 8)
            memcpy(&w2, s + pos + 24, 4)
            if w0 == _key_w0[expect] and w1 == _key_w1[expect] and w2 == _KB_NL:
                # Leading spaces of the number: the zero low bytes of
                # word ^ "        " (little-endian: column 16 is byte 0).
                memcpy(&w0, s + pos + 16, 8)
                w0 ^= SPACES8
                p = pos + 16 + (__builtin_ctzll(w0) >> 3 if w0 else 8)
                v = 0
                q = p
                while q < pos + 24 and 48 <= s[q] <= 57:
                    v = v * 10 + (s[q] - 48)
                    q += 1
                if q == pos + 24 and q > p:
                    row[expect] = <int64_t>v * 1024
                    if expect == 0:
                        size_seen = True
                    expect += 1
                    pos += 28
                    continue
        if st.nrows and pos + 13 < limit and s[pos] == 84 and memcmp(s + pos, b"THPeligible:", 12) == 0:
            # After Locked, smaps prints "THPeligible:" with a bare number
            # (kernel 5.0+): valid when only spaces then digits follow.
            q = pos + 12
            while s[q] == 32:
                q += 1
            p = q
            while 48 <= s[p] <= 57:
                p += 1
            if q > pos + 12 and 0 < p - q <= 20 and s[p] == 10:
                expect = 0
                pos = p + 1
                continue
        eol = <Py_ssize_t>(<const unsigned char*>memchr(s + pos, 10, limit - pos) - s)
        if eol > pos and is_hex(s[pos]):
            # ---- mapping header
            if st.nrows and not size_seen:
                row[0] = <int64_t>(end - start)
            p = _hex(s, pos, eol, 45, &start)
            if p < 0:
                return _fail(st, E_START, pos)
            p = _hex(s, p, eol, 32, &end)
            if p < 0:
                return _fail(st, E_END, pos)
            if end < start:
                return _fail(st, E_END_BELOW, pos)
            if end - start > <uint64_t>MAX_I64:
                return _fail(st, E_SIZE, pos)
            if (
                eol - p < 5
                or (s[p] != 114 and s[p] != 45)
                or (s[p + 1] != 119 and s[p + 1] != 45)
                or (s[p + 2] != 120 and s[p + 2] != 45)
                or (s[p + 3] != 115 and s[p + 3] != 112)
                or s[p + 4] != 32
            ):
                return _fail(st, E_PERMS, pos)
            perms = ((PERM_R if s[p] == 114 else 0) | (PERM_W if s[p + 1] == 119 else 0)
                     | (PERM_X if s[p + 2] == 120 else 0) | (PERM_S if s[p + 3] == 115 else 0))
            p = _hex(s, p + 5, eol, 32, &offset)
            if p < 0:
                return _fail(st, E_OFFSET, pos)
            p = _hex(s, p, eol, 58, &major)
            if p >= 0:
                p = _hex(s, p, eol, 32, &minor)
            if p < 0 or major > U32_MAX or minor > U32_MAX:
                return _fail(st, E_DEVICE, pos)
            q = p
            inode = 0
            k = 0  # overflow of the inode
            while q < eol and 48 <= s[q] <= 57:
                if inode > U64_TENTH or (inode == U64_TENTH and s[q] > 53):
                    k = 1
                else:
                    inode = inode * 10 + (s[q] - 48)
                q += 1
            if q == p or q - p > 20 or (q < eol and s[q] != 32) or k:
                return _fail(st, E_INODE, pos)
            while q < eol and s[q] == 32:
                q += 1
            if (vec_u64(&st.starts, start) or vec_u64(&st.ends, end) or vec_u64(&st.offsets, offset)
                    or vec_u64(&st.inodes, inode) or vec_u64(&st.devs, major << 32 | minor)
                    or vec_u64(&st.flags, 0) or vec_u64(&st.names, <uint64_t>q)
                    or vec_u64(&st.names, <uint64_t>(eol - q)) or vec_grow(&st.perms, 1)
                    or (offset == 0 and inode != 0 and vec_u64(&st.file_starts, <uint64_t>st.nrows))
                    or vec_grow(&st.fields, 8 * NF)):
                return _fail(st, E_NOMEM, pos)
            st.perms.data[st.perms.len] = <char>perms
            st.perms.len += 1
            row = <int64_t*>(st.fields.data + st.fields.len)
            memset(row, 0, 8 * NF)
            st.fields.len += 8 * NF
            st.nrows += 1
            size_seen = False
            expect = 0
        else:
            # ---- "Key: value" line
            p = pos
            while p < eol and is_keychar(s[p]):
                p += 1
            if p == pos or p >= eol or s[p] != 58:
                return _fail(st, E_UNRECOGNISED, pos)
            if st.nrows == 0:
                return _fail(st, E_BEFORE_HEADER, pos)
            k = p - pos
            if k == 7 and memcmp(s + pos, b"VmFlags", 7) == 0:
                if _vmflags(s, p + 1, eol, &v):
                    return _fail(st, E_VMFLAGS, pos)
                (<uint64_t*>(st.flags.data + st.flags.len - 8))[0] = v
            else:
                # The kernel prints keys in a fixed order: try the next
                # expected key first, then search.
                if not (expect < NF and _key_len[expect] == k and memcmp(_key_ptr[expect], s + pos, k) == 0):
                    expect = -1
                    for q in range(NF):
                        if _key_len[q] == k and memcmp(_key_ptr[q], s + pos, k) == 0:
                            expect = q
                            break
                unit = True
                if expect < 0:
                    for q in range(_n_unitless):
                        if _unitless_len[q] == k and memcmp(_unitless_ptr[q], s + pos, k) == 0:
                            unit = False
                            break
                rc = _value(s, p + 1, eol, unit, &value, False)
                if rc:
                    return _fail(st, rc, pos)
                if expect >= 0:
                    row[expect] = value
                    if expect == 0:
                        size_seen = True
                    expect += 1
                else:
                    expect = 0
        pos = eol + 1
    st.pos = pos
    st.expect = expect
    st.start = start
    st.end = end
    st.size_seen = size_seen
    return 0


cdef object _parse_result(Parse* st, const unsigned char* s, Py_ssize_t total):
    """The SmapsTable of a parse that reached the end of the text, or the
    ParseError to raise: a cut-off last line first (a read that ended early),
    then the first error."""
    cdef Py_ssize_t cut = _cut_at(s, total) if total else -1
    cdef const uint64_t* at
    cdef Py_ssize_t i, off, n, last_off = 0, last_len = -1
    cdef list names = []
    cdef dict cache = {}
    cdef str name, last = "", empty = ""
    cdef object raw
    if cut >= 0:
        return _parse_error("truncated line", cut)
    if st.err == E_NOMEM:
        raise MemoryError()
    if st.err:
        return _error_of(st.err, st.err_at)
    t = SmapsTable()
    if st.nrows == 0:
        return t
    if not st.size_seen:
        (<int64_t*>(st.fields.data + st.fields.len - 8 * NF))[0] = <int64_t>(st.end - st.start)
    # One str per distinct name: a run of mappings of one file shares it.
    at = <const uint64_t*>st.names.data
    for i in range(st.nrows):
        off = <Py_ssize_t>at[2 * i]
        n = <Py_ssize_t>at[2 * i + 1]
        if n == 0:
            name = empty
        elif n == last_len and memcmp(s + last_off, s + off, n) == 0:
            name = last
        else:
            raw = PyBytes_FromStringAndSize(<const char*>(s + off), n)
            name = cache.get(raw)
            if name is None:
                name = cache[raw] = PyUnicode_DecodeUTF8(<const char*>(s + off), n, "surrogateescape")
            last, last_off, last_len = name, off, n
        names.append(name)
    t.starts = vec_array(&st.starts, _Q)
    t.ends = vec_array(&st.ends, _Q)
    t.offsets = vec_array(&st.offsets, _Q)
    t.inodes = vec_array(&st.inodes, _Q)
    t.devs = vec_array(&st.devs, _Q)
    t.vmflags = vec_array(&st.flags, _Q)
    t.fields = vec_array(&st.fields, _q)
    t.file_starts = vec_array(&st.file_starts, _Q)
    t.perms = bytearray(st.perms.data[:st.perms.len])
    t.names = names
    return t


def parse_smaps(buf):
    """Parse /proc/PID/smaps, smaps_rollup or maps text into a SmapsTable."""
    cdef const unsigned char[::1] mv = buf
    cdef Py_ssize_t total = mv.shape[0]
    cdef const unsigned char* s
    cdef Parse st
    if total == 0:
        return SmapsTable()
    s = &mv[0]
    _check_complete(s, total)
    memset(&st, 0, sizeof(Parse))
    try:
        with nogil:
            _parse_lines(&st, s, total)
        result = _parse_result(&st, s, total)
    finally:
        _parse_free(&st)
    if isinstance(result, BaseException):
        raise result
    return result


def first_overlap(t):
    """Index of the first mapping that starts below the end of the one
    before it, or -1 (see ``engine.pure.first_overlap``)."""
    cdef const uint64_t[::1] starts = t.starts
    cdef const uint64_t[::1] ends = t.ends
    cdef Py_ssize_t i
    for i in range(1, starts.shape[0]):
        if starts[i] < ends[i - 1]:
            return i
    return -1


def parse_rollup(buf):
    """Parse /proc/PID/smaps_rollup (kernel 4.14+): one ``[rollup]`` record."""
    t = parse_smaps(buf)
    if len(t) != 1:
        raise ParseError("expected one rollup record", 0)
    return MemFields(*t.fields)


# ------------------------------------------------ reading and parsing at once
#
# The kernel produces smaps about 4 KiB per read() (seq_file), ~14 us each;
# the parse of those bytes takes ~1.3 us. A helper thread parses what has
# arrived while the caller's read() waits on the kernel, so that a scan costs
# the kernel's read plus the parse of the last piece only. The helper is one
# C thread per process, started on first use, that never touches Python
# objects; it sleeps on a futex between pieces.

cdef extern from *:
    """
    #include <pthread.h>
    #include <signal.h>
    #include <stdint.h>
    #include <unistd.h>
    #ifdef __linux__
    #include <linux/futex.h>
    #include <sys/syscall.h>
    #define MS_CAN_OVERLAP 1
    static void ms_wait(uint32_t *a, uint32_t v) { syscall(SYS_futex, a, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0); }
    static void ms_wake(uint32_t *a) { syscall(SYS_futex, a, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }
    #else
    #define MS_CAN_OVERLAP 0
    static void ms_wait(uint32_t *a, uint32_t v) { (void)a; (void)v; }
    static void ms_wake(uint32_t *a) { (void)a; }
    #endif
    #if defined(__x86_64__) || defined(__i386__)
    #define ms_pause() __builtin_ia32_pause()
    #else
    #define ms_pause() ((void)0)
    #endif
    #define ms_load32(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
    #define ms_loadz(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
    #define ms_store32(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
    #define ms_storez(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
    #define ms_add(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
    static int ms_cas(uint32_t *p, uint32_t expected, uint32_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    /* The helper thread: all signals blocked (they are the main thread's),
       a small stack (it parses only). */
    static int ms_start_thread(void *(*fn)(void *)) {
        pthread_t t;
        pthread_attr_t attr;
        sigset_t all, old;
        int rc;
        if (pthread_attr_init(&attr)) return -1;
        pthread_attr_setstacksize(&attr, 256 * 1024);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&t, &attr, fn, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        return rc ? -1 : 0;
    }
    """
    bint MS_CAN_OVERLAP
    void ms_wait(uint32_t* a, uint32_t v) nogil
    void ms_wake(uint32_t* a) nogil
    void ms_pause() nogil
    uint32_t ms_load32(uint32_t* p) nogil
    Py_ssize_t ms_loadz(Py_ssize_t* p) nogil
    void ms_store32(uint32_t* p, uint32_t v) nogil
    void ms_storez(Py_ssize_t* p, Py_ssize_t v) nogil
    uint32_t ms_add(uint32_t* p, uint32_t v) nogil
    bint ms_cas(uint32_t* p, uint32_t expected, uint32_t desired) nogil
    int ms_start_thread(void* (*fn)(void*) noexcept nogil)

from posix.unistd cimport getpid


# Who may parse the text that has arrived: nobody is parsing (FREE), the
# helper is parsing a piece (HELPER), the reader has taken the rest (READER).
cdef enum:
    FREE, HELPER, READER

cdef struct Helper:
    uint32_t go            # futex word: bumped when the helper has something new
    uint32_t token         # futex word: FREE, HELPER or READER
    uint32_t sleeping      # the helper waits on go
    uint32_t waiting       # the reader waits on token
    uint32_t busy          # a reader has the helper (one job at a time)
    Py_ssize_t avail       # the text the helper may parse ends here (a line end)
    const unsigned char* s
    Parse* st

cdef Helper _h
cdef int _h_pid = 0        # the process the helper runs in: a fork's child has none


cdef void* _helper_main(void* arg) noexcept nogil:
    cdef uint32_t go
    cdef Py_ssize_t lim, seen = 0
    while True:
        go = ms_load32(&_h.go)
        if ms_cas(&_h.token, FREE, HELPER):
            lim = ms_loadz(&_h.avail)
            seen = lim
            if _h.st.pos < lim and _h.st.err == E_NONE:
                _parse_lines(_h.st, _h.s, lim)
            ms_store32(&_h.token, FREE)
            if ms_load32(&_h.waiting):
                ms_wake(&_h.token)
        # Sleep until the reader has more, checking once more after saying
        # so (the reader checks ``sleeping`` after it publishes).
        ms_store32(&_h.sleeping, 1)
        if ms_load32(&_h.go) == go and (ms_load32(&_h.token) == READER or ms_loadz(&_h.avail) == seen):
            ms_wait(&_h.go, go)
        ms_store32(&_h.sleeping, 0)
    return NULL


cdef bint _take_helper() noexcept:
    """The helper for one read, started if this process has none yet;
    False if it is in use by another thread or cannot be started."""
    global _h_pid
    cdef int pid = getpid()
    if _h_pid != pid:
        memset(&_h, 0, sizeof(Helper))
        _h.token = READER
        if ms_start_thread(_helper_main) != 0:
            return False
        _h_pid = pid
    return ms_cas(&_h.busy, 0, 1)


cdef void _publish(Py_ssize_t avail) noexcept nogil:
    ms_storez(&_h.avail, avail)
    if ms_load32(&_h.sleeping):
        ms_add(&_h.go, 1)
        ms_wake(&_h.go)


cdef void _take_back() noexcept nogil:
    """The rest of the parse is the reader's: waits for a piece the helper
    is parsing (it is short) to end."""
    cdef int i
    for i in range(1000):
        if ms_cas(&_h.token, FREE, READER) or ms_load32(&_h.token) == READER:
            return
        ms_pause()
    ms_store32(&_h.waiting, 1)
    while not (ms_cas(&_h.token, FREE, READER) or ms_load32(&_h.token) == READER):
        ms_wait(&_h.token, HELPER)
    ms_store32(&_h.waiting, 0)


cdef void _give_back() noexcept nogil:
    """The helper free for the next read, the rest of this one the reader's."""
    _take_back()
    ms_store32(&_h.busy, 0)


cdef Py_ssize_t _line_end(const unsigned char* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """One past the last newline in [lo, hi), or lo if there is none."""
    while hi > lo and s[hi - 1] != 10:
        hi -= 1
    return hi


def read_parse_smaps(int fd, bytearray buf, Py_ssize_t piece=0):
    """read_all then parse_smaps, in one pass (see ``engine.pure.read_parse_smaps``):
    (length, SmapsTable) or (length, ParseError). With ``piece`` > 0 the text
    is handed to a helper thread to parse each time ``piece`` more bytes
    arrived, while the kernel produces the rest."""
    cdef Py_ssize_t n = 0, got, given = 0, end
    cdef const unsigned char* p
    cdef Parse st
    cdef bint helped = False
    memset(&st, 0, sizeof(Parse))
    try:
        _rewind(fd, buf)
        if piece > 0 and MS_CAN_OVERLAP and _take_helper():
            helped = True
            _h.st = &st
            _h.s = <const unsigned char*>PyByteArray_AS_STRING(buf)
            ms_storez(&_h.avail, 0)
            ms_store32(&_h.token, FREE)  # the helper wakes at the first piece
        while True:
            if helped and n == len(buf):
                # The buffer moves when it grows: the rest is parsed here.
                with nogil:
                    _give_back()
                helped = False
            got = _read_at(fd, buf, n)
            if got == 0:
                break
            n += got
            if helped and n - given >= piece:
                end = _line_end(<const unsigned char*>PyByteArray_AS_STRING(buf), given, n)
                if end > given:
                    given = end
                    _publish(end)
        if helped:
            with nogil:
                _give_back()
            helped = False
        if n == 0:
            return 0, SmapsTable()
        p = <const unsigned char*>PyByteArray_AS_STRING(buf)
        end = _line_end(p, st.pos, n)
        with nogil:
            _parse_lines(&st, p, end)
        return n, _parse_result(&st, p, n)
    finally:
        if helped:
            with nogil:
                _give_back()
        _parse_free(&st)


__all__ += ["read_parse_smaps"]


cdef dict _STATUS_KB_KEYS = {k.decode(): v for k, v in _STATUS_KB.items()}
cdef dict _STATUS_INT_KEYS = {k.decode(): v for k, v in _STATUS_INT.items()}


def parse_status(buf):
    """Parse /proc/PID/status. Absent numeric lines are -1."""
    cdef const unsigned char[::1] mv = buf
    cdef Py_ssize_t total = mv.shape[0], pos = 0, eol, colon, q, r
    cdef const unsigned char* s
    cdef int64_t value
    cdef uint64_t v
    cdef int rc
    cdef list out = ["", ""] + [-1] * 17
    cdef str key
    if total == 0:
        raise _parse_error("empty status", 0)
    s = &mv[0]
    _check_complete(s, total)
    while pos < total:
        eol = <Py_ssize_t>(<const unsigned char*>memchr(s + pos, 10, total - pos) - s)
        colon = pos
        while colon < eol and s[colon] != 58:
            colon += 1
        if colon == pos or colon == eol:
            raise _parse_error("unrecognised line", pos)
        key = PyUnicode_DecodeUTF8(<const char*>(s + pos), colon - pos, "surrogateescape")
        q = colon + 1
        if key == "Name" or key == "State":
            while q < eol and (s[q] == 9 or s[q] == 32):
                q += 1
            if key == "Name":
                out[0] = PyUnicode_DecodeUTF8(<const char*>(s + q), eol - q, "surrogateescape")
            else:
                out[1] = PyUnicode_DecodeUTF8(<const char*>(s + q), 1 if eol > q else 0, "surrogateescape")
        elif key in _STATUS_KB_KEYS:
            rc = _value(s, q, eol, True, &value, True)
            if rc:
                raise _error_of(rc, pos)
            out[_STATUS_KB_KEYS[key]] = value
        elif key in _STATUS_INT_KEYS:
            # "Uid:\t0\t0\t0\t0": the real id comes first.
            while q < eol and (s[q] == 9 or s[q] == 32):
                q += 1
            r = q
            v = 0
            while r < eol and 48 <= s[r] <= 57:
                if r - q < 19:  # more digits are an error: 19 fit in 64 bits
                    v = v * 10 + (s[r] - 48)
                r += 1
            if r == q or r - q > 19 or (r < eol and s[r] != 9):
                raise _parse_error("bad value", pos)
            if v > <uint64_t>MAX_I64:
                raise _parse_error("value out of range", pos)
            out[_STATUS_INT_KEYS[key]] = <int64_t>v
        pos = eol + 1
    if out[2] == -1:
        raise _parse_error("no Tgid line", 0)
    return Status(*out)


# -------------------------------------------------------------- layout tier

cdef inline bint _plain_anon(const unsigned char[::1] perms, const uint64_t[::1] inodes,
                             list names, Py_ssize_t i) noexcept:
    # Unnamed, private, not a file; rw-p or ---p (no exec).
    return not (perms[i] & ~(PERM_R | PERM_W)) and inodes[i] == 0 and not names[i]


def classify(t, ctx):
    """The layout tier: one category per mapping (see ``engine.pure.classify``)."""
    cdef Py_ssize_t n = len(t), i, j, k = 0, niv
    cdef const uint64_t[::1] starts = t.starts
    cdef const uint64_t[::1] ends = t.ends
    cdef const uint64_t[::1] inodes = t.inodes
    cdef const uint64_t[::1] devs = t.devs
    cdef const uint64_t[::1] flags = t.vmflags
    cdef const unsigned char[::1] perms = t.perms
    cdef list names = t.names
    cdef bytearray out = bytearray(n)
    cdef bytearray arena_b = bytearray(n)
    cdef unsigned char[::1] cats
    cdef unsigned char[::1] arena
    cdef uint64_t s, size, guard
    cdef bint go = ctx.go, go_only = ctx.go_only, jemalloc = ctx.jemalloc
    cdef uint64_t stack_size = ctx.stack_size
    cdef unsigned char rw = PERM_R | PERM_W
    cdef unsigned char p
    cdef list iv = list(ctx.intervals)
    cdef object name, last_name = None
    cdef int c, last_cat = 0
    cdef unsigned char last_shared = 0
    cdef uint64_t last_inode = 0, last_dev = 0
    cdef bint below, above
    niv = len(iv)
    cdef uint64_t[::1] iv_start = _array_mod.array("Q", [x[0] for x in iv] or [0])
    cdef uint64_t[::1] iv_end = _array_mod.array("Q", [x[1] for x in iv] or [0])
    cdef unsigned char[::1] iv_cat = bytearray([x[2] for x in iv] or [0])
    if n == 0:
        return out
    cats = out
    arena = arena_b

    # Go heap arenas: runs of plain anonymous mappings, 64 MiB aligned at both
    # ends, below 2^46, without MAP_NORESERVE.
    if go:
        i = 0
        while i < n:
            if not _plain_anon(perms, inodes, names, i) or flags[i] & VM_NR:
                i += 1
                continue
            j = i
            while (j + 1 < n and starts[j + 1] == ends[j] and _plain_anon(perms, inodes, names, j + 1)
                   and not flags[j + 1] & VM_NR):
                j += 1
            if starts[i] % ARENA == 0 and ends[j] % ARENA == 0 and ends[j] <= GO_HEAP_LIMIT:
                for k in range(i, j + 1):
                    arena[k] = 1
            i = j + 1
        k = 0

    # state: 1 = an anonymous mapping left for the structural rules, 2 = one
    # they left for the Go runtime rules.
    cdef bytearray state_b = bytearray(n)
    cdef unsigned char[::1] state = state_b
    cdef bint any_pending = False
    for i in range(n):
        s = starts[i]
        while k < niv and iv_end[k] <= s:
            k += 1
        name = names[i]
        if not name and inodes[i] == 0:
            if k < niv and iv_start[k] <= s:
                cats[i] = iv_cat[k]
            elif perms[i] & PERM_S:
                cats[i] = SHMEM
            elif arena[i]:
                cats[i] = GO_HEAP
            else:
                cats[i] = ANON_OTHER
                state[i] = 1
                any_pending = True
            continue
        if not name:
            cats[i] = MAPPED_FILES
            continue
        # Named mappings: the rules on names live once, in layout.rules; consecutive
        # mappings of one file ask once.
        if name is last_name and (perms[i] & PERM_S) == last_shared and inodes[i] == last_inode and devs[i] == last_dev:
            c = last_cat
        else:
            c = by_name(name, perms[i], inodes[i], devs[i], ctx)
            last_name, last_shared, last_inode, last_dev, last_cat = name, perms[i] & PERM_S, inodes[i], devs[i], c
        cats[i] = ANON_OTHER if c < 0 else c
    if not any_pending:
        return out

    for i in range(n):
        if state[i] != 1:
            continue
        size = ends[i] - starts[i]
        p = perms[i]
        if (p == rw and i > 0 and cats[i - 1] == ANON_OTHER and ends[i - 1] == starts[i]
                and perms[i - 1] == 0 and not names[i - 1] and inodes[i - 1] == 0):
            guard = ends[i - 1] - starts[i - 1]
            if size == stack_size or (flags[i] & VM_NH and guard <= GUARD_MAX and size <= stack_size):
                cats[i] = THREAD_STACKS
                if guard <= GUARD_MAX:
                    cats[i - 1] = THREAD_STACKS
                continue
        if p == rw and starts[i] % ARENA == 0:
            if size == ARENA:
                cats[i] = C_MALLOC
                continue
            j = i + 1
            if (j < n and starts[j] == ends[i] and perms[j] == 0 and cats[j] == ANON_OTHER
                    and not names[j] and inodes[j] == 0 and ends[j] - starts[i] == ARENA):
                cats[i] = C_MALLOC
                cats[j] = C_MALLOC
                continue
        if jemalloc and p == rw and flags[i] & VM_NR:
            cats[i] = C_MALLOC
            continue
        state[i] = 2
    if not go:
        return out
    for i in range(n):
        if state[i] != 2 or cats[i] != ANON_OTHER:
            continue
        if go_only:
            cats[i] = GO_RUNTIME
        elif perms[i] == 0 and ends[i] - starts[i] >= ARENA:
            cats[i] = GO_RUNTIME
    for i in range(n):
        if state[i] != 2 or cats[i] != ANON_OTHER or perms[i] != rw:
            continue
        below = i > 0 and ends[i - 1] == starts[i] and cats[i - 1] == GO_RUNTIME and perms[i - 1] == 0
        above = i + 1 < n and starts[i + 1] == ends[i] and cats[i + 1] == GO_RUNTIME and perms[i + 1] == 0
        if below or above or flags[i] & VM_NH:
            cats[i] = GO_RUNTIME
    return out


# Offsets of the fields accumulate() reads, in SMAPS_KEYS.
cdef Py_ssize_t F_SIZE = SMAPS_KEYS.index("Size"), F_RSS = SMAPS_KEYS.index("Rss")
cdef Py_ssize_t F_PSS = SMAPS_KEYS.index("Pss"), F_PC = SMAPS_KEYS.index("Private_Clean")
cdef Py_ssize_t F_PD = SMAPS_KEYS.index("Private_Dirty"), F_SC = SMAPS_KEYS.index("Shared_Clean")
cdef Py_ssize_t F_SD = SMAPS_KEYS.index("Shared_Dirty"), F_ANON = SMAPS_KEYS.index("Anonymous")
cdef Py_ssize_t F_SWAP = SMAPS_KEYS.index("Swap"), F_LAZY = SMAPS_KEYS.index("LazyFree")
cdef Py_ssize_t F_HUGE = SMAPS_KEYS.index("AnonHugePages")


cdef inline bint _add(int64_t* acc, int64_t x) noexcept nogil:
    """acc += x; True when the sum does not fit in 64 bits."""
    return __builtin_add_overflow(acc[0], x, acc)


def accumulate(t, cats):
    """Sum each mapping into its category: (10 + 1) x 9 ints, the total last."""
    cdef const int64_t[::1] f = t.fields
    cdef const unsigned char[::1] c = cats
    cdef Py_ssize_t n = len(t), i, b, r, j
    cdef int64_t out[(NCAT + 1) * NCOUNT]
    cdef bint over = False
    memset(out, 0, sizeof(out))
    for i in range(n):
        r = i * NF
        for j in range(2):
            b = (c[i] if j == 0 else NCAT) * NCOUNT
            over |= _add(&out[b], f[r + F_SIZE])
            over |= _add(&out[b + 1], f[r + F_RSS])
            over |= _add(&out[b + 2], f[r + F_PSS])
            over |= _add(&out[b + 3], f[r + F_PC]) | _add(&out[b + 3], f[r + F_PD])
            over |= _add(&out[b + 4], f[r + F_SC]) | _add(&out[b + 4], f[r + F_SD])
            over |= _add(&out[b + 5], f[r + F_ANON])
            over |= _add(&out[b + 6], f[r + F_SWAP])
            over |= _add(&out[b + 7], f[r + F_LAZY])
            over |= _add(&out[b + 8], f[r + F_HUGE])
    if over:
        # Sums beyond 2^63 bytes: only forged text has them (user address
        # space is 2^57 at most); Python's ints give the exact figures.
        return _exact_accumulate(t, cats)
    return [out[i] for i in range((NCAT + 1) * NCOUNT)]


# ------------------------------------------------------------------ pagemap
#
# page_counts: the steps, and why, are described in engine.pure (the specification):
# PAGEMAP_SCAN for present/swapped/zero runs, pread of pagemap over the
# present non-zero runs for bit 56; pread of whole ranges without the ioctl.

from libc.errno cimport errno, EINTR, EINVAL, EIO, ENOTTY, ESRCH
from posix.unistd cimport pread
from cpython.mem cimport PyMem_Malloc


cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)


# include/uapi/linux/fs.h (6.7+), declared by hand as older headers lack it.
cdef struct page_region:
    uint64_t start
    uint64_t end           # exclusive
    uint64_t categories

cdef struct pm_scan_arg:
    uint64_t size
    uint64_t flags
    uint64_t start
    uint64_t end
    uint64_t walk_end      # out: where the walk stopped (may be stale, see engine.pure)
    uint64_t vec
    uint64_t vec_len
    uint64_t max_pages
    uint64_t category_inverted
    uint64_t category_mask
    uint64_t category_anyof_mask
    uint64_t return_mask

# One present, non-zero piece of a range, in pages.
cdef struct PmSeg:
    uint64_t start
    uint64_t end
    Py_ssize_t k

from os import strerror as os_strerror

from .engine import pure
from .engine.pure import zero_pfns
from .kernel import linux

cdef unsigned long PM_SCAN_NR = linux.PAGEMAP_SCAN
cdef uint64_t PG_PRESENT = linux.PAGE_IS_PRESENT
cdef uint64_t PG_SWAPPED = linux.PAGE_IS_SWAPPED
cdef uint64_t PG_PFNZERO = linux.PAGE_IS_PFNZERO
cdef uint64_t PM_BIT_PRESENT = linux.PM_PRESENT
cdef uint64_t PM_BIT_SWAPPED = linux.PM_SWAPPED
cdef uint64_t PM_BIT_EXCL = linux.PM_EXCLUSIVE
cdef uint64_t PM_PFN = linux.PM_PFN_MASK
cdef Py_ssize_t PM_VEC_LEN = pure.SCAN_VEC_LEN
cdef uint64_t PM_SCAN_GAP = pure._SCAN_GAP
cdef uint64_t PM_READ_GAP = pure._READ_GAP
cdef Py_ssize_t PM_READ_BYTES = pure._READ_BYTES
cdef bint _scan_unsupported = False
_RANGES_MSG = "ranges must be sorted, non-overlapping, page-aligned (start, end) pairs"

if sizeof(pm_scan_arg) != linux.PM_SCAN_ARG_SIZE or sizeof(page_region) != 24:
    raise ImportError("memscan._fast: struct pm_scan_arg has the wrong size")


cdef uint64_t* _pm_ranges(ranges, Py_ssize_t* count) except NULL:
    """The ranges as 2n page numbers (start, end), checked like engine.pure._check_ranges."""
    cdef Py_ssize_t n = len(ranges), i
    cdef uint64_t* r = <uint64_t*>PyMem_Malloc(16 * n + 16)
    cdef uint64_t prev = 0, s, e
    if r == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            ps, pe = ranges[i]
            if ps < 0 or pe < 0 or pe >= 1 << 64 or ps > pe:
                raise ValueError(_RANGES_MSG)
            s = ps
            e = pe
            if s & 4095 or e & 4095 or s > e or s < prev:
                raise ValueError(_RANGES_MSG)
            prev = e
            r[2 * i] = s >> 12
            r[2 * i + 1] = e >> 12
    except BaseException:
        PyMem_Free(r)
        raise
    count[0] = n
    return r


cdef int _pm_fill(int fd, uint64_t* buf, uint64_t first, uint64_t npages, int* err) noexcept nogil:
    """pread the entries of pages [first, first + npages): 0, or -1 with
    ``err`` = errno, or -2 when a read returned 0 bytes (the target exited)."""
    cdef char* p = <char*>buf
    cdef size_t want = npages * 8, got = 0
    cdef ssize_t r
    while got < want:
        r = pread(fd, p + got, want - got, <long long>(first * 8 + got))
        if r < 0:
            if errno == EINTR:
                continue
            err[0] = errno
            return -1
        if r == 0:
            return -2
        got += r
    return 0


cdef int _pm_read_segs(int fd, const PmSeg* segs, Py_ssize_t nseg, int64_t* out, bint full,
                       uint64_t zero, uint64_t hz_lo, uint64_t hz_hi) except -1:
    """Read the entries of ``segs`` (sorted, disjoint) and count them into
    ``out``: with ``full``, all four counts (zero pages by PFN when ``zero``
    is known), else only exclusive ones. Nearby segments share a read; with
    none, the entry of address 0 is read (see ``engine.pure._read_segments``)."""
    cdef Py_ssize_t per_read = PM_READ_BYTES // 8, i = 0, j
    cdef uint64_t* buf
    cdef uint64_t lo = 0, hi = 0, s, e, fill, b, q, v, pfn
    cdef int64_t* o
    cdef int64_t npres, nswap, nexcl, nzero
    cdef int rc = 0, err = 0
    buf = <uint64_t*>PyMem_Malloc(PM_READ_BYTES)
    if buf == NULL:
        raise MemoryError()
    if nseg == 0:
        # Nothing to read: still prove the target's memory outlived the
        # scans (PAGEMAP_SCAN finds nothing, not ESRCH, once it is gone).
        rc = _pm_fill(fd, buf, 0, 1, &err)
    with nogil:
        while i < nseg and rc == 0:
            s = segs[i].start
            e = segs[i].end
            o = out + 4 * segs[i].k
            while s < e:
                if not (lo <= s < hi):
                    fill = e
                    j = i + 1
                    while fill < s + per_read and j < nseg and segs[j].start - fill <= PM_READ_GAP:
                        fill = segs[j].end
                        j += 1
                    if fill > s + per_read:
                        fill = s + per_read
                    rc = _pm_fill(fd, buf, s, fill - s, &err)
                    if rc != 0:
                        break
                    lo = s
                    hi = fill
                b = e if e < hi else hi
                npres = nswap = nexcl = nzero = 0
                if full:
                    for q in range(s - lo, b - lo):
                        v = buf[q]
                        if v & PM_BIT_SWAPPED:
                            nswap += 1
                        if v & PM_BIT_PRESENT:
                            npres += 1
                            pfn = v & PM_PFN
                            if zero and (pfn == zero or (hz_lo <= pfn < hz_hi)):
                                nzero += 1
                            elif v & PM_BIT_EXCL:
                                nexcl += 1
                    o[0] += npres
                    o[1] += nswap
                    o[3] += nzero
                else:
                    for q in range(s - lo, b - lo):
                        nexcl += (buf[q] >> 56 & 0x81) == 0x81
                o[2] += nexcl
                s = b
            i += 1
    PyMem_Free(buf)
    if rc == -2:
        raise ProcessLookupError(ESRCH, "pagemap read 0 bytes: the process exited")
    if rc == -1:
        raise OSError(err, os_strerror(err))
    return 0


cdef int _pm_seg_push(Vec* v, uint64_t s, uint64_t e, Py_ssize_t k) except -1:
    cdef PmSeg* g
    vec_reserve(v, sizeof(PmSeg))
    g = <PmSeg*>(v.data + v.len)
    g.start = s
    g.end = e
    g.k = k
    v.len += sizeof(PmSeg)
    return 0


cdef int _pm_scan(int fd, const uint64_t* rng, Py_ssize_t n, int64_t* out,
                  const unsigned char* private, Py_ssize_t nprivate) except -1:
    """page_counts by PAGEMAP_SCAN (+ pread for bit 56 outside the private
    ranges). Returns 0, or ENOTTY or EINVAL when the kernel has no
    PAGEMAP_SCAN; raises other errors."""
    cdef page_region* vec = <page_region*>PyMem_Malloc(PM_VEC_LEN * sizeof(page_region))
    cdef pm_scan_arg arg
    cdef Vec segs
    cdef Py_ssize_t i = 0, j, k, r, last
    cdef uint64_t pos, span_end, rs, re, cat, a, b, nxt, npg
    cdef int ret, err
    if vec == NULL:
        raise MemoryError()
    memset(&segs, 0, sizeof(Vec))
    try:
        while i < n:
            last = i + 1
            while last < n and rng[2 * last] - rng[2 * last - 1] <= PM_SCAN_GAP:
                last += 1
            pos = rng[2 * i] << 12
            span_end = rng[2 * last - 1] << 12
            k = i
            while pos < span_end:
                memset(&arg, 0, sizeof(arg))
                arg.size = sizeof(arg)
                arg.start = pos
                arg.end = span_end
                arg.vec = <uint64_t>vec
                arg.vec_len = PM_VEC_LEN
                arg.category_anyof_mask = PG_PRESENT | PG_SWAPPED
                arg.return_mask = PG_PRESENT | PG_SWAPPED | PG_PFNZERO
                with nogil:
                    ret = ioctl(fd, PM_SCAN_NR, &arg)
                    err = errno
                if ret < 0:
                    if err == ENOTTY or err == EINVAL:
                        return err
                    raise OSError(err, os_strerror(err))
                for r in range(ret):
                    rs = vec[r].start >> 12
                    re = vec[r].end >> 12
                    cat = vec[r].categories
                    if rs < pos >> 12:
                        rs = pos >> 12
                    if re > span_end >> 12:
                        re = span_end >> 12
                    while k < last and rng[2 * k + 1] <= rs:
                        k += 1
                    j = k
                    while j < last and rng[2 * j] < re:
                        a = rs if rs > rng[2 * j] else rng[2 * j]
                        b = re if re < rng[2 * j + 1] else rng[2 * j + 1]
                        if a < b:
                            npg = b - a
                            if cat & PG_PRESENT:
                                out[4 * j] += npg
                                if cat & PG_PFNZERO:
                                    out[4 * j + 3] += npg
                                elif j < nprivate and private[j]:
                                    out[4 * j + 2] += npg
                                else:
                                    _pm_seg_push(&segs, a, b, j)
                            elif cat & PG_SWAPPED:
                                out[4 * j + 1] += npg
                        j += 1
                if ret < PM_VEC_LEN:
                    break
                # A full vector: go on after what was returned (walk_end alone may be stale).
                nxt = arg.walk_end if arg.walk_end > vec[ret - 1].end else vec[ret - 1].end
                if nxt <= pos:
                    raise OSError(EIO, "PAGEMAP_SCAN made no progress")
                pos = nxt
            i = last
        _pm_read_segs(fd, <PmSeg*>segs.data, segs.len // <Py_ssize_t>sizeof(PmSeg), out, False, 0, 0, 0)
        return 0
    finally:
        PyMem_Free(vec)
        free(segs.data)


def page_counts(int fd, ranges, const unsigned char[:] private=None):
    """Page counts of address ranges of a process from its pagemap fd: 4 ints
    per range, present, swapped, exclusive, zero (see ``engine.pure.page_counts``)."""
    return _page_counts(fd, ranges, True, private)


cdef list _page_counts(int fd, ranges, bint try_scan, const unsigned char[:] private=None):
    global _scan_unsupported
    cdef Py_ssize_t n = 0, i
    cdef uint64_t* rng = _pm_ranges(ranges, &n)
    cdef int64_t* out = NULL
    cdef int rc = ENOTTY
    if n == 0:
        PyMem_Free(rng)
        return []
    try:
        out = <int64_t*>PyMem_Malloc(32 * n + 32)
        if out == NULL:
            raise MemoryError()
        memset(out, 0, 32 * n)
        if try_scan and not _scan_unsupported:
            if private is None or private.shape[0] == 0:
                rc = _pm_scan(fd, rng, n, out, NULL, 0)
            else:
                rc = _pm_scan(fd, rng, n, out, &private[0], private.shape[0])
            if rc == ENOTTY:
                _scan_unsupported = True
        if rc != 0:
            memset(out, 0, 32 * n)
            _pm_pread_ranges(fd, rng, n, out)
        return [out[i] for i in range(4 * n)]
    finally:
        PyMem_Free(rng)
        PyMem_Free(out)


cdef int _pm_pread_ranges(int fd, const uint64_t* rng, Py_ssize_t n, int64_t* out) except -1:
    cdef Vec segs
    cdef Py_ssize_t i
    zero, hz_lo, hz_hi = pure.zero_pfns()
    memset(&segs, 0, sizeof(Vec))
    try:
        for i in range(n):
            if rng[2 * i] < rng[2 * i + 1]:
                _pm_seg_push(&segs, rng[2 * i], rng[2 * i + 1], i)
        _pm_read_segs(fd, <PmSeg*>segs.data, segs.len // <Py_ssize_t>sizeof(PmSeg), out, True, zero, hz_lo, hz_hi)
    finally:
        free(segs.data)
    return 0


def page_counts_pread(int fd, ranges):
    """page_counts by pread of pagemap alone (see ``engine.pure.page_counts_pread``)."""
    return _page_counts(fd, ranges, False)


__all__ += ["page_counts", "page_counts_pread", "zero_pfns"]
