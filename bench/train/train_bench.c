/* bench/train/train_bench.c: seconds per training iteration of the engine's trainer (CPU, or
 * the GPU for tests/gpu/run), for bench/train/run. Loads a checkpoint in mmagic layout (RGB),
 * feeds random images at the given size, runs warm-up iterations, then times each iteration;
 * prints one JSON object with the times, the median and the precision. Not a test: it prints
 * figures only.
 *
 * Usage: train_bench CKPT cyclegan|pix2pix SIZE BATCH ITERS THREADS [WARMUP [cpu|cuda]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"

static void log_line(void *user, i2i_log_level level, const char *msg) {
  (void)user;
  (void)level;
  fprintf(stderr, "%s\n", msg);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: train_bench CKPT cyclegan|pix2pix SIZE BATCH ITERS THREADS [WARMUP [cpu|cuda]]\n");
    return 2;
  }
  bool cyc = !strcmp(argv[2], "cyclegan");
  int size = atoi(argv[3]), batch = atoi(argv[4]), iters = atoi(argv[5]), threads = atoi(argv[6]);
  int warm = argc > 7 ? atoi(argv[7]) : 1;
  bool gpu = argc > 8 && !strcmp(argv[8], "cuda");
  if (size < 32 || batch < 1 || iters < 1 || iters > 1000 || threads < 1 || warm < 0) return 2;
  i2i_ctx_params cp;
  i2i_ctx_default_params(&cp);
  cp.backend = gpu ? I2I_BACKEND_CUDA : I2I_BACKEND_CPU;
  cp.threads = threads;
  cp.log = log_line;
  i2i_ctx *ctx;
  if (i2i_ctx_create(&cp, &ctx)) return 1;
  convert_opts co = {.channel_order = "rgb", .task = cyc ? NULL : "bench"};
  convert_set set;
  char err[1024];
  if (convert_load(ctx, argv[1], &co, &set, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  i2i_train_models tm = {0};
  for (size_t i = 0; i < set.n; i++) {
    bool fwd = !cyc || !strcmp(set.nets[i].task, "x2y");
    const i2i_model **slot = set.nets[i].discriminator ? (fwd ? &tm.d : &tm.d_rev) : (fwd ? &tm.g : &tm.g_rev);
    *slot = set.nets[i].model;
  }
  i2i_train_params p;
  i2i_train_default_params(&p, cyc ? I2I_TRAIN_CYCLEGAN : I2I_TRAIN_PIX2PIX);
  p.size = size;
  p.batch = batch;
  p.augment = 0;
  p.iters = 1000;
  i2i_trainer *tr;
  if (i2i_trainer_create(ctx, &p, &tm, &tr)) {
    fprintf(stderr, "%s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  convert_set_free(&set);
  if (gpu != (i2i_trainer_backend(tr) == I2I_BACKEND_CUDA)) {
    fprintf(stderr, "the trainer does not run where it was asked to\n");
    return 1;
  }
  size_t n = (size_t)size * (size_t)size * 4;
  float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
  unsigned s = 7;
  double *t = calloc((size_t)iters, sizeof(double));
  for (int it = 0; it < warm + iters; it++) {
    for (int i = 0; i < batch; i++) {
      for (size_t k = 0; k < n; k++) {
        s = s * 1664525u + 1013904223u;
        a[k] = (float)(s >> 8) / 16777216.0f;
        b[k] = 1.0f - a[k];
      }
      i2i_trainer_set_images(tr, i, a, size, size, b, size, size);
    }
    i2i_train_report r;
    if (i2i_trainer_step(tr, &r)) {
      fprintf(stderr, "%s\n", i2i_ctx_errmsg(ctx));
      return 1;
    }
    if (it >= warm) t[it - warm] = r.seconds;
    fprintf(stderr, "i2i %s %d threads=%d iteration %d: %.3f s (loss G %.3f)\n", argv[2], size, threads, it, r.seconds, r.loss_g);
  }
  double *sorted = malloc(sizeof(double) * (size_t)iters);
  memcpy(sorted, t, sizeof(double) * (size_t)iters);
  qsort(sorted, (size_t)iters, sizeof(double), cmp);
  printf("{\"runtime\": \"%s\", \"precision\": \"fp32\", \"model\": \"%s\", \"size\": %d, \"batch\": %d, \"threads\": %d, \"times\": [",
         gpu ? "i2i-cuda" : "i2i", argv[2], size, batch, gpu ? 0 : threads);
  for (int i = 0; i < iters; i++) printf("%s%.4f", i ? ", " : "", t[i]);
  printf("], \"median\": %.4f}\n", sorted[iters / 2]);
  free(sorted);
  free(t);
  free(a);
  free(b);
  i2i_trainer_free(tr);
  i2i_ctx_free(ctx);
  return 0;
}
