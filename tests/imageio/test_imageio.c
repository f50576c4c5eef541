/* tests/imageio/test_imageio.c: tests of converter/imageio (image files and .npy).
 * Round trips for every format and depth, PIL's decoding as an independent oracle (through
 * gen_images.py run by /usr/bin/python3; those checks are skipped when it lacks numpy or
 * PIL), every corrupt-input and unwritable-output case with the destination checked
 * untouched, and the .npy header parser's malformed cases. Not a benchmark or a fuzzer.
 * Usage: test_imageio GEN_IMAGES.PY WORKDIR; ends with "N passed, N failed". */
#include "imageio.h"
#include "npy.h"

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define PHOTO_PATH "/usr/share/gimp/2.0/images/gimp-splash.png"
#define LVL8 (1.0f / 255.0f)
#define LVL16 (1.0f / 65535.0f)

static int n_pass, n_fail;
static const char *gen_script;
static const char *work;
static const char *python = "/usr/bin/python3";
static bool have_python;

static bool check(bool ok, int line, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static bool check(bool ok, int line, const char *fmt, ...)
{
  if (ok) {
    n_pass++;
  } else {
    va_list ap;
    n_fail++;
    printf("FAIL (line %d): ", line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
  }
  return ok;
}

#define CHECK(cond, ...) check((cond), __LINE__, __VA_ARGS__)

static void section(const char *name)
{
  printf("== %s (%d passed, %d failed so far)\n", name, n_pass, n_fail);
  fflush(stdout);
}

/* ---- helpers ------------------------------------------------------------------------ */

static char *wpath(const char *name)
{
  return g_build_filename(work, name, NULL);
}

static bool run_python(const char *cmd, const char *a, const char *b)
{
  const char *argv[] = {python, gen_script, cmd, a, b, NULL};
  gchar *err_out = NULL;
  gint status = 0;
  GError *e = NULL;
  bool ok = g_spawn_sync(NULL, (gchar **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, NULL,
                         &err_out, &status, &e) &&
            g_spawn_check_wait_status(status, NULL);
  if (!ok)
    printf("  python %s %s failed: %s%s\n", cmd, a, e ? e->message : "", err_out ? err_out : "");
  g_clear_error(&e);
  g_free(err_out);
  return ok;
}

static bool write_bytes(const char *path, const void *data, size_t n)
{
  return g_file_set_contents(path, data, (gssize)n, NULL);
}

static gchar *read_bytes(const char *path, gsize *n)
{
  gchar *d = NULL;
  if (!g_file_get_contents(path, &d, n, NULL))
    return NULL;
  return d;
}

static bool file_equals(const char *path, const char *text)
{
  gsize n = 0;
  gchar *d = read_bytes(path, &n);
  bool ok = d && n == strlen(text) && memcmp(d, text, n) == 0;
  g_free(d);
  return ok;
}

/* Entries in dir named ".BASE.*" (left-over temporaries of BASE). */
static int leftover_temps(const char *dir, const char *base)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  const gchar *name;
  gchar *prefix = g_strdup_printf(".%s.", base);
  int n = 0;
  if (!d) {
    g_free(prefix);
    return 0;
  }
  while ((name = g_dir_read_name(d)))
    if (g_str_has_prefix(name, prefix))
      n++;
  g_dir_close(d);
  g_free(prefix);
  return n;
}

static uint32_t rng_state = 12345u;
static uint32_t rnd(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

/* A structured texture: gradients, a sine pattern, sharp checker edges and noise; alpha
 * with exact 0 and 1 regions and a ramp. `levels` > 0 quantizes every value to k/levels. */
static float *make_texture(int w, int h, int levels)
{
  float *p = g_new(float, (size_t)w * h * 4);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      float *q = p + ((size_t)y * w + x) * 4;
      float fx = (float)x / (float)(w - 1), fy = (float)y / (float)(h - 1);
      float noise = (float)(rnd() % 1000) / 1000.0f;
      q[0] = 0.5f + 0.45f * sinf((float)x * 0.21f) * cosf((float)y * 0.13f);
      q[1] = 0.8f * fx + 0.2f * noise;
      q[2] = ((x / 8 + y / 8) % 2) ? 0.85f * fy + 0.1f : 0.05f + 0.1f * noise;
      q[3] = y < h / 4 ? 0.0f : (y < h / 2 && x < w / 3) ? 1.0f : fx;
      for (int c = 0; c < 4; c++) {
        if (q[c] < 0.0f) q[c] = 0.0f;
        if (q[c] > 1.0f) q[c] = 1.0f;
        if (levels > 0)
          q[c] = roundf(q[c] * (float)levels) / (float)levels;
      }
    }
  return p;
}

static void force_gray(float *p, size_t n_px)
{
  for (size_t i = 0; i < n_px; i++)
    p[4 * i + 1] = p[4 * i + 2] = p[4 * i];
}

static void force_opaque(float *p, size_t n_px)
{
  for (size_t i = 0; i < n_px; i++)
    p[4 * i + 3] = 1.0f;
}

/* Max |a - b| over the channels in mask (bit c = channel c). */
static float max_diff(const float *a, const float *b, size_t n_px, unsigned mask)
{
  float m = 0.0f;
  for (size_t i = 0; i < n_px; i++)
    for (int c = 0; c < 4; c++)
      if (mask & (1u << c)) {
        float d = fabsf(a[4 * i + c] - b[4 * i + c]);
        if (!(d <= m))
          m = d;
      }
  return m;
}

static bool all_opaque(const float *p, size_t n_px)
{
  for (size_t i = 0; i < n_px; i++)
    if (p[4 * i + 3] != 1.0f)
      return false;
  return true;
}

/* Same value at `levels` steps (k/levels), as a file of that depth stores it. */
static bool level_equal(const float *a, const float *b, size_t n_px, unsigned mask, float levels)
{
  for (size_t i = 0; i < n_px; i++)
    for (int c = 0; c < 4; c++)
      if ((mask & (1u << c)) &&
          (lrintf(a[4 * i + c] * levels) != lrintf(b[4 * i + c] * levels) ||
           fabsf(a[4 * i + c] - b[4 * i + c]) > 1e-6f))
        return false;
  return true;
}

static bool bit_equal(const float *a, const float *b, size_t n_px, unsigned mask)
{
  for (size_t i = 0; i < n_px; i++)
    for (int c = 0; c < 4; c++)
      if ((mask & (1u << c)) && memcmp(&a[4 * i + c], &b[4 * i + c], sizeof(float)) != 0)
        return false;
  return true;
}

static double psnr_rgb(const float *a, const float *b, size_t n_px)
{
  double se = 0.0;
  for (size_t i = 0; i < n_px; i++)
    for (int c = 0; c < 3; c++) {
      double d = (double)a[4 * i + c] - (double)b[4 * i + c];
      se += d * d;
    }
  se /= (double)n_px * 3.0;
  return se > 0 ? 10.0 * log10(1.0 / se) : 999.0;
}

static size_t distinct_u16(const float *p, size_t n_px, int c)
{
  static uint8_t seen[65536];
  size_t n = 0;
  memset(seen, 0, sizeof seen);
  for (size_t i = 0; i < n_px; i++) {
    long v = lrintf(p[4 * i + c] * 65535.0f);
    if (v < 0 || v > 65535)
      continue;
    if (!seen[v]) {
      seen[v] = 1;
      n++;
    }
  }
  return n;
}

/* Saves, then reloads into *back (the caller frees it when this returns true). */
static bool save_load(const char *name, const float *px, int w, int h,
                      const i2i_img_save_opts *o, i2i_img *back)
{
  char err[512];
  char *p = wpath(name);
  bool ok = CHECK(i2i_img_save(p, px, w, h, o, err, sizeof err), "save %s: %s", name, err);
  if (ok)
    ok = CHECK(i2i_img_load(p, back, err, sizeof err), "reload %s: %s", name, err);
  if (ok)
    ok = CHECK(back->info.width == w && back->info.height == h, "%s: size %dx%d", name,
               back->info.width, back->info.height);
  g_free(p);
  return ok;
}

static i2i_img_save_opts opts_for(i2i_img_type t, int bits, bool is_float, bool gray,
                                  bool alpha)
{
  i2i_img_save_opts o;
  i2i_img_save_opts_default(&o);
  o.type = t;
  o.bits = bits;
  o.is_float = is_float;
  o.gray = gray;
  o.alpha = alpha;
  return o;
}

/* The photo test image: a crop of GIMP's splash photo, else a texture. Caller frees. */
static float *photo_crop(int w, int h, bool *is_photo)
{
  char err[512];
  i2i_img im;
  *is_photo = false;
  if (g_file_test(PHOTO_PATH, G_FILE_TEST_IS_REGULAR) &&
      i2i_img_load(PHOTO_PATH, &im, err, sizeof err)) {
    if (im.info.width >= 60 + w && im.info.height >= 110 + h) {
      float *p = g_new(float, (size_t)w * h * 4);
      for (int y = 0; y < h; y++)
        memcpy(p + (size_t)y * w * 4, im.pixels + ((size_t)(y + 110) * im.info.width + 60) * 4,
               (size_t)w * 4 * sizeof(float));
      i2i_img_free(&im);
      *is_photo = true;
      return p;
    }
    i2i_img_free(&im);
  }
  return make_texture(w, h, 255);
}

/* ---- names -------------------------------------------------------------------------- */

static void test_names(void)
{
  char *png = wpath("exists.png"), *dirpng = wpath("folder.png"), *txt = wpath("x.txt");
  section("names and types");
  CHECK(i2i_img_type_from_name("a.png") == I2I_IMG_PNG, "a.png");
  CHECK(i2i_img_type_from_name("dir/A.JPG") == I2I_IMG_JPEG, "A.JPG");
  CHECK(i2i_img_type_from_name("x.jpeg") == I2I_IMG_JPEG, "x.jpeg");
  CHECK(i2i_img_type_from_name("x.Tif") == I2I_IMG_TIFF, "x.Tif");
  CHECK(i2i_img_type_from_name("x.tiff") == I2I_IMG_TIFF, "x.tiff");
  CHECK(i2i_img_type_from_name("x.webp") == I2I_IMG_WEBP, "x.webp");
  CHECK(i2i_img_type_from_name("x.bmp") == I2I_IMG_UNKNOWN, "x.bmp");
  CHECK(i2i_img_type_from_name("x.") == I2I_IMG_UNKNOWN, "x.");
  CHECK(i2i_img_type_from_name("noext") == I2I_IMG_UNKNOWN, "noext");
  CHECK(i2i_img_type_from_name("d.png/file") == I2I_IMG_UNKNOWN, "d.png/file");
  CHECK(i2i_img_type_from_name(NULL) == I2I_IMG_UNKNOWN, "NULL");
  CHECK(strcmp(i2i_img_type_name(I2I_IMG_WEBP), "WebP") == 0, "type name");
  write_bytes(png, "x", 1);
  g_mkdir_with_parents(dirpng, 0755);
  write_bytes(txt, "x", 1);
  CHECK(i2i_img_path_is_supported(png), "supported: regular .png");
  CHECK(!i2i_img_path_is_supported(dirpng), "not supported: folder named .png");
  CHECK(!i2i_img_path_is_supported(txt), "not supported: .txt");
  CHECK(!i2i_img_path_is_supported("/nonexistent/a.png"), "not supported: missing");
  g_free(png);
  g_free(dirpng);
  g_free(txt);
}

/* ---- round trips -------------------------------------------------------------------- */

static void test_roundtrips(void)
{
  const int w = 200, h = 150;
  const size_t n = (size_t)w * h;
  float *q8 = make_texture(w, h, 255), *q16 = make_texture(w, h, 65535);
  float *fl = make_texture(w, h, 0);
  i2i_img b;
  i2i_img_save_opts o;

  section("round trips: PNG");
  o = opts_for(I2I_IMG_PNG, 8, false, false, false);
  if (save_load("rt_rgb8.png", q8, w, h, &o, &b)) {
    CHECK(b.info.type == I2I_IMG_PNG && b.info.bits == 8 && !b.info.has_alpha &&
          !b.info.is_gray && b.info.lossless, "png8 rgb info");
    CHECK(bit_equal(b.pixels, q8, n, 7), "png8 rgb exact");
    CHECK(all_opaque(b.pixels, n), "png8 rgb: A = 1");
    i2i_img_free(&b);
  }
  o = opts_for(I2I_IMG_PNG, 8, false, false, true);
  if (save_load("rt_rgba8.png", q8, w, h, &o, &b)) {
    CHECK(b.info.has_alpha && b.info.bits == 8, "png8 rgba info");
    CHECK(bit_equal(b.pixels, q8, n, 15), "png8 rgba exact, incl. alpha and RGB under A=0");
    i2i_img_free(&b);
  }
  o = opts_for(I2I_IMG_PNG, 8, false, false, true);
  if (save_load("rt_rgba8_float.png", fl, w, h, &o, &b)) {
    CHECK(max_diff(b.pixels, fl, n, 15) <= 0.5f * LVL8 + 1e-6f,
          "png8 from unquantized floats within half a level (%g)",
          max_diff(b.pixels, fl, n, 15));
    i2i_img_free(&b);
  }
  o = opts_for(I2I_IMG_PNG, 16, false, false, true);
  if (save_load("rt_rgba16.png", q16, w, h, &o, &b)) {
    CHECK(b.info.bits == 16 && b.info.has_alpha, "png16 info (bits %d)", b.info.bits);
    CHECK(level_equal(b.pixels, q16, n, 15, 65535.0f), "png16 exact for k/65535 input");
    CHECK(distinct_u16(b.pixels, n, 1) > 256, "png16 keeps %zu > 256 distinct values",
          distinct_u16(b.pixels, n, 1));
    i2i_img_free(&b);
  }
  o = opts_for(I2I_IMG_PNG, 16, false, false, false);
  if (save_load("rt_rgb16_float.png", fl, w, h, &o, &b)) {
    CHECK(max_diff(b.pixels, fl, n, 7) <= 0.5f * LVL16 + 1e-7f,
          "png16 from floats within half a level (%g)", max_diff(b.pixels, fl, n, 7));
    i2i_img_free(&b);
  }
  {
    float *g8 = make_texture(w, h, 255), *g16 = make_texture(w, h, 65535);
    force_gray(g8, n);
    force_gray(g16, n);
    force_opaque(g8, n);
    force_opaque(g16, n);
    o = opts_for(I2I_IMG_PNG, 8, false, true, false);
    if (save_load("rt_gray8.png", g8, w, h, &o, &b)) {
      CHECK(b.info.is_gray && b.info.bits == 8 && !b.info.has_alpha, "gray png8 info");
      CHECK(bit_equal(b.pixels, g8, n, 15), "gray png8 exact");
      i2i_img_free(&b);
    }
    o = opts_for(I2I_IMG_PNG, 16, false, true, false);
    if (save_load("rt_gray16.png", g16, w, h, &o, &b)) {
      CHECK(b.info.is_gray && b.info.bits == 16, "gray png16 info");
      CHECK(level_equal(b.pixels, g16, n, 15, 65535.0f), "gray png16 exact");
      CHECK(distinct_u16(b.pixels, n, 0) > 256, "gray png16 distinct values");
      i2i_img_free(&b);
    }
    o = opts_for(I2I_IMG_PNG, 8, false, true, true);
    if (save_load("rt_graya8.png", q8, w, h, &o, &b)) {
      float worst = 0.0f;
      for (size_t i = 0; i < n; i++) {
        const float *s = q8 + 4 * i;
        float y = 0.299f * s[0] + 0.587f * s[1] + 0.114f * s[2];
        worst = fmaxf(worst, fabsf(b.pixels[4 * i] - y));
      }
      CHECK(b.info.is_gray && b.info.has_alpha, "colour saved as gray+alpha: info");
      CHECK(worst <= 0.5f * LVL8 + 1e-6f, "colour -> gray is Rec.601 luma (%g)", worst);
      CHECK(bit_equal(b.pixels, q8, n, 8), "gray+alpha: alpha exact");
      i2i_img_free(&b);
    }
    g_free(g8);
    g_free(g16);
  }

  section("round trips: TIFF");
  o = opts_for(I2I_IMG_TIFF, 8, false, false, true);
  if (save_load("rt_rgba8.tif", q8, w, h, &o, &b)) {
    CHECK(b.info.type == I2I_IMG_TIFF && b.info.bits == 8 && b.info.has_alpha, "tiff8 info");
    CHECK(bit_equal(b.pixels, q8, n, 15), "tiff8 rgba exact");
    i2i_img_free(&b);
  }
  o = opts_for(I2I_IMG_TIFF, 16, false, false, false);
  if (save_load("rt_rgb16.tif", q16, w, h, &o, &b)) {
    CHECK(b.info.bits == 16 && !b.info.is_float && !b.info.has_alpha, "tiff16 info");
    CHECK(level_equal(b.pixels, q16, n, 7, 65535.0f), "tiff16 rgb exact");
    i2i_img_free(&b);
  }
  o = opts_for(I2I_IMG_TIFF, 32, true, false, true);
  if (save_load("rt_rgbaf.tif", fl, w, h, &o, &b)) {
    CHECK(b.info.bits == 32 && b.info.is_float && b.info.has_alpha, "tiff float info");
    CHECK(bit_equal(b.pixels, fl, n, 15), "tiff float exact for arbitrary floats");
    CHECK(b.info.warnings == 0, "tiff float in range: no warnings");
    i2i_img_free(&b);
  }
  {
    float *g = make_texture(w, h, 65535);
    force_gray(g, n);
    o = opts_for(I2I_IMG_TIFF, 16, false, true, true);
    if (save_load("rt_graya16.tif", g, w, h, &o, &b)) {
      CHECK(b.info.is_gray && b.info.has_alpha && b.info.bits == 16, "gray tiff16 info");
      CHECK(level_equal(b.pixels, g, n, 15, 65535.0f), "gray+alpha tiff16 exact");
      i2i_img_free(&b);
    }
    g_free(g);
  }
  {
    float *bad = make_texture(w, h, 0);
    bad[0] = NAN;
    bad[1] = INFINITY;
    bad[2] = 1.5f;
    bad[5] = -0.25f;
    o = opts_for(I2I_IMG_TIFF, 32, true, false, true);
    if (save_load("rt_outofrange.tif", bad, w, h, &o, &b)) {
      CHECK(b.info.n_clamped == 2 && (b.info.warnings & I2I_IMG_WARN_CLAMPED),
            "float tiff: out-of-range values clamped and counted (%zu)", b.info.n_clamped);
      CHECK(b.pixels[0] == 0.0f && b.pixels[1] == 0.0f && b.pixels[2] == 1.0f &&
            b.pixels[5] == 0.0f, "float tiff: NaN/inf written as 0, 1.5 -> 1, -0.25 -> 0");
      i2i_img_free(&b);
    }
    o = opts_for(I2I_IMG_PNG, 8, false, false, false);
    if (save_load("rt_nan.png", bad, w, h, &o, &b)) {
      CHECK(b.pixels[0] == 0.0f && b.pixels[1] == 1.0f && b.pixels[2] == 1.0f,
            "png: NaN -> 0, +inf -> 1, 1.5 -> 1 (%g %g %g)", b.pixels[0], b.pixels[1],
            b.pixels[2]);
      i2i_img_free(&b);
    }
    g_free(bad);
  }

  section("round trips: JPEG and WebP");
  {
    bool is_photo;
    const int pw = 640, ph = 360;
    const size_t pn = (size_t)pw * ph;
    float *ph_px = photo_crop(pw, ph, &is_photo);
    printf("  test photo: %s\n", is_photo ? PHOTO_PATH " (crop)" : "synthetic texture");
    for (int q = 95; q <= 100; q += 5) {
      char name[64];
      snprintf(name, sizeof name, "rt_q%d.jpg", q);
      o = opts_for(I2I_IMG_JPEG, 8, false, false, true);
      o.quality = q;
      if (save_load(name, ph_px, pw, ph, &o, &b)) {
        double p = psnr_rgb(b.pixels, ph_px, pn);
        printf("  JPEG q%d: PSNR %.2f dB\n", q, p);
        CHECK(p >= 40.0, "JPEG q%d PSNR %.2f >= 40 dB", q, p);
        CHECK(b.info.type == I2I_IMG_JPEG && !b.info.has_alpha && !b.info.lossless,
              "jpeg info: no alpha");
        CHECK(all_opaque(b.pixels, pn), "jpeg: A = 1");
        i2i_img_free(&b);
      }
    }
    {
      float *g = g_memdup2(ph_px, pn * 4 * sizeof(float));
      force_gray(g, pn);
      o = opts_for(I2I_IMG_JPEG, 8, false, true, false);
      if (save_load("rt_gray.jpg", g, pw, ph, &o, &b)) {
        double p = psnr_rgb(b.pixels, g, pn);
        CHECK(b.info.is_gray, "gray jpeg info");
        CHECK(p >= 40.0, "gray JPEG q95 PSNR %.2f >= 40 dB", p);
        i2i_img_free(&b);
      }
      g_free(g);
    }
    o = opts_for(I2I_IMG_WEBP, 8, false, false, true);
    o.lossless = true;
    if (save_load("rt_lossless.webp", q8, w, h, &o, &b)) {
      CHECK(b.info.type == I2I_IMG_WEBP && b.info.lossless && b.info.has_alpha,
            "lossless webp info");
      CHECK(bit_equal(b.pixels, q8, n, 15), "lossless webp exact incl. RGB under A=0");
      i2i_img_free(&b);
    }
    for (int q = 95; q <= 100; q += 5) {
      char name[64];
      snprintf(name, sizeof name, "rt_q%d.webp", q);
      o = opts_for(I2I_IMG_WEBP, 8, false, false, false);
      o.quality = q;
      if (save_load(name, ph_px, pw, ph, &o, &b)) {
        double p = psnr_rgb(b.pixels, ph_px, pn);
        printf("  WebP lossy q%d: PSNR %.2f dB\n", q, p);
        if (q == 100)
          CHECK(p >= 40.0, "lossy WebP q%d PSNR %.2f >= 40 dB", q, p);
        CHECK(!b.info.lossless && !b.info.has_alpha, "lossy webp info");
        i2i_img_free(&b);
      }
    }
    o = opts_for(I2I_IMG_WEBP, 8, false, false, true);
    o.quality = 90;
    if (save_load("rt_lossy_alpha.webp", q8, w, h, &o, &b)) {
      CHECK(b.info.has_alpha, "lossy webp with alpha: info");
      CHECK(bit_equal(b.pixels, q8, n, 8), "lossy webp: alpha exact");
      i2i_img_free(&b);
    }
    g_free(ph_px);
  }

  section("save options");
  {
    i2i_img_info in = {0};
    char err[512];
    char *p;
    in.type = I2I_IMG_PNG;
    in.bits = 16;
    in.has_alpha = true;
    i2i_img_save_opts_from_info(&o, &in, I2I_IMG_UNKNOWN);
    CHECK(o.type == I2I_IMG_PNG && o.bits == 16 && o.alpha && !o.gray, "png16 -> png16");
    i2i_img_save_opts_from_info(&o, &in, I2I_IMG_JPEG);
    CHECK(o.type == I2I_IMG_JPEG && o.bits == 8 && o.quality == 95, "png16 -> jpeg 8, q95");
    in.type = I2I_IMG_TIFF;
    in.bits = 32;
    in.is_float = true;
    i2i_img_save_opts_from_info(&o, &in, I2I_IMG_PNG);
    CHECK(o.bits == 16 && !o.is_float, "float tiff -> png16");
    i2i_img_save_opts_from_info(&o, &in, I2I_IMG_UNKNOWN);
    CHECK(o.bits == 32 && o.is_float, "float tiff -> float tiff");
    in.bits = 8;
    in.is_float = false;
    in.is_gray = true;
    i2i_img_save_opts_from_info(&o, &in, I2I_IMG_TIFF);
    CHECK(o.bits == 8 && o.gray && o.alpha, "gray+alpha tiff8 -> same");
    in.type = I2I_IMG_WEBP;
    in.lossless = true;
    i2i_img_save_opts_from_info(&o, &in, I2I_IMG_UNKNOWN);
    CHECK(o.lossless, "lossless webp -> lossless webp");

    p = wpath("defaults.png");
    if (CHECK(i2i_img_save(p, q8, w, h, NULL, err, sizeof err), "save with NULL opts: %s",
              err) &&
        CHECK(i2i_img_load(p, &b, err, sizeof err), "load: %s", err)) {
      CHECK(b.info.bits == 8 && !b.info.has_alpha && !b.info.is_gray,
            "NULL opts: 8-bit RGB from the extension");
      i2i_img_free(&b);
    }
    g_free(p);
  }
  g_free(q8);
  g_free(q16);
  g_free(fl);
}

/* ---- PIL as the oracle -------------------------------------------------------------- */

static void compare_with_ref(const char *file, const char *ref, float tol)
{
  char err[512];
  i2i_img im;
  i2i_npy_image r;
  if (!CHECK(i2i_img_load(file, &im, err, sizeof err), "load %s: %s", file, err))
    return;
  if (CHECK(i2i_npy_load(ref, &r, err, sizeof err), "load ref %s: %s", ref, err)) {
    if (CHECK(r.width == im.info.width && r.height == im.info.height,
              "%s: %dx%d vs PIL %dx%d", file, im.info.width, im.info.height, r.width,
              r.height)) {
      float d = max_diff(im.pixels, r.rgba, (size_t)r.width * r.height, 15);
      CHECK(d <= tol, "%s: max diff vs PIL %g > %g (%.2f levels of 8 bits)", file, d, tol,
            d * 255.0f);
    }
    i2i_npy_free(&r);
  }
  i2i_img_free(&im);
}

static void test_pil_fixtures(void)
{
  char *man_path = wpath("manifest.txt");
  gchar *man = NULL, **lines;
  char err[512];
  section("PIL-written files decoded like PIL");
  if (!CHECK(g_file_get_contents(man_path, &man, NULL, NULL), "read %s", man_path)) {
    g_free(man_path);
    return;
  }
  lines = g_strsplit(man, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    char file[128], ref[160];
    float tol;
    char *fp, *rp;
    i2i_img im;
    if (sscanf(lines[i], "%127s %159s %f", file, ref, &tol) != 3)
      continue;
    fp = wpath(file);
    rp = wpath(ref);
    compare_with_ref(fp, rp, tol);
    if (i2i_img_load(fp, &im, err, sizeof err)) {
      bool want_alpha = strstr(file, "rgba") || strstr(file, "_la.");
      bool want_gray = strstr(file, "_l.") || strstr(file, "_l16") || strstr(file, "gray") ||
                       strstr(file, "_la.");
      int want_bits = strstr(file, "16") ? 16 : 8;
      CHECK(im.info.has_alpha == want_alpha, "%s: has_alpha %d", file, im.info.has_alpha);
      CHECK(im.info.is_gray == want_gray, "%s: is_gray %d", file, im.info.is_gray);
      CHECK(im.info.bits == want_bits, "%s: bits %d", file, im.info.bits);
      i2i_img_free(&im);
    }
    g_free(fp);
    g_free(rp);
  }
  g_strfreev(lines);
  g_free(man);
  g_free(man_path);

  if (g_file_test(PHOTO_PATH, G_FILE_TEST_IS_REGULAR)) {
    char *ref = wpath("splash.ref.npy");
    if (run_python("decode", PHOTO_PATH, ref))
      compare_with_ref(PHOTO_PATH, ref, LVL8 + 1e-6f);
    g_free(ref);
  }
}

static void test_ours_read_by_python(void)
{
  static const struct {
    const char *name;
    i2i_img_type type;
    int bits;
    bool is_float, gray, alpha;
    float tol;
  } cases[] = {
    {"py_rgb8.png", I2I_IMG_PNG, 8, false, false, false, LVL8},
    {"py_rgba8.png", I2I_IMG_PNG, 8, false, false, true, LVL8},
    {"py_rgba16.png", I2I_IMG_PNG, 16, false, false, true, LVL16},
    {"py_gray8.png", I2I_IMG_PNG, 8, false, true, false, LVL8},
    {"py_graya16.png", I2I_IMG_PNG, 16, false, true, true, LVL16},
    {"py_rgb8.tif", I2I_IMG_TIFF, 8, false, false, false, LVL8},
    {"py_rgba16.tif", I2I_IMG_TIFF, 16, false, false, true, LVL16},
    {"py_gray16.tif", I2I_IMG_TIFF, 16, false, true, false, LVL16},
    {"py_rgbaf.tif", I2I_IMG_TIFF, 32, true, false, true, 0.0f},
    {"py_q95.jpg", I2I_IMG_JPEG, 8, false, false, false, LVL8},
    {"py_gray.jpg", I2I_IMG_JPEG, 8, false, true, false, LVL8},
    {"py_lossless.webp", I2I_IMG_WEBP, 8, false, false, true, LVL8},
    {"py_lossy.webp", I2I_IMG_WEBP, 8, false, false, false, LVL8},
  };
  const int w = 160, h = 120;
  float *px = make_texture(w, h, 0);
  char err[512];
  section("files we write, decoded by PIL / independent readers");
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    i2i_img_save_opts o = opts_for(cases[i].type, cases[i].bits, cases[i].is_float,
                                   cases[i].gray, cases[i].alpha);
    char *p = wpath(cases[i].name);
    gchar *refname = g_strconcat(cases[i].name, ".ours.npy", NULL);
    char *ref = wpath(refname);
    o.lossless = strstr(cases[i].name, "lossless") != NULL;
    if (CHECK(i2i_img_save(p, px, w, h, &o, err, sizeof err), "save %s: %s", cases[i].name,
              err) &&
        CHECK(run_python("decode", p, ref), "python decodes %s", cases[i].name))
      compare_with_ref(p, ref, cases[i].tol + 1e-6f);
    g_free(p);
    g_free(ref);
    g_free(refname);
  }
  g_free(px);
}

/* ---- errors ------------------------------------------------------------------------- */

static void expect_load_error(const char *path, const char *needle, const char *what)
{
  char err[512] = "";
  i2i_img im;
  memset(&im, 0x5a, sizeof im);
  bool ok = i2i_img_load(path, &im, err, sizeof err);
  CHECK(!ok, "%s: load of %s should fail", what, path);
  if (ok) {
    i2i_img_free(&im);
    return;
  }
  CHECK(im.pixels == NULL && im.info.width == 0, "%s: output zeroed on failure", what);
  CHECK(err[0] != '\0' && strstr(err, needle) != NULL, "%s: message '%s' lacks '%s'", what,
        err, needle);
  printf("  %-26s -> %s\n", what, err);
}

/* Writes the first `keep` bytes of src (negative: all but -keep) to dst. */
static bool cut_copy(const char *src, const char *dst, long keep)
{
  gsize n = 0;
  gchar *d = read_bytes(src, &n);
  bool ok;
  if (!d)
    return false;
  if (keep < 0)
    keep = (long)n + keep;
  if (keep < 0 || (gsize)keep > n)
    keep = (long)n;
  ok = write_bytes(dst, d, (size_t)keep);
  g_free(d);
  return ok;
}

static void test_load_errors(void)
{
  const int w = 96, h = 64;
  float *px = make_texture(w, h, 0);
  char err[512];
  char *png = wpath("good.png"), *jpg = wpath("good.jpg"), *tif = wpath("good.tif");
  char *webp = wpath("good.webp"), *tmp = wpath("bad.bin");
  char *pjpg = wpath("prog_trunc.jpg");
  unsigned char junk[4096];
  i2i_img_save_opts o;

  section("load errors");
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (unsigned char)rnd();
  o = opts_for(I2I_IMG_PNG, 8, false, false, true);
  i2i_img_save(png, px, w, h, &o, err, sizeof err);
  o = opts_for(I2I_IMG_JPEG, 8, false, false, false);
  i2i_img_save(jpg, px, w, h, &o, err, sizeof err);
  o = opts_for(I2I_IMG_TIFF, 16, false, false, false);
  i2i_img_save(tif, px, w, h, &o, err, sizeof err);
  o = opts_for(I2I_IMG_WEBP, 8, false, false, false);
  i2i_img_save(webp, px, w, h, &o, err, sizeof err);

  expect_load_error("/nonexistent/x.png", "no such file", "missing file");
  expect_load_error(work, "folder", "directory");
  expect_load_error("", "no input", "empty name");
  write_bytes(tmp, "", 0);
  expect_load_error(tmp, "empty", "empty file");
  write_bytes(tmp, junk, sizeof junk);
  expect_load_error(tmp, "not a PNG, JPEG, TIFF or WebP", "random bytes");
  {
    char *txt = wpath("text.jpg");
    write_bytes(txt, "hello, this is not a JPEG\n", 26);
    expect_load_error(txt, "not a PNG", "text named .jpg");
    g_free(txt);
  }
  cut_copy(png, tmp, 8 + 25 + 40);
  expect_load_error(tmp, "PNG", "truncated PNG (early)");
  cut_copy(png, tmp, -200);
  expect_load_error(tmp, "truncated PNG", "truncated PNG (late)");
  cut_copy(png, tmp, -12);
  expect_load_error(tmp, "truncated PNG", "PNG without IEND");
  {
    unsigned char b[4096 + 8];
    memcpy(b, "\x89PNG\r\n\x1a\n", 8);
    memcpy(b + 8, junk, sizeof junk);
    write_bytes(tmp, b, sizeof b);
    expect_load_error(tmp, "PNG", "PNG magic + junk");
  }
  {
    char *huge = wpath("huge_header.png");
    if (have_python)
      expect_load_error(huge, "limit", "PNG header 30000x20000");
    g_free(huge);
  }
  cut_copy(jpg, tmp, -2);
  expect_load_error(tmp, "truncated or corrupt JPEG", "JPEG without EOI");
  cut_copy(jpg, tmp, 700);
  expect_load_error(tmp, "JPEG", "truncated JPEG");
  cut_copy(jpg, tmp, 40);
  expect_load_error(tmp, "JPEG", "JPEG cut in its header");
  {
    unsigned char b[3 + 4096];
    b[0] = 0xFF, b[1] = 0xD8, b[2] = 0xFF;
    memcpy(b + 3, junk, sizeof junk);
    write_bytes(tmp, b, sizeof b);
    expect_load_error(tmp, "JPEG", "JPEG magic + junk");
  }
  {
    gsize n = 0;
    gchar *d = read_bytes(jpg, &n);
    if (d) {
      for (gsize i = 2; i + 8 < n; i++)
        if ((unsigned char)d[i] == 0xFF && ((unsigned char)d[i + 1] & 0xF0) == 0xC0 &&
            (unsigned char)d[i + 1] != 0xC4 && (unsigned char)d[i + 1] != 0xC8 &&
            (unsigned char)d[i + 1] != 0xCC) {
          d[i + 5] = (char)0xFD, d[i + 6] = (char)0xE8; /* height 65000 */
          d[i + 7] = (char)0xFD, d[i + 8] = (char)0xE8; /* width 65000 */
          break;
        }
      write_bytes(tmp, d, n);
      expect_load_error(tmp, "limit", "JPEG header 65000x65000");
      g_free(d);
    }
  }
  {
    gsize n = 0;
    gchar *d = read_bytes(jpg, &n);
    i2i_img im;
    if (d) {
      for (gsize i = n / 3; i < n / 3 + 200 && i < n - 2; i += 7)
        d[i] = (char)(d[i] ^ 0x5a);
      write_bytes(tmp, d, n);
      if (i2i_img_load(tmp, &im, err, sizeof err)) {
        CHECK(im.info.warnings & I2I_IMG_WARN_DATA, "damaged JPEG loaded: flagged");
        i2i_img_free(&im);
      } else {
        CHECK(err[0] != '\0', "damaged JPEG: message");
        printf("  %-26s -> %s\n", "damaged JPEG scan data", err);
      }
      g_free(d);
    }
  }
  if (have_python) {
    char *pj = wpath("pil_progressive.jpg");
    cut_copy(pj, pjpg, -600);
    expect_load_error(pjpg, "JPEG", "truncated progressive JPEG");
    g_free(pj);
  }
  {
    gsize n = 0;
    gchar *d = read_bytes(tif, &n);
    g_free(d);
    cut_copy(tif, tmp, (long)n / 2);
    expect_load_error(tmp, "truncated TIFF", "TIFF cut before its IFD");
  }
  if (have_python) {
    char *pt = wpath("pil_rgb.tif");
    gsize n = 0;
    gchar *d = read_bytes(pt, &n);
    g_free(d);
    cut_copy(pt, tmp, (long)n / 2);
    expect_load_error(tmp, "truncated or corrupt TIFF", "TIFF cut in its strips");
    g_free(pt);
  }
  cut_copy(tif, tmp, 8);
  expect_load_error(tmp, "TIFF", "TIFF header only");
  {
    unsigned char b[4 + 4096];
    memcpy(b, "II*\0", 4);
    memcpy(b + 4, junk, sizeof junk);
    write_bytes(tmp, b, sizeof b);
    expect_load_error(tmp, "TIFF", "TIFF magic + junk");
  }
  cut_copy(webp, tmp, -100);
  expect_load_error(tmp, "truncated WebP", "truncated WebP");
  {
    unsigned char b[12 + 4096];
    memcpy(b, "RIFF\x00\x10\x00\x00WEBP", 12);
    memcpy(b + 12, junk, sizeof junk);
    write_bytes(tmp, b, sizeof b);
    expect_load_error(tmp, "WebP", "WebP magic + junk");
  }
  {
    i2i_img_type t;
    CHECK(i2i_img_sniff(png, &t, err, sizeof err) && t == I2I_IMG_PNG, "sniff png");
    CHECK(i2i_img_sniff(webp, &t, err, sizeof err) && t == I2I_IMG_WEBP, "sniff webp");
    CHECK(!i2i_img_sniff("/nonexistent", &t, err, sizeof err) && t == I2I_IMG_UNKNOWN,
          "sniff missing");
  }
  g_free(png);
  g_free(jpg);
  g_free(tif);
  g_free(webp);
  g_free(tmp);
  g_free(pjpg);
  g_free(px);
}

static void expect_save_error(const char *path, const float *px, int w, int h,
                              const i2i_img_save_opts *o, const char *needle,
                              const char *what)
{
  char err[512] = "";
  bool ok = i2i_img_save(path, px, w, h, o, err, sizeof err);
  CHECK(!ok, "%s: save to %s should fail", what, path);
  if (ok)
    return;
  CHECK(err[0] != '\0' && strstr(err, needle) != NULL, "%s: message '%s' lacks '%s'", what,
        err, needle);
  printf("  %-26s -> %s\n", what, err);
}

/* Saves under a file-size limit below the output's size: the write fails part-way. */
static void write_failure(const char *name, i2i_img_save_opts o, bool npy)
{
  const int w = 400, h = 300;
  float *px = make_texture(w, h, 0);
  char *p = wpath(name);
  char err[512] = "";
  struct rlimit old, lim;
  bool ok;
  for (size_t i = 0; i < (size_t)w * h * 4; i++)
    px[i] = (float)(rnd() % 1000) / 999.0f; /* noise: compresses badly */
  write_bytes(p, "ORIGINAL", 8);
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = 64 * 1024;
  setrlimit(RLIMIT_FSIZE, &lim);
  if (npy)
    ok = i2i_npy_save(p, px, h, w, 4, err, sizeof err);
  else
    ok = i2i_img_save(p, px, w, h, &o, err, sizeof err);
  setrlimit(RLIMIT_FSIZE, &old);
  CHECK(!ok, "%s: save past the file-size limit should fail", name);
  CHECK(file_equals(p, "ORIGINAL"), "%s: destination untouched after a failed write", name);
  CHECK(leftover_temps(work, name) == 0, "%s: temporary removed", name);
  if (!ok)
    printf("  %-26s -> %s\n", name, err);
  g_free(p);
  g_free(px);
}

static void test_save_errors(void)
{
  const int w = 64, h = 48;
  float *px = make_texture(w, h, 0);
  i2i_img_save_opts o = opts_for(I2I_IMG_UNKNOWN, 8, false, false, false);
  char *dest = wpath("keep.png"), *dirdest = wpath("adir.png"), *file = wpath("plain.txt");
  char *under_file = g_build_filename(file, "x.png", NULL);
  char err[512];

  section("save errors");
  write_bytes(file, "x", 1);
  g_mkdir_with_parents(dirdest, 0755);
  write_bytes(dest, "ORIGINAL", 8);

  expect_save_error("/nonexistent-i2i/dir/x.png", px, w, h, &o, "does not exist",
                    "missing folder");
  expect_save_error(under_file, px, w, h, &o, "not a folder", "folder is a file");
  expect_save_error("/proc/i2i-test.png", px, w, h, &o, "cannot write", "unwritable (/proc)");
  expect_save_error(dirdest, px, w, h, &o, "folder", "destination is a folder");
  {
    char *bmp = wpath("x.bmp");
    expect_save_error(bmp, px, w, h, &o, "cannot tell the image type", "unknown extension");
    g_free(bmp);
  }
  {
    i2i_img_save_opts bad = opts_for(I2I_IMG_JPEG, 16, false, false, false);
    expect_save_error(dest, px, w, h, &bad, "8-bit", "16-bit JPEG");
    bad = opts_for(I2I_IMG_PNG, 32, true, false, false);
    expect_save_error(dest, px, w, h, &bad, "PNG stores", "float PNG");
    bad = opts_for(I2I_IMG_TIFF, 12, false, false, false);
    expect_save_error(dest, px, w, h, &bad, "TIFF", "12-bit TIFF");
    bad = opts_for(I2I_IMG_JPEG, 8, false, false, false);
    bad.quality = 101;
    expect_save_error(dest, px, w, h, &bad, "quality", "quality 101");
    expect_save_error(dest, px, 0, h, &o, "no pixels", "zero width");
    expect_save_error(dest, NULL, w, h, &o, "no pixels", "NULL pixels");
    bad = opts_for(I2I_IMG_WEBP, 8, false, false, false);
    {
      float *wide = g_new0(float, (size_t)20000 * 4);
      char *wp = wpath("wide.webp");
      expect_save_error(wp, wide, 20000, 1, &bad, "16383", "WebP wider than 16383");
      g_free(wp);
      g_free(wide);
    }
  }
  CHECK(file_equals(dest, "ORIGINAL"), "destination untouched after refused saves");
  CHECK(leftover_temps(work, "keep.png") == 0, "no temporaries left");
  if (geteuid() != 0) {
    char *ro = wpath("readonly"), *rop = NULL;
    g_mkdir_with_parents(ro, 0755);
    g_chmod(ro, 0555);
    rop = g_build_filename(ro, "x.png", NULL);
    expect_save_error(rop, px, w, h, &o, "not writable", "read-only folder");
    g_chmod(ro, 0755);
    g_free(ro);
    g_free(rop);
  } else {
    printf("  (running as root: the chmod read-only folder case is covered by /proc)\n");
  }

  signal(SIGXFSZ, SIG_IGN);
  write_failure("full.png", opts_for(I2I_IMG_PNG, 16, false, false, true), false);
  write_failure("full.tif", opts_for(I2I_IMG_TIFF, 16, false, false, true), false);
  write_failure("full.jpg", opts_for(I2I_IMG_JPEG, 8, false, false, false), false);
  {
    i2i_img_save_opts wl = opts_for(I2I_IMG_WEBP, 8, false, false, true);
    wl.lossless = true;
    write_failure("full.webp", wl, false);
  }
  write_failure("full.npy", o, true);

  {
    char *ok_path = wpath("replace.png");
    i2i_img im;
    struct stat st;
    write_bytes(ok_path, "ORIGINAL", 8);
    g_chmod(ok_path, 0640);
    if (CHECK(i2i_img_save(ok_path, px, w, h, &o, err, sizeof err), "replace: %s", err) &&
        CHECK(i2i_img_load(ok_path, &im, err, sizeof err), "replaced file loads: %s", err)) {
      i2i_img_free(&im);
      CHECK(stat(ok_path, &st) == 0 && (st.st_mode & 0777) == 0640,
            "replacing keeps the old file's mode (%o)", (unsigned)(st.st_mode & 0777));
    }
    CHECK(leftover_temps(work, "replace.png") == 0, "replace: no temporaries left");
    g_free(ok_path);
  }
  g_free(px);
  g_free(dest);
  g_free(dirdest);
  g_free(file);
  g_free(under_file);
}

/* ---- .npy --------------------------------------------------------------------------- */

/* Builds a .npy in memory: magic, version, header (padded as given), then data_len bytes. */
static unsigned char *npy_build(int major, int minor, const char *header, size_t data_len,
                                size_t *out_len)
{
  size_t hl = strlen(header), pre = major == 1 ? 10 : 12;
  unsigned char *b = g_malloc0(pre + hl + data_len + 1);
  memcpy(b, "\x93NUMPY", 6);
  b[6] = (unsigned char)major;
  b[7] = (unsigned char)minor;
  b[8] = (unsigned char)(hl & 0xFF);
  b[9] = (unsigned char)((hl >> 8) & 0xFF);
  if (pre == 12) {
    b[10] = (unsigned char)((hl >> 16) & 0xFF);
    b[11] = (unsigned char)((hl >> 24) & 0xFF);
  }
  memcpy(b + pre, header, hl);
  for (size_t i = 0; i < data_len / 4; i++) {
    float f = (float)i / 7.0f;
    memcpy(b + pre + hl + 4 * i, &f, 4);
  }
  *out_len = pre + hl + data_len;
  return b;
}

static void npy_expect(const char *what, int major, const char *header, size_t data_len,
                       const char *needle)
{
  size_t n;
  unsigned char *b = npy_build(major, 0, header, data_len, &n);
  i2i_npy_image im;
  char err[512] = "";
  bool ok = i2i_npy_decode(b, n, &im, err, sizeof err);
  if (needle) {
    CHECK(!ok, "npy %s: should be refused", what);
    CHECK(!ok && strstr(err, needle) != NULL, "npy %s: message '%s' lacks '%s'", what, err,
          needle);
    CHECK(im.rgba == NULL, "npy %s: output zeroed", what);
    if (!ok)
      printf("  %-34s -> %s\n", what, err);
  } else {
    CHECK(ok, "npy %s: should be accepted: %s", what, err);
  }
  if (ok)
    i2i_npy_free(&im);
  g_free(b);
}

static void test_npy(void)
{
  const char *good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 3), }\n";
  const size_t d233 = 2 * 3 * 3 * 4;
  char err[512];
  section(".npy: header parser");
  npy_expect("canonical", 1, good, d233, NULL);
  npy_expect("keys in another order", 1,
             "{'shape': (2, 3, 3), 'fortran_order': False, 'descr': '<f4'}", d233, NULL);
  npy_expect("double quotes, odd spacing", 1,
             "  {\"descr\"  :\"<f4\" ,\t'fortran_order':False,'shape':( 2 ,3,3 , ) }  ", d233,
             NULL);
  npy_expect("Python 2 long ints", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L, 3L), }", d233, NULL);
  npy_expect("version 2.0", 2, good, d233, NULL);
  npy_expect("version 3.0", 3, good, d233, NULL);
  npy_expect("4 channels", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4)}",
             2 * 3 * 4 * 4, NULL);
  npy_expect("float64", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3, 3)}",
             d233 * 2, NULL);
  npy_expect("big-endian float32", 1,
             "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3, 3)}", d233, NULL);
  {
    size_t n;
    unsigned char *b = npy_build(1, 0, good, d233, &n);
    i2i_npy_image im;
    b[3] = 'X';
    CHECK(!i2i_npy_decode(b, n, &im, err, sizeof err) && strstr(err, "magic"), "bad magic: %s",
          err);
    CHECK(!i2i_npy_decode(b, 5, &im, err, sizeof err) && strstr(err, "magic"),
          "5 bytes: %s", err);
    CHECK(!i2i_npy_decode(NULL, 0, &im, err, sizeof err), "NULL buffer");
    b[3] = 'M';
    b[6] = 4;
    CHECK(!i2i_npy_decode(b, n, &im, err, sizeof err) && strstr(err, "version 4.0"),
          "version 4.0: %s", err);
    b[6] = 1;
    b[7] = 1;
    CHECK(!i2i_npy_decode(b, n, &im, err, sizeof err) && strstr(err, "version 1.1"),
          "version 1.1: %s", err);
    b[6] = 0;
    b[7] = 0;
    CHECK(!i2i_npy_decode(b, n, &im, err, sizeof err) && strstr(err, "version"),
          "version 0.0: %s", err);
    b[6] = 1;
    CHECK(!i2i_npy_decode(b, 9, &im, err, sizeof err) && strstr(err, "header length"),
          "cut in the length field: %s", err);
    b[8] = 0xFF;
    b[9] = 0x7F;
    CHECK(!i2i_npy_decode(b, n, &im, err, sizeof err) && strstr(err, "runs past"),
          "header length past the end: %s", err);
    g_free(b);
    b = npy_build(2, 0, good, d233, &n);
    b[8] = b[9] = b[10] = 0xFF;
    b[11] = 0x7F;
    CHECK(!i2i_npy_decode(b, n, &im, err, sizeof err) && strstr(err, "limit"),
          "v2 header length 2^31: %s", err);
    g_free(b);
  }
  npy_expect("missing descr", 1, "{'fortran_order': False, 'shape': (2, 3, 3), }", d233,
             "lacks the key 'descr'");
  npy_expect("missing fortran_order", 1, "{'descr': '<f4', 'shape': (2, 3, 3), }", d233,
             "lacks the key 'fortran_order'");
  npy_expect("missing shape", 1, "{'descr': '<f4', 'fortran_order': False}", d233,
             "lacks the key 'shape'");
  npy_expect("empty dict", 1, "{}", d233, "lacks");
  npy_expect("unknown key", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 3), 'x': 1}", d233,
             "unexpected key 'x'");
  npy_expect("duplicate key", 1,
             "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 3)}",
             d233, "duplicate");
  npy_expect("fortran_order True", 1,
             "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 3), }", d233, "Fortran");
  npy_expect("fortran_order 'Tru'", 1,
             "{'descr': '<f4', 'fortran_order': Tru, 'shape': (2, 3, 3), }", d233,
             "True or False");
  npy_expect("fortran_order Truex", 1,
             "{'descr': '<f4', 'fortran_order': Truex, 'shape': (2, 3, 3), }", d233,
             "True or False");
  npy_expect("dtype int32", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3, 3)}",
             d233, "dtype '<i4'");
  npy_expect("dtype uint8", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 3)}",
             d233, "dtype");
  npy_expect("dtype float16", 1,
             "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3, 3)}", d233, "dtype");
  npy_expect("dtype name", 1,
             "{'descr': 'float32', 'fortran_order': False, 'shape': (2, 3, 3)}", d233, "dtype");
  npy_expect("dtype not a string", 1, "{'descr': 4, 'fortran_order': False, 'shape': (2, 3, 3)}",
             d233, "quoted string");
  npy_expect("rank 2", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 3)}", d233,
             "shape (6, 3)");
  npy_expect("rank 1", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (18,)}", d233,
             "shape (18,)");
  npy_expect("rank 0", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': ()}", d233,
             "shape ()");
  npy_expect("rank 4", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3, 3)}",
             d233, "shape");
  npy_expect("5 channels", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 5)}",
             2 * 3 * 5 * 4, "shape (2, 3, 5)");
  npy_expect("zero height", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3, 3)}",
             0, "empty");
  npy_expect("negative dim", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3, 3)}", d233,
             "non-negative");
  npy_expect("shape product overflow", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 3)}",
             d233, "limit");
  npy_expect("side over the limit", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (300000, 1, 3)}", d233,
             "limit");
  npy_expect("pixels over the limit", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (200000, 200000, 4)}", d233,
             "limit");
  npy_expect("giant integer", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 1, 3)}",
             d233, "too large");
  npy_expect("too many dims", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
             "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1)}", d233, "dimensions");
  npy_expect("data shorter than shape", 1, good, d233 - 4, "truncated");
  npy_expect("no data", 1, good, 0, "truncated");
  npy_expect("trailing data", 1, good, d233 + 8, "unexpected bytes");
  npy_expect("unterminated string", 1, "{'descr: '<f4', 'fortran_order': False}", d233,
             "expected ':'");
  npy_expect("string runs to the end", 1, "{'descr': '<f4", d233, "unterminated");
  npy_expect("escape in string", 1,
             "{'de\\scr': '<f4', 'fortran_order': False, 'shape': (2, 3, 3)}", d233, "escape");
  npy_expect("missing colon", 1, "{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3, 3)}",
             d233, "expected ':'");
  npy_expect("missing comma", 1, "{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3, 3)}",
             d233, "expected '}'");
  npy_expect("unclosed dict", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 3)",
             d233, "ends early");
  npy_expect("unclosed tuple", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 3",
             d233, "ends early");
  npy_expect("text after dict", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 3)} x", d233,
             "after the dict");
  npy_expect("not a dict", 1, "['descr', '<f4']", d233, "expected '{'");
  npy_expect("empty header", 1, "", d233, "ends early");
  npy_expect("non-ASCII byte", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 3)}\xc3\xa9", d233,
             "non-ASCII");
  npy_expect("control byte", 1,
             "{'descr': '<f4',\x01 'fortran_order': False, 'shape': (2, 3, 3)}", d233,
             "control");
  npy_expect("shape as list", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3, 3]}",
             d233, "expected '('");
  npy_expect("float in shape", 1,
             "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0, 3, 3)}", d233,
             "close 'shape'");
  {
    /* A NUL inside the header: built by hand since the helpers use C strings. */
    size_t n;
    unsigned char *b = npy_build(1, 0, good, d233, &n);
    i2i_npy_image im;
    b[12] = 0;
    CHECK(!i2i_npy_decode(b, n, &im, err, sizeof err) && strstr(err, "control"),
          "NUL byte in header: %s", err);
    g_free(b);
  }

  section(".npy: files");
  {
    const int w = 37, h = 23;
    float *px = make_texture(w, h, 0);
    char *p3 = wpath("rt3.npy"), *p4 = wpath("rt4.npy"), *np = wpath("rt4.numpy.npy");
    i2i_npy_image a;
    gsize n = 0;
    gchar *bytes;
    px[5] = NAN;
    if (CHECK(i2i_npy_save(p4, px, h, w, 4, err, sizeof err), "npy save 4: %s", err) &&
        CHECK(i2i_npy_load(p4, &a, err, sizeof err), "npy load 4: %s", err)) {
      CHECK(a.width == w && a.height == h && a.channels == 4, "npy 4: shape");
      CHECK(bit_equal(a.rgba, px, (size_t)w * h, 15), "npy 4: exact, NaN kept");
      i2i_npy_free(&a);
    }
    bytes = read_bytes(p4, &n);
    if (bytes) {
      i2i_npy_header hd;
      CHECK(i2i_npy_parse_header(bytes, n, &hd, err, sizeof err) && hd.data_offset % 64 == 0 &&
            hd.major == 1, "npy writer: version 1.0, data 64-byte aligned (%zu)",
            hd.data_offset);
      CHECK(bytes[hd.data_offset - 1] == '\n', "npy writer: header ends with a newline");
      g_free(bytes);
    }
    if (CHECK(i2i_npy_save(p3, px, h, w, 3, err, sizeof err), "npy save 3: %s", err) &&
        CHECK(i2i_npy_load(p3, &a, err, sizeof err), "npy load 3: %s", err)) {
      CHECK(a.channels == 3 && bit_equal(a.rgba, px, (size_t)w * h, 7), "npy 3: RGB exact");
      CHECK(a.rgba[3] == 1.0f && a.rgba[4 * (size_t)w * h - 1] == 1.0f, "npy 3: A = 1");
      i2i_npy_free(&a);
    }
    if (have_python && CHECK(run_python("npycheck", p4, np), "numpy reads our .npy") &&
        CHECK(i2i_npy_load(np, &a, err, sizeof err), "load numpy's re-save: %s", err)) {
      CHECK(bit_equal(a.rgba, px, (size_t)w * h, 15), "numpy round trip exact");
      i2i_npy_free(&a);
    }
    CHECK(!i2i_npy_save(p3, px, h, w, 2, err, sizeof err) && strstr(err, "channels"),
          "npy save 2 channels refused: %s", err);
    CHECK(!i2i_npy_save("/nonexistent-i2i/x.npy", px, h, w, 3, err, sizeof err) &&
          strstr(err, "does not exist"), "npy save into missing folder: %s", err);
    CHECK(!i2i_npy_load("/nonexistent-i2i/x.npy", &a, err, sizeof err) &&
          strstr(err, "no such file"), "npy load missing: %s", err);
    CHECK(!i2i_npy_load(work, &a, err, sizeof err) && strstr(err, "folder"),
          "npy load folder: %s", err);
    cut_copy(p4, np, -4);
    CHECK(!i2i_npy_load(np, &a, err, sizeof err) && strstr(err, "truncated"),
          "npy load truncated file: %s", err);
    cut_copy(p4, np, 0);
    CHECK(!i2i_npy_load(np, &a, err, sizeof err) && strstr(err, "empty"),
          "npy load empty file: %s", err);
    cut_copy(p4, np, 30);
    CHECK(!i2i_npy_load(np, &a, err, sizeof err) && strstr(err, "runs past"),
          "npy load cut in header: %s", err);
    g_free(p3);
    g_free(p4);
    g_free(np);
    g_free(px);
  }
  if (have_python) {
    static const char *same[] = {"npy_be.npy", "npy_f8.npy", "npy_f8be.npy", "npy_v2.npy",
                                 "npy_v3.npy"};
    char *ref = wpath("npy_f4.npy");
    i2i_npy_image r, a;
    if (CHECK(i2i_npy_load(ref, &r, err, sizeof err), "numpy f4: %s", err)) {
      CHECK(r.channels == 3 && r.rgba[0] == 0.123456789f, "numpy f4: values");
      for (size_t i = 0; i < G_N_ELEMENTS(same); i++) {
        char *p = wpath(same[i]);
        if (CHECK(i2i_npy_load(p, &a, err, sizeof err), "numpy %s: %s", same[i], err)) {
          CHECK(a.width == r.width && a.height == r.height &&
                bit_equal(a.rgba, r.rgba, (size_t)r.width * r.height, 15),
                "numpy %s equals the '<f4' file", same[i]);
          i2i_npy_free(&a);
        }
        g_free(p);
      }
      i2i_npy_free(&r);
    }
    g_free(ref);
    {
      static const struct { const char *file, *needle; } bad[] = {
        {"npy_fortran.npy", "Fortran"}, {"npy_u8.npy", "dtype '|u1'"},
        {"npy_gray.npy", "shape"},
      };
      for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *p = wpath(bad[i].file);
        CHECK(!i2i_npy_load(p, &a, err, sizeof err) && strstr(err, bad[i].needle),
              "numpy %s refused: %s", bad[i].file, err);
        printf("  %-34s -> %s\n", bad[i].file, err);
        g_free(p);
      }
    }
    {
      char *p = wpath("npy_rgba.npy");
      if (CHECK(i2i_npy_load(p, &a, err, sizeof err), "numpy rgba: %s", err)) {
        CHECK(a.channels == 4, "numpy rgba: 4 channels");
        i2i_npy_free(&a);
      }
      g_free(p);
    }
  }
}

