/* cuda/kernels.cu: the CUDA module's own kernels (everything that is not a convolution).
 *
 * Padding (reflect / edge / zero, as halos or packed copies), instance and batch normalisation
 * (float32 statistics in two kernels plus an apply that fuses the activation and a residual
 * add), activations, Add, Tanh, Dropout (the engine's Philox mask, bit for bit), Concat, the
 * layout conversions and the RGBA image path. Works on kview tensors in NCHW float32 or NHWC
 * half; the hot kernels (statistics, apply) have a 16-byte vector path for NHWC half.
 */
#include "cuda_priv.h"

#define TPB 256

static int g_grid_cap = 1 << 16;

void k_set_grid_cap(int max_blocks) { g_grid_cap = max_blocks > 0 ? max_blocks : 1 << 16; }

static inline unsigned grid_for(int64_t total) {
  int64_t b = (total + TPB - 1) / TPB;
  if (b < 1) b = 1;
  if (b > g_grid_cap) b = g_grid_cap;
  return (unsigned)b;
}

/* ---- element access -------------------------------------------------------------------------- */

__device__ __forceinline__ float ld_el(const void *p, int64_t i, int half) {
  return half ? __half2float(((const __half *)p)[i]) : ((const float *)p)[i];
}

__device__ __forceinline__ void st_el(void *p, int64_t i, int half, float v) {
  if (half)
    ((__half *)p)[i] = __float2half_rn(v);
  else
    ((float *)p)[i] = v;
}

__device__ __forceinline__ float act_f(float v, int act, float alpha) {
  if (act == ACT_RELU) return v > 0.0f ? v : 0.0f;
  if (act == ACT_LRELU) return v > 0.0f ? v : v * alpha;
  return v;
}

/* Splits a linear index over n x cs x h x w, in the view's memory order, into coordinates. */
__device__ __forceinline__ void kv_coords(const kview &v, int64_t i, int &n, int &c, int &y, int &x) {
  if (v.nhwc) {
    c = (int)(i % v.cs);
    int64_t t = i / v.cs;
    x = (int)(t % v.w);
    t /= v.w;
    y = (int)(t % v.h);
    n = (int)(t / v.h);
  } else {
    x = (int)(i % v.w);
    int64_t t = i / v.w;
    y = (int)(t % v.h);
    t /= v.h;
    c = (int)(t % v.cs);
    n = (int)(t / v.cs);
  }
}

static inline int64_t kv_count(const kview &v) { return (int64_t)v.n * v.cs * v.h * v.w; }

/* ---- padding ------------------------------------------------------------------------------------ */

__global__ void fill_halo_kernel(kview v, int pb, int pr, int mode) {
  int64_t plane = (int64_t)v.hs * v.ws - (int64_t)v.h * v.w;
  int64_t total = plane * v.n * v.cs;
  int side = v.pl + pr;
  int64_t top = (int64_t)v.pt * v.ws, mid = (int64_t)v.h * side;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int c, n;
    int64_t b;
    if (v.nhwc) {
      c = (int)(i % v.cs);
      int64_t t = i / v.cs;
      b = t % plane;
      n = (int)(t / plane);
    } else {
      b = i % plane;
      int64_t t = i / plane;
      c = (int)(t % v.cs);
      n = (int)(t / v.cs);
    }
    int ys, xs;
    if (b < top) {
      ys = (int)(b / v.ws);
      xs = (int)(b % v.ws);
    } else if (b - top < mid) {
      int64_t r = b - top;
      ys = v.pt + (int)(r / side);
      int j = (int)(r % side);
      xs = j < v.pl ? j : v.w + j;
    } else {
      int64_t r = b - top - mid;
      ys = v.pt + v.h + (int)(r / v.ws);
      xs = (int)(r % v.ws);
    }
    int y = ys - v.pt, x = xs - v.pl;
    float val = 0.0f;
    if (mode != PAD_CONSTANT && c < v.c) {
      int sy = kv_map(y, v.h, mode), sx = kv_map(x, v.w, mode);
      val = ld_el(v.p, kv_index(v, n, c, sy, sx), v.half);
    }
    st_el(v.p, kv_index(v, n, c, y, x), v.half, val);
  }
}

