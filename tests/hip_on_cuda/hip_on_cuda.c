/*
 * hip_on_cuda.c: test infrastructure only, never shipped. A libamdhip64.so that implements the
 * hip* calls rocmstreams' hip backend makes (rocmstreams/backends/runtime.py and hip.py) on top of
 * the CUDA runtime, so that the hip backend, through hip-python, runs on an NVIDIA GPU.
 *
 * HIP's status codes, flags and enum values are written here as HIP's own numbers (as hip-python's
 * enums give them) and translated to and from CUDA's explicitly, never assumed equal.
 * tests/test_runtime_backends_offline.py checks the numbers against hip-python and the table below.
 * HIP handles are opaque pointers; a HIP stream, event or graph here is the CUDA one, cast.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define HIP_API __attribute__((visibility("default")))

typedef enum hipError_t {
    hipSuccess = 0,
    hipErrorInvalidValue = 1,
    hipErrorOutOfMemory = 2,
    hipErrorNotInitialized = 3,
    hipErrorDeinitialized = 4,
    hipErrorProfilerDisabled = 5,
    hipErrorProfilerNotInitialized = 6,
    hipErrorProfilerAlreadyStarted = 7,
    hipErrorProfilerAlreadyStopped = 8,
    hipErrorInvalidConfiguration = 9,
    hipErrorInvalidPitchValue = 12,
    hipErrorInvalidSymbol = 13,
    hipErrorInvalidDevicePointer = 17,
    hipErrorInvalidMemcpyDirection = 21,
    hipErrorInsufficientDriver = 35,
    hipErrorMissingConfiguration = 52,
    hipErrorPriorLaunchFailure = 53,
    hipErrorInvalidDeviceFunction = 98,
    hipErrorNoDevice = 100,
    hipErrorInvalidDevice = 101,
    hipErrorInvalidImage = 200,
    hipErrorInvalidContext = 201,
    hipErrorMapFailed = 205,
    hipErrorUnmapFailed = 206,
    hipErrorArrayIsMapped = 207,
    hipErrorAlreadyMapped = 208,
    hipErrorNoBinaryForGpu = 209,
    hipErrorAlreadyAcquired = 210,
    hipErrorNotMapped = 211,
    hipErrorNotMappedAsArray = 212,
    hipErrorNotMappedAsPointer = 213,
    hipErrorECCNotCorrectable = 214,
    hipErrorUnsupportedLimit = 215,
    hipErrorContextAlreadyInUse = 216,
    hipErrorPeerAccessUnsupported = 217,
    hipErrorInvalidKernelFile = 218,
    hipErrorInvalidGraphicsContext = 219,
    hipErrorInvalidSource = 300,
    hipErrorFileNotFound = 301,
    hipErrorSharedObjectSymbolNotFound = 302,
    hipErrorSharedObjectInitFailed = 303,
    hipErrorOperatingSystem = 304,
    hipErrorInvalidHandle = 400,
    hipErrorIllegalState = 401,
    hipErrorNotFound = 500,
    hipErrorNotReady = 600,
    hipErrorIllegalAddress = 700,
    hipErrorLaunchOutOfResources = 701,
    hipErrorLaunchTimeOut = 702,
    hipErrorPeerAccessAlreadyEnabled = 704,
    hipErrorPeerAccessNotEnabled = 705,
    hipErrorSetOnActiveProcess = 708,
    hipErrorContextIsDestroyed = 709,
    hipErrorAssert = 710,
    hipErrorHostMemoryAlreadyRegistered = 712,
    hipErrorHostMemoryNotRegistered = 713,
    hipErrorLaunchFailure = 719,
    hipErrorCooperativeLaunchTooLarge = 720,
    hipErrorNotSupported = 801,
    hipErrorStreamCaptureUnsupported = 900,
    hipErrorStreamCaptureInvalidated = 901,
    hipErrorStreamCaptureMerge = 902,
    hipErrorStreamCaptureUnmatched = 903,
    hipErrorStreamCaptureUnjoined = 904,
    hipErrorStreamCaptureIsolation = 905,
    hipErrorStreamCaptureImplicit = 906,
    hipErrorCapturedEvent = 907,
    hipErrorStreamCaptureWrongThread = 908,
    hipErrorGraphExecUpdateFailure = 910,
    hipErrorInvalidChannelDescriptor = 911,
    hipErrorInvalidTexture = 912,
    hipErrorUnknown = 999,
} hipError_t;

/* HIP's flag and enum values (hip-python: hipStreamNonBlocking, hipEvent*, hipHostMalloc*,
 * hipMemcpyKind, hipStreamCaptureMode, hipStreamCaptureStatus, hipGraphInstantiateFlags,
 * hipMemPoolAttr, hipDeviceAttribute_t). */
