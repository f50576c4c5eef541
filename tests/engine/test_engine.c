/* test_engine.c: the engine's foundation tests through the public API (engine/include/i2i.h).
 *
 * Graph builder round trip (build, save, load, save again, run both, python3-onnx's full
 * checker), broken and hostile ONNX files (made by make_bad_onnx.py) each refused with a
 * message naming the problem, truncation at 16 offsets, odd image sizes, strength and alpha,
 * a context's kept working memory (runs equal a fresh context's), API misuse, and an allocation-failure sweep through the allocator hook (no leak, context
 * still usable). Usage: test_engine MAKE_BAD_ONNX_PY WORK_DIR. Ends with "N passed, N failed".
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/check.h"
#include "../common/files.h"
#include "i2i.h"

static const char *work_dir;

static const char *wpath(const char *name) {
  static char buf[8][1024];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", work_dir, name);
  return buf[k];
}

/* ---- counting allocator with failure injection --------------------------------------------- */

static long alloc_live, alloc_count, alloc_fail_at;

static void *count_alloc(void *user, size_t size) {
  (void)user;
  alloc_count++;
  if (alloc_fail_at && alloc_count == alloc_fail_at) return NULL;
  void *p = malloc(size);
  if (p) alloc_live++;
  return p;
}

static void count_free(void *user, void *p) {
  (void)user;
  if (p) alloc_live--;
  free(p);
}

/* ---- a small ResNet-like model made with the builder -------------------------------------- */

static float frand(unsigned *s) {
  *s = *s * 1664525u + 1013904223u;
  return ((*s >> 8) / 16777216.0f - 0.5f) * 0.4f;
}

static void add_w(i2i_builder *b, const char *name, int rank, const int64_t *d, unsigned *seed) {
  size_t n = 1;
  for (int i = 0; i < rank; i++) n *= (size_t)d[i];
  float *w = malloc(n * sizeof *w);
  for (size_t i = 0; i < n; i++) w[i] = frand(seed);
  i2i_builder_add_initializer(b, name, 1, rank, d, w);
  free(w);
}

static void conv_node(i2i_builder *b, const char *name, const char *in, const char *out, int cin, int cout, int k,
                      int s, int p, bool transpose, unsigned *seed) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.weight", name);
  snprintf(bn, sizeof bn, "%s.bias", name);
  int64_t wd[4] = {transpose ? cin : cout, transpose ? cout : cin, k, k}, bd[1] = {cout};
  add_w(b, wn, 4, wd, seed);
  add_w(b, bn, 1, bd, seed);
  int64_t ks[2] = {k, k}, st[2] = {s, s}, pd[4] = {p, p, p, p}, op[2] = {1, 1};
  i2i_attr a[4] = {{.name = "kernel_shape", .type = I2I_ATTR_INTS, .ints = ks, .n_ints = 2},
                   {.name = "strides", .type = I2I_ATTR_INTS, .ints = st, .n_ints = 2},
                   {.name = "pads", .type = I2I_ATTR_INTS, .ints = pd, .n_ints = 4},
                   {.name = "output_padding", .type = I2I_ATTR_INTS, .ints = op, .n_ints = 2}};
  const char *ins[3] = {in, wn, bn}, *outs[1] = {out};
  i2i_builder_add_node(b, transpose ? "ConvTranspose" : "Conv", name, 3, ins, 1, outs, transpose ? 4 : 3, a);
}

static void unary(i2i_builder *b, const char *op, const char *name, const char *in, const char *out) {
  const char *ins[1] = {in}, *outs[1] = {out};
  i2i_builder_add_node(b, op, name, 1, ins, 1, outs, 0, NULL);
}

static void norm(i2i_builder *b, const char *name, const char *in, const char *out, int c) {
  char sn[64], bn[64];
  snprintf(sn, sizeof sn, "%s.scale", name);
  snprintf(bn, sizeof bn, "%s.B", name);
  float *ones = malloc(sizeof(float) * (size_t)c), *zeros = calloc((size_t)c, sizeof(float));
  for (int i = 0; i < c; i++) ones[i] = 1.0f;
  int64_t d[1] = {c};
  i2i_builder_add_initializer(b, sn, 1, 1, d, ones);
  i2i_builder_add_initializer(b, bn, 1, 1, d, zeros);
  free(ones);
  free(zeros);
  const char *ins[3] = {in, sn, bn}, *outs[1] = {out};
  i2i_builder_add_node(b, "InstanceNormalization", name, 3, ins, 1, outs, 0, NULL);
}

