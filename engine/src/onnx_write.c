/* onnx_write.c: writing a model as ONNX through protobuf-c, and the atomic file write.
 *
 * The folded graph is written: compute nodes in execution order, the constants they read as
 * initializers (float data as raw little-endian bytes pointing straight at the weight buffer),
 * N x C x H x W input and output with dynamic N, H and W, and the metadata. Every proto2 has_
 * flag is set, so files pass onnx.checker's full check. Files are streamed through a 1 MiB
 * buffer (no second copy of the weights in memory); i2i_model_save_memory packs into one block.
 * Reading is onnx_read.c's job.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "onnx.pb-c.h"

/* Every block allocated while building the proto tree, freed together. */
typedef struct {
  i2i_ctx *ctx;
  void **blocks;
  size_t n, cap;
  bool failed;
} wpool;

static void *wp_alloc(wpool *w, size_t n, size_t size) {
  if (w->failed) return NULL;
  if (w->n == w->cap) {
    size_t nc = w->cap ? w->cap * 2 : 256;
    void **nb = i2i_calloc(w->ctx, nc, sizeof *nb);
    if (!nb) {
      w->failed = true;
      return NULL;
    }
    if (w->n) memcpy(nb, w->blocks, w->n * sizeof *nb);
    i2i_dealloc(w->ctx, w->blocks);
    w->blocks = nb;
    w->cap = nc;
  }
  void *p = i2i_calloc(w->ctx, n ? n : 1, size);
  if (!p) {
    w->failed = true;
    return NULL;
  }
  w->blocks[w->n++] = p;
  return p;
}

static void wp_free(wpool *w) {
  for (size_t i = 0; i < w->n; i++) i2i_dealloc(w->ctx, w->blocks[i]);
  i2i_dealloc(w->ctx, w->blocks);
}

