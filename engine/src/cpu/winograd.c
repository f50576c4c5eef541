/* cpu/winograd.c: faster convolutions for the shapes that dominate the generators.
 *
 * Winograd for 3x3 stride-1 convolutions with one pixel of padding (the 18 residual-block
 * convolutions, 88% of the ResNet's multiply-adds), done as GEMMs through OpenBLAS over chunks of
 * output tiles: F(4x4, 3x3) (points 0, +-1, +-2, infinity; 36 GEMMs, 4x fewer products than a
 * direct convolution) where the output is at least 8x8, else F(2x2, 3x3) (points 0, +-1,
 * infinity; 16 GEMMs, 2.25x fewer). F(2x2, 3x3)'s coefficients (0, +-1, +-1/2) are exact in
 * float; F(4x4, 3x3)'s (1/4, 1/6, 1/12, 1/24; 2, 4, 5, 8) round, which leaves its results about
 * an order of magnitude further from the exact convolution than float rounding alone (relative
 * 1e-6 rather than 1e-7; tests/engine/test_conv.c).
 * Every transform runs a row of tiles that stays inside the plane as one loop over the tiles,
 * which GCC vectorises (strided loads, one contiguous store stream per transformed element);
 * tiles at the border gather through the padding one by one.
 */
#include <cblas.h>
#include <string.h>

#include "cpu.h"

bool cpu_winograd_applies(const conv_geom *g) {
  return g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 && g->pt == 1 &&
         g->pl == 1 && g->pb == 1 && g->pr == 1 && g->c >= 16 && g->m >= 16;
}

size_t cpu_winograd_tiles(const conv_geom *g, int tile) {
  return (size_t)((g->oh + tile - 1) / tile) * (size_t)((g->ow + tile - 1) / tile);
}

/* The transformed planes of a chunk are PLANE_SKEW floats further apart than they need be:
 * planes a power of two apart would share cache sets, and the transforms touch all at once. */
#define PLANE_SKEW 16

size_t cpu_winograd_scratch(const conv_geom *g, int tile, size_t tiles) {
  size_t k = (size_t)(tile + 2) * (size_t)(tile + 2);
  return k * (size_t)g->m * (size_t)g->c + k * ((size_t)g->c + (size_t)g->m) * tiles + 2 * k * PLANE_SKEW;
}

int cpu_winograd_tile(const conv_geom *g, int max_tile, size_t scratch_floats) {
  if (max_tile >= 4 && g->oh >= 8 && g->ow >= 8 && scratch_floats >= cpu_winograd_scratch(g, 4, 16)) return 4;
  return scratch_floats >= cpu_winograd_scratch(g, 2, 16) ? 2 : 0;
}

/* The run of tiles that chunk position t (of nt, the chunk starting at tile t0) begins: tile
 * row *ty, columns [*a, *b) of a row of tx tiles. */
static inline void tile_run(size_t t0, size_t t, size_t nt, int tx, int *ty, int *a, int *b) {
  *ty = (int)((t0 + t) / (size_t)tx);
  *a = (int)((t0 + t) % (size_t)tx);
  *b = nt - t < (size_t)(tx - *a) ? *a + (int)(nt - t) : tx;
}

/* The tiles [a, b) of a row whose tile t begins at column step t - off and reaches no further
 * than column step t - off + span - 1 inside a plane `w` wide: [*lo, *hi), empty when none does. */
static inline void inner_tiles(int a, int b, int step, int off, int span, int w, int *lo, int *hi) {
  int l = (off + step - 1) / step, e = w + off - span >= 0 ? (w + off - span) / step + 1 : 0;
  *lo = l > a ? l : a;
  *hi = e < b ? e : b;
  if (*hi < *lo) *hi = *lo;
}

/* ---- F(2x2, 3x3) ---------------------------------------------------------------------------- */

/* o[k * mc] = (G g G^T)[k] for filter l of the 16 in f[tap][filter], F(2x2, 3x3):
 * G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]. */
static inline __attribute__((always_inline)) void filter2(const float f[9][16], int l, float *o, size_t mc) {
  float t[4][3];
  for (int j = 0; j < 3; j++) {
    t[0][j] = f[j][l];
    t[1][j] = 0.5f * (f[j][l] + f[3 + j][l] + f[6 + j][l]);
    t[2][j] = 0.5f * (f[j][l] - f[3 + j][l] + f[6 + j][l]);
    t[3][j] = f[6 + j][l];
  }
  for (int r = 0; r < 4; r++) {
    o[(size_t)(r * 4 + 0) * mc] = t[r][0];
    o[(size_t)(r * 4 + 1) * mc] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
    o[(size_t)(r * 4 + 2) * mc] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
    o[(size_t)(r * 4 + 3) * mc] = t[r][2];
  }
}

