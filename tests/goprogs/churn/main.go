// churn allocates flat out on every core: GOMAXPROCS goroutines each keep a
// ring of recently allocated objects of mixed sizes (small, medium, large:
// every size class path of the allocator, and whole spans for the large
// ones) and replace one slot per allocation, so spans are made and freed,
// page caches refilled and the GC runs all the time, while the live heap
// stays around -live MiB.
//
// It prints one JSON line ({"ready": true, "procs": N}) once every
// goroutine runs, then one JSON line of runtime.MemStats per "stats" line on
// stdin, and exits at "quit" or end of input.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"sync"
)

// Sizes cycled through: tiny and small objects (size classes), a few pages
// (one span each) and large objects (dedicated spans of many pages).
var sizes = []int{16, 48, 256, 1024, 4096, 9000, 32 << 10, 100 << 10, 1 << 20}

func churn(slots int, started *sync.WaitGroup) {
	ring := make([][]byte, slots)
	started.Done()
	for i := 0; ; i++ {
		b := make([]byte, sizes[i%len(sizes)])
		b[0] = byte(i) // touched: its pages are resident
		ring[(i*7919)%slots] = b
	}
}

func main() {
	live := flag.Int("live", 64, "MiB kept live (about) across all goroutines")
	flag.Parse()
	procs := runtime.GOMAXPROCS(0)
	avg := 0
	for _, s := range sizes {
		avg += s
	}
	avg /= len(sizes)
	slots := (*live << 20) / avg / procs
	if slots < 1 {
		slots = 1
	}
	var started sync.WaitGroup
	started.Add(procs)
	for i := 0; i < procs; i++ {
		go churn(slots, &started)
	}
	started.Wait()
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "procs": procs})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "stats":
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			out.Encode(ms)
		case "quit":
			return
		}
	}
}
