/* fold.c: constant folding at load time.
 *
 * PyTorch's exporter writes a 14-node int64 chain in front of every reflect Pad (Constant,
 * ConstantOfShape, Concat, Reshape, Slice with step -1, Transpose, Cast, ...). These small
 * kernels evaluate such nodes once, on constants only, with element caps so a hostile
 * ConstantOfShape cannot ask for a huge tensor. Nothing here runs on image tensors.
 */
#include <math.h>
#include <string.h>

#include "internal.h"

#define FOLD_MAX_ELEMS ((size_t)1 << 26)     /* any folded result */
#define FOLD_MAX_CREATED ((size_t)1 << 20)   /* tensors created from a shape (ConstantOfShape) */

static i2i_status ffail(i2i_ctx *ctx, const i2i_node *n, i2i_status st, const char *msg, long long a) {
  return i2i_fail(ctx, st, "node '%s' (%s): %s%s%lld", n->name, n->op_type, msg, a >= 0 ? " " : "",
                  a >= 0 ? a : 0LL);
}

static size_t esize(const i2i_tensor *t) { return tensor_is_float(t) ? 4 : 8; }

static double get_d(const i2i_tensor *t, size_t i) {
  return tensor_is_float(t) ? ((const float *)t->data)[i] : (double)((const int64_t *)t->data)[i];
}

static const i2i_tensor *in_t(const i2i_graph *g, const i2i_node *n, int i) {
  if (i >= n->n_in || n->in[i] < 0) return NULL;
  return g->values[n->in[i]].c;
}

/* Reads a 1-D int64 tensor (shape, axes, starts...) into `dst`; fails on more than `max`. */
static bool read_ints(const i2i_tensor *t, int64_t *dst, int max, int *count) {
  if (!t || tensor_is_float(t) || t->rank > 1 || t->numel > (size_t)max) return false;
  for (size_t i = 0; i < t->numel; i++) dst[i] = ((const int64_t *)t->data)[i];
  *count = (int)t->numel;
  return true;
}

static i2i_status set_out(i2i_ctx *ctx, i2i_graph *g, i2i_node *n, int o, i2i_tensor *t) {
  if (!t) return ffail(ctx, n, I2I_E_NOMEM, "out of memory folding", -1);
  if (o >= n->n_out || n->out[o] < 0) {
    tensor_free(ctx, t);
    return I2I_OK;
  }
  i2i_value *v = &g->values[n->out[o]];
  tensor_free(ctx, v->c);
  v->c = t;
  v->producer = -1;
  return I2I_OK;
}

static void strides_of(const i2i_tensor *t, int64_t *st) {
  int64_t s = 1;
  for (int i = t->rank - 1; i >= 0; i--) {
    st[i] = s;
    s *= t->dims[i];
  }
}

static i2i_status fold_constant(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  if (n->n_attr != 1) return ffail(ctx, n, I2I_E_FORMAT, "expects exactly one value attribute", -1);
  const i2i_attr_v *a = &n->attr[0];
  i2i_tensor *t = NULL;
  if (!strcmp(a->name, "value") && a->type == ATTR_TENSOR && a->t) {
    t = tensor_clone(ctx, a->t);
  } else if (!strcmp(a->name, "value_float") && a->type == ATTR_FLOAT) {
    t = tensor_new(ctx, DT_FLOAT, 0, NULL);
    if (t) ((float *)t->data)[0] = a->f;
  } else if (!strcmp(a->name, "value_int") && a->type == ATTR_INT) {
    t = tensor_new(ctx, DT_INT64, 0, NULL);
    if (t) ((int64_t *)t->data)[0] = a->i;
  } else if (!strcmp(a->name, "value_ints") && a->type == ATTR_INTS) {
    int64_t d = a->n;
    t = tensor_new(ctx, DT_INT64, 1, &d);
    if (t && a->n) memcpy(t->data, a->ints, sizeof(int64_t) * (size_t)a->n);
  } else if (!strcmp(a->name, "value_floats") && a->type == ATTR_FLOATS) {
    int64_t d = a->n;
    t = tensor_new(ctx, DT_FLOAT, 1, &d);
    if (t && a->n) memcpy(t->data, a->floats, sizeof(float) * (size_t)a->n);
  } else {
    return ffail(ctx, n, I2I_E_UNSUPPORTED, "unsupported value attribute", -1);
  }
  return set_out(ctx, g, n, 0, t);
}

