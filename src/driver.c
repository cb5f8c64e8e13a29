/* driver.c — the CUDA Driver API through dlopen, device queries, device
 * memory and event helpers of the public API. The only global state of the
 * library besides NVRTC's: the driver table, opened once. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static drv_api g_api;
static const char *g_why;
static int g_ok;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static char g_whybuf[512];

static void *sym(void *h, const char *a, const char *b)
{
    void *p = a ? dlsym(h, a) : NULL;
    if (!p && b)
        p = dlsym(h, b);
    return p;
}

static void drv_open(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(g_whybuf, sizeof g_whybuf, "no CUDA driver: cannot open libcuda.so.1 (%s)", dlerror());
        g_why = g_whybuf;
        return;
    }
#define S(field, a, b)                                                                                                \
    do {                                                                                                              \
        *(void **)&g_api.field = sym(h, a, b);                                                                        \
        if (!g_api.field) {                                                                                           \
            snprintf(g_whybuf, sizeof g_whybuf, "CUDA driver lacks %s", a);                                          \
            g_why = g_whybuf;                                                                                         \
            return;                                                                                                   \
        }                                                                                                             \
    } while (0)
    S(Init, "cuInit", NULL);
    S(DriverGetVersion, "cuDriverGetVersion", NULL);
    S(DeviceGetCount, "cuDeviceGetCount", NULL);
    S(DeviceGet, "cuDeviceGet", NULL);
    S(DeviceGetName, "cuDeviceGetName", NULL);
    S(DeviceGetAttribute, "cuDeviceGetAttribute", NULL);
    S(DeviceTotalMem, "cuDeviceTotalMem_v2", "cuDeviceTotalMem");
    S(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL);
    S(CtxGetCurrent, "cuCtxGetCurrent", NULL);
    S(CtxSetCurrent, "cuCtxSetCurrent", NULL);
    S(CtxGetDevice, "cuCtxGetDevice", NULL);
    S(CtxSynchronize, "cuCtxSynchronize", NULL);
    S(ModuleLoadData, "cuModuleLoadData", NULL);
    S(ModuleUnload, "cuModuleUnload", NULL);
    S(ModuleGetFunction, "cuModuleGetFunction", NULL);
    S(FuncSetAttribute, "cuFuncSetAttribute", NULL);
    S(FuncGetAttribute, "cuFuncGetAttribute", NULL);
    S(LaunchKernel, "cuLaunchKernel", NULL);
    S(MemAlloc, "cuMemAlloc_v2", "cuMemAlloc");
    S(MemFree, "cuMemFree_v2", "cuMemFree");
    S(MemcpyHtoD, "cuMemcpyHtoD_v2", "cuMemcpyHtoD");
    S(MemcpyDtoH, "cuMemcpyDtoH_v2", "cuMemcpyDtoH");
    S(MemsetD8, "cuMemsetD8_v2", "cuMemsetD8");
    S(MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", "cuMemcpyHtoDAsync");
    S(MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", "cuMemcpyDtoHAsync");
    S(MemsetD8Async, "cuMemsetD8Async", NULL);
    S(StreamSynchronize, "cuStreamSynchronize", NULL);
    S(EventCreate, "cuEventCreate", NULL);
    S(EventRecord, "cuEventRecord", NULL);
    S(EventSynchronize, "cuEventSynchronize", NULL);
    S(EventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime");
    S(EventDestroy, "cuEventDestroy_v2", "cuEventDestroy");
    S(GetErrorName, "cuGetErrorName", NULL);
    S(GetErrorString, "cuGetErrorString", NULL);
    S(StreamCreate, "cuStreamCreate", NULL);
    S(StreamDestroy, "cuStreamDestroy_v2", "cuStreamDestroy");
    S(StreamQuery, "cuStreamQuery", NULL);
    S(StreamWaitEvent, "cuStreamWaitEvent", NULL);
    S(EventQuery, "cuEventQuery", NULL);
    S(MemsetD32Async, "cuMemsetD32Async", NULL);
    S(StreamIsCapturing, "cuStreamIsCapturing", NULL);
    S(StreamBeginCapture, "cuStreamBeginCapture_v2", NULL);
    S(StreamEndCapture, "cuStreamEndCapture", NULL);
    S(GraphInstantiate, "cuGraphInstantiateWithFlags", NULL);
    S(GraphLaunch, "cuGraphLaunch", NULL);
    S(GraphExecDestroy, "cuGraphExecDestroy", NULL);
    S(GraphDestroy, "cuGraphDestroy", NULL);
#undef S
    *(void **)&g_api.StreamGetCaptureInfo_v3 = dlsym(h, "cuStreamGetCaptureInfo_v3");
    *(void **)&g_api.StreamGetCaptureInfo_v2 = dlsym(h, "cuStreamGetCaptureInfo_v2");
    *(void **)&g_api.TensorMapEncodeTiled = dlsym(h, "cuTensorMapEncodeTiled");
    *(void **)&g_api.StreamGetId = dlsym(h, "cuStreamGetId");
    CUresult r = g_api.Init(0);
    if (r != CUDA_SUCCESS) {
        const char *n = NULL;
        g_api.GetErrorName(r, &n);
        snprintf(g_whybuf, sizeof g_whybuf, "cuInit failed: %s (%d): no usable CUDA device", n ? n : "?", (int)r);
        g_why = g_whybuf;
        return;
    }
    g_ok = 1;
}

const drv_api *drv_get(const char **why)
{
    pthread_once(&g_once, drv_open);
    if (!g_ok) {
        if (why)
            *why = g_why ? g_why : "CUDA driver unavailable";
        return NULL;
    }
    return &g_api;
}

const char *drv_errstr(CUresult r)
{
    static __thread char buf[256];
    const char *n = NULL, *s = NULL;
    if (g_ok) {
        g_api.GetErrorName(r, &n);
        g_api.GetErrorString(r, &s);
    }
    snprintf(buf, sizeof buf, "%s (%d: %s)", n ? n : "CUDA error", (int)r, s ? s : "no description");
    return buf;
}

int drv_use_context(const drv_api *d, CUcontext want, CUcontext *active)
{
    if (want == *active)
        return 1;
    if (d->CtxSetCurrent(want) != CUDA_SUCCESS)
        return 0;
    *active = want;
    return 1;
}

int drv_capturing(sale_ctx *ctx, CUstream stream, unsigned long long *id)
{
    const drv_api *d = drv_get(NULL);
    CUstreamCaptureStatus cs = CU_STREAM_CAPTURE_STATUS_NONE;
    cuuint64_t cid = 0;
    CUresult r;
    if (d->StreamGetCaptureInfo_v3)
        r = d->StreamGetCaptureInfo_v3(stream, &cs, &cid, NULL, NULL, NULL, NULL);
    else if (d->StreamGetCaptureInfo_v2)
        r = d->StreamGetCaptureInfo_v2(stream, &cs, &cid, NULL, NULL, NULL);
    else
        r = d->StreamIsCapturing(stream, &cs);
    if (r != CUDA_SUCCESS) {
        sale_set_error(ctx, "cuStreamGetCaptureInfo: %s", drv_errstr(r));
        return -1;
    }
    if (cs == CU_STREAM_CAPTURE_STATUS_INVALIDATED) {
        sale_set_error(ctx, "the stream's graph capture was invalidated by an earlier call; end it and start again");
        return -1;
    }
    if (id)
        *id = (unsigned long long)cid;
    return cs == CU_STREAM_CAPTURE_STATUS_ACTIVE;
}

int drv_device_arch(const drv_api *d, CUdevice dev, CUresult *err)
{
    int maj = 0, min = 0;
    CUresult r = d->DeviceGetAttribute(&maj, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
    if (r == CUDA_SUCCESS)
        r = d->DeviceGetAttribute(&min, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
    if (err)
        *err = r;
    return r == CUDA_SUCCESS ? maj * 10 + min : 0;
}

int drv_ensure_context(sale_ctx *ctx, CUcontext *cuctx, CUdevice *dev)
{
    const char *why = NULL;
    const drv_api *d = drv_get(&why);
    if (!d) {
        sale_set_error(ctx, "%s", why);
        return -1;
    }
    CUcontext c = NULL;
    CUresult r = d->CtxGetCurrent(&c);
    if (r == CUDA_SUCCESS && !c) {
        int n = 0;
        r = d->DeviceGetCount(&n);
        if (r == CUDA_SUCCESS && n == 0) {
            sale_set_error(ctx, "no CUDA device found (the driver reports 0 devices)");
            return -1;
        }
        CUdevice d0;
        if (r == CUDA_SUCCESS)
            r = d->DeviceGet(&d0, 0);
        if (r == CUDA_SUCCESS)
            r = d->DevicePrimaryCtxRetain(&c, d0);
        if (r == CUDA_SUCCESS)
            r = d->CtxSetCurrent(c);
    }
    CUdevice dv = 0;
    if (r == CUDA_SUCCESS)
        r = d->CtxGetDevice(&dv);
    if (r != CUDA_SUCCESS) {
        sale_set_error(ctx, "cannot get a CUDA context: %s", drv_errstr(r));
        return -1;
    }
    if (cuctx)
        *cuctx = c;
    if (dev)
        *dev = dv;
    return 0;
}

/* Each public wrapper: find the driver, make a context current, call. */
#define DRV_PROLOGUE(ctx)                                                                                             \
    const drv_api *d;                                                                                                 \
    do {                                                                                                              \
        if (drv_ensure_context((ctx), NULL, NULL))                                                                    \
            return SALE_ERR_NO_DEVICE;                                                                                \
        d = drv_get(NULL);                                                                                            \
    } while (0)

