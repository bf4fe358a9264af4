/* Benchmark target: mmap/munmap in a loop, counting operations, so that a
 * sampler's cost to the target shows as lost throughput (mmap_lock
 * taken for write on every call).
 *
 * First maps a ballast of N one-page VMAs (one anonymous region, every page
 * touched, every other page mprotect'ed PROT_READ so neighbours cannot
 * merge), then loops on: mmap 64 KiB anonymous, touch one page, munmap.
 * mmap and munmap take the mmap_lock for writing, so every reader that
 * walks the page tables (smaps, smaps_rollup, pagemap, PAGEMAP_SCAN) stalls
 * the loop while it holds the lock for reading.
 *
 * A second thread answers stdin: each line read is answered with one line
 * "<operations so far> <CLOCK_MONOTONIC ns>\n"; EOF exits. It prints
 * "ready\n" once the ballast is in place and the loop has started.
 *
 *     churn [N]        (N: ballast VMAs, default 1000; 0 for none)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

static atomic_ulong ops;

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

/* Answers each request line with the count and the time; exits on EOF. */
static void *reporter(void *arg)
{
    (void)arg;
    char buf[256];
    for (;;) {
        ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
        if (got == 0)
            exit(0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            exit(1);
        }
        for (ssize_t i = 0; i < got; i++) {
            if (buf[i] != '\n')
                continue;
            char line[64];
            int len = snprintf(line, sizeof line, "%lu %llu\n",
                               atomic_load_explicit(&ops, memory_order_relaxed), now_ns());
            if (write(STDOUT_FILENO, line, (size_t)len) != len)
                exit(1);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long n = 1000;
    if (argc > 2) {
        fprintf(stderr, "usage: %s [ballast VMAs]\n", argv[0]);
        return 2;
    }
    if (argc == 2) {
        char *end = NULL;
        errno = 0;
        n = strtol(argv[1], &end, 10);
        if (errno || end == argv[1] || *end || n < 0) {
            fprintf(stderr, "churn: bad VMA count %s\n", argv[1]);
            return 2;
        }
    }
    long page = sysconf(_SC_PAGESIZE);
    if (n > 0) {
        size_t len = (size_t)n * (size_t)page;
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("churn: mmap ballast");
            return 1;
        }
        (void)madvise(p, len, MADV_NOHUGEPAGE);
        for (long i = 0; i < n; i++)
            p[(size_t)i * (size_t)page] = 1;
        for (long i = 1; i < n; i += 2) {
            if (mprotect(p + (size_t)i * (size_t)page, (size_t)page, PROT_READ) != 0) {
                fprintf(stderr, "churn: mprotect page %ld: %s\n", i, strerror(errno));
                return 1;
            }
        }
    }
    pthread_t t;
    int err = pthread_create(&t, NULL, reporter, NULL);
    if (err) {
        fprintf(stderr, "churn: pthread_create: %s\n", strerror(err));
        return 1;
    }
    if (write(STDOUT_FILENO, "ready\n", 6) != 6)
        return 1;
    for (;;) {
        char *c = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (c == MAP_FAILED) {
            perror("churn: mmap");
            return 1;
        }
        c[0] = 1;
        if (munmap(c, CHUNK) != 0) {
            perror("churn: munmap");
            return 1;
        }
        atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
    }
}
