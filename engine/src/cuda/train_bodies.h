/* cuda/train_bodies.h: the per-element bodies of the training kernels, __host__ __device__, over
 * plain NCHW float32 tensors. train_kernels.cu wraps them in grid-stride kernels and adds the
 * reductions; tests/cuda's emulated module runs the same bodies in host loops. The arithmetic
 * follows the CPU backend (cpu/norm.c, pointwise.c, loss.c, adam.c) formula for formula, so the
 * two backends differ by summation order only.
 */
#ifndef I2I_CUDA_TRAIN_BODIES_H
#define I2I_CUDA_TRAIN_BODIES_H

#include "kernel_bodies.h"

/* Normalisation groups: with batch statistics group g is channel g over every image, else it
 * is plane g (image g / c, channel g % c). Element j of a group, at its offset in x. */
KB int64_t kbt_group_off(int g, int64_t j, int c, int64_t hw, int batch) {
  if (!batch) return (int64_t)g * hw + j;
  return ((j / hw) * c + g) * hw + j % hw;
}
static inline int kbt_groups(int n, int c, int batch) { return batch ? c : n * c; }
KB int64_t kbt_group_size(int n, int64_t hw, int batch) { return batch ? (int64_t)n * hw : hw; }

KB void kbt_grad(const float *src, float *dst, int acc, int64_t i) { dst[i] = acc ? dst[i] + src[i] : src[i]; }

/* A fixed pseudo-random value in [-1, 1) for element i: what algorithm searches run on, since
 * zeros can time faster than real data. */
KB float kbt_noise(int64_t i) {
  uint32_t h = (uint32_t)i * 0x9e3779b1u ^ (uint32_t)((uint64_t)i >> 32);
  h ^= h >> 15;
  h *= 0x2c1b3c6du;
  h ^= h >> 12;
  h *= 0x297a2d39u;
  h ^= h >> 15;
  return (float)(h >> 8) * (1.0f / 8388608.0f) - 1.0f;
}

/* dst[img][dst_c0 + k] (+)= src[img][src_c0 + k], element i of nc x hw per image. */
KB void kbt_copy_channels(float *dst, int dst_c, int dst_c0, const float *src, int src_c, int src_c0, int nc,
                          int64_t hw, int acc, int64_t i) {
  int64_t per = (int64_t)nc * hw, img = i / per, r = i % per;
  int64_t so = (img * src_c + src_c0) * hw + r, d = (img * dst_c + dst_c0) * hw + r;
  dst[d] = acc ? dst[d] + src[so] : src[so];
}

/* dx (+)= dy times the activation's derivative, from its output y. */
KB void kbt_act_backward(const float *y, const float *dy, float *dx, int kind, float alpha, int acc, int64_t i) {
  float g;
  if (kind == KT_TANH) g = dy[i] * (1.0f - y[i] * y[i]);
  else g = y[i] > 0.0f ? dy[i] : (kind == KT_LRELU ? dy[i] * alpha : 0.0f);
  dx[i] = acc ? dx[i] + g : g;
}

/* dst (+)= src * scale where the engine's Philox mask (rng.c dropout_keep) keeps the element,
 * else 0: the forward (acc 0) and the backward, which applies the same mask to the gradient. */
KB void kbt_dropout(const float *src, float *dst, int c, int h, int w, const uint64_t *key, uint32_t ordinal,
                    uint32_t threshold, float scale, int acc, int64_t i) {
  uint64_t seed = key[0], step = key[1];
  uint32_t c3 = (ordinal & 0xffu) | ((uint32_t)(step & 0xffffffu) << 8);
  int xx = (int)(i % w);
  int64_t t = i / w;
  int yy = (int)(t % h);
  t /= h;
  int ch = (int)(t % c), img = (int)(t / c);
  uint32_t c2 = ((uint32_t)ch & 0xffffu) | (((uint32_t)img & 0xffffu) << 16);
  float v = kb_philox((uint32_t)xx, (uint32_t)yy, c2, c3, (uint32_t)seed, (uint32_t)(seed >> 32)) >= threshold
                ? src[i] * scale
                : 0.0f;
  dst[i] = acc ? dst[i] + v : v;
}

