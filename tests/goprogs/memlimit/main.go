// Command memlimit is a test subject for memscan: a Go program whose
// runtime memory limit is known, to compare with what memscan reads.
//
// usage: memlimit [-set BYTES]
//
// With -set it calls debug.SetMemoryLimit(BYTES) (GOMEMLIMIT from the
// environment applies otherwise), prints one JSON line {"pid",
// "memory_limit"}, memory_limit being debug.SetMemoryLimit(-1), the limit
// in force, and runs until its stdin is closed.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"runtime/debug"
)

func main() {
	set := flag.Int64("set", -1, "debug.SetMemoryLimit(BYTES) at start (-1: leave it)")
	flag.Parse()
	if *set >= 0 {
		debug.SetMemoryLimit(*set)
	}
	line, _ := json.Marshal(map[string]int64{"pid": int64(os.Getpid()), "memory_limit": debug.SetMemoryLimit(-1)})
	os.Stdout.Write(append(line, '\n'))
	io.Copy(io.Discard, os.Stdin)
}
