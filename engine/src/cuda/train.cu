/* cuda/train.cu: the CUDA training backend: the training backend table of internal.h on the
 * device, for the step logic of engine/src/train/trainer.c.
 *
 * Float32 NCHW throughout (cuDNN convolutions on TF32 tensor cores by default, CUDNN_FMA_MATH
 * with I2I_CUDA_TF32=0), laid out exactly as the CPU backend lays out its host memory: the
 * trainer's slots, gradient arena and flat parameter buffers are device buffers here, walked
 * with the same training plan (i2i_tplan). A
 * convolution's fused Pad is materialised into a padded buffer when cuDNN cannot express it
 * (reflect, edge or asymmetric); its backward scatters the padded gradient back
 * (kt_pad_backward). ConvTranspose is cuDNN's backward data, its input gradient a forward
 * convolution and its weight gradient a backward filter with the roles swapped. Per network,
 * the convolution descriptors, algorithms (the on-disk cache, else a timed search on scratch
 * buffers) and the padded and workspace buffers are made at its first pass and kept: a step
 * allocates nothing. A pass (one network's forward or backward over given buffers) seen a second
 * time is captured as a CUDA graph and replayed from then on: one launch instead of hundreds
 * (I2I_CUDA_GRAPH=0 keeps launching kernel by kernel; a failed capture does too). Errors go
 * through cu_finish: a sticky fault disables the GPU for the process, anything else is
 * I2I_E_DEVICE / I2I_E_DEVICE_NOMEM with cuDNN's or CUDA's text.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_priv.h"

typedef struct {
  float *p;
  size_t bytes;
} talloc;

typedef struct {
  struct dnn_conv *fwd, *bdata, *wgrad;
  int explicit_pad; /* the input goes through the padded buffer */
} tconv;

#define T_MAX_NETS 8

typedef struct {
  const i2i_tnet *net;
  int n, h, w;
  tconv *conv; /* per plan step */
  int n_steps;
  int dropout; /* a Dropout step with a nonzero ratio: its passes read the dropout key */
} tnet_dev;

/* One pass of a network: what a captured graph is replayed for. Everything else a pass touches
 * is fixed for the trainer's life (the network's parameters and gradients, descriptors) or is a
 * shared buffer whose change drops every graph (graphs_drop). */
typedef struct {
  const i2i_tnet *net;
  tnet_dev *d;
  float *arena, *grads; /* grads NULL for a forward pass */
  int backward, want_dx, param_grads;
} tpass;

typedef struct {
  tpass pass;
  const float *param, *grad; /* the network's buffers when it was captured */
  int uses;                  /* eager runs so far (the first warms up: modules, cuDNN) */
  cudaGraphExec_t exec;
} tgraph;

#define T_MAX_GRAPHS 48

typedef struct cu_train {
  cu_backend *B;
  talloc *allocs;
  int n_allocs, cap_allocs;
  tnet_dev nets[T_MAX_NETS];
  int n_nets;
  void *ws;
  size_t ws_bytes;
  float *pad, *dpad; /* padded input and its gradient */
  size_t pad_floats;
  float *nk; /* normalisation backward constants, 5 per group */
  size_t nk_floats;
  double *part; /* loss partial sums (KT_LOSS_BLOCKS) */
  int *flag;
  uint64_t *key; /* the dropout key (seed, step) passes read on the device (kt_set_key) */
  tgraph graphs[T_MAX_GRAPHS];
  int n_graphs;
  int graphs_off; /* a capture failed: passes launch kernel by kernel from then on */
  long replays;
  struct tprof *prof; /* I2I_PROFILE: GPU time per kind of work */
  int shape[3];       /* the layer being profiled (prof_layer) */
} cu_train;

/* ---- I2I_PROFILE: where a training step's GPU time goes ---------------------------------------- */

/* An event is recorded after each piece of work, tagged with its kind; the time from the event
 * before it is that kind's. TP_IDLE is time the GPU waited between backend calls (host work,
 * launches, the synchronisations that read losses back); TP_SETUP a network's first pass
 * setup (buffers, algorithm search). Logged when the trainer ends. */
enum { TP_IDLE = 0, TP_SETUP, TP_CONV, TP_CONVT, TP_BDATA, TP_WGRAD, TP_NORM, TP_NORM_BWD, TP_PAD, TP_ELEM, TP_LOSS, TP_ADAM,
       TP_COPY, TP_COUNT };
#define TP_MARKS 4096

#define TP_SHAPES 256

/* A layer's shape as the detailed profile groups it: input and output channels, output height. */
typedef struct {
  int kind, xc, yc, yh;
  double ms;
  long count;
} tp_shape;

struct tprof {
  cudaEvent_t ev[TP_MARKS];
  int kind[TP_MARKS];
  int shape[TP_MARKS][3]; /* T->shape when the mark was made */
  int n;
  double ms[TP_COUNT];
  long count[TP_COUNT];
  int detail;             /* I2I_PROFILE=2: also per kind and layer shape */
  tp_shape shapes[TP_SHAPES];
  int n_shapes;
  i2i_ctx *ctx; /* the last caller's context, for the report */
};

/* Adds one interval to its (kind, shape) row; intervals past TP_SHAPES rows go uncounted there. */
static void prof_shape_add(struct tprof *P, int kind, const int sh[3], double ms) {
  int i = 0;
  while (i < P->n_shapes && !(P->shapes[i].kind == kind && P->shapes[i].xc == sh[0] && P->shapes[i].yc == sh[1] &&
                              P->shapes[i].yh == sh[2]))
    i++;
  if (i == TP_SHAPES) return;
  if (i == P->n_shapes) P->shapes[P->n_shapes++] = {kind, sh[0], sh[1], sh[2], 0.0, 0};
  P->shapes[i].ms += ms;
  P->shapes[i].count++;
}

