/* plan.c: the execution plan for one run size: steps (with the fusions every backend shares),
 * value shapes and one activation workspace laid out by a liveness planner.
 *
 * Fusions: a reflect/zero Pad whose only reader is a Conv becomes that Conv's input padding (no
 * padded copy); a Relu/LeakyRelu that is the only reader of a norm, Add or Concat runs inside it
 * (the U-Net's skip joins: one pass over the joined tensor instead of two).
 * Elementwise steps write over an input that dies there. Buffers are placed greedily by size
 * (largest first, lowest free offset among buffers whose lifetimes overlap).
 */
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "internal.h"

size_t plan_place_buffers(plan_buffer *b, int nb) {
  size_t arena = 0;
  for (int iter = 0; iter < nb; iter++) {
    int best = -1;
    for (int i = 0; i < nb; i++)
      if (!b[i].placed && (best < 0 || b[i].size > b[best].size)) best = i;
    plan_buffer *B = &b[best];
    size_t need = (B->size + 15) & ~(size_t)15, off = 0;
    bool moved = true;
    while (moved) {
      moved = false;
      for (int i = 0; i < nb; i++) {
        const plan_buffer *o = &b[i];
        if (!o->placed || o->last < B->first || B->last < o->first) continue;
        size_t oend = o->offset + ((o->size + 15) & ~(size_t)15);
        if (off < oend && o->offset < off + need) {
          off = oend;
          moved = true;
        }
      }
    }
    B->offset = off;
    B->placed = true;
    size_t end;
    if (!i2i_add_ok(off, need, &end)) return SIZE_MAX;
    if (end > arena) arena = end;
  }
  return arena;
}

static bool elementwise(i2i_op op) {
  return op == OP_RELU || op == OP_LRELU || op == OP_TANH || op == OP_DROPOUT || op == OP_IDENTITY ||
         op == OP_INSTNORM || op == OP_BATCHNORM || op == OP_ADD;
}

void plan_free(i2i_ctx *ctx, i2i_plan *p) {
  if (!p) return;
  i2i_dealloc(ctx, p->shape);
  i2i_dealloc(ctx, p->offset);
  i2i_dealloc(ctx, p->steps);
  i2i_dealloc(ctx, p);
}

static double step_flops(const i2i_graph *g, const i2i_step *s, const shape4 *sh) {
  const i2i_node *n = &g->nodes[s->node];
  if (n->op == OP_CONV || n->op == OP_CONVT) {
    const i2i_tensor *w = g->values[n->in[1]].c;
    double k = (double)w->dims[1] * (double)w->dims[2] * (double)w->dims[3];
    if (n->op == OP_CONV) return 2.0 * k * (double)shape_numel(sh[s->out]);
    return 2.0 * (double)w->dims[0] * (double)w->dims[1] * (double)w->dims[2] * (double)w->dims[3] *
           (double)(sh[s->in[0]].n * sh[s->in[0]].h * sh[s->in[0]].w);
  }
  return 4.0 * (double)shape_numel(sh[s->out]);
}

