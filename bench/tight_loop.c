/* As many events as the program can make: N calls to clock_gettime in a loop. Under tandem
 * record this measures what the agent sustains (the program waits when its ring is full). */
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    struct timespec ts;
    for (long i = 0; i < n; i++) clock_gettime(CLOCK_MONOTONIC, &ts);
    return 0;
}
