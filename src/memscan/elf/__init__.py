"""What a mapped ELF file tells the classifier: Go build info, .bss, allocator.

Every ELF structure (header, program headers, sections, notes, dynamic
table) is read with pyelftools; only Go's ``.go.buildinfo`` blob is decoded
by hand, since that is Go's format, not ELF's.

- :mod:`.module`: :func:`module_info` (cached, never raises) and
  :func:`read_module` (uncached) give a file's :class:`ModuleInfo`.
- :mod:`.buildinfo`: the :class:`GoInfo` of a Go module's ``.go.buildinfo``.
- :mod:`.names`: :func:`mapped_path` lists the paths to try for a file
  mapping of a live process, :func:`allocator` names the C allocator from the
  loaded shared objects, :func:`is_shared_object_name` tells libraries from
  other files.
"""

from __future__ import annotations

from .buildinfo import GoInfo
from .module import PAGE_SIZE, ModuleInfo, cache_info, module_info, read_module
from .names import allocator, is_shared_object_name, mapped_path, strip_deleted

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
    "strip_deleted",
]
