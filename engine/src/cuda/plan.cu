/* cuda/plan.cu: device plans: the engine's steps turned into launches for one shape, precision
 * and Pix2Pix mode, their device memory laid out once, cached by the backend (backend.cu).
 *
 * FP32 is NCHW; FP16 is NHWC with channels padded to a multiple of 8 (zeros in activations and
 * filters). The fusions, and why, are described above fuse(); the device weights are here too.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_priv.h"

enum { CS_CONV = 1, CS_CONVT, CS_NORM, CS_PAD, CS_ACT, CS_TANH, CS_ADD, CS_CONCAT, CS_DROPOUT };
enum { BIAS_NONE = 0, BIAS_KERNEL, BIAS_DROP, BIAS_FOLDED };
enum { DEM_NONE = 0, DEM_PACKED, DEM_HALO, DEM_CONFLICT };

typedef struct {
  int kind;
  int node;
  int in[8], n_in;
  int out;
  double flops;
  int skip;                  /* fused into another step */
  /* convolutions */
  struct dnn_conv *dc;
  int thin;                  /* k_conv_thin instead of cuDNN */
  int wval;
  size_t w_off;              /* float32 filter in the weight buffer */
  size_t bias_off;
  int has_bias, bias_mode;
  int pads[4], pad_mode;
  int explicit_pad, tmp;     /* pad into the temporary value tmp first */
  /* norms */
  int running;
  size_t scale_off, shift_off, mean_off, var_off, fold_off;
  int has_fold;
  float eps;
  int act1, act2;
  float al1, al2;
  int res;                   /* fused residual (Add's other input) or -1 */
  size_t ab_off;             /* bytes into the params block */
  int nblk;
  /* Pad */
  float pad_value;
  /* Tanh: folded conv bias */
  int has_tbias;
  size_t tbias_off;
  /* Dropout */
  int drop_on;
  uint32_t threshold, ordinal;
  float dscale;
} cstep;

typedef struct {
  int live;
  int n, c, h, w, cs;
  int pt, pl, pb, pr, halo_mode;
  int producer;              /* step index, -1 external (uploaded), -2 none */
  int last;                  /* step index of the last read */
  int external, download;
  int alias;                 /* root value whose buffer this one reuses, or -1 */
  size_t off, bytes;
  int demand;
  int dpads[4], dmode;
} cval;

struct cplan {
  uint64_t serial;
  int n, h, w, half, mode, first, last, n_engine_steps;
  int cacheable;
  int nv, nt;
  cval *vals;
  cstep *steps;
  int ns;
  int input, output;
  cu_weights *W;
  void *arena;
  size_t arena_bytes;
  void *params;
  size_t params_bytes;
  float2 *partials;
  void *ws;
  size_t ws_bytes;
  void *io;
  size_t io_bytes, img_bytes;
  double total_flops;
  uint64_t last_use;
  cudaGraphExec_t gexec;
  uint64_t g_seed, g_step;
  int graph_failed;
};

static inline int round8(int c) { return (c + 7) & ~7; }
static inline size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* ---- weights ------------------------------------------------------------------------------------ */

void weights_free(cu_backend *B, cu_weights *W) {
  if (!W) return;
  cu_free(B, W->w32, W->w32_bytes);
  cu_free(B, W->w16_block, W->w16_bytes);
  free(W->w16);
  free(W);
}

int weight_offset(cu_backend *B, const i2i_model *m, int v, size_t min_numel, size_t *off) {
  const i2i_graph *g = &m->g;
  if (v < 0 || v >= g->n_values || !g->values[v].c) return cu_fail(B, CE_INTERNAL, "a weight input is not a constant");
  const i2i_tensor *t = g->values[v].c;
  if (!tensor_is_float(t)) return cu_fail(B, CE_UNSUPPORTED, "weight '%s' is not a float tensor", g->values[v].name);
  if (t->numel < min_numel)
    return cu_fail(B, CE_UNSUPPORTED, "weight '%s' has %zu values, %zu needed", g->values[v].name, t->numel, min_numel);
  const float *p = (const float *)t->data;
  if (!m->weights || p < m->weights || (size_t)(p - m->weights) > m->n_weights ||
      t->numel > m->n_weights - (size_t)(p - m->weights))
    return cu_fail(B, CE_INTERNAL, "weight '%s' is outside the model's weight buffer", g->values[v].name);
  *off = (size_t)(p - m->weights);
  return CE_OK;
}

/* Converts every Conv / ConvTranspose filter to half KRSC with both channel counts rounded up to
 * a multiple of 8 (the same rule as the activations' stored channels). */
static int build_half_filters(cu_backend *B, const i2i_model *m, cu_weights *W) {
  const i2i_graph *g = &m->g;
  W->w16 = (__half **)calloc((size_t)g->n_values + 1, sizeof *W->w16);
  if (!W->w16) return cu_fail(B, CE_HOSTMEM, "out of host memory for the filter table");
  W->n_values = g->n_values;
  size_t total = 0;
  size_t *offs = (size_t *)calloc((size_t)g->n_values + 1, sizeof *offs);
  if (!offs) return cu_fail(B, CE_HOSTMEM, "out of host memory for the filter table");
  for (int k = 0; k < g->n_order; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    if (n->op != OP_CONV && n->op != OP_CONVT) continue;
    int v = n->in[1];
    const i2i_tensor *t = v >= 0 ? g->values[v].c : NULL;
    if (!t || t->rank != 4) {
      free(offs);
      return cu_fail(B, CE_UNSUPPORTED, "node '%s': the filter is not a constant 4-D tensor", n->name);
    }
    if (offs[v] || W->w16[v]) continue;
    size_t K = (size_t)round8((int)t->dims[0]), C = (size_t)round8((int)t->dims[1]), bytes;
    if (!i2i_mul_ok(K * C, (size_t)(t->dims[2] * t->dims[3]) * sizeof(__half), &bytes) ||
        !i2i_add_ok(total, align256(bytes), &total)) {
      free(offs);
      return cu_fail(B, CE_UNSUPPORTED, "filters too large");
    }
    offs[v] = total - align256(bytes) + 1; /* +1: 0 means "none" */
  }
  if (total) {
    int k = cu_malloc(B, &W->w16_block, total, "half filters");
    if (k) {
      free(offs);
      return k;
    }
    W->w16_bytes = total;
  }
  int rc = CE_OK;
  for (int v = 0; v < g->n_values && !rc; v++) {
    if (!offs[v]) continue;
    const i2i_tensor *t = g->values[v].c;
    size_t woff;
    rc = weight_offset(B, m, v, t->numel, &woff);
    if (rc) break;
    __half *dst = (__half *)((char *)W->w16_block + offs[v] - 1);
    cudaError_t e = k_filter_krsc(B->stream, W->w32 + woff, dst, (int)t->dims[0], (int)t->dims[1], (int)t->dims[2],
                                  (int)t->dims[3], round8((int)t->dims[0]), round8((int)t->dims[1]));
    if (e != cudaSuccess) rc = cu_fail_cuda(B, e, "filter conversion");
    W->w16[v] = dst;
  }
  free(offs);
  return rc;
}

