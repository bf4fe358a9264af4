/* A target with many mappings, optionally changing them all the time.
 *
 * usage: mappings N [churn]
 *
 * Maps N pages as one anonymous region, writes every page, then makes every
 * other page read-only: N mappings the kernel cannot merge (mind
 * vm.max_map_count, 65530 by default). With "churn", two threads then
 * change the address space without pause: one mallocs and frees chunks of
 * 128 KiB - 4 MiB (glibc serves them by mmap and munmap: M_MMAP_THRESHOLD
 * is fixed at 128 KiB) and small blocks (its own arena's heap grows and
 * shrinks), the other maps, writes and unmaps 64 KiB regions.
 *
 * A 1 MiB .bss, written too, lies in an anonymous mapping of its own that
 * only the binary's ELF headers tell apart.
 *
 * Prints one JSON line {"pid", "mappings", "touched", "bss"} (N, the bytes
 * of the region, the size of the .bss) once all is in place, then waits
 * for EOF on stdin.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL

static char bss[256 * PAGE];

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void *churn_malloc(void *arg)
{
	unsigned long long x = (unsigned long long)(size_t)arg;
	void *small[64] = {0};
	for (unsigned long i = 0;; i++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		size_t len = (128 * 1024) + (size_t)(x >> 33) % (4UL << 20);
		char *p = malloc(len);
		if (p == NULL)
			die("malloc");
		memset(p, 1, PAGE); /* one resident page per chunk */
		free(p);
		free(small[i % 64]);
		small[i % 64] = malloc(1 + (size_t)(x >> 40) % 8192);
	}
	return NULL;
}

static void *churn_mmap(void *arg)
{
	(void)arg;
	for (;;) {
		char *p = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			die("mmap churn");
		p[0] = 1;
		if (munmap(p, 16 * PAGE))
			die("munmap");
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "churn") != 0)) {
		fprintf(stderr, "usage: mappings N [churn]\n");
		return 2;
	}
	size_t n = strtoul(argv[1], NULL, 10);
	char *region = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap");
	madvise(region, n * PAGE, MADV_NOHUGEPAGE); /* a THP would merge nothing but blur Rss */
	memset(region, 1, n * PAGE);
	memset(bss, 1, sizeof bss);
	for (size_t i = 1; i < n; i += 2)
		if (mprotect(region + i * PAGE, PAGE, PROT_READ))
			die("mprotect");
	if (argc == 3) {
		pthread_t t;
		if (!mallopt(M_MMAP_THRESHOLD, 128 * 1024))
			die("mallopt");
		if (pthread_create(&t, NULL, churn_malloc, (void *)(size_t)getpid()) ||
		    pthread_create(&t, NULL, churn_mmap, NULL))
			die("pthread_create");
	}
	printf("{\"pid\": %d, \"mappings\": %zu, \"touched\": %zu, \"bss\": %zu}\n", (int)getpid(), n, n * PAGE,
	       sizeof bss);
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0) {
	}
	return 0;
}
