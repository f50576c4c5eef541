/* tests/gpu/parity.c: CUDA against CPU, op by op and end to end, on both generators (C-built
 * ResNet 9x64 and U-Net 8x64, plus --onnx exports): fresh random inputs, NaN-poisoned outputs;
 * e2e fp32 max <= 1e-3, fp16 max <= 3e-2 and mean <= 3e-3; op by op (single steps and 3-step
 * fusion windows via run_steps) normalised max <= 1e-4 / 1e-2; the device image path; --fault;
 * --layerwise: layer by layer inside a device budget equals the whole image (1e-4), peak within;
 * --expect-graphs: the runs replayed CUDA graphs (I2I_CUDA_GRAPH=1) and no capture failed.
 * Exits 77 when no CUDA backend opens. Ends with "N passed, N failed". */
#include <gmodule.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda/cuda_api.h"
#include "internal.h"
#include "models.h"

static int n_pass, n_fail;
static FILE *out_file;
static test_rng rng;

static void result(int ok, const char *fmt, ...) I2I_PRINTF(2, 3);
static void result(int ok, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (ok) n_pass++;
  else n_fail++;
  printf("%s %s\n", ok ? "PASS" : "FAIL", line);
  fflush(stdout);
  if (out_file) fprintf(out_file, "%s %s\n", ok ? "PASS" : "FAIL", line);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
  i2i_ctx *cpu, *gpu;
  void *self;
  const i2i_cuda_ext *ext;
} env_t;

static i2i_ctx *make_ctx(i2i_backend be) {
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.backend = be;
  i2i_ctx *c = NULL;
  return i2i_ctx_create(&p, &c) ? NULL : c;
}

/* Opens the CUDA backend of a forced-CUDA context; 0 with the reason printed when it cannot. */
static int open_gpu(env_t *E) {
  E->gpu = make_ctx(I2I_BACKEND_CUDA);
  if (!E->gpu) return 0;
  const i2i_backend_ops *ops = cuda_backend(E->gpu, &E->self);
  if (!ops) {
    printf("SKIP: no CUDA backend: %s\n", E->gpu->cuda_why);
    return 0;
  }
  gpointer sym = NULL;
  if (!g_module_symbol((GModule *)E->gpu->cuda_module, "i2i_cuda_get_ext", &sym) || !sym) {
    printf("the CUDA module has no extension table\n");
    return 0;
  }
  E->ext = ((i2i_cuda_get_ext_fn)sym)();
  return E->ext && E->ext->version == I2I_CUDA_EXT_VERSION;
}

typedef struct {
  const char *name;
  i2i_model *m;
  int unet;
} model_t;

static void random_rgb(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = (float)(2 * test_rng_uniform(&rng) - 1);
}

static void stats(const float *a, const float *ref, size_t n, double *maxe, double *meane, double *refmax) {
  double m = 0, s = 0, r = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)ref[i]);
    if (!(d <= m)) m = d; /* NaN wins */
    s += d;
    if (fabs(ref[i]) > r) r = fabs(ref[i]);
  }
  *maxe = m;
  *meane = n ? s / (double)n : 0;
  *refmax = r;
}

static const char *mode_name(i2i_pix2pix_mode m) {
  return m == I2I_PIX2PIX_FAITHFUL ? "faithful" : m == I2I_PIX2PIX_DETERMINISTIC ? "deterministic" : "eval";
}

static i2i_status run_rgb(i2i_ctx *ctx, const i2i_model *m, i2i_pix2pix_mode mode, uint64_t seed, int w, int h,
                          const float *in, float *out, i2i_run_report *rep) {
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.layout = I2I_PIXELS_RGB_SIGNED;
  rp.pix2pix_mode = mode;
  rp.seed = seed;
  for (size_t i = 0; i < (size_t)w * h * 3; i++) out[i] = NAN;
  const float *ins[1] = {in};
  float *outs[1] = {out};
  return i2i_run(ctx, m, &rp, 1, w, h, ins, outs, rep);
}

/* ---- end to end ----------------------------------------------------------------------------- */