cudaError_t k_fill_halo(cudaStream_t s, const kview &v, int pb, int pr, int mode) {
  int64_t total = ((int64_t)v.hs * v.ws - (int64_t)v.h * v.w) * v.n * v.cs;
  if (total <= 0) return cudaSuccess;
  fill_halo_kernel<<<grid_for(total), TPB, 0, s>>>(v, pb, pr, mode);
  return cudaGetLastError();
}

__global__ void pad_kernel(kview src, kview dst, int pt, int pl, int mode, float value) {
  int64_t total = (int64_t)dst.n * dst.cs * dst.h * dst.w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int n, c, y, x;
    kv_coords(dst, i, n, c, y, x);
    float v = 0.0f;
    if (c < src.c) {
      int iy = kv_map(y - pt, src.h, mode), ix = kv_map(x - pl, src.w, mode);
      v = (iy < 0 || ix < 0) ? value : ld_el(src.p, kv_index(src, n, c, iy, ix), src.half);
    }
    st_el(dst.p, kv_index(dst, n, c, y, x), dst.half, v);
  }
}

cudaError_t k_pad(cudaStream_t s, const kview &src, const kview &dst, int pt, int pl, int mode, float value) {
  pad_kernel<<<grid_for(kv_count(dst)), TPB, 0, s>>>(src, dst, pt, pl, mode, value);
  return cudaGetLastError();
}

/* ---- normalisation ------------------------------------------------------------------------------ */

/* Statistics are sums of (x - shift) and (x - shift)^2 per (image, channel), shift being the
 * channel's first pixel: this keeps the float32 partial sums far from cancellation when the
 * mean is large against the spread. Each block sums one chunk of the plane; the finalize
 * kernel adds the chunks in double, in a fixed order (no atomics: run-to-run identical). */

__device__ __forceinline__ float2 block_sum2(float s, float q) {
  __shared__ float2 red[TPB / 32];
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_down_sync(0xffffffffu, s, o);
    q += __shfl_down_sync(0xffffffffu, q, o);
  }
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  if (lane == 0) red[wid] = make_float2(s, q);
  __syncthreads();
  float2 r = make_float2(0.0f, 0.0f);
  if (threadIdx.x == 0)
    for (int k = 0; k < (int)(blockDim.x >> 5); k++) {
      r.x += red[k].x;
      r.y += red[k].y;
    }
  return r;
}

/* Any layout: grid (nblk, planes); one (image, channel) plane per blockIdx.y step. */
__global__ void stats_generic_kernel(kview x, float2 *part, int nblk) {
  int64_t hw = (int64_t)x.h * x.w;
  int64_t chunk = (hw + nblk - 1) / nblk;
  int64_t p0 = blockIdx.x * chunk, p1 = p0 + chunk < hw ? p0 + chunk : hw;
  for (int nc = blockIdx.y; nc < x.n * x.c; nc += gridDim.y) {
    int n = nc / x.c, c = nc % x.c;
    float shift = ld_el(x.p, kv_index(x, n, c, 0, 0), x.half);
    float s = 0.0f, q = 0.0f;
    for (int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
      int yy = (int)(p / x.w), xx = (int)(p % x.w);
      float d = ld_el(x.p, kv_index(x, n, c, yy, xx), x.half) - shift;
      s += d;
      q += d * d;
    }
    float2 r = block_sum2(s, q);
    if (threadIdx.x == 0) part[((int64_t)n * x.cs + c) * nblk + blockIdx.x] = r;
    __syncthreads();
  }
}

