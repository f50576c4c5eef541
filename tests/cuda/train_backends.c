/* tests/cuda/train_backends.c: the CUDA training backend against the CPU one: the same trainer
 * (same networks, images, seed) on each, step by step.
 *
 * Usage: train_backends parity [STEPS]   CycleGAN (ResNet, 2 blocks, 8 channels; 32x32, batch 1
 *                                         and 2) and Pix2Pix (U-Net depth 5, 8 channels, dropout,
 *                                         BatchNorm discriminator; 32x32, batch 2): every loss of
 *                                         every step (relative 1e-4), every parameter gradient
 *                                         of step 1 (per tensor, max |d| / max |cpu| <= 1e-3),
 *                                         every parameter after STEPS steps (1e-3, tensors whose
 *                                         gradient is zero by construction aside), and two GPU
 *                                         runs bit for bit equal.
 *        train_backends fault TEXT       a forced-CUDA trainer whose creation or steps fail
 *                                         (the environment injects the fault): a clean error
 *                                         containing TEXT, then a CPU trainer in the same
 *                                         process still trains.
 * The CUDA module is whatever the engine loads (I2I_CUDA_MODULE: the emulated module in CI, the
 * real one in tests/gpu/run). Exit 77 when no CUDA backend can train here. Ends with "N passed,
 * N failed".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "i2i.h"
#include "models.h"

static int passed, failed;

#define CHECK(cond, ...)                                                                            \
  do {                                                                                              \
    int ok_ = (cond);                                                                               \
    printf("%s ", ok_ ? "ok  " : "FAIL");                                                           \
    printf(__VA_ARGS__);                                                                            \
    printf("\n");                                                                                   \
    fflush(stdout);                                                                                 \
    if (ok_) passed++;                                                                              \
    else failed++;                                                                                  \
  } while (0)

static i2i_ctx *new_ctx(i2i_backend be) {
  i2i_ctx_params cp;
  i2i_ctx_default_params(&cp);
  cp.backend = be;
  cp.threads = 2;
  i2i_ctx *ctx = NULL;
  return i2i_ctx_create(&cp, &ctx) ? NULL : ctx;
}

typedef struct {
  const char *name;
  i2i_train_kind kind;
  int batch, size;
} tcase;

static const tcase cases[] = {
  {"CycleGAN ResNet 32x32 batch 1", I2I_TRAIN_CYCLEGAN, 1, 32},
  {"CycleGAN ResNet 32x32 batch 2", I2I_TRAIN_CYCLEGAN, 2, 32},
  {"Pix2Pix U-Net 32x32 batch 2", I2I_TRAIN_PIX2PIX, 2, 32},
};

/* A trainer for case `c` on ctx, or NULL with the status in *st. */
static i2i_trainer *make(i2i_ctx *ctx, const tcase *c, i2i_status *st) {
  i2i_model *g = NULL, *g2 = NULL;
  i2i_train_params p;
  i2i_train_default_params(&p, c->kind);
  p.batch = c->batch;
  p.size = c->size;
  p.augment = 0;
  p.iters = 100;
  p.seed = 7;
  p.d_channels = 8;
  p.pool_size = 4;
  if (c->kind == I2I_TRAIN_CYCLEGAN) {
    *st = test_build_resnet(ctx, 2, 8, 11, &g);
    if (!*st) *st = test_build_resnet(ctx, 2, 8, 12, &g2);
  } else {
    *st = test_build_unet(ctx, 5, 8, 13, &g);
  }
  i2i_trainer *tr = NULL;
  if (!*st) {
    i2i_train_models m = {g, g2, NULL, NULL};
    *st = i2i_trainer_create(ctx, &p, &m, &tr);
  }
  i2i_model_free(g);
  i2i_model_free(g2);
  return tr;
}