static void pad(i2i_builder *b, const char *name, const char *in, const char *out, int p) {
  char pn[64];
  snprintf(pn, sizeof pn, "%s.pads", name);
  int64_t pads[8] = {0, 0, p, p, 0, 0, p, p}, d[1] = {8};
  i2i_builder_add_initializer(b, pn, 7, 1, d, pads);
  i2i_attr a = {.name = "mode", .type = I2I_ATTR_STRING, .s = "reflect"};
  const char *ins[2] = {in, pn}, *outs[1] = {out};
  i2i_builder_add_node(b, "Pad", name, 2, ins, 1, outs, 1, &a);
}

static i2i_status build_small(i2i_ctx *ctx, i2i_model **m) {
  i2i_builder *b;
  i2i_status st = i2i_builder_new(ctx, &b);
  if (st) return st;
  unsigned seed = 7;
  i2i_builder_add_input(b, "input", 3);
  pad(b, "p0", "input", "p0", 3);
  conv_node(b, "c0", "p0", "c0", 3, 4, 7, 1, 0, false, &seed);
  norm(b, "n0", "c0", "n0", 4);
  unary(b, "Relu", "r0", "n0", "r0");
  conv_node(b, "c1", "r0", "c1", 4, 8, 3, 2, 1, false, &seed);
  norm(b, "n1", "c1", "n1", 8);
  unary(b, "Relu", "r1", "n1", "r1");
  pad(b, "p2", "r1", "p2", 1);
  conv_node(b, "c2", "p2", "c2", 8, 8, 3, 1, 0, false, &seed);
  norm(b, "n2", "c2", "n2", 8);
  const char *ai[2] = {"r1", "n2"}, *ao[1] = {"a2"};
  i2i_builder_add_node(b, "Add", "add2", 2, ai, 1, ao, 0, NULL);
  conv_node(b, "t3", "a2", "t3", 8, 4, 3, 2, 1, true, &seed);
  norm(b, "n3", "t3", "n3", 4);
  unary(b, "Relu", "r3", "n3", "r3");
  pad(b, "p4", "r3", "p4", 3);
  conv_node(b, "c4", "p4", "c4", 4, 3, 7, 1, 0, false, &seed);
  unary(b, "Tanh", "tanh", "c4", "output");
  i2i_builder_add_output(b, "output", 3);
  i2i_builder_set_meta(b, "i2i.family", "resnet");
  i2i_builder_set_meta(b, "i2i.task", "test-small");
  return i2i_builder_finish(b, m);
}

