//go:build !cgo

package main

// Without cgo there is no C allocator to exercise: main refuses the C flags
// and commands before any of these could be called.

const haveCgo = false

func cBig(n uint64)                 { panic("no cgo") }
func cLeak(n uint64)                { panic("no cgo") }
func cSmall(count int, size uint64) { panic("no cgo") }
func cThreads(n int, each uint64)   { panic("no cgo") }
func cReport(r map[string]any)      { panic("no cgo") }
