/* cpu/conv.c: Conv and ConvTranspose on the CPU as GEMM through OpenBLAS.
 *
 * Conv: im2col of a chunk of output pixels (padding by reflection, edge or zeros is read
 * through index maps, so a padded copy of the input never exists), then one sgemm per chunk.
 * ConvTranspose: sgemm W^T X into columns for a chunk of input pixels, then col2im scatter-add;
 * only the non-zero products are computed. Chunks are sized to the scratch the plan gave; a
 * Conv chunk is done in pieces whose columns fit in a core's cache (COLS_FLOATS), so the GEMM
 * reads them back from there rather than from memory.
 */
#include <cblas.h>
#include <string.h>

#include "cpu.h"

/* Writes `run` pixels of one im2col row: input row `row` (or zeros when NULL), output x
 * positions ox0.. ox0+run-1 for kernel column offset `koff`. */
static void im2col_run(float *dst, const float *row, int w, int ox0, int run, int sw, int koff, int mode) {
  if (!row) {
    memset(dst, 0, sizeof(float) * (size_t)run);
    return;
  }
  int ix0 = ox0 * sw + koff;
  int tlo = ix0 >= 0 ? 0 : (-ix0 + sw - 1) / sw;
  int thi = ix0 <= w - 1 ? (w - 1 - ix0) / sw + 1 : 0;
  if (tlo > run) tlo = run;
  if (thi > run) thi = run;
  if (thi < tlo) thi = tlo;
  for (int t = 0; t < tlo; t++) {
    int ix = map_index(ix0 + t * sw, w, mode);
    dst[t] = ix < 0 ? 0.0f : row[ix];
  }
  if (sw == 1) {
    memcpy(dst + tlo, row + ix0 + tlo, sizeof(float) * (size_t)(thi - tlo));
  } else {
    const float *src = row + ix0;
    for (int t = tlo; t < thi; t++) dst[t] = src[t * sw];
  }
  for (int t = thi; t < run; t++) {
    int ix = map_index(ix0 + t * sw, w, mode);
    dst[t] = ix < 0 ? 0.0f : row[ix];
  }
}

/* cols[r][0..n) = the im2col rows of output pixels p0 .. p0+n-1, in the forward's layout. */
static void im2col_chunk(const conv_geom *g, const float *x, float *cols, size_t p0, size_t n, int threads) {
  const int kk = g->kh * g->kw, K = g->c * kk;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int r = 0; r < K; r++) {
    int ci = r / kk, ky = (r / g->kw) % g->kh, kx = r % g->kw;
    const float *xc = x + (size_t)ci * (size_t)g->h * (size_t)g->w;
    float *dst = cols + (size_t)r * n;
    size_t p = p0, end = p0 + n;
    while (p < end) {
      int oy = (int)(p / (size_t)g->ow), ox = (int)(p % (size_t)g->ow);
      int run = g->ow - ox;
      if ((size_t)run > end - p) run = (int)(end - p);
      int iy = map_index(oy * g->sh - g->pt + ky * g->dh, g->h, g->pad_mode);
      im2col_run(dst, iy < 0 ? NULL : xc + (size_t)iy * (size_t)g->w, g->w, ox, run, g->sw, kx * g->dw - g->pl,
                 g->pad_mode);
      dst += run;
      p += (size_t)run;
    }
  }
}

/* About 512 KiB of im2col columns per GEMM: in a core's L2 cache (the first 3x3 stride-2 layer of
 * the ResNet at 256x256: 48 -> 30 ms, its columns 38 MB in one piece). */
#define COLS_FLOATS ((size_t)1 << 17)

