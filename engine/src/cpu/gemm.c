/* cpu/gemm.c: the convolutions' matrix products: OpenBLAS sgemm, and our own kernels for products
 * only a few columns wide (the U-Net's innermost layers, 1 to 16 pixels), where sgemm packs the
 * whole weight matrix for a handful of columns and moves it at a third of the memory bandwidth
 * (bench, one thread: 512 x 8192 weights times 4 columns 1.2 ms by sgemm, 0.6 ms streamed once
 * here). How wide each kernel goes (cpu.h) is where it still beat sgemm on both AVX-512 and
 * AVX2 (bench/NOTES.md).
 *
 * Each output element is one sum in a fixed order that does not depend on the thread count. Built
 * with floating-point contraction (FMA), as direct.c.
 */
#include <cblas.h>
#include <string.h>

#include "cpu.h"

/* 8 floats as one value (GCC vector extension: one AVX2 register, as in direct.c), moved through
 * memcpy. With 16 the AVX2 clone spilled its accumulators and lost to sgemm. */
#define LANES 8
typedef float vf __attribute__((vector_size(LANES * 4)));

/* The sum of a vector's lanes, lane by lane in order. */
static inline __attribute__((always_inline)) float hsum(const vf *a) {
  float s = 0.0f;
  for (int i = 0; i < LANES; i++) s += (*a)[i];
  return s;
}

size_t cpu_gemm_work(bool trans_a, size_t m, size_t n, size_t k) {
  (void)m;
  return n <= CPU_GEMM_SMALL_N && !trans_a ? n * k : 0;
}

/* C[m][n] = A[m][k] B[k][n], B's columns first copied to rows of `bt`: for a block of 4 rows of A
 * and 2 columns, 8 dot products of k terms in LANES lanes each (14 registers). A block's rows
 * are read from memory once and again from cache for the next columns. */
FMA_CLONES static void small_nn(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                                int ldc, float *bt, int threads) {
  for (int kk = 0; kk < k; kk++)
    for (int j = 0; j < n; j++) bt[(size_t)j * (size_t)k + (size_t)kk] = b[(size_t)kk * (size_t)ldb + (size_t)j];
  const int kv = k / LANES * LANES, blocks = (m + 3) / 4;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int blk = 0; blk < blocks; blk++) {
    const int m0 = blk * 4, mr = m - m0 < 4 ? m - m0 : 4;
    for (int n0 = 0; n0 < n; n0 += 2) {
      const int nr = n - n0 < 2 ? n - n0 : 2;
      const float *ar[4], *br[2];
      for (int i = 0; i < 4; i++) ar[i] = a + (size_t)(m0 + (i < mr ? i : 0)) * (size_t)lda;
      for (int j = 0; j < 2; j++) br[j] = bt + (size_t)(n0 + (j < nr ? j : 0)) * (size_t)k;
      vf acc[4][2] = {{{0}}};
      for (int kk = 0; kk < kv; kk += LANES) {
        vf av[4], bv[2];
        for (int i = 0; i < 4; i++) memcpy(&av[i], ar[i] + kk, sizeof av[i]);
        for (int j = 0; j < 2; j++) memcpy(&bv[j], br[j] + kk, sizeof bv[j]);
        for (int i = 0; i < 4; i++)
          for (int j = 0; j < 2; j++) acc[i][j] += av[i] * bv[j];
      }
      for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
          float s = hsum(&acc[i][j]);
          for (int kk = kv; kk < k; kk++) s += ar[i][kk] * br[j][kk];
          c[(size_t)(m0 + i) * (size_t)ldc + (size_t)(n0 + j)] = s;
        }
    }
  }
}

/* A transposed product works on MC rows of C at a time, 16 columns at a time: their sums
 * (32 KiB) stay in L1 while A's rows go by four at a time, each read as MC consecutive floats
 * (sgemm's packing, or a strip 16 wide down all k rows, left the prefetcher behind: 1024 x 8192
 * weights times 4 columns 6.0 ms by sgemm, 3.0 ms here). */
