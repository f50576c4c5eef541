/* convert.c: PyTorch checkpoints into engine models: network discovery, key maps, graphs.
 *
 * Keys are grouped into networks (mmagic `generators.<domain>.`, older `generators.a/b` and
 * `generator.`, or one bare network such as the original authors' `latest_net_G.pth`), the
 * original authors' keys are renamed to mmagic's (mmagic.md 11), and each network is built with
 * the engine's graph builder: ResnetGenerator, UnetGenerator or PatchDiscriminator, every key
 * checked for presence and shape. BGR weights are folded into RGB at the first and last layers.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"
#include "pth.h"

/* ---- names from the file, for display ------------------------------------------------------ */

/* Bytes of a buffer for a name in a message (longer names end in "..."). */
#define SHOWN_LEN 640

/* The display form of a NUL-terminated name from the checkpoint (a key, a prefix, a domain) or
 * of a file name, bounded by buf[0..len): control characters and invalid UTF-8 as \xNN
 * (pth_shown). Returns buf. */
static const char *shown(const char *s, char *buf, size_t len) { return pth_shown(s, s ? strlen(s) : 0, buf, len); }

/* The whole display form of `s`, newly allocated; the caller frees it with g_free. */
static char *shown_dup(const char *s) {
  size_t len = s ? strlen(s) : 0, n;
  if (__builtin_mul_overflow(len, (size_t)4, &n) || __builtin_add_overflow(n, (size_t)1, &n)) n = SHOWN_LEN;
  char *b = g_malloc(n);
  pth_shown(s, len, b, n);
  return b;
}

/* ---- one network's keys ------------------------------------------------------------------ */

typedef struct {
  char *key;             /* mmagic-style suffix within the network */
  const char *orig;      /* the key in the file */
  const pth_tensor *t;
  bool used;
  bool ignorable;        /* num_batches_tracked, InstanceNorm running stats of old files */
} nkey;

typedef enum { ROLE_ANY, ROLE_G, ROLE_D } net_role;
typedef enum { ARCH_NONE, ARCH_RESNET, ARCH_UNET, ARCH_PATCH } net_arch;

typedef struct {
  char prefix[160];      /* key prefix in the file ("generators.summer.", "") */
  char domain[64];       /* "summer", "a", "" */
  net_role role;
  bool junyanz;
  struct {               /* the original authors' layout, when junyanz: for naming their keys */
    int kind, nb, depth, nl; /* 1 ResNet (nb blocks, drop), 2 U-Net (depth), 3 NLayer (nl, bn) */
    bool drop, bn;
  } jz;
  GArray *keys;          /* nkey */
} netkeys;

typedef struct {
  i2i_ctx *ctx;
  i2i_builder *b;
  netkeys *nk;
  char *err;
  size_t errlen;
  bool failed;
  bool bgr;              /* fold BGR into RGB */
  GString *bn_list;      /* i2i.batchnorm */
  GHashTable *shared;    /* names of shared initializers already added */
} gb;

static bool gfail(gb *g, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool gfail(gb *g, const char *fmt, ...) {
  if (g->failed) return false;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g->err, g->errlen, fmt, ap);
  va_end(ap);
  g->failed = true;
  return false;
}

static nkey *find_key(netkeys *nk, const char *k) {
  for (guint i = 0; i < nk->keys->len; i++) {
    nkey *e = &g_array_index(nk->keys, nkey, i);
    if (!strcmp(e->key, k)) return e;
  }
  return NULL;
}

/* True when some key of the network starts with the formatted prefix. The architecture's shape
 * (block count, depth, layer count, options) is read from module prefixes, not from single
 * keys, so that one missing tensor is reported by its own name instead of changing the shape. */
static bool has_prefix(netkeys *nk, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool has_prefix(netkeys *nk, const char *fmt, ...) {
  char p[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p, sizeof p, fmt, ap);
  va_end(ap);
  size_t l = strlen(p);
  for (guint i = 0; i < nk->keys->len; i++)
    if (!strncmp(g_array_index(nk->keys, nkey, i).key, p, l)) return true;
  return false;
}

/* True when some key starts with prefix p and does not go on with `deeper` (the next level's
 * module path): the level holds a key of its own. */
static bool has_own_key(netkeys *nk, const char *p, const char *deeper) {
  size_t l = strlen(p), dl = strlen(deeper);
  for (guint i = 0; i < nk->keys->len; i++) {
    const char *k = g_array_index(nk->keys, nkey, i).key;
    if (!strncmp(k, p, l) && strncmp(k + l, deeper, dl)) return true;
  }
  return false;
}

static void shape_str(const pth_tensor *t, char *buf, size_t len) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, len - o, "[");
  for (int i = 0; i < t->rank && o < len; i++) o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
  if (o < len) snprintf(buf + o, len - o, "]");
}

static void missing_key_name(const netkeys *nk, const char *k, char *out, size_t len);

/* The tensor at key `k` with `rank` dims equal to `d` (-1: any). Marks it used. */
static const pth_tensor *need(gb *g, const char *k, int rank, const int64_t *d) {
  if (g->failed) return NULL;
  nkey *e = find_key(g->nk, k);
  if (!e) {
    char name[1536];
    missing_key_name(g->nk, k, name, sizeof name);
    gfail(g, "missing key %s", name);
    return NULL;
  }
  bool ok = e->t->rank == rank && e->t->dtype == PTH_F32;
  for (int i = 0; ok && i < rank; i++)
    if (d[i] >= 0 && e->t->dims[i] != d[i]) ok = false;
  if (!ok) {
    char have[96], want[96] = "[";
    shape_str(e->t, have, sizeof have);
    for (int i = 0; i < rank; i++) {
      char x[24];
      if (d[i] >= 0) snprintf(x, sizeof x, "%s%lld", i ? ", " : "", (long long)d[i]);
      else snprintf(x, sizeof x, "%s?", i ? ", " : "");
      g_strlcat(want, x, sizeof want);
    }
    g_strlcat(want, "]", sizeof want);
    char sk[SHOWN_LEN];
    gfail(g, "key '%s' has shape %s (%s), expected %s (float)", shown(e->orig, sk, sizeof sk), have,
          pth_dtype_name(e->t->stored_dtype), want);
    return NULL;
  }
  e->used = true;
  return e->t;
}

static void chk(gb *g, i2i_status st) {
  if (st && !g->failed) gfail(g, "building the graph: %s", i2i_ctx_errmsg(g->ctx));
}

/* Adds a float initializer, optionally reversing 3-channel groups along `rev_axis` (BGR->RGB). */
static void add_init(gb *g, const char *name, const pth_tensor *t, int rev_axis) {
  if (g->failed) return;
  int64_t dims[PTH_MAX_RANK];
  for (int i = 0; i < t->rank; i++) dims[i] = t->dims[i];
  const float *src = t->data;
  float *tmp = NULL;
  if (rev_axis >= 0 && g->bgr) {
    int64_t n = t->dims[rev_axis];
    if (n % 3) {
      gfail(g, "cannot fold BGR into '%s': axis %d has %lld channels", name, rev_axis, (long long)n);
      return;
    }
    size_t outer = 1, inner = 1;
    for (int i = 0; i < rev_axis; i++) outer *= (size_t)t->dims[i];
    for (int i = rev_axis + 1; i < t->rank; i++) inner *= (size_t)t->dims[i];
    tmp = g_try_malloc(sizeof(float) * t->numel);
    if (!tmp) {
      gfail(g, "out of memory");
      return;
    }
    for (size_t o = 0; o < outer; o++)
      for (int64_t c = 0; c < n; c++) {
        int64_t src_c = c - c % 3 + (2 - c % 3);
        memcpy(tmp + (o * (size_t)n + (size_t)c) * inner, src + (o * (size_t)n + (size_t)src_c) * inner, sizeof(float) * inner);
      }
    src = tmp;
  }
  chk(g, i2i_builder_add_initializer(g->b, name, 1, t->rank, dims, src));
  g_free(tmp);
}

/* Shared constant tensors (InstanceNorm ones/zeros, pads) are added once. */
static const char *shared_const(gb *g, const char *name, int dtype, int64_t n, double v, const int64_t *ints) {
  if (g->failed) return name;
  if (g_hash_table_contains(g->shared, name)) return g_hash_table_lookup(g->shared, name);
  char *key = g_strdup(name);
  g_hash_table_insert(g->shared, key, key);
  if (dtype == 1) {
    float *f = g_new(float, n);
    for (int64_t i = 0; i < n; i++) f[i] = (float)v;
    chk(g, i2i_builder_add_initializer(g->b, name, 1, 1, &n, f));
    g_free(f);
  } else {
    chk(g, i2i_builder_add_initializer(g->b, name, 7, 1, &n, ints));
  }
  return key;
}

