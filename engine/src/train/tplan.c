/* train/tplan.c: the training plan of one network for N x H x W: steps, saved activations and
 * the gradient arena.
 *
 * Steps fuse as the inference plan does (a Pad into the Conv that reads it, a ReLU / LeakyReLU
 * into the norm before it). A value the backward reads (a Conv's or norm's input, an activation's
 * or Tanh's output, the network's input and output) lives in the slot until the end of the
 * forward; the others share memory by lifetime. Gradients get their own arena, planned over the
 * reverse order. Backend-neutral: it only lays out offsets; it does not touch any memory.
 */
#include <string.h>

#include "../cpu/cpu.h"
#include "../internal.h"

void tplan_free(i2i_ctx *ctx, i2i_tplan *p) {
  if (!p) return;
  i2i_dealloc(ctx, p->shape);
  i2i_dealloc(ctx, p->steps);
  i2i_dealloc(ctx, p->act_off);
  i2i_dealloc(ctx, p->grad_off);
  memset(p, 0, sizeof *p);
}

static size_t weight_off(const i2i_model *m, int v) {
  if (v < 0 || !m->g.values[v].c) return SIZE_MAX;
  const float *d = m->g.values[v].c->data;
  return (size_t)(d - m->weights);
}

static bool is_norm(i2i_op op) { return op == OP_INSTNORM || op == OP_BATCHNORM; }

