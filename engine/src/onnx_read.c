/* onnx_read.c: reading ONNX files into the engine's graph through protobuf-c.
 *
 * Before protobuf-c sees a byte: a file-size cap and an iterative walk of the wire format that
 * enforces a nesting limit (protobuf-c has none). Unpacking runs under a byte budget through the
 * context's allocator. After it: every optional field NULL-checked, every size checked before
 * an allocation, external data refused. Checking the graph itself is graph.c's job.
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

/* ---- files ------------------------------------------------------------------------------- */

i2i_status read_file(i2i_ctx *ctx, const char *path, uint64_t max, uint8_t **data, size_t *size, size_t *cap) {
  *data = NULL;
  *size = *cap = 0;
  /* O_NONBLOCK: opening a FIFO would wait for a writer; fstat below refuses it at once (regular
   * files ignore the flag) */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return i2i_fail(ctx, I2I_E_IO, "cannot open '%s': %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    return i2i_fail(ctx, I2I_E_IO, "cannot read '%s': %s", path, strerror(e));
  }
  if (S_ISDIR(sb.st_mode)) {
    close(fd);
    return i2i_fail(ctx, I2I_E_IO, "'%s' is a directory, not a model file", path);
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return i2i_fail(ctx, I2I_E_IO, "'%s' is not a regular file", path);
  }
  if ((uint64_t)sb.st_size > max) {
    close(fd);
    return i2i_fail(ctx, I2I_E_LIMIT, "'%s' is %lld bytes, over the limit of %llu bytes", path,
                    (long long)sb.st_size, (unsigned long long)max);
  }
  size_t n = (size_t)sb.st_size, room;
  uint8_t *buf = i2i_add_ok(n, n / 64 + ((size_t)64 << 10), &room) ? i2i_alloc_aligned(ctx, room) : NULL;
  if (!buf) {
    close(fd);
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory reading %zu bytes of '%s'", n, path);
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int e = r < 0 ? errno : EIO;
      close(fd);
      i2i_free_aligned(ctx, buf);
      return i2i_fail(ctx, I2I_E_IO, "error reading '%s': %s", path, r < 0 ? strerror(e) : "file shrank while reading");
    }
    got += (size_t)r;
  }
  close(fd);
  *data = buf;
  *size = n;
  *cap = room;
  return I2I_OK;
}

/* ---- wire-format pre-scan ---------------------------------------------------------------- */

static bool read_varint(const uint8_t *p, size_t end, size_t *pos, uint64_t *v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (*pos >= end) return false;
    uint8_t b = p[(*pos)++];
    if (shift == 63 && (b & 0x7e)) return false;
    r |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d, uint32_t num) {
  for (unsigned i = 0; i < d->n_fields; i++)
    if (d->fields[i].id == num) return &d->fields[i];
  return NULL;
}

/* Walks the message tree iteratively; fails past `max_depth` nesting levels, on malformed
 * wire data, and on subgraph attributes (AttributeProto.g / .graphs), which no op here takes. */
