"""The DWARF of a Go binary, read with pyelftools: the DIEs of the runtime's
variables, struct types and constants that the heap and runtime readers use,
and the types under them (members, slices, arrays, pointers).

Go's linker writes the runtime's types and the ``DW_TAG_constant`` entries of
package runtime; which of them are read is listed here, what they mean to
the readers is :mod:`memscan.owners.go.layout`'s.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Tuple

from elftools.elf.elffile import ELFFile

from ..._errors import NoRuntimeInfo

# Variables the heap reader reads: mheap_ (required) and allp (the Ps' page
# caches, optional).
RUNTIME_VARS = ("runtime.mheap_", "runtime.allp")
# Variables goruntime reads (all optional: a binary without one just lacks
# that kind of region), gcController (the memory limit, memlimit), and struct
# types not reachable from a variable's type.
OFFHEAP_VARS = ("runtime.persistentChunks", "runtime.gcBitsArenas", "runtime.buckhash", "runtime.allm",
                "runtime.work", "runtime.iscgo", "runtime.gcController")
_OFFHEAP_TYPES = ("runtime.spanSPMC",)
CONSTANTS = {
    "arena_bytes": ("runtime.heapArenaBytes",),
    # Go names it arenaBaseOffset; the uintptr copy is what DWARF has.
    "arena_base_offset": ("runtime.arenaBaseOffsetUintptr", "runtime.arenaBaseOffset"),
    "page_size": ("runtime.pageSize", "runtime._PageSize"),
    "chunk_pages": ("runtime.pallocChunkPages",),
    "span_in_use": ("runtime.mSpanInUse",),
    "span_manual": ("runtime.mSpanManual",),
}
OFFHEAP_CONSTANTS = {
    "persistent_chunk_bytes": "runtime.persistentChunkSize",
    "gc_bits_chunk_bytes": "runtime.gcBitsChunkBytes",
    "buckhash_len": "runtime.buckHashSize",
}
_QUALIFIERS = ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type")


class Slice(NamedTuple):
    """A Go slice header field: its offset, the offsets of its members, and
    the size of one element."""

    offset: int
    array: int
    len: int
    cap: int
    elem: int


def no_info(path: str, what: str) -> NoRuntimeInfo:
    return NoRuntimeInfo(f"the exact tier cannot read the Go heap of {path}: {what}")


class Dwarf:
    """Finds named DIEs in a Go binary's DWARF and reads types from them."""

    def __init__(self, elf: ELFFile, path: str) -> None:
        self.path = path
        self.ptr = elf.elfclass // 8
        self.dies: Dict[str, Any] = {}
        self.consts: Dict[str, int] = {}
        self._find(elf.get_dwarf_info())

    def _find(self, dwarf: Any) -> None:
        wanted = set(RUNTIME_VARS) | {n for names in CONSTANTS.values() for n in names}
        wanted |= set(OFFHEAP_VARS) | set(_OFFHEAP_TYPES) | set(OFFHEAP_CONSTANTS.values())
        self._find_by_name(dwarf, wanted)
        if not self._complete():
            self._walk(dwarf, wanted)

    def _find_by_name(self, dwarf: Any, wanted: "set[str]") -> None:
        """Fast path: Go writes DIE names inline (DW_FORM_string), first after
        the DIE's abbreviation code (a 1-2 byte ULEB128), so a name found in
        .debug_info gives the offset of a candidate DIE. Only DIEs that parse
        and carry that very name are kept; anything else is left to _walk,
        which parses every top-level DIE of the runtime units (~0.7 s)."""
        info = dwarf.debug_info_sec
        try:
            data = info.stream.getvalue()
        except AttributeError:
            return
        for name in sorted(wanted):
            needle = name.encode() + b"\0"
            pos = data.find(needle)
            while pos >= 0 and name not in self.dies and name not in self.consts:
                for offset in (pos - 1, pos - 2):
                    die = self._die_at(dwarf, offset)
                    if die is not None and die.attributes["DW_AT_name"].value == needle[:-1]:
                        self._keep(name, die)
                pos = data.find(needle, pos + 1)

    @staticmethod
    def _die_at(dwarf: Any, offset: int) -> Any:
        if offset < 0:
            return None
        try:
            die = dwarf.get_DIE_from_refaddr(offset)
        except Exception:  # noqa: BLE001 - bytes that are not a DIE fail in many ways
            return None
        name = die.attributes.get("DW_AT_name")
        return die if name is not None and name.form == "DW_FORM_string" else None

    def _walk(self, dwarf: Any, wanted: "set[str]") -> None:
        # Go's linker emits several compile units named "runtime" (types in
        # one, package runtime's constants and variables in another; 10 in
        # 1.21.13, 9 in 1.27.3): look at those first, the others (main, C
        # units of cgo, ...) only if something is still missing.
        later = []
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            name = top.attributes.get("DW_AT_name")
            if name is not None and name.value == b"runtime":
                self._collect(top, wanted)
            else:
                later.append(top)
        for top in later:
            if self._complete():
                break
            self._collect(top, wanted)

    def _complete(self) -> bool:
        """Everything required found (runtime.allp is optional; a constant
        needs one of its names)."""
        return "runtime.mheap_" in self.dies and all(
            any(n in self.consts for n in names) for names in CONSTANTS.values())

    def _collect(self, top: Any, wanted: set) -> None:
        for die in top.iter_children():
            attr = die.attributes.get("DW_AT_name")
            if attr is None:
                continue
            name = attr.value.decode("utf-8", "replace")
            if name in wanted:
                self._keep(name, die)

    def _keep(self, name: str, die: Any) -> None:
        if die.tag == "DW_TAG_constant" and "DW_AT_const_value" in die.attributes:
            self.consts.setdefault(name, die.attributes["DW_AT_const_value"].value)
        elif die.tag in ("DW_TAG_structure_type", "DW_TAG_variable"):
            self.dies.setdefault(name, die)

    # -- lookups; every miss is a NoRuntimeInfo naming what is missing

    def const(self, key: str) -> int:
        for name in CONSTANTS[key]:
            if name in self.consts:
                return int(self.consts[name])
        raise no_info(self.path, f"its DWARF has no constant {CONSTANTS[key][0]}")

    def var_type(self, name: str) -> Any:
        die = self.dies.get(name)
        if die is None or "DW_AT_type" not in die.attributes:
            raise no_info(self.path, f"its DWARF has no variable {name}")
        return strip(die.get_DIE_from_attribute("DW_AT_type"))

    def member(self, struct_die: Any, *names: str) -> Tuple[int, Any]:
        """(offset, type) of the first of ``names`` found in the struct."""
        for m in struct_die.iter_children():
            if m.tag != "DW_TAG_member":
                continue
            attr = m.attributes.get("DW_AT_name")
            if attr is None or attr.value.decode() not in names:
                continue
            loc = m.attributes.get("DW_AT_data_member_location")
            if loc is None or not isinstance(loc.value, int):
                break
            return loc.value, strip(m.get_DIE_from_attribute("DW_AT_type"))
        raise no_info(self.path, f"its DWARF type {type_name(struct_die)} has no field {' or '.join(names)}")

    def path_of(self, struct_die: Any, *fields: str) -> Tuple[int, Any]:
        """Offset and type of a nested field, e.g. ("pages", "chunks")."""
        offset = 0
        for field in fields:
            off, struct_die = self.member(struct_die, field)
            offset += off
        return offset, struct_die

    def slice(self, offset: int, die: Any) -> Slice:
        array, ptr = self.member(die, "array")
        elem = pointee(ptr)
        elem_size = size(elem) or (self.ptr if elem.tag == "DW_TAG_pointer_type" else 0)
        return Slice(offset, array, self.member(die, "len")[0], self.member(die, "cap")[0], elem_size)

    def value_in(self, offset: int, die: Any) -> Tuple[int, int]:
        """(offset, size) of the integer inside a wrapper type.

        ``mspan.state`` is ``mSpanStateBox{s atomic.Uint8}`` (1.21-1.27) and
        ``atomic.Uint8`` is ``{_ noCopy; value uint8}``: descend through
        structs with exactly one member of non-zero size.
        """
        for _ in range(8):
            if die.tag == "DW_TAG_base_type":
                return offset, size(die)
            if die.tag == "DW_TAG_pointer_type":  # e.g. atomic.UnsafePointer's value
                return offset, size(die) or self.ptr
            if die.tag != "DW_TAG_structure_type":
                break
            sized = []
            for m in die.iter_children():
                if m.tag == "DW_TAG_member" and "DW_AT_data_member_location" in m.attributes:
                    t = strip(m.get_DIE_from_attribute("DW_AT_type"))
                    if size(t) or t.tag == "DW_TAG_pointer_type":  # Go's pointer DIEs have no size
                        sized.append((m.attributes["DW_AT_data_member_location"].value, t))
            if len(sized) != 1:
                break
            offset, die = offset + sized[0][0], sized[0][1]
        raise no_info(self.path, f"cannot find the integer inside {type_name(die)}")


def strip(die: Any) -> Any:
    """The type under typedefs and qualifiers."""
    for _ in range(16):
        if die.tag not in _QUALIFIERS or "DW_AT_type" not in die.attributes:
            break
        die = die.get_DIE_from_attribute("DW_AT_type")
    return die


def type_name(die: Any) -> str:
    attr = die.attributes.get("DW_AT_name")
    return attr.value.decode("utf-8", "replace") if attr is not None else f"<{die.tag}>"


def size(die: Any) -> int:
    attr = die.attributes.get("DW_AT_byte_size")
    return attr.value if attr is not None else 0


def pointee(die: Any) -> Any:
    """What a pointer type points to."""
    return strip(die.get_DIE_from_attribute("DW_AT_type"))


def array_elem(die: Any) -> Any:
    """The element type of an array type."""
    return strip(die.get_DIE_from_attribute("DW_AT_type"))


def array_len(die: Any) -> int:
    for sub in die.iter_children():
        if sub.tag == "DW_TAG_subrange_type":
            if "DW_AT_count" in sub.attributes:
                return sub.attributes["DW_AT_count"].value
            if "DW_AT_upper_bound" in sub.attributes:
                return sub.attributes["DW_AT_upper_bound"].value + 1
    return 0

