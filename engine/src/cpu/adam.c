/* cpu/adam.c: the Adam optimiser on the CPU, as torch.optim.Adam (torch 1.13, single-tensor
 * path) computes it: no weight decay, no amsgrad, bias corrections in double.
 *
 * One call updates a run of parameters of a network's flat buffer in place, with its first and
 * second moments. Elementwise, so the result does not depend on the thread count.
 */
#include <math.h>

#include "cpu.h"

void cpu_adam(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps,
              uint64_t t, int threads) {
  double bc1 = 1.0 - pow((double)beta1, (double)t), bc2 = 1.0 - pow((double)beta2, (double)t);
  float step = (float)((double)lr / bc1), bc2s = (float)sqrt(bc2);
  float b1 = beta1, b2 = beta2, a1 = (float)(1.0 - (double)beta1), a2 = (float)(1.0 - (double)beta2);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; i++) {
    float gi = g[i];
    float mi = m[i] * b1 + gi * a1;
    float vi = v[i] * b2 + gi * gi * a2;
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) / bc2s + eps;
    p[i] = p[i] + (-step) * (mi / denom);
  }
}
