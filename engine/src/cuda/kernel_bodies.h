/* cuda/kernel_bodies.h: the per-element bodies of the module's own kernels, __host__ __device__.
 * kernels.cu wraps each in a grid-stride CUDA kernel; tests/cuda's emulated module runs the same
 * bodies in host loops, so the arithmetic and indexing the GPU executes are what the CPU-side
 * tests check. Only the statistics reductions live in kernels.cu alone (chunking defined here).
 */
#ifndef I2I_CUDA_KERNEL_BODIES_H
#define I2I_CUDA_KERNEL_BODIES_H

#include <math.h>

#include "cuda_priv.h"

#define KB __host__ __device__ __forceinline__

#ifdef __CUDA_ARCH__
#define KB_LDG(p) __ldg(p)
#else
#define KB_LDG(p) (*(p))
#endif

KB float kb_ld(const void *p, int64_t i, int half) {
  return half ? __half2float(((const __half *)p)[i]) : ((const float *)p)[i];
}

KB void kb_st(void *p, int64_t i, int half, float v) {
  if (half)
    ((__half *)p)[i] = __float2half_rn(v);
  else
    ((float *)p)[i] = v;
}

KB float kb_act(float v, int act, float alpha) {
  if (act == ACT_RELU) return v > 0.0f ? v : 0.0f;
  if (act == ACT_LRELU) return v > 0.0f ? v : v * alpha;
  return v;
}

/* Splits a linear index over n x cs x h x w, in the view's memory order, into coordinates. */
KB void kb_coords(const kview &v, int64_t i, int &n, int &c, int &y, int &x) {
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

static inline int64_t kb_count(const kview &v) { return (int64_t)v.n * v.cs * v.h * v.w; }

/* ---- padding ---------------------------------------------------------------------------------- */

static inline int64_t kb_halo_count(const kview &v) {
  return ((int64_t)v.hs * v.ws - (int64_t)v.h * v.w) * v.n * v.cs;
}

/* Halo element i: the border positions of each stored plane are numbered top rows, then the
 * left and right columns of the interior rows, then the bottom rows. */
KB void kb_fill_halo(const kview &v, int pr, int mode, int64_t i) {
  int64_t plane = (int64_t)v.hs * v.ws - (int64_t)v.h * v.w;
  int side = v.pl + pr;
  int64_t top = (int64_t)v.pt * v.ws, mid = (int64_t)v.h * side;
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
    val = kb_ld(v.p, kv_index(v, n, c, sy, sx), v.half);
  }
  kb_st(v.p, kv_index(v, n, c, y, x), v.half, val);
}

KB void kb_pad(const kview &src, const kview &dst, int pt, int pl, int mode, float value, int64_t i) {
  int n, c, y, x;
  kb_coords(dst, i, n, c, y, x);
  float v = 0.0f;
  if (c < src.c) {
    int iy = kv_map(y - pt, src.h, mode), ix = kv_map(x - pl, src.w, mode);
    v = (iy < 0 || ix < 0) ? value : kb_ld(src.p, kv_index(src, n, c, iy, ix), src.half);
  }
  kb_st(dst.p, kv_index(dst, n, c, y, x), dst.half, v);
}

/* ---- normalisation ------------------------------------------------------------------------------ */

/* Statistics are sums of (x - shift) and (x - shift)^2 per (image, channel), shift being the
 * channel's first pixel (keeps the float32 partial sums away from cancellation). Block b of a
 * plane sums pixels [p0, p1); part[(n * cs + c) * nblk + b] = (sum, sum of squares). */
KB void kb_stats_chunk(int64_t hw, int nblk, int b, int64_t &p0, int64_t &p1) {
  int64_t chunk = (hw + nblk - 1) / nblk;
  p0 = b * chunk;
  p1 = p0 + chunk < hw ? p0 + chunk : hw;
}

static inline int kb_nhwc8(const kview &v) { return v.half && v.nhwc && v.cs % 8 == 0; }

/* Blocks per plane: about four blocks per SM over the whole launch, at least ~1024 pixels each. */
static inline int kb_stats_blocks(const kview &x, int sm_count) {
  int64_t hw = (int64_t)x.h * x.w;
  int64_t want = (int64_t)(sm_count > 0 ? sm_count : 80) * 4;
  int64_t planes = kb_nhwc8(x) && x.cs <= 8 * 256 ? x.n : (int64_t)x.n * x.c;
  int64_t nb = (want + planes - 1) / planes;
  int64_t maxb = (hw + 1023) / 1024;
  if (nb > maxb) nb = maxb;
  if (nb < 1) nb = 1;
  if (nb > 1024) nb = 1024;
  return (int)nb;
}

