/* shape.c: shape inference per run size, the model facts derived from the graph (family,
 * channels, size multiple, smallest accepted side), and the model inspection API.
 *
 * ONNX shape inference loses H and W after PyTorch's pads, so shapes are computed here for the
 * concrete N x C x H x W of each run, with every size checked before anything is allocated.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAX_DIM ((int64_t)1 << 24)

static i2i_status sfail(i2i_ctx *ctx, const i2i_node *n, const char *fmt, long long a, long long b) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, a, b);
  return i2i_fail(ctx, I2I_E_ARG, "node '%s' (%s): %s", n->name, n->op_type, msg);
}

static i2i_status conv_out(i2i_ctx *ctx, const i2i_node *n, int64_t in, int axis, int64_t *out) {
  const conv_params *c = &n->conv;
  int64_t ek = (int64_t)c->dilation[axis] * (c->kernel[axis] - 1) + 1;
  int64_t pb = c->pads[axis], pe = c->pads[axis + 2];
  int64_t o;
  if (n->op == OP_CONV) {
    int64_t span = in + pb + pe;
    if (span < ek) return sfail(ctx, n, "input side %lld is smaller than the kernel span %lld", in + pb + pe, ek);
    o = (span - ek) / c->stride[axis] + 1;
  } else {
    o = (int64_t)c->stride[axis] * (in - 1) + c->out_pad[axis] + ek - pb - pe;
    if (o < 1) return sfail(ctx, n, "output side %lld is not positive (input %lld)", o, in);
  }
  if (o > MAX_DIM) return sfail(ctx, n, "output side %lld is too large (input %lld)", o, in);
  *out = o;
  return I2I_OK;
}

i2i_status infer_shapes(i2i_ctx *ctx, const i2i_model *m, int nimg, int h, int w, shape4 *shape) {
  const i2i_graph *g = &m->g;
  if (nimg < 1 || h < 1 || w < 1) return i2i_fail(ctx, I2I_E_ARG, "invalid run size %dx%dx%d", nimg, h, w);
  for (int v = 0; v < g->n_values; v++) shape[v] = (shape4){0, 0, 0, 0};
  int cin = m->info.in_channels > 0 ? m->info.in_channels : g->in_channels;
  shape[g->input] = (shape4){nimg, cin, h, w};
  for (int k = 0; k < g->n_order; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    shape4 x = shape[n->in[0]], y = x;
    if (x.c < 1) return sfail(ctx, n, "input has an unknown channel count (%lld, %lld)", x.c, x.h);
    switch (n->op) {
    case OP_CONV:
    case OP_CONVT: {
      const i2i_tensor *wt = g->values[n->in[1]].c;
      int64_t cin_w = n->op == OP_CONV ? wt->dims[1] : wt->dims[0];
      if (x.c != cin_w) return sfail(ctx, n, "input has %lld channels, the weight expects %lld", x.c, cin_w);
      y.c = n->op == OP_CONV ? wt->dims[0] : wt->dims[1];
      i2i_status st;
      if ((st = conv_out(ctx, n, x.h, 0, &y.h)) || (st = conv_out(ctx, n, x.w, 1, &y.w))) return st;
      break;
    }
    case OP_INSTNORM:
    case OP_BATCHNORM: {
      const i2i_tensor *sc = g->values[n->in[1]].c;
      if ((int64_t)sc->numel != x.c) return sfail(ctx, n, "input has %lld channels, the scale has %lld", x.c, (long long)sc->numel);
      break;
    }
    case OP_PAD: {
      const int64_t *p = n->pads8;
      int64_t t = p[2], l = p[3], b = p[6], r = p[7];
      if (n->pad_mode == PAD_REFLECT) {
        if (t >= x.h || b >= x.h) return sfail(ctx, n, "reflect padding of %lld needs a height above it, got %lld", t > b ? t : b, x.h);
        if (l >= x.w || r >= x.w) return sfail(ctx, n, "reflect padding of %lld needs a width above it, got %lld", l > r ? l : r, x.w);
      }
      y.h = x.h + t + b;
      y.w = x.w + l + r;
      if (y.h > MAX_DIM || y.w > MAX_DIM) return sfail(ctx, n, "padded size %lldx%lld too large", y.h, y.w);
      break;
    }
    case OP_ADD: {
      shape4 z = shape[n->in[1]];
      if (z.c != x.c || z.h != x.h || z.w != x.w || z.n != x.n)
        return sfail(ctx, n, "inputs differ in shape (%lld vs %lld channels, or in size)", x.c, z.c);
      break;
    }
    case OP_CONCAT: {
      y.c = 0;
      for (int i = 0; i < n->n_in; i++) {
        shape4 z = shape[n->in[i]];
        if (z.h != x.h || z.w != x.w || z.n != x.n)
          return sfail(ctx, n, "inputs differ in size (%lldx%lld); U-Net sizes must be multiples of 256", z.h, z.w);
        y.c += z.c;
      }
      break;
    }
    default:
      break;
    }
    size_t numel = 1;
    if (!i2i_mul_ok(numel, (size_t)y.n, &numel) || !i2i_mul_ok(numel, (size_t)y.c, &numel) ||
        !i2i_mul_ok(numel, (size_t)y.h, &numel) || !i2i_mul_ok(numel, (size_t)y.w, &numel) || numel > ((size_t)1 << 40))
      return sfail(ctx, n, "output of %lld x %lld pixels is too large", y.h, y.w);
    for (int o = 0; o < n->n_out; o++)
      if (n->out[o] >= 0) shape[n->out[o]] = o == 0 ? y : (shape4){0, 0, 0, 0};
  }
  int ch = g->out_channels;
  if (ch > 0 && shape[g->output].c != ch)
    return i2i_fail(ctx, I2I_E_FORMAT, "the graph output has %lld channels, its declaration says %d",
                    (long long)shape[g->output].c, ch);
  return I2I_OK;
}

/* The input channel count from the first channel-fixing consumer of the input. */
static int find_in_channels(const i2i_graph *g) {
  if (g->in_channels > 0) return g->in_channels;
  int v = g->input;
  for (int guard = 0; guard < 64; guard++) {
    const i2i_node *c = NULL;
    for (int k = 0; k < g->n_order && !c; k++) {
      const i2i_node *n = &g->nodes[g->order[k]];
      if (n->in[0] == v) c = n;
    }
    if (!c) return -1;
    switch (c->op) {
    case OP_CONV: return (int)g->values[c->in[1]].c->dims[1];
    case OP_CONVT: return (int)g->values[c->in[1]].c->dims[0];
    case OP_INSTNORM:
    case OP_BATCHNORM: return (int)g->values[c->in[1]].c->numel;
    case OP_CONCAT:
    case OP_ADD: return -1;
    default: v = c->out[0];
    }
  }
  return -1;
}