/* Pad forward, element i of y (planes of hp x wp): x's element (planes of h x w) at the position
 * the pad mode maps to, or `value` outside a constant pad. The index type I is int where the
 * count fits (train_kernels.cu), so the GPU's index arithmetic stays 32-bit. */
template <typename I>
KB void kbt_pad(const float *x, float *y, int h, int w, int pt, int pl, int hp, int wp, int mode, float value, I i) {
  int px = (int)(i % wp);
  I t = i / wp;
  int py = (int)(t % hp);
  I plane = t / hp;
  int iy = kv_map(py - pt, h, mode), ix = kv_map(px - pl, w, mode);
  y[i] = (iy < 0 || ix < 0) ? value : x[((int64_t)plane * h + iy) * w + ix];
}

/* y[i] += bias[its channel], y (n, c, hw). */
template <typename I> KB void kbt_bias(float *y, const float *bias, int c, int hw, I i) {
  y[i] += bias[(int)((i / hw) % c)];
}

/* Pad backward, element i of dx (n, c, h, w): the sum of dp (n, c, h + pt + pb, w + pl + pr) over
 * the padded positions that read this element (its own, and its reflections or edge copies in
 * the border rows and columns). I as for kbt_pad. */
template <typename I>
KB void kbt_pad_backward(const float *dp, float *dx, int h, int w, int pt, int pl, int pb, int pr, int mode, int acc,
                         I i) {
  int x = (int)(i % w);
  I t = i / w;
  int y = (int)(t % h);
  I plane = t / h;
  int hp = h + pt + pb, wp = w + pl + pr;
  const float *src = dp + (int64_t)plane * hp * wp;
  float s = 0.0f;
  /* rows: the interior row, then the border rows mapping here */
  for (int ry = -1; ry < pt + pb; ry++) {
    int py;
    if (ry < 0) py = y + pt;
    else {
      py = ry < pt ? ry : h + pt + (ry - pt);
      if (mode == PAD_CONSTANT || kv_map(py - pt, h, mode) != y) continue;
    }
    for (int rx = -1; rx < pl + pr; rx++) {
      int px;
      if (rx < 0) px = x + pl;
      else {
        px = rx < pl ? rx : w + pl + (rx - pl);
        if (mode == PAD_CONSTANT || kv_map(px - pl, w, mode) != x) continue;
      }
      s += src[(int64_t)py * wp + px];
    }
  }
  dx[i] = acc ? dx[i] + s : s;
}

/* A group's statistics from its mean and (biased) variance, as cpu_norm_train_forward stores them;
 * the running statistics (momentum, unbiased variance) of its channel when run_mean is set. */
KB void kbt_stats_finish(int g, double mu, double var, double cnt, float eps, int c, int batch, float *mean, float *rstd,
                         float *run_mean, float *run_var, float momentum) {
  mean[g] = (float)mu;
  rstd[g] = (float)(1.0 / sqrt(var + (double)eps));
  if (run_mean && run_var) {
    int ci = batch ? g : g % c;
    double m = momentum, unb = cnt > 1 ? var * cnt / (cnt - 1) : var;
    run_mean[ci] = (float)(m * mu + (1.0 - m) * (double)run_mean[ci]);
    run_var[ci] = (float)(m * unb + (1.0 - m) * (double)run_var[ci]);
  }
}

/* A group's backward constants from sdz = sum dz and sdzc = sum dz (x - mean) (cpu_norm_backward):
 * k0, k1, k2 of dx, then its dscale and dbias terms. */
KB void kbt_norm_bwd_finish(int g, double sdz, double sdzc, double cnt, int c, int batch, const float *scale,
                            const float *rstd, float *k) {
  int ci = batch ? g : g % c;
  double rf = rstd[g], sdzx = sdzc * rf;
  float k0 = (float)((double)scale[ci] * rf);
  k[5 * g] = k0;
  k[5 * g + 1] = (float)(-(double)k0 * sdz / cnt);
  k[5 * g + 2] = (float)(-(double)k0 * sdzx / cnt * rf);
  k[5 * g + 3] = (float)sdzx;
  k[5 * g + 4] = (float)sdz;
}

