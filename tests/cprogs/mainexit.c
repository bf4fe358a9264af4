/* A process whose main thread has exited while another thread runs on.
 *
 * usage: mainexit MIB
 *
 * A second thread maps MIB MiB of anonymous memory and writes every page;
 * the main thread calls pthread_exit(). The thread group leader is then a
 * zombie (state Z, no memory in /proc/PID/smaps) although the process
 * lives: once /proc/self/stat says so, the thread prints one JSON line
 * {"pid", "tid", "touched"} and waits for EOF on stdin, then exits.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static size_t len;

static char leader_state(void)
{
	char buf[512];
	FILE *f = fopen("/proc/self/stat", "r"); /* the thread group leader's */
	if (f == NULL || fgets(buf, sizeof buf, f) == NULL) {
		perror("/proc/self/stat");
		exit(2);
	}
	fclose(f);
	char *paren = strrchr(buf, ')');
	return paren != NULL ? paren[2] : '?';
}

static void *worker(void *arg)
{
	(void)arg;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	memset(p, 1, len);
	for (int i = 0; leader_state() != 'Z'; i++) {
		if (i == 10000) {
			fprintf(stderr, "mainexit: the main thread never became a zombie\n");
			exit(2);
		}
		usleep(1000);
	}
	printf("{\"pid\": %d, \"tid\": %ld, \"touched\": %zu}\n", (int)getpid(), (long)syscall(SYS_gettid), len);
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0) {
	}
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: mainexit MIB\n");
		return 2;
	}
	len = strtoul(argv[1], NULL, 10) << 20;
	pthread_t t;
	if (pthread_create(&t, NULL, worker, NULL)) {
		perror("pthread_create");
		return 2;
	}
	pthread_exit(NULL);
}