/* Adds the recorded intervals up, keeping the last event as the next interval's start. */
static void prof_flush(struct tprof *P) {
  if (P->n < 2 || cudaEventSynchronize(P->ev[P->n - 1]) != cudaSuccess) return;
  for (int i = 1; i < P->n; i++) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, P->ev[i - 1], P->ev[i]) == cudaSuccess) {
      P->ms[P->kind[i]] += ms;
      P->count[P->kind[i]]++;
      if (P->detail) prof_shape_add(P, P->kind[i], P->shape[i], ms);
    }
  }
  cudaEvent_t last = P->ev[P->n - 1];
  P->ev[P->n - 1] = P->ev[0];
  P->ev[0] = last;
  P->n = 1;
}

/* Marks the end of a piece of work of `kind` on the stream (nothing without I2I_PROFILE). */
static void prof_mark(cu_train *T, int kind) {
  struct tprof *P = T->prof;
  if (!P) return;
  if (P->n == TP_MARKS) prof_flush(P);
  if (P->n == TP_MARKS || cudaEventRecord(P->ev[P->n], T->B->stream) != cudaSuccess) return;
  memcpy(P->shape[P->n], T->shape, sizeof T->shape);
  P->kind[P->n++] = kind;
}

/* The layer the next marks belong to (the detailed profile's rows; zeros outside layers). */
static void prof_layer(cu_train *T, int xc, int yc, int yh) {
  T->shape[0] = xc;
  T->shape[1] = yc;
  T->shape[2] = yh;
}

/* The start of a backend call: the GPU's wait since the last mark is idle time. */
static void prof_enter(cu_train *T, i2i_ctx *ctx) {
  if (!T->prof) return;
  T->prof->ctx = ctx;
  prof_layer(T, 0, 0, 0);
  prof_mark(T, TP_IDLE);
}

static void prof_report(cu_train *T) {
  struct tprof *P = T->prof;
  static const char *const names[TP_COUNT] = {"GPU idle", "setup, search", "Conv", "ConvTranspose", "data gradient", "weight gradient",
                                              "norm", "norm backward", "pad", "elementwise", "loss", "Adam", "copy"};
  prof_flush(P);
  double tot = 0;
  for (int k = 0; k < TP_COUNT; k++) tot += P->ms[k];
  if (P->ctx)
    for (int k = 0; k < TP_COUNT; k++)
      if (P->count[k])
        T->B->host->log(P->ctx, I2I_LOG_WARNING, "train profile (cuda): %-16s %10.2f ms %5.1f%% in %ld pieces", names[k],
                        P->ms[k], 100.0 * P->ms[k] / (tot > 0 ? tot : 1), P->count[k]);
  if (P->ctx) T->B->host->log(P->ctx, I2I_LOG_WARNING, "train profile (cuda): total %.2f ms of GPU time", tot);
  for (int r = 0; r < 40 && P->ctx; r++) { /* the detailed rows, largest first */
    int best = -1;
    for (int i = 0; i < P->n_shapes; i++)
      if (P->shapes[i].count && (best < 0 || P->shapes[i].ms > P->shapes[best].ms)) best = i;
    if (best < 0) break;
    const tp_shape *q = &P->shapes[best];
    T->B->host->log(P->ctx, I2I_LOG_WARNING, "train profile (cuda): %-16s %4d -> %4d ch at %4d rows %9.2f ms %5ld x %8.1f us",
                    names[q->kind], q->xc, q->yc, q->yh, q->ms, q->count, 1000.0 * q->ms / (double)q->count);
    P->shapes[best].count = 0;
  }
}

static void prof_free(cu_train *T) {
  if (!T->prof) return;
  for (int i = 0; i < TP_MARKS; i++)
    if (T->prof->ev[i]) cudaEventDestroy(T->prof->ev[i]);
  free(T->prof);
  T->prof = NULL;
}

/* With I2I_PROFILE set (B->profile): the events (no profile when they cannot be made). */
static void prof_open(cu_train *T) {
  if (!T->B->profile) return;
  T->prof = (struct tprof *)calloc(1, sizeof *T->prof);
  if (!T->prof) return;
  const char *lv = getenv("I2I_PROFILE");
  T->prof->detail = lv && atoi(lv) >= 2;
  for (int i = 0; i < TP_MARKS; i++)
    if (cudaEventCreate(&T->prof->ev[i]) != cudaSuccess) {
      prof_free(T);
      return;
    }
}

static kview plain(const float *p, shape4 s) {
  kview v;
  memset(&v, 0, sizeof v);
  v.p = (void *)p;
  v.n = (int)s.n;
  v.c = v.cs = (int)s.c;
  v.h = v.hs = (int)s.h;
  v.w = v.ws = (int)s.w;
  return v;
}

static size_t numel(shape4 s) { return (size_t)s.n * (size_t)s.c * (size_t)s.h * (size_t)s.w; }

/* ---- memory -------------------------------------------------------------------------------------- */

static void dev_free(cu_train *T, float *p) {
  if (!p) return;
  for (int i = 0; i < T->n_allocs; i++)
    if (T->allocs[i].p == p) {
      cu_free(T->B, p, T->allocs[i].bytes);
      T->allocs[i] = T->allocs[--T->n_allocs];
      return;
    }
}

static int dev_alloc(cu_train *T, float **out, size_t floats, const char *what) {
  *out = NULL;
  size_t bytes;
  if (!i2i_mul_ok(floats ? floats : 1, sizeof(float), &bytes)) return cu_fail(T->B, CE_OOM, "%s: size overflow", what);
  if (T->n_allocs == T->cap_allocs) {
    int cap = T->cap_allocs ? 2 * T->cap_allocs : 64;
    talloc *a = (talloc *)realloc(T->allocs, (size_t)cap * sizeof *a);
    if (!a) return cu_fail(T->B, CE_HOSTMEM, "out of host memory");
    T->allocs = a;
    T->cap_allocs = cap;
  }
  void *p = NULL;
  int k = cu_malloc(T->B, &p, bytes, what);
  if (k == CE_OOM) { /* the inference caches may hold the memory: free them and try once more */
    cu_free_caches(T->B);
    k = cu_malloc(T->B, &p, bytes, what);
  }
  if (k) return k;
  T->allocs[T->n_allocs++] = {(float *)p, bytes};
  cudaError_t e = cudaMemsetAsync(p, 0, bytes, T->B->stream);
  if (e) {
    dev_free(T, (float *)p);
    return cu_fail_cuda(T->B, e, "zeroing device memory");
  }
  *out = (float *)p;
  return CE_OK;
}