static i2i_status prescan(i2i_ctx *ctx, const uint8_t *p, size_t size, uint32_t max_depth) {
  struct { const ProtobufCMessageDescriptor *d; size_t end; } stack[64];
  if (max_depth > 63) max_depth = 63;
  int top = 0;
  stack[0].d = &onnx__model_proto__descriptor;
  stack[0].end = size;
  size_t pos = 0;
  while (top >= 0) {
    if (pos == stack[top].end) {
      top--;
      continue;
    }
    uint64_t key;
    if (!read_varint(p, stack[top].end, &pos, &key))
      return i2i_fail(ctx, I2I_E_FORMAT, "not an ONNX model: bad field tag at byte %zu", pos);
    uint32_t wt = key & 7;
    uint64_t num = key >> 3;
    if (num == 0 || num > 536870911u)
      return i2i_fail(ctx, I2I_E_FORMAT, "not an ONNX model: bad field number at byte %zu", pos);
    uint64_t len;
    switch (wt) {
    case 0:
      if (!read_varint(p, stack[top].end, &pos, &len))
        return i2i_fail(ctx, I2I_E_FORMAT, "not an ONNX model: truncated varint at byte %zu", pos);
      break;
    case 1:
      if (stack[top].end - pos < 8) return i2i_fail(ctx, I2I_E_FORMAT, "ONNX file truncated at byte %zu", pos);
      pos += 8;
      break;
    case 5:
      if (stack[top].end - pos < 4) return i2i_fail(ctx, I2I_E_FORMAT, "ONNX file truncated at byte %zu", pos);
      pos += 4;
      break;
    case 2: {
      if (!read_varint(p, stack[top].end, &pos, &len) || len > stack[top].end - pos)
        return i2i_fail(ctx, I2I_E_FORMAT, "ONNX file truncated or corrupt: a field at byte %zu runs past its end", pos);
      const ProtobufCFieldDescriptor *f = find_field(stack[top].d, (uint32_t)num);
      if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
        if (stack[top].d == &onnx__attribute_proto__descriptor && (num == 6 || num == 11))
          return i2i_fail(ctx, I2I_E_UNSUPPORTED, "a node attribute holds a subgraph (at byte %zu); no i2i op takes one", pos);
        if ((uint32_t)top + 1 > max_depth)
          return i2i_fail(ctx, I2I_E_LIMIT, "messages nested deeper than %u levels (at byte %zu)", max_depth, pos);
        top++;
        stack[top].d = f->descriptor;
        stack[top].end = pos + len;
      } else {
        pos += len;
      }
      break;
    }
    default:
      return i2i_fail(ctx, I2I_E_FORMAT, "not an ONNX model: wire type %u at byte %zu", wt, pos);
    }
  }
  return I2I_OK;
}

/* ---- protobuf-c allocator with a budget --------------------------------------------------- */

typedef struct {
  i2i_ctx *ctx;
  size_t used, budget;
  bool refused;
} pb_budget;

/* Blocks are 64-byte aligned with i2i_alloc_aligned's header (the offset to the raw block just
 * before the data), and the block's size for the budget before that: a float tensor's raw bytes
 * then become the tensor itself (convert_tensor), freed by i2i_free_aligned, not copied. */
static void *pb_alloc(void *user, size_t size) {
  pb_budget *b = user;
  size_t total;
  if (!i2i_add_ok(size, 64 + 2 * sizeof(size_t), &total) || b->used + total > b->budget) {
    b->refused = true;
    return NULL;
  }
  unsigned char *p = i2i_alloc(b->ctx, total);
  if (!p) {
    b->refused = true;
    return NULL;
  }
  uintptr_t a = ((uintptr_t)p + 2 * sizeof(size_t) + 63) & ~(uintptr_t)63;
  ((size_t *)a)[-1] = a - (uintptr_t)p;
  ((size_t *)a)[-2] = total;
  b->used += total;
  return (void *)a;
}

static void pb_free(void *user, void *ptr) {
  pb_budget *b = user;
  if (!ptr) return;
  b->used -= ((size_t *)ptr)[-2];
  i2i_free_aligned(b->ctx, ptr);
}

/* ---- tensors ----------------------------------------------------------------------------- */

static int dtype_size(int dt) {
  switch (dt) {
  case DT_FLOAT: case DT_INT32: case DT_UINT32: return 4;
  case DT_INT64: case DT_DOUBLE: case DT_UINT64: return 8;
  case DT_FLOAT16: case DT_BFLOAT16: case DT_INT16: case DT_UINT16: return 2;
  case DT_INT8: case DT_UINT8: case DT_BOOL: return 1;
  default: return 0;
  }
}

static float half_to_float(uint16_t h) {
  uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, f;
  if (e == 0) {
    if (!m) f = s;
    else {
      e = 113;
      while (!(m & 1024)) { m <<= 1; e--; }
      f = s | (e << 23) | ((m & 1023) << 13);
    }
  } else if (e == 31) {
    f = s | 0x7f800000u | (m << 13);
  } else {
    f = s | ((e + 112) << 23) | (m << 13);
  }
  float r;
  memcpy(&r, &f, 4);
  return r;
}

/* Converts one element given as raw little-endian bytes (or a typed-field value widened to
 * 64 bits) into the tensor's storage. */
