/* cuda/thin_bodies.h: thin_conv.cu's tensor-core kernels and their launch shapes, kept apart from
 * the launchers so that tests/cuda's lock-step warp emulator (emu/simt.h, I2I_SIMT) runs the same
 * code on the host: the fragment layouts, index arithmetic and edge handling the GPU executes are
 * what CI checks (tests/cuda/test_thin_simt.cc).
 *
 * Both kernels give a warp 16 consecutive output pixels (the 16 rows of the mma's A operand) of
 * several output rows, and walk the input rows those need: the A fragment of an input row serves
 * every output row of the warp that reads it (up to K of them, each with its own filter row), so
 * a warp fetches each input row once per channel chunk (thin_out8) or filter column (thin_in8),
 * where one output row per warp would fetch it K times as often.
 *  - thin_out8: 8 stored outputs from a multiple of 16 stored inputs (the ResNet's last layer,
 *    64 -> 3 stored as 8), mma m16n8k16.
 *  - thin_in8: a multiple of 32 stored outputs from 8 stored inputs (the ResNet's first layer,
 *    3 stored as 8 -> 64), mma m16n8k8: K is the 8 channels of one filter tap; a warp computes 32
 *    outputs (4 mma columns of 8), the block's warps take neighbouring pixel strips.
 */
#ifndef I2I_CUDA_THIN_BODIES_H
#define I2I_CUDA_THIN_BODIES_H

#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda_priv.h"

#ifdef I2I_SIMT
#include "simt.h"
#define THIN_LDG(p) (*(p))
#else
#define THIN_LDG(p) __ldg(p)
#endif

__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                          uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#elif defined(I2I_SIMT)
  simt_mma_16816(d, a0, a1, a2, a3, b0, b1);
#endif
}

__device__ __forceinline__ void mma_1688(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a0), "r"(a1), "r"(b0));
#elif defined(I2I_SIMT)
  simt_mma_1688(d, a0, a1, b0);
#endif
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  union {
    __half2 h;
    uint32_t u;
  } p;
  p.h = __floats2half2_rn(lo, hi);
  return p.u;
}

/* Four or two consecutive halves (a thread's channels of a pixel or filter tap) as one load. */
__device__ __forceinline__ uint2 ld8(const __half *p) { return THIN_LDG(reinterpret_cast<const uint2 *>(p)); }
__device__ __forceinline__ uint32_t ld4(const __half *p) { return THIN_LDG(reinterpret_cast<const unsigned int *>(p)); }

/* A warp's place: lane (g, t) of the mma's quad layout, its 16-pixel strip x0 (false when the
 * strip lies past the row: the whole warp returns) and the two pixels its A rows g and g + 8
 * read, clamped to the row (results of clamped pixels are not stored). */
struct thin_lane {
  int g, t, x0, pa, pb;
};

__device__ __forceinline__ bool thin_lane_at(int yw, thin_lane &L) {
  int lane = threadIdx.x & 31;
  L.g = lane >> 2;
  L.t = lane & 3;
  L.x0 = (blockIdx.x * THIN_WARPS + (threadIdx.x >> 5)) * 16;
  L.pa = L.x0 + L.g < yw ? L.x0 + L.g : yw - 1;
  L.pb = L.x0 + L.g + 8 < yw ? L.x0 + L.g + 8 : yw - 1;
  return L.x0 < yw;
}

/* 8 stored outputs, xc a multiple of 16, a K x K filter. The mma's k runs over 16 input channels at
 * a time (permuted: thread t of a quad loads channels 4t..4t+3, 8 bytes, as k 2t, 2t+1, 2t+8, 2t+9; B the
 * same); all K * K taps' B fragments of those 16 channels stay in registers while the warp walks
 * its input rows, and each row is read at the K shifts of its filter columns back to back (from
 * L1 after the first). Grid: x strips of THIN_WARPS * 16 pixels, y groups of OUT8_ROWS rows, z
 * images. */