static void node(gb *g, const char *op, const char *name, int nin, const char *const *in, const char *out, int na,
                 const i2i_attr *a) {
  if (g->failed) return;
  const char *outs[1] = {out};
  chk(g, i2i_builder_add_node(g->b, op, name, nin, in, 1, outs, na, a));
}

/* Conv (or ConvTranspose) named `nm` with weights `wkey`/`bkey` (bkey NULL: none). */
static void conv(gb *g, const char *nm, const char *x, const char *out, bool transpose, const pth_tensor *w,
                 const pth_tensor *bias, const char *wkey, const char *bkey, int k, int s, int p, int op,
                 int rev_w_axis, bool rev_bias) {
  if (g->failed) return;
  add_init(g, wkey, w, rev_w_axis);
  if (bias) add_init(g, bkey, bias, rev_bias ? 0 : -1);
  int64_t ks[2] = {k, k}, st[2] = {s, s}, pd[4] = {p, p, p, p}, opd[2] = {op, op}, dl[2] = {1, 1};
  i2i_attr a[6] = {
    {.name = "kernel_shape", .type = I2I_ATTR_INTS, .ints = ks, .n_ints = 2},
    {.name = "strides", .type = I2I_ATTR_INTS, .ints = st, .n_ints = 2},
    {.name = "pads", .type = I2I_ATTR_INTS, .ints = pd, .n_ints = 4},
    {.name = "dilations", .type = I2I_ATTR_INTS, .ints = dl, .n_ints = 2},
    {.name = "group", .type = I2I_ATTR_INT, .i = 1},
    {.name = "output_padding", .type = I2I_ATTR_INTS, .ints = opd, .n_ints = 2},
  };
  const char *in[3] = {x, wkey, bkey};
  node(g, transpose ? "ConvTranspose" : "Conv", nm, bias ? 3 : 2, in, out, transpose && op ? 6 : 5, a);
}

static void instnorm(gb *g, const char *nm, const char *x, const char *out, int64_t c) {
  char on[64], zn[64];
  snprintf(on, sizeof on, "i2i.ones.%lld", (long long)c);
  snprintf(zn, sizeof zn, "i2i.zeros.%lld", (long long)c);
  const char *in[3] = {x, shared_const(g, on, 1, c, 1.0, NULL), shared_const(g, zn, 1, c, 0.0, NULL)};
  i2i_attr a = {.name = "epsilon", .type = I2I_ATTR_FLOAT, .f = 1e-5f};
  node(g, "InstanceNormalization", nm, 3, in, out, 1, &a);
}

/* A BatchNorm layer as InstanceNormalization named after its key prefix, with its running
 * statistics kept as initializers (design.md, ONNX files as the weights format). */
static void batchnorm(gb *g, const char *prefix, const char *x, const char *out, int64_t c) {
  char k[4][256];
  static const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
  const int64_t d[1] = {c};
  for (int i = 0; i < 4; i++) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", prefix, suffix[i]);
    snprintf(k[i], sizeof k[i], "%s", key);
    const pth_tensor *t = need(g, key, 1, d);
    if (!t) return;
    add_init(g, key, t, -1);
  }
  char nbt[256];
  snprintf(nbt, sizeof nbt, "%s.num_batches_tracked", prefix);
  nkey *e = find_key(g->nk, nbt);
  if (e) e->used = true;
  const char *in[3] = {x, k[0], k[1]};
  i2i_attr a = {.name = "epsilon", .type = I2I_ATTR_FLOAT, .f = 1e-5f};
  node(g, "InstanceNormalization", prefix, 3, in, out, 1, &a);
  if (g->bn_list->len) g_string_append_c(g->bn_list, ',');
  g_string_append(g->bn_list, prefix);
}

static void act(gb *g, const char *op, const char *nm, const char *x, const char *out) {
  i2i_attr a = {.name = "alpha", .type = I2I_ATTR_FLOAT, .f = 0.2f};
  const char *in[1] = {x};
  node(g, op, nm, 1, in, out, !strcmp(op, "LeakyRelu") ? 1 : 0, &a);
}

static void reflect_pad(gb *g, const char *nm, const char *x, const char *out, int p) {
  char pn[64];
  snprintf(pn, sizeof pn, "i2i.pads.%d", p);
  int64_t pads[8] = {0, 0, p, p, 0, 0, p, p};
  const char *in[2] = {x, shared_const(g, pn, 7, 8, 0, pads)};
  i2i_attr a = {.name = "mode", .type = I2I_ATTR_STRING, .s = "reflect"};
  node(g, "Pad", nm, 2, in, out, 1, &a);
}

static void dropout(gb *g, const char *nm, const char *x, const char *out) {
  float r = 0.5f;
  const char *rn = "i2i.dropout.ratio";
  if (!g_hash_table_contains(g->shared, rn)) {
    char *key = g_strdup(rn);
    g_hash_table_insert(g->shared, key, key);
    chk(g, i2i_builder_add_initializer(g->b, rn, 1, 0, NULL, &r));
  }
  const char *in[2] = {x, rn};
  node(g, "Dropout", nm, 2, in, out, 0, NULL);
}

/* ---- architectures ----------------------------------------------------------------------- */

static int count_resnet_blocks(netkeys *nk) {
  int n = 0;
  while (n < 64 && has_prefix(nk, "model.%d.block.", 3 + n)) n++;
  return n;
}

