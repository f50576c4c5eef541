/* pth.c: loads a PyTorch checkpoint (.pth) into validated, contiguous float32/int64 tensors.
 *
 * Picks the container by the first bytes (zip, or the legacy five-pickle stream), runs the
 * restricted pickle VM, resolves persistent ids to storage records, selects the state dict, checks
 * it strictly against the allowlist, validates every tensor against its storage and converts it.
 * It does not map keys onto a network (the converter's key maps do) and never executes anything
 * from the file; unknown objects elsewhere (meta, message_hub) stay inert and are reported.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pth.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .pth reader returns tensors in place and assumes a little-endian host"
#endif

/* ------------------------------------------------------------------------------------------- */
/* Shared helpers */

const char *pth_status_name(pth_status s) {
  switch (s) {
  case PTH_OK: return "PTH_OK";
  case PTH_E_ARG: return "PTH_E_ARG";
  case PTH_E_IO: return "PTH_E_IO";
  case PTH_E_FORMAT: return "PTH_E_FORMAT";
  case PTH_E_UNSUPPORTED: return "PTH_E_UNSUPPORTED";
  case PTH_E_UNSAFE: return "PTH_E_UNSAFE";
  case PTH_E_LIMIT: return "PTH_E_LIMIT";
  case PTH_E_NOMEM: return "PTH_E_NOMEM";
  case PTH_E_NOT_FOUND: return "PTH_E_NOT_FOUND";
  }
  return "PTH_E_?";
}

i2i_status pth_status_to_i2i(pth_status s) {
  switch (s) {
  case PTH_OK: return I2I_OK;
  case PTH_E_ARG: return I2I_E_ARG;
  case PTH_E_IO: return I2I_E_IO;
  case PTH_E_FORMAT: case PTH_E_UNSAFE: case PTH_E_NOT_FOUND: return I2I_E_FORMAT;
  case PTH_E_UNSUPPORTED: return I2I_E_UNSUPPORTED;
  case PTH_E_LIMIT: return I2I_E_LIMIT;
  case PTH_E_NOMEM: return I2I_E_NOMEM;
  }
  return I2I_E_INTERNAL;
}

static const pth_limits default_limits = {
    .max_file_bytes = (uint64_t)16 << 30,
    .max_zip_entries = 1000000,
    .max_name_len = 4096,
    .max_ops = (uint64_t)1 << 27,
    .max_objects = (uint64_t)1 << 22,
    .max_memo = 1u << 20,
    .max_stack = 1u << 20,
    .max_marks = 1000,
    .max_depth = 100,
    .max_globals = 4096,
    .max_tensors = 1000000,
};

void pth_default_options(pth_options *o) {
  if (!o) return;
  memset(o, 0, sizeof *o);
  o->limits = default_limits;
}

pth_status pth_options_resolve(const pth_options *in, pth_options *out) {
  if (in) *out = *in;
  else pth_default_options(out);
  if (!out->allocator.alloc != !out->allocator.free) return PTH_E_ARG;
  pth_limits *l = &out->limits;
#define DEF(f) if (!l->f) l->f = default_limits.f
  DEF(max_file_bytes); DEF(max_zip_entries); DEF(max_name_len); DEF(max_ops); DEF(max_objects);
  DEF(max_memo); DEF(max_stack); DEF(max_marks); DEF(max_depth); DEF(max_globals); DEF(max_tensors);
#undef DEF
  return PTH_OK;
}

pth_status pth_errf(pth_status s, char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return s;
}

/* Length of the valid UTF-8 sequence at p[0..n) and its code point, or 0 when it is not one
 * (overlong forms, surrogates and code points above U+10FFFF are not). */