static sale_status check(sale_ctx *ctx, CUresult r, const char *what)
{
    if (r == CUDA_SUCCESS)
        return SALE_OK;
    sale_set_error(ctx, "%s: %s", what, drv_errstr(r));
    return SALE_ERR_CUDA;
}

sale_status sale_device_count(sale_ctx *ctx, int *count)
{
    const char *why = NULL;
    if (!count) {
        sale_set_error(ctx, "sale_device_count: count is NULL");
        return SALE_ERR_INVALID;
    }
    *count = 0;
    const drv_api *d = drv_get(&why);
    if (!d) {
        sale_set_error(ctx, "%s", why);
        return SALE_ERR_NO_DEVICE;
    }
    return check(ctx, d->DeviceGetCount(count), "cuDeviceGetCount");
}

sale_status sale_device_info_get(sale_ctx *ctx, int ordinal, sale_device_info *info)
{
    const char *why = NULL;
    if (!info) {
        sale_set_error(ctx, "sale_device_info_get: info is NULL");
        return SALE_ERR_INVALID;
    }
    const drv_api *d = drv_get(&why);
    if (!d) {
        sale_set_error(ctx, "%s", why);
        return SALE_ERR_NO_DEVICE;
    }
    memset(info, 0, sizeof *info);
    CUdevice dev;
    sale_status s = check(ctx, d->DeviceGet(&dev, ordinal), "cuDeviceGet");
    if (s)
        return s;
    info->ordinal = ordinal;
    CUresult r = CUDA_SUCCESS;
    if ((s = check(ctx, d->DeviceGetName(info->name, sizeof info->name, dev), "cuDeviceGetName")))
        return s;
    info->arch = drv_device_arch(d, dev, &r);
    if ((s = check(ctx, r, "cuDeviceGetAttribute(compute capability)")) ||
        (s = check(ctx, d->DeviceGetAttribute(&info->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev),
                   "cuDeviceGetAttribute(multiprocessor count)")) ||
        (s = check(ctx,
                   d->DeviceGetAttribute(&info->smem_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev),
                   "cuDeviceGetAttribute(shared memory per block, opt-in)")) ||
        (s = check(ctx, d->DriverGetVersion(&info->driver_version), "cuDriverGetVersion")) ||
        (s = check(ctx, d->DeviceTotalMem(&info->total_mem, dev), "cuDeviceTotalMem")))
        return s;
    return SALE_OK;
}