enum {
    hipStreamNonBlocking = 0x1,
    hipEventBlockingSync = 0x1,
    hipEventDisableTiming = 0x2,
    hipEventInterprocess = 0x4,
    hipHostMallocPortable = 0x1,
    hipHostMallocMapped = 0x2,
    hipHostMallocWriteCombined = 0x4,
    hipHostMallocCoherent = 0x40000000,
    hipGraphInstantiateFlagAutoFreeOnLaunch = 1,
    hipGraphInstantiateFlagUpload = 2,
    hipGraphInstantiateFlagDeviceLaunch = 4,
    hipGraphInstantiateFlagUseNodePriority = 8,
};
typedef enum hipMemcpyKind {
    hipMemcpyHostToHost = 0,
    hipMemcpyHostToDevice = 1,
    hipMemcpyDeviceToHost = 2,
    hipMemcpyDeviceToDevice = 3,
    hipMemcpyDefault = 4,
    hipMemcpyDeviceToDeviceNoCU = 1024,
} hipMemcpyKind;
typedef enum hipStreamCaptureMode {
    hipStreamCaptureModeGlobal = 0,
    hipStreamCaptureModeThreadLocal = 1,
    hipStreamCaptureModeRelaxed = 2,
} hipStreamCaptureMode;
typedef enum hipStreamCaptureStatus {
    hipStreamCaptureStatusNone = 0,
    hipStreamCaptureStatusActive = 1,
    hipStreamCaptureStatusInvalidated = 2,
} hipStreamCaptureStatus;

typedef enum hipMemPoolAttr {
    hipMemPoolReuseFollowEventDependencies = 0x1,
    hipMemPoolReuseAllowOpportunistic = 0x2,
    hipMemPoolReuseAllowInternalDependencies = 0x3,
    hipMemPoolAttrReleaseThreshold = 0x4,
    hipMemPoolAttrReservedMemCurrent = 0x5,
    hipMemPoolAttrReservedMemHigh = 0x6,
    hipMemPoolAttrUsedMemCurrent = 0x7,
    hipMemPoolAttrUsedMemHigh = 0x8,
} hipMemPoolAttr;
/* Only the device attribute the backend asks for (HIP numbers its attributes its own way). */
typedef enum hipDeviceAttribute_t {
    hipDeviceAttributeMemoryPoolsSupported = 88,
} hipDeviceAttribute_t;

typedef struct ihipStream_t *hipStream_t;
typedef struct ihipMemPoolHandle_t *hipMemPool_t;
typedef struct ihipEvent_t *hipEvent_t;
typedef struct ihipGraph *hipGraph_t;
typedef struct hipGraphExec *hipGraphExec_t;
typedef struct ihipModuleSymbol_t *hipFunction_t;
typedef int hipDevice_t;
typedef void (*hipHostFn_t)(void *userData);

#define hipStreamPerThread ((hipStream_t)2)