static size_t utf8_seq(const unsigned char *p, size_t n, uint32_t *cp) {
  unsigned char b = p[0];
  size_t len;
  uint32_t c, lo = 0x80, hi = 0xbf;
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  if (b >= 0xc2 && b <= 0xdf) {
    len = 2;
    c = b & 0x1f;
  } else if (b >= 0xe0 && b <= 0xef) {
    len = 3;
    c = b & 0x0f;
    if (b == 0xe0) lo = 0xa0;
    if (b == 0xed) hi = 0x9f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    len = 4;
    c = b & 0x07;
    if (b == 0xf0) lo = 0x90;
    if (b == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (n < len || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    c = (c << 6) | (p[i] & 0x3f);
  }
  *cp = c;
  return len;
}

/* Code points that would act on a terminal or reorder the text around them. */
static int is_control(uint32_t c) {
  return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x61c || c == 0x200e || c == 0x200f || c == 0x2028 ||
         c == 0x2029 || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

const char *pth_shown(const char *s, size_t len, char *buf, size_t buflen) {
  static const char hex[] = "0123456789abcdef";
  if (!buf || !buflen) return "";
  const unsigned char *p = (const unsigned char *)s;
  if (!p) len = 0;
  size_t o = 0, cut = 0, room = buflen - 1;
  for (size_t i = 0; i < len;) {
    if (o + 3 <= room) cut = o; /* where "..." would still fit */
    uint32_t cp = 0;
    size_t n = utf8_seq(p + i, len - i, &cp);
    int esc = !n || is_control(cp);
    if (!n) n = 1;
    size_t need = esc ? 4 * n : n;
    if (need > room - o) {
      if (room < 3) {
        o = 0;
      } else {
        memcpy(buf + cut, "...", 3);
        o = cut + 3;
      }
      break;
    }
    for (size_t k = 0; k < n; k++) {
      if (esc) {
        buf[o++] = '\\';
        buf[o++] = 'x';
        buf[o++] = hex[p[i + k] >> 4];
        buf[o++] = hex[p[i + k] & 15];
      } else {
        buf[o++] = (char)p[i + k];
      }
    }
    i += n;
  }
  buf[o] = 0;
  return buf;
}

void *pth_alloc(const i2i_allocator *a, size_t size) {
  if (!size) size = 1;
  return a && a->alloc ? a->alloc(a->user, size) : malloc(size);
}

void pth_free(const i2i_allocator *a, void *ptr) {
  if (!ptr) return;
  if (a && a->free) a->free(a->user, ptr);
  else free(ptr);
}

const char *pth_dtype_name(pth_dtype d) {
  static const char *const n[] = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16",
                                  "int8", "uint8", "bool", "complex64", "complex128"};
  return (unsigned)d < PTH_DTYPE_COUNT ? n[d] : "?";
}

size_t pth_dtype_size(pth_dtype d) {
  static const size_t s[] = {4, 8, 2, 2, 8, 4, 2, 1, 1, 1, 8, 16};
  return (unsigned)d < PTH_DTYPE_COUNT ? s[d] : 1;
}

/* ------------------------------------------------------------------------------------------- */
/* The result */

typedef struct pool_str {
  struct pool_str *next;
  char s[];
} pool_str;

typedef struct {
  const char *key;     /* points into the pickle arena */
  size_t key_len;
  pth_dtype dtype;
  uint64_t numel;
  size_t pid_offset;   /* first persistent id naming it, for messages */
  const uint8_t *data; /* record bytes (numel * element size) */
  int found;           /* legacy: seen in the storage list */
} storage;

typedef struct {
  int64_t stride[PTH_MAX_RANK]; /* elements */
  const storage *s;
} tensor_extra;

struct pth_file {
  i2i_allocator alloc;
  pth_info info;
  pth_pickle *pk;
  void *map;           /* mmap of pth_load_file, or NULL */
  size_t map_len;
  int map_written;     /* realign_storages moved bytes inside the mapping */
  void *file_buf;      /* read fallback of pth_load_file, or NULL */
  pool_str *strings;
  storage *storages;   /* sorted by key */
  size_t n_storages;
  pth_tensor *tensors;
  tensor_extra *extra; /* parallel to tensors */
  size_t n_tensors, cap_tensors;
  const pth_tensor **sorted;
  const char **keys;
  pth_global_ref *globals;
  const char **opaque;
  void *block;         /* converted tensor data */
};

static const char *pool_printf(pth_file *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *pool_printf(pth_file *f, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  pool_str *p = pth_alloc(&f->alloc, sizeof *p + (size_t)n + 1);
  if (!p) return NULL;
  va_start(ap, fmt);
  vsnprintf(p->s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  p->next = f->strings;
  f->strings = p;
  return p->s;
}

void pth_file_release_pages(pth_file *f) {
  if (f && f->map && !f->map_written) madvise(f->map, f->map_len, MADV_DONTNEED);
}

void pth_file_free(pth_file *f) {
  if (!f) return;
  i2i_allocator a = f->alloc;
  pth_pickle_free(f->pk);
  if (f->map) munmap(f->map, f->map_len);
  pth_free(&a, f->file_buf);
  for (pool_str *p = f->strings; p;) {
    pool_str *n = p->next;
    pth_free(&a, p);
    p = n;
  }
  pth_free(&a, f->storages);
  pth_free(&a, f->tensors);
  pth_free(&a, f->extra);
  pth_free(&a, (void *)f->sorted);
  pth_free(&a, (void *)f->keys);
  pth_free(&a, f->globals);
  pth_free(&a, (void *)f->opaque);
  pth_free(&a, f->block);
  pth_free(&a, f);
}

const pth_info *pth_file_info(const pth_file *f) { return f ? &f->info : NULL; }
const pth_value *pth_file_root(const pth_file *f) { return f ? pth_pickle_root(f->pk) : NULL; }

const pth_tensor *pth_file_find(const pth_file *f, const char *key) {
  if (!f || !key) return NULL;
  size_t lo = 0, hi = f->n_tensors;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(f->sorted[mid]->key, key);
    if (c == 0) return f->sorted[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------------- */
/* Load context */

typedef struct {
  pth_file *f;
  pth_options opt;
  const uint8_t *d;
  size_t size;
  uint8_t *writable;   /* == d when the bytes may be moved in place (private mapping) */
  char *err;
  size_t errlen;
  char *show;          /* scratch for printable strings in messages */
} loader;

static pth_status nomem(loader *L) { return pth_errf(PTH_E_NOMEM, L->err, L->errlen, "pth: out of memory"); }

/* A bounded display copy of a string from the file, for messages (pth_shown). */
static const char *shown(const char *s, size_t len, char *buf, size_t buflen) { return pth_shown(s, len, buf, buflen); }

static int cmp_storage(const void *a, const void *b) {
  const storage *x = a, *y = b;
  int c = memcmp(x->key, y->key, x->key_len < y->key_len ? x->key_len : y->key_len);
  if (c) return c;
  return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

static storage *find_storage(pth_file *f, const char *key, size_t len) {
  storage probe = {.key = key, .key_len = len};
  return bsearch(&probe, f->storages, f->n_storages, sizeof *f->storages, cmp_storage);
}

/* Builds the storage table from every persistent id of the main pickle. */
static pth_status collect_storages(loader *L, int legacy) {
  pth_file *f = L->f;
  size_t n = pth_pickle_persid_count(f->pk), bytes;
  if (__builtin_mul_overflow(n, sizeof(storage), &bytes)) return nomem(L);
  f->storages = pth_alloc(&f->alloc, bytes);
  if (!f->storages) return nomem(L);
  char b1[128];
  for (size_t i = 0; i < n; i++) {
    const pth_value *p = pth_pickle_persid(f->pk, i);
    const pth_value *t = p->u.persid.pid;
    size_t want = legacy ? 6 : 5;
    if (t->kind != PTH_V_TUPLE || t->u.seq.len != want)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: persistent id at byte %zu is not a %zu-tuple ('storage', type, key, location, numel%s)",
                      p->u.persid.offset, want, legacy ? ", None" : "");
    pth_value *const *it = t->u.seq.items;
    if (it[0]->kind != PTH_V_STR || strcmp(it[0]->u.str.ptr, "storage") || it[0]->u.str.len != 7)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: persistent id at byte %zu does not start with 'storage'", p->u.persid.offset);
    if (it[1]->kind != PTH_V_GLOBAL || it[1]->u.global.sym != PTH_SYM_STORAGE)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: persistent id at byte %zu: storage type is %s%s%s, not a torch.<X>Storage",
                      p->u.persid.offset, it[1]->kind == PTH_V_GLOBAL ? "'" : "",
                      it[1]->kind == PTH_V_GLOBAL ? it[1]->u.global.qualname : pth_value_kind_phrase(it[1]->kind),
                      it[1]->kind == PTH_V_GLOBAL ? "'" : "");
    if (it[2]->kind != PTH_V_STR || it[3]->kind != PTH_V_STR)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: persistent id at byte %zu: key and location must be str", p->u.persid.offset);
    if (it[4]->kind != PTH_V_INT || it[4]->u.i < 0)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: persistent id at byte %zu: numel must be a non-negative int", p->u.persid.offset);
    if (legacy && it[5]->kind != PTH_V_NONE)
      return pth_errf(PTH_E_UNSUPPORTED, L->err, L->errlen, "pth: persistent id at byte %zu has view metadata (pre-0.4 storage views are not supported)",
                      p->u.persid.offset);
    storage *s = &f->storages[i];
    memset(s, 0, sizeof *s);
    s->key = it[2]->u.str.ptr;
    s->key_len = it[2]->u.str.len;
    s->dtype = it[1]->u.global.dtype;
    s->numel = (uint64_t)it[4]->u.i;
    s->pid_offset = p->u.persid.offset;
  }
  qsort(f->storages, n, sizeof *f->storages, cmp_storage);
  size_t u = 0;
  for (size_t i = 0; i < n; i++) {
    if (u && cmp_storage(&f->storages[u - 1], &f->storages[i]) == 0) {
      storage *a = &f->storages[u - 1], *b = &f->storages[i];
      if (a->dtype != b->dtype)
        return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: storage '%s' is referenced as %s and as %s",
                        shown(a->key, a->key_len, b1, sizeof b1), pth_dtype_name(a->dtype), pth_dtype_name(b->dtype));
      if (a->numel != b->numel)
        return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: storage '%s' is referenced with %llu and with %llu elements",
                        shown(a->key, a->key_len, b1, sizeof b1), (unsigned long long)a->numel, (unsigned long long)b->numel);
      continue;
    }
    f->storages[u++] = f->storages[i];
  }
  f->n_storages = u;
  return PTH_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* Containers */

static pth_status load_zip(loader *L) {
  pth_file *f = L->f;
  pth_zip *z = NULL;
  pth_status st = pth_zip_parse(L->d, L->size, &L->opt, &z, L->err, L->errlen);
  if (st) return st;
  char b1[160], b2[160];
  /* data.pkl is found by suffix: the one record "<prefix>/data.pkl" with no '/' in <prefix>. */
  const char *prefix = "";
  char *pbuf = NULL;
  size_t plen = 0;
  char *name = NULL;
  const pth_zip_entry *pkl = NULL;
  for (size_t i = 0; i < pth_zip_count(z); i++) {
    const pth_zip_entry *e = pth_zip_entry_at(z, i);
    size_t n = e->name_len;
    if (n < 10 || memcmp(e->name + n - 9, "/data.pkl", 9) || memchr(e->name, '/', n - 9)) continue;
    if (pkl) {
      st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: zip holds two data.pkl records ('%s' and '%s')",
                    shown(pkl->name, pkl->name_len, b1, sizeof b1), shown(e->name, e->name_len, b2, sizeof b2));
      goto out;
    }
    pkl = e;
  }
  if (!pkl) {
    st = pth_errf(PTH_E_NOT_FOUND, L->err, L->errlen, "pth: zip has no '<folder>/data.pkl' record (not a torch checkpoint)");
    goto out;
  }
  pbuf = pth_alloc(&f->alloc, pkl->name_len - 8);
  if (!pbuf) {
    st = nomem(L);
    goto out;
  }
  plen = pkl->name_len - 9;
  memcpy(pbuf, pkl->name, plen);
  pbuf[plen] = 0;
  prefix = pbuf;
  for (size_t i = 0; i < pth_zip_count(z); i++) {
    const pth_zip_entry *e = pth_zip_entry_at(z, i);
    if (e->name_len <= plen + 1 || memcmp(e->name, prefix, plen) || e->name[plen] != '/') {
      st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: zip entry '%s' lies outside the archive folder '%s/'",
                    shown(e->name, e->name_len, b1, sizeof b1), shown(prefix, plen, b2, sizeof b2));
      goto out;
    }
  }
  {
    size_t need = plen + sizeof "/byteorder";
    name = pth_alloc(&f->alloc, need);
    if (!name) {
      st = nomem(L);
      goto out;
    }
    snprintf(name, need, "%s/byteorder", prefix);
    const pth_zip_entry *bo = pth_zip_find(z, name);
    pth_free(&f->alloc, name);
    name = NULL;
    if (bo && !(bo->size == 6 && !memcmp(L->d + bo->data_offset, "little", 6))) {
      st = pth_errf(PTH_E_UNSUPPORTED, L->err, L->errlen, "pth: checkpoint was written on a big-endian machine (byteorder record)");
      goto out;
    }
  }
  f->info.zip_prefix = pool_printf(f, "%s", prefix);
  if (!f->info.zip_prefix) {
    st = nomem(L);
    goto out;
  }
  size_t used = 0;
  st = pth_pickle_run(L->d + pkl->data_offset, (size_t)pkl->size, &L->opt, &f->pk, &used, L->err, L->errlen);
  if (st) goto out;
  if (used != pkl->size) {
    st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: data.pkl has %llu bytes after its STOP at byte %zu",
                  (unsigned long long)(pkl->size - used), used - 1);
    goto out;
  }
  if ((st = collect_storages(L, 0))) goto out;
  for (size_t i = 0; i < f->n_storages; i++) {
    storage *s = &f->storages[i];
    size_t need;
    if (__builtin_add_overflow(plen, s->key_len, &need) || __builtin_add_overflow(need, sizeof "//data/", &need)) {
      st = nomem(L);
      goto out;
    }
    name = pth_alloc(&f->alloc, need);
    if (!name) {
      st = nomem(L);
      goto out;
    }
    memcpy(name, prefix, plen);
    memcpy(name + plen, "/data/", 6);
    memcpy(name + plen + 6, s->key, s->key_len);
    name[plen + 6 + s->key_len] = 0;
    const pth_zip_entry *e = memchr(s->key, 0, s->key_len) ? NULL : pth_zip_find(z, name);
    pth_free(&f->alloc, name);
    name = NULL;
    if (!e) {
      st = pth_errf(PTH_E_NOT_FOUND, L->err, L->errlen, "pth: storage '%s' has no record '%s/data/%s' in the zip",
                    shown(s->key, s->key_len, b1, sizeof b1), shown(prefix, plen, b2, sizeof b2), b1);
      goto out;
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(s->numel, (uint64_t)pth_dtype_size(s->dtype), &bytes) || bytes != e->size) {
      st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: storage '%s': record '%s' holds %llu bytes, %llu %s elements need %llu%s",
                    shown(s->key, s->key_len, b1, sizeof b1), shown(e->name, e->name_len, b2, sizeof b2),
                    (unsigned long long)e->size, (unsigned long long)s->numel, pth_dtype_name(s->dtype),
                    (unsigned long long)(s->numel * pth_dtype_size(s->dtype)), bytes != s->numel * pth_dtype_size(s->dtype) ? " (overflow)" : "");
      goto out;
    }
    s->data = L->d + e->data_offset;
  }
out:
  pth_free(&f->alloc, pbuf);
  pth_zip_free(z);
  return st;
}