int cpu_conv_forward(const conv_geom *g, const float *x, const float *w, const float *bias, float *y,
                     float *scratch, size_t scratch_floats, int threads) {
  const int kk = g->kh * g->kw, K = g->c * kk;
  const size_t ohw = (size_t)g->oh * (size_t)g->ow;
  size_t chunk = scratch_floats / (size_t)K;
  if (chunk > ohw) chunk = ohw;
  if (chunk < 1) chunk = 1;
  size_t piece = COLS_FLOATS / (size_t)K;
  if (piece < 256) piece = 256;
  int tiles = 0;
  for (size_t p0 = 0; p0 < ohw; p0 += chunk) {
    size_t n = ohw - p0 < chunk ? ohw - p0 : chunk;
    tiles++;
    for (size_t q0 = p0; q0 < p0 + n; q0 += piece) {
      size_t nq = p0 + n - q0 < piece ? p0 + n - q0 : piece;
      im2col_chunk(g, x, scratch, q0, nq, threads);
      cpu_gemm(false, g->m, (int)nq, K, w, K, scratch, (int)nq, y + q0, (int)ohw, threads);
    }
    if (bias) {
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int mi = 0; mi < g->m; mi++) {
        float b = bias[mi], *yr = y + (size_t)mi * ohw + p0;
        for (size_t t = 0; t < n; t++) yr[t] += b;
      }
    }
    if (g->chunk_done && p0 + n < ohw && g->chunk_done(g->user, (double)(p0 + n) / (double)ohw)) return -1;
  }
  return tiles;
}

int cpu_convt_forward(const conv_geom *g, const float *x, const float *w, const float *bias, float *y,
                      float *scratch, size_t scratch_floats, int threads) {
  const int kk = g->kh * g->kw, mkk = g->m * kk;
  const size_t hw = (size_t)g->h * (size_t)g->w, ohw = (size_t)g->oh * (size_t)g->ow;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int mi = 0; mi < g->m; mi++) {
    float b = bias ? bias[mi] : 0.0f, *yr = y + (size_t)mi * ohw;
    for (size_t t = 0; t < ohw; t++) yr[t] = b;
  }
  size_t chunk = scratch_floats / (size_t)mkk;
  if (chunk > hw) chunk = hw;
  if (chunk < 1) chunk = 1;
  int tiles = 0;
  for (size_t p0 = 0; p0 < hw; p0 += chunk) {
    size_t n = hw - p0 < chunk ? hw - p0 : chunk;
    tiles++;
    cpu_gemm(true, mkk, (int)n, g->c, w, mkk, x + p0, (int)hw, scratch, (int)n, threads);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int mi = 0; mi < g->m; mi++) {
      float *yc = y + (size_t)mi * ohw;
      for (int ky = 0; ky < g->kh; ky++)
        for (int kx = 0; kx < g->kw; kx++) {
          const float *src = scratch + ((size_t)(mi * g->kh + ky) * (size_t)g->kw + (size_t)kx) * n;
          size_t p = p0, end = p0 + n;
          while (p < end) {
            int iy = (int)(p / (size_t)g->w), ix = (int)(p % (size_t)g->w);
            int run = g->w - ix;
            if ((size_t)run > end - p) run = (int)(end - p);
            int oy = iy * g->sh - g->pt + ky * g->dh;
            if (oy >= 0 && oy < g->oh) {
              float *yrow = yc + (size_t)oy * (size_t)g->ow;
              int ox = ix * g->sw - g->pl + kx * g->dw;
              for (int t = 0; t < run; t++, ox += g->sw)
                if (ox >= 0 && ox < g->ow) yrow[ox] += src[t];
            }
            src += run;
            p += (size_t)run;
          }
        }
    }
    if (g->chunk_done && p0 + n < hw && g->chunk_done(g->user, (double)(p0 + n) / (double)hw)) return -1;
  }
  return tiles;
}

/* ---- backward (training) ------------------------------------------------------------------
 * Conv: dX = col2im(W^T dY) with the padded halo folded back onto the pixels it reflects (or
 * replicates; zero padding drops it); dW += dY im2col(X)^T; dB += row sums of dY. ConvTranspose
 * is the dual: its dX is a convolution of dY with the same weights (im2col of dY + sgemm) and its
 * dW += X im2col(dY)^T. All chunked over pixels to the scratch given; deterministic for a fixed
 * thread count (every reduction has a fixed order). */