/* A NULL out-parameter is refused before the driver is looked for. */
#define NEED(p, what)                                                                                                 \
    do {                                                                                                              \
        if (!(p)) {                                                                                                   \
            sale_set_error(ctx, "%s: %s is NULL", __func__, what);                                                    \
            return SALE_ERR_INVALID;                                                                                  \
        }                                                                                                             \
    } while (0)

sale_status sale_dev_alloc(sale_ctx *ctx, size_t bytes, void **dptr)
{
    NEED(dptr, "dptr");
    DRV_PROLOGUE(ctx);
    CUdeviceptr p = 0;
    sale_status s = check(ctx, d->MemAlloc(&p, bytes ? bytes : 1), "cuMemAlloc");
    *dptr = (void *)(uintptr_t)p;
    return s;
}

sale_status sale_dev_free(sale_ctx *ctx, void *dptr)
{
    if (!dptr)
        return SALE_OK;
    DRV_PROLOGUE(ctx);
    return check(ctx, d->MemFree((CUdeviceptr)(uintptr_t)dptr), "cuMemFree");
}

sale_status sale_dev_upload(sale_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    DRV_PROLOGUE(ctx);
    return check(ctx, d->MemcpyHtoD((CUdeviceptr)(uintptr_t)dst, src, bytes), "cuMemcpyHtoD");
}

