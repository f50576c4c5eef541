/* tests/cuda/emu/emu_train_kernels.cc: the training kernels' launchers (cuda_priv.h, "training
 * kernels") as host loops over the bodies the GPU runs (train_bodies.h); the reductions sum in
 * double per group as the kernels do (in a sequential order). Launchers honour the emulated
 * sticky state and EMU_STICKY_AT. */
#include "emu.h"
#include "train_bodies.h"

cudaError_t kt_fill(cudaStream_t, float *p, float v, int64_t n) { LOOP(n, p[i] = v); }

cudaError_t kt_fill_noise(cudaStream_t, float *p, int64_t n) { LOOP(n, p[i] = kbt_noise(i)); }

cudaError_t kt_grad(cudaStream_t, const float *src, float *dst, int64_t n, int acc) {
  LOOP(n, kbt_grad(src, dst, acc, i));
}

cudaError_t kt_copy_channels(cudaStream_t, float *dst, int dst_c, int dst_c0, const float *src, int src_c, int src_c0,
                             int nc, int n, int64_t hw, int acc) {
  LOOP((int64_t)n * nc * hw, kbt_copy_channels(dst, dst_c, dst_c0, src, src_c, src_c0, nc, hw, acc, i));
}

cudaError_t kt_act_backward(cudaStream_t, const float *y, const float *dy, float *dx, int64_t n, int kind, float alpha,
                            int acc) {
  LOOP(n, kbt_act_backward(y, dy, dx, kind, alpha, acc, i));
}

cudaError_t kt_set_key(cudaStream_t, uint64_t *key, uint64_t seed, uint64_t step) {
  LOOP(1, (key[0] = seed, key[1] = step));
}

cudaError_t kt_dropout(cudaStream_t, const float *src, float *dst, int n, int c, int h, int w, const uint64_t *key,
                       uint32_t ordinal, uint32_t threshold, float scale, int acc) {
  LOOP((int64_t)n * c * h * w, kbt_dropout(src, dst, c, h, w, key, ordinal, threshold, scale, acc, i));
}

cudaError_t kt_pad(cudaStream_t, const float *x, float *y, int n, int c, int h, int w, int pt, int pl, int pb, int pr,
                   int mode, float value) {
  int hp = h + pt + pb, wp = w + pl + pr;
  LOOP((int64_t)n * c * hp * wp, kbt_pad(x, y, h, w, pt, pl, hp, wp, mode, value, i));
}

cudaError_t kt_bias(cudaStream_t, float *y, const float *bias, int n, int c, int64_t hw) {
  LOOP((int64_t)n * c * hw, kbt_bias(y, bias, c, (int)hw, i));
}

cudaError_t kt_pad_backward(cudaStream_t, const float *dp, float *dx, int n, int c, int h, int w, int pt, int pl, int pb,
                            int pr, int mode, int acc) {
  LOOP((int64_t)n * c * h * w, kbt_pad_backward(dp, dx, h, w, pt, pl, pb, pr, mode, acc, i));
}

cudaError_t kt_norm_forward(cudaStream_t s, const float *x, float *y, int n, int c, int64_t hw, int batch,
                            const float *scale, const float *bias, float eps, int act, float alpha, float *mean,
                            float *rstd, float *run_mean, float *run_var, float momentum) {
  EMU_DEFER(kt_norm_forward(s, x, y, n, c, hw, batch, scale, bias, eps, act, alpha, mean, rstd, run_mean, run_var,
                            momentum));
  cudaError_t e = emu_launch_check();
  if (e) return e;
  int groups = kbt_groups(n, c, batch);
  int64_t cnt = kbt_group_size(n, hw, batch);
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups; g++) {
    double s = 0, q = 0;
    for (int64_t j = 0; j < cnt; j++) s += (double)x[kbt_group_off(g, j, c, hw, batch)];
    double mu = s / (double)cnt;
    for (int64_t j = 0; j < cnt; j++) {
      double d = (double)x[kbt_group_off(g, j, c, hw, batch)] - mu;
      q += d * d;
    }
    kbt_stats_finish(g, mu, q / (double)cnt, (double)cnt, eps, c, batch, mean, rstd, run_mean, run_var, momentum);
  }
  LOOP((int64_t)n * c * hw, kbt_norm_apply(x, y, c, hw, batch, scale, bias, mean, rstd, act, alpha, i));
}

