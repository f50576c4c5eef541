/* cpu/winograd_s2.c: Winograd F(2x2, 2x2) for the stride-2 convolutions of the generators and
 * the PatchGAN: 4x4 Conv (padding 1 of any mode) and ConvTranspose (padding 1) of the U-Net and the
 * PatchGAN, and 3x3 Conv (padding 1) and ConvTranspose (padding 1, output padding 1) of the ResNet,
 * through OpenBLAS. Per output and input channel a 4x4 filter takes 9 products where the GEMM path
 * computes 16, a 3x3 one 6.25 where it computes 9.
 *
 * Split into its sub-pixel phases, each is a sum of 2x2 stride-1 correlations. A strided Conv
 * reads four phases of the input (even/odd rows x even/odd columns), each with a 2x2 slice of the
 * filter: the phases become 4C input channels of one 2x2 correlation. A transposed convolution
 * writes four phases of the output, each a 2x2 correlation of the input with another slice:
 * they become 4M output channels, and with the odd-row phase's tiles taken one output row
 * earlier, all four read the same 3x3 input patch, so one input transform serves them.
 *
 * A 3x3 filter is the 4x4 one with its last row and column zero: at padding 1 both read and
 * write the same pixels (a Conv's output row y reads input rows 2y - 1 .. 2y + 2, a transposed
 * one's input row i writes output rows 2i - 1 .. 2i + 2, the last with a zero tap). Along each
 * direction one phase's slice (f0, f1) then has a zero tap, and its transform (f0, f0 + f1, f1)
 * a zero at one point: a Conv's odd phase (taps 1 and 3) at point 2, a ConvTranspose's even
 * phase (taps 3 and 1) at point 0. The GEMM of each point leaves out the phases that are zero
 * there.
 *
 * F(2, 2): B^T = [1 -1 0; 0 1 0; 0 -1 1], G = [1 0; 1 1; 0 1], A^T = [1 1 0; 0 1 1]: every
 * coefficient is 0 or +-1, so the result stays within float rounding of the direct sum.
 */
#include <string.h>

#include "cpu.h"

/* A tile is 2x2 outputs of every phase. Below these many tiles the per-run weight transform
 * (2.25x the filter's size) and GEMMs only that wide cost more than the products saved (bench,
 * one thread: Conv 256 -> 512 at 16x16 outputs (64 tiles) 12.0 -> 10.0 ms; ConvTranspose
 * 1024 -> 256 from 16x16 (81 tiles) 22.9 -> 25.4 ms, 512 -> 128 from 32x32 (289) 22.8 -> 18.7). */
#define MIN_TILES_CONV 64
#define MIN_TILES_CONVT 256
/* A 3x3 filter saves fewer products (25 of 36): below about 512 tiles GEMM is as fast or faster
 * (one thread, GEMM against this: Conv 128 -> 256 at 32x32 outputs (256 tiles) 7.5 against 7.1-8.6 ms, at 48x48
 * (576) 16.2 against 14.7; ConvTranspose 256 -> 128 from 32x32 (289) 7.1 against 7.9, from 48x48
 * (625) 17.3 against 16.3). */
#define MIN_TILES_3X3 512

static int tiles_y(const conv_geom *g, bool transpose) { return transpose ? g->h / 2 + 1 : (g->oh + 1) / 2; }
static int tiles_x(const conv_geom *g, bool transpose) { return transpose ? g->w / 2 + 1 : (g->ow + 1) / 2; }

/* The most rows of the products and of V, at the points that compute every phase. */
static size_t rows_out(const conv_geom *g, bool transpose) { return (size_t)g->m * (transpose ? 4u : 1u); }
static size_t rows_in(const conv_geom *g, bool transpose) { return (size_t)g->c * (transpose ? 1u : 4u); }

/* A chunk: 8 MiB of V and products, or 512 tiles where those are fewer. The run's scratch is fresh
 * memory: a chunk of every tile of the ResNet's first stride-2 layer at 256x256 (57 MB) cost it
 * 17 ms of page faults, while chunks of 4 to 16 MiB ran as fast as one at 512x512 (one thread).
 * But sgemm packs a product's U (M x K) anew for every chunk, and the U-Net's 512- and 1024-channel
 * layers got only 62 to 227 tiles into 8 MiB: ConvTranspose 1024 -> 256 from 32x32 took 77-84 ms
 * in 113-tile chunks, 70-71 in one of 289 (Intel Xeon with AVX-512, one thread; the U-Net
 * 512x512's per-step sum 331-339 -> 329 ms, bench/NOTES.md). */
