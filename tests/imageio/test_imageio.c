/* tests/imageio/test_imageio.c: tests of converter/imageio (image files and .npy).
 * Round trips for every format and depth, PIL's decoding as an independent oracle (through
 * gen_images.py run by /usr/bin/python3; skipped without numpy or PIL), every corrupt-input and
 * unwritable-output case, EXIF/TIFF orientation, CMYK TIFF, forged sizes, FIFOs, ICC profiles
 * kept, crafted profiles, inconsistent TIFFs and 1200 fixed mutants loaded in a child process
 * (this program with --load-list LIST FIRST; a crash fails a check), the .npy header parser.
 * Usage: test_imageio GEN_IMAGES.PY WORKDIR; ends with "N passed, N failed". */
#include "imageio.h"
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
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
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#define PHOTO_PATH "/usr/share/gimp/2.0/images/gimp-splash.png"
#define LVL8 (1.0f / 255.0f)
#define LVL16 (1.0f / 65535.0f)

static int n_pass, n_fail;
static const char *gen_script;
static const char *work;
static const char *python = "/usr/bin/python3";
static bool have_python;
static char *self_exe; /* this program, run again as the child that loads hostile files */

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

/* The lines of gen_images.py's manifest `name` in the work folder, or NULL (a failed check)
 * when it cannot be read; free with g_strfreev. */
static gchar **manifest_lines(const char *name)
{
  char *path = wpath(name);
  gchar *text = NULL, **lines = NULL;
  if (CHECK(g_file_get_contents(path, &text, NULL, NULL), "read %s", path))
    lines = g_strsplit(text, "\n", -1);
  g_free(text);
  g_free(path);
  return lines;
}

static void test_pil_fixtures(void)
{
  gchar **lines;
  char err[512];
  section("PIL-written files decoded like PIL");
  if (!(lines = manifest_lines("manifest.txt")))
    return;
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

/* ---- orientation, CMYK, forged sizes, FIFOs, ICC profiles ---------------------------- */

/* gen_images.py's extra.txt: "file reference tolerance orientation has_alpha bits". */
static void test_extra_fixtures(void)
{
  gchar **lines;
  char err[512];
  section("orientation (EXIF, TIFF 274), CMYK TIFF, highly compressible files");
  if (!(lines = manifest_lines("extra.txt")))
    return;
  for (int i = 0; lines[i]; i++) {
    char file[128], ref[160];
    float tol;
    int orient, alpha, bits;
    char *fp;
    i2i_img im;
    if (sscanf(lines[i], "%127s %159s %f %d %d %d", file, ref, &tol, &orient, &alpha,
               &bits) != 6)
      continue;
    fp = wpath(file);
    if (strcmp(ref, "-") != 0) {
      char *rp = wpath(ref);
      compare_with_ref(fp, rp, tol);
      g_free(rp);
    }
    if (CHECK(i2i_img_load(fp, &im, err, sizeof err), "load %s: %s", file, err)) {
      CHECK(im.info.orientation == orient, "%s: orientation %d, expected %d", file,
            im.info.orientation, orient);
      CHECK(im.info.has_alpha == (alpha != 0), "%s: has_alpha %d", file, im.info.has_alpha);
      CHECK(im.info.bits == bits, "%s: bits %d", file, im.info.bits);
      CHECK(!im.info.is_gray, "%s: not gray", file);
      i2i_img_free(&im);
    }
    g_free(fp);
  }
  g_strfreev(lines);

  /* An oriented image is written upright, with no orientation of its own. */
  {
    static const char *const outs[] = {"up6.jpg", "up6.png", "up6.tif", "up6.webp"};
    char *src = wpath("orient6.jpg");
    i2i_img im, back;
    if (CHECK(i2i_img_load(src, &im, err, sizeof err), "load orient6.jpg: %s", err)) {
      CHECK(im.info.width == 32 && im.info.height == 48, "orient6.jpg: upright 32 x 48, "
            "not %d x %d", im.info.width, im.info.height);
      for (size_t k = 0; k < G_N_ELEMENTS(outs); k++) {
        i2i_img_save_opts o;
        char *p = wpath(outs[k]);
        gchar *refname = g_strconcat(outs[k], ".ours.npy", NULL);
        char *ref = wpath(refname);
        i2i_img_save_opts_from_info(&o, &im.info, i2i_img_type_from_name(p));
        if (CHECK(i2i_img_save(p, im.pixels, im.info.width, im.info.height, &o, err,
                               sizeof err), "save %s: %s", outs[k], err) &&
            CHECK(i2i_img_load(p, &back, err, sizeof err), "reload %s: %s", outs[k], err)) {
          CHECK(back.info.orientation == 1 && back.info.width == 32 && back.info.height == 48,
                "%s: written upright without orientation (%d, %d x %d)", outs[k],
                back.info.orientation, back.info.width, back.info.height);
          i2i_img_free(&back);
          /* PIL, which applies EXIF, sees the same upright picture */
          if (run_python("decode", p, ref))
            compare_with_ref(p, ref, LVL8 + 1e-6f);
        }
        g_free(p);
        g_free(ref);
        g_free(refname);
      }
      i2i_img_free(&im);
    }
    g_free(src);
  }
}

/* Loads `path` expecting a refusal naming the declared size, within two seconds (before the
 * check, such files took 11-22 s and gigabytes). */
static void expect_fast_refusal(const char *name, const char *what)
{
  char *p = wpath(name);
  gint64 t0 = g_get_monotonic_time();
  expect_load_error(p, "declares", what);
  CHECK(g_get_monotonic_time() - t0 < 2 * G_USEC_PER_SEC, "%s: refused in %.2f s, not at once",
        what, (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC);
  g_free(p);
}

static void test_forged_sizes(void)
{
  section("forged sizes refused before allocating");
  expect_fast_refusal("bomb.png", "74-byte PNG of 20000^2");
  expect_fast_refusal("bomb.tif", "TIFF 23000^2, one strip");
  expect_fast_refusal("bomb_deflate.tif", "deflate TIFF 23000^2");
  expect_fast_refusal("bomb_lzw.tif", "LZW TIFF 23000^2");
  expect_fast_refusal("bomb.jpg", "JPEG frame 20000^2");
}

typedef struct {
  const char *path;
  bool sniff;
  bool done, ok;
  char err[512];
  GMutex m;
  GCond c;
} fifo_job;

static gpointer fifo_load(gpointer data)
{
  fifo_job *j = data;
  i2i_img im;
  i2i_img_type t;
  bool ok = j->sniff ? i2i_img_sniff(j->path, &t, j->err, sizeof j->err)
                     : i2i_img_load(j->path, &im, j->err, sizeof j->err);
  if (ok && !j->sniff)
    i2i_img_free(&im);
  g_mutex_lock(&j->m);
  j->ok = ok;
  j->done = true;
  g_cond_signal(&j->c);
  g_mutex_unlock(&j->m);
  return NULL;
}

/* A FIFO named like an image is refused at once, without waiting for a writer. On a hang
 * the test opens the FIFO's other end itself, so that the load returns and the run goes on. */
static void test_fifo(void)
{
  char *p = wpath("fifo.png");
  section("a FIFO as input");
  if (!CHECK(mkfifo(p, 0600) == 0, "mkfifo %s: %s", p, g_strerror(errno))) {
    g_free(p);
    return;
  }
  for (int sniff = 0; sniff <= 1; sniff++) {
    fifo_job j = {.path = p, .sniff = sniff != 0};
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    GThread *t;
    g_mutex_init(&j.m);
    g_cond_init(&j.c);
    t = g_thread_new("fifo-load", fifo_load, &j);
    g_mutex_lock(&j.m);
    while (!j.done && g_cond_wait_until(&j.c, &j.m, deadline))
      ;
    bool in_time = j.done;
    g_mutex_unlock(&j.m);
    CHECK(in_time, "%s of a FIFO still waits for a writer after 5 s", sniff ? "sniff" : "load");
    if (!in_time) {
      int fd = open(p, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd >= 0)
        close(fd);
    }
    g_thread_join(t);
    CHECK(!j.ok && strstr(j.err, "not a regular file"), "%s of a FIFO: '%s'",
          sniff ? "sniff" : "load", j.err);
    if (!sniff)
      printf("  %-26s -> %s\n", "FIFO named .png", j.err);
    g_mutex_clear(&j.m);
    g_cond_clear(&j.c);
  }
  g_unlink(p);
  g_free(p);
}

/* Writes `jpg` with `seg` (a whole marker segment) inserted after SOI. */
static bool jpeg_with_segment(const char *jpg, const char *dst, const unsigned char *seg,
                              size_t n)
{
  gsize len = 0;
  gchar *d = read_bytes(jpg, &len);
  GByteArray *b = g_byte_array_new();
  bool ok;
  if (!d || len < 2) {
    g_free(d);
    g_byte_array_free(b, TRUE);
    return false;
  }
  g_byte_array_append(b, (const guint8 *)d, 2);
  g_byte_array_append(b, seg, (guint)n);
  g_byte_array_append(b, (const guint8 *)d + 2, (guint)(len - 2));
  ok = write_bytes(dst, b->data, b->len);
  g_byte_array_free(b, TRUE);
  g_free(d);
  return ok;
}

/* An APP1 segment: "Exif\0\0" and the TIFF block `t` (n bytes). */
static size_t app1_exif(unsigned char *seg, const unsigned char *t, size_t n)
{
  size_t len = 2 + 6 + n;
  seg[0] = 0xFF, seg[1] = 0xE1, seg[2] = (unsigned char)(len >> 8), seg[3] = (unsigned char)len;
  memcpy(seg + 4, "Exif\0\0", 6);
  memcpy(seg + 10, t, n);
  return 2 + len;
}

/* A TIFF block with IFD0 at 8 holding one entry (tag, type, count, 4-byte value). */
static size_t exif_block(unsigned char *t, bool be, unsigned tag, unsigned type,
                         uint32_t count, uint32_t value)
{
  memset(t, 0, 26);
#define PUT16(p, v) (be ? ((p)[0] = (unsigned char)((v) >> 8), (p)[1] = (unsigned char)(v)) \
                        : ((p)[1] = (unsigned char)((v) >> 8), (p)[0] = (unsigned char)(v)))
#define PUT32(p, v) (be ? (PUT16(p, (v) >> 16), PUT16((p) + 2, (v) & 0xFFFF)) \
                        : (PUT16((p) + 2, (v) >> 16), PUT16(p, (v) & 0xFFFF)))
  memcpy(t, be ? "MM\0*" : "II*\0", 4);
  PUT32(t + 4, 8u);
  PUT16(t + 8, 1u);
  PUT16(t + 10, tag);
  PUT16(t + 12, type);
  PUT32(t + 14, count);
  if (type == 3 && count == 1)
    PUT16(t + 18, value);
  else
    PUT32(t + 18, value);
  PUT32(t + 22, 0u);
#undef PUT16
#undef PUT32
  return 26;
}

