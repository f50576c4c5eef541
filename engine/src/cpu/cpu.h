/* cpu.h: the CPU backend's kernels (plain C11, OpenMP threads, OpenBLAS sgemm).
 *
 * Every kernel works on one image in NCHW float32 and on buffers the plan gave it; none
 * allocates. The forward and backward of an op live side by side in one file (conv.c, norm.c,
 * pointwise.c). exec.c walks a plan's steps and calls them.
 */
#ifndef I2I_CPU_H
#define I2I_CPU_H

#include "../internal.h"

typedef struct {
  int c, h, w;          /* input */
  int m, oh, ow;        /* output */
  int kh, kw, sh, sw, dh, dw;
  int pt, pl, pb, pr;   /* input padding */
  int pad_mode;         /* PAD_CONSTANT (zeros), PAD_REFLECT, PAD_EDGE */
  int oph, opw;         /* ConvTranspose output padding */
  /* called after each chunk (tile) with the fraction of this convolution done; a nonzero return
   * stops the convolution early (the caller then reports the cancel) */
  int (*chunk_done)(void *user, double fraction);
  void *user;
} conv_geom;

/* Hot loops are compiled for AVX-512, AVX2 and plain x86-64, picked at load time (not under
 * ASan, whose instrumentation the clones do not take). */
#if defined(I2I_CLONES_AVX2) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* meson -Dcpu_clones=avx2: only what an AVX2 processor would pick (bench/cpu/avx2) */
#define HOT_CLONES __attribute__((target("avx2")))
#define FMA_CLONES __attribute__((target("avx2,fma")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define HOT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
/* The multiply-add kernel of gemm.c (built with -ffp-contract=fast) takes FMA instead of AVX2: an
 * AVX2 clone has no FMA, so its products and sums would go separately, at half the rate (every
 * AVX2 processor has FMA). */
#define FMA_CLONES __attribute__((target_clones("avx512f", "fma", "default")))
#else
#define HOT_CLONES
#define FMA_CLONES
#endif

/* The input index a padded position i reads (reflect, edge) or -1 (zero padding) for a plane
 * of n pixels; reflection folds any distance. */
static inline int map_index(int i, int n, int mode) {
  if (i >= 0 && i < n) return i;
  if (mode == PAD_CONSTANT) return -1;
  if (mode == PAD_EDGE || n == 1) return i < 0 ? 0 : n - 1;
  int period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i >= n ? period - i : i;
}

/* y[m][oh][ow] = conv(x[c][h][w] padded as g says, w[m][c][kh][kw]) + bias[m] (bias may be
 * NULL). `scratch` holds `scratch_floats` floats (at least kh*kw*c*64). */
int cpu_conv_forward(const conv_geom *g, const float *x, const float *w, const float *bias, float *y,
                     float *scratch, size_t scratch_floats, int threads);

/* ConvTranspose: y[m][oh][ow] from x[c][h][w] and w[c][m][kh][kw]; scratch at least
 * m*kh*kw*64 floats. Both return the number of chunks (tiles) the output was computed in, or -1
 * when chunk_done asked to stop. */
int cpu_convt_forward(const conv_geom *g, const float *x, const float *w, const float *bias, float *y,
                      float *scratch, size_t scratch_floats, int threads);

/* C[m][n] = op(A) B, op(A) = A (m x k, rows lda apart) or, with trans_a, A^T (A k x m): row-major,
 * rows ldb / ldc apart (gemm.c). Transposed products at most CPU_GEMM_SMALL_TN columns wide take
 * our own kernel; products up to 64 columns wide are split by rows over `threads`, one
 * single-threaded sgemm each; the rest go to OpenBLAS (its thread count, not `threads`). The
 * result does not depend on the thread count. */
#define CPU_GEMM_SMALL_TN 16
void cpu_gemm(bool trans_a, int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
              int threads);