/* Channel ci's parameter gradients: its groups' terms summed in order, added to dscale / dbias. */
KB void kbt_norm_param_grads(int ci, int n, int c, int batch, const float *k, float *dscale, float *dbias) {
  double ds = 0, db = 0;
  for (int q = 0; q < (batch ? 1 : n); q++) {
    int g = batch ? ci : q * c + ci;
    ds += k[5 * g + 3];
    db += k[5 * g + 4];
  }
  if (dscale) dscale[ci] += (float)ds;
  if (dbias) dbias[ci] += (float)db;
}

/* y = act(x * a + b) with a = scale rstd, b = bias - mean a (cpu/norm.c norm_affine). */
KB void kbt_norm_apply(const float *x, float *y, int c, int64_t hw, int batch, const float *scale, const float *bias,
                       const float *mean, const float *rstd, int act, float alpha, int64_t i) {
  int64_t plane = i / hw;
  int ci = (int)(plane % c), g = batch ? ci : (int)plane;
  float a = scale[ci] * rstd[g], b = bias[ci] - mean[g] * a;
  y[i] = kb_act(x[i] * a + b, act, alpha);
}

/* dz: dy times the fused activation's derivative at z = x a + b (cpu/norm.c act_grad). */
KB float kbt_act_grad(float x, float a, float b, float g, float slope) {
  float above = (float)(x * a + b > 0);
  return g * (slope + (1.0f - slope) * above);
}

/* dx (+)= k0 dz + k1 + k2 (x - mean), the per-group constants in k[5 * group] (then the
 * group's dscale and dbias terms). */
KB void kbt_norm_dx(const float *x, const float *dy, float *dx, int c, int64_t hw, int batch, const float *scale,
                    const float *bias, const float *mean, const float *rstd, float slope, const float *k, int acc,
                    int64_t i) {
  int64_t plane = i / hw;
  int ci = (int)(plane % c), g = batch ? ci : (int)plane;
  float a = scale[ci] * rstd[g], b = bias[ci] - mean[g] * a;
  float v = k[5 * g] * kbt_act_grad(x[i], a, b, dy[i], slope) + k[5 * g + 1] + k[5 * g + 2] * (x[i] - mean[g]);
  dx[i] = acc ? dx[i] + v : v;
}

/* One element of a loss (cpu/loss.c loss_elem, in double): returns the loss, *d its derivative. */
KB double kbt_loss_elem(int kind, double x, double t, double *d) {
  if (kind == LOSS_MSE) {
    *d = 2.0 * (x - t);
    return (x - t) * (x - t);
  }
  if (kind == LOSS_BCE) {
    double mx = -x > 0 ? -x : 0;
    *d = 1.0 / (1.0 + exp(-x)) - t;
    return (1.0 - t) * x + mx + log(exp(-mx) + exp(-x - mx));
  }
  double df = x - t;
  *d = df > 0 ? 1.0 : (df < 0 ? -1.0 : 0.0);
  return fabs(df);
}

/* Element i of a loss: its value (returned) and, with grad, grad (+)= derivative * scale. */
KB double kbt_loss(int kind, const float *x, const float *t, float label, float scale, float *grad, int acc,
                   int64_t i) {
  double d, l = kbt_loss_elem(kind, x[i], t ? t[i] : label, &d);
  if (grad) {
    float v = (float)d * scale;
    grad[i] = acc ? grad[i] + v : v;
  }
  return l;
}

/* Adam (cpu/adam.c): step = lr / bias correction 1, bc2s = sqrt(bias correction 2). */
KB void kbt_adam(float *p, const float *g, float *m, float *v, float step, float bc2s, float b1, float b2, float a1,
                 float a2, float eps, int64_t i) {
  float gi = g[i];
  float mi = m[i] * b1 + gi * a1;
  float vi = v[i] * b2 + gi * gi * a2;
  m[i] = mi;
  v[i] = vi;
  float denom = sqrtf(vi) / bc2s + eps;
  p[i] = p[i] + (-step) * (mi / denom);
}

#endif
