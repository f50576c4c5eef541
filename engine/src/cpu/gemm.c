/* cpu/gemm.c: the convolutions' matrix products: OpenBLAS sgemm, and our own kernel for transposed
 * products only a few columns wide (the U-Net's innermost ConvTranspose layers and the Conv data
 * gradients of 1 to 16 pixels), where sgemm packs the whole weight matrix for a handful of
 * columns and moves it at a third of the memory bandwidth. How wide it goes (cpu.h) is where it
 * still beat sgemm on both AVX-512 and AVX2 (bench/NOTES.md).
 *
 * The Winograd convolutions' batches of products are shared out here too, by columns, evenly over
 * the threads; products up to 64 columns wide by rows (OpenBLAS's own threading handles them
 * badly).
 *
 * Each output element is one sum in a fixed order that does not depend on the thread count. The
 * only file built with floating-point contraction (FMA; meson: libi2i_fma).
 */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "cpu.h"

/* 8 floats as one value (GCC vector extension: one AVX2 register, as in direct.c), moved through
 * memcpy. */
#define LANES 8
typedef float vf __attribute__((vector_size(LANES * 4)));

/* A transposed product works on MC rows of C at a time, all of its at most CPU_GEMM_SMALL_TN
 * columns: their sums (32 KiB) stay in L1 while A's rows go by four at a time, each read as MC
 * consecutive floats (sgemm's packing, or a strip 16 wide down all k rows, left the prefetcher
 * behind: 1024 x 8192 weights times 4 columns 6.0 ms by sgemm, 3.0 ms here). */
#define MC 512
/* Floats of a row of C one step updates: two vectors, so that each broadcast B value feeds two
 * multiply-adds. */
#define TN_STEP (2 * LANES)
/* Rows of A ahead that a step asks the cache for, one line a row. The weights are cold in a run
 * (last read a run ago), and each row is read MC floats at a time, too short a stretch for the
 * hardware prefetcher: 1024 x 8192 weights times 4 columns with the caches flushed took 3.3 ms
 * without the hint, 2.6 ms with it (results bit-identical). */
#define TN_AHEAD 8

/* c0[j][0 .. TN_STEP) += a_r[0 .. TN_STEP) * b_r[j] summed over the four rows r, for the nr
 * columns j (rows of c0 mc apart). */
static inline __attribute__((always_inline)) void tn_rows4(const float *a0, size_t lda, const float *b0, size_t ldb,
                                                          int nr, float *c0, size_t mc) {
  vf x[4][2];
  for (int r = 0; r < 4; r++)
    for (int h = 0; h < 2; h++) memcpy(&x[r][h], a0 + (size_t)r * lda + (size_t)(h * LANES), sizeof x[r][h]);
  for (int j = 0; j < nr; j++) {
    const float b[4] = {b0[j], b0[ldb + (size_t)j], b0[2 * ldb + (size_t)j], b0[3 * ldb + (size_t)j]};
    for (int h = 0; h < 2; h++) {
      vf acc;
      memcpy(&acc, c0 + (size_t)j * mc + (size_t)(h * LANES), sizeof acc);
      acc += x[0][h] * b[0] + x[1][h] * b[1] + x[2][h] * b[2] + x[3][h] * b[3];
      memcpy(c0 + (size_t)j * mc + (size_t)(h * LANES), &acc, sizeof acc);
    }
  }
}

/* C[m][n] = A^T B with A k x m, n at most CPU_GEMM_SMALL_TN. */
FMA_CLONES static void small_tn(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                                int ldc, int threads) {
  const int chunks = (m + MC - 1) / MC, k4 = k & ~3;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int ch = 0; ch < chunks; ch++) {
    const int m0 = ch * MC, mw = m - m0 < MC ? m - m0 : MC, body = mw / TN_STEP * TN_STEP;
    float ct[MC * CPU_GEMM_SMALL_TN] __attribute__((aligned(64)));
    memset(ct, 0, sizeof ct);
    for (int kk = 0; kk < k4; kk += 4) {
      const float *ar = a + (size_t)kk * (size_t)lda + (size_t)m0, *br = b + (size_t)kk * (size_t)ldb;
      const bool ahead = kk + TN_AHEAD + 4 <= k;
      for (int v = 0; v < body; v += TN_STEP) {
        if (ahead)
          for (int r = 0; r < 4; r++) __builtin_prefetch(ar + (size_t)(TN_AHEAD + r) * (size_t)lda + (size_t)v);
        tn_rows4(ar + v, (size_t)lda, br, (size_t)ldb, n, ct + v, MC);
      }
      for (int i = body; i < mw; i++)
        for (int j = 0; j < n; j++)
          ct[(size_t)j * MC + (size_t)i] += ar[i] * br[j] + ar[(size_t)lda + (size_t)i] * br[(size_t)ldb + (size_t)j] +
                                            ar[2 * (size_t)lda + (size_t)i] * br[2 * (size_t)ldb + (size_t)j] +
                                            ar[3 * (size_t)lda + (size_t)i] * br[3 * (size_t)ldb + (size_t)j];
    }
    for (int kk = k4; kk < k; kk++) {
      const float *ar = a + (size_t)kk * (size_t)lda + (size_t)m0, *br = b + (size_t)kk * (size_t)ldb;
      for (int i = 0; i < mw; i++)
        for (int j = 0; j < n; j++) ct[(size_t)j * MC + (size_t)i] += ar[i] * br[j];
    }
    for (int i = 0; i < mw; i++)
      for (int j = 0; j < n; j++) c[(size_t)(m0 + i) * (size_t)ldc + (size_t)j] = ct[(size_t)j * MC + (size_t)i];
  }
}

