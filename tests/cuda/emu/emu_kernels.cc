/* tests/cuda/emu/emu_kernels.cc: the module's kernel launchers (cuda_priv.h) as host loops
 * over the same per-element bodies the GPU runs (kernel_bodies.h); the statistics follow the
 * kernels' chunking and partial-sum layout. Launchers honour the emulated sticky state and
 * EMU_STICKY_AT; k_fault raises an emulated illegal-address fault. */
#include "emu.h"
#include "kernel_bodies.h"

void k_set_grid_cap(int) {}

cudaError_t k_fill_halo(cudaStream_t, const kview &v, int pr, int mode) {
  LOOP(kb_halo_count(v), kb_fill_halo(v, pr, mode, i));
}

cudaError_t k_pad(cudaStream_t, const kview &src, const kview &dst, int pt, int pl, int mode, float value) {
  LOOP(kb_count(dst), kb_pad(src, dst, pt, pl, mode, value, i));
}

int k_stats_blocks(const kview &x, int sm_count) { return kb_stats_blocks(x, sm_count); }

cudaError_t k_norm_stats(cudaStream_t s, const kview &x, float2 *part, int nblk) {
  EMU_DEFER(k_norm_stats(s, x, part, nblk));
  cudaError_t e = emu_launch_check();
  if (e) return e;
  int64_t hw = (int64_t)x.h * x.w;
#pragma omp parallel for schedule(static)
  for (int nc = 0; nc < x.n * x.c; nc++) {
    int n = nc / x.c, c = nc % x.c;
    float shift = kb_ld(x.p, kv_index(x, n, c, 0, 0), x.half);
    for (int b = 0; b < nblk; b++) {
      int64_t p0, p1;
      kb_stats_chunk(hw, nblk, b, p0, p1);
      float s = 0.0f, q = 0.0f;
      for (int64_t p = p0; p < p1; p++) {
        float d = kb_ld(x.p, kv_index(x, n, c, (int)(p / x.w), (int)(p % x.w)), x.half) - shift;
        s += d;
        q += d * d;
      }
      part[((int64_t)n * x.cs + c) * nblk + b] = make_float2(s, q);
    }
  }
  return cudaSuccess;
}

cudaError_t k_norm_finalize(cudaStream_t, const kview &x, const float2 *part, int nblk, const float *scale,
                            const float *bias, const float *mean, const float *var, const float *fold, float eps,
                            float2 *ab) {
  LOOP((int64_t)x.n * x.cs, kb_finalize(x, part, nblk, scale, bias, mean, var, fold, eps, ab, i));
}

cudaError_t k_norm_apply(cudaStream_t, const kview &x, const kview &y, const float2 *ab, int act1, float alpha1,
                         const kview &r, int has_r, int act2, float alpha2) {
  if (kb_nhwc8(x) && kb_nhwc8(y) && (!has_r || kb_nhwc8(r)))
    LOOP((int64_t)y.n * y.h * y.w * (y.cs / 8), kb_apply8(x, y, ab, act1, alpha1, r, has_r, act2, alpha2, i));
  LOOP(kb_count(y), kb_apply(x, y, ab, act1, alpha1, r, has_r, act2, alpha2, i));
}

cudaError_t k_act(cudaStream_t, const kview &x, const kview &y, int act, float alpha) {
  LOOP(kb_count(y), kb_pointwise(PW_ACT, x, x, y, act, alpha, NULL, i));
}

cudaError_t k_add(cudaStream_t, const kview &a, const kview &b, const kview &y, int act, float alpha) {
  LOOP(kb_count(y), kb_pointwise(PW_ADD, a, b, y, act, alpha, NULL, i));
}

cudaError_t k_tanh(cudaStream_t, const kview &x, const kview &y, const float *bias) {
  LOOP(kb_count(y), kb_pointwise(PW_TANH, x, x, y, ACT_NONE, 0.0f, bias, i));
}