i2i_status plan_build(i2i_ctx *ctx, const i2i_model *m, int nimg, int h, int w, i2i_plan **out) {
  const i2i_graph *g = &m->g;
  *out = NULL;
  i2i_status st = I2I_OK;
  int nv = g->n_values, nn = g->n_order;
  i2i_plan *p = i2i_calloc(ctx, 1, sizeof *p);
  int *readers = i2i_calloc(ctx, (size_t)nv + 1, sizeof(int));
  int *reader = i2i_calloc(ctx, (size_t)nv + 1, sizeof(int));   /* the single reader's order index */
  int *buf_of = i2i_alloc(ctx, sizeof(int) * ((size_t)nv + 1));
  plan_buffer *bufs = i2i_calloc(ctx, (size_t)nn + 2, sizeof *bufs);
  bool *skip = i2i_calloc(ctx, (size_t)nn + 1, 1);
  int *order_idx = NULL;
  if (!p || !readers || !reader || !buf_of || !bufs || !skip) {
    st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory planning the run");
    goto done;
  }
  p->n = nimg;
  p->h = h;
  p->w = w;
  p->budget = ctx->p.memory_budget;
  p->shape = i2i_calloc(ctx, (size_t)nv + 1, sizeof *p->shape);
  p->offset = i2i_alloc(ctx, sizeof(size_t) * ((size_t)nv + 1));
  p->steps = i2i_calloc(ctx, (size_t)nn + 1, sizeof *p->steps);
  if (!p->shape || !p->offset || !p->steps) {
    st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory planning the run");
    goto done;
  }
  if ((st = infer_shapes(ctx, m, nimg, h, w, p->shape))) goto done;
  {
    /* the run writes the output over the input's pixels: it must be an RGB image of the same size */
    shape4 y = p->shape[g->output];
    if (y.c != 3 || y.h != h || y.w != w || y.n != nimg) {
      st = i2i_fail(ctx, I2I_E_FORMAT,
                    "the model's output is %lld channels at %lldx%lld for a %dx%d input; an image translation model "
                    "returns 3 channels at the input's size",
                    (long long)y.c, (long long)y.w, (long long)y.h, w, h);
      goto done;
    }
  }
  for (int v = 0; v < nv; v++) {
    p->offset[v] = SIZE_MAX;
    buf_of[v] = -1;
  }
  for (int k = 0; k < nn; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    for (int i = 0; i < n->n_in; i++) {
      int v = n->in[i];
      if (v < 0 || g->values[v].c) continue;
      readers[v]++;
      reader[v] = k;
    }
  }
  readers[g->output]++;
  reader[g->output] = nn;

  /* steps, with fusions */
  int ns = 0;
  for (int k = 0; k < nn; k++) {
    if (skip[k]) continue;
    const i2i_node *n = &g->nodes[g->order[k]];
    i2i_step *s = &p->steps[ns];
    memset(s, 0, sizeof *s);
    s->node = g->order[k];
    s->op = n->op;
    s->pad_node = -1;
    s->out = n->out[0];
    s->n_in = 0;
    for (int i = 0; i < n->n_in && s->n_in < 8; i++)
      if (n->in[i] >= 0 && !g->values[n->in[i]].c) s->in[s->n_in++] = n->in[i];
    if (n->op == OP_CONV || n->op == OP_CONVT) {
      for (int i = 0; i < 4; i++) s->pads[i] = n->conv.pads[i];
      s->pad_mode = PAD_CONSTANT;
      /* a Pad feeding only this Conv becomes its input padding */
      int src = n->in[0];
      int pn = g->values[src].producer;
      if (n->op == OP_CONV && pn >= 0 && readers[src] == 1 && src != g->output) {
        const i2i_node *pd = &g->nodes[pn];
        bool zero_conv_pads = !(n->conv.pads[0] | n->conv.pads[1] | n->conv.pads[2] | n->conv.pads[3]);
        bool plain = pd->op == OP_PAD && (pd->pad_mode != PAD_CONSTANT || pd->pad_value == 0.0f);
        if (plain && (zero_conv_pads || pd->pad_mode == PAD_CONSTANT)) {
          int j = ns - 1;
          while (j >= 0 && p->steps[j].node != pn) j--;
          if (j >= 0) {
            i2i_step t = *s;
            memmove(&p->steps[j], &p->steps[j + 1], sizeof t * (size_t)(ns - j - 1));
            ns--;
            t.pad_node = pn;
            t.in[0] = pd->in[0];
            t.pads[0] += (int)pd->pads8[2];
            t.pads[1] += (int)pd->pads8[3];
            t.pads[2] += (int)pd->pads8[6];
            t.pads[3] += (int)pd->pads8[7];
            t.pad_mode = pd->pad_mode;
            p->steps[ns] = t;
            s = &p->steps[ns];
          }
        }
      }
    }
    if (n->op == OP_INSTNORM || n->op == OP_BATCHNORM || n->op == OP_ADD || n->op == OP_CONCAT) {
      int o = n->out[0];
      if (readers[o] == 1 && o != g->output && reader[o] < nn) {
        const i2i_node *a = &g->nodes[g->order[reader[o]]];
        if ((a->op == OP_RELU || a->op == OP_LRELU) && a->in[0] == o) {
          s->act = a->op == OP_RELU ? ACT_RELU : ACT_LRELU;
          s->act_alpha = a->alpha;
          s->out = a->out[0];
          skip[reader[o]] = true;
        }
      }
    }
    ns++;
  }
  p->n_steps = ns;

  /* lifetimes: one buffer per materialised value; elementwise steps reuse a dying input */
  order_idx = i2i_alloc(ctx, sizeof(int) * ((size_t)nv + 1));
  if (!order_idx) {
    st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory planning the run");
    goto done;
  }
  int nb = 0;
  bufs[nb] = (plan_buffer){shape_numel(p->shape[g->input]), -1, -1, 0, false}; /* the input: step -1 */
  buf_of[g->input] = nb++;
  for (int k = 0; k < ns; k++) {
    i2i_step *s = &p->steps[k];
    for (int i = 0; i < s->n_in; i++) {
      int b = buf_of[s->in[i]];
      if (b >= 0 && bufs[b].last < k) bufs[b].last = k;
    }
    int reuse = -1;
    if (elementwise(s->op)) {
      for (int i = 0; i < s->n_in && reuse < 0; i++) {
        int v = s->in[i], b = buf_of[v];
        bool dies = true;
        for (int j = k + 1; j < ns && dies; j++)
          for (int q = 0; q < p->steps[j].n_in; q++)
            if (buf_of[p->steps[j].in[q]] == b) dies = false;
        if (b >= 0 && dies && buf_of[g->output] != b && bufs[b].size == shape_numel(p->shape[s->out])) reuse = b;
      }
    }
    if (reuse >= 0) {
      buf_of[s->out] = reuse;
      bufs[reuse].last = k;
    } else {
      bufs[nb] = (plan_buffer){shape_numel(p->shape[s->out]), k, k, 0, false};
      buf_of[s->out] = nb++;
    }
  }
  bufs[buf_of[g->output]].last = ns;
  /* placement */
  size_t arena = plan_place_buffers(bufs, nb);
  if (arena == SIZE_MAX) {
    st = i2i_fail(ctx, I2I_E_LIMIT, "activation workspace too large");
    goto done;
  }
  p->arena_floats = arena;
  for (int v = 0; v < nv; v++)
    if (buf_of[v] >= 0) p->offset[v] = bufs[buf_of[v]].offset;
  /* the most buffers alive at once */
  int peak = 0;
  for (int k = -1; k <= ns; k++) {
    int live = 0;
    for (int b = 0; b < nb; b++) live += bufs[b].first <= k && k <= bufs[b].last;
    if (live > peak) peak = live;
  }
  p->peak_live = peak;
  /* convolution scratch (im2col / col2im columns, Winograd tiles), bounded by the budget but never
   * below what the largest layer needs for one small chunk */
  size_t want = 0, floor_need = 0;
  for (int k = 0; k < ns; k++) {
    i2i_step *s = &p->steps[k];
    s->flops = step_flops(g, s, p->shape);
    p->total_flops += s->flops;
    if (s->op != OP_CONV && s->op != OP_CONVT) continue;
    conv_geom cg = cpu_step_geom(m, p, s);
    size_t full, mn;
    cpu_conv_scratch(&cg, ctx->threads, &full, &mn);
    if (full > want) want = full;
    if (mn > floor_need) floor_need = mn;
  }
  uint64_t budget = ctx->p.memory_budget ? ctx->p.memory_budget : ((uint64_t)64 << 20);
  size_t cap = (size_t)(budget / sizeof(float));
  size_t sc = want < cap ? want : cap;
  p->scratch_floats = sc > floor_need ? sc : floor_need;
done:
  i2i_dealloc(ctx, readers);
  i2i_dealloc(ctx, reader);
  i2i_dealloc(ctx, buf_of);
  i2i_dealloc(ctx, bufs);
  i2i_dealloc(ctx, skip);
  i2i_dealloc(ctx, order_idx);
  if (st) {
    plan_free(ctx, p);
    return st;
  }
  *out = p;
  return I2I_OK;
}
