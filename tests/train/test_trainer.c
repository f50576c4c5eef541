/* tests/train/test_trainer.c: the trainer API on small graphs built here: argument checks, new
 * discriminators' initialisation, augmentation (shared crops, flips), bicubic resize, the
 * pool hook's calls, a non-finite step that leaves the trainer untouched, state files that
 * resume bit for bit (and refuse damage), exports, and an allocation-failure sweep.
 *
 * Uses the public API plus train/train.h to look at the staged images. Ends with
 * "N passed, N failed".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/check.h"
#include "train/train.h"

static char workdir[512] = "/tmp";

static i2i_ctx *new_ctx(int threads) {
  i2i_ctx_params cp;
  i2i_ctx_default_params(&cp);
  cp.backend = I2I_BACKEND_CPU;
  cp.threads = threads;
  i2i_ctx *ctx = NULL;
  i2i_ctx_create(&cp, &ctx);
  return ctx;
}

static uint32_t lcg = 12345;
static float frand(void) {
  lcg = lcg * 1664525u + 1013904223u;
  return (float)(lcg >> 8) / 16777216.0f;
}

static void init(i2i_builder *b, const char *name, int rank, const int64_t *dims, float scale, float offset) {
  size_t n = 1;
  for (int i = 0; i < rank; i++) n *= (size_t)dims[i];
  float *v = malloc(n * 4);
  for (size_t i = 0; i < n; i++) v[i] = offset + scale * (frand() * 2 - 1);
  i2i_builder_add_initializer(b, name, 1, rank, dims, v);
  free(v);
}

/* A small generator: reflect Pad 1 -> Conv 3->4 -> IN + ReLU -> Conv 4->3 (zero pad 1) -> Tanh.
 * `shared`: the second conv reuses the first conv's bias name (a tied tensor). */
static i2i_model *tiny_generator(i2i_ctx *ctx, const char *task, bool shared) {
  i2i_builder *b = NULL;
  if (i2i_builder_new(ctx, &b)) return NULL;
  i2i_builder_add_input(b, "input", 3);
  int64_t pads[8] = {0, 0, 1, 1, 0, 0, 1, 1};
  i2i_builder_add_initializer(b, "pads", 7, 1, (int64_t[]){8}, pads);
  i2i_attr pm = {.name = "mode", .type = I2I_ATTR_STRING, .s = "reflect"};
  i2i_builder_add_node(b, "Pad", "pad", 2, (const char *[]){"input", "pads"}, 1, (const char *[]){"pad"}, 1, &pm);
  init(b, "c0.w", 4, (int64_t[]){4, 3, 3, 3}, 0.3f, 0);
  init(b, "c0.b", 1, (int64_t[]){4}, 0.1f, 0);
  init(b, "c1.w", 4, (int64_t[]){3, 4, 3, 3}, 0.3f, 0);
  init(b, "c1.b", 1, (int64_t[]){3}, 0.1f, 0);
  init(b, "ones", 1, (int64_t[]){4}, 0, 1);
  init(b, "zeros", 1, (int64_t[]){4}, 0, 0);
  int64_t k3[2] = {3, 3}, s1[2] = {1, 1}, p0[4] = {0, 0, 0, 0}, p1[4] = {1, 1, 1, 1};
  i2i_attr a0[3] = {{.name = "kernel_shape", .type = I2I_ATTR_INTS, .ints = k3, .n_ints = 2},
                    {.name = "strides", .type = I2I_ATTR_INTS, .ints = s1, .n_ints = 2},
                    {.name = "pads", .type = I2I_ATTR_INTS, .ints = p0, .n_ints = 4}};
  i2i_attr a1[3] = {a0[0], a0[1], {.name = "pads", .type = I2I_ATTR_INTS, .ints = p1, .n_ints = 4}};
  i2i_builder_add_node(b, "Conv", "c0", 3, (const char *[]){"pad", "c0.w", "c0.b"}, 1, (const char *[]){"c0"}, 3, a0);
  i2i_attr e = {.name = "epsilon", .type = I2I_ATTR_FLOAT, .f = 1e-5f};
  i2i_builder_add_node(b, "InstanceNormalization", "in0", 3, (const char *[]){"c0", "ones", "zeros"}, 1,
                       (const char *[]){"in0"}, 1, &e);
  i2i_builder_add_node(b, "Relu", "r0", 1, (const char *[]){"in0"}, 1, (const char *[]){"r0"}, 0, NULL);
  if (shared) {
    init(b, "c1.w2", 4, (int64_t[]){4, 4, 3, 3}, 0.3f, 0);
    i2i_builder_add_node(b, "Conv", "cx", 3, (const char *[]){"r0", "c1.w2", "c0.b"}, 1, (const char *[]){"cx"}, 3, a1);
    i2i_builder_add_node(b, "Conv", "c1", 3, (const char *[]){"cx", "c1.w", "c1.b"}, 1, (const char *[]){"c1"}, 3, a1);
  } else {
    i2i_builder_add_node(b, "Conv", "c1", 3, (const char *[]){"r0", "c1.w", "c1.b"}, 1, (const char *[]){"c1"}, 3, a1);
  }
  i2i_builder_add_node(b, "Tanh", "t", 1, (const char *[]){"c1"}, 1, (const char *[]){"output"}, 0, NULL);
  i2i_builder_add_output(b, "output", 3);
  i2i_builder_set_meta(b, "i2i.family", "resnet");
  i2i_builder_set_meta(b, "i2i.task", task);
  i2i_builder_set_meta(b, "i2i.menu_label", task);
  i2i_model *m = NULL;
  i2i_builder_finish(b, &m);
  return m;
}