/* One product of a batch: C = A B, A m x k with rows lda apart. */
typedef struct {
  const float *a, *b;
  float *c;
  int m, k, lda;
} cpu_gemm_item;

/* Every item's C = A B, B k x n with rows ldb apart and C m x n with rows ldc apart (gemm.c). The
 * batch's multiply-adds are shared out evenly over `threads`: each thread takes one run of the
 * items' columns, in pieces of whole 16-column blocks, and computes each piece with a
 * single-threaded sgemm. A product's elements do not depend on how its columns are split. */
void cpu_gemm_batch(const cpu_gemm_item *items, int count, int n, int ldb, int ldc, int threads);

/* Winograd for 3x3 stride-1 pad-1 convolutions with at least 16 channels in and out
 * (winograd.c). cpu_winograd_tile gives the output tile edge to use, at most max_tile, with
 * scratch_floats of scratch (SIZE_MAX: the one preferred): 4 (F(4x4, 3x3)) for outputs of 8x8
 * and more, else 2 (F(2x2, 3x3)), 0 when the scratch holds neither's 16 tiles; cpu_winograd_tiles how many tiles
 * of an edge cover the output; cpu_winograd_scratch the floats a run in chunks of `tiles` tiles
 * needs. cpu_conv_winograd needs cpu_winograd_scratch(g, tile, 1) floats at least (more: fewer
 * chunks) and returns the chunks or -1 (chunk_done asked to stop). */
bool cpu_winograd_applies(const conv_geom *g);
int cpu_winograd_tile(const conv_geom *g, int max_tile, size_t scratch_floats);
size_t cpu_winograd_tiles(const conv_geom *g, int tile);
size_t cpu_winograd_scratch(const conv_geom *g, int tile, size_t tiles);
int cpu_conv_winograd(const conv_geom *g, int tile, const float *x, const float *w, const float *bias, float *y,
                      float *scratch, size_t scratch_floats, int threads);
/* Winograd F(2x2, 2x2) over the sub-pixel phases of 4x4 and 3x3 stride-2 pad-1 convolutions
 * (transpose false) and transposed convolutions (true; a 3x3 one with output padding 1) with at
 * least 16 input and output channels and enough pixels (winograd_s2.c). Needs
 * cpu_s2_scratch(g, transpose, 16) floats at least; returns the chunks or -1. */
bool cpu_s2_applies(const conv_geom *g, bool transpose);
size_t cpu_s2_tiles(const conv_geom *g, bool transpose);
/* The most tiles cpu_conv_s2 takes in one chunk, however large its scratch. */
size_t cpu_s2_chunk_tiles(const conv_geom *g, bool transpose);
size_t cpu_s2_scratch(const conv_geom *g, bool transpose, size_t tiles);
int cpu_conv_s2(const conv_geom *g, bool transpose, const float *x, const float *w, const float *bias, float *y,
                float *scratch, size_t scratch_floats, int threads);
/* Direct convolution for at most 4 output channels, or at most 4 input channels at stride 1
 * (the generators' first and last layers); cpu_direct_scratch(g, threads) floats. */
bool cpu_direct_applies(const conv_geom *g);
size_t cpu_direct_scratch(const conv_geom *g, int threads);
int cpu_conv_direct(const conv_geom *g, const float *x, const float *w, const float *bias, float *y, float *scratch,
                    int threads);

/* The geometry of a convolution step of a plan (exec.c). */
conv_geom cpu_step_geom(const i2i_model *m, const i2i_plan *p, const i2i_step *s);
/* One image through a Conv (transpose false) or ConvTranspose step by the fastest kernel that
 * applies and fits the scratch (Winograd, direct, or GEMM) (exec.c). `wino` bounds the Winograd
 * tile: 0 none, 2 F(2x2, ...) only (training), 4 F(4x4, 3x3) and the 3x3 stride-2 layers too
 * (inference). Returns the chunks or -1 when g->chunk_done stopped it. */
