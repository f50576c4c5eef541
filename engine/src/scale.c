/* scale.c: the working resolution. A photo whose short side exceeds `scale` is reduced (area
 * average) to that short side, translated there, and the model's change is brought back:
 *
 *   out = in + up(model(down(in)) - down(in))
 *
 * i.e. the model's result upsampled (bilinear) plus the original's own detail above the working
 * resolution. Smaller images, and scale 0, run natively (run.c). Alpha is never resampled.
 */
#include <math.h>
#include <string.h>

#include "internal.h"

typedef struct {
  int *start, *count;
  float *weight;     /* count[i] weights for output i, at start offsets of w_off[i] */
  int *w_off;
} area_map;

static void area_free(i2i_ctx *ctx, area_map *a) {
  i2i_dealloc(ctx, a->start);
  i2i_dealloc(ctx, a->count);
  i2i_dealloc(ctx, a->weight);
  i2i_dealloc(ctx, a->w_off);
}

/* Box-filter weights mapping `in` samples onto `out` (< in) samples by exact area overlap. */
static bool area_build(i2i_ctx *ctx, area_map *a, int in, int out) {
  double r = (double)in / out;
  int maxc = (int)ceil(r) + 2;
  a->start = i2i_alloc(ctx, sizeof(int) * (size_t)out);
  a->count = i2i_alloc(ctx, sizeof(int) * (size_t)out);
  a->w_off = i2i_alloc(ctx, sizeof(int) * (size_t)out);
  a->weight = i2i_alloc(ctx, sizeof(float) * (size_t)out * (size_t)maxc);
  if (!a->start || !a->count || !a->w_off || !a->weight) return false;
  for (int o = 0; o < out; o++) {
    double lo = o * r, hi = (o + 1) * r;
    int s = (int)floor(lo), e = (int)ceil(hi);
    if (e > in) e = in;
    a->start[o] = s;
    a->count[o] = e - s;
    a->w_off[o] = o * maxc;
    for (int i = s; i < e; i++) {
      double ov = fmin(hi, i + 1.0) - fmax(lo, (double)i);
      a->weight[o * maxc + (i - s)] = (float)(ov / r);
    }
  }
  return true;
}

/* Downsamples RGB of an interleaved image (ch 3 or 4 floats per pixel) to w2 x h2 x ch (alpha
 * set to 1, unused). RGBA values are clamped to [0,1] first, as the model sees them. */
static void downsample(const float *src, int w, int h, int ch, float *dst, int w2, int h2, const area_map *ax,
                       const area_map *ay, float *tmp /* w2*h*3 */, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int y = 0; y < h; y++)
    for (int o = 0; o < w2; o++) {
      float acc[3] = {0, 0, 0};
      for (int k = 0; k < ax->count[o]; k++) {
        const float *px = src + ((size_t)y * (size_t)w + (size_t)(ax->start[o] + k)) * (size_t)ch;
        float wgt = ax->weight[ax->w_off[o] + k];
        for (int c = 0; c < 3; c++) {
          float v = px[c];
          if (ch == 4) v = v >= 0 ? (v > 1 ? 1 : v) : 0;
          else if (isnan(v)) v = 0;
          acc[c] += wgt * v;
        }
      }
      for (int c = 0; c < 3; c++) tmp[((size_t)y * (size_t)w2 + (size_t)o) * 3 + (size_t)c] = acc[c];
    }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int o = 0; o < h2; o++)
    for (int x = 0; x < w2; x++) {
      float acc[3] = {0, 0, 0};
      for (int k = 0; k < ay->count[o]; k++) {
        float wgt = ay->weight[ay->w_off[o] + k];
        const float *t = tmp + ((size_t)(ay->start[o] + k) * (size_t)w2 + (size_t)x) * 3;
        for (int c = 0; c < 3; c++) acc[c] += wgt * t[c];
      }
      float *d = dst + ((size_t)o * (size_t)w2 + (size_t)x) * (size_t)ch;
      for (int c = 0; c < 3; c++) d[c] = acc[c];
      if (ch == 4) d[3] = 1.0f;
    }
}

void scaled_size(int width, int height, int scale, int *w2, int *h2) {
  int shortside = width < height ? width : height;
  double f = (double)scale / shortside;
  *w2 = (int)lround(width * f);
  *h2 = (int)lround(height * f);
  if (*w2 < 1) *w2 = 1;
  if (*h2 < 1) *h2 = 1;
}

/* Floats of run_scaled's buffers: per image the reduced picture and the model's result (`small`
 * each), and one buffer of the reduction (`tmp`). */
static void scaled_buffers(int ch, int height, int w2, int h2, size_t *small, size_t *tmp) {
  *small = (size_t)w2 * (size_t)h2 * (size_t)ch;
  *tmp = (size_t)w2 * (size_t)height * 3;
}

double scaled_hold_bytes(int nimg, int ch, int height, int w2, int h2, int per_image) {
  size_t small, tmp;
  scaled_buffers(ch, height, w2, h2, &small, &tmp);
  return sizeof(float) * ((double)nimg * per_image * (double)small + (double)tmp);
}

