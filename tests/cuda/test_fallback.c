/* tests/cuda/test_fallback.c: the engine's CUDA fallback paths through i2i_run, without a GPU.
 * `lib FAKE REAL|- DIR`: module missing, not a module, refusing to open, device out of memory,
 * sticky error (fake module) and the real module: AUTO ends on the CPU with the reason and the
 * CPU's result, forced CUDA fails with it. `fixtures DIR` and `compare A B TOL` serve
 * fallback.sh. Ends with "N passed, N failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "i2i.h"
#include "models.h"

static int n_pass, n_fail;

static void check(int ok, const char *what, const char *detail) {
  if (ok) n_pass++;
  else n_fail++;
  printf("%s: %s%s%s\n", ok ? "PASS" : "FAIL", what, detail && *detail ? " -- " : "", detail ? detail : "");
}

typedef struct {
  const char *name;
  i2i_model *model;
  int w, h, n;
  i2i_pixel_layout layout;
  float strength;
  float **in, **ref;
  size_t floats;
} tcase;

static float **alloc_images(int n, size_t floats) {
  float **v = calloc((size_t)n, sizeof *v);
  for (int i = 0; v && i < n; i++) v[i] = malloc(floats * sizeof(float));
  return v;
}

static void free_images(float **v, int n) {
  for (int i = 0; v && i < n; i++) free(v[i]);
  free(v);
}

static i2i_ctx *make_ctx(i2i_backend be) {
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.backend = be;
  i2i_ctx *ctx = NULL;
  return i2i_ctx_create(&p, &ctx) ? NULL : ctx;
}

static i2i_status run_case(i2i_ctx *ctx, const tcase *t, float **out, i2i_run_report *rep) {
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.layout = t->layout;
  rp.strength = t->strength;
  rp.pix2pix_mode = I2I_PIX2PIX_FAITHFUL;
  rp.seed = 7;
  for (int i = 0; i < t->n; i++)
    for (size_t k = 0; k < t->floats; k++) out[i][k] = NAN; /* poisoned */
  return i2i_run(ctx, t->model, &rp, t->n, t->w, t->h, (const float *const *)t->in, out, rep);
}

static double max_diff(const tcase *t, float **a, float **b) {
  double m = 0;
  for (int i = 0; i < t->n; i++)
    for (size_t k = 0; k < t->floats; k++) {
      double d = fabs((double)a[i][k] - (double)b[i][k]);
      if (!(d <= m)) m = d; /* NaN wins */
    }
  return m;
}

static void set_env(const char *module, const char *fake) {
  if (module) setenv("I2I_CUDA_MODULE", module, 1);
  else unsetenv("I2I_CUDA_MODULE");
  if (fake) setenv("I2I_FAKE_CUDA", fake, 1);
  else unsetenv("I2I_FAKE_CUDA");
}

/* AUTO must finish on the CPU, say `why` in the report and equal the CPU result; forced CUDA
 * must fail with `forced_st` and `why` in the message. */
static void expect_fallback(const tcase *t, const char *label, const char *module, const char *fake, const char *why,
                            i2i_status forced_st, int runs) {
  char what[256], detail[1024];
  float **out = alloc_images(t->n, t->floats);
  set_env(module, fake);
  i2i_ctx *ctx = make_ctx(I2I_BACKEND_AUTO);
  for (int r = 0; r < runs; r++) {
    i2i_run_report rep;
    memset(&rep, 0, sizeof rep);
    i2i_status st = run_case(ctx, t, out, &rep);
    double d = st ? -1 : max_diff(t, out, t->ref);
    snprintf(what, sizeof what, "%s: %s, AUTO run %d falls back to the CPU", t->name, label, r + 1);
    snprintf(detail, sizeof detail, "status %s, backend %s, diff %g, message \"%s\"%s%s", i2i_status_name(st),
             rep.backend == I2I_BACKEND_CUDA ? "cuda" : "cpu", d, rep.message, st ? ", error: " : "",
             st ? i2i_ctx_errmsg(ctx) : "");
    check(st == I2I_OK && rep.backend == I2I_BACKEND_CPU && d == 0.0 && strstr(rep.message, why) != NULL, what, detail);
  }
  i2i_ctx_free(ctx);
  ctx = make_ctx(I2I_BACKEND_CUDA);
  i2i_run_report rep;
  i2i_status st = run_case(ctx, t, out, &rep);
  snprintf(what, sizeof what, "%s: %s, forced CUDA fails with the reason", t->name, label);
  snprintf(detail, sizeof detail, "status %s (want %s), message \"%s\"", i2i_status_name(st), i2i_status_name(forced_st),
           i2i_ctx_errmsg(ctx));
  check(st == forced_st && strstr(i2i_ctx_errmsg(ctx), why) != NULL, what, detail);
  i2i_ctx_free(ctx);
  free_images(out, t->n);
  set_env(NULL, NULL);
}