/* ---- status codes ------------------------------------------------------------------------- */
#define ROW(cuda, hip) {cuda, hip, #hip}
static const struct { cudaError_t cuda; hipError_t hip; const char *name; } ERRORS[] = {
    ROW(cudaSuccess, hipSuccess),
    ROW(cudaErrorInvalidValue, hipErrorInvalidValue),
    ROW(cudaErrorMemoryAllocation, hipErrorOutOfMemory),
    ROW(cudaErrorInitializationError, hipErrorNotInitialized),
    ROW(cudaErrorCudartUnloading, hipErrorDeinitialized),
    ROW(cudaErrorProfilerDisabled, hipErrorProfilerDisabled),
    ROW(cudaErrorProfilerNotInitialized, hipErrorProfilerNotInitialized),
    ROW(cudaErrorProfilerAlreadyStarted, hipErrorProfilerAlreadyStarted),
    ROW(cudaErrorProfilerAlreadyStopped, hipErrorProfilerAlreadyStopped),
    ROW(cudaErrorInvalidConfiguration, hipErrorInvalidConfiguration),
    ROW(cudaErrorInvalidPitchValue, hipErrorInvalidPitchValue),
    ROW(cudaErrorInvalidSymbol, hipErrorInvalidSymbol),
    ROW(cudaErrorInvalidDevicePointer, hipErrorInvalidDevicePointer),
    ROW(cudaErrorInvalidMemcpyDirection, hipErrorInvalidMemcpyDirection),
    ROW(cudaErrorInsufficientDriver, hipErrorInsufficientDriver),
    ROW(cudaErrorMissingConfiguration, hipErrorMissingConfiguration),
    ROW(cudaErrorPriorLaunchFailure, hipErrorPriorLaunchFailure),
    ROW(cudaErrorInvalidDeviceFunction, hipErrorInvalidDeviceFunction),
    ROW(cudaErrorNoDevice, hipErrorNoDevice),
    ROW(cudaErrorInvalidDevice, hipErrorInvalidDevice),
    ROW(cudaErrorInvalidKernelImage, hipErrorInvalidImage),
    ROW(cudaErrorDeviceUninitialized, hipErrorInvalidContext),
    ROW(cudaErrorMapBufferObjectFailed, hipErrorMapFailed),
    ROW(cudaErrorUnmapBufferObjectFailed, hipErrorUnmapFailed),
    ROW(cudaErrorArrayIsMapped, hipErrorArrayIsMapped),
    ROW(cudaErrorAlreadyMapped, hipErrorAlreadyMapped),
    ROW(cudaErrorNoKernelImageForDevice, hipErrorNoBinaryForGpu),
    ROW(cudaErrorAlreadyAcquired, hipErrorAlreadyAcquired),
    ROW(cudaErrorNotMapped, hipErrorNotMapped),
    ROW(cudaErrorNotMappedAsArray, hipErrorNotMappedAsArray),
    ROW(cudaErrorNotMappedAsPointer, hipErrorNotMappedAsPointer),
    ROW(cudaErrorECCUncorrectable, hipErrorECCNotCorrectable),
    ROW(cudaErrorUnsupportedLimit, hipErrorUnsupportedLimit),
    ROW(cudaErrorDeviceAlreadyInUse, hipErrorContextAlreadyInUse),
    ROW(cudaErrorPeerAccessUnsupported, hipErrorPeerAccessUnsupported),
    ROW(cudaErrorInvalidPtx, hipErrorInvalidKernelFile),
    ROW(cudaErrorInvalidGraphicsContext, hipErrorInvalidGraphicsContext),
    ROW(cudaErrorInvalidSource, hipErrorInvalidSource),
    ROW(cudaErrorFileNotFound, hipErrorFileNotFound),
    ROW(cudaErrorSharedObjectSymbolNotFound, hipErrorSharedObjectSymbolNotFound),
    ROW(cudaErrorSharedObjectInitFailed, hipErrorSharedObjectInitFailed),
    ROW(cudaErrorOperatingSystem, hipErrorOperatingSystem),
    ROW(cudaErrorInvalidResourceHandle, hipErrorInvalidHandle),
    ROW(cudaErrorIllegalState, hipErrorIllegalState),
    ROW(cudaErrorSymbolNotFound, hipErrorNotFound),
    ROW(cudaErrorNotReady, hipErrorNotReady),
    ROW(cudaErrorIllegalAddress, hipErrorIllegalAddress),
    ROW(cudaErrorLaunchOutOfResources, hipErrorLaunchOutOfResources),
    ROW(cudaErrorLaunchTimeout, hipErrorLaunchTimeOut),
    ROW(cudaErrorPeerAccessAlreadyEnabled, hipErrorPeerAccessAlreadyEnabled),
    ROW(cudaErrorPeerAccessNotEnabled, hipErrorPeerAccessNotEnabled),
    ROW(cudaErrorSetOnActiveProcess, hipErrorSetOnActiveProcess),
    ROW(cudaErrorContextIsDestroyed, hipErrorContextIsDestroyed),
    ROW(cudaErrorAssert, hipErrorAssert),
    ROW(cudaErrorHostMemoryAlreadyRegistered, hipErrorHostMemoryAlreadyRegistered),
    ROW(cudaErrorHostMemoryNotRegistered, hipErrorHostMemoryNotRegistered),
    ROW(cudaErrorLaunchFailure, hipErrorLaunchFailure),
    ROW(cudaErrorCooperativeLaunchTooLarge, hipErrorCooperativeLaunchTooLarge),
    ROW(cudaErrorNotSupported, hipErrorNotSupported),
    ROW(cudaErrorStreamCaptureUnsupported, hipErrorStreamCaptureUnsupported),
    ROW(cudaErrorStreamCaptureInvalidated, hipErrorStreamCaptureInvalidated),
    ROW(cudaErrorStreamCaptureMerge, hipErrorStreamCaptureMerge),
    ROW(cudaErrorStreamCaptureUnmatched, hipErrorStreamCaptureUnmatched),
    ROW(cudaErrorStreamCaptureUnjoined, hipErrorStreamCaptureUnjoined),
    ROW(cudaErrorStreamCaptureIsolation, hipErrorStreamCaptureIsolation),
    ROW(cudaErrorStreamCaptureImplicit, hipErrorStreamCaptureImplicit),
    ROW(cudaErrorCapturedEvent, hipErrorCapturedEvent),
    ROW(cudaErrorStreamCaptureWrongThread, hipErrorStreamCaptureWrongThread),
    ROW(cudaErrorGraphExecUpdateFailure, hipErrorGraphExecUpdateFailure),
    ROW(cudaErrorInvalidChannelDescriptor, hipErrorInvalidChannelDescriptor),
    ROW(cudaErrorInvalidTexture, hipErrorInvalidTexture),
    ROW(cudaErrorUnknown, hipErrorUnknown),
};
#define N_ERRORS (sizeof ERRORS / sizeof ERRORS[0])