static void random_images(float *a, float *b, int w, int h) {
  for (int i = 0; i < w * h * 4; i++) {
    a[i] = frand();
    b[i] = frand();
  }
}

static i2i_trainer *cyclegan_trainer_iters(i2i_ctx *ctx, i2i_model **g, int pool, int batch, float lr, int64_t iters) {
  g[0] = tiny_generator(ctx, "x2y", false);
  g[1] = tiny_generator(ctx, "y2x", false);
  i2i_train_params p;
  i2i_train_default_params(&p, I2I_TRAIN_CYCLEGAN);
  p.size = 32;
  p.batch = batch;
  p.pool_size = pool;
  p.iters = iters;
  p.seed = 77;
  p.lr = lr;
  p.d_channels = 4;
  i2i_train_models tm = {g[0], g[1], NULL, NULL};
  i2i_trainer *tr = NULL;
  if (i2i_trainer_create(ctx, &p, &tm, &tr)) printf("    create: %s\n", i2i_ctx_errmsg(ctx));
  return tr;
}

static i2i_trainer *cyclegan_trainer(i2i_ctx *ctx, i2i_model **g, int pool, int batch, float lr) {
  return cyclegan_trainer_iters(ctx, g, pool, batch, lr, 20);
}

static i2i_status feed_and_step(i2i_trainer *tr, int batch, int w, int h, i2i_train_report *r) {
  float *a = malloc(sizeof(float) * 4 * (size_t)w * h), *b = malloc(sizeof(float) * 4 * (size_t)w * h);
  for (int i = 0; i < batch; i++) {
    random_images(a, b, w, h);
    i2i_status st = i2i_trainer_set_images(tr, i, a, w, h, b, w, h);
    if (st) {
      free(a);
      free(b);
      return st;
    }
  }
  free(a);
  free(b);
  return i2i_trainer_step(tr, r);
}

/* Every tensor's VALUE, GRAD, ADAM_M and ADAM_V of every network, concatenated. */
static float *snapshot(i2i_trainer *tr, size_t *n) {
  size_t total = 0;
  for (int k = 0; k < 4; k++)
    for (size_t t = 0; t < i2i_trainer_tensor_count(tr, k); t++) {
      size_t numel;
      i2i_trainer_tensor_info(tr, k, t, NULL, &numel, NULL);
      total += numel * 4;
    }
  float *s = malloc(sizeof(float) * (total + 1)), *p = s;
  for (int k = 0; k < 4; k++)
    for (size_t t = 0; t < i2i_trainer_tensor_count(tr, k); t++) {
      const char *name;
      size_t numel;
      int trainable;
      i2i_trainer_tensor_info(tr, k, t, &name, &numel, &trainable);
      for (int w = 0; w < 4; w++) {
        if (w && !trainable) memset(p, 0, numel * 4);
        else i2i_trainer_read(tr, k, name, (i2i_train_tensor)w, p, numel);
        p += numel;
      }
    }
  *n = total;
  return s;
}

/* ---- tests ------------------------------------------------------------------------------------ */