static float *make_image(int w, int h, int ch, unsigned seed) {
  float *p = malloc(sizeof(float) * (size_t)w * (size_t)h * (size_t)ch);
  for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
    for (int c = 0; c < ch; c++) {
      float x = (float)(i % (size_t)w) / (float)w, y = (float)(i / (size_t)w) / (float)h;
      float v = 0.5f + 0.3f * sinf(7 * x + 3 * c) * cosf(5 * y) + frand(&seed) * 0.2f;
      p[i * (size_t)ch + (size_t)c] = c == 3 ? (float)(i % 7) / 6.0f : v;
    }
  return p;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static i2i_ctx *ctx;

static void test_builder_round_trip(void) {
  i2i_model *m = NULL, *m2 = NULL;
  i2i_status st = build_small(ctx, &m);
  CHECK(st == I2I_OK, "build: %s", i2i_ctx_errmsg(ctx));
  if (st) return;
  i2i_model_info in;
  i2i_model_get_info(m, &in);
  CHECK(in.family == I2I_FAMILY_RESNET && in.in_channels == 3 && in.out_channels == 3, "info");
  CHECK(in.size_multiple == 2, "size multiple %d (one stride-2 conv)", in.size_multiple);
  CHECK(!strcmp(i2i_model_meta(m, "i2i.task"), "test-small"), "metadata");
  CHECK(i2i_model_save(ctx, m, wpath("small.onnx")) == I2I_OK, "save: %s", i2i_ctx_errmsg(ctx));
  st = i2i_model_load_file(ctx, wpath("small.onnx"), &m2);
  CHECK(st == I2I_OK, "reload: %s", i2i_ctx_errmsg(ctx));
  if (st) {
    i2i_model_free(m);
    return;
  }
  CHECK(i2i_model_save(ctx, m2, wpath("small2.onnx")) == I2I_OK, "save again");
  size_t n1, n2;
  unsigned char *b1 = read_all(wpath("small.onnx"), &n1), *b2 = read_all(wpath("small2.onnx"), &n2);
  CHECK(b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1), "saving a reloaded model gives the same bytes (%zu vs %zu)", n1, n2);
  free(b1);
  free(b2);
  /* the same output from both */
  int w = 37, h = 29;
  float *img = make_image(w, h, 4, 1), *o1 = malloc(sizeof(float) * (size_t)w * h * 4), *o2 = malloc(sizeof(float) * (size_t)w * h * 4);
  const float *ins[1] = {img};
  float *outs1[1] = {o1}, *outs2[1] = {o2};
  CHECK(i2i_run(ctx, m, NULL, 1, w, h, ins, outs1, NULL) == I2I_OK, "run 1: %s", i2i_ctx_errmsg(ctx));
  CHECK(i2i_run(ctx, m2, NULL, 1, w, h, ins, outs2, NULL) == I2I_OK, "run 2: %s", i2i_ctx_errmsg(ctx));
  CHECK(!memcmp(o1, o2, sizeof(float) * (size_t)w * h * 4), "reloaded model gives identical output");
  free(img);
  free(o1);
  free(o2);
  /* the full ONNX checker of Debian's python3-onnx */
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "/usr/bin/python3 -c \"import onnx,sys; m=onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True); "
           "assert m.opset_import[0].version == 17 and m.ir_version == 8\" %s",
           wpath("small.onnx"));
  CHECK(system(cmd) == 0, "onnx.checker full check of the builder's file");
  i2i_model_free(m);
  i2i_model_free(m2);
}

static void expect_fail(const char *file, i2i_status want, const char *substr) {
  i2i_model *m = NULL;
  i2i_status st = i2i_model_load_file(ctx, file, &m);
  const char *msg = i2i_ctx_errmsg(ctx);
  printf("    %s -> %s: %s\n", strrchr(file, '/') ? strrchr(file, '/') + 1 : file, i2i_status_name(st), msg);
  CHECK(st == want, "%s: status %s, want %s", file, i2i_status_name(st), i2i_status_name(want));
  CHECK(!m, "no model on failure");
  CHECK(strstr(msg, substr) != NULL, "message '%s' names '%s'", msg, substr);
  i2i_model_free(m);
}

static void test_bad_files(void) {
  FILE *f = fopen(wpath("empty.onnx"), "wb");
  fclose(f);
  expect_fail(wpath("empty.onnx"), I2I_E_FORMAT, "empty");
  expect_fail(work_dir, I2I_E_IO, "directory");
  expect_fail(wpath("does-not-exist.onnx"), I2I_E_IO, "cannot open");
  expect_fail(wpath("bad/unknown_op.onnx"), I2I_E_UNSUPPORTED, "'mystery' (Softsign)");
  expect_fail(wpath("bad/bad_attr.onnx"), I2I_E_UNSUPPORTED, "auto_pad 'SAME_UPPER'");
  expect_fail(wpath("bad/external.onnx"), I2I_E_UNSUPPORTED, "external");
  expect_fail(wpath("bad/cycle.onnx"), I2I_E_FORMAT, "cycle");
  expect_fail(wpath("bad/undefined.onnx"), I2I_E_FORMAT, "'nowhere' is not defined");
  expect_fail(wpath("bad/huge_tensor.onnx"), I2I_E_FORMAT, "holds 64 bytes");
  expect_fail(wpath("bad/deep_graph.onnx"), I2I_E_UNSUPPORTED, "subgraph");
  expect_fail(wpath("bad/deep_type.onnx"), I2I_E_LIMIT, "nested deeper");
  /* extreme Slice steps in a constant subgraph fold without overflow (a fuzz_onnx find) */
  i2i_model *sm = NULL;
  i2i_status sst = i2i_model_load_file(ctx, wpath("bad/slice_steps.onnx"), &sm);
  CHECK(sst == I2I_OK && sm, "slice_steps.onnx (steps INT64_MIN / INT64_MAX) loads: %s %s", i2i_status_name(sst),
        i2i_ctx_errmsg(ctx));
  i2i_model_free(sm);
  /* not ONNX at all */
  f = fopen(wpath("text.onnx"), "wb");
  fputs("this is not a model\n", f);
  fclose(f);
  i2i_model *m = NULL;
  i2i_status st = i2i_model_load_file(ctx, wpath("text.onnx"), &m);
  CHECK(st == I2I_E_FORMAT && !m, "text file: %s %s", i2i_status_name(st), i2i_ctx_errmsg(ctx));
}

