/* cuda/banded.cu: layer-wise GPU runs of images too large for the device budget (the ext
 * table's conv_step). The CPU executor walks the plan over the host arena (whole-image
 * intermediates in host memory, normalisation statistics over the whole image, the dropout
 * masks unchanged) and hands each convolution here; it runs on the GPU in bands of output rows.
 *
 * A band of a convolution reads the padded input rows its outputs need: real neighbouring rows
 * inside the image, the step's padding (reflect, edge or zeros) only at the image's edges, as
 * the CPU's index maps do. A transposed convolution's band reads the input rows that contribute
 * to its output rows, runs unpadded and keeps the rows and columns that are complete. Bands are
 * gathered and their bias added on the host; the device holds the model's weights, one input
 * and one output band and the convolution workspace, all inside the budget. An out-of-memory
 * halves the band and retries; a single row that does not fit is I2I_E_DEVICE_NOMEM.
 * float32 with CUDNN_FMA_MATH, as the parity path.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_priv.h"

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

/* One convolution step's geometry (one image). */
typedef struct {
  int transpose;
  int c, h, w;          /* input */
  int m, oh, ow;        /* output */
  int kh, kw, sh, sw, dh, dw;
  int pt, pl, pb, pr;   /* padding (forward: the step's effective padding; transposed: the conv's) */
  int pad_mode;
  int oph, opw;         /* transposed: output padding */
} bgeom;

/* The input rows [*a, *b) a band of output rows [y0, y1) reads, in the input's own rows for a
 * transposed convolution, in padded rows for a forward one; *rows: the band input's height, and
 * *lw: its width (padded / the unpadded local output's width for the transposed case). */
typedef struct {
  int64_t a, b;     /* input rows */
  int rows;         /* band input height */
  int xw;           /* band input width */
  int lh, lw;       /* band output (local) height and width */
  int r0, c0;       /* local output row / column of global output (y0, 0) */
} band;

static band band_of(const bgeom *g, int y0, int y1) {
  band b;
  memset(&b, 0, sizeof b);
  if (!g->transpose) {
    b.a = (int64_t)y0 * g->sh;
    b.b = (int64_t)(y1 - 1) * g->sh + (int64_t)(g->kh - 1) * g->dh + 1;
    b.rows = (int)(b.b - b.a);
    b.xw = g->w + g->pl + g->pr;
    b.lh = y1 - y0;
    b.lw = g->ow;
    return b;
  }
  /* output row oy gets input rows iy with oy = iy * s - pt + ky, ky in [0, kh); rows outside the
   * image are zeros (they contribute nothing), so bands starting at multiples of the stride all
   * have the same shape */
  int64_t a = ceil_div((int64_t)y0 + g->pt - (g->kh - 1), g->sh), z = floor_div((int64_t)y1 - 1 + g->pt, g->sh);
  b.a = a;
  b.b = z + 1;
  b.rows = (int)(b.b - b.a);
  b.xw = g->w;
  /* the unpadded transposed output of the band: (rows - 1) * s + k, plus up to s - 1 rows */
  int need_h = y1 - 1 - (int)(a * g->sh) + g->pt + 1, base_h = (b.rows - 1) * g->sh + g->kh;
  int need_w = g->ow - 1 + g->pl + 1, base_w = (g->w - 1) * g->sw + g->kw;
  b.lh = need_h > base_h ? need_h : base_h;
  b.lw = need_w > base_w ? need_w : base_w;
  b.r0 = y0 - (int)(a * g->sh) + g->pt;
  b.c0 = g->pl;
  return b;
}

/* Bytes of a band's input and of its (local) output. */
static size_t band_in_bytes(const bgeom *g, const band *b) {
  return (size_t)g->c * (size_t)b->rows * (size_t)b->xw * sizeof(float);
}
static size_t band_out_bytes(const bgeom *g, const band *b) {
  return (size_t)g->m * (size_t)b->lh * (size_t)b->lw * sizeof(float);
}

/* Device bytes of the buffers of bands of `rows` output rows. */
static size_t band_bytes(const bgeom *g, int rows) {
  band b = band_of(g, 0, rows < g->oh ? rows : g->oh);
  return band_in_bytes(g, &b) + band_out_bytes(g, &b);
}