#define CHUNK_FLOATS ((size_t)1 << 21)
#define CHUNK_TILES 512

/* The distance between the 9 matrices of U, V and the products: their size and one cache line,
 * so that the 9 streams a transform writes do not fall on one cache set (sizes that are
 * multiples of 4 KiB made the weight transform 5x slower). */
static size_t kstride(size_t floats) { return floats + 16; }

/* The floats between rows of a U matrix `inner` long: one cache line more, so that rows a
 * multiple of 4 KiB long (1024 input channels) do not all fall on one cache set while the
 * weight transform writes a block of them. */
static size_t u_pitch(size_t inner) { return inner + 16; }

/* The distance between the 9 U matrices: the most rows, each at the widest row's pitch. */
static size_t u_stride(const conv_geom *g, bool transpose) {
  return kstride(rows_out(g, transpose) * u_pitch(rows_in(g, transpose)));
}

/* The inner size of the product at a point that computes n phases: a Conv's U has C n columns,
 * a ConvTranspose's C. */
static size_t point_inner(const conv_geom *g, bool transpose, int n) {
  return (size_t)g->c * (transpose ? 1u : (size_t)n);
}

size_t cpu_s2_tiles(const conv_geom *g, bool transpose) {
  return (size_t)tiles_y(g, transpose) * (size_t)tiles_x(g, transpose);
}

size_t cpu_s2_chunk_tiles(const conv_geom *g, bool transpose) {
  size_t most = CHUNK_FLOATS / (9 * (rows_in(g, transpose) + rows_out(g, transpose))), tiles = cpu_s2_tiles(g, transpose);
  if (most < CHUNK_TILES) most = CHUNK_TILES;
  return most < tiles ? most : tiles;
}

bool cpu_s2_applies(const conv_geom *g, bool transpose) {
  const int k = g->kh;
  if ((k != 3 && k != 4) || g->kw != k || g->sh != 2 || g->sw != 2 || g->dh != 1 || g->dw != 1) return false;
  /* a transposed 3x3 one writes the 4x4 one's 2h rows only with output padding 1 */
  const int op = transpose && k == 3;
  if (g->oph != op || g->opw != op) return false;
  if (g->pt != 1 || g->pl != 1 || g->pb != 1 || g->pr != 1 || g->c < 16) return false;
  /* with fewer outputs the input transform outweighs the GEMMs (128 -> 3 at 256x256: 3.7 ms by
   * GEMM, 8.2 by Winograd) */
  if (g->m < 16) return false;
  if (transpose ? g->oh != 2 * g->h || g->ow != 2 * g->w
                : g->oh != (g->h + 2 - k) / 2 + 1 || g->ow != (g->w + 2 - k) / 2 + 1)
    return false;
  return cpu_s2_tiles(g, transpose) >= (k == 3 ? MIN_TILES_3X3 : transpose ? MIN_TILES_CONVT : MIN_TILES_CONV);
}

size_t cpu_s2_scratch(const conv_geom *g, bool transpose, size_t tiles) {
  return 9 * (u_stride(g, transpose) + kstride(rows_in(g, transpose) * tiles) + kstride(rows_out(g, transpose) * tiles));
}

/* The phases each transform point k = 3 i + j (i down, j across) computes: n[k] of them, phase
 * q = 2 qy + qx at place slot[k][q] among them, or -1 where its transform is zero (3x3 filters).
 * A Conv's U and V at point k have C n[k] columns and rows, (c, place); a ConvTranspose's U and
 * products M n[k] rows, (place, m). */
typedef struct {
  int n[9], slot[9][4];
} s2_points;

