"""The Go runtime's structures in a live process: its heap's page states
(``heap``), its off-heap metadata (``runtime``), and the layout tables for
binaries without DWARF (``tables``)."""
