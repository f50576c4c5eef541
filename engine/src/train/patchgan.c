/* train/patchgan.c: mmagic's PatchDiscriminator built with the graph builder, for checkpoints
 * that lack discriminators (the published files), with mmagic's generation_init_weights:
 * convolution weights N(0, 0.02), biases 0, BatchNorm weights N(1, 0.02), biases 0, running
 * mean 0 and variance 1.
 *
 * The graph and the initializer names are those `i2i convert` gives a converted discriminator
 * (model.<i>.conv.*, model.<i>.bn.* as i2i.batchnorm InstanceNormalization nodes, model.<n+1>.*),
 * so a built one and a converted one train, save and resume alike. Normals come from Philox
 * (Box-Muller) keyed by the seed; they do not reproduce torch's generator.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "train.h"

typedef struct {
  i2i_ctx *ctx;
  i2i_builder *b;
  uint64_t seed;
  uint32_t tensor;      /* index of the tensor being drawn (its random stream) */
  i2i_status st;
  char bn_list[4096];
} pg;

/* n values N(mean, std) into dst. */
static void normals(pg *g, float *dst, size_t n, float mean, float std) {
  uint32_t t = g->tensor++;
  for (size_t i = 0; i < n; i += 2) {
    uint32_t w[4];
    train_rand4(g->seed, RNG_INIT, (uint64_t)i, t, 0, w);
    double u1 = ((double)w[0] + 1.0) / 4294967297.0, u2 = (double)w[1] / 4294967296.0;
    double r = sqrt(-2.0 * log(u1));
    dst[i] = (float)(mean + std * r * cos(2.0 * M_PI * u2));
    if (i + 1 < n) dst[i + 1] = (float)(mean + std * r * sin(2.0 * M_PI * u2));
  }
}

static void init(pg *g, const char *name, int rank, const int64_t *dims, int kind) {
  if (g->st) return;
  size_t n = 1;
  for (int i = 0; i < rank; i++) n *= (size_t)dims[i];
  float *v = i2i_alloc(g->ctx, n * sizeof(float));
  if (!v) {
    g->st = i2i_fail(g->ctx, I2I_E_NOMEM, "out of memory building a discriminator");
    return;
  }
  if (kind == 0) normals(g, v, n, 0.0f, 0.02f);
  else if (kind == 1) normals(g, v, n, 1.0f, 0.02f);
  else
    for (size_t i = 0; i < n; i++) v[i] = kind == 2 ? 0.0f : 1.0f;
  g->st = i2i_builder_add_initializer(g->b, name, 1, rank, dims, v);
  i2i_dealloc(g->ctx, v);
}

static void node(pg *g, const char *op, const char *name, int nin, const char *const *in, const char *out, int na,
                 const i2i_attr *a) {
  if (g->st) return;
  const char *outs[1] = {out};
  g->st = i2i_builder_add_node(g->b, op, name, nin, in, 1, outs, na, a);
}

