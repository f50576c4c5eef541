/* cuda/cuda_priv.h: declarations shared by the CUDA module's files (host side): the backend
 * state, the error record every CUDA and cuDNN status becomes, the device tensor view (kview)
 * and the interfaces of kernels.cu, dnn.cu (the only file calling cuDNN), plan.cu and the
 * algorithm cache. libi2i never sees it: it knows cuda_api.h only. */
#ifndef I2I_CUDA_PRIV_H
#define I2I_CUDA_PRIV_H

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "cuda_api.h"
#include "algo_cache.h"
}

/* ---- errors -------------------------------------------------------------------------------- */

/* Kinds of failure. CE_OOM is non-sticky (free caches, retry once); CE_STICKY means the CUDA
 * context is corrupt and the backend is dead for its i2i context; CE_DEVICE is any other
 * non-sticky device or cuDNN failure; CE_UNSUPPORTED is a graph feature the GPU path lacks. */
enum { CE_OK = 0, CE_OOM, CE_STICKY, CE_DEVICE, CE_UNSUPPORTED, CE_HOSTMEM, CE_INTERNAL, CE_CANCELLED, CE_BUDGET };
/* CE_BUDGET: a whole-image plan would exceed the run's device budget (I2I_E_DEVICE_NOMEM, no
 * retry: run.c goes layer-wise). */

typedef struct {
  int kind;
  char msg[480];
} cu_err;

/* ---- backend ------------------------------------------------------------------------------- */

enum { FAULT_NONE = 0, FAULT_OOM, FAULT_OOM_ONCE, FAULT_STICKY };

struct cu_weights;
struct cplan;
struct dnn_state;

#define CU_MAX_MODELS 2
#define CU_MAX_PLANS 4

typedef struct cu_backend {
  const i2i_cuda_host *host;
  int device;
  cudaStream_t stream;
  struct dnn_state *dnn;
  int precision;
  int dead;
  char dead_why[480];
  cu_err err;
  int fault;              /* I2I_CUDA_FAULT fault injection */
  int fault_armed;        /* the injected fault fires at the next chance */
  int use_graphs;         /* I2I_CUDA_GRAPH=1: replay whole runs as CUDA graphs */
  int train_graphs;       /* training passes replay as CUDA graphs (the default; I2I_CUDA_GRAPH=0: not) */
  int heuristic_only;     /* I2I_CUDA_ALGO=heuristic: no timed algorithm search */
  int any_algo;           /* I2I_CUDA_DETERMINISTIC=0: the fastest algorithm, deterministic or not (a
                           * measurement switch: runs are then no longer bit-identical) */
  int profile;            /* I2I_PROFILE set: the bench hook logs a per-step profile */
  int use_thin;           /* I2I_CUDA_THIN=0: cuDNN for the thin convolutions too (thin_conv.cu) */
  int train_tf32;         /* training's convolutions may use TF32 tensor cores, as PyTorch's do by
                           * default; I2I_CUDA_TF32=0: float32 FMA only, the CPU trainer's precision */
  size_t search_ws_limit; /* workspace cap during algorithm searches */
  struct cu_weights *weights[CU_MAX_MODELS];
  struct cplan *plans[CU_MAX_PLANS];
  uint64_t clock;         /* LRU clock */
  algo_cache *algos;
  i2i_cuda_stats stats;
  int max_grid;           /* blocks for grid-stride kernels */
  uint64_t run_budget;    /* the current run's device budget in bytes (0: none given) */
  size_t ws_cap;          /* with run_budget: the workspace a plan being built may still take */
} cu_backend;

/* Records a CUDA error (kind from the code: out of memory, sticky, other) with the call's text
 * and returns the kind. cudaSuccess is not an error (returns CE_OK). */
