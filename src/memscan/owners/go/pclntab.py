"""Runtime variables of a Go binary without a symbol table, found in its code.

A binary built with ``-ldflags=-s`` (or stripped, as Debian's packaging
does) has no ``.symtab``, but keeps Go's function table, ``.gopclntab``
(in ``.data.rel.ro`` for an externally linked PIE): every function's name
and entry address (runtime/symtab.go, ``pcHeader`` and ``functab``, one
layout in Go 1.18-1.25 but for the magic, 0xfffffff0 in 1.18-1.19 and
0xfffffff1 from 1.20; Go 1.26+ leaves ``textStart`` 0: not read here).
The few variables the off-heap reader follows are each referenced,
RIP-relative (amd64), by a runtime function whose code pins them down
(disassembled go1.19.8 and go1.21.13-go1.25.5):

==========================  ==================================================
variable                    where
==========================  ==================================================
runtime.persistentChunks    ``persistentalloc1``: ``LEAQ persistentChunks(SB)``
                            then ``LOCK CMPXCHGQ`` through it (the atomic push)
runtime.gcBitsArenas        ``nextMarkBitArenaEpoch``: ``LEAQ gcBitsArenas(SB)``
                            (its lock) and ``MOVQ`` of each of its four lists
runtime.buckhash            ``stkbucket``: its first ``MOVQ x(SB), reg`` load
==========================  ==================================================

Each rule asks for an address inside the binary's writable segments; a
binary where a rule finds nothing or two different addresses gives no
address for that variable (its memory is then not looked for). The reader
checks what it reads there as for any runtime variable.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..._cache import LRU

__all__ = ["code_globals"]

_MAGICS = (0xFFFFFFF0, 0xFFFFFFF1)  # Go 1.18-1.19, 1.20+
_HEADER = struct.Struct("<IBBBB8Q")  # magic, pad, pad, minLC, ptrSize, nfunc, nfiles, textStart ... pclnOffset
_FUNCS = ("runtime.persistentalloc1", "runtime.nextMarkBitArenaEpoch", "runtime.stkbucket")
_REX_W = (0x48, 0x4C)
_LEA, _MOV_LOAD, _MOV_STORE = 0x8D, 0x8B, 0x89
_MAX_FUNC_BYTES = 1 << 16

# Per file identity: {variable name: link-time address}.
_found: "LRU[Tuple[int, ...], Dict[str, int]]" = LRU(16)


def code_globals(path: str, data: Sequence[Tuple[int, int]], gc_bits_lists: Sequence[int]) -> Dict[str, int]:
    """Link-time addresses of runtime.persistentChunks, runtime.gcBitsArenas
    and runtime.buckhash that the code of the Go binary at ``path`` pins
    down (those it does not are left out). ``data``: the binary's writable
    ``[start, end)`` segments (link-time); ``gc_bits_lists``: the offsets of
    the four list heads in ``gcBitsArenas`` (the layout's)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, *gc_bits_lists)
        return _found.get_or_make(key, lambda: _find(fd, tuple(data), tuple(gc_bits_lists)))
    finally:
        os.close(fd)


def _find(fd: int, data: Tuple[Tuple[int, int], ...], lists: Tuple[int, ...]) -> Dict[str, int]:
    try:
        with os.fdopen(os.dup(fd), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            elf = ELFFile(f)
            if elf["e_machine"] != "EM_X86_64":  # the rules decode amd64 code
                return {}
            image = _Image(elf, m)
            funcs = image.functions(_FUNCS)
            out: Dict[str, int] = {}
            for var, func, rule in (("runtime.persistentChunks", "runtime.persistentalloc1", _cas_target),
                                    ("runtime.gcBitsArenas", "runtime.nextMarkBitArenaEpoch",
                                     lambda refs, code: _struct_with(refs, lists)),
                                    ("runtime.buckhash", "runtime.stkbucket", _first_load)):
                if func not in funcs:
                    continue
                code = image.read(*funcs[func])
                if code is None:
                    continue
                refs = [r for r in _rip_refs(funcs[func][0], code) if any(lo <= r[2] < hi for lo, hi in data)]
                found = rule(refs, code)
                if found:
                    out[var] = found
            return out
    except (ELFError, ValueError, OSError, struct.error):
        return {}


class _Image:
    """The file's bytes by link-time address, and its function table."""

    def __init__(self, elf: ELFFile, m: mmap.mmap) -> None:
        self.elf, self.m = elf, m
        self.loads = [(s["p_vaddr"], s["p_filesz"], s["p_offset"]) for s in elf.iter_segments()
                      if s["p_type"] == "PT_LOAD"]

    def read(self, addr: int, size: int) -> Optional[bytes]:
        for vaddr, filesz, offset in self.loads:
            if vaddr <= addr and addr + size <= vaddr + filesz:
                return self.m[offset + addr - vaddr: offset + addr - vaddr + size]
        return None

    def _pclntab(self) -> Optional[Tuple[int, int]]:
        """(file offset, link-time address) of the pcHeader."""
        sec = self.elf.get_section_by_name(".gopclntab")
        if sec is not None:
            return sec["sh_offset"], sec["sh_addr"]
        # An externally linked PIE keeps it at the start of .data.rel.ro's part.
        for name in (".data.rel.ro.gopclntab", ".data.rel.ro"):
            sec = self.elf.get_section_by_name(name)
            if sec is None:
                continue
            start, end = sec["sh_offset"], sec["sh_offset"] + sec["sh_size"]
            for magic in _MAGICS:
                pos = self.m.find(struct.pack("<IBBBB", magic, 0, 0, 1, 8), start, end)
                while pos >= 0 and pos % 8:
                    pos = self.m.find(struct.pack("<IBBBB", magic, 0, 0, 1, 8), pos + 1, end)
                if pos >= 0:
                    return pos, sec["sh_addr"] + pos - start
        return None

    def _text_start(self, hdr_addr: int, value: int) -> int:
        """pcHeader.textStart; in a PIE a relocation's addend fills it."""
        if value or self.elf["e_type"] != "ET_DYN":
            return value
        for sec in self.elf.iter_sections():
            if sec["sh_type"] != "SHT_RELA":
                continue
            for rel in sec.iter_relocations():
                if rel["r_offset"] == hdr_addr + 24:
                    return int(rel["r_addend"])
        return 0

    def functions(self, names: Sequence[str]) -> Dict[str, Tuple[int, int]]:
        """{name: (entry, size)} of the named functions."""
        where = self._pclntab()
        if where is None:
            return {}
        off, addr = where
        magic, _, _, _, ptr, nfunc, _, text, nameoff, _, _, _, pcln = _HEADER.unpack_from(self.m, off)
        if magic not in _MAGICS or ptr != 8:
            return {}
        text = self._text_start(addr, text)
        if not text:  # Go 1.26+ keeps no textStart here: not a table these rules were checked on
            return {}
        names_at = off + nameoff
        wanted = {}
        for name in names:
            pos = self.m.find(b"\0" + name.encode() + b"\0", names_at)
            if pos >= 0:
                wanted[pos + 1 - names_at] = name
        tab = off + pcln
        entries = struct.unpack_from(f"<{2 * (nfunc + 1)}I", self.m, tab)
        out = {}
        for i in range(nfunc):
            name_off = struct.unpack_from("<i", self.m, tab + entries[2 * i + 1] + 4)[0]
            name = wanted.get(name_off)
            if name is not None:
                size = entries[2 * i + 2] - entries[2 * i]
                if 0 < size <= _MAX_FUNC_BYTES:
                    out[name] = (text + entries[2 * i], size)
        return out


def _rip_refs(base: int, code: bytes) -> Iterator[Tuple[int, int, int]]:
    """(position, opcode, target) of every 64-bit LEA/MOV with a RIP-relative
    operand (REX.W, opcode, ModRM mod 00 r/m 101, disp32): a byte pattern
    that may also match inside another instruction, which the rules and the
    address checks weed out."""
    for i in range(len(code) - 6):
        if code[i] in _REX_W and code[i + 1] in (_LEA, _MOV_LOAD, _MOV_STORE) and code[i + 2] & 0xC7 == 0x05:
            yield i, code[i + 1], base + i + 7 + struct.unpack_from("<i", code, i + 3)[0]


def _one(found: List[int]) -> int:
    return found[0] if found and all(x == found[0] for x in found) else 0


def _cas_target(refs: List[Tuple[int, int, int]], code: bytes) -> int:
    """The LEA whose next instruction is LOCK CMPXCHGQ (F0 REX.W 0F B1)."""
    return _one([t for i, op, t in refs
                 if op == _LEA and code[i + 7:i + 8] == b"\xf0" and code[i + 9:i + 11] == b"\x0f\xb1"])


def _struct_with(refs: List[Tuple[int, int, int]], offsets: Sequence[int]) -> int:
    """The LEA target whose fields at ``offsets`` are all referenced too."""
    targets = {t for _, _, t in refs}
    return _one([t for _, op, t in refs if op == _LEA and offsets and all(t + o in targets for o in offsets)])


def _first_load(refs: List[Tuple[int, int, int]], code: bytes) -> int:
    return next((t for _, op, t in refs if op == _MOV_LOAD), 0)
