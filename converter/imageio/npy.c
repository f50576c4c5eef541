/* converter/imageio/npy.c: .npy float images <-> float RGBA (see npy.h).
 * A strict recursive-descent parser for the header dict (keys 'descr', 'fortran_order',
 * 'shape' in any order, each once; Python string, bool and int-tuple literals only), checked
 * size arithmetic, and a writer of version 1.0 files. Plain C11 + POSIX, no GLib, so the
 * fuzz target links it alone. It does not parse general Python literals or other dtypes. */
#include "npy.h"

#include "atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_MAX_RANK 32
#define NPY_CHUNK (1u << 20)

static bool fail(char *err, size_t errlen, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

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

static bool host_is_big_endian(void)
{
  const uint16_t one = 1;
  unsigned char b;
  memcpy(&b, &one, 1);
  return b == 0;
}

/* ------------------------------------------------------------------------------------ */
/* Header dict parser */

typedef struct {
  const char *p, *end;
  char *err;
  size_t errlen;
} cursor;

static void skip_ws(cursor *c)
{
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static bool expect(cursor *c, char ch, const char *where)
{
  skip_ws(c);
  if (c->p >= c->end)
    return fail(c->err, c->errlen, "header ends early: expected '%c' %s", ch, where);
  if (*c->p != ch)
    return fail(c->err, c->errlen, "header: expected '%c' %s, found '%c'", ch, where, *c->p);
  c->p++;
  return true;
}

/* A quoted Python string without escapes, copied into out (at most outlen - 1 chars). */
static bool parse_string(cursor *c, char *out, size_t outlen)
{
  char q;
  size_t n = 0;
  skip_ws(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
    return fail(c->err, c->errlen, "header: expected a quoted string");
  q = *c->p++;
  while (c->p < c->end && *c->p != q) {
    if (*c->p == '\\')
      return fail(c->err, c->errlen, "header: escapes in strings are not supported");
    if (n + 1 >= outlen)
      return fail(c->err, c->errlen, "header: string too long");
    out[n++] = *c->p++;
  }
  if (c->p >= c->end)
    return fail(c->err, c->errlen, "header: unterminated string");
  c->p++;
  out[n] = '\0';
  return true;
}

static bool match_word(cursor *c, const char *w)
{
  size_t n = strlen(w);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
    return false;
  /* The word must end there: "Truex" is not True. */
  if ((size_t)(c->end - c->p) > n) {
    char nx = c->p[n];
    if ((nx >= 'a' && nx <= 'z') || (nx >= 'A' && nx <= 'Z') || (nx >= '0' && nx <= '9') ||
        nx == '_')
      return false;
  }
  c->p += n;
  return true;
}

static bool parse_bool(cursor *c, bool *v)
{
  skip_ws(c);
  if (match_word(c, "True"))
    *v = true;
  else if (match_word(c, "False"))
    *v = false;
  else
    return fail(c->err, c->errlen, "header: 'fortran_order' must be True or False");
  return true;
}

/* A tuple of non-negative decimal ints, "(2, 3, 4)", "(5,)" or "()"; Python 2's "3L" too. */
static bool parse_shape(cursor *c, uint64_t *dims, int *rank)
{
  int n = 0;
  if (!expect(c, '(', "to open 'shape'"))
    return false;
  for (;;) {
    uint64_t v = 0;
    int digits = 0;
    skip_ws(c);
    if (c->p < c->end && *c->p == ')') {
      c->p++;
      break;
    }
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
      if (v > (UINT64_C(1) << 40))
        return fail(c->err, c->errlen, "header: a 'shape' value is too large");
      v = v * 10 + (uint64_t)(*c->p - '0');
      c->p++;
      digits++;
    }
    if (digits == 0)
      return fail(c->err, c->errlen, "header: 'shape' must hold non-negative integers");
    if (c->p < c->end && *c->p == 'L')
      c->p++;
    if (n >= NPY_MAX_RANK)
      return fail(c->err, c->errlen, "header: 'shape' has more than %d dimensions",
                  NPY_MAX_RANK);
    dims[n++] = v;
    skip_ws(c);
    if (c->p < c->end && *c->p == ',') {
      c->p++;
      continue;
    }
    if (!expect(c, ')', "to close 'shape'"))
      return false;
    break;
  }
  *rank = n;
  return true;
}

static void format_shape(char *buf, size_t len, const uint64_t *dims, int rank)
{
  size_t used = 0;
  used += (size_t)snprintf(buf, len, "(");
  for (int i = 0; i < rank && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%llu", i ? ", " : "",
                             (unsigned long long)dims[i]);
  if (used < len)
    snprintf(buf + used, len - used, rank == 1 ? ",)" : ")");
}

bool i2i_npy_parse_header(const void *buf, size_t len, i2i_npy_header *h, char *err,
                          size_t errlen)
{
  const unsigned char *b = buf;
  size_t prefix, hlen;
  char descr[16] = "";
  bool have_descr = false, have_fortran = false, have_shape = false, fortran = false;
  uint64_t dims[NPY_MAX_RANK];
  int rank = 0;
  cursor c;

  memset(h, 0, sizeof *h);
  if (!buf || len < NPY_MAGIC_LEN + 2 || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
    return fail(err, errlen, "not a .npy file (bad magic)");
  h->major = b[6];
  h->minor = b[7];
  if (h->minor != 0 || h->major < 1 || h->major > 3)
    return fail(err, errlen, "unsupported .npy version %d.%d (need 1.0, 2.0 or 3.0)",
                h->major, h->minor);
  if (h->major == 1) {
    if (len < 10)
      return fail(err, errlen, ".npy file ends inside its header length");
    hlen = (size_t)b[8] | (size_t)b[9] << 8;
    prefix = 10;
  } else {
    if (len < 12)
      return fail(err, errlen, ".npy file ends inside its header length");
    hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    prefix = 12;
  }
  if (hlen > I2I_NPY_MAX_HEADER)
    return fail(err, errlen, ".npy header length %zu exceeds the %d-byte limit", hlen,
                I2I_NPY_MAX_HEADER);
  if (hlen > len - prefix)
    return fail(err, errlen, ".npy header length %zu runs past the end of the data (%zu bytes)",
                hlen, len);
  for (size_t i = 0; i < hlen; i++) {
    unsigned char ch = b[prefix + i];
    if (ch >= 0x80 || (ch < 0x20 && ch != '\n' && ch != '\r' && ch != '\t'))
      return fail(err, errlen, ".npy header has a non-ASCII or control byte at offset %zu",
                  prefix + i);
  }

  c.p = (const char *)b + prefix;
  c.end = c.p + hlen;
  c.err = err;
  c.errlen = errlen;
  if (!expect(&c, '{', "at the start of the header dict"))
    return false;
  for (;;) {
    char key[32];
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}') {
      c.p++;
      break;
    }
    if (!parse_string(&c, key, sizeof key))
      return false;
    if (!expect(&c, ':', "after a key"))
      return false;
    if (strcmp(key, "descr") == 0) {
      if (have_descr)
        return fail(err, errlen, "header: duplicate key 'descr'");
      if (!parse_string(&c, descr, sizeof descr))
        return false;
      have_descr = true;
    } else if (strcmp(key, "fortran_order") == 0) {
      if (have_fortran)
        return fail(err, errlen, "header: duplicate key 'fortran_order'");
      if (!parse_bool(&c, &fortran))
        return false;
      have_fortran = true;
    } else if (strcmp(key, "shape") == 0) {
      if (have_shape)
        return fail(err, errlen, "header: duplicate key 'shape'");
      if (!parse_shape(&c, dims, &rank))
        return false;
      have_shape = true;
    } else {
      return fail(err, errlen, "header: unexpected key '%s'", key);
    }
    skip_ws(&c);
    if (c.p < c.end && *c.p == ',') {
      c.p++;
      continue;
    }
    if (!expect(&c, '}', "to close the header dict"))
      return false;
    break;
  }
  skip_ws(&c);
  if (c.p != c.end)
    return fail(err, errlen, "header: unexpected text after the dict");
  if (!have_descr)
    return fail(err, errlen, "header lacks the key 'descr'");
  if (!have_fortran)
    return fail(err, errlen, "header lacks the key 'fortran_order'");
  if (!have_shape)
    return fail(err, errlen, "header lacks the key 'shape'");

  if (strcmp(descr, "<f4") == 0 || strcmp(descr, ">f4") == 0) {
    h->itemsize = 4;
  } else if (strcmp(descr, "<f8") == 0 || strcmp(descr, ">f8") == 0) {
    h->itemsize = 8;
  } else {
    return fail(err, errlen, "unsupported dtype '%s': need float32 ('<f4'); '>f4', '<f8' and "
                "'>f8' are converted", descr);
  }
  h->big_endian = descr[0] == '>';
  if (fortran)
    return fail(err, errlen, "Fortran-order arrays are not supported (save a C-order array, "
                "e.g. numpy.ascontiguousarray)");
  if (rank != 3 || (dims[2] != 3 && dims[2] != 4)) {
    char s[128];
    format_shape(s, sizeof s, dims, rank);
    return fail(err, errlen, "shape %s is not (height, width, 3) or (height, width, 4)", s);
  }
  if (dims[0] == 0 || dims[1] == 0)
    return fail(err, errlen, "empty array: shape (%llu, %llu, %llu)",
                (unsigned long long)dims[0], (unsigned long long)dims[1],
                (unsigned long long)dims[2]);
  if (dims[0] > I2I_NPY_MAX_SIDE || dims[1] > I2I_NPY_MAX_SIDE)
    return fail(err, errlen, "array of %llu x %llu pixels exceeds the %d-per-side limit",
                (unsigned long long)dims[0], (unsigned long long)dims[1], I2I_NPY_MAX_SIDE);
  if (dims[0] * dims[1] > I2I_NPY_MAX_PIXELS)
    return fail(err, errlen, "array of %llu x %llu pixels exceeds the %u-pixel limit",
                (unsigned long long)dims[0], (unsigned long long)dims[1], I2I_NPY_MAX_PIXELS);
  h->height = (int)dims[0];
  h->width = (int)dims[1];
  h->channels = (int)dims[2];
  /* Bounded above: 2^29 pixels * 4 channels * 8 bytes = 2^34, fits in 64-bit size_t. */
  {
    uint64_t bytes = dims[0] * dims[1] * dims[2] * (uint64_t)h->itemsize;
    if (bytes > (uint64_t)SIZE_MAX)
      return fail(err, errlen, "array too large for this machine");
    h->data_bytes = (size_t)bytes;
  }
  h->data_offset = prefix + hlen;
  return true;
}

/* ------------------------------------------------------------------------------------ */
/* Data conversion */

static float read_item(const unsigned char *s, const i2i_npy_header *h, bool swap)
{
  if (h->itemsize == 4) {
    unsigned char t[4];
    float f;
    if (swap) {
      t[0] = s[3], t[1] = s[2], t[2] = s[1], t[3] = s[0];
      memcpy(&f, t, 4);
    } else {
      memcpy(&f, s, 4);
    }
    return f;
  } else {
    unsigned char t[8];
    double d;
    if (swap) {
      for (int i = 0; i < 8; i++)
        t[i] = s[7 - i];
      memcpy(&d, t, 8);
    } else {
      memcpy(&d, s, 8);
    }
    return (float)d;
  }
}

/* Converts n_px pixels of file data into RGBA floats. */
static void convert_pixels(const unsigned char *src, size_t n_px, const i2i_npy_header *h,
                           float *dst)
{
  bool swap = h->big_endian != host_is_big_endian();
  size_t step = (size_t)h->itemsize;
  if (h->itemsize == 4 && !swap && h->channels == 4) {
    memcpy(dst, src, n_px * 16);
    return;
  }
  for (size_t i = 0; i < n_px; i++, dst += 4) {
    dst[0] = read_item(src, h, swap);
    dst[1] = read_item(src + step, h, swap);
    dst[2] = read_item(src + 2 * step, h, swap);
    if (h->channels == 4) {
      dst[3] = read_item(src + 3 * step, h, swap);
      src += 4 * step;
    } else {
      dst[3] = 1.0f;
      src += 3 * step;
    }
  }
}

static float *alloc_rgba(const i2i_npy_header *h, char *err, size_t errlen)
{
  size_t n_px = (size_t)h->height * (size_t)h->width;
  float *p;
  if (n_px > SIZE_MAX / (4 * sizeof(float))) {
    fail(err, errlen, "array too large for this machine");
    return NULL;
  }
  p = malloc(n_px * 4 * sizeof(float));
  if (!p)
    fail(err, errlen, "out of memory: %d x %d pixels need %zu MB as float RGBA", h->height,
         h->width, (n_px * 4 * sizeof(float)) >> 20);
  return p;
}

static bool check_data_length(const i2i_npy_header *h, size_t have, char *err, size_t errlen)
{
  if (have < h->data_bytes)
    return fail(err, errlen, "truncated: shape (%d, %d, %d) needs %zu bytes of data, only %zu "
                "present", h->height, h->width, h->channels, h->data_bytes, have);
  if (have > h->data_bytes)
    return fail(err, errlen, "%zu unexpected bytes after the array data",
                have - h->data_bytes);
  return true;
}

bool i2i_npy_decode(const void *buf, size_t len, i2i_npy_image *out, char *err,
                    size_t errlen)
{
  i2i_npy_header h;
  if (!out)
    return fail(err, errlen, "internal error: no output");
  memset(out, 0, sizeof *out);
  if (!i2i_npy_parse_header(buf, len, &h, err, errlen))
    return false;
  if (!check_data_length(&h, len - h.data_offset, err, errlen))
    return false;
  out->rgba = alloc_rgba(&h, err, errlen);
  if (!out->rgba)
    return false;
  convert_pixels((const unsigned char *)buf + h.data_offset,
                 (size_t)h.height * (size_t)h.width, &h, out->rgba);
  out->height = h.height;
  out->width = h.width;
  out->channels = h.channels;
  return true;
}

void i2i_npy_free(i2i_npy_image *img)
{
  if (!img)
    return;
  free(img->rgba);
  memset(img, 0, sizeof *img);
}

/* ------------------------------------------------------------------------------------ */
/* Files */

static bool read_exact(int fd, unsigned char *dst, size_t n, off_t off)
{
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, dst + got, n - got, off + (off_t)got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return false;
    got += (size_t)r;
  }
  return true;
}