/* NHWC half with cs % 8 == 0 and cs <= 8 * TPB: grid (nblk, n). Thread t reads channel group
 * t % g (8 channels, one 16-byte load) of pixels t / g, t / g + lanes, ...; the block then adds
 * the lanes per channel through shared memory. */
__global__ void stats_nhwc8_kernel(kview x, float2 *part, int nblk) {
  __shared__ float sh_s[TPB * 8], sh_q[TPB * 8];
  int g = x.cs >> 3, lanes = TPB / g, tid = threadIdx.x;
  int cg = tid % g, ty = tid / g, n = blockIdx.y;
  int64_t hw = (int64_t)x.h * x.w;
  int64_t chunk = (hw + nblk - 1) / nblk;
  int64_t p0 = blockIdx.x * chunk, p1 = p0 + chunk < hw ? p0 + chunk : hw;
  float s[8], q[8], sh[8];
  for (int j = 0; j < 8; j++) s[j] = q[j] = 0.0f;
  const __half *base = (const __half *)x.p;
  {
    uint4 raw = *(const uint4 *)(base + kv_index(x, n, cg * 8, 0, 0));
    const __half2 *h2 = (const __half2 *)&raw;
    for (int k = 0; k < 4; k++) {
      float2 f = __half22float2(h2[k]);
      sh[2 * k] = f.x;
      sh[2 * k + 1] = f.y;
    }
  }
  if (ty < lanes)
    for (int64_t p = p0 + ty; p < p1; p += lanes) {
      int yy = (int)(p / x.w), xx = (int)(p % x.w);
      uint4 raw = *(const uint4 *)(base + kv_index(x, n, cg * 8, yy, xx));
      const __half2 *h2 = (const __half2 *)&raw;
      for (int k = 0; k < 4; k++) {
        float2 f = __half22float2(h2[k]);
        float d0 = f.x - sh[2 * k], d1 = f.y - sh[2 * k + 1];
        s[2 * k] += d0;
        q[2 * k] += d0 * d0;
        s[2 * k + 1] += d1;
        q[2 * k + 1] += d1 * d1;
      }
    }
  for (int j = 0; j < 8; j++) {
    sh_s[tid * 8 + j] = s[j];
    sh_q[tid * 8 + j] = q[j];
  }
  __syncthreads();
  for (int c = tid; c < x.cs; c += TPB) {
    int g0 = c >> 3, j = c & 7;
    float S = 0.0f, Q = 0.0f;
    for (int t = 0; t < lanes; t++) {
      S += sh_s[(t * g + g0) * 8 + j];
      Q += sh_q[(t * g + g0) * 8 + j];
    }
    part[((int64_t)n * x.cs + c) * nblk + blockIdx.x] = make_float2(S, Q);
  }
}

static bool nhwc8(const kview &v) { return v.half && v.nhwc && v.cs % 8 == 0; }

int k_stats_blocks(const kview &x, int sm_count) {
  int64_t hw = (int64_t)x.h * x.w;
  int64_t want = (int64_t)(sm_count > 0 ? sm_count : 80) * 4;
  int64_t planes = nhwc8(x) && x.cs <= 8 * TPB ? x.n : (int64_t)x.n * x.c;
  int64_t nb = (want + planes - 1) / planes;
  int64_t maxb = (hw + 1023) / 1024; /* at least ~1024 pixels per block */
  if (nb > maxb) nb = maxb;
  if (nb < 1) nb = 1;
  if (nb > 1024) nb = 1024;
  return (int)nb;
}

cudaError_t k_norm_stats(cudaStream_t s, const kview &x, float2 *part, int nblk) {
  if (nhwc8(x) && x.cs <= 8 * TPB && x.n <= 65535) {
    stats_nhwc8_kernel<<<dim3((unsigned)nblk, (unsigned)x.n), TPB, 0, s>>>(x, part, nblk);
  } else {
    int planes = x.n * x.c;
    stats_generic_kernel<<<dim3((unsigned)nblk, (unsigned)(planes < 65535 ? planes : 65535)), TPB, 0, s>>>(x, part,
                                                                                                          nblk);
  }
  return cudaGetLastError();
}

