/* cuda/dnn.cu: every cuDNN call of the module: the handle, convolution descriptors, algorithm
 * choice (on-disk cache, timed search, heuristics) and the convolutions. ConvTranspose is
 * cudnnConvolutionBackwardData with the ONNX weights as the filter, as PyTorch does; training
 * adds the weight gradient (cudnnConvolutionBackwardFilter). FP32 runs NCHW with CUDNN_FMA_MATH
 * (no TF32); FP16 runs NHWC / KRSC on tensor cores, float accumulation.
 */
#include <cudnn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_priv.h"

struct dnn_state {
  cudnnHandle_t h;
};

struct dnn_conv {
  conv_geom_d g;
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  int algo, math;
  size_t ws;
  int chosen;
  char key[512];
};

/* Turns a cuDNN status into a cu_err. Device allocation failures are out-of-memory; an
 * execution failure is checked against the CUDA context (it may be a sticky fault). */
static int dnn_fail(cu_backend *B, cudnnStatus_t st, const char *what) {
  char last[256] = "";
  cudnnGetLastErrorString(last, sizeof last);
  int kind = CE_DEVICE;
  switch (CUDNN_STATUS_CATEGORY(st)) {
  case CUDNN_STATUS_NOT_SUPPORTED: kind = CE_UNSUPPORTED; break;
  case CUDNN_STATUS_INTERNAL_ERROR:
    if (st == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED) kind = CE_OOM;
    if (st == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED) kind = CE_HOSTMEM;
    break;
  case CUDNN_STATUS_EXECUTION_FAILED: {
    cudaError_t e = cudaStreamQuery(B->stream);
    if (e != cudaSuccess && e != cudaErrorNotReady) return cu_fail_cuda(B, e, what);
    break;
  }
  default: break;
  }
  return cu_fail(B, kind, "cuDNN %s: %s (%d)%s%s", what, cudnnGetErrorString(st), (int)st, last[0] ? ": " : "", last);
}

#define DNN_TRY(B, call, what)                                                                      \
  do {                                                                                              \
    cudnnStatus_t s_ = (call);                                                                      \
    if (s_ != CUDNN_STATUS_SUCCESS) return dnn_fail((B), s_, (what));                               \
  } while (0)

size_t dnn_runtime_version(void) { return cudnnGetVersion(); }
size_t dnn_build_version(void) { return CUDNN_VERSION; }

int dnn_open(cu_backend *B) {
  struct dnn_state *d = (struct dnn_state *)calloc(1, sizeof *d);
  if (!d) return cu_fail(B, CE_HOSTMEM, "out of host memory opening cuDNN");
  cudnnStatus_t st = cudnnCreate(&d->h);
  if (st != CUDNN_STATUS_SUCCESS) {
    free(d);
    return dnn_fail(B, st, "cudnnCreate");
  }
  st = cudnnSetStream(d->h, B->stream);
  if (st != CUDNN_STATUS_SUCCESS) {
    cudnnDestroy(d->h);
    free(d);
    return dnn_fail(B, st, "cudnnSetStream");
  }
  B->dnn = d;
  return CE_OK;
}

void dnn_close(cu_backend *B) {
  if (!B->dnn) return;
  cudnnDestroy(B->dnn->h);
  free(B->dnn);
  B->dnn = NULL;
}

void dnn_conv_free(struct dnn_conv *c) {
  if (!c) return;
  if (c->xd) cudnnDestroyTensorDescriptor(c->xd);
  if (c->yd) cudnnDestroyTensorDescriptor(c->yd);
  if (c->wd) cudnnDestroyFilterDescriptor(c->wd);
  if (c->cd) cudnnDestroyConvolutionDescriptor(c->cd);
  free(c);
}