/* The last CUDA status with no HIP row, per thread: hipGetErrorString(hipErrorUnknown) names it. */
static __thread cudaError_t unmapped = cudaSuccess;
static __thread char unmapped_text[256];

static hipError_t to_hip(cudaError_t status) {
    for (size_t i = 0; i < N_ERRORS; ++i)
        if (ERRORS[i].cuda == status) return ERRORS[i].hip;
    unmapped = status;
    return hipErrorUnknown;
}

HIP_API const char *hipGetErrorName(hipError_t status) {
    for (size_t i = 0; i < N_ERRORS; ++i)
        if (ERRORS[i].hip == status) return ERRORS[i].name;
    return "hipErrorUnknown";
}

HIP_API const char *hipGetErrorString(hipError_t status) {
    if (status == hipErrorUnknown && unmapped != cudaSuccess) {
        snprintf(unmapped_text, sizeof unmapped_text, "unknown error (CUDA %s: %s)",
                 cudaGetErrorName(unmapped), cudaGetErrorString(unmapped));
        return unmapped_text;
    }
    for (size_t i = 0; i < N_ERRORS; ++i)
        if (ERRORS[i].hip == status) return cudaGetErrorString(ERRORS[i].cuda);
    return "unknown error";
}

/* ---- flags and enums ---------------------------------------------------------------------- */
typedef struct { unsigned hip, cuda; } Bit;
static const Bit STREAM_FLAGS[] = {{hipStreamNonBlocking, cudaStreamNonBlocking}};
static const Bit EVENT_FLAGS[] = {{hipEventBlockingSync, cudaEventBlockingSync},
                                  {hipEventDisableTiming, cudaEventDisableTiming},
                                  {hipEventInterprocess, cudaEventInterprocess}};
/* CUDA's pinned memory is always coherent: HIP's coherent flag asks for nothing more. */
static const Bit HOST_FLAGS[] = {{hipHostMallocPortable, cudaHostAllocPortable},
                                 {hipHostMallocMapped, cudaHostAllocMapped},
                                 {hipHostMallocWriteCombined, cudaHostAllocWriteCombined},
                                 {hipHostMallocCoherent, 0}};
static const Bit GRAPH_FLAGS[] = {
    {hipGraphInstantiateFlagAutoFreeOnLaunch, cudaGraphInstantiateFlagAutoFreeOnLaunch},
    {hipGraphInstantiateFlagUpload, cudaGraphInstantiateFlagUpload},
    {hipGraphInstantiateFlagDeviceLaunch, cudaGraphInstantiateFlagDeviceLaunch},
    {hipGraphInstantiateFlagUseNodePriority, cudaGraphInstantiateFlagUseNodePriority}};
#define MAP_FLAGS(table, hip, out) map_flags(table, sizeof table / sizeof table[0], hip, out)

/* Translate every set bit; 0 (a bit CUDA has no meaning for) leaves *out unset. */
static int map_flags(const Bit *table, size_t n, unsigned long long hip, unsigned long long *out) {
    unsigned long long cuda = 0;
    for (size_t i = 0; i < n; ++i) {
        if (hip & table[i].hip) {
            cuda |= table[i].cuda;
            hip &= ~(unsigned long long)table[i].hip;
        }
    }
    if (hip != 0) return 0;
    *out = cuda;
    return 1;
}

