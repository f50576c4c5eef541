/* preview.c: the dialog's preview worker: whole-layer engine runs in a thread of their own.
 *
 * The model runs on the whole layer (so the statistics are OK's), first at a short side of 256,
 * then at the working resolution; full-size results are cached at strength 1, so strength only
 * re-blends. Newer requests cancel older renders via the progress callback; results reach the
 * main thread through its GMainContext. No GTK or GIMP calls; the drawable is never touched.
 */
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "i2i_plugin.h"

struct i2i_previewer {
  const float *input;
  int width, height;
  GMainContext *main_context;
  i2i_preview_notify notify;
  void *user;
  gint refs;           /* the owner plus every delivery in flight */
  gint dead;           /* set by i2i_previewer_free: deliveries only free their buffer */
  GThread *thread;
  GMutex lock;
  GCond cond;
  /* the request, under lock */
  bool have_req, quit;
  i2i_opts req;
  char *req_name;
  bool req_skip_fast;
  gint gen;            /* atomic: the newest request's number, read by the progress callback */
  gint progress_milli; /* atomic */
  gint busy;           /* atomic */
  /* main thread only */
  float *cache;
  i2i_stage cache_stage;
  i2i_opts cache_opts;
  char *cache_name;
  i2i_preview_event cache_ev; /* the event that delivered the cached result */
  /* worker only */
  i2i_ctx *ctx;
  int ctx_device;
  i2i_model *model;
  char *model_name;
};

typedef struct {
  i2i_previewer *p;
  int gen;
  float *buf;          /* owned until handed to the cache */
  i2i_opts opts;
  char *name;
  i2i_preview_event ev;
} delivery;

typedef struct {
  i2i_previewer *p;
  int gen;
} job_ref;

static void previewer_unref(i2i_previewer *p) {
  if (!g_atomic_int_dec_and_test(&p->refs)) return;
  g_free(p->cache);
  g_free(p->cache_name);
  g_free(p->req_name);
  g_mutex_clear(&p->lock);
  g_cond_clear(&p->cond);
  g_main_context_unref(p->main_context);
  g_free(p);
}

/* Same render: everything but strength and the memory budget (tiling does not change results). */
static bool same_render(const i2i_opts *a, const char *an, const i2i_opts *b, const char *bn) {
  return an && bn && !strcmp(an, bn) && a->device == b->device && a->seed == b->seed &&
         a->pix2pix_mode == b->pix2pix_mode && a->scale == b->scale;
}

static gboolean deliver_cb(gpointer data) {
  delivery *d = data;
  i2i_previewer *p = d->p;
  if (g_atomic_int_get(&p->dead) || d->gen != g_atomic_int_get(&p->gen)) return G_SOURCE_REMOVE;
  if (d->ev.ok) {
    g_free(p->cache);
    p->cache = d->buf;
    d->buf = NULL;
    p->cache_stage = d->ev.stage;
    p->cache_opts = d->opts;
    g_free(p->cache_name);
    p->cache_name = d->name;
    d->name = NULL;
    p->cache_ev = d->ev;
  } else {
    /* no stale result of other options on show next to an error */
    g_free(p->cache);
    p->cache = NULL;
    p->cache_stage = I2I_STAGE_NONE;
  }
  if (p->notify) p->notify(p->user, &d->ev);
  return G_SOURCE_REMOVE;
}

static void delivery_free(gpointer data) {
  delivery *d = data;
  g_free(d->buf);
  g_free(d->name);
  previewer_unref(d->p);
  g_free(d);
}

static void post(i2i_previewer *p, int gen, float *buf, const i2i_opts *o, const char *name, i2i_stage stage,
                 bool ok, const char *msg, const char *detail) {
  delivery *d = g_new0(delivery, 1);
  g_atomic_int_inc(&p->refs);
  d->p = p;
  d->gen = gen;
  d->buf = buf;
  d->opts = *o;
  d->name = g_strdup(name);
  d->ev.stage = stage;
  d->ev.ok = ok;
  g_strlcpy(d->ev.message, msg ? msg : "", sizeof d->ev.message);
  g_strlcpy(d->ev.detail, detail ? detail : "", sizeof d->ev.detail);
  g_main_context_invoke_full(p->main_context, G_PRIORITY_DEFAULT, deliver_cb, d, delivery_free);
}

static int progress_cb(void *user, double f) {
  job_ref *j = user;
  g_atomic_int_set(&j->p->progress_milli, (int)(f * 1000));
  return g_atomic_int_get(&j->p->gen) != j->gen || g_atomic_int_get(&j->p->dead);
}

