/* cuda/thin_conv.cu: fp16 NHWC convolutions with 8 stored channels on one side, on tensor cores
 * (mma.sync m16n8k16, float accumulation): the ResNet generator's first 7x7 layer (3 channels
 * in, stored as 8) and its last (3 out, stored as 8). cuDNN ran these two at 22-33 TFLOP/s on an
 * H100, 12 of the 43 ms of a 3840x2160 pass, where the other convolutions reach 750-800
 * (bench/NOTES.md). Stride 1, no padding: the input is the stored plane with its halo, as the
 * cuDNN descriptor of the same step sees it; the output is packed, as cuDNN writes it.
 *
 * The filters are copied to shared memory per block. One warp computes 16 consecutive output pixels of a row (the 16 rows of the A operand) for
 * several output rows. The K order inside a 16-wide chunk is permuted so that each thread's four
 * A values are contiguous in memory (one 8- or 16-byte load; B uses the same permutation):
 * thread t of a quad holds physical k 4t..4t+3 as the instruction's k 2t, 2t+1, 2t+8, 2t+9.
 * - 8 outputs (last layer): K = input channels in chunks of 32 (two instructions per 16-byte
 *   load), B = the 8 filters of one tap.
 * - 8 inputs (first layer): a chunk is two horizontal taps of 8 channels (two neighbouring
 *   pixels, contiguous in NHWC); an odd last tap is paired with zeros.
 */
#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda_priv.h"

