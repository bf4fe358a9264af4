/* A C test subject for memscan.cmalloc: known glibc malloc state.
 *
 * usage: mallocs [SEED] [forge] [plain] [threads=N] [chunks=N] [exited=N] [arenamib=N]
 *
 * Builds, in this order, and never frees any of it (a free of an mmapped
 * chunk would raise glibc's dynamic mmap threshold):
 *   - small blocks in the main thread: the main arena, [heap];
 *   - THREADS pthreads (default 3), each with small blocks in its own arena
 *     (a 64 MiB-aligned heap; with arenamib=N the first thread adds N MiB
 *     in 100 KiB blocks, a second heap past 64) and one mmapped chunk, then
 *     parked forever;
 *   - EXITED more such threads (default 0) that exit and are joined: their
 *     stacks stay in glibc's stack cache, their arenas on its free list;
 *   - CHUNKS (default 30) blocks of 132 KiB - 6 MiB: mmapped chunks made by
 *     malloc, memalign/posix_memalign/aligned_alloc, calloc and realloc
 *     (mremap); one more chunk is made and freed (munmap) in the middle;
 *   - one mmap of its own (not malloc) that must not be taken for a chunk;
 *     with "forge" its second page starts with a fake chunk header
 *     (0, 0x40002) that only mp_.n_mmaps can expose.
 * Every byte it allocates is memset, so it is resident.
 *
 * Then it prints one JSON line (ground truth: every chunk's mapping start and
 * length from its own header, the thread arenas' heaps, the threads' stacks,
 * the bytes touched, mallinfo2()) and waits for EOF on stdin.
 *
 * "plain": another allocator is preloaded (jemalloc, tcmalloc): do not read
 * glibc chunk headers; "chunks" then lists (user pointer, request).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KIB 1024UL
#define MIB (1024UL * 1024UL)
#define HEAP_MAX (64UL * MIB) /* glibc HEAP_MAX_SIZE on 64-bit */
#define MAX_ITEMS 256

static int plain;
static size_t touched;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready;

struct item { uintptr_t addr; size_t len; uintptr_t header[2]; };
static struct item chunks[MAX_ITEMS];
static int nchunks;
static size_t in_arena; /* bytes of big requests an arena served */

static unsigned long long rng_state;
static unsigned long long rnd(void) {
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return rng_state >> 33;
}
static size_t between(size_t lo, size_t hi) { return lo + rnd() % (hi - lo + 1); }

static void fill(void *p, size_t n) {
	if (p == NULL) { perror("alloc"); exit(2); }
	memset(p, 0xa5, n);
	__atomic_add_fetch(&touched, n, __ATOMIC_RELAXED);
}

/* Record an mmapped chunk: glibc <= 2.42 keeps (prev_size = offset of the
 * chunk in its mapping, size = (len - offset) | IS_MMAPPED) 16 bytes below
 * the user pointer (malloc/malloc.c, sysmalloc_mmap). */
static void record(void *user, size_t request) {
	pthread_mutex_lock(&mu);
	if (nchunks == MAX_ITEMS) { fprintf(stderr, "too many chunks\n"); exit(2); }
	struct item *it = &chunks[nchunks++];
	if (plain) {
		it->addr = (uintptr_t)user;
		it->len = request;
	} else {
		uintptr_t *h = (uintptr_t *)((char *)user - 16);
		it->header[0] = h[0];
		it->header[1] = h[1];
		if (!(h[1] & 2)) {
			/* Served by an arena's top, threshold or not (a big top, as
			 * with glibc.malloc.hugetlb=1): no chunk of its own. */
			nchunks--;
			in_arena += request;
			pthread_mutex_unlock(&mu);
			return;
		}
		it->addr = (uintptr_t)h - h[0];
		it->len = h[0] + (h[1] & ~(uintptr_t)7);
	}
	pthread_mutex_unlock(&mu);
}

static char outbuf[1 << 20];
static size_t outlen;

__attribute__((format(printf, 1, 2))) static void out(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(outbuf + outlen, sizeof outbuf - outlen, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof outbuf - outlen) { fprintf(stderr, "output too long\n"); exit(2); }
	outlen += (size_t)n;
}

struct thread_info { pthread_t self; uintptr_t heap, stack_lo, stack_hi, guard; size_t arena_mib; int exits; };
static struct thread_info tinfo[64];

