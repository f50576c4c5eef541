/* test_pth.c: unit tests of the .pth reader (converter/pth): the shared samples, torch-written
 * checkpoints (made at test time by gen_fixtures.py with /usr/bin/python3), hostile and broken
 * inputs built from bytes here, and an allocation-failure sweep with a counting allocator.
 * Usage: test_pth SAMPLES_DIR GEN_FIXTURES_PY WORK_DIR. Ends with "N passed, N failed".
 * It is not a fuzzer (see fuzz_*.c) and ships no exploit file: every payload is assembled below.
 */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pth.h"
#include "../common/files.h"

extern char **environ;

static int n_passed, n_failed, cur_failed;
static const char *samples_dir, *work_dir;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      cur_failed = 1;                                                                              \
      printf("    check failed at line %d: %s: ", __LINE__, #cond);                               \
      printf(__VA_ARGS__);                                                                         \
      printf("\n");                                                                                \
    }                                                                                              \
  } while (0)

static void run(const char *name, void (*fn)(void)) {
  cur_failed = 0;
  fn();
  if (cur_failed) n_failed++;
  else n_passed++;
  printf("%s %s\n", cur_failed ? "FAIL" : "ok  ", name);
  fflush(stdout);
}

/* ------------------------------------------------------------------------------------------- */
/* Files */

static const char *fx(const char *name) {
  static char buf[8][1024];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", work_dir, name);
  return buf[k];
}

static const char *sample(const char *name) {
  static char buf[1024];
  snprintf(buf, sizeof buf, "%s/%s", samples_dir, name);
  return buf;
}

/* ------------------------------------------------------------------------------------------- */
/* Expected values written by torch */

typedef struct {
  char key[256];
  char dtype[16];
  int rank;
  long long dims[8];
  size_t off, len;
} expect_row;

static int load_expect(const char *stem, expect_row **rows, size_t *n, unsigned char **bin) {
  char path[1200];
  snprintf(path, sizeof path, "%s/%s.expect", work_dir, stem);
  FILE *fp = fopen(path, "r");
  if (!fp) return 0;
  size_t cap = 256;
  *rows = calloc(cap, sizeof **rows);
  *n = 0;
  char line[4096];
  while (fgets(line, sizeof line, fp)) {
    expect_row *r = &(*rows)[*n];
    char *save = NULL, *tok = strtok_r(line, " \n", &save);
    if (!tok) continue;
    snprintf(r->key, sizeof r->key, "%s", tok);
    snprintf(r->dtype, sizeof r->dtype, "%s", strtok_r(NULL, " \n", &save));
    r->rank = atoi(strtok_r(NULL, " \n", &save));
    for (int i = 0; i < r->rank; i++) r->dims[i] = atoll(strtok_r(NULL, " \n", &save));
    r->off = (size_t)atoll(strtok_r(NULL, " \n", &save));
    r->len = (size_t)atoll(strtok_r(NULL, " \n", &save));
    if (++*n == cap) break;
  }
  fclose(fp);
  snprintf(path, sizeof path, "%s/%s.bin", work_dir, stem);
  size_t bsz;
  *bin = read_all(path, &bsz);
  return *bin != NULL;
}

/* Every tensor of `f` equals torch's: order, key, dtype, shape, every element bit for bit. */
static void compare_tensors(const pth_file *f, const char *stem) {
  expect_row *rows = NULL;
  unsigned char *bin = NULL;
  size_t n = 0;
  CHECK(load_expect(stem, &rows, &n, &bin), "no expectations for %s", stem);
  if (!bin) {
    free(rows);
    return;
  }
  const pth_info *in = pth_file_info(f);
  CHECK(in->n_tensors == n, "%s: %zu tensors, torch has %zu", stem, in->n_tensors, n);
  for (size_t i = 0; i < n && i < in->n_tensors; i++) {
    const pth_tensor *t = &in->tensors[i];
    const expect_row *r = &rows[i];
    CHECK(!strcmp(t->key, r->key), "%s: tensor %zu is '%s', torch says '%s'", stem, i, t->key, r->key);
    CHECK(!strcmp(pth_dtype_name(t->dtype), r->dtype), "%s: '%s' dtype %s, want %s", stem, r->key, pth_dtype_name(t->dtype), r->dtype);
    CHECK(t->rank == r->rank, "%s: '%s' rank %d, want %d", stem, r->key, t->rank, r->rank);
    for (int d = 0; d < r->rank && d < t->rank; d++)
      CHECK(t->dims[d] == r->dims[d], "%s: '%s' dim %d is %lld, want %lld", stem, r->key, d, (long long)t->dims[d], r->dims[d]);
    CHECK(t->numel * pth_dtype_size(t->dtype) == r->len, "%s: '%s' has %llu elements", stem, r->key, (unsigned long long)t->numel);
    if (t->numel * pth_dtype_size(t->dtype) == r->len)
      CHECK(!memcmp(t->data, bin + r->off, r->len), "%s: '%s' values differ from torch's", stem, r->key);
    CHECK((uintptr_t)t->data % pth_dtype_size(t->dtype) == 0, "%s: '%s' data misaligned", stem, r->key);
    CHECK(pth_file_find(f, r->key) == t, "%s: find('%s') does not return the tensor", stem, r->key);
  }
  free(rows);
  free(bin);
}

/* Loads a fixture four ways (file; memory zero-copy; memory copying with CRC; strict everywhere
 * when it has no numpy) and compares each with torch. */
static void check_fixture(const char *stem, const char *container, const char *prefix, int has_sd) {
  char path[1200], err[512];
  snprintf(path, sizeof path, "%s/%s.pth", work_dir, stem);
  pth_file *f = NULL;
  pth_status st = pth_load_file(path, NULL, &f, err, sizeof err);
  CHECK(st == PTH_OK, "%s: %s %s", stem, pth_status_name(st), err);
  if (f) {
    const pth_info *in = pth_file_info(f);
    CHECK(!strcmp(in->container, container), "%s: container %s", stem, in->container);
    CHECK(!strcmp(in->zip_prefix, prefix), "%s: prefix '%s', want '%s'", stem, in->zip_prefix, prefix);
    CHECK(in->has_state_dict_key == has_sd, "%s: has_state_dict_key %d", stem, in->has_state_dict_key);
    compare_tensors(f, stem);
    pth_file_free(f);
  }
  size_t size;
  unsigned char *buf = read_all(path, &size);
  CHECK(buf != NULL, "cannot read %s", path);
  if (!buf) return;
  pth_options opt;
  pth_default_options(&opt);
  for (int mode = 0; mode < 2; mode++) {
    opt.copy_tensors = mode;
    opt.verify_crc = mode;
    f = NULL;
    st = pth_load_memory(buf, size, &opt, &f, err, sizeof err);
    CHECK(st == PTH_OK, "%s (memory, mode %d): %s %s", stem, mode, pth_status_name(st), err);
    if (!f) continue;
    compare_tensors(f, stem);
    const pth_info *in = pth_file_info(f);
    for (size_t i = 0; i < in->n_tensors; i++) {
      const unsigned char *p = in->tensors[i].data;
      int inside = p >= buf && p < buf + size;
      if (mode) CHECK(!inside, "%s: copy_tensors returned a pointer into the input for '%s'", stem, in->tensors[i].key);
    }
    pth_file_free(f);
  }
  free(buf);
}

/* ------------------------------------------------------------------------------------------- */
/* Byte builders for hostile inputs */

typedef struct {
  unsigned char *b;
  size_t n, cap;
} buf_t;

static void put(buf_t *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->b = realloc(b->b, b->cap);
  }
  memcpy(b->b + b->n, p, n);
  b->n += n;
}
static void op(buf_t *b, unsigned char c) { put(b, &c, 1); }
static void le(buf_t *b, uint64_t v, int n) {
  for (int i = 0; i < n; i++) op(b, (unsigned char)(v >> (8 * i)));
}
static void ustr(buf_t *b, const char *s) {
  op(b, 'X');
  le(b, strlen(s), 4);
  put(b, s, strlen(s));
}
static void glob(buf_t *b, const char *mod, const char *name) {
  op(b, 'c');
  put(b, mod, strlen(mod));
  op(b, '\n');
  put(b, name, strlen(name));
  op(b, '\n');
}
/* An int: BININT when it fits 32 bits, else an 8-byte LONG1. */
static void pint(buf_t *b, int64_t v) {
  if (v >= INT32_MIN && v <= INT32_MAX) {
    op(b, 'J');
    le(b, (uint64_t)v, 4);
  } else {
    op(b, 0x8a);
    op(b, 8);
    le(b, (uint64_t)v, 8);
  }
}
static void itup(buf_t *b, const int64_t *v, int n) {
  op(b, '(');
  for (int i = 0; i < n; i++) pint(b, v[i]);
  op(b, 't');
}

/* _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride, False,
 * OrderedDict()); `legacy` adds the sixth None to the persistent id. */
static void tensor(buf_t *b, const char *key, int64_t numel, int64_t offset, const int64_t *size, const int64_t *stride, int rank, int legacy) {
  glob(b, "torch._utils", "_rebuild_tensor_v2");
  op(b, '(');
  op(b, '(');
  ustr(b, "storage");
  glob(b, "torch", "FloatStorage");
  ustr(b, key);
  ustr(b, "cpu");
  pint(b, numel);
  if (legacy) op(b, 'N');
  op(b, 't');
  op(b, 'Q');
  pint(b, offset);
  itup(b, size, rank);
  itup(b, stride, rank);
  op(b, 0x89);
  glob(b, "collections", "OrderedDict");
  op(b, ')');
  op(b, 'R');
  op(b, 't');
  op(b, 'R');
}