/* Destroys every captured pass: a buffer the graphs wrote into (workspace, padded buffers, norm
 * constants) was replaced. */
static void graphs_drop(cu_train *T) {
  for (int i = 0; i < T->n_graphs; i++)
    if (T->graphs[i].exec) cudaGraphExecDestroy(T->graphs[i].exec);
  T->n_graphs = 0;
}

static float *t_alloc(void *self, i2i_ctx *ctx, size_t floats) {
  cu_train *T = (cu_train *)self;
  if (cu_begin(T->B, ctx)) return NULL;
  float *p;
  int k = dev_alloc(T, &p, floats, "training buffers");
  if (!k) {
    cudaError_t e = cudaStreamSynchronize(T->B->stream);
    if (e) k = cu_fail_cuda(T->B, e, "zeroing device memory");
  }
  if (k) {
    dev_free(T, p);
    cu_finish(T->B, ctx, k);
    return NULL;
  }
  return p;
}

static void t_free(void *self, i2i_ctx *ctx, float *p) {
  (void)ctx;
  dev_free((cu_train *)self, p);
}

static i2i_status t_memcpy(cu_train *T, i2i_ctx *ctx, void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                           const char *what) {
  i2i_status st = cu_begin(T->B, ctx);
  if (st || !n) return st;
  prof_enter(T, ctx);
  cudaError_t e = cudaMemcpyAsync(dst, src, n * sizeof(float), kind, T->B->stream);
  prof_mark(T, TP_COPY);
  if (!e) e = cudaStreamSynchronize(T->B->stream);
  return cu_finish(T->B, ctx, e ? cu_fail_cuda(T->B, e, what) : CE_OK);
}

static i2i_status t_upload(void *self, i2i_ctx *ctx, float *dst, const float *host, size_t n) {
  return t_memcpy((cu_train *)self, ctx, dst, host, n, cudaMemcpyHostToDevice, "upload to the GPU");
}

static i2i_status t_download(void *self, i2i_ctx *ctx, float *host, const float *src, size_t n) {
  return t_memcpy((cu_train *)self, ctx, host, src, n, cudaMemcpyDeviceToHost, "download from the GPU");
}

static i2i_status t_copy(void *self, i2i_ctx *ctx, float *dst, const float *src, size_t n) {
  cu_train *T = (cu_train *)self;
  i2i_status st = cu_begin(T->B, ctx);
  if (st || !n || dst == src) return st;
  prof_enter(T, ctx);
  cudaError_t e = cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, T->B->stream);
  prof_mark(T, TP_COPY);
  return cu_finish(T->B, ctx, e ? cu_fail_cuda(T->B, e, "copy on the GPU") : CE_OK);
}

static i2i_status t_fill(void *self, i2i_ctx *ctx, float *dst, float v, size_t n) {
  cu_train *T = (cu_train *)self;
  i2i_status st = cu_begin(T->B, ctx);
  if (st) return st;
  prof_enter(T, ctx);
  cudaError_t e = kt_fill(T->B->stream, dst, v, (int64_t)n);
  prof_mark(T, TP_COPY);
  return cu_finish(T->B, ctx, e ? cu_fail_cuda(T->B, e, "fill") : CE_OK);
}

static i2i_status t_copy_channels(void *self, i2i_ctx *ctx, float *dst, int dst_c, int dst_c0, const float *src,
                                  int src_c, int src_c0, int nc, int n, size_t hw, bool accumulate) {
  cu_train *T = (cu_train *)self;
  i2i_status st = cu_begin(T->B, ctx);
  if (st) return st;
  prof_enter(T, ctx);
  cudaError_t e = kt_copy_channels(T->B->stream, dst, dst_c, dst_c0, src, src_c, src_c0, nc, n, (int64_t)hw, accumulate);
  prof_mark(T, TP_COPY);
  return cu_finish(T->B, ctx, e ? cu_fail_cuda(T->B, e, "channel copy") : CE_OK);
}

/* ---- per-network setup: descriptors, algorithms, buffers ------------------------------------------ */

static conv_geom_d geom(int transpose, int wgrad, int n, shape4 i, shape4 o, const i2i_node *nd, int ph, int pw) {
  conv_geom_d g;
  memset(&g, 0, sizeof g);
  g.transpose = transpose;
  g.wgrad = wgrad;
  g.n = n;
  g.xc = (int)i.c;
  g.xh = (int)i.h;
  g.xw = (int)i.w;
  g.yc = (int)o.c;
  g.yh = (int)o.h;
  g.yw = (int)o.w;
  g.kh = nd->conv.kernel[0];
  g.kw = nd->conv.kernel[1];
  g.pad_h = ph;
  g.pad_w = pw;
  g.str_h = nd->conv.stride[0];
  g.str_w = nd->conv.stride[1];
  g.dil_h = g.dil_w = 1;
  return g;
}

static int make_conv(cu_backend *B, conv_geom_d g, struct dnn_conv **out) {
  g.tf32 = B->train_tf32;
  return dnn_conv_create(B, &g, out);
}

static shape4 padded(shape4 s, const int p[4]) {
  shape4 r = s;
  r.h += p[0] + p[2];
  r.w += p[1] + p[3];
  return r;
}

static void net_release(cu_train *T, tnet_dev *d) {
  for (int k = 0; k < d->n_steps && d->conv; k++) {
    dnn_conv_free(d->conv[k].fwd);
    dnn_conv_free(d->conv[k].bdata);
    dnn_conv_free(d->conv[k].wgrad);
  }
  free(d->conv);
  memset(d, 0, sizeof *d);
}

/* The convolutions' descriptors and algorithms of one network, and the shared buffers grown to
 * what it needs. Algorithms are searched on scratch buffers, never on the trainer's. */