/* The same for F(4x4, 3x3), k over the 6x6 transformed filter:
 * G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]. */
static inline __attribute__((always_inline)) void filter4(const float f[9][16], int l, float *o, size_t mc) {
  float t[6][3];
  for (int j = 0; j < 3; j++) {
    float g0 = f[j][l], g1 = f[3 + j][l], g2 = f[6 + j][l];
    t[0][j] = g0 * (1.0f / 4);
    t[1][j] = -(g0 + g1 + g2) * (1.0f / 6);
    t[2][j] = -(g0 - g1 + g2) * (1.0f / 6);
    t[3][j] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
    t[4][j] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
    t[5][j] = g2;
  }
  for (int r = 0; r < 6; r++) {
    float g0 = t[r][0], g1 = t[r][1], g2 = t[r][2];
    float *q = o + (size_t)(r * 6) * mc;
    q[0] = g0 * (1.0f / 4);
    q[mc] = -(g0 + g1 + g2) * (1.0f / 6);
    q[2 * mc] = -(g0 - g1 + g2) * (1.0f / 6);
    q[3 * mc] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
    q[4 * mc] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
    q[5 * mc] = g2;
  }
}

/* U[k][m][c] = (G g G^T)[k] for every filter, 16 filters at a time: their taps are transposed
 * into f[tap][filter] first, so the transform vectorises over the filters. */
HOT_CLONES static void transform_weights(const conv_geom *g, int tile, const float *w, float *u, int threads) {
  size_t mc = (size_t)g->m * (size_t)g->c;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i0 = 0; i0 < mc; i0 += 16) {
    int n = mc - i0 < 16 ? (int)(mc - i0) : 16;
    float f[9][16];
    for (int l = 0; l < n; l++)
      for (int k = 0; k < 9; k++) f[k][l] = w[(i0 + (size_t)l) * 9 + (size_t)k];
    float *dst = u + i0;
    if (tile == 4) {
#pragma GCC ivdep
      for (int l = 0; l < n; l++) filter4(f, l, dst + l, mc);
    } else {
#pragma GCC ivdep
      for (int l = 0; l < n; l++) filter2(f, l, dst + l, mc);
    }
  }
}

/* dst[k * cn] = (B^T d B)[k] for one 4x4 tile (see transform_input). */
static inline __attribute__((always_inline)) void tile_in2(const float d[4][4], float *dst, size_t cn, float sgn) {
  float b[4][4];
  for (int j = 0; j < 4; j++) {
    b[0][j] = d[0][j] - d[2][j];
    b[1][j] = d[1][j] + d[2][j];
    b[2][j] = d[2][j] - d[1][j];
    b[3][j] = sgn * (d[1][j] - d[3][j]);
  }
  for (int i = 0; i < 4; i++) {
    dst[(size_t)(i * 4 + 0) * cn] = b[i][0] - b[i][2];
    dst[(size_t)(i * 4 + 1) * cn] = b[i][1] + b[i][2];
    dst[(size_t)(i * 4 + 2) * cn] = b[i][2] - b[i][1];
    dst[(size_t)(i * 4 + 3) * cn] = sgn * (b[i][1] - b[i][3]);
  }
}

/* The 2x2 outputs of one tile from its 16 products q[k * mn] (A^T M A), bias added. */
static inline __attribute__((always_inline)) void tile_out2(const float *q, size_t mn, float bias, float o[2][2]) {
  float r[2][4];
  for (int j = 0; j < 4; j++) {
    r[0][j] = q[(size_t)j * mn] + q[(size_t)(4 + j) * mn] + q[(size_t)(8 + j) * mn];
    r[1][j] = q[(size_t)(4 + j) * mn] - q[(size_t)(8 + j) * mn] - q[(size_t)(12 + j) * mn];
  }
  for (int i = 0; i < 2; i++) {
    o[i][0] = r[i][0] + r[i][1] + r[i][2] + bias;
    o[i][1] = r[i][1] - r[i][2] - r[i][3] + bias;
  }
}