int weights_get(cu_backend *B, const i2i_model *m, int half, cu_weights **out) {
  *out = NULL;
  for (int i = 0; i < CU_MAX_MODELS; i++) {
    cu_weights *W = B->weights[i];
    if (W && W->serial == m->serial) {
      if (half && !W->w16) {
        int k = build_half_filters(B, m, W);
        if (k) {
          /* a half-built set must not pass for a complete one at the next run */
          cu_free(B, W->w16_block, W->w16_bytes);
          W->w16_block = NULL;
          W->w16_bytes = 0;
          free(W->w16);
          W->w16 = NULL;
          return k;
        }
      }
      W->last_use = ++B->clock;
      *out = W;
      return CE_OK;
    }
  }
  int slot = -1;
  for (int i = 0; i < CU_MAX_MODELS && slot < 0; i++)
    if (!B->weights[i]) slot = i;
  if (slot < 0) {
    slot = 0;
    for (int i = 1; i < CU_MAX_MODELS; i++)
      if (B->weights[i]->last_use < B->weights[slot]->last_use) slot = i;
    uint64_t old = B->weights[slot]->serial;
    for (int p = 0; p < CU_MAX_PLANS; p++)
      if (B->plans[p] && B->plans[p]->serial == old) {
        cplan_free(B, B->plans[p]);
        B->plans[p] = NULL;
      }
    weights_free(B, B->weights[slot]);
    B->weights[slot] = NULL;
  }
  cu_weights *W = (cu_weights *)calloc(1, sizeof *W);
  if (!W) return cu_fail(B, CE_HOSTMEM, "out of host memory for the weights");
  W->serial = m->serial;
  size_t bytes;
  if (!i2i_mul_ok(m->n_weights ? m->n_weights : 1, sizeof(float), &bytes)) {
    free(W);
    return cu_fail(B, CE_UNSUPPORTED, "weights too large");
  }
  int k = cu_malloc(B, (void **)&W->w32, bytes, "weights");
  if (!k) {
    W->w32_bytes = bytes;
    if (m->n_weights) {
      cudaError_t e = cudaMemcpyAsync(W->w32, m->weights, bytes, cudaMemcpyHostToDevice, B->stream);
      if (e == cudaSuccess) e = cudaStreamSynchronize(B->stream);
      if (e != cudaSuccess) k = cu_fail_cuda(B, e, "weights upload");
    }
  }
  if (!k && half) k = build_half_filters(B, m, W);
  if (k) {
    weights_free(B, W);
    return k;
  }
  W->last_use = ++B->clock;
  B->weights[slot] = W;
  *out = W;
  return CE_OK;
}

/* ---- building ---------------------------------------------------------------------------------- */

void cplan_free(cu_backend *B, struct cplan *cp) {
  if (!cp) return;
  if (cp->gexec) cudaGraphExecDestroy(cp->gexec);
  for (int i = 0; i < cp->ns; i++) dnn_conv_free(cp->steps[i].dc);
  cu_free(B, cp->arena, cp->arena_bytes);
  cu_free(B, cp->params, cp->params_bytes);
  cu_free(B, cp->ws, cp->ws_bytes);
  cu_free(B, cp->io, cp->io_bytes);
  free(cp->vals);
  free(cp->steps);
  free(cp);
}

int cplan_matches(const struct cplan *cp, const i2i_model *m, const i2i_plan *plan, int precision, int mode) {
  return cp && cp->cacheable && cp->serial == m->serial && cp->n == plan->n && cp->h == plan->h && cp->w == plan->w &&
         cp->half == (precision == I2I_CUDA_FP16) && cp->mode == mode && cp->n_engine_steps == plan->n_steps;
}

void cplan_touch(struct cplan *cp, uint64_t clock) { cp->last_use = clock; }
uint64_t cplan_last_use(const struct cplan *cp) { return cp->last_use; }

size_t cplan_device_bytes(const struct cplan *cp) {
  return cp->arena_bytes + cp->params_bytes + cp->ws_bytes + cp->io_bytes;
}

static kview view_of(const struct cplan *cp, int v) {
  const cval *x = &cp->vals[v];
  kview k;
  k.p = (char *)cp->arena + x->off;
  k.n = x->n;
  k.c = x->c;
  k.h = x->h;
  k.w = x->w;
  k.cs = x->cs;
  k.pt = x->pt;
  k.pl = x->pl;
  k.hs = x->h + x->pt + x->pb;
  k.ws = x->w + x->pl + x->pr;
  k.nhwc = cp->half;
  k.half = cp->half;
  return k;
}

static int has_halo(const cval *v) { return v->pt || v->pl || v->pb || v->pr; }

static int same_layout(const cval *a, const cval *b) {
  return a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->cs == b->cs && a->pt == b->pt &&
         a->pl == b->pl && a->pb == b->pb && a->pr == b->pr && (!has_halo(a) || a->halo_mode == b->halo_mode);
}

static int root_of(const struct cplan *cp, int v) {
  int guard = 0;
  while (cp->vals[v].alias >= 0 && guard++ < cp->nt) v = cp->vals[v].alias;
  return v;
}

static void add_demand(cval *v, int packed, const int *pads, int mode) {
  if (v->demand == DEM_CONFLICT) return;
  if (packed) {
    if (v->demand == DEM_HALO) v->demand = DEM_CONFLICT;
    else v->demand = DEM_PACKED;
    return;
  }
  if (v->demand == DEM_PACKED) {
    v->demand = DEM_CONFLICT;
  } else if (v->demand == DEM_HALO) {
    if (memcmp(v->dpads, pads, sizeof v->dpads) || v->dmode != mode) v->demand = DEM_CONFLICT;
  } else {
    v->demand = DEM_HALO;
    memcpy(v->dpads, pads, sizeof v->dpads);
    v->dmode = mode;
  }
}

