/* train/state.c: the training-state file: save a trainer and bring it back bit for bit.
 *
 * A little-endian sectioned file (layout below) written through a temporary in the same folder
 * and a rename; read back with every length checked and a CRC-32 over the whole. Every random
 * choice is a function of (seed, iteration), so no generator state is stored.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train.h"

/* "I2ISTATE", u32 version 1, then sections tag[4] u64 length payload:
 *   PARM  text "key=value" lines: the parameters (floats as %.9g, exact) and the iteration
 *   META  u32 count, then (u32 length, bytes) key and value pairs of the caller
 *   ONNX  u32 network, then the network as ONNX (current weights and running statistics)
 *   ADAM  u32 network, u64 step, u64 n, then n floats of m and n floats of v
 *   POOL  u32 domain, u32 capacity, u32 count, u64 image floats, count images
 *   END.  u32 CRC-32 (IEEE) of every byte before this section */
#define STATE_VERSION 1u

static uint32_t crc_table[256];
static int crc_ready;

static uint32_t crc32_update(uint32_t crc, const void *data, size_t n) {
  if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE)) {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      crc_table[i] = c;
    }
    __atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
  }
  const uint8_t *p = data;
  crc = ~crc;
  for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

static bool little_endian(void) {
  uint32_t x = 1;
  return *(uint8_t *)&x == 1;
}

/* ---- writing ------------------------------------------------------------------------------- */

typedef struct {
  FILE *f;
  uint32_t crc;
  bool err;
} wr;

static void w_bytes(wr *w, const void *p, size_t n) {
  if (w->err || !n) return;
  if (fwrite(p, 1, n, w->f) != n) w->err = true;
  w->crc = crc32_update(w->crc, p, n);
}
static void w_u32(wr *w, uint32_t v) { w_bytes(w, &v, 4); }
static void w_u64(wr *w, uint64_t v) { w_bytes(w, &v, 8); }
static void w_section(wr *w, const char *tag, uint64_t len) {
  w_bytes(w, tag, 4);
  w_u64(w, len);
}

/* n floats of backend memory, through a host buffer when the backend is not the CPU. */
static i2i_status w_floats(i2i_trainer *tr, wr *w, const float *src, size_t n, float *host, size_t host_n) {
  if (tr->be == &i2i_cpu_train_backend) {
    w_bytes(w, src, n * sizeof(float));
    return I2I_OK;
  }
  for (size_t o = 0; o < n; o += host_n) {
    size_t c = n - o < host_n ? n - o : host_n;
    i2i_status st = tr->be->download(tr->self, tr->ctx, host, src + o, c);
    if (st) return st;
    w_bytes(w, host, c * sizeof(float));
  }
  return I2I_OK;
}

static char *params_text(i2i_trainer *tr, size_t *len) {
  const i2i_train_params *p = &tr->p;
  char *s = i2i_alloc(tr->ctx, 1024);
  if (!s) return NULL;
  int n = snprintf(s, 1024,
                   "kind=%d\nbatch=%d\nsize=%d\nload_size=%d\nflip=%d\naugment=%d\niters=%lld\nlr=%.9g\nbeta1=%.9g\n"
                   "beta2=%.9g\neps=%.9g\nlr_decay=%d\nlambda_cycle=%.9g\nlambda_identity=%.9g\nlambda_l1=%.9g\n"
                   "pool_size=%d\nseed=%llu\nd_channels=%d\nd_layers=%d\niteration=%lld\n",
                   (int)p->kind, p->batch, p->size, p->load_size, p->flip, p->augment, (long long)p->iters, p->lr,
                   p->beta1, p->beta2, p->eps, p->lr_decay, p->lambda_cycle, p->lambda_identity, p->lambda_l1,
                   p->pool_size, (unsigned long long)p->seed, p->d_channels, p->d_layers, (long long)tr->iteration);
  *len = (size_t)n;
  return s;
}