static int net_setup(cu_train *T, const i2i_tnet *net, tnet_dev *d) {
  cu_backend *B = T->B;
  const i2i_tplan *p = &net->plan;
  const i2i_graph *g = &net->m->g;
  d->net = net;
  d->n = p->n;
  d->h = p->h;
  d->w = p->w;
  d->n_steps = p->n_steps;
  d->conv = (tconv *)calloc((size_t)p->n_steps, sizeof *d->conv);
  if (!d->conv) return cu_fail(B, CE_HOSTMEM, "out of host memory");
  size_t pad_need = 0, nk_need = 0, io_need = 0;
  for (int k = 0; k < p->n_steps; k++) {
    const i2i_tstep *s = &p->steps[k];
    const i2i_node *nd = &g->nodes[s->node];
    shape4 xs = p->shape[s->in[0]], ys = p->shape[s->out];
    if (s->op == OP_INSTNORM || s->op == OP_BATCHNORM) {
      size_t groups = tstep_norm_groups(s, xs);
      if (5 * groups > nk_need) nk_need = 5 * groups;
    }
    if (s->op == OP_PAD && numel(ys) > io_need) io_need = numel(ys);
    if (s->op == OP_DROPOUT && nd->ratio > 0) d->dropout = 1;
    if (s->op != OP_CONV && s->op != OP_CONVT) continue;
    tconv *c = &d->conv[k];
    int sym = s->pads[0] == s->pads[2] && s->pads[1] == s->pads[3];
    if (s->op == OP_CONVT) {
      if (!sym) return cu_fail(B, CE_UNSUPPORTED, "node '%s': ConvTranspose with asymmetric pads", nd->name);
      /* the forward-orientation convolution maps the ConvTranspose's output to its input */
      CU_OK(make_conv(B, geom(1, 0, p->n, xs, ys, nd, s->pads[0], s->pads[1]), &c->fwd));
      CU_OK(make_conv(B, geom(0, 0, p->n, ys, xs, nd, s->pads[0], s->pads[1]), &c->bdata));
      CU_OK(make_conv(B, geom(0, 1, p->n, ys, xs, nd, s->pads[0], s->pads[1]), &c->wgrad));
    } else {
      int any = s->pads[0] | s->pads[1] | s->pads[2] | s->pads[3];
      c->explicit_pad = any && (s->pad_mode != PAD_CONSTANT || !sym);
      shape4 is = c->explicit_pad ? padded(xs, s->pads) : xs;
      int ph = c->explicit_pad ? 0 : s->pads[0], pw = c->explicit_pad ? 0 : s->pads[1];
      if (c->explicit_pad && numel(is) > pad_need) pad_need = numel(is);
      CU_OK(make_conv(B, geom(0, 0, p->n, is, ys, nd, ph, pw), &c->fwd));
      CU_OK(make_conv(B, geom(1, 0, p->n, ys, is, nd, ph, pw), &c->bdata));
      CU_OK(make_conv(B, geom(0, 1, p->n, is, ys, nd, ph, pw), &c->wgrad));
      if (numel(is) > io_need) io_need = numel(is);
    }
    if (numel(xs) > io_need) io_need = numel(xs);
    if (numel(ys) > io_need) io_need = numel(ys);
    size_t wn = (size_t)(s->op == OP_CONVT ? xs.c * ys.c : ys.c * xs.c) * (size_t)nd->conv.kernel[0] *
                (size_t)nd->conv.kernel[1];
    if (wn > io_need) io_need = wn;
  }
  if (pad_need > T->pad_floats || nk_need > T->nk_floats) graphs_drop(T);
  if (pad_need > T->pad_floats) {
    dev_free(T, T->pad);
    dev_free(T, T->dpad);
    T->pad = T->dpad = NULL;
    T->pad_floats = 0;
    CU_OK(dev_alloc(T, &T->pad, pad_need, "padded convolution input"));
    CU_OK(dev_alloc(T, &T->dpad, pad_need, "padded convolution gradient"));
    T->pad_floats = pad_need;
  }
  if (nk_need > T->nk_floats) {
    dev_free(T, T->nk);
    T->nk = NULL;
    T->nk_floats = 0;
    CU_OK(dev_alloc(T, &T->nk, nk_need, "normalisation backward constants"));
    T->nk_floats = nk_need;
  }
  /* algorithms: timed searches on two scratch tensors and a scratch filter (pseudo-random
   * values), within the search workspace cap, as plan.cu does for inference */
  float *sa = NULL, *sb = NULL, *sw = NULL;
  int rc = dev_alloc(T, &sa, io_need, "algorithm search buffers");
  if (!rc) rc = dev_alloc(T, &sb, io_need, "algorithm search buffers");
  if (!rc) rc = dev_alloc(T, &sw, io_need, "algorithm search buffers");
  for (float *q : {sa, sb, sw}) { /* real-looking data: zeros can time faster */
    cudaError_t e = rc ? cudaSuccess : kt_fill_noise(B->stream, q, (int64_t)io_need);
    if (e) rc = cu_fail_cuda(B, e, "filling the algorithm search buffers");
  }
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) free_b = 0;
  cudaGetLastError();
  size_t limit = B->search_ws_limit;
  if (free_b / 2 < limit) limit = free_b / 2;
  limit &= ~(size_t)255;
  void *sws = NULL;
  if (!rc && !B->heuristic_only && limit >= (1u << 20) && cu_malloc(B, &sws, limit, "algorithm search workspace")) {
    sws = NULL;
    B->err.kind = CE_OK;
    cudaGetLastError();
  }
  size_t ws = T->ws_bytes;
  for (int k = 0; k < p->n_steps && !rc; k++) {
    tconv *c = &d->conv[k];
    struct dnn_conv *all[3] = {c->fwd, c->bdata, c->wgrad};
    for (int j = 0; j < 3 && !rc; j++) {
      if (!all[j]) continue;
      rc = dnn_conv_choose(B, all[j], sa, sw, sb, sws, sws ? limit : B->search_ws_limit);
      if (!rc && dnn_conv_workspace(all[j]) > ws) ws = dnn_conv_workspace(all[j]);
    }
  }
  cu_free(B, sws, limit);
  dev_free(T, sa);
  dev_free(T, sb);
  dev_free(T, sw);
  if (rc) return rc;
  if (ws > T->ws_bytes) {
    graphs_drop(T);
    cu_free(B, T->ws, T->ws_bytes);
    T->ws = NULL;
    T->ws_bytes = 0;
    CU_OK(cu_malloc(B, &T->ws, ws, "convolution workspace"));
    T->ws_bytes = ws;
  }
  return CE_OK;
}

