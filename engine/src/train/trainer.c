/* train/trainer.c: the trainer: creation, mmagic's CycleGAN and Pix2Pix training steps, the
 * image pool, the learning-rate schedule and the inspection API.
 *
 * The step logic is written against the training backend table (internal.h): it names buffers
 * and passes, never touches their memory, so the CUDA backend (cuda/train.cu, through the
 * module's extension table) runs the same steps as the CPU one (cpu_backend.c). Everything
 * a step uses is allocated at creation. A step that meets a non-finite loss or gradient puts
 * back what it changed (running statistics, the discriminators' update, pool entries) and
 * reports I2I_E_LIMIT. It is not a data loader: images come through i2i_trainer_set_images.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../cuda/cuda_api.h"
#include "train.h"

/* What memory ran out, for messages, and its status. */
static const char *be_mem(const i2i_trainer *tr) { return tr->be == &i2i_cpu_train_backend ? "memory" : "GPU memory"; }
static i2i_status be_nomem(const i2i_trainer *tr) {
  return tr->be == &i2i_cpu_train_backend ? I2I_E_NOMEM : I2I_E_DEVICE_NOMEM;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void i2i_train_default_params(i2i_train_params *p, i2i_train_kind kind) {
  if (!p) return;
  memset(p, 0, sizeof *p);
  p->kind = kind;
  p->batch = 1;
  p->size = 256;
  p->flip = 1;
  p->augment = 1;
  p->iters = 1000;
  p->lr = 2e-4f;
  p->beta1 = 0.5f;
  p->beta2 = 0.999f;
  p->eps = 1e-8f;
  p->lr_decay = kind == I2I_TRAIN_CYCLEGAN;
  p->lambda_cycle = 10.0f;
  p->lambda_identity = 0.5f;
  p->lambda_l1 = 100.0f;
  p->pool_size = kind == I2I_TRAIN_CYCLEGAN ? 50 : 0;
  p->d_layers = 3;
}

i2i_status train_params_check(i2i_ctx *ctx, i2i_train_params *p) {
  if (p->kind != I2I_TRAIN_CYCLEGAN && p->kind != I2I_TRAIN_PIX2PIX)
    return i2i_fail(ctx, I2I_E_ARG, "unknown training kind %d", (int)p->kind);
  if (p->batch < 1 || p->batch > 1024) return i2i_fail(ctx, I2I_E_ARG, "batch %d outside 1..1024", p->batch);
  if (p->size < 8 || p->size > 8192) return i2i_fail(ctx, I2I_E_ARG, "training size %d outside 8..8192", p->size);
  if (p->load_size == 0) p->load_size = (int)(((int64_t)p->size * 286 + 128) / 256);
  if (p->load_size < p->size || p->load_size > 16384)
    return i2i_fail(ctx, I2I_E_ARG, "load size %d must be at least the training size %d", p->load_size, p->size);
  if (p->iters < 1 || p->iters > ((int64_t)1 << 40)) return i2i_fail(ctx, I2I_E_ARG, "iterations %lld out of range", (long long)p->iters);
  if (!(p->lr >= 0 && isfinite(p->lr)) || !(p->beta1 >= 0 && p->beta1 < 1) || !(p->beta2 >= 0 && p->beta2 < 1) ||
      !(p->eps > 0))
    return i2i_fail(ctx, I2I_E_ARG, "Adam settings out of range (lr %g, betas %g %g, eps %g)", p->lr, p->beta1, p->beta2,
                    p->eps);
  if (!(p->lambda_cycle >= 0) || !(p->lambda_identity >= 0) || !(p->lambda_l1 >= 0))
    return i2i_fail(ctx, I2I_E_ARG, "loss weights must be non-negative");
  if (p->pool_size < 0 || p->pool_size > 100000) return i2i_fail(ctx, I2I_E_ARG, "pool size %d out of range", p->pool_size);
  if (p->d_layers < 1 || p->d_layers > 8) return i2i_fail(ctx, I2I_E_ARG, "discriminator layers %d outside 1..8", p->d_layers);
  if (p->d_channels < 0 || p->d_channels > 4096) return i2i_fail(ctx, I2I_E_ARG, "discriminator channels %d", p->d_channels);
  if (p->kind == I2I_TRAIN_PIX2PIX) p->pool_size = 0;
  return I2I_OK;
}

double i2i_trainer_lr(const i2i_trainer *tr, int64_t it) {
  const i2i_train_params *p = &tr->p;
  if (!p->lr_decay) return p->lr;
  /* mmagic LinearLrInterval scaled: constant to iters/2, then 100 stages linearly to zero. The
   * published configs use interval = (end - begin) / 100 exactly; with a span of any length the
   * stage is floor(100 (it - begin) / span), the same thing without rounding the interval (an
   * integer interval of floor(span / 100) gave up to 199 stages) */
  int64_t begin = p->iters / 2, span = p->iters - begin;
  if (it < begin || span <= 0) return p->lr;
  int64_t stage = it - begin >= span ? 100 : (int64_t)((__int128)100 * (it - begin) / span);
  return (double)p->lr * (1.0 - (double)stage / 100.0);
}

/* ---- creation --------------------------------------------------------------------------------- */

static void net_free(i2i_trainer *tr, int k) {
  i2i_tnet *n = &tr->net[k];
  if (n->param && n->m && n->param != n->m->weights) tr->be->free(tr->self, tr->ctx, n->param);
  tr->be->free(tr->self, tr->ctx, n->grad);
  tr->be->free(tr->self, tr->ctx, n->adam_m);
  tr->be->free(tr->self, tr->ctx, n->adam_v);
  tplan_free(tr->ctx, &n->plan);
  i2i_dealloc(tr->ctx, n->train);
  i2i_dealloc(tr->ctx, n->stats);
  for (size_t i = 0; i < tr->n_tensors[k]; i++) i2i_dealloc(tr->ctx, tr->tensors[k][i].name);
  i2i_dealloc(tr->ctx, tr->tensors[k]);
  i2i_model_free(n->m);
  memset(n, 0, sizeof *n);
}

void i2i_trainer_free(i2i_trainer *tr) {
  if (!tr) return;
  i2i_ctx *ctx = tr->ctx;
  const i2i_train_backend_ops *be = tr->be;
  if (be == &i2i_cpu_train_backend) cpu_train_profile_report(ctx);
  for (int k = 0; k < 4; k++) {
    if (tr->has[k]) net_free(tr, k);
    be->free(tr->self, ctx, tr->snap_d[k]);
  }
  for (int s = 0; s < 3; s++) be->free(tr->self, ctx, tr->gslot[s]);
  be->free(tr->self, ctx, tr->dslot);
  be->free(tr->self, ctx, tr->grads);
  be->free(tr->self, ctx, tr->scratch);
  be->free(tr->self, ctx, tr->real_a);
  be->free(tr->self, ctx, tr->real_b);
  be->free(tr->self, ctx, tr->gfake);
  be->free(tr->self, ctx, tr->snap_stats);
  for (int d = 0; d < 2; d++) {
    be->free(tr->self, ctx, tr->pool[d].images);
    be->free(tr->self, ctx, tr->pool[d].undo);
    i2i_dealloc(ctx, tr->pool[d].undo_slot);
  }
  i2i_free_aligned(ctx, tr->host_a);
  i2i_free_aligned(ctx, tr->host_b);
  i2i_free_aligned(ctx, tr->host_tmp);
  i2i_dealloc(ctx, tr->img_set);
  for (int i = 0; i < tr->n_meta; i++) {
    i2i_dealloc(ctx, tr->meta[i].key);
    i2i_dealloc(ctx, tr->meta[i].value);
  }
  i2i_dealloc(ctx, tr->meta);
  if (be->destroy) be->destroy(tr->self);
  i2i_dealloc(ctx, tr);
}

static int first_conv_channels(const i2i_model *m) {
  const i2i_graph *g = &m->g;
  for (int k = 0; k < g->n_order; k++) {
    const i2i_node *n = &g->nodes[g->order[k]];
    if (n->op == OP_CONV || n->op == OP_CONVT) {
      const i2i_tensor *w = g->values[n->in[1]].c;
      return (int)(n->op == OP_CONV ? w->dims[0] : w->dims[1]);
    }
  }
  return 64;
}

static const char *role_name(int k) {
  static const char *names[4] = {"generator", "reverse generator", "discriminator", "reverse discriminator"};
  return names[k];
}

/* Plans network k and lists its trained ranges, running statistics and inspectable tensors. */
static i2i_status net_setup(i2i_trainer *tr, int k) {
  i2i_ctx *ctx = tr->ctx;
  i2i_tnet *n = &tr->net[k];
  i2i_status st = tplan_build(ctx, n->m, tr->p.batch, tr->p.size, tr->p.size, &n->plan);
  if (st) {
    i2i_prefix_err(ctx, "%s at %dx%d, batch %d", role_name(k), tr->p.size, tr->p.size, tr->p.batch);
    return st;
  }
  n->n_floats = n->m->n_weights;
  int ns = n->plan.n_steps;
  n->train = i2i_calloc(ctx, (size_t)ns * 2 + 1, sizeof *n->train);
  n->stats = i2i_calloc(ctx, (size_t)ns * 2 + 1, sizeof *n->stats);
  tr->tensors[k] = i2i_calloc(ctx, (size_t)ns * 4 + 1, sizeof(train_tensor));
  if (!n->train || !n->stats || !tr->tensors[k]) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory setting up training");
  const i2i_graph *g = &n->m->g;
  for (int s = 0; s < ns; s++) {
    const i2i_tstep *t = &n->plan.steps[s];
    const i2i_node *nd = &g->nodes[t->node];
    struct {
      size_t off;
      bool train, stat;
      int v;
    } cand[4] = {{t->w_off, t->w_train, false, nd->n_in > 1 ? nd->in[1] : -1},
                 {t->b_off, t->b_train, false, nd->n_in > 2 ? nd->in[2] : -1},
                 {t->rm_off, false, true, nd->op == OP_BATCHNORM && nd->n_in > 3 ? nd->in[3] : nd->bn_mean},
                 {t->rv_off, false, true, nd->op == OP_BATCHNORM && nd->n_in > 4 ? nd->in[4] : nd->bn_var}};
    for (int c = 0; c < 4; c++) {
      if (cand[c].off == SIZE_MAX || (!cand[c].train && !cand[c].stat) || cand[c].v < 0) continue;
      const i2i_tensor *tt = g->values[cand[c].v].c;
      i2i_trange r = {cand[c].off, tt->numel};
      if (cand[c].train) n->train[n->n_train++] = r;
      else n->stats[n->n_stats++] = r;
      train_tensor *e = &tr->tensors[k][tr->n_tensors[k]];
      e->name = i2i_strdup(ctx, g->values[cand[c].v].name);
      if (!e->name) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory setting up training");
      e->off = r.off;
      e->numel = r.n;
      e->trainable = cand[c].train;
      tr->n_tensors[k]++;
    }
  }
  const i2i_train_backend_ops *be = tr->be;
  if (be == &i2i_cpu_train_backend) {
    n->param = n->m->weights;
  } else {
    n->param = be->alloc(tr->self, ctx, n->n_floats);
    if (!n->param || be->upload(tr->self, ctx, n->param, n->m->weights, n->n_floats))
      return i2i_fail(ctx, be_nomem(tr), "out of %s for the %s's parameters", be_mem(tr), role_name(k));
  }
  n->grad = be->alloc(tr->self, ctx, n->n_floats);
  n->adam_m = be->alloc(tr->self, ctx, n->n_floats);
  n->adam_v = be->alloc(tr->self, ctx, n->n_floats);
  if (!n->grad || !n->adam_m || !n->adam_v)
    return i2i_fail(ctx, be_nomem(tr), "out of %s for the %s's optimiser state (%.1f MiB)", be_mem(tr), role_name(k),
                    3.0 * (double)n->n_floats * 4 / 1048576.0);
  return I2I_OK;
}

static i2i_status check_role(i2i_ctx *ctx, const i2i_train_params *p, int k, const i2i_model *m) {
  i2i_model_info in;
  i2i_model_get_info(m, &in);
  if (k < 2) {
    if (in.in_channels != 3 || in.out_channels != 3 || in.family == I2I_FAMILY_PATCHGAN)
      return i2i_fail(ctx, I2I_E_UNSUPPORTED, "the %s is not an RGB image-to-image generator (%d -> %d channels%s)",
                      role_name(k), in.in_channels, in.out_channels, in.family == I2I_FAMILY_PATCHGAN ? ", a discriminator" : "");
    if (p->size % in.size_multiple || p->size < in.min_side)
      return i2i_fail(ctx, I2I_E_ARG, "training size %d does not suit the %s (a multiple of %d, at least %d)", p->size,
                      role_name(k), in.size_multiple, in.min_side);
  } else {
    int want = p->kind == I2I_TRAIN_PIX2PIX ? 6 : 3;
    if (in.in_channels != want || in.out_channels != 1)
      return i2i_fail(ctx, I2I_E_UNSUPPORTED, "the %s takes %d channels and gives %d; a %s discriminator takes %d and gives 1",
                      role_name(k), in.in_channels, in.out_channels, p->kind == I2I_TRAIN_PIX2PIX ? "Pix2Pix" : "CycleGAN",
                      want);
  }
  return I2I_OK;
}

/* The training backend: the GPU's when the context allows CUDA and the module can train there,
 * else the CPU's (the reason logged); a forced CUDA backend that cannot train is an error. */
static i2i_status backend_open(i2i_ctx *ctx, const i2i_train_backend_ops **be, void **self) {
  *be = &i2i_cpu_train_backend;
  *self = NULL;
  if (ctx->forced == I2I_BACKEND_CPU || ctx->train_on_cpu) return I2I_OK;
  void *cs = NULL;
  const i2i_backend_ops *cu = cuda_backend(ctx, &cs);
  const i2i_cuda_ext *ext = (const i2i_cuda_ext *)ctx->cuda_ext;
  if (!cu || !ext || !ext->train_open) {
    if (ctx->forced == I2I_BACKEND_CUDA)
      return i2i_fail(ctx, I2I_E_DEVICE, "training on CUDA was requested but the GPU cannot be used: %s",
                      cu ? "the CUDA module has no training backend" : ctx->cuda_why);
    i2i_log(ctx, I2I_LOG_INFO, "training on the CPU: no usable NVIDIA GPU (%s)",
            cu ? "the CUDA module has no training backend" : ctx->cuda_why);
    return I2I_OK;
  }
  i2i_status st = ext->train_open(cs, ctx, be, self);
  if (!st) return I2I_OK;
  *be = &i2i_cpu_train_backend;
  *self = NULL;
  if (ctx->forced == I2I_BACKEND_CUDA) return st;
  i2i_log(ctx, I2I_LOG_WARNING, "training on the CPU: the GPU cannot train (%s)", ctx->err);
  i2i_clear_err(ctx);
  return I2I_OK;
}

i2i_backend i2i_trainer_backend(const i2i_trainer *tr) {
  return tr && tr->be != &i2i_cpu_train_backend ? I2I_BACKEND_CUDA : I2I_BACKEND_CPU;
}

const char *i2i_trainer_math(const i2i_trainer *tr) { return tr ? tr->be->math(tr->self) : "float32"; }

i2i_status trainer_create_owned(i2i_ctx *ctx, const i2i_train_params *pin, i2i_model *models[4], i2i_trainer **out) {
  *out = NULL;
  i2i_train_params p = *pin;
  i2i_status st = train_params_check(ctx, &p);
  bool cyc = p.kind == I2I_TRAIN_CYCLEGAN;
  if (!st && !models[0]) st = i2i_fail(ctx, I2I_E_ARG, "training needs a generator");
  if (!st && cyc && !models[1]) st = i2i_fail(ctx, I2I_E_ARG, "CycleGAN training needs the reverse generator too");
  if (st) {
    for (int k = 0; k < 4; k++) i2i_model_free(models[k]);
    return st;
  }
  /* discriminators the checkpoint lacks */
  for (int k = 2; k < (cyc ? 4 : 3) && !st; k++) {
    if (models[k]) continue;
    int base = p.d_channels ? p.d_channels : first_conv_channels(models[k - 2]);
    st = patchgan_build(ctx, cyc ? 3 : 6, base, p.d_layers, !cyc, p.seed + (uint64_t)k, &models[k]);
    if (!st) {
      const char *task = graph_meta(&models[k - 2]->g, "i2i.task");
      if (task) st = graph_set_meta(ctx, &models[k]->g, "i2i.task", task);
    }
  }
  if (!cyc) {
    i2i_model_free(models[1]);
    i2i_model_free(models[3]);
    models[1] = models[3] = NULL;
  }
  for (int k = 0; k < 4 && !st; k++)
    if (models[k]) st = check_role(ctx, &p, k, models[k]);
  i2i_trainer *tr = st ? NULL : i2i_calloc(ctx, 1, sizeof *tr);
  if (!st && !tr) st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory creating a trainer");
  if (st) {
    for (int k = 0; k < 4; k++) i2i_model_free(models[k]);
    return st;
  }
  tr->ctx = ctx;
  tr->p = p;
  st = backend_open(ctx, &tr->be, &tr->self);
  if (st) {
    i2i_dealloc(ctx, tr);
    for (int k = 0; k < 4; k++) i2i_model_free(models[k]);
    return st;
  }
  tr->serial_base = ((uint64_t)1 << 63) | ((uint64_t)(uintptr_t)tr & 0xffffffff) << 24;
  for (int k = 0; k < 4; k++) {
    tr->net[k].m = models[k];
    tr->has[k] = models[k] != NULL;
  }
  const i2i_train_backend_ops *be = tr->be;
  size_t gact = 0, dact = 0, grads = 0, scratch = 0, stats = 0;
  for (int k = 0; k < 4 && !st; k++) {
    if (!tr->has[k]) continue;
    if ((st = net_setup(tr, k))) break;
    const i2i_tplan *pl = &tr->net[k].plan;
    if (k < 2 && pl->act_floats > gact) gact = pl->act_floats;
    if (k >= 2 && pl->act_floats > dact) dact = pl->act_floats;
    if (pl->grad_floats > grads) grads = pl->grad_floats;
    if (pl->scratch_floats > scratch) scratch = pl->scratch_floats;
    for (int r = 0; r < tr->net[k].n_stats; r++) stats += tr->net[k].stats[r].n;
  }
  if (st) goto fail;
  size_t img = (size_t)3 * (size_t)p.size * (size_t)p.size, batch_img;
  if (!i2i_mul_ok(img, (size_t)p.batch, &batch_img)) {
    st = i2i_fail(ctx, I2I_E_LIMIT, "a batch of %d images of %d pixels is too large", p.batch, p.size);
    goto fail;
  }
  tr->img_floats = img;
  tr->n_gslots = cyc ? 3 : 1;
  double total = 0;
  for (int s = 0; s < tr->n_gslots; s++) {
    tr->gslot[s] = be->alloc(tr->self, ctx, gact);
    total += (double)gact;
  }
  tr->dslot = be->alloc(tr->self, ctx, dact);
  tr->grads = be->alloc(tr->self, ctx, grads);
  tr->scratch = be->alloc(tr->self, ctx, scratch);
  tr->real_a = be->alloc(tr->self, ctx, batch_img);
  tr->real_b = be->alloc(tr->self, ctx, batch_img);
  tr->gfake = be->alloc(tr->self, ctx, batch_img);
  tr->snap_stats = be->alloc(tr->self, ctx, stats);
  total += (double)dact + (double)grads + (double)scratch + 3.0 * (double)batch_img;
  bool ok = tr->dslot && tr->grads && tr->scratch && tr->real_a && tr->real_b && tr->gfake && tr->snap_stats;
  for (int s = 0; s < tr->n_gslots; s++) ok = ok && tr->gslot[s];
  for (int k = 2; k < 4; k++)
    if (tr->has[k]) {
      size_t f3;
      tr->snap_d[k] = i2i_mul_ok(tr->net[k].n_floats, 3, &f3) ? be->alloc(tr->self, ctx, f3) : NULL;
      ok = ok && tr->snap_d[k];
    }
  size_t bytes;
  if (!i2i_mul_ok(batch_img, sizeof(float), &bytes)) ok = false;
  tr->host_a = ok ? i2i_alloc_aligned(ctx, bytes) : NULL;
  tr->host_b = ok ? i2i_alloc_aligned(ctx, bytes) : NULL;
  size_t tmp_floats = (size_t)p.load_size * (size_t)p.load_size * 4;
  tr->host_tmp = ok ? i2i_alloc_aligned(ctx, tmp_floats * sizeof(float)) : NULL;
  tr->img_set = i2i_calloc(ctx, (size_t)p.batch, sizeof(bool));
  ok = ok && tr->host_a && tr->host_b && tr->host_tmp && tr->img_set;
  if (ok && cyc && p.pool_size > 0) {
    for (int d = 0; d < 2 && ok; d++) {
      train_pool *P = &tr->pool[d];
      P->cap = p.pool_size;
      size_t n;
      ok = i2i_mul_ok(img, (size_t)p.pool_size, &n);
      P->images = ok ? be->alloc(tr->self, ctx, n) : NULL;
      P->undo = be->alloc(tr->self, ctx, batch_img);
      P->undo_slot = i2i_calloc(ctx, (size_t)p.batch, sizeof(int));
      ok = ok && P->images && P->undo && P->undo_slot;
      total += (double)n;
    }
  }
  if (!ok) {
    st = i2i_fail(ctx, be_nomem(tr), "out of %s: training at %dx%d, batch %d needs about %.1f GiB of working memory%s",
                  be_mem(tr), p.size, p.size, p.batch, total * 4 / 1073741824.0,
                  be == &i2i_cpu_train_backend ? "" : " (a smaller --size or --batch, or --backend cpu)");
    goto fail;
  }
  *out = tr;
  return I2I_OK;
fail:
  i2i_trainer_free(tr);
  return st;
}

/* A private copy of a model: written and read back, so the trainer owns every byte of it. */
static i2i_status clone_model(i2i_ctx *ctx, const i2i_model *m, i2i_model **out) {
  *out = NULL;
  if (!m) return I2I_OK;
  void *data = NULL;
  size_t size = 0;
  i2i_status st = i2i_model_save_memory(ctx, m, &data, &size);
  if (!st) st = i2i_model_load_memory(ctx, data, size, out);
  i2i_free(ctx, data);
  return st;
}

i2i_status trainer_make_with_fallback(i2i_ctx *ctx, i2i_status (*make)(i2i_ctx *, void *, i2i_trainer **), void *arg,
                                      i2i_trainer **out) {
  i2i_status st = make(ctx, arg, out);
  if ((st != I2I_E_DEVICE && st != I2I_E_DEVICE_NOMEM) || ctx->forced != I2I_BACKEND_AUTO) return st;
  i2i_log(ctx, I2I_LOG_WARNING, "training on the CPU: the GPU could not set it up (%s)", ctx->err);
  i2i_clear_err(ctx);
  ctx->train_on_cpu = 1;
  st = make(ctx, arg, out);
  ctx->train_on_cpu = 0;
  return st;
}

typedef struct {
  const i2i_train_params *p;
  const i2i_train_models *models;
} create_args;

static i2i_status create_once(i2i_ctx *ctx, void *arg, i2i_trainer **out) {
  const create_args *a = (const create_args *)arg;
  const i2i_model *src[4] = {a->models->g, a->models->g_rev, a->models->d, a->models->d_rev};
  i2i_model *own[4] = {NULL, NULL, NULL, NULL};
  i2i_status st = I2I_OK;
  for (int k = 0; k < 4 && !st; k++) st = clone_model(ctx, src[k], &own[k]);
  if (st) {
    for (int k = 0; k < 4; k++) i2i_model_free(own[k]);
    return st;
  }
  return trainer_create_owned(ctx, a->p, own, out);
}

i2i_status i2i_trainer_create(i2i_ctx *ctx, const i2i_train_params *p, const i2i_train_models *models,
                              i2i_trainer **out) {
  if (!ctx) return I2I_E_ARG;
  if (!p || !models || !out) return i2i_fail(ctx, I2I_E_ARG, "i2i_trainer_create: NULL argument");
  *out = NULL;
  create_args a = {p, models};
  return trainer_make_with_fallback(ctx, create_once, &a, out);
}

void i2i_trainer_params(const i2i_trainer *tr, i2i_train_params *p) {
  if (tr && p) *p = tr->p;
}

int64_t i2i_trainer_iteration(const i2i_trainer *tr) { return tr ? tr->iteration : 0; }

i2i_status i2i_trainer_set_iters(i2i_trainer *tr, int64_t iters) {
  if (!tr) return I2I_E_ARG;
  if (iters < 1 || iters > ((int64_t)1 << 40)) return i2i_fail(tr->ctx, I2I_E_ARG, "iterations %lld out of range", (long long)iters);
  tr->p.iters = iters;
  return I2I_OK;
}

void i2i_trainer_set_pool_hook(i2i_trainer *tr, i2i_pool_choice_fn fn, void *user) {
  if (!tr) return;
  tr->hook = fn;
  tr->hook_user = user;
}

i2i_status i2i_trainer_set_images(i2i_trainer *tr, int index, const float *a, int aw, int ah, const float *b, int bw,
                                  int bh) {
  if (!tr) return I2I_E_ARG;
  if (index < 0 || index >= tr->p.batch)
    return i2i_fail(tr->ctx, I2I_E_ARG, "image index %d outside the batch of %d", index, tr->p.batch);
  if (!a || !b) return i2i_fail(tr->ctx, I2I_E_ARG, "i2i_trainer_set_images: NULL image");
  i2i_status st = augment_pair(tr, index, a, aw, ah, b, bw, bh);
  if (!st) tr->img_set[index] = true;
  return st;
}

/* ---- the steps ---------------------------------------------------------------------------------- */

#define CK(x)             \
  do {                    \
    if ((st = (x))) goto fail; \
  } while (0)

static float *act_in(const i2i_trainer *tr, int k, float *slot) { return slot + tr->net[k].plan.act_off[tr->net[k].plan.input]; }
static float *act_out(const i2i_trainer *tr, int k, float *slot) { return slot + tr->net[k].plan.act_off[tr->net[k].plan.output]; }
static float *grad_in(const i2i_trainer *tr, int k) { return tr->grads + tr->net[k].plan.grad_off[tr->net[k].plan.input]; }
static float *grad_out(const i2i_trainer *tr, int k) { return tr->grads + tr->net[k].plan.grad_off[tr->net[k].plan.output]; }
static size_t out_numel(const i2i_trainer *tr, int k) { return shape_numel(tr->net[k].plan.shape[tr->net[k].plan.output]); }

static i2i_status fwd(i2i_trainer *tr, int k, float *slot) {
  return tr->be->forward(tr->self, tr->ctx, &tr->net[k], slot, tr->scratch, tr->p.seed, (uint64_t)tr->iteration);
}

static i2i_status bwd(i2i_trainer *tr, int k, float *slot, bool want_dx, bool param_grads) {
  return tr->be->backward(tr->self, tr->ctx, &tr->net[k], slot, tr->grads, tr->scratch, want_dx, param_grads, tr->p.seed,
                          (uint64_t)tr->iteration);
}

static i2i_status loss(i2i_trainer *tr, int kind, const float *x, const float *target, float label, size_t n, float weight,
                       float *grad, bool acc, double *value) {
  return tr->be->loss(tr->self, tr->ctx, kind, x, target, label, n, weight, grad, acc, value);
}

static i2i_status zero_grads(i2i_trainer *tr, int k) {
  return tr->be->fill(tr->self, tr->ctx, tr->net[k].grad, 0.0f, tr->net[k].n_floats);
}

/* The pool (mmagic's GANImageBuffer) for domain d: writes the images D sees into dst. */
static i2i_status pool_query(i2i_trainer *tr, int d, const float *fake, float *dst) {
  train_pool *P = &tr->pool[d];
  const i2i_train_backend_ops *be = tr->be;
  size_t img = tr->img_floats;
  P->count_before = P->count;
  P->n_undo = 0;
  i2i_status st;
  for (int i = 0; i < tr->p.batch; i++) {
    const float *cur = fake + img * (size_t)i;
    float *out = dst + img * (size_t)i;
    if (P->cap == 0) {
      if ((st = be->copy(tr->self, tr->ctx, out, cur, img))) return st;
      continue;
    }
    if (P->count < P->cap) {
      if ((st = be->copy(tr->self, tr->ctx, P->images + img * (size_t)P->count, cur, img))) return st;
      P->count++;
      if ((st = be->copy(tr->self, tr->ctx, out, cur, img))) return st;
      continue;
    }
    int choice;
    if (tr->hook) {
      choice = tr->hook(tr->hook_user, d, tr->iteration, i);
      if (choice < -1 || choice >= P->cap)
        return i2i_fail(tr->ctx, I2I_E_ARG, "the pool hook chose %d (pool of %d)", choice, P->cap);
    } else {
      uint32_t w[4];
      train_rand4(tr->p.seed, RNG_POOL, (uint64_t)tr->iteration, (uint32_t)d, (uint32_t)i, w);
      choice = (double)w[0] / 4294967296.0 < 0.5 ? (int)rand_below(w[1], (uint32_t)P->cap) : -1;
    }
    if (choice < 0) {
      if ((st = be->copy(tr->self, tr->ctx, out, cur, img))) return st;
      continue;
    }
    float *slot = P->images + img * (size_t)choice;
    if ((st = be->copy(tr->self, tr->ctx, out, slot, img))) return st;
    if ((st = be->copy(tr->self, tr->ctx, P->undo + img * (size_t)P->n_undo, slot, img))) return st;
    P->undo_slot[P->n_undo++] = choice;
    if ((st = be->copy(tr->self, tr->ctx, slot, cur, img))) return st;
  }
  return I2I_OK;
}

static void pool_undo(i2i_trainer *tr) {
  for (int d = 0; d < 2; d++) {
    train_pool *P = &tr->pool[d];
    if (!P->cap) continue;
    for (int u = P->n_undo - 1; u >= 0; u--)
      tr->be->copy(tr->self, tr->ctx, P->images + tr->img_floats * (size_t)P->undo_slot[u], P->undo + tr->img_floats * (size_t)u,
                   tr->img_floats);
    P->count = P->count_before;
    P->n_undo = 0;
  }
}

static i2i_status snapshot_stats(i2i_trainer *tr, bool restore) {
  size_t o = 0;
  i2i_status st;
  for (int k = 0; k < 4; k++) {
    if (!tr->has[k]) continue;
    for (int r = 0; r < tr->net[k].n_stats; r++) {
      i2i_trange rg = tr->net[k].stats[r];
      float *live = tr->net[k].param + rg.off;
      st = restore ? tr->be->copy(tr->self, tr->ctx, live, tr->snap_stats + o, rg.n)
                   : tr->be->copy(tr->self, tr->ctx, tr->snap_stats + o, live, rg.n);
      if (st) return st;
      o += rg.n;
    }
  }
  return I2I_OK;
}

static i2i_status snapshot_d(i2i_trainer *tr, int k, bool restore) {
  i2i_tnet *n = &tr->net[k];
  float *s = tr->snap_d[k];
  size_t f = n->n_floats;
  float *live[3] = {n->param, n->adam_m, n->adam_v};
  for (int i = 0; i < 3; i++) {
    i2i_status st = restore ? tr->be->copy(tr->self, tr->ctx, live[i], s + f * (size_t)i, f)
                            : tr->be->copy(tr->self, tr->ctx, s + f * (size_t)i, live[i], f);
    if (st) return st;
  }
  if (restore) n->adam_t = tr->snap_t[k];
  else tr->snap_t[k] = n->adam_t;
  return I2I_OK;
}

/* I2I_E_LIMIT unless the losses and the gradients of networks a..b are finite. */
static i2i_status check_finite(i2i_trainer *tr, const char *phase, const double *losses, int nl, int k0, int k1) {
  for (int i = 0; i < nl; i++)
    if (!isfinite(losses[i]))
      return i2i_fail(tr->ctx, I2I_E_LIMIT, "the %s loss became %g at iteration %lld; the trainer keeps the state before it "
                      "(a lower learning rate may help)", phase, losses[i], (long long)tr->iteration);
  for (int k = k0; k <= k1; k++) {
    if (!tr->has[k]) continue;
    bool ok = true;
    i2i_status st = tr->be->all_finite(tr->self, tr->ctx, tr->net[k].grad, tr->net[k].n_floats, &ok);
    if (st) return st;
    if (!ok)
      return i2i_fail(tr->ctx, I2I_E_LIMIT, "the %s's gradient is not finite at iteration %lld; the trainer keeps the "
                      "state before it (a lower learning rate may help)", role_name(k), (long long)tr->iteration);
  }
  return I2I_OK;
}

static i2i_status adam(i2i_trainer *tr, int k, float lr) {
  return tr->be->adam(tr->self, tr->ctx, &tr->net[k], lr, tr->p.beta1, tr->p.beta2, tr->p.eps);
}

static i2i_status step_cyclegan(i2i_trainer *tr, i2i_train_report *r, float lr, bool *d_updated) {
  const i2i_train_backend_ops *be = tr->be;
  void *self = tr->self;
  i2i_ctx *ctx = tr->ctx;
  i2i_status st = I2I_OK;
  enum { G = I2I_NET_G, GR = I2I_NET_G_REV, D = I2I_NET_D, DR = I2I_NET_D_REV };
  size_t nimg = tr->img_floats * (size_t)tr->p.batch;
  float *s0 = tr->gslot[0], *s1 = tr->gslot[1], *s2 = tr->gslot[2], *sd = tr->dslot;
  /* generators forward: fake B = G(A), fake A = G_rev(B) */
  CK(be->copy(self, ctx, act_in(tr, G, s0), tr->real_a, nimg));
  CK(fwd(tr, G, s0));
  CK(be->copy(self, ctx, act_in(tr, GR, s1), tr->real_b, nimg));
  CK(fwd(tr, GR, s1));
  float *fake_b = act_out(tr, G, s0), *fake_a = act_out(tr, GR, s1);
  /* discriminators: 0.5 (MSE(D(pool(fake)), 0) + MSE(D(real), 1)) per domain, one update */
  CK(zero_grads(tr, D));
  CK(zero_grads(tr, DR));
  double lf, lr_;
  CK(pool_query(tr, 1, fake_b, act_in(tr, D, sd)));
  CK(fwd(tr, D, sd));
  CK(loss(tr, LOSS_MSE, act_out(tr, D, sd), NULL, 0.0f, out_numel(tr, D), 0.5f, grad_out(tr, D), false, &lf));
  CK(bwd(tr, D, sd, false, true));
  CK(be->copy(self, ctx, act_in(tr, D, sd), tr->real_b, nimg));
  CK(fwd(tr, D, sd));
  CK(loss(tr, LOSS_MSE, act_out(tr, D, sd), NULL, 1.0f, out_numel(tr, D), 0.5f, grad_out(tr, D), false, &lr_));
  CK(bwd(tr, D, sd, false, true));
  r->loss_d_b = lf + lr_;
  CK(pool_query(tr, 0, fake_a, act_in(tr, DR, sd)));
  CK(fwd(tr, DR, sd));
  CK(loss(tr, LOSS_MSE, act_out(tr, DR, sd), NULL, 0.0f, out_numel(tr, DR), 0.5f, grad_out(tr, DR), false, &lf));
  CK(bwd(tr, DR, sd, false, true));
  CK(be->copy(self, ctx, act_in(tr, DR, sd), tr->real_a, nimg));
  CK(fwd(tr, DR, sd));
  CK(loss(tr, LOSS_MSE, act_out(tr, DR, sd), NULL, 1.0f, out_numel(tr, DR), 0.5f, grad_out(tr, DR), false, &lr_));
  CK(bwd(tr, DR, sd, false, true));
  r->loss_d_a = lf + lr_;
  r->loss_d = r->loss_d_a + r->loss_d_b;
  double dl[2] = {r->loss_d_a, r->loss_d_b};
  CK(check_finite(tr, "discriminators'", dl, 2, D, DR));
  CK(snapshot_d(tr, D, false));
  CK(snapshot_d(tr, DR, false));
  *d_updated = true;
  CK(adam(tr, D, lr));
  CK(adam(tr, DR, lr));
  /* generators against the updated, frozen discriminators */
  CK(zero_grads(tr, G));
  CK(zero_grads(tr, GR));
  /* fake B: LSGAN through D, cycle A = G_rev(fake B), then back through G */
  CK(be->copy(self, ctx, act_in(tr, D, sd), fake_b, nimg));
  CK(fwd(tr, D, sd));
  CK(loss(tr, LOSS_MSE, act_out(tr, D, sd), NULL, 1.0f, out_numel(tr, D), 1.0f, grad_out(tr, D), false, &r->loss_gan_b));
  CK(bwd(tr, D, sd, true, false));
  CK(be->copy(self, ctx, tr->gfake, grad_in(tr, D), nimg));
  CK(be->copy(self, ctx, act_in(tr, GR, s2), fake_b, nimg));
  CK(fwd(tr, GR, s2));
  CK(loss(tr, LOSS_L1, act_out(tr, GR, s2), tr->real_a, 0, nimg, tr->p.lambda_cycle, grad_out(tr, GR), false,
          &r->loss_cycle_a));
  CK(bwd(tr, GR, s2, true, true));
  CK(be->copy_channels(self, ctx, tr->gfake, 1, 0, grad_in(tr, GR), 1, 0, 1, 1, nimg, true));
  CK(be->copy(self, ctx, grad_out(tr, G), tr->gfake, nimg));
  CK(bwd(tr, G, s0, false, true));
  /* fake A: the same through D_rev and G */
  CK(be->copy(self, ctx, act_in(tr, DR, sd), fake_a, nimg));
  CK(fwd(tr, DR, sd));
  CK(loss(tr, LOSS_MSE, act_out(tr, DR, sd), NULL, 1.0f, out_numel(tr, DR), 1.0f, grad_out(tr, DR), false,
          &r->loss_gan_a));
  CK(bwd(tr, DR, sd, true, false));
  CK(be->copy(self, ctx, tr->gfake, grad_in(tr, DR), nimg));
  CK(be->copy(self, ctx, act_in(tr, G, s2), fake_a, nimg));
  CK(fwd(tr, G, s2));
  CK(loss(tr, LOSS_L1, act_out(tr, G, s2), tr->real_b, 0, nimg, tr->p.lambda_cycle, grad_out(tr, G), false,
          &r->loss_cycle_b));
  CK(bwd(tr, G, s2, true, true));
  CK(be->copy_channels(self, ctx, tr->gfake, 1, 0, grad_in(tr, G), 1, 0, 1, 1, nimg, true));
  CK(be->copy(self, ctx, grad_out(tr, GR), tr->gfake, nimg));
  CK(bwd(tr, GR, s1, false, true));
  /* identity: G(B) ~ B, G_rev(A) ~ A */
  if (tr->p.lambda_identity > 0) {
    CK(be->copy(self, ctx, act_in(tr, G, s2), tr->real_b, nimg));
    CK(fwd(tr, G, s2));
    CK(loss(tr, LOSS_L1, act_out(tr, G, s2), tr->real_b, 0, nimg, tr->p.lambda_identity, grad_out(tr, G), false,
            &r->loss_id_b));
    CK(bwd(tr, G, s2, false, true));
    CK(be->copy(self, ctx, act_in(tr, GR, s2), tr->real_a, nimg));
    CK(fwd(tr, GR, s2));
    CK(loss(tr, LOSS_L1, act_out(tr, GR, s2), tr->real_a, 0, nimg, tr->p.lambda_identity, grad_out(tr, GR), false,
            &r->loss_id_a));
    CK(bwd(tr, GR, s2, false, true));
  }
  r->loss_g = r->loss_gan_a + r->loss_gan_b + r->loss_cycle_a + r->loss_cycle_b + r->loss_id_a + r->loss_id_b;
  double gl[1] = {r->loss_g};
  CK(check_finite(tr, "generators'", gl, 1, G, GR));
  CK(adam(tr, G, lr));
  CK(adam(tr, GR, lr));
fail:
  return st;
}

static i2i_status step_pix2pix(i2i_trainer *tr, i2i_train_report *r, float lr, bool *d_updated) {
  const i2i_train_backend_ops *be = tr->be;
  void *self = tr->self;
  i2i_ctx *ctx = tr->ctx;
  i2i_status st = I2I_OK;
  enum { G = I2I_NET_G, D = I2I_NET_D };
  int n = tr->p.batch;
  size_t hw = (size_t)tr->p.size * (size_t)tr->p.size, nimg = tr->img_floats * (size_t)n;
  float *sg = tr->gslot[0], *sd = tr->dslot, *din = act_in(tr, D, sd);
  CK(be->copy(self, ctx, act_in(tr, G, sg), tr->real_a, nimg));
  CK(fwd(tr, G, sg));
  float *fake = act_out(tr, G, sg);
  /* discriminator: 0.5 (BCE(D([src, fake]), 0) + BCE(D([src, real]), 1)) */
  CK(zero_grads(tr, D));
  CK(be->copy_channels(self, ctx, din, 6, 0, tr->real_a, 3, 0, 3, n, hw, false));
  CK(be->copy_channels(self, ctx, din, 6, 3, fake, 3, 0, 3, n, hw, false));
  CK(fwd(tr, D, sd));
  double lf, lr_;
  CK(loss(tr, LOSS_BCE, act_out(tr, D, sd), NULL, 0.0f, out_numel(tr, D), 0.5f, grad_out(tr, D), false, &lf));
  CK(bwd(tr, D, sd, false, true));
  CK(be->copy_channels(self, ctx, din, 6, 3, tr->real_b, 3, 0, 3, n, hw, false));
  CK(fwd(tr, D, sd));
  CK(loss(tr, LOSS_BCE, act_out(tr, D, sd), NULL, 1.0f, out_numel(tr, D), 0.5f, grad_out(tr, D), false, &lr_));
  CK(bwd(tr, D, sd, false, true));
  r->loss_d_fake = lf * 2.0;
  r->loss_d_real = lr_ * 2.0;
  r->loss_d = lf + lr_;
  CK(check_finite(tr, "discriminator's", &r->loss_d, 1, D, D));
  CK(snapshot_d(tr, D, false));
  *d_updated = true;
  CK(adam(tr, D, lr));
  /* generator: BCE(D([src, fake]), 1) + lambda L1(fake, real) */
  CK(zero_grads(tr, G));
  CK(be->copy_channels(self, ctx, din, 6, 3, fake, 3, 0, 3, n, hw, false));
  CK(fwd(tr, D, sd));
  CK(loss(tr, LOSS_BCE, act_out(tr, D, sd), NULL, 1.0f, out_numel(tr, D), 1.0f, grad_out(tr, D), false, &r->loss_gan));
  CK(bwd(tr, D, sd, true, false));
  CK(be->copy_channels(self, ctx, tr->gfake, 3, 0, grad_in(tr, D), 6, 3, 3, n, hw, false));
  CK(loss(tr, LOSS_L1, fake, tr->real_b, 0, nimg, tr->p.lambda_l1, tr->gfake, true, &r->loss_l1));
  CK(be->copy(self, ctx, grad_out(tr, G), tr->gfake, nimg));
  CK(bwd(tr, G, sg, false, true));
  r->loss_g = r->loss_gan + r->loss_l1;
  CK(check_finite(tr, "generator's", &r->loss_g, 1, G, G));
  CK(adam(tr, G, lr));
fail:
  return st;
}

i2i_status i2i_trainer_step(i2i_trainer *tr, i2i_train_report *report) {
  if (!tr) return I2I_E_ARG;
  i2i_ctx *ctx = tr->ctx;
  i2i_train_report r;
  memset(&r, 0, sizeof r);
  for (int i = 0; i < tr->p.batch; i++)
    if (!tr->img_set[i]) return i2i_fail(ctx, I2I_E_ARG, "image %d of the batch was not set for this step", i);
  i2i_clear_err(ctx);
  double t0 = now_s();
  r.iteration = tr->iteration;
  r.lr = i2i_trainer_lr(tr, tr->iteration);
  size_t nimg = tr->img_floats * (size_t)tr->p.batch;
  i2i_status st = tr->be->upload(tr->self, ctx, tr->real_a, tr->host_a, nimg);
  if (!st) st = tr->be->upload(tr->self, ctx, tr->real_b, tr->host_b, nimg);
  if (!st) st = snapshot_stats(tr, false);
  if (st) return st;
  for (int d = 0; d < 2; d++) {
    tr->pool[d].count_before = tr->pool[d].count;
    tr->pool[d].n_undo = 0;
  }
  bool d_updated = false;
  st = tr->p.kind == I2I_TRAIN_CYCLEGAN ? step_cyclegan(tr, &r, (float)r.lr, &d_updated)
                                        : step_pix2pix(tr, &r, (float)r.lr, &d_updated);
  if (st) {
    /* put back everything the step changed */
    char msg[I2I_ERRLEN];
    snprintf(msg, sizeof msg, "%s", ctx->err);
    if (d_updated)
      for (int k = 2; k < 4; k++)
        if (tr->has[k]) snapshot_d(tr, k, true);
    snapshot_stats(tr, true);
    pool_undo(tr);
    snprintf(ctx->err, sizeof ctx->err, "%s", msg);
    if (report) *report = r;
    return st;
  }
  for (int i = 0; i < tr->p.batch; i++) tr->img_set[i] = false;
  tr->iteration++;
  r.seconds = now_s() - t0;
  if (report) *report = r;
  return I2I_OK;
}

/* ---- models, inspection ------------------------------------------------------------------------ */

i2i_status trainer_sync_host(i2i_trainer *tr, int k) {
  i2i_tnet *n = &tr->net[k];
  if (n->param == n->m->weights) return I2I_OK;
  return tr->be->download(tr->self, tr->ctx, n->m->weights, n->param, n->n_floats);
}

const i2i_model *i2i_trainer_model(i2i_trainer *tr, int net) {
  if (!tr || net < 0 || net > 3 || !tr->has[net]) return NULL;
  if (trainer_sync_host(tr, net)) return NULL;
  /* a new identity for caches keyed by the model (uploaded weights, plans) */
  tr->net[net].m->serial = tr->serial_base | ((uint64_t)tr->iteration << 2) | (uint64_t)net;
  return tr->net[net].m;
}

size_t i2i_trainer_tensor_count(const i2i_trainer *tr, int net) {
  if (!tr || net < 0 || net > 3 || !tr->has[net]) return 0;
  return tr->n_tensors[net];
}

i2i_status i2i_trainer_tensor_info(const i2i_trainer *tr, int net, size_t i, const char **name, size_t *numel,
                                   int *trainable) {
  if (!tr) return I2I_E_ARG;
  if (net < 0 || net > 3 || !tr->has[net] || i >= tr->n_tensors[net])
    return i2i_fail(tr->ctx, I2I_E_ARG, "no tensor %zu in network %d", i, net);
  const train_tensor *t = &tr->tensors[net][i];
  if (name) *name = t->name;
  if (numel) *numel = t->numel;
  if (trainable) *trainable = t->trainable;
  return I2I_OK;
}

i2i_status i2i_trainer_read(i2i_trainer *tr, int net, const char *name, i2i_train_tensor what, float *dst, size_t numel) {
  if (!tr) return I2I_E_ARG;
  if (net < 0 || net > 3 || !tr->has[net] || !name || !dst)
    return i2i_fail(tr->ctx, I2I_E_ARG, "i2i_trainer_read: bad network %d or NULL argument", net);
  for (size_t i = 0; i < tr->n_tensors[net]; i++) {
    const train_tensor *t = &tr->tensors[net][i];
    if (strcmp(t->name, name)) continue;
    if (numel != t->numel) return i2i_fail(tr->ctx, I2I_E_ARG, "tensor '%s' has %zu values, not %zu", name, t->numel, numel);
    const i2i_tnet *n = &tr->net[net];
    const float *src = what == I2I_TENSOR_VALUE ? n->param : what == I2I_TENSOR_GRAD ? n->grad
                       : what == I2I_TENSOR_ADAM_M ? n->adam_m : n->adam_v;
    return tr->be->download(tr->self, tr->ctx, dst, src + t->off, numel);
  }
  return i2i_fail(tr->ctx, I2I_E_NOT_FOUND, "network %d has no trained tensor '%s'", net, name);
}

i2i_status i2i_trainer_set_meta(i2i_trainer *tr, const char *key, const char *value) {
  if (!tr || !key || !*key) return tr ? i2i_fail(tr->ctx, I2I_E_ARG, "i2i_trainer_set_meta: empty key") : I2I_E_ARG;
  for (int i = 0; i < tr->n_meta; i++) {
    if (strcmp(tr->meta[i].key, key)) continue;
    if (!value) {
      i2i_dealloc(tr->ctx, tr->meta[i].key);
      i2i_dealloc(tr->ctx, tr->meta[i].value);
      tr->meta[i] = tr->meta[--tr->n_meta];
      return I2I_OK;
    }
    char *v = i2i_strdup(tr->ctx, value);
    if (!v) return i2i_fail(tr->ctx, I2I_E_NOMEM, "out of memory");
    i2i_dealloc(tr->ctx, tr->meta[i].value);
    tr->meta[i].value = v;
    return I2I_OK;
  }
  if (!value) return I2I_OK;
  if (tr->n_meta >= 4096) return i2i_fail(tr->ctx, I2I_E_LIMIT, "too many trainer metadata entries");
  train_kv *nm = i2i_calloc(tr->ctx, (size_t)tr->n_meta + 1, sizeof *nm);
  char *k = i2i_strdup(tr->ctx, key), *v = i2i_strdup(tr->ctx, value);
  if (!nm || !k || !v) {
    i2i_dealloc(tr->ctx, nm);
    i2i_dealloc(tr->ctx, k);
    i2i_dealloc(tr->ctx, v);
    return i2i_fail(tr->ctx, I2I_E_NOMEM, "out of memory");
  }
  if (tr->n_meta) memcpy(nm, tr->meta, sizeof *nm * (size_t)tr->n_meta);
  i2i_dealloc(tr->ctx, tr->meta);
  tr->meta = nm;
  tr->meta[tr->n_meta++] = (train_kv){k, v};
  return I2I_OK;
}

const char *i2i_trainer_get_meta(const i2i_trainer *tr, const char *key) {
  if (!tr || !key) return NULL;
  for (int i = 0; i < tr->n_meta; i++)
    if (!strcmp(tr->meta[i].key, key)) return tr->meta[i].value;
  return NULL;
}

i2i_status i2i_trainer_export(i2i_trainer *tr, int net, const char *const *meta, const char *path) {
  if (!tr) return I2I_E_ARG;
  if (net < 0 || net > 3 || !tr->has[net] || !path) return i2i_fail(tr->ctx, I2I_E_ARG, "i2i_trainer_export: no network %d", net);
  i2i_ctx *ctx = tr->ctx;
  i2i_status st = trainer_sync_host(tr, net);
  if (st) return st;
  int n_meta = 0;
  while (meta && meta[2 * n_meta]) {
    if (!meta[2 * n_meta + 1] || n_meta > 256) return i2i_fail(ctx, I2I_E_ARG, "i2i_trainer_export: bad metadata list");
    n_meta++;
  }
  /* a private copy of the network carries the new metadata */
  void *data = NULL;
  size_t size = 0;
  i2i_model *copy = NULL;
  st = i2i_model_save_memory(ctx, tr->net[net].m, &data, &size);
  if (!st) st = i2i_model_load_memory(ctx, data, size, &copy);
  i2i_free(ctx, data);
  if (st) return st;
  i2i_graph *g = &copy->g;
  const char *prev = graph_meta(g, "i2i.finetuned_from");
  const char *task = graph_meta(g, "i2i.task");
  char *from = i2i_strdup(ctx, prev ? prev : task ? task : "");
  char iters[32];
  snprintf(iters, sizeof iters, "%lld", (long long)tr->iteration);
  if (!from) st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  if (!st && from[0]) st = graph_set_meta(ctx, g, "i2i.finetuned_from", from);
  if (!st) st = graph_set_meta(ctx, g, "i2i.finetune_iterations", iters);
  for (int i = 0; i < n_meta && !st; i++) st = graph_set_meta(ctx, g, meta[2 * i], meta[2 * i + 1]);
  if (!st) st = i2i_model_save(ctx, copy, path);
  i2i_dealloc(ctx, from);
  i2i_model_free(copy);
  return st;
}
