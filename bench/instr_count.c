/* For callgrind: N clock_gettime calls, then N mutex lock/unlock pairs. The instruction count
 * under tandem minus the native count, divided by the calls, is the shim's cost per call in
 * instructions: a figure that does not depend on what else the machine is doing. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    int what = argc > 2 ? atoi(argv[2]) : 0;
    struct timespec ts;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    for (int i = 0; i < n; i++) {
        if (what == 0) {
            clock_gettime(CLOCK_MONOTONIC, &ts);
        } else if (what == 1) {
            pthread_mutex_lock(&m);
            pthread_mutex_unlock(&m);
        }
    }
    return 0;
}