/* Copies the band's input from image x (c x h x w) into dst (c x rows x xw), padding as the CPU. */
static void gather(const bgeom *g, const band *b, const float *x, float *dst) {
  for (int c = 0; c < g->c; c++) {
    const float *xc = x + (size_t)c * (size_t)g->h * (size_t)g->w;
    float *dc = dst + (size_t)c * (size_t)b->rows * (size_t)b->xw;
    for (int r = 0; r < b->rows; r++) {
      float *drow = dc + (size_t)r * (size_t)b->xw;
      int64_t iy = b->a + r;
      if (g->transpose) {
        if (iy < 0 || iy >= g->h) memset(drow, 0, sizeof(float) * (size_t)g->w);
        else memcpy(drow, xc + (size_t)iy * (size_t)g->w, sizeof(float) * (size_t)g->w);
        continue;
      }
      int sy = kv_map((int)(iy - g->pt), g->h, g->pad_mode);
      if (sy < 0) {
        memset(drow, 0, sizeof(float) * (size_t)b->xw);
        continue;
      }
      const float *srow = xc + (size_t)sy * (size_t)g->w;
      memcpy(drow + g->pl, srow, sizeof(float) * (size_t)g->w);
      for (int xx = 0; xx < g->pl; xx++) {
        int sx = kv_map(xx - g->pl, g->w, g->pad_mode);
        drow[xx] = sx < 0 ? 0.0f : srow[sx];
      }
      for (int xx = g->pl + g->w; xx < b->xw; xx++) {
        int sx = kv_map(xx - g->pl, g->w, g->pad_mode);
        drow[xx] = sx < 0 ? 0.0f : srow[sx];
      }
    }
  }
}

/* Writes output rows [y0, y1) of image y (m x oh x ow) from the band's local output plus bias. */
static void scatter(const bgeom *g, const band *b, int y0, int y1, const float *loc, const float *bias, float *y) {
  for (int mc = 0; mc < g->m; mc++) {
    float bv = bias ? bias[mc] : 0.0f;
    const float *lc = loc + (size_t)mc * (size_t)b->lh * (size_t)b->lw;
    float *yc = y + (size_t)mc * (size_t)g->oh * (size_t)g->ow;
    for (int oy = y0; oy < y1; oy++) {
      const float *lrow = lc + (size_t)(b->r0 + oy - y0) * (size_t)b->lw + (size_t)b->c0;
      float *yrow = yc + (size_t)oy * (size_t)g->ow;
      for (int ox = 0; ox < g->ow; ox++) yrow[ox] = lrow[ox] + bv;
    }
  }
}

/* The cuDNN descriptors of a band of `rows` output rows. */
static int band_conv(cu_backend *B, const bgeom *g, const band *b, struct dnn_conv **dc) {
  conv_geom_d gd;
  memset(&gd, 0, sizeof gd);
  gd.transpose = g->transpose;
  gd.n = 1;
  gd.xc = g->c;
  gd.xh = b->rows;
  gd.xw = b->xw;
  gd.yc = g->m;
  gd.yh = b->lh;
  gd.yw = b->lw;
  gd.kh = g->kh;
  gd.kw = g->kw;
  gd.str_h = g->sh;
  gd.str_w = g->sw;
  gd.dil_h = g->dh;
  gd.dil_w = g->dw;
  return dnn_conv_create(B, &gd, dc);
}

typedef struct {
  float *dx, *dy;
  void *ws;
  size_t dx_bytes, dy_bytes, ws_bytes;
  float *hx, *hy;       /* host staging */
  struct dnn_conv *dc[2]; /* full bands and the last, shorter one */
} band_bufs;

static void bufs_free(cu_backend *B, band_bufs *u) {
  cu_free(B, u->dx, u->dx_bytes);
  cu_free(B, u->dy, u->dy_bytes);
  cu_free(B, u->ws, u->ws_bytes);
  free(u->hx);
  free(u->hy);
  dnn_conv_free(u->dc[0]);
  dnn_conv_free(u->dc[1]);
  memset(u, 0, sizeof *u);
}

