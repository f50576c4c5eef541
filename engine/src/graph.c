/* graph.c: the engine's graph: values, nodes and metadata, the graph-builder API, and the
 * finalisation that turns a raw graph (from ONNX or the builder) into a checked model.
 *
 * Finalisation resolves names, rejects cycles, undefined inputs, unknown ops and bad attributes
 * with a message naming the node, folds constant subgraphs (fold.c), drops dead nodes, orders
 * the compute nodes and packs every float parameter into one flat buffer. It does not know
 * about ONNX bytes (onnx_read.c / onnx_write.c) or about running (plan.c, cpu/).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- tensors ----------------------------------------------------------------------------- */

i2i_tensor *tensor_new(i2i_ctx *ctx, int dtype, int rank, const int64_t *dims) {
  if (rank < 0 || rank > I2I_MAX_RANK) return NULL;
  size_t numel = 1;
  for (int i = 0; i < rank; i++) {
    if (dims[i] < 0 || !i2i_mul_ok(numel, (size_t)dims[i], &numel)) return NULL;
  }
  size_t esz = (dtype == DT_FLOAT || dtype == DT_FLOAT16 || dtype == DT_DOUBLE || dtype == DT_BFLOAT16) ? 4 : 8;
  size_t bytes;
  if (!i2i_mul_ok(numel, esz, &bytes)) return NULL;
  void *data = i2i_alloc_aligned(ctx, bytes ? bytes : 1);
  if (!data) return NULL;
  memset(data, 0, bytes ? bytes : 1);
  i2i_tensor *t = tensor_adopt(ctx, dtype, rank, dims, data);
  if (!t) i2i_free_aligned(ctx, data);
  return t;
}

i2i_tensor *tensor_adopt(i2i_ctx *ctx, int dtype, int rank, const int64_t *dims, void *data) {
  if (rank < 0 || rank > I2I_MAX_RANK) return NULL;
  size_t numel = 1;
  for (int i = 0; i < rank; i++)
    if (dims[i] < 0 || !i2i_mul_ok(numel, (size_t)dims[i], &numel)) return NULL;
  i2i_tensor *t = i2i_calloc(ctx, 1, sizeof *t);
  if (!t) return NULL;
  t->data = data;
  t->dtype = dtype;
  t->rank = rank;
  for (int i = 0; i < rank; i++) t->dims[i] = dims[i];
  t->numel = numel;
  return t;
}

void tensor_free(i2i_ctx *ctx, i2i_tensor *t) {
  if (!t) return;
  if (!t->borrowed) i2i_free_aligned(ctx, t->data);
  i2i_dealloc(ctx, t);
}

i2i_tensor *tensor_clone(i2i_ctx *ctx, const i2i_tensor *s) {
  i2i_tensor *t = tensor_new(ctx, s->dtype, s->rank, s->dims);
  if (t) memcpy(t->data, s->data, s->numel * (tensor_is_float(s) ? 4 : 8));
  return t;
}

/* ---- graph containers -------------------------------------------------------------------- */

void graph_init(i2i_graph *g) {
  memset(g, 0, sizeof *g);
  g->input = g->output = -1;
  g->in_channels = g->out_channels = -1;
  g->opset = 17;
  g->ir_version = 8;
}

static void attr_clear(i2i_ctx *ctx, i2i_attr_v *a) {
  i2i_dealloc(ctx, a->name);
  i2i_dealloc(ctx, a->ints);
  i2i_dealloc(ctx, a->floats);
  i2i_dealloc(ctx, a->s);
  tensor_free(ctx, a->t);
}

void graph_clear(i2i_ctx *ctx, i2i_graph *g) {
  for (int i = 0; i < g->n_values; i++) {
    i2i_dealloc(ctx, g->values[i].name);
    tensor_free(ctx, g->values[i].c);
  }
  for (int i = 0; i < g->n_nodes; i++) {
    i2i_node *n = &g->nodes[i];
    i2i_dealloc(ctx, n->op_type);
    i2i_dealloc(ctx, n->name);
    i2i_dealloc(ctx, n->domain);
    i2i_dealloc(ctx, n->in);
    i2i_dealloc(ctx, n->out);
    for (int a = 0; a < n->n_attr; a++) attr_clear(ctx, &n->attr[a]);
    i2i_dealloc(ctx, n->attr);
  }
  for (int i = 0; i < g->n_meta; i++) {
    i2i_dealloc(ctx, g->meta[i].key);
    i2i_dealloc(ctx, g->meta[i].value);
  }
  i2i_dealloc(ctx, g->values);
  i2i_dealloc(ctx, g->nodes);
  i2i_dealloc(ctx, g->meta);
  i2i_dealloc(ctx, g->order);
  i2i_dealloc(ctx, g->hash);
  i2i_dealloc(ctx, g->producer_name);
  i2i_dealloc(ctx, g->producer_version);
  i2i_dealloc(ctx, g->graph_name);
  i2i_dealloc(ctx, g->doc);
  i2i_free_aligned(ctx, g->spare);
  graph_init(g);
}

static uint64_t str_hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* Open-addressing index from value name to value index; capacity is a power of two kept above
 * twice the value count. */
static bool hash_rebuild(i2i_ctx *ctx, i2i_graph *g, int cap) {
  int *h = i2i_alloc(ctx, sizeof(int) * (size_t)cap);
  if (!h) return false;
  for (int i = 0; i < cap; i++) h[i] = -1;
  for (int v = 0; v < g->n_values; v++) {
    size_t k = str_hash(g->values[v].name) & (size_t)(cap - 1);
    while (h[k] >= 0) k = (k + 1) & (size_t)(cap - 1);
    h[k] = v;
  }
  i2i_dealloc(ctx, g->hash);
  g->hash = h;
  g->hash_cap = cap;
  return true;
}

int graph_find_value(const i2i_graph *g, const char *name) {
  if (!g->hash_cap) return -1;
  size_t k = str_hash(name) & (size_t)(g->hash_cap - 1);
  while (g->hash[k] >= 0) {
    if (!strcmp(g->values[g->hash[k]].name, name)) return g->hash[k];
    k = (k + 1) & (size_t)(g->hash_cap - 1);
  }
  return -1;
}

int graph_value(i2i_ctx *ctx, i2i_graph *g, const char *name) {
  int v = graph_find_value(g, name);
  if (v >= 0) return v;
  if (g->n_values == g->cap_values) {
    int nc = g->cap_values ? g->cap_values * 2 : 64;
    if (nc > (1 << 26)) return -1;
    i2i_value *nv = i2i_calloc(ctx, (size_t)nc, sizeof *nv);
    if (!nv) return -1;
    if (g->n_values) memcpy(nv, g->values, sizeof *nv * (size_t)g->n_values);
    i2i_dealloc(ctx, g->values);
    g->values = nv;
    g->cap_values = nc;
  }
  if ((g->n_values + 1) * 2 > g->hash_cap) {
    int cap = g->hash_cap ? g->hash_cap * 2 : 128;
    while ((g->n_values + 1) * 2 > cap) cap *= 2;
    if (!hash_rebuild(ctx, g, cap)) return -1;
  }
  char *nm = i2i_strdup(ctx, name);
  if (!nm) return -1;
  v = g->n_values++;
  i2i_value *val = &g->values[v];
  memset(val, 0, sizeof *val);
  val->name = nm;
  val->producer = -1;
  val->alias = -1;
  val->channels = -1;
  size_t k = str_hash(name) & (size_t)(g->hash_cap - 1);
  while (g->hash[k] >= 0) k = (k + 1) & (size_t)(g->hash_cap - 1);
  g->hash[k] = v;
  return v;
}