/* Makes sure the worker's context and model fit the request; false with *err otherwise. */
static bool prepare(i2i_previewer *p, const i2i_opts *o, const char *name, char **err) {
  if (!p->ctx || p->ctx_device != o->device) {
    i2i_model_free(p->model);
    p->model = NULL;
    g_free(p->model_name);
    p->model_name = NULL;
    i2i_ctx_free(p->ctx);
    p->ctx = i2i_ctx_for(o, err);
    if (!p->ctx) return false;
    p->ctx_device = o->device;
  }
  i2i_ctx_set_memory_budget(p->ctx, (uint64_t)(o->memory_mb > 0 ? o->memory_mb : 0) << 20);
  if (!p->model || strcmp(p->model_name, name)) {
    i2i_model_free(p->model);
    g_free(p->model_name);
    p->model_name = NULL;
    p->model = i2i_model_open(p->ctx, name, NULL, err);
    if (!p->model) return false;
    p->model_name = g_strdup(name);
  }
  return true;
}

static void render(i2i_previewer *p, const i2i_opts *o, const char *name, int gen, bool skip_fast) {
  char *err = NULL;
  if (!prepare(p, o, name, &err)) {
    post(p, gen, NULL, o, name, I2I_STAGE_EXACT, false, err, NULL);
    g_free(err);
    return;
  }
  size_t bytes;
  if (!i2i_rgba_bytes((size_t)p->width, (size_t)p->height, &bytes)) {
    post(p, gen, NULL, o, name, I2I_STAGE_EXACT, false, "i2i: the layer is too large to preview", NULL);
    return;
  }
  int shortside = p->width < p->height ? p->width : p->height;
  bool fast = !skip_fast && (o->scale == 0 || o->scale > I2I_FAST_SCALE) && shortside > I2I_FAST_SCALE;
  for (int s = fast ? 0 : 1; s < 2; s++) {
    i2i_stage stage = s == 0 ? I2I_STAGE_FAST : I2I_STAGE_EXACT;
    float *out = g_try_malloc(bytes);
    if (!out) {
      char *m = g_strdup_printf("i2i: not enough memory for the preview (%.0f MiB); OK still works",
                                bytes / 1048576.0);
      post(p, gen, NULL, o, name, stage, false, m, NULL);
      g_free(m);
      return;
    }
    i2i_run_params rp;
    i2i_run_params_for(o, 1.0, s == 0 ? I2I_FAST_SCALE : o->scale, &rp);
    job_ref j = {p, gen};
    rp.progress = progress_cb;
    rp.progress_user = &j;
    g_atomic_int_set(&p->progress_milli, 0);
    i2i_run_report rep;
    double cpu0 = i2i_cpu_seconds();
    const float *ins[1] = {p->input};
    float *outs[1] = {out};
    i2i_status st = i2i_run(p->ctx, p->model, &rp, 1, p->width, p->height, ins, outs, &rep);
    if (st == I2I_E_CANCELLED || g_atomic_int_get(&p->gen) != gen) {
      g_free(out);
      i2i_vlog("preview %s render cancelled", stage == I2I_STAGE_FAST ? "fast" : "exact");
      return;
    }
    if (st) {
      char *m = g_strdup_printf("i2i: %s", i2i_ctx_errmsg(p->ctx));
      g_free(out);
      post(p, gen, NULL, o, name, stage, false, m, NULL);
      g_free(m);
      return;
    }
    /* the reason for the device, shortened to its first clause; the whole of it as detail */
    size_t why = strcspn(rep.message, "(;");
    while (why > 0 && rep.message[why - 1] == ' ') why--;
    char *m = g_strdup_printf("%s: %s, %.2f s (model at %dx%d)%s%.*s",
                              stage == I2I_STAGE_FAST ? "Fast preview" : "Preview",
                              rep.backend == I2I_BACKEND_CUDA ? "GPU (CUDA)" : "CPU", rep.seconds,
                              rep.run_width, rep.run_height, why ? "; " : "", (int)why, rep.message);
    i2i_vlog("preview %s ready: %s [%s] [process CPU %.2f s]", stage == I2I_STAGE_FAST ? "fast" : "exact", m,
             rep.message, i2i_cpu_seconds() - cpu0);
    post(p, gen, out, o, name, stage, true, m, rep.message);
    g_free(m);
  }
}