i2i_status i2i_trainer_save_state(i2i_trainer *tr, const char *path) {
  if (!tr) return I2I_E_ARG;
  i2i_ctx *ctx = tr->ctx;
  if (!path || !*path) return i2i_fail(ctx, I2I_E_ARG, "i2i_trainer_save_state: no path");
  if (!little_endian()) return i2i_fail(ctx, I2I_E_UNSUPPORTED, "training states are little-endian only");
  size_t plen = strlen(path), tlen;
  if (!i2i_add_ok(plen, 16, &tlen)) return i2i_fail(ctx, I2I_E_ARG, "path too long");
  char *tmp = i2i_alloc(ctx, tlen);
  float *host = NULL;
  size_t host_n = (size_t)1 << 20;
  if (!tmp) return i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
  snprintf(tmp, tlen, "%s.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd >= 0) {
    /* the mode a plain creation would give (mkstemp makes 0600), or the old file's */
    struct stat sb;
    mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, stat(path, &sb) == 0 ? (sb.st_mode & 07777) : (0666 & ~mask));
  }
  if (fd < 0) {
    i2i_status st = i2i_fail(ctx, I2I_E_IO, "cannot create a temporary file next to '%s': %s", path, strerror(errno));
    i2i_dealloc(ctx, tmp);
    return st;
  }
  wr w = {fdopen(fd, "wb"), 0, false};
  i2i_status st = I2I_OK;
  if (!w.f) {
    close(fd);
    st = i2i_fail(ctx, I2I_E_IO, "cannot write '%s': %s", tmp, strerror(errno));
    goto out;
  }
  if (tr->be != &i2i_cpu_train_backend && !(host = i2i_alloc(ctx, host_n * sizeof(float)))) {
    st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    goto out;
  }
  w_bytes(&w, "I2ISTATE", 8);
  w_u32(&w, STATE_VERSION);
  size_t tl;
  char *txt = params_text(tr, &tl);
  if (!txt) {
    st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
    goto out;
  }
  w_section(&w, "PARM", tl);
  w_bytes(&w, txt, tl);
  i2i_dealloc(ctx, txt);
  uint64_t ml = 4;
  for (int i = 0; i < tr->n_meta; i++) ml += 8 + strlen(tr->meta[i].key) + strlen(tr->meta[i].value);
  w_section(&w, "META", ml);
  w_u32(&w, (uint32_t)tr->n_meta);
  for (int i = 0; i < tr->n_meta; i++) {
    w_u32(&w, (uint32_t)strlen(tr->meta[i].key));
    w_bytes(&w, tr->meta[i].key, strlen(tr->meta[i].key));
    w_u32(&w, (uint32_t)strlen(tr->meta[i].value));
    w_bytes(&w, tr->meta[i].value, strlen(tr->meta[i].value));
  }
  for (int k = 0; k < 4 && !st; k++) {
    if (!tr->has[k]) continue;
    void *data = NULL;
    size_t size = 0;
    if ((st = trainer_sync_host(tr, k)) || (st = i2i_model_save_memory(ctx, tr->net[k].m, &data, &size))) break;
    w_section(&w, "ONNX", 4 + (uint64_t)size);
    w_u32(&w, (uint32_t)k);
    w_bytes(&w, data, size);
    i2i_free(ctx, data);
  }
  for (int k = 0; k < 4 && !st; k++) {
    if (!tr->has[k]) continue;
    const i2i_tnet *n = &tr->net[k];
    w_section(&w, "ADAM", 4 + 8 + 8 + (uint64_t)n->n_floats * 8);
    w_u32(&w, (uint32_t)k);
    w_u64(&w, n->adam_t);
    w_u64(&w, n->n_floats);
    if ((st = w_floats(tr, &w, n->adam_m, n->n_floats, host, host_n))) break;
    st = w_floats(tr, &w, n->adam_v, n->n_floats, host, host_n);
  }
  for (int d = 0; d < 2 && !st; d++) {
    const train_pool *P = &tr->pool[d];
    if (!P->cap) continue;
    size_t n = tr->img_floats * (size_t)P->count;
    w_section(&w, "POOL", 4 + 4 + 4 + 8 + (uint64_t)n * 4);
    w_u32(&w, (uint32_t)d);
    w_u32(&w, (uint32_t)P->cap);
    w_u32(&w, (uint32_t)P->count);
    w_u64(&w, tr->img_floats);
    st = w_floats(tr, &w, P->images, n, host, host_n);
  }
  if (st) goto out;
  uint32_t crc = w.crc;
  w_section(&w, "END.", 4);
  w_u32(&w, crc);
  if (w.err || fflush(w.f) || fsync(fileno(w.f))) {
    st = i2i_fail(ctx, I2I_E_IO, "cannot write '%s': %s", tmp, strerror(errno));
    goto out;
  }
  if (fclose(w.f)) {
    w.f = NULL;
    st = i2i_fail(ctx, I2I_E_IO, "cannot write '%s': %s", tmp, strerror(errno));
    goto out;
  }
  w.f = NULL;
  if (rename(tmp, path)) st = i2i_fail(ctx, I2I_E_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
out:
  if (w.f) fclose(w.f);
  if (st) unlink(tmp);
  i2i_dealloc(ctx, tmp);
  i2i_dealloc(ctx, host);
  return st;
}