/* The adjoint of im2col_run: row[map(ix)] += src[t] for the `run` positions. */
static void col2im_run(const float *src, float *row, int w, int ox0, int run, int sw, int koff, int mode) {
  int ix0 = ox0 * sw + koff;
  int tlo = ix0 >= 0 ? 0 : (-ix0 + sw - 1) / sw;
  int thi = ix0 <= w - 1 ? (w - 1 - ix0) / sw + 1 : 0;
  if (tlo > run) tlo = run;
  if (thi > run) thi = run;
  if (thi < tlo) thi = tlo;
  for (int t = 0; t < tlo; t++) {
    int ix = map_index(ix0 + t * sw, w, mode);
    if (ix >= 0) row[ix] += src[t];
  }
  if (sw == 1) {
    float *d = row + ix0;
    for (int t = tlo; t < thi; t++) d[t] += src[t];
  } else {
    float *d = row + ix0;
    for (int t = tlo; t < thi; t++) d[t * sw] += src[t];
  }
  for (int t = thi; t < run; t++) {
    int ix = map_index(ix0 + t * sw, w, mode);
    if (ix >= 0) row[ix] += src[t];
  }
}

/* dx += col2im(cols) for output pixels p0 .. p0+n-1; parallel over input channels (race-free). */
static void col2im_chunk(const conv_geom *g, const float *cols, float *dx, size_t p0, size_t n, int threads) {
  const int kk = g->kh * g->kw;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int ci = 0; ci < g->c; ci++) {
    float *dxc = dx + (size_t)ci * (size_t)g->h * (size_t)g->w;
    for (int ky = 0; ky < g->kh; ky++)
      for (int kx = 0; kx < g->kw; kx++) {
        const float *src = cols + ((size_t)ci * (size_t)kk + (size_t)ky * (size_t)g->kw + (size_t)kx) * n;
        size_t p = p0, end = p0 + n;
        while (p < end) {
          int oy = (int)(p / (size_t)g->ow), ox = (int)(p % (size_t)g->ow);
          int run = g->ow - ox;
          if ((size_t)run > end - p) run = (int)(end - p);
          int iy = map_index(oy * g->sh - g->pt + ky * g->dh, g->h, g->pad_mode);
          if (iy >= 0) col2im_run(src, dxc + (size_t)iy * (size_t)g->w, g->w, ox, run, g->sw, kx * g->dw - g->pl, g->pad_mode);
          src += run;
          p += (size_t)run;
        }
      }
  }
}

static size_t chunk_for(size_t scratch_floats, size_t rows, size_t pixels) {
  size_t chunk = scratch_floats / (rows ? rows : 1);
  if (chunk > pixels) chunk = pixels;
  return chunk < 1 ? 1 : chunk;
}

static void zero_or_keep(float *x, size_t n, bool accumulate, int threads) {
  if (accumulate) return;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; i++) x[i] = 0.0f;
}

void cpu_bias_grad(const float *dy, float *db, int m, size_t plane, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int mi = 0; mi < m; mi++) {
    const float *r = dy + (size_t)mi * plane;
    double s = 0;
    for (size_t t = 0; t < plane; t++) s += r[t];
    db[mi] += (float)s;
  }
}

void cpu_conv_backward_data(const conv_geom *g, const float *dy, const float *w, float *dx, bool accumulate,
                            float *scratch, size_t scratch_floats, int threads) {
  const size_t K = (size_t)g->c * (size_t)g->kh * (size_t)g->kw, ohw = (size_t)g->oh * (size_t)g->ow;
  zero_or_keep(dx, (size_t)g->c * (size_t)g->h * (size_t)g->w, accumulate, threads);
  size_t chunk = chunk_for(scratch_floats, K, ohw);
  for (size_t p0 = 0; p0 < ohw; p0 += chunk) {
    size_t n = ohw - p0 < chunk ? ohw - p0 : chunk;
    cpu_gemm(true, (int)K, (int)n, g->m, w, (int)K, dy + p0, (int)ohw, scratch, (int)n, threads);
    col2im_chunk(g, scratch, dx, p0, n, threads);
  }
}