static s2_points points(const conv_geom *g, bool transpose) {
  s2_points p;
  const int zero_at = g->kh == 3 ? (transpose ? 0 : 2) : -1, zero_phase = transpose ? 0 : 1;
  for (int k = 0; k < 9; k++) {
    const int ny = k / 3 == zero_at ? 1 : 2, nx = k % 3 == zero_at ? 1 : 2;
    p.n[k] = ny * nx;
    for (int q = 0; q < 4; q++) {
      const int qy = q / 2, qx = q % 2;
      const int ry = ny == 2 ? qy : qy == zero_phase ? -1 : 0, rx = nx == 2 ? qx : qx == zero_phase ? -1 : 0;
      p.slot[k][q] = ry < 0 || rx < 0 ? -1 : ry * nx + rx;
    }
  }
  return p;
}

/* The 4x4 filter tap of a transposed convolution's output phase q (0: even rows, 1: odd) that
 * meets input row a (0: the patch's first row, 1: its second) of a 2x2 correlation. */
static const int convt_tap[2][2] = {{3, 1}, {2, 0}};

/* Filters a step of the weight transform: one vector of each tap. */
#define WB 16

/* U[k][row][col] as s2_points lays it out, from a kxk filter (k = 3 or 4; taps outside a 3x3 one
 * are zero). Per output m, WB input channels at a time: their taps gathered into vectors (fv[16]:
 * zeros, for the taps a 3x3 filter lacks), the 3x3 transform G f G^T of each phase's 2x2 slice f
 * taken lane-wise, and each point's result stored as runs of consecutive floats (a Conv's phases
 * interleaved, as its columns are). The same sums as one filter at a time: the same bits. */
HOT_CLONES static void transform_weights(const conv_geom *g, bool transpose, const s2_points *pt, const float *w,
                                         float *u, int threads) {
  const int kk = g->kh;
  const size_t plane = u_stride(g, transpose), taps = (size_t)(kk * kk);
  /* tap[q][a * 2 + b]: the filter tap of element (a, b) of phase q's slice, -1 where it is zero */
  int tap[4][4];
  for (int q = 0; q < 4; q++)
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 2; b++) {
        const int qy = q / 2, qx = q % 2;
        const int ty = transpose ? convt_tap[qy][a] : 2 * a + qy, tx = transpose ? convt_tap[qx][b] : 2 * b + qx;
        tap[q][a * 2 + b] = ty < kk && tx < kk ? ty * kk + tx : -1;
      }
  /* blocks of WB channels x mb outputs. A Conv's filters are m-major: one output a block reads
   * them in order. A ConvTranspose's are c-major: WB outputs a block make WB runs of WB
   * consecutive filters (one by one across outputs, each read missed the cache). */
  const int mb = transpose ? WB : 1, cbs = (g->c + WB - 1) / WB, blocks = cbs * ((g->m + mb - 1) / mb);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int blk = 0; blk < blocks; blk++)
    for (int m = blk / cbs * mb; m < g->m && m < (blk / cbs + 1) * mb; m++) {
      const int c0 = blk % cbs * WB, nl = g->c - c0 < WB ? g->c - c0 : WB;
      float fv[17][WB], t[4][9][WB];
      for (int l = 0; l < WB; l++) {
        const size_t c = (size_t)(c0 + (l < nl ? l : 0));
        const float *f = transpose ? w + (c * (size_t)g->m + (size_t)m) * taps : w + ((size_t)m * (size_t)g->c + c) * taps;
        for (size_t k = 0; k < taps; k++) fv[k][l] = f[k];
        fv[16][l] = 0.0f;
      }
      for (int q = 0; q < 4; q++) {
        const float *f0 = fv[tap[q][0] < 0 ? 16 : tap[q][0]], *f1 = fv[tap[q][1] < 0 ? 16 : tap[q][1]];
        const float *f2 = fv[tap[q][2] < 0 ? 16 : tap[q][2]], *f3 = fv[tap[q][3] < 0 ? 16 : tap[q][3]];
        for (int l = 0; l < WB; l++) {
          const float r0 = f0[l] + f2[l], r1 = f1[l] + f3[l];
          t[q][0][l] = f0[l];
          t[q][1][l] = f0[l] + f1[l];
          t[q][2][l] = f1[l];
          t[q][3][l] = r0;
          t[q][4][l] = r0 + r1;
          t[q][5][l] = r1;
          t[q][6][l] = f2[l];
          t[q][7][l] = f2[l] + f3[l];
          t[q][8][l] = f3[l];
        }
      }
      for (int k = 0; k < 9; k++) {
        float *uk = u + (size_t)k * plane;
        const size_t pitch = u_pitch(point_inner(g, transpose, pt->n[k]));
        if (transpose) {
          for (int q = 0; q < 4; q++) {
            const int sl = pt->slot[k][q];
            if (sl < 0) continue;
            float *d = uk + ((size_t)sl * (size_t)g->m + (size_t)m) * pitch + (size_t)c0;
            /* a whole block as one fixed-size copy: a loop of run-time length became `rep movsq` */
            if (nl == WB) memcpy(d, t[q][k], sizeof t[q][k]);
            else
              for (int l = 0; l < nl; l++) d[l] = t[q][k][l];
          }
          continue;
        }
        /* a Conv's row m holds (c, place) */
        const float *src[4] = {0};
        for (int q = 0; q < 4; q++)
          if (pt->slot[k][q] >= 0) src[pt->slot[k][q]] = t[q][k];
        float *d = uk + (size_t)m * pitch + (size_t)c0 * (size_t)pt->n[k];
        if (pt->n[k] == 4)
          for (int l = 0; l < nl; l++) {
            d[4 * l] = src[0][l];
            d[4 * l + 1] = src[1][l];
            d[4 * l + 2] = src[2][l];
            d[4 * l + 3] = src[3][l];
          }
        else if (pt->n[k] == 2)
          for (int l = 0; l < nl; l++) {
            d[2 * l] = src[0][l];
            d[2 * l + 1] = src[1][l];
          }
        else
          for (int l = 0; l < nl; l++) d[l] = src[0][l];
      }
    }
}