i2i_status tplan_build(i2i_ctx *ctx, const i2i_model *m, int nimg, int h, int w, i2i_tplan *p) {
  const i2i_graph *g = &m->g;
  memset(p, 0, sizeof *p);
  i2i_status st = I2I_OK;
  int nv = g->n_values, nn = g->n_order;
  int *readers = i2i_calloc(ctx, (size_t)nv + 1, sizeof(int));
  int *reader = i2i_calloc(ctx, (size_t)nv + 1, sizeof(int));
  int *uses = i2i_calloc(ctx, (size_t)nv + 1, sizeof(int));
  bool *skip = i2i_calloc(ctx, (size_t)nn + 1, 1);
  int *fused_pad = i2i_alloc(ctx, sizeof(int) * ((size_t)nn + 1));
  int *fused_act = i2i_alloc(ctx, sizeof(int) * ((size_t)nn + 1));
  int *prod = i2i_alloc(ctx, sizeof(int) * ((size_t)nv + 1));
  bool *saved = i2i_calloc(ctx, (size_t)nv + 1, 1);
  bool *written = i2i_calloc(ctx, (size_t)nv + 1, 1);
  plan_buffer *bufs = i2i_calloc(ctx, (size_t)nv + 1, sizeof *bufs);
  int *buf_v = i2i_alloc(ctx, sizeof(int) * ((size_t)nv + 1));
  p->shape = i2i_calloc(ctx, (size_t)nv + 1, sizeof *p->shape);
  p->steps = i2i_calloc(ctx, (size_t)nn + 1, sizeof *p->steps);
  p->act_off = i2i_alloc(ctx, sizeof(size_t) * ((size_t)nv + 1));
  p->grad_off = i2i_alloc(ctx, sizeof(size_t) * ((size_t)nv + 1));
  if (!readers || !reader || !uses || !skip || !fused_pad || !fused_act || !prod || !saved || !written || !bufs ||
      !buf_v || !p->shape || !p->steps || !p->act_off || !p->grad_off) {
    st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory planning training");
    goto done;
  }
  p->n = nimg;
  p->h = h;
  p->w = w;
  p->input = g->input;
  p->output = g->output;
  if ((st = infer_shapes(ctx, m, nimg, h, w, p->shape))) goto done;
  for (int v = 0; v < nv; v++) {
    p->act_off[v] = p->grad_off[v] = SIZE_MAX;
    prod[v] = -2;
  }
  for (int k = 0; k < nn; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    fused_pad[k] = fused_act[k] = -1;
    for (int i = 0; i < n->n_in; i++) {
      int v = n->in[i];
      if (v < 0) continue;
      if (g->values[v].c) {
        uses[v]++;
        continue;
      }
      readers[v]++;
      reader[v] = k;
    }
  }
  readers[g->output]++;
  reader[g->output] = nn;
  /* order index of each node */
  for (int k = 0; k < nn; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    if (n->op == OP_CONV) {
      int src = n->in[0], pn = g->values[src].producer;
      if (pn >= 0 && readers[src] == 1 && src != g->output) {
        const i2i_node *pd = &g->nodes[pn];
        bool zero_conv_pads = !(n->conv.pads[0] | n->conv.pads[1] | n->conv.pads[2] | n->conv.pads[3]);
        bool plain = pd->op == OP_PAD && (pd->pad_mode != PAD_CONSTANT || pd->pad_value == 0.0f);
        if (plain && (zero_conv_pads || pd->pad_mode == PAD_CONSTANT)) {
          for (int j = 0; j < k; j++)
            if (g->order[j] == pn) {
              skip[j] = true;
              fused_pad[k] = pn;
            }
        }
      }
    }
    if (is_norm(n->op)) {
      int o = n->out[0];
      if (readers[o] == 1 && o != g->output && reader[o] < nn) {
        const i2i_node *a = &g->nodes[g->order[reader[o]]];
        if ((a->op == OP_RELU || a->op == OP_LRELU) && a->in[0] == o) {
          fused_act[k] = reader[o];
          skip[reader[o]] = true;
        }
      }
    }
  }
  /* steps */
  int ns = 0;
  for (int k = 0; k < nn; k++) {
    if (skip[k]) continue;
    const i2i_node *n = &g->nodes[g->order[k]];
    i2i_tstep *s = &p->steps[ns];
    s->node = g->order[k];
    s->op = n->op;
    s->pad_node = -1;
    s->out = n->out[0];
    s->w_off = s->b_off = s->rm_off = s->rv_off = SIZE_MAX;
    for (int i = 0; i < n->n_in && s->n_in < 8; i++)
      if (n->in[i] >= 0 && !g->values[n->in[i]].c) s->in[s->n_in++] = n->in[i];
    if (n->op == OP_CONV || n->op == OP_CONVT) {
      for (int i = 0; i < 4; i++) s->pads[i] = n->conv.pads[i];
      s->pad_mode = PAD_CONSTANT;
      if (fused_pad[k] >= 0) {
        const i2i_node *pd = &g->nodes[fused_pad[k]];
        s->pad_node = fused_pad[k];
        s->in[0] = pd->in[0];
        s->pads[0] += (int)pd->pads8[2];
        s->pads[1] += (int)pd->pads8[3];
        s->pads[2] += (int)pd->pads8[6];
        s->pads[3] += (int)pd->pads8[7];
        s->pad_mode = pd->pad_mode;
      }
      if (n->conv.group != 1 || n->conv.dilation[0] != 1 || n->conv.dilation[1] != 1) {
        st = i2i_fail(ctx, I2I_E_UNSUPPORTED, "node '%s': training supports ungrouped, undilated convolutions only",
                      n->name);
        goto done;
      }
      s->w_off = weight_off(m, n->in[1]);
      s->w_train = true;
      if (n->n_in > 2 && n->in[2] >= 0) {
        s->b_off = weight_off(m, n->in[2]);
        s->b_train = true;
      }
    }
    if (is_norm(n->op)) {
      bool bn = n->op == OP_BATCHNORM || n->bn_from_in;
      s->w_off = weight_off(m, n->in[1]);
      s->b_off = weight_off(m, n->in[2]);
      s->w_train = s->b_train = bn;
      s->batch_stats = bn;
      if (bn) {
        s->rm_off = weight_off(m, n->bn_mean);
        s->rv_off = weight_off(m, n->bn_var);
        s->momentum = n->op == OP_BATCHNORM ? 1.0f - n->momentum : 0.1f;
      }
      if (fused_act[k] >= 0) {
        const i2i_node *a = &g->nodes[g->order[fused_act[k]]];
        s->act = a->op == OP_RELU ? ACT_RELU : ACT_LRELU;
        s->act_alpha = a->alpha;
        s->out = a->out[0];
      }
    }
    if ((s->w_train && s->w_off == SIZE_MAX) || (s->b_train && s->b_off == SIZE_MAX)) {
      st = i2i_fail(ctx, I2I_E_UNSUPPORTED, "node '%s': its parameters are not constant tensors", n->name);
      goto done;
    }
    if (s->w_train && n->in[1] >= 0 && uses[n->in[1]] > 1) {
      st = i2i_fail(ctx, I2I_E_UNSUPPORTED,
                    "node '%s': its weight '%s' is shared with another node; training would tie them (convert the "
                    "checkpoint with `i2i convert` instead)", n->name, g->values[n->in[1]].name);
      goto done;
    }
    if (s->b_train && n->in[2] >= 0 && uses[n->in[2]] > 1) {
      st = i2i_fail(ctx, I2I_E_UNSUPPORTED,
                    "node '%s': its bias '%s' is shared with another node; training would tie them (convert the "
                    "checkpoint with `i2i convert` instead)", n->name, g->values[n->in[2]].name);
      goto done;
    }
    prod[s->out] = ns;
    ns++;
  }
  p->n_steps = ns;
  prod[g->input] = -1;
  /* what the backward reads */
  saved[g->input] = saved[g->output] = true;
  for (int k = 0; k < ns; k++) {
    const i2i_tstep *s = &p->steps[k];
    if (s->op == OP_CONV || s->op == OP_CONVT || is_norm(s->op)) saved[s->in[0]] = true;
    if (s->op == OP_RELU || s->op == OP_LRELU || s->op == OP_TANH) saved[s->out] = true;
  }
  /* forward slot: one buffer per materialised value */
  int nb = 0;
  for (int v = 0; v < nv; v++) {
    if (prod[v] < -1) continue;
    int last = prod[v];
    for (int k = 0; k < ns; k++)
      for (int i = 0; i < p->steps[k].n_in; i++)
        if (p->steps[k].in[i] == v && k > last) last = k;
    if (saved[v]) last = ns;
    bufs[nb] = (plan_buffer){shape_numel(p->shape[v]), prod[v], last, 0, false};
    buf_v[nb++] = v;
  }
  size_t arena = plan_place_buffers(bufs, nb);
  if (arena == SIZE_MAX) {
    st = i2i_fail(ctx, I2I_E_LIMIT, "training workspace too large");
    goto done;
  }
  for (int b = 0; b < nb; b++) p->act_off[buf_v[b]] = bufs[b].offset;
  /* norm statistics after the activations */
  for (int k = 0; k < ns; k++) {
    i2i_tstep *s = &p->steps[k];
    if (!is_norm(s->op)) continue;
    shape4 xs = p->shape[s->in[0]];
    size_t groups = tstep_norm_groups(s, xs);
    s->stat_off = arena;
    if (!i2i_add_ok(arena, (2 * groups + 15) & ~(size_t)15, &arena)) {
      st = i2i_fail(ctx, I2I_E_LIMIT, "training workspace too large");
      goto done;
    }
  }
  p->act_floats = arena;
  /* gradient arena: lifetimes over the reverse order r = ns - 1 - k */
  nb = 0;
  for (int v = 0; v < nv; v++) {
    if (prod[v] < -1) continue;
    int birth = v == g->output ? -1 : ns, death = v == g->input ? ns : ns - 1 - prod[v];
    for (int k = 0; k < ns; k++)
      for (int i = 0; i < p->steps[k].n_in; i++)
        if (p->steps[k].in[i] == v && ns - 1 - k < birth) birth = ns - 1 - k;
    if (birth > death) continue; /* never read: no gradient */
    bufs[nb] = (plan_buffer){shape_numel(p->shape[v]), birth, death, 0, false};
    buf_v[nb++] = v;
  }
  size_t garena = plan_place_buffers(bufs, nb);
  if (garena == SIZE_MAX) {
    st = i2i_fail(ctx, I2I_E_LIMIT, "training gradient workspace too large");
    goto done;
  }
  for (int b = 0; b < nb; b++) p->grad_off[buf_v[b]] = bufs[b].offset;
  p->grad_floats = garena;
  /* which backward writes a gradient first (reverse order), which ones add */
  for (int k = ns - 1; k >= 0; k--) {
    i2i_tstep *s = &p->steps[k];
    for (int i = 0; i < s->n_in; i++) {
      int v = s->in[i];
      s->acc_dx[i] = written[v];
      written[v] = true;
    }
  }
  /* convolution scratch: the forward's kernels and the backward's columns */
  size_t want = 0, floor_need = 0;
  for (int k = 0; k < ns; k++) {
    const i2i_tstep *s = &p->steps[k];
    if (s->op != OP_CONV && s->op != OP_CONVT) continue;
    const i2i_node *n = &g->nodes[s->node];
    shape4 xs = p->shape[s->in[0]], ys = p->shape[s->out];
    conv_geom cg = {(int)xs.c, (int)xs.h, (int)xs.w, (int)ys.c, (int)ys.h, (int)ys.w,
                    n->conv.kernel[0], n->conv.kernel[1], n->conv.stride[0], n->conv.stride[1],
                    n->conv.dilation[0], n->conv.dilation[1], s->pads[0], s->pads[1], s->pads[2], s->pads[3],
                    s->pad_mode, n->conv.out_pad[0], n->conv.out_pad[1], NULL, NULL};
    size_t full, mn;
    cpu_conv_scratch(&cg, ctx->threads, &full, &mn);
    size_t bw = cpu_conv_backward_scratch(&cg, s->op == OP_CONVT);
    if (s->op == OP_CONV && cpu_winograd_applies(&cg)) {
      size_t tiles = (size_t)((cg.oh + 1) / 2) * (size_t)((cg.ow + 1) / 2);
      if (cpu_winograd_backward_scratch(&cg) > bw) bw = cpu_winograd_backward_scratch(&cg);
      if (cpu_winograd_wgrad_scratch(&cg, tiles) > bw) bw = cpu_winograd_wgrad_scratch(&cg, tiles);
    }
    if (s->op == OP_CONV && cpu_direct_backward_applies(&cg)) bw = cpu_direct_backward_scratch(&cg, ctx->threads);
    size_t rows = s->op == OP_CONVT ? (size_t)cg.m * (size_t)cg.kh * (size_t)cg.kw
                                    : (size_t)cg.c * (size_t)cg.kh * (size_t)cg.kw;
    if (bw > full) full = bw;
    if (rows * 64 > mn) mn = rows * 64;
    if (full > want) want = full;
    if (mn > floor_need) floor_need = mn;
  }
  uint64_t budget = ctx->p.memory_budget ? ctx->p.memory_budget / 4 : ((uint64_t)256 << 20);
  size_t cap = (size_t)(budget / sizeof(float));
  size_t sc = want < cap ? want : cap;
  p->scratch_floats = sc > floor_need ? sc : floor_need;
done:
  i2i_dealloc(ctx, readers);
  i2i_dealloc(ctx, reader);
  i2i_dealloc(ctx, uses);
  i2i_dealloc(ctx, skip);
  i2i_dealloc(ctx, fused_pad);
  i2i_dealloc(ctx, fused_act);
  i2i_dealloc(ctx, prod);
  i2i_dealloc(ctx, saved);
  i2i_dealloc(ctx, written);
  i2i_dealloc(ctx, bufs);
  i2i_dealloc(ctx, buf_v);
  if (st) tplan_free(ctx, p);
  return st;
}
