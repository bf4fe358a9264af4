//go:build cgo

package main

/*
// pthread_attr_setsigmask_np (glibc 2.32+) is a GNU extension.
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

// Bytes malloc'ed and memset by this program; updated from C threads too.
static size_t touched, big, small, threaded;

// touch mallocs n bytes and writes all of them, so every page is resident.
// Nothing is ever freed: a free could lower RSS or move glibc's dynamic
// mmap threshold (free of an mmapped chunk raises it), and the tests need
// the C side to stay exactly as built.
static void touch(size_t n, size_t *counter) {
	char *p = malloc(n);
	if (p == NULL) abort();
	memset(p, 0xa5, n);
	__atomic_add_fetch(&touched, n, __ATOMIC_RELAXED);
	__atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

// big: requests above mmap_threshold (128 KiB by default, and it stays there
// because we never free) get their own mmap: hblks/hblkhd in mallinfo2.
static void c_big(size_t n) { touch(n, &big); }

// small: 20000 B is below the threshold, so it comes from the calling
// thread's arena ([heap] on the main arena, or a thread arena).
static void c_small(int count, size_t size) {
	for (int i = 0; i < count; i++) touch(size, &small);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready;

// Each C thread does its first malloc itself, so glibc gives it its own
// arena (a 64 MiB-aligned heap), fills it in 16 KiB pieces (below the mmap
// threshold, above tcache sizes), then parks forever.
static void *thread_main(void *arg) {
	size_t each = (size_t)arg;
	for (size_t done = 0; done < each; done += 16384) touch(16384, &threaded);
	pthread_mutex_lock(&mu);
	ready++;
	pthread_cond_broadcast(&cv);
	for (;;) pthread_cond_wait(&cv, &mu); // parked: nobody signals for us
	return NULL;
}

static int c_threads(int n, size_t each) {
	pthread_attr_t attr;
	sigset_t all;
	pthread_t t;
	int err = pthread_attr_init(&attr);
	// These threads never run Go code: block all signals in them, so the Go
	// runtime's handlers (preemption, profiling) are never run on them.
	sigfillset(&all);
	if (!err) err = pthread_attr_setsigmask_np(&attr, &all);
	if (!err) err = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (int i = 0; i < n && !err; i++) err = pthread_create(&t, &attr, thread_main, (void *)each);
	pthread_attr_destroy(&attr);
	if (err) return err;
	pthread_mutex_lock(&mu);
	while (ready < n) pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	return 0;
}

static size_t c_counter(int which) {
	size_t *c[] = {&touched, &big, &small, &threaded};
	return __atomic_load_n(c[which], __ATOMIC_RELAXED);
}
*/
import "C"

const haveCgo = true

func cBig(n uint64)                 { C.c_big(C.size_t(n)) }
func cSmall(count int, size uint64) { C.c_small(C.int(count), C.size_t(size)) }

// A leak is another big mmapped allocation: counted in c_big too, so that
// c_big stays comparable with mallinfo2's hblkhd.
func cLeak(n uint64) { C.c_big(C.size_t(n)) }

func cThreads(n int, each uint64) {
	if err := C.c_threads(C.int(n), C.size_t(each)); err != 0 {
		fail("pthread_create: error %d", int(err))
	}
}

func cReport(r map[string]any) {
	r["c_touched"] = uint64(C.c_counter(0))
	r["c_big"] = uint64(C.c_counter(1))
	r["c_small"] = uint64(C.c_counter(2))
	r["c_threads"] = uint64(C.c_counter(3))
	// mallinfo2 (glibc 2.33+) walks every arena: the C side's own view.
	mi := C.mallinfo2()
	r["mallinfo2"] = map[string]uint64{
		"arena":    uint64(mi.arena),
		"ordblks":  uint64(mi.ordblks),
		"hblks":    uint64(mi.hblks),
		"hblkhd":   uint64(mi.hblkhd),
		"uordblks": uint64(mi.uordblks),
		"fordblks": uint64(mi.fordblks),
		"keepcost": uint64(mi.keepcost),
	}
}