static int memcpy_kind(hipMemcpyKind kind, enum cudaMemcpyKind *out) {
    switch (kind) {
    case hipMemcpyHostToHost: *out = cudaMemcpyHostToHost; return 1;
    case hipMemcpyHostToDevice: *out = cudaMemcpyHostToDevice; return 1;
    case hipMemcpyDeviceToHost: *out = cudaMemcpyDeviceToHost; return 1;
    case hipMemcpyDeviceToDevice: *out = cudaMemcpyDeviceToDevice; return 1;
    case hipMemcpyDeviceToDeviceNoCU: *out = cudaMemcpyDeviceToDevice; return 1;
    case hipMemcpyDefault: *out = cudaMemcpyDefault; return 1;
    }
    return 0;
}

static int pool_attr(hipMemPoolAttr attr, enum cudaMemPoolAttr *out) {
    switch (attr) {
    case hipMemPoolReuseFollowEventDependencies:
        *out = cudaMemPoolReuseFollowEventDependencies; return 1;
    case hipMemPoolReuseAllowOpportunistic: *out = cudaMemPoolReuseAllowOpportunistic; return 1;
    case hipMemPoolReuseAllowInternalDependencies:
        *out = cudaMemPoolReuseAllowInternalDependencies; return 1;
    case hipMemPoolAttrReleaseThreshold: *out = cudaMemPoolAttrReleaseThreshold; return 1;
    case hipMemPoolAttrReservedMemCurrent: *out = cudaMemPoolAttrReservedMemCurrent; return 1;
    case hipMemPoolAttrReservedMemHigh: *out = cudaMemPoolAttrReservedMemHigh; return 1;
    case hipMemPoolAttrUsedMemCurrent: *out = cudaMemPoolAttrUsedMemCurrent; return 1;
    case hipMemPoolAttrUsedMemHigh: *out = cudaMemPoolAttrUsedMemHigh; return 1;
    }
    return 0;
}

static int capture_mode(hipStreamCaptureMode mode, enum cudaStreamCaptureMode *out) {
    switch (mode) {
    case hipStreamCaptureModeGlobal: *out = cudaStreamCaptureModeGlobal; return 1;
    case hipStreamCaptureModeThreadLocal: *out = cudaStreamCaptureModeThreadLocal; return 1;
    case hipStreamCaptureModeRelaxed: *out = cudaStreamCaptureModeRelaxed; return 1;
    }
    return 0;
}

static hipStreamCaptureStatus capture_status(enum cudaStreamCaptureStatus status) {
    switch (status) {
    case cudaStreamCaptureStatusNone: return hipStreamCaptureStatusNone;
    case cudaStreamCaptureStatusActive: return hipStreamCaptureStatusActive;
    case cudaStreamCaptureStatusInvalidated: return hipStreamCaptureStatusInvalidated;
    }
    return hipStreamCaptureStatusInvalidated;
}

/* HIP's null stream is the legacy default stream; hipStreamPerThread is CUDA's per-thread one. */
static cudaStream_t cu_stream(hipStream_t stream) {
    if (stream == NULL) return cudaStreamLegacy;
    if (stream == hipStreamPerThread) return cudaStreamPerThread;
    return (cudaStream_t)stream;
}

/* CUDA's 1000 * major + 10 * minor, as HIP's 10000000 * major + 100000 * minor + patch. */
static int hip_version(int cuda) {
    return cuda / 1000 * 10000000 + cuda % 1000 / 10 * 100000;
}

/* ---- devices ------------------------------------------------------------------------------ */
HIP_API hipError_t hipGetDeviceCount(int *count) { return to_hip(cudaGetDeviceCount(count)); }
HIP_API hipError_t hipGetDevice(int *device) { return to_hip(cudaGetDevice(device)); }
HIP_API hipError_t hipSetDevice(int device) { return to_hip(cudaSetDevice(device)); }

/* Peer access: the pair's answer, and the enable call of the current device (HIP, like CUDA,
 * takes flags 0 only); an already enabled pair maps to hipErrorPeerAccessAlreadyEnabled through
 * the status table. */