/* {'meta': <meta bytes or {}>, 'state_dict': OrderedDict(w=<value bytes>)} */
static buf_t ckpt_pickle(const buf_t *meta, const buf_t *value) {
  buf_t b = {0};
  op(&b, 0x80);
  op(&b, 2);
  op(&b, '}');
  op(&b, '(');
  ustr(&b, "meta");
  if (meta) put(&b, meta->b, meta->n);
  else op(&b, '}');
  ustr(&b, "state_dict");
  glob(&b, "collections", "OrderedDict");
  op(&b, ')');
  op(&b, 'R');
  op(&b, '(');
  ustr(&b, "w");
  put(&b, value->b, value->n);
  op(&b, 'u');
  op(&b, 'u');
  op(&b, '.');
  return b;
}

/* The standard tensor value: 'w' = storage '0' of `numel` floats viewed as size/stride. */
static buf_t tensor_value(int64_t numel, int64_t offset, const int64_t *size, const int64_t *stride, int rank) {
  buf_t v = {0};
  tensor(&v, "0", numel, offset, size, stride, rank, 0);
  return v;
}

typedef struct {
  const char *name;
  const void *data;
  size_t len;
} zent;

/* A stored zip of `n` entries (local header, name, data; central directory; classic EOCD). */
static buf_t make_zip(const zent *e, int n) {
  buf_t z = {0};
  size_t offs[16];
  for (int i = 0; i < n; i++) {
    offs[i] = z.n;
    le(&z, 0x04034b50, 4);
    le(&z, 20, 2);
    le(&z, 0, 2);
    le(&z, 0, 2);
    le(&z, 0, 4);
    le(&z, 0, 4);
    le(&z, e[i].len, 4);
    le(&z, e[i].len, 4);
    le(&z, strlen(e[i].name), 2);
    le(&z, 0, 2);
    put(&z, e[i].name, strlen(e[i].name));
    put(&z, e[i].data, e[i].len);
  }
  size_t cd = z.n;
  for (int i = 0; i < n; i++) {
    le(&z, 0x02014b50, 4);
    le(&z, 20, 2);
    le(&z, 20, 2);
    le(&z, 0, 2);
    le(&z, 0, 2);
    le(&z, 0, 4);
    le(&z, 0, 4); /* CRC left 0: tests that need it compute nothing and keep verify_crc off */
    le(&z, e[i].len, 4);
    le(&z, e[i].len, 4);
    le(&z, strlen(e[i].name), 2);
    le(&z, 0, 2);
    le(&z, 0, 2);
    le(&z, 0, 2);
    le(&z, 0, 2);
    le(&z, 0, 4);
    le(&z, offs[i], 4);
    put(&z, e[i].name, strlen(e[i].name));
  }
  size_t cdsize = z.n - cd;
  le(&z, 0x06054b50, 4);
  le(&z, 0, 2);
  le(&z, 0, 2);
  le(&z, (uint64_t)n, 2);
  le(&z, (uint64_t)n, 2);
  le(&z, cdsize, 4);
  le(&z, cd, 4);
  le(&z, 0, 2);
  return z;
}

/* A zip checkpoint: archive/data.pkl = `pkl`, archive/data/0 = `nfloat` floats 0, 1, 2, ... */
static buf_t ckpt_zip(const buf_t *pkl, size_t nfloat) {
  float *vals = calloc(nfloat ? nfloat : 1, sizeof(float));
  for (size_t i = 0; i < nfloat; i++) vals[i] = (float)i;
  zent e[3] = {{"archive/data.pkl", pkl->b, pkl->n}, {"archive/data/0", vals, nfloat * 4}, {"archive/version", "3\n", 2}};
  buf_t z = make_zip(e, 3);
  free(vals);
  return z;
}

static pth_status load_buf(const buf_t *b, const pth_options *opt, pth_file **f, char *err, size_t errlen) {
  return pth_load_memory(b->b, b->n, opt, f, err, errlen);
}

/* Expects a failure with `want` status and every `...` substring (NULL-terminated list). */
static void expect_fail(const char *what, pth_status st, pth_status want, const char *err, ...) {
  CHECK(st == want, "%s: got %s (%s), want %s", what, pth_status_name(st), err, pth_status_name(want));
  va_list ap;
  va_start(ap, err);
  for (const char *s; (s = va_arg(ap, const char *));) CHECK(strstr(err, s) != NULL, "%s: message '%s' lacks '%s'", what, err, s);
  va_end(ap);
}

static pth_status run_pickle(const unsigned char *p, size_t n, char *err, size_t errlen) {
  pth_pickle *pk = NULL;
  pth_status st = pth_pickle_run(p, n, NULL, &pk, NULL, err, errlen);
  pth_pickle_free(pk);
  return st;
}

/* ------------------------------------------------------------------------------------------- */
/* Tests: samples and torch fixtures */

static void t_sample_zip(void) {
  char err[512];
  pth_file *f = NULL;
  pth_status st = pth_load_file(sample("tiny_zip.pth"), NULL, &f, err, sizeof err);
  CHECK(st == PTH_OK, "%s", err);
  if (!f) return;
  const pth_info *in = pth_file_info(f);
  CHECK(!strcmp(in->container, "zip") && !strcmp(in->zip_prefix, "tiny_zip"), "container %s prefix %s", in->container, in->zip_prefix);
  CHECK(in->n_keys == 2 && !strcmp(in->keys[0], "meta") && !strcmp(in->keys[1], "state_dict"), "keys");
  CHECK(in->n_tensors == 7, "%zu tensors", in->n_tensors);
  const pth_tensor *w = pth_file_find(f, "0.weight");
  CHECK(w && w->rank == 4 && w->dims[0] == 2 && w->dims[1] == 1 && w->dims[2] == 3 && w->dims[3] == 3, "0.weight shape");
  if (w) CHECK(((const float *)w->data)[1] == 0.17881453037261963f, "0.weight[1] = %.9g", ((const float *)w->data)[1]);
  const pth_tensor *nb = pth_file_find(f, "1.num_batches_tracked");
  CHECK(nb && nb->dtype == PTH_I64 && nb->rank == 0 && nb->numel == 1 && *(const int64_t *)nb->data == 0, "num_batches_tracked");
  CHECK(in->n_globals == 4 && in->n_opaque == 0, "globals %zu opaque %zu", in->n_globals, in->n_opaque);
  for (size_t i = 0; i < in->n_globals; i++) CHECK(in->globals[i].allowlisted, "global %s", in->globals[i].name);
  const pth_value *meta = pth_value_dict_get(pth_file_root(f), "meta");
  const pth_value *lr = pth_value_dict_get(meta, "lr");
  CHECK(lr && lr->kind == PTH_V_FLOAT && lr->u.f == 0.0002, "meta lr");
  const pth_value *it = pth_value_dict_get(meta, "iter");
  CHECK(it && it->kind == PTH_V_INT && it->u.i == 80000, "meta iter");
  compare_tensors(f, "sample_tiny_zip");
  pth_file_free(f);
}

static void t_sample_legacy(void) {
  char err[512];
  pth_file *f = NULL;
  pth_status st = pth_load_file(sample("tiny_legacy.pth"), NULL, &f, err, sizeof err);
  CHECK(st == PTH_OK, "%s", err);
  if (!f) return;
  const pth_info *in = pth_file_info(f);
  CHECK(!strcmp(in->container, "legacy") && !strcmp(in->zip_prefix, ""), "container %s", in->container);
  CHECK(in->n_tensors == 7, "%zu tensors", in->n_tensors);
  CHECK(!strcmp(in->tensors[0].storage_key, "1053642080"), "storage key %s", in->tensors[0].storage_key);
  compare_tensors(f, "sample_tiny_legacy");
  pth_file_free(f);
}

static void t_zip_directory(void) {
  size_t size;
  unsigned char *b = read_all(sample("tiny_zip.pth"), &size);
  char err[512];
  pth_zip *z = NULL;
  pth_options opt;
  pth_default_options(&opt);
  opt.verify_crc = 1;
  pth_status st = pth_zip_parse(b, size, &opt, &z, err, sizeof err);
  CHECK(st == PTH_OK, "%s", err);
  if (z) {
    CHECK(pth_zip_count(z) == 9, "%zu entries", pth_zip_count(z));
    CHECK(!strcmp(pth_zip_prefix(z), "tiny_zip"), "prefix %s", pth_zip_prefix(z));
    for (size_t i = 0; i < pth_zip_count(z); i++) CHECK(pth_zip_entry_at(z, i)->data_offset % 64 == 0, "entry %zu offset", i);
    const pth_zip_entry *v = pth_zip_find(z, "tiny_zip/version");
    CHECK(v && v->size == 2 && !memcmp(b + v->data_offset, "3\n", 2), "version record");
    const pth_zip_entry *p = pth_zip_find(z, "tiny_zip/data.pkl");
    CHECK(p && p->size == 960 && p->data_offset == 64 && p->crc32 == 0xe7a9eb22u, "data.pkl record");
    CHECK(pth_zip_find(z, "tiny_zip/data/7") == NULL, "find of a missing name");
    if (p) {
      pth_pickle *pk = NULL;
      size_t used = 0;
      st = pth_pickle_run(b + p->data_offset, (size_t)p->size, NULL, &pk, &used, err, sizeof err);
      CHECK(st == PTH_OK && used == 960, "data.pkl: %s", err);
      if (pk) {
        CHECK(pth_pickle_persid_count(pk) == 7, "persids %zu", pth_pickle_persid_count(pk));
        const pth_value *sd = pth_value_dict_get(pth_pickle_root(pk), "state_dict");
        CHECK(sd && sd->kind == PTH_V_DICT && sd->u.dict.ordered && sd->u.dict.len == 7 && sd->u.dict.state, "state_dict value");
      }
      pth_pickle_free(pk);
    }
  }
  pth_zip_free(z);
  free(b);
}

