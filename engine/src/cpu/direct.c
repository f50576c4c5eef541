/* cpu/direct.c: a direct convolution for very few output channels (the generators' last
 * 64 -> 3 layer), where a GEMM with three rows wastes most of the machine, or very few input
 * channels (the first 3 -> 64 layer, whose im2col copy costs as much as its GEMM); and the
 * training backward of the first kind. Its data gradient is the second kind of convolution (dY,
 * zero-padded all round, against the flipped weights), and its weight gradient a few dot products
 * per tap over whole planes; as GEMMs both went through a column matrix of c x kh x kw rows per
 * pixel (205 M floats for the last layer at 256x256) with three-long sums.
 *
 * Each output is one sum in a fixed order, the same on any thread count and vector width (no
 * FMA contraction: training's CPU results are checked step by step against PyTorch and the CUDA
 * backend, and fused multiply-adds here moved a CycleGAN gradient there past its limit).
 */
#include <omp.h>
#include <string.h>

#include "cpu.h"

bool cpu_direct_applies(const conv_geom *g) {
  return (g->m <= 4 || (g->c <= 4 && g->sw == 1 && g->dw == 1)) && g->c * g->kh * g->kw >= 64;
}

/* Columns of every output a strip keeps in registers. */
#define STRIP 16

/* A stride-1 row is summed in whole strips, the last one past the row's end into slack that is
 * then dropped: a scalar tail cost the 7x7 layers ~18% at 684 columns (GIMP's working width for a
 * 4:3 photo), more than the 12 columns it covered. */
static bool whole_strips(const conv_geom *g) { return g->sw == 1 && g->dw == 1; }
static int acc_stride(const conv_geom *g) { return whole_strips(g) ? (g->ow + STRIP - 1) / STRIP * STRIP : g->ow; }
static int row_stride(const conv_geom *g) { return g->w + g->pl + g->pr + (acc_stride(g) - g->ow); }

/* Per thread: the m output rows being summed, then the kh padded input rows of one channel. */
size_t cpu_direct_scratch(const conv_geom *g, int threads) {
  size_t row = (size_t)g->m * (size_t)acc_stride(g) + (size_t)g->kh * (size_t)row_stride(g) + 16;
  return row * (size_t)threads;
}

/* 8 floats as one value (GCC vector extension: one AVX2 register; AVX-512 runs them as
 * 256-bit instructions), moved through memcpy (unaligned, no aliasing questions). 64-byte
 * values took two AVX2 registers each, and the 8 accumulators below then spilled on every step:
 * the AVX2 clone ran the 7x7 layers 40x slower (829 ms for the first layer at 256x256, 15 ms on
 * AVX-512). */
typedef float v8 __attribute__((vector_size(32)));

/* acc[o][ox0 .. ox0+STRIP) += the kh x kw stride-1 correlation of the padded rows prow (ps apart)
 * with f[o] (filters fs apart) for the M outputs o: STRIP columns of every output in registers. */
static inline __attribute__((always_inline)) void direct_strip(const int M, const float *prow, size_t ps, int kh,
                                                              int kw, const float *f, size_t fs, float *acc,
                                                              size_t as, int ox0) {
  v8 a[4][2];
#pragma GCC unroll 4
  for (int o = 0; o < M; o++) {
    memcpy(&a[o][0], acc + (size_t)o * as + (size_t)ox0, sizeof a[o][0]);
    memcpy(&a[o][1], acc + (size_t)o * as + (size_t)ox0 + 8, sizeof a[o][1]);
  }
  for (int ky = 0; ky < kh; ky++) {
    const float *src = prow + (size_t)ky * ps + (size_t)ox0;
    for (int kx = 0; kx < kw; kx++) {
      v8 x0, x1;
      memcpy(&x0, src + kx, sizeof x0);
      memcpy(&x1, src + kx + 8, sizeof x1);
#pragma GCC unroll 4
      for (int o = 0; o < M; o++) {
        float wv = f[(size_t)o * fs + (size_t)(ky * kw + kx)];
        a[o][0] += wv * x0;
        a[o][1] += wv * x1;
      }
    }
  }
#pragma GCC unroll 4
  for (int o = 0; o < M; o++) {
    memcpy(acc + (size_t)o * as + (size_t)ox0, &a[o][0], sizeof a[o][0]);
    memcpy(acc + (size_t)o * as + (size_t)ox0 + 8, &a[o][1], sizeof a[o][1]);
  }
}