i2i_status model_derive_info(i2i_ctx *ctx, i2i_model *m) {
  i2i_graph *g = &m->g;
  i2i_model_info *in = &m->info;
  memset(in, 0, sizeof *in);
  in->opset = g->opset;
  in->ir_version = g->ir_version;
  in->n_nodes = g->n_order;
  in->n_folded = g->n_folded;
  in->in_channels = find_in_channels(g);
  /* the size multiple: the largest downsampling factor reached by any value */
  int *factor = i2i_calloc(ctx, (size_t)g->n_values + 1, sizeof(int));
  shape4 *sh = i2i_calloc(ctx, (size_t)g->n_values + 1, sizeof *sh);
  if (!factor || !sh) {
    i2i_dealloc(ctx, factor);
    i2i_dealloc(ctx, sh);
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory inspecting the model");
  }
  int multiple = 1;
  bool has_concat = false, has_add = false, has_convt = false;
  for (int k = 0; k < g->n_order; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    int f = 1;
    {
      for (int i = 0; i < n->n_in; i++)
        if (n->in[i] >= 0 && factor[n->in[i]] > f) f = factor[n->in[i]];
      if (n->op == OP_CONV) f *= n->conv.stride[0] > n->conv.stride[1] ? n->conv.stride[0] : n->conv.stride[1];
      if (n->op == OP_CONVT) {
        int s = n->conv.stride[0];
        f = f % s == 0 ? f / s : 1;
      }
      if (f > (1 << 20)) f = 1 << 20;
      factor[n->out[0]] = f;
      if (f > multiple) multiple = f;
    }
    for (int i = 0; i < n->n_in; i++) {
      const i2i_tensor *t = n->in[i] >= 0 ? g->values[n->in[i]].c : NULL;
      if (t && tensor_is_float(t) && n->op != OP_PAD && n->op != OP_DROPOUT) in->n_params += t->numel;
    }
    has_concat |= n->op == OP_CONCAT;
    has_add |= n->op == OP_ADD;
    has_convt |= n->op == OP_CONVT;
    in->n_dropout += n->op == OP_DROPOUT;
    in->n_batchnorm += n->op == OP_BATCHNORM || n->bn_from_in;
  }
  i2i_dealloc(ctx, factor);
  in->size_multiple = multiple;
  /* the smallest padded side every internal pad and stride accepts */
  in->min_side = 0;
  if (in->in_channels > 0) {
    for (int k = 1; k <= 64; k++) {
      int s = multiple * k;
      if (infer_shapes(ctx, m, 1, s, s, sh) == I2I_OK) {
        in->min_side = s;
        in->out_channels = (int)sh[g->output].c;
        break;
      }
    }
  }
  i2i_dealloc(ctx, sh);
  const char *fam = graph_meta(g, "i2i.family");
  if (fam && !strcmp(fam, "resnet")) in->family = I2I_FAMILY_RESNET;
  else if (fam && !strcmp(fam, "unet")) in->family = I2I_FAMILY_UNET;
  else if (fam && !strcmp(fam, "patchgan")) in->family = I2I_FAMILY_PATCHGAN;
  else if (!has_convt && in->out_channels == 1 && multiple >= 4) in->family = I2I_FAMILY_PATCHGAN; /* strided, 1 map */
  else if (has_concat) in->family = I2I_FAMILY_UNET;
  else if (has_add) in->family = I2I_FAMILY_RESNET;
  else in->family = I2I_FAMILY_UNKNOWN;
  return I2I_OK;
}