static void t_ckpt_zip(void) { check_fixture("ckpt_zip", "zip", "archive", 1); }
static void t_ckpt_legacy(void) { check_fixture("ckpt_legacy", "legacy", "", 1); }
static void t_bare(void) { check_fixture("bare_zip", "zip", "archive", 0); }
static void t_proto4(void) { check_fixture("ckpt_proto4", "zip", "archive", 1); }
static void t_path_prefix(void) { check_fixture("my.weird.name", "zip", "my.weird.name", 0); }
static void t_many_zip(void) { check_fixture("many_zip", "zip", "archive", 1); }
static void t_many_legacy(void) { check_fixture("many_legacy", "legacy", "", 1); }

static void t_module_prefix(void) {
  check_fixture("module_prefix", "zip", "archive", 1);
  pth_file *f = NULL;
  char err[512];
  pth_load_file(fx("module_prefix.pth"), NULL, &f, err, sizeof err);
  CHECK(f && pth_file_info(f)->stripped_module_prefix, "stripped flag");
  CHECK(f && pth_file_find(f, "conv.weight") && !pth_file_find(f, "module.conv.weight"), "keys without module.");
  pth_file_free(f);
}

/* The forms in the rich state dict, checked one by one beyond the value comparison. */
static void t_tensor_forms(void) {
  pth_file *f = NULL;
  char err[512];
  pth_status st = pth_load_file(fx("ckpt_zip.pth"), NULL, &f, err, sizeof err);
  CHECK(st == PTH_OK, "%s", err);
  if (!f) return;
  const pth_tensor *base = pth_file_find(f, "base"), *view = pth_file_find(f, "view"), *tr = pth_file_find(f, "transposed");
  CHECK(base && view && !strcmp(base->storage_key, view->storage_key) && view->storage_offset == 9, "view shares storage at offset 9");
  CHECK(view && base && view->data == (const float *)base->data + 9, "contiguous view points into the same data");
  CHECK(tr && tr->rank == 2 && tr->dims[0] == 2 && tr->dims[1] == 3, "transposed shape");
  const pth_tensor *h = pth_file_find(f, "half");
  CHECK(h && h->stored_dtype == PTH_F16 && h->dtype == PTH_F32, "half converted");
  const pth_tensor *p = pth_file_find(f, "param");
  CHECK(p && p->is_parameter, "nn.Parameter flagged");
  const pth_tensor *nb = pth_file_find(f, "bn.num_batches_tracked");
  CHECK(nb && nb->dtype == PTH_I64 && nb->rank == 0 && *(const int64_t *)nb->data == 7, "num_batches_tracked = 7");
  const pth_tensor *e = pth_file_find(f, "empty");
  CHECK(e && e->numel == 0 && e->data, "empty tensor has a non-NULL pointer");
  pth_file_free(f);
}

static void check_meta(const char *stem) {
  pth_file *f = NULL;
  char err[512];
  pth_status st = pth_load_file(fx(stem), NULL, &f, err, sizeof err);
  CHECK(st == PTH_OK, "%s: %s", stem, err);
  if (!f) return;
  const pth_value *m = pth_value_dict_get(pth_file_root(f), "meta"), *v;
  CHECK(m && m->kind == PTH_V_DICT, "%s: meta", stem);
  v = pth_value_dict_get(m, "str");
  CHECK(v && v->kind == PTH_V_STR && !strcmp(v->u.str.ptr, "hello"), "%s: str", stem);
  v = pth_value_dict_get(m, "int");
  CHECK(v && v->kind == PTH_V_INT && v->u.i == 7, "%s: int", stem);
  v = pth_value_dict_get(m, "neg");
  CHECK(v && v->kind == PTH_V_INT && v->u.i == -5, "%s: neg", stem);
  v = pth_value_dict_get(m, "big");
  CHECK(v && v->kind == PTH_V_INT && v->u.i == ((int64_t)1 << 40), "%s: 2**40", stem);
  v = pth_value_dict_get(m, "float");
  CHECK(v && v->kind == PTH_V_FLOAT && v->u.f == 0.25, "%s: float", stem);
  v = pth_value_dict_get(m, "list");
  CHECK(v && v->kind == PTH_V_LIST && v->u.seq.len == 3 && v->u.seq.items[2]->u.i == 3, "%s: list", stem);
  v = pth_value_dict_get(m, "tuple");
  CHECK(v && v->kind == PTH_V_TUPLE && v->u.seq.len == 2 && v->u.seq.items[1]->kind == PTH_V_STR, "%s: tuple", stem);
  v = pth_value_dict_get(m, "none");
  CHECK(v && v->kind == PTH_V_NONE, "%s: None", stem);
  v = pth_value_dict_get(m, "yes");
  CHECK(v && v->kind == PTH_V_BOOL && v->u.i == 1, "%s: True", stem);
  v = pth_value_dict_get(m, "no");
  CHECK(v && v->kind == PTH_V_BOOL && v->u.i == 0, "%s: False", stem);
  v = pth_value_dict_get(m, "bytes");
  CHECK(v && v->kind == PTH_V_BYTES && v->u.str.len == 6 && !memcmp(v->u.str.ptr, "\x00\x01\xff" "abc", 6), "%s: bytes", stem);
  v = pth_value_dict_get(pth_value_dict_get(pth_value_dict_get(m, "nested"), "a"), "b");
  CHECK(v && v->kind == PTH_V_INT && v->u.i == 1, "%s: nested", stem);
  v = pth_value_dict_get(m, "np_float");
  CHECK(v && v->kind == PTH_V_CALL && !strcmp(v->u.call.root->u.global.qualname, "numpy.core.multiarray.scalar"), "%s: np.float64 opaque", stem);
  v = pth_value_dict_get(m, "np_array");
  CHECK(v && v->kind == PTH_V_CALL && v->u.call.state && !strcmp(v->u.call.root->u.global.qualname, "numpy.core.multiarray._reconstruct"),
        "%s: ndarray opaque with BUILD state", stem);
  const pth_info *in = pth_file_info(f);
  int scal = 0, rec = 0, nd = 0;
  for (size_t i = 0; i < in->n_opaque; i++) {
    scal |= !strcmp(in->opaque[i], "numpy.core.multiarray.scalar");
    rec |= !strcmp(in->opaque[i], "numpy.core.multiarray._reconstruct");
  }
  for (size_t i = 0; i < in->n_globals; i++) nd |= !strcmp(in->globals[i].name, "numpy.ndarray") && !in->globals[i].allowlisted;
  CHECK(scal && rec && nd, "%s: opaque globals reported", stem);
  pth_file_free(f);
  pth_options opt;
  pth_default_options(&opt);
  opt.strict_everywhere = 1;
  st = pth_load_file(fx(stem), &opt, &f, err, sizeof err);
  expect_fail("strict everywhere on numpy meta", st, PTH_E_UNSAFE, err, "numpy", "outside the allowlist", NULL);
  pth_file_free(f);
}

static void t_meta_zip(void) { check_meta("ckpt_zip.pth"); }
static void t_meta_legacy(void) { check_meta("ckpt_legacy.pth"); }
static void t_meta_proto4(void) { check_meta("ckpt_proto4.pth"); }

/* ------------------------------------------------------------------------------------------- */
/* Tests: hostile payloads */

static buf_t call_payload(const char *mod, const char *name, const char *arg) {
  buf_t p = {0};
  glob(&p, mod, name);
  ustr(&p, arg);
  op(&p, 0x85);
  op(&p, 'R');
  return p;
}

static void hostile(const char *mod, const char *name, const char *arg) {
  char err[512], want[128];
  unlink("MARKER");
  int64_t size[1] = {4}, stride[1] = {1};
  buf_t good = tensor_value(4, 0, size, stride, 1);
  buf_t evil = call_payload(mod, name, arg);
  /* Inside state_dict: refused. */
  buf_t pk = ckpt_pickle(NULL, &evil);
  buf_t z = ckpt_zip(&pk, 4);
  pth_file *f = NULL;
  pth_status st = load_buf(&z, NULL, &f, err, sizeof err);
  snprintf(want, sizeof want, "GLOBAL '%s %s' at byte", mod, name);
  expect_fail("payload in state_dict", st, PTH_E_UNSAFE, err, want, "REDUCE on a global outside the allowlist inside state_dict", NULL);
  CHECK(f == NULL, "no result on failure");
  /* Inside meta: loads, reported as opaque, never run. */
  buf_t pk2 = ckpt_pickle(&evil, &good);
  buf_t z2 = ckpt_zip(&pk2, 4);
  st = load_buf(&z2, NULL, &f, err, sizeof err);
  CHECK(st == PTH_OK, "payload in meta: %s", err);
  if (f) {
    const pth_info *in = pth_file_info(f);
    char q[128];
    snprintf(q, sizeof q, "%s.%s", mod, name);
    CHECK(in->n_opaque == 1 && !strcmp(in->opaque[0], q), "opaque reported as %s", in->n_opaque ? in->opaque[0] : "(none)");
    int listed = 0;
    for (size_t i = 0; i < in->n_globals; i++) listed |= !strcmp(in->globals[i].name, q) && !in->globals[i].allowlisted;
    CHECK(listed, "global listed as not allowlisted");
    CHECK(in->n_tensors == 1 && ((const float *)in->tensors[0].data)[3] == 3.0f, "tensor next to the payload");
    const pth_value *m = pth_value_dict_get(pth_file_root(f), "meta");
    CHECK(m && m->kind == PTH_V_CALL && m->u.call.args->u.seq.len == 1, "meta is an inert call value");
    pth_file_free(f);
  }
  /* The same file with strict_everywhere: refused. */
  pth_options opt;
  pth_default_options(&opt);
  opt.strict_everywhere = 1;
  st = load_buf(&z2, &opt, &f, err, sizeof err);
  expect_fail("payload in meta, strict everywhere", st, PTH_E_UNSAFE, err, want, NULL);
  struct stat sb;
  CHECK(stat("MARKER", &sb) != 0, "MARKER exists: something was executed");
  free(good.b);
  free(evil.b);
  free(pk.b);
  free(z.b);
  free(pk2.b);
  free(z2.b);
}