static void e2e(env_t *E, const model_t *M, i2i_pix2pix_mode mode, int w, int h, int nprec, const int *precs) {
  size_t n = (size_t)w * h * 3;
  float *in = malloc(n * sizeof *in), *ref = malloc(n * sizeof *ref), *out = malloc(n * sizeof *out);
  if (!in || !ref || !out) {
    result(0, "%s e2e %dx%d: out of host memory", M->name, w, h);
    goto done;
  }
  random_rgb(in, n);
  uint64_t seed = (uint64_t)(test_rng_uniform(&rng) * 1e9);
  i2i_run_report rep;
  double t0 = now_s();
  if (run_rgb(E->cpu, M->m, mode, seed, w, h, in, ref, &rep)) {
    result(0, "%s e2e %dx%d %s: CPU reference failed: %s", M->name, w, h, mode_name(mode), i2i_ctx_errmsg(E->cpu));
    goto done;
  }
  double tcpu = now_s() - t0;
  for (int p = 0; p < nprec; p++) {
    E->ext->set_precision(E->self, precs[p]);
    t0 = now_s();
    i2i_status st = run_rgb(E->gpu, M->m, mode, seed, w, h, in, out, &rep);
    double tgpu = now_s() - t0;
    if (st || rep.backend != I2I_BACKEND_CUDA) {
      result(0, "%-22s %s e2e %4dx%-4d %-13s: the CUDA run failed: %s", M->name, precs[p] ? "fp16" : "fp32", w, h,
             M->unet ? mode_name(mode) : "-", st ? i2i_ctx_errmsg(E->gpu) : rep.message);
      continue;
    }
    double mx, mean, rmax;
    stats(out, ref, n, &mx, &mean, &rmax);
    double lmax = precs[p] ? 3e-2 : 1e-3, lmean = precs[p] ? 3e-3 : 1e-3;
    result(mx <= lmax && mean <= lmean,
           "%-22s %s e2e %4dx%-4d %-13s max %.3g (<= %.0e) mean %.3g (<= %.0e)  cpu %.2f s, gpu %.3f s host-to-host",
           M->name, precs[p] ? "fp16" : "fp32", w, h, M->unet ? mode_name(mode) : "-", mx, lmax, mean, lmean, tcpu, tgpu);
  }
done:
  free(in);
  free(ref);
  free(out);
}

/* ---- layer by layer inside a device budget (large images) ---------------------------------------- */

/* fp32: the whole image on the GPU against the same run with a device budget that forces the
 * layer-by-layer path (tiled equals whole, 1e-4), and the budgeted run's peak inside it. */
static void layerwise_check(env_t *E, const model_t *M, i2i_pix2pix_mode mode, int w, int h, uint64_t budget) {
  size_t n = (size_t)w * h * 3;
  float *in = malloc(n * sizeof *in), *whole = malloc(n * sizeof *whole), *out = malloc(n * sizeof *out);
  if (!in || !whole || !out) {
    result(0, "%s layer by layer %dx%d: out of host memory", M->name, w, h);
    goto done;
  }
  random_rgb(in, n);
  E->ext->set_precision(E->self, I2I_CUDA_FP32);
  i2i_run_report rw, rl;
  i2i_ctx_set_memory_budget(E->gpu, 0);
  double t0 = now_s();
  i2i_status st = run_rgb(E->gpu, M->m, mode, 7, w, h, in, whole, &rw);
  double tw = now_s() - t0;
  if (st || rw.backend != I2I_BACKEND_CUDA) {
    /* no whole-image reference on this GPU: the CPU's */
    st = run_rgb(E->cpu, M->m, mode, 7, w, h, in, whole, &rw);
    if (st) {
      result(0, "%s layer by layer %dx%d: no reference: %s", M->name, w, h, i2i_ctx_errmsg(E->cpu));
      goto done;
    }
  }
  i2i_ctx_set_memory_budget(E->gpu, budget);
  t0 = now_s();
  st = run_rgb(E->gpu, M->m, mode, 7, w, h, in, out, &rl);
  double tl = now_s() - t0;
  i2i_ctx_set_memory_budget(E->gpu, 0);
  if (st || rl.backend != I2I_BACKEND_CUDA) {
    result(0, "%-22s fp32 layer by layer %4dx%-4d: the CUDA run failed: %s", M->name, w, h,
           st ? i2i_ctx_errmsg(E->gpu) : rl.message);
    goto done;
  }
  double mx, mean, rmax;
  stats(out, whole, n, &mx, &mean, &rmax);
  result(mx <= 1e-4 && rl.tiles > 1 && rl.peak_device_bytes <= budget,
         "%-22s fp32 layer by layer %4dx%-4d %-13s: %d bands, max %.3g (<= 1e-4) against the whole image (%s), peak "
         "%.0f MiB (budget %.0f MiB); %.2f s, whole image %.2f s host-to-host",
         M->name, w, h, M->unet ? mode_name(mode) : "-", rl.tiles, mx, rw.backend == I2I_BACKEND_CUDA ? "GPU" : "CPU",
         rl.peak_device_bytes / 1048576.0, budget / 1048576.0, tl, tw);
done:
  free(in);
  free(whole);
  free(out);
}