/* One channel's contribution to the m output rows acc (as apart) from its kh padded rows (ps
 * apart), four outputs at a time: whole strips for stride 1 (see whole_strips), else a scalar loop. */
static inline __attribute__((always_inline)) void direct_channel(const conv_geom *g, const float *prow, size_t ps,
                                                                const float *f, size_t fs, float *acc, size_t as) {
  const int m = g->m, ow = g->ow, kh = g->kh, kw = g->kw;
  if (whole_strips(g)) {
    for (int o0 = 0; o0 < m; o0 += 4) {
      const float *fo = f + (size_t)o0 * fs;
      float *ao = acc + (size_t)o0 * as;
      for (int ox0 = 0; ox0 < ow; ox0 += STRIP) switch (m - o0) {
        case 1: direct_strip(1, prow, ps, kh, kw, fo, fs, ao, as, ox0); break;
        case 2: direct_strip(2, prow, ps, kh, kw, fo, fs, ao, as, ox0); break;
        case 3: direct_strip(3, prow, ps, kh, kw, fo, fs, ao, as, ox0); break;
        default: direct_strip(4, prow, ps, kh, kw, fo, fs, ao, as, ox0); break;
        }
    }
    return;
  }
  for (int o = 0; o < m; o++) {
    float *a = acc + (size_t)o * as;
    for (int ky = 0; ky < kh; ky++)
      for (int kx = 0; kx < kw; kx++) {
        float wv = f[(size_t)o * fs + (size_t)(ky * kw + kx)];
        const float *src = prow + (size_t)ky * ps + (size_t)(kx * g->dw);
        for (int ox = 0; ox < ow; ox++) a[ox] += wv * src[(size_t)ox * (size_t)g->sw];
      }
  }
}

/* pr[0 .. pl + w + pr) = the input row `row` with g's left and right padding. */
static inline void pad_row(const conv_geom *g, const float *row, float *pr) {
  for (int px = 0; px < g->pl; px++) {
    int ix = map_index(px - g->pl, g->w, g->pad_mode);
    pr[px] = ix < 0 ? 0.0f : row[ix];
  }
  memcpy(pr + g->pl, row, sizeof(float) * (size_t)g->w);
  for (int px = g->pl + g->w; px < g->pl + g->w + g->pr; px++) {
    int ix = map_index(px - g->pl, g->w, g->pad_mode);
    pr[px] = ix < 0 ? 0.0f : row[ix];
  }
}

HOT_CLONES int cpu_conv_direct(const conv_geom *g, const float *x, const float *w, const float *bias, float *y,
                               float *scratch, int threads) {
  const int pw = g->w + g->pl + g->pr, ps = row_stride(g);
  const size_t per = cpu_direct_scratch(g, 1), ohw = (size_t)g->oh * (size_t)g->ow, as = (size_t)acc_stride(g);
  const size_t fs = (size_t)g->c * (size_t)g->kh * (size_t)g->kw;
  /* contiguous blocks of rows per thread: neighbouring rows share kh - 1 input rows in cache */
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int oy = 0; oy < g->oh; oy++) {
    float *acc = scratch + per * (size_t)omp_get_thread_num();
    float *prow = acc + (size_t)g->m * as;
    for (int o = 0; o < g->m; o++)
      for (size_t ox = 0; ox < as; ox++) acc[(size_t)o * as + ox] = bias ? bias[o] : 0.0f;
    for (int c = 0; c < g->c; c++) {
      const float *xc = x + (size_t)c * (size_t)g->h * (size_t)g->w;
      for (int ky = 0; ky < g->kh; ky++) {
        float *pr = prow + (size_t)ky * (size_t)ps;
        int iy = map_index(oy * g->sh - g->pt + ky * g->dh, g->h, g->pad_mode);
        if (iy < 0) {
          memset(pr, 0, sizeof(float) * (size_t)ps);
          continue;
        }
        pad_row(g, xc + (size_t)iy * (size_t)g->w, pr);
        memset(pr + pw, 0, sizeof(float) * (size_t)(ps - pw)); /* the last strip's slack */
      }
      direct_channel(g, prow, (size_t)ps, w + (size_t)c * (size_t)g->kh * (size_t)g->kw, fs, acc, as);
    }
    for (int o = 0; o < g->m; o++)
      memcpy(y + (size_t)o * ohw + (size_t)oy * (size_t)g->ow, acc + (size_t)o * as, sizeof(float) * (size_t)g->ow);
  }
  return 1;
}