static void t_os_system(void) { hostile("os", "system", "touch MARKER"); }
static void t_posix_system(void) { hostile("posix", "system", "touch MARKER"); }
static void t_builtins_eval(void) { hostile("builtins", "eval", "__import__('os').system('touch MARKER')"); }

static void t_build_in_state_dict(void) {
  /* BUILD attaching state to a non-allowlisted object inside state_dict. */
  char err[512];
  buf_t v = {0};
  glob(&v, "mmengine.logging.history_buffer", "HistoryBuffer");
  op(&v, ')');
  op(&v, 0x81);
  op(&v, '}');
  op(&v, 'b');
  buf_t pk = ckpt_pickle(NULL, &v);
  buf_t z = ckpt_zip(&pk, 4);
  pth_file *f = NULL;
  pth_status st = load_buf(&z, NULL, &f, err, sizeof err);
  expect_fail("NEWOBJ+BUILD in state_dict", st, PTH_E_UNSAFE, err, "HistoryBuffer", "NEWOBJ on a global outside the allowlist inside state_dict", NULL);
  free(v.b);
  free(pk.b);
  free(z.b);
}

static void t_setitem_on_list(void) {
  char err[512];
  const unsigned char p[] = {0x80, 2, ']', 'N', 'N', 's', '.'};
  expect_fail("SETITEM on a list", run_pickle(p, sizeof p, err, sizeof err), PTH_E_FORMAT, err, "0x73 SETITEM at byte 5", "list, not a dict", NULL);
  const unsigned char q[] = {0x80, 2, ']', '(', 'N', 'N', 'u', '.'};
  expect_fail("SETITEMS on a list", run_pickle(q, sizeof q, err, sizeof err), PTH_E_FORMAT, err, "SETITEMS", "list, not a dict", NULL);
}

static void t_append_on_dict(void) {
  char err[512];
  const unsigned char p[] = {0x80, 2, '}', 'N', 'a', '.'};
  expect_fail("APPEND on a dict", run_pickle(p, sizeof p, err, sizeof err), PTH_E_FORMAT, err, "0x61 APPEND at byte 4", "dict, not a list", NULL);
  const unsigned char q[] = {0x80, 2, '}', '(', 'N', 'e', '.'};
  expect_fail("APPENDS on a dict", run_pickle(q, sizeof q, err, sizeof err), PTH_E_FORMAT, err, "APPENDS", "dict, not a list", NULL);
}

static void tensor_case(const char *what, int64_t numel, size_t nfloat, int64_t offset, const int64_t *size, const int64_t *stride, int rank,
                        pth_status want, const char *msg) {
  char err[512];
  buf_t v = tensor_value(numel, offset, size, stride, rank);
  buf_t pk = ckpt_pickle(NULL, &v);
  buf_t z = ckpt_zip(&pk, nfloat);
  pth_file *f = NULL;
  pth_status st = load_buf(&z, NULL, &f, err, sizeof err);
  expect_fail(what, st, want, err, msg, NULL);
  pth_file_free(f);
  free(v.b);
  free(pk.b);
  free(z.b);
}

static void t_storage_too_small(void) {
  int64_t size[2] = {3, 49}, stride[2] = {49, 1};
  tensor_case("storage smaller than tensor", 100, 100, 0, size, stride, 2, PTH_E_FORMAT,
              "tensor 'w': storage '0' holds 100 elements, the tensor needs 147");
  int64_t s1[1] = {10}, st1[1] = {1};
  tensor_case("offset past the storage", 10, 10, 1, s1, st1, 1, PTH_E_FORMAT, "holds 10 elements, the tensor needs 11");
  tensor_case("record shorter than numel", 12, 10, 0, s1, st1, 1, PTH_E_FORMAT, "holds 40 bytes, 12 float32 elements need 48");
}

static void t_negative_size(void) {
  int64_t size[2] = {2, -1}, stride[2] = {1, 1};
  tensor_case("negative size", 4, 4, 0, size, stride, 2, PTH_E_FORMAT, "size[1] is negative");
}

static void t_negative_stride(void) {
  int64_t size[2] = {2, 2}, stride[2] = {-2, 1};
  tensor_case("negative stride", 4, 4, 0, size, stride, 2, PTH_E_FORMAT, "stride[0] is negative");
}

static void t_size_overflow(void) {
  int64_t size[1] = {(int64_t)1 << 62}, stride[1] = {4};
  tensor_case("size*stride overflow", 4, 4, 0, size, stride, 1, PTH_E_FORMAT, "overflows 64 bits");
  int64_t s2[2] = {(int64_t)1 << 62, 8}, st2[2] = {0, 0};
  tensor_case("numel overflow", 4, 4, 0, s2, st2, 2, PTH_E_FORMAT, "overflows 64 bits");
  int64_t s3[1] = {(int64_t)1 << 40}, st3[1] = {1};
  tensor_case("huge tensor on a small storage", 4, 4, 0, s3, st3, 1, PTH_E_FORMAT, "holds 4 elements, the tensor needs 1099511627776");
  int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, st9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  tensor_case("rank 9", 4, 4, 0, s9, st9, 9, PTH_E_UNSUPPORTED, "rank above 8");
}

/* A real zip from the fixtures, and the offset of its central-directory record for `name`. */
static unsigned char *fixture_zip(size_t *size, const char *name, size_t *cd_rec) {
  unsigned char *b = read_all(fx("ckpt_zip.pth"), size);
  if (!b) return NULL;
  size_t nl = strlen(name);
  *cd_rec = 0;
  for (size_t i = 0; i + 46 + nl <= *size; i++) {
    if (!memcmp(b + i, "PK\x01\x02", 4) && (size_t)(b[i + 28] | (b[i + 29] << 8)) == nl && !memcmp(b + i + 46, name, nl)) *cd_rec = i;
  }
  return b;
}

static void t_zip_entry_outside(void) {
  size_t size, rec;
  char err[512];
  unsigned char *b = fixture_zip(&size, "archive/data/3", &rec);
  CHECK(b && rec, "fixture");
  if (!b || !rec) return;
  b[rec + 20] = b[rec + 24] = 0x00;
  b[rec + 21] = b[rec + 25] = 0x00;
  b[rec + 22] = b[rec + 26] = 0x01; /* 65536 bytes */
  pth_file *f = NULL;
  pth_status st = pth_load_memory(b, size, NULL, &f, err, sizeof err);
  expect_fail("entry outside the file", st, PTH_E_FORMAT, err, "zip: entry 'archive/data/3' extends past the end of the file (offset", "+ 65536 >", NULL);
  free(b);
}

static void t_zip_overlap(void) {
  size_t size, rec;
  char err[512];
  unsigned char *b = fixture_zip(&size, "archive/data/3", &rec);
  if (!b || !rec) {
    CHECK(0, "fixture");
    return;
  }
  b[rec + 20] = b[rec + 24] = (unsigned char)(b[rec + 20] + 100);
  pth_file *f = NULL;
  pth_status st = pth_load_memory(b, size, NULL, &f, err, sizeof err);
  expect_fail("overlapping entries", st, PTH_E_FORMAT, err, "zip: entries 'archive/data/3'", "overlap", NULL);
  free(b);
  /* Two central records naming the same local header. */
  int64_t size1[1] = {1}, stride1[1] = {1};
  buf_t v = tensor_value(1, 0, size1, stride1, 1);
  buf_t pk = ckpt_pickle(NULL, &v);
  zent e[3] = {{"archive/data.pkl", pk.b, pk.n}, {"archive/data/0", "\0\0\0\0", 4}, {"archive/data/0", "\0\0\0\0", 4}};
  buf_t z = make_zip(e, 3);
  st = pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err);
  expect_fail("duplicate names", st, PTH_E_FORMAT, err, "'archive/data/0' occurs twice", NULL);
  free(v.b);
  free(pk.b);
  free(z.b);
}

static void t_zip_misc(void) {
  char err[512];
  pth_file *f = NULL;
  int64_t size1[1] = {1}, stride1[1] = {1};
  buf_t v = tensor_value(1, 0, size1, stride1, 1);
  buf_t pk = ckpt_pickle(NULL, &v);
  zent e1[2] = {{"archive/data.pkl", pk.b, pk.n}, {"other/data/0", "\0\0\0\0", 4}};
  buf_t z = make_zip(e1, 2);
  expect_fail("entry outside the prefix", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_FORMAT, err, "outside the archive folder", NULL);
  free(z.b);
  zent e2[1] = {{"archive/data.pkl", pk.b, pk.n}};
  z = make_zip(e2, 1);
  expect_fail("missing storage record", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_NOT_FOUND, err,
              "storage '0' has no record 'archive/data/0'", NULL);
  free(z.b);
  zent e3[1] = {{"archive/version", "3\n", 2}};
  z = make_zip(e3, 1);
  expect_fail("no data.pkl", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_NOT_FOUND, err, "no '<folder>/data.pkl'", NULL);
  free(z.b);
  zent e4[3] = {{"archive/data.pkl", pk.b, pk.n}, {"b/data.pkl", pk.b, pk.n}, {"archive/data/0", "\0\0\0\0", 4}};
  z = make_zip(e4, 3);
  expect_fail("two data.pkl", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_FORMAT, err, "two data.pkl records", NULL);
  free(z.b);
  zent e5[3] = {{"archive/version", "3\n", 2}, {"archive/data/0", "\0\0\x80\x3f", 4}, {"archive/data.pkl", pk.b, pk.n}};
  z = make_zip(e5, 3);
  pth_status st5 = pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err);
  CHECK(st5 == PTH_OK && f && ((const float *)pth_file_find(f, "w")->data)[0] == 1.0f, "data.pkl not first: %s", err);
  pth_file_free(f);
  f = NULL;
  free(z.b);
  z = make_zip(e3, 1);
  /* A compressed entry. */
  z.b[8] = 8;
  expect_fail("deflated entry", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_UNSUPPORTED, err, "method 8", NULL);
  free(z.b);
  free(pk.b);
  /* Unaligned stored entries (a zip not written by torch), loaded from a file: the storage is moved
   * in the private mapping and the tensor points at it, aligned. */
  int64_t size4[2] = {2, 3}, stride4[2] = {1, 2};
  buf_t v4 = tensor_value(7, 1, size4, stride4, 2);
  buf_t v5 = tensor_value(7, 1, size1, stride1, 1);
  buf_t pk4 = ckpt_pickle(NULL, &v4), pk5 = ckpt_pickle(NULL, &v5);
  for (int k = 0; k < 2; k++) {
    buf_t zz = ckpt_zip(k ? &pk5 : &pk4, 7);
    FILE *fp = fopen(fx("unaligned.pth"), "wb");
    if (fp) {
      fwrite(zz.b, 1, zz.n, fp);
      fclose(fp);
    }
    pth_status st = pth_load_file(fx("unaligned.pth"), NULL, &f, err, sizeof err);
    CHECK(st == PTH_OK, "unaligned zip %d: %s", k, err);
    if (f) {
      const pth_tensor *t = pth_file_find(f, "w");
      const float *d = t ? t->data : NULL;
      CHECK(d && (uintptr_t)d % 4 == 0, "aligned data");
      if (d && k == 0) CHECK(d[0] == 1 && d[1] == 3 && d[2] == 5 && d[3] == 2 && d[4] == 4 && d[5] == 6, "strided values from an unaligned entry");
      if (d && k == 1) CHECK(d[0] == 1, "value from an unaligned entry");
    }
    pth_file_free(f);
    f = NULL;
    free(zz.b);
  }
  free(v4.b);
  free(v5.b);
  free(pk4.b);
  free(pk5.b);
  free(v.b);
}

