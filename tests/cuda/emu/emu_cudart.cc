/* tests/cuda/emu/emu_cudart.cc: the CUDA runtime calls the module makes, emulated on the host.
 * Device memory is mmap'ed host memory (first 64 MiB poisoned with 0xff, a NaN pattern) capped
 * by EMU_DEVICE_MEMORY so out-of-memory is real; a sticky fault (k_fault, EMU_STICKY_AT=N) fails
 * every later call. EMU_DRIVER, EMU_NO_DEVICE, EMU_CC fake the device. Stream capture records
 * work into a graph that a launch replays (emu.h); EMU_NO_CAPTURE refuses captures. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <vector>

#include "emu.h"

static cudaError_t g_sticky = cudaSuccess, g_last = cudaSuccess;
static size_t g_used;
static long g_launches;

static size_t limit_bytes(void) {
  const char *e = getenv("EMU_DEVICE_MEMORY");
  return e && *e ? (size_t)strtoull(e, NULL, 10) : (size_t)16 << 30;
}

cudaError_t emu_sticky(void) { return g_sticky; }
void emu_set_sticky(cudaError_t e) { g_sticky = g_last = e; }
void emu_set_last(cudaError_t e) { g_last = e; }

cudaError_t emu_launch_check(void) {
  if (g_sticky) return g_sticky;
  const char *e = getenv("EMU_STICKY_AT");
  if (e && *e && ++g_launches == atol(e)) emu_set_sticky(cudaErrorIllegalAddress);
  return g_sticky;
}

static cudaError_t ret(cudaError_t e) {
  if (g_sticky) return g_last = g_sticky;
  if (e) g_last = e;
  return e;
}

/* A captured graph, and an instantiated one: the recorded work in stream order. */
struct emu_graph {
  std::vector<std::function<cudaError_t()>> ops;
};

static emu_graph *g_capture;   /* the open capture */
static bool g_capture_invalid; /* a forbidden call happened in it */

bool emu_capturing(void) { return g_capture != NULL; }

cudaError_t emu_record(std::function<cudaError_t()> op) {
  if (g_sticky) return ret(g_sticky);
  g_capture->ops.push_back(std::move(op));
  return cudaSuccess;
}

cudaError_t emu_capture_forbidden(void) {
  g_capture_invalid = true;
  return ret(cudaErrorStreamCaptureUnsupported);
}

extern "C" {

cudaError_t cudaMalloc(void **p, size_t n) {
  *p = NULL;
  if (g_sticky) return ret(g_sticky);
  if (g_capture) return emu_capture_forbidden();
  if (g_used + n > limit_bytes()) return ret(cudaErrorMemoryAllocation);
  size_t total = ((n + 255) & ~(size_t)255) + 256;
  /* mmap: untouched pages cost nothing (the search workspace is large) */
  void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return ret(cudaErrorMemoryAllocation);
  unsigned char *raw = (unsigned char *)m;
  memcpy(raw, &n, sizeof n);
  memset(raw + 256, 0xff, total - 256 < ((size_t)64 << 20) ? total - 256 : (size_t)64 << 20);
  g_used += n;
  *p = raw + 256;
  return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
  if (g_capture) return emu_capture_forbidden();
  if (!p) return ret(cudaSuccess);
  unsigned char *raw = (unsigned char *)p - 256;
  size_t n;
  memcpy(&n, raw, sizeof n);
  g_used -= n;
  munmap(raw, ((n + 255) & ~(size_t)255) + 256);
  return ret(cudaSuccess);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s) {
  EMU_DEFER(cudaMemcpyAsync(dst, src, n, k, s));
  if (g_sticky) return ret(g_sticky);
  memmove(dst, src, n);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
  EMU_DEFER(cudaMemsetAsync(p, v, n, s));
  if (g_sticky) return ret(g_sticky);
  memset(p, v, n);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return g_capture ? emu_capture_forbidden() : ret(cudaSuccess); }
cudaError_t cudaStreamQuery(cudaStream_t) { return g_capture ? emu_capture_forbidden() : ret(cudaSuccess); }

cudaError_t cudaGetLastError(void) {
  if (g_sticky) return g_sticky;
  cudaError_t e = g_last;
  g_last = cudaSuccess;
  return e;
}

const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "no error";
  case cudaErrorMemoryAllocation: return "out of memory";
  case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
  case cudaErrorNoDevice: return "no CUDA-capable device is detected";
  case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
  case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
  default: return "emulated CUDA error";
  }
}

const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "cudaSuccess";
  case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
  case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
  case cudaErrorNoDevice: return "cudaErrorNoDevice";
  case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
  case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
  default: return "cudaErrorUnknown";
  }
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total) {
  *total = limit_bytes();
  *free_b = *total > g_used ? *total - g_used : 0;
  return ret(cudaSuccess);
}

cudaError_t cudaSetDevice(int d) { return ret(d == 0 ? cudaSuccess : cudaErrorInvalidDevice); }

cudaError_t cudaDriverGetVersion(int *v) {
  const char *e = getenv("EMU_DRIVER");
  *v = e && *e ? atoi(e) : 13000;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) {
  *v = 13000;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *n) {
  *n = 0;
  if (getenv("EMU_NO_DEVICE")) return cudaErrorNoDevice;
  *n = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "i2i emulated GPU");
  const char *e = getenv("EMU_CC");
  int cc = e && *e ? atoi(e) : 90;
  p->major = cc / 10;
  p->minor = cc % 10;
  p->multiProcessorCount = 4;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int) {
  *s = (cudaStream_t)(uintptr_t)0x5;
  return ret(cudaSuccess);
}

cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }

struct emu_event {
  double t;
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) {
  *e = (cudaEvent_t)calloc(1, sizeof(emu_event));
  return *e ? ret(cudaSuccess) : cudaErrorMemoryAllocation;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  EMU_DEFER(cudaEventRecord(e, s));
  ((emu_event *)e)->t = now_ms();
  return ret(cudaSuccess);
}

cudaError_t cudaEventSynchronize(cudaEvent_t) { return g_capture ? emu_capture_forbidden() : ret(cudaSuccess); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = (float)(((emu_event *)b)->t - ((emu_event *)a)->t);
  return ret(cudaSuccess);
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  free(e);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (g_sticky) return ret(g_sticky);
  if (getenv("EMU_NO_CAPTURE")) return ret(cudaErrorStreamCaptureUnsupported);
  if (g_capture) return ret(cudaErrorIllegalState);
  g_capture = new emu_graph;
  g_capture_invalid = false;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) {
  *g = NULL;
  if (!g_capture) return ret(cudaErrorIllegalState);
  emu_graph *c = g_capture;
  g_capture = NULL;
  if (g_capture_invalid) {
    delete c;
    return ret(cudaErrorStreamCaptureInvalidated);
  }
  *g = (cudaGraph_t)c;
  return ret(cudaSuccess);
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) {
  *e = NULL;
  if (g_sticky) return ret(g_sticky);
  *e = (cudaGraphExec_t) new emu_graph(*(const emu_graph *)g);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
  if (g_capture) return emu_capture_forbidden();
  if (g_sticky) return ret(g_sticky);
  for (const auto &op : ((const emu_graph *)e)->ops) {
    cudaError_t r = op();
    if (r) return ret(r);
  }
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete (emu_graph *)g;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete (emu_graph *)e;
  return cudaSuccess;
}
}
