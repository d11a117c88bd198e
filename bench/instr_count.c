/* For callgrind: N calls of one workload (0 clock_gettime, 1 a mutex lock/unlock pair, 2 nothing,
 * 3 a 16-byte write to /dev/null, 4 a 16-byte read from /dev/zero, 5 fstat of a regular file: the
 * program's own executable). The instruction count
 * under tandem minus the native count, divided by the calls, is the shim's cost per call in
 * instructions: a figure that does not depend on what else the machine is doing. */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    int what = argc > 2 ? atoi(argv[2]) : 0;
    struct timespec ts;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    char buf[16] = {0};
    int null = open("/dev/null", O_WRONLY), zero = open("/dev/zero", O_RDONLY), self = open(argv[0], O_RDONLY);
    struct stat st;
    for (int i = 0; i < n; i++) {
        if (what == 0) {
            clock_gettime(CLOCK_MONOTONIC, &ts);
        } else if (what == 1) {
            pthread_mutex_lock(&m);
            pthread_mutex_unlock(&m);
        } else if (what == 3) {
            if (write(null, buf, sizeof buf) != sizeof buf) return 1;
        } else if (what == 4) {
            if (read(zero, buf, sizeof buf) != sizeof buf) return 1;
        } else if (what == 5) {
            if (fstat(self, &st)) return 1;
        }
    }
    return 0;
}