/* OpenBLAS 0.3.21 computes a product of at most 100^3 multiply-adds with its small-matrix kernel
 * (the Skylake-X permit), which sums in another order: a piece that small cut from a larger product
 * would differ from the whole in the last bits and make the result depend on the thread count. */
#define SMALL_GEMM 1e6

/* A product at most this many columns wide is shared out by rows here (below). */
#define SPLIT_ROWS_N 64

void cpu_gemm(bool trans_a, int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
              int threads) {
  if (trans_a && n <= CPU_GEMM_SMALL_TN) {
    small_tn(m, n, k, a, lda, b, ldb, c, ldc, threads);
    return;
  }
  /* OpenBLAS shares a product only a few columns wide badly: on two threads the U-Net's inner
   * Convs (512 x 8192 weights times 4 to 64 columns) ran up to 2.5x slower than on one. Such a
   * product is split by rows instead, in blocks of 16 (OpenBLAS's row tile, so each piece's tiles
   * are the whole product's), each thread one single-threaded sgemm: every output is the sum it
   * is in the whole product, on any thread count. Pieces stay above the small-matrix kernel. */
  const int blocks = (m + 15) / 16;
  const double most = (double)m * (double)n * (double)k / (2 * SMALL_GEMM); /* pieces of 2x the permit */
  int parts = threads < blocks ? threads : blocks;
  if (most < parts) parts = (int)most;
  if (n <= SPLIT_ROWS_N && parts > 1) {
#pragma omp parallel num_threads(parts)
    {
      const int p = omp_get_thread_num(), np = omp_get_num_threads();
      const int r0 = (int)((long)blocks * p / np) * 16, r1 = (int)((long)blocks * (p + 1) / np) * 16;
      const int rows = (r1 < m ? r1 : m) - r0;
      if (rows > 0)
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, rows, n, k, 1.0f,
                    trans_a ? a + r0 : a + (size_t)r0 * (size_t)lda, lda, b, ldb, 0.0f, c + (size_t)r0 * (size_t)ldc,
                    ldc);
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, 0.0f,
              c, ldc);
}

/* A place in the batch: item `item`, column `col`. */
typedef struct {
  int item, col;
} batch_at;

void cpu_gemm_batch(const cpu_gemm_item *items, int count, int n, int ldb, int ldc, int threads) {
  /* the Winograd convolutions have 9 to 36 products; a longer batch goes in groups */
  enum { MOST = 64, TEAM = 256 };
  for (; count > MOST; items += MOST, count -= MOST) cpu_gemm_batch(items, MOST, n, ldb, ldc, threads);
  if (count < 1 || n < 1) return;
  double start[MOST + 1], cost[MOST];
  int least[MOST];
  start[0] = 0;
  for (int i = 0; i < count; i++) {
    cost[i] = (double)items[i].m * (double)items[i].k;
    start[i + 1] = start[i] + cost[i] * (double)n;
    /* the narrowest piece of item i: whole 16-column blocks, above the small-matrix kernel */
    double w = cost[i] > 0 ? SMALL_GEMM / cost[i] + 1 : 1;
    least[i] = w < 16 ? 16 : w > n ? n + 1 : (int)w;
  }
  /* one piece a thread, at most TEAM pieces */
  const int team = threads < 1 ? 1 : threads > TEAM ? TEAM : threads;
  /* piece p runs from at[p] to at[p + 1]: a share of the multiply-adds as even as whole blocks
   * allow, and every part of an item that a piece takes either empty or at least least[i]
   * columns wide */
  batch_at at[TEAM + 1];
  at[0] = (batch_at){0, 0};
  at[team] = (batch_at){count - 1, n};
  for (int p = 1; p < team; p++) {
    const double x = start[count] * p / team;
    int i = 0;
    while (i + 1 < count && x >= start[i + 1]) i++;
    long c = cost[i] > 0 ? (long)((x - start[i]) / cost[i] / 16 + 0.5) * 16 : 0;
    if (c > n) c = n;
    if (c < least[i]) c = 0;
    if (n - c < least[i]) c = n;
    if (i == at[p - 1].item && c - at[p - 1].col < least[i]) c = at[p - 1].col;
    at[p] = (batch_at){i, (int)c};
  }
#pragma omp parallel num_threads(team)
  for (int p = omp_get_thread_num(); p < team; p += omp_get_num_threads())
    for (int i = at[p].item; i <= at[p + 1].item; i++) {
      const int lo = i == at[p].item ? at[p].col : 0, hi = i == at[p + 1].item ? at[p + 1].col : n;
      if (hi > lo && items[i].m > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, items[i].m, hi - lo, items[i].k, 1.0f, items[i].a,
                    items[i].lda, items[i].b + lo, ldb, 0.0f, items[i].c + lo, ldc);
    }
}