static void truncations(const char *stem) {
  size_t size;
  char err[512];
  unsigned char *b = read_all(fx(stem), &size);
  CHECK(b != NULL, "read %s", stem);
  if (!b) return;
  for (int k = 0; k < 16; k++) {
    size_t n = size * (size_t)k / 16 + (k ? (size_t)k * 7 % 13 : 0);
    if (n >= size) n = size - 1;
    unsigned char *c = malloc(n ? n : 1);
    memcpy(c, b, n);
    pth_file *f = NULL;
    err[0] = 0;
    pth_status st = pth_load_memory(c, n, NULL, &f, err, sizeof err);
    CHECK(st != PTH_OK && f == NULL && err[0], "%s cut at %zu of %zu: %s '%s'", stem, n, size, pth_status_name(st), err);
    pth_file_free(f);
    free(c);
  }
  free(b);
}

static void t_truncated_zip(void) { truncations("ckpt_zip.pth"); }
static void t_truncated_legacy(void) { truncations("ckpt_legacy.pth"); }

static void t_empty_and_directory(void) {
  char err[512];
  pth_file *f = NULL;
  FILE *fp = fopen(fx("empty.pth"), "wb");
  if (fp) fclose(fp);
  expect_fail("empty file", pth_load_file(fx("empty.pth"), NULL, &f, err, sizeof err), PTH_E_IO, err, "empty (0 bytes)", NULL);
  expect_fail("directory", pth_load_file(work_dir, NULL, &f, err, sizeof err), PTH_E_IO, err, "is a directory", NULL);
  expect_fail("missing file", pth_load_file(fx("no_such.pth"), NULL, &f, err, sizeof err), PTH_E_IO, err, "cannot open", NULL);
  expect_fail("empty buffer", pth_load_memory("", 0, NULL, &f, err, sizeof err), PTH_E_FORMAT, err, "empty input", NULL);
  expect_fail("not a checkpoint", pth_load_memory("hello world!", 12, NULL, &f, err, sizeof err), PTH_E_FORMAT, err,
              "not a PyTorch checkpoint: first bytes 68 65 6c", NULL);
  char tiny[4];
  expect_fail("tiny error buffer", pth_load_memory("hello world!", 12, NULL, &f, tiny, sizeof tiny), PTH_E_FORMAT, tiny, "pth", NULL);
  CHECK(pth_load_memory("x", 1, NULL, &f, NULL, 0) == PTH_E_FORMAT, "NULL error buffer");
}

static void t_crc(void) {
  size_t size;
  char err[512];
  unsigned char *b = read_all(sample("tiny_zip.pth"), &size);
  pth_zip *z = NULL;
  pth_zip_parse(b, size, NULL, &z, err, sizeof err);
  const pth_zip_entry *e = pth_zip_find(z, "tiny_zip/data/0");
  CHECK(e != NULL, "entry");
  if (e) b[e->data_offset + 5] ^= 0x40;
  pth_zip_free(z);
  pth_options opt;
  pth_default_options(&opt);
  opt.verify_crc = 1;
  pth_file *f = NULL;
  expect_fail("flipped byte, CRC on", pth_load_memory(b, size, &opt, &f, err, sizeof err), PTH_E_FORMAT, err,
              "CRC-32 mismatch in entry 'tiny_zip/data/0'", NULL);
  opt.verify_crc = 0;
  pth_status st = pth_load_memory(b, size, &opt, &f, err, sizeof err);
  CHECK(st == PTH_OK, "flipped byte, CRC off: %s", err);
  if (f) {
    const pth_tensor *w = pth_file_find(f, "0.weight");
    CHECK(w && ((const float *)w->data)[1] != 0.17881453037261963f, "the flipped value comes through");
  }
  pth_file_free(f);
  free(b);
}

static void t_pickle_structure(void) {
  char err[512];
  const unsigned char mark[] = {0x80, 2, '(', 'N', '.'};
  expect_fail("MARK never closed", run_pickle(mark, sizeof mark, err, sizeof err), PTH_E_FORMAT, err, "MARK at byte 2 never closed", NULL);
  const unsigned char under[] = {0x80, 2, 'N', 'R', '.'};
  expect_fail("stack underflow", run_pickle(under, sizeof under, err, sizeof err), PTH_E_FORMAT, err,
              "stack underflow: opcode 0x52 REDUCE at byte 3 needs 2 items", NULL);
  const unsigned char under2[] = {0x80, 2, 'N', '(', 's', '.'};
  expect_fail("pop across a MARK", run_pickle(under2, sizeof under2, err, sizeof err), PTH_E_FORMAT, err, "stack underflow", "above the last MARK", NULL);
  const unsigned char memo[] = {0x80, 2, 'N', 'q', 1, 'h', 5, '.'};
  expect_fail("memo out of range", run_pickle(memo, sizeof memo, err, sizeof err), PTH_E_FORMAT, err, "memo index 5 out of range", NULL);
  const unsigned char memo2[] = {0x80, 2, 'N', 'r', 0xff, 0xff, 0xff, 0xff, '.'};
  expect_fail("memo index limit", run_pickle(memo2, sizeof memo2, err, sizeof err), PTH_E_LIMIT, err, "memo index 4294967295 exceeds the limit", NULL);
  const unsigned char long9[] = {0x80, 2, 0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, '.'};
  expect_fail("LONG1 of 9 bytes", run_pickle(long9, sizeof long9, err, sizeof err), PTH_E_LIMIT, err, "LONG1 at byte 2: 9 bytes exceed the 8-byte limit", NULL);
  const unsigned char inst[] = {0x80, 2, 'i', 'o', 's', '\n', 's', 'y', 's', 't', 'e', 'm', '\n', '.'};
  expect_fail("INST", run_pickle(inst, sizeof inst, err, sizeof err), PTH_E_UNSUPPORTED, err, "opcode 0x69 INST at byte 2", NULL);
  const unsigned char text[] = {0x80, 2, 'I', '1', '\n', '.'};
  expect_fail("protocol-0 INT", run_pickle(text, sizeof text, err, sizeof err), PTH_E_UNSUPPORTED, err, "opcode 0x49 INT at byte 2", NULL);
  const unsigned char unk[] = {0x80, 2, 0xff, '.'};
  expect_fail("unknown opcode", run_pickle(unk, sizeof unk, err, sizeof err), PTH_E_FORMAT, err, "unknown opcode 0xff at byte 2", NULL);
  const unsigned char longstr[] = {0x80, 2, 'X', 0xff, 0xff, 0xff, 0x7f, 'a', '.'};
  expect_fail("string longer than the input", run_pickle(longstr, sizeof longstr, err, sizeof err), PTH_E_FORMAT, err,
              "length 2147483647 exceeds the 2 bytes left", NULL);
  const unsigned char nostop[] = {0x80, 2, 'N'};
  expect_fail("no STOP", run_pickle(nostop, sizeof nostop, err, sizeof err), PTH_E_FORMAT, err, "before STOP", NULL);
  const unsigned char left[] = {0x80, 2, 'N', 'N', '.'};
  expect_fail("items left at STOP", run_pickle(left, sizeof left, err, sizeof err), PTH_E_FORMAT, err, "leaves 1 item", NULL);
  const unsigned char build[] = {0x80, 2, ']', '}', 'b', '.'};
  expect_fail("BUILD on a list", run_pickle(build, sizeof build, err, sizeof err), PTH_E_FORMAT, err, "BUILD", "list", NULL);
  const unsigned char badglob[] = {0x80, 2, 'c', 'o', 's', ';', '\n', 'x', '\n', '.'};
  expect_fail("bad global name", run_pickle(badglob, sizeof badglob, err, sizeof err), PTH_E_FORMAT, err, "GLOBAL", "[A-Za-z0-9_.]", NULL);
  const unsigned char red[] = {0x80, 2, 'N', ')', 'R', '.'};
  expect_fail("REDUCE on None", run_pickle(red, sizeof red, err, sizeof err), PTH_E_FORMAT, err, "REDUCE on None, not a global", NULL);
  /* Regression (fuzz_pth_pickle): APPENDS/SETITEMS with nothing above the MARK on a new container. */
  const unsigned char empty_fill[] = {0x80, 2, ']', '(', 'e', '}', '(', 'u', 0x86, '.'};
  CHECK(run_pickle(empty_fill, sizeof empty_fill, err, sizeof err) == PTH_OK, "empty APPENDS/SETITEMS: %s", err);
  /* Accepted forms: LONG1 sign extension, BINFLOAT, protocol-4 opcodes. */
  const unsigned char ok[] = {0x80, 4, 0x95, 19, 0, 0, 0, 0, 0, 0, 0, ']', 0x94, '(', 0x8a, 2, 0x00, 0x80, 0x8a, 0, 0x8c, 1, 'x', 0x8f,
                              '(', 'K', 1, 0x90, 'e', '.'};
  pth_pickle *pk = NULL;
  pth_status st = pth_pickle_run(ok, sizeof ok, NULL, &pk, NULL, err, sizeof err);
  CHECK(st == PTH_OK, "protocol-4 forms: %s", err);
  if (pk) {
    const pth_value *r = pth_pickle_root(pk);
    CHECK(r->kind == PTH_V_LIST && r->u.seq.len == 4 && r->u.seq.items[0]->u.i == -32768 && r->u.seq.items[1]->u.i == 0 &&
              r->u.seq.items[3]->kind == PTH_V_SET && r->u.seq.items[3]->u.seq.len == 1,
          "values of the protocol-4 pickle");
  }
  pth_pickle_free(pk);
}