static gpointer worker(gpointer data) {
  i2i_previewer *p = data;
#ifdef __linux__
  /* A lower priority for the worker (and the OpenMP threads it starts) keeps the dialog quick
   * on machines with few cores. Failure is harmless. */
  (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 5);
#endif
  for (;;) {
    g_mutex_lock(&p->lock);
    while (!p->quit && !p->have_req) g_cond_wait(&p->cond, &p->lock);
    if (p->quit) {
      g_mutex_unlock(&p->lock);
      break;
    }
    i2i_opts o = p->req;
    char *name = g_strdup(p->req_name);
    bool skip_fast = p->req_skip_fast;
    int gen = g_atomic_int_get(&p->gen);
    p->have_req = false;
    g_atomic_int_set(&p->busy, 1);
    g_mutex_unlock(&p->lock);
    render(p, &o, name, gen, skip_fast);
    g_free(name);
    g_mutex_lock(&p->lock);
    g_atomic_int_set(&p->busy, 0);
    g_mutex_unlock(&p->lock);
  }
  i2i_model_free(p->model);
  g_free(p->model_name);
  i2i_ctx_free(p->ctx);
  p->model = NULL;
  p->ctx = NULL;
  return NULL;
}

i2i_previewer *i2i_previewer_new(const float *input, int width, int height, GMainContext *main_context,
                                 i2i_preview_notify notify, void *user) {
  i2i_previewer *p = g_new0(i2i_previewer, 1);
  p->input = input;
  p->width = width;
  p->height = height;
  p->main_context = g_main_context_ref(main_context ? main_context : g_main_context_default());
  p->notify = notify;
  p->user = user;
  p->refs = 1;
  g_mutex_init(&p->lock);
  g_cond_init(&p->cond);
  GError *e = NULL;
  p->thread = g_thread_try_new("i2i-preview", worker, p, &e);
  if (!p->thread) {
    g_clear_error(&e);
    previewer_unref(p);
    return NULL;
  }
  return p;
}

bool i2i_previewer_request(i2i_previewer *p, const i2i_opts *o, const char *name) {
  if (!p) return false;
  if (p->cache && p->cache_stage == I2I_STAGE_EXACT && same_render(o, name, &p->cache_opts, p->cache_name)) {
    /* nothing to compute; a render for other options in flight is stale now, and so is a
     * request still queued (the worker would otherwise render it under the new generation).
     * The cached result's event is delivered again, since the stale render posts none. */
    g_mutex_lock(&p->lock);
    p->have_req = false;
    g_atomic_int_inc(&p->gen);
    g_mutex_unlock(&p->lock);
    if (p->notify) p->notify(p->user, &p->cache_ev);
    return true;
  }
  g_mutex_lock(&p->lock);
  p->req = *o;
  g_free(p->req_name);
  p->req_name = g_strdup(name);
  p->req_skip_fast = p->cache && p->cache_stage == I2I_STAGE_FAST &&
                     same_render(o, name, &p->cache_opts, p->cache_name);
  p->have_req = true;
  g_atomic_int_inc(&p->gen);
  g_cond_signal(&p->cond);
  g_mutex_unlock(&p->lock);
  return false;
}

const float *i2i_previewer_result(i2i_previewer *p, i2i_stage *stage) {
  if (stage) *stage = p && p->cache ? p->cache_stage : I2I_STAGE_NONE;
  return p ? p->cache : NULL;
}

double i2i_previewer_progress(i2i_previewer *p, bool *busy) {
  if (!p) {
    if (busy) *busy = false;
    return 0;
  }
  if (busy) {
    g_mutex_lock(&p->lock);
    *busy = g_atomic_int_get(&p->busy) || p->have_req;
    g_mutex_unlock(&p->lock);
  }
  return g_atomic_int_get(&p->progress_milli) / 1000.0;
}

float *i2i_previewer_take_exact(i2i_previewer *p, const i2i_opts *o, const char *name) {
  if (!p || !p->cache || p->cache_stage != I2I_STAGE_EXACT || !same_render(o, name, &p->cache_opts, p->cache_name))
    return NULL;
  float *r = p->cache;
  p->cache = NULL;
  p->cache_stage = I2I_STAGE_NONE;
  return r;
}

void i2i_previewer_free(i2i_previewer *p) {
  if (!p) return;
  g_atomic_int_set(&p->dead, 1);
  g_mutex_lock(&p->lock);
  p->quit = true;
  g_atomic_int_inc(&p->gen);
  g_cond_signal(&p->cond);
  g_mutex_unlock(&p->lock);
  g_thread_join(p->thread);
  previewer_unref(p);
}
