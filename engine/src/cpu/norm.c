/* cpu/norm.c: instance and batch normalisation on the CPU, with a fused activation.
 *
 * Statistics are per channel of one image (instance statistics, which equal BatchNorm's batch
 * statistics for one image): mean and biased variance in double precision, two passes. With
 * running statistics given, the eval-mode affine map is applied instead.
 */
#include <math.h>

#include "cpu.h"

/* Sums in double over 8 independent lanes: a fixed order whatever the instruction set, so
 * deterministic, and vectorisable (one running sum would wait on each addition in turn). */
#define LANES 8
static inline double lanes_total(const double *l) {
  double t = 0;
  for (int j = 0; j < LANES; j++) t += l[j];
  return t;
}

/* acc[k % LANES] += x[k] for the hw values of one plane. */
static inline void lanes_add(const float *x, size_t hw, double *acc) {
  size_t body = hw / LANES * LANES;
  for (size_t k = 0; k < body; k += LANES)
    for (int j = 0; j < LANES; j++) acc[j] += x[k + (size_t)j];
  for (size_t k = body; k < hw; k++) acc[k % LANES] += x[k];
}

/* acc[k % LANES] += (x[k] - mu)^2 for the hw values of one plane. */
static inline void lanes_add_sq(const float *x, size_t hw, double mu, double *acc) {
  size_t body = hw / LANES * LANES;
  for (size_t k = 0; k < body; k += LANES)
    for (int j = 0; j < LANES; j++) {
      double d = (double)x[k + (size_t)j] - mu;
      acc[j] += d * d;
    }
  for (size_t k = body; k < hw; k++) {
    double d = (double)x[k] - mu;
    acc[k % LANES] += d * d;
  }
}

/* The activation fused after a norm or an Add (the same operations as pointwise.c's). */
static inline float act_apply(float t, int act, float alpha) {
  if (act == ACT_RELU) return t > 0 ? t : 0.0f;
  if (act == ACT_LRELU) return t > 0 ? t : t * alpha;
  return t;
}

HOT_CLONES void cpu_norm_forward(const float *x, float *y, int c, size_t hw, const float *scale, const float *bias,
                                 const float *mean, const float *var, float eps, int act, float alpha,
                                 const float *res, int act2, float alpha2, int threads) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int ci = 0; ci < c; ci++) {
    const float *xc = x + (size_t)ci * hw;
    float *yc = y + (size_t)ci * hw;
    double mu, v;
    if (mean) {
      mu = mean[ci];
      v = var[ci];
    } else {
      double acc[LANES] = {0};
      lanes_add(xc, hw, acc);
      mu = lanes_total(acc) / (double)hw;
      for (int j = 0; j < LANES; j++) acc[j] = 0;
      lanes_add_sq(xc, hw, mu, acc);
      v = lanes_total(acc) / (double)hw;
    }
    double rstd = 1.0 / sqrt(v + (double)eps);
    float a = (float)(scale[ci] * rstd), b = (float)(bias[ci] - mu * scale[ci] * rstd);
    if (res) {
      /* the residual Add's own pass (pointwise.c's cpu_add_forward), same operations */
      const float *rc = res + (size_t)ci * hw;
      for (size_t i = 0; i < hw; i++) yc[i] = act_apply(rc[i] + act_apply(xc[i] * a + b, act, alpha), act2, alpha2);
    } else if (act == ACT_RELU) {
      for (size_t i = 0; i < hw; i++) {
        float t = xc[i] * a + b;
        yc[i] = t > 0 ? t : 0;
      }
    } else if (act == ACT_LRELU) {
      for (size_t i = 0; i < hw; i++) {
        float t = xc[i] * a + b;
        yc[i] = t > 0 ? t : t * alpha;
      }
    } else {
      for (size_t i = 0; i < hw; i++) yc[i] = xc[i] * a + b;
    }
  }
}

/* ---- training ------------------------------------------------------------------------------
 * The training forward takes statistics over a whole batch of n images per channel (BatchNorm
 * in training: batch statistics over N, H, W) or per image and channel (InstanceNorm), keeps the
 * mean and 1/sqrt(var + eps) for the backward, and updates running statistics as PyTorch does
 * (momentum, unbiased variance, double arithmetic). The backward recomputes the normalised input
 * and the pre-activation from x and those statistics (so only x is kept), applies the fused
 * activation's derivative and returns dx, dscale and dbias. */

typedef struct {
  int n, c;
  size_t hw;
  bool batch;
} norm_shape;

/* The k-th of the `count` planes of group (image i, channel ci) or, with batch statistics,
 * channel ci over the batch. */
static inline size_t plane_off(const norm_shape *s, int i, int ci) { return ((size_t)i * (size_t)s->c + (size_t)ci) * s->hw; }

/* The affine map the forward applies: z = x * a + b, from the stored float statistics. */
static inline void norm_affine(const float *scale, const float *bias, float mean, float rstd, int ci, float *a, float *b) {
  *a = scale[ci] * rstd;
  *b = bias[ci] - mean * *a;
}

