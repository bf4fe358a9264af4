// Command allocator is a test subject for memscan: a Go program whose heap
// changes all the time, and which can exit on its own at a chosen moment.
//
// usage: allocator [-workers N] [-heap MiB] [-exit USEC]
//
// It keeps -heap MiB of live heap (every byte written), starts -workers
// goroutines (default GOMAXPROCS: one per core) that allocate objects of
// mixed sizes flat out and drop them, prints one JSON line {"pid",
// "workers", "touched"} and then runs until its stdin is closed, or exits
// -exit microseconds after the report: scans that follow see it alive,
// exiting, a zombie or reaped.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"runtime"
	"time"
)

const mib = 1 << 20

// live keeps the -heap slices reachable (a package-level variable is a GC root).
var live [][]byte

// sizes spans the runtime's tiny, small and large allocations (the largest
// size class is 32 KiB, malloc.go): spans of every kind are allocated,
// swept, freed and reused while memscan reads them.
var sizes = [...]int{8, 48, 200, 1024, 4000, 9000, 33000, 70000, 200000}

// churn allocates forever, keeping the last few hundred objects: the GC
// runs many times a second and frees the rest.
func churn(seed int) {
	keep := make([][]byte, 256)
	for i := seed; ; i++ {
		b := make([]byte, sizes[i%len(sizes)])
		b[0] = byte(i)
		keep[i%len(keep)] = b
	}
}

func main() {
	workers := flag.Int("workers", runtime.GOMAXPROCS(0), "goroutines allocating flat out")
	heap := flag.Int("heap", 0, "MiB of live heap kept reachable")
	exit := flag.Int("exit", -1, "exit this many microseconds after the report (-1: at EOF on stdin)")
	flag.Parse()
	for i := 0; i < *heap; i++ {
		b := make([]byte, mib)
		for j := range b {
			b[j] = byte(j + 1)
		}
		live = append(live, b)
	}
	for w := 0; w < *workers; w++ {
		go churn(w * 7)
	}
	line, _ := json.Marshal(map[string]int{"pid": os.Getpid(), "workers": *workers, "touched": *heap * mib})
	os.Stdout.Write(append(line, '\n'))
	if *exit >= 0 {
		time.Sleep(time.Duration(*exit) * time.Microsecond)
		os.Exit(0)
	}
	io.Copy(io.Discard, os.Stdin)
}