/* ---- the device image path ------------------------------------------------------------------- */

static void image_path(env_t *E, const model_t *M, int w, int h, int nprec, const int *precs) {
  const int nimg = 2;
  size_t n = (size_t)w * h * 4;
  float *in[2], *ref[2], *out[2];
  for (int i = 0; i < nimg; i++) {
    in[i] = malloc(n * sizeof(float));
    ref[i] = malloc(n * sizeof(float));
    out[i] = malloc(n * sizeof(float));
    for (size_t k = 0; k < n; k++) in[i][k] = (float)(test_rng_uniform(&rng) * 1.2 - 0.1); /* some out of [0,1] */
  }
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.layout = I2I_PIXELS_RGBA;
  rp.strength = 0.6f;
  rp.pix2pix_mode = I2I_PIX2PIX_FAITHFUL;
  rp.seed = 5;
  i2i_run_report rep;
  if (i2i_run(E->cpu, M->m, &rp, nimg, w, h, (const float *const *)in, ref, &rep)) {
    result(0, "%s image path: CPU reference failed: %s", M->name, i2i_ctx_errmsg(E->cpu));
    goto done;
  }
  int mult = M->m->info.size_multiple > 0 ? M->m->info.size_multiple : 1, mn = M->m->info.min_side;
  int ph = (h + mult - 1) / mult * mult, pw = (w + mult - 1) / mult * mult;
  if (ph < mn) ph = mn;
  if (pw < mn) pw = mn;
  i2i_plan *plan = NULL;
  if (plan_build(E->gpu, M->m, nimg, ph, pw, &plan)) {
    result(0, "%s image path: plan failed: %s", M->name, i2i_ctx_errmsg(E->gpu));
    goto done;
  }
  for (int p = 0; p < nprec; p++) {
    E->ext->set_precision(E->self, precs[p]);
    for (int i = 0; i < nimg; i++)
      for (size_t k = 0; k < n; k++) out[i][k] = NAN;
    i2i_run_state rs;
    memset(&rs, 0, sizeof rs);
    rs.mode = rp.pix2pix_mode;
    rs.seed = rp.seed;
    rs.threads = 1;
    i2i_cuda_images im = {nimg, w, h, I2I_PIXELS_RGBA, rp.strength, (const float *const *)in, out};
    i2i_status st = E->ext->execute_images(E->self, E->gpu, M->m, plan, &rs, &im);
    if (st) {
      result(0, "%-22s %s image path %dx%d x%d: %s", M->name, precs[p] ? "fp16" : "fp32", w, h, nimg,
             i2i_ctx_errmsg(E->gpu));
      continue;
    }
    double mx = 0, mean = 0, alpha = 0;
    for (int i = 0; i < nimg; i++) {
      double a, b, r;
      stats(out[i], ref[i], n, &a, &b, &r);
      if (!(a <= mx)) mx = a;
      mean += b / nimg;
      for (size_t k = 3; k < n; k += 4)
        if (out[i][k] != in[i][k]) alpha = 1;
    }
    double lmax = precs[p] ? 3e-2 : 1e-3, lmean = precs[p] ? 3e-3 : 1e-3;
    result(mx <= lmax && mean <= lmean && alpha == 0,
           "%-22s %s image path %4dx%-4d x%d RGBA strength 0.6: max %.3g mean %.3g, alpha %s", M->name,
           precs[p] ? "fp16" : "fp32", w, h, nimg, mx, mean, alpha == 0 ? "kept" : "CHANGED");
  }
  plan_free(E->gpu, plan);
done:
  for (int i = 0; i < nimg; i++) {
    free(in[i]);
    free(ref[i]);
    free(out[i]);
  }
}