static void store_elem(i2i_tensor *t, size_t i, const uint8_t *raw, int64_t ival, double dval, int src) {
  int dt = t->dtype;
  if (tensor_is_float(t)) {
    float v;
    if (src == 0) {
      switch (dt) {
      case DT_FLOAT: memcpy(&v, raw, 4); break;
      case DT_DOUBLE: { double d; memcpy(&d, raw, 8); v = (float)d; break; }
      case DT_FLOAT16: { uint16_t h; memcpy(&h, raw, 2); v = half_to_float(h); break; }
      default: { uint16_t h; memcpy(&h, raw, 2); uint32_t u = (uint32_t)h << 16; memcpy(&v, &u, 4); break; }
      }
    } else if (dt == DT_FLOAT16) {
      v = half_to_float((uint16_t)ival);
    } else if (dt == DT_BFLOAT16) {
      uint32_t u = (uint32_t)(uint16_t)ival << 16;
      memcpy(&v, &u, 4);
    } else {
      v = (float)dval;
    }
    ((float *)t->data)[i] = v;
    return;
  }
  int64_t v = ival;
  if (src == 0) {
    switch (dt) {
    case DT_INT64: memcpy(&v, raw, 8); break;
    case DT_UINT64: { uint64_t u; memcpy(&u, raw, 8); v = (int64_t)u; break; }
    case DT_INT32: { int32_t x; memcpy(&x, raw, 4); v = x; break; }
    case DT_UINT32: { uint32_t x; memcpy(&x, raw, 4); v = x; break; }
    case DT_INT16: { int16_t x; memcpy(&x, raw, 2); v = x; break; }
    case DT_UINT16: { uint16_t x; memcpy(&x, raw, 2); v = x; break; }
    case DT_INT8: v = (int8_t)raw[0]; break;
    default: v = raw[0]; break;
    }
  }
  if (dt == DT_BOOL) v = v != 0;
  ((int64_t *)t->data)[i] = v;
}

/* A tensor from tp; float32 raw bytes are taken from tp (their block came from pb_alloc), which
 * is left without them. */
