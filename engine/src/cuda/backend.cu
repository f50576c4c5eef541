/* cuda/backend.cu: the CUDA module's entry points: i2i_cuda_open (driver, device and cuDNN
 * checks with a one-line reason), the backend table (execute, destroy) and the extension table
 * (device image path, statistics, precision, test and benchmark hooks). The failure policy is
 * described above run_common(). I2I_CUDA_FAULT=oom|oom-once|sticky injects faults for tests.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_priv.h"

/* ---- errors and allocation ---------------------------------------------------------------------- */

static int sticky_code(cudaError_t e) {
  switch (e) {
  case cudaErrorIllegalAddress:
  case cudaErrorLaunchFailure:
  case cudaErrorHardwareStackError:
  case cudaErrorIllegalInstruction:
  case cudaErrorMisalignedAddress:
  case cudaErrorInvalidAddressSpace:
  case cudaErrorInvalidPc:
  case cudaErrorLaunchTimeout:
  case cudaErrorAssert:
  case cudaErrorECCUncorrectable:
  case cudaErrorContextIsDestroyed:
  case cudaErrorCudartUnloading:
  case cudaErrorUnknown: return 1;
  default: return 0;
  }
}

int cu_fail(cu_backend *B, int kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(B->err.msg, sizeof B->err.msg, fmt, ap);
  va_end(ap);
  B->err.kind = kind;
  return kind;
}

