/* converter/imageio/imageio.c: image files <-> float RGBA for the `i2i` tool (imageio.h).
 * PNG and TIFF go through GEGL, whose operations report failure only through GLib's log and
 * printerr (captured here while they run); JPEG and WebP use libjpeg and libwebp directly,
 * since GEGL 0.4.42's JPEG operations exit() on malformed files and hang on write errors and
 * its WebP ones cannot write lossless files or notice truncation. No colour management:
 * pixels are the file's stored (gamma-encoded) values. Not a general image library. */
#include "imageio.h"

#include "atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gegl.h>
#include <gmodule.h>
#include <jpeglib.h>
#include <jerror.h>
#include <webp/decode.h>
#include <webp/encode.h>

#define JPEG_MAX_SIDE 65500
#define WEBP_MAX_SIDE 16383
#define JPEG_MAX_SCANS 1000
#define DEFAULT_QUALITY 95
#define DEFAULT_PNG_COMPRESSION 3

/* ------------------------------------------------------------------------------------ */
/* Errors, sizes */

static bool fail(char *err, size_t errlen, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
  if (err && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return false;
}

/* Checks the dimensions against the limits and returns the pixel count in *n_px. `verb`
 * starts the message: "cannot decode" or "cannot write". */
static bool check_dims(const char *verb, const char *path, int w, int h, size_t *n_px,
                       char *err, size_t errlen)
{
  if (w <= 0 || h <= 0)
    return fail(err, errlen, "%s '%s': no pixels (%d x %d)", verb, path, w, h);
  if (w > I2I_IMG_MAX_SIDE || h > I2I_IMG_MAX_SIDE)
    return fail(err, errlen, "%s '%s': %d x %d pixels is over the limit of %d per side", verb,
                path, w, h, I2I_IMG_MAX_SIDE);
  if ((uint64_t)w * (uint64_t)h > I2I_IMG_MAX_PIXELS)
    return fail(err, errlen, "%s '%s': %d x %d pixels is over the limit of %u pixels", verb,
                path, w, h, I2I_IMG_MAX_PIXELS);
  *n_px = (size_t)w * (size_t)h;
  return true;
}

/* Allocates n_px float RGBA pixels, with a readable message when memory is short. */
static float *alloc_rgba(const char *path, int w, int h, size_t n_px, char *err, size_t errlen)
{
  size_t bytes;
  float *p;
  if (!g_size_checked_mul(&bytes, n_px, 4 * sizeof(float))) {
    fail(err, errlen, "'%s': %d x %d pixels is too large", path, w, h);
    return NULL;
  }
  p = g_try_malloc(bytes);
  if (!p)
    fail(err, errlen, "out of memory: '%s' (%d x %d) needs %zu MB as float RGBA", path, w, h,
         bytes >> 20);
  return p;
}

/* Maps the pages of a fresh output buffer on a helper thread while the decoder works, so
 * the first writes into it do not each stop for a page fault (a 24 MP float RGBA image is
 * 94 000 pages). MADV_POPULATE_WRITE leaves contents alone, so it may race the writers. */
typedef struct {
  GThread *thread;
  void *addr;
  size_t len;
} prefault;

static gpointer prefault_run(gpointer data)
{
#ifdef MADV_POPULATE_WRITE
  prefault *p = data;
  (void)madvise(p->addr, p->len, MADV_POPULATE_WRITE);
#else
  (void)data;
#endif
  return NULL;
}

static void prefault_start(prefault *p, void *buf, size_t bytes)
{
  uintptr_t page = 4096, start = ((uintptr_t)buf + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)buf + bytes) & ~(page - 1);
  p->thread = NULL;
  if (bytes < ((size_t)16 << 20) || end <= start)
    return;
  p->addr = (void *)start;
  p->len = (size_t)(end - start);
  p->thread = g_thread_try_new("i2i-prefault", prefault_run, p, NULL);
}

static void prefault_join(prefault *p)
{
  if (p->thread)
    g_thread_join(p->thread);
  p->thread = NULL;
}

void i2i_img_sanitize(float *v, size_t n, size_t *n_nonfinite, size_t *n_clamped)
{
  size_t bad = 0, clamped = 0;
  for (size_t i = 0; i < n; i++) {
    float x = v[i];
    if (!isfinite(x)) {
      v[i] = 0.0f;
      bad++;
    } else if (x < 0.0f) {
      v[i] = 0.0f;
      clamped++;
    } else if (x > 1.0f) {
      v[i] = 1.0f;
      clamped++;
    }
  }
  if (n_nonfinite)
    *n_nonfinite += bad;
  if (n_clamped)
    *n_clamped += clamped;
}

static void sanitize_info(i2i_img *out, size_t n_px)
{
  i2i_img_sanitize(out->pixels, n_px * 4, &out->info.n_nonfinite, &out->info.n_clamped);
  if (out->info.n_nonfinite)
    out->info.warnings |= I2I_IMG_WARN_NONFINITE;
  if (out->info.n_clamped)
    out->info.warnings |= I2I_IMG_WARN_CLAMPED;
}

/* ------------------------------------------------------------------------------------ */
/* GEGL start-up and the capture of its messages */

static GMutex gegl_lock;      /* serialises GEGL graphs and the process-wide log handlers */
static gboolean gegl_started;
static gboolean gegl_failed;
static char gegl_fail_msg[256];

static const char *const gegl_ops[] = {"gegl:png-load", "gegl:png-save", "gegl:tiff-load",
                                       "gegl:tiff-save", "gegl:buffer-sink",
                                       "gegl:buffer-source"};

/* The first of gegl_ops GEGL lacks, or NULL. */
static const char *gegl_missing_op(void)
{
  for (size_t i = 0; i < G_N_ELEMENTS(gegl_ops); i++)
    if (!gegl_has_operation(gegl_ops[i]))
      return gegl_ops[i];
  return NULL;
}

/* gegl_init loads every module of GEGL's folder, about 80 with their libraries (libavcodec,
 * poppler, libraw, librsvg, ...): 0.2 s of a short translation. Image I/O needs the PNG and TIFF
 * loaders and savers and GEGL's own operations (gegl-*.so: gegl:buffer-sink and -source), so
 * unless GEGL_PATH is set GEGL starts from a private folder of links to those alone. GEGL
 * unloads a module between uses and reopens it by its path; each is held open here under that
 * path, so that GLib's module list answers the reopening, and the folder is removed at once
 * (nothing is left behind when the tool is interrupted). */
static bool lean_module(const char *name)
{
  static const char *const loaders[] = {"png-load.so", "png-save.so", "tiff-load.so",
                                        "tiff-save.so"};
  for (size_t i = 0; i < G_N_ELEMENTS(loaders); i++)
    if (!strcmp(name, loaders[i]))
      return true;
  return g_str_has_prefix(name, "gegl-") && g_str_has_suffix(name, ".so");
}

/* Starts GEGL from the private folder; returns false, with nothing left behind, when any step
 * fails (GEGL is then not started). */