static i2i_status convert_tensor(i2i_ctx *ctx, Onnx__TensorProto *tp, const char *what, i2i_tensor **out) {
  *out = NULL;
  const char *name = tp->name ? tp->name : "";
  if (tp->n_external_data || (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL))
    return i2i_fail(ctx, I2I_E_UNSUPPORTED, "%s '%s' keeps its data in an external file; i2i refuses external data", what, name);
  if (tp->segment) return i2i_fail(ctx, I2I_E_UNSUPPORTED, "%s '%s' is segmented", what, name);
  int dt = tp->has_data_type ? tp->data_type : 0;
  int es = dtype_size(dt);
  if (!es) return i2i_fail(ctx, I2I_E_UNSUPPORTED, "%s '%s' has data type %d, which i2i does not read", what, name, dt);
  if (tp->n_dims > I2I_MAX_RANK) return i2i_fail(ctx, I2I_E_UNSUPPORTED, "%s '%s' has rank %zu (at most 8)", what, name, tp->n_dims);
  size_t numel = 1;
  int64_t dims[I2I_MAX_RANK];
  for (size_t i = 0; i < tp->n_dims; i++) {
    if (tp->dims[i] < 0 || !i2i_mul_ok(numel, (size_t)tp->dims[i], &numel))
      return i2i_fail(ctx, I2I_E_FORMAT, "%s '%s' has a negative or overflowing dimension %lld", what, name,
                      (long long)tp->dims[i]);
    dims[i] = tp->dims[i];
  }
  size_t bytes;
  if (!i2i_mul_ok(numel, (size_t)es, &bytes)) return i2i_fail(ctx, I2I_E_FORMAT, "%s '%s' is too large", what, name);
  size_t typed = tp->n_float_data + tp->n_int32_data + tp->n_int64_data + tp->n_double_data + tp->n_uint64_data;
  if (tp->n_string_data) return i2i_fail(ctx, I2I_E_UNSUPPORTED, "%s '%s' holds strings", what, name);
  if (tp->has_raw_data) {
    if (typed) return i2i_fail(ctx, I2I_E_FORMAT, "%s '%s' has both raw and typed data", what, name);
    if (tp->raw_data.len != bytes)
      return i2i_fail(ctx, I2I_E_FORMAT, "%s '%s' declares %zu elements (%zu bytes) but holds %zu bytes", what, name,
                      numel, bytes, (size_t)tp->raw_data.len);
  } else {
    size_t have;
    switch (dt) {
    case DT_FLOAT: have = tp->n_float_data; break;
    case DT_INT64: have = tp->n_int64_data; break;
    case DT_DOUBLE: have = tp->n_double_data; break;
    case DT_UINT32: case DT_UINT64: have = tp->n_uint64_data; break;
    default: have = tp->n_int32_data; break;
    }
    if (have != numel || typed != have)
      return i2i_fail(ctx, I2I_E_FORMAT, "%s '%s' declares %zu elements but holds %zu", what, name, numel, typed);
  }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  /* float32 raw data is the storage format already (a model's weights: 218 MB for the U-Net) */
  if (tp->has_raw_data && dt == DT_FLOAT && bytes && tp->raw_data.data) {
    i2i_tensor *t = tensor_adopt(ctx, dt, (int)tp->n_dims, dims, tp->raw_data.data);
    if (!t) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory for %s '%s'", what, name);
    tp->raw_data.data = NULL;
    tp->raw_data.len = 0;
    *out = t;
    return I2I_OK;
  }
#endif
  i2i_tensor *t = tensor_new(ctx, dt, (int)tp->n_dims, dims);
  if (!t) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory for %s '%s' (%zu elements)", what, name, numel);
  for (size_t i = 0; i < numel; i++) {
    if (tp->has_raw_data) {
      store_elem(t, i, tp->raw_data.data + i * (size_t)es, 0, 0, 0);
    } else {
      switch (dt) {
      case DT_FLOAT: store_elem(t, i, NULL, 0, tp->float_data[i], 1); break;
      case DT_INT64: store_elem(t, i, NULL, tp->int64_data[i], 0, 1); break;
      case DT_DOUBLE: store_elem(t, i, NULL, 0, tp->double_data[i], 1); break;
      case DT_UINT32: case DT_UINT64: store_elem(t, i, NULL, (int64_t)tp->uint64_data[i], 0, 1); break;
      default: store_elem(t, i, NULL, tp->int32_data[i], tp->int32_data[i], 1); break;
      }
    }
  }
  *out = t;
  return I2I_OK;
}

/* ---- model ------------------------------------------------------------------------------- */