i2i_status run_scaled(i2i_ctx *ctx, const i2i_model *m, const i2i_run_params *rp, int nimg, int width, int height,
                      const float *const *inputs, float *const *outputs, i2i_run_report *rep) {
  int shortside = width < height ? width : height;
  if (rp->scale == 0 || shortside <= rp->scale)
    return run_native(ctx, m, rp, nimg, width, height, inputs, outputs, rep, 0.0, 1.0, width, height);
  int w2, h2;
  scaled_size(width, height, rp->scale, &w2, &h2);
  int ch = rp->layout == I2I_PIXELS_RGBA ? 4 : 3;
  size_t small, tmpn;
  scaled_buffers(ch, height, w2, h2, &small, &tmpn);
  area_map ax = {0}, ay = {0};
  float **down = i2i_calloc(ctx, (size_t)nimg, sizeof(float *));
  float **res = i2i_calloc(ctx, (size_t)nimg, sizeof(float *));
  float *tmp = i2i_alloc(ctx, sizeof(float) * tmpn);
  i2i_status st = I2I_OK;
  if (!down || !res || !tmp || !area_build(ctx, &ax, width, w2) || !area_build(ctx, &ay, height, h2)) {
    st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory for the working resolution");
    goto done;
  }
  for (int i = 0; i < nimg; i++) {
    down[i] = i2i_alloc(ctx, sizeof(float) * small);
    res[i] = i2i_alloc(ctx, sizeof(float) * small);
    if (!down[i] || !res[i]) {
      st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory for the working resolution");
      goto done;
    }
    downsample(inputs[i], width, height, ch, down[i], w2, h2, &ax, &ay, tmp, ctx->threads);
  }
  i2i_run_params p2 = *rp;
  p2.strength = 1.0f;
  st = run_native(ctx, m, &p2, nimg, w2, h2, (const float *const *)down, res, rep, 0.0, 0.98, width, height);
  if (st) goto done;
  /* out = in + bilinear_up(res - down), then strength */
  double sx = (double)w2 / width, sy = (double)h2 / height;
  float s = rp->strength;
  for (int i = 0; i < nimg; i++) {
    float *d = res[i];
    for (size_t k = 0; k < (size_t)w2 * (size_t)h2; k++)
      for (int c = 0; c < 3; c++) d[k * (size_t)ch + (size_t)c] -= down[i][k * (size_t)ch + (size_t)c];
    const float *in = inputs[i];
    float *out = outputs[i];
#pragma omp parallel for num_threads(ctx->threads) schedule(static)
    for (int y = 0; y < height; y++) {
      double fy = (y + 0.5) * sy - 0.5;
      if (fy < 0) fy = 0;
      int y0 = (int)fy, y1 = y0 + 1 < h2 ? y0 + 1 : h2 - 1;
      float wy = (float)(fy - y0);
      for (int x = 0; x < width; x++) {
        double fx = (x + 0.5) * sx - 0.5;
        if (fx < 0) fx = 0;
        int x0 = (int)fx, x1 = x0 + 1 < w2 ? x0 + 1 : w2 - 1;
        float wx = (float)(fx - x0);
        size_t pi = ((size_t)y * (size_t)width + (size_t)x) * (size_t)ch;
        for (int c = 0; c < 3; c++) {
          float a = d[((size_t)y0 * (size_t)w2 + (size_t)x0) * (size_t)ch + (size_t)c];
          float b = d[((size_t)y0 * (size_t)w2 + (size_t)x1) * (size_t)ch + (size_t)c];
          float cc = d[((size_t)y1 * (size_t)w2 + (size_t)x0) * (size_t)ch + (size_t)c];
          float dd = d[((size_t)y1 * (size_t)w2 + (size_t)x1) * (size_t)ch + (size_t)c];
          float delta = (a * (1 - wx) + b * wx) * (1 - wy) + (cc * (1 - wx) + dd * wx) * wy;
          float o = in[pi + (size_t)c];
          if (ch == 4) o = o >= 0 ? (o > 1 ? 1 : o) : 0;
          else if (isnan(o)) o = 0;
          float r = o + delta;
          if (ch == 4) r = r < 0 ? 0 : (r > 1 ? 1 : r);
          else r = r < -1 ? -1 : (r > 1 ? 1 : r);
          out[pi + (size_t)c] = o + s * (r - o);
        }
        if (ch == 4) out[pi + 3] = in[pi + 3];
      }
    }
  }
  if (rp->progress && rp->progress(rp->progress_user, 1.0)) st = i2i_fail(ctx, I2I_E_CANCELLED, "cancelled");
done:
  if (down)
    for (int i = 0; i < nimg; i++) i2i_dealloc(ctx, down[i]);
  if (res)
    for (int i = 0; i < nimg; i++) i2i_dealloc(ctx, res[i]);
  i2i_dealloc(ctx, down);
  i2i_dealloc(ctx, res);
  i2i_dealloc(ctx, tmp);
  area_free(ctx, &ax);
  area_free(ctx, &ay);
  return st;
}