/* Tiles are transformed a block of one tile row at a time, each transform a loop over the block. */
#define BLK 64

/* seg[0 .. len) = input row iy of plane xc from column x0 on, through the padding (a row or
 * column outside reads as `mode` pads: zero, reflected or replicated). */
static void padded_segment(const float *xc, int h, int w, int iy, int x0, int len, int mode, float *seg) {
  iy = map_index(iy, h, mode);
  if (iy < 0) {
    memset(seg, 0, sizeof(float) * (size_t)len);
    return;
  }
  const float *row = xc + (size_t)iy * (size_t)w;
  /* seg[lo .. hi) lies inside the row: only the ends go through the padding */
  int lo = x0 < 0 ? -x0 : 0, hi = w - x0 < len ? w - x0 : len;
  if (lo > len) lo = len;
  if (hi < lo) hi = lo;
  memcpy(seg + lo, row + x0 + lo, sizeof(float) * (size_t)(hi - lo));
  for (int j = 0; j < lo; j++) {
    int ix = map_index(x0 + j, w, mode);
    seg[j] = ix < 0 ? 0.0f : row[ix];
  }
  for (int j = hi; j < len; j++) {
    int ix = map_index(x0 + j, w, mode);
    seg[j] = ix < 0 ? 0.0f : row[ix];
  }
}

/* V[k][row][t - t0] for tiles t0 .. t0+nt-1. A Conv's tile (ty, tx) reads the 6x6 input patch at
 * (4 ty - 1, 4 tx - 1) through the padding, phase (ey, ex) its pixels (ey + 2i, ex + 2j); a
 * ConvTranspose's reads the 3x3 patch at (2 ty - 1, 2 tx - 1), zero outside the input. B^T d B
 * is taken along rows (e = d B per patch row and phase) and then down columns. */
