"""What a mapped ELF file tells the classifier: identity, load address,
.bss, DT_NEEDED and Go build info, read with pyelftools and cached by the
identity of the file opened.

- :func:`module_info` opens a file once, identifies it by ``fstat`` of the
  fd it parsed and caches the result; it never raises (``None`` for a file
  that cannot be opened or is not ELF).
- :func:`read_module` is the uncached parser (raises ``OSError`` or
  ``ValueError``).
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from typing import IO, Any, List, NamedTuple, Optional, Tuple, Type

from elftools.common.exceptions import ELFError
from elftools.common.utils import struct_parse
from elftools.construct.core import ConstructError
from elftools.elf.constants import P_FLAGS
from elftools.elf.dynamic import DynamicSection, DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection, StringTableSection
from elftools.elf.segments import NoteSegment

from .._cache import LRU
from .buildinfo import GoInfo, find_buildinfo, go_info

__all__ = ["ModuleInfo", "PAGE_SIZE", "read_module", "module_info", "cache_info"]

#: The granule the kernel (and ld.so) map ELF segments with: 4096 on x86-64
#: and on 4 KiB-page arm64 kernels. ``min_vaddr`` and ``bss`` are rounded to
#: it so that they line up with /proc/PID/maps and smaps addresses.
PAGE_SIZE: int = mmap.PAGESIZE

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
        if h["p_flags"] & P_FLAGS.PF_W and memsz > filesz:
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
        found = find_buildinfo(stream, phdrs, shdrs)
    except _PARSE_ERRORS:
        found = None
    if found is not None:
        raw_version, modinfo = found
        go = go_info(raw_version, modinfo, elf.elfclass == 64, elf_type, has_interp, needed)

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