bool i2i_npy_load(const char *path, i2i_npy_image *out, char *err, size_t errlen)
{
  char msg[384];
  unsigned char *head = NULL, *chunk = NULL;
  i2i_npy_header h;
  struct stat st;
  size_t head_len, fsize, px_bytes, px_per_chunk, n_px, done_px = 0;
  bool ok = false;
  int fd;

  if (!out)
    return fail(err, errlen, "internal error: no output");
  memset(out, 0, sizeof *out);
  if (!path || !*path)
    return fail(err, errlen, "no input file name given");
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return fail(err, errlen, "'%s': no such file", path);
    return fail(err, errlen, "'%s': cannot open (%s)", path, strerror(errno));
  }
  if (fstat(fd, &st) != 0) {
    fail(err, errlen, "'%s': cannot stat (%s)", path, strerror(errno));
    goto done;
  }
  if (S_ISDIR(st.st_mode)) {
    fail(err, errlen, "'%s' is a folder, not a .npy file", path);
    goto done;
  }
  if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
    fail(err, errlen, "'%s' is not a regular file", path);
    goto done;
  }
  fsize = (size_t)st.st_size;
  if (fsize == 0) {
    fail(err, errlen, "'%s' is empty (0 bytes)", path);
    goto done;
  }
  head_len = fsize < I2I_NPY_MAX_HEADER + 12 ? fsize : I2I_NPY_MAX_HEADER + 12;
  head = malloc(head_len);
  if (!head) {
    fail(err, errlen, "out of memory");
    goto done;
  }
  if (!read_exact(fd, head, head_len, 0)) {
    fail(err, errlen, "'%s': read error", path);
    goto done;
  }
  if (!i2i_npy_parse_header(head, head_len, &h, msg, sizeof msg)) {
    fail(err, errlen, "'%s': %s", path, msg);
    goto done;
  }
  if (!check_data_length(&h, fsize - h.data_offset, msg, sizeof msg)) {
    fail(err, errlen, "'%s': %s", path, msg);
    goto done;
  }
  out->rgba = alloc_rgba(&h, msg, sizeof msg);
  if (!out->rgba) {
    fail(err, errlen, "'%s': %s", path, msg);
    goto done;
  }
  px_bytes = (size_t)h.channels * (size_t)h.itemsize;
  px_per_chunk = NPY_CHUNK / px_bytes;
  n_px = (size_t)h.height * (size_t)h.width;
  chunk = malloc(px_per_chunk * px_bytes);
  if (!chunk) {
    fail(err, errlen, "out of memory");
    goto done;
  }
  while (done_px < n_px) {
    size_t k = n_px - done_px < px_per_chunk ? n_px - done_px : px_per_chunk;
    off_t off = (off_t)(h.data_offset + done_px * px_bytes);
    if (!read_exact(fd, chunk, k * px_bytes, off)) {
      fail(err, errlen, "'%s': read error or file shrank while reading", path);
      goto done;
    }
    convert_pixels(chunk, k, &h, out->rgba + done_px * 4);
    done_px += k;
  }
  out->height = h.height;
  out->width = h.width;
  out->channels = h.channels;
  ok = true;

