"""The kernel's pagemap ABI (Documentation/admin-guide/mm/pagemap.rst,
include/uapi/linux/fs.h): the entry bits of /proc/PID/pagemap and the
PAGEMAP_SCAN ioctl (6.7+), declared by hand as older headers lack it."""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# One 64-bit entry per page of /proc/PID/pagemap.
PM_PRESENT = 1 << 63
PM_SWAPPED = 1 << 62
PM_EXCLUSIVE = 1 << 56  # mapped by this process alone (4.2+)
PM_PFN_MASK = (1 << 55) - 1  # 0 unless the opener of pagemap has CAP_SYS_ADMIN

PAGEMAP_SCAN = 0xC0606610  # _IOWR('f', 16, struct pm_scan_arg), sizeof == 96
PM_SCAN_ARG_SIZE = 96  # struct pm_scan_arg: 12 u64
PAGE_REGION_WORDS = 3  # struct page_region: start, end, categories (u64 each)
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
PAGE_IS_PFNZERO = 1 << 5