/* ---- F(4x4, 3x3) ---------------------------------------------------------------------------- */

/* B^T applied to six values: B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
 * 0 2 -1 -2 1 0; 0 4 0 -5 0 1]. */
static inline __attribute__((always_inline)) void bt6(float d0, float d1, float d2, float d3, float d4, float d5,
                                                      float e[6]) {
  e[0] = 4.0f * d0 - 5.0f * d2 + d4;
  e[1] = (d4 + d3) - 4.0f * (d1 + d2);
  e[2] = (d4 - d3) + 4.0f * (d1 - d2);
  e[3] = (d4 - d2) + 2.0f * (d3 - d1);
  e[4] = (d4 - d2) - 2.0f * (d3 - d1);
  e[5] = 4.0f * d1 - 5.0f * d3 + d5;
}

/* dst[k * cn] = (B^T d B)[k] for one 6x6 tile. */
static inline __attribute__((always_inline)) void tile_in4(const float d[6][6], float *dst, size_t cn) {
  float b[6][6];
#pragma GCC unroll 6
  for (int j = 0; j < 6; j++) {
    float e[6];
    bt6(d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j], e);
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++) b[i][j] = e[i];
  }
#pragma GCC unroll 6
  for (int i = 0; i < 6; i++) {
    float e[6];
    bt6(b[i][0], b[i][1], b[i][2], b[i][3], b[i][4], b[i][5], e);
#pragma GCC unroll 6
    for (int j = 0; j < 6; j++) dst[(size_t)(i * 6 + j) * cn] = e[j];
  }
}

/* Row segments of at most SEG tiles at the border are copied, padded, into a buffer first. */
#define SEG 32

/* buf[i][j] = the padded input at row y0 + i, column x0 + j of channel plane xc, for n rows and
 * `cols` columns, rows bs apart. */
static void fill_rows(const conv_geom *g, const float *xc, int y0, int x0, int n, int cols, float *buf, int bs) {
  const int h = g->h, w = g->w;
  int j0 = x0 < 0 ? -x0 : 0, j1 = x0 + cols > w ? w - x0 : cols; /* columns [j0, j1) lie inside */
  if (j1 < j0) j1 = j0;
  for (int i = 0; i < n; i++) {
    int iy = map_index(y0 + i, h, g->pad_mode);
    float *dst = buf + (size_t)i * (size_t)bs;
    if (iy < 0) {
      memset(dst, 0, sizeof(float) * (size_t)cols);
      continue;
    }
    const float *row = xc + (size_t)iy * (size_t)w;
    for (int j = 0; j < cols; j++) {
      if (j == j0 && j1 > j0) {
        memcpy(dst + j0, row + x0 + j0, sizeof(float) * (size_t)(j1 - j0));
        j = j1 - 1;
        continue;
      }
      int ix = map_index(x0 + j, w, g->pad_mode);
      dst[j] = ix < 0 ? 0.0f : row[ix];
    }
  }
}

/* The transforms of n consecutive tiles whose (tile + 2)-square inputs start at column col0 of
 * rows r0, r0 + rs, ...: tile k's at column col0 + tile k; outputs dst[k] in planes cn apart. */
static inline __attribute__((always_inline)) void tiles_in(int tile, const float *r0, size_t rs, int col0, int n,
                                                          float *dst, size_t cn, float sgn) {
  if (tile == 4) {
#pragma GCC ivdep
    for (int k = 0; k < n; k++) {
      float d[6][6];
#pragma GCC unroll 6
      for (int i = 0; i < 6; i++)
#pragma GCC unroll 6
        for (int j = 0; j < 6; j++) d[i][j] = r0[(size_t)i * rs + (size_t)(col0 + 4 * k + j)];
      tile_in4(d, dst + k, cn);
    }
  } else {
#pragma GCC ivdep
    for (int k = 0; k < n; k++) {
      float d[4][4];
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) d[i][j] = r0[(size_t)i * rs + (size_t)(col0 + 2 * k + j)];
      tile_in2(d, dst + k, cn, sgn);
    }
  }
}

/* V[k][c][t - t0] (planes cn apart) = (B^T d B)[k] for the tiles t0 .. t0+nt-1 of every channel,
 * tile t's input starting at (tile ty - oy, tile tx - ox). For tile 2, sgn = 1 gives the forward's
 * B^T; sgn = -1 the weight gradient's F(3x3, 2x2) B^T, which differs only in the sign of its last
 * row (exact either way). Tiles inside the plane read it in place; the rest a padded copy. */