/* Step kinds and their parameters from the engine's steps [first, last). */
static int make_steps(cu_backend *B, const i2i_model *m, const i2i_plan *plan, struct cplan *cp) {
  const i2i_graph *g = &m->g;
  for (int k = cp->first; k < cp->last; k++) {
    const i2i_step *es = &plan->steps[k];
    const i2i_node *n = &g->nodes[es->node];
    cstep *s = &cp->steps[cp->ns++];
    memset(s, 0, sizeof *s);
    s->node = es->node;
    s->out = es->out;
    s->n_in = es->n_in < 8 ? es->n_in : 8;
    memcpy(s->in, es->in, sizeof s->in);
    s->flops = es->flops;
    s->res = -1;
    s->tmp = -1;
    s->wval = -1;
    int c_out = (int)plan->shape[es->out].c;
    switch (es->op) {
    case OP_CONV:
    case OP_CONVT:
      s->kind = es->op == OP_CONV ? CS_CONV : CS_CONVT;
      s->wval = n->in[1];
      if (n->conv.group != 1) return cu_fail(B, CE_UNSUPPORTED, "node '%s': grouped convolution", n->name);
      if (s->wval < 0 || !g->values[s->wval].c || g->values[s->wval].c->rank != 4)
        return cu_fail(B, CE_UNSUPPORTED, "node '%s': the filter is not a constant 4-D tensor", n->name);
      CU_OK(weight_offset(B, m, s->wval, g->values[s->wval].c->numel, &s->w_off));
      if (n->n_in > 2 && n->in[2] >= 0) {
        CU_OK(weight_offset(B, m, n->in[2], (size_t)c_out, &s->bias_off));
        s->has_bias = 1;
        s->bias_mode = BIAS_KERNEL;
      }
      memcpy(s->pads, es->pads, sizeof s->pads);
      s->pad_mode = es->pad_mode;
      for (int i = 0; i < 4; i++)
        if (s->pads[i] < 0 || s->pads[i] > 1024) return cu_fail(B, CE_UNSUPPORTED, "node '%s': padding %d", n->name, s->pads[i]);
      break;
    case OP_INSTNORM:
    case OP_BATCHNORM: {
      s->kind = CS_NORM;
      int running = n->op == OP_BATCHNORM ? (!n->bn_training || cp->mode == I2I_PIX2PIX_EVAL)
                                          : (n->bn_from_in && cp->mode == I2I_PIX2PIX_EVAL);
      s->running = running && n->bn_mean >= 0 && n->bn_var >= 0;
      CU_OK(weight_offset(B, m, n->in[1], (size_t)c_out, &s->scale_off));
      CU_OK(weight_offset(B, m, n->in[2], (size_t)c_out, &s->shift_off));
      if (s->running) {
        CU_OK(weight_offset(B, m, n->bn_mean, (size_t)c_out, &s->mean_off));
        CU_OK(weight_offset(B, m, n->bn_var, (size_t)c_out, &s->var_off));
      }
      s->eps = n->eps;
      s->act1 = es->act;
      s->al1 = es->act_alpha;
      break;
    }
    case OP_PAD:
      s->kind = CS_PAD;
      if (n->pads8[0] || n->pads8[1] || n->pads8[4] || n->pads8[5])
        return cu_fail(B, CE_UNSUPPORTED, "node '%s': padding of the batch or channel axis", n->name);
      s->pads[0] = (int)n->pads8[2];
      s->pads[1] = (int)n->pads8[3];
      s->pads[2] = (int)n->pads8[6];
      s->pads[3] = (int)n->pads8[7];
      for (int i = 0; i < 4; i++)
        if (s->pads[i] < 0) return cu_fail(B, CE_UNSUPPORTED, "node '%s': negative padding (cropping)", n->name);
      s->pad_mode = n->pad_mode;
      s->pad_value = n->pad_value;
      break;
    case OP_RELU: s->kind = CS_ACT; s->act1 = ACT_RELU; break;
    case OP_LRELU: s->kind = CS_ACT; s->act1 = ACT_LRELU; s->al1 = n->alpha; break;
    case OP_IDENTITY: s->kind = CS_ACT; s->act1 = ACT_NONE; break;
    case OP_TANH: s->kind = CS_TANH; break;
    case OP_ADD:
      s->kind = CS_ADD;
      s->act1 = es->act;
      s->al1 = es->act_alpha;
      if (s->n_in != 2) return cu_fail(B, CE_UNSUPPORTED, "node '%s': Add of %d image inputs", n->name, s->n_in);
      break;
    case OP_CONCAT:
      s->kind = CS_CONCAT;
      s->act1 = es->act;
      s->al1 = es->act_alpha;
      break;
    case OP_DROPOUT:
      s->kind = CS_DROPOUT;
      s->drop_on = cp->mode == I2I_PIX2PIX_FAITHFUL && n->ratio > 0;
      if (s->drop_on) {
        dropout_consts(n->ratio, &s->threshold, &s->dscale);
        s->ordinal = (uint32_t)n->ordinal;
      }
      break;
    default: return cu_fail(B, CE_UNSUPPORTED, "the GPU backend has no kernel for '%s'", n->op_type);
    }
    if (s->kind != CS_CONCAT && s->n_in < 1)
      return cu_fail(B, CE_INTERNAL, "node '%s' has no image input", n->name);
  }
  return CE_OK;
}

/* producer / first and last reader / external, from the steps not fused away. */
static void usage(struct cplan *cp) {
  for (int v = 0; v < cp->nt; v++) {
    cval *x = &cp->vals[v];
    x->producer = -2;
    x->last = -1;
    x->external = 0;
  }
  for (int i = 0; i < cp->ns; i++) {
    cstep *s = &cp->steps[i];
    if (s->skip) continue;
    int ins[10], ni = 0;
    for (int j = 0; j < s->n_in; j++) ins[ni++] = s->in[j];
    if (s->res >= 0) ins[ni++] = s->res;
    for (int j = 0; j < ni; j++) {
      cval *x = &cp->vals[ins[j]];
      if (x->producer == -2) {
        x->producer = -1;
        x->external = 1;
      }
      x->last = i;
    }
    cp->vals[s->out].producer = i;
  }
}

static int count_readers(const struct cplan *cp, int v, int *reader) {
  int r = 0;
  for (int i = 0; i < cp->ns; i++) {
    const cstep *s = &cp->steps[i];
    if (s->skip) continue;
    for (int j = 0; j < s->n_in; j++)
      if (s->in[j] == v) {
        r++;
        *reader = i;
      }
    if (s->res == v) {
      r++;
      *reader = i;
    }
  }
  return r;
}

/* Fusions. Between its convolutions these generators are bound by whole-tensor passes over
 * device memory (perf.md 2.2, 4), so each fusion removes passes:
 *  - norm + activation (+ residual Add): one apply pass reads x (and the residual) and writes y
 *    once instead of three or four passes; the ResNet's 9 block-ending Adds disappear.
 *  - reflect padding as a halo (layouts()): a value read by reflect-padded convolutions is
 *    stored inside its halo and its producer fills only the border, so no padded copy is made
 *    (20 of the ResNet's 24 convolutions read through one) and the convolution runs unpadded.
 *  - convolution bias: dropped before a batch-statistics norm (it cancels exactly), folded into
 *    an eval-mode norm's shift or into Tanh, else one in-place pass.
 *  - elementwise steps write in place over an input that dies there (in_place()).
 * Not fused yet (for tuning with a GPU at hand, issue 13): norm statistics into the convolution
 * epilogue (cuDNN ConvBNfprop / genstats), Concat by writing producers into the joined buffer;
 * CUDA graphs are available (I2I_CUDA_GRAPH=1) but not the default. */
static void fuse(struct cplan *cp) {
  /* norm (+ act) followed by Add: the apply adds the residual (and the Add's act) */
  for (int i = 0; i < cp->ns; i++) {
    cstep *s = &cp->steps[i];
    if (s->kind != CS_NORM || s->skip || cp->vals[s->out].download) continue;
    int r = -1;
    if (count_readers(cp, s->out, &r) != 1) continue;
    cstep *a = &cp->steps[r];
    if (a->kind != CS_ADD) continue;
    int other = a->in[0] == s->out ? a->in[1] : a->in[0];
    if (other == s->out) continue;
    int p = cp->vals[other].producer;
    if (p >= i) continue; /* must exist before the norm runs */
    s->res = other;
    s->act2 = a->act1;
    s->al2 = a->al1;
    s->out = a->out;
    a->skip = 1;
    usage(cp);
  }
  /* convolution bias */
  for (int i = 0; i < cp->ns; i++) {
    cstep *s = &cp->steps[i];
    if ((s->kind != CS_CONV && s->kind != CS_CONVT) || !s->has_bias || cp->vals[s->out].download) continue;
    int r = -1;
    if (count_readers(cp, s->out, &r) != 1) continue;
    cstep *t = &cp->steps[r];
    if (t->in[0] != s->out) continue;
    if (t->kind == CS_NORM && t->res != s->out) {
      if (t->running) {
        t->has_fold = 1;
        t->fold_off = s->bias_off;
      }
      s->bias_mode = t->running ? BIAS_FOLDED : BIAS_DROP;
    } else if (t->kind == CS_TANH) {
      t->has_tbias = 1;
      t->tbias_off = s->bias_off;
      s->bias_mode = BIAS_FOLDED;
    }
  }
}