/* Pixel (x, y) of the upright image for orientation o, from the stored w x h `src`. */
static const float *stored_px(const float *src, int w, int h, int o, int x, int y)
{
  int sx, sy;
  switch (o) {
  case 3: sx = w - 1 - x, sy = h - 1 - y; break;
  case 6: sx = y, sy = h - 1 - x; break;      /* turned 90 degrees clockwise */
  case 8: sx = w - 1 - y, sy = x; break;      /* turned 90 degrees counter-clockwise */
  default: sx = x, sy = y; break;
  }
  return src + ((size_t)sy * (size_t)w + (size_t)sx) * 4;
}

static void test_exif_blocks(void)
{
  const int w = 40, h = 24;
  float *px = make_texture(w, h, 0);
  char *base = wpath("exif_base.jpg"), *p = wpath("exif_case.jpg");
  i2i_img_save_opts o = opts_for(I2I_IMG_JPEG, 8, false, false, false);
  i2i_img plain, im;
  char err[512];
  unsigned char t[64], seg[128];
  section("EXIF blocks, well-formed and malformed");
  if (!CHECK(i2i_img_save(base, px, w, h, &o, err, sizeof err), "save base: %s", err) ||
      !CHECK(i2i_img_load(base, &plain, err, sizeof err), "load base: %s", err))
    goto out;
  CHECK(plain.info.orientation == 1, "no EXIF: orientation 1");
  {
    static const struct { bool be; int o; } good[] = {{false, 6}, {true, 3}, {false, 8}};
    for (size_t k = 0; k < G_N_ELEMENTS(good); k++) {
      size_t n = exif_block(t, good[k].be, 0x0112, 3, 1, (uint32_t)good[k].o);
      bool turned = good[k].o >= 5, same = true;
      jpeg_with_segment(base, p, seg, app1_exif(seg, t, n));
      if (!CHECK(i2i_img_load(p, &im, err, sizeof err), "EXIF %s orientation %d: %s",
                 good[k].be ? "MM" : "II", good[k].o, err))
        continue;
      CHECK(im.info.orientation == good[k].o, "EXIF %s: orientation %d read as %d",
            good[k].be ? "MM" : "II", good[k].o, im.info.orientation);
      CHECK(im.info.width == (turned ? h : w) && im.info.height == (turned ? w : h),
            "orientation %d: %d x %d", good[k].o, im.info.width, im.info.height);
      for (int y = 0; same && y < im.info.height; y++)
        for (int x = 0; same && x < im.info.width; x++)
          same = memcmp(im.pixels + ((size_t)y * (size_t)im.info.width + (size_t)x) * 4,
                        stored_px(plain.pixels, w, h, good[k].o, x, y), 16) == 0;
      CHECK(same, "orientation %d: the stored pixels, turned", good[k].o);
      i2i_img_free(&im);
    }
  }
  {
    /* each is ignored: the image loads as stored */
    struct { const char *what; size_t n; } bad[8];
    unsigned char blocks[8][64];
    size_t nb = 0;
    bad[nb].what = "IFD offset past the end";
    bad[nb].n = exif_block(blocks[nb], false, 0x0112, 3, 1, 6);
    blocks[nb][4] = 0xF0, blocks[nb][5] = 0xFF, blocks[nb][6] = 0xFF, blocks[nb][7] = 0xFF;
    nb++;
    bad[nb].what = "65535 entries announced";
    bad[nb].n = exif_block(blocks[nb], false, 0x0112, 3, 1, 6);
    blocks[nb][8] = 0xFF, blocks[nb][9] = 0xFF;
    nb++;
    bad[nb].what = "orientation 9";
    bad[nb].n = exif_block(blocks[nb], false, 0x0112, 3, 1, 9);
    nb++;
    bad[nb].what = "orientation 0";
    bad[nb].n = exif_block(blocks[nb], true, 0x0112, 3, 1, 0);
    nb++;
    bad[nb].what = "2^30 LONGs out of bounds";
    bad[nb].n = exif_block(blocks[nb], false, 0x0112, 4, 1u << 30, 0xFFFFFF00u);
    nb++;
    bad[nb].what = "orientation as ASCII";
    bad[nb].n = exif_block(blocks[nb], false, 0x0112, 2, 2, '6');
    nb++;
    bad[nb].what = "cut TIFF header";
    memcpy(blocks[nb], "II*", 3);
    bad[nb].n = 3;
    nb++;
    bad[nb].what = "bad byte order mark";
    bad[nb].n = exif_block(blocks[nb], false, 0x0112, 3, 1, 6);
    blocks[nb][0] = 'X';
    nb++;
    for (size_t k = 0; k < nb; k++) {
      jpeg_with_segment(base, p, seg, app1_exif(seg, blocks[k], bad[k].n));
      if (CHECK(i2i_img_load(p, &im, err, sizeof err), "EXIF with %s: %s", bad[k].what, err)) {
        CHECK(im.info.orientation == 1 && im.info.width == w && im.info.height == h &&
              bit_equal(im.pixels, plain.pixels, (size_t)w * h, 15),
              "EXIF with %s: ignored (orientation %d)", bad[k].what, im.info.orientation);
        CHECK(im.info.warnings == 0, "EXIF with %s: no warning", bad[k].what);
        i2i_img_free(&im);
      }
    }
  }
  {
    /* a bare "Exif" APP1 and a profile in pieces that do not add up are ignored too */
    static const unsigned char short_app1[] = {0xFF, 0xE1, 0x00, 0x08, 'E', 'x', 'i', 'f', 0, 0};
    static const unsigned char bad_icc[] = {0xFF, 0xE2, 0x00, 0x10, 'I', 'C', 'C', '_', 'P', 'R',
                                            'O', 'F', 'I', 'L', 'E', 0, 2, 1};
    jpeg_with_segment(base, p, short_app1, sizeof short_app1);
    if (CHECK(i2i_img_load(p, &im, err, sizeof err), "empty EXIF: %s", err)) {
      CHECK(im.info.orientation == 1, "empty EXIF ignored");
      i2i_img_free(&im);
    }
    jpeg_with_segment(base, p, bad_icc, sizeof bad_icc);
    if (CHECK(i2i_img_load(p, &im, err, sizeof err), "ICC piece 2 of 1: %s", err)) {
      CHECK(im.info.icc == NULL && im.info.warnings == 0, "ICC piece 2 of 1 ignored");
      i2i_img_free(&im);
    }
  }
  i2i_img_free(&plain);
out:
  g_free(px);
  g_free(base);
  g_free(p);
}

