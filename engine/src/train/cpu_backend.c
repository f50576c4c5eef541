/* train/cpu_backend.c: the CPU training backend: host memory, and a network's forward and
 * backward passes as walks over its training plan calling the kernels of cpu/.
 *
 * Memory is plain host memory from the context's allocator; the forward keeps what the backward
 * needs in the slot the plan laid out. Kernels work per image except the norms (batch
 * statistics need the whole batch) and the elementwise ops. Nothing here knows about losses'
 * meaning, schedules or the order of a training step (trainer.c).
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../cpu/cpu.h"
#include "../internal.h"

static size_t per_image(shape4 s) { return (size_t)(s.c * s.h * s.w); }

/* One thread below 65536 elements (see step_threads). */
static int threads_for(const i2i_ctx *ctx, size_t n) { return n < ((size_t)1 << 16) ? 1 : ctx->threads; }

/* I2I_PROFILE=1: seconds per op type in the forward, the data backward and the weight backward,
 * summed over the process and logged when a trainer ends (where the time goes); I2I_PROFILE=2
 * adds the same per convolution shape (the first SHAPES_MAX shapes met). */
static double prof[OP_COUNT_][3];
static bool prof_on(void) { return getenv("I2I_PROFILE") != NULL; }
#define SHAPES_MAX 64
static struct {
  conv_geom g;
  bool convt;
  double t[3];
  long calls[3]; /* images through each pass */
} shapes[SHAPES_MAX];
static int n_shapes;

/* Adds `images` images and their seconds to pass `pass` (0 forward, 1 data, 2 weights) of the
 * convolution shape g. */
static void prof_shape(const conv_geom *g, bool convt, int pass, int images, double sec) {
  static int level = -1;
  if (level < 0) level = atoi(getenv("I2I_PROFILE"));
  if (level < 2) return;
  int i = 0;
  while (i < n_shapes && !(shapes[i].convt == convt && shapes[i].g.c == g->c && shapes[i].g.h == g->h &&
                           shapes[i].g.w == g->w && shapes[i].g.m == g->m && shapes[i].g.oh == g->oh &&
                           shapes[i].g.kh == g->kh && shapes[i].g.sh == g->sh))
    i++;
  if (i == SHAPES_MAX) return;
  if (i == n_shapes) {
    shapes[i].g = *g;
    shapes[i].convt = convt;
    n_shapes++;
  }
  shapes[i].t[pass] += sec;
  shapes[i].calls[pass] += images;
}
static double prof_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cpu_train_profile_report(i2i_ctx *ctx) {
  if (!prof_on()) return;
  static const char *names[OP_COUNT_] = {[OP_CONV] = "Conv", [OP_CONVT] = "ConvTranspose", [OP_INSTNORM] = "InstanceNorm",
                                         [OP_BATCHNORM] = "BatchNorm", [OP_PAD] = "Pad", [OP_RELU] = "Relu",
                                         [OP_LRELU] = "LeakyRelu", [OP_TANH] = "Tanh", [OP_ADD] = "Add",
                                         [OP_CONCAT] = "Concat", [OP_DROPOUT] = "Dropout", [OP_IDENTITY] = "Identity"};
  double tot = 0;
  for (int o = 0; o < OP_COUNT_; o++) tot += prof[o][0] + prof[o][1] + prof[o][2];
  for (int o = 0; o < OP_COUNT_; o++)
    if (prof[o][0] + prof[o][1] + prof[o][2] > 0)
      i2i_log(ctx, I2I_LOG_WARNING, "train profile: %-14s forward %8.2f s  backward data %8.2f s  weights %8.2f s", names[o],
              prof[o][0], prof[o][1], prof[o][2]);
  i2i_log(ctx, I2I_LOG_WARNING, "train profile: total %.2f s in passes", tot);
  for (int i = 0; i < n_shapes; i++)
    i2i_log(ctx, I2I_LOG_WARNING,
            "train profile: %-5s %4d -> %4d, %dx%d stride %d, %4dx%-4d -> %4dx%-4d  forward %6.2f s (%ld images)  data "
            "%6.2f s (%ld)  weights %6.2f s (%ld)",
            shapes[i].convt ? "ConvT" : "Conv", shapes[i].g.c, shapes[i].g.m, shapes[i].g.kh, shapes[i].g.kw,
            shapes[i].g.sh, shapes[i].g.h, shapes[i].g.w, shapes[i].g.oh, shapes[i].g.ow, shapes[i].t[0],
            shapes[i].calls[0], shapes[i].t[1], shapes[i].calls[1], shapes[i].t[2], shapes[i].calls[2]);
}