static int conv_setup(cu_backend *B, struct dnn_conv *c) {
  const conv_geom_d *g = &c->g;
  cudnnDataType_t dt = g->half ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
  cudnnTensorFormat_t fmt = g->half ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  DNN_TRY(B, cudnnCreateTensorDescriptor(&c->xd), "cudnnCreateTensorDescriptor");
  DNN_TRY(B, cudnnCreateTensorDescriptor(&c->yd), "cudnnCreateTensorDescriptor");
  DNN_TRY(B, cudnnCreateFilterDescriptor(&c->wd), "cudnnCreateFilterDescriptor");
  DNN_TRY(B, cudnnCreateConvolutionDescriptor(&c->cd), "cudnnCreateConvolutionDescriptor");
  DNN_TRY(B, cudnnSetTensor4dDescriptor(c->xd, fmt, dt, g->n, g->xc, g->xh, g->xw), "input descriptor");
  DNN_TRY(B, cudnnSetTensor4dDescriptor(c->yd, fmt, dt, g->n, g->yc, g->yh, g->yw), "output descriptor");
  /* forward: filter (K = out, C = in); backward data: (K = ConvTranspose input, C = its output) */
  int K = g->transpose ? g->xc : g->yc, C = g->transpose ? g->yc : g->xc;
  DNN_TRY(B, cudnnSetFilter4dDescriptor(c->wd, dt, fmt, K, C, g->kh, g->kw), "filter descriptor");
  DNN_TRY(B,
          cudnnSetConvolution2dDescriptor(c->cd, g->pad_h, g->pad_w, g->str_h, g->str_w, g->dil_h, g->dil_w,
                                          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
          "convolution descriptor");
  c->math = g->half ? CUDNN_TENSOR_OP_MATH : g->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  DNN_TRY(B, cudnnSetConvolutionMathType(c->cd, (cudnnMathType_t)c->math), "cudnnSetConvolutionMathType");
  /* the forward convolution of the larger side must give the smaller one exactly */
  int on, oc, oh, ow;
  if (g->transpose)
    DNN_TRY(B, cudnnGetConvolution2dForwardOutputDim(c->cd, c->yd, c->wd, &on, &oc, &oh, &ow), "output size");
  else
    DNN_TRY(B, cudnnGetConvolution2dForwardOutputDim(c->cd, c->xd, c->wd, &on, &oc, &oh, &ow), "output size");
  int en = g->n, ec = g->transpose ? g->xc : g->yc, eh = g->transpose ? g->xh : g->yh, ew = g->transpose ? g->xw : g->yw;
  if (on != en || oc != ec || oh != eh || ow != ew)
    return cu_fail(B, CE_UNSUPPORTED, "cuDNN derives a %dx%dx%dx%d %s where the graph has %dx%dx%dx%d", on, oc, oh, ow,
                   g->transpose ? "ConvTranspose input" : "convolution output", en, ec, eh, ew);
  return CE_OK;
}

/* The cache key: GPU model, compute capability, cuDNN and CUDA versions, direction,
 * precision and geometry; "|tf32" when float32 may run on TF32 tensor cores, "|any" when
 * non-deterministic algorithms may be chosen. v2: choices re-timed (dnn_retime); v1's are
 * searched again. */
static void make_key(cu_backend *B, struct dnn_conv *c) {
  const conv_geom_d *g = &c->g;
  char gpu[128];
  snprintf(gpu, sizeof gpu, "%s", B->stats.device_name);
  for (char *p = gpu; *p; p++)
    if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '|') *p = '_';
  snprintf(c->key, sizeof c->key, "v2|%s|cc%d%d|cudnn%zu|rt%d|%s|%s|n%d|x%d,%d,%d|y%d,%d,%d|k%d,%d|p%d,%d|s%d,%d|d%d,%d%s%s", gpu,
           B->stats.cc_major, B->stats.cc_minor, dnn_runtime_version(), B->stats.runtime_version,
           g->wgrad ? "wgrad" : g->transpose ? "bwd" : "fwd", g->half ? "f16nhwc" : "f32nchw", g->n, g->xc, g->xh, g->xw, g->yc, g->yh,
           g->yw, g->kh, g->kw, g->pad_h, g->pad_w, g->str_h, g->str_w, g->dil_h, g->dil_w, g->tf32 ? "|tf32" : "", B->any_algo ? "|any" : "");
}

