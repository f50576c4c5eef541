/* bench/cpu/engine_bench.c: times i2i_run on the CPU backend for bench/cpu/run.
 *
 *   engine_bench MODEL HEIGHT WIDTH RUNS THREADS MODE  ->  one JSON line with every run's seconds
 * The model is loaded once; one warm-up run (plan, first touch of the workspace) is not counted.
 * The input is a fixed smooth pattern in [-1,1]; the output is discarded. With I2I_PROFILE=1 or 2
 * the engine's per-op profile of every run goes to stderr (the last one is a warm run).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "i2i.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void log_stderr(void *user, i2i_log_level level, const char *msg) {
  (void)user;
  (void)level;
  fprintf(stderr, "%s\n", msg);
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: engine_bench MODEL HEIGHT WIDTH RUNS THREADS MODE\n");
    return 2;
  }
  int h = atoi(argv[2]), w = atoi(argv[3]), runs = atoi(argv[4]);
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.backend = I2I_BACKEND_CPU;
  p.threads = atoi(argv[5]);
  if (getenv("I2I_PROFILE")) p.log = log_stderr;
  i2i_ctx *ctx;
  i2i_model *m;
  if (i2i_ctx_create(&p, &ctx) || i2i_model_load_file(ctx, argv[1], &m)) {
    fprintf(stderr, "engine_bench: %s\n", ctx ? i2i_ctx_errmsg(ctx) : "no context");
    return 1;
  }
  size_t n = (size_t)h * (size_t)w * 3;
  float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) x[i] = (float)sin(0.001 * (double)i);
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.layout = I2I_PIXELS_RGB_SIGNED;
  rp.pix2pix_mode = !strcmp(argv[6], "eval") ? I2I_PIX2PIX_EVAL : I2I_PIX2PIX_DETERMINISTIC;
  const float *ins[1] = {x};
  float *outs[1] = {y};
  printf("{\"times\": [");
  for (int r = -1; r < runs; r++) {
    double t0 = now();
    if (i2i_run(ctx, m, &rp, 1, w, h, ins, outs, NULL)) {
      fprintf(stderr, "engine_bench: %s\n", i2i_ctx_errmsg(ctx));
      return 1;
    }
    double t = now() - t0;
    if (r >= 0) printf("%s%.6f", r ? ", " : "", t);
  }
  printf("]}\n");
  free(x);
  free(y);
  i2i_model_free(m);
  i2i_ctx_free(ctx);
  return 0;
}