/* Sets the images of iteration `it` (a seeded pattern; Pix2Pix's B is a function of A). */
static i2i_status feed(i2i_trainer *tr, const tcase *c, int it) {
  size_t n = (size_t)c->size * (size_t)c->size * 4;
  float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
  if (!a || !b) {
    free(a);
    free(b);
    return I2I_E_NOMEM;
  }
  i2i_status st = I2I_OK;
  for (int i = 0; i < c->batch && !st; i++) {
    test_rng r;
    test_rng_seed(&r, 1000u + (uint64_t)it * 16u + (uint64_t)i);
    for (size_t k = 0; k < n; k++) {
      a[k] = (float)test_rng_uniform(&r);
      b[k] = c->kind == I2I_TRAIN_PIX2PIX ? 1.0f - a[k] : (float)test_rng_uniform(&r);
    }
    st = i2i_trainer_set_images(tr, i, a, c->size, c->size, b, c->size, c->size);
  }
  free(a);
  free(b);
  return st;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-9); }

/* max |a - b| / max |b| */
static double tensor_err(const float *a, const float *b, size_t n) {
  double d = 0, m = 0;
  for (size_t i = 0; i < n; i++) {
    d = fmax(d, fabs((double)a[i] - (double)b[i]));
    m = fmax(m, fabs((double)b[i]));
  }
  return m > 0 ? d / m : d;
}

static double tensor_max(const float *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
  return m;
}

/* Elements of a tensor off by more than lim * max |b|, and the largest such difference. */
static size_t count_off(const float *a, const float *b, size_t n, double lim, double *biggest) {
  double m = tensor_max(b, n);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (d > lim * m) {
      k++;
      *biggest = fmax(*biggest, d);
    }
  }
  return k;
}

/* Compares `what` of every tensor of every network (max |gpu - cpu| / max |cpu| <= lim per
 * tensor). Tensors whose CPU gradient is at most 1e-5 of the network's largest are zero by
 * construction (a bias before a norm): both sides hold rounding noise there (which Adam turns
 * into lr-sized steps), so their gradients must only be as small on the GPU, and their moments
 * and values are left out. Values (flip > 0): up to 1 element in 1000 of a tensor
 * may be off by at most `flip`: Adam's step is lr times the gradient's sign where the gradient
 * is rounding-sized, so such an element can move the other way on the other backend. */
static void compare(i2i_trainer *gpu, i2i_trainer *cpu, i2i_train_tensor what, double lim, const char *label,
                    const char *cname, double flip) {
  double worst = 0, flipped_max = 0;
  char where[256] = "-";
  int compared = 0, skipped = 0, bad = 0;
  size_t flipped = 0;
  for (int net = 0; net < 4; net++) {
    size_t nt = i2i_trainer_tensor_count(cpu, net);
    double gmax = 0;
    for (size_t i = 0; i < nt; i++) {
      const char *name;
      size_t n;
      int tr;
      i2i_trainer_tensor_info(cpu, net, i, &name, &n, &tr);
      float *g = malloc(n * sizeof(float));
      if (g && tr && !i2i_trainer_read(cpu, net, name, I2I_TENSOR_GRAD, g, n)) gmax = fmax(gmax, tensor_max(g, n));
      free(g);
    }
    for (size_t i = 0; i < nt; i++) {
      const char *name;
      size_t n;
      int tr;
      i2i_trainer_tensor_info(cpu, net, i, &name, &n, &tr);
      if (what == I2I_TENSOR_GRAD && !tr) continue;
      float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
      if (!a || !b || !g || i2i_trainer_read(gpu, net, name, what, a, n) || i2i_trainer_read(cpu, net, name, what, b, n)) {
        bad++;
      } else if (tr && !i2i_trainer_read(cpu, net, name, I2I_TENSOR_GRAD, g, n) && tensor_max(g, n) <= 1e-5 * gmax) {
        skipped++; /* zero by construction: the GPU's must be as small */
        if (what == I2I_TENSOR_GRAD && tensor_max(a, n) > 1e-5 * gmax) bad++;
      } else {
        double e = tensor_err(a, b, n), big = 0;
        compared++;
        size_t off = flip > 0 ? count_off(a, b, n, lim, &big) : 0;
        if (off && off <= (n + 999) / 1000 && big <= flip) {
          flipped += off;
          flipped_max = fmax(flipped_max, big);
          double m = tensor_max(b, n);
          e = 0;
          for (size_t j = 0; j < n; j++) {
            double d = fabs((double)a[j] - (double)b[j]);
            if (d <= lim * m) e = fmax(e, d / m);
          }
        }
        if (e >= worst) {
          worst = e;
          snprintf(where, sizeof where, "net %d %s", net, name);
        }
      }
      free(a);
      free(b);
      free(g);
    }
  }
  CHECK(!bad && compared > 0 && worst <= lim, "%s: %s, %d tensors: max relative error %.2e (limit %.0e) at %s", cname,
        label, compared, worst, lim, where);
  if (skipped) printf("    (%d tensors with a zero-by-construction gradient%s)\n", skipped,
                      what == I2I_TENSOR_GRAD ? ": below 1e-5 of the largest on the GPU too" : " left out");
  if (flipped) printf("    (%zu elements with a rounding-sized gradient moved by Adam the other way, at most %.2e)\n", flipped, flipped_max);
}