done:
  close(fd);
  free(head);
  free(chunk);
  if (!ok)
    i2i_npy_free(out);
  return ok;
}

bool i2i_npy_save(const char *path, const float *rgba, int height, int width, int channels,
                  char *err, size_t errlen)
{
  char header[256];
  int dict_len, total;
  size_t n_px, buf_px = NPY_CHUNK / 16;
  float *buf = NULL;
  i2i_atomic_file af;
  FILE *fp;
  bool ok = false, swap = host_is_big_endian();

  if (!path || !*path)
    return fail(err, errlen, "no output file name given");
  if (!rgba)
    return fail(err, errlen, "cannot write '%s': no pixels", path);
  if (channels != 3 && channels != 4)
    return fail(err, errlen, "cannot write '%s': channels must be 3 or 4, not %d", path,
                channels);
  if (height <= 0 || width <= 0 || height > I2I_NPY_MAX_SIDE || width > I2I_NPY_MAX_SIDE ||
      (uint64_t)height * (uint64_t)width > I2I_NPY_MAX_PIXELS)
    return fail(err, errlen, "cannot write '%s': bad size %d x %d", path, width, height);
  n_px = (size_t)height * (size_t)width;

  /* numpy's own layout: dict, spaces, '\n', with magic + length + header a multiple of 64. */
  dict_len = snprintf(header, sizeof header,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d, %d), }",
                      height, width, channels);
  if (dict_len < 0 || (size_t)dict_len + 64 >= sizeof header)
    return fail(err, errlen, "internal error: header too long");
  total = ((10 + dict_len + 1 + 63) / 64) * 64;
  memset(header + dict_len, ' ', (size_t)(total - 10 - dict_len - 1));
  header[total - 10 - 1] = '\n';

  buf = malloc(buf_px * 4 * sizeof(float));
  if (!buf)
    return fail(err, errlen, "out of memory");
  if (!i2i_atomic_open(&af, path, err, errlen)) {
    free(buf);
    return false;
  }
  fp = fdopen(af.fd, "wb");
  if (!fp) {
    fail(err, errlen, "cannot write '%s': %s", path, strerror(errno));
    i2i_atomic_abort(&af);
    free(buf);
    return false;
  }
  af.fd = -1;
  {
    unsigned char pre[10];
    size_t hl = (size_t)(total - 10);
    memcpy(pre, NPY_MAGIC, NPY_MAGIC_LEN);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(hl & 0xFF);
    pre[9] = (unsigned char)(hl >> 8);
    if (fwrite(pre, 1, 10, fp) != 10 || fwrite(header, 1, hl, fp) != hl)
      goto write_error;
  }
  for (size_t done = 0; done < n_px;) {
    size_t k = n_px - done < buf_px ? n_px - done : buf_px, n = 0;
    const float *s = rgba + done * 4;
    for (size_t i = 0; i < k; i++, s += 4)
      for (int ch = 0; ch < channels; ch++)
        buf[n++] = s[ch];
    if (swap) {
      for (size_t i = 0; i < n; i++) {
        unsigned char t[4], u[4];
        memcpy(t, &buf[i], 4);
        u[0] = t[3], u[1] = t[2], u[2] = t[1], u[3] = t[0];
        memcpy(&buf[i], u, 4);
      }
    }
    if (fwrite(buf, sizeof(float), n, fp) != n)
      goto write_error;
    done += k;
  }
  if (fflush(fp) != 0 || ferror(fp))
    goto write_error;
  if (fclose(fp) != 0) {
    fp = NULL;
    goto write_error;
  }
  fp = NULL;
  ok = i2i_atomic_commit(&af, err, errlen);
  free(buf);
  return ok;

write_error:
  fail(err, errlen, "cannot write '%s': %s", path, strerror(errno ? errno : EIO));
  if (fp)
    fclose(fp);
  i2i_atomic_abort(&af);
  free(buf);
  return false;
}