static i2i_status convert_attr(i2i_ctx *ctx, const Onnx__AttributeProto *ap, const i2i_node *n, i2i_attr_v *a) {
  if (!ap->name || !ap->name[0]) return i2i_fail(ctx, I2I_E_FORMAT, "node '%s' (%s): an attribute has no name", n->name, n->op_type);
  a->name = i2i_strdup(ctx, ap->name);
  if (!a->name) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  if (ap->ref_attr_name && ap->ref_attr_name[0])
    return i2i_fail(ctx, I2I_E_UNSUPPORTED, "node '%s' (%s): attribute '%s' refers to a function attribute", n->name, n->op_type, ap->name);
  if (!ap->has_type)
    return i2i_fail(ctx, I2I_E_FORMAT, "node '%s' (%s): attribute '%s' has no type", n->name, n->op_type, ap->name);
  switch (ap->type) {
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
    a->type = ATTR_FLOAT;
    a->f = ap->f;
    break;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
    a->type = ATTR_INT;
    a->i = ap->i;
    break;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
    a->type = ATTR_STRING;
    if (ap->s.len > 4096) return i2i_fail(ctx, I2I_E_LIMIT, "node '%s': attribute '%s' string too long", n->name, ap->name);
    a->s = i2i_alloc(ctx, ap->s.len + 1);
    if (!a->s) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    if (ap->s.len) memcpy(a->s, ap->s.data, ap->s.len);
    a->s[ap->s.len] = 0;
    break;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
    a->type = ATTR_INTS;
    if (ap->n_ints > 1024) return i2i_fail(ctx, I2I_E_LIMIT, "node '%s': attribute '%s' has %zu values", n->name, ap->name, ap->n_ints);
    a->ints = i2i_alloc(ctx, sizeof(int64_t) * (ap->n_ints ? ap->n_ints : 1));
    if (!a->ints) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    if (ap->n_ints) memcpy(a->ints, ap->ints, sizeof(int64_t) * ap->n_ints);
    a->n = (int)ap->n_ints;
    break;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
    a->type = ATTR_FLOATS;
    if (ap->n_floats > 1024) return i2i_fail(ctx, I2I_E_LIMIT, "node '%s': attribute '%s' has %zu values", n->name, ap->name, ap->n_floats);
    a->floats = i2i_alloc(ctx, sizeof(float) * (ap->n_floats ? ap->n_floats : 1));
    if (!a->floats) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    if (ap->n_floats) memcpy(a->floats, ap->floats, sizeof(float) * ap->n_floats);
    a->n = (int)ap->n_floats;
    break;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: {
    a->type = ATTR_TENSOR;
    if (!ap->t) return i2i_fail(ctx, I2I_E_FORMAT, "node '%s': attribute '%s' has no tensor", n->name, ap->name);
    i2i_status st = convert_tensor(ctx, ap->t, "constant", &a->t);
    if (st) return st;
    break;
  }
  default:
    return i2i_fail(ctx, I2I_E_UNSUPPORTED, "node '%s' (%s): attribute '%s' has type %d (graphs, strings lists, sparse tensors are not supported)",
                    n->name, n->op_type, ap->name, (int)ap->type);
  }
  return I2I_OK;
}

