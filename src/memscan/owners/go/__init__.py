"""The Go runtime's structures in a live process: its heap's page states
(``heap``, per-page bitmaps in ``bits``) and its off-heap metadata
(``runtime``), read by the runtime's layout (``layout``), which each binary
(``binary``) gets from its DWARF (``dwarf``) or, without DWARF, from the
shipped tables (``tables``); without symbols either, mheap_ and allp are
searched for in the target (``search``)."""
