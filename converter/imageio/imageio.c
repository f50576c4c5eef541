/* converter/imageio/imageio.c: image files <-> float RGBA for the `i2i` tool (imageio.h).
 * libpng, libjpeg, libtiff and libwebp, called directly both ways, each reporting to the
 * call's own handlers. GEGL 0.4.42, used before, was dropped: its loaders hand ICC profiles
 * to babl (which aborts or overreads on crafted ones), overrun a row buffer on TIFFs with
 * fewer samples than colours and exit() on bad JPEGs, and its savers copied the whole image
 * (a float TIFF took 36 bytes a pixel beyond the image) and cost each process ~30 ms to
 * start. Profiles are carried over as bytes, only bounds-checked, never interpreted: no
 * colour management. */
#include "imageio.h"

#include "atomicfile.h"
#include "i2i.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

#include <gio/gio.h>
#include <gmodule.h>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <zlib.h>
#include <tiffio.h>
#include <webp/decode.h>
#include <webp/encode.h>

#define JPEG_MAX_SIDE 65500
#define WEBP_MAX_SIDE 16383
#define WEBP_SAVE_BYTES_PER_PX 26
#define JPEG_MAX_SCANS 1000
#define DEFAULT_QUALITY 95

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

/* Allocates the float RGBA buffer of a w x h image (n_px pixels), refusing one larger than the
 * memory available (touching it would get the process killed) with a message. */
static float *alloc_rgba(const char *path, int w, int h, size_t n_px, char *err, size_t errlen)
{
  uint64_t avail;
  size_t bytes;
  float *p;
  if (!g_size_checked_mul(&bytes, n_px, 4 * sizeof(float))) {
    fail(err, errlen, "'%s': %d x %d pixels is too large", path, w, h);
    return NULL;
  }
  avail = i2i_host_memory_available(1);
  if (bytes > avail) {
    fail(err, errlen, "not enough memory for '%s': its %d x %d pixels need %zu MB as float "
         "RGBA, %llu MB are available", path, w, h, bytes >> 20,
         (unsigned long long)(avail >> 20));
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
 * 94 000 pages). MADV_POPULATE_WRITE leaves contents alone, so it may race the writers. It
 * maps a chunk at a time and stops when the load fails: a small file declaring a huge image
 * (a forged header, or data that ends early) must not cost the whole buffer's memory. */
#define PREFAULT_CHUNK ((size_t)32 << 20)

typedef struct {
  GThread *thread;
  void *addr;
  size_t len;
  gint stop;
} prefault;

static gpointer prefault_run(gpointer data)
{
#ifdef MADV_POPULATE_WRITE
  prefault *p = data;
  for (size_t at = 0; at < p->len && !g_atomic_int_get(&p->stop); at += PREFAULT_CHUNK) {
    size_t n = p->len - at < PREFAULT_CHUNK ? p->len - at : PREFAULT_CHUNK;
    if (madvise((char *)p->addr + at, n, MADV_POPULATE_WRITE) != 0)
      break;
  }
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
  g_atomic_int_set(&p->stop, 0);
  if (bytes < ((size_t)16 << 20) || end <= start)
    return;
  p->addr = (void *)start;
  p->len = (size_t)(end - start);
  p->thread = g_thread_try_new("i2i-prefault", prefault_run, p, NULL);
}

/* Waits for the helper; `failed`: the load failed, so the helper stops at its next chunk. */
static void prefault_join(prefault *p, bool failed)
{
  if (failed)
    g_atomic_int_set(&p->stop, 1);
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
/* File metadata: byte order, TIFF structure, EXIF orientation, ICC profiles */

/* What a loader found besides the pixels. */
typedef struct {
  int orientation;       /* declared, 1..8 (1: none) */
  int pending;           /* what is still to apply to the decoded pixels, 1..8 */
  unsigned char *icc;    /* g_malloc'd profile bytes, or NULL */
  size_t icc_len;
} file_meta;

static void file_meta_init(file_meta *m)
{
  memset(m, 0, sizeof *m);
  m->orientation = m->pending = 1;
}

static uint32_t rd_u16(const unsigned char *p, bool be)
{
  return be ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0];
}

static uint32_t rd_u32(const unsigned char *p, bool be)
{
  return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
            : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static uint64_t rd_u64(const unsigned char *p, bool be)
{
  uint64_t hi = rd_u32(p + (be ? 0 : 4), be), lo = rd_u32(p + (be ? 4 : 0), be);
  return hi << 32 | lo;
}

static void wr_u32(unsigned char *p, uint32_t v, bool be)
{
  for (int i = 0; i < 4; i++)
    p[be ? 3 - i : i] = (unsigned char)(v >> (8 * i));
}

/* pread of exactly n bytes (retrying short reads); false on an error or end of file. */
static bool pread_full(int fd, void *buf, size_t n, uint64_t off)
{
  unsigned char *b = buf;
  while (n > 0) {
    ssize_t r = pread(fd, b, n, (off_t)off);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r == 0)
        errno = EIO; /* the file ended early */
      return false;
    }
    b += r, n -= (size_t)r, off += (uint64_t)r;
  }
  return true;
}

/* A TIFF structure, a TIFF file or the TIFF block inside an EXIF one, read from memory or
 * from a descriptor with every read checked against its size. */
typedef struct {
  const unsigned char *mem; /* the bytes, or NULL to read from fd */
  int fd;
  uint64_t size;
  bool be;                  /* "MM": big-endian */
  bool big;                 /* BigTIFF: 8-byte counts and offsets, 20-byte entries */
} tiff_src;

static bool tsrc_read(const tiff_src *s, uint64_t off, void *buf, size_t n)
{
  if (off > s->size || n > s->size - off)
    return false;
  if (s->mem) {
    memcpy(buf, s->mem + off, n);
    return true;
  }
  return pread_full(s->fd, buf, n, off);
}

/* The first IFD's fields this file needs; absent ones keep the TIFF defaults. */
typedef struct {
  uint64_t ifd_at;          /* offset of the IFD */
  bool has_width, has_height;
  uint32_t width, height;
  uint32_t bps, spp, compression, photometric, orientation;
  bool has_icc;
  uint64_t icc_at, icc_len; /* tag 34675 (InterColorProfile) */
} tiff_ifd;

/* One entry as stored: its value field holds the data when it fits, else an offset. */
typedef struct {
  uint32_t tag, type;
  uint64_t count;
  unsigned char value[8];
} tiff_entry;

static unsigned tiff_type_size(uint32_t type)
{
  static const unsigned char sizes[19] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4, 0, 0, 8, 8, 8};
  return type < G_N_ELEMENTS(sizes) ? sizes[type] : 0;
}

/* Where the entry's data lies and how long it is; false for an unknown type or overflow. */
static bool tiff_entry_data(const tiff_src *s, const tiff_entry *e, uint64_t *at,
                            uint64_t *len, bool *inline_value)
{
  unsigned ts = tiff_type_size(e->type);
  if (ts == 0 || !g_uint64_checked_mul(len, e->count, ts))
    return false;
  *inline_value = *len <= (s->big ? 8u : 4u);
  *at = *inline_value ? 0 : s->big ? rd_u64(e->value, s->be) : rd_u32(e->value, s->be);
  return true;
}

/* The entry's first value as an unsigned integer (BYTE, SHORT, LONG or LONG8). */
static bool tiff_entry_uint(const tiff_src *s, const tiff_entry *e, uint64_t *v)
{
  unsigned char b[8];
  uint64_t at, len;
  bool inl;
  unsigned ts = tiff_type_size(e->type);
  if (e->count < 1 || !(e->type == 1 || e->type == 3 || e->type == 4 || e->type == 16) ||
      !tiff_entry_data(s, e, &at, &len, &inl))
    return false;
  if (inl)
    memcpy(b, e->value, ts);
  else if (!tsrc_read(s, at, b, ts))
    return false;
  *v = ts == 1 ? b[0] : ts == 2 ? rd_u16(b, s->be) : ts == 4 ? rd_u32(b, s->be)
                                                            : rd_u64(b, s->be);
  return true;
}

/* Reads the header ("II"/"MM", 42 or BigTIFF 43) and the first IFD. False when the bytes are
 * not a readable TIFF structure; entries it cannot read are skipped. */
static bool tiff_read_ifd0(tiff_src *s, tiff_ifd *d)
{
  unsigned char h[16];
  uint64_t n, at;
  unsigned esz;
  memset(d, 0, sizeof *d);
  d->bps = d->spp = d->compression = d->orientation = 1;
  d->photometric = UINT32_MAX;
  if (!tsrc_read(s, 0, h, 8) || !(h[0] == h[1] && (h[0] == 'I' || h[0] == 'M')))
    return false;
  s->be = h[0] == 'M';
  if (rd_u16(h + 2, s->be) == 42) {
    s->big = false;
    d->ifd_at = rd_u32(h + 4, s->be);
  } else if (rd_u16(h + 2, s->be) == 43 && tsrc_read(s, 0, h, 16) &&
             rd_u16(h + 4, s->be) == 8 && rd_u16(h + 6, s->be) == 0) {
    s->big = true;
    d->ifd_at = rd_u64(h + 8, s->be);
  } else {
    return false;
  }
  if (!tsrc_read(s, d->ifd_at, h, s->big ? 8 : 2))
    return false;
  n = s->big ? rd_u64(h, s->be) : rd_u16(h, s->be);
  esz = s->big ? 20 : 12;
  at = d->ifd_at + (s->big ? 8 : 2);
  if (n == 0 || n > 65535 || at > s->size || n * esz > s->size - at)
    return false;
  for (uint64_t i = 0; i < n; i++) {
    unsigned char b[20];
    tiff_entry e;
    uint64_t v = 0, dat, dlen;
    bool inl;
    if (!tsrc_read(s, at + i * esz, b, esz))
      return false;
    e.tag = rd_u16(b, s->be);
    e.type = rd_u16(b + 2, s->be);
    e.count = s->big ? rd_u64(b + 4, s->be) : rd_u32(b + 4, s->be);
    memset(e.value, 0, sizeof e.value);
    memcpy(e.value, b + (s->big ? 12 : 8), s->big ? 8 : 4);
    if (e.tag == 34675) {
      if (tiff_entry_data(s, &e, &dat, &dlen, &inl) && !inl && dat <= s->size &&
          dlen <= s->size - dat) {
        d->has_icc = true;
        d->icc_at = dat;
        d->icc_len = dlen;
      }
      continue;
    }
    if (!tiff_entry_uint(s, &e, &v) || v > UINT32_MAX)
      continue;
    switch (e.tag) {
    case 256: d->width = (uint32_t)v, d->has_width = true; break;
    case 257: d->height = (uint32_t)v, d->has_height = true; break;
    case 258: d->bps = (uint32_t)v; break;
    case 259: d->compression = (uint32_t)v; break;
    case 262: d->photometric = (uint32_t)v; break;
    case 274: d->orientation = (uint32_t)v; break;
    case 277: d->spp = (uint32_t)v; break;
    default: break;
    }
  }
  return true;
}