/* Whether the PNG at `path` has a chunk of type `kind`. */
static bool png_has_chunk(const char *path, const char *kind)
{
  gsize n = 0;
  gchar *d = read_bytes(path, &n);
  bool found = false;
  for (gsize pos = 8; d && pos + 8 <= n;) {
    const unsigned char *c = (const unsigned char *)d + pos;
    uint32_t len = (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3];
    if (memcmp(c + 4, kind, 4) == 0)
      found = true;
    pos += 12 + (gsize)len;
  }
  g_free(d);
  return found;
}

static void test_icc(void)
{
  static const char *const srcs[] = {"icc.png", "icc.jpg", "icc.tif", "icc.webp"};
  static const char *const exts[] = {"png", "jpg", "tif", "webp"};
  char *icc_path = wpath("icc.icc");
  gsize icc_len = 0;
  gchar *icc = read_bytes(icc_path, &icc_len);
  char err[512];
  section("ICC profiles kept from input to output");
  g_free(icc_path);
  if (!icc) {
    printf("  (PIL lacks littlecms: no ICC fixtures, skipped)\n");
    return;
  }
  for (size_t i = 0; i < G_N_ELEMENTS(srcs); i++) {
    char *sp = wpath(srcs[i]);
    i2i_img im;
    if (!CHECK(i2i_img_load(sp, &im, err, sizeof err), "load %s: %s", srcs[i], err)) {
      g_free(sp);
      continue;
    }
    CHECK(im.info.icc && im.info.icc_len == icc_len && memcmp(im.info.icc, icc, icc_len) == 0,
          "%s: the profile's %zu bytes are kept (got %zu)", srcs[i], (size_t)icc_len,
          im.info.icc_len);
    for (size_t k = 0; k < G_N_ELEMENTS(exts); k++) {
      gchar *name = g_strdup_printf("icc_%zu.%s", i, exts[k]);
      gchar *pname = g_strconcat(name, ".icc", NULL);
      char *op = wpath(name), *pp = wpath(pname);
      i2i_img_save_opts o;
      i2i_img back;
      gsize got_len = 0;
      gchar *got = NULL;
      i2i_img_save_opts_from_info(&o, &im.info, i2i_img_type_from_name(op));
      if (!CHECK(i2i_img_save(op, im.pixels, im.info.width, im.info.height, &o, err,
                              sizeof err), "save %s: %s", name, err))
        goto next;
      if (CHECK(run_python("icc", op, pp), "PIL reads %s", name))
        got = read_bytes(pp, &got_len);
      CHECK(got && got_len == icc_len && memcmp(got, icc, icc_len) == 0,
            "%s -> %s: PIL finds the input's profile (%zu bytes, expected %zu)", srcs[i],
            name, (size_t)got_len, (size_t)icc_len);
      if (k == 0)
        CHECK(!png_has_chunk(op, "sRGB") && png_has_chunk(op, "iCCP"),
              "%s: iCCP and no sRGB chunk", name);
      if (CHECK(i2i_img_load(op, &back, err, sizeof err), "reload %s: %s", name, err)) {
        CHECK(back.info.icc_len == icc_len, "%s: our loader finds the profile too", name);
        if (k != 1 && im.info.lossless)
          CHECK(bit_equal(back.pixels, im.pixels, (size_t)im.info.width * im.info.height, 15),
                "%s: pixels unchanged by the profile", name);
        i2i_img_free(&back);
      }
    next:
      g_free(got);
      g_free(op);
      g_free(pp);
      g_free(name);
      g_free(pname);
    }
    if (i == 0) {
      /* a colour profile does not go into a gray file */
      i2i_img_save_opts o;
      char *gp = wpath("icc_gray.png"), *pp = wpath("icc_gray.png.icc");
      gsize n = 1;
      gchar *got = NULL;
      i2i_img_save_opts_from_info(&o, &im.info, I2I_IMG_PNG);
      o.gray = true;
      if (CHECK(i2i_img_save(gp, im.pixels, im.info.width, im.info.height, &o, err,
                             sizeof err), "save gray: %s", err) &&
          run_python("icc", gp, pp))
        got = read_bytes(pp, &n);
      CHECK(got && n == 0, "RGB profile left out of a gray PNG (%zu bytes)", (size_t)n);
      g_free(got);
      g_free(gp);
      g_free(pp);
    }
    i2i_img_free(&im);
    g_free(sp);
  }
  {
    /* a gray profile goes into gray PNG, JPEG and TIFF files; WebP, always RGB, leaves it */
    char *gp = wpath("gicc.jpg"), *gicc_path = wpath("gicc.icc");
    gsize glen = 0;
    gchar *gicc = read_bytes(gicc_path, &glen);
    i2i_img im;
    if (CHECK(gicc != NULL, "read gicc.icc") &&
        CHECK(i2i_img_load(gp, &im, err, sizeof err), "load gicc.jpg: %s", err)) {
      CHECK(im.info.is_gray && im.info.icc_len == glen &&
            memcmp(im.info.icc, gicc, glen) == 0, "gicc.jpg: gray profile kept");
      for (size_t k = 0; k < G_N_ELEMENTS(exts); k++) {
        gchar *name = g_strdup_printf("gicc_out.%s", exts[k]);
        gchar *pname = g_strconcat(name, ".icc", NULL);
        char *op = wpath(name), *pp = wpath(pname);
        i2i_img_save_opts o;
        gsize got_len = 0;
        gchar *got = NULL;
        bool want = strcmp(exts[k], "webp") != 0;
        i2i_img_save_opts_from_info(&o, &im.info, i2i_img_type_from_name(op));
        if (CHECK(i2i_img_save(op, im.pixels, im.info.width, im.info.height, &o, err,
                               sizeof err), "save %s: %s", name, err) &&
            CHECK(run_python("icc", op, pp), "PIL reads %s", name))
          got = read_bytes(pp, &got_len);
        CHECK(got && (want ? got_len == glen && memcmp(got, gicc, glen) == 0 : got_len == 0),
              "%s: gray profile %s (PIL finds %zu bytes)", name, want ? "kept" : "left out",
              (size_t)got_len);
        g_free(got);
        g_free(op);
        g_free(pp);
        g_free(name);
        g_free(pname);
      }
      i2i_img_free(&im);
    }
    g_free(gicc);
    g_free(gp);
    g_free(gicc_path);
  }
  for (int k = 0; k < 2; k++) {
    const char *name = k ? "icc_cmyk.tif" : "icc_cmyk.jpg";
    char *cp = wpath(name);
    i2i_img im;
    if (CHECK(i2i_img_load(cp, &im, err, sizeof err), "load %s: %s", name, err)) {
      CHECK(im.info.icc == NULL, "%s: a CMYK file's profile is not kept for R'G'B'", name);
      i2i_img_free(&im);
    }
    g_free(cp);
  }
  g_free(icc);
}

