/* run.c: i2i_run: from the caller's images to the model's tensors and back.
 *
 * Maps RGBA [0,1] (or RGB [-1,1]) to the model's NCHW [-1,1] input, reflect-pads at the bottom
 * and right to the size multiple (numpy.pad 'reflect' semantics), picks a backend, runs the
 * plan, crops the top-left HxW back, blends by strength and passes alpha through. The working
 * resolution (`scale`) is scale.c's; kernels live in cpu/ and cuda/. On the GPU the CUDA
 * module's image path does the conversions on the device and no host arena is made.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cuda/cuda_api.h"
#include "internal.h"

void i2i_run_default_params(i2i_run_params *p) {
  if (!p) return;
  memset(p, 0, sizeof *p);
  p->layout = I2I_PIXELS_RGBA;
  p->pix2pix_mode = I2I_PIX2PIX_FAITHFUL;
  p->strength = 1.0f;
}

i2i_status run_progress(i2i_ctx *ctx, i2i_run_state *st, double done, double total) {
  if (!st->progress) return I2I_OK;
  double f = total > 0 ? done / total : 1.0;
  if (f > 1) f = 1;
  if (st->progress(st->progress_user, st->progress_base + st->progress_span * f))
    return i2i_fail(ctx, I2I_E_CANCELLED, "cancelled");
  return I2I_OK;
}

/* numpy.pad(mode='reflect') index for a padded position i of a side of n. */
static inline int reflect_index(int i, int n) {
  if (i < n) return i;
  if (n == 1) return 0;
  int period = 2 * (n - 1);
  i %= period;
  return i >= n ? period - i : i;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Returns the plan for this model and size, from the context's one-entry cache. */
static i2i_status get_plan(i2i_ctx *ctx, const i2i_model *m, int n, int h, int w, i2i_plan **out) {
  i2i_plan *p = ctx->plan_cache;
  if (p && ctx->plan_model == m && ctx->plan_model_serial == m->serial && p->n == n && p->h == h && p->w == w &&
      p->budget == ctx->p.memory_budget) {
    *out = p;
    return I2I_OK;
  }
  i2i_status st = plan_build(ctx, m, n, h, w, &p);
  if (st) return st;
  plan_free(ctx, ctx->plan_cache);
  ctx->plan_cache = p;
  ctx->plan_model = m;
  ctx->plan_model_serial = m->serial;
  *out = p;
  return I2I_OK;
}

static void padded_size(const i2i_model *m, int h, int w, int *ph, int *pw) {
  int mult = m->info.size_multiple, mn = m->info.min_side;
  int64_t H = ((int64_t)h + mult - 1) / mult * mult, W = ((int64_t)w + mult - 1) / mult * mult;
  *ph = (int)(H < mn ? mn : H);
  *pw = (int)(W < mn ? mn : W);
}

/* Writes the caller's images into the plan's input tensor: [0,1] RGBA or [-1,1] RGB to [-1,1]
 * NCHW, padded at the bottom and right. */
static void fill_input(const i2i_model *m, const i2i_plan *plan, float *arena, int nimg, int width, int height, int ch,
                       const float *const *inputs) {
  int ph = plan->h, pw = plan->w;
  float *xin = arena + plan->offset[m->g.input];
  size_t plane = (size_t)ph * (size_t)pw;
  for (int i = 0; i < nimg; i++) {
    const float *src = inputs[i];
    float *dst = xin + (size_t)i * 3 * plane;
    for (int y = 0; y < ph; y++) {
      const float *row = src + (size_t)reflect_index(y, height) * (size_t)width * (size_t)ch;
      float *d0 = dst + (size_t)y * (size_t)pw;
      for (int x = 0; x < pw; x++) {
        const float *px = row + (size_t)reflect_index(x, width) * (size_t)ch;
        for (int c = 0; c < 3; c++) {
          float v = px[c];
          if (ch == 4) {
            if (!(v >= 0)) v = 0; /* NaN too */
            if (v > 1) v = 1;
            v = v * 2.0f - 1.0f;
          } else if (isnan(v)) {
            v = 0;
          }
          d0[(size_t)c * plane + (size_t)x] = v;
        }
      }
    }
  }
}

/* Crops the output tensor into the caller's images, blends by strength, copies alpha. */
static void read_output(const i2i_model *m, const i2i_plan *plan, const float *arena, int nimg, int width, int height,
                        int ch, float s, const float *const *inputs, float *const *outputs) {
  int pw = plan->w;
  size_t plane = (size_t)plan->h * (size_t)pw;
  const float *yout = arena + plan->offset[m->g.output];
  for (int i = 0; i < nimg; i++) {
    const float *src = yout + (size_t)i * 3 * plane;
    const float *in = inputs[i];
    float *out = outputs[i];
    for (int y = 0; y < height; y++)
      for (int x = 0; x < width; x++) {
        size_t pi = (size_t)y * (size_t)width + (size_t)x, q = (size_t)y * (size_t)pw + (size_t)x;
        for (int c = 0; c < 3; c++) {
          float r = src[(size_t)c * plane + q];
          float o = in[pi * (size_t)ch + (size_t)c];
          if (ch == 4) {
            r = (r + 1.0f) * 0.5f;
            if (!(o >= 0)) o = 0;
            if (o > 1) o = 1;
          }
          out[pi * (size_t)ch + (size_t)c] = s == 1.0f ? r : o + s * (r - o);
        }
        if (ch == 4) out[pi * 4 + 3] = in[pi * 4 + 3];
      }
  }
}

/* A model whose output overflows (huge weights, a broken export) would hand the caller inf or NaN,
 * which a float layer or TIFF keeps: such a result is an error, never a picture. */
static i2i_status check_finite(i2i_ctx *ctx, int nimg, int width, int height, int ch, float *const *outputs) {
  size_t px = (size_t)width * (size_t)height, bad = 0;
  for (int i = 0; i < nimg; i++) {
    const float *o = outputs[i];
#pragma omp parallel for num_threads(ctx->threads) schedule(static) reduction(+ : bad) if (px > 65536)
    for (size_t k = 0; k < px; k++)
      bad += !isfinite(o[k * (size_t)ch]) | !isfinite(o[k * (size_t)ch + 1]) | !isfinite(o[k * (size_t)ch + 2]);
  }
  if (!bad) return I2I_OK;
  return i2i_fail(ctx, I2I_E_LIMIT, "the model's output is not finite (inf or NaN) at %zu pixel%s: the model "
                  "overflows float32 on this input; the result is not usable", bad, bad == 1 ? "" : "s");
}

static bool device_failure(i2i_status st) { return st == I2I_E_DEVICE || st == I2I_E_DEVICE_NOMEM; }

/* After a GPU failure: a dead module (sticky error) is dropped from the context so later runs
 * go straight to the CPU with the reason. */
static void after_device_failure(i2i_ctx *ctx, const i2i_cuda_ext *ext, void *self, char *why, size_t whylen) {
  snprintf(why, whylen, "the GPU failed (%.400s); finished on the CPU", ctx->err);
  if (ext && ext->get_stats) {
    i2i_cuda_stats s;
    ext->get_stats(self, &s);
    if (s.dead) {
      char reason[I2I_ERRLEN];
      snprintf(reason, sizeof reason, "the GPU was disabled after an error (%.400s)", ctx->err);
      cuda_backend_disable(ctx, reason);
    }
  }
  i2i_clear_err(ctx);
}

/* A layer-wise GPU run: the CPU executor hands each convolution to the module's conv_step. */
typedef struct {
  const i2i_cuda_ext *ext;
  void *self;
  int bands; /* the most bands of a step */
} layerwise;

static i2i_status layerwise_conv(void *user, i2i_ctx *ctx, const i2i_model *m, const i2i_plan *p, i2i_run_state *st,
                                 int step, double done) {
  layerwise *L = user;
  int b = 0;
  i2i_status s = L->ext->conv_step(L->self, ctx, m, p, st, step, done, &b);
  if (b > L->bands) L->bands = b;
  return s;
}

/* The run's working memory is kept in the context for the next run: a fresh buffer's pages fault
 * in one at a time as they are first written, a few percent of a run at 512x512 and more for the
 * tiles of a large picture, the pictures of a folder and a preview's repeated runs. Slot 0 holds
 * the arena, slot 1 the scratch. */
enum { KEPT_ARENA, KEPT_SCRATCH };

/* The bytes the kept buffer of `slot` would serve a need of `bytes` with: 0 unless it holds them
 * and at most twice as many (a large run's memory is not held for small runs). */
static size_t kept_fits(const i2i_ctx *ctx, int slot, size_t bytes) {
  size_t have = ctx->kept_bytes[slot];
  return ctx->kept[slot] && have >= bytes && have / 2 <= bytes ? have : 0;
}

/* A buffer of at least `bytes` (*got: its size): the kept one when it fits, else a new one, the
 * kept one freed first. NULL when out of memory. */
static void *take_buffer(i2i_ctx *ctx, int slot, size_t bytes, size_t *got) {
  void *p = kept_fits(ctx, slot, bytes) ? ctx->kept[slot] : NULL;
  *got = p ? ctx->kept_bytes[slot] : bytes;
  if (!p) i2i_free_aligned(ctx, ctx->kept[slot]);
  ctx->kept[slot] = NULL;
  ctx->kept_bytes[slot] = 0;
  return p ? p : i2i_alloc_aligned(ctx, bytes);
}

/* Hands a run's buffer back to the context for the next run. A run that had none (the whole image
 * on the GPU) releases what was kept. */
static void keep_buffer(i2i_ctx *ctx, int slot, void *p, size_t bytes) {
  i2i_free_aligned(ctx, ctx->kept[slot]);
  ctx->kept[slot] = p;
  ctx->kept_bytes[slot] = p ? bytes : 0;
}

/* What to do when a run of width x height (of a full_w x full_h picture) does not fit `avail`
 * bytes: the largest working size (short side, a multiple of 16, at least 64) at which the run
 * and run_scaled's buffers would, a tenth spare. The intermediates (`arena` bytes for the plan's
 * padded size) grow with the padded pixels; the scratch (`fixed`) does not. */
static void fit_advice(const i2i_model *m, const i2i_plan *plan, int nimg, int ch, int width, int height, int full_w,
                       int full_h, size_t arena, size_t fixed, uint64_t avail, char *out, size_t n) {
  int ph, pw, now = width < height ? width : height;
  /* what run_scaled has written is in use already; its results' pages are not yet */
  double per_px = (double)arena / ((double)plan->h * (double)plan->w), room = (double)avail;
  if (width != full_w || height != full_h) room += scaled_hold_bytes(nimg, ch, full_h, width, height, 1);
  for (int s = (now - 1) / 16 * 16; s >= 64; s -= 16) {
    int w2, h2;
    scaled_size(full_w, full_h, s, &w2, &h2);
    padded_size(m, h2, w2, &ph, &pw);
    if ((double)fixed + per_px * (double)ph * (double)pw + scaled_hold_bytes(nimg, ch, full_h, w2, h2, 2) <= 0.9 * room) {
      snprintf(out, n, "it would fit at a working size (short side) of %d pixels or less", s);
      return;
    }
  }
  snprintf(out, n, "it does not fit at any working size: free some memory");
}

i2i_status run_native(i2i_ctx *ctx, const i2i_model *m, const i2i_run_params *rp, int nimg, int width, int height,
                      const float *const *inputs, float *const *outputs, i2i_run_report *rep, double pbase, double pspan,
                      int full_w, int full_h) {
  int ch = rp->layout == I2I_PIXELS_RGBA ? 4 : 3;
  int ph, pw;
  padded_size(m, height, width, &ph, &pw);
  i2i_plan *plan;
  i2i_status st = get_plan(ctx, m, nimg, ph, pw, &plan);
  if (st) return st;
  size_t arena_bytes, scratch_bytes, total;
  if (!i2i_mul_ok(plan->arena_floats, sizeof(float), &arena_bytes) ||
      !i2i_mul_ok(plan->scratch_floats, sizeof(float), &scratch_bytes) || !i2i_add_ok(arena_bytes, scratch_bytes, &total))
    return i2i_fail(ctx, I2I_E_LIMIT, "the run needs more memory than can be addressed");
  /* the backend first: the GPU's image path needs no host arena */
  const i2i_backend_ops *be = &i2i_cpu_backend;
  const i2i_cuda_ext *ext = NULL;
  void *self = NULL;
  char why[512] = "";
  if (ctx->forced != I2I_BACKEND_CPU) {
    const i2i_backend_ops *cu = cuda_backend(ctx, &self);
    if (cu) {
      be = cu;
      ext = ctx->cuda_ext;
    } else if (ctx->forced == I2I_BACKEND_CUDA) {
      return i2i_fail(ctx, I2I_E_DEVICE, "the CUDA backend was requested but cannot run: %s", ctx->cuda_why);
    } else {
      snprintf(why, sizeof why, "no usable NVIDIA GPU (%.400s); running on the CPU", ctx->cuda_why);
    }
  }
  i2i_run_state rs = {0};
  rs.threads = ctx->threads;
  rs.mode = rp->pix2pix_mode;
  rs.seed = rp->seed;
  rs.progress = rp->progress;
  rs.progress_user = rp->progress_user;
  rs.progress_base = pbase;
  rs.progress_span = pspan;
  rs.device_budget = ctx->p.memory_budget;
  double t0 = now_s();
  bool done = false;
  /* the whole image on the GPU; when it needs more device memory than the budget (or than the
   * GPU has), layer by layer with the whole-image intermediates in host memory; then the CPU */
  layerwise lw = {ext, self, 0};
  bool by_layer = false;
  if (ext && ext->begin_run) ext->begin_run(self, rs.device_budget);
  if (ext && ext->execute_images) {
    i2i_cuda_images im = {nimg, width, height, (int)rp->layout, rp->strength, inputs, outputs};
    st = ext->execute_images(self, ctx, m, plan, &rs, &im);
    by_layer = st == I2I_E_DEVICE_NOMEM && ext->conv_step;
    done = st == I2I_OK || !device_failure(st) || (ctx->forced == I2I_BACKEND_CUDA && !by_layer);
    if (by_layer) {
      i2i_log(ctx, I2I_LOG_INFO, "%s; running layer by layer on the GPU", ctx->err);
      snprintf(why, sizeof why, "layer by layer: the whole image needs more GPU memory than %s; whole-image "
               "intermediates in host memory", ctx->p.memory_budget ? "the budget" : "is free");
      i2i_clear_err(ctx);
    } else if (!done) {
      after_device_failure(ctx, ext, self, why, sizeof why);
      be = &i2i_cpu_backend;
    }
  }
  size_t arena_got = 0, scratch_got = 0, scratch_need = scratch_bytes ? scratch_bytes : 64;
  if (!done) {
    /* memory the kept buffers will serve is already this process's */
    uint64_t avail =
        i2i_host_memory_available(0) + kept_fits(ctx, KEPT_ARENA, arena_bytes) + kept_fits(ctx, KEPT_SCRATCH, scratch_need);
    if ((uint64_t)total > avail) {
      /* figures in MiB below a GiB: "0.0 GiB ... 0.0 GiB" told nothing */
      bool gib = (uint64_t)total >= (1u << 30);
      double unit = gib ? 1073741824.0 : 1048576.0;
      char advice[160];
      fit_advice(m, plan, nimg, ch, width, height, full_w, full_h, arena_bytes, scratch_need, avail, advice,
                 sizeof advice);
      return i2i_fail(ctx, I2I_E_NOMEM,
                      "a %dx%d run needs %.1f %s of working memory (%d whole-image intermediates), %.1f %s is "
                      "available; %s",
                      width, height, total / unit, gib ? "GiB" : "MiB", plan->peak_live, avail / unit,
                      gib ? "GiB" : "MiB", advice);
    }
    rs.arena = take_buffer(ctx, KEPT_ARENA, arena_bytes, &arena_got);
    rs.scratch = take_buffer(ctx, KEPT_SCRATCH, scratch_need, &scratch_got);
    if (!rs.arena || !rs.scratch) {
      i2i_free_aligned(ctx, rs.arena);
      i2i_free_aligned(ctx, rs.scratch);
      return i2i_fail(ctx, I2I_E_NOMEM, "out of memory: the run needs %.1f MiB of working memory", total / 1048576.0);
    }
    fill_input(m, plan, rs.arena, nimg, width, height, ch, inputs);
    if (by_layer) {
      rs.conv_hook = layerwise_conv;
      rs.conv_user = &lw;
      st = i2i_cpu_backend.execute(NULL, ctx, m, plan, &rs);
      rs.conv_hook = NULL;
      rs.tiles = lw.bands;
    } else {
      st = be->execute(be == &i2i_cpu_backend ? NULL : self, ctx, m, plan, &rs);
    }
    if (device_failure(st) && be != &i2i_cpu_backend && ctx->forced != I2I_BACKEND_CUDA) {
      after_device_failure(ctx, ext, self, why, sizeof why);
      be = &i2i_cpu_backend;
      rs.tiles = 0;
      fill_input(m, plan, rs.arena, nimg, width, height, ch, inputs); /* the failed run may have written it */
      st = be->execute(NULL, ctx, m, plan, &rs);
    }
    if (!st) read_output(m, plan, rs.arena, nimg, width, height, ch, rp->strength, inputs, outputs);
  }
  /* at the model's own size, before any upscaling: a small pass */
  if (!st) st = check_finite(ctx, nimg, width, height, ch, outputs);
  double t1 = now_s();
  if (rep) {
    bool gpu = be != &i2i_cpu_backend;
    rep->backend = gpu ? I2I_BACKEND_CUDA : I2I_BACKEND_CPU;
    snprintf(rep->message, sizeof rep->message, "%s", why);
    rep->tiles = rs.tiles > 0 ? rs.tiles : 1;
    rep->whole_intermediates = plan->peak_live;
    rep->intermediate_bytes = arena_bytes;
    rep->workspace_bytes = scratch_bytes;
    if (gpu && ext && ext->get_stats) {
      i2i_cuda_stats s;
      ext->get_stats(self, &s);
      rep->peak_device_bytes = s.peak_device_bytes;
    }
    rep->run_width = pw;
    rep->run_height = ph;
    rep->seconds += t1 - t0;
  }
  keep_buffer(ctx, KEPT_ARENA, rs.arena, arena_got);
  keep_buffer(ctx, KEPT_SCRATCH, rs.scratch, scratch_got);
  return st;
}

i2i_status i2i_run(i2i_ctx *ctx, const i2i_model *m, const i2i_run_params *params, int nimg, int width, int height,
                   const float *const *inputs, float *const *outputs, i2i_run_report *report) {
  if (!ctx) return I2I_E_ARG;
  if (!m || !inputs || !outputs) return i2i_fail(ctx, I2I_E_ARG, "i2i_run: NULL argument");
  i2i_run_params dp;
  if (!params) {
    i2i_run_default_params(&dp);
    params = &dp;
  }
  if (report) memset(report, 0, sizeof *report);
  if (nimg < 1 || nimg > 4096) return i2i_fail(ctx, I2I_E_ARG, "i2i_run: %d images (1 to 4096)", nimg);
  for (int i = 0; i < nimg; i++)
    if (!inputs[i] || !outputs[i]) return i2i_fail(ctx, I2I_E_ARG, "i2i_run: image %d has no buffer", i);
  if (width < 1 || height < 1) return i2i_fail(ctx, I2I_E_ARG, "i2i_run: image size %dx%d", width, height);
  const i2i_limits *lim = &ctx->p.limits;
  if ((uint32_t)width > lim->max_image_side || (uint32_t)height > lim->max_image_side ||
      (uint64_t)width * (uint64_t)height > lim->max_image_pixels)
    return i2i_fail(ctx, I2I_E_LIMIT, "a %dx%d image exceeds the limits (side %u, %llu pixels)", width, height,
                    lim->max_image_side, (unsigned long long)lim->max_image_pixels);
  if (params->layout != I2I_PIXELS_RGBA && params->layout != I2I_PIXELS_RGB_SIGNED)
    return i2i_fail(ctx, I2I_E_ARG, "i2i_run: unknown pixel layout %d", (int)params->layout);
  if (params->pix2pix_mode < I2I_PIX2PIX_FAITHFUL || params->pix2pix_mode > I2I_PIX2PIX_EVAL)
    return i2i_fail(ctx, I2I_E_ARG, "i2i_run: unknown Pix2Pix mode %d", (int)params->pix2pix_mode);
  if (!(params->strength >= 0.0f && params->strength <= 1.0f))
    return i2i_fail(ctx, I2I_E_ARG, "i2i_run: strength %g outside 0..1", params->strength);
  if (params->scale < 0 || (params->scale > 0 && params->scale < 64))
    return i2i_fail(ctx, I2I_E_ARG, "i2i_run: scale %d (0 for native, or a short side of at least 64)", params->scale);
  if (m->info.family == I2I_FAMILY_PATCHGAN || m->info.in_channels != 3 || m->info.out_channels != 3)
    return i2i_fail(ctx, I2I_E_UNSUPPORTED, "this model is not an image-to-image generator (%d input and %d output channels%s)",
                    m->info.in_channels, m->info.out_channels,
                    m->info.family == I2I_FAMILY_PATCHGAN ? ", a PatchGAN discriminator" : "");
  i2i_clear_err(ctx);
  double t0 = now_s();
  i2i_status st = run_scaled(ctx, m, params, nimg, width, height, inputs, outputs, report);
  if (report) report->seconds = now_s() - t0;
  return st;
}