i2i_status graph_add_node(i2i_ctx *ctx, i2i_graph *g, const char *op_type, const char *name,
                          const char *domain, int n_in, const char *const *in, int n_out,
                          const char *const *out, i2i_node **node_out) {
  if ((uint32_t)g->n_nodes >= ctx->p.limits.max_nodes)
    return i2i_fail(ctx, I2I_E_LIMIT, "graph has more than %u nodes (limit)", ctx->p.limits.max_nodes);
  if (n_in < 0 || n_out < 1 || n_in > 4096 || n_out > 16)
    return i2i_fail(ctx, I2I_E_FORMAT, "node '%s' (%s): %d inputs and %d outputs", name ? name : "",
                    op_type ? op_type : "", n_in, n_out);
  if (g->n_nodes == g->cap_nodes) {
    int nc = g->cap_nodes ? g->cap_nodes * 2 : 64;
    i2i_node *nn = i2i_calloc(ctx, (size_t)nc, sizeof *nn);
    if (!nn) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory adding a node");
    if (g->n_nodes) memcpy(nn, g->nodes, sizeof *nn * (size_t)g->n_nodes);
    i2i_dealloc(ctx, g->nodes);
    g->nodes = nn;
    g->cap_nodes = nc;
  }
  i2i_node *n = &g->nodes[g->n_nodes];
  memset(n, 0, sizeof *n);
  n->bn_mean = n->bn_var = -1;
  n->ordinal = -1;
  n->op_type = i2i_strdup(ctx, op_type);
  n->name = i2i_strdup(ctx, name);
  n->domain = i2i_strdup(ctx, domain);
  n->in = i2i_alloc(ctx, sizeof(int) * (size_t)(n_in ? n_in : 1));
  n->out = i2i_alloc(ctx, sizeof(int) * (size_t)n_out);
  g->n_nodes++; /* owned by the graph from here on: graph_clear frees partial nodes */
  if (!n->op_type || !n->name || !n->domain || !n->in || !n->out)
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory adding a node");
  n->n_in = n_in;
  n->n_out = n_out;
  for (int i = 0; i < n_in; i++) n->in[i] = -1;
  for (int i = 0; i < n_out; i++) n->out[i] = -1;
  for (int i = 0; i < n_in; i++) {
    if (!in[i] || !in[i][0]) continue;
    int v = graph_value(ctx, g, in[i]);
    if (v < 0) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory adding a value");
    n->in[i] = v;
  }
  int self = g->n_nodes - 1;
  for (int i = 0; i < n_out; i++) {
    if (!out[i] || !out[i][0]) continue;
    int v = graph_value(ctx, g, out[i]);
    if (v < 0) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory adding a value");
    i2i_value *val = &g->values[v];
    if (val->producer >= 0 || val->c || v == g->input)
      return i2i_fail(ctx, I2I_E_FORMAT, "node '%s' (%s): value '%s' is produced more than once",
                      n->name, n->op_type, out[i]);
    val->producer = self;
    n->out[i] = v;
  }
  if (node_out) *node_out = n;
  return I2I_OK;
}

i2i_status graph_set_meta(i2i_ctx *ctx, i2i_graph *g, const char *key, const char *value) {
  for (int i = 0; i < g->n_meta; i++) {
    if (!strcmp(g->meta[i].key, key)) {
      char *v = i2i_strdup(ctx, value);
      if (!v) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory setting metadata");
      i2i_dealloc(ctx, g->meta[i].value);
      g->meta[i].value = v;
      return I2I_OK;
    }
  }
  if (g->n_meta == g->cap_meta) {
    int nc = g->cap_meta ? g->cap_meta * 2 : 16;
    i2i_meta_kv *nm = i2i_calloc(ctx, (size_t)nc, sizeof *nm);
    if (!nm) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory setting metadata");
    if (g->n_meta) memcpy(nm, g->meta, sizeof *nm * (size_t)g->n_meta);
    i2i_dealloc(ctx, g->meta);
    g->meta = nm;
    g->cap_meta = nc;
  }
  char *k = i2i_strdup(ctx, key), *v = i2i_strdup(ctx, value);
  if (!k || !v) {
    i2i_dealloc(ctx, k);
    i2i_dealloc(ctx, v);
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory setting metadata");
  }
  g->meta[g->n_meta].key = k;
  g->meta[g->n_meta].value = v;
  g->n_meta++;
  return I2I_OK;
}

const char *graph_meta(const i2i_graph *g, const char *key) {
  for (int i = 0; i < g->n_meta; i++)
    if (!strcmp(g->meta[i].key, key)) return g->meta[i].value;
  return NULL;
}

const i2i_attr_v *node_attr(const i2i_node *n, const char *name) {
  for (int i = 0; i < n->n_attr; i++)
    if (n->attr[i].name && !strcmp(n->attr[i].name, name)) return &n->attr[i];
  return NULL;
}

/* ---- op table ---------------------------------------------------------------------------- */

static const struct {
  const char *name;
  i2i_op op;
  bool compute;
} op_table[] = {
  {"Conv", OP_CONV, true}, {"ConvTranspose", OP_CONVT, true},
  {"InstanceNormalization", OP_INSTNORM, true}, {"BatchNormalization", OP_BATCHNORM, true},
  {"Pad", OP_PAD, true}, {"Relu", OP_RELU, true}, {"LeakyRelu", OP_LRELU, true},
  {"Tanh", OP_TANH, true}, {"Add", OP_ADD, true}, {"Concat", OP_CONCAT, true},
  {"Dropout", OP_DROPOUT, true}, {"Identity", OP_IDENTITY, true},
  {"Constant", OP_CONSTANT, false}, {"ConstantOfShape", OP_CONSTOFSHAPE, false},
  {"Reshape", OP_RESHAPE, false}, {"Slice", OP_SLICE, false}, {"Transpose", OP_TRANSPOSE, false},
  {"Cast", OP_CAST, false}, {"Shape", OP_SHAPE, false}, {"Gather", OP_GATHER, false},
  {"Mul", OP_MUL, false}, {"Sub", OP_SUB, false}, {"Div", OP_DIV, false},
  {"Unsqueeze", OP_UNSQUEEZE, false}, {"Squeeze", OP_SQUEEZE, false},
};

static i2i_op op_lookup(const char *name) {
  for (size_t i = 0; i < sizeof op_table / sizeof op_table[0]; i++)
    if (!strcmp(op_table[i].name, name)) return op_table[i].op;
  return 0;
}

/* Formats "node 'NAME' (OP): MESSAGE". */
static i2i_status node_fail(i2i_ctx *ctx, i2i_status st, const i2i_node *n, const char *fmt, ...)
    I2I_PRINTF(4, 5);