static void test_arguments(void) {
  i2i_ctx *ctx = new_ctx(2);
  i2i_model *g = tiny_generator(ctx, "x2y", false), *tied = tiny_generator(ctx, "tied", true);
  i2i_train_params p;
  i2i_train_default_params(&p, I2I_TRAIN_CYCLEGAN);
  p.size = 32;
  i2i_trainer *tr = NULL;
  i2i_train_models none = {0}, one = {g, NULL, NULL, NULL};
  CHECK(i2i_trainer_create(ctx, &p, &none, &tr) == I2I_E_ARG && !tr, "no generator");
  CHECK(i2i_trainer_create(ctx, &p, &one, &tr) == I2I_E_ARG && strstr(i2i_ctx_errmsg(ctx), "reverse"), "CycleGAN without the reverse: %s", i2i_ctx_errmsg(ctx));
  i2i_model *d6 = NULL;
  i2i_patchgan_new(ctx, 6, 4, 3, 1, 1, &d6);
  i2i_train_models wrongd = {g, g, d6, NULL};
  CHECK(i2i_trainer_create(ctx, &p, &wrongd, &tr) == I2I_E_UNSUPPORTED, "a 6-channel D for CycleGAN: %s", i2i_ctx_errmsg(ctx));
  i2i_train_models gd = {d6, g, NULL, NULL};
  CHECK(i2i_trainer_create(ctx, &p, &gd, &tr) == I2I_E_UNSUPPORTED, "a discriminator as generator: %s", i2i_ctx_errmsg(ctx));
  i2i_train_models tm = {tied, tied, NULL, NULL};
  CHECK(i2i_trainer_create(ctx, &p, &tm, &tr) == I2I_E_UNSUPPORTED && strstr(i2i_ctx_errmsg(ctx), "shared"),
        "a tied tensor is refused: %s", i2i_ctx_errmsg(ctx));
  i2i_train_params bad = p;
  bad.batch = 0;
  i2i_train_models ok = {g, g, NULL, NULL};
  CHECK(i2i_trainer_create(ctx, &bad, &ok, &tr) == I2I_E_ARG, "batch 0");
  bad = p;
  bad.size = 12;
  CHECK(i2i_trainer_create(ctx, &bad, &ok, &tr) != I2I_OK && strstr(i2i_ctx_errmsg(ctx), "discriminator"),
        "size 12 is too small for a 3-layer PatchGAN: %s", i2i_ctx_errmsg(ctx));
  p.d_channels = 4;
  bad = p;
  bad.lr = NAN;
  CHECK(i2i_trainer_create(ctx, &bad, &ok, &tr) == I2I_E_ARG, "NaN learning rate");
  i2i_ctx_set_backend(ctx, I2I_BACKEND_CUDA);
  i2i_status cst = i2i_trainer_create(ctx, &p, &ok, &tr);
  if (cst == I2I_OK) {
    CHECK(i2i_trainer_backend(tr) == I2I_BACKEND_CUDA, "forced CUDA trains on the GPU");
    i2i_trainer_free(tr);
    tr = NULL;
  } else {
    CHECK(cst == I2I_E_DEVICE && strstr(i2i_ctx_errmsg(ctx), "CUDA"), "forced CUDA without a usable GPU: %s",
          i2i_ctx_errmsg(ctx));
  }
  i2i_ctx_set_backend(ctx, I2I_BACKEND_CPU);
  CHECK(i2i_trainer_create(ctx, &p, &ok, &tr) == I2I_OK, "valid: %s", i2i_ctx_errmsg(ctx));
  CHECK(i2i_trainer_backend(tr) == I2I_BACKEND_CPU, "the CPU backend when asked for");
  CHECK(!strcmp(i2i_trainer_math(tr), "float32") && !strcmp(i2i_trainer_math(NULL), "float32"),
        "the CPU trains in float32: %s", i2i_trainer_math(tr));
  i2i_train_report r;
  CHECK(i2i_trainer_step(tr, &r) == I2I_E_ARG, "a step without images");
  float img[8 * 8 * 4] = {0};
  CHECK(i2i_trainer_set_images(tr, 1, img, 8, 8, img, 8, 8) == I2I_E_ARG, "index outside the batch");
  CHECK(i2i_trainer_set_images(tr, 0, img, 4, 8, img, 8, 8) == I2I_E_ARG, "a 4x8 image");
  i2i_trainer_free(tr);
  i2i_model_free(g);
  i2i_model_free(tied);
  i2i_model_free(d6);
  i2i_ctx_free(ctx);
}

