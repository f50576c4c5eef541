/* cuda/train_kernels.cu: the training kernels of the CUDA backend (cuda_priv.h, "training
 * kernels"): grid-stride wrappers of train_bodies.h and the reductions (normalisation statistics
 * and their backward sums, bias gradients, losses, the finiteness check). Reductions run one
 * block per group in double with a shape fixed by the group's size, so they are deterministic.
 */
#include "train_bodies.h"

#define TTPB 256

static inline unsigned tgrid(int64_t total) {
  int64_t b = (total + TTPB - 1) / TTPB;
  if (b < 1) b = 1;
  if (b > 65535) b = 65535;
  return (unsigned)b;
}

#define TLOOP(total)                                                                                  \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (total); i += (int64_t)gridDim.x * blockDim.x)

/* The sums of a block's NT threads (blockDim.x == NT), valid in thread 0. */
template <int NT> __device__ static double2 block_dsum2(double a, double b) {
  __shared__ double2 red[NT / 32];
  for (int o = 16; o > 0; o >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, o);
    b += __shfl_down_sync(0xffffffffu, b, o);
  }
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  if (lane == 0) red[wid] = make_double2(a, b);
  __syncthreads();
  double2 r = make_double2(0.0, 0.0);
  if (threadIdx.x == 0)
    for (int k = 0; k < NT / 32; k++) {
      r.x += red[k].x;
      r.y += red[k].y;
    }
  __syncthreads();
  return r;
}

__global__ void kt_fill_kernel(float *p, float v, int64_t n) { TLOOP(n) p[i] = v; }

cudaError_t kt_fill(cudaStream_t s, float *p, float v, int64_t n) {
  if (n <= 0) return cudaSuccess;
  kt_fill_kernel<<<tgrid(n), TTPB, 0, s>>>(p, v, n);
  return cudaGetLastError();
}

__global__ void kt_fill_noise_kernel(float *p, int64_t n) { TLOOP(n) p[i] = kbt_noise(i); }

cudaError_t kt_fill_noise(cudaStream_t s, float *p, int64_t n) {
  if (n <= 0) return cudaSuccess;
  kt_fill_noise_kernel<<<tgrid(n), TTPB, 0, s>>>(p, n);
  return cudaGetLastError();
}

__global__ void kt_grad_kernel(const float *src, float *dst, int64_t n, int acc) { TLOOP(n) kbt_grad(src, dst, acc, i); }

cudaError_t kt_grad(cudaStream_t s, const float *src, float *dst, int64_t n, int acc) {
  if (n <= 0) return cudaSuccess;
  kt_grad_kernel<<<tgrid(n), TTPB, 0, s>>>(src, dst, n, acc);
  return cudaGetLastError();
}

__global__ void kt_copy_channels_kernel(float *dst, int dst_c, int dst_c0, const float *src, int src_c, int src_c0,
                                        int nc, int64_t hw, int acc, int64_t total) {
  TLOOP(total) kbt_copy_channels(dst, dst_c, dst_c0, src, src_c, src_c0, nc, hw, acc, i);
}

cudaError_t kt_copy_channels(cudaStream_t s, float *dst, int dst_c, int dst_c0, const float *src, int src_c, int src_c0,
                             int nc, int n, int64_t hw, int acc) {
  int64_t total = (int64_t)n * nc * hw;
  if (total <= 0) return cudaSuccess;
  kt_copy_channels_kernel<<<tgrid(total), TTPB, 0, s>>>(dst, dst_c, dst_c0, src, src_c, src_c0, nc, hw, acc, total);
  return cudaGetLastError();
}

__global__ void kt_act_backward_kernel(const float *y, const float *dy, float *dx, int64_t n, int kind, float alpha,
                                       int acc) {
  TLOOP(n) kbt_act_backward(y, dy, dx, kind, alpha, acc, i);
}

cudaError_t kt_act_backward(cudaStream_t s, const float *y, const float *dy, float *dx, int64_t n, int kind,
                            float alpha, int acc) {
  if (n <= 0) return cudaSuccess;
  kt_act_backward_kernel<<<tgrid(n), TTPB, 0, s>>>(y, dy, dx, n, kind, alpha, acc);
  return cudaGetLastError();
}

__global__ void kt_set_key_kernel(uint64_t *key, uint64_t seed, uint64_t step) {
  key[0] = seed;
  key[1] = step;
}

cudaError_t kt_set_key(cudaStream_t s, uint64_t *key, uint64_t seed, uint64_t step) {
  kt_set_key_kernel<<<1, 1, 0, s>>>(key, seed, step);
  return cudaGetLastError();
}