/* Reads the float type and static channel count of a graph input or output. */
static i2i_status value_info_channels(i2i_ctx *ctx, const Onnx__ValueInfoProto *vi, const char *what, int *channels) {
  *channels = -1;
  const Onnx__TypeProto *tp = vi->type;
  if (!tp) return I2I_OK;
  if (tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
    return i2i_fail(ctx, I2I_E_UNSUPPORTED, "graph %s '%s' is not a tensor", what, vi->name);
  const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
  if (tt->has_elem_type && tt->elem_type != DT_FLOAT)
    return i2i_fail(ctx, I2I_E_UNSUPPORTED, "graph %s '%s' has element type %d; i2i models take float images", what, vi->name, tt->elem_type);
  if (tt->shape) {
    if (tt->shape->n_dim != 4)
      return i2i_fail(ctx, I2I_E_UNSUPPORTED, "graph %s '%s' has rank %zu; i2i models take N x C x H x W", what, vi->name, tt->shape->n_dim);
    const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[1];
    if (d && d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
      if (d->dim_value < 1 || d->dim_value > 65536)
        return i2i_fail(ctx, I2I_E_FORMAT, "graph %s '%s' has %lld channels", what, vi->name, (long long)d->dim_value);
      *channels = (int)d->dim_value;
    }
  }
  return I2I_OK;
}

static i2i_status convert_model(i2i_ctx *ctx, const Onnx__ModelProto *mp, i2i_graph *g) {
  i2i_status st;
  if (!mp->has_ir_version || mp->ir_version < 3 || mp->ir_version > 10)
    return i2i_fail(ctx, I2I_E_UNSUPPORTED, "ONNX IR version %lld is not supported (3 to 10)", (long long)mp->ir_version);
  g->ir_version = mp->ir_version;
  int opset = -1;
  for (size_t i = 0; i < mp->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
    if (!o) continue;
    const char *dom = o->domain ? o->domain : "";
    if (dom[0] && strcmp(dom, "ai.onnx"))
      return i2i_fail(ctx, I2I_E_UNSUPPORTED, "the model imports operator domain '%s'; i2i runs the default ONNX domain only", dom);
    if (opset >= 0) return i2i_fail(ctx, I2I_E_FORMAT, "the model imports the default opset twice");
    if (!o->has_version || o->version < 1 || o->version > 1000)
      return i2i_fail(ctx, I2I_E_FORMAT, "bad opset version");
    opset = (int)o->version;
  }
  if (opset < 0) return i2i_fail(ctx, I2I_E_FORMAT, "the model imports no opset");
  g->opset = opset;
  if (mp->n_functions) return i2i_fail(ctx, I2I_E_UNSUPPORTED, "the model defines %zu local functions; not supported", mp->n_functions);
  const Onnx__GraphProto *gp = mp->graph;
  if (!gp) return i2i_fail(ctx, I2I_E_FORMAT, "the file has no graph (not an ONNX model?)");
  if (gp->n_sparse_initializer) return i2i_fail(ctx, I2I_E_UNSUPPORTED, "sparse initializers are not supported");
  if ((uint64_t)gp->n_node > ctx->p.limits.max_nodes)
    return i2i_fail(ctx, I2I_E_LIMIT, "%zu nodes, over the limit of %u", gp->n_node, ctx->p.limits.max_nodes);
  /* tensors: the initializers and the Constant nodes' values */
  uint64_t n_tensors = gp->n_initializer;
  for (size_t i = 0; i < gp->n_node; i++)
    if (gp->node[i] && gp->node[i]->op_type && !strcmp(gp->node[i]->op_type, "Constant")) n_tensors++;
  if (n_tensors > ctx->p.limits.max_tensors)
    return i2i_fail(ctx, I2I_E_LIMIT, "%llu tensors (initializers and constants), over the limit of %u",
                    (unsigned long long)n_tensors, ctx->p.limits.max_tensors);
  g->producer_name = i2i_strdup(ctx, mp->producer_name);
  g->producer_version = i2i_strdup(ctx, mp->producer_version);
  g->graph_name = i2i_strdup(ctx, gp->name);
  g->doc = i2i_strdup(ctx, mp->doc_string);
  if (!g->producer_name || !g->producer_version || !g->graph_name || !g->doc)
    return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  for (size_t i = 0; i < gp->n_initializer; i++) {
    Onnx__TensorProto *tp = gp->initializer[i];
    if (!tp || !tp->name || !tp->name[0]) return i2i_fail(ctx, I2I_E_FORMAT, "initializer %zu has no name", i);
    if (graph_find_value(g, tp->name) >= 0) return i2i_fail(ctx, I2I_E_FORMAT, "initializer '%s' is defined twice", tp->name);
    i2i_tensor *t;
    if ((st = convert_tensor(ctx, tp, "initializer", &t))) return st;
    int v = graph_value(ctx, g, tp->name);
    if (v < 0) {
      tensor_free(ctx, t);
      return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    }
    g->values[v].c = t;
  }
  for (size_t i = 0; i < gp->n_input; i++) {
    const Onnx__ValueInfoProto *vi = gp->input[i];
    if (!vi || !vi->name || !vi->name[0]) return i2i_fail(ctx, I2I_E_FORMAT, "graph input %zu has no name", i);
    int v = graph_find_value(g, vi->name);
    if (v >= 0 && g->values[v].c) continue; /* older exporters list initializers as inputs */
    if (g->input >= 0)
      return i2i_fail(ctx, I2I_E_UNSUPPORTED, "the graph has more than one image input ('%s' and '%s')",
                      g->values[g->input].name, vi->name);
    int ch;
    if ((st = value_info_channels(ctx, vi, "input", &ch))) return st;
    v = graph_value(ctx, g, vi->name);
    if (v < 0) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    g->input = v;
    g->in_channels = ch;
    g->values[v].channels = ch;
  }
  if (gp->n_output != 1)
    return i2i_fail(ctx, I2I_E_UNSUPPORTED, "the graph has %zu outputs; i2i models have one", gp->n_output);
  {
    const Onnx__ValueInfoProto *vi = gp->output[0];
    if (!vi || !vi->name || !vi->name[0]) return i2i_fail(ctx, I2I_E_FORMAT, "the graph output has no name");
    int ch;
    if ((st = value_info_channels(ctx, vi, "output", &ch))) return st;
    int v = graph_value(ctx, g, vi->name);
    if (v < 0) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    g->output = v;
    g->out_channels = ch;
  }
  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    if (!np || !np->op_type || !np->op_type[0]) return i2i_fail(ctx, I2I_E_FORMAT, "node %zu has no op_type", i);
    char autoname[64];
    const char *name = np->name;
    if (!name || !name[0]) {
      snprintf(autoname, sizeof autoname, "%.32s_%zu", np->op_type, i);
      name = autoname;
    }
    if (np->n_input > 4096 || np->n_output > 16 || np->n_output == 0 || np->n_attribute > 64)
      return i2i_fail(ctx, I2I_E_FORMAT, "node '%s' (%s): %zu inputs, %zu outputs, %zu attributes", name, np->op_type,
                      np->n_input, np->n_output, np->n_attribute);
    for (size_t k = 0; k < np->n_input; k++)
      if (!np->input[k]) return i2i_fail(ctx, I2I_E_FORMAT, "node '%s': input %zu is missing", name, k);
    for (size_t k = 0; k < np->n_output; k++)
      if (!np->output[k]) return i2i_fail(ctx, I2I_E_FORMAT, "node '%s': output %zu is missing", name, k);
    i2i_node *n;
    if ((st = graph_add_node(ctx, g, np->op_type, name, np->domain ? np->domain : "", (int)np->n_input,
                             (const char *const *)np->input, (int)np->n_output, (const char *const *)np->output, &n)))
      return st;
    n->attr = i2i_calloc(ctx, np->n_attribute ? np->n_attribute : 1, sizeof *n->attr);
    if (!n->attr) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    for (size_t k = 0; k < np->n_attribute; k++) {
      if (!np->attribute[k]) return i2i_fail(ctx, I2I_E_FORMAT, "node '%s': attribute %zu is missing", name, k);
      n->n_attr = (int)k + 1;
      if ((st = convert_attr(ctx, np->attribute[k], n, &n->attr[k]))) return st;
      for (size_t j = 0; j < k; j++)
        if (!strcmp(n->attr[j].name, n->attr[k].name))
          return i2i_fail(ctx, I2I_E_FORMAT, "node '%s': attribute '%s' appears twice", name, n->attr[k].name);
    }
  }
  for (size_t i = 0; i < mp->n_metadata_props; i++) {
    const Onnx__StringStringEntryProto *e = mp->metadata_props[i];
    if (!e || !e->key) continue;
    if ((st = graph_set_meta(ctx, g, e->key, e->value ? e->value : ""))) return st;
  }
  return I2I_OK;
}