i2i_status patchgan_build(i2i_ctx *ctx, int cin, int base, int n_layers, bool bn, uint64_t seed, i2i_model **out) {
  *out = NULL;
  if (cin < 1 || cin > 64 || base < 1 || base > 4096 || n_layers < 1 || n_layers > 8)
    return i2i_fail(ctx, I2I_E_ARG, "PatchGAN with %d input channels, %d base channels, %d layers", cin, base, n_layers);
  pg g = {ctx, NULL, seed, 0, I2I_OK, ""};
  if ((g.st = i2i_builder_new(ctx, &g.b))) return g.st;
  g.st = i2i_builder_add_input(g.b, "input", cin);
  char x[64] = "input", k[64], kb[64], nm[64], nn[64], lr[64];
  int64_t prev = cin, seen_c[16];
  int n_seen = 0;
  for (int i = 0; i <= n_layers && !g.st; i++) {
    int64_t mult = i < 3 ? ((int64_t)1 << i) : 8, co = (int64_t)base * (mult > 8 ? 8 : mult);
    bool bias = i == 0 || !bn;
    snprintf(k, sizeof k, "model.%d.conv.weight", i);
    snprintf(kb, sizeof kb, "model.%d.conv.bias", i);
    snprintf(nm, sizeof nm, "model.%d.conv", i);
    int64_t dw[4] = {co, prev, 4, 4}, db[1] = {co};
    init(&g, k, 4, dw, 0);
    if (bias) init(&g, kb, 1, db, 2);
    int64_t ks[2] = {4, 4}, st[2] = {i < n_layers ? 2 : 1, i < n_layers ? 2 : 1}, pd[4] = {1, 1, 1, 1}, dl[2] = {1, 1};
    i2i_attr ca[5] = {
      {.name = "kernel_shape", .type = I2I_ATTR_INTS, .ints = ks, .n_ints = 2},
      {.name = "strides", .type = I2I_ATTR_INTS, .ints = st, .n_ints = 2},
      {.name = "pads", .type = I2I_ATTR_INTS, .ints = pd, .n_ints = 4},
      {.name = "dilations", .type = I2I_ATTR_INTS, .ints = dl, .n_ints = 2},
      {.name = "group", .type = I2I_ATTR_INT, .i = 1},
    };
    const char *cin3[3] = {x, k, kb};
    node(&g, "Conv", nm, bias ? 3 : 2, cin3, nm, 5, ca);
    const char *an = nm;
    if (i > 0) {
      i2i_attr ea = {.name = "epsilon", .type = I2I_ATTR_FLOAT, .f = 1e-5f};
      char sc[80], bi[80];
      if (bn) {
        snprintf(nn, sizeof nn, "model.%d.bn", i);
        char rm[80], rv[80];
        snprintf(sc, sizeof sc, "%s.weight", nn);
        snprintf(bi, sizeof bi, "%s.bias", nn);
        snprintf(rm, sizeof rm, "%s.running_mean", nn);
        snprintf(rv, sizeof rv, "%s.running_var", nn);
        init(&g, sc, 1, db, 1);
        init(&g, bi, 1, db, 2);
        init(&g, rm, 1, db, 2);
        init(&g, rv, 1, db, 3);
        size_t l = strlen(g.bn_list);
        snprintf(g.bn_list + l, sizeof g.bn_list - l, "%s%s", l ? "," : "", nn);
      } else {
        snprintf(nn, sizeof nn, "model.%d.in", i);
        snprintf(sc, sizeof sc, "i2i.ones.%lld", (long long)co);
        snprintf(bi, sizeof bi, "i2i.zeros.%lld", (long long)co);
        bool seen = false;
        for (int j = 0; j < n_seen; j++) seen |= seen_c[j] == co;
        if (!seen) {
          seen_c[n_seen++] = co;
          init(&g, sc, 1, db, 3);
          init(&g, bi, 1, db, 2);
        }
      }
      const char *nin[3] = {nm, sc, bi};
      node(&g, "InstanceNormalization", nn, 3, nin, nn, 1, &ea);
      an = nn;
    }
    snprintf(lr, sizeof lr, "model.%d.lrelu", i);
    i2i_attr la = {.name = "alpha", .type = I2I_ATTR_FLOAT, .f = 0.2f};
    const char *ain[1] = {an};
    node(&g, "LeakyRelu", lr, 1, ain, lr, 1, &la);
    snprintf(x, sizeof x, "%s", lr);
    prev = co;
  }
  snprintf(k, sizeof k, "model.%d.weight", n_layers + 1);
  snprintf(kb, sizeof kb, "model.%d.bias", n_layers + 1);
  int64_t dw[4] = {1, prev, 4, 4}, db[1] = {1};
  init(&g, k, 4, dw, 0);
  init(&g, kb, 1, db, 2);
  int64_t ks[2] = {4, 4}, s1[2] = {1, 1}, pd[4] = {1, 1, 1, 1}, dl[2] = {1, 1};
  i2i_attr ca[5] = {
    {.name = "kernel_shape", .type = I2I_ATTR_INTS, .ints = ks, .n_ints = 2},
    {.name = "strides", .type = I2I_ATTR_INTS, .ints = s1, .n_ints = 2},
    {.name = "pads", .type = I2I_ATTR_INTS, .ints = pd, .n_ints = 4},
    {.name = "dilations", .type = I2I_ATTR_INTS, .ints = dl, .n_ints = 2},
    {.name = "group", .type = I2I_ATTR_INT, .i = 1},
  };
  const char *fin[3] = {x, k, kb};
  node(&g, "Conv", "model.final", 3, fin, "output", 5, ca);
  if (!g.st) g.st = i2i_builder_add_output(g.b, "output", 1);
  char arch[160];
  snprintf(arch, sizeof arch, "PatchDiscriminator, %d layers, %d channels, %s, %d input channels (new, N(0, 0.02))",
           n_layers + 2, base, bn ? "BatchNorm" : "InstanceNorm", cin);
  if (!g.st) g.st = i2i_builder_set_meta(g.b, "i2i.family", "patchgan");
  if (!g.st) g.st = i2i_builder_set_meta(g.b, "i2i.role", "discriminator");
  if (!g.st) g.st = i2i_builder_set_meta(g.b, "i2i.architecture", arch);
  if (!g.st && bn) g.st = i2i_builder_set_meta(g.b, "i2i.batchnorm", g.bn_list);
  if (g.st) {
    i2i_builder_free(g.b);
    return g.st;
  }
  return i2i_builder_finish(g.b, out);
}

i2i_status i2i_patchgan_new(i2i_ctx *ctx, int in_channels, int base_channels, int n_layers, int batchnorm, uint64_t seed,
                            i2i_model **out) {
  if (!ctx) return I2I_E_ARG;
  if (!out) return i2i_fail(ctx, I2I_E_ARG, "i2i_patchgan_new: NULL argument");
  return patchgan_build(ctx, in_channels, base_channels, n_layers, batchnorm != 0, seed, out);
}
