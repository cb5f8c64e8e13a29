/* par.c — the one thread pool shape the CPU paths share (reference,
 * generator): start up to N-1 helper threads, work in the caller too, join. */
#include <pthread.h>
#include <unistd.h>

#include "internal.h"

#define PAR_MAX_THREADS 64

void par_run(int ntask, int max_threads, void *(*worker)(void *), void *arg)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nth = ncpu < 1 ? 1 : (int)(ncpu < PAR_MAX_THREADS ? ncpu : PAR_MAX_THREADS);
    if (nth > max_threads)
        nth = max_threads;
    if (nth > ntask)
        nth = ntask;
    pthread_t th[PAR_MAX_THREADS];
    int started = 0;
    for (int t = 1; t < nth; t++) {
        if (pthread_create(&th[started], NULL, worker, arg) != 0)
            break; /* fewer threads is fine: the workers' counter hands out every task */
        started++;
    }
    worker(arg);
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
}