static i2i_status node_fail(i2i_ctx *ctx, i2i_status st, const i2i_node *n, const char *fmt, ...) {
  char msg[I2I_ERRLEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return i2i_fail(ctx, st, "node '%s' (%s): %s", n->name, n->op_type, msg);
}

/* ---- attribute parsing ------------------------------------------------------------------- */

static i2i_status attr_ints(i2i_ctx *ctx, const i2i_node *n, const char *name, int want, int *dst,
                            int64_t lo, int64_t hi, bool *present) {
  const i2i_attr_v *a = node_attr(n, name);
  if (present) *present = a != NULL;
  if (!a) return I2I_OK;
  if (a->type != ATTR_INTS)
    return node_fail(ctx, I2I_E_FORMAT, n, "attribute '%s' must be a list of ints", name);
  if (a->n != want)
    return node_fail(ctx, I2I_E_UNSUPPORTED, n, "attribute '%s' has %d values, expected %d (2-D only)",
                     name, a->n, want);
  for (int i = 0; i < want; i++) {
    if (a->ints[i] < lo || a->ints[i] > hi)
      return node_fail(ctx, I2I_E_UNSUPPORTED, n, "attribute '%s' value %lld outside %lld..%lld", name,
                       (long long)a->ints[i], (long long)lo, (long long)hi);
    dst[i] = (int)a->ints[i];
  }
  return I2I_OK;
}

static i2i_status attr_float(i2i_ctx *ctx, const i2i_node *n, const char *name, float def, float *dst) {
  const i2i_attr_v *a = node_attr(n, name);
  *dst = def;
  if (!a) return I2I_OK;
  if (a->type != ATTR_FLOAT) return node_fail(ctx, I2I_E_FORMAT, n, "attribute '%s' must be a float", name);
  if (!isfinite(a->f)) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "attribute '%s' is not finite", name);
  *dst = a->f;
  return I2I_OK;
}

static i2i_status attr_int(i2i_ctx *ctx, const i2i_node *n, const char *name, int64_t def, int64_t *dst) {
  const i2i_attr_v *a = node_attr(n, name);
  *dst = def;
  if (!a) return I2I_OK;
  if (a->type != ATTR_INT) return node_fail(ctx, I2I_E_FORMAT, n, "attribute '%s' must be an int", name);
  *dst = a->i;
  return I2I_OK;
}

/* Every attribute a compute node carries must be one i2i reads. */
static i2i_status check_known_attrs(i2i_ctx *ctx, const i2i_node *n, const char *const *known) {
  for (int i = 0; i < n->n_attr; i++) {
    bool ok = false;
    for (const char *const *k = known; *k; k++)
      if (!strcmp(*k, n->attr[i].name)) ok = true;
    if (!ok) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "attribute '%s' is not supported", n->attr[i].name);
  }
  return I2I_OK;
}

static const i2i_tensor *const_in(const i2i_graph *g, const i2i_node *n, int i) {
  if (i >= n->n_in || n->in[i] < 0) return NULL;
  return g->values[n->in[i]].c;
}

/* Whether none of x[0 .. n) is an infinity or a NaN (all exponent bits set): one pass with no early
 * exit, which the compiler vectorises (a loading model's largest check). */
static bool all_finite(const float *x, size_t n) {
  uint32_t bad = 0;
  for (size_t k = 0; k < n; k++) {
    uint32_t u;
    memcpy(&u, x + k, sizeof u);
    bad |= (u & 0x7f800000u) == 0x7f800000u;
  }
  return !bad;
}

static i2i_status need_float_param(i2i_ctx *ctx, const i2i_graph *g, const i2i_node *n, int i,
                                   const char *what, int rank) {
  if (i >= n->n_in || n->in[i] < 0) return node_fail(ctx, I2I_E_FORMAT, n, "missing input %s", what);
  const i2i_tensor *t = g->values[n->in[i]].c;
  if (!t)
    return node_fail(ctx, I2I_E_UNSUPPORTED, n, "input %s ('%s') must be a constant", what,
                     g->values[n->in[i]].name);
  if (!tensor_is_float(t)) return node_fail(ctx, I2I_E_FORMAT, n, "input %s must be float", what);
  if (t->rank != rank) return node_fail(ctx, I2I_E_FORMAT, n, "input %s has rank %d, expected %d", what, t->rank, rank);
  if (!all_finite(t->data, t->numel))
    return node_fail(ctx, I2I_E_FORMAT, n, "input %s ('%s') holds a non-finite value", what,
                     g->values[n->in[i]].name);
  return I2I_OK;
}

static i2i_status parse_conv(i2i_ctx *ctx, const i2i_graph *g, i2i_node *n) {
  static const char *const known[] = {"auto_pad", "dilations", "group", "kernel_shape", "pads",
                                      "strides", "output_padding", NULL};
  i2i_status st = check_known_attrs(ctx, n, known);
  if (st) return st;
  if (n->n_in < 2 || n->n_in > 3) return node_fail(ctx, I2I_E_FORMAT, n, "expects 2 or 3 inputs, has %d", n->n_in);
  if ((st = need_float_param(ctx, g, n, 1, "W", 4))) return st;
  const i2i_tensor *w = const_in(g, n, 1);
  conv_params *c = &n->conv;
  c->kernel[0] = (int)w->dims[2];
  c->kernel[1] = (int)w->dims[3];
  c->stride[0] = c->stride[1] = 1;
  c->dilation[0] = c->dilation[1] = 1;
  memset(c->pads, 0, sizeof c->pads);
  c->out_pad[0] = c->out_pad[1] = 0;
  if (w->dims[0] < 1 || w->dims[1] < 1 || w->dims[2] < 1 || w->dims[3] < 1 || w->dims[2] > 15 || w->dims[3] > 15 ||
      w->dims[0] > 65536 || w->dims[1] > 65536)
    return node_fail(ctx, I2I_E_UNSUPPORTED, n, "weight shape [%lld,%lld,%lld,%lld] outside the supported range",
                     (long long)w->dims[0], (long long)w->dims[1], (long long)w->dims[2], (long long)w->dims[3]);
  int ks[2] = {0, 0};
  bool has_ks;
  if ((st = attr_ints(ctx, n, "kernel_shape", 2, ks, 1, 15, &has_ks))) return st;
  if (has_ks && (ks[0] != c->kernel[0] || ks[1] != c->kernel[1]))
    return node_fail(ctx, I2I_E_FORMAT, n, "kernel_shape %dx%d disagrees with the weight %dx%d", ks[0], ks[1],
                     c->kernel[0], c->kernel[1]);
  if ((st = attr_ints(ctx, n, "strides", 2, c->stride, 1, 16, NULL))) return st;
  if ((st = attr_ints(ctx, n, "dilations", 2, c->dilation, 1, 16, NULL))) return st;
  int p[4] = {0, 0, 0, 0};
  if ((st = attr_ints(ctx, n, "pads", 4, p, 0, 64, NULL))) return st;
  c->pads[0] = p[0]; /* ONNX: x1_begin (H), x2_begin (W), x1_end, x2_end */
  c->pads[1] = p[1];
  c->pads[2] = p[2];
  c->pads[3] = p[3];
  int64_t group;
  if ((st = attr_int(ctx, n, "group", 1, &group))) return st;
  if (group != 1) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "group %lld is not supported (only 1)", (long long)group);
  c->group = 1;
  const i2i_attr_v *ap = node_attr(n, "auto_pad");
  if (ap) {
    if (ap->type != ATTR_STRING) return node_fail(ctx, I2I_E_FORMAT, n, "auto_pad must be a string");
    if (strcmp(ap->s, "NOTSET") && strcmp(ap->s, "VALID"))
      return node_fail(ctx, I2I_E_UNSUPPORTED, n, "auto_pad '%s' is not supported (NOTSET or VALID)", ap->s);
    if (!strcmp(ap->s, "VALID") && (p[0] | p[1] | p[2] | p[3]))
      return node_fail(ctx, I2I_E_FORMAT, n, "auto_pad VALID with explicit pads");
  }
  if (n->op == OP_CONV) {
    if (node_attr(n, "output_padding")) return node_fail(ctx, I2I_E_FORMAT, n, "output_padding on a Conv");
  } else {
    if (node_attr(n, "output_shape"))
      return node_fail(ctx, I2I_E_UNSUPPORTED, n, "attribute 'output_shape' is not supported");
    if ((st = attr_ints(ctx, n, "output_padding", 2, c->out_pad, 0, 15, NULL))) return st;
    for (int i = 0; i < 2; i++)
      if (c->out_pad[i] >= c->stride[i] && c->out_pad[i] >= c->dilation[i])
        return node_fail(ctx, I2I_E_FORMAT, n, "output_padding %d not below stride or dilation", c->out_pad[i]);
  }
  int64_t m = n->op == OP_CONV ? w->dims[0] : w->dims[1];
  if (n->n_in == 3 && n->in[2] >= 0) {
    if ((st = need_float_param(ctx, g, n, 2, "B", 1))) return st;
    if (const_in(g, n, 2)->dims[0] != m)
      return node_fail(ctx, I2I_E_FORMAT, n, "bias has %lld values for %lld output channels",
                       (long long)const_in(g, n, 2)->dims[0], (long long)m);
  }
  return I2I_OK;
}