static void test_patchgan_init(void) {
  i2i_ctx *ctx = new_ctx(1);
  i2i_model *d = NULL;
  CHECK(!i2i_patchgan_new(ctx, 6, 16, 3, 1, 42, &d), "build: %s", i2i_ctx_errmsg(ctx));
  if (!d) return;
  i2i_model_info in;
  i2i_model_get_info(d, &in);
  CHECK(in.family == I2I_FAMILY_PATCHGAN && in.in_channels == 6 && in.n_batchnorm == 3, "family %d, %d in, %d BN", in.family,
        in.in_channels, in.n_batchnorm);
  const char *names[] = {"model.1.conv.weight", "model.3.conv.weight", "model.1.bn.weight", "model.0.conv.bias",
                         "model.2.bn.bias", "model.3.bn.running_var", "model.4.weight"};
  double want_mean[] = {0, 0, 1, 0, 0, 1, 0}, want_std[] = {0.02, 0.02, 0.02, 0, 0, 0, 0.02};
  for (int i = 0; i < 7; i++) {
    i2i_tensor_desc t;
    if (i2i_model_tensor_by_name(d, names[i], &t)) {
      CHECK(0, "no tensor %s", names[i]);
      continue;
    }
    const float *v = t.data;
    size_t n = t.nbytes / 4;
    double s = 0, q = 0;
    for (size_t k = 0; k < n; k++) s += v[k];
    double m = s / n;
    for (size_t k = 0; k < n; k++) q += (v[k] - m) * (v[k] - m);
    double sd = sqrt(q / n), tol = want_std[i] ? 4 * 0.02 / sqrt((double)n) + 1e-9 : 1e-12;
    CHECK(fabs(m - want_mean[i]) <= tol && fabs(sd - want_std[i]) <= (want_std[i] ? 0.15 * want_std[i] : 1e-12),
          "%s: mean %g std %g over %zu", names[i], m, sd, n);
  }
  /* InstanceNorm flavour: no BatchNorm, conv biases present */
  i2i_model *di = NULL;
  CHECK(!i2i_patchgan_new(ctx, 3, 8, 3, 0, 42, &di), "IN build");
  i2i_tensor_desc t;
  CHECK(di && !i2i_model_tensor_by_name(di, "model.2.conv.bias", &t), "IN PatchGAN has middle conv biases");
  i2i_model_free(d);
  i2i_model_free(di);
  i2i_ctx_free(ctx);
}

static void test_resize(void) {
  /* the same size is a copy; halving a ramp hits the midpoints exactly (symmetric weights) */
  float src[8 * 2], dst[16 * 2];
  for (int y = 0; y < 2; y++)
    for (int x = 0; x < 8; x++) src[y * 8 + x] = (float)x;
  CHECK(!i2i_train_resize(src, 8, 2, 1, dst, 8, 2) && !memcmp(src, dst, sizeof(float) * 16), "same size is a copy");
  float ramp[16], half[8];
  for (int x = 0; x < 16; x++) ramp[x] = (float)x;
  i2i_train_resize(ramp, 16, 1, 1, half, 8, 1);
  double e = 0;
  for (int x = 1; x < 7; x++) e = fmax(e, fabs(half[x] - (2 * x + 0.5)));
  CHECK(e < 1e-5, "halved ramp error %g", e);
  /* upsampling: a constant stays constant (the weights sum to one), borders replicate */
  float c[5 * 7 * 3], d[9 * 4 * 3];
  for (int i = 0; i < 5 * 7 * 3; i++) c[i] = 0.25f;
  i2i_train_resize(c, 5, 7, 3, d, 9, 4);
  e = 0;
  for (int i = 0; i < 9 * 4 * 3; i++) e = fmax(e, fabs(d[i] - 0.25f));
  CHECK(e < 1e-6, "constant image error %g", e);
  /* upsampling a ramp 2x: OpenCV's coefficients (a = -0.75) at t = 0.25 and 0.75 */
  i2i_train_resize(src, 8, 2, 1, dst, 16, 2);
  double w25 = 0.25, w[4];
  {
    const double a = -0.75, t = w25;
    w[0] = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a;
    w[1] = ((a + 2) * t - (a + 3)) * t * t + 1;
    w[2] = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1;
    w[3] = 1 - w[0] - w[1] - w[2];
  }
  /* dst x = 9: source 4.25 -> taps 3..6 with t = 0.25 */
  double want = w[0] * 3 + w[1] * 4 + w[2] * 5 + w[3] * 6;
  CHECK(fabs(dst[9] - want) < 1e-5, "dst[9] %g, want %g", dst[9], want);
  CHECK(i2i_train_resize(c, 0, 7, 3, d, 9, 4) == I2I_E_ARG, "zero width");
}