/* ---- backward (training) -------------------------------------------------------------------- */

bool cpu_direct_backward_applies(const conv_geom *g) {
  return g->m <= 4 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 && g->kw <= 8;
}

/* The convolution whose output is the data gradient of g over its padded input: dY (m planes)
 * zero-padded by kh - 1 and kw - 1 all round, against w^T flipped, to c planes of the padded size. */
static conv_geom data_dual(const conv_geom *g) {
  conv_geom d = {g->m, g->oh, g->ow, g->c, g->h + g->pt + g->pb, g->w + g->pl + g->pr, g->kh, g->kw, 1, 1, 1, 1,
                 g->kh - 1, g->kw - 1, g->kh - 1, g->kw - 1, PAD_CONSTANT, 0, 0, NULL, NULL};
  return d;
}

size_t cpu_direct_backward_scratch(const conv_geom *g, int threads) {
  conv_geom d = data_dual(g);
  size_t plane = (size_t)d.oh * (size_t)d.ow; /* one padded input plane */
  size_t wt = (size_t)g->m * (size_t)g->c * (size_t)g->kh * (size_t)g->kw;
  /* data: the padded gradient of every channel, the flipped weights, the direct kernel's rows;
   * weights: a padded input plane per thread */
  size_t data = plane * (size_t)g->c + wt + cpu_direct_scratch(&d, threads), weights = plane * (size_t)threads;
  return data > weights ? data : weights;
}

void cpu_conv_backward_data_direct(const conv_geom *g, const float *dy, const float *w, float *dx, bool accumulate,
                                   float *scratch, int threads) {
  conv_geom d = data_dual(g);
  const int kk = g->kh * g->kw;
  float *padded = scratch, *wt = padded + (size_t)d.m * (size_t)d.oh * (size_t)d.ow;
  float *rest = wt + (size_t)g->m * (size_t)g->c * (size_t)kk;
  for (int ci = 0; ci < g->c; ci++)
    for (int o = 0; o < g->m; o++)
      for (int k = 0; k < kk; k++)
        wt[((size_t)ci * (size_t)g->m + (size_t)o) * (size_t)kk + (size_t)k] =
            w[((size_t)o * (size_t)g->c + (size_t)ci) * (size_t)kk + (size_t)(kk - 1 - k)];
  cpu_conv_direct(&d, dy, wt, NULL, padded, rest, threads);
  int pads[4] = {g->pt, g->pl, g->pb, g->pr};
  cpu_pad_backward(padded, dx, g->c, g->h, g->w, pads, g->pad_mode, accumulate, threads);
}

/* s[o][kx] += sum over x < ow of dy[o][x] * xr[x + kx] for the M rows dy[o] (ds apart), KW taps:
 * 8 columns of every product in a register while the row goes by; sums from the lanes. */
