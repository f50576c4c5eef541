/* train/augment.c: the training data pipeline of mmagic's configs, per image pair: bicubic
 * resize to load_size x load_size (aspect not kept, as mmcv's Resize), a random size x size
 * crop at a position the pair shares, horizontal flips (CycleGAN: each image on its own;
 * Pix2Pix: the pair together), then [0,1] RGB to the models' [-1,1] CHW.
 *
 * The random choices come from (seed, iteration, batch index), so a resumed run draws the same.
 * Bicubic is OpenCV's INTER_CUBIC (a = -0.75, pixel centres, replicated border), computed in
 * float without rounding to 8 bits. Not an image library: no colour management, no alpha.
 */
#include <math.h>
#include <string.h>

#include "train.h"

static inline void cubic_weights(float t, float w[4]) {
  const float a = -0.75f;
  float t1 = t + 1.0f, u = 1.0f - t, u1 = u + 1.0f;
  w[0] = ((a * t1 - 5.0f * a) * t1 + 8.0f * a) * t1 - 4.0f * a;
  w[1] = ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f;
  w[2] = ((a + 2.0f) * u - (a + 3.0f)) * u * u + 1.0f;
  w[3] = ((a * u1 - 5.0f * a) * u1 + 8.0f * a) * u1 - 4.0f * a;
}

static inline void taps(int dst, int dn, int sn, int idx[4], float w[4]) {
  double scale = (double)sn / (double)dn;
  double f = ((double)dst + 0.5) * scale - 0.5;
  int i0 = (int)floor(f);
  cubic_weights((float)(f - i0), w);
  for (int k = 0; k < 4; k++) {
    int i = i0 - 1 + k;
    idx[k] = i < 0 ? 0 : (i >= sn ? sn - 1 : i);
  }
}

i2i_status i2i_train_resize(const float *src, int sw, int sh, int channels, float *dst, int dw, int dh) {
  if (!src || !dst || sw < 1 || sh < 1 || dw < 1 || dh < 1 || channels < 1 || channels > 16) return I2I_E_ARG;
  for (int y = 0; y < dh; y++) {
    int iy[4];
    float wy[4];
    taps(y, dh, sh, iy, wy);
    for (int x = 0; x < dw; x++) {
      int ix[4];
      float wx[4];
      taps(x, dw, sw, ix, wx);
      for (int c = 0; c < channels; c++) {
        float acc = 0;
        for (int a = 0; a < 4; a++) {
          const float *row = src + (size_t)iy[a] * (size_t)sw * (size_t)channels;
          float r = 0;
          for (int b = 0; b < 4; b++) r += wx[b] * row[(size_t)ix[b] * (size_t)channels + (size_t)c];
          acc += wy[a] * r;
        }
        dst[((size_t)y * (size_t)dw + (size_t)x) * (size_t)channels + (size_t)c] = acc;
      }
    }
  }
  return I2I_OK;
}

/* One image (RGBA) into CHW [-1,1] at `out`: resized to L x L when needed, cropped at (ox, oy),
 * optionally flipped. */
static i2i_status prepare(i2i_trainer *tr, const float *img, int w, int h, int ox, int oy, bool flip, float *out) {
  int S = tr->p.size, L = tr->p.augment ? tr->p.load_size : S;
  const float *src = img;
  if (w != L || h != L) {
    i2i_status st = i2i_train_resize(img, w, h, 4, tr->host_tmp, L, L);
    if (st) return i2i_fail(tr->ctx, st, "cannot resize a %dx%d image", w, h);
    src = tr->host_tmp;
  }
  size_t plane = (size_t)S * (size_t)S;
  for (int y = 0; y < S; y++)
    for (int x = 0; x < S; x++) {
      int sx = ox + (flip ? S - 1 - x : x);
      const float *px = src + ((size_t)(oy + y) * (size_t)L + (size_t)sx) * 4;
      for (int c = 0; c < 3; c++) {
        float v = px[c];
        if (!(v >= 0)) v = 0;
        if (v > 1) v = 1;
        out[(size_t)c * plane + (size_t)y * (size_t)S + (size_t)x] = v * 2.0f - 1.0f;
      }
    }
  return I2I_OK;
}

i2i_status augment_pair(i2i_trainer *tr, int index, const float *a, int aw, int ah, const float *b, int bw, int bh) {
  const i2i_train_params *p = &tr->p;
  if (aw < 8 || ah < 8 || bw < 8 || bh < 8)
    return i2i_fail(tr->ctx, I2I_E_ARG, "training images must be at least 8x8 pixels (got %dx%d and %dx%d)", aw, ah, bw, bh);
  if (!p->augment && (aw != p->size || ah != p->size || bw != p->size || bh != p->size))
    return i2i_fail(tr->ctx, I2I_E_ARG, "without augmentation images must be %dx%d (got %dx%d and %dx%d)", p->size, p->size,
                    aw, ah, bw, bh);
  int ox = 0, oy = 0;
  bool fa = false, fb = false;
  if (p->augment) {
    uint32_t w[4];
    train_rand4(p->seed, RNG_AUGMENT, (uint64_t)tr->iteration, (uint32_t)index, 0, w);
    uint32_t span = (uint32_t)(p->load_size - p->size + 1);
    ox = (int)rand_below(w[0], span);
    oy = (int)rand_below(w[1], span);
    if (p->flip) {
      fa = w[2] >> 31;
      fb = p->kind == I2I_TRAIN_CYCLEGAN ? (w[3] >> 31) != 0 : fa;
    }
  }
  size_t off = tr->img_floats * (size_t)index;
  i2i_status st = prepare(tr, a, aw, ah, ox, oy, fa, tr->host_a + off);
  if (!st) st = prepare(tr, b, bw, bh, ox, oy, fb, tr->host_b + off);
  return st;
}