cudaError_t k_bias(cudaStream_t, const kview &x, const kview &y, const float *bias) {
  LOOP(kb_count(y), kb_pointwise(PW_BIAS, x, x, y, ACT_NONE, 0.0f, bias, i));
}

cudaError_t k_dropout(cudaStream_t, const kview &x, const kview &y, uint64_t seed, uint32_t ordinal, uint64_t step,
                      uint32_t threshold, float scale) {
  uint32_t c3 = (ordinal & 0xffu) | ((uint32_t)(step & 0xffffffu) << 8);
  LOOP(kb_count(y), kb_dropout(x, y, (uint32_t)seed, (uint32_t)(seed >> 32), c3, threshold, scale, i));
}

cudaError_t k_concat(cudaStream_t s, const kview &src, const kview &dst, int coff, int zero_tail, int act, float alpha) {
  EMU_DEFER(k_concat(s, src, dst, coff, zero_tail, act, alpha));
  int cnt = zero_tail ? dst.cs - coff : src.c;
  if (cnt <= 0) return emu_launch_check();
  LOOP((int64_t)dst.n * cnt * dst.h * dst.w, kb_concat(src, dst, coff, cnt, act, alpha, i));
}

cudaError_t k_upload(cudaStream_t, const float *src, const kview &dst) { LOOP(kb_count(dst), kb_upload(src, dst, i)); }

cudaError_t k_download(cudaStream_t, const kview &src, float *dst) {
  LOOP((int64_t)src.n * src.c * src.h * src.w, kb_download(src, dst, i));
}

cudaError_t k_image_in(cudaStream_t, const float *img, int width, int height, int ch, const kview &dst, int n) {
  LOOP((int64_t)dst.cs * dst.h * dst.w, kb_image_in(img, width, height, ch, dst, n, i));
}

cudaError_t k_image_out(cudaStream_t, const kview &src, int n, const float *in, float *out, int width, int height,
                        int ch, float strength) {
  LOOP((int64_t)width * height, kb_image_out(src, n, in, out, width, ch, strength, i));
}

cudaError_t k_filter_krsc(cudaStream_t, const float *w, __half *o, int d0, int d1, int R, int S, int K, int C) {
  LOOP((int64_t)K * R * S * C, kb_filter_krsc(w, o, d0, d1, R, S, C, i));
}

/* thin_conv.cu's convolution as a plain float-accumulated loop (its mma.sync kernels themselves
 * run in test_thin_simt's warp emulator, and on a GPU in tests/gpu/run's op-by-op parity). */
static void thin_one(const conv_geom_d &g, const __half *x, const __half *w, __half *y, int64_t i) {
  int k = (int)(i % g.yc);
  int64_t p = i / g.yc;
  int ox = (int)(p % g.yw), oy = (int)(p / g.yw % g.yh), n = (int)(p / g.yw / g.yh);
  float acc = 0.0f;
  for (int r = 0; r < g.kh; r++)
    for (int s = 0; s < g.kw; s++) {
      const __half *xp = x + (((int64_t)n * g.xh + oy + r) * g.xw + ox + s) * g.xc;
      const __half *wp = w + (((int64_t)k * g.kh + r) * g.kw + s) * g.xc;
      for (int c = 0; c < g.xc; c++) acc += __half2float(xp[c]) * __half2float(wp[c]);
    }
  y[i] = __float2half_rn(acc);
}

cudaError_t k_conv_thin(cudaStream_t, const conv_geom_d &g, const __half *x, const __half *w, __half *y) {
  LOOP((int64_t)g.n * g.yh * g.yw * g.yc, thin_one(g, x, w, y, i));
}

cudaError_t k_probe_image(void) {
  return getenv("EMU_NO_IMAGE") ? cudaErrorNoKernelImageForDevice : cudaSuccess;
}

cudaError_t k_fault(cudaStream_t s) {
  EMU_DEFER(k_fault(s));
  emu_set_sticky(cudaErrorIllegalAddress);
  return cudaErrorIllegalAddress;
}