/* The orientation (1..8) in an EXIF block: the TIFF structure, optionally after the
 * "Exif\0\0" that JPEG's APP1 puts first. 1 when absent, out of range or unreadable. */
static int exif_orientation(const unsigned char *b, size_t n)
{
  tiff_src s = {0};
  tiff_ifd d;
  if (n >= 6 && memcmp(b, "Exif\0\0", 6) == 0)
    b += 6, n -= 6;
  s.mem = b;
  s.size = n;
  if (!tiff_read_ifd0(&s, &d) || d.orientation < 1 || d.orientation > 8)
    return 1;
  return (int)d.orientation;
}

/* Whether a profile's structure holds together: its declared size is its length, its tags
 * and the entries of its curves ('curv', 'para') lie inside it, and its tone curve tags hold
 * curves. Only such a profile is carried into an output: babl (GIMP 3 reads profiles with it)
 * aborts or reads out of bounds on a curve whose entry count passes its tag. Checks bounds
 * only; nothing is interpreted. */
static bool icc_well_formed(const unsigned char *icc, size_t len)
{
  static const unsigned char para_params[5] = {1, 3, 4, 5, 7};
  uint32_t n = rd_u32(icc + 128, true);
  if (rd_u32(icc, true) != len || n > (len - 132) / 12)
    return false;
  for (uint32_t i = 0; i < n; i++) {
    const unsigned char *e = icc + 132 + 12 * (size_t)i, *t;
    uint32_t at = rd_u32(e + 4, true), size = rd_u32(e + 8, true), kind;
    if (at > len || size > len - at)
      return false;
    t = icc + at;
    /* a tone curve tag (rTRC, gTRC, bTRC, kTRC) must hold a curve */
    if (memcmp(e + 1, "TRC", 3) == 0 &&
        (size < 4 || (memcmp(t, "curv", 4) != 0 && memcmp(t, "para", 4) != 0)))
      return false;
    if (size >= 4 && memcmp(t, "curv", 4) == 0 &&
        (size < 12 || (uint64_t)rd_u32(t + 8, true) * 2 > size - 12))
      return false;
    if (size >= 4 && memcmp(t, "para", 4) == 0 &&
        (size < 12 || (kind = rd_u16(t + 8, true)) > 4 || para_params[kind] * 4u > size - 12))
      return false;
  }
  return true;
}

/* Whether `icc` is a well-formed ICC profile (signature 'acsp') of the colour space that goes
 * with the pixels: 'GRAY' for gray, 'RGB ' for colour. */
static bool icc_suits(const unsigned char *icc, size_t len, bool gray)
{
  return icc && len >= 132 && len <= I2I_IMG_MAX_ICC && memcmp(icc + 36, "acsp", 4) == 0 &&
         memcmp(icc + 16, gray ? "GRAY" : "RGB ", 4) == 0 && icc_well_formed(icc, len);
}

/* Inflates (compress = false) or deflates a zlib stream through GIO; NULL when the data is
 * not a complete zlib stream or the result would pass `max_out` bytes. */
static unsigned char *zlib_convert(bool compress, const unsigned char *in, size_t n,
                                   size_t max_out, size_t *out_len)
{
  GConverter *z = compress ? G_CONVERTER(g_zlib_compressor_new(G_ZLIB_COMPRESSOR_FORMAT_ZLIB, 9))
                           : G_CONVERTER(g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_ZLIB));
  GByteArray *out = g_byte_array_new();
  unsigned char buf[16384];
  size_t pos = 0;
  bool ok = false;
  for (;;) {
    gsize rd = 0, wr = 0;
    GError *e = NULL;
    GConverterResult r = g_converter_convert(z, in + pos, n - pos, buf, sizeof buf,
                                             G_CONVERTER_INPUT_AT_END, &rd, &wr, &e);
    if (r == G_CONVERTER_ERROR) {
      g_error_free(e);
      break;
    }
    pos += rd;
    if (wr > max_out - MIN(max_out, out->len))
      break;
    g_byte_array_append(out, buf, (guint)wr);
    if (r == G_CONVERTER_FINISHED) {
      ok = true;
      break;
    }
    if (rd == 0 && wr == 0)
      break;
  }
  g_object_unref(z);
  *out_len = ok ? out->len : 0;
  return ok ? g_byte_array_free(out, FALSE) : (g_byte_array_free(out, TRUE), NULL);
}

/* ------------------------------------------------------------------------------------ */
/* Orientation */

/* Where pixel (0, y) of a stored w x h image lands, as a pixel index, in the image turned
 * upright for EXIF orientation o (1..8; 5..8 swap width and height), and how far one step
 * in x moves it. As PIL's ImageOps.exif_transpose: 2 mirrors, 3 turns 180 degrees, 4 flips,
 * 5 transposes, 6 turns 90 degrees clockwise, 7 transverses, 8 turns 90 counter-clockwise. */
static void orient_row(int o, size_t w, size_t h, size_t y, ptrdiff_t *base, ptrdiff_t *step)
{
  ptrdiff_t W = (ptrdiff_t)w, H = (ptrdiff_t)h, Y = (ptrdiff_t)y;
  switch (o) {
  case 2: *base = Y * W + W - 1, *step = -1; break;
  case 3: *base = (H - 1 - Y) * W + W - 1, *step = -1; break;
  case 4: *base = (H - 1 - Y) * W, *step = 1; break;
  case 5: *base = Y, *step = H; break;
  case 6: *base = H - 1 - Y, *step = H; break;
  case 7: *base = (W - 1) * H + H - 1 - Y, *step = -H; break;
  case 8: *base = (W - 1) * H + Y, *step = -H; break;
  default: *base = Y * W, *step = 1; break;
  }
}

static void swap_px(float *a, float *b)
{
  float t[4];
  memcpy(t, a, sizeof t);
  memcpy(a, b, sizeof t);
  memcpy(b, t, sizeof t);
}

/* Turns the image upright for orientation o: 2..4 in place, 5..8 through a new buffer
 * (which replaces *px; width and height swap). False with a message when memory is short;
 * the image is then unchanged. */
static bool orient_image(float **px, int *w, int *h, int o, const char *path, char *err,
                         size_t errlen)
{
  size_t W = (size_t)*w, H = (size_t)*h;
  float *p = *px, *q;
  if (o == 2 || o == 3)
    for (size_t y = 0; y < H; y++)
      for (size_t x = 0; x < W / 2; x++)
        swap_px(p + (y * W + x) * 4, p + (y * W + W - 1 - x) * 4);
  if (o == 3 || o == 4)
    for (size_t y = 0; y < H / 2; y++)
      for (size_t x = 0; x < W; x++)
        swap_px(p + (y * W + x) * 4, p + ((H - 1 - y) * W + x) * 4);
  if (o < 5 || o > 8)
    return true;
  q = alloc_rgba(path, *h, *w, W * H, err, errlen);
  if (!q)
    return false;
  /* 64 x 64 tiles keep both the rows read and the columns written in cache */
  for (size_t y0 = 0; y0 < H; y0 += 64)
    for (size_t x0 = 0; x0 < W; x0 += 64)
      for (size_t y = y0; y < MIN(H, y0 + 64); y++) {
        ptrdiff_t base, step;
        orient_row(o, W, H, y, &base, &step);
        for (size_t x = x0; x < MIN(W, x0 + 64); x++)
          memcpy(q + (base + (ptrdiff_t)x * step) * 4, p + (y * W + x) * 4, 4 * sizeof(float));
      }
  g_free(p);
  *px = q;
  *w = (int)H;
  *h = (int)W;
  return true;
}

/* The largest ratio of decoded to stored bytes of TIFF compressions with a known bound;
 * 0: none known (CCITT, JPEG, LZMA, ZSTD, ...), the check is skipped. */