template <int K>
__global__ void __launch_bounds__(THIN_WARPS * 32)
    thin_out8_kernel(const __half *__restrict__ x, const __half *__restrict__ w, __half *__restrict__ y, int xc, int xh,
                     int xw, int yh, int yw) {
  thin_lane L;
  if (!thin_lane_at(yw, L)) return;
  const int g = L.g, t = L.t, x0 = L.x0, pa = L.pa, pb = L.pb;
  int y0 = blockIdx.y * OUT8_ROWS, n = blockIdx.z;
  const __half *xn = x + (size_t)n * xh * xw * xc + 4 * t;
  float acc[OUT8_ROWS][4];
#pragma unroll
  for (int rr = 0; rr < OUT8_ROWS; rr++) acc[rr][0] = acc[rr][1] = acc[rr][2] = acc[rr][3] = 0.0f;
  for (int c0 = 0; c0 < xc; c0 += 16) {
    uint2 wb[K][K];
#pragma unroll
    for (int r = 0; r < K; r++)
#pragma unroll
      for (int s = 0; s < K; s++) wb[r][s] = ld8(w + ((size_t)(g * K + r) * K + s) * xc + 4 * t + c0);
#pragma unroll
    for (int j = 0; j < OUT8_ROWS + K - 1; j++) {
      /* rows past the plane's end (a last, partial group) serve only outputs not stored */
      int iy = y0 + j < xh ? y0 + j : xh - 1;
      const __half *row = xn + (size_t)iy * xw * xc + c0;
#pragma unroll
      for (int s = 0; s < K; s++) {
        uint2 va = ld8(row + (size_t)(pa + s) * xc), vb = ld8(row + (size_t)(pb + s) * xc);
#pragma unroll
        for (int rr = 0; rr < OUT8_ROWS; rr++) {
          const int r = j - rr;
          if (r >= 0 && r < K) mma_16816(acc[rr], va.x, vb.x, va.y, vb.y, wb[r][s].x, wb[r][s].y);
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < OUT8_ROWS; rr++) {
    int oy = y0 + rr;
    if (oy >= yh) break;
    __half *yr = y + ((size_t)n * yh + oy) * yw * 8 + 2 * t;
    if (x0 + g < yw) *reinterpret_cast<uint32_t *>(yr + (size_t)(x0 + g) * 8) = pack_half2(acc[rr][0], acc[rr][1]);
    if (x0 + g + 8 < yw) *reinterpret_cast<uint32_t *>(yr + (size_t)(x0 + g + 8) * 8) = pack_half2(acc[rr][2], acc[rr][3]);
  }
}

/* 8 stored inputs, yc a multiple of 32, a K x K filter; the filter columns outermost (an 8-channel
 * input row is small enough to stay in L1 between them). Warp v of a block takes output group
 * (blockIdx.z % (yc / 32)) and pixel strip blockIdx.x * THIN_WARPS + v. Grid: x strips, y groups
 * of IN8_ROWS rows, z images x output groups. */
template <int K>
__global__ void __launch_bounds__(THIN_WARPS * 32)
    thin_in8_kernel(const __half *__restrict__ x, const __half *__restrict__ w, __half *__restrict__ y, int yc, int xh,
                    int xw, int yh, int yw) {
  thin_lane L;
  if (!thin_lane_at(yw, L)) return;
  const int g = L.g, t = L.t, x0 = L.x0, pa = L.pa, pb = L.pb;
  int groups = yc >> 5;
  int n = blockIdx.z / groups, o0 = (blockIdx.z % groups) * 32;
  int y0 = blockIdx.y * IN8_ROWS;
  const __half *xn = x + (size_t)n * xh * xw * 8 + 2 * t;
  float acc[IN8_ROWS][4][4];
#pragma unroll
  for (int rr = 0; rr < IN8_ROWS; rr++)
#pragma unroll
    for (int c = 0; c < 4; c++) acc[rr][c][0] = acc[rr][c][1] = acc[rr][c][2] = acc[rr][c][3] = 0.0f;
  for (int s = 0; s < K; s++) {
    /* B of column c: filter o0 + 8c + g, tap (r, s), channels 2t, 2t+1 */
    uint32_t wb[K][4];
#pragma unroll
    for (int r = 0; r < K; r++)
#pragma unroll
      for (int c = 0; c < 4; c++) wb[r][c] = ld4(w + ((size_t)((o0 + 8 * c + g) * K + r) * K + s) * 8 + 2 * t);
#pragma unroll
    for (int j = 0; j < IN8_ROWS + K - 1; j++) {
      int iy = y0 + j < xh ? y0 + j : xh - 1;
      const __half *row = xn + (size_t)iy * xw * 8;
      uint32_t a0 = ld4(row + (size_t)(pa + s) * 8), a1 = ld4(row + (size_t)(pb + s) * 8);
#pragma unroll
      for (int rr = 0; rr < IN8_ROWS; rr++) {
        const int r = j - rr;
        if (r >= 0 && r < K) {
#pragma unroll
          for (int c = 0; c < 4; c++) mma_1688(acc[rr][c], a0, a1, wb[r][c]);
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < IN8_ROWS; rr++) {
    int oy = y0 + rr;
    if (oy >= yh) break;
    __half *yr = y + ((size_t)n * yh + oy) * yw * yc + o0 + 2 * t;
#pragma unroll
    for (int c = 0; c < 4; c++) {
      if (x0 + g < yw)
        *reinterpret_cast<uint32_t *>(yr + (size_t)(x0 + g) * yc + 8 * c) = pack_half2(acc[rr][c][0], acc[rr][c][1]);
      if (x0 + g + 8 < yw)
        *reinterpret_cast<uint32_t *>(yr + (size_t)(x0 + g + 8) * yc + 8 * c) = pack_half2(acc[rr][c][2], acc[rr][c][3]);
    }
  }
}

#endif
