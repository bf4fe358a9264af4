"""The exact tier's owners: readers of the structures of a live process's
allocators (the Go heap and runtime, the C allocator), through one reader of
its memory (``memory``), that claim address ranges for a category."""