static uint64_t tiff_max_ratio(uint32_t compression)
{
  switch (compression) {
  case 1: return 1;          /* none */
  case 32773: return 64;     /* PackBits: 2 bytes give at most 128 */
  case 5: return 4096;       /* LZW: a code of 9 or more bits gives at most 4096 bytes */
  case 8:
  case 32946: return 1032;   /* Deflate: 2 bits at least for a 258-byte match */
  default: return 0;
  }
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

/* Opens `path` for reading with a readable message for each way it can fail. O_NONBLOCK
 * keeps open() from waiting for a writer when `path` is a FIFO (or for a device), which is
 * then refused as not a regular file; a regular file is read blocking as usual. */
static int open_input(const char *path, struct stat *st, char *err, size_t errlen)
{
  int fd;
  if (!path || !*path) {
    fail(err, errlen, "no input file name given");
    return -1;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
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
  {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
      fail(err, errlen, "'%s': cannot open (%s)", path, strerror(errno));
      close(fd);
      return -1;
    }
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
/* PNG and TIFF structure, read before decoding */

/* Reads PNG's iCCP chunk (data at `at`, `len` bytes: name, NUL, method 0, zlib stream) into
 * meta; a chunk it cannot read or inflate is ignored. */
static void png_read_iccp(int fd, uint64_t at, uint32_t len, file_meta *meta)
{
  unsigned char *b;
  const unsigned char *nul;
  if (len < 3 || len > I2I_IMG_MAX_ICC || !(b = g_try_malloc(len)))
    return;
  if (pread_full(fd, b, len, at) && (nul = memchr(b, 0, MIN(len, 80u))) != NULL &&
      (size_t)(nul - b) + 2 <= len && nul[1] == 0) {
    size_t off = (size_t)(nul - b) + 2;
    meta->icc = zlib_convert(false, b + off, len - off, I2I_IMG_MAX_ICC, &meta->icc_len);
  }
  g_free(b);
}

/* Walks the PNG's chunk list up to IEND, so that a cut file is refused, with a message naming
 * where it ends, before libpng starts. Checks IHDR's size against the limits and against what
 * the IDAT chunks can hold (deflate gives at most 1032 bytes a byte: 2 bits for a 258-byte
 * match), so a forged or cut header fails before anything is allocated. Fills meta with the
 * eXIf orientation and the iCCP profile's bytes. */
static bool png_scan(int fd, off_t size, const char *path, file_meta *meta, char *err,
                     size_t errlen)
{
  uint64_t pos = 8, idat = 0, exif_at = 0, iccp_at = 0;
  uint32_t exif_len = 0, iccp_len = 0;
  unsigned char ihdr[13];
  bool first = true;
  for (;;) {
    unsigned char hdr[8];
    uint32_t len;
    if (pos + 8 > (uint64_t)size)
      return fail(err, errlen, "cannot decode '%s': truncated PNG file (ends at byte %llu "
                  "before its IEND chunk)", path, (unsigned long long)size);
    if (!pread_full(fd, hdr, 8, pos))
      return fail(err, errlen, "'%s': read error (%s)", path, strerror(errno));
    len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    for (int i = 4; i < 8; i++)
      if (!g_ascii_isalpha(hdr[i]))
        return fail(err, errlen, "cannot decode '%s': corrupt PNG file (bad chunk type at "
                    "byte %llu)", path, (unsigned long long)pos);
    if (len > 0x7FFFFFFFu)
      return fail(err, errlen, "cannot decode '%s': corrupt PNG file (chunk length %u)", path,
                  len);
    if (first && (memcmp(hdr + 4, "IHDR", 4) != 0 || len != 13))
      return fail(err, errlen, "cannot decode '%s': corrupt PNG file (no IHDR chunk first)",
                  path);
    if (pos + 12 + len > (uint64_t)size)
      return fail(err, errlen, "cannot decode '%s': truncated PNG file (chunk '%.4s' at byte "
                  "%llu runs past the end)", path, (const char *)hdr + 4,
                  (unsigned long long)pos);
    if (first && !pread_full(fd, ihdr, 13, pos + 8))
      return fail(err, errlen, "'%s': read error (%s)", path, strerror(errno));
    first = false;
    if (memcmp(hdr + 4, "IDAT", 4) == 0)
      idat += len;
    else if (memcmp(hdr + 4, "eXIf", 4) == 0 && !exif_at)
      exif_at = pos + 8, exif_len = len;
    else if (memcmp(hdr + 4, "iCCP", 4) == 0 && !iccp_at)
      iccp_at = pos + 8, iccp_len = len;
    else if (memcmp(hdr + 4, "IEND", 4) == 0)
      break;
    pos += 12 + (uint64_t)len;
  }
  {
    uint32_t w = rd_u32(ihdr, true), h = rd_u32(ihdr + 4, true);
    unsigned depth = ihdr[8], ctype = ihdr[9];
    static const unsigned char channels[7] = {1, 0, 3, 1, 2, 0, 4}; /* by colour type */
    unsigned ch = ctype < 7 ? channels[ctype] : 0;
    size_t n_px;
    if (!check_dims("cannot decode", path, (int)MIN(w, (uint32_t)INT_MAX),
                    (int)MIN(h, (uint32_t)INT_MAX), &n_px, err, errlen))
      return false;
    /* the filtered rows without their filter bytes: no more than any layout inflates to */
    if (ch && depth && depth <= 16 &&
        (uint64_t)h * ((uint64_t)w * ch * depth / 8) > idat * 1032)
      return fail(err, errlen, "cannot decode '%s': the PNG declares %u x %u pixels but the "
                  "file is only %llu bytes (%llu of image data): truncated or corrupt PNG "
                  "file", path, w, h, (unsigned long long)size, (unsigned long long)idat);
  }
  if (exif_at) {
    uint32_t n = MIN(exif_len, 1u << 20);
    unsigned char *b = g_try_malloc(n ? n : 1);
    if (b && pread_full(fd, b, n, exif_at))
      meta->orientation = meta->pending = exif_orientation(b, n);
    g_free(b);
  }
  if (iccp_at)
    png_read_iccp(fd, iccp_at, iccp_len, meta);
  return true;
}

/* Reads the TIFF's first IFD before libtiff opens it: checks the declared size against the
 * limits and against what the file could hold at its compression's greatest ratio, and fills
 * meta with the orientation (tag 274) and ICC profile (tag 34675, bytes only: no profile is
 * parsed). A structure it cannot read is left to libtiff to report. */
static bool tiff_scan(int fd, off_t size, const char *path, file_meta *meta, char *err,
                      size_t errlen)
{
  tiff_src s = {0};
  tiff_ifd d;
  size_t n_px;
  uint64_t row, raw, cap, ratio;
  s.fd = fd;
  s.size = (uint64_t)size;
  if (!tiff_read_ifd0(&s, &d) || !d.has_width || !d.has_height)
    return true;
  if (!check_dims("cannot decode", path, (int)MIN(d.width, (uint32_t)INT_MAX),
                  (int)MIN(d.height, (uint32_t)INT_MAX), &n_px, err, errlen))
    return false;
  ratio = tiff_max_ratio(d.compression);
  /* YCbCr may subsample its chroma: count the luma alone */
  if (ratio && (!g_uint64_checked_mul(&row, d.width, d.photometric == 6 ? 1 : d.spp) ||
                !g_uint64_checked_mul(&row, row, d.bps) ||
                !g_uint64_checked_mul(&raw, row / 8, d.height) ||
                (g_uint64_checked_mul(&cap, (uint64_t)size, ratio) && raw > cap)))
    return fail(err, errlen, "cannot decode '%s': the TIFF declares %u x %u pixels but the "
                "file is only %llu bytes: truncated or corrupt TIFF file", path, d.width,
                d.height, (unsigned long long)size);
  if (d.orientation >= 1 && d.orientation <= 8)
    meta->orientation = meta->pending = (int)d.orientation;
  /* a CMYK file's profile describes the inks, not the R'G'B' made from them */
  if (d.has_icc && d.photometric != 5 && d.icc_len >= 132 && d.icc_len <= I2I_IMG_MAX_ICC &&
      (meta->icc = g_try_malloc(d.icc_len)) != NULL) {
    meta->icc_len = (size_t)d.icc_len;
    if (!pread_full(fd, meta->icc, meta->icc_len, d.icc_at)) {
      g_free(meta->icc);
      meta->icc = NULL;
      meta->icc_len = 0;
    }
  }
  return true;
}

/* ------------------------------------------------------------------------------------ */
/* Loading PNG with libpng */

/* What libpng's callbacks share with load_png: the file, read with every read checked against
 * its size, and the messages. */
typedef struct {
  int fd;
  uint64_t pos, size;
  char msg[256];        /* libpng's error */
  bool in_data;         /* decoding the image data: a warning then means damaged data */
  int n_data_warnings;
} png_io;

/* State that must survive libpng's longjmp lives here, not in locals. */
typedef struct {
  png_structp png;
  png_infop info;
  png_io io;
  prefault pf;
} png_load_state;

static void png_io_read(png_structp png, png_bytep buf, size_t n)
{
  png_io *io = png_get_io_ptr(png);
  if (io->pos > io->size || n > io->size - io->pos || !pread_full(io->fd, buf, n, io->pos))
    png_error(png, "the file ends early or cannot be read");
  io->pos += n;
}

static void png_io_error(png_structp png, png_const_charp msg)
{
  png_io *io = png_get_error_ptr(png);
  snprintf(io->msg, sizeof io->msg, "%s", msg ? msg : "error");
  png_longjmp(png, 1);
}

static void png_io_warning(png_structp png, png_const_charp msg)
{
  png_io *io = png_get_error_ptr(png);
  (void)msg;
  if (io->in_data)
    io->n_data_warnings++;
}

/* Widens n decoded pixels of `ch` samples of `depth` bits (big-endian 16-bit) at raw into
 * float RGBA at dst, front to back; raw may lie in the end of dst's own buffer, from byte
 * n * (16 - ch * depth / 8) on: float pixel i ends where raw pixel i + 1 starts at the latest,
 * and each pixel is read whole before it is written. */
static void png_widen(const unsigned char *raw, int ch, int depth, size_t n, float *dst)
{
  size_t px_bytes = (size_t)ch * (size_t)depth / 8;
  float lut[256];
  for (int i = 0; i < 256; i++)
    lut[i] = (float)i / 255.0f;
  for (size_t i = 0; i < n; i++) {
    const unsigned char *p = raw + i * px_bytes;
    float v[4] = {0, 0, 0, 1.0f}, *d = dst + 4 * i;
    for (int k = 0; k < ch; k++)
      v[k] = depth == 8 ? lut[p[k]]
                        : (float)((unsigned)p[2 * k] << 8 | p[2 * k + 1]) / 65535.0f;
    if (ch <= 2) {
      d[0] = d[1] = d[2] = v[0];
      d[3] = ch == 2 ? v[1] : 1.0f;
    } else {
      d[0] = v[0], d[1] = v[1], d[2] = v[2], d[3] = v[3];
    }
  }
}

/* Decodes a PNG that png_scan has checked: samples as stored (no gamma or colour change),
 * 8 or 16 bits as in the file, palette and gray below 8 bits widened to 8, tRNS made alpha.
 * libpng handles only the critical chunks and tRNS; every other chunk, iCCP among them, is
 * skipped unparsed (png_scan has read the iCCP and eXIf bytes). */
static bool load_png(const char *path, int fd, off_t size, i2i_img *out, char *err,
                     size_t errlen)
{
  png_load_state *s = g_try_new0(png_load_state, 1);
  png_uint_32 w, h;
  int depth, ctype, interlace, passes, ch;
  size_t n_px = 0, rowbytes;
  unsigned char *raw;
  volatile bool ok = false;

  if (!s)
    return fail(err, errlen, "out of memory");
  s->io.fd = fd;
  s->io.size = (uint64_t)size;
  s->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s->io, png_io_error, png_io_warning);
  if (s->png)
    s->info = png_create_info_struct(s->png);
  if (!s->png || !s->info) {
    fail(err, errlen, "out of memory");
    goto done;
  }
  if (setjmp(png_jmpbuf(s->png))) {
    fail(err, errlen, "cannot decode '%s': truncated or corrupt PNG file (%s)", path,
         s->io.msg);
    goto done;
  }
  png_set_read_fn(s->png, &s->io, png_io_read);
  png_set_keep_unknown_chunks(s->png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
  png_set_user_limits(s->png, I2I_IMG_MAX_SIDE, I2I_IMG_MAX_SIDE);
  png_read_info(s->png, s->info);
  png_get_IHDR(s->png, s->info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
  if (!check_dims("cannot decode", path, (int)w, (int)h, &n_px, err, errlen))
    goto done;
  if (ctype == PNG_COLOR_TYPE_PALETTE)
    png_set_palette_to_rgb(s->png);
  else if (depth < 8)
    png_set_expand_gray_1_2_4_to_8(s->png);
  if (png_get_valid(s->png, s->info, PNG_INFO_tRNS))
    png_set_tRNS_to_alpha(s->png);
  passes = png_set_interlace_handling(s->png);
  png_read_update_info(s->png, s->info);
  depth = png_get_bit_depth(s->png, s->info);
  ch = png_get_channels(s->png, s->info);
  rowbytes = png_get_rowbytes(s->png, s->info);
  if ((depth != 8 && depth != 16) || ch < 1 || ch > 4 ||
      rowbytes != (size_t)w * (size_t)ch * (size_t)depth / 8) {
    fail(err, errlen, "cannot decode '%s': unsupported PNG layout (%d samples of %d bits)",
         path, ch, depth);
    goto done;
  }
  out->pixels = alloc_rgba(path, (int)w, (int)h, n_px, err, errlen);
  if (!out->pixels)
    goto done;
  prefault_start(&s->pf, out->pixels, n_px * 4 * sizeof(float));
  /* the rows go into the end of the float buffer (at most 8 of each pixel's 16 bytes);
   * interlaced passes fill them in place */
  raw = (unsigned char *)out->pixels + n_px * (16 - (size_t)ch * (size_t)depth / 8);
  s->io.in_data = true;
  for (int pass = 0; pass < passes; pass++)
    for (png_uint_32 y = 0; y < h; y++)
      png_read_row(s->png, raw + (size_t)y * rowbytes, NULL);
  png_read_end(s->png, NULL);
  png_widen(raw, ch, depth, n_px, out->pixels);
  out->info.width = (int)w;
  out->info.height = (int)h;
  out->info.type = I2I_IMG_PNG;
  out->info.bits = depth;
  out->info.has_alpha = ch == 2 || ch == 4;
  out->info.is_gray = ch <= 2;
  out->info.lossless = true;
  if (s->io.n_data_warnings)
    out->info.warnings |= I2I_IMG_WARN_DATA;
  ok = true;

done:
  prefault_join(&s->pf, !ok);
  png_destroy_read_struct(&s->png, &s->info, NULL);
  g_free(s);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Loading TIFF with libtiff */

/* libtiff reads the file through these, never mapped (a file cut while mapped raises SIGBUS),
 * and reports to this handle's own handlers, so loads on several threads do not mix. */
typedef struct {
  int fd;
  uint64_t pos, size;
  const char *name;     /* the path, which libtiff puts before its messages */
  char msg[256];        /* libtiff's first error, without the path */
  int n_errors;
} tiff_io;

static tmsize_t tiff_io_read(thandle_t h, void *buf, tmsize_t n)
{
  tiff_io *io = h;
  size_t got = 0;
  while (n > 0 && got < (size_t)n && io->pos < io->size) {
    size_t want = (size_t)MIN((uint64_t)((size_t)n - got), io->size - io->pos);
    ssize_t r = pread(io->fd, (unsigned char *)buf + got, want, (off_t)io->pos);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -1;
    if (r == 0)
      break;
    got += (size_t)r;
    io->pos += (uint64_t)r;
  }
  return (tmsize_t)got;
}

static tmsize_t tiff_io_write(thandle_t h, void *buf, tmsize_t n)
{
  return -1;
}

/* Offsets are unsigned: a negative SEEK_CUR or SEEK_END offset wraps, as libtiff intends. */
static toff_t tiff_io_seek(thandle_t h, toff_t off, int whence)
{
  tiff_io *io = h;
  if (whence == SEEK_SET)
    io->pos = off;
  else if (whence == SEEK_CUR)
    io->pos += off;
  else if (whence == SEEK_END)
    io->pos = io->size + off;
  else
    return (toff_t)-1;
  return io->pos;
}

static int tiff_io_close(thandle_t h)
{
  return 0;
}

static toff_t tiff_io_size(thandle_t h)
{
  return ((tiff_io *)h)->size;
}

static int tiff_io_error(TIFF *tif, void *data, const char *module, const char *fmt,
                         va_list ap)
{
  tiff_io *io = data;
  size_t n = strlen(io->name);
  if (io->n_errors++ == 0) {
    vsnprintf(io->msg, sizeof io->msg, fmt, ap);
    if (n + 2 < sizeof io->msg && strncmp(io->msg, io->name, n) == 0 &&
        strncmp(io->msg + n, ": ", 2) == 0)
      memmove(io->msg, io->msg + n + 2, strlen(io->msg + n + 2) + 1);
  }
  return 1; /* handled: libtiff's process-wide handler (stderr) is not called */
}

static int tiff_io_warning(TIFF *tif, void *data, const char *module, const char *fmt,
                           va_list ap)
{
  return 1;
}

typedef enum { TS_U8, TS_U16, TS_U32, TS_F16, TS_F32, TS_F64 } tiff_kind;

/* IEEE half precision to single (exact: every half is a float). */
static float half_to_float(uint16_t v)
{
  uint32_t sign = (uint32_t)(v >> 15) << 31, e = (v >> 10) & 0x1F, m = v & 0x3FF, bits;
  float f;
  if (e == 0x1F) {
    bits = sign | 0x7F800000u | m << 13;
  } else if (e > 0) {
    bits = sign | (e + 112) << 23 | m << 13;
  } else if (m == 0) {
    bits = sign;
  } else {
    int x = -14; /* subnormal: m * 2^-24, normalised */
    while (!(m & 0x400))
      m <<= 1, x--;
    bits = sign | (uint32_t)(x + 127) << 23 | (m & 0x3FF) << 13;
  }
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* n samples of kind k, `step` bytes apart from s (native byte order, as libtiff returns them),
 * as floats: integers scaled into [0,1], floats as they are. */
static void tiff_to_float(tiff_kind k, const unsigned char *s, size_t step, size_t n, float *d)
{
  for (size_t i = 0; i < n; i++, s += step) {
    uint16_t u16;
    uint32_t u32;
    double f64;
    switch (k) {
    case TS_U8: d[i] = (float)s[0] / 255.0f; break;
    case TS_U16: memcpy(&u16, s, 2), d[i] = (float)u16 / 65535.0f; break;
    case TS_U32: memcpy(&u32, s, 4), d[i] = (float)(u32 / 4294967295.0); break;
    case TS_F16: memcpy(&u16, s, 2), d[i] = half_to_float(u16); break;
    case TS_F32: memcpy(d + i, s, 4); break;
    default: memcpy(&f64, s, 8), d[i] = (float)f64; break;
    }
  }
}

/* How the samples of a TIFF decoded here become float RGBA. */
typedef struct {
  tiff_kind kind;
  size_t bytes;         /* per sample: 1, 2, 4 or 8 */
  size_t spp;           /* samples per pixel in the file */
  int colours;          /* 1: Y', 3: R'G'B', 4: CMYK (inks) */
  int used;             /* the samples read: colours, and alpha after them when there is one */
  bool min_is_white;    /* Y' stored inverted */
  bool premultiplied;   /* associated alpha */
  float *tmp;           /* used rows of `tmp_w` floats */
  size_t tmp_w;
} tiff_plan;

/* Writes n pixels as float RGBA at dst; sample p of pixel i is at src[p] + i * step. CMYK
 * becomes R'G'B' as (1 - C)(1 - K), like PIL and the JPEG loader; associated alpha is
 * divided out (colour 0 where alpha is 0; the caller clamps). n <= pl->tmp_w. */
static void tiff_put(const tiff_plan *pl, const unsigned char *const *src, size_t step,
                     size_t n, float *dst)
{
  const float *v[5];
  bool alpha = pl->used > pl->colours;
  for (int p = 0; p < pl->used; p++) {
    float *t = pl->tmp + (size_t)p * pl->tmp_w;
    tiff_to_float(pl->kind, src[p], step, n, t);
    v[p] = t;
  }
  for (size_t i = 0; i < n; i++) {
    float c[4] = {0, 0, 0, 0}, a = alpha ? v[pl->colours][i] : 1.0f, *d = dst + 4 * i;
    for (int k = 0; k < pl->colours; k++)
      c[k] = v[k][i];
    if (pl->min_is_white)
      c[0] = 1.0f - c[0];
    if (pl->premultiplied)
      for (int k = 0; k < pl->colours; k++)
        c[k] = a > 0.0f ? c[k] / a : 0.0f;
    if (pl->colours == 1) {
      d[0] = d[1] = d[2] = c[0];
    } else if (pl->colours == 3) {
      d[0] = c[0], d[1] = c[1], d[2] = c[2];
    } else {
      float k1 = 1.0f - c[3];
      d[0] = (1.0f - c[0]) * k1;
      d[1] = (1.0f - c[1]) * k1;
      d[2] = (1.0f - c[2]) * k1;
    }
    d[3] = a;
  }
}

/* The message for a failed read: libtiff's first error, or a short read. */
static bool tiff_read_failed(const tiff_io *io, const char *path, char *err, size_t errlen)
{
  return fail(err, errlen, "cannot decode '%s': truncated or corrupt TIFF file (%s)", path,
              io->n_errors ? io->msg : "data missing");
}

/* Reads a chunky stripped image a row at a time. Each row is read into a buffer of the size
 * computed here from the fields, which libtiff must agree with. */
static bool tiff_read_rows(TIFF *tif, tiff_io *io, const tiff_plan *pl, size_t w, size_t h,
                           float *px, const char *path, char *err, size_t errlen)
{
  size_t row_bytes, step = pl->spp * pl->bytes;
  unsigned char *buf;
  bool ok = true;
  if (!g_size_checked_mul(&row_bytes, w, step) || TIFFScanlineSize64(tif) != row_bytes)
    return fail(err, errlen, "cannot decode '%s': corrupt TIFF file (its rows are not %zu "
                "samples of %zu bytes)", path, pl->spp, pl->bytes);
  buf = g_try_malloc(row_bytes);
  if (!buf)
    return fail(err, errlen, "out of memory decoding '%s'", path);
  for (size_t y = 0; ok && y < h; y++) {
    const unsigned char *src[5];
    if (TIFFReadScanline(tif, buf, (uint32_t)y, 0) < 0 || io->n_errors) {
      ok = tiff_read_failed(io, path, err, errlen);
      break;
    }
    for (int p = 0; p < pl->used; p++)
      src[p] = buf + (size_t)p * pl->bytes;
    tiff_put(pl, src, step, w, px + y * w * 4);
  }
  g_free(buf);
  return ok;
}

/* Reads a planar stripped image a band of strips at a time: the band's strip of each plane
 * used (rows are never read plane by plane, which would restart compressed strips). */
static bool tiff_read_planar_strips(TIFF *tif, tiff_io *io, const tiff_plan *pl, size_t w,
                                    size_t h, float *px, const char *path, char *err,
                                    size_t errlen)
{
  uint32_t rps = 0;
  size_t band, plane_bytes, all;
  unsigned char *buf;
  bool ok = true;
  TIFFGetFieldDefaulted(tif, TIFFTAG_ROWSPERSTRIP, &rps);
  if (rps == 0)
    return fail(err, errlen, "cannot decode '%s': corrupt TIFF file (0 rows per strip)", path);
  band = MIN((size_t)rps, h);
  if (TIFFScanlineSize64(tif) != (uint64_t)w * pl->bytes ||
      !g_size_checked_mul(&plane_bytes, band, w * pl->bytes) ||
      !g_size_checked_mul(&all, plane_bytes, (size_t)pl->used))
    return fail(err, errlen, "cannot decode '%s': corrupt TIFF file (its planes' rows are "
                "not %zu samples of %zu bytes)", path, w, pl->bytes);
  buf = g_try_malloc(all);
  if (!buf)
    return fail(err, errlen, "out of memory decoding '%s' (%zu MB a band of strips)", path,
                all >> 20);
  for (size_t y0 = 0; ok && y0 < h; y0 += band) {
    size_t rows = MIN(band, h - y0), need = rows * w * pl->bytes;
    for (int p = 0; ok && p < pl->used; p++) {
      uint32_t strip = TIFFComputeStrip(tif, (uint32_t)y0, (uint16_t)p);
      if (strip >= TIFFNumberOfStrips(tif) ||
          TIFFReadEncodedStrip(tif, strip, buf + (size_t)p * plane_bytes, (tmsize_t)need) !=
              (tmsize_t)need || io->n_errors)
        ok = tiff_read_failed(io, path, err, errlen);
    }
    for (size_t r = 0; ok && r < rows; r++) {
      const unsigned char *src[5];
      for (int p = 0; p < pl->used; p++)
        src[p] = buf + (size_t)p * plane_bytes + r * w * pl->bytes;
      tiff_put(pl, src, pl->bytes, w, px + (y0 + r) * w * 4);
    }
  }
  g_free(buf);
  return ok;
}

/* Reads a tiled image of tw x th tiles (checked by the caller) a tile at a time (chunky: one
 * tile; planar: the tile of each plane used), each into a buffer of the size computed here
 * from the fields. */
static bool tiff_read_tiles(TIFF *tif, tiff_io *io, const tiff_plan *pl, bool planar,
                            uint32_t tw, uint32_t th, size_t w, size_t h, float *px,
                            const char *path, char *err, size_t errlen)
{
  size_t step = planar ? pl->bytes : pl->spp * pl->bytes, tile_row, tile_bytes, all;
  int n_buf = planar ? pl->used : 1;
  unsigned char *buf;
  bool ok = true;
  if (!g_size_checked_mul(&tile_row, tw, step) || TIFFTileRowSize64(tif) != tile_row ||
      !g_size_checked_mul(&tile_bytes, tile_row, th) ||
      !g_size_checked_mul(&all, tile_bytes, (size_t)n_buf))
    return fail(err, errlen, "cannot decode '%s': corrupt TIFF file (its tiles' rows are not "
                "%u pixels of %zu bytes)", path, tw, step);
  buf = g_try_malloc(all);
  if (!buf)
    return fail(err, errlen, "out of memory decoding '%s' (%zu MB a tile)", path, all >> 20);
  for (size_t ty = 0; ok && ty < h; ty += th)
    for (size_t tx = 0; ok && tx < w; tx += tw) {
      size_t cw = MIN((size_t)tw, w - tx), ch = MIN((size_t)th, h - ty);
      for (int b = 0; ok && b < n_buf; b++) {
        uint32_t t = TIFFComputeTile(tif, (uint32_t)tx, (uint32_t)ty, 0, (uint16_t)b);
        if (t >= TIFFNumberOfTiles(tif) ||
            TIFFReadEncodedTile(tif, t, buf + (size_t)b * tile_bytes, (tmsize_t)tile_bytes) !=
                (tmsize_t)tile_bytes || io->n_errors)
          ok = tiff_read_failed(io, path, err, errlen);
      }
      for (size_t r = 0; ok && r < ch; r++) {
        const unsigned char *src[5];
        for (int p = 0; p < pl->used; p++)
          src[p] = planar ? buf + (size_t)p * tile_bytes + r * tile_row
                          : buf + r * tile_row + (size_t)p * pl->bytes;
        tiff_put(pl, src, step, cw, px + ((ty + r) * w + tx) * 4);
      }
    }
  g_free(buf);
  return ok;
}

/* Reads any other layout libtiff knows (palette, YCbCr, 1..7-bit, Lab, ...) through its RGBA
 * interface (`img`, begun by the caller), as 8-bit R'G'B'A: into the last quarter of the float
 * buffer, then widened front to back, associated alpha divided out. The interface applies the
 * flips of the orientation (the caller turns what remains). */
static bool tiff_read_rgba(TIFFRGBAImage *img, tiff_io *io, size_t w, size_t h, float *px,
                           const char *path, char *err, size_t errlen)
{
  size_t n_px = w * h;
  uint32_t *raster = (uint32_t *)((unsigned char *)px + n_px * 12);
  float lut[256];
  img->req_orientation = ORIENTATION_TOPLEFT;
  if (!TIFFRGBAImageGet(img, raster, (uint32_t)w, (uint32_t)h) || io->n_errors)
    return tiff_read_failed(io, path, err, errlen);
  for (int i = 0; i < 256; i++)
    lut[i] = (float)i / 255.0f;
  for (size_t i = 0; i < n_px; i++) {
    uint32_t v = raster[i];
    float a = lut[TIFFGetA(v)], *d = px + 4 * i;
    float r = lut[TIFFGetR(v)], g = lut[TIFFGetG(v)], b = lut[TIFFGetB(v)];
    d[0] = a > 0.0f ? r / a : 0.0f;
    d[1] = a > 0.0f ? g / a : 0.0f;
    d[2] = a > 0.0f ? b / a : 0.0f;
    d[3] = a;
  }
  return true;
}

/* Decodes the first image of a TIFF that tiff_scan has checked. 8, 16 (integer or half), 32
 * (integer or float) and 64-bit (float) gray, RGB and CMYK, with an alpha sample after the
 * colours when there are more samples than colours, chunky or planar, in strips or tiles, are
 * read here; any other layout through libtiff's RGBA interface (8-bit R'G'B'A, as GEGL read
 * them). A file with fewer samples per pixel than its colours is refused. The ICC profile
 * is never parsed. */
static bool load_tiff(const char *path, int fd, off_t size, i2i_img *out, file_meta *meta,
                      char *err, size_t errlen)
{
  tiff_io io = {0};
  tiff_plan pl = {0};
  TIFFOpenOptions *opts = TIFFOpenOptionsAlloc();
  TIFF *tif = NULL;
  uint32_t w = 0, h = 0;
  uint16_t bps = 1, spp = 1, fmt = 1, photo = 0, planar = 1, comp = 1;
  uint16_t n_extra = 0, *extra = NULL;
  uint32_t tw = 0, th = 0;
  size_t n_px = 0;
  prefault pf = {0};
  TIFFRGBAImage img;
  bool ok = false, rgba, rgba_begun = false, tiled;

  if (!opts)
    return fail(err, errlen, "out of memory");
  io.fd = fd;
  io.size = (uint64_t)size;
  io.name = path;
  TIFFOpenOptionsSetErrorHandlerExtR(opts, tiff_io_error, &io);
  TIFFOpenOptionsSetWarningHandlerExtR(opts, tiff_io_warning, &io);
  tif = TIFFClientOpenExt(path, "rm", &io, tiff_io_read, tiff_io_write, tiff_io_seek,
                          tiff_io_close, tiff_io_size, NULL, NULL, opts);
  TIFFOpenOptionsFree(opts);
  if (!tif || io.n_errors) {
    fail(err, errlen, "cannot decode '%s': invalid or truncated TIFF file (%s)", path,
         io.n_errors ? io.msg : "no image");
    goto done;
  }
  /* refused before the pixels are allocated, not after */
  TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &comp);
  if (!TIFFIsCODECConfigured(comp)) {
    fail(err, errlen, "cannot decode '%s': unsupported TIFF compression (scheme %u)", path, comp);
    goto done;
  }
  TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w);
  TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h);
  TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bps);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &fmt);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
  if (!TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photo)) {
    fail(err, errlen, "cannot decode '%s': corrupt TIFF file (no PhotometricInterpretation)",
         path);
    goto done;
  }
  if (!TIFFGetField(tif, TIFFTAG_EXTRASAMPLES, &n_extra, &extra))
    n_extra = 0;
  if (!check_dims("cannot decode", path, (int)MIN(w, (uint32_t)INT_MAX),
                  (int)MIN(h, (uint32_t)INT_MAX), &n_px, err, errlen))
    goto done;

  pl.colours = photo <= PHOTOMETRIC_MINISBLACK ? 1 : photo == PHOTOMETRIC_RGB ? 3
             : photo == PHOTOMETRIC_SEPARATED ? 4 : 0;
  rgba = pl.colours == 0 || !(bps == 8 || bps == 16 || bps == 32 || bps == 64);
  if (rgba) {
    /* before the pixels are allocated: Begin picks the routine for the layout, or fails */
    char msg[1024] = "";
    rgba_begun = TIFFRGBAImageOK(tif, msg) && TIFFRGBAImageBegin(&img, tif, 1, msg);
    if (!rgba_begun || io.n_errors) {
      fail(err, errlen, "cannot decode '%s': unsupported TIFF layout (%s)", path,
           msg[0] ? msg : io.msg);
      goto done;
    }
  } else {
    bool flt = fmt == SAMPLEFORMAT_IEEEFP;
    if (!(fmt == SAMPLEFORMAT_UINT || fmt == SAMPLEFORMAT_VOID || flt) || (flt && bps == 8) ||
        (!flt && bps == 64)) {
      fail(err, errlen, "cannot decode '%s': unsupported TIFF sample format (%u bits, %s)",
           path, bps, fmt == SAMPLEFORMAT_INT ? "signed integers" : flt ? "floating point"
                                              : "neither unsigned integers nor floats");
      goto done;
    }
    if (spp < pl.colours) {
      fail(err, errlen, "cannot decode '%s': corrupt TIFF file (SamplesPerPixel %u, fewer "
           "than its %d colours)", path, spp, pl.colours);
      goto done;
    }
    pl.kind = bps == 8 ? TS_U8 : bps == 16 ? (flt ? TS_F16 : TS_U16)
            : bps == 32 ? (flt ? TS_F32 : TS_U32) : TS_F64;
    pl.bytes = bps / 8;
    pl.spp = spp;
    pl.used = pl.colours + (spp > pl.colours ? 1 : 0);
    pl.min_is_white = photo == PHOTOMETRIC_MINISWHITE;
    pl.premultiplied = pl.used > pl.colours && n_extra > 0 && extra &&
                       extra[0] == EXTRASAMPLE_ASSOCALPHA;
  }
  tiled = TIFFIsTiled(tif);
  if (tiled) {
    TIFFGetField(tif, TIFFTAG_TILEWIDTH, &tw);
    TIFFGetField(tif, TIFFTAG_TILELENGTH, &th);
    /* a tile may pass the image's edge, not dwarf it (a few bytes declaring huge tiles) */
    if (tw == 0 || th == 0 || (uint64_t)tw * th > MAX((uint64_t)n_px * 4, (uint64_t)1 << 22)) {
      fail(err, errlen, "cannot decode '%s': corrupt TIFF file (tiles of %u x %u pixels for a "
           "%u x %u image)", path, tw, th, w, h);
      goto done;
    }
  }

  out->pixels = alloc_rgba(path, (int)w, (int)h, n_px, err, errlen);
  if (!out->pixels)
    goto done;
  prefault_start(&pf, out->pixels, n_px * 4 * sizeof(float));
  if (rgba) {
    ok = tiff_read_rgba(&img, &io, w, h, out->pixels, path, err, errlen);
  } else {
    pl.tmp_w = MAX((size_t)w, (size_t)tw);
    pl.tmp = g_try_new(float, pl.tmp_w * (size_t)pl.used);
    if (!pl.tmp)
      ok = fail(err, errlen, "out of memory decoding '%s'", path);
    else if (tiled)
      ok = tiff_read_tiles(tif, &io, &pl, planar == PLANARCONFIG_SEPARATE, tw, th, w, h,
                           out->pixels, path, err, errlen);
    else if (planar == PLANARCONFIG_SEPARATE)
      ok = tiff_read_planar_strips(tif, &io, &pl, w, h, out->pixels, path, err, errlen);
    else
      ok = tiff_read_rows(tif, &io, &pl, w, h, out->pixels, path, err, errlen);
    g_free(pl.tmp);
  }
  prefault_join(&pf, !ok);
  if (!ok)
    goto done;
  out->info.width = (int)w;
  out->info.height = (int)h;
  out->info.type = I2I_IMG_TIFF;
  out->info.lossless = true;
  if (rgba) {
    /* the RGBA interface has applied the flips: 2..4 are done, and of 5..8 what remains is
     * a transpose (5, 7) or a transverse (6, 8) */
    meta->pending = meta->orientation < 5 ? 1 : meta->orientation % 2 ? 5 : 7;
    out->info.bits = 8;
    out->info.has_alpha = true;
  } else {
    out->info.bits = bps;
    out->info.is_float = fmt == SAMPLEFORMAT_IEEEFP;
    out->info.has_alpha = pl.used > pl.colours;
    out->info.is_gray = pl.colours == 1;
  }
  /* floats may lie anywhere, and colour over alpha does where the file breaks the rule of
   * associated alpha (colour <= alpha) */
  if (out->info.is_float || pl.premultiplied || rgba)
    sanitize_info(out, n_px);
  if (ok && TIFFNumberOfDirectories(tif) > 1)
    out->info.warnings |= I2I_IMG_WARN_PAGES;

done:
  if (rgba_begun)
    TIFFRGBAImageEnd(&img);
  if (tif)
    TIFFClose(tif);
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
#define JPEG_BAND 32 /* rows decoded before they are placed: keeps turned writes in cache */

typedef struct {
  struct jpeg_decompress_struct cinfo;
  jpeg_guard guard;
  FILE *fp;
  unsigned char *rows;
  prefault pf;
} jpeg_load_state;

/* The orientation of the first APP1 "Exif" block and the profile spread over the APP2
 * "ICC_PROFILE" blocks (numbered 1..n of n, each once) into meta; bad blocks are ignored. */
static void jpeg_read_meta(j_decompress_ptr cinfo, file_meta *meta)
{
  jpeg_saved_marker_ptr parts[256] = {NULL};
  unsigned n_parts = 0;
  size_t total = 0;
  bool exif_seen = false, bad = false;
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
    if (m->marker == JPEG_APP0 + 1 && !exif_seen && m->data_length >= 6 &&
        memcmp(m->data, "Exif\0\0", 6) == 0) {
      exif_seen = true;
      meta->orientation = exif_orientation(m->data, m->data_length);
    } else if (m->marker == JPEG_APP0 + 2 && m->data_length > 14 &&
               memcmp(m->data, "ICC_PROFILE\0", 12) == 0) {
      unsigned seq = m->data[12], count = m->data[13];
      if (seq == 0 || count == 0 || seq > count || (n_parts && n_parts != count) ||
          parts[seq]) {
        bad = true;
        continue;
      }
      n_parts = count;
      parts[seq] = m;
      total += m->data_length - 14;
    }
  }
  if (bad || n_parts == 0 || total > I2I_IMG_MAX_ICC)
    return;
  for (unsigned i = 1; i <= n_parts; i++)
    if (!parts[i])
      return;
  meta->icc = g_try_malloc(total);
  if (!meta->icc)
    return;
  meta->icc_len = total;
  total = 0;
  for (unsigned i = 1; i <= n_parts; i++) {
    memcpy(meta->icc + total, parts[i]->data + 14, parts[i]->data_length - 14);
    total += parts[i]->data_length - 14;
  }
}