HOT_CLONES void cpu_norm_train_forward(const float *x, float *y, int n, int c, size_t hw, bool batch, const float *scale,
                            const float *bias, float eps, int act, float alpha, float *mean, float *rstd, float *run_mean,
                            float *run_var, float momentum, int threads) {
  norm_shape s = {n, c, hw, batch};
  int groups = batch ? c : n * c;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int gi = 0; gi < groups; gi++) {
    int ci = batch ? gi : gi % c, i0 = batch ? 0 : gi / c, i1 = batch ? n : gi / c + 1;
    double acc[LANES] = {0}, cnt = (double)(i1 - i0) * (double)hw;
    for (int i = i0; i < i1; i++) lanes_add(x + plane_off(&s, i, ci), hw, acc);
    double mu = lanes_total(acc) / cnt;
    for (int j = 0; j < LANES; j++) acc[j] = 0;
    for (int i = i0; i < i1; i++) lanes_add_sq(x + plane_off(&s, i, ci), hw, mu, acc);
    double var = lanes_total(acc) / cnt;
    float mf = (float)mu, rf = (float)(1.0 / sqrt(var + (double)eps));
    mean[gi] = mf;
    rstd[gi] = rf;
    if (run_mean && run_var) {
      double m = momentum, unb = cnt > 1 ? var * cnt / (cnt - 1) : var;
      run_mean[ci] = (float)(m * mu + (1.0 - m) * (double)run_mean[ci]);
      run_var[ci] = (float)(m * unb + (1.0 - m) * (double)run_var[ci]);
    }
    float a, b;
    norm_affine(scale, bias, mf, rf, ci, &a, &b);
    for (int i = i0; i < i1; i++) {
      const float *xc = x + plane_off(&s, i, ci);
      float *yc = y + plane_off(&s, i, ci);
      for (size_t k = 0; k < hw; k++) yc[k] = act_apply(xc[k] * a + b, act, alpha);
    }
  }
}

/* dz = dy times the fused activation's derivative at z = x * a + b (the forward's own formula):
 * 1 above zero, `slope` below (0 ReLU, alpha LeakyReLU, 1 none). Branch-free, so it vectorises. */
static inline float act_grad(float x, float a, float b, float g, float slope) {
  float above = (float)(x * a + b > 0);
  return g * (slope + (1.0f - slope) * above);
}

void cpu_norm_backward(const float *x, const float *dy, float *dx, bool accumulate, int n, int c, size_t hw, bool batch,
                       const float *scale, const float *bias, const float *mean, const float *rstd, int act, float alpha,
                       float *dscale, float *dbias, int threads) {
  norm_shape s = {n, c, hw, batch};
  const float slope = act == ACT_RELU ? 0.0f : act == ACT_LRELU ? alpha : 1.0f;
  /* one thread per channel; with instance statistics it walks the images of that channel, so
   * the per-channel dscale / dbias sums need no atomics and keep a fixed order. Sums of dz and
   * dz * (x - mean) run in double over float products (vectorisable); x-hat = (x - mean) rstd. */
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int ci = 0; ci < c; ci++) {
    double ds_total = 0, db_total = 0;
    int ngroups = batch ? 1 : n;
    for (int gq = 0; gq < ngroups; gq++) {
      int gi = batch ? ci : gq * c + ci, i0 = batch ? 0 : gq, i1 = batch ? n : gq + 1;
      float mf = mean[gi], rf = rstd[gi], a, b;
      norm_affine(scale, bias, mf, rf, ci, &a, &b);
      double sdz = 0, sdzc = 0, cnt = (double)(i1 - i0) * (double)hw;
      for (int i = i0; i < i1; i++) {
        const float *xc = x + plane_off(&s, i, ci), *gc = dy + plane_off(&s, i, ci);
        /* the compiler's vector lanes give a fixed summation order: deterministic */
#pragma omp simd reduction(+ : sdz, sdzc)
        for (size_t k = 0; k < hw; k++) {
          float g = act_grad(xc[k], a, b, gc[k], slope);
          sdz += (double)g;
          sdzc += (double)(g * (xc[k] - mf));
        }
      }
      double sdzx = sdzc * (double)rf;
      ds_total += sdzx;
      db_total += sdz;
      if (!dx) continue;
      /* dx = scale rstd (dz - mean(dz) - x-hat mean(dz x-hat)) = k0 dz + k1 + k2 (x - mean) */
      float k0 = (float)((double)scale[ci] * (double)rf), k1 = (float)(-(double)k0 * sdz / cnt),
            k2 = (float)(-(double)k0 * sdzx / cnt * (double)rf);
      for (int i = i0; i < i1; i++) {
        const float *xc = x + plane_off(&s, i, ci), *gc = dy + plane_off(&s, i, ci);
        float *dc = dx + plane_off(&s, i, ci);
        if (accumulate)
          for (size_t k = 0; k < hw; k++) dc[k] += k0 * act_grad(xc[k], a, b, gc[k], slope) + k1 + k2 * (xc[k] - mf);
        else
          for (size_t k = 0; k < hw; k++) dc[k] = k0 * act_grad(xc[k], a, b, gc[k], slope) + k1 + k2 * (xc[k] - mf);
      }
    }
    if (dscale) dscale[ci] += (float)ds_total;
    if (dbias) dbias[ci] += (float)db_total;
  }
}