static void build_resnet(gb *g, char *arch, size_t archlen) {
  netkeys *nk = g->nk;
  const int64_t d0[4] = {-1, -1, 7, 7};
  const pth_tensor *w0 = need(g, "model.0.conv.weight", 4, d0);
  if (!w0) return;
  int64_t ngf = w0->dims[0], cin = w0->dims[1];
  int nb = count_resnet_blocks(nk);
  bool drop = has_prefix(nk, "model.3.block.2.");
  snprintf(arch, archlen, "ResnetGenerator, %d blocks, %lld channels%s", nb, (long long)ngf, drop ? ", dropout" : "");
  char x[256], y[256], k1[256], k2[256];
  i2i_builder_add_input(g->b, "input", (int)cin);
  /* model.0: reflect pad 3, conv 7x7, IN, ReLU */
  int64_t d[4] = {ngf, cin, 7, 7}, db[1] = {ngf};
  reflect_pad(g, "model.0.pad", "input", "model.0.pad", 3);
  conv(g, "model.0.conv", "model.0.pad", "model.0.conv", false, need(g, "model.0.conv.weight", 4, d),
       need(g, "model.0.conv.bias", 1, db), "model.0.conv.weight", "model.0.conv.bias", 7, 1, 0, 0, 1, false);
  instnorm(g, "model.0.in", "model.0.conv", "model.0.in", ngf);
  act(g, "Relu", "model.0.relu", "model.0.in", "model.0.relu");
  snprintf(x, sizeof x, "model.0.relu");
  int64_t c = ngf;
  for (int i = 1; i <= 2; i++) {
    int64_t dw[4] = {c * 2, c, 3, 3}, dbb[1] = {c * 2};
    snprintf(k1, sizeof k1, "model.%d.conv.weight", i);
    snprintf(k2, sizeof k2, "model.%d.conv.bias", i);
    char nm[64], inn[64], rl[64];
    snprintf(nm, sizeof nm, "model.%d.conv", i);
    snprintf(inn, sizeof inn, "model.%d.in", i);
    snprintf(rl, sizeof rl, "model.%d.relu", i);
    conv(g, nm, x, nm, false, need(g, k1, 4, dw), need(g, k2, 1, dbb), k1, k2, 3, 2, 1, 0, -1, false);
    instnorm(g, inn, nm, inn, c * 2);
    act(g, "Relu", rl, inn, rl);
    snprintf(x, sizeof x, "%s", rl);
    c *= 2;
  }
  for (int b = 0; b < nb; b++) {
    int k = 3 + b;
    int64_t dw[4] = {c, c, 3, 3}, dbb[1] = {c};
    char p0[64], c0[64], n0[64], r0[64], dr[64], p1[64], c1[64], n1[64], ad[64];
    snprintf(p0, sizeof p0, "model.%d.block.0.pad", k);
    snprintf(c0, sizeof c0, "model.%d.block.0.conv", k);
    snprintf(n0, sizeof n0, "model.%d.block.0.in", k);
    snprintf(r0, sizeof r0, "model.%d.block.0.relu", k);
    snprintf(dr, sizeof dr, "model.%d.block.1.dropout", k);
    int second = drop ? 2 : 1;
    snprintf(p1, sizeof p1, "model.%d.block.%d.pad", k, second);
    snprintf(c1, sizeof c1, "model.%d.block.%d.conv", k, second);
    snprintf(n1, sizeof n1, "model.%d.block.%d.in", k, second);
    snprintf(ad, sizeof ad, "model.%d.add", k);
    reflect_pad(g, p0, x, p0, 1);
    snprintf(k1, sizeof k1, "%s.weight", c0);
    snprintf(k2, sizeof k2, "%s.bias", c0);
    conv(g, c0, p0, c0, false, need(g, k1, 4, dw), need(g, k2, 1, dbb), k1, k2, 3, 1, 0, 0, -1, false);
    instnorm(g, n0, c0, n0, c);
    act(g, "Relu", r0, n0, r0);
    const char *mid = r0;
    if (drop) {
      dropout(g, dr, r0, dr);
      mid = dr;
    }
    reflect_pad(g, p1, mid, p1, 1);
    snprintf(k1, sizeof k1, "%s.weight", c1);
    snprintf(k2, sizeof k2, "%s.bias", c1);
    conv(g, c1, p1, c1, false, need(g, k1, 4, dw), need(g, k2, 1, dbb), k1, k2, 3, 1, 0, 0, -1, false);
    instnorm(g, n1, c1, n1, c);
    const char *in2[2] = {x, n1};
    node(g, "Add", ad, 2, in2, ad, 0, NULL);
    snprintf(x, sizeof x, "%s", ad);
  }
  for (int i = 0; i < 2; i++) {
    int k = 3 + nb + i;
    int64_t dw[4] = {c, c / 2, 3, 3}, dbb[1] = {c / 2};
    char nm[64], inn[64], rl[64];
    snprintf(nm, sizeof nm, "model.%d.conv", k);
    snprintf(inn, sizeof inn, "model.%d.in", k);
    snprintf(rl, sizeof rl, "model.%d.relu", k);
    snprintf(k1, sizeof k1, "%s.weight", nm);
    snprintf(k2, sizeof k2, "%s.bias", nm);
    conv(g, nm, x, nm, true, need(g, k1, 4, dw), need(g, k2, 1, dbb), k1, k2, 3, 2, 1, 1, -1, false);
    instnorm(g, inn, nm, inn, c / 2);
    act(g, "Relu", rl, inn, rl);
    snprintf(x, sizeof x, "%s", rl);
    c /= 2;
  }
  int k = 5 + nb;
  char pn[64], cn[64];
  snprintf(pn, sizeof pn, "model.%d.pad", k);
  snprintf(cn, sizeof cn, "model.%d.conv", k);
  snprintf(k1, sizeof k1, "%s.weight", cn);
  snprintf(k2, sizeof k2, "%s.bias", cn);
  int64_t dw[4] = {3, c, 7, 7}, dbb[1] = {3};
  reflect_pad(g, pn, x, pn, 3);
  conv(g, cn, pn, cn, false, need(g, k1, 4, dw), need(g, k2, 1, dbb), k1, k2, 7, 1, 0, 0, 0, true);
  act(g, "Tanh", "model.tanh", cn, "output");
  snprintf(y, sizeof y, "%d", nb);
  chk(g, i2i_builder_add_output(g->b, "output", 3));
  if (!g->failed) {
    chk(g, i2i_builder_set_meta(g->b, "i2i.family", "resnet"));
    chk(g, i2i_builder_set_meta(g->b, "i2i.size_multiple", "4"));
    chk(g, i2i_builder_set_meta(g->b, "i2i.blocks", y));
    chk(g, i2i_builder_set_meta(g->b, "i2i.dropout", drop ? "1" : "0"));
  }
}

/* mmagic's U-Net level prefix: "model." + "model.1."*d + "model." */
static void unet_prefix(char *buf, size_t len, int d) {
  size_t o = (size_t)snprintf(buf, len, "model.");
  for (int i = 0; i < d && o < len; i++) o += (size_t)snprintf(buf + o, len - o, "model.1.");
  if (o < len) snprintf(buf + o, len - o, "model.");
}

/* Levels that hold a key of their own (not only deeper levels' keys, which go on with "1.model."). */
static int unet_depth(netkeys *nk) {
  int d = 0;
  char p[512];
  for (; d <= 16; d++) {
    unet_prefix(p, sizeof p, d);
    if (!has_own_key(nk, p, "1.model.")) break;
  }
  return d;
}

/* Builds level d of the U-Net on input `x`; writes the level's output value name into `out`. */
static void unet_level(gb *g, int d, int depth, const char *x, char *out, size_t outlen, int64_t outer, int *n_drop) {
  if (g->failed) return;
  char S[512], k[640], nm[600], h[600], down[600], sub[600], ur[600], up[600], upn[600];
  unet_prefix(S, sizeof S, d);
  snprintf(k, sizeof k, "%s0.conv.weight", S);
  nkey *e = find_key(g->nk, k);
  if (!e || e->t->rank != 4) {
    const int64_t dq[4] = {-1, outer, 4, 4};
    need(g, k, 4, dq); /* names the key, missing or mis-shaped */
    return;
  }
  int64_t inner = e->t->dims[0];
  bool outermost = d == 0, innermost = d == depth - 1;
  int64_t dw[4] = {inner, outer, 4, 4};
  const char *xin = x;
  if (!outermost) {
    snprintf(h, sizeof h, "%s0.lrelu", S);
    act(g, "LeakyRelu", h, x, h);
    xin = h;
  }
  snprintf(nm, sizeof nm, "%s0.conv", S);
  conv(g, nm, xin, nm, false, need(g, k, 4, dw), NULL, k, NULL, 4, 2, 1, 0, outermost ? 1 : -1, false);
  snprintf(down, sizeof down, "%s", nm);
  if (!outermost && !innermost) {
    char bn[600];
    snprintf(bn, sizeof bn, "%s0.bn", S);
    batchnorm(g, bn, down, bn, inner);
    snprintf(down, sizeof down, "%s", bn);
  }
  int upidx = innermost ? 1 : 2;
  if (innermost) {
    snprintf(sub, sizeof sub, "%s", down);
  } else {
    unet_level(g, d + 1, depth, down, sub, sizeof sub, inner, n_drop);
  }
  snprintf(ur, sizeof ur, "%s%d.relu", S, upidx);
  act(g, "Relu", ur, sub, ur);
  snprintf(nm, sizeof nm, "%s%d.conv", S, upidx);
  snprintf(k, sizeof k, "%s.weight", nm);
  int64_t upin = innermost ? inner : inner * 2;
  int64_t uw[4] = {upin, outer, 4, 4}, ub[1] = {outer};
  if (outermost) {
    char kb[620];
    snprintf(kb, sizeof kb, "%s.bias", nm);
    conv(g, nm, ur, nm, true, need(g, k, 4, uw), need(g, kb, 1, ub), k, kb, 4, 2, 1, 0, 1, true);
    act(g, "Tanh", "model.tanh", nm, "output");
    snprintf(out, outlen, "output");
    return;
  }
  conv(g, nm, ur, nm, true, need(g, k, 4, uw), NULL, k, NULL, 4, 2, 1, 0, -1, false);
  snprintf(upn, sizeof upn, "%s%d.bn", S, upidx);
  batchnorm(g, upn, nm, upn, outer);
  snprintf(up, sizeof up, "%s", upn);
  if (!innermost && d >= 4 && d <= depth - 2) {
    char dr[600];
    snprintf(dr, sizeof dr, "%s3.dropout", S);
    dropout(g, dr, up, dr);
    snprintf(up, sizeof up, "%s", dr);
    (*n_drop)++;
  }
  char cat[600];
  snprintf(cat, sizeof cat, "%scat", S);
  const char *in2[2] = {h, up};
  i2i_attr a = {.name = "axis", .type = I2I_ATTR_INT, .i = 1};
  node(g, "Concat", cat, 2, in2, cat, 1, &a);
  snprintf(out, outlen, "%s", cat);
}

static void build_unet(gb *g, char *arch, size_t archlen) {
  int depth = unet_depth(g->nk);
  const int64_t d0[4] = {-1, -1, 4, 4};
  const pth_tensor *e = need(g, "model.model.0.conv.weight", 4, d0);
  if (!e) return;
  if (depth < 2) {
    char sp[SHOWN_LEN];
    gfail(g, "not a U-Net: no key under '%smodel.model.1.model.' (a U-Net has at least 2 levels)", shown(g->nk->prefix, sp, sizeof sp));
    return;
  }
  int64_t cin = e->dims[1], ngf = e->dims[0];
  snprintf(arch, archlen, "UnetGenerator, %d downsamplings (unet_%d), %lld channels", depth, 1 << depth, (long long)ngf);
  i2i_builder_add_input(g->b, "input", (int)cin);
  char out[64];
  int n_drop = 0;
  unet_level(g, 0, depth, "input", out, sizeof out, cin, &n_drop);
  chk(g, i2i_builder_add_output(g->b, "output", 3));
  if (!g->failed) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d", 1 << depth);
    chk(g, i2i_builder_set_meta(g->b, "i2i.family", "unet"));
    chk(g, i2i_builder_set_meta(g->b, "i2i.size_multiple", buf));
    snprintf(buf, sizeof buf, "%d", depth);
    chk(g, i2i_builder_set_meta(g->b, "i2i.depth", buf));
    chk(g, i2i_builder_set_meta(g->b, "i2i.batchnorm", g->bn_list->str));
    chk(g, i2i_builder_set_meta(g->b, "i2i.pix2pix_mode", "faithful"));
  }
}