static i2i_status fold_cos(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  int64_t dims[I2I_MAX_RANK];
  int r;
  if (!read_ints(in_t(g, n, 0), dims, I2I_MAX_RANK, &r)) return ffail(ctx, n, I2I_E_UNSUPPORTED, "shape must be 1-D int64 of rank <= 8", -1);
  size_t numel = 1;
  for (int i = 0; i < r; i++)
    if (dims[i] < 0 || !i2i_mul_ok(numel, (size_t)dims[i], &numel) || numel > FOLD_MAX_CREATED)
      return ffail(ctx, n, I2I_E_LIMIT, "requested tensor too large or negative dimension", dims[i]);
  const i2i_attr_v *a = node_attr(n, "value");
  int dtype = DT_FLOAT;
  double val = 0;
  if (a) {
    if (a->type != ATTR_TENSOR || !a->t || a->t->numel != 1) return ffail(ctx, n, I2I_E_FORMAT, "value must be a one-element tensor", -1);
    dtype = a->t->dtype;
    val = get_d(a->t, 0);
  }
  i2i_tensor *t = tensor_new(ctx, dtype, r, dims);
  if (t)
    for (size_t i = 0; i < numel; i++) {
      if (tensor_is_float(t)) ((float *)t->data)[i] = (float)val;
      else ((int64_t *)t->data)[i] = (int64_t)val;
    }
  return set_out(ctx, g, n, 0, t);
}

static i2i_status fold_concat(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  const i2i_attr_v *ax = node_attr(n, "axis");
  const i2i_tensor *t0 = in_t(g, n, 0);
  if (!ax || ax->type != ATTR_INT || !t0) return ffail(ctx, n, I2I_E_FORMAT, "needs an axis and inputs", -1);
  int r = t0->rank;
  int64_t axis = ax->i < 0 ? ax->i + r : ax->i;
  if (r < 1 || axis < 0 || axis >= r) return ffail(ctx, n, I2I_E_FORMAT, "axis out of range", ax->i);
  int64_t dims[I2I_MAX_RANK];
  memcpy(dims, t0->dims, sizeof dims);
  dims[axis] = 0;
  for (int i = 0; i < n->n_in; i++) {
    const i2i_tensor *t = in_t(g, n, i);
    if (!t || t->rank != r || tensor_is_float(t) != tensor_is_float(t0)) return ffail(ctx, n, I2I_E_FORMAT, "inputs disagree in rank or type", -1);
    for (int d = 0; d < r; d++)
      if (d != axis && t->dims[d] != t0->dims[d]) return ffail(ctx, n, I2I_E_FORMAT, "inputs disagree in dimension", d);
    if (!i2i_add64_ok(dims[axis], t->dims[axis], &dims[axis])) return ffail(ctx, n, I2I_E_LIMIT, "too large", -1);
  }
  i2i_tensor *o = tensor_new(ctx, t0->dtype, r, dims);
  if (!o) return ffail(ctx, n, I2I_E_NOMEM, "out of memory folding", -1);
  size_t outer = 1, es = esize(t0);
  for (int d = 0; d < axis; d++) outer *= (size_t)dims[d];
  size_t inner = 1;
  for (int d = (int)axis + 1; d < r; d++) inner *= (size_t)dims[d];
  size_t off = 0;
  for (size_t ob = 0; ob < outer; ob++)
    for (int i = 0; i < n->n_in; i++) {
      const i2i_tensor *t = in_t(g, n, i);
      size_t chunk = (size_t)t->dims[axis] * inner * es;
      memcpy((char *)o->data + off, (const char *)t->data + ob * chunk, chunk);
      off += chunk;
    }
  return set_out(ctx, g, n, 0, o);
}