int dnn_conv_create(cu_backend *B, const conv_geom_d *g, struct dnn_conv **out) {
  *out = NULL;
  struct dnn_conv *c = (struct dnn_conv *)calloc(1, sizeof *c);
  if (!c) return cu_fail(B, CE_HOSTMEM, "out of host memory for a convolution descriptor");
  c->g = *g;
  int k = conv_setup(B, c);
  if (k) {
    dnn_conv_free(c);
    return k;
  }
  make_key(B, c);
  *out = c;
  return CE_OK;
}

static int query_ws(cu_backend *B, struct dnn_conv *c, int algo, size_t *ws) {
  cudnnStatus_t st;
  if (c->g.wgrad)
    st = cudnnGetConvolutionBackwardFilterWorkspaceSize(B->dnn->h, c->xd, c->yd, c->cd, c->wd,
                                                        (cudnnConvolutionBwdFilterAlgo_t)algo, ws);
  else if (c->g.transpose)
    st = cudnnGetConvolutionBackwardDataWorkspaceSize(B->dnn->h, c->wd, c->xd, c->cd, c->yd,
                                                      (cudnnConvolutionBwdDataAlgo_t)algo, ws);
  else
    st = cudnnGetConvolutionForwardWorkspaceSize(B->dnn->h, c->xd, c->wd, c->cd, c->yd, (cudnnConvolutionFwdAlgo_t)algo,
                                                 ws);
  return st == CUDNN_STATUS_SUCCESS ? CE_OK : CE_UNSUPPORTED;
}

/* The math type FP32 data may run with: CUDNN_FMA_MATH (no TF32), or with g.tf32 the reported
 * FMA or TF32 (CUDNN_DEFAULT_MATH); never a conversion to half. */
static int fp32_math(const conv_geom_d *g, int math) {
  return g->tf32 && math != CUDNN_FMA_MATH ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
}

/* Sets the math type the chosen algorithm runs with (fp32_math for float32 data). */
static int set_math(cu_backend *B, struct dnn_conv *c, int math) {
  c->math = c->g.half ? math : fp32_math(&c->g, math);
  DNN_TRY(B, cudnnSetConvolutionMathType(c->cd, (cudnnMathType_t)c->math), "cudnnSetConvolutionMathType");
  return CE_OK;
}

/* An algorithm cuDNN's search or heuristics offer, in their order (fastest first). */
typedef struct {
  int algo, math;
} dnn_cand;

#define DNN_RETIME 4 /* the search's fastest candidates timed again (dnn_retime) */

/* The acceptable results, in cuDNN's order: successes within ws_limit, deterministic ones only
 * unless `any` or none is; float32 data (`fp32`) never takes a result timed with a conversion to
 * half. Returns how many went to out (at most n). */
