// phases walks a Go + cgo program through the changes a memory sampler must
// follow, one phase at a time: live Go heap allocated in steps, dropped (a
// GC), released (debug.FreeOSMemory), C memory leaked in small chunks (from
// glibc's arena) and in large ones (each its own mmap), half of it freed.
// Every 50 ms it writes one JSON line to stdout with its own accounting at
// that moment: the phase and when it began, MemStats' heap figures,
// mallinfo2's and the C bytes it holds live. It exits after the last phase.
package main

/*
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

static void *leak(size_t n) {
	char *p = malloc(n);
	if (p == NULL) abort();
	memset(p, 0x5a, n);
	return p;
}

static void release(void *p) { free(p); }

static size_t arena_used(void) { return mallinfo2().uordblks; }
static size_t mmapped(void) { return mallinfo2().hblkhd; }
*/
import "C"

import (
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"
)

const mib = 1 << 20

type chunk struct {
	p unsafe.Pointer
	n int
}

var (
	mu         sync.Mutex
	phase      = "start"
	phaseStart = time.Now()
	live       [][]byte
	chunks     []chunk
	cLive      int
)

func begin(name string) {
	mu.Lock()
	phase, phaseStart = name, time.Now()
	mu.Unlock()
}

func report(out *json.Encoder) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mu.Lock()
	line := map[string]any{
		"t": float64(time.Now().UnixNano()) / 1e9, "phase": phase,
		"phase_start": float64(phaseStart.UnixNano()) / 1e9,
		"HeapInuse": ms.HeapInuse, "HeapIdle": ms.HeapIdle, "HeapReleased": ms.HeapReleased,
		"c_live": cLive, "uordblks": uint64(C.arena_used()), "hblkhd": uint64(C.mmapped()),
	}
	mu.Unlock()
	out.Encode(line)
}

func leak(n, size int) {
	for i := 0; i < n; i++ {
		p := C.leak(C.size_t(size))
		mu.Lock()
		chunks = append(chunks, chunk{p, size})
		cLive += size
		mu.Unlock()
	}
}

func main() {
	hold := flag.Duration("phase", 1500*time.Millisecond, "how long each phase lasts")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		for {
			select {
			case <-tick.C:
				report(out)
			case <-done:
				report(out)
				return
			}
		}
	}()
	time.Sleep(*hold)
	for step := 1; step <= 4; step++ {
		begin("alloc")
		for i := 0; i < 8; i++ {
			b := make([]byte, mib)
			for j := range b {
				b[j] = byte(j)
			}
			mu.Lock()
			live = append(live, b)
			mu.Unlock()
		}
		time.Sleep(*hold)
	}
	begin("drop")
	mu.Lock()
	live = nil
	mu.Unlock()
	runtime.GC()
	time.Sleep(*hold)
	begin("release")
	debug.FreeOSMemory()
	time.Sleep(*hold)
	begin("cleak small")
	leak(800, 20000) // below glibc's mmap threshold: from the main arena
	time.Sleep(*hold)
	begin("cleak large")
	leak(4, 8*mib) // above it: a mapping each
	time.Sleep(*hold)
	begin("cfree half")
	mu.Lock()
	for i := 0; i < len(chunks); i += 2 {
		C.release(chunks[i].p)
		cLive -= chunks[i].n
	}
	mu.Unlock()
	time.Sleep(*hold)
	close(done)
	time.Sleep(100 * time.Millisecond)
}