/* The device state of `net` for its current plan, made at its first pass. */
static int net_get(cu_train *T, const i2i_tnet *net, tnet_dev **out) {
  const i2i_tplan *p = &net->plan;
  for (int i = 0; i < T->n_nets; i++) {
    tnet_dev *d = &T->nets[i];
    if (d->net == net && d->n == p->n && d->h == p->h && d->w == p->w && d->n_steps == p->n_steps) {
      *out = d;
      return CE_OK;
    }
  }
  if (T->n_nets == T_MAX_NETS) return cu_fail(T->B, CE_INTERNAL, "more than %d networks in one trainer", T_MAX_NETS);
  tnet_dev *d = &T->nets[T->n_nets];
  int k = net_setup(T, net, d);
  if (k) {
    net_release(T, d);
    return k;
  }
  T->n_nets++;
  *out = d;
  return CE_OK;
}

/* ---- the passes --------------------------------------------------------------------------------- */

static const float *pw(const i2i_tnet *net, size_t off) { return off == SIZE_MAX ? NULL : net->param + off; }
static float *pg(const i2i_tnet *net, size_t off) { return off == SIZE_MAX ? NULL : net->grad + off; }

/* A convolution's input as cuDNN reads it: x itself, or x padded into the padded buffer. */
static int conv_input(cu_train *T, const tconv *c, const i2i_tstep *s, const float *x, shape4 xs, const float **in) {
  cu_backend *B = T->B;
  *in = x;
  if (!c->explicit_pad) return CE_OK;
  CU_TRY(B,
         kt_pad(B->stream, x, T->pad, (int)xs.n, (int)xs.c, (int)xs.h, (int)xs.w, s->pads[0], s->pads[1], s->pads[2],
                s->pads[3], s->pad_mode, 0.0f),
         "padding a convolution's input");
  *in = T->pad;
  return CE_OK;
}

static int forward_steps(cu_train *T, const i2i_tnet *net, tnet_dev *d, float *arena) {
  cu_backend *B = T->B;
  cudaStream_t st = B->stream;
  const i2i_tplan *p = &net->plan;
  const i2i_graph *g = &net->m->g;
  for (int k = 0; k < p->n_steps; k++) {
    const i2i_tstep *s = &p->steps[k];
    const i2i_node *n = &g->nodes[s->node];
    shape4 xs = p->shape[s->in[0]], ys = p->shape[s->out];
    float *x = arena + p->act_off[s->in[0]], *y = arena + p->act_off[s->out];
    int64_t hw = xs.h * xs.w;
    int kind = TP_ELEM;
    prof_layer(T, (int)xs.c, (int)ys.c, (int)ys.h);
    switch (s->op) {
    case OP_CONV:
    case OP_CONVT: {
      const tconv *c = &d->conv[k];
      const float *in;
      CU_OK(conv_input(T, c, s, x, xs, &in));
      if (c->explicit_pad) prof_mark(T, TP_PAD);
      CU_OK(dnn_conv_run_beta(B, c->fwd, in, pw(net, s->w_off), y, T->ws, T->ws_bytes, 0.0f));
      prof_mark(T, s->op == OP_CONV ? TP_CONV : TP_CONVT);
      if (s->b_off != SIZE_MAX)
        CU_TRY(B, kt_bias(st, y, pw(net, s->b_off), (int)ys.n, (int)ys.c, ys.h * ys.w), "convolution bias");
      break;
    }
    case OP_INSTNORM:
    case OP_BATCHNORM: {
      float *mean = arena + s->stat_off;
      size_t groups = tstep_norm_groups(s, xs);
      float *rm = s->rm_off == SIZE_MAX ? NULL : net->param + s->rm_off;
      float *rv = s->rv_off == SIZE_MAX ? NULL : net->param + s->rv_off;
      CU_TRY(B, kt_norm_forward(st, x, y, (int)xs.n, (int)xs.c, hw, s->batch_stats, pw(net, s->w_off), pw(net, s->b_off),
                            n->eps, s->act, s->act_alpha, mean, mean + groups, rm, rv, s->momentum),
            "normalisation");
      kind = TP_NORM;
      break;
    }
    case OP_PAD:
      if (xs.n == ys.n && xs.c == ys.c)
        CU_TRY(B,
               kt_pad(st, x, y, (int)xs.n, (int)xs.c, (int)xs.h, (int)xs.w, (int)n->pads8[2], (int)n->pads8[3],
                      (int)(ys.h - xs.h - n->pads8[2]), (int)(ys.w - xs.w - n->pads8[3]), n->pad_mode, n->pad_value),
               "Pad");
      else
        CU_TRY(B, k_pad(st, plain(x, xs), plain(y, ys), (int)n->pads8[2], (int)n->pads8[3], n->pad_mode, n->pad_value),
               "Pad");
      kind = TP_PAD;
      break;
    case OP_RELU: CU_TRY(B, k_act(st, plain(x, xs), plain(y, ys), ACT_RELU, 0.0f), "Relu"); break;
    case OP_LRELU: CU_TRY(B, k_act(st, plain(x, xs), plain(y, ys), ACT_LRELU, n->alpha), "LeakyRelu"); break;
    case OP_IDENTITY: CU_TRY(B, kt_grad(st, x, y, (int64_t)numel(xs), 0), "Identity"); break;
    case OP_TANH: CU_TRY(B, k_tanh(st, plain(x, xs), plain(y, ys), NULL), "Tanh"); break;
    case OP_ADD:
      CU_TRY(B, k_add(st, plain(x, xs), plain(arena + p->act_off[s->in[1]], xs), plain(y, ys), ACT_NONE, 0.0f), "Add");
      break;
    case OP_CONCAT: {
      int off = 0;
      for (int j = 0; j < s->n_in; j++) {
        shape4 q = p->shape[s->in[j]];
        CU_TRY(B, kt_copy_channels(st, y, (int)ys.c, off, arena + p->act_off[s->in[j]], (int)q.c, 0, (int)q.c, (int)q.n,
                               q.h * q.w, 0),
              "Concat");
        off += (int)q.c;
      }
      break;
    }
    case OP_DROPOUT:
      if (n->ratio > 0) {
        uint32_t th;
        float sc;
        dropout_consts(n->ratio, &th, &sc);
        CU_TRY(B, kt_dropout(st, x, y, (int)xs.n, (int)xs.c, (int)xs.h, (int)xs.w, T->key, (uint32_t)n->ordinal, th, sc, 0),
               "Dropout");
      } else {
        CU_TRY(B, kt_grad(st, x, y, (int64_t)numel(xs), 0), "Dropout");
      }
      break;
    default: return cu_fail(B, CE_UNSUPPORTED, "training on the GPU has no forward for '%s'", n->op_type);
    }
    prof_mark(T, kind);
  }
  return CE_OK;
}