HOT_CLONES static void transform_input(const conv_geom *g, bool transpose, const s2_points *pt, const float *x,
                                       float *v, size_t t0, size_t nt, int threads) {
  const int h = g->h, w = g->w, tx = tiles_x(g, transpose);
  const int step = transpose ? 2 : 4, span = transpose ? 3 : 6, nph = transpose ? 1 : 2, ds = transpose ? 1 : 2;
  const int mode = transpose ? PAD_CONSTANT : g->pad_mode;
  const size_t stride = kstride(rows_in(g, transpose) * nt), t1 = t0 + nt;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int c = 0; c < g->c; c++) {
    const float *xc = x + (size_t)c * (size_t)h * (size_t)w;
    float seg[BLK * 4 + 4], ph[4][BLK + 1], e[6][2][3][BLK], sink[BLK];
    for (size_t ty = t0 / (size_t)tx; ty * (size_t)tx < t1; ty++) {
      size_t row0 = ty * (size_t)tx;
      int lo = row0 < t0 ? (int)(t0 - row0) : 0, hi = row0 + (size_t)tx > t1 ? (int)(t1 - row0) : tx;
      for (int bx = lo; bx < hi; bx += BLK) {
        int nb = hi - bx < BLK ? hi - bx : BLK;
        for (int i = 0; i < span; i++) {
          padded_segment(xc, h, w, (int)ty * step - 1 + i, bx * step - 1, nb * step + step, mode, seg);
          /* ph[r][b] = seg[b * step + r]: a tile's three taps of phase ex are ph[ex][b],
           * ph[ex + ds][b] and ph[ex][b + 1], so the loops below read consecutive floats */
          if (step == 4)
            for (int b = 0; b <= nb; b++) {
              ph[0][b] = seg[4 * b];
              ph[1][b] = seg[4 * b + 1];
              ph[2][b] = seg[4 * b + 2];
              ph[3][b] = seg[4 * b + 3];
            }
          else
            for (int b = 0; b <= nb; b++) {
              ph[0][b] = seg[2 * b];
              ph[1][b] = seg[2 * b + 1];
            }
          for (int ex = 0; ex < nph; ex++) {
            const float *p0 = ph[ex], *p1 = ph[ex + ds];
            for (int b = 0; b < nb; b++) {
              e[i][ex][0][b] = p0[b] - p1[b];
              e[i][ex][1][b] = p1[b];
              e[i][ex][2][b] = p0[b + 1] - p1[b];
            }
          }
        }
        for (int ey = 0; ey < nph; ey++)
          for (int ex = 0; ex < nph; ex++) {
            const int r0 = ey, r1 = ey + ds, r2 = ey + 2 * ds;
            for (int j = 0; j < 3; j++) {
              /* the points (0, j), (1, j), (2, j); one this phase leaves out is written to `sink` */
              float *d[3];
              for (int i = 0; i < 3; i++) {
                const int k = 3 * i + j, sl = transpose ? 0 : pt->slot[k][ey * 2 + ex];
                size_t r = transpose ? (size_t)c : (size_t)c * (size_t)pt->n[k] + (size_t)sl;
                d[i] = sl < 0 ? sink : v + (size_t)k * stride + r * nt + (row0 + (size_t)bx - t0);
              }
              float *d0 = d[0], *d1 = d[1], *d2 = d[2];
              for (int b = 0; b < nb; b++) {
                d0[b] = e[r0][ex][j][b] - e[r1][ex][j][b];
                d1[b] = e[r1][ex][j][b];
                d2[b] = e[r2][ex][j][b] - e[r1][ex][j][b];
              }
            }
          }
      }
    }
  }
}

/* o[s][u][b] = (A^T Mo A)[s][u] + bias for the tiles of a block: Mo's point k from src[k]. */
static inline void output_block(const float *const src[9], int nb, float bias, float o[2][2][BLK]) {
  for (int b = 0; b < nb; b++) {
    float s[9];
    for (int k = 0; k < 9; k++) s[k] = src[k][b];
    for (int i = 0; i < 2; i++) {
      float r0 = s[3 * i] + s[3 * i + 3], r1 = s[3 * i + 1] + s[3 * i + 4], r2 = s[3 * i + 2] + s[3 * i + 5];
      o[i][0][b] = r0 + r1 + bias;
      o[i][1][b] = r1 + r2 + bias;
    }
  }
}

/* What a point reads for a phase it leaves out. */
static const float zero_block[BLK];

/* y from the products Mo[k][row][t - t0], outside the output cropped. A Conv's tile (ty, tx) is
 * outputs (2 ty + s, 2 tx + u); a ConvTranspose's phase (qy, qx) lands on rows 4 ty + 2 s
 * (qy = 0) or 4 ty - 1 + 2 s (qy = 1), columns alike; its four phases are done together. */