static i2i_status parse_norm(i2i_ctx *ctx, const i2i_graph *g, i2i_node *n) {
  i2i_status st;
  if (n->op == OP_INSTNORM) {
    static const char *const known[] = {"epsilon", NULL};
    if ((st = check_known_attrs(ctx, n, known))) return st;
    if (n->n_in != 3) return node_fail(ctx, I2I_E_FORMAT, n, "expects 3 inputs, has %d", n->n_in);
  } else {
    static const char *const known[] = {"epsilon", "momentum", "training_mode", "spatial", NULL};
    if ((st = check_known_attrs(ctx, n, known))) return st;
    if (n->n_in != 5) return node_fail(ctx, I2I_E_FORMAT, n, "expects 5 inputs, has %d", n->n_in);
  }
  if ((st = attr_float(ctx, n, "epsilon", 1e-5f, &n->eps))) return st;
  if (!(n->eps > 0)) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "epsilon %g must be positive", n->eps);
  int nparam = n->op == OP_INSTNORM ? 2 : 4;
  static const char *const pname[] = {"scale", "B", "mean", "var"};
  int64_t c = -1;
  for (int i = 0; i < nparam; i++) {
    if ((st = need_float_param(ctx, g, n, 1 + i, pname[i], 1))) return st;
    int64_t d = const_in(g, n, 1 + i)->dims[0];
    if (c >= 0 && d != c) return node_fail(ctx, I2I_E_FORMAT, n, "input %s has %lld values, expected %lld", pname[i], (long long)d, (long long)c);
    c = d;
  }
  if (n->op == OP_BATCHNORM) {
    if ((st = attr_float(ctx, n, "momentum", 0.9f, &n->momentum))) return st;
    int64_t tm = 0;
    if ((st = attr_int(ctx, n, "training_mode", 0, &tm))) return st;
    if (tm != 0 && tm != 1) return node_fail(ctx, I2I_E_FORMAT, n, "training_mode %lld", (long long)tm);
    int outs = 0;
    for (int i = 0; i < n->n_out; i++) outs += n->out[i] >= 0;
    n->bn_training = g->opset >= 14 ? tm == 1 : outs > 1;
    const float *var = const_in(g, n, 4)->data;
    if (!n->bn_training)
      for (int64_t i = 0; i < c; i++)
        if (var[i] < 0) return node_fail(ctx, I2I_E_FORMAT, n, "negative running variance");
    n->bn_mean = n->in[3];
    n->bn_var = n->in[4];
  }
  return I2I_OK;
}

static i2i_status parse_pad(i2i_ctx *ctx, const i2i_graph *g, i2i_node *n) {
  static const char *const known[] = {"mode", NULL};
  i2i_status st = check_known_attrs(ctx, n, known);
  if (st) return st;
  if (n->n_in < 2 || n->n_in > 3) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "expects 2 or 3 inputs (opset 11+ Pad)");
  const i2i_attr_v *m = node_attr(n, "mode");
  n->pad_mode = PAD_CONSTANT;
  if (m) {
    if (m->type != ATTR_STRING) return node_fail(ctx, I2I_E_FORMAT, n, "mode must be a string");
    if (!strcmp(m->s, "reflect")) n->pad_mode = PAD_REFLECT;
    else if (!strcmp(m->s, "edge")) n->pad_mode = PAD_EDGE;
    else if (strcmp(m->s, "constant")) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "mode '%s' is not supported", m->s);
  }
  const i2i_tensor *p = const_in(g, n, 1);
  if (!p) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "pads must be constant after folding");
  if (tensor_is_float(p) || p->rank != 1 || p->numel != 8)
    return node_fail(ctx, I2I_E_UNSUPPORTED, n, "pads must be 8 int64 values (4-D input)");
  const int64_t *pv = p->data;
  for (int i = 0; i < 8; i++) {
    if (pv[i] < 0 || pv[i] > 4096)
      return node_fail(ctx, I2I_E_UNSUPPORTED, n, "pad value %lld outside 0..4096", (long long)pv[i]);
    n->pads8[i] = pv[i];
  }
  if (pv[0] || pv[1] || pv[4] || pv[5]) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "padding of the batch or channel axis");
  n->pad_value = 0;
  if (n->n_in == 3 && n->in[2] >= 0) {
    const i2i_tensor *cv = const_in(g, n, 2);
    if (!cv || !tensor_is_float(cv) || cv->numel != 1)
      return node_fail(ctx, I2I_E_UNSUPPORTED, n, "constant_value must be a constant float scalar");
    n->pad_value = ((const float *)cv->data)[0];
  }
  return I2I_OK;
}