static void build_patch(gb *g, char *arch, size_t archlen) {
  netkeys *nk = g->nk;
  int nconv = 0; /* ConvModule layers model.<i>.conv/.bn; the final plain conv is model.<nconv> */
  while (nconv < 16 && (has_prefix(nk, "model.%d.conv.", nconv) || has_prefix(nk, "model.%d.bn.", nconv))) nconv++;
  const int64_t d0[4] = {-1, -1, 4, 4};
  const pth_tensor *e = need(g, "model.0.conv.weight", 4, d0);
  if (!e) return;
  if (nconv < 2) {
    char sp[SHOWN_LEN];
    gfail(g, "not a PatchGAN discriminator: missing key '%smodel.1.conv.weight'", shown(nk->prefix, sp, sizeof sp));
    return;
  }
  int n = nconv - 1; /* stride-2 layers */
  bool bn = false;
  for (int i = 1; i < nconv; i++) bn |= has_prefix(nk, "model.%d.bn.", i);
  int64_t cin = e->dims[1], c = e->dims[0];
  snprintf(arch, archlen, "PatchDiscriminator, %d layers, %lld channels, %s, %lld input channels", nconv + 1, (long long)c,
           bn ? "BatchNorm" : "InstanceNorm", (long long)cin);
  i2i_builder_add_input(g->b, "input", (int)cin);
  char x[64] = "input", k1[256], k2[256];
  int64_t prev = cin;
  for (int i = 0; i < nconv; i++) {
    snprintf(k1, sizeof k1, "model.%d.conv.weight", i);
    snprintf(k2, sizeof k2, "model.%d.conv.bias", i);
    nkey *w = find_key(nk, k1);
    if (!w || w->t->rank != 4) {
      const int64_t dq[4] = {-1, prev, 4, 4};
      need(g, k1, 4, dq); /* names the key, missing or mis-shaped */
      return;
    }
    int64_t co = w->t->dims[0];
    int64_t dw[4] = {co, prev, 4, 4}, dbb[1] = {co};
    bool has_bias = i == 0 || !bn;
    char nm[64], nn[64], lr[64];
    snprintf(nm, sizeof nm, "model.%d.conv", i);
    snprintf(nn, sizeof nn, "model.%d.%s", i, bn ? "bn" : "in");
    snprintf(lr, sizeof lr, "model.%d.lrelu", i);
    conv(g, nm, x, nm, false, need(g, k1, 4, dw), has_bias ? need(g, k2, 1, dbb) : NULL, k1, has_bias ? k2 : NULL, 4,
         i < n ? 2 : 1, 1, 0, i == 0 ? 1 : -1, false);
    const char *an = nm;
    if (i > 0) {
      if (bn) batchnorm(g, nn, nm, nn, co);
      else instnorm(g, nn, nm, nn, co);
      an = nn;
    }
    act(g, "LeakyRelu", lr, an, lr);
    snprintf(x, sizeof x, "%s", lr);
    prev = co;
  }
  snprintf(k1, sizeof k1, "model.%d.weight", nconv);
  snprintf(k2, sizeof k2, "model.%d.bias", nconv);
  int64_t dw[4] = {1, prev, 4, 4}, dbb[1] = {1};
  conv(g, "model.final", x, "output", false, need(g, k1, 4, dw), need(g, k2, 1, dbb), k1, k2, 4, 1, 1, 0, -1, false);
  chk(g, i2i_builder_add_output(g->b, "output", 1));
  if (!g->failed) {
    chk(g, i2i_builder_set_meta(g->b, "i2i.family", "patchgan"));
    if (bn) chk(g, i2i_builder_set_meta(g->b, "i2i.batchnorm", g->bn_list->str));
  }
}

/* ---- the original authors' keys -> mmagic's (mmagic.md 11) ------------------------------- */

static bool parse_uint(const char *s, int *v, const char **end) {
  if (!isdigit((unsigned char)*s)) return false;
  long x = strtol(s, (char **)end, 10);
  if (x < 0 || x > 100000) return false;
  *v = (int)x;
  return true;
}

/* Renames a junyanz ResNet key; NULL when it is not one (ignorable norm stats return ""). */
static char *junyanz_resnet_key(const char *k, int nb, bool drop) {
  int i;
  const char *rest;
  if (strncmp(k, "model.", 6) || !parse_uint(k + 6, &i, &rest) || *rest != '.') return NULL;
  rest++;
  if (i == 1) return g_strdup_printf("model.0.conv.%s", rest);
  if (i == 4) return g_strdup_printf("model.1.conv.%s", rest);
  if (i == 7) return g_strdup_printf("model.2.conv.%s", rest);
  if (i >= 10 && i < 10 + nb) {
    int j;
    const char *r2;
    if (strncmp(rest, "conv_block.", 11) || !parse_uint(rest + 11, &j, &r2) || *r2 != '.') return NULL;
    if (j == 1) return g_strdup_printf("model.%d.block.0.conv.%s", 3 + i - 10, r2 + 1);
    if (j == (drop ? 6 : 5)) return g_strdup_printf("model.%d.block.%d.conv.%s", 3 + i - 10, drop ? 2 : 1, r2 + 1);
    if (j == 2 || j == (drop ? 7 : 6)) return g_strdup("");
    return NULL;
  }
  if (i == 10 + nb) return g_strdup_printf("model.%d.conv.%s", 3 + nb, rest);
  if (i == 13 + nb) return g_strdup_printf("model.%d.conv.%s", 4 + nb, rest);
  if (i == 17 + nb) return g_strdup_printf("model.%d.conv.%s", 5 + nb, rest);
  if (i == 2 || i == 5 || i == 8 || i == 11 + nb || i == 14 + nb) return g_strdup(""); /* IN stats */
  return NULL;
}

/* Renames a junyanz U-Net key: "model.model.1.model.3...model.<leaf>" -> mmagic's. */
static char *junyanz_unet_key(const char *k, int depth) {
  if (strncmp(k, "model.model.", 12)) return NULL;
  const char *p = k + 12;
  int d = 0;
  /* level 1 hangs at index 1 of the outermost; deeper levels at index 3 */
  while (1) {
    const char *want = d == 0 ? "1.model." : "3.model.";
    if (strncmp(p, want, 8)) break;
    p += 8;
    d++;
  }
  int leaf;
  const char *rest;
  if (!parse_uint(p, &leaf, &rest) || *rest != '.') return NULL;
  rest++;
  char S[512];
  unet_prefix(S, sizeof S, d);
  bool outermost = d == 0, innermost = d == depth - 1;
  if (outermost) {
    if (leaf == 0) return g_strdup_printf("%s0.conv.%s", S, rest);
    if (leaf == 3) return g_strdup_printf("%s2.conv.%s", S, rest);
  } else if (innermost) {
    if (leaf == 1) return g_strdup_printf("%s0.conv.%s", S, rest);
    if (leaf == 3) return g_strdup_printf("%s1.conv.%s", S, rest);
    if (leaf == 4) return g_strdup_printf("%s1.bn.%s", S, rest);
  } else {
    if (leaf == 1) return g_strdup_printf("%s0.conv.%s", S, rest);
    if (leaf == 2) return g_strdup_printf("%s0.bn.%s", S, rest);
    if (leaf == 5) return g_strdup_printf("%s2.conv.%s", S, rest);
    if (leaf == 6) return g_strdup_printf("%s2.bn.%s", S, rest);
  }
  return NULL;
}

/* Renames a junyanz NLayerDiscriminator key (n_layers = nl). */
static char *junyanz_patch_key(const char *k, int nl, bool bn) {
  int i;
  const char *rest;
  if (strncmp(k, "model.", 6) || !parse_uint(k + 6, &i, &rest) || *rest != '.') return NULL;
  rest++;
  if (i == 0) return g_strdup_printf("model.0.conv.%s", rest);
  if (i == 3 * nl + 2) return g_strdup_printf("model.%d.%s", nl + 1, rest);
  if (i >= 2 && i <= 3 * nl - 1 + 1 && (i - 2) % 3 == 0) return g_strdup_printf("model.%d.conv.%s", (i - 2) / 3 + 1, rest);
  if (i >= 3 && (i - 3) % 3 == 0 && (i - 3) / 3 + 1 <= nl)
    return bn ? g_strdup_printf("model.%d.bn.%s", (i - 3) / 3 + 1, rest) : g_strdup("");
  return NULL;
}