static void t_deep_nesting(void) {
  char err[512];
  size_t n = 2 + 1000 + 999 + 1;
  unsigned char *p = malloc(n);
  size_t k = 0;
  p[k++] = 0x80;
  p[k++] = 2;
  for (int i = 0; i < 1000; i++) p[k++] = ']';
  for (int i = 0; i < 999; i++) p[k++] = 'a';
  p[k++] = '.';
  expect_fail("1000-deep list", run_pickle(p, k, err, sizeof err), PTH_E_LIMIT, err, "nesting deeper than 100 (limit)", NULL);
  for (int i = 0; i < 1001; i++) p[2 + i] = '(';
  expect_fail("1001 open MARKs", run_pickle(p, 2 + 1001 + 1, err, sizeof err), PTH_E_LIMIT, err, "more than 1000 open MARKs", NULL);
  free(p);
  /* Depth reached through a cycle is still bounded for the strict walk: a list that holds itself. */
  const unsigned char cyc[] = {0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'};
  pth_pickle *pk = NULL;
  pth_status st = pth_pickle_run(cyc, sizeof cyc, NULL, &pk, NULL, err, sizeof err);
  CHECK(st == PTH_OK, "self-referencing list: %s", err);
  if (pk) CHECK(pth_pickle_check_strict(pk, pth_pickle_root(pk), "state_dict", err, sizeof err) == PTH_OK, "strict walk of a cycle: %s", err);
  pth_pickle_free(pk);
}

static void t_legacy_hostile(void) {
  char err[512];
  size_t size;
  unsigned char *b = read_all(sample("tiny_legacy.pth"), &size);
  pth_file *f = NULL;
  /* One byte more or less of storage data. */
  unsigned char *c = malloc(size + 1);
  memcpy(c, b, size);
  c[size] = 0;
  expect_fail("trailing byte", pth_load_memory(c, size + 1, NULL, &f, err, sizeof err), PTH_E_FORMAT, err, "1 unexpected bytes after the last legacy storage", NULL);
  /* The first storage's element count (byte 1286) made huge. */
  memcpy(c, b, size);
  c[1286 + 6] = 0x10;
  expect_fail("element count", pth_load_memory(c, size, NULL, &f, err, sizeof err), PTH_E_FORMAT, err, "has 4503599627370498 elements in the file", NULL);
  /* View metadata instead of None in the first persistent id (NONE at byte 557 -> BININT1 0 would
   * shift bytes, so use EMPTY_TUPLE of the same length). */
  memcpy(c, b, size);
  c[557] = ')';
  expect_fail("view metadata", pth_load_memory(c, size, NULL, &f, err, sizeof err), PTH_E_UNSUPPORTED, err, "view metadata", NULL);
  /* Magic not followed by STOP. */
  memcpy(c, b, size);
  c[14] = 'N';
  expect_fail("magic", pth_load_memory(c, size, NULL, &f, err, sizeof err), PTH_E_FORMAT, err, "legacy magic", NULL);
  free(c);
  free(b);
  /* Regression (fuzz_pth_load): a storage-key pickle that is not a list was read after its free. */
  buf_t l = {0};
  put(&l, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15);
  put(&l, "\x80\x02M\xe9\x03.", 6);
  put(&l, "\x80\x02}", 3);
  ustr(&l, "little_endian");
  put(&l, "\x88s.", 3);
  put(&l, "\x80\x02}.", 4);
  put(&l, "\x80\x02N.", 4);
  expect_fail("storage keys not a list", pth_load_memory(l.b, l.n, NULL, &f, err, sizeof err), PTH_E_FORMAT, err,
              "legacy storage-key pickle is None, not a list", NULL);
  l.b[l.n - 2] = ']';
  CHECK(pth_load_memory(l.b, l.n, NULL, &f, err, sizeof err) == PTH_OK, "minimal legacy file: %s", err);
  CHECK(f && pth_file_info(f)->n_tensors == 0, "no tensors");
  pth_file_free(f);
  free(l.b);
}

static void t_duplicates_and_types(void) {
  char err[512];
  pth_file *f = NULL;
  /* 'module.w' and 'w' collide after the strip. */
  int64_t size[1] = {2}, stride[1] = {1};
  buf_t v = tensor_value(2, 0, size, stride, 1);
  buf_t b = {0};
  op(&b, 0x80);
  op(&b, 2);
  glob(&b, "collections", "OrderedDict");
  op(&b, ')');
  op(&b, 'R');
  op(&b, '(');
  ustr(&b, "module.w");
  put(&b, v.b, v.n);
  ustr(&b, "w");
  put(&b, v.b, v.n);
  op(&b, 'u');
  op(&b, '.');
  buf_t z = ckpt_zip(&b, 2);
  expect_fail("duplicate key after strip", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_FORMAT, err, "key 'w' occurs twice", NULL);
  free(b.b);
  free(z.b);
  /* The same storage referenced as float and as long. */
  buf_t w = {0};
  tensor(&w, "0", 2, 0, size, stride, 1, 0);
  buf_t b2 = {0};
  op(&b2, 0x80);
  op(&b2, 2);
  op(&b2, '}');
  op(&b2, '(');
  ustr(&b2, "a");
  put(&b2, w.b, w.n);
  ustr(&b2, "b");
  size_t at = w.n;
  for (size_t i = 0; i + 12 < w.n; i++)
    if (!memcmp(w.b + i, "FloatStorage", 12)) at = i;
  put(&b2, w.b, at);
  put(&b2, "LongStorage", 11);
  put(&b2, w.b + at + 12, w.n - at - 12);
  op(&b2, 'u');
  op(&b2, '.');
  z = ckpt_zip(&b2, 2);
  expect_fail("dtype disagreement", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_FORMAT, err,
              "storage '0' is referenced as float32 and as int64", NULL);
  free(b2.b);
  free(w.b);
  free(z.b);
  free(v.b);
  /* Top level that is a list. */
  const unsigned char lst[] = {0x80, 2, ']', '.'};
  buf_t l = {0};
  put(&l, lst, sizeof lst);
  z = ckpt_zip(&l, 0);
  expect_fail("top-level list", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_UNSUPPORTED, err, "top-level object is a list", NULL);
  free(l.b);
  free(z.b);
}

/* ------------------------------------------------------------------------------------------- */
/* Tests: names from the file in messages, top-level objects, paths, FIFOs */

/* pth_shown of `in` (n bytes) into a buffer of `buflen` equals `want`. */
static void shown_case(const char *in, size_t n, size_t buflen, const char *want) {
  char buf[256];
  const char *r = pth_shown(in, n, buf, buflen);
  CHECK(r == buf && !strcmp(buf, want), "pth_shown of %zu bytes into %zu: got '%s', want '%s'", n, buflen, buf, want);
}

static void t_shown(void) {
  const char esc[] = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mk\nfake: i2i convert: wrote everything fine";
  shown_case(esc, sizeof esc - 1, 256, "\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mk\\x0afake: i2i convert: wrote everything fine");
  shown_case("generators.summer.model.0.conv.weight", 37, 256, "generators.summer.model.0.conv.weight");
  shown_case("genera\xa4ors", 10, 256, "genera\\xa4ors");
  shown_case("caf\xc3\xa9 \xf0\x9f\x98\x80 \xe6\x97\xa5", 14, 256, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe6\x97\xa5"); /* é, an emoji, 日 */
  shown_case("a\tb\x7f", 4, 256, "a\\x09b\\x7f");
  shown_case("\xc2\x9b" "31m", 5, 256, "\\xc2\\x9b31m");                   /* C1 CSI */
  shown_case("x\xe2\x80\xaey", 5, 256, "x\\xe2\\x80\\xaey");               /* U+202E right-to-left override */
  shown_case("\xe2\x80\xa8", 3, 256, "\\xe2\\x80\\xa8");                   /* U+2028 line separator */
  shown_case("\xc0\xaf", 2, 256, "\\xc0\\xaf");                            /* overlong '/' */
  shown_case("\xed\xa0\x80", 3, 256, "\\xed\\xa0\\x80");                   /* a surrogate */
  shown_case("\xf4\x90\x80\x80", 4, 256, "\\xf4\\x90\\x80\\x80");          /* above U+10FFFF */
  shown_case("ab\xe2\x82", 4, 256, "ab\\xe2\\x82");                        /* a sequence cut short */
  shown_case("a\0b", 3, 256, "a\\x00b");
  shown_case("", 0, 256, "");
  shown_case(NULL, 5, 256, "");
  /* Bounded: cut between characters and escapes, "..." added, never past the buffer. */
  shown_case("abcdefghij", 10, 8, "abcd...");
  shown_case("abcdefg", 7, 8, "abcdefg");
  shown_case("\x01\x01\x01", 3, 8, "\\x01...");
  shown_case("\xc3\xa9\xc3\xa9\xc3\xa9", 6, 6, "\xc3\xa9...");
  shown_case("abcdef", 6, 3, "");
  char one[1] = {'z'};
  CHECK(!strcmp(pth_shown("abc", 3, one, 1), ""), "buffer of 1 byte");
  CHECK(!strcmp(pth_shown("abc", 3, NULL, 0), ""), "no buffer");
}

/* A bare state dict {k1: v1, k2: v2} (k2 NULL: one item). */
static buf_t sd_pickle(const char *k1, const buf_t *v1, const char *k2, const buf_t *v2) {
  buf_t b = {0};
  op(&b, 0x80);
  op(&b, 2);
  op(&b, '}');
  op(&b, '(');
  ustr(&b, k1);
  put(&b, v1->b, v1->n);
  if (k2) {
    ustr(&b, k2);
    put(&b, v2->b, v2->n);
  }
  op(&b, 'u');
  op(&b, '.');
  return b;
}

static void t_names_escaped(void) {
  char err[512];
  pth_file *f = NULL;
  int64_t size[1] = {2}, stride[1] = {1};
  buf_t v = tensor_value(2, 0, size, stride, 1);
  /* Keys in the reader's messages: control characters and invalid UTF-8 escaped, UTF-8 kept. */
  const char *keys[][2] = {
      {"\x1b]0;PWNED\x07\x1b[2J\x1b[31mw\nfake: i2i convert: wrote everything fine",
       "key '\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mw\\x0afake: i2i convert: wrote everything fine' occurs twice"},
      {"genera\xa4ors.w", "key 'genera\\xa4ors.w' occurs twice"},
      {"caf\xc3\xa9.w", "key 'caf\xc3\xa9.w' occurs twice"},
  };
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    char mod[256];
    snprintf(mod, sizeof mod, "module.%s", keys[i][0]);
    buf_t b = sd_pickle(mod, &v, keys[i][0], &v);
    buf_t z = ckpt_zip(&b, 2);
    expect_fail("duplicate key from the file", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_FORMAT, err, keys[i][1], NULL);
    CHECK(!strchr(err, '\x1b') && !strchr(err, '\n') && !strchr(err, '\x07') && !strchr(err, '\xa4'), "raw bytes in '%s'", err);
    free(b.b);
    free(z.b);
  }
  /* A tensor error naming a hostile key. */
  int64_t nsize[1] = {-1};
  buf_t neg = tensor_value(2, 0, nsize, stride, 1);
  buf_t b = sd_pickle("\x1b[2Jw\xff", &neg, NULL, NULL);
  buf_t z = ckpt_zip(&b, 2);
  expect_fail("tensor error naming a hostile key", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_FORMAT, err,
              "tensor '\\x1b[2Jw\\xff': size[0] is negative", NULL);
  free(b.b);
  free(z.b);
  free(neg.b);
  /* Zip entry names: a duplicate, and the second name of an overlap. */
  buf_t pk = ckpt_pickle(NULL, &v);
  zent e[3] = {{"archive/data.pkl", pk.b, pk.n}, {"archive/\x1b[2J\xa4", "\0\0\0\0", 4}, {"archive/\x1b[2J\xa4", "\0\0\0\0", 4}};
  z = make_zip(e, 3);
  expect_fail("duplicate zip names", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_FORMAT, err,
              "zip: entry name 'archive/\\x1b[2J\\xa4' occurs twice", NULL);
  free(z.b);
  zent e2[2] = {{"archive/data.pkl", pk.b, pk.n}, {"archive/\x1b]0;x\x07", "\0\0\0\0", 4}};
  z = make_zip(e2, 2);
  size_t cd = 0;
  for (size_t i = 0; i + 4 <= z.n; i++)
    if (!memcmp(z.b + i, "PK\x01\x02", 4)) {
      cd = i;
      break;
    }
  CHECK(cd, "central directory");
  if (cd) {
    size_t grown = pk.n + 8; /* the first entry now runs into the second one's local header */
    for (int k = 0; k < 4; k++) z.b[cd + 20 + k] = z.b[cd + 24 + k] = (unsigned char)(grown >> (8 * k));
    expect_fail("overlapping zip names", pth_load_memory(z.b, z.n, NULL, &f, err, sizeof err), PTH_E_FORMAT, err,
                "and 'archive/\\x1b]0;x\\x07' (from byte", NULL);
    CHECK(!strchr(err, '\x1b') && !strchr(err, '\x07'), "raw bytes in '%s'", err);
  }
  free(z.b);
  free(pk.b);
  free(v.b);
}

/* Loads `pkl` as the data.pkl of a zip (with storage 0 of 4 floats). */
static pth_status load_pickle_zip(const buf_t *pkl, char *err, size_t errlen) {
  buf_t z = ckpt_zip(pkl, 4);
  pth_file *f = NULL;
  pth_status st = pth_load_memory(z.b, z.n, NULL, &f, err, errlen);
  pth_file_free(f);
  free(z.b);
  return st;
}

static void t_top_level(void) {
  char err[512];
  /* GLOBAL os system + REDUCE */
  buf_t p = {0};
  put(&p, "\x80\x02", 2);
  buf_t c = call_payload("os", "system", "touch MARKER");
  put(&p, c.b, c.n);
  op(&p, '.');
  expect_fail("top-level GLOBAL+REDUCE", load_pickle_zip(&p, err, sizeof err), PTH_E_UNSAFE, err,
              "pth: the top-level object is an opaque call of 'os.system' (GLOBAL at byte 2, REDUCE at byte 31; a global outside the allowlist, never called), not a dict",
              NULL);
  free(p.b);
  /* STACK_GLOBAL posix system + NEWOBJ */
  buf_t q = {0};
  put(&q, "\x80\x04", 2);
  op(&q, 0x8c);
  op(&q, 5);
  put(&q, "posix", 5);
  op(&q, 0x8c);
  op(&q, 6);
  put(&q, "system", 6);
  op(&q, 0x93);
  ustr(&q, "id");
  op(&q, 0x85);
  op(&q, 0x81);
  op(&q, '.');
  expect_fail("top-level STACK_GLOBAL+NEWOBJ", load_pickle_zip(&q, err, sizeof err), PTH_E_UNSAFE, err,
              "the top-level object is an opaque call of 'posix.system' (STACK_GLOBAL at byte 17, NEWOBJ at byte 26;", NULL);
  free(q.b);
  /* A bare global, a bare tensor, an int, None */
  buf_t g = {0};
  put(&g, "\x80\x02", 2);
  glob(&g, "builtins", "eval");
  op(&g, '.');
  expect_fail("top-level global", load_pickle_zip(&g, err, sizeof err), PTH_E_UNSAFE, err,
              "the top-level object is the global 'builtins.eval' (GLOBAL at byte 2, outside the allowlist), not a dict", NULL);
  free(g.b);
  int64_t size[1] = {4}, stride[1] = {1};
  buf_t t = {0};
  put(&t, "\x80\x02", 2);
  buf_t tv = tensor_value(4, 0, size, stride, 1);
  put(&t, tv.b, tv.n);
  op(&t, '.');
  expect_fail("top-level tensor", load_pickle_zip(&t, err, sizeof err), PTH_E_UNSUPPORTED, err,
              "the top-level object is a tensor (torch._utils._rebuild_tensor_v2), not a dict", NULL);
  free(t.b);
  const unsigned char i5[] = {0x80, 2, 'K', 5, '.'}, none[] = {0x80, 2, 'N', '.'};
  buf_t bi = {0}, bn = {0};
  put(&bi, i5, sizeof i5);
  put(&bn, none, sizeof none);
  expect_fail("top-level int", load_pickle_zip(&bi, err, sizeof err), PTH_E_UNSUPPORTED, err, "the top-level object is an int, not a dict", NULL);
  expect_fail("top-level None", load_pickle_zip(&bn, err, sizeof err), PTH_E_UNSUPPORTED, err, "the top-level object is None, not a dict", NULL);
  free(bi.b);
  free(bn.b);
  /* {'state_dict': os.system(...)} */
  buf_t s = {0};
  put(&s, "\x80\x02}", 3);
  ustr(&s, "state_dict");
  put(&s, c.b, c.n);
  op(&s, 's');
  op(&s, '.');
  expect_fail("state_dict an opaque call", load_pickle_zip(&s, err, sizeof err), PTH_E_UNSAFE, err,
              "pth: 'state_dict' is an opaque call of 'os.system' (GLOBAL at byte", NULL);
  free(s.b);
  free(c.b);
  free(tv.b);
}

static void t_file_messages(void) {
  char err[512];
  size_t size;
  unsigned char *b = read_all(fx("ckpt_zip.pth"), &size);
  CHECK(b && size > 300, "fixture");
  if (!b || size <= 300) {
    free(b);
    return;
  }
  const char *cut = fx("cut.pth");
  FILE *fp = fopen(cut, "wb");
  if (fp) {
    fwrite(b, 1, 300, fp);
    fclose(fp);
  }
  free(b);
  pth_file *f = NULL;
  char want[1200];
  snprintf(want, sizeof want, "%s: zip: no end-of-central-directory record", cut);
  expect_fail("truncated file: the path named", pth_load_file(cut, NULL, &f, err, sizeof err), PTH_E_FORMAT, err, want, NULL);
  CHECK(!strncmp(err, cut, strlen(cut)), "message '%s' does not start with the path", err);
  /* A failure of the load itself: "<path>: " in place of "pth: ". */
  buf_t z = {0};
  const unsigned char i5[] = {0x80, 2, 'K', 5, '.'};
  buf_t pi = {0};
  put(&pi, i5, sizeof i5);
  z = ckpt_zip(&pi, 0);
  const char *ip = fx("int.pth");
  fp = fopen(ip, "wb");
  if (fp) {
    fwrite(z.b, 1, z.n, fp);
    fclose(fp);
  }
  snprintf(want, sizeof want, "%s: the top-level object is an int, not a dict", ip);
  expect_fail("top-level int from a file", pth_load_file(ip, NULL, &f, err, sizeof err), PTH_E_UNSUPPORTED, err, want, NULL);
  CHECK(!strstr(err + strlen(ip), "pth: "), "message '%s' keeps 'pth: '", err);
  /* A small error buffer still gets a message (without the path when it does not fit). */
  char small[24];
  CHECK(pth_load_file(ip, NULL, &f, small, sizeof small) == PTH_E_UNSUPPORTED && small[0], "small buffer: '%s'", small);
  free(pi.b);
  free(z.b);
}

/* pth_load_file on a FIFO refuses it at once (it used to wait in open() for a writer). */
static void t_fifo(void) {
  const char *path = fx("fifo.pth");
  unlink(path);
  CHECK(mkfifo(path, 0600) == 0, "mkfifo: %s", strerror(errno));
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    char err[512];
    pth_file *f = NULL;
    pth_status st = pth_load_file(path, NULL, &f, err, sizeof err);
    _exit(st == PTH_E_IO && strstr(err, "is a FIFO (named pipe), not a regular file") ? 0 : 1);
  }
  CHECK(pid > 0, "fork");
  if (pid <= 0) return;
  int status = 0, done = 0;
  for (int i = 0; i < 200 && !done; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid) done = 1;
    else usleep(50000);
  }
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  CHECK(done, "pth_load_file on a FIFO still waits after 10 s");
  CHECK(done && WIFEXITED(status) && WEXITSTATUS(status) == 0, "FIFO not refused with a message naming it");
  unlink(path);
}

