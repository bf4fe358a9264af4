# The layout tier: classify and accumulate (engine.pure.classify is the
# specification; the rules' sizes come from memscan.layout.rules).

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
        return _accumulate_ints(t, cats)
    return [out[i] for i in range((NCAT + 1) * NCOUNT)]


cdef list _accumulate_ints(t, cats):
    """accumulate in Python ints, which do not overflow."""
    cdef list out = [0] * ((NCAT + 1) * NCOUNT)
    cdef Py_ssize_t i, r, b
    fields = t.fields
    for i in range(len(t)):
        r = i * NF
        for b in (cats[i] * NCOUNT, NCAT * NCOUNT):
            out[b] += fields[r + F_SIZE]
            out[b + 1] += fields[r + F_RSS]
            out[b + 2] += fields[r + F_PSS]
            out[b + 3] += fields[r + F_PC] + fields[r + F_PD]
            out[b + 4] += fields[r + F_SC] + fields[r + F_SD]
            out[b + 5] += fields[r + F_ANON]
            out[b + 6] += fields[r + F_SWAP]
            out[b + 7] += fields[r + F_LAZY]
            out[b + 8] += fields[r + F_HUGE]
    return out
