# Page counting: the loops over what PAGEMAP_SCAN and pagemap returned
# (engine.pure.pages is the specification; memscan.kernel.pagemap reads).

cdef uint64_t PG_PRESENT = linux.PAGE_IS_PRESENT
cdef uint64_t PG_SWAPPED = linux.PAGE_IS_SWAPPED
cdef uint64_t PG_PFNZERO = linux.PAGE_IS_PFNZERO
cdef uint64_t PM_BIT_PRESENT = linux.PM_PRESENT
cdef uint64_t PM_BIT_SWAPPED = linux.PM_SWAPPED
cdef uint64_t PM_BIT_EXCL = linux.PM_EXCLUSIVE
cdef uint64_t PM_PFN = linux.PM_PFN_MASK
cdef int PG_SHIFT = linux.PAGE_SHIFT
cdef uint64_t PG_MASK = (1 << linux.PAGE_SHIFT) - 1


def page_ranges(ranges):
    """Sorted, non-overlapping, page-aligned (start, end) address pairs as
    page numbers, 2 per range (ValueError for anything else)."""
    cdef Py_ssize_t n = len(ranges), i
    cdef array.array out = array.clone(_Q, 2 * n, False)
    cdef uint64_t* r = <uint64_t*>out.data.as_voidptr
    cdef uint64_t prev = 0, s, e
    for i in range(n):
        ps, pe = ranges[i]
        if ps < 0 or pe < 0 or pe >= 1 << 64 or ps > pe:
            raise ValueError(PAGE_RANGES_ERROR)
        s = ps
        e = pe
        if s & PG_MASK or e & PG_MASK or s < prev:
            raise ValueError(PAGE_RANGES_ERROR)
        prev = e
        r[2 * i] = s >> PG_SHIFT
        r[2 * i + 1] = e >> PG_SHIFT
    return out


def scan_spans(const uint64_t[::1] rng, uint64_t gap):
    """Index intervals [i, j) of ranges whose gaps are at most ``gap`` pages, 2 per span."""
    cdef Py_ssize_t n = rng.shape[0] // 2, i = 0, j
    cdef Vec v
    memset(&v, 0, sizeof(Vec))
    try:
        while i < n:
            j = i + 1
            while j < n and rng[2 * j] - rng[2 * j - 1] <= gap:
                j += 1
            vec_reserve(&v, 16)
            vec_u64(&v, i)
            vec_u64(&v, j)
            i = j
        return vec_array(&v, _Q)
    finally:
        free(v.data)