static int layouts(cu_backend *B, struct cplan *cp, const i2i_plan *plan) {
  for (int v = 0; v < cp->nv; v++) {
    cval *x = &cp->vals[v];
    x->live = x->producer != -2;
    if (!x->live) continue;
    shape4 s = plan->shape[v];
    if (s.n < 1 || s.c < 1 || s.h < 1 || s.w < 1 || s.c > 65536 || s.h > (1 << 24) || s.w > (1 << 24))
      return cu_fail(B, CE_INTERNAL, "value %d has no usable shape", v);
    x->n = (int)s.n;
    x->c = (int)s.c;
    x->h = (int)s.h;
    x->w = (int)s.w;
    x->cs = cp->half ? round8(x->c) : x->c;
    x->alias = -1;
  }
  /* halos: every convolution reader states what it needs of its input */
  for (int i = 0; i < cp->ns; i++) {
    cstep *s = &cp->steps[i];
    if (s->skip || (s->kind != CS_CONV && s->kind != CS_CONVT)) continue;
    int sym_zero = s->pad_mode == PAD_CONSTANT && s->pads[0] == s->pads[2] && s->pads[1] == s->pads[3];
    add_demand(&cp->vals[s->in[0]], s->kind == CS_CONVT || sym_zero, s->pads, s->pad_mode);
  }
  for (int v = 0; v < cp->nv; v++) {
    cval *x = &cp->vals[v];
    if (!x->live || x->demand != DEM_HALO) continue;
    int p = x->producer;
    if (p >= 0 && (cp->steps[p].kind == CS_CONV || cp->steps[p].kind == CS_CONVT)) continue;
    if (x->dpads[0] > 64 || x->dpads[1] > 64 || x->dpads[2] > 64 || x->dpads[3] > 64) continue;
    if (x->dmode == PAD_REFLECT &&
        (x->dpads[0] >= x->h || x->dpads[2] >= x->h || x->dpads[1] >= x->w || x->dpads[3] >= x->w))
      continue; /* repeated reflections: the pad kernel handles them */
    x->pt = x->dpads[0];
    x->pl = x->dpads[1];
    x->pb = x->dpads[2];
    x->pr = x->dpads[3];
    x->halo_mode = x->dmode;
  }
  for (int i = 0; i < cp->ns; i++) {
    cstep *s = &cp->steps[i];
    if (s->skip || s->kind != CS_CONV) continue;
    const cval *x = &cp->vals[s->in[0]];
    int sym_zero = s->pad_mode == PAD_CONSTANT && s->pads[0] == s->pads[2] && s->pads[1] == s->pads[3];
    int halo_ok = has_halo(x) && x->pt == s->pads[0] && x->pl == s->pads[1] && x->pb == s->pads[2] &&
                  x->pr == s->pads[3] && x->halo_mode == s->pad_mode;
    if (halo_ok || (sym_zero && !has_halo(x))) continue;
    s->explicit_pad = 1;
    s->tmp = cp->nv + i;
    cval *t = &cp->vals[s->tmp];
    t->live = 1;
    t->n = x->n;
    t->c = x->c;
    t->cs = x->cs;
    t->h = x->h + s->pads[0] + s->pads[2];
    t->w = x->w + s->pads[1] + s->pads[3];
    t->alias = -1;
    t->producer = i;
    t->last = i;
  }
  for (int i = 0; i < cp->ns; i++) {
    cstep *s = &cp->steps[i];
    if (s->skip || s->kind != CS_CONVT) continue;
    if (s->pads[0] != s->pads[2] || s->pads[1] != s->pads[3])
      return cu_fail(B, CE_UNSUPPORTED, "ConvTranspose with unequal begin and end padding");
  }
  return CE_OK;
}

/* Elementwise steps write over an input that dies at them (same layout, not uploaded, not
 * downloaded): y and x are then the same buffer. */
static void in_place(struct cplan *cp) {
  for (int i = 0; i < cp->ns; i++) {
    cstep *s = &cp->steps[i];
    if (s->skip) continue;
    int cand[3], nc = 0;
    switch (s->kind) {
    case CS_NORM:
      cand[nc++] = s->in[0];
      if (s->res >= 0) cand[nc++] = s->res;
      break;
    case CS_ACT:
    case CS_TANH:
    case CS_DROPOUT: cand[nc++] = s->in[0]; break;
    case CS_ADD:
      cand[nc++] = s->in[0];
      cand[nc++] = s->in[1];
      break;
    default: break;
    }
    cval *o = &cp->vals[s->out];
    for (int j = 0; j < nc; j++) {
      int v = cand[j];
      cval *x = &cp->vals[v];
      if (v == s->out || x->external || x->download || x->last != i || !same_layout(x, o)) continue;
      o->alias = root_of(cp, v);
      break;
    }
  }
}

typedef struct {
  int root;
  size_t bytes, off;
  int first, last;
  int placed;
} buf_t;