static void real_module(const tcase *t, const char *module) {
  char detail[1024], what[256];
  float **out = alloc_images(t->n, t->floats);
  set_env(module, NULL);
  i2i_ctx *ctx = make_ctx(I2I_BACKEND_AUTO);
  i2i_run_report rep;
  memset(&rep, 0, sizeof rep);
  i2i_status st = run_case(ctx, t, out, &rep);
  double d = st ? -1 : max_diff(t, out, t->ref);
  int on_gpu = st == I2I_OK && rep.backend == I2I_BACKEND_CUDA;
  snprintf(what, sizeof what, "%s: real CUDA module, AUTO %s", t->name,
           on_gpu ? "runs on the GPU within fp16 tolerance" : "falls back to the CPU with a reason");
  snprintf(detail, sizeof detail, "status %s, diff %g, message \"%s\"", i2i_status_name(st), d, rep.message);
  if (on_gpu)
    check(d <= 3e-2, what, detail);
  else
    check(st == I2I_OK && d == 0.0 && strstr(rep.message, "no usable NVIDIA GPU") != NULL, what, detail);
  i2i_ctx_free(ctx);
  if (!on_gpu) {
    ctx = make_ctx(I2I_BACKEND_CUDA);
    st = run_case(ctx, t, out, &rep);
    snprintf(what, sizeof what, "%s: real CUDA module, forced CUDA fails with the reason", t->name);
    snprintf(detail, sizeof detail, "status %s, message \"%s\"", i2i_status_name(st), i2i_ctx_errmsg(ctx));
    check(st == I2I_E_DEVICE && strstr(i2i_ctx_errmsg(ctx), "cannot run") != NULL, what, detail);
    i2i_ctx_free(ctx);
  }
  free_images(out, t->n);
  set_env(NULL, NULL);
}

static int make_case(i2i_ctx *ctx, tcase *t, const char *name, int unet, int w, int h, int n, i2i_pixel_layout layout,
                     float strength) {
  memset(t, 0, sizeof *t);
  t->name = name;
  i2i_status st = unet ? test_build_unet(ctx, 3, 4, 11, &t->model) : test_build_resnet(ctx, 1, 4, 5, &t->model);
  if (st) {
    printf("cannot build %s: %s\n", name, i2i_ctx_errmsg(ctx));
    return -1;
  }
  t->w = w;
  t->h = h;
  t->n = n;
  t->layout = layout;
  t->strength = strength;
  int ch = layout == I2I_PIXELS_RGBA ? 4 : 3;
  t->floats = (size_t)w * (size_t)h * (size_t)ch;
  t->in = alloc_images(n, t->floats);
  t->ref = alloc_images(n, t->floats);
  test_rng r;
  test_rng_seed(&r, 99);
  for (int i = 0; i < n; i++)
    for (size_t k = 0; k < t->floats; k++) {
      double u = test_rng_uniform(&r);
      t->in[i][k] = (float)(layout == I2I_PIXELS_RGBA ? u : 2 * u - 1);
    }
  set_env(NULL, NULL);
  i2i_ctx *cpu = make_ctx(I2I_BACKEND_CPU);
  i2i_run_report rep;
  st = run_case(cpu, t, t->ref, &rep);
  if (st) printf("CPU reference of %s failed: %s\n", name, i2i_ctx_errmsg(cpu));
  i2i_ctx_free(cpu);
  return st ? -1 : 0;
}

