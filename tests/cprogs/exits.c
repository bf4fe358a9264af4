/* A target that exits on its own, for scans racing its exit.
 *
 * usage: exits MIB USEC
 *
 * Maps MIB MiB of anonymous memory and writes every page, prints one JSON
 * line {"pid", "touched"} (bytes written), then sleeps USEC microseconds
 * and exits: the scans that follow its report see it alive, exiting, a
 * zombie or reaped.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: exits MIB USEC\n");
		return 2;
	}
	size_t len = strtoul(argv[1], NULL, 10) << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	memset(p, 1, len);
	printf("{\"pid\": %d, \"touched\": %zu}\n", (int)getpid(), len);
	fflush(stdout);
	usleep((useconds_t)strtoul(argv[2], NULL, 10));
	return 0;
}