__global__ void finalize_kernel(kview x, const float2 *part, int nblk, const float *scale, const float *bias,
                                const float *mean, const float *var, const float *fold, float eps, float2 *ab) {
  int64_t total = (int64_t)x.n * x.cs;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int n = (int)(i / x.cs), c = (int)(i % x.cs);
    if (c >= x.c) {
      ab[i] = make_float2(0.0f, 0.0f);
      continue;
    }
    double mu, v;
    if (mean) {
      mu = mean[c];
      v = var[c];
    } else {
      double S = 0.0, Q = 0.0;
      for (int b = 0; b < nblk; b++) {
        float2 p = part[i * nblk + b];
        S += p.x;
        Q += p.y;
      }
      double hw = (double)x.h * (double)x.w;
      double m = S / hw;
      v = Q / hw - m * m;
      if (v < 0.0) v = 0.0;
      mu = (double)ld_el(x.p, kv_index(x, n, c, 0, 0), x.half) + m;
    }
    double rstd = 1.0 / sqrt(v + (double)eps);
    double a = (double)scale[c] * rstd;
    double m2 = fold ? mu - (double)fold[c] : mu;
    ab[i] = make_float2((float)a, (float)((double)bias[c] - m2 * a));
  }
}

cudaError_t k_norm_finalize(cudaStream_t s, const kview &x, const float2 *part, int nblk, const float *scale,
                            const float *bias, const float *mean, const float *var, const float *fold, float eps,
                            float2 *ab) {
  finalize_kernel<<<grid_for((int64_t)x.n * x.cs), TPB, 0, s>>>(x, part, nblk, scale, bias, mean, var, fold, eps, ab);
  return cudaGetLastError();
}

__global__ void apply_generic_kernel(kview x, kview y, const float2 *ab, int act1, float al1, kview r, int has_r,
                                     int act2, float al2) {
  int64_t total = (int64_t)y.n * y.cs * y.h * y.w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int n, c, yy, xx;
    kv_coords(y, i, n, c, yy, xx);
    float v = 0.0f;
    if (c < y.c) {
      float2 p = ab[(int64_t)n * x.cs + c];
      v = act_f(ld_el(x.p, kv_index(x, n, c, yy, xx), x.half) * p.x + p.y, act1, al1);
      if (has_r) v = act_f(v + ld_el(r.p, kv_index(r, n, c, yy, xx), r.half), act2, al2);
    }
    st_el(y.p, kv_index(y, n, c, yy, xx), y.half, v);
  }
}

/* NHWC half, 8 channels per thread (16-byte loads and stores). Padding channels have a = b = 0
 * and a zero residual, so they stay zero. */
__global__ void apply_nhwc8_kernel(kview x, kview y, const float2 *ab, int act1, float al1, kview r, int has_r,
                                   int act2, float al2) {
  int g = y.cs >> 3;
  int64_t total = (int64_t)y.n * y.h * y.w * g;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int cg = (int)(i % g);
    int64_t t = i / g;
    int xx = (int)(t % y.w);
    t /= y.w;
    int yy = (int)(t % y.h), n = (int)(t / y.h);
    uint4 xr = *(const uint4 *)((const __half *)x.p + kv_index(x, n, cg * 8, yy, xx));
    uint4 rr = make_uint4(0, 0, 0, 0);
    if (has_r) rr = *(const uint4 *)((const __half *)r.p + kv_index(r, n, cg * 8, yy, xx));
    const __half2 *xh = (const __half2 *)&xr, *rh = (const __half2 *)&rr;
    const float2 *pab = ab + (int64_t)n * x.cs + cg * 8;
    uint4 out;
    __half2 *oh = (__half2 *)&out;
    for (int k = 0; k < 4; k++) {
      float2 f = __half22float2(xh[k]);
      float2 p0 = __ldg(pab + 2 * k), p1 = __ldg(pab + 2 * k + 1);
      float v0 = act_f(f.x * p0.x + p0.y, act1, al1), v1 = act_f(f.y * p1.x + p1.y, act1, al1);
      if (has_r) {
        float2 rf = __half22float2(rh[k]);
        v0 = act_f(v0 + rf.x, act2, al2);
        v1 = act_f(v1 + rf.y, act2, al2);
      }
      oh[k] = __floats2half2_rn(v0, v1);
    }
    *(uint4 *)((__half *)y.p + kv_index(y, n, cg * 8, yy, xx)) = out;
  }
}