/* The loader's limits: a file past each is refused with I2I_E_LIMIT and the figure. */
static void test_limits(void) {
  struct {
    const char *what, *needle;
    uint64_t bytes;
    uint32_t nodes, tensors;
  } cases[] = {{"file size", "over the limit", 1000, 0, 0},
               {"node count", "nodes, over the limit of 5", 0, 5, 0},
               {"tensor count", "(initializers and constants), over the limit of 4", 0, 0, 4}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    i2i_ctx_params p;
    i2i_ctx_default_params(&p);
    p.backend = I2I_BACKEND_CPU;
    if (cases[i].bytes) p.limits.max_model_bytes = cases[i].bytes;
    if (cases[i].nodes) p.limits.max_nodes = cases[i].nodes;
    if (cases[i].tensors) p.limits.max_tensors = cases[i].tensors;
    i2i_ctx *c = NULL;
    CHECK(i2i_ctx_create(&p, &c) == I2I_OK, "context with a lowered limit");
    if (!c) continue;
    i2i_model *m = NULL;
    i2i_status st = i2i_model_load_file(c, wpath("small.onnx"), &m);
    CHECK(st == I2I_E_LIMIT && !m && strstr(i2i_ctx_errmsg(c), cases[i].needle), "%s limit: %s %s", cases[i].what,
          i2i_status_name(st), i2i_ctx_errmsg(c));
    i2i_model_free(m);
    i2i_ctx_free(c);
  }
  /* at the defaults the same file loads */
  i2i_model *m = NULL;
  CHECK(i2i_model_load_file(ctx, wpath("small.onnx"), &m) == I2I_OK, "small.onnx loads at the default limits: %s",
        i2i_ctx_errmsg(ctx));
  i2i_model_free(m);
}

static void test_truncation(void) {
  const char *files[2] = {wpath("bad/good.onnx"), wpath("small.onnx")};
  for (int fi = 0; fi < 2; fi++) {
    size_t n;
    unsigned char *b = read_all(files[fi], &n);
    CHECK(b && n > 64, "read %s", files[fi]);
    if (!b) continue;
    i2i_model *m = NULL;
    CHECK(i2i_model_load_memory(ctx, b, n, &m) == I2I_OK, "the whole file loads: %s", i2i_ctx_errmsg(ctx));
    i2i_model_free(m);
    for (int k = 0; k < 16; k++) {
      size_t cut = (size_t)((double)n * k / 16.0) + (size_t)k;
      if (cut >= n) cut = n - 1;
      m = NULL;
      i2i_status st = i2i_model_load_memory(ctx, b, cut, &m);
      CHECK(st != I2I_OK && !m, "%s truncated at %zu of %zu loads (%s)", files[fi], cut, n, i2i_status_name(st));
      CHECK(i2i_ctx_errmsg(ctx)[0], "a message for the truncation at %zu", cut);
      i2i_model_free(m);
    }
    free(b);
  }
}