static i2i_status unpack_model(i2i_ctx *ctx, const uint8_t *data, size_t size, Onnx__ModelProto **mp, pb_budget *bud,
                               ProtobufCAllocator *pa) {
  if (size == 0) return i2i_fail(ctx, I2I_E_FORMAT, "the file is empty");
  if ((uint64_t)size > ctx->p.limits.max_model_bytes)
    return i2i_fail(ctx, I2I_E_LIMIT, "the model is %zu bytes, over the limit of %llu bytes", size,
                    (unsigned long long)ctx->p.limits.max_model_bytes);
  i2i_status st = prescan(ctx, data, size, ctx->p.limits.max_depth);
  if (st) return st;
  bud->ctx = ctx;
  bud->used = 0;
  bud->refused = false;
  bud->budget = size > SIZE_MAX / 8 ? SIZE_MAX : size * 4 + ((size_t)64 << 20);
  pa->alloc = pb_alloc;
  pa->free = pb_free;
  pa->allocator_data = bud;
  *mp = onnx__model_proto__unpack(pa, size, data);
  if (!*mp) {
    if (bud->refused)
      return i2i_fail(ctx, bud->used + 4096 >= bud->budget ? I2I_E_LIMIT : I2I_E_NOMEM,
                      "decoding the model needs more memory than allowed (%zu bytes used)", bud->used);
    return i2i_fail(ctx, I2I_E_FORMAT, "the file is not a valid ONNX model (protobuf decoding failed)");
  }
  return I2I_OK;
}

/* onnx_read, handing *owned (when not NULL; `cap` bytes) to the graph as spare memory as soon as
 * the bytes are decoded: the packed weights are then written over the file's bytes, and the file,
 * the decoded tensors and the packed weights are never held at once. */
