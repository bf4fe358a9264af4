# Growable vectors in C memory: the rows of a parse, built without the GIL.

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
