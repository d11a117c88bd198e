/* The floor for comparison: an interposer that only forwards, through pointers resolved once. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <time.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_lock)(pthread_mutex_t *);
static int (*real_unlock)(pthread_mutex_t *);

__attribute__((constructor)) static void init(void) {
    real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    real_lock = dlsym(RTLD_NEXT, "pthread_mutex_lock");
    real_unlock = dlsym(RTLD_NEXT, "pthread_mutex_unlock");
}

int clock_gettime(clockid_t c, struct timespec *ts) { return real_clock_gettime(c, ts); }
int pthread_mutex_lock(pthread_mutex_t *m) { return real_lock(m); }
int pthread_mutex_unlock(pthread_mutex_t *m) { return real_unlock(m); }