static i2i_status read_model(i2i_ctx *ctx, const uint8_t *data, size_t size, uint8_t **owned, size_t cap,
                             i2i_graph *g) {
  Onnx__ModelProto *mp;
  pb_budget bud;
  ProtobufCAllocator pa;
  i2i_status st = unpack_model(ctx, data, size, &mp, &bud, &pa);
  if (owned) {
    g->spare = *owned;
    g->spare_bytes = cap;
    *owned = NULL;
  }
  if (st) return st;
  st = convert_model(ctx, mp, g);
  onnx__model_proto__free_unpacked(mp, &pa);
  return st;
}

i2i_status onnx_read(i2i_ctx *ctx, const uint8_t *data, size_t size, i2i_graph *g) {
  return read_model(ctx, data, size, NULL, 0, g);
}

/* Reads only the metadata_props of a model, skipping the graph. */
i2i_status onnx_read_meta(i2i_ctx *ctx, const uint8_t *p, size_t size, i2i_graph *g) {
  size_t pos = 0;
  pb_budget bud = {ctx, 0, (size_t)16 << 20, false};
  ProtobufCAllocator pa = {pb_alloc, pb_free, &bud};
  while (pos < size) {
    uint64_t key, len;
    if (!read_varint(p, size, &pos, &key)) return i2i_fail(ctx, I2I_E_FORMAT, "not an ONNX model");
    switch (key & 7) {
    case 0:
      if (!read_varint(p, size, &pos, &len)) return i2i_fail(ctx, I2I_E_FORMAT, "not an ONNX model");
      break;
    case 1:
      if (size - pos < 8) return i2i_fail(ctx, I2I_E_FORMAT, "truncated");
      pos += 8;
      break;
    case 5:
      if (size - pos < 4) return i2i_fail(ctx, I2I_E_FORMAT, "truncated");
      pos += 4;
      break;
    case 2:
      if (!read_varint(p, size, &pos, &len) || len > size - pos) return i2i_fail(ctx, I2I_E_FORMAT, "truncated");
      if ((key >> 3) == 14) {
        Onnx__StringStringEntryProto *e = onnx__string_string_entry_proto__unpack(&pa, (size_t)len, p + pos);
        if (!e) return i2i_fail(ctx, I2I_E_FORMAT, "bad metadata entry");
        i2i_status st = e->key ? graph_set_meta(ctx, g, e->key, e->value ? e->value : "") : I2I_OK;
        onnx__string_string_entry_proto__free_unpacked(e, &pa);
        if (st) return st;
      }
      pos += len;
      break;
    default:
      return i2i_fail(ctx, I2I_E_FORMAT, "not an ONNX model");
    }
  }
  return I2I_OK;
}

/* A model from ONNX bytes; `owned` (or NULL) and `cap` as in read_model. */
static i2i_status load_model(i2i_ctx *ctx, const void *data, size_t size, uint8_t **owned, size_t cap,
                             i2i_model **out) {
  i2i_graph g;
  graph_init(&g);
  i2i_status st = read_model(ctx, data, size, owned, cap, &g);
  if (st) {
    graph_clear(ctx, &g);
    return st;
  }
  return model_from_graph(ctx, &g, out);
}

i2i_status i2i_model_load_memory(i2i_ctx *ctx, const void *data, size_t size, i2i_model **out) {
  if (!ctx || !out || (!data && size)) return ctx ? i2i_fail(ctx, I2I_E_ARG, "i2i_model_load_memory: NULL argument") : I2I_E_ARG;
  *out = NULL;
  return load_model(ctx, data, size, NULL, 0, out);
}

i2i_status i2i_model_load_file(i2i_ctx *ctx, const char *path, i2i_model **out) {
  if (!ctx || !path || !out) return ctx ? i2i_fail(ctx, I2I_E_ARG, "i2i_model_load_file: NULL argument") : I2I_E_ARG;
  *out = NULL;
  uint8_t *data;
  size_t size, cap;
  i2i_status st = read_file(ctx, path, ctx->p.limits.max_model_bytes, &data, &size, &cap);
  if (st) return st;
  st = load_model(ctx, data, size, &data, cap, out);
  if (st) i2i_prefix_err(ctx, "%s", path);
  return st;
}