/* ab[i] (i = n * cs + c) from the partial sums or the running statistics, in double. */
KB void kb_finalize(const kview &x, const float2 *part, int nblk, const float *scale, const float *bias,
                    const float *mean, const float *var, const float *fold, float eps, float2 *ab, int64_t i) {
  int n = (int)(i / x.cs), c = (int)(i % x.cs);
  if (c >= x.c) {
    ab[i] = make_float2(0.0f, 0.0f);
    return;
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
    mu = (double)kb_ld(x.p, kv_index(x, n, c, 0, 0), x.half) + m;
  }
  double rstd = 1.0 / sqrt(v + (double)eps);
  double a = (double)scale[c] * rstd;
  double m2 = fold ? mu - (double)fold[c] : mu;
  ab[i] = make_float2((float)a, (float)((double)bias[c] - m2 * a));
}

/* y = act2(act1(x * a + b) + r), one element. */
KB void kb_apply(const kview &x, const kview &y, const float2 *ab, int act1, float al1, const kview &r, int has_r,
                 int act2, float al2, int64_t i) {
  int n, c, yy, xx;
  kb_coords(y, i, n, c, yy, xx);
  float v = 0.0f;
  if (c < y.c) {
    float2 p = ab[(int64_t)n * x.cs + c];
    v = kb_act(kb_ld(x.p, kv_index(x, n, c, yy, xx), x.half) * p.x + p.y, act1, al1);
    if (has_r) v = kb_act(v + kb_ld(r.p, kv_index(r, n, c, yy, xx), r.half), act2, al2);
  }
  kb_st(y.p, kv_index(y, n, c, yy, xx), y.half, v);
}

/* Eight halves as one 16-byte load or store (a union, not a pointer cast: no aliasing UB). */
typedef union {
  uint4 u;
  __half2 h[4];
} kb_h8;

/* The same for NHWC half with cs % 8 == 0: element i is one pixel's group of 8 channels (16-byte
 * loads and stores). Padding channels have a = b = 0 and a zero residual, so they stay zero. */
KB void kb_apply8(const kview &x, const kview &y, const float2 *ab, int act1, float al1, const kview &r, int has_r,
                  int act2, float al2, int64_t i) {
  int g = y.cs >> 3;
  int cg = (int)(i % g);
  int64_t t = i / g;
  int xx = (int)(t % y.w);
  t /= y.w;
  int yy = (int)(t % y.h), n = (int)(t / y.h);
  kb_h8 xr, rr, out;
  xr.u = *(const uint4 *)((const __half *)x.p + kv_index(x, n, cg * 8, yy, xx));
  rr.u = make_uint4(0, 0, 0, 0);
  if (has_r) rr.u = *(const uint4 *)((const __half *)r.p + kv_index(r, n, cg * 8, yy, xx));
  const float2 *pab = ab + (int64_t)n * x.cs + cg * 8;
  for (int k = 0; k < 4; k++) {
    float2 f = __half22float2(xr.h[k]);
    float2 p0 = KB_LDG(pab + 2 * k), p1 = KB_LDG(pab + 2 * k + 1);
    float v0 = kb_act(f.x * p0.x + p0.y, act1, al1), v1 = kb_act(f.y * p1.x + p1.y, act1, al1);
    if (has_r) {
      float2 rf = __half22float2(rr.h[k]);
      v0 = kb_act(v0 + rf.x, act2, al2);
      v1 = kb_act(v1 + rf.y, act2, al2);
    }
    out.h[k] = __floats2half2_rn(v0, v1);
  }
  *(uint4 *)((__half *)y.p + kv_index(y, n, cg * 8, yy, xx)) = out.u;
}

/* ---- pointwise ---------------------------------------------------------------------------------- */

enum { PW_ACT = 0, PW_ADD, PW_TANH, PW_BIAS };

KB void kb_pointwise(int op, const kview &a, const kview &b, const kview &y, int act, float alpha, const float *bias,
                     int64_t i) {
  int n, c, yy, xx;
  kb_coords(y, i, n, c, yy, xx);
  float v = 0.0f;
  if (c < y.c) {
    float u = kb_ld(a.p, kv_index(a, n, c, yy, xx), a.half);
    switch (op) {
    case PW_ACT: v = kb_act(u, act, alpha); break;
    case PW_ADD: v = kb_act(u + kb_ld(b.p, kv_index(b, n, c, yy, xx), b.half), act, alpha); break;
    case PW_TANH: v = tanhf(bias ? u + bias[c] : u); break;
    default: v = u + bias[c]; break;
    }
  }
  kb_st(y.p, kv_index(y, n, c, yy, xx), y.half, v);
}

