/* tests/gpu/models.c: ResNet and U-Net generator graphs with seeded random weights (models.h).
 *
 * Weights follow mmagic's init (conv N(0, 0.02), BatchNorm gamma N(1, 0.02)) with random biases
 * N(0, 0.05) so that every bias path is exercised, and random running statistics for the eval
 * mode. Names follow the converter's keys so messages read the same.
 */
#include "models.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void test_rng_seed(test_rng *r, uint64_t seed) { r->s = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull; }

static uint64_t next64(test_rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double test_rng_uniform(test_rng *r) { return (double)(next64(r) >> 11) * (1.0 / 9007199254740992.0); }

double test_rng_normal(test_rng *r) {
  double u = test_rng_uniform(r), v = test_rng_uniform(r);
  if (u < 1e-300) u = 1e-300;
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

typedef struct {
  i2i_builder *b;
  test_rng rng;
  i2i_status st;
  char bn_list[8192];
} gb;

static void chk(gb *g, i2i_status st) {
  if (!g->st) g->st = st;
}

static void init_tensor(gb *g, const char *name, int rank, const int64_t *dims, double mean, double sd) {
  if (g->st) return;
  size_t n = 1;
  for (int i = 0; i < rank; i++) n *= (size_t)dims[i];
  float *f = malloc(n * sizeof *f);
  if (!f) {
    g->st = I2I_E_NOMEM;
    return;
  }
  for (size_t i = 0; i < n; i++) f[i] = (float)(mean + sd * test_rng_normal(&g->rng));
  chk(g, i2i_builder_add_initializer(g->b, name, 1, rank, dims, f));
  free(f);
}

static void init_uniform(gb *g, const char *name, int64_t n, double lo, double hi) {
  if (g->st) return;
  float *f = malloc((size_t)n * sizeof *f);
  if (!f) {
    g->st = I2I_E_NOMEM;
    return;
  }
  for (int64_t i = 0; i < n; i++) f[i] = (float)(lo + (hi - lo) * test_rng_uniform(&g->rng));
  chk(g, i2i_builder_add_initializer(g->b, name, 1, 1, &n, f));
  free(f);
}

static void node(gb *g, const char *op, const char *name, int nin, const char *const *in, const char *out, int na,
                 const i2i_attr *a) {
  if (g->st) return;
  const char *outs[1] = {out};
  chk(g, i2i_builder_add_node(g->b, op, name, nin, in, 1, outs, na, a));
}

static void conv(gb *g, const char *nm, const char *x, bool transpose, int64_t cin, int64_t cout, int k, int s, int p,
                 int op, bool bias) {
  char wk[256], bk[256];
  snprintf(wk, sizeof wk, "%s.weight", nm);
  snprintf(bk, sizeof bk, "%s.bias", nm);
  int64_t d[4] = {transpose ? cin : cout, transpose ? cout : cin, k, k}, db[1] = {cout};
  init_tensor(g, wk, 4, d, 0.0, 0.02);
  if (bias) init_tensor(g, bk, 1, db, 0.0, 0.05);
  int64_t ks[2] = {k, k}, st[2] = {s, s}, pd[4] = {p, p, p, p}, opd[2] = {op, op}, dl[2] = {1, 1};
  i2i_attr a[6] = {
    {.name = "kernel_shape", .type = I2I_ATTR_INTS, .ints = ks, .n_ints = 2},
    {.name = "strides", .type = I2I_ATTR_INTS, .ints = st, .n_ints = 2},
    {.name = "pads", .type = I2I_ATTR_INTS, .ints = pd, .n_ints = 4},
    {.name = "dilations", .type = I2I_ATTR_INTS, .ints = dl, .n_ints = 2},
    {.name = "group", .type = I2I_ATTR_INT, .i = 1},
    {.name = "output_padding", .type = I2I_ATTR_INTS, .ints = opd, .n_ints = 2},
  };
  const char *in[3] = {x, wk, bk};
  node(g, transpose ? "ConvTranspose" : "Conv", nm, bias ? 3 : 2, in, nm, transpose && op ? 6 : 5, a);
}

static void instnorm(gb *g, const char *nm, const char *x, int64_t c, bool batchnorm) {
  char sk[256], bk[256], mk[256], vk[256];
  snprintf(sk, sizeof sk, "%s.weight", nm);
  snprintf(bk, sizeof bk, "%s.bias", nm);
  int64_t d[1] = {c};
  if (batchnorm) {
    init_tensor(g, sk, 1, d, 1.0, 0.02);
    init_tensor(g, bk, 1, d, 0.0, 0.05);
    snprintf(mk, sizeof mk, "%s.running_mean", nm);
    snprintf(vk, sizeof vk, "%s.running_var", nm);
    init_tensor(g, mk, 1, d, 0.0, 0.1);
    init_uniform(g, vk, c, 0.5, 1.5);
    size_t l = strlen(g->bn_list);
    snprintf(g->bn_list + l, sizeof g->bn_list - l, "%s%s", l ? "," : "", nm);
  } else {
    init_uniform(g, sk, c, 1.0, 1.0);
    init_uniform(g, bk, c, 0.0, 0.0);
  }
  const char *in[3] = {x, sk, bk};
  i2i_attr a = {.name = "epsilon", .type = I2I_ATTR_FLOAT, .f = 1e-5f};
  node(g, "InstanceNormalization", nm, 3, in, nm, 1, &a);
}

static void act(gb *g, const char *op, const char *nm, const char *x) {
  i2i_attr a = {.name = "alpha", .type = I2I_ATTR_FLOAT, .f = 0.2f};
  const char *in[1] = {x};
  node(g, op, nm, 1, in, nm, !strcmp(op, "LeakyRelu") ? 1 : 0, &a);
}

static void reflect_pad(gb *g, const char *nm, const char *x, int p) {
  char pn[64];
  snprintf(pn, sizeof pn, "%s.pads", nm);
  int64_t pads[8] = {0, 0, p, p, 0, 0, p, p}, n = 8;
  chk(g, i2i_builder_add_initializer(g->b, pn, 7, 1, &n, pads));
  const char *in[2] = {x, pn};
  i2i_attr a = {.name = "mode", .type = I2I_ATTR_STRING, .s = "reflect"};
  node(g, "Pad", nm, 2, in, nm, 1, &a);
}

static i2i_status finish(gb *g, i2i_model **out) {
  if (g->st) {
    i2i_builder_free(g->b);
    return g->st;
  }
  return i2i_builder_finish(g->b, out);
}

i2i_status test_build_resnet(i2i_ctx *ctx, int blocks, int ngf, uint64_t seed, i2i_model **out) {
  gb g;
  memset(&g, 0, sizeof g);
  test_rng_seed(&g.rng, seed);
  *out = NULL;
  i2i_status st = i2i_builder_new(ctx, &g.b);
  if (st) return st;
  chk(&g, i2i_builder_add_input(g.b, "input", 3));
  reflect_pad(&g, "model.0.pad", "input", 3);
  conv(&g, "model.0.conv", "model.0.pad", false, 3, ngf, 7, 1, 0, 0, true);
  instnorm(&g, "model.0.in", "model.0.conv", ngf, false);
  act(&g, "Relu", "model.0.relu", "model.0.in");
  char x[256] = "model.0.relu", nm[256], nn[256], rl[256];
  int64_t c = ngf;
  for (int i = 1; i <= 2; i++) {
    snprintf(nm, sizeof nm, "model.%d.conv", i);
    snprintf(nn, sizeof nn, "model.%d.in", i);
    snprintf(rl, sizeof rl, "model.%d.relu", i);
    conv(&g, nm, x, false, c, c * 2, 3, 2, 1, 0, true);
    instnorm(&g, nn, nm, c * 2, false);
    act(&g, "Relu", rl, nn);
    snprintf(x, sizeof x, "%s", rl);
    c *= 2;
  }
  for (int b = 0; b < blocks; b++) {
    int k = 3 + b;
    char p0[64], c0[64], n0[64], r0[64], p1[64], c1[64], n1[64], ad[64];
    snprintf(p0, sizeof p0, "model.%d.block.0.pad", k);
    snprintf(c0, sizeof c0, "model.%d.block.0.conv", k);
    snprintf(n0, sizeof n0, "model.%d.block.0.in", k);
    snprintf(r0, sizeof r0, "model.%d.block.0.relu", k);
    snprintf(p1, sizeof p1, "model.%d.block.1.pad", k);
    snprintf(c1, sizeof c1, "model.%d.block.1.conv", k);
    snprintf(n1, sizeof n1, "model.%d.block.1.in", k);
    snprintf(ad, sizeof ad, "model.%d.add", k);
    reflect_pad(&g, p0, x, 1);
    conv(&g, c0, p0, false, c, c, 3, 1, 0, 0, true);
    instnorm(&g, n0, c0, c, false);
    act(&g, "Relu", r0, n0);
    reflect_pad(&g, p1, r0, 1);
    conv(&g, c1, p1, false, c, c, 3, 1, 0, 0, true);
    instnorm(&g, n1, c1, c, false);
    const char *in2[2] = {x, n1};
    node(&g, "Add", ad, 2, in2, ad, 0, NULL);
    snprintf(x, sizeof x, "%s", ad);
  }
  for (int i = 0; i < 2; i++) {
    int k = 3 + blocks + i;
    snprintf(nm, sizeof nm, "model.%d.conv", k);
    snprintf(nn, sizeof nn, "model.%d.in", k);
    snprintf(rl, sizeof rl, "model.%d.relu", k);
    conv(&g, nm, x, true, c, c / 2, 3, 2, 1, 1, true);
    instnorm(&g, nn, nm, c / 2, false);
    act(&g, "Relu", rl, nn);
    snprintf(x, sizeof x, "%s", rl);
    c /= 2;
  }
  char pn[64], cn[64];
  snprintf(pn, sizeof pn, "model.%d.pad", 5 + blocks);
  snprintf(cn, sizeof cn, "model.%d.conv", 5 + blocks);
  reflect_pad(&g, pn, x, 3);
  conv(&g, cn, pn, false, c, 3, 7, 1, 0, 0, true);
  const char *tin[1] = {cn};
  node(&g, "Tanh", "model.tanh", 1, tin, "output", 0, NULL);
  chk(&g, i2i_builder_add_output(g.b, "output", 3));
  chk(&g, i2i_builder_set_meta(g.b, "i2i.family", "resnet"));
  return finish(&g, out);
}

/* Level d of the U-Net on input x; writes the level's output name into out. */
static void unet_level(gb *g, int d, int depth, int ngf, const char *x, int64_t outer, char *out, size_t outlen) {
  if (g->st) return;
  char S[64], h[96], nm[96], down[96], sub[96], ur[96], up[96];
  snprintf(S, sizeof S, "u%d.", d);
  int64_t inner = (int64_t)ngf << (d < 3 ? d : 3);
  bool outermost = d == 0, innermost = d == depth - 1;
  const char *xin = x;
  h[0] = 0;
  if (!outermost) {
    snprintf(h, sizeof h, "%slrelu", S);
    act(g, "LeakyRelu", h, x);
    xin = h;
  }
  snprintf(nm, sizeof nm, "%sdown", S);
  conv(g, nm, xin, false, outer, inner, 4, 2, 1, 0, false);
  snprintf(down, sizeof down, "%s", nm);
  if (!outermost && !innermost) {
    snprintf(nm, sizeof nm, "%sdown_bn", S);
    instnorm(g, nm, down, inner, true);
    snprintf(down, sizeof down, "%s", nm);
  }
  if (innermost)
    snprintf(sub, sizeof sub, "%s", down);
  else
    unet_level(g, d + 1, depth, ngf, down, inner, sub, sizeof sub);
  snprintf(ur, sizeof ur, "%suprelu", S);
  act(g, "Relu", ur, sub);
  int64_t upin = innermost ? inner : inner * 2;
  snprintf(nm, sizeof nm, "%sup", S);
  if (outermost) {
    conv(g, nm, ur, true, upin, outer, 4, 2, 1, 0, true);
    const char *tin[1] = {nm};
    node(g, "Tanh", "u.tanh", 1, tin, "output", 0, NULL);
    snprintf(out, outlen, "output");
    return;
  }
  conv(g, nm, ur, true, upin, outer, 4, 2, 1, 0, false);
  snprintf(up, sizeof up, "%sup_bn", S);
  instnorm(g, up, nm, outer, true);
  if (!innermost && d >= depth - 4 && d <= depth - 2) {
    char dr[96];
    snprintf(dr, sizeof dr, "%sdropout", S);
    const char *rn = "i2i.dropout.ratio";
    if (d == depth - 2) {
      float r = 0.5f;
      chk(g, i2i_builder_add_initializer(g->b, rn, 1, 0, NULL, &r));
    }
    const char *in[2] = {up, rn};
    node(g, "Dropout", dr, 2, in, dr, 0, NULL);
    snprintf(up, sizeof up, "%s", dr);
  }
  char cat[96];
  snprintf(cat, sizeof cat, "%scat", S);
  const char *in2[2] = {h, up};
  i2i_attr a = {.name = "axis", .type = I2I_ATTR_INT, .i = 1};
  node(g, "Concat", cat, 2, in2, cat, 1, &a);
  snprintf(out, outlen, "%s", cat);
}

i2i_status test_build_unet(i2i_ctx *ctx, int depth, int ngf, uint64_t seed, i2i_model **out) {
  gb g;
  memset(&g, 0, sizeof g);
  test_rng_seed(&g.rng, seed);
  *out = NULL;
  if (depth < 2 || depth > 10) return I2I_E_ARG;
  i2i_status st = i2i_builder_new(ctx, &g.b);
  if (st) return st;
  chk(&g, i2i_builder_add_input(g.b, "input", 3));
  char o[96];
  unet_level(&g, 0, depth, ngf, "input", 3, o, sizeof o);
  chk(&g, i2i_builder_add_output(g.b, "output", 3));
  chk(&g, i2i_builder_set_meta(g.b, "i2i.family", "unet"));
  if (g.bn_list[0]) chk(&g, i2i_builder_set_meta(g.b, "i2i.batchnorm", g.bn_list));
  return finish(&g, out);
}