template <typename P>
static int collect(const P *perf, int n, size_t ws_limit, int any, int fp32, dnn_cand *out) {
  int k = 0;
  for (int pass = any ? 1 : 0; pass < 2 && !k; pass++)
    for (int i = 0; i < n; i++)
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= ws_limit &&
          (pass || perf[i].determinism == CUDNN_DETERMINISTIC) &&
          !(fp32 && perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
        out[k++] = {(int)perf[i].algo, (int)perf[i].mathType};
  return k;
}

/* Makes candidate `d` the convolution's algorithm (math type and workspace); CE_UNSUPPORTED when
 * cuDNN refuses it here. */
static int adopt(cu_backend *B, struct dnn_conv *c, dnn_cand d) {
  size_t need;
  CU_OK(set_math(B, c, d.math));
  if (query_ws(B, c, d.algo, &need)) return CE_UNSUPPORTED;
  c->algo = d.algo;
  c->ws = need;
  c->chosen = 1;
  return CE_OK;
}

/* Times the first DNN_RETIME candidates on the search's buffers (one warm-up, then three runs
 * between two events) and returns the index of the fastest. cuDNN's search times each algorithm
 * once: on an H100 (2026-11-24) the same TF32 training step took 0.058 s in one process and
 * 0.087 s in the next, its 256-channel forward convolution at 252 us where float32's took 190;
 * with three runs each it took 0.056-0.065 s. A candidate that fails to run is passed over; when
 * none runs, cuDNN's first. */
static int dnn_retime(cu_backend *B, struct dnn_conv *c, const dnn_cand *cand, int n, const void *x, const void *w,
                      void *y, void *ws, size_t ws_bytes) {
  if (n > DNN_RETIME) n = DNN_RETIME;
  if (n < 2) return 0;
  cudaEvent_t e0 = NULL, e1 = NULL;
  if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
    if (e0) cudaEventDestroy(e0);
    cudaGetLastError();
    return 0;
  }
  int best = 0;
  float best_ms = -1.0f;
  for (int i = 0; i < n; i++) {
    int ok = !adopt(B, c, cand[i]) && c->ws <= ws_bytes;
    for (int r = 0; r < 4 && ok; r++) {
      if (r == 1) ok = cudaEventRecord(e0, B->stream) == cudaSuccess;
      if (ok) ok = !dnn_conv_run_beta(B, c, x, w, y, ws, ws_bytes, 0.0f);
    }
    float ms = 0.0f;
    ok = ok && cudaEventRecord(e1, B->stream) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess &&
         cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess;
    if (!ok) {
      B->err.kind = CE_OK;
      cudaGetLastError();
      continue;
    }
    if (best_ms < 0.0f || ms < best_ms) {
      best = i;
      best_ms = ms;
    }
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return best;
}

int dnn_conv_choose(cu_backend *B, struct dnn_conv *c, const void *x, const void *w, void *y, void *ws,
                    size_t ws_bytes) {
  int algo, math;
  size_t cws;
  if (algo_cache_get(B->algos, c->key, &algo, &math, &cws)) {
    size_t need;
    if (!set_math(B, c, math) && !query_ws(B, c, algo, &need)) {
      c->algo = algo;
      c->ws = need;
      c->chosen = 1;
      B->stats.algo_cache_hits++;
      return CE_OK;
    }
    set_math(B, c, c->g.half ? CUDNN_TENSOR_OP_MATH : fp32_math(&c->g, CUDNN_DEFAULT_MATH));
  }
  int ret = 0, n_cand = 0, searched = !B->heuristic_only && ws;
  dnn_cand cand[CUDNN_CONVOLUTION_FWD_ALGO_COUNT + CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT +
                CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  if (c->g.wgrad) {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    if (searched) {
      DNN_TRY(B,
              cudnnFindConvolutionBackwardFilterAlgorithmEx(B->dnn->h, c->xd, x, c->yd, y, c->cd, c->wd, (void *)w,
                                                            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &ret, perf, ws,
                                                            ws_bytes),
              "cudnnFindConvolutionBackwardFilterAlgorithmEx");
      B->stats.algo_searches++;
    } else {
      DNN_TRY(B,
              cudnnGetConvolutionBackwardFilterAlgorithm_v7(B->dnn->h, c->xd, c->yd, c->cd, c->wd,
                                                            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &ret, perf),
              "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
    }
    n_cand = collect(perf, ret, ws_bytes, B->any_algo, !c->g.half, cand);
  } else if (!c->g.transpose) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    if (searched) {
      DNN_TRY(B,
              cudnnFindConvolutionForwardAlgorithmEx(B->dnn->h, c->xd, x, c->wd, w, c->cd, c->yd, y,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &ret, perf, ws, ws_bytes),
              "cudnnFindConvolutionForwardAlgorithmEx");
      B->stats.algo_searches++;
    } else {
      DNN_TRY(B,
              cudnnGetConvolutionForwardAlgorithm_v7(B->dnn->h, c->xd, c->wd, c->cd, c->yd,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &ret, perf),
              "cudnnGetConvolutionForwardAlgorithm_v7");
    }
    n_cand = collect(perf, ret, ws_bytes, B->any_algo, !c->g.half, cand);
  } else {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    if (searched) {
      DNN_TRY(B,
              cudnnFindConvolutionBackwardDataAlgorithmEx(B->dnn->h, c->wd, w, c->xd, x, c->cd, c->yd, y,
                                                          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &ret, perf, ws,
                                                          ws_bytes),
              "cudnnFindConvolutionBackwardDataAlgorithmEx");
      B->stats.algo_searches++;
    } else {
      DNN_TRY(B,
              cudnnGetConvolutionBackwardDataAlgorithm_v7(B->dnn->h, c->wd, c->xd, c->cd, c->yd,
                                                          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &ret, perf),
              "cudnnGetConvolutionBackwardDataAlgorithm_v7");
    }
    n_cand = collect(perf, ret, ws_bytes, B->any_algo, !c->g.half, cand);
  }
  if (!n_cand)
    return cu_fail(B, CE_UNSUPPORTED, "cuDNN has no %s algorithm for %s within %zu MiB of workspace",
                   c->g.wgrad ? "weight-gradient" : c->g.transpose ? "ConvTranspose (backward data)" : "convolution",
                   c->key, ws_bytes >> 20);
  int pick = searched ? dnn_retime(B, c, cand, n_cand, x, w, y, ws, ws_bytes) : 0;
  int k = adopt(B, c, cand[pick]);
  if (k == CE_UNSUPPORTED)
    return cu_fail(B, CE_UNSUPPORTED, "cuDNN rejects its own algorithm %d for %s", cand[pick].algo, c->key);
  CU_OK(k);
  if (searched && algo_cache_put(B->algos, c->key, c->algo, c->math, c->ws))
    return cu_fail(B, CE_HOSTMEM, "out of host memory in the algorithm cache");
  return CE_OK;
}

size_t dnn_conv_workspace(const struct dnn_conv *c) { return c->ws; }

const conv_geom_d *dnn_conv_geom(const struct dnn_conv *c) { return &c->g; }

const char *dnn_conv_describe(const struct dnn_conv *c) {
  static char buf[640];
  const char *geo = strchr(c->key, '|');
  for (int i = 0; geo && i < 4; i++) geo = strchr(geo + 1, '|'); /* past the GPU and versions */
  snprintf(buf, sizeof buf, "algo %d math %d ws %zu KiB %s", c->algo, c->math, c->ws >> 10, geo ? geo + 1 : c->key);
  return buf;
}

int dnn_conv_run(cu_backend *B, struct dnn_conv *c, const void *x, const void *w, void *y, void *ws, size_t ws_bytes) {
  return dnn_conv_run_beta(B, c, x, w, y, ws, ws_bytes, 0.0f);
}

int dnn_conv_run_beta(cu_backend *B, struct dnn_conv *c, const void *x, const void *w, void *y, void *ws,
                      size_t ws_bytes, float beta) {
  const float one = 1.0f;
  if (!c->chosen || ws_bytes < c->ws) return cu_fail(B, CE_INTERNAL, "convolution run without its algorithm or workspace");
  if (c->g.wgrad)
    DNN_TRY(B,
            cudnnConvolutionBackwardFilter(B->dnn->h, &one, c->xd, x, c->yd, y, c->cd,
                                           (cudnnConvolutionBwdFilterAlgo_t)c->algo, ws, ws_bytes, &beta, c->wd,
                                           (void *)w),
            "cudnnConvolutionBackwardFilter");
  else if (c->g.transpose)
    DNN_TRY(B,
            cudnnConvolutionBackwardData(B->dnn->h, &one, c->wd, w, c->xd, x, c->cd,
                                         (cudnnConvolutionBwdDataAlgo_t)c->algo, ws, ws_bytes, &beta, c->yd, y),
            "cudnnConvolutionBackwardData");
  else
    DNN_TRY(B,
            cudnnConvolutionForward(B->dnn->h, &one, c->xd, x, c->wd, w, c->cd, (cudnnConvolutionFwdAlgo_t)c->algo, ws,
                                    ws_bytes, &beta, c->yd, y),
            "cudnnConvolutionForward");
  return CE_OK;
}