static i2i_status parse_simple(i2i_ctx *ctx, const i2i_graph *g, i2i_node *n) {
  i2i_status st;
  static const char *const none[] = {NULL};
  switch (n->op) {
  case OP_RELU:
  case OP_TANH:
  case OP_IDENTITY:
    if ((st = check_known_attrs(ctx, n, none))) return st;
    if (n->n_in != 1) return node_fail(ctx, I2I_E_FORMAT, n, "expects 1 input, has %d", n->n_in);
    return I2I_OK;
  case OP_LRELU: {
    static const char *const known[] = {"alpha", NULL};
    if ((st = check_known_attrs(ctx, n, known))) return st;
    if (n->n_in != 1) return node_fail(ctx, I2I_E_FORMAT, n, "expects 1 input, has %d", n->n_in);
    return attr_float(ctx, n, "alpha", 0.01f, &n->alpha);
  }
  case OP_ADD:
    if ((st = check_known_attrs(ctx, n, none))) return st;
    if (n->n_in != 2 || n->in[0] < 0 || n->in[1] < 0) return node_fail(ctx, I2I_E_FORMAT, n, "expects 2 inputs");
    if (g->values[n->in[0]].c || g->values[n->in[1]].c)
      return node_fail(ctx, I2I_E_UNSUPPORTED, n, "adding a constant to an image tensor is not supported");
    return I2I_OK;
  case OP_CONCAT: {
    static const char *const known[] = {"axis", NULL};
    if ((st = check_known_attrs(ctx, n, known))) return st;
    const i2i_attr_v *a = node_attr(n, "axis");
    if (!a || a->type != ATTR_INT) return node_fail(ctx, I2I_E_FORMAT, n, "attribute 'axis' is required");
    if (a->i != 1 && a->i != -3) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "concatenation along axis %lld (only channels)", (long long)a->i);
    if (n->n_in < 1 || n->n_in > 8) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "%d inputs (1 to 8 supported)", n->n_in);
    for (int i = 0; i < n->n_in; i++)
      if (n->in[i] < 0 || g->values[n->in[i]].c)
        return node_fail(ctx, I2I_E_UNSUPPORTED, n, "input %d must be an image tensor", i);
    n->axis = 1;
    return I2I_OK;
  }
  case OP_DROPOUT: {
    static const char *const known[] = {"seed", "ratio", NULL};
    if ((st = check_known_attrs(ctx, n, known))) return st;
    n->ratio = 0.5f;
    if ((st = attr_float(ctx, n, "ratio", 0.5f, &n->ratio))) return st;
    const i2i_tensor *r = const_in(g, n, 1);
    if (n->n_in >= 2 && n->in[1] >= 0) {
      if (!r || !tensor_is_float(r) || r->numel != 1)
        return node_fail(ctx, I2I_E_UNSUPPORTED, n, "ratio must be a constant float scalar");
      n->ratio = ((const float *)r->data)[0];
    }
    if (n->n_in >= 3 && n->in[2] >= 0) {
      const i2i_tensor *t = const_in(g, n, 2);
      if (!t) return node_fail(ctx, I2I_E_UNSUPPORTED, n, "training_mode must be constant");
      if (t->dtype != DT_BOOL || t->numel != 1) return node_fail(ctx, I2I_E_FORMAT, n, "training_mode must be a boolean scalar");
      /* false is ONNX's inference, where Dropout is the identity: then no mode drops (the
       * faithful mode's dropout, design.md, is for nodes that do not say) */
      if (((const int64_t *)t->data)[0] == 0) n->ratio = 0;
    }
    if (!(n->ratio >= 0 && n->ratio < 1)) return node_fail(ctx, I2I_E_FORMAT, n, "ratio %g outside [0, 1)", n->ratio);
    return I2I_OK;
  }
  default:
    return node_fail(ctx, I2I_E_INTERNAL, n, "no parser");
  }
}

/* ---- finalisation ------------------------------------------------------------------------ */

/* Kahn's algorithm over every node; fills `order` (n_nodes entries). */
static i2i_status topo_sort(i2i_ctx *ctx, i2i_graph *g, int *order) {
  int nn = g->n_nodes;
  int *indeg = i2i_calloc(ctx, (size_t)nn + 1, sizeof(int));
  int *cons_start = i2i_calloc(ctx, (size_t)g->n_values + 1, sizeof(int));
  if (!indeg || !cons_start) {
    i2i_dealloc(ctx, indeg);
    i2i_dealloc(ctx, cons_start);
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory sorting the graph");
  }
  size_t nedges = 0;
  for (int i = 0; i < nn; i++)
    for (int k = 0; k < g->nodes[i].n_in; k++) {
      int v = g->nodes[i].in[k];
      if (v >= 0 && g->values[v].producer >= 0) {
        indeg[i]++;
        cons_start[v + 1]++;
        nedges++;
      }
    }
  for (int v = 0; v < g->n_values; v++) cons_start[v + 1] += cons_start[v];
  int *cons = i2i_alloc(ctx, sizeof(int) * (nedges + 1));
  int *fill = i2i_calloc(ctx, (size_t)g->n_values + 1, sizeof(int));
  i2i_status st = I2I_OK;
  if (!cons || !fill) {
    st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory sorting the graph");
    goto done;
  }
  for (int i = 0; i < nn; i++)
    for (int k = 0; k < g->nodes[i].n_in; k++) {
      int v = g->nodes[i].in[k];
      if (v >= 0 && g->values[v].producer >= 0) cons[cons_start[v] + fill[v]++] = i;
    }
  int head = 0, tail = 0;
  for (int i = 0; i < nn; i++)
    if (!indeg[i]) order[tail++] = i;
  while (head < tail) {
    int i = order[head++];
    for (int k = 0; k < g->nodes[i].n_out; k++) {
      int v = g->nodes[i].out[k];
      if (v < 0) continue;
      for (int e = cons_start[v]; e < cons_start[v + 1]; e++)
        if (--indeg[cons[e]] == 0) order[tail++] = cons[e];
    }
  }
  if (tail != nn) {
    for (int i = 0; i < nn; i++)
      if (indeg[i]) {
        st = node_fail(ctx, I2I_E_FORMAT, &g->nodes[i], "the graph has a cycle through this node");
        break;
      }
  }
done:
  i2i_dealloc(ctx, indeg);
  i2i_dealloc(ctx, cons_start);
  i2i_dealloc(ctx, cons);
  i2i_dealloc(ctx, fill);
  return st;
}

static int resolve(const i2i_graph *g, int v) {
  int guard = 0;
  while (v >= 0 && g->values[v].alias >= 0 && guard++ < g->n_values) v = g->values[v].alias;
  return v;
}

/* Marks the nodes the output depends on; its scratch goes through the allocator hook. */
static i2i_status mark_live(i2i_ctx *ctx, const i2i_graph *g, const int *order, int n_order, bool *live) {
  bool *vneed = i2i_calloc(ctx, (size_t)g->n_values + 1, 1);
  if (!vneed) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory finding the live nodes");
  vneed[g->output] = true;
  for (int k = n_order - 1; k >= 0; k--) {
    const i2i_node *n = &g->nodes[order[k]];
    bool need = false;
    for (int o = 0; o < n->n_out; o++)
      if (n->out[o] >= 0 && vneed[n->out[o]]) need = true;
    if (!need) continue;
    live[order[k]] = true;
    for (int i = 0; i < n->n_in; i++)
      if (n->in[i] >= 0) vneed[n->in[i]] = true;
  }
  i2i_dealloc(ctx, vneed);
  return I2I_OK;
}

static i2i_status parse_compute(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  switch (n->op) {
  case OP_CONV:
  case OP_CONVT: return parse_conv(ctx, g, n);
  case OP_INSTNORM:
  case OP_BATCHNORM: return parse_norm(ctx, g, n);
  case OP_PAD: return parse_pad(ctx, g, n);
  default: return parse_simple(ctx, g, n);
  }
}

/* Applies metadata i2i.batchnorm: InstanceNormalization nodes that stand for BatchNorm layers
 * (Pix2Pix written by the converter), with "<name>.running_mean/var" initializers. */