static const uint8_t legacy_magic[14] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

/* Runs one of the small legacy pickles at *pos and advances it. */
static pth_status legacy_pickle(loader *L, size_t *pos, const char *what, pth_pickle **out) {
  size_t used = 0;
  char msg[400];
  pth_status st = pth_pickle_run(L->d + *pos, L->size - *pos, &L->opt, out, &used, msg, sizeof msg);
  if (st) return pth_errf(st, L->err, L->errlen, "pth: legacy %s pickle at byte %zu: %s", what, *pos, msg);
  *pos += used;
  return PTH_OK;
}

static pth_status load_legacy(loader *L) {
  pth_file *f = L->f;
  char b1[160];
  if (L->size < 15 || L->d[14] != '.')
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: legacy magic pickle is not followed by STOP at byte 14");
  size_t pos = 15;
  pth_pickle *pk = NULL;
  pth_status st = legacy_pickle(L, &pos, "protocol-version", &pk);
  if (st) return st;
  const pth_value *v = pth_pickle_root(pk);
  int ok = v->kind == PTH_V_INT && v->u.i == 1001;
  pth_pickle_free(pk);
  if (!ok) return pth_errf(PTH_E_UNSUPPORTED, L->err, L->errlen, "pth: legacy protocol version is not 1001");
  if ((st = legacy_pickle(L, &pos, "sys_info", &pk))) return st;
  v = pth_value_dict_get(pth_pickle_root(pk), "little_endian");
  ok = v && v->kind == PTH_V_BOOL && v->u.i == 1;
  pth_pickle_free(pk);
  if (!ok) return pth_errf(PTH_E_UNSUPPORTED, L->err, L->errlen, "pth: legacy sys_info does not say little_endian=True");
  size_t used = 0;
  st = pth_pickle_run(L->d + pos, L->size - pos, &L->opt, &f->pk, &used, L->err, L->errlen);
  if (st) return st;
  pos += used;
  if ((st = collect_storages(L, 1))) return st;
  if ((st = legacy_pickle(L, &pos, "storage-keys", &pk))) return st;
  const pth_value *keys = pth_pickle_root(pk);
  if (keys->kind != PTH_V_LIST) {
    const char *kind = pth_value_kind_phrase(keys->kind);
    pth_pickle_free(pk);
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: legacy storage-key pickle is %s, not a list", kind);
  }
  for (size_t i = 0; i < keys->u.seq.len && !st; i++) {
    const pth_value *k = keys->u.seq.items[i];
    if (k->kind != PTH_V_STR) {
      st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: legacy storage key #%zu is %s, not a str", i, pth_value_kind_phrase(k->kind));
      break;
    }
    storage *s = find_storage(f, k->u.str.ptr, k->u.str.len);
    if (!s) {
      st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: legacy storage '%s' is listed but no persistent id names it",
                    shown(k->u.str.ptr, k->u.str.len, b1, sizeof b1));
      break;
    }
    if (s->found) {
      st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: legacy storage '%s' is listed twice", shown(k->u.str.ptr, k->u.str.len, b1, sizeof b1));
      break;
    }
    s->found = 1;
    if (L->size - pos < 8) {
      st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: legacy storage '%s': element count at byte %zu is past the end of the file (%zu bytes)",
                    shown(s->key, s->key_len, b1, sizeof b1), pos, L->size);
      break;
    }
    uint64_t count = 0;
    for (int b = 7; b >= 0; b--) count = (count << 8) | L->d[pos + (size_t)b];
    pos += 8;
    if (count != s->numel) {
      st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: legacy storage '%s' has %llu elements in the file, its persistent id says %llu",
                    shown(s->key, s->key_len, b1, sizeof b1), (unsigned long long)count, (unsigned long long)s->numel);
      break;
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(count, (uint64_t)pth_dtype_size(s->dtype), &bytes) || bytes > L->size - pos) {
      st = pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: legacy storage '%s' (%llu %s elements from byte %zu) extends past the end of the file (%zu bytes)",
                    shown(s->key, s->key_len, b1, sizeof b1), (unsigned long long)count, pth_dtype_name(s->dtype), pos, L->size);
      break;
    }
    s->data = L->d + pos;
    pos += (size_t)bytes;
  }
  pth_pickle_free(pk);
  if (st) return st;
  for (size_t i = 0; i < f->n_storages; i++) {
    if (!f->storages[i].found)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: legacy storage '%s' is referenced but missing from the storage list",
                      shown(f->storages[i].key, f->storages[i].key_len, b1, sizeof b1));
  }
  if (pos != L->size)
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: %zu unexpected bytes after the last legacy storage (byte %zu)", L->size - pos, pos);
  f->info.zip_prefix = "";
  return PTH_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* State dict */