static void free_case(tcase *t) {
  i2i_model_free(t->model);
  free_images(t->in, t->n);
  free_images(t->ref, t->n);
}

static int cmd_lib(const char *fake, const char *real, const char *workdir) {
  unsetenv("I2I_BACKEND");
  i2i_ctx *ctx = make_ctx(I2I_BACKEND_CPU);
  tcase cases[2];
  if (make_case(ctx, &cases[0], "resnet 1 block, 37x29 RGBA, 2 images", 0, 37, 29, 2, I2I_PIXELS_RGBA, 0.75f) ||
      make_case(ctx, &cases[1], "unet depth 3, 20x13 RGB, faithful", 1, 20, 13, 1, I2I_PIXELS_RGB_SIGNED, 1.0f)) {
    check(0, "building the test models", i2i_ctx_errmsg(ctx));
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return 1;
  }
  char notmod[1024];
  mkdir(workdir, 0755); /* each test gets its own folder: tests run in parallel */
  snprintf(notmod, sizeof notmod, "%s/not-a-module.so", workdir);
  FILE *f = fopen(notmod, "w");
  if (f) {
    fputs("this is not a shared object\n", f);
    fclose(f);
  }
  for (int c = 0; c < 2; c++) {
    const tcase *t = &cases[c];
    expect_fallback(t, "module missing", "/nonexistent/libi2i-cuda.so", NULL, "not installed", I2I_E_DEVICE, 1);
    expect_fallback(t, "file is not a module", notmod, NULL, "cannot load", I2I_E_DEVICE, 1);
    expect_fallback(t, "module refuses to open", fake, "open-fail", "fake: no CUDA device", I2I_E_DEVICE, 1);
    expect_fallback(t, "device out of memory", fake, "oom", "out of GPU memory", I2I_E_DEVICE_NOMEM, 2);
    expect_fallback(t, "sticky error", fake, "sticky", "illegal memory access", I2I_E_DEVICE, 2);
    /* I2I_BACKEND=cpu never touches the module */
    set_env(fake, "oom");
    setenv("I2I_BACKEND", "cpu", 1);
    i2i_ctx *cpu = make_ctx(I2I_BACKEND_AUTO);
    float **out = alloc_images(t->n, t->floats);
    i2i_run_report rep;
    i2i_status st = run_case(cpu, t, out, &rep);
    char what[256], detail[1024];
    snprintf(what, sizeof what, "%s: I2I_BACKEND=cpu runs on the CPU without a message", t->name);
    snprintf(detail, sizeof detail, "status %s, message \"%s\"", i2i_status_name(st), rep.message);
    check(st == I2I_OK && rep.backend == I2I_BACKEND_CPU && !rep.message[0] && max_diff(t, out, t->ref) == 0.0, what,
          detail);
    free_images(out, t->n);
    i2i_ctx_free(cpu);
    unsetenv("I2I_BACKEND");
    set_env(NULL, NULL);
    if (real && strcmp(real, "-")) real_module(t, real);
  }
  remove(notmod);
  for (int c = 0; c < 2; c++) free_case(&cases[c]);
  i2i_ctx_free(ctx);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}

/* ---- fixtures and .npy comparison for fallback.sh ------------------------------------------------ */

static int write_npy(const char *path, const float *data, int h, int w, int c) {
  char hdr[128];
  int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d, %d), }", h, w, c);
  int total = 10 + n + 1;
  int pad = (64 - total % 64) % 64;
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  unsigned short hl = (unsigned short)(n + pad + 1);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc(hl & 0xff, f);
  fputc(hl >> 8, f);
  fwrite(hdr, 1, (size_t)n, f);
  for (int i = 0; i < pad; i++) fputc(' ', f);
  fputc('\n', f);
  size_t cnt = (size_t)h * (size_t)w * (size_t)c;
  int ok = fwrite(data, sizeof(float), cnt, f) == cnt;
  return fclose(f) == 0 && ok ? 0 : -1;
}