/* ------------------------------------------------------------------------------------------- */
/* Allocation-failure sweep */

typedef struct {
  long calls, fail_at, live;
} counting;

static void *c_alloc(void *user, size_t size) {
  counting *c = user;
  if (++c->calls == c->fail_at) return NULL;
  void *p = malloc(size);
  if (p) c->live++;
  return p;
}

static void c_free(void *user, void *p) {
  counting *c = user;
  if (p) {
    c->live--;
    free(p);
  }
}

static void sweep(const char *path, int from_file, int copy) {
  size_t size;
  unsigned char *b = read_all(path, &size);
  CHECK(b != NULL, "read %s", path);
  if (!b) return;
  char err[512];
  int done = 0;
  long n;
  for (n = 1; n < 100000 && !done; n++) {
    counting c = {0, n, 0};
    pth_options opt;
    pth_default_options(&opt);
    opt.allocator.alloc = c_alloc;
    opt.allocator.free = c_free;
    opt.allocator.user = &c;
    opt.copy_tensors = copy;
    pth_file *f = NULL;
    pth_status st = from_file ? pth_load_file(path, &opt, &f, err, sizeof err) : pth_load_memory(b, size, &opt, &f, err, sizeof err);
    if (c.calls < n) {
      CHECK(st == PTH_OK, "%s: no allocation failed at n=%ld but %s: %s", path, n, pth_status_name(st), err);
      CHECK(f && pth_file_info(f)->n_tensors > 0, "result");
      pth_file_free(f);
      done = 1;
    } else {
      CHECK(st == PTH_E_NOMEM && f == NULL, "%s: allocation %ld failed, got %s: %s", path, n, pth_status_name(st), err);
      pth_file_free(f);
    }
    CHECK(c.live == 0, "%s: %ld blocks leaked with allocation %ld failing", path, c.live, n);
    if (cur_failed) break;
  }
  CHECK(done, "%s: never succeeded", path);
  printf("    %s: %ld allocation points swept%s\n", path, n - 2, from_file ? " (file)" : "");
  free(b);
}