static i2i_status fold_reshape(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  const i2i_tensor *t = in_t(g, n, 0);
  int64_t shp[I2I_MAX_RANK];
  int r;
  if (!t || !read_ints(in_t(g, n, 1), shp, I2I_MAX_RANK, &r)) return ffail(ctx, n, I2I_E_UNSUPPORTED, "shape must be 1-D int64 of rank <= 8", -1);
  int64_t allowzero = 0;
  const i2i_attr_v *az = node_attr(n, "allowzero");
  if (az && az->type == ATTR_INT) allowzero = az->i;
  int neg = -1;
  size_t known = 1;
  for (int i = 0; i < r; i++) {
    if (shp[i] == 0 && !allowzero) {
      if (i >= t->rank) return ffail(ctx, n, I2I_E_FORMAT, "0 in shape beyond the input rank", i);
      shp[i] = t->dims[i];
    }
    if (shp[i] == -1) {
      if (neg >= 0) return ffail(ctx, n, I2I_E_FORMAT, "more than one -1 in shape", -1);
      neg = i;
      continue;
    }
    if (shp[i] < 0 || !i2i_mul_ok(known, (size_t)shp[i], &known)) return ffail(ctx, n, I2I_E_FORMAT, "bad shape value", shp[i]);
  }
  if (neg >= 0) {
    if (known == 0 || t->numel % known) return ffail(ctx, n, I2I_E_FORMAT, "cannot infer -1", -1);
    shp[neg] = (int64_t)(t->numel / known);
    known = t->numel;
  }
  if (known != t->numel) return ffail(ctx, n, I2I_E_FORMAT, "element count changes to", (long long)known);
  i2i_tensor *o = tensor_new(ctx, t->dtype, r, shp);
  if (o) memcpy(o->data, t->data, t->numel * esize(t));
  return set_out(ctx, g, n, 0, o);
}

static i2i_status fold_slice(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  const i2i_tensor *t = in_t(g, n, 0);
  int64_t starts[I2I_MAX_RANK], ends[I2I_MAX_RANK], axes[I2I_MAX_RANK], steps[I2I_MAX_RANK];
  int ns, ne, na, nst;
  if (!t || !read_ints(in_t(g, n, 1), starts, I2I_MAX_RANK, &ns) || !read_ints(in_t(g, n, 2), ends, I2I_MAX_RANK, &ne) || ns != ne)
    return ffail(ctx, n, I2I_E_UNSUPPORTED, "starts/ends must be constant int64 lists of equal length", -1);
  if (in_t(g, n, 3)) {
    if (!read_ints(in_t(g, n, 3), axes, I2I_MAX_RANK, &na) || na != ns) return ffail(ctx, n, I2I_E_FORMAT, "bad axes", -1);
  } else {
    for (int i = 0; i < ns; i++) axes[i] = i;
  }
  if (in_t(g, n, 4)) {
    if (!read_ints(in_t(g, n, 4), steps, I2I_MAX_RANK, &nst) || nst != ns) return ffail(ctx, n, I2I_E_FORMAT, "bad steps", -1);
  } else {
    for (int i = 0; i < ns; i++) steps[i] = 1;
  }
  int64_t st0[I2I_MAX_RANK], step[I2I_MAX_RANK], od[I2I_MAX_RANK];
  for (int d = 0; d < t->rank; d++) {
    st0[d] = 0;
    step[d] = 1;
    od[d] = t->dims[d];
  }
  bool seen[I2I_MAX_RANK] = {false};
  for (int i = 0; i < ns; i++) {
    int64_t a = axes[i] < 0 ? axes[i] + t->rank : axes[i];
    if (a < 0 || a >= t->rank || seen[a]) return ffail(ctx, n, I2I_E_FORMAT, "bad axis", axes[i]);
    seen[a] = true;
    int64_t dim = t->dims[a], s = starts[i], e = ends[i], k = steps[i];
    if (k == 0) return ffail(ctx, n, I2I_E_FORMAT, "step 0", -1);
    if (s < 0) s = s < -dim ? -1 - dim + dim : s + dim; /* clamp below */
    if (e < 0) e = e < -dim ? -1 : e + dim;
    if (k > 0) {
      if (s < 0) s = 0;
      if (s > dim) s = dim;
      if (e < 0) e = 0;
      if (e > dim) e = dim;
    } else {
      if (s < 0) s = -1;
      if (s > dim - 1) s = dim - 1;
      if (e < -1) e = -1;
      if (e > dim - 1) e = dim - 1;
    }
    /* s and e are clamped to [-1, dim] here, so the span is small; |k| may be up to 2^63 */
    int64_t span = k > 0 ? e - s : s - e;
    uint64_t mag = k > 0 ? (uint64_t)k : (uint64_t)0 - (uint64_t)k;
    int64_t len = span <= 0 ? 0 : (int64_t)(1 + (uint64_t)(span - 1) / mag);
    st0[a] = s;
    step[a] = k;
    od[a] = len;
  }
  i2i_tensor *o = tensor_new(ctx, t->dtype, t->rank, od);
  if (!o) return ffail(ctx, n, I2I_E_NOMEM, "out of memory folding", -1);
  int64_t is[I2I_MAX_RANK];
  strides_of(t, is);
  size_t es = esize(t);
  int64_t idx[I2I_MAX_RANK] = {0};
  for (size_t j = 0; j < o->numel; j++) {
    int64_t src = 0;
    for (int d = 0; d < t->rank; d++) src += (st0[d] + idx[d] * step[d]) * is[d];
    memcpy((char *)o->data + j * es, (const char *)t->data + (size_t)src * es, es);
    for (int d = t->rank - 1; d >= 0; d--) {
      if (++idx[d] < od[d]) break;
      idx[d] = 0;
    }
  }
  return set_out(ctx, g, n, 0, o);
}