/* Philox4x32-10 exactly as engine/src/rng.c; returns the first output word. */
KB uint32_t kb_philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; r++) {
    if (r) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
  }
  return c0;
}

/* Dropout at inference: counter (x, y, channel, ordinal | step << 8), key = seed; the image's
 * place in the batch is not part of it (design.md: only training counts it), as on the CPU. */
KB void kb_dropout(const kview &x, const kview &y, uint32_t k0, uint32_t k1, uint32_t c3, uint32_t threshold,
                   float scale, int64_t i) {
  int n, c, yy, xx;
  kb_coords(y, i, n, c, yy, xx);
  float v = 0.0f;
  if (c < y.c) {
    uint32_t c2 = (uint32_t)c & 0xffffu;
    bool keep = kb_philox((uint32_t)xx, (uint32_t)yy, c2, c3, k0, k1) >= threshold;
    v = keep ? kb_ld(x.p, kv_index(x, n, c, yy, xx), x.half) * scale : 0.0f;
  }
  kb_st(y.p, kv_index(y, n, c, yy, xx), y.half, v);
}

/* ---- concat and conversions ---------------------------------------------------------------------- */

KB void kb_concat(const kview &src, const kview &dst, int coff, int cnt, int act, float alpha, int64_t i) {
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
  float v = c < src.c ? kb_act(kb_ld(src.p, kv_index(src, n, c, yy, xx), src.half), act, alpha) : 0.0f;
  kb_st(dst.p, kv_index(dst, n, c + coff, yy, xx), dst.half, v);
}

/* Packed NCHW float32 into the view, element i of the view. */
KB void kb_upload(const float *src, const kview &d, int64_t i) {
  int n, c, y, x;
  kb_coords(d, i, n, c, y, x);
  float v = c < d.c ? src[(((int64_t)n * d.c + c) * d.h + y) * d.w + x] : 0.0f;
  kb_st(d.p, kv_index(d, n, c, y, x), d.half, v);
}

/* Element i of the packed NCHW float32 output (logical channels). */
KB void kb_download(const kview &v, float *dst, int64_t i) {
  int x = (int)(i % v.w);
  int64_t t = i / v.w;
  int y = (int)(t % v.h);
  t /= v.h;
  int c = (int)(t % v.c), n = (int)(t / v.c);
  dst[i] = kb_ld(v.p, kv_index(v, n, c, y, x), v.half);
}

/* run.c's reflect_index: numpy 'reflect' for positions past the end; a side of 1 repeats. */
KB int kb_img_reflect(int i, int n) {
  if (i < n) return i;
  if (n == 1) return 0;
  int period = 2 * (n - 1);
  i %= period;
  return i >= n ? period - i : i;
}

/* Element i (over cs x h x w) of image n of d from one caller image. */
KB void kb_image_in(const float *img, int width, int height, int ch, const kview &d, int n, int64_t i) {
  int nn, c, y, x;
  kb_coords(d, i, nn, c, y, x);
  float v = 0.0f;
  if (c < d.c && c < 3) {
    int sy = kb_img_reflect(y, height), sx = kb_img_reflect(x, width);
    v = img[((int64_t)sy * width + sx) * ch + c];
    if (ch == 4) {
      if (!(v >= 0.0f)) v = 0.0f;
      if (v > 1.0f) v = 1.0f;
      v = v * 2.0f - 1.0f;
    } else if (v != v) {
      v = 0.0f;
    }
  }
  kb_st(d.p, kv_index(d, n, c, y, x), d.half, v);
}

/* Pixel pi of image n: crop, map to [0,1] (RGBA), blend by strength, copy alpha. */
KB void kb_image_out(const kview &v, int n, const float *in, float *out, int width, int ch, float strength,
                     int64_t pi) {
  int y = (int)(pi / width), x = (int)(pi % width);
  for (int c = 0; c < 3; c++) {
    float r = kb_ld(v.p, kv_index(v, n, c, y, x), v.half);
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

/* fp32 [d0][d1][R][S] -> half KRSC [K][R][S][C], zero padded; element i of the output. */
KB void kb_filter_krsc(const float *w, __half *o, int d0, int d1, int R, int S, int C, int64_t i) {
  int c = (int)(i % C);
  int64_t t = i / C;
  int sx = (int)(t % S);
  t /= S;
  int r = (int)(t % R), k = (int)(t / R);
  float v = (k < d0 && c < d1) ? w[(((int64_t)k * d1 + c) * R + r) * S + sx] : 0.0f;
  o[i] = __float2half_rn(v);
}

#endif