#define THIN_WARPS 4
#define OUT8_ROWS 4
#define IN8_ROWS 2

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
  extern __shared__ uint4 sw[]; /* the filters, each followed by 16 bytes against bank conflicts */
  int per = kh * kw * xc / 8 + 1;
  for (int i = threadIdx.x; i < 8 * per; i += blockDim.x)
    sw[i] = i % per == per - 1 ? make_uint4(0u, 0u, 0u, 0u) : __ldg(reinterpret_cast<const uint4 *>(w) + (i / per) * (per - 1) + i % per);
  __syncthreads();
  int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  int x0 = (blockIdx.x * THIN_WARPS + (threadIdx.x >> 5)) * 16;
  if (x0 >= yw) return;
  int y0 = blockIdx.y * OUT8_ROWS, n = blockIdx.z;
  int pa = min(x0 + g, yw - 1), pb = min(x0 + g + 8, yw - 1);
  const __half *xn = x + (size_t)n * xh * xw * xc + 8 * t;
  const __half *wsm = reinterpret_cast<const __half *>(sw + g * per) + 8 * t;
  float acc[OUT8_ROWS][4];
  for (int rr = 0; rr < OUT8_ROWS; rr++) acc[rr][0] = acc[rr][1] = acc[rr][2] = acc[rr][3] = 0.0f;
  for (int r = 0; r < kh; r++)
    for (int s = 0; s < kw; s++) {
      const __half *wp = wsm + (r * kw + s) * xc;
      for (int c0 = 0; c0 < xc; c0 += 32) {
        uint4 wb = *reinterpret_cast<const uint4 *>(wp + c0);
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

/* 8 stored inputs; NT * 8 stored outputs. Grid as thin_out8_kernel with IN8_ROWS rows. */
template <int NT>
__global__ void __launch_bounds__(THIN_WARPS * 32) thin_in8_kernel(const __half *__restrict__ x,
                                                                   const __half *__restrict__ w, __half *__restrict__ y,
                                                                   int xh, int xw, int yh, int yw, int kh, int kw) {
  extern __shared__ uint4 sw[]; /* the filters, as in global memory */
  for (int i = threadIdx.x; i < NT * 8 * kh * kw; i += blockDim.x) sw[i] = __ldg(reinterpret_cast<const uint4 *>(w) + i);
  __syncthreads();
  const __half *wsm = reinterpret_cast<const __half *>(sw);
  int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  int x0 = (blockIdx.x * THIN_WARPS + (threadIdx.x >> 5)) * 16;
  if (x0 >= yw) return;
  int y0 = blockIdx.y * IN8_ROWS, n = blockIdx.z;
  int pa = min(x0 + g, yw - 1), pb = min(x0 + g + 8, yw - 1);
  /* thread t: tap s + t / 2 of the pair, channels (t % 2) * 4 .. + 3 */
  const __half *xn = x + (size_t)n * xh * xw * 8 + (t & 1) * 4;
  float acc[IN8_ROWS][NT][4];
#pragma unroll
  for (int rr = 0; rr < IN8_ROWS; rr++)
#pragma unroll
    for (int j = 0; j < NT; j++) acc[rr][j][0] = acc[rr][j][1] = acc[rr][j][2] = acc[rr][j][3] = 0.0f;
  for (int r = 0; r < kh; r++)
    for (int s = 0; s < kw; s += 2) {
      int tap = s + (t >> 1);
      bool live = tap < kw; /* the odd last tap's partner is zero in A and B */
      uint2 a[IN8_ROWS], b[IN8_ROWS];
#pragma unroll
      for (int rr = 0; rr < IN8_ROWS; rr++) {
        const __half *row = xn + (size_t)(min(y0 + rr, yh - 1) + r) * xw * 8;
        a[rr] = live ? __ldg(reinterpret_cast<const uint2 *>(row + (size_t)(pa + tap) * 8)) : make_uint2(0u, 0u);
        b[rr] = live ? __ldg(reinterpret_cast<const uint2 *>(row + (size_t)(pb + tap) * 8)) : make_uint2(0u, 0u);
      }
#pragma unroll
      for (int j = 0; j < NT; j++) {
        uint2 wb = live ? *reinterpret_cast<const uint2 *>(wsm + (((j * 8 + g) * kh + r) * kw + tap) * 8 + (t & 1) * 4)
                        : make_uint2(0u, 0u);
#pragma unroll
        for (int rr = 0; rr < IN8_ROWS; rr++) mma_16816(acc[rr][j], a[rr].x, b[rr].x, a[rr].y, b[rr].y, wb.x, wb.y);
      }
    }
#pragma unroll
  for (int rr = 0; rr < IN8_ROWS; rr++) {
    int oy = y0 + rr;
    if (oy >= yh) break;
    __half *yr = y + ((size_t)n * yh + oy) * yw * (NT * 8) + 2 * t;
#pragma unroll
    for (int j = 0; j < NT; j++) {
      if (x0 + g < yw)
        *reinterpret_cast<uint32_t *>(yr + (size_t)(x0 + g) * (NT * 8) + j * 8) = pack_half2(acc[rr][j][0], acc[rr][j][1]);
      if (x0 + g + 8 < yw)
        *reinterpret_cast<uint32_t *>(yr + (size_t)(x0 + g + 8) * (NT * 8) + j * 8) =
          pack_half2(acc[rr][j][2], acc[rr][j][3]);
    }
  }
}

/* Launches kernel k with `smem` bytes of dynamic shared memory (above 48 KiB it must be allowed). */
template <typename K, typename... A>
static cudaError_t launch(K k, dim3 grid, size_t smem, cudaStream_t st, A... args) {
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  k<<<grid, THIN_WARPS * 32, smem, st>>>(args...);
  return cudaGetLastError();
}

cudaError_t k_conv_thin(cudaStream_t st, const conv_geom_d &g, const __half *x, const __half *w, __half *y) {
  int out8 = g.yc == 8 && g.xc % 32 == 0, rows = out8 ? OUT8_ROWS : IN8_ROWS;
  dim3 grid((unsigned)((g.yw + THIN_WARPS * 16 - 1) / (THIN_WARPS * 16)), (unsigned)((g.yh + rows - 1) / rows),
            (unsigned)g.n);
  size_t filters = (size_t)g.yc * g.kh * g.kw * g.xc * sizeof(__half);
  if (out8)
    return launch(thin_out8_kernel, grid, filters + 8 * 16, st, x, w, y, g.xc, g.xh, g.xw, g.yh, g.yw, g.kh, g.kw);
  if (g.yc == 8) return launch(thin_in8_kernel<1>, grid, filters, st, x, w, y, g.xh, g.xw, g.yh, g.yw, g.kh, g.kw);
  if (g.yc == 16) return launch(thin_in8_kernel<2>, grid, filters, st, x, w, y, g.xh, g.xw, g.yh, g.yw, g.kh, g.kw);
  if (g.yc == 32) return launch(thin_in8_kernel<4>, grid, filters, st, x, w, y, g.xh, g.xw, g.yh, g.yw, g.kh, g.kw);
  return launch(thin_in8_kernel<8>, grid, filters, st, x, w, y, g.xh, g.xw, g.yh, g.yw, g.kh, g.kw);
}