static void *thread_main(void *arg) {
	struct thread_info *ti = arg;
	ti->self = pthread_self();
	/* The first malloc of a thread gives it an arena of its own (while
	 * there are fewer than 8 x ncpu). */
	char *first = NULL;
	for (int i = 0; i < 300; i++) {
		size_t n = between(200, 12000);
		char *p = malloc(n);
		fill(p, n);
		if (first == NULL) first = p;
	}
	uintptr_t size_word = ((uintptr_t *)(first - 16))[1];
	ti->heap = (!plain && (size_word & 4)) ? ((uintptr_t)first & ~(HEAP_MAX - 1)) : 0;
	/* More than a heap's 64 MiB: the arena gets a second heap. 100 KiB is
	 * below the mmap threshold (which never rose: nothing was freed yet). */
	for (size_t done = 0; done < ti->arena_mib * MIB; done += 100 * KIB)
		fill(malloc(100 * KIB), 100 * KIB);
	size_t big = between(300 * KIB, 3 * MIB);
	void *b = malloc(big);
	fill(b, big);
	record(b, big);
	pthread_attr_t attr;
	void *addr;
	size_t size, guard;
	if (pthread_getattr_np(pthread_self(), &attr) == 0) {
		pthread_attr_getstack(&attr, &addr, &size);
		pthread_attr_getguardsize(&attr, &guard);
		ti->stack_lo = (uintptr_t)addr;
		ti->stack_hi = (uintptr_t)addr + size;
		ti->guard = guard;
		pthread_attr_destroy(&attr);
	}
	pthread_mutex_lock(&mu);
	ready++;
	pthread_cond_broadcast(&cv);
	/* Exiting: the stack goes to glibc's stack cache, the arena to its
	 * free list; both stay mapped. Else parked: arena and stack in use. */
	while (!ti->exits) pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	return NULL;
}