static const pth_tensor *orig_tensor(netkeys *nk, const char *orig) {
  for (guint i = 0; i < nk->keys->len; i++) {
    nkey *e = &g_array_index(nk->keys, nkey, i);
    if (!strcmp(e->orig + strlen(nk->prefix), orig)) return e->t;
  }
  return NULL;
}

/* The junyanz U-Net level prefix: "model.model." + "1.model." + "3.model." * (d - 1). */
static void junyanz_unet_prefix(char *buf, size_t len, int d) {
  size_t o = (size_t)snprintf(buf, len, "model.model.");
  for (int i = 0; i < d && o < len; i++) o += (size_t)snprintf(buf + o, len - o, i ? "3.model." : "1.model.");
}

/* Detects the original authors' layout and renames the keys to mmagic's in place. The shape
 * (blocks, depth, dropout) is read from module prefixes, so one missing tensor keeps its name. */
static bool normalise_junyanz(netkeys *nk, char *err, size_t errlen) {
  const pth_tensor *t1 = orig_tensor(nk, "model.1.weight");
  const pth_tensor *t0 = orig_tensor(nk, "model.0.weight");
  const pth_tensor *tu = orig_tensor(nk, "model.model.0.weight");
  int kind = 0, nb = 0, depth = 0, nl = 0;
  bool drop = false, bn = false;
  if ((t1 && t1->rank == 4 && t1->dims[2] == 7) || (!t1 && has_prefix(nk, "model.10.conv_block."))) {
    kind = 1;
    while (nb < 64 && has_prefix(nk, "model.%d.conv_block.", 10 + nb)) nb++;
    /* with dropout the second conv is conv_block.6 (without, 6 is the InstanceNorm: stats, no weight) */
    for (int b = 0; b < nb; b++) drop |= has_prefix(nk, "model.%d.conv_block.6.weight", 10 + b);
  } else if (tu || has_prefix(nk, "model.model.1.model.")) {
    kind = 2;
    /* levels below the outermost that hold a key of their own (a deeper level goes on with "3.model.") */
    for (depth = 1; depth <= 16; depth++) {
      char p[512];
      junyanz_unet_prefix(p, sizeof p, depth);
      if (!has_own_key(nk, p, "3.model.")) break;
    }
  } else if (t0 && t0->rank == 4 && t0->dims[2] == 4) {
    kind = 3;
    int maxi = 0;
    for (guint i = 0; i < nk->keys->len; i++) {
      nkey *e = &g_array_index(nk->keys, nkey, i);
      int v;
      const char *r;
      if (!strncmp(e->key, "model.", 6) && parse_uint(e->key + 6, &v, &r) && v > maxi) maxi = v;
    }
    nl = (maxi - 2) / 3;
    bn = orig_tensor(nk, "model.3.weight") != NULL;
  } else {
    return false;
  }
  for (guint i = 0; i < nk->keys->len; i++) {
    nkey *e = &g_array_index(nk->keys, nkey, i);
    char *nkname = kind == 1 ? junyanz_resnet_key(e->key, nb, drop)
                   : kind == 2 ? junyanz_unet_key(e->key, depth)
                               : junyanz_patch_key(e->key, nl, bn);
    if (!nkname) {
      char sk[SHOWN_LEN];
      snprintf(err, errlen, "unexpected key '%s' for an original-authors %s", shown(e->orig, sk, sizeof sk),
               kind == 1 ? "ResNet generator" : kind == 2 ? "U-Net generator" : "discriminator");
      return true;
    }
    if (!*nkname) {
      g_free(nkname);
      e->ignorable = true;
      continue;
    }
    g_free(e->key);
    e->key = nkname;
  }
  nk->junyanz = true;
  nk->jz.kind = kind;
  nk->jz.nb = nb;
  nk->jz.drop = drop;
  nk->jz.depth = depth;
  nk->jz.nl = nl;
  nk->jz.bn = bn;
  return true;
}

/* How a missing key is named in a message: 'PREFIX+k', and for an original-authors network the
 * name their layout gives it first (found by mapping each candidate name forward). */
static void missing_key_name(const netkeys *nk, const char *k, char *out, size_t len) {
  char sp[SHOWN_LEN];
  shown(nk->prefix, sp, sizeof sp);
  snprintf(out, len, "'%s%s'", sp, k);
  const char *leaf = strrchr(k, '.');
  if (!nk->junyanz || !leaf) return;
  leaf++;
  char c[600];
  for (int i = 0; i < 100; i++)
    for (int j = -1; j < 8; j++) {
      if (nk->jz.kind == 1) {
        if (j < 0) snprintf(c, sizeof c, "model.%d.%s", i, leaf);
        else snprintf(c, sizeof c, "model.%d.conv_block.%d.%s", i, j, leaf);
      } else if (nk->jz.kind == 2) {
        if (i >= nk->jz.depth || j < 0) continue;
        junyanz_unet_prefix(c, sizeof c, i);
        size_t o = strlen(c);
        snprintf(c + o, sizeof c - o, "%d.%s", j, leaf);
      } else {
        if (j >= 0) continue;
        snprintf(c, sizeof c, "model.%d.%s", i, leaf);
      }
      char *m = nk->jz.kind == 1 ? junyanz_resnet_key(c, nk->jz.nb, nk->jz.drop)
                : nk->jz.kind == 2 ? junyanz_unet_key(c, nk->jz.depth)
                                   : junyanz_patch_key(c, nk->jz.nl, nk->jz.bn);
      bool hit = m && !strcmp(m, k);
      g_free(m);
      if (hit) {
        snprintf(out, len, "'%s%s' (mmagic's '%s')", sp, c, k);
        return;
      }
    }
}

/* ---- the whole file ---------------------------------------------------------------------- */

static net_arch detect_arch(netkeys *nk) {
  nkey *e = find_key(nk, "model.0.conv.weight");
  if (find_key(nk, "model.model.0.conv.weight")) return ARCH_UNET;
  if (e && e->t->rank == 4 && e->t->dims[2] == 7) return ARCH_RESNET;
  if (e && e->t->rank == 4 && e->t->dims[2] == 4) return ARCH_PATCH;
  /* The first convolution is missing or mis-shaped: tell mmagic's networks by their other module
   * names (the original authors' keys have none of these), so that the builder names the bad key. */
  if (has_prefix(nk, "model.model.1.model.0.conv.")) return ARCH_UNET;
  if (has_prefix(nk, "model.3.block.")) return ARCH_RESNET;
  if (has_prefix(nk, "model.1.conv.")) return ARCH_PATCH;
  return ARCH_NONE;
}

static void netkeys_free(netkeys *nk) {
  if (!nk->keys) return;
  for (guint i = 0; i < nk->keys->len; i++) g_free(g_array_index(nk->keys, nkey, i).key);
  g_array_free(nk->keys, TRUE);
  nk->keys = NULL;
}

static netkeys *group_for(GArray *groups, const char *prefix, const char *domain, net_role role) {
  for (guint i = 0; i < groups->len; i++) {
    netkeys *nk = &g_array_index(groups, netkeys, i);
    if (!strcmp(nk->prefix, prefix)) return nk;
  }
  netkeys nk = {0};
  snprintf(nk.prefix, sizeof nk.prefix, "%s", prefix);
  snprintf(nk.domain, sizeof nk.domain, "%s", domain);
  nk.role = role;
  nk.keys = g_array_new(FALSE, TRUE, sizeof(nkey));
  g_array_append_val(groups, nk);
  return &g_array_index(groups, netkeys, groups->len - 1);
}