HOT_CLONES static void transform_input(const conv_geom *g, int tile, const float *x, float *v, size_t cn, size_t t0,
                                       size_t nt, int tx, int oy, int ox, float sgn, int threads) {
  const int h = g->h, w = g->w, n = tile + 2;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int c = 0; c < g->c; c++) {
    const float *xc = x + (size_t)c * (size_t)h * (size_t)w;
    float buf[6 * (4 * SEG + 2)];
    const int bs = tile * SEG + 2;
    for (size_t t = 0; t < nt;) {
      int ty, a, b, lo = 0, hi = 0;
      tile_run(t0, t, nt, tx, &ty, &a, &b);
      int y0 = ty * tile - oy;
      if (y0 >= 0 && y0 + n <= h) inner_tiles(a, b, tile, ox, n, w, &lo, &hi);
      else lo = hi = a;
      float *row = v + (size_t)c * nt + t; /* tile k's outputs at row + (k - a) */
      if (hi > lo) tiles_in(tile, xc + (size_t)y0 * (size_t)w, (size_t)w, tile * lo - ox, hi - lo, row + (lo - a), cn,
                          sgn);
      for (int side = 0; side < 2; side++) {
        int p = side ? hi : a, q = side ? b : lo;
        for (; p < q; p += SEG) {
          int len = q - p < SEG ? q - p : SEG;
          fill_rows(g, xc, y0, tile * p - ox, n, tile * len + 2, buf, bs);
          tiles_in(tile, buf, (size_t)bs, 0, len, row + (p - a), cn, sgn);
        }
      }
      t += (size_t)(b - a);
    }
  }
}

/* A^T applied to six values: A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]. */
static inline __attribute__((always_inline)) void at6(float m0, float m1, float m2, float m3, float m4, float m5,
                                                      float o[4]) {
  float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
  o[0] = m0 + s12 + s34;
  o[1] = d12 + 2.0f * d34;
  o[2] = s12 + 4.0f * s34;
  o[3] = d12 + 8.0f * d34 + m5;
}

/* The 4x4 outputs of one tile from its 36 products q[k * mn] (A^T M A), bias added. */
static inline __attribute__((always_inline)) void tile_out4(const float *q, size_t mn, float bias, float o[4][4]) {
  float r[4][6];
  for (int j = 0; j < 6; j++) {
    float e[4];
    at6(q[(size_t)j * mn], q[(size_t)(6 + j) * mn], q[(size_t)(12 + j) * mn], q[(size_t)(18 + j) * mn],
        q[(size_t)(24 + j) * mn], q[(size_t)(30 + j) * mn], e);
    for (int i = 0; i < 4; i++) r[i][j] = e[i];
  }
  for (int i = 0; i < 4; i++) {
    float e[4];
    at6(r[i][0], r[i][1], r[i][2], r[i][3], r[i][4], r[i][5], e);
    for (int j = 0; j < 4; j++) o[i][j] = e[j] + bias;
  }
}

/* ---- both ----------------------------------------------------------------------------------- */

/* y = A^T M A (+ bias) for the tiles t0 .. t0+nt-1 (products planes mn apart), cropped at the
 * bottom and right edges. */
HOT_CLONES static void transform_output(const conv_geom *g, int tile, const float *mo, size_t mn, const float *bias,
                                        float *y, size_t t0, size_t nt, int tx, int threads) {
  const int oh = g->oh, ow = g->ow;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int m = 0; m < g->m; m++) {
    float bm = bias ? bias[m] : 0.0f;
    float *ym = y + (size_t)m * (size_t)oh * (size_t)ow;
    const float *src = mo + (size_t)m * nt;
    for (size_t t = 0; t < nt;) {
      int ty, a, b, lo = 0, hi = 0;
      tile_run(t0, t, nt, tx, &ty, &a, &b);
      int oy = ty * tile;
      if (oy + tile <= oh) inner_tiles(a, b, tile, 0, tile, ow, &lo, &hi);
      const float *q = src + t;
      float *yr = ym + (size_t)oy * (size_t)ow;
      for (int k = a; k < b; k++) {
        if (k >= lo && k < hi) continue;
        float o[4][4];
        if (tile == 4) tile_out4(q + (k - a), mn, bm, o);
        else tile_out2(q + (k - a), mn, bm, (float(*)[2])o);
        const float *of = &o[0][0];
        for (int i = 0; i < tile && oy + i < oh; i++)
          for (int j = 0; j < tile && tile * k + j < ow; j++)
            yr[(size_t)i * (size_t)ow + (size_t)(tile * k + j)] = of[i * tile + j];
      }
      if (tile == 4) {
#pragma GCC ivdep
        for (int k = lo; k < hi; k++) {
          float o[4][4];
          tile_out4(q + (k - a), mn, bm, o);
          for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) yr[(size_t)i * (size_t)ow + (size_t)(4 * k + j)] = o[i][j];
        }
      } else {
#pragma GCC ivdep
        for (int k = lo; k < hi; k++) {
          float o[2][2];
          tile_out2(q + (k - a), mn, bm, o);
          for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) yr[(size_t)i * (size_t)ow + (size_t)(2 * k + j)] = o[i][j];
        }
      }
      t += (size_t)(b - a);
    }
  }
}

