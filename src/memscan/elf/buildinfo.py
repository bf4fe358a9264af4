"""Go's build information, from the ``.go.buildinfo`` blob of an ELF module.

The blob is Go's format, not ELF's, so its bytes (magic, uvarint-prefixed
strings, modinfo lines) are decoded here, as Go's debug/buildinfo does; the
ELF headers that locate it are pyelftools' (:mod:`memscan.elf.module`).
Facts relied on: cmd/go's modinfo framing, runtime/malloc.go (the heap base).
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections import OrderedDict
from typing import IO, Any, List, NamedTuple, Optional, Tuple

from elftools.elf.constants import P_FLAGS

__all__ = ["GoInfo", "find_buildinfo", "go_info"]


class GoInfo(NamedTuple):
    """The Go build of one ELF module, from its ``.go.buildinfo`` blob."""

    #: e.g. ``"go1.27.3"``; the ``-X:...`` (or, when the version already has
    #: a "-", `` X:...``) experiment suffix is removed. Vendor/devel builds
    #: keep the rest (``"go1.22-20231128-RC02 cl/586117301 +6111acc8e6"``).
    #: ``""`` for a pre-1.18 blob whose strings could not be resolved.
    version: str
    #: GOEXPERIMENT names from the version suffix and ``build GOEXPERIMENT=``
    #: (union, first-seen order), e.g. ``("norandomizedheapbase64",)``.
    experiments: Tuple[str, ...]
    #: ``build CGO_ENABLED=1``. When the setting is missing (pre-1.18 pointer
    #: format, or a hand-linked binary), True iff the ELF has a DT_NEEDED libc
    #: (libc.so.*, libc.musl-*): a PT_INTERP alone proves nothing, an
    #: internally linked CGO_ENABLED=0 ``-buildmode=pie`` binary has one.
    cgo: bool
    #: ``build -buildmode=``: "exe", "pie", "c-shared", "c-archive", "plugin",
    #: "shared". When missing: "exe", except for an ET_DYN module, which is
    #: "pie" with a PT_INTERP and "c-shared" without.
    buildmode: str
    #: ``build -race=true``.
    race: bool
    #: ``build DefaultGODEBUG=`` value, ``""`` if none.
    godebug: str
    #: Heap arenas start at a random 64 MiB-aligned base (runtime/malloc.go):
    #: Go >= 1.26, 64-bit, not ``norandomizedheapbase64``, not race/msan/asan.
    #: When False (64-bit) the arenas start at 0xc000000000.
    randomized_heap: bool


_BUILDINFO_MAGIC = b"\xff Go buildinf:"
_BUILDINFO_ALIGN = 16
_BUILDINFO_HEADER = 32
_FLAG_BIG_ENDIAN = 0x1
_FLAG_INLINE = 0x2
# Upper bounds, so that a damaged length cannot make us read a huge amount.
_MAX_VERSION = 4096
_MAX_MODINFO = 16 << 20
_SCAN_CHUNK = 1 << 20
_MAX_SCAN = 256 << 20

_VERSION_X = re.compile(r"^(.*?)[- ]X:(\S*)$")
_GO_MINOR = re.compile(r"go(\d+)\.(\d+)")


class _Reader:
    """Reads byte ranges of the open file (the stream pyelftools parses)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size <= 0:
            return b""
        self.stream.seek(offset)
        return self.stream.read(size)

    def uvarint(self, offset: int) -> Tuple[int, int]:
        """Decode a Go uvarint at ``offset``: (value, offset after it)."""
        buf = self.read(offset, 10)
        value = 0
        shift = 0
        for i, b in enumerate(buf):
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value, offset + i + 1
            shift += 7
        raise ValueError("bad uvarint in .go.buildinfo")