__global__ void kt_dropout_kernel(const float *src, float *dst, int c, int h, int w, const uint64_t *key,
                                  uint32_t ordinal, uint32_t threshold, float scale, int acc, int64_t total) {
  TLOOP(total) kbt_dropout(src, dst, c, h, w, key, ordinal, threshold, scale, acc, i);
}

cudaError_t kt_dropout(cudaStream_t s, const float *src, float *dst, int n, int c, int h, int w, const uint64_t *key,
                       uint32_t ordinal, uint32_t threshold, float scale, int acc) {
  int64_t total = (int64_t)n * c * h * w;
  if (total <= 0) return cudaSuccess;
  kt_dropout_kernel<<<tgrid(total), TTPB, 0, s>>>(src, dst, c, h, w, key, ordinal, threshold, scale, acc, total);
  return cudaGetLastError();
}

/* A grid-stride loop with index type I (int where small() says the count fits: 32-bit index
 * arithmetic, several times cheaper than 64-bit division on the GPU). */
#define TLOOP_I(I, total)                                                                             \
  for (I i = (I)(blockIdx.x * blockDim.x + threadIdx.x); i < (I)(total); i += (I)(gridDim.x * blockDim.x))

/* True when a grid-stride loop over `total` elements can count in int. */
static inline bool small(int64_t total) { return total < ((int64_t)1 << 30); }

/* Launches kernel<int> where small(total), else kernel<int64_t>, on stream s; its arguments
 * follow. */
#define LAUNCH_I(kernel, s, total, ...)                                                               \
  do {                                                                                                \
    if (small(total))                                                                                 \
      kernel<int><<<tgrid(total), TTPB, 0, (s)>>>(__VA_ARGS__);                                       \
    else                                                                                              \
      kernel<int64_t><<<tgrid(total), TTPB, 0, (s)>>>(__VA_ARGS__);                                   \
  } while (0)

template <typename I>
__global__ void kt_pad_kernel(const float *x, float *y, int h, int w, int pt, int pl, int hp, int wp, int mode,
                              float value, int64_t total) {
  TLOOP_I(I, total) kbt_pad(x, y, h, w, pt, pl, hp, wp, mode, value, i);
}

cudaError_t kt_pad(cudaStream_t s, const float *x, float *y, int n, int c, int h, int w, int pt, int pl, int pb, int pr,
                   int mode, float value) {
  int hp = h + pt + pb, wp = w + pl + pr;
  int64_t total = (int64_t)n * c * hp * wp;
  if (total <= 0) return cudaSuccess;
  LAUNCH_I(kt_pad_kernel, s, total, x, y, h, w, pt, pl, hp, wp, mode, value, total);
  return cudaGetLastError();
}

template <typename I> __global__ void kt_bias_kernel(float *y, const float *bias, int c, int hw, int64_t total) {
  TLOOP_I(I, total) kbt_bias(y, bias, c, hw, i);
}

cudaError_t kt_bias(cudaStream_t s, float *y, const float *bias, int n, int c, int64_t hw) {
  int64_t total = (int64_t)n * c * hw;
  if (total <= 0) return cudaSuccess;
  LAUNCH_I(kt_bias_kernel, s, total, y, bias, c, (int)hw, total);
  return cudaGetLastError();
}

template <typename I>
__global__ void kt_pad_backward_kernel(const float *dp, float *dx, int h, int w, int pt, int pl, int pb, int pr,
                                       int mode, int acc, int64_t total) {
  TLOOP_I(I, total) kbt_pad_backward(dp, dx, h, w, pt, pl, pb, pr, mode, acc, i);
}

cudaError_t kt_pad_backward(cudaStream_t s, const float *dp, float *dx, int n, int c, int h, int w, int pt, int pl,
                            int pb, int pr, int mode, int acc) {
  int64_t total = (int64_t)n * c * h * w;
  if (total <= 0) return cudaSuccess;
  LAUNCH_I(kt_pad_backward_kernel, s, total, dp, dx, h, w, pt, pl, pb, pr, mode, acc, total);
  return cudaGetLastError();
}

/* ---- normalisation ------------------------------------------------------------------------------- */

/* Threads per block of the one-block-per-group reductions: 1024 for large groups (a 64-channel
 * 256x256 layer has only 64 groups of 65536, and 256 threads each took 128 us on an H100), else
 * TTPB. Fixed by the group size, so the sums stay deterministic. */
static inline bool wide_group(int64_t cnt) { return cnt >= 16384; }