int cpu_conv_any(const conv_geom *g, bool transpose, const float *x, const float *w, const float *bias, float *y,
                 float *scratch, size_t scratch_floats, int threads, int wino);
/* Scratch floats a convolution step wants for one chunk (full) and at least (min) (exec.c). */
void cpu_conv_scratch(const conv_geom *g, int threads, size_t *full, size_t *min);

/* Per-channel normalisation of x[c][hw] into y (y may equal x), then the activation:
 * with mean/var NULL the statistics of each channel are computed (instance / batch-of-one
 * statistics, biased variance, double sums); otherwise the given running statistics are used.
 * With res given, a residual Add follows in the same pass: y = act2(res + act(norm(x))), the
 * same bits as the two steps apart (res may equal x or y: every element is read before it is
 * written). */
void cpu_norm_forward(const float *x, float *y, int c, size_t hw, const float *scale, const float *bias,
                      const float *mean, const float *var, float eps, int act, float alpha, const float *res, int act2,
                      float alpha2, int threads);

void cpu_pad_forward(const float *x, float *y, int c, int h, int w, const int pads[4], int mode, float value,
                     int threads);
/* y = act(x) elementwise; ACT_NONE copies (unless y == x). */
void cpu_act_forward(const float *x, float *y, size_t n, int act, float alpha, int threads);
/* y = tanh(x) elementwise, within 3.9e-7 (pointwise.c). */
void cpu_tanh_forward(const float *x, float *y, size_t n, int threads);
void cpu_add_forward(const float *a, const float *b, float *y, size_t n, int act, float alpha, int threads);
/* Dropout with the counter-based mask of design.md: x[c][h][w] of image `batch_index`. */
void cpu_dropout_forward(const float *x, float *y, int c, int h, int w, float ratio, uint64_t seed,
                         uint32_t ordinal, uint32_t batch_index, uint64_t step, int threads);

/* ---- training: the backward halves (conv.c, norm.c, pointwise.c), losses (loss.c) and Adam
 * (adam.c). `accumulate` adds into dx instead of writing it (another reader of x contributed
 * first). Weight and bias gradients always add into their buffers. */

/* Conv: dx[c][h][w] from dy[m][oh][ow] through the padding of g (reflected or replicated
 * halo positions fold back onto their pixels; zeros are dropped). */
void cpu_conv_backward_data(const conv_geom *g, const float *dy, const float *w, float *dx, bool accumulate,
                            float *scratch, size_t scratch_floats, int threads);
/* Conv: dw[m][c][kh][kw] += dy . im2col(x)^T; db[m] += sum(dy[m]) when db is not NULL. */
void cpu_conv_backward_weights(const conv_geom *g, const float *x, const float *dy, float *dw, float *db,
                               float *scratch, size_t scratch_floats, int threads);
/* ConvTranspose (weights w[c][m][kh][kw]): dx[c][h][w] and dw, db as above. */
void cpu_convt_backward_data(const conv_geom *g, const float *dy, const float *w, float *dx, bool accumulate,
                             float *scratch, size_t scratch_floats, int threads);
void cpu_convt_backward_weights(const conv_geom *g, const float *x, const float *dy, float *dw, float *db,
                                float *scratch, size_t scratch_floats, int threads);
/* Scratch floats the backward of one image wants to run in one chunk (less is chunked; at
 * least one pixel's column is needed). */
size_t cpu_conv_backward_scratch(const conv_geom *g, bool transpose);
/* The data gradient of a convolution cpu_winograd_applies to, through Winograd (winograd.c):
 * needs cpu_winograd_backward_scratch(g) floats. */
size_t cpu_winograd_backward_scratch(const conv_geom *g);
void cpu_conv_backward_data_winograd(const conv_geom *g, const float *dy, const float *w, float *dx, bool accumulate,
                                     float *scratch, int threads);
/* The weight gradient of such a convolution by Winograd F(3x3, 2x2): dw (and db when not NULL)
 * are added to; needs cpu_winograd_wgrad_scratch(g, 16) floats at least (more: fewer chunks). */