/* ---- hostile files: crafted ICC profiles, inconsistent TIFFs, mutants ------------------ */

/* Hostile files are loaded in a child process (this program run with --load-list), so that a
 * crash fails a check instead of ending the run. GEGL 0.4.42's loaders, used before, exited in
 * babl (babl_fatal) or read out of bounds on a tone curve whose entry count passes its tag,
 * and read past a row buffer on a TIFF with fewer samples per pixel than its colours. */

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static void put_be32(GByteArray *b, uint32_t v)
{
  unsigned char q[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                        (unsigned char)(v >> 8), (unsigned char)v};
  g_byte_array_append(b, q, 4);
}

static void put_le(GByteArray *b, uint32_t v, int n)
{
  for (int i = 0; i < n; i++) {
    unsigned char c = (unsigned char)(v >> (8 * i));
    g_byte_array_append(b, &c, 1);
  }
}

static void set_be32(unsigned char *p, uint32_t v)
{
  p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_s15(GByteArray *b, double v)
{
  put_be32(b, (uint32_t)(int32_t)lround(v * 65536.0));
}

/* How a test profile is broken, as the fuzz run found (each crashed babl). */
typedef enum {
  ICC_GOOD,
  ICC_CURVE_PAST_TAG,   /* the tone curve's entry count 0xFFFF in a 14-byte tag */
  ICC_CURVE_HUGE,       /* entry count 0xE87DE234: babl's allocation goes negative */
  ICC_CURVE_AT_HEADER   /* a tone curve tag pointing into the header ("mntr" as count) */
} icc_flaw;

/* A minimal ICC v2 display profile (RGB: matrix and gamma 2.2 curves; gray: gamma curve),
 * broken as `flaw` says. Caller frees with g_byte_array_unref. */
static GByteArray *icc_build(bool gray, icc_flaw flaw)
{
  static const char *const rgb_tags[] = {"desc", "wtpt", "rXYZ", "gXYZ", "bXYZ", "rTRC",
                                         "gTRC", "bTRC"};
  static const char *const gray_tags[] = {"desc", "wtpt", "kTRC"};
  static const double xyz[4][3] = {{0.9642, 1.0, 0.8249}, {0.4361, 0.2225, 0.0139},
                                   {0.3851, 0.7169, 0.0971}, {0.1431, 0.0606, 0.7141}};
  const char *const *tags = gray ? gray_tags : rgb_tags;
  int n = gray ? 3 : 8;
  GByteArray *body = g_byte_array_new(), *p = g_byte_array_new();
  uint32_t at[8], len[8], curve_at = 0, table = 128 + 4 + 12 * (uint32_t)n;
  for (int i = 0; i < n; i++) {
    at[i] = table + body->len;
    if (!strcmp(tags[i], "desc")) {
      static const char text[] = "i2i test";
      g_byte_array_append(body, (const guint8 *)"desc\0\0\0\0", 8);
      put_be32(body, sizeof text);
      g_byte_array_append(body, (const guint8 *)text, sizeof text);
      for (int k = 0; k < 8 + 3 + 67; k++)
        g_byte_array_append(body, (const guint8 *)"", 1);
    } else if (strstr(tags[i], "TRC")) {
      if (curve_at) { /* the three colour curves share one tag, as in many profiles */
        at[i] = curve_at;
        len[i] = 14;
        continue;
      }
      curve_at = at[i];
      g_byte_array_append(body, (const guint8 *)"curv\0\0\0\0", 8);
      put_be32(body, flaw == ICC_CURVE_PAST_TAG ? 0xFFFFu : flaw == ICC_CURVE_HUGE ? 0xE87DE234u
                                                                               : 1u);
      g_byte_array_append(body, (const guint8 *)"\x02\x33", 2);
    } else {
      int k = !strcmp(tags[i], "wtpt") ? 0 : tags[i][0] == 'r' ? 1 : tags[i][0] == 'g' ? 2 : 3;
      g_byte_array_append(body, (const guint8 *)"XYZ \0\0\0\0", 8);
      for (int c = 0; c < 3; c++)
        put_s15(body, xyz[k][c]);
    }
    len[i] = table + body->len - at[i];
    while (body->len % 4)
      g_byte_array_append(body, (const guint8 *)"", 1);
  }
  put_be32(p, table + body->len);
  g_byte_array_append(p, (const guint8 *)"lcms", 4);
  put_be32(p, 0x02100000u);
  g_byte_array_append(p, (const guint8 *)"mntr", 4);
  g_byte_array_append(p, (const guint8 *)(gray ? "GRAY" : "RGB "), 4);
  g_byte_array_append(p, (const guint8 *)"XYZ ", 4);
  for (int k = 0; k < 12; k++)
    g_byte_array_append(p, (const guint8 *)"", 1);
  g_byte_array_append(p, (const guint8 *)"acspAPPL", 8);
  for (int k = 0; k < 4 + 4 + 4 + 8 + 4; k++)
    g_byte_array_append(p, (const guint8 *)"", 1);
  for (int c = 0; c < 3; c++)
    put_s15(p, xyz[0][c]);
  g_byte_array_append(p, (const guint8 *)"lcms", 4);
  for (int k = 0; k < 16 + 28; k++)
    g_byte_array_append(p, (const guint8 *)"", 1);
  put_be32(p, (uint32_t)n);
  for (int i = 0; i < n; i++) {
    /* gTRC, bTRC or kTRC moved onto the header */
    bool moved = flaw == ICC_CURVE_AT_HEADER && strstr(tags[i], "TRC") && tags[i][0] != 'r';
    g_byte_array_append(p, (const guint8 *)tags[i], 4);
    put_be32(p, moved ? 4 : at[i]);
    put_be32(p, len[i]);
  }
  g_byte_array_append(p, body->data, body->len);
  g_byte_array_unref(body);
  return p;
}

static void png_put_chunk(GByteArray *b, const char *type, const unsigned char *d, size_t n)
{
  uLong crc = crc32(0, (const Bytef *)type, 4);
  if (n) /* zlib's crc32 of a NULL buffer is its initial value, not the CRC so far */
    crc = crc32(crc, d, (uInt)n);
  put_be32(b, (uint32_t)n);
  g_byte_array_append(b, (const guint8 *)type, 4);
  g_byte_array_append(b, d, (guint)n);
  put_be32(b, (uint32_t)crc);
}

static GByteArray *zlib_bytes(const unsigned char *d, size_t n)
{
  uLongf out = compressBound((uLong)n);
  GByteArray *z = g_byte_array_sized_new((guint)out);
  g_byte_array_set_size(z, (guint)out);
  if (compress2(z->data, &out, d, (uLong)n, 6) != Z_OK)
    out = 0;
  g_byte_array_set_size(z, (guint)out);
  return z;
}

/* A w x h 8-bit PNG (gray or RGB gradient) with `icc` as its iCCP chunk (NULL: none). */
static GByteArray *png_build(int w, int h, bool gray, const GByteArray *icc)
{
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  int ch = gray ? 1 : 3;
  GByteArray *b = g_byte_array_new(), *raw = g_byte_array_new(), *z;
  unsigned char ihdr[13];
  g_byte_array_append(b, sig, 8);
  set_be32(ihdr, (uint32_t)w);
  set_be32(ihdr + 4, (uint32_t)h);
  ihdr[8] = 8, ihdr[9] = gray ? 0 : 2, ihdr[10] = ihdr[11] = ihdr[12] = 0;
  png_put_chunk(b, "IHDR", ihdr, 13);
  if (icc) {
    GByteArray *c = g_byte_array_new();
    z = zlib_bytes(icc->data, icc->len);
    g_byte_array_append(c, (const guint8 *)"icc\0\0", 5);
    g_byte_array_append(c, z->data, z->len);
    png_put_chunk(b, "iCCP", c->data, c->len);
    g_byte_array_unref(z);
    g_byte_array_unref(c);
  }
  for (int y = 0; y < h; y++) {
    unsigned char f = 0;
    g_byte_array_append(raw, &f, 1);
    for (int x = 0; x < w * ch; x++) {
      unsigned char v = (unsigned char)((x * 7 + y * 13) & 0xFF);
      g_byte_array_append(raw, &v, 1);
    }
  }
  z = zlib_bytes(raw->data, raw->len);
  png_put_chunk(b, "IDAT", z->data, z->len);
  png_put_chunk(b, "IEND", NULL, 0);
  g_byte_array_unref(z);
  g_byte_array_unref(raw);
  return b;
}

/* One TIFF field: SHORT (3), LONG (4) or UNDEFINED (7) values. */
typedef struct {
  uint16_t tag, type;
  uint32_t count;
  const void *values;   /* uint16_t, uint32_t or bytes, by type */
} tiff_field;

/* A little-endian TIFF: header, the IFD (fields sorted by tag), the values that do not fit in
 * an entry, then `data` as the one strip (StripOffsets and StripByteCounts are added). */
static GByteArray *tiff_build(const tiff_field *fields, int n, const unsigned char *data,
                              size_t data_len)
{
  GByteArray *b = g_byte_array_new(), *extra = g_byte_array_new();
  uint32_t strip_len = (uint32_t)data_len, strip_at;
  tiff_field all[24];
  int m = 0;
  for (int i = 0; i < n; i++)
    all[m++] = fields[i];
  all[m++] = (tiff_field){273, 4, 1, NULL};
  all[m++] = (tiff_field){279, 4, 1, &strip_len};
  for (int i = 1; i < m; i++) /* insertion sort by tag */
    for (int k = i; k > 0 && all[k].tag < all[k - 1].tag; k--) {
      tiff_field t = all[k];
      all[k] = all[k - 1];
      all[k - 1] = t;
    }
  uint32_t extra_at = 8 + 2 + 12 * (uint32_t)m + 4;
  for (int i = 0; i < m; i++) {
    uint32_t size = all[i].count * (all[i].type == 3 ? 2 : all[i].type == 4 ? 4 : 1);
    if (size > 4) {
      extra_at += size + (size & 1);
    }
  }
  strip_at = extra_at;
  g_byte_array_append(b, (const guint8 *)"II*\0", 4);
  put_le(b, 8, 4);
  put_le(b, (uint32_t)m, 2);
  extra_at = 8 + 2 + 12 * (uint32_t)m + 4;
  for (int i = 0; i < m; i++) {
    const tiff_field *f = &all[i];
    uint32_t unit = f->type == 3 ? 2 : f->type == 4 ? 4 : 1, size = f->count * unit;
    GByteArray *v = g_byte_array_new();
    for (uint32_t k = 0; k < f->count; k++) {
      uint32_t x = f->tag == 273 ? strip_at : unit == 2 ? ((const uint16_t *)f->values)[k]
                 : unit == 4 ? ((const uint32_t *)f->values)[k]
                             : ((const unsigned char *)f->values)[k];
      put_le(v, x, (int)unit);
    }
    put_le(b, f->tag, 2);
    put_le(b, f->type, 2);
    put_le(b, f->count, 4);
    if (size <= 4) {
      while (v->len < 4)
        g_byte_array_append(v, (const guint8 *)"", 1);
      g_byte_array_append(b, v->data, 4);
    } else {
      put_le(b, extra_at, 4);
      g_byte_array_append(extra, v->data, v->len);
      if (size & 1)
        g_byte_array_append(extra, (const guint8 *)"", 1);
      extra_at += size + (size & 1);
    }
    g_byte_array_unref(v);
  }
  put_le(b, 0, 4);
  g_byte_array_append(b, extra->data, extra->len);
  g_byte_array_append(b, data, (guint)data_len);
  g_byte_array_unref(extra);
  return b;
}

/* A w x h 8-bit chunky TIFF of `photometric` whose SamplesPerPixel field says `spp` (0: no
 * field, which means 1) over `stored` samples a pixel; `extra` ExtraSamples values (n_extra)
 * and `icc` (NULL: none) are added when given. */
static GByteArray *tiff_case(uint32_t w, uint32_t h, uint16_t photometric, uint16_t spp,
                             int stored, const uint16_t *extra, int n_extra,
                             const GByteArray *icc)
{
  static const uint16_t bps[8] = {8, 8, 8, 8, 8, 8, 8, 8};
  uint16_t one = 1;
  uint32_t rows = h;
  size_t n = (size_t)w * h * (size_t)stored;
  unsigned char *px = g_malloc(n);
  tiff_field f[12];
  int k = 0;
  GByteArray *b;
  for (size_t i = 0; i < n; i++)
    px[i] = (unsigned char)(i * 37 + i / 97);
  f[k++] = (tiff_field){256, 4, 1, &w};
  f[k++] = (tiff_field){257, 4, 1, &h};
  f[k++] = (tiff_field){258, 3, (uint32_t)stored, bps};
  f[k++] = (tiff_field){259, 3, 1, &one};
  f[k++] = (tiff_field){262, 3, 1, &photometric};
  if (spp)
    f[k++] = (tiff_field){277, 3, 1, &spp};
  f[k++] = (tiff_field){278, 4, 1, &rows};
  f[k++] = (tiff_field){284, 3, 1, &one};
  if (n_extra)
    f[k++] = (tiff_field){338, 3, (uint32_t)n_extra, extra};
  if (icc)
    f[k++] = (tiff_field){34675, 7, icc->len, icc->data};
  b = tiff_build(f, k, px, n);
  g_free(px);
  return b;
}

/* The child: loads the files listed in `list` (one path a line) from line `first` on, with
 * memory and time bounded (a forged size then fails to allocate instead of taking the
 * machine), printing "start I" before each and then "ok W H ALPHA GRAY ICC_LEN" or
 * "refused MESSAGE". A crash shows as the parent's last "start". */
static int child_load(const char *list, int first)
{
  gchar *text = NULL, **lines;
  char err[512];
#ifndef UNDER_ASAN
  struct rlimit lim = {(rlim_t)1 << 30, (rlim_t)1 << 30};
  setrlimit(RLIMIT_AS, &lim);
#endif
  alarm(120);
  if (!g_file_get_contents(list, &text, NULL, NULL))
    return 2;
  lines = g_strsplit(text, "\n", -1);
  for (int i = first; lines[i] && lines[i][0]; i++) {
    i2i_img im;
    printf("start %d\n", i);
    fflush(stdout);
    if (i2i_img_load(lines[i], &im, err, sizeof err)) {
      printf("ok %d %d %d %d %zu\n", im.info.width, im.info.height, im.info.has_alpha,
             im.info.is_gray, im.info.icc_len);
      i2i_img_free(&im);
    } else {
      for (char *c = err; *c; c++)
        if (*c == '\n')
          *c = ' ';
      printf("refused %s\n", err);
    }
    fflush(stdout);
  }
  g_strfreev(lines);
  g_free(text);
  return 0;
}

/* Loads each of `paths` in child processes (restarted after a file that killed one) and
 * returns their result lines ("ok ...", "refused ..." or "crashed: ..."), one a path. */
static GPtrArray *load_in_children(GPtrArray *paths, int *n_crashed)
{
  GPtrArray *res = g_ptr_array_new_with_free_func(g_free);
  char *list = wpath("hostile-list.txt");
  GString *all = g_string_new(NULL);
  int next = 0;
  *n_crashed = 0;
  for (guint i = 0; i < paths->len; i++)
    g_string_append_printf(all, "%s\n", (const char *)g_ptr_array_index(paths, i));
  write_bytes(list, all->str, all->len);
  g_string_free(all, TRUE);
  for (guint i = 0; i < paths->len; i++)
    g_ptr_array_add(res, g_strdup("crashed: not reached"));
  while (next < (int)paths->len) {
    char first[16];
    const char *argv[] = {self_exe, "--load-list", list, first, NULL};
    const char *asan = g_getenv("ASAN_OPTIONS");
    gchar *opts = g_strdup_printf("%s%sallocator_may_return_null=1:max_allocation_size_mb=512",
                                  asan ? asan : "", asan ? ":" : "");
    gchar **envp = g_environ_setenv(g_get_environ(), "ASAN_OPTIONS", opts, TRUE);
    gchar *out = NULL, **lines;
    gint status = 0;
    int last = -1;
    snprintf(first, sizeof first, "%d", next);
    if (!g_spawn_sync(NULL, (gchar **)argv, envp, G_SPAWN_DEFAULT, NULL, NULL,
                      &out, NULL, &status, NULL)) {
      g_free(opts);
      g_strfreev(envp);
      break;
    }
    lines = g_strsplit(out ? out : "", "\n", -1);
    for (int k = 0; lines[k]; k++) {
      if (g_str_has_prefix(lines[k], "start "))
        last = atoi(lines[k] + 6);
      else if (last >= 0 && last < (int)paths->len && lines[k][0]) {
        g_free(g_ptr_array_index(res, last));
        g_ptr_array_index(res, last) = g_strdup(lines[k]);
      }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      next = (int)paths->len;
    } else if (last >= 0) {
      g_free(g_ptr_array_index(res, last));
      g_ptr_array_index(res, last) =
          WIFSIGNALED(status) ? g_strdup_printf("crashed: signal %d (%s)", WTERMSIG(status),
                                                g_strsignal(WTERMSIG(status)))
                              : g_strdup_printf("crashed: exit status %d", WEXITSTATUS(status));
      (*n_crashed)++;
      next = last + 1;
    } else {
      (*n_crashed)++;
      next = (int)paths->len;
    }
    g_strfreev(lines);
    g_free(out);
    g_free(opts);
    g_strfreev(envp);
  }
  g_free(list);
  return res;
}

/* One crafted file: written, loaded in a child, expected to load (with or without its
 * profile) or to be refused with a message holding `needle`. */
typedef struct {
  const char *name;
  GByteArray *bytes;
  bool loads;
  size_t icc_len;      /* when it loads: the profile length kept (0: dropped) */
  bool alpha;
  const char *needle;  /* when refused */
} hostile_case;

static void test_crafted_files(void)
{
  GByteArray *good = icc_build(false, ICC_GOOD), *ggood = icc_build(true, ICC_GOOD);
  GByteArray *past = icc_build(false, ICC_CURVE_PAST_TAG);
  GByteArray *huge = icc_build(true, ICC_CURVE_HUGE);
  GByteArray *header = icc_build(false, ICC_CURVE_AT_HEADER);
  static const uint16_t alpha_extra[1] = {2}, two_extra[2] = {2, 0};
  hostile_case cases[] = {
    {"icc_good.png", png_build(16, 12, false, good), true, good->len, false, NULL},
    {"icc_curve_past_tag.png", png_build(16, 12, false, past), true, 0, false, NULL},
    {"icc_curve_huge.png", png_build(16, 12, true, huge), true, 0, false, NULL},
    {"icc_curve_at_header.png", png_build(16, 12, false, header), true, 0, false, NULL},
    {"icc_curve_past_tag.tif", tiff_case(16, 12, 2, 3, 3, NULL, 0, past), true, 0, false, NULL},
    {"icc_curve_huge.tif", tiff_case(16, 12, 1, 1, 1, NULL, 0, huge), true, 0, false, NULL},
    {"icc_good.tif", tiff_case(16, 12, 2, 3, 3, NULL, 0, good), true, good->len, false, NULL},
    {"icc_gray_good.tif", tiff_case(16, 12, 1, 1, 1, NULL, 0, ggood), true, ggood->len, false,
     NULL},
    /* RGB whose SamplesPerPixel is missing (1): GEGL read 3 samples a pixel from 1 */
    {"rgb_spp_missing.tif", tiff_case(262144, 2, 2, 0, 1, NULL, 0, NULL), false, 0, false,
     "SamplesPerPixel"},
    {"rgb_spp1_alpha.tif", tiff_case(262144, 2, 2, 1, 1, alpha_extra, 1, NULL), false, 0, false,
     "SamplesPerPixel"},
    {"cmyk_spp2.tif", tiff_case(64, 8, 5, 2, 2, NULL, 0, NULL), false, 0, false,
     "SamplesPerPixel"},
    /* alpha declared by ExtraSamples but not stored: GEGL read 4 samples a pixel from 3 */
    {"rgb_extra_not_stored.tif", tiff_case(65536, 2, 2, 3, 3, alpha_extra, 1, NULL), true, 0,
     false, NULL},
    {"rgb_two_extra_not_stored.tif", tiff_case(64, 8, 2, 3, 3, two_extra, 2, NULL), true, 0,
     false, NULL},
    {"gray_spp3.tif", tiff_case(64, 8, 1, 3, 3, NULL, 0, NULL), true, 0, true, NULL},
  };
  GPtrArray *paths = g_ptr_array_new_with_free_func(g_free), *res;
  int n_crashed;
  char err[512];
  section("crafted ICC profiles and inconsistent TIFFs, loaded in a child");
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *p = wpath(cases[i].name);
    write_bytes(p, cases[i].bytes->data, cases[i].bytes->len);
    g_ptr_array_add(paths, p);
  }
  res = load_in_children(paths, &n_crashed);
  CHECK(n_crashed == 0, "%d crafted files killed the loading process", n_crashed);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    const char *r = g_ptr_array_index(res, i);
    int w = 0, h = 0, alpha = 0, gray = 0;
    size_t icc_len = 0;
    printf("  %-30s -> %s\n", cases[i].name, r);
    if (!cases[i].loads) {
      CHECK(g_str_has_prefix(r, "refused ") && strstr(r, cases[i].needle), "%s: refused "
            "naming '%s', not '%s'", cases[i].name, cases[i].needle, r);
      continue;
    }
    if (!CHECK(sscanf(r, "ok %d %d %d %d %zu", &w, &h, &alpha, &gray, &icc_len) == 5,
               "%s loads: %s", cases[i].name, r))
      continue;
    CHECK(icc_len == cases[i].icc_len, "%s: profile of %zu bytes kept, expected %zu",
          cases[i].name, icc_len, cases[i].icc_len);
    CHECK((alpha != 0) == cases[i].alpha, "%s: has_alpha %d", cases[i].name, alpha);
  }
  /* what loaded safely in the child is compared here: the profile changes no pixel */
  {
    GByteArray *plain = png_build(16, 12, false, NULL);
    char *pp = wpath("icc_none.png"), *cp = wpath("icc_curve_past_tag.png");
    i2i_img a, b;
    write_bytes(pp, plain->data, plain->len);
    if (g_str_has_prefix(g_ptr_array_index(res, 1), "ok ") &&
        CHECK(i2i_img_load(pp, &a, err, sizeof err), "load icc_none.png: %s", err)) {
      if (CHECK(i2i_img_load(cp, &b, err, sizeof err), "load crafted PNG: %s", err)) {
        CHECK(bit_equal(a.pixels, b.pixels, 16 * 12, 15) && b.info.icc == NULL,
              "crafted iCCP: same pixels as without it, profile dropped");
        i2i_img_free(&b);
      }
      i2i_img_free(&a);
    }
    g_byte_array_unref(plain);
    g_free(pp);
    g_free(cp);
  }
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
    g_byte_array_unref(cases[i].bytes);
  g_ptr_array_unref(res);
  g_ptr_array_unref(paths);
  g_byte_array_unref(good);
  g_byte_array_unref(ggood);
  g_byte_array_unref(past);
  g_byte_array_unref(huge);
  g_byte_array_unref(header);
}