static int is_tensor_call(const pth_value *v) {
  if (v->kind != PTH_V_CALL || v->u.call.callee->kind != PTH_V_GLOBAL || v->u.call.opcode != 'R') return 0;
  pth_sym s = v->u.call.callee->u.global.sym;
  return s == PTH_SYM_REBUILD_TENSOR_V2 || s == PTH_SYM_REBUILD_TENSOR || s == PTH_SYM_REBUILD_PARAMETER;
}

/* A global outside the allowlist, or a call of one: what the strict regions refuse. */
static int is_opaque(const pth_value *v) {
  return (v->kind == PTH_V_GLOBAL && v->u.global.sym == PTH_SYM_OTHER) ||
         (v->kind == PTH_V_CALL && v->u.call.root->u.global.sym == PTH_SYM_OTHER);
}

/* `v` as a phrase for messages: its kind with an article and, for a global or a call, the symbol
 * (the VM admits only [A-Za-z0-9_.] in global names) and, outside the allowlist, where the file
 * names and calls it. */
static const char *describe(const pth_value *v, char *buf, size_t buflen) {
  if (v->kind == PTH_V_GLOBAL) {
    snprintf(buf, buflen, "the global '%s' (%s at byte %zu%s)", v->u.global.qualname,
             v->u.global.opcode == 'c' ? "GLOBAL" : "STACK_GLOBAL", v->u.global.offset,
             is_opaque(v) ? ", outside the allowlist" : "");
  } else if (v->kind == PTH_V_CALL) {
    const pth_value *g = v->u.call.root;
    if (is_tensor_call(v))
      snprintf(buf, buflen, "a tensor (%s)", g->u.global.qualname);
    else if (is_opaque(v))
      snprintf(buf, buflen, "an opaque call of '%s' (%s at byte %zu, %s at byte %zu; a global outside the allowlist, never called)",
               g->u.global.qualname, g->u.global.opcode == 'c' ? "GLOBAL" : "STACK_GLOBAL", g->u.global.offset,
               v->u.call.opcode == 'R' ? "REDUCE" : "NEWOBJ", v->u.call.offset);
    else
      snprintf(buf, buflen, "a call of '%s'", g->u.global.qualname);
  } else {
    snprintf(buf, buflen, "%s", pth_value_kind_phrase(v->kind));
  }
  return buf;
}

static pth_status int_tuple(loader *L, const char *key, const char *what, const pth_value *t, int64_t *out, int *n) {
  char b1[160];
  if (t->kind != PTH_V_TUPLE)
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': %s is %s, not a tuple", shown(key, strlen(key), b1, sizeof b1), what,
                    pth_value_kind_phrase(t->kind));
  if (t->u.seq.len > PTH_MAX_RANK)
    return pth_errf(PTH_E_UNSUPPORTED, L->err, L->errlen, "tensor '%s': %s has %zu entries (rank above %d)", shown(key, strlen(key), b1, sizeof b1),
                    what, t->u.seq.len, PTH_MAX_RANK);
  for (size_t i = 0; i < t->u.seq.len; i++) {
    const pth_value *x = t->u.seq.items[i];
    if (x->kind != PTH_V_INT || x->u.i < 0)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': %s[%zu] is %s (must be a non-negative int)", shown(key, strlen(key), b1, sizeof b1),
                      what, i, x->kind == PTH_V_INT ? "negative" : pth_value_kind_phrase(x->kind));
    out[i] = x->u.i;
  }
  *n = (int)t->u.seq.len;
  return PTH_OK;
}