int cpu_conv_winograd(const conv_geom *g, int tile, const float *x, const float *w, const float *bias, float *y,
                      float *scratch, size_t scratch_floats, int threads) {
  const int tx = (g->ow + tile - 1) / tile, nk = (tile + 2) * (tile + 2);
  const size_t tiles = cpu_winograd_tiles(g, tile), mc = (size_t)g->m * (size_t)g->c;
  float *u = scratch;
  size_t chunk = (scratch_floats - cpu_winograd_scratch(g, tile, 0)) / ((size_t)nk * ((size_t)g->c + (size_t)g->m));
  if (chunk > tiles) chunk = tiles;
  transform_weights(g, tile, w, u, threads);
  float *v = u + (size_t)nk * mc;
  int n_chunks = 0;
  for (size_t t0 = 0; t0 < tiles; t0 += chunk) {
    size_t nt = tiles - t0 < chunk ? tiles - t0 : chunk;
    size_t cs = (size_t)g->c * nt + PLANE_SKEW, ms = (size_t)g->m * nt + PLANE_SKEW;
    float *mo = v + (size_t)nk * cs;
    n_chunks++;
    transform_input(g, tile, x, v, cs, t0, nt, tx, 1, 1, 1.0f, threads);
    cpu_gemm_item items[36];
    for (int k = 0; k < nk; k++)
      items[k] = (cpu_gemm_item){u + (size_t)k * mc, v + (size_t)k * cs, mo + (size_t)k * ms, g->m, g->c, g->c};
    cpu_gemm_batch(items, nk, (int)nt, (int)nt, (int)nt, threads);
    transform_output(g, tile, mo, ms, bias, y, t0, nt, tx, threads);
    if (g->chunk_done && t0 + nt < tiles && g->chunk_done(g->user, (double)(t0 + nt) / (double)tiles)) return -1;
  }
  return n_chunks;
}

/* ---- backward (training) -------------------------------------------------------------------
 * Training keeps to F(2x2, 3x3), whose coefficients are exact: its gradients are checked step by
 * step against PyTorch's, and F(4x4, 3x3)'s rounding, carried across a ReLU's or an L1 loss's
 * kinks, moved a discriminator gradient 2.6e-2 from PyTorch's in four steps (limit 1e-3).
 * The data gradient of a 3x3 stride-1 pad-1 convolution is itself one: with dY zero-extended by
 * one pixel, a 'same' convolution with the transposed, flipped filters gives the gradient of the
 * padded input (halo included); folding the halo back (reflect, edge or dropped for zeros) gives
 * dX. So the Winograd forward above serves the backward too, 2.25x fewer products than GEMM. */

size_t cpu_winograd_backward_scratch(const conv_geom *g) {
  conv_geom d = *g;
  d.c = g->m;
  d.m = g->c;
  d.h = d.oh = g->h + 2;
  d.w = d.ow = g->w + 2;
  size_t ext = (size_t)g->m * (size_t)d.h * (size_t)d.w, out = (size_t)g->c * (size_t)d.h * (size_t)d.w;
  size_t wt = (size_t)g->m * (size_t)g->c * 9;
  return ext + out + wt + cpu_winograd_scratch(&d, 2, cpu_winograd_tiles(&d, 2));
}