/* Staged images: Pix2Pix crops and flips a pair together; CycleGAN crops together, flips apart. */
static void test_augmentation(void) {
  i2i_ctx *ctx = new_ctx(1);
  i2i_model *g = tiny_generator(ctx, "x2y", false);
  for (int kind = 0; kind < 2; kind++) {
    i2i_train_params p;
    i2i_train_default_params(&p, kind ? I2I_TRAIN_CYCLEGAN : I2I_TRAIN_PIX2PIX);
    p.size = 32;
    p.d_channels = 4;
    i2i_train_models tm = {g, g, NULL, NULL};
    i2i_trainer *tr = NULL;
    if (i2i_trainer_create(ctx, &p, &tm, &tr)) {
      CHECK(0, "create: %s", i2i_ctx_errmsg(ctx));
      continue;
    }
    CHECK(tr->p.load_size == 36, "load size %d for 32", tr->p.load_size);
    int L = 40, same = 0, mirrored = 0, offsets = 0;
    float *img = malloc(sizeof(float) * L * L * 4);
    for (int i = 0; i < L * L * 4; i++) img[i] = frand();
    float first = 0;
    for (int it = 0; it < 24; it++) {
      tr->iteration = it;
      i2i_trainer_set_images(tr, 0, img, L, L, img, L, L);
      size_t plane = 32 * 32;
      bool eq = !memcmp(tr->host_a, tr->host_b, sizeof(float) * 3 * plane), mir = true;
      for (int c = 0; c < 3 && mir; c++)
        for (int y = 0; y < 32 && mir; y++)
          for (int x = 0; x < 32; x++)
            if (tr->host_a[c * plane + y * 32 + x] != tr->host_b[c * plane + y * 32 + 31 - x]) {
              mir = false;
              break;
            }
      same += eq;
      mirrored += mir && !eq;
      if (it == 0) first = tr->host_a[0];
      offsets += tr->host_a[0] != first;
    }
    if (kind == 0) CHECK(same == 24, "Pix2Pix: the pair is identical after augmentation in %d of 24", same);
    else CHECK(same + mirrored == 24 && same > 3 && mirrored > 3, "CycleGAN: same %d, mirrored %d of 24", same, mirrored);
    CHECK(offsets > 10, "the crop moves between iterations (%d of 24 differ)", offsets);
    free(img);
    i2i_trainer_free(tr);
  }
  i2i_model_free(g);
  i2i_ctx_free(ctx);
}

typedef struct {
  int calls;
  int64_t first_it;
} hook_log;

static int count_hook(void *user, int domain, int64_t it, int image) {
  hook_log *h = user;
  if (!h->calls++) h->first_it = it;
  return (domain + image + (int)it) % 3 == 0 ? -1 : 1;
}

static void test_pool_hook(void) {
  i2i_ctx *ctx = new_ctx(2);
  i2i_model *g[2];
  i2i_trainer *tr = cyclegan_trainer(ctx, g, 2, 2, 2e-4f);
  hook_log h = {0, -1};
  i2i_trainer_set_pool_hook(tr, count_hook, &h);
  i2i_train_report r;
  for (int it = 0; it < 4; it++) CHECK(!feed_and_step(tr, 2, 32, 32, &r), "step: %s", i2i_ctx_errmsg(ctx));
  /* a pool of 2 fills at iteration 0 (batch 2); from iteration 1, 2 domains x 2 images x 3 */
  CHECK(h.calls == 12 && h.first_it == 1, "hook calls %d, first at iteration %lld", h.calls, (long long)h.first_it);
  CHECK(r.loss_d > 0 && r.loss_cycle_a > 0 && r.loss_id_a > 0 && r.lr > 0, "report filled");
  i2i_trainer_free(tr);
  i2i_model_free(g[0]);
  i2i_model_free(g[1]);
  i2i_ctx_free(ctx);
}

/* CycleGAN's schedule as mmagic's LinearLrInterval scaled to --iters: constant for the first
 * half, then 100 equal stages down to zero, whatever the length (a run of 300 iterations had 150
 * stages) and exactly the published config's values at its own length. */
static void test_lr_schedule(void) {
  i2i_ctx *ctx = new_ctx(1);
  i2i_model *g[2];
  i2i_trainer *tr = cyclegan_trainer_iters(ctx, g, 0, 1, 2e-4f, 300);
  int changes = 0;
  double prev = i2i_trainer_lr(tr, 0), first_drop = -1;
  for (int64_t it = 1; it < 300; it++) {
    double lr = i2i_trainer_lr(tr, it);
    if (lr != prev && first_drop < 0) first_drop = (double)it;
    changes += lr != prev;
    prev = lr;
  }
  CHECK(changes == 99 && i2i_trainer_lr(tr, 150) == 2e-4f && first_drop == 152,
        "300 iterations: %d lr changes after the first value (want 99: 100 stages), first drop at %g", changes, first_drop);
  CHECK(fabs(i2i_trainer_lr(tr, 299) - 2e-6) < 1e-12, "last iteration at 1/100 of the lr: %g", i2i_trainer_lr(tr, 299));
  i2i_trainer_free(tr);
  i2i_model_free(g[0]);
  i2i_model_free(g[1]);
  /* summer2winter's config: 246,200 iterations, decay from 123,100 in intervals of 1231 */
  tr = cyclegan_trainer_iters(ctx, g, 0, 1, 2e-4f, 246200);
  CHECK(fabs(i2i_trainer_lr(tr, 123100 + 1231 * 50) - 1e-4) < 1e-10 &&
        fabs(i2i_trainer_lr(tr, 123100 + 1231 * 50 - 1) - 1.02e-4) < 1e-10,
        "published length: stage 50 at 123100 + 50 x 1231 (%g, %g)", i2i_trainer_lr(tr, 123100 + 1231 * 50),
        i2i_trainer_lr(tr, 123100 + 1231 * 50 - 1));
  i2i_trainer_free(tr);
  i2i_model_free(g[0]);
  i2i_model_free(g[1]);
  i2i_ctx_free(ctx);
}