static bool gegl_init_lean(void)
{
  if (g_getenv("GEGL_PATH"))
    return false;
  GDir *dir = g_dir_open(I2I_GEGL_MODULE_DIR, 0, NULL);
  if (!dir)
    return false;
  char *lean = g_build_filename(g_get_tmp_dir(), "i2i-gegl-XXXXXX", NULL);
  GPtrArray *links = g_ptr_array_new_with_free_func(g_free);
  GPtrArray *held = g_ptr_array_new();
  bool ok = g_mkdtemp(lean) != NULL, made = ok;
  const char *name;
  while (ok && (name = g_dir_read_name(dir))) {
    if (!lean_module(name))
      continue;
    char *target = g_build_filename(I2I_GEGL_MODULE_DIR, name, NULL);
    char *link = g_build_filename(lean, name, NULL);
    ok = symlink(target, link) == 0;
    g_free(target);
    if (!ok) {
      g_free(link);
      break;
    }
    g_ptr_array_add(links, link);
    GModule *m = g_module_open(link, G_MODULE_BIND_LAZY | G_MODULE_BIND_LOCAL);
    ok = m != NULL;
    if (ok)
      g_ptr_array_add(held, m);
  }
  g_dir_close(dir);
  ok = ok && links->len > 0;
  if (ok) {
    g_setenv("GEGL_PATH", lean, TRUE);
    gegl_init(NULL, NULL);
    g_unsetenv("GEGL_PATH");
  } else {
    for (guint i = 0; i < held->len; i++)
      g_module_close(g_ptr_array_index(held, i));
  }
  for (guint i = 0; i < links->len; i++)
    unlink(g_ptr_array_index(links, i));
  if (made)
    rmdir(lean);
  g_ptr_array_free(held, TRUE);
  g_ptr_array_free(links, TRUE);
  g_free(lean);
  return ok;
}

bool i2i_img_init(char *err, size_t errlen)
{
  bool ok;
  g_mutex_lock(&gegl_lock);
  if (!gegl_started && !gegl_failed) {
    /* a lean start that lacks an operation (GEGL packaged otherwise) loads the whole folder */
    if (!gegl_init_lean())
      gegl_init(NULL, NULL);
    else if (gegl_missing_op())
      gegl_load_module_directory(I2I_GEGL_MODULE_DIR);
    /* Keep tiles in memory: the default swaps them to ~/.cache past the 512 MB tile
     * cache, which a 50 MP float image exceeds. No folder (NULL) turns swapping off; a name
     * such as "RAM" would be taken as a folder and made in the working directory. GEGL_SWAP
     * in the environment still wins. */
    if (!g_getenv("GEGL_SWAP"))
      g_object_set(gegl_config(), "swap", NULL, NULL);
    gegl_started = TRUE;
    const char *missing = gegl_missing_op();
    if (missing) {
      snprintf(gegl_fail_msg, sizeof gegl_fail_msg,
               "GEGL has no operation %s (is libgegl-0.4 installed completely?)", missing);
      gegl_failed = TRUE;
    }
  }
  ok = !gegl_failed;
  g_mutex_unlock(&gegl_lock);
  if (!ok)
    return fail(err, errlen, "%s", gegl_fail_msg);
  return true;
}

void i2i_img_shutdown(void)
{
  g_mutex_lock(&gegl_lock);
  if (gegl_started)
    gegl_exit();
  gegl_started = FALSE;
  gegl_failed = TRUE;
  snprintf(gegl_fail_msg, sizeof gegl_fail_msg, "image I/O used after i2i_img_shutdown()");
  g_mutex_unlock(&gegl_lock);
}

typedef struct {
  GString *first;  /* the first failure message, for the error text */
  int n_fatal;
  GLogFunc old_log;      /* restored with NULL data: GLib does not return the old data */
  GPrintFunc old_printerr;
} capture;

static capture *active_capture; /* guarded by gegl_lock */

/* Messages that only say a colour profile was not understood: we ignore profiles anyway. */
static gboolean benign_message(const gchar *msg)
{
  return msg && (strstr(msg, "babl space from icc") || strstr(msg, "space from icc"));
}

static void capture_record(const gchar *msg)
{
  capture *c = active_capture;
  if (!c || benign_message(msg))
    return;
  c->n_fatal++;
  if (c->first->len == 0 && msg) {
    g_string_append(c->first, msg);
    while (c->first->len && (c->first->str[c->first->len - 1] == '\n' ||
                             c->first->str[c->first->len - 1] == ' '))
      g_string_truncate(c->first, c->first->len - 1);
  }
}

static void capture_log(const gchar *domain, GLogLevelFlags level, const gchar *msg,
                        gpointer data)
{
  (void)domain;
  (void)data;
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
    capture_record(msg);
}

static void capture_printerr(const gchar *msg)
{
  capture_record(msg);
}

/* Must hold gegl_lock. */
static void capture_begin(capture *c)
{
  c->first = g_string_new(NULL);
  c->n_fatal = 0;
  active_capture = c;
  c->old_log = g_log_set_default_handler(capture_log, NULL);
  c->old_printerr = g_set_printerr_handler(capture_printerr);
}

static void capture_end(capture *c)
{
  g_log_set_default_handler(c->old_log, NULL);
  g_set_printerr_handler(c->old_printerr);
  active_capture = NULL;
}

static void capture_free(capture *c)
{
  if (c->first)
    g_string_free(c->first, TRUE);
  c->first = NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Names and sniffing */

const char *i2i_img_type_name(i2i_img_type type)
{
  switch (type) {
  case I2I_IMG_PNG: return "PNG";
  case I2I_IMG_JPEG: return "JPEG";
  case I2I_IMG_TIFF: return "TIFF";
  case I2I_IMG_WEBP: return "WebP";
  default: return "unknown";
  }
}

bool i2i_img_type_uses_gegl(i2i_img_type type)
{
  return type == I2I_IMG_PNG || type == I2I_IMG_TIFF;
}

i2i_img_type i2i_img_type_from_name(const char *path)
{
  static const struct { const char *ext; i2i_img_type type; } map[] = {
    {"png", I2I_IMG_PNG},   {"jpg", I2I_IMG_JPEG},  {"jpeg", I2I_IMG_JPEG},
    {"jpe", I2I_IMG_JPEG},  {"tif", I2I_IMG_TIFF},  {"tiff", I2I_IMG_TIFF},
    {"webp", I2I_IMG_WEBP},
  };
  const char *slash, *dot;
  if (!path)
    return I2I_IMG_UNKNOWN;
  slash = strrchr(path, '/');
  dot = strrchr(slash ? slash + 1 : path, '.');
  if (!dot || dot[1] == '\0')
    return I2I_IMG_UNKNOWN;
  for (size_t i = 0; i < G_N_ELEMENTS(map); i++)
    if (g_ascii_strcasecmp(dot + 1, map[i].ext) == 0)
      return map[i].type;
  return I2I_IMG_UNKNOWN;
}

bool i2i_img_path_is_supported(const char *path)
{
  struct stat st;
  if (i2i_img_type_from_name(path) == I2I_IMG_UNKNOWN)
    return false;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static i2i_img_type sniff_bytes(const unsigned char *b, size_t n)
{
  static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n >= 8 && memcmp(b, png_sig, 8) == 0)
    return I2I_IMG_PNG;
  if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
    return I2I_IMG_JPEG;
  if (n >= 4 && ((b[0] == 'I' && b[1] == 'I' && (b[2] == 42 || b[2] == 43) && b[3] == 0) ||
                 (b[0] == 'M' && b[1] == 'M' && b[2] == 0 && (b[3] == 42 || b[3] == 43))))
    return I2I_IMG_TIFF;
  if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
    return I2I_IMG_WEBP;
  return I2I_IMG_UNKNOWN;
}

/* Opens `path` for reading with a readable message for each way it can fail. */
static int open_input(const char *path, struct stat *st, char *err, size_t errlen)
{
  int fd;
  if (!path || !*path) {
    fail(err, errlen, "no input file name given");
    return -1;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT)
      fail(err, errlen, "'%s': no such file", path);
    else if (e == EACCES)
      fail(err, errlen, "'%s': permission denied", path);
    else
      fail(err, errlen, "'%s': cannot open (%s)", path, strerror(e));
    return -1;
  }
  if (fstat(fd, st) != 0) {
    fail(err, errlen, "'%s': cannot stat (%s)", path, strerror(errno));
    close(fd);
    return -1;
  }
  if (S_ISDIR(st->st_mode)) {
    fail(err, errlen, "'%s' is a folder, not an image", path);
    close(fd);
    return -1;
  }
  if (!S_ISREG(st->st_mode)) {
    fail(err, errlen, "'%s' is not a regular file", path);
    close(fd);
    return -1;
  }
  if (st->st_size == 0) {
    fail(err, errlen, "'%s' is empty (0 bytes), not an image", path);
    close(fd);
    return -1;
  }
  return fd;
}