/* One decoded pixel (Y', R'G'B' or CMYK bytes) as float RGBA. Adobe writes inverted CMYK
 * (255 = no ink); plain CMYK is inverted here. As PIL: R = (1 - C)(1 - K). */
static inline void jpeg_pixel(const unsigned char *s, int comps, bool adobe, const float *lut,
                              float *d)
{
  if (comps == 1) {
    d[0] = d[1] = d[2] = lut[s[0]];
  } else if (comps == 3) {
    d[0] = lut[s[0]], d[1] = lut[s[1]], d[2] = lut[s[2]];
  } else {
    unsigned c = s[0], m = s[1], y = s[2], k = s[3];
    if (!adobe)
      c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
    d[0] = (float)(c * k) / 65025.0f;
    d[1] = (float)(m * k) / 65025.0f;
    d[2] = (float)(y * k) / 65025.0f;
  }
  d[3] = 1.0f;
}

/* Places n decoded rows from row y0 of a stored w x h image into `out`, turned for
 * orientation o: along the rows for 1..4, across them for 5..8 (where consecutive rows land
 * side by side). */
static void jpeg_place_band(float *out, const unsigned char *rows, int n, size_t y0, int w,
                            int h, int comps, bool adobe, const float *lut, int o)
{
  ptrdiff_t base[JPEG_BAND], step = 1;
  size_t stride = (size_t)w * (size_t)comps;
  for (int r = 0; r < n; r++)
    orient_row(o, (size_t)w, (size_t)h, y0 + (size_t)r, &base[r], &step);
  if (o <= 4) {
    for (int r = 0; r < n; r++)
      for (int x = 0; x < w; x++)
        jpeg_pixel(rows + (size_t)r * stride + (size_t)x * (size_t)comps, comps, adobe, lut,
                   out + (base[r] + x * step) * 4);
  } else {
    for (int x = 0; x < w; x++)
      for (int r = 0; r < n; r++)
        jpeg_pixel(rows + (size_t)r * stride + (size_t)x * (size_t)comps, comps, adobe, lut,
                   out + (base[r] + x * step) * 4);
  }
}