static i2i_status apply_batchnorm_meta(i2i_ctx *ctx, i2i_graph *g) {
  const char *list = graph_meta(g, "i2i.batchnorm");
  if (!list || !*list) return I2I_OK;
  const char *p = list;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    char name[512];
    if (len == 0 || len >= sizeof name - 32)
      return i2i_fail(ctx, I2I_E_FORMAT, "metadata i2i.batchnorm: bad entry near '%.40s'", p);
    memcpy(name, p, len);
    name[len] = 0;
    int found = -1;
    for (int i = 0; i < g->n_nodes; i++)
      if (g->nodes[i].op == OP_INSTNORM && !strcmp(g->nodes[i].name, name)) found = i;
    if (found < 0)
      return i2i_fail(ctx, I2I_E_FORMAT, "metadata i2i.batchnorm names '%s', which is not an InstanceNormalization node", name);
    i2i_node *n = &g->nodes[found];
    char key[600];
    snprintf(key, sizeof key, "%s.running_mean", name);
    int vm = graph_find_value(g, key);
    snprintf(key, sizeof key, "%s.running_var", name);
    int vv = graph_find_value(g, key);
    if (vm < 0 || vv < 0 || !g->values[vm].c || !g->values[vv].c)
      return i2i_fail(ctx, I2I_E_FORMAT, "BatchNorm node '%s' has no running_mean/running_var initializers", name);
    const i2i_tensor *tm = g->values[vm].c, *tv = g->values[vv].c;
    const i2i_tensor *sc = g->values[n->in[1]].c;
    if (!tensor_is_float(tm) || !tensor_is_float(tv) || tm->rank != 1 || tv->rank != 1 ||
        !sc || tm->numel != sc->numel || tv->numel != sc->numel)
      return i2i_fail(ctx, I2I_E_FORMAT, "BatchNorm node '%s': running statistics do not match its %zu channels", name,
                      sc ? sc->numel : (size_t)0);
    for (size_t k = 0; k < tv->numel; k++)
      if (!(((const float *)tv->data)[k] >= 0) || !isfinite(((const float *)tm->data)[k]))
        return i2i_fail(ctx, I2I_E_FORMAT, "BatchNorm node '%s': invalid running statistics", name);
    n->bn_from_in = true;
    n->bn_training = true;
    n->bn_mean = vm;
    n->bn_var = vv;
    p += len;
    if (*p == ',') p++;
  }
  return I2I_OK;
}

/* Packs every float constant a compute node (or eval-mode statistics) reads into one buffer: the
 * graph's spare memory when it is large enough (a loaded file's bytes: its pages are already
 * mapped, where a fresh buffer's would fault in one at a time), else a new one. */
static i2i_status pack_weights(i2i_ctx *ctx, i2i_model *m) {
  i2i_graph *g = &m->g;
  bool *used = i2i_calloc(ctx, (size_t)g->n_values + 1, 1);
  if (!used) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory packing weights");
  for (int k = 0; k < g->n_order; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    for (int i = 0; i < n->n_in; i++)
      if (n->in[i] >= 0 && g->values[n->in[i]].c) used[n->in[i]] = true;
    if (n->bn_mean >= 0) used[n->bn_mean] = true;
    if (n->bn_var >= 0) used[n->bn_var] = true;
  }
  size_t total = 0;
  for (int v = 0; v < g->n_values; v++) {
    const i2i_tensor *t = g->values[v].c;
    if (!t) continue;
    if (!used[v]) {
      tensor_free(ctx, g->values[v].c);
      g->values[v].c = NULL;
      continue;
    }
    if (!tensor_is_float(t)) continue;
    size_t padded = (t->numel + 15) & ~(size_t)15;
    if (!i2i_add_ok(total, padded, &total)) {
      i2i_dealloc(ctx, used);
      return i2i_fail(ctx, I2I_E_LIMIT, "weights too large");
    }
  }
  size_t bytes;
  if (!i2i_mul_ok(total ? total : 1, sizeof(float), &bytes)) {
    i2i_dealloc(ctx, used);
    return i2i_fail(ctx, I2I_E_LIMIT, "weights too large");
  }
  void *spare = g->spare;
  g->spare = NULL;
  if (spare && g->spare_bytes >= bytes) {
    m->weights = spare;
  } else {
    i2i_free_aligned(ctx, spare);
    m->weights = i2i_alloc_aligned(ctx, bytes);
  }
  if (!m->weights) {
    i2i_dealloc(ctx, used);
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory for %zu bytes of weights", bytes);
  }
  m->n_weights = total;
  size_t off = 0;
  for (int v = 0; v < g->n_values; v++) {
    i2i_tensor *t = g->values[v].c;
    if (!t || !tensor_is_float(t)) continue;
    float *dst = m->weights + off;
    memcpy(dst, t->data, t->numel * sizeof(float));
    size_t padded = (t->numel + 15) & ~(size_t)15;
    memset(dst + t->numel, 0, (padded - t->numel) * sizeof(float));
    i2i_free_aligned(ctx, t->data);
    t->data = dst;
    t->borrowed = true;
    off += padded;
  }
  i2i_dealloc(ctx, used);
  return I2I_OK;
}

/* Name arrays behind i2i_model_node(). */
static i2i_status build_io_names(i2i_ctx *ctx, i2i_model *m) {
  const i2i_graph *g = &m->g;
  size_t total = 0;
  m->io_off = i2i_alloc(ctx, sizeof(size_t) * (size_t)(g->n_order + 1));
  if (!m->io_off) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  for (int k = 0; k < g->n_order; k++) {
    m->io_off[k] = total;
    total += (size_t)(g->nodes[g->order[k]].n_in + g->nodes[g->order[k]].n_out);
  }
  m->io_names = i2i_alloc(ctx, sizeof(char *) * (total + 1));
  if (!m->io_names) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  size_t j = 0;
  for (int k = 0; k < g->n_order; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    for (int i = 0; i < n->n_in; i++) m->io_names[j++] = n->in[i] >= 0 ? g->values[n->in[i]].name : "";
    for (int i = 0; i < n->n_out; i++) m->io_names[j++] = n->out[i] >= 0 ? g->values[n->out[i]].name : "";
  }
  return I2I_OK;
}

static uint64_t next_serial = 1;