static i2i_status fold_transpose(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  const i2i_tensor *t = in_t(g, n, 0);
  if (!t) return ffail(ctx, n, I2I_E_FORMAT, "no input", -1);
  int64_t perm[I2I_MAX_RANK];
  const i2i_attr_v *p = node_attr(n, "perm");
  if (p) {
    if (p->type != ATTR_INTS || p->n != t->rank) return ffail(ctx, n, I2I_E_FORMAT, "perm does not match the rank", -1);
    bool used[I2I_MAX_RANK] = {false};
    for (int i = 0; i < t->rank; i++) {
      if (p->ints[i] < 0 || p->ints[i] >= t->rank || used[p->ints[i]]) return ffail(ctx, n, I2I_E_FORMAT, "bad perm", -1);
      used[p->ints[i]] = true;
      perm[i] = p->ints[i];
    }
  } else {
    for (int i = 0; i < t->rank; i++) perm[i] = t->rank - 1 - i;
  }
  int64_t od[I2I_MAX_RANK], is[I2I_MAX_RANK];
  for (int i = 0; i < t->rank; i++) od[i] = t->dims[perm[i]];
  strides_of(t, is);
  i2i_tensor *o = tensor_new(ctx, t->dtype, t->rank, od);
  if (!o) return ffail(ctx, n, I2I_E_NOMEM, "out of memory folding", -1);
  size_t es = esize(t);
  int64_t idx[I2I_MAX_RANK] = {0};
  for (size_t j = 0; j < o->numel; j++) {
    int64_t src = 0;
    for (int d = 0; d < t->rank; d++) src += idx[d] * is[perm[d]];
    memcpy((char *)o->data + j * es, (const char *)t->data + (size_t)src * es, es);
    for (int d = t->rank - 1; d >= 0; d--) {
      if (++idx[d] < od[d]) break;
      idx[d] = 0;
    }
  }
  return set_out(ctx, g, n, 0, o);
}

static bool known_dtype(int64_t d) {
  switch (d) {
  case DT_FLOAT: case DT_UINT8: case DT_INT8: case DT_UINT16: case DT_INT16: case DT_INT32: case DT_INT64:
  case DT_BOOL: case DT_FLOAT16: case DT_DOUBLE: case DT_UINT32: case DT_UINT64: case DT_BFLOAT16:
    return true;
  }
  return false;
}