/* Runs the step for every image with bands of `rows` output rows. */
static int run_bands(cu_backend *B, i2i_ctx *ctx, const bgeom *g, int nimg, const float *x, float *y, const float *w,
                     const float *bias, int rows, i2i_run_state *st, double done, double flops,
                     double total) {
  band_bufs u;
  memset(&u, 0, sizeof u);
  band full = band_of(g, 0, rows);
  int last_rows = g->oh % rows ? g->oh % rows : rows;
  band tail = band_of(g, g->oh - last_rows, g->oh);
  /* the last, shorter band never needs more than a full one */
  u.dx_bytes = band_in_bytes(g, &full);
  u.dy_bytes = band_out_bytes(g, &full);
  int rc = cu_malloc(B, (void **)&u.dx, u.dx_bytes, "band input");
  if (!rc) rc = cu_malloc(B, (void **)&u.dy, u.dy_bytes, "band output");
  if (!rc) {
    u.hx = (float *)malloc(u.dx_bytes);
    u.hy = (float *)malloc(u.dy_bytes);
    if (!u.hx || !u.hy) rc = cu_fail(B, CE_HOSTMEM, "out of host memory for the band buffers");
  }
  if (!rc) rc = band_conv(B, g, &full, &u.dc[0]);
  if (!rc && last_rows != rows) rc = band_conv(B, g, &tail, &u.dc[1]);
  /* the workspace: what is left of the budget (at most 256 MiB), for the search and the runs */
  if (!rc) {
    size_t left = B->run_budget > B->stats.device_bytes ? (size_t)(B->run_budget - B->stats.device_bytes) : 0;
    size_t want = left < ((size_t)256 << 20) ? left : ((size_t)256 << 20);
    want &= ~(size_t)255;
    if (want && cu_malloc(B, &u.ws, want, "convolution workspace")) {
      u.ws = NULL;
      B->err.kind = CE_OK;
      cudaGetLastError();
    } else {
      u.ws_bytes = want;
    }
    for (int i = 0; i < 2 && !rc; i++)
      if (u.dc[i]) rc = dnn_conv_choose(B, u.dc[i], u.dx, w, u.dy, u.ws, u.ws_bytes);
    for (int i = 0; i < 2 && !rc; i++)
      if (u.dc[i] && dnn_conv_workspace(u.dc[i]) > u.ws_bytes)
        rc = cu_fail(B, CE_OOM, "the convolution needs %.1f MiB of workspace, %.1f MiB fit the budget",
                     dnn_conv_workspace(u.dc[i]) / 1048576.0, u.ws_bytes / 1048576.0);
  }
  size_t xin = (size_t)g->c * (size_t)g->h * (size_t)g->w, yout = (size_t)g->m * (size_t)g->oh * (size_t)g->ow;
  int nb = (g->oh + rows - 1) / rows;
  for (int img = 0; img < nimg && !rc; img++)
    for (int k = 0; k < nb && !rc; k++) {
      int y0 = k * rows, y1 = y0 + rows < g->oh ? y0 + rows : g->oh;
      band b = band_of(g, y0, y1);
      struct dnn_conv *dc = y1 - y0 == rows ? u.dc[0] : u.dc[1];
      size_t bx = band_in_bytes(g, &b), by = band_out_bytes(g, &b);
      gather(g, &b, x + xin * (size_t)img, u.hx);
      cudaError_t e = cudaMemcpyAsync(u.dx, u.hx, bx, cudaMemcpyHostToDevice, B->stream);
      if (e != cudaSuccess) {
        rc = cu_fail_cuda(B, e, "band upload");
        break;
      }
      rc = dnn_conv_run(B, dc, u.dx, w, u.dy, u.ws, u.ws_bytes);
      if (rc) break;
      e = cudaMemcpyAsync(u.hy, u.dy, by, cudaMemcpyDeviceToHost, B->stream);
      if (e == cudaSuccess) e = cudaStreamSynchronize(B->stream);
      if (e != cudaSuccess) {
        rc = cu_fail_cuda(B, e, "band download");
        break;
      }
      scatter(g, &b, y0, y1, u.hy, bias, y + yout * (size_t)img);
      double f = done + flops * ((double)img * nb + k + 1) / ((double)nimg * nb);
      if (st && st->progress && B->host->progress(ctx, st, f, total)) rc = cu_fail(B, CE_CANCELLED, "cancelled");
    }
  bufs_free(B, &u);
  return rc;
}

/* Half the band, a multiple of `unit` rows and at least one unit. */
static int next_rows(int rows, int unit) {
  int r = (rows + 1) / 2 / unit * unit;
  return r < unit ? unit : r;
}