static float *read_npy(const char *path, size_t *count) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned char m[10];
  float *data = NULL;
  if (fread(m, 1, 10, f) == 10 && !memcmp(m, "\x93NUMPY", 6)) {
    size_t hl = m[6] == 1 ? (size_t)(m[8] | (m[9] << 8)) : 0;
    if (m[6] == 2 || m[6] == 3) {
      unsigned char e[2];
      if (fread(e, 1, 2, f) == 2) hl = (size_t)(m[8] | (m[9] << 8) | (e[0] << 16) | (e[1] << 24));
    }
    char *hdr = hl && hl < 65536 ? malloc(hl + 1) : NULL;
    if (hdr && fread(hdr, 1, hl, f) == hl) {
      hdr[hl] = 0;
      char *sh = strstr(hdr, "'shape': (");
      if (strstr(hdr, "'<f4'") && sh) {
        size_t cnt = 1;
        char *p = sh + 10;
        while (*p && *p != ')') {
          long v = strtol(p, &p, 10);
          if (v > 0) cnt *= (size_t)v;
          while (*p == ',' || *p == ' ') p++;
        }
        data = malloc(cnt * sizeof(float) + 1);
        if (data && fread(data, sizeof(float), cnt, f) != cnt) {
          free(data);
          data = NULL;
        }
        *count = cnt;
      }
    }
    free(hdr);
  }
  fclose(f);
  return data;
}

static int cmd_fixtures(const char *dir) {
  i2i_ctx *ctx = make_ctx(I2I_BACKEND_CPU);
  i2i_model *m = NULL;
  char path[1024];
  if (!ctx || test_build_resnet(ctx, 1, 4, 5, &m)) {
    fprintf(stderr, "cannot build the model: %s\n", ctx ? i2i_ctx_errmsg(ctx) : "no context");
    return 1;
  }
  snprintf(path, sizeof path, "%s/tiny.onnx", dir);
  if (i2i_model_save(ctx, m, path)) {
    fprintf(stderr, "cannot save %s: %s\n", path, i2i_ctx_errmsg(ctx));
    return 1;
  }
  int h = 23, w = 31;
  float *img = malloc(sizeof(float) * (size_t)(h * w * 3));
  test_rng r;
  test_rng_seed(&r, 3);
  for (int i = 0; i < h * w * 3; i++) img[i] = (float)(2 * test_rng_uniform(&r) - 1);
  snprintf(path, sizeof path, "%s/in.npy", dir);
  int rc = write_npy(path, img, h, w, 3);
  free(img);
  i2i_model_free(m);
  i2i_ctx_free(ctx);
  return rc ? 1 : 0;
}

static int cmd_compare(const char *a, const char *b, double tol) {
  size_t na = 0, nb = 0;
  float *x = read_npy(a, &na), *y = read_npy(b, &nb);
  int rc = 1;
  if (!x || !y || na != nb || !na) {
    fprintf(stderr, "compare: cannot read %s or %s, or they differ in size\n", a, b);
  } else {
    double m = 0;
    for (size_t i = 0; i < na; i++) {
      double d = fabs((double)x[i] - (double)y[i]);
      if (!(d <= m)) m = d;
    }
    printf("max abs difference %g over %zu values\n", m, na);
    rc = m <= tol ? 0 : 1;
  }
  free(x);
  free(y);
  return rc;
}

int main(int argc, char **argv) {
  if (argc >= 5 && !strcmp(argv[1], "lib")) return cmd_lib(argv[2], argv[3], argv[4]);
  if (argc == 3 && !strcmp(argv[1], "fixtures")) return cmd_fixtures(argv[2]);
  if (argc == 5 && !strcmp(argv[1], "compare")) return cmd_compare(argv[2], argv[3], atof(argv[4]));
  fprintf(stderr,
          "usage: test_fallback lib FAKE_MODULE REAL_MODULE|- WORKDIR\n"
          "       test_fallback fixtures DIR\n"
          "       test_fallback compare A.npy B.npy TOLERANCE\n");
  return 2;
}
