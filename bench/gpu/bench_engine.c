/* bench/gpu/bench_engine.c: times the CUDA backend on one model, size, batch and precision and
 * prints one JSON line for bench.py: device-resident medians (the module's bench hook, CUDA
 * events, optional CUDA graph), host to host through i2i_run and the device image path, the
 * first run (plan, algorithm search or cache) and peak device memory. Not a test. */
#include <gmodule.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda/cuda_api.h"
#include "internal.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void summary(double *v, int n, double *med, double *mn, double *p90) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  *med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  *mn = v[0];
  *p90 = v[(int)(0.9 * (n - 1) + 0.5)];
}

static float *read_npy(const char *path, size_t want) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned char m[10];
  float *d = NULL;
  if (fread(m, 1, 10, f) == 10 && !memcmp(m, "\x93NUMPY", 6) && m[6] == 1) {
    size_t hl = (size_t)(m[8] | (m[9] << 8));
    if (fseek(f, (long)(10 + hl), SEEK_SET) == 0 && (d = malloc(want * sizeof(float))) &&
        fread(d, sizeof(float), want, f) != want) {
      free(d);
      d = NULL;
    }
  }
  fclose(f);
  return d;
}

static int write_npy(const char *path, const float *d, const shape4 s) {
  char hdr[160];
  int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld, %lld, %lld), }",
                   (long long)s.n, (long long)s.c, (long long)s.h, (long long)s.w);
  int pad = (64 - (10 + n + 1) % 64) % 64;
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  unsigned short hl = (unsigned short)(n + pad + 1);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc(hl & 0xff, f);
  fputc(hl >> 8, f);
  fwrite(hdr, 1, (size_t)n, f);
  for (int i = 0; i < pad; i++) fputc(' ', f);
  fputc('\n', f);
  size_t cnt = shape_numel(s);
  int ok = fwrite(d, sizeof(float), cnt, f) == cnt;
  return fclose(f) == 0 && ok ? 0 : -1;
}

static void log_stderr(void *user, i2i_log_level level, const char *msg) {
  (void)user;
  (void)level;
  fprintf(stderr, "%s\n", msg);
}