#define MC 512
#define NB 16

/* c0[j][0 .. LANES) += a_r[0 .. LANES) * b_r[j] summed over the four rows r, for the nr columns j
 * (rows of c0 mc apart). */
static inline __attribute__((always_inline)) void tn_rows4(const float *a0, size_t lda, const float *b0, size_t ldb,
                                                          int nr, float *c0, size_t mc) {
  vf x[4];
  for (int r = 0; r < 4; r++) memcpy(&x[r], a0 + (size_t)r * lda, sizeof x[r]);
  for (int j = 0; j < nr; j++) {
    vf acc;
    memcpy(&acc, c0 + (size_t)j * mc, sizeof acc);
    acc += x[0] * b0[j] + x[1] * b0[ldb + (size_t)j] + x[2] * b0[2 * ldb + (size_t)j] + x[3] * b0[3 * ldb + (size_t)j];
    memcpy(c0 + (size_t)j * mc, &acc, sizeof acc);
  }
}

/* C[m][n] = A^T B with A k x m. */
FMA_CLONES static void small_tn(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                                int ldc, int threads) {
  const int mc = MC, nb = NB, chunks = (m + mc - 1) / mc, k4 = k & ~3;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int ch = 0; ch < chunks; ch++) {
    const int m0 = ch * mc, mw = m - m0 < mc ? m - m0 : mc, body = mw / LANES * LANES;
    float ct[MC * NB] __attribute__((aligned(64)));
    for (int n0 = 0; n0 < n; n0 += nb) {
      const int nr = n - n0 < nb ? n - n0 : nb;
      memset(ct, 0, sizeof ct);
      for (int kk = 0; kk < k4; kk += 4) {
        const float *ar = a + (size_t)kk * (size_t)lda + (size_t)m0, *br = b + (size_t)kk * (size_t)ldb + (size_t)n0;
        for (int v = 0; v < body; v += LANES) tn_rows4(ar + v, (size_t)lda, br, (size_t)ldb, nr, ct + v, (size_t)mc);
        for (int i = body; i < mw; i++)
          for (int j = 0; j < nr; j++)
            ct[(size_t)j * (size_t)mc + (size_t)i] +=
                ar[i] * br[j] + ar[(size_t)lda + (size_t)i] * br[(size_t)ldb + (size_t)j] +
                ar[2 * (size_t)lda + (size_t)i] * br[2 * (size_t)ldb + (size_t)j] +
                ar[3 * (size_t)lda + (size_t)i] * br[3 * (size_t)ldb + (size_t)j];
      }
      for (int kk = k4; kk < k; kk++) {
        const float *ar = a + (size_t)kk * (size_t)lda + (size_t)m0, *br = b + (size_t)kk * (size_t)ldb + (size_t)n0;
        for (int i = 0; i < mw; i++)
          for (int j = 0; j < nr; j++) ct[(size_t)j * (size_t)mc + (size_t)i] += ar[i] * br[j];
      }
      for (int i = 0; i < mw; i++)
        for (int j = 0; j < nr; j++)
          c[(size_t)(m0 + i) * (size_t)ldc + (size_t)(n0 + j)] = ct[(size_t)j * (size_t)mc + (size_t)i];
    }
  }
}

void cpu_gemm(bool trans_a, int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
              float *work, size_t work_floats, int threads) {
  if (n <= CPU_GEMM_SMALL_TN && trans_a) {
    small_tn(m, n, k, a, lda, b, ldb, c, ldc, threads);
    return;
  }
  if (n <= CPU_GEMM_SMALL_N && work && work_floats >= cpu_gemm_work(false, (size_t)m, (size_t)n, (size_t)k)) {
    small_nn(m, n, k, a, lda, b, ldb, c, ldc, work, threads);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, 0.0f,
              c, ldc);
}