int main(int argc, char **argv) {
	unsigned long seed = 1;
	int nthreads = 3, nbig = 30, forge = 0, nexited = 0;
	size_t arena_mib = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "forge")) forge = 1;
		else if (!strcmp(argv[i], "plain")) plain = 1;
		else if (!strncmp(argv[i], "threads=", 8)) nthreads = atoi(argv[i] + 8);
		else if (!strncmp(argv[i], "chunks=", 7)) nbig = atoi(argv[i] + 7);
		else if (!strncmp(argv[i], "exited=", 7)) nexited = atoi(argv[i] + 7);
		else if (!strncmp(argv[i], "arenamib=", 9)) arena_mib = strtoul(argv[i] + 9, NULL, 0);
		else seed = strtoul(argv[i], NULL, 0);
	}
	if (nthreads > 32) nthreads = 32;
	if (nexited > 32) nexited = 32;
	tinfo[0].arena_mib = arena_mib;
	rng_state = seed;

	/* Main arena: [heap]. */
	for (int i = 0; i < 2000; i++) {
		size_t n = between(16, 4000);
		fill(malloc(n), n);
	}

	for (int i = 0; i < nthreads; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, thread_main, &tinfo[i])) { perror("pthread_create"); return 2; }
		/* One at a time, so that each gets a fresh arena of its own. */
		pthread_mutex_lock(&mu);
		while (ready < i + 1) pthread_cond_wait(&cv, &mu);
		pthread_mutex_unlock(&mu);
	}
	/* Threads that exit (joined): created after the live ones, so that
	 * they get arenas of their own rather than reusing one. */
	pthread_t exiting[32];
	for (int i = nthreads; i < nthreads + nexited; i++) {
		if (pthread_create(&exiting[i - nthreads], NULL, thread_main, &tinfo[i])) { perror("pthread_create"); return 2; }
		pthread_mutex_lock(&mu);
		while (ready < i + 1) pthread_cond_wait(&cv, &mu);
		pthread_mutex_unlock(&mu);
	}
	/* All of them exist before any exits: none reuses another's stack or arena. */
	pthread_mutex_lock(&mu);
	for (int i = nthreads; i < nthreads + nexited; i++) tinfo[i].exits = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	for (int i = 0; i < nexited; i++)
		if (pthread_join(exiting[i], NULL)) { perror("pthread_join"); return 2; }

	void *doomed = NULL;
	for (int i = 0; i < nbig; i++) {
		size_t n = between(132 * KIB, 6 * MIB);
		void *p = NULL;
		switch (i % 10) {
		case 3: { /* memalign family: the real chunk sits inside the mapping */
			size_t align = (size_t)4096 << (rnd() % 9); /* 4 KiB .. 1 MiB */
			int how = (i / 10) % 3;
			if (how == 0) p = memalign(align, n);
			else if (how == 1) { if (posix_memalign(&p, align, n)) p = NULL; }
			else { n = (n + align - 1) / align * align; p = aligned_alloc(align, n); }
			break;
		}
		case 5:
			p = calloc(1, n);
			break;
		case 7: { /* realloc of an mmapped chunk: mremap */
			void *q = malloc(between(132 * KIB, 6 * MIB));
			if (q == NULL) { perror("malloc"); return 2; }
			p = realloc(q, n);
			break;
		}
		case 8:
			if (doomed == NULL) {
				doomed = malloc(between(200 * KIB, 2 * MIB));
				if (doomed == NULL) { perror("malloc"); return 2; }
			}
			/* fall through */
		default:
			p = malloc(n);
		}
		fill(p, n);
		record(p, n);
	}
	free(doomed); /* unmapped: a hole among the chunks */

	/* Not malloc: an mmap of our own, merged with its neighbours if the
	 * kernel can (same flags); 3 MiB + 12 KiB is no 2 MiB multiple. */
	size_t flen = 3 * MIB + 12 * KIB;
	char *foreign = mmap(NULL, flen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (foreign == MAP_FAILED) { perror("mmap"); return 2; }
	memset(foreign, 0x5a, flen);
	uintptr_t forged = 0;
	if (forge) {
		uintptr_t *h = (uintptr_t *)(foreign + 4096);
		h[0] = 0;
		h[1] = 0x40000 | 2;
		forged = (uintptr_t)h;
	}

	/* Printed with snprintf into a static buffer and one write(), read
	 * with read(): stdio would malloc its buffers after mallinfo2() (and
	 * could grow [heap] behind the ground truth's back). */
	struct mallinfo2 mi = mallinfo2();
	out("{\"pid\": %d, \"seed\": %lu, \"plain\": %d, \"touched\": %zu", (int)getpid(), seed, plain, touched);
	out(", \"big_in_arena\": %zu", in_arena);
	out(", \"foreign\": [%lu, %zu], \"forged\": %lu", (unsigned long)(uintptr_t)foreign, flen, (unsigned long)forged);
	out(", \"chunks\": [");
	for (int i = 0; i < nchunks; i++)
		out("%s[%lu, %zu, %lu, %lu]", i ? ", " : "", (unsigned long)chunks[i].addr, chunks[i].len,
		    (unsigned long)chunks[i].header[0], (unsigned long)chunks[i].header[1]);
	out("], \"threads\": [");
	for (int i = 0; i < nthreads; i++)
		out("%s{\"self\": %lu, \"heap\": %lu, \"stack\": [%lu, %lu], \"guard\": %lu}", i ? ", " : "",
		    (unsigned long)tinfo[i].self, (unsigned long)tinfo[i].heap, (unsigned long)tinfo[i].stack_lo,
		    (unsigned long)tinfo[i].stack_hi, (unsigned long)tinfo[i].guard);
	out("], \"exited\": [");
	for (int i = nthreads; i < nthreads + nexited; i++)
		out("%s{\"self\": %lu, \"heap\": %lu, \"stack\": [%lu, %lu], \"guard\": %lu}", i > nthreads ? ", " : "",
		    (unsigned long)tinfo[i].self, (unsigned long)tinfo[i].heap, (unsigned long)tinfo[i].stack_lo,
		    (unsigned long)tinfo[i].stack_hi, (unsigned long)tinfo[i].guard);
	out("], \"mallinfo2\": {\"arena\": %zu, \"ordblks\": %zu, \"hblks\": %zu, \"hblkhd\": %zu, "
	    "\"uordblks\": %zu, \"fordblks\": %zu, \"keepcost\": %zu}}\n",
	    mi.arena, mi.ordblks, mi.hblks, mi.hblkhd, mi.uordblks, mi.fordblks, mi.keepcost);
	for (size_t done = 0; done < outlen;) {
		ssize_t n = write(1, outbuf + done, outlen - done);
		if (n <= 0) return 2;
		done += (size_t)n;
	}

	char buf[256];
	while (read(0, buf, sizeof buf) > 0) {
	}
	return 0;
}
