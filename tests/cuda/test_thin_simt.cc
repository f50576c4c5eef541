/* tests/cuda/test_thin_simt.cc: thin_conv.cu's tensor-core kernels (engine/src/cuda/thin_bodies.h)
 * run on the host by the lock-step warp emulator (emu/simt.h) against a double-precision
 * convolution: both kernels over odd sizes (partial pixel strips and row groups), several filter
 * sizes and channel counts, with guard zones around the output that must stay untouched. The
 * launch shape is the module's own (thin_shape_of), so what runs here is what the GPU runs. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <vector>

#define I2I_SIMT 1 /* thin_bodies.h: the emulator's mma and plain loads */
#include "simt.h"
#define threadIdx simt_thread_idx()
#define blockIdx simt_block_idx()
#define blockDim simt_block_dim()
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#include "thin_bodies.h"

static int passed, failed;

static void check(bool ok, const char *what) {
  printf("%s %s\n", ok ? "PASS" : "FAIL", what);
  (ok ? passed : failed)++;
}

static uint32_t rng_state = 12345u;
static float uniform(void) { /* [-1, 1) */
  rng_state = rng_state * 1664525u + 1013904223u;
  return (float)(rng_state >> 8) / (float)(1u << 23) - 1.0f;
}

template <int K>
static int launch(const thin_shape &sh, int xc, int yc, int xh, int xw, int yh, int yw, const __half *x,
                  const __half *w, __half *y) {
  dim3 grid(sh.gx, sh.gy, sh.gz), block(THIN_WARPS * 32);
  if (sh.kind == 1) return simt_launch(grid, block, [&] { thin_out8_kernel<K>(x, w, y, xc, xh, xw, yh, yw); });
  return simt_launch(grid, block, [&] { thin_in8_kernel<K>(x, w, y, yc, xh, xw, yh, yw); });
}

/* One geometry: x (n, yh + kh - 1, yw + kw - 1, xc), w (yc, kh, kw, xc), y (n, yh, yw, yc). */
static void run_case(int n, int xc, int yc, int kh, int kw, int yh, int yw) {
  char what[160];
  int xh = yh + kh - 1, xw = yw + kw - 1;
  thin_shape sh = thin_shape_of(n, xc, yc, kh, kw, yh, yw);
  snprintf(what, sizeof what, "%s: n %d, %d -> %d channels, %dx%d filter, %dx%d output",
           sh.kind == 1 ? "thin_out8" : "thin_in8", n, xc, yc, kh, kw, yh, yw);
  if (!sh.kind) {
    check(false, what);
    return;
  }
  const size_t guard = 256;
  const float sentinel = 1234.0f;
  std::vector<__half> x((size_t)n * xh * xw * xc), w((size_t)yc * kh * kw * xc);
  std::vector<__half> y((size_t)n * yh * yw * yc + 2 * guard, __float2half_rn(sentinel));
  for (auto &v : x) v = __float2half_rn(uniform());
  for (auto &v : w) v = __float2half_rn(uniform() * 0.05f);
  __half *yp = y.data() + guard;
  int rc = -1;
  switch (kh) {
  case 1: rc = launch<1>(sh, xc, yc, xh, xw, yh, yw, x.data(), w.data(), yp); break;
  case 3: rc = launch<3>(sh, xc, yc, xh, xw, yh, yw, x.data(), w.data(), yp); break;
  case 5: rc = launch<5>(sh, xc, yc, xh, xw, yh, yw, x.data(), w.data(), yp); break;
  case 7: rc = launch<7>(sh, xc, yc, xh, xw, yh, yw, x.data(), w.data(), yp); break;
  }
  double worst = 0.0;
  long bad = 0;
  for (int b = 0; b < n; b++)
    for (int oy = 0; oy < yh; oy++)
      for (int ox = 0; ox < yw; ox++)
        for (int k = 0; k < yc; k++) {
          double s = 0.0, mag = 0.0;
          for (int r = 0; r < kh; r++)
            for (int q = 0; q < kw; q++)
              for (int c = 0; c < xc; c++) {
                double p = (double)__half2float(x[(((size_t)b * xh + oy + r) * xw + ox + q) * xc + c]) *
                           (double)__half2float(w[(((size_t)k * kh + r) * kw + q) * xc + c]);
                s += p;
                mag += fabs(p);
              }
          double got = (double)__half2float(yp[(((size_t)b * yh + oy) * yw + ox) * yc + k]);
          double e = fabs(got - s);
          if (!(e <= 1e-3 * fabs(s) + 1e-5 * mag + 1e-6)) bad++;
          if (e > worst || e != e) worst = e;
        }
  long touched = 0;
  for (size_t i = 0; i < guard; i++) {
    touched += __half2float(y[i]) != sentinel;
    touched += __half2float(y[y.size() - 1 - i]) != sentinel;
  }
  size_t len = strlen(what);
  snprintf(what + len, sizeof what - len, ": max error %.2e, %ld wrong, %ld guard values written", worst, bad, touched);
  check(rc == 0 && bad == 0 && touched == 0, what);
}

int main(void) {
  run_case(2, 64, 8, 7, 7, 19, 37);  /* the ResNet's last layer; a partial strip and row group */
  run_case(1, 48, 8, 3, 3, 5, 70);   /* three channel chunks; output rows fewer than a warp's */
  run_case(1, 16, 8, 5, 5, 9, 16);   /* exactly one strip */
  run_case(1, 96, 8, 1, 1, 8, 80);
  run_case(2, 8, 64, 7, 7, 13, 45);  /* the ResNet's first layer */
  run_case(1, 8, 96, 5, 5, 6, 66);   /* three output groups */
  run_case(1, 8, 32, 3, 3, 5, 17);
  run_case(1, 8, 32, 1, 1, 3, 17);
  /* shapes the kernels do not take go to cuDNN */
  check(thin_shape_of(1, 64, 8, 2, 2, 8, 8).kind == 0 && thin_shape_of(1, 64, 8, 3, 5, 8, 8).kind == 0 &&
            thin_shape_of(1, 40, 8, 3, 3, 8, 8).kind == 0 && thin_shape_of(1, 8, 40, 3, 3, 8, 8).kind == 0 &&
            thin_shape_of(1, 64, 8, 3, 3, 600000, 8).kind == 0 && thin_shape_of(40000, 8, 64, 7, 7, 8, 8).kind == 0,
        "thin_shape_of refuses even and non-square filters, other channel counts and grids beyond CUDA's limits");
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