/* ---- op by op ----------------------------------------------------------------------------------- */

static const char *op_name(i2i_op op) {
  switch (op) {
  case OP_CONV: return "Conv";
  case OP_CONVT: return "ConvT";
  case OP_INSTNORM: return "InstNorm";
  case OP_BATCHNORM: return "BatchNorm";
  case OP_PAD: return "Pad";
  case OP_RELU: return "Relu";
  case OP_LRELU: return "LeakyRelu";
  case OP_TANH: return "Tanh";
  case OP_ADD: return "Add";
  case OP_CONCAT: return "Concat";
  case OP_DROPOUT: return "Dropout";
  case OP_IDENTITY: return "Identity";
  default: return "?";
  }
}

static void op_by_op(env_t *E, const model_t *M, i2i_pix2pix_mode mode, int w, int h, int nprec, const int *precs) {
  int mult = M->m->info.size_multiple > 0 ? M->m->info.size_multiple : 1, mn = M->m->info.min_side;
  int ph = (h + mult - 1) / mult * mult, pw = (w + mult - 1) / mult * mult;
  if (ph < mn) ph = mn;
  if (pw < mn) pw = mn;
  i2i_plan *plan = NULL;
  if (plan_build(E->cpu, M->m, 1, ph, pw, &plan)) {
    result(0, "%s op by op: plan failed: %s", M->name, i2i_ctx_errmsg(E->cpu));
    return;
  }
  /* every value gets its own place, so all intermediates survive the CPU run */
  const i2i_graph *g = &M->m->g;
  size_t total = 0;
  for (int v = 0; v < g->n_values; v++)
    if (plan->offset[v] != SIZE_MAX) {
      plan->offset[v] = total;
      total += (shape_numel(plan->shape[v]) + 15) & ~(size_t)15;
    }
  plan->arena_floats = total;
  float *arena = malloc(total * sizeof(float)), *save = NULL;
  float *scratch = malloc((plan->scratch_floats ? plan->scratch_floats : 16) * sizeof(float));
  size_t maxv = 0;
  for (int v = 0; v < g->n_values; v++)
    if (plan->offset[v] != SIZE_MAX && shape_numel(plan->shape[v]) > maxv) maxv = shape_numel(plan->shape[v]);
  save = malloc(maxv * sizeof(float));
  if (!arena || !scratch || !save) {
    result(0, "%s op by op %dx%d: out of host memory (%zu MiB)", M->name, pw, ph, total * 4 >> 20);
    goto done;
  }
  random_rgb(arena + plan->offset[g->input], shape_numel(plan->shape[g->input]));
  i2i_run_state rs;
  memset(&rs, 0, sizeof rs);
  rs.arena = arena;
  rs.scratch = scratch;
  rs.threads = E->cpu->threads;
  rs.mode = mode;
  rs.seed = 1234;
  if (i2i_cpu_backend.execute(NULL, E->cpu, M->m, plan, &rs)) {
    result(0, "%s op by op: CPU run failed: %s", M->name, i2i_ctx_errmsg(E->cpu));
    goto done;
  }
  for (int p = 0; p < nprec; p++) {
    E->ext->set_precision(E->self, precs[p]);
    double lim = precs[p] ? 1e-2 : 1e-4;
    for (int win = 1; win <= 3; win += 2) {
      int worst_k = -1, bad = 0, count = 0;
      double worst = 0;
      char first_bad[256] = "";
      for (int k = 0; k + win <= plan->n_steps; k++) {
        int last = k + win - 1, v = plan->steps[last].out;
        size_t n = shape_numel(plan->shape[v]);
        float *y = arena + plan->offset[v];
        memcpy(save, y, n * sizeof(float));
        for (size_t i = 0; i < n; i++) y[i] = NAN;
        i2i_status st = E->ext->run_steps(E->self, E->gpu, M->m, plan, &rs, k, k + win);
        double mx = INFINITY, mean = 0, rmax = 0;
        if (!st) stats(y, save, n, &mx, &mean, &rmax);
        double e = mx / (rmax > 1 ? rmax : 1);
        memcpy(y, save, n * sizeof(float));
        count++;
        if (!(e <= lim)) {
          if (!bad)
            snprintf(first_bad, sizeof first_bad, "step %d (%s '%s'): %s", last, op_name(plan->steps[last].op),
                     g->nodes[plan->steps[last].node].name, st ? i2i_ctx_errmsg(E->gpu) : "");
          bad++;
        }
        if (!(e <= worst)) {
          worst = e;
          worst_k = last;
        }
      }
      result(!bad, "%-22s %s op-by-op %4dx%-4d %-13s window %d: %d ranges, worst %.3g (<= %.0e) at step %d (%s)%s%s",
             M->name, precs[p] ? "fp16" : "fp32", pw, ph, M->unet ? mode_name(mode) : "-", win, count, worst, lim,
             worst_k, worst_k >= 0 ? op_name(plan->steps[worst_k].op) : "-", bad ? "; first failure: " : "", first_bad);
    }
  }
done:
  free(arena);
  free(scratch);
  free(save);
  plan_free(E->cpu, plan);
}

