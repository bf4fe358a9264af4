// Command memscandemo is a test subject for memscan: it puts known amounts of
// memory into each place memscan attributes (live Go heap, freed Go heap,
// goroutine stacks and, with cgo, glibc mmapped chunks, arenas and pthreads),
// prints one JSON line with the runtime's own accounting, and then answers
// commands on stdin so tests can change its memory and compare again.
//
// Protocol: after setup one JSON report on stdout; then one command per line
// on stdin, each answered by exactly one JSON line:
//
//	stats       report again
//	gc          runtime.GC(), then report
//	alloc MiB   allocate and keep MiB more live heap, then report
//	drop        drop the live heap and runtime.GC(): freed heap the runtime
//	            keeps until its scavenger returns it; then report
//	release     debug.FreeOSMemory(): what the scavenger returns over minutes,
//	            now; then report
//	free        drop + release, then report
//	cleak MiB   (cgo) malloc+memset MiB more C memory, never freed, then report
//	quit        answer {"quit":true} and exit 0 (EOF exits too)
//
// Unknown or failing commands are answered with {"error": "..."}.
//
// With -http ADDR the program also serves expvar (/debug/vars: memstats,
// cmdline) on ADDR, e.g. 127.0.0.1:0; every report then carries the bound
// address as "http".
package main

import (
	"bufio"
	"encoding/json"
	_ "expvar" // registers /debug/vars on http.DefaultServeMux
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
)

const mib = 1 << 20

// live keeps the -heap slices reachable: a package-level variable is a GC
// root, so nothing here is collected until "free" drops it.
var live [][]byte

// park is never closed or sent to: goroutines blocked on it stay parked
// (state "chan receive") with their stacks intact for the whole run.
var park = make(chan struct{})

// httpAddr is the address -http is served on once bound ("" without -http).
var httpAddr string

// alloc returns n MiB of Go heap in 1 MiB slices, every byte written so all
// pages are resident (a fresh span may be zeroed lazily by the OS; writing
// only the first byte of each page would be enough for RSS, but writing all
// keeps "touched" unambiguous).
func alloc(n int) [][]byte {
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		b := make([]byte, mib)
		for j := range b {
			b[j] = byte(j + 1)
		}
		out = append(out, b)
	}
	return out
}

// frameBytes × depth ≈ 48 KiB of stack in use per goroutine. Stacks grow by
// doubling, so each goroutine ends on a 64 KiB stack, and since it uses more
// than 1/4 of it the GC never shrinks it.
const (
	frameBytes = 1024
	depth      = 48
)

// deep recurses with a 1 KiB local array per frame. The array is read after
// the recursive call returns, so the compiler must keep every frame's copy
// alive on the stack (it is too small to be moved to the heap).
func deep(n int, ready *sync.WaitGroup) byte {
	var pad [frameBytes]byte
	for i := range pad {
		pad[i] = byte(n + i)
	}
	if n > 0 {
		pad[0] += deep(n-1, ready)
	} else {
		ready.Done()
		<-park
	}
	return pad[n%frameBytes]
}

// report builds the JSON answer. ReadMemStats, the metrics and mallinfo2 are
// read last, right before printing, so they describe the memory as it is
// when the line appears.
func report() map[string]any {
	r := map[string]any{
		"pid":        os.Getpid(),
		"go_version": runtime.Version(),
		"cgo":        haveCgo,
		"live_heap":  len(live) * mib,
	}
	if httpAddr != "" {
		r["http"] = httpAddr
	}

	// Every integer field of MemStats, by reflection so that nothing is
	// forgotten; the arrays (PauseNs, BySize…), floats and bools are skipped.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	stats := map[string]uint64{}
	v := reflect.ValueOf(ms)
	for i := 0; i < v.NumField(); i++ {
		switch f := v.Field(i); f.Kind() {
		case reflect.Uint64, reflect.Uint32:
			stats[v.Type().Field(i).Name] = f.Uint()
		}
	}
	r["memstats"] = stats

	// /memory/classes/ partitions everything the runtime mapped (its total is
	// /memory/classes/total:bytes = MemStats.Sys); all are uint64 gauges.
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") && d.Kind == metrics.KindUint64 {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	classes := map[string]uint64{}
	for _, s := range samples {
		classes[s.Name] = s.Value.Uint64()
	}
	r["metrics"] = classes

	if haveCgo {
		cReport(r) // mallinfo2 and the C byte counters, read last
	}
	return r
}

