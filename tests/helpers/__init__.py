"""What the tests share: programs to scan (Go, C), the Go toolchains, smaps
text, the engines, and checks used by more than one test module."""
