/* bench_power.h — the GPU's SM clock while a benchmark times something,
 * sampled through NVML (loaded with dlopen: a machine without the NVIDIA
 * driver still runs the benchmark and prints "-"). Header-only.
 *
 * Why: the H200 of the device host runs these kernels at its 700 W power
 * limit, where the SM clock falls from 1.98 to 1.5-1.8 GHz (sixteenth
 * session, bench/RESULTS.md). A phase's time then depends on how much power
 * it and what ran before it draw: one byte-identical select kernel measured
 * 72 and 79 ms in the same call. Printing the clock beside each time says
 * whether two builds were compared at the same clock.
 *
 * Power is not sampled: NVML's nvmlDeviceGetPowerUsage trails by about a
 * second on this GPU (over sub-second timed windows after idle host work it
 * read 160-350 W while nvidia-smi's 100 ms log of a long run showed 650-690
 * W; sixteenth session, call 4). Log power with nvidia-smi over a whole run.
 *
 *   bench_power p;
 *   bench_power_start(&p);   (a thread samples every BENCH_POWER_PERIOD_US)
 *   ... timed work ...
 *   bench_power_stop(&p);    p.mhz: the mean; p.n samples (0: none)
 *
 * NVML device index 0 (SALE_BENCH_NVML_INDEX overrides): the device host has
 * one GPU. A failed NVML call stops the sampling; its reason is in p.err. */
#ifndef SALE_BENCH_POWER_H
#define SALE_BENCH_POWER_H

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_POWER_PERIOD_US 5000

typedef struct bench_power {
    double mhz; /* the mean over the samples (0 when n == 0) */
    int n;
    char err[128];
    /* private */
    void *lib, *dev;
    int opened; /* bench_power_open ran: 1 done, -1 failed (err says why; not retried) */
    int (*clock)(void *dev, int type, unsigned int *v);
    pthread_t th;
    volatile int run;
    double sum_mhz;
} bench_power;

static void *bench_power_loop(void *arg)
{
    bench_power *p = (bench_power *)arg;
    const struct timespec ts = {0, BENCH_POWER_PERIOD_US * 1000L};
    while (p->run) {
        unsigned int mhz = 0;
        const int r = p->clock(p->dev, 1 /* NVML_CLOCK_SM */, &mhz);
        if (r) {
            snprintf(p->err, sizeof p->err, "nvmlDeviceGetClockInfo failed (%d)", r);
            break;
        }
        p->sum_mhz += mhz;
        p->n++;
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* loads NVML once (the handle stays for the process; a failure is not
 * retried at every timed call); 0 on success */
static inline int bench_power_open(bench_power *p)
{
    if (p->opened)
        return p->opened > 0 ? 0 : -1;
    p->opened = -1;
    const char *names[] = {"libnvidia-ml.so.1", "libnvidia-ml.so"};
    for (size_t i = 0; i < 2 && !p->lib; i++)
        p->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!p->lib) {
        snprintf(p->err, sizeof p->err, "no NVML (libnvidia-ml.so.1): %s", dlerror());
        return -1;
    }
    int (*init)(void) = (int (*)(void))dlsym(p->lib, "nvmlInit_v2");
    int (*byidx)(unsigned int, void **) = (int (*)(unsigned int, void **))dlsym(p->lib, "nvmlDeviceGetHandleByIndex_v2");
    p->clock = (int (*)(void *, int, unsigned int *))dlsym(p->lib, "nvmlDeviceGetClockInfo");
    if (!init || !byidx || !p->clock) {
        snprintf(p->err, sizeof p->err, "NVML lacks nvmlInit_v2 / GetHandleByIndex_v2 / GetClockInfo");
        return -1;
    }
    const char *e = getenv("SALE_BENCH_NVML_INDEX");
    unsigned int idx = e ? (unsigned int)strtoul(e, NULL, 10) : 0u;
    int r = init();
    if (!r)
        r = byidx(idx, &p->dev);
    if (r) {
        snprintf(p->err, sizeof p->err, "NVML init or device %u: error %d", idx, r);
        p->dev = NULL;
        return -1;
    }
    p->opened = 1;
    return 0;
}

static inline void bench_power_start(bench_power *p)
{
    p->n = 0;
    p->sum_mhz = p->mhz = 0;
    p->run = 0;
    if (bench_power_open(p))
        return;
    p->err[0] = 0;
    p->run = 1;
    if (pthread_create(&p->th, NULL, bench_power_loop, p)) {
        snprintf(p->err, sizeof p->err, "pthread_create failed");
        p->run = 0;
    }
}

static inline void bench_power_stop(bench_power *p)
{
    if (p->run) {
        p->run = 0;
        pthread_join(p->th, NULL);
    }
    if (p->n > 0)
        p->mhz = p->sum_mhz / p->n;
}

/* "SM 1650 MHz" or "SM clock - (reason)" into buf */
static inline const char *bench_power_str(const bench_power *p, char *buf, size_t len)
{
    if (p->n > 0)
        snprintf(buf, len, "SM %.0f MHz", p->mhz);
    else
        snprintf(buf, len, "SM clock - (%s)", p->err[0] ? p->err : "no samples");
    return buf;
}

#endif