static inline __attribute__((always_inline)) void wgrad_row(const int M, const int KW, const float *dy, size_t ds,
                                                           const float *xr, int ow, v8 acc[2][8], float tail[2][8]) {
  int body = ow / 8 * 8;
  for (int x0 = 0; x0 < body; x0 += 8) {
    v8 dv[2];
    for (int o = 0; o < M; o++) memcpy(&dv[o], dy + (size_t)o * ds + (size_t)x0, sizeof dv[o]);
#pragma GCC unroll 8
    for (int kx = 0; kx < KW; kx++) {
      v8 xv;
      memcpy(&xv, xr + x0 + kx, sizeof xv);
      for (int o = 0; o < M; o++) acc[o][kx] += dv[o] * xv;
    }
  }
  for (int o = 0; o < M; o++)
    for (int kx = 0; kx < KW; kx++)
      for (int x = body; x < ow; x++) tail[o][kx] += dy[(size_t)o * ds + (size_t)x] * xr[x + kx];
}

/* dw[o][ci][ky][0 .. KW) += the M outputs' sums over the plane for tap row ky: one fixed order
 * (lanes over rows, then the lanes' sum, then the tail columns). */
static inline __attribute__((always_inline)) void wgrad_taps(const int M, const int KW, const conv_geom *g,
                                                            const float *plane, size_t pw, const float *dy, int o0,
                                                            int ci, int ky, float *dw) {
  const size_t ohw = (size_t)g->oh * (size_t)g->ow;
  v8 acc[2][8];
  float tail[2][8];
  memset(acc, 0, sizeof acc);
  memset(tail, 0, sizeof tail);
  for (int oy = 0; oy < g->oh; oy++)
    wgrad_row(M, KW, dy + (size_t)o0 * ohw + (size_t)oy * (size_t)g->ow, ohw, plane + (size_t)(oy + ky) * pw, g->ow,
              acc, tail);
  for (int o = 0; o < M; o++)
    for (int kx = 0; kx < KW; kx++) {
      float s = 0;
      for (int l = 0; l < 8; l++) s += acc[o][kx][l];
      dw[(((size_t)(o0 + o) * (size_t)g->c + (size_t)ci) * (size_t)g->kh + (size_t)ky) * (size_t)g->kw + (size_t)kx] +=
          s + tail[o][kx];
    }
}

HOT_CLONES void cpu_conv_backward_weights_direct(const conv_geom *g, const float *x, const float *dy, float *dw,
                                                 float *db, float *scratch, int threads) {
  const int pw = g->w + g->pl + g->pr, ph = g->h + g->pt + g->pb;
  const size_t per = (size_t)ph * (size_t)pw;
  /* one thread per input channel: each weight's sum is made by one thread in one order */
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int ci = 0; ci < g->c; ci++) {
    float *plane = scratch + per * (size_t)omp_get_thread_num();
    const float *xc = x + (size_t)ci * (size_t)g->h * (size_t)g->w;
    for (int py = 0; py < ph; py++) {
      int iy = map_index(py - g->pt, g->h, g->pad_mode);
      if (iy < 0) memset(plane + (size_t)py * (size_t)pw, 0, sizeof(float) * (size_t)pw);
      else pad_row(g, xc + (size_t)iy * (size_t)g->w, plane + (size_t)py * (size_t)pw);
    }
    for (int ky = 0; ky < g->kh; ky++)
      for (int o0 = 0; o0 < g->m; o0 += 2) {
        bool two = g->m - o0 >= 2;
#define WGRAD_TAPS(KW)                                                                                  \
  case KW:                                                                                              \
    if (two) wgrad_taps(2, KW, g, plane, (size_t)pw, dy, o0, ci, ky, dw);                               \
    else wgrad_taps(1, KW, g, plane, (size_t)pw, dy, o0, ci, ky, dw);                                   \
    break;
        switch (g->kw) {
          WGRAD_TAPS(1) WGRAD_TAPS(2) WGRAD_TAPS(3) WGRAD_TAPS(4) WGRAD_TAPS(5) WGRAD_TAPS(6) WGRAD_TAPS(7)
          default: WGRAD_TAPS(8)
        }
#undef WGRAD_TAPS
      }
  }
  if (db) cpu_bias_grad(dy, db, g->m, (size_t)g->oh * (size_t)g->ow, threads);
}