static int parity(int steps) {
  i2i_ctx *cc = new_ctx(I2I_BACKEND_CPU), *gc = new_ctx(I2I_BACKEND_CUDA), *gc2 = new_ctx(I2I_BACKEND_CUDA);
  if (!cc || !gc || !gc2) {
    printf("cannot create contexts\n");
    return 1;
  }
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const tcase *c = &cases[ci];
    i2i_status s1, s2, s3;
    i2i_trainer *cpu = make(cc, c, &s1), *gpu = make(gc, c, &s2), *gpu2 = make(gc2, c, &s3);
    if (!gpu && ci == 0 && s2 == I2I_E_DEVICE) {
      printf("no CUDA training backend here: %s\n", i2i_ctx_errmsg(gc));
      i2i_trainer_free(cpu);
      i2i_ctx_free(cc);
      i2i_ctx_free(gc);
      i2i_ctx_free(gc2);
      return 77;
    }
    CHECK(cpu && gpu && gpu2, "%s: trainers on the CPU and the GPU: %s", c->name, gpu ? i2i_ctx_errmsg(cc) : i2i_ctx_errmsg(gc));
    if (!cpu || !gpu || !gpu2) {
      i2i_trainer_free(cpu);
      i2i_trainer_free(gpu);
      i2i_trainer_free(gpu2);
      continue;
    }
    CHECK(i2i_trainer_backend(gpu) == I2I_BACKEND_CUDA && i2i_trainer_backend(cpu) == I2I_BACKEND_CPU,
          "%s: the trainers run where they were asked to", c->name);
    double worst = 0;
    const char *wname = "-";
    int wstep = -1, ok = 1;
    for (int it = 0; it < steps && ok; it++) {
      i2i_train_report rc, rg, rg2;
      i2i_status a = feed(cpu, c, it), b = feed(gpu, c, it), d = feed(gpu2, c, it);
      if (!a) a = i2i_trainer_step(cpu, &rc);
      if (!b) b = i2i_trainer_step(gpu, &rg);
      if (!d) d = i2i_trainer_step(gpu2, &rg2);
      if (a || b || d) {
        CHECK(0, "%s: step %d: cpu %s / gpu %s", c->name, it, i2i_ctx_errmsg(cc), i2i_ctx_errmsg(gc));
        ok = 0;
        break;
      }
      const double pc[] = {rc.loss_g, rc.loss_d, rc.loss_gan_a, rc.loss_gan_b, rc.loss_cycle_a, rc.loss_cycle_b,
                           rc.loss_id_a, rc.loss_id_b, rc.loss_d_a, rc.loss_d_b, rc.loss_d_fake, rc.loss_d_real};
      const double pg[] = {rg.loss_g, rg.loss_d, rg.loss_gan_a, rg.loss_gan_b, rg.loss_cycle_a, rg.loss_cycle_b,
                           rg.loss_id_a, rg.loss_id_b, rg.loss_d_a, rg.loss_d_b, rg.loss_d_fake, rg.loss_d_real};
      static const char *names[] = {"loss_g", "loss_d", "gan_a", "gan_b", "cycle_a", "cycle_b",
                                    "id_a", "id_b", "d_a", "d_b", "d_fake", "d_real"};
      for (int k = 0; k < 12; k++)
        if (rel(pg[k], pc[k]) > worst) {
          worst = rel(pg[k], pc[k]);
          wname = names[k];
          wstep = it;
        }
      if (it == 0) compare(gpu, cpu, I2I_TENSOR_GRAD, 1e-3, "every parameter gradient of step 1", c->name, 0);
    }
    if (ok) {
      CHECK(worst <= 1e-4, "%s: every loss of %d steps, max relative error %.2e (limit 1e-4) at %s step %d", c->name,
            steps, worst, wname, wstep);
      char label[96];
      snprintf(label, sizeof label, "every parameter and running statistic after %d steps", steps);
      compare(gpu, cpu, I2I_TENSOR_VALUE, 1e-3, label, c->name, 2.0 * 2e-4 * steps);
      compare(gpu, cpu, I2I_TENSOR_ADAM_V, 1e-2, "Adam's second moments", c->name, 0);
      /* two GPU runs: deterministic algorithms and reductions, bit for bit */
      int same = 1;
      for (int net = 0; net < 4 && same; net++)
        for (size_t i = 0; i < i2i_trainer_tensor_count(gpu, net) && same; i++) {
          const char *name;
          size_t n;
          i2i_trainer_tensor_info(gpu, net, i, &name, &n, NULL);
          float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
          same = a && b && !i2i_trainer_read(gpu, net, name, I2I_TENSOR_VALUE, a, n) &&
                 !i2i_trainer_read(gpu2, net, name, I2I_TENSOR_VALUE, b, n) && !memcmp(a, b, n * sizeof(float));
          free(a);
          free(b);
        }
      CHECK(same, "%s: two GPU runs give bit-identical parameters", c->name);
    }
    i2i_trainer_free(cpu);
    i2i_trainer_free(gpu);
    i2i_trainer_free(gpu2);
  }
  i2i_ctx_free(cc);
  i2i_ctx_free(gc);
  i2i_ctx_free(gc2);
  return 0;
}