static void t_alloc_sweep(void) {
  sweep(sample("tiny_zip.pth"), 0, 0);
  sweep(sample("tiny_legacy.pth"), 1, 1);
  sweep(fx("ckpt_zip.pth"), 0, 1);
  sweep(fx("ckpt_legacy.pth"), 1, 0);
  /* The zip parser and the VM on their own. */
  size_t size;
  unsigned char *b = read_all(sample("tiny_zip.pth"), &size);
  for (long n = 1; n < 1000; n++) {
    counting c = {0, n, 0};
    pth_options opt;
    pth_default_options(&opt);
    opt.allocator = (i2i_allocator){c_alloc, c_free, &c};
    pth_zip *z = NULL;
    char err[256];
    pth_status st = pth_zip_parse(b, size, &opt, &z, err, sizeof err);
    pth_pickle *pk = NULL;
    if (!st) st = pth_pickle_run(b + 64, 960, &opt, &pk, NULL, err, sizeof err);
    int ok = c.calls < n;
    CHECK(ok ? st == PTH_OK : st == PTH_E_NOMEM, "zip+pickle at %ld: %s", n, err);
    pth_pickle_free(pk);
    pth_zip_free(z);
    CHECK(c.live == 0, "zip+pickle leak at %ld", n);
    if (ok || cur_failed) break;
  }
  free(b);
  pth_options bad;
  pth_default_options(&bad);
  bad.allocator.alloc = c_alloc;
  pth_file *f = NULL;
  char err[128];
  CHECK(pth_load_memory("x", 1, &bad, &f, err, sizeof err) == PTH_E_ARG, "alloc without free is refused");
}

/* ------------------------------------------------------------------------------------------- */

static int generate(const char *script) {
  char done[1200];
  snprintf(done, sizeof done, "%s/done", work_dir);
  unlink(done);
  char env_samples[1200];
  snprintf(env_samples, sizeof env_samples, "PTH_SAMPLES=%s", samples_dir);
  size_t ne = 0;
  while (environ[ne]) ne++;
  char **env = calloc(ne + 2, sizeof *env);
  for (size_t i = 0; i < ne; i++) env[i] = environ[i];
  env[ne] = env_samples;
  char *args[] = {"/usr/bin/python3", (char *)script, (char *)work_dir, NULL};
  pid_t pid;
  int rc = posix_spawn(&pid, args[0], NULL, NULL, args, env);
  free(env);
  if (rc != 0) {
    printf("cannot run /usr/bin/python3: %s\n", strerror(rc));
    return 0;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  struct stat sb;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 && stat(done, &sb) == 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: test_pth SAMPLES_DIR GEN_FIXTURES_PY WORK_DIR\n");
    return 2;
  }
  samples_dir = argv[1];
  work_dir = argv[3];
  mkdir(work_dir, 0755);
  if (chdir(work_dir) != 0) {
    printf("cannot enter %s\n0 passed, 1 failed\n", work_dir);
    return 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (!generate(argv[2])) {
    printf("FAIL fixtures: %s did not write the torch fixtures (needs /usr/bin/python3 with torch)\n", argv[2]);
    n_failed++;
  }
  run("sample tiny_zip.pth", t_sample_zip);
  run("sample tiny_legacy.pth", t_sample_legacy);
  run("zip directory and pickle on raw bytes", t_zip_directory);
  run("torch zip {meta, state_dict}", t_ckpt_zip);
  run("torch legacy {meta, state_dict}", t_ckpt_legacy);
  run("torch bare state dict", t_bare);
  run("torch pickle protocol 4", t_proto4);
  run("torch saved to a path (prefix = stem)", t_path_prefix);
  run("torch 120 entries, zip", t_many_zip);
  run("torch 120 entries, legacy", t_many_legacy);
  run("module. prefix", t_module_prefix);
  run("views, transposes, f16, Parameter, int64 0-d", t_tensor_forms);
  run("meta values, zip", t_meta_zip);
  run("meta values, legacy", t_meta_legacy);
  run("meta values, protocol 4", t_meta_proto4);
  run("GLOBAL os system + REDUCE", t_os_system);
  run("GLOBAL posix system + REDUCE", t_posix_system);
  run("GLOBAL builtins eval + REDUCE", t_builtins_eval);
  run("NEWOBJ + BUILD in state_dict", t_build_in_state_dict);
  run("SETITEM on a list", t_setitem_on_list);
  run("APPEND on a dict", t_append_on_dict);
  run("storage smaller than its tensor", t_storage_too_small);
  run("negative size", t_negative_size);
  run("negative stride", t_negative_stride);
  run("size*stride overflow", t_size_overflow);
  run("zip entry outside the file", t_zip_entry_outside);
  run("zip overlapping entries", t_zip_overlap);
  run("zip prefix, missing records, compression", t_zip_misc);
  run("truncated zip at 16 offsets", t_truncated_zip);
  run("truncated legacy at 16 offsets", t_truncated_legacy);
  run("empty file, directory, garbage", t_empty_and_directory);
  run("flipped data byte with CRC on and off", t_crc);
  run("pickle structure errors", t_pickle_structure);
  run("1000-deep nesting", t_deep_nesting);
  run("legacy layout errors", t_legacy_hostile);
  run("duplicate keys, dtype disagreement", t_duplicates_and_types);
  run("pth_shown: control characters and invalid UTF-8 escaped", t_shown);
  run("names from the file escaped in messages", t_names_escaped);
  run("top-level object not a dict: named, grammar", t_top_level);
  run("file messages name the path", t_file_messages);
  run("FIFO refused without waiting", t_fifo);
  run("allocation-failure sweep", t_alloc_sweep);
  printf("%d passed, %d failed\n", n_passed, n_failed);
  return n_failed ? 1 : 0;
}
