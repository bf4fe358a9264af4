# The smaps parser: /proc/PID/smaps, smaps_rollup and maps text into a
# SmapsTable (engine.pure.smaps is the specification). It runs without the
# GIL, on the reading thread or its helper (read.pxi).

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
