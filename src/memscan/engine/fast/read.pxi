# Reading /proc files: the one piece of I/O in an engine, kept in C for
# speed. read_parse_smaps parses smaps while the kernel produces it: each
# read() of smaps waits on the kernel, and a helper thread parses the text
# that arrived meanwhile (below); read, then parse, would cost both in turn.
# read_all is the same read loop without the parse, for the other /proc
# files (memscan.kernel.procfs.read and the sampler's status and maps).

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