static void test_sizes_alpha_strength(void) {
  i2i_model *m = NULL;
  if (build_small(ctx, &m)) {
    CHECK(0, "build");
    return;
  }
  int sizes[][2] = {{1, 1}, {2, 3}, {3, 2}, {5, 1000}, {1000, 5}, {67, 45}, {7, 1}, {64, 64}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    int w = sizes[i][0], h = sizes[i][1];
    float *img = make_image(w, h, 4, (unsigned)i), *out = malloc(sizeof(float) * (size_t)w * h * 4);
    const float *ins[1] = {img};
    float *outs[1] = {out};
    i2i_run_report rep;
    i2i_status st = i2i_run(ctx, m, NULL, 1, w, h, ins, outs, &rep);
    CHECK(st == I2I_OK, "%dx%d: %s", w, h, i2i_ctx_errmsg(ctx));
    bool alpha_ok = true, range_ok = true;
    for (size_t p = 0; p < (size_t)w * h; p++) {
      alpha_ok &= out[p * 4 + 3] == img[p * 4 + 3];
      for (int c = 0; c < 3; c++) range_ok &= out[p * 4 + c] >= 0 && out[p * 4 + c] <= 1;
    }
    CHECK(alpha_ok, "%dx%d: alpha untouched", w, h);
    CHECK(range_ok, "%dx%d: output in [0,1]", w, h);
    CHECK(rep.run_width >= w && rep.run_height >= h && rep.run_width % 2 == 0, "%dx%d ran at %dx%d", w, h, rep.run_width, rep.run_height);
    free(img);
    free(out);
  }
  /* strength 0 is the identity; in place equals out of place; a batch equals single runs */
  int w = 33, h = 21;
  size_t n = (size_t)w * h * 4;
  float *img = make_image(w, h, 4, 3), *o = malloc(n * 4), *inplace = malloc(n * 4), *img2 = make_image(w, h, 4, 9);
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.strength = 0;
  const float *ins[1] = {img};
  float *outs[1] = {o};
  CHECK(i2i_run(ctx, m, &rp, 1, w, h, ins, outs, NULL) == I2I_OK, "strength 0");
  CHECK(!memcmp(o, img, n * 4), "strength 0 leaves the image unchanged");
  rp.strength = 1;
  CHECK(i2i_run(ctx, m, &rp, 1, w, h, ins, outs, NULL) == I2I_OK, "strength 1");
  memcpy(inplace, img, n * 4);
  const float *ins2[1] = {inplace};
  float *outs2[1] = {inplace};
  CHECK(i2i_run(ctx, m, &rp, 1, w, h, ins2, outs2, NULL) == I2I_OK, "in place");
  CHECK(!memcmp(o, inplace, n * 4), "in place equals out of place");
  float *b0 = malloc(n * 4), *b1 = malloc(n * 4), *s1 = malloc(n * 4);
  const float *bi[2] = {img, img2};
  float *bo[2] = {b0, b1};
  CHECK(i2i_run(ctx, m, &rp, 2, w, h, bi, bo, NULL) == I2I_OK, "batch of 2");
  const float *si[1] = {img2};
  float *so[1] = {s1};
  i2i_run(ctx, m, &rp, 1, w, h, si, so, NULL);
  CHECK(!memcmp(b0, o, n * 4) && !memcmp(b1, s1, n * 4), "each image of a batch is normalised on its own");
  rp.strength = 0.5f;
  CHECK(i2i_run(ctx, m, &rp, 1, w, h, ins, outs, NULL) == I2I_OK, "strength 0.5");
  float maxd = 0;
  for (size_t i = 0; i < n; i++)
    if (i % 4 != 3) maxd = fmaxf(maxd, fabsf(o[i] - 0.5f * (img[i] + inplace[i])));
  CHECK(maxd < 1e-6f, "strength 0.5 is the midpoint (%g)", maxd);
  free(img);
  free(img2);
  free(o);
  free(inplace);
  free(b0);
  free(b1);
  free(s1);
  i2i_model_free(m);
}

/* Faithful mode: a batch of identical images gets identical dropout masks, equal to a run of
 * one image (design.md: the batch index is part of the mask only in training). */
/* A context keeps a run's working memory for the next one: runs of other pictures and sizes in
 * one context give, bit for bit, what each gives in a fresh context (nothing of an earlier run is
 * read), smaller and larger sizes alike. */
