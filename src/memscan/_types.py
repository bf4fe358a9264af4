"""memscan's records: the readable reference of what both engines build.

Sizes are bytes (the kernel's kB times 1024), addresses are ints.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Sequence, Tuple

# The ten categories, in the order of their codes (0..9). Every byte of every
# mapping is put in exactly one of them.
CATEGORIES: Tuple[str, ...] = (
    "go_heap",
    "go_runtime",
    "c_malloc",
    "thread_stacks",
    "binary",
    "shared_libs",
    "mapped_files",
    "shmem",
    "kernel",
    "anon_other",
)
(
    GO_HEAP,
    GO_RUNTIME,
    C_MALLOC,
    THREAD_STACKS,
    BINARY,
    SHARED_LIBS,
    MAPPED_FILES,
    SHMEM,
    KERNEL,
    ANON_OTHER,
) = range(len(CATEGORIES))

# The smaps and smaps_rollup keys kept per mapping, in the order smaps prints
# them (kernel 6.18), so that parsers can predict the next key; as bytes.
# Every one is optional (older kernels lack some: Pss_Dirty 6.0, KSM 6.7,
# Pss_Anon/File/Shmem are 5.7+ and only in smaps_rollup); a missing one is 0.
SMAPS_KEYS: Tuple[str, ...] = (
    "Size",
    "KernelPageSize",
    "MMUPageSize",
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "KSM",
    "LazyFree",
    "AnonHugePages",
    "ShmemPmdMapped",
    "FilePmdMapped",
    "Shared_Hugetlb",
    "Private_Hugetlb",
    "Swap",
    "SwapPss",
    "Locked",
    "Pss_Anon",
    "Pss_File",
    "Pss_Shmem",
)
NFIELDS = len(SMAPS_KEYS)
F = {k: i for i, k in enumerate(SMAPS_KEYS)}

# Keys the kernel prints without a unit; parsed for validity, not kept.
UNITLESS_KEYS: Tuple[str, ...] = ("THPeligible", "ProtectionKey")

# Two-letter VmFlags (kernel 3.8+), one bit each; an unknown flag sets bit 63.
VMFLAG_NAMES: Tuple[str, ...] = (
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf", "lo", "io",
    "sr", "rr", "dc", "de", "ac", "nr", "ht", "sf", "ar", "wf", "dd", "sd",
    "mm", "hg", "nh", "mg", "um", "uw", "ui", "ss", "dp", "sl", "bt", "mt",
    "lf", "??",
)
VMFLAG_BIT: Dict[str, int] = {n: 1 << i for i, n in enumerate(VMFLAG_NAMES)}
VMFLAG_UNKNOWN = 1 << 63
VM_NR = VMFLAG_BIT["nr"]  # MAP_NORESERVE: glibc <= 2.36 thread arenas, jemalloc
VM_NH = VMFLAG_BIT["nh"]  # MADV_NOHUGEPAGE, and MAP_STACK since kernel 6.7

# Permission bits of a mapping ("rwxs" / "rwxp").
PERM_R, PERM_W, PERM_X, PERM_S = 1, 2, 4, 8

COUNTER_FIELDS: Tuple[str, ...] = (
    "size", "rss", "pss", "uss", "shared", "anonymous", "swap", "lazyfree", "anon_huge",
)


class Counters(NamedTuple):
    """Bytes of one category or of the whole process.

    uss = Private_Clean + Private_Dirty; shared = Shared_Clean + Shared_Dirty.
    """

    size: int = 0
    rss: int = 0
    pss: int = 0
    uss: int = 0
    shared: int = 0
    anonymous: int = 0
    swap: int = 0
    lazyfree: int = 0
    anon_huge: int = 0

    def __add__(self, other: object) -> "Counters":  # type: ignore[override]
        if not isinstance(other, Counters):
            return NotImplemented
        return Counters(*[a + b for a, b in zip(self, other)])

    def to_dict(self) -> Dict[str, int]:
        return dict(zip(COUNTER_FIELDS, self))


class MemFields(NamedTuple):
    """The SMAPS_KEYS of one mapping or of smaps_rollup, in bytes."""

    size: int
    kernel_page_size: int
    mmu_page_size: int
    rss: int
    pss: int
    pss_dirty: int
    shared_clean: int
    shared_dirty: int
    private_clean: int
    private_dirty: int
    referenced: int
    anonymous: int
    ksm: int
    lazyfree: int
    anon_huge_pages: int
    shmem_pmd_mapped: int
    file_pmd_mapped: int
    shared_hugetlb: int
    private_hugetlb: int
    swap: int
    swap_pss: int
    locked: int
    pss_anon: int
    pss_file: int
    pss_shmem: int


class Vma(NamedTuple):
    """One mapping of /proc/PID/smaps (or maps, whose fields are all 0 but size)."""

    start: int
    end: int
    perms: str  # "rw-p"
    offset: int
    dev: Tuple[int, int]  # (major, minor)
    inode: int
    name: str  # "" for unnamed anonymous memory; not unescaped (only \n is, as \012)
    vmflags: Tuple[str, ...]
    fields: MemFields


def perms_str(bits: int) -> str:
    return (
        ("r" if bits & PERM_R else "-")
        + ("w" if bits & PERM_W else "-")
        + ("x" if bits & PERM_X else "-")
        + ("s" if bits & PERM_S else "p")
    )


class SmapsTable:
    """Mappings parsed from smaps or maps, column-wise, as both engines build it.

    Columns avoid one Python object per mapping on the hot path; ``vma(i)``
    builds a :class:`Vma` on demand. ``file_starts`` lists the indices of
    file mappings at file offset 0: where each ELF object is loaded.
    """

    __slots__ = (
        "starts", "ends", "offsets", "inodes", "devs", "perms", "vmflags",
        "names", "fields", "file_starts",
    )

    def __init__(self) -> None:
        self.starts = array("Q")
        self.ends = array("Q")
        self.offsets = array("Q")
        self.inodes = array("Q")
        self.devs = array("Q")  # major << 32 | minor
        self.perms = bytearray()
        self.vmflags = array("Q")
        self.names: List[str] = []
        self.fields = array("q")  # NFIELDS per mapping, bytes
        self.file_starts = array("Q")

    def __len__(self) -> int:
        return len(self.starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SmapsTable):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self) -> str:
        return f"<SmapsTable of {len(self)} mappings>"

    def vma(self, i: int) -> Vma:
        flags = self.vmflags[i]
        dev = self.devs[i]
        return Vma(
            self.starts[i],
            self.ends[i],
            perms_str(self.perms[i]),
            self.offsets[i],
            (dev >> 32, dev & 0xFFFFFFFF),
            self.inodes[i],
            self.names[i],
            tuple(n for n, b in VMFLAG_BIT.items() if flags & b)
            + (("??",) if flags & VMFLAG_UNKNOWN else ()),
            MemFields(*self.fields[i * NFIELDS : (i + 1) * NFIELDS]),
        )

    def vmas(self) -> List[Vma]:
        return [self.vma(i) for i in range(len(self))]


class Status(NamedTuple):
    """The memory lines of /proc/PID/status, bytes; absent lines are -1.

    A zombie or kernel thread has no Vm* lines at all.
    """

    name: str
    state: str
    tgid: int
    ppid: int
    uid: int  # real uid
    threads: int
    vm_peak: int
    vm_size: int
    vm_hwm: int
    vm_rss: int
    rss_anon: int  # RssAnon/RssFile/RssShmem: kernel 4.5+
    rss_file: int
    rss_shmem: int
    vm_data: int
    vm_stk: int
    vm_exe: int
    vm_lib: int
    vm_pte: int
    vm_swap: int  # 2.6.34+


#: The lines of /proc/PID/status that are read: "<key>:\t<n> kB" lines and
#: plain numbers, each with its index in Status.
STATUS_KB_KEYS: Dict[str, int] = {
    "VmPeak": 6, "VmSize": 7, "VmHWM": 8, "VmRSS": 9, "RssAnon": 10, "RssFile": 11, "RssShmem": 12,
    "VmData": 13, "VmStk": 14, "VmExe": 15, "VmLib": 16, "VmPTE": 17, "VmSwap": 18,
}
STATUS_INT_KEYS: Dict[str, int] = {"Tgid": 2, "PPid": 3, "Uid": 4, "Threads": 5}


@dataclass(frozen=True)
class GoRuntime:
    """A Go runtime loaded in the process: the executable or a c-shared library."""

    version: str  # "go1.27.3"
    path: str
    cgo: bool


class Interval(NamedTuple):
    """An address range [start, end) that the classifier must give ``category``."""

    start: int
    end: int
    category: int


#: What the page-counting kernels say of ranges that are not sorted,
#: page-aligned (start, end) address pairs.
PAGE_RANGES_ERROR = "ranges must be sorted, non-overlapping, page-aligned (start, end) pairs"


class LayoutContext(NamedTuple):
    """What the layout classifier knows of a process besides its mappings.

    ``intervals`` (sorted, non-overlapping) come from the ELF files: the .bss
    after each loaded object. ``go`` says a Go runtime is loaded, ``go_only``
    that nothing else allocates anonymous memory (a static, non-cgo Go
    program). ``stack_size`` is the pthread default stack size: RLIMIT_STACK
    rounded to pages, 2 MiB if unlimited (glibc's ARCH_STACK_DEFAULT_SIZE).
    """

    exe_dev: int  # major << 32 | minor, as in SmapsTable.devs
    exe_inode: int
    stack_size: int
    go: bool
    go_only: bool
    jemalloc: bool
    intervals: Sequence[Interval]