/* Splits the state dict into networks by prefix. Returns the layout name. */
static const char *group_keys(const pth_info *info, GArray *groups, char *err, size_t errlen) {
  bool multi = false, old_pix = false;
  for (size_t i = 0; i < info->n_tensors; i++) {
    const char *k = info->tensors[i].key;
    if (!strncmp(k, "generators.", 11) || !strncmp(k, "discriminators.", 15)) multi = true;
    if (!strncmp(k, "generator.", 10) || !strncmp(k, "discriminator.", 14)) old_pix = true;
  }
  const char *layout = multi ? "mmagic" : old_pix ? "mmediting 0.x pix2pix (generator./discriminator.)" : "single network";
  for (size_t i = 0; i < info->n_tensors; i++) {
    const pth_tensor *t = &info->tensors[i];
    const char *k = t->key;
    char prefix[160] = "", domain[64] = "";
    net_role role = ROLE_ANY;
    if (multi) {
      bool g = !strncmp(k, "generators.", 11);
      const char *rest = k + (g ? 11 : 15);
      const char *dot = strchr(rest, '.');
      if ((!g && strncmp(k, "discriminators.", 15)) || !dot || dot == rest || dot - rest >= (int)sizeof domain) {
        char sk[SHOWN_LEN];
        snprintf(err, errlen, "unexpected key '%s' (the file's other keys are generators.* / discriminators.*)", shown(k, sk, sizeof sk));
        return NULL;
      }
      snprintf(domain, sizeof domain, "%.*s", (int)(dot - rest), rest);
      snprintf(prefix, sizeof prefix, "%s%s.", g ? "generators." : "discriminators.", domain);
      role = g ? ROLE_G : ROLE_D;
    } else if (old_pix) {
      bool g = !strncmp(k, "generator.", 10);
      if (!g && strncmp(k, "discriminator.", 14)) {
        char sk[SHOWN_LEN];
        snprintf(err, errlen, "unexpected key '%s' (the file's other keys are generator.* / discriminator.*)", shown(k, sk, sizeof sk));
        return NULL;
      }
      snprintf(prefix, sizeof prefix, "%s", g ? "generator." : "discriminator.");
      role = g ? ROLE_G : ROLE_D;
    }
    netkeys *nk = group_for(groups, prefix, domain, role);
    nkey e = {0};
    e.key = g_strdup(k + strlen(prefix));
    e.orig = k;
    e.t = t;
    const char *tail = strrchr(k, '.');
    e.ignorable = tail && !strcmp(tail, ".num_batches_tracked");
    g_array_append_val(nk->keys, e);
  }
  for (guint i = 0; i < groups->len; i++) {
    netkeys *nk = &g_array_index(groups, netkeys, i);
    if (!strcmp(nk->domain, "a") || !strcmp(nk->domain, "b")) layout = "mmediting 0.x / mmgen 2021-04 (generators.a/b)";
  }
  return layout;
}

static bool name_has_date(const char *base, const char *year) {
  for (const char *p = strstr(base, year); p; p = strstr(p + 1, year)) {
    if (p > base && p[-1] != '_') continue;
    int n = 0;
    while (isdigit((unsigned char)p[n])) n++;
    if (n == 8) return true;
  }
  return false;
}

static char *sanitize_task(const char *s) {
  GString *o = g_string_new(NULL);
  for (const char *p = s; *p && o->len < 96; p++) g_string_append_c(o, (isalnum((unsigned char)*p) || *p == '-' || *p == '_') ? *p : '_');
  if (!o->len || o->str[0] == '.') g_string_prepend(o, "model");
  return g_string_free(o, FALSE);
}

bool convert_is_checkpoint(const char *path) {
  /* O_NONBLOCK: a FIFO is not waited on but refused by fstat (regular files ignore the flag) */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  struct stat sb;
  unsigned char b[16] = {0};
  ssize_t got = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) ? pread(fd, b, sizeof b, 0) : -1;
  close(fd);
  size_t n = got > 0 ? (size_t)got : 0;
  static const unsigned char legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  return (n >= 4 && !memcmp(b, "PK\003\004", 4)) || (n >= sizeof legacy && !memcmp(b, legacy, sizeof legacy));
}

void convert_set_free(convert_set *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    g_free(s->nets[i].task);
    g_free(s->nets[i].key);
    g_free(s->nets[i].architecture);
    i2i_model_free(s->nets[i].model);
  }
  g_free(s->nets);
  g_free(s->container);
  g_free(s->layout);
  g_free(s->channel_order);
  g_free(s->channel_order_from);
  g_free(s->globals);
  g_free(s->opaque);
  memset(s, 0, sizeof *s);
}

static char *join_globals(const pth_info *info, bool opaque) {
  GString *s = g_string_new(NULL);
  size_t n = opaque ? info->n_opaque : info->n_globals;
  for (size_t i = 0; i < n; i++) {
    if (s->len) g_string_append(s, ", ");
    char *name = shown_dup(opaque ? info->opaque[i] : info->globals[i].name);
    g_string_append(s, name);
    g_free(name);
  }
  return g_string_free(s, FALSE);
}

/* A network's domains: the one it translates from (empty when unknown) and the one it
 * produces (G) or judges (D). */
typedef struct {
  char source[64], target[64];
} domains;

static char *named_task(domains *d, const char *from, const char *to) {
  snprintf(d->source, sizeof d->source, "%s", from);
  snprintf(d->target, sizeof d->target, "%s", to);
  char *t = g_strdup_printf("%s2%s", from, to);
  char *r = sanitize_task(t);
  g_free(t);
  return r;
}

/* The task of a network, from the manifest or the domains, and its domains in *d. */
static char *task_for(const netkeys *nk, GArray *groups, const char *base, const char *stem, const convert_opts *o,
                      const i2i_manifest_entry **pub, domains *d, i2i_ctx *ctx) {
  const char *target = nk->domain;
  char src[64] = "", dst[64] = "";
  if (o->domains) {
    const char *c = strchr(o->domains, ',');
    if (c) {
      snprintf(src, sizeof src, "%.*s", (int)(c - o->domains), o->domains);
      snprintf(dst, sizeof dst, "%s", c + 1);
    }
  }
  memset(d, 0, sizeof *d);
  /* old layouts: generators.a maps A -> B */
  bool ab = !strcmp(nk->domain, "a") || !strcmp(nk->domain, "b");
  if (ab) {
    const char *A = src[0] ? src : "a", *B = dst[0] ? dst : "b";
    return !strcmp(nk->domain, "a") ? named_task(d, A, B) : named_task(d, B, A);
  }
  for (size_t i = 0; i < i2i_manifest_count(ctx); i++) {
    const i2i_manifest_entry *e = i2i_manifest_get(ctx, i);
    if (strcmp(e->checkpoint, base) || strcmp(e->target_domain, target)) continue;
    *pub = e;
    snprintf(d->source, sizeof d->source, "%s", e->source_domain);
    snprintf(d->target, sizeof d->target, "%s", e->target_domain);
    return g_strdup(e->task);
  }
  /* CycleGAN: the source is --domains' other side, else the other generator's domain */
  const char *other = NULL;
  if (target[0]) {
    other = src[0] && !strcmp(dst, target) ? src : NULL;
    for (guint i = 0; !other && i < groups->len; i++) {
      const netkeys *x = &g_array_index(groups, netkeys, i);
      if (x->role == ROLE_G && x->domain[0] && strcmp(x->domain, target)) other = x->domain;
    }
  }
  char *task;
  if (target[0] && other) task = named_task(d, other, target);
  else if (!target[0] && src[0] && dst[0]) task = named_task(d, src, dst);
  else {
    snprintf(d->source, sizeof d->source, "%s", src[0] && !strcmp(dst, target) ? src : "");
    snprintf(d->target, sizeof d->target, "%s", target[0] ? target : dst);
    task = sanitize_task(stem);
  }
  if (o->task) {
    g_free(task);
    task = sanitize_task(o->task);
  }
  return task;
}

