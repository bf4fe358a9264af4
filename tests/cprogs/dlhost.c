/* A C host for a shared library: dlopen()s argv[1], prints {"pid": N} and
 * waits for EOF on stdin. A Go c-shared library starts its runtime on a
 * thread of its own when loaded. */
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 2) { fprintf(stderr, "usage: dlhost LIBRARY\n"); return 2; }
	if (!dlopen(argv[1], RTLD_NOW)) { fprintf(stderr, "%s\n", dlerror()); return 1; }
	printf("{\"pid\": %d}\n", (int)getpid());
	fflush(stdout);
	char buf[256];
	while (read(0, buf, sizeof buf) > 0) {
	}
	return 0;
}