static bool sniff_fd(int fd, const char *path, i2i_img_type *type, char *err, size_t errlen)
{
  unsigned char b[16];
  ssize_t n;
  do {
    n = pread(fd, b, sizeof b, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0)
    return fail(err, errlen, "'%s': read error (%s)", path, strerror(errno));
  *type = sniff_bytes(b, (size_t)n);
  if (*type == I2I_IMG_UNKNOWN)
    return fail(err, errlen, "'%s' is not a PNG, JPEG, TIFF or WebP image", path);
  return true;
}

bool i2i_img_sniff(const char *path, i2i_img_type *type, char *err, size_t errlen)
{
  struct stat st;
  bool ok;
  int fd = open_input(path, &st, err, errlen);
  *type = I2I_IMG_UNKNOWN;
  if (fd < 0)
    return false;
  ok = sniff_fd(fd, path, type, err, errlen);
  close(fd);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Loading through GEGL: PNG, TIFF */

/* Walks the PNG's chunk list (lengths only, no data) up to IEND. GEGL's PNG loader must not
 * see a file that ends early: its read callback ignores end-of-file, so libpng re-reads
 * stale bytes and can loop forever on a cut file. */
static bool png_structure_ok(int fd, off_t size, const char *path, char *err, size_t errlen)
{
  uint64_t pos = 8;
  bool first = true;
  for (;;) {
    unsigned char hdr[8];
    uint32_t len;
    if (pos + 8 > (uint64_t)size)
      return fail(err, errlen, "cannot decode '%s': truncated PNG file (ends at byte %llu "
                  "before its IEND chunk)", path, (unsigned long long)size);
    if (pread(fd, hdr, 8, (off_t)pos) != 8)
      return fail(err, errlen, "'%s': read error (%s)", path, strerror(errno));
    len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    for (int i = 4; i < 8; i++)
      if (!g_ascii_isalpha(hdr[i]))
        return fail(err, errlen, "cannot decode '%s': corrupt PNG file (bad chunk type at "
                    "byte %llu)", path, (unsigned long long)pos);
    if (len > 0x7FFFFFFFu)
      return fail(err, errlen, "cannot decode '%s': corrupt PNG file (chunk length %u)", path,
                  len);
    if (first && memcmp(hdr + 4, "IHDR", 4) != 0)
      return fail(err, errlen, "cannot decode '%s': corrupt PNG file (no IHDR chunk first)",
                  path);
    first = false;
    if (pos + 12 + len > (uint64_t)size)
      return fail(err, errlen, "cannot decode '%s': truncated PNG file (chunk '%.4s' at byte "
                  "%llu runs past the end)", path, (const char *)hdr + 4,
                  (unsigned long long)pos);
    if (memcmp(hdr + 4, "IEND", 4) == 0)
      return true;
    pos += 12 + (uint64_t)len;
  }
}

/* Parses a babl encoding such as "R'G'B'A u16" into the info's depth, alpha and gray. */
static bool info_from_encoding(const char *enc, i2i_img_info *info)
{
  const char *type = strrchr(enc, ' ');
  if (!type)
    return false;
  type++;
  info->is_gray = enc[0] == 'Y';
  info->is_float = false;
  if (strcmp(type, "u8") == 0)
    info->bits = 8;
  else if (strcmp(type, "u16") == 0)
    info->bits = 16;
  else if (strcmp(type, "u32") == 0)
    info->bits = 32;
  else if (strcmp(type, "half") == 0)
    info->bits = 16, info->is_float = true;
  else if (strcmp(type, "float") == 0)
    info->bits = 32, info->is_float = true;
  else if (strcmp(type, "double") == 0)
    info->bits = 64, info->is_float = true;
  else
    return false;
  return true;
}

/* Widens n_px gray+alpha float pairs at the start of `p` into RGBA, in place, back to
 * front so no pair is overwritten before it is read. */
static void expand_ya_to_rgba(float *p, size_t n_px)
{
  for (size_t i = n_px; i-- > 0;) {
    float y = p[2 * i], a = p[2 * i + 1];
    p[4 * i + 0] = y;
    p[4 * i + 1] = y;
    p[4 * i + 2] = y;
    p[4 * i + 3] = a;
  }
}

/* Converts bands of rows from the decoded buffer into the caller's float RGBA on GEGL's
 * worker threads; that also spreads the page faults of the fresh output buffer. */
typedef struct {
  GeglBuffer *buf;
  const Babl *fmt;
  float *dst;
  int width;
  bool gray;
  /* perceptual 8/16-bit files: the samples are read as stored (`fmt` is the buffer's own
   * format, a copy) and scaled here as v / 255 or v / 65535, because babl picks its u8/u16 ->
   * float path by timing and some paths are a rounding step off (results would vary between
   * runs) */
  int int_bytes;        /* 1 or 2; 0: babl converts to float */
  int int_channels;     /* 1..4: Y', Y'A, R'G'B', R'G'B'A */
} get_job;

static void get_rows(gsize y0, gsize n, gpointer data)
{
  get_job *j = data;
  GeglRectangle r = {0, (gint)y0, j->width, (gint)n};
  float *d = j->dst + y0 * (size_t)j->width * 4;
  size_t n_px = n * (size_t)j->width;
  if (j->int_bytes) {
    /* the raw samples fit in the band's own output floats (at most 8 bytes a pixel of 16) */
    unsigned char *raw = (unsigned char *)d + n_px * 16 - n_px * (size_t)(j->int_channels * j->int_bytes);
    gegl_buffer_get(j->buf, &r, 1.0, j->fmt, raw, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
    int c = j->int_channels;
    bool alpha = c == 2 || c == 4, gray = c <= 2;
    for (size_t i = 0; i < n_px; i++) {
      float v[4] = {0, 0, 0, 0};
      for (int k = 0; k < c; k++) {
        size_t at = (i * (size_t)c + (size_t)k) * (size_t)j->int_bytes;
        if (j->int_bytes == 1) {
          v[k] = raw[at] / 255.0f;
        } else {
          uint16_t u;
          memcpy(&u, raw + at, 2);
          v[k] = u / 65535.0f;
        }
      }
      float *o = d + i * 4;
      o[0] = v[0];
      o[1] = gray ? v[0] : v[1];
      o[2] = gray ? v[0] : v[2];
      o[3] = alpha ? v[c - 1] : 1.0f;
    }
    return;
  }
  gegl_buffer_get(j->buf, &r, 1.0, j->fmt, d, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  if (j->gray)
    expand_ya_to_rgba(d, n_px);
}

/* Loads a PNG (already checked by png_structure_ok) or TIFF through GEGL. */
static bool load_gegl(const char *path, i2i_img_type type, i2i_img *out, char *err,
                      size_t errlen)
{
  const char *op = type == I2I_IMG_PNG ? "gegl:png-load" : "gegl:tiff-load";
  const char *tname = i2i_img_type_name(type);
  GeglBuffer *buf = NULL;
  GeglNode *graph, *load, *sink;
  GeglRectangle bb;
  const GeglRectangle *ext;
  const Babl *native, *want;
  const char *enc;
  capture cap;
  prefault pf = {0};
  size_t n_px = 0;
  bool ok = false;

  g_mutex_lock(&gegl_lock);
  capture_begin(&cap);
  graph = gegl_node_new();
  load = gegl_node_new_child(graph, "operation", op, "path", path, NULL);
  sink = gegl_node_new_child(graph, "operation", "gegl:buffer-sink", "buffer", &buf, NULL);
  gegl_node_link(load, sink);

  bb = gegl_node_get_bounding_box(load);
  if (bb.width <= 0 || bb.height <= 0) {
    fail(err, errlen, "cannot decode '%s': invalid or truncated %s file%s%s%s", path, tname,
         cap.first->len ? " (" : "", cap.first->str, cap.first->len ? ")" : "");
    goto done;
  }
  if (!check_dims("cannot decode", path, bb.width, bb.height, &n_px, err, errlen))
    goto done;
  out->pixels = alloc_rgba(path, bb.width, bb.height, n_px, err, errlen);
  if (!out->pixels)
    goto done;
  prefault_start(&pf, out->pixels, n_px * 4 * sizeof(float));

  gegl_node_process(sink);

  if (cap.n_fatal > 0 || !buf) {
    fail(err, errlen, "cannot decode '%s': truncated or corrupt %s file%s%s%s", path, tname,
         cap.first->len ? " (" : "", cap.first->str, cap.first->len ? ")" : "");
    goto done;
  }
  ext = gegl_buffer_get_extent(buf);
  if (ext->width != bb.width || ext->height != bb.height) {
    fail(err, errlen, "cannot decode '%s': the %s decoder returned %d x %d pixels for a "
         "%d x %d image", path, tname, ext->width, ext->height, bb.width, bb.height);
    goto done;
  }

  native = gegl_buffer_get_format(buf);
  enc = babl_format_get_encoding(native);
  out->info.width = bb.width;
  out->info.height = bb.height;
  out->info.type = type;
  out->info.lossless = true;
  out->info.has_alpha = babl_format_has_alpha(native) != 0;
  if (!info_from_encoding(enc, &out->info)) {
    fail(err, errlen, "cannot decode '%s': unsupported %s sample format '%s'", path, tname,
         enc);
    goto done;
  }

  /* Ask for the file's own space so babl converts only the sample type (no colour
   * conversion); CMYK has no R'G'B' in its own space, so that goes to sRGB. */
  if (enc[0] == 'C' || enc[0] == 'c')
    want = babl_format(out->info.is_gray ? "Y'A float" : "R'G'B'A float");
  else
    want = babl_format_with_space(out->info.is_gray ? "Y'A float" : "R'G'B'A float", native);
  {
    get_job job = {buf, want, out->pixels, bb.width, out->info.is_gray, 0, 0};
    static const char *const models[4] = {"Y'", "Y'A", "R'G'B'", "R'G'B'A"};
    int nc = babl_format_get_n_components(native);
    if (!out->info.is_float && (out->info.bits == 8 || out->info.bits == 16) && nc >= 1 && nc <= 4) {
      char name[32];
      snprintf(name, sizeof name, "%s u%d", models[nc - 1], out->info.bits);
      if (!strcmp(enc, name)) {
        job.fmt = native;
        job.int_bytes = out->info.bits / 8;
        job.int_channels = nc;
      }
    }
    gegl_parallel_distribute_range((gsize)bb.height, 16.0, get_rows, &job);
  }
  if (out->info.is_float)
    sanitize_info(out, n_px);
  ok = true;

done:
  prefault_join(&pf);
  if (buf)
    g_object_unref(buf);
  g_object_unref(graph);
  capture_end(&cap);
  capture_free(&cap);
  g_mutex_unlock(&gegl_lock);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Loading JPEG with libjpeg */

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char fatal_msg[JMSG_LENGTH_MAX];
  bool truncated;          /* a warning that means lost image data */
  int n_minor;             /* other corrupt-data warnings */
  struct jpeg_progress_mgr progress;
} jpeg_guard;

static void jpeg_guard_exit(j_common_ptr cinfo)
{
  jpeg_guard *g = (jpeg_guard *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, g->fatal_msg);
  longjmp(g->jump, 1);
}

static void jpeg_guard_emit(j_common_ptr cinfo, int level)
{
  jpeg_guard *g = (jpeg_guard *)cinfo->err;
  if (level >= 0)
    return;
  cinfo->err->num_warnings++;
  switch (cinfo->err->msg_code) {
  case JWRN_JPEG_EOF:
  case JWRN_HIT_MARKER:
  case JWRN_HUFF_BAD_CODE:
    if (!g->truncated)
      (*cinfo->err->format_message)(cinfo, g->fatal_msg);
    g->truncated = true;
    break;
  default:
    g->n_minor++;
    break;
  }
}

static void jpeg_guard_output(j_common_ptr cinfo)
{
  (void)cinfo;
}

/* Bounds the work a hostile progressive file can ask for. */
static void jpeg_guard_progress(j_common_ptr cinfo)
{
  if (cinfo->is_decompressor) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
      jpeg_guard *g = (jpeg_guard *)cinfo->err;
      snprintf(g->fatal_msg, sizeof g->fatal_msg, "more than %d scans", JPEG_MAX_SCANS);
      longjmp(g->jump, 1);
    }
  }
}

static void jpeg_guard_setup(jpeg_guard *g, j_common_ptr cinfo)
{
  memset(g, 0, sizeof *g);
  cinfo->err = jpeg_std_error(&g->pub);
  g->pub.error_exit = jpeg_guard_exit;
  g->pub.emit_message = jpeg_guard_emit;
  g->pub.output_message = jpeg_guard_output;
}

/* State that must survive a longjmp lives in this struct, not in locals. */
typedef struct {
  struct jpeg_decompress_struct cinfo;
  jpeg_guard guard;
  FILE *fp;
  unsigned char *row;
  prefault pf;
} jpeg_load_state;

static bool load_jpeg(const char *path, int fd, i2i_img *out, char *err, size_t errlen)
{
  jpeg_load_state *s = g_try_new0(jpeg_load_state, 1);
  float lut[256];
  size_t n_px = 0;
  int w, h, comps;
  volatile bool ok = false;

  if (!s) {
    close(fd);
    return fail(err, errlen, "out of memory");
  }
  s->fp = fdopen(fd, "rb");
  if (!s->fp) {
    close(fd);
    g_free(s);
    return fail(err, errlen, "'%s': cannot open (%s)", path, strerror(errno));
  }
  for (int i = 0; i < 256; i++)
    lut[i] = (float)i / 255.0f;

  jpeg_guard_setup(&s->guard, (j_common_ptr)&s->cinfo);
  if (setjmp(s->guard.jump)) {
    fail(err, errlen, "cannot decode '%s': corrupt or unsupported JPEG (%s)", path,
         s->guard.fatal_msg);
    goto done;
  }
  jpeg_create_decompress(&s->cinfo);
  s->guard.progress.progress_monitor = jpeg_guard_progress;
  s->cinfo.progress = &s->guard.progress;
  jpeg_stdio_src(&s->cinfo, s->fp);
  jpeg_read_header(&s->cinfo, TRUE);

  w = (int)s->cinfo.image_width;
  h = (int)s->cinfo.image_height;
  if (!check_dims("cannot decode", path, w, h, &n_px, err, errlen))
    goto done;
  comps = s->cinfo.num_components;
  if (comps == 1) {
    s->cinfo.out_color_space = JCS_GRAYSCALE;
  } else if (comps == 3) {
    s->cinfo.out_color_space = JCS_RGB;
  } else if (comps == 4) {
    s->cinfo.out_color_space = JCS_CMYK;
  } else {
    fail(err, errlen, "cannot decode '%s': JPEG with %d colour components is not supported",
         path, comps);
    goto done;
  }
  s->cinfo.dct_method = JDCT_ISLOW;
  out->pixels = alloc_rgba(path, w, h, n_px, err, errlen);
  if (!out->pixels)
    goto done;
  prefault_start(&s->pf, out->pixels, n_px * 4 * sizeof(float));

  jpeg_start_decompress(&s->cinfo);
  if ((int)s->cinfo.output_width != w || (int)s->cinfo.output_height != h ||
      s->cinfo.output_components != (comps == 1 ? 1 : comps)) {
    fail(err, errlen, "cannot decode '%s': unexpected JPEG output layout", path);
    goto done;
  }
  s->row = g_try_malloc((size_t)w * (size_t)comps);
  if (!s->row) {
    fail(err, errlen, "out of memory");
    goto done;
  }
  while (s->cinfo.output_scanline < s->cinfo.output_height) {
    size_t y = s->cinfo.output_scanline;
    JSAMPROW rows[1] = {s->row};
    float *dst = out->pixels + y * (size_t)w * 4;
    const unsigned char *src = s->row;
    if (jpeg_read_scanlines(&s->cinfo, rows, 1) != 1) {
      fail(err, errlen, "cannot decode '%s': truncated JPEG", path);
      goto done;
    }
    if (comps == 1) {
      for (int x = 0; x < w; x++, dst += 4) {
        float v = lut[src[x]];
        dst[0] = v, dst[1] = v, dst[2] = v, dst[3] = 1.0f;
      }
    } else if (comps == 3) {
      for (int x = 0; x < w; x++, dst += 4, src += 3) {
        dst[0] = lut[src[0]], dst[1] = lut[src[1]], dst[2] = lut[src[2]], dst[3] = 1.0f;
      }
    } else {
      /* Adobe writes inverted CMYK (255 = no ink); plain CMYK is inverted here. As PIL:
       * R = (1 - C)(1 - K). */
      bool inverted = s->cinfo.saw_Adobe_marker;
      for (int x = 0; x < w; x++, dst += 4, src += 4) {
        unsigned c = src[0], m = src[1], yv = src[2], k = src[3];
        if (!inverted)
          c = 255 - c, m = 255 - m, yv = 255 - yv, k = 255 - k;
        dst[0] = (float)(c * k) / 65025.0f;
        dst[1] = (float)(m * k) / 65025.0f;
        dst[2] = (float)(yv * k) / 65025.0f;
        dst[3] = 1.0f;
      }
    }
    if (s->guard.truncated)
      break;
  }
  if (s->guard.truncated) {
    fail(err, errlen, "cannot decode '%s': truncated or corrupt JPEG (%s)", path,
         s->guard.fatal_msg);
    goto done;
  }
  jpeg_finish_decompress(&s->cinfo);
  if (s->guard.truncated) {
    fail(err, errlen, "cannot decode '%s': truncated or corrupt JPEG (%s)", path,
         s->guard.fatal_msg);
    goto done;
  }
  out->info.width = w;
  out->info.height = h;
  out->info.type = I2I_IMG_JPEG;
  out->info.bits = 8;
  out->info.is_gray = comps == 1;
  if (s->guard.n_minor)
    out->info.warnings |= I2I_IMG_WARN_DATA;
  ok = true;

done:
  prefault_join(&s->pf);
  jpeg_destroy_decompress(&s->cinfo);
  g_free(s->row);
  fclose(s->fp);
  g_free(s);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Loading WebP with libwebp */

/* Reads a whole regular file of st_size bytes. */
static unsigned char *read_all(int fd, const char *path, off_t size, char *err, size_t errlen)
{
  unsigned char *data;
  size_t got = 0, n;
  if (size < 0 || (uint64_t)size > (uint64_t)SIZE_MAX / 2) {
    fail(err, errlen, "'%s' is too large", path);
    return NULL;
  }
  n = (size_t)size;
  data = g_try_malloc(n ? n : 1);
  if (!data) {
    fail(err, errlen, "out of memory reading '%s' (%zu bytes)", path, n);
    return NULL;
  }
  while (got < n) {
    ssize_t r = pread(fd, data + got, n - got, (off_t)got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      fail(err, errlen, "'%s': read error (%s)", path, strerror(errno));
      g_free(data);
      return NULL;
    }
    if (r == 0)
      break;
    got += (size_t)r;
  }
  if (got != n) {
    fail(err, errlen, "'%s': file shrank while being read", path);
    g_free(data);
    return NULL;
  }
  return data;
}

static const char *webp_status_text(VP8StatusCode s)
{
  switch (s) {
  case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
  case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
  case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
  case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
  case VP8_STATUS_SUSPENDED: return "suspended";
  case VP8_STATUS_USER_ABORT: return "aborted";
  case VP8_STATUS_NOT_ENOUGH_DATA: return "truncated file";
  default: return "error";
  }
}

static bool load_webp(const char *path, int fd, off_t size, i2i_img *out, char *err,
                      size_t errlen)
{
  WebPBitstreamFeatures feat;
  WebPDecoderConfig cfg;
  VP8StatusCode st;
  unsigned char *data;
  uint8_t *rgba8;
  size_t n_px = 0;
  float lut[256];
  prefault pf = {0};
  bool ok = false;

  data = read_all(fd, path, size, err, errlen);
  close(fd);
  if (!data)
    return false;
  st = WebPGetFeatures(data, (size_t)size, &feat);
  if (st != VP8_STATUS_OK) {
    fail(err, errlen, "cannot decode '%s': invalid WebP (%s)", path, webp_status_text(st));
    goto done;
  }
  if (feat.has_animation) {
    fail(err, errlen, "cannot decode '%s': animated WebP is not supported", path);
    goto done;
  }
  if (!check_dims("cannot decode", path, feat.width, feat.height, &n_px, err, errlen))
    goto done;
  out->pixels = alloc_rgba(path, feat.width, feat.height, n_px, err, errlen);
  if (!out->pixels)
    goto done;
  prefault_start(&pf, out->pixels, n_px * 4 * sizeof(float));

  /* Decode 8-bit RGBA into the last quarter of the float buffer, then widen front to back:
   * float pixel i ends at byte 16(i+1) <= 12n + 4(i+1), where the unread bytes start. */
  rgba8 = (uint8_t *)out->pixels + n_px * 12;
  if (!WebPInitDecoderConfig(&cfg)) {
    fail(err, errlen, "cannot decode '%s': libwebp version mismatch", path);
    goto done;
  }
  cfg.output.colorspace = MODE_RGBA;
  cfg.output.is_external_memory = 1;
  cfg.output.u.RGBA.rgba = rgba8;
  cfg.output.u.RGBA.stride = feat.width * 4;
  cfg.output.u.RGBA.size = n_px * 4;
  st = WebPDecode(data, (size_t)size, &cfg);
  WebPFreeDecBuffer(&cfg.output);
  if (st != VP8_STATUS_OK) {
    fail(err, errlen, "cannot decode '%s': %s WebP (%s)", path,
         st == VP8_STATUS_NOT_ENOUGH_DATA ? "truncated" : "corrupt", webp_status_text(st));
    goto done;
  }
  for (int i = 0; i < 256; i++)
    lut[i] = (float)i / 255.0f;
  for (size_t i = 0; i < n_px; i++) {
    const uint8_t *s = rgba8 + 4 * i;
    uint8_t r = s[0], g = s[1], b = s[2], a = s[3];
    float *d = out->pixels + 4 * i;
    d[0] = lut[r], d[1] = lut[g], d[2] = lut[b], d[3] = lut[a];
  }
  out->info.width = feat.width;
  out->info.height = feat.height;
  out->info.type = I2I_IMG_WEBP;
  out->info.bits = 8;
  out->info.has_alpha = feat.has_alpha != 0;
  out->info.lossless = feat.format == 2;
  ok = true;

done:
  prefault_join(&pf);
  g_free(data);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Load entry points */

bool i2i_img_load(const char *path, i2i_img *out, char *err, size_t errlen)
{
  struct stat st;
  i2i_img_type type;
  bool ok;
  int fd;

  if (err && errlen)
    err[0] = '\0';
  if (!out)
    return fail(err, errlen, "internal error: no output image");
  memset(out, 0, sizeof *out);
  fd = open_input(path, &st, err, errlen);
  if (fd < 0)
    return false;
  if (!sniff_fd(fd, path, &type, err, errlen)) {
    close(fd);
    return false;
  }
  switch (type) {
  case I2I_IMG_JPEG:
    ok = load_jpeg(path, fd, out, err, errlen);
    break;
  case I2I_IMG_WEBP:
    ok = load_webp(path, fd, st.st_size, out, err, errlen);
    break;
  default:
    ok = type != I2I_IMG_PNG || png_structure_ok(fd, st.st_size, path, err, errlen);
    close(fd);
    ok = ok && i2i_img_init(err, errlen) && load_gegl(path, type, out, err, errlen);
    break;
  }
  if (!ok) {
    g_free(out->pixels);
    memset(out, 0, sizeof *out);
  }
  return ok;
}

void i2i_img_free(i2i_img *img)
{
  if (!img)
    return;
  g_free(img->pixels);
  memset(img, 0, sizeof *img);
}

/* ------------------------------------------------------------------------------------ */
/* Save options */

void i2i_img_save_opts_default(i2i_img_save_opts *o)
{
  memset(o, 0, sizeof *o);
  o->type = I2I_IMG_UNKNOWN;
  o->bits = 8;
  o->quality = DEFAULT_QUALITY;
  o->png_compression = DEFAULT_PNG_COMPRESSION;
}

void i2i_img_save_opts_from_info(i2i_img_save_opts *o, const i2i_img_info *src,
                                 i2i_img_type out_type)
{
  i2i_img_save_opts_default(o);
  if (!src)
    return;
  if (out_type == I2I_IMG_UNKNOWN)
    out_type = src->type;
  o->type = out_type;
  o->gray = src->is_gray;
  o->alpha = src->has_alpha;
  o->lossless = src->lossless;
  switch (out_type) {
  case I2I_IMG_PNG:
    o->bits = src->bits > 8 ? 16 : 8;
    break;
  case I2I_IMG_TIFF:
    if (!src->is_float && (src->bits == 8 || src->bits == 16)) {
      o->bits = src->bits;
    } else {
      o->bits = 32;
      o->is_float = true;
    }
    break;
  default:
    o->bits = 8;
    break;
  }
}

/* ------------------------------------------------------------------------------------ */
/* Packing float RGBA into the file's sample layout */

typedef enum { SAMPLE_U8, SAMPLE_U16, SAMPLE_F32 } sample_kind;

static inline float luma(const float *p)
{
  if (p[0] == p[1] && p[1] == p[2])
    return p[0];
  return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
}

static inline uint8_t to_u8(float v)
{
  if (!(v > 0.0f))
    return 0;
  if (v >= 1.0f)
    return 255;
  return (uint8_t)(v * 255.0f + 0.5f);
}

static inline uint16_t to_u16(float v)
{
  if (!(v > 0.0f))
    return 0;
  if (v >= 1.0f)
    return 65535;
  return (uint16_t)(v * 65535.0f + 0.5f);
}

static inline float to_f32(float v)
{
  return isfinite(v) ? v : 0.0f;
}

/* Writes n_px pixels of `channels` samples (1 Y', 2 Y'A, 3 R'G'B', 4 R'G'B'A) of `kind`. */
static void pack(const float *src, size_t n_px, int channels, sample_kind kind, void *dst)
{
#define PACK_LOOP(T, CONV)                                                                   \
  do {                                                                                       \
    T *d = dst;                                                                              \
    for (size_t i = 0; i < n_px; i++, src += 4) {                                            \
      switch (channels) {                                                                    \
      case 1: *d++ = CONV(luma(src)); break;                                                 \
      case 2: *d++ = CONV(luma(src)); *d++ = CONV(src[3]); break;                            \
      case 3: *d++ = CONV(src[0]); *d++ = CONV(src[1]); *d++ = CONV(src[2]); break;          \
      default:                                                                               \
        *d++ = CONV(src[0]); *d++ = CONV(src[1]); *d++ = CONV(src[2]); *d++ = CONV(src[3]);  \
        break;                                                                               \
      }                                                                                      \
    }                                                                                        \
  } while (0)
  switch (kind) {
  case SAMPLE_U8: PACK_LOOP(uint8_t, to_u8); break;
  case SAMPLE_U16: PACK_LOOP(uint16_t, to_u16); break;
  default: PACK_LOOP(float, to_f32); break;
  }
#undef PACK_LOOP
}

/* Packs into a new buffer of n_px * channels samples; NULL with a message when short. */
static void *pack_new(const float *src, size_t n_px, int channels, sample_kind kind,
                      char *err, size_t errlen)
{
  size_t sample = kind == SAMPLE_U8 ? 1 : kind == SAMPLE_U16 ? 2 : 4, bytes;
  void *dst;
  if (!g_size_checked_mul(&bytes, n_px, (size_t)channels * sample)) {
    fail(err, errlen, "image too large");
    return NULL;
  }
  dst = g_try_malloc(bytes ? bytes : 1);
  if (!dst) {
    fail(err, errlen, "out of memory (%zu MB for the file's samples)", bytes >> 20);
    return NULL;
  }
  pack(src, n_px, channels, kind, dst);
  return dst;
}

/* ------------------------------------------------------------------------------------ */
/* Saving through GEGL: PNG, TIFF */

static bool file_tail_is_png_iend(const char *path)
{
  static const unsigned char iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
  unsigned char b[12];
  struct stat st;
  bool ok = false;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  if (fstat(fd, &st) == 0 && st.st_size >= 12 &&
      pread(fd, b, 12, st.st_size - 12) == 12 && memcmp(b, iend, 12) == 0)
    ok = true;
  close(fd);
  return ok;
}

static off_t file_size(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 ? st.st_size : -1;
}

static bool save_gegl(const char *dest, const char *tmp, i2i_img_type type, const float *px,
                      int w, int h, size_t n_px, const i2i_img_save_opts *o, char *err,
                      size_t errlen)
{
  static const char *const models[5] = {"", "Y'", "Y'A", "R'G'B'", "R'G'B'A"};
  int channels = (o->gray ? 1 : 3) + (o->alpha ? 1 : 0);
  sample_kind kind = o->is_float ? SAMPLE_F32 : o->bits == 16 ? SAMPLE_U16 : SAMPLE_U8;
  const char *tname = kind == SAMPLE_U8 ? "u8" : kind == SAMPLE_U16 ? "u16" : "float";
  char fmt_name[32];
  GeglRectangle ext = {0, 0, w, h};
  GeglBuffer *buf;
  GeglNode *graph, *src, *save;
  capture cap;
  void *packed;
  bool ok = true;

  packed = pack_new(px, n_px, channels, kind, err, errlen);
  if (!packed)
    return false;
  snprintf(fmt_name, sizeof fmt_name, "%s %s", models[channels], tname);

  g_mutex_lock(&gegl_lock);
  capture_begin(&cap);
  buf = gegl_buffer_linear_new_from_data(packed, babl_format(fmt_name), &ext, 0, NULL, NULL);
  graph = gegl_node_new();
  src = gegl_node_new_child(graph, "operation", "gegl:buffer-source", "buffer", buf, NULL);
  if (type == I2I_IMG_PNG)
    save = gegl_node_new_child(graph, "operation", "gegl:png-save", "path", tmp, "bitdepth",
                               kind == SAMPLE_U16 ? 16 : 8, "compression",
                               o->png_compression, NULL);
  else
    save = gegl_node_new_child(graph, "operation", "gegl:tiff-save", "path", tmp, "bitdepth",
                               kind == SAMPLE_U8 ? 8 : kind == SAMPLE_U16 ? 16 : 32, "fp",
                               kind == SAMPLE_F32 ? 1 : 0, NULL);
  gegl_node_link(src, save);
  gegl_node_process(save);
  g_object_unref(graph);
  g_object_unref(buf);
  capture_end(&cap);
  if (cap.n_fatal > 0) {
    fail(err, errlen, "cannot write '%s': the %s encoder failed (%s)", dest,
         i2i_img_type_name(type), cap.first->str);
    ok = false;
  }
  capture_free(&cap);
  g_mutex_unlock(&gegl_lock);
  g_free(packed);

  if (ok) {
    off_t sz = file_size(tmp);
    uint64_t raw = (uint64_t)n_px * (uint64_t)channels *
                   (kind == SAMPLE_U8 ? 1u : kind == SAMPLE_U16 ? 2u : 4u);
    if (sz <= 0 || (type == I2I_IMG_PNG && !file_tail_is_png_iend(tmp)) ||
        (type == I2I_IMG_TIFF && (uint64_t)sz < raw))
      ok = fail(err, errlen, "cannot write '%s': the %s encoder wrote an incomplete file "
                "(disk full?)", dest, i2i_img_type_name(type));
  }
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Saving JPEG with libjpeg */

typedef struct {
  struct jpeg_compress_struct cinfo;
  jpeg_guard guard;
  FILE *fp;
  unsigned char *row;
} jpeg_save_state;

static bool save_jpeg(const char *dest, i2i_atomic_file *af, const float *px, int w, int h,
                      const i2i_img_save_opts *o, char *err, size_t errlen)
{
  jpeg_save_state *s;
  int comps = o->gray ? 1 : 3;
  volatile bool ok = false;

  if (w > JPEG_MAX_SIDE || h > JPEG_MAX_SIDE)
    return fail(err, errlen, "cannot write '%s': JPEG is limited to %d pixels per side (image "
                "is %d x %d)", dest, JPEG_MAX_SIDE, w, h);
  s = g_try_new0(jpeg_save_state, 1);
  if (!s)
    return fail(err, errlen, "out of memory");
  s->fp = fdopen(af->fd, "wb");
  if (!s->fp) {
    g_free(s);
    return fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
  }
  af->fd = -1;
  jpeg_guard_setup(&s->guard, (j_common_ptr)&s->cinfo);
  if (setjmp(s->guard.jump)) {
    fail(err, errlen, "cannot write '%s': JPEG encoder failed (%s)", dest, s->guard.fatal_msg);
    goto done;
  }
  jpeg_create_compress(&s->cinfo);
  jpeg_stdio_dest(&s->cinfo, s->fp);
  s->cinfo.image_width = (JDIMENSION)w;
  s->cinfo.image_height = (JDIMENSION)h;
  s->cinfo.input_components = comps;
  s->cinfo.in_color_space = comps == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&s->cinfo);
  jpeg_set_quality(&s->cinfo, o->quality, TRUE);
  s->cinfo.optimize_coding = TRUE;
  s->cinfo.dct_method = JDCT_ISLOW;
  /* Full-resolution chroma (4:4:4), as GEGL and GIMP's high-quality default do. */
  for (int c = 0; c < s->cinfo.num_components; c++) {
    s->cinfo.comp_info[c].h_samp_factor = 1;
    s->cinfo.comp_info[c].v_samp_factor = 1;
  }
  s->row = g_try_malloc((size_t)w * (size_t)comps);
  if (!s->row) {
    fail(err, errlen, "out of memory");
    goto done;
  }
  jpeg_start_compress(&s->cinfo, TRUE);
  while (s->cinfo.next_scanline < s->cinfo.image_height) {
    JSAMPROW rows[1] = {s->row};
    pack(px + (size_t)s->cinfo.next_scanline * (size_t)w * 4, (size_t)w, comps, SAMPLE_U8,
         s->row);
    jpeg_write_scanlines(&s->cinfo, rows, 1);
  }
  jpeg_finish_compress(&s->cinfo);
  if (fflush(s->fp) != 0 || ferror(s->fp)) {
    fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
    goto done;
  }
  ok = true;

done:
  jpeg_destroy_compress(&s->cinfo);
  if (fclose(s->fp) != 0 && ok)
    ok = fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
  g_free(s->row);
  g_free(s);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Saving WebP with libwebp */

static int webp_write(const uint8_t *data, size_t size, const WebPPicture *pic)
{
  FILE *fp = pic->custom_ptr;
  return size == 0 || fwrite(data, 1, size, fp) == size;
}

static const char *webp_enc_error(WebPEncodingError e)
{
  switch (e) {
  case VP8_ENC_ERROR_OUT_OF_MEMORY:
  case VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY: return "out of memory";
  case VP8_ENC_ERROR_BAD_DIMENSION: return "bad dimensions";
  case VP8_ENC_ERROR_PARTITION0_OVERFLOW:
  case VP8_ENC_ERROR_PARTITION_OVERFLOW: return "partition overflow";
  case VP8_ENC_ERROR_BAD_WRITE: return "write error";
  case VP8_ENC_ERROR_FILE_TOO_BIG: return "file too big";
  default: return "encoder error";
  }
}

static bool save_webp(const char *dest, i2i_atomic_file *af, const float *px, int w, int h,
                      size_t n_px, const i2i_img_save_opts *o, char *err, size_t errlen)
{
  int channels = o->alpha ? 4 : 3;
  WebPConfig cfg;
  WebPPicture pic;
  uint8_t *packed;
  FILE *fp;
  bool ok = false;
  int imported;

  if (w > WEBP_MAX_SIDE || h > WEBP_MAX_SIDE)
    return fail(err, errlen, "cannot write '%s': WebP is limited to %d pixels per side (image "
                "is %d x %d)", dest, WEBP_MAX_SIDE, w, h);
  if (!WebPConfigInit(&cfg) || !WebPPictureInit(&pic))
    return fail(err, errlen, "cannot write '%s': libwebp version mismatch", dest);
  if (o->lossless) {
    cfg.lossless = 1;
    cfg.quality = 75;
    cfg.method = 4;
  } else if (!WebPConfigPreset(&cfg, WEBP_PRESET_PHOTO, (float)o->quality)) {
    return fail(err, errlen, "cannot write '%s': bad WebP quality %d", dest, o->quality);
  } else {
    cfg.use_sharp_yuv = 1;
    cfg.method = 4;
  }
  cfg.exact = 1;                 /* keep RGB under transparent pixels */
  cfg.alpha_quality = 100;       /* alpha losslessly, also in lossy files */
  if (!WebPValidateConfig(&cfg))
    return fail(err, errlen, "cannot write '%s': invalid WebP settings", dest);

  packed = pack_new(px, n_px, o->gray ? (o->alpha ? 2 : 1) : channels, SAMPLE_U8, err, errlen);
  if (!packed)
    return false;
  if (o->gray) {
    /* WebP has no gray mode: replicate the luma into R, G and B. */
    uint8_t *rgb = g_try_malloc(n_px * (size_t)channels);
    if (!rgb) {
      g_free(packed);
      return fail(err, errlen, "out of memory");
    }
    for (size_t i = 0; i < n_px; i++) {
      const uint8_t *s = packed + i * (size_t)(channels - 2); /* Y' or Y'A per pixel */
      uint8_t *d = rgb + i * (size_t)channels;
      d[0] = d[1] = d[2] = s[0];
      if (channels == 4)
        d[3] = s[1];
    }
    g_free(packed);
    packed = rgb;
  }
  pic.width = w;
  pic.height = h;
  pic.use_argb = 1; /* lossless needs ARGB; lossy converts it with sharp YUV in WebPEncode */
  imported = channels == 4 ? WebPPictureImportRGBA(&pic, packed, w * 4)
                           : WebPPictureImportRGB(&pic, packed, w * 3);
  g_free(packed);
  if (!imported) {
    WebPPictureFree(&pic);
    return fail(err, errlen, "cannot write '%s': out of memory in the WebP encoder", dest);
  }
  fp = fdopen(af->fd, "wb");
  if (!fp) {
    WebPPictureFree(&pic);
    return fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
  }
  af->fd = -1;
  pic.writer = webp_write;
  pic.custom_ptr = fp;
  if (!WebPEncode(&cfg, &pic))
    fail(err, errlen, "cannot write '%s': WebP encoder failed (%s)", dest,
         webp_enc_error(pic.error_code));
  else if (fflush(fp) != 0 || ferror(fp))
    fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
  else
    ok = true;
  WebPPictureFree(&pic);
  if (fclose(fp) != 0 && ok)
    ok = fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Save entry point */

static bool check_save_opts(const char *path, i2i_img_save_opts *o, char *err, size_t errlen)
{
  const char *tname;
  if (o->type == I2I_IMG_UNKNOWN)
    o->type = i2i_img_type_from_name(path);
  if (o->type == I2I_IMG_UNKNOWN)
    return fail(err, errlen, "cannot tell the image type from the name '%s': use .png, .jpg, "
                ".tif or .webp", path);
  if (o->type < I2I_IMG_PNG || o->type > I2I_IMG_WEBP)
    return fail(err, errlen, "cannot write '%s': invalid image type %d", path, (int)o->type);
  tname = i2i_img_type_name(o->type);
  if (o->bits == 0)
    o->bits = o->is_float ? 32 : 8;
  if (o->quality == 0)
    o->quality = DEFAULT_QUALITY;
  if (o->png_compression == 0)
    o->png_compression = DEFAULT_PNG_COMPRESSION;
  if (o->quality < 1 || o->quality > 100)
    return fail(err, errlen, "cannot write '%s': quality %d is outside 1..100", path,
                o->quality);
  if (o->png_compression < 1 || o->png_compression > 9)
    return fail(err, errlen, "cannot write '%s': PNG compression %d is outside 1..9", path,
                o->png_compression);
  switch (o->type) {
  case I2I_IMG_PNG:
    if (o->is_float || (o->bits != 8 && o->bits != 16))
      return fail(err, errlen, "cannot write '%s': PNG stores 8- or 16-bit integers, not %d-bit"
                  "%s", path, o->bits, o->is_float ? " float" : "");
    break;
  case I2I_IMG_TIFF:
    if (o->is_float ? o->bits != 32 : (o->bits != 8 && o->bits != 16))
      return fail(err, errlen, "cannot write '%s': TIFF is written as 8- or 16-bit integers or "
                  "32-bit float, not %d-bit%s", path, o->bits, o->is_float ? " float" : "");
    break;
  default:
    if (o->is_float || o->bits != 8)
      return fail(err, errlen, "cannot write '%s': %s stores 8-bit samples only, not %d-bit%s",
                  path, tname, o->bits, o->is_float ? " float" : "");
    break;
  }
  if (o->type == I2I_IMG_JPEG)
    o->alpha = false;
  return true;
}

bool i2i_img_save(const char *path, const float *pixels, int width, int height,
                  const i2i_img_save_opts *opts, char *err, size_t errlen)
{
  i2i_img_save_opts o;
  i2i_atomic_file af;
  size_t n_px = 0;
  bool ok;

  if (err && errlen)
    err[0] = '\0';
  if (opts)
    o = *opts;
  else
    i2i_img_save_opts_default(&o);
  if (!path || !*path)
    return fail(err, errlen, "no output file name given");
  if (!pixels)
    return fail(err, errlen, "cannot write '%s': no pixels", path);
  if (!check_dims("cannot write", path, width, height, &n_px, err, errlen))
    return false;
  if (!check_save_opts(path, &o, err, errlen))
    return false;
  if (i2i_img_type_uses_gegl(o.type) && !i2i_img_init(err, errlen))
    return false;
  if (!i2i_atomic_open(&af, path, err, errlen))
    return false;

  switch (o.type) {
  case I2I_IMG_JPEG:
    ok = save_jpeg(path, &af, pixels, width, height, &o, err, errlen);
    break;
  case I2I_IMG_WEBP:
    ok = save_webp(path, &af, pixels, width, height, n_px, &o, err, errlen);
    break;
  default:
    close(af.fd);
    af.fd = -1;
    ok = save_gegl(path, af.tmp_path, o.type, pixels, width, height, n_px, &o, err, errlen);
    break;
  }
  if (!ok) {
    i2i_atomic_abort(&af);
    return false;
  }
  return i2i_atomic_commit(&af, err, errlen);
}
