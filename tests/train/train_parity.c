/* tests/train/train_parity.c: runs the engine's trainer on a case written by torch_train.py
 * and dumps what run_parity.py compares: per step the losses, and for every network the value
 * (after the step), gradient (of the step) and Adam moments of every trained tensor, and the
 * running statistics.
 *
 * The checkpoint is converted on the fly (convert_load, RGB), the pool choices come from the
 * case's table through the pool hook, images from images.bin without augmentation. Also
 * `train_parity onnx-equal A.onnx B.onnx`: exits 0 when every tensor of two models is bitwise
 * equal (the resume check of run_learn.py). Not a test by itself (the runners decide).
 */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"

typedef struct {
  int n;
  int dom[4096], it[4096], img[4096], choice[4096];
} choices;

static int hook(void *user, int domain, int64_t iteration, int image) {
  choices *c = user;
  for (int i = 0; i < c->n; i++)
    if (c->dom[i] == domain && c->it[i] == iteration && c->img[i] == image) return c->choice[i];
  return -1;
}

static int onnx_equal(const char *a, const char *b) {
  i2i_ctx *ctx;
  i2i_ctx_create(NULL, &ctx);
  i2i_model *ma = NULL, *mb = NULL;
  if (i2i_model_load_file(ctx, a, &ma) || i2i_model_load_file(ctx, b, &mb)) {
    fprintf(stderr, "%s\n", i2i_ctx_errmsg(ctx));
    return 2;
  }
  size_t n = i2i_model_tensor_count(ma), diff = 0, checked = 0;
  if (n != i2i_model_tensor_count(mb)) diff++;
  for (size_t i = 0; i < n; i++) {
    i2i_tensor_desc da, db;
    i2i_model_tensor(ma, i, &da);
    if (i2i_model_tensor_by_name(mb, da.name, &db) || da.nbytes != db.nbytes || memcmp(da.data, db.data, da.nbytes)) {
      fprintf(stderr, "tensor '%s' differs\n", da.name);
      diff++;
    }
    checked++;
  }
  printf("%zu tensors compared, %zu differ\n", checked, diff);
  i2i_model_free(ma);
  i2i_model_free(mb);
  i2i_ctx_free(ctx);
  return diff ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "onnx-equal")) return onnx_equal(argv[2], argv[3]);
  if (argc < 3) {
    fprintf(stderr, "usage: train_parity CASE_DIR OUT_DIR [THREADS]\n");
    return 2;
  }
  const char *dir = argv[1], *out = argv[2];
  int threads = argc > 3 ? atoi(argv[3]) : 2;
  gchar *cj = g_build_filename(dir, "case.json", NULL);
  gchar *txt = NULL;
  if (!g_file_get_contents(cj, &txt, NULL, NULL)) {
    fprintf(stderr, "cannot read %s\n", cj);
    return 2;
  }
  /* the few fields needed, from the flat JSON torch_train.py writes */
  int size = 0, batch = 0, steps = 0, iters = 0, pool = 0;
  double identity = 0.5, lr = 2e-4;
  long long seed = 0;
  bool cyc = strstr(txt, "\"cyclegan\"") != NULL;
  const char *keys[] = {"\"size\"", "\"batch\"", "\"steps\"", "\"iters\"", "\"pool\"", "\"identity\"", "\"seed\"", "\"lr\""};
  for (int k = 0; k < 8; k++) {
    const char *p = strstr(txt, keys[k]);
    if (!p) continue;
    p = strchr(p, ':') + 1;
    double v = g_ascii_strtod(p, NULL);
    switch (k) {
    case 0: size = (int)v; break;
    case 1: batch = (int)v; break;
    case 2: steps = (int)v; break;
    case 3: iters = (int)v; break;
    case 4: pool = (int)v; break;
    case 5: identity = v; break;
    case 6: seed = (long long)v; break;
    default: lr = v; break;
    }
  }
  g_free(txt);
  g_free(cj);
  choices ch = {0};
  gchar *cf = g_build_filename(dir, "choices.txt", NULL);
  FILE *f = fopen(cf, "r");
  if (f) {
    while (ch.n < 4096 && fscanf(f, "%d %d %d %d", &ch.dom[ch.n], &ch.it[ch.n], &ch.img[ch.n], &ch.choice[ch.n]) == 4) ch.n++;
    fclose(f);
  }
  g_free(cf);
  i2i_ctx_params cp;
  i2i_ctx_default_params(&cp);
  cp.backend = I2I_BACKEND_CPU;
  cp.threads = threads;
  i2i_ctx *ctx;
  if (i2i_ctx_create(&cp, &ctx)) return 2;
  gchar *ck = g_build_filename(dir, "ckpt.pth", NULL);
  convert_opts co = {.channel_order = "rgb", .task = cyc ? NULL : "p2p"};
  convert_set set;
  char err[1024];
  if (convert_load(ctx, ck, &co, &set, err, sizeof err)) {
    fprintf(stderr, "convert: %s\n", err);
    return 1;
  }
  g_free(ck);
  i2i_train_models tm = {0};
  for (size_t i = 0; i < set.n; i++) {
    const convert_net *n = &set.nets[i];
    bool fwd = !cyc || !strcmp(n->task, "x2y");
    if (n->discriminator) {
      if (fwd) tm.d = n->model;
      else tm.d_rev = n->model;
    } else {
      if (fwd) tm.g = n->model;
      else tm.g_rev = n->model;
    }
  }
  i2i_train_params p;
  i2i_train_default_params(&p, cyc ? I2I_TRAIN_CYCLEGAN : I2I_TRAIN_PIX2PIX);
  p.size = size;
  p.batch = batch;
  p.iters = iters;
  p.augment = 0;
  p.pool_size = pool;
  p.lambda_identity = (float)identity;
  p.seed = (uint64_t)seed;
  p.lr = (float)lr;
  i2i_trainer *tr;
  if (i2i_trainer_create(ctx, &p, &tm, &tr)) {
    fprintf(stderr, "trainer: %s\n", i2i_ctx_errmsg(ctx));
    return 1;
  }
  convert_set_free(&set);
  i2i_trainer_set_pool_hook(tr, hook, &ch);
  size_t img = (size_t)size * size * 4;
  float *images = malloc(sizeof(float) * img * 2 * (size_t)batch * (size_t)steps);
  gchar *ib = g_build_filename(dir, "images.bin", NULL);
  f = fopen(ib, "rb");
  if (!f || fread(images, sizeof(float) * img * 2 * (size_t)batch, (size_t)steps, f) != (size_t)steps) {
    fprintf(stderr, "cannot read %s\n", ib);
    return 2;
  }
  fclose(f);
  g_free(ib);
  g_mkdir_with_parents(out, 0777);
  static const char *roles[4] = {"G", "G_REV", "D", "D_REV"};
  for (int s = 0; s < steps; s++) {
    for (int i = 0; i < batch; i++) {
      const float *a = images + img * (size_t)(((size_t)s * batch + i) * 2), *b = a + img;
      if (i2i_trainer_set_images(tr, i, a, size, size, b, size, size)) {
        fprintf(stderr, "images: %s\n", i2i_ctx_errmsg(ctx));
        return 1;
      }
    }
    i2i_train_report r;
    if (i2i_trainer_step(tr, &r)) {
      fprintf(stderr, "step %d: %s\n", s, i2i_ctx_errmsg(ctx));
      return 1;
    }
    gchar *lp = g_strdup_printf("%s/step%d.txt", out, s);
    FILE *lf = fopen(lp, "w");
    fprintf(lf, "loss.lr %.17g\nloss.d %.17g\nloss.g %.17g\n", r.lr, r.loss_d, r.loss_g);
    if (cyc)
      fprintf(lf, "loss.d_a %.17g\nloss.d_b %.17g\nloss.gan_a %.17g\nloss.gan_b %.17g\nloss.cycle_a %.17g\nloss.cycle_b %.17g\n"
              "loss.id_a %.17g\nloss.id_b %.17g\n", r.loss_d_a, r.loss_d_b, r.loss_gan_a, r.loss_gan_b, r.loss_cycle_a,
              r.loss_cycle_b, r.loss_id_a, r.loss_id_b);
    else
      fprintf(lf, "loss.d_fake %.17g\nloss.d_real %.17g\nloss.gan %.17g\nloss.l1 %.17g\n", r.loss_d_fake, r.loss_d_real,
              r.loss_gan, r.loss_l1);
    gchar *bp = g_strdup_printf("%s/step%d.bin", out, s);
    FILE *bf = fopen(bp, "wb");
    size_t off = 0;
    for (int k = 0; k < 4; k++) {
      size_t nt = i2i_trainer_tensor_count(tr, k);
      for (size_t t = 0; t < nt; t++) {
        const char *name;
        size_t numel;
        int trainable;
        i2i_trainer_tensor_info(tr, k, t, &name, &numel, &trainable);
        float *buf = malloc(numel * sizeof(float));
        static const i2i_train_tensor whats[4] = {I2I_TENSOR_VALUE, I2I_TENSOR_GRAD, I2I_TENSOR_ADAM_M, I2I_TENSOR_ADAM_V};
        static const char *wnames[4] = {"value", "grad", "adam_m", "adam_v"};
        for (int what = 0; what < (trainable ? 4 : 1); what++) {
          i2i_trainer_read(tr, k, name, whats[what], buf, numel);
          fwrite(buf, sizeof(float), numel, bf);
          fprintf(lf, "tensor %s/%s/%s %zu %zu\n", roles[k], wnames[what], name, off, numel);
          off += numel;
        }
        free(buf);
      }
    }
    fclose(bf);
    fclose(lf);
    g_free(lp);
    g_free(bp);
  }
  free(images);
  i2i_trainer_free(tr);
  i2i_ctx_free(ctx);
  return 0;
}