i2i_status convert_load(i2i_ctx *ctx, const char *path, const convert_opts *opts, convert_set *set, char *err,
                        size_t errlen) {
  convert_opts defo = {0};
  if (!opts) opts = &defo;
  memset(set, 0, sizeof *set);
  pth_options po;
  pth_default_options(&po);
  po.strict_everywhere = opts->strict;
  pth_file *pf = NULL;
  pth_status ps = pth_load_file(path, &po, &pf, err, errlen);
  if (ps) return pth_status_to_i2i(ps);
  const pth_info *info = pth_file_info(pf);
  i2i_status st = I2I_OK;
  GArray *groups = g_array_new(FALSE, TRUE, sizeof(netkeys));
  gchar *base = g_path_get_basename(path);
  gchar *sbase = shown_dup(base); /* for messages and metadata */
  gchar *stem = g_strdup(base);
  char *dot = strrchr(stem, '.');
  if (dot) *dot = 0;
  /* the original authors save <epoch>_net_G_A.pth into checkpoints/<name>/: G_A and D_A belong
   * to the A->B direction, G_B and D_B to B->A */
  static const char *junk[] = {"_net_G_A", "_net_G_B", "_net_D_A", "_net_D_B", "_net_G", "_net_D"};
  static const char *dir_suffix[] = {"_AtoB", "_BtoA", "_AtoB", "_BtoA", "", ""};
  for (size_t i = 0; i < G_N_ELEMENTS(junk); i++) {
    size_t l = strlen(stem), jl = strlen(junk[i]);
    if (l > jl && !strcmp(stem + l - jl, junk[i])) {
      stem[l - jl] = 0;
      bool generic = !strcmp(stem, "latest") || strspn(stem, "0123456789") == strlen(stem);
      gchar *dir = g_path_get_dirname(path), *parent = g_path_get_basename(dir);
      gchar *named = g_strconcat(generic && strcmp(parent, ".") && strcmp(parent, "/") ? parent : stem, dir_suffix[i], NULL);
      g_free(stem);
      stem = named;
      g_free(dir);
      g_free(parent);
      break;
    }
  }
  const char *layout = group_keys(info, groups, err, errlen);
  if (!layout) {
    st = I2I_E_FORMAT;
    goto named;
  }
  if (!info->n_tensors) {
    snprintf(err, errlen, "%s: the checkpoint holds no tensors (top-level keys: %zu)", sbase, info->n_keys);
    st = I2I_E_UNSUPPORTED;
    goto done;
  }
  set->container = g_strdup(info->container);
  set->globals = join_globals(info, false);
  set->opaque = join_globals(info, true);
  /* colour order */
  const char *order = NULL, *from = NULL;
  const i2i_manifest_entry *pub = NULL;
  for (size_t i = 0; i < i2i_manifest_count(ctx); i++)
    if (!strcmp(i2i_manifest_get(ctx, i)->checkpoint, base)) pub = i2i_manifest_get(ctx, i);
  bool jun = false;
  for (guint i = 0; i < groups->len; i++) {
    netkeys *nk = &g_array_index(groups, netkeys, i);
    if (detect_arch(nk) == ARCH_NONE) {
      err[0] = 0;
      if (normalise_junyanz(nk, err, errlen)) {
        if (err[0]) {
          st = I2I_E_FORMAT;
          goto named;
        }
        jun = true;
      }
    }
  }
  if (jun) layout = "original authors (junyanz/pytorch-CycleGAN-and-pix2pix)";
  set->layout = g_strdup(layout);
  if (opts->channel_order) {
    order = opts->channel_order;
    from = "option";
  } else if (pub) {
    order = pub->channel_order;
    from = "manifest";
  } else if (strstr(base, "convert-bgr") || name_has_date(base, "2021")) {
    order = "bgr";
    from = "file name";
  } else if (name_has_date(base, "2020")) {
    order = "rgb";
    from = "file name";
  } else if (jun) {
    order = "rgb";
    from = "layout (the original authors trained in RGB)";
  }
  if (!order || (strcmp(order, "rgb") && strcmp(order, "bgr"))) {
    snprintf(err, errlen,
             "%s: cannot tell the colour order (neither the manifest, the file name nor the key layout says); "
             "pass --channel-order rgb or bgr (the published mmagic files and mmagic 1.x training are BGR)",
             sbase);
    st = I2I_E_ARG;
    goto done;
  }
  set->channel_order = g_strdup(order);
  set->channel_order_from = g_strdup(from);
  set->published = pub;
  set->nets = g_new0(convert_net, groups->len);
  for (guint i = 0; i < groups->len && !st; i++) {
    netkeys *nk = &g_array_index(groups, netkeys, i);
    net_arch a = detect_arch(nk);
    char sp[SHOWN_LEN], sk[SHOWN_LEN];
    shown(nk->prefix[0] ? nk->prefix : "(top level)", sp, sizeof sp);
    if (a == ARCH_NONE) {
      nkey *e0 = nk->keys->len ? &g_array_index(nk->keys, nkey, 0) : NULL;
      snprintf(err, errlen, "%s: unknown architecture for the network '%s' (first key '%s'); i2i converts "
               "ResnetGenerator, UnetGenerator and PatchGAN discriminators", sbase, sp, shown(e0 ? e0->orig : "", sk, sizeof sk));
      st = I2I_E_UNSUPPORTED;
      break;
    }
    if ((nk->role == ROLE_G && a == ARCH_PATCH) || (nk->role == ROLE_D && a != ARCH_PATCH)) {
      snprintf(err, errlen, "%s: '%s' holds a %s", sbase, sp, a == ARCH_PATCH ? "discriminator" : "generator");
      st = I2I_E_FORMAT;
      break;
    }
    if (a == ARCH_PATCH) set->has_discriminators = true;
    const i2i_manifest_entry *dpub = NULL;
    domains dom;
    char *task = task_for(nk, groups, base, stem, opts, &dpub, &dom, ctx);
    gb g = {0};
    g.ctx = ctx;
    g.nk = nk;
    g.err = err;
    g.errlen = errlen;
    g.bgr = !strcmp(order, "bgr");
    g.bn_list = g_string_new(NULL);
    g.shared = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    char arch[160] = "";
    if (i2i_builder_new(ctx, &g.b)) gfail(&g, "%s", i2i_ctx_errmsg(ctx));
    if (a == ARCH_RESNET) build_resnet(&g, arch, sizeof arch);
    else if (a == ARCH_UNET) build_unet(&g, arch, sizeof arch);
    else build_patch(&g, arch, sizeof arch);
    /* unexpected keys */
    for (guint k = 0; k < nk->keys->len && !g.failed; k++) {
      nkey *e = &g_array_index(nk->keys, nkey, k);
      if (!e->used && !e->ignorable) gfail(&g, "unexpected key '%s' for a %s", shown(e->orig, sk, sizeof sk), arch);
    }
    if (!g.failed) {
      const i2i_manifest_entry *me = dpub;
      char conv_ver[32];
      snprintf(conv_ver, sizeof conv_ver, "i2i %s", i2i_version());
      char *label = me ? g_strdup(me->label) : g_strdup(task);
      char ssrc[SHOWN_LEN], sdst[SHOWN_LEN];
      const char *kv[][2] = {
        {"i2i.task", task},
        {"i2i.menu_label", label},
        {"i2i.source_checkpoint", sbase},
        {"i2i.source_key", sp},
        {"i2i.source_layout", layout},
        {"i2i.architecture", arch},
        {"i2i.channel_order", "rgb"},
        {"i2i.source_channel_order", order},
        {"i2i.value_range", "-1,1"},
        {"i2i.converter", conv_ver},
        {"i2i.source_domain", shown(dom.source, ssrc, sizeof ssrc)},
        {"i2i.target_domain", shown(dom.target, sdst, sizeof sdst)},
        {"i2i.variant", me ? (me->variant ? "id0" : "standard") : ""},
        {"i2i.source_side", me ? me->source_side : ""},
        {"i2i.provisional", me && me->provisional ? "true" : ""},
        {"i2i.role", a == ARCH_PATCH ? "discriminator" : "generator"},
      };
      for (size_t q = 0; q < G_N_ELEMENTS(kv) && !g.failed; q++)
        if (kv[q][1] && kv[q][1][0]) chk(&g, i2i_builder_set_meta(g.b, kv[q][0], kv[q][1]));
      g_free(label);
    }
    if (g.failed) {
      i2i_builder_free(g.b);
      st = I2I_E_FORMAT;
      char tmp[1024];
      snprintf(tmp, sizeof tmp, "%s: %s", sbase, err);
      snprintf(err, errlen, "%s", tmp);
    } else {
      i2i_model *m = NULL;
      st = i2i_builder_finish(g.b, &m);
      pth_file_release_pages(pf); /* this network's weights are copied into m */
      if (st) snprintf(err, errlen, "%s: the converted %s does not check: %s", sbase, arch, i2i_ctx_errmsg(ctx));
      else {
        convert_net *cn = &set->nets[set->n++];
        cn->task = task;
        task = NULL;
        cn->discriminator = a == ARCH_PATCH;
        cn->key = g_strdup(sp); /* for display */
        if (cn->key[0] && cn->key[strlen(cn->key) - 1] == '.') cn->key[strlen(cn->key) - 1] = 0;
        cn->architecture = g_strdup(arch);
        cn->model = m;
      }
    }
    g_free(task);
    g_string_free(g.bn_list, TRUE);
    g_hash_table_destroy(g.shared);
  }
  /* two networks with the same output file would overwrite each other */
  for (size_t i = 0; i < set->n && !st; i++)
    for (size_t j = i + 1; j < set->n; j++)
      if (set->nets[i].discriminator == set->nets[j].discriminator && !strcmp(set->nets[i].task, set->nets[j].task)) {
        snprintf(err, errlen, "%s: '%s' and '%s' would both be written as %s; name them with --domains or --task", sbase,
                 set->nets[i].key, set->nets[j].key, set->nets[i].task);
        st = I2I_E_ARG;
        break;
      }
  goto done;
named: /* a message from a helper, which does not know the file: prefixed with its name */
  {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s: %s", sbase, err);
    snprintf(err, errlen, "%s", tmp);
  }
done:
  for (guint i = 0; i < groups->len; i++) netkeys_free(&g_array_index(groups, netkeys, i));
  g_array_free(groups, TRUE);
  g_free(base);
  g_free(sbase);
  g_free(stem);
  pth_file_free(pf);
  if (st) convert_set_free(set);
  return st;
}