static void test_nonfinite(void) {
  i2i_ctx *ctx = new_ctx(2);
  i2i_model *g[2];
  i2i_trainer *tr = cyclegan_trainer(ctx, g, 2, 1, 2e-4f);
  i2i_train_report r;
  CHECK(!feed_and_step(tr, 1, 32, 32, &r), "a good step");
  size_t n0, n1;
  float *before = snapshot(tr, &n0);
  int pool_count = tr->pool[0].count;
  /* a learning rate that overflows the discriminators within one update */
  tr->p.lr = 1e30f;
  i2i_status st = feed_and_step(tr, 1, 32, 32, &r);
  CHECK(st == I2I_E_LIMIT, "status %s: %s", i2i_status_name(st), i2i_ctx_errmsg(ctx));
  CHECK(strstr(i2i_ctx_errmsg(ctx), "iteration 1") != NULL, "message: %s", i2i_ctx_errmsg(ctx));
  CHECK(i2i_trainer_iteration(tr) == 1, "iteration %lld", (long long)i2i_trainer_iteration(tr));
  float *after = snapshot(tr, &n1);
  size_t diff = 0;
  for (size_t i = 0; i < n0; i++) diff += memcmp(&before[i], &after[i], 4) != 0;
  /* gradients of the failed step are not state; values and moments must be untouched */
  size_t off = 0, state_diff = 0;
  for (int k = 0; k < 4; k++)
    for (size_t t = 0; t < i2i_trainer_tensor_count(tr, k); t++) {
      size_t numel;
      i2i_trainer_tensor_info(tr, k, t, NULL, &numel, NULL);
      for (int w = 0; w < 4; w++, off += numel)
        if (w != 1)
          for (size_t i = 0; i < numel; i++) state_diff += memcmp(&before[off + i], &after[off + i], 4) != 0;
    }
  CHECK(n0 == n1 && state_diff == 0, "%zu values or moments changed by the failed step (%zu incl. gradients)", state_diff, diff);
  CHECK(tr->pool[0].count == pool_count, "pool count %d, was %d", tr->pool[0].count, pool_count);
  tr->p.lr = 2e-4f;
  CHECK(!feed_and_step(tr, 1, 32, 32, &r), "training goes on after the failure: %s", i2i_ctx_errmsg(ctx));
  free(before);
  free(after);
  i2i_trainer_free(tr);
  i2i_model_free(g[0]);
  i2i_model_free(g[1]);
  i2i_ctx_free(ctx);
}