static int backward_steps(cu_train *T, const i2i_tnet *net, tnet_dev *d, float *arena, float *grads, bool want_dx,
                          bool param_grads) {
  cu_backend *B = T->B;
  cudaStream_t st = B->stream;
  const i2i_tplan *p = &net->plan;
  const i2i_graph *g = &net->m->g;
  for (int k = p->n_steps - 1; k >= 0; k--) {
    const i2i_tstep *s = &p->steps[k];
    const i2i_node *n = &g->nodes[s->node];
    shape4 xs = p->shape[s->in[0]], ys = p->shape[s->out];
    const float *x = arena + p->act_off[s->in[0]], *y = arena + p->act_off[s->out];
    const float *dy = grads + p->grad_off[s->out];
    bool need0 = s->in[0] != p->input || want_dx;
    float *dx = need0 ? grads + p->grad_off[s->in[0]] : NULL;
    int acc = s->acc_dx[0];
    int64_t hw = xs.h * xs.w, cnt = (int64_t)numel(xs);
    int kind = TP_ELEM;
    prof_layer(T, (int)xs.c, (int)ys.c, (int)ys.h);
    switch (s->op) {
    case OP_CONV:
    case OP_CONVT: {
      const tconv *c = &d->conv[k];
      if (param_grads) {
        if (s->op == OP_CONVT) {
          CU_OK(dnn_conv_run_beta(B, c->wgrad, dy, pg(net, s->w_off), (void *)x, T->ws, T->ws_bytes, 1.0f));
        } else {
          const float *in;
          CU_OK(conv_input(T, c, s, x, xs, &in));
          if (c->explicit_pad) prof_mark(T, TP_PAD);
          CU_OK(dnn_conv_run_beta(B, c->wgrad, in, pg(net, s->w_off), (void *)dy, T->ws, T->ws_bytes, 1.0f));
        }
        prof_mark(T, TP_WGRAD);
        if (s->b_train && s->b_off != SIZE_MAX)
          CU_TRY(B, kt_channel_sum(st, dy, (int)ys.n, (int)ys.c, ys.h * ys.w, pg(net, s->b_off)), "bias gradient");
        prof_mark(T, TP_ELEM);
      }
      if (dx) {
        if (c->explicit_pad) {
          CU_OK(dnn_conv_run_beta(B, c->bdata, dy, pw(net, s->w_off), T->dpad, T->ws, T->ws_bytes, 0.0f));
          prof_mark(T, TP_BDATA);
          CU_TRY(B, kt_pad_backward(st, T->dpad, dx, (int)xs.n, (int)xs.c, (int)xs.h, (int)xs.w, s->pads[0], s->pads[1],
                                s->pads[2], s->pads[3], s->pad_mode, acc),
                "padding backward");
          kind = TP_PAD;
        } else {
          CU_OK(dnn_conv_run_beta(B, c->bdata, dy, pw(net, s->w_off), dx, T->ws, T->ws_bytes, acc ? 1.0f : 0.0f));
          kind = TP_BDATA;
        }
      }
      break;
    }
    case OP_INSTNORM:
    case OP_BATCHNORM: {
      if (!dx && !param_grads) break;
      const float *mean = arena + s->stat_off;
      size_t groups = tstep_norm_groups(s, xs);
      CU_TRY(B, kt_norm_backward(st, x, dy, dx, acc, (int)xs.n, (int)xs.c, hw, s->batch_stats, pw(net, s->w_off),
                             pw(net, s->b_off), mean, mean + groups, s->act, s->act_alpha,
                             param_grads && s->w_train ? pg(net, s->w_off) : NULL,
                             param_grads && s->b_train ? pg(net, s->b_off) : NULL, T->nk),
            "normalisation backward");
      kind = TP_NORM_BWD;
      break;
    }
    case OP_PAD:
      if (dx)
        CU_TRY(B, kt_pad_backward(st, dy, dx, (int)xs.n, (int)xs.c, (int)xs.h, (int)xs.w, (int)n->pads8[2], (int)n->pads8[3],
                              (int)n->pads8[6], (int)n->pads8[7], n->pad_mode, acc),
              "Pad backward");
      kind = TP_PAD;
      break;
    case OP_RELU:
    case OP_LRELU:
      if (dx) CU_TRY(B, kt_act_backward(st, y, dy, dx, cnt, s->op == OP_RELU ? KT_RELU : KT_LRELU, n->alpha, acc), "activation backward");
      break;
    case OP_IDENTITY:
      if (dx) CU_TRY(B, kt_grad(st, dy, dx, cnt, acc), "Identity backward");
      break;
    case OP_TANH:
      if (dx) CU_TRY(B, kt_act_backward(st, y, dy, dx, cnt, KT_TANH, 0.0f, acc), "Tanh backward");
      break;
    case OP_ADD:
      for (int j = 0; j < 2; j++) {
        if (s->in[j] == p->input && !want_dx) continue;
        CU_TRY(B, kt_grad(st, dy, grads + p->grad_off[s->in[j]], cnt, s->acc_dx[j]), "Add backward");
      }
      break;
    case OP_CONCAT: {
      int off = 0;
      for (int j = 0; j < s->n_in; j++) {
        shape4 q = p->shape[s->in[j]];
        if (s->in[j] != p->input || want_dx)
          CU_TRY(B, kt_copy_channels(st, grads + p->grad_off[s->in[j]], (int)q.c, 0, dy, (int)ys.c, off, (int)q.c, (int)q.n,
                                 q.h * q.w, s->acc_dx[j]),
                "Concat backward");
        off += (int)q.c;
      }
      break;
    }
    case OP_DROPOUT:
      if (!dx) break;
      if (n->ratio > 0) {
        uint32_t th;
        float sc;
        dropout_consts(n->ratio, &th, &sc);
        CU_TRY(B, kt_dropout(st, dy, dx, (int)xs.n, (int)xs.c, (int)xs.h, (int)xs.w, T->key, (uint32_t)n->ordinal, th, sc,
                             acc),
               "Dropout backward");
      } else {
        CU_TRY(B, kt_grad(st, dy, dx, cnt, acc), "Dropout backward");
      }
      break;
    default: return cu_fail(B, CE_UNSUPPORTED, "training on the GPU has no backward for '%s'", n->op_type);
    }
    prof_mark(T, kind);
  }
  return CE_OK;
}