sale_status sale_dev_download(sale_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    DRV_PROLOGUE(ctx);
    return check(ctx, d->MemcpyDtoH(dst, (CUdeviceptr)(uintptr_t)src, bytes), "cuMemcpyDtoH");
}

sale_status sale_dev_fill8(sale_ctx *ctx, void *dst, unsigned char byte, size_t bytes)
{
    DRV_PROLOGUE(ctx);
    return check(ctx, d->MemsetD8((CUdeviceptr)(uintptr_t)dst, byte, bytes), "cuMemsetD8");
}

sale_status sale_dev_sync(sale_ctx *ctx)
{
    DRV_PROLOGUE(ctx);
    return check(ctx, d->CtxSynchronize(), "cuCtxSynchronize (a kernel failed)");
}

struct sale_event {
    CUevent ev;
};

sale_status sale_event_create(sale_ctx *ctx, sale_event **ev)
{
    NEED(ev, "ev");
    *ev = NULL;
    DRV_PROLOGUE(ctx);
    sale_event *e = calloc(1, sizeof *e);
    if (!e)
        return SALE_ERR_NOMEM;
    sale_status s = check(ctx, d->EventCreate(&e->ev, CU_EVENT_DEFAULT), "cuEventCreate");
    if (s) {
        free(e);
        return s;
    }
    *ev = e;
    return SALE_OK;
}

sale_status sale_event_record(sale_ctx *ctx, sale_event *ev, void *stream)
{
    NEED(ev, "ev");
    DRV_PROLOGUE(ctx);
    return check(ctx, d->EventRecord(ev->ev, (CUstream)stream), "cuEventRecord");
}

sale_status sale_event_elapsed(sale_ctx *ctx, sale_event *a, sale_event *b, float *ms)
{
    NEED(a, "start");
    NEED(b, "stop");
    NEED(ms, "ms");
    DRV_PROLOGUE(ctx);
    sale_status s = check(ctx, d->EventSynchronize(b->ev), "cuEventSynchronize");
    if (!s)
        s = check(ctx, d->EventElapsedTime(ms, a->ev, b->ev), "cuEventElapsedTime");
    return s;
}

void sale_event_destroy(sale_ctx *ctx, sale_event *ev)
{
    (void)ctx;
    if (!ev)
        return;
    const drv_api *d = drv_get(NULL);
    if (d)
        d->EventDestroy(ev->ev);
    free(ev);
}