static int is_empty_hooks(const pth_value *v) { return v->kind == PTH_V_DICT && v->u.dict.len == 0; }

static pth_status add_tensor(loader *L, const char *key, const pth_value *call) {
  pth_file *f = L->f;
  char b1[160], b2[160];
  const char *k = shown(key, strlen(key), b1, sizeof b1);
  pth_tensor t;
  memset(&t, 0, sizeof t);
  t.key = key;
  pth_sym sym = call->u.call.callee->u.global.sym;
  const pth_value *args = call->u.call.args;
  if (sym == PTH_SYM_REBUILD_PARAMETER) {
    if (args->u.seq.len != 3 || !is_tensor_call(args->u.seq.items[0]) ||
        args->u.seq.items[0]->u.call.callee->u.global.sym == PTH_SYM_REBUILD_PARAMETER)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': _rebuild_parameter needs (tensor, requires_grad, hooks)", k);
    if (args->u.seq.items[1]->kind != PTH_V_BOOL || !is_empty_hooks(args->u.seq.items[2]))
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': _rebuild_parameter needs a bool requires_grad and empty backward hooks", k);
    t.is_parameter = 1;
    t.requires_grad = (int)args->u.seq.items[1]->u.i;
    call = args->u.seq.items[0];
    sym = call->u.call.callee->u.global.sym;
    args = call->u.call.args;
  }
  size_t na = args->u.seq.len;
  if (sym == PTH_SYM_REBUILD_TENSOR_V2 ? (na != 6 && na != 7) : na != 4)
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': %s takes %s arguments, got %zu", k,
                    call->u.call.callee->u.global.name, sym == PTH_SYM_REBUILD_TENSOR_V2 ? "6 or 7" : "4", na);
  pth_value *const *a = args->u.seq.items;
  if (a[0]->kind != PTH_V_PERSID)
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': storage argument is %s, not a persistent id", k, pth_value_kind_phrase(a[0]->kind));
  if (a[1]->kind != PTH_V_INT || a[1]->u.i < 0)
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': storage offset must be a non-negative int", k);
  if (sym == PTH_SYM_REBUILD_TENSOR_V2) {
    if (a[4]->kind != PTH_V_BOOL)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': requires_grad is %s, not a bool", k, pth_value_kind_phrase(a[4]->kind));
    if (!is_empty_hooks(a[5]))
      return pth_errf(PTH_E_UNSUPPORTED, L->err, L->errlen, "tensor '%s': backward hooks must be an empty OrderedDict", k);
    if (na == 7 && a[6]->kind != PTH_V_NONE && a[6]->kind != PTH_V_DICT)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': metadata is %s, not a dict or None", k, pth_value_kind_phrase(a[6]->kind));
    if (!t.is_parameter) t.requires_grad = (int)a[4]->u.i;
  }
  int64_t stride[PTH_MAX_RANK];
  int rank = 0, srank = 0;
  pth_status st;
  if ((st = int_tuple(L, key, "size", a[2], t.dims, &rank)) || (st = int_tuple(L, key, "stride", a[3], stride, &srank))) return st;
  if (rank != srank)
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': size has %d entries, stride %d", k, rank, srank);
  t.rank = rank;
  const pth_value *pid = a[0]->u.persid.pid;
  const pth_value *skey = pid->u.seq.items[2];
  storage *s = find_storage(f, skey->u.str.ptr, skey->u.str.len);
  if (!s) return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': unknown storage", k);
  t.stored_dtype = s->dtype;
  t.storage_key = s->key;
  t.storage_offset = (uint64_t)a[1]->u.i;
  uint64_t numel = 1, maxi = t.storage_offset;
  int ovf = 0;
  for (int i = 0; i < rank; i++) ovf |= __builtin_mul_overflow(numel, (uint64_t)t.dims[i], &numel);
  if (!ovf && numel) {
    for (int i = 0; i < rank; i++) {
      uint64_t step;
      ovf |= __builtin_mul_overflow((uint64_t)(t.dims[i] - 1), (uint64_t)stride[i], &step);
      ovf |= __builtin_add_overflow(maxi, step, &maxi);
    }
  }
  if (ovf || numel > (uint64_t)INT64_MAX || maxi > (uint64_t)INT64_MAX)
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': element count or highest index overflows 64 bits (size/stride too large)", k);
  uint64_t needed = numel ? maxi + 1 : t.storage_offset;
  if (needed > s->numel)
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "tensor '%s': storage '%s' holds %llu elements, the tensor needs %llu", k,
                    shown(s->key, s->key_len, b2, sizeof b2), (unsigned long long)s->numel, (unsigned long long)needed);
  if (s->dtype == PTH_C64 || s->dtype == PTH_C128)
    return pth_errf(PTH_E_UNSUPPORTED, L->err, L->errlen, "tensor '%s': %s tensors are not supported", k, pth_dtype_name(s->dtype));
  t.numel = numel;
  switch (s->dtype) {
  case PTH_F32: case PTH_F64: case PTH_F16: case PTH_BF16: t.dtype = PTH_F32; break;
  default: t.dtype = PTH_I64; break;
  }
  if (f->n_tensors >= L->opt.limits.max_tensors)
    return pth_errf(PTH_E_LIMIT, L->err, L->errlen, "pth: more than %u tensors (limit)", L->opt.limits.max_tensors);
  if (f->n_tensors == f->cap_tensors) {
    size_t ncap = f->cap_tensors ? f->cap_tensors * 2 : 64, tb, xb;
    if (__builtin_mul_overflow(ncap, sizeof(pth_tensor), &tb) || __builtin_mul_overflow(ncap, sizeof(tensor_extra), &xb))
      return nomem(L);
    pth_tensor *nt = pth_alloc(&f->alloc, tb);
    tensor_extra *nx = pth_alloc(&f->alloc, xb);
    if (!nt || !nx) {
      pth_free(&f->alloc, nt);
      pth_free(&f->alloc, nx);
      return nomem(L);
    }
    if (f->n_tensors) {
      memcpy(nt, f->tensors, f->n_tensors * sizeof *nt);
      memcpy(nx, f->extra, f->n_tensors * sizeof *nx);
    }
    pth_free(&f->alloc, f->tensors);
    pth_free(&f->alloc, f->extra);
    f->tensors = nt;
    f->extra = nx;
    f->cap_tensors = ncap;
  }
  memcpy(f->extra[f->n_tensors].stride, stride, sizeof stride);
  f->extra[f->n_tensors].s = s;
  f->tensors[f->n_tensors++] = t;
  return PTH_OK;
}