static void test_state_roundtrip(void) {
  i2i_ctx *ctx = new_ctx(2);
  i2i_model *g[2];
  i2i_trainer *tr = cyclegan_trainer(ctx, g, 3, 2, 2e-4f);
  i2i_train_report r;
  for (int it = 0; it < 3; it++) feed_and_step(tr, 2, 40, 36, &r);
  char path[600];
  snprintf(path, sizeof path, "%s/roundtrip.i2istate", workdir);
  i2i_trainer_set_meta(tr, "data0", "/some/folder");
  CHECK(!i2i_trainer_save_state(tr, path), "save: %s", i2i_ctx_errmsg(ctx));
  uint32_t mid = lcg;
  for (int it = 0; it < 3; it++) feed_and_step(tr, 2, 40, 36, &r);
  size_t n0, n1;
  float *a = snapshot(tr, &n0);
  i2i_trainer *t2 = NULL;
  CHECK(!i2i_trainer_load_state(ctx, path, &t2), "load: %s", i2i_ctx_errmsg(ctx));
  if (t2) {
    CHECK(i2i_trainer_iteration(t2) == 3, "iteration %lld", (long long)i2i_trainer_iteration(t2));
    CHECK(i2i_trainer_get_meta(t2, "data0") && !strcmp(i2i_trainer_get_meta(t2, "data0"), "/some/folder"), "metadata kept");
    CHECK(t2->pool[0].count == 3 && t2->pool[1].count == 3, "pools restored (%d, %d)", t2->pool[0].count, t2->pool[1].count);
    lcg = mid;
    for (int it = 0; it < 3; it++) feed_and_step(t2, 2, 40, 36, &r);
    float *b = snapshot(t2, &n1);
    CHECK(n0 == n1 && !memcmp(a, b, n0 * 4), "resumed run is bit-identical");
    free(b);
    i2i_trainer_free(t2);
  }
  /* damage: a flipped byte fails the checksum; a truncated file fails cleanly */
  FILE *f = fopen(path, "r+b");
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, size / 2, SEEK_SET);
  int ch = fgetc(f);
  fseek(f, size / 2, SEEK_SET);
  fputc(ch ^ 0x40, f);
  fclose(f);
  t2 = NULL;
  i2i_status st = i2i_trainer_load_state(ctx, path, &t2);
  CHECK(st == I2I_E_FORMAT && !t2, "damaged state: %s: %s", i2i_status_name(st), i2i_ctx_errmsg(ctx));
  CHECK(truncate(path, size / 3) == 0, "truncate");
  st = i2i_trainer_load_state(ctx, path, &t2);
  CHECK(st == I2I_E_FORMAT && !t2, "truncated state: %s: %s", i2i_status_name(st), i2i_ctx_errmsg(ctx));
  CHECK(i2i_trainer_load_state(ctx, "/nonexistent/state", &t2) == I2I_E_IO, "missing state");
  unlink(path);
  /* export: new metadata in the file, the trainer's copy unchanged */
  snprintf(path, sizeof path, "%s/exported.onnx", workdir);
  const char *meta[] = {"i2i.task", "x2y-finetuned-test", "i2i.menu_label", "X to Y (fine-tuned)", NULL};
  CHECK(!i2i_trainer_export(tr, I2I_NET_G, meta, path), "export: %s", i2i_ctx_errmsg(ctx));
  i2i_model *m = NULL;
  CHECK(!i2i_model_load_file(ctx, path, &m), "exported file loads: %s", i2i_ctx_errmsg(ctx));
  if (m) {
    CHECK(!strcmp(i2i_model_meta(m, "i2i.task"), "x2y-finetuned-test") &&
          !strcmp(i2i_model_meta(m, "i2i.finetuned_from"), "x2y") && !strcmp(i2i_model_meta(m, "i2i.finetune_iterations"), "6"),
          "exported metadata");
    float in[32 * 32 * 4], out[32 * 32 * 4];
    for (int i = 0; i < 32 * 32 * 4; i++) in[i] = frand();
    const float *ins[1] = {in};
    float *outs[1] = {out};
    CHECK(!i2i_run(ctx, m, NULL, 1, 32, 32, ins, outs, NULL), "the export runs: %s", i2i_ctx_errmsg(ctx));
    i2i_model_free(m);
  }
  CHECK(!strcmp(i2i_model_meta(i2i_trainer_model(tr, I2I_NET_G), "i2i.task"), "x2y"), "the trainer's copy keeps its task");
  unlink(path);
  free(a);
  i2i_trainer_free(tr);
  i2i_model_free(g[0]);
  i2i_model_free(g[1]);
  i2i_ctx_free(ctx);
}

/* The k-th allocation fails: every call returns an error or succeeds, never crashes. */
static long alloc_count, alloc_fail_at, alloc_live;
static void *failing_alloc(void *user, size_t size) {
  (void)user;
  if (++alloc_count == alloc_fail_at) return NULL;
  void *p = malloc(size);
  if (p) alloc_live++;
  return p;
}
static void plain_free(void *user, void *p) {
  (void)user;
  if (p) alloc_live--;
  free(p);
}

/* One CycleGAN trainer made and stepped in ctx; the first failing call's status (I2I_OK if none). */
static i2i_status make_and_step(i2i_ctx *ctx) {
  i2i_status st = I2I_OK;
  i2i_model *g[2] = {tiny_generator(ctx, "x2y", false), NULL};
  if (g[0]) g[1] = tiny_generator(ctx, "y2x", false);
  if (!g[0] || !g[1]) st = I2I_E_NOMEM; /* tiny_generator reports no status: the builder ran out */
  i2i_trainer *tr = NULL;
  if (!st) {
    i2i_train_params p;
    i2i_train_default_params(&p, I2I_TRAIN_CYCLEGAN);
    p.size = 32;
    p.d_channels = 4;
    p.pool_size = 1;
    i2i_train_models tm = {g[0], g[1], NULL, NULL};
    st = i2i_trainer_create(ctx, &p, &tm, &tr);
    if (!st) {
      i2i_train_report r;
      st = feed_and_step(tr, 1, 32, 32, &r);
      if (!st) st = feed_and_step(tr, 1, 32, 32, &r);
    }
    i2i_trainer_free(tr);
  }
  i2i_model_free(g[0]);
  i2i_model_free(g[1]);
  return st;
}

/* Every allocation of making two generators, a trainer and two steps fails in turn: the call
 * that meets it returns I2I_E_NOMEM with a message (never another status, never a crash), the
 * same context then trains normally, and nothing is left allocated once all is freed. */