def _find_magic(reader: _Reader, offset: int, size: int) -> int:
    """File offset of the first 16-byte-aligned magic in [offset, offset+size), or -1.

    Alignment is taken on the file offset: PT_LOAD keeps p_offset congruent
    to p_vaddr modulo the page size, so vaddr and offset alignment agree.
    """
    end = offset + min(size, _MAX_SCAN)
    pos = (offset + _BUILDINFO_ALIGN - 1) & ~(_BUILDINFO_ALIGN - 1)
    while pos < end:
        # Chunks start 16-aligned, so an aligned magic never straddles two.
        chunk = reader.read(pos, min(_SCAN_CHUNK, end - pos))
        if not chunk:
            break
        i = chunk.find(_BUILDINFO_MAGIC)
        while i >= 0:
            if i % _BUILDINFO_ALIGN == 0:
                return pos + i
            i = chunk.find(_BUILDINFO_MAGIC, i + 1)
        pos += len(chunk)
    return -1


def _vaddr_to_offset(loads: List[Tuple[int, int, int]], vaddr: int) -> int:
    for p_vaddr, p_offset, p_filesz in loads:
        if p_vaddr <= vaddr < p_vaddr + p_filesz:
            return p_offset + (vaddr - p_vaddr)
    return -1


def _read_ptr_string(
    reader: _Reader,
    loads: List[Tuple[int, int, int]],
    addr: int,
    ptr_size: int,
    endian: str,
) -> bytes:
    """Pre-1.18 format: read a Go string header (ptr, len) at vaddr ``addr``."""
    fmt = endian + ("Q" if ptr_size == 8 else "I")
    off = _vaddr_to_offset(loads, addr)
    hdr = reader.read(off, 2 * ptr_size) if off >= 0 else b""
    if len(hdr) < 2 * ptr_size:
        return b""
    data_addr = struct.unpack_from(fmt, hdr, 0)[0]
    data_len = struct.unpack_from(fmt, hdr, ptr_size)[0]
    if data_len > _MAX_MODINFO:
        return b""
    data_off = _vaddr_to_offset(loads, data_addr)
    if data_off < 0:  # e.g. a pointer left to a dynamic relocation (PIE)
        return b""
    data = reader.read(data_off, data_len)
    return data if len(data) == data_len else b""


def _decode_buildinfo(
    reader: _Reader, offset: int, loads: List[Tuple[int, int, int]]
) -> Optional[Tuple[str, str]]:
    """(version, modinfo) from the blob at file ``offset``."""
    header = reader.read(offset, _BUILDINFO_HEADER)
    if len(header) < _BUILDINFO_HEADER or not header.startswith(_BUILDINFO_MAGIC):
        return None
    ptr_size = header[14]
    flags = header[15]
    if flags & _FLAG_INLINE:  # Go 1.18+
        n, pos = reader.uvarint(offset + _BUILDINFO_HEADER)
        if n > _MAX_VERSION:
            return None
        vers = reader.read(pos, n)
        n, pos = reader.uvarint(pos + n)
        if n > _MAX_MODINFO:
            return None
        mod = reader.read(pos, n)
    else:  # Go < 1.18: two pointers to Go string headers
        if ptr_size not in (4, 8):
            return None
        endian = ">" if flags & _FLAG_BIG_ENDIAN else "<"
        fmt = endian + ("Q" if ptr_size == 8 else "I")
        vers_ptr = struct.unpack_from(fmt, header, 16)[0]
        mod_ptr = struct.unpack_from(fmt, header, 16 + ptr_size)[0]
        vers = _read_ptr_string(reader, loads, vers_ptr, ptr_size, endian)
        mod = _read_ptr_string(reader, loads, mod_ptr, ptr_size, endian)
    # Strip the 16-byte sentinels framing modinfo (cmd/go modload.infoStart
    # and infoEnd), exactly as debug/buildinfo does.
    if len(mod) > 32 and mod[-17:-16] == b"\n":
        mod = mod[16:-16]
    else:
        mod = b""
    return vers.decode("utf-8", "replace"), mod.decode("utf-8", "replace")


def _unquote(s: str) -> str:
    """Undo Go's strconv.Quote, which modinfo uses for odd keys and values."""
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        try:
            out = json.loads(s)
            if isinstance(out, str):
                return out
        except ValueError:
            pass
        return s[1:-1]
    return s


