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
 * The power reading (watts) is NVML's nvmlDeviceGetPowerUsage, which on this
 * GPU trails by about a second: over a sub-second timed window after idle
 * host work it read 160-350 W while nvidia-smi's 100 ms log of a long run
 * showed 650-690 W (sixteenth session, call 4). So only the clock is
 * printed; log power with nvidia-smi over a whole run.
 *
 *   bench_power p;
 *   bench_power_start(&p);   (a thread samples every BENCH_POWER_PERIOD_US)
 *   ... timed work ...
 *   bench_power_stop(&p);    p.mhz, p.watts: means; p.n samples (0: none)
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
    double mhz, watts; /* means over the samples (0 when n == 0) */
    int n;
    char err[128];
    /* private */
    void *lib, *dev;
    int (*clock)(void *dev, int type, unsigned int *v);
    int (*power)(void *dev, unsigned int *mw);
    pthread_t th;
    volatile int run;
    double sum_mhz, sum_w;
} bench_power;

static void *bench_power_loop(void *arg)
{
    bench_power *p = (bench_power *)arg;
    const struct timespec ts = {0, BENCH_POWER_PERIOD_US * 1000L};
    while (p->run) {
        unsigned int mhz = 0, mw = 0;
        int r1 = p->clock(p->dev, 1 /* NVML_CLOCK_SM */, &mhz);
        int r2 = p->power(p->dev, &mw);
        if (r1 || r2) {
            snprintf(p->err, sizeof p->err, "nvmlDeviceGet%s failed (%d)", r1 ? "ClockInfo" : "PowerUsage",
                     r1 ? r1 : r2);
            break;
        }
        p->sum_mhz += mhz;
        p->sum_w += mw / 1000.0;
        p->n++;
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* loads NVML once (the handle stays for the process); 0 on success */
static inline int bench_power_open(bench_power *p)
{
    if (p->dev)
        return 0;
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
    p->power = (int (*)(void *, unsigned int *))dlsym(p->lib, "nvmlDeviceGetPowerUsage");
    if (!init || !byidx || !p->clock || !p->power) {
        snprintf(p->err, sizeof p->err, "NVML lacks nvmlInit_v2 / GetHandleByIndex_v2 / GetClockInfo / GetPowerUsage");
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
    return 0;
}

static inline void bench_power_start(bench_power *p)
{
    p->n = 0;
    p->sum_mhz = p->sum_w = p->mhz = p->watts = 0;
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
    if (p->n > 0) {
        p->mhz = p->sum_mhz / p->n;
        p->watts = p->sum_w / p->n;
    }
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