int main(int argc, char **argv) {
  const char *model_path = NULL, *input = NULL, *dump = NULL, *prec = "fp16", *mode_s = "deterministic";
  int w = 256, h = 256, batch = 1, warmup = -1, iters = -1, graph = 0, h2h = 5;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--size") && sscanf(v, "%dx%d", &w, &h) == 2) i++;
    else if (!strcmp(a, "--batch")) batch = atoi(argv[++i < argc ? i : i - 1]);
    else if (!strcmp(a, "--precision")) prec = argv[++i < argc ? i : i - 1];
    else if (!strcmp(a, "--mode")) mode_s = argv[++i < argc ? i : i - 1];
    else if (!strcmp(a, "--warmup")) warmup = atoi(argv[++i < argc ? i : i - 1]);
    else if (!strcmp(a, "--iters")) iters = atoi(argv[++i < argc ? i : i - 1]);
    else if (!strcmp(a, "--h2h")) h2h = atoi(argv[++i < argc ? i : i - 1]);
    else if (!strcmp(a, "--graph")) graph = 1;
    else if (!strcmp(a, "--input")) input = argv[++i < argc ? i : i - 1];
    else if (!strcmp(a, "--dump")) dump = argv[++i < argc ? i : i - 1];
    else if (a[0] != '-' && !model_path) model_path = a;
    else {
      fprintf(stderr, "unknown argument %s\n", a);
      return 2;
    }
  }
  if (!model_path || w < 1 || h < 1 || batch < 1 || batch > 4096) {
    fprintf(stderr,
            "usage: bench_engine MODEL.onnx [--size WxH] [--batch N] [--precision fp16|fp32] [--mode deterministic|"
            "faithful|eval]\n       [--warmup N] [--iters N] [--graph] [--h2h N] [--input in.npy] [--dump out.npy]\n");
    return 2;
  }
  int64_t px = (int64_t)w * h * batch;
  if (iters < 0) iters = px <= 256 * 256 * 4 ? 200 : px <= 1100000 ? 50 : 20;
  if (warmup < 0) warmup = px <= 1100000 ? 20 : 3;
  i2i_pix2pix_mode mode = !strcmp(mode_s, "faithful") ? I2I_PIX2PIX_FAITHFUL
                          : !strcmp(mode_s, "eval")   ? I2I_PIX2PIX_EVAL
                                                      : I2I_PIX2PIX_DETERMINISTIC;
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.backend = I2I_BACKEND_CUDA;
  if (getenv("I2I_PROFILE")) { /* the bench hook's per-step profile (cplan_profile) on stderr */
    p.log = log_stderr;
    p.log_level = I2I_LOG_INFO;
  }
  i2i_ctx *ctx = NULL;
  i2i_model *m = NULL;
  if (i2i_ctx_create(&p, &ctx) || i2i_model_load_file(ctx, model_path, &m)) {
    fprintf(stderr, "bench_engine: %s\n", ctx ? i2i_ctx_errmsg(ctx) : "no context");
    return 1;
  }
  void *self = NULL;
  if (!cuda_backend(ctx, &self)) {
    printf("{\"error\": \"no CUDA backend: %s\"}\n", ctx->cuda_why);
    return 77;
  }
  gpointer sym = NULL;
  if (!g_module_symbol((GModule *)ctx->cuda_module, "i2i_cuda_get_ext", &sym) || !sym) return 1;
  const i2i_cuda_ext *ext = ((i2i_cuda_get_ext_fn)sym)();
  ext->set_precision(self, !strcmp(prec, "fp32") ? I2I_CUDA_FP32 : I2I_CUDA_FP16);
  int mult = m->info.size_multiple > 0 ? m->info.size_multiple : 1;
  int ph = (h + mult - 1) / mult * mult, pw = (w + mult - 1) / mult * mult;
  if (ph < m->info.min_side) ph = m->info.min_side;
  if (pw < m->info.min_side) pw = m->info.min_side;
  i2i_plan *plan = NULL;
  if (plan_build(ctx, m, batch, ph, pw, &plan)) {
    fprintf(stderr, "bench_engine: %s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  /* the host arena holds the input and the output only */
  const i2i_graph *g = &m->g;
  size_t nin = shape_numel(plan->shape[g->input]), nout = shape_numel(plan->shape[g->output]);
  for (int v = 0; v < g->n_values; v++) plan->offset[v] = SIZE_MAX;
  plan->offset[g->input] = 0;
  plan->offset[g->output] = (nin + 15) & ~(size_t)15;
  float *arena = malloc((plan->offset[g->output] + nout) * sizeof(float));
  if (!arena) return 1;
  float *xin = arena, *yout = arena + plan->offset[g->output];
  if (input) {
    float *d = read_npy(input, nin);
    if (!d) {
      fprintf(stderr, "bench_engine: cannot read %zu floats from %s\n", nin, input);
      return 1;
    }
    memcpy(xin, d, nin * sizeof(float));
    free(d);
  } else {
    uint64_t s = 12345;
    for (size_t i = 0; i < nin; i++) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      xin[i] = (float)((double)(s >> 11) / 4503599627370496.0 - 1.0);
    }
  }
  i2i_run_state rs;
  memset(&rs, 0, sizeof rs);
  rs.arena = arena;
  rs.threads = 1;
  rs.mode = mode;
  rs.seed = 1;
  double *ms = malloc(sizeof(double) * (size_t)(iters > h2h ? iters : h2h + 1));
  double t0 = now_s();
  i2i_status st = ext->bench(self, ctx, m, plan, &rs, 0, 1, 0, ms);
  double first = now_s() - t0;
  if (st) {
    printf("{\"error\": \"%s\"}\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  double med = 0, mn = 0, p90 = 0, gmed = -1, gmn = -1, gp90 = -1;
  st = ext->bench(self, ctx, m, plan, &rs, warmup, iters, 0, ms);
  if (!st) summary(ms, iters, &med, &mn, &p90);
  if (!st && graph) {
    st = ext->bench(self, ctx, m, plan, &rs, warmup, iters, 1, ms);
    if (!st) summary(ms, iters, &gmed, &gmn, &gp90);
  }
  if (!st && dump && write_npy(dump, yout, plan->shape[g->output])) fprintf(stderr, "cannot write %s\n", dump);
  /* host to host: i2i_run (RGB [-1,1], the engine's path) and the device image path (RGBA) */
  double run_med = -1, img_med = -1, x1, x2;
  if (!st && h2h > 0) {
    float **ins = calloc((size_t)batch, sizeof *ins), **outs = calloc((size_t)batch, sizeof *outs);
    size_t npx = (size_t)w * (size_t)h;
    for (int b = 0; b < batch; b++) {
      ins[b] = malloc(npx * 4 * sizeof(float));
      outs[b] = malloc(npx * 4 * sizeof(float));
      for (size_t i = 0; i < npx * 4; i++) ins[b][i] = (float)((i * 7919 % 1000) / 1000.0);
    }
    i2i_run_params rp;
    i2i_run_default_params(&rp);
    rp.layout = I2I_PIXELS_RGB_SIGNED;
    rp.pix2pix_mode = mode;
    for (int r = 0; r <= h2h && !st; r++) {
      i2i_run_report rep;
      double a = now_s();
      st = i2i_run(ctx, m, &rp, batch, w, h, (const float *const *)ins, outs, &rep);
      if (r) ms[r - 1] = (now_s() - a) * 1e3;
      if (!st && rep.backend != I2I_BACKEND_CUDA) st = I2I_E_DEVICE;
    }
    if (!st) summary(ms, h2h, &run_med, &x1, &x2);
    i2i_plan *ip = NULL;
    if (!st) st = plan_build(ctx, m, batch, ph, pw, &ip);
    i2i_cuda_images im = {batch, w, h, I2I_PIXELS_RGBA, 1.0f, (const float *const *)ins, outs};
    for (int r = 0; r <= h2h && !st; r++) {
      double a = now_s();
      st = ext->execute_images(self, ctx, m, ip, &rs, &im);
      if (r) ms[r - 1] = (now_s() - a) * 1e3;
    }
    if (!st) summary(ms, h2h, &img_med, &x1, &x2);
    plan_free(ctx, ip);
    for (int b = 0; b < batch; b++) {
      free(ins[b]);
      free(outs[b]);
    }
    free(ins);
    free(outs);
  }
  i2i_cuda_stats s;
  ext->get_stats(self, &s);
  if (st) {
    printf("{\"error\": \"%s\"}\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  printf("{\"model\": \"%s\", \"width\": %d, \"height\": %d, \"batch\": %d, \"precision\": \"%s\", \"mode\": \"%s\", "
         "\"run_width\": %d, \"run_height\": %d, \"iters\": %d, \"warmup\": %d, \"device_ms\": %.4f, \"device_min_ms\": %.4f, "
         "\"device_p90_ms\": %.4f, \"graph_ms\": %.4f, \"graph_min_ms\": %.4f, \"h2h_run_ms\": %.3f, "
         "\"h2h_images_ms\": %.3f, \"first_run_s\": %.3f, \"peak_device_mib\": %.1f, \"searches\": %llu, "
         "\"cache_hits\": %llu, \"graphs\": %llu, \"graph_failures\": %llu, \"gpu\": \"%s\", \"cudnn\": %zu, "
         "\"driver\": %d, \"runtime\": %d}\n",
         model_path, w, h, batch, prec, mode_s, pw, ph, iters, warmup, med, mn, p90, gmed, gmn, run_med, img_med, first,
         s.peak_device_bytes / 1048576.0, (unsigned long long)s.algo_searches, (unsigned long long)s.algo_cache_hits,
         (unsigned long long)s.graphs_captured, (unsigned long long)s.graph_failures, s.device_name, s.cudnn_version, s.driver_version, s.runtime_version);
  free(ms);
  free(arena);
  plan_free(ctx, plan);
  i2i_model_free(m);
  i2i_ctx_free(ctx);
  return 0;
}