static Onnx__TypeProto *image_type(wpool *w, int channels) {
  Onnx__TypeProto *tp = wp_alloc(w, 1, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = wp_alloc(w, 1, sizeof *tt);
  Onnx__TensorShapeProto *sh = wp_alloc(w, 1, sizeof *sh);
  Onnx__TensorShapeProto__Dimension **dims = wp_alloc(w, 4, sizeof *dims);
  if (!tp || !tt || !sh || !dims) return NULL;
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  onnx__tensor_shape_proto__init(sh);
  static char *params[] = {"N", "C", "H", "W"};
  for (int i = 0; i < 4; i++) {
    dims[i] = wp_alloc(w, 1, sizeof **dims);
    if (!dims[i]) return NULL;
    onnx__tensor_shape_proto__dimension__init(dims[i]);
    if (i == 1 && channels > 0) {
      dims[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      dims[i]->dim_value = channels;
    } else {
      dims[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      dims[i]->dim_param = params[i];
    }
  }
  sh->n_dim = 4;
  sh->dim = dims;
  tt->has_elem_type = 1;
  tt->elem_type = DT_FLOAT;
  tt->shape = sh;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  return tp;
}

static Onnx__TensorProto *tensor_proto(wpool *w, const char *name, const i2i_tensor *t) {
  Onnx__TensorProto *tp = wp_alloc(w, 1, sizeof *tp);
  int64_t *dims = wp_alloc(w, (size_t)(t->rank ? t->rank : 1), sizeof *dims);
  if (!tp || !dims) return NULL;
  onnx__tensor_proto__init(tp);
  tp->name = (char *)name;
  tp->n_dims = (size_t)t->rank;
  for (int i = 0; i < t->rank; i++) dims[i] = t->dims[i];
  tp->dims = dims;
  tp->has_data_type = 1;
  tp->has_raw_data = 1;
  if (tensor_is_float(t)) {
    tp->data_type = DT_FLOAT;
    tp->raw_data.data = t->data;
    tp->raw_data.len = t->numel * 4;
  } else if (t->dtype == DT_BOOL || t->dtype == DT_UINT8 || t->dtype == DT_INT8) {
    uint8_t *b = wp_alloc(w, t->numel, 1);
    if (!b) return NULL;
    for (size_t i = 0; i < t->numel; i++) b[i] = (uint8_t)((const int64_t *)t->data)[i];
    tp->data_type = t->dtype;
    tp->raw_data.data = b;
    tp->raw_data.len = t->numel;
  } else if (t->dtype == DT_INT32) {
    int32_t *b = wp_alloc(w, t->numel, 4);
    if (!b) return NULL;
    for (size_t i = 0; i < t->numel; i++) b[i] = (int32_t)((const int64_t *)t->data)[i];
    tp->data_type = DT_INT32;
    tp->raw_data.data = (uint8_t *)b;
    tp->raw_data.len = t->numel * 4;
  } else {
    tp->data_type = DT_INT64;
    tp->raw_data.data = t->data;
    tp->raw_data.len = t->numel * 8;
  }
  return tp;
}

static Onnx__AttributeProto *attr_proto(wpool *w, const i2i_attr_v *a) {
  Onnx__AttributeProto *ap = wp_alloc(w, 1, sizeof *ap);
  if (!ap) return NULL;
  onnx__attribute_proto__init(ap);
  ap->name = a->name;
  ap->has_type = 1;
  switch (a->type) {
  case ATTR_INT:
    ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    ap->has_i = 1;
    ap->i = a->i;
    break;
  case ATTR_FLOAT:
    ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    ap->has_f = 1;
    ap->f = a->f;
    break;
  case ATTR_STRING:
    ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    ap->has_s = 1;
    ap->s.data = (uint8_t *)a->s;
    ap->s.len = strlen(a->s);
    break;
  case ATTR_INTS:
    ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    ap->n_ints = (size_t)a->n;
    ap->ints = a->ints;
    break;
  case ATTR_FLOATS:
    ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
    ap->n_floats = (size_t)a->n;
    ap->floats = a->floats;
    break;
  case ATTR_TENSOR:
    ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    ap->t = tensor_proto(w, "", a->t);
    if (!ap->t) return NULL;
    break;
  default:
    return NULL;
  }
  return ap;
}

static const char *vname(const i2i_graph *g, int v) { return v >= 0 ? g->values[v].name : ""; }

/* Builds the ModelProto of m; with a sink streams it there (*data stays NULL, *size is the
 * length), otherwise packs it into a new block (*data, *size). */
static i2i_status onnx_emit(i2i_ctx *ctx, const i2i_model *m, ProtobufCBuffer *sink, uint8_t **data, size_t *size) {
  const i2i_graph *g = &m->g;
  *data = NULL;
  *size = 0;
  wpool w = {ctx, NULL, 0, 0, false};
  Onnx__ModelProto mp;
  Onnx__GraphProto gp;
  Onnx__OperatorSetIdProto op, *opp = &op;
  onnx__model_proto__init(&mp);
  onnx__graph_proto__init(&gp);
  onnx__operator_set_id_proto__init(&op);
  op.domain = "";
  op.has_version = 1;
  op.version = g->opset;
  mp.has_ir_version = 1;
  mp.ir_version = g->ir_version;
  mp.n_opset_import = 1;
  mp.opset_import = &opp;
  mp.producer_name = "i2i";
  mp.producer_version = (char *)i2i_version();
  mp.graph = &gp;
  gp.name = (g->graph_name && g->graph_name[0]) ? g->graph_name : "i2i";

  /* nodes */
  gp.n_node = (size_t)g->n_order;
  gp.node = wp_alloc(&w, gp.n_node, sizeof *gp.node);
  bool *init = wp_alloc(&w, (size_t)g->n_values + 1, 1);
  size_t n_init = 0;
  for (int k = 0; gp.node && init && k < g->n_order; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    Onnx__NodeProto *np = wp_alloc(&w, 1, sizeof *np);
    char **in = wp_alloc(&w, (size_t)n->n_in, sizeof *in);
    char **out = wp_alloc(&w, (size_t)n->n_out, sizeof *out);
    Onnx__AttributeProto **at = wp_alloc(&w, (size_t)n->n_attr, sizeof *at);
    if (!np || !in || !out || !at) break;
    onnx__node_proto__init(np);
    np->op_type = n->op_type;
    np->name = n->name;
    np->n_input = (size_t)n->n_in;
    np->input = in;
    np->n_output = (size_t)n->n_out;
    np->output = out;
    for (int i = 0; i < n->n_in; i++) {
      in[i] = (char *)vname(g, n->in[i]);
      if (n->in[i] >= 0 && g->values[n->in[i]].c && !init[n->in[i]]) {
        init[n->in[i]] = true;
        n_init++;
      }
    }
    for (int i = 0; i < n->n_out; i++) out[i] = (char *)vname(g, n->out[i]);
    np->n_attribute = (size_t)n->n_attr;
    np->attribute = at;
    for (int i = 0; i < n->n_attr; i++) {
      at[i] = attr_proto(&w, &n->attr[i]);
      if (!at[i]) w.failed = true;
    }
    int extra[2] = {n->bn_from_in ? n->bn_mean : -1, n->bn_from_in ? n->bn_var : -1};
    for (int i = 0; i < 2; i++)
      if (extra[i] >= 0 && !init[extra[i]]) {
        init[extra[i]] = true;
        n_init++;
      }
    gp.node[k] = np;
  }
  /* initializers */
  gp.initializer = wp_alloc(&w, n_init, sizeof *gp.initializer);
  if (gp.initializer && init) {
    for (int v = 0; v < g->n_values; v++) {
      if (!init[v]) continue;
      Onnx__TensorProto *tp = tensor_proto(&w, g->values[v].name, g->values[v].c);
      if (!tp) break;
      gp.initializer[gp.n_initializer++] = tp;
    }
  }
  /* input and output */
  Onnx__ValueInfoProto vin, vout, *pin = &vin, *pout = &vout;
  onnx__value_info_proto__init(&vin);
  onnx__value_info_proto__init(&vout);
  vin.name = g->values[g->input].name;
  vin.type = image_type(&w, m->info.in_channels);
  vout.name = g->values[g->output].name;
  vout.type = image_type(&w, m->info.out_channels);
  gp.n_input = 1;
  gp.input = &pin;
  gp.n_output = 1;
  gp.output = &pout;
  /* metadata */
  mp.n_metadata_props = (size_t)g->n_meta;
  mp.metadata_props = wp_alloc(&w, mp.n_metadata_props, sizeof *mp.metadata_props);
  for (int i = 0; mp.metadata_props && i < g->n_meta; i++) {
    Onnx__StringStringEntryProto *e = wp_alloc(&w, 1, sizeof *e);
    if (!e) break;
    onnx__string_string_entry_proto__init(e);
    e->key = g->meta[i].key;
    e->value = g->meta[i].value;
    mp.metadata_props[i] = e;
  }
  if (w.failed || !vin.type || !vout.type) {
    wp_free(&w);
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory writing the model");
  }
  size_t len = onnx__model_proto__get_packed_size(&mp);
  if (sink) {
    size_t got = onnx__model_proto__pack_to_buffer(&mp, sink);
    wp_free(&w);
    *size = len;
    if (got != len) return i2i_fail(ctx, I2I_E_INTERNAL, "protobuf packing wrote %zu of %zu bytes", got, len);
    return I2I_OK;
  }
  uint8_t *buf = i2i_alloc(ctx, len ? len : 1);
  if (!buf) {
    wp_free(&w);
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory for %zu bytes of ONNX", len);
  }
  size_t got = onnx__model_proto__pack(&mp, buf);
  wp_free(&w);
  if (got != len) {
    i2i_dealloc(ctx, buf);
    return i2i_fail(ctx, I2I_E_INTERNAL, "protobuf packing wrote %zu of %zu bytes", got, len);
  }
  *data = buf;
  *size = len;
  return I2I_OK;
}

/* write(2) all of p, retrying short writes and EINTR; 0 or the errno of the failure. */
static int write_all(int fd, const uint8_t *p, size_t left) {
  while (left) {
    ssize_t r = write(fd, p, left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r < 0 ? errno : ENOSPC;
    p += r;
    left -= (size_t)r;
  }
  return 0;
}

/* Writes `path` atomically: writer(ctx, fd, arg) fills a temporary file next to it, which is
 * synced and renamed over path; on any failure the temporary is removed and path is untouched. */
static i2i_status atomic_write(i2i_ctx *ctx, const char *path, i2i_status (*writer)(i2i_ctx *, int, void *),
                               void *arg) {
  size_t plen = strlen(path), tlen;
  if (!i2i_add_ok(plen, 32, &tlen)) return i2i_fail(ctx, I2I_E_ARG, "path too long");
  char *tmp = i2i_alloc(ctx, tlen);
  if (!tmp) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  const char *slash = strrchr(path, '/');
  size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
  snprintf(tmp, tlen, "%.*s.%s.XXXXXX", (int)dirlen, path, path + dirlen);
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    i2i_status st = i2i_fail(ctx, I2I_E_IO, "cannot create a file next to '%s': %s", path, strerror(errno));
    i2i_dealloc(ctx, tmp);
    return st;
  }
  i2i_status st = writer(ctx, fd, arg);
  if (st) {
    close(fd);
  } else if (fchmod(fd, 0644) != 0 || fsync(fd) != 0 || close(fd) != 0) {
    st = i2i_fail(ctx, I2I_E_IO, "cannot write '%s': %s", path, strerror(errno));
  } else if (rename(tmp, path) != 0) {
    st = i2i_fail(ctx, I2I_E_IO, "cannot replace '%s': %s", path, strerror(errno));
  }
  if (st) unlink(tmp);
  i2i_dealloc(ctx, tmp);
  return st;
}

/* A protobuf-c output buffer that writes to a file descriptor through a staging block; the
 * first write error is kept and later appends do nothing. */
typedef struct {
  ProtobufCBuffer base;
  int fd, err;
  uint8_t *buf;
  size_t used, cap;
} fd_sink;

static void fd_sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
  fd_sink *s = (fd_sink *)b;
  if (s->err) return;
  if (len > s->cap - s->used) {
    s->err = write_all(s->fd, s->buf, s->used);
    s->used = 0;
    if (s->err) return;
  }
  if (len >= s->cap) {
    s->err = write_all(s->fd, data, len);
    return;
  }
  memcpy(s->buf + s->used, data, len);
  s->used += len;
}

typedef struct {
  const i2i_model *model;
  const char *path;
} model_arg;

static i2i_status write_model(i2i_ctx *ctx, int fd, void *arg) {
  const model_arg *a = arg;
  fd_sink s = {{fd_sink_append}, fd, 0, NULL, 0, (size_t)1 << 20};
  s.buf = i2i_alloc(ctx, s.cap);
  if (!s.buf) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  uint8_t *unused;
  size_t size;
  i2i_status st = onnx_emit(ctx, a->model, &s.base, &unused, &size);
  if (!st && !s.err) s.err = write_all(fd, s.buf, s.used);
  i2i_dealloc(ctx, s.buf);
  if (!st && s.err) st = i2i_fail(ctx, I2I_E_IO, "cannot write '%s': %s", a->path, strerror(s.err));
  return st;
}

i2i_status i2i_model_save_memory(i2i_ctx *ctx, const i2i_model *model, void **data, size_t *size) {
  if (!ctx || !model || !data || !size) return ctx ? i2i_fail(ctx, I2I_E_ARG, "i2i_model_save_memory: NULL argument") : I2I_E_ARG;
  uint8_t *buf;
  i2i_status st = onnx_emit(ctx, model, NULL, &buf, size);
  *data = st ? NULL : buf;
  return st;
}

i2i_status i2i_model_save(i2i_ctx *ctx, const i2i_model *model, const char *path) {
  if (!ctx || !model || !path) return ctx ? i2i_fail(ctx, I2I_E_ARG, "i2i_model_save: NULL argument") : I2I_E_ARG;
  model_arg a = {model, path};
  return atomic_write(ctx, path, write_model, &a);
}