void cpu_conv_backward_weights(const conv_geom *g, const float *x, const float *dy, float *dw, float *db,
                               float *scratch, size_t scratch_floats, int threads) {
  const size_t K = (size_t)g->c * (size_t)g->kh * (size_t)g->kw, ohw = (size_t)g->oh * (size_t)g->ow;
  size_t chunk = chunk_for(scratch_floats, K, ohw);
  for (size_t p0 = 0; p0 < ohw; p0 += chunk) {
    size_t n = ohw - p0 < chunk ? ohw - p0 : chunk;
    im2col_chunk(g, x, scratch, p0, n, threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->m, (int)K, (int)n, 1.0f, dy + p0, (int)ohw, scratch, (int)n,
                1.0f, dw, (int)K);
  }
  if (db) cpu_bias_grad(dy, db, g->m, ohw, threads);
}

/* The convolution whose data gradient a ConvTranspose is: from dY (m x oh x ow) to X's shape. */
static conv_geom convt_dual(const conv_geom *g) {
  conv_geom d = *g;
  d.c = g->m;
  d.h = g->oh;
  d.w = g->ow;
  d.m = g->c;
  d.oh = g->h;
  d.ow = g->w;
  d.pad_mode = PAD_CONSTANT;
  d.oph = d.opw = 0;
  d.chunk_done = NULL;
  return d;
}

void cpu_convt_backward_data(const conv_geom *g, const float *dy, const float *w, float *dx, bool accumulate,
                             float *scratch, size_t scratch_floats, int threads) {
  conv_geom d = convt_dual(g);
  const size_t K = (size_t)d.c * (size_t)d.kh * (size_t)d.kw, hw = (size_t)g->h * (size_t)g->w;
  size_t chunk = chunk_for(scratch_floats, K, hw);
  for (size_t p0 = 0; p0 < hw; p0 += chunk) {
    size_t n = hw - p0 < chunk ? hw - p0 : chunk;
    im2col_chunk(&d, dy, scratch, p0, n, threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->c, (int)n, (int)K, 1.0f, w, (int)K, scratch, (int)n,
                accumulate ? 1.0f : 0.0f, dx + p0, (int)hw);
  }
}

void cpu_convt_backward_weights(const conv_geom *g, const float *x, const float *dy, float *dw, float *db,
                                float *scratch, size_t scratch_floats, int threads) {
  conv_geom d = convt_dual(g);
  const size_t K = (size_t)d.c * (size_t)d.kh * (size_t)d.kw, hw = (size_t)g->h * (size_t)g->w;
  size_t chunk = chunk_for(scratch_floats, K, hw);
  for (size_t p0 = 0; p0 < hw; p0 += chunk) {
    size_t n = hw - p0 < chunk ? hw - p0 : chunk;
    im2col_chunk(&d, dy, scratch, p0, n, threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->c, (int)K, (int)n, 1.0f, x + p0, (int)hw, scratch, (int)n,
                1.0f, dw, (int)K);
  }
  if (db) cpu_bias_grad(dy, db, g->m, (size_t)g->oh * (size_t)g->ow, threads);
}

size_t cpu_conv_backward_scratch(const conv_geom *g, bool transpose) {
  if (transpose) return (size_t)g->m * (size_t)g->kh * (size_t)g->kw * (size_t)g->h * (size_t)g->w;
  return (size_t)g->c * (size_t)g->kh * (size_t)g->kw * (size_t)g->oh * (size_t)g->ow;
}