int cu_fail_cuda(cu_backend *B, cudaError_t e, const char *what) {
  if (e == cudaSuccess) return CE_OK;
  int kind = e == cudaErrorMemoryAllocation ? CE_OOM : sticky_code(e) ? CE_STICKY : CE_DEVICE;
  return cu_fail(B, kind, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* "39 KiB", "3.3 MiB", "2.0 GiB" */
static const char *human(char *buf, size_t len, uint64_t bytes) {
  if (bytes < ((uint64_t)1 << 20)) snprintf(buf, len, "%.0f KiB", bytes / 1024.0);
  else if (bytes < ((uint64_t)1 << 30)) snprintf(buf, len, "%.1f MiB", bytes / 1048576.0);
  else snprintf(buf, len, "%.1f GiB", bytes / 1073741824.0);
  return buf;
}

int cu_malloc(cu_backend *B, void **p, size_t bytes, const char *what) {
  *p = NULL;
  if (B->fault_armed && (B->fault == FAULT_OOM || B->fault == FAULT_OOM_ONCE)) {
    if (B->fault == FAULT_OOM_ONCE) B->fault_armed = 0;
    return cu_fail(B, CE_OOM, "cudaMalloc of %.1f MiB for the %s: out of memory (cudaErrorMemoryAllocation, injected by "
                              "I2I_CUDA_FAULT)",
                   bytes / 1048576.0, what);
  }
  if (B->run_budget && (uint64_t)B->stats.device_bytes + bytes > B->run_budget) {
    char a[32], b[32], c[32];
    return cu_fail(B, CE_BUDGET, "%s for the %s would pass the device budget of %s (%s held)",
                   human(a, sizeof a, bytes), what, human(b, sizeof b, B->run_budget),
                   human(c, sizeof c, B->stats.device_bytes));
  }
  cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
  if (e != cudaSuccess) {
    *p = NULL;
    if (e == cudaErrorMemoryAllocation) cudaGetLastError(); /* not sticky: clear it */
    char w[160];
    snprintf(w, sizeof w, "cudaMalloc of %.1f MiB for the %s", bytes / 1048576.0, what);
    return cu_fail_cuda(B, e, w);
  }
  B->stats.device_bytes += bytes;
  if (B->stats.device_bytes > B->stats.peak_device_bytes) B->stats.peak_device_bytes = B->stats.device_bytes;
  return CE_OK;
}

void cu_free(cu_backend *B, void *p, size_t bytes) {
  if (!p) return;
  cudaFree(p);
  B->stats.device_bytes -= bytes <= B->stats.device_bytes ? bytes : B->stats.device_bytes;
}

/* ---- caches ------------------------------------------------------------------------------------- */

static void free_caches(cu_backend *B) {
  if (B->dead) return; /* the context is corrupt: leave it to process exit */
  cudaStreamSynchronize(B->stream);
  cudaGetLastError();
  for (int i = 0; i < CU_MAX_PLANS; i++) {
    cplan_free(B, B->plans[i]);
    B->plans[i] = NULL;
  }
  for (int i = 0; i < CU_MAX_MODELS; i++) {
    weights_free(B, B->weights[i]);
    B->weights[i] = NULL;
  }
}

/* The cached device plan for this run, built when missing (least recently used one evicted). */
static int plan_get(cu_backend *B, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, int mode, cu_weights *W,
                    struct cplan **out) {
  for (int i = 0; i < CU_MAX_PLANS; i++)
    if (B->plans[i] && cplan_matches(B->plans[i], m, plan, B->precision, mode)) {
      cplan_touch(B->plans[i], ++B->clock);
      *out = B->plans[i];
      return CE_OK;
    }
  int slot = -1;
  for (int i = 0; i < CU_MAX_PLANS && slot < 0; i++)
    if (!B->plans[i]) slot = i;
  if (slot < 0) {
    slot = 0;
    for (int i = 1; i < CU_MAX_PLANS; i++)
      if (cplan_last_use(B->plans[i]) < cplan_last_use(B->plans[slot])) slot = i;
    cplan_free(B, B->plans[slot]);
    B->plans[slot] = NULL;
  }
  struct cplan *cp;
  CU_OK(cplan_build(B, ctx, m, plan, W, mode, 0, plan->n_steps, 0, &cp));
  cplan_touch(cp, ++B->clock);
  B->plans[slot] = cp;
  *out = cp;
  return CE_OK;
}

/* ---- runs ------------------------------------------------------------------------------------- */

/* The injected sticky fault is a real one: a kernel writes through a wild pointer. */
static int inject_sticky(cu_backend *B) {
  B->fault_armed = 0;
  cudaError_t e = k_fault(B->stream);
  if (e == cudaSuccess) return cu_fail(B, CE_STICKY, "injected sticky fault did not fault (I2I_CUDA_FAULT=sticky)");
  return cu_fail_cuda(B, e, "a kernel (injected by I2I_CUDA_FAULT=sticky)");
}

typedef enum { RUN_ARENA = 0, RUN_IMAGES, RUN_BENCH } run_kind;

typedef struct {
  run_kind kind;
  const i2i_cuda_images *im;
  int warmup, iters, graph;
  double *ms;
} run_req;

static int run_once(cu_backend *B, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, i2i_run_state *st,
                    const run_req *rq) {
  if (B->fault_armed && B->fault == FAULT_STICKY) return inject_sticky(B);
  cu_weights *W;
  CU_OK(weights_get(B, m, B->precision == I2I_CUDA_FP16, &W));
  struct cplan *cp;
  CU_OK(plan_get(B, ctx, m, plan, st->mode, W, &cp));
  if (rq->kind == RUN_IMAGES) {
    CU_OK(cplan_upload_images(B, cp, rq->im));
    CU_OK(cplan_run(B, ctx, cp, st, 1, B->use_graphs));
    CU_OK(cplan_download_images(B, cp, rq->im));
  } else if (rq->kind == RUN_ARENA) {
    CU_OK(cplan_upload(B, cp, plan, st));
    CU_OK(cplan_run(B, ctx, cp, st, 1, B->use_graphs));
    CU_OK(cplan_download(B, cp, plan, st));
  } else {
    CU_OK(cplan_upload(B, cp, plan, st));
    for (int i = 0; i < rq->warmup; i++) CU_OK(cplan_run(B, NULL, cp, st, 0, rq->graph));
    cudaEvent_t e0 = NULL, e1 = NULL;
    int rc = cu_fail_cuda(B, cudaEventCreate(&e0), "cudaEventCreate");
    if (!rc) rc = cu_fail_cuda(B, cudaEventCreate(&e1), "cudaEventCreate");
    for (int i = 0; i < rq->iters && !rc; i++) {
      rc = cu_fail_cuda(B, cudaEventRecord(e0, B->stream), "cudaEventRecord");
      if (!rc) rc = cplan_run(B, NULL, cp, st, 0, rq->graph);
      if (!rc) rc = cu_fail_cuda(B, cudaEventRecord(e1, B->stream), "cudaEventRecord");
      if (!rc) rc = cu_fail_cuda(B, cudaEventSynchronize(e1), "cudaEventSynchronize");
      float ms = 0;
      if (!rc) rc = cu_fail_cuda(B, cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
      rq->ms[i] = ms;
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (!rc && B->profile) rc = cplan_profile(B, ctx, cp, st);
    if (rc) return rc;
    CU_OK(cplan_download(B, cp, plan, st));
  }
  B->stats.runs++;
  return CE_OK;
}

/* After a non-sticky-looking failure, checks whether the context still works. */
static int probe_sticky(cu_backend *B, int kind) {
  if (kind != CE_DEVICE && kind != CE_UNSUPPORTED && kind != CE_INTERNAL) return kind;
  cudaError_t e = cudaStreamSynchronize(B->stream);
  if (e != cudaSuccess && sticky_code(e)) {
    char prev[480];
    snprintf(prev, sizeof prev, "%s", B->err.msg);
    cu_fail_cuda(B, e, "the device after an error");
    size_t l = strlen(B->err.msg);
    snprintf(B->err.msg + l, sizeof B->err.msg - l, " (first: %.200s)", prev);
    return CE_STICKY;
  }
  return kind;
}

static i2i_status to_status(cu_backend *B, i2i_ctx *ctx, int kind);

i2i_status cu_finish(cu_backend *B, i2i_ctx *ctx, int kind) {
  kind = probe_sticky(B, kind);
  if (kind == CE_STICKY) {
    B->dead = 1;
  } else if (kind) {
    cudaStreamSynchronize(B->stream);
    cudaGetLastError();
  }
  return to_status(B, ctx, kind);
}

static i2i_status to_status(cu_backend *B, i2i_ctx *ctx, int kind) {
  const i2i_cuda_host *h = B->host;
  switch (kind) {
  case CE_OK: return I2I_OK;
  case CE_OOM: return h->fail(ctx, I2I_E_DEVICE_NOMEM, "cuda: out of GPU memory after freeing the caches and retrying: %s", B->err.msg);
  case CE_BUDGET: return h->fail(ctx, I2I_E_DEVICE_NOMEM, "cuda: %s", B->err.msg);
  case CE_STICKY:
    B->dead = 1;
    snprintf(B->dead_why, sizeof B->dead_why, "%s", B->err.msg);
    return h->fail(ctx, I2I_E_DEVICE, "cuda: %s; the GPU is disabled for this process", B->err.msg);
  case CE_CANCELLED: return I2I_E_CANCELLED;
  case CE_HOSTMEM: return h->fail(ctx, I2I_E_NOMEM, "cuda: %s", B->err.msg);
  case CE_UNSUPPORTED: return h->fail(ctx, I2I_E_DEVICE, "cuda: not supported on the GPU: %s", B->err.msg);
  default: return h->fail(ctx, I2I_E_DEVICE, "cuda: %s", B->err.msg);
  }
}

/* Failure policy: every CUDA and cuDNN status becomes a cu_err. Out of device memory frees the
 * cached plans and weights and retries once, then returns I2I_E_DEVICE_NOMEM; a sticky error
 * marks the backend dead (later runs fail at once with the first reason); anything else is
 * I2I_E_DEVICE with the library's text. run.c falls back to the CPU on both unless CUDA was
 * forced. */
i2i_status cu_begin(cu_backend *B, i2i_ctx *ctx) {
  if (B->dead) return B->host->fail(ctx, I2I_E_DEVICE, "cuda: the GPU is unusable in this process after an earlier error (%s)", B->dead_why);
  if (cudaSetDevice(B->device) != cudaSuccess) {
    cudaGetLastError();
    cu_fail(B, CE_DEVICE, "cudaSetDevice(%d) failed", B->device);
    return to_status(B, ctx, CE_DEVICE);
  }
  B->err.kind = CE_OK;
  B->err.msg[0] = 0;
  return I2I_OK;
}

static i2i_status run_common(cu_backend *B, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, i2i_run_state *st,
                             const run_req *rq) {
  i2i_status s0 = cu_begin(B, ctx);
  if (s0) return s0;
  B->fault_armed = B->fault != FAULT_NONE;
  B->run_budget = st && rq->kind != RUN_BENCH ? st->device_budget : 0;
  int kind = CE_OK;
  for (int attempt = 0; attempt < 2; attempt++) {
    kind = run_once(B, ctx, m, plan, st, rq);
    if (kind != CE_OOM || attempt) break;
    B->stats.oom_retries++;
    B->host->log(ctx, I2I_LOG_WARNING, "cuda: %s; freeing the GPU caches and retrying", B->err.msg);
    free_caches(B);
  }
  B->run_budget = 0;
  if (kind) return cu_finish(B, ctx, kind);
  if (st && st->progress && rq->kind != RUN_BENCH) {
    double t = plan->total_flops > 0 ? plan->total_flops : 1;
    if (B->host->progress(ctx, st, t, t)) return I2I_E_CANCELLED;
  }
  return I2I_OK;
}

static i2i_status be_execute(void *self, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, i2i_run_state *st) {
  run_req rq = {RUN_ARENA, NULL, 0, 0, 0, NULL};
  return run_common((cu_backend *)self, ctx, m, plan, st, &rq);
}

static void be_destroy(void *self) {
  cu_backend *B = (cu_backend *)self;
  if (!B) return;
  if (!B->dead) {
    cudaSetDevice(B->device);
    free_caches(B);
    dnn_close(B);
    if (B->stream) cudaStreamDestroy(B->stream);
  }
  algo_cache_close(B->algos);
  free(B);
}

static const i2i_backend_ops cuda_ops = {"cuda", be_execute, be_destroy};

/* ---- extension table ---------------------------------------------------------------------------- */

static i2i_status ext_execute_images(void *self, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan,
                                     i2i_run_state *st, const i2i_cuda_images *im) {
  cu_backend *B = (cu_backend *)self;
  if (!im || im->n_images != plan->n || im->width < 1 || im->height < 1 || im->width > plan->w || im->height > plan->h ||
      (im->layout != I2I_PIXELS_RGBA && im->layout != I2I_PIXELS_RGB_SIGNED))
    return B->host->fail(ctx, I2I_E_ARG, "cuda: images do not match the plan");
  run_req rq = {RUN_IMAGES, im, 0, 0, 0, NULL};
  return run_common(B, ctx, m, plan, st, &rq);
}

static void ext_get_stats(void *self, i2i_cuda_stats *out) {
  cu_backend *B = (cu_backend *)self;
  *out = B->stats;
  out->precision = B->precision;
  out->dead = B->dead;
  snprintf(out->algo_cache_path, sizeof out->algo_cache_path, "%s", algo_cache_path(B->algos));
}

static i2i_status ext_set_precision(void *self, int precision) {
  cu_backend *B = (cu_backend *)self;
  if (precision != I2I_CUDA_FP32 && precision != I2I_CUDA_FP16) return I2I_E_ARG;
  B->precision = precision;
  return I2I_OK;
}

static i2i_status ext_run_steps(void *self, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, i2i_run_state *st,
                                int first, int last) {
  cu_backend *B = (cu_backend *)self;
  if (B->dead) return B->host->fail(ctx, I2I_E_DEVICE, "cuda: the GPU is unusable (%s)", B->dead_why);
  B->err.kind = CE_OK;
  cu_weights *W;
  int k = weights_get(B, m, B->precision == I2I_CUDA_FP16, &W);
  struct cplan *cp = NULL;
  if (!k) k = cplan_build(B, ctx, m, plan, W, st->mode, first, last, 1, &cp);
  if (!k) k = cplan_upload(B, cp, plan, st);
  if (!k) k = cplan_run(B, ctx, cp, st, 0, 0);
  if (!k) k = cplan_download(B, cp, plan, st);
  k = probe_sticky(B, k);
  if (cp && k != CE_STICKY) cplan_free(B, cp);
  return to_status(B, ctx, k);
}

static i2i_status ext_bench(void *self, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, i2i_run_state *st,
                            int warmup, int iters, int graph, double *ms) {
  cu_backend *B = (cu_backend *)self;
  if (warmup < 0 || iters < 1 || !ms) return B->host->fail(ctx, I2I_E_ARG, "cuda bench: bad arguments");
  run_req rq = {RUN_BENCH, NULL, warmup, iters, graph, ms};
  return run_common(B, ctx, m, plan, st, &rq);
}

static void ext_trim(void *self) { free_caches((cu_backend *)self); }

void cu_free_caches(cu_backend *B) { free_caches(B); }

static void ext_begin_run(void *self, uint64_t budget) {
  cu_backend *B = (cu_backend *)self;
  if (budget && B->stats.device_bytes > budget) free_caches(B);
  B->stats.peak_device_bytes = B->stats.device_bytes;
}

static const i2i_cuda_ext cuda_ext = {I2I_CUDA_EXT_VERSION, ext_execute_images, ext_get_stats, ext_set_precision,
                                      ext_run_steps,        ext_bench,          ext_trim,
                                      cu_train_open,        cu_conv_step,       ext_begin_run};

/* ---- open --------------------------------------------------------------------------------------- */

static int open_fail(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int open_fail(char *why, size_t whylen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
  cudaGetLastError();
  return 1;
}

static int env_choice(const char *name, const char *const *names, int n, int def) {
  const char *e = getenv(name);
  if (!e || !*e) return def;
  for (int i = 0; i < n; i++)
    if (!strcmp(e, names[i])) return i;
  return def;
}

extern "C" __attribute__((visibility("default"))) int i2i_cuda_open(const i2i_cuda_host *host, int device,
                                                                  const i2i_backend_ops **ops, void **self, char *why,
                                                                  size_t whylen) {
  *ops = NULL;
  *self = NULL;
  if (!host || host->api_version != I2I_CUDA_API_VERSION)
    return open_fail(why, whylen, "the CUDA module was built for another engine version (API %d, engine %d)",
                     I2I_CUDA_API_VERSION, host ? host->api_version : -1);
  int drv = 0, rt = 0;
  if (cudaDriverGetVersion(&drv) != cudaSuccess || drv == 0)
    return open_fail(why, whylen, "no NVIDIA driver is installed (libcuda.so.1 not found)");
  cudaRuntimeGetVersion(&rt);
  if (drv / 1000 < rt / 1000)
    return open_fail(why, whylen,
                     "the NVIDIA driver supports CUDA %d.%d, this build needs CUDA %d.%d (driver 580 or newer for CUDA "
                     "13); update the driver or use the CPU",
                     drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) return open_fail(why, whylen, "no CUDA device found");
  if (e == cudaErrorInsufficientDriver)
    return open_fail(why, whylen, "the NVIDIA driver (CUDA %d.%d) is too old for this build (CUDA %d.%d); update it",
                     drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
  if (e != cudaSuccess)
    return open_fail(why, whylen, "the CUDA driver cannot be used: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
  if (device < 0 || device >= count)
    return open_fail(why, whylen, "CUDA device %d does not exist (%d device%s)", device, count, count == 1 ? "" : "s");
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess)
    return open_fail(why, whylen, "cannot read CUDA device %d: %s", device, cudaGetErrorString(e));
  if (prop.major * 10 + prop.minor < 75)
    return open_fail(why, whylen, "%s has compute capability %d.%d; i2i needs 7.5 (Turing) or newer", prop.name,
                     prop.major, prop.minor);
  size_t cv = dnn_runtime_version(), bv = dnn_build_version();
  if (cv / 10000 != bv / 10000 || cv < bv)
    return open_fail(why, whylen, "cuDNN %zu.%zu.%zu is installed, this build needs %zu.%zu or newer within version %zu",
                     cv / 10000, cv % 10000 / 100, cv % 100, bv / 10000, bv % 10000 / 100, bv / 10000);
  e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaFree(0); /* creates the context; a corrupt one fails here */
  if (e != cudaSuccess)
    return open_fail(why, whylen, "CUDA device %d (%s) cannot be used: %s (%s)", device, prop.name, cudaGetErrorString(e),
                     cudaGetErrorName(e));
  e = k_probe_image();
  if (e != cudaSuccess)
    return open_fail(why, whylen, "this build of the CUDA module has no code for %s (sm_%d%d): %s; rebuild with "
                                  "-Dcuda-archs=%d%d",
                     prop.name, prop.major, prop.minor, cudaGetErrorString(e), prop.major, prop.minor);
  cu_backend *B = (cu_backend *)calloc(1, sizeof *B);
  if (!B) return open_fail(why, whylen, "out of host memory opening the CUDA backend");
  B->host = host;
  B->device = device;
  static const char *const precs[] = {"fp32", "fp16"};
  B->precision = env_choice("I2I_CUDA_PRECISION", precs, 2, I2I_CUDA_FP16);
  static const char *const faults[] = {"", "oom", "oom-once", "sticky"};
  B->fault = env_choice("I2I_CUDA_FAULT", faults, 4, FAULT_NONE);
  static const char *const onoff[] = {"0", "1"};
  B->use_graphs = env_choice("I2I_CUDA_GRAPH", onoff, 2, 0);
  B->train_graphs = env_choice("I2I_CUDA_GRAPH", onoff, 2, 1);
  static const char *const algos[] = {"search", "heuristic"};
  B->heuristic_only = env_choice("I2I_CUDA_ALGO", algos, 2, 0);
  B->any_algo = !env_choice("I2I_CUDA_DETERMINISTIC", onoff, 2, 1);
  B->profile = getenv("I2I_PROFILE") != NULL;
  B->use_thin = env_choice("I2I_CUDA_THIN", onoff, 2, 1);
  B->train_tf32 = env_choice("I2I_CUDA_TF32", onoff, 2, 1);
  B->search_ws_limit = (size_t)1 << 30;
  B->stats.cc_major = prop.major;
  B->stats.cc_minor = prop.minor;
  B->stats.driver_version = drv;
  B->stats.runtime_version = rt;
  B->stats.cudnn_version = cv;
  B->stats.sm_count = prop.multiProcessorCount;
  snprintf(B->stats.device_name, sizeof B->stats.device_name, "%.127s", prop.name);
  k_set_grid_cap(prop.multiProcessorCount * 32);
  B->algos = algo_cache_open();
  if (!B->algos) {
    free(B);
    return open_fail(why, whylen, "out of host memory opening the algorithm cache");
  }
  e = cudaStreamCreateWithFlags(&B->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    algo_cache_close(B->algos);
    free(B);
    return open_fail(why, whylen, "cannot create a CUDA stream: %s", cudaGetErrorString(e));
  }
  if (dnn_open(B)) {
    open_fail(why, whylen, "cuDNN cannot start on %s: %s", prop.name, B->err.msg);
    cudaStreamDestroy(B->stream);
    algo_cache_close(B->algos);
    free(B);
    return 1;
  }
  *ops = &cuda_ops;
  *self = B;
  return 0;
}

extern "C" __attribute__((visibility("default"))) const i2i_cuda_ext *i2i_cuda_get_ext(void) { return &cuda_ext; }