static int conv_step_run(cu_backend *B, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, i2i_run_state *st,
                         int step, double done, int *bands) {
  const i2i_graph *g = &m->g;
  if (step < 0 || step >= plan->n_steps) return cu_fail(B, CE_INTERNAL, "step %d out of range", step);
  const i2i_step *s = &plan->steps[step];
  const i2i_node *n = &g->nodes[s->node];
  if (s->op != OP_CONV && s->op != OP_CONVT) return cu_fail(B, CE_INTERNAL, "step %d is not a convolution", step);
  if (n->conv.group != 1) return cu_fail(B, CE_UNSUPPORTED, "grouped convolution '%s'", n->name);
  shape4 xs = plan->shape[s->in[0]], ys = plan->shape[s->out];
  bgeom bg = {s->op == OP_CONVT, (int)xs.c, (int)xs.h, (int)xs.w, (int)ys.c, (int)ys.h, (int)ys.w,
              n->conv.kernel[0], n->conv.kernel[1], n->conv.stride[0], n->conv.stride[1], n->conv.dilation[0],
              n->conv.dilation[1], s->pads[0], s->pads[1], s->pads[2], s->pads[3], s->pad_mode, n->conv.out_pad[0],
              n->conv.out_pad[1]};
  if (bg.transpose && (bg.dh != 1 || bg.dw != 1)) return cu_fail(B, CE_UNSUPPORTED, "dilated ConvTranspose '%s'", n->name);
  if (bg.transpose && (bg.oph >= bg.sh || bg.opw >= bg.sw))
    return cu_fail(B, CE_UNSUPPORTED, "ConvTranspose '%s': output padding not below the stride", n->name);
  cu_weights *W;
  int k = weights_get(B, m, 0, &W);
  if (st->device_budget && (k == CE_BUDGET || (!k && B->stats.device_bytes > W->w32_bytes))) {
    /* inside a budget only this model's float32 weights stay: other cached plans, models or the
     * fp16 filters would take room the bands need */
    cu_free_caches(B);
    k = weights_get(B, m, 0, &W);
  }
  CU_OK(k);
  size_t woff;
  size_t wn = (size_t)n->conv.kernel[0] * (size_t)n->conv.kernel[1] * (size_t)xs.c * (size_t)ys.c;
  CU_OK(weight_offset(B, m, n->in[1], wn, &woff));
  const float *bias = n->n_in > 2 && n->in[2] >= 0 && g->values[n->in[2]].c ? (const float *)g->values[n->in[2]].c->data : NULL;
  /* the budget: what the caller gave, else 90% of the free device memory; the weights count */
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) free_b = 0;
  cudaGetLastError();
  size_t budget = st->device_budget ? (size_t)st->device_budget : free_b / 10 * 9 + B->stats.device_bytes;
  size_t held = B->stats.device_bytes;
  if (held >= budget)
    return cu_fail(B, CE_BUDGET, "the model's weights (%.1f MiB) fill the device budget of %.1f MiB", held / 1048576.0,
                   budget / 1048576.0);
  /* from here every allocation is held to the budget (cu_malloc) */
  B->run_budget = budget;
  size_t left = budget - held;
  /* the tallest band whose buffers take at most half of what is left (the rest: workspace) */
  /* a transposed convolution's bands start at multiples of its stride (one band shape) */
  int unit = bg.transpose ? bg.sh : 1, rows = bg.oh;
  while (rows > unit && band_bytes(&bg, rows) > left / 2) rows = next_rows(rows, unit);
  int rc;
  for (;;) {
    rc = run_bands(B, ctx, &bg, (int)xs.n, st->arena + plan->offset[s->in[0]], st->arena + plan->offset[s->out],
                   W->w32 + woff, bias, rows, st, done, s->flops, plan->total_flops);
    if ((rc != CE_OOM && rc != CE_BUDGET) || rows <= unit) break;
    B->stats.oom_retries++;
    B->host->log(ctx, I2I_LOG_INFO, "cuda: %s; bands of %d rows next", B->err.msg, next_rows(rows, unit));
    B->err.kind = CE_OK;
    cudaGetLastError();
    rows = next_rows(rows, unit);
  }
  *bands = (bg.oh + rows - 1) / rows;
  return rc;
}

i2i_status cu_conv_step(void *self, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *plan, i2i_run_state *st, int step,
                        double done, int *bands) {
  cu_backend *B = (cu_backend *)self;
  *bands = 0;
  i2i_status s0 = cu_begin(B, ctx);
  if (s0) return s0;
  B->run_budget = st->device_budget; /* conv_step_run sets the automatic one once it knows it */
  int kind = conv_step_run(B, ctx, m, plan, st, step, done, bands);
  B->run_budget = 0;
  if (!kind) B->stats.runs += step == plan->n_steps - 1;
  return cu_finish(B, ctx, kind);
}