i2i_status model_from_graph(i2i_ctx *ctx, i2i_graph *g, i2i_model **out) {
  *out = NULL;
  i2i_status st = I2I_OK;
  i2i_model *m = i2i_calloc(ctx, 1, sizeof *m);
  if (!m) {
    graph_clear(ctx, g);
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory creating a model");
  }
  m->ctx = ctx;
  m->g = *g;
  graph_init(g);
  g = &m->g;
  int *order = NULL;
  bool *live = NULL;

  if (g->input < 0) { st = i2i_fail(ctx, I2I_E_FORMAT, "the graph has no image input"); goto fail; }
  if (g->output < 0) { st = i2i_fail(ctx, I2I_E_FORMAT, "the graph has no output"); goto fail; }
  if (g->opset < 11 || g->opset > 17) {
    st = i2i_fail(ctx, I2I_E_UNSUPPORTED, "opset %d is not supported (11 to 17)", g->opset);
    goto fail;
  }
  /* ops, domains */
  for (int i = 0; i < g->n_nodes; i++) {
    i2i_node *n = &g->nodes[i];
    if (n->domain[0] && strcmp(n->domain, "ai.onnx")) {
      st = node_fail(ctx, I2I_E_UNSUPPORTED, n, "operator domain '%s' is not supported", n->domain);
      goto fail;
    }
    n->op = op_lookup(n->op_type);
    if (!n->op) {
      st = node_fail(ctx, I2I_E_UNSUPPORTED, n,
                     "operator not supported (i2i runs Conv, ConvTranspose, InstanceNormalization, "
                     "BatchNormalization, Pad, Relu, LeakyRelu, Tanh, Add, Concat, Dropout, Identity)");
      goto fail;
    }
    for (int a = 0; a < n->n_attr; a++)
      if (!n->attr[a].name || !n->attr[a].name[0]) {
        st = node_fail(ctx, I2I_E_FORMAT, n, "an attribute has no name");
        goto fail;
      }
  }
  /* undefined inputs */
  for (int i = 0; i < g->n_nodes; i++) {
    i2i_node *n = &g->nodes[i];
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      if (v < 0) continue;
      if (g->values[v].producer < 0 && !g->values[v].c && v != g->input) {
        st = node_fail(ctx, I2I_E_FORMAT, n, "input '%s' is not defined by any node, initializer or graph input",
                       g->values[v].name);
        goto fail;
      }
    }
  }
  if (g->values[g->output].producer < 0) {
    st = i2i_fail(ctx, I2I_E_FORMAT, "the graph output '%s' is not produced by any node", g->values[g->output].name);
    goto fail;
  }
  order = i2i_alloc(ctx, sizeof(int) * (size_t)(g->n_nodes + 1));
  live = i2i_calloc(ctx, (size_t)g->n_nodes + 1, 1);
  if (!order || !live) { st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory finalising the graph"); goto fail; }
  if ((st = topo_sort(ctx, g, order))) goto fail;

  /* constant folding and Identity aliasing, in order */
  int folded = 0;
  bool *removed = i2i_calloc(ctx, (size_t)g->n_nodes + 1, 1);
  if (!removed) { st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory finalising the graph"); goto fail; }
  for (int k = 0; k < g->n_nodes; k++) {
    int ni = order[k];
    i2i_node *n = &g->nodes[ni];
    for (int i = 0; i < n->n_in; i++) n->in[i] = resolve(g, n->in[i]);
    bool all_const = true;
    for (int i = 0; i < n->n_in; i++)
      if (n->in[i] >= 0 && !g->values[n->in[i]].c) all_const = false;
    if (n->op == OP_IDENTITY && n->in[0] >= 0 && !g->values[n->in[0]].c) {
      if (n->out[0] == g->output) continue; /* keep: the output must be produced by a node */
      g->values[n->out[0]].alias = n->in[0];
      removed[ni] = true;
      folded++;
      continue;
    }
    bool foldable = n->op >= OP_CONSTANT || n->op == OP_IDENTITY || n->op == OP_ADD || n->op == OP_CONCAT;
    if (n->op == OP_SHAPE && !all_const) {
      st = node_fail(ctx, I2I_E_UNSUPPORTED, n, "shape computations on the image input are not supported");
      i2i_dealloc(ctx, removed);
      goto fail;
    }
    if (foldable && all_const) {
      if ((st = fold_node(ctx, g, ni))) {
        i2i_dealloc(ctx, removed);
        goto fail;
      }
      removed[ni] = true;
      folded++;
    } else if (n->op >= OP_CONSTANT) {
      st = node_fail(ctx, I2I_E_UNSUPPORTED, n, "this operator is only supported on constants (it reads the image tensor)");
      i2i_dealloc(ctx, removed);
      goto fail;
    }
  }
  g->output = resolve(g, g->output);
  if (g->values[g->output].c) {
    i2i_dealloc(ctx, removed);
    st = i2i_fail(ctx, I2I_E_FORMAT, "the graph output is a constant");
    goto fail;
  }
  /* the remaining compute nodes, in order */
  int n_comp = 0;
  for (int k = 0; k < g->n_nodes; k++)
    if (!removed[order[k]]) order[n_comp++] = order[k];
  i2i_dealloc(ctx, removed);
  if ((st = mark_live(ctx, g, order, n_comp, live))) goto fail;
  int n_live = 0;
  for (int k = 0; k < n_comp; k++)
    if (live[order[k]]) order[n_live++] = order[k];
  folded += n_comp - n_live;
  g->order = order;
  g->n_order = n_live;
  g->n_folded = folded;
  order = NULL;
  if (!g->n_order) { st = i2i_fail(ctx, I2I_E_FORMAT, "the graph computes nothing"); goto fail; }

  for (int k = 0; k < g->n_order; k++) {
    i2i_node *n = &g->nodes[g->order[k]];
    if ((st = parse_compute(ctx, g, n))) goto fail;
    /* the data input of every compute op is an image tensor */
    if (n->in[0] < 0 || g->values[n->in[0]].c) {
      st = node_fail(ctx, I2I_E_UNSUPPORTED, n, "its first input must be an image tensor");
      goto fail;
    }
    /* extra outputs (Dropout mask, BatchNorm statistics) must be unused */
    for (int o = 1; o < n->n_out; o++) {
      int v = n->out[o];
      if (v < 0) continue;
      if (v == g->output) { st = node_fail(ctx, I2I_E_UNSUPPORTED, n, "output %d as the graph output", o); goto fail; }
      for (int j = 0; j < g->n_order; j++) {
        const i2i_node *c = &g->nodes[g->order[j]];
        for (int i = 0; i < c->n_in; i++)
          if (c->in[i] == v) {
            st = node_fail(ctx, I2I_E_UNSUPPORTED, n, "its output %d ('%s') is used by node '%s'", o, g->values[v].name, c->name);
            goto fail;
          }
      }
    }
  }
  if ((st = apply_batchnorm_meta(ctx, g))) goto fail;
  int ord = 0;
  for (int k = 0; k < g->n_order; k++)
    if (g->nodes[g->order[k]].op == OP_DROPOUT) g->nodes[g->order[k]].ordinal = ord++;
  if ((st = pack_weights(ctx, m))) goto fail;
  if ((st = build_io_names(ctx, m))) goto fail;
  if ((st = model_derive_info(ctx, m))) goto fail;
  if (m->info.in_channels < 1) {
    st = i2i_fail(ctx, I2I_E_UNSUPPORTED, "cannot tell the model's input channel count");
    goto fail;
  }
  /* a static check of every shape at the smallest size the model accepts */
  if (m->info.min_side <= 0) {
    char why[I2I_ERRLEN];
    snprintf(why, sizeof why, "%s", ctx->err);
    st = i2i_fail(ctx, I2I_E_UNSUPPORTED, "the model accepts no input size up to %d pixels: %.900s",
                  m->info.size_multiple * 64, why);
    goto fail;
  }
  i2i_dealloc(ctx, live);
  m->serial = __atomic_fetch_add(&next_serial, 1, __ATOMIC_RELAXED);
  *out = m;
  i2i_clear_err(ctx);
  return I2I_OK;
fail:
  i2i_dealloc(ctx, order);
  i2i_dealloc(ctx, live);
  i2i_model_free(m);
  return st;
}

void i2i_model_free(i2i_model *m) {
  if (!m) return;
  i2i_ctx *ctx = m->ctx;
  if (ctx->plan_model == m) {
    plan_free(ctx, ctx->plan_cache);
    ctx->plan_cache = NULL;
    ctx->plan_model = NULL;
  }
  graph_clear(ctx, &m->g);
  i2i_dealloc(ctx, m->io_names);
  i2i_dealloc(ctx, m->io_off);
  i2i_free_aligned(ctx, m->weights);
  i2i_dealloc(ctx, m);
}

/* ---- builder API ------------------------------------------------------------------------- */

struct i2i_builder {
  i2i_ctx *ctx;
  i2i_graph g;
  i2i_status failed;   /* first error; later calls are no-ops that return it */
};

i2i_status i2i_builder_new(i2i_ctx *ctx, i2i_builder **out) {
  if (!ctx || !out) return I2I_E_ARG;
  i2i_builder *b = i2i_calloc(ctx, 1, sizeof *b);
  if (!b) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory creating a builder");
  b->ctx = ctx;
  graph_init(&b->g);
  *out = b;
  return I2I_OK;
}

void i2i_builder_free(i2i_builder *b) {
  if (!b) return;
  graph_clear(b->ctx, &b->g);
  i2i_dealloc(b->ctx, b);
}

static i2i_status builder_io(i2i_builder *b, const char *name, int channels, bool input) {
  if (!b) return I2I_E_ARG;
  i2i_ctx *ctx = b->ctx;
  if (b->failed) return b->failed;
  if (!name || !name[0] || channels < 1 || channels > 65536)
    return i2i_fail(ctx, I2I_E_ARG, "builder: bad %s '%s' with %d channels", input ? "input" : "output",
                    name ? name : "(null)", channels);
  if ((input ? b->g.input : b->g.output) >= 0)
    return i2i_fail(ctx, I2I_E_ARG, "builder: the graph already has an %s", input ? "input" : "output");
  int v = graph_value(ctx, &b->g, name);
  if (v < 0) return b->failed = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  if (input) {
    if (b->g.values[v].producer >= 0 || b->g.values[v].c)
      return i2i_fail(ctx, I2I_E_ARG, "builder: input '%s' is already defined", name);
    b->g.input = v;
    b->g.in_channels = channels;
  } else {
    b->g.output = v;
    b->g.out_channels = channels;
  }
  b->g.values[v].channels = channels;
  return I2I_OK;
}

i2i_status i2i_builder_add_input(i2i_builder *b, const char *name, int channels) {
  return builder_io(b, name, channels, true);
}

i2i_status i2i_builder_add_output(i2i_builder *b, const char *name, int channels) {
  return builder_io(b, name, channels, false);
}

i2i_status i2i_builder_add_initializer(i2i_builder *b, const char *name, int dtype, int rank,
                                       const int64_t *dims, const void *data) {
  if (!b) return I2I_E_ARG;
  i2i_ctx *ctx = b->ctx;
  if (b->failed) return b->failed;
  if (!name || !name[0] || (dtype != DT_FLOAT && dtype != DT_INT64) || rank < 0 || rank > I2I_MAX_RANK ||
      (rank && !dims) || !data)
    return i2i_fail(ctx, I2I_E_ARG, "builder: bad initializer '%s'", name ? name : "(null)");
  int v = graph_find_value(&b->g, name);
  if (v >= 0 && (b->g.values[v].c || b->g.values[v].producer >= 0 || v == b->g.input))
    return i2i_fail(ctx, I2I_E_ARG, "builder: '%s' is already defined", name);
  size_t numel = 1;
  for (int i = 0; i < rank; i++)
    if (dims[i] < 0 || !i2i_mul_ok(numel, (size_t)dims[i], &numel) || numel > ((size_t)1 << 40))
      return i2i_fail(ctx, I2I_E_ARG, "builder: initializer '%s' has invalid dimensions", name);
  i2i_tensor *t = tensor_new(ctx, dtype, rank, dims);
  if (!t) return i2i_fail(ctx, I2I_E_NOMEM, "builder: out of memory for the initializer '%s'", name);
  memcpy(t->data, data, t->numel * (dtype == DT_FLOAT ? 4 : 8));
  v = graph_value(ctx, &b->g, name);
  if (v < 0) {
    tensor_free(ctx, t);
    return b->failed = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  }
  b->g.values[v].c = t;
  return I2I_OK;
}

i2i_status i2i_builder_add_node(i2i_builder *b, const char *op_type, const char *name,
                                int n_inputs, const char *const *inputs,
                                int n_outputs, const char *const *outputs,
                                int n_attrs, const i2i_attr *attrs) {
  if (!b) return I2I_E_ARG;
  i2i_ctx *ctx = b->ctx;
  if (b->failed) return b->failed;
  if (!op_type || n_inputs < 0 || n_outputs < 1 || n_attrs < 0 || (n_inputs && !inputs) || !outputs ||
      (n_attrs && !attrs))
    return i2i_fail(ctx, I2I_E_ARG, "builder: bad node '%s'", name ? name : "(null)");
  for (int i = 0; i < n_outputs; i++)
    if (!outputs[i] || !outputs[i][0]) return i2i_fail(ctx, I2I_E_ARG, "builder: node '%s' has an unnamed output", name ? name : "");
  i2i_node *n;
  /* once the node is in the graph, any error leaves it half built: the builder keeps that error */
  i2i_status st = graph_add_node(ctx, &b->g, op_type, name ? name : "", "", n_inputs, inputs, n_outputs, outputs, &n);
  if (st) return b->failed = st;
  n->attr = i2i_calloc(ctx, (size_t)(n_attrs ? n_attrs : 1), sizeof *n->attr);
  if (!n->attr) return b->failed = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  for (int i = 0; i < n_attrs; i++) {
    const i2i_attr *a = &attrs[i];
    i2i_attr_v *d = &n->attr[i];
    n->n_attr = i + 1;
    d->name = i2i_strdup(ctx, a->name);
    if (!d->name) return b->failed = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    d->type = a->type;
    switch (a->type) {
    case I2I_ATTR_INT: d->i = a->i; break;
    case I2I_ATTR_FLOAT: d->f = a->f; break;
    case I2I_ATTR_INTS:
      if (a->n_ints < 0 || a->n_ints > 64 || (a->n_ints && !a->ints))
        return b->failed = i2i_fail(ctx, I2I_E_ARG, "builder: attribute '%s' has a bad list", a->name);
      d->ints = i2i_alloc(ctx, sizeof(int64_t) * (size_t)(a->n_ints ? a->n_ints : 1));
      if (!d->ints) return b->failed = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
      if (a->n_ints) memcpy(d->ints, a->ints, sizeof(int64_t) * (size_t)a->n_ints);
      d->n = a->n_ints;
      break;
    case I2I_ATTR_STRING:
      d->s = i2i_strdup(ctx, a->s);
      if (!d->s) return b->failed = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
      break;
    default:
      return b->failed = i2i_fail(ctx, I2I_E_ARG, "builder: attribute '%s' has an unknown type", a->name ? a->name : "");
    }
    if (!a->name || !a->name[0]) return b->failed = i2i_fail(ctx, I2I_E_ARG, "builder: unnamed attribute");
  }
  return I2I_OK;
}

i2i_status i2i_builder_set_meta(i2i_builder *b, const char *key, const char *value) {
  if (!b || !key || !key[0] || !value) return I2I_E_ARG;
  if (b->failed) return b->failed;
  i2i_status st = graph_set_meta(b->ctx, &b->g, key, value);
  if (st) b->failed = st;
  return st;
}

i2i_status i2i_builder_finish(i2i_builder *b, i2i_model **out) {
  if (!b || !out) {
    i2i_builder_free(b);
    return I2I_E_ARG;
  }
  i2i_ctx *ctx = b->ctx;
  *out = NULL;
  if (b->failed) {
    i2i_status st = b->failed;
    i2i_builder_free(b);
    return st;
  }
  i2i_graph g = b->g;
  graph_init(&b->g);
  i2i_builder_free(b);
  return model_from_graph(ctx, &g, out);
}