static i2i_status fold_cast(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  const i2i_tensor *t = in_t(g, n, 0);
  const i2i_attr_v *to = node_attr(n, "to");
  if (!t || !to || to->type != ATTR_INT || !known_dtype(to->i)) return ffail(ctx, n, I2I_E_UNSUPPORTED, "bad 'to' type", -1);
  i2i_tensor *o = tensor_new(ctx, (int)to->i, t->rank, t->dims);
  if (!o) return ffail(ctx, n, I2I_E_NOMEM, "out of memory folding", -1);
  for (size_t i = 0; i < t->numel; i++) {
    if (tensor_is_float(o)) {
      ((float *)o->data)[i] = (float)get_d(t, i);
    } else {
      double v = get_d(t, i);
      if (!tensor_is_float(t)) ((int64_t *)o->data)[i] = ((const int64_t *)t->data)[i];
      else if (!isfinite(v) || fabs(v) > 9.2e18) {
        tensor_free(ctx, o);
        return ffail(ctx, n, I2I_E_FORMAT, "value out of the integer range", -1);
      } else ((int64_t *)o->data)[i] = (int64_t)v;
      if (o->dtype == DT_BOOL) ((int64_t *)o->data)[i] = ((int64_t *)o->data)[i] != 0 || (tensor_is_float(t) && v != 0);
    }
  }
  return set_out(ctx, g, n, 0, o);
}

static i2i_status fold_shape(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  const i2i_tensor *t = in_t(g, n, 0);
  if (!t) return ffail(ctx, n, I2I_E_FORMAT, "no input", -1);
  int64_t s = 0, e = t->rank;
  const i2i_attr_v *a = node_attr(n, "start");
  if (a && a->type == ATTR_INT) s = a->i;
  a = node_attr(n, "end");
  if (a && a->type == ATTR_INT) e = a->i;
  if (s < 0) s += t->rank;
  if (e < 0) e += t->rank;
  if (s < 0) s = 0;
  if (e > t->rank) e = t->rank;
  int64_t len = e > s ? e - s : 0;
  i2i_tensor *o = tensor_new(ctx, DT_INT64, 1, &len);
  if (o)
    for (int64_t i = 0; i < len; i++) ((int64_t *)o->data)[i] = t->dims[s + i];
  return set_out(ctx, g, n, 0, o);
}

static i2i_status fold_gather(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  const i2i_tensor *t = in_t(g, n, 0), *ix = in_t(g, n, 1);
  if (!t || !ix || tensor_is_float(ix) || t->rank < 1) return ffail(ctx, n, I2I_E_UNSUPPORTED, "needs constant data and int64 indices", -1);
  int64_t axis = 0;
  const i2i_attr_v *a = node_attr(n, "axis");
  if (a && a->type == ATTR_INT) axis = a->i;
  if (axis < 0) axis += t->rank;
  if (axis < 0 || axis >= t->rank) return ffail(ctx, n, I2I_E_FORMAT, "axis out of range", axis);
  int r = t->rank + ix->rank - 1;
  if (r > I2I_MAX_RANK) return ffail(ctx, n, I2I_E_UNSUPPORTED, "result rank too high", r);
  int64_t od[I2I_MAX_RANK];
  int k = 0;
  for (int d = 0; d < axis; d++) od[k++] = t->dims[d];
  for (int d = 0; d < ix->rank; d++) od[k++] = ix->dims[d];
  for (int d = (int)axis + 1; d < t->rank; d++) od[k++] = t->dims[d];
  size_t outer = 1, inner = 1, es = esize(t);
  for (int d = 0; d < axis; d++) outer *= (size_t)t->dims[d];
  for (int d = (int)axis + 1; d < t->rank; d++) inner *= (size_t)t->dims[d];
  i2i_tensor *o = tensor_new(ctx, t->dtype, r, od);
  if (!o) return ffail(ctx, n, I2I_E_NOMEM, "out of memory folding", -1);
  int64_t dim = t->dims[axis];
  for (size_t ob = 0; ob < outer; ob++)
    for (size_t j = 0; j < ix->numel; j++) {
      int64_t q = ((const int64_t *)ix->data)[j];
      if (q < 0) q += dim;
      if (q < 0 || q >= dim) {
        tensor_free(ctx, o);
        return ffail(ctx, n, I2I_E_FORMAT, "index out of range", ((const int64_t *)ix->data)[j]);
      }
      memcpy((char *)o->data + ((ob * ix->numel + j) * inner) * es,
             (const char *)t->data + ((ob * (size_t)dim + (size_t)q) * inner) * es, inner * es);
    }
  return set_out(ctx, g, n, 0, o);
}