static void test_kept_memory(void) {
  i2i_model *m = NULL;
  if (build_small(ctx, &m)) {
    CHECK(0, "build");
    return;
  }
  int runs[][3] = {{64, 48, 1}, {61, 45, 2}, {56, 44, 3}, {50, 40, 4}, {128, 96, 5}, {100, 90, 6}, {16, 16, 7}};
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
    int w = runs[i][0], h = runs[i][1];
    size_t n = (size_t)w * h * 4;
    float *img = make_image(w, h, 4, (unsigned)runs[i][2]), *kept = malloc(n * 4), *fresh = malloc(n * 4);
    const float *ins[1] = {img};
    float *a[1] = {kept}, *b[1] = {fresh};
    i2i_ctx *c;
    bool ok = i2i_run(ctx, m, NULL, 1, w, h, ins, a, NULL) == I2I_OK && i2i_ctx_create(NULL, &c) == I2I_OK;
    if (ok) {
      i2i_model *m2 = NULL;
      ok = build_small(c, &m2) == I2I_OK && i2i_run(c, m2, NULL, 1, w, h, ins, b, NULL) == I2I_OK;
      i2i_model_free(m2);
      i2i_ctx_free(c);
    }
    CHECK(ok && !memcmp(kept, fresh, n * 4), "run %zu (%dx%d) in a used context equals a fresh context's", i, w, h);
    free(img);
    free(kept);
    free(fresh);
  }
  i2i_model_free(m);
}

static void test_batched_dropout(void) {
  i2i_builder *b;
  i2i_model *m = NULL;
  unsigned seed = 3;
  i2i_builder_new(ctx, &b);
  i2i_builder_add_input(b, "input", 3);
  conv_node(b, "c", "input", "c", 3, 3, 1, 1, 0, false, &seed);
  const char *di[1] = {"c"}, *dout[1] = {"d"};
  i2i_builder_add_node(b, "Dropout", "drop", 1, di, 1, dout, 0, NULL);
  unary(b, "Tanh", "tanh", "d", "output");
  i2i_builder_add_output(b, "output", 3);
  CHECK(i2i_builder_finish(b, &m) == I2I_OK, "dropout model builds: %s", i2i_ctx_errmsg(ctx));
  if (!m) return;
  enum { W = 24, H = 16 };
  float *img = make_image(W, H, 4, 5), *o1 = malloc(sizeof(float) * W * H * 4), *o2 = malloc(sizeof(float) * W * H * 4),
        *o3 = malloc(sizeof(float) * W * H * 4);
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.pix2pix_mode = I2I_PIX2PIX_FAITHFUL;
  rp.seed = 9;
  const float *two[2] = {img, img}, *one[1] = {img};
  float *outs2[2] = {o1, o2}, *outs1[1] = {o3};
  CHECK(i2i_run(ctx, m, &rp, 2, W, H, two, outs2, NULL) == I2I_OK, "batch of 2: %s", i2i_ctx_errmsg(ctx));
  CHECK(i2i_run(ctx, m, &rp, 1, W, H, one, outs1, NULL) == I2I_OK, "one image: %s", i2i_ctx_errmsg(ctx));
  CHECK(!memcmp(o1, o2, sizeof(float) * W * H * 4) && !memcmp(o1, o3, sizeof(float) * W * H * 4),
        "faithful dropout: both images of a batch and a single run are identical");
  rp.seed = 10;
  CHECK(i2i_run(ctx, m, &rp, 1, W, H, one, outs1, NULL) == I2I_OK && memcmp(o1, o3, sizeof(float) * W * H * 4),
        "another seed gives another mask");
  free(img);
  free(o1);
  free(o2);
  free(o3);
  i2i_model_free(m);
}

/* A Dropout whose training_mode input is false is the identity even in faithful mode (ONNX's
 * inference); true drops there and not in deterministic mode. */
static void test_dropout_training_mode(void) {
  i2i_model *off = NULL, *on = NULL;
  CHECK(i2i_model_load_file(ctx, wpath("bad/dropout_training_false.onnx"), &off) == I2I_OK, "false loads: %s",
        i2i_ctx_errmsg(ctx));
  CHECK(i2i_model_load_file(ctx, wpath("bad/dropout_training_true.onnx"), &on) == I2I_OK, "true loads: %s",
        i2i_ctx_errmsg(ctx));
  if (!off || !on) {
    i2i_model_free(off);
    i2i_model_free(on);
    return;
  }
  enum { W = 20, H = 12, N = W * H * 4 };
  float *img = make_image(W, H, 4, 7), *a = malloc(sizeof(float) * N), *b = malloc(sizeof(float) * N),
        *c = malloc(sizeof(float) * N);
  const float *ins[1] = {img};
  float *oa[1] = {a}, *ob[1] = {b}, *oc[1] = {c};
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  rp.seed = 4;
  rp.pix2pix_mode = I2I_PIX2PIX_FAITHFUL;
  CHECK(i2i_run(ctx, off, &rp, 1, W, H, ins, oa, NULL) == I2I_OK, "false, faithful: %s", i2i_ctx_errmsg(ctx));
  CHECK(i2i_run(ctx, on, &rp, 1, W, H, ins, oc, NULL) == I2I_OK, "true, faithful: %s", i2i_ctx_errmsg(ctx));
  rp.pix2pix_mode = I2I_PIX2PIX_DETERMINISTIC;
  CHECK(i2i_run(ctx, off, &rp, 1, W, H, ins, ob, NULL) == I2I_OK, "false, deterministic: %s", i2i_ctx_errmsg(ctx));
  CHECK(!memcmp(a, b, sizeof(float) * N), "training_mode false: faithful equals deterministic (nothing dropped)");
  int changed = 0;
  for (int i = 0; i < N; i++) changed += a[i] != c[i];
  CHECK(changed > N / 8, "training_mode true drops in faithful mode (%d of %d values differ)", changed, N);
  free(img);
  free(a);
  free(b);
  free(c);
  i2i_model_free(off);
  i2i_model_free(on);
}

