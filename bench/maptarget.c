/* Benchmark target: exactly ~N one-page VMAs.
 *
 * Maps one anonymous private region of N pages, touches every page, then
 * mprotects every other page PROT_READ so the kernel cannot merge
 * neighbours: N one-page VMAs. Prints "ready\n", flushes, and blocks reading
 * stdin until EOF, then exits.
 *
 *     maptarget N
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s N\n", argv[0]);
        return 2;
    }
    char *end = NULL;
    errno = 0;
    long n = strtol(argv[1], &end, 10);
    if (errno || end == argv[1] || *end || n < 1) {
        fprintf(stderr, "maptarget: bad page count %s\n", argv[1]);
        return 2;
    }
    long page = sysconf(_SC_PAGESIZE);
    size_t len = (size_t)n * (size_t)page;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("maptarget: mmap");
        return 1;
    }
    /* 4 KiB pages everywhere, so every page stays its own VMA with its own RSS. */
    (void)madvise(p, len, MADV_NOHUGEPAGE);
    for (long i = 0; i < n; i++)
        p[(size_t)i * (size_t)page] = (char)(i | 1);
    for (long i = 1; i < n; i += 2) {
        if (mprotect(p + (size_t)i * (size_t)page, (size_t)page, PROT_READ) != 0) {
            fprintf(stderr, "maptarget: mprotect page %ld: %s (vm.max_map_count too low?)\n",
                    i, strerror(errno));
            return 1;
        }
    }
    fputs("ready\n", stdout);
    fflush(stdout);

    char buf[256];
    for (;;) {
        ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
        if (got == 0)
            break;
        if (got < 0 && errno != EINTR)
            break;
    }
    munmap(p, len);
    return 0;
}