/* Walks a state dict's items; nested dicts are flattened with '.' (`prefix` is "" at the top). */
static pth_status collect_tensors(loader *L, const pth_value *sd, const char *prefix, int depth) {
  pth_file *f = L->f;
  char b1[160];
  if (depth > 16)
    return pth_errf(PTH_E_LIMIT, L->err, L->errlen, "pth: state dict nested deeper than 16 dicts at '%s'", shown(prefix, strlen(prefix), b1, sizeof b1));
  for (size_t i = 0; i < sd->u.dict.len; i++) {
    const pth_value *k = sd->u.dict.kv[2 * i], *v = sd->u.dict.kv[2 * i + 1];
    if (k->kind != PTH_V_STR)
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: state dict key #%zu%s%s is %s, not a str", i, *prefix ? " under " : "",
                      shown(prefix, strlen(prefix), b1, sizeof b1), pth_value_kind_phrase(k->kind));
    if (memchr(k->u.str.ptr, 0, k->u.str.len))
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: state dict key #%zu contains a NUL byte", i);
    const char *key = k->u.str.ptr;
    if (*prefix) {
      key = pool_printf(f, "%s.%s", prefix, k->u.str.ptr);
      if (!key) return nomem(L);
    } else if (!strncmp(key, "module.", 7)) {
      key += 7;
      f->info.stripped_module_prefix = 1;
    }
    pth_status st;
    if (v->kind == PTH_V_DICT) {
      if ((st = collect_tensors(L, v, key, depth + 1))) return st;
    } else if (is_tensor_call(v)) {
      if ((st = add_tensor(L, key, v))) return st;
    } else if (v->kind == PTH_V_CALL || v->kind == PTH_V_PERSID || v->kind == PTH_V_GLOBAL) {
      char b2[256];
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: state dict entry '%s' is %s, not a tensor", shown(key, strlen(key), b1, sizeof b1),
                      describe(v, b2, sizeof b2));
    }
  }
  return PTH_OK;
}

static int cmp_tensor_key(const void *a, const void *b) {
  return strcmp((*(const pth_tensor *const *)a)->key, (*(const pth_tensor *const *)b)->key);
}

