/* pixels.c: drawable pixels <-> interleaved float R'G'B'A, and the procedure run (i2i_apply).
 *
 * Reads the whole drawable in its own space, runs the engine on all of it, and
 * writes only the selection box back through the shadow buffer, merged as one undo step (GIMP
 * applies the selection mask, so feathering blends). Nothing touches the drawable before that
 * merge, so a killed run leaves the image as it was. No dialog code; version calls via compat.
 */
#include <gegl.h>
#include <string.h>

#include "pixels.h"

/* Perceptual 8- and 16-bit integer layers are converted here, not by babl. babl picks a
 * conversion path by timing the first time a process needs one, and some of its paths are a
 * rounding step off: in GIMP 3 the same u8 layer read as slightly different floats in about one
 * process in four (8 of 256 values), so the output was not always `i2i translate`'s. These
 * conversions are exact and match `i2i translate`: v / 255 (v / 65535) in, v * 255 + 0.5 with
 * clamping out. Gray is written back through babl (luma in the drawable's space). */
#define RAW_BAND_ROWS 64

static void raw_detect(i2i_layer *L, const Babl *f) {
  static const char *const names[] = {"R'G'B' u8", "R'G'B'A u8", "Y' u8", "Y'A u8",
                                      "R'G'B' u16", "R'G'B'A u16", "Y' u16", "Y'A u16"};
  static const int channels[] = {3, 4, 1, 2};
  for (int i = 0; i < 8; i++)
    if (babl_format_with_space(names[i], f) == f) {
      L->raw_format = f;
      L->raw_channels = channels[i % 4];
      L->raw_bytes = i < 4 ? 1 : 2;
      return;
    }
}

/* Bytes of a band of RAW_BAND_ROWS (at most `height`) rows of `width` raw pixels; 0 (which
 * g_try_malloc answers with NULL) when it does not fit a size_t. */
static size_t raw_band_bytes(const i2i_layer *L, int width, int height) {
  size_t px, bytes;
  int rows = height < RAW_BAND_ROWS ? height : RAW_BAND_ROWS;
  if (width < 1 || rows < 1 || !g_size_checked_mul(&px, (size_t)width, (size_t)rows) ||
      !g_size_checked_mul(&bytes, px, (size_t)L->raw_channels * (size_t)L->raw_bytes))
    return 0;
  return bytes;
}

static inline float raw_sample(const guchar *p, int bytes) {
  return bytes == 1 ? (float)p[0] / 255.0f : (float)*(const guint16 *)p / 65535.0f;
}

/* `n` pixels of the raw format to float R'G'B'A. */
static void raw_to_float(const i2i_layer *L, const guchar *src, size_t n, float *dst) {
  int b = L->raw_bytes, ch = L->raw_channels;
  for (size_t i = 0; i < n; i++, src += (size_t)ch * b, dst += 4) {
    if (ch >= 3) {
      dst[0] = raw_sample(src, b);
      dst[1] = raw_sample(src + b, b);
      dst[2] = raw_sample(src + 2 * b, b);
    } else {
      dst[0] = dst[1] = dst[2] = raw_sample(src, b);
    }
    dst[3] = ch == 4 ? raw_sample(src + 3 * b, b) : ch == 2 ? raw_sample(src + b, b) : 1.0f;
  }
}

static inline void raw_put(guchar *p, int bytes, float v) {
  float m = bytes == 1 ? 255.0f : 65535.0f;
  unsigned q = !(v > 0.0f) ? 0u : v >= 1.0f ? (unsigned)m : (unsigned)(v * m + 0.5f);
  if (bytes == 1) p[0] = (guchar)q;
  else *(guint16 *)p = (guint16)q;
}

/* `n` float R'G'B'A pixels to the raw RGB(A) format (gray goes through babl). */
static void float_to_raw(const i2i_layer *L, const float *src, size_t n, guchar *dst) {
  int b = L->raw_bytes, ch = L->raw_channels;
  for (size_t i = 0; i < n; i++, src += 4, dst += (size_t)ch * b)
    for (int c = 0; c < ch; c++) raw_put(dst + (size_t)c * b, b, src[c]);
}