/* One block per group: the mean, then the variance about it (two passes, as the CPU). */
template <int NT>
__global__ void kt_norm_stats_kernel(const float *x, int n, int c, int64_t hw, int batch, float eps, float *mean,
                                     float *rstd, float *run_mean, float *run_var, float momentum) {
  int g = blockIdx.x;
  int64_t cnt = kbt_group_size(n, hw, batch);
  double s = 0;
  for (int64_t j = threadIdx.x; j < cnt; j += NT) s += (double)x[kbt_group_off(g, j, c, hw, batch)];
  __shared__ double mu_s;
  double2 r = block_dsum2<NT>(s, 0.0);
  if (threadIdx.x == 0) mu_s = r.x / (double)cnt;
  __syncthreads();
  double mu = mu_s, q = 0;
  for (int64_t j = threadIdx.x; j < cnt; j += NT) {
    double d = (double)x[kbt_group_off(g, j, c, hw, batch)] - mu;
    q += d * d;
  }
  r = block_dsum2<NT>(q, 0.0);
  if (threadIdx.x == 0)
    kbt_stats_finish(g, mu, r.x / (double)cnt, (double)cnt, eps, c, batch, mean, rstd, run_mean, run_var, momentum);
}

__global__ void kt_norm_apply_kernel(const float *x, float *y, int c, int64_t hw, int batch, const float *scale,
                                     const float *bias, const float *mean, const float *rstd, int act, float alpha,
                                     int64_t total) {
  TLOOP(total) kbt_norm_apply(x, y, c, hw, batch, scale, bias, mean, rstd, act, alpha, i);
}

cudaError_t kt_norm_forward(cudaStream_t s, const float *x, float *y, int n, int c, int64_t hw, int batch,
                            const float *scale, const float *bias, float eps, int act, float alpha, float *mean,
                            float *rstd, float *run_mean, float *run_var, float momentum) {
  int groups = kbt_groups(n, c, batch);
  if (wide_group(kbt_group_size(n, hw, batch)))
    kt_norm_stats_kernel<1024><<<groups, 1024, 0, s>>>(x, n, c, hw, batch, eps, mean, rstd, run_mean, run_var, momentum);
  else
    kt_norm_stats_kernel<TTPB><<<groups, TTPB, 0, s>>>(x, n, c, hw, batch, eps, mean, rstd, run_mean, run_var, momentum);
  cudaError_t e = cudaGetLastError();
  if (e) return e;
  int64_t total = (int64_t)n * c * hw;
  kt_norm_apply_kernel<<<tgrid(total), TTPB, 0, s>>>(x, y, c, hw, batch, scale, bias, mean, rstd, act, alpha, total);
  return cudaGetLastError();
}

template <int NT>
__global__ void kt_norm_bwd_sums_kernel(const float *x, const float *dy, int n, int c, int64_t hw, int batch,
                                        const float *scale, const float *bias, const float *mean, const float *rstd,
                                        float slope, float *k) {
  int g = blockIdx.x, ci = batch ? g : g % c;
  int64_t cnt = kbt_group_size(n, hw, batch);
  float mf = mean[g], a = scale[ci] * rstd[g], b = bias[ci] - mf * a;
  double sdz = 0, sdzc = 0;
  for (int64_t j = threadIdx.x; j < cnt; j += NT) {
    int64_t o = kbt_group_off(g, j, c, hw, batch);
    float dz = kbt_act_grad(x[o], a, b, dy[o], slope);
    sdz += (double)dz;
    sdzc += (double)(dz * (x[o] - mf));
  }
  double2 r = block_dsum2<NT>(sdz, sdzc);
  if (threadIdx.x == 0) kbt_norm_bwd_finish(g, r.x, r.y, (double)cnt, c, batch, scale, rstd, k);
}

__global__ void kt_norm_param_kernel(int n, int c, int batch, const float *k, float *dscale, float *dbias) {
  TLOOP(c) kbt_norm_param_grads((int)i, n, c, batch, k, dscale, dbias);
}

__global__ void kt_norm_dx_kernel(const float *x, const float *dy, float *dx, int c, int64_t hw, int batch,
                                  const float *scale, const float *bias, const float *mean, const float *rstd,
                                  float slope, const float *k, int acc, int64_t total) {
  TLOOP(total) kbt_norm_dx(x, dy, dx, c, hw, batch, scale, bias, mean, rstd, slope, k, acc, i);
}

