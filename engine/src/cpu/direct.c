/* cpu/direct.c: a direct convolution for very few output channels (the generators' last
 * 64 -> 3 layer), where a GEMM with three rows wastes most of the machine, or very few input
 * channels (the first 3 -> 64 layer, whose im2col copy costs as much as its GEMM).
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

/* Per thread: the m output rows being summed, then the kh padded input rows of one channel. */
size_t cpu_direct_scratch(const conv_geom *g, int threads) {
  size_t row = (size_t)g->m * (size_t)g->ow + (size_t)g->kh * (size_t)(g->w + g->pl + g->pr) + 16;
  return row * (size_t)threads;
}

/* 8 floats as one value (GCC vector extension: one AVX2 register; AVX-512 runs them as
 * 256-bit instructions), moved through memcpy (unaligned, no aliasing questions). 64-byte
 * values took two AVX2 registers each, and the 8 accumulators below then spilled on every step:
 * the AVX2 clone ran the 7x7 layers 40x slower (829 ms for the first layer at 256x256, 15 ms on
 * AVX-512). */
typedef float v8 __attribute__((vector_size(32)));

/* Columns of every output a strip keeps in registers. */
#define STRIP 16

/* acc[o][ox0 .. ox0+STRIP) += the kh x kw stride-1 correlation of the padded rows prow (ps apart)
 * with f[o] (filters fs apart) for the M outputs o: STRIP columns of every output in registers. */
static inline __attribute__((always_inline)) void direct_strip(const int M, const float *prow, size_t ps, int kh,
                                                              int kw, const float *f, size_t fs, float *acc,
                                                              size_t as, int ox0) {
  v8 a[4][2];
#pragma GCC unroll 4
  for (int o = 0; o < M; o++)
    memcpy(a[o], acc + (size_t)o * as + (size_t)ox0, sizeof a[o]);
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
  for (int o = 0; o < M; o++)
    memcpy(acc + (size_t)o * as + (size_t)ox0, a[o], sizeof a[o]);
}

/* One channel's contribution to the m output rows acc (ow apart) from its kh padded rows, four
 * outputs at a time. */
static inline __attribute__((always_inline)) void direct_channel(const conv_geom *g, const float *prow, size_t ps,
                                                                const float *f, size_t fs, float *acc) {
  const int m = g->m, ow = g->ow, kh = g->kh, kw = g->kw;
  int body = 0;
  if (g->sw == 1 && g->dw == 1) {
    body = ow / STRIP * STRIP;
    for (int o0 = 0; o0 < m; o0 += 4) {
      const float *fo = f + (size_t)o0 * fs;
      float *ao = acc + (size_t)o0 * (size_t)ow;
      for (int ox0 = 0; ox0 < body; ox0 += STRIP) switch (m - o0) {
        case 1: direct_strip(1, prow, ps, kh, kw, fo, fs, ao, (size_t)ow, ox0); break;
        case 2: direct_strip(2, prow, ps, kh, kw, fo, fs, ao, (size_t)ow, ox0); break;
        case 3: direct_strip(3, prow, ps, kh, kw, fo, fs, ao, (size_t)ow, ox0); break;
        default: direct_strip(4, prow, ps, kh, kw, fo, fs, ao, (size_t)ow, ox0); break;
        }
    }
  }
  for (int o = 0; o < m; o++) {
    float *a = acc + (size_t)o * (size_t)ow;
    for (int ky = 0; ky < kh; ky++)
      for (int kx = 0; kx < kw; kx++) {
        float wv = f[(size_t)o * fs + (size_t)(ky * kw + kx)];
        const float *src = prow + (size_t)ky * ps + (size_t)(kx * g->dw);
        for (int ox = body; ox < ow; ox++) a[ox] += wv * src[(size_t)ox * (size_t)g->sw];
      }
  }
}

HOT_CLONES int cpu_conv_direct(const conv_geom *g, const float *x, const float *w, const float *bias, float *y,
                               float *scratch, int threads) {
  const int pw = g->w + g->pl + g->pr;
  const size_t per = cpu_direct_scratch(g, 1), ohw = (size_t)g->oh * (size_t)g->ow;
  const size_t fs = (size_t)g->c * (size_t)g->kh * (size_t)g->kw;
  /* contiguous blocks of rows per thread: neighbouring rows share kh - 1 input rows in cache */
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int oy = 0; oy < g->oh; oy++) {
    float *acc = scratch + per * (size_t)omp_get_thread_num();
    float *prow = acc + (size_t)g->m * (size_t)g->ow;
    for (int o = 0; o < g->m; o++)
      for (int ox = 0; ox < g->ow; ox++) acc[(size_t)o * (size_t)g->ow + (size_t)ox] = bias ? bias[o] : 0.0f;
    for (int c = 0; c < g->c; c++) {
      const float *xc = x + (size_t)c * (size_t)g->h * (size_t)g->w;
      for (int ky = 0; ky < g->kh; ky++) {
        float *pr = prow + (size_t)ky * (size_t)pw;
        int iy = map_index(oy * g->sh - g->pt + ky * g->dh, g->h, g->pad_mode);
        if (iy < 0) {
          memset(pr, 0, sizeof(float) * (size_t)pw);
          continue;
        }
        const float *row = xc + (size_t)iy * (size_t)g->w;
        for (int px = 0; px < g->pl; px++) {
          int ix = map_index(px - g->pl, g->w, g->pad_mode);
          pr[px] = ix < 0 ? 0.0f : row[ix];
        }
        memcpy(pr + g->pl, row, sizeof(float) * (size_t)g->w);
        for (int px = g->pl + g->w; px < pw; px++) {
          int ix = map_index(px - g->pl, g->w, g->pad_mode);
          pr[px] = ix < 0 ? 0.0f : row[ix];
        }
      }
      direct_channel(g, prow, (size_t)pw, w + (size_t)c * (size_t)g->kh * (size_t)g->kw, fs, acc);
    }
    for (int o = 0; o < g->m; o++)
      memcpy(y + (size_t)o * ohw + (size_t)oy * (size_t)g->ow, acc + (size_t)o * (size_t)g->ow,
             sizeof(float) * (size_t)g->ow);
  }
  return 1;
}

