/* Per-call cost of clock_gettime and of an uncontended pthread_mutex_lock/unlock pair: the
 * median, over SAMPLES batches of BATCH calls, of the time per call. Run it natively and under
 * tandem record; the difference is what the shim adds.
 *
 * Between batches the program pauses (PAUSE_US, default 300), untimed, so the agent drains the
 * ring and the figure is the hook's own cost, not the agent's throughput (measured separately).
 * With PAUSE_US 0 the calls run back to back while the agent drains beside them. Each line gives
 * the median batch's time per call and the mean over all batches (which counts every wait for
 * room in the ring).
 *
 * usage: call_cost [SAMPLES] [PAUSE_US] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define BATCH 1000

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double mean(const double *v, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    return sum / n;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

int main(int argc, char **argv) {
    int samples = argc > 1 ? atoi(argv[1]) : 2000;
    int pause_us = argc > 2 ? atoi(argv[2]) : 300;
    double *t = malloc(sizeof(double) * (size_t)samples);
    struct timespec ts;
    for (int s = 0; s < samples; s++) {
        long long a = now_ns();
        for (int i = 0; i < BATCH; i++) clock_gettime(CLOCK_MONOTONIC, &ts);
        t[s] = (double)(now_ns() - a) / BATCH;
        if (pause_us) usleep((useconds_t)pause_us);
    }
    double avg = mean(t, samples);
    printf("clock_gettime %.1f %.1f\n", median(t, samples), avg);
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    for (int s = 0; s < samples; s++) {
        long long a = now_ns();
        for (int i = 0; i < BATCH; i++) {
            pthread_mutex_lock(&m);
            pthread_mutex_unlock(&m);
        }
        t[s] = (double)(now_ns() - a) / BATCH;
        if (pause_us) usleep((useconds_t)pause_us);
    }
    avg = mean(t, samples);
    printf("mutex_pair %.1f %.1f\n", median(t, samples), avg);
    return 0;
}