static void test_api_misuse(void) {
  i2i_model *m = NULL;
  CHECK(i2i_model_load_file(ctx, NULL, &m) == I2I_E_ARG, "NULL path");
  CHECK(i2i_model_load_memory(ctx, NULL, 10, &m) == I2I_E_ARG, "NULL data");
  if (build_small(ctx, &m)) return;
  float px[4] = {0.5f, 0.5f, 0.5f, 1}, out[4];
  const float *ins[1] = {px};
  float *outs[1] = {out};
  i2i_run_params rp;
  i2i_run_default_params(&rp);
  CHECK(i2i_run(ctx, m, &rp, 1, 0, 1, ins, outs, NULL) == I2I_E_ARG, "width 0");
  CHECK(i2i_run(ctx, m, &rp, 1, 100000, 1, ins, outs, NULL) == I2I_E_LIMIT, "width over the limit");
  rp.strength = 2;
  CHECK(i2i_run(ctx, m, &rp, 1, 1, 1, ins, outs, NULL) == I2I_E_ARG, "strength 2");
  rp.strength = 1;
  rp.scale = 10;
  CHECK(i2i_run(ctx, m, &rp, 1, 1, 1, ins, outs, NULL) == I2I_E_ARG, "scale 10");
  CHECK(strstr(i2i_ctx_errmsg(ctx), "scale"), "message names scale");
  i2i_model_free(m);
  /* a discriminator-like model is not an image-to-image generator */
  i2i_builder *b;
  i2i_builder_new(ctx, &b);
  unsigned seed = 1;
  i2i_builder_add_input(b, "input", 3);
  conv_node(b, "c", "input", "output", 3, 1, 3, 1, 1, false, &seed);
  i2i_builder_add_output(b, "output", 1);
  CHECK(i2i_builder_finish(b, &m) == I2I_OK, "patch model builds: %s", i2i_ctx_errmsg(ctx));
  CHECK(i2i_run(ctx, m, NULL, 1, 1, 1, ins, outs, NULL) == I2I_E_UNSUPPORTED, "a 1-channel model is refused");
  CHECK(strstr(i2i_ctx_errmsg(ctx), "not an image-to-image"), "message: %s", i2i_ctx_errmsg(ctx));
  i2i_model_free(m);
  /* a 3-channel model whose output is smaller than its input (an unpadded 5x5 convolution) is
   * refused before anything is read past its output */
  i2i_builder_new(ctx, &b);
  i2i_builder_add_input(b, "input", 3);
  conv_node(b, "c", "input", "output", 3, 3, 5, 1, 0, false, &seed);
  i2i_builder_add_output(b, "output", 3);
  CHECK(i2i_builder_finish(b, &m) == I2I_OK, "shrinking model builds: %s", i2i_ctx_errmsg(ctx));
  float big[4 * 16 * 16], bigout[4 * 16 * 16];
  for (int i = 0; i < 4 * 16 * 16; i++) big[i] = 0.5f;
  const float *bins[1] = {big};
  float *bouts[1] = {bigout};
  CHECK(i2i_run(ctx, m, NULL, 1, 16, 16, bins, bouts, NULL) == I2I_E_FORMAT, "an output smaller than the input is refused");
  CHECK(strstr(i2i_ctx_errmsg(ctx), "at the input's size"), "message: %s", i2i_ctx_errmsg(ctx));
  i2i_model_free(m);
  /* builder misuse */
  i2i_builder_new(ctx, &b);
  CHECK(i2i_builder_add_input(b, "", 3) == I2I_E_ARG, "empty input name");
  i2i_builder_add_input(b, "x", 3);
  CHECK(i2i_builder_add_input(b, "y", 3) == I2I_E_ARG, "second input");
  const char *o1[1] = {"x"};
  const char *in1[1] = {"x"};
  CHECK(i2i_builder_add_node(b, "Relu", "r", 1, in1, 1, o1, 0, NULL) != I2I_OK, "a node writing its own input");
  i2i_builder_free(b);
}