cudaError_t k_norm_apply(cudaStream_t s, const kview &x, const kview &y, const float2 *ab, int act1, float alpha1,
                         const kview &r, int has_r, int act2, float alpha2) {
  if (nhwc8(x) && nhwc8(y) && (!has_r || nhwc8(r))) {
    int64_t total = (int64_t)y.n * y.h * y.w * (y.cs / 8);
    apply_nhwc8_kernel<<<grid_for(total), TPB, 0, s>>>(x, y, ab, act1, alpha1, r, has_r, act2, alpha2);
  } else {
    apply_generic_kernel<<<grid_for(kv_count(y)), TPB, 0, s>>>(x, y, ab, act1, alpha1, r, has_r, act2, alpha2);
  }
  return cudaGetLastError();
}

/* ---- pointwise -------------------------------------------------------------------------------- */

enum { PW_ACT = 0, PW_ADD, PW_TANH, PW_BIAS };

__global__ void pointwise_kernel(int op, kview a, kview b, kview y, int act, float alpha, const float *bias) {
  int64_t total = (int64_t)y.n * y.cs * y.h * y.w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int n, c, yy, xx;
    kv_coords(y, i, n, c, yy, xx);
    float v = 0.0f;
    if (c < y.c) {
      float u = ld_el(a.p, kv_index(a, n, c, yy, xx), a.half);
      switch (op) {
      case PW_ACT: v = act_f(u, act, alpha); break;
      case PW_ADD: v = act_f(u + ld_el(b.p, kv_index(b, n, c, yy, xx), b.half), act, alpha); break;
      case PW_TANH: v = tanhf(bias ? u + bias[c] : u); break;
      default: v = u + bias[c]; break;
      }
    }
    st_el(y.p, kv_index(y, n, c, yy, xx), y.half, v);
  }
}

cudaError_t k_act(cudaStream_t s, const kview &x, const kview &y, int act, float alpha) {
  pointwise_kernel<<<grid_for(kv_count(y)), TPB, 0, s>>>(PW_ACT, x, x, y, act, alpha, NULL);
  return cudaGetLastError();
}

cudaError_t k_add(cudaStream_t s, const kview &a, const kview &b, const kview &y, int act, float alpha) {
  pointwise_kernel<<<grid_for(kv_count(y)), TPB, 0, s>>>(PW_ADD, a, b, y, act, alpha, NULL);
  return cudaGetLastError();
}

cudaError_t k_tanh(cudaStream_t s, const kview &x, const kview &y, const float *bias) {
  pointwise_kernel<<<grid_for(kv_count(y)), TPB, 0, s>>>(PW_TANH, x, x, y, ACT_NONE, 0.0f, bias);
  return cudaGetLastError();
}

cudaError_t k_bias(cudaStream_t s, const kview &x, const kview &y, const float *bias) {
  pointwise_kernel<<<grid_for(kv_count(y)), TPB, 0, s>>>(PW_BIAS, x, x, y, ACT_NONE, 0.0f, bias);
  return cudaGetLastError();
}

/* ---- dropout: Philox4x32-10 exactly as engine/src/rng.c ---------------------------------------- */

