# The /proc/PID/status parser (engine.pure.status is the specification).

cdef dict _STATUS_KB_KEYS = STATUS_KB_KEYS
cdef dict _STATUS_INT_KEYS = STATUS_INT_KEYS


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
