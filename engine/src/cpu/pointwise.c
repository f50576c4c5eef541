/* cpu/pointwise.c: Pad, the activations, Tanh, Add and Dropout on the CPU.
 *
 * Pad copies with reflect (as numpy's 'reflect', repeating for long pads), edge or constant
 * borders. Dropout uses the counter-based mask of rng.c, so its output depends only on the
 * seed and the element's position, never on threads or tiling.
 */
#include <math.h>
#include <string.h>

#include "cpu.h"

void cpu_pad_forward(const float *x, float *y, int c, int h, int w, const int pads[4], int mode, float value,
                     int threads) {
  int oh = h + pads[0] + pads[2], ow = w + pads[1] + pads[3];
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int ci = 0; ci < c; ci++) {
    const float *xc = x + (size_t)ci * (size_t)h * (size_t)w;
    float *yc = y + (size_t)ci * (size_t)oh * (size_t)ow;
    for (int oy = 0; oy < oh; oy++) {
      float *yr = yc + (size_t)oy * (size_t)ow;
      int iy = map_index(oy - pads[0], h, mode);
      for (int ox = 0; ox < ow; ox++) {
        int ix = map_index(ox - pads[1], w, mode);
        yr[ox] = (iy < 0 || ix < 0) ? value : xc[(size_t)iy * (size_t)w + (size_t)ix];
      }
    }
  }
}

void cpu_act_forward(const float *x, float *y, size_t n, int act, float alpha, int threads) {
  if (act == ACT_NONE) {
    if (x != y) memcpy(y, x, n * sizeof(float));
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; i++) {
    float t = x[i];
    y[i] = t > 0 ? t : (act == ACT_RELU ? 0.0f : t * alpha);
  }
}

/* tanh as a rational function the compiler vectorises (libm's tanhf is a call per element: 6 ns,
 * 1.2 ms of a 256x256 U-Net run). The approximation is Eigen's (generic_fast_tanh_float): an odd
 * numerator to x^13 over an even denominator to x^6, the input clamped at +-7.905, x itself below
 * 4e-4. Within 3.9e-7 of tanh everywhere (at most 6.4 ulp, near +-1), odd, NaN kept. */
static inline float tanh_rational(float x) {
  const float lim = 7.90531110763549805f;
  float c = x < -lim ? -lim : x > lim ? lim : x, x2 = c * c;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return fabsf(x) < 4e-4f ? x : c * p / q;
}

HOT_CLONES void cpu_tanh_forward(const float *x, float *y, size_t n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; i++) y[i] = tanh_rational(x[i]);
}

void cpu_add_forward(const float *a, const float *b, float *y, size_t n, int act, float alpha, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; i++) {
    float t = a[i] + b[i];
    y[i] = act == ACT_NONE || t > 0 ? t : (act == ACT_RELU ? 0.0f : t * alpha);
  }
}

void cpu_dropout_forward(const float *x, float *y, int c, int h, int w, float ratio, uint64_t seed,
                         uint32_t ordinal, uint32_t batch_index, uint64_t step, int threads) {
  uint32_t threshold;
  float scale;
  dropout_consts(ratio, &threshold, &scale);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int ci = 0; ci < c; ci++)
    for (int yy = 0; yy < h; yy++) {
      size_t base = ((size_t)ci * (size_t)h + (size_t)yy) * (size_t)w;
      for (int xx = 0; xx < w; xx++) {
        bool keep = dropout_keep(seed, (uint32_t)xx, (uint32_t)yy, (uint32_t)ci, batch_index, ordinal, step, threshold);
        y[base + (size_t)xx] = keep ? x[base + (size_t)xx] * scale : 0.0f;
      }
    }
}

/* ---- backward (training) ------------------------------------------------------------------
 * Each writes dx (or adds into it with `accumulate`, when another reader of x contributed
 * first). The activations and Tanh use their output y, which PyTorch's in-place ReLU and
 * LeakyReLU also keep; Dropout recomputes its mask from the counter; Pad scatters each padded
 * position back onto the pixel it copied. */

void cpu_grad_copy(const float *src, float *dst, size_t n, bool accumulate, int threads) {
  if (!accumulate) {
    if (src != dst) memcpy(dst, src, n * sizeof(float));
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

void cpu_act_backward(const float *y, const float *dy, float *dx, size_t n, int act, float alpha, bool accumulate,
                      int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; i++) {
    float g = dy[i];
    if (act == ACT_RELU) g = y[i] > 0 ? g : 0.0f;
    else if (act == ACT_LRELU) g = y[i] > 0 ? g : g * alpha;
    dx[i] = accumulate ? dx[i] + g : g;
  }
}

void cpu_tanh_backward(const float *y, const float *dy, float *dx, size_t n, bool accumulate, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; i++) {
    float g = dy[i] * (1.0f - y[i] * y[i]);
    dx[i] = accumulate ? dx[i] + g : g;
  }
}

void cpu_dropout_backward(const float *dy, float *dx, int c, int h, int w, float ratio, uint64_t seed, uint32_t ordinal,
                          uint32_t batch_index, uint64_t step, bool accumulate, int threads) {
  uint32_t threshold;
  float scale;
  dropout_consts(ratio, &threshold, &scale);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int ci = 0; ci < c; ci++)
    for (int yy = 0; yy < h; yy++) {
      size_t base = ((size_t)ci * (size_t)h + (size_t)yy) * (size_t)w;
      for (int xx = 0; xx < w; xx++) {
        bool keep = dropout_keep(seed, (uint32_t)xx, (uint32_t)yy, (uint32_t)ci, batch_index, ordinal, step, threshold);
        float g = keep ? dy[base + (size_t)xx] * scale : 0.0f;
        dx[base + (size_t)xx] = accumulate ? dx[base + (size_t)xx] + g : g;
      }
    }
}

void cpu_pad_backward(const float *dy, float *dx, int c, int h, int w, const int pads[4], int mode, bool accumulate,
                      int threads) {
  int oh = h + pads[0] + pads[2], ow = w + pads[1] + pads[3];
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int ci = 0; ci < c; ci++) {
    float *xc = dx + (size_t)ci * (size_t)h * (size_t)w;
    const float *yc = dy + (size_t)ci * (size_t)oh * (size_t)ow;
    if (!accumulate) memset(xc, 0, sizeof(float) * (size_t)h * (size_t)w);
    for (int oy = 0; oy < oh; oy++) {
      int iy = map_index(oy - pads[0], h, mode);
      if (iy < 0) continue;
      const float *yr = yc + (size_t)oy * (size_t)ow;
      float *xr = xc + (size_t)iy * (size_t)w;
      for (int ox = 0; ox < ow; ox++) {
        int ix = map_index(ox - pads[1], w, mode);
        if (ix >= 0) xr[ix] += yr[ox];
      }
    }
  }
}