static float *cpu_alloc(void *self, i2i_ctx *ctx, size_t floats) {
  (void)self;
  size_t bytes;
  if (!i2i_mul_ok(floats ? floats : 1, sizeof(float), &bytes)) return NULL;
  float *p = i2i_alloc_aligned(ctx, bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

static void cpu_free(void *self, i2i_ctx *ctx, float *p) {
  (void)self;
  i2i_free_aligned(ctx, p);
}

static i2i_status cpu_copy(void *self, i2i_ctx *ctx, float *dst, const float *src, size_t n) {
  (void)self;
  (void)ctx;
  if (dst != src && n) memmove(dst, src, n * sizeof(float));
  return I2I_OK;
}

static i2i_status cpu_fill(void *self, i2i_ctx *ctx, float *dst, float v, size_t n) {
  (void)self;
  int th = threads_for(ctx, n);
#pragma omp parallel for num_threads(th) schedule(static)
  for (size_t i = 0; i < n; i++) dst[i] = v;
  return I2I_OK;
}

static i2i_status cpu_copy_channels(void *self, i2i_ctx *ctx, float *dst, int dst_c, int dst_c0, const float *src,
                                    int src_c, int src_c0, int nc, int n, size_t hw, bool accumulate) {
  (void)self;
  for (int i = 0; i < n; i++)
    cpu_grad_copy(src + ((size_t)i * (size_t)src_c + (size_t)src_c0) * hw,
                  dst + ((size_t)i * (size_t)dst_c + (size_t)dst_c0) * hw, (size_t)nc * hw, accumulate, threads_for(ctx, (size_t)nc * hw));
  return I2I_OK;
}

static conv_geom step_geom(const i2i_tnet *net, const i2i_tstep *s) {
  const i2i_node *n = &net->m->g.nodes[s->node];
  shape4 xs = net->plan.shape[s->in[0]], ys = net->plan.shape[s->out];
  conv_geom cg = {(int)xs.c, (int)xs.h, (int)xs.w, (int)ys.c, (int)ys.h, (int)ys.w,
                  n->conv.kernel[0], n->conv.kernel[1], n->conv.stride[0], n->conv.stride[1],
                  n->conv.dilation[0], n->conv.dilation[1], s->pads[0], s->pads[1], s->pads[2], s->pads[3],
                  s->pad_mode, n->conv.out_pad[0], n->conv.out_pad[1], NULL, NULL};
  return cg;
}

/* Threads for a step of `work` elements: small steps run on one thread, since forking a team and
 * meeting at its barrier costs more than they do (much more on a busy machine). */
static int step_threads(i2i_ctx *ctx, size_t work, int *blas_threads) {
  int th = threads_for(ctx, work);
  if (th != *blas_threads) {
    openblas_set_num_threads(th);
    *blas_threads = th;
  }
  return th;
}

static size_t step_work(const i2i_tnet *net, const i2i_tstep *s) {
  const i2i_tplan *p = &net->plan;
  size_t w = shape_numel(p->shape[s->in[0]]), o = shape_numel(p->shape[s->out]);
  if (o > w) w = o;
  if (s->op == OP_CONV || s->op == OP_CONVT) {
    /* multiply-adds per image over 64: below 4M of them one thread is quicker */
    const i2i_node *n = &net->m->g.nodes[s->node];
    shape4 xs = p->shape[s->in[0]], ys = p->shape[s->out];
    double macs = (double)xs.c * (double)ys.c * (double)n->conv.kernel[0] * (double)n->conv.kernel[1] *
                  (double)(s->op == OP_CONV ? ys.h * ys.w : xs.h * xs.w);
    w = (size_t)(macs / 64.0);
  }
  return w;
}

static const float *pw(const i2i_tnet *net, size_t off) { return off == SIZE_MAX ? NULL : net->param + off; }
static float *pg(const i2i_tnet *net, size_t off) { return off == SIZE_MAX ? NULL : net->grad + off; }

static i2i_status cpu_forward(void *self, i2i_ctx *ctx, const i2i_tnet *net, float *arena, float *scratch, uint64_t seed,
                              uint64_t step) {
  (void)self;
  const i2i_tplan *p = &net->plan;
  const i2i_graph *g = &net->m->g;
  int blas_th = ctx->threads;
  openblas_set_num_threads(blas_th);
  bool no_wino = getenv("I2I_NO_WINOGRAD") != NULL, pr = prof_on();
  for (int k = 0; k < p->n_steps; k++) {
    const i2i_tstep *s = &p->steps[k];
    int th = step_threads(ctx, step_work(net, s), &blas_th);
    const i2i_node *n = &g->nodes[s->node];
    shape4 xs = p->shape[s->in[0]], ys = p->shape[s->out];
    float *x = arena + p->act_off[s->in[0]], *y = arena + p->act_off[s->out];
    double t0 = pr ? prof_now() : 0;
    size_t xi = per_image(xs), yi = per_image(ys);
    switch (s->op) {
    case OP_CONV:
    case OP_CONVT: {
      conv_geom cg = step_geom(net, s);
      const float *w = pw(net, s->w_off), *b = pw(net, s->b_off);
      for (int i = 0; i < p->n; i++) {
        const float *xx = x + xi * (size_t)i;
        float *yy = y + yi * (size_t)i;
        cpu_conv_any(&cg, s->op == OP_CONVT, xx, w, b, yy, scratch, p->scratch_floats, th, no_wino ? 0 : 2);
      }
      if (pr) prof_shape(&cg, s->op == OP_CONVT, 0, p->n, prof_now() - t0);
      break;
    }
    case OP_INSTNORM:
    case OP_BATCHNORM: {
      float *mean = arena + s->stat_off;
      size_t groups = tstep_norm_groups(s, xs);
      float *rm = s->rm_off == SIZE_MAX ? NULL : net->param + s->rm_off;
      float *rv = s->rv_off == SIZE_MAX ? NULL : net->param + s->rv_off;
      cpu_norm_train_forward(x, y, (int)xs.n, (int)xs.c, (size_t)(xs.h * xs.w), s->batch_stats, pw(net, s->w_off),
                             pw(net, s->b_off), n->eps, s->act, s->act_alpha, mean, mean + groups, rm, rv, s->momentum, th);
      break;
    }
    case OP_PAD: {
      int pads[4] = {(int)n->pads8[2], (int)n->pads8[3], (int)n->pads8[6], (int)n->pads8[7]};
      for (int i = 0; i < p->n; i++)
        cpu_pad_forward(x + xi * (size_t)i, y + yi * (size_t)i, (int)xs.c, (int)xs.h, (int)xs.w, pads, n->pad_mode,
                        n->pad_value, th);
      break;
    }
    case OP_RELU: cpu_act_forward(x, y, shape_numel(xs), ACT_RELU, 0, th); break;
    case OP_LRELU: cpu_act_forward(x, y, shape_numel(xs), ACT_LRELU, n->alpha, th); break;
    case OP_IDENTITY: cpu_act_forward(x, y, shape_numel(xs), ACT_NONE, 0, th); break;
    case OP_TANH: cpu_tanh_forward(x, y, shape_numel(xs), th); break;
    case OP_ADD:
      cpu_add_forward(x, arena + p->act_off[s->in[1]], y, shape_numel(xs), ACT_NONE, 0, th);
      break;
    case OP_CONCAT:
      for (int i = 0; i < p->n; i++) {
        size_t off = 0;
        for (int j = 0; j < s->n_in; j++) {
          size_t q = per_image(p->shape[s->in[j]]);
          memcpy(y + yi * (size_t)i + off, arena + p->act_off[s->in[j]] + q * (size_t)i, q * sizeof(float));
          off += q;
        }
      }
      break;
    case OP_DROPOUT:
      for (int i = 0; i < p->n; i++) {
        if (n->ratio > 0)
          cpu_dropout_forward(x + xi * (size_t)i, y + yi * (size_t)i, (int)xs.c, (int)xs.h, (int)xs.w, n->ratio, seed,
                              (uint32_t)n->ordinal, (uint32_t)i, step, th);
        else
          memcpy(y + yi * (size_t)i, x + xi * (size_t)i, xi * sizeof(float));
      }
      break;
    default:
      return i2i_fail(ctx, I2I_E_INTERNAL, "cpu training backend: no forward for '%s'", n->op_type);
    }
    if (pr) prof[s->op][0] += prof_now() - t0;
  }
  return I2I_OK;
}

static i2i_status cpu_backward(void *self, i2i_ctx *ctx, const i2i_tnet *net, float *arena, float *grads,
                               float *scratch, bool want_dx, bool param_grads, uint64_t seed, uint64_t step) {
  (void)self;
  const i2i_tplan *p = &net->plan;
  const i2i_graph *g = &net->m->g;
  int blas_th = ctx->threads;
  openblas_set_num_threads(blas_th);
  bool pr = prof_on(), no_wino = getenv("I2I_NO_WINOGRAD") != NULL;
  for (int k = p->n_steps - 1; k >= 0; k--) {
    const i2i_tstep *s = &p->steps[k];
    int th = step_threads(ctx, step_work(net, s), &blas_th);
    const i2i_node *n = &g->nodes[s->node];
    shape4 xs = p->shape[s->in[0]], ys = p->shape[s->out];
    const float *x = arena + p->act_off[s->in[0]], *y = arena + p->act_off[s->out];
    const float *dy = grads + p->grad_off[s->out];
    bool need0 = s->in[0] != p->input || want_dx;
    float *dx = need0 ? grads + p->grad_off[s->in[0]] : NULL;
    size_t xi = per_image(xs), yi = per_image(ys);
    switch (s->op) {
    case OP_CONV:
    case OP_CONVT: {
      conv_geom cg = step_geom(net, s);
      const float *w = pw(net, s->w_off);
      bool direct = s->op == OP_CONV && cpu_direct_backward_applies(&cg) &&
                    p->scratch_floats >= cpu_direct_backward_scratch(&cg, th);
      for (int i = 0; i < p->n; i++) {
        const float *xx = x + xi * (size_t)i, *gy = dy + yi * (size_t)i;
        double t0 = pr ? prof_now() : 0;
        if (param_grads) {
          float *gw = pg(net, s->w_off), *gb = s->b_train ? pg(net, s->b_off) : NULL;
          if (s->op == OP_CONVT) cpu_convt_backward_weights(&cg, xx, gy, gw, gb, scratch, p->scratch_floats, th);
          else if (!no_wino && cpu_winograd_applies(&cg) && p->scratch_floats >= cpu_winograd_wgrad_scratch(&cg, 16))
            cpu_conv_backward_weights_winograd(&cg, xx, gy, gw, gb, scratch, p->scratch_floats, th);
          else if (direct) cpu_conv_backward_weights_direct(&cg, xx, gy, gw, gb, scratch, th);
          else cpu_conv_backward_weights(&cg, xx, gy, gw, gb, scratch, p->scratch_floats, th);
        }
        double t1 = pr ? prof_now() : 0;
        if (dx) {
          float *gx = dx + xi * (size_t)i;
          if (s->op == OP_CONVT) cpu_convt_backward_data(&cg, gy, w, gx, s->acc_dx[0], scratch, p->scratch_floats, th);
          else if (!no_wino && cpu_winograd_applies(&cg) && p->scratch_floats >= cpu_winograd_backward_scratch(&cg))
            cpu_conv_backward_data_winograd(&cg, gy, w, gx, s->acc_dx[0], scratch, th);
          else if (direct) cpu_conv_backward_data_direct(&cg, gy, w, gx, s->acc_dx[0], scratch, th);
          else cpu_conv_backward_data(&cg, gy, w, gx, s->acc_dx[0], scratch, p->scratch_floats, th);
        }
        if (pr) {
          double t2 = prof_now();
          prof[s->op][2] += t1 - t0;
          prof[s->op][1] += t2 - t1;
          prof_shape(&cg, s->op == OP_CONVT, 2, param_grads, t1 - t0);
          prof_shape(&cg, s->op == OP_CONVT, 1, dx != NULL, t2 - t1);
        }
      }
      break;
    }
    case OP_INSTNORM:
    case OP_BATCHNORM: {
      if (!dx && !param_grads) break;
      double t0 = pr ? prof_now() : 0;
      const float *mean = arena + s->stat_off;
      size_t groups = tstep_norm_groups(s, xs);
      cpu_norm_backward(x, dy, dx, dx ? s->acc_dx[0] : false, (int)xs.n, (int)xs.c, (size_t)(xs.h * xs.w),
                        s->batch_stats, pw(net, s->w_off), pw(net, s->b_off), mean, mean + groups, s->act,
                        s->act_alpha, param_grads && s->w_train ? pg(net, s->w_off) : NULL,
                        param_grads && s->b_train ? pg(net, s->b_off) : NULL, th);
      if (pr) prof[s->op][1] += prof_now() - t0;
      break;
    }
    case OP_PAD: {
      if (!dx) break;
      int pads[4] = {(int)n->pads8[2], (int)n->pads8[3], (int)n->pads8[6], (int)n->pads8[7]};
      for (int i = 0; i < p->n; i++)
        cpu_pad_backward(dy + yi * (size_t)i, dx + xi * (size_t)i, (int)xs.c, (int)xs.h, (int)xs.w, pads, n->pad_mode,
                         s->acc_dx[0], th);
      break;
    }
    case OP_RELU:
    case OP_LRELU:
      if (dx) cpu_act_backward(y, dy, dx, shape_numel(xs), s->op == OP_RELU ? ACT_RELU : ACT_LRELU, n->alpha, s->acc_dx[0], th);
      break;
    case OP_IDENTITY:
      if (dx) cpu_grad_copy(dy, dx, shape_numel(xs), s->acc_dx[0], th);
      break;
    case OP_TANH:
      if (dx) cpu_tanh_backward(y, dy, dx, shape_numel(xs), s->acc_dx[0], th);
      break;
    case OP_ADD:
      for (int j = 0; j < 2; j++) {
        if (s->in[j] == p->input && !want_dx) continue;
        cpu_grad_copy(dy, grads + p->grad_off[s->in[j]], shape_numel(xs), s->acc_dx[j], th);
      }
      break;
    case OP_CONCAT:
      for (int i = 0; i < p->n; i++) {
        size_t off = 0;
        for (int j = 0; j < s->n_in; j++) {
          size_t q = per_image(p->shape[s->in[j]]);
          if (s->in[j] != p->input || want_dx)
            cpu_grad_copy(dy + yi * (size_t)i + off, grads + p->grad_off[s->in[j]] + q * (size_t)i, q, s->acc_dx[j], th);
          off += q;
        }
      }
      break;
    case OP_DROPOUT:
      if (!dx) break;
      for (int i = 0; i < p->n; i++) {
        if (n->ratio > 0)
          cpu_dropout_backward(dy + yi * (size_t)i, dx + xi * (size_t)i, (int)xs.c, (int)xs.h, (int)xs.w, n->ratio, seed,
                               (uint32_t)n->ordinal, (uint32_t)i, step, s->acc_dx[0], th);
        else
          cpu_grad_copy(dy + yi * (size_t)i, dx + xi * (size_t)i, xi, s->acc_dx[0], th);
      }
      break;
    default:
      return i2i_fail(ctx, I2I_E_INTERNAL, "cpu training backend: no backward for '%s'", n->op_type);
    }
  }
  return I2I_OK;
}

static i2i_status cpu_loss_op(void *self, i2i_ctx *ctx, int kind, const float *x, const float *target, float label,
                              size_t n, float weight, float *grad, bool accumulate, double *value) {
  (void)self;
  *value = cpu_loss(kind, x, target, label, n, weight, grad, accumulate, threads_for(ctx, n));
  return I2I_OK;
}

static i2i_status cpu_adam_op(void *self, i2i_ctx *ctx, i2i_tnet *net, float lr, float b1, float b2, float eps) {
  (void)self;
  net->adam_t++;
  for (int r = 0; r < net->n_train; r++) {
    size_t o = net->train[r].off;
    cpu_adam(net->param + o, net->grad + o, net->adam_m + o, net->adam_v + o, net->train[r].n, lr, b1, b2, eps,
             net->adam_t, threads_for(ctx, net->train[r].n));
  }
  return I2I_OK;
}

static i2i_status cpu_finite(void *self, i2i_ctx *ctx, const float *x, size_t n, bool *ok) {
  (void)self;
  *ok = cpu_all_finite(x, n, threads_for(ctx, n));
  return I2I_OK;
}

static const char *cpu_math(void *self) {
  (void)self;
  return "float32";
}

const i2i_train_backend_ops i2i_cpu_train_backend = {
  "cpu", cpu_alloc, cpu_free, cpu_copy, cpu_copy, cpu_copy, cpu_fill, cpu_copy_channels, cpu_forward, cpu_backward,
  cpu_loss_op, cpu_adam_op, cpu_finite, NULL, cpu_math,
};