/* Fails when the frame has more 8x8 blocks than the file has bits: a Huffman-coded scan spends
 * at least one bit on every block of each component it holds (arithmetic coding can spend
 * less, so it is not checked). */
static bool jpeg_size_plausible(j_decompress_ptr c, off_t size, const char *path, char *err,
                                size_t errlen)
{
  uint64_t least = UINT64_MAX;
  if (c->arith_code)
    return true;
  for (int i = 0; i < c->num_components; i++) {
    uint64_t b = (uint64_t)c->comp_info[i].width_in_blocks * c->comp_info[i].height_in_blocks;
    least = MIN(least, b);
  }
  if (least != UINT64_MAX && least / 8 > (uint64_t)size)
    return fail(err, errlen, "cannot decode '%s': the JPEG declares %u x %u pixels but the "
                "file is only %llu bytes: truncated or corrupt JPEG", path, c->image_width,
                c->image_height, (unsigned long long)size);
  return true;
}

static bool load_jpeg(const char *path, int fd, off_t size, i2i_img *out, file_meta *meta,
                      char *err, size_t errlen)
{
  jpeg_load_state *s = g_try_new0(jpeg_load_state, 1);
  float lut[256];
  size_t n_px = 0;
  int w, h, comps, o;
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
  jpeg_save_markers(&s->cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_save_markers(&s->cinfo, JPEG_APP0 + 2, 0xFFFF);
  jpeg_read_header(&s->cinfo, TRUE);

  w = (int)s->cinfo.image_width;
  h = (int)s->cinfo.image_height;
  if (!check_dims("cannot decode", path, w, h, &n_px, err, errlen) ||
      !jpeg_size_plausible(&s->cinfo, size, path, err, errlen))
    goto done;
  jpeg_read_meta(&s->cinfo, meta);
  o = meta->orientation;
  comps = s->cinfo.num_components;
  if (comps == 4) {
    /* a CMYK file's profile describes the inks, not the R'G'B' made from them here */
    g_free(meta->icc);
    meta->icc = NULL;
    meta->icc_len = 0;
  }
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
  s->rows = g_try_malloc((size_t)JPEG_BAND * (size_t)w * (size_t)comps);
  if (!s->rows) {
    fail(err, errlen, "out of memory");
    goto done;
  }
  while (s->cinfo.output_scanline < s->cinfo.output_height) {
    size_t y0 = s->cinfo.output_scanline;
    int want = (int)MIN((JDIMENSION)JPEG_BAND, s->cinfo.output_height - s->cinfo.output_scanline);
    int got = 0;
    JSAMPROW rows[JPEG_BAND];
    for (int r = 0; r < want; r++)
      rows[r] = s->rows + (size_t)r * (size_t)w * (size_t)comps;
    while (got < want && !s->guard.truncated) {
      JDIMENSION k = jpeg_read_scanlines(&s->cinfo, rows + got, (JDIMENSION)(want - got));
      if (k == 0)
        break;
      got += (int)k;
    }
    if (got == 0) {
      fail(err, errlen, "cannot decode '%s': truncated JPEG", path);
      goto done;
    }
    jpeg_place_band(out->pixels, s->rows, got, y0, w, h, comps, s->cinfo.saw_Adobe_marker,
                    lut, o);
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
  out->info.width = o >= 5 ? h : w;
  out->info.height = o >= 5 ? w : h;
  out->info.type = I2I_IMG_JPEG;
  out->info.bits = 8;
  out->info.is_gray = comps == 1;
  if (s->guard.n_minor)
    out->info.warnings |= I2I_IMG_WARN_DATA;
  meta->pending = 1;
  ok = true;

done:
  prefault_join(&s->pf, !ok);
  jpeg_destroy_decompress(&s->cinfo);
  g_free(s->rows);
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

/* The orientation of an EXIF chunk and the bytes of an ICCP chunk of an extended (VP8X)
 * WebP into meta; chunks that run past the end stop the walk. */
static void webp_read_meta(const unsigned char *d, size_t n, file_meta *meta)
{
  size_t pos = 12;
  if (n < 30 || memcmp(d + 12, "VP8X", 4) != 0)
    return;
  while (pos + 8 <= n) {
    uint32_t len = rd_u32(d + pos + 4, false);
    const unsigned char *body = d + pos + 8;
    if (len > n - pos - 8)
      return;
    if (memcmp(d + pos, "EXIF", 4) == 0 && meta->orientation == 1)
      meta->orientation = meta->pending = exif_orientation(body, len);
    else if (memcmp(d + pos, "ICCP", 4) == 0 && !meta->icc && len >= 132 &&
             len <= I2I_IMG_MAX_ICC && (meta->icc = g_try_malloc(len)) != NULL) {
      memcpy(meta->icc, body, len);
      meta->icc_len = len;
    }
    pos += 8 + (size_t)len + (len & 1);
  }
}

static bool load_webp(const char *path, int fd, off_t size, i2i_img *out, file_meta *meta,
                      char *err, size_t errlen)
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
  webp_read_meta(data, (size_t)size, meta);
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
  prefault_join(&pf, !ok);
  g_free(data);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Load entry points */

bool i2i_img_load(const char *path, i2i_img *out, char *err, size_t errlen)
{
  struct stat st;
  i2i_img_type type;
  file_meta meta;
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
  file_meta_init(&meta);
  switch (type) {
  case I2I_IMG_JPEG:
    ok = load_jpeg(path, fd, st.st_size, out, &meta, err, errlen);
    break;
  case I2I_IMG_WEBP:
    ok = load_webp(path, fd, st.st_size, out, &meta, err, errlen);
    break;
  case I2I_IMG_PNG:
    ok = png_scan(fd, st.st_size, path, &meta, err, errlen) &&
         load_png(path, fd, st.st_size, out, err, errlen);
    close(fd);
    break;
  default:
    ok = tiff_scan(fd, st.st_size, path, &meta, err, errlen) &&
         load_tiff(path, fd, st.st_size, out, &meta, err, errlen);
    close(fd);
    break;
  }
  if (ok && meta.pending > 1)
    ok = orient_image(&out->pixels, &out->info.width, &out->info.height, meta.pending, path,
                      err, errlen);
  if (ok) {
    out->info.orientation = meta.orientation;
    if (icc_suits(meta.icc, meta.icc_len, out->info.is_gray)) {
      out->info.icc = meta.icc;
      out->info.icc_len = meta.icc_len;
      meta.icc = NULL;
    }
  }
  g_free(meta.icc);
  if (!ok) {
    g_free(out->pixels);
    g_free(out->info.icc);
    memset(out, 0, sizeof *out);
  }
  return ok;
}

void i2i_img_free(i2i_img *img)
{
  if (!img)
    return;
  g_free(img->pixels);
  g_free(img->info.icc);
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
  o->png_compression = 0;
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
  o->icc = src->icc;
  o->icc_len = src->icc_len;
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
/* Saving PNG with libpng */

/* The temporary's descriptor as a stdio stream, which then owns it (NULL with a message). */
static FILE *save_stream(i2i_atomic_file *af, const char *dest, char *err, size_t errlen)
{
  FILE *fp = fdopen(af->fd, "wb");
  if (!fp)
    fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
  else
    af->fd = -1;
  return fp;
}

/* Closes a save's stream; a failed close (data not written) fails a save that had not. */
static bool save_stream_close(FILE *fp, bool ok, const char *dest, char *err, size_t errlen)
{
  if (fclose(fp) != 0 && ok)
    return fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
  return ok;
}

/* State that must survive libpng's longjmp lives here, not in locals. */
typedef struct {
  png_structp png;
  png_infop info;
  FILE *fp;
  unsigned char *row;
  char msg[256];        /* libpng's error */
} png_save_state;

static void png_save_error(png_structp png, png_const_charp msg)
{
  png_save_state *s = png_get_error_ptr(png);
  snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "error");
  png_longjmp(png, 1);
}

static void png_save_warning(png_structp png, png_const_charp msg)
{
  (void)png;
  (void)msg;
}

/* Writes a row at a time (the memory a save takes is one row, whatever the image's size);
 * 16-bit samples are big-endian in the file. A profile libpng finds fault with is left out
 * (its complaints are benign warnings), never a failed save. */
static bool save_png(const char *dest, i2i_atomic_file *af, const float *px, int w, int h,
                     const i2i_img_save_opts *o, char *err, size_t errlen)
{
  static const int color_type[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                    PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGBA};
  int channels = (o->gray ? 1 : 3) + (o->alpha ? 1 : 0);
  sample_kind kind = o->bits == 16 ? SAMPLE_U16 : SAMPLE_U8;
  size_t row_bytes = (size_t)w * (size_t)channels * (kind == SAMPLE_U16 ? 2 : 1);
  png_save_state *s = g_try_new0(png_save_state, 1);
  volatile bool ok = false;

  if (!s)
    return fail(err, errlen, "out of memory");
  s->fp = save_stream(af, dest, err, errlen);
  if (!s->fp) {
    g_free(s);
    return false;
  }
  s->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, s, png_save_error, png_save_warning);
  s->info = s->png ? png_create_info_struct(s->png) : NULL;
  s->row = g_try_malloc(row_bytes);
  if (!s->png || !s->info || !s->row) {
    fail(err, errlen, "out of memory");
    goto done;
  }
  if (setjmp(png_jmpbuf(s->png))) {
    fail(err, errlen, "cannot write '%s': the PNG encoder failed (%s)", dest, s->msg);
    goto done;
  }
  png_init_io(s->png, s->fp);
  png_set_benign_errors(s->png, 1);
  if (o->png_compression) {
    png_set_compression_level(s->png, o->png_compression);
  } else {
    /* zlib's run-length strategy, which zlib made for PNG data: against level 3 (the default
     * before) twice as fast and 5-14% smaller on photos, smaller on screenshots too; 16-bit
     * files twice as fast and 1-10% larger (bench/NOTES.md) */
    png_set_compression_level(s->png, 1);
    png_set_compression_strategy(s->png, Z_RLE);
  }
  png_set_IHDR(s->png, s->info, (png_uint_32)w, (png_uint_32)h, kind == SAMPLE_U16 ? 16 : 8,
               color_type[channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (icc_suits(o->icc, o->icc_len, o->gray))
    png_set_iCCP(s->png, s->info, "ICC profile", PNG_COMPRESSION_TYPE_BASE, o->icc,
                 (png_uint_32)o->icc_len);
  png_write_info(s->png, s->info);
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  if (kind == SAMPLE_U16)
    png_set_swap(s->png);
#endif
  for (int y = 0; y < h; y++) {
    pack(px + (size_t)y * (size_t)w * 4, (size_t)w, channels, kind, s->row);
    png_write_row(s->png, s->row);
  }
  png_write_end(s->png, NULL);
  if (fflush(s->fp) != 0 || ferror(s->fp)) {
    fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
    goto done;
  }
  ok = true;

done:
  png_destroy_write_struct(&s->png, &s->info);
  ok = save_stream_close(s->fp, ok, dest, err, errlen);
  g_free(s->row);
  g_free(s);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Saving TIFF with libtiff */

/* Writes an uncompressed TIFF (BigTIFF past 4 GB) a row at a time: 8 or 16-bit unsigned or
 * 32-bit float samples, Y' or R'G'B' with unassociated alpha, upright, the profile in its
 * tag. libtiff reports to this call's own handlers (tiff_io's message). */
static bool save_tiff(const char *dest, i2i_atomic_file *af, const float *px, int w, int h,
                      size_t n_px, const i2i_img_save_opts *o, char *err, size_t errlen)
{
  int channels = (o->gray ? 1 : 3) + (o->alpha ? 1 : 0);
  sample_kind kind = o->is_float ? SAMPLE_F32 : o->bits == 16 ? SAMPLE_U16 : SAMPLE_U8;
  unsigned sample = kind == SAMPLE_U8 ? 1 : kind == SAMPLE_U16 ? 2 : 4;
  size_t row_bytes = (size_t)w * (size_t)channels * sample;
  uint64_t raw = (uint64_t)n_px * (uint64_t)channels * sample;
  tiff_io io = {0};
  TIFFOpenOptions *opts;
  unsigned char *row;
  TIFF *tif;
  bool ok = true;

  io.fd = -1;
  io.name = af->tmp_path;
  row = g_try_malloc(row_bytes);
  opts = TIFFOpenOptionsAlloc();
  if (!row || !opts) {
    g_free(row);
    if (opts)
      TIFFOpenOptionsFree(opts);
    return fail(err, errlen, "out of memory");
  }
  TIFFOpenOptionsSetErrorHandlerExtR(opts, tiff_io_error, &io);
  TIFFOpenOptionsSetWarningHandlerExtR(opts, tiff_io_warning, &io);
  /* classic TIFF's offsets are 32-bit: leave room for the tags past the samples */
  tif = TIFFFdOpenExt(af->fd, af->tmp_path, raw > 0xFF000000u ? "w8" : "w", opts);
  TIFFOpenOptionsFree(opts);
  if (!tif) {
    g_free(row);
    return fail(err, errlen, "cannot write '%s': %s", dest, io.msg[0] ? io.msg : "libtiff failed");
  }
  af->fd = -1; /* TIFFClose closes it */
  TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, (uint32_t)w);
  TIFFSetField(tif, TIFFTAG_IMAGELENGTH, (uint32_t)h);
  TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, (uint16_t)(8 * sample));
  TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, (uint16_t)channels);
  TIFFSetField(tif, TIFFTAG_SAMPLEFORMAT, kind == SAMPLE_F32 ? SAMPLEFORMAT_IEEEFP : SAMPLEFORMAT_UINT);
  TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, o->gray ? PHOTOMETRIC_MINISBLACK : PHOTOMETRIC_RGB);
  TIFFSetField(tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  TIFFSetField(tif, TIFFTAG_COMPRESSION, COMPRESSION_NONE);
  TIFFSetField(tif, TIFFTAG_ORIENTATION, ORIENTATION_TOPLEFT);
  TIFFSetField(tif, TIFFTAG_ROWSPERSTRIP, TIFFDefaultStripSize(tif, 0));
  if (o->alpha) {
    uint16_t extra[1] = {EXTRASAMPLE_UNASSALPHA};
    TIFFSetField(tif, TIFFTAG_EXTRASAMPLES, (uint16_t)1, extra);
  }
  if (icc_suits(o->icc, o->icc_len, o->gray))
    TIFFSetField(tif, TIFFTAG_ICCPROFILE, (uint32_t)o->icc_len, o->icc);
  for (int y = 0; y < h && ok; y++) {
    pack(px + (size_t)y * (size_t)w * 4, (size_t)w, channels, kind, row);
    ok = TIFFWriteScanline(tif, row, (uint32_t)y, 0) == 1;
  }
  if (ok)
    ok = TIFFFlush(tif) == 1;
  TIFFClose(tif);
  g_free(row);
  if (!ok || io.n_errors)
    return fail(err, errlen, "cannot write '%s': %s", dest,
                io.msg[0] ? io.msg : "the TIFF encoder failed (disk full?)");
  return true;
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
  s->fp = save_stream(af, dest, err, errlen);
  if (!s->fp) {
    g_free(s);
    return false;
  }
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
  /* APP2 markers carry at most 255 pieces of 65519 bytes */
  if (icc_suits(o->icc, o->icc_len, comps == 1) && o->icc_len <= 255u * 65519u)
    jpeg_write_icc_profile(&s->cinfo, o->icc, (unsigned)o->icc_len);
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
  ok = save_stream_close(s->fp, ok, dest, err, errlen);
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

/* Writes the simple-format WebP the encoder made (`d`, n bytes: RIFF, then VP8, VP8L, or VP8X
 * with ALPH and VP8) as an extended one with an ICCP chunk: a VP8X header (made, or the
 * encoder's with the ICC flag set) comes first and the ICCP chunk right after it, as the
 * container specification orders them. */
static bool webp_write_with_icc(FILE *fp, const uint8_t *d, size_t n, const unsigned char *icc,
                                size_t icc_len, int w, int h, const char *dest, char *err,
                                size_t errlen)
{
  unsigned char riff[12], vp8x[18], iccp[8];
  size_t from, total;
  if (n < 21 || memcmp(d, "RIFF", 4) != 0 || memcmp(d + 8, "WEBP", 4) != 0)
    return fail(err, errlen, "cannot write '%s': unexpected WebP encoder output", dest);
  if (memcmp(d + 12, "VP8X", 4) == 0 && n >= 30) {
    memcpy(vp8x, d + 12, 18);
    vp8x[8] |= 0x20;
    from = 30;
  } else {
    /* VP8L says in its header whether alpha is used (bit 28 after the 0x2f signature) */
    bool alpha = memcmp(d + 12, "VP8L", 4) == 0 && n >= 25 && d[20] == 0x2f &&
                 (rd_u32(d + 21, false) >> 28 & 1);
    memcpy(vp8x, "VP8X", 4);
    wr_u32(vp8x + 4, 10, false);
    memset(vp8x + 8, 0, 10);
    vp8x[8] = (unsigned char)(0x20 | (alpha ? 0x10 : 0));
    for (int i = 0; i < 3; i++) {
      vp8x[12 + i] = (unsigned char)((unsigned)(w - 1) >> (8 * i));
      vp8x[15 + i] = (unsigned char)((unsigned)(h - 1) >> (8 * i));
    }
    from = 12;
  }
  total = 4 + sizeof vp8x + sizeof iccp + icc_len + (icc_len & 1) + (n - from);
  if (total > UINT32_MAX - 8)
    return fail(err, errlen, "cannot write '%s': WebP file too big with its ICC profile", dest);
  memcpy(riff, "RIFF", 4);
  wr_u32(riff + 4, (uint32_t)total, false);
  memcpy(riff + 8, "WEBP", 4);
  memcpy(iccp, "ICCP", 4);
  wr_u32(iccp + 4, (uint32_t)icc_len, false);
  if (fwrite(riff, 1, sizeof riff, fp) != sizeof riff ||
      fwrite(vp8x, 1, sizeof vp8x, fp) != sizeof vp8x ||
      fwrite(iccp, 1, sizeof iccp, fp) != sizeof iccp ||
      fwrite(icc, 1, icc_len, fp) != icc_len ||
      ((icc_len & 1) && fputc(0, fp) == EOF) ||
      fwrite(d + from, 1, n - from, fp) != n - from)
    return fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
  return true;
}

static bool save_webp(const char *dest, i2i_atomic_file *af, const float *px, int w, int h,
                      size_t n_px, const i2i_img_save_opts *o, char *err, size_t errlen)
{
  int channels = o->alpha ? 4 : 3;
  WebPConfig cfg;
  WebPPicture pic;
  WebPMemoryWriter mem;
  uint8_t *packed;
  FILE *fp;
  bool ok = false, with_icc;
  int imported;
  uint64_t need, avail;

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
  /* libwebp encodes from whole-image buffers: with the 8-bit copy a 16 MP lossless save took
   * 25 bytes a pixel at its peak. Refused up front rather than killed halfway for memory. */
  need = (uint64_t)n_px * WEBP_SAVE_BYTES_PER_PX;
  avail = i2i_host_memory_available(1);
  if (need > avail)
    return fail(err, errlen, "cannot write '%s': encoding %d x %d pixels as WebP needs about %llu "
                "MB, %llu MB are available (PNG, TIFF and JPEG are written a row at a time)", dest,
                w, h, (unsigned long long)(need >> 20), (unsigned long long)(avail >> 20));

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
  fp = save_stream(af, dest, err, errlen);
  if (!fp) {
    WebPPictureFree(&pic);
    return false;
  }
  /* with a profile the encoder's output is wrapped before it is written */
  with_icc = icc_suits(o->icc, o->icc_len, false);
  WebPMemoryWriterInit(&mem);
  pic.writer = with_icc ? WebPMemoryWrite : webp_write;
  pic.custom_ptr = with_icc ? (void *)&mem : (void *)fp;
  if (!WebPEncode(&cfg, &pic))
    fail(err, errlen, "cannot write '%s': WebP encoder failed (%s)", dest,
         webp_enc_error(pic.error_code));
  else
    ok = !with_icc || webp_write_with_icc(fp, mem.mem, mem.size, o->icc, o->icc_len, w, h,
                                          dest, err, errlen);
  if (ok && (fflush(fp) != 0 || ferror(fp)))
    ok = fail(err, errlen, "cannot write '%s': %s", dest, strerror(errno));
  WebPMemoryWriterClear(&mem);
  WebPPictureFree(&pic);
  return save_stream_close(fp, ok, dest, err, errlen);
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
  if (o->quality < 1 || o->quality > 100)
    return fail(err, errlen, "cannot write '%s': quality %d is outside 1..100", path,
                o->quality);
  if (o->png_compression < 0 || o->png_compression > 9)
    return fail(err, errlen, "cannot write '%s': PNG compression %d is outside 0..9", path,
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
  if (!i2i_atomic_open(&af, path, err, errlen))
    return false;

  switch (o.type) {
  case I2I_IMG_JPEG:
    ok = save_jpeg(path, &af, pixels, width, height, &o, err, errlen);
    break;
  case I2I_IMG_WEBP:
    ok = save_webp(path, &af, pixels, width, height, n_px, &o, err, errlen);
    break;
  case I2I_IMG_PNG:
    ok = save_png(path, &af, pixels, width, height, &o, err, errlen);
    break;
  default:
    ok = save_tiff(path, &af, pixels, width, height, n_px, &o, err, errlen);
    break;
  }
  if (!ok) {
    i2i_atomic_abort(&af);
    return false;
  }
  return i2i_atomic_commit(&af, err, errlen);
}