/* ---- inspection API ---------------------------------------------------------------------- */

void i2i_model_get_info(const i2i_model *m, i2i_model_info *info) {
  if (m && info) *info = m->info;
}

const char *i2i_model_meta(const i2i_model *m, const char *key) {
  return m && key ? graph_meta(&m->g, key) : NULL;
}

size_t i2i_model_meta_count(const i2i_model *m) { return m ? (size_t)m->g.n_meta : 0; }

const char *i2i_model_meta_key(const i2i_model *m, size_t i) {
  return m && i < (size_t)m->g.n_meta ? m->g.meta[i].key : NULL;
}

const char *i2i_model_meta_value(const i2i_model *m, size_t i) {
  return m && i < (size_t)m->g.n_meta ? m->g.meta[i].value : NULL;
}

int i2i_model_node_count(const i2i_model *m) { return m ? m->g.n_order : 0; }

i2i_status i2i_model_node(const i2i_model *m, int i, i2i_node_desc *d) {
  if (!m || !d || i < 0 || i >= m->g.n_order) return I2I_E_ARG;
  const i2i_node *n = &m->g.nodes[m->g.order[i]];
  d->op_type = n->op_type;
  d->name = n->name;
  d->n_inputs = n->n_in;
  d->n_outputs = n->n_out;
  d->inputs = m->io_names + m->io_off[i];
  d->outputs = m->io_names + m->io_off[i] + n->n_in;
  return I2I_OK;
}

i2i_status i2i_model_shapes(i2i_ctx *ctx, const i2i_model *m, int n, int height, int width, int64_t (*shapes)[4]) {
  if (!ctx || !m || !shapes) return ctx ? i2i_fail(ctx, I2I_E_ARG, "i2i_model_shapes: NULL argument") : I2I_E_ARG;
  shape4 *sh = i2i_calloc(ctx, (size_t)m->g.n_values + 1, sizeof *sh);
  if (!sh) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  i2i_status st = infer_shapes(ctx, m, n, height, width, sh);
  if (!st)
    for (int k = 0; k < m->g.n_order; k++) {
      shape4 s = sh[m->g.nodes[m->g.order[k]].out[0]];
      shapes[k][0] = s.n;
      shapes[k][1] = s.c;
      shapes[k][2] = s.h;
      shapes[k][3] = s.w;
    }
  i2i_dealloc(ctx, sh);
  return st;
}

static size_t tensor_count(const i2i_model *m, int *idx, size_t want) {
  size_t c = 0;
  for (int v = 0; v < m->g.n_values; v++)
    if (m->g.values[v].c) {
      if (c == want && idx) *idx = v;
      c++;
    }
  return c;
}

static void fill_tensor_desc(const i2i_model *m, int v, i2i_tensor_desc *d) {
  const i2i_tensor *t = m->g.values[v].c;
  d->name = m->g.values[v].name;
  d->rank = t->rank;
  for (int i = 0; i < I2I_MAX_RANK; i++) d->dims[i] = i < t->rank ? t->dims[i] : 0;
  d->dtype = tensor_is_float(t) ? DT_FLOAT : DT_INT64;
  d->data = t->data;
  d->nbytes = t->numel * (tensor_is_float(t) ? 4 : 8);
}

size_t i2i_model_tensor_count(const i2i_model *m) { return m ? tensor_count(m, NULL, SIZE_MAX) : 0; }

i2i_status i2i_model_tensor(const i2i_model *m, size_t i, i2i_tensor_desc *d) {
  if (!m || !d) return I2I_E_ARG;
  int v = -1;
  tensor_count(m, &v, i);
  if (v < 0) return I2I_E_ARG;
  fill_tensor_desc(m, v, d);
  return I2I_OK;
}

i2i_status i2i_model_tensor_by_name(const i2i_model *m, const char *name, i2i_tensor_desc *d) {
  if (!m || !name || !d) return I2I_E_ARG;
  int v = graph_find_value(&m->g, name);
  if (v < 0 || !m->g.values[v].c) return I2I_E_NOT_FOUND;
  fill_tensor_desc(m, v, d);
  return I2I_OK;
}