/* Ctrl-C or SIGTERM while a set is being written waits for the set (a second or two): the
 * signal is kept and raised again once the files are in place or the staging folder is gone. */
static volatile sig_atomic_t deferred_signal;
static void defer_signal(int sig) { deferred_signal = sig; }

void convert_clear_stage(const char *stage) {
  GDir *d = g_dir_open(stage, 0, NULL);
  if (!d) return;
  const char *n;
  while ((n = g_dir_read_name(d))) {
    gchar *p = g_build_filename(stage, n, NULL);
    unlink(p);
    g_free(p);
  }
  g_dir_close(d);
}

i2i_status convert_write(i2i_ctx *ctx, const convert_set *set, const char *dir, FILE *log, char *err, size_t errlen) {
  if (g_mkdir_with_parents(dir, 0777) != 0) {
    snprintf(err, errlen, "cannot create the folder '%s': %s", dir, g_strerror(errno));
    return I2I_E_IO;
  }
  for (size_t i = 0; i < set->n; i++) {
    const convert_net *n = &set->nets[i];
    gchar *p = g_strdup_printf("%s%s%s%s.onnx", dir, G_DIR_SEPARATOR_S, n->task, n->discriminator ? ".D" : "");
    bool folder = g_file_test(p, G_FILE_TEST_IS_DIR);
    if (folder) snprintf(err, errlen, "cannot replace '%s': it is a folder; nothing was written", p);
    g_free(p);
    if (folder) return I2I_E_IO;
  }
  /* every file is written into a staging folder beside the results first, then renamed into
   * place: a failure (a full disk) leaves the folder as it was, never half a set */
  gchar *stage = g_build_filename(dir, ".i2i-convert-XXXXXX", NULL);
  if (!g_mkdtemp(stage)) {
    snprintf(err, errlen, "cannot write into '%s': %s", dir, g_strerror(errno));
    g_free(stage);
    return I2I_E_IO;
  }
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = defer_signal;
  sigemptyset(&sa.sa_mask);
  deferred_signal = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  i2i_status st = I2I_OK;
  for (size_t i = 0; i < set->n && !st; i++) {
    const convert_net *n = &set->nets[i];
    gchar *file = g_strdup_printf("%s%s.onnx", n->task, n->discriminator ? ".D" : "");
    gchar *p = g_build_filename(stage, file, NULL);
    st = i2i_model_save(ctx, n->model, p);
    if (st) snprintf(err, errlen, "%s; nothing in '%s' was changed", i2i_ctx_errmsg(ctx), dir);
    g_free(file);
    g_free(p);
  }
  for (size_t i = 0; i < set->n && !st; i++) {
    const convert_net *n = &set->nets[i];
    gchar *file = g_strdup_printf("%s%s.onnx", n->task, n->discriminator ? ".D" : "");
    gchar *from = g_build_filename(stage, file, NULL), *to = g_build_filename(dir, file, NULL);
    if (rename(from, to) != 0) {
      snprintf(err, errlen, "cannot replace '%s': %s%s", to, g_strerror(errno),
               i ? " (the files before it in the set were replaced)" : "; nothing was changed");
      st = I2I_E_IO;
    } else if (log) {
      i2i_model_info in;
      i2i_model_get_info(n->model, &in);
      fprintf(log, "%s <- %s: %s, %llu parameters\n", to, n->key, n->architecture, (unsigned long long)in.n_params);
    }
    g_free(file);
    g_free(from);
    g_free(to);
  }
  convert_clear_stage(stage);
  rmdir(stage);
  g_free(stage);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (deferred_signal) raise(deferred_signal);
  return st;
}

int convert_inspect_checkpoint(const char *path, bool strict, FILE *out) {
  char err[1024] = "";
  pth_options po;
  pth_default_options(&po);
  po.strict_everywhere = strict;
  pth_file *pf = NULL;
  pth_status ps = pth_load_file(path, &po, &pf, err, sizeof err);
  if (ps) {
    fprintf(stderr, "i2i inspect: %s\n", err);
    return 1;
  }
  const pth_info *info = pth_file_info(pf);
  /* every name from the file (and the path) is printed in its display form */
  char *d = shown_dup(path);
  fprintf(out, "checkpoint: %s\n", d);
  g_free(d);
  d = shown_dup(info->zip_prefix);
  fprintf(out, "  container:   %s%s%s%s\n", info->container, d[0] ? " (prefix '" : "", d, d[0] ? "/')" : "");
  g_free(d);
  fprintf(out, "  top level:  ");
  for (size_t i = 0; i < info->n_keys; i++) {
    d = shown_dup(info->keys[i]);
    fprintf(out, " %s%s", d, i + 1 < info->n_keys ? "," : "");
    g_free(d);
  }
  fprintf(out, "\n  weights:     %s%s\n", info->has_state_dict_key ? "state_dict" : "the top-level dict",
          info->stripped_module_prefix ? " (a 'module.' prefix removed)" : "");
  fprintf(out, "  globals:    ");
  for (size_t i = 0; i < info->n_globals; i++) {
    d = shown_dup(info->globals[i].name);
    fprintf(out, " %s%s%s", d, info->globals[i].allowlisted ? "" : " (not allowlisted)", i + 1 < info->n_globals ? "," : "");
    g_free(d);
  }
  fprintf(out, "\n");
  if (info->n_opaque) {
    fprintf(out, "  inert:       ");
    for (size_t i = 0; i < info->n_opaque; i++) {
      d = shown_dup(info->opaque[i]);
      fprintf(out, "%s%s", d, i + 1 < info->n_opaque ? ", " : "");
      g_free(d);
    }
    fprintf(out, " (kept as data outside the weights, never called)\n");
  }
  i2i_ctx *ctx = NULL;
  i2i_ctx_create(NULL, &ctx);
  convert_set set;
  convert_opts o = {.strict = strict};
  char cerr[1024] = "";
  i2i_status st = ctx ? convert_load(ctx, path, &o, &set, cerr, sizeof cerr) : I2I_E_NOMEM;
  if (st == I2I_E_ARG && strstr(cerr, "colour order")) {
    o.channel_order = "rgb";
    st = convert_load(ctx, path, &o, &set, cerr, sizeof cerr);
    if (!st) {
      g_free(set.channel_order);
      set.channel_order = g_strdup("unknown (pass --channel-order to convert)");
      g_free(set.channel_order_from);
      set.channel_order_from = g_strdup("neither the manifest nor the file name");
    }
  }
  if (st) {
    fprintf(out, "  networks:    not convertible: %s\n", cerr);
  } else {
    fprintf(out, "  layout:      %s\n", set.layout);
    fprintf(out, "  colour:      %s (from the %s)\n", set.channel_order, set.channel_order_from);
    if (set.published) fprintf(out, "  published:   yes (%s, sha256 %s...)\n", set.published->config, set.published->sha256_prefix);
    fprintf(out, "  discriminators: %s\n", set.has_discriminators ? "present" : "absent");
    fprintf(out, "  networks:\n");
    for (size_t i = 0; i < set.n; i++) {
      const char *src = i2i_model_meta(set.nets[i].model, "i2i.source_domain");
      const char *dst = i2i_model_meta(set.nets[i].model, "i2i.target_domain");
      bool known = (src && src[0]) || (dst && dst[0]);
      fprintf(out, "    %-28s %s%s.onnx%s  %s%s%s%s%s\n", set.nets[i].key, set.nets[i].task,
              set.nets[i].discriminator ? ".D" : "", set.nets[i].discriminator ? " (discriminator)" : "",
              set.nets[i].architecture, known ? "; domains " : "", known ? (src && src[0] ? src : "?") : "",
              known ? " -> " : "", known ? (dst && dst[0] ? dst : "?") : "");
    }
    convert_set_free(&set);
  }
  fprintf(out, "  tensors (%zu):\n", info->n_tensors);
  for (size_t i = 0; i < info->n_tensors; i++) {
    const pth_tensor *t = &info->tensors[i];
    char sh[96];
    shape_str(t, sh, sizeof sh);
    d = shown_dup(t->key);
    fprintf(out, "    %-72s %-8s %s\n", d, pth_dtype_name(t->stored_dtype), sh);
    g_free(d);
  }
  i2i_ctx_free(ctx);
  pth_file_free(pf);
  return 0;
}