__device__ __forceinline__ uint32_t philox_first(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                                 uint32_t k1) {
#pragma unroll
  for (int r = 0; r < 10; r++) {
    if (r) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return c0;
}

__global__ void dropout_kernel(kview x, kview y, uint32_t k0, uint32_t k1, uint32_t c3, uint32_t threshold,
                               float scale) {
  int64_t total = (int64_t)y.n * y.cs * y.h * y.w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int n, c, yy, xx;
    kv_coords(y, i, n, c, yy, xx);
    float v = 0.0f;
    if (c < y.c) {
      uint32_t c2 = ((uint32_t)c & 0xffffu) | (((uint32_t)n & 0xffffu) << 16);
      bool keep = philox_first((uint32_t)xx, (uint32_t)yy, c2, c3, k0, k1) >= threshold;
      v = keep ? ld_el(x.p, kv_index(x, n, c, yy, xx), x.half) * scale : 0.0f;
    }
    st_el(y.p, kv_index(y, n, c, yy, xx), y.half, v);
  }
}

cudaError_t k_dropout(cudaStream_t s, const kview &x, const kview &y, uint64_t seed, uint32_t ordinal, uint64_t step,
                      uint32_t threshold, float scale) {
  uint32_t c3 = (ordinal & 0xffu) | ((uint32_t)(step & 0xffffffu) << 8);
  dropout_kernel<<<grid_for(kv_count(y)), TPB, 0, s>>>(x, y, (uint32_t)seed, (uint32_t)(seed >> 32), c3, threshold,
                                                       scale);
  return cudaGetLastError();
}

/* ---- concat, layout conversions ---------------------------------------------------------------- */

__global__ void concat_kernel(kview src, kview dst, int coff, int cnt) {
  int64_t total = (int64_t)dst.n * cnt * dst.h * dst.w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int n, c, yy, xx;
    if (dst.nhwc) {
      c = (int)(i % cnt);
      int64_t t = i / cnt;
      xx = (int)(t % dst.w);
      t /= dst.w;
      yy = (int)(t % dst.h);
      n = (int)(t / dst.h);
    } else {
      xx = (int)(i % dst.w);
      int64_t t = i / dst.w;
      yy = (int)(t % dst.h);
      t /= dst.h;
      c = (int)(t % cnt);
      n = (int)(t / cnt);
    }
    float v = c < src.c ? ld_el(src.p, kv_index(src, n, c, yy, xx), src.half) : 0.0f;
    st_el(dst.p, kv_index(dst, n, c + coff, yy, xx), dst.half, v);
  }
}

cudaError_t k_concat(cudaStream_t s, const kview &src, const kview &dst, int coff, int zero_tail) {
  int cnt = zero_tail ? dst.cs - coff : src.c;
  if (cnt <= 0) return cudaSuccess;
  concat_kernel<<<grid_for((int64_t)dst.n * cnt * dst.h * dst.w), TPB, 0, s>>>(src, dst, coff, cnt);
  return cudaGetLastError();
}

__global__ void upload_kernel(const float *src, kview d) {
  int64_t total = (int64_t)d.n * d.cs * d.h * d.w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int n, c, y, x;
    kv_coords(d, i, n, c, y, x);
    float v = c < d.c ? src[(((int64_t)n * d.c + c) * d.h + y) * d.w + x] : 0.0f;
    st_el(d.p, kv_index(d, n, c, y, x), d.half, v);
  }
}

cudaError_t k_upload(cudaStream_t s, const float *src, const kview &dst) {
  upload_kernel<<<grid_for(kv_count(dst)), TPB, 0, s>>>(src, dst);
  return cudaGetLastError();
}

__global__ void download_kernel(kview v, float *dst) {
  int64_t total = (int64_t)v.n * v.c * v.h * v.w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int x = (int)(i % v.w);
    int64_t t = i / v.w;
    int y = (int)(t % v.h);
    t /= v.h;
    int c = (int)(t % v.c), n = (int)(t / v.c);
    dst[i] = ld_el(v.p, kv_index(v, n, c, y, x), v.half);
  }
}