static int pass_eager(cu_train *T, const tpass *p) {
  return p->backward ? backward_steps(T, p->net, p->d, p->arena, p->grads, p->want_dx, p->param_grads)
                     : forward_steps(T, p->net, p->d, p->arena);
}

/* The graph slot of pass `p` on its network's current buffers, made at first sight; NULL when
 * every slot is taken (that pass then launches kernel by kernel). */
static tgraph *graph_slot(cu_train *T, const tpass *p) {
  for (int i = 0; i < T->n_graphs; i++) {
    tgraph *g = &T->graphs[i];
    const tpass *q = &g->pass;
    if (q->net == p->net && q->d == p->d && q->arena == p->arena && q->grads == p->grads && q->backward == p->backward &&
        q->want_dx == p->want_dx && q->param_grads == p->param_grads && g->param == p->net->param &&
        g->grad == p->net->grad)
      return g;
  }
  if (T->n_graphs == T_MAX_GRAPHS) return NULL;
  tgraph *g = &T->graphs[T->n_graphs++];
  memset(g, 0, sizeof *g);
  g->pass = *p;
  g->param = p->net->param;
  g->grad = p->net->grad;
  return g;
}

/* Runs one pass: the dropout key first where the network has dropout, then the pass's kernels
 * one by one the first time it is seen (or with graphs off, or profiling), its captured graph
 * after that. A capture that fails (a call CUDA cannot capture, an old driver) turns graphs off
 * for this trainer and runs the pass eagerly; only a sticky fault is returned from it. */
static int run_pass(cu_train *T, i2i_ctx *ctx, const tpass *p, uint64_t seed, uint64_t step) {
  cu_backend *B = T->B;
  if (p->d->dropout) CU_TRY(B, kt_set_key(B->stream, T->key, seed, step), "setting the dropout key");
  tgraph *g = !B->train_graphs || T->graphs_off || T->prof ? NULL : graph_slot(T, p);
  if (!g || (!g->exec && g->uses++ == 0)) return pass_eager(T, p);
  if (!g->exec) {
    cudaGraph_t gr = NULL;
    int k = CE_OK;
    cudaError_t e = cudaStreamBeginCapture(B->stream, cudaStreamCaptureModeThreadLocal);
    if (e == cudaSuccess) {
      k = pass_eager(T, p);
      cudaError_t e2 = cudaStreamEndCapture(B->stream, &gr);
      if (!k && e2 == cudaSuccess) e2 = cudaGraphInstantiate(&g->exec, gr, 0);
      e = e2;
    }
    if (gr) cudaGraphDestroy(gr);
    if (k || e != cudaSuccess) {
      if (k == CE_STICKY) return k;
      B->host->log(ctx, I2I_LOG_INFO, "cuda training: a pass cannot be captured as a CUDA graph (%s); kernels launch one by one",
                   k ? B->err.msg : cudaGetErrorString(e));
      cudaGetLastError();
      B->err.kind = CE_OK;
      g->exec = NULL;
      T->graphs_off = 1;
      B->stats.graph_failures++;
      return pass_eager(T, p);
    }
    B->stats.graphs_captured++;
  }
  CU_TRY(B, cudaGraphLaunch(g->exec, B->stream), "launching a captured pass");
  if (!T->replays++)
    B->host->log(ctx, I2I_LOG_INFO, "cuda training: passes replay as CUDA graphs (I2I_CUDA_GRAPH=0 launches kernel by kernel)");
  return CE_OK;
}

static i2i_status t_forward(void *self, i2i_ctx *ctx, const i2i_tnet *net, float *arena, float *scratch, uint64_t seed,
                            uint64_t step) {
  (void)scratch;
  cu_train *T = (cu_train *)self;
  i2i_status st = cu_begin(T->B, ctx);
  if (st) return st;
  prof_enter(T, ctx);
  tnet_dev *d = NULL;
  int k = net_get(T, net, &d);
  prof_mark(T, TP_SETUP);
  if (!k) {
    tpass p = {net, d, arena, NULL, 0, 0, 0};
    k = run_pass(T, ctx, &p, seed, step);
  }
  return cu_finish(T->B, ctx, k);
}

static i2i_status t_backward(void *self, i2i_ctx *ctx, const i2i_tnet *net, float *arena, float *grads, float *scratch,
                             bool want_dx, bool param_grads, uint64_t seed, uint64_t step) {
  (void)scratch;
  cu_train *T = (cu_train *)self;
  i2i_status st = cu_begin(T->B, ctx);
  if (st) return st;
  prof_enter(T, ctx);
  tnet_dev *d = NULL;
  int k = net_get(T, net, &d);
  prof_mark(T, TP_SETUP);
  if (!k) {
    tpass p = {net, d, arena, grads, 1, want_dx, param_grads};
    k = run_pass(T, ctx, &p, seed, step);
  }
  return cu_finish(T->B, ctx, k);
}

/* ---- losses, optimiser, checks ------------------------------------------------------------------- */