bool i2i_layer_read(i2i_gimp_drawable d, i2i_layer *L, bool read, char **err) {
  memset(L, 0, sizeof *L);
  *err = NULL;
  if (!i2i_drawable_is_valid(d)) {
    *err = g_strdup("i2i: the drawable does not exist (any more)");
    return false;
  }
  if (i2i_drawable_is_group(d)) {
    *err = g_strdup("i2i: a layer group has no pixels of its own; select one of its layers (or merge the group "
                    "first)");
    return false;
  }
  if (i2i_drawable_locker(d)) {
    char *name = i2i_item_name(i2i_drawable_locker(d));
    *err = g_strdup_printf("i2i: the pixels of '%s' are locked; unlock them (the lock in the Layers dialog) "
                           "to translate the layer", name ? name : "the layer");
    g_free(name);
    return false;
  }
  if (gimp_drawable_is_indexed(d)) {
    *err = g_strdup("i2i: indexed images are not supported; convert the image to RGB or grayscale first "
                    "(Image > Mode)");
    return false;
  }
  L->width = i2i_drawable_width(d);
  L->height = i2i_drawable_height(d);
  L->is_rgb = gimp_drawable_is_rgb(d);
  L->has_alpha = gimp_drawable_has_alpha(d);
  const Babl *f = gimp_drawable_get_format(d);
  L->rgba_float = babl_format_with_space("R'G'B'A float", f);
  L->preview_format = babl_format_with_space(L->is_rgb ? (L->has_alpha ? "R'G'B'A u8" : "R'G'B' u8")
                                                       : (L->has_alpha ? "Y'A u8" : "Y' u8"),
                                             f);
  raw_detect(L, f);
  gint x = 0, y = 0, w = 0, h = 0;
  L->any = gimp_drawable_mask_intersect(d, &x, &y, &w, &h) && w > 0 && h > 0;
  L->mx = x;
  L->my = y;
  L->mw = w;
  L->mh = h;
  if (!read || !L->any) return true;
  size_t bytes;
  if (L->width < 1 || L->height < 1 || !i2i_rgba_bytes((size_t)L->width, (size_t)L->height, &bytes)) {
    *err = g_strdup_printf("i2i: a %dx%d layer is too large to process", L->width, L->height);
    return false;
  }
  L->pixels = g_try_malloc(bytes);
  if (!L->pixels) {
    *err = g_strdup_printf("i2i: not enough memory to read the %dx%d layer (%.0f MiB as float RGBA)", L->width,
                           L->height, bytes / 1048576.0);
    return false;
  }
  GeglBuffer *buf = gimp_drawable_get_buffer(d);
  if (!buf) {
    *err = g_strdup("i2i: cannot read the layer's pixels");
    i2i_layer_clear(L);
    return false;
  }
  if (!L->raw_format) {
    gegl_buffer_get(buf, GEGL_RECTANGLE(0, 0, L->width, L->height), 1.0, L->rgba_float, L->pixels,
                    GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
    g_object_unref(buf);
    return true;
  }
  /* exact conversion, a band of rows at a time */
  size_t row_px = (size_t)L->width;
  guchar *raw = g_try_malloc(raw_band_bytes(L, L->width, L->height));
  if (!raw) {
    g_object_unref(buf);
    i2i_layer_clear(L);
    *err = g_strdup("i2i: not enough memory to read the layer");
    return false;
  }
  for (int y0 = 0; y0 < L->height; y0 += RAW_BAND_ROWS) {
    int rows = L->height - y0 < RAW_BAND_ROWS ? L->height - y0 : RAW_BAND_ROWS;
    gegl_buffer_get(buf, GEGL_RECTANGLE(0, y0, L->width, rows), 1.0, L->raw_format, raw, GEGL_AUTO_ROWSTRIDE,
                    GEGL_ABYSS_NONE);
    raw_to_float(L, raw, row_px * (size_t)rows, L->pixels + (size_t)y0 * row_px * 4);
  }
  g_free(raw);
  g_object_unref(buf);
  return true;
}

void i2i_layer_clear(i2i_layer *L) {
  g_free(L->pixels);
  L->pixels = NULL;
}

bool i2i_layer_write(i2i_gimp_drawable d, const i2i_layer *L, float *result, char **err) {
  *err = NULL;
  if (!L->any) return true;
  if (!i2i_drawable_is_valid(d) || i2i_drawable_width(d) != L->width || i2i_drawable_height(d) != L->height) {
    *err = g_strdup("i2i: the layer was removed or resized while i2i was running; nothing was changed");
    return false;
  }
  GeglBuffer *shadow = gimp_drawable_get_shadow_buffer(d);
  if (!shadow) {
    *err = g_strdup("i2i: cannot get the layer's shadow buffer; nothing was changed");
    return false;
  }
  float *first = result + ((size_t)L->my * (size_t)L->width + (size_t)L->mx) * 4;
  guchar *raw = L->raw_format && L->raw_channels >= 3 ? g_try_malloc(raw_band_bytes(L, L->mw, L->mh)) : NULL;
  if (raw) {
    for (int y0 = 0; y0 < L->mh; y0 += RAW_BAND_ROWS) {
      int rows = L->mh - y0 < RAW_BAND_ROWS ? L->mh - y0 : RAW_BAND_ROWS;
      size_t rb = (size_t)L->mw * (size_t)L->raw_channels * (size_t)L->raw_bytes;
      for (int r = 0; r < rows; r++)
        float_to_raw(L, first + ((size_t)(y0 + r) * (size_t)L->width) * 4, (size_t)L->mw, raw + (size_t)r * rb);
      gegl_buffer_set(shadow, GEGL_RECTANGLE(L->mx, L->my + y0, L->mw, rows), 0, L->raw_format, raw,
                      GEGL_AUTO_ROWSTRIDE);
    }
    g_free(raw);
  } else {
    /* a float layer keeps any value, and a linear one's conversion turns a huge one into inf: a
     * model's output past 0..1 (one without tanh) is clamped as 8- and 16-bit layers clamp it */
    for (int y = 0; y < L->mh; y++) {
      float *row = first + (size_t)y * (size_t)L->width * 4;
      for (size_t k = 0; k < (size_t)L->mw * 4; k++)
        if (k % 4 != 3) row[k] = !(row[k] > 0.0f) ? 0.0f : row[k] > 1.0f ? 1.0f : row[k];
    }
    gegl_buffer_set(shadow, GEGL_RECTANGLE(L->mx, L->my, L->mw, L->mh), 0, L->rgba_float, first,
                    (gint)((size_t)L->width * 4 * sizeof(float)));
  }
  gegl_buffer_flush(shadow);
  g_object_unref(shadow);
  /* the commit point: until GIMP's merge the layer is untouched (tests/gimp/safety kills around it) */
  i2i_vlog("shadow buffer written: merging it into the layer");
  if (!gimp_drawable_merge_shadow(d, TRUE)) {
    *err = g_strdup("i2i: GIMP refused to change the layer (is it locked, or a group?); nothing was changed");
    return false;
  }
  gimp_drawable_update(d, L->mx, L->my, L->mw, L->mh);
  return true;
}

int i2i_layer_to_preview(const i2i_layer *L, const float *src, int w, int h, guchar *dst) {
  babl_process(babl_fish(L->rgba_float, L->preview_format), src, dst, (long)w * (long)h);
  return babl_format_get_bytes_per_pixel(L->preview_format);
}

typedef struct {
  double last;
} progress_state;

static int apply_progress(void *user, double f) {
  progress_state *ps = user;
  if (f - ps->last >= 0.01 || f >= 1.0) {
    ps->last = f;
    gimp_progress_update(f);
  }
  return 0; /* GIMP's own Cancel kills the process; nothing has been written by then */
}

GimpPDBStatusType i2i_apply(i2i_gimp_drawable d, i2i_layer *L, const char *label, const char *model_name,
                            const i2i_opts *o, float *cached, bool interactive, char **err) {
  *err = NULL;
  if (!L->any) {
    g_free(cached);
    i2i_vlog("the selection does not touch the layer: nothing to do");
    return GIMP_PDB_SUCCESS;
  }
  float s = (float)(o->strength / 100.0);
  float *result;
  i2i_ctx *ctx = NULL;
  i2i_model *model = NULL;
  if (cached) {
    float *box = cached + ((size_t)L->my * (size_t)L->width + (size_t)L->mx) * 4;
    const float *in = L->pixels + ((size_t)L->my * (size_t)L->width + (size_t)L->mx) * 4;
    i2i_blend_rows(in, box, (size_t)L->width, L->mw, L->mh, s, box, (size_t)L->width);
    result = cached;
    i2i_vlog("using the preview's exact result (strength %.1f%%)", o->strength);
  } else {
    ctx = i2i_ctx_for(o, err);
    if (!ctx) return GIMP_PDB_EXECUTION_ERROR;
    double t0 = i2i_ms_since_start();
    char *path = NULL;
    model = i2i_model_open(ctx, model_name, &path, err);
    if (!model) {
      i2i_ctx_free(ctx);
      return GIMP_PDB_EXECUTION_ERROR;
    }
    double t1 = i2i_ms_since_start();
    i2i_vlog("model load: %.1f ms (%s)", t1 - t0, path);
    g_free(path);
    gimp_progress_init(label);
    progress_state ps = {-1};
    i2i_run_params rp;
    i2i_run_params_for(o, -1, o->scale, &rp);
    rp.progress = apply_progress;
    rp.progress_user = &ps;
    i2i_run_report rep;
    double cpu0 = i2i_cpu_seconds();
    const float *ins[1] = {L->pixels};
    float *outs[1] = {L->pixels};
    i2i_status st = i2i_run(ctx, model, &rp, 1, L->width, L->height, ins, outs, &rep);
    double t2 = i2i_ms_since_start();
    if (st) {
      *err = g_strdup_printf("i2i: %s", i2i_ctx_errmsg(ctx));
      i2i_model_free(model);
      i2i_ctx_free(ctx);
      gimp_progress_end();
      return GIMP_PDB_EXECUTION_ERROR;
    }
    i2i_vlog("compute: %.1f ms (engine %.1f ms, process CPU %.2f s, %dx%d, model at %dx%d, %s%s%s)", t2 - t1,
             rep.seconds * 1e3, i2i_cpu_seconds() - cpu0, L->width, L->height, rep.run_width, rep.run_height,
             rep.backend == I2I_BACKEND_CUDA ? "GPU" : "CPU", rep.message[0] ? "; " : "", rep.message);
    result = L->pixels;
  }
  double t3 = i2i_ms_since_start();
  bool ok;
  if (i2i_drawable_is_valid(d)) {
    i2i_gimp_image image = i2i_drawable_image(d);
    gimp_image_undo_group_start(image);
    ok = i2i_layer_write(d, L, result, err);
    gimp_image_undo_group_end(image);
  } else {
    ok = i2i_layer_write(d, L, result, err); /* says the layer is gone */
  }
  i2i_vlog("write and merge: %.1f ms", i2i_ms_since_start() - t3);
  if (!cached) gimp_progress_end();
  g_free(cached);
  i2i_model_free(model);
  i2i_ctx_free(ctx);
  if (ok && interactive) gimp_displays_flush();
  return ok ? GIMP_PDB_SUCCESS : GIMP_PDB_EXECUTION_ERROR;
}
