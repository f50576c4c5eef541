/* cuda/thin_conv.cu: an fp16 NHWC convolution to 8 stored output channels on tensor cores
 * (mma.sync m16n8k16, float accumulation): the ResNet generator's last 7x7 layer (64 channels to
 * 3, stored as 8), which cuDNN ran at 22 TFLOP/s on an H100 (6.9 ms of a 43 ms 3840x2160 pass;
 * this kernel 4.6 ms, bench/NOTES.md). Stride 1, no padding: the input is the stored plane with
 * its halo, as the cuDNN descriptor of the same step sees it; the output is packed, as cuDNN
 * writes it.
 *
 * One warp computes 16 consecutive output pixels of a row (the 16 rows of the A operand) for
 * OUT8_ROWS output rows; B is the 8 filters of one tap. K runs over the input channels in chunks
 * of 32, permuted inside each 16 so that a thread's A values are contiguous in memory: thread t
 * of a quad loads channels 8t..8t+7 (16 bytes) and uses 8t..8t+3 as the first instruction's k 2t,
 * 2t+1, 2t+8, 2t+9 and 8t+4..8t+7 as the second's; B is loaded the same way.
 */
#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda_priv.h"

#define THIN_WARPS 4
#define OUT8_ROWS 4

__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                          uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&h);
}

/* 8 stored outputs; xc a multiple of 32. Grid: x strips of THIN_WARPS * 16 pixels, y groups of
 * OUT8_ROWS rows, z images. */
__global__ void __launch_bounds__(THIN_WARPS * 32) thin_out8_kernel(const __half *__restrict__ x,
                                                                    const __half *__restrict__ w, __half *__restrict__ y,
                                                                    int xc, int xh, int xw, int yh, int yw, int kh, int kw) {
  int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  int x0 = (blockIdx.x * THIN_WARPS + (threadIdx.x >> 5)) * 16;
  if (x0 >= yw) return;
  int y0 = blockIdx.y * OUT8_ROWS, n = blockIdx.z;
  int pa = min(x0 + g, yw - 1), pb = min(x0 + g + 8, yw - 1);
  const __half *xn = x + (size_t)n * xh * xw * xc + 8 * t;
  float acc[OUT8_ROWS][4];
  for (int rr = 0; rr < OUT8_ROWS; rr++) acc[rr][0] = acc[rr][1] = acc[rr][2] = acc[rr][3] = 0.0f;
  for (int r = 0; r < kh; r++)
    for (int s = 0; s < kw; s++) {
      const __half *wp = w + ((size_t)(g * kh + r) * kw + s) * xc + 8 * t;
      for (int c0 = 0; c0 < xc; c0 += 32) {
        uint4 wb = __ldg(reinterpret_cast<const uint4 *>(wp + c0));
#pragma unroll
        for (int rr = 0; rr < OUT8_ROWS; rr++) {
          const __half *row = xn + (size_t)(min(y0 + rr, yh - 1) + r) * xw * xc + c0;
          uint4 va = __ldg(reinterpret_cast<const uint4 *>(row + (size_t)(pa + s) * xc));
          uint4 vb = __ldg(reinterpret_cast<const uint4 *>(row + (size_t)(pb + s) * xc));
          mma_16816(acc[rr], va.x, vb.x, va.y, vb.y, wb.x, wb.y);
          mma_16816(acc[rr], va.z, vb.z, va.w, vb.w, wb.z, wb.w);
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

cudaError_t k_conv_thin(cudaStream_t st, const conv_geom_d &g, const __half *x, const __half *w, __half *y) {
  dim3 grid((unsigned)((g.yw + THIN_WARPS * 16 - 1) / (THIN_WARPS * 16)), (unsigned)((g.yh + OUT8_ROWS - 1) / OUT8_ROWS),
            (unsigned)g.n);
  thin_out8_kernel<<<grid, THIN_WARPS * 32, 0, st>>>(x, w, y, g.xc, g.xh, g.xw, g.yh, g.yw, g.kh, g.kw);
  return cudaGetLastError();
}
