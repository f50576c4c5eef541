/* cpu/exec.c: the CPU backend: walks a plan's steps over the activation workspace (also for a
 * layer-wise GPU run, which hands its convolutions to the GPU through the run state's hook).
 *
 * Chooses the statistics and dropout behaviour each norm and Dropout step takes in the run's
 * Pix2Pix mode (design.md), reports progress by FLOPs after every step and stops when the
 * progress callback asks. The kernels themselves are in conv.c, norm.c and pointwise.c.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu.h"

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const float *wdata(const i2i_graph *g, int v) { return v >= 0 && g->values[v].c ? g->values[v].c->data : NULL; }

static size_t per_image(shape4 s) { return (size_t)(s.c * s.h * s.w); }

/* Progress inside one convolution: the step's FLOPs are spread over its chunks. */
typedef struct {
  i2i_ctx *ctx;
  i2i_run_state *st;
  double before, step, total;
  bool cancelled;
} chunk_ctx;

static int chunk_done(void *user, double f) {
  chunk_ctx *c = user;
  if (run_progress(c->ctx, c->st, c->before + c->step * f, c->total)) c->cancelled = true;
  return c->cancelled;
}

conv_geom cpu_step_geom(const i2i_model *m, const i2i_plan *p, const i2i_step *s) {
  const i2i_node *n = &m->g.nodes[s->node];
  shape4 xs = p->shape[s->in[0]], ys = p->shape[s->out];
  conv_geom cg = {(int)xs.c, (int)xs.h, (int)xs.w, (int)ys.c, (int)ys.h, (int)ys.w,
                  n->conv.kernel[0], n->conv.kernel[1], n->conv.stride[0], n->conv.stride[1],
                  n->conv.dilation[0], n->conv.dilation[1], s->pads[0], s->pads[1], s->pads[2], s->pads[3],
                  s->pad_mode, n->conv.out_pad[0], n->conv.out_pad[1], NULL, NULL};
  return cg;
}

/* A norm step that runs in place and whose only reader is the next step, a residual Add of two
 * tensors of its shape (the ResNet's blocks): the Add is done in the norm's pass, which reads the
 * residual beside the normalised tensor, so the normalised tensor is not written and read back
 * (the pair at 256x128x128: 5.7 -> 4.7 ms on one thread, 3.1 -> 2.3 ms on two; bench/NOTES.md).
 * Returns the Add's other input value, or -1 where the steps stay apart. */
static int norm_add_fusion(const i2i_graph *g, const i2i_plan *p, int k) {
  const i2i_step *s = &p->steps[k];
  if (k + 1 >= p->n_steps || s->out == g->output || p->offset[s->in[0]] != p->offset[s->out]) return -1;
  const i2i_step *a = &p->steps[k + 1];
  if (a->op != OP_ADD || a->n_in != 2 || a->in[0] == a->in[1]) return -1;
  int other = a->in[0] == s->out ? a->in[1] : a->in[1] == s->out ? a->in[0] : -1;
  if (other < 0) return -1;
  shape4 n = p->shape[s->out], r = p->shape[other], o = p->shape[a->out];
  if (r.n != n.n || r.c != n.c || r.h != n.h || r.w != n.w || o.n != n.n || o.c != n.c || o.h != n.h || o.w != n.w)
    return -1;
  for (int j = k + 2; j < p->n_steps; j++)
    for (int q = 0; q < p->steps[j].n_in; q++)
      if (p->steps[j].in[q] == s->out) return -1;
  return other;
}

static bool is_transpose(const conv_geom *g) { return g->oph || g->opw || (g->oh > g->h && g->ow > g->w); }

void cpu_conv_scratch(const conv_geom *g, int threads, size_t *full, size_t *min) {
  bool convt = is_transpose(g);
  size_t k = (size_t)g->c * (size_t)g->kh * (size_t)g->kw, mk = (size_t)g->m * (size_t)g->kh * (size_t)g->kw;
  size_t ohw = (size_t)g->oh * (size_t)g->ow, hw = (size_t)g->h * (size_t)g->w;
  if (convt) {
    *full = mk * hw;
    *min = mk * 64;
  } else if (cpu_direct_applies(g)) {
    *full = *min = cpu_direct_scratch(g, threads);
  } else {
    *full = k * ohw;
    *min = k * 64;
    if (cpu_winograd_applies(g)) {
      /* the floor is 16 tiles of F(2x2, 3x3): a budget below F(4x4)'s 16 tiles gets F(2x2) */
      int tile = cpu_winograd_tile(g, 4, SIZE_MAX);
      size_t wf = cpu_winograd_scratch(g, tile, cpu_winograd_tiles(g, tile)), wm = cpu_winograd_scratch(g, 2, 16);
      size_t w2 = cpu_winograd_scratch(g, 2, cpu_winograd_tiles(g, 2)); /* training's tile */
      if (w2 > wf) wf = w2;
      if (wf > *full) *full = wf;
      if (wm > *min) *min = wm;
    }
  }
  if (cpu_s2_applies(g, convt)) {
    size_t sf = cpu_s2_scratch(g, convt, cpu_s2_chunk_tiles(g, convt));
    if (sf > *full) *full = sf;
  }
}