/* ---- fault injection ---------------------------------------------------------------------------- */

static int faults(const char *which) {
  setenv("I2I_CUDA_FAULT", which, 1);
  env_t E;
  memset(&E, 0, sizeof E);
  E.cpu = make_ctx(I2I_BACKEND_CPU);
  i2i_model *m = NULL;
  if (!E.cpu || test_build_resnet(E.cpu, 2, 8, 3, &m)) return 1;
  if (!open_gpu(&E)) return 77;
  if (strcmp(which, "oom-once")) { /* the checks below make their own contexts */
    i2i_ctx_free(E.gpu);
    E.gpu = NULL;
  }
  int w = 64, h = 48;
  size_t n = (size_t)w * h * 3;
  float *in = malloc(n * 4), *ref = malloc(n * 4), *out = malloc(n * 4);
  random_rgb(in, n);
  i2i_run_report rep;
  run_rgb(E.cpu, m, I2I_PIX2PIX_FAITHFUL, 0, w, h, in, ref, &rep);
  if (!strcmp(which, "oom-once")) {
    i2i_status st = run_rgb(E.gpu, m, I2I_PIX2PIX_FAITHFUL, 0, w, h, in, out, &rep);
    i2i_cuda_stats s;
    E.ext->get_stats(E.self, &s);
    double mx, mean, r;
    stats(out, ref, n, &mx, &mean, &r);
    result(!st && rep.backend == I2I_BACKEND_CUDA && s.oom_retries >= 1 && mx <= 3e-2,
           "fault oom-once: the retry after freeing the caches succeeds (%s, %llu retries, max %.3g)",
           st ? i2i_ctx_errmsg(E.gpu) : "ok", (unsigned long long)s.oom_retries, mx);
  } else {
    int sticky = !strcmp(which, "sticky");
    i2i_ctx *autoc = make_ctx(I2I_BACKEND_AUTO);
    for (int r = 0; r < 2; r++) {
      i2i_status st = run_rgb(autoc, m, I2I_PIX2PIX_FAITHFUL, 0, w, h, in, out, &rep);
      double mx, mean, rr;
      stats(out, ref, n, &mx, &mean, &rr);
      const char *want = sticky ? "illegal memory access" : "out of GPU memory";
      result(!st && rep.backend == I2I_BACKEND_CPU && mx == 0 && strstr(rep.message, want),
             "fault %s, AUTO run %d: falls back to the CPU with \"%s\" and equals the CPU (diff %g): \"%s\"", which,
             r + 1, want, mx, rep.message);
    }
    i2i_ctx_free(autoc);
    E.gpu = make_ctx(I2I_BACKEND_CUDA);
    i2i_status st = run_rgb(E.gpu, m, I2I_PIX2PIX_FAITHFUL, 0, w, h, in, out, &rep);
    result(st == (sticky ? I2I_E_DEVICE : I2I_E_DEVICE_NOMEM),
           "fault %s, forced CUDA: %s with a reason: \"%s\"", which, i2i_status_name(st), i2i_ctx_errmsg(E.gpu));
  }
  i2i_model_free(m);
  i2i_ctx_free(E.gpu);
  i2i_ctx_free(E.cpu);
  free(in);
  free(ref);
  free(out);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}

