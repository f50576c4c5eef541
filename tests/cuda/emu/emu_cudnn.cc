/* tests/cuda/emu/emu_cudnn.cc: the cuDNN calls of dnn.cu, emulated: direct loops with float
 * accumulation over NCHW float (KCRS) or NHWC half (KRSC), zero padding, backward data as the
 * exact transpose, the weight gradient, alpha 1 and beta 0 or 1 (accumulate). A float
 * convolution with CUDNN_DEFAULT_MATH rounds its operands to TF32 (10 mantissa bits, to nearest,
 * ties away, as cvt.rna.tf32.f32), as a GPU's tensor cores would. It refuses what cuDNN would or
 * what betrays a bug: mismatched descriptors, a float convolution with any math but
 * CUDNN_FMA_MATH when the process asked for float32 (I2I_CUDA_TF32=0), else any but
 * CUDNN_DEFAULT_MATH or CUDNN_FMA_MATH, a short workspace, unpadded NHWC channels. During a
 * stream capture a convolution is checked at the call and recorded for the graph (emu.h). */
#include <cuda_fp16.h>
#include <cudnn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emu.h"

struct cudnnContext {
  cudaStream_t s;
};
struct cudnnTensorStruct {
  cudnnTensorFormat_t f;
  cudnnDataType_t t;
  int n, c, h, w;
};
struct cudnnFilterStruct {
  cudnnDataType_t t;
  cudnnTensorFormat_t f;
  int k, c, r, s;
};
struct cudnnConvolutionStruct {
  int ph, pw, sh, sw, dh, dw;
  cudnnConvolutionMode_t mode;
  cudnnDataType_t ct;
  cudnnMathType_t math;
};

static char g_msg[256];
static const size_t WS_ALGO1 = 4096;

static cudnnStatus_t fail(cudnnStatus_t st, const char *msg) {
  snprintf(g_msg, sizeof g_msg, "emulator: %s", msg);
  return st;
}

static float ldv(const void *p, size_t i, cudnnDataType_t t) {
  return t == CUDNN_DATA_HALF ? __half2float(((const __half *)p)[i]) : ((const float *)p)[i];
}

/* An operand as the multiply sees it: rounded to TF32 when `tf32`. */
static float ldo(const void *p, size_t i, cudnnDataType_t t, int tf32) {
  float v = ldv(p, i, t);
  if (!tf32) return v;
  uint32_t b;
  memcpy(&b, &v, sizeof b);
  if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x1000u) & 0xffffe000u;
  memcpy(&v, &b, sizeof v);
  return v;
}

/* True when the convolution's float operands are rounded to TF32. */
static int tf32_math(const cudnnTensorStruct *x, const cudnnConvolutionStruct *cd) {
  return x->t == CUDNN_DATA_FLOAT && cd->math == CUDNN_DEFAULT_MATH;
}

static void stv(void *p, size_t i, cudnnDataType_t t, float v) {
  if (t == CUDNN_DATA_HALF)
    ((__half *)p)[i] = __float2half_rn(v);
  else
    ((float *)p)[i] = v;
}

static size_t tidx(const cudnnTensorStruct *d, int n, int c, int y, int x) {
  return d->f == CUDNN_TENSOR_NHWC ? (((size_t)n * d->h + y) * d->w + x) * d->c + c
                                   : (((size_t)n * d->c + c) * d->h + y) * d->w + x;
}

static size_t fidx(const cudnnFilterStruct *d, int k, int c, int r, int s) {
  return d->f == CUDNN_TENSOR_NHWC ? (((size_t)k * d->r + r) * d->s + s) * d->c + c
                                   : (((size_t)k * d->c + c) * d->r + r) * d->s + s;
}