static i2i_status fold_binary(i2i_ctx *ctx, i2i_graph *g, i2i_node *n) {
  const i2i_tensor *a = in_t(g, n, 0), *b = in_t(g, n, 1);
  if (!a || !b || n->n_in != 2) return ffail(ctx, n, I2I_E_FORMAT, "expects two inputs", -1);
  if (tensor_is_float(a) != tensor_is_float(b)) return ffail(ctx, n, I2I_E_FORMAT, "inputs of different types", -1);
  int r = a->rank > b->rank ? a->rank : b->rank;
  int64_t od[I2I_MAX_RANK] = {0}, sa[I2I_MAX_RANK] = {0}, sb[I2I_MAX_RANK] = {0}, ast[I2I_MAX_RANK], bst[I2I_MAX_RANK];
  strides_of(a, ast);
  strides_of(b, bst);
  size_t numel = 1;
  for (int d = 0; d < r; d++) {
    int da = d - (r - a->rank), db = d - (r - b->rank);
    int64_t x = da >= 0 ? a->dims[da] : 1, y = db >= 0 ? b->dims[db] : 1;
    if (x != y && x != 1 && y != 1) return ffail(ctx, n, I2I_E_FORMAT, "shapes do not broadcast at axis", d);
    od[d] = x == 1 ? y : x;
    sa[d] = (da >= 0 && x != 1) ? ast[da] : 0;
    sb[d] = (db >= 0 && y != 1) ? bst[db] : 0;
    if (!i2i_mul_ok(numel, (size_t)od[d], &numel) || numel > FOLD_MAX_ELEMS) return ffail(ctx, n, I2I_E_LIMIT, "result too large", -1);
  }
  int dtype = a->dtype;
  i2i_tensor *o = tensor_new(ctx, dtype, r, od);
  if (!o) return ffail(ctx, n, I2I_E_NOMEM, "out of memory folding", -1);
  int64_t idx[I2I_MAX_RANK] = {0};
  for (size_t j = 0; j < numel; j++) {
    size_t ia = 0, ib = 0;
    for (int d = 0; d < r; d++) {
      ia += (size_t)(idx[d] * sa[d]);
      ib += (size_t)(idx[d] * sb[d]);
    }
    if (tensor_is_float(o)) {
      float x = ((const float *)a->data)[ia], y = ((const float *)b->data)[ib], z;
      switch (n->op) {
      case OP_ADD: z = x + y; break;
      case OP_SUB: z = x - y; break;
      case OP_MUL: z = x * y; break;
      default: z = x / y; break;
      }
      ((float *)o->data)[j] = z;
    } else {
      int64_t x = ((const int64_t *)a->data)[ia], y = ((const int64_t *)b->data)[ib], z = 0;
      bool ok = true;
      switch (n->op) {
      case OP_ADD: ok = !__builtin_add_overflow(x, y, &z); break;
      case OP_SUB: ok = !__builtin_sub_overflow(x, y, &z); break;
      case OP_MUL: ok = !__builtin_mul_overflow(x, y, &z); break;
      default:
        ok = y != 0 && !(x == INT64_MIN && y == -1);
        if (ok) z = x / y;
        break;
      }
      if (!ok) {
        tensor_free(ctx, o);
        return ffail(ctx, n, I2I_E_FORMAT, "integer overflow or division by zero", -1);
      }
      ((int64_t *)o->data)[j] = z;
    }
    for (int d = r - 1; d >= 0; d--) {
      if (++idx[d] < od[d]) break;
      idx[d] = 0;
    }
  }
  return set_out(ctx, g, n, 0, o);
}