HIP_API hipError_t hipDeviceCanAccessPeer(int *can_access, int device, int peer_device) {
    return to_hip(cudaDeviceCanAccessPeer(can_access, device, peer_device));
}
HIP_API hipError_t hipDeviceEnablePeerAccess(int peer_device, unsigned flags) {
    if (flags != 0) return hipErrorInvalidValue; /* rocmstreams passes 0 only */
    return to_hip(cudaDeviceEnablePeerAccess(peer_device, 0));
}

HIP_API hipError_t hipDeviceGetName(char *name, int len, hipDevice_t device) {
    struct cudaDeviceProp prop;
    if (name == NULL || len <= 0) return hipErrorInvalidValue;
    cudaError_t status = cudaGetDeviceProperties(&prop, device);
    if (status != cudaSuccess) return to_hip(status);
    strncpy(name, prop.name, (size_t)len - 1);
    name[len - 1] = '\0';
    return hipSuccess;
}

HIP_API hipError_t hipDeviceGetStreamPriorityRange(int *least, int *greatest) {
    return to_hip(cudaDeviceGetStreamPriorityRange(least, greatest));
}

HIP_API hipError_t hipRuntimeGetVersion(int *version) {
    int cuda = 0;
    cudaError_t status = cudaRuntimeGetVersion(&cuda);
    if (status == cudaSuccess && version != NULL) *version = hip_version(cuda);
    return to_hip(status);
}

HIP_API hipError_t hipDriverGetVersion(int *version) {
    int cuda = 0;
    cudaError_t status = cudaDriverGetVersion(&cuda);
    if (status == cudaSuccess && version != NULL) *version = hip_version(cuda);
    return to_hip(status);
}

/* ---- streams ------------------------------------------------------------------------------ */
HIP_API hipError_t hipStreamCreateWithPriority(hipStream_t *stream, unsigned flags, int priority) {
    unsigned long long cuda_flags;
    cudaStream_t created = NULL;
    if (stream == NULL || !MAP_FLAGS(STREAM_FLAGS, flags, &cuda_flags)) return hipErrorInvalidValue;
    cudaError_t status = cudaStreamCreateWithPriority(&created, (unsigned)cuda_flags, priority);
    *stream = (hipStream_t)created;
    return to_hip(status);
}

HIP_API hipError_t hipStreamQuery(hipStream_t stream) {
    return to_hip(cudaStreamQuery(cu_stream(stream)));
}
HIP_API hipError_t hipStreamSynchronize(hipStream_t stream) {
    return to_hip(cudaStreamSynchronize(cu_stream(stream)));
}
HIP_API hipError_t hipStreamDestroy(hipStream_t stream) {
    return to_hip(cudaStreamDestroy(cu_stream(stream)));
}

HIP_API hipError_t hipStreamWaitEvent(hipStream_t stream, hipEvent_t event, unsigned flags) {
    if (flags != 0) return hipErrorInvalidValue; /* rocmstreams passes 0 only */
    return to_hip(cudaStreamWaitEvent(cu_stream(stream), (cudaEvent_t)event, 0));
}

HIP_API hipError_t hipLaunchHostFunc(hipStream_t stream, hipHostFn_t fn, void *user_data) {
    return to_hip(cudaLaunchHostFunc(cu_stream(stream), (cudaHostFn_t)fn, user_data));
}

/* ---- events ------------------------------------------------------------------------------- */
HIP_API hipError_t hipEventCreateWithFlags(hipEvent_t *event, unsigned flags) {
    unsigned long long cuda_flags;
    cudaEvent_t created = NULL;
    if (event == NULL || !MAP_FLAGS(EVENT_FLAGS, flags, &cuda_flags)) return hipErrorInvalidValue;
    cudaError_t status = cudaEventCreateWithFlags(&created, (unsigned)cuda_flags);
    *event = (hipEvent_t)created;
    return to_hip(status);
}

HIP_API hipError_t hipEventRecord(hipEvent_t event, hipStream_t stream) {
    return to_hip(cudaEventRecord((cudaEvent_t)event, cu_stream(stream)));
}
HIP_API hipError_t hipEventQuery(hipEvent_t event) {
    return to_hip(cudaEventQuery((cudaEvent_t)event));
}
HIP_API hipError_t hipEventSynchronize(hipEvent_t event) {
    return to_hip(cudaEventSynchronize((cudaEvent_t)event));
}
HIP_API hipError_t hipEventElapsedTime(float *ms, hipEvent_t start, hipEvent_t stop) {
    return to_hip(cudaEventElapsedTime(ms, (cudaEvent_t)start, (cudaEvent_t)stop));
}
HIP_API hipError_t hipEventDestroy(hipEvent_t event) {
    return to_hip(cudaEventDestroy((cudaEvent_t)event));
}