cudaError_t kt_norm_backward(cudaStream_t s, const float *x, const float *dy, float *dx, int acc, int n, int c,
                             int64_t hw, int batch, const float *scale, const float *bias, const float *mean,
                             const float *rstd, int act, float alpha, float *dscale, float *dbias, float *k) {
  EMU_DEFER(kt_norm_backward(s, x, dy, dx, acc, n, c, hw, batch, scale, bias, mean, rstd, act, alpha, dscale, dbias, k));
  cudaError_t e = emu_launch_check();
  if (e) return e;
  float slope = act == ACT_RELU ? 0.0f : act == ACT_LRELU ? alpha : 1.0f;
  int groups = kbt_groups(n, c, batch);
  int64_t cnt = kbt_group_size(n, hw, batch);
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups; g++) {
    int ci = batch ? g : g % c;
    float mf = mean[g], a = scale[ci] * rstd[g], b = bias[ci] - mf * a;
    double sdz = 0, sdzc = 0;
    for (int64_t j = 0; j < cnt; j++) {
      int64_t o = kbt_group_off(g, j, c, hw, batch);
      float dz = kbt_act_grad(x[o], a, b, dy[o], slope);
      sdz += (double)dz;
      sdzc += (double)(dz * (x[o] - mf));
    }
    kbt_norm_bwd_finish(g, sdz, sdzc, (double)cnt, c, batch, scale, rstd, k);
  }
  if (dscale || dbias)
    for (int ci = 0; ci < c; ci++) kbt_norm_param_grads(ci, n, c, batch, k, dscale, dbias);
  if (!dx) return cudaSuccess;
  LOOP((int64_t)n * c * hw, kbt_norm_dx(x, dy, dx, c, hw, batch, scale, bias, mean, rstd, slope, k, acc, i));
}

cudaError_t kt_channel_sum(cudaStream_t s, const float *dy, int n, int c, int64_t hw, float *out) {
  EMU_DEFER(kt_channel_sum(s, dy, n, c, hw, out));
  cudaError_t e = emu_launch_check();
  if (e) return e;
  for (int ch = 0; ch < c; ch++) {
    double sum = 0;
    for (int64_t j = 0; j < (int64_t)n * hw; j++) sum += (double)dy[kbt_group_off(ch, j, c, hw, 1)];
    out[ch] += (float)sum;
  }
  return cudaSuccess;
}

cudaError_t kt_loss(cudaStream_t s, int kind, const float *x, const float *t, float label, int64_t n, float weight,
                    float *grad, int acc, double *part) {
  EMU_DEFER(kt_loss(s, kind, x, t, label, n, weight, grad, acc, part));
  cudaError_t e = emu_launch_check();
  if (e) return e;
  float scale = n ? weight / (float)n : 0.0f;
  for (int b = 0; b < KT_LOSS_BLOCKS; b++) part[b] = 0;
  for (int64_t i = 0; i < n; i++) part[i % KT_LOSS_BLOCKS] += kbt_loss(kind, x, t, label, scale, grad, acc, i);
  return cudaSuccess;
}

cudaError_t kt_adam(cudaStream_t, float *p, const float *g, float *m, float *v, int64_t n, float step, float bc2s,
                    float b1, float b2, float a1, float a2, float eps) {
  LOOP(n, kbt_adam(p, g, m, v, step, bc2s, b1, b2, a1, a2, eps, i));
}

cudaError_t kt_finite(cudaStream_t s, const float *x, int64_t n, int *flag) {
  EMU_DEFER(kt_finite(s, x, n, flag));
  cudaError_t e = emu_launch_check();
  if (e) return e;
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) *flag = 1;
  return cudaSuccess;
}