func emit(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	// os.Stdout is unbuffered: one Write is one line, no flush needed.
	os.Stdout.Write(append(line, '\n'))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "memscandemo: "+format+"\n", args...)
	os.Exit(2)
}

// mibArg is the MiB argument of a command such as "alloc 64"; a missing
// or bad one is answered with the command's usage (ok false).
func mibArg(fields []string) (n int, ok bool) {
	var err error
	if len(fields) == 2 {
		n, err = strconv.Atoi(fields[1])
	}
	if len(fields) != 2 || err != nil || n <= 0 {
		emit(map[string]any{"error": "usage: " + fields[0] + " MiB"})
		return 0, false
	}
	return n, true
}

func main() {
	heap := flag.Int("heap", 0, "MiB of live Go heap kept reachable")
	garbage := flag.Int("garbage", 0, "MiB of Go heap allocated, touched and dropped (freed, still mapped)")
	goroutines := flag.Int("goroutines", 0, "parked goroutines with ~48 KiB of stack each")
	cmalloc := flag.Int("cmalloc", 0, "cgo: MiB in one malloc (an mmapped chunk)")
	csmall := flag.Int("csmall", 0, "cgo: number of malloc(20000) (main or thread arena)")
	cthreads := flag.Int("cthreads", 0, "cgo: C pthreads each touching 1 MiB of small mallocs, then parked")
	serve := flag.String("http", "", "serve expvar (/debug/vars) on this address, e.g. 127.0.0.1:0")
	flag.Parse()
	if !haveCgo && (*cmalloc > 0 || *csmall > 0 || *cthreads > 0) {
		fail("-cmalloc, -csmall and -cthreads need a cgo build (CGO_ENABLED=1)")
	}

	live = alloc(*heap)
	if *garbage > 0 {
		// Allocated after the live heap so it cannot reuse its pages. After
		// the GC its spans are free (HeapIdle) but stay resident: the
		// runtime returns them to the OS only gradually (background
		// scavenger) or on FreeOSMemory.
		g := alloc(*garbage)
		g = nil
		_ = g
		runtime.GC()
	}

	var ready sync.WaitGroup
	ready.Add(*goroutines)
	for i := 0; i < *goroutines; i++ {
		go deep(depth, &ready)
	}
	ready.Wait() // every goroutine is at full depth before we report

	if *cmalloc > 0 {
		cBig(uint64(*cmalloc) * mib)
	}
	if *csmall > 0 {
		cSmall(*csmall, 20000)
	}
	if *cthreads > 0 {
		cThreads(*cthreads, mib)
	}

	if *serve != "" {
		// Bound before the first report, which carries the address (a port
		// of 0 is chosen by the kernel); served after the memory is set up.
		ln, err := net.Listen("tcp", *serve)
		if err != nil {
			fail("-http: %v", err)
		}
		httpAddr = ln.Addr().String()
		go http.Serve(ln, nil)
	}

	emit(report())

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "stats":
		case "gc":
			runtime.GC()
		case "alloc":
			n, ok := mibArg(fields)
			if !ok {
				continue
			}
			live = append(live, alloc(n)...)
		case "drop":
			live = nil
			runtime.GC()
		case "release":
			debug.FreeOSMemory()
		case "free":
			live = nil
			runtime.GC()
			// FreeOSMemory = another GC + scavenge everything: one GC alone
			// does not return the just-freed heap (the scavenger's goal still
			// counts it; runtime/mgcscavenge.go).
			debug.FreeOSMemory()
		case "cleak":
			n, ok := mibArg(fields)
			if !ok {
				continue
			}
			if !haveCgo {
				emit(map[string]any{"error": "cleak needs a cgo build"})
				continue
			}
			cLeak(uint64(n) * mib)
		case "quit":
			emit(map[string]any{"quit": true})
			os.Exit(0)
		default:
			emit(map[string]any{"error": "unknown command " + strconv.Quote(fields[0])})
			continue
		}
		emit(report())
	}
}
