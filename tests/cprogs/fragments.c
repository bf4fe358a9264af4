/* A C test subject for glibc's free memory: arenas full of holes.
 *
 * usage: fragments [SEED] [threads=N] [blocks=N] [mmaps=N] [corrupt] [leak]
 *
 * The main thread and THREADS pthreads (default 3) each malloc BLOCKS
 * (default 200000) blocks of 16 B - 4 KiB, some of 8 - 120 KiB, and then
 * free about half of them at random: small ones land in the tcache and the
 * fastbins, the rest in the unsorted, small and large bins, and each arena
 * keeps a top chunk. MMAPS (default 4) blocks above the mmap threshold are
 * mmapped chunks, in use. Everything kept is memset, so it is resident.
 *
 * "leak": after the report, a thread mallocs (and writes) 1 MiB, an
 * mmapped chunk, every 100 ms and never frees it: in-use C memory growing
 * by 10 MiB a second.
 *
 * "corrupt": after the report, a free chunk's fd in the main arena's
 * unsorted bin is made to point to itself (a cycle), as a heap overflow
 * might; glibc is not called again, so it never notices.
 *
 * Prints one JSON line with mallinfo2() (taken after the threads are
 * parked, so every arena is quiet) and waits for EOF on stdin.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long long rng_state;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready;
static size_t nblocks = 200000;

static unsigned long long rnd(unsigned long long *s) {
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return *s >> 33;
}

static size_t pick(unsigned long long *s) {
	unsigned long long r = rnd(s) % 1000;
	if (r < 5) return 8192 + rnd(s) % (120 * 1024);
	if (r < 400) return 16 + rnd(s) % 100;
	return 16 + rnd(s) % 4096;
}

static void churn(unsigned long long seed) {
	unsigned long long s = seed;
	char **p = malloc(nblocks * sizeof *p);
	if (p == NULL) exit(2);
	for (size_t i = 0; i < nblocks; i++) {
		size_t n = pick(&s);
		p[i] = malloc(n);
		if (p[i] == NULL) exit(2);
		memset(p[i], 0xa5, n);
	}
	for (size_t i = 0; i < nblocks; i++)
		if (rnd(&s) % 2) {
			free(p[i]);
			p[i] = NULL;
		}
}

static void *thread_main(void *arg) {
	churn((unsigned long long)(uintptr_t)arg);
	pthread_mutex_lock(&mu);
	ready++;
	pthread_cond_broadcast(&cv);
	for (;;) pthread_cond_wait(&cv, &mu);
	return NULL;
}

static void *leaker(void *arg) {
	(void)arg;
	for (;;) {
		char *p = malloc(1 << 20);
		if (p == NULL) exit(2);
		memset(p, 0x3c, 1 << 20);
		usleep(100000);
	}
	return NULL;
}

int main(int argc, char **argv) {
	unsigned long seed = 1;
	int nthreads = 3, nmaps = 4, corrupt = 0, leak = 0;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "threads=", 8)) nthreads = atoi(argv[i] + 8);
		else if (!strncmp(argv[i], "blocks=", 7)) nblocks = strtoul(argv[i] + 7, NULL, 10);
		else if (!strncmp(argv[i], "mmaps=", 6)) nmaps = atoi(argv[i] + 6);
		else if (!strcmp(argv[i], "corrupt")) corrupt = 1;
		else if (!strcmp(argv[i], "leak")) leak = 1;
		else seed = strtoul(argv[i], NULL, 10);
	}
	rng_state = seed;
	churn(seed * 7919);
	for (int i = 0; i < nmaps; i++) {
		size_t n = (1 + rnd(&rng_state) % 4) << 20;
		char *b = malloc(n);
		if (b == NULL) return 2;
		memset(b, 0x5a, n);
	}
	pthread_t t;
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&t, NULL, thread_main, (void *)(uintptr_t)(seed * 1000 + i + 1))) return 2;
	pthread_mutex_lock(&mu);
	while (ready < nthreads) pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);

	struct mallinfo2 mi = mallinfo2();
	char out[1024];
	int n = snprintf(out, sizeof out,
	                 "{\"pid\": %d, \"mallinfo2\": {\"arena\": %zu, \"ordblks\": %zu, \"smblks\": %zu, "
	                 "\"hblks\": %zu, \"hblkhd\": %zu, \"fsmblks\": %zu, \"uordblks\": %zu, "
	                 "\"fordblks\": %zu, \"keepcost\": %zu}}\n",
	                 (int)getpid(), mi.arena, mi.ordblks, mi.smblks, mi.hblks, mi.hblkhd, mi.fsmblks,
	                 mi.uordblks, mi.fordblks, mi.keepcost);
	if (corrupt) {
		/* Seven frees of one size fill its tcache bin; the eighth goes to
		 * the unsorted bin (600 bytes is no fastbin size). Blocks kept in
		 * between stop them coalescing. */
		char *q[8];
		for (int i = 0; i < 8; i++) {
			q[i] = malloc(600);
			if (malloc(32) == NULL) return 2;
		}
		for (int i = 0; i < 8; i++) free(q[i]);
		uintptr_t *chunk = (uintptr_t *)(q[7] - 16);
		chunk[2] = (uintptr_t)chunk; /* fd -> itself */
	}
	if (write(1, out, (size_t)n) != n) return 2;
	if (leak && pthread_create(&t, NULL, leaker, NULL)) return 2;
	char buf[256];
	while (read(0, buf, sizeof buf) > 0) {
	}
	return 0;
}
