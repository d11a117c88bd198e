/* Two threads hand one mutex back and forth N times. Each hand-off is timed from the moment the
 * holder calls pthread_mutex_unlock to the moment the waiter's pthread_mutex_lock returns.
 *
 * Natively that is the kernel's futex wake-up. Under `tandem replay` the waiter is parked in the
 * sequencer until the holder's unlock event is consumed, so the figure is the sequencer's
 * hand-off (plus both hooks). The holder waits DELAY_US before unlocking, so the waiter is asleep
 * by then: the slow path, not a lucky spin.
 *
 * Coordination, timing (TSC) and output (fd 2) use plain atomics and raw system calls, which the
 * shim does not see: the program's events are only the locks and unlocks, and the replay makes
 * the same ones. Prints "handoff N median_ns p90_ns" to stderr.
 *
 *   handoff [N [DELAY_US]]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <x86intrin.h>

#define MAX_HANDOFFS 100000

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int holder = -1, wanting = -1, finished;
static _Atomic uint64_t unlocked_at;
static uint64_t gaps[MAX_HANDOFFS];
static int handoffs, delay_us, count;
static double ticks_per_ns;

static long raw_syscall(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

static uint64_t raw_now_ns(void) {
    struct timespec ts;
    raw_syscall(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&ts, 0);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void spin_ns(uint64_t ns) {
    uint64_t end = __rdtsc() + (uint64_t)(ns * ticks_per_ns);
    while (__rdtsc() < end) _mm_pause();
}

static void *player(void *arg) {
    int me = (int)(long)arg, other = 1 - me;
    if (me == 0) {
        pthread_mutex_lock(&m);
        atomic_store(&holder, 0);
    }
    for (;;) {
        int h;
        while ((h = atomic_load(&holder)) == -1) _mm_pause();
        if (h == me) {
            while (atomic_load(&wanting) != other && !atomic_load(&finished)) _mm_pause();
            if (atomic_load(&finished)) {
                pthread_mutex_unlock(&m);
                return NULL;
            }
            spin_ns((uint64_t)delay_us * 1000);
            atomic_store(&unlocked_at, __rdtsc());
            pthread_mutex_unlock(&m);
            while (atomic_load(&holder) == me) _mm_pause();
        } else {
            if (atomic_load(&finished)) return NULL;
            atomic_store(&wanting, me);
            pthread_mutex_lock(&m);
            uint64_t now = __rdtsc();
            atomic_store(&wanting, -1);
            gaps[count++] = now - atomic_load(&unlocked_at);
            if (count == handoffs) atomic_store(&finished, 1);
            atomic_store(&holder, me);
        }
    }
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void put(const char *s) { raw_syscall(SYS_write, 2, (long)s, (long)strlen(s)); }

static void put_number(uint64_t v) {
    char buf[24], *p = buf + sizeof buf - 1;
    *p = 0;
    do *--p = (char)('0' + v % 10); while (v /= 10);
    put(p);
}

int main(int argc, char **argv) {
    handoffs = argc > 1 ? atoi(argv[1]) : 20000;
    delay_us = argc > 2 ? atoi(argv[2]) : 50;
    if (handoffs < 1 || handoffs > MAX_HANDOFFS) handoffs = MAX_HANDOFFS;
    uint64_t t0 = raw_now_ns(), c0 = __rdtsc();
    while (raw_now_ns() - t0 < 20000000) _mm_pause();
    ticks_per_ns = (double)(__rdtsc() - c0) / (double)(raw_now_ns() - t0);

    pthread_t a, b;
    pthread_create(&a, NULL, player, (void *)0L);
    pthread_create(&b, NULL, player, (void *)1L);
    pthread_join(a, NULL);
    pthread_join(b, NULL);

    qsort(gaps, (size_t)count, sizeof gaps[0], by_value);
    put("handoff ");
    put_number((uint64_t)count);
    put(" ");
    put_number((uint64_t)(gaps[count / 2] / ticks_per_ns));
    put(" ");
    put_number((uint64_t)(gaps[count * 9 / 10] / ticks_per_ns));
    put("\n");
    return 0;
}