def count_regions(const uint64_t[::1] words, const uint64_t[::1] rng, Py_ssize_t first, Py_ssize_t last,
                  const unsigned char[:] private, int64_t[::1] out, array.array segs):
    """Count the PAGEMAP_SCAN regions ``words`` of the span of ranges [first,
    last) into ``out``; present non-zero pieces outside ``private`` ranges
    go to ``segs`` (start page, end page, range index)."""
    cdef Py_ssize_t nwords = words.shape[0], r, j, k = first, nprivate = private.shape[0]
    cdef uint64_t span_lo = rng[2 * first], span_hi = rng[2 * last - 1], rs, re, cat, a, b, n
    cdef Vec v
    cdef int nomem = 0
    memset(&v, 0, sizeof(Vec))
    try:
        with nogil:
            for r in range(0, nwords - 2, 3):
                rs = words[r] >> PG_SHIFT
                re = words[r + 1] >> PG_SHIFT
                cat = words[r + 2]
                if rs < span_lo:
                    rs = span_lo
                if re > span_hi:
                    re = span_hi
                while k < last and rng[2 * k + 1] <= rs:
                    k += 1
                j = k
                while j < last and rng[2 * j] < re:
                    a = rs if rs > rng[2 * j] else rng[2 * j]
                    b = re if re < rng[2 * j + 1] else rng[2 * j + 1]
                    if a < b:
                        n = b - a
                        if cat & PG_PRESENT:
                            out[4 * j] += n
                            if cat & PG_PFNZERO:
                                out[4 * j + 3] += n
                            elif j < nprivate and private[j]:
                                out[4 * j + 2] += n
                            else:
                                nomem |= vec_u64(&v, a) | vec_u64(&v, b) | vec_u64(&v, <uint64_t>j)
                        elif cat & PG_SWAPPED:
                            out[4 * j + 1] += n
                    j += 1
        if nomem:
            raise MemoryError()
        if v.len:
            array.extend_buffer(segs, v.data, v.len // 8)
    finally:
        free(v.data)


def read_plan(const uint64_t[::1] segs, uint64_t per_read, uint64_t gap):
    """The preads of pagemap that cover ``segs``, 3 words per read: first
    page, end page, index of the first segment in it."""
    cdef Py_ssize_t nseg = segs.shape[0] // 3, i, j
    cdef uint64_t lo = 0, hi = 0, s, e, fill
    cdef Vec v
    memset(&v, 0, sizeof(Vec))
    try:
        for i in range(nseg):
            s = segs[3 * i]
            e = segs[3 * i + 1]
            while s < e:
                if not (lo <= s < hi):
                    fill = e
                    j = i + 1
                    while fill < s + per_read and j < nseg and segs[3 * j] - fill <= gap:
                        fill = segs[3 * j + 1]
                        j += 1
                    lo = s
                    hi = fill if fill < s + per_read else s + per_read
                    vec_reserve(&v, 24)
                    vec_u64(&v, lo)
                    vec_u64(&v, hi)
                    vec_u64(&v, <uint64_t>i)
                s = e if e < hi else hi
        return vec_array(&v, _Q)
    finally:
        free(v.data)


def count_exclusive(const unsigned char[::1] entries, uint64_t first, const uint64_t[::1] segs, Py_ssize_t i,
                    int64_t[::1] out):
    """Count the present exclusive entries (bits 63 and 56) among
    ``entries``, pagemap from page ``first``, into the ranges of the
    segments from index ``i`` on that lie in it."""
    cdef const uint64_t* e = <const uint64_t*>&entries[0] if entries.shape[0] else NULL
    cdef uint64_t end = first + <uint64_t>(entries.shape[0] // 8), a, b, q
    cdef Py_ssize_t nseg = segs.shape[0] // 3
    cdef int64_t nexcl
    with nogil:
        while i < nseg and segs[3 * i] < end:
            a = segs[3 * i] if segs[3 * i] > first else first
            b = segs[3 * i + 1] if segs[3 * i + 1] < end else end
            nexcl = 0
            for q in range(a - first, b - first if b > a else a - first):
                nexcl += (e[q] >> 56 & 0x81) == 0x81
            out[4 * segs[3 * i + 2] + 2] += nexcl
            i += 1


def count_entries(const unsigned char[::1] entries, uint64_t first, const uint64_t[::1] segs, Py_ssize_t i,
                  int64_t[::1] out, zero_pfns):
    """As count_exclusive, all four counts; zero pages told by PFN
    (``zero_pfns``), none when the zero page's PFN is 0 (unknown)."""
    cdef const uint64_t* e = <const uint64_t*>&entries[0] if entries.shape[0] else NULL
    cdef uint64_t end = first + <uint64_t>(entries.shape[0] // 8), a, b, q, v, pfn
    cdef uint64_t zero = zero_pfns[0], hz_lo = zero_pfns[1], hz_hi = zero_pfns[2]
    cdef Py_ssize_t nseg = segs.shape[0] // 3
    cdef int64_t* o
    cdef int64_t npres, nswap, nexcl, nzero
    with nogil:
        while i < nseg and segs[3 * i] < end:
            a = segs[3 * i] if segs[3 * i] > first else first
            b = segs[3 * i + 1] if segs[3 * i + 1] < end else end
            o = &out[4 * segs[3 * i + 2]]
            npres = nswap = nexcl = nzero = 0
            for q in range(a - first, b - first if b > a else a - first):
                v = e[q]
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
            o[2] += nexcl
            o[3] += nzero
            i += 1