/* ---- reading ------------------------------------------------------------------------------- */

typedef struct {
  FILE *f;
  uint32_t crc;
  bool err;
  uint64_t left;    /* bytes left in the file */
} rd;

static bool r_bytes(rd *r, void *p, size_t n) {
  if (r->err || n > r->left || fread(p, 1, n, r->f) != n) {
    r->err = true;
    return false;
  }
  r->left -= n;
  r->crc = crc32_update(r->crc, p, n);
  return true;
}
static bool r_u32(rd *r, uint32_t *v) { return r_bytes(r, v, 4); }
static bool r_u64(rd *r, uint64_t *v) { return r_bytes(r, v, 8); }

static i2i_status r_floats(i2i_trainer *tr, rd *r, float *dst, size_t n, float *host, size_t host_n) {
  if (tr->be == &i2i_cpu_train_backend) {
    size_t bytes;
    if (!i2i_mul_ok(n, sizeof(float), &bytes) || !r_bytes(r, dst, bytes)) return I2I_E_FORMAT;
    return I2I_OK;
  }
  for (size_t o = 0; o < n; o += host_n) {
    size_t c = n - o < host_n ? n - o : host_n;
    if (!r_bytes(r, host, c * sizeof(float))) return I2I_E_FORMAT;
    i2i_status st = tr->be->upload(tr->self, tr->ctx, dst + o, host, c);
    if (st) return st;
  }
  return I2I_OK;
}

static bool parse_params(const char *txt, i2i_train_params *p, int64_t *iteration) {
  i2i_train_default_params(p, I2I_TRAIN_CYCLEGAN);
  int seen = 0;
  const char *s = txt;
  while (*s) {
    const char *e = strchr(s, '\n');
    if (!e) return false;
    char line[256];
    size_t l = (size_t)(e - s);
    if (l >= sizeof line) return false;
    memcpy(line, s, l);
    line[l] = 0;
    s = e + 1;
    char *eq = strchr(line, '=');
    if (!eq) return false;
    *eq = 0;
    const char *k = line, *v = eq + 1;
    char *end;
    long long iv = strtoll(v, &end, 10);
    bool is_int = *end == 0;
    float fv = strtof(v, &end);
    bool is_f = *end == 0;
#define INT_FIELD(name, dst)                     \
  if (!strcmp(k, name)) {                        \
    if (!is_int) return false;                   \
    dst = iv;                                    \
    seen++;                                      \
    continue;                                    \
  }
#define FLT_FIELD(name, dst)                     \
  if (!strcmp(k, name)) {                        \
    if (!is_f) return false;                     \
    dst = fv;                                    \
    seen++;                                      \
    continue;                                    \
  }
    int kind = 0;
    if (!strcmp(k, "kind")) {
      if (!is_int) return false;
      kind = (int)iv;
      p->kind = kind == 2 ? I2I_TRAIN_PIX2PIX : I2I_TRAIN_CYCLEGAN;
      if (kind != 1 && kind != 2) return false;
      seen++;
      continue;
    }
    if (!strcmp(k, "seed")) {
      unsigned long long u = strtoull(v, &end, 10);
      if (*end) return false;
      p->seed = u;
      seen++;
      continue;
    }
    INT_FIELD("batch", p->batch)
    INT_FIELD("size", p->size)
    INT_FIELD("load_size", p->load_size)
    INT_FIELD("flip", p->flip)
    INT_FIELD("augment", p->augment)
    INT_FIELD("iters", p->iters)
    INT_FIELD("lr_decay", p->lr_decay)
    INT_FIELD("pool_size", p->pool_size)
    INT_FIELD("d_channels", p->d_channels)
    INT_FIELD("d_layers", p->d_layers)
    INT_FIELD("iteration", *iteration)
    FLT_FIELD("lr", p->lr)
    FLT_FIELD("beta1", p->beta1)
    FLT_FIELD("beta2", p->beta2)
    FLT_FIELD("eps", p->eps)
    FLT_FIELD("lambda_cycle", p->lambda_cycle)
    FLT_FIELD("lambda_identity", p->lambda_identity)
    FLT_FIELD("lambda_l1", p->lambda_l1)
#undef INT_FIELD
#undef FLT_FIELD
  }
  return seen >= 20 && *iteration >= 0;
}