int cu_fail_cuda(cu_backend *B, cudaError_t e, const char *what);
/* Records an error of `kind` with a printf message; returns kind. */
int cu_fail(cu_backend *B, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Starts an operation: refuses a dead backend (the first reason), selects the device and clears
 * the error record. I2I_OK, or the status with the message set on ctx. */
i2i_status cu_begin(cu_backend *B, i2i_ctx *ctx);
/* After an operation that returned `kind`: a failure is checked for a sticky fault (which marks
 * the backend dead), the stream is drained, and the kind becomes the engine's status with the
 * message set on ctx. CE_OK gives I2I_OK. */
i2i_status cu_finish(cu_backend *B, i2i_ctx *ctx, int kind);
/* Frees the cached inference plans and device weights. */
void cu_free_caches(cu_backend *B);
/* The training backend on B (train.cu); the ext table's train_open. */
i2i_status cu_train_open(void *self, i2i_ctx *ctx, const i2i_train_backend_ops **ops, void **tself);

/* Checked device allocation (counts bytes; fault injection applies; with a run budget set,
 * passing it is CE_BUDGET). *p is NULL on failure. */
int cu_malloc(cu_backend *B, void **p, size_t bytes, const char *what);
/* Frees what cu_malloc returned (bytes: the size it was given; NULL is accepted). */
void cu_free(cu_backend *B, void *p, size_t bytes);

#define CU_TRY(B, call, what)                                                                       \
  do {                                                                                              \
    cudaError_t e_ = (call);                                                                        \
    if (e_ != cudaSuccess) return cu_fail_cuda((B), e_, (what));                                    \
  } while (0)

#define CU_OK(expr)                                                                                 \
  do {                                                                                              \
    int k_ = (expr);                                                                                \
    if (k_) return k_;                                                                              \
  } while (0)

/* ---- device tensor views (kernels.cu) --------------------------------------------------------- */

/* Where one tensor lives on the device: logical N x C x H x W, stored with `cs` channels
 * (padding channels are kept at zero) and a halo of pt/pl (top/left) rows/columns inside a
 * stored plane of hs x ws. Element type: float (half == 0) or __half. */
typedef struct {
  void *p;
  int n, c, h, w;
  int cs;
  int pt, pl;
  int hs, ws;
  int nhwc;
  int half;
} kview;

__host__ __device__ static inline int64_t kv_index(const kview &v, int n, int c, int y, int x) {
  return v.nhwc ? ((((int64_t)n * v.hs + (y + v.pt)) * v.ws + (x + v.pl)) * v.cs + c)
                : ((((int64_t)n * v.cs + c) * v.hs + (y + v.pt)) * v.ws + (x + v.pl));
}

/* Bytes of the whole stored tensor. */
static inline size_t kv_bytes(const kview &v) {
  return (size_t)v.n * (size_t)v.cs * (size_t)v.hs * (size_t)v.ws * (v.half ? 2u : 4u);
}

/* numpy.pad index of position i of a side of n (cpu map_index): -1 for a zero (constant) pad. */
__host__ __device__ static inline int kv_map(int i, int n, int mode) {
  if (i >= 0 && i < n) return i;
  if (mode == PAD_CONSTANT) return -1;
  if (mode == PAD_EDGE || n == 1) return i < 0 ? 0 : n - 1;
  int period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i >= n ? period - i : i;
}

/* Kernel launchers. Each enqueues on `s` and returns cudaGetLastError(). Every kernel writes the
 * padding channels of its output as zeros. */
/* Caps the blocks of grid-stride launches (set at open from the SM count). */
void k_set_grid_cap(int max_blocks);
/* Fills the halo of `v` (pr: its right extent; the others are in the view) from its interior
 * (reflect / edge) or with zeros (PAD_CONSTANT). */
cudaError_t k_fill_halo(cudaStream_t s, const kview &v, int pr, int mode);
/* dst (packed, dst.h = src.h + pt + pb...) = src padded by pt/pl at the top/left. */
cudaError_t k_pad(cudaStream_t s, const kview &src, const kview &dst, int pt, int pl, int mode, float value);
/* Blocks per (image, channel) for the statistics of `x`; the partial buffer holds
 * x.n * x.cs * nblk float2 entries. */
int k_stats_blocks(const kview &x, int sm_count);
/* Partial sums of x per (image, channel) into part (kernel_bodies.h: kb_stats_chunk). */
cudaError_t k_norm_stats(cudaStream_t s, const kview &x, float2 *part, int nblk);
/* ab[n * cs + c] = (a, b) so that y = x * a + b; from the partial sums (mean == NULL) or from
 * running statistics. fold: a conv bias already left out of x (eval statistics), or NULL. */
cudaError_t k_norm_finalize(cudaStream_t s, const kview &x, const float2 *part, int nblk, const float *scale,
                            const float *bias, const float *mean, const float *var, const float *fold, float eps,
                            float2 *ab);
/* y = act2(act1(x * a + b) + r) (r optional: has_r == 0). y may be x or r. */
cudaError_t k_norm_apply(cudaStream_t s, const kview &x, const kview &y, const float2 *ab, int act1, float alpha1,
                         const kview &r, int has_r, int act2, float alpha2);
/* y = act(x); y = act(a + b); y may be an input. */
cudaError_t k_act(cudaStream_t s, const kview &x, const kview &y, int act, float alpha);
cudaError_t k_add(cudaStream_t s, const kview &a, const kview &b, const kview &y, int act, float alpha);
/* y = tanh(x + bias[c]) (bias may be NULL). */
cudaError_t k_tanh(cudaStream_t s, const kview &x, const kview &y, const float *bias);
/* y = x + bias[c]. */
cudaError_t k_bias(cudaStream_t s, const kview &x, const kview &y, const float *bias);
/* y = x * scale where the engine's Philox mask keeps the element (rng.c), else 0. */
cudaError_t k_dropout(cudaStream_t s, const kview &x, const kview &y, uint64_t seed, uint32_t ordinal, uint64_t step,
                      uint32_t threshold, float scale);
/* dst channels [coff, coff + src.c) = act(src) (a Concat that feeds only an activation takes it:
 * plan.c); with zero_tail the channels from coff + src.c up to dst.cs are zeroed too. */
cudaError_t k_concat(cudaStream_t s, const kview &src, const kview &dst, int coff, int zero_tail, int act,
                     float alpha);
/* Packed NCHW float32 (src) into the view / the view into packed NCHW float32 (logical C). */
cudaError_t k_upload(cudaStream_t s, const float *src, const kview &dst);
cudaError_t k_download(cudaStream_t s, const kview &src, float *dst);
/* One caller image (interleaved, ch 4 = RGBA [0,1], 3 = RGB [-1,1]) into image n of dst,
 * reflect-padded at the bottom and right as run.c does. */
cudaError_t k_image_in(cudaStream_t s, const float *img, int width, int height, int ch, const kview &dst, int n);
/* Image n of src (the model's [-1,1] output) cropped to width x height, mapped, blended with
 * `in` by strength, alpha copied: run.c's output path. */
cudaError_t k_image_out(cudaStream_t s, const kview &src, int n, const float *in, float *out, int width, int height,
                        int ch, float strength);
/* fp32 [d0][d1][R][S] -> half [K][R][S][C] (KRSC), K >= d0 and C >= d1 zero padded. */
cudaError_t k_filter_krsc(cudaStream_t s, const float *w, __half *o, int d0, int d1, int R, int S, int K, int C);
/* A kernel whose attributes tell whether this build has code for the device. */
cudaError_t k_probe_image(void);
/* Launches a kernel that writes through a wild pointer and waits for it: a real sticky fault
 * (I2I_CUDA_FAULT=sticky). Returns the error it raised. */
cudaError_t k_fault(cudaStream_t s);

/* ---- training kernels (train_kernels.cu; bodies in train_bodies.h) ------------------------------
 * Plain NCHW float32, packed. `acc` nonzero adds into the destination. Each enqueues on `s` and
 * returns cudaGetLastError(). The reductions sum in double in a fixed order per launch shape, so
 * a run repeats bit for bit on the same GPU. */
cudaError_t kt_fill(cudaStream_t s, float *p, float v, int64_t n);
/* p[i] = kbt_noise(i): fixed pseudo-random values in [-1, 1) (algorithm search buffers). */
cudaError_t kt_fill_noise(cudaStream_t s, float *p, int64_t n);
/* dst (+)= src */
cudaError_t kt_grad(cudaStream_t s, const float *src, float *dst, int64_t n, int acc);
/* dst[i][dst_c0 + k] (+)= src[i][src_c0 + k], k < nc, images i < n of hw pixels */
cudaError_t kt_copy_channels(cudaStream_t s, float *dst, int dst_c, int dst_c0, const float *src, int src_c, int src_c0,
                             int nc, int n, int64_t hw, int acc);
enum { KT_RELU = 0, KT_LRELU = 1, KT_TANH = 2 };
/* dx (+)= dy * act'(from the output y); kind KT_RELU, KT_LRELU (alpha) or KT_TANH */
cudaError_t kt_act_backward(cudaStream_t s, const float *y, const float *dy, float *dx, int64_t n, int kind,
                            float alpha, int acc);
/* key[0] = seed, key[1] = step on the device, in stream order: the dropout key of the passes
 * enqueued after it (read on the device, so a pass replayed as a CUDA graph sees each step's) */
cudaError_t kt_set_key(cudaStream_t s, uint64_t *key, uint64_t seed, uint64_t step);
/* dst (+)= src * scale where the dropout mask of (key[0] seed, ordinal, key[1] step) keeps the
 * element (n, c, h, w); `key` is device memory (kt_set_key) */
cudaError_t kt_dropout(cudaStream_t s, const float *src, float *dst, int n, int c, int h, int w, const uint64_t *key,
                       uint32_t ordinal, uint32_t threshold, float scale, int acc);
/* y (n, c, h + pt + pb, w + pl + pr) = x (n, c, h, w) padded (mode; value outside a constant
 * pad): k_pad's result for plain float32 NCHW, with 32-bit index arithmetic where it fits. */
cudaError_t kt_pad(cudaStream_t s, const float *x, float *y, int n, int c, int h, int w, int pt, int pl, int pb, int pr,
                   int mode, float value);
/* y (n, c, hw) += bias per channel (k_bias's result for plain float32 NCHW, 32-bit indices). */
cudaError_t kt_bias(cudaStream_t s, float *y, const float *bias, int n, int c, int64_t hw);
/* dx (n, c, h, w) (+)= the Pad's backward of dp (n, c, h + pt + pb, w + pl + pr) */
cudaError_t kt_pad_backward(cudaStream_t s, const float *dp, float *dx, int n, int c, int h, int w, int pt, int pl,
                            int pb, int pr, int mode, int acc);
/* Training normalisation forward (cpu_norm_train_forward): mean and rstd per group (double
 * sums), running statistics updated when run_mean is not NULL, then y = act(x a + b). */
cudaError_t kt_norm_forward(cudaStream_t s, const float *x, float *y, int n, int c, int64_t hw, int batch,
                            const float *scale, const float *bias, float eps, int act, float alpha, float *mean,
                            float *rstd, float *run_mean, float *run_var, float momentum);
/* Its backward (cpu_norm_backward): dscale / dbias added to (NULL: not wanted), dx written or
 * added (NULL: not wanted). k: 5 * groups floats of device scratch. */
cudaError_t kt_norm_backward(cudaStream_t s, const float *x, const float *dy, float *dx, int acc, int n, int c,
                             int64_t hw, int batch, const float *scale, const float *bias, const float *mean,
                             const float *rstd, int act, float alpha, float *dscale, float *dbias, float *k);
/* out[ch] += the sum of dy over images and pixels (a convolution bias's gradient) */
cudaError_t kt_channel_sum(cudaStream_t s, const float *dy, int n, int c, int64_t hw, float *out);
/* Partial sums of a mean loss (kbt_loss) into part[0 .. KT_LOSS_BLOCKS); grad (+)= its gradient
 * times weight / n when grad is not NULL. */
#define KT_LOSS_BLOCKS 64
cudaError_t kt_loss(cudaStream_t s, int kind, const float *x, const float *t, float label, int64_t n, float weight,
                    float *grad, int acc, double *part);
/* Adam on n parameters (kbt_adam) */
cudaError_t kt_adam(cudaStream_t s, float *p, const float *g, float *m, float *v, int64_t n, float step, float bc2s,
                    float b1, float b2, float a1, float a2, float eps);
/* *flag = 1 if any of the n floats is not finite (flag zeroed by the caller) */
cudaError_t kt_finite(cudaStream_t s, const float *x, int64_t n, int *flag);

/* ---- cuDNN (dnn.cu, the only file that calls cuDNN) ----------------------------------------- */

/* One convolution in cuDNN terms. Forward: x (n, xc, xh, xw) -> y (n, yc, yh, yw) with filter
 * (K = yc, C = xc, kh, kw). Transposed (backward data): the ConvTranspose input is dy
 * (n, xc, xh, xw), its output dx (n, yc, yh, yw), the filter (K = xc, C = yc, kh, kw) as ONNX
 * stores it. Weight gradient (wgrad, transpose 0): the forward's geometry; the run takes the
 * input x, the output's gradient dy and writes the filter's gradient. Channel counts are the
 * stored (padded) ones. */
typedef struct {
  int transpose;
  int wgrad;
  int half;
  int tf32; /* float32 data that may run on TF32 tensor cores (training, unless I2I_CUDA_TF32=0) */
  int n, xc, xh, xw;
  int yc, yh, yw;
  int kh, kw;
  int pad_h, pad_w, str_h, str_w, dil_h, dil_w;
} conv_geom_d;

/* thin_conv.cu's kernels (thin_bodies.h): warps per block; output rows per warp of thin_out8 and
 * of thin_in8 (whose 16 accumulators per row and output group need the room). */
#define THIN_WARPS 4
#define OUT8_ROWS 8
#define IN8_ROWS 4

/* Which kernel computes a thin geometry and its launch shape (shared by thin_conv.cu's launcher
 * and the host emulation). kind 0: none (not thin), 1: thin_out8, 2: thin_in8. */
typedef struct {
  int kind;
  unsigned gx, gy, gz;
} thin_shape;

static inline thin_shape thin_shape_of(int n, int xc, int yc, int kh, int kw, int yh, int yw) {
  thin_shape sh = {0, 0, 0, 0};
  if (n < 1 || yh < 1 || yw < 1 || kh != kw || (kh != 1 && kh != 3 && kh != 5 && kh != 7)) return sh;
  int strips = (yw + THIN_WARPS * 16 - 1) / (THIN_WARPS * 16);
  if (yc == 8 && xc % 16 == 0 && n <= 65535) {
    sh.kind = 1;
    sh.gy = (unsigned)((yh + OUT8_ROWS - 1) / OUT8_ROWS);
    sh.gz = (unsigned)n;
  } else if (xc == 8 && yc % 32 == 0 && yc <= 1024 && (int64_t)n * (yc / 32) <= 65535) {
    sh.kind = 2;
    sh.gy = (unsigned)((yh + IN8_ROWS - 1) / IN8_ROWS);
    sh.gz = (unsigned)(n * (yc / 32));
  } else {
    return sh;
  }
  sh.gx = (unsigned)strips;
  if (sh.gy > 65535) sh.kind = 0;
  return sh;
}

/* True when k_conv_thin computes this convolution (thin_conv.cu): fp16 forward, stride 1, no
 * padding or dilation (the input is the stored plane with its halo), compute capability 8.0 or
 * newer (mma.sync), a 1x1, 3x3, 5x5 or 7x7 filter, and 8 stored outputs from a multiple of 16
 * stored inputs or a multiple of 32 (at most 1024) from 8. */
static inline int k_conv_thin_fits(const conv_geom_d &g, int cc_major) {
  if (!g.half || g.transpose || g.wgrad || cc_major < 8) return 0;
  if (g.str_h != 1 || g.str_w != 1 || g.dil_h != 1 || g.dil_w != 1 || g.pad_h || g.pad_w) return 0;
  if (g.xh != g.yh + g.kh - 1 || g.xw != g.yw + g.kw - 1) return 0;
  return thin_shape_of(g.n, g.xc, g.yc, g.kh, g.kw, g.yh, g.yw).kind != 0;
}
/* The convolution of a k_conv_thin_fits geometry: x NHWC (n, xh, xw, xc), w KRSC (yc, kh, kw,
 * xc), y packed NHWC (n, yh, yw, yc), all half; float accumulation. Enqueues on `s`. */
cudaError_t k_conv_thin(cudaStream_t s, const conv_geom_d &g, const __half *x, const __half *w, __half *y);

struct dnn_conv;

/* Creates the cuDNN handle on B->stream; CE_* with the reason in B->err. */
int dnn_open(cu_backend *B);
/* Destroys the handle (B->dnn becomes NULL). */
void dnn_close(cu_backend *B);
/* The cuDNN library version (runtime) and the one the module was built with. */
size_t dnn_runtime_version(void);
size_t dnn_build_version(void);
/* Descriptors for one convolution; checks that cuDNN derives the graph's sizes. */
int dnn_conv_create(cu_backend *B, const conv_geom_d *g, struct dnn_conv **out);
/* Picks the algorithm: from the on-disk cache, else a timed search on these buffers (ws of
 * ws_bytes is scratch for the search), else heuristics. Counts searches and cache hits. */
int dnn_conv_choose(cu_backend *B, struct dnn_conv *c, const void *x, const void *w, void *y, void *ws,
                    size_t ws_bytes);
/* The chosen algorithm's workspace bytes. */
size_t dnn_conv_workspace(const struct dnn_conv *c);
/* Runs the convolution on B->stream (x: input, y: output, for both directions). */
int dnn_conv_run(cu_backend *B, struct dnn_conv *c, const void *x, const void *w, void *y, void *ws, size_t ws_bytes);
/* The same with y = conv + beta * y (beta 1 accumulates). A wgrad convolution reads x and the
 * gradient y and writes the filter gradient through w. */
int dnn_conv_run_beta(cu_backend *B, struct dnn_conv *c, const void *x, const void *w, void *y, void *ws,
                      size_t ws_bytes, float beta);
/* The geometry the convolution was created with. */
const conv_geom_d *dnn_conv_geom(const struct dnn_conv *c);
/* "algo A math M ws B KEY-GEOMETRY" of a chosen convolution, for profiles; a static buffer. */
const char *dnn_conv_describe(const struct dnn_conv *c);
/* NULL is accepted. */
void dnn_conv_free(struct dnn_conv *c);

/* ---- plans (plan.cu) ------------------------------------------------------------------------- */

/* The device copy of one model's weights (fp32 flat buffer; fp16 KRSC filters on demand). */
typedef struct cu_weights {
  uint64_t serial;
  float *w32;
  size_t w32_bytes;
  __half **w16;          /* per value index: the KRSC half filter, or NULL */
  int n_values;
  void *w16_block;
  size_t w16_bytes;
  uint64_t last_use;
} cu_weights;

struct cplan;

/* Builds the device plan of engine steps [first, last) of `plan` for the backend's precision
 * and `mode`; download_all: every produced value goes back to the host arena (testing). */
int cplan_build(cu_backend *B, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, cu_weights *W, int mode,
                int first, int last, int download_all, struct cplan **out);
/* Frees the plan's device memory and descriptors (NULL is accepted). */
void cplan_free(cu_backend *B, struct cplan *cp);
/* True when a cached plan serves this model, engine plan shape, precision and mode. */
int cplan_matches(const struct cplan *cp, const i2i_model *m, const i2i_plan *plan, int precision, int mode);
/* LRU bookkeeping of the backend's plan cache. */
void cplan_touch(struct cplan *cp, uint64_t clock);
uint64_t cplan_last_use(const struct cplan *cp);
/* Device bytes the plan holds (activations, parameters, workspace, transfer buffer). */
size_t cplan_device_bytes(const struct cplan *cp);
/* Uploads the external inputs from the host arena (st->arena + plan->offset of this run's
 * engine plan, which must have the cplan's shape). */
int cplan_upload(cu_backend *B, struct cplan *cp, const i2i_plan *plan, const i2i_run_state *st);
/* Uploads the caller's images into the plan's input value. */
int cplan_upload_images(cu_backend *B, struct cplan *cp, const i2i_cuda_images *im);
/* Enqueues every step (or replays the captured graph). progress: report through the host (and
 * stop on cancel) at most every 10% of the FLOPs, synchronising the stream for it. */
int cplan_run(cu_backend *B, i2i_ctx *ctx, struct cplan *cp, i2i_run_state *st, int progress, int graph);
/* Runs the plan once eagerly with an event between steps and logs each step's milliseconds,
 * TFLOP/s and convolution algorithm, then the time per step kind (I2I_PROFILE, bench hook). */
int cplan_profile(cu_backend *B, i2i_ctx *ctx, struct cplan *cp, i2i_run_state *st);
/* Downloads the values marked for download into the host arena. */
int cplan_download(cu_backend *B, struct cplan *cp, const i2i_plan *plan, i2i_run_state *st);
int cplan_download_images(cu_backend *B, struct cplan *cp, const i2i_cuda_images *im);

/* Device weights of model m (cached per serial); builds the fp16 filters when `half`. */
int weights_get(cu_backend *B, const i2i_model *m, int half, cu_weights **out);
/* Frees one model's device weights (NULL is accepted). */
void weights_free(cu_backend *B, cu_weights *W);
/* The float offset of constant value v (at least min_numel floats) in the model's weight
 * buffer, which is also its offset in cu_weights.w32. */
int weight_offset(cu_backend *B, const i2i_model *m, int v, size_t min_numel, size_t *off);

/* ---- layer-wise runs (banded.cu) -------------------------------------------------------------- */

/* The ext table's conv_step (cuda_api.h). */
i2i_status cu_conv_step(void *self, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, i2i_run_state *st, int step,
                        double done, int *bands);

#endif