/* ---- memory ------------------------------------------------------------------------------- */
HIP_API hipError_t hipMalloc(void **ptr, size_t size) { return to_hip(cudaMalloc(ptr, size)); }
HIP_API hipError_t hipFree(void *ptr) { return to_hip(cudaFree(ptr)); }
HIP_API hipError_t hipDeviceSynchronize(void) { return to_hip(cudaDeviceSynchronize()); }

/* Stream-ordered allocation from the device's default pool. */
HIP_API hipError_t hipDeviceGetAttribute(int *value, hipDeviceAttribute_t attr, int device) {
    switch (attr) {
    case hipDeviceAttributeMemoryPoolsSupported:
        return to_hip(cudaDeviceGetAttribute(value, cudaDevAttrMemoryPoolsSupported, device));
    }
    return hipErrorInvalidValue;
}
HIP_API hipError_t hipDeviceGetDefaultMemPool(hipMemPool_t *pool, int device) {
    return to_hip(cudaDeviceGetDefaultMemPool((cudaMemPool_t *)pool, device));
}
HIP_API hipError_t hipMemPoolSetAttribute(hipMemPool_t pool, hipMemPoolAttr attr, void *value) {
    enum cudaMemPoolAttr cuda_attr;
    if (!pool_attr(attr, &cuda_attr)) return hipErrorInvalidValue;
    return to_hip(cudaMemPoolSetAttribute((cudaMemPool_t)pool, cuda_attr, value));
}
HIP_API hipError_t hipMemPoolGetAttribute(hipMemPool_t pool, hipMemPoolAttr attr, void *value) {
    enum cudaMemPoolAttr cuda_attr;
    if (!pool_attr(attr, &cuda_attr)) return hipErrorInvalidValue;
    return to_hip(cudaMemPoolGetAttribute((cudaMemPool_t)pool, cuda_attr, value));
}
HIP_API hipError_t hipMemPoolTrimTo(hipMemPool_t pool, size_t min_bytes_to_hold) {
    return to_hip(cudaMemPoolTrimTo((cudaMemPool_t)pool, min_bytes_to_hold));
}
HIP_API hipError_t hipMallocAsync(void **ptr, size_t size, hipStream_t stream) {
    return to_hip(cudaMallocAsync(ptr, size, cu_stream(stream)));
}
HIP_API hipError_t hipFreeAsync(void *ptr, hipStream_t stream) {
    return to_hip(cudaFreeAsync(ptr, cu_stream(stream)));
}

HIP_API hipError_t hipHostMalloc(void **ptr, size_t size, unsigned flags) {
    unsigned long long cuda_flags;
    if (!MAP_FLAGS(HOST_FLAGS, flags, &cuda_flags)) return hipErrorInvalidValue;
    return to_hip(cudaHostAlloc(ptr, size, (unsigned)cuda_flags));
}
HIP_API hipError_t hipHostFree(void *ptr) { return to_hip(cudaFreeHost(ptr)); }

HIP_API hipError_t hipMemcpyAsync(void *dst, const void *src, size_t size, hipMemcpyKind kind,
                                  hipStream_t stream) {
    enum cudaMemcpyKind cuda_kind;
    if (!memcpy_kind(kind, &cuda_kind)) return hipErrorInvalidMemcpyDirection;
    return to_hip(cudaMemcpyAsync(dst, src, size, cuda_kind, cu_stream(stream)));
}

/* ---- graph capture ------------------------------------------------------------------------ */
HIP_API hipError_t hipMemcpyPeerAsync(void *dst, int dst_device, const void *src, int src_device,
                                      size_t size, hipStream_t stream) {
    return to_hip(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, size, cu_stream(stream)));
}

HIP_API hipError_t hipStreamBeginCapture(hipStream_t stream, hipStreamCaptureMode mode) {
    enum cudaStreamCaptureMode cuda_mode;
    if (!capture_mode(mode, &cuda_mode)) return hipErrorInvalidValue;
    return to_hip(cudaStreamBeginCapture(cu_stream(stream), cuda_mode));
}

HIP_API hipError_t hipStreamEndCapture(hipStream_t stream, hipGraph_t *graph) {
    cudaGraph_t captured = NULL;
    if (graph == NULL) return hipErrorInvalidValue;
    cudaError_t status = cudaStreamEndCapture(cu_stream(stream), &captured);
    *graph = (hipGraph_t)captured;
    return to_hip(status);
}