static i2i_status load_state_once(i2i_ctx *ctx, void *arg, i2i_trainer **out);

i2i_status i2i_trainer_load_state(i2i_ctx *ctx, const char *path, i2i_trainer **out) {
  if (!ctx) return I2I_E_ARG;
  if (!path || !out) return i2i_fail(ctx, I2I_E_ARG, "i2i_trainer_load_state: NULL argument");
  *out = NULL;
  return trainer_make_with_fallback(ctx, load_state_once, (void *)path, out);
}

static i2i_status load_state_once(i2i_ctx *ctx, void *arg, i2i_trainer **out) {
  const char *path = (const char *)arg;
  if (!little_endian()) return i2i_fail(ctx, I2I_E_UNSUPPORTED, "training states are little-endian only");
  struct stat sb;
  if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) /* a FIFO would block the open */
    return i2i_fail(ctx, I2I_E_IO, "the training state '%s' is not a regular file", path);
  FILE *f = fopen(path, "rb");
  if (!f) return i2i_fail(ctx, I2I_E_IO, "cannot open the training state '%s': %s", path, strerror(errno));
  i2i_clear_err(ctx);
  rd r = {f, 0, false, 0};
  if (fseeko(f, 0, SEEK_END) == 0) {
    off_t sz = ftello(f);
    r.left = sz > 0 ? (uint64_t)sz : 0;
  }
  rewind(f);
  i2i_status st = I2I_OK;
  i2i_model *models[4] = {NULL, NULL, NULL, NULL};
  train_kv *meta = NULL;
  uint32_t n_meta = 0;
  i2i_trainer *tr = NULL;
  i2i_train_params p;
  int64_t iteration = 0;
  bool have_params = false, done = false;
  bool seen_adam[4] = {false, false, false, false}, seen_pool[2] = {false, false};
  float *host = NULL;
  size_t host_n = (size_t)1 << 20;
  char magic[8];
  uint32_t version;
  if (!r_bytes(&r, magic, 8) || memcmp(magic, "I2ISTATE", 8) || !r_u32(&r, &version)) {
    st = i2i_fail(ctx, I2I_E_FORMAT, "'%s' is not an i2i training state", path);
    goto out;
  }
  if (version != STATE_VERSION) {
    st = i2i_fail(ctx, I2I_E_UNSUPPORTED, "'%s': training state version %u (this i2i reads %u)", path, version, STATE_VERSION);
    goto out;
  }
  while (!st && !done) {
    char tag[4];
    uint64_t len;
    uint32_t crc_before = r.crc;
    if (!r_bytes(&r, tag, 4) || !r_u64(&r, &len) || len > r.left) {
      st = I2I_E_FORMAT;
      break;
    }
    if (!memcmp(tag, "PARM", 4)) {
      if (len > 4096) {
        st = I2I_E_FORMAT;
        break;
      }
      char txt[4097];
      if (!r_bytes(&r, txt, (size_t)len)) {
        st = I2I_E_FORMAT;
        break;
      }
      txt[len] = 0;
      if (!parse_params(txt, &p, &iteration)) {
        st = I2I_E_FORMAT;
        break;
      }
      have_params = true;
    } else if (!memcmp(tag, "META", 4)) {
      if (!r_u32(&r, &n_meta) || n_meta > 4096) {
        st = I2I_E_FORMAT;
        break;
      }
      meta = i2i_calloc(ctx, (size_t)n_meta + 1, sizeof *meta);
      if (!meta) {
        st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
        break;
      }
      for (uint32_t i = 0; i < n_meta && !st; i++) {
        char **dst[2] = {&meta[i].key, &meta[i].value};
        for (int j = 0; j < 2 && !st; j++) {
          uint32_t l;
          if (!r_u32(&r, &l) || l > (1u << 20)) {
            st = I2I_E_FORMAT;
            break;
          }
          *dst[j] = i2i_alloc(ctx, (size_t)l + 1);
          if (!*dst[j]) st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
          else if (!r_bytes(&r, *dst[j], l)) st = I2I_E_FORMAT;
          else (*dst[j])[l] = 0;
        }
      }
    } else if (!memcmp(tag, "ONNX", 4)) {
      uint32_t k;
      if (len < 4 || !r_u32(&r, &k) || k > 3 || models[k] || tr) {
        st = I2I_E_FORMAT;
        break;
      }
      size_t size = (size_t)(len - 4);
      uint8_t *data = i2i_alloc(ctx, size ? size : 1);
      if (!data) {
        st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory reading the training state (%zu bytes)", size);
        break;
      }
      if (!r_bytes(&r, data, size)) st = I2I_E_FORMAT;
      else if ((st = i2i_model_load_memory(ctx, data, size, &models[k]))) i2i_prefix_err(ctx, "training state '%s'", path);
      i2i_dealloc(ctx, data);
    } else if (!memcmp(tag, "ADAM", 4) || !memcmp(tag, "POOL", 4)) {
      if (!tr) {
        if (!have_params) {
          st = I2I_E_FORMAT;
          break;
        }
        i2i_model *own[4] = {models[0], models[1], models[2], models[3]};
        for (int k = 0; k < 4; k++) models[k] = NULL;
        if ((st = trainer_create_owned(ctx, &p, own, &tr))) break;
        tr->iteration = iteration;
        for (uint32_t i = 0; i < n_meta; i++)
          if ((st = i2i_trainer_set_meta(tr, meta[i].key, meta[i].value))) break;
        if (st) break;
        if (tr->be != &i2i_cpu_train_backend && !(host = i2i_alloc(ctx, host_n * sizeof(float)))) {
          st = i2i_fail(ctx, I2I_E_NOMEM, "out of memory");
          break;
        }
      }
      uint32_t k;
      if (!r_u32(&r, &k)) {
        st = I2I_E_FORMAT;
        break;
      }
      if (!memcmp(tag, "ADAM", 4)) {
        uint64_t t, n;
        if (k > 3 || !tr->has[k] || seen_adam[k] || !r_u64(&r, &t) || !r_u64(&r, &n) || n != tr->net[k].n_floats ||
            len != 20 + n * 8) {
          st = I2I_E_FORMAT;
          break;
        }
        seen_adam[k] = true;
        tr->net[k].adam_t = t;
        if ((st = r_floats(tr, &r, tr->net[k].adam_m, (size_t)n, host, host_n))) break;
        st = r_floats(tr, &r, tr->net[k].adam_v, (size_t)n, host, host_n);
      } else {
        uint32_t cap, count;
        uint64_t imgf;
        if (k > 1 || seen_pool[k] || !r_u32(&r, &cap) || !r_u32(&r, &count) || !r_u64(&r, &imgf) ||
            cap != (uint32_t)tr->pool[k].cap || count > cap || imgf != tr->img_floats ||
            len != 20 + (uint64_t)count * imgf * 4) {
          st = I2I_E_FORMAT;
          break;
        }
        seen_pool[k] = true;
        tr->pool[k].count = (int)count;
        st = r_floats(tr, &r, tr->pool[k].images, (size_t)(count * imgf), host, host_n);
      }
    } else if (!memcmp(tag, "END.", 4)) {
      uint32_t crc;
      if (len != 4 || !r_u32(&r, &crc)) {
        st = I2I_E_FORMAT;
        break;
      }
      if (crc != crc_before) {
        st = i2i_fail(ctx, I2I_E_FORMAT, "the training state '%s' is damaged (checksum mismatch)", path);
        break;
      }
      done = true;
    } else {
      st = I2I_E_FORMAT;
    }
  }
  if (!st && !tr) st = I2I_E_FORMAT;
  /* every network's Adam moments and every pool, as written: a state without them would resume
   * from fresh moments, silently not the run it claims to continue */
  for (int k = 0; k < 4 && !st; k++)
    if (tr->has[k] && !seen_adam[k]) st = I2I_E_FORMAT;
  for (int k = 0; k < 2 && !st; k++)
    if (tr->pool[k].cap && !seen_pool[k]) st = I2I_E_FORMAT;
  if (!st && tr->iteration > tr->p.iters)
    st = i2i_fail(ctx, I2I_E_FORMAT, "the training state '%s' is at iteration %lld of %lld", path,
                  (long long)tr->iteration, (long long)tr->p.iters);
  if (st == I2I_E_FORMAT && !strstr(ctx->err, path))
    i2i_fail(ctx, I2I_E_FORMAT, "the training state '%s' is truncated or damaged", path);
out:
  fclose(f);
  for (int k = 0; k < 4; k++) i2i_model_free(models[k]);
  for (uint32_t i = 0; meta && i < n_meta; i++) {
    i2i_dealloc(ctx, meta[i].key);
    i2i_dealloc(ctx, meta[i].value);
  }
  i2i_dealloc(ctx, meta);
  i2i_dealloc(ctx, host);
  if (st) {
    i2i_trainer_free(tr);
    return st;
  }
  *out = tr;
  return I2I_OK;
}
