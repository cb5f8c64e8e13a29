/* drv.h — the CUDA Driver API opened with dlopen("libcuda.so.1") at first
 * need, so libsale works (compile-only) on machines with no driver.
 * Internal; prefix drv_. Types come from cuda.h; nothing links libcuda. */
#ifndef SALE_DRV_H
#define SALE_DRV_H

#include <cuda.h>

typedef struct drv_api {
    CUresult (*Init)(unsigned);
    CUresult (*DriverGetVersion)(int *);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*DeviceGetName)(char *, int, CUdevice);
    CUresult (*DeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
    CUresult (*DeviceTotalMem)(size_t *, CUdevice);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*CtxGetCurrent)(CUcontext *);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*CtxGetDevice)(CUdevice *);
    CUresult (*CtxSynchronize)(void);
    CUresult (*ModuleLoadData)(CUmodule *, const void *);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*FuncSetAttribute)(CUfunction, CUfunction_attribute, int);
    CUresult (*FuncGetAttribute)(int *, CUfunction_attribute, CUfunction);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             CUstream, void **, void **);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);
    CUresult (*MemFree)(CUdeviceptr);
    CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*MemcpyDtoH)(void *, CUdeviceptr, size_t);
    CUresult (*MemsetD8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*MemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
    CUresult (*MemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
    CUresult (*MemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
    CUresult (*StreamSynchronize)(CUstream);
    CUresult (*EventCreate)(CUevent *, unsigned);
    CUresult (*EventRecord)(CUevent, CUstream);
    CUresult (*EventSynchronize)(CUevent);
    CUresult (*EventElapsedTime)(float *, CUevent, CUevent);
    CUresult (*EventDestroy)(CUevent);
    CUresult (*GetErrorName)(CUresult, const char **);
    CUresult (*GetErrorString)(CUresult, const char **);
    /* streams, events and graphs of the host path (issue 9); all required */
    CUresult (*StreamCreate)(CUstream *, unsigned);
    CUresult (*StreamDestroy)(CUstream);
    CUresult (*StreamQuery)(CUstream);
    CUresult (*StreamWaitEvent)(CUstream, CUevent, unsigned);
    CUresult (*EventQuery)(CUevent);
    CUresult (*StreamGetId)(CUstream, unsigned long long *); /* CUDA 12.0 on; NULL before */
    CUresult (*MemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
    CUresult (*StreamIsCapturing)(CUstream, CUstreamCaptureStatus *);
    CUresult (*StreamBeginCapture)(CUstream, CUstreamCaptureMode);
    CUresult (*StreamEndCapture)(CUstream, CUgraph *);
    CUresult (*GraphInstantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*GraphLaunch)(CUgraphExec, CUstream);
    CUresult (*GraphExecDestroy)(CUgraphExec);
    CUresult (*GraphDestroy)(CUgraph);
    /* optional (NULL when the driver lacks both versions): the capture id */
    CUresult (*StreamGetCaptureInfo_v3)(CUstream, CUstreamCaptureStatus *, cuuint64_t *, CUgraph *,
                                        const CUgraphNode **, const CUgraphEdgeData **, size_t *);
    CUresult (*StreamGetCaptureInfo_v2)(CUstream, CUstreamCaptureStatus *, cuuint64_t *, CUgraph *,
                                        const CUgraphNode **, size_t *);
    /* optional (CUDA 12+ drivers): TMA maps of the sm_90a dense kernel; without
     * it sale_attention keeps the sm_90 dense kernel */
    CUresult (*TensorMapEncodeTiled)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                     const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                     CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
} drv_api;

/* Open the driver once (thread-safe). Returns the table, or NULL with why
 * set to a static reason ("libcuda.so.1 not found: ..."). */
const drv_api *drv_get(const char **why);

/* "CUDA_ERROR_X (description)" for a result code. */
const char *drv_errstr(CUresult r);

/* Make sure a CUDA context is current (the primary context of device 0 if
 * none); returns the device. 0 ok, -1 with ctx error set. */
struct sale_ctx;
int drv_ensure_context(struct sale_ctx *ctx, CUcontext *cuctx, CUdevice *dev);

/* Whether `stream` is being captured into a graph: 0 no, 1 yes (with its
 * capture id in *id when the driver tells, else 0), -1 error (message set;
 * an invalidated capture is an error). */
int drv_capturing(struct sale_ctx *ctx, CUstream stream, unsigned long long *id);

/* Make `want` the current context unless *active (what is current now,
 * as the caller tracks it) already is; 1 when it is current after, 0 when
 * the driver refused. For freeing objects of several contexts in turn. */
int drv_use_context(const drv_api *d, CUcontext want, CUcontext *active);

/* Compute capability of a device as 80, 86, 89, 90; 0 if the driver does not
 * say (with *err, when not NULL, set to its result code). */
int drv_device_arch(const drv_api *d, CUdevice dev, CUresult *err);

#endif
