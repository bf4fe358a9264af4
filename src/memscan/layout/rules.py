"""The layout tier's rules: what the name, size and place of a mapping say
about who owns it. Both engines' ``classify`` apply them (the Cython engine
copies the numbers into C at import), and the C allocator's reader uses the
same sizes; this module is their one home.

Names follow what the kernel prints in smaps (fs/proc/task_mmu.c) and what
Go (1.25+) and glibc (2.39+) name their anonymous mappings with
PR_SET_VMA_ANON_NAME (kernel 5.17+, CONFIG_ANON_VMA_NAME).
"""

from __future__ import annotations

from .._types import (
    ANON_OTHER,
    BINARY,
    C_MALLOC,
    GO_HEAP,
    GO_RUNTIME,
    KERNEL,
    MAPPED_FILES,
    PERM_S,
    SHARED_LIBS,
    SHMEM,
    THREAD_STACKS,
    LayoutContext,
)

MIB = 1 << 20
#: Go's heapArenaBytes on 64-bit Linux (runtime/malloc.go), and glibc's
#: HEAP_MAX_SIZE on 64-bit (malloc/arena.c): a thread arena's heap.
ARENA = 64 * MIB
#: Go places heap arenas below 2^46 on amd64 (randomized base since Go 1.26,
#: fixed hints 0x00c0<<32 | i<<40 before); glibc's mmap area is near 2^47.
GO_HEAP_LIMIT = 1 << 46
#: The largest guard below a pthread stack taken as one: guards are one page
#: by default (nptl/allocatestack.c), pthread_attr_setguardsize may ask more.
GUARD_MAX = 256 * 1024

KERNEL_NAMES = frozenset(("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]"))
GO_HEAP_NAMES = frozenset(("[anon: Go: heap]", "[anon: Go: heap reservation]"))
GO_STACK_NAMES = frozenset(("[anon: Go: OS thread stack]", "[anon: Go: goroutine stack (system)]"))
GLIBC_STACK_PREFIXES = ("[anon: glibc: pthread stack", "[anon: glibc: pthread user stack", "[anon: glibc: unused stack")
SHMEM_PREFIXES = ("/memfd:", "/SYSV", "/dev/shm/", "[anon_shmem:")


def is_shared_object(name: str) -> bool:
    """True for a path whose basename has ``.so`` at its end or before a ``.``."""
    base = name[name.rfind("/") + 1 :]
    i = base.find(".so")
    while i >= 0:
        j = i + 3
        if j == len(base) or base[j] == "." or base[j:] == " (deleted)":
            return True
        i = base.find(".so", j)
    return False


def by_name(name: str, perms: int, inode: int, dev: int, ctx: LayoutContext) -> int:
    """Category of a named mapping, or -1 when the name says nothing."""
    if name[0] == "[":
        if name == "[heap]":
            return C_MALLOC
        if name == "[stack]":
            return THREAD_STACKS
        if name in KERNEL_NAMES:
            return KERNEL
        if name.startswith("[anon: Go: "):
            # Go 1.25+ names its mappings where the kernel has
            # CONFIG_ANON_VMA_NAME (5.17+).
            if name in GO_HEAP_NAMES:
                return GO_HEAP
            if name in GO_STACK_NAMES:
                return THREAD_STACKS
            return GO_RUNTIME
        if name.startswith("[anon: glibc: "):
            # glibc 2.39+ with glibc.mem.decorate_maps=1.
            if name.startswith(GLIBC_STACK_PREFIXES):
                return THREAD_STACKS
            if name.startswith("[anon: glibc: malloc") or name.startswith("[anon: glibc: loader malloc"):
                return C_MALLOC
            if name.startswith("[anon: glibc: .bss"):
                return SHARED_LIBS
            return ANON_OTHER
        if name.startswith("[anon_shmem:"):
            return SHMEM
        return ANON_OTHER
    if name.startswith(SHMEM_PREFIXES) or (perms & PERM_S and name.startswith("/dev/zero")):
        return SHMEM
    if name == "/dev/zero" and not perms & PERM_S:
        # MAP_PRIVATE of /dev/zero is plain anonymous memory.
        return -1
    if name.startswith("anon_inode:"):
        # io_uring rings, perf buffers, dmabuf: kernel-owned pages.
        return KERNEL
    if inode == 0 and not name.startswith("/"):
        return -1
    if inode == ctx.exe_inode and dev == ctx.exe_dev:
        return BINARY
    if is_shared_object(name):
        return SHARED_LIBS
    return MAPPED_FILES