static i2i_status t_loss(void *self, i2i_ctx *ctx, int kind, const float *x, const float *target, float label, size_t n,
                         float weight, float *grad, bool accumulate, double *value) {
  cu_train *T = (cu_train *)self;
  cu_backend *B = T->B;
  *value = 0;
  i2i_status st = cu_begin(T->B, ctx);
  if (st || !n) return st;
  double part[KT_LOSS_BLOCKS];
  prof_enter(T, ctx);
  cudaError_t e = kt_loss(B->stream, kind, x, target, label, (int64_t)n, weight, grad, accumulate, T->part);
  prof_mark(T, TP_LOSS);
  if (!e) e = cudaMemcpyAsync(part, T->part, sizeof part, cudaMemcpyDeviceToHost, B->stream);
  if (!e) e = cudaStreamSynchronize(B->stream);
  if (e) return cu_finish(B, ctx, cu_fail_cuda(B, e, "loss"));
  double sum = 0;
  for (int i = 0; i < KT_LOSS_BLOCKS; i++) sum += part[i];
  *value = (double)weight * (sum / (double)n);
  return I2I_OK;
}

static i2i_status t_adam(void *self, i2i_ctx *ctx, i2i_tnet *net, float lr, float beta1, float beta2, float eps) {
  cu_train *T = (cu_train *)self;
  i2i_status st = cu_begin(T->B, ctx);
  if (st) return st;
  net->adam_t++;
  double bc1 = 1.0 - pow((double)beta1, (double)net->adam_t), bc2 = 1.0 - pow((double)beta2, (double)net->adam_t);
  float step = (float)((double)lr / bc1), bc2s = (float)sqrt(bc2);
  float a1 = (float)(1.0 - (double)beta1), a2 = (float)(1.0 - (double)beta2);
  cudaError_t e = cudaSuccess;
  prof_enter(T, ctx);
  for (int r = 0; r < net->n_train && !e; r++) {
    size_t o = net->train[r].off;
    e = kt_adam(T->B->stream, net->param + o, net->grad + o, net->adam_m + o, net->adam_v + o,
                (int64_t)net->train[r].n, step, bc2s, beta1, beta2, a1, a2, eps);
  }
  prof_mark(T, TP_ADAM);
  return cu_finish(T->B, ctx, e ? cu_fail_cuda(T->B, e, "Adam") : CE_OK);
}

static i2i_status t_finite(void *self, i2i_ctx *ctx, const float *x, size_t n, bool *ok) {
  cu_train *T = (cu_train *)self;
  cu_backend *B = T->B;
  *ok = false;
  i2i_status st = cu_begin(T->B, ctx);
  if (st) return st;
  int flag = 0;
  prof_enter(T, ctx);
  cudaError_t e = cudaMemsetAsync(T->flag, 0, sizeof(int), B->stream);
  if (!e) e = kt_finite(B->stream, x, (int64_t)n, T->flag);
  prof_mark(T, TP_ELEM);
  if (!e) e = cudaMemcpyAsync(&flag, T->flag, sizeof(int), cudaMemcpyDeviceToHost, B->stream);
  if (!e) e = cudaStreamSynchronize(B->stream);
  if (e) return cu_finish(B, ctx, cu_fail_cuda(B, e, "finiteness check"));
  *ok = flag == 0;
  return I2I_OK;
}

static void t_destroy(void *self) {
  cu_train *T = (cu_train *)self;
  if (!T) return;
  cu_backend *B = T->B;
  if (!B->dead && T->prof) {
    cudaSetDevice(B->device);
    prof_report(T);
  }
  prof_free(T);
  graphs_drop(T);
  for (int i = 0; i < T->n_nets; i++) net_release(T, &T->nets[i]);
  if (!B->dead) {
    cudaSetDevice(B->device);
    cudaStreamSynchronize(B->stream);
    cudaGetLastError();
  }
  cu_free(B, T->ws, T->ws_bytes);
  cu_free(B, T->part, KT_LOSS_BLOCKS * sizeof(double));
  cu_free(B, T->flag, sizeof(int));
  cu_free(B, T->key, 2 * sizeof(uint64_t));
  while (T->n_allocs) dev_free(T, T->allocs[T->n_allocs - 1].p);
  free(T->allocs);
  free(T);
}

/* TF32 where asked (the default) and the GPU has it: cuDNN's CUDNN_DEFAULT_MATH takes float32
 * operands to TF32 only from compute capability 8.0 (Ampere) on. */
static const char *t_math(void *self) {
  const cu_backend *B = ((const cu_train *)self)->B;
  return B->train_tf32 && B->stats.cc_major >= 8 ? "TF32" : "float32";
}

static const i2i_train_backend_ops train_ops = {
  "cuda", t_alloc, t_free, t_upload, t_download, t_copy, t_fill, t_copy_channels, t_forward, t_backward,
  t_loss, t_adam, t_finite, t_destroy, t_math,
};

i2i_status cu_train_open(void *self, i2i_ctx *ctx, const i2i_train_backend_ops **ops, void **tself) {
  cu_backend *B = (cu_backend *)self;
  *ops = NULL;
  *tself = NULL;
  cu_train *T = (cu_train *)calloc(1, sizeof *T);
  if (!T) return B->host->fail(ctx, I2I_E_NOMEM, "out of memory opening the GPU training backend");
  T->B = B;
  i2i_status st = cu_begin(T->B, ctx);
  if (st) {
    free(T);
    return st;
  }
  void *part = NULL, *flag = NULL, *key = NULL;
  int k = cu_malloc(B, &part, KT_LOSS_BLOCKS * sizeof(double), "loss sums");
  if (!k) k = cu_malloc(B, &flag, sizeof(int), "finiteness flag");
  if (!k) k = cu_malloc(B, &key, 2 * sizeof(uint64_t), "dropout key");
  T->part = (double *)part;
  T->flag = (int *)flag;
  T->key = (uint64_t *)key;
  if (k) {
    st = cu_finish(B, ctx, k);
    t_destroy(T);
    return st;
  }
  prof_open(T);
  *ops = &train_ops;
  *tself = T;
  return I2I_OK;
}