HIP_API hipError_t hipStreamIsCapturing(hipStream_t stream, hipStreamCaptureStatus *status) {
    enum cudaStreamCaptureStatus cuda_status = cudaStreamCaptureStatusNone;
    if (status == NULL) return hipErrorInvalidValue;
    cudaError_t result = cudaStreamIsCapturing(cu_stream(stream), &cuda_status);
    *status = capture_status(cuda_status);
    return to_hip(result);
}

HIP_API hipError_t hipGraphInstantiateWithFlags(hipGraphExec_t *exec, hipGraph_t graph,
                                                unsigned long long flags) {
    unsigned long long cuda_flags;
    cudaGraphExec_t created = NULL;
    if (exec == NULL || !MAP_FLAGS(GRAPH_FLAGS, flags, &cuda_flags)) return hipErrorInvalidValue;
    cudaError_t status = cudaGraphInstantiateWithFlags(&created, (cudaGraph_t)graph, cuda_flags);
    *exec = (hipGraphExec_t)created;
    return to_hip(status);
}

HIP_API hipError_t hipGraphLaunch(hipGraphExec_t exec, hipStream_t stream) {
    return to_hip(cudaGraphLaunch((cudaGraphExec_t)exec, cu_stream(stream)));
}
HIP_API hipError_t hipGraphExecDestroy(hipGraphExec_t exec) {
    return to_hip(cudaGraphExecDestroy((cudaGraphExec_t)exec));
}
HIP_API hipError_t hipGraphDestroy(hipGraph_t graph) {
    return to_hip(cudaGraphDestroy((cudaGraph_t)graph));
}

/* Kernels: on this rig a hipFunction_t is a CUDA driver function (numba-cuda's CUkernel or
 * CUfunction handle), launched by the driver's cuLaunchKernel, found at first use (so the
 * library links without the driver, as CI builds it). CUresult values of launch failures are the
 * cudaError_t numbers (1, 98, 200, 400, 701, ...), so the runtime's table maps them. */
typedef CUresult (*LaunchKernelFn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                   unsigned, unsigned, CUstream, void **, void **);

HIP_API hipError_t hipModuleLaunchKernel(hipFunction_t f, unsigned int gx, unsigned int gy,
                                         unsigned int gz, unsigned int bx, unsigned int by,
                                         unsigned int bz, unsigned int shared,
                                         hipStream_t stream, void **params, void **extra) {
    static LaunchKernelFn launch = NULL;
    if (launch == NULL) {
        void *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
        launch = driver ? (LaunchKernelFn)dlsym(driver, "cuLaunchKernel") : NULL;
        if (launch == NULL) return hipErrorNotInitialized;
    }
    CUresult status = launch((CUfunction)f, gx, gy, gz, bx, by, bz, shared,
                             (CUstream)cu_stream(stream), params, extra);
    return to_hip((cudaError_t)status);
}

/* hipFuncGetAttribute (hipFunction_attribute numbers 0-9 are CUfunction_attribute's). Under the
 * CUDA driver's lazy loading a function is loaded into the context at its first launch or
 * attribute query: rocmstreams.prepare queries one so that the load (which waits for the device)
 * happens there. A CUkernel handle is resolved to the current context's CUfunction first. */
typedef CUresult (*FuncGetAttributeFn)(int *, CUfunction_attribute, CUfunction);
typedef CUresult (*KernelGetFunctionFn)(CUfunction *, CUkernel);
HIP_API hipError_t hipFuncGetAttribute(int *value, int attrib, hipFunction_t f) {
    static FuncGetAttributeFn get = NULL;
    static KernelGetFunctionFn resolve = NULL;
    if (get == NULL) {
        void *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
        get = driver ? (FuncGetAttributeFn)dlsym(driver, "cuFuncGetAttribute") : NULL;
        resolve = driver ? (KernelGetFunctionFn)dlsym(driver, "cuKernelGetFunction") : NULL;
        if (get == NULL) return hipErrorNotInitialized;
    }
    CUresult status = get(value, (CUfunction_attribute)attrib, (CUfunction)f);
    if (status != CUDA_SUCCESS && resolve != NULL) {
        CUfunction fn;
        if (resolve(&fn, (CUkernel)f) == CUDA_SUCCESS)
            status = get(value, (CUfunction_attribute)attrib, fn);
    }
    return to_hip((cudaError_t)status);
}