size_t cpu_winograd_wgrad_scratch(const conv_geom *g, size_t tiles);
void cpu_conv_backward_weights_winograd(const conv_geom *g, const float *x, const float *dy, float *dw, float *db,
                                        float *scratch, size_t scratch_floats, int threads);

/* The backward of a stride-1 convolution with at most 4 outputs and kernels at most 8 wide (the
 * generators' last 7x7 layer, the PatchGAN's last) (direct.c); both need
 * cpu_direct_backward_scratch(g, threads) floats. The data gradient sums each pixel in one order
 * on any thread count; the weight gradient each weight on one thread. */
bool cpu_direct_backward_applies(const conv_geom *g);
size_t cpu_direct_backward_scratch(const conv_geom *g, int threads);
void cpu_conv_backward_data_direct(const conv_geom *g, const float *dy, const float *w, float *dx, bool accumulate,
                                   float *scratch, int threads);
void cpu_conv_backward_weights_direct(const conv_geom *g, const float *x, const float *dy, float *dw, float *db,
                                      float *scratch, int threads);
/* db[m] += the sum of the m-th plane of dy (double sums, one thread per plane) (conv.c). */
void cpu_bias_grad(const float *dy, float *db, int m, size_t plane, int threads);

/* Training normalisation over n images x[n][c][hw]: batch statistics (per channel over N, H, W)
 * or instance statistics (per image and channel). Writes mean and rstd (c or n*c floats), then
 * y = act(scale * (x - mean) * rstd + bias); with run_mean / run_var updates them with
 * `momentum` (PyTorch's convention) and the unbiased variance. */
void cpu_norm_train_forward(const float *x, float *y, int n, int c, size_t hw, bool batch, const float *scale,
                            const float *bias, float eps, int act, float alpha, float *mean, float *rstd, float *run_mean,
                            float *run_var, float momentum, int threads);
/* Its backward from x, the stored statistics and dy (the gradient of the activation's output);
 * dscale / dbias (may be NULL) are added to; dx may be NULL (parameter gradients only). */
void cpu_norm_backward(const float *x, const float *dy, float *dx, bool accumulate, int n, int c, size_t hw, bool batch,
                       const float *scale, const float *bias, const float *mean, const float *rstd, int act, float alpha,
                       float *dscale, float *dbias, int threads);

/* dst = src (or dst += src). */
void cpu_grad_copy(const float *src, float *dst, size_t n, bool accumulate, int threads);
/* ReLU / LeakyReLU from their output y; Tanh from its output. */
void cpu_act_backward(const float *y, const float *dy, float *dx, size_t n, int act, float alpha, bool accumulate,
                      int threads);
void cpu_tanh_backward(const float *y, const float *dy, float *dx, size_t n, bool accumulate, int threads);
void cpu_dropout_backward(const float *dy, float *dx, int c, int h, int w, float ratio, uint64_t seed, uint32_t ordinal,
                          uint32_t batch_index, uint64_t step, bool accumulate, int threads);
/* Pad: dx[c][h][w] from dy of the padded shape (reflect, edge or constant). */
void cpu_pad_backward(const float *dy, float *dx, int c, int h, int w, const int pads[4], int mode, bool accumulate,
                      int threads);

/* Mean losses over n elements, times `weight` (loss.c). `target` NULL means every target is
 * `label`. Returns the loss; writes (or adds) its gradient into grad when not NULL. Sums run in
 * double in a fixed order. */
double cpu_loss(int kind, const float *x, const float *target, float label, size_t n, float weight, float *grad,
                bool accumulate, int threads);
/* PyTorch's Adam (no weight decay, no amsgrad) on n parameters at step t (1-based). */
void cpu_adam(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps,
              uint64_t t, int threads);
/* True when the n floats are all finite. */
bool cpu_all_finite(const float *x, size_t n, int threads);

#endif
