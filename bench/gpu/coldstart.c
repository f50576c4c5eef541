/* bench/gpu/coldstart.c: what `i2i translate` does with the engine for one image, phase by phase,
 * as the plug-in's stand-in for cold and warm starts (issue 13): the process start (the caller
 * passes the time it launched the program), the context, the model load, the first run (backend
 * choice, CUDA context, cuDNN handle, weights, plan, algorithm search or the on-disk cache) and a
 * second run in the same process, then the teardown. The backend is AUTO, as the tool's. Engine
 * log lines go to stderr stamped with milliseconds since main(); one JSON line on stdout. Image
 * decoding and encoding (the tool's GEGL part) are not included. Not a test.
 * Usage: coldstart MODEL.onnx WIDTHxHEIGHT [LAUNCH_EPOCH_SECONDS] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "i2i.h"

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double t_main;

static void log_stamped(void *user, i2i_log_level level, const char *msg) {
  (void)user;
  (void)level;
  fprintf(stderr, "[%8.1f ms] %s\n", (wall_s() - t_main) * 1e3, msg);
}

int main(int argc, char **argv) {
  t_main = wall_s();
  int w = 0, h = 0;
  if (argc < 3 || sscanf(argv[2], "%dx%d", &w, &h) != 2 || w < 1 || h < 1 || w > 16384 || h > 16384) {
    fprintf(stderr, "usage: coldstart MODEL.onnx WIDTHxHEIGHT [LAUNCH_EPOCH_SECONDS]\n");
    return 2;
  }
  double launched = argc > 3 ? atof(argv[3]) : 0;
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.log = log_stamped;
  p.log_level = I2I_LOG_INFO;
  i2i_ctx *ctx = NULL;
  i2i_model *m = NULL;
  double t0 = wall_s();
  if (i2i_ctx_create(&p, &ctx)) {
    fprintf(stderr, "coldstart: cannot create a context\n");
    return 1;
  }
  double t1 = wall_s();
  if (i2i_model_load_file(ctx, argv[1], &m)) {
    fprintf(stderr, "coldstart: %s\n", i2i_ctx_errmsg(ctx));
    i2i_ctx_free(ctx);
    return 1;
  }
  double t2 = wall_s();
  size_t n = (size_t)w * (size_t)h * 4;
  float *img = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
  if (!img || !out) {
    fprintf(stderr, "coldstart: out of memory for a %dx%d image\n", w, h);
    return 1;
  }
  uint32_t r = 12345u;
  for (size_t i = 0; i < n; i++) {
    r = r * 1664525u + 1013904223u;
    img[i] = i % 4 == 3 ? 1.0f : (float)(r >> 8) / 16777216.0f;
  }
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.layout = I2I_PIXELS_RGBA;
  rp.scale = 0; /* the image's own size (the tool's default for images is a 512-pixel short side) */
  const float *ins[1] = {img};
  float *outs[1] = {out};
  i2i_run_report rep1, rep2;
  double t3 = wall_s();
  if (i2i_run(ctx, m, &rp, 1, w, h, ins, outs, &rep1)) {
    fprintf(stderr, "coldstart: %s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  double t4 = wall_s();
  if (i2i_run(ctx, m, &rp, 1, w, h, ins, outs, &rep2)) {
    fprintf(stderr, "coldstart: %s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  double t5 = wall_s();
  i2i_model_free(m);
  i2i_ctx_free(ctx);
  free(img);
  free(out);
  double t6 = wall_s();
  printf("{\"size\": \"%dx%d\", \"backend\": \"%s\", \"process_start_s\": %.4f, \"context_s\": %.4f, \"load_s\": %.4f, "
         "\"first_run_s\": %.4f, \"second_run_s\": %.4f, \"teardown_s\": %.4f, \"to_first_result_s\": %.4f, "
         "\"total_s\": %.4f, \"peak_device_mib\": %.1f}\n",
         w, h, rep1.backend == I2I_BACKEND_CUDA ? "cuda" : "cpu", launched > 0 ? t_main - launched : -1.0, t1 - t0,
         t2 - t1, t4 - t3, t5 - t4, t6 - t5, t4 - (launched > 0 ? launched : t_main), t6 - (launched > 0 ? launched : t_main),
         rep1.peak_device_bytes / 1048576.0);
  return 0;
}