static void fault(const char *text) {
  const tcase *c = &cases[2];
  i2i_ctx *gc = new_ctx(I2I_BACKEND_CUDA);
  i2i_status st;
  i2i_trainer *tr = gc ? make(gc, c, &st) : NULL;
  for (int it = 0; tr && it < 3 && !st; it++) {
    i2i_train_report r;
    st = feed(tr, c, it);
    if (!st) st = i2i_trainer_step(tr, &r);
  }
  const char *msg = gc ? i2i_ctx_errmsg(gc) : "no context";
  CHECK(st != I2I_OK && strstr(msg, text), "a GPU fault stops training with a clear error (\"%s\"): %s", text, msg);
  i2i_trainer_free(tr);
  i2i_ctx_free(gc);
  i2i_ctx *cc = new_ctx(I2I_BACKEND_CPU);
  tr = cc ? make(cc, c, &st) : NULL;
  i2i_train_report r;
  if (tr && !st) st = feed(tr, c, 0);
  if (tr && !st) st = i2i_trainer_step(tr, &r);
  CHECK(tr && !st && isfinite(r.loss_g), "the same process then trains on the CPU");
  i2i_trainer_free(tr);
  i2i_ctx_free(cc);
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "parity")) {
    int rc = parity(argc >= 3 ? atoi(argv[2]) : 3);
    if (rc == 77) return 77;
  } else if (argc >= 3 && !strcmp(argv[1], "fault")) {
    fault(argv[2]);
  } else {
    fprintf(stderr, "usage: train_backends parity [STEPS] | fault TEXT\n");
    return 2;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