cudaError_t kt_norm_backward(cudaStream_t s, const float *x, const float *dy, float *dx, int acc, int n, int c,
                             int64_t hw, int batch, const float *scale, const float *bias, const float *mean,
                             const float *rstd, int act, float alpha, float *dscale, float *dbias, float *k) {
  float slope = act == ACT_RELU ? 0.0f : act == ACT_LRELU ? alpha : 1.0f;
  if (wide_group(kbt_group_size(n, hw, batch)))
    kt_norm_bwd_sums_kernel<1024><<<kbt_groups(n, c, batch), 1024, 0, s>>>(x, dy, n, c, hw, batch, scale, bias, mean,
                                                                           rstd, slope, k);
  else
    kt_norm_bwd_sums_kernel<TTPB><<<kbt_groups(n, c, batch), TTPB, 0, s>>>(x, dy, n, c, hw, batch, scale, bias, mean,
                                                                           rstd, slope, k);
  cudaError_t e = cudaGetLastError();
  if (e) return e;
  if (dscale || dbias) {
    kt_norm_param_kernel<<<tgrid(c), TTPB, 0, s>>>(n, c, batch, k, dscale, dbias);
    if ((e = cudaGetLastError())) return e;
  }
  if (!dx) return cudaSuccess;
  int64_t total = (int64_t)n * c * hw;
  kt_norm_dx_kernel<<<tgrid(total), TTPB, 0, s>>>(x, dy, dx, c, hw, batch, scale, bias, mean, rstd, slope, k, acc,
                                                  total);
  return cudaGetLastError();
}

/* ---- bias gradients, losses, finiteness ------------------------------------------------------------ */

template <int NT> __global__ void kt_channel_sum_kernel(const float *dy, int n, int c, int64_t hw, float *out) {
  int ch = blockIdx.x;
  int64_t cnt = (int64_t)n * hw;
  double sum = 0;
  for (int64_t j = threadIdx.x; j < cnt; j += NT) sum += (double)dy[kbt_group_off(ch, j, c, hw, 1)];
  double2 r = block_dsum2<NT>(sum, 0.0);
  if (threadIdx.x == 0) out[ch] += (float)r.x;
}

cudaError_t kt_channel_sum(cudaStream_t s, const float *dy, int n, int c, int64_t hw, float *out) {
  if (wide_group((int64_t)n * hw))
    kt_channel_sum_kernel<1024><<<c, 1024, 0, s>>>(dy, n, c, hw, out);
  else
    kt_channel_sum_kernel<TTPB><<<c, TTPB, 0, s>>>(dy, n, c, hw, out);
  return cudaGetLastError();
}

__global__ void kt_loss_kernel(int kind, const float *x, const float *t, float label, int64_t n, float scale,
                               float *grad, int acc, double *part) {
  double sum = 0;
  TLOOP(n) sum += kbt_loss(kind, x, t, label, scale, grad, acc, i);
  double2 r = block_dsum2<TTPB>(sum, 0.0);
  if (threadIdx.x == 0) part[blockIdx.x] = r.x;
}

cudaError_t kt_loss(cudaStream_t s, int kind, const float *x, const float *t, float label, int64_t n, float weight,
                    float *grad, int acc, double *part) {
  kt_loss_kernel<<<KT_LOSS_BLOCKS, TTPB, 0, s>>>(kind, x, t, label, n, n ? weight / (float)n : 0.0f, grad, acc, part);
  return cudaGetLastError();
}

__global__ void kt_adam_kernel(float *p, const float *g, float *m, float *v, int64_t n, float step, float bc2s, float b1,
                               float b2, float a1, float a2, float eps) {
  TLOOP(n) kbt_adam(p, g, m, v, step, bc2s, b1, b2, a1, a2, eps, i);
}

cudaError_t kt_adam(cudaStream_t s, float *p, const float *g, float *m, float *v, int64_t n, float step, float bc2s,
                    float b1, float b2, float a1, float a2, float eps) {
  if (n <= 0) return cudaSuccess;
  kt_adam_kernel<<<tgrid(n), TTPB, 0, s>>>(p, g, m, v, n, step, bc2s, b1, b2, a1, a2, eps);
  return cudaGetLastError();
}

__global__ void kt_finite_kernel(const float *x, int64_t n, int *flag) {
  TLOOP(n) if (!isfinite(x[i])) *flag = 1;
}

cudaError_t kt_finite(cudaStream_t s, const float *x, int64_t n, int *flag) {
  if (n <= 0) return cudaSuccess;
  kt_finite_kernel<<<tgrid(n), TTPB, 0, s>>>(x, n, flag);
  return cudaGetLastError();
}
