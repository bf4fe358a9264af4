//go:build cgo

package main

/*
#include <stdlib.h>
#include <string.h>

// A few C allocations, so that a cgo build has glibc's arena in use as
// well as the Go heap.
static void cmalloc(void) {
	for (int i = 0; i < 64; i++) {
		char *p = malloc(20000);
		if (p == NULL) abort();
		memset(p, 1, 20000);
	}
}
*/
import "C"

func init() {
	C.cmalloc()
}