static int place(cu_backend *B, struct cplan *cp) {
  buf_t *bufs = (buf_t *)calloc((size_t)cp->nt + 1, sizeof *bufs);
  int *buf_of = (int *)malloc(sizeof(int) * ((size_t)cp->nt + 1));
  if (!bufs || !buf_of) {
    free(bufs);
    free(buf_of);
    return cu_fail(B, CE_HOSTMEM, "out of host memory planning device memory");
  }
  int nb = 0;
  for (int v = 0; v < cp->nt; v++) {
    buf_of[v] = -1;
    cval *x = &cp->vals[v];
    if (!x->live || x->alias >= 0) continue;
    kview k = view_of(cp, v);
    size_t bytes = (size_t)k.n * (size_t)k.cs;
    if (!i2i_mul_ok(bytes, (size_t)k.hs, &bytes) || !i2i_mul_ok(bytes, (size_t)k.ws, &bytes) ||
        !i2i_mul_ok(bytes, cp->half ? 2u : 4u, &bytes) || bytes > ((size_t)1 << 46)) {
      free(bufs);
      free(buf_of);
      return cu_fail(B, CE_UNSUPPORTED, "a %dx%dx%dx%d tensor is too large", k.n, k.cs, k.hs, k.ws);
    }
    x->bytes = bytes;
    bufs[nb] = (buf_t){v, align256(bytes), 0, x->producer, x->last, 0};
    buf_of[v] = nb++;
  }
  for (int v = 0; v < cp->nt; v++) {
    cval *x = &cp->vals[v];
    if (!x->live || x->alias < 0) continue;
    int b = buf_of[root_of(cp, v)];
    if (b < 0) continue;
    if (x->last > bufs[b].last) bufs[b].last = x->last;
    if (x->producer > bufs[b].last) bufs[b].last = x->producer;
  }
  for (int b = 0; b < nb; b++) {
    cval *x = &cp->vals[bufs[b].root];
    if (x->download) bufs[b].last = cp->ns;
    if (bufs[b].last < bufs[b].first) bufs[b].last = bufs[b].first;
  }
  for (int v = 0; v < cp->nt; v++) {
    cval *x = &cp->vals[v];
    if (x->live && x->alias >= 0 && x->download) bufs[buf_of[root_of(cp, v)]].last = cp->ns;
  }
  size_t arena = 0;
  int rc = CE_OK;
  for (int it = 0; it < nb && !rc; it++) {
    int best = -1;
    for (int b = 0; b < nb; b++)
      if (!bufs[b].placed && (best < 0 || bufs[b].bytes > bufs[best].bytes)) best = b;
    buf_t *P = &bufs[best];
    size_t off = 0;
    int moved = 1;
    while (moved) {
      moved = 0;
      for (int b = 0; b < nb; b++) {
        const buf_t *o = &bufs[b];
        if (!o->placed || o->last < P->first || P->last < o->first) continue;
        if (off < o->off + o->bytes && o->off < off + P->bytes) {
          off = o->off + o->bytes;
          moved = 1;
        }
      }
    }
    P->off = off;
    P->placed = 1;
    size_t end;
    if (!i2i_add_ok(off, P->bytes, &end)) rc = cu_fail(B, CE_UNSUPPORTED, "device workspace too large");
    else if (end > arena) arena = end;
  }
  if (!rc) {
    for (int v = 0; v < cp->nt; v++) {
      cval *x = &cp->vals[v];
      if (!x->live) continue;
      int b = buf_of[root_of(cp, v)];
      x->off = b >= 0 ? bufs[b].off : 0;
    }
    cp->arena_bytes = arena ? arena : 256;
  }
  free(bufs);
  free(buf_of);
  return rc;
}

static const void *wptr(const struct cplan *cp, size_t off) { return cp->W->w32 + off; }

static int make_convs(cu_backend *B, const i2i_model *m, struct cplan *cp) {
  const i2i_graph *g = &m->g;
  int nconv = 0;
  for (int i = 0; i < cp->ns; i++) {
    cstep *s = &cp->steps[i];
    if (s->skip || (s->kind != CS_CONV && s->kind != CS_CONVT)) continue;
    const i2i_node *n = &g->nodes[s->node];
    const cval *x = &cp->vals[s->explicit_pad ? s->tmp : s->in[0]], *y = &cp->vals[s->out];
    conv_geom_d gd;
    memset(&gd, 0, sizeof gd);
    gd.transpose = s->kind == CS_CONVT;
    gd.half = cp->half;
    gd.n = x->n;
    gd.xc = x->cs;
    gd.xh = x->h + x->pt + x->pb;
    gd.xw = x->w + x->pl + x->pr;
    gd.yc = y->cs;
    gd.yh = y->h;
    gd.yw = y->w;
    gd.kh = n->conv.kernel[0];
    gd.kw = n->conv.kernel[1];
    int packed_in = s->kind == CS_CONV && !s->explicit_pad && !has_halo(x);
    gd.pad_h = s->kind == CS_CONVT || packed_in ? s->pads[0] : 0;
    gd.pad_w = s->kind == CS_CONVT || packed_in ? s->pads[1] : 0;
    gd.str_h = n->conv.stride[0];
    gd.str_w = n->conv.stride[1];
    gd.dil_h = n->conv.dilation[0];
    gd.dil_w = n->conv.dilation[1];
    const i2i_tensor *wt = g->values[s->wval].c;
    int d0 = (int)wt->dims[0], d1 = (int)wt->dims[1];
    int want0 = gd.transpose ? x->c : y->c, want1 = gd.transpose ? y->c : x->c;
    if (d0 != want0 || d1 != want1 || wt->dims[2] != gd.kh || wt->dims[3] != gd.kw)
      return cu_fail(B, CE_INTERNAL, "node '%s': filter %dx%d does not match its tensors", n->name, d0, d1);
    CU_OK(dnn_conv_create(B, &gd, &s->dc));
    s->thin = B->use_thin && k_conv_thin_fits(gd, B->stats.cc_major) && round8(d0) == gd.yc && round8(d1) == gd.xc;
    nconv += !s->thin;
  }
  /* algorithms: searched on the plan's own buffers with a temporary workspace */
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) free_b = 0;
  cudaGetLastError();
  size_t limit = B->search_ws_limit;
  if (free_b / 2 < limit) limit = free_b / 2;
  if (B->run_budget && B->ws_cap < limit) limit = B->ws_cap;
  limit &= ~(size_t)255;
  void *sws = NULL;
  if (nconv && !B->heuristic_only && limit >= (1u << 20)) {
    if (cu_malloc(B, &sws, limit, "algorithm search workspace")) {
      sws = NULL;
      B->err.kind = CE_OK;
      cudaGetLastError();
    }
  }
  int rc = CE_OK;
  size_t ws = 0;
  for (int i = 0; i < cp->ns && !rc; i++) {
    cstep *s = &cp->steps[i];
    if (!s->dc || s->thin) continue;
    const void *x = view_of(cp, s->explicit_pad ? s->tmp : s->in[0]).p;
    const void *w = cp->half ? (const void *)cp->W->w16[s->wval] : wptr(cp, s->w_off);
    if (!w) {
      rc = cu_fail(B, CE_INTERNAL, "no half filter for node '%s'", g->nodes[s->node].name);
      break;
    }
    rc = dnn_conv_choose(B, s->dc, x, w, view_of(cp, s->out).p, sws,
                         sws || B->run_budget ? limit : B->search_ws_limit);
    if (!rc && dnn_conv_workspace(s->dc) > ws) ws = dnn_conv_workspace(s->dc);
  }
  cu_free(B, sws, limit);
  if (rc) return rc;
  if (ws) {
    CU_OK(cu_malloc(B, &cp->ws, ws, "convolution workspace"));
    cp->ws_bytes = ws;
  }
  return CE_OK;
}