/* Recomputes the CRC of every whole chunk of a PNG in place (a mutant then reaches libpng's
 * decoding instead of failing its CRC check). */
static void png_fix_crcs(unsigned char *d, size_t n)
{
  for (size_t pos = 8; pos + 12 <= n;) {
    uint32_t len = get_be32(d + pos);
    if (len > n - pos - 12)
      break;
    set_be32(d + pos + 8 + len, (uint32_t)crc32(0, d + pos + 4, len + 4));
    pos += 12 + (size_t)len;
  }
}

/* A deterministic mutant of `src` (PNG or TIFF): a few bytes set to values that matter in
 * headers (0, 1, 2, 3, 4, 8, 16, 255, ...), biased toward the start where the structure is;
 * PNG CRCs are fixed afterwards. For a PNG with a profile, half the mutants change the
 * profile's bytes instead (recompressed). */
static GByteArray *mutate(const GByteArray *src, bool png, const GByteArray *icc, bool gray)
{
  static const unsigned char vals[] = {0, 1, 2, 3, 4, 5, 6, 8, 16, 32, 64, 0x7F, 0x80, 0xFF};
  GByteArray *m;
  int n_changes = 1 + (int)(rnd() % 4);
  if (png && icc && rnd() % 2) {
    GByteArray *p = g_byte_array_new();
    g_byte_array_append(p, icc->data, icc->len);
    for (int k = 0; k < n_changes; k++) {
      size_t at = rnd() % 2 ? 128 + rnd() % (p->len - 128) : rnd() % p->len;
      p->data[at] = rnd() % 3 ? vals[rnd() % sizeof vals] : (unsigned char)rnd();
    }
    m = png_build(16, 12, gray, p);
    g_byte_array_unref(p);
    return m;
  }
  m = g_byte_array_new();
  g_byte_array_append(m, src->data, src->len);
  for (int k = 0; k < n_changes; k++) {
    size_t span = rnd() % 4 ? MIN((size_t)m->len, (size_t)256) : m->len;
    size_t at = (png ? 8 : 2) + rnd() % (span - (png ? 8 : 2));
    m->data[at] = rnd() % 3 ? vals[rnd() % sizeof vals] : (unsigned char)rnd();
  }
  if (png)
    png_fix_crcs(m->data, m->len);
  return m;
}

