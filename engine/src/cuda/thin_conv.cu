/* cuda/thin_conv.cu: fp16 NHWC convolutions with 8 stored channels on one side, on tensor cores
 * (mma.sync, float accumulation): the ResNet generator's first 7x7 layer (3 channels stored as 8
 * to 64) and last (64 to 3 stored as 8). cuDNN ran them at 22-33 TFLOP/s on an H100, 4.7 and 6.9 ms
 * of a 43 ms 3840x2160 pass (bench/NOTES.md). Stride 1, no padding: the input is the stored plane
 * with its halo, as the cuDNN descriptor of the same step sees it; the output is packed, as cuDNN
 * writes it. The kernels are thin_bodies.h; this file launches them.
 */
#include "cuda_priv.h"
#include "thin_bodies.h"

template <int K>
static void launch_thin(const thin_shape &sh, cudaStream_t st, const conv_geom_d &g, const __half *x, const __half *w,
                        __half *y) {
  dim3 grid(sh.gx, sh.gy, sh.gz);
  if (sh.kind == 1)
    thin_out8_kernel<K><<<grid, THIN_WARPS * 32, 0, st>>>(x, w, y, g.xc, g.xh, g.xw, g.yh, g.yw);
  else
    thin_in8_kernel<K><<<grid, THIN_WARPS * 32, 0, st>>>(x, w, y, g.yc, g.xh, g.xw, g.yh, g.yw);
}

cudaError_t k_conv_thin(cudaStream_t st, const conv_geom_d &g, const __half *x, const __half *w, __half *y) {
  thin_shape sh = thin_shape_of(g.n, g.xc, g.yc, g.kh, g.kw, g.yh, g.yw);
  switch (sh.kind ? g.kh : 0) {
  case 1: launch_thin<1>(sh, st, g, x, w, y); break;
  case 3: launch_thin<3>(sh, st, g, x, w, y); break;
  case 5: launch_thin<5>(sh, st, g, x, w, y); break;
  case 7: launch_thin<7>(sh, st, g, x, w, y); break;
  default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}