void cpu_conv_backward_data_winograd(const conv_geom *g, const float *dy, const float *w, float *dx, bool accumulate,
                                     float *scratch, int threads) {
  conv_geom d = *g;
  d.c = g->m;
  d.m = g->c;
  d.h = d.oh = g->h + 2;
  d.w = d.ow = g->w + 2;
  d.pad_mode = PAD_CONSTANT;
  d.chunk_done = NULL;
  const size_t plane = (size_t)d.h * (size_t)d.w, oplane = (size_t)g->oh * (size_t)g->ow;
  float *ext = scratch, *out = ext + (size_t)g->m * plane, *wt = out + (size_t)g->c * plane, *ws = wt + (size_t)g->m * (size_t)g->c * 9;
  /* dY with a zero border of one pixel */
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int m = 0; m < g->m; m++) {
    float *e = ext + (size_t)m * plane;
    const float *s = dy + (size_t)m * oplane;
    memset(e, 0, sizeof(float) * (size_t)d.w);
    memset(e + (size_t)(d.h - 1) * (size_t)d.w, 0, sizeof(float) * (size_t)d.w);
    for (int y = 0; y < g->oh; y++) {
      float *row = e + (size_t)(y + 1) * (size_t)d.w;
      row[0] = row[d.w - 1] = 0.0f;
      memcpy(row + 1, s + (size_t)y * (size_t)g->ow, sizeof(float) * (size_t)g->ow);
    }
  }
  /* W'[c][m][a][b] = W[m][c][2-a][2-b] */
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int c = 0; c < g->c; c++)
    for (int m = 0; m < g->m; m++) {
      const float *f = w + ((size_t)m * (size_t)g->c + (size_t)c) * 9;
      float *t = wt + ((size_t)c * (size_t)g->m + (size_t)m) * 9;
      for (int k = 0; k < 9; k++) t[k] = f[8 - k];
    }
  cpu_conv_winograd(&d, 2, ext, wt, NULL, out, ws, cpu_winograd_scratch(&d, 2, cpu_winograd_tiles(&d, 2)), threads);
  int pads[4] = {g->pt, g->pl, g->pb, g->pr};
  cpu_pad_backward(out, dx, g->c, g->h, g->w, pads, g->pad_mode, accumulate, threads);
}

/* The weight gradient dW[m][c] = sum over pixels of dY[m] times the shifted input is a 3x3
 * correlation of the padded input with dY as the filter: over 2x2 blocks of dY it is Winograd
 * F(3x3, 2x2) (points 0, 1, -1, infinity): 16 GEMMs M x C x tiles instead of one M x 9C x pixels,
 * 2.25x fewer products. Transforms: B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 -1 0 1],
 * G = [1 0; 1/2 1/2; 1/2 -1/2; 0 1], A^T = [1 1 1 0; 0 1 -1 0; 0 1 1 1]. */

size_t cpu_winograd_wgrad_scratch(const conv_geom *g, size_t tiles) {
  return 16 * (size_t)g->m * (size_t)g->c + 16 * ((size_t)g->c + (size_t)g->m) * tiles + 2 * 16 * PLANE_SKEW;
}

/* The 16 values (G q G^T) of one 2x2 block q of dY, into dst[k * mn]. */
static inline __attribute__((always_inline)) void tile_dy(const float q[2][2], float *dst, size_t mn) {
  float r[4][2];
  for (int j = 0; j < 2; j++) {
    r[0][j] = q[0][j];
    r[1][j] = 0.5f * (q[0][j] + q[1][j]);
    r[2][j] = 0.5f * (q[0][j] - q[1][j]);
    r[3][j] = q[1][j];
  }
  for (int i = 0; i < 4; i++) {
    dst[(size_t)(i * 4 + 0) * mn] = r[i][0];
    dst[(size_t)(i * 4 + 1) * mn] = 0.5f * (r[i][0] + r[i][1]);
    dst[(size_t)(i * 4 + 2) * mn] = 0.5f * (r[i][0] - r[i][1]);
    dst[(size_t)(i * 4 + 3) * mn] = r[i][1];
  }
}

/* U[k][m][t - t0] (planes mn apart) for the 2x2 blocks t0 .. t0+nt-1 of dY, zero past its edges;
 * whole blocks of a row in one vectorised loop, as in transform_input. */