/* ------------------------------------------------------------------------------------------- */
/* Conversion */

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp == 0) {
    if (!man) {
      bits = sign;
    } else {
      int e = -1;
      do {
        e++;
        man <<= 1;
      } while (!(man & 0x400));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float out;
  memcpy(&out, &bits, 4);
  return out;
}

/* Converts `n` elements `step` bytes apart from `src` into dst[0..n). */
static void convert_run(pth_dtype from, const uint8_t *src, size_t step, size_t n, void *dst) {
  float *df = dst;
  int64_t *di = dst;
  switch (from) {
  case PTH_F32:
    if (step == 4) {
      memcpy(dst, src, n * 4);
      return;
    }
    for (size_t i = 0; i < n; i++, src += step) memcpy(df + i, src, 4);
    return;
  case PTH_F64:
    for (size_t i = 0; i < n; i++, src += step) {
      double x;
      memcpy(&x, src, 8);
      df[i] = (float)x;
    }
    return;
  case PTH_F16:
    for (size_t i = 0; i < n; i++, src += step) df[i] = half_to_float((uint16_t)(src[0] | (src[1] << 8)));
    return;
  case PTH_BF16:
    for (size_t i = 0; i < n; i++, src += step) {
      uint32_t bits = (uint32_t)(src[0] | (src[1] << 8)) << 16;
      memcpy(df + i, &bits, 4);
    }
    return;
  case PTH_I64:
    if (step == 8) {
      memcpy(dst, src, n * 8);
      return;
    }
    for (size_t i = 0; i < n; i++, src += step) memcpy(di + i, src, 8);
    return;
  case PTH_I32:
    for (size_t i = 0; i < n; i++, src += step) {
      int32_t x;
      memcpy(&x, src, 4);
      di[i] = x;
    }
    return;
  case PTH_I16:
    for (size_t i = 0; i < n; i++, src += step) {
      int16_t x;
      memcpy(&x, src, 2);
      di[i] = x;
    }
    return;
  case PTH_I8:
    for (size_t i = 0; i < n; i++, src += step) di[i] = (int8_t)src[0];
    return;
  case PTH_U8:
    for (size_t i = 0; i < n; i++, src += step) di[i] = src[0];
    return;
  case PTH_BOOL:
    for (size_t i = 0; i < n; i++, src += step) di[i] = src[0] != 0;
    return;
  default:
    return;
  }
}

static int is_contiguous(const pth_tensor *t, const int64_t *stride) {
  int64_t expect = 1;
  for (int i = t->rank - 1; i >= 0; i--) {
    if (t->dims[i] != 1 && stride[i] != expect) return 0;
    expect *= t->dims[i];
  }
  return 1;
}

/* A storage of f32/i64 that is misaligned in a private mapping is moved down in place into the
 * bytes of its own header (zip local header or legacy element count), so tensors can point at it. */
static void realign_storages(loader *L) {
  if (!L->writable || L->opt.copy_tensors) return;
  for (size_t i = 0; i < L->f->n_storages; i++) {
    storage *s = &L->f->storages[i];
    if (s->dtype != PTH_F32 && s->dtype != PTH_I64) continue;
    size_t align = pth_dtype_size(s->dtype);
    size_t mis = (uintptr_t)s->data % align;
    if (!mis || (size_t)(s->data - L->d) < 8 || !s->numel) continue;
    uint8_t *dst = L->writable + (s->data - L->d) - mis;
    memmove(dst, s->data, (size_t)s->numel * align);
    s->data = dst;
    L->f->map_written = 1;
  }
}

static const uint64_t zero_data[2];

static pth_status convert_all(loader *L) {
  pth_file *f = L->f;
  size_t total = 0;
  for (size_t i = 0; i < f->n_tensors; i++) {
    pth_tensor *t = &f->tensors[i];
    const storage *s = f->extra[i].s;
    size_t osz = pth_dtype_size(t->dtype);
    if (t->numel == 0) {
      t->data = zero_data;
      continue;
    }
    const uint8_t *src = s->data + t->storage_offset * pth_dtype_size(s->dtype);
    if (!L->opt.copy_tensors && s->dtype == t->dtype && (uintptr_t)src % osz == 0 && is_contiguous(t, f->extra[i].stride)) {
      t->data = src;
      continue;
    }
    size_t bytes;
    if (__builtin_mul_overflow((size_t)t->numel, osz, &bytes) || __builtin_add_overflow(bytes, (size_t)63, &bytes) ||
        __builtin_add_overflow(total, bytes & ~(size_t)63, &total))
      return pth_errf(PTH_E_LIMIT, L->err, L->errlen, "pth: converted tensors exceed the address space");
  }
  if (total) {
    f->block = pth_alloc(&f->alloc, total + 64);
    if (!f->block) return nomem(L);
  }
  uint8_t *out = f->block ? (uint8_t *)(((uintptr_t)f->block + 63) & ~(uintptr_t)63) : NULL;
  for (size_t i = 0; i < f->n_tensors; i++) {
    pth_tensor *t = &f->tensors[i];
    if (t->data) continue;
    const storage *s = f->extra[i].s;
    size_t isz = pth_dtype_size(s->dtype), osz = pth_dtype_size(t->dtype);
    const int64_t *stride = f->extra[i].stride;
    const uint8_t *base = s->data + t->storage_offset * isz;
    uint8_t *dst = out;
    t->data = dst;
    out += ((size_t)t->numel * osz + 63) & ~(size_t)63;
    if (is_contiguous(t, stride)) {
      convert_run(s->dtype, base, isz, (size_t)t->numel, dst);
      continue;
    }
    /* Strided: the last dimension is a run, the others an odometer. */
    int r = t->rank;
    size_t inner = (size_t)t->dims[r - 1], istep = (size_t)stride[r - 1] * isz;
    int64_t idx[PTH_MAX_RANK] = {0};
    size_t outer = (size_t)t->numel / inner;
    for (size_t o = 0; o < outer; o++) {
      size_t off = 0;
      for (int d = 0; d < r - 1; d++) off += (size_t)idx[d] * (size_t)stride[d];
      convert_run(s->dtype, base + off * isz, istep, inner, dst);
      dst += inner * osz;
      for (int d = r - 2; d >= 0; d--) {
        if (++idx[d] < t->dims[d]) break;
        idx[d] = 0;
      }
    }
  }
  return PTH_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* Report */

static int cmp_qualname(const void *a, const void *b) {
  return strcmp((*(const pth_value *const *)a)->u.global.qualname, (*(const pth_value *const *)b)->u.global.qualname);
}

static pth_status build_report(loader *L, const pth_value *root) {
  pth_file *f = L->f;
  size_t nk = root->u.dict.len, ng = pth_pickle_global_count(f->pk), bytes;
  if (__builtin_mul_overflow(nk + 1, sizeof(char *), &bytes)) return nomem(L);
  f->keys = pth_alloc(&f->alloc, bytes);
  if (!f->keys) return nomem(L);
  for (size_t i = 0; i < nk; i++) {
    const pth_value *k = root->u.dict.kv[2 * i];
    const char *s;
    if (k->kind == PTH_V_STR) s = k->u.str.ptr;
    else if (k->kind == PTH_V_INT) s = pool_printf(f, "<int %lld>", (long long)k->u.i);
    else s = pool_printf(f, "<%s>", pth_value_kind_name(k->kind));
    if (!s) return nomem(L);
    f->keys[i] = s;
  }
  f->info.keys = f->keys;
  f->info.n_keys = nk;
  f->globals = pth_alloc(&f->alloc, (ng + 1) * sizeof *f->globals);
  f->opaque = pth_alloc(&f->alloc, (ng + 1) * sizeof *f->opaque);
  const pth_value **sorted = pth_alloc(&f->alloc, (ng + 1) * sizeof *sorted);
  uint8_t *used = pth_alloc(&f->alloc, ng + 1);
  if (!f->globals || !f->opaque || !sorted || !used) {
    pth_free(&f->alloc, (void *)sorted);
    pth_free(&f->alloc, used);
    return nomem(L);
  }
  for (size_t i = 0; i < ng; i++) {
    const pth_value *g = pth_pickle_global(f->pk, i);
    f->globals[i].name = g->u.global.qualname;
    f->globals[i].allowlisted = g->u.global.sym != PTH_SYM_OTHER;
    sorted[i] = g;
  }
  qsort(sorted, ng, sizeof *sorted, cmp_qualname);
  memset(used, 0, ng + 1);
  for (size_t i = 0; i < pth_pickle_opaque_count(f->pk); i++) {
    const pth_value *g = pth_pickle_opaque(f->pk, i)->u.call.root;
    const pth_value **hit = bsearch(&g, sorted, ng, sizeof *sorted, cmp_qualname);
    if (hit) used[hit - sorted] = 1;
  }
  size_t no = 0;
  for (size_t i = 0; i < ng; i++) {
    const pth_value *g = pth_pickle_global(f->pk, i);
    const pth_value **hit = bsearch(&g, sorted, ng, sizeof *sorted, cmp_qualname);
    if (hit && used[hit - sorted]) f->opaque[no++] = g->u.global.qualname;
  }
  pth_free(&f->alloc, (void *)sorted);
  pth_free(&f->alloc, used);
  f->info.globals = f->globals;
  f->info.n_globals = ng;
  f->info.opaque = f->opaque;
  f->info.n_opaque = no;
  return PTH_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* Entry points */

static pth_status load(loader *L) {
  pth_file *f = L->f;
  pth_status st;
  f->info.file_size = L->size;
  if (L->size == 0) return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: empty input (0 bytes)");
  if (L->size > L->opt.limits.max_file_bytes)
    return pth_errf(PTH_E_LIMIT, L->err, L->errlen, "pth: input of %zu bytes exceeds the limit of %llu", L->size,
                    (unsigned long long)L->opt.limits.max_file_bytes);
  if (L->size >= 4 && !memcmp(L->d, "PK\x03\x04", 4)) {
    f->info.container = "zip";
    st = load_zip(L);
  } else if (L->size >= sizeof legacy_magic && !memcmp(L->d, legacy_magic, sizeof legacy_magic)) {
    f->info.container = "legacy";
    st = load_legacy(L);
  } else {
    char hex[64] = "";
    for (size_t i = 0; i < L->size && i < 8; i++) snprintf(hex + 3 * i, 4, "%02x ", L->d[i]);
    if (*hex) hex[strlen(hex) - 1] = 0;
    return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: not a PyTorch checkpoint: first bytes %s are neither a zip (50 4b 03 04) nor the legacy magic (80 02 8a 0a ...)", hex);
  }
  if (st) return st;
  const pth_value *root = pth_pickle_root(f->pk);
  char what[256];
  if (root->kind != PTH_V_DICT)
    return pth_errf(is_opaque(root) ? PTH_E_UNSAFE : PTH_E_UNSUPPORTED, L->err, L->errlen, "pth: the top-level object is %s, not a dict",
                    describe(root, what, sizeof what));
  const pth_value *sd = pth_value_dict_get(root, "state_dict");
  if (sd) {
    f->info.has_state_dict_key = 1;
    if (sd->kind != PTH_V_DICT)
      return pth_errf(is_opaque(sd) ? PTH_E_UNSAFE : PTH_E_FORMAT, L->err, L->errlen, "pth: 'state_dict' is %s, not a dict",
                      describe(sd, what, sizeof what));
  } else {
    sd = root;
  }
  if ((st = pth_pickle_check_strict(f->pk, sd, "state_dict", L->err, L->errlen))) return st;
  if (L->opt.strict_everywhere && (st = pth_pickle_check_strict(f->pk, root, "the file (strict everywhere)", L->err, L->errlen)))
    return st;
  if ((st = build_report(L, root))) return st;
  if ((st = collect_tensors(L, sd, "", 0))) return st;
  f->sorted = pth_alloc(&f->alloc, (f->n_tensors + 1) * sizeof *f->sorted);
  if (!f->sorted) return nomem(L);
  for (size_t i = 0; i < f->n_tensors; i++) f->sorted[i] = &f->tensors[i];
  qsort(f->sorted, f->n_tensors, sizeof *f->sorted, cmp_tensor_key);
  for (size_t i = 1; i < f->n_tensors; i++) {
    if (!strcmp(f->sorted[i - 1]->key, f->sorted[i]->key)) {
      char b1[160];
      return pth_errf(PTH_E_FORMAT, L->err, L->errlen, "pth: state dict key '%s' occurs twice%s",
                      shown(f->sorted[i]->key, strlen(f->sorted[i]->key), b1, sizeof b1),
                      f->info.stripped_module_prefix ? " (after removing 'module.')" : "");
    }
  }
  realign_storages(L);
  if ((st = convert_all(L))) return st;
  f->info.tensors = f->tensors;
  f->info.n_tensors = f->n_tensors;
  return PTH_OK;
}

static pth_status start(const pth_options *opt_in, pth_file **out, loader *L, char *err, size_t errlen) {
  memset(L, 0, sizeof *L);
  if (err && errlen) err[0] = 0;
  if (!out) return pth_errf(PTH_E_ARG, err, errlen, "pth: NULL argument");
  *out = NULL;
  if (pth_options_resolve(opt_in, &L->opt))
    return pth_errf(PTH_E_ARG, err, errlen, "pth: invalid options (allocator alloc/free must be both set or both NULL)");
  L->err = err;
  L->errlen = errlen;
  L->f = pth_alloc(&L->opt.allocator, sizeof *L->f);
  if (!L->f) return nomem(L);
  memset(L->f, 0, sizeof *L->f);
  L->f->alloc = L->opt.allocator;
  L->f->info.container = "";
  L->f->info.zip_prefix = "";
  return PTH_OK;
}

pth_status pth_load_memory(const void *data, size_t size, const pth_options *opt, pth_file **out, char *err, size_t errlen) {
  loader L;
  pth_status st = start(opt, out, &L, err, errlen);
  if (st) return st;
  if (!data && size) {
    pth_file_free(L.f);
    return pth_errf(PTH_E_ARG, err, errlen, "pth: NULL data");
  }
  L.d = data;
  L.size = size;
  st = load(&L);
  if (st) {
    pth_file_free(L.f);
    return st;
  }
  *out = L.f;
  return PTH_OK;
}

pth_status pth_load_file(const char *path, const pth_options *opt, pth_file **out, char *err, size_t errlen) {
  loader L;
  pth_status st = start(opt, out, &L, err, errlen);
  if (st) return st;
  if (!path) {
    pth_file_free(L.f);
    return pth_errf(PTH_E_ARG, err, errlen, "pth: NULL path");
  }
  pth_file *f = L.f;
  char sp[1024];
  pth_shown(path, strlen(path), sp, sizeof sp);
  /* O_NONBLOCK: opening a FIFO would wait for a writer; fstat below refuses it at once (reads and
   * mappings of a regular file ignore the flag) */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    pth_file_free(f);
    return pth_errf(PTH_E_IO, err, errlen, "pth: cannot open '%s': %s", sp, strerror(e));
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    pth_file_free(f);
    return pth_errf(PTH_E_IO, err, errlen, "pth: cannot stat '%s': %s", sp, strerror(e));
  }
  if (!S_ISREG(sb.st_mode) || sb.st_size == 0) {
    close(fd);
    pth_file_free(f);
    return pth_errf(PTH_E_IO, err, errlen, "pth: '%s' is %s", sp,
                    S_ISDIR(sb.st_mode) ? "a directory, not a checkpoint file"
                    : S_ISFIFO(sb.st_mode) ? "a FIFO (named pipe), not a regular file"
                    : S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "a device, not a regular file"
                    : S_ISSOCK(sb.st_mode) ? "a socket, not a regular file"
                    : !S_ISREG(sb.st_mode) ? "not a regular file" : "empty (0 bytes)");
  }
  if ((uint64_t)sb.st_size > L.opt.limits.max_file_bytes || (uint64_t)sb.st_size > SIZE_MAX) {
    close(fd);
    pth_file_free(f);
    return pth_errf(PTH_E_LIMIT, err, errlen, "pth: '%s' has %lld bytes, above the limit of %llu", sp, (long long)sb.st_size,
                    (unsigned long long)L.opt.limits.max_file_bytes);
  }
  size_t size = (size_t)sb.st_size;
  /* A zip is mapped: its stored entries are 64-byte aligned, so tensors point into the mapping and
   * pages are read only when used. A legacy file's storages sit at arbitrary offsets and must be
   * moved anyway, which is cheaper in a buffer read once than in copy-on-write pages. */
  uint8_t head[sizeof legacy_magic];
  int legacy = pread(fd, head, sizeof head, 0) == (ssize_t)sizeof head && !memcmp(head, legacy_magic, sizeof head);
  void *map = legacy ? MAP_FAILED : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (map != MAP_FAILED) {
    f->map = map;
    f->map_len = size;
    L.d = map;
    L.writable = map;
  } else {
    f->file_buf = pth_alloc(&f->alloc, size);
    if (!f->file_buf) {
      close(fd);
      pth_file_free(f);
      return pth_errf(PTH_E_NOMEM, err, errlen, "pth: out of memory reading '%s' (%zu bytes)", sp, size);
    }
    size_t got = 0;
    while (got < size) {
      ssize_t r = pread(fd, (uint8_t *)f->file_buf + got, size - got, (off_t)got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        int e = r < 0 ? errno : 0;
        close(fd);
        pth_file_free(f);
        return pth_errf(PTH_E_IO, err, errlen, "pth: cannot read '%s': %s", sp, e ? strerror(e) : "file shrank while reading");
      }
      got += (size_t)r;
    }
    L.d = f->file_buf;
    L.writable = f->file_buf;
  }
  close(fd);
  L.size = size;
  /* the contents' messages follow "<path>: ", which takes the place of their "pth: " */
  size_t pre = 0;
  if (err && errlen) {
    int n = snprintf(err, errlen, "%s: ", sp);
    if (n > 0 && (size_t)n < errlen / 2) pre = (size_t)n;
    err[pre] = 0;
  }
  L.err = err ? err + pre : NULL;
  L.errlen = errlen - pre;
  st = load(&L);
  if (st) {
    if (pre && !strncmp(err + pre, "pth: ", 5)) memmove(err + pre, err + pre + 5, strlen(err + pre + 5) + 1);
    pth_file_free(f);
    return st;
  }
  if (err && errlen) err[0] = 0;
  *out = f;
  return PTH_OK;
}