/* x: the forward input, y: the forward output. */
static cudnnStatus_t check(const cudnnTensorStruct *x, const cudnnFilterStruct *w, const cudnnConvolutionStruct *cd,
                           const cudnnTensorStruct *y) {
  if (x->t != w->t || x->t != y->t || x->f != w->f || x->f != y->f)
    return fail(CUDNN_STATUS_BAD_PARAM, "descriptors differ in type or layout");
  const char *tf = getenv("I2I_CUDA_TF32");
  int tf32_asked = !tf || strcmp(tf, "0");
  if (x->t == CUDNN_DATA_FLOAT && cd->math != CUDNN_FMA_MATH && !(tf32_asked && cd->math == CUDNN_DEFAULT_MATH))
    return fail(CUDNN_STATUS_NOT_SUPPORTED, tf32_asked ? "a float convolution that may convert to half"
                                                       : "a float convolution without CUDNN_FMA_MATH (TF32 could run)");
  if (cd->ct != CUDNN_DATA_FLOAT) return fail(CUDNN_STATUS_BAD_PARAM, "compute type is not float");
  if (cd->mode != CUDNN_CROSS_CORRELATION) return fail(CUDNN_STATUS_BAD_PARAM, "not cross-correlation");
  if (x->c != w->c || y->c != w->k || x->n != y->n) return fail(CUDNN_STATUS_BAD_PARAM, "channel counts differ");
  int oh = (x->h + 2 * cd->ph - cd->dh * (w->r - 1) - 1) / cd->sh + 1;
  int ow = (x->w + 2 * cd->pw - cd->dw * (w->s - 1) - 1) / cd->sw + 1;
  if (oh != y->h || ow != y->w) return fail(CUDNN_STATUS_BAD_PARAM, "output size does not follow from the input");
  return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t sticky(void) {
  return emu_launch_check() ? fail(CUDNN_STATUS_EXECUTION_FAILED_CUDART, "the CUDA context is broken")
                            : CUDNN_STATUS_SUCCESS;
}

extern "C" {

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

const char *cudnnGetErrorString(cudnnStatus_t st) {
  static char b[64];
  snprintf(b, sizeof b, "CUDNN_STATUS_%d (emulated)", (int)st);
  return b;
}

void cudnnGetLastErrorString(char *m, size_t n) {
  snprintf(m, n, "%s", g_msg);
  g_msg[0] = 0;
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
  *h = (cudnnHandle_t)calloc(1, sizeof(cudnnContext));
  return *h ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
  free(h);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
  h->s = s;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
  *d = (cudnnTensorDescriptor_t)calloc(1, sizeof(cudnnTensorStruct));
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
  free(d);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f, cudnnDataType_t t, int n,
                                         int c, int h, int w) {
  if (n < 1 || c < 1 || h < 1 || w < 1) return fail(CUDNN_STATUS_BAD_PARAM, "tensor dimension below 1");
  if (t == CUDNN_DATA_HALF && f == CUDNN_TENSOR_NHWC && c % 8)
    return fail(CUDNN_STATUS_BAD_PARAM, "NHWC half with channels not a multiple of 8 (the module pads them)");
  *d = {f, t, n, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
  *d = (cudnnFilterDescriptor_t)calloc(1, sizeof(cudnnFilterStruct));
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
  free(d);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t, cudnnTensorFormat_t f, int k,
                                         int c, int r, int s) {
  *d = {t, f, k, c, r, s};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
  *d = (cudnnConvolutionDescriptor_t)calloc(1, sizeof(cudnnConvolutionStruct));
  (*d)->math = CUDNN_DEFAULT_MATH;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
  free(d);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int ph, int pw, int sh, int sw, int dh,
                                              int dw, cudnnConvolutionMode_t mode, cudnnDataType_t ct) {
  if (ph < 0 || pw < 0 || sh < 1 || sw < 1 || dh < 1 || dw < 1) return fail(CUDNN_STATUS_BAD_PARAM, "bad geometry");
  d->ph = ph;
  d->pw = pw;
  d->sh = sh;
  d->sw = sw;
  d->dh = dh;
  d->dw = dw;
  d->mode = mode;
  d->ct = ct;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
  d->math = m;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t cd,
                                                    const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                                                    int *n, int *c, int *h, int *wo) {
  *n = x->n;
  *c = w->k;
  *h = (x->h + 2 * cd->ph - cd->dh * (w->r - 1) - 1) / cd->sh + 1;
  *wo = (x->w + 2 * cd->pw - cd->dw * (w->s - 1) - 1) / cd->sw + 1;
  return CUDNN_STATUS_SUCCESS;
}

static void perf_list(cudnnConvolutionFwdAlgoPerf_t *p, int *ret, cudnnMathType_t m) {
  memset(p, 0, 2 * sizeof *p);
  p[0] = {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_STATUS_SUCCESS, 1.0f, WS_ALGO1, CUDNN_DETERMINISTIC,
          m, {0, 0, 0}};
  p[1] = {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_STATUS_SUCCESS, 2.0f, 0, CUDNN_NON_DETERMINISTIC, m, {0, 0, 0}};
  *ret = 2;
}

static void perf_list_bwd(cudnnConvolutionBwdDataAlgoPerf_t *p, int *ret, cudnnMathType_t m) {
  memset(p, 0, 2 * sizeof *p);
  p[0] = {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_STATUS_SUCCESS, 1.0f, 0, CUDNN_NON_DETERMINISTIC, m, {0, 0, 0}};
  p[1] = {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_STATUS_SUCCESS, 2.0f, WS_ALGO1, CUDNN_DETERMINISTIC, m, {0, 0, 0}};
  *ret = 2;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                                     const cudnnFilterDescriptor_t, const cudnnConvolutionDescriptor_t cd,
                                                     const cudnnTensorDescriptor_t, const int, int *ret,
                                                     cudnnConvolutionFwdAlgoPerf_t *p) {
  perf_list(p, ret, cd->math);
  return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t fwd(const cudnnTensorStruct *xd, const void *x, const cudnnFilterStruct *wd, const void *w,
                         const cudnnConvolutionStruct *cd, const cudnnTensorStruct *yd, void *y, float beta = 0.0f) {
  cudnnStatus_t st = check(xd, wd, cd, yd);
  if (st) return st;
  st = sticky();
  if (st) return st;
  int tf = tf32_math(xd, cd);
#pragma omp parallel for schedule(static)
  for (int k = 0; k < yd->c; k++)
    for (int n = 0; n < yd->n; n++)
      for (int oy = 0; oy < yd->h; oy++)
        for (int ox = 0; ox < yd->w; ox++) {
          float acc = 0.0f;
          for (int r = 0; r < wd->r; r++) {
            int iy = oy * cd->sh - cd->ph + r * cd->dh;
            if (iy < 0 || iy >= xd->h) continue;
            for (int s = 0; s < wd->s; s++) {
              int ix = ox * cd->sw - cd->pw + s * cd->dw;
              if (ix < 0 || ix >= xd->w) continue;
              for (int c = 0; c < xd->c; c++)
                acc += ldo(x, tidx(xd, n, c, iy, ix), xd->t, tf) * ldo(w, fidx(wd, k, c, r, s), wd->t, tf);
            }
          }
          size_t o = tidx(yd, n, k, oy, ox);
          stv(y, o, yd->t, beta != 0.0f ? acc + beta * ldv(y, o, yd->t) : acc);
        }
  return CUDNN_STATUS_SUCCESS;
}

/* dx (the forward input) from dy (the forward output): the transpose of fwd. */
static cudnnStatus_t bwd(const cudnnFilterStruct *wd, const void *w, const cudnnTensorStruct *dyd, const void *dy,
                         const cudnnConvolutionStruct *cd, const cudnnTensorStruct *dxd, void *dx, float beta = 0.0f) {
  cudnnStatus_t st = check(dxd, wd, cd, dyd);
  if (st) return st;
  st = sticky();
  if (st) return st;
  size_t n_all = (size_t)dxd->n * dxd->c * dxd->h * dxd->w;
  float *acc = (float *)calloc(n_all, sizeof(float));
  if (!acc) return fail(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED, "out of memory");
  int tf = tf32_math(dxd, cd);
#pragma omp parallel for schedule(static)
  for (int c = 0; c < dxd->c; c++)
    for (int n = 0; n < dyd->n; n++)
      for (int oy = 0; oy < dyd->h; oy++)
        for (int ox = 0; ox < dyd->w; ox++)
          for (int r = 0; r < wd->r; r++) {
            int iy = oy * cd->sh - cd->ph + r * cd->dh;
            if (iy < 0 || iy >= dxd->h) continue;
            for (int s = 0; s < wd->s; s++) {
              int ix = ox * cd->sw - cd->pw + s * cd->dw;
              if (ix < 0 || ix >= dxd->w) continue;
              float a = 0.0f;
              for (int k = 0; k < dyd->c; k++)
                a += ldo(dy, tidx(dyd, n, k, oy, ox), dyd->t, tf) * ldo(w, fidx(wd, k, c, r, s), wd->t, tf);
              acc[(((size_t)n * dxd->c + c) * dxd->h + iy) * dxd->w + ix] += a;
            }
          }
  for (int n = 0; n < dxd->n; n++)
    for (int c = 0; c < dxd->c; c++)
      for (int y = 0; y < dxd->h; y++)
        for (int x = 0; x < dxd->w; x++) {
          size_t o = tidx(dxd, n, c, y, x);
          float a = acc[(((size_t)n * dxd->c + c) * dxd->h + y) * dxd->w + x];
          stv(dx, o, dxd->t, beta != 0.0f ? a + beta * ldv(dx, o, dxd->t) : a);
        }
  free(acc);
  return CUDNN_STATUS_SUCCESS;
}

/* dw (+)= the correlation of x with dy: the weight gradient of fwd. */
static cudnnStatus_t wgrad(const cudnnTensorStruct *xd, const void *x, const cudnnTensorStruct *dyd, const void *dy,
                           const cudnnConvolutionStruct *cd, const cudnnFilterStruct *wd, void *dw, float beta) {
  cudnnStatus_t st = check(xd, wd, cd, dyd);
  if (st) return st;
  st = sticky();
  if (st) return st;
  int tf = tf32_math(xd, cd);
#pragma omp parallel for schedule(static)
  for (int k = 0; k < wd->k; k++)
    for (int c = 0; c < wd->c; c++)
      for (int r = 0; r < wd->r; r++)
        for (int q = 0; q < wd->s; q++) {
          float acc = 0.0f;
          for (int n = 0; n < dyd->n; n++)
            for (int oy = 0; oy < dyd->h; oy++) {
              int iy = oy * cd->sh - cd->ph + r * cd->dh;
              if (iy < 0 || iy >= xd->h) continue;
              for (int ox = 0; ox < dyd->w; ox++) {
                int ix = ox * cd->sw - cd->pw + q * cd->dw;
                if (ix < 0 || ix >= xd->w) continue;
                acc += ldo(x, tidx(xd, n, c, iy, ix), xd->t, tf) * ldo(dy, tidx(dyd, n, k, oy, ox), dyd->t, tf);
              }
            }
          size_t o = fidx(wd, k, c, r, q);
          stv(dw, o, wd->t, beta != 0.0f ? acc + beta * ldv(dw, o, wd->t) : acc);
        }
  return CUDNN_STATUS_SUCCESS;
}

/* A recorded convolution's error for the graph launch that runs it. */
static cudaError_t dnn_err(cudnnStatus_t st) {
  return st == CUDNN_STATUS_SUCCESS ? cudaSuccess : emu_sticky() ? emu_sticky() : cudaErrorInvalidValue;
}

/* During a capture a convolution is checked now and recorded with copies of its descriptors
 * (cuDNN reads them at the call); `run` is the convolution over the copies xs, fs, cs, ys. */
#define DNN_DEFER(xd, wd, cd, yd, run)                                                                  \
  do {                                                                                                \
    if (emu_capturing()) {                                                                            \
      cudnnStatus_t st_ = check(xd, wd, cd, yd);                                                      \
      if (st_) return st_;                                                                            \
      cudnnTensorStruct xs = *(xd), ys = *(yd);                                                       \
      cudnnFilterStruct fs = *(wd);                                                                   \
      cudnnConvolutionStruct cs = *(cd);                                                              \
      return emu_record([=]() { return dnn_err(run); }) ? CUDNN_STATUS_EXECUTION_FAILED : CUDNN_STATUS_SUCCESS; \
    }                                                                                                 \
  } while (0)

/* alpha must be 1 and beta 0 or 1 (what dnn.cu passes). */
static cudnnStatus_t scalars(const void *alpha, const void *beta, float *b) {
  *b = *(const float *)beta;
  if (*(const float *)alpha != 1.0f || (*b != 0.0f && *b != 1.0f)) return fail(CUDNN_STATUS_BAD_PARAM, "alpha/beta");
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(cudnnHandle_t, const cudnnTensorDescriptor_t xd, const void *x,
                                                     const cudnnFilterDescriptor_t wd, const void *w,
                                                     const cudnnConvolutionDescriptor_t cd,
                                                     const cudnnTensorDescriptor_t yd, void *y, const int, int *ret,
                                                     cudnnConvolutionFwdAlgoPerf_t *p, void *, size_t) {
  cudnnStatus_t st = fwd(xd, x, wd, w, cd, yd, y); /* searches write y, as cuDNN's do */
  if (st) return st;
  perf_list(p, ret, cd->math);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                                      const cudnnFilterDescriptor_t, const cudnnConvolutionDescriptor_t,
                                                      const cudnnTensorDescriptor_t, cudnnConvolutionFwdAlgo_t a,
                                                      size_t *ws) {
  if (a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM) *ws = WS_ALGO1;
  else if (a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM) *ws = 0;
  else return fail(CUDNN_STATUS_NOT_SUPPORTED, "algorithm not emulated");
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t, const void *alpha, const cudnnTensorDescriptor_t xd, const void *x,
                                      const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cd, cudnnConvolutionFwdAlgo_t a, void *ws,
                                      size_t wsb, const void *beta, const cudnnTensorDescriptor_t yd, void *y) {
  float b;
  if (scalars(alpha, beta, &b)) return CUDNN_STATUS_BAD_PARAM;
  size_t need = a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ? WS_ALGO1 : 0;
  if (wsb < need || (need && !ws)) return fail(CUDNN_STATUS_BAD_PARAM, "workspace too small");
  DNN_DEFER(xd, wd, cd, yd, fwd(&xs, x, &fs, w, &cs, &ys, y, b));
  return fwd(xd, x, wd, w, cd, yd, y, b);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t, const cudnnFilterDescriptor_t,
                                                          const cudnnTensorDescriptor_t,
                                                          const cudnnConvolutionDescriptor_t cd,
                                                          const cudnnTensorDescriptor_t, const int, int *ret,
                                                          cudnnConvolutionBwdDataAlgoPerf_t *p) {
  perf_list_bwd(p, ret, cd->math);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(cudnnHandle_t, const cudnnFilterDescriptor_t wd,
                                                          const void *w, const cudnnTensorDescriptor_t dyd,
                                                          const void *dy, const cudnnConvolutionDescriptor_t cd,
                                                          const cudnnTensorDescriptor_t dxd, void *dx, const int,
                                                          int *ret, cudnnConvolutionBwdDataAlgoPerf_t *p, void *,
                                                          size_t) {
  cudnnStatus_t st = bwd(wd, w, dyd, dy, cd, dxd, dx);
  if (st) return st;
  perf_list_bwd(p, ret, cd->math);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t, const cudnnFilterDescriptor_t,
                                                           const cudnnTensorDescriptor_t,
                                                           const cudnnConvolutionDescriptor_t,
                                                           const cudnnTensorDescriptor_t,
                                                           cudnnConvolutionBwdDataAlgo_t a, size_t *ws) {
  if (a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1) *ws = WS_ALGO1;
  else if (a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0) *ws = 0;
  else return fail(CUDNN_STATUS_NOT_SUPPORTED, "algorithm not emulated");
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t, const void *alpha, const cudnnFilterDescriptor_t wd,
                                           const void *w, const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdDataAlgo_t a,
                                           void *ws, size_t wsb, const void *beta, const cudnnTensorDescriptor_t dxd,
                                           void *dx) {
  float b;
  if (scalars(alpha, beta, &b)) return CUDNN_STATUS_BAD_PARAM;
  size_t need = a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 ? WS_ALGO1 : 0;
  if (wsb < need || (need && !ws)) return fail(CUDNN_STATUS_BAD_PARAM, "workspace too small");
  DNN_DEFER(dxd, wd, cd, dyd, bwd(&fs, w, &ys, dy, &cs, &xs, dx, b));
  return bwd(wd, w, dyd, dy, cd, dxd, dx, b);
}
static void perf_list_wgrad(cudnnConvolutionBwdFilterAlgoPerf_t *p, int *ret, cudnnMathType_t m) {
  memset(p, 0, 2 * sizeof *p);
  p[0] = {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_STATUS_SUCCESS, 1.0f, 0, CUDNN_NON_DETERMINISTIC, m, {0, 0, 0}};
  p[1] = {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_STATUS_SUCCESS, 2.0f, WS_ALGO1, CUDNN_DETERMINISTIC, m, {0, 0, 0}};
  *ret = 2;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                                            const cudnnTensorDescriptor_t,
                                                            const cudnnConvolutionDescriptor_t cd,
                                                            const cudnnFilterDescriptor_t, const int, int *ret,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t *p) {
  perf_list_wgrad(p, ret, cd->math);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnnHandle_t, const cudnnTensorDescriptor_t xd,
                                                            const void *x, const cudnnTensorDescriptor_t dyd,
                                                            const void *dy, const cudnnConvolutionDescriptor_t cd,
                                                            const cudnnFilterDescriptor_t wd, void *dw, const int,
                                                            int *ret, cudnnConvolutionBwdFilterAlgoPerf_t *p, void *,
                                                            size_t) {
  cudnnStatus_t st = wgrad(xd, x, dyd, dy, cd, wd, dw, 0.0f); /* searches write dw, as cuDNN's do */
  if (st) return st;
  perf_list_wgrad(p, ret, cd->math);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t, const cudnnTensorDescriptor_t,
                                                             const cudnnTensorDescriptor_t,
                                                             const cudnnConvolutionDescriptor_t,
                                                             const cudnnFilterDescriptor_t,
                                                             cudnnConvolutionBwdFilterAlgo_t a, size_t *ws) {
  if (a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1) *ws = WS_ALGO1;
  else if (a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0) *ws = 0;
  else return fail(CUDNN_STATUS_NOT_SUPPORTED, "algorithm not emulated");
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t, const void *alpha, const cudnnTensorDescriptor_t xd,
                                             const void *x, const cudnnTensorDescriptor_t dyd, const void *dy,
                                             const cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdFilterAlgo_t a,
                                             void *ws, size_t wsb, const void *beta, const cudnnFilterDescriptor_t wd,
                                             void *dw) {
  float b;
  if (scalars(alpha, beta, &b)) return CUDNN_STATUS_BAD_PARAM;
  size_t need = a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ? WS_ALGO1 : 0;
  if (wsb < need || (need && !ws)) return fail(CUDNN_STATUS_BAD_PARAM, "workspace too small");
  DNN_DEFER(xd, wd, cd, dyd, wgrad(&xs, x, &ys, dy, &cs, &fs, dw, b));
  return wgrad(xd, x, dyd, dy, cd, wd, dw, b);
}
}
