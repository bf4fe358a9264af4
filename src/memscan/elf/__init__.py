"""What a mapped ELF file tells the classifier: Go build info, .bss, allocator.

Every ELF structure (header, program headers, sections, notes, dynamic
table) is read with pyelftools; only the bytes of Go's ``.go.buildinfo``
blob (magic, uvarint-prefixed strings, modinfo lines) are decoded here, since
that is Go's format, not ELF's.

Entry points:

- :func:`module_info` opens a file once, identifies it by ``fstat`` of the
  fd it parsed and caches the result; it never raises (``None`` for a file
  that cannot be opened or is not ELF).
- :func:`read_module` is the uncached parser (raises ``OSError`` or
  ``ValueError``).
- :func:`mapped_path` lists the paths to try for a file mapping of a live
  process, :func:`allocator` names the C allocator from the loaded shared
  objects, :func:`is_shared_object_name` tells libraries from other files.

Facts relied on: Go's debug/buildinfo format, runtime/malloc.go (the heap
base), and the names each allocator's library is installed under.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import stat
import struct
from collections import OrderedDict
from typing import IO, Any, Iterable, List, NamedTuple, Optional, Tuple, Type

from elftools.common.exceptions import ELFError
from elftools.common.utils import struct_parse
from elftools.construct.core import ConstructError
from elftools.elf.dynamic import DynamicSection, DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection, StringTableSection
from elftools.elf.segments import NoteSegment

from .._cache import LRU
from ..layout.rules import is_shared_object

__all__ = [
    "GoInfo",
    "ModuleInfo",
    "PAGE_SIZE",
    "read_module",
    "module_info",
    "cache_info",
    "mapped_path",
    "allocator",
    "is_shared_object_name",
]

#: The granule the kernel (and ld.so) map ELF segments with: 4096 on x86-64
#: and on 4 KiB-page arm64 kernels. ``min_vaddr`` and ``bss`` are rounded to
#: it so that they line up with /proc/PID/maps and smaps addresses.
PAGE_SIZE: int = mmap.PAGESIZE

_PF_W = 0x2  # p_flags: writable

# Anything pyelftools (or construct under it, or a bad length in a damaged
# file) raises when the bytes are not a well-formed ELF. Bugs in this module
# (TypeError, AttributeError...) are deliberately not in the list.
_PARSE_ERRORS: Tuple[Type[BaseException], ...] = (
    ELFError,
    ConstructError,
    ValueError,  # includes UnicodeDecodeError
    KeyError,
    IndexError,
    struct.error,
    EOFError,
    OverflowError,
)


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


class ModuleInfo(NamedTuple):
    """What the classifier needs of one mapped ELF file."""

    #: Hex of the NT_GNU_BUILD_ID note, ``""`` if none.
    build_id: str
    #: Go's ``.note.go.buildid`` string ("Go" note, type 4), ``""`` if none.
    go_build_id: str
    #: ``"EXEC"`` or ``"DYN"`` (``"REL"``, ``"CORE"`` for files one does not
    #: normally find mapped).
    elf_type: str
    #: Lowest PT_LOAD p_vaddr rounded down to PAGE_SIZE. For ET_DYN the load
    #: bias is (start of the mapping with file offset 0) - min_vaddr; add it
    #: to every vaddr below. 0 when the file has no PT_LOAD.
    min_vaddr: int
    #: (start, end) vaddrs, page aligned, of the anonymous zero-fill part of
    #: each writable PT_LOAD (``.bss``, ``.noptrbss``; holds Go's mheap_):
    #: start = p_vaddr + p_filesz rounded up, end = p_vaddr + p_memsz rounded
    #: up; empty ranges omitted. The page holding the end of the file part is
    #: file-backed (private, zero-filled tail), so it is not included.
    bss: Tuple[Tuple[int, int], ...]
    #: Go build info, or None when the module has no ``.go.buildinfo``.
    go: Optional[GoInfo]
    #: DT_NEEDED names, in table order.
    needed: Tuple[str, ...]


# --------------------------------------------------------------------------
# .go.buildinfo (Go's format, decoded by hand)

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


def _go_info(
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


# --------------------------------------------------------------------------
# ELF (pyelftools only)


def _round_down(x: int) -> int:
    return x & ~(PAGE_SIZE - 1)


def _round_up(x: int) -> int:
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


# pyelftools builds a full object for every section and segment it iterates:
# iter_sections() parses whole symbol hash tables (SHT_HASH, SHT_GNU_HASH),
# and every iter_segments() call builds a DynamicSegment, which iterates all
# sections again. That made libc.so.6 take ~18 ms. So the header tables are
# parsed once, with pyelftools' own structs (elf.structs.Elf_Phdr/Elf_Shdr),
# and only the few objects needed (notes, dynamic table, string table) are
# made with pyelftools' classes.


def _program_headers(elf: ELFFile) -> List[Any]:
    phoff = elf["e_phoff"]
    phentsize = elf["e_phentsize"]
    return [
        struct_parse(elf.structs.Elf_Phdr, elf.stream, stream_pos=phoff + i * phentsize)
        for i in range(elf.num_segments())
    ]


def _section_headers(elf: ELFFile) -> List[Tuple[str, Any]]:
    """(name, header) of every section; [] without (readable) section headers."""
    try:
        n = elf.num_sections()
        if n == 0:
            return []
        shoff = elf["e_shoff"]
        shentsize = elf["e_shentsize"]
        headers = [
            struct_parse(elf.structs.Elf_Shdr, elf.stream, stream_pos=shoff + i * shentsize)
            for i in range(n)
        ]
        strndx = elf["e_shstrndx"]
        if not isinstance(strndx, int):  # SHN_XINDEX: the index is in section 0
            strndx = headers[0]["sh_link"]
        strtab = StringTableSection(headers[strndx], "", elf)
        return [(strtab.get_string(h["sh_name"]), h) for h in headers]
    except _PARSE_ERRORS:
        # e_shoff past EOF (a truncated or sstrip'ed file): behave as if
        # there were no section headers, which is all the loader uses.
        return []


def _notes(elf: ELFFile, phdrs: List[Any], shdrs: List[Tuple[str, Any]]) -> Tuple[str, str]:
    build_id = ""
    go_build_id = ""
    # Notes may sit in sections only: a Go exe's PT_NOTE covers
    # .note.go.buildid but not .note.gnu.build-id. Read both.
    sources: List[Any] = [NoteSection(h, name, elf) for name, h in shdrs if h["sh_type"] == "SHT_NOTE"]
    sources += [NoteSegment(h, elf.stream, elf) for h in phdrs if h["p_type"] == "PT_NOTE"]
    for src in sources:
        try:
            for note in src.iter_notes():
                name = note["n_name"]
                ntype = note["n_type"]
                if name == "GNU" and ntype == "NT_GNU_BUILD_ID" and not build_id:
                    build_id = note["n_desc"]
                elif name == "Go" and ntype in (4, "NT_GNU_GOLD_VERSION") and not go_build_id:
                    # pyelftools names type 4 after GNU's gold note.
                    go_build_id = bytes(note["n_descdata"]).rstrip(b"\0").decode(
                        "utf-8", "replace"
                    )
        except _PARSE_ERRORS:
            continue
        if build_id and go_build_id:
            break
    return build_id, go_build_id


def _needed(elf: ELFFile, phdrs: List[Any], shdrs: List[Tuple[str, Any]]) -> Tuple[str, ...]:
    tables: List[Any] = [DynamicSection(h, name, elf) for name, h in shdrs if h["sh_type"] == "SHT_DYNAMIC"]
    if not tables:
        # No section headers: PT_DYNAMIC, its DT_STRTAB found through PT_LOAD.
        tables = [DynamicSegment(h, elf.stream, elf) for h in phdrs if h["p_type"] == "PT_DYNAMIC"]
    for table in tables:
        try:
            return tuple(tag.needed for tag in table.iter_tags("DT_NEEDED"))
        except _PARSE_ERRORS:
            continue
    return ()


def _find_buildinfo(reader: _Reader, phdrs: List[Any], shdrs: List[Tuple[str, Any]]) -> Optional[Tuple[str, str]]:
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
        if h["p_type"] == "PT_LOAD" and h["p_flags"] & _PF_W and h["p_filesz"]:
            off = _find_magic(reader, h["p_offset"], h["p_filesz"])
            if off >= 0:
                return _decode_buildinfo(reader, off, loads)
    return None


def _parse(stream: IO[bytes]) -> ModuleInfo:
    """Parse an open binary stream; raises _PARSE_ERRORS on a non-ELF file."""
    elf = ELFFile(stream)
    e_type = elf["e_type"]
    elf_type = e_type[3:] if isinstance(e_type, str) and e_type.startswith("ET_") else str(e_type)

    phdrs = _program_headers(elf)
    min_vaddr: Optional[int] = None
    bss: List[Tuple[int, int]] = []
    has_interp = False
    for h in phdrs:
        ptype = h["p_type"]
        if ptype == "PT_INTERP":
            has_interp = True
        if ptype != "PT_LOAD":
            continue
        vaddr, filesz, memsz = h["p_vaddr"], h["p_filesz"], h["p_memsz"]
        if min_vaddr is None or vaddr < min_vaddr:
            min_vaddr = vaddr
        if h["p_flags"] & _PF_W and memsz > filesz:
            # filesz == 0: nothing is file-backed, the whole page range is
            # anonymous (kernel elf_load / ld.so _dl_map_segments).
            start = _round_up(vaddr + filesz) if filesz else _round_down(vaddr)
            end = _round_up(vaddr + memsz)
            if end > start:
                bss.append((start, end))

    shdrs = _section_headers(elf)
    try:
        build_id, go_build_id = _notes(elf, phdrs, shdrs)
    except _PARSE_ERRORS:
        build_id = go_build_id = ""
    try:
        needed = _needed(elf, phdrs, shdrs)
    except _PARSE_ERRORS:  # e.g. a bad sh_link to the string table
        needed = ()

    go: Optional[GoInfo] = None
    try:
        found = _find_buildinfo(_Reader(stream), phdrs, shdrs)
    except _PARSE_ERRORS:
        found = None
    if found is not None:
        raw_version, modinfo = found
        go = _go_info(raw_version, modinfo, elf.elfclass == 64, elf_type, has_interp, needed)

    return ModuleInfo(
        build_id=build_id,
        go_build_id=go_build_id,
        elf_type=elf_type,
        min_vaddr=_round_down(min_vaddr) if min_vaddr is not None else 0,
        bss=tuple(bss),
        go=go,
        needed=needed,
    )


def read_module(path: str) -> ModuleInfo:
    """Parse the ELF file at ``path`` (uncached).

    Raises ``OSError`` when the file cannot be read and ``ValueError`` when
    it is not a (well-formed) ELF file; pyelftools' own exceptions never
    escape. Prefer :func:`module_info`, which caches and never raises.
    """
    with open(path, "rb") as f:
        try:
            return _parse(f)
        except ValueError:
            raise
        except _PARSE_ERRORS as err:
            raise ValueError(f"{path}: not an ELF file: {err}") from err


# --------------------------------------------------------------------------
# Cache keyed by file identity

_CACHE_SIZE = 256
_cache: "LRU[Tuple[int, ...], Optional[ModuleInfo]]" = LRU(_CACHE_SIZE)


def module_info(path: str) -> Optional[ModuleInfo]:
    """:func:`read_module`, cached by the identity of the file actually opened.

    ``path`` may be ``/proc/PID/map_files/START-END`` or ``/proc/PID/exe``:
    these open the very inode the process has mapped, even if it was deleted
    or replaced on disk since (see :func:`mapped_path`).

    The file is opened once; ``fstat`` of that fd gives the identity
    ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` and, on a cache
    miss, the same fd is parsed, so the cached value always describes the
    bytes that were identified. Why more than (dev, ino):

    - a file rewritten in place keeps its inode: a shared library (or a
      c-shared Go .so) can be overwritten while processes map it, a binary
      can be rebuilt in place once it is not running; the new size/mtime
      makes the old entry unreachable instead of silently misreading it;
    - inode numbers are reused once a deleted file is freed, so a new file
      may get the (dev, ino) of an old cached one;
    - ctime is included as well because unlike mtime it cannot be set back
      (``touch -d``, ``cp -p``, ``rsync --inplace`` restore mtime, and may
      keep the size). Its only cost: unlinking or chmod'ing a file changes
      ctime, which just causes one more parse.

    Returns None (never raises) when the file cannot be opened or read
    (ENOENT, EACCES, EPERM: map_files needs CAP_SYS_ADMIN...), is not a
    regular file, or is not ELF. Only parse results are cached, including
    "not ELF" (None); failures to open are not, so a later call retries.
    The cache is an LRU of ``_CACHE_SIZE`` entries shared by all threads.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not hang; it has no effect on
        # regular files. O_NOCTTY: a tty path must not become our terminal.
        fd = os.open(
            path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
        )
    except (OSError, ValueError):  # ValueError: embedded NUL in path
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return _cache.get_or_make(key, lambda: _parse_fd(fd))
    except OSError:  # EIO, a file truncated under us...
        return None
    finally:
        os.close(fd)


def _parse_fd(fd: int) -> Optional[ModuleInfo]:
    with os.fdopen(fd, "rb", closefd=False) as f:
        try:
            return _parse(f)
        except _PARSE_ERRORS:
            return None


def cache_info() -> Tuple[int, int, int]:
    """(hits, misses, current size) of the :func:`module_info` cache, since
    ``memscan.clear_caches()``."""
    return _cache.info()


# --------------------------------------------------------------------------
# Names

_DELETED = " (deleted)"


def _strip_deleted(name: str) -> str:
    return name[: -len(_DELETED)] if name.endswith(_DELETED) else name


def mapped_path(pid: int, start: int, end: int, name: str) -> List[str]:
    """Paths to open for the file mapping ``start-end`` named ``name``, best first.

    1. ``/proc/PID/map_files/START-END``: the mapped inode itself, right even
       when the file was deleted, replaced, or lives in another mount
       namespace; opening it needs CAP_SYS_ADMIN (root).
    2. ``/proc/PID/root`` + name: the path as seen from the process's root
       (containers); needs ptrace-read access to the process.
    3. ``name``: the path in our own mount namespace.

    A trailing " (deleted)" is stripped for 2 and 3; but then (and whenever
    the file was replaced) those paths name a *different* file, or none.
    Callers that can should check the opened file against the dev:inode
    column of maps. Names that are not absolute paths (``[heap]``,
    ``[anon:...]``, ``""``) only get candidate 1.
    """
    paths = [f"/proc/{pid}/map_files/{start:x}-{end:x}"]
    path = _strip_deleted(name)
    if path.startswith("/"):
        paths.append(f"/proc/{pid}/root{path}")
        paths.append(path)
    return paths


_GLIBC_OLD = re.compile(r"^libc-\d+\.\d+(?:\.\d+)?\.so$")  # glibc < 2.34


# The classifier's rule, shared: a basename with ".so" at its end or before a ".".
is_shared_object_name = is_shared_object


def allocator(lib_names: Iterable[str]) -> Optional[str]:
    """The malloc implementation suggested by the shared objects loaded.

    ``lib_names`` are paths or basenames (e.g. from /proc/PID/maps).
    Preloaded allocators win because they replace malloc even though libc is
    loaded too: "jemalloc" (libjemalloc*), then "tcmalloc" (libtcmalloc*,
    gperftools' _minimal included), then "mimalloc" (libmimalloc*). Then
    "musl" (ld-musl*, libc.musl*; checked before glibc since gcompat makes a
    musl system load a libc.so.6 shim), then "glibc" (libc.so.6, or
    libc-2.NN.so for glibc < 2.34 which maps the real file name). None when
    none is loaded (static Go binary, or an allocator linked statically into
    the executable, which this cannot see). This is a hint: memscan.owners.c confirms
    that a preloaded allocator really owns malloc (glibc's main arena unused).
    """
    bases = {os.path.basename(_strip_deleted(n)) for n in lib_names}
    for prefix, result in (
        ("libjemalloc", "jemalloc"),
        ("libtcmalloc", "tcmalloc"),
        ("libmimalloc", "mimalloc"),
    ):
        if any(b.startswith(prefix) for b in bases):
            return result
    if any(b.startswith("ld-musl") or b.startswith("libc.musl") for b in bases):
        return "musl"
    if any(b == "libc.so.6" or _GLIBC_OLD.match(b) for b in bases):
        return "glibc"
    return None