/* ---- main --------------------------------------------------------------------------- */

static void rm_rf_contents(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  const gchar *name;
  if (!d)
    return;
  while ((name = g_dir_read_name(d))) {
    gchar *p = g_build_filename(dir, name, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK)) {
      g_chmod(p, 0755);
      rm_rf_contents(p);
      g_rmdir(p);
    } else {
      g_unlink(p);
    }
    g_free(p);
  }
  g_dir_close(d);
}

int main(int argc, char **argv)
{
  char err[512];
  if (argc != 3) {
    fprintf(stderr, "usage: %s GEN_IMAGES.PY WORKDIR\n", argv[0]);
    return 2;
  }
  gen_script = argv[1];
  work = argv[2];
  if (g_getenv("I2I_TEST_PYTHON"))
    python = g_getenv("I2I_TEST_PYTHON");
  g_mkdir_with_parents(work, 0755);
  rm_rf_contents(work);

  if (!i2i_img_init(err, sizeof err)) {
    printf("FAIL: i2i_img_init: %s\n0 passed, 1 failed\n", err);
    return 1;
  }
  {
    const char *argv_py[] = {python, "-c", "import numpy, PIL", NULL};
    gint status = 1;
    have_python = g_spawn_sync(NULL, (gchar **)argv_py, NULL, G_SPAWN_STDERR_TO_DEV_NULL,
                               NULL, NULL, NULL, NULL, &status, NULL) &&
                  g_spawn_check_wait_status(status, NULL);
  }
  if (have_python)
    have_python = CHECK(run_python("make", work, NULL), "gen_images.py make");
  else
    printf("  (%s lacks numpy or PIL: PIL comparisons skipped)\n", python);

  test_names();
  test_roundtrips();
  if (have_python) {
    test_pil_fixtures();
    test_ours_read_by_python();
  }
  test_load_errors();
  test_save_errors();
  test_npy();

  i2i_img_shutdown();
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