def _parse_settings(modinfo: str) -> "OrderedDict[str, str]":
    settings: "OrderedDict[str, str]" = OrderedDict()
    for line in modinfo.split("\n"):
        if not line.startswith("build\t"):
            continue
        kv = line[len("build\t"):]
        if kv.startswith('"'):
            # Quoted key: find the closing quote, then "=".
            m = re.match(r'^("(?:[^"\\]|\\.)*")=(.*)$', kv)
            if not m:
                continue
            key, val = _unquote(m.group(1)), m.group(2)
        else:
            key, sep, val = kv.partition("=")
            if not sep:
                continue
        settings[key] = _unquote(val)
    return settings


def _go_minor(version: str) -> Optional[Tuple[int, int]]:
    m = _GO_MINOR.search(version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _is_libc(name: str) -> bool:
    base = os.path.basename(name)
    return base.startswith("libc.so") or base.startswith("libc.musl")


def go_info(
    raw_version: str,
    modinfo: str,
    is_64bit: bool,
    elf_type: str,
    has_interp: bool,
    needed: Tuple[str, ...],
) -> GoInfo:
    settings = _parse_settings(modinfo)

    version = raw_version
    experiments: List[str] = []
    m = _VERSION_X.match(raw_version)
    if m:
        version = m.group(1)
        experiments.extend(x for x in m.group(2).split(",") if x)
    for x in settings.get("GOEXPERIMENT", "").split(","):
        x = x.strip()
        if x and x not in experiments:
            experiments.append(x)

    cgo_setting = settings.get("CGO_ENABLED")
    if cgo_setting is not None:
        cgo = cgo_setting == "1"
    else:
        cgo = any(_is_libc(n) for n in needed)

    buildmode = settings.get("-buildmode", "")
    if not buildmode:
        if elf_type == "DYN":
            buildmode = "pie" if has_interp else "c-shared"
        else:
            buildmode = "exe"

    race = settings.get("-race") == "true"
    sanitizer = settings.get("-msan") == "true" or settings.get("-asan") == "true"

    minor = _go_minor(version)
    if "norandomizedheapbase64" in experiments:
        randomized = False
    elif minor is not None and minor >= (1, 26):
        randomized = True
    else:
        # Before 1.26 only an explicit opt-in could turn it on.
        randomized = "randomizedheapbase64" in experiments
    randomized = randomized and is_64bit and not race and not sanitizer

    return GoInfo(
        version=version,
        experiments=tuple(experiments),
        cgo=cgo,
        buildmode=buildmode,
        race=race,
        godebug=settings.get("DefaultGODEBUG", ""),
        randomized_heap=randomized,
    )


def find_buildinfo(stream: IO[bytes], phdrs: List[Any], shdrs: List[Tuple[str, Any]]) -> Optional[Tuple[str, str]]:
    """(version, modinfo) of the ``.go.buildinfo`` blob of the ELF file open
    as ``stream``, given its program headers and its (name, section header)
    pairs as pyelftools parsed them; None when it has none."""
    reader = _Reader(stream)
    loads = [
        (h["p_vaddr"], h["p_offset"], h["p_filesz"]) for h in phdrs if h["p_type"] == "PT_LOAD"
    ]
    if shdrs:
        # With section headers, trust them: no scanning of every library.
        for name, h in shdrs:
            if name == ".go.buildinfo" and h["sh_type"] != "SHT_NOBITS":
                off = _find_magic(reader, h["sh_offset"], h["sh_size"])
                if off >= 0:
                    return _decode_buildinfo(reader, off, loads)
        return None
    # No section headers: the blob is in a writable PT_LOAD, 16-byte
    # aligned (at its start for internally linked exes, further in for
    # externally linked ones).
    for h in phdrs:
        if h["p_type"] == "PT_LOAD" and h["p_flags"] & P_FLAGS.PF_W and h["p_filesz"]:
            off = _find_magic(reader, h["p_offset"], h["p_filesz"])
            if off >= 0:
                return _decode_buildinfo(reader, off, loads)
    return None