int cplan_build(cu_backend *B, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, cu_weights *W, int mode,
                int first, int last, int download_all, struct cplan **out) {
  const i2i_graph *g = &m->g;
  *out = NULL;
  if (first < 0 || last > plan->n_steps || first >= last) return cu_fail(B, CE_INTERNAL, "bad step range %d..%d", first, last);
  struct cplan *cp = (struct cplan *)calloc(1, sizeof *cp);
  if (!cp) return cu_fail(B, CE_HOSTMEM, "out of host memory for a device plan");
  cp->serial = m->serial;
  cp->n = plan->n;
  cp->h = plan->h;
  cp->w = plan->w;
  cp->half = B->precision == I2I_CUDA_FP16;
  cp->mode = mode;
  cp->first = first;
  cp->last = last;
  cp->n_engine_steps = plan->n_steps;
  cp->cacheable = first == 0 && last == plan->n_steps && !download_all;
  cp->nv = g->n_values;
  cp->nt = cp->nv + (last - first);
  cp->input = g->input;
  cp->output = g->output;
  cp->W = W;
  cp->vals = (cval *)calloc((size_t)cp->nt + 1, sizeof *cp->vals);
  cp->steps = (cstep *)calloc((size_t)(last - first) + 1, sizeof *cp->steps);
  int rc = CE_OK;
  if (!cp->vals || !cp->steps) rc = cu_fail(B, CE_HOSTMEM, "out of host memory for a device plan");
  if (!rc) rc = make_steps(B, m, plan, cp);
  if (!rc) {
    for (int v = 0; v < cp->nt; v++) cp->vals[v].alias = -1;
    usage(cp);
    /* downloads: the graph output; for testing also what later steps read and the last output */
    for (int v = 0; v < cp->nv; v++) {
      cval *x = &cp->vals[v];
      if (x->producer < 0) continue;
      int dl = v == g->output;
      if (download_all && !dl) {
        dl = x->producer == cp->ns - 1;
        for (int k = last; k < plan->n_steps && !dl; k++)
          for (int j = 0; j < plan->steps[k].n_in; j++)
            if (plan->steps[k].in[j] == v) dl = 1;
      }
      x->download = dl;
    }
    fuse(cp);
    usage(cp);
    for (int v = 0; v < cp->nv; v++) {
      cval *x = &cp->vals[v];
      if (x->external && plan->offset[v] == SIZE_MAX)
        rc = cu_fail(B, CE_INTERNAL, "value %d is read but has no host buffer", v);
      if (x->download && plan->offset[v] == SIZE_MAX)
        rc = cu_fail(B, CE_INTERNAL, "value %d is downloaded but has no host buffer", v);
      if (x->download && x->producer < 0) x->download = 0;
    }
    if (!cp->vals[g->output].download && !download_all && cp->vals[g->output].producer < 0)
      rc = cu_fail(B, CE_INTERNAL, "the plan does not produce the graph output");
  }
  if (!rc) rc = layouts(B, cp, plan);
  if (!rc) {
    in_place(cp);
    rc = place(B, cp);
  }
  /* norm parameters and statistics partials */
  size_t params = 0, partial = 0, io = 0;
  if (!rc) {
    for (int i = 0; i < cp->ns && !rc; i++) {
      cstep *s = &cp->steps[i];
      if (s->skip || s->kind != CS_NORM) continue;
      kview x = view_of(cp, s->in[0]);
      s->ab_off = params;
      params += align256((size_t)x.n * (size_t)x.cs * sizeof(float2));
      s->nblk = k_stats_blocks(x, B->stats.sm_count);
      size_t need = (size_t)x.n * (size_t)x.cs * (size_t)s->nblk * sizeof(float2);
      if (need > partial) partial = need;
    }
    for (int v = 0; v < cp->nv; v++) {
      const cval *x = &cp->vals[v];
      if (!x->live || (!x->external && !x->download)) continue;
      size_t b = (size_t)x->n * (size_t)x->c * (size_t)x->h * (size_t)x->w * sizeof(float);
      if (b > io) io = b;
    }
    size_t img;
    if (!i2i_mul_ok((size_t)plan->h * (size_t)plan->w, 4 * sizeof(float), &img)) img = SIZE_MAX;
    cp->img_bytes = align256(img);
    size_t imgs;
    if (i2i_mul_ok(cp->img_bytes, (size_t)plan->n + 1, &imgs) && imgs > io) io = imgs;
    cp->params_bytes = params + align256(partial) + 256;
    cp->io_bytes = align256(io ? io : 256);
    if (B->run_budget) {
      /* a budget given for the run: the whole image fits in it, or the run goes layer-wise */
      uint64_t need = (uint64_t)B->stats.device_bytes + cp->arena_bytes + cp->params_bytes + cp->io_bytes;
      if (need > B->run_budget)
        rc = cu_fail(B, CE_BUDGET, "the whole-image plan needs %.1f MiB of device memory, over the budget of %.1f MiB",
                     need / 1048576.0, B->run_budget / 1048576.0);
      else
        B->ws_cap = (size_t)(B->run_budget - need);
    }
  }
  if (!rc) {
    rc = cu_malloc(B, &cp->params, cp->params_bytes, "norm parameters");
    cp->partials = rc ? NULL : (float2 *)((char *)cp->params + params);
  }
  if (!rc) rc = cu_malloc(B, &cp->arena, cp->arena_bytes, "activations");
  if (!rc) rc = cu_malloc(B, &cp->io, cp->io_bytes, "transfer buffer");
  if (!rc) {
    cudaError_t e = cudaMemsetAsync(cp->arena, 0, cp->arena_bytes, B->stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(cp->params, 0, cp->params_bytes, B->stream);
    if (e != cudaSuccess) rc = cu_fail_cuda(B, e, "cudaMemsetAsync");
  }
  uint64_t searches = B->stats.algo_searches, hits = B->stats.algo_cache_hits;
  if (!rc) rc = make_convs(B, m, cp);
  if (algo_cache_flush(B->algos) && ctx)
    B->host->log(ctx, I2I_LOG_WARNING, "cuda: could not write the algorithm cache %s", algo_cache_path(B->algos));
  if (!rc) {
    cudaError_t e = cudaStreamSynchronize(B->stream);
    if (e != cudaSuccess) rc = cu_fail_cuda(B, e, "building the device plan");
  }
  if (rc) {
    cplan_free(B, cp);
    return rc;
  }
  for (int i = 0; i < cp->ns; i++)
    if (!cp->steps[i].skip) cp->total_flops += cp->steps[i].flops;
  int nconv = 0, nfused = 0;
  for (int i = 0; i < cp->ns; i++) {
    nconv += cp->steps[i].dc != NULL;
    nfused += cp->steps[i].skip;
  }
  B->stats.plans_built++;
  if (ctx)
    B->host->log(ctx, I2I_LOG_INFO,
                 "cuda: %s plan for %dx%dx%dx%d (steps %d..%d): %d convolutions, %llu algorithm searches, %llu from "
                 "the cache%s%s, %d step(s) fused into others, %.1f MiB of device memory",
                 cp->half ? "fp16" : "fp32", plan->n, (int)plan->shape[g->input].c, plan->h, plan->w, first, last,
                 nconv, (unsigned long long)(B->stats.algo_searches - searches),
                 (unsigned long long)(B->stats.algo_cache_hits - hits), algo_cache_path(B->algos)[0] ? " " : "",
                 algo_cache_path(B->algos), nfused, cplan_device_bytes(cp) / 1048576.0);
  *out = cp;
  return CE_OK;
}

/* ---- running ------------------------------------------------------------------------------------- */

static int step_run(cu_backend *B, struct cplan *cp, int i, const i2i_run_state *st) {
  cstep *s = &cp->steps[i];
  cudaStream_t q = B->stream;
  cudaError_t e = cudaSuccess;
  kview y = view_of(cp, s->out);
  switch (s->kind) {
  case CS_CONV:
  case CS_CONVT: {
    kview x = view_of(cp, s->in[0]);
    const void *xp = x.p;
    if (s->explicit_pad) {
      kview t = view_of(cp, s->tmp);
      e = k_pad(q, x, t, s->pads[0], s->pads[1], s->pad_mode, 0.0f);
      if (e != cudaSuccess) return cu_fail_cuda(B, e, "padding kernel");
      xp = t.p;
    }
    const void *w = cp->half ? (const void *)cp->W->w16[s->wval] : wptr(cp, s->w_off);
    if (s->thin) {
      e = k_conv_thin(q, *dnn_conv_geom(s->dc), (const __half *)xp, (const __half *)w, (__half *)y.p);
      if (e != cudaSuccess) return cu_fail_cuda(B, e, "convolution kernel");
    } else {
      CU_OK(dnn_conv_run(B, s->dc, xp, w, y.p, cp->ws, cp->ws_bytes));
    }
    if (s->has_bias && s->bias_mode == BIAS_KERNEL) e = k_bias(q, y, y, (const float *)wptr(cp, s->bias_off));
    break;
  }
  case CS_NORM: {
    kview x = view_of(cp, s->in[0]);
    float2 *ab = (float2 *)((char *)cp->params + s->ab_off);
    if (!s->running) {
      e = k_norm_stats(q, x, cp->partials, s->nblk);
      if (e != cudaSuccess) return cu_fail_cuda(B, e, "normalisation statistics kernel");
    }
    e = k_norm_finalize(q, x, cp->partials, s->nblk, (const float *)wptr(cp, s->scale_off),
                        (const float *)wptr(cp, s->shift_off), s->running ? (const float *)wptr(cp, s->mean_off) : NULL,
                        s->running ? (const float *)wptr(cp, s->var_off) : NULL,
                        s->has_fold ? (const float *)wptr(cp, s->fold_off) : NULL, s->eps, ab);
    if (e != cudaSuccess) return cu_fail_cuda(B, e, "normalisation finalize kernel");
    kview r = s->res >= 0 ? view_of(cp, s->res) : x;
    e = k_norm_apply(q, x, y, ab, s->act1, s->al1, r, s->res >= 0, s->act2, s->al2);
    break;
  }
  case CS_PAD: e = k_pad(q, view_of(cp, s->in[0]), y, s->pads[0], s->pads[1], s->pad_mode, s->pad_value); break;
  case CS_ACT: {
    kview x = view_of(cp, s->in[0]);
    if (s->act1 == ACT_NONE && x.p == y.p) break;
    e = k_act(q, x, y, s->act1, s->al1);
    break;
  }
  case CS_TANH: e = k_tanh(q, view_of(cp, s->in[0]), y, s->has_tbias ? (const float *)wptr(cp, s->tbias_off) : NULL); break;
  case CS_ADD: e = k_add(q, view_of(cp, s->in[0]), view_of(cp, s->in[1]), y, s->act1, s->al1); break;
  case CS_CONCAT: {
    int coff = 0;
    for (int j = 0; j < s->n_in && e == cudaSuccess; j++) {
      kview x = view_of(cp, s->in[j]);
      e = k_concat(q, x, y, coff, j == s->n_in - 1, s->act1, s->al1);
      coff += x.c;
    }
    break;
  }
  case CS_DROPOUT: {
    kview x = view_of(cp, s->in[0]);
    if (s->drop_on)
      e = k_dropout(q, x, y, st->seed, s->ordinal, st->step, s->threshold, s->dscale);
    else if (x.p != y.p)
      e = k_act(q, x, y, ACT_NONE, 0.0f);
    break;
  }
  default: return cu_fail(B, CE_INTERNAL, "unknown device step kind %d", s->kind);
  }
  if (e != cudaSuccess) return cu_fail_cuda(B, e, "kernel launch");
  const cval *o = &cp->vals[s->out];
  if (has_halo(o)) {
    e = k_fill_halo(q, y, o->pr, o->halo_mode);
    if (e != cudaSuccess) return cu_fail_cuda(B, e, "halo kernel");
  }
  return CE_OK;
}

static int enqueue_all(cu_backend *B, i2i_ctx *ctx, struct cplan *cp, i2i_run_state *st, int progress) {
  double done = 0, total = cp->total_flops, next = total * 0.1;
  int report = progress && ctx && st && st->progress && total > 2e11;
  for (int i = 0; i < cp->ns; i++) {
    if (cp->steps[i].skip) continue;
    CU_OK(step_run(B, cp, i, st));
    done += cp->steps[i].flops;
    if (report && done >= next && i + 1 < cp->ns) {
      next += total * 0.1;
      CU_TRY(B, cudaStreamSynchronize(B->stream), "cudaStreamSynchronize");
      if (B->host->progress(ctx, st, done, total)) return CE_CANCELLED;
    }
  }
  return CE_OK;
}

/* One eager run with an event after every step: each step's milliseconds logged (I2I_PROFILE). */
int cplan_profile(cu_backend *B, i2i_ctx *ctx, struct cplan *cp, i2i_run_state *st) {
  static const char *const kinds[CS_DROPOUT + 1] = {"?", "Conv", "ConvTranspose", "Norm", "Pad", "Act", "Tanh", "Add", "Concat", "Dropout"};
  cudaEvent_t *ev = (cudaEvent_t *)calloc((size_t)cp->ns + 1, sizeof *ev);
  if (!ev) return cu_fail(B, CE_HOSTMEM, "out of host memory for the profile");
  int k = CE_OK;
  for (int i = 0; i <= cp->ns && !k; i++) k = cu_fail_cuda(B, cudaEventCreate(&ev[i]), "cudaEventCreate");
  if (!k) k = cu_fail_cuda(B, cudaEventRecord(ev[0], B->stream), "cudaEventRecord");
  for (int i = 0; i < cp->ns && !k; i++) {
    if (!cp->steps[i].skip) k = step_run(B, cp, i, st);
    if (!k) k = cu_fail_cuda(B, cudaEventRecord(ev[i + 1], B->stream), "cudaEventRecord");
  }
  if (!k) k = cu_fail_cuda(B, cudaEventSynchronize(ev[cp->ns]), "cudaEventSynchronize");
  double by_kind[CS_DROPOUT + 1] = {0}, total = 0;
  for (int i = 0; i < cp->ns && !k; i++) {
    const cstep *s = &cp->steps[i];
    float ms = 0;
    k = cu_fail_cuda(B, cudaEventElapsedTime(&ms, ev[i], ev[i + 1]), "cudaEventElapsedTime");
    if (k || s->skip) continue;
    const cval *o = &cp->vals[s->out];
    int kd = s->kind >= CS_CONV && s->kind <= CS_DROPOUT ? s->kind : 0;
    by_kind[kd] += ms;
    total += ms;
    double tf = s->flops > 0 && ms > 0 ? s->flops / (ms * 1e9) : 0;
    if (ctx)
      B->host->log(ctx, I2I_LOG_INFO, "cuda profile: step %3d %-13s -> %4dx%4dx%4d %8.3f ms%s%s %6.1f TFLOP/s %s", i,
                   kinds[kd], o->c, o->h, o->w, ms, s->explicit_pad ? " +pad" : "", has_halo(o) ? " +halo" : "", tf,
                   s->thin ? "thin_conv.cu (mma.sync)" : s->dc ? dnn_conv_describe(s->dc) : "");
  }
  if (!k && ctx)
    for (int j = CS_CONV; j <= CS_DROPOUT; j++)
      if (by_kind[j] > 0)
        B->host->log(ctx, I2I_LOG_INFO, "cuda profile: %-13s %8.3f ms (%4.1f%%)", kinds[j], by_kind[j],
                     100.0 * by_kind[j] / (total > 0 ? total : 1));
  if (!k && ctx) B->host->log(ctx, I2I_LOG_INFO, "cuda profile: total %8.3f ms over %d steps", total, cp->ns);
  for (int i = 0; i <= cp->ns; i++)
    if (ev[i]) cudaEventDestroy(ev[i]);
  free(ev);
  return k;
}

int cplan_run(cu_backend *B, i2i_ctx *ctx, struct cplan *cp, i2i_run_state *st, int progress, int graph) {
  if (!graph || cp->graph_failed) return enqueue_all(B, ctx, cp, st, progress);
  if (cp->gexec && (cp->g_seed != st->seed || cp->g_step != st->step)) {
    cudaGraphExecDestroy(cp->gexec);
    cp->gexec = NULL;
  }
  if (!cp->gexec) {
    /* any capture failure (a call that cannot be captured, an old driver) means eager launches */
    int k = CE_OK;
    cudaGraph_t gr = NULL;
    cudaError_t e = cudaStreamBeginCapture(B->stream, cudaStreamCaptureModeThreadLocal);
    if (e == cudaSuccess) {
      k = enqueue_all(B, ctx, cp, st, 0);
      e = cudaStreamEndCapture(B->stream, &gr);
      if (!k && e == cudaSuccess) e = cudaGraphInstantiate(&cp->gexec, gr, 0);
    }
    if (gr) cudaGraphDestroy(gr);
    if (k || e != cudaSuccess) {
      if (k == CE_STICKY) return k;
      cudaGetLastError();
      cp->gexec = NULL;
      cp->graph_failed = 1;
      B->stats.graph_failures++;
      B->err.kind = CE_OK;
      return enqueue_all(B, ctx, cp, st, progress);
    }
    cp->g_seed = st->seed;
    cp->g_step = st->step;
    B->stats.graphs_captured++;
  }
  CU_TRY(B, cudaGraphLaunch(cp->gexec, B->stream), "cudaGraphLaunch");
  return CE_OK;
}

/* ---- transfers ----------------------------------------------------------------------------------- */

/* Host offsets come from the engine plan of this run (another plan of the same shape may have
 * placed its values elsewhere). */
static int host_ptr(cu_backend *B, const struct cplan *cp, const i2i_plan *plan, const i2i_run_state *st, int v,
                    float **p) {
  const cval *x = &cp->vals[v];
  shape4 s = plan->shape[v];
  if (!st->arena || plan->offset[v] == SIZE_MAX || s.n != x->n || s.c != x->c || s.h != x->h || s.w != x->w)
    return cu_fail(B, CE_INTERNAL, "value %d has no host buffer of its shape in this run", v);
  *p = st->arena + plan->offset[v];
  return CE_OK;
}

int cplan_upload(cu_backend *B, struct cplan *cp, const i2i_plan *plan, const i2i_run_state *st) {
  for (int v = 0; v < cp->nv; v++) {
    const cval *x = &cp->vals[v];
    if (!x->live || !x->external) continue;
    size_t bytes = (size_t)x->n * (size_t)x->c * (size_t)x->h * (size_t)x->w * sizeof(float);
    float *src = NULL;
    CU_OK(host_ptr(B, cp, plan, st, v, &src));
    CU_TRY(B, cudaMemcpyAsync(cp->io, src, bytes, cudaMemcpyHostToDevice, B->stream),
           "input upload");
    kview k = view_of(cp, v);
    CU_TRY(B, k_upload(B->stream, (const float *)cp->io, k), "input conversion kernel");
    if (has_halo(x)) CU_TRY(B, k_fill_halo(B->stream, k, x->pr, x->halo_mode), "halo kernel");
  }
  return CE_OK;
}

int cplan_download(cu_backend *B, struct cplan *cp, const i2i_plan *plan, i2i_run_state *st) {
  for (int v = 0; v < cp->nv; v++) {
    const cval *x = &cp->vals[v];
    if (!x->live || !x->download) continue;
    size_t bytes = (size_t)x->n * (size_t)x->c * (size_t)x->h * (size_t)x->w * sizeof(float);
    float *dst = NULL;
    CU_OK(host_ptr(B, cp, plan, st, v, &dst));
    CU_TRY(B, k_download(B->stream, view_of(cp, v), (float *)cp->io), "output conversion kernel");
    CU_TRY(B, cudaMemcpyAsync(dst, cp->io, bytes, cudaMemcpyDeviceToHost, B->stream),
           "output download");
  }
  CU_TRY(B, cudaStreamSynchronize(B->stream), "cudaStreamSynchronize");
  return CE_OK;
}

int cplan_upload_images(cu_backend *B, struct cplan *cp, const i2i_cuda_images *im) {
  const cval *x = &cp->vals[cp->input];
  if (!x->live || !x->external || x->c != 3 || im->n_images != x->n)
    return cu_fail(B, CE_INTERNAL, "the device plan cannot take %d images", im->n_images);
  int ch = im->layout == I2I_PIXELS_RGBA ? 4 : 3;
  size_t bytes = (size_t)im->width * (size_t)im->height * (size_t)ch * sizeof(float);
  if (bytes > cp->img_bytes || im->width > x->w || im->height > x->h)
    return cu_fail(B, CE_INTERNAL, "a %dx%d image does not fit the %dx%d plan", im->width, im->height, x->w, x->h);
  kview k = view_of(cp, cp->input);
  for (int i = 0; i < im->n_images; i++) {
    float *dev = (float *)((char *)cp->io + (size_t)i * cp->img_bytes);
    CU_TRY(B, cudaMemcpyAsync(dev, im->in[i], bytes, cudaMemcpyHostToDevice, B->stream), "image upload");
    CU_TRY(B, k_image_in(B->stream, dev, im->width, im->height, ch, k, i), "image conversion kernel");
  }
  if (has_halo(x)) CU_TRY(B, k_fill_halo(B->stream, k, x->pr, x->halo_mode), "halo kernel");
  return CE_OK;
}

int cplan_download_images(cu_backend *B, struct cplan *cp, const i2i_cuda_images *im) {
  const cval *y = &cp->vals[cp->output];
  if (!y->live || y->c != 3) return cu_fail(B, CE_INTERNAL, "the device plan has no 3-channel output");
  int ch = im->layout == I2I_PIXELS_RGBA ? 4 : 3;
  size_t bytes = (size_t)im->width * (size_t)im->height * (size_t)ch * sizeof(float);
  float *dout = (float *)((char *)cp->io + (size_t)im->n_images * cp->img_bytes);
  kview k = view_of(cp, cp->output);
  for (int i = 0; i < im->n_images; i++) {
    const float *din = (const float *)((char *)cp->io + (size_t)i * cp->img_bytes);
    CU_TRY(B, k_image_out(B->stream, k, i, din, dout, im->width, im->height, ch, im->strength), "image output kernel");
    CU_TRY(B, cudaMemcpyAsync(im->out[i], dout, bytes, cudaMemcpyDeviceToHost, B->stream), "image download");
  }
  CU_TRY(B, cudaStreamSynchronize(B->stream), "cudaStreamSynchronize");
  return CE_OK;
}