static void test_alloc_failures(void) {
  int tried = 0, failed_ok = 0, bad_status = 0, not_usable = 0, leaked = 0;
  char first_bad[256] = "";
  for (alloc_fail_at = 1; alloc_fail_at < 100000; alloc_fail_at++) {
    alloc_count = 0;
    alloc_live = 0;
    i2i_ctx_params cp;
    i2i_ctx_default_params(&cp);
    cp.backend = I2I_BACKEND_CPU;
    cp.threads = 1;
    cp.allocator = (i2i_allocator){failing_alloc, plain_free, NULL};
    i2i_ctx *ctx = NULL;
    if (i2i_ctx_create(&cp, &ctx)) continue; /* the context itself was the failing allocation */
    i2i_status st = make_and_step(ctx);
    bool injected = alloc_count >= alloc_fail_at;
    tried++;
    if (st) {
      if (st == I2I_E_NOMEM && i2i_ctx_errmsg(ctx)[0]) failed_ok++;
      else if (!bad_status++)
        snprintf(first_bad, sizeof first_bad, "allocation %ld: %s '%s'", alloc_fail_at, i2i_status_name(st),
                 i2i_ctx_errmsg(ctx));
      long keep = alloc_fail_at;
      alloc_fail_at = 0; /* the same context, no more failures: it must work */
      if (make_and_step(ctx) != I2I_OK) not_usable++;
      alloc_fail_at = keep;
    }
    i2i_ctx_free(ctx);
    if (alloc_live) leaked++;
    if (!injected) break; /* past the last allocation */
  }
  printf("    %d failure points tried: %d refused with I2I_E_NOMEM and a message, %d other statuses%s%s, %d contexts "
         "unusable after, %d leaking\n",
         tried, failed_ok, bad_status, bad_status ? ": first " : "", first_bad, not_usable, leaked);
  CHECK(tried > 500 && failed_ok > 0 && !bad_status && !not_usable && !leaked, "allocation-failure sweep");
}

/* Training allocates once: after the first step (plans, arenas, pool), further steps and image
 * feeds take nothing from the allocator. */
static void test_no_alloc_per_step(void) {
  alloc_fail_at = 0;
  alloc_count = 0;
  i2i_ctx_params cp;
  i2i_ctx_default_params(&cp);
  cp.backend = I2I_BACKEND_CPU;
  cp.threads = 1;
  cp.allocator = (i2i_allocator){failing_alloc, plain_free, NULL};
  i2i_ctx *ctx = NULL;
  CHECK(!i2i_ctx_create(&cp, &ctx), "context");
  if (!ctx) return;
  for (int kind = 0; kind < 2; kind++) {
    bool cyc = kind == 0;
    i2i_model *g[2] = {tiny_generator(ctx, "x2y", false), cyc ? tiny_generator(ctx, "y2x", false) : NULL};
    i2i_train_params p;
    i2i_train_default_params(&p, cyc ? I2I_TRAIN_CYCLEGAN : I2I_TRAIN_PIX2PIX);
    p.size = 32;
    p.batch = 2;
    p.d_channels = 4;
    p.pool_size = 3;
    i2i_train_models tm = {g[0], g[1], NULL, NULL};
    i2i_trainer *tr = NULL;
    i2i_train_report r;
    if (!i2i_trainer_create(ctx, &p, &tm, &tr) && !feed_and_step(tr, 2, 40, 36, &r)) {
      long after_first = alloc_count;
      bool ok = true;
      for (int s = 0; s < 4 && ok; s++) ok = !feed_and_step(tr, 2, 40, 36, &r);
      printf("    %s: %ld allocations up to the first step, %ld in the next 4 steps\n", cyc ? "CycleGAN" : "Pix2Pix",
             after_first, alloc_count - after_first);
      CHECK(ok && alloc_count == after_first, "%s: no allocation per step", cyc ? "CycleGAN" : "Pix2Pix");
    } else {
      CHECK(false, "trainer: %s", i2i_ctx_errmsg(ctx));
    }
    i2i_trainer_free(tr);
    i2i_model_free(g[0]);
    i2i_model_free(g[1]);
  }
  i2i_ctx_free(ctx);
}

int main(int argc, char **argv) {
  if (argc > 1) snprintf(workdir, sizeof workdir, "%s", argv[1]);
  RUN(test_arguments);
  RUN(test_patchgan_init);
  RUN(test_resize);
  RUN(test_augmentation);
  RUN(test_pool_hook);
  RUN(test_lr_schedule);
  RUN(test_nonfinite);
  RUN(test_state_roundtrip);
  RUN(test_no_alloc_per_step);
  RUN(test_alloc_failures);
  return check_summary();
}
