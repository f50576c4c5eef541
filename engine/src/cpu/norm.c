/* cpu/norm.c: instance and batch normalisation on the CPU, with a fused activation.
 *
 * Statistics are per channel of one image (instance statistics, which equal BatchNorm's batch
 * statistics for one image): mean and biased variance in double precision, two passes. With
 * running statistics given, the eval-mode affine map is applied instead.
 */
#include <math.h>

#include "cpu.h"

void cpu_norm_forward(const float *x, float *y, int c, size_t hw, const float *scale, const float *bias,
                      const float *mean, const float *var, float eps, int act, float alpha, int threads) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int ci = 0; ci < c; ci++) {
    const float *xc = x + (size_t)ci * hw;
    float *yc = y + (size_t)ci * hw;
    double mu, v;
    if (mean) {
      mu = mean[ci];
      v = var[ci];
    } else {
      double s = 0;
      for (size_t i = 0; i < hw; i++) s += xc[i];
      mu = s / (double)hw;
      double q = 0;
      for (size_t i = 0; i < hw; i++) {
        double d = xc[i] - mu;
        q += d * d;
      }
      v = q / (double)hw;
    }
    double rstd = 1.0 / sqrt(v + (double)eps);
    float a = (float)(scale[ci] * rstd), b = (float)(bias[ci] - mu * scale[ci] * rstd);
    if (act == ACT_RELU) {
      for (size_t i = 0; i < hw; i++) {
        float t = xc[i] * a + b;
        yc[i] = t > 0 ? t : 0;
      }
    } else if (act == ACT_LRELU) {
      for (size_t i = 0; i < hw; i++) {
        float t = xc[i] * a + b;
        yc[i] = t > 0 ? t : t * alpha;
      }
    } else {
      for (size_t i = 0; i < hw; i++) yc[i] = xc[i] * a + b;
    }
  }
}