cudaError_t k_download(cudaStream_t s, const kview &src, float *dst) {
  download_kernel<<<grid_for((int64_t)src.n * src.c * src.h * src.w), TPB, 0, s>>>(src, dst);
  return cudaGetLastError();
}

/* run.c's reflect_index: numpy 'reflect' for positions past the end, a side of 1 repeats. */
__device__ __forceinline__ int img_reflect(int i, int n) {
  if (i < n) return i;
  if (n == 1) return 0;
  int period = 2 * (n - 1);
  i %= period;
  return i >= n ? period - i : i;
}

__global__ void image_in_kernel(const float *img, int width, int height, int ch, kview d, int n) {
  int64_t total = (int64_t)d.cs * d.h * d.w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int nn, c, y, x;
    kv_coords(d, i, nn, c, y, x);
    float v = 0.0f;
    if (c < d.c && c < 3) {
      int sy = img_reflect(y, height), sx = img_reflect(x, width);
      v = img[((int64_t)sy * width + sx) * ch + c];
      if (ch == 4) {
        if (!(v >= 0.0f)) v = 0.0f;
        if (v > 1.0f) v = 1.0f;
        v = v * 2.0f - 1.0f;
      } else if (isnan(v)) {
        v = 0.0f;
      }
    }
    st_el(d.p, kv_index(d, n, c, y, x), d.half, v);
  }
}

cudaError_t k_image_in(cudaStream_t s, const float *img, int width, int height, int ch, const kview &dst, int n) {
  image_in_kernel<<<grid_for((int64_t)dst.cs * dst.h * dst.w), TPB, 0, s>>>(img, width, height, ch, dst, n);
  return cudaGetLastError();
}

__global__ void image_out_kernel(kview v, int n, const float *in, float *out, int width, int height, int ch,
                                 float strength) {
  int64_t total = (int64_t)width * height;
  for (int64_t pi = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pi < total; pi += (int64_t)gridDim.x * blockDim.x) {
    int y = (int)(pi / width), x = (int)(pi % width);
    for (int c = 0; c < 3; c++) {
      float r = ld_el(v.p, kv_index(v, n, c, y, x), v.half);
      float o = in[pi * ch + c];
      if (ch == 4) {
        r = (r + 1.0f) * 0.5f;
        if (!(o >= 0.0f)) o = 0.0f;
        if (o > 1.0f) o = 1.0f;
      }
      out[pi * ch + c] = strength == 1.0f ? r : o + strength * (r - o);
    }
    if (ch == 4) out[pi * 4 + 3] = in[pi * 4 + 3];
  }
}

cudaError_t k_image_out(cudaStream_t s, const kview &src, int n, const float *in, float *out, int width, int height,
                        int ch, float strength) {
  image_out_kernel<<<grid_for((int64_t)width * height), TPB, 0, s>>>(src, n, in, out, width, height, ch, strength);
  return cudaGetLastError();
}

__global__ void filter_krsc_kernel(const float *w, __half *o, int d0, int d1, int R, int S, int K, int C) {
  int64_t total = (int64_t)K * R * S * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int c = (int)(i % C);
    int64_t t = i / C;
    int sx = (int)(t % S);
    t /= S;
    int r = (int)(t % R), k = (int)(t / R);
    float v = (k < d0 && c < d1) ? w[(((int64_t)k * d1 + c) * R + r) * S + sx] : 0.0f;
    o[i] = __float2half_rn(v);
  }
}

cudaError_t k_filter_krsc(cudaStream_t s, const float *w, __half *o, int d0, int d1, int R, int S, int K, int C) {
  filter_krsc_kernel<<<grid_for((int64_t)K * R * S * C), TPB, 0, s>>>(w, o, d0, d1, R, S, K, C);
  return cudaGetLastError();
}

cudaError_t k_probe_image(void) {
  cudaFuncAttributes a;
  return cudaFuncGetAttributes(&a, (const void *)pointwise_kernel);
}