HOT_CLONES static void transform_output(const conv_geom *g, bool transpose, const s2_points *pt, const float *mo,
                                        const float *bias, float *y, size_t t0, size_t nt, int threads) {
  const size_t stride = kstride(rows_out(g, transpose) * nt), t1 = t0 + nt;
  const int oh = g->oh, ow = g->ow, tx = tiles_x(g, transpose), nq = transpose ? 4 : 1;
  const int step = transpose ? 4 : 2, ds = transpose ? 2 : 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int m = 0; m < g->m; m++) {
    float bm = bias ? bias[m] : 0.0f, o[4][2][2][BLK];
    float *ym = y + (size_t)m * (size_t)oh * (size_t)ow;
    for (size_t ty = t0 / (size_t)tx; ty * (size_t)tx < t1; ty++) {
      size_t row0 = ty * (size_t)tx;
      int lo = row0 < t0 ? (int)(t0 - row0) : 0, hi = row0 + (size_t)tx > t1 ? (int)(t1 - row0) : tx;
      for (int bx = lo; bx < hi; bx += BLK) {
        int nb = hi - bx < BLK ? hi - bx : BLK;
        for (int q = 0; q < nq; q++) {
          const float *src[9];
          for (int k = 0; k < 9; k++) {
            const int sl = transpose ? pt->slot[k][q] : 0;
            src[k] = sl < 0 ? zero_block
                            : mo + (size_t)k * stride + ((size_t)sl * (size_t)g->m + (size_t)m) * nt +
                                  (row0 + (size_t)bx - t0);
          }
          output_block(src, nb, bm, o[q]);
        }
        for (int q = 0; q < nq; q++)
          for (int s = 0; s < 2; s++) {
            int yy = (int)ty * step - q / 2 + s * ds;
            if (yy < 0 || yy >= oh) continue;
            float *yr = ym + (size_t)yy * (size_t)ow;
            for (int u = 0; u < 2; u++) {
              int x0 = bx * step - q % 2 + u * ds;
              const float *src = o[q][s][u];
              for (int b = 0; b < nb; b++) {
                int xx = x0 + b * step;
                if (xx >= 0 && xx < ow) yr[xx] = src[b];
              }
            }
          }
      }
    }
  }
}

int cpu_conv_s2(const conv_geom *g, bool transpose, const float *x, const float *w, const float *bias, float *y,
                float *scratch, size_t scratch_floats, int threads) {
  const size_t mo = rows_out(g, transpose), ki = rows_in(g, transpose), tiles = cpu_s2_tiles(g, transpose);
  const size_t us = u_stride(g, transpose);
  const s2_points pt = points(g, transpose);
  float *u = scratch;
  /* chunk: the most tiles whose V and products fit beside U, at most cpu_s2_chunk_tiles */
  const size_t most = cpu_s2_chunk_tiles(g, transpose);
  size_t chunk = (scratch_floats - cpu_s2_scratch(g, transpose, 0)) / (9 * (ki + mo));
  if (chunk < 1) chunk = 1;
  if (chunk > most) chunk = most;
  transform_weights(g, transpose, &pt, w, u, threads);
  float *v = u + 9 * us;
  int n_chunks = 0;
  for (size_t t0 = 0; t0 < tiles; t0 += chunk) {
    size_t nt = tiles - t0 < chunk ? tiles - t0 : chunk, vs = kstride(ki * nt), ps = kstride(mo * nt);
    float *prod = v + 9 * vs;
    n_chunks++;
    transform_input(g, transpose, &pt, x, v, t0, nt, threads);
    cpu_gemm_item items[9];
    for (int k = 0; k < 9; k++) {
      const int rows = (int)(transpose ? (size_t)g->m * (size_t)pt.n[k] : (size_t)g->m);
      const size_t inner = point_inner(g, transpose, pt.n[k]);
      items[k] = (cpu_gemm_item){u + (size_t)k * us, v + (size_t)k * vs, prod + (size_t)k * ps, rows, (int)inner,
                                 (int)u_pitch(inner)};
    }
    cpu_gemm_batch(items, 9, (int)nt, (int)nt, (int)nt, threads);
    transform_output(g, transpose, &pt, prod, bias, y, t0, nt, threads);
    if (g->chunk_done && t0 + nt < tiles && g->chunk_done(g->user, (double)(t0 + nt) / (double)tiles)) return -1;
  }
  return n_chunks;
}