HOT_CLONES static void wgrad_dy(const conv_geom *g, const float *dy, float *u, size_t mn, size_t t0, size_t nt, int tx,
                                int threads) {
  const int oh = g->oh, ow = g->ow;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int m = 0; m < g->m; m++) {
    const float *ym = dy + (size_t)m * (size_t)oh * (size_t)ow;
    for (size_t t = 0; t < nt;) {
      int ty, a, b, lo = 0, hi = 0;
      tile_run(t0, t, nt, tx, &ty, &a, &b);
      int oy = ty * 2;
      if (oy + 2 <= oh) inner_tiles(a, b, 2, 0, 2, ow, &lo, &hi);
      float *row = u + (size_t)m * nt + t; /* block k's values at row + (k - a) */
      for (int k = a; k < b; k++) {
        if (k >= lo && k < hi) continue;
        float q[2][2];
        for (int i = 0; i < 2; i++)
          for (int j = 0; j < 2; j++)
            q[i][j] = (oy + i < oh && 2 * k + j < ow) ? ym[(size_t)(oy + i) * (size_t)ow + (size_t)(2 * k + j)] : 0.0f;
        tile_dy(q, row + (k - a), mn);
      }
      if (hi > lo) {
        const float *r0 = ym + (size_t)oy * (size_t)ow, *r1 = r0 + ow;
#pragma GCC ivdep
        for (int k = lo; k < hi; k++) {
          float q[2][2] = {{r0[2 * k], r0[2 * k + 1]}, {r1[2 * k], r1[2 * k + 1]}};
          tile_dy(q, row + (k - a), mn);
        }
      }
      t += (size_t)(b - a);
    }
  }
}

void cpu_conv_backward_weights_winograd(const conv_geom *g, const float *x, const float *dy, float *dw, float *db,
                                        float *scratch, size_t scratch_floats, int threads) {
  const int ty = (g->oh + 1) / 2, tx = (g->ow + 1) / 2;
  const size_t tiles = (size_t)ty * (size_t)tx, mc = (size_t)g->m * (size_t)g->c;
  float *acc = scratch, *v = acc + 16 * mc;
  size_t chunk = (scratch_floats - 16 * mc - 2 * 16 * PLANE_SKEW) / (16 * ((size_t)g->c + (size_t)g->m));
  if (chunk > tiles) chunk = tiles;
  for (size_t t0 = 0; t0 < tiles; t0 += chunk) {
    size_t nt = tiles - t0 < chunk ? tiles - t0 : chunk;
    size_t cs = (size_t)g->c * nt + PLANE_SKEW, ms = (size_t)g->m * nt + PLANE_SKEW;
    float *u = v + 16 * cs;
    transform_input(g, 2, x, v, cs, t0, nt, tx, g->pt, g->pl, -1.0f, threads);
    wgrad_dy(g, dy, u, ms, t0, nt, tx, threads);
    /* the 16 products share out over the threads, each one a single-threaded GEMM (OpenBLAS runs
     * one thread inside a parallel region): one fork instead of sixteen */
#pragma omp parallel for num_threads(threads <= 16 ? threads : 1) schedule(dynamic, 1)
    for (int k = 0; k < 16; k++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->m, g->c, (int)nt, 1.0f, u + (size_t)k * ms, (int)nt,
                  v + (size_t)k * cs, (int)nt, t0 ? 1.0f : 0.0f, acc + (size_t)k * mc, g->c);
  }
  /* dW += A^T M A per filter */
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < mc; i++) {
    float q[4][4], r[3][4];
    for (int k = 0; k < 16; k++) q[k / 4][k % 4] = acc[(size_t)k * mc + i];
    for (int j = 0; j < 4; j++) {
      r[0][j] = q[0][j] + q[1][j] + q[2][j];
      r[1][j] = q[1][j] - q[2][j];
      r[2][j] = q[1][j] + q[2][j] + q[3][j];
    }
    float *f = dw + i * 9;
    for (int a = 0; a < 3; a++) {
      f[a * 3 + 0] += r[a][0] + r[a][1] + r[a][2];
      f[a * 3 + 1] += r[a][1] - r[a][2];
      f[a * 3 + 2] += r[a][1] + r[a][2] + r[a][3];
    }
  }
  if (db) {
    const size_t ohw = (size_t)g->oh * (size_t)g->ow;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int m = 0; m < g->m; m++) {
      const float *r = dy + (size_t)m * ohw;
      double s = 0;
      for (size_t t = 0; t < ohw; t++) s += r[t];
      db[m] += (float)s;
    }
  }
}