static void test_alloc_failures(void) {
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.allocator.alloc = count_alloc;
  p.allocator.free = count_free;
  p.threads = 1;
  size_t n;
  unsigned char *file = read_all(wpath("small.onnx"), &n);
  CHECK(file != NULL, "small.onnx");
  if (!file) return;
  int sites = 0, leaks = 0;
  for (long k = 1; k < 100000; k++) {
    alloc_count = 0;
    alloc_live = 0;
    alloc_fail_at = k;
    i2i_ctx *c;
    if (i2i_ctx_create(&p, &c) != I2I_OK) {
      CHECK(alloc_live == 0, "leak after a failed context creation");
      continue;
    }
    i2i_model *m = NULL;
    i2i_status st = i2i_model_load_memory(c, file, n, &m);
    if (st == I2I_OK) {
      float *img = make_image(9, 7, 4, 2), out[9 * 7 * 4];
      const float *ins[1] = {img};
      float *outs[1] = {out};
      st = i2i_run(c, m, NULL, 1, 9, 7, ins, outs, NULL);
      free(img);
      if (st == I2I_OK && alloc_count < k) {
        i2i_model_free(m);
        i2i_ctx_free(c);
        CHECK(alloc_live == 0, "leak in the successful run");
        printf("    %d allocation sites failed one by one, all reported, %d leaks\n", sites, leaks);
        break;
      }
      CHECK(st == I2I_E_NOMEM || st == I2I_E_LIMIT, "run with allocation %ld failing: %s", k, i2i_status_name(st));
      /* the context stays usable: the same run succeeds once allocations work */
      alloc_fail_at = 0;
      float *img2 = make_image(9, 7, 4, 2);
      const float *ins2[1] = {img2};
      CHECK(i2i_run(c, m, NULL, 1, 9, 7, ins2, outs, NULL) == I2I_OK, "the context is usable after a failed run");
      free(img2);
      i2i_model_free(m);
    } else {
      CHECK(st == I2I_E_NOMEM || st == I2I_E_LIMIT, "load with allocation %ld failing: %s (%s)", k, i2i_status_name(st),
            i2i_ctx_errmsg(c));
      CHECK(!m, "no model");
    }
    sites++;
    i2i_ctx_free(c);
    if (alloc_live != 0) leaks++;
    CHECK(alloc_live == 0, "%ld blocks leaked with allocation %ld failing", alloc_live, k);
  }
  alloc_fail_at = 0;
  free(file);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_engine MAKE_BAD_ONNX_PY WORK_DIR\n");
    return 2;
  }
  work_dir = argv[2];
  mkdir(work_dir, 0777);
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s/bad > /dev/null", argv[1], work_dir);
  if (system(cmd) != 0) {
    fprintf(stderr, "test_engine: %s failed (needs Debian's python3-onnx)\n", argv[1]);
    return 1;
  }
  i2i_ctx_params p;
  i2i_ctx_default_params(&p);
  p.backend = I2I_BACKEND_CPU;
  if (i2i_ctx_create(&p, &ctx) != I2I_OK) return 1;
  RUN(test_builder_round_trip);
  RUN(test_bad_files);
  RUN(test_limits);
  RUN(test_truncation);
  RUN(test_sizes_alpha_strength);
  RUN(test_kept_memory);
  RUN(test_batched_dropout);
  RUN(test_dropout_training_mode);
  RUN(test_api_misuse);
  RUN(test_alloc_failures);
  i2i_ctx_free(ctx);
  return check_summary();
}
