/* cpu/loss.c: the training losses on the CPU: MSE (LSGAN), BCE with logits (vanilla GAN) and L1,
 * each a forward (the mean loss) and its backward (the gradient) in one pass.
 *
 * Reductions are PyTorch's `mean`; sums run in double, sequentially, so the value does not depend
 * on the thread count. It is not a general loss library: one prediction tensor against a tensor
 * or a constant label.
 */
#include <math.h>

#include "cpu.h"

/* Per element: loss and d loss / d x. */
static inline void loss_elem(int kind, double x, double t, double *l, double *d) {
  switch (kind) {
  case LOSS_MSE:
    *l = (x - t) * (x - t);
    *d = 2.0 * (x - t);
    break;
  case LOSS_BCE: {
    /* PyTorch: (1 - t) x + max(-x, 0) + log(exp(-max) + exp(-x - max)) */
    double mx = -x > 0 ? -x : 0;
    *l = (1.0 - t) * x + mx + log(exp(-mx) + exp(-x - mx));
    *d = 1.0 / (1.0 + exp(-x)) - t;
    break;
  }
  default: {
    double df = x - t;
    *l = fabs(df);
    *d = df > 0 ? 1.0 : (df < 0 ? -1.0 : 0.0);
    break;
  }
  }
}

double cpu_loss(int kind, const float *x, const float *target, float label, size_t n, float weight, float *grad,
                bool accumulate, int threads) {
  if (!n) return 0;
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    double l, d;
    loss_elem(kind, x[i], target ? target[i] : label, &l, &d);
    sum += l;
  }
  if (grad) {
    /* PyTorch's backward of weight * mean(l): grad_out = weight, then d / n */
    float scale = weight / (float)n;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) {
      double l, d;
      loss_elem(kind, x[i], target ? target[i] : label, &l, &d);
      float v = (float)d * scale;
      grad[i] = accumulate ? grad[i] + v : v;
    }
  }
  return (double)weight * (sum / (double)n);
}

bool cpu_all_finite(const float *x, size_t n, int threads) {
  int bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(| : bad)
  for (size_t i = 0; i < n; i++) bad |= !isfinite(x[i]);
  return !bad;
}
