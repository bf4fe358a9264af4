/* A C test subject for preloaded allocators: fragmented small objects, and
 * the allocator's own statistics to check memscan against.
 *
 * usage: allocstats [MIB] [big=MIB] [release]
 *
 * Mallocs MIB (default 64) MiB of small objects (32 - 496 bytes, cycling
 * through the size classes) and writes every byte, then frees every other
 * object: each slab (jemalloc) or span (tcmalloc) keeps about half its
 * objects, so almost no page goes back to the allocator's free pages and
 * the freed half stays resident, inside pages still in use. Then mallocs
 * BIG (default 16) MiB in one block, writes it and frees it: whole free
 * pages the allocator keeps (jemalloc: dirty, or muzzy under
 * MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:-1; tcmalloc: the page
 * heap's free spans). "release": tcmalloc's ReleaseFreeMemory() then.
 *
 * The allocator is found at run time through dlsym(), so one binary serves
 * all: jemalloc's mallctl() (after an "epoch" refresh) or gperftools'
 * C shim MallocExtension_GetNumericProperty(); glibc prints mallinfo2().
 *
 * Prints one JSON line ("live": the bytes the program still holds, as
 * requested) and waits for EOF on stdin.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define MIB (1UL << 20)

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
typedef int (*property_fn)(const char *, size_t *);
typedef void (*release_fn)(void);

static char out[4096];
static size_t used;

static void add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void add(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out + used, sizeof out - used, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof out - used) exit(3);
	used += (size_t)n;
}

static void jemalloc_stats(mallctl_fn mallctl) {
	uint64_t epoch = 1;
	size_t sz = sizeof epoch;
	if (mallctl("epoch", &epoch, &sz, &epoch, sz)) exit(4);
	/* Whole-process figures, then the merged arenas' (MALLCTL_ARENAS_ALL,
	 * 4096 in jemalloc 5) page counts of dirty and muzzy unused extents. */
	static const char *const names[] = {
		"stats.allocated", "stats.active", "stats.metadata", "stats.resident", "stats.mapped",
		"stats.retained", "stats.arenas.4096.pdirty", "stats.arenas.4096.pmuzzy",
	};
	add(", \"jemalloc\": {");
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		size_t v;
		sz = sizeof v;
		if (mallctl(names[i], &v, &sz, NULL, 0)) exit(4);
		add("%s\"%s\": %zu", i ? ", " : "", names[i] + 6, v);
	}
	ssize_t decay;
	sz = sizeof decay;
	if (mallctl("opt.dirty_decay_ms", &decay, &sz, NULL, 0)) exit(4);
	add(", \"dirty_decay_ms\": %zd", decay);
	sz = sizeof decay;
	if (mallctl("opt.muzzy_decay_ms", &decay, &sz, NULL, 0)) exit(4);
	add(", \"muzzy_decay_ms\": %zd}", decay);
}

static void tcmalloc_stats(property_fn get) {
	static const char *const names[] = {
		"generic.current_allocated_bytes", "generic.heap_size", "generic.total_physical_bytes",
		"tcmalloc.pageheap_free_bytes", "tcmalloc.pageheap_unmapped_bytes",
		"tcmalloc.central_cache_free_bytes", "tcmalloc.transfer_cache_free_bytes",
		"tcmalloc.thread_cache_free_bytes",
	};
	add(", \"tcmalloc\": {");
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		size_t v = 0;
		if (!get(names[i], &v)) exit(5);
		add("%s\"%s\": %zu", i ? ", " : "", strchr(names[i], '.') + 1, v);
	}
	add("}");
}

int main(int argc, char **argv) {
	size_t mib = 64, big = 16;
	int release = 0;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "big=", 4)) big = strtoul(argv[i] + 4, NULL, 10);
		else if (!strcmp(argv[i], "release")) release = 1;
		else mib = strtoul(argv[i], NULL, 10);
	}
	/* Sizes 32, 48, ... 496: a run of every small size class. */
	size_t n = 0, total = 0;
	while (total < mib * MIB) total += 32 + (n++ % 30) * 16;
	char **p = malloc(n * sizeof *p);
	if (p == NULL) return 2;
	size_t live = n * sizeof *p;
	for (size_t i = 0; i < n; i++) {
		size_t sz = 32 + (i % 30) * 16;
		p[i] = malloc(sz);
		if (p[i] == NULL) return 2;
		memset(p[i], 0xa5, sz);
		if (i % 2 == 0) live += sz;
	}
	for (size_t i = 1; i < n; i += 2) {
		free(p[i]);
		p[i] = NULL;
	}
	if (big) {
		char *b = malloc(big * MIB);
		if (b == NULL) return 2;
		memset(b, 0x5a, big * MIB);
		/* Keeps the memset: a store to memory freed next is dead to gcc. */
		__asm__ volatile("" : : "r"(b) : "memory");
		free(b);
	}

	add("{\"pid\": %d, \"objects\": %zu, \"live\": %zu", (int)getpid(), n - n / 2, live);
	mallctl_fn mallctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
	property_fn get = (property_fn)dlsym(RTLD_DEFAULT, "MallocExtension_GetNumericProperty");
	if (mallctl != NULL) {
		jemalloc_stats(mallctl);
	} else if (get != NULL) {
		if (release) ((release_fn)dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"))();
		tcmalloc_stats(get);
	} else {
		struct mallinfo2 mi = mallinfo2();
		add(", \"mallinfo2\": {\"arena\": %zu, \"uordblks\": %zu, \"fordblks\": %zu}", mi.arena, mi.uordblks,
		    mi.fordblks);
	}
	add("}\n");
	if (write(1, out, used) != (ssize_t)used) return 2;
	char buf[256];
	while (read(0, buf, sizeof buf) > 0) {
	}
	return 0;
}