int cpu_conv_any(const conv_geom *g, bool transpose, const float *x, const float *w, const float *bias, float *y,
                 float *scratch, size_t scratch_floats, int threads, int wino) {
  /* training keeps its 3x3 stride-2 layers on the GEMM path its parity tests were set on */
  if (wino && cpu_s2_applies(g, transpose) && (g->kh == 4 || wino == 4) &&
      scratch_floats >= cpu_s2_scratch(g, transpose, 16))
    return cpu_conv_s2(g, transpose, x, w, bias, y, scratch, scratch_floats, threads);
  if (transpose) return cpu_convt_forward(g, x, w, bias, y, scratch, scratch_floats, threads);
  if (cpu_direct_applies(g) && scratch_floats >= cpu_direct_scratch(g, threads))
    return cpu_conv_direct(g, x, w, bias, y, scratch, threads);
  int tile = wino && cpu_winograd_applies(g) ? cpu_winograd_tile(g, wino, scratch_floats) : 0;
  if (tile) return cpu_conv_winograd(g, tile, x, w, bias, y, scratch, scratch_floats, threads);
  return cpu_conv_forward(g, x, w, bias, y, scratch, scratch_floats, threads);
}

static i2i_status cpu_execute(void *self, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *p, i2i_run_state *st) {
  (void)self;
  const i2i_graph *g = &m->g;
  int th = st->threads;
  openblas_set_num_threads(th);
  double done = 0;
  /* I2I_PROFILE=1: time per op type, logged at the end (where the time goes) */
  bool prof = getenv("I2I_PROFILE") != NULL;
  int wino = getenv("I2I_NO_WINOGRAD") ? 0 : 4;
  double op_time[OP_COUNT_] = {0}, op_flops[OP_COUNT_] = {0};
  int fused = -1; /* a step done inside the one before it */
  for (int k = 0; k < p->n_steps; k++) {
    const i2i_step *s = &p->steps[k];
    const i2i_node *n = &g->nodes[s->node];
    if (k == fused) {
      done += s->flops;
      i2i_status rs = run_progress(ctx, st, done, p->total_flops);
      if (rs) return rs;
      continue;
    }
    double t0 = prof ? mono() : 0;
    int residual = (s->op == OP_INSTNORM || s->op == OP_BATCHNORM) ? norm_add_fusion(g, p, k) : -1;
    if (residual >= 0) fused = k + 1;
    shape4 xs = p->shape[s->in[0]], ys = p->shape[s->out];
    /* a layer-wise GPU run takes the convolutions (internal.h: conv_hook) */
    bool hooked = (s->op == OP_CONV || s->op == OP_CONVT) && st->conv_hook;
    if (hooked) {
      i2i_status hs = st->conv_hook(st->conv_user, ctx, m, p, st, k, done);
      if (hs) return hs;
    }
    for (int img = 0; img < p->n && !hooked; img++) {
      const float *x = st->arena + p->offset[s->in[0]] + per_image(xs) * (size_t)img;
      float *y = st->arena + p->offset[s->out] + per_image(ys) * (size_t)img;
      switch (s->op) {
      case OP_CONV:
      case OP_CONVT: {
        const i2i_tensor *wt = g->values[n->in[1]].c;
        conv_geom cg = cpu_step_geom(m, p, s);
        cg.chunk_done = chunk_done;
        chunk_ctx cc = {ctx, st, done + s->flops * img / p->n, s->flops / p->n, p->total_flops, false};
        cg.user = &cc;
        const float *bias = n->n_in > 2 ? wdata(g, n->in[2]) : NULL;
        int tiles = cpu_conv_any(&cg, s->op == OP_CONVT, x, wt->data, bias, y, st->scratch, p->scratch_floats, th, wino);
        if (tiles < 0) return i2i_fail(ctx, I2I_E_CANCELLED, "cancelled");
        if (tiles > st->tiles) st->tiles = tiles;
        break;
      }
      case OP_INSTNORM:
      case OP_BATCHNORM: {
        const float *mean = NULL, *var = NULL;
        bool running = n->op == OP_BATCHNORM ? (!n->bn_training || st->mode == I2I_PIX2PIX_EVAL)
                                             : (n->bn_from_in && st->mode == I2I_PIX2PIX_EVAL);
        if (running) {
          mean = wdata(g, n->bn_mean);
          var = wdata(g, n->bn_var);
        }
        const i2i_step *a = residual >= 0 ? &p->steps[k + 1] : NULL;
        const float *res = a ? st->arena + p->offset[residual] + per_image(xs) * (size_t)img : NULL;
        if (a) y = st->arena + p->offset[a->out] + per_image(xs) * (size_t)img;
        cpu_norm_forward(x, y, (int)xs.c, (size_t)(xs.h * xs.w), wdata(g, n->in[1]), wdata(g, n->in[2]), mean, var,
                         n->eps, s->act, s->act_alpha, res, a ? a->act : ACT_NONE, a ? a->act_alpha : 0, th);
        break;
      }
      case OP_PAD: {
        int pads[4] = {(int)n->pads8[2], (int)n->pads8[3], (int)n->pads8[6], (int)n->pads8[7]};
        cpu_pad_forward(x, y, (int)xs.c, (int)xs.h, (int)xs.w, pads, n->pad_mode, n->pad_value, th);
        break;
      }
      case OP_RELU: cpu_act_forward(x, y, per_image(xs), ACT_RELU, 0, th); break;
      case OP_LRELU: cpu_act_forward(x, y, per_image(xs), ACT_LRELU, n->alpha, th); break;
      case OP_IDENTITY: cpu_act_forward(x, y, per_image(xs), ACT_NONE, 0, th); break;
      case OP_TANH: cpu_tanh_forward(x, y, per_image(xs), th); break;
      case OP_ADD: {
        const float *b = st->arena + p->offset[s->in[1]] + per_image(xs) * (size_t)img;
        cpu_add_forward(x, b, y, per_image(xs), s->act, s->act_alpha, th);
        break;
      }
      case OP_CONCAT: {
        size_t off = 0;
        for (int i = 0; i < s->n_in; i++) {
          shape4 is = p->shape[s->in[i]];
          const float *src = st->arena + p->offset[s->in[i]] + per_image(is) * (size_t)img;
          cpu_act_forward(src, y + off, per_image(is), s->act, s->act_alpha, th);
          off += per_image(is);
        }
        break;
      }
      case OP_DROPOUT:
        if (st->mode == I2I_PIX2PIX_FAITHFUL && n->ratio > 0)
          /* at inference the mask does not depend on the image's place in the batch (design.md:
           * only training counts it), so a batched run equals one run per image */
          cpu_dropout_forward(x, y, (int)xs.c, (int)xs.h, (int)xs.w, n->ratio, st->seed, (uint32_t)n->ordinal, 0,
                              st->step, th);
        else
          cpu_act_forward(x, y, per_image(xs), ACT_NONE, 0, th);
        break;
      default:
        return i2i_fail(ctx, I2I_E_INTERNAL, "cpu backend: no kernel for '%s'", n->op_type);
      }
    }
    if (prof) {
      double dt = mono() - t0;
      op_time[s->op] += dt;
      op_flops[s->op] += s->flops;
      if (getenv("I2I_PROFILE")[0] == '2')
        i2i_log(ctx, I2I_LOG_WARNING, "profile: step %3d %-22s %-28.28s %lldx%lldx%lld -> %lldx%lldx%lld %8.2f ms %6.1f GFLOP/s",
                k, n->op_type, n->name, (long long)xs.c, (long long)xs.h, (long long)xs.w, (long long)ys.c, (long long)ys.h,
                (long long)ys.w, dt * 1e3, s->flops / dt * 1e-9);
    }
    done += s->flops;
    i2i_status rs = run_progress(ctx, st, done, p->total_flops);
    if (rs) return rs;
  }
  if (prof) {
    double tot = 0;
    for (int o = 0; o < OP_COUNT_; o++) tot += op_time[o];
    for (int k = 0; k < p->n_steps; k++) {
      int o = p->steps[k].op;
      if (op_time[o] < 0) continue;
      i2i_log(ctx, I2I_LOG_WARNING, "profile: %-22s %8.1f ms %5.1f%%  %7.1f GFLOP/s", g->nodes[p->steps[k].node].op_type,
              op_time[o] * 1e3, 100.0 * op_time[o] / tot, op_flops[o] / (op_time[o] > 0 ? op_time[o] : 1) * 1e-9);
      op_time[o] = -1;
    }
    i2i_log(ctx, I2I_LOG_WARNING, "profile: total %.1f ms, %.1f GFLOP, %d threads", tot * 1e3, p->total_flops * 1e-9, th);
  }
  return I2I_OK;
}

const i2i_backend_ops i2i_cpu_backend = {"cpu", cpu_execute, NULL};