static void test_mutants(void)
{
  const int w = 24, h = 16, per_base = 150;
  float *px = make_texture(w, h, 0);
  GByteArray *icc = icc_build(false, ICC_GOOD), *gicc = icc_build(true, ICC_GOOD);
  GPtrArray *bases = g_ptr_array_new_with_free_func((GDestroyNotify)g_byte_array_unref);
  GPtrArray *paths = g_ptr_array_new_with_free_func(g_free), *res;
  bool base_png[12] = {false}, base_gray[12] = {false};
  const GByteArray *base_icc[12] = {NULL};
  int n_crashed, n_ok = 0, n_refused = 0;
  gint64 t0 = g_get_monotonic_time();
  static const struct {
    const char *name;
    int bits;
    bool is_float, gray, alpha;
  } saved[] = {{"mut_rgb8.png", 8, false, false, false}, {"mut_ya16.png", 16, false, true, true},
               {"mut_rgb8.tif", 8, false, false, false}, {"mut_ya16.tif", 16, false, true, true},
               {"mut_rgbaf.tif", 32, true, false, true}};
  section("mutants of small PNG and TIFF files, loaded in a child");
  rng_state = 20250601u;
  g_ptr_array_add(bases, png_build(16, 12, false, icc));
  base_png[0] = true, base_gray[0] = false, base_icc[0] = icc;
  g_ptr_array_add(bases, png_build(16, 12, true, gicc));
  base_png[1] = true, base_gray[1] = true, base_icc[1] = gicc;
  g_ptr_array_add(bases, tiff_case(16, 12, 2, 3, 3, NULL, 0, icc));
  base_png[2] = false, base_gray[2] = false, base_icc[2] = NULL;
  for (size_t i = 0; i < G_N_ELEMENTS(saved); i++) {
    char err[512], *p = wpath(saved[i].name);
    i2i_img_type t = i2i_img_type_from_name(p);
    i2i_img_save_opts o = opts_for(t, saved[i].bits, saved[i].is_float, saved[i].gray,
                                   saved[i].alpha);
    gsize n = 0;
    gchar *d;
    if (CHECK(i2i_img_save(p, px, w, h, &o, err, sizeof err), "save %s: %s", saved[i].name,
              err) && (d = read_bytes(p, &n)) != NULL) {
      GByteArray *b = g_byte_array_new_take((guint8 *)d, n);
      base_png[bases->len] = t == I2I_IMG_PNG;
      base_gray[bases->len] = saved[i].gray;
      base_icc[bases->len] = NULL;
      g_ptr_array_add(bases, b);
    }
    g_free(p);
  }
  for (guint b = 0; b < bases->len; b++)
    for (int k = 0; k < per_base; k++) {
      GByteArray *m = mutate(g_ptr_array_index(bases, b), base_png[b], base_icc[b],
                             base_gray[b]);
      gchar *name = g_strdup_printf("mutant_%u_%02d.%s", b, k, base_png[b] ? "png" : "tif");
      char *p = wpath(name);
      write_bytes(p, m->data, m->len);
      g_ptr_array_add(paths, p);
      g_byte_array_unref(m);
      g_free(name);
    }
  res = load_in_children(paths, &n_crashed);
  for (guint i = 0; i < res->len; i++) {
    const char *r = g_ptr_array_index(res, i);
    if (g_str_has_prefix(r, "ok "))
      n_ok++;
    else if (g_str_has_prefix(r, "refused "))
      n_refused++;
    else
      CHECK(false, "%s: %s", (const char *)g_ptr_array_index(paths, i), r);
  }
  CHECK(n_crashed == 0 && n_ok + n_refused == (int)paths->len, "%u mutants: %d loaded, %d "
        "refused, %d killed the loading process", paths->len, n_ok, n_refused, n_crashed);
  printf("  %u mutants of %u files: %d loaded, %d refused with a message, %d crashed "
         "(%.1f s)\n", paths->len, bases->len, n_ok, n_refused, n_crashed,
         (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC);
  g_ptr_array_unref(res);
  g_ptr_array_unref(paths);
  g_ptr_array_unref(bases);
  g_byte_array_unref(icc);
  g_byte_array_unref(gicc);
  g_free(px);
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
  if (argc == 4 && strcmp(argv[1], "--load-list") == 0)
    return child_load(argv[2], atoi(argv[3]));
  if (argc != 3) {
    fprintf(stderr, "usage: %s GEN_IMAGES.PY WORKDIR\n", argv[0]);
    return 2;
  }
  gen_script = argv[1];
  work = argv[2];
  self_exe = g_file_read_link("/proc/self/exe", NULL);
  if (!self_exe)
    self_exe = g_strdup(argv[0]);
  if (g_getenv("I2I_TEST_PYTHON"))
    python = g_getenv("I2I_TEST_PYTHON");
  g_mkdir_with_parents(work, 0755);
  rm_rf_contents(work);

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
  test_exif_blocks();
  test_fifo();
  if (have_python) {
    test_extra_fixtures();
    test_forged_sizes();
    test_icc();
  }
  test_crafted_files();
  test_mutants();
  test_npy();

  g_free(self_exe);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