/* ---- main ----------------------------------------------------------------------------------------- */

static int parse_sizes(const char *s, int (*sz)[2], int max) {
  int n = 0;
  while (s && *s && n < max) {
    int w, h, used = 0;
    if (sscanf(s, "%dx%d%n", &w, &h, &used) != 2 || w < 1 || h < 1) break;
    sz[n][0] = w;
    sz[n][1] = h;
    n++;
    s += used;
    if (*s == ',') s++;
  }
  return n;
}

int main(int argc, char **argv) {
  const char *sizes_s = "256x256,67x45,1024x1024", *op_sizes_s = "256x256,67x45", *prec_s = "fp32,fp16";
  const char *models_s = "resnet,unet", *onnx[8];
  const char *layer_s = NULL;
  int n_onnx = 0, small = 0, expect_no_search = 0, expect_graphs = 0;
  uint64_t seed = (uint64_t)time(NULL);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--sizes") && v) sizes_s = argv[++i];
    else if (!strcmp(a, "--op-sizes") && v) op_sizes_s = argv[++i];
    else if (!strcmp(a, "--precisions") && v) prec_s = argv[++i];
    else if (!strcmp(a, "--models") && v) models_s = argv[++i];
    else if (!strcmp(a, "--onnx") && v && n_onnx < 8) onnx[n_onnx++] = argv[++i];
    else if (!strcmp(a, "--small")) small = 1;
    else if (!strcmp(a, "--seed") && v) seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--expect-no-search")) expect_no_search = 1;
    else if (!strcmp(a, "--expect-graphs")) expect_graphs = 1;
    else if (!strcmp(a, "--layerwise") && v) layer_s = argv[++i];
    else if (!strcmp(a, "--out") && v) out_file = fopen(argv[++i], "a");
    else if (!strcmp(a, "--fault") && v) {
      test_rng_seed(&rng, seed);
      return faults(argv[++i]);
    } else {
      fprintf(stderr,
              "usage: parity [--sizes WxH,...] [--op-sizes WxH,...|none] [--precisions fp32,fp16] [--models resnet,unet]\n"
              "              [--onnx FILE]... [--small] [--seed N] [--expect-no-search] [--expect-graphs]\n              [--out FILE]\n"
              "              [--layerwise WxH:MiB]  (fp32 only: layer by layer in a MiB device budget)\n"
              "       parity --fault oom|oom-once|sticky\n");
      return 2;
    }
  }
  test_rng_seed(&rng, seed);
  printf("parity: seed %llu\n", (unsigned long long)seed);
  env_t E;
  memset(&E, 0, sizeof E);
  E.cpu = make_ctx(I2I_BACKEND_CPU);
  if (!E.cpu || !open_gpu(&E)) {
    i2i_ctx_free(E.gpu);
    i2i_ctx_free(E.cpu);
    return 77;
  }
  i2i_cuda_stats s0;
  E.ext->get_stats(E.self, &s0);
  printf("device: %s (sm_%d%d, %d SMs), driver %d, runtime %d, cuDNN %zu; algorithm cache: %s\n", s0.device_name,
         s0.cc_major, s0.cc_minor, s0.sm_count, s0.driver_version, s0.runtime_version, s0.cudnn_version,
         s0.algo_cache_path[0] ? s0.algo_cache_path : "off");
  if (out_file)
    fprintf(out_file, "# parity on %s, driver %d, runtime %d, cuDNN %zu, seed %llu\n", s0.device_name, s0.driver_version,
            s0.runtime_version, s0.cudnn_version, (unsigned long long)seed);
  int sizes[8][2], op_sizes[8][2], precs[2], nprec = 0;
  int nsz = parse_sizes(sizes_s, sizes, 8), nop = strcmp(op_sizes_s, "none") ? parse_sizes(op_sizes_s, op_sizes, 8) : 0;
  if (strstr(prec_s, "fp32")) precs[nprec++] = I2I_CUDA_FP32;
  if (strstr(prec_s, "fp16")) precs[nprec++] = I2I_CUDA_FP16;
  model_t models[12];
  int nm = 0;
  if (strstr(models_s, "resnet")) {
    models[nm] = (model_t){small ? "resnet 2x8 (C)" : "resnet 9x64 (C)", NULL, 0};
    if (test_build_resnet(E.cpu, small ? 2 : 9, small ? 8 : 64, seed + 1, &models[nm].m) == I2I_OK) nm++;
  }
  if (strstr(models_s, "unet")) {
    models[nm] = (model_t){small ? "unet 8x8 (C)" : "unet 8x64 (C)", NULL, 1};
    if (test_build_unet(E.cpu, 8, small ? 8 : 64, seed + 2, &models[nm].m) == I2I_OK) nm++;
  }
  for (int i = 0; i < n_onnx && nm < 12; i++) {
    models[nm].name = strrchr(onnx[i], '/') ? strrchr(onnx[i], '/') + 1 : onnx[i];
    if (i2i_model_load_file(E.cpu, onnx[i], &models[nm].m)) {
      result(0, "loading %s: %s", onnx[i], i2i_ctx_errmsg(E.cpu));
      continue;
    }
    models[nm].unet = models[nm].m->info.family == I2I_FAMILY_UNET;
    nm++;
  }
  for (int k = 0; k < nm; k++) {
    const model_t *M = &models[k];
    i2i_pix2pix_mode modes[3] = {I2I_PIX2PIX_FAITHFUL, I2I_PIX2PIX_DETERMINISTIC, I2I_PIX2PIX_EVAL};
    int nmodes = M->unet ? 3 : 1;
    for (int md = 0; md < nmodes; md++) {
      for (int s = 0; s < nop; s++) op_by_op(&E, M, modes[md], op_sizes[s][0], op_sizes[s][1], nprec, precs);
      for (int s = 0; s < nsz; s++) e2e(&E, M, modes[md], sizes[s][0], sizes[s][1], nprec, precs);
    }
    if (layer_s) {
      int lw = 0, lh = 0;
      unsigned long long mib = 0;
      if (sscanf(layer_s, "%dx%d:%llu", &lw, &lh, &mib) == 3 && lw > 0 && lh > 0 && mib > 0)
        layerwise_check(&E, M, M->unet ? I2I_PIX2PIX_FAITHFUL : I2I_PIX2PIX_DETERMINISTIC, lw, lh, (uint64_t)mib << 20);
      else
        result(0, "--layerwise %s: expected WxH:MiB", layer_s);
      continue;
    }
    image_path(&E, M, 67, 45, nprec, precs);
  }
  i2i_cuda_stats st;
  E.ext->get_stats(E.self, &st);
  printf("cuda: %llu algorithm searches, %llu from the cache, %llu device plans, peak %.1f MiB of device memory\n",
         (unsigned long long)st.algo_searches, (unsigned long long)st.algo_cache_hits,
         (unsigned long long)st.plans_built, st.peak_device_bytes / 1048576.0);
  if (expect_graphs)
    result(st.graphs_captured > 0 && st.graph_failures == 0, "the runs replayed CUDA graphs: %llu captured, %llu failed",
           (unsigned long long)st.graphs_captured, (unsigned long long)st.graph_failures);
  if (expect_no_search)
    result(st.algo_searches == 0, "a second process does no algorithm search (%llu searches, %llu from %s)",
           (unsigned long long)st.algo_searches, (unsigned long long)st.algo_cache_hits, st.algo_cache_path);
  for (int k = 0; k < nm; k++) i2i_model_free(models[k].m);
  i2i_ctx_free(E.gpu);
  i2i_ctx_free(E.cpu);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  if (out_file) {
    fprintf(out_file, "%d passed, %d failed\n", n_pass, n_fail);
    fclose(out_file);
  }
  return n_fail ? 1 : 0;
}