static i2i_status fold_unsqueeze(i2i_ctx *ctx, i2i_graph *g, i2i_node *n, bool squeeze) {
  const i2i_tensor *t = in_t(g, n, 0);
  if (!t) return ffail(ctx, n, I2I_E_FORMAT, "no input", -1);
  int64_t axes[I2I_MAX_RANK];
  int na = 0;
  const i2i_attr_v *a = node_attr(n, "axes");
  if (n->n_in >= 2 && n->in[1] >= 0) {
    if (!read_ints(in_t(g, n, 1), axes, I2I_MAX_RANK, &na)) return ffail(ctx, n, I2I_E_FORMAT, "bad axes", -1);
  } else if (a && a->type == ATTR_INTS && a->n <= I2I_MAX_RANK) {
    na = a->n;
    for (int i = 0; i < na; i++) axes[i] = a->ints[i];
  } else if (!squeeze) {
    return ffail(ctx, n, I2I_E_FORMAT, "axes required", -1);
  }
  int64_t od[I2I_MAX_RANK] = {0};
  int r = 0;
  if (!squeeze) {
    int orank = t->rank + na;
    if (orank > I2I_MAX_RANK) return ffail(ctx, n, I2I_E_UNSUPPORTED, "rank too high", orank);
    bool ins[I2I_MAX_RANK] = {false};
    for (int i = 0; i < na; i++) {
      int64_t x = axes[i] < 0 ? axes[i] + orank : axes[i];
      if (x < 0 || x >= orank || ins[x]) return ffail(ctx, n, I2I_E_FORMAT, "bad axis", axes[i]);
      ins[x] = true;
    }
    int k = 0;
    for (int d = 0; d < orank; d++) od[d] = ins[d] ? 1 : t->dims[k++];
    r = orank;
  } else {
    bool rm[I2I_MAX_RANK] = {false};
    for (int i = 0; i < na; i++) {
      int64_t x = axes[i] < 0 ? axes[i] + t->rank : axes[i];
      if (x < 0 || x >= t->rank || t->dims[x] != 1) return ffail(ctx, n, I2I_E_FORMAT, "bad axis", axes[i]);
      rm[x] = true;
    }
    for (int d = 0; d < t->rank; d++)
      if (!(na ? rm[d] : t->dims[d] == 1)) od[r++] = t->dims[d];
  }
  i2i_tensor *o = tensor_new(ctx, t->dtype, r, od);
  if (o) memcpy(o->data, t->data, t->numel * esize(t));
  return set_out(ctx, g, n, 0, o);
}

i2i_status fold_node(i2i_ctx *ctx, i2i_graph *g, int ni) {
  i2i_node *n = &g->nodes[ni];
  for (int i = 0; i < n->n_in; i++) {
    const i2i_tensor *t = in_t(g, n, i);
    if (t && t->numel > FOLD_MAX_ELEMS) return ffail(ctx, n, I2I_E_LIMIT, "constant input too large", -1);
  }
  switch (n->op) {
  case OP_CONSTANT: return fold_constant(ctx, g, n);
  case OP_CONSTOFSHAPE: return fold_cos(ctx, g, n);
  case OP_CONCAT: return fold_concat(ctx, g, n);
  case OP_RESHAPE: return fold_reshape(ctx, g, n);
  case OP_SLICE: return fold_slice(ctx, g, n);
  case OP_TRANSPOSE: return fold_transpose(ctx, g, n);
  case OP_CAST: return fold_cast(ctx, g, n);
  case OP_SHAPE: return fold_shape(ctx, g, n);
  case OP_GATHER: return fold_gather(ctx, g, n);
  case OP_ADD:
  case OP_SUB:
  case OP_MUL:
  case OP_DIV: return fold_binary(ctx, g, n);
  case OP_UNSQUEEZE: return fold_unsqueeze(ctx, g, n, false);
  case OP_SQUEEZE: return fold_unsqueeze(ctx, g, n, true);
  case OP_IDENTITY: {
    const i2i_tensor *t = in_t(g, n, 0);
    if (!t) return ffail(ctx, n, I2I_E_FORMAT, "no input", -1);
    return set_out(ctx, g, n, 0, tensor_clone(ctx, t));
  }
  default:
    return ffail(ctx, n, I2I_E_UNSUPPORTED, "cannot be folded", -1);
  }
}
